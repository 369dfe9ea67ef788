//! The commit check: every index a leader commits is on the disks of a majority of the voters
//! its commit counts, and while its group is joint, of a majority of the old voters as well
//! (Raft's joint consensus: no commit without a joint majority, across every membership
//! change the simulator makes).

use std::collections::{BTreeMap, BTreeSet};

use sluice_raft::Persist;
use sluice_raft::eraftpb::ConfState;

/// The voters whose majority commits, and while joint, the old voters whose majority it
/// needs too (empty otherwise).
pub(super) type Quorum = (Vec<u64>, Vec<u64>);

/// Whether `holders` include a majority of the voters and, in a joint configuration, of the
/// outgoing voters too.
pub(super) fn quorum_holds(holders: &BTreeSet<u64>, (incoming, outgoing): &Quorum) -> bool {
    let majority = |voters: &[u64]| {
        voters.is_empty()
            || voters.iter().filter(|v| holders.contains(v)).count() > voters.len() / 2
    };
    !incoming.is_empty() && majority(incoming) && majority(outgoing)
}

/// Slice equality without a `memcmp` call: this runs after every step of every node, on
/// lists of a few voters.
fn same(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// What every node wrote, and what every leader committed.
#[derive(Default)]
pub(super) struct Commits {
    /// (group, index, term) → the nodes that wrote that entry to disk. Never forgotten: a disk
    /// lost later does not undo the acknowledgement its write allowed.
    held: BTreeMap<(u64, u64, u64), BTreeSet<u64>>,
    /// group → node → the highest snapshot index the node wrote (it stands for every entry
    /// up to there).
    snapshots: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// (node, group) → the term, commit index and quorum its leader was last seen with.
    led: BTreeMap<(u64, u64), (u64, u64, Quorum)>,
    /// Joint configurations a leader was seen in: (group, term, quorum).
    joint: BTreeSet<(u64, u64, Quorum)>,
}

impl Commits {
    /// `node` wrote `p` to `group`'s Raft store (the write completed).
    pub(super) fn wrote(&mut self, node: u64, group: u64, p: &Persist) {
        if let Some(s) = &p.snapshot {
            let at = self
                .snapshots
                .entry(group)
                .or_default()
                .entry(node)
                .or_default();
            *at = (*at).max(s.get_metadata().index);
        }
        for e in &p.entries {
            self.held
                .entry((group, e.index, e.term))
                .or_default()
                .insert(node);
        }
    }

    /// After a step of `node`, leading `group` in `term` with commit index `commit` and
    /// membership `cs`: a commit index that moved must be held by a majority of the quorum the
    /// leader had before the step or has now (a membership change takes effect between the
    /// two, and only one can: the next needs a commit first). `term_of` looks up the term of
    /// an entry in the leader's log.
    pub(super) fn check(
        &mut self,
        node: u64,
        (group, term, commit, cs): (u64, u64, u64, &ConfState),
        term_of: impl Fn(u64) -> Option<u64>,
    ) -> Option<String> {
        let key = (node, group);
        let now_quorum = || (cs.voters.clone(), cs.voters_outgoing.clone());
        let before = match self.led.get_mut(&key) {
            // Nothing moved: no copy.
            Some(seen)
                if seen.0 == term
                    && seen.1 == commit
                    && same(&seen.2.0, &cs.voters)
                    && same(&seen.2.1, &cs.voters_outgoing) =>
            {
                return None;
            }
            Some(seen) => std::mem::replace(seen, (term, commit, now_quorum())),
            None => {
                self.led.insert(key, (term, commit, now_quorum()));
                // A leader is checked from the first step it is seen leading in (what it
                // committed as a follower was another leader's decision, checked there).
                return None;
            }
        };
        let quorum = now_quorum();
        if !quorum.1.is_empty() {
            self.joint.insert((group, term, quorum.clone()));
        }
        if before.0 != term || commit <= before.1 {
            return None;
        }
        let entry_term = term_of(commit)?;
        let mut holders = self
            .held
            .get(&(group, commit, entry_term))
            .cloned()
            .unwrap_or_default();
        if let Some(snapshots) = self.snapshots.get(&group) {
            holders.extend(
                snapshots
                    .iter()
                    .filter(|(_, at)| **at >= commit)
                    .map(|(n, _)| *n),
            );
        }
        if quorum_holds(&holders, &before.2) || quorum_holds(&holders, &quorum) {
            return None;
        }
        Some(format!(
            "node {node} (leader of group {group} in term {term}) committed index {commit}, held only by {holders:?}: not a majority of voters {:?} (outgoing {:?})",
            quorum.0, quorum.1
        ))
    }

    /// Joint configurations leaders were seen in.
    pub(super) fn joint_configs(&self) -> usize {
        self.joint.len()
    }

    /// Of those, the swaps: voters both added and removed (the two majorities differ).
    pub(super) fn joint_swaps(&self) -> usize {
        self.joint
            .iter()
            .filter(|(_, _, (incoming, outgoing))| {
                incoming.iter().any(|v| !outgoing.contains(v))
                    && outgoing.iter().any(|v| !incoming.contains(v))
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[u64]) -> BTreeSet<u64> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_both_halves() {
        let simple: Quorum = (vec![1, 2, 3], vec![]);
        assert!(quorum_holds(&set(&[1, 3]), &simple));
        assert!(!quorum_holds(&set(&[3, 4]), &simple));
        // 1,2,3 → 1,2,4, joint.
        let joint: Quorum = (vec![1, 2, 4], vec![1, 2, 3]);
        assert!(quorum_holds(&set(&[1, 2]), &joint));
        // A majority of the new voters alone is not enough, nor of the old ones alone.
        assert!(!quorum_holds(&set(&[1, 4]), &joint));
        assert!(!quorum_holds(&set(&[2, 3]), &joint));
        assert!(quorum_holds(&set(&[2, 3, 4]), &joint));
        assert!(!quorum_holds(&set(&[1, 2]), &(vec![], vec![])));
    }
}
