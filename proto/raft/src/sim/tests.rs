//! Simulator-driven tests (see docs/raft.md for the soak and replay commands).
//!
//! - `sim_seeds`: `SIM_SEEDS` (default 10,000) randomized histories from `SIM_SEED_START`
//!   (default 0), in parallel, with the statistics the issue asks for.
//! - `sim_replay`: one seed (`SIM_SEED`) with its event log printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Instant;

use super::cluster::{Outcome, SimConfig, run};
use super::{env_u64, replay_command};

/// Worker threads whose name starts with this print no panic message (the injected-bug test
/// expects raft-rs assertions to fire; the failures are still collected and reported).
const QUIET: &str = "sim-quiet";

fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(QUIET))
            {
                default(info);
            }
        }));
    });
}

/// Runs `seeds` with `make` on every core; returns outcomes in seed order, or the failures.
fn run_many(
    seeds: std::ops::Range<u64>,
    make: fn(u64) -> SimConfig,
) -> (Vec<Outcome>, Vec<(u64, String)>) {
    run_many_named(seeds, make, "sim-seeds")
}

fn run_many_named(
    seeds: std::ops::Range<u64>,
    make: fn(u64) -> SimConfig,
    name: &str,
) -> (Vec<Outcome>, Vec<(u64, String)>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let results = Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let seeds = seeds.clone();
            let results = &results;
            let builder = std::thread::Builder::new().name(format!("{name}-{t}"));
            builder
                .spawn_scoped(s, move || {
                    let mut seed = seeds.start + t;
                    while seed < seeds.end {
                        let cfg = make(seed);
                        let r = catch_unwind(AssertUnwindSafe(|| run(&cfg)));
                        let mut guard = results.lock().unwrap();
                        match r {
                            Ok(Ok(outcome)) => guard.0.push(outcome),
                            Ok(Err(violation)) => guard.1.push((seed, violation)),
                            Err(panic) => {
                                let msg = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                guard.1.push((seed, format!("panic: {msg}")));
                            }
                        }
                        seed += threads;
                    }
                })
                .expect("spawn sim worker");
        }
    });
    let (mut ok, mut failed) = results.into_inner().unwrap();
    ok.sort_by_key(|o| o.seed);
    failed.sort_by_key(|f| f.0);
    (ok, failed)
}

fn report_failures(failed: &[(u64, String)]) {
    for (seed, why) in failed.iter().take(20) {
        eprintln!(
            "seed {seed} FAILED: {why}\n  replay: {}",
            replay_command(*seed)
        );
    }
}

/// Percentiles of a sample, for the report.
fn percentiles(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} min={} p50={} p90={} p99={} max={}",
        v.len(),
        v[0],
        p(0.5),
        p(0.9),
        p(0.99),
        v[v.len() - 1]
    )
}

/// Histogram of term-at-first-leader (all groups).
fn term_histogram(outcomes: &[Outcome]) -> String {
    let mut h = std::collections::BTreeMap::new();
    for o in outcomes {
        for &t in &o.first_leader_term {
            *h.entry(t).or_insert(0u64) += 1;
        }
    }
    let total: u64 = h.values().sum();
    h.iter()
        .map(|(t, n)| format!("term {t}: {n} ({:.2}%)", *n as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn sim_seeds() {
    let count = env_u64("SIM_SEEDS", 10_000);
    let start = env_u64("SIM_SEED_START", 0);
    let began = Instant::now();
    let (ok, failed) = run_many(start..start + count, SimConfig::from_seed);
    let wall = began.elapsed();
    report_failures(&failed);
    println!(
        "sim: {} seeds ({start}..{}) in {:.1} s, {} failed",
        count,
        start + count,
        wall.as_secs_f64(),
        failed.len()
    );
    println!(
        "  term at first leader (all groups): {}",
        term_histogram(&ok)
    );
    println!(
        "  time to first leaders, ms: {}",
        percentiles(ok.iter().map(|o| o.first_leaders_ms).collect())
    );
    println!(
        "  election after __meta leader crash, ms: {}",
        percentiles(ok.iter().filter_map(|o| o.crash_election_ms).collect())
    );
    println!(
        "  recovery after heal, ms: {}",
        percentiles(ok.iter().map(|o| o.recovery_ms).collect())
    );
    println!(
        "  leadership transfers under faults, ms: {} (requested {})",
        percentiles(
            ok.iter()
                .flat_map(|o| o.transfer_ms.iter().copied())
                .collect()
        ),
        ok.iter().map(|o| o.transfers_requested).sum::<u64>()
    );
    println!(
        "  committed entries {}, reads checked {}, snapshots installed {}, events {}, simulated {} s",
        ok.iter().map(|o| o.committed).sum::<u64>(),
        ok.iter().map(|o| o.reads_ok).sum::<u64>(),
        ok.iter().map(|o| o.snapshots_installed).sum::<u64>(),
        ok.iter().map(|o| o.events).sum::<u64>(),
        ok.iter().map(|o| o.sim_ms).sum::<u64>() / 1000
    );
    assert!(
        failed.is_empty(),
        "{} seeds failed; first: seed {} ({}); replay: {}",
        failed.len(),
        failed[0].0,
        failed[0].1,
        replay_command(failed[0].0)
    );
    let meta_early = ok.iter().filter(|o| o.first_leader_term[0] <= 2).count();
    assert!(
        meta_early * 100 >= ok.len() * 95,
        "only {meta_early} of {} seeds elected __meta's first leader in term <= 2",
        ok.len()
    );
}

#[test]
fn sim_replay() {
    let seed = env_u64("SIM_SEED", 1);
    let mut cfg = SimConfig::from_seed(seed);
    cfg.history = true;
    println!("replaying seed {seed}: {cfg:?}");
    match run(&cfg) {
        Ok(o) => {
            for line in &o.history {
                println!("{line}");
            }
            let Outcome { history: _, .. } = &o;
            println!(
                "seed {seed} OK: digest {:016x}, first leader terms {:?}, crash election {:?} ms, recovery {} ms, committed {}, reads {}, snapshots {}, events {}",
                o.digest,
                o.first_leader_term,
                o.crash_election_ms,
                o.recovery_ms,
                o.committed,
                o.reads_ok,
                o.snapshots_installed,
                o.events
            );
        }
        Err(violation) => panic!("seed {seed}: {violation}"),
    }
}

#[test]
fn sim_same_seed_same_history() {
    for seed in [3, 4, 77, 12345] {
        let a = run(&SimConfig::from_seed(seed)).expect("run a");
        let b = run(&SimConfig::from_seed(seed)).expect("run b");
        assert_eq!(a.digest, b.digest, "seed {seed} is not deterministic");
        assert_eq!(a.events, b.events);
        let c = run(&SimConfig::from_seed(seed + 1000)).expect("run c");
        assert_ne!(a.digest, c.digest, "different seeds should differ");
    }
    // The human-readable history is identical too.
    let mut cfg = SimConfig::from_seed(5);
    cfg.history = true;
    assert_eq!(run(&cfg).unwrap().history, run(&cfg).unwrap().history);
}

#[test]
fn sim_calm_start_elects_in_first_terms() {
    let (ok, failed) = run_many(0..500, |seed| SimConfig {
        fault_phase_ms: 500,
        ..SimConfig::calm(seed)
    });
    report_failures(&failed);
    assert!(failed.is_empty());
    let meta: Vec<u64> = ok.iter().map(|o| o.first_leader_term[0]).collect();
    let early = meta.iter().filter(|&&t| t <= 2).count();
    println!("calm start: term at first leader: {}", term_histogram(&ok));
    println!(
        "calm start: time to first leaders, ms: {}",
        percentiles(ok.iter().map(|o| o.first_leaders_ms).collect())
    );
    assert!(
        early * 100 >= meta.len() * 95,
        "{early}/{} elected __meta in term <= 2",
        meta.len()
    );
}

#[test]
fn sim_many_quiescing_groups_stay_safe_and_live_under_faults() {
    // A thousand groups, most of them idle most of the time: they quiesce and wake through
    // crashes, partitions, loss, duplication and reordering; every check of `sim_seeds` holds,
    // and every group has a leader again within the heal bound.
    let (ok, failed) = run_many(0..20, |seed| SimConfig {
        groups: 1000,
        ..SimConfig::from_seed(seed)
    });
    report_failures(&failed);
    assert!(failed.is_empty());
    // A dead leader's groups, most of them quiesced, elect within the election timeout (at
    // most 2 s), the node-silence timeout (1 s) and a second for pings, votes and disks.
    let bound_ms = 2_000 + 1_000 + 1_000;
    for o in &ok {
        assert!(
            o.quiesced_max >= 900,
            "seed {}: at most {} groups quiesced",
            o.seed,
            o.quiesced_max
        );
        assert!(
            o.orphans >= 100,
            "seed {}: the crashed node led {}",
            o.seed,
            o.orphans
        );
        let ms = o.orphans_elected_ms.expect("measured");
        assert!(
            ms <= bound_ms,
            "seed {}: the {} groups of the crashed node took {ms} ms to elect",
            o.seed,
            o.orphans
        );
    }
    println!(
        "1000 groups: recovery after healing, ms: {}; most quiesced at once: {}; groups the crashed node led: {}, all re-elected after (ms): {}",
        percentiles(ok.iter().map(|o| o.recovery_ms).collect()),
        percentiles(ok.iter().map(|o| o.quiesced_max).collect()),
        percentiles(ok.iter().map(|o| o.orphans).collect()),
        percentiles(ok.iter().filter_map(|o| o.orphans_elected_ms).collect())
    );
}

#[test]
fn sim_leadership_transfer_and_read_index_without_faults() {
    let (ok, failed) = run_many(0..200, |seed| SimConfig {
        leader_crash: false,
        faults: false,
        transfers: true,
        reads: true,
        fault_phase_ms: 4_000,
        ..SimConfig::from_seed(seed)
    });
    report_failures(&failed);
    assert!(failed.is_empty());
    let requested: u64 = ok.iter().map(|o| o.transfers_requested).sum();
    let done: Vec<u64> = ok
        .iter()
        .flat_map(|o| o.transfer_ms.iter().copied())
        .collect();
    let reads: u64 = ok.iter().map(|o| o.reads_ok).sum();
    println!(
        "transfers: requested {requested}, completed {}: {}",
        done.len(),
        percentiles(done.clone())
    );
    println!("reads checked: {reads}");
    assert!(requested > 500);
    // A transfer is a few network hops (append catch-up + TimeoutNow + one vote round).
    assert!(
        done.len() as u64 * 100 >= requested * 95,
        "only {} of {requested} transfers completed",
        done.len()
    );
    let slow = done.iter().filter(|&&ms| ms > 500).count();
    assert!(
        slow * 100 <= done.len(),
        "{slow} transfers took more than 500 ms"
    );
    assert!(reads > 1_000, "only {reads} ReadIndex answers");
}

#[test]
fn sim_catches_a_disk_that_acks_before_durable() {
    install_quiet_hook();
    let (_, failed) = run_many_named(
        0..300,
        |seed| SimConfig {
            bug_ack_before_durable: true,
            crash_heavy: true,
            disk_latency_us: (5_000, 50_000),
            ..SimConfig::from_seed(seed)
        },
        QUIET,
    );
    for (seed, why) in failed.iter().take(5) {
        println!("seed {seed}: {why}");
    }
    println!("{} of 300 seeds caught the injected bug", failed.len());
    assert!(
        failed.iter().any(|(_, why)| !why.starts_with("panic")),
        "the checker itself never flagged the lost acknowledged writes"
    );
}

#[test]
fn sim_catches_heartbeats_delivered_to_the_wrong_group() {
    install_quiet_hook();
    let (_, failed) = run_many_named(
        0..100,
        |seed| SimConfig {
            bug_misroute_heartbeats: true,
            ..SimConfig::from_seed(seed)
        },
        QUIET,
    );
    for (seed, why) in failed.iter().take(5) {
        println!("seed {seed}: {why}");
    }
    println!(
        "{} of 100 seeds caught the misrouted heartbeats",
        failed.len()
    );
    assert!(
        failed.len() >= 50,
        "only {} of 100 seeds caught heartbeats delivered to the wrong group",
        failed.len()
    );
}

#[test]
fn sim_catches_quiesced_groups_that_never_notice_their_leader_died() {
    install_quiet_hook();
    // The crashed leader stays down while pings in its name keep its quiesced followers
    // believing it alive: the groups it led must be caught without a leader.
    let (_, failed) = run_many_named(
        0..3,
        |seed| SimConfig {
            groups: 1000,
            bug_ghost_pings: true,
            ..SimConfig::from_seed(seed)
        },
        QUIET,
    );
    for (seed, why) in &failed {
        println!("seed {seed}: {why}");
    }
    assert_eq!(failed.len(), 3, "every seed must catch it: {failed:?}");
    assert!(
        failed
            .iter()
            .all(|(_, why)| why.contains("the crashed node led")),
        "{failed:?}"
    );
}

#[test]
fn idle_groups_cost() {
    let groups = env_u64("IDLE_GROUPS", 1000);
    let r = super::idle::measure(groups, 3, 5, env_u64("IDLE_SECS", 5));
    println!("{r}");
    assert_eq!(r.groups_led, groups, "every group elected a leader");
    // One idle group must stay far below a core; the measured number goes into docs/raft.md.
    assert!(r.cpu_ms_per_sim_sec < 2_000.0, "{r}");
}
