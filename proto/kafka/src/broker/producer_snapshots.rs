//! Idempotent-producer state on disk, as Kafka's `.snapshot` files: a start reads each
//! partition's snapshot and replays only the batches after it, instead of every batch header of
//! the log, so start-up time does not grow with the data.
//!
//! `logs/<topic>-<partition>/producer.snapshot` holds a CRC-32C, a length and the table
//! ([`ProducerStateTable::snapshot`], which records the offset replay resumes at). It is written
//! at a clean shutdown and, for partitions that took idempotent writes since, on every retention
//! pass. A snapshot is used only if that offset lies within the log; any other rebuild (a
//! truncated log, a cluster replica cut back to its applied mark or installing a snapshot)
//! deletes it first, so a stale file can never describe a log rewritten since.

use sluice_coordinator::ProducerStateTable;
use tracing::{debug, warn};

use super::Broker;
use super::groups::batch_info;

const SNAPSHOT_FILE: &str = "producer.snapshot";

fn path(topic: &str, partition: i32) -> String {
    format!("{}/{SNAPSHOT_FILE}", super::partition_dir(topic, partition))
}

/// `[crc32c u32][len u32][table]`.
fn encode(table: &ProducerStateTable) -> Vec<u8> {
    let body = table.snapshot();
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(raw: &[u8]) -> Option<ProducerStateTable> {
    let crc = u32::from_be_bytes(raw.get(0..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(raw.get(4..8)?.try_into().ok()?) as usize;
    let body = raw.get(8..8usize.checked_add(len)?)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    ProducerStateTable::from_snapshot(body).ok()
}

impl Broker {
    /// Rebuilds a partition's producer state: from its snapshot and the batches after it when
    /// `use_snapshot` and the snapshot fits the log, else from every batch (deleting the
    /// snapshot first).
    pub(super) fn load_producer_state(&mut self, topic: &str, partition: i32, use_snapshot: bool) {
        let file = path(topic, partition);
        let mut table = None;
        if use_snapshot
            && let Ok(log) = self.partition(topic, partition)
            && let Ok(Some(raw)) = self.fs.read_file(&file)
        {
            match decode(&raw) {
                Some(t)
                    if t.next_offset() >= log.log_start_offset()
                        && t.next_offset() <= log.log_end_offset() =>
                {
                    table = Some(t)
                }
                Some(t) => debug!(
                    node_id = self.config.node_id,
                    topic,
                    partition,
                    snapshot_offset = t.next_offset(),
                    log_end = log.log_end_offset(),
                    "producer snapshot does not fit the log: replaying every batch"
                ),
                None => warn!(
                    node_id = self.config.node_id,
                    topic, partition, "producer snapshot is corrupt: replaying every batch"
                ),
            }
        }
        // The snapshot leaves out the aborted transactions already in index files: it is
        // only as good as they are.
        if table.is_some()
            && let Err(e) = self.load_aborted_files(topic, partition)
        {
            warn!(node_id = self.config.node_id, topic, partition, error = %e, "replaying every batch");
            table = None;
        }
        let from_snapshot = table.is_some();
        if !from_snapshot {
            let _ = self.fs.remove_file(&file);
            self.delete_aborted_files(topic, partition);
        }
        let mut table = table.unwrap_or_default();
        if let Ok(log) = self.partition(topic, partition) {
            let from = if from_snapshot {
                table.next_offset()
            } else {
                log.log_start_offset()
            };
            let end = log.log_end_offset();
            let r = log.for_each_batch_with_markers(from, |h, marker| {
                if h.producer_id < 0 {
                    return;
                }
                if h.is_control() {
                    if let Some(m) = marker {
                        // Everything recovered is durable: the markers count as decided.
                        table.record_marker(
                            h.producer_id,
                            (h.producer_epoch, m.coordinator_epoch),
                            m.commit,
                            h.base_offset,
                            h.max_timestamp,
                            end,
                        );
                    }
                    return;
                }
                table.replay_batch(&batch_info(h), h.base_offset, h.max_timestamp);
                if h.attributes & 0x10 != 0 {
                    table.record_txn_batch(h.producer_id, h.producer_epoch, h.base_offset);
                }
            });
            if let Err(e) = r {
                warn!(node_id = self.config.node_id, topic, partition, error = %e, "rebuilding producer state failed");
            }
        }
        if from_snapshot {
            self.snapshotted
                .insert((topic.to_string(), partition), table.next_offset());
        }
        table.trim_aborted(
            self.partition(topic, partition)
                .map_or(0, |l| l.log_start_offset()),
        );
        // A crash between an index file and the snapshot leaving its entries out: the table
        // forgets what the files hold.
        let first = table.aborted().next().map(|a| a.last_offset);
        if let Some(first) = first
            && let Ok(filed) = self.filed_aborted_between(topic, partition, first, i64::MAX)
            && !filed.is_empty()
        {
            let filed: Vec<(i64, i64)> = filed
                .iter()
                .map(|a| (a.producer_id, a.last_offset))
                .collect();
            table.forget_aborted(&filed);
        }
        self.producers.insert((topic.to_string(), partition), table);
        self.sync_unstable(topic, partition);
    }

    /// Writes the snapshot of every partition whose producer state moved since its last one
    /// (all of them with `all`, at shutdown).
    pub(super) fn snapshot_producer_states(&mut self) {
        // Entries moved to an index file leave the table: its snapshot must follow.
        for key in self.spill_aborted() {
            self.snapshotted.remove(&key);
        }
        let due: Vec<((String, i32), Vec<u8>, i64)> = self
            .producers
            .iter()
            .filter(|(key, t)| {
                !t.is_empty()
                    && self.snapshotted.get(*key) != Some(&t.next_offset())
                    && self.topics.contains_key(&key.0)
            })
            .map(|(key, t)| (key.clone(), encode(t), t.next_offset()))
            .collect();
        for ((topic, partition), bytes, offset) in due {
            match self.fs.write_file_atomic(&path(&topic, partition), &bytes) {
                Ok(()) => {
                    self.snapshotted.insert((topic, partition), offset);
                }
                Err(e) => {
                    warn!(node_id = self.config.node_id, topic = %topic, partition, error = %e, "writing a producer snapshot failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::group_tests::idempotent_batch;
    use super::super::{Broker, BrokerConfig};
    use crate::storage::{MemStorage, Storage};

    fn open(fs: &MemStorage) -> Broker {
        let config = BrokerConfig {
            offsets_partitions: 1,
            ..BrokerConfig::default()
        };
        Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 5, 0).unwrap()
    }

    /// (error code, base offset) of one idempotent produce of two records to `t`-0.
    fn produce(b: &mut Broker, pid: i64, seq: i32) -> (i16, i64) {
        super::super::group_tests::produce(b, idempotent_batch(pid, seq, 2))
    }

    #[test]
    fn a_restart_reads_the_snapshot_and_the_batches_after_it() {
        let fs = MemStorage::new();
        let mut b = open(&fs);
        assert_eq!(produce(&mut b, 7, 0), (0, 0));
        assert_eq!(produce(&mut b, 7, 2), (0, 2));
        b.close();
        let snap = fs
            .raw("logs/t-0/producer.snapshot")
            .expect("written at close");
        assert_eq!(super::decode(&snap).unwrap().next_offset(), 4);

        // After the snapshot: one more batch, then a crash (no clean shutdown).
        let mut b = open(&fs);
        assert!(
            b.snapshotted.contains_key(&("t".to_string(), 0)),
            "loaded from the snapshot"
        );
        assert_eq!(produce(&mut b, 7, 4), (0, 4));
        drop(b);
        fs.crash();
        let mut b = open(&fs);
        // Retries of every batch, before and after the snapshot, are recognised.
        assert_eq!(produce(&mut b, 7, 0), (0, 0));
        assert_eq!(produce(&mut b, 7, 4), (0, 4));
        assert_eq!(produce(&mut b, 7, 6), (0, 6));
        assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 8);
    }

    #[test]
    fn a_snapshot_that_does_not_fit_the_log_is_ignored_and_deleted() {
        let fs = MemStorage::new();
        let mut b = open(&fs);
        assert_eq!(produce(&mut b, 9, 0), (0, 0));
        b.close();
        // A snapshot claiming more of the log than exists (the log lost its tail), and a corrupt
        // one: both are replaced by a full replay.
        let mut fake = sluice_coordinator::ProducerStateTable::new();
        fake.replay_batch(
            &sluice_coordinator::BatchInfo {
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: 0,
                last_offset_delta: 99,
            },
            0,
            1,
        );
        fs.set_raw("logs/t-0/producer.snapshot", super::encode(&fake));
        let mut b = open(&fs);
        assert!(!b.snapshotted.contains_key(&("t".to_string(), 0)));
        assert!(
            fs.raw("logs/t-0/producer.snapshot").is_none(),
            "stale snapshot deleted"
        );
        assert_eq!(
            produce(&mut b, 9, 0),
            (0, 0),
            "dedupe from the replayed log"
        );
        b.close();
        let mut raw = fs.raw("logs/t-0/producer.snapshot").unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs.set_raw("logs/t-0/producer.snapshot", raw);
        let mut b = open(&fs);
        assert_eq!(produce(&mut b, 9, 0), (0, 0));
        assert_eq!(produce(&mut b, 9, 2), (0, 2));
    }
}
