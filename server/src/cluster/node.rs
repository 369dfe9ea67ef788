//! A cluster node: checks its identity against the data dir, starts the QUIC transport and runs
//! the `__meta` Raft group on the server's runtime.
//!
//! One task drives the sans-IO [`sluice_raft::Node`]: it ticks it on a monotonic clock
//! (`poll_timeout` / `handle_timeout`), feeds it the batches from the transport's inbox
//! (`step`), ships its per-peer batches (`poll_transmit` → `Transport::send`, which never waits)
//! and executes its tasks: `Persist` is written to `DATA/raft/meta/` and fsynced on the blocking
//! pool before `persisted(n)` is reported; `Apply` only records the applied index for now (the
//! metadata state machine comes later).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_lite::future;
use sluice_proto::runtime::Runtime;
use sluice_raft::eraftpb::MessageType;
use sluice_raft::{Apply, META_GROUP, PeerBatch, StateRole, Task};
use sluice_transport_quic::{Inbox, Limits, NodeIdentity, Transport, TransportConfig};
use tracing::{debug, info, warn};

use super::cli::ClusterConfig;
use super::raft_store::RaftStore;
use crate::disk::DiskStorage;

/// Where a node records which node and cluster its data dir belongs to (shared with the
/// standalone broker, which writes the same file).
const CLUSTER_FILE: &str = "meta/cluster.json";

/// What [`prepare`] checked and holds: the data dir lock and the TLS identity.
#[derive(Debug)]
pub struct Prepared {
    _lock: DiskStorage,
    data_dir: PathBuf,
    tls: NodeIdentity,
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
        _lock: lock,
        data_dir,
        tls,
    })
}

/// Runs the node until `stop` yields (a signal), then shuts the transport down.
pub async fn run<R: Runtime>(
    rt: R,
    quic: Arc<dyn quinn::Runtime>,
    cc: ClusterConfig,
    prepared: Prepared,
    started: Instant,
    stop: async_channel::Receiver<()>,
) -> anyhow::Result<()> {
    let node_id = cc.node_id;
    let voters: Vec<u64> = cc.peers.iter().map(|&(id, _)| id).collect();
    let dir = prepared.data_dir.join("raft/meta");
    let open_dir = dir.clone();
    let open_voters = voters.clone();
    let (mut disk, loaded) = rt
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
    let mut node = sluice_raft::Node::new(config)?;
    node.add_group(META_GROUP, loaded.store, 0)?;

    let (transport, inbox) = Transport::start(
        TransportConfig {
            node_id,
            cluster_id: cc.cluster_id.clone(),
            listen: cc.raft_addr,
            peers: cc.others(),
            tls: prepared.tls,
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
        data_dir = %prepared.data_dir.display(),
        "sluice cluster node started"
    );
    warn!(
        node_id,
        "cluster mode serves no Kafka traffic yet (raft bootstrap only)"
    );

    let mut state = Loop {
        node_id,
        started,
        applied: 0,
        leader: (0, 0),
    };
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    node.handle_timeout(now_ms());
    loop {
        // Drain what arrived, tick if due, then run the node until it is quiet.
        while let Some((from, bytes)) = inbox.try_recv() {
            step(&mut node, node_id, from, &bytes);
        }
        let now = now_ms();
        if node.poll_timeout().is_none_or(|t| now >= t) {
            node.handle_timeout(now);
        }
        loop {
            let mut persists = Vec::new();
            while let Some((group, task)) = node.poll_task() {
                match task {
                    Task::Persist(p) => persists.push(p),
                    other => state.on_task(&mut node, group, other),
                }
            }
            ship(&mut node, &transport);
            if persists.is_empty() {
                break;
            }
            let last = persists.last().expect("non-empty").number;
            let (back, result) = rt
                .spawn_blocking(move || {
                    let r = disk.write(&persists);
                    (disk, r)
                })
                .await;
            disk = back;
            result.with_context(|| {
                format!("node {node_id}: writing the raft log in {}", dir.display())
            })?;
            node.persisted(META_GROUP, last)?;
        }
        let wait_ms = node
            .poll_timeout()
            .unwrap_or(now + 50)
            .saturating_sub(now_ms());
        match wait(&rt, &inbox, &stop, wait_ms).await {
            Wake::Batch(from, bytes) => step(&mut node, node_id, from, &bytes),
            Wake::Timer => {}
            Wake::Closed => bail!("node {node_id}: the raft transport stopped"),
            Wake::Stop => break,
        }
    }
    info!(node_id, "shutting down the raft transport");
    transport.shutdown().await;
    info!(node_id, "shutdown complete");
    Ok(())
}

enum Wake {
    Batch(u64, Bytes),
    Timer,
    Closed,
    Stop,
}

async fn wait<R: Runtime>(
    rt: &R,
    inbox: &Inbox,
    stop: &async_channel::Receiver<()>,
    wait_ms: u64,
) -> Wake {
    let batch = async {
        match inbox.recv().await {
            Some((from, bytes)) => Wake::Batch(from, bytes),
            None => Wake::Closed,
        }
    };
    let timer = async {
        if wait_ms > 0 {
            rt.sleep(Duration::from_millis(wait_ms)).await;
        }
        Wake::Timer
    };
    let stopped = async {
        let _ = stop.recv().await;
        Wake::Stop
    };
    future::or(stopped, future::or(batch, timer)).await
}

/// What the loop remembers between tasks.
struct Loop {
    node_id: u64,
    started: Instant,
    applied: u64,
    /// (term, leader id) last reported.
    leader: (u64, u64),
}

impl Loop {
    fn on_task(&mut self, node: &mut sluice_raft::Node, group: u64, task: Task) {
        let node_id = self.node_id;
        match task {
            Task::Persist(_) | Task::Send(_) => unreachable!("handled by the loop / Node"),
            Task::Apply(apply) => {
                let index = match &apply {
                    Apply::Entries(es) => es.last().map_or(self.applied, |e| e.index),
                    Apply::Snapshot(s) => s.metadata.as_ref().map_or(self.applied, |m| m.index),
                };
                // No metadata state machine yet: applying is recording the index.
                self.applied = self.applied.max(index);
                debug!(node_id, group, applied = self.applied, "applied");
                if let Err(e) = node.applied(group, self.applied) {
                    warn!(node_id, group, error = %e, "applied failed");
                }
            }
            Task::RoleChanged(rc) => {
                debug!(node_id, group, role = ?rc.role, term = rc.term, leader_id = rc.leader_id, "meta role changed");
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
            Task::SnapshotWanted => {
                // No state machine image yet: an empty image at the applied index.
                if let Err(e) = node.compact(group, self.applied, Vec::new()) {
                    warn!(node_id, group, error = %e, "compaction for a snapshot failed");
                }
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
