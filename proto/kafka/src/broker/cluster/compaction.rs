//! Compacted topics in cluster mode: the leader of each compacted partition decides when a
//! clean is due (Kafka's dirty ratio and compaction lags, on its own log) and orders it
//! through the partition's Raft log; every replica runs the ordered clean once the entry is
//! durable there (see `log::ordered_clean` for why the results are identical).

use tracing::{debug, warn};

use super::super::Broker;
use super::Proposal;
use crate::broker::cleaning::CleanJob;
use crate::cluster::CleanEntry;
use crate::log::CleanerLimits;

/// How often a leader looks for partitions due a clean.
const CHECK_EVERY_MS: u64 = 1_000;
/// An order not seen applied by then is given up (lost to a leader change) and may be made
/// again.
const ORDER_TIMEOUT_MS: u64 = 30_000;

impl Broker {
    /// Leader side: orders a clean of every led compacted partition that is due one. The
    /// checks are timed on the monotonic clock; `now_ms`, the wall clock, decides what is due
    /// (compaction lags, tombstone retention).
    pub(super) fn order_cleans(&mut self, now_ms: i64) {
        let me = self.config.node_id;
        let Some(c) = &mut self.cluster else { return };
        let now = c.mono;
        if !super::due(c.last_clean_check, now, CHECK_EVERY_MS) {
            return;
        }
        c.last_clean_check = Some(now);
        c.clean_ordered
            .retain(|_, at| now.saturating_sub(*at) < ORDER_TIMEOUT_MS);
        let led: Vec<(u64, String, i32)> = c
            .roles
            .iter()
            .filter(|(g, r)| r.leader == me && !c.clean_ordered.contains_key(g))
            .filter(|(g, _)| !c.installing.contains_key(g))
            .filter_map(|(g, _)| c.meta.group(*g).map(|(t, p)| (*g, t.to_string(), p)))
            .collect();
        let mut orders = Vec::new();
        for (group, topic, partition) in led {
            let Ok(log) = self.partition(&topic, partition) else {
                continue;
            };
            if !log.config().compact || !log.cleaner_state().pending.is_empty() {
                continue;
            }
            let Some(plan) = log.plan_clean(now_ms, false, CleanerLimits::default()) else {
                continue;
            };
            let order = CleanEntry {
                upto: plan.end(),
                now_ms,
                delete_retention_ms: log.config().delete_retention_ms,
            };
            debug!(node_id = me, topic = %topic, partition, upto = order.upto, "ordering a clean");
            orders.push((group, order));
        }
        let c = self.cluster.as_mut().expect("cluster");
        for (group, order) in orders {
            c.clean_ordered.insert(group, c.mono);
            c.proposals.push(Proposal {
                group,
                data: order.encode(),
            });
        }
    }

    /// Replica side: the next ordered clean whose entry is durable here, for the background
    /// cleaner to copy (round robin after `last_cleaned`).
    pub(in crate::broker) fn plan_ordered_clean(
        &mut self,
        limits: CleanerLimits,
    ) -> Option<CleanJob> {
        let me = self.config.node_id;
        let c = self.cluster.as_ref()?;
        let mut due: Vec<(String, i32)> = c
            .applied
            .iter()
            .filter(|(g, _)| !c.installing.contains_key(g))
            .filter_map(|(g, a)| {
                let (t, p) = c.meta.group(*g)?;
                let log = self.topics.get(t)?.partitions.get(p as usize)?;
                let first = log.cleaner_state().pending.first()?;
                // Run only what a restart would not apply again.
                (a.recorded >= first.index).then(|| (t.to_string(), p))
            })
            .collect();
        due.sort();
        let start = due
            .iter()
            .position(|k| Some(k) > self.last_cleaned.as_ref())
            .unwrap_or(0);
        due.rotate_left(start);
        for (topic, partition) in due {
            // Aborted transactions' records go (an aborted value must not shadow a committed
            // one). Every transaction with records below the order's bound was decided when it
            // was ordered (the bound is at most the leader's LSO), so every replica passes the
            // same list for them.
            let Ok(aborted) = self.aborted_between(&topic, partition, 0, i64::MAX) else {
                continue; // an unreadable index: no clean may drop records blindly
            };
            let aborted: Vec<(i64, i64, i64)> = aborted
                .into_iter()
                .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                .collect();
            let t = self.topics.get_mut(&topic)?;
            let topic_id = t.id;
            let log = t.partitions.get_mut(partition as usize)?;
            match log.plan_ordered_clean(limits) {
                Ok(Some(mut plan)) => {
                    plan.set_aborted(aborted);
                    self.last_cleaned = Some((topic.clone(), partition));
                    return Some(CleanJob {
                        topic_id,
                        topic,
                        partition,
                        plan,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(node_id = me, topic = %topic, partition, error = %e, "planning an ordered clean failed")
                }
            }
        }
        None
    }
}
