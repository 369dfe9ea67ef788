//! A cluster node: checks its identity against the data dir, starts the QUIC transport and runs
//! the Raft groups (`__meta` and one per hosted partition) beside the Kafka server.
//!
//! One task drives the sans-IO [`sluice_raft::Node`]: it ticks it on a monotonic clock
//! (`poll_timeout` / `handle_timeout`), feeds it the batches from the transport's inbox
//! (`step`), proposes what the broker queued, ships its per-peer batches (`poll_transmit` →
//! `Transport::send`, which never waits) and executes its tasks: `Persist` is written to
//! `DATA/raft/<group>/` and fsynced on the blocking pool before `persisted(n)` is reported (only
//! then are the messages that depended on it sent); `Apply` goes to a separate applier task
//! that appends to the broker's logs, so ticks never wait on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_lite::future;
use sluice_proto::broker::GroupChange;
use sluice_proto::cluster::PartitionImage;
use sluice_proto::runtime::Runtime;
use sluice_raft::eraftpb::{Entry, EntryType, MessageType};
use sluice_raft::{Apply, META_GROUP, PeerBatch, Persist, StateRole, Task};
use sluice_transport_quic::{Inbox, Limits, NodeIdentity, Transport, TransportConfig};
use tracing::{Instrument, debug, info, warn};

use super::cli::ClusterConfig;
use super::raft_store::RaftStore;
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
}

/// Everything that can refuse a start, before the runtime exists: the certificates, the data
/// dir lock and the node/cluster ids recorded in the data dir (written on first start).
pub fn prepare(data_dir: &Path, cc: &ClusterConfig) -> anyhow::Result<Prepared> {
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
    } else {
        std::fs::create_dir_all(data_dir.join("meta"))?;
        let json = serde_json::json!({ "cluster_id": cc.cluster_id, "node_id": node_id });
        let tmp = data_dir.join("meta/cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&json)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir.join("meta"))?.sync_all()?;
    }
    Ok(Prepared {
        storage: Arc::new(lock),
        data_dir,
        tls,
    })
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
    let voters: Vec<u64> = cc.peers.iter().map(|&(id, _)| id).collect();
    let dir = data_dir.join("raft/meta");
    let open_dir = dir.clone();
    let open_voters = voters.clone();
    let (disk, loaded) = rt
        .spawn_blocking(move || RaftStore::open(&open_dir, &open_voters))
        .await
        .with_context(|| format!("node {node_id}: loading the raft log in {}", dir.display()))?;
    if let Some((bytes, reason)) = &loaded.truncated {
        warn!(node_id, bytes, reason = %reason, dir = %dir.display(), "truncated torn or corrupt raft log tail");
    }
    let hs = loaded.store.hard_state().clone();
    info!(
        node_id,
        records = loaded.records,
        last_index = loaded.store.last_index(),
        term = hs.term,
        vote = hs.vote,
        commit = hs.commit,
        "raft log loaded"
    );

    let mut config = sluice_raft::Config::new(node_id);
    config.seed = entropy() ^ node_id;
    // Elections after 0.8–1.6 s of leader silence (5+ heartbeats of 150 ms): clients see a new
    // partition leader about 1.5 s after a node dies (docs/OPERATIONS.md, measured).
    config.election_ticks_min = 16;
    config.election_ticks_max = 32;
    let mut node = sluice_raft::Node::new(config)?;
    // `__meta` is re-applied from the start on every boot (its state lives in memory only).
    node.add_group(META_GROUP, loaded.store, 0)?;
    let mut stores: HashMap<u64, RaftStore> = HashMap::from([(META_GROUP, disk)]);
    // Preferred leader (first replica) of each hosted partition group.
    let mut preferred: HashMap<u64, u64> = HashMap::new();
    // Last compaction hint proposed per led group, and the compaction step.
    let mut hinted: HashMap<u64, u64> = HashMap::new();
    // Since when each (group, follower) of a led group has been silent.
    let mut silent: HashMap<(u64, u64), u64> = HashMap::new();
    let compact_step = cc.raft_compact_entries;
    let replica_timeout = cc.raft_replica_timeout_ms;
    let mut next_balance = 0u64;

    let (transport, inbox) = Transport::start(
        TransportConfig {
            node_id,
            cluster_id: cc.cluster_id.clone(),
            listen: cc.raft_addr,
            peers: cc.others(),
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
    let (done_tx, done_rx) = async_channel::unbounded::<(u64, u64)>();
    let span = tracing::Span::current();
    rt.spawn(applier(rt.clone(), node_id, shared.clone(), apply_rx, done_tx).instrument(span));

    let mut state = Loop {
        node_id,
        started,
        leader: (0, 0),
        shared: shared.clone(),
        apply_tx,
    };
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    node.handle_timeout(now_ms());
    let mut next_housekeeping = 0u64;
    let mut stopping: Option<u64> = None;
    let mut last_transfer = 0u64;
    loop {
        // Drain what arrived, tick if due, then run the node until it is quiet.
        while let Some((from, bytes)) = inbox.try_recv() {
            step(&mut node, node_id, from, &bytes);
        }
        while let Ok((group, index)) = done_rx.try_recv() {
            if node.group(group).is_some()
                && let Err(e) = node.applied(group, index)
            {
                warn!(node_id, group, error = %e, "reporting applied failed");
            }
        }
        let now = now_ms();
        if node.poll_timeout().is_none_or(|t| now >= t) {
            node.handle_timeout(now);
        }
        if now >= next_housekeeping {
            next_housekeeping = now + 200;
            let meta = node.group(META_GROUP).expect("meta group");
            let caught_up = meta.applied_index() >= meta.commit_index();
            let (marks, compactions) = {
                let mut broker = shared.broker.lock().unwrap();
                broker.cluster_tick(caught_up, crate::server::now_ms());
                if !shared.serving() && caught_up && broker.cluster_ready() {
                    shared.start_serving();
                    info!(
                        node_id,
                        applied = meta.applied_index(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "__meta caught up: serving Kafka clients"
                    );
                }
                crate::server::deliver(&shared, &mut broker);
                (
                    broker.take_applied_marks(),
                    // Hints are already spaced by the leader: act on each.
                    broker.take_compactions(1),
                )
            };
            if !marks.is_empty() {
                let dir = data_dir.clone();
                rt.spawn_blocking(move || write_marks(&dir, &marks)).await;
            }
            let liveness = Liveness {
                silent: &mut silent,
                now,
                timeout: replica_timeout,
            };
            propose_compact_hints(&mut node, &mut hinted, liveness, compact_step);
            report_isr(&node, &silent, now, replica_timeout, &shared);
            for (group, index, image) in compactions {
                compact_group(&rt, &mut node, &mut stores, group, index, image).await;
            }
            if shared.config.metrics_addr.is_some() {
                publish_gauges(&node, &transport, &shared);
            }
        }
        if now >= next_balance && stopping.is_none() {
            next_balance = now + 2000;
            balance_leaders(&mut node, &preferred);
        }
        let (proposals, changes) = {
            let mut broker = shared.broker.lock().unwrap();
            (broker.take_proposals(), broker.take_group_changes())
        };
        for change in changes {
            match &change {
                GroupChange::Add { group, voters, .. } => {
                    preferred.insert(*group, voters.first().copied().unwrap_or(0));
                }
                GroupChange::Remove { group } => {
                    preferred.remove(group);
                }
            }
            apply_group_change(
                &rt,
                &mut node,
                &mut stores,
                &data_dir,
                &state.apply_tx,
                change,
            )
            .await?;
        }
        let mut indexed = Vec::new();
        for p in proposals {
            // A partition entry enters the log only through this node as leader (raft-rs would
            // forward it): the leader's offset predictions (acks=1) rely on that.
            let leads = p.group == META_GROUP
                || node
                    .group(p.group)
                    .is_some_and(|d| d.role() == StateRole::Leader);
            let proposed = if leads {
                node.propose(p.group, p.data.clone())
                    .map_err(|e| e.to_string())
            } else {
                Err("not the leader".to_string())
            };
            match proposed {
                Ok(()) => {
                    if let Some(e) = sluice_proto::cluster::PartitionEntry::decode(&p.data)
                        && p.group != META_GROUP
                        && let Some(d) = node.group(p.group)
                    {
                        indexed.push((p.group, e.seq, d.raw_node().raft.raft_log.last_index()));
                    }
                }
                Err(e) => {
                    debug!(node_id, group = p.group, error = %e, "proposal dropped");
                    let mut broker = shared.broker.lock().unwrap();
                    broker.proposal_dropped(p.group, &p.data);
                    crate::server::deliver(&shared, &mut broker);
                }
            }
        }
        if !indexed.is_empty() {
            shared.broker.lock().unwrap().entries_indexed(&indexed);
        }
        if let Some(since) = stopping {
            let leading = led_groups(&node);
            if leading == 0 || now.saturating_sub(since) > 2000 {
                info!(
                    node_id,
                    still_leading = leading,
                    "leadership handed off; stopping"
                );
                break;
            }
            if now.saturating_sub(last_transfer) >= 500 {
                last_transfer = now;
                transfer_leadership(&mut node);
            }
        }
        loop {
            let mut persists: Vec<(u64, Persist)> = Vec::new();
            while let Some((group, task)) = node.poll_task() {
                match task {
                    Task::Persist(p) => persists.push((group, p)),
                    other => state.on_task(&mut node, group, other, now_ms()),
                }
            }
            ship(&mut node, &transport);
            if persists.is_empty() {
                break;
            }
            // Last entry index written per group (acks=1 answers on the leader wait for it).
            let mut written: BTreeMap<u64, u64> = BTreeMap::new();
            for (group, p) in &persists {
                if let Some(e) = p.entries.last() {
                    written.insert(*group, e.index);
                }
            }
            let mut taken = std::mem::take(&mut stores);
            let (back, result) = rt
                .spawn_blocking(move || {
                    let r = write_persists(&mut taken, &persists);
                    (taken, r)
                })
                .await;
            stores = back;
            let done = result.with_context(|| format!("node {node_id}: writing the raft log"))?;
            for (group, number) in done {
                if node.group(group).is_some() {
                    node.persisted(group, number)?;
                }
            }
            if !written.is_empty() {
                let mut broker = shared.broker.lock().unwrap();
                for (group, index) in written {
                    broker.leader_persisted(group, index);
                }
                crate::server::deliver(&shared, &mut broker);
            }
        }
        let wait_ms = node
            .poll_timeout()
            .unwrap_or(now + 50)
            .min(next_housekeeping)
            .saturating_sub(now_ms());
        match wait(&rt, &inbox, &stop, &done_rx, &shared, wait_ms).await {
            Wake::Batch(from, bytes) => step(&mut node, node_id, from, &bytes),
            Wake::Applied(group, index) => {
                if node.group(group).is_some() {
                    node.applied(group, index)?;
                }
            }
            Wake::Timer => {}
            Wake::Closed => bail!("node {node_id}: the raft transport stopped"),
            Wake::Stop => {
                if stopping.is_none() {
                    info!(
                        node_id,
                        leading = led_groups(&node),
                        "stopping: handing off leadership"
                    );
                    stopping = Some(now_ms());
                    last_transfer = now_ms();
                    if led_groups(&node) == 0 {
                        break;
                    }
                    if transfer_leadership(&mut node) == 0 {
                        info!(node_id, "no live peer to hand leadership to; stopping");
                        break;
                    }
                }
            }
        }
    }
    info!(node_id, "shutting down the raft transport");
    transport.shutdown().await;
    info!(node_id, "raft stopped");
    Ok(())
}

/// Work for the applier task.
enum ApplyJob {
    /// Committed entries of a group, in order.
    Entries { group: u64, entries: Vec<Entry> },
    /// A snapshot image to install; `index` (its Raft index) is reported applied when done.
    Install {
        group: u64,
        index: u64,
        image: PartitionImage,
    },
}

impl ApplyJob {
    fn group(&self) -> u64 {
        match self {
            ApplyJob::Entries { group, .. } | ApplyJob::Install { group, .. } => *group,
        }
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
    done: async_channel::Sender<(u64, u64)>,
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
                if done.send((group, index)).await.is_err() {
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
                    if let Some(last) = apply_entries(&shared, group, entries)
                        && done.send((group, last)).await.is_err()
                    {
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

/// Applies one group's committed entries to the broker; returns the last index.
fn apply_entries(shared: &Arc<Shared>, group: u64, entries: Vec<Entry>) -> Option<u64> {
    let last = entries.last().map(|e| e.index)?;
    {
        let mut broker = shared.broker.lock().unwrap();
        let now = crate::server::now_ms();
        if group == META_GROUP {
            let entries: Vec<(u64, Vec<u8>)> = entries
                .into_iter()
                .filter(|e| e.get_entry_type() == EntryType::EntryNormal)
                .map(|e| (e.index, e.data.to_vec()))
                .collect();
            broker.apply_meta(&entries, now);
        } else {
            let entries: Vec<(u64, u64, Vec<u8>)> = entries
                .into_iter()
                .filter(|e| e.get_entry_type() == EntryType::EntryNormal)
                .map(|e| (e.index, e.term, e.data.to_vec()))
                .collect();
            broker.apply_partition(group, &entries, now);
        }
        broker.finish_apply();
        crate::server::deliver(shared, &mut broker);
    }
    shared.flush.notify(1);
    shared.raft_wake.notify(1);
    Some(last)
}

/// Starts or stops hosting a partition group.
async fn apply_group_change<R: Runtime>(
    rt: &R,
    node: &mut sluice_raft::Node,
    stores: &mut HashMap<u64, RaftStore>,
    data_dir: &Path,
    apply_tx: &async_channel::Sender<ApplyJob>,
    change: GroupChange,
) -> anyhow::Result<()> {
    let node_id = node.id();
    match change {
        GroupChange::Add {
            group,
            voters,
            applied,
            campaign,
            topic,
            partition,
        } => {
            if node.group(group).is_some() {
                return Ok(());
            }
            let dir = group_dir(data_dir, group);
            let open_dir = dir.clone();
            let (store, loaded) = rt
                .spawn_blocking(move || RaftStore::open(&open_dir, &voters))
                .await
                .with_context(|| {
                    format!(
                        "node {node_id}: opening the raft log of {topic}-{partition} in {}",
                        dir.display()
                    )
                })?;
            if let Some((bytes, reason)) = &loaded.truncated {
                warn!(node_id, group, topic = %topic, partition, bytes, reason = %reason, "truncated torn or corrupt raft log tail");
            }
            let fresh = loaded.store.last_index() == 0;
            // Raft refuses an applied index beyond the durable commit; entries in between are
            // skipped by the broker (it remembers what its log holds).
            let mut applied = applied.min(loaded.store.hard_state().commit);
            let compacted = loaded.store.snapshot_index();
            // A fresh group's log starts with its voters at index 1: nothing was compacted.
            let mut install = None;
            if applied < compacted && compacted > 1 {
                match PartitionImage::decode(&loaded.store.snapshot_ref().data) {
                    // A snapshot install was cut short: copy the records again.
                    Some(image) => {
                        info!(node_id, group, topic = %topic, partition, applied, compacted, "the local log is behind the installed snapshot: resuming the install");
                        install = Some(ApplyJob::Install {
                            group,
                            index: compacted,
                            image,
                        });
                    }
                    None => {
                        tracing::error!(node_id, group, topic = %topic, partition, applied, compacted, "the applied mark is below the compacted raft log and no snapshot image was kept: entries in between cannot be re-applied")
                    }
                }
                applied = compacted;
            }
            node.add_group(group, loaded.store, applied)?;
            if let Some(job) = install {
                let _ = apply_tx.try_send(job);
            }
            stores.insert(group, store);
            debug!(node_id, group, topic = %topic, partition, applied, fresh, "hosting partition group");
            if campaign && fresh {
                node.campaign(group)?;
            }
        }
        GroupChange::Remove { group } => {
            node.remove_group(group);
            stores.remove(&group);
            let dir = group_dir(data_dir, group);
            rt.spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&dir);
            })
            .await;
            info!(node_id, group, "partition group removed");
        }
    }
    Ok(())
}

fn group_dir(data_dir: &Path, group: u64) -> PathBuf {
    data_dir.join(format!("raft/g-{group}"))
}

/// Writes every group's persists; returns the last persist number per group.
fn write_persists(
    stores: &mut HashMap<u64, RaftStore>,
    persists: &[(u64, Persist)],
) -> std::io::Result<Vec<(u64, u64)>> {
    let mut by_group: BTreeMap<u64, Vec<Persist>> = BTreeMap::new();
    for (g, p) in persists {
        by_group.entry(*g).or_default().push(p.clone());
    }
    let mut done = Vec::new();
    for (group, ps) in by_group {
        let Some(store) = stores.get_mut(&group) else {
            continue; // removed meanwhile
        };
        store.write(&ps)?;
        done.push((group, ps.last().expect("non-empty").number));
    }
    Ok(done)
}

/// Records the applied marks of partitions (atomic replace, fsynced).
fn write_marks(data_dir: &Path, marks: &[(u64, String, Vec<u8>)]) {
    for (group, path, bytes) in marks {
        let full = data_dir.join(path);
        let tmp = full.with_extension("tmp");
        let r = (|| -> std::io::Result<()> {
            std::fs::write(&tmp, bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &full)
        })();
        if let Err(e) = r {
            debug!(group, path = %full.display(), error = %e, "writing an applied mark failed");
        }
    }
}

/// Bytes of entry data a group may hold in memory before its leader proposes a compaction hint
/// even if fewer than `--raft-compact-entries` entries accumulated (entries are whole produce
/// requests, up to megabytes each).
const COMPACT_BYTES: usize = 16 << 20;

/// Which followers still hold back compaction: one silent for `timeout` ms (dead, cut off)
/// does not, and catches up from a snapshot when it returns.
struct Liveness<'a> {
    /// Since when each (group, follower) has been silent, sampled every housekeeping round.
    silent: &'a mut HashMap<(u64, u64), u64>,
    now: u64,
    timeout: u64,
}

/// A leader proposes a compaction hint once every live replica holds `step` more entries (or
/// the log holds [`COMPACT_BYTES`]): each replica then drops what it also has durably in its
/// segment log (see `compact_group`).
fn propose_compact_hints(
    node: &mut sluice_raft::Node,
    hinted: &mut HashMap<u64, u64>,
    live: Liveness<'_>,
    step: u64,
) {
    let me = node.id();
    let ids: Vec<u64> = node
        .group_ids()
        .filter(|g| {
            *g != META_GROUP
                && node
                    .group(*g)
                    .is_some_and(|d| d.role() == StateRole::Leader)
        })
        .collect();
    hinted.retain(|g, _| ids.contains(g));
    live.silent.retain(|(g, _), _| ids.contains(g));
    for group in ids {
        let Some(driver) = node.group(group) else {
            continue;
        };
        // raft-rs clears `recent_active` at every quorum check and sets it on every message,
        // so only a follower that stays silent keeps its entry here.
        let mut held = u64::MAX;
        for (&id, pr) in driver.raw_node().raft.prs().iter() {
            let key = (group, id);
            if id == me || pr.recent_active {
                live.silent.remove(&key);
            } else {
                live.silent.entry(key).or_insert(live.now);
            }
            let gone = live
                .silent
                .get(&key)
                .is_some_and(|since| live.now.saturating_sub(*since) >= live.timeout);
            if !gone {
                held = held.min(pr.matched);
            }
        }
        let last = hinted.get(&group).copied().unwrap_or(0);
        let bytes: usize = driver
            .store()
            .entries_slice()
            .iter()
            .map(|e| e.data.len())
            .sum();
        if held != u64::MAX && held > last && (held >= last + step || bytes >= COMPACT_BYTES) {
            hinted.insert(group, held);
            let _ = node.propose(group, sluice_proto::cluster::encode_compact_hint(held));
        }
    }
}

/// Tells the broker, for every partition this node leads, which replicas are in sync: itself,
/// and every follower heard from within the replica timeout that is not being sent a snapshot
/// (it fell behind the leader's retained log).
fn report_isr(
    node: &sluice_raft::Node,
    silent: &HashMap<(u64, u64), u64>,
    now: u64,
    timeout: u64,
    shared: &Shared,
) {
    let me = node.id();
    let mut reports = Vec::new();
    for group in node.group_ids().filter(|g| *g != META_GROUP) {
        let Some(driver) = node.group(group) else {
            continue;
        };
        if driver.role() != StateRole::Leader {
            continue;
        }
        let raft = &driver.raw_node().raft;
        let isr: Vec<i32> = raft
            .prs()
            .iter()
            .filter(|(id, pr)| {
                **id == me
                    || (silent
                        .get(&(group, **id))
                        .is_none_or(|since| now.saturating_sub(*since) < timeout)
                        && pr.state != sluice_raft::ProgressState::Snapshot)
            })
            .map(|(id, _)| *id as i32)
            .collect();
        reports.push((group, raft.term, isr));
    }
    if reports.is_empty() {
        return;
    }
    let mut broker = shared.broker.lock().unwrap();
    let now_ms = crate::server::now_ms();
    for (group, term, isr) in reports {
        broker.report_isr(group, term, isr, now_ms);
    }
    drop(broker);
    shared.raft_wake.notify(1);
}

/// Drops a partition group's Raft log up to `index` in memory and on disk, keeping `image`
/// (where the segment log stood) as the snapshot for a replica that falls behind.
async fn compact_group<R: Runtime>(
    rt: &R,
    node: &mut sluice_raft::Node,
    stores: &mut HashMap<u64, RaftStore>,
    group: u64,
    index: u64,
    image: Vec<u8>,
) {
    let node_id = node.id();
    let Some(driver) = node.group(group) else {
        return;
    };
    let index = index.min(driver.applied_index());
    if index <= driver.store().snapshot_index() {
        return;
    }
    if let Err(e) = node.compact(group, index, image) {
        debug!(node_id, group, index, error = %e, "compaction skipped");
        return;
    }
    let store = node.group(group).expect("checked").store();
    let (snapshot, entries, hard_state) = (
        store.snapshot_ref().clone(),
        store.entries_slice().to_vec(),
        store.hard_state().clone(),
    );
    let Some(mut disk) = stores.remove(&group) else {
        return;
    };
    let (disk, result) = rt
        .spawn_blocking(move || {
            let r = disk.compact(&snapshot, &entries, &hard_state);
            (disk, r)
        })
        .await;
    stores.insert(group, disk);
    match result {
        Ok(()) => debug!(node_id, group, index, "raft log compacted"),
        Err(e) => {
            warn!(node_id, group, index, error = %e, "compacting the raft log on disk failed; the in-memory log is compacted, the file keeps everything")
        }
    }
}

/// Publishes every group's Raft state and every peer connection for the metrics endpoint.
fn publish_gauges(node: &sluice_raft::Node, transport: &Transport, shared: &Shared) {
    use crate::metrics::{ClusterGauges, GroupGauge, PeerGauge};
    let names: HashMap<u64, (String, i32)> = {
        let broker = shared.broker.lock().unwrap();
        let Some(meta) = broker.meta() else { return };
        node.group_ids()
            .filter_map(|g| meta.group(g).map(|(t, p)| (g, (t.to_string(), p))))
            .collect()
    };
    let mut groups: Vec<GroupGauge> = node
        .group_ids()
        .filter_map(|g| {
            let d = node.group(g)?;
            let raft = &d.raw_node().raft;
            let (topic, partition) = if g == META_GROUP {
                ("__meta".to_string(), -1)
            } else {
                names.get(&g).cloned()?
            };
            Some(GroupGauge {
                group: g,
                topic,
                partition,
                leader: d.role() == StateRole::Leader,
                term: raft.term,
                commit: raft.raft_log.committed,
                applied: d.applied_index(),
                first_index: d.store().first_index(),
                last_index: raft.raft_log.last_index(),
            })
        })
        .collect();
    groups.sort_by_key(|g| g.group);
    let peers = transport
        .peer_states()
        .into_iter()
        .map(|p| PeerGauge {
            id: p.id,
            connected: matches!(p.state, sluice_transport_quic::PeerState::Connected { .. }),
            dropped_batches: p.dropped_batches,
            connections: p.connections,
        })
        .collect();
    *shared.cluster_gauges.lock().unwrap() = Some(ClusterGauges { groups, peers });
}

/// Preferred-leader election (Kafka's auto leader rebalance): a group led by another replica
/// than its first one is handed back once that replica is live and caught up, so leaders stay
/// spread evenly after elections that ignored placement (first start, failover, restart).
fn balance_leaders(node: &mut sluice_raft::Node, preferred: &HashMap<u64, u64>) {
    let me = node.id();
    let mut moves = Vec::new();
    for (&group, &to) in preferred {
        if to == me || to == 0 {
            continue;
        }
        let Some(driver) = node.group(group) else {
            continue;
        };
        if driver.role() != StateRole::Leader {
            continue;
        }
        let raft = &driver.raw_node().raft;
        let last = raft.raft_log.last_index();
        if raft
            .prs()
            .get(to)
            .is_some_and(|pr| pr.recent_active && pr.matched >= last)
        {
            moves.push((group, to));
        }
    }
    // A few per round: a restarted node takes its partitions back gradually.
    for (group, to) in moves.into_iter().take(16) {
        debug!(
            node_id = me,
            group, to, "handing leadership to the preferred replica"
        );
        let _ = node.transfer_leader(group, to);
    }
}

fn led_groups(node: &sluice_raft::Node) -> usize {
    node.group_ids()
        .filter(|g| {
            node.group(*g)
                .is_some_and(|d| d.role() == StateRole::Leader)
        })
        .count()
}

/// Hands every group this node leads to a live follower whose log is complete; returns how
/// many transfers started (0: nobody to hand to, e.g. the last node standing).
fn transfer_leadership(node: &mut sluice_raft::Node) -> usize {
    let mut started = 0;
    node.transfer_all_leadership(|_, driver| {
        let raft = &driver.raw_node().raft;
        let last = raft.raft_log.last_index();
        let me = raft.id;
        let to = raft
            .prs()
            .iter()
            .filter(|(id, pr)| **id != me && pr.recent_active)
            .max_by_key(|(_, pr)| pr.matched)
            .filter(|(_, pr)| pr.matched + 1 >= last)
            .map(|(id, _)| *id);
        started += usize::from(to.is_some());
        to
    });
    started
}

enum Wake {
    Batch(u64, Bytes),
    Applied(u64, u64),
    Timer,
    Closed,
    Stop,
}

async fn wait<R: Runtime>(
    rt: &R,
    inbox: &Inbox,
    stop: &async_channel::Receiver<()>,
    done: &async_channel::Receiver<(u64, u64)>,
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
            Ok((g, i)) => Wake::Applied(g, i),
            Err(_) => std::future::pending().await,
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
        future::or(batch, future::or(applied, future::or(woken, timer))),
    )
    .await
}

/// What the loop remembers between tasks.
struct Loop {
    node_id: u64,
    started: Instant,
    /// (term, leader id) of `__meta` last reported.
    leader: (u64, u64),
    shared: Arc<Shared>,
    apply_tx: async_channel::Sender<ApplyJob>,
}

impl Loop {
    fn on_task(&mut self, node: &mut sluice_raft::Node, group: u64, task: Task, _now: u64) {
        let node_id = self.node_id;
        match task {
            Task::Persist(_) | Task::Send(_) => unreachable!("handled by the loop / Node"),
            Task::Apply(Apply::Entries(entries)) => {
                let _ = self.apply_tx.try_send(ApplyJob::Entries { group, entries });
            }
            Task::Apply(Apply::Snapshot(s)) => {
                let (index, term) = s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term));
                match PartitionImage::decode(&s.data) {
                    Some(image) if group != META_GROUP => {
                        info!(
                            node_id,
                            group,
                            index,
                            term,
                            end_offset = image.end_offset,
                            "snapshot received: the leader compacted past this replica's log"
                        );
                        let _ = self.apply_tx.try_send(ApplyJob::Install {
                            group,
                            index,
                            image,
                        });
                    }
                    _ => tracing::error!(
                        node_id,
                        group,
                        index,
                        "a snapshot without a partition image arrived (from a node that compacted before snapshots carried one?); this replica cannot rebuild from it"
                    ),
                }
            }
            Task::RoleChanged(rc) if group == META_GROUP => {
                debug!(node_id, group, role = ?rc.role, term = rc.term, leader_id = rc.leader_id, "meta role changed");
                self.shared
                    .broker
                    .lock()
                    .unwrap()
                    .meta_role_changed(rc.leader_id, rc.term);
                if rc.leader_id != 0 && (rc.term, rc.leader_id) != self.leader {
                    self.leader = (rc.term, rc.leader_id);
                    info!(
                        node_id,
                        term = rc.term,
                        leader_id = rc.leader_id,
                        is_leader = rc.role == StateRole::Leader,
                        elapsed_ms = self.started.elapsed().as_millis() as u64,
                        "meta leader elected"
                    );
                }
            }
            Task::RoleChanged(rc) => {
                debug!(node_id, group, role = ?rc.role, term = rc.term, leader_id = rc.leader_id, "partition role changed");
                let last_index = node
                    .group(group)
                    .map_or(0, |d| d.raw_node().raft.raft_log.last_index());
                self.shared.broker.lock().unwrap().partition_role_changed(
                    group,
                    rc.leader_id,
                    rc.term,
                    last_index,
                    crate::server::now_ms(),
                );
            }
            Task::SnapshotWanted => {
                // Partition groups keep their voters, so every compaction's snapshot serves.
                debug!(
                    node_id,
                    group, "a peer asked for a newer snapshot than the stored one"
                );
            }
            Task::ReadReady { .. } => {}
        }
    }
}

fn step(node: &mut sluice_raft::Node, node_id: u64, from: u64, bytes: &[u8]) {
    match PeerBatch::decode_from(bytes) {
        Ok(batch) if batch.from == from && batch.to == node_id => node.step(batch),
        Ok(batch) => warn!(
            node_id,
            peer_id = from,
            batch_from = batch.from,
            batch_to = batch.to,
            "dropped a raft batch with mismatched ids"
        ),
        Err(e) => warn!(node_id, peer_id = from, error = %e, "dropped an undecodable raft batch"),
    }
}

fn ship(node: &mut sluice_raft::Node, transport: &Transport) {
    let node_id = transport.node_id();
    while let Some(batch) = node.poll_transmit() {
        let to = batch.to;
        let snapshots: Vec<u64> = batch
            .messages
            .iter()
            .filter(|m| {
                m.message
                    .as_ref()
                    .is_some_and(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            })
            .map(|m| m.group)
            .collect();
        let sent = transport.send(to, Bytes::from(batch.encode()));
        if let Err(e) = &sent {
            warn!(node_id, peer_id = to, error = %e, "sending a raft batch failed");
        }
        for group in snapshots {
            let _ = node.report_snapshot(group, to, sent.is_ok());
        }
    }
}

/// A seed for election jitter that differs between processes and starts.
fn entropy() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32) ^ (&t as *const u64 as u64)
}
