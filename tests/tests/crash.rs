//! Durability: produce with acks=1, SIGKILL the broker at a random moment, restart, and check
//! that every acknowledged message is there with the offset it was acknowledged at, in order,
//! and that nothing partial was served.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sluice_tests::{Broker, Streaming, python};

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn crash_once(durability: &str) {
    let seed = seed();
    // Kill 300..1800 ms after the first acknowledgement; print the seed so a failure can be replayed.
    let delay_ms = 300 + seed % 1500;
    eprintln!("crash test: CRASH_SEED={seed} (kill after {delay_ms} ms, durability {durability})");
    let mut b = Broker::start(&["--num-partitions", "3", "--durability", durability]);
    let producer = Streaming::start(
        "acked_producer.py",
        &["--bootstrap", &b.addr, "--topic", "crash"],
    );
    let mut acked: Vec<String> = Vec::new();
    // The random moment counts from the first acknowledgement: on a loaded machine starting the
    // Python client alone can take longer than the shortest delay.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acked.iter().any(|l| l.starts_with("ACK ")) {
        assert!(
            Instant::now() < deadline,
            "no acknowledgement within 30 s; seed {seed}: {acked:?}"
        );
        if let Some(l) = producer.next_line(Duration::from_millis(10)) {
            acked.push(l);
        }
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(delay_ms) {
        if let Some(l) = producer.next_line(Duration::from_millis(10)) {
            acked.push(l);
        }
    }
    b.kill9();
    // Whatever the client had acknowledged before the kill is on its way to us.
    acked.extend(producer.kill_and_drain());
    let acked: Vec<(i32, i64, String)> = acked
        .iter()
        .filter_map(|l| {
            let mut it = l.strip_prefix("ACK ")?.split(' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.to_string(),
            ))
        })
        .collect();
    assert!(
        acked.len() > 100,
        "producer got too few acks before the kill ({}); seed {seed}",
        acked.len()
    );
    b.restart();
    let dump = python(
        "dump_topic.py",
        &["--bootstrap", &b.addr, "--topic", "crash"],
    );
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let mut ends: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for line in dump.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[0] == "END" {
            ends.insert(
                parts[1].parse().unwrap(),
                (parts[2].parse().unwrap(), parts[3].parse().unwrap()),
            );
        } else {
            stored.insert(
                (parts[0].parse().unwrap(), parts[1].parse().unwrap()),
                parts[2].to_string(),
            );
        }
    }
    for (p, o, v) in &acked {
        assert_eq!(
            stored.get(&(*p, *o)),
            Some(v),
            "acknowledged {v} at {p}/{o} lost or changed; seed {seed}"
        );
    }
    // Dense offsets from 0 to the high watermark, each value a whole message, none twice.
    let mut seen = HashSet::new();
    for (p, (lo, hi)) in &ends {
        assert_eq!(*lo, 0);
        for o in 0..*hi {
            let v = stored
                .get(&(*p, o))
                .unwrap_or_else(|| panic!("hole at {p}/{o}; seed {seed}"));
            assert!(
                v.starts_with("msg-") && v[4..].parse::<u64>().is_ok(),
                "garbage {v:?}; seed {seed}"
            );
            assert!(seen.insert(v.clone()), "{v} stored twice; seed {seed}");
        }
    }
    // Per partition, messages keep the order they were produced in.
    for p in ends.keys() {
        let nums: Vec<u64> = stored
            .range((*p, 0)..(*p, i64::MAX))
            .map(|(_, v)| v[4..].parse().unwrap())
            .collect();
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order; seed {seed}"
        );
    }
    // The restarted broker takes writes again, continuing the offsets.
    let more = Streaming::start(
        "acked_producer.py",
        &["--bootstrap", &b.addr, "--topic", "crash", "--count", "50"],
    );
    let lines = more.wait_and_drain(Duration::from_secs(60));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("ACK ")).count(),
        50,
        "{lines:?}"
    );
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash_once("fsync");
}

#[test]
fn acknowledged_writes_survive_sigkill_without_fsync() {
    // The OS keeps written pages across a process crash: --durability os must lose nothing
    // to kill -9 either (power loss is another matter, documented).
    crash_once("os");
}
