//! Transactions with real clients (issue 14): confluent-kafka's transactional producer and
//! read_committed consumer, kafka-python's as an independent implementation, zombie fencing,
//! the broker's timeout abort, offsets sent to a transaction, and an exactly-once copy loop
//! through kill -9 of the broker.

use std::time::Duration;

use serde_json::Value;
use sluice_tests::{Broker, Streaming, assert_copied_exactly_once, python, python_json, strings};

fn run(script: &str, cmd: &str, b: &Broker, extra: &[&str]) -> Value {
    python_json(script, cmd, &b.addr, extra)
}

fn range(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn confluent_commit_and_abort_as_read_committed_and_uncommitted_see_them() {
    let b = Broker::start(&[]);
    let v = run("transactions_confluent.py", "basic", &b, &["--topic", "tx"]);
    let committed = [range("c", 10), range("c2", 5)].concat();
    assert_eq!(strings(&v["committed"]), committed, "{v}");
    let all = [range("c", 10), range("a", 10), range("c2", 5)].concat();
    assert_eq!(strings(&v["uncommitted"]), all, "{v}");
}

#[test]
fn kafka_python_transactions_are_honoured_the_same_way() {
    let b = Broker::start(&[]);
    let out = python(
        "transactions_kafka_python.py",
        &["--bootstrap", &b.addr, "--topic", "kp"],
    );
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        strings(&v["committed"]),
        [range("c", 5), range("c2", 3)].concat(),
        "{v}"
    );
    assert_eq!(strings(&v["uncommitted"]).len(), 13, "{v}");
    // Five records and a marker per transaction: the last marker ends the log, and the
    // read_committed end offset (the LSO) has caught up with it.
    assert_eq!((v["lso"].as_i64(), v["hw"].as_i64()), (Some(16), Some(16)));
}

#[test]
fn a_second_instance_fences_the_first() {
    let b = Broker::start(&[]);
    let v = run("transactions_confluent.py", "fence", &b, &["--topic", "f"]);
    assert_eq!(v["zombie"]["name"], "_FENCED", "{v}");
    assert_eq!(v["zombie"]["fatal"], true, "{v}");
    assert_eq!(strings(&v["committed"]), vec!["fresh"], "{v}");
}

#[test]
fn a_transaction_left_open_is_aborted_after_its_timeout() {
    let b = Broker::start(&[]);
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
    // Its producer was fenced: the late commit fails.
    assert_eq!(v["commit_after_timeout"]["name"], "_FENCED", "{v}");
}

#[test]
fn offsets_sent_to_a_transaction_count_only_when_it_commits() {
    let b = Broker::start(&[]);
    let v = run(
        "transactions_confluent.py",
        "offsets",
        &b,
        &["--input", "in", "--output", "out"],
    );
    assert_eq!(v["after_commit"], 10, "{v}");
    assert_eq!(v["after_abort"], 10, "{v}");
    assert_eq!(strings(&v["output"]), range("in", 10), "{v}");
}

#[test]
fn exactly_once_copy_through_broker_kill9() {
    const N: usize = 3000;
    const PARTITIONS: &str = "3";
    let mut b = Broker::start(&["--num-partitions", PARTITIONS]);
    // The input: N records spread over three partitions.
    let input = python(
        "groups_idempotent_producer.py",
        &[
            "--bootstrap",
            &b.addr,
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
            &b.addr,
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
    // Kill the broker twice while the copy runs.
    let mut lines = Vec::new();
    for _ in 0..2 {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut commits = 0;
        while commits < 3 && std::time::Instant::now() < deadline {
            if let Some(l) = copier.next_line(Duration::from_millis(100)) {
                if l.contains("\"commit\"") {
                    commits += 1;
                }
                lines.push(l);
            }
        }
        b.kill9();
        std::thread::sleep(Duration::from_millis(300));
        b.restart();
    }
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
}
