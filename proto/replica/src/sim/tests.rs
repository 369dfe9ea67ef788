//! The replica simulator's tests:
//! - `replica_sim_seeds`: `SIM_SEEDS` (default 10,000) fault-injected runs from `SIM_SEED_START`,
//!   on every core, each failure with its replay command;
//! - `replica_sim_replay`: one seed (`SIM_SEED`) with its history printed;
//! - a quiet run, determinism, and one test per check that breaks its invariant on purpose.

use std::sync::Mutex;
use std::time::Instant;

use sluice_raft::sim::env_u64;

use super::{Fault, Outcome, Sabotage, SimConfig, replay_command, run};

/// Runs `seeds` on every core; returns the outcomes, in seed order.
pub fn run_many(seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    run_many_with(seeds, SimConfig::new)
}

/// [`run_many`] with each seed's configuration from `config`.
pub fn run_many_with(
    seeds: std::ops::Range<u64>,
    config: impl Fn(u64) -> SimConfig + Sync,
) -> Vec<Outcome> {
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
                    let o = run(&config(seed));
                    out.lock().unwrap().push(o);
                }
            });
        }
    });
    let mut out = out.into_inner().unwrap();
    out.sort_by_key(|o| o.seed);
    out
}

/// The failed runs, each printed with its violations and its replay command (`env` first).
fn report_failures<'a>(outcomes: &'a [Outcome], env: &str) -> Vec<&'a Outcome> {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    for o in &failed {
        eprintln!(
            "seed {} failed: {}\n  replay: {env}{}",
            o.seed,
            o.violations.join("; "),
            replay_command(o.seed)
        );
    }
    failed
}

#[test]
fn replica_sim_seeds() {
    let count = env_u64("SIM_SEEDS", 10_000);
    let start = env_u64("SIM_SEED_START", 0);
    let began = Instant::now();
    let outcomes = run_many(start..start + count);
    let failed = report_failures(&outcomes, "");
    let acked: usize = outcomes.iter().map(|o| o.acked).sum();
    let mut slowest: Vec<u64> = outcomes.iter().map(|o| o.slowest_answer).collect();
    slowest.sort_unstable();
    let mut owed: Vec<u64> = outcomes.iter().map(|o| o.slowest_owed).collect();
    owed.sort_unstable();
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
    let images: usize = outcomes.iter().map(|o| o.meta_images).sum();
    let with_images = outcomes.iter().filter(|o| o.meta_images > 0).count();
    println!(
        "replica sim: {count} seeds ({start}..{}) in {:.1} s, {} failed; {acked} writes acknowledged; {images} __meta images installed, in {with_images} seeds; slowest answer p50 {} ms, max {} ms; slowest answer from a running node p50 {} ms, max {} ms; first ack after healing p50 {} ms, max {} ms; first leader p50 {} ms, max {} ms, in term 1 in {term_1} seeds",
        start + count,
        began.elapsed().as_secs_f64(),
        failed.len(),
        pct(&slowest, 50),
        slowest.last().copied().unwrap_or(0),
        pct(&owed, 50),
        owed.last().copied().unwrap_or(0),
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
    let mut late: Vec<(u64, u64)> = outcomes
        .iter()
        .map(|o| (o.slowest_owed, o.seed))
        .filter(|(ms, _)| *ms > 2_000)
        .collect();
    late.sort_unstable_by(|a, b| b.cmp(a));
    late.truncate(10);
    println!("  slowest answers from running nodes over 2 s (ms, seed): {late:?}");
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed",
        failed.len()
    );
}

#[test]
fn replica_sim_with_idle_partitions() {
    const PARTITIONS: i32 = 1_000;
    // The written partition keeps every Kafka-level check; 999 idle ones quiesce, must wake
    // through crashes, wiped disks, partitions, bridges, pauses and clock jumps, and each ends
    // with one leader on a cluster where all of them are hosted everywhere.
    let count = env_u64("SIM_IDLE_SEEDS", 30);
    let began = Instant::now();
    let outcomes = run_many_with(0..count, |seed| SimConfig {
        partitions: PARTITIONS,
        // Checked in every other run; here it would more than double the run time.
        commit_check: false,
        ..SimConfig::new(seed)
    });
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    for o in &failed {
        eprintln!("seed {} failed: {}", o.seed, o.violations.join("; "));
    }
    let mut quiet: Vec<usize> = outcomes.iter().map(|o| o.quiesced_at_end).collect();
    quiet.sort_unstable();
    println!(
        "replica sim, {PARTITIONS} partitions: {count} seeds in {:.1} s, {} failed; groups quiesced on a node at the end: min {}, max {}",
        began.elapsed().as_secs_f64(),
        failed.len(),
        quiet.first().copied().unwrap_or(0),
        quiet.last().copied().unwrap_or(0)
    );
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed",
        failed.len()
    );
    assert!(
        quiet.iter().all(|&q| q >= PARTITIONS as usize * 9 / 10),
        "idle partitions did not quiesce: {quiet:?}"
    );
}

/// With `SIM_SEED` set, a replay prints the history and the nodes' own logs (`RUST_LOG`,
/// default info) interleaved.
fn verbose() -> bool {
    let on = std::env::var("SIM_SEED").is_ok();
    if on {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .without_time()
            .with_test_writer()
            .try_init();
    }
    on
}

#[test]
fn replica_sim_replay() {
    let seed = env_u64("SIM_SEED", 1);
    let mut cfg = SimConfig::new(seed);
    cfg.verbose = verbose();
    cfg.moves = env_u64("SIM_MOVES", 0) == 1;
    cfg.members = env_u64("SIM_MEMBERS", 0) == 1;
    let o = run(&cfg);
    println!("{o:?}");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

/// Partition moves among the faults (`SimConfig::moves`): `SIM_MOVE_SEEDS` (default 1,000)
/// runs in which partition 0 goes from three replicas to two and back while nodes crash, lose
/// their disks and are cut off. Every check holds across the membership changes: one leader
/// per term, no acknowledged write lost, identical replicas, and every move completes.
#[test]
fn replica_sim_moves_seeds() {
    let count = env_u64("SIM_MOVE_SEEDS", 1_000);
    let start = env_u64("SIM_SEED_START", 0);
    let began = Instant::now();
    let outcomes = run_many_with(start..start + count, |seed| SimConfig {
        moves: true,
        ..SimConfig::new(seed)
    });
    let failed = report_failures(&outcomes, "SIM_MOVES=1 ");
    let moves: usize = outcomes.iter().map(|o| o.moves).sum();
    let joint: usize = outcomes.iter().map(|o| o.joint_configs).sum();
    let swaps: usize = outcomes.iter().map(|o| o.joint_swaps).sum();
    println!(
        "replica sim with moves: {count} seeds in {:.1} s, {} failed, {moves} moves, {joint} joint configurations, {swaps} of them swaps",
        began.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(moves > count as usize / 2, "moves were injected: {moves}");
    assert!(
        joint > count as usize / 4,
        "moves went through joint consensus: {joint}"
    );
    assert!(
        swaps > count as usize / 40,
        "swaps changed both majorities: {swaps}"
    );
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed",
        failed.len()
    );
}

/// Node membership among the faults (`SimConfig::members`): `SIM_MEMBER_SEEDS` (default 1,000)
/// runs in which a fourth node joins the cluster and leaves it again while the others crash,
/// lose their disks and are cut off. One leader per term in every group across `__meta`'s
/// configuration changes, one `__meta` log (no two committed entries at one index), no
/// acknowledged write lost, and every addition and removal completes after healing.
#[test]
fn replica_sim_members_seeds() {
    let count = env_u64("SIM_MEMBER_SEEDS", 1_000);
    let start = env_u64("SIM_SEED_START", 0);
    let began = Instant::now();
    let outcomes = run_many_with(start..start + count, |seed| SimConfig {
        members: true,
        ..SimConfig::new(seed)
    });
    let failed = report_failures(&outcomes, "SIM_MEMBERS=1 ");
    let changes: usize = outcomes.iter().map(|o| o.member_changes).sum();
    let joint: usize = outcomes.iter().map(|o| o.joint_configs).sum();
    println!(
        "replica sim with membership changes: {count} seeds in {:.1} s, {} failed, {changes} changes, {joint} joint configurations",
        began.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        changes > count as usize / 2,
        "changes were injected: {changes}"
    );
    assert!(
        joint > count as usize / 2,
        "changes went through joint consensus: {joint}"
    );
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed",
        failed.len()
    );
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

/// Whether some seed of `seeds`, run with `sabotage` (and `tweak`), reports a violation
/// containing `needle`.
fn caught_in_some_seed(
    seeds: std::ops::Range<u64>,
    sabotage: Sabotage,
    tweak: impl Fn(&mut SimConfig),
    needle: &str,
) -> bool {
    seeds.into_iter().any(|seed| {
        let mut cfg = SimConfig::new(seed);
        cfg.sabotage = Some(sabotage);
        tweak(&mut cfg);
        run(&cfg).violations.iter().any(|v| v.contains(needle))
    })
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
fn a_late_answer_is_caught() {
    // Seeds in which node 1 answers produces (it leads the partition at some point).
    let caught = caught_in_some_seed(0..10, Sabotage::LateAnswers, |_| {}, "to answer a produce");
    assert!(caught, "an answer later than the bound is reported");
}

#[test]
fn an_idle_partition_left_without_a_leader_is_caught() {
    let mut cfg = SimConfig::new(3);
    cfg.sabotage = Some(Sabotage::SilenceAnIdlePartition);
    cfg.partitions = 5;
    let v = run(&cfg).violations;
    assert!(
        v.iter().any(|v| v.starts_with("partition 1: leaders")),
        "{v:?}"
    );
}

#[test]
fn a_forked_meta_log_is_caught() {
    let v = sabotaged(Sabotage::ForkMeta);
    assert!(
        v.iter().any(|v| v.contains("committed __meta entry")),
        "{v:?}"
    );
}

#[test]
fn a_meta_image_that_is_not_the_state_at_its_index_is_caught() {
    let caught = caught_in_some_seed(
        0..20,
        Sabotage::CorruptMetaImage,
        |_| {},
        "hold different metadata",
    );
    assert!(caught, "a node whose installed image differs is reported");
}

#[test]
fn a_node_addition_that_never_completes_is_caught() {
    // Seeds whose faults add the extra node (and leave it added at the end).
    let caught = caught_in_some_seed(
        0..20,
        Sabotage::IgnoreTheJoiner,
        |cfg| cfg.members = true,
        "membership did not settle",
    );
    assert!(caught, "a learner that never catches up is reported");
}

#[test]
fn a_commit_without_a_majority_is_caught() {
    let v = sabotaged(Sabotage::UnrecordedAcks);
    assert!(
        v.iter().any(|v| v.contains("not a majority of voters")),
        "{v:?}"
    );
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
    for seed in [2703, 18168] {
        let o = run(&SimConfig::new(seed));
        assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
        assert!(o.acked > 100, "seed {seed}: {o:?}");
    }
}

/// One 15 s fault on the partition leader, per kind: the leader answers every request it holds
/// within [`SINGLE_FAULT_BOUND_MS`] (it steps down, or closes its connections once cut off),
/// and the cluster acknowledges writes again within 3 s of the fault beginning.
#[test]
fn a_faulty_leader_answers_within_an_election_timeout_and_writes_resume_within_3_s() {
    let seeds = env_u64("SIM_SINGLE_SEEDS", 50);
    for fault in [
        Fault::Isolation,
        Fault::CannotSend,
        Fault::CannotReceive,
        Fault::Bridge,
    ] {
        let outcomes = run_many_with(0..seeds, |seed| {
            let mut cfg = SimConfig::new(seed);
            cfg.only = Some(fault);
            cfg.fault_ms = 15_000;
            cfg
        });
        let mut owed = Vec::new();
        let mut gaps = Vec::new();
        for o in outcomes {
            let seed = o.seed;
            let replay = format!("SIM_FAULT={fault:?} {}", replay_command(seed))
                .replace("replica_sim_replay", "replica_sim_replay_single_fault");
            assert!(
                o.violations.is_empty(),
                "{fault:?}, seed {seed}: {:?}\n  replay: {replay}",
                o.violations
            );
            assert!(
                o.slowest_owed <= SINGLE_FAULT_BOUND_MS,
                "{fault:?}, seed {seed}: a request waited {} ms\n  replay: {replay}",
                o.slowest_owed
            );
            assert!(
                o.longest_no_ack < 3_000,
                "{fault:?}, seed {seed}: no acknowledgement for {} ms\n  replay: {replay}",
                o.longest_no_ack
            );
            owed.push(o.slowest_owed);
            gaps.push(o.longest_no_ack);
        }
        owed.sort_unstable();
        gaps.sort_unstable();
        println!(
            "{fault:?} for 15 s, {seeds} seeds: slowest answer p50 {} ms, max {} ms; longest stretch without an acknowledgement p50 {} ms, max {} ms",
            owed[owed.len() / 2],
            owed.last().unwrap(),
            gaps[gaps.len() / 2],
            gaps.last().unwrap()
        );
    }
}

/// The longest election timeout (1.6 s) plus round trips.
const SINGLE_FAULT_BOUND_MS: u64 = 2_000;

/// One single-fault run with its history (`SIM_SEED`; `SIM_FAULT` = Isolation, CannotSend,
/// CannotReceive, Bridge or WipedVoter).
#[test]
fn replica_sim_replay_single_fault() {
    let seed = env_u64("SIM_SEED", 1);
    let fault = match std::env::var("SIM_FAULT").as_deref() {
        Ok("CannotSend") => Fault::CannotSend,
        Ok("CannotReceive") => Fault::CannotReceive,
        Ok("Bridge") => Fault::Bridge,
        Ok("WipedVoter") => Fault::WipedVoter,
        _ => Fault::Isolation,
    };
    let mut cfg = SimConfig::new(seed);
    cfg.only = Some(fault);
    if fault != Fault::WipedVoter {
        cfg.fault_ms = 15_000;
    }
    cfg.verbose = verbose();
    let o = run(&cfg);
    println!("{o:?}");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

/// A node that lost its data dir must not vote until it caught up: with nodes 2 (never
/// reached) and 3 (wiped) both empty and node 1 cut off, a vote from node 3 would elect node 2
/// in a term node 1 already led, with an empty log (the double vote). With the fix, no leader
/// is elected until node 1 is back, nothing acknowledged is lost, and node 3 catches up.
#[test]
fn a_node_that_lost_its_disk_does_not_vote_until_it_caught_up() {
    let outcomes = run_many_with(0..env_u64("SIM_SINGLE_SEEDS", 50), |seed| {
        let mut cfg = SimConfig::new(seed);
        cfg.only = Some(Fault::WipedVoter);
        cfg
    });
    for o in outcomes {
        assert!(
            o.violations.is_empty(),
            "seed {}: {:?}\n  replay: SIM_FAULT=WipedVoter {}",
            o.seed,
            o.violations,
            replay_command(o.seed).replace("replica_sim_replay", "replica_sim_replay_single_fault")
        );
        assert!(o.acked > 100, "seed {}: {o:?}", o.seed);
    }
}

/// Regressions found by swaps (a partition moving from one pair of nodes to another):
/// - seed 8988: a leader elected in the old half of a joint configuration was removed when
///   raft-rs left it, kept leading, and raft-rs panicked at its next commit (it now steps down);
/// - seed 8712: a replica moved away crashed before its copy's deletion was durable; added
///   back, its snapshot install kept the stale applied mark and skipped the entries after the
///   snapshot (the install now replaces the mark and cuts records past the snapshot).
#[test]
fn swaps_that_once_broke_a_removed_leader_and_a_stale_copy() {
    for seed in [8988, 8712] {
        let o = run(&SimConfig {
            moves: true,
            ..SimConfig::new(seed)
        });
        assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
        assert!(o.joint_swaps > 0, "seed {seed} swaps: {o:?}");
    }
}
