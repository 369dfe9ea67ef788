//! The aborted-transaction index on disk, as Kafka's `.txnindex` files: read_committed fetches
//! learn which records to skip without scanning the log, and a partition's memory and producer
//! snapshot hold only its recent aborts however many the log retains.
//!
//! The producer state table keeps the newest aborted transactions in marker order. Once it
//! holds [`SPILL_ENTRIES`] whose markers are synced to disk, the oldest go to a file of their own,
//! `logs/<topic>-<partition>/<first marker offset>.txnindex` (`[crc32c][count][entries]`,
//! written atomically), and the snapshot written next leaves them out. Files are cut by marker
//! offset rather than by segment, so the cleaner's swap of merged segments never has to carry
//! them; retention deletes a file once its last marker is before the log start, and a clean
//! that removes markers rewrites the files holding them.
//!
//! A crash between a file and the snapshot that leaves its entries out is harmless: at load the
//! table forgets the entries a file already holds, and a fetch reports each transaction once.
//! Only synced markers are filed, so no crash can leave a file describing records the log lost;
//! a file that does (its last marker past the log end) is refused. A rebuild from the whole
//! log (no snapshot to trust) deletes the files first and spills afresh.

use std::io;

use sluice_coordinator::AbortedTxn;
use tracing::warn;

use super::{Broker, partition_dir};

/// Aborted transactions a partition's table holds before the oldest go to a file.
pub(super) const SPILL_ENTRIES: usize = 1000;

const SUFFIX: &str = ".txnindex";
const ENTRY_BYTES: usize = 24;

/// What memory keeps of one file: enough to know whether a fetch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexFile {
    /// Offset of its first marker (the file's name).
    first_marker: i64,
    /// Offset of its last marker.
    last_marker: i64,
    /// Smallest first offset of its transactions.
    min_first: i64,
}

fn file_path(topic: &str, partition: i32, first_marker: i64) -> String {
    format!(
        "{}/{first_marker:020}{SUFFIX}",
        partition_dir(topic, partition)
    )
}

fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + entries.len() * ENTRY_BYTES);
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for a in entries {
        body.extend_from_slice(&a.producer_id.to_be_bytes());
        body.extend_from_slice(&a.first_offset.to_be_bytes());
        body.extend_from_slice(&a.last_offset.to_be_bytes());
    }
    let mut out = crc32c::crc32c(&body).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn decode(raw: &[u8]) -> Option<Vec<AbortedTxn>> {
    let crc = u32::from_be_bytes(raw.get(0..4)?.try_into().ok()?);
    let body = raw.get(4..)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let count = u32::from_be_bytes(body.get(0..4)?.try_into().ok()?) as usize;
    let entries = body.get(4..)?;
    if entries.len() != count.checked_mul(ENTRY_BYTES)? {
        return None;
    }
    let i64_at = |b: &[u8], at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    Some(
        entries
            .chunks_exact(ENTRY_BYTES)
            .map(|e| AbortedTxn {
                producer_id: i64_at(e, 0),
                first_offset: i64_at(e, 8),
                last_offset: i64_at(e, 16),
            })
            .collect(),
    )
}

fn summary(entries: &[AbortedTxn]) -> Option<IndexFile> {
    Some(IndexFile {
        first_marker: entries.first()?.last_offset,
        last_marker: entries.last()?.last_offset,
        min_first: entries.iter().map(|a| a.first_offset).min()?,
    })
}

fn corrupt(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("aborted-transaction index {path} is corrupt"),
    )
}

impl Broker {
    /// Reads a partition's index files (`Err`: one is unreadable, so the caller rebuilds from
    /// the log).
    pub(super) fn load_aborted_files(&mut self, topic: &str, partition: i32) -> io::Result<()> {
        let dir = partition_dir(topic, partition);
        let end = self
            .partition(topic, partition)
            .map_or(0, |l| l.log_end_offset());
        let mut files = Vec::new();
        for name in self.fs.list_dir(&dir)? {
            if !name.ends_with(SUFFIX) {
                continue;
            }
            let path = format!("{dir}/{name}");
            let named = name.trim_end_matches(SUFFIX).parse::<i64>();
            let raw = self.fs.read_file(&path)?.unwrap_or_default();
            let entries = decode(&raw).ok_or_else(|| corrupt(&path))?;
            match (summary(&entries), named) {
                (Some(f), _) if f.last_marker >= end => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "aborted-transaction index {path} lists a marker at {} beyond the log end {end}",
                            f.last_marker
                        ),
                    ));
                }
                // The name says where the file starts (a rewrite may have dropped its first).
                (Some(f), Ok(first_marker)) => files.push(IndexFile { first_marker, ..f }),
                (None, _) => self.fs.remove_file(&path)?,
                (Some(_), Err(_)) => return Err(corrupt(&path)),
            }
        }
        files.sort_by_key(|f| f.first_marker);
        self.aborted_files
            .insert((topic.to_string(), partition), files);
        Ok(())
    }

    /// Deletes a partition's index files (its table is about to be rebuilt from the log).
    pub(super) fn delete_aborted_files(&mut self, topic: &str, partition: i32) {
        let dir = partition_dir(topic, partition);
        if let Ok(names) = self.fs.list_dir(&dir) {
            for name in names.iter().filter(|n| n.ends_with(SUFFIX)) {
                if let Err(e) = self.fs.remove_file(&format!("{dir}/{name}")) {
                    warn!(node_id = self.config.node_id, topic, partition, error = %e, "deleting an aborted-transaction index failed");
                }
            }
        }
        self.aborted_files.remove(&(topic.to_string(), partition));
    }

    /// Aborted transactions of the files that may have records in `[from, to)`.
    pub(super) fn filed_aborted_between(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> io::Result<Vec<AbortedTxn>> {
        let mut out = Vec::new();
        let Some(files) = self.aborted_files.get(&(topic.to_string(), partition)) else {
            return Ok(out);
        };
        for f in files
            .iter()
            .filter(|f| f.last_marker >= from && f.min_first < to)
        {
            let path = file_path(topic, partition, f.first_marker);
            let raw = self.fs.read_file(&path)?.unwrap_or_default();
            let entries = decode(&raw).ok_or_else(|| corrupt(&path))?;
            out.extend(
                entries
                    .into_iter()
                    .filter(|a| a.last_offset >= from && a.first_offset < to),
            );
        }
        Ok(out)
    }

    /// Moves the oldest synced aborted transactions of every partition holding at least
    /// `self.aborted_spill` of them into a file; returns the partitions whose table changed
    /// (their snapshot must be written again).
    pub(super) fn spill_aborted(&mut self) -> Vec<(String, i32)> {
        let mut changed = Vec::new();
        let due: Vec<((String, i32), i64)> = self
            .producers
            .iter()
            .filter(|(_, t)| t.aborted_len() >= self.aborted_spill)
            .filter_map(|(key, _)| {
                let log = self.topics.get(&key.0)?.partitions.get(key.1 as usize)?;
                // Without fsync-before-ack the high watermark runs ahead of the disk.
                Some((key.clone(), log.high_watermark().min(log.synced_end())))
            })
            .collect();
        for ((topic, partition), synced) in due {
            let key = (topic.clone(), partition);
            let Some(table) = self.producers.get(&key) else {
                continue;
            };
            let mut entries: Vec<AbortedTxn> = table
                .aborted()
                .take_while(|a| a.last_offset < synced)
                .copied()
                .collect();
            let Some(last_marker) = entries.last().map(|a| a.last_offset) else {
                continue;
            };
            let first_marker = entries[0].last_offset;
            let path = file_path(&topic, partition, first_marker);
            // A file of that name already (its entries were filed before a crash): join it.
            let existing = self
                .aborted_files
                .get(&key)
                .is_some_and(|fs| fs.iter().any(|f| f.first_marker == first_marker));
            if existing {
                match self.fs.read_file(&path).map(|r| r.and_then(|r| decode(&r))) {
                    Ok(Some(old)) => {
                        entries.extend(old);
                        entries.sort_by_key(|a| (a.last_offset, a.producer_id));
                        entries.dedup();
                    }
                    _ => continue,
                }
            }
            let Some(file) = summary(&entries) else {
                continue;
            };
            if let Err(e) = self.fs.write_file_atomic(&path, &encode(&entries)) {
                warn!(node_id = self.config.node_id, topic = %topic, partition, error = %e, "writing an aborted-transaction index failed");
                continue;
            }
            if let Some(t) = self.producers.get_mut(&key) {
                t.drop_aborted_through(last_marker);
            }
            let files = self.aborted_files.entry(key.clone()).or_default();
            files.retain(|f| f.first_marker != first_marker);
            files.push(IndexFile {
                first_marker,
                ..file
            });
            files.sort_by_key(|f| f.first_marker);
            changed.push(key);
        }
        changed
    }

    /// Deletes the files whose every marker is before the log start.
    pub(super) fn trim_aborted_files(&mut self) {
        let mut gone = Vec::new();
        for ((topic, partition), files) in &mut self.aborted_files {
            let Some(start) = self
                .topics
                .get(topic)
                .and_then(|t| t.partitions.get(*partition as usize))
                .map(|l| l.log_start_offset())
            else {
                continue;
            };
            files.retain(|f| {
                let keep = f.last_marker >= start;
                if !keep {
                    gone.push(file_path(topic, *partition, f.first_marker));
                }
                keep
            });
        }
        for path in gone {
            if let Err(e) = self.fs.remove_file(&path) {
                warn!(node_id = self.config.node_id, path = %path, error = %e, "deleting an aborted-transaction index failed");
            }
        }
    }

    /// Forgets the aborted transactions whose markers, (producer id, offset), the cleaner
    /// removed, in the files that hold them.
    pub(super) fn forget_filed_aborted(
        &mut self,
        topic: &str,
        partition: i32,
        removed: &[(i64, i64)],
    ) -> io::Result<()> {
        let key = (topic.to_string(), partition);
        let Some(files) = self.aborted_files.get(&key).cloned() else {
            return Ok(());
        };
        let mut kept_files = Vec::new();
        let mut failed = None;
        for f in files {
            let touched = removed
                .iter()
                .any(|(_, m)| (f.first_marker..=f.last_marker).contains(m));
            if !touched || failed.is_some() {
                kept_files.push(f);
                continue;
            }
            // A failed step leaves the file as it was (writes are atomic), so it stays listed.
            match self.rewrite_without(topic, partition, &f, removed) {
                Ok(Some(rewritten)) => kept_files.push(rewritten),
                Ok(None) => {}
                Err(e) => {
                    kept_files.push(f);
                    failed = Some(e);
                }
            }
        }
        self.aborted_files.insert(key, kept_files);
        failed.map_or(Ok(()), Err)
    }

    /// One file without the `removed` markers (`None`: nothing left, the file is gone).
    fn rewrite_without(
        &self,
        topic: &str,
        partition: i32,
        f: &IndexFile,
        removed: &[(i64, i64)],
    ) -> io::Result<Option<IndexFile>> {
        let path = file_path(topic, partition, f.first_marker);
        let raw = self.fs.read_file(&path)?.unwrap_or_default();
        let entries: Vec<AbortedTxn> = decode(&raw)
            .ok_or_else(|| corrupt(&path))?
            .into_iter()
            .filter(|a| !removed.contains(&(a.producer_id, a.last_offset)))
            .collect();
        match summary(&entries) {
            // Keeps its name: a file's name is where it starts, not its first entry.
            Some(s) => {
                self.fs.write_file_atomic(&path, &encode(&entries))?;
                Ok(Some(IndexFile {
                    first_marker: f.first_marker,
                    ..s
                }))
            }
            None => {
                self.fs.remove_file(&path)?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_damage_is_caught() {
        let entries = vec![
            AbortedTxn {
                producer_id: 7,
                first_offset: 0,
                last_offset: 3,
            },
            AbortedTxn {
                producer_id: 8,
                first_offset: 1,
                last_offset: 9,
            },
        ];
        let raw = encode(&entries);
        assert_eq!(decode(&raw), Some(entries.clone()));
        assert_eq!(
            summary(&entries),
            Some(IndexFile {
                first_marker: 3,
                last_marker: 9,
                min_first: 0
            })
        );
        let mut bad = raw.clone();
        bad[10] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&raw[..raw.len() - 1]), None);
    }
}
