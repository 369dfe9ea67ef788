//! Test harness: starts the real `sluice` binary on a free port with a temporary data dir, runs
//! real Kafka clients (Python scripts in `tests/clients/`) against it, and stops every process
//! it started.
//!
//! The binary is `$SLUICE_BIN` if set (CI points it at the tokio and the smol build in turn),
//! else `target/debug/sluice`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod kafka;

/// Path of the broker binary under test.
pub fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/debug/sluice");
    assert!(
        p.exists(),
        "{} not built: run `cargo build -p sluice-server` first (or set SLUICE_BIN)",
        p.display()
    );
    p
}

/// `GET path` over HTTP/1.1 to `addr`: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The value of the Prometheus sample `series` (name with its labels, exactly as rendered).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    bind_tcp("127.0.0.1").local_addr().unwrap().port()
}

/// Ports tests listen on are picked below Linux's ephemeral range (32768–60999), where the
/// kernel takes the source ports of outgoing connections: a port picked with `bind(0)` and
/// released could be taken by a client's connection before the broker binds it.
const TEST_PORTS: std::ops::Range<u16> = 15_000..32_000;

/// A random port of [`TEST_PORTS`] (seeded per process and call, so parallel test processes
/// spread over the range).
fn random_test_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut x = (u64::from(std::process::id()) << 32)
        ^ nanos
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    TEST_PORTS.start + (x % u64::from(TEST_PORTS.end - TEST_PORTS.start)) as u16
}

/// A TCP listener on `ip` at a free port of [`TEST_PORTS`].
pub fn bind_tcp(ip: &str) -> TcpListener {
    for _ in 0..1000 {
        if let Ok(l) = TcpListener::bind((ip, random_test_port())) {
            return l;
        }
    }
    panic!("no free TCP port on {ip} in {TEST_PORTS:?}")
}

/// A UDP socket on `ip` at a free port of [`TEST_PORTS`].
pub fn bind_udp(ip: &str) -> std::net::UdpSocket {
    for _ in 0..1000 {
        if let Ok(s) = std::net::UdpSocket::bind((ip, random_test_port())) {
            return s;
        }
    }
    panic!("no free UDP port on {ip} in {TEST_PORTS:?}")
}

/// A running broker process.
pub struct Broker {
    child: Option<Child>,
    /// `127.0.0.1:PORT` (with `--listeners`: the first listener's).
    pub addr: String,
    port: u16,
    /// `--listeners` as (name, port); empty: the broker runs with `--kafka-addr`.
    listeners: Vec<(String, u16)>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
    log_path: PathBuf,
    starts: u32,
}

/// A fresh temporary directory for a broker (its data dir is `<dir>/data`, see
/// [`Broker::data_dir_in`]); prepare it (e.g. `sluice users add --data-dir`), then hand it to
/// [`Broker::start_in`] or [`Broker::start_listeners_in`].
pub fn broker_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-test-")
        .tempdir()
        .unwrap()
}

impl Broker {
    /// Starts a broker with a fresh data dir.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_in(broker_tempdir(), extra)
    }

    /// Starts a broker (`--kafka-addr` on a free port) in a directory from
    /// [`broker_tempdir`] the caller may have prepared.
    pub fn start_in(tmp: tempfile::TempDir, extra: &[&str]) -> Broker {
        Broker::launch(tmp, free_port(), Vec::new(), extra)
    }

    /// Starts a broker with `--listeners NAME://127.0.0.1:PORT,...` (no `--kafka-addr`) and a
    /// fresh data dir; a port of 0 picks a free one. Waits until every listener accepts TCP.
    /// Each listener's address: [`Broker::listener`].
    pub fn start_listeners(listeners: &[(&str, u16)], extra: &[&str]) -> Broker {
        Broker::start_listeners_in(broker_tempdir(), listeners, extra)
    }

    /// [`Broker::start_listeners`] in a directory from [`broker_tempdir`].
    pub fn start_listeners_in(
        tmp: tempfile::TempDir,
        listeners: &[(&str, u16)],
        extra: &[&str],
    ) -> Broker {
        assert!(!listeners.is_empty(), "at least one listener");
        let mut free = free_tcp_ports(listeners.len()).into_iter();
        let listeners: Vec<(String, u16)> = listeners
            .iter()
            .map(|(n, p)| {
                let p = if *p == 0 { free.next().unwrap() } else { *p };
                (n.to_string(), p)
            })
            .collect();
        let port = listeners[0].1;
        Broker::launch(tmp, port, listeners, extra)
    }

    fn launch(
        tmp: tempfile::TempDir,
        port: u16,
        listeners: Vec<(String, u16)>,
        extra: &[&str],
    ) -> Broker {
        let dir = tmp.path().to_path_buf();
        let mut b = Broker {
            child: None,
            addr: String::new(),
            port,
            listeners,
            dir,
            _tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log_path: PathBuf::new(),
            starts: 0,
        };
        b.spawn();
        b
    }

    /// Data directory.
    pub fn data_dir(&self) -> PathBuf {
        Broker::data_dir_in(&self.dir)
    }

    /// The data directory a broker started in `dir` (from [`broker_tempdir`]) uses.
    pub fn data_dir_in(dir: &Path) -> PathBuf {
        dir.join("data")
    }

    /// `127.0.0.1:PORT` of the listener named `name` (e.g. "SASL_SSL").
    pub fn listener(&self, name: &str) -> String {
        let (_, p) = self
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", self.listeners));
        format!("127.0.0.1:{p}")
    }

    /// The `--listeners` value (empty without listeners).
    pub fn listeners_arg(&self) -> String {
        self.listeners
            .iter()
            .map(|(n, p)| format!("{n}://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.addr = format!("127.0.0.1:{}", self.port);
        self.log_path = self.dir.join(format!("broker-{}.log", self.starts));
        let log = std::fs::File::create(&self.log_path).unwrap();
        let mut cmd = Command::new(bin());
        if self.listeners.is_empty() {
            cmd.arg("--kafka-addr").arg(&self.addr);
        } else {
            cmd.arg("--listeners").arg(self.listeners_arg());
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn sluice");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut addrs = vec![self.addr.clone()];
        addrs.extend(self.listeners.iter().map(|(_, p)| format!("127.0.0.1:{p}")));
        loop {
            if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited at start with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "broker did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the current (last started) process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Everything every process of this broker logged.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("broker-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL, no chance to sync or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("broker ignored SIGTERM for 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data dir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }

    /// PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- broker log ----\n{}", self.all_logs());
        }
    }
}

/// `tests/clients/<name>`.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Runs `script cmd --bootstrap BOOTSTRAP extra…` and parses the last JSON line it printed.
pub fn python_json(script: &str, cmd: &str, bootstrap: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![cmd, "--bootstrap", bootstrap];
    args.extend_from_slice(extra);
    let out = python(script, &args);
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from {script} {cmd}:\n{out}"));
    serde_json::from_str(last).unwrap()
}

/// A JSON array of strings.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Checks an exactly-once copy: `records` (`[[partition, offset, "v-N"], …]` as a
/// read_committed reader printed them) hold each of `v-0`…`v-{n-1}` exactly once, in
/// increasing order within each partition.
pub fn assert_copied_exactly_once(records: &serde_json::Value, n: usize) {
    use std::collections::BTreeMap;
    let mut count = BTreeMap::<String, usize>::new();
    let mut last = BTreeMap::<i64, u64>::new();
    for r in records.as_array().expect("a list of records") {
        let p = r[0].as_i64().unwrap();
        let value = r[2].as_str().unwrap().to_string();
        let i: u64 = value[2..].parse().unwrap();
        if let Some(prev) = last.insert(p, i) {
            assert!(prev < i, "partition {p}: {value} after v-{prev}");
        }
        *count.entry(value).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let missing: Vec<usize> = (0..n)
        .filter(|i| !count.contains_key(&format!("v-{i}")))
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
}

/// Runs a Python client script to completion; panics with its output if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = python_output(script, args);
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a Python client script to completion and returns whatever happened.
pub fn python_output(script: &str, args: &[&str]) -> Output {
    let mut child = Command::new("python3")
        .arg(client_script(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // Drain both pipes while waiting, so a chatty client never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    // Bounded: a client that hangs fails the test instead of hanging CI.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// A client process whose stdout lines are collected as they arrive.
pub struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    /// Starts a Python client script.
    pub fn start(script: &str, args: &[&str]) -> Streaming {
        let mut child = Command::new("python3")
            .arg(client_script(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming { child, lines: rx }
    }

    /// Waits for the next line, up to `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Stops the process (SIGKILL) and returns every line not yet taken.
    pub fn kill_and_drain(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut v = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            v.push(l);
        }
        v
    }

    /// Waits up to `timeout` for the process to exit, then returns all remaining lines.
    pub fn wait_and_drain(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_and_drain()
    }

    /// Signals the process.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads from a raw socket until `n` bytes or EOF.
pub fn read_exact_or_eof(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    buf
}

/// Writes bytes to a raw socket.
pub fn write_all(s: &mut TcpStream, b: &[u8]) {
    s.write_all(b).unwrap();
}

/// A UDP port on 127.0.0.1 nobody is bound to right now (for `--raft-addr`).
pub fn free_udp_port() -> u16 {
    bind_udp("127.0.0.1").local_addr().unwrap().port()
}

/// `n` distinct UDP ports on 127.0.0.1, all free right now (bound together, then released).
pub fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<std::net::UdpSocket> = (0..n).map(|_| bind_udp("127.0.0.1")).collect();
    sockets
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// `n` distinct TCP ports on 127.0.0.1, all free right now (bound together, then released).
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| bind_tcp("127.0.0.1")).collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Runs `sluice ARGS` to completion (no `SLUICE_*` or `RUST_LOG` from the test's environment);
/// returns (exit code, stdout, stderr).
pub fn run_sluice(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") && k != "SLUICE_BIN" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs `sluice ARGS` like [`run_sluice`], writing `stdin` to its standard input.
pub fn run_sluice_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") && k != "SLUICE_BIN" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `sluice users add NAME --mechanism M --password-stdin --data-dir DATA` on a stopped broker's
/// data dir; panics with the command's output if it fails.
pub fn users_add(data_dir: &Path, name: &str, mechanism: &str, password: &str) {
    let data = data_dir.to_str().unwrap();
    let args = [
        "users",
        "add",
        name,
        "--mechanism",
        mechanism,
        "--password-stdin",
        "--data-dir",
        data,
    ];
    let (code, out, err) = run_sluice_stdin(&args, &format!("{password}\n"));
    assert_eq!(
        code, 0,
        "sluice {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}"
    );
}

/// Certificates for TLS listeners, made by `sluice certs --server-names localhost,127.0.0.1
/// --out DIR [--client NAME ...]`.
pub struct Certs {
    /// The directory (kept until dropped).
    pub dir: tempfile::TempDir,
}

impl Certs {
    /// Creates a CA, a server certificate for localhost/127.0.0.1 and one client certificate
    /// (subject CN=NAME) per name in `clients`, all in a fresh temporary directory.
    pub fn generate(clients: &[&str]) -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("sluice-certs-")
            .tempdir()
            .unwrap();
        let out = dir.path().to_str().unwrap().to_string();
        let mut args = vec![
            "certs",
            "--server-names",
            "localhost,127.0.0.1",
            "--out",
            out.as_str(),
        ];
        for c in clients {
            args.push("--client");
            args.push(c);
        }
        let (code, o, e) = run_sluice(&args);
        assert_eq!(
            code, 0,
            "sluice {args:?} failed:\nstdout:\n{o}\nstderr:\n{e}"
        );
        let certs = Certs { dir };
        for f in ["ca.pem", "server.pem", "server.key"] {
            assert!(
                certs.path(f).exists(),
                "sluice certs did not write {f}: {o}{e}"
            );
        }
        certs
    }

    /// `DIR/<file>` as a string.
    pub fn file(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_string()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// CA certificate (PEM).
    pub fn ca(&self) -> String {
        self.file("ca.pem")
    }

    /// The broker flags `--tls-cert server.pem --tls-key server.key`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.file("server.pem"),
            "--tls-key".into(),
            self.file("server.key"),
        ]
    }
}

/// Removes ANSI escape sequences (the log is colored), so fields read `term=1`.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (0x40..=0x7e)
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `field=` in a log line (`term=1` → "1").
pub fn log_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let key = format!(" {field}=");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

/// A `sluice` process started with any arguments (e.g. a subcommand), stderr logged to a file
/// in `log_dir`. Killed (SIGKILL) when dropped; its logs are printed if the test panics.
pub struct Process {
    child: Option<Child>,
    /// Name used for its log files.
    pub name: String,
    args: Vec<String>,
    log_dir: PathBuf,
    log_path: PathBuf,
    starts: u32,
    /// When the current process was spawned.
    pub started: Instant,
}

impl Process {
    /// Spawns `sluice ARGS` at once (does not wait for anything).
    pub fn start(name: &str, args: &[String], log_dir: &Path) -> Process {
        let mut p = Process {
            child: None,
            name: name.to_string(),
            args: args.to_vec(),
            log_dir: log_dir.to_path_buf(),
            log_path: PathBuf::new(),
            starts: 0,
            started: Instant::now(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.log_path = self
            .log_dir
            .join(format!("{}-{}.log", self.name, self.starts));
        let log = std::fs::File::create(&self.log_path).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("SLUICE_") && k != "SLUICE_BIN" && k != "SLUICE_TEST_LOG" {
                cmd.env_remove(k);
            }
        }
        self.started = Instant::now();
        self.child = Some(cmd.spawn().expect("spawn sluice"));
    }

    /// The current process's log, without colors.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// Every process's log, without colors.
    pub fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                let p = self.log_dir.join(format!("{}-{i}.log", self.name));
                strip_ansi(&std::fs::read_to_string(p).unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first line of the current log containing `needle`, waiting up to `timeout`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(l.to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGTERM, then waits up to `timeout` for the exit status (None if still running).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let c = self.child.as_mut().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again (after [`Process::kill9`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the process first");
        self.spawn();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.all_logs());
        }
    }
}
