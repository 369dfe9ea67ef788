//! The endpoint: one UDP socket on the Raft address, one QUIC connection per peer, a bounded
//! queue per peer, and the tasks that move batches between them.
//!
//! # Who dials whom
//!
//! The node with the lower id dials; the higher one accepts. So a pair of nodes has exactly one
//! connection, with no tie-breaking between two simultaneous dials. A dialer redials a lost
//! connection with capped exponential backoff and jitter ([`Limits::backoff_ms_min`] doubling to
//! [`Limits::backoff_ms_max`], each wait drawn uniformly from [d/2, d]); an acceptor waits.
//!
//! # Streams
//!
//! After the handshake each side opens **one long-lived unidirectional stream** and writes its
//! batches to it as length-delimited frames ([`crate::frame`]). Chosen over one stream per batch
//! because:
//! - batches arrive in the order they were sent, like the TCP links raft-rs is designed around
//!   (raft-rs tolerates reordering but answers a reordered append with a rejection and a probe);
//! - the only buffer between `send` and the wire is the bounded per-peer queue, drained by one
//!   writer, so overflow handling is in one place;
//! - no per-batch stream bookkeeping or stream-credit waits.
//!
//! The cost is head-of-line blocking inside one peer's traffic: a large batch delays the
//! heartbeats queued behind it. The Raft layer bounds batch sizes (`max_size_per_msg`), and
//! loss recovery is per stream either way. If snapshots are ever shipped through here, give
//! them their own stream.
//!
//! # Never blocking on a peer
//!
//! [`Transport::send`] only appends to the peer's queue (at most
//! [`Limits::peer_queue_batches_max`] batches). When the queue is full the **oldest** batch is
//! dropped and counted in [`PeerStatus::dropped_batches`]: Raft retransmits, and the newest
//! batch carries the newest state. Batches queued while a peer is unreachable are sent after it
//! reconnects (up to the bound).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use futures_lite::future;
use quinn::VarInt;
use rand::Rng as _;
use tracing::{Instrument as _, debug, info, warn};

use crate::certs::{NodeIdentity, cert_is_for_node, node_dns_name};
use crate::error::{PeerParseError, SendError, StartError};
use crate::frame::{self, FRAME_BYTES_MAX_DEFAULT, FrameError};
use crate::handshake::{
    HANDSHAKE_BYTES_MAX, Hello, Join, Opening, ROSTER_BYTES_MAX, Roster, Welcome,
};
use crate::tls;

/// QUIC application close code: the node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 1;
/// QUIC application close code: the acceptor refused the handshake (reason in the close frame).
pub const CLOSE_REFUSED: u32 = 2;
/// QUIC application close code: the dialer found another node than it expected.
pub const CLOSE_WRONG_PEER: u32 = 3;
/// QUIC application close code: a frame exceeded the size limit.
pub const CLOSE_FRAME_TOO_LARGE: u32 = 4;
/// QUIC application close code: the same node reconnected from the same address; the old
/// connection is replaced (the node restarted before the old connection timed out).
pub const CLOSE_REPLACED: u32 = 5;
/// QUIC application close code: a stream or frame error.
pub const CLOSE_PROTOCOL: u32 = 6;

/// How many refusals [`Transport::recent_refusals`] keeps.
const REFUSALS_KEPT_MAX: usize = 32;

/// Bounds and timings. Defaults suit a LAN cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame (one batch), both directions. Default 64 MiB.
    pub frame_bytes_max: usize,
    /// Batches queued per peer before the oldest is dropped. Default 1024.
    pub peer_queue_batches_max: usize,
    /// Received batches buffered for the [`Inbox`] before reading from peers pauses (QUIC flow
    /// control then pushes back on the senders). Default 4096.
    pub inbox_batches_max: usize,
    /// First redial delay after a failure. Default 50 ms.
    pub backoff_ms_min: u64,
    /// Redial delay cap. Default 2 s.
    pub backoff_ms_max: u64,
    /// Limit on the QUIC + TLS handshake plus our hello/welcome exchange. Default 5 s.
    pub handshake_timeout_ms: u64,
    /// A connection with no packet for this long is dead. Default 5 s.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval (must be below the idle timeout). Default 1 s.
    pub keep_alive_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            peer_queue_batches_max: 1024,
            inbox_batches_max: 4096,
            backoff_ms_min: 50,
            backoff_ms_max: 2000,
            handshake_timeout_ms: 5000,
            idle_timeout_ms: 5000,
            keep_alive_ms: 1000,
        }
    }
}

/// What [`Transport::start`] needs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id (non-zero; the TLS identity must be for it).
    pub node_id: u64,
    /// Cluster id; peers with another one are refused (guards against cross-wired clusters that
    /// share a CA). At most 255 bytes.
    pub cluster_id: String,
    /// The Raft address (`--raft-addr`). The UDP socket is bound to exactly this address, so
    /// packets leave from it; bind a specific IP, not 0.0.0.0, on multi-homed hosts. Port 0
    /// picks a free port ([`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// Every other node: `(id, raft address)`. See [`parse_peer`] for `id@host:port`. Nodes
    /// added later join with [`Transport::add_peer`].
    pub peers: Vec<(u64, SocketAddr)>,
    /// The voters the cluster's `__meta` group started with, told to joining nodes.
    pub initial_members: Vec<u64>,
    /// Certificates from [`crate::certs::load`].
    pub tls: NodeIdentity,
    /// Bounds and timings.
    pub limits: Limits,
}

impl TransportConfig {
    fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node id 0 is reserved by Raft".into());
        }
        if self.tls.node_id != self.node_id {
            return Err(format!(
                "the TLS identity is for node {}, not node {}",
                self.tls.node_id, self.node_id
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > u8::MAX as usize {
            return Err("cluster id must be 1 to 255 bytes".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for &(id, addr) in &self.peers {
            if id == 0 {
                return Err(format!("peer at {addr} has node id 0 (reserved by Raft)"));
            }
            if id == self.node_id {
                return Err(format!("peer {id}@{addr} has this node's own id"));
            }
            if !seen.insert(id) {
                return Err(format!("peer {id} is listed twice"));
            }
        }
        let l = &self.limits;
        if l.frame_bytes_max == 0 || u32::try_from(l.frame_bytes_max).is_err() {
            return Err("frame_bytes_max must be 1..=u32::MAX".into());
        }
        if l.peer_queue_batches_max == 0 || l.inbox_batches_max == 0 {
            return Err("queue bounds must be non-zero".into());
        }
        if l.backoff_ms_min == 0 || l.backoff_ms_min > l.backoff_ms_max {
            return Err("backoff must satisfy 0 < backoff_ms_min <= backoff_ms_max".into());
        }
        if l.handshake_timeout_ms == 0
            || l.keep_alive_ms == 0
            || l.keep_alive_ms >= l.idle_timeout_ms
        {
            return Err("timeouts must be non-zero and keep_alive_ms < idle_timeout_ms".into());
        }
        Ok(())
    }
}

/// Parses a peer given as `id@host:port` (host may be a name; the first resolved address is
/// used).
pub fn parse_peer(s: &str) -> Result<(u64, SocketAddr), PeerParseError> {
    let err = |detail: String| PeerParseError {
        input: s.to_string(),
        detail,
    };
    let (id, addr) = s.split_once('@').ok_or_else(|| err("missing '@'".into()))?;
    let id: u64 = id
        .parse()
        .map_err(|e| err(format!("node id {id:?}: {e}")))?;
    if id == 0 {
        return Err(err("node id 0 is reserved by Raft".into()));
    }
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| err(format!("address {addr:?}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("address {addr:?} resolves to nothing")))?;
    Ok((id, addr))
}

/// Connection state of one peer, as [`Transport::peer_states`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    /// Dialer side: a dial and handshake is in progress.
    Connecting,
    /// Handshake done; batches flow. `remote` is the peer's source address.
    Connected {
        /// The peer's address as seen on this connection.
        remote: SocketAddr,
    },
    /// Dialer side: the last attempt failed (see `last_error`); waiting before redialing.
    Backoff,
    /// Acceptor side: waiting for the peer (lower id) to dial.
    WaitingForPeer,
    /// The transport is shut down.
    ShutDown,
}

/// Status of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub id: u64,
    /// Its configured Raft address.
    pub addr: SocketAddr,
    /// Whether this node dials it (this node's id is lower).
    pub dials: bool,
    /// Current state.
    pub state: PeerState,
    /// Why the last connection attempt or connection failed, if one did.
    pub last_error: Option<String>,
    /// Batches waiting in the queue.
    pub queued_batches: usize,
    /// Batches dropped because the queue was full.
    pub dropped_batches: u64,
    /// Batches written to the peer's stream.
    pub sent_batches: u64,
    /// Batches received from the peer.
    pub received_batches: u64,
    /// Connections established so far (reconnects = this - 1).
    pub connections: u64,
}

/// A connection this node refused as acceptor (or whose TLS handshake failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where it came from.
    pub remote: SocketAddr,
    /// The node id it claimed, if it got as far as the handshake.
    pub claimed_id: Option<u64>,
    /// Why (the same text the dialer receives in the close frame).
    pub reason: String,
}

/// Received batches: `(from node id, payload)`.
#[derive(Debug)]
pub struct Inbox {
    rx: async_channel::Receiver<(u64, Bytes)>,
}

impl Inbox {
    /// The next batch; `None` once the transport is shut down and everything was read.
    pub async fn recv(&self) -> Option<(u64, Bytes)> {
        self.rx.recv().await.ok()
    }

    /// A batch if one is ready.
    pub fn try_recv(&self) -> Option<(u64, Bytes)> {
        self.rx.try_recv().ok()
    }

    /// Batches ready to read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no batch is ready.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// The Raft peer transport of one node. See the crate doc.
#[derive(Debug)]
pub struct Transport {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: u64,
    cluster_id: String,
    local_addr: SocketAddr,
    limits: Limits,
    runtime: Arc<dyn quinn::Runtime>,
    endpoint: quinn::Endpoint,
    peers: RwLock<BTreeMap<u64, Arc<Peer>>>,
    initial_members: Vec<u64>,
    inbox: async_channel::Sender<(u64, Bytes)>,
    refusals: Mutex<VecDeque<Refusal>>,
    shutting_down: AtomicBool,
    shutdown_event: Event,
    tasks_live: AtomicUsize,
    tasks_event: Event,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

struct Peer {
    id: u64,
    addr: SocketAddr,
    dials: bool,
    /// Removed from the cluster: its tasks end.
    removed: AtomicBool,
    /// Never registered with the cluster (a joiner may start empty).
    fresh: AtomicBool,
    queue: Mutex<VecDeque<Bytes>>,
    queue_event: Event,
    status: Mutex<(PeerState, Option<String>)>,
    /// The live connection, if any. Checked and set under this lock by the acceptor (duplicates).
    conn: Mutex<Option<quinn::Connection>>,
    dropped: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    connections: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn lock_write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Peer {
    fn new(me: u64, id: u64, addr: SocketAddr, fresh: bool) -> Arc<Peer> {
        let dials = me < id;
        let state = if dials {
            PeerState::Connecting
        } else {
            PeerState::WaitingForPeer
        };
        Arc::new(Peer {
            id,
            addr,
            dials,
            removed: AtomicBool::new(false),
            fresh: AtomicBool::new(fresh),
            queue: Mutex::new(VecDeque::new()),
            queue_event: Event::new(),
            status: Mutex::new((state, None)),
            conn: Mutex::new(None),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        })
    }
}

impl Transport {
    /// Binds `config.listen`, starts accepting and dialing on `runtime`, and returns the
    /// transport and the inbox of received batches.
    ///
    /// With `quinn::TokioRuntime`, call it inside a tokio runtime (the socket registers with
    /// the current reactor).
    pub fn start(
        config: TransportConfig,
        runtime: Arc<dyn quinn::Runtime>,
    ) -> Result<(Transport, Inbox), StartError> {
        let node_id = config.node_id;
        config
            .validate()
            .map_err(|detail| StartError::Config { node_id, detail })?;
        let tls_error = |detail| StartError::Tls { node_id, detail };
        let server_config = tls::server_config(&config.tls, &config.limits).map_err(tls_error)?;
        let client_config = tls::client_config(&config.tls, &config.limits).map_err(tls_error)?;
        let bind_error = |source| StartError::Bind {
            node_id,
            addr: config.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(bind_error)?;
        size_socket_buffers(&socket, node_id);
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime.clone(),
        )
        .map_err(bind_error)?;
        endpoint.set_default_client_config(client_config);
        let local_addr = endpoint.local_addr().map_err(bind_error)?;

        let peers = config
            .peers
            .iter()
            .map(|&(id, addr)| (id, Peer::new(node_id, id, addr, false)))
            .collect::<BTreeMap<_, _>>();
        let (inbox_tx, inbox_rx) = async_channel::bounded(config.limits.inbox_batches_max);
        let shared = Arc::new(Shared {
            node_id,
            cluster_id: config.cluster_id,
            local_addr,
            limits: config.limits,
            runtime,
            endpoint,
            peers: RwLock::new(peers),
            initial_members: config.initial_members,
            inbox: inbox_tx,
            refusals: Mutex::new(VecDeque::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_event: Event::new(),
            tasks_live: AtomicUsize::new(0),
            tasks_event: Event::new(),
        });

        info!(
            node_id,
            %local_addr,
            peers = ?config.peers,
            "raft transport listening"
        );
        Shared::spawn(&shared, accept_loop(shared.clone()));
        for peer in shared.all_peers().into_iter().filter(|p| p.dials) {
            Shared::spawn(&shared, dial_loop(shared.clone(), peer));
        }
        Ok((Transport { shared }, Inbox { rx: inbox_rx }))
    }

    /// Adds a peer: a node that joined the cluster. `fresh`: it does not vote yet, so it
    /// may start empty (told to it if it asks to join). A known peer keeps its address (the
    /// one it was configured or added with). Returns whether it was new.
    pub fn add_peer(&self, id: u64, addr: SocketAddr, fresh: bool) -> bool {
        let shared = &self.shared;
        if id == shared.node_id || id == 0 || shared.is_shutting_down() {
            return false;
        }
        if let Some(p) = shared.peer(id) {
            p.fresh.store(fresh, Ordering::Relaxed);
            return false;
        }
        let peer = Peer::new(shared.node_id, id, addr, fresh);
        lock_write(&shared.peers).insert(id, peer.clone());
        info!(peer_id = id, %addr, "node {id} added to the raft transport");
        if peer.dials {
            Shared::spawn(shared, dial_loop(shared.clone(), peer));
        }
        true
    }

    /// Drops a peer (a node removed from the cluster): its connection closes, its queue is
    /// discarded and its tasks end. Returns whether it was a peer.
    pub fn remove_peer(&self, id: u64) -> bool {
        let Some(peer) = lock_write(&self.shared.peers).remove(&id) else {
            return false;
        };
        peer.removed.store(true, Ordering::Release);
        if let Some(conn) = lock(&peer.conn).take() {
            conn.close(
                VarInt::from_u32(CLOSE_SHUTDOWN),
                format!("node {id} was removed from the cluster").as_bytes(),
            );
        }
        set_status(&peer, PeerState::ShutDown, None);
        peer.queue_event.notify(usize::MAX);
        info!(peer_id = id, "node {id} removed from the raft transport");
        true
    }

    /// The peers' ids.
    pub fn peer_ids(&self) -> Vec<u64> {
        lock_read(&self.shared.peers).keys().copied().collect()
    }

    /// [`Transport::start`] on tokio (`quinn::TokioRuntime`); call inside a tokio runtime.
    #[cfg(feature = "runtime-tokio")]
    pub fn start_tokio(config: TransportConfig) -> Result<(Transport, Inbox), StartError> {
        Self::start(config, Arc::new(quinn::TokioRuntime))
    }

    /// [`Transport::start`] on smol (`quinn::SmolRuntime`, tasks on smol's global executor).
    #[cfg(feature = "runtime-smol")]
    pub fn start_smol(config: TransportConfig) -> Result<(Transport, Inbox), StartError> {
        Self::start(config, Arc::new(quinn::SmolRuntime))
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// The bound Raft address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Queues `payload` (one encoded batch) for node `to`. Never waits: when the peer's queue is
    /// full the oldest queued batch is dropped and counted.
    pub fn send(&self, to: u64, payload: Bytes) -> Result<(), SendError> {
        let shared = &self.shared;
        if shared.shutting_down.load(Ordering::Acquire) {
            return Err(SendError::ShutDown);
        }
        let peer = shared.peer(to).ok_or(SendError::UnknownPeer(to))?;
        let max = shared.limits.frame_bytes_max;
        if payload.len() > max {
            return Err(SendError::TooLarge {
                bytes: payload.len(),
                max,
            });
        }
        let bound = shared.limits.peer_queue_batches_max;
        let dropped = {
            let mut queue = lock(&peer.queue);
            debug_assert!(queue.len() <= bound);
            let dropped = if queue.len() == bound {
                queue.pop_front();
                true
            } else {
                false
            };
            queue.push_back(payload);
            debug_assert!(queue.len() <= bound);
            dropped
        };
        if dropped {
            let total = peer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if total.is_power_of_two() {
                warn!(
                    node_id = shared.node_id,
                    peer_id = to,
                    dropped_total = total,
                    "peer queue full; dropped the oldest batch"
                );
            }
        }
        peer.queue_event.notify(1);
        Ok(())
    }

    /// Status of every peer, by id.
    pub fn peer_states(&self) -> Vec<PeerStatus> {
        self.shared
            .all_peers()
            .iter()
            .map(|p| {
                let (state, last_error) = lock(&p.status).clone();
                PeerStatus {
                    id: p.id,
                    addr: p.addr,
                    dials: p.dials,
                    state,
                    last_error,
                    queued_batches: lock(&p.queue).len(),
                    dropped_batches: p.dropped.load(Ordering::Relaxed),
                    sent_batches: p.sent.load(Ordering::Relaxed),
                    received_batches: p.received.load(Ordering::Relaxed),
                    connections: p.connections.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The last connections this node refused as acceptor, oldest first (at most 32).
    pub fn recent_refusals(&self) -> Vec<Refusal> {
        lock(&self.shared.refusals).iter().cloned().collect()
    }

    /// Closes every connection (peers see [`CLOSE_SHUTDOWN`]), stops all tasks, closes the
    /// inbox (after the batches already in it) and waits until the socket is released.
    pub async fn shutdown(self) {
        let shared = self.shared.clone();
        shared.begin_shutdown();
        // Every task races its work against the shutdown signal, so this ends promptly.
        loop {
            if shared.tasks_live.load(Ordering::Acquire) == 0 {
                break;
            }
            let listener = shared.tasks_event.listen();
            if shared.tasks_live.load(Ordering::Acquire) == 0 {
                break;
            }
            listener.await;
        }
        // Let the close frames go out; bounded in case a peer never acknowledges.
        let drained = async {
            shared.endpoint.wait_idle().await;
            true
        };
        let capped = async {
            sleep(&*shared.runtime, Duration::from_millis(500)).await;
            false
        };
        future::or(drained, capped).await;
        info!(node_id = shared.node_id, "raft transport shut down");
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Dropped without `shutdown`: still stop the tasks and close the connections.
        self.shared.begin_shutdown();
    }
}

impl Shared {
    fn begin_shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shutdown_event.notify(usize::MAX);
        let reason = format!("node {} is shutting down", self.node_id);
        for peer in self.all_peers() {
            if let Some(conn) = lock(&peer.conn).take() {
                conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), reason.as_bytes());
            }
            set_status(&peer, PeerState::ShutDown, None);
            peer.queue_event.notify(usize::MAX);
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), reason.as_bytes());
        self.inbox.close();
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn peer(&self, id: u64) -> Option<Arc<Peer>> {
        lock_read(&self.peers).get(&id).cloned()
    }

    fn all_peers(&self) -> Vec<Arc<Peer>> {
        lock_read(&self.peers).values().cloned().collect()
    }

    /// Resolves once shutdown has begun.
    async fn shutdown_signal(&self) {
        loop {
            if self.is_shutting_down() {
                return;
            }
            let listener = self.shutdown_event.listen();
            if self.is_shutting_down() {
                return;
            }
            listener.await;
        }
    }

    /// Spawns a tracked task (shutdown waits for it), inside a span carrying `node_id` (the
    /// caller's, when it runs in one already, so log lines do not repeat it).
    fn spawn(this: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        this.tasks_live.fetch_add(1, Ordering::AcqRel);
        let shared = this.clone();
        let current = tracing::Span::current();
        let span = if current
            .metadata()
            .is_some_and(|m| m.name() == "raft_transport")
        {
            current
        } else {
            tracing::info_span!("raft_transport", node_id = this.node_id)
        };
        let tracked = async move {
            task.await;
            if shared.tasks_live.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.tasks_event.notify(usize::MAX);
            }
        }
        .instrument(span);
        this.runtime.spawn(Box::pin(tracked));
    }

    /// Keeps `refusal` for [`Transport::refusals`]; returns how many kept ones it repeats (same
    /// host, claimed id and reason: a peer redialing with backoff).
    fn record_refusal(&self, refusal: Refusal) -> usize {
        let mut refusals = lock(&self.refusals);
        let seen = refusals
            .iter()
            .filter(|r| {
                r.remote.ip() == refusal.remote.ip()
                    && r.claimed_id == refusal.claimed_id
                    && r.reason == refusal.reason
            })
            .count();
        if refusals.len() == REFUSALS_KEPT_MAX {
            refusals.pop_front();
        }
        refusals.push_back(refusal);
        seen
    }
}

fn set_status(peer: &Peer, state: PeerState, error: Option<String>) {
    let mut status = lock(&peer.status);
    if status.0 == PeerState::ShutDown {
        return;
    }
    status.0 = state;
    if error.is_some() {
        status.1 = error;
    }
}

async fn sleep(runtime: &dyn quinn::Runtime, duration: Duration) {
    let mut timer = runtime.new_timer(Instant::now() + duration);
    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
}

/// `Some(output)` unless `limit` passes first.
async fn timeout<T>(
    runtime: &dyn quinn::Runtime,
    limit: Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let work = async { Some(work.await) };
    let expire = async {
        sleep(runtime, limit).await;
        None
    };
    future::or(work, expire).await
}

/// A repeated failure is logged at warn the 1st, 2nd, 4th, 8th… time, else at debug: a peer that
/// is down or refuses us is retried with backoff, and the log should say so without flooding.
fn worth_warning(repeats: usize) -> bool {
    (repeats + 1).is_power_of_two()
}

/// `warn!` when the `repeats`-th repetition is [`worth_warning`], else `debug!`.
macro_rules! log_repeated {
    ($repeats:expr, $($arg:tt)+) => {
        if worth_warning($repeats) {
            warn!(repeats = $repeats, $($arg)+)
        } else {
            debug!(repeats = $repeats, $($arg)+)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Accepting (this node has the higher id).

async fn accept_loop(shared: Arc<Shared>) {
    loop {
        let next = future::or(async { shared.endpoint.accept().await }, async {
            shared.shutdown_signal().await;
            None
        });
        let Some(incoming) = next.await else { break };
        Shared::spawn(&shared, accept_one(shared.clone(), incoming));
    }
    debug!("accept loop ended");
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let limit = Duration::from_millis(shared.limits.handshake_timeout_ms);
    let work = async {
        let conn = match incoming.await {
            Ok(conn) => conn,
            Err(e) => {
                let reason = format!("TLS handshake with {remote} failed: {e}");
                let seen = shared.record_refusal(Refusal {
                    remote,
                    claimed_id: None,
                    reason,
                });
                log_repeated!(seen, %remote, error = %e, "refused a connection: TLS handshake failed");
                return None;
            }
        };
        match accept_handshake(&shared, &conn).await {
            Ok(Some(peer)) => Some((peer, conn)),
            // A join answered: the joiner closes the connection.
            Ok(None) => None,
            Err((claimed_id, reason)) => {
                conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                let seen = shared.record_refusal(Refusal {
                    remote,
                    claimed_id,
                    reason: reason.clone(),
                });
                log_repeated!(seen, %remote, claimed_id, reason = %reason, "refused a connection");
                None
            }
        }
    };
    let work = future::or(work, async {
        shared.shutdown_signal().await;
        None
    });
    let Some(Some((peer, conn))) = timeout(&*shared.runtime, limit, work).await else {
        return;
    };
    if peer.removed.load(Ordering::Acquire) {
        conn.close(VarInt::from_u32(CLOSE_REFUSED), b"removed from the cluster");
        return;
    }
    if run_session(&shared, &peer, conn).await && !shared.is_shutting_down() {
        set_status(&peer, PeerState::WaitingForPeer, None);
    }
}

/// One address, also when one side is an IPv4-mapped IPv6 address (a dual-stack socket).
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Reads the dialer's hello, checks it, registers the connection and answers welcome (or
/// answers a join with the roster: `None`). On refusal returns the claimed id (if known) and
/// the reason.
async fn accept_handshake(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
) -> Result<Option<Arc<Peer>>, (Option<u64>, String)> {
    let me = shared.node_id;
    let remote = conn.remote_address();
    let (mut send, mut recv) = conn
        .accept_bi()
        .await
        .map_err(|e| (None, format!("no handshake stream from {remote}: {e}")))?;
    let hello = frame::read_frame(&mut recv, HANDSHAKE_BYTES_MAX)
        .await
        .map_err(|e| (None, format!("reading the handshake from {remote}: {e}")))?
        .ok_or_else(|| (None, format!("{remote} closed the handshake stream")))?;
    let hello = match Opening::decode(&hello).map_err(|e| (None, format!("{e} from {remote}")))? {
        Opening::Hello(hello) => hello,
        Opening::Join(join) => return answer_join(shared, conn, send, join).await.map(|()| None),
    };
    let from = hello.from;
    let refuse = |reason: String| Err((Some(from), reason));

    if hello.cluster_id != shared.cluster_id {
        return refuse(format!(
            "node {from} at {remote} is in cluster {:?}, node {me} is in cluster {:?}",
            hello.cluster_id, shared.cluster_id
        ));
    }
    let cert_ok = tls::peer_leaf_cert(conn).is_some_and(|c| cert_is_for_node(&c, from));
    if !cert_ok {
        return refuse(format!(
            "{remote} claims to be node {from} but its certificate is not for node {from} \
             (it lacks the name {})",
            node_dns_name(from)
        ));
    }
    if hello.expected != me {
        return refuse(format!(
            "node {from} expected node {} at {}, but this is node {me}",
            hello.expected, shared.local_addr
        ));
    }
    if from == me {
        return refuse(format!("node {from} at {remote} has this node's own id"));
    }
    let Some(peer) = shared.peer(from) else {
        return refuse(format!(
            "node {from} is not a member of the cluster as node {me} knows it (a node joining a running cluster is added first: `sluice cluster add-node {from}@HOST:PORT`)"
        ));
    };
    if peer.dials {
        return refuse(format!(
            "node {from} dialed node {me}, but the lower id dials: node {me} dials node {from}"
        ));
    }
    {
        let mut slot = lock(&peer.conn);
        if let Some(old) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            let old_remote = old.remote_address();
            if old_remote == remote {
                info!(
                    peer_id = from,
                    %remote,
                    "node reconnected from the same address (restart?); replacing the old connection"
                );
                old.close(
                    VarInt::from_u32(CLOSE_REPLACED),
                    b"replaced by a new connection from the same node",
                );
            } else if same_addr(remote, peer.addr) && !same_addr(old_remote, peer.addr) {
                // Two nodes claim one id and the impostor came first: the one at the address
                // `--peers` gives for that id takes the place (whatever the start order).
                let reason = format!(
                    "node {from} connected from {remote}, its address in --peers; closing the \
                     connection from {old_remote}, which also claimed node {from}: refusing a \
                     second node {from} from {old_remote}"
                );
                warn!(peer_id = from, %remote, %old_remote, "{reason}");
                old.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            } else {
                return refuse(format!(
                    "node {from} is already connected from {old_remote}; refusing a second \
                     node {from} from {remote}"
                ));
            }
        }
        *slot = Some(conn.clone());
    }
    let welcome = Bytes::from(Welcome { node: me }.encode());
    let answered = async {
        frame::write_frame(&mut send, welcome, HANDSHAKE_BYTES_MAX).await?;
        send.finish().map_err(|e| FrameError::Write(e.into()))?;
        Ok::<(), FrameError>(())
    };
    if let Err(e) = answered.await {
        let mut slot = lock(&peer.conn);
        if slot
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *slot = None;
        }
        return refuse(format!("answering node {from} at {remote}: {e}"));
    }
    info!(peer_id = from, %remote, "accepted node {from}");
    Ok(Some(peer))
}

/// A node asks to join: if it is a member already (added through `__meta`), it gets the roster.
async fn answer_join(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    join: Join,
) -> Result<(), (Option<u64>, String)> {
    let me = shared.node_id;
    let from = join.from;
    let remote = conn.remote_address();
    let refuse = |reason: String| Err((Some(from), reason));
    if !join.cluster_id.is_empty() && join.cluster_id != shared.cluster_id {
        return refuse(format!(
            "node {from} at {remote} asks to join cluster {:?}, node {me} is in cluster {:?}",
            join.cluster_id, shared.cluster_id
        ));
    }
    if !tls::peer_leaf_cert(conn).is_some_and(|c| cert_is_for_node(&c, from)) {
        return refuse(format!(
            "{remote} claims to be node {from} but its certificate is not for node {from} \
             (it lacks the name {})",
            node_dns_name(from)
        ));
    }
    if from == me {
        return refuse(format!("node {from} at {remote} has this node's own id"));
    }
    let Some(peer) = shared.peer(from) else {
        return refuse(format!(
            "node {from} is not a member of cluster {:?} yet: add it first with `sluice cluster add-node {from}@HOST:PORT --bootstrap KAFKA_HOST:PORT` (it keeps retrying)",
            shared.cluster_id
        ));
    };
    let mut peers: Vec<(u64, String)> = shared
        .all_peers()
        .iter()
        .map(|p| (p.id, p.addr.to_string()))
        .collect();
    peers.push((me, shared.local_addr.to_string()));
    let roster = Roster {
        cluster_id: shared.cluster_id.clone(),
        fresh: peer.fresh.load(Ordering::Relaxed),
        initial: shared.initial_members.clone(),
        peers,
    };
    let answered = async {
        frame::write_frame(&mut send, Bytes::from(roster.encode()), ROSTER_BYTES_MAX).await?;
        send.finish().map_err(|e| FrameError::Write(e.into()))?;
        Ok::<(), FrameError>(())
    };
    if let Err(e) = answered.await {
        return refuse(format!("answering node {from}'s join at {remote}: {e}"));
    }
    info!(peer_id = from, %remote, fresh = roster.fresh, "told node {from} the cluster's members");
    // Let the joiner read it and close.
    let _ = timeout(&*shared.runtime, Duration::from_secs(2), conn.closed()).await;
    Ok(())
}

/// What [`join`] needs: this node's identity and the member to ask.
#[derive(Debug, Clone, Copy)]
pub struct JoinConfig<'a> {
    /// This node's id.
    pub node_id: u64,
    /// The cluster id this node was given (empty: take the member's).
    pub cluster_id: &'a str,
    /// A member's Raft address (`--join`).
    pub member: SocketAddr,
    /// Certificates from [`crate::certs::load`].
    pub tls: &'a NodeIdentity,
}

/// Asks a member of a running cluster for the roster (one attempt, bounded by `timeout_ms`).
/// The member's own entry carries the address dialed, which works from here.
pub async fn join(
    config: &JoinConfig<'_>,
    runtime: Arc<dyn quinn::Runtime>,
    timeout_ms: u64,
) -> Result<Roster, String> {
    let me = config.node_id;
    let member = config.member;
    let limits = Limits::default();
    let client = tls::client_config(config.tls, &limits).map_err(|e| format!("TLS: {e}"))?;
    let bind: SocketAddr = if member.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| format!("binding {bind}: {e}"))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        runtime.clone(),
    )
    .map_err(|e| format!("endpoint: {e}"))?;
    endpoint.set_default_client_config(client);
    let attempt = async {
        // The member's id is not known yet: any cluster node name passes the TLS check, the
        // certificate is checked against the cluster CA.
        let conn = endpoint
            .connect(member, &node_dns_name(0))
            .map_err(|e| format!("dialing {member}: {e}"))?
            .await
            .map_err(|e| format!("dialing {member}: {e}"))?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let hello = Join {
                cluster_id: config.cluster_id.to_string(),
                from: me,
            };
            frame::write_frame(&mut send, Bytes::from(hello.encode()), HANDSHAKE_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?;
            let answer = frame::read_frame(&mut recv, ROSTER_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the member closed the stream without an answer".to_string())?;
            Roster::decode(&answer).map_err(|e| e.to_string())
        };
        let result = exchange.await.map_err(|e| match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == VarInt::from_u32(CLOSE_REFUSED) =>
            {
                format!(
                    "the node at {member} refused node {me}: {}",
                    String::from_utf8_lossy(&close.reason)
                )
            }
            Some(closed) => format!("joining through {member}: {closed}"),
            None => format!("joining through {member}: {e}"),
        });
        conn.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"joined");
        result
    };
    let result = timeout(&*runtime, Duration::from_millis(timeout_ms), attempt)
        .await
        .unwrap_or_else(|| Err(format!("joining through {member}: timed out")));
    endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"joined");
    let mut roster = result?;
    // The member's entry: the address this node reached it at.
    if let Some(id) = roster
        .peers
        .iter()
        .find(|(_, a)| {
            a.parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
        })
        .map(|(id, _)| *id)
    {
        for p in roster.peers.iter_mut().filter(|p| p.0 == id) {
            p.1 = member.to_string();
        }
    }
    Ok(roster)
}

// ---------------------------------------------------------------------------------------------
// Dialing (this node has the lower id).

async fn dial_loop(shared: Arc<Shared>, peer: Arc<Peer>) {
    let min = Duration::from_millis(shared.limits.backoff_ms_min);
    let max = Duration::from_millis(shared.limits.backoff_ms_max);
    let mut backoff = min;
    // The last dial error and how often it repeated since.
    let mut failures: (String, usize) = (String::new(), 0);
    while !shared.is_shutting_down() && !peer.removed.load(Ordering::Acquire) {
        set_status(&peer, PeerState::Connecting, None);
        let attempt = future::or(dial_once(&shared, &peer), async {
            shared.shutdown_signal().await;
            Err("shutting down".to_string())
        });
        match attempt.await {
            Ok(conn) => {
                backoff = min;
                failures = (String::new(), 0);
                run_session(&shared, &peer, conn).await;
            }
            Err(error) => {
                if shared.is_shutting_down() {
                    break;
                }
                if failures.0 == error {
                    failures.1 += 1;
                } else {
                    failures = (error.clone(), 0);
                }
                log_repeated!(
                    failures.1,
                    peer_id = peer.id,
                    addr = %peer.addr,
                    error = %error,
                    "connecting to node {} failed",
                    peer.id
                );
                set_status(&peer, PeerState::Backoff, Some(error));
                let delay = jittered(backoff);
                backoff = (backoff * 2).min(max);
                future::or(sleep(&*shared.runtime, delay), shared.shutdown_signal()).await;
                continue;
            }
        }
        if shared.is_shutting_down() {
            break;
        }
        set_status(&peer, PeerState::Backoff, None);
        future::or(
            sleep(&*shared.runtime, jittered(min)),
            shared.shutdown_signal(),
        )
        .await;
    }
    debug!(peer_id = peer.id, "dial loop ended");
}

/// A delay drawn uniformly from [d/2, d].
fn jittered(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

/// One dial + TLS + hello/welcome. The error text names both ids when the wrong node answers.
async fn dial_once(shared: &Arc<Shared>, peer: &Arc<Peer>) -> Result<quinn::Connection, String> {
    let me = shared.node_id;
    let (expected, addr) = (peer.id, peer.addr);
    let limit = Duration::from_millis(shared.limits.handshake_timeout_ms);
    let connecting = shared
        .endpoint
        .connect(addr, &node_dns_name(expected))
        .map_err(|e| format!("dialing node {expected} at {addr}: {e}"))?;
    let conn = timeout(&*shared.runtime, limit, connecting)
        .await
        .ok_or_else(|| format!("dialing node {expected} at {addr}: timed out after {limit:?}"))?
        .map_err(|e| format!("dialing node {expected} at {addr}: {e}"))?;

    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let hello = Hello {
            cluster_id: shared.cluster_id.clone(),
            from: me,
            expected,
        };
        frame::write_frame(&mut send, Bytes::from(hello.encode()), HANDSHAKE_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let answer = frame::read_frame(&mut recv, HANDSHAKE_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the handshake stream ended without an answer".to_string())?;
        Welcome::decode(&answer).map_err(|e| e.to_string())
    };
    let welcome = match timeout(&*shared.runtime, limit, exchange).await {
        Some(Ok(welcome)) => welcome,
        outcome => {
            // A refusal arrives as a close frame: prefer its reason over the stream error.
            let error = match conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(close))
                    if close.error_code == VarInt::from_u32(CLOSE_REFUSED) =>
                {
                    format!(
                        "node at {addr} refused node {me}: {}",
                        String::from_utf8_lossy(&close.reason)
                    )
                }
                // E.g. the acceptor rejected our certificate: in TLS 1.3 the dialer completes
                // first and learns of it from the close frame.
                Some(closed) => format!("handshake with node {expected} at {addr}: {closed}"),
                None => match outcome {
                    Some(Err(e)) => format!("handshake with node {expected} at {addr}: {e}"),
                    _ => format!("handshake with node {expected} at {addr}: timed out"),
                },
            };
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"handshake failed");
            return Err(error);
        }
    };
    let cert = tls::peer_leaf_cert(&conn);
    if welcome.node != expected || !cert.as_ref().is_some_and(|c| cert_is_for_node(c, expected)) {
        let reason = format!(
            "expected node {expected} at {addr}, but node {} answered (its certificate {} \
             {})",
            welcome.node,
            if cert.as_ref().is_some_and(|c| cert_is_for_node(c, expected)) {
                "does carry"
            } else {
                "does not carry"
            },
            node_dns_name(expected)
        );
        conn.close(VarInt::from_u32(CLOSE_WRONG_PEER), reason.as_bytes());
        return Err(reason);
    }
    *lock(&peer.conn) = Some(conn.clone());
    if peer.removed.load(Ordering::Acquire) {
        // Removed while dialing: `remove_peer` found no connection to close.
        lock(&peer.conn).take();
        conn.close(
            VarInt::from_u32(CLOSE_SHUTDOWN),
            b"removed from the cluster",
        );
        return Err(format!("node {expected} was removed from the cluster"));
    }
    info!(peer_id = expected, %addr, "connected to node {expected}");
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// A connected peer: one writer, one reader, until the connection or the transport ends.

/// Runs until the connection ends; returns whether it was still the peer's current connection
/// (false when a newer one replaced it, whose status must then not be overwritten).
async fn run_session(shared: &Arc<Shared>, peer: &Arc<Peer>, conn: quinn::Connection) -> bool {
    let remote = conn.remote_address();
    peer.connections.fetch_add(1, Ordering::Relaxed);
    set_status(peer, PeerState::Connected { remote }, None);
    type Ended<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;
    let writer: Ended<'_> = Box::pin(write_loop(shared, peer, &conn));
    let reader: Ended<'_> = Box::pin(read_loop(shared, peer, &conn));
    let closed: Ended<'_> = Box::pin(async { describe_close(peer.id, conn.closed().await) });
    let stopped: Ended<'_> = Box::pin(async {
        shared.shutdown_signal().await;
        "shutting down".to_string()
    });
    let reason = future::or(future::or(writer, reader), future::or(closed, stopped)).await;
    let was_current = {
        let mut slot = lock(&peer.conn);
        let current = slot
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id());
        if current {
            *slot = None;
        }
        current
    };
    if conn.close_reason().is_none() {
        conn.close(VarInt::from_u32(CLOSE_PROTOCOL), reason.as_bytes());
    }
    if shared.is_shutting_down() {
        return was_current;
    }
    warn!(peer_id = peer.id, %remote, reason = %reason, "connection to node {} lost", peer.id);
    if was_current {
        set_status(peer, PeerState::Backoff, Some(reason));
    }
    was_current
}

fn describe_close(peer_id: u64, e: quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => format!(
            "node {peer_id} closed the connection (code {}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        ),
        e => format!("connection to node {peer_id}: {e}"),
    }
}

async fn write_loop(shared: &Shared, peer: &Peer, conn: &quinn::Connection) -> String {
    let mut stream = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return format!("opening the stream to node {}: {e}", peer.id),
    };
    loop {
        let batch = loop {
            if let Some(b) = lock(&peer.queue).pop_front() {
                break b;
            }
            let listener = peer.queue_event.listen();
            if let Some(b) = lock(&peer.queue).pop_front() {
                break b;
            }
            if shared.is_shutting_down() {
                return "shutting down".into();
            }
            if peer.removed.load(Ordering::Acquire) {
                return format!("node {} was removed from the cluster", peer.id);
            }
            listener.await;
        };
        match frame::write_frame(&mut stream, batch, shared.limits.frame_bytes_max).await {
            Ok(()) => {
                peer.sent.fetch_add(1, Ordering::Relaxed);
            }
            // `send` checks the size already; kept as a guard, the batch is dropped.
            Err(FrameError::TooLarge { bytes, max }) => {
                warn!(peer_id = peer.id, bytes, max, "dropped an oversized batch");
            }
            Err(e) => return format!("writing to node {}: {e}", peer.id),
        }
    }
}

async fn read_loop(shared: &Shared, peer: &Peer, conn: &quinn::Connection) -> String {
    loop {
        let mut stream = match conn.accept_uni().await {
            Ok(s) => s,
            Err(e) => return describe_close(peer.id, e),
        };
        loop {
            match frame::read_frame(&mut stream, shared.limits.frame_bytes_max).await {
                Ok(Some(batch)) => {
                    peer.received.fetch_add(1, Ordering::Relaxed);
                    // Waits while the inbox is full (backpressure through QUIC flow control);
                    // fails only after shutdown, when the batch is moot.
                    if shared.inbox.send((peer.id, batch)).await.is_err() {
                        return "shutting down".into();
                    }
                }
                Ok(None) => break,
                Err(e @ FrameError::TooLarge { .. }) => {
                    let reason = format!("node {} sent a {e}", peer.id);
                    warn!(peer_id = peer.id, error = %e, "closing the connection: oversized frame");
                    conn.close(VarInt::from_u32(CLOSE_FRAME_TOO_LARGE), reason.as_bytes());
                    return reason;
                }
                Err(e) => return format!("reading from node {}: {e}", peer.id),
            }
        }
    }
}

/// Socket buffer size asked for on the peer socket, each way.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Raises the UDP socket's buffers: with the kernel's default (208 KiB) a follower's socket
/// overflows under a leader's bursts of appends, each dropped datagram costs QUIC a loss
/// recovery (a retransmission, a smaller congestion window) and an acks=all write waits for
/// it. The kernel caps the size at `net.core.rmem_max` / `wmem_max`; a smaller result is
/// logged, not fatal.
fn size_socket_buffers(socket: &std::net::UdpSocket, node_id: u64) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let recv = sock.recv_buffer_size().unwrap_or(0);
    let send = sock.send_buffer_size().unwrap_or(0);
    // Linux reports twice the size it granted (room for its bookkeeping).
    let reported = if cfg!(target_os = "linux") { 2 } else { 1 } * SOCKET_BUFFER_BYTES;
    if recv < reported || send < reported {
        warn!(
            node_id,
            recv_bytes = recv,
            send_bytes = send,
            "node {node_id}: raft peer socket buffers are smaller than the {} MiB asked for; \
             raise net.core.rmem_max and net.core.wmem_max to avoid dropped datagrams under load",
            SOCKET_BUFFER_BYTES >> 20
        );
    } else {
        debug!(
            node_id,
            recv_bytes = recv,
            send_bytes = send,
            "node {node_id}: raft peer socket buffers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_peer_accepts_id_at_host_port() {
        assert_eq!(
            parse_peer("3@127.0.0.1:7003").unwrap(),
            (3, "127.0.0.1:7003".parse().unwrap())
        );
        assert_eq!(
            parse_peer("12@localhost:9").unwrap().0,
            12,
            "host names resolve"
        );
        for bad in [
            "127.0.0.1:7003",
            "x@127.0.0.1:1",
            "0@127.0.0.1:1",
            "1@nowhere",
        ] {
            let e = parse_peer(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
        assert!(jittered(Duration::ZERO) <= Duration::from_millis(1));
    }
}
