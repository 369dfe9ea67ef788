//! One client connection: frames in, responses out, in request order.
//!
//! The reading half decodes each request and hands it to the broker at once, so the work of
//! request N+1 (say, appending a produce) overlaps the wait of request N (its fsync). What the
//! broker answers is queued, in order, to the writing half, which waits for each answer to be
//! ready (a sync to complete, a long-poll to be satisfied, a parked group request to be answered)
//! and writes it.
//!
//! Group requests the coordinator parks (JoinGroup until the rebalance completes, SyncGroup until
//! the leader's assignment) get a oneshot registered in [`Shared::parked`] under their token while
//! the broker lock is still held; whoever produces the answer later (another connection's request,
//! the coordinator timer) delivers it there ([`crate::server::deliver`]). Unlike Kafka, the reader
//! does not stop reading while a request is parked: later requests are handled meanwhile, but
//! their responses still leave in request order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestKind, ResponseKind};
use sluice_proto::broker::{Deferred, Reply};
use sluice_proto::codec::{self, DecodeError, RequestContext};
use sluice_proto::frame::FrameDecoder;
use sluice_proto::runtime::{Reader, Runtime, Writer};
use sluice_proto::security::authorize::Denied;
use sluice_proto::security::sasl::{ConnectionAuth, Outcome, SaslSettings};
use sluice_proto::security::{ANONYMOUS, SecurityProtocol, Session};
use tracing::{debug, info, warn};

use crate::budget::Permit;
use crate::listeners::ListenerConfig;
use crate::metrics::Counters;
use crate::server::{Shared, now_ms};

/// Requests one connection may have in flight before reading pauses.
const MAX_IN_FLIGHT: usize = 128;

/// A response on its way out.
enum Pending {
    Ready(Bytes, Option<Permit>),
    /// Send once the sync `seq` completed (a produce ack, a group commit's answer).
    AfterSync {
        ctx: RequestContext,
        seq: u64,
        response: Box<ResponseKind>,
        denied: Denied,
        _permit: Option<Permit>,
    },
    /// A request parked by the group coordinator: its answer arrives on `rx`.
    Parked {
        ctx: RequestContext,
        rx: async_channel::Receiver<Deferred>,
        denied: Denied,
        _permit: Option<Permit>,
    },
    Fetch {
        ctx: RequestContext,
        request: Box<FetchRequest>,
        deadline: Instant,
        denied: Denied,
        _permit: Option<Permit>,
    },
    /// Write this (if anything) and close the connection.
    Close(Option<Bytes>),
    /// A failed authentication: wait the failure delay, write this (if anything), close.
    AuthFailed(Option<Bytes>),
}

/// Who is on the other end, as far as this connection knows.
struct Peer {
    addr: std::net::SocketAddr,
    auth: ConnectionAuth,
    session: Session,
}

/// Serves one connection of `listener` until the peer closes it or it misbehaves: the TLS
/// handshake first on SSL and SASL_SSL listeners.
pub async fn serve<R: Runtime, Rd: Reader, W: Writer>(
    rt: R,
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    reader: Rd,
    writer: W,
    peer: std::net::SocketAddr,
) {
    if !listener.protocol.uses_tls() {
        return serve_plain(
            rt,
            shared,
            listener,
            reader,
            writer,
            peer,
            ANONYMOUS.into(),
            None,
        )
        .await;
    }
    let Some(acceptor) = shared.tls.clone() else {
        warn!(node_id = shared.config.node_id, %peer, listener = %listener.name, "no TLS configuration: closing");
        return;
    };
    match acceptor.accept(&rt, reader, writer).await {
        Ok((r, w, cn)) => {
            let principal = match (&cn, listener.protocol) {
                (Some(cn), SecurityProtocol::Ssl) => format!("User:{cn}"),
                _ => ANONYMOUS.to_string(),
            };
            serve_plain(rt, shared, listener, r, w, peer, principal, None).await
        }
        Err(e) => {
            Counters::add(&shared.metrics.tls_handshake_failures, 1);
            info!(node_id = shared.config.node_id, %peer, listener = %listener.name, error = %e, "TLS handshake failed");
        }
    }
}

/// Serves a connection from another cluster node, authenticated by its cluster certificate
/// (replica catch-up fetches): the only sessions allowed to fetch as a replica.
pub async fn serve_node<R: Runtime, Rd: Reader, W: Writer>(
    rt: R,
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    reader: Rd,
    writer: W,
    peer: std::net::SocketAddr,
    node: i32,
) {
    let principal = format!("User:node-{node}");
    serve_plain(
        rt,
        shared,
        listener,
        reader,
        writer,
        peer,
        principal,
        Some(node),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn serve_plain<R: Runtime, Rd: Reader, W: Writer>(
    rt: R,
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    reader: Rd,
    writer: W,
    addr: std::net::SocketAddr,
    principal: String,
    node: Option<i32>,
) {
    let sasl = listener.protocol.uses_sasl().then(|| SaslSettings {
        mechanisms: shared.config.sasl_mechanisms.clone(),
        reauth_ms: shared.config.reauth_ms as i64,
        unknown_user_secret: shared.sasl_secret.clone(),
    });
    let peer = Peer {
        addr,
        session: Session {
            principal: principal.clone(),
            host: addr.ip().to_string(),
            listener: listener.name.clone(),
            node,
        },
        auth: ConnectionAuth::new(sasl, principal),
    };
    let open = &shared.metrics.connections_open;
    open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = async_channel::bounded::<Pending>(MAX_IN_FLIGHT);
    let read_side = read_requests(shared.clone(), reader, tx, peer);
    let write_side = write_responses(rt, shared.clone(), writer, rx, addr);
    let (parked, ()) = futures_lite::future::zip(read_side, write_side).await;
    // Responses still owed to this connection have nowhere to go.
    let mut map = shared.parked.lock().unwrap();
    for token in parked {
        map.remove(&token);
    }
    drop(map);
    shared
        .metrics
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    debug!(peer = %addr, "connection closed");
}

/// Reads and handles requests until the peer closes; returns the tokens of requests this
/// connection parked (so teardown can drop their registrations).
async fn read_requests<Rd: Reader>(
    shared: Arc<Shared>,
    mut reader: Rd,
    tx: async_channel::Sender<Pending>,
    mut peer: Peer,
) -> Vec<u64> {
    let mut parked: Vec<u64> = Vec::new();
    if !shared.serving() {
        debug!(node_id = shared.config.node_id, peer = %peer.addr, "connection waits until __meta caught up");
        shared.until_serving().await;
        if shared.shutting_down() {
            return parked;
        }
    }
    if shared.cut_off() {
        debug!(node_id = shared.config.node_id, peer = %peer.addr, "connection refused: cut off from the cluster");
        return parked;
    }
    let mut decoder = FrameDecoder::new(shared.config.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let mut permit: Option<Permit> = None;
    loop {
        loop {
            match decoder.pending_frame_bytes() {
                Some(Err(e)) => {
                    warn!(node_id = shared.config.node_id, peer = %peer.addr, error = %e, "closing connection: bad frame");
                    let _ = tx.send(Pending::Close(None)).await;
                    return parked;
                }
                Some(Ok(n)) if permit.is_none() => {
                    permit = Some(shared.budget.acquire(n + 4).await);
                }
                _ => {}
            }
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => unreachable!("length errors are reported by pending_frame_bytes"),
            };
            let pending = if peer.auth.expects_raw_token() {
                raw_sasl_token(&shared, frame, permit.take(), &mut peer)
            } else {
                handle_frame(&shared, frame, permit.take(), &mut peer, &mut parked)
            };
            let close = matches!(pending, Pending::Close(_) | Pending::AuthFailed(_));
            if tx.send(pending).await.is_err() || close {
                return parked;
            }
        }
        let into_decoder = |bytes: &[u8]| decoder.extend(bytes);
        let read = futures_lite::future::or(
            async { Some(reader.read_into(&mut buf, into_decoder).await) },
            async {
                shared.until_cut_off().await;
                None
            },
        );
        let Some(read) = read.await else {
            debug!(node_id = shared.config.node_id, peer = %peer.addr, "closing connection: cut off from the cluster");
            return parked;
        };
        match read {
            Ok(0) => return parked,
            Ok(n) => Counters::add(&shared.metrics.bytes_received, n),
            Err(e) => {
                debug!(peer = %peer.addr, error = %e, "read failed");
                return parked;
            }
        }
    }
}

/// APIs served by the group coordinator: after them the coordinator's timer may need re-arming.
fn is_group_api(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::OffsetDelete
            | ApiKey::ListGroups
            | ApiKey::DescribeGroups
            | ApiKey::DeleteGroups
            | ApiKey::InitProducerId
            | ApiKey::DeleteTopics
            // Transactions: they move the timeout timer and may answer parked requests.
            | ApiKey::AddPartitionsToTxn
            | ApiKey::AddOffsetsToTxn
            | ApiKey::EndTxn
            | ApiKey::TxnOffsetCommit
            | ApiKey::WriteTxnMarkers
    )
}

/// A random SCRAM server nonce: printable, no commas.
fn server_nonce() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Answers SaslHandshake and SaslAuthenticate (never the broker's business: they change only
/// this connection).
fn handle_sasl(
    shared: &Shared,
    ctx: &RequestContext,
    body: RequestKind,
    permit: Option<Permit>,
    peer: &mut Peer,
) -> Pending {
    match body {
        RequestKind::SaslHandshake(r) => {
            let (resp, close) = peer.auth.handshake(&r, ctx.api_version, server_nonce());
            if resp.error_code != 0 {
                info!(node_id = shared.config.node_id, peer = %peer.addr, mechanism = %r.mechanism.as_str(), error_code = resp.error_code, "SASL handshake refused");
            }
            let resp = ResponseKind::SaslHandshake(resp);
            if close {
                Counters::add(&shared.metrics.authentication_failures, 1);
                return match codec::encode_response(ctx, &resp) {
                    Ok(b) => Pending::AuthFailed(Some(b)),
                    Err(_) => Pending::AuthFailed(None),
                };
            }
            encode(ctx, &resp, permit)
        }
        RequestKind::SaslAuthenticate(r) => {
            let store = shared.broker.lock().unwrap().credentials();
            let (resp, outcome) =
                peer.auth
                    .authenticate(&r.auth_bytes, ctx.api_version, &store, now_ms());
            let resp = ResponseKind::SaslAuthenticate(resp);
            match outcome {
                Outcome::Continue => encode(ctx, &resp, permit),
                Outcome::Authenticated(principal) => {
                    authenticated(shared, peer, &principal);
                    encode(ctx, &resp, permit)
                }
                Outcome::Failed(reason) => {
                    auth_failed(shared, peer, &reason);
                    match codec::encode_response(ctx, &resp) {
                        Ok(b) => Pending::AuthFailed(Some(b)),
                        Err(_) => Pending::AuthFailed(None),
                    }
                }
            }
        }
        _ => unreachable!("only SASL requests come here"),
    }
}

fn authenticated(shared: &Shared, peer: &mut Peer, principal: &str) {
    Counters::add(&shared.metrics.authentications, 1);
    info!(
        node_id = shared.config.node_id,
        peer = %peer.addr,
        principal,
        mechanism = peer.auth.mechanism().unwrap_or("-"),
        "SASL authentication succeeded"
    );
    peer.session.principal = principal.to_string();
}

fn auth_failed(shared: &Shared, peer: &Peer, reason: &str) {
    Counters::add(&shared.metrics.authentication_failures, 1);
    warn!(
        node_id = shared.config.node_id,
        peer = %peer.addr,
        mechanism = peer.auth.mechanism().unwrap_or("-"),
        reason,
        "SASL authentication failed"
    );
}

/// A raw SASL token after SaslHandshake v0: the reply goes back length-prefixed, without a
/// Kafka header; a failure closes the connection (Kafka's v0 behaviour).
fn raw_sasl_token(
    shared: &Shared,
    frame: Bytes,
    permit: Option<Permit>,
    peer: &mut Peer,
) -> Pending {
    let store = shared.broker.lock().unwrap().credentials();
    match peer.auth.raw_token(&frame, &store, now_ms()) {
        Ok((reply, outcome)) => {
            if let Outcome::Authenticated(principal) = &outcome {
                authenticated(shared, peer, principal);
            }
            let mut b = BytesMut::with_capacity(4 + reply.len());
            b.put_u32(reply.len() as u32);
            b.put_slice(&reply);
            Pending::Ready(b.freeze(), permit)
        }
        Err(reason) => {
            auth_failed(shared, peer, &reason);
            Pending::AuthFailed(None)
        }
    }
}

fn handle_frame(
    shared: &Shared,
    frame: Bytes,
    permit: Option<Permit>,
    peer: &mut Peer,
    parked: &mut Vec<u64>,
) -> Pending {
    let request = match codec::decode_request(frame) {
        Ok(r) => r,
        Err(e) => {
            Counters::add(&shared.metrics.refused_requests, 1);
            warn!(node_id = shared.config.node_id, peer = %peer.addr, error = %e, "refusing request");
            let reply = e
                .response()
                .and_then(|(ctx, resp)| codec::encode_response(&ctx, &resp).ok());
            return match (&e, reply) {
                // KIP-511: the client retries ApiVersions at the version we told it.
                (DecodeError::UnsupportedVersion { .. }, Some(bytes)) => {
                    Pending::Ready(bytes, permit)
                }
                (_, reply) => Pending::Close(reply),
            };
        }
    };
    let ctx = request.ctx;
    shared.metrics.request(ctx.api_key);
    if let Err(refusal) = peer.auth.admit(ctx.api_key, now_ms()) {
        Counters::add(&shared.metrics.refused_requests, 1);
        warn!(node_id = shared.config.node_id, peer = %peer.addr, principal = %peer.session.principal, reason = %refusal, "closing connection");
        return Pending::Close(None);
    }
    if matches!(
        ctx.api_key,
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    ) {
        return handle_sasl(shared, &ctx, request.body, permit, peer);
    }
    let received = Instant::now();
    let group_api = is_group_api(ctx.api_key);
    let (reply, denied, parked_rx) = {
        let mut broker = shared.broker.lock().unwrap();
        broker.advance_clock(crate::server::mono_ms(), now_ms());
        let (reply, denied) = broker.handle_session(&peer.session, &ctx, request.body, now_ms());
        // Register before the lock is released: the answer may come from the next request.
        let parked_rx = match &reply {
            Reply::Parked { token } => {
                let (tx, rx) = async_channel::bounded(1);
                shared.parked.lock().unwrap().insert(*token, tx);
                if parked.len() >= 64 {
                    let live = shared.parked.lock().unwrap();
                    parked.retain(|t| live.contains_key(t));
                }
                parked.push(*token);
                Some(rx)
            }
            _ => None,
        };
        let cluster = broker.is_cluster();
        if group_api || cluster {
            crate::server::deliver(shared, &mut broker);
        }
        drop(broker);
        if cluster {
            // Proposals were queued: the Raft loop picks them up.
            shared.raft_wake.notify(1);
        }
        (reply, denied, parked_rx)
    };
    if group_api {
        shared.timer.notify(usize::MAX);
    }
    match reply {
        Reply::Now(resp) => {
            if matches!(resp, ResponseKind::Produce(_)) {
                // Visible at once without fsync: wake long-polling fetches.
                shared.visible.notify(usize::MAX);
            }
            encode(&ctx, &resp, permit)
        }
        Reply::Nothing => {
            shared.flush.notify(1);
            shared.visible.notify(usize::MAX);
            Pending::Ready(Bytes::new(), permit)
        }
        Reply::AfterSync { seq, response } => {
            shared.flush.notify(1);
            Pending::AfterSync {
                ctx,
                seq,
                response: Box::new(ResponseKind::Produce(response)),
                denied,
                _permit: permit,
            }
        }
        Reply::Durable { seq, response } => {
            shared.flush.notify(1);
            Pending::AfterSync {
                ctx,
                seq,
                response: Box::new(response),
                denied,
                _permit: permit,
            }
        }
        Reply::Parked { .. } => {
            // The parked request may have written (a transaction's abort decision) and wait
            // for the sync that completes it.
            shared.flush.notify(1);
            Pending::Parked {
                ctx,
                rx: parked_rx.expect("registered above"),
                denied,
                _permit: permit,
            }
        }
        Reply::Fetch(request) => {
            let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
            Pending::Fetch {
                ctx,
                request,
                deadline: received + wait,
                denied,
                _permit: permit,
            }
        }
    }
}

fn encode(ctx: &RequestContext, resp: &ResponseKind, permit: Option<Permit>) -> Pending {
    match codec::encode_response(ctx, resp) {
        Ok(b) => Pending::Ready(b, permit),
        Err(e) => {
            warn!(api = ?ctx.api_key, version = ctx.api_version, error = %e, "cannot encode response; closing connection");
            Pending::Close(None)
        }
    }
}

async fn write_responses<R: Runtime, W: Writer>(
    rt: R,
    shared: Arc<Shared>,
    mut writer: W,
    rx: async_channel::Receiver<Pending>,
    peer: std::net::SocketAddr,
) {
    while let Ok(pending) = rx.recv().await {
        let (bytes, close) = match pending {
            Pending::Ready(b, _permit) => (b, false),
            Pending::Close(b) => (b.unwrap_or_default(), true),
            Pending::AuthFailed(b) => {
                // Kafka's connection.failed.authentication.delay.ms: slows password guessing.
                let delay = Duration::from_millis(shared.config.failed_authentication_delay_ms);
                futures_lite::future::or(rt.sleep(delay), shared.stopped()).await;
                (b.unwrap_or_default(), true)
            }
            Pending::AfterSync {
                ctx,
                seq,
                response,
                denied,
                ..
            } => {
                let mut resp = wait_for_sync(&shared, seq, *response, ctx.api_version).await;
                denied.apply(&mut resp);
                match codec::encode_response(&ctx, &resp) {
                    Ok(b) => (b, false),
                    Err(_) => (Bytes::new(), true),
                }
            }
            Pending::Parked {
                ctx, rx, denied, ..
            } => {
                // The sender is dropped only at shutdown or when the broker forgot the token.
                // Cut off from the cluster, the node closes the connection rather than make
                // the client wait out its timeout: it takes the request elsewhere.
                let answer = futures_lite::future::or(async { rx.recv().await.ok() }, async {
                    futures_lite::future::or(shared.stopped(), shared.until_cut_off()).await;
                    None
                })
                .await;
                match answer {
                    None => (Bytes::new(), true),
                    Some(d) => {
                        let mut resp =
                            wait_for_sync(&shared, d.seq, d.response, ctx.api_version).await;
                        denied.apply(&mut resp);
                        match codec::encode_response(&ctx, &resp) {
                            Ok(b) => (b, false),
                            Err(e) => {
                                warn!(api = ?ctx.api_key, version = ctx.api_version, error = %e, "cannot encode deferred response");
                                (Bytes::new(), true)
                            }
                        }
                    }
                }
            }
            Pending::Fetch {
                ctx,
                request,
                deadline,
                denied,
                ..
            } => {
                let resp = long_poll(&rt, &shared, &ctx, &request, deadline).await;
                let mut resp = ResponseKind::Fetch(resp);
                denied.apply(&mut resp);
                match codec::encode_response(&ctx, &resp) {
                    Ok(b) => (b, false),
                    Err(e) => {
                        warn!(version = ctx.api_version, error = %e, "cannot encode fetch response");
                        (Bytes::new(), true)
                    }
                }
            }
        };
        if !bytes.is_empty() {
            if let Err(e) = writer.write_all(&bytes).await {
                debug!(%peer, error = %e, "write failed");
                break;
            }
            Counters::add(&shared.metrics.bytes_sent, bytes.len());
        }
        if close {
            break;
        }
    }
    rx.close();
}

/// Waits for the sync that makes a response's writes durable; a failed sync turns it into an
/// error.
async fn wait_for_sync(
    shared: &Shared,
    seq: u64,
    response: ResponseKind,
    api_version: i16,
) -> ResponseKind {
    loop {
        let listener = shared.synced.listen();
        {
            let broker = shared.broker.lock().unwrap();
            if broker.synced_seq() >= seq {
                return response;
            }
            if broker.storage_failure().is_some() {
                return sluice_proto::broker::sync_failed(response, api_version);
            }
        }
        listener.await;
    }
}

/// Re-evaluates a fetch whenever new data becomes visible, until it has `min_bytes` or its
/// deadline passes.
async fn long_poll<R: Runtime>(
    rt: &R,
    shared: &Shared,
    ctx: &RequestContext,
    request: &FetchRequest,
    deadline: Instant,
) -> kafka_protocol::messages::FetchResponse {
    loop {
        let listener = shared.visible.listen();
        let outcome = shared
            .broker
            .lock()
            .unwrap()
            .fetch(request, ctx.api_version);
        let now = Instant::now();
        if outcome.has_error
            || outcome.bytes >= request.min_bytes.max(0) as usize
            || now >= deadline
            || shared.shutting_down()
        {
            return outcome.response;
        }
        let timeout = rt.sleep(deadline - now);
        futures_lite::future::or(listener, timeout).await;
    }
}
