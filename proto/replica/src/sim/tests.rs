//! The replica simulator's tests:
//! - `replica_sim_seeds`: `SIM_SEEDS` (default 10,000) fault-injected runs from `SIM_SEED_START`,
//!   on every core, each failure with its replay command;
//! - `replica_sim_replay`: one seed (`SIM_SEED`) with its history printed;
//! - a quiet run, determinism, and one test per check that breaks its invariant on purpose.

use std::sync::Mutex;
use std::time::Instant;

use sluice_raft::sim::env_u64;

use super::{Outcome, Sabotage, SimConfig, replay_command, run};

/// Runs `seeds` on every core; returns the outcomes, in seed order.
pub fn run_many(seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    let next = Mutex::new(seeds.clone());
    let out = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some(seed) = next.lock().unwrap().next() else {
                        return;
                    };
                    let o = run(&SimConfig::new(seed));
                    out.lock().unwrap().push(o);
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap();
    out.sort_by_key(|o| o.seed);
    out
}

#[test]
fn replica_sim_seeds() {
    let count = env_u64("SIM_SEEDS", 10_000);
    let start = env_u64("SIM_SEED_START", 0);
    let began = Instant::now();
    let outcomes = run_many(start..start + count);
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    for o in &failed {
        eprintln!(
            "seed {} failed: {}\n  replay: {}",
            o.seed,
            o.violations.join("; "),
            replay_command(o.seed)
        );
    }
    let acked: usize = outcomes.iter().map(|o| o.acked).sum();
    let mut slowest: Vec<u64> = outcomes.iter().map(|o| o.slowest_answer).collect();
    slowest.sort_unstable();
    let mut recovered: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.recovered_after_ms)
        .collect();
    recovered.sort_unstable();
    let mut first: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.first_leader.map(|f| f.0))
        .collect();
    first.sort_unstable();
    let term_1 = outcomes
        .iter()
        .filter(|o| o.first_leader.is_some_and(|f| f.1 == 1))
        .count();
    let pct = |v: &[u64], p: usize| {
        v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "replica sim: {count} seeds ({start}..{}) in {:.1} s, {} failed; {acked} writes acknowledged; slowest answer p50 {} ms, max {} ms; first ack after healing p50 {} ms, max {} ms; first leader p50 {} ms, max {} ms, in term 1 in {term_1} seeds",
        start + count,
        began.elapsed().as_secs_f64(),
        failed.len(),
        pct(&slowest, 50),
        slowest.last().copied().unwrap_or(0),
        pct(&recovered, 50),
        recovered.last().copied().unwrap_or(0),
        pct(&first, 50),
        first.last().copied().unwrap_or(0),
    );
    // The last fault injected before each seed's slowest answer, where it took over 2 s.
    let mut causes: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in outcomes.iter().filter(|o| o.slowest_answer > 2_000) {
        *causes.entry(o.slowest_cause.unwrap_or("none")).or_default() += 1;
    }
    println!("  seeds whose slowest answer took over 2 s, by the last fault before it: {causes:?}");
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed",
        failed.len()
    );
}

#[test]
fn replica_sim_replay() {
    let seed = env_u64("SIM_SEED", 1);
    let mut cfg = SimConfig::new(seed);
    cfg.verbose = std::env::var("SIM_SEED").is_ok();
    if cfg.verbose {
        // The nodes' own logs (RUST_LOG, default info), interleaved with the history.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .without_time()
            .with_test_writer()
            .try_init();
    }
    let o = run(&cfg);
    println!("{o:?}");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

#[test]
fn a_quiet_cluster_acknowledges_every_write_and_keeps_identical_logs() {
    let mut cfg = SimConfig::new(7);
    cfg.faults = false;
    let o = run(&cfg);
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    assert!(o.acked > 500, "{o:?}");
    assert!(o.slowest_answer < 500, "{o:?}");
    // Started together, the nodes elect their first leader in term 1 within a round trip.
    let (at, term) = o.first_leader.expect("a leader");
    assert_eq!(term, 1, "{o:?}");
    assert!(at <= 500, "{o:?}");
}

#[test]
fn the_same_seed_replays_the_same_history() {
    let a = run(&SimConfig::new(42));
    let b = run(&SimConfig::new(42));
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.acked, b.acked);
    let c = run(&SimConfig::new(43));
    assert_ne!(a.digest, c.digest);
}

fn sabotaged(sabotage: Sabotage) -> Vec<String> {
    let mut cfg = SimConfig::new(3);
    cfg.sabotage = Some(sabotage);
    run(&cfg).violations
}

#[test]
fn a_moved_acknowledgement_is_caught() {
    let v = sabotaged(Sabotage::MoveAnAck);
    assert!(v.iter().any(|v| v.contains("acknowledged value")), "{v:?}");
}

#[test]
fn a_diverged_replica_is_caught() {
    let v = sabotaged(Sabotage::DivergeAReplica);
    assert!(v.iter().any(|v| v.contains("differ")), "{v:?}");
}

#[test]
fn a_read_of_an_uncommitted_record_is_caught() {
    let v = sabotaged(Sabotage::PhantomRead);
    assert!(v.iter().any(|v| v.contains("a consumer read")), "{v:?}");
}

#[test]
fn a_cluster_that_never_recovers_is_caught() {
    let v = sabotaged(Sabotage::NeverHeal);
    assert!(v.iter().any(|v| v.contains("after healing")), "{v:?}");
}

/// These seeds restart a partition leader while entries it proposed before the crash are still
/// to be applied: it used to answer new produces with those entries' offsets (proposal
/// sequences restarted at 0 on every start).
#[test]
fn a_restarted_leader_never_answers_with_an_old_entrys_offset() {
    for seed in [3859, 7786, 7906] {
        let o = run(&SimConfig::new(seed));
        assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
        assert!(o.acked > 100, "seed {seed}: {o:?}");
    }
}
