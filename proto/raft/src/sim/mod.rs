//! Deterministic cluster simulator: simulated clock, network and disk, driven only by a seed.
//!
//! One run ([`cluster::run`]) starts 3 or 5 nodes hosting several groups, measures the first
//! election, crashes the metadata leader and measures the re-election, injects random faults
//! (partitions including one-way ones, drops, duplicates, reordering delays, crashes that lose
//! unpersisted writes, slow disks, leadership transfers, log compaction forcing snapshot
//! catch-up), heals everything and requires the cluster to recover within a bound. The
//! [`checker`] verifies Raft's safety properties on every event. Same seed → same history; a
//! failure prints a one-line replay command (see docs/raft.md).

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod idle;
pub mod net;

#[cfg(test)]
mod tests;

pub use cluster::{Outcome, SimConfig, run};

/// Reads a `u64` from the environment (e.g. `SIM_SEEDS`), falling back to `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The one-line command that replays `seed` with full output.
pub fn replay_command(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test -p sluice-raft --release sim_replay -- --nocapture")
}

/// 64-bit FNV-1a (and a faster word-wise mix, [`Fnv::words`]), for history digests and entry
/// fingerprints (stable across runs and builds).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Mixes bytes into the hash.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Mixes a number into the hash.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Mixes bytes into the hash eight at a time (murmur3's 64-bit finalizer over state ^
    /// word), then their length: for long inputs hashed often (the replica simulator hashes
    /// every batch it delivers; a byte at a time was 3 % of its run time). Not the same value
    /// as [`Fnv::bytes`] of the same input.
    pub fn words(&mut self, bytes: &[u8]) -> &mut Self {
        let mut chunks = bytes.chunks_exact(8);
        for w in &mut chunks {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(u64::from_le_bytes(tail));
        self.mix(bytes.len() as u64);
        self
    }

    /// A multiply alone carries a change of the top bit nowhere, so a later word could cancel
    /// it; the shifts feed every bit back into the next multiply.
    fn mix(&mut self, v: u64) {
        let mut x = self.0 ^ v;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.0 = x;
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}
