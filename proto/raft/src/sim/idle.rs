//! Cost of idle groups: many groups on a few nodes with nothing to replicate but heartbeats.
//!
//! A fixed-step loop (1 ms) with a 1 ms network and an instant disk; after the warm-up every
//! group has a leader, then the thread's CPU time over the measured span is divided by the
//! simulated seconds. It includes the simulator's own work (encoding/decoding every batch as a
//! transport would), so it is an upper bound on the driver's cost.

use std::collections::VecDeque;
use std::time::Instant;

use crate::StateRole;
use crate::config::Config;
use crate::driver::{Apply, Task};
use crate::multi::Node;
use crate::storage::LogStore;
use crate::wire::PeerBatch;

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct IdleReport {
    /// Groups per node.
    pub groups: u64,
    /// Nodes.
    pub nodes: u64,
    /// Groups with a leader at the end.
    pub groups_led: u64,
    /// Simulated seconds measured.
    pub sim_secs: u64,
    /// CPU milliseconds (this thread, all nodes together) per simulated second.
    pub cpu_ms_per_sim_sec: f64,
    /// Of which inside `Node` calls (tick, step, poll), per simulated second.
    pub node_ms_per_sim_sec: f64,
    /// Peer batches sent per simulated second, all nodes.
    pub batches_per_sec: f64,
    /// Raft messages per simulated second, all nodes.
    pub msgs_per_sec: f64,
    /// Wire bytes per simulated second, all nodes.
    pub bytes_per_sec: f64,
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} idle groups x {} nodes ({} led), {} simulated s: {:.1} ms CPU per simulated s \
             ({:.1} ms in Node calls; {:.1}% of one core), {:.0} batches/s, {:.0} msgs/s, {:.0} KB/s on the wire",
            self.groups,
            self.nodes,
            self.groups_led,
            self.sim_secs,
            self.cpu_ms_per_sim_sec,
            self.node_ms_per_sim_sec,
            self.cpu_ms_per_sim_sec / 10.0,
            self.batches_per_sec,
            self.msgs_per_sec,
            self.bytes_per_sec / 1000.0
        )
    }
}

/// CPU time of the calling thread in nanoseconds (Linux schedstat), or wall time elsewhere.
fn thread_cpu_ns(fallback: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| fallback.elapsed().as_nanos() as u64)
}

/// Runs `groups` groups on `nodes` nodes for `warmup_secs + measure_secs` simulated seconds.
pub fn measure(groups: u64, nodes: u64, warmup_secs: u64, measure_secs: u64) -> IdleReport {
    let voters: Vec<u64> = (1..=nodes).collect();
    let mut ns: Vec<Node> = voters
        .iter()
        .map(|&id| {
            let mut n = Node::new(Config {
                seed: id * 7919,
                ..Config::new(id)
            })
            .expect("valid config");
            for g in 0..groups {
                n.add_group(g, LogStore::new(&voters), 0)
                    .expect("new group");
            }
            n
        })
        .collect();
    // (deliver at ms, bytes) per destination; constant delay keeps it FIFO.
    let mut inbox: Vec<VecDeque<(u64, Vec<u8>)>> = vec![VecDeque::new(); nodes as usize];
    let origin = Instant::now();
    let (mut batches, mut msgs, mut bytes) = (0u64, 0u64, 0u64);
    let mut node_ns = 0u64;
    let mut cpu_start = 0;
    let warmup_ms = warmup_secs * 1000;
    let total_ms = warmup_ms + measure_secs * 1000;
    for now_ms in 0..total_ms {
        if now_ms == warmup_ms {
            cpu_start = thread_cpu_ns(origin);
            (batches, msgs, bytes, node_ns) = (0, 0, 0, 0);
        }
        for i in 0..ns.len() {
            let t0 = Instant::now();
            ns[i].handle_timeout(now_ms);
            node_ns += t0.elapsed().as_nanos() as u64;
            while inbox[i].front().is_some_and(|(at, _)| *at <= now_ms) {
                let (_, b) = inbox[i].pop_front().expect("front");
                let batch = PeerBatch::decode_from(&b[..]).expect("decodes");
                let t0 = Instant::now();
                ns[i].step(batch);
                node_ns += t0.elapsed().as_nanos() as u64;
            }
            let t0 = Instant::now();
            loop {
                let mut progressed = false;
                while let Some((g, task)) = ns[i].poll_task() {
                    progressed = true;
                    match task {
                        Task::Persist(p) => ns[i].persisted(g, p.number).expect("hosted"),
                        Task::Apply(Apply::Entries(es)) => {
                            let last = es.last().map_or(0, |e| e.index);
                            ns[i].applied(g, last).expect("hosted");
                        }
                        Task::Apply(Apply::Snapshot(s)) => {
                            let idx = s.metadata.map_or(0, |m| m.index);
                            ns[i].applied(g, idx).expect("hosted");
                        }
                        _ => {}
                    }
                }
                while let Some(batch) = ns[i].poll_transmit() {
                    progressed = true;
                    batches += 1;
                    msgs += batch.messages.len() as u64;
                    let b = batch.encode();
                    bytes += b.len() as u64;
                    inbox[(batch.to - 1) as usize].push_back((now_ms + 1, b));
                }
                if !progressed {
                    break;
                }
            }
            node_ns += t0.elapsed().as_nanos() as u64;
        }
    }
    let cpu_ns = thread_cpu_ns(origin) - cpu_start;
    let groups_led = (0..groups)
        .filter(|&g| {
            ns.iter()
                .any(|n| n.group(g).is_some_and(|d| d.role() == StateRole::Leader))
        })
        .count() as u64;
    let secs = measure_secs.max(1) as f64;
    IdleReport {
        groups,
        nodes,
        groups_led,
        sim_secs: measure_secs,
        cpu_ms_per_sim_sec: cpu_ns as f64 / 1e6 / secs,
        node_ms_per_sim_sec: node_ns as f64 / 1e6 / secs,
        batches_per_sec: batches as f64 / secs,
        msgs_per_sec: msgs as f64 / secs,
        bytes_per_sec: bytes as f64 / secs,
    }
}
