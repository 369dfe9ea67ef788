//! The server: wires the broker core to a runtime — listener, connections, flusher, retention,
//! the group coordinator's timer, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use event_listener::Event;
use sluice_proto::broker::{Broker, BrokerConfig, Deferred};
use sluice_proto::runtime::{Listener, Runtime};
use sluice_proto::storage::StoreFile;
use tracing::{Instrument, debug, error, info, warn};

use crate::budget::MemoryBudget;
use crate::config::{Config, Durability};
use crate::disk::DiskStorage;
use crate::metrics::Counters;

/// State shared by every task of the server.
pub struct Shared {
    /// The broker core; held only for the synchronous part of a request.
    pub broker: Mutex<Broker>,
    /// Notified when a sync completes (produce acks wait on it).
    pub synced: Event,
    /// Notified when new data becomes readable (long-polling fetches wait on it).
    pub visible: Event,
    /// Notified when there is data to sync.
    pub flush: Event,
    /// In-flight request memory.
    pub budget: Arc<MemoryBudget>,
    /// Settings.
    pub config: Config,
    /// Requests parked by the group coordinator, by token: where their answer goes.
    /// Lock order: `broker`, then `parked`.
    pub parked: Mutex<HashMap<u64, async_channel::Sender<Deferred>>>,
    /// Notified after every group-coordinator call: its next deadline may have moved.
    pub timer: Event,
    /// Cluster mode: the broker queued Raft proposals.
    pub raft_wake: Event,
    /// Request, byte and connection counters (`--metrics-addr`).
    pub metrics: crate::metrics::Counters,
    /// Cluster mode: Raft groups and peers as the node last published them.
    pub cluster_gauges: Mutex<Option<crate::metrics::ClusterGauges>>,
    /// TLS of SSL and SASL_SSL listeners (reloaded on SIGHUP).
    pub tls: Option<Arc<crate::tls::TlsAcceptor>>,
    /// Secret of this run behind the decoy answers for unknown SCRAM users.
    pub sasl_secret: Vec<u8>,
    /// Cluster mode: TLS of this node's replica catch-up connections (its node certificate).
    pub replica_client: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// Cluster mode: where requests to other nodes (transaction markers, verifications) go.
    pub peer_requests:
        std::sync::OnceLock<async_channel::Sender<sluice_proto::broker::PeerRequest>>,
    /// Cluster mode: paces snapshot installs to the replication throttles (one per node).
    pub install_pacer: Mutex<sluice_proto::throttle::Pacer>,
    /// When this process started: the monotonic clock of the pacer.
    pub started: std::time::Instant,
    /// Cluster mode: this node was removed from the cluster (said once in the log).
    pub left_cluster: AtomicBool,
    /// Whether requests are served. Standalone: from the start. Cluster mode: once `__meta`
    /// caught up (see [`Shared::start_serving`]); until then requests wait unread.
    serving: AtomicBool,
    serving_event: Event,
    /// Cluster mode: this node is cut off from a majority of the cluster; Kafka connections
    /// close (see `sluice_replica::reach`).
    cut_off: AtomicBool,
    cut_event: Event,
    stopping: AtomicBool,
    stop: Event,
}

impl Shared {
    /// Whether Kafka requests are served.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Cluster mode: this node's `__meta` caught up, so its Metadata is the cluster's. Before
    /// that a restarted or wiped node would list only itself and no topics, and librdkafka
    /// (2.10+) drops every broker a Metadata response leaves out: its producers would lose
    /// their partition leaders. Kafka's brokers, too, serve only once caught up.
    pub fn start_serving(&self) {
        self.serving.store(true, Ordering::Release);
        self.serving_event.notify(usize::MAX);
    }

    /// Cluster mode: whether this node is cut off from a majority of the cluster.
    pub fn cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }

    /// Cluster mode: the node is cut off from (or reaches again) a majority of the cluster.
    pub fn set_cut_off(&self, cut: bool) {
        if self.cut_off.swap(cut, Ordering::AcqRel) != cut && cut {
            self.cut_event.notify(usize::MAX);
        }
    }

    /// Resolves once the node is cut off from a majority of the cluster (never in standalone).
    pub async fn until_cut_off(&self) {
        loop {
            let l = self.cut_event.listen();
            if self.cut_off() {
                return;
            }
            l.await;
        }
    }

    /// Waits until requests are served or shutdown begins.
    pub async fn until_serving(&self) {
        loop {
            let l = self.serving_event.listen();
            if self.serving() || self.shutting_down() {
                return;
            }
            futures_lite::future::or(l, self.stopped()).await;
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Begins shutdown.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify(usize::MAX);
        self.visible.notify(usize::MAX);
        self.flush.notify(usize::MAX);
        self.timer.notify(usize::MAX);
    }

    /// Resolves once shutdown has begun.
    pub async fn stopped(&self) {
        loop {
            let l = self.stop.listen();
            if self.shutting_down() {
                return;
            }
            l.await;
        }
    }
}

/// Hands the coordinator's answers to parked requests to their connections. Call with the broker
/// lock held, after every call that may produce them (group requests, `tick`).
pub fn deliver(shared: &Shared, broker: &mut Broker) {
    if let Some(tx) = shared.peer_requests.get() {
        for m in broker.take_peer_requests() {
            let _ = tx.try_send(m);
        }
    }
    let answers = broker.take_deferred();
    if answers.is_empty() {
        return;
    }
    let mut wait_sync = false;
    let mut parked = shared.parked.lock().unwrap();
    for d in answers {
        wait_sync |= d.seq > 0;
        match parked.remove(&d.token) {
            // A full or closed channel means the connection is gone: drop the answer.
            Some(tx) => {
                let _ = tx.try_send(d);
            }
            None => debug!(
                node_id = shared.config.node_id,
                token = d.token,
                "answer for a closed connection dropped"
            ),
        }
    }
    drop(parked);
    if wait_sync {
        shared.flush.notify(1);
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The monotonic clock (ms since the process's first reading), which no wall-clock step
/// moves: one origin for the whole process, so the broker's group timers and the cluster's
/// Raft loop agree (see `Broker::advance_clock`).
pub fn mono_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A running server, for `main` and tests.
pub struct Server<R: Runtime> {
    rt: R,
    shared: Arc<Shared>,
    listeners: Vec<(Arc<crate::listeners::ListenerConfig>, R::Listener)>,
    metrics: Option<R::Listener>,
}

impl<R: Runtime> Server<R> {
    /// Opens the data dir, recovers the logs and binds the listener.
    pub async fn start(rt: R, config: Config) -> anyhow::Result<Self> {
        let storage = Arc::new(DiskStorage::open(&config.data_dir)?);
        Self::start_with(rt, config, storage, None).await
    }

    /// Starts on an opened (locked) data dir; `cluster_members` makes the broker a cluster
    /// replica whose topics come from `__meta`.
    pub async fn start_with(
        rt: R,
        config: Config,
        storage: Arc<DiskStorage>,
        cluster_members: Option<Vec<i32>>,
    ) -> anyhow::Result<Self> {
        let data_dir = storage_describe(&storage);
        let broker_config = BrokerConfig {
            node_id: config.node_id,
            advertised_host: config.advertised_host.clone(),
            advertised_port: config.advertised_port as i32,
            auto_create_topics: config.auto_create_topics,
            default_partitions: config.num_partitions,
            sync_writes: config.durability == Durability::Fsync,
            flush_interval_ms: (config.durability == Durability::Os)
                .then_some(config.flush_interval_ms as i64),
            offsets_partitions: config.offsets_partitions,
            offsets_segment_bytes: config.offsets_topic_segment_bytes,
            group_initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms as i64,
            cluster_members,
            listeners: config
                .listeners
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        (l.advertised_host.clone(), l.advertised_port as i32),
                    )
                })
                .chain(config.replica_advertised.iter().map(|(h, p)| {
                    (
                        sluice_proto::security::REPLICA_LISTENER.to_string(),
                        (h.clone(), *p as i32),
                    )
                }))
                .collect(),
            security: config.security.clone(),
            raft_addr: config.raft_advertised.clone(),
        };
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(
                crate::tls::TlsAcceptor::new(t.clone())
                    .with_context(|| format!("node {}: TLS settings", config.node_id))?,
            )),
            None => None,
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 32);
        let open_storage = storage.clone();
        let broker = rt
            .spawn_blocking({
                let span = tracing::Span::current();
                move || span.in_scope(|| Broker::open(open_storage, broker_config, seed, now_ms()))
            })
            .await
            .with_context(|| format!("node {}: opening data dir {data_dir}", config.node_id))?;
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let bound = rt.bind(l.bind).await.with_context(|| {
                format!(
                    "node {}: cannot listen on {} (listener {})",
                    config.node_id, l.bind, l.name
                )
            })?;
            listeners.push((Arc::new(l.clone()), bound));
        }
        let metrics = match config.metrics_addr {
            None => None,
            Some(addr) => Some(rt.bind(addr).await.with_context(|| {
                format!(
                    "node {}: cannot listen on {addr} (--metrics-addr)",
                    config.node_id
                )
            })?),
        };
        let metrics_addr = match &metrics {
            Some(l) => format!("http://{}/metrics", l.local_addr()?),
            None => "off".to_string(),
        };
        let mut bound_list = Vec::new();
        for (l, bound) in &listeners {
            bound_list.push(format!("{}://{}", l.name, bound.local_addr()?));
            warn_if_open(config.node_id, l, &config);
        }
        info!(
            node_id = config.node_id,
            version = env!("CARGO_PKG_VERSION"),
            runtime = rt.name(),
            listeners = %bound_list.join(","),
            authorizer = if config.security.authorizer { "acl" } else { "none" },
            metrics = %metrics_addr,
            advertised = %format!("{}:{}", config.advertised_host, config.advertised_port),
            data_dir = %data_dir,
            durability = ?config.durability,
            cluster_id = broker.cluster_id(),
            "sluice started"
        );
        let is_cluster = broker.is_cluster();
        let shared = Arc::new(Shared {
            broker: Mutex::new(broker),
            synced: Event::new(),
            visible: Event::new(),
            flush: Event::new(),
            budget: MemoryBudget::new(config.max_inflight_bytes),
            config,
            parked: Mutex::new(HashMap::new()),
            timer: Event::new(),
            raft_wake: Event::new(),
            metrics: crate::metrics::Counters::default(),
            cluster_gauges: Mutex::new(None),
            tls,
            replica_client: std::sync::OnceLock::new(),
            peer_requests: std::sync::OnceLock::new(),
            install_pacer: Mutex::new(Default::default()),
            started: std::time::Instant::now(),
            left_cluster: AtomicBool::new(false),
            sasl_secret: {
                use rand::Rng;
                rand::thread_rng().r#gen::<[u8; 32]>().to_vec()
            },
            serving: AtomicBool::new(!is_cluster),
            serving_event: Event::new(),
            cut_off: AtomicBool::new(false),
            cut_event: Event::new(),
            stopping: AtomicBool::new(false),
            stop: Event::new(),
        });
        Ok(Server {
            rt,
            shared,
            listeners,
            metrics,
        })
    }

    /// Shared state (tests use it to trigger shutdown).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until shutdown is requested, then syncs everything and returns.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let rt = self.rt.clone();
        let shared = self.shared.clone();
        let (flusher_done_tx, flusher_done) = async_channel::bounded::<()>(1);
        // Spawned tasks keep the caller's span (node id) on their log lines.
        let span = tracing::Span::current();
        rt.spawn(flusher(rt.clone(), shared.clone(), flusher_done_tx).instrument(span.clone()));
        rt.spawn(retention(rt.clone(), shared.clone()).instrument(span.clone()));
        rt.spawn(crate::cleaner::run(rt.clone(), shared.clone()).instrument(span.clone()));
        rt.spawn(coordinator_timer(rt.clone(), shared.clone()).instrument(span.clone()));
        if let Some(listener) = self.metrics.take() {
            rt.spawn(
                crate::metrics::serve(rt.clone(), listener, shared.clone())
                    .instrument(span.clone()),
            );
        }
        for (config, listener) in std::mem::take(&mut self.listeners) {
            rt.spawn(
                accept_loop(rt.clone(), shared.clone(), config, listener).instrument(span.clone()),
            );
        }
        shared.stopped().await;
        info!(
            node_id = shared.config.node_id,
            "shutting down: syncing logs"
        );
        let _ = flusher_done.recv().await;
        let closing = shared.clone();
        let span = tracing::Span::current();
        rt.spawn_blocking(move || span.in_scope(|| closing.broker.lock().unwrap().close()))
            .await;
        info!(node_id = shared.config.node_id, "shutdown complete");
        Ok(())
    }
}

/// Accepts connections on one listener until shutdown.
async fn accept_loop<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    config: Arc<crate::listeners::ListenerConfig>,
    mut listener: R::Listener,
) {
    let span = tracing::Span::current();
    let name = config.name.clone();
    accept_each::<R>(
        &rt,
        &shared,
        &mut listener,
        &name,
        |reader, writer, peer| {
            debug!(%peer, listener = %config.name, "connection accepted");
            Counters::add(&shared.metrics.connections_accepted, 1);
            rt.spawn(
                crate::connection::serve(
                    rt.clone(),
                    shared.clone(),
                    config.clone(),
                    reader,
                    writer,
                    peer,
                )
                .instrument(span.clone()),
            );
        },
    )
    .await
}

/// Hands every accepted connection of `listener` to `on_accept` until shutdown; a failed accept
/// (out of file descriptors and the like) backs off instead of spinning.
pub async fn accept_each<R: Runtime>(
    rt: &R,
    shared: &Shared,
    listener: &mut R::Listener,
    name: &str,
    mut on_accept: impl FnMut(
        <R::Listener as Listener>::Reader,
        <R::Listener as Listener>::Writer,
        std::net::SocketAddr,
    ),
) {
    loop {
        let accept = async { Some(listener.accept().await) };
        let stop = async {
            shared.stopped().await;
            None
        };
        match futures_lite::future::or(accept, stop).await {
            None => return,
            Some(Ok((reader, writer, peer))) => on_accept(reader, writer, peer),
            Some(Err(e)) => {
                warn!(node_id = shared.config.node_id, listener = %name, error = %e, "accept failed");
                rt.sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A listener reachable from other machines that authenticates no one gets a loud warning.
fn warn_if_open(node_id: i32, l: &crate::listeners::ListenerConfig, config: &Config) {
    use sluice_proto::security::SecurityProtocol;
    if !crate::listeners::exposed(&l.bind) {
        return;
    }
    let client_certs = config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth == crate::config::ClientAuth::Required);
    let open = match l.protocol {
        SecurityProtocol::Plaintext => true,
        SecurityProtocol::Ssl => !client_certs,
        _ => false,
    };
    if open {
        warn!(
            node_id,
            listener = %l.name,
            bind = %l.bind,
            "listener {} on {} authenticates no one: every client that reaches it can read, write and delete everything{}. Use SASL_SSL (or SSL with --tls-client-auth required) and --authorizer acl",
            l.name,
            l.bind,
            if config.security.authorizer { " its ACLs allow User:ANONYMOUS" } else { "" }
        );
    }
}

fn storage_describe(s: &DiskStorage) -> String {
    use sluice_proto::storage::Storage;
    s.describe()
}

/// Cluster mode with `--durability fsync`: how often applied segment data is synced.
const CLUSTER_SEGMENT_SYNC_MS: u64 = 200;

/// Group commit: syncs everything written since the previous sync, as one batch, as soon as the
/// previous sync finished (or every flush interval without fsync-before-ack).
///
/// Without fsync-before-ack, topics with `flush.messages` / `flush.ms` also get their partitions
/// synced as soon as those call for it, between the periodic syncs: the flusher then wakes on
/// writes (the `visible` event) and at the next `flush.ms` deadline, and syncs only the
/// partitions that are due.
async fn flusher<R: Runtime>(rt: R, shared: Arc<Shared>, done: async_channel::Sender<()>) {
    let cluster = shared.broker.lock().unwrap().is_cluster();
    let interval = match shared.config.durability {
        // In a cluster, acknowledged data is already fsynced in a majority of Raft logs: the
        // segments' sync only moves the applied marks (what a restart keeps, how far Raft
        // logs compact), so it runs on a short period instead of after every apply.
        Durability::Fsync if cluster => Some(Duration::from_millis(CLUSTER_SEGMENT_SYNC_MS)),
        Durability::Fsync => None,
        Durability::Os => Some(Duration::from_millis(shared.config.flush_interval_ms)),
    };
    // Without fsync-before-ack: when the next periodic (full) sync may run.
    let mut next_full = std::time::Instant::now();
    loop {
        let listener = shared.flush.listen();
        let wrote = shared.visible.listen();
        let full =
            interval.is_none() || shared.shutting_down() || std::time::Instant::now() >= next_full;
        let (work, deadline, policies) = {
            let mut b = shared.broker.lock().unwrap();
            // Flush policies only matter without fsync-before-ack (and cost a pass over the
            // partitions: not on every group commit).
            let policies = interval.is_some() && b.has_flush_policies();
            let work = if full {
                b.take_sync_work()
            } else if policies {
                b.take_due_sync_work(now_ms())
            } else {
                None
            };
            let deadline = if policies {
                b.next_flush_deadline()
            } else {
                None
            };
            (work, deadline, policies)
        };
        let Some(work) = work else {
            if shared.shutting_down() {
                break;
            }
            match interval {
                None => listener.await,
                Some(d) => {
                    // The periodic sync, the next flush.ms deadline, or (with flush policies)
                    // a write, whichever comes first.
                    let now = std::time::Instant::now();
                    let mut wait = if full {
                        d
                    } else {
                        next_full.saturating_duration_since(now)
                    };
                    if let Some(at) = deadline {
                        let ms = at.saturating_sub(now_ms()).max(0) as u64;
                        wait = wait.min(Duration::from_millis(ms));
                    }
                    let timer = futures_lite::future::or(listener, rt.sleep(wait));
                    if policies {
                        futures_lite::future::or(timer, wrote).await;
                    } else {
                        timer.await;
                    }
                }
            }
            continue;
        };
        let result = sync_files(&rt, work.files).await;
        if let Err(e) = &result {
            error!(node_id = shared.config.node_id, error = %e, "sync failed");
        }
        {
            let mut broker = shared.broker.lock().unwrap();
            broker.complete_sync(work.seq, &work.ends, result);
            // A sync can complete a transaction, answering an InitProducerId parked on it.
            deliver(&shared, &mut broker);
        }
        shared.synced.notify(usize::MAX);
        shared.visible.notify(usize::MAX);
        if let Some(d) = interval
            && full
        {
            next_full = std::time::Instant::now() + d;
        }
    }
    let _ = done.send(()).await;
}

/// How many fdatasyncs one group commit runs at once.
const SYNC_LANES: usize = 16;

/// Syncs a group commit's files side by side: concurrent fdatasyncs share the filesystem's
/// journal commits and device flushes, where one after another each pays for its own. A commit
/// touching many partitions (a transaction's records, its markers and the coordinator's state,
/// or a producer writing to many partitions) would otherwise wait for each file in turn.
async fn sync_files<R: Runtime>(rt: &R, files: Vec<Arc<dyn StoreFile>>) -> Result<(), String> {
    let lanes = files.len().clamp(1, SYNC_LANES);
    let mut chunks: Vec<Vec<Arc<dyn StoreFile>>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, f) in files.into_iter().enumerate() {
        chunks[i % lanes].push(f);
    }
    // Every lane is spawned before the first is awaited, so they run together.
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            rt.spawn_blocking(move || -> Result<(), String> {
                for f in &chunk {
                    f.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for task in tasks {
        if let Err(e) = task.await {
            result = Err(e);
        }
    }
    result
}

/// Drives the group coordinator's timers (session timeouts, rebalance deadlines, the initial
/// rebalance delay, offset retention): sleeps until `poll_timeout()`, re-armed whenever a group
/// request may have moved the deadline ([`Shared::timer`]), then `tick`s.
async fn coordinator_timer<R: Runtime>(rt: R, shared: Arc<Shared>) {
    let mut last_fired: Option<i64> = None;
    while !shared.shutting_down() {
        let listener = shared.timer.listen();
        let now = now_ms();
        let next = {
            let mut broker = shared.broker.lock().unwrap();
            broker.advance_clock(mono_ms(), now_ms());
            broker.poll_timeout(now)
        };
        match next {
            Some(at) if at <= now => {
                if last_fired == Some(at) {
                    // The same deadline again right after a tick: do not spin on it.
                    futures_lite::future::or(shared.stopped(), rt.sleep(Duration::from_millis(10)))
                        .await;
                }
                last_fired = Some(at);
                let mut broker = shared.broker.lock().unwrap();
                broker.advance_clock(mono_ms(), now_ms());
                broker.tick(now_ms());
                deliver(&shared, &mut broker);
                drop(broker);
                // Cluster mode: an abort's state write is a Raft proposal.
                shared.raft_wake.notify(1);
                // A tick may have written (a timed-out transaction's abort): sync it.
                shared.flush.notify(1);
            }
            Some(at) => {
                let sleep = rt.sleep(Duration::from_millis((at - now) as u64));
                futures_lite::future::or(
                    futures_lite::future::or(listener, sleep),
                    shared.stopped(),
                )
                .await;
            }
            None => futures_lite::future::or(listener, shared.stopped()).await,
        }
    }
}

/// Deletes expired segments periodically.
async fn retention<R: Runtime>(rt: R, shared: Arc<Shared>) {
    let period = Duration::from_millis(shared.config.retention_check_interval_ms);
    while !shared.shutting_down() {
        futures_lite::future::or(shared.stopped(), rt.sleep(period)).await;
        if shared.shutting_down() {
            break;
        }
        let s = shared.clone();
        let span = tracing::Span::current();
        rt.spawn_blocking(move || {
            span.in_scope(|| s.broker.lock().unwrap().apply_retention(now_ms()))
        })
        .await;
    }
}

/// Starts a thread that turns SIGINT/SIGTERM into a graceful shutdown; a second signal exits
/// at once.
pub fn handle_signals(
    shared: Arc<Shared>,
    mut signals: signal_hook::iterator::Signals,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    warn!(
                        node_id = shared.config.node_id,
                        "second signal: exiting without a clean shutdown"
                    );
                    std::process::exit(130);
                }
                info!(
                    node_id = shared.config.node_id,
                    signal = sig,
                    "signal received: shutting down"
                );
                shared.begin_shutdown();
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

/// Starts a thread that reloads the Kafka listeners' TLS certificate, key and client CA on
/// SIGHUP; a failed reload keeps the running ones.
pub fn handle_reload(
    shared: Arc<Shared>,
    mut signals: signal_hook::iterator::Signals,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                let node_id = shared.config.node_id;
                match &shared.tls {
                    None => info!(node_id, "SIGHUP: no TLS listener, nothing to reload"),
                    Some(tls) => match tls.reload() {
                        Ok(()) => info!(node_id, "SIGHUP: TLS certificate reloaded"),
                        Err(e) => error!(node_id, error = %format!("{e:#}"), "SIGHUP: TLS reload failed; keeping the previous certificate"),
                    },
                }
            }
        })
        .context("spawning the reload thread")?;
    Ok(())
}

/// Catches SIGINT/SIGTERM (`stop`) and SIGHUP (`reload`) from the very start, before anything is
/// bound: a signal that arrives while the broker opens its logs is queued and handled once the
/// handlers run ([`handle_signals`], [`handle_reload`]), instead of killing the process with the
/// default action.
pub fn early_signals() -> anyhow::Result<(
    signal_hook::iterator::Signals,
    signal_hook::iterator::Signals,
)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let reload =
        signal_hook::iterator::Signals::new([SIGHUP]).context("installing the SIGHUP handler")?;
    Ok((stop, reload))
}
