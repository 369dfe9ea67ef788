//! Security in cluster mode, real processes and real clients:
//! - the first admin is added to node 1's data dir with `sluice users add` before the cluster
//!   exists, and is imported into `__meta`;
//! - a SCRAM user, a topic and an ACL created through node 1 are enforced by node 3;
//! - no Kafka client can fetch as a replica (only a node, on its certificate-authenticated
//!   replica listener), and Metadata answers with the addresses of the listener asked.

use std::io::Write;
use std::process::{Command, Stdio};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, MetadataRequest, RequestKind, ResponseKind,
};
use serde_json::Value;
use sluice_tests::cluster::Cluster;
use sluice_tests::kafka::Conn;
use sluice_tests::{bin, python};

const ADMIN_PASSWORD: &str = "admin-secret";

fn add_user(data_dir: &std::path::Path, name: &str, password: &str) {
    let mut child = Command::new(bin())
        .args([
            "users",
            "add",
            name,
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-stdin",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sluice users add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cluster_users_and_acls_made_through_one_node_are_enforced_by_another() {
    let mut c = Cluster::with_flags(
        ["127.0.0.1"; 3],
        &["--authorizer", "acl", "--super-users", "User:admin"],
    );
    c.sasl = true;
    add_user(&c.data_dir(0), "admin", ADMIN_PASSWORD);
    c.start_all();
    c.wait_for_meta_leader();
    c.wait_for_kafka();

    let out = python(
        "cluster_security.py",
        &[
            "--admin-bootstrap",
            &c.addrs[0].kafka,
            "--user-bootstrap",
            &c.addrs[2].kafka,
            "--admin-password",
            ADMIN_PASSWORD,
        ],
    );
    let line = out.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["orders"], "ok", "{v}");
    assert_eq!(v["other"], "TOPIC_AUTHORIZATION_FAILED", "{v}");
    assert_eq!(
        v["users_seen_on_other_node"],
        serde_json::json!(["admin", "alice"]),
        "{v}"
    );
    assert_eq!(v["acls_seen_on_other_node"], 1, "{v}");
    // The import ran once and the local file is gone (a later change is never undone): the
    // node removes it at its next cluster tick after it sees the import applied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.data_dir(0).join("meta/users.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "users.json still in node 1's data dir"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A client sending a replica id is refused, on any listener, whatever it claims.
    let mut conn = Conn::connect(&c.addrs[2].plain);
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(1))
        .with_max_wait_ms(0);
    match conn.call(ApiKey::Fetch, 12, RequestKind::Fetch(fetch)) {
        ResponseKind::Fetch(f) => assert_eq!(
            f.error_code,
            ResponseError::ClusterAuthorizationFailed.code(),
            "{f:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Metadata on the PLAINTEXT listener names every node's PLAINTEXT address.
    let md = match conn.call(
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![]))),
    ) {
        ResponseKind::Metadata(m) => m,
        other => panic!("{other:?}"),
    };
    let mut got: Vec<(i32, String)> = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    got.sort();
    let want: Vec<(i32, String)> = c
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as i32 + 1, a.plain.clone()))
        .collect();
    assert_eq!(got, want);
}
