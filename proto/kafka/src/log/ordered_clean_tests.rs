//! Ordered cleans (cluster mode): replicas with different segment layouts, restarts in the
//! middle, and a replica that copies a compacted log from another, all end with the same bytes.

use super::*;

/// Every stored batch from the log start, byte for byte.
fn raw_batches(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let r = log.read(offset, 1 << 20, true).unwrap();
        if r.records.is_empty() {
            return out;
        }
        for (_, h) in crate::batch::headers(&r.records) {
            offset = offset.max(h.last_offset() + 1);
        }
        out.extend_from_slice(&r.records);
    }
}

/// Runs every ordered clean the log holds, as the background cleaner does.
fn run_ordered(log: &mut PartitionLog) {
    while let Some(plan) = log.plan_ordered_clean(CleanerLimits::default()).unwrap() {
        let cleaned = plan.copy(&mut |_| true).unwrap();
        log.finish_clean(cleaned).unwrap();
    }
    assert!(log.cleaner_state().pending.is_empty());
}

/// A random keyed batch, sometimes from an idempotent producer (whose last batch survives as
/// an empty shell when a clean empties it).
fn random_batch(rng: &mut Rng, keys: u64, now: i64, seqs: &mut [i32; 2]) -> Bytes {
    let owned = random_records(rng, keys);
    let n = owned.len();
    let recs = as_refs(&owned);
    let producer = match rng.below(3) {
        0 => None,
        p => {
            let i = p as usize - 1;
            let seq = seqs[i];
            seqs[i] += n as i32;
            Some((100 + i as i64, 0, seq))
        }
    };
    keyed(&recs, CODECS[rng.below(5) as usize], now, producer)
}

#[test]
fn replicas_with_different_layouts_and_a_copied_replica_end_with_the_same_bytes() {
    for seed in 1..=16u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let keys = 2 + rng.below(25);
        let mut now = 1_000_000;
        let layouts = [600u64, 900, 1500];
        let fss: Vec<MemStorage> = layouts.iter().map(|_| MemStorage::new()).collect();
        let cfgs: Vec<LogConfig> = layouts
            .iter()
            .map(|&b| LogConfig {
                segment_bytes: b,
                ..compacted()
            })
            .collect();
        let mut logs: Vec<PartitionLog> = fss
            .iter()
            .zip(&cfgs)
            .map(|(fs, c)| open(fs, c.clone(), now))
            .collect();
        let mut model = Model::default();
        let mut seqs = [0i32; 2];
        let mut index = 0u64;
        // A replica that joins half-way by copying replica 0's (compacted) log.
        let copy_fs = MemStorage::new();
        let mut copy: Option<PartitionLog> = None;
        for round in 0..10 {
            for _ in 0..rng.below(40) {
                let batch = random_batch(&mut rng, keys, now, &mut seqs);
                let mut base = None;
                for log in logs.iter_mut().chain(copy.iter_mut()) {
                    let a = log.append(&batch, 0, now).unwrap();
                    assert!(base.is_none_or(|b| b == a.base_offset));
                    base = Some(a.base_offset);
                }
                let mut b = batch.clone();
                let set = &RecordBatchDecoder::decode_all(&mut b).unwrap()[0];
                for (i, r) in set.records.iter().enumerate() {
                    let k = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
                    let v = r
                        .value
                        .as_ref()
                        .map(|v| String::from_utf8(v.to_vec()).unwrap());
                    model.present.insert(base.unwrap() + i as i64, (k, v));
                }
            }
            for log in logs.iter_mut().chain(copy.iter_mut()) {
                sync(log);
            }
            now += rng.below(800) as i64;
            // The leader (replica 0) orders a clean where its own plan ends, or at any
            // batch boundary.
            let end = logs[0].log_end_offset();
            let upto = match logs[0].plan_clean(now, true, CleanerLimits::default()) {
                Some(p) if rng.below(2) == 0 => p.end(),
                _ => model
                    .present
                    .range(..end)
                    .map(|(o, _)| *o)
                    .find(|_| rng.below(4) == 0)
                    .unwrap_or(end),
            };
            // `upto` must be a batch boundary: round it up to the end of its batch.
            let upto = batch_end_at_or_after(&logs[0], upto);
            index += 1;
            for log in logs.iter_mut().chain(copy.iter_mut()) {
                log.order_clean(index, upto, now, 1000).unwrap();
            }
            // Replica 1 restarts before it runs the clean; the others run it at once.
            logs[1] = open(&fss[1], cfgs[1].clone(), now);
            for log in logs.iter_mut().chain(copy.iter_mut()) {
                run_ordered(log);
            }
            model.clean(upto, now, 1000);
            let want = raw_batches(&logs[0]);
            for (i, log) in logs.iter().enumerate().chain(copy.iter().map(|l| (9, l))) {
                assert_eq!(
                    read_all(log),
                    model.records(),
                    "seed {seed} round {round} replica {i}"
                );
                assert!(
                    raw_batches(log) == want,
                    "seed {seed} round {round}: replica {i}'s bytes differ"
                );
                assert_eq!(
                    log.cleaner_state().passes,
                    logs[0].cleaner_state().passes,
                    "seed {seed} round {round}: replica {i}'s tombstone passes differ"
                );
                check_batches(log);
            }
            if round == 4 {
                // Copy replica 0's log as it is, as a snapshot install does, then take over its
                // cleaner state.
                let mut log = open(&copy_fs, cfgs[2].clone(), now);
                let src = raw_batches(&logs[0]);
                let end = logs[0].log_end_offset();
                log.append_replicated(&src, end, now).unwrap();
                sync(&mut log);
                log.skip_to(end, now).unwrap();
                // Recovery checks the active segment whole (as after kill -9): the gaps a
                // compacted copy has are not a torn tail.
                let mut log =
                    PartitionLog::open(Arc::new(copy_fs.clone()), DIR.into(), cfgs[2].clone(), now)
                        .unwrap();
                let got = raw_batches(&log);
                if got != src {
                    let hs = |b: &[u8]| {
                        crate::batch::headers(b)
                            .map(|(_, h)| (h.base_offset, h.records_count, h.total_bytes()))
                            .collect::<Vec<_>>()
                    };
                    panic!(
                        "seed {seed}: the copy differs before its clean:\n{:?}\n{:?}",
                        hs(&got),
                        hs(&src)
                    );
                }
                log.adopt_cleaner_state(
                    &CleanerState::decode(&logs[0].cleaner_state().encode()).unwrap(),
                )
                .unwrap();
                run_ordered(&mut log);
                assert!(raw_batches(&log) == src, "seed {seed}: the copy differs");
                assert_eq!(log.log_end_offset(), end);
                copy = Some(log);
            }
        }
    }
}

/// The offset after the batch holding `offset` (or `offset` itself at a boundary).
fn batch_end_at_or_after(log: &PartitionLog, offset: i64) -> i64 {
    let mut at = log.log_start_offset();
    let r = log.read(at, usize::MAX >> 1, true).unwrap();
    for (_, h) in crate::batch::headers(&r.records) {
        if h.base_offset >= offset {
            return at.max(h.base_offset);
        }
        at = h.last_offset() + 1;
        if at >= offset {
            return at;
        }
    }
    offset.max(at).min(log.log_end_offset())
}

#[test]
fn an_ordered_clean_survives_a_restart_and_is_recorded_once() {
    let fs = MemStorage::new();
    let cfg = compacted();
    let mut log = open(&fs, cfg.clone(), 1_000);
    for i in 0..30 {
        let k = format!("k{}", i % 3);
        log.append(
            &keyed(&[(Some(&k), Some("v"))], Compression::None, 1_000, None),
            0,
            1_000,
        )
        .unwrap();
    }
    sync(&mut log);
    log.order_clean(7, 30, 2_000, 1000).unwrap();
    // The entry applied again after a restart is not a second order.
    log.order_clean(7, 30, 2_000, 1000).unwrap();
    assert_eq!(log.cleaner_state().pending.len(), 1);
    let mut log = open(&fs, cfg.clone(), 3_000);
    assert_eq!(
        log.cleaner_state().pending.len(),
        1,
        "the order is in the checkpoint"
    );
    run_ordered(&mut log);
    assert_eq!(
        read_all(&log).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![27, 28, 29],
        "the latest record of each key, below the ordered bound"
    );
    let log = open(&fs, cfg, 4_000);
    assert!(log.cleaner_state().pending.is_empty());
    assert_eq!(log.cleaner_state().done.map(|d| d.index), Some(7));
    let mut log = log;
    log.order_clean(7, 30, 2_000, 1000).unwrap();
    assert!(
        log.cleaner_state().pending.is_empty(),
        "a done order is not taken again"
    );
}
