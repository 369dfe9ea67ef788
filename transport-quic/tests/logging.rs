//! Both sides of a refused connection log it naming both node ids (with the `node_id` field).
//! A separate test binary: it installs a global tracing subscriber that captures output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_node_refusal_is_logged_on_both_sides_with_both_ids() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let dir = cluster_certs("log", &[1, 2, 3]);
    let (a1, x) = (free_addr(), free_addr());
    let (t2, _i2) = start(config(dir.path(), 2, x, &[(1, a1)]));
    let (t1, _i1) = start(config(dir.path(), 1, a1, &[(3, x)]));
    t1.send(3, Bytes::from_static(b"x")).unwrap();
    wait_for("a refusal", Duration::from_secs(5), || {
        peer_status(&t1, 3).last_error.is_some()
    })
    .await;
    t1.shutdown().await;
    t2.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{log}"))
            .to_string()
    };
    let acceptor = line("refused a connection");
    assert!(acceptor.contains("node_id=2"), "{acceptor}");
    assert!(
        acceptor.contains("node 1 expected node 3") && acceptor.contains("this is node 2"),
        "{acceptor}"
    );
    let dialer = line("connecting to node 3 failed");
    assert!(dialer.contains("node_id=1"), "{dialer}");
    assert!(
        dialer.contains("expected node 3") && dialer.contains("this is node 2"),
        "{dialer}"
    );
}
