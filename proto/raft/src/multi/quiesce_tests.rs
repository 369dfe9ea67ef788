//! Quiescence on three nodes with an instant network (see `driver/quiesce.rs`).

use super::tests::{round, round_with};
use super::*;

const GROUPS: u64 = 30;
const TICK: u64 = 50;

/// Three nodes hosting `__meta` and groups 1..=GROUPS, node 1 leading all of them.
fn led_by_node_1() -> Vec<Node> {
    let voters = [1, 2, 3];
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|&id| {
            let mut n = Node::new(Config::new(id)).unwrap();
            for g in 0..=GROUPS {
                n.add_group(g, LogStore::new(&voters), 0).unwrap();
            }
            n
        })
        .collect();
    for g in 0..=GROUPS {
        nodes[0].campaign(g).unwrap();
    }
    round(&mut nodes, 0);
    nodes
}

/// Runs a round every tick in `from..to` ms.
fn run(nodes: &mut [Node], from: u64, to: u64, down: &[u64]) {
    for now in (from..to).step_by(TICK as usize) {
        round_with(nodes, now, down);
    }
}

fn msgs_sent(nodes: &[Node]) -> u64 {
    nodes.iter().map(|n| n.sent().1).sum()
}

#[test]
fn idle_groups_quiesce_on_every_replica_and_send_nothing() {
    let mut nodes = led_by_node_1();
    run(&mut nodes, TICK, 1_000, &[]);
    for n in &nodes {
        assert_eq!(n.quiesced_groups(), GROUPS as usize, "node {}", n.id());
        assert!(
            !n.group(META_GROUP).unwrap().is_quiesced(),
            "__meta never quiesces"
        );
    }
    let before = msgs_sent(&nodes);
    run(&mut nodes, 1_000, 6_000, &[]);
    let sent = msgs_sent(&nodes) - before;
    // Only `__meta` heartbeats: 2 heartbeats and 2 responses every 150 ms, about 134 in 5 s.
    // Thirty ticking groups would send thirty times that.
    assert!(sent <= 150, "{sent} raft messages in 5 s of idleness");
    for n in &nodes {
        assert_eq!(n.quiesced_groups(), GROUPS as usize);
    }
}

#[test]
fn a_proposal_wakes_its_group_commits_everywhere_and_the_group_quiesces_again() {
    let mut nodes = led_by_node_1();
    run(&mut nodes, TICK, 1_000, &[]);
    let commit = nodes[0].group(5).unwrap().commit_index();
    nodes[0].propose(5, b"wake".to_vec()).unwrap();
    assert!(!nodes[0].group(5).unwrap().is_quiesced());
    round(&mut nodes, 1_000);
    for n in &nodes {
        let g = n.group(5).unwrap();
        assert_eq!(g.commit_index(), commit + 1, "node {}", n.id());
        assert!(
            !g.is_quiesced(),
            "the append woke node {}'s replica",
            n.id()
        );
    }
    assert_eq!(nodes[0].quiesced_groups(), GROUPS as usize - 1);
    run(&mut nodes, 1_000 + TICK, 2_000, &[]);
    for n in &nodes {
        assert_eq!(n.quiesced_groups(), GROUPS as usize, "node {}", n.id());
        assert_eq!(n.group(5).unwrap().commit_index(), commit + 1);
    }
}

#[test]
fn quiesced_groups_of_a_dead_leader_elect_within_the_election_timeout() {
    let mut nodes = led_by_node_1();
    run(&mut nodes, TICK, 1_000, &[]);
    assert_eq!(nodes[1].quiesced_groups(), GROUPS as usize);
    // Node 1 dies at 1 s: its followers were pinged or heartbeaten within the last 200 ms.
    let died = 1_000;
    let mut elected_by = None;
    for now in (died..died + 5_000).step_by(TICK as usize) {
        round_with(&mut nodes, now, &[1]);
        let all = (0..=GROUPS).all(|g| {
            nodes[1..].iter().any(|n| {
                let d = n.group(g).unwrap();
                d.role() == raft::StateRole::Leader && d.term() > 1
            })
        });
        if all {
            elected_by = Some(now);
            break;
        }
    }
    let at = elected_by.expect("every group elected a new leader");
    // A ticking follower elects within its election timeout (at most 2 s) of the leader's
    // last heartbeat; quiesced ones within that of the last ping (at most 200 ms before).
    assert!(
        at - died <= 2_000 + PING_MS,
        "elected {} ms after the leader died",
        at - died
    );
    // The survivors' groups are led and can quiesce again between the two of them.
    run(
        &mut nodes,
        elected_by.unwrap() + TICK,
        elected_by.unwrap() + 3_000,
        &[1],
    );
    for g in 1..=GROUPS {
        let led = nodes[1..]
            .iter()
            .filter(|n| n.group(g).unwrap().role() == raft::StateRole::Leader)
            .count();
        assert_eq!(led, 1, "group {g}");
    }
}

#[test]
fn with_quiescence_off_idle_groups_keep_ticking() {
    let mut nodes = super::tests::led_by_node_1(4, |id| Config {
        quiesce: false,
        ..Config::new(id)
    });
    run(&mut nodes, TICK, 2_000, &[]);
    assert!(nodes.iter().all(|n| n.quiesced_groups() == 0));
}
