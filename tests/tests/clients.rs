//! Real clients, end to end: librdkafka (confluent-kafka) and kafka-python, each creating a
//! topic, producing keyed messages with headers in every codec, consuming them back exactly,
//! listing offsets, altering and describing configs, deleting the topic.

use sluice_tests::{Broker, python};

#[test]
fn librdkafka_round_trip() {
    let b = Broker::start(&[]);
    let out = python("roundtrip_confluent.py", &["--bootstrap", &b.addr]);
    assert!(out.contains("\"consumed\": 1500"), "{out}");
}

#[test]
fn kafka_python_round_trip() {
    let b = Broker::start(&[]);
    let out = python("roundtrip_kafka_python.py", &["--bootstrap", &b.addr]);
    assert!(out.contains("\"consumed\": 1000"), "{out}");
}

#[test]
fn data_and_topics_survive_a_clean_restart() {
    let mut b = Broker::start(&["--num-partitions", "2"]);
    let p = sluice_tests::Streaming::start(
        "acked_producer.py",
        &["--bootstrap", &b.addr, "--topic", "keep", "--count", "500"],
    );
    let lines = p.wait_and_drain(std::time::Duration::from_secs(60));
    let acked: Vec<&String> = lines.iter().filter(|l| l.starts_with("ACK ")).collect();
    assert_eq!(acked.len(), 500, "{lines:?}");
    let before = python(
        "dump_topic.py",
        &["--bootstrap", &b.addr, "--topic", "keep"],
    );
    assert!(b.terminate().success());
    assert!(b.log().contains("shutdown complete"), "{}", b.log());
    b.restart();
    let after = python(
        "dump_topic.py",
        &["--bootstrap", &b.addr, "--topic", "keep"],
    );
    // The consumer interleaves partitions in whatever order fetches return: compare the records
    // (partition, offset, value), not the interleaving.
    let sorted = |s: &str| {
        let mut l: Vec<String> = s.lines().map(str::to_string).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&before), sorted(&after));
    assert_eq!(
        sorted(&before).len(),
        502,
        "500 records and 2 END lines:\n{before}"
    );
}
