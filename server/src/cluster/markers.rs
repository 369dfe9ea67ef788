//! Transaction markers, the I/O half: the coordinators' WriteTxnMarkers requests
//! (`Broker::take_marker_requests`, handed over by `deliver`) go to each partition leader's
//! replica listener, and their answers (or why none came) back to the broker, which retries.
//! One task per destination node, so a node that is down delays only its own partitions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use sluice_proto::broker::{MarkerRequest, WRITE_TXN_MARKERS_VERSION};
use sluice_proto::runtime::Runtime;
use tracing::{Instrument, debug};

use crate::server::{Shared, deliver, now_ms};

/// A leader that does not answer within this is asked again (the broker backs off).
const MARKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes marker requests to one sender task per destination node.
pub async fn send_markers<R: Runtime>(
    rt: R,
    shared: Arc<Shared>,
    requests: async_channel::Receiver<MarkerRequest>,
) {
    let mut senders: HashMap<i32, async_channel::Sender<MarkerRequest>> = HashMap::new();
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
    requests: async_channel::Receiver<MarkerRequest>,
) {
    let node_id = shared.config.node_id;
    let mut conns = HashMap::new();
    let mut correlation = 0i32;
    while let Ok(m) = requests.recv().await {
        correlation = correlation.wrapping_add(1);
        let request = RequestKind::WriteTxnMarkers(m.request);
        let sent = future::or(
            super::catchup::node_request(
                &rt,
                &shared,
                &mut conns,
                (node, &m.host, m.port),
                correlation,
                ApiKey::WriteTxnMarkers,
                WRITE_TXN_MARKERS_VERSION,
                &request,
            ),
            async {
                rt.sleep(MARKER_TIMEOUT).await;
                Err(format!("no answer in {MARKER_TIMEOUT:?}"))
            },
        )
        .await;
        let result = sent.and_then(|r| match r {
            ResponseKind::WriteTxnMarkers(r) => Ok(r),
            _ => Err("not a WriteTxnMarkers response".to_string()),
        });
        if let Err(e) = &result {
            debug!(node_id, to = node, error = %e, "WriteTxnMarkers failed");
            conns.clear();
        }
        let mut broker = shared.broker.lock().unwrap();
        broker.marker_response(m.id, result, now_ms());
        deliver(&shared, &mut broker);
        drop(broker);
        // Proposals (the transaction's Complete record, or markers for this node) may be queued.
        shared.raft_wake.notify(1);
    }
}
