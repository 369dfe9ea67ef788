//! Where leadership should go: back to a partition's preferred replica (Kafka's auto leader
//! rebalance), and away from this node when it shuts down.

use sluice_raft::PeerProgress;

/// Leadership of a group is handed to `preferred` once it is live and holds the whole log.
pub fn preferred_ready(preferred: u64, last_index: u64, progress: &[PeerProgress]) -> bool {
    progress
        .iter()
        .any(|pr| pr.id == preferred && pr.recent_active && !pr.learner && pr.matched >= last_index)
}

/// On shutdown, a group goes to the live follower with the longest log, if it lacks at most
/// the last entry (it catches up within one round trip); `None`: nobody to hand it to.
pub fn handoff_target(me: u64, last_index: u64, progress: &[PeerProgress]) -> Option<u64> {
    progress
        .iter()
        .filter(|pr| pr.id != me && pr.recent_active && !pr.learner)
        .max_by_key(|pr| pr.matched)
        .filter(|pr| pr.matched + 1 >= last_index)
        .map(|pr| pr.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::pr;

    #[test]
    fn the_preferred_replica_gets_leadership_back_only_when_live_and_caught_up() {
        assert!(!preferred_ready(2, 50, &[pr(1, 50, true), pr(2, 49, true)]));
        assert!(!preferred_ready(
            2,
            50,
            &[pr(1, 50, true), pr(2, 50, false)]
        ));
        assert!(preferred_ready(2, 50, &[pr(1, 50, true), pr(2, 50, true)]));
        assert!(!preferred_ready(3, 50, &[pr(1, 50, true), pr(2, 50, true)]));
    }

    #[test]
    fn hand_off_goes_to_the_live_follower_with_the_longest_log() {
        let progress = [pr(1, 100, true), pr(2, 99, true), pr(3, 100, false)];
        assert_eq!(handoff_target(1, 100, &progress), Some(2));
        let behind = [pr(1, 100, true), pr(2, 90, true)];
        assert_eq!(handoff_target(1, 100, &behind), None);
        assert_eq!(handoff_target(1, 100, &[pr(1, 100, true)]), None);
    }
}
