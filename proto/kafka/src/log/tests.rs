//! Partition log tests on in-memory storage: offsets, reads, rolling, recovery after a crash,
//! corruption, retention and time lookups.

use std::sync::Arc;

use kafka_protocol::records::Compression;

use super::*;
use crate::batch::tests::batch;
use crate::storage::MemStorage;

fn open(fs: &MemStorage, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(fs.clone()), "logs/t-0".into(), config, 0).unwrap()
}

fn sync(log: &mut PartitionLog) {
    if let Some(w) = log.take_sync_work() {
        for f in &w.files {
            f.sync_data().unwrap();
        }
        log.mark_durable(w.end_offset);
    }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

fn offsets_in(bytes: &[u8]) -> Vec<i64> {
    crate::batch::headers(bytes)
        .map(|(_, h)| h.base_offset)
        .collect()
}

#[test]
fn appends_assign_dense_offsets_and_reads_return_them() {
    let fs = MemStorage::new();
    let mut log = open(&fs, LogConfig::default());
    for i in 0..10 {
        let a = log.append(&batch(3, Compression::None, i), 0, 0).unwrap();
        assert_eq!(a.base_offset, i * 3);
        assert_eq!(a.last_offset, i * 3 + 2);
    }
    // Nothing is visible before it is durable.
    assert_eq!(log.read(0, 1 << 20, true).unwrap().records.len(), 0);
    sync(&mut log);
    assert_eq!(log.high_watermark(), 30);
    let r = log.read(0, 1 << 20, true).unwrap();
    assert_eq!(
        offsets_in(&r.records),
        (0..10).map(|i| i * 3).collect::<Vec<_>>()
    );
    let r = log.read(16, 1 << 20, true).unwrap();
    assert_eq!(
        offsets_in(&r.records)[0],
        15,
        "the batch holding offset 16 starts at 15"
    );
    assert!(matches!(
        log.read(31, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let fs = MemStorage::new();
    let mut log = open(&fs, small_segments());
    for i in 0..60 {
        log.append(&batch(2, Compression::None, i), 0, 0).unwrap();
    }
    sync(&mut log);
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    let r = log.read(0, 1 << 20, true).unwrap();
    assert_eq!(offsets_in(&r.records).len(), 60);
    for start in [0, 7, 33, 100, 119] {
        let r = log.read(start, 1 << 20, true).unwrap();
        let offs = offsets_in(&r.records);
        assert!(
            offs[0] <= start && start < offs[0] + 2,
            "start {start}: {:?}",
            &offs[..2]
        );
        assert_eq!(*offs.last().unwrap(), 118);
    }
}

#[test]
fn reopen_after_clean_close_and_after_crash() {
    let fs = MemStorage::new();
    let mut log = open(&fs, small_segments());
    for i in 0..40 {
        log.append(&batch(2, Compression::Lz4, i), 0, 0).unwrap();
    }
    sync(&mut log);
    // Unsynced appends are lost by the crash; synced ones are all there.
    for i in 0..5 {
        log.append(&batch(2, Compression::None, i), 0, 0).unwrap();
    }
    drop(log);
    fs.crash();
    let log = open(&fs, small_segments());
    assert_eq!(log.log_end_offset(), 80);
    assert_eq!(
        offsets_in(&log.read(0, 1 << 20, true).unwrap().records).len(),
        40
    );
    let mut log = log;
    log.close().unwrap();
    let log = open(&fs, small_segments());
    assert_eq!(log.log_end_offset(), 80);
}

#[test]
fn torn_and_corrupt_tails_are_truncated() {
    let fs = MemStorage::new();
    let mut log = open(&fs, LogConfig::default());
    for i in 0..5 {
        log.append(&batch(4, Compression::None, i), 0, 0).unwrap();
    }
    sync(&mut log);
    drop(log);
    let path = "logs/t-0/00000000000000000000.log";
    let good = fs.raw(path).unwrap();
    let one = batch(4, Compression::None, 0).len();
    // Torn: the last batch is cut short.
    fs.set_raw(path, good[..good.len() - 7].to_vec());
    let log = open(&fs, LogConfig::default());
    assert_eq!(log.log_end_offset(), 16);
    assert_eq!(
        fs.raw(path).unwrap().len(),
        4 * one,
        "file truncated to the last whole batch"
    );
    drop(log);
    // Corrupt: a flipped byte inside batch 3 drops it and everything after.
    let mut bad = good.clone();
    bad[2 * one + 40] ^= 0x10;
    fs.set_raw(path, bad);
    let log = open(&fs, LogConfig::default());
    assert_eq!(log.log_end_offset(), 8);
    // Garbage after the last batch.
    let mut junk = good.clone();
    junk.extend_from_slice(&[0xAB; 30]);
    fs.set_raw(path, junk);
    drop(log);
    let log = open(&fs, LogConfig::default());
    assert_eq!(log.log_end_offset(), 20);
}

#[test]
fn stale_index_is_rebuilt() {
    let fs = MemStorage::new();
    let mut log = open(&fs, small_segments());
    for i in 0..40 {
        log.append(&batch(2, Compression::None, i), 0, 0).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let idx = "logs/t-0/00000000000000000000.index";
    let mut raw = fs.raw(idx).expect("closed segments have an index");
    raw.truncate(raw.len() - 3);
    fs.set_raw(idx, raw);
    let log = open(&fs, small_segments());
    for start in 0..80 {
        let r = log.read(start, 1 << 20, true).unwrap();
        assert!(offsets_in(&r.records)[0] <= start);
    }
}

#[test]
fn retention_by_size_time_and_delete_records() {
    let fs = MemStorage::new();
    let mut log = open(&fs, small_segments());
    for i in 0..60 {
        log.append(&batch(2, Compression::None, 1_000 + i), 0, 0)
            .unwrap();
    }
    sync(&mut log);
    let segs = log.segment_count();
    let mut cfg = small_segments();
    cfg.retention_bytes = 2500;
    log.set_config(cfg.clone());
    log.apply_retention(0).unwrap();
    assert!(log.segment_count() < segs);
    assert!(log.size_bytes() <= 2500 + 1000);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(0, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        offsets_in(&log.read(start, 1 << 20, true).unwrap().records)[0],
        start
    );
    // Time: everything but the active segment is older than a minute.
    cfg.retention_bytes = -1;
    cfg.retention_ms = 60_000;
    log.set_config(cfg.clone());
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    // DeleteRecords moves the start inside the active segment, persisted across reopen.
    let end = log.high_watermark();
    assert_eq!(log.delete_records_before(end - 2).unwrap(), end - 2);
    assert!(matches!(
        log.delete_records_before(end + 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = open(&fs, cfg);
    assert_eq!(log.log_start_offset(), end - 2);
}

#[test]
fn offsets_for_timestamps() {
    let fs = MemStorage::new();
    let mut log = open(&fs, small_segments());
    for i in 0..50 {
        // Records i*10, i*10+1, i*10+2 with timestamps 10_000 + i*100 + j.
        log.append(&batch(3, Compression::Gzip, 10_000 + i * 100), 0, 0)
            .unwrap();
    }
    sync(&mut log);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(10_101).unwrap(), Some((4, 10_101)));
    assert_eq!(
        log.offset_for_timestamp(12_550).unwrap(),
        Some((78, 12_600))
    );
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((149, 14_902)));
}

#[test]
fn a_full_disk_fails_the_append_and_leaves_no_partial_batch() {
    let fs = MemStorage::new();
    let mut log = open(&fs, LogConfig::default());
    log.append(&batch(2, Compression::None, 0), 0, 0).unwrap();
    fs.set_space_left(Some(10));
    assert!(matches!(
        log.append(&batch(2, Compression::None, 0), 0, 0),
        Err(LogError::Io { .. })
    ));
    fs.set_space_left(None);
    let a = log.append(&batch(2, Compression::None, 0), 0, 0).unwrap();
    assert_eq!(a.base_offset, 2);
    sync(&mut log);
    drop(log);
    let log = open(&fs, LogConfig::default());
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn oversized_batches_are_refused() {
    let fs = MemStorage::new();
    let cfg = LogConfig {
        max_message_bytes: 100,
        ..LogConfig::default()
    };
    let mut log = open(&fs, cfg);
    assert!(matches!(
        log.append(&batch(20, Compression::None, 0), 0, 0),
        Err(LogError::TooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    // A transaction marker always fits: refusing it would leave its transaction open.
    let tiny = LogConfig {
        max_message_bytes: 10,
        ..LogConfig::default()
    };
    let mut log = open(&MemStorage::new(), tiny);
    log.append(&crate::batch::control_batch(7, 0, false, 0, 1), 0, 1)
        .unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn segments_roll_by_age() {
    let fs = MemStorage::new();
    let cfg = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let mut log = open(&fs, cfg);
    log.append(&batch(1, Compression::None, 0), 0, 10_000)
        .unwrap();
    log.append(&batch(1, Compression::None, 0), 0, 10_500)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(1, Compression::None, 0), 0, 11_001)
        .unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "a segment older than segment.ms rolls"
    );
    sync(&mut log);
    assert_eq!(
        offsets_in(&log.read(0, 1 << 20, true).unwrap().records),
        vec![0, 1, 2]
    );
}

#[test]
fn a_stale_sync_never_moves_the_high_watermark_past_the_log_end() {
    let fs = MemStorage::new();
    let mut log = open(&fs, LogConfig::default());
    log.append(&batch(2, Compression::None, 0), 0, 0).unwrap();
    log.mark_durable(50);
    assert_eq!(log.high_watermark(), 2);
}

#[test]
fn a_replica_copy_is_byte_identical_and_a_reset_restarts_the_log() {
    let (src_fs, dst_fs) = (MemStorage::new(), MemStorage::new());
    let mut src = open(&src_fs, small_segments());
    for i in 0..12 {
        src.append(&batch(3, Compression::None, i), 7, i).unwrap();
    }
    sync(&mut src);
    let mut dst = PartitionLog::open(
        Arc::new(dst_fs.clone()),
        "logs/t-0".into(),
        small_segments(),
        0,
    )
    .unwrap();
    // Copy up to offset 30 in pieces, overlapping what is already there.
    let mut from = 0;
    while dst.log_end_offset() < 30 {
        let r = src.read(from, 400, true).unwrap();
        let end = dst.append_replicated(&r.records, 30, 0).unwrap();
        from = end.saturating_sub(2);
    }
    assert_eq!(dst.log_end_offset(), 30);
    sync(&mut dst);
    let a = src.read(0, 1 << 20, true).unwrap().records;
    let b = dst.read(0, 1 << 20, true).unwrap().records;
    assert_eq!(&a[..b.len()], &b[..], "same bytes, offsets and epochs");
    // A batch that does not start at the log end is refused (a log never compacted has no
    // gaps), and nothing is written.
    let later = src.read(33, 1 << 20, true).unwrap().records;
    assert!(dst.append_replicated(&later, 36, 0).is_err());
    assert_eq!(dst.log_end_offset(), 30);
    // A reset empties the log and restarts it (durably) at the given offset.
    dst.reset_to(33, 0).unwrap();
    assert_eq!((dst.log_start_offset(), dst.log_end_offset()), (33, 33));
    dst.append_replicated(&later, 36, 0).unwrap();
    assert_eq!(dst.log_end_offset(), 36);
    sync(&mut dst);
    drop(dst);
    let dst = PartitionLog::open(
        Arc::new(dst_fs.clone()),
        "logs/t-0".into(),
        small_segments(),
        0,
    )
    .unwrap();
    assert_eq!((dst.log_start_offset(), dst.log_end_offset()), (33, 36));
}
