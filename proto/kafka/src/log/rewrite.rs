//! What a topic's settings do to a batch before it is stored: timestamp bounds
//! (`message.timestamp.before.max.ms` / `after.max.ms`), `message.timestamp.type=LogAppendTime`
//! and `compression.type`.
//!
//! A rewritten batch keeps everything the producer chose — offset deltas, record timestamps,
//! producer id, epoch and base sequence — and changes only its codec (the records section is
//! decompressed and compressed again, byte for byte the same records) and, with LogAppendTime,
//! its timestamp-type bit and max timestamp. The result depends only on the batch, the settings
//! and `now_ms`: replicas applying the same entry with the same time write the same bytes.

use super::{LogConfig, LogError};
use crate::batch::{self, BatchHeader};
use crate::compression::{self, CodecError, Compression};

/// Most a batch may decompress to: 64 times `max.message.bytes`, between 16 MiB and 512 MiB.
pub(crate) fn decompressed_limit(cfg: &LogConfig) -> usize {
    cfg.max_message_bytes
        .saturating_mul(64)
        .clamp(16 << 20, 512 << 20)
}

fn codec_error(e: CodecError) -> LogError {
    match e {
        CodecError::Corrupt { .. } => LogError::Corrupt(e.to_string()),
        CodecError::TooLarge { .. } => LogError::InvalidRecord(e.to_string()),
    }
}

/// The broker-time window record timestamps must fall in, or `None` when unbounded.
fn window(cfg: &LogConfig, now_ms: i64) -> Option<(i64, i64)> {
    if cfg.log_append_time
        || (cfg.timestamp_before_max_ms == i64::MAX && cfg.timestamp_after_max_ms == i64::MAX)
    {
        return None;
    }
    Some((
        now_ms.saturating_sub(cfg.timestamp_before_max_ms),
        now_ms.saturating_add(cfg.timestamp_after_max_ms),
    ))
}

/// Kafka's message; the offset is the record's as the producer numbered it (the batch's base
/// offset, 0 from most producers, plus its delta).
fn out_of_range(ts: i64, offset: i64, (lo, hi): (i64, i64)) -> LogError {
    LogError::InvalidTimestamp(format!(
        "Timestamp {ts} of message with offset {offset} is out of range. The timestamp should be within [{lo}, {hi}]"
    ))
}

/// Checks every batch of a produce against the topic's timestamp rules and, when `rewrite`,
/// returns the payload rewritten as the settings require (`None`: store it as it is).
///
/// Timestamps are checked per record when the batch is uncompressed, when it is decompressed
/// anyway (recompression) or when `message.timestamp.before.max.ms` is set; otherwise (the
/// default: only the one-hour `after` bound) the header's max timestamp is checked, which spares
/// decompressing every compressed batch.
pub(crate) fn prepare(
    records: &[u8],
    headers: &[BatchHeader],
    cfg: &LogConfig,
    now_ms: i64,
    rewrite: bool,
) -> Result<Option<Vec<u8>>, LogError> {
    let window = window(cfg, now_ms);
    let mut out: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    for h in headers {
        let bytes = &records[pos..pos + h.total_bytes()];
        pos += h.total_bytes();
        let rewritten = one(bytes, h, cfg, now_ms, window, rewrite)?;
        match (rewritten, &mut out) {
            (Some(b), Some(o)) => o.extend_from_slice(&b),
            (Some(b), None) => {
                let mut o = Vec::with_capacity(records.len());
                o.extend_from_slice(&records[..pos - h.total_bytes()]);
                o.extend_from_slice(&b);
                out = Some(o);
            }
            (None, Some(o)) => o.extend_from_slice(bytes),
            (None, None) => {}
        }
    }
    Ok(out)
}

/// One batch: `Some` when it had to be rewritten.
fn one(
    bytes: &[u8],
    h: &BatchHeader,
    cfg: &LogConfig,
    now_ms: i64,
    window: Option<(i64, i64)>,
    rewrite: bool,
) -> Result<Option<Vec<u8>>, LogError> {
    if h.is_control() {
        return Ok(None);
    }
    if cfg.log_append_time && h.is_log_append_time() {
        return Err(LogError::InvalidTimestamp(
            "Invalid timestamp type in message: producer should not set timestamp type to LogAppendTime."
                .into(),
        ));
    }
    let codec = Compression::from_id(h.compression()).ok_or(LogError::Batch(
        batch::BatchError::Invalid("unknown compression codec"),
    ))?;
    let target = cfg.compression.filter(|t| *t != codec);
    let body = &bytes[batch::HEADER_BYTES..];
    let recompress = rewrite && target.is_some();
    let per_record = window.is_some()
        && (codec == Compression::None || recompress || cfg.timestamp_before_max_ms != i64::MAX);
    let plain = if recompress || (per_record && codec != Compression::None) {
        Some(compression::decompress(codec, body, decompressed_limit(cfg)).map_err(codec_error)?)
    } else {
        None
    };
    if per_record {
        let w = window.expect("per_record implies a window");
        let mut bad = None;
        batch::for_each_record(
            plain.as_deref().unwrap_or(body),
            h.records_count,
            h.base_timestamp,
            |delta, ts| {
                if ts != -1 && (ts < w.0 || ts > w.1) && bad.is_none() {
                    bad = Some((ts, delta));
                }
                Ok(())
            },
        )
        .map_err(LogError::Corrupt)?;
        if let Some((ts, delta)) = bad {
            return Err(out_of_range(ts, h.base_offset.wrapping_add(delta), w));
        }
    } else if let Some(w) = window
        && h.max_timestamp != -1
        && (h.max_timestamp > w.1 || h.base_timestamp < w.0)
    {
        let (ts, delta) = if h.max_timestamp > w.1 {
            (h.max_timestamp, i64::from(h.last_offset_delta))
        } else {
            (h.base_timestamp, 0)
        };
        return Err(out_of_range(ts, h.base_offset.wrapping_add(delta), w));
    }
    if !rewrite || (!recompress && !cfg.log_append_time) {
        return Ok(None);
    }
    let mut b = match (target, plain) {
        (Some(t), Some(plain)) => {
            let level = match t {
                Compression::Gzip => cfg.gzip_level,
                Compression::Lz4 => cfg.lz4_level,
                Compression::Zstd => cfg.zstd_level,
                _ => 0,
            };
            let z = compression::compress(t, &plain, level).map_err(codec_error)?;
            let mut b = Vec::with_capacity(batch::HEADER_BYTES + z.len());
            b.extend_from_slice(&bytes[..batch::HEADER_BYTES]);
            b.extend_from_slice(&z);
            let len = (b.len() - batch::LOG_OVERHEAD) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let attributes = (h.attributes & !0x7) | t as i16;
            b[batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2]
                .copy_from_slice(&attributes.to_be_bytes());
            b
        }
        _ => bytes.to_vec(),
    };
    if cfg.log_append_time {
        let at = batch::ATTRIBUTES_OFFSET;
        let attributes = i16::from_be_bytes([b[at], b[at + 1]]) | batch::LOG_APPEND_TIME;
        b[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
        let m = batch::MAX_TIMESTAMP_OFFSET;
        b[m..m + 8].copy_from_slice(&now_ms.to_be_bytes());
    }
    batch::reseal(&mut b);
    Ok(Some(b))
}
