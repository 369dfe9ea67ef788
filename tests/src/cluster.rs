//! A 3-node `sluice raft-cluster` for integration tests, and the client helpers cluster tests
//! share: certificates, free ports and data dirs in one temp dir; the nodes started together;
//! waiting for the `__meta` and partition leaders (from the logs and from Metadata); comparing
//! the replicas' segment files; creating topics (`cluster_admin.py`) and producing with acks=all
//! (`cluster_producer.py`). Every node is killed when the [`Cluster`] is dropped; the logs of
//! every node and the cluster dir are kept and printed if the test panics.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Process, log_field, python, python_output, run_sluice};

pub const META_ELECTED: &str = "meta leader elected";
pub const PARTITION_ELECTED: &str = "partition leader elected";

// ---------------------------------------------------------------------------------------------
// A 3-node cluster
// ---------------------------------------------------------------------------------------------

/// Where one node listens.
pub struct Addr {
    /// The IP both listeners bind.
    pub ip: String,
    /// Kafka listener (TCP), also the advertised address.
    pub kafka: String,
    /// QUIC endpoint (UDP).
    pub raft: String,
    /// A second Kafka listener (PLAINTEXT) when [`Cluster::sasl`] is set.
    pub plain: String,
    /// `IP:PORT` of its metrics endpoint.
    pub metrics: String,
}

/// Three `sluice raft-cluster` nodes with their certificates and data dirs in one temp dir.
pub struct Cluster {
    /// `nodes[i]` is node `i + 1`.
    pub nodes: Vec<Process>,
    /// `addrs[i]` is where node `i + 1` listens.
    pub addrs: Vec<Addr>,
    certs: PathBuf,
    /// Global options every node gets (before the subcommand), e.g. `--offsets-partitions 6`.
    flags: Vec<String>,
    /// `raft-cluster` options every node gets (after the subcommand), e.g.
    /// `--raft-compact-entries 20`. Set before [`Cluster::start_all`].
    pub cluster_flags: Vec<String>,
    /// Kept (and printed) if the test fails or `SLUICE_TEST_KEEP` is set.
    dir: Option<tempfile::TempDir>,
    /// Serve clients on `SASL_PLAINTEXT://kafka,PLAINTEXT://plain` instead of `--kafka-addr`.
    /// Set before [`Cluster::start_all`].
    pub sasl: bool,
}

impl Cluster {
    /// Certificates and free ports for nodes 1, 2, 3 on `ips` (one address per node).
    pub fn new(ips: [&str; 3]) -> Cluster {
        Cluster::with_flags(ips, &[])
    }

    /// [`Cluster::new`], every node also started with the global options `flags`.
    pub fn with_flags(ips: [&str; 3], flags: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .unwrap();
        let certs = dir.path().join("certs");
        let (code, _, err) = run_sluice(&[
            "certs",
            "--nodes",
            "1,2,3",
            "--out",
            certs.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "sluice certs: {err}");
        // Every socket stays bound until all are, so no two nodes get the same port.
        let tcp: Vec<TcpListener> = ips.iter().map(|ip| crate::bind_tcp(ip)).collect();
        let plain: Vec<TcpListener> = ips.iter().map(|ip| crate::bind_tcp(ip)).collect();
        let http: Vec<TcpListener> = ips.iter().map(|ip| crate::bind_tcp(ip)).collect();
        let udp: Vec<UdpSocket> = ips.iter().map(|ip| crate::bind_udp(ip)).collect();
        let addrs = ips
            .iter()
            .zip(tcp.iter().zip(&udp).zip(&http).zip(&plain))
            .map(|(ip, (((t, u), h), pl))| Addr {
                ip: ip.to_string(),
                plain: format!("{ip}:{}", pl.local_addr().unwrap().port()),
                kafka: format!("{ip}:{}", t.local_addr().unwrap().port()),
                raft: format!("{ip}:{}", u.local_addr().unwrap().port()),
                metrics: format!("{ip}:{}", h.local_addr().unwrap().port()),
            })
            .collect();
        Cluster {
            nodes: Vec::new(),
            addrs,
            certs,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            cluster_flags: Vec::new(),
            dir: Some(dir),
            sasl: false,
        }
    }

    /// Three nodes on 127.0.0.1, started together, with a `__meta` leader and every Kafka
    /// listener up.
    pub fn running() -> Cluster {
        let mut c = Cluster::new(["127.0.0.1"; 3]);
        c.start_all();
        c.wait_for_meta_leader();
        c.wait_for_kafka();
        c
    }

    /// Partition Raft logs compacted every ~20 entries, and a replica silent for 1.5 s no
    /// longer holding that back: a replica down longer than that returns to logs compacted past
    /// it and catches up from a snapshot, copying records from another replica.
    pub fn compact_raft_logs_often(&mut self) {
        self.cluster_flags = [
            "--raft-compact-entries",
            "20",
            "--raft-replica-timeout-ms",
            "1500",
        ]
        .map(String::from)
        .to_vec();
    }

    /// The cluster's temp dir (certificates, data dirs, node logs).
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Data dir of node `i + 1`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.path().join(format!("d{}", i + 1))
    }

    /// The `--peers` list (the three nodes the cluster was created with; nodes added later
    /// join with `--join`).
    pub fn peers(&self) -> String {
        self.addrs
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, a)| format!("{}@{}", i + 1, a.raft))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Command line of node `i + 1`.
    pub fn args(&self, i: usize) -> Vec<String> {
        let listener_flag = if self.sasl {
            "--listeners".to_string()
        } else {
            "--kafka-addr".to_string()
        };
        let listener = if self.sasl {
            format!(
                "SASL_PLAINTEXT://{},PLAINTEXT://{}",
                self.addrs[i].kafka, self.addrs[i].plain
            )
        } else {
            self.addrs[i].kafka.clone()
        };
        let mut args: Vec<String> = [
            "--node-id",
            &(i + 1).to_string(),
            &listener_flag,
            &listener,
            "--metrics-addr",
            &self.addrs[i].metrics,
            "--data-dir",
            self.data_dir(i).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.flags.iter().cloned());
        let (members_flag, members) = if i < 3 {
            ("--peers", self.peers())
        } else {
            ("--join", self.addrs[0].raft.clone())
        };
        args.extend(
            [
                "raft-cluster",
                "--raft-addr",
                &self.addrs[i].raft,
                members_flag,
                &members,
                "--tls-dir",
                self.certs.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args.extend(self.cluster_flags.iter().cloned());
        args
    }

    /// A new node (id 4, 5, …): its certificate (from the cluster's CA) and addresses on `ip`;
    /// returns its index. [`Cluster::start_node`] starts it with `--join` through node 1, and
    /// it waits until it is added ([`Cluster::add_node`]).
    pub fn new_node(&mut self, ip: &str) -> usize {
        let i = self.addrs.len();
        let id = (i + 1).to_string();
        let (code, _, err) = run_sluice(&[
            "certs",
            "--nodes",
            &id,
            "--out",
            self.certs.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "sluice certs --nodes {id}: {err}");
        let (t, pl, h, u) = (
            crate::bind_tcp(ip),
            crate::bind_tcp(ip),
            crate::bind_tcp(ip),
            crate::bind_udp(ip),
        );
        self.addrs.push(Addr {
            ip: ip.to_string(),
            plain: format!("{ip}:{}", pl.local_addr().unwrap().port()),
            kafka: format!("{ip}:{}", t.local_addr().unwrap().port()),
            raft: format!("{ip}:{}", u.local_addr().unwrap().port()),
            metrics: format!("{ip}:{}", h.local_addr().unwrap().port()),
        });
        i
    }

    /// Starts node `i + 1` made by [`Cluster::new_node`].
    pub fn start_node(&mut self, i: usize) {
        assert_eq!(self.nodes.len(), i, "start new nodes in order");
        let args = self.args(i);
        let p = Process::start(&format!("node{}", i + 1), &args, self.path());
        self.nodes.push(p);
    }

    /// `sluice cluster add-node` for node `i + 1` through `bootstrap`: records it as a member
    /// and waits until it votes in `__meta`. Returns the tool's output.
    pub fn add_node(&self, i: usize, bootstrap: &str) -> String {
        let node = format!("{}@{}", i + 1, self.addrs[i].raft);
        let (code, out, err) = run_sluice(&[
            "cluster",
            "add-node",
            &node,
            "--bootstrap",
            bootstrap,
            "--wait-ms",
            "60000",
        ]);
        assert_eq!(code, 0, "add-node {node}: {out}\n{err}");
        out
    }

    /// `sluice cluster remove-node` of node `i + 1`: waits until its replicas moved and it left
    /// `__meta`. Returns (exit status, stdout, stderr).
    pub fn remove_node(&self, i: usize, bootstrap: &str) -> (i32, String, String) {
        run_sluice(&[
            "cluster",
            "remove-node",
            &(i + 1).to_string(),
            "--bootstrap",
            bootstrap,
            "--wait-ms",
            "90000",
        ])
    }

    /// Spawns the three nodes back to back (as good as the same moment).
    pub fn start_all(&mut self) {
        let args: Vec<Vec<String>> = (0..3).map(|i| self.args(i)).collect();
        for (i, a) in args.iter().enumerate() {
            let p = Process::start(&format!("node{}", i + 1), a, self.path());
            self.nodes.push(p);
        }
    }

    /// Waits until every node has logged a `__meta` leader; asserts the first one was elected
    /// at term 1 or 2 (nodes started together should not need more than one retry).
    pub fn wait_for_meta_leader(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let line = n
                .wait_for_line(META_ELECTED, Duration::from_secs(15))
                .unwrap_or_else(|| panic!("node {} saw no meta leader within 15 s", i + 1));
            let term = field_u64(&line, "term");
            assert!(
                term <= 2,
                "node {}: first meta leader at term {term}: {line}",
                i + 1
            );
        }
    }

    /// The `__meta` leader of the highest term any node logged.
    pub fn meta_leader(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.all_logs()
                    .lines()
                    .filter(|l| l.contains(META_ELECTED))
                    .map(|l| (field_u64(l, "term"), field_u64(l, "leader_id")))
                    .collect::<Vec<_>>()
            })
            .max()
            .expect("a meta leader was logged")
            .1
    }

    /// Waits until every node accepts Kafka connections (nothing else: clients must cope with a
    /// cluster that is still registering its brokers).
    pub fn wait_for_kafka(&mut self) {
        for i in 0..self.nodes.len() {
            let deadline = Instant::now() + Duration::from_secs(20);
            let addr = self.addrs[i].kafka.parse().unwrap();
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(s) = self.nodes[i].try_wait() {
                    panic!("node {} exited with {s}:\n{}", i + 1, self.nodes[i].log());
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} does not serve Kafka on {} within 20 s",
                    i + 1,
                    self.addrs[i].kafka
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `HOST:PORT,…` of the Kafka listeners of `nodes` (indexes).
    pub fn bootstrap(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&i| self.addrs[i].kafka.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (term, leader id) of the latest `partition leader elected` line for `topic`/`partition`
    /// in the logs (every process so far) of `nodes`.
    pub fn latest_partition_election(
        &self,
        topic: &str,
        partition: i32,
        nodes: &[usize],
    ) -> Option<(u64, u64)> {
        nodes
            .iter()
            .flat_map(|&i| partition_elections(&self.nodes[i].all_logs(), topic, partition))
            .max()
    }

    /// Waits for a `partition leader elected` line with a term above `after_term` in the logs
    /// of `nodes`; returns (term, leader id).
    pub fn wait_for_partition_election(
        &self,
        topic: &str,
        partition: i32,
        nodes: &[usize],
        after_term: u64,
        timeout: Duration,
    ) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.latest_partition_election(topic, partition, nodes)
                && e.0 > after_term
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no `{PARTITION_ELECTED}` for {topic}-{partition} after term {after_term} \
                 on nodes {nodes:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader of `topic`/`partition` once Metadata (asked through every node in turn) and
    /// the latest logged election agree on it; returns (leader id, its term).
    pub fn agreed_leader(&self, topic: &str, partition: i32, timeout: Duration) -> (u64, u64) {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let views: Vec<i64> = (0..3)
                .map(|i| leader_of(&describe(&self.addrs[i].kafka, topic), partition))
                .collect();
            let logged = self.latest_partition_election(topic, partition, &[0, 1, 2]);
            // Printed with the test's output when it fails: how the views moved.
            eprintln!(
                "agreed_leader {topic}-{partition} after {:?}: views {views:?}, logged {logged:?}",
                start.elapsed()
            );
            if let Some((term, leader)) = logged
                && views.iter().all(|&v| v == leader as i64)
            {
                return (leader, term);
            }
            assert!(
                Instant::now() < deadline,
                "{topic}-{partition}: Metadata through nodes 1, 2, 3 names leaders {views:?}, \
                 the logs name (term, leader) {logged:?}: no agreement within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the three replicas of `topic`/`partition` hold the same, non-empty record
    /// batches on disk; returns them.
    pub fn wait_for_identical_logs(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs: Vec<Option<Vec<u8>>> = (0..3)
                .map(|i| log_bytes(&self.data_dir(i), topic, partition))
                .collect();
            if let Some(Some(first)) = logs.first()
                && !first.is_empty()
                && logs.iter().all(|l| l.as_ref() == Some(first))
            {
                return first.clone();
            }
            if Instant::now() > deadline {
                let dirs: Vec<String> = (0..3).map(|i| listing(&self.data_dir(i))).collect();
                panic!(
                    "{topic}-{partition}: the replicas' segment files still differ after \
                     {timeout:?}: {}\ndata dirs:\n{}",
                    describe_difference(&logs),
                    dirs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // First what usually explains a failure (CI shows the start of a failure's output),
            // then every full log as the nodes are dropped.
            for n in &self.nodes {
                eprintln!(
                    "---- {} log, digest ----\n{}",
                    n.name,
                    node_log_digest(&n.all_logs(), 60)
                );
            }
        }
        // Kill the nodes (their logs are printed if the test failed) before their dir goes.
        self.nodes.clear();
        if (std::thread::panicking() || std::env::var_os("SLUICE_TEST_KEEP").is_some())
            && let Some(d) = self.dir.take()
        {
            eprintln!("cluster dir kept for inspection: {}", d.keep().display());
        }
    }
}

/// The lines of a node's log that usually explain a failed cluster test: warnings, errors,
/// elections (but of `__consumer_offsets`, 50 of them), leadership hand-offs, snapshot installs,
/// dropped proposals (the last `n`).
pub fn node_log_digest(log: &str, n: usize) -> String {
    const KEYS: [&str; 7] = [
        " WARN ",
        " ERROR ",
        "elected",
        "leadership",
        "install",
        "dropped",
        "stopping",
    ];
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| KEYS.iter().any(|k| l.contains(k)) && !l.contains("__consumer_offsets"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The lines of a librdkafka debug log (cluster_producer.py `--debug`) that say where the
/// client sent what and what came back: leaders learned, connections chosen, producer ids,
/// errors and retries (the last `n`).
pub fn client_log_digest(log: &str, n: usize) -> String {
    const KEYS: [&str; 9] = [
        "leader",
        "selected",
        "acquir",
        "err",
        "fail",
        "timed out",
        "retry",
        "drain",
        "state change",
    ];
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            KEYS.iter().any(|k| l.contains(k))
                && !l.contains("produce messageset")
                && !l.contains("terminat")
                && !l.contains("_destroy")
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The number in `field=` of a log line (quotes allowed); panics if there is none.
pub fn field_u64(line: &str, field: &str) -> u64 {
    log_field(line, field)
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no numeric `{field}=` in: {line}"))
}

/// (term, leader id) of every `partition leader elected` line for `topic`/`partition` in `log`.
pub fn partition_elections(log: &str, topic: &str, partition: i32) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains(PARTITION_ELECTED))
        .filter(|l| log_field(l, "topic").map(|t| t.trim_matches('"')) == Some(topic))
        .filter(|l| {
            log_field(l, "partition").map(|p| p.trim_matches('"')) == Some(&partition.to_string())
        })
        .map(|l| (field_u64(l, "term"), field_u64(l, "leader_id")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Creates `topic` (cluster_admin.py) and waits until every partition has a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: u32, rf: u32) {
    // Thousands of partitions take longer to create and elect on a loaded CI machine.
    let timeout_s = 30 + partitions / 50;
    let out = python(
        "cluster_admin.py",
        &[
            "--bootstrap",
            bootstrap,
            "--timeout",
            &timeout_s.to_string(),
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--rf",
            &rf.to_string(),
        ],
    );
    assert_eq!(out.trim(), "ok", "{out}");
}

/// One Metadata response for `topic` (see cluster_admin.py).
pub fn describe(bootstrap: &str, topic: &str) -> Value {
    let out = python(
        "cluster_admin.py",
        &["--bootstrap", bootstrap, "describe", topic],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The leader of `partition` in a [`describe`] result (-1 if none).
pub fn leader_of(md: &Value, partition: i32) -> i64 {
    md["partitions"][partition.to_string()]["leader"]
        .as_i64()
        .unwrap_or(-1)
}

/// One acknowledged message.
#[derive(Clone, Debug)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
    /// Wall-clock ms at which the producer got the delivery report.
    pub ms: u64,
}

/// What a cluster_producer.py run printed.
#[derive(Default)]
pub struct Produced {
    /// `ACK` lines, in the order printed.
    pub acks: Vec<Ack>,
    /// `ERR` lines.
    pub failures: Vec<String>,
    /// The final JSON line.
    pub summary: Option<Value>,
    /// The client's own log (librdkafka), when it was captured.
    pub stderr: String,
}

impl Produced {
    /// Takes one line of output.
    pub fn take(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "ACK" if f.len() == 5 => {
                let bad = |e: &dyn std::fmt::Display| -> ! {
                    panic!("unparsable producer line ({e}): {line:?}")
                };
                self.acks.push(Ack {
                    partition: f[1].parse().unwrap_or_else(|e| bad(&e)),
                    offset: f[2].parse().unwrap_or_else(|e| bad(&e)),
                    value: f[3].to_string(),
                    ms: f[4].parse().unwrap_or_else(|e| bad(&e)),
                })
            }
            "ERR" => self.failures.push(line.to_string()),
            _ if line.starts_with('{') => {
                self.summary =
                    Some(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            }
            _ => panic!("unexpected producer output: {line}"),
        }
    }

    /// The acks of `partition`.
    pub fn on(&self, partition: i32) -> impl Iterator<Item = &Ack> {
        self.acks.iter().filter(move |a| a.partition == partition)
    }

    /// Asserts the run ended with everything produced acknowledged and nothing failed.
    pub fn assert_complete(&self) {
        let s = self
            .summary
            .as_ref()
            .expect("the producer printed no summary");
        assert!(
            s["fatal"].is_null()
                && s["failed"] == 0
                && s["unflushed"] == 0
                && s["produced"] == s["acked"]
                && self.failures.is_empty(),
            "not every produced message was acknowledged: {s}; failures: {:?}\n\
             producer log, digest (last 60 lines):\n{}\n\
             producer log (last 20 lines):\n{}",
            &self.failures[..self.failures.len().min(10)],
            client_log_digest(&self.stderr, 60),
            tail(&self.stderr, 20)
        );
        assert_eq!(s["acked"].as_u64(), Some(self.acks.len() as u64), "{s}");
    }
}

/// cluster_producer.py with `--count` and the options `extra` (e.g. `--acks 1`), run to
/// completion.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    prefix: &str,
    count: u32,
    rate: u32,
    extra: &[&str],
) -> Produced {
    let (partitions, count, rate) = (partitions.to_string(), count.to_string(), rate.to_string());
    let mut args = vec![
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--partitions",
        &partitions,
        "--prefix",
        prefix,
        "--count",
        &count,
        "--rate",
        &rate,
        "--timeout-ms",
        "25000",
    ];
    args.extend_from_slice(extra);
    let out = python_output("cluster_producer.py", &args);
    let mut p = Produced {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ..Produced::default()
    };
    assert!(
        out.status.success(),
        "cluster_producer.py failed ({}):\n{}",
        out.status,
        p.stderr
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .for_each(|l| p.take(l));
    p
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// On-disk logs
// ---------------------------------------------------------------------------------------------

/// The segments of a partition (`DATA/logs/<topic>-<partition>/*.log`, in name order)
/// concatenated: its record batches, whatever the segment boundaries. None if the partition
/// directory does not exist (yet).
pub fn log_bytes(data: &Path, topic: &str, partition: i32) -> Option<Vec<u8>> {
    let dir = data.join("logs").join(format!("{topic}-{partition}"));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for s in segments {
        out.extend(std::fs::read(&s).ok()?);
    }
    Some(out)
}

/// Every file under `dir` with its size, one per line (for failure messages).
pub fn listing(dir: &Path) -> String {
    fn walk(d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            out.push(format!("{} (missing)", d.display()));
            return;
        };
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(format!("  {} {len}", p.display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.join("\n")
}

/// How the replicas' segment files differ (for failure messages).
pub fn describe_difference(logs: &[Option<Vec<u8>>]) -> String {
    let mut parts: Vec<String> = logs
        .iter()
        .enumerate()
        .map(|(i, l)| match l {
            None => format!("node {}: no partition dir", i + 1),
            Some(b) => format!("node {}: {} bytes", i + 1, b.len()),
        })
        .collect();
    if let Some(Some(first)) = logs.first() {
        for (i, other) in logs.iter().enumerate().skip(1) {
            let Some(other) = other else { continue };
            if let Some(pos) = first.iter().zip(other).position(|(x, y)| x != y) {
                parts.push(format!("nodes 1 and {} first differ at byte {pos}", i + 1));
            }
        }
    }
    parts.join(", ")
}
