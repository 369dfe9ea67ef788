//! Cluster mode bootstrap with real processes: `sluice certs`, `sluice raft-cluster`, the
//! `__meta` group electing a leader over QUIC, restarts, and every refusal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::{
    Process, free_port, free_tcp_ports, free_udp_port, free_udp_ports, log_field, run_sluice,
};

const ELECTED: &str = "meta leader elected";

/// Certificates, ports and data dirs for a 3-node cluster on 127.0.0.1.
struct Cluster {
    // Dropped first: the nodes are killed (and their logs printed on failure) before their
    // directory is removed.
    nodes: Vec<Process>,
    certs: PathBuf,
    /// Raft (UDP) ports.
    ports: Vec<u16>,
    /// Kafka (TCP) ports: every cluster node also serves Kafka.
    kafka_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .unwrap();
        let certs = dir.path().join("certs");
        make_certs(&certs);
        Cluster {
            certs,
            ports: free_udp_ports(3),
            kafka_ports: free_tcp_ports(3),
            nodes: Vec::new(),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn peers(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Arguments of node `id` (global flags on both sides of the subcommand, as an operator may).
    /// Positions the tests change: 1 node id, 8 data dir, 10 raft address, 12 Kafka address.
    fn args(&self, id: u64, certs: &Path) -> Vec<String> {
        let p = self.path();
        vec![
            "--node-id".into(),
            id.to_string(),
            "raft-cluster".into(),
            "--peers".into(),
            self.peers(),
            "--tls-dir".into(),
            certs.display().to_string(),
            "--data-dir".into(),
            p.join(format!("d{id}")).display().to_string(),
            "--raft-addr".into(),
            format!("127.0.0.1:{}", self.ports[id as usize - 1]),
            "--kafka-addr".into(),
            format!("127.0.0.1:{}", self.kafka_ports[id as usize - 1]),
        ]
    }

    fn start_all(&mut self) {
        for id in 1..=3 {
            let args = self.args(id, &self.certs);
            let n = Process::start(&format!("node{id}"), &args, self.dir.path());
            self.nodes.push(n);
        }
    }

    /// Waits until every running node logged a leader; returns (term, leader id) per node.
    fn wait_for_leader(&self, nodes: &[usize]) -> Vec<(u64, u64)> {
        nodes
            .iter()
            .map(|&i| {
                let line = self.nodes[i]
                    .wait_for_line(ELECTED, Duration::from_secs(15))
                    .unwrap_or_else(|| panic!("node {} saw no leader within 15 s", i + 1));
                parse_elected(&line)
            })
            .collect()
    }
}

fn parse_elected(line: &str) -> (u64, u64) {
    let term = log_field(line, "term").unwrap().parse().unwrap();
    let leader = log_field(line, "leader_id").unwrap().parse().unwrap();
    (term, leader)
}

fn make_certs(out: &Path) {
    let (code, _, err) = run_sluice(&["certs", "--nodes", "1,2,3", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn cluster_three_nodes_started_together_elect_a_meta_leader_at_term_2_or_less() {
    for round in 0..3 {
        let mut c = Cluster::new();
        c.start_all();
        let seen = c.wait_for_leader(&[0, 1, 2]);
        for &(term, leader) in &seen {
            assert!(
                term <= 2,
                "round {round}: first leader at term {term}: {seen:?}"
            );
            assert!((1..=3).contains(&leader), "{seen:?}");
        }
        // Nodes may first learn of different terms' leaders only if an election was repeated;
        // the ones that saw the same term must agree on its leader.
        for a in &seen {
            for b in &seen {
                if a.0 == b.0 {
                    assert_eq!(a.1, b.1, "two leaders in term {}: {seen:?}", a.0);
                }
            }
        }
        for n in &c.nodes {
            let log = n.log();
            assert!(log.contains("sluice cluster node started"), "{log}");
            // Every line the node logs names it.
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                assert!(line.contains("node_id="), "line without node_id: {line}");
            }
        }
    }
}

#[test]
fn cluster_node_restarted_after_sigkill_rejoins() {
    let mut c = Cluster::new();
    c.start_all();
    let seen = c.wait_for_leader(&[0, 1, 2]);
    let leader = seen[0].1 as usize - 1;
    c.nodes[leader].kill9();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The other two elect a new leader (in a later term).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    'wait: loop {
        for &i in &others {
            let log = c.nodes[i].log();
            if log
                .lines()
                .filter(|l| l.contains(ELECTED))
                .any(|l| parse_elected(l).0 > seen[0].0)
            {
                break 'wait;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new leader after killing node {}",
            leader + 1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.nodes[leader].restart();
    let loaded = c.nodes[leader]
        .wait_for_line("raft log loaded", Duration::from_secs(10))
        .expect("restarted node loads its log");
    let term: u64 = log_field(&loaded, "term").unwrap().parse().unwrap();
    assert!(
        term >= seen[0].0,
        "persisted term lost: {loaded} (was {})",
        seen[0].0
    );
    let line = c.nodes[leader]
        .wait_for_line(ELECTED, Duration::from_secs(15))
        .expect("restarted node learns the leader");
    let (new_term, new_leader) = parse_elected(&line);
    assert!(new_term > seen[0].0, "{line}");
    assert_ne!(new_leader, 0);
    // SIGTERM: a clean exit, the transport closed first.
    for n in c.nodes.iter_mut() {
        let status = n
            .terminate(Duration::from_secs(10))
            .expect("exits within 10 s of SIGTERM");
        assert!(status.success(), "{status}");
        assert!(n.log().contains("shutdown complete"), "{}", n.log());
    }
}

#[test]
fn cluster_refuses_missing_or_unknown_node_ids() {
    let c = Cluster::new();
    let peers = c.peers();
    let certs = c.certs.display().to_string();
    let data = c.path().join("d").display().to_string();
    let (code, _, err) = run_sluice(&[
        "--data-dir",
        &data,
        "raft-cluster",
        "--peers",
        &peers,
        "--tls-dir",
        &certs,
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--node-id"), "{err}");
    assert!(!c.path().join("d").exists(), "data dir touched");

    let (code, _, err) = run_sluice(&[
        "raft-cluster",
        "--peers",
        &peers,
        "--tls-dir",
        &certs,
        "--node-id",
        "4",
        "--data-dir",
        &data,
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("node 4 is not in --peers"), "{err}");
    assert!(err.contains(&peers), "{err}");
}

#[test]
fn cluster_refuses_a_data_dir_of_another_node() {
    let c = Cluster::new();
    let mut args = c.args(1, &c.certs);
    let n1 = Process::start("node1", &args, c.path());
    n1.wait_for_line("sluice cluster node started", Duration::from_secs(10))
        .expect("node 1 starts");
    drop(n1);
    // Same data dir (d1), now claiming to be node 2.
    args[1] = "2".into();
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (code, _, err) = run_sluice(&args);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("node 2:"), "{err}");
    assert!(err.contains("belongs to node 1"), "{err}");
}

#[test]
fn cluster_refuses_a_duplicate_node_id_at_the_handshake() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_for_leader(&[0, 1, 2]);
    // A second node 2 at another address: it dials node 3, which already has node 2 (a leader
    // needs only two nodes: wait for node 3 to have accepted the real node 2 as well).
    c.nodes[2]
        .wait_for_line("accepted node 2", Duration::from_secs(15))
        .expect("node 3 accepts node 2");
    let mut args = c.args(2, &c.certs);
    let dup_dir = c.path().join("dup").display().to_string();
    let dup_port = free_udp_port();
    args[8] = dup_dir;
    args[10] = format!("127.0.0.1:{dup_port}");
    args[12] = format!("127.0.0.1:{}", free_port());
    let dup = Process::start("dup2", &args, c.path());
    let acceptor = c.nodes[2]
        .wait_for_line("refusing a second node 2", Duration::from_secs(15))
        .expect("node 3 refuses the second node 2");
    assert!(acceptor.contains("node_id=3"), "{acceptor}");
    assert!(
        acceptor.contains("node 2 is already connected"),
        "{acceptor}"
    );
    assert!(
        acceptor.contains(&format!("127.0.0.1:{dup_port}")),
        "{acceptor}"
    );
    let dialer = dup
        .wait_for_line("refusing a second node 2", Duration::from_secs(15))
        .expect("the second node 2 logs the refusal");
    assert!(dialer.contains("node_id=2"), "{dialer}");
    assert!(dialer.contains("node 3"), "{dialer}");
    // The impostor never joins: it sees no leader (nodes 1 and 3 never talk to it).
    assert!(
        dup.wait_for_line(ELECTED, Duration::from_secs(3)).is_none(),
        "{}",
        dup.log()
    );
    // The real node 2 keeps its place.
    assert!(!c.nodes[1].log().contains("connection to node 3 lost"));
}

#[test]
fn cluster_refuses_a_node_with_a_foreign_certificate_and_does_not_form_without_it() {
    let c = Cluster::new();
    let foreign = c.path().join("foreign-certs");
    make_certs(&foreign);
    let n1 = Process::start("node1", &c.args(1, &c.certs), c.path());
    let n2 = Process::start("node2", &c.args(2, &c.certs), c.path());
    let n3 = Process::start("node3", &c.args(3, &foreign), c.path());
    // A new cluster forms only once every peer reported an empty state: nodes 1 and 2 say they
    // wait for node 3 (an empty node cannot tell a new cluster from one whose state it lost).
    let waiting = n1
        .wait_for_line("waiting to hear from every peer", Duration::from_secs(15))
        .expect("node 1 says what it waits for");
    assert!(waiting.contains("waiting_for=[3]"), "{waiting}");
    let refused = n3
        .wait_for_line("TLS handshake failed", Duration::from_secs(10))
        .expect("node 3 refuses the cluster's nodes at TLS");
    assert!(refused.contains("node_id=3"), "{refused}");
    let dialer = n1
        .wait_for_line("connecting to node 3 failed", Duration::from_secs(10))
        .expect("node 1 cannot connect to node 3");
    assert!(dialer.contains("UnknownIssuer"), "{dialer}");
    assert!(
        n3.wait_for_line(ELECTED, Duration::from_secs(2)).is_none(),
        "node 3 joined despite a foreign certificate:\n{}",
        n3.log()
    );
    assert!(n2.log().contains("connecting to node 3 failed"));
    assert!(!n1.log().contains(ELECTED), "{}", n1.log());
}

#[test]
fn cluster_certs_command_writes_files_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    make_certs(&out);
    for f in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "node-3.pem",
        "node-3.key",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let before = std::fs::read(out.join("ca.pem")).unwrap();
    let (code, _, err) = run_sluice(&["certs", "--nodes", "1,2,3", "--out", out.to_str().unwrap()]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), before);
}
