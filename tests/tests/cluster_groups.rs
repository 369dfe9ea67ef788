//! Consumer groups in cluster mode, real processes and real clients: the coordinator of a group
//! is the leader of the group's `__consumer_offsets` partition (replicated on all three nodes);
//! when that node is SIGKILLed another replica becomes leader of the partition and coordinator
//! of the group, with every offset the group had committed: a new member resumes exactly there.
//! Restarted, the node catches up and, as the partition's preferred replica, takes the group
//! back with the offsets committed while it was down.
//!
//! Clients (tests/clients/): `cluster_admin.py` (CreateTopics, Metadata), `cluster_producer.py`
//! (acks=all), `cluster_group_consumer.py` (a librdkafka group member that consumes a given
//! number of messages per partition, or a given total, and commits what it consumed
//! synchronously), `cluster_group_admin.py` (the group's coordinator and state with
//! librdkafka's DescribeConsumerGroups; its committed offsets with kafka-python's OffsetFetch).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::cluster::{Cluster, META_ELECTED, create_topic, describe, produce};
use sluice_tests::{log_field, python};

const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of `__consumer_offsets` (`--offsets-partitions`).
const OFFSETS_PARTITIONS: i32 = 6;
/// Logged (`loaded` or `unloaded`) when a node starts or stops coordinating the groups of an
/// offsets partition.
const COORDINATOR_EVENT: &str = "group coordinator partition ";
const COORDINATOR_LOADED: &str = "group coordinator partition loaded";
/// librdkafka's `OFFSET_INVALID`: no committed offset.
const NO_OFFSET: i64 = -1001;

/// The `__consumer_offsets` partition of a group, as Kafka computes it:
/// `abs(groupId.hashCode()) % partitions` with Java's `String.hashCode` and `Utils.abs`.
fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    (if hash == i32::MIN { 0 } else { hash.abs() }) % partitions
}

/// Partition → offset.
type Offsets = BTreeMap<i32, i64>;

/// What one cluster_group_consumer.py run printed.
#[derive(Debug, Default)]
struct GroupRun {
    assigned: BTreeSet<i32>,
    /// What OffsetFetch (librdkafka's `committed()`) returned for the first assignment.
    committed_at_assign: Option<Offsets>,
    /// (partition, offset, value) in delivery order.
    msgs: Vec<(i32, i64, String)>,
    /// The offsets the final synchronous commit stored.
    commit: Option<Offsets>,
    done: bool,
}

impl GroupRun {
    /// Offsets (in delivery order) of each partition's messages.
    fn offsets_by_partition(&self) -> BTreeMap<i32, Vec<i64>> {
        let mut by: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, o, _) in &self.msgs {
            by.entry(*p).or_default().push(*o);
        }
        by
    }
}

fn offsets_of(v: &Value) -> Offsets {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object of offsets: {v}"))
        .iter()
        .map(|(p, o)| (p.parse().unwrap(), o.as_i64().unwrap()))
        .collect()
}

/// Runs cluster_group_consumer.py to completion (it fails the test if it cannot commit).
fn group_consumer(bootstrap: &str, topic: &str, group: &str, target: &[&str]) -> GroupRun {
    let mut args = vec!["--bootstrap", bootstrap, "--topic", topic, "--group", group];
    args.extend_from_slice(target);
    let out = python("cluster_group_consumer.py", &args);
    let mut run = GroupRun::default();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["event"].as_str() {
            Some("assign") => run.assigned.extend(
                v["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap() as i32),
            ),
            Some("committed_at_assign") => {
                run.committed_at_assign
                    .get_or_insert(offsets_of(&v["offsets"]));
            }
            Some("msg") => run.msgs.push((
                v["p"].as_i64().unwrap() as i32,
                v["o"].as_i64().unwrap(),
                v["v"].as_str().unwrap().to_string(),
            )),
            Some("commit") => run.commit = Some(offsets_of(&v["offsets"])),
            Some("done") => run.done = true,
            _ => panic!("unexpected consumer output: {line}"),
        }
    }
    assert!(run.done, "the consumer did not finish:\n{out}");
    run
}

/// The group's coordinator, state and member count according to librdkafka.
fn describe_group(bootstrap: &str, group: &str) -> (u64, String, u64) {
    let out = python(
        "cluster_group_admin.py",
        &["--bootstrap", bootstrap, "describe", group],
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (
        v["coordinator"].as_u64().unwrap(),
        v["state"].as_str().unwrap().to_string(),
        v["members"].as_u64().unwrap(),
    )
}

/// The node kafka-python found as the group's coordinator, and the offsets of `topic` that its
/// OffsetFetch to that node returned.
fn fetch_offsets(bootstrap: &str, group: &str, topic: &str) -> (u64, Offsets) {
    let out = python(
        "cluster_group_admin.py",
        &["--bootstrap", bootstrap, "offsets", group],
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let offsets = v["offsets"].get(topic).map(offsets_of).unwrap_or_default();
    (v["coordinator"].as_u64().unwrap(), offsets)
}

/// The first replica of `__consumer_offsets` partition `partition` in Metadata: its preferred
/// leader.
fn preferred_replica(bootstrap: &str, partition: i32) -> u64 {
    let md = describe(bootstrap, OFFSETS_TOPIC);
    md["partitions"][partition.to_string()]["replicas"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("no replicas for {OFFSETS_TOPIC}-{partition}: {md}"))
}

/// Waits until `node` leads `__consumer_offsets` partition `partition` according to the logs
/// and to Metadata through every node; returns its term.
fn wait_for_leader(c: &Cluster, partition: i32, node: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let logged = c.latest_partition_election(OFFSETS_TOPIC, partition, &[0, 1, 2]);
        if logged.is_some_and(|(_, leader)| leader == node) {
            let (leader, term) = c.agreed_leader(OFFSETS_TOPIC, partition, timeout);
            if leader == node {
                return term;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{OFFSETS_TOPIC}-{partition}: node {node} is not the leader after {timeout:?} \
             (latest logged election (term, leader): {logged:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether, according to `log`, its node holds `__consumer_offsets` partition `partition` as a
/// coordinator: the last `group coordinator partition loaded|unloaded` line for it is `loaded`.
fn coordinates_partition(log: &str, partition: i32) -> bool {
    log.lines()
        .rev()
        .find(|l| {
            l.contains(COORDINATOR_EVENT)
                && log_field(l, "partition").map(|p| p.trim_matches('"'))
                    == Some(partition.to_string().as_str())
        })
        .is_some_and(|l| l.contains(COORDINATOR_LOADED))
}

#[test]
fn cluster_group_offsets_survive_sigkill_of_the_coordinator() {
    const TOPIC: &str = "orders";
    const GROUP: &str = "billing";
    const PARTS: i32 = 3;
    const N: u32 = 3000;
    /// What the first member consumes and commits of each partition (1000 messages each):
    /// about half, and a different offset per partition.
    const FIRST: [(i32, i64); 3] = [(0, 400), (1, 500), (2, 600)];
    let started = Instant::now();

    let mut c = Cluster::with_flags(
        ["127.0.0.1"; 3],
        &[
            "--offsets-partitions",
            &OFFSETS_PARTITIONS.to_string(),
            "--group-initial-rebalance-delay-ms",
            "300",
        ],
    );
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    create_topic(&all, TOPIC, PARTS as u32, 3);

    // N numbered messages, acks=all: `m-<i>` on partition i % 3, offsets 0..1000 on each.
    let produced = produce(&all, TOPIC, PARTS as u32, "m", N, 20_000, &[]);
    produced.assert_complete();
    let stored: BTreeMap<(i32, i64), String> = produced
        .acks
        .iter()
        .map(|a| ((a.partition, a.offset), a.value.clone()))
        .collect();
    let per_partition = N as i64 / PARTS as i64;
    for p in 0..PARTS {
        let offsets: Vec<i64> = stored.keys().filter(|k| k.0 == p).map(|k| k.1).collect();
        assert_eq!(
            offsets,
            (0..per_partition).collect::<Vec<_>>(),
            "partition {p}: acknowledged offsets"
        );
    }
    eprintln!("produced {N} messages at {:?}", started.elapsed());

    // The first member consumes part of every partition, commits exactly that, and leaves.
    let limit = FIRST
        .iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let first = group_consumer(&all, TOPIC, GROUP, &["--limit", &limit]);
    let committed: Offsets = FIRST.into_iter().collect();
    assert_eq!(
        first.assigned,
        (0..PARTS).collect(),
        "first member's assignment"
    );
    assert_eq!(
        first.committed_at_assign,
        Some((0..PARTS).map(|p| (p, NO_OFFSET)).collect()),
        "librdkafka's OffsetFetch for the first member: nothing committed yet"
    );
    let by_partition = first.offsets_by_partition();
    for p in 0..PARTS {
        assert_eq!(
            by_partition.get(&p).cloned().unwrap_or_default(),
            (0..committed[&p]).collect::<Vec<_>>(),
            "first member, partition {p}: offsets consumed"
        );
    }
    assert_eq!(
        first.commit.as_ref(),
        Some(&committed),
        "first member's commit"
    );
    eprintln!(
        "first member consumed and committed {committed:?} at {:?}",
        started.elapsed()
    );

    // The group's coordinator: librdkafka's DescribeConsumerGroups, the leader of the group's
    // `__consumer_offsets` partition in Metadata and in the logs all name the same node. First
    // that partition is led by its preferred (first) replica, so preferred-leader balancing
    // does not move it between this check and the SIGKILL.
    let op = offsets_partition(GROUP, OFFSETS_PARTITIONS);
    let preferred = preferred_replica(&all, op);
    let term = wait_for_leader(&c, op, preferred, Duration::from_secs(15));
    let (coordinator, state, members) = describe_group(&all, GROUP);
    assert_eq!(
        (state.as_str(), members),
        ("EMPTY", 0),
        "the group after its only member left"
    );
    assert_eq!(
        coordinator, preferred,
        "coordinator of {GROUP} vs leader of {OFFSETS_TOPIC}-{op} (term {term})"
    );
    let victim = coordinator as usize - 1;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let live = c.bootstrap(&survivors);

    c.nodes[victim].kill9();
    let killed = Instant::now();
    eprintln!(
        "SIGKILLed node {coordinator}, coordinator of {GROUP} ({OFFSETS_TOPIC}-{op} leader in \
         term {term}) at {:?}",
        started.elapsed()
    );

    // Another replica leads the offsets partition, loads it and coordinates the group.
    let (new_term, new_leader) =
        c.wait_for_partition_election(OFFSETS_TOPIC, op, &survivors, term, Duration::from_secs(15));
    assert_ne!(new_leader, coordinator, "term {new_term}");
    let elected = killed.elapsed();
    let (asked, offsets) = fetch_offsets(&live, GROUP, TOPIC);
    let fetched = killed.elapsed();
    assert_eq!(
        asked, new_leader,
        "kafka-python's coordinator for {GROUP} (leader of {OFFSETS_TOPIC}-{op}: node \
         {new_leader}, term {new_term})"
    );
    assert_eq!(
        offsets, committed,
        "kafka-python OffsetFetch from node {asked}, the new coordinator"
    );
    assert!(
        coordinates_partition(&c.nodes[new_leader as usize - 1].log(), op),
        "node {new_leader} answered for {GROUP}, but its log does not end with \
         `{COORDINATOR_LOADED}` for partition {op}"
    );
    let (now_coordinator, state, _) = describe_group(&live, GROUP);
    assert_eq!(
        (now_coordinator, state.as_str()),
        (new_leader, "EMPTY"),
        "librdkafka's view of {GROUP} after the failover"
    );
    eprintln!(
        "node {new_leader} leads {OFFSETS_TOPIC}-{op} in term {new_term} {elected:?} after the \
         SIGKILL; kafka-python had the committed offsets from it {fetched:?} after"
    );

    // A new member, bootstrapped from the two live nodes, resumes exactly at the committed
    // offsets and reads every remaining message once.
    let remaining = N as i64 - committed.values().sum::<i64>();
    let second = group_consumer(
        &live,
        TOPIC,
        GROUP,
        &["--expect", &remaining.to_string(), "--linger-s", "2"],
    );
    assert_eq!(
        second.assigned,
        (0..PARTS).collect(),
        "second member's assignment"
    );
    let all_committed: Offsets = (0..PARTS).map(|p| (p, committed[&p])).collect();
    assert_eq!(
        second.committed_at_assign.as_ref(),
        Some(&all_committed),
        "librdkafka's OffsetFetch for the second member"
    );
    let by_partition = second.offsets_by_partition();
    for p in 0..PARTS {
        let offsets = by_partition.get(&p).cloned().unwrap_or_default();
        assert_eq!(
            offsets.first(),
            Some(&committed[&p]),
            "second member: first offset of partition {p}"
        );
        assert_eq!(
            offsets,
            (committed[&p]..per_partition).collect::<Vec<_>>(),
            "second member, partition {p}: offsets consumed"
        );
    }
    // Together the two members consumed each of the N messages exactly once.
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (p, o, v) in first.msgs.iter().chain(&second.msgs) {
        assert_eq!(
            stored.get(&(*p, *o)),
            Some(v),
            "partition {p} offset {o}: consumed value vs acknowledged"
        );
        *times.entry(v.as_str()).or_default() += 1;
    }
    let wrong: Vec<(&&str, &usize)> = times.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "consumed more than once: {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(
        times.len(),
        N as usize,
        "messages consumed by the two members"
    );
    let end: Offsets = (0..PARTS).map(|p| (p, per_partition)).collect();
    assert_eq!(second.commit.as_ref(), Some(&end), "second member's commit");
    let (asked, offsets) = fetch_offsets(&live, GROUP, TOPIC);
    assert_eq!(
        (asked, offsets),
        (new_leader, end.clone()),
        "kafka-python OffsetFetch after the second member's commit"
    );
    eprintln!(
        "second member resumed at {committed:?} and read the {remaining} others; {:?} in all",
        started.elapsed()
    );

    // The killed node comes back: it joins the `__meta` group again, lists every broker, its
    // replica of the offsets partition catches up with the commit made while it was down, and,
    // being that partition's preferred replica, it gets the leadership back (preferred-leader
    // balancing) and coordinates the group again, with the second member's offsets.
    c.nodes[victim].restart();
    let restarted = Instant::now();
    c.nodes[victim]
        .wait_for_line(META_ELECTED, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("restarted node {coordinator} saw no meta leader in 15 s"));
    let md = describe(&c.addrs[victim].kafka, TOPIC);
    assert_eq!(
        md["brokers"].as_object().map(|b| b.len()),
        Some(3),
        "Metadata through the restarted node: {md}"
    );
    c.wait_for_identical_logs(OFFSETS_TOPIC, op, Duration::from_secs(20));
    let back_term = wait_for_leader(&c, op, coordinator, Duration::from_secs(20));
    let back = restarted.elapsed();
    let (asked, offsets) = fetch_offsets(&c.addrs[victim].kafka, GROUP, TOPIC);
    assert_eq!(
        (asked, offsets),
        (coordinator, end),
        "kafka-python OffsetFetch bootstrapped from the restarted node"
    );
    assert!(
        coordinates_partition(&c.nodes[victim].log(), op),
        "the restarted node {coordinator} answered for {GROUP}, but its log does not end with \
         `{COORDINATOR_LOADED}` for partition {op}"
    );
    eprintln!(
        "node {coordinator} rejoined, caught up and coordinates {GROUP} again (term \
         {back_term}) {back:?} after its restart; test took {:?}",
        started.elapsed()
    );
}
