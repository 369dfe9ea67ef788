//! Raft peer traffic between Sluice nodes over QUIC with mutual TLS.
//!
//! The Raft driver (`sluice-raft`, docs/raft.md) produces one encoded `PeerBatch` per peer per
//! flush; this crate carries those bytes, opaque, to the peer and hands them to its Raft layer.
//! Layers in the order a batch meets them:
//!
//! 1. [`certs`]: the cluster CA and one certificate per node; a node's id is the DNS name
//!    `node-<id>.sluice` in its certificate. `generate` writes a directory, `load` checks one.
//! 2. [`tls`]: rustls configs. Every connection is mutual TLS 1.3; both sides require the peer's
//!    certificate to chain to the cluster CA.
//! 3. [`handshake`]: right after TLS the dialer sends (cluster id, its id, the id it expects);
//!    the acceptor checks them against the certificate, its own id, and the connections it
//!    already has, then welcomes or refuses with a reason both sides log.
//! 4. [`frame`]: each batch is a length-prefixed frame (≤ 64 MiB by default) on one long-lived
//!    unidirectional stream per direction.
//! 5. [`Transport`]: the endpoint. Binds the Raft address, dials higher-id peers (redialing with
//!    capped, jittered exponential backoff), accepts lower-id ones, one connection per peer for
//!    all Raft groups; [`Transport::send`] only queues (bounded, oldest dropped), received
//!    batches come out of the [`Inbox`].
//!
//! Runtime: [`Transport::start`] takes any `Arc<dyn quinn::Runtime>`; features `runtime-tokio`
//! (default) and `runtime-smol` add [`Transport::start_tokio`] / [`Transport::start_smol`]. The
//! crate uses no runtime itself: timers and spawning go through quinn's `Runtime`, channels are
//! runtime-agnostic (`async-channel`, `event-listener`).
//!
//! Every log line is inside a span with `node_id`; peer-related ones add `peer_id`. See
//! docs/transport.md for the design, the refusals and what they mean, and bringing your own CA.

#![deny(missing_docs)]

pub mod certs;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod tls;
mod transport;

pub use certs::NodeIdentity;
pub use error::{CertError, PeerParseError, SendError, StartError};
pub use transport::{
    CLOSE_FRAME_TOO_LARGE, CLOSE_PROTOCOL, CLOSE_REFUSED, CLOSE_REPLACED, CLOSE_SHUTDOWN,
    CLOSE_WRONG_PEER, Inbox, JoinConfig, Limits, PeerState, PeerStatus, Refusal, Transport,
    TransportConfig, join, parse_peer,
};
