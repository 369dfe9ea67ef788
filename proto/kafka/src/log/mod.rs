//! The partition log: segments of record batches, offsets, retention and recovery.
//!
//! Appends go to the active (last) segment. Bytes become visible to consumers only once they
//! are durable: the high watermark moves when the flusher reports a completed sync
//! ([`PartitionLog::mark_durable`]), or immediately when the broker runs without fsync.

mod cleaner;
mod ordered_clean;
mod rewrite;
mod segment;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use crate::batch::{self, BatchHeader};
pub use crate::compression::Compression;
use crate::storage::{Storage, StoreFile};
use segment::Segment;

/// Test batches of keyed records (other modules' tests build them too).
#[cfg(test)]
pub(crate) use cleaner::tests::keyed as keyed_test_batch;
pub use cleaner::{
    CleanPlan, CleanStats, Cleaned, CleanerLimits, CleanerState, PendingClean, Swapped,
};

/// Per-partition settings derived from the topic's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Roll to a new segment after this age.
    pub segment_ms: i64,
    /// Delete closed segments whose newest record is older than this (-1: never).
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the log is larger than this (-1: never).
    pub retention_bytes: i64,
    /// Distance between sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted (as sent, and as stored after a rewrite).
    pub max_message_bytes: usize,
    /// `compression.type`: the codec batches are stored in (`None`: as the producer sent them).
    pub compression: Option<Compression>,
    /// `compression.gzip.level` (-1: zlib's default).
    pub gzip_level: i32,
    /// `compression.lz4.level`.
    pub lz4_level: i32,
    /// `compression.zstd.level`.
    pub zstd_level: i32,
    /// `message.timestamp.type=LogAppendTime`: batches are stamped with the append time.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms` (CreateTime only).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms` (CreateTime only).
    pub timestamp_after_max_ms: i64,
    /// `flush.messages`: appended messages after which the partition is due a sync (only acted
    /// on without fsync-before-ack; see [`PartitionLog::flush_due`]).
    pub flush_messages: i64,
    /// `flush.ms`: age of the oldest unsynced append after which the partition is due a sync.
    pub flush_ms: i64,
    /// `cleanup.policy` holds `compact`: the cleaner keeps the latest record per key and
    /// records without a key are refused.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: retention by time and size applies.
    pub delete: bool,
    /// `delete.retention.ms`: how long a tombstone outlives the clean that first saw it.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding newer records are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: dirty share of the cleanable log that makes a clean worth it.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            compression: None,
            gzip_level: -1,
            lz4_level: 9,
            zstd_level: 3,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            compact: false,
            delete: true,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The disk refused a read or write.
    #[error("storage error in {dir}: {source}")]
    Io {
        /// Partition directory.
        dir: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Requested offset is outside `[log start, log end]`.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Requested.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Log end offset.
        end: i64,
    },
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge {
        /// Batch size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// A batch failed validation.
    #[error(transparent)]
    Batch(#[from] batch::BatchError),
    /// A record timestamp is outside the topic's bounds, or the producer claimed LogAppendTime
    /// (Kafka's INVALID_TIMESTAMP).
    #[error("{0}")]
    InvalidTimestamp(String),
    /// The records inside a batch do not decode (CORRUPT_MESSAGE).
    #[error("{0}")]
    Corrupt(String),
    /// The records are valid but cannot be taken (INVALID_RECORD).
    #[error("{0}")]
    InvalidRecord(String),
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The time the batches were stamped with (LogAppendTime), else -1.
    pub log_append_time: i64,
    /// Largest timestamp of the stored batches (as stored, so the append time with
    /// LogAppendTime).
    pub max_timestamp: i64,
}

/// Result of a read for Fetch.
#[derive(Debug, Default)]
pub struct Read {
    /// Whole batches, possibly starting before the requested offset (clients skip those).
    pub records: Bytes,
}

/// Files that need a sync before `end_offset` is durable.
#[derive(Debug)]
pub struct SyncWork {
    /// Files to fdatasync.
    pub files: Vec<Arc<dyn StoreFile>>,
    /// Log end offset the sync covers.
    pub end_offset: i64,
}

/// One partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    fs: Arc<dyn Storage>,
    dir: String,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    high_watermark: i64,
    /// Everything below is known synced to disk (without fsync-before-ack the high watermark
    /// runs ahead of it).
    synced_end: i64,
    /// Files written since the last sync was taken.
    unsynced: Vec<Arc<dyn StoreFile>>,
    /// Records appended since the last sync was taken (`flush.messages`).
    unsynced_records: i64,
    /// When the first of them was appended (`flush.ms`).
    unsynced_since_ms: Option<i64>,
    /// The cleaner's checkpoint (compacted topics).
    cleaner: CleanerState,
    /// First offset of a transaction not yet decided (or whose marker is not yet durable),
    /// kept by the broker from its producer state: the last stable offset is below it.
    first_unstable: Option<i64>,
}

fn io_err(dir: &str) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        dir: dir.to_string(),
        source,
    }
}

const LOG_START_FILE: &str = "log-start-offset";
/// Base offset, length and leader epoch: the header bytes the broker rewrites.
const PREFIX_BYTES: usize = 16;

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(
        fs: Arc<dyn Storage>,
        dir: String,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        Self::open_with(fs, dir, config, now_ms, true, true)
    }

    /// [`PartitionLog::open`] for a partition being created, leaving the directory sync to
    /// the caller: it creates many, then syncs them all, so the file system commits its
    /// journal once rather than once per partition.
    pub fn open_unsynced(
        fs: Arc<dyn Storage>,
        dir: String,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        Self::open_with(fs, dir, config, now_ms, true, false)
    }

    /// Opens the log of a broker that shut down cleanly: every segment was synced and indexed
    /// by [`PartitionLog::close`], so the last one's index is trusted and only the batches after
    /// its last entry are checked (CRC included), instead of every batch of the segment.
    /// Start-up time then does not grow with the data.
    pub fn open_after_clean_shutdown(
        fs: Arc<dyn Storage>,
        dir: String,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        Self::open_with(fs, dir, config, now_ms, false, true)
    }

    fn open_with(
        fs: Arc<dyn Storage>,
        dir: String,
        config: LogConfig,
        now_ms: i64,
        verify_tail: bool,
        sync_dir: bool,
    ) -> Result<Self, LogError> {
        fs.create_dir_all(&dir).map_err(io_err(&dir))?;
        cleaner::recover(&*fs, &dir).map_err(io_err(&dir))?;
        let cleaner = CleanerState::load(&*fs, &dir).map_err(io_err(&dir))?;
        let mut bases: Vec<i64> = fs
            .list_dir(&dir)
            .map_err(io_err(&dir))?
            .iter()
            .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        for base in bases {
            let interval = config.index_interval_bytes;
            let (seg, truncation) = if Some(base) != last {
                Segment::open(&*fs, &dir, base, false, interval, now_ms)
            } else if verify_tail {
                Segment::open(&*fs, &dir, base, true, interval, now_ms)
            } else {
                Segment::open_trusting_index(&*fs, &dir, base, interval, now_ms)
            }
            .map_err(io_err(&dir))?;
            if let Some(t) = truncation {
                warn!(
                    partition = %dir,
                    segment = base,
                    at_position = t.at_position,
                    dropped_bytes = t.dropped_bytes,
                    reason = %t.reason,
                    "truncated torn or corrupt log tail"
                );
            }
            segments.insert(base, seg);
        }
        let stored_start = fs
            .read_file(&format!("{dir}/{LOG_START_FILE}"))
            .map_err(io_err(&dir))?
            .and_then(|b| String::from_utf8(b).ok()?.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if segments.is_empty() {
            let seg = Segment::create(&*fs, &dir, stored_start, now_ms).map_err(io_err(&dir))?;
            if sync_dir {
                fs.sync_dir(&dir).map_err(io_err(&dir))?;
            }
            segments.insert(stored_start, seg);
        }
        let first_base = *segments.keys().next().unwrap();
        let mut log = PartitionLog {
            fs,
            dir,
            config,
            segments,
            log_start_offset: 0,
            high_watermark: 0,
            synced_end: 0,
            first_unstable: None,
            unsynced: Vec::new(),
            unsynced_records: 0,
            unsynced_since_ms: None,
            cleaner,
        };
        let end = log.log_end_offset();
        log.log_start_offset = stored_start.max(first_base).min(end);
        // Whatever survived recovery is on disk: it is all durable now.
        log.high_watermark = end;
        log.synced_end = end;
        Ok(log)
    }

    /// Directory of this log (relative to the data dir).
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// What read_committed consumers may read below: the high watermark, or the first offset
    /// of an undecided transaction if that is lower.
    pub fn last_stable_offset(&self) -> i64 {
        self.first_unstable.map_or(self.high_watermark, |o| {
            o.clamp(
                self.log_start_offset.min(self.high_watermark),
                self.high_watermark,
            )
        })
    }

    /// Sets the first offset of an undecided transaction (`None`: none), see
    /// [`PartitionLog::last_stable_offset`].
    pub fn set_first_unstable(&mut self, offset: Option<i64>) {
        self.first_unstable = offset;
    }

    /// Last durable offset + 1; consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Current settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings; they apply from the next append or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Validates and appends the batches in `records`, assigning offsets from the log end.
    ///
    /// On a write error the file is cut back to its previous length, so a failed append leaves
    /// no partial batch behind.
    pub fn append(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Appended, LogError> {
        let headers = self.check_size(records)?;
        // The topic's timestamp rules, compression.type and LogAppendTime.
        let rewritten = rewrite::prepare(records, &headers, &self.config, now_ms, true)?;
        let (records, headers) = match &rewritten {
            Some(r) => (&r[..], self.check_size(r)?),
            None => (records, headers),
        };
        self.maybe_roll(records.len() as u64, now_ms)?;
        let mut next = self.log_end_offset();
        let base_offset = next;
        let mut assigned = Vec::with_capacity(headers.len());
        let mut pos = 0usize;
        for h in &headers {
            let mut h2 = *h;
            h2.base_offset = next;
            h2.partition_leader_epoch = leader_epoch;
            assigned.push((pos, h2));
            next += h.last_offset_delta as i64 + 1;
            pos += h.total_bytes();
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        let at = seg.size;
        // Each batch goes out as its rewritten 16-byte prefix plus the producer's bytes, so a
        // large produce is never copied in memory.
        let written = assigned.iter().try_for_each(|(p, h)| {
            let mut prefix = [0u8; PREFIX_BYTES];
            prefix.copy_from_slice(&records[*p..*p + PREFIX_BYTES]);
            batch::assign(&mut prefix, h.base_offset, leader_epoch);
            seg.file.write_at(&prefix, at + *p as u64)?;
            seg.file.write_at(
                &records[*p + PREFIX_BYTES..*p + h.total_bytes()],
                at + (*p + PREFIX_BYTES) as u64,
            )
        });
        if let Err(e) = written {
            let _ = seg.file.set_len(at);
            return Err(io_err(&self.dir)(e));
        }
        if seg.size == 0 {
            seg.created_ms = now_ms;
        }
        for (p, h) in &assigned {
            seg.note_batch(h, at + *p as u64, interval);
        }
        let file = seg.file.clone();
        self.note_unsynced(file, next - base_offset, now_ms);
        Ok(Appended {
            base_offset,
            last_offset: next - 1,
            log_append_time: if self.config.log_append_time {
                now_ms
            } else {
                -1
            },
            max_timestamp: headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1),
        })
    }

    /// Validates a produce payload and checks every batch against `max.message.bytes`, except
    /// transaction markers: only coordinators write those (clients' are refused earlier), and a
    /// refused marker would leave its transaction open in the partition for good.
    fn check_size(&self, records: &[u8]) -> Result<Vec<BatchHeader>, LogError> {
        let headers = batch::validate_all(records)?;
        for h in &headers {
            if !h.is_control() && h.total_bytes() > self.config.max_message_bytes {
                return Err(LogError::TooLarge {
                    size: h.total_bytes(),
                    limit: self.config.max_message_bytes,
                });
            }
        }
        Ok(headers)
    }

    /// The records without a key in a produce payload, as (batch index in the payload, record
    /// index in the batch): a compacted topic refuses them (KIP-467's per-record errors).
    pub fn keyless_records(&self, records: &[u8]) -> Result<Vec<(usize, i32)>, LogError> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        for (i, h) in batch::validate_all(records)?.iter().enumerate() {
            let bytes = &records[pos..pos + h.total_bytes()];
            pos += h.total_bytes();
            for r in cleaner::keyless_records(bytes, h, &self.config)? {
                out.push((i, r));
            }
        }
        Ok(out)
    }

    /// Everything [`PartitionLog::append`] would refuse `records` for at `now_ms`, without
    /// writing or recompressing (a cluster leader checks a produce before proposing it; the
    /// size after recompression is only known at apply).
    pub fn check(&self, records: &[u8], now_ms: i64) -> Result<Vec<BatchHeader>, LogError> {
        let headers = self.check_size(records)?;
        rewrite::prepare(records, &headers, &self.config, now_ms, false)?;
        Ok(headers)
    }

    fn note_unsynced(&mut self, file: Arc<dyn StoreFile>, records: i64, now_ms: i64) {
        if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            self.unsynced.push(file);
        }
        self.unsynced_records = self.unsynced_records.saturating_add(records);
        self.unsynced_since_ms.get_or_insert(now_ms);
    }

    /// Whether the topic's `flush.messages` / `flush.ms` call for a sync of this partition now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        !self.unsynced.is_empty()
            && (self.unsynced_records >= self.config.flush_messages
                || self
                    .flush_deadline()
                    .is_some_and(|deadline| now_ms >= deadline))
    }

    /// When `flush.ms` makes this partition due a sync (`None`: nothing unsynced, or no bound).
    pub fn flush_deadline(&self) -> Option<i64> {
        if self.config.flush_ms == i64::MAX || self.unsynced.is_empty() {
            return None;
        }
        Some(self.unsynced_since_ms?.saturating_add(self.config.flush_ms))
    }

    /// Appends batches copied from another replica's log, offsets and leader epochs as they
    /// are (a replica catching up after a snapshot). Batches below the log end are skipped;
    /// `end` bounds what is taken (the snapshot's log end). Returns the new log end.
    pub fn append_replicated(
        &mut self,
        records: &[u8],
        end: i64,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        let headers = batch::validate_all_stored(records)?;
        let mut pos = 0usize;
        for h in &headers {
            let bytes = &records[pos..pos + h.total_bytes()];
            pos += h.total_bytes();
            let next = h.base_offset + h.last_offset_delta as i64 + 1;
            let leo = self.log_end_offset();
            if next <= leo {
                continue;
            }
            if h.base_offset >= end {
                break;
            }
            // A gap before the batch is fine in a log that was ever compacted (the cleaner
            // removed records there); elsewhere it means the logs do not line up.
            let gap_ok = self.config.compact || self.cleaner != CleanerState::default();
            if h.base_offset < leo || (h.base_offset > leo && !gap_ok) || next > end {
                return Err(LogError::Batch(batch::BatchError::Invalid(
                    "replicated batch does not line up with the log end",
                )));
            }
            self.maybe_roll(bytes.len() as u64, now_ms)?;
            let interval = self.config.index_interval_bytes;
            let seg = self.active_mut();
            let at = seg.size;
            if let Err(e) = seg.file.write_at(bytes, at) {
                let _ = seg.file.set_len(at);
                return Err(io_err(&self.dir)(e));
            }
            if seg.size == 0 {
                seg.created_ms = now_ms;
            }
            seg.note_batch(h, at, interval);
            let file = seg.file.clone();
            self.note_unsynced(file, next - h.base_offset, now_ms);
        }
        Ok(self.log_end_offset())
    }

    /// Empties the log and restarts it at `offset` (a replica catching up from a log whose
    /// start moved past everything this one holds).
    pub fn reset_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let dir = self.dir.clone();
        self.fs
            .write_file_atomic(
                &format!("{dir}/{LOG_START_FILE}"),
                offset.to_string().as_bytes(),
            )
            .map_err(io_err(&dir))?;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for b in bases {
            self.delete_segment(b)?;
        }
        let seg = Segment::create(&*self.fs, &dir, offset, now_ms).map_err(io_err(&dir))?;
        self.fs.sync_dir(&dir).map_err(io_err(&dir))?;
        self.segments.insert(offset, seg);
        self.clear_unsynced();
        self.log_start_offset = offset;
        self.high_watermark = offset;
        self.synced_end = offset;
        info!(partition = %dir, offset, "log reset");
        Ok(())
    }

    /// Starts a new segment when the active one is full or old.
    fn maybe_roll(&mut self, incoming: u64, now_ms: i64) -> Result<(), LogError> {
        let cfg = &self.config;
        let active = self.active();
        let full = active.size > 0 && active.size + incoming > cfg.segment_bytes;
        let old = active.size > 0 && now_ms - active.created_ms >= cfg.segment_ms;
        if !(full || old) {
            return Ok(());
        }
        self.roll(now_ms)
    }

    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let base = self.active().next_offset;
        self.roll_at(base, now_ms)
    }

    /// Starts a new active segment at `base` (at or past the log end). An empty active segment
    /// is replaced rather than kept.
    pub(crate) fn roll_at(&mut self, base: i64, now_ms: i64) -> Result<(), LogError> {
        // The closed segment is synced now, so recovery only ever has to check the last one.
        let dir = self.dir.clone();
        let active = self.active();
        let (old_base, empty) = (active.base_offset, active.size == 0);
        if empty && old_base == base {
            return Ok(());
        }
        if !empty {
            active.file.sync_data().map_err(io_err(&dir))?;
            active.write_index(&*self.fs, &dir).map_err(io_err(&dir))?;
        }
        let seg = Segment::create(&*self.fs, &dir, base, now_ms).map_err(io_err(&dir))?;
        if empty {
            self.segments.remove(&old_base);
            let _ = self.fs.remove_file(&segment::index_path(&dir, old_base));
            self.fs
                .remove_file(&segment::log_path(&dir, old_base))
                .map_err(io_err(&dir))?;
            if self.segments.is_empty() {
                self.log_start_offset = self.log_start_offset.max(base);
            }
        }
        self.fs.sync_dir(&dir).map_err(io_err(&dir))?;
        self.segments.insert(base, seg);
        Ok(())
    }

    /// Whether appends since the last [`PartitionLog::take_sync_work`] await a sync.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Takes the files that need a sync for everything appended so far to be durable.
    pub fn take_sync_work(&mut self) -> Option<SyncWork> {
        if self.unsynced.is_empty() {
            return None;
        }
        self.unsynced_records = 0;
        self.unsynced_since_ms = None;
        Some(SyncWork {
            files: std::mem::take(&mut self.unsynced),
            end_offset: self.log_end_offset(),
        })
    }

    /// Everything below `end_offset` is durable: consumers may now read it.
    ///
    /// Clamped to the log end: a sync taken before a topic was deleted and re-created under the
    /// same name may report an end the new, shorter log never reached.
    pub fn mark_durable(&mut self, end_offset: i64) {
        let end_offset = end_offset.min(self.log_end_offset());
        if end_offset > self.high_watermark {
            self.high_watermark = end_offset;
        }
        debug_assert!(self.high_watermark <= self.log_end_offset());
    }

    /// A sync taken by [`PartitionLog::take_sync_work`] completed: everything below
    /// `end_offset` is on disk.
    pub fn mark_synced(&mut self, end_offset: i64) {
        self.synced_end = self.synced_end.max(end_offset.min(self.log_end_offset()));
    }

    /// Last offset known synced to disk + 1 (what a crash cannot take back).
    pub fn synced_end(&self) -> i64 {
        self.synced_end
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (the first batch may exceed it when
    /// `allow_oversize`, per KIP-74), never past the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        allow_oversize: bool,
    ) -> Result<Read, LogError> {
        self.read_below(offset, max_bytes, allow_oversize, i64::MAX)
    }

    /// [`PartitionLog::read`] that also stops at `limit` (a read_committed fetch stops at the
    /// last stable offset, which is always a batch boundary).
    pub fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        allow_oversize: bool,
        limit: i64,
    ) -> Result<Read, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        let limit = self.high_watermark.min(limit);
        if offset >= limit {
            return Ok(Read::default());
        }
        let mut out = BytesMut::new();
        let mut first = true;
        for seg in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            if seg.next_offset <= offset {
                continue;
            }
            let room = max_bytes.saturating_sub(out.len());
            if room == 0 && !first {
                break;
            }
            let stop =
                self.read_segment(seg, offset, limit, room, first && allow_oversize, &mut out)?;
            first = out.is_empty();
            if stop {
                break;
            }
        }
        Ok(Read {
            records: out.freeze(),
        })
    }

    /// Appends whole batches from one segment to `out`; returns true when reading should stop.
    fn read_segment(
        &self,
        seg: &Segment,
        offset: i64,
        limit: i64,
        room: usize,
        oversize_ok: bool,
        out: &mut BytesMut,
    ) -> Result<bool, LogError> {
        let mut pos = seg.position_for(offset);
        let dir = &self.dir;
        // Skip batches that end before `offset` (at most one index interval of them), reading
        // their headers a window at a time: one read, not one per batch.
        let window = self.config.index_interval_bytes as usize + batch::HEADER_BYTES;
        let mut headers = Vec::new();
        'skip: loop {
            if pos >= seg.size {
                return Ok(false);
            }
            let n = (window as u64).min(seg.size - pos) as usize;
            headers.resize(n.max(batch::HEADER_BYTES), 0);
            seg.file
                .read_exact_at(&mut headers, pos)
                .map_err(io_err(dir))?;
            let mut at = 0usize;
            while let Some(hb) = headers.get(at..at + batch::HEADER_BYTES) {
                let h = BatchHeader::parse(hb)?;
                if h.last_offset() >= offset {
                    pos += at as u64;
                    break 'skip;
                }
                at += h.total_bytes();
            }
            pos += at as u64;
        }
        let want = (room as u64).min(seg.size - pos) as usize;
        let want = want.max(batch::HEADER_BYTES.min((seg.size - pos) as usize));
        // Read straight into the response buffer, then cut it back to whole batches.
        let base = out.len();
        out.resize(base + want, 0);
        seg.file
            .read_exact_at(&mut out[base..], pos)
            .map_err(io_err(dir))?;
        let mut keep = 0usize;
        let mut stop = false;
        let mut oversized = None;
        for (at, h) in batch::headers(&out[base..]) {
            if h.base_offset >= limit {
                stop = true;
                break;
            }
            if at + h.total_bytes() > want {
                if at == 0 && oversize_ok {
                    oversized = Some(h.total_bytes());
                }
                stop = true;
                break;
            }
            keep = at + h.total_bytes();
        }
        if let Some(total) = oversized {
            // KIP-74: the first batch is returned whole even if it exceeds the limit.
            out.resize(base + total, 0);
            seg.file
                .read_exact_at(&mut out[base..], pos)
                .map_err(io_err(dir))?;
            keep = total;
        }
        if keep < want {
            stop = true;
        }
        out.truncate(base + keep);
        Ok(stop || seg.next_offset >= limit)
    }

    /// Calls `f` with the header of every stored batch that ends at or after `from_offset`, in
    /// offset order (one small read per batch: meant for startup scans such as rebuilding the
    /// idempotent-producer state, not for the request path).
    pub fn for_each_batch_header(
        &self,
        from_offset: i64,
        mut f: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        self.for_each_batch_with_markers(from_offset, |h, _| f(h))
    }

    /// [`PartitionLog::for_each_batch_header`] that also reads, for a transaction marker,
    /// what it says (commit or abort, and its coordinator epoch).
    pub fn for_each_batch_with_markers(
        &self,
        from_offset: i64,
        mut f: impl FnMut(&BatchHeader, Option<batch::EndTxnMarker>),
    ) -> Result<(), LogError> {
        for seg in self.segments.values() {
            if seg.next_offset <= from_offset {
                continue;
            }
            let mut pos = seg.position_for(from_offset.max(seg.base_offset));
            while pos + batch::HEADER_BYTES as u64 <= seg.size {
                let mut hb = [0u8; batch::HEADER_BYTES];
                seg.file
                    .read_exact_at(&mut hb, pos)
                    .map_err(io_err(&self.dir))?;
                let h = BatchHeader::parse(&hb)?;
                if h.last_offset() >= from_offset {
                    let marker = if h.is_control() {
                        let mut whole = vec![0u8; h.total_bytes()];
                        seg.file
                            .read_exact_at(&mut whole, pos)
                            .map_err(io_err(&self.dir))?;
                        batch::control_marker(&whole)
                    } else {
                        None
                    };
                    f(&h, marker);
                }
                pos += h.total_bytes() as u64;
            }
        }
        Ok(())
    }

    /// The first offset whose record timestamp is at or after `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if seg.max_timestamp < ts || seg.base_offset >= self.high_watermark {
                continue;
            }
            let mut pos = seg.position_for_timestamp(ts);
            while pos < seg.size {
                let mut hb = [0u8; batch::HEADER_BYTES];
                seg.file
                    .read_exact_at(&mut hb, pos)
                    .map_err(io_err(&self.dir))?;
                let h = BatchHeader::parse(&hb)?;
                if h.base_offset >= self.high_watermark {
                    break;
                }
                if h.max_timestamp >= ts && h.last_offset() >= self.log_start_offset {
                    if h.is_log_append_time() {
                        // Every record of the batch has its (max) timestamp.
                        return Ok(Some((
                            h.base_offset.max(self.log_start_offset),
                            h.max_timestamp,
                        )));
                    }
                    let mut full = vec![0u8; h.total_bytes()];
                    seg.file
                        .read_exact_at(&mut full, pos)
                        .map_err(io_err(&self.dir))?;
                    return Ok(
                        first_record_at_or_after(&full, ts, self.log_start_offset).or(Some((
                            h.base_offset.max(self.log_start_offset),
                            h.max_timestamp,
                        ))),
                    );
                }
                pos += h.total_bytes() as u64;
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let max = self
            .segments
            .values()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(-1);
        if max < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(max)
    }

    /// Applies retention by time and size and the log start offset; returns segments removed.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut removed = 0;
        let mut total = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let (&base, first) = self.segments.iter().next().unwrap();
            let next_base = first.next_offset;
            // An empty closed segment (everything in it was cleaned away) holds nothing to keep.
            let by_start = next_base <= self.log_start_offset || first.size == 0;
            let by_time = self.config.delete
                && self.config.retention_ms >= 0
                && first.max_timestamp >= 0
                && now_ms - first.max_timestamp > self.config.retention_ms;
            let by_size = self.config.delete
                && self.config.retention_bytes >= 0
                && total - first.size as i64 >= self.config.retention_bytes;
            // Never delete what consumers cannot see yet.
            if !(by_start || by_time || by_size) || next_base > self.high_watermark {
                break;
            }
            total -= first.size as i64;
            self.delete_segment(base)?;
            removed += 1;
            if next_base > self.log_start_offset {
                self.log_start_offset = next_base;
            }
        }
        if removed > 0 {
            info!(partition = %self.dir, removed, log_start_offset = self.log_start_offset, "retention deleted segments");
        }
        Ok(removed)
    }

    fn delete_segment(&mut self, base: i64) -> Result<(), LogError> {
        self.segments.remove(&base);
        let dir = self.dir.clone();
        let _ = self.fs.remove_file(&segment::index_path(&dir, base));
        self.fs
            .remove_file(&segment::log_path(&dir, base))
            .map_err(io_err(&dir))?;
        Ok(())
    }

    /// DeleteRecords: moves the log start offset forward (persisted) and drops whole segments.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        self.advance_start(offset, self.high_watermark)
    }

    /// DeleteRecords applied from the Raft log (cluster mode): the leader checked the offset
    /// against its high watermark; here everything before the entry is applied, maybe not yet
    /// synced, so the bound is the log end.
    pub fn delete_records_replicated(&mut self, offset: i64) -> Result<i64, LogError> {
        self.advance_start(offset, self.log_end_offset())
    }

    fn advance_start(&mut self, offset: i64, limit: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > limit {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: limit,
            });
        }
        if offset > self.log_start_offset {
            self.fs
                .write_file_atomic(
                    &format!("{}/{LOG_START_FILE}", self.dir),
                    offset.to_string().as_bytes(),
                )
                .map_err(io_err(&self.dir))?;
            self.log_start_offset = offset;
            // Segments wholly below the new start go at once.
            let saved = self.config.clone();
            self.config.retention_ms = -1;
            self.config.retention_bytes = -1;
            let r = self.apply_retention(i64::MAX);
            self.config = saved;
            r?;
        }
        Ok(self.log_start_offset)
    }

    /// Cuts the log back so `offset` is its end (cluster mode: entries past the last applied
    /// Raft index recorded durable are re-applied from the Raft log after a restart).
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let doomed: Vec<i64> = self
            .segments
            .range(offset..)
            .map(|(b, _)| *b)
            .filter(|b| *b > *self.segments.keys().next().expect("one segment"))
            .collect();
        for b in doomed {
            self.delete_segment(b)?;
        }
        let interval = self.config.index_interval_bytes;
        let (base, cut) = {
            let seg = self.active();
            let mut pos = seg.position_for(offset.max(seg.base_offset));
            let mut header = [0u8; batch::HEADER_BYTES];
            while pos < seg.size {
                seg.file
                    .read_exact_at(&mut header, pos)
                    .map_err(io_err(&dir))?;
                let h = batch::BatchHeader::parse(&header)?;
                if h.base_offset >= offset {
                    break;
                }
                pos += h.total_bytes() as u64;
            }
            (seg.base_offset, pos)
        };
        let _ = self.fs.remove_file(&segment::index_path(&dir, base));
        let file = self
            .fs
            .open(&segment::log_path(&dir, base), false)
            .map_err(io_err(&dir))?;
        file.set_len(cut).map_err(io_err(&dir))?;
        file.sync_data().map_err(io_err(&dir))?;
        let (seg, _) =
            Segment::open(&*self.fs, &dir, base, true, interval, now_ms).map_err(io_err(&dir))?;
        self.segments.insert(base, seg);
        self.clear_unsynced();
        let end = self.log_end_offset();
        self.high_watermark = self.high_watermark.min(end);
        self.synced_end = self.synced_end.min(end);
        self.log_start_offset = self.log_start_offset.min(end);
        info!(partition = %dir, end_offset = end, "log truncated");
        Ok(())
    }

    /// Syncs everything and writes the active segment's index (clean shutdown).
    pub fn close(&mut self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let active = self.active();
        active.file.sync_data().map_err(io_err(&dir))?;
        active.write_index(&*self.fs, &dir).map_err(io_err(&dir))?;
        self.clear_unsynced();
        self.high_watermark = self.log_end_offset();
        self.synced_end = self.log_end_offset();
        Ok(())
    }

    fn clear_unsynced(&mut self) {
        self.unsynced.clear();
        self.unsynced_records = 0;
        self.unsynced_since_ms = None;
    }
}

/// Decodes a batch to find the first record at or after `ts` (exact ListOffsets answers even for
/// compressed batches).
fn first_record_at_or_after(batch_bytes: &[u8], ts: i64, min_offset: i64) -> Option<(i64, i64)> {
    let mut b = Bytes::copy_from_slice(batch_bytes);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= ts && r.offset >= min_offset)
        .map(|r| (r.offset, r.timestamp))
}

#[cfg(test)]
mod rewrite_tests;
#[cfg(test)]
mod tests;
