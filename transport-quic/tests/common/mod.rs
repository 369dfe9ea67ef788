//! Helpers shared by the integration tests: temporary certificate directories, free ports,
//! node start-up with short test timings, waiting for conditions.

#![allow(dead_code, unused_imports)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_transport_quic::{Inbox, Limits, StartError, Transport, TransportConfig, certs};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-transport-quic-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate directory for `nodes`.
pub fn cluster_certs(tag: &str, nodes: &[u64]) -> TempDir {
    let dir = TempDir::new(tag);
    certs::generate(nodes, dir.path()).expect("generate certificates");
    dir
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind port 0");
    socket.local_addr().unwrap()
}

/// Timings that keep tests short.
pub fn test_limits() -> Limits {
    Limits {
        backoff_ms_min: 20,
        backoff_ms_max: 300,
        handshake_timeout_ms: 1500,
        idle_timeout_ms: 3000,
        keep_alive_ms: 500,
        ..Limits::default()
    }
}

pub fn config(
    dir: &Path,
    node_id: u64,
    listen: SocketAddr,
    peers: &[(u64, SocketAddr)],
) -> TransportConfig {
    TransportConfig {
        node_id,
        cluster_id: "test-cluster".into(),
        listen,
        peers: peers.to_vec(),
        initial_members: vec![1, 2, 3],
        tls: certs::load(dir, node_id).expect("load certificates"),
        limits: test_limits(),
    }
}

/// Starts a node on tokio, retrying while its address is still held by a node that just shut down.
#[cfg(feature = "runtime-tokio")]
pub fn start(config: TransportConfig) -> (Transport, Inbox) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match Transport::start_tokio(config.clone()) {
            Ok(started) => return started,
            Err(StartError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("start node {}: {e}", config.node_id),
        }
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Receives exactly `n` batches within `limit`.
pub async fn recv_n(inbox: &Inbox, n: usize, limit: Duration) -> Vec<(u64, Bytes)> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(batch)) => got.push(batch),
            Ok(None) => panic!("inbox closed after {} of {n} batches", got.len()),
            Err(_) => panic!("received only {} of {n} batches: {got:?}", got.len()),
        }
    }
    got
}

/// Asserts nothing arrives within `quiet`.
pub async fn assert_nothing_received(inbox: &Inbox, quiet: Duration) {
    if let Ok(Some(batch)) = tokio::time::timeout(quiet, inbox.recv()).await {
        panic!("unexpected batch delivered: {batch:?}");
    }
}

pub fn peer_status(t: &Transport, id: u64) -> sluice_transport_quic::PeerStatus {
    t.peer_states()
        .into_iter()
        .find(|p| p.id == id)
        .expect("configured peer")
}
