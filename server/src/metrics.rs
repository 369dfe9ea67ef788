//! Prometheus metrics over plain HTTP (`--metrics-addr`): request and byte counters, every local
//! partition's offsets and size, and in cluster mode each Raft group's role, term, commit and
//! applied index and each peer connection. One `GET /metrics` per connection, then close: a
//! scraper needs nothing more, and nothing here can hold the broker up.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::future;
use kafka_protocol::messages::ApiKey;
use sluice_proto::runtime::{Listener, Reader, Runtime, Writer};
use tracing::{debug, warn};

use crate::server::Shared;

/// Request header bytes read at most (a scraper sends a few hundred).
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// A scrape that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// API keys counted (Kafka's are below this).
const API_KEYS: usize = 128;

/// Counters updated by the connection tasks.
#[derive(Debug)]
pub struct Counters {
    requests: Vec<AtomicU64>,
    /// Requests refused before handling (undecodable, unknown API or version).
    pub refused_requests: AtomicU64,
    /// Bytes read from Kafka clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to Kafka clients.
    pub bytes_sent: AtomicU64,
    /// Kafka connections accepted.
    pub connections_accepted: AtomicU64,
    /// Kafka connections open now.
    pub connections_open: AtomicI64,
    /// Snapshot installs completed (cluster mode).
    pub snapshot_installs: AtomicU64,
    /// TLS handshakes that failed (plaintext to a TLS port, untrusted client certificate...).
    pub tls_handshake_failures: AtomicU64,
    /// SASL authentications that succeeded.
    pub authentications: AtomicU64,
    /// SASL authentications that failed (wrong password, unknown user, bad mechanism).
    pub authentication_failures: AtomicU64,
    /// Log cleans completed (compacted topics).
    pub log_cleans: AtomicU64,
    /// Segment bytes the log cleaner rewrote.
    pub log_cleaner_bytes_read: AtomicU64,
    /// Bytes of the segments the log cleaner wrote.
    pub log_cleaner_bytes_written: AtomicU64,
    /// Duration of the last clean, in milliseconds.
    pub log_cleaner_last_clean_ms: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: (0..API_KEYS).map(|_| AtomicU64::new(0)).collect(),
            refused_requests: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            snapshot_installs: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            authentications: AtomicU64::new(0),
            authentication_failures: AtomicU64::new(0),
            log_cleans: AtomicU64::new(0),
            log_cleaner_bytes_read: AtomicU64::new(0),
            log_cleaner_bytes_written: AtomicU64::new(0),
            log_cleaner_last_clean_ms: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Counts one handled request.
    pub fn request(&self, api: ApiKey) {
        if let Some(c) = self.requests.get(api as i16 as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One Raft group as the cluster node last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGauge {
    /// Raft group id (0: `__meta`).
    pub group: u64,
    /// `__meta`, or the partition's topic.
    pub topic: String,
    /// The partition (-1 for `__meta`).
    pub partition: i32,
    /// Whether this node leads it.
    pub leader: bool,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// First index still held (entries before it are compacted).
    pub first_index: u64,
    /// Last index.
    pub last_index: u64,
}

/// One peer connection as the cluster node last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGauge {
    /// The peer's node id.
    pub id: u64,
    /// Whether a connection is up.
    pub connected: bool,
    /// Batches dropped because its queue was full.
    pub dropped_batches: u64,
    /// Connections established so far.
    pub connections: u64,
    /// Raft batches (transport frames) sent to the peer so far.
    pub batches_sent: u64,
    /// Raft messages sent to the peer so far (a batch carries every group's).
    pub messages_sent: u64,
}

/// What the cluster node publishes every housekeeping round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterGauges {
    /// Every hosted group.
    pub groups: Vec<GroupGauge>,
    /// Every peer.
    pub peers: Vec<PeerGauge>,
    /// Hosted groups that are quiesced (idle: not ticking, not heartbeating).
    pub quiesced: usize,
}

/// Local partition logs: (topic, partition, log start, high watermark, log end, bytes).
pub type LogStats = [(String, i32, i64, i64, i64, u64)];

/// Renders the Prometheus text exposition format.
pub fn render(
    node_id: i32,
    counters: &Counters,
    logs: &LogStats,
    denials: &[(String, u64)],
    health: (usize, usize),
    cluster: Option<&ClusterGauges>,
) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        (
            "sluice_under_replicated_partitions",
            "Partitions this node leads whose in-sync replicas lack one of their replicas.",
            health.0,
        ),
        (
            "sluice_offline_partitions",
            "Partitions without a leader (counted by the __meta leader only; 0 elsewhere).",
            health.1,
        ),
    ] {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    head(
        &mut out,
        "sluice_info",
        "gauge",
        "Node id and version (value 1).",
    );
    let _ = writeln!(
        out,
        "sluice_info{{node_id=\"{node_id}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    head(
        &mut out,
        "sluice_requests_total",
        "counter",
        "Kafka requests handled, by API.",
    );
    for (key, c) in counters.requests.iter().enumerate() {
        let n = c.load(Ordering::Relaxed);
        if n > 0
            && let Ok(api) = ApiKey::try_from(key as i16)
        {
            let _ = writeln!(out, "sluice_requests_total{{api=\"{api:?}\"}} {n}");
        }
    }
    let scalars: [(&str, &str, &str, i64); 13] = [
        (
            "sluice_log_cleaner_cleans_total",
            "counter",
            "Log cleans completed on compacted topics.",
            counters.log_cleans.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_log_cleaner_read_bytes_total",
            "counter",
            "Segment bytes the log cleaner rewrote.",
            counters.log_cleaner_bytes_read.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_log_cleaner_written_bytes_total",
            "counter",
            "Bytes of the cleaned segments the log cleaner wrote.",
            counters.log_cleaner_bytes_written.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_log_cleaner_last_clean_milliseconds",
            "gauge",
            "How long the last log clean took.",
            counters.log_cleaner_last_clean_ms.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on Kafka listeners that failed.",
            counters.tls_handshake_failures.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_sasl_authentications_total",
            "counter",
            "SASL authentications that succeeded.",
            counters.authentications.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_sasl_authentication_failures_total",
            "counter",
            "SASL authentications that failed.",
            counters.authentication_failures.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_refused_requests_total",
            "counter",
            "Requests refused before handling (undecodable, unknown API or version).",
            counters.refused_requests.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_received_bytes_total",
            "counter",
            "Bytes read from Kafka clients.",
            counters.bytes_received.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_sent_bytes_total",
            "counter",
            "Bytes written to Kafka clients.",
            counters.bytes_sent.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_connections_accepted_total",
            "counter",
            "Kafka connections accepted.",
            counters.connections_accepted.load(Ordering::Relaxed) as i64,
        ),
        (
            "sluice_connections_open",
            "gauge",
            "Kafka connections open.",
            counters.connections_open.load(Ordering::Relaxed),
        ),
        (
            "sluice_snapshot_installs_total",
            "counter",
            "Raft snapshots installed by copying records from another replica.",
            counters.snapshot_installs.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, kind, help, v) in scalars {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    head(
        &mut out,
        "sluice_authorization_denials_total",
        "counter",
        "Requests (or parts of them) the authorizer denied, by ACL resource type.",
    );
    for (rt, n) in denials {
        let _ = writeln!(
            out,
            "sluice_authorization_denials_total{{resource_type=\"{}\"}} {n}",
            escape(rt)
        );
    }
    let per_log: [(&str, &str); 4] = [
        ("sluice_log_start_offset", "First readable offset."),
        (
            "sluice_log_high_watermark",
            "Offset below which records are readable (durable; committed in a cluster).",
        ),
        ("sluice_log_end_offset", "Offset the next record gets."),
        ("sluice_log_size_bytes", "Bytes of segment files."),
    ];
    for (i, (name, help)) in per_log.iter().enumerate() {
        head(&mut out, name, "gauge", help);
        for (topic, p, start, hw, end, size) in logs {
            let v = [*start, *hw, *end, *size as i64][i];
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{p}\"}} {v}",
                escape(topic)
            );
        }
    }
    if let Some(c) = cluster {
        let per_group: [(&str, &str); 6] = [
            ("sluice_raft_leader", "1 if this node leads the group."),
            ("sluice_raft_term", "Current Raft term."),
            ("sluice_raft_commit_index", "Raft commit index."),
            ("sluice_raft_applied_index", "Raft applied index."),
            (
                "sluice_raft_first_index",
                "First Raft index held (earlier entries are compacted).",
            ),
            ("sluice_raft_last_index", "Last Raft index."),
        ];
        for (i, (name, help)) in per_group.iter().enumerate() {
            head(&mut out, name, "gauge", help);
            for g in &c.groups {
                let v = [
                    u64::from(g.leader),
                    g.term,
                    g.commit,
                    g.applied,
                    g.first_index,
                    g.last_index,
                ][i];
                let _ = writeln!(
                    out,
                    "{name}{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {v}",
                    g.group,
                    escape(&g.topic),
                    g.partition
                );
            }
        }
        let ticking = c.groups.len().saturating_sub(c.quiesced);
        for (name, help, v) in [
            (
                "sluice_raft_groups_quiesced",
                "Raft groups hosted here that are idle: they neither tick nor heartbeat.",
                c.quiesced,
            ),
            (
                "sluice_raft_groups_ticking",
                "Raft groups hosted here that tick (not quiesced).",
                ticking,
            ),
        ] {
            head(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let per_peer: [(&str, &str, &str); 5] = [
            (
                "sluice_raft_peer_connected",
                "gauge",
                "1 if a connection to the peer is up.",
            ),
            (
                "sluice_raft_peer_connections_total",
                "counter",
                "Connections established with the peer.",
            ),
            (
                "sluice_raft_peer_dropped_batches_total",
                "counter",
                "Raft batches dropped because the peer's queue was full.",
            ),
            (
                "sluice_raft_peer_batches_sent_total",
                "counter",
                "Raft batches (one transport frame each) sent to the peer.",
            ),
            (
                "sluice_raft_peer_messages_sent_total",
                "counter",
                "Raft messages sent to the peer, all groups together.",
            ),
        ];
        for (i, (name, kind, help)) in per_peer.iter().enumerate() {
            head(&mut out, name, kind, help);
            for p in &c.peers {
                let v = [
                    u64::from(p.connected),
                    p.connections,
                    p.dropped_batches,
                    p.batches_sent,
                    p.messages_sent,
                ][i];
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {v}", p.id);
            }
        }
    }
    out
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values are topic names: only `\`, `"` and newlines need escaping.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves scrapes until shutdown.
pub async fn serve<R: Runtime>(rt: R, mut listener: R::Listener, shared: Arc<Shared>) {
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            shared.stopped().await;
            None
        };
        match future::or(accept, stop).await {
            None => break,
            Some(Ok((reader, writer, peer))) => {
                debug!(%peer, "metrics scrape");
                let (rt2, shared) = (rt.clone(), shared.clone());
                rt.spawn(async move { answer(&rt2, &shared, reader, writer).await });
            }
            Some(Err(e)) => {
                warn!(node_id = shared.config.node_id, error = %e, "metrics: accept failed");
                rt.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer<R: Runtime>(
    rt: &R,
    shared: &Shared,
    mut reader: impl Reader,
    mut writer: impl Writer,
) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < REQUEST_BYTES_MAX {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Some(buf)
    };
    let timeout = async {
        rt.sleep(REQUEST_TIMEOUT).await;
        None
    };
    let Some(request) = future::or(read, timeout).await else {
        return;
    };
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", scrape(shared)),
        (Some("GET"), Some(path @ ("/raft-debug/on" | "/raft-debug/off"))) => {
            let on = path.ends_with("/on");
            match crate::logging::set_raft_debug(on) {
                Ok(()) => {
                    tracing::info!(
                        node_id = shared.config.node_id,
                        on,
                        "Raft message tracing switched through the metrics endpoint"
                    );
                    let state = if on { "on" } else { "off" };
                    ("200 OK", format!("raft message tracing {state}\n"))
                }
                Err(e) => ("500 Internal Server Error", format!("{e}\n")),
            }
        }
        (Some("GET"), Some(_)) => ("404 Not Found", "try /metrics\n".to_string()),
        _ => ("400 Bad Request", "GET /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = writer.write_all(response.as_bytes()).await;
}

fn scrape(shared: &Shared) -> String {
    let (logs, denials, health) = {
        let b = shared.broker.lock().unwrap();
        (b.log_stats(), b.denials(), b.partition_health())
    };
    let cluster = shared.cluster_gauges.lock().unwrap().clone();
    render(
        shared.config.node_id,
        &shared.metrics,
        &logs,
        &denials,
        health,
        cluster.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_logs_and_raft_groups() {
        let c = Counters::default();
        c.request(ApiKey::Produce);
        c.request(ApiKey::Produce);
        c.request(ApiKey::Fetch);
        Counters::add(&c.bytes_received, 100);
        let logs = vec![("a\"b".to_string(), 0, 5, 9, 10, 4096)];
        let cluster = ClusterGauges {
            groups: vec![GroupGauge {
                group: 3,
                topic: "t".into(),
                partition: 1,
                leader: true,
                term: 4,
                commit: 20,
                applied: 19,
                first_index: 11,
                last_index: 21,
            }],
            peers: vec![PeerGauge {
                id: 2,
                connected: true,
                dropped_batches: 0,
                connections: 1,
                batches_sent: 40,
                messages_sent: 90,
            }],
            quiesced: 1,
        };
        let text = render(7, &c, &logs, &[("TOPIC".into(), 2)], (2, 1), Some(&cluster));
        for line in [
            "sluice_info{node_id=\"7\",version=\"",
            "sluice_requests_total{api=\"Produce\"} 2",
            "sluice_requests_total{api=\"Fetch\"} 1",
            "sluice_received_bytes_total 100",
            "sluice_log_high_watermark{topic=\"a\\\"b\",partition=\"0\"} 9",
            "sluice_log_size_bytes{topic=\"a\\\"b\",partition=\"0\"} 4096",
            "sluice_raft_leader{group=\"3\",topic=\"t\",partition=\"1\"} 1",
            "sluice_raft_applied_index{group=\"3\",topic=\"t\",partition=\"1\"} 19",
            "sluice_raft_peer_connected{peer=\"2\"} 1",
            "sluice_raft_peer_messages_sent_total{peer=\"2\"} 90",
            "sluice_raft_groups_quiesced 1",
            "sluice_raft_groups_ticking 0",
            "sluice_under_replicated_partitions 2",
            "sluice_offline_partitions 1",
            "# TYPE sluice_requests_total counter",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("api=\"Metadata\""),
            "zero counters are left out"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<i64>().is_ok(), "{l}");
        }
        assert!(!render(7, &c, &logs, &[], (0, 0), None).contains("sluice_raft_"));
    }
}
