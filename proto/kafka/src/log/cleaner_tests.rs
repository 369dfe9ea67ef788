//! Cleaner tests on in-memory storage: a property test against a model of Kafka's compaction,
//! crashes at every step of the swap, idempotent producers' empty batches, fetches into gaps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::log::{LogConfig, PartitionLog};
use crate::storage::MemStorage;

const DIR: &str = "logs/c-0";

fn open(fs: &MemStorage, config: LogConfig, now_ms: i64) -> PartitionLog {
    PartitionLog::open(Arc::new(fs.clone()), DIR.into(), config, now_ms).unwrap()
}

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        compact: true,
        delete: false,
        delete_retention_ms: 1000,
        ..LogConfig::default()
    }
}

fn sync(log: &mut PartitionLog) {
    if let Some(w) = log.take_sync_work() {
        for f in &w.files {
            f.sync_data().unwrap();
        }
        log.mark_durable(w.end_offset);
    }
}

/// One batch of (key, value) records; `producer`: (id, epoch, base sequence).
pub(crate) fn keyed(
    recs: &[(Option<&str>, Option<&str>)],
    compression: Compression,
    ts: i64,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    batch_of(recs, compression, ts, producer, false)
}

/// [`keyed`], transactional or not.
fn batch_of(
    recs: &[(Option<&str>, Option<&str>)],
    compression: Compression,
    ts: i64,
    producer: Option<(i64, i16, i32)>,
    transactional: bool,
) -> Bytes {
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = recs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq.max(0) + i as i32,
            timestamp: ts + i as i64,
            key: k.map(|k| Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Every record readable from the log start: (offset, key, value).
fn read_all(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let r = log.read(offset, 1 << 20, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        for (_, h) in crate::batch::headers(&r.records) {
            offset = offset.max(h.last_offset() + 1);
        }
        let mut b = r.records.clone();
        for set in RecordBatchDecoder::decode_all(&mut b).unwrap() {
            for rec in set.records {
                if rec.offset >= log.log_start_offset() {
                    out.push((
                        rec.offset,
                        String::from_utf8(rec.key.unwrap().to_vec()).unwrap(),
                        rec.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ));
                }
            }
        }
    }
    out
}

/// Every stored batch is valid (CRC) and offsets increase.
fn check_batches(log: &PartitionLog) {
    let r = log
        .read(log.log_start_offset(), usize::MAX >> 1, true)
        .unwrap();
    let mut last = -1;
    let mut pos = 0;
    while pos < r.records.len() {
        let h = crate::batch::BatchHeader::parse(&r.records[pos..]).unwrap();
        let bytes = &r.records[pos..pos + h.total_bytes()];
        if h.records_count > 0 {
            crate::batch::validate(bytes).unwrap();
        }
        assert!(h.base_offset > last, "offsets go back at {}", h.base_offset);
        last = h.last_offset();
        pos += h.total_bytes();
    }
}

/// Kafka's compaction, on a list of records.
#[derive(Default, Clone)]
struct Model {
    /// offset → (key, value)
    present: BTreeMap<i64, (String, Option<String>)>,
    /// tombstone offset → when the clean that first saw it ran
    seen: HashMap<i64, i64>,
    first_dirty: i64,
}

impl Model {
    fn clean(&mut self, end: i64, now: i64, delete_retention_ms: i64) {
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for (o, (k, _)) in self.present.range(..end) {
            latest.insert(k, *o);
        }
        let latest: HashMap<String, i64> = latest
            .into_iter()
            .map(|(k, o)| (k.to_string(), o))
            .collect();
        let seen = &mut self.seen;
        let first_dirty = self.first_dirty;
        self.present.retain(|o, (k, v)| {
            if *o >= end {
                return true;
            }
            if latest[k.as_str()] != *o {
                return false;
            }
            if v.is_none() {
                if *o >= first_dirty {
                    seen.entry(*o).or_insert(now);
                } else if let Some(at) = seen.get(o)
                    && now >= at + delete_retention_ms
                {
                    return false;
                }
            }
            true
        });
        self.first_dirty = self.first_dirty.max(end);
    }

    fn records(&self) -> Vec<(i64, String, Option<String>)> {
        self.present
            .iter()
            .map(|(o, (k, v))| (*o, k.clone(), v.clone()))
            .collect()
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// One to four random records of `keys` keys, one in five a tombstone.
fn random_records(rng: &mut Rng, keys: u64) -> Vec<(String, Option<String>)> {
    let n = 1 + rng.below(4) as usize;
    (0..n)
        .map(|_| {
            let k = format!("k{}", rng.below(keys));
            let v = (rng.below(5) != 0).then(|| format!("v{}", rng.below(1_000_000)));
            (k, v)
        })
        .collect()
}

/// `records` as `keyed` takes them.
fn as_refs(records: &[(String, Option<String>)]) -> Vec<(Option<&str>, Option<&str>)> {
    records
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_deref()))
        .collect()
}

/// Appends a random keyed batch to log and model.
fn append_random(log: &mut PartitionLog, model: &mut Model, rng: &mut Rng, keys: u64, now: i64) {
    let owned = random_records(rng, keys);
    let recs = as_refs(&owned);
    let codec = CODECS[rng.below(5) as usize];
    let a = log.append(&keyed(&recs, codec, now, None), 0, now).unwrap();
    for (i, (k, v)) in owned.into_iter().enumerate() {
        model.present.insert(a.base_offset + i as i64, (k, v));
    }
}

#[test]
fn the_cleaned_log_equals_the_model_at_the_same_offsets() {
    for seed in 1..=24u64 {
        let fs = MemStorage::new();
        let cfg = compacted();
        let mut now = 1_000_000;
        let mut log = open(&fs, cfg.clone(), now);
        let mut model = Model::default();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let keys = 2 + rng.below(30);
        for round in 0..12 {
            for _ in 0..rng.below(40) {
                append_random(&mut log, &mut model, &mut rng, keys, now);
            }
            sync(&mut log);
            now += rng.below(800) as i64;
            if log.clean_now(now, true).unwrap().is_some() {
                let end = log.cleaner_state().first_dirty;
                model.clean(end, now, cfg.delete_retention_ms);
            }
            assert_eq!(read_all(&log), model.records(), "seed {seed} round {round}");
            check_batches(&log);
            if round % 3 == 2 {
                log = open(&fs, cfg.clone(), now);
                assert_eq!(
                    read_all(&log),
                    model.records(),
                    "seed {seed} round {round} reopened"
                );
            }
        }
        // Latest value per key over the whole log, as a consumer reading it all sees it.
        let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (_, k, v) in read_all(&log) {
            latest.insert(k, v);
        }
        let mut want: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (_, (k, v)) in model.present.iter() {
            want.insert(k.clone(), v.clone());
        }
        assert_eq!(latest, want);
    }
}

#[test]
fn tombstones_stay_for_delete_retention_ms_then_go() {
    let fs = MemStorage::new();
    let cfg = compacted();
    let mut log = open(&fs, cfg.clone(), 0);
    let big = "x".repeat(300);
    log.append(
        &keyed(&[(Some("a"), Some(&big))], Compression::None, 0, None),
        0,
        0,
    )
    .unwrap();
    log.append(
        &keyed(&[(Some("a"), None)], Compression::None, 0, None),
        0,
        0,
    )
    .unwrap();
    log.append(
        &keyed(&[(Some("b"), Some(&big))], Compression::None, 0, None),
        0,
        0,
    )
    .unwrap();
    log.append(
        &keyed(&[(Some("c"), Some(&big))], Compression::None, 0, None),
        0,
        0,
    )
    .unwrap();
    sync(&mut log);
    assert!(log.segment_count() >= 3);
    log.clean_now(10, true).unwrap().unwrap();
    let keys = |log: &PartitionLog| {
        read_all(log)
            .into_iter()
            .map(|(o, k, v)| (o, k, v.is_some()))
            .collect::<Vec<_>>()
    };
    // The value under the tombstone is gone, the tombstone stays.
    assert_eq!(keys(&log)[0], (1, "a".into(), false));
    // Before the horizon (clean time 10 + 1000) a clean keeps it; after it, it goes.
    log.clean_now(1009, true).unwrap();
    assert_eq!(keys(&log)[0], (1, "a".into(), false));
    let log2 = open(&fs, cfg.clone(), 1009);
    assert_eq!(log2.cleaner_state(), log.cleaner_state());
    log.clean_now(1010, false).unwrap().expect("a purge is due");
    assert_eq!(keys(&log)[0], (2, "b".into(), true));
    // Fetching inside the removed range returns the next batch.
    let r = log.read(0, 1 << 20, true).unwrap();
    assert_eq!(
        crate::batch::headers(&r.records)
            .next()
            .unwrap()
            .1
            .base_offset,
        2
    );
    let r = log.read(1, 1 << 20, true).unwrap();
    assert_eq!(
        crate::batch::headers(&r.records)
            .next()
            .unwrap()
            .1
            .base_offset,
        2
    );
}

#[test]
fn the_dirty_ratio_and_the_compaction_lags_decide_when_to_clean() {
    let fs = MemStorage::new();
    let cfg = LogConfig {
        min_compaction_lag_ms: 100,
        ..compacted()
    };
    let mut log = open(&fs, cfg.clone(), 0);
    let v = "y".repeat(250);
    for i in 0..12 {
        log.append(
            &keyed(&[(Some("k"), Some(&v))], Compression::None, i * 10, None),
            0,
            i * 10,
        )
        .unwrap();
    }
    sync(&mut log);
    // Everything is younger than min.compaction.lag.ms.
    assert!(
        log.plan_clean(50, false, CleanerLimits::default())
            .is_none()
    );
    // Old enough: the whole log is dirty (ratio 1).
    let s = log.clean_now(1000, false).unwrap().unwrap();
    assert!(s.records_kept < s.records_read);
    // Nothing new: nothing to clean.
    assert!(
        log.plan_clean(1000, false, CleanerLimits::default())
            .is_none()
    );
    // A little new data is below the 0.5 ratio, until max.compaction.lag.ms forces it.
    for i in 0..3 {
        log.append(
            &keyed(&[(Some("k"), Some(&v))], Compression::None, 2000 + i, None),
            0,
            2000,
        )
        .unwrap();
    }
    sync(&mut log);
    let mut lagged = cfg.clone();
    lagged.min_cleanable_dirty_ratio = 0.99;
    log.set_config(lagged.clone());
    assert!(
        log.plan_clean(5000, false, CleanerLimits::default())
            .is_none()
    );
    lagged.max_compaction_lag_ms = 1000;
    log.set_config(lagged);
    assert!(
        log.plan_clean(5000, false, CleanerLimits::default())
            .is_some()
    );
    // Not compacted: never.
    log.set_config(LogConfig {
        compact: false,
        ..cfg
    });
    assert!(
        log.plan_clean(5000, true, CleanerLimits::default())
            .is_none()
    );
}

#[test]
fn an_idempotent_producers_last_batch_survives_as_an_empty_batch() {
    let fs = MemStorage::new();
    let mut log = open(&fs, compacted(), 0);
    let v = "z".repeat(200);
    // Producer 7 writes k twice; its last batch is then overwritten by a non-idempotent write.
    log.append(
        &keyed(
            &[(Some("k"), Some(&v))],
            Compression::Lz4,
            0,
            Some((7, 0, 0)),
        ),
        0,
        0,
    )
    .unwrap();
    log.append(
        &keyed(
            &[(Some("k"), Some(&v))],
            Compression::Lz4,
            0,
            Some((7, 0, 1)),
        ),
        0,
        0,
    )
    .unwrap();
    for _ in 0..4 {
        log.append(
            &keyed(&[(Some("k"), Some(&v))], Compression::None, 0, None),
            0,
            0,
        )
        .unwrap();
    }
    sync(&mut log);
    log.clean_now(10, true).unwrap().unwrap();
    let mut seen = Vec::new();
    log.for_each_batch_header(0, |h| seen.push(*h)).unwrap();
    let p7: Vec<_> = seen.iter().filter(|h| h.producer_id == 7).collect();
    assert_eq!(
        p7.len(),
        1,
        "only the producer's last batch is kept: {seen:?}"
    );
    assert_eq!(
        (p7[0].base_offset, p7[0].records_count, p7[0].base_sequence),
        (1, 0, 1)
    );
    assert_eq!(p7[0].compression(), 0);
    // Once the producer writes again, the next clean drops the old shell.
    log.append(
        &keyed(
            &[(Some("k"), Some(&v))],
            Compression::None,
            0,
            Some((7, 0, 2)),
        ),
        0,
        0,
    )
    .unwrap();
    for _ in 0..3 {
        log.append(
            &keyed(&[(Some("k"), Some(&v))], Compression::None, 0, None),
            0,
            0,
        )
        .unwrap();
    }
    sync(&mut log);
    log.clean_now(20, true).unwrap().unwrap();
    let mut seen = Vec::new();
    log.for_each_batch_header(0, |h| seen.push(*h)).unwrap();
    let p7: Vec<_> = seen.iter().filter(|h| h.producer_id == 7).collect();
    assert_eq!(p7.len(), 1, "{seen:?}");
    assert_eq!((p7[0].base_offset, p7[0].base_sequence), (6, 2));
    // Reopening still finds it (and the CRC of the rewritten header is right).
    let log = open(&fs, compacted(), 20);
    let r = log.read(0, 1 << 20, true).unwrap();
    let (at, h) = crate::batch::headers(&r.records).next().unwrap();
    assert_eq!(h.producer_id, 7);
    let bytes = &r.records[at..at + h.total_bytes()];
    let crc = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&bytes[21..]));
}

/// A log of a few segments with overwrites, synced; returns it and its model.
fn crash_fixture(fs: &MemStorage, seed: u64) -> (PartitionLog, Model) {
    crash_fixture_keys(fs, seed, 6)
}

/// [`crash_fixture`] over `keys` keys (many keys: the cleaned log stays large, in several groups).
fn crash_fixture_keys(fs: &MemStorage, seed: u64, keys: u64) -> (PartitionLog, Model) {
    let mut log = open(fs, compacted(), 0);
    let mut model = Model::default();
    let mut rng = Rng(seed);
    for _ in 0..60 {
        append_random(&mut log, &mut model, &mut rng, keys, 0);
    }
    sync(&mut log);
    assert!(log.segment_count() > 4);
    (log, model)
}

#[test]
fn a_crash_at_any_step_of_the_swap_leaves_a_correct_log() {
    let cfg = compacted();
    let mut steps = 0;
    loop {
        let fs = MemStorage::new();
        let (mut log, model) = crash_fixture_keys(&fs, 99, 40);
        let original = model.records();
        let plan = log.plan_clean(5, true, CleanerLimits::default()).unwrap();
        let end = plan.end;
        let cleaned = plan.copy(&mut |_| true).unwrap();
        assert!(cleaned.groups.len() >= 2, "{} groups", cleaned.groups.len());
        let finished = log.finish_clean_steps(cleaned, steps).unwrap().is_some();
        fs.crash();
        let mut log = open(&fs, cfg.clone(), 5);
        let mut full = model.clone();
        full.clean(end, 5, cfg.delete_retention_ms);
        let got = read_all(&log);
        check_batches(&log);
        // Every record read is an original one at its offset, everything past the cleaned
        // section is there, and the latest value of every key is the model's.
        for r in &got {
            assert!(
                original.contains(r),
                "step {steps}: {r:?} is not an original record"
            );
        }
        let tail = |rs: &[(i64, String, Option<String>)]| {
            rs.iter()
                .filter(|r| r.0 >= end)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(tail(&got), tail(&original), "step {steps}");
        let latest = |rs: &[(i64, String, Option<String>)]| {
            let mut m = BTreeMap::new();
            for (_, k, v) in rs {
                m.insert(k.clone(), v.clone());
            }
            m
        };
        assert_eq!(latest(&got), latest(&original), "step {steps}");
        assert!(
            !fs.list_dir(DIR)
                .unwrap()
                .iter()
                .any(|n| n.ends_with(".cleaned")
                    || n.ends_with(".swap")
                    || n.ends_with(".deleted")),
            "step {steps}: leftovers"
        );
        if finished {
            assert_eq!(got, full.records(), "step {steps}");
        }
        // A clean after the crash reaches the model.
        log.clean_now(5, true).unwrap();
        assert_eq!(
            read_all(&log),
            full.records(),
            "step {steps}: clean after the crash"
        );
        if finished {
            break;
        }
        steps += 1;
    }
    assert!(steps > 5, "only {steps} steps");
}

#[test]
fn a_crash_between_the_swap_renames_completes_the_clean_on_open() {
    // Stop right after every cleaned file became a swap file: the clean is complete.
    let fs = MemStorage::new();
    let (mut log, model) = crash_fixture_keys(&fs, 5, 40);
    let plan = log.plan_clean(5, true, CleanerLimits::default()).unwrap();
    let end = plan.end;
    let cleaned = plan.copy(&mut |_| true).unwrap();
    let groups = cleaned.groups.len();
    assert!(groups >= 2, "{groups} groups");
    log.finish_clean_steps(cleaned, groups).unwrap();
    assert!(
        fs.list_dir(DIR)
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".swap"))
    );
    fs.crash();
    let log = open(&fs, compacted(), 5);
    let mut full = model;
    full.clean(end, 5, 1000);
    assert_eq!(read_all(&log), full.records());
}

#[test]
fn a_log_that_changed_under_the_copy_drops_the_clean() {
    let fs = MemStorage::new();
    let (mut log, model) = crash_fixture(&fs, 11);
    let plan = log.plan_clean(5, true, CleanerLimits::default()).unwrap();
    let cleaned = plan.copy(&mut |_| true).unwrap();
    let second = log.segments.keys().nth(1).copied().unwrap();
    log.delete_records_before(second).unwrap();
    assert!(log.finish_clean(cleaned).unwrap().is_none());
    assert!(
        !fs.list_dir(DIR)
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".cleaned"))
    );
    let want: Vec<_> = model
        .records()
        .into_iter()
        .filter(|r| r.0 >= second)
        .collect();
    assert_eq!(read_all(&log), want);
}

#[test]
fn the_key_limit_cleans_a_large_dirty_section_in_several_passes() {
    let fs = MemStorage::new();
    let (mut log, mut model) = crash_fixture(&fs, 3);
    let limits = CleanerLimits { max_keys: 1 };
    let mut passes = 0;
    while let Some(plan) = log.plan_clean(5, true, limits) {
        let cleaned = plan.copy(&mut |_| true).unwrap();
        log.finish_clean(cleaned).unwrap().unwrap();
        model.clean(log.cleaner_state().first_dirty, 5, 1000);
        assert_eq!(read_all(&log), model.records());
        passes += 1;
        assert!(passes < 100);
    }
    assert!(passes > 1, "{passes} passes");
}

#[test]
fn keyless_records_are_found_in_every_codec() {
    let fs = MemStorage::new();
    let log = open(&fs, compacted(), 0);
    for c in CODECS {
        let b = keyed(
            &[
                (Some("a"), Some("1")),
                (None, Some("2")),
                (Some("b"), None),
                (None, None),
            ],
            c,
            0,
            None,
        );
        assert_eq!(crate::batch::validate_all(&b).unwrap().len(), 1);
        assert_eq!(
            log.keyless_records(&b).unwrap(),
            vec![(0, 1), (0, 3)],
            "{c:?}"
        );
    }
}

#[test]
fn a_stopped_copy_leaves_no_file_behind() {
    let fs = MemStorage::new();
    let (log, model) = crash_fixture(&fs, 17);
    let plan = log.plan_clean(5, true, CleanerLimits::default()).unwrap();
    let mut budget = 80; // past the offset map (one call per batch), inside the rewrite
    assert!(
        plan.copy(&mut |_| {
            budget -= 1;
            budget > 0
        })
        .is_err()
    );
    assert!(
        !fs.list_dir(DIR)
            .unwrap()
            .iter()
            .any(|n| n.ends_with(".cleaned"))
    );
    assert_eq!(read_all(&log), model.records());
}

#[test]
fn a_failed_swap_reopens_the_segments_as_recovery_leaves_them() {
    let fs = MemStorage::new();
    let (mut log, model) = crash_fixture_keys(&fs, 23, 40);
    let plan = log.plan_clean(5, true, CleanerLimits::default()).unwrap();
    let end = plan.end;
    let cleaned = plan.copy(&mut |_| true).unwrap();
    // Stop half-way through the swap, as an I/O error would, then reopen from disk.
    let steps = cleaned.groups.len() + 2;
    assert!(log.finish_clean_steps(cleaned, steps).unwrap().is_none());
    log.reopen_segments().unwrap();
    let mut full = model;
    full.clean(end, 5, 1000);
    assert_eq!(read_all(&log), full.records());
    check_batches(&log);
}

#[test]
fn compact_alone_keeps_old_segments_and_compact_delete_applies_retention() {
    let fs = MemStorage::new();
    let cfg = compacted();
    let mut log = open(&fs, cfg.clone(), 0);
    let v = "r".repeat(250);
    for i in 0..6 {
        log.append(
            &keyed(
                &[(Some(&format!("k{i}")), Some(&v))],
                Compression::None,
                0,
                None,
            ),
            0,
            0,
        )
        .unwrap();
    }
    sync(&mut log);
    let segments = log.segment_count();
    assert!(segments > 2);
    log.set_config(LogConfig {
        retention_ms: 1000,
        ..cfg.clone()
    });
    assert_eq!(log.apply_retention(1_000_000).unwrap(), 0, "compact only");
    log.set_config(LogConfig {
        retention_ms: 1000,
        delete: true,
        ..cfg
    });
    assert_eq!(log.apply_retention(1_000_000).unwrap(), segments - 1);
}

#[test]
fn segments_the_clean_empties_merge_into_their_neighbours() {
    let fs = MemStorage::new();
    let mut log = open(&fs, compacted(), 0);
    let v = "m".repeat(250);
    for _ in 0..12 {
        log.append(
            &keyed(&[(Some("k"), Some(&v))], Compression::None, 0, None),
            0,
            0,
        )
        .unwrap();
    }
    sync(&mut log);
    assert!(log.segment_count() >= 10);
    let s = log.clean_now(10, true).unwrap().unwrap();
    assert_eq!((s.segments_out, log.segment_count()), (1, 2), "{s:?}");
    let reopened = open(&fs, compacted(), 10);
    assert_eq!(read_all(&reopened), read_all(&log));
    assert_eq!(reopened.segment_count(), 2);
}

#[path = "ordered_clean_tests.rs"]
mod ordered;

/// One transactional batch of `producer` (id, epoch, base sequence) with one record.
fn txn_record(key: &str, value: &str, ts: i64, producer: (i64, i16, i32)) -> Bytes {
    batch_of(
        &[(Some(key), Some(value))],
        Compression::None,
        ts,
        Some(producer),
        true,
    )
}

#[test]
fn a_marker_goes_once_its_transaction_left_no_record_and_delete_retention_passed() {
    let fs = MemStorage::new();
    let cfg = compacted();
    let mut log = open(&fs, cfg.clone(), 0);
    let big = "x".repeat(250);
    // Producer 7's transaction is committed; its record is then overwritten.
    log.append(&txn_record("k", &big, 0, (7, 0, 0)), 0, 0)
        .unwrap();
    let m7 = log
        .append(&crate::batch::control_batch(7, 0, true, 0, 5), 0, 5)
        .unwrap()
        .base_offset;
    // Producer 9's transaction is committed and its record stays (its key is not rewritten).
    log.append(&txn_record("j", &big, 6, (9, 0, 0)), 0, 6)
        .unwrap();
    let m9 = log
        .append(&crate::batch::control_batch(9, 0, true, 0, 7), 0, 7)
        .unwrap()
        .base_offset;
    for v in ["k", "a", "b", "c"] {
        log.append(
            &keyed(&[(Some(v), Some(&big))], Compression::None, 8, None),
            0,
            8,
        )
        .unwrap();
    }
    // Producer 7 goes on with another transaction: its first marker is not its last batch
    // (a producer's last batch stays, with the epoch it carries).
    log.append(&txn_record("q", &big, 9, (7, 0, 1)), 0, 9)
        .unwrap();
    let m7b = log
        .append(&crate::batch::control_batch(7, 0, true, 0, 9), 0, 9)
        .unwrap()
        .base_offset;
    sync(&mut log);
    let markers = |log: &PartitionLog| {
        let mut out = Vec::new();
        log.for_each_batch_header(0, |h| {
            if h.is_control() {
                out.push((h.producer_id, h.base_offset));
            }
        })
        .unwrap();
        out
    };
    // Within delete.retention.ms (1000 ms here) both markers stay, although producer 7's
    // record is gone.
    let stats = log.clean_now(500, true).unwrap().unwrap();
    assert_eq!(stats.markers_removed, 0);
    assert!(
        !read_all(&log).iter().any(|(o, k, _)| k == "k" && *o == 0),
        "producer 7's record was compacted away"
    );
    assert_eq!(markers(&log), vec![(7, m7), (9, m9), (7, m7b)]);
    // Past it, the next clean (of newer records) removes producer 7's marker; producer 9's
    // stays with its record.
    for v in ["d", "e", "f"] {
        log.append(
            &keyed(&[(Some(v), Some(&big))], Compression::None, 1_900, None),
            0,
            1_900,
        )
        .unwrap();
    }
    sync(&mut log);
    let stats = log.clean_now(2_000, true).unwrap().unwrap();
    assert_eq!(stats.markers_removed, 1);
    assert_eq!(markers(&log), vec![(9, m9), (7, m7b)]);
    assert!(read_all(&log).iter().any(|(_, k, _)| k == "j"));
    check_batches(&log);
}
