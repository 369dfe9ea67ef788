//! Errors returned by the driver and the multi-group node.

use crate::GroupId;

/// Everything that can go wrong when driving Raft groups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// raft-rs refused the operation (e.g. a proposal dropped because there is no leader).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The message or call names a group this node does not host.
    #[error("unknown raft group {0}")]
    UnknownGroup(GroupId),
    /// A group with this id is already hosted on this node.
    #[error("raft group {0} already exists")]
    GroupExists(GroupId),
    /// A peer batch could not be decoded from the wire.
    #[error("decode peer batch: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A peer batch decoded but does not hold together (coalesced columns of unequal length).
    #[error("malformed peer batch: {0}")]
    Wire(String),
    /// Compaction may only drop entries the state machine has already applied.
    #[error("cannot compact to {index}: only applied up to {applied}")]
    CompactBeyondApplied {
        /// Requested compaction index.
        index: u64,
        /// Highest applied index of the group.
        applied: u64,
    },
    /// The configuration is inconsistent.
    #[error("invalid raft config: {0}")]
    Config(&'static str),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
