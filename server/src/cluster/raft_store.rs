//! The per-group Raft log layout of earlier versions, read once to migrate a group into the
//! node's write-ahead log ([`super::raft_wal`]), which replaced it.
//!
//! Layout of a group's directory (`DATA/raft/meta/` for `__meta`, `DATA/raft/g-<group>/`):
//!
//! - `log`: records `[u32 LE payload length][u32 LE CRC-32C of payload][payload]`, one per
//!   entry, payload = the protobuf-encoded `eraftpb::Entry`; a later record with a lower index
//!   overwrote the suffix from there. A torn or corrupt tail is cut off at the first bad record.
//! - `hard_state`: term, vote and commit (one record), replaced atomically.
//! - `snapshot`: the latest snapshot or compaction point (protobuf `eraftpb::Snapshot`).

use std::fs::{self, File, OpenOptions};
#[cfg(test)]
use std::io::Write;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use prost::Message as _;
use sluice_raft::LogStore;

use super::raft_wal::{RECORD_HEADER_BYTES, bad_data, decode_checked};
#[cfg(test)]
use sluice_raft::Persist;
use sluice_raft::eraftpb::{Entry, HardState, Snapshot};

/// The files of one group (see the module docs).
/// Its writers are kept for tests (migration fixtures): outside them the fields go unread.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub struct RaftStore {
    dir: PathBuf,
    log: File,
    /// Hard state received with a non-syncing persist, not yet written.
    pending_hard_state: Option<HardState>,
    /// The snapshot index: no hard state with a lower commit is ever written (a restart would
    /// find commit < snapshot).
    min_commit: u64,
}

/// What [`RaftStore::open`] found (the migration needs only the log).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub struct Loaded {
    /// The rebuilt in-memory log for the driver.
    pub store: LogStore,
    /// Bytes cut off a torn or corrupt tail, and why.
    pub truncated: Option<(u64, String)>,
}

impl RaftStore {
    /// Opens (creating) the group's directory and rebuilds its log. `voters` are the initial
    /// voters of a fresh group (every initial replica must use the same list).
    pub fn open(dir: &Path, voters: &[u64]) -> io::Result<(RaftStore, Loaded)> {
        fs::create_dir_all(dir)?;
        let mut store = LogStore::new(voters);
        let snap_path = dir.join("snapshot");
        if snap_path.exists() {
            let bytes = fs::read(&snap_path)?;
            let snap = Snapshot::decode(&bytes[..])
                .map_err(|e| bad_data(format!("{}: {e}", snap_path.display())))?;
            store.apply_snapshot(&snap);
        }
        let log_path = dir.join("log");
        // A compaction cut short leaves its new log behind: the old one is still whole.
        let _ = fs::remove_file(dir.join("log.tmp"));
        let created = !log_path.exists();
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&log_path)?;
        if created {
            File::open(dir)?.sync_all()?;
        }
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let mut pos = 0usize;
        let mut truncated = None;
        while pos < bytes.len() {
            match decode_record(&bytes[pos..]) {
                Ok((entry, used)) => {
                    if entry.index > store.snapshot_index() {
                        if entry.index > store.last_index() + 1 {
                            return Err(bad_data(format!(
                                "{}: entry {} follows {} (gap)",
                                log_path.display(),
                                entry.index,
                                store.last_index()
                            )));
                        }
                        store.append(std::slice::from_ref(&entry));
                    }
                    pos += used;
                }
                Err(reason) => {
                    truncated = Some(((bytes.len() - pos) as u64, reason));
                    break;
                }
            }
        }
        if truncated.is_some() {
            log.set_len(pos as u64)?;
            log.sync_all()?;
        }
        let hs_path = dir.join("hard_state");
        if hs_path.exists() {
            let bytes = fs::read(&hs_path)?;
            let hs = decode_checked(&bytes)
                .and_then(|p| HardState::decode(p).map_err(|e| e.to_string()))
                .map_err(|e| bad_data(format!("{}: {e}", hs_path.display())))?;
            if hs.commit > store.last_index() {
                return Err(bad_data(format!(
                    "{}: commit {} is beyond the durable log's last index {}",
                    hs_path.display(),
                    hs.commit,
                    store.last_index()
                )));
            }
            store.set_hard_state(hs);
        }
        let min_commit = store.snapshot_index();
        Ok((
            RaftStore {
                dir: dir.to_path_buf(),
                log,
                pending_hard_state: None,
                min_commit,
            },
            Loaded { store, truncated },
        ))
    }

    /// Writes `persists` as an earlier version did (tests build migration fixtures with it).
    #[cfg(test)]
    pub fn write(&mut self, persists: &[Persist]) -> io::Result<()> {
        let must_sync = persists.iter().any(|p| p.must_sync);
        let mut buf = Vec::new();
        for p in persists {
            if let Some(snap) = &p.snapshot {
                // Entries buffered so far predate the snapshot: drop them with the old log.
                buf.clear();
                self.replace("snapshot", &snap.encode_to_vec())?;
                self.log.set_len(0)?;
                self.log.sync_all()?;
            }
            for e in &p.entries {
                let payload = e.encode_to_vec();
                buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
                buf.extend_from_slice(&payload);
            }
            if let Some(hs) = &p.hard_state {
                self.pending_hard_state = Some(hs.clone());
            }
        }
        if !buf.is_empty() {
            self.log.write_all(&buf)?;
            if must_sync {
                self.log.sync_data()?;
            }
        }
        if must_sync && let Some(hs) = self.pending_hard_state.take() {
            self.write_hard_state(hs)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn write_hard_state(&mut self, mut hs: HardState) -> io::Result<()> {
        hs.commit = hs.commit.max(self.min_commit);
        let payload = hs.encode_to_vec();
        let mut bytes = Vec::with_capacity(payload.len() + RECORD_HEADER_BYTES);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        self.replace("hard_state", &bytes)
    }

    /// Replaces `name` atomically and durably.
    #[cfg(test)]
    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }
}

fn decode_record(bytes: &[u8]) -> Result<(Entry, usize), String> {
    let payload = decode_checked(bytes)?;
    let entry = Entry::decode(payload).map_err(|e| format!("undecodable entry: {e}"))?;
    Ok((entry, RECORD_HEADER_BYTES + payload.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::raft_wal::tests::{entry, persist};

    #[test]
    fn reload_replays_overwrites_and_cuts_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("sluice-raftstore-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut s, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(loaded.store.last_index(), 1);
        s.write(&[persist(
            vec![entry(2, 1), entry(3, 1), entry(4, 1)],
            1,
            2,
            true,
        )])
        .unwrap();
        // A new leader overwrites 4 (uncommitted) with its own entry in term 2.
        s.write(&[persist(vec![entry(4, 2), entry(5, 2)], 2, 3, true)])
            .unwrap();
        // Commit-only update: not written until the next sync.
        s.write(&[persist(vec![], 2, 5, false)]).unwrap();
        drop(s);
        let (_, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(loaded.store.last_index(), 5);
        assert_eq!(loaded.store.term_of(4), Some(2));
        assert_eq!(loaded.store.hard_state().term, 2);
        assert_eq!(loaded.store.hard_state().commit, 3);
        assert!(loaded.truncated.is_none());
        // Tear the last record.
        let log = dir.join("log");
        let len = fs::metadata(&log).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let (_, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(loaded.store.last_index(), 4);
        assert!(loaded.truncated.is_some());
        fs::remove_dir_all(&dir).unwrap();
    }
}
