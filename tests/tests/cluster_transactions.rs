//! Transactions in cluster mode (issue 14), three real nodes and real clients: the coordinator
//! of a transactional id is the leader of its `__transaction_state` partition, markers reach
//! partitions led by other nodes through WriteTxnMarkers on the replica listener, and a
//! coordinator's or leader's death loses no decision: an exactly-once copy loop still copies
//! each input record exactly once.

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::cluster::{Cluster, create_topic, describe, leader_of};
use sluice_tests::{Streaming, assert_copied_exactly_once, python, python_json as run, strings};

/// Partitions of `__transaction_state` (Kafka's default).
const TXN_PARTITIONS: i32 = 50;
/// Logged when a node starts coordinating the transactions of a `__transaction_state` partition.
const TXN_LOADED: &str = "transaction coordinator partition loaded";

/// The `__transaction_state` partition of a transactional id, as Kafka computes it:
/// `abs(transactionalId.hashCode()) % partitions` with Java's `String.hashCode`.
fn txn_partition(id: &str) -> i32 {
    let hash = id
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    (if hash == i32::MIN { 0 } else { hash.abs() }) % TXN_PARTITIONS
}

/// The node (index) that most recently started coordinating transactional id `id`.
fn coordinator_of(c: &Cluster, id: &str) -> usize {
    let p = txn_partition(id);
    let needle = format!("partition={p} ");
    c.nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.all_logs()
                .lines()
                .filter(|l| l.contains(TXN_LOADED) && l.contains(&needle))
                .map(|l| (l[..30.min(l.len())].to_string(), i))
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or_else(|| panic!("no node coordinates {id} (partition {p})"))
        .1
}

/// The values `prefix-i` for `i < n` that go to `partition` of three (`i % 3`).
fn on(partition: usize, prefix: &str, n: usize) -> Vec<String> {
    (partition..n)
        .step_by(3)
        .map(|i| format!("{prefix}-{i}"))
        .collect()
}

#[test]
fn commit_and_abort_across_nodes_as_read_committed_and_uncommitted_see_them() {
    let c = Cluster::running();
    // Three partitions with one replica each, spread over the nodes: whichever node
    // coordinates the transaction, markers go to partitions led by the other two.
    let v = run(
        "transactions_confluent.py",
        "basic",
        &c.bootstrap(&[0, 1, 2]),
        &["--topic", "tx", "--partitions", "3"],
    );
    let committed: Vec<String> = (0..3)
        .flat_map(|p| [on(p, "c", 10), on(p, "c2", 5)].concat())
        .collect();
    assert_eq!(strings(&v["committed"]), committed, "{v}");
    let all: Vec<String> = (0..3)
        .flat_map(|p| [on(p, "c", 10), on(p, "a", 10), on(p, "c2", 5)].concat())
        .collect();
    assert_eq!(strings(&v["uncommitted"]), all, "{v}");
    // Each partition's replica wrote three markers on request of the coordinator.
    let logs: String = c.nodes.iter().map(|n| n.all_logs()).collect();
    assert!(
        logs.contains("transaction coordinator partition loaded"),
        "no coordinator loaded"
    );
}

#[test]
fn fencing_timeouts_offsets_and_kafka_python_work_as_standalone() {
    let c = Cluster::running();
    let b = c.bootstrap(&[0, 1, 2]);
    let v = run("transactions_confluent.py", "fence", &b, &["--topic", "f"]);
    assert_eq!(v["zombie"]["name"], "_FENCED", "{v}");
    assert_eq!(v["zombie"]["fatal"], true, "{v}");
    assert_eq!(strings(&v["committed"]), vec!["fresh"], "{v}");

    let v = run(
        "transactions_confluent.py",
        "timeout",
        &b,
        &["--topic", "to"],
    );
    assert_eq!(strings(&v["committed"]), vec!["after"], "{v}");
    assert_eq!(
        strings(&v["uncommitted"]),
        vec!["left-open", "after"],
        "{v}"
    );
    assert_eq!(v["commit_after_timeout"]["name"], "_FENCED", "{v}");

    // The group's coordinator and the transaction's may be different nodes.
    let v = run(
        "transactions_confluent.py",
        "offsets",
        &b,
        &["--input", "in", "--output", "out"],
    );
    assert_eq!(v["after_commit"], 10, "{v}");
    assert_eq!(v["after_abort"], 10, "{v}");
    let copied: Vec<String> = (0..10).map(|i| format!("in-{i}")).collect();
    assert_eq!(strings(&v["output"]), copied, "{v}");

    let out = python(
        "transactions_kafka_python.py",
        &["--bootstrap", &b, "--topic", "kp"],
    );
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("c-{i}"))
        .chain((0..3).map(|i| format!("c2-{i}")))
        .collect();
    assert_eq!(strings(&v["committed"]), expected, "{v}");
    assert_eq!(strings(&v["uncommitted"]).len(), 13, "{v}");
    assert_eq!((v["lso"].as_i64(), v["hw"].as_i64()), (Some(16), Some(16)));
}

/// Waits for `n` more commits of the copier (or a minute), collecting its lines.
fn wait_commits(copier: &Streaming, n: usize, lines: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut commits = 0;
    while commits < n && Instant::now() < deadline {
        if let Some(l) = copier.next_line(Duration::from_millis(100)) {
            if l.contains("\"commit\"") {
                commits += 1;
            }
            lines.push(l);
        }
    }
}

#[test]
fn exactly_once_copy_through_coordinator_and_leader_kill9() {
    const N: usize = 3000;
    const PARTITIONS: &str = "3";
    let mut c = Cluster::running();
    let b = c.bootstrap(&[0, 1, 2]);
    create_topic(&b, "eos-in", 3, 3);
    create_topic(&b, "eos-out", 3, 3);
    let input = python(
        "groups_idempotent_producer.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "eos-in",
            "--count",
            &N.to_string(),
            "--rate",
            "20000",
        ],
    );
    assert!(input.contains(&format!("\"acked\": {N}")), "{input}");
    let copier = Streaming::start(
        "transactions_confluent.py",
        &[
            "eos",
            "--bootstrap",
            &b,
            "--input",
            "eos-in",
            "--output",
            "eos-out",
            "--partitions",
            PARTITIONS,
            "--count",
            &N.to_string(),
        ],
    );
    let mut lines = Vec::new();
    // The transaction coordinator's node dies mid-copy: another replica of its
    // `__transaction_state` partition takes over and finishes what was decided.
    wait_commits(&copier, 3, &mut lines);
    let coordinator = coordinator_of(&c, "eos-tx");
    c.nodes[coordinator].kill9();
    std::thread::sleep(Duration::from_millis(500));
    c.nodes[coordinator].restart();
    // Then the leader of an output partition (another node than the coordinator if it can be).
    wait_commits(&copier, 3, &mut lines);
    // Every output partition led (just after the restart one may be between leaders: -1).
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaders: Vec<i64> = loop {
        let md = describe(&b, "eos-out");
        let leaders: Vec<i64> = (0..3).map(|p| leader_of(&md, p)).collect();
        if leaders.iter().all(|&l| l >= 1) {
            break leaders;
        }
        assert!(
            Instant::now() < deadline,
            "eos-out partitions without a leader: {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let victim = leaders
        .iter()
        .map(|&l| l as usize - 1)
        .find(|&i| i != coordinator_of(&c, "eos-tx"))
        .unwrap_or(leaders[0] as usize - 1);
    c.nodes[victim].kill9();
    std::thread::sleep(Duration::from_millis(500));
    c.nodes[victim].restart();
    lines.extend(copier.wait_and_drain(Duration::from_secs(240)));
    let done = lines.iter().any(|l| l.contains("\"event\": \"done\""));
    assert!(done, "copy did not finish:\n{}", lines.join("\n"));
    let dump = run(
        "transactions_confluent.py",
        "read",
        &b,
        &["--topic", "eos-out", "--partitions", PARTITIONS],
    );
    // Every input record exactly once, and in order within its partition.
    assert_copied_exactly_once(&dump["records"], N);
    // The coordinator moved at least once.
    let loads: usize = c
        .nodes
        .iter()
        .map(|n| {
            let needle = format!("partition={} ", txn_partition("eos-tx"));
            n.all_logs()
                .lines()
                .filter(|l| l.contains(TXN_LOADED) && l.contains(&needle))
                .count()
        })
        .sum();
    assert!(loads >= 2, "the coordinator never moved ({loads} loads)");
}
