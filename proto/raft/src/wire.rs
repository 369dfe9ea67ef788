//! Wire form of the traffic between two nodes: one [`PeerBatch`] per peer per flush, carrying
//! group-tagged raft-rs messages.
//!
//! It is a small prost message (raft-rs's messages are prost 0.11 structs with the
//! `prost-codec` feature), so a transport ships `encode()`'d bytes in one frame/stream write and
//! the receiver calls [`PeerBatch::decode_from`]. Framing (length prefix, QUIC stream) belongs
//! to the transport.

use prost::Message as _;
use raft::eraftpb::Message;

use crate::GroupId;
use crate::error::Result;

/// One raft-rs message and the group it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupMessage {
    /// Raft group id (0 = `__meta`, others = partitions; see docs/raft.md).
    #[prost(uint64, tag = "1")]
    pub group: GroupId,
    /// The raft-rs message (its `to` is the receiving node).
    #[prost(message, optional, tag = "2")]
    pub message: Option<Message>,
}

/// All messages from one node to one peer gathered during one flush.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerBatch {
    /// Sending node.
    #[prost(uint64, tag = "1")]
    pub from: u64,
    /// Receiving node.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// Messages in the order raft-rs produced them (per group order matters; across groups not).
    #[prost(message, repeated, tag = "3")]
    pub messages: Vec<GroupMessage>,
    /// The sender's `__meta` has taken part in a term (its term is above 0): the cluster
    /// exists. A node that starts with an empty data dir learns from this that it lost its
    /// state rather than being part of a new cluster (see `sluice-replica`'s `recovery`).
    #[prost(bool, tag = "4")]
    pub formed: bool,
    /// Groups of which the sender lost its log (a wiped data dir) while the receiver, their
    /// leader, may still believe it holds more: see [`LostLog`].
    #[prost(message, repeated, tag = "5")]
    pub lost: Vec<LostLog>,
    /// Groups the sender leads that went quiet: the receiver, a follower, stops ticking them
    /// (see `driver/quiesce.rs`). Sent after the group's last heartbeat.
    #[prost(message, repeated, tag = "6")]
    pub quiesced: Vec<Quiesced>,
    /// Differs after each start of the sender: a receiver seeing it change knows the sender
    /// restarted, so it lost every quiesced group's state and must be heard again.
    #[prost(uint64, tag = "7")]
    pub incarnation: u64,
}

/// "Group `group` is quiesced at `term` with everything up to `commit` committed."
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quiesced {
    /// Raft group.
    #[prost(uint64, tag = "1")]
    pub group: GroupId,
    /// The leader's term.
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// The leader's commit index (also its last index).
    #[prost(uint64, tag = "3")]
    pub commit: u64,
}

/// "My log of `group` ends at `last_index`": sent by a replica rebuilt from an empty data dir
/// whose leader says more is committed than it holds. The leader remembers how far the replica
/// reached before, and with nothing new to append it would only ever send it heartbeats.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LostLog {
    /// Raft group.
    #[prost(uint64, tag = "1")]
    pub group: GroupId,
    /// The sender's last log index in it.
    #[prost(uint64, tag = "2")]
    pub last_index: u64,
}

impl PeerBatch {
    /// Serializes the batch (protobuf, no outer length prefix).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Parses a batch produced by [`PeerBatch::encode`].
    pub fn decode_from(bytes: &[u8]) -> Result<Self> {
        Ok(<PeerBatch as prost::Message>::decode(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    #[test]
    fn batch_roundtrip() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        m.entries = vec![Entry {
            index: 5,
            term: 7,
            data: b"record batch".to_vec(),
            ..Default::default()
        }];
        let batch = PeerBatch {
            formed: false,
            lost: Vec::new(),
            quiesced: vec![Quiesced {
                group: 42,
                term: 7,
                commit: 5,
            }],
            incarnation: 3,
            from: 1,
            to: 2,
            messages: vec![GroupMessage {
                group: 42,
                message: Some(m),
            }],
        };
        let bytes = batch.encode();
        assert_eq!(PeerBatch::decode_from(&bytes).unwrap(), batch);
        assert!(PeerBatch::decode_from(&[0xff, 0xff]).is_err());
    }
}
