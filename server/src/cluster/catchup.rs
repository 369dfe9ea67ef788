//! Snapshot installs, the I/O half: a replica whose Raft log fell behind the leader's compacted
//! log copies the records it lacks from another replica with Kafka Fetch requests over TCP
//! (`Broker::install_*` decides what to ask and appends the answers). It runs as its own task:
//! the Raft loop keeps ticking and other groups keep applying meanwhile.
//!
//! These fetches read past the high watermark, so they travel on each node's replica listener
//! only: TCP with mutual TLS by cluster certificate, as the Raft transport. The acceptor learns
//! the dialer's node id from its certificate; a Kafka client can never fetch as a replica.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestKind, ResponseKind};
use sluice_proto::broker::{InstallStep, REPLICA_FETCH_VERSION};
use sluice_proto::cluster::PartitionImage;
use sluice_proto::codec;
use sluice_proto::runtime::{Reader, Runtime, Writer};
use tracing::{Instrument, debug, warn};

use crate::server::{Shared, deliver, now_ms};

/// Largest fetch response accepted (a fetch asks for 8 MiB; batches may exceed it by one).
const RESPONSE_BYTES_MAX: usize = 128 << 20;
/// A source that does not answer within this is dropped and another tried.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type Conn<R> = (
    crate::tls::TlsReader<<<R as Runtime>::Listener as sluice_proto::runtime::Listener>::Reader>,
    crate::tls::TlsWriter<<<R as Runtime>::Listener as sluice_proto::runtime::Listener>::Writer>,
);

/// Accepts other nodes' catch-up connections on the replica listener: TLS with the cluster
/// certificates, then Kafka requests served as that node.
pub async fn serve_replicas<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    mut listener: <R as Runtime>::Listener,
    tls: Arc<rustls::ServerConfig>,
    nodes: Vec<u64>,
) {
    use sluice_proto::runtime::Listener as _;
    let node_id = shared.config.node_id;
    let config = Arc::new(crate::listeners::ListenerConfig {
        name: sluice_proto::security::REPLICA_LISTENER.to_string(),
        protocol: sluice_proto::security::SecurityProtocol::Ssl,
        bind: listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        advertised_host: String::new(),
        advertised_port: 0,
    });
    let span = tracing::Span::current();
    let name = config.name.clone();
    crate::server::accept_each::<R>(&rt, &shared, &mut listener, &name, |reader, writer, peer| {
        let (rt2, shared, tls, config, nodes) = (
            rt.clone(),
            shared.clone(),
            tls.clone(),
            config.clone(),
            nodes.clone(),
        );
        rt.spawn(
            async move {
                let (r, w, cert) = match crate::tls::accept_with(&rt2, tls, reader, writer).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(node_id, %peer, error = %e, "replica listener: TLS handshake failed (not a node of this cluster?)");
                        return;
                    }
                };
                // The nodes known at start, and every member `__meta` added since.
                let members: Vec<u64> = shared
                    .broker
                    .lock()
                    .unwrap()
                    .cluster_peers()
                    .into_iter()
                    .map(|(id, ..)| id)
                    .filter(|id| *id != node_id as u64)
                    .collect();
                let Some(node) = cert.as_ref().and_then(|c| {
                    sluice_transport_quic::tls::node_of_cert(
                        c,
                        nodes.iter().copied().chain(members),
                    )
                }) else {
                    warn!(node_id, %peer, "replica listener: certificate names no other node of this cluster; closing");
                    return;
                };
                debug!(node_id, %peer, from = node, "replica connection");
                crate::connection::serve_node(rt2, shared, config, r, w, peer, node as i32).await;
            }
            .instrument(span.clone()),
        );
    })
    .await
}

/// Copies records until the local log reaches `image`, then completes the install. Returns
/// false when the group is no longer hosted here (nothing to finish).
pub async fn install<R: Runtime>(
    rt: &R,
    shared: &Arc<Shared>,
    node_id: u64,
    group: u64,
    image: PartitionImage,
) -> bool {
    let mut step = shared
        .broker
        .lock()
        .unwrap()
        .install_begin(group, image, now_ms());
    let mut conns: HashMap<i32, Conn<R>> = HashMap::new();
    let mut correlation = 0i32;
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let (request, sources, from, to) = match step {
            InstallStep::Done => {
                crate::metrics::Counters::add(&shared.metrics.snapshot_installs, 1);
                let mut broker = shared.broker.lock().unwrap();
                broker.install_finish(group, now_ms());
                deliver(shared, &mut broker);
                drop(broker);
                shared.flush.notify(1);
                return true;
            }
            InstallStep::Gone => return false,
            InstallStep::Fetch {
                request,
                sources,
                from,
                to,
            } => (request, sources, from, to),
        };
        let mut progressed = false;
        let mut why = String::from("no other replica is registered");
        for (source, host, port) in &sources {
            correlation = correlation.wrapping_add(1);
            let fetched = future::or(
                fetch(
                    rt,
                    shared,
                    &mut conns,
                    *source,
                    host,
                    *port,
                    correlation,
                    &request,
                ),
                async {
                    rt.sleep(FETCH_TIMEOUT).await;
                    Err(format!("no answer in {FETCH_TIMEOUT:?}"))
                },
            )
            .await;
            let result = fetched.and_then(|response| {
                let bytes: usize = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .filter_map(|p| p.records.as_ref().map(|r| r.len()))
                    .sum();
                shared
                    .broker
                    .lock()
                    .unwrap()
                    .install_fetched(group, &response, now_ms())?;
                Ok(bytes as u64)
            });
            match result {
                Ok(bytes) => {
                    progressed = true;
                    pace(rt, shared, node_id, group, *source, bytes).await;
                    break;
                }
                Err(e) => {
                    conns.remove(source);
                    why = format!("node {source} ({host}:{port}): {e}");
                }
            }
        }
        if progressed {
            backoff = Duration::from_millis(100);
            failures = 0;
        } else {
            failures += 1;
            if failures % 10 == 1 {
                warn!(node_id, group, from, to, reason = %why, "snapshot install: no replica could serve the records yet; retrying");
            } else {
                debug!(node_id, group, from, to, reason = %why, "snapshot install: retrying");
            }
            rt.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        step = shared.broker.lock().unwrap().install_next(group);
    }
}

/// Waits out what the replication throttle asks after copying `bytes` (Kafka's
/// `*.replication.throttled.rate`; one pacer per node, shared by all its installs, as Kafka's
/// rate is per broker). Waits in short slices, reading the rate again after each, so a change
/// (or lifting the throttle) applies at once.
async fn pace<R: Runtime>(
    rt: &R,
    shared: &Shared,
    node_id: u64,
    group: u64,
    source: i32,
    bytes: u64,
) {
    const SLICE_MS: u64 = 500;
    let now = || shared.started.elapsed().as_millis() as u64;
    let rate = shared.broker.lock().unwrap().install_rate(group, source);
    if rate == sluice_proto::throttle::UNLIMITED {
        // Unthrottled copies leave the pacer alone: they must not pay off throttled ones' debt.
        return;
    }
    shared
        .install_pacer
        .lock()
        .unwrap()
        .transferred(now(), bytes, rate);
    let mut logged = false;
    loop {
        let rate = shared.broker.lock().unwrap().install_rate(group, source);
        if rate == sluice_proto::throttle::UNLIMITED {
            return;
        }
        let wait = shared.install_pacer.lock().unwrap().wait_ms(now(), rate);
        if wait == Some(0) || shared.shutting_down() {
            return;
        }
        if !logged {
            debug!(node_id, group, bytes, rate, wait_ms = ?wait, "snapshot install: throttled");
            logged = true;
        }
        rt.sleep(Duration::from_millis(
            wait.unwrap_or(SLICE_MS).min(SLICE_MS),
        ))
        .await;
    }
}

/// One replica fetch on a (cached) connection to `source`'s replica listener.
#[allow(clippy::too_many_arguments)]
async fn fetch<R: Runtime>(
    rt: &R,
    shared: &Shared,
    conns: &mut HashMap<i32, Conn<R>>,
    source: i32,
    host: &str,
    port: i32,
    correlation: i32,
    request: &FetchRequest,
) -> Result<FetchResponse, String> {
    let request = RequestKind::Fetch(request.clone());
    let (key, version) = (ApiKey::Fetch, REPLICA_FETCH_VERSION);
    match node_request(
        rt,
        shared,
        conns,
        (source, host, port),
        correlation,
        key,
        version,
        &request,
    )
    .await?
    {
        ResponseKind::Fetch(r) => Ok(r),
        _ => Err("not a fetch response".into()),
    }
}

/// One request to another node's replica listener on a (cached) connection: TLS with the
/// cluster certificates, the peer checked to be `node`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn node_request<R: Runtime>(
    rt: &R,
    shared: &Shared,
    conns: &mut HashMap<i32, Conn<R>>,
    (node, host, port): (i32, &str, i32),
    correlation: i32,
    key: ApiKey,
    version: i16,
    request: &RequestKind,
) -> Result<ResponseKind, String> {
    let (reader, writer) = match conns.entry(node) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let addr = resolve(rt, host, port).await?;
            let (r, w) = rt.connect(addr).await.map_err(|e| e.to_string())?;
            let tls = shared
                .replica_client
                .get()
                .ok_or("no replica TLS configuration")?
                .clone();
            let name = rustls::pki_types::ServerName::try_from(
                sluice_transport_quic::certs::node_dns_name(node as u64),
            )
            .map_err(|e| e.to_string())?;
            let (r, w, cert) = crate::tls::connect_with(rt, tls, name, r, w)
                .await
                .map_err(|e| format!("TLS to {addr}: {e}"))?;
            let is_node = cert
                .as_ref()
                .and_then(|c| sluice_transport_quic::tls::node_of_cert(c, [node as u64]));
            if is_node.is_none() {
                return Err(format!(
                    "the replica listener at {addr} is not node {node}'s"
                ));
            }
            e.insert((r, w))
        }
    };
    let frame = codec::encode_request(key, version, correlation, Some("sluice-replica"), request)?;
    writer.write_all(&frame).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    read_exact(reader, &mut len).await?;
    let len = i32::from_be_bytes(len);
    if len < 0 || len as usize > RESPONSE_BYTES_MAX {
        return Err(format!("response frame of {len} bytes"));
    }
    let mut body = vec![0u8; len as usize];
    read_exact(reader, &mut body).await?;
    match codec::decode_response(key, version, Bytes::from(body))? {
        (c, r) if c == correlation => Ok(r),
        (c, _) => Err(format!("unexpected response (correlation id {c})")),
    }
}

async fn read_exact(reader: &mut impl Reader, mut buf: &mut [u8]) -> Result<(), String> {
    while !buf.is_empty() {
        let n = reader.read(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

/// A broker's advertised address as a socket address (names resolved off the runtime).
async fn resolve<R: Runtime>(rt: &R, host: &str, port: i32) -> Result<SocketAddr, String> {
    let port = u16::try_from(port).map_err(|_| format!("bad port {port}"))?;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let host = host.to_string();
    rt.spawn_blocking(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))
    })
    .await
}
