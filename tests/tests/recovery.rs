//! Recovery: a damaged segment tail is truncated at start, never served, and the log carries on.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use sluice_tests::{Broker, Streaming, python};

fn produce(b: &Broker, topic: &str, n: usize) -> Vec<String> {
    let p = Streaming::start(
        "acked_producer.py",
        &[
            "--bootstrap",
            &b.addr,
            "--topic",
            topic,
            "--count",
            &n.to_string(),
            "--one-per-batch",
        ],
    );
    let lines = p.wait_and_drain(Duration::from_secs(60));
    let acks: Vec<String> = lines
        .into_iter()
        .filter(|l| l.starts_with("ACK "))
        .collect();
    assert_eq!(acks.len(), n);
    acks
}

fn last_segment(b: &Broker, topic: &str) -> PathBuf {
    let dir = b.data_dir().join("logs").join(format!("{topic}-0"));
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn dump_values(b: &Broker, topic: &str) -> Vec<(i64, String)> {
    python("dump_topic.py", &["--bootstrap", &b.addr, "--topic", topic])
        .lines()
        .filter(|l| !l.starts_with("END"))
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            (v[1].parse().unwrap(), v[2].to_string())
        })
        .collect()
}

#[test]
fn corrupt_tail_is_truncated_and_never_served() {
    let mut b = Broker::start(&[]);
    let acks = produce(&b, "tail", 300);
    assert!(b.terminate().success());
    let seg = last_segment(&b, "tail");
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    // Flip bytes inside the last batch (its CRC no longer matches) and add a torn half-batch.
    bytes[n - 3] ^= 0xff;
    bytes[n - 10] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x40, 7, 7])
        .unwrap();
    b.restart();
    assert!(
        b.log().contains("truncated torn or corrupt log tail"),
        "{}",
        b.log()
    );
    let values = dump_values(&b, "tail");
    assert!(
        !values.is_empty() && values.len() < 300,
        "expected a truncated log, got {} records",
        values.len()
    );
    // What is served is exactly the acknowledged prefix.
    for (i, (off, v)) in values.iter().enumerate() {
        assert_eq!(*off, i as i64);
        assert_eq!(acks[i].split(' ').nth(3).unwrap(), v);
    }
    // New writes continue right after the surviving records.
    let more = produce(&b, "tail", 10);
    let first_new: i64 = more[0].split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(first_new, values.len() as i64);
}

#[test]
fn garbage_appended_after_a_clean_shutdown_is_dropped() {
    let mut b = Broker::start(&[]);
    produce(&b, "junk", 50);
    assert!(b.terminate().success());
    let seg = last_segment(&b, "junk");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0xAB; 100])
        .unwrap();
    b.restart();
    assert!(
        b.log().contains("truncated torn or corrupt log tail"),
        "{}",
        b.log()
    );
    assert_eq!(dump_values(&b, "junk").len(), 50);
}

#[test]
fn missing_index_is_rebuilt() {
    let mut b = Broker::start(&[]);
    let topic = "idx";
    // Small segments so that several roll and get index files (segment.bytes is at least 1 MiB
    // in Kafka 4; Kafka's internal.segment.bytes goes lower, for tests).
    let admin = python(
        "admin.py",
        &[
            "--bootstrap",
            &b.addr,
            "create",
            topic,
            "1",
            "internal.segment.bytes=2000",
        ],
    );
    assert!(admin.contains("ok"), "{admin}");
    produce(&b, topic, 400);
    assert!(b.terminate().success());
    let dir = b.data_dir().join("logs").join(format!("{topic}-0"));
    let mut removed = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "index") {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    assert!(removed > 1, "expected several segments");
    b.restart();
    assert_eq!(dump_values(&b, topic).len(), 400);
}

#[test]
fn retention_configs_are_honoured_by_the_running_broker() {
    let b = Broker::start(&["--retention-check-interval-ms", "200"]);
    let topic = "ret";
    let out = python(
        "admin.py",
        &[
            "--bootstrap",
            &b.addr,
            "create",
            topic,
            "1",
            "internal.segment.bytes=1000",
        ],
    );
    assert!(out.contains("ok"));
    produce(&b, topic, 200);
    let low = |b: &Broker| -> i64 {
        let dump = python("dump_topic.py", &["--bootstrap", &b.addr, "--topic", topic]);
        let end = dump
            .lines()
            .find(|l| l.starts_with("END 0 "))
            .unwrap()
            .to_string();
        end.split(' ').nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(low(&b), 0);
    let out = python(
        "admin.py",
        &[
            "--bootstrap",
            &b.addr,
            "alter",
            topic,
            "retention.bytes=3000",
        ],
    );
    assert!(out.contains("ok"));
    let described = python("admin.py", &["--bootstrap", &b.addr, "describe", topic]);
    assert!(
        described.contains("\"retention.bytes\": \"3000\""),
        "{described}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let l = low(&b);
        if l > 0 {
            // The partition kept at most retention.bytes plus the active segment.
            let dir = b.data_dir().join("logs").join(format!("{topic}-0"));
            let size: u64 = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum();
            assert!(size <= 3000 + 1000, "{size} bytes left");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
}
