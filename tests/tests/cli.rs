//! The command line: clear one-line errors for bad input, help, shutdown on SIGTERM.

use std::process::Command;

use sluice_tests::{Broker, bin};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_flags_fail_with_one_line() {
    for args in [
        &["--no-such-flag"][..],
        &["--kafka-addr", "not-an-address"],
        &["--num-partitions", "zero"],
        &["--durability", "sometimes"],
        &["--max-frame-bytes", "10"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("sluice: "), "{err}");
    }
}

#[test]
fn bad_config_file_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, "kafka_addr = \"127.0.0.1:1\"\nnot_a_setting = 3\n").unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not_a_setting"), "{err}");
    assert!(!data.exists(), "data dir created despite a bad config");
    let (code, _, err) = run(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.toml"));
}

#[test]
fn help_documents_every_option() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--kafka-addr",
        "--advertised-addr",
        "--data-dir",
        "--config",
        "--durability",
        "--max-frame-bytes",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn config_file_and_env_apply_with_flags_winning() {
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_tests::free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!("kafka_addr = \"127.0.0.1:{port}\"\nnum_partitions = 4\n"),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ])
        .env("SLUICE_NUM_PARTITIONS", "6")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "did not listen on the config file's port"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = sluice_tests::python(
        "admin.py",
        &[
            "--bootstrap",
            &format!("127.0.0.1:{port}"),
            "create",
            "envtopic",
            "1",
        ],
    );
    assert!(out.contains("ok"));
    let _ = child.kill();
    let _ = child.wait();
    // The env value (6) beat the file (4): check the auto-create default through a fresh start.
    let data = dir.path().join("d");
    let mut b = Command::new(bin())
        .args([
            "--kafka-addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--num-partitions",
            "2",
        ])
        .env("SLUICE_NUM_PARTITIONS", "6")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let md = sluice_tests::python(
        "metadata.py",
        &["--bootstrap", &format!("127.0.0.1:{port}"), "auto1"],
    );
    assert_eq!(md.trim(), "2", "flag must beat env");
    let _ = b.kill();
    let _ = b.wait();
}

#[test]
fn second_broker_on_the_same_data_dir_is_refused() {
    let b = Broker::start(&[]);
    let (code, _, err) = run(&[
        "--kafka-addr",
        &format!("127.0.0.1:{}", sluice_tests::free_port()),
        "--data-dir",
        b.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut b = Broker::start(&[]);
    let status = b.terminate();
    assert!(status.success(), "{status}");
    assert!(b.log().contains("shutdown complete"));
}

/// `cluster add-node` / `remove-node`: bad arguments are one line; a standalone broker refuses
/// membership changes with a reason (AddRaftVoter / RemoveRaftVoter answered, nothing changed).
#[test]
fn membership_tools_refuse_bad_input_and_a_standalone_broker() {
    let (code, _, err) = run(&[
        "cluster",
        "add-node",
        "four@127.0.0.1:1",
        "--bootstrap",
        "x:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("positive integer"), "{err}");
    let (code, _, err) = run(&["cluster", "add-node", "4@127.0.0.1", "--bootstrap", "x:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("port"), "{err}");
    let b = Broker::start(&[]);
    let (code, _, err) = run(&[
        "cluster",
        "add-node",
        "4@127.0.0.1:7004",
        "--bootstrap",
        &b.addr,
        "--no-wait",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standalone broker"), "{err}");
    let (code, _, err) = run(&["cluster", "remove-node", "1", "--bootstrap", &b.addr]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standalone broker"), "{err}");
}
