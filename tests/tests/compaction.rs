//! Compacted topics with real clients (confluent-kafka and kafka-python): a keyed workload with
//! overwrites and tombstones reads back, after the background cleaner ran, as exactly the latest
//! value per key at the offsets it was produced at; a compacted topic refuses records without a
//! key; a kill -9 in the middle of a clean loses nothing. In a 3-node cluster every replica
//! ends with the same bytes after compaction, and a replica that lost its disk copies them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::cluster::Cluster;
use sluice_tests::{Broker, python};

fn json(out: &str) -> Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn client(b: &Broker, client: &str, phase: &str, topic: &str, extra: &[&str]) -> Value {
    client_at(&b.addr, client, phase, topic, extra)
}

fn client_at(bootstrap: &str, client: &str, phase: &str, topic: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--bootstrap",
        bootstrap,
        "--client",
        client,
        "--phase",
        phase,
        "--topic",
        topic,
    ];
    args.extend_from_slice(extra);
    json(&python("compaction.py", &args))
}

fn partition_dir(b: &Broker, topic: &str) -> std::path::PathBuf {
    b.data_dir().join("logs").join(format!("{topic}-0"))
}

/// (first dirty offset of the cleaner checkpoint or -1, base offset of the active segment).
fn clean_state(dir: &Path) -> (i64, i64) {
    let first_dirty = std::fs::read_to_string(dir.join("cleaner-checkpoint"))
        .ok()
        .and_then(|s| s.lines().nth(1)?.trim().parse().ok())
        .unwrap_or(-1);
    let active = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    (first_dirty, active)
}

/// Waits until the cleaner cleaned every closed segment.
fn wait_cleaned(b: &Broker, topic: &str, timeout: Duration) -> i64 {
    let dir = partition_dir(b, topic);
    let deadline = Instant::now() + timeout;
    loop {
        let (first_dirty, active) = clean_state(&dir);
        if first_dirty >= active && active > 0 {
            return first_dirty;
        }
        assert!(
            Instant::now() < deadline,
            "not cleaned within {timeout:?}: checkpoint {first_dirty}, active segment {active}, files {:?}\n{}",
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0))
                })
                .collect::<Vec<_>>(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What was read is exactly the latest value per key, every record is the one produced at its
/// offset, and below `cleaned` no key appears twice.
fn check(produced: &Value, consumed: &Value, cleaned: i64) {
    assert_eq!(
        produced["errors"],
        serde_json::json!([]),
        "produce errors: {produced}"
    );
    let latest = |v: &Value| -> BTreeMap<String, Value> {
        v["latest"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(latest(consumed), latest(produced), "latest value per key");
    let records = consumed["records"].as_array().unwrap();
    let at = produced["at"].as_object().unwrap();
    let mut last = -1;
    let mut keys = HashSet::new();
    for r in records {
        let offset = r[0].as_i64().unwrap();
        assert!(offset > last, "offsets go back at {offset}");
        last = offset;
        assert_eq!(
            at[&offset.to_string()],
            serde_json::json!([r[1], r[2]]),
            "record at {offset}"
        );
        if offset < cleaned {
            assert!(
                keys.insert(r[1].as_str().unwrap().to_string()),
                "key {} twice in the cleaned section",
                r[1]
            );
        }
    }
    let produced_n = produced["produced"].as_u64().unwrap() as usize;
    assert!(
        records.len() * 2 < produced_n,
        "{} of {produced_n} records left after compaction",
        records.len()
    );
}

fn keyed_workload_is_compacted(client_name: &str) {
    let metrics = format!("127.0.0.1:{}", sluice_tests::free_port());
    let mut b = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "100",
        "--metrics-addr",
        &metrics,
    ]);
    let topic = format!("cmp-{client_name}");
    client(&b, client_name, "create", &topic, &[]);
    let produced = client(&b, client_name, "produce", &topic, &[]);
    let cleaned = wait_cleaned(&b, &topic, Duration::from_secs(60));
    let consumed = client(&b, client_name, "consume", &topic, &[]);
    check(&produced, &consumed, cleaned);
    let (status, text) = sluice_tests::http_get(&metrics, "/metrics");
    assert_eq!(status, 200);
    let cleans = sluice_tests::metric(&text, "sluice_log_cleaner_cleans_total").unwrap();
    let read = sluice_tests::metric(&text, "sluice_log_cleaner_read_bytes_total").unwrap();
    let written = sluice_tests::metric(&text, "sluice_log_cleaner_written_bytes_total").unwrap();
    assert!(cleans >= 1.0 && written < read, "{text}");
    // The cleaned segments as a restarted broker opens them.
    b.terminate();
    b.restart();
    let consumed = client(&b, client_name, "consume", &topic, &[]);
    check(&produced, &consumed, cleaned);
    assert!(b.all_logs().contains("log cleaned"), "{}", b.all_logs());
}

#[test]
fn librdkafka_reads_the_latest_value_per_key_after_compaction() {
    keyed_workload_is_compacted("confluent");
}

#[test]
fn kafka_python_reads_the_latest_value_per_key_after_compaction() {
    keyed_workload_is_compacted("kafka-python");
}

#[test]
fn a_compacted_topic_refuses_records_without_a_key() {
    let b = Broker::start(&[]);
    client(&b, "confluent", "create", "cmp-keyless", &[]);
    let v = client(&b, "confluent", "keyless", "cmp-keyless", &[]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    assert_eq!(results[0][0], "INVALID_RECORD", "{v}");
    assert_eq!(
        results[1],
        Value::Null,
        "the keyed record goes through: {v}"
    );
}

#[test]
fn kill_9_in_the_middle_of_a_clean_loses_nothing() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The cleaner runs once at start, then sleeps for ten minutes: nothing is cleaned while
    // producing, and each restart begins one long (throttled) clean of the whole log.
    let mut b = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "600000",
        "--log-cleaner-io-max-bytes-per-second",
        "2000000",
    ]);
    let topic = "cmp-kill";
    let big = [
        "--records",
        "12000",
        "--keys",
        "400",
        "--value-bytes",
        "1000",
        "--segment-bytes",
        "1048576",
    ];
    client(&b, "confluent", "create", topic, &big);
    let produced = client(&b, "confluent", "produce", topic, &big);
    b.terminate();
    b.restart();
    // Kill while that clean is writing its files, at a random moment of it.
    let dir = partition_dir(&b, topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cleaning = std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".cleaned"))
        });
        if cleaning {
            break;
        }
        assert!(Instant::now() < deadline, "no clean started\n{}", b.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let delay = seed % 800;
    eprintln!("kill -9 {delay} ms into a clean (seed {seed})");
    std::thread::sleep(Duration::from_millis(delay));
    b.kill9();
    b.restart();
    let consumed = client(&b, "confluent", "consume", topic, &big);
    let log = b.log();
    assert!(
        log.contains("discarding an unfinished clean")
            || log.contains("completing an interrupted clean"),
        "the restart found no interrupted clean:\n{log}"
    );
    let latest = |v: &Value| v["latest"].clone();
    assert_eq!(latest(&consumed), latest(&produced), "after the kill");
    let at = produced["at"].as_object().unwrap();
    for r in consumed["records"].as_array().unwrap() {
        assert_eq!(
            at[&r[0].as_i64().unwrap().to_string()],
            serde_json::json!([r[1], r[2]])
        );
    }
    // And the next clean completes.
    let cleaned = wait_cleaned(&b, topic, Duration::from_secs(120));
    let consumed = client(&b, "confluent", "consume", topic, &big);
    check(&produced, &consumed, cleaned);
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn fetch_committed(conn: &mut sluice_tests::kafka::Conn) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetFetchRequest, RequestKind, ResponseKind, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let ResponseKind::OffsetFetch(r) =
        conn.call(ApiKey::OffsetFetch, 1, RequestKind::OffsetFetch(req))
    else {
        panic!()
    };
    r.topics[0].partitions[0].committed_offset
}

#[test]
fn consumer_offsets_stays_bounded_after_100000_commits_of_one_group() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, CreateTopicsRequest, GroupId, OffsetCommitRequest, RequestKind, ResponseKind,
        TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use std::io::Write;
    let mut b = Broker::start(&[
        "--offsets-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        "65536",
        "--log-cleaner-backoff-ms",
        "100",
    ]);
    let mut conn = sluice_tests::kafka::Conn::connect(&b.addr);
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let ResponseKind::CreateTopics(r) =
        conn.call(ApiKey::CreateTopics, 4, RequestKind::CreateTopics(create))
    else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0);
    // 100,000 commits of the same group and partition, 1,000 pipelined at a time (a simple
    // consumer: no members, generation -1).
    const N: i64 = 100_000;
    let mut peak = 0;
    let dir = b.data_dir().join("logs").join("__consumer_offsets-0");
    for chunk in 0..N / 1000 {
        let mut frames = Vec::new();
        for i in 0..1000 {
            let offset = chunk * 1000 + i + 1;
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_retention_time_ms(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(offset),
                        ]),
                ]);
            let (_, f) = conn.frame(ApiKey::OffsetCommit, 2, &RequestKind::OffsetCommit(req));
            frames.extend_from_slice(&f);
        }
        conn.stream.write_all(&frames).unwrap();
        for _ in 0..1000 {
            let (_, r) = conn.read_response(ApiKey::OffsetCommit, 2).unwrap();
            let ResponseKind::OffsetCommit(r) = r else {
                panic!()
            };
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        }
        peak = peak.max(dir_bytes(&dir));
    }
    assert_eq!(fetch_committed(&mut conn), N);
    // Uncompacted, the commits take several MB; compacted, a few segments of 64 KiB.
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir_bytes(&dir) > 512 << 10 {
        assert!(
            Instant::now() < deadline,
            "__consumer_offsets-0 holds {} bytes after {N} commits\n{}",
            dir_bytes(&dir),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "__consumer_offsets-0: {} bytes after {N} commits (peak {peak})",
        dir_bytes(&dir)
    );
    // Replay of the compacted log rebuilds the committed offset.
    b.kill9();
    b.restart();
    let mut conn = sluice_tests::kafka::Conn::connect(&b.addr);
    assert_eq!(fetch_committed(&mut conn), N);
}

#[test]
fn an_idempotent_producers_emptied_last_batch_is_kept_and_clients_read_past_it() {
    let b = Broker::start(&["--log-cleaner-backoff-ms", "100"]);
    let topic = "cmp-idem";
    json(&python(
        "compaction_idempotent.py",
        &[
            "--bootstrap",
            &b.addr,
            "--topic",
            topic,
            "--phase",
            "produce",
        ],
    ));
    wait_cleaned(&b, topic, Duration::from_secs(60));
    // The idempotent producer's last batch (offset 299) is there, with no records.
    let dir = partition_dir(&b, topic);
    let mut empty = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            let bytes = std::fs::read(&path).unwrap();
            for (_, h) in sluice_proto::batch::headers(&bytes) {
                if h.records_count == 0 {
                    empty.push((h.base_offset, h.producer_id >= 0));
                }
            }
        }
    }
    assert_eq!(empty, vec![(299, true)]);
    let v = json(&python(
        "compaction_idempotent.py",
        &[
            "--bootstrap",
            &b.addr,
            "--topic",
            topic,
            "--phase",
            "consume",
        ],
    ));
    for client in ["confluent", "kafka_python"] {
        let got = v[client].as_array().unwrap();
        assert_eq!(
            got.last().unwrap(),
            &serde_json::json!([399, "plain-99"]),
            "{client}: {v}"
        );
        assert!(
            got.iter()
                .all(|r| r[1].as_str().unwrap().starts_with("plain-")),
            "{client}: {v}"
        );
    }
}

/// The cleaner checkpoint of a partition directory: (first dirty offset, ordered cleans done,
/// ordered cleans pending, the last ordered clean done).
fn ordered_state(dir: &Path) -> (i64, usize, usize, String) {
    let text = std::fs::read_to_string(dir.join("cleaner-checkpoint")).unwrap_or_default();
    let first_dirty = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(-1);
    let count = |tag: &str| text.lines().filter(|l| l.starts_with(tag)).count();
    let done = text
        .lines()
        .find(|l| l.starts_with("done "))
        .unwrap_or_default()
        .to_string();
    (first_dirty, count("done "), count("pending "), done)
}

/// Waits until every node ran the ordered cleans it has and got past `min_dirty`, and the
/// three replicas hold the same bytes; returns the first dirty offset.
fn wait_cleaned_alike(c: &Cluster, topic: &str, min_dirty: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let states: Vec<_> = (0..3)
            .map(|i| ordered_state(&c.data_dir(i).join("logs").join(format!("{topic}-0"))))
            .collect();
        // The same last clean everywhere. (Tombstone passes may differ below a replica's log
        // start: one that copied a log cleaned past its old records never saw them.)
        let settled = states
            .iter()
            .all(|s| s.0 >= min_dirty && s.1 == 1 && s.2 == 0 && s.3 == states[0].3);
        if settled {
            c.wait_for_identical_logs(topic, 0, Duration::from_secs(30));
            return states[0].0;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas did not all clean past {min_dirty}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `produced` with a later workload's records over it.
fn merged(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    for field in ["latest", "at"] {
        let dst = out[field].as_object_mut().unwrap();
        for (k, v) in b[field].as_object().unwrap() {
            dst.insert(k.clone(), v.clone());
        }
    }
    out["produced"] = (a["produced"].as_u64().unwrap() + b["produced"].as_u64().unwrap()).into();
    out
}

#[test]
fn cluster_replicas_compact_to_identical_logs_and_a_wiped_replica_copies_them() {
    let mut c = Cluster::with_flags(["127.0.0.1"; 3], &["--log-cleaner-backoff-ms", "100"]);
    // The wiped replica below must copy the (compacted) records rather than replay entries.
    c.compact_raft_logs_often();
    c.start_all();
    c.wait_for_kafka();
    let boot = c.bootstrap(&[0, 1, 2]);
    let topic = "cmp-cluster";
    client_at(
        &boot,
        "confluent",
        "create",
        topic,
        &["--replication-factor", "3"],
    );
    // Keyless records are refused as on a standalone broker (KIP-467).
    client_at(
        &boot,
        "confluent",
        "create",
        "cmp-cluster-keyless",
        &["--replication-factor", "3"],
    );
    c.agreed_leader("cmp-cluster-keyless", 0, Duration::from_secs(10));
    let v = client_at(&boot, "confluent", "keyless", "cmp-cluster-keyless", &[]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0][0], "INVALID_RECORD", "{v}");
    assert_eq!(
        results[1],
        Value::Null,
        "the keyed record goes through: {v}"
    );
    let first = client_at(&boot, "confluent", "produce", topic, &[]);
    let cleaned = wait_cleaned_alike(&c, topic, 1);
    for name in ["confluent", "kafka-python"] {
        let consumed = client_at(&boot, name, "consume", topic, &[]);
        check(&first, &consumed, cleaned);
    }

    // A follower loses its disk; more writes and cleans happen without it; it comes back
    // empty, copies the compacted log from another replica and ends with the same bytes.
    let (leader, _) = c.agreed_leader(topic, 0, Duration::from_secs(10));
    let victim = (0..3).find(|&i| i != leader as usize - 1).unwrap();
    c.nodes[victim].kill9();
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let second = client_at(
        &c.bootstrap(&others),
        "confluent",
        "produce",
        topic,
        &["--start", "3000", "--seed", "8"],
    );
    c.nodes[victim].restart();
    let cleaned = wait_cleaned_alike(&c, topic, cleaned + 1);
    let all = merged(&first, &second);
    for name in ["confluent", "kafka-python"] {
        let consumed = client_at(&boot, name, "consume", topic, &[]);
        check(&all, &consumed, cleaned);
    }
}
