//! Requests between nodes for transactions, the I/O half: coordinators' WriteTxnMarkers to
//! partition leaders and leaders' AddPartitionsToTxn verifications to coordinators
//! (`Broker::take_peer_requests`, handed over by `deliver`) go to the node's replica listener,
//! and their answers (or why none came) back to the broker, which retries or refuses. One task
//! per destination node, so a node that is down delays only what goes to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use sluice_proto::broker::PeerRequest;
use sluice_proto::runtime::Runtime;
use tracing::{Instrument, debug};

use crate::server::{Shared, deliver, now_ms};

/// A node that does not answer within this is given up on for this request (the broker
/// retries markers with backoff; a produce waiting for verification hears a retriable error).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes requests to one sender task per destination node.
pub async fn send_peer_requests<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    requests: async_channel::Receiver<PeerRequest>,
) {
    let mut senders: HashMap<i32, async_channel::Sender<PeerRequest>> = HashMap::new();
    while let Ok(m) = requests.recv().await {
        let tx = senders.entry(m.node).or_insert_with(|| {
            let (tx, rx) = async_channel::unbounded();
            rt.spawn(
                node_sender(rt.clone(), shared.clone(), m.node, rx)
                    .instrument(tracing::Span::current()),
            );
            tx
        });
        let _ = tx.send(m).await;
    }
}

/// Sends the requests for `node` one at a time on a cached connection.
async fn node_sender<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    node: i32,
    requests: async_channel::Receiver<PeerRequest>,
) {
    let node_id = shared.config.node_id;
    let mut conns = HashMap::new();
    let mut correlation = 0i32;
    while let Ok(m) = requests.recv().await {
        // A request its sender gave up meanwhile (e.g. markers of a coordinator that lost its
        // partition) is not sent late.
        {
            let mut broker = shared.broker.lock().unwrap();
            if !broker.peer_request_wanted(m.id) {
                // Its bookkeeping goes too.
                broker.peer_response(m.id, Err("given up".into()), now_ms());
                continue;
            }
        }
        correlation = correlation.wrapping_add(1);
        let sent = future::or(
            super::catchup::node_request(
                &rt,
                &shared,
                &mut conns,
                (node, &m.host, m.port),
                correlation,
                m.api_key,
                m.version,
                &m.request,
            ),
            async {
                rt.sleep(REQUEST_TIMEOUT).await;
                Err(format!("no answer in {REQUEST_TIMEOUT:?}"))
            },
        )
        .await;
        if let Err(e) = &sent {
            debug!(node_id, to = node, api = ?m.api_key, error = %e, "request to a node failed");
            conns.clear();
        }
        let mut broker = shared.broker.lock().unwrap();
        broker.peer_response(m.id, sent, now_ms());
        deliver(&shared, &mut broker);
        drop(broker);
        // Proposals (a Complete record, a marker, a verified produce) may be queued.
        shared.raft_wake.notify(1);
    }
}
