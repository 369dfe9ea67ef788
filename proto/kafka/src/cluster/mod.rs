//! Cluster mode, sans-IO: the replicated metadata state machine (`__meta`) and the format of
//! the entries of partition Raft groups. The runtime moves entries between these and the Raft
//! driver; the [`crate::broker::Broker`] applies them.

pub mod entry;
pub mod image;
pub mod meta;

pub use entry::{
    CleanEntry, DeleteRecordsEntry, MarkerEntry, PartitionEntry, decode_compact_hint,
    encode_compact_hint,
};
pub use image::PartitionImage;
pub use meta::{MetaCommand, MetaEvent, MetaPartition, MetaState, MetaTopic, ProposalId};
