//! Raft's safety properties, checked on every simulator event.
//!
//! - Election safety: at most one leader per term per group.
//! - Log matching: two logs holding an entry with the same index and term hold the same entry
//!   there (checked on every persisted entry) and agree on every entry before it (checked
//!   across all live replicas periodically and at the end).
//! - Leader completeness / no committed entry lost or changed: every entry any replica applied
//!   is committed; every new leader's log holds all of them, with the same term.
//! - State machine safety: replicas apply the same entries in the same order, without gaps, and
//!   snapshots restore exactly the state at their index (hash chain over applied entries).
//! - Linearizable reads: a ReadIndex answer is at least the highest index applied anywhere
//!   when the read was issued.

use std::collections::{BTreeMap, HashMap};

use raft::eraftpb::{Entry, Snapshot};

use crate::GroupId;
use crate::sim::Fnv;
use crate::storage::LogStore;

/// Fingerprint of an entry's content.
pub fn entry_hash(entry: &Entry) -> u64 {
    Fnv::default()
        .u64(entry.entry_type as u64)
        .bytes(&entry.data)
        .finish()
}

/// Next value of a replica's state hash chain after applying `entry`.
pub fn chain_next(chain: u64, entry: &Entry) -> u64 {
    Fnv::default()
        .u64(chain)
        .u64(entry.index)
        .u64(entry.term)
        .u64(entry_hash(entry))
        .finish()
}

/// A replica's state machine: how far it applied and the hash chain of what it applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Last applied index.
    pub applied: u64,
    /// Hash chain over every applied entry.
    pub chain: u64,
}

impl StateMachine {
    /// Serialized image, stored as snapshot data.
    pub fn image(&self) -> Vec<u8> {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend_from_slice(&self.chain.to_le_bytes());
        v
    }

    /// Parses an image made by [`StateMachine::image`].
    pub fn from_image(data: &[u8]) -> Option<Self> {
        if data.len() != 16 {
            return None;
        }
        Some(StateMachine {
            applied: u64::from_le_bytes(data[..8].try_into().ok()?),
            chain: u64::from_le_bytes(data[8..].try_into().ok()?),
        })
    }
}

#[derive(Debug, Default)]
struct GroupState {
    /// term → the node that led it.
    leaders: BTreeMap<u64, u64>,
    /// (index, term) → entry fingerprint, for everything ever persisted.
    seen: HashMap<(u64, u64), u64>,
    /// Committed entries as (term, fingerprint), index i at position i - 1.
    committed: Vec<(u64, u64)>,
    /// Per committed entry: highest leader term seen when it was first applied. The entry was
    /// committed in a term no higher, so every leader of a later term must hold it. (A stale
    /// leader of an older term, elected late by delayed votes, legitimately may not.)
    commit_bound: Vec<u64>,
    /// Highest term any leader had so far.
    max_leader_term: u64,
    /// Hash chain after index i at position i (position 0 = empty state).
    chains: Vec<u64>,
}

/// Accumulates the cluster-wide history and reports the first violation.
#[derive(Debug, Default)]
pub struct Checker {
    groups: BTreeMap<GroupId, GroupState>,
}

/// A broken safety property, with enough context to start debugging from the replay.
pub type Violation = String;

impl Checker {
    fn group(&mut self, group: GroupId) -> &mut GroupState {
        self.groups.entry(group).or_insert_with(|| GroupState {
            // Index 1 is the bootstrap snapshot: committed, term 0, empty state.
            committed: vec![(0, 0)],
            commit_bound: vec![0],
            chains: vec![0, 0],
            ..Default::default()
        })
    }

    /// Highest index applied by any replica of `group` (hence committed).
    pub fn committed_len(&self, group: GroupId) -> u64 {
        self.groups
            .get(&group)
            .map_or(0, |g| g.committed.len() as u64)
    }

    /// Election safety, then leader completeness against the new leader's log.
    pub fn on_leader(
        &mut self,
        node: u64,
        group: GroupId,
        term: u64,
        store: &LogStore,
    ) -> Result<(), Violation> {
        let g = self.group(group);
        if let Some(&other) = g.leaders.get(&term)
            && other != node
        {
            return Err(format!(
                "election safety: group {group} term {term} has leaders {other} and {node}"
            ));
        }
        g.leaders.insert(term, node);
        g.max_leader_term = g.max_leader_term.max(term);
        let snap = store.snapshot_index();
        for (i, &(cterm, chash)) in g.committed.iter().enumerate() {
            let index = i as u64 + 1;
            if index < snap || g.commit_bound[i] >= term {
                continue;
            }
            match store.term_of(index) {
                Some(t) if t == cterm => {}
                other => {
                    return Err(format!(
                        "leader completeness: group {group} leader {node} term {term} has term {other:?} at committed index {index} (committed term {cterm})"
                    ));
                }
            }
            if let Some(e) = store.entry(index)
                && entry_hash(e) != chash
            {
                return Err(format!(
                    "leader completeness: group {group} leader {node} has different data at committed index {index}"
                ));
            }
        }
        Ok(())
    }

    /// Log matching (same index and term ⇒ same entry) on every write reaching the disk queue.
    pub fn on_persist(
        &mut self,
        node: u64,
        group: GroupId,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), Violation> {
        let g = self.group(group);
        for e in entries {
            let h = entry_hash(e);
            if let Some(&prev) = g.seen.get(&(e.index, e.term)) {
                if prev != h {
                    return Err(format!(
                        "log matching: group {group} node {node} index {} term {} differs from another replica's",
                        e.index, e.term
                    ));
                }
            } else {
                g.seen.insert((e.index, e.term), h);
            }
        }
        if let Some(s) = snapshot {
            let meta = s.metadata.clone().unwrap_or_default();
            if meta.index >= 1
                && let Some(&(cterm, _)) = g.committed.get(meta.index as usize - 1)
                && cterm != meta.term
            {
                return Err(format!(
                    "snapshot: group {group} node {node} snapshot at {} has term {} but committed term {cterm}",
                    meta.index, meta.term
                ));
            }
        }
        Ok(())
    }

    /// State machine safety for one applied entry; returns the replica's new state.
    pub fn on_apply(
        &mut self,
        node: u64,
        group: GroupId,
        sm: StateMachine,
        entry: &Entry,
    ) -> Result<StateMachine, Violation> {
        let g = self.group(group);
        if entry.index != sm.applied + 1 {
            return Err(format!(
                "apply order: group {group} node {node} applied {} after {}",
                entry.index, sm.applied
            ));
        }
        let h = entry_hash(entry);
        let next = StateMachine {
            applied: entry.index,
            chain: chain_next(sm.chain, entry),
        };
        let i = entry.index as usize;
        if i <= g.committed.len() {
            let (cterm, chash) = g.committed[i - 1];
            if cterm != entry.term || chash != h {
                return Err(format!(
                    "committed entry changed: group {group} node {node} applied index {i} term {} but committed term {cterm} (same data: {})",
                    entry.term,
                    chash == h
                ));
            }
            if g.chains[i] != next.chain {
                return Err(format!(
                    "state divergence: group {group} node {node} hash chain differs at {i}"
                ));
            }
        } else {
            debug_assert_eq!(i, g.committed.len() + 1);
            g.committed.push((entry.term, h));
            g.commit_bound.push(g.max_leader_term);
            g.chains.push(next.chain);
        }
        Ok(next)
    }

    /// A snapshot install must land exactly on a state some replica had.
    pub fn on_restore(
        &mut self,
        node: u64,
        group: GroupId,
        snapshot: &Snapshot,
    ) -> Result<StateMachine, Violation> {
        let meta = snapshot.metadata.clone().unwrap_or_default();
        let sm = StateMachine::from_image(&snapshot.data).unwrap_or(StateMachine {
            applied: crate::storage::BOOTSTRAP_INDEX,
            chain: 0,
        });
        let g = self.group(group);
        if sm.applied != meta.index {
            return Err(format!(
                "snapshot: group {group} node {node} image at {} but metadata index {}",
                sm.applied, meta.index
            ));
        }
        match g.chains.get(meta.index as usize) {
            Some(&c) if c == sm.chain => Ok(sm),
            Some(_) => Err(format!(
                "snapshot: group {group} node {node} image at {} differs from applied history",
                meta.index
            )),
            None => Err(format!(
                "snapshot: group {group} node {node} image at {} beyond anything applied",
                meta.index
            )),
        }
    }

    /// Full log matching between two replicas: agreeing at some (index, term) means agreeing
    /// on every overlapping entry before it.
    pub fn compare_logs(
        group: GroupId,
        (na, a): (u64, &LogStore),
        (nb, b): (u64, &LogStore),
    ) -> Result<(), Violation> {
        let lo = a.first_index().max(b.first_index());
        let hi = a.last_index().min(b.last_index());
        if lo > hi {
            return Ok(());
        }
        let mut top = None;
        for i in (lo..=hi).rev() {
            if a.term_of(i) == b.term_of(i) {
                top = Some(i);
                break;
            }
        }
        let Some(top) = top else { return Ok(()) };
        for i in lo..=top {
            let (ea, eb) = (a.entry(i).expect("held"), b.entry(i).expect("held"));
            if ea.term != eb.term || ea.data != eb.data || ea.entry_type != eb.entry_type {
                return Err(format!(
                    "log matching: group {group} nodes {na} and {nb} agree at index {top} but differ at {i} (terms {} vs {})",
                    ea.term, eb.term
                ));
            }
        }
        Ok(())
    }

    /// Number of distinct terms that had a leader in `group`.
    pub fn leader_terms(&self, group: GroupId) -> usize {
        self.groups.get(&group).map_or(0, |g| g.leaders.len())
    }
}
