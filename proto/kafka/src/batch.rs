//! Record batches (magic v2) as they travel: validated, and re-encoded only when a topic asks.
//!
//! By default the broker stores batches exactly as the producer sent them, compression included,
//! rewriting only the two header fields the CRC does not cover: the base offset and the partition
//! leader epoch. A topic with `compression.type` other than `producer` or with
//! `message.timestamp.type=LogAppendTime` has its batches rewritten before they are stored (see
//! `log::rewrite`), with the helpers here: [`reseal`] and [`for_each_record`].

use bytes::{Buf, BufMut};

/// Size of the fixed v2 batch header that precedes the records.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batch_length` field's payload starts (base offset + length).
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// Where the attributes (and the CRC-covered part of a batch) start.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Where the max timestamp sits in the header.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Attribute bit: the batch's records take its max timestamp, the broker's append time.
pub const LOG_APPEND_TIME: i16 = 0x08;

/// Why a batch was refused; maps onto Kafka's CORRUPT_MESSAGE / INVALID_RECORD.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header or than the announced length.
    #[error("record batch truncated: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the header says are needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// Only magic v2 batches are accepted.
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    Magic(i8),
    /// CRC-32C over attributes..end does not match.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A header field holds an impossible value.
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
}

/// The header fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// First offset in the batch.
    pub base_offset: i64,
    /// Bytes after the length field; the batch occupies `LOG_OVERHEAD + batch_length` bytes.
    pub batch_length: i32,
    /// Leader epoch (Raft term in cluster mode) at append time.
    pub partition_leader_epoch: i32,
    /// Batch attributes: compression, timestamp type, transactional, control.
    pub attributes: i16,
    /// `last offset - base offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the fixed header from the first [`HEADER_BYTES`] of `buf` (no CRC check).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                have: buf.len(),
            });
        }
        let mut b = &buf[..HEADER_BYTES];
        let base_offset = b.get_i64();
        let batch_length = b.get_i32();
        let partition_leader_epoch = b.get_i32();
        let magic = b.get_i8();
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        let _crc = b.get_u32();
        let header = BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch,
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            records_count: b.get_i32(),
        };
        if (batch_length as i64) < (HEADER_BYTES - LOG_OVERHEAD) as i64 {
            return Err(BatchError::Invalid("batch length shorter than its header"));
        }
        Ok(header)
    }

    /// Total bytes of the batch on the wire and on disk.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Last offset in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }

    /// Whether this is a transaction control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Whether the batch is stamped with the broker's append time (`LogAppendTime`).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME != 0
    }
}

/// Recomputes the CRC of the complete batch that is `buf`, after its covered bytes changed.
pub fn reseal(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A transaction marker (control batch) of `producer_id` at `epoch`: one control record whose
/// key says commit or abort and whose value carries the coordinator epoch that wrote it, as
/// Kafka's `EndTransactionMarker`. The epoch is kept so a restarted leader still refuses a
/// deposed coordinator's late markers.
pub fn control_batch(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    // Record: attributes, timestamp delta 0, offset delta 0, key (version 0, type), value
    // (version 0, coordinator epoch), no headers. Varints are zig-zag: 4 → 8, 6 → 12.
    let ce = coordinator_epoch.to_be_bytes();
    let mut record = vec![
        0u8,
        0,
        0,
        8,
        0,
        0,
        0,
        u8::from(commit),
        12,
        0,
        0,
        ce[0],
        ce[1],
        ce[2],
        ce[3],
        0,
    ];
    record.insert(0, (record.len() as u8) << 1);
    let mut b = Vec::with_capacity(HEADER_BYTES + record.len());
    b.put_i64(0);
    b.put_i32((HEADER_BYTES - LOG_OVERHEAD + record.len()) as i32);
    b.put_i32(0);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0x30); // transactional | control
    b.put_i32(0);
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(producer_id);
    b.put_i16(epoch);
    b.put_i32(-1);
    b.put_i32(1);
    b.extend_from_slice(&record);
    reseal(&mut b);
    b
}

/// Whether the control batch `buf` (whole, uncompressed) commits (`Some(true)`) or aborts;
/// `None` when it is not a transaction marker.
pub fn control_commits(buf: &[u8]) -> Option<bool> {
    control_marker(buf).map(|m| m.commit)
}

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Commit (true) or abort.
    pub commit: bool,
    /// The coordinator epoch that wrote it (-1 when its value carries none).
    pub coordinator_epoch: i32,
}

/// The marker in control batch `buf` (whole, uncompressed); `None` when it is not a
/// transaction marker.
pub fn control_marker(buf: &[u8]) -> Option<EndTxnMarker> {
    let h = BatchHeader::parse(buf).ok()?;
    if !h.is_control() || h.compression() != 0 {
        return None;
    }
    let body = buf.get(HEADER_BYTES..h.total_bytes())?;
    let mut pos = 0usize;
    varlong(body, &mut pos)?; // record length
    pos += 1; // attributes
    varlong(body, &mut pos)?; // timestamp delta
    varlong(body, &mut pos)?; // offset delta
    let key_len = usize::try_from(varlong(body, &mut pos)?).ok()?;
    let key = body.get(pos..pos.checked_add(key_len)?)?;
    let commit = match i16::from_be_bytes(key.get(2..4)?.try_into().ok()?) {
        0 => false,
        1 => true,
        _ => return None,
    };
    pos += key_len;
    // Value: version (2 bytes), coordinator epoch (4).
    let coordinator_epoch = usize::try_from(varlong(body, &mut pos)?)
        .ok()
        .filter(|len| *len >= 6)
        .and_then(|_| body.get(pos + 2..pos + 6))
        .map_or(-1, |e| i32::from_be_bytes(e.try_into().expect("4 bytes")));
    Some(EndTxnMarker {
        commit,
        coordinator_epoch,
    })
}

/// Reads a zig-zag varint (up to 64 bits) at `*pos`.
pub(crate) fn varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift.min(63);
        if b & 0x80 == 0 {
            return Some((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    None
}

/// Calls `f(offset_delta, timestamp)` for every record of an uncompressed records section (a
/// batch body, decompressed if it was compressed), checking the records fill it exactly and number
/// `count`. `base_timestamp` is the batch's.
pub fn for_each_record(
    body: &[u8],
    count: i32,
    base_timestamp: i64,
    mut f: impl FnMut(i64, i64) -> Result<(), String>,
) -> Result<(), String> {
    let mut pos = 0usize;
    let mut seen = 0i64;
    while pos < body.len() {
        let bad = || format!("record {seen} of the batch is malformed");
        let len = varlong(body, &mut pos).ok_or_else(bad)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(bad)?;
        let mut p = pos + 1; // attributes
        let ts_delta = varlong(&body[..end], &mut p).ok_or_else(bad)?;
        let offset_delta = varlong(&body[..end], &mut p).ok_or_else(bad)?;
        f(offset_delta, base_timestamp.wrapping_add(ts_delta))?;
        pos = end;
        seen += 1;
    }
    if seen != i64::from(count) {
        return Err(format!(
            "record batch holds {seen} records but its header declares {count}"
        ));
    }
    Ok(())
}

/// Validates one complete batch at the start of `buf` and returns its header.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(buf, false)
}

/// Validates one batch as a log may store it: besides what a producer may send, the empty
/// batch the cleaner keeps of an idempotent producer's last batch.
pub fn validate_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(buf, true)
}

fn validate_with(buf: &[u8], stored_empty_ok: bool) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            have: buf.len(),
        });
    }
    let stored = u32::from_be_bytes(buf[CRC_OFFSET..CRC_OFFSET + 4].try_into().unwrap());
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..total]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    if header.compression() > 4 {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    if header.last_offset_delta < 0 || header.records_count < 0 {
        return Err(BatchError::Invalid("negative record count"));
    }
    if header.records_count == 0 && !header.is_control() && !stored_empty_ok {
        return Err(BatchError::Invalid("empty record batch"));
    }
    if header.records_count as i64 > header.last_offset_delta as i64 + 1 {
        return Err(BatchError::Invalid("more records than offsets"));
    }
    debug_assert_eq!(buf[MAGIC_OFFSET], 2);
    Ok(header)
}

/// Validates every batch in a produce payload; the payload must hold whole batches only.
pub fn validate_all(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    validate_all_with(buf, validate)
}

/// [`validate_all`] for batches copied from another replica's log ([`validate_stored`]).
pub fn validate_all_stored(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    validate_all_with(buf, validate_stored)
}

fn validate_all_with(
    mut buf: &[u8],
    validate: fn(&[u8]) -> Result<BatchHeader, BatchError>,
) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Invalid("no record batch"));
    }
    let mut headers = Vec::with_capacity(1);
    while !buf.is_empty() {
        let h = validate(buf)?;
        buf = &buf[h.total_bytes()..];
        headers.push(h);
    }
    Ok(headers)
}

/// Rewrites the base offset and leader epoch of the batch at the start of `buf`.
///
/// Neither field is covered by the CRC, so the batch stays valid.
pub fn assign(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Walks batch headers in a buffer of whole-or-partial batches read from a log.
///
/// Yields `(position, header)` for every batch whose header is complete; the caller decides
/// what to do with a batch whose body extends past the buffer.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(buf.get(pos..)?).ok()?;
        let at = pos;
        pos += h.total_bytes();
        Some((at, h))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    #[test]
    fn a_marker_is_a_valid_control_batch_others_decode() {
        for commit in [true, false] {
            let b = control_batch(42, 3, commit, 7, 1_000);
            let h = validate(&b).unwrap();
            assert!(h.is_control());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (42, 3, 1)
            );
            assert_eq!(control_commits(&b), Some(commit));
            assert_eq!(
                control_marker(&b),
                Some(EndTxnMarker {
                    commit,
                    coordinator_epoch: 7
                })
            );
            // Kafka's own decoder reads it as one control record with the marker key.
            let mut buf = Bytes::from(b);
            let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).unwrap();
            let r = &sets[0].records[0];
            assert!(r.control && r.transactional);
            assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, u8::from(commit)][..]));
            assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 7][..]));
        }
        assert_eq!(control_commits(&batch(1, Compression::None, 0)), None);
    }

    /// Encodes `n` records into one batch with the given compression.
    pub(crate) fn batch(n: usize, compression: Compression, ts: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: ts + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn valid_batches_pass_in_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(10, c, 1000);
            let hs = validate_all(&b).unwrap();
            assert_eq!(hs.len(), 1, "{c:?}");
            assert_eq!(hs[0].records_count, 10);
            assert_eq!(hs[0].last_offset_delta, 9);
            assert_eq!(hs[0].max_timestamp, 1009);
        }
    }

    #[test]
    fn assigning_offsets_keeps_crc_valid() {
        let b = batch(3, Compression::None, 0);
        let mut m = BytesMut::from(&b[..]);
        assign(&mut m, 4242, 7);
        let h = validate(&m).unwrap();
        assert_eq!(h.base_offset, 4242);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 4244);
    }

    #[test]
    fn any_flipped_byte_after_the_crc_is_caught() {
        let b = batch(3, Compression::None, 0);
        for i in ATTRIBUTES_OFFSET..b.len() {
            let mut m = b.to_vec();
            m[i] ^= 0x40;
            assert!(validate_all(&m).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let b = batch(3, Compression::None, 0);
        for len in 0..b.len() {
            assert!(validate_all(&b[..len]).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let good = batch(5, Compression::Lz4, 0);
        for _ in 0..20_000 {
            let mut m = good.to_vec();
            let flips = rng.gen_range(1..8);
            for _ in 0..flips {
                let i = rng.gen_range(0..m.len());
                m[i] = rng.r#gen();
            }
            let cut = rng.gen_range(0..=m.len());
            let _ = validate_all(&m[..cut]);
            let junk: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.r#gen()).collect();
            let _ = validate_all(&junk);
            let _ = headers(&junk).count();
        }
    }
}
#[cfg(test)]
mod record_walk_tests {
    use super::tests::batch;
    use super::*;
    use kafka_protocol::records::Compression;

    #[test]
    fn walks_every_record_of_an_uncompressed_batch() {
        let b = batch(5, Compression::None, 1_000);
        let h = validate(&b).unwrap();
        let mut seen = Vec::new();
        for_each_record(
            &b[HEADER_BYTES..],
            h.records_count,
            h.base_timestamp,
            |d, ts| {
                seen.push((d, ts));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..5).map(|i| (i, 1_000 + i)).collect::<Vec<_>>());
        let e =
            for_each_record(&b[HEADER_BYTES..], 4, h.base_timestamp, |_, _| Ok(())).unwrap_err();
        assert!(
            e.contains("holds 5 records but its header declares 4"),
            "{e}"
        );
        assert!(for_each_record(&b[HEADER_BYTES..b.len() - 1], 5, 0, |_, _| Ok(())).is_err());
    }
}
