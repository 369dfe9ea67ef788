//! Operator tools on a running cluster: Raft message tracing switched on and off for one node
//! through its metrics endpoint, without a restart; `__meta`'s log kept short by snapshots.

use std::time::Duration;

use sluice_tests::cluster::{Cluster, create_topic, describe, leader_of, produce};

#[test]
fn raft_message_tracing_switches_on_and_off_at_run_time_for_one_node() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    c.start_all();
    c.wait_for_meta_leader();
    let traced = |i: usize| {
        c.nodes[i]
            .log()
            .lines()
            .filter(|l| l.contains("msg_type="))
            .count()
    };
    assert_eq!(traced(1), 0, "no tracing before it is asked for");
    let (code, body) = sluice_tests::http_get(&c.addrs[1].metrics, "/raft-debug/on");
    assert_eq!(code, 200, "{body}");
    let line = c.nodes[1]
        .wait_for_line("msg_type=", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no Raft message traced:\n{}", c.nodes[1].log()));
    for field in ["from=", "to=", "msg_term=", "index=", "node=", "group="] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert_eq!(traced(2), 0, "only the node asked traces");
    let (code, body) = sluice_tests::http_get(&c.addrs[1].metrics, "/raft-debug/off");
    assert_eq!(code, 200, "{body}");
    // A pass of the Raft loop that was tracing when the switch came may still write its
    // lines: count from a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let after_off = traced(1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        traced(1),
        after_off,
        "tracing went on after it was switched off"
    );
}

/// `sluice cluster status --json` through `bootstrap`: (exit status, document).
fn status(bootstrap: &str) -> (i32, serde_json::Value) {
    let (code, out, err) = sluice_tests::run_sluice(&[
        "cluster",
        "status",
        "--bootstrap",
        bootstrap,
        "--json",
        "--all",
        "--timeout-ms",
        "1000",
    ]);
    let doc = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}), exit {code}: {out}\n{err}"));
    (code, doc)
}

/// Polls the status until `done` holds; returns the last answer.
fn status_until(
    bootstrap: &str,
    what: &str,
    done: impl Fn(i32, &serde_json::Value) -> bool,
) -> (i32, serde_json::Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, doc) = status(bootstrap);
        if done(code, &doc) {
            return (code, doc);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s; last status (exit {code}): {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn metric_on(c: &Cluster, i: usize, name: &str) -> f64 {
    let (code, text) = sluice_tests::http_get(&c.addrs[i].metrics, "/metrics");
    assert_eq!(code, 200);
    sluice_tests::metric(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[test]
fn cluster_status_reports_nodes_and_partitions_and_fails_once_a_node_is_down() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    // Replicas silent for 1.5 s leave the ISR.
    c.compact_raft_logs_often();
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    sluice_tests::cluster::create_topic(&all, "st", 3, 3);
    // Healthy, and each partition's leader says how far every replica is behind (it reports
    // its progress at its next housekeeping round after it was elected).
    let (code, doc) = status_until(&all, "a healthy cluster", |code, doc| {
        code == 0
            && doc["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| {
                    p["topic"] == "st"
                        && p["leader"].as_i64().unwrap() > 0
                        && p["lag"].as_object().unwrap().len() == 3
                })
                .count()
                == 3
    });
    assert_eq!(code, 0);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{doc:#}");
    assert!(nodes.iter().all(|n| n["up"] == true), "{doc:#}");
    // Every node says its version (the tests are built with the binary, from one workspace).
    assert!(
        nodes
            .iter()
            .all(|n| n["version"] == env!("CARGO_PKG_VERSION")),
        "{doc:#}"
    );
    for p in doc["partitions"].as_array().unwrap() {
        if p["topic"] != "st" {
            continue;
        }
        let lag = p["lag"].as_object().unwrap();
        assert_eq!(lag.len(), 3, "{p:#}");
        assert!(lag.values().all(|l| l.as_i64().unwrap() >= 0), "{p:#}");
    }
    let meta_leader = doc["meta_leader"].as_i64().unwrap();
    assert!((1..=3).contains(&meta_leader), "{doc:#}");
    assert!(doc["meta_term"].as_i64().unwrap() >= 1, "{doc:#}");
    assert_eq!(doc["under_replicated"], 0);
    assert_eq!(doc["offline"], 0);
    for i in 0..3 {
        assert_eq!(metric_on(&c, i, "sluice_under_replicated_partitions"), 0.0);
        assert_eq!(metric_on(&c, i, "sluice_offline_partitions"), 0.0);
    }

    // Node 3 dies: it is reported down, the partitions it replicated shrink their ISR and are
    // reported under-replicated, by the tool (exit 1) and by their leaders' metrics.
    c.nodes[2].kill9();
    let others = c.bootstrap(&[0, 1]);
    let (code, doc) = status_until(
        &others,
        "node 3 down, partitions under-replicated",
        |_, d| d["nodes_down"] == 1 && d["under_replicated"].as_u64().unwrap() >= 3,
    );
    assert_eq!(code, 1, "{doc:#}");
    let down: Vec<i64> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["up"] == false)
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert_eq!(down, vec![3]);
    let led = metric_on(&c, 0, "sluice_under_replicated_partitions")
        + metric_on(&c, 1, "sluice_under_replicated_partitions");
    assert!(led >= 3.0, "the leaders count them: {led}");
    // Records written while node 3 is down leave its replicas behind, and the leaders say by
    // how much; the live followers keep up.
    sluice_tests::cluster::produce(&others, "st", 3, "behind", 300, 1000, &[]).assert_complete();
    let (_, doc) = status_until(&others, "node 3's replicas reported behind", |_, d| {
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["topic"] == "st")
            .all(|p| p["lag"]["3"].as_i64().is_some_and(|l| l > 0))
    });
    for p in doc["partitions"].as_array().unwrap() {
        if p["topic"] != "st" {
            continue;
        }
        let leader = p["leader"].as_i64().unwrap().to_string();
        assert_eq!(p["lag"][leader.as_str()], 0, "{p:#}");
    }
    let (code, out, _) = sluice_tests::run_sluice(&["cluster", "status", "--bootstrap", &others]);
    assert_eq!(code, 1);
    assert!(
        out.contains("DOWN") && out.contains("UNDER-REPLICATED"),
        "{out}"
    );
    // Nobody to ask at all: exit 2 with the reason.
    let (code, _, err) = sluice_tests::run_sluice(&[
        "cluster",
        "status",
        "--bootstrap",
        "127.0.0.1:1",
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no bootstrap address answered"), "{err}");
}

/// ElectLeaders through librdkafka's AdminClient: (partition → error name or null).
fn elect(bootstrap: &str, topic: &str, kind: &str) -> serde_json::Value {
    let out = sluice_tests::python(
        "elect_leaders.py",
        &[
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--partitions",
            "3",
            "--type",
            kind,
        ],
    );
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn kafka_admin_elect_leaders_moves_leadership_back_to_preferred_replicas() {
    let c = Cluster::running();
    let all = c.bootstrap(&[0, 1, 2]);
    sluice_tests::cluster::create_topic(&all, "el", 3, 3);
    // Once every partition is led by its preferred replica, a preferred election is not needed
    // and an unclean one neither (a leader exists).
    let settled = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = elect(&all, "el", "preferred");
        if (0..3).all(|p| r[p.to_string()] == "ELECTION_NOT_NEEDED") {
            break;
        }
        assert!(
            std::time::Instant::now() < settled,
            "leaders never settled on the preferred replicas: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r = elect(&all, "el", "unclean");
    assert!(
        (0..3).all(|p| r[p.to_string()] == "ELECTION_NOT_NEEDED"),
        "{r}"
    );
    let r = elect(&all, "no-such-topic", "preferred");
    assert_eq!(r["0"], "UNKNOWN_TOPIC_OR_PART", "{r}");
}

#[test]
fn a_new_topics_leaders_are_spread_evenly_and_elected_in_the_first_term() {
    let c = Cluster::running();
    let all = c.bootstrap(&[0, 1, 2]);
    sluice_tests::cluster::create_topic(&all, "spread", 30, 3);
    let led = |d: &serde_json::Value| -> Vec<(i64, i64, i64)> {
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["topic"] == "spread" && p["leader"].as_i64().unwrap() > 0)
            .map(|p| {
                (
                    p["leader"].as_i64().unwrap(),
                    p["leader_epoch"].as_i64().unwrap(),
                    p["replicas"][0].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (_, doc) = status_until(&all, "every partition of the new topic led", |_, d| {
        led(d).len() == 30
    });
    let leaders = led(&doc);
    for node in 1..=3 {
        let n = leaders.iter().filter(|(l, _, _)| *l == node).count();
        // Within ±10 % of an even share (10 each).
        assert!(
            (9..=11).contains(&n),
            "node {node} leads {n} of 30: {leaders:?}"
        );
    }
    assert!(
        leaders.iter().all(|(_, epoch, _)| *epoch == 1),
        "every leader elected in the first term: {leaders:?}"
    );
}

/// `__meta` compacts its log to an image of the metadata. A node that was down while topics
/// were created and deleted gets the image, drops the deleted topic's records and hosts the new
/// ones; a node restarted after compacting resumes from its own image.
#[test]
fn meta_log_compacts_and_a_node_that_was_away_catches_up_from_the_image() {
    let mut c = Cluster::new(["127.0.0.1"; 3]);
    c.cluster_flags = ["--raft-meta-compact-entries", "8"]
        .map(String::from)
        .to_vec();
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();
    let all = c.bootstrap(&[0, 1, 2]);
    create_topic(&all, "before", 2, 3);
    let before = c.data_dir(2).join("logs").join("before-0");
    assert!(before.is_dir(), "node 3 hosts before-0");

    c.nodes[2].kill9();
    let two = c.bootstrap(&[0, 1]);
    for t in 0..4 {
        create_topic(&two, &format!("while-away-{t}"), 2, 3);
    }
    let out = sluice_tests::python(
        "cluster_admin.py",
        &["--bootstrap", &two, "delete", "before"],
    );
    assert_eq!(out.trim(), "ok", "{out}");
    create_topic(&two, "last", 3, 3);
    let compacted = |i: usize| {
        c.nodes[i]
            .log()
            .contains("__meta log compacted to a snapshot image")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(compacted(0) && compacted(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "nodes 1 and 2 did not compact __meta:\n{}\n{}",
            c.nodes[0].log(),
            c.nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    c.nodes[2].restart();
    c.nodes[2]
        .wait_for_line("__meta snapshot received", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("node 3 got no image from the leader:\n{}", c.nodes[2].log()));
    // It serves the metadata it missed, hosts the new partitions and dropped the deleted ones.
    let three = c.bootstrap(&[2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = describe(&three, "last");
        let ready = (0..3).all(|p| leader_of(&md, p) > 0)
            && c.data_dir(2).join("logs").join("last-2").is_dir()
            && !before.exists();
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 did not catch up: {md}; before-0 still there: {}\n{}",
            before.exists(),
            c.nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let p = produce(&three, "last", 3, "after", 300, 1000, &[]);
    p.assert_complete();

    // A restart of a node that compacted resumes from its own image.
    c.nodes[0].kill9();
    c.nodes[0].restart();
    c.nodes[0]
        .wait_for_line(
            "__meta resumes from its snapshot image",
            Duration::from_secs(15),
        )
        .unwrap_or_else(|| {
            panic!(
                "node 1 did not resume from its image:\n{}",
                c.nodes[0].log()
            )
        });
    c.wait_for_kafka();
    let one = c.bootstrap(&[0]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = describe(&one, "while-away-3");
        if (0..2).all(|p| leader_of(&md, p) > 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 1 lost metadata over its restart: {md}\n{}",
            c.nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let p = produce(&one, "while-away-3", 2, "restarted", 200, 1000, &[]);
    p.assert_complete();
}
