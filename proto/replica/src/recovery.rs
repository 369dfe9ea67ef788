//! A node that starts with an empty data dir: new cluster, or lost state?
//!
//! Raft's safety rests on every voter remembering its vote. A node whose data dir was wiped
//! forgot it, and if it voted at once it could elect a second leader in a term that already has
//! one (with another node that never heard of that term), whose empty log would then overwrite
//! committed entries. Locally, a wiped node looks exactly like one starting a new cluster; only
//! its peers can tell. So a node that starts empty is *unsure*: it grants no vote and starts no
//! election until either
//! - every other voter says it is empty too (a new cluster: all nodes bootstrap together), or
//! - a peer says the cluster exists ([`PeerBatch::formed`](sluice_raft::PeerBatch)): the node
//!   is *recovering*, and each of its groups votes again only once it caught up with the commit
//!   index its leader sent it. Its acknowledgements of appended entries count as usual: it
//!   really holds what it acknowledges; only the vote was lost.
//!
//! A new cluster therefore forms only once all its bootstrap peers are up (a majority would
//! not do: two empty nodes cannot tell whether the third holds a cluster they lost).
//!
//! Catching up with a leader is not enough on its own: that leader may be a stale one (cut
//! off, still in an old term) while the term this node voted in before losing its state is
//! newer, and known only to the candidate it voted for. So before a group votes again, every
//! other voter of the group answers with its current term; the group then takes a term at
//! least their highest with its vote in it spent ([`Change::CaughtUp::term`]), so it only
//! ever votes in terms it cannot have voted in before. And the leader it caught up with must
//! lead in a term at least that highest one: a stale leader may lack entries this node
//! acknowledged before it lost them, committed by a newer leader with them (found by the
//! replica simulator's commit check, seed 4107: caught up with a leader of term 1 while the
//! other voter, down meanwhile, held an entry committed in term 2, the node was elected without
//! it and the two logs diverged).

use std::collections::{BTreeMap, BTreeSet};

/// Where this node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It kept its state (or the cluster bootstrapped, or it caught up): it votes.
    Member,
    /// Started empty; these peers said they are empty too.
    Unsure { empty_peers: BTreeSet<u64> },
    /// Started empty in a cluster that exists: catching up.
    Recovering,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Every voter is empty: a new cluster.
    Bootstrap,
    /// A peer holds the cluster: this node lost its state.
    Recovering { told_by: u64 },
    /// `group` caught up with its leader's commit index and votes again, in terms after
    /// `term` (the highest its other voters answered).
    CaughtUp { group: u64, commit: u64, term: u64 },
    /// `__meta` caught up and every group it hosts is open: the node is a member again.
    Member,
}

/// The recovery state of one node (see the module docs).
#[derive(Debug)]
pub struct Recovery {
    standing: Standing,
    /// Groups that may not vote yet → the highest commit index a leader sent them (0: none
    /// yet), and that leader's term (the newest term heard from a leader wins).
    behind: BTreeMap<u64, (u64, u64)>,
    /// Groups that may not vote yet → the current term each other voter answered.
    terms: BTreeMap<u64, BTreeMap<u64, u64>>,
}

impl Recovery {
    /// `empty`: the node's `__meta` never took part in a term (its data dir is new or wiped).
    pub fn new(empty: bool, meta_group: u64) -> Self {
        if empty {
            Recovery {
                standing: Standing::Unsure {
                    empty_peers: BTreeSet::new(),
                },
                behind: BTreeMap::from([(meta_group, (0, 0))]),
                terms: BTreeMap::new(),
            }
        } else {
            Recovery {
                standing: Standing::Member,
                behind: BTreeMap::new(),
                terms: BTreeMap::new(),
            }
        }
    }

    /// Where the node stands.
    pub fn standing(&self) -> &Standing {
        &self.standing
    }

    /// Whether `group` may grant votes and campaign.
    pub fn may_vote(&self, group: u64) -> bool {
        !self.behind.contains_key(&group)
    }

    /// Groups that may not vote yet.
    pub fn behind(&self) -> impl Iterator<Item = u64> + '_ {
        self.behind.keys().copied()
    }

    /// Groups that may not vote yet and the commit index their leader sent them (0: none yet).
    pub fn targets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.behind.iter().map(|(g, (t, _))| (*g, *t))
    }

    /// A batch from `peer`, whose `__meta` has (`formed`) or has not taken part in a term.
    pub fn heard(&mut self, peer: u64, formed: bool, voters: &[u64], me: u64) -> Option<Change> {
        let Standing::Unsure { empty_peers } = &mut self.standing else {
            return None;
        };
        if formed {
            self.standing = Standing::Recovering;
            return Some(Change::Recovering { told_by: peer });
        }
        empty_peers.insert(peer);
        let all = voters
            .iter()
            .filter(|&&v| v != me)
            .all(|v| empty_peers.contains(v));
        if all {
            self.standing = Standing::Member;
            self.behind.clear();
            self.terms.clear();
            return Some(Change::Bootstrap);
        }
        None
    }

    /// A group was opened: while the node is not a member, whatever the group holds is a
    /// partial copy at best, and it catches up before it votes.
    pub fn group_opened(&mut self, group: u64) {
        if self.standing != Standing::Member {
            self.behind.entry(group).or_insert((0, 0));
        }
    }

    /// A group was removed.
    pub fn group_removed(&mut self, group: u64) {
        self.behind.remove(&group);
        self.terms.remove(&group);
    }

    /// `peer` answered that its current term in `group` is `term`.
    pub fn term_heard(&mut self, group: u64, peer: u64, term: u64) {
        if self.behind.contains_key(&group) {
            let t = self
                .terms
                .entry(group)
                .or_default()
                .entry(peer)
                .or_insert(0);
            *t = (*t).max(term);
        }
    }

    /// Of `voters`, the ones (other than `me`) that have not answered for `group` yet.
    pub fn unanswered(&self, group: u64, voters: &[u64], me: u64) -> Vec<u64> {
        let answered = self.terms.get(&group);
        voters
            .iter()
            .copied()
            .filter(|v| *v != me && !answered.is_some_and(|a| a.contains_key(v)))
            .collect()
    }

    /// A leader of `term` said, in an append or heartbeat to `group`, that entries up to
    /// `commit` are committed.
    pub fn leader_commit(&mut self, group: u64, commit: u64, term: u64) {
        if let Some(target) = self.behind.get_mut(&group) {
            if term > target.1 {
                *target = (commit, term);
            } else if term == target.1 {
                target.0 = target.0.max(commit);
            }
        }
    }

    /// Releases the groups whose commit index (`commit_of`) reached what their leader said, and
    /// makes the node a member once `__meta` is released, applied that far, and no group is
    /// still being opened.
    ///
    /// `voters_of` gives a group's voters: all of them but this node must have answered their
    /// term (see the module docs).
    pub fn check(
        &mut self,
        meta_group: u64,
        commit_of: impl Fn(u64) -> Option<u64>,
        voters_of: impl Fn(u64) -> Vec<u64>,
        me: u64,
        meta_applied: u64,
        opening: bool,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if matches!(self.standing, Standing::Unsure { .. }) {
            return changes;
        }
        let terms = &mut self.terms;
        self.behind.retain(|&group, &mut (target, leader_term)| {
            let caught_up = target > 0 && commit_of(group).is_some_and(|c| c >= target);
            if !caught_up || (group == meta_group && meta_applied < target) {
                return true;
            }
            let answered = terms.get(&group);
            let voters = voters_of(group);
            let all = voters
                .iter()
                .all(|v| *v == me || answered.is_some_and(|a| a.contains_key(v)));
            if !all {
                return true;
            }
            let term = answered.map_or(0, |a| a.values().copied().max().unwrap_or(0));
            if leader_term < term {
                // Caught up with a leader older than another voter's term: wait for a newer
                // leader (see the module docs).
                return true;
            }
            terms.remove(&group);
            changes.push(Change::CaughtUp {
                group,
                commit: target,
                term,
            });
            false
        });
        let meta_done = !self.behind.contains_key(&meta_group);
        if self.standing == Standing::Recovering && meta_done && !opening {
            self.standing = Standing::Member;
            changes.push(Change::Member);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: u64 = 0;
    const VOTERS: [u64; 3] = [1, 2, 3];

    #[test]
    fn a_node_with_state_votes_from_the_start() {
        let r = Recovery::new(false, META);
        assert_eq!(r.standing(), &Standing::Member);
        assert!(r.may_vote(META));
    }

    #[test]
    fn an_empty_node_bootstraps_only_when_every_peer_is_empty() {
        let mut r = Recovery::new(true, META);
        assert!(!r.may_vote(META));
        assert_eq!(r.heard(2, false, &VOTERS, 1), None);
        assert!(
            !r.may_vote(META),
            "two empty nodes of three may be a wiped majority"
        );
        assert_eq!(r.heard(3, false, &VOTERS, 1), Some(Change::Bootstrap));
        assert!(r.may_vote(META));
    }

    #[test]
    fn an_empty_node_told_the_cluster_exists_votes_only_after_catching_up() {
        let mut r = Recovery::new(true, META);
        assert_eq!(r.heard(2, false, &VOTERS, 1), None);
        assert_eq!(
            r.heard(3, true, &VOTERS, 1),
            Some(Change::Recovering { told_by: 3 })
        );
        // Later batches change nothing, whatever they say.
        assert_eq!(r.heard(2, false, &VOTERS, 1), None);
        r.group_opened(7);
        assert!(!r.may_vote(7));
        // Every other voter answered its term in both groups (2's answer for 7 is the newest).
        for (g, peer, term) in [(META, 2, 3), (META, 3, 3), (7, 2, 5), (7, 3, 4)] {
            r.term_heard(g, peer, term);
        }
        // No leader heard yet: nothing is caught up, whatever the local commit.
        assert_eq!(
            r.check(META, |_| Some(5), |_| VOTERS.to_vec(), 1, 5, false),
            vec![]
        );
        r.leader_commit(META, 40, 3);
        r.leader_commit(7, 12, 5);
        let commits =
            |meta: u64, seven: u64| move |g: u64| Some(if g == META { meta } else { seven });
        assert_eq!(
            r.check(META, commits(39, 11), |_| VOTERS.to_vec(), 1, 39, false),
            vec![]
        );
        // Committed but not applied yet: the groups it creates may still be opening.
        assert_eq!(
            r.check(META, commits(40, 11), |_| VOTERS.to_vec(), 1, 30, false),
            vec![]
        );
        assert_eq!(
            r.check(META, commits(40, 11), |_| VOTERS.to_vec(), 1, 40, true),
            vec![Change::CaughtUp {
                group: META,
                commit: 40,
                term: 3
            }]
        );
        assert!(r.may_vote(META));
        assert_eq!(r.standing(), &Standing::Recovering, "a group is opening");
        assert_eq!(
            r.check(META, |_| Some(12), |_| VOTERS.to_vec(), 1, 40, false),
            vec![
                Change::CaughtUp {
                    group: 7,
                    commit: 12,
                    term: 5
                },
                Change::Member
            ]
        );
        assert!(r.may_vote(7));
        // Groups opened empty once the node is a member are new partitions: they vote.
        r.group_opened(9);
        assert!(r.may_vote(9));
    }

    #[test]
    fn a_caught_up_group_votes_again_only_once_every_other_voter_answered_its_term() {
        // Node 1 voted for node 2 in term 2, then lost its disk. Node 3, a stale leader still
        // in term 1, brings it up to date: without node 2's answer it may not vote, or it
        // could vote again in term 2 (and elect a second leader in it).
        let mut r = Recovery::new(true, META);
        r.heard(3, true, &VOTERS, 1);
        r.leader_commit(META, 10, 1);
        r.term_heard(META, 3, 1);
        let voters = |_| VOTERS.to_vec();
        assert_eq!(r.unanswered(META, &VOTERS, 1), vec![2]);
        assert_eq!(r.check(META, |_| Some(10), voters, 1, 10, false), vec![]);
        assert!(!r.may_vote(META));
        // Node 2 is in term 2: node 3's log (term 1) may lack entries committed in term 2
        // with node 1's acknowledgement before it lost them. Caught up with node 3, node 1
        // still waits, for a leader of term 2 or later.
        r.term_heard(META, 2, 2);
        assert_eq!(r.check(META, |_| Some(10), voters, 1, 10, false), vec![]);
        assert!(!r.may_vote(META));
        // A stale leader's later heartbeats change nothing.
        r.leader_commit(META, 12, 1);
        r.leader_commit(META, 11, 3);
        assert_eq!(r.check(META, |_| Some(10), voters, 1, 10, false), vec![]);
        assert_eq!(
            r.check(META, |_| Some(11), voters, 1, 11, false),
            vec![
                Change::CaughtUp {
                    group: META,
                    commit: 11,
                    term: 2
                },
                Change::Member
            ]
        );
        assert!(r.may_vote(META));
    }

    #[test]
    fn a_lone_node_bootstraps_alone() {
        let mut r = Recovery::new(true, META);
        // With no other voter, the first check after hearing nobody cannot decide; the
        // runtime reports "every peer empty" vacuously through `heard` on its own id.
        assert_eq!(r.heard(1, false, &[1], 1), Some(Change::Bootstrap));
    }
}
