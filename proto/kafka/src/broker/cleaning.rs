//! Log compaction at the broker: which partition the background cleaner takes next, and the
//! swap of its result (see `log::cleaner` for the three steps and why the copy needs no lock).

use tracing::warn;
use uuid::Uuid;

use super::Broker;
use crate::log::{CleanPlan, CleanStats, Cleaned, CleanerLimits, LogError, Swapped};

/// A clean the runtime copies without the broker lock, then hands to [`Broker::finish_clean`].
#[derive(Debug)]
pub struct CleanJob {
    /// The topic (by id: a topic deleted and re-created meanwhile is another log).
    pub topic_id: Uuid,
    /// Its name, for log lines.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What to copy.
    pub plan: CleanPlan,
}

/// Which partition a clean is for: what remains of a [`CleanJob`] while its plan is copied.
#[derive(Debug, Clone)]
pub struct CleanTarget {
    /// The topic (by id).
    pub topic_id: Uuid,
    /// Its name, for log lines.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl CleanJob {
    /// The partition and the plan, apart (the plan goes to the copying thread).
    pub fn split(self) -> (CleanTarget, CleanPlan) {
        let target = CleanTarget {
            topic_id: self.topic_id,
            topic: self.topic,
            partition: self.partition,
        };
        (target, self.plan)
    }
}

impl Broker {
    /// The next compacted partition worth cleaning, round robin after the last one taken.
    pub fn plan_clean(&mut self, now_ms: i64, limits: CleanerLimits) -> Option<CleanJob> {
        if self.cluster.is_some() {
            return self.plan_ordered_clean(limits); // cleans are ordered by leaders
        }
        let all: Vec<(String, i32)> = self
            .topics
            .iter()
            .filter(|(_, t)| t.partitions.first().is_some_and(|l| l.config().compact))
            .flat_map(|(n, t)| (0..t.partitions.len() as i32).map(move |p| (n.clone(), p)))
            .collect();
        if all.is_empty() {
            return None;
        }
        let start = all
            .iter()
            .position(|k| Some(k) == self.last_cleaned.as_ref())
            .map_or(0, |i| i + 1);
        for i in 0..all.len() {
            let (topic, p) = &all[(start + i) % all.len()];
            let t = &self.topics[topic];
            if let Some(mut plan) = t.partitions[*p as usize].plan_clean(now_ms, false, limits) {
                // An unreadable index: no clean may drop records blindly.
                let Ok(aborted) = self.aborted_between(topic, *p, 0, i64::MAX) else {
                    continue;
                };
                plan.set_aborted(
                    aborted
                        .into_iter()
                        .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                        .collect(),
                );
                let t = &self.topics[topic];
                self.last_cleaned = Some((topic.clone(), *p));
                return Some(CleanJob {
                    topic_id: t.id,
                    topic: topic.clone(),
                    partition: *p,
                    plan,
                });
            }
        }
        None
    }

    /// Swaps a copied clean in (`Ok(None)`: the partition is gone or changed; the clean was
    /// dropped). The caller runs [`Swapped::tidy`] after releasing the broker.
    pub fn finish_clean(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        cleaned: Cleaned,
    ) -> Result<Option<Swapped>, LogError> {
        let mut cleaned = cleaned;
        let removed = std::mem::take(&mut cleaned.markers_removed);
        let Some(name) = self.ids.get(&topic_id).cloned() else {
            cleaned.discard(&*self.fs);
            return Ok(None);
        };
        let log = self
            .topics
            .get_mut(&name)
            .and_then(|t| t.partitions.get_mut(partition as usize));
        let swapped = match log {
            Some(log) => log.finish_clean_deferred(cleaned)?,
            None => {
                cleaned.discard(&*self.fs);
                return Ok(None);
            }
        };
        if swapped.is_some() && !removed.is_empty() {
            // Their transactions left no record behind: nothing is left to skip.
            if let Err(e) = self.forget_filed_aborted(&name, partition, &removed) {
                // The entries stay: a reader is told to skip records that are gone.
                warn!(node_id = self.config.node_id, topic = %name, partition, error = %e, "rewriting the aborted-transaction index failed");
            }
            if let Some(t) = self.producers.get_mut(&(name, partition)) {
                t.forget_aborted(&removed);
            }
        }
        Ok(swapped)
    }

    /// Cleans every compacted partition that is due, in one go (tests and tools).
    pub fn clean_now(&mut self, now_ms: i64) -> Vec<CleanStats> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(job) = self.plan_clean(now_ms, CleanerLimits::default()) {
            if !seen.insert((job.topic_id, job.partition)) {
                break;
            }
            let copied = job.plan.copy(&mut |_| true);
            let swapped = copied.and_then(|c| self.finish_clean(job.topic_id, job.partition, c));
            match swapped.and_then(|s| s.map(Swapped::tidy).transpose()) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => {
                    warn!(topic = %job.topic, partition = job.partition, error = %e, "clean failed")
                }
            }
        }
        out
    }
}
