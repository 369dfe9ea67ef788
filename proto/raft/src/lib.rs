//! Sans-IO Raft for Sluice's cluster mode, over tikv's raft-rs.
//!
//! Read it in the order a proposal meets it:
//!
//! - [`config`]: timing (ticks, heartbeat, randomized election timeout) shared by a node's groups.
//! - [`driver`]: one Raft group as a pure state machine. Inputs are method calls (`tick`, `step`,
//!   `propose`, `persisted`, `applied`, ...); outputs are [`Task`]s the runtime executes:
//!   persist, send, apply, read-ready, role-changed. It runs raft-rs's asynchronous ready flow so
//!   persisting, sending and applying overlap.
//! - [`storage`]: [`LogStore`], the in-memory Raft log raft-rs reads (and the simulator's disk).
//! - [`multi`]: [`Node`], many groups on one node (`__meta` plus one per partition) on one tick
//!   clock, with outgoing messages batched per peer.
//! - [`wire`]: [`PeerBatch`], the protobuf form of a batch for the transport.
//! - `sim` (tests, or feature `sim`): a deterministic cluster simulator with network, disk and
//!   clock faults, and checkers for Raft's safety properties.
//!
//! Nothing here opens a socket or a file, reads a clock, spawns a thread or needs an async
//! runtime; time arrives as `now_ms` arguments. docs/raft.md has the design and the numbers.

#![deny(missing_docs)]

pub mod config;
pub mod driver;
pub mod error;
mod logger;
pub mod multi;
pub mod rng;
pub mod storage;
pub mod wire;

#[cfg(any(test, feature = "sim"))]
pub mod sim;

/// Identifies a Raft group: [`multi::META_GROUP`] for `__meta`, other ids for partitions.
pub type GroupId = u64;

pub use config::Config;
pub use driver::{Apply, Driver, PeerProgress, Persist, RoleChange, Task};
pub use error::{Error, Result};
pub use multi::{META_GROUP, Node};
pub use raft::eraftpb;
pub use raft::{ProgressState, StateRole};
pub use storage::LogStore;
pub use wire::{GroupMessage, GroupTerm, LostLog, PeerBatch, Quiesced};
