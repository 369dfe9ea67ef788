//! Entries of a partition's Raft group: one entry is one produce (or coordinator) write.
//!
//! Offsets are not in the entry: every replica assigns them when it applies the entry, from
//! its own log end, in Raft order — so all replicas assign the same ones. The leader's clock
//! travels with the entry so replicas stamp the same append time and roll segments alike.

/// Version byte of the encoding.
const FORMAT: u8 = 1;
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
    }
}
