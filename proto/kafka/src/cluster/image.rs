//! The snapshot image of a partition group: not the records themselves (they can be gigabytes)
//! but where the log stood at a durable applied index. A replica that receives it fetches the
//! records it lacks from another replica, whose log is byte-identical up to there.

/// Version byte of the encoding (1: without the cleaner state).
const FORMAT: u8 = 2;
const BYTES: usize = 1 + 8 + 8 + 8;

/// Where a replica's partition log stood when its Raft log was compacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    /// Raft index whose effects the image includes (at or above the snapshot's own index:
    /// entries up to it are skipped when they arrive again).
    pub applied_index: u64,
    /// Log end offset after `applied_index`.
    pub end_offset: i64,
    /// Log start offset then (a replica holding less than this restarts its log there).
    pub start_offset: i64,
    /// The log cleaner's checkpoint then (compacted topics; empty otherwise), which the
    /// installing replica takes over so its later cleans match the others'.
    pub cleaner: Vec<u8>,
}

impl PartitionImage {
    /// Encodes the image as snapshot data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BYTES);
        out.push(FORMAT);
        out.extend_from_slice(&self.applied_index.to_be_bytes());
        out.extend_from_slice(&self.end_offset.to_be_bytes());
        out.extend_from_slice(&self.start_offset.to_be_bytes());
        out.extend_from_slice(&self.cleaner);
        out
    }

    /// Decodes snapshot data; `None` for anything else (e.g. the empty bootstrap snapshot).
    pub fn decode(data: &[u8]) -> Option<Self> {
        let known = (data.len() == BYTES && data.first() == Some(&1))
            || (data.len() >= BYTES && data.first() == Some(&FORMAT));
        if !known {
            return None;
        }
        let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let image = PartitionImage {
            applied_index: u(1),
            end_offset: u(9) as i64,
            start_offset: u(17) as i64,
            cleaner: data[BYTES..].to_vec(),
        };
        (image.start_offset >= 0 && image.start_offset <= image.end_offset).then_some(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let image = PartitionImage {
            applied_index: 1234,
            end_offset: 99_000,
            start_offset: 10,
            cleaner: b"2\n7\n".to_vec(),
        };
        assert_eq!(PartitionImage::decode(&image.encode()), Some(image.clone()));
        assert_eq!(PartitionImage::decode(&[]), None);
        let mut bad = image.encode();
        bad[0] = 9;
        assert_eq!(PartitionImage::decode(&bad), None);
        let inverted = PartitionImage {
            start_offset: 100_000,
            ..image.clone()
        };
        assert_eq!(PartitionImage::decode(&inverted.encode()), None);
    }
}
