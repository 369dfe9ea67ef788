//! Partition reassignment (KIP-455) on a 3-node cluster, through kafka-python's
//! `alter_partition_reassignments` / `list_partition_reassignments`, while an acks=all
//! idempotent librdkafka producer writes: the partition grows onto two other nodes and leaves
//! its first one, then comes back, and every acknowledged record is read back once, in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::cluster::{self, Cluster};
use sluice_tests::python;

fn reassign(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = vec!["--bootstrap", bootstrap];
    all.extend_from_slice(args);
    let out = python("reassign.py", &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Moves `topic`-0 to `replicas` and waits until the move is complete (Metadata lists exactly
/// them, all in sync, and no move is listed).
fn move_to(bootstrap: &str, topic: &str, replicas: &[i32]) -> Value {
    let list: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
    let list = list.join(",");
    let r = reassign(bootstrap, &["alter", "--topic", topic, "--replicas", &list]);
    assert!(r["error"].is_null(), "{r}");
    reassign(
        bootstrap,
        &[
            "wait",
            "--topic",
            topic,
            "--replicas",
            &list,
            "--timeout",
            "90",
        ],
    )
}

/// Waits until node `i` holds no records of `topic`-0.
fn wait_dropped(c: &Cluster, i: usize, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = cluster::log_bytes(&c.data_dir(i), topic, 0).unwrap_or_default();
        if bytes.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} still holds {} bytes of {topic}-0 after it left the partition:\n{}",
            i + 1,
            bytes.len(),
            cluster::listing(&c.data_dir(i))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads `topic`-0 back and checks every acknowledged record is there once, at the offset it
/// was acknowledged at, and that no value appears twice.
fn check_read_back(bootstrap: &str, topic: &str, acked: &[&cluster::Ack]) {
    let out = python(
        "cluster_dump.py",
        &["--bootstrap", bootstrap, "--topic", topic],
    );
    let dump: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let records: BTreeMap<i64, String> = dump["partitions"]["0"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for v in records.values() {
        assert!(seen.insert(v), "{v} appears twice");
    }
    for a in acked {
        assert_eq!(
            records.get(&a.offset),
            Some(&a.value),
            "acknowledged {} at offset {} is not there",
            a.value,
            a.offset
        );
    }
}

#[test]
fn a_partition_moves_to_other_nodes_and_back_while_a_producer_writes() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    cluster::create_topic(&all, "mv", 1, 1);
    let md = cluster::describe(&all, "mv");
    let home = md["partitions"]["0"]["replicas"][0].as_i64().unwrap() as i32;
    let others: Vec<i32> = (1..=3).filter(|n| *n != home).collect();
    let before = cluster::produce(&all, "mv", 1, "before", 300, 1000, &[]);
    before.assert_complete();

    // Nothing moves yet; a cancel of nothing and a move to an unknown node are refused.
    assert_eq!(reassign(&all, &["list"]), serde_json::json!({}));
    let r = reassign(&all, &["cancel", "--topic", "mv"]);
    assert_eq!(r["error"], "NoReassignmentInProgressError", "{r}");
    let r = reassign(&all, &["alter", "--topic", "mv", "--replicas", "9"]);
    assert_eq!(r["error"], "InvalidReplicationAssignmentError", "{r}");

    // From its one node to the two others (replication factor 1 → 2), while a producer writes.
    let (during, moved) = std::thread::scope(|s| {
        let producer = s.spawn(|| cluster::produce(&all, "mv", 1, "during", 3000, 500, &[]));
        std::thread::sleep(Duration::from_millis(700));
        let moved = move_to(&all, "mv", &others);
        (producer.join().unwrap(), moved)
    });
    during.assert_complete();
    assert_eq!(moved["replicas"], serde_json::json!(others), "{moved}");
    assert_eq!(reassign(&all, &["list"]), serde_json::json!({}));
    wait_dropped(&c, (home - 1) as usize, "mv");
    let acked: Vec<&cluster::Ack> = before.acks.iter().chain(during.acks.iter()).collect();
    check_read_back(&all, "mv", &acked);

    // And back to where it started (2 → 1), the producer still writing.
    let (back, moved) = std::thread::scope(|s| {
        let producer = s.spawn(|| cluster::produce(&all, "mv", 1, "back", 2000, 500, &[]));
        std::thread::sleep(Duration::from_millis(500));
        let moved = move_to(&all, "mv", &[home]);
        (producer.join().unwrap(), moved)
    });
    back.assert_complete();
    assert_eq!(moved["leader"], home, "{moved}");
    for o in &others {
        wait_dropped(&c, (*o - 1) as usize, "mv");
    }
    let acked: Vec<&cluster::Ack> = before
        .acks
        .iter()
        .chain(during.acks.iter())
        .chain(back.acks.iter())
        .collect();
    check_read_back(&all, "mv", &acked);

    // An idle partition moves too: nothing is written while its new replica is seeded.
    cluster::create_topic(&all, "idle", 1, 1);
    let md = cluster::describe(&all, "idle");
    let from = md["partitions"]["0"]["replicas"][0].as_i64().unwrap() as i32;
    let to = if from == 3 { 1 } else { from + 1 };
    let written = cluster::produce(&all, "idle", 1, "idle", 200, 1000, &[]);
    written.assert_complete();
    std::thread::sleep(Duration::from_millis(500));
    let moved = move_to(&all, "idle", &[to]);
    assert_eq!(moved["leader"], to, "{moved}");
    wait_dropped(&c, (from - 1) as usize, "idle");
    check_read_back(&all, "idle", &written.acks.iter().collect::<Vec<_>>());
}

/// Kafka's reassignment throttle: with `*.replication.throttled.rate` set on every node and the
/// topic's `*.replication.throttled.replicas=*` (what `kafka-reassign-partitions --throttle`
/// sets), a new replica copies at most that many bytes per second, so a move of 3 MB at
/// 100 KB/s is still under way seconds later; removing the throttle lets it finish. The rates
/// are dynamic broker configs that DescribeConfigs reports with their source.
#[test]
fn a_throttled_move_copies_at_its_rate_until_the_throttle_is_lifted() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    // Raft logs compacted early: the new replica catches up by copying records (the
    // throttled path), not from Raft entries still held in memory.
    c.compact_raft_logs_often();
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    cluster::create_topic(&all, "slow", 1, 1);
    let md = cluster::describe(&all, "slow");
    let home = md["partitions"]["0"]["replicas"][0].as_i64().unwrap() as i32;
    let other = if home == 3 { 1 } else { home + 1 };
    let filled = reassign(&all, &["fill", "--topic", "slow", "--mb", "3"]);
    assert_eq!(filled["records"], 300, "{filled}");

    // Invalid throttles are refused as Kafka refuses them.
    let bad = reassign(&all, &["bad-throttle"]);
    assert!(
        bad["negative"]
            .as_str()
            .unwrap_or("")
            .contains("at least 0"),
        "{bad}"
    );
    assert!(
        bad["static"]
            .as_str()
            .unwrap_or("")
            .contains("Cannot update these configs dynamically"),
        "{bad}"
    );

    let r = reassign(&all, &["throttle", "--topic", "slow", "--rate", "100000"]);
    assert!(r["error"].is_null(), "{r}");
    for node in 1..=3 {
        let configs = reassign(&all, &["broker-configs", "--node", &node.to_string()]);
        assert_eq!(
            configs["leader.replication.throttled.rate"],
            serde_json::json!(["100000", "DYNAMIC_BROKER_CONFIG"]),
            "node {node}: {configs}"
        );
    }
    let list = format!("{home},{other}");
    let r = reassign(&all, &["alter", "--topic", "slow", "--replicas", &list]);
    assert!(r["error"].is_null(), "{r}");
    // 3 MB at 100 KB/s takes 30 s; unthrottled it takes well under one.
    std::thread::sleep(Duration::from_secs(5));
    let ongoing = reassign(&all, &["list"]);
    assert_eq!(
        ongoing["slow-0"]["adding"],
        serde_json::json!([other]),
        "the throttled move should still be copying: {ongoing}"
    );
    // The replica being added is a learner: DescribeQuorum lists it among the observers,
    // and `cluster status` reports its lag beside the voters'.
    let (_, out, err) = sluice_tests::run_sluice(&[
        "cluster",
        "status",
        "--bootstrap",
        &all,
        "--json",
        "--all",
        "--timeout-ms",
        "2000",
    ]);
    let doc: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}): {out}\n{err}"));
    let slow = doc["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == "slow")
        .cloned()
        .unwrap_or_default();
    assert!(
        slow["lag"][other.to_string().as_str()].is_i64(),
        "the learner's lag is reported: {slow:#}"
    );
    let copied = cluster::log_bytes(&c.data_dir((other - 1) as usize), "slow", 0)
        .unwrap_or_default()
        .len();
    assert!(
        copied < 2_000_000,
        "node {other} copied {copied} bytes in 5 s at 100 KB/s"
    );

    // Lifted: the move completes, and the rates are back to Kafka's default.
    let r = reassign(&all, &["throttle", "--topic", "slow", "--rate", ""]);
    assert!(r["error"].is_null(), "{r}");
    let moved = reassign(
        &all,
        &[
            "wait",
            "--topic",
            "slow",
            "--replicas",
            &list,
            "--timeout",
            "60",
        ],
    );
    assert_eq!(
        moved["replicas"],
        serde_json::json!([home, other]),
        "{moved}"
    );
    let configs = reassign(&all, &["broker-configs", "--node", &home.to_string()]);
    assert_eq!(
        configs["follower.replication.throttled.rate"],
        serde_json::json!(["9223372036854775807", "DEFAULT_CONFIG"]),
        "{configs}"
    );
}

/// A node that was down while a partition moved off it drops its copy once it is back: the
/// move completed without it (replication factor 3 → 2, the two others a majority), and the
/// records it still holds belong to no replica.
#[test]
fn a_node_down_during_a_move_off_it_drops_its_copy_when_it_returns() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    cluster::create_topic(&all, "away", 1, 3);
    let written = cluster::produce(&all, "away", 1, "away", 200, 1000, &[]);
    written.assert_complete();
    let md = cluster::describe(&all, "away");
    let leader = cluster::leader_of(&md, 0) as i32;
    let down = (1..=3).find(|n| *n != leader).unwrap();
    let stay: Vec<i32> = (1..=3).filter(|n| *n != down).collect();
    let di = (down - 1) as usize;
    c.wait_for_identical_logs("away", 0, Duration::from_secs(30));
    c.nodes[di].kill9();
    let up: Vec<usize> = (0..3).filter(|i| *i != di).collect();
    let live = c.bootstrap(&up);
    move_to(&live, "away", &stay);
    c.nodes[di].restart();
    wait_dropped(&c, di, "away");
    check_read_back(&all, "away", &written.acks.iter().collect::<Vec<_>>());
}
