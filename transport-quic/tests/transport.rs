//! End-to-end tests of the QUIC transport on loopback (tokio runtime). Every node is shut down
//! at the end of its test; each test takes well under 10 s.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use sluice_transport_quic::{Limits, PeerState, SendError, Transport};

const LIMIT: Duration = Duration::from_secs(5);

fn msg(from: u64, to: u64, seq: u32) -> Bytes {
    Bytes::from(format!("{from}->{to} #{seq}"))
}

/// Sends `count` numbered batches from every node to every other node and checks each node
/// receives them all, per sender in order.
async fn exchange(nodes: &[(u64, &Transport, &sluice_transport_quic::Inbox)], count: u32) {
    for &(from, t, _) in nodes {
        for &(to, _, _) in nodes {
            if from != to {
                for seq in 0..count {
                    t.send(to, msg(from, to, seq)).unwrap();
                }
            }
        }
    }
    for &(to, _, inbox) in nodes {
        let expected = (nodes.len() - 1) * count as usize;
        let got = recv_n(inbox, expected, LIMIT).await;
        for &(from, _, _) in nodes {
            if from == to {
                continue;
            }
            let from_peer: Vec<Bytes> = got
                .iter()
                .filter(|(f, _)| *f == from)
                .map(|(_, b)| b.clone())
                .collect();
            let want: Vec<Bytes> = (0..count).map(|seq| msg(from, to, seq)).collect();
            assert_eq!(from_peer, want, "node {to} from node {from}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_in_all_directions() {
    let dir = cluster_certs("three", &[1, 2, 3]);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let peers = |me: usize| -> Vec<(u64, std::net::SocketAddr)> {
        (0..3)
            .filter(|&i| i != me)
            .map(|i| (i as u64 + 1, addrs[i]))
            .collect()
    };
    let (t1, i1) = start(config(dir.path(), 1, addrs[0], &peers(0)));
    let (t2, i2) = start(config(dir.path(), 2, addrs[1], &peers(1)));
    let (t3, i3) = start(config(dir.path(), 3, addrs[2], &peers(2)));
    assert_eq!(t2.local_addr(), addrs[1], "binds exactly the given address");

    // Sent before any connection exists: queued, then delivered.
    exchange(&[(1, &t1, &i1), (2, &t2, &i2), (3, &t3, &i3)], 200).await;

    for (t, me) in [(&t1, 1u64), (&t2, 2), (&t3, 3)] {
        for p in t.peer_states() {
            assert!(
                matches!(p.state, PeerState::Connected { .. }),
                "node {me} peer {}: {p:?}",
                p.id
            );
            assert_eq!(p.connections, 1, "one connection per peer: {p:?}");
            assert_eq!(p.dials, me < p.id);
            assert_eq!((p.sent_batches, p.received_batches), (200, 200), "{p:?}");
            assert_eq!(p.dropped_batches, 0);
        }
        assert!(t.recent_refusals().is_empty(), "{:?}", t.recent_refusals());
    }

    // The send API's refusals.
    assert_eq!(t1.send(9, Bytes::new()), Err(SendError::UnknownPeer(9)));
    let too_big = Bytes::from(vec![0u8; Limits::default().frame_bytes_max + 1]);
    assert!(matches!(
        t1.send(2, too_big),
        Err(SendError::TooLarge { .. })
    ));

    t1.shutdown().await;
    t2.shutdown().await;
    t3.shutdown().await;
    assert_eq!(i1.recv().await, None, "inbox closes on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_reconnects_and_traffic_resumes() {
    let dir = cluster_certs("restart", &[1, 2, 3]);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let peers = |me: usize| -> Vec<(u64, std::net::SocketAddr)> {
        (0..3)
            .filter(|&i| i != me)
            .map(|i| (i as u64 + 1, addrs[i]))
            .collect()
    };
    let (t1, i1) = start(config(dir.path(), 1, addrs[0], &peers(0)));
    let (t2, i2) = start(config(dir.path(), 2, addrs[1], &peers(1)));
    let (t3, i3) = start(config(dir.path(), 3, addrs[2], &peers(2)));
    exchange(&[(1, &t1, &i1), (2, &t2, &i2), (3, &t3, &i3)], 5).await;

    // Node 2 both dials (3) and is dialed (by 1).
    t2.shutdown().await;
    wait_for("nodes 1 and 3 to notice node 2 left", LIMIT, || {
        !matches!(peer_status(&t1, 2).state, PeerState::Connected { .. })
            && !matches!(peer_status(&t3, 2).state, PeerState::Connected { .. })
    })
    .await;
    let down = peer_status(&t1, 2);
    assert!(
        down.last_error.as_deref().unwrap_or("").contains("node 2"),
        "{down:?}"
    );

    let (t2, i2) = start(config(dir.path(), 2, addrs[1], &peers(1)));
    wait_for("node 2 reconnected to 1 and 3", LIMIT, || {
        peer_status(&t1, 2).connections == 2 && peer_status(&t3, 2).connections == 2
    })
    .await;
    exchange(&[(1, &t1, &i1), (2, &t2, &i2), (3, &t3, &i3)], 5).await;

    t1.shutdown().await;
    t2.shutdown().await;
    t3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_foreign_ca_is_refused() {
    let cluster = cluster_certs("cluster", &[1, 2]);
    let foreign = cluster_certs("foreign", &[1]);
    // An intruder that trusts both CAs (so only node 2's check of *its* certificate stops it).
    let both = TempDir::new("both");
    std::fs::create_dir_all(both.path()).unwrap();
    let ca_bundle = [
        std::fs::read_to_string(foreign.path().join("ca.pem")).unwrap(),
        std::fs::read_to_string(cluster.path().join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(both.path().join("ca.pem"), ca_bundle).unwrap();
    for f in ["node-1.pem", "node-1.key"] {
        std::fs::copy(foreign.path().join(f), both.path().join(f)).unwrap();
    }

    let (a1, a2) = (free_addr(), free_addr());
    let (t2, i2) = start(config(cluster.path(), 2, a2, &[(1, a1)]));
    // Intruder A: foreign certificate, trusts everything: refused by node 2's verifier.
    let (ta, _ia) = start(config(both.path(), 1, free_addr(), &[(2, a2)]));
    // Intruder B: foreign CA only: refuses node 2's certificate itself.
    let (tb, _ib) = start(config(foreign.path(), 1, free_addr(), &[(2, a2)]));
    for t in [&ta, &tb] {
        t.send(2, Bytes::from_static(b"let me in")).unwrap();
    }

    wait_for("both intruders to fail", LIMIT, || {
        peer_status(&ta, 2).last_error.is_some() && peer_status(&tb, 2).last_error.is_some()
    })
    .await;
    let a = peer_status(&ta, 2).last_error.unwrap();
    let b = peer_status(&tb, 2).last_error.unwrap();
    // A completes TLS 1.3 first, then node 2 rejects its certificate and aborts.
    assert!(
        a.contains("aborted by peer") && a.contains("invalid peer certificate: UnknownIssuer"),
        "intruder A: {a}"
    );
    // B rejects node 2's certificate itself.
    assert!(
        b.contains("dialing node 2") && b.contains("invalid peer certificate: UnknownIssuer"),
        "intruder B: {b}"
    );
    wait_for("node 2 to record refusals", LIMIT, || {
        t2.recent_refusals().len() >= 2
    })
    .await;
    for r in t2.recent_refusals() {
        assert!(r.reason.contains("TLS handshake"), "{r:?}");
        assert_eq!(r.claimed_id, None);
    }
    assert_nothing_received(&i2, Duration::from_millis(500)).await;
    let p1 = peer_status(&t2, 1);
    assert_eq!((p1.state, p1.connections), (PeerState::WaitingForPeer, 0));

    ta.shutdown().await;
    tb.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_2_at_the_address_of_node_3_is_refused_naming_both() {
    let dir = cluster_certs("wrong-id", &[1, 2, 3]);
    let (a1, x) = (free_addr(), free_addr());
    // Node 2 runs at the address node 1 believes is node 3's.
    let (t2, i2) = start(config(dir.path(), 2, x, &[(1, a1)]));
    let (t1, _i1) = start(config(dir.path(), 1, a1, &[(3, x)]));
    t1.send(3, Bytes::from_static(b"for node 3 only")).unwrap();

    wait_for("node 1 to be refused", LIMIT, || {
        peer_status(&t1, 3).last_error.is_some()
    })
    .await;
    let dialer_side = peer_status(&t1, 3).last_error.unwrap();
    assert!(
        dialer_side.contains("expected node 3") && dialer_side.contains("this is node 2"),
        "{dialer_side}"
    );
    let refusals = t2.recent_refusals();
    assert!(!refusals.is_empty());
    assert_eq!(refusals[0].claimed_id, Some(1));
    assert!(
        refusals[0].reason.contains("node 1 expected node 3")
            && refusals[0].reason.contains("this is node 2"),
        "{refusals:?}"
    );
    assert_nothing_received(&i2, Duration::from_millis(300)).await;
    assert_eq!(peer_status(&t1, 3).sent_batches, 0);

    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_node_with_the_same_id_is_refused() {
    let dir = cluster_certs("dup", &[2, 3]);
    let (a2, a2b, a3) = (free_addr(), free_addr(), free_addr());
    let (t3, i3) = start(config(dir.path(), 3, a3, &[(2, a2)]));
    let (t2, _i2) = start(config(dir.path(), 2, a2, &[(3, a3)]));
    t2.send(3, Bytes::from_static(b"first")).unwrap();
    assert_eq!(recv_n(&i3, 1, LIMIT).await[0].1, "first");

    // Same id, same certificate, another address.
    let (dup, _idup) = start(config(dir.path(), 2, a2b, &[(3, a3)]));
    dup.send(3, Bytes::from_static(b"impostor")).unwrap();
    wait_for("the second node 2 to be refused", LIMIT, || {
        peer_status(&dup, 3).last_error.is_some()
    })
    .await;
    let want =
        format!("node 2 is already connected from {a2}; refusing a second node 2 from {a2b}");
    let dialer_side = peer_status(&dup, 3).last_error.unwrap();
    assert!(dialer_side.contains(&want), "{dialer_side}");
    let refusals = t3.recent_refusals();
    assert!(
        refusals
            .iter()
            .any(|r| r.reason == want && r.claimed_id == Some(2)),
        "{refusals:?}"
    );

    // The first node 2 is undisturbed.
    t2.send(3, Bytes::from_static(b"still here")).unwrap();
    assert_eq!(recv_n(&i3, 1, LIMIT).await[0].1, "still here");
    assert_nothing_received(&i3, Duration::from_millis(300)).await;
    assert_eq!(peer_status(&t3, 2).connections, 1);

    dup.shutdown().await;
    t2.shutdown().await;
    t3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_at_its_configured_address_displaces_an_impostor_that_came_first() {
    let dir = cluster_certs("dup-first", &[2, 3]);
    let (a2, a2b, a3) = (free_addr(), free_addr(), free_addr());
    // Node 3 expects node 2 at a2; an impostor with node 2's certificate dials from a2b first.
    let (t3, i3) = start(config(dir.path(), 3, a3, &[(2, a2)]));
    let (dup, _idup) = start(config(dir.path(), 2, a2b, &[(3, a3)]));
    dup.send(3, Bytes::from_static(b"impostor")).unwrap();
    assert_eq!(recv_n(&i3, 1, LIMIT).await[0].1, "impostor");

    // The real node 2 starts: it takes the place, the impostor is closed and then refused.
    let (t2, _i2) = start(config(dir.path(), 2, a2, &[(3, a3)]));
    t2.send(3, Bytes::from_static(b"genuine")).unwrap();
    assert_eq!(recv_n(&i3, 1, LIMIT).await[0].1, "genuine");
    let want =
        format!("node 2 is already connected from {a2}; refusing a second node 2 from {a2b}");
    wait_for("the impostor to be refused", LIMIT, || {
        t3.recent_refusals()
            .iter()
            .any(|r| r.reason == want && r.claimed_id == Some(2))
    })
    .await;
    dup.send(3, Bytes::from_static(b"impostor again")).unwrap();
    t2.send(3, Bytes::from_static(b"still here")).unwrap();
    assert_eq!(recv_n(&i3, 1, LIMIT).await[0].1, "still here");
    assert_nothing_received(&i3, Duration::from_millis(300)).await;

    dup.shutdown().await;
    t2.shutdown().await;
    t3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_oldest_and_send_never_blocks() {
    let dir = cluster_certs("queue", &[1, 2]);
    let mut cfg = config(dir.path(), 1, free_addr(), &[(2, free_addr())]); // nobody at node 2
    cfg.limits.peer_queue_batches_max = 4;
    let (t1, _i1) = start(cfg);
    let started = std::time::Instant::now();
    for i in 0..10u8 {
        t1.send(2, Bytes::from(vec![i])).unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    let p = peer_status(&t1, 2);
    assert_eq!((p.queued_batches, p.dropped_batches), (4, 6), "{p:?}");
    t1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_connection_without_panicking() {
    let dir = cluster_certs("frame", &[1, 2]);
    let (a1, a2) = (free_addr(), free_addr());
    let mut small = config(dir.path(), 2, a2, &[(1, a1)]);
    small.limits.frame_bytes_max = 1024;
    let (t2, i2) = start(small);
    let (t1, _i1) = start(config(dir.path(), 1, a1, &[(2, a2)]));
    t1.send(2, Bytes::from(vec![7u8; 4096])).unwrap();
    wait_for("node 2 to close the connection", LIMIT, || {
        peer_status(&t1, 2)
            .last_error
            .is_some_and(|e| e.contains("exceeds the 1024-byte limit"))
    })
    .await;
    // The link recovers for batches within the limit.
    t1.send(2, Bytes::from_static(b"small")).unwrap();
    assert_eq!(recv_n(&i2, 1, LIMIT).await[0].1, "small");
    t1.shutdown().await;
    t2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_gets_the_roster_once_added_and_peers_come_and_go() {
    let dir = cluster_certs("join", &[1, 2, 4]);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let (t1, i1) = start(config(dir.path(), 1, addrs[0], &[(2, addrs[1])]));
    let (t2, i2) = start(config(dir.path(), 2, addrs[1], &[(1, addrs[0])]));
    let tls4 = sluice_transport_quic::certs::load(dir.path(), 4).unwrap();
    let ask = sluice_transport_quic::JoinConfig {
        node_id: 4,
        cluster_id: "",
        member: addrs[1],
        tls: &tls4,
    };
    let runtime: std::sync::Arc<dyn quinn::Runtime> = std::sync::Arc::new(quinn::TokioRuntime);

    // Not added yet: refused, with what to do.
    let refused = sluice_transport_quic::join(&ask, runtime.clone(), 3000)
        .await
        .unwrap_err();
    assert!(
        refused.contains("not a member") && refused.contains("add-node 4@"),
        "{refused}"
    );

    // Added on both members (as `__meta` does): the roster names every member.
    assert!(t1.add_peer(4, addrs[2], true));
    assert!(t2.add_peer(4, addrs[2], true));
    assert!(
        !t2.add_peer(4, addrs[2], true),
        "adding twice changes nothing"
    );
    let roster = sluice_transport_quic::join(&ask, runtime.clone(), 3000)
        .await
        .unwrap();
    assert_eq!(roster.cluster_id, "test-cluster");
    assert!(roster.fresh);
    assert_eq!(roster.initial, vec![1, 2, 3]);
    let mut peers = roster.peers.clone();
    peers.sort();
    assert_eq!(
        peers,
        vec![
            (1, addrs[0].to_string()),
            (2, addrs[1].to_string()),
            (4, addrs[2].to_string())
        ]
    );

    // The joiner starts with the roster's peers (itself left out); traffic flows all ways.
    let others: Vec<_> = peers
        .iter()
        .filter(|(id, _)| *id != 4)
        .map(|(id, a)| (*id, a.parse().unwrap()))
        .collect();
    let (t4, i4) = start(config(dir.path(), 4, addrs[2], &others));
    exchange(&[(1, &t1, &i1), (2, &t2, &i2), (4, &t4, &i4)], 5).await;

    // Removed: the connection closes, sends are refused, and it cannot connect again.
    assert!(t1.remove_peer(4));
    assert!(!t1.remove_peer(4));
    assert_eq!(t1.send(4, Bytes::new()), Err(SendError::UnknownPeer(4)));
    wait_for("node 4 to see node 1 go", LIMIT, || {
        !matches!(peer_status(&t4, 1).state, PeerState::Connected { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !matches!(peer_status(&t4, 1).state, PeerState::Connected { .. }),
        "a removed peer stays out"
    );
    assert!(t1.peer_ids() == vec![2]);

    t1.shutdown().await;
    t2.shutdown().await;
    t4.shutdown().await;
}
