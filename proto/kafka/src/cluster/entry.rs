//! Entries of a partition's Raft group: one entry is one produce (or coordinator) write.
//!
//! Offsets are not in the entry: every replica assigns them when it applies the entry, from
//! its own log end, in Raft order — so all replicas assign the same ones. The leader's clock
//! travels with the entry so replicas stamp the same append time and roll segments alike.

/// Version byte of the encoding.
const FORMAT: u8 = 1;
/// Marks a compaction hint entry (see [`encode_compact_hint`]).
const COMPACT_HINT: u8 = 2;
/// Marks a DeleteRecords entry (see [`DeleteRecordsEntry`]).
const DELETE_RECORDS: u8 = 3;
/// Marks an ordered clean (see [`CleanEntry`]).
const CLEAN: u8 = 4;
/// Marks a transaction marker (see [`MarkerEntry`]).
const MARKER: u8 = 5;

/// A transaction's commit or abort marker for one partition, written by the transaction
/// coordinator (WriteTxnMarkers): every replica appends the same control batch, stamped with
/// the leader's clock, when it applies the entry. A format of its own, so no client's record
/// batch can ever be taken for a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerEntry {
    /// Node that proposed it (answers the WriteTxnMarkers request when it applies).
    pub proposer: u64,
    /// Proposer-local sequence identifying the waiting request.
    pub seq: u64,
    /// The leader's wall clock when proposed (the marker's timestamp).
    pub now_ms: i64,
    /// Producer id of the transaction's batches.
    pub producer_id: i64,
    /// The epoch the marker carries.
    pub producer_epoch: i16,
    /// Commit (true) or abort.
    pub commit: bool,
    /// The coordinator's epoch (its `__transaction_state` partition's term): a marker from an
    /// older coordinator is refused once a newer one wrote for the producer.
    pub coordinator_epoch: i32,
}

impl MarkerEntry {
    const BYTES: usize = 1 + 8 + 8 + 8 + 8 + 2 + 1 + 4;

    /// Encodes the entry for `propose`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        out.push(MARKER);
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.now_ms.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.push(u8::from(self.commit));
        out.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        out
    }

    /// Decodes entry data; `None` for any other kind of entry.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != Self::BYTES || data[0] != MARKER {
            return None;
        }
        let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        Some(MarkerEntry {
            proposer: u(1),
            seq: u(9),
            now_ms: u(17) as i64,
            producer_id: u(25) as i64,
            producer_epoch: i16::from_be_bytes([data[33], data[34]]),
            commit: data[35] != 0,
            coordinator_epoch: i32::from_be_bytes(data[36..40].try_into().expect("4 bytes")),
        })
    }
}

/// DeleteRecords through the log: every replica moves its log start offset to `offset` when it
/// applies the entry, so all agree on what is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRecordsEntry {
    /// Node that proposed it (answers the client when it applies).
    pub proposer: u64,
    /// Proposer-local sequence identifying the waiting request.
    pub seq: u64,
    /// The new log start offset.
    pub offset: i64,
}

impl DeleteRecordsEntry {
    /// Encodes the entry for `propose`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![DELETE_RECORDS];
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Decodes entry data; `None` for any other kind of entry.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != 25 || data[0] != DELETE_RECORDS {
            return None;
        }
        let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        Some(DeleteRecordsEntry {
            proposer: u(1),
            seq: u(9),
            offset: u(17) as i64,
        })
    }
}

/// A clean of a compacted partition, ordered by its leader (see `log::ordered_clean`): every
/// replica cleans the records below `upto` with the leader's clock and retention when it
/// applies the entry, so all keep the same records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanEntry {
    /// Records below this offset are cleaned.
    pub upto: i64,
    /// The leader's clock.
    pub now_ms: i64,
    /// The topic's `delete.retention.ms` on the leader.
    pub delete_retention_ms: i64,
}

impl CleanEntry {
    /// Encodes the entry for `propose`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CLEAN];
        out.extend_from_slice(&self.upto.to_be_bytes());
        out.extend_from_slice(&self.now_ms.to_be_bytes());
        out.extend_from_slice(&self.delete_retention_ms.to_be_bytes());
        out
    }

    /// Decodes entry data; `None` for any other kind of entry.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != 25 || data[0] != CLEAN {
            return None;
        }
        let i = |at: usize| i64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        Some(CleanEntry {
            upto: i(1),
            now_ms: i(9),
            delete_retention_ms: i(17),
        })
    }
}

/// A leader's note that every replica holds the log up to `index`: no replica will ever need
/// entries at or below it again, so each may drop them once its own state machine has them
/// durably. Proposed through the log so every replica learns it in order.
pub fn encode_compact_hint(index: u64) -> Vec<u8> {
    let mut out = vec![COMPACT_HINT];
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// The index of a compaction hint entry.
pub fn decode_compact_hint(data: &[u8]) -> Option<u64> {
    match data {
        [COMPACT_HINT, rest @ ..] if rest.len() == 8 => {
            Some(u64::from_be_bytes(rest.try_into().expect("8 bytes")))
        }
        _ => None,
    }
}
const HEADER_BYTES: usize = 1 + 8 + 8 + 8;

/// A decoded partition entry borrowing the record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEntry<'a> {
    /// Node that proposed it (answers the client when it applies).
    pub proposer: u64,
    /// Proposer-local sequence identifying the waiting request.
    pub seq: u64,
    /// The leader's wall clock when proposed.
    pub now_ms: i64,
    /// Record batches (v2), offsets unassigned.
    pub records: &'a [u8],
}

impl<'a> PartitionEntry<'a> {
    /// Encodes the entry for `propose`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.records.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.now_ms.to_be_bytes());
        out.extend_from_slice(self.records);
        out
    }

    /// Decodes entry data; `None` for an empty entry (a new leader's no-op) or a foreign format.
    pub fn decode(data: &'a [u8]) -> Option<Self> {
        if data.len() < HEADER_BYTES || data[0] != FORMAT {
            return None;
        }
        let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        Some(PartitionEntry {
            proposer: u(1),
            seq: u(9),
            now_ms: u(17) as i64,
            records: &data[HEADER_BYTES..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let m = MarkerEntry {
            proposer: 2,
            seq: 9,
            now_ms: 1_700_000_000_000,
            producer_id: (3 << 48) | 17,
            producer_epoch: 4,
            commit: true,
            coordinator_epoch: 3,
        };
        assert_eq!(MarkerEntry::decode(&m.encode()), Some(m));
        let abort = MarkerEntry { commit: false, ..m };
        assert_eq!(MarkerEntry::decode(&abort.encode()), Some(abort));
        // Never taken for another kind of entry, nor another kind for it.
        assert!(PartitionEntry::decode(&m.encode()).is_none());
        assert!(DeleteRecordsEntry::decode(&m.encode()).is_none());
        assert!(MarkerEntry::decode(&encode_compact_hint(7)).is_none());
    }

    #[test]
    fn round_trip_and_noop() {
        let e = PartitionEntry {
            proposer: 3,
            seq: 77,
            now_ms: 1_700_000_000_000,
            records: b"abc",
        };
        let bytes = e.encode();
        assert_eq!(PartitionEntry::decode(&bytes), Some(e));
        assert_eq!(PartitionEntry::decode(&[]), None);
        assert_eq!(PartitionEntry::decode(&bytes[..10]), None);
        let hint = encode_compact_hint(77);
        assert_eq!(decode_compact_hint(&hint), Some(77));
        assert_eq!(PartitionEntry::decode(&hint), None);
        assert_eq!(decode_compact_hint(&bytes), None);
        let d = DeleteRecordsEntry {
            proposer: 2,
            seq: 5,
            offset: 1234,
        };
        assert_eq!(DeleteRecordsEntry::decode(&d.encode()), Some(d));
        assert_eq!(DeleteRecordsEntry::decode(&hint), None);
        assert_eq!(PartitionEntry::decode(&d.encode()), None);
        let c = CleanEntry {
            upto: 99,
            now_ms: 1_700_000_000_000,
            delete_retention_ms: 86_400_000,
        };
        assert_eq!(CleanEntry::decode(&c.encode()), Some(c));
        assert_eq!(CleanEntry::decode(&d.encode()), None);
        assert_eq!(DeleteRecordsEntry::decode(&c.encode()), None);
        assert_eq!(PartitionEntry::decode(&c.encode()), None);
    }
}
