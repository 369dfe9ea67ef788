//! Durable Raft state of one group on the local disk: what `Persist` tasks write and what a
//! restart reads back into a [`LogStore`].
//!
//! Layout of the group's directory (`DATA/raft/meta/` for `__meta`):
//!
//! - `log`: append-only records `[u32 LE payload length][u32 LE CRC-32C of payload][payload]`,
//!   one per entry, payload = the protobuf-encoded `eraftpb::Entry`. A new leader overwriting an
//!   uncommitted suffix is just a later record with a lower index: replaying the records in
//!   order through [`LogStore::append`] (which truncates conflicting entries) rebuilds the log.
//!   A torn or corrupt tail (crash mid-write) is cut off at the first bad record on load.
//! - `hard_state`: term, vote and commit, replaced atomically (temp file, fsync, rename, fsync
//!   dir). Written only by batches that must sync; commit-only updates (`must_sync == false`)
//!   ride along with the next one (a lower commit after a crash is safe: the leader resends it).
//! - `snapshot`: the latest installed snapshot (protobuf `eraftpb::Snapshot`), replaced
//!   atomically; installing one empties `log`.
//!
//! Compaction ([`RaftStore::compact`]) writes the snapshot point (index, term, voters; no data)
//! and a new `log` holding only the later entries, then swaps them in: `__meta` is never
//! compacted (a handful of entries per topic and term); partition groups are, once every
//! replica holds the log up to the point and the segment log has it durably.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message as _;
use sluice_raft::eraftpb::{Entry, HardState, Snapshot};
use sluice_raft::{LogStore, Persist};

const RECORD_HEADER_BYTES: usize = 8;
/// Larger records are corrupt by definition (raft-rs limits messages to 1 MiB by default).
const RECORD_BYTES_MAX: usize = 64 << 20;

/// The files of one group (see the module docs).
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

/// What [`RaftStore::open`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The rebuilt in-memory log for the driver.
    pub store: LogStore,
    /// Entries replayed from `log`.
    pub records: usize,
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
        let mut records = 0usize;
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
                    records += 1;
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
            Loaded {
                store,
                records,
                truncated,
            },
        ))
    }

    /// Writes `persists` in order (snapshot, entries, hard state of each). Everything is on
    /// disk (fdatasync) when this returns if any of them `must_sync`.
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

    fn write_hard_state(&mut self, mut hs: HardState) -> io::Result<()> {
        hs.commit = hs.commit.max(self.min_commit);
        let payload = hs.encode_to_vec();
        let mut bytes = Vec::with_capacity(payload.len() + RECORD_HEADER_BYTES);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        self.replace("hard_state", &bytes)
    }

    /// Compaction: `snapshot` (its metadata: index, term, voters) becomes the start of the log,
    /// `entries` (everything after it the in-memory log holds) the new `log`, `hard_state` (commit
    /// at least the snapshot index) the hard state. Order makes every crash point recoverable:
    /// hard state, then the new log beside the old, then the snapshot, then the swap.
    pub fn compact(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: &HardState,
    ) -> io::Result<()> {
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        self.min_commit = self.min_commit.max(index);
        // The in-memory hard state is the newest (writing it early is safe: it is what the
        // next persist would write).
        self.pending_hard_state = None;
        self.write_hard_state(hard_state.clone())?;
        let tmp = self.dir.join("log.tmp");
        let mut f = File::create(&tmp)?;
        let mut buf = Vec::new();
        for e in entries.iter().filter(|e| e.index > index) {
            let payload = e.encode_to_vec();
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        f.write_all(&buf)?;
        f.sync_all()?;
        self.replace("snapshot", &snapshot.encode_to_vec())?;
        fs::rename(&tmp, self.dir.join("log"))?;
        File::open(&self.dir)?.sync_all()?;
        self.log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.dir.join("log"))?;
        Ok(())
    }

    /// Replaces `name` atomically and durably.
    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Checks one `[len][crc][payload]` record and returns the payload.
fn decode_checked(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(format!("short header ({} bytes)", bytes.len()));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len > RECORD_BYTES_MAX {
        return Err(format!("record length {len} exceeds {RECORD_BYTES_MAX}"));
    }
    let Some(payload) = bytes.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Err(format!(
            "record of {len} bytes cut short at {}",
            bytes.len() - RECORD_HEADER_BYTES
        ));
    };
    if crc32c::crc32c(payload) != crc {
        return Err("CRC mismatch".into());
    }
    Ok(payload)
}

fn decode_record(bytes: &[u8]) -> Result<(Entry, usize), String> {
    let payload = decode_checked(bytes)?;
    let entry = Entry::decode(payload).map_err(|e| format!("undecodable entry: {e}"))?;
    Ok((entry, RECORD_HEADER_BYTES + payload.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3],
            ..Default::default()
        }
    }

    fn persist(entries: Vec<Entry>, term: u64, commit: u64, must_sync: bool) -> Persist {
        Persist {
            number: 0,
            snapshot: None,
            entries,
            hard_state: Some(HardState {
                term,
                vote: 1,
                commit,
            }),
            must_sync,
        }
    }

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

    #[test]
    fn compaction_keeps_the_tail_and_survives_restarts_and_torn_swaps() {
        let dir = std::env::temp_dir().join(format!("sluice-raftcompact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut s, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        let mut mem = loaded.store;
        let entries: Vec<Entry> = (2..=10).map(|i| entry(i, 1)).collect();
        let p = persist(entries.clone(), 1, 8, true);
        s.write(std::slice::from_ref(&p)).unwrap();
        mem.append(&entries);
        // Commit-only news not yet written: compaction must not write a commit below its point.
        s.write(&[persist(vec![], 1, 3, false)]).unwrap();
        mem.compact(6, Vec::new());
        s.compact(mem.snapshot_ref(), mem.entries_slice(), mem.hard_state())
            .unwrap();
        s.write(&[persist(vec![entry(11, 2)], 2, 9, true)]).unwrap();
        drop(s);
        let (_, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(loaded.store.snapshot_index(), 6);
        assert_eq!(loaded.store.first_index(), 7);
        assert_eq!(loaded.store.last_index(), 11);
        assert_eq!(loaded.store.entry(7).unwrap().data, vec![7u8; 3]);
        assert!(loaded.store.hard_state().commit >= 6);
        // A compaction cut off before its swap leaves log.tmp behind: ignored, nothing lost.
        fs::write(dir.join("log.tmp"), b"half a log").unwrap();
        let (_, loaded) = RaftStore::open(&dir, &[1, 2, 3]).unwrap();
        assert_eq!(loaded.store.last_index(), 11);
        assert!(!dir.join("log.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
