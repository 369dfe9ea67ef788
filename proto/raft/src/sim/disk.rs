//! Simulated disk: persist tasks complete in order after a random delay; a crash loses every
//! write that has not completed. The durable state is one [`LogStore`] per group.

use std::collections::{BTreeMap, VecDeque};

use crate::GroupId;
use crate::driver::Persist;
use crate::rng::Rng;
use crate::storage::LogStore;

/// One node's disk.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// What survives a crash, per group.
    pub durable: BTreeMap<GroupId, LogStore>,
    /// Writes issued but not completed, oldest first.
    pending: VecDeque<(GroupId, Persist)>,
    /// Completion time of the newest pending write (writes complete in order).
    last_done_us: u64,
    /// Latency range of one write.
    pub latency_us: (u64, u64),
}

impl Disk {
    /// An empty disk whose writes take `latency_us` (uniform range).
    pub fn new(latency_us: (u64, u64)) -> Self {
        Disk {
            latency_us,
            ..Disk::default()
        }
    }

    /// Queues a write; returns when it completes.
    pub fn submit(&mut self, rng: &mut Rng, now_us: u64, group: GroupId, persist: Persist) -> u64 {
        let (low, high) = self.latency_us;
        let done = (now_us + rng.range(low, high.max(low + 1))).max(self.last_done_us);
        self.last_done_us = done;
        self.pending.push_back((group, persist));
        done
    }

    /// Completes the oldest pending write, making it durable.
    pub fn complete_one(&mut self) -> Option<(GroupId, u64)> {
        let (group, persist) = self.pending.pop_front()?;
        let store = self
            .durable
            .get_mut(&group)
            .expect("durable store exists for every hosted group");
        store.apply_persist(&persist);
        Some((group, persist.number))
    }

    /// A crash: pending writes are lost.
    pub fn crash(&mut self) {
        self.pending.clear();
        self.last_done_us = 0;
    }
}
