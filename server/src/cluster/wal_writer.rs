//! The write-ahead log's own thread: the Raft loop hands it work and goes on ticking, receiving
//! and sending while fsyncs run (raft-rs's asynchronous ready flow allows several persists in
//! flight; they complete in order).
//!
//! Jobs are taken in order. Whatever queued up while the last fsync ran is written together:
//! one write and one fdatasync for several loop passes under load (group commit), one per pass
//! when idle. Applied marks are written here too, so a compaction record never becomes durable
//! before the mark it relies on.

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use sluice_raft::LogStore;
use sluice_raft::eraftpb::Snapshot;
use sluice_replica::PersistBatch;
use tracing::warn;

use super::raft_wal::RaftWal;

/// Work for the writer, executed in order.
#[derive(Debug)]
pub enum WalJob {
    /// Write, sync, then report [`WalDone::Persisted`].
    Persist(PersistBatch),
    /// Open these groups (id, voters) and answer with their logs, in order.
    Open {
        groups: Vec<(u64, Vec<u64>)>,
        reply: async_channel::Sender<io::Result<Vec<LogStore>>>,
    },
    /// A group's log was compacted to this snapshot point.
    Compact { group: u64, snapshot: Snapshot },
    /// A group left this node.
    Remove(u64),
    /// Applied marks (path relative to the data dir, contents), replaced atomically.
    Marks(Vec<(u64, String, Vec<u8>)>),
    /// Rewrite these groups whole (from their in-memory log, or from what was replayed).
    Rewrite(Vec<(u64, Option<LogStore>)>),
}

/// What the writer reports back, in order.
#[derive(Debug)]
pub enum WalDone {
    /// A [`WalJob::Persist`] is durable: its per-group persist numbers and written indexes.
    Persisted {
        done: Vec<(u64, u64)>,
        written: Vec<(u64, u64)>,
    },
    /// Groups that pin the oldest log file: send their logs back with [`WalJob::Rewrite`].
    Cold(Vec<u64>),
}

/// Starts the writer thread on `wal`.
pub fn start(
    wal: RaftWal,
    data_dir: PathBuf,
    node_id: u64,
) -> (
    async_channel::Sender<WalJob>,
    async_channel::Receiver<io::Result<WalDone>>,
    JoinHandle<()>,
) {
    let (job_tx, job_rx) = async_channel::unbounded();
    let (done_tx, done_rx) = async_channel::unbounded();
    let handle = std::thread::Builder::new()
        .name(format!("raft-wal-{node_id}"))
        .spawn(move || {
            if let Err(e) = run(wal, &data_dir, node_id, &job_rx, &done_tx) {
                let _ = done_tx.send_blocking(Err(e));
            }
        })
        .expect("spawn the write-ahead log thread");
    (job_tx, done_rx, handle)
}

fn run(
    mut wal: RaftWal,
    data_dir: &Path,
    node_id: u64,
    jobs: &async_channel::Receiver<WalJob>,
    done: &async_channel::Sender<io::Result<WalDone>>,
) -> io::Result<()> {
    while let Ok(first) = jobs.recv_blocking() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let mut reports = Vec::new();
        let mut sync = false;
        for job in batch {
            match job {
                WalJob::Persist(PersistBatch { persists, written }) => {
                    let (ok, must_sync) = wal.stage_persists(&persists);
                    sync |= must_sync;
                    reports.push(WalDone::Persisted { done: ok, written });
                }
                WalJob::Open { groups, reply } => {
                    let opened: io::Result<Vec<LogStore>> = groups
                        .iter()
                        .map(|(group, voters)| wal.open_group(*group, voters))
                        .collect();
                    let _ = reply.send_blocking(opened);
                }
                WalJob::Compact { group, snapshot } => wal.compact(group, &snapshot),
                WalJob::Remove(group) => wal.remove(group)?,
                WalJob::Marks(marks) => write_marks(data_dir, node_id, &marks),
                WalJob::Rewrite(groups) => {
                    for (group, store) in &groups {
                        wal.rewrite(*group, store.as_ref());
                    }
                    sync = true;
                }
            }
        }
        wal.flush(sync)?;
        for r in reports {
            if done.send_blocking(Ok(r)).is_err() {
                return Ok(());
            }
        }
        let cold = wal.cold_groups();
        if !cold.is_empty() && done.send_blocking(Ok(WalDone::Cold(cold))).is_err() {
            return Ok(());
        }
    }
    // The loop ended: what is staged goes out durably.
    wal.flush(true)
}

/// Records the applied marks of partitions (atomic replace, fsynced).
fn write_marks(data_dir: &Path, node_id: u64, marks: &[(u64, String, Vec<u8>)]) {
    for (group, path, bytes) in marks {
        let full = data_dir.join(path);
        let tmp = full.with_extension("tmp");
        let r = (|| -> io::Result<()> {
            std::fs::write(&tmp, bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &full)?;
            if let Some(dir) = full.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            warn!(node_id, group, path = %full.display(), error = %e, "writing a mark failed");
        }
    }
}
