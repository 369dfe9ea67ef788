//! One segment of a partition log: a file of record batches plus its sparse index.
//!
//! The index maps (batch base offset → file position, largest timestamp so far) every
//! `index_interval_bytes`; it serves both offset lookups (Fetch) and time lookups (ListOffsets).
//! It is kept in memory, written beside the segment when the segment is closed, and rebuilt by a
//! scan whenever the file is missing or does not agree with the segment.

use std::io;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::storage::{Storage, StoreFile};

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch at `position`.
    pub offset: i64,
    /// Byte position of that batch in the segment file.
    pub position: u64,
    /// Largest record timestamp of all batches before and including this one.
    pub max_timestamp: i64,
}

const INDEX_ENTRY_BYTES: usize = 16;

/// A segment file and what we know about its contents.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: Arc<dyn StoreFile>,
    /// Bytes of valid batches in the file.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: i64,
    /// Largest record timestamp in the segment (-1 when empty).
    pub max_timestamp: i64,
    /// Wall-clock time of the first append, for time-based rolling.
    pub created_ms: i64,
    pub index: Vec<IndexEntry>,
    bytes_since_index: u64,
}

/// What recovery found wrong with a segment's tail.
#[derive(Debug)]
pub(crate) struct Truncation {
    pub at_position: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

pub(crate) fn log_path(dir: &str, base: i64) -> String {
    format!("{dir}/{base:020}.log")
}

pub(crate) fn index_path(dir: &str, base: i64) -> String {
    format!("{dir}/{base:020}.index")
}

impl Segment {
    /// Creates a new, empty segment file.
    pub fn create(fs: &dyn Storage, dir: &str, base_offset: i64, now_ms: i64) -> io::Result<Self> {
        Self::create_at(fs, &log_path(dir, base_offset), base_offset, now_ms)
    }

    /// Creates a new, empty segment file at `path` (the cleaner's `.cleaned` files).
    pub fn create_at(
        fs: &dyn Storage,
        path: &str,
        base_offset: i64,
        now_ms: i64,
    ) -> io::Result<Self> {
        let file = fs.open(path, true)?;
        file.set_len(0)?;
        Ok(Self::empty(file, base_offset, now_ms))
    }

    fn empty(file: Arc<dyn StoreFile>, base_offset: i64, now_ms: i64) -> Self {
        Segment {
            base_offset,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            index: Vec::new(),
            bytes_since_index: 0,
        }
    }

    /// Opens an existing segment.
    ///
    /// `verify` (the last segment, the only one that can hold unsynced bytes) checks every batch's
    /// length, CRC and offset continuity and truncates the file at the first bad one. Closed
    /// segments trust their index file when it is consistent, and only scan the bytes after
    /// its last entry.
    pub fn open(
        fs: &dyn Storage,
        dir: &str,
        base_offset: i64,
        verify: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<(Self, Option<Truncation>)> {
        Self::open_inner(
            fs,
            dir,
            base_offset,
            verify,
            !verify,
            index_interval_bytes,
            now_ms,
        )
    }

    /// Opens the last segment after a clean shutdown: its index (written at close) is trusted,
    /// and only the bytes after the index's last entry are verified batch by batch, CRC
    /// included — so a start reads a few KiB per partition, not the whole segment, yet a
    /// corrupted last batch is still cut rather than served.
    pub fn open_trusting_index(
        fs: &dyn Storage,
        dir: &str,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<(Self, Option<Truncation>)> {
        Self::open_inner(
            fs,
            dir,
            base_offset,
            true,
            true,
            index_interval_bytes,
            now_ms,
        )
    }

    fn open_inner(
        fs: &dyn Storage,
        dir: &str,
        base_offset: i64,
        verify: bool,
        trust_index: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<(Self, Option<Truncation>)> {
        let file = fs.open(&log_path(dir, base_offset), false)?;
        let file_len = file.len()?;
        let mut seg = Self::empty(file, base_offset, now_ms);
        let mut start = 0u64;
        if trust_index
            && let Some(index) = load_index(fs, dir, base_offset, file_len)?
            && let Some(last) = index.last().copied()
        {
            start = last.position;
            seg.next_offset = last.offset;
            seg.max_timestamp = last.max_timestamp;
            seg.index = index;
            seg.index.pop();
            seg.bytes_since_index = index_interval_bytes;
        }
        let truncation = seg.scan_from(start, file_len, verify, index_interval_bytes)?;
        if let Some(t) = &truncation {
            seg.file.set_len(t.at_position)?;
            seg.file.sync_data()?;
        }
        Ok((seg, truncation))
    }

    /// Reads batches from `pos` to `end`, extending the index; stops at the first bad batch.
    fn scan_from(
        &mut self,
        mut pos: u64,
        end: u64,
        verify: bool,
        index_interval_bytes: u64,
    ) -> io::Result<Option<Truncation>> {
        let mut window = Window::default();
        let truncate = |at: u64, reason: String| {
            Ok(Some(Truncation {
                at_position: at,
                dropped_bytes: end - at,
                reason,
            }))
        };
        while pos < end {
            if end - pos < HEADER_BYTES as u64 {
                return truncate(pos, format!("torn batch header ({} bytes)", end - pos));
            }
            let header =
                match BatchHeader::parse(window.get(&*self.file, pos, HEADER_BYTES, end)?) {
                    Ok(h) => h,
                    Err(e) => return truncate(pos, e.to_string()),
                };
            let total = header.total_bytes();
            if pos + total as u64 > end {
                return truncate(
                    pos,
                    format!(
                        "batch at offset {} is torn ({} of {} bytes present)",
                        header.base_offset,
                        end - pos,
                        total
                    ),
                );
            }
            if verify
                && let Err(e) = batch::validate_stored(window.get(&*self.file, pos, total, end)?)
            {
                return truncate(pos, format!("batch at offset {}: {e}", header.base_offset));
            }
            // Offsets may have gaps (the cleaner removed records, in closed segments here or
            // in the compacted log a replica copied into its last one) but never go back.
            if header.base_offset < self.next_offset {
                return truncate(
                    pos,
                    format!(
                        "batch base offset {} does not follow {}",
                        header.base_offset, self.next_offset
                    ),
                );
            }
            self.note_batch(&header, pos, index_interval_bytes);
            pos += total as u64;
        }
        Ok(None)
    }

    /// Records a batch that now sits at `position`.
    pub fn note_batch(&mut self, h: &BatchHeader, position: u64, index_interval_bytes: u64) {
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        if self.index.is_empty() || self.bytes_since_index >= index_interval_bytes {
            self.index.push(IndexEntry {
                offset: h.base_offset,
                position,
                max_timestamp: self.max_timestamp,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_bytes() as u64;
        self.size = position + h.total_bytes() as u64;
        self.next_offset = h.last_offset() + 1;
    }

    /// The position of the last indexed batch starting at or before `offset`.
    pub fn position_for(&self, offset: i64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].position
        }
    }

    /// The position of the last indexed batch whose running max timestamp is below `ts`.
    pub fn position_for_timestamp(&self, ts: i64) -> u64 {
        let i = self.index.partition_point(|e| e.max_timestamp < ts);
        if i == 0 {
            0
        } else {
            self.index[i - 1].position
        }
    }

    /// Persists the index beside the segment (called when the segment is closed).
    pub fn write_index(&self, fs: &dyn Storage, dir: &str) -> io::Result<()> {
        let mut out = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for e in &self.index {
            out.extend_from_slice(&((e.offset - self.base_offset) as u32).to_be_bytes());
            out.extend_from_slice(&(e.position as u32).to_be_bytes());
            out.extend_from_slice(&e.max_timestamp.to_be_bytes());
        }
        fs.write_file_atomic(&index_path(dir, self.base_offset), &out)
    }
}

/// Loads an index file if it is present and consistent with a segment of `file_len` bytes.
fn load_index(
    fs: &dyn Storage,
    dir: &str,
    base: i64,
    file_len: u64,
) -> io::Result<Option<Vec<IndexEntry>>> {
    let Some(raw) = fs.read_file(&index_path(dir, base))? else {
        return Ok(None);
    };
    if raw.is_empty() || raw.len() % INDEX_ENTRY_BYTES != 0 {
        return Ok(None);
    }
    let mut out: Vec<IndexEntry> = Vec::with_capacity(raw.len() / INDEX_ENTRY_BYTES);
    for c in raw.chunks_exact(INDEX_ENTRY_BYTES) {
        let e = IndexEntry {
            offset: base + u32::from_be_bytes(c[0..4].try_into().unwrap()) as i64,
            position: u32::from_be_bytes(c[4..8].try_into().unwrap()) as u64,
            max_timestamp: i64::from_be_bytes(c[8..16].try_into().unwrap()),
        };
        let sane = match out.last() {
            None => e.position == 0 && e.offset >= base,
            Some(p) => {
                e.offset > p.offset && e.position > p.position && e.max_timestamp >= p.max_timestamp
            }
        };
        if !sane || e.position >= file_len {
            return Ok(None); // stale or damaged: rebuild by scanning
        }
        out.push(e);
    }
    Ok(Some(out))
}

/// A read-ahead buffer over a file, so scanning small batches costs few reads.
#[derive(Default)]
pub(crate) struct Window {
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    const CHUNK: usize = 1 << 20;

    /// `len` bytes at `pos` (which must lie before `end`).
    pub(crate) fn get(
        &mut self,
        file: &dyn StoreFile,
        pos: u64,
        len: usize,
        end: u64,
    ) -> io::Result<&[u8]> {
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = (len.max(Self::CHUNK) as u64).min(end - pos) as usize;
            self.buf.resize(want, 0);
            file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }
}
