//! Which followers a partition leader counts as live: for the ISR it reports and for how far it
//! lets every replica drop its Raft log.

use std::collections::HashMap;

use sluice_raft::PeerProgress;

/// Since when each (group, follower) of a led group has been silent, sampled every
/// housekeeping round. raft-rs clears `recent_active` at every quorum check and sets it on every
/// message, so only a follower that stays silent keeps its entry here.
#[derive(Debug, Default)]
pub struct Silence {
    since: HashMap<(u64, u64), u64>,
}

impl Silence {
    /// Records one sample of `group`'s progress at `now`.
    pub fn sample(&mut self, group: u64, me: u64, progress: &[PeerProgress], now: u64) {
        for pr in progress {
            let key = (group, pr.id);
            if pr.id == me || pr.recent_active {
                self.since.remove(&key);
            } else {
                self.since.entry(key).or_insert(now);
            }
        }
    }

    /// Whether `peer` of `group` has been silent for `timeout` ms or more.
    pub fn gone(&self, group: u64, peer: u64, now: u64, timeout: u64) -> bool {
        self.since
            .get(&(group, peer))
            .is_some_and(|since| now.saturating_sub(*since) >= timeout)
    }

    /// Forgets groups this node no longer leads.
    pub fn retain_groups(&mut self, led: &[u64]) {
        debug_assert!(led.is_sorted());
        self.since.retain(|(g, _), _| led.binary_search(g).is_ok());
    }
}

/// The index every live replica of a led group holds (a replica silent for `timeout` does not
/// hold compaction back: it catches up from a snapshot when it returns); `None` if no replica
/// counts.
pub fn held_by_live(
    silence: &Silence,
    group: u64,
    progress: &[PeerProgress],
    now: u64,
    timeout: u64,
) -> Option<u64> {
    progress
        .iter()
        .filter(|pr| !silence.gone(group, pr.id, now, timeout))
        .map(|pr| pr.matched)
        .min()
}

/// Whether a leader should propose a compaction hint at `held`: every live replica holds
/// `step` more entries than at the last hint, or the log holds `bytes >= max_bytes`.
pub fn hint_due(held: u64, last: u64, step: u64, bytes: usize, max_bytes: usize) -> bool {
    held > last && (held >= last + step || bytes >= max_bytes)
}

/// The in-sync replicas of a led group: the leader, and every voting follower heard from
/// within the replica timeout that is not being sent a snapshot (it fell behind the retained
/// log). A learner (a replica being added) is not a replica of the partition yet.
pub fn in_sync(
    silence: &Silence,
    group: u64,
    me: u64,
    progress: &[PeerProgress],
    now: u64,
    timeout: u64,
) -> Vec<i32> {
    progress
        .iter()
        .filter(|pr| {
            pr.id == me
                || (!pr.learner && !silence.gone(group, pr.id, now, timeout) && !pr.snapshotting)
        })
        .map(|pr| pr.id as i32)
        .collect()
}

/// A follower's progress, for tests.
#[cfg(test)]
pub(crate) fn pr(id: u64, matched: u64, active: bool) -> PeerProgress {
    PeerProgress {
        id,
        matched,
        recent_active: active,
        snapshotting: false,
        learner: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_silent_past_the_timeout_leaves_the_isr_and_stops_holding_compaction() {
        let mut s = Silence::default();
        let progress = [pr(1, 100, true), pr(2, 90, true), pr(3, 10, false)];
        s.sample(7, 1, &progress, 1_000);
        // Silent, but not yet for the timeout: still in sync, still holds compaction at 10.
        assert_eq!(in_sync(&s, 7, 1, &progress, 1_500, 1_000), vec![1, 2, 3]);
        assert_eq!(held_by_live(&s, 7, &progress, 1_500, 1_000), Some(10));
        s.sample(7, 1, &progress, 2_000);
        assert_eq!(in_sync(&s, 7, 1, &progress, 2_000, 1_000), vec![1, 2]);
        assert_eq!(held_by_live(&s, 7, &progress, 2_000, 1_000), Some(90));
        // Heard from again: back at once.
        let back = [pr(1, 100, true), pr(2, 90, true), pr(3, 95, true)];
        s.sample(7, 1, &back, 2_100);
        assert_eq!(in_sync(&s, 7, 1, &back, 2_100, 1_000), vec![1, 2, 3]);
    }

    #[test]
    fn a_follower_being_sent_a_snapshot_is_not_in_sync() {
        let s = Silence::default();
        let mut lagging = pr(3, 5, true);
        lagging.snapshotting = true;
        let progress = [pr(1, 100, true), pr(2, 100, true), lagging];
        assert_eq!(in_sync(&s, 1, 1, &progress, 0, 1_000), vec![1, 2]);
    }

    #[test]
    fn hints_are_spaced_by_entries_or_forced_by_bytes() {
        assert!(!hint_due(10, 10, 5, 0, 100));
        assert!(!hint_due(14, 10, 5, 0, 100));
        assert!(hint_due(15, 10, 5, 0, 100));
        assert!(hint_due(11, 10, 5, 100, 100));
    }
}
