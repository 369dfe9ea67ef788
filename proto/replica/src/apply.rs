//! Committed entries on their way into the broker. The replica schedules them (in order, per
//! group, a snapshot install holding back its group's later entries); the runtime runs them off
//! the Raft loop, so ticks and heartbeats never wait on log writes, and reports each group's
//! applied index back through [`crate::Replica::applied`].

use sluice_proto::broker::Broker;
use sluice_proto::cluster::PartitionImage;
use sluice_raft::META_GROUP;
use sluice_raft::eraftpb::{Entry, EntryType};

/// Work for the runtime's applier.
#[derive(Debug)]
pub enum ApplyJob {
    /// Committed entries of a group, in order: [`apply_entries`].
    Entries {
        /// Raft group.
        group: u64,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// A snapshot image to install (copy the records it names from another replica); `index`
    /// (its Raft index) is reported applied when done. Later jobs of the group wait for it.
    Install {
        /// Raft group.
        group: u64,
        /// The snapshot's Raft index.
        index: u64,
        /// Where the leader's partition log stood.
        image: PartitionImage,
    },
    /// A `__meta` snapshot to install ([`install_meta_image`]): the metadata at `index`.
    MetaImage {
        /// The snapshot's Raft index.
        index: u64,
        /// The image ([`sluice_proto::cluster::MetaState::encode_image`]).
        data: Vec<u8>,
    },
}

impl ApplyJob {
    /// The group the job belongs to.
    pub fn group(&self) -> u64 {
        match self {
            ApplyJob::Entries { group, .. } | ApplyJob::Install { group, .. } => *group,
            ApplyJob::MetaImage { .. } => META_GROUP,
        }
    }
}

/// Installs a `__meta` snapshot image in the broker; returns its index, to report applied. An
/// image that cannot be installed is fatal to the node: the entries after it would apply to
/// metadata that is not the cluster's.
pub fn install_meta_image(
    broker: &mut Broker,
    index: u64,
    data: &[u8],
    wall_ms: i64,
) -> Result<u64, String> {
    let installed = broker.install_meta_image(index, data, wall_ms);
    broker.finish_apply();
    installed
        .map(|()| index)
        .map_err(|e| format!("the __meta snapshot image at index {index} cannot be installed: {e}"))
}

/// Applies one group's committed entries to the broker (`__meta` to the cluster metadata, a
/// partition's to its log); returns the last index, to report applied.
pub fn apply_entries(
    broker: &mut Broker,
    group: u64,
    entries: Vec<Entry>,
    wall_ms: i64,
) -> Option<u64> {
    let last = entries.last().map(|e| e.index)?;
    if group == META_GROUP {
        let entries: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal)
            .map(|e| (e.index, e.data.to_vec()))
            .collect();
        broker.apply_meta(&entries, wall_ms);
        broker.meta_applied_to(last);
    } else {
        // Membership changes reach the broker as empty entries: they move the applied mark
        // (a snapshot for a replica being added must be taken at or after them).
        // The payloads are shared with the Raft log (`Bytes`), not copied.
        let entries: Vec<(u64, u64, bytes::Bytes)> = entries
            .into_iter()
            .map(|e| {
                let data = if e.get_entry_type() == EntryType::EntryNormal {
                    e.data
                } else {
                    bytes::Bytes::new()
                };
                (e.index, e.term, data)
            })
            .collect();
        broker.apply_partition(group, &entries, wall_ms);
    }
    broker.finish_apply();
    Some(last)
}
