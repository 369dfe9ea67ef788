//! The transport on smol (`quinn::SmolRuntime`): two nodes exchange batches.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use sluice_transport_quic::Transport;

#[test]
fn two_nodes_exchange_on_smol() {
    smol::block_on(async {
        let dir = cluster_certs("smol", &[1, 2]);
        let (a1, a2) = (free_addr(), free_addr());
        let (t1, i1) = Transport::start_smol(config(dir.path(), 1, a1, &[(2, a2)])).unwrap();
        let (t2, i2) = Transport::start_smol(config(dir.path(), 2, a2, &[(1, a1)])).unwrap();
        t1.send(2, Bytes::from_static(b"1->2")).unwrap();
        t2.send(1, Bytes::from_static(b"2->1")).unwrap();
        let deadline = smol::Timer::after(Duration::from_secs(5));
        let both = async { (i2.recv().await, i1.recv().await) };
        let got = smol::future::or(async { Some(both.await) }, async {
            deadline.await;
            None
        })
        .await
        .expect("batches within 5 s");
        assert_eq!(got.0, Some((1, Bytes::from_static(b"1->2"))));
        assert_eq!(got.1, Some((2, Bytes::from_static(b"2->1"))));
        t1.shutdown().await;
        t2.shutdown().await;
    });
}
