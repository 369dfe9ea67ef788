//! acks=1 in cluster mode: answered once the leader has the entry durably in its own Raft log,
//! before a majority does. Offsets are assigned when entries apply, so the leader predicts them
//! when it proposes: in its term only its own proposals enter the log, in order, and every
//! earlier term's entry is applied before predictions start. A prediction is only made for an
//! entry whose effect on the log end is certain (no idempotent-producer batch, which a retry can
//! turn into a duplicate that adds nothing, nor a batch the topic's `compression.type` makes
//! apply recompress, whose size against `max.message.bytes` is only known then), and only while
//! every entry before it was certain too; otherwise the produce is answered at apply, as with
//! acks=all.

use std::collections::VecDeque;

use tracing::error;

use super::super::Broker;
use super::{ClusterState, Wait};
use crate::batch;

/// A leader's predictions for one partition group.
#[derive(Debug, Default)]
pub(super) struct Predicted {
    /// Offset the next entry proposed here will start at, when known.
    next: Option<i64>,
    /// Own entries proposed and not applied yet, in order, with their predicted base offset.
    in_flight: VecDeque<(u64, Option<i64>)>,
}

/// Records an entry changes the log end by, when that is certain: every batch without an
/// idempotent producer id (transaction batches are refused before this).
fn certain_records(records: &[u8]) -> Option<i64> {
    let mut n = 0i64;
    for (_, h) in batch::headers(records) {
        if h.producer_id >= 0 || h.is_control() {
            return None;
        }
        n += h.last_offset_delta as i64 + 1;
    }
    (n > 0).then_some(n)
}

impl ClusterState {
    /// Tracks an own entry just queued for `group`; returns its predicted base offset.
    /// `predictable` is false when apply may still refuse the entry (a recompression whose size
    /// is only known then): it is treated like an idempotent producer's batch.
    pub(super) fn predict(
        &mut self,
        group: u64,
        seq: u64,
        records: &[u8],
        predictable: bool,
    ) -> Option<i64> {
        let p = self.predicted.get_mut(&group)?;
        let certain = certain_records(records).filter(|_| predictable);
        let base = match (p.next, certain) {
            (Some(next), Some(n)) => {
                p.next = Some(next + n);
                Some(next)
            }
            _ => {
                p.next = None;
                None
            }
        };
        p.in_flight.push_back((seq, base));
        base
    }

    /// This node now leads `group`: predictions start once its earlier terms are applied.
    pub(super) fn start_predicting(&mut self, group: u64) {
        self.predicted.insert(group, Predicted::default());
    }

    /// This node no longer leads `group`.
    pub(super) fn stop_predicting(&mut self, group: u64) {
        self.predicted.remove(&group);
        self.early.retain(|(g, _), _| *g != group);
        self.early_pending.retain(|_, (g, _)| *g != group);
    }

    /// An own entry of `group` was dropped before entering the log.
    pub(super) fn prediction_dropped(&mut self, group: u64, seq: u64) {
        self.early_pending.remove(&seq);
        if let Some(p) = self.predicted.get_mut(&group)
            && let Some(pos) = p.in_flight.iter().position(|(s, _)| *s == seq)
        {
            p.in_flight.remove(pos);
            p.next = None;
        }
    }
}

impl Broker {
    /// The leader's log end is settled (earlier terms applied, or no own entry in flight):
    /// predict from it again.
    pub(super) fn resync_prediction(&mut self, group: u64) {
        let Some(c) = &self.cluster else { return };
        let caught_up = c.roles.get(&group).is_some_and(|r| r.load_at.is_none());
        let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p)) else {
            return;
        };
        let end = self
            .partition(&topic, partition)
            .map(|l| l.log_end_offset());
        let c = self.cluster.as_mut().expect("cluster");
        if let (Some(p), Ok(end), true) = (c.predicted.get_mut(&group), end, caught_up)
            && p.in_flight.is_empty()
        {
            p.next = Some(end);
        }
    }

    /// An own entry applied at `base` (or failed): checks its prediction.
    pub(super) fn prediction_applied(&mut self, group: u64, seq: u64, base: Option<i64>) {
        let me = self.config.node_id;
        let Some(c) = &mut self.cluster else { return };
        let Some(p) = c.predicted.get_mut(&group) else {
            return;
        };
        let Some(pos) = p.in_flight.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let mut lost = pos > 0;
        let (_, predicted) = p.in_flight.drain(..=pos).next_back().expect("pos exists");
        if let Some(predicted) = predicted
            && base != Some(predicted)
        {
            error!(node_id = me, group, predicted, applied = ?base, "an acks=1 produce was answered with an offset its entry did not get (its apply failed?)");
            lost = true;
        }
        if lost {
            p.next = None;
        }
        self.resync_prediction(group);
    }

    /// The runtime proposed own partition entries: (group, entry data, Raft index).
    pub fn entries_indexed(&mut self, indexed: &[(u64, u64, u64)]) {
        let Some(c) = &mut self.cluster else { return };
        for &(group, seq, index) in indexed {
            if let Some((g, base)) = c.early_pending.remove(&seq)
                && g == group
            {
                c.early.insert((group, index), (seq, base));
            }
        }
    }

    /// The leader has `group`'s log durably up to `index`: acks=1 produces of entries up to
    /// there are answered with their predicted offsets.
    pub fn leader_persisted(&mut self, group: u64, index: u64) {
        let Some(c) = &mut self.cluster else { return };
        let due: Vec<(u64, u64)> = c
            .early
            .range((group, 0)..=(group, index))
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p)) else {
            return;
        };
        let start = self
            .partition(&topic, partition)
            .map_or(0, |l| l.log_start_offset());
        for key in due {
            let c = self.cluster.as_mut().expect("cluster");
            let Some((seq, base)) = c.early.remove(&key) else {
                continue;
            };
            if matches!(c.waits.get(&seq), Some(Wait::Produce { .. })) {
                self.complete_wait(seq, Ok((base, start)));
            }
        }
        self.deliver_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn only_batches_without_a_producer_id_are_certain() {
        let plain = batch(3, Compression::None, 0);
        assert_eq!(certain_records(&plain), Some(3));
        let mut two = plain.to_vec();
        two.extend_from_slice(&batch(2, Compression::Gzip, 1));
        assert_eq!(certain_records(&two), Some(5));
        let idempotent = crate::broker::group_tests::idempotent_batch(7, 0, 2);
        assert_eq!(certain_records(&idempotent), None);
    }
}
