//! The Raft log of one group as raft-rs reads it: hard state, conf state, the latest snapshot
//! and the entries after it.
//!
//! [`LogStore`] is deliberately a plain in-memory value with no locks and no I/O. The driver
//! writes every ready into it *before* handing the same bytes to the runtime to persist (raft-rs's
//! asynchronous ready flow requires that unpersisted entries are already readable), so it is the
//! node's view of its log. The simulator also uses a second `LogStore` per group as the "disk":
//! it applies [`crate::Persist`] tasks to it when a simulated write completes, and rebuilds a
//! crashed node from it. A disk-backed store for partitions keeps this shape, with the entries
//! living in the partition's segment files (see docs/raft.md).

use std::cell::Cell;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::driver::Persist;

/// In-memory Raft log of one group (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Latest snapshot; its metadata index/term mark where `entries` begin (index + 1).
    snapshot: Snapshot,
    /// Entries with contiguous indexes starting at `snapshot_index() + 1`.
    entries: Vec<Entry>,
    /// Set when raft-rs asked for a snapshot this store cannot serve (stale or missing the
    /// recipient in its membership); the driver turns it into [`crate::Task::SnapshotWanted`].
    snapshot_wanted: Cell<bool>,
}

/// Index of the bootstrap snapshot every initial replica starts from. Keeping index 0 "compacted"
/// means a replica that joins later (with an empty log) is always seeded by a snapshot, which
/// carries the membership; replaying from index 1 could not, because the initial membership is
/// not in the log. Its term is 0, so the first election still produces term 1.
pub const BOOTSTRAP_INDEX: u64 = 1;

impl LogStore {
    /// An initial replica of a new group whose voters are `voters` (every initial replica must
    /// start with the same list). The log starts after the bootstrap snapshot at
    /// [`BOOTSTRAP_INDEX`].
    pub fn new(voters: &[u64]) -> Self {
        let conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let snapshot = Snapshot {
            data: Vec::new(),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(conf_state.clone()),
                index: BOOTSTRAP_INDEX,
                term: 0,
            }),
        };
        LogStore {
            hard_state: HardState {
                commit: BOOTSTRAP_INDEX,
                ..Default::default()
            },
            conf_state,
            snapshot,
            entries: Vec::new(),
            snapshot_wanted: Cell::new(false),
        }
    }

    /// A replica added to an existing group by a membership change: empty until the leader's
    /// snapshot (which must list it) arrives.
    pub fn joining() -> Self {
        LogStore::default()
    }

    /// Takes the "raft-rs wanted a fresher snapshot" flag (see [`crate::Task::SnapshotWanted`]).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Index of the last entry covered by the snapshot (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.metadata.as_ref().map_or(0, |m| m.index)
    }

    fn snapshot_term(&self) -> u64 {
        self.snapshot.metadata.as_ref().map_or(0, |m| m.term)
    }

    /// Index of the first entry still held (snapshot index + 1 when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    /// Index of the last entry (the snapshot index when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// The persisted hard state (term, vote, commit).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The membership as of the last applied configuration change or snapshot.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot (metadata and state-machine data).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        self.entries.get((index - self.first_index()) as usize)
    }

    /// All held entries, in index order.
    pub fn entries_slice(&self) -> &[Entry] {
        &self.entries
    }

    /// Term of the entry at `index`, including the snapshot's last index.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot_term());
        }
        self.entry(index).map(|e| e.term)
    }

    /// Appends entries, first truncating any held entries at or after the first new index
    /// (a new leader overwriting an uncommitted suffix).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index >= self.first_index(),
            "append at {} overwrites compacted log (first {})",
            first.index,
            self.first_index()
        );
        assert!(
            first.index <= self.last_index() + 1,
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index()
        );
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        // The held prefix was checked when it was appended: check the new entries and the
        // seam only, so a long log does not make every append quadratic in debug builds.
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|l| first.index == l.index + 1 && first.term >= l.term)
                && entries
                    .windows(2)
                    .all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term)
        );
        self.entries.extend_from_slice(entries);
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, mut hs: HardState) {
        // A ready's hard state can be written after a compaction past its commit index (the
        // entries were applied meanwhile): what was compacted is committed, so a restart must
        // never see commit below the snapshot (the server's store keeps the same floor).
        hs.commit = hs.commit.max(self.snapshot_index());
        self.hard_state = hs;
    }

    /// Records the membership after applying a configuration change.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Installs a snapshot received from the leader: the log restarts after its index.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        let meta = snapshot.metadata.clone().unwrap_or_default();
        // Keep entries past the snapshot only if they agree with it (raft-rs never relies on it,
        // but it keeps the store's invariant simple: entries start at snapshot index + 1).
        self.entries.clear();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.conf_state.clone().unwrap_or_default();
        self.snapshot = snapshot.clone();
    }

    /// Applies one persist task in the order raft-rs requires: snapshot, entries, hard state.
    pub fn apply_persist(&mut self, persist: &Persist) {
        if let Some(snapshot) = &persist.snapshot {
            self.apply_snapshot(snapshot);
        }
        self.append(&persist.entries);
        if let Some(hs) = &persist.hard_state {
            self.set_hard_state(hs.clone());
        }
    }

    /// Log retention: drops entries up to and including `index`, which becomes the snapshot
    /// point, with `data` as the state machine's image at that index. The caller must only pass
    /// an applied (hence committed and persisted) index.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        if index <= self.snapshot_index() {
            return;
        }
        let term = self.term_of(index).expect("compact index must be held");
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        // An applied index is committed; record it so a restart never sees commit < snapshot.
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.snapshot = Snapshot {
            data,
            metadata: Some(SnapshotMetadata {
                conf_state: Some(self.conf_state.clone()),
                index,
                term,
            }),
        };
        debug_assert_eq!(self.first_index(), index + 1);
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index() + 1,
            "entries({low}, {high}) past last index {}",
            self.last_index()
        );
        let offset = self.first_index();
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot_term());
        }
        if index < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry(index)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(LogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(LogStore::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self
            .snapshot
            .metadata
            .as_ref()
            .and_then(|m| m.conf_state.as_ref());
        let lists_recipient = cs.is_some_and(|cs| {
            cs.voters.contains(&to)
                || cs.learners.contains(&to)
                || cs.voters_outgoing.contains(&to)
                || cs.learners_next.contains(&to)
        });
        // The bootstrap snapshot (term 0) is never sent: it carries the group's first voters,
        // not the current ones, and raft-rs takes a term-0 snapshot as matching an empty log
        // (the term of an index it does not hold reads 0), so a joining replica would
        // fast-forward its commit past its log and panic. Only an image of real entries goes.
        let bootstrap = self.snapshot_term() == 0;
        if self.snapshot_index() < request_index || !lists_recipient || bootstrap {
            // The runtime builds a newer image (Driver::compact); raft-rs retries on the next
            // heartbeat response.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = LogStore::new(&[1, 2, 3]);
        s.append(&[entry(2, 1), entry(3, 1), entry(4, 1)]);
        s.append(&[entry(3, 2)]);
        assert_eq!(s.last_index(), 3);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(BOOTSTRAP_INDEX).unwrap(), 0);
    }

    #[test]
    fn compact_then_snapshot_and_errors() {
        let mut s = LogStore::new(&[1, 2, 3]);
        s.append(&(2..=10).map(|i| entry(i, 1)).collect::<Vec<_>>());
        s.compact(6, b"image".to_vec());
        assert_eq!(LogStore::first_index(&s), 7);
        assert_eq!(s.term(6).unwrap(), 1);
        assert!(matches!(
            s.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snap = s.snapshot(0, 2).unwrap();
        assert_eq!(snap.metadata.as_ref().unwrap().index, 6);
        assert_eq!(snap.data, b"image");

        // A replica not listed in the snapshot's membership needs a fresher one.
        assert!(matches!(
            s.snapshot(0, 4),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(s.take_snapshot_wanted());
        assert!(!s.take_snapshot_wanted());

        let mut follower = LogStore::joining();
        follower.apply_snapshot(&snap);
        assert_eq!(follower.last_index(), 6);
        assert_eq!(follower.hard_state().commit, 6);
        follower.append(&[entry(7, 1)]);
        assert_eq!(
            follower
                .entries(7, 8, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
    }
}
