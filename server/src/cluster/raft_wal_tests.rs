use super::*;

const VOTERS: &[u64] = &[1, 2, 3];

fn temp_raft_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-wal-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub(in crate::cluster) fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![index as u8; 100].into(),
        ..Default::default()
    }
}

pub(in crate::cluster) fn persist(
    entries: Vec<Entry>,
    term: u64,
    commit: u64,
    must_sync: bool,
) -> Persist {
    Persist {
        number: entries.last().map_or(0, |e| e.index),
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

fn reopen(dir: &Path) -> (RaftWal, WalLoaded) {
    RaftWal::open(dir).unwrap()
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn groups_replay_from_one_log_with_overwrites_and_a_torn_tail_cut() {
    let dir = temp_raft_dir("replay");
    let (mut wal, loaded) = reopen(&dir);
    assert_eq!(loaded.records, 0);
    assert_eq!(wal.open_group(7, VOTERS).unwrap().last_index(), 1);
    assert_eq!(wal.open_group(8, VOTERS).unwrap().last_index(), 1);
    // One write for both groups; a persist of a group that is not open is dropped.
    let done = wal
        .write(&[
            (
                7,
                persist(vec![entry(2, 1), entry(3, 1), entry(4, 1)], 1, 2, true),
            ),
            (8, persist(vec![entry(2, 1)], 1, 2, true)),
            (9, persist(vec![entry(2, 1)], 1, 2, true)),
        ])
        .unwrap();
    assert_eq!(done, vec![(7, 4), (8, 2)]);
    // A new leader overwrites 4 (uncommitted) in term 2; a commit-only update is not synced.
    wal.write(&[(7, persist(vec![entry(4, 2), entry(5, 2)], 2, 3, true))])
        .unwrap();
    wal.write(&[(7, persist(vec![], 2, 5, false))]).unwrap();
    drop(wal);

    let (mut wal, loaded) = reopen(&dir);
    assert_eq!(loaded.groups, 2);
    assert!(loaded.truncated.is_none());
    let g7 = wal.open_group(7, VOTERS).unwrap();
    assert_eq!(g7.last_index(), 5);
    assert_eq!(g7.term_of(4), Some(2));
    assert_eq!(g7.hard_state().term, 2);
    assert_eq!(g7.hard_state().commit, 5);
    assert_eq!(wal.open_group(8, VOTERS).unwrap().last_index(), 2);
    assert_eq!(wal.open_group(9, VOTERS).unwrap().last_index(), 1);
    wal.write(&[(8, persist(vec![entry(3, 1)], 1, 3, true))])
        .unwrap();
    drop(wal);

    // Tear the last record (group 8's hard state): the tail is cut, the rest kept.
    let active = wal_files(&dir).pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (mut wal, loaded) = reopen(&dir);
    let (file, bytes, _) = loaded.truncated.expect("torn tail");
    assert_eq!(file, active);
    assert!(bytes > 0);
    let g8 = wal.open_group(8, VOTERS).unwrap();
    assert_eq!(g8.last_index(), 3);
    assert_eq!(g8.hard_state().commit, 2);
    assert_eq!(wal.open_group(7, VOTERS).unwrap().last_index(), 5);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_in_an_older_file_refuses_the_start_naming_it() {
    let dir = temp_raft_dir("damage");
    let (mut wal, _) = reopen(&dir);
    wal.set_file_bytes(1);
    wal.open_group(7, VOTERS).unwrap();
    wal.write(&[(7, persist(vec![entry(2, 1)], 1, 2, true))])
        .unwrap();
    wal.write(&[(7, persist(vec![entry(3, 1)], 1, 3, true))])
        .unwrap();
    drop(wal);
    let first = wal_files(&dir).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&first, bytes).unwrap();
    let err = RaftWal::open(&dir).unwrap_err().to_string();
    assert!(err.contains(&first.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sealed_files_go_once_compacted_and_idle_groups_are_rewritten() {
    let dir = temp_raft_dir("purge");
    let (mut wal, _) = reopen(&dir);
    wal.set_file_bytes(4096);
    let mut busy = wal.open_group(1, VOTERS).unwrap();
    let mut idle = wal.open_group(2, VOTERS).unwrap();
    // The idle group writes once, into the first file.
    let p = persist(vec![entry(2, 1), entry(3, 1)], 1, 3, true);
    idle.apply_persist(&p);
    wal.write(&[(2, p)]).unwrap();
    // The busy group writes and compacts its log as it goes.
    let mut max_files = 0;
    for i in 2..400u64 {
        let p = persist(vec![entry(i, 1)], 1, i, true);
        busy.apply_persist(&p);
        wal.write(&[(1, p)]).unwrap();
        if i % 10 == 0 {
            busy.compact(i - 5, b"image".to_vec());
            wal.compact(1, busy.snapshot_ref());
        }
        for g in wal.cold_groups() {
            assert_eq!(g, 2, "only the idle group pins old files");
            wal.rewrite(g, Some(&idle));
            wal.flush(true).unwrap();
        }
        max_files = max_files.max(wal_files(&dir).len());
    }
    assert!(
        max_files <= SEALED_MAX + 2,
        "{max_files} files at once (sealed at most {SEALED_MAX} + the active one + one)"
    );
    assert!(wal.sealed_files() <= SEALED_MAX + 1);
    drop(wal);
    let (mut wal, _) = reopen(&dir);
    let b = wal.open_group(1, VOTERS).unwrap();
    assert_eq!(b.snapshot_index(), busy.snapshot_index());
    assert_eq!(b.entries_slice(), busy.entries_slice());
    assert_eq!(b.snapshot_ref().data, b"image");
    assert_eq!(b.hard_state(), busy.hard_state());
    let i = wal.open_group(2, VOTERS).unwrap();
    assert_eq!(i.entries_slice(), idle.entries_slice());
    assert_eq!(i.hard_state(), idle.hard_state());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn recovered_groups_not_opened_yet_are_rewritten_from_what_was_replayed() {
    let dir = temp_raft_dir("unopened");
    let (mut wal, _) = reopen(&dir);
    wal.open_group(2, VOTERS).unwrap();
    wal.write(&[(2, persist(vec![entry(2, 3), entry(3, 3)], 3, 3, true))])
        .unwrap();
    drop(wal);
    let (mut wal, _) = reopen(&dir);
    wal.set_file_bytes(1024);
    let mut one = wal.open_group(1, VOTERS).unwrap();
    let mut rewritten = false;
    for i in 2..200u64 {
        let p = persist(vec![entry(i, 1)], 1, i, true);
        one.apply_persist(&p);
        wal.write(&[(1, p)]).unwrap();
        for g in wal.cold_groups() {
            // Group 1 is never compacted here: it pins its own first file too.
            wal.rewrite(g, (g == 1).then_some(&one));
            rewritten |= g == 2;
            wal.flush(true).unwrap();
        }
    }
    assert!(rewritten);
    assert!(wal.sealed_files() <= SEALED_MAX + 1);
    drop(wal);
    let (mut wal, _) = reopen(&dir);
    let g = wal.open_group(2, VOTERS).unwrap();
    assert_eq!(g.last_index(), 3);
    assert_eq!(g.hard_state().term, 3);
    assert_eq!(wal.open_group(1, VOTERS).unwrap().last_index(), 199);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_removed_group_does_not_come_back_and_an_installed_snapshot_restarts_the_log() {
    let dir = temp_raft_dir("remove");
    let (mut wal, _) = reopen(&dir);
    wal.open_group(5, VOTERS).unwrap();
    wal.open_group(6, VOTERS).unwrap();
    wal.write(&[
        (5, persist(vec![entry(2, 1)], 1, 2, true)),
        (6, persist(vec![entry(2, 1), entry(3, 1)], 1, 2, true)),
    ])
    .unwrap();
    wal.remove(5).unwrap();
    let mut leader = LogStore::new(VOTERS);
    leader.append(&(2..=30).map(|i| entry(i, 4)).collect::<Vec<_>>());
    leader.compact(20, b"image at 20".to_vec());
    let install = Persist {
        number: 9,
        snapshot: Some(leader.snapshot_ref().clone()),
        entries: vec![entry(21, 4)],
        hard_state: Some(HardState {
            term: 4,
            vote: 0,
            commit: 21,
        }),
        must_sync: true,
    };
    wal.write(&[(6, install)]).unwrap();
    drop(wal);
    let (mut wal, loaded) = reopen(&dir);
    assert_eq!(loaded.groups, 1);
    assert_eq!(wal.open_group(5, VOTERS).unwrap().last_index(), 1);
    let g = wal.open_group(6, VOTERS).unwrap();
    assert_eq!(g.snapshot_index(), 20);
    assert_eq!(g.snapshot_ref().data, b"image at 20");
    assert_eq!(g.last_index(), 21);
    assert_eq!(g.hard_state().commit, 21);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_group_directory_of_an_earlier_version_is_migrated_once() {
    let dir = temp_raft_dir("legacy");
    let legacy = dir.join("g-12");
    let (mut old, _) = RaftStore::open(&legacy, VOTERS).unwrap();
    old.write(&[persist(vec![entry(2, 1), entry(3, 1)], 1, 3, true)])
        .unwrap();
    drop(old);
    let (mut wal, _) = reopen(&dir);
    assert_eq!(wal.legacy_dir(12), Some(legacy.clone()));
    let g = wal.open_group(12, VOTERS).unwrap();
    assert_eq!(g.last_index(), 3);
    assert_eq!(g.hard_state().commit, 3);
    assert!(!legacy.exists());
    drop(wal);
    let (mut wal, _) = reopen(&dir);
    assert_eq!(wal.legacy_dir(12), None);
    let g = wal.open_group(12, VOTERS).unwrap();
    assert_eq!(g.last_index(), 3);
    assert_eq!(g.term_of(3), Some(1));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_of_another_format_version_refuses_the_start_and_a_torn_header_is_restored() {
    let dir = temp_raft_dir("magic");
    let (mut wal, _) = reopen(&dir);
    wal.open_group(7, VOTERS).unwrap();
    wal.write(&[(7, persist(vec![entry(2, 1)], 1, 2, true))])
        .unwrap();
    drop(wal);
    let file = wal_files(&dir).remove(0);
    let mut bytes = fs::read(&file).unwrap();
    assert!(bytes.starts_with(MAGIC));
    // Version 2, a development layout (records at offset 8 keyed to the file's seq).
    bytes[7] = 2;
    fs::write(&file, &bytes).unwrap();
    let err = RaftWal::open(&dir).unwrap_err().to_string();
    assert!(err.contains("another version"), "{err}");
    // A crash right after creating the newest file can leave part of its header: nothing was
    // in it, so it starts again.
    bytes[7] = 3;
    fs::write(&file, &bytes).unwrap();
    fs::write(dir.join("wal").join(format!("{:016x}.wal", 2)), &MAGIC[..3]).unwrap();
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none());
    assert_eq!(wal.open_group(7, VOTERS).unwrap().last_index(), 2);
    let restored = fs::read(dir.join("wal/0000000000000002.wal")).unwrap();
    assert!(restored.len() == FILE_HEADER_BYTES && restored.starts_with(MAGIC));
    fs::remove_dir_all(&dir).unwrap();
}

fn wal_inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

fn active_file(dir: &Path) -> PathBuf {
    wal_files(dir)
        .into_iter()
        .rfind(|f| f.extension().is_some_and(|e| e == "wal"))
        .unwrap()
}

/// A busy group writing and compacting through small files until a file was reused and written
/// into (and, with `until_sealed`, sealed and followed by another); returns the group's log as
/// written and where the active file's records end (past it, a reused file still holds what it
/// held before).
fn write_through_a_reuse(dir: &Path, until_sealed: bool, writes_after: u64) -> (LogStore, u64) {
    let (mut wal, _) = reopen(dir);
    wal.set_file_bytes(4096);
    let mut busy = wal.open_group(1, VOTERS).unwrap();
    let mut freed_inodes = Vec::new();
    let mut reused: Option<(u64, u64)> = None; // (inode, at)
    for i in 2..4_000u64 {
        // Large records until a file is reused, small ones after: a reused file is sealed
        // with what it held before still past its end.
        let mut e = entry(i, 1);
        if reused.is_none() {
            e.data = vec![i as u8; 1_500].into();
        }
        let p = persist(vec![e], 1, i, true);
        busy.apply_persist(&p);
        wal.write(&[(1, p)]).unwrap();
        if i % 5 == 0 {
            busy.compact(i - 2, b"image".to_vec());
            wal.compact(1, busy.snapshot_ref());
            wal.flush(true).unwrap();
        }
        for f in wal_files(dir) {
            if f.extension().is_some_and(|e| e == "free") {
                freed_inodes.push(wal_inode(&f));
            }
        }
        assert!(wal.free_files() <= FREE_MAX);
        let active = wal_inode(&active_file(dir));
        match reused {
            None if freed_inodes.contains(&active) => {
                reused = Some((active, i));
                if writes_after == 0 && !until_sealed {
                    // Nothing written to it yet: the earlier use's first record, whole and
                    // CRC-valid for its own nonce, sits where this use's first one goes.
                    return (busy, wal.active_len);
                }
            }
            // A few records into the reused file: its tail still holds what it held before.
            Some((inode, at)) if !until_sealed && inode == active && i == at + writes_after => {
                let path = active_file(dir);
                assert!(fs::metadata(&path).unwrap().len() > wal.active_len);
                return (busy, wal.active_len);
            }
            // Sealed: a newer file is active.
            Some((inode, at)) if until_sealed && inode != active && i > at + 3 => {
                return (busy, wal.active_len);
            }
            _ => {}
        }
    }
    panic!("no file was reused (or sealed after)");
}

#[test]
fn files_are_reused_and_what_they_held_before_is_never_read() {
    let dir = temp_raft_dir("reuse");
    let (busy, _) = write_through_a_reuse(&dir, false, 3);
    // As after kill -9: what the reused file held before is not this use's, and not a torn
    // write either.
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none(), "{:?}", loaded.truncated);
    let mut b = wal.open_group(1, VOTERS).unwrap();
    assert_eq!(b.snapshot_index(), busy.snapshot_index());
    assert_eq!(b.entries_slice(), busy.entries_slice());
    assert_eq!(b.hard_state(), busy.hard_state());
    // Written on after the restart, replayed again.
    let next = b.last_index() + 1;
    let p = persist(vec![entry(next, 2)], 2, next, true);
    b.apply_persist(&p);
    wal.write(&[(1, p)]).unwrap();
    drop(wal);
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none());
    assert_eq!(
        wal.open_group(1, VOTERS).unwrap().entries_slice(),
        b.entries_slice()
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_reused_just_before_a_crash_replays_none_of_its_earlier_use() {
    let dir = temp_raft_dir("reuse-fresh");
    let (busy, end) = write_through_a_reuse(&dir, false, 0);
    assert_eq!(end, FILE_HEADER_BYTES as u64);
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none(), "{:?}", loaded.truncated);
    let b = wal.open_group(1, VOTERS).unwrap();
    assert_eq!(b.entries_slice(), busy.entries_slice());
    assert_eq!(b.hard_state(), busy.hard_state());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_header_without_its_nonce_before_records_refuses_the_start() {
    let dir = temp_raft_dir("zero-nonce");
    let (mut wal, _) = reopen(&dir);
    wal.open_group(7, VOTERS).unwrap();
    wal.write(&[(7, persist(vec![entry(2, 1)], 1, 2, true))])
        .unwrap();
    drop(wal);
    let file = active_file(&dir);
    let mut bytes = fs::read(&file).unwrap();
    bytes[8..16].fill(0);
    fs::write(&file, &bytes).unwrap();
    let err = RaftWal::open(&dir).unwrap_err().to_string();
    assert!(err.contains("damaged header"), "{err}");
    // Nothing but the header, its nonce zeros: a creation cut short, started again.
    fs::write(&file, &bytes[..FILE_HEADER_BYTES]).unwrap();
    let (_, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none());
    let restored = fs::read(&file).unwrap();
    assert!(restored.starts_with(MAGIC) && restored[8..16] != [0; 8]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sealed_reused_file_replays_whole_and_a_stale_tail_in_an_older_file_is_damage() {
    let dir = temp_raft_dir("reuse-sealed");
    let (busy, _) = write_through_a_reuse(&dir, true, 3);
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none(), "{:?}", loaded.truncated);
    let b = wal.open_group(1, VOTERS).unwrap();
    assert_eq!(b.snapshot_index(), busy.snapshot_index());
    assert_eq!(b.entries_slice(), busy.entries_slice());
    assert_eq!(b.hard_state(), busy.hard_state());
    drop(wal);
    // An older file is records to its end: a tail of another use means damage.
    let older = wal_files(&dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "wal"))
        .rev()
        .nth(1)
        .unwrap();
    let mut bytes = fs::read(&older).unwrap();
    bytes.extend_from_slice(&20u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&12_345u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 20]);
    fs::write(&older, &bytes).unwrap();
    let err = RaftWal::open(&dir).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains(&older.display().to_string()), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_record_in_a_reused_file_is_cut_and_reported() {
    let dir = temp_raft_dir("reuse-torn");
    let (busy, end) = write_through_a_reuse(&dir, false, 3);
    let active = active_file(&dir);
    // The last record's last byte (its hard state) flipped: a write that did not complete,
    // with the file's earlier use still behind it.
    let mut bytes = fs::read(&active).unwrap();
    assert!(bytes.len() as u64 > end);
    bytes[end as usize - 1] ^= 0xff;
    fs::write(&active, &bytes).unwrap();
    let (mut wal, loaded) = reopen(&dir);
    let (file, cut, reason) = loaded.truncated.expect("torn record");
    assert_eq!(file, active);
    assert!(reason.contains("CRC"), "{reason}");
    assert!(cut > 0);
    let b = wal.open_group(1, VOTERS).unwrap();
    assert_eq!(b.entries_slice(), busy.entries_slice());
    assert_eq!(b.hard_state().commit, busy.hard_state().commit - 1);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_version_1_log_is_read_and_continued_in_a_new_file() {
    let dir = temp_raft_dir("v1");
    fs::create_dir_all(dir.join("wal")).unwrap();
    // Format 1: `[len][crc of payload][payload]`, no file seq.
    let mut bytes = MAGIC_V1.to_vec();
    for (kind, body) in [
        (ENTRIES, {
            let mut b = Vec::new();
            put_entries(&mut b, &[entry(2, 1), entry(3, 1)]);
            b
        }),
        (HARD_STATE, {
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: 3,
            };
            hs.encode_to_vec()
        }),
    ] {
        let mut payload = vec![kind];
        payload.extend_from_slice(&7u64.to_le_bytes());
        payload.extend_from_slice(&body);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
    }
    fs::write(dir.join("wal/0000000000000001.wal"), &bytes).unwrap();
    let (mut wal, loaded) = reopen(&dir);
    assert!(loaded.truncated.is_none());
    let mut g = wal.open_group(7, VOTERS).unwrap();
    assert_eq!(g.last_index(), 3);
    assert_eq!(g.hard_state().commit, 3);
    let p = persist(vec![entry(4, 1)], 1, 4, true);
    g.apply_persist(&p);
    wal.write(&[(7, p)]).unwrap();
    drop(wal);
    // The old file is untouched; this version's records went to a new file.
    assert_eq!(
        fs::read(dir.join("wal/0000000000000001.wal")).unwrap(),
        bytes
    );
    assert!(
        fs::read(dir.join("wal/0000000000000002.wal"))
            .unwrap()
            .starts_with(MAGIC)
    );
    let (mut wal, _) = reopen(&dir);
    let g2 = wal.open_group(7, VOTERS).unwrap();
    assert_eq!(g2.entries_slice(), g.entries_slice());
    assert_eq!(g2.hard_state(), g.hard_state());
    fs::remove_dir_all(&dir).unwrap();
}
