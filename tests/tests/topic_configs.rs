//! Topic configs as Kafka 4.x has them, with real clients: librdkafka (confluent-kafka) the way
//! its admin tests use them, and kafka-python as an independent client. The stored segment files
//! are checked too: batches recompressed to the topic's codec and stamped with LogAppendTime,
//! CRCs valid.

use serde_json::Value;
use sluice_tests::{Broker, python};

/// The (codec, LogAppendTime) of every batch in a partition's first segment, CRCs checked.
fn stored_batches(b: &Broker, topic: &str) -> Vec<(i16, bool)> {
    let path = b
        .data_dir()
        .join("logs")
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sluice_proto::batch::validate_all(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .iter()
        .map(|h| (h.compression(), h.is_log_append_time()))
        .collect()
}

fn json(out: &str) -> Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn librdkafka_creates_alters_describes_and_the_broker_recompresses() {
    let b = Broker::start(&[]);
    let out = python("topic_configs_confluent.py", &["--bootstrap", &b.addr]);
    let v = json(&out);
    assert_eq!(v["create_many"], "ok", "{out}");
    assert_eq!(
        v["create_unknown"],
        "INVALID_CONFIG: Unknown topic config name: dummy.doesntexist"
    );
    assert_eq!(
        v["create_small_segment"],
        "INVALID_CONFIG: Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576"
    );
    assert_eq!(v["create_compact"], "ok", "{out}");
    assert_eq!(v["described_count"], 33, "every Kafka 4 topic config");
    let before = &v["before"];
    assert_eq!(before["compression.type"]["value"], "lz4");
    assert_eq!(before["compression.type"]["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(before["segment.ms"]["value"], "604800000");
    assert_eq!(before["segment.ms"]["source"], "DEFAULT_CONFIG");
    assert_eq!(
        before["segment.ms"]["synonyms"],
        serde_json::json!([["log.roll.hours", "168", "DEFAULT_CONFIG"]])
    );
    assert_eq!(
        before["retention.ms"]["synonyms"],
        serde_json::json!([
            ["retention.ms", "86400000", "DYNAMIC_TOPIC_CONFIG"],
            ["log.retention.hours", "168", "DEFAULT_CONFIG"]
        ])
    );
    assert_eq!(
        before["max.message.bytes"]["synonyms"][1],
        serde_json::json!(["message.max.bytes", "1048588", "DEFAULT_CONFIG"])
    );
    assert_eq!(before["flush.ms"]["read_only"], false);
    let after = &v["after"];
    assert_eq!(after["compression.type"]["value"], "zstd");
    assert_eq!(after["flush.ms"]["value"], "1000");
    assert_eq!(after["flush.ms"]["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(after["retention.ms"]["value"], "604800000");
    assert_eq!(after["retention.ms"]["source"], "DEFAULT_CONFIG");
    assert_eq!(after["cleanup.policy"]["value"], "delete");
    assert_eq!(after["max.compaction.lag.ms"]["value"], "3600000");
    assert_eq!(v["append_compact"], "ok", "{out}");

    // Uncompressed batches were stored as zstd and read back unchanged.
    assert_eq!(v["create_zstd"], "ok");
    assert_eq!(v["zstd_produce_errors"], serde_json::json!([]), "{out}");
    assert_eq!(v["zstd_consumed_equal"], true, "{out}");
    assert_eq!(v["zstd_offsets"], true, "{out}");
    let zstd = stored_batches(&b, "cfg-zstd");
    assert!(!zstd.is_empty());
    assert!(
        zstd.iter().all(|&(codec, lat)| codec == 4 && !lat),
        "{zstd:?}"
    );

    assert_eq!(v["lat_type"], "LogAppendTime", "{out}");
    assert_eq!(v["lat_recent"], true, "{out}");
    assert_eq!(stored_batches(&b, "cfg-lat"), vec![(0, true)]);
    assert_eq!(
        v["future_timestamp"],
        serde_json::json!(["INVALID_TIMESTAMP"])
    );

    assert_eq!(
        v["grow_other_broker"],
        "INVALID_REPLICA_ASSIGNMENT: The manual partition assignment includes broker 2, but no such broker is registered."
    );
    assert_eq!(v["grow_own_broker"], "ok", "{out}");
}

#[test]
fn kafka_python_creates_describes_and_alters_on_a_broker_without_fsync() {
    let b = Broker::start(&["--durability", "os", "--flush-interval-ms", "500"]);
    let out = python("topic_configs_kafka_python.py", &["--bootstrap", &b.addr]);
    let v = json(&out);
    assert_eq!(v["create"], "ok", "{out}");
    assert!(
        v["create_bad"]
            .as_str()
            .unwrap()
            .contains("Invalid value brotli for configuration compression.type"),
        "{out}"
    );
    assert_eq!(v["count"], 33);
    // --flush-interval-ms is Kafka's log.flush.interval.ms.
    assert_eq!(
        v["flush_defaults"]["flush.ms"],
        serde_json::json!(["500", "STATIC_BROKER_CONFIG"])
    );
    assert_eq!(
        v["flush_defaults"]["flush.messages"],
        serde_json::json!(["9223372036854775807", "DEFAULT_CONFIG"])
    );
    let d = &v["described"];
    assert_eq!(d["retention.ms"]["type"], "LONG");
    assert_eq!(d["min.cleanable.dirty.ratio"]["type"], "DOUBLE");
    assert_eq!(d["leader.replication.throttled.replicas"]["type"], "LIST");
    assert_eq!(
        d["compression.type"]["synonyms"],
        serde_json::json!([
            ["compression.type", "gzip", "DYNAMIC_TOPIC_CONFIG"],
            ["compression.type", "producer", "DEFAULT_CONFIG"]
        ])
    );
    assert_eq!(v["alter_incremental"], "ok", "{out}");
    assert_eq!(
        v["after_incremental"],
        serde_json::json!({
            "compression.type": ["snappy", "DYNAMIC_TOPIC_CONFIG"],
            "flush.ms": ["2000", "DYNAMIC_TOPIC_CONFIG"],
            "retention.ms": ["604800000", "DEFAULT_CONFIG"]
        })
    );
    assert_eq!(v["alter_legacy"], "ok", "{out}");
    assert_eq!(v["after_legacy"]["segment.ms"][0], "3600000");
    assert!(
        v["alter_bad"].as_str().unwrap().contains(
            "Invalid value 0 for configuration min.insync.replicas: Value must be at least 1"
        ),
        "{out}"
    );
    assert_eq!(v["grow"], "ok", "{out}");
    assert!(
        v["grow_bad"]
            .as_str()
            .unwrap()
            .contains("includes broker 5, but no such broker is registered"),
        "{out}"
    );
    assert_eq!(v["consumed_equal"], true, "{out}");
    assert_eq!(
        v["timestamp_types"],
        serde_json::json!([1]),
        "LogAppendTime"
    );
    assert_eq!(v["timestamps_stamped"], true);
    let batches = stored_batches(&b, "kp-cfg");
    assert!(!batches.is_empty());
    assert!(
        batches.iter().all(|&(codec, lat)| codec == 2 && lat),
        "{batches:?}"
    );
}

/// In a cluster, every replica rewrites the batches at apply with the entry's time: the three
/// segment files are byte-identical, zstd and stamped. The topic is placed as the client's
/// replica assignment says.
#[test]
fn cluster_replicas_recompress_and_stamp_identically_on_a_manual_assignment() {
    use sluice_tests::cluster::Cluster;
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    let out = python(
        "topic_configs_cluster.py",
        &["--bootstrap", &all, "--replicas", "2,3,1", "cz", "500"],
    );
    let v = json(&out);
    assert_eq!(v["create"], "ok", "{out}");
    assert_eq!(v["replicas"], serde_json::json!([2, 3, 1]), "{out}");
    assert_eq!(
        v["bad_assignment"],
        "INVALID_REPLICA_ASSIGNMENT: The manual partition assignment includes broker 9, but no such broker is registered.",
        "{out}"
    );
    assert_eq!(v["errors"], serde_json::json!([]), "{out}");
    assert_eq!(v["consumed_equal"], true, "{out}");
    assert_eq!(
        v["timestamp_types"],
        serde_json::json!([2]),
        "LogAppendTime: {out}"
    );
    let bytes = c.wait_for_identical_logs("cz", 0, std::time::Duration::from_secs(30));
    let headers = sluice_proto::batch::validate_all(&bytes).unwrap();
    assert!(
        headers
            .iter()
            .all(|h| h.compression() == 4 && h.is_log_append_time()),
        "{headers:?}"
    );
    assert_eq!(
        headers
            .iter()
            .map(|h| h.last_offset_delta as i64 + 1)
            .sum::<i64>(),
        500
    );
}
