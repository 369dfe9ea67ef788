//! The next membership change of a Raft group whose replicas are moving (a KIP-455
//! reassignment, or `__meta`'s voters following the cluster's members), decided by its leader
//! from the group's committed membership and its followers' progress.
//!
//! One change at a time. New replicas join as learners, one by one, and receive the log (a
//! snapshot first) without voting, so the quorum never waits on a replica still copying. Once
//! they have caught up, the voters change in one joint-consensus step (a ConfChangeV2 with
//! the implicit transition): the learners are promoted and the replicas left behind removed
//! together, and while the group is joint every commit and election needs a majority of the
//! old voters and of the new ones. raft-rs leaves the joint configuration by itself once the
//! change is applied on the leader (a newly elected one included); should a leader ever find
//! its group joint with no change pending, it proposes the leave here. A leader never removes
//! itself (raft-rs would keep a removed leader leading): it hands
//! leadership to a wanted voter first, and the new leader carries on.

use sluice_raft::PeerProgress;
use sluice_raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};

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

/// A learner joins or leaves: one node, a simple change (learners are in no quorum).
fn learner_change(kind: ConfChangeType, node_id: u64) -> Step {
    Step::Change(ConfChangeV2 {
        changes: vec![ConfChangeSingle {
            change_type: kind as i32,
            node_id,
        }],
        ..Default::default()
    })
}

/// The voters change: learners `promoted`, voters `removed`, as one joint change that raft-rs
/// leaves by itself once it is applied.
fn joint_change(promoted: &[u64], removed: &[u64]) -> Step {
    let single = |kind: ConfChangeType, node_id: u64| ConfChangeSingle {
        change_type: kind as i32,
        node_id,
    };
    Step::Change(ConfChangeV2 {
        transition: ConfChangeTransition::Implicit as i32,
        changes: promoted
            .iter()
            .map(|&n| single(ConfChangeType::AddNode, n))
            .chain(
                removed
                    .iter()
                    .map(|&n| single(ConfChangeType::RemoveNode, n)),
            )
            .collect(),
        ..Default::default()
    })
}

/// Leaves a joint configuration (an empty ConfChangeV2).
fn leave_joint() -> Step {
    Step::Change(ConfChangeV2::default())
}

/// Whether membership `cs` is `wanted` exactly (no learner, not joint) with `me` voting.
pub fn settled(me: u64, cs: &ConfState, wanted: &[u64]) -> bool {
    cs.learners.is_empty()
        && cs.voters_outgoing.is_empty()
        && cs.voters.len() == wanted.len()
        && wanted.iter().all(|w| cs.voters.contains(w))
        && cs.voters.contains(&me)
}

/// The next step from membership `cs` towards voters `wanted` (in preference order); `commit`
/// is the leader's commit index, `log_start` the index its log was compacted to (a replica
/// below it still needs the snapshot and the records it stands for). Called only while no
/// membership change is pending.
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
    // A joint configuration is left before anything else changes (a safety net: raft-rs
    // proposes the leave itself once the joint change is applied on the leader).
    if !cs.voters_outgoing.is_empty() {
        return leave_joint();
    }
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
        return learner_change(ConfChangeType::RemoveNode, l);
    }
    // New replicas start as learners.
    let new: Vec<u64> = wanted
        .iter()
        .filter(|w| !cs.voters.contains(w) && !cs.learners.contains(w))
        .copied()
        .collect();
    if let Some(&n) = new.first() {
        return learner_change(ConfChangeType::AddLearnerNode, n);
    }
    let leaving: Vec<u64> = cs
        .voters
        .iter()
        .filter(|v| !wanted.contains(v))
        .copied()
        .collect();
    let ready: Vec<u64> = wanted
        .iter()
        .filter(|w| cs.learners.contains(w) && caught_up(**w))
        .copied()
        .collect();
    if leaving.is_empty() {
        // Growing: the caught-up learners become voters.
        return if ready.is_empty() {
            Step::Wait
        } else {
            joint_change(&ready, &[])
        };
    }
    // Replicas leave only once every wanted replica is caught up (Kafka completes a move once
    // its target is in sync): removing a replica that holds the log while a wanted one is down
    // or was wiped could leave the group without a majority that can elect a leader.
    if !wanted.iter().all(|w| caught_up(*w)) {
        return Step::Wait;
    }
    if leaving.contains(&me) {
        // This node leaves last: a wanted voter takes over first, or, if every wanted replica
        // is still a learner, they are promoted first so that one can.
        return match wanted
            .iter()
            .find(|w| cs.voters.contains(w) && caught_up(**w))
        {
            Some(&to) => Step::HandOver(to),
            None => joint_change(&ready, &[]),
        };
    }
    joint_change(&ready, &leaving)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};

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

    /// The change a step proposes, and whether raft-rs makes it joint.
    fn changes(step: &Step) -> (Vec<(ConfChangeType, u64)>, bool) {
        let Step::Change(cc) = step else {
            panic!("not a change: {step:?}")
        };
        (
            cc.changes
                .iter()
                .map(|c| (c.get_change_type(), c.node_id))
                .collect(),
            cc.enter_joint().is_some(),
        )
    }

    #[test]
    fn a_move_adds_learners_then_swaps_the_voters_in_one_joint_change() {
        let progress = [pr(1, 100), pr(2, 100), pr(3, 100)];
        // 1,2,3 → 1,2,4: 4 joins as a learner (a simple change: it is in no quorum).
        let step = next_step(1, &conf(&[1, 2, 3], &[]), &[1, 2, 4], (100, 0), &progress);
        assert_eq!(changes(&step), (vec![(AddLearnerNode, 4)], false));
        // Still copying: wait.
        let copying = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 0)];
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[1, 2, 4], (100, 0), &copying);
        assert_eq!(step, Step::Wait);
        // Still needs the snapshot (its log ends before the leader's starts), however close
        // to the commit index: wait.
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[1, 2, 4], (7, 5), &copying);
        assert_eq!(step, Step::Wait);
        // Caught up: 4 in and 3 out, in one joint change.
        let caught = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 99)];
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[1, 2, 4], (100, 0), &caught);
        assert_eq!(changes(&step), (vec![(AddNode, 4), (RemoveNode, 3)], true));
        // Joint (a leader elected before raft-rs left it): leave it first.
        let joint = ConfState {
            voters_outgoing: vec![1, 2, 3],
            auto_leave: true,
            ..conf(&[1, 2, 4], &[])
        };
        let step = next_step(2, &joint, &[1, 2, 4], (100, 0), &caught);
        assert_eq!(changes(&step), (vec![], false));
        assert!(matches!(&step, Step::Change(cc) if cc.leave_joint()));
    }

    #[test]
    fn a_leaving_leader_hands_over_and_the_new_leader_makes_the_swap() {
        let caught = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 99)];
        // 1,2,3 → 2,3,4 on leader 1: it hands over to a caught-up wanted voter first.
        let step = next_step(1, &conf(&[1, 2, 3], &[4]), &[2, 3, 4], (100, 0), &caught);
        assert_eq!(step, Step::HandOver(2));
        // The new leader (2) promotes 4 and removes 1 together.
        let step = next_step(2, &conf(&[1, 2, 3], &[4]), &[2, 3, 4], (100, 0), &caught);
        assert_eq!(changes(&step), (vec![(AddNode, 4), (RemoveNode, 1)], true));
        // Replication factor 1 → another node: learner, promoted (no other voter to take
        // over), hand over, then removed by the new leader.
        let alone = [pr(1, 50), pr(2, 50)];
        let step = next_step(1, &conf(&[1], &[2]), &[2], (50, 0), &alone);
        assert_eq!(changes(&step), (vec![(AddNode, 2)], true));
        let step = next_step(1, &conf(&[1, 2], &[]), &[2], (50, 0), &alone);
        assert_eq!(step, Step::HandOver(2));
        let step = next_step(2, &conf(&[1, 2], &[]), &[2], (50, 0), &alone);
        assert_eq!(changes(&step), (vec![(RemoveNode, 1)], true));
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
        assert_eq!(changes(&step), (vec![(RemoveNode, 1)], true));
        // Growing needs no one else: each caught-up learner is promoted.
        let growing = [pr(1, 100), pr(2, 100), pr(3, 100), pr(4, 100), pr(5, 0)];
        let step = next_step(
            1,
            &conf(&[1, 2, 3], &[4, 5]),
            &[1, 2, 3, 4, 5],
            (100, 0),
            &growing,
        );
        assert_eq!(changes(&step), (vec![(AddNode, 4)], true));
    }

    #[test]
    fn cancelled_learners_are_removed_and_nobody_takes_over_from_a_lagging_voter() {
        let progress = [pr(1, 100), pr(2, 100)];
        let step = next_step(1, &conf(&[1, 2], &[3]), &[1, 2], (100, 0), &progress);
        assert_eq!(changes(&step), (vec![(RemoveNode, 3)], false));
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
        // New replicas join one at a time.
        let step = next_step(1, &conf(&[1], &[]), &[1, 4, 5], (50, 0), &[pr(1, 50)]);
        assert_eq!(changes(&step), (vec![(AddLearnerNode, 4)], false));
    }
}
