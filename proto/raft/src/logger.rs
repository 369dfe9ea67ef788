//! Bridge from raft-rs's `slog` records to `tracing`, and the hook that keeps elections seeded.
//!
//! raft-rs 0.7 draws each randomized election timeout from `rand::thread_rng()`, which would
//! make simulator histories irreproducible. It always does so inside `Raft::reset`, and every
//! caller of `reset` (`become_follower`, `become_candidate`, `become_leader`) logs a
//! "became ..." record at info level right after. This drain counts those records; the driver
//! notices the count moved and overwrites the timeout with one from its own seeded PRNG
//! (`Raft::set_randomized_election_timeout`), before any tick can read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::GroupId;

/// slog drain that counts raft-rs's term/role resets and forwards records to `tracing`.
pub(crate) struct TracingDrain {
    node: u64,
    group: GroupId,
    resets: Arc<AtomicU64>,
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        if record.level() == slog::Level::Info {
            // Info records are rare (role changes, votes), so formatting them here is cheap.
            let msg = record.msg().to_string();
            if msg.starts_with("became follower")
                || msg.starts_with("became candidate")
                || msg.starts_with("became leader")
            {
                self.resets.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(target: "raft_rs", node = self.node, group = self.group, "{msg}");
        } else if tracing::enabled!(target: "raft_rs", tracing::Level::TRACE) {
            tracing::trace!(target: "raft_rs", node = self.node, group = self.group, "{}", record.msg());
        }
        Ok(())
    }
}

/// Builds the logger handed to `RawNode::new` and the reset counter it feeds.
pub(crate) fn raft_logger(node: u64, group: GroupId) -> (slog::Logger, Arc<AtomicU64>) {
    let resets = Arc::new(AtomicU64::new(0));
    let drain = TracingDrain {
        node,
        group,
        resets: resets.clone(),
    };
    (slog::Logger::root(drain, slog::o!()), resets)
}
