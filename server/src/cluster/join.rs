//! `--join`: a new node asks a member of a running cluster for what it needs to start (the
//! cluster id, the voters `__meta` started with, every member's Raft address), retrying with
//! backoff until the member answers: the node may be started before `sluice cluster add-node`
//! is run, and it waits. The answer is recorded in the data dir, so a restart needs no member.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use sluice_proto::runtime::Runtime;
use sluice_transport_quic::{JoinConfig, NodeIdentity};
use tracing::{info, warn};

use super::cli::ClusterConfig;

/// Backoff between attempts: doubling from the first to the last.
const BACKOFF_MS: (u64, u64) = (500, 5000);
/// One attempt's bound.
const ATTEMPT_MS: u64 = 5000;

/// Asks `cc.join` until it answers (or `stop` fires), then completes `cc` and records it.
pub async fn join_cluster<R: Runtime>(
    rt: &R,
    cc: &mut ClusterConfig,
    tls: &NodeIdentity,
    data_dir: &Path,
    stop: &async_channel::Receiver<()>,
) -> anyhow::Result<()> {
    let node_id = cc.node_id;
    let Some(member) = cc.join else {
        return Ok(());
    };
    let given = if cc.cluster_id_given {
        cc.cluster_id.clone()
    } else {
        String::new()
    };
    let ask = JoinConfig {
        node_id,
        cluster_id: &given,
        member,
        tls,
    };
    let mut backoff = BACKOFF_MS.0;
    let mut attempts = 0u64;
    let roster = loop {
        attempts += 1;
        match sluice_transport_quic::join(&ask, super::quic_runtime(), ATTEMPT_MS).await {
            Ok(roster) => break roster,
            Err(e) => {
                // The first failure, then every 8th: a node waiting to be added says so without
                // flooding the log.
                if attempts == 1 || attempts.is_multiple_of(8) {
                    warn!(node_id, member = %member, attempts, error = %e, "joining the cluster: not yet (retrying)");
                }
            }
        }
        let sleep = rt.sleep(Duration::from_millis(backoff));
        if futures_lite::future::or(
            async {
                sleep.await;
                false
            },
            async {
                let _ = stop.recv().await;
                true
            },
        )
        .await
        {
            bail!("node {node_id}: stopped before it could join the cluster through {member}");
        }
        backoff = (backoff * 2).min(BACKOFF_MS.1);
    };
    if roster.initial.is_empty() {
        bail!(
            "node {node_id}: the member at {member} answered without the cluster's initial members"
        );
    }
    cc.cluster_id = roster.cluster_id.clone();
    cc.initial_members = roster.initial.clone();
    cc.joining = roster.fresh;
    for (id, addr) in &roster.peers {
        match sluice_transport_quic::parse_peer(&format!("{id}@{addr}")) {
            // This node's own entry: the address it was added with, which peers dial.
            Ok(peer) if *id == node_id => {
                cc.peers.retain(|(p, _)| *p != node_id);
                cc.peers.push(peer);
            }
            Ok(peer) => cc.peers.push(peer),
            Err(e) => {
                warn!(node_id, peer = id, error = %e, "a member's raft address does not parse")
            }
        }
    }
    cc.peers.sort();
    cc.peers.dedup_by_key(|p| p.0);
    info!(
        node_id,
        cluster_id = %cc.cluster_id,
        initial_members = ?cc.initial_members,
        peers = %super::cli::peers_string(&cc.peers),
        fresh = roster.fresh,
        "joined the cluster: starting as a new member"
    );
    if !roster.fresh {
        warn!(
            node_id,
            "the cluster knew this node before: starting empty, it recovers like a node that lost its data dir (it votes again once caught up)"
        );
    }
    super::node::record_cluster(data_dir, cc)
}
