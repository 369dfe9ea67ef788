//! Cluster mode (`sluice raft-cluster`): command line ([`cli`]), durable Raft state (the
//! node's write-ahead log, [`raft_wal`]; [`raft_store`] reads the older layout to migrate it), the node that runs `__meta` and the partition groups over the QUIC
//! transport ([`node`]), and snapshot installs that copy records from another replica
//! ([`catchup`]).

pub mod catchup;
pub mod cli;
pub mod join;
pub mod node;
pub mod peer_requests;
pub mod raft_store;
pub mod raft_wal;
pub mod wal_writer;

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
