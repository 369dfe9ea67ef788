//! Many partitions on a three-node cluster: a new topic's leaders are spread as placed, idle
//! partition groups quiesce (no ticks, no heartbeats: Raft traffic falls to `__meta`'s), and
//! when a node dies every partition it led elects a new leader and takes writes.

use std::time::{Duration, Instant};

use sluice_tests::cluster::{Cluster, create_topic, describe, leader_of, produce};

const TOPIC: &str = "many";
/// Issue 17's scale. Each node holds a file open per hosted partition (plus its write-ahead
/// log and sockets): with a lower open-files hard limit the test runs at [`PARTS_SMALL`].
const PARTS_FULL: u32 = 3_000;
const PARTS_SMALL: u32 = 600;

/// The open-files hard limit the nodes inherit (they raise their soft limit to it).
fn open_files_hard_limit() -> u64 {
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "unlimited" => u64::MAX,
        n => n.parse().unwrap_or(0),
    }
}

fn metric_on(c: &Cluster, i: usize, name: &str) -> f64 {
    let (code, text) = sluice_tests::http_get(&c.addrs[i].metrics, "/metrics");
    assert_eq!(code, 200, "{text}");
    sluice_tests::metric(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// Raft messages node `i` sent to its two peers so far.
fn messages_sent(c: &Cluster, i: usize) -> f64 {
    (0..3)
        .filter(|&p| p != i)
        .map(|p| {
            metric_on(
                c,
                i,
                &format!("sluice_raft_peer_messages_sent_total{{peer=\"{}\"}}", p + 1),
            )
        })
        .sum()
}

#[test]
fn idle_partitions_quiesce_and_the_partitions_of_a_dead_leader_fail_over() {
    let limit = open_files_hard_limit();
    let parts = if limit >= u64::from(PARTS_FULL) + 1_000 {
        PARTS_FULL
    } else {
        eprintln!("open-files hard limit {limit}: running with {PARTS_SMALL} partitions");
        PARTS_SMALL
    };
    let mut c = Cluster::running();
    let all = c.bootstrap(&[0, 1, 2]);
    create_topic(&all, TOPIC, parts, 3);
    produce(&all, TOPIC, parts, "before", parts * 3, 20_000, &[]).assert_complete();

    // A new topic's leaders are where it was placed: its preferred replicas, spread evenly.
    // Elections that ignored placement (a preferred replica slow to open its groups on a
    // loaded machine) are undone by preferred-leader balancing.
    let even = f64::from(parts) / 3.0;
    // Balancing moves 16 leaders per node every 2 s: on a loaded machine a few hundred may
    // need moving.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut first = None;
    let led = loop {
        let md = describe(&all, TOPIC);
        let mut led = [0u32; 3];
        for p in 0..parts as i32 {
            let l = leader_of(&md, p);
            if (1..=3).contains(&l) {
                led[(l - 1) as usize] += 1;
            }
        }
        first.get_or_insert(led);
        if led
            .iter()
            .all(|&n| (f64::from(n) - even).abs() <= even / 10.0)
        {
            eprintln!("leaders per node: {led:?} (first seen: {first:?})");
            break led;
        }
        assert!(
            Instant::now() < deadline,
            "leaders per node {led:?} after 150 s (first seen: {first:?}): not within 10 % of even"
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    // Every replica of every partition (and of `__consumer_offsets`) goes quiet once the
    // leaders have moved to their preferred replicas: only `__meta` ticks.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let counts: Vec<(f64, f64)> = (0..3)
            .map(|i| {
                (
                    metric_on(&c, i, "sluice_raft_groups_quiesced"),
                    metric_on(&c, i, "sluice_raft_groups_ticking"),
                )
            })
            .collect();
        if counts
            .iter()
            .all(|&(q, t)| q >= f64::from(parts) && t <= 1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition groups still ticking after 90 s: (quiesced, ticking) per node {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Idle, the nodes exchange `__meta`'s heartbeats and nothing per partition: 600
    // groups heartbeating every 150 ms would send about 8,000 messages per node in 2 s.
    // (Windows are retried while leadership moves to preferred replicas: each move wakes a
    // group for a moment.)
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let before: Vec<f64> = (0..3).map(|i| messages_sent(&c, i)).collect();
        std::thread::sleep(Duration::from_secs(2));
        let sent: Vec<f64> = (0..3).map(|i| messages_sent(&c, i) - before[i]).collect();
        if sent.iter().all(|&s| s < 200.0) {
            eprintln!("raft messages per node in 2 s of idleness: {sent:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "raft messages per node in 2 s of idleness, 90 s after the produce: {sent:?}"
        );
    }

    // Kill the node that leads the most partitions.
    let victim = (0..3).max_by_key(|&i| led[i]).unwrap();
    assert!(led[victim] > 0);
    c.nodes[victim].kill9();
    let died = Instant::now();
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let survivors = c.bootstrap(&others);
    loop {
        let md = describe(&survivors, TOPIC);
        let leaderless: Vec<i32> = (0..parts as i32)
            .filter(|&p| {
                let l = leader_of(&md, p);
                l < 1 || l as usize == victim + 1
            })
            .collect();
        if leaderless.is_empty() {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(20),
            "{} of the {} partitions node {} led have no new leader after 20 s: {:?}",
            leaderless.len(),
            led[victim],
            victim + 1,
            &leaderless[..leaderless.len().min(20)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "every partition led by node {} ({}) had a new leader {:?} after the kill",
        victim + 1,
        led[victim],
        died.elapsed()
    );
    // Every partition takes writes again.
    produce(&survivors, TOPIC, parts, "after", parts * 2, 20_000, &[]).assert_complete();
}
