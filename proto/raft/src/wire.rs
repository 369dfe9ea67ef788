//! Wire form of the traffic between two nodes: one [`PeerBatch`] per peer per flush, carrying
//! group-tagged raft-rs messages.
//!
//! It is a small prost message (raft-rs's messages are prost 0.11 structs with the
//! `prost-codec` feature), so a transport ships `encode()`'d bytes in one frame/stream write and
//! the receiver calls [`PeerBatch::decode_from`]. Framing (length prefix, QUIC stream) belongs
//! to the transport.
//!
//! Heartbeats and heartbeat responses are coalesced on the wire: a heartbeat that carries
//! nothing but its group, term and commit index (no ReadIndex context) travels as one column
//! entry of [`Beats`] instead of a whole message, and [`PeerBatch::decode_from`] expands it back
//! into the same raft-rs message, so nothing above the wire ever sees the difference. Only
//! messages the expansion reproduces exactly are coalesced.

use prost::Message as _;
use raft::eraftpb::{Message, MessageType};

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
    /// Coalesced `MsgHeartbeat`s (wire only: empty after [`PeerBatch::decode_from`]).
    #[prost(message, optional, tag = "8")]
    pub heartbeats: Option<Beats>,
    /// Coalesced `MsgHeartbeatResponse`s (wire only, as `heartbeats`).
    #[prost(message, optional, tag = "9")]
    pub heartbeat_responses: Option<Beats>,
    /// Every group the sender is installing a snapshot of (stored, its records still being
    /// copied): its acknowledgement of the snapshot told the leader it holds the log, but it
    /// does not hold the records yet. The leader counts it neither in sync nor caught up
    /// (see [`crate::PeerProgress::snapshotting`]) until a batch no longer lists the group.
    #[prost(uint64, repeated, tag = "10")]
    pub installing: Vec<u64>,
    /// Groups whose current term the sender asks for: a replica rebuilt from an empty data dir
    /// must not vote again in a term it may have voted in before (see `sluice-replica`'s
    /// `recovery`), and only its peers remember those terms.
    #[prost(uint64, repeated, tag = "11")]
    pub term_queries: Vec<u64>,
    /// Answers to `term_queries`: the sender's current term in each group it hosts.
    #[prost(message, repeated, tag = "12")]
    pub terms: Vec<GroupTerm>,
}

/// "My current term in `group` is `term`" (see [`PeerBatch::term_queries`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupTerm {
    /// Raft group.
    #[prost(uint64, tag = "1")]
    pub group: GroupId,
    /// The sender's term (durable: raft persists it before acting on it).
    #[prost(uint64, tag = "2")]
    pub term: u64,
}

/// Coalesced heartbeats (or responses) between two nodes: entry `i` of each column is one
/// message of group `groups[i]` with term `terms[i]` and commit index `commits[i]` (packed
/// varints: a few bytes per group instead of a message each).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Beats {
    /// Raft groups.
    #[prost(uint64, repeated, tag = "1")]
    pub groups: Vec<GroupId>,
    /// The sender's term in each group.
    #[prost(uint64, repeated, tag = "2")]
    pub terms: Vec<u64>,
    /// The message's commit index in each group.
    #[prost(uint64, repeated, tag = "3")]
    pub commits: Vec<u64>,
}

impl Beats {
    fn push(&mut self, group: GroupId, term: u64, commit: u64) {
        self.groups.push(group);
        self.terms.push(term);
        self.commits.push(commit);
    }
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

/// The message a coalesced heartbeat (or response) of `batch` expands to.
fn beat(batch_from: u64, batch_to: u64, kind: MessageType, term: u64, commit: u64) -> Message {
    let mut m = Message {
        from: batch_from,
        to: batch_to,
        term,
        commit,
        ..Default::default()
    };
    m.set_msg_type(kind);
    m
}

impl PeerBatch {
    /// Serializes the batch (protobuf, no outer length prefix), heartbeats coalesced.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = PeerBatch {
            from: self.from,
            to: self.to,
            messages: Vec::new(),
            formed: self.formed,
            lost: self.lost.clone(),
            quiesced: self.quiesced.clone(),
            incarnation: self.incarnation,
            heartbeats: None,
            heartbeat_responses: None,
            installing: self.installing.clone(),
            term_queries: self.term_queries.clone(),
            terms: self.terms.clone(),
        };
        let mut kept = Vec::new();
        for gm in &self.messages {
            let Some(m) = &gm.message else {
                kept.push(gm);
                continue;
            };
            let kind = m.get_msg_type();
            let column = match kind {
                MessageType::MsgHeartbeat => &mut head.heartbeats,
                MessageType::MsgHeartbeatResponse => &mut head.heartbeat_responses,
                _ => {
                    kept.push(gm);
                    continue;
                }
            };
            if *m == beat(self.from, self.to, kind, m.term, m.commit) {
                column
                    .get_or_insert_with(Beats::default)
                    .push(gm.group, m.term, m.commit);
            } else {
                kept.push(gm);
            }
        }
        let mut buf = head.encode_to_vec();
        // Repeated fields may follow in any order: the rest of the messages go after the head.
        for gm in kept {
            prost::encoding::message::encode(3, gm, &mut buf);
        }
        buf
    }

    /// Parses a batch produced by [`PeerBatch::encode`], coalesced heartbeats expanded back
    /// into messages (after the others: raft-rs tolerates any order).
    pub fn decode_from(bytes: impl prost::bytes::Buf) -> Result<Self> {
        let mut batch = <PeerBatch as prost::Message>::decode(bytes)?;
        let (from, to) = (batch.from, batch.to);
        for (kind, beats) in [
            (MessageType::MsgHeartbeat, batch.heartbeats.take()),
            (
                MessageType::MsgHeartbeatResponse,
                batch.heartbeat_responses.take(),
            ),
        ] {
            let Some(b) = beats else { continue };
            if b.terms.len() != b.groups.len() || b.commits.len() != b.groups.len() {
                return Err(crate::error::Error::Wire(format!(
                    "coalesced {kind:?}: {} groups, {} terms, {} commits",
                    b.groups.len(),
                    b.terms.len(),
                    b.commits.len()
                )));
            }
            for ((group, term), commit) in b.groups.into_iter().zip(b.terms).zip(b.commits) {
                batch.messages.push(GroupMessage {
                    group,
                    message: Some(beat(from, to, kind, term, commit)),
                });
            }
        }
        Ok(batch)
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
            data: b"record batch".to_vec().into(),
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
            heartbeats: None,
            heartbeat_responses: None,
            installing: vec![42, 7],
            term_queries: Vec::new(),
            terms: Vec::new(),
            from: 1,
            to: 2,
            messages: vec![GroupMessage {
                group: 42,
                message: Some(m),
            }],
        };
        let bytes = batch.encode();
        assert_eq!(PeerBatch::decode_from(&bytes[..]).unwrap(), batch);
        assert!(PeerBatch::decode_from(&[0xff, 0xff][..]).is_err());
    }

    fn heartbeat(kind: MessageType, group: u64, term: u64, commit: u64) -> GroupMessage {
        GroupMessage {
            group,
            message: Some(beat(1, 2, kind, term, commit)),
        }
    }

    #[test]
    fn heartbeats_are_coalesced_on_the_wire_and_come_back_as_the_same_messages() {
        let mut messages = Vec::new();
        for g in 0..1000u64 {
            messages.push(heartbeat(MessageType::MsgHeartbeat, g, 3 + g % 2, 10 * g));
            messages.push(heartbeat(MessageType::MsgHeartbeatResponse, g + 5000, 4, 0));
        }
        // A ReadIndex heartbeat carries a context: it travels whole.
        let mut read = heartbeat(MessageType::MsgHeartbeat, 7, 3, 70);
        read.message.as_mut().unwrap().context = b"read 1".to_vec();
        messages.push(read.clone());
        let batch = PeerBatch {
            from: 1,
            to: 2,
            messages: messages.clone(),
            ..Default::default()
        };
        let bytes = batch.encode();
        let whole = batch.encode_to_vec();
        assert!(
            bytes.len() * 2 < whole.len(),
            "coalesced {} bytes, whole {} bytes",
            bytes.len(),
            whole.len()
        );
        let back = PeerBatch::decode_from(&bytes[..]).unwrap();
        assert!(back.heartbeats.is_none() && back.heartbeat_responses.is_none());
        // The uncoalesced message first, then the heartbeats in order, then the responses:
        // every message back, in its group, unchanged.
        assert_eq!(back.messages[0], read);
        let sorted = |mut v: Vec<GroupMessage>| {
            v.sort_by_key(|gm| {
                let m = gm.message.as_ref().unwrap();
                (gm.group, m.msg_type, m.context.clone())
            });
            v
        };
        assert_eq!(sorted(back.messages), sorted(messages));
    }

    #[test]
    fn coalesced_columns_of_unequal_length_are_refused() {
        let batch = PeerBatch {
            from: 1,
            to: 2,
            heartbeats: Some(Beats {
                groups: vec![1, 2],
                terms: vec![1],
                commits: vec![1, 1],
            }),
            ..Default::default()
        };
        let err = PeerBatch::decode_from(&batch.encode_to_vec()[..]).unwrap_err();
        assert!(err.to_string().contains("2 groups, 1 terms"), "{err}");
    }
}
