//! Idempotent producer state: producer id allocation and per-partition sequence tracking.
//!
//! An idempotent producer numbers its batches per partition (`base_sequence`). The broker remembers,
//! per producer and partition, the epoch and the metadata of the last [`BATCHES_RETAINED`] batches, so
//! a retried batch is answered with its original offsets instead of being written twice, a gap is
//! refused (OUT_OF_ORDER_SEQUENCE_NUMBER) and an older epoch is fenced (INVALID_PRODUCER_EPOCH). This
//! follows Kafka 2.5+ (KIP-360): a producer the partition does not know is accepted at any sequence,
//! so UNKNOWN_PRODUCER_ID is never answered.
//!
//! The state is derived from the log: after a restart, feed every stored batch header in order to
//! [`ProducerStateTable::replay_batch`] (optionally starting from a [`ProducerStateTable::snapshot`]
//! and replaying from [`ProducerStateTable::next_offset`]).

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::store::StoreRecord;
use crate::{Action, Out, RequestContext, Response, StoreWrite};

/// Batches remembered per producer and partition (Kafka's `NumBatchesToRetain`, and the client's
/// `max.in.flight.requests.per.connection` limit for idempotence).
pub const BATCHES_RETAINED: usize = 5;

/// `producer.id.expiration.ms` default: producers silent this long are forgotten.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// The idempotence fields of a record batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Producer id, -1 for non-idempotent batches.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
    /// `last_offset_delta` of the header (record count - 1 for a freshly produced batch).
    pub last_offset_delta: i32,
}

impl BatchInfo {
    /// Sequence of the last record, wrapping past `i32::MAX` to 0 as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// Whether the batch takes part in idempotence at all.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq as i64 == last_seq as i64 + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCheck {
    /// Write it, then call [`ProducerStateTable::record_append`].
    Append,
    /// Already written: answer success with these offsets and write nothing.
    Duplicate {
        /// Offset of the first record of the original batch.
        base_offset: i64,
        /// Offset of its last record.
        last_offset: i64,
        /// Its max timestamp (for LogAppendTime topics).
        timestamp_ms: i64,
    },
    /// Refuse the batch with this error (OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_PRODUCER_EPOCH).
    Reject(ResponseError),
}

/// Metadata of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMetadata {
    first_seq: i32,
    last_seq: i32,
    last_offset: i64,
    offset_delta: i32,
    timestamp_ms: i64,
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    last_timestamp_ms: i64,
    /// First offset of the producer's open transaction in this partition.
    txn_first_offset: Option<i64>,
    /// The highest coordinator epoch of a marker it got here (-1: none): a marker of an older
    /// coordinator (one deposed while its request was in flight) is refused.
    coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16, last_timestamp_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_RETAINED),
            last_timestamp_ms,
            txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }
}

/// A transaction aborted in this partition: read_committed consumers skip the producer's
/// records from `first_offset` up to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Its first record in the transaction.
    pub first_offset: i64,
    /// The abort marker.
    pub last_offset: i64,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    /// Producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// Sequence of its last record (-1 when none is retained).
    pub last_sequence: i32,
    /// Timestamp of its last batch.
    pub last_timestamp_ms: i64,
    /// First offset of its open transaction (-1: none).
    pub txn_start_offset: i64,
    /// Coordinator epoch of the last marker it got here (-1: none).
    pub coordinator_epoch: i32,
}

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot ended early.
    #[error("snapshot truncated")]
    Truncated,
    /// Written by an unknown format version.
    #[error("unknown snapshot version {0}")]
    UnknownVersion(u8),
    /// A producer has more batches than retained.
    #[error("invalid batch count {0}")]
    InvalidBatchCount(u8),
}

/// Version 1 adds open transactions and the aborted-transaction index; version 2 each
/// producer's coordinator epoch; version 3 has the same layout, but older aborted transactions
/// may live in index files beside it, which a build that reads at most version 2 would miss (it
/// refuses the snapshot and replays the log instead).
const SNAPSHOT_VERSION: u8 = 3;

/// Idempotence and transaction state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Offset after the last batch fed in: where replay resumes after a snapshot.
    next_offset: i64,
    /// Open transactions by first offset: the last stable offset is the smallest.
    ongoing: BTreeMap<i64, i64>,
    /// Transactions whose marker is written but not yet below the high watermark, as (first
    /// offset, marker offset): they hold the last stable offset back until the marker is
    /// durable, so no consumer reads a decision a crash could still undo.
    unstable_markers: Vec<(i64, i64)>,
    /// Aborted transactions in marker order (the aborted-transaction index).
    aborted: VecDeque<AbortedTxn>,
}

impl ProducerStateTable {
    /// An empty table (new partition, or before replay).
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Offset after the last batch recorded or replayed.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The epoch this partition knows for `producer_id`.
    pub fn producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Decides whether an incoming client batch is appended, a duplicate, or refused.
    pub fn check(&self, batch: &BatchInfo) -> BatchCheck {
        if !batch.is_idempotent() {
            return BatchCheck::Append;
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // KIP-360: unknown producers (new, or expired) may start at any sequence.
            return BatchCheck::Append;
        };
        let last_seq = batch.last_sequence();
        if batch.producer_epoch == entry.epoch
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == batch.base_sequence && b.last_seq == last_seq)
        {
            return BatchCheck::Duplicate {
                base_offset: dup.last_offset - dup.offset_delta as i64,
                last_offset: dup.last_offset,
                timestamp_ms: dup.timestamp_ms,
            };
        }
        if batch.producer_epoch < entry.epoch {
            tracing::debug!(
                producer_id = batch.producer_id,
                epoch = batch.producer_epoch,
                current = entry.epoch,
                "fencing stale producer epoch"
            );
            return BatchCheck::Reject(ResponseError::InvalidProducerEpoch);
        }
        if batch.producer_epoch != entry.epoch {
            // A bumped epoch restarts sequences at 0.
            return if batch.base_sequence == 0 {
                BatchCheck::Append
            } else {
                BatchCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        match entry.batches.back() {
            Some(b) if !in_sequence(b.last_seq, batch.base_sequence) => {
                tracing::debug!(
                    producer_id = batch.producer_id,
                    expected = increment_sequence(b.last_seq, 1),
                    got = batch.base_sequence,
                    "out of order sequence"
                );
                BatchCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => BatchCheck::Append,
        }
    }

    /// Records a batch appended at `base_offset` (after [`BatchCheck::Append`]).
    pub fn record_append(&mut self, batch: &BatchInfo, base_offset: i64, max_timestamp_ms: i64) {
        self.next_offset = self
            .next_offset
            .max(base_offset + batch.last_offset_delta as i64 + 1);
        if !batch.is_idempotent() {
            return;
        }
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry::new(batch.producer_epoch, max_timestamp_ms));
        if entry.epoch != batch.producer_epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq: batch.base_sequence,
            last_seq: batch.last_sequence(),
            last_offset: base_offset + batch.last_offset_delta as i64,
            offset_delta: batch.last_offset_delta,
            timestamp_ms: max_timestamp_ms,
        });
        entry.last_timestamp_ms = max_timestamp_ms;
        debug_assert!(entry.batches.len() <= BATCHES_RETAINED);
    }

    /// Rebuilds state from a stored batch header, in log order. No validation: the log is the truth
    /// (a batch of an older epoch, which the broker would never have written, is skipped).
    pub fn replay_batch(&mut self, batch: &BatchInfo, base_offset: i64, max_timestamp_ms: i64) {
        if let Some(e) = self.producers.get(&batch.producer_id)
            && batch.producer_epoch < e.epoch
        {
            tracing::warn!(
                producer_id = batch.producer_id,
                "skipping batch of older epoch in replay"
            );
            self.next_offset = self
                .next_offset
                .max(base_offset + batch.last_offset_delta as i64 + 1);
            return;
        }
        self.record_append(batch, base_offset, max_timestamp_ms);
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms - e.last_timestamp_ms < expiration_ms
        });
        before - self.producers.len()
    }

    /// The epoch this partition last saw of `producer_id`.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// The highest coordinator epoch of a marker `producer_id` got here (-1: none).
    pub fn coordinator_epoch_of(&self, producer_id: i64) -> i32 {
        self.producers
            .get(&producer_id)
            .map_or(-1, |e| e.coordinator_epoch)
    }

    /// Whether `producer_id` has a transaction open in this partition, at any epoch.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Whether `producer_id` has a transaction open in this partition at `epoch`.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some() && e.epoch == epoch)
    }

    /// A transactional batch of `producer_id` was appended (or replayed) at `base_offset`: it
    /// opens the producer's transaction in this partition unless one is open.
    pub fn record_txn_batch(&mut self, producer_id: i64, epoch: i16, base_offset: i64) {
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch, -1));
        if e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(base_offset);
            self.ongoing.insert(base_offset, producer_id);
            self.next_offset = self.next_offset.max(base_offset + 1);
        }
    }

    /// A commit or abort marker of `producer_id` at `epoch` was appended (or replayed) at
    /// `offset`, closing its open transaction. A marker's higher epoch fences older batches.
    /// `high_watermark`: markers below it are durable (replay passes the log end).
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        (epoch, coordinator_epoch): (i16, i32),
        commit: bool,
        offset: i64,
        timestamp_ms: i64,
        high_watermark: i64,
    ) {
        self.next_offset = self.next_offset.max(offset + 1);
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch, timestamp_ms));
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        let Some(first) = entry.txn_first_offset.take() else {
            return; // a marker for a transaction that wrote nothing here
        };
        self.ongoing.remove(&first);
        if offset >= high_watermark {
            self.unstable_markers.push((first, offset));
        }
        if !commit {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: offset,
            });
        }
    }

    /// The high watermark reached `high_watermark`: markers below it are durable.
    pub fn advance_high_watermark(&mut self, high_watermark: i64) {
        self.unstable_markers.retain(|(_, m)| *m >= high_watermark);
    }

    /// The first offset a read_committed consumer may not read yet (of an open transaction or
    /// one whose marker is not durable), if any. The last stable offset is the smaller of
    /// this and the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let open = self.ongoing.keys().next().copied();
        let pending = self.unstable_markers.iter().map(|(f, _)| *f).min();
        match (open, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Aborted transactions a fetch of `[from, to)` must report: those whose records may lie
    /// in that range.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Every aborted transaction in the index, in marker order.
    pub fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.iter()
    }

    /// Forgets the aborted transactions whose markers, (producer id, offset), were cleaned
    /// away together with every record of theirs.
    pub fn forget_aborted(&mut self, markers: &[(i64, i64)]) {
        self.aborted
            .retain(|a| !markers.contains(&(a.producer_id, a.last_offset)));
    }

    /// How many aborted transactions the table holds.
    pub fn aborted_len(&self) -> usize {
        self.aborted.len()
    }

    /// Forgets the aborted transactions whose marker is at or before `offset` (they went to
    /// an index file on disk).
    pub fn drop_aborted_through(&mut self, offset: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset <= offset)
        {
            self.aborted.pop_front();
        }
    }

    /// Forgets aborted transactions that end before the log start.
    pub fn trim_aborted(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    /// The producers of this partition, for DescribeProducers.
    pub fn producers(&self) -> Vec<ProducerView> {
        self.producers
            .iter()
            .map(|(pid, e)| ProducerView {
                producer_id: *pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp_ms: e.last_timestamp_ms,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
                coordinator_epoch: e.coordinator_epoch,
            })
            .collect()
    }

    /// Serialises the table; restore with [`ProducerStateTable::from_snapshot`] and replay batches
    /// from [`ProducerStateTable::next_offset`] on.
    pub fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(SNAPSHOT_VERSION);
        b.put_i64(self.next_offset);
        b.put_u32(self.producers.len() as u32);
        for (pid, e) in &self.producers {
            b.put_i64(*pid);
            b.put_i16(e.epoch);
            b.put_i64(e.last_timestamp_ms);
            b.put_i64(e.txn_first_offset.unwrap_or(-1));
            b.put_i32(e.coordinator_epoch);
            b.put_u8(e.batches.len() as u8);
            for m in &e.batches {
                b.put_i32(m.first_seq);
                b.put_i32(m.last_seq);
                b.put_i64(m.last_offset);
                b.put_i32(m.offset_delta);
                b.put_i64(m.timestamp_ms);
            }
        }
        // A marker not yet durable when the snapshot was taken lies below `next_offset`: the
        // snapshot is only used when the log still reaches that offset.
        b.put_u32(self.aborted.len() as u32);
        for a in &self.aborted {
            b.put_i64(a.producer_id);
            b.put_i64(a.first_offset);
            b.put_i64(a.last_offset);
        }
        b.freeze()
    }

    /// Reads a snapshot written by [`ProducerStateTable::snapshot`].
    pub fn from_snapshot(mut b: &[u8]) -> Result<ProducerStateTable, SnapshotError> {
        fn need(b: &[u8], n: usize) -> Result<(), SnapshotError> {
            if b.remaining() < n {
                Err(SnapshotError::Truncated)
            } else {
                Ok(())
            }
        }
        need(b, 1 + 8 + 4)?;
        let version = b.get_u8();
        if version > SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let next_offset = b.get_i64();
        let n = b.get_u32();
        let mut producers = BTreeMap::new();
        for _ in 0..n {
            need(b, 8 + 2 + 8 + 1)?;
            let pid = b.get_i64();
            let epoch = b.get_i16();
            let last_timestamp_ms = b.get_i64();
            let txn_first_offset = if version >= 1 {
                need(b, 8 + 1)?;
                Some(b.get_i64()).filter(|o| *o >= 0)
            } else {
                None
            };
            let coordinator_epoch = if version >= 2 {
                need(b, 4 + 1)?;
                b.get_i32()
            } else {
                -1
            };
            let count = b.get_u8();
            if count as usize > BATCHES_RETAINED {
                return Err(SnapshotError::InvalidBatchCount(count));
            }
            let mut batches = VecDeque::with_capacity(BATCHES_RETAINED);
            for _ in 0..count {
                need(b, 4 + 4 + 8 + 4 + 8)?;
                batches.push_back(BatchMetadata {
                    first_seq: b.get_i32(),
                    last_seq: b.get_i32(),
                    last_offset: b.get_i64(),
                    offset_delta: b.get_i32(),
                    timestamp_ms: b.get_i64(),
                });
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        let ongoing = producers
            .iter()
            .filter_map(|(pid, e)| e.txn_first_offset.map(|o| (o, *pid)))
            .collect();
        let mut aborted = VecDeque::new();
        if version >= 1 {
            need(b, 4)?;
            for _ in 0..b.get_u32() {
                need(b, 24)?;
                aborted.push_back(AbortedTxn {
                    producer_id: b.get_i64(),
                    first_offset: b.get_i64(),
                    last_offset: b.get_i64(),
                });
            }
        }
        Ok(ProducerStateTable {
            producers,
            next_offset,
            ongoing,
            unstable_markers: Vec::new(),
            aborted,
        })
    }
}

/// Hands out producer ids, reserving them in durable blocks so no id is reused after a crash.
///
/// A block is reserved by a [`StoreRecord::ProducerIdBlock`]; ids from a block are only answered after
/// its record is durable: until the server confirms it with
/// [`ProducerIdAllocator::block_persisted`], every answer is persist-then-respond (re-writing the same
/// small record, which is harmless).
#[derive(Debug, Clone)]
pub struct ProducerIdAllocator {
    next: i64,
    /// Exclusive end of the reserved block.
    block_end: i64,
    /// Ids below this are covered by a durable block record.
    durable_end: i64,
    block_size: i64,
}

impl ProducerIdAllocator {
    /// Kafka's block size.
    pub const DEFAULT_BLOCK_SIZE: i64 = 1000;

    /// An allocator that has reserved nothing yet; replay the stored blocks before using it.
    pub fn new(block_size: i64) -> ProducerIdAllocator {
        assert!(block_size > 0);
        ProducerIdAllocator {
            next: 0,
            block_end: 0,
            durable_end: 0,
            block_size,
        }
    }

    /// An allocator whose ids need no stored block: they start at `first`, a range unique to
    /// this node and start (cluster mode puts the node id in the top bits and the start time
    /// below), so nothing is persisted before an id is handed out.
    pub fn unbounded(first: i64) -> ProducerIdAllocator {
        ProducerIdAllocator {
            next: first,
            block_end: i64::MAX,
            durable_end: i64::MAX,
            block_size: 1,
        }
    }

    /// Applies a stored record; the rest of a block that was in use at a crash is skipped.
    pub fn replay(&mut self, record: &StoreRecord) {
        if let StoreRecord::ProducerIdBlock { block_end } = record {
            self.next = self.next.max(*block_end);
            self.block_end = self.next;
            self.durable_end = self.next;
        }
    }

    /// The server made the block ending at `block_end` durable.
    pub fn block_persisted(&mut self, block_end: i64) {
        self.durable_end = self.durable_end.max(block_end);
    }

    /// The next producer id, and the block record that must be durable before it is used.
    pub fn allocate(&mut self) -> (i64, Option<StoreRecord>) {
        if self.next >= self.block_end {
            self.block_end = self.next + self.block_size;
            tracing::info!(block_end = self.block_end, "reserving producer id block");
        }
        let id = self.next;
        self.next += 1;
        let record = (id >= self.durable_end).then_some(StoreRecord::ProducerIdBlock {
            block_end: self.block_end,
        });
        (id, record)
    }

    /// InitProducerId (v0–v5). Without a transactional id: a fresh producer id at epoch 0, as Kafka
    /// gives idempotent producers (also when a v3+ client asks to bump an existing id). With one:
    /// Sluice has no transactions, so TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients treat as
    /// fatal and report clearly (an empty transactional id is INVALID_REQUEST, as in Kafka).
    /// The block record goes to `store_partition` of the internal log.
    pub fn init_producer_id(
        &mut self,
        ctx: &RequestContext,
        req: &InitProducerIdRequest,
        store_partition: i32,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let answer = |error: Option<ResponseError>, id: i64, epoch: i16| Response {
            token: ctx.token,
            api_version: ctx.api_version,
            body: InitProducerIdResponse::default()
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
                .into(),
        };
        match req.transactional_id.as_ref().map(|t| t.0.as_str()) {
            Some("") => out.respond(answer(Some(ResponseError::InvalidRequest), -1, -1)),
            Some(_) => out.respond(answer(
                Some(ResponseError::TransactionalIdAuthorizationFailed),
                -1,
                -1,
            )),
            None => {
                let (id, record) = self.allocate();
                let writes = record
                    .map(|record| StoreWrite {
                        partition: store_partition,
                        record,
                    })
                    .into_iter()
                    .collect();
                out.persist(writes, vec![answer(None, id, 0)]);
            }
        }
        out.into_actions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchInfo {
        BatchInfo {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            last_offset_delta: count - 1,
        }
    }

    /// Appends like a partition would: check, write at the log end, record.
    fn produce(t: &mut ProducerStateTable, b: BatchInfo) -> BatchCheck {
        let c = t.check(&b);
        if c == BatchCheck::Append {
            let base = t.next_offset();
            t.record_append(&b, base, 1000 + base);
        }
        c
    }

    #[test]
    fn dedupes_the_last_five_batches() {
        let mut t = ProducerStateTable::new();
        for i in 0..6 {
            assert_eq!(produce(&mut t, batch(7, 0, i * 2, 2)), BatchCheck::Append);
        }
        // Offsets: batch i at 2i..2i+1. The five most recent (1..=5) are answered as duplicates.
        for i in 1..6 {
            assert_eq!(
                produce(&mut t, batch(7, 0, i * 2, 2)),
                BatchCheck::Duplicate {
                    base_offset: (i * 2) as i64,
                    last_offset: (i * 2 + 1) as i64,
                    timestamp_ms: 1000 + (i * 2) as i64,
                }
            );
        }
        // The sixth-latest is no longer cached: it is an out-of-order sequence, as in Kafka.
        assert_eq!(
            produce(&mut t, batch(7, 0, 0, 2)),
            BatchCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(t.next_offset(), 12);
    }

    #[test]
    fn gaps_and_epochs() {
        let mut t = ProducerStateTable::new();
        // Unknown producers start anywhere (KIP-360).
        assert_eq!(produce(&mut t, batch(1, 3, 10, 1)), BatchCheck::Append);
        assert_eq!(
            produce(&mut t, batch(1, 3, 12, 1)),
            BatchCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(produce(&mut t, batch(1, 3, 11, 1)), BatchCheck::Append);
        assert_eq!(
            produce(&mut t, batch(1, 2, 12, 1)),
            BatchCheck::Reject(ResponseError::InvalidProducerEpoch)
        );
        // A new epoch must restart at sequence 0.
        assert_eq!(
            produce(&mut t, batch(1, 4, 12, 1)),
            BatchCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(produce(&mut t, batch(1, 4, 0, 1)), BatchCheck::Append);
        assert_eq!(t.producer_epoch(1), Some(4));
        // Once bumped, the old epoch is fenced even for what used to be a duplicate.
        assert_eq!(
            produce(&mut t, batch(1, 3, 11, 1)),
            BatchCheck::Reject(ResponseError::InvalidProducerEpoch)
        );
        // Non-idempotent batches are not tracked.
        assert_eq!(produce(&mut t, batch(-1, -1, -1, 3)), BatchCheck::Append);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let b = batch(1, 0, i32::MAX - 1, 4);
        assert_eq!(b.last_sequence(), 1);
        let mut t = ProducerStateTable::new();
        assert_eq!(
            produce(&mut t, batch(1, 0, i32::MAX - 1, 2)),
            BatchCheck::Append
        );
        assert_eq!(produce(&mut t, batch(1, 0, 0, 1)), BatchCheck::Append);
        assert!(matches!(
            produce(&mut t, batch(1, 0, i32::MAX - 1, 2)),
            BatchCheck::Duplicate { base_offset: 0, .. }
        ));
    }

    #[test]
    fn replay_and_snapshot_rebuild_dedupe() {
        let mut live = ProducerStateTable::new();
        let mut log = Vec::new();
        for (pid, seq) in [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)] {
            let b = batch(pid, 0, seq, 1);
            let base = live.next_offset();
            assert_eq!(produce(&mut live, b), BatchCheck::Append);
            log.push((b, base));
        }
        // "Crash": rebuild from the stored headers.
        let mut rebuilt = ProducerStateTable::new();
        for (b, base) in &log {
            rebuilt.replay_batch(b, *base, 1000 + base);
        }
        assert_eq!(rebuilt, live);
        assert!(matches!(
            rebuilt.check(&batch(2, 0, 1, 1)),
            BatchCheck::Duplicate { base_offset: 3, .. }
        ));
        // Snapshot halfway, replay the rest.
        let mut half = ProducerStateTable::new();
        for (b, base) in &log[..3] {
            half.replay_batch(b, *base, 1000 + base);
        }
        let mut restored = ProducerStateTable::from_snapshot(&half.snapshot()).unwrap();
        assert_eq!(restored.next_offset(), 3);
        let resume = restored.next_offset();
        for (b, base) in log.iter().filter(|(_, o)| *o >= resume) {
            restored.replay_batch(b, *base, 1000 + base);
        }
        assert_eq!(restored, live);
        assert_eq!(
            ProducerStateTable::from_snapshot(&[1]),
            Err(SnapshotError::Truncated)
        );
    }

    #[test]
    fn open_and_aborted_transactions_survive_a_snapshot() {
        let mut t = ProducerStateTable::new();
        // Producer 1: a transaction aborted by a marker at 2; producer 2: open from 3.
        t.record_append(&batch(1, 0, 0, 2), 0, 10);
        t.record_txn_batch(1, 0, 0);
        t.record_marker(1, (0, 3), false, 2, 11, 0);
        t.record_append(&batch(2, 0, 0, 1), 3, 12);
        t.record_txn_batch(2, 0, 3);
        // The marker at 2 is not durable (high watermark 0): it still holds the LSO at 0.
        assert_eq!(t.first_unstable_offset(), Some(0));
        t.advance_high_watermark(3);
        assert_eq!(t.first_unstable_offset(), Some(3));
        assert_eq!(t.aborted_between(0, 3).len(), 1);
        assert!(t.aborted_between(3, 10).is_empty());
        // An open transaction keeps its producer from expiring.
        assert_eq!(t.clone().remove_expired(1_000_000, 1000), 1);
        let restored = ProducerStateTable::from_snapshot(&t.snapshot()).unwrap();
        assert_eq!(restored, t);
        assert_eq!(restored.first_unstable_offset(), Some(3));
        // The marker's coordinator epoch is kept; an older one does not lower it.
        assert_eq!(restored.coordinator_epoch_of(1), 3);
        assert_eq!(restored.coordinator_epoch_of(2), -1);
        let mut lower = restored.clone();
        lower.record_marker(1, (0, 2), true, 20, 30, 0);
        assert_eq!(lower.coordinator_epoch_of(1), 3);
        assert_eq!(
            restored.aborted().copied().collect::<Vec<_>>(),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 2
            }]
        );
        // A version-0 snapshot (before transactions) still loads.
        let mut v0 = ProducerStateTable::new();
        v0.record_append(&batch(5, 0, 0, 1), 0, 1);
        let mut old = Vec::new();
        old.push(0u8);
        old.extend_from_slice(&v0.next_offset().to_be_bytes());
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend_from_slice(&5i64.to_be_bytes());
        old.extend_from_slice(&0i16.to_be_bytes());
        old.extend_from_slice(&1i64.to_be_bytes());
        old.push(1);
        for v in [0i32, 0] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        old.extend_from_slice(&0i64.to_be_bytes());
        old.extend_from_slice(&0i32.to_be_bytes());
        old.extend_from_slice(&1i64.to_be_bytes());
        assert_eq!(ProducerStateTable::from_snapshot(&old).unwrap(), v0);
        // Trimming forgets aborted transactions before the log start.
        t.trim_aborted(3);
        assert!(t.aborted().next().is_none());
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut t = ProducerStateTable::new();
        t.record_append(&batch(1, 0, 0, 1), 0, 100);
        t.record_append(&batch(2, 0, 0, 1), 1, 5000);
        assert_eq!(t.remove_expired(6000, 2000), 1);
        assert_eq!(t.producer_epoch(1), None);
        assert_eq!(t.producer_epoch(2), Some(0));
    }

    fn ctx(token: u64) -> RequestContext {
        RequestContext {
            token,
            api_version: 4,
            client_id: "p".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn init_answer(actions: &[Action]) -> (bool, i16, i64, i16) {
        let (persisted, r) = match actions {
            [Action::Respond(r)] => (false, r),
            [Action::Persist { then, .. }] => (true, &then[0]),
            other => panic!("unexpected {other:?}"),
        };
        let kafka_protocol::messages::ResponseKind::InitProducerId(body) = &r.body else {
            panic!("not InitProducerId");
        };
        (
            persisted,
            body.error_code,
            body.producer_id.0,
            body.producer_epoch,
        )
    }

    #[test]
    fn producer_ids_are_never_reused_after_restart() {
        let mut a = ProducerIdAllocator::new(3);
        // Idempotent producers send a null transactional id.
        let req = InitProducerIdRequest::default().with_transactional_id(None);
        let first = a.init_producer_id(&ctx(1), &req, 0);
        assert_eq!(init_answer(&first), (true, 0, 0, 0));
        let Action::Persist { writes, .. } = &first[0] else {
            unreachable!()
        };
        assert_eq!(
            writes[0].record,
            StoreRecord::ProducerIdBlock { block_end: 3 }
        );
        // Not yet confirmed durable: still persist-then-respond.
        assert_eq!(
            init_answer(&a.init_producer_id(&ctx(2), &req, 0)),
            (true, 0, 1, 0)
        );
        a.block_persisted(3);
        assert_eq!(
            init_answer(&a.init_producer_id(&ctx(3), &req, 0)),
            (false, 0, 2, 0)
        );
        assert_eq!(
            init_answer(&a.init_producer_id(&ctx(4), &req, 0)),
            (true, 0, 3, 0)
        );

        // Restart with only the first block durable: ids continue after it, none reused... and
        // with the second block durable they continue after that one.
        let mut b = ProducerIdAllocator::new(3);
        b.replay(&StoreRecord::ProducerIdBlock { block_end: 3 });
        b.replay(&StoreRecord::ProducerIdBlock { block_end: 6 });
        assert_eq!(b.allocate().0, 6);

        let tx = InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_static_str("tx"),
            ),
        ));
        assert_eq!(
            init_answer(&b.init_producer_id(&ctx(5), &tx, 0)).1,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    }
}
