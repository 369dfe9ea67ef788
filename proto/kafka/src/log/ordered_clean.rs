//! Compaction in cluster mode. Replicas must end with the same records at the same offsets,
//! so none of them decides on its own when or how far to clean: the partition leader orders a
//! clean through the partition's Raft log (up to an offset, with its clock and its
//! `delete.retention.ms`), and every replica runs exactly that clean when the entry applies.
//!
//! What the result depends on is fixed by the order: the records below `upto` (the same on
//! every replica, whatever their segment layout), the tombstone passes (every replica records
//! the same ones, and a replica that installs a snapshot takes its source's), the clock, and
//! which batch is each idempotent producer's last among those below the log end at the order.
//! The order is kept in the cleaner checkpoint until the clean completes, so a restart in
//! between runs it all the same.

use super::cleaner::{CHECKPOINT_FILE, PendingClean};
use super::{CleanPlan, CleanerLimits, CleanerState, LogError, PartitionLog, io_err};

impl PartitionLog {
    /// Records a clean ordered by the Raft entry at `index` (an entry applied again after a
    /// restart is recognised and ignored). The segment holding `upto - 1` is closed now, so
    /// everything the clean rewrites is immutable.
    pub fn order_clean(
        &mut self,
        index: u64,
        upto: i64,
        now_ms: i64,
        delete_retention_ms: i64,
    ) -> Result<(), LogError> {
        let known = self.cleaner.done.is_some_and(|d| d.index >= index)
            || self.cleaner.pending.iter().any(|p| p.index >= index);
        if known {
            return Ok(());
        }
        let end = self.log_end_offset();
        let order = PendingClean {
            index,
            upto: upto.min(end),
            now_ms,
            tail_end: end,
            delete_retention_ms,
        };
        self.close_below(order.upto, now_ms)?;
        self.cleaner.pending.push(order);
        self.write_checkpoint()
    }

    /// The oldest ordered clean still to run, as a plan to copy (`None`: nothing ordered, or
    /// the order needed no copy and is recorded done).
    pub fn plan_ordered_clean(
        &mut self,
        limits: CleanerLimits,
    ) -> Result<Option<CleanPlan>, LogError> {
        let Some(order) = self.cleaner.pending.first().copied() else {
            return Ok(None);
        };
        // After a restart the layout may differ from when the order applied.
        self.close_below(order.upto, order.now_ms)?;
        let Some(plan) = self.plan_range(order.upto, order.now_ms, limits) else {
            // Nothing at all below the bound (retention or DeleteRecords took it).
            self.cleaner.pending.remove(0);
            self.cleaner.done = Some(order);
            self.cleaner.first_dirty = self.cleaner.first_dirty.max(order.upto);
            self.write_checkpoint()?;
            return Ok(None);
        };
        Ok(Some(plan.ordered(order)))
    }

    /// The cleaner state a replica installing a snapshot takes from its source: the source's
    /// tombstone passes, and its last completed clean ordered again (cleaning records that are
    /// already clean changes nothing; records this replica held uncleaned get cleaned as the
    /// source's were), then every clean the source still had to run.
    pub fn adopt_cleaner_state(&mut self, source: &CleanerState) -> Result<(), LogError> {
        let mine = self.cleaner.done.map_or(0, |d| d.index);
        let mut pending: Vec<PendingClean> = source
            .done
            .filter(|d| d.index > mine)
            .into_iter()
            .chain(source.pending.iter().copied())
            .collect();
        pending.dedup_by_key(|p| p.index);
        self.cleaner = CleanerState {
            // Everything here counts as dirty: the local records may not be clean.
            first_dirty: self.log_start_offset,
            passes: source.passes.clone(),
            pending,
            done: self.cleaner.done,
        };
        self.write_checkpoint()
    }

    /// Raises the log end to `offset` with no records (a replica copying from a compacted log
    /// whose last records below the copy's end were cleaned away).
    pub fn skip_to(&mut self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        let end = self.log_end_offset();
        if offset <= end {
            return Ok(());
        }
        self.roll_at(offset, now_ms)?;
        if self.high_watermark >= end {
            self.high_watermark = offset; // nothing below it awaits a sync
        }
        Ok(())
    }

    /// Closes the active segment if it holds records below `upto`.
    fn close_below(&mut self, upto: i64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        if active.base_offset < upto && active.size > 0 {
            let end = active.next_offset;
            self.roll_at(end, now_ms)?;
        }
        Ok(())
    }

    fn write_checkpoint(&self) -> Result<(), LogError> {
        self.fs
            .write_file_atomic(
                &format!("{}/{CHECKPOINT_FILE}", self.dir),
                &self.cleaner.encode(),
            )
            .map_err(io_err(&self.dir))
    }
}
