//! Operator tools on a running cluster: Raft message tracing switched on and off for one node
//! through its metrics endpoint, without a restart.

use std::time::Duration;

use sluice_tests::cluster::Cluster;

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
    let after_off = traced(1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        traced(1),
        after_off,
        "tracing went on after it was switched off"
    );
}
