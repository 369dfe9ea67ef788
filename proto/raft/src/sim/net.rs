//! Simulated network: per-batch delay (which also reorders), drop, duplicate, and blocked
//! directed links for partitions, including one-way ones.

use std::collections::BTreeSet;

use crate::rng::Rng;

/// Network behaviour; the simulator changes it during the fault phase.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Minimum one-way delay.
    pub delay_us_min: u64,
    /// Maximum one-way delay (uniform in between; different delays reorder batches).
    pub delay_us_max: u64,
    /// Probability a batch takes a long detour (up to `long_delay_us_max`): heavy reordering.
    pub long_delay_p: f64,
    /// Upper bound of a long detour.
    pub long_delay_us_max: u64,
    /// Probability a batch is lost.
    pub drop_p: f64,
    /// Probability a batch is delivered twice.
    pub dup_p: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            delay_us_min: 200,
            delay_us_max: 3_000,
            long_delay_p: 0.0,
            long_delay_us_max: 200_000,
            drop_p: 0.0,
            dup_p: 0.0,
        }
    }
}

/// The network's state: configuration and blocked links.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Current behaviour.
    pub config: NetConfig,
    /// Directed links `(from, to)` that lose everything.
    pub blocked: BTreeSet<(u64, u64)>,
}

impl Network {
    /// Whether `from` can currently reach `to`.
    pub fn connected(&self, from: u64, to: u64) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// Delivery delays for one batch: empty if lost, two if duplicated.
    pub fn route(&self, rng: &mut Rng, from: u64, to: u64) -> Vec<u64> {
        if !self.connected(from, to) || rng.chance(self.config.drop_p) {
            return Vec::new();
        }
        let copies = if rng.chance(self.config.dup_p) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        let c = &self.config;
        if rng.chance(c.long_delay_p) {
            rng.range(c.delay_us_min, c.long_delay_us_max.max(c.delay_us_min + 1))
        } else {
            rng.range(c.delay_us_min, c.delay_us_max.max(c.delay_us_min + 1))
        }
    }

    /// Cuts every link between the two sides, both directions.
    pub fn partition(&mut self, side_a: &[u64], side_b: &[u64]) {
        for &a in side_a {
            for &b in side_b {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
