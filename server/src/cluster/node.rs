//! A cluster node: checks its identity against the data dir, starts the QUIC transport and runs
//! the Raft groups (`__meta` and one per hosted partition) beside the Kafka server.
//!
//! Every cluster decision lives in the sans-IO [`sluice_replica::Replica`]; this module only
//! moves bytes and runs its I/O. One task feeds it time, the batches from the transport's inbox
//! and the applier's progress, ships its per-peer batches (`poll_transmit` →
//! `Transport::send`, which never waits) and executes what `poll` asks: a pass's `Persist`
//! batch (every group's entries and hard states) goes to the write-ahead log's own thread
//! (`wal_writer`: `DATA/raft/wal/`, one write and one fdatasync for whatever queued up), which
//! reports it durable; only then is `persisted` called and the messages that depended on it
//! sent. `Apply` goes to a separate applier task that appends to the broker's logs. So the loop
//! keeps ticking, receiving and sending while disks work.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_lite::future;
use sluice_proto::runtime::Runtime;
use sluice_raft::META_GROUP;
use sluice_replica::{
    ApplyJob, Io, OpenGroup, Replica, ReplicaConfig, Shutdown, apply_entries, install_meta_image,
};
use sluice_transport_quic::{Inbox, Limits, NodeIdentity, Transport, TransportConfig};
use tracing::{Instrument, debug, info, warn};

use super::cli::ClusterConfig;
use super::raft_wal::RaftWal;
use super::wal_writer::{self, WalDone, WalJob};
use crate::disk::DiskStorage;
use crate::server::Shared;

/// Where a node records which node and cluster its data dir belongs to (shared with the
/// standalone broker, which writes the same file).
const CLUSTER_FILE: &str = "meta/cluster.json";

/// What [`prepare`] checked and holds: the data dir lock and the TLS identity.
#[derive(Debug)]
pub struct Prepared {
    /// The locked data dir (the broker's storage).
    pub storage: Arc<DiskStorage>,
    /// Canonical data dir path.
    pub data_dir: PathBuf,
    /// This node's certificate and the cluster CA.
    pub tls: NodeIdentity,
    /// `--join` on a data dir that belongs to no cluster yet: ask a member first
    /// ([`super::join::join_cluster`]), which records the cluster in the data dir.
    pub needs_join: bool,
}

/// Everything that can refuse a start, before the runtime exists: the certificates, the data
/// dir lock and the node/cluster ids recorded in the data dir (written on first start). What
/// the data dir recorded about the cluster (its initial members, the peers a joined node
/// learned) completes `cc`.
pub fn prepare(data_dir: &Path, cc: &mut ClusterConfig) -> anyhow::Result<Prepared> {
    let node_id = cc.node_id;
    let tls = sluice_transport_quic::certs::load(&cc.tls_dir, node_id)
        .map_err(|e| anyhow::anyhow!("node {node_id}: certificates: {e}"))?;
    let lock = DiskStorage::open(data_dir).map_err(|e| anyhow::anyhow!("node {node_id}: {e}"))?;
    let data_dir = data_dir.canonicalize()?;
    let path = data_dir.join(CLUSTER_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("node {node_id}: reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("node {node_id}: {} is not JSON", path.display()))?;
        let recorded_node = v.get("node_id").and_then(|n| n.as_i64());
        let recorded_cluster = v.get("cluster_id").and_then(|c| c.as_str()).unwrap_or("");
        if cc.join.is_some() && !cc.cluster_id_given {
            cc.cluster_id = recorded_cluster.to_string();
        }
        // Joined with an empty state: still so if nothing was persisted since (a term of 0).
        cc.joining = v.get("fresh").and_then(|f| f.as_bool()).unwrap_or(false);
        if let Some(initial) = v.get("initial_members").and_then(|m| m.as_array()) {
            cc.initial_members = initial.iter().filter_map(|m| m.as_u64()).collect();
        }
        for p in v
            .get("peers")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
        {
            if let Ok((id, addr)) = sluice_transport_quic::parse_peer(p)
                && !cc.peers.iter().any(|(known, _)| *known == id)
            {
                cc.peers.push((id, addr));
            }
        }
        cc.peers.sort();
        if v.get("initial_members").is_none() && cc.join.is_none() {
            // Written by an older version: the members it started with are `--peers` (the
            // derived cluster id checked above says they did not change). Recorded now, so a
            // later edit of `--peers` never changes the state every node rebuilds.
            record_cluster(&data_dir, cc)?;
        }
        if cc.initial_members.is_empty() {
            bail!(
                "node {node_id}: {} records no initial members (written by an older version): start this node with the --peers it was created with",
                path.display()
            );
        }
        if recorded_node != Some(node_id as i64) {
            let recorded = recorded_node.map_or("?".to_string(), |n| n.to_string());
            bail!(
                "node {node_id}: data dir {} belongs to node {recorded} ({}): start it with --node-id {recorded}, or give node {node_id} its own --data-dir",
                data_dir.display(),
                path.display()
            );
        }
        if recorded_cluster != cc.cluster_id {
            bail!(
                "node {node_id}: data dir {} belongs to cluster {recorded_cluster:?}, not {:?} ({}): the peer list changed (pass --cluster-id {recorded_cluster} to keep it) or the dir is another cluster's",
                data_dir.display(),
                cc.cluster_id,
                path.display()
            );
        }
    } else if cc.join.is_none() {
        record_cluster(&data_dir, cc)?;
    }
    Ok(Prepared {
        storage: Arc::new(lock),
        needs_join: cc.join.is_some() && !path.exists(),
        data_dir,
        tls,
    })
}

/// Writes `meta/cluster.json` (durably): the node and cluster ids, the initial members and
/// the peers known now (a joined node's only list of them before `__meta` replays).
pub fn record_cluster(data_dir: &Path, cc: &ClusterConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir.join("meta"))?;
    let json = serde_json::json!({
        "cluster_id": cc.cluster_id,
        "node_id": cc.node_id,
        "initial_members": cc.initial_members,
        "peers": cc.peers.iter().map(|(id, a)| format!("{id}@{a}")).collect::<Vec<_>>(),
        "fresh": cc.joining,
    });
    let tmp = data_dir.join("meta/cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(CLUSTER_FILE))?;
    std::fs::File::open(data_dir.join("meta"))?.sync_all()?;
    Ok(())
}

/// What a node runs with, beside the runtime and the Kafka side.
#[derive(Debug)]
pub struct NodeParams {
    /// Cluster settings.
    pub cc: ClusterConfig,
    /// This node's certificate and the cluster CA.
    pub tls: NodeIdentity,
    /// Canonical data dir.
    pub data_dir: PathBuf,
    /// Process start (for "elected after" logs).
    pub started: Instant,
}

/// Runs the node until `stop` yields (a signal): the Raft loop for `__meta` and every hosted
/// partition group, feeding the broker (which serves Kafka on the same runtime) with committed
/// entries and proposing what it queues. On stop, leadership is handed off first.
pub async fn run<R: Runtime>(
    rt: R,
    quic: Arc<dyn quinn::Runtime>,
    params: NodeParams,
    shared: Arc<Shared>,
    replica_listener: <R as Runtime>::Listener,
    stop: async_channel::Receiver<()>,
) -> anyhow::Result<()> {
    let NodeParams {
        cc,
        tls,
        data_dir,
        started,
    } = params;
    let node_id = cc.node_id;
    let server_tls = sluice_transport_quic::tls::replica_server_config(&tls)
        .map_err(|e| anyhow::anyhow!("node {node_id}: replica TLS: {e}"))?;
    let client_tls = sluice_transport_quic::tls::replica_client_config(&tls)
        .map_err(|e| anyhow::anyhow!("node {node_id}: replica TLS: {e}"))?;
    let _ = shared.replica_client.set(Arc::new(client_tls));
    let (peer_tx, peer_rx) = async_channel::unbounded();
    let _ = shared.peer_requests.set(peer_tx);
    rt.spawn(
        super::peer_requests::send_peer_requests(rt.clone(), shared.clone(), peer_rx)
            .instrument(tracing::Span::current()),
    );
    let others: Vec<u64> = cc.others().iter().map(|&(id, _)| id).collect();
    rt.spawn(
        super::catchup::serve_replicas(
            rt.clone(),
            shared.clone(),
            replica_listener,
            Arc::new(server_tls),
            others,
        )
        .instrument(tracing::Span::current()),
    );
    let result = run_inner(rt, quic, cc, tls, data_dir, shared.clone(), started, stop).await;
    // Whatever ended the loop, the Kafka side stops too.
    shared.begin_shutdown();
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_inner<R: Runtime>(
    rt: R,
    quic: Arc<dyn quinn::Runtime>,
    cc: ClusterConfig,
    tls: NodeIdentity,
    data_dir: PathBuf,
    shared: Arc<Shared>,
    started: Instant,
    stop: async_channel::Receiver<()>,
) -> anyhow::Result<()> {
    let node_id = cc.node_id;
    let voters: Vec<u64> = cc.initial_members.clone();
    let dir = data_dir.join("raft");
    let open_dir = dir.clone();
    let open_voters = voters.clone();
    let (wal, loaded, meta) = rt
        .spawn_blocking(move || {
            let (mut wal, loaded) = RaftWal::open(&open_dir)?;
            let meta = wal.open_group(META_GROUP, &open_voters)?;
            std::io::Result::Ok((wal, loaded, meta))
        })
        .await
        .with_context(|| {
            format!(
                "node {node_id}: loading the raft log in {}",
                dir.join("wal").display()
            )
        })?;
    if let Some((file, bytes, reason)) = &loaded.truncated {
        warn!(node_id, bytes, reason = %reason, file = %file.display(), "truncated torn or corrupt raft log tail");
    }
    let hs = meta.hard_state().clone();
    let mut cc = cc;
    if cc.joining && hs.term > 0 {
        // It took part in a term: it is no longer new to the cluster.
        cc.joining = false;
        record_cluster(&data_dir, &cc)
            .with_context(|| format!("node {node_id}: updating {CLUSTER_FILE}"))?;
    }
    info!(
        node_id,
        files = loaded.files,
        records = loaded.records,
        groups = loaded.groups,
        last_index = meta.last_index(),
        term = hs.term,
        vote = hs.vote,
        commit = hs.commit,
        "raft log loaded"
    );

    // The process's monotonic clock: the broker's group timers run on the same one.
    let now_ms = crate::server::mono_ms;
    let mut replica = Replica::new(
        ReplicaConfig {
            node_id,
            seed: entropy(),
            compact_step: cc.raft_compact_entries,
            meta_compact_entries: cc.raft_meta_compact_entries,
            replica_timeout_ms: cc.raft_replica_timeout_ms,
            // So that `started_ms + now` is the time since the process started.
            started_ms: (started.elapsed().as_millis() as u64).saturating_sub(now_ms()),
            recovering: std::fs::read(data_dir.join(sluice_replica::RECOVERING_MARK))
                .is_ok_and(|b| b.starts_with(b"recovering")),
            joining: cc.joining,
        },
        meta,
    )?;
    let (wal_tx, wal_rx, wal_thread) = wal_writer::start(wal, data_dir.clone(), node_id);

    let (transport, inbox) = Transport::start(
        TransportConfig {
            node_id,
            cluster_id: cc.cluster_id.clone(),
            listen: cc.raft_addr,
            peers: cc.others(),
            initial_members: cc.initial_members.clone(),
            tls,
            limits: Limits::default(),
        },
        quic,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(
        node_id,
        version = env!("CARGO_PKG_VERSION"),
        runtime = rt.name(),
        raft_addr = %transport.local_addr(),
        peers = %super::cli::peers_string(&cc.peers),
        cluster_id = %cc.cluster_id,
        cluster_id_derived = !cc.cluster_id_given,
        data_dir = %data_dir.display(),
        "sluice cluster node started"
    );

    let (apply_tx, apply_rx) = async_channel::unbounded::<ApplyJob>();
    let (done_tx, done_rx) = async_channel::unbounded::<Applied>();
    let span = tracing::Span::current();
    rt.spawn(applier(rt.clone(), node_id, shared.clone(), apply_rx, done_tx).instrument(span));

    let io = Executor {
        node_id,
        shared: &shared,
        transport: &transport,
        apply_tx: &apply_tx,
        wal: &wal_tx,
        now_ms: &now_ms,
    };
    // How late the loop got back to a due Raft tick (heartbeats ride on ticks): the worst over
    // the run and how often it was later than a heartbeat interval, logged at shutdown.
    let mut lateness = Lateness::default();
    loop {
        // Drain what arrived, then let the replica run until it wants nothing more done.
        while let Some((from, bytes)) = inbox.try_recv() {
            replica.handle_message(from, &bytes);
        }
        while let Ok(applied) = done_rx.try_recv() {
            let (group, index) = applied.map_err(|e| anyhow::anyhow!("node {node_id}: {e}"))?;
            if let Err(e) = replica.applied(group, index) {
                warn!(node_id, group, error = %e, "reporting applied failed");
            }
        }
        while let Ok(done) = wal_rx.try_recv() {
            io.wal_done(&mut replica, done)?;
        }
        if replica.wants_peers() {
            let connected: Vec<u64> = transport
                .peer_states()
                .into_iter()
                .filter(|p| matches!(p.state, sluice_transport_quic::PeerState::Connected { .. }))
                .map(|p| p.id)
                .collect();
            replica.peers_connected(&connected)?;
        }
        let pass = {
            let mut broker = shared.broker.lock().unwrap();
            lateness.note(replica.poll_timeout(), now_ms());
            let pass = replica.handle_timeout(now_ms(), crate::server::now_ms(), &mut broker);
            if let Some(applied) = replica.start_serving(&broker) {
                shared.start_serving();
                info!(
                    node_id,
                    applied,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "__meta caught up: serving Kafka clients"
                );
            }
            shared.set_cut_off(replica.cut_off());
            crate::server::deliver(&shared, &mut broker);
            pass
        };
        if replica.stopped() {
            break;
        }
        if pass.housekeeping && shared.config.metrics_addr.is_some() {
            publish_gauges(&replica, &transport, &shared);
        }
        if pass.housekeeping {
            sync_peers(&mut replica, &transport, &shared);
            if cc.joining && replica.meta_voters().contains(&node_id) {
                // A voter now: if its data is ever lost it must recover like any member,
                // never start again as a fresh joiner.
                cc.joining = false;
                if let Err(e) = record_cluster(&data_dir, &cc) {
                    warn!(node_id, error = %e, "recording that this node votes failed");
                }
            }
        }
        io.run(&mut replica).await?;
        let wait_ms = replica.poll_timeout().saturating_sub(now_ms());
        match wait(&rt, &inbox, &stop, &done_rx, &wal_rx, &shared, wait_ms).await {
            Wake::Batch(from, bytes) => replica.handle_message(from, &bytes),
            Wake::Applied(group, index) => replica.applied(group, index)?,
            Wake::Fatal(e) => bail!("node {node_id}: {e}"),
            Wake::Wal(done) => io.wal_done(&mut replica, done)?,
            Wake::Timer => {}
            Wake::Closed => bail!("node {node_id}: the raft transport stopped"),
            Wake::Stop => {
                if replica.begin_shutdown(now_ms()) == Shutdown::Now {
                    break;
                }
            }
        }
    }
    info!(
        node_id,
        worst_ms = lateness.worst_ms,
        over_heartbeat = lateness.over_heartbeat,
        over_tick = lateness.over_tick,
        passes = lateness.passes,
        "raft loop: lateness of due ticks over the run"
    );
    // The log's thread writes what it was given, then stops.
    drop(wal_tx);
    let _ = rt.spawn_blocking(move || wal_thread.join()).await;
    info!(node_id, "shutting down the raft transport");
    transport.shutdown().await;
    info!(node_id, "raft stopped");
    Ok(())
}

/// Keeps the transport's peers in line with the cluster's members as `__meta` records them:
/// a node added (AddRaftVoter) is reached at the Raft address it was added with; a node
/// removed, once it holds no replica and has left `__meta`'s membership, is dropped.
fn sync_peers(replica: &mut Replica, transport: &Transport, shared: &Shared) {
    let node_id = replica.node_id();
    let wanted = shared.broker.lock().unwrap().cluster_peers();
    // A member that votes in `__meta` (as this node's log says) is never told it may start
    // empty without recovering.
    let voters = replica.meta_voters();
    for (id, addr) in &wanted {
        let Some(addr) = addr.as_ref().filter(|_| *id != node_id) else {
            continue;
        };
        match sluice_transport_quic::parse_peer(&format!("{id}@{addr}")) {
            Ok((_, addr)) => {
                transport.add_peer(*id, addr, !voters.contains(id));
            }
            Err(e) => {
                warn!(node_id, peer = id, error = %e, "a member's raft address does not parse")
            }
        }
    }
    replica.set_known_peers(transport.peer_ids());
    if !replica.serving() {
        return;
    }
    let in_meta = replica.meta_membership();
    let member = shared.broker.lock().unwrap().is_member(node_id as i32);
    if member == Some(false)
        && !in_meta.contains(&node_id)
        && !shared
            .left_cluster
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        warn!(
            node_id,
            "this node was removed from the cluster (RemoveRaftVoter): its replicas move to other nodes; stop it once `sluice cluster remove-node` says so (to bring it back, add it again and start it with an empty data dir and --join)"
        );
    }
    for id in transport.peer_ids() {
        if !wanted.iter().any(|(w, ..)| *w == id) && !in_meta.contains(&id) {
            info!(
                node_id,
                peer = id,
                "node {id} left the cluster: dropping it from the raft transport"
            );
            transport.remove_peer(id);
        }
    }
}

/// How late the loop ran due Raft ticks (the broker lock, a long pass): a tick held up past a
/// heartbeat interval (150 ms) delays heartbeats.
#[derive(Debug, Default)]
struct Lateness {
    worst_ms: u64,
    over_tick: u64,
    over_heartbeat: u64,
    passes: u64,
}

impl Lateness {
    /// A pass starts at `now` while the replica's next timer was due at `due`. The first
    /// pass is not counted: nothing was due before the loop started.
    fn note(&mut self, due: u64, now: u64) {
        self.passes += 1;
        if self.passes == 1 {
            return;
        }
        let late = now.saturating_sub(due);
        self.worst_ms = self.worst_ms.max(late);
        self.over_tick += u64::from(late > 50);
        self.over_heartbeat += u64::from(late > 150);
    }
}

/// Runs the I/O the replica asks for: the only place the cluster loop touches disks and the
/// network.
struct Executor<'a, F: Fn() -> u64> {
    node_id: u64,
    shared: &'a Arc<Shared>,
    transport: &'a Transport,
    apply_tx: &'a async_channel::Sender<ApplyJob>,
    /// The write-ahead log's thread (`wal_writer`).
    wal: &'a async_channel::Sender<WalJob>,
    now_ms: &'a F,
}

impl<F: Fn() -> u64> Executor<'_, F> {
    /// Ships every Raft batch and runs every [`Io`] until the replica is quiet. Persists go to
    /// the write-ahead log's thread (their messages leave once it reports them durable, in
    /// [`Executor::wal_done`]); applies go to the applier; the loop never waits on a disk.
    async fn run(&self, replica: &mut Replica) -> anyhow::Result<()> {
        let node_id = self.node_id;
        let mut pending = None;
        loop {
            while let Some(mut t) = replica.poll_transmit() {
                let to = t.to;
                let sent = self
                    .transport
                    .send(to, Bytes::from(std::mem::take(&mut t.bytes)));
                if let Err(e) = &sent {
                    warn!(node_id, peer_id = to, error = %e, "sending a raft batch failed");
                }
                if !t.snapshots.is_empty() {
                    replica.transmitted(&t, sent.is_ok());
                }
            }
            let Some(io) = pending.take().or_else(|| replica.poll()) else {
                return Ok(());
            };
            match io {
                Io::Persist(batch) => self.to_wal(WalJob::Persist(batch))?,
                Io::Apply(job) => {
                    let _ = self.apply_tx.try_send(job);
                }
                Io::OpenGroup(first) => {
                    // A new topic asks for thousands: one trip to the log's thread for all.
                    let mut opens = vec![first];
                    while let Some(io) = replica.poll() {
                        match io {
                            Io::OpenGroup(open) => opens.push(open),
                            other => {
                                pending = Some(other);
                                break;
                            }
                        }
                    }
                    self.open_groups(replica, opens).await?;
                }
                Io::RemoveGroup { group } => self.to_wal(WalJob::Remove(group))?,
                Io::CompactStore(c) => {
                    debug!(
                        node_id,
                        group = c.group,
                        index = c.index,
                        "raft log compacted"
                    );
                    self.to_wal(WalJob::Compact {
                        group: c.group,
                        snapshot: c.snapshot,
                    })?;
                }
                // Through the log's thread, in order: a compaction record never becomes
                // durable before the mark it relies on.
                Io::WriteMarks(marks) => self.to_wal(WalJob::Marks(marks))?,
            }
        }
    }

    fn to_wal(&self, job: WalJob) -> anyhow::Result<()> {
        self.wal
            .try_send(job)
            .map_err(|_| anyhow::anyhow!("node {}: the raft log writer stopped", self.node_id))
    }

    /// Opens groups' logs (no I/O unless a directory of an earlier version is migrated) and
    /// starts their Raft groups.
    async fn open_groups(
        &self,
        replica: &mut Replica,
        opens: Vec<OpenGroup>,
    ) -> anyhow::Result<()> {
        let node_id = self.node_id;
        let (reply, stores) = async_channel::bounded(1);
        // A replica being added starts outside the membership (no voters: seeded by the
        // leader's snapshot).
        let groups = opens
            .iter()
            .map(|o| {
                (
                    o.group,
                    if o.joining {
                        Vec::new()
                    } else {
                        o.voters.clone()
                    },
                )
            })
            .collect();
        self.to_wal(WalJob::Open { groups, reply })?;
        let stores = stores
            .recv()
            .await
            .map_err(|_| anyhow::anyhow!("node {node_id}: the raft log writer stopped"))?
            .with_context(|| {
                let first = &opens[0];
                format!(
                    "node {node_id}: opening the raft logs of {} groups (from {}-{}, group {})",
                    opens.len(),
                    first.topic,
                    first.partition,
                    first.group
                )
            })?;
        let mut broker = self.shared.broker.lock().unwrap();
        for (open, store) in opens.into_iter().zip(stores) {
            replica.group_opened(
                open,
                store,
                (self.now_ms)(),
                crate::server::now_ms(),
                &mut broker,
            )?;
        }
        crate::server::deliver(self.shared, &mut broker);
        Ok(())
    }

    /// What the write-ahead log's thread reports: persists that are durable (their held
    /// messages may leave), or idle groups to rewrite so the oldest log file can go.
    fn wal_done(
        &self,
        replica: &mut Replica,
        done: std::io::Result<WalDone>,
    ) -> anyhow::Result<()> {
        let node_id = self.node_id;
        match done.with_context(|| format!("node {node_id}: writing the raft log"))? {
            WalDone::Persisted { done, written } => {
                let mut broker = self.shared.broker.lock().unwrap();
                replica.persisted(
                    &done,
                    &written,
                    (self.now_ms)(),
                    crate::server::now_ms(),
                    &mut broker,
                )?;
                crate::server::deliver(self.shared, &mut broker);
            }
            WalDone::Cold(groups) => {
                debug!(
                    node_id,
                    groups = groups.len(),
                    "rewriting idle raft groups to free the oldest log file"
                );
                let stores = groups
                    .into_iter()
                    .map(|g| (g, replica.log_store(g).cloned()))
                    .collect();
                self.to_wal(WalJob::Rewrite(stores))?;
            }
        }
        Ok(())
    }
}

/// Applies committed entries off the Raft loop (so ticks and heartbeats never wait on log
/// writes) and reports the applied index back. A snapshot install runs as its own task; the
/// group's later jobs wait for it while other groups carry on.
async fn applier<R: Runtime>(
    rt: R,
    node_id: u64,
    shared: Arc<Shared>,
    jobs: async_channel::Receiver<ApplyJob>,
    done: async_channel::Sender<Applied>,
) {
    let (installed_tx, installed_rx) = async_channel::unbounded::<(u64, u64)>();
    // Jobs of groups with an install in progress.
    let mut held: HashMap<u64, VecDeque<ApplyJob>> = HashMap::new();
    loop {
        let next = future::or(async { jobs.recv().await.ok().map(Ok) }, async {
            installed_rx.recv().await.ok().map(Err)
        })
        .await;
        let ready = match next {
            None => break,
            Some(Ok(job)) => VecDeque::from([job]),
            Some(Err((group, index))) => {
                if done.send(Ok((group, index))).await.is_err() {
                    break;
                }
                held.remove(&group).unwrap_or_default()
            }
        };
        for job in ready {
            if let Some(queue) = held.get_mut(&job.group()) {
                queue.push_back(job);
                continue;
            }
            match job {
                ApplyJob::Entries { group, entries } => {
                    let last = with_broker(&shared, |broker, wall| {
                        apply_entries(broker, group, entries, wall)
                    });
                    if let Some(last) = last
                        && done.send(Ok((group, last))).await.is_err()
                    {
                        return;
                    }
                }
                ApplyJob::MetaImage { index, data } => {
                    let installed = with_broker(&shared, |broker, wall| {
                        install_meta_image(broker, index, &data, wall)
                    });
                    let failed = installed.is_err();
                    if done.send(installed.map(|i| (META_GROUP, i))).await.is_err() || failed {
                        return;
                    }
                }
                ApplyJob::Install {
                    group,
                    index,
                    image,
                } => {
                    held.insert(group, VecDeque::new());
                    let (rt2, shared, tx) = (rt.clone(), shared.clone(), installed_tx.clone());
                    let span = tracing::Span::current();
                    rt.spawn(
                        async move {
                            super::catchup::install(&rt2, &shared, node_id, group, image).await;
                            let _ = tx.send((group, index)).await;
                        }
                        .instrument(span),
                    );
                }
            }
        }
    }
}

/// Publishes every group's Raft state and every peer connection for the metrics endpoint.
fn publish_gauges(replica: &Replica, transport: &Transport, shared: &Shared) {
    use crate::metrics::{ClusterGauges, GroupGauge, PeerGauge};
    let states = replica.group_states();
    let names: HashMap<u64, (String, i32)> = {
        let broker = shared.broker.lock().unwrap();
        let Some(meta) = broker.meta() else { return };
        states
            .iter()
            .filter_map(|g| {
                meta.group(g.group)
                    .map(|(t, p)| (g.group, (t.to_string(), p)))
            })
            .collect()
    };
    let groups: Vec<GroupGauge> = states
        .into_iter()
        .filter_map(|g| {
            let (topic, partition) = if g.group == META_GROUP {
                ("__meta".to_string(), -1)
            } else {
                names.get(&g.group).cloned()?
            };
            Some(GroupGauge {
                group: g.group,
                topic,
                partition,
                leader: g.leader,
                term: g.term,
                commit: g.commit,
                applied: g.applied,
                first_index: g.first_index,
                last_index: g.last_index,
            })
        })
        .collect();
    let peers = transport
        .peer_states()
        .into_iter()
        .map(|p| PeerGauge {
            id: p.id,
            connected: matches!(p.state, sluice_transport_quic::PeerState::Connected { .. }),
            dropped_batches: p.dropped_batches,
            connections: p.connections,
            batches_sent: replica.sent_to(p.id).0,
            messages_sent: replica.sent_to(p.id).1,
        })
        .collect();
    *shared.cluster_gauges.lock().unwrap() = Some(ClusterGauges {
        groups,
        peers,
        quiesced: replica.quiesced_groups(),
    });
}

enum Wake {
    Batch(u64, Bytes),
    Applied(u64, u64),
    /// The applier cannot go on (the metadata would part from the cluster's).
    Fatal(String),
    Wal(std::io::Result<WalDone>),
    Timer,
    Closed,
    Stop,
}

/// Runs `apply` on the broker at the current time, then delivers the answers it finished and
/// wakes the flusher and the Raft loop.
fn with_broker<T>(
    shared: &Shared,
    apply: impl FnOnce(&mut sluice_proto::broker::Broker, i64) -> T,
) -> T {
    let out = {
        let mut broker = shared.broker.lock().unwrap();
        let wall = crate::server::now_ms();
        broker.advance_clock(crate::server::mono_ms(), wall);
        let out = apply(&mut broker, wall);
        crate::server::deliver(shared, &mut broker);
        out
    };
    shared.flush.notify(1);
    shared.raft_wake.notify(1);
    out
}

/// What the applier reports: a group's applied index, or why it cannot go on.
type Applied = Result<(u64, u64), String>;

async fn wait<R: Runtime>(
    rt: &R,
    inbox: &Inbox,
    stop: &async_channel::Receiver<()>,
    done: &async_channel::Receiver<Applied>,
    wal: &async_channel::Receiver<std::io::Result<WalDone>>,
    shared: &Shared,
    wait_ms: u64,
) -> Wake {
    let raft_wake = shared.raft_wake.listen();
    let batch = async {
        match inbox.recv().await {
            Some((from, bytes)) => Wake::Batch(from, bytes),
            None => Wake::Closed,
        }
    };
    let applied = async {
        match done.recv().await {
            Ok(Ok((g, i))) => Wake::Applied(g, i),
            Ok(Err(e)) => Wake::Fatal(e),
            Err(_) => std::future::pending().await,
        }
    };
    let written = async {
        match wal.recv().await {
            Ok(done) => Wake::Wal(done),
            Err(_) => Wake::Wal(Err(std::io::Error::other("the raft log writer stopped"))),
        }
    };
    let timer = async {
        if wait_ms > 0 {
            rt.sleep(Duration::from_millis(wait_ms)).await;
        }
        Wake::Timer
    };
    let woken = async {
        raft_wake.await;
        Wake::Timer
    };
    let stopped = async {
        let _ = stop.recv().await;
        Wake::Stop
    };
    future::or(
        stopped,
        future::or(
            batch,
            future::or(applied, future::or(written, future::or(woken, timer))),
        ),
    )
    .await
}

/// A seed for election jitter that differs between processes and starts.
fn entropy() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32) ^ (&t as *const u64 as u64)
}
