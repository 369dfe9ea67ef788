//! Timing and sizing knobs shared by every group on a node.

use crate::error::{Error, Result};

/// Node-wide Raft configuration. Every group hosted by a node uses the same timing.
///
/// Defaults: a 50 ms tick, heartbeats every 150 ms and an election timeout drawn uniformly from
/// 1–2 s. With pre-vote and check-quorum on, a 3-node cluster started together elects in term 1
/// almost always (the simulator measures it), and a crashed leader is replaced in ≈ 1.5–2.5 s.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (non-zero; raft-rs reserves 0 for "nobody").
    pub node_id: u64,
    /// Length of one Raft tick in milliseconds of the caller's clock.
    pub tick_ms: u64,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: usize,
    /// Lower bound (inclusive) of the randomized election timeout, in ticks.
    pub election_ticks_min: usize,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    pub election_ticks_max: usize,
    /// Limit on the bytes of entries in one append message.
    pub max_size_per_msg_bytes: u64,
    /// Limit on in-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Limit on the messages queued for one peer before the node drops the oldest
    /// (Raft retries anything lost); keeps a dead peer from growing memory without bound.
    pub peer_queue_msgs_max: usize,
    /// Seed of the driver's own PRNG (election jitter). Pass OS entropy in production and a
    /// derived seed in the simulator.
    pub seed: u64,
    /// Idle partition groups stop ticking and heartbeating (`__meta` never does); see
    /// `driver/quiesce.rs` and the liveness notes in `multi.rs`.
    pub quiesce: bool,
}

impl Config {
    /// The defaults for `node_id` (see the type docs for the numbers).
    pub fn new(node_id: u64) -> Self {
        Config {
            node_id,
            tick_ms: 50,
            heartbeat_ticks: 3,
            election_ticks_min: 20,
            election_ticks_max: 40,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            peer_queue_msgs_max: 16 * 1024,
            seed: node_id,
            quiesce: true,
        }
    }

    /// Checks the invariants raft-rs would otherwise panic on.
    pub fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            return Err(Error::Config("node_id must be non-zero"));
        }
        if self.tick_ms == 0 {
            return Err(Error::Config("tick_ms must be positive"));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks_min <= self.heartbeat_ticks {
            return Err(Error::Config(
                "election timeout must exceed the heartbeat interval",
            ));
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(Error::Config(
                "election_ticks_max must exceed election_ticks_min",
            ));
        }
        Ok(())
    }

    /// The raft-rs configuration for one group, resuming after `applied`.
    pub(crate) fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.node_id,
            election_tick: self.election_ticks_min,
            heartbeat_tick: self.heartbeat_ticks,
            min_election_tick: self.election_ticks_min,
            max_election_tick: self.election_ticks_max,
            applied,
            max_size_per_msg: self.max_size_per_msg_bytes,
            max_inflight_msgs: self.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        }
    }
}
