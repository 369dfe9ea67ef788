//! A full disk: produces fail with KAFKA_STORAGE_ERROR, nothing acknowledged is lost, the broker
//! keeps serving, and writes succeed again once space is freed. Needs root to mount a small
//! tmpfs (CI runs as root); elsewhere the test says so and passes without running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tests::kafka::Conn;
use sluice_tests::{bin, free_port};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn batch(tag: u8) -> Bytes {
    sluice_tests::kafka::batch(4, 50_000, tag)
}

fn produce(c: &mut Conn, topic: &str, records: Bytes) -> (i16, i64) {
    let ResponseKind::Produce(r) = c.call(
        ApiKey::Produce,
        9,
        sluice_tests::kafka::produce_request(topic, records, -1),
    ) else {
        panic!()
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_hw_and_bytes(c: &mut Conn, topic: &str) -> (i64, usize) {
    let ResponseKind::Fetch(r) = c.call(
        ApiKey::Fetch,
        12,
        RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(64 << 20)
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(TopicName(s(topic)))
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default()
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(64 << 20),
                        ]),
                ]),
        ),
    ) else {
        panic!()
    };
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.high_watermark, p.records.as_ref().map_or(0, |r| r.len()))
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_an_error_not_a_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&data)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _mount = Mount(data.clone());
    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("broker.log");
    let mut child = Command::new(bin())
        .args(["--kafka-addr", &addr, "--data-dir"])
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Conn::connect(&addr);
    let mut acked = 0i64;
    let mut refused = false;
    for i in 0..40 {
        let (err, base) = produce(&mut c, "fill", batch(i));
        if err == 0 {
            assert_eq!(base, acked, "offsets stay dense");
            acked += 4;
        } else {
            assert_eq!(err, 56, "KAFKA_STORAGE_ERROR expected, got {err}");
            refused = true;
            break;
        }
    }
    assert!(refused, "3 MiB filled without an error");
    assert!(acked > 0);
    // Everything acknowledged is readable, nothing half-written shows up.
    let (hw, bytes) = fetch_hw_and_bytes(&mut c, "fill");
    assert_eq!(hw, acked);
    assert!(bytes >= (acked as usize / 4) * 200_000);
    // Free space (DeleteRecords drops whole closed segments; here delete the topic) and write again.
    let ResponseKind::DeleteTopics(r) = c.call(
        ApiKey::DeleteTopics,
        4,
        RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s("fill"))])
                .with_timeout_ms(5000),
        ),
    ) else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    let (err, base) = produce(&mut c, "again", batch(1));
    assert_eq!((err, base), (0, 0), "writes resume once space is free");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
}
