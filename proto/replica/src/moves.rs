//! The next membership change of a partition whose replicas are moving (KIP-455 reassignment),
//! decided by its leader from the group's committed membership and its followers' progress.
//!
//! One change at a time, each of one node (a single-voter change is always safe in Raft and
//! needs no joint state; raft-rs would make a change of several nodes joint): new replicas
//! join as learners, one by one, and receive the log (a snapshot first) without voting; each is
//! promoted once it has caught up, so the quorum never waits on a replica still copying; then
//! the replicas left behind are removed one by one. A leader never removes itself (raft-rs
//! would keep a removed leader leading): it hands leadership to a wanted voter first, and the
//! new leader carries on.

use sluice_raft::PeerProgress;
use sluice_raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};

/// A learner within this many entries of the commit index counts as caught up.
pub const CAUGHT_UP_ENTRIES: u64 = 64;
/// ... and only if its node was heard from within this long (ms): three heartbeats.
pub const HEARD_WITHIN_MS: u64 = 450;

/// What the leader does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Propose this membership change.
    Change(ConfChangeV2),
    /// Hand leadership to this voter (this node is leaving the group).
    HandOver(u64),
    /// Nothing yet (a learner is catching up, or nobody can take over).
    Wait,
}

fn change(kind: ConfChangeType, nodes: impl IntoIterator<Item = u64>) -> Step {
    Step::Change(ConfChangeV2 {
        changes: nodes
            .into_iter()
            .map(|node_id| ConfChangeSingle {
                change_type: kind as i32,
                node_id,
            })
            .collect(),
        ..Default::default()
    })
}

/// Whether membership `cs` is `wanted` exactly (no learner, not joint) with `me` voting.
pub fn settled(me: u64, cs: &ConfState, wanted: &[u64]) -> bool {
    cs.learners.is_empty()
        && cs.voters_outgoing.is_empty()
        && cs.voters.len() == wanted.len()
        && wanted.iter().all(|w| cs.voters.contains(w))
        && cs.voters.contains(&me)
}

/// The next step from membership `cs` (not joint) towards voters `wanted` (in preference
/// order); `commit` is the leader's commit index, `log_start` the index its log was compacted
/// to (a replica below it still needs the snapshot and the records it stands for).
pub fn next_step(
    me: u64,
    cs: &ConfState,
    wanted: &[u64],
    (commit, log_start): (u64, u64),
    progress: &[PeerProgress],
) -> Step {
    let caught_up = |id: u64| {
        id == me
            || progress.iter().any(|p| {
                p.id == id
                    && p.recent_active
                    && !p.snapshotting
                    && p.matched >= log_start
                    && p.matched + CAUGHT_UP_ENTRIES >= commit
            })
    };
    // A leader whose own removal committed (it was elected before): someone wanted leads.
    if !cs.voters.contains(&me) {
        // A wanted voter if one is caught up, else any (a move redirected meanwhile).
        return wanted
            .iter()
            .chain(cs.voters.iter())
            .find(|w| cs.voters.contains(w) && caught_up(**w))
            .map_or(Step::Wait, |&to| Step::HandOver(to));
    }
    // Learners no longer wanted (a move cancelled or redirected).
    let stale: Vec<u64> = cs
        .learners
        .iter()
        .filter(|l| !wanted.contains(l))
        .copied()
        .collect();
    if let Some(&l) = stale.first() {
        return change(ConfChangeType::RemoveNode, [l]);
    }
    // New replicas start as learners.
    let new: Vec<u64> = wanted
        .iter()
        .filter(|w| !cs.voters.contains(w) && !cs.learners.contains(w))
        .copied()
        .collect();
    if let Some(&n) = new.first() {
        return change(ConfChangeType::AddLearnerNode, [n]);
    }
    // A caught-up learner becomes a voter.
    if !cs.learners.is_empty() {
        return match wanted
            .iter()
            .find(|w| cs.learners.contains(w) && caught_up(**w))
        {
            Some(&l) => change(ConfChangeType::AddNode, [l]),
            None => Step::Wait,
        };
    }
    // Every wanted replica votes: the others leave, this node last, after handing over. Only
    // once every wanted replica is caught up (Kafka completes a move once its target is in
    // sync): removing a replica that holds the log while a wanted one is down or was wiped
    // could leave the group without a majority that can elect a leader.
    let leaving: Vec<u64> = cs
        .voters
        .iter()
        .filter(|v| !wanted.contains(v))
        .copied()
        .collect();
    if !leaving.is_empty() && !wanted.iter().all(|w| caught_up(*w)) {
        return Step::Wait;
    }
    match leaving.iter().find(|&&v| v != me) {
        Some(&v) => change(ConfChangeType::RemoveNode, [v]),
        None if leaving.contains(&me) => wanted
            .iter()
            .find(|w| cs.voters.contains(w) && caught_up(**w))
            .map_or(Step::Wait, |&to| Step::HandOver(to)),
        None => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    fn pr(id: u64, matched: u64) -> PeerProgress {
        PeerProgress {
            id,
            matched,
            recent_active: true,
            snapshotting: false,
            learner: false,
        }
    }

    fn single(step: &Step) -> (ConfChangeType, Vec<u64>) {
        let Step::Change(cc) = step else {
            panic!("not a change: {step:?}")
        };
        (
            cc.changes[0].get_change_type(),
            cc.changes.iter().map(|c| c.node_id).collect(),
        )
    }

    #[test]
    fn a_move_adds_learners_promotes_them_when_caught_up_then_removes_the_old_replicas() {
        let progress = [pr(1, 100), pr(2, 100), pr(3, 100)];
        // 1,2,3 → 2,3,4: 4 joins as a learner.
        let step = next_step(1, &conf(&[1, 2, 3], &[]), &[2, 3, 4], (100, 0), &progress);
        assert_eq!(single(&step), (ConfChangeType::AddLearnerNode, vec![4]));
        // Still copying: wait.
        let copying = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 0)];
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[2, 3, 4], (100, 0), &copying);
        assert_eq!(step, Step::Wait);
        // Still needs the snapshot (its log ends before the leader's starts), however close
        // to the commit index: wait.
        let before_start = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 0)];
        let step = next_step(
            1,
            &conf(&[1, 2, 3], &[4]),
            &[2, 3, 4],
            (7, 5),
            &before_start,
        );
        assert_eq!(step, Step::Wait);
        // Caught up: promoted.
        let caught = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 99)];
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[2, 3, 4], (100, 0), &caught);
        assert_eq!(single(&step), (ConfChangeType::AddNode, vec![4]));
        // The leader (1) is leaving: it hands over to a caught-up wanted voter first.
        let step = next_step(1, &conf(&[1, 2, 3, 4], &[]), &[2, 3, 4], (100, 0), &caught);
        assert_eq!(step, Step::HandOver(2));
        // The new leader (2) removes 1.
        let step = next_step(2, &conf(&[1, 2, 3, 4], &[]), &[2, 3, 4], (100, 0), &caught);
        assert_eq!(single(&step), (ConfChangeType::RemoveNode, vec![1]));
    }

    #[test]
    fn a_replica_leaves_only_once_every_wanted_one_is_caught_up() {
        // 1,2,3 → 2,3 while 2 is down (not heard from): removing 1 would leave {2,3}, which
        // cannot commit or elect without 2. Wait.
        let two_down = [
            pr(1, 100),
            PeerProgress {
                recent_active: false,
                ..pr(2, 100)
            },
            pr(3, 100),
        ];
        let step = next_step(3, &conf(&[1, 2, 3], &[]), &[2, 3], (100, 0), &two_down);
        assert_eq!(step, Step::Wait);
        let all_up = [pr(1, 100), pr(2, 100), pr(3, 100)];
        let step = next_step(3, &conf(&[1, 2, 3], &[]), &[2, 3], (100, 0), &all_up);
        assert_eq!(single(&step), (ConfChangeType::RemoveNode, vec![1]));
    }

    #[test]
    fn cancelled_learners_are_removed_and_nobody_takes_over_from_a_lagging_voter() {
        let progress = [pr(1, 100), pr(2, 100)];
        let step = next_step(1, &conf(&[1, 2], &[3]), &[1, 2], (100, 0), &progress);
        assert_eq!(single(&step), (ConfChangeType::RemoveNode, vec![3]));
        // Moving off the leader to a voter that lags: wait.
        let lagging = [pr(1, 500), pr(2, 10)];
        assert_eq!(
            next_step(1, &conf(&[1, 2], &[]), &[2], (500, 0), &lagging),
            Step::Wait
        );
        // A leader elected after its own removal committed hands over to a wanted voter.
        assert_eq!(
            next_step(1, &conf(&[2, 3], &[]), &[2, 3], (100, 0), &progress),
            Step::HandOver(2)
        );
        // New replicas join one at a time (raft-rs would make a change of two joint).
        let step = next_step(1, &conf(&[1], &[]), &[1, 4, 5], (50, 0), &[pr(1, 50)]);
        assert_eq!(single(&step), (ConfChangeType::AddLearnerNode, vec![4]));
        // Replication factor 1 → another node: learner, voter, hand over, removed.
        let alone = [pr(1, 50)];
        let step = next_step(1, &conf(&[1], &[]), &[2], (50, 0), &alone);
        assert_eq!(single(&step), (ConfChangeType::AddLearnerNode, vec![2]));
    }
}
