//! Log compaction (`cleanup.policy=compact`): in the cleaned part of the log only the latest
//! record per key survives, at its original offset.
//!
//! A clean runs in three steps so the broker lock is held only for the short ones:
//! 1. [`PartitionLog::plan_clean`] (under the lock) decides whether the log is worth cleaning
//!    and snapshots the closed segments it will rewrite: from the log start to the end of the
//!    dirty section (the closed segments past the cleaner checkpoint, up to the first one holding
//!    records newer than `min.compaction.lag.ms`). The active segment is never cleaned.
//! 2. [`CleanPlan::copy`] (no lock: closed segments are immutable) builds the key → latest offset
//!    map over the dirty section, then rewrites the planned segments into `<base>-<end>.cleaned`
//!    files (consecutive segments share one while its cleaned bytes plus the next segment's size
//!    fit in `segment.bytes`), keeping only the surviving records. A
//!    batch keeps its base offset, last offset delta, producer id, epoch and base sequence;
//!    surviving records keep their offset and timestamp deltas; the CRC is recomputed. A batch
//!    of an idempotent producer that loses every record is kept as an empty batch when it is
//!    the producer's last, so producer state survives (as Kafka does).
//! 3. [`PartitionLog::finish_clean`] (under the lock) swaps the files in: every `.cleaned` file
//!    is renamed to `.swap` (the clean is complete from then on), the originals are deleted,
//!    each `.swap` is renamed to its `.log`, and the checkpoint moves to the end of the dirty
//!    section. [`recover`] finishes or discards an interrupted swap when the log is opened:
//!    `.cleaned` files are deleted (the originals are intact), and a `.swap` file replaces
//!    every segment whose base offset lies in the range its name carries.
//!
//! Tombstones (null values) are kept until `delete.retention.ms` after the clean that first saw
//! them: the checkpoint records, for each clean, the end of the dirty section it cleaned and
//! when, which gives every tombstone its delete horizon.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use tracing::{info, warn};

use super::segment::{self, Segment, Window};
use super::{LogConfig, LogError, PartitionLog, io_err};
use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::compression::{self, Compression};
use crate::storage::{Storage, StoreFile};

/// The per-partition cleaner checkpoint file.
pub(crate) const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
/// A pass whose tombstones were all purged.
const PURGED: i64 = i64::MIN;

/// What the cleaner remembers of a partition (persisted in [`CHECKPOINT_FILE`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerState {
    /// First offset not yet cleaned (the dirty section starts here).
    pub first_dirty: i64,
    /// One entry per clean whose tombstones may still be kept: (end of the dirty section it
    /// cleaned, exclusive; when it ran, or `i64::MIN` once its tombstones are gone), by end.
    pub passes: Vec<(i64, i64)>,
    /// Cluster mode: cleans the partition's Raft log ordered and this replica has yet to run,
    /// oldest first (see `replicated_clean`).
    pub pending: Vec<PendingClean>,
    /// Cluster mode: the last ordered clean this replica completed.
    pub done: Option<PendingClean>,
}

/// A clean ordered through a partition's Raft log (cluster mode): every replica cleans the
/// same offsets with the same clock, so all end with the same records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingClean {
    /// Raft index of the entry that ordered it.
    pub index: u64,
    /// Records below this offset are cleaned; those at or above it are kept as they are.
    pub upto: i64,
    /// The leader's clock when it ordered the clean (tombstone horizons).
    pub now_ms: i64,
    /// The log end when the entry applied: only batches below it count when deciding which
    /// batch is an idempotent producer's last.
    pub tail_end: i64,
    /// The topic's `delete.retention.ms` as the leader knew it (topic configs reach replicas
    /// through `__meta`, not in step with the partition's log).
    pub delete_retention_ms: i64,
}

impl CleanerState {
    /// The checkpoint file's contents (also carried in a partition's snapshot image).
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("2\n{}\n", self.first_dirty);
        for (end, at) in &self.passes {
            s.push_str(&format!("{end} {at}\n"));
        }
        let ordered = |tag: &str, p: &PendingClean| {
            format!(
                "{tag} {} {} {} {} {}\n",
                p.index, p.upto, p.now_ms, p.tail_end, p.delete_retention_ms
            )
        };
        if let Some(d) = &self.done {
            s.push_str(&ordered("done", d));
        }
        for p in &self.pending {
            s.push_str(&ordered("pending", p));
        }
        s.into_bytes()
    }

    /// Reads [`CleanerState::encode`]'s output (and the version-1 format without ordered cleans).
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut lines = text.lines();
        if !matches!(lines.next()?, "1" | "2") {
            return None;
        }
        let first_dirty = lines.next()?.trim().parse().ok()?;
        let mut state = CleanerState {
            first_dirty,
            ..CleanerState::default()
        };
        for l in lines {
            let fields: Vec<&str> = l.split(' ').collect();
            match fields.as_slice() {
                [a, b] => state.passes.push((a.parse().ok()?, b.parse().ok()?)),
                [tag @ ("done" | "pending"), i, u, n, t, d] => {
                    let p = PendingClean {
                        index: i.parse().ok()?,
                        upto: u.parse().ok()?,
                        now_ms: n.parse().ok()?,
                        tail_end: t.parse().ok()?,
                        delete_retention_ms: d.parse().ok()?,
                    };
                    if *tag == "done" {
                        state.done = Some(p);
                    } else {
                        state.pending.push(p);
                    }
                }
                _ => return None,
            }
        }
        Some(state)
    }

    pub(crate) fn load(fs: &dyn Storage, dir: &str) -> io::Result<Self> {
        Ok(fs
            .read_file(&format!("{dir}/{CHECKPOINT_FILE}"))?
            .and_then(|raw| Self::decode(&raw))
            .unwrap_or_default())
    }

    /// When the clean that first saw a tombstone at `offset` ran (`None`: not known, keep it).
    fn seen_at(&self, offset: i64) -> Option<i64> {
        self.passes
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|(_, at)| *at)
    }

    /// Whether a past clean left tombstones whose horizon has passed.
    fn purge_due(&self, delete_retention_ms: i64, now_ms: i64) -> bool {
        self.passes
            .iter()
            .any(|(_, at)| *at != PURGED && at.saturating_add(delete_retention_ms) <= now_ms)
    }
}

/// Limits of one clean.
#[derive(Debug, Clone, Copy)]
pub struct CleanerLimits {
    /// Most distinct keys of the offset map: a larger dirty section is cleaned in several
    /// passes (Kafka's `log.cleaner.dedupe.buffer.size`).
    pub max_keys: usize,
}

impl Default for CleanerLimits {
    fn default() -> Self {
        CleanerLimits { max_keys: 4 << 20 }
    }
}

#[derive(Debug, Clone)]
struct PlanSegment {
    base: i64,
    file: Arc<dyn StoreFile>,
    size: u64,
    next_offset: i64,
}

/// A clean decided under the lock, to be copied without it (see the module docs).
#[derive(Debug)]
pub struct CleanPlan {
    fs: Arc<dyn Storage>,
    dir: String,
    config: LogConfig,
    now_ms: i64,
    /// Closed segments from the log start to the end of the dirty section.
    segments: Vec<PlanSegment>,
    /// Index in `segments` of the first dirty one.
    first_dirty_segment: usize,
    /// Base offset of the segment after the planned ones.
    end: i64,
    /// Later segments (incl. the active one, up to its size now): only their batch headers are
    /// read, for the idempotent producers' last batches.
    tail: Vec<(Arc<dyn StoreFile>, u64)>,
    state: CleanerState,
    limits: CleanerLimits,
    /// The ordered clean this plan runs (cluster mode): records at or above its bound are kept
    /// untouched, and only batches below its log end decide which batch is a producer's last.
    ordered: Option<PendingClean>,
    /// Aborted transactions as (producer id, first offset, marker offset): their records are
    /// removed and never shadow a committed record of the same key (as Kafka's cleaner).
    aborted: Vec<(i64, i64, i64)>,
}

/// Whether the batch at `offset` of `producer_id` belongs to an aborted transaction.
fn in_aborted(aborted: &[(i64, i64, i64)], h: &BatchHeader) -> bool {
    h.attributes & 0x10 != 0
        && !h.is_control()
        && aborted.iter().any(|(p, first, last)| {
            *p == h.producer_id && (*first..=*last).contains(&h.base_offset)
        })
}

/// One rewritten group of segments.
#[derive(Debug)]
struct CleanedGroup {
    /// Base offsets of the segments it replaces.
    originals: Vec<(i64, u64)>,
    /// Offset after the last segment it replaces.
    end: i64,
    segment: Segment,
}

/// Numbers of one clean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes of the segments read.
    pub bytes_read: u64,
    /// Bytes of the cleaned segments.
    pub bytes_written: u64,
    /// Records read.
    pub records_read: u64,
    /// Records kept.
    pub records_kept: u64,
    /// Segments replaced.
    pub segments_in: usize,
    /// Segments written.
    pub segments_out: usize,
    /// Transaction markers removed.
    pub markers_removed: u64,
}

/// The output of [`CleanPlan::copy`], to hand to [`PartitionLog::finish_clean`].
#[derive(Debug)]
pub struct Cleaned {
    dir: String,
    groups: Vec<CleanedGroup>,
    state: CleanerState,
    ordered: Option<PendingClean>,
    /// What the clean did.
    pub stats: CleanStats,
    /// Transaction markers it removed, as (producer id, offset): the partition's index of
    /// aborted transactions must forget them too (a read_committed consumer told of an aborted
    /// transaction skips its producer's batches until it meets the marker).
    pub markers_removed: Vec<(i64, i64)>,
}

fn cleaned_path(dir: &str, base: i64, end: i64) -> String {
    format!("{dir}/{base:020}-{end:020}.cleaned")
}

fn cleaned_index_path(dir: &str, base: i64, end: i64) -> String {
    format!("{dir}/{base:020}-{end:020}.index.cleaned")
}

/// A segment's sparse index in the format of its `.index` file.
fn index_bytes(seg: &Segment) -> Vec<u8> {
    let mut out = Vec::with_capacity(seg.index.len() * 16);
    for e in &seg.index {
        out.extend_from_slice(&((e.offset - seg.base_offset) as u32).to_be_bytes());
        out.extend_from_slice(&(e.position as u32).to_be_bytes());
        out.extend_from_slice(&e.max_timestamp.to_be_bytes());
    }
    out
}

fn swap_path(dir: &str, base: i64, end: i64) -> String {
    format!("{dir}/{base:020}-{end:020}.swap")
}

fn parse_range(name: &str, suffix: &str) -> Option<(i64, i64)> {
    let (a, b) = name.strip_suffix(suffix)?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Finishes or discards a clean interrupted by a crash (called before the segments are opened).
pub(crate) fn recover(fs: &dyn Storage, dir: &str) -> io::Result<()> {
    let names = fs.list_dir(dir)?;
    let mut changed = false;
    for n in names.iter().filter(|n| n.ends_with(".deleted")) {
        fs.remove_file(&format!("{dir}/{n}"))?;
        changed = true;
    }
    for n in names.iter().filter(|n| n.ends_with(".cleaned")) {
        warn!(partition = %dir, file = %n, "discarding an unfinished clean");
        fs.remove_file(&format!("{dir}/{n}"))?;
        changed = true;
    }
    let mut swaps: Vec<(i64, i64)> = names
        .iter()
        .filter_map(|n| parse_range(n, ".swap"))
        .collect();
    swaps.sort_unstable();
    if swaps.is_empty() {
        if changed {
            fs.sync_dir(dir)?;
        }
        return Ok(());
    }
    let bases: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
        .collect();
    for (base, end) in swaps {
        warn!(partition = %dir, base, end, "completing an interrupted clean");
        for b in bases.iter().filter(|b| (base..end).contains(*b)) {
            let _ = fs.remove_file(&segment::index_path(dir, *b));
            fs.remove_file(&segment::log_path(dir, *b))?;
        }
        fs.sync_dir(dir)?;
        fs.rename(&swap_path(dir, base, end), &segment::log_path(dir, base))?;
        fs.sync_dir(dir)?;
    }
    Ok(())
}

/// One record of an uncompressed records section, as the cleaner needs it.
struct RawRecord<'a> {
    /// Byte range of the whole record (length prefix included).
    start: usize,
    end: usize,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    tombstone: bool,
}

fn parse_records(body: &[u8], count: i32) -> Result<Vec<RawRecord<'_>>, String> {
    let mut out = Vec::with_capacity(count.max(0) as usize);
    let mut pos = 0usize;
    while pos < body.len() {
        let bad = || format!("record {} of the batch is malformed", out.len());
        let start = pos;
        let len = batch::varlong(body, &mut pos).ok_or_else(bad)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pos.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(bad)?;
        let rec = &body[..end];
        let mut p = pos + 1; // attributes
        batch::varlong(rec, &mut p).ok_or_else(bad)?; // timestamp delta
        let offset_delta = batch::varlong(rec, &mut p).ok_or_else(bad)?;
        let key_len = batch::varlong(rec, &mut p).ok_or_else(bad)?;
        let key = if key_len < 0 {
            None
        } else {
            let k = rec
                .get(p..p.checked_add(key_len as usize).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            p += key_len as usize;
            Some(k)
        };
        let value_len = batch::varlong(rec, &mut p).ok_or_else(bad)?;
        out.push(RawRecord {
            start,
            end,
            offset_delta,
            key,
            tombstone: value_len < 0,
        });
        pos = end;
    }
    if out.len() as i64 != i64::from(count) {
        return Err(format!(
            "record batch holds {} records but its header declares {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// The uncompressed records section of a batch.
fn records_section<'a>(
    bytes: &'a [u8],
    h: &BatchHeader,
    cfg: &LogConfig,
) -> Result<Cow<'a, [u8]>, LogError> {
    let body = &bytes[HEADER_BYTES..];
    let codec = Compression::from_id(h.compression()).ok_or(LogError::Batch(
        batch::BatchError::Invalid("unknown compression codec"),
    ))?;
    if codec == Compression::None {
        return Ok(Cow::Borrowed(body));
    }
    compression::decompress(codec, body, super::rewrite::decompressed_limit(cfg))
        .map(Cow::Owned)
        .map_err(|e| LogError::Corrupt(e.to_string()))
}

/// The offsets of a batch's records without a key (the index of each in the batch).
pub(crate) fn keyless_records(
    bytes: &[u8],
    h: &BatchHeader,
    cfg: &LogConfig,
) -> Result<Vec<i32>, LogError> {
    if h.is_control() {
        return Ok(Vec::new());
    }
    let plain = records_section(bytes, h, cfg)?;
    let recs = parse_records(&plain, h.records_count).map_err(LogError::Corrupt)?;
    Ok(recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i as i32)
        .collect())
}

/// Calls `f(position, header, bytes)` for every batch of a closed segment.
fn for_each_batch(
    file: &dyn StoreFile,
    size: u64,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut window = Window::default();
    let mut pos = 0u64;
    while pos + HEADER_BYTES as u64 <= size {
        let h = BatchHeader::parse(
            window
                .get(file, pos, HEADER_BYTES, size)
                .map_err(|e| LogError::Corrupt(e.to_string()))?,
        )?;
        let total = h.total_bytes();
        if pos + total as u64 > size {
            return Err(LogError::Corrupt(format!(
                "batch at offset {} runs past the end of its segment",
                h.base_offset
            )));
        }
        let bytes = window
            .get(file, pos, total, size)
            .map_err(|e| LogError::Corrupt(e.to_string()))?;
        f(pos, &h, bytes)?;
        pos += total as u64;
    }
    Ok(())
}

/// Headers only, one small read each (the tail after the planned segments).
fn for_each_header(
    file: &dyn StoreFile,
    size: u64,
    mut f: impl FnMut(&BatchHeader),
) -> io::Result<()> {
    let mut pos = 0u64;
    let mut hb = [0u8; HEADER_BYTES];
    while pos + HEADER_BYTES as u64 <= size {
        file.read_exact_at(&mut hb, pos)?;
        let Ok(h) = BatchHeader::parse(&hb) else {
            break;
        };
        f(&h);
        pos += h.total_bytes() as u64;
    }
    Ok(())
}

/// What decides the fate of each record.
struct Filter<'a> {
    map: &'a HashMap<Vec<u8>, i64>,
    first_dirty: i64,
    state: &'a CleanerState,
    delete_retention_ms: i64,
    now_ms: i64,
    last_batch: &'a HashMap<i64, i64>,
    /// Tombstones of the dirty section kept (this clean is the one that first saw them).
    new_tombstones: std::cell::Cell<u64>,
    /// Records at or above it are not this clean's business.
    limit: i64,
    /// Aborted transactions (see [`CleanPlan`]).
    aborted: &'a [(i64, i64, i64)],
    /// Producers with a batch of their current transaction kept so far (in log order): its
    /// marker must stay, or a rebuild of the producer state would find the transaction open.
    txn_kept: std::cell::RefCell<std::collections::HashSet<i64>>,
    /// Markers this clean removes: (producer id, offset).
    markers_removed: std::cell::RefCell<Vec<(i64, i64)>>,
}

impl Filter<'_> {
    fn keep(&self, offset: i64, r: &RawRecord<'_>) -> bool {
        if offset >= self.limit {
            return true;
        }
        let Some(key) = r.key else {
            return false; // a compacted log has no use for records without a key (as Kafka)
        };
        if self.map.get(key).is_some_and(|latest| *latest > offset) {
            return false;
        }
        if r.tombstone {
            // A pass that covered it first decides (a replica that installed a snapshot has
            // the passes of its source, over records it may not have cleaned itself yet).
            return match self.state.seen_at(offset) {
                Some(PURGED) => false,
                Some(at) => self.now_ms < at.saturating_add(self.delete_retention_ms),
                None => {
                    if offset >= self.first_dirty {
                        self.new_tombstones.set(self.new_tombstones.get() + 1);
                    }
                    true
                }
            };
        }
        true
    }
}

/// The batch as it survives the clean: `None` when it goes, borrowed when it stays whole.
fn clean_batch<'b>(
    bytes: &'b [u8],
    h: &BatchHeader,
    cfg: &LogConfig,
    filter: &Filter<'_>,
    stats: &mut CleanStats,
) -> Result<Option<Cow<'b, [u8]>>, LogError> {
    if h.base_offset >= filter.limit {
        // What lies past an ordered clean's bound is not this clean's business.
        return Ok(Some(Cow::Borrowed(bytes)));
    }
    if h.is_control() {
        // A marker goes (as in Kafka) once no batch of its transaction is left and
        // delete.retention.ms has passed since it was written, so a consumer that read the
        // transaction's records before they were cleaned still finds it. A producer's last
        // batch stays: it carries the producer's epoch (a fence) for a rebuild of its state.
        let kept_data = filter.txn_kept.borrow_mut().remove(&h.producer_id);
        let expired = h.max_timestamp.saturating_add(filter.delete_retention_ms) <= filter.now_ms;
        let last = filter.last_batch.get(&h.producer_id) == Some(&h.base_offset);
        if !kept_data && expired && !last {
            filter
                .markers_removed
                .borrow_mut()
                .push((h.producer_id, h.base_offset));
            stats.markers_removed += 1;
            return Ok(None);
        }
        return Ok(Some(Cow::Borrowed(bytes)));
    }
    let kept = clean_data_batch(bytes, h, cfg, filter, stats)?;
    if kept.is_some() && h.attributes & 0x10 != 0 && h.producer_id >= 0 {
        filter.txn_kept.borrow_mut().insert(h.producer_id);
    }
    Ok(kept)
}

/// [`clean_batch`] for a batch of records.
fn clean_data_batch<'b>(
    bytes: &'b [u8],
    h: &BatchHeader,
    cfg: &LogConfig,
    filter: &Filter<'_>,
    stats: &mut CleanStats,
) -> Result<Option<Cow<'b, [u8]>>, LogError> {
    let last_of_producer =
        h.producer_id >= 0 && filter.last_batch.get(&h.producer_id) == Some(&h.base_offset);
    if !last_of_producer && in_aborted(filter.aborted, h) {
        stats.records_read += h.records_count as u64;
        return Ok(None); // an aborted transaction's records: nobody may read them
    }
    if h.records_count == 0 {
        // An earlier clean's shell of a producer's last batch: kept while it still is the last.
        return Ok(last_of_producer.then_some(Cow::Borrowed(bytes)));
    }
    let plain = records_section(bytes, h, cfg)?;
    let recs = parse_records(&plain, h.records_count).map_err(LogError::Corrupt)?;
    stats.records_read += recs.len() as u64;
    let kept: Vec<&RawRecord<'_>> = recs
        .iter()
        .filter(|r| filter.keep(h.base_offset + r.offset_delta, r))
        .collect();
    stats.records_kept += kept.len() as u64;
    if kept.len() == recs.len() {
        return Ok(Some(Cow::Borrowed(bytes)));
    }
    if kept.is_empty() && !last_of_producer {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(plain.len());
    for r in &kept {
        body.extend_from_slice(&plain[r.start..r.end]);
    }
    let mut attributes = h.attributes;
    let codec = Compression::from_id(h.compression()).unwrap_or(Compression::None);
    let section = if kept.is_empty() {
        attributes &= !0x7; // an empty batch is stored uncompressed
        Vec::new()
    } else if codec == Compression::None {
        body
    } else {
        let level = match codec {
            Compression::Gzip => cfg.gzip_level,
            Compression::Lz4 => cfg.lz4_level,
            Compression::Zstd => cfg.zstd_level,
            _ => 0,
        };
        compression::compress(codec, &body, level).map_err(|e| LogError::Corrupt(e.to_string()))?
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + section.len());
    out.extend_from_slice(&bytes[..HEADER_BYTES]);
    out.extend_from_slice(&section);
    let len = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    // records count, the last field of the header
    out[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    batch::reseal(&mut out);
    Ok(Some(Cow::Owned(out)))
}

/// A group being written: its writer, the (base, size) of the segments it replaces, and the
/// provisional path of its file.
type OpenGroup = (SegmentWriter, Vec<(i64, u64)>, String);

/// Writes batches into a new segment file through a buffer.
struct SegmentWriter {
    segment: Segment,
    buf: Vec<u8>,
    flushed: u64,
    interval: u64,
}

impl SegmentWriter {
    const FLUSH: usize = 1 << 20;

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        let h = BatchHeader::parse(bytes).map_err(|e| io::Error::other(e.to_string()))?;
        let at = self.flushed + self.buf.len() as u64;
        self.buf.extend_from_slice(bytes);
        self.segment.note_batch(&h, at, self.interval);
        if self.buf.len() >= Self::FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.segment.file.write_at(&self.buf, self.flushed)?;
            self.flushed += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl CleanPlan {
    /// The partition directory.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Tells the clean which transactions aborted: (producer id, first offset, marker offset).
    pub fn set_aborted(&mut self, aborted: Vec<(i64, i64, i64)>) {
        self.aborted = aborted;
    }

    /// Builds the offset map and writes the cleaned segments (no lock needed: it reads closed
    /// segments only). `throttle` is told of every batch's bytes as they are read (the
    /// runtime's I/O budget sleeps there); when it answers false the copy stops, removes what
    /// it wrote and fails (shutdown).
    pub fn copy(self, throttle: &mut dyn FnMut(u64) -> bool) -> Result<Cleaned, LogError> {
        let fs = self.fs.clone();
        let dir = self.dir.clone();
        let mut written = Vec::new();
        let r = self.copy_inner(throttle, &mut written);
        if r.is_err() {
            for path in written {
                let _ = fs.remove_file(&path);
            }
            warn!(partition = %dir, "clean abandoned");
        }
        r
    }

    fn copy_inner(
        mut self,
        throttle: &mut dyn FnMut(u64) -> bool,
        written: &mut Vec<String>,
    ) -> Result<Cleaned, LogError> {
        let stopped = || LogError::Io {
            dir: self.dir.clone(),
            source: io::Error::other("the clean was stopped"),
        };
        let dir = self.dir.clone();
        let cfg = self.config.clone();
        let limit = self.ordered.map_or(i64::MAX, |o| o.upto);
        let mut stats = CleanStats::default();
        // 1. The offset map over the dirty section, a segment at a time up to the key limit.
        let mut map: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut last_dirty = self.first_dirty_segment;
        for (i, seg) in self
            .segments
            .iter()
            .enumerate()
            .skip(self.first_dirty_segment)
        {
            // An ordered clean (cluster mode) must cover exactly its range on every replica,
            // so it is not split at the key limit.
            if i > self.first_dirty_segment
                && map.len() >= self.limits.max_keys
                && self.ordered.is_none()
            {
                break;
            }
            for_each_batch(&*seg.file, seg.size, |_, h, bytes| {
                if !throttle(bytes.len() as u64) {
                    return Err(stopped());
                }
                if h.is_control() || h.records_count == 0 || in_aborted(&self.aborted, h) {
                    return Ok(());
                }
                let plain = records_section(bytes, h, &cfg)?;
                for r in parse_records(&plain, h.records_count).map_err(LogError::Corrupt)? {
                    let offset = h.base_offset + r.offset_delta;
                    if offset >= limit {
                        break;
                    }
                    if let Some(k) = r.key {
                        match map.get_mut(k) {
                            Some(o) => *o = offset,
                            None => {
                                map.insert(k.to_vec(), offset);
                            }
                        }
                    }
                }
                Ok(())
            })?;
            last_dirty = i;
        }
        if last_dirty + 1 < self.segments.len() {
            // The map is full: the rest stays dirty for the next clean (its bytes move to the tail).
            let rest = self.segments.split_off(last_dirty + 1);
            self.end = rest[0].base;
            let mut tail: Vec<_> = rest.into_iter().map(|s| (s.file, s.size)).collect();
            tail.append(&mut self.tail);
            self.tail = tail;
        }
        let first_dirty = self
            .segments
            .get(self.first_dirty_segment)
            .map_or(self.end, |s| s.base)
            .max(self.state.first_dirty);
        // 2. The last batch of every idempotent producer (its empty shell is kept).
        let mut last_batch: HashMap<i64, i64> = HashMap::new();
        let tail_end = self.ordered.map_or(i64::MAX, |o| o.tail_end);
        let mut note = |h: &BatchHeader| {
            if h.producer_id >= 0 && h.base_offset < tail_end {
                last_batch.insert(h.producer_id, h.base_offset);
            }
        };
        for seg in &self.segments {
            for_each_header(&*seg.file, seg.size, &mut note).map_err(io_err(&dir))?;
        }
        for (file, size) in &self.tail {
            for_each_header(&**file, *size, &mut note).map_err(io_err(&dir))?;
        }
        // 3. Rewrite, grouping consecutive segments up to segment.bytes.
        let filter = Filter {
            map: &map,
            first_dirty,
            state: &self.state,
            delete_retention_ms: cfg.delete_retention_ms,
            now_ms: self.now_ms,
            last_batch: &last_batch,
            new_tombstones: Default::default(),
            limit,
            aborted: &self.aborted,
            txn_kept: Default::default(),
            markers_removed: Default::default(),
        };
        // A segment joins the group being written while the group's cleaned bytes plus its
        // whole size fit in segment.bytes (so cleaned-away segments merge into their
        // neighbours); a group's file is named with its range once that range is known.
        let mut out: Vec<CleanedGroup> = Vec::new();
        let mut current: Option<OpenGroup> = None;
        let mut finish = |current: Option<OpenGroup>,
                          end: i64,
                          written: &mut Vec<String>,
                          stats: &mut CleanStats|
         -> Result<(), LogError> {
            let Some((mut w, originals, open_path)) = current else {
                return Ok(());
            };
            w.flush().map_err(io_err(&dir))?;
            w.segment.file.sync_data().map_err(io_err(&dir))?;
            let path = cleaned_path(&dir, w.segment.base_offset, end);
            written.push(path.clone());
            self.fs.rename(&open_path, &path).map_err(io_err(&dir))?;
            let index = cleaned_index_path(&dir, w.segment.base_offset, end);
            written.push(index.clone());
            self.fs
                .write_file_atomic(&index, &index_bytes(&w.segment))
                .map_err(io_err(&dir))?;
            stats.bytes_written += w.segment.size;
            stats.segments_out += 1;
            out.push(CleanedGroup {
                originals,
                end,
                segment: w.segment,
            });
            Ok(())
        };
        for seg in &self.segments {
            let fits = current.as_ref().is_some_and(|(w, _, _)| {
                w.segment.size + seg.size <= cfg.segment_bytes
                    && seg.next_offset - w.segment.base_offset < i64::from(i32::MAX)
            });
            if !fits {
                finish(current.take(), seg.base, written, &mut stats)?;
                let open_path = format!("{dir}/{:020}-open.cleaned", seg.base);
                written.push(open_path.clone());
                let segment = Segment::create_at(&*self.fs, &open_path, seg.base, self.now_ms)
                    .map_err(io_err(&dir))?;
                let w = SegmentWriter {
                    segment,
                    buf: Vec::new(),
                    flushed: 0,
                    interval: cfg.index_interval_bytes,
                };
                current = Some((w, Vec::new(), open_path));
            }
            let (w, originals, _) = current.as_mut().expect("a group is open");
            originals.push((seg.base, seg.size));
            stats.bytes_read += seg.size;
            stats.segments_in += 1;
            for_each_batch(&*seg.file, seg.size, |_, h, bytes| {
                if !throttle(bytes.len() as u64) {
                    return Err(stopped());
                }
                if let Some(b) = clean_batch(bytes, h, &cfg, &filter, &mut stats)? {
                    w.push(&b).map_err(io_err(&dir))?;
                }
                Ok(())
            })?;
        }
        finish(current.take(), self.end, written, &mut stats)?;
        // 4. The checkpoint after the swap: passes whose tombstones were purged now are marked,
        // and this clean is the one that first saw the dirty section's tombstones.
        let mut state = self.state.clone();
        let cleaned_to = self.end.min(limit);
        // Only records past every earlier pass are new to this one (a replica that took over
        // its source's passes may clean again what they cover).
        let covered = state
            .passes
            .last()
            .map_or(first_dirty, |p| p.0.max(first_dirty));
        if cleaned_to > covered {
            // A clean that kept no tombstone leaves nothing to purge later.
            let at = if filter.new_tombstones.get() > 0 {
                self.now_ms
            } else {
                PURGED
            };
            state.passes.push((cleaned_to, at));
        }
        for (_, at) in &mut state.passes {
            if *at != PURGED && at.saturating_add(cfg.delete_retention_ms) <= self.now_ms {
                *at = PURGED;
            }
        }
        let mut passes: Vec<(i64, i64)> = Vec::with_capacity(state.passes.len() + 1);
        for p in state.passes.drain(..) {
            match passes.last_mut() {
                Some(last) if last.1 == PURGED && p.1 == PURGED => last.0 = p.0,
                _ => passes.push(p),
            }
        }
        state.passes = passes;
        state.first_dirty = state.first_dirty.max(cleaned_to);
        Ok(Cleaned {
            dir,
            groups: out,
            state,
            ordered: self.ordered,
            stats,
            markers_removed: filter.markers_removed.take(),
        })
    }
}

/// A swapped-in clean whose checkpoint and replaced files still need writing and removing.
#[derive(Debug)]
pub struct Swapped {
    fs: Arc<dyn Storage>,
    dir: String,
    /// What the clean did.
    pub stats: CleanStats,
    /// `None`: already written (an ordered clean).
    checkpoint: Option<Vec<u8>>,
    deleted: Vec<String>,
}

impl Swapped {
    /// Writes the cleaner checkpoint and removes the replaced segment files (no lock needed).
    pub fn tidy(self) -> Result<CleanStats, LogError> {
        let dir = &self.dir;
        if let Some(checkpoint) = &self.checkpoint {
            self.fs
                .write_file_atomic(&format!("{dir}/{CHECKPOINT_FILE}"), checkpoint)
                .map_err(io_err(dir))?;
        }
        for f in &self.deleted {
            if let Err(e) = self.fs.remove_file(f) {
                warn!(partition = %dir, file = %f, error = %e, "removing a replaced segment failed");
            }
        }
        Ok(self.stats)
    }
}

impl Cleaned {
    /// Removes the cleaned files (the swap was abandoned).
    pub fn discard(&self, fs: &dyn Storage) {
        for g in &self.groups {
            let _ = fs.remove_file(&cleaned_path(&self.dir, g.segment.base_offset, g.end));
            let _ = fs.remove_file(&cleaned_index_path(&self.dir, g.segment.base_offset, g.end));
        }
    }
}

#[cfg(test)]
#[path = "cleaner_tests.rs"]
pub(crate) mod tests;

impl CleanPlan {
    /// Where a plan made by [`PartitionLog::plan_clean`] ends: the leader orders a clean up to
    /// here in cluster mode.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Makes this plan the ordered clean `ordered` (cluster mode): records at or above its
    /// bound stay as they are, and only batches below its log end count for producer state.
    pub(crate) fn ordered(mut self, ordered: PendingClean) -> Self {
        self.now_ms = ordered.now_ms;
        self.config.delete_retention_ms = ordered.delete_retention_ms;
        self.ordered = Some(ordered);
        self
    }
}

impl PartitionLog {
    /// The cleaner's checkpoint.
    pub fn cleaner_state(&self) -> &CleanerState {
        &self.cleaner
    }

    /// Decides whether this (compacted) log is worth cleaning now, and if so what to clean.
    /// `force` ignores `min.cleanable.dirty.ratio` (tests, and a log past its
    /// `max.compaction.lag.ms`).
    pub fn plan_clean(&self, now_ms: i64, force: bool, limits: CleanerLimits) -> Option<CleanPlan> {
        let cfg = &self.config;
        if !cfg.compact || self.segments.len() < 2 {
            return None;
        }
        let active_base = *self.segments.keys().next_back().expect("one segment");
        let first_dirty = self.cleaner.first_dirty.max(self.log_start_offset);
        let lag_bound = now_ms.saturating_sub(cfg.min_compaction_lag_ms.max(0));
        let mut segments = Vec::new();
        let mut first_dirty_segment = None;
        let mut clean_bytes = 0u64;
        let mut dirty_bytes = 0u64;
        let mut end = active_base;
        // Never past the last stable offset: an open transaction may still abort.
        let stable = self.last_stable_offset();
        for (&base, seg) in self.segments.range(..active_base) {
            if seg.next_offset > stable {
                end = base;
                break;
            }
            let dirty = seg.next_offset > first_dirty;
            if dirty && cfg.min_compaction_lag_ms > 0 && seg.max_timestamp > lag_bound {
                end = base; // too recent to clean (min.compaction.lag.ms)
                break;
            }
            if dirty {
                first_dirty_segment.get_or_insert(segments.len());
                dirty_bytes += seg.size;
            } else {
                clean_bytes += seg.size;
            }
            segments.push(PlanSegment {
                base,
                file: seg.file.clone(),
                size: seg.size,
                next_offset: seg.next_offset,
            });
        }
        let purge = self.cleaner.purge_due(cfg.delete_retention_ms, now_ms);
        let Some(first_dirty_segment) = first_dirty_segment else {
            if !purge || segments.is_empty() {
                return None;
            }
            // Only tombstones to purge: the cleaned section is rewritten, nothing is dirty.
            let n = segments.len();
            return Some(self.plan(segments, n, end, now_ms, limits));
        };
        let ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes).max(1) as f64;
        let overdue = cfg.max_compaction_lag_ms < i64::MAX && {
            let seg = &segments[first_dirty_segment];
            let mut hb = [0u8; HEADER_BYTES];
            seg.size >= HEADER_BYTES as u64
                && seg.file.read_exact_at(&mut hb, 0).is_ok()
                && BatchHeader::parse(&hb).is_ok_and(|h| {
                    h.base_timestamp >= 0
                        && now_ms.saturating_sub(h.base_timestamp) > cfg.max_compaction_lag_ms
                })
        };
        if !(force || purge || overdue || ratio >= cfg.min_cleanable_dirty_ratio) {
            return None;
        }
        Some(self.plan(segments, first_dirty_segment, end, now_ms, limits))
    }

    /// A plan over every segment with records below `upto` (all of them closed), the
    /// records at or above it left as they are (an ordered clean, see `ordered_clean`).
    pub(crate) fn plan_range(
        &self,
        upto: i64,
        now_ms: i64,
        limits: CleanerLimits,
    ) -> Option<CleanPlan> {
        let active_base = *self.segments.keys().next_back().expect("one segment");
        let first_dirty = self.cleaner.first_dirty.max(self.log_start_offset);
        let mut segments = Vec::new();
        let mut first_dirty_segment = None;
        let mut end = active_base;
        for (&base, seg) in self.segments.range(..active_base) {
            if base >= upto {
                end = base;
                break;
            }
            if seg.next_offset > first_dirty {
                first_dirty_segment.get_or_insert(segments.len());
            }
            segments.push(PlanSegment {
                base,
                file: seg.file.clone(),
                size: seg.size,
                next_offset: seg.next_offset,
            });
        }
        if segments.is_empty() {
            return None;
        }
        let n = segments.len();
        Some(self.plan(
            segments,
            first_dirty_segment.unwrap_or(n),
            end,
            now_ms,
            limits,
        ))
    }

    fn plan(
        &self,
        segments: Vec<PlanSegment>,
        first_dirty_segment: usize,
        end: i64,
        now_ms: i64,
        limits: CleanerLimits,
    ) -> CleanPlan {
        let tail = self
            .segments
            .range(end..)
            .map(|(_, s)| (s.file.clone(), s.size))
            .collect();
        CleanPlan {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            config: self.config.clone(),
            now_ms,
            segments,
            first_dirty_segment,
            end,
            tail,
            state: self.cleaner.clone(),
            limits,
            ordered: None,
            aborted: Vec::new(),
        }
    }

    /// Swaps the cleaned segments in (see the module docs) and tidies up at once. When the
    /// log changed under the copy (retention or DeleteRecords removed a planned segment) the
    /// clean is dropped and `Ok(None)` returned.
    pub fn finish_clean(&mut self, cleaned: Cleaned) -> Result<Option<CleanStats>, LogError> {
        match self.finish_clean_deferred(cleaned)? {
            Some(swapped) => swapped.tidy().map(Some),
            None => Ok(None),
        }
    }

    /// The swap alone, for the caller to hold its lock only for it: renames and three directory
    /// syncs. The checkpoint write and the removal of the replaced files are left to
    /// [`Swapped::tidy`], which needs no lock (a crash before it only makes the next clean
    /// redo the work, and recovery removes the files).
    ///
    /// A failure in the middle of the swap leaves the files as a crash would: the segments are
    /// then opened again from disk with the recovery rules, so the log in memory matches them.
    pub fn finish_clean_deferred(&mut self, cleaned: Cleaned) -> Result<Option<Swapped>, LogError> {
        let r = self.swap_steps(cleaned, usize::MAX);
        if let Err(e) = &r {
            warn!(partition = %self.dir, error = %e, "swapping cleaned segments failed: reopening the segments");
            if let Err(e2) = self.reopen_segments() {
                warn!(partition = %self.dir, error = %e2, "reopening the segments failed");
            }
        }
        r.map(|o| o.map(|(s, _)| s))
    }

    /// The swap then the tidy-up, stopping after `steps` file operations (crash tests).
    #[cfg(test)]
    pub(crate) fn finish_clean_steps(
        &mut self,
        cleaned: Cleaned,
        steps: usize,
    ) -> Result<Option<CleanStats>, LogError> {
        match self.swap_steps(cleaned, steps)? {
            Some((swapped, left)) if left > 0 => swapped.tidy().map(Some),
            _ => Ok(None),
        }
    }

    /// Re-reads the closed segments from disk after recovering an interrupted swap (the active
    /// segment is never part of a clean and stays as it is).
    pub(crate) fn reopen_segments(&mut self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let fs = self.fs.clone();
        recover(&*fs, &dir).map_err(io_err(&dir))?;
        let active = *self.segments.keys().next_back().expect("one segment");
        let mut bases: Vec<i64> = fs
            .list_dir(&dir)
            .map_err(io_err(&dir))?
            .iter()
            .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
            .filter(|b| *b < active)
            .collect();
        bases.sort_unstable();
        let interval = self.config.index_interval_bytes;
        let mut closed = std::collections::BTreeMap::new();
        for base in bases {
            let (seg, _) =
                Segment::open(&*fs, &dir, base, false, interval, 0).map_err(io_err(&dir))?;
            closed.insert(base, seg);
        }
        let active_seg = self.segments.remove(&active).expect("the active segment");
        self.segments = closed;
        self.segments.insert(active, active_seg);
        Ok(())
    }

    /// The swap; `Some((swapped, steps left))` once it is complete.
    fn swap_steps(
        &mut self,
        cleaned: Cleaned,
        steps: usize,
    ) -> Result<Option<(Swapped, usize)>, LogError> {
        let dir = self.dir.clone();
        let fs = self.fs.clone();
        let intact = cleaned.dir == dir
            && cleaned.groups.iter().all(|g| {
                g.originals
                    .iter()
                    .all(|(b, size)| self.segments.get(b).is_some_and(|s| s.size == *size))
            });
        if !intact {
            info!(partition = %dir, "log changed during the clean: dropping it");
            cleaned.discard(&*fs);
            return Ok(None);
        }
        let mut left = steps;
        let mut step = || {
            if left == 0 {
                return false;
            }
            left -= 1;
            true
        };
        // 1. The clean is complete once every cleaned file is a swap file.
        for g in &cleaned.groups {
            if !step() {
                return Ok(None);
            }
            let base = g.segment.base_offset;
            fs.rename(
                &cleaned_path(&dir, base, g.end),
                &swap_path(&dir, base, g.end),
            )
            .map_err(io_err(&dir))?;
        }
        fs.sync_dir(&dir).map_err(io_err(&dir))?;
        // 2. The originals go (renamed: unlinking large files is slow, it happens in tidy()).
        let mut deleted = Vec::new();
        for g in &cleaned.groups {
            for (b, _) in &g.originals {
                if !step() {
                    return Ok(None);
                }
                self.segments.remove(b);
                let _ = fs.remove_file(&segment::index_path(&dir, *b));
                let gone = format!("{}.deleted", segment::log_path(&dir, *b));
                fs.rename(&segment::log_path(&dir, *b), &gone)
                    .map_err(io_err(&dir))?;
                deleted.push(gone);
            }
        }
        fs.sync_dir(&dir).map_err(io_err(&dir))?;
        // 3. Each swap file becomes its segment, with the index written during the copy.
        for g in cleaned.groups {
            if !step() {
                return Ok(None);
            }
            let base = g.segment.base_offset;
            fs.rename(
                &swap_path(&dir, base, g.end),
                &segment::log_path(&dir, base),
            )
            .map_err(io_err(&dir))?;
            let _ = fs.rename(
                &cleaned_index_path(&dir, base, g.end),
                &segment::index_path(&dir, base),
            );
            self.segments.insert(base, g.segment);
        }
        fs.sync_dir(&dir).map_err(io_err(&dir))?;
        let stats = cleaned.stats;
        let mut state = cleaned.state;
        let checkpoint = match cleaned.ordered {
            None => Some(state.encode()),
            Some(o) => {
                // Ordered cleans arrive while this one ran: the checkpoint is written here,
                // under the caller's lock, so a later write never carries a stale list.
                state.pending = self.cleaner.pending.clone();
                state.pending.retain(|p| p.index != o.index);
                state.done = Some(o);
                fs.write_file_atomic(&format!("{dir}/{CHECKPOINT_FILE}"), &state.encode())
                    .map_err(io_err(&dir))?;
                None
            }
        };
        self.cleaner = state;
        info!(
            partition = %dir,
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            records_read = stats.records_read,
            records_kept = stats.records_kept,
            segments_in = stats.segments_in,
            segments_out = stats.segments_out,
            first_dirty = self.cleaner.first_dirty,
            "log cleaned"
        );
        Ok(Some((
            Swapped {
                fs,
                dir,
                stats,
                checkpoint,
                deleted,
            },
            left,
        )))
    }

    /// Plans, copies and swaps in one go (tests and tools; the server splits the steps so the
    /// broker lock is not held during the copy).
    pub fn clean_now(&mut self, now_ms: i64, force: bool) -> Result<Option<CleanStats>, LogError> {
        let Some(plan) = self.plan_clean(now_ms, force, CleanerLimits::default()) else {
            return Ok(None);
        };
        let cleaned = plan.copy(&mut |_| true)?;
        self.finish_clean(cleaned)
    }
}
