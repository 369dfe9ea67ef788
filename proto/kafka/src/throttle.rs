//! Replication throttles, Kafka's way: the dynamic broker configs
//! `leader.replication.throttled.rate` and `follower.replication.throttled.rate` (bytes/s) cap
//! the copy traffic of the replicas the topic configs `leader.replication.throttled.replicas` and
//! `follower.replication.throttled.replicas` name (`partition:broker` pairs, or `*`), so that a
//! reassignment does not starve producers (`kafka-reassign-partitions --throttle` sets both).
//!
//! In Sluice the throttled traffic is a replica's catch-up copy (a snapshot install: records
//! fetched from another replica), which the catching-up node paces with a [`Pacer`].

use std::collections::BTreeMap;

/// The broker configs that can be changed at runtime (IncrementalAlterConfigs / AlterConfigs on
/// a broker resource, or the cluster-wide default with an empty resource name).
pub const DYNAMIC_BROKER_CONFIGS: [(&str, &str); 2] = [
    (
        LEADER_RATE,
        "A long representing the upper bound (bytes/sec) on outbound replication traffic for leader replicas enumerated in the property leader.replication.throttled.replicas (for each topic).",
    ),
    (
        FOLLOWER_RATE,
        "A long representing the upper bound (bytes/sec) on inbound replication traffic for follower replicas enumerated in the property follower.replication.throttled.replicas (for each topic).",
    ),
];

/// Bytes/s a node's throttled leader replicas send at most.
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
/// Bytes/s a node's throttled follower replicas receive at most.
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
/// Kafka's default for both rates: no limit.
pub const UNLIMITED: i64 = i64::MAX;

/// Checks one dynamic broker config as Kafka would; the value normalised.
pub fn validate(name: &str, value: &str) -> Result<String, String> {
    if !DYNAMIC_BROKER_CONFIGS.iter().any(|(n, _)| *n == name) {
        return Err(format!(
            "Cannot update these configs dynamically: Set({name}) (dynamic broker configs: {})",
            DYNAMIC_BROKER_CONFIGS.map(|(n, _)| n).join(", ")
        ));
    }
    match value.trim().parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v.to_string()),
        Ok(v) => Err(format!(
            "Invalid value {v} for configuration {name}: Value must be at least 0"
        )),
        Err(_) => Err(format!(
            "Invalid value {value} for configuration {name}: Not a number of type LONG"
        )),
    }
}

/// A rate as configured for `node`: its own setting, else the cluster-wide default (node -1),
/// else unlimited. With where it came from, as DescribeConfigs reports it.
pub fn rate(
    configs: &BTreeMap<i32, BTreeMap<String, String>>,
    node: i32,
    name: &str,
) -> (i64, Source) {
    let parse = |v: &String| v.parse().unwrap_or(UNLIMITED);
    if let Some(v) = configs.get(&node).and_then(|c| c.get(name)) {
        return (parse(v), Source::Node);
    }
    if let Some(v) = configs.get(&-1).and_then(|c| c.get(name)) {
        return (parse(v), Source::ClusterDefault);
    }
    (UNLIMITED, Source::Default)
}

/// Where a dynamic broker config's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set for this broker (Kafka's DYNAMIC_BROKER_CONFIG).
    Node,
    /// Set for every broker (DYNAMIC_DEFAULT_BROKER_CONFIG).
    ClusterDefault,
    /// Not set (DEFAULT_CONFIG).
    Default,
}

impl Source {
    /// Kafka's DescribeConfigs `config_source`.
    pub fn code(self) -> i8 {
        match self {
            Source::Node => 2,
            Source::ClusterDefault => 3,
            Source::Default => 5,
        }
    }
}

/// Whether a `*.replication.throttled.replicas` value names `partition` on `node`.
pub fn names_replica(list: &str, partition: i32, node: i32) -> bool {
    let list = list.trim();
    list == "*"
        || list.split(',').any(|pair| {
            let mut it = pair.trim().split(':');
            matches!(
                (it.next(), it.next(), it.next()),
                (Some(p), Some(b), None)
                    if p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(node)
            )
        })
}

/// Paces a stream of transfers to a rate that may change at any time: a byte debt that drains
/// at the current rate. Transfers add to it; the next one waits while it exceeds a small burst.
/// Pure: the caller passes the time and does the waiting, in short slices, asking again with
/// the rate then in force (so lifting the throttle ends a wait at once).
#[derive(Debug, Default)]
pub struct Pacer {
    /// Bytes transferred and not yet paid for.
    owed: f64,
    /// When `owed` was last drained (ms, the caller's clock).
    at_ms: u64,
}

/// Bytes that move without waiting after an idle spell: a tenth of a second's worth, so one
/// fetch after a pause is not delayed, but a sustained copy is.
const BURST_MS: f64 = 100.0;

impl Pacer {
    fn drain(&mut self, now_ms: u64, rate: i64) {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64;
        self.at_ms = self.at_ms.max(now_ms);
        self.owed = if rate == UNLIMITED {
            0.0
        } else {
            (self.owed - elapsed * rate.max(0) as f64 / 1000.0).max(0.0)
        };
    }

    /// `bytes` were just transferred at `now_ms` under a limit of `rate` bytes/s.
    pub fn transferred(&mut self, now_ms: u64, bytes: u64, rate: i64) {
        self.drain(now_ms, rate);
        if rate != UNLIMITED {
            self.owed += bytes as f64;
        }
    }

    /// How long (ms) the next transfer waits under `rate`; `None` waits for a rate above 0
    /// (Kafka's rate 0 lets nothing through).
    pub fn wait_ms(&mut self, now_ms: u64, rate: i64) -> Option<u64> {
        self.drain(now_ms, rate);
        if rate == UNLIMITED {
            return Some(0);
        }
        if rate <= 0 {
            return if self.owed <= 0.0 { Some(0) } else { None };
        }
        let excess = self.owed - rate as f64 * BURST_MS / 1000.0;
        Some(if excess <= 0.0 {
            0
        } else {
            (excess * 1000.0 / rate as f64).ceil() as u64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated_as_kafka_longs() {
        assert_eq!(validate(LEADER_RATE, " 1000 ").unwrap(), "1000");
        assert!(
            validate(FOLLOWER_RATE, "-1")
                .unwrap_err()
                .contains("at least 0")
        );
        assert!(
            validate(FOLLOWER_RATE, "fast")
                .unwrap_err()
                .contains("LONG")
        );
        assert!(
            validate("log.retention.ms", "1")
                .unwrap_err()
                .contains("Cannot update these configs dynamically")
        );
    }

    #[test]
    fn a_node_setting_beats_the_cluster_default() {
        let mut c = BTreeMap::new();
        assert_eq!(rate(&c, 2, LEADER_RATE), (UNLIMITED, Source::Default));
        c.insert(
            -1,
            BTreeMap::from([(LEADER_RATE.to_string(), "500".into())]),
        );
        assert_eq!(rate(&c, 2, LEADER_RATE), (500, Source::ClusterDefault));
        c.insert(2, BTreeMap::from([(LEADER_RATE.to_string(), "7".into())]));
        assert_eq!(rate(&c, 2, LEADER_RATE), (7, Source::Node));
        assert_eq!(rate(&c, 3, LEADER_RATE), (500, Source::ClusterDefault));
        assert_eq!(rate(&c, 2, FOLLOWER_RATE), (UNLIMITED, Source::Default));
    }

    #[test]
    fn replica_lists_name_partition_broker_pairs_or_all() {
        assert!(names_replica("*", 3, 9));
        assert!(names_replica("0:1, 3:9", 3, 9));
        assert!(!names_replica("0:1,3:8", 3, 9));
        assert!(!names_replica("", 0, 1));
        assert!(!names_replica("3:9:1", 3, 9));
    }

    #[test]
    fn a_sustained_copy_averages_the_rate_after_a_small_burst() {
        let mut p = Pacer::default();
        // 1 MB/s: 100 KB (the burst) passes at once, more waits its share.
        p.transferred(10_000, 100_000, 1_000_000);
        assert_eq!(p.wait_ms(10_000, 1_000_000), Some(0));
        p.transferred(10_000, 100_000, 1_000_000);
        assert_eq!(p.wait_ms(10_000, 1_000_000), Some(100));
        p.transferred(10_000, 4_000_000, 1_000_000);
        assert_eq!(p.wait_ms(10_000, 1_000_000), Some(4100));
        // Half of it paid: half the wait left.
        assert_eq!(p.wait_ms(12_050, 1_000_000), Some(2050));
        // The rate doubles: what is owed drains twice as fast from now on.
        assert_eq!(p.wait_ms(12_050, 2_000_000), Some(975));
        // Lifted: nothing is owed any more.
        assert_eq!(p.wait_ms(12_050, UNLIMITED), Some(0));
        assert_eq!(p.wait_ms(12_060, 1_000_000), Some(0));
        // Rate 0 lets nothing more through, without a giant sleep; raising it resumes.
        p.transferred(20_000, 500_000, 1_000_000);
        assert_eq!(p.wait_ms(20_000, 0), None);
        assert_eq!(p.wait_ms(25_000, 0), None);
        assert_eq!(p.wait_ms(25_000, 1_000_000), Some(400));
    }
}
