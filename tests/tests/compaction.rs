//! Compacted topics with real clients (confluent-kafka and kafka-python): a keyed workload with
//! overwrites and tombstones reads back, after the background cleaner ran, as exactly the latest
//! value per key at the offsets it was produced at; a compacted topic refuses records without a
//! key; a kill -9 in the middle of a clean loses nothing.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{Broker, python};

fn json(out: &str) -> Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn client(b: &Broker, client: &str, phase: &str, topic: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--bootstrap",
        &b.addr,
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
            "not cleaned within {timeout:?}: checkpoint {first_dirty}, active segment {active}\n{}",
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
    let mut b = Broker::start(&["--log-cleaner-backoff-ms", "100"]);
    let topic = format!("cmp-{client_name}");
    client(&b, client_name, "create", &topic, &[]);
    let produced = client(&b, client_name, "produce", &topic, &[]);
    let cleaned = wait_cleaned(&b, &topic, Duration::from_secs(60));
    let consumed = client(&b, client_name, "consume", &topic, &[]);
    check(&produced, &consumed, cleaned);
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
    let mut b = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "100",
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
    // Kill while a clean is writing its files, at a random moment of it.
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
