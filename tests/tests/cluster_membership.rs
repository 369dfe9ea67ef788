//! Changing a running cluster's nodes (KIP-853's AddRaftVoter / RemoveRaftVoter through
//! `sluice cluster add-node` / `remove-node`, new nodes started with `--join`) while an acks=all
//! idempotent librdkafka producer writes: the cluster grows from 3 to 5 nodes and partitions
//! move onto the new ones (kafka-python's AlterPartitionReassignments), then shrinks back to 3
//! (each removed node's replicas move first); a node killed for good is replaced by a new one.
//! Every acknowledged record is read back exactly once, at its offset, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::cluster::{self, Cluster};
use sluice_tests::python;

/// Reads `topic` back and checks that each partition holds every acknowledged record once,
/// at the offset it was acknowledged at, in order, and no value twice.
fn check_read_back(bootstrap: &str, topic: &str, acked: &[&cluster::Ack]) {
    let out = python(
        "cluster_dump.py",
        &["--bootstrap", bootstrap, "--topic", topic],
    );
    let dump: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut seen = std::collections::HashSet::new();
    let mut by_partition: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    for (p, part) in dump["partitions"].as_object().expect("partitions") {
        let records = by_partition.entry(p.parse().unwrap()).or_default();
        for r in part["records"].as_array().expect("records") {
            let v = r[1].as_str().unwrap().to_string();
            assert!(seen.insert(v.clone()), "{v} appears twice");
            records.insert(r[0].as_i64().unwrap(), v);
        }
    }
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for a in acked {
        assert_eq!(
            by_partition
                .get(&a.partition)
                .and_then(|r| r.get(&a.offset)),
            Some(&a.value),
            "acknowledged {} at {topic}-{} offset {} is not there",
            a.value,
            a.partition,
            a.offset
        );
        let prev = last.insert(a.partition, a.offset);
        assert!(
            prev.is_none_or(|p| p < a.offset),
            "acknowledged out of order in partition {}",
            a.partition
        );
    }
}

fn reassign(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = vec!["--bootstrap", bootstrap];
    all.extend_from_slice(args);
    let out = python("reassign.py", &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Moves `topic`-`partition` to `replicas` and waits until Metadata lists exactly them.
fn move_to(bootstrap: &str, topic: &str, partition: i32, replicas: &[i32]) {
    let list: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
    let list = list.join(",");
    let p = partition.to_string();
    let r = reassign(
        bootstrap,
        &[
            "alter",
            "--topic",
            topic,
            "--partition",
            &p,
            "--replicas",
            &list,
        ],
    );
    assert!(r["error"].is_null(), "{r}");
    let r = reassign(
        bootstrap,
        &[
            "wait",
            "--topic",
            topic,
            "--partition",
            &p,
            "--replicas",
            &list,
            "--timeout",
            "90",
        ],
    );
    assert_eq!(r["replicas"], serde_json::json!(replicas), "{r}");
}

/// The node ids Metadata lists as brokers, and every replica of `topic`.
fn brokers_and_replicas(bootstrap: &str, topic: &str) -> (Vec<i64>, Vec<i64>) {
    let md = cluster::describe(bootstrap, topic);
    let mut brokers: Vec<i64> = md["brokers"]
        .as_object()
        .map(|b| b.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default();
    brokers.sort_unstable();
    let mut replicas: Vec<i64> = md["partitions"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| {
            p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_i64().unwrap())
        })
        .collect();
    replicas.sort_unstable();
    replicas.dedup();
    (brokers, replicas)
}

#[test]
fn the_cluster_grows_to_five_nodes_and_shrinks_back_while_a_producer_writes() {
    let mut c = Cluster::running();
    let all = c.bootstrap(&[0, 1, 2]);
    cluster::create_topic(&all, "grow", 2, 3);

    // Node 4 is started before it is added: it waits, retrying. Node 5 is added first and
    // started after.
    let four = c.new_node("127.0.0.1");
    let five = c.new_node("127.0.0.1");
    c.start_node(four);
    std::thread::sleep(Duration::from_millis(1500));
    let grown = std::thread::scope(|s| {
        let producer = s.spawn(|| cluster::produce(&all, "grow", 2, "grow", 8000, 400, &[]));
        std::thread::sleep(Duration::from_millis(500));
        let out = c.add_node(four, &all);
        assert!(out.contains("node 4 votes in __meta"), "{out}");
        let node5 = format!("5@{}", c.addrs[five].raft);
        let (code, out, err) = sluice_tests::run_sluice(&[
            "cluster",
            "add-node",
            &node5,
            "--bootstrap",
            &all,
            "--no-wait",
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("--join"),
            "the tool says how to start it: {out}"
        );
        c.start_node(five);
        let out = c.add_node(five, &all);
        assert!(
            out.contains("already a member") && out.contains("votes"),
            "{out}"
        );
        // Partitions move onto the new nodes (one keeps a bootstrap node as preferred leader).
        move_to(&all, "grow", 0, &[4, 5, 1]);
        move_to(&all, "grow", 1, &[5, 4, 2]);
        producer.join().unwrap()
    });
    grown.assert_complete();
    let (brokers, replicas) = brokers_and_replicas(&all, "grow");
    assert_eq!(brokers, vec![1, 2, 3, 4, 5]);
    assert_eq!(replicas, vec![1, 2, 4, 5]);
    let status = sluice_tests::run_sluice(&["cluster", "status", "--bootstrap", &all]);
    assert_eq!(status.0, 0, "{}{}", status.1, status.2);
    assert!(status.1.contains("5 nodes"), "{}", status.1);

    // A duplicate, an unknown node and a removal that would leave partitions short are refused.
    let (code, _, err) = sluice_tests::run_sluice(&[
        "cluster",
        "add-node",
        "3@127.0.0.1:1",
        "--bootstrap",
        &all,
        "--no-wait",
    ]);
    assert!(
        code != 0 && err.contains("node 3 is already a member of the cluster (raft address"),
        "{err}"
    );
    let (code, _, err) = c.remove_node(8, &all);
    assert!(code != 0 && err.contains("node 9 is not a member"), "{err}");

    // Shrink back to 3: each removed node's replicas move to the others first.
    let shrunk = std::thread::scope(|s| {
        let producer = s.spawn(|| cluster::produce(&all, "grow", 2, "shrink", 6000, 400, &[]));
        std::thread::sleep(Duration::from_millis(500));
        for i in [four, five] {
            let (code, out, err) = c.remove_node(i, &all);
            assert_eq!(code, 0, "remove-node {}: {out}{err}", i + 1);
            assert!(out.contains("can be stopped now"), "{out}");
        }
        producer.join().unwrap()
    });
    shrunk.assert_complete();
    let (brokers, replicas) = brokers_and_replicas(&all, "grow");
    assert_eq!(brokers, vec![1, 2, 3]);
    assert_eq!(replicas, vec![1, 2, 3]);
    // A node with the cluster's last replicas of a partition cannot go: RF 3 on 3 nodes.
    let (code, _, err) = c.remove_node(0, &all);
    assert!(
        code != 0 && err.contains("below its replication factor"),
        "{err}"
    );
    let acked: Vec<&cluster::Ack> = grown.acks.iter().chain(shrunk.acks.iter()).collect();
    check_read_back(&all, "grow", &acked);
}

#[test]
fn a_dead_node_is_replaced_by_a_new_one_while_a_producer_writes() {
    let mut c = Cluster::running();
    let all = c.bootstrap(&[0, 1, 2]);
    cluster::create_topic(&all, "rep", 2, 3);
    let before = cluster::produce(&all, "rep", 2, "before", 500, 1000, &[]);
    before.assert_complete();

    // Node 3 dies for good (and its peers notice: it is silent for seconds).
    c.nodes[2].kill9();
    std::thread::sleep(Duration::from_secs(3));
    let live = c.bootstrap(&[0, 1]);
    let new = c.new_node("127.0.0.1");
    c.start_node(new);
    let during = std::thread::scope(|s| {
        let producer = s.spawn(|| cluster::produce(&live, "rep", 2, "during", 5000, 400, &[]));
        std::thread::sleep(Duration::from_millis(500));
        // Removing another node now would leave no quorum (node 3 is down): refused.
        let (code, _, err) = c.remove_node(1, &live);
        assert!(code != 0 && err.contains("without a quorum"), "{err}");
        let out = c.add_node(new, &live);
        assert!(out.contains("node 4 votes"), "{out}");
        let (code, out, err) = c.remove_node(2, &live);
        assert_eq!(code, 0, "remove-node 3: {out}{err}");
        producer.join().unwrap()
    });
    during.assert_complete();
    let (brokers, replicas) = brokers_and_replicas(&live, "rep");
    assert_eq!(brokers, vec![1, 2, 4]);
    assert_eq!(replicas, vec![1, 2, 4]);
    let status = sluice_tests::run_sluice(&["cluster", "status", "--bootstrap", &live]);
    assert_eq!(
        status.0, 0,
        "nothing under-replicated: {}{}",
        status.1, status.2
    );
    let acked: Vec<&cluster::Ack> = before.acks.iter().chain(during.acks.iter()).collect();
    check_read_back(&live, "rep", &acked);
}
