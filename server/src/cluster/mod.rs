//! Cluster mode (`sluice raft-cluster`): command line ([`cli`]), durable Raft state
//! ([`raft_store`]) and the node that runs the `__meta` group over the QUIC transport
//! ([`node`]). This slice bootstraps the cluster (certificates, transport, leader election);
//! no Kafka traffic is served yet.

pub mod cli;
pub mod node;
pub mod raft_store;

use std::sync::Arc;

/// quinn's runtime matching the server's (the QUIC endpoint's timers, sockets and tasks).
#[cfg(feature = "runtime-tokio")]
pub fn quic_runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(quinn::TokioRuntime)
}

/// quinn's runtime matching the server's (the QUIC endpoint's timers, sockets and tasks).
#[cfg(all(feature = "runtime-smol", not(feature = "runtime-tokio")))]
pub fn quic_runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(quinn::SmolRuntime)
}
