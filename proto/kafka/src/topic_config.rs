//! Topic configuration as Kafka 4.x has it: every topic config Kafka accepts, with Kafka's types,
//! validators, defaults, broker synonyms and error messages; which of them the log honours; and
//! what DescribeConfigs reports for a topic.
//!
//! Values are validated and normalised (trimmed, lists joined by `,`, booleans lower-case) before
//! they are stored, so what DescribeConfigs shows is what the log uses.

use std::collections::BTreeMap;

use crate::log::{Compression, LogConfig};

/// Kafka's config value types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// BOOLEAN
    Boolean = 1,
    /// STRING
    String = 2,
    /// INT
    Int = 3,
    /// LONG
    Long = 5,
    /// DOUBLE
    Double = 6,
    /// LIST
    List = 7,
}

impl ConfigType {
    fn java_name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "BOOLEAN",
            ConfigType::String => "STRING",
            ConfigType::Int => "INT",
            ConfigType::Long => "LONG",
            ConfigType::Double => "DOUBLE",
            ConfigType::List => "LIST",
        }
    }
}

/// Where a reported value comes from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// A topic override.
    DynamicTopic = 1,
    /// Set by a broker flag.
    StaticBroker = 4,
    /// Kafka's default.
    Default = 5,
}

/// Kafka's validator of a config.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Any value of the type.
    Any,
    /// `Range.atLeast`.
    AtLeast(i64),
    /// `Range.between`.
    Between(i64, i64),
    /// `Range.between` for doubles.
    Fraction,
    /// gzip's level: 1..=9 or -1.
    GzipLevel,
    /// `ValidString.in`.
    OneOf(&'static [&'static str]),
    /// `ValidList.in`.
    ListOf(&'static [&'static str]),
    /// `ThrottledReplicaListValidator`.
    Replicas,
}

/// What Sluice does with a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// The log or broker acts on it.
    Honoured,
    /// Accepted, validated, stored and reported; the reason it changes nothing.
    Stored(&'static str),
}

/// A broker config that supplies a topic config's default (Kafka's synonyms), with Kafka's
/// default for it (`None`: unset by default).
pub type Synonym = (&'static str, Option<&'static str>);

/// One topic config.
#[derive(Debug)]
pub struct ConfigKey {
    /// Kafka's name.
    pub name: &'static str,
    /// Value type.
    pub kind: ConfigType,
    /// Kafka's default value (empty for an empty list); `None` for an internal config without one.
    pub default: Option<&'static str>,
    /// DescribeConfigs' documentation.
    pub doc: &'static str,
    /// Broker configs in Kafka's order of precedence.
    pub synonyms: &'static [Synonym],
    /// Whether Sluice acts on it.
    pub support: Support,
    /// Kafka's internal configs are accepted but never described.
    pub internal: bool,
    check: Check,
}

const LONG_MAX: &str = "9223372036854775807";

const fn key(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    check: Check,
    synonyms: &'static [Synonym],
    support: Support,
    doc: &'static str,
) -> ConfigKey {
    ConfigKey {
        name,
        kind,
        default: Some(default),
        doc,
        synonyms,
        support,
        internal: false,
        check,
    }
}

use Check::*;
use ConfigType::{Boolean, Double, Int, List, Long, String as Str};
use Support::{Honoured, Stored};

const NO_TIERED: Support = Stored("Sluice has no tiered storage");

/// Every topic config Kafka 4.x accepts, by name. Anything else is refused with INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    key(
        "cleanup.policy",
        List,
        "delete",
        ListOf(&["compact", "delete"]),
        &[("log.cleanup.policy", Some("delete"))],
        Honoured,
        "What happens to old segments: 'delete' removes them past retention.ms / retention.bytes; \
         'compact' keeps only the latest record per key in closed segments; 'compact,delete' does \
         both. In a cluster the partition leader orders each clean, and every replica runs it.",
    ),
    key(
        "compression.gzip.level",
        Int,
        "-1",
        GzipLevel,
        &[("compression.gzip.level", Some("-1"))],
        Honoured,
        "Level used when the broker recompresses to gzip (compression.type=gzip); -1 is zlib's default.",
    ),
    key(
        "compression.lz4.level",
        Int,
        "9",
        Between(1, 17),
        &[("compression.lz4.level", Some("9"))],
        Honoured,
        "Level used when the broker recompresses to lz4 (compression.type=lz4).",
    ),
    key(
        "compression.type",
        Str,
        "producer",
        OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        &[("compression.type", Some("producer"))],
        Honoured,
        "Codec batches are stored with: 'producer' keeps each batch as the producer compressed it; \
         any other value makes the broker recompress batches in another codec to this one.",
    ),
    key(
        "compression.zstd.level",
        Int,
        "3",
        Between(-131072, 22),
        &[("compression.zstd.level", Some("3"))],
        Honoured,
        "Level used when the broker recompresses to zstd (compression.type=zstd).",
    ),
    key(
        "delete.retention.ms",
        Long,
        "86400000",
        AtLeast(0),
        &[("log.cleaner.delete.retention.ms", Some("86400000"))],
        Honoured,
        "How long tombstones stay in a compacted topic after the clean that first saw them.",
    ),
    key(
        "file.delete.delay.ms",
        Long,
        "60000",
        AtLeast(0),
        &[("log.segment.delete.delay.ms", Some("60000"))],
        Stored("Sluice removes a deleted segment's file at once"),
        "Delay before a deleted segment's file is removed from the file system.",
    ),
    key(
        "flush.messages",
        Long,
        LONG_MAX,
        AtLeast(1),
        &[("log.flush.interval.messages", Some(LONG_MAX))],
        Honoured,
        "With --durability os, a partition is synced once this many messages were appended since \
         its last sync. With --durability fsync every write is synced before it is acknowledged.",
    ),
    key(
        "flush.ms",
        Long,
        LONG_MAX,
        AtLeast(0),
        &[
            ("log.flush.interval.ms", None),
            ("log.flush.scheduler.interval.ms", Some(LONG_MAX)),
        ],
        Honoured,
        "With --durability os, a partition is synced at most this long after its oldest unsynced \
         write (and every --flush-interval-ms in any case).",
    ),
    key(
        "follower.replication.throttled.replicas",
        List,
        "",
        Replicas,
        &[],
        Stored("Sluice does not throttle replication"),
        "Replicas whose log replication is throttled on the follower side.",
    ),
    key(
        "index.interval.bytes",
        Int,
        "4096",
        AtLeast(0),
        &[("log.index.interval.bytes", Some("4096"))],
        Honoured,
        "Bytes between entries of the sparse offset/time index.",
    ),
    key(
        "leader.replication.throttled.replicas",
        List,
        "",
        Replicas,
        &[],
        Stored("Sluice does not throttle replication"),
        "Replicas whose log replication is throttled on the leader side.",
    ),
    key(
        "local.retention.bytes",
        Long,
        "-2",
        AtLeast(-2),
        &[("log.local.retention.bytes", Some("-2"))],
        NO_TIERED,
        "Local retention by size for tiered storage (-2: retention.bytes).",
    ),
    key(
        "local.retention.ms",
        Long,
        "-2",
        AtLeast(-2),
        &[("log.local.retention.ms", Some("-2"))],
        NO_TIERED,
        "Local retention by time for tiered storage (-2: retention.ms).",
    ),
    key(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        AtLeast(1),
        &[("log.cleaner.max.compaction.lag.ms", Some(LONG_MAX))],
        Honoured,
        "Longest a record stays uncompacted in a compacted topic (its closed segment is cleaned \
         then whatever the dirty ratio).",
    ),
    key(
        "max.message.bytes",
        Int,
        "1048588",
        AtLeast(0),
        &[("message.max.bytes", Some("1048588"))],
        Honoured,
        "Largest record batch accepted (after the broker recompressed it, when it does).",
    ),
    key(
        "message.timestamp.after.max.ms",
        Long,
        "3600000",
        AtLeast(0),
        &[("log.message.timestamp.after.max.ms", Some("3600000"))],
        Honoured,
        "With CreateTime, a batch holding a record timestamp more than this ahead of the broker's \
         clock is refused with INVALID_TIMESTAMP.",
    ),
    key(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        AtLeast(0),
        &[("log.message.timestamp.before.max.ms", Some(LONG_MAX))],
        Honoured,
        "With CreateTime, a batch holding a record timestamp more than this behind the broker's \
         clock is refused with INVALID_TIMESTAMP.",
    ),
    key(
        "message.timestamp.type",
        Str,
        "CreateTime",
        OneOf(&["CreateTime", "LogAppendTime"]),
        &[("log.message.timestamp.type", Some("CreateTime"))],
        Honoured,
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the \
         broker's time when it is appended.",
    ),
    key(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Fraction,
        &[("log.cleaner.min.cleanable.ratio", Some("0.5"))],
        Honoured,
        "Share of a compacted log that must be uncleaned before the cleaner runs.",
    ),
    key(
        "min.compaction.lag.ms",
        Long,
        "0",
        AtLeast(0),
        &[("log.cleaner.min.compaction.lag.ms", Some("0"))],
        Honoured,
        "Shortest time a record stays uncompacted in a compacted topic.",
    ),
    key(
        "min.insync.replicas",
        Int,
        "1",
        AtLeast(1),
        &[("min.insync.replicas", Some("1"))],
        Honoured,
        "acks=all is refused with NOT_ENOUGH_REPLICAS while fewer replicas are in sync.",
    ),
    key(
        "preallocate",
        Boolean,
        "false",
        Any,
        &[("log.preallocate", Some("false"))],
        Stored("Sluice never preallocates segment files"),
        "Preallocate a new segment file on disk.",
    ),
    key(
        "remote.log.copy.disable",
        Boolean,
        "false",
        Any,
        &[],
        NO_TIERED,
        "Stop copying segments to tiered storage.",
    ),
    key(
        "remote.log.delete.on.disable",
        Boolean,
        "false",
        Any,
        &[],
        NO_TIERED,
        "Delete tiered data when tiered storage is turned off for the topic.",
    ),
    key(
        "remote.storage.enable",
        Boolean,
        "false",
        Any,
        &[],
        NO_TIERED,
        "Tiered storage for the topic; Sluice has none, so only false is accepted.",
    ),
    key(
        "retention.bytes",
        Long,
        "-1",
        Any,
        &[("log.retention.bytes", Some("-1"))],
        Honoured,
        "Delete the oldest closed segments while a partition is larger than this; -1: no limit.",
    ),
    key(
        "retention.ms",
        Long,
        "604800000",
        AtLeast(-1),
        &[
            ("log.retention.ms", None),
            ("log.retention.minutes", None),
            ("log.retention.hours", Some("168")),
        ],
        Honoured,
        "Delete closed segments whose newest record is older than this; -1 keeps them forever.",
    ),
    key(
        "segment.bytes",
        Int,
        "1073741824",
        AtLeast(1048576),
        &[("log.segment.bytes", Some("1073741824"))],
        Honoured,
        "Roll to a new segment file past this size.",
    ),
    key(
        "segment.index.bytes",
        Int,
        "10485760",
        AtLeast(4),
        &[("log.index.size.max.bytes", Some("10485760"))],
        Stored("the sparse index is held in memory, one entry per index.interval.bytes"),
        "Size of a segment's offset index file.",
    ),
    key(
        "segment.jitter.ms",
        Long,
        "0",
        AtLeast(0),
        &[
            ("log.roll.jitter.ms", None),
            ("log.roll.jitter.hours", Some("0")),
        ],
        Stored("segments roll without jitter, so replicas keep identical segment files"),
        "Random jitter subtracted from segment.ms when a segment rolls.",
    ),
    key(
        "segment.ms",
        Long,
        "604800000",
        AtLeast(1),
        &[("log.roll.ms", None), ("log.roll.hours", Some("168"))],
        Honoured,
        "Roll to a new segment file after this time.",
    ),
    key(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Any,
        &[("unclean.leader.election.enable", Some("false"))],
        Stored("Raft never elects a leader that lacks committed data"),
        "Allow a replica out of the ISR to become leader.",
    ),
    ConfigKey {
        name: "internal.segment.bytes",
        kind: Int,
        default: None,
        doc: "Segment size overriding segment.bytes below its 1 MiB minimum (Kafka's internal \
              config, for tests).",
        synonyms: &[],
        support: Honoured,
        internal: true,
        check: AtLeast(1),
    },
];

/// Looks a topic config up by name.
pub fn key_of(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// Kafka's message for a refused value.
fn invalid(value: &str, name: &str, why: impl std::fmt::Display) -> String {
    format!("Invalid value {value} for configuration {name}: {why}")
}

/// Items of a LIST value as Kafka splits them (an empty value is an empty list).
pub fn list_items(value: &str) -> Vec<String> {
    let v = value.trim();
    if v.is_empty() {
        return Vec::new();
    }
    v.split(',').map(|s| s.trim().to_string()).collect()
}

/// Checks one value as Kafka would (type, then validator, then what Sluice cannot do) and
/// returns it normalised.
pub fn validate(name: &str, value: &str) -> Result<String, String> {
    let k = key_of(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    let trimmed = value.trim();
    let not_a = || {
        invalid(
            value,
            name,
            format!("Not a number of type {}", k.kind.java_name()),
        )
    };
    let normalised = match k.kind {
        Int | Long => {
            let v: i64 = if k.kind == Int {
                trimmed.parse::<i32>().map_err(|_| not_a())?.into()
            } else {
                trimmed.parse::<i64>().map_err(|_| not_a())?
            };
            match k.check {
                AtLeast(min) if v < min => {
                    return Err(invalid(
                        value,
                        name,
                        format!("Value must be at least {min}"),
                    ));
                }
                Between(min, _) if v < min => {
                    return Err(invalid(
                        value,
                        name,
                        format!("Value must be at least {min}"),
                    ));
                }
                Between(_, max) if v > max => {
                    return Err(invalid(
                        value,
                        name,
                        format!("Value must be no more than {max}"),
                    ));
                }
                GzipLevel if v > 9 || (v < 1 && v != -1) => {
                    return Err(invalid(
                        value,
                        name,
                        "Value must be between 1 and 9 or equal to -1",
                    ));
                }
                _ => {}
            }
            v.to_string()
        }
        Double => {
            let v: f64 = trimmed.parse().map_err(|_| not_a())?;
            if v.is_nan() || v < 0.0 {
                return Err(invalid(value, name, "Value must be at least 0"));
            }
            if v > 1.0 {
                return Err(invalid(value, name, "Value must be no more than 1"));
            }
            if v.fract() == 0.0 {
                format!("{v:.1}")
            } else {
                v.to_string()
            }
        }
        Boolean => {
            if trimmed.eq_ignore_ascii_case("true") {
                "true".into()
            } else if trimmed.eq_ignore_ascii_case("false") {
                "false".into()
            } else {
                return Err(invalid(
                    value,
                    name,
                    "Expected value to be either true or false",
                ));
            }
        }
        Str => {
            if let OneOf(allowed) = k.check
                && !allowed.contains(&trimmed)
            {
                return Err(invalid(
                    value,
                    name,
                    format!("String must be one of: {}", allowed.join(", ")),
                ));
            }
            trimmed.to_string()
        }
        List => {
            let items = list_items(value);
            match k.check {
                ListOf(allowed) => {
                    if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
                        return Err(invalid(
                            bad,
                            name,
                            format!("String must be one of: {}", allowed.join(", ")),
                        ));
                    }
                }
                Replicas => {
                    let pair = |s: &str| {
                        s.is_empty()
                            || s.split_once(':').is_some_and(|(p, b)| {
                                !p.is_empty()
                                    && !b.is_empty()
                                    && p.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                            })
                    };
                    if !(items.iter().all(|i| pair(i)) || items.concat() == "*") {
                        return Err(invalid(
                            value,
                            name,
                            format!(
                                "{name} must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                            ),
                        ));
                    }
                }
                _ => {}
            }
            items.join(",")
        }
    };
    unsupported(name, &normalised).map(|()| normalised)
}

/// Values Kafka accepts that Sluice cannot honour.
fn unsupported(name: &str, value: &str) -> Result<(), String> {
    match name {
        "cleanup.policy" if value.is_empty() => Err(invalid(
            value,
            name,
            "Sluice needs at least one cleanup.policy: delete, compact or both",
        )),
        "remote.storage.enable" if value == "true" => Err(
            "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage."
                .into(),
        ),
        _ => Ok(()),
    }
}

/// Validates a topic's complete set of overrides (CreateTopics, or the result of an alter):
/// every value, then the rules between configs. Returns them normalised.
pub fn validate_all(
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in overrides {
        out.insert(k.clone(), validate(k, v)?);
    }
    let min_lag = number(&out, "min.compaction.lag.ms");
    let max_lag = number(&out, "max.compaction.lag.ms");
    if min_lag > max_lag {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        ));
    }
    Ok(out)
}

/// Whether these overrides make the topic compacted (`cleanup.policy` holds `compact`).
pub fn is_compacted(overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("cleanup.policy")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
}

/// The effective value: the override, else Kafka's default (`None`: unset internal config).
pub fn effective<'a>(overrides: &'a BTreeMap<String, String>, k: &'a ConfigKey) -> Option<&'a str> {
    overrides.get(k.name).map(String::as_str).or(k.default)
}

fn number(overrides: &BTreeMap<String, String>, name: &str) -> i64 {
    let k = key_of(name).expect("known key");
    effective(overrides, k)
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| k.default.and_then(|d| d.parse().ok()))
        .unwrap_or(0)
}

/// Builds the log settings for a topic from its overrides.
pub fn log_config(overrides: &BTreeMap<String, String>) -> LogConfig {
    let num = |name: &str| number(overrides, name);
    let text = |name: &str| effective(overrides, key_of(name).expect("known key")).unwrap_or("");
    let compression = match text("compression.type") {
        "uncompressed" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    };
    let segment_bytes = match overrides.get("internal.segment.bytes") {
        Some(v) => v.trim().parse().unwrap_or(1 << 30),
        None => num("segment.bytes"),
    };
    LogConfig {
        segment_bytes: segment_bytes.max(1) as u64,
        segment_ms: num("segment.ms"),
        retention_ms: num("retention.ms"),
        retention_bytes: num("retention.bytes"),
        index_interval_bytes: num("index.interval.bytes").max(0) as u64,
        max_message_bytes: num("max.message.bytes").max(0) as usize,
        compression,
        gzip_level: num("compression.gzip.level") as i32,
        lz4_level: num("compression.lz4.level") as i32,
        zstd_level: num("compression.zstd.level") as i32,
        log_append_time: text("message.timestamp.type") == "LogAppendTime",
        timestamp_before_max_ms: num("message.timestamp.before.max.ms"),
        timestamp_after_max_ms: num("message.timestamp.after.max.ms"),
        flush_messages: num("flush.messages"),
        flush_ms: num("flush.ms"),
        compact: is_compacted(overrides),
        delete: text("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "delete"),
        delete_retention_ms: num("delete.retention.ms"),
        min_compaction_lag_ms: num("min.compaction.lag.ms"),
        max_compaction_lag_ms: num("max.compaction.lag.ms"),
        min_cleanable_dirty_ratio: effective(
            overrides,
            key_of("min.cleanable.dirty.ratio").expect("known key"),
        )
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.5),
    }
}

/// Broker settings that stand in for Kafka's broker configs in DescribeConfigs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerDefaults {
    /// `--durability fsync`: every write is synced before it is acknowledged, which is Kafka's
    /// `log.flush.interval.messages=1`.
    pub sync_writes: bool,
    /// `--durability os`: the period of the background sync, Kafka's `log.flush.interval.ms`.
    pub flush_interval_ms: Option<i64>,
}

impl BrokerDefaults {
    /// The value a broker flag gives broker config `name`, if any.
    fn static_value(&self, name: &str) -> Option<String> {
        match name {
            "log.flush.interval.messages" if self.sync_writes => Some("1".into()),
            "log.flush.interval.ms" if !self.sync_writes => {
                self.flush_interval_ms.map(|v| v.to_string())
            }
            _ => None,
        }
    }
}

/// One config as DescribeConfigs reports it.
#[derive(Debug, Clone)]
pub struct Described {
    /// Config name.
    pub name: &'static str,
    /// Effective value.
    pub value: String,
    /// Where it comes from.
    pub source: ConfigSource,
    /// The topic override (if any) then the broker configs that would supply it, each with a
    /// value: (name, value, source).
    pub synonyms: Vec<(String, String, ConfigSource)>,
    /// The key.
    pub key: &'static ConfigKey,
}

/// Every (non-internal) topic config of a topic with these overrides, in name order.
pub fn describe(overrides: &BTreeMap<String, String>, broker: &BrokerDefaults) -> Vec<Described> {
    TOPIC_CONFIGS
        .iter()
        .filter(|k| !k.internal)
        .map(|k| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(k.name) {
                synonyms.push((k.name.to_string(), v.clone(), ConfigSource::DynamicTopic));
            }
            for (name, default) in k.synonyms {
                if let Some(v) = broker.static_value(name) {
                    synonyms.push((name.to_string(), v, ConfigSource::StaticBroker));
                }
                if let Some(d) = default {
                    synonyms.push((name.to_string(), d.to_string(), ConfigSource::Default));
                }
            }
            let (value, source) = match overrides.get(k.name) {
                Some(v) => (v.clone(), ConfigSource::DynamicTopic),
                None => match synonyms.first() {
                    Some((_, v, ConfigSource::StaticBroker)) => {
                        (v.clone(), ConfigSource::StaticBroker)
                    }
                    _ => (k.default.unwrap_or("").to_string(), ConfigSource::Default),
                },
            };
            Described {
                name: k.name,
                value,
                source,
                synonyms,
                key: k,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_kafka_4_topic_config_is_known_and_its_default_validates() {
        let public: Vec<&str> = TOPIC_CONFIGS
            .iter()
            .filter(|k| !k.internal)
            .map(|k| k.name)
            .collect();
        assert_eq!(public.len(), 33, "{public:?}");
        let mut sorted = public.clone();
        sorted.sort_unstable();
        assert_eq!(public, sorted, "kept in name order");
        for k in TOPIC_CONFIGS.iter().filter(|k| !k.internal) {
            let d = k.default.unwrap();
            assert_eq!(validate(k.name, d).as_deref(), Ok(d), "{}", k.name);
        }
    }

    #[test]
    fn values_are_checked_like_kafka_with_kafka_messages() {
        let err = |k: &str, v: &str| validate(k, v).unwrap_err();
        assert_eq!(
            err("segment.bytes", "1000"),
            "Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576"
        );
        assert_eq!(
            err("segment.bytes", "99999999999"),
            "Invalid value 99999999999 for configuration segment.bytes: Not a number of type INT"
        );
        assert_eq!(
            err("retention.ms", "abc"),
            "Invalid value abc for configuration retention.ms: Not a number of type LONG"
        );
        assert!(err("retention.ms", "-2").contains("Value must be at least -1"));
        assert_eq!(
            err("compression.type", "brotli"),
            "Invalid value brotli for configuration compression.type: String must be one of: \
             uncompressed, zstd, lz4, snappy, gzip, producer"
        );
        assert!(err("message.timestamp.type", "createtime").contains("CreateTime, LogAppendTime"));
        assert!(err("min.insync.replicas", "0").contains("at least 1"));
        assert!(err("compression.zstd.level", "23").contains("no more than 22"));
        assert!(err("compression.lz4.level", "0").contains("at least 1"));
        assert!(err("compression.gzip.level", "0").contains("between 1 and 9 or equal to -1"));
        assert!(err("preallocate", "yes").contains("either true or false"));
        assert!(err("min.cleanable.dirty.ratio", "1.5").contains("no more than 1"));
        assert!(err("leader.replication.throttled.replicas", "1:x").contains("[partitionId]"));
        assert_eq!(
            err("dummy.doesntexist", "1"),
            "Unknown topic config name: dummy.doesntexist"
        );
        // Sluice's own limits.
        assert!(err("cleanup.policy", "").contains("at least one cleanup.policy"));
        assert!(err("cleanup.policy", "bogus").contains("String must be one of: compact, delete"));
        assert!(err("remote.storage.enable", "true").contains("Tiered Storage"));
    }

    #[test]
    fn accepted_values_are_normalised() {
        let ok = |k: &str, v: &str| validate(k, v).unwrap();
        assert_eq!(ok("retention.ms", " 1000 "), "1000");
        assert_eq!(ok("retention.ms", "-1"), "-1");
        assert_eq!(ok("retention.bytes", "-5"), "-5");
        assert_eq!(ok("preallocate", "TRUE"), "true");
        assert_eq!(ok("cleanup.policy", " delete "), "delete");
        assert_eq!(ok("cleanup.policy", "compact"), "compact");
        assert_eq!(ok("cleanup.policy", "compact, delete"), "compact,delete");
        assert_eq!(ok("min.cleanable.dirty.ratio", "1"), "1.0");
        assert_eq!(ok("min.cleanable.dirty.ratio", "0.25"), "0.25");
        assert_eq!(ok("compression.gzip.level", "-1"), "-1");
        assert_eq!(ok("compression.zstd.level", "-5"), "-5");
        assert_eq!(
            ok("leader.replication.throttled.replicas", "0:1, 1:2"),
            "0:1,1:2"
        );
        assert_eq!(ok("follower.replication.throttled.replicas", "*"), "*");
        assert_eq!(ok("follower.replication.throttled.replicas", ""), "");
        assert_eq!(ok("internal.segment.bytes", "2000"), "2000");
    }

    #[test]
    fn rules_between_configs() {
        let e = validate_all(&map(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5"),
        ]))
        .unwrap_err();
        assert_eq!(
            e,
            "conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"
        );
        assert!(validate_all(&map(&[("max.compaction.lag.ms", "5")])).is_ok());
    }

    #[test]
    fn overrides_reach_the_log_config() {
        let c = log_config(&map(&[
            ("segment.bytes", "2097152"),
            ("retention.ms", "60000"),
            ("compression.type", "zstd"),
            ("compression.zstd.level", "7"),
            ("message.timestamp.type", "LogAppendTime"),
            ("flush.messages", "10"),
        ]));
        assert_eq!(c.segment_bytes, 2097152);
        assert_eq!(c.retention_ms, 60000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.compression, Some(Compression::Zstd));
        assert_eq!(c.zstd_level, 7);
        assert!(c.log_append_time);
        assert_eq!(c.flush_messages, 10);
        assert_eq!(c.flush_ms, i64::MAX);
        assert_eq!(c.timestamp_after_max_ms, 3_600_000);
        assert_eq!(c.timestamp_before_max_ms, i64::MAX);
        let d = log_config(&BTreeMap::new());
        assert_eq!(d, LogConfig::default());
        let small = log_config(&map(&[("internal.segment.bytes", "2000")]));
        assert_eq!(small.segment_bytes, 2000);
    }

    #[test]
    fn describe_reports_sources_and_synonyms_like_kafka() {
        let fsync = BrokerDefaults {
            sync_writes: true,
            flush_interval_ms: None,
        };
        let d = describe(&map(&[("retention.ms", "1000")]), &fsync);
        assert_eq!(d.len(), 33);
        assert!(d.iter().all(|x| x.name != "internal.segment.bytes"));
        let get = |d: &[Described], n: &str| d.iter().find(|x| x.name == n).unwrap().clone();
        let r = get(&d, "retention.ms");
        assert_eq!(
            (r.value.as_str(), r.source),
            ("1000", ConfigSource::DynamicTopic)
        );
        assert_eq!(
            r.synonyms,
            vec![
                (
                    "retention.ms".into(),
                    "1000".into(),
                    ConfigSource::DynamicTopic
                ),
                (
                    "log.retention.hours".into(),
                    "168".into(),
                    ConfigSource::Default
                ),
            ]
        );
        let m = get(&d, "max.message.bytes");
        assert_eq!(
            (m.value.as_str(), m.source),
            ("1048588", ConfigSource::Default)
        );
        assert_eq!(
            m.synonyms,
            vec![(
                "message.max.bytes".into(),
                "1048588".into(),
                ConfigSource::Default
            )]
        );
        // --durability fsync is Kafka's log.flush.interval.messages=1.
        let f = get(&d, "flush.messages");
        assert_eq!(
            (f.value.as_str(), f.source),
            ("1", ConfigSource::StaticBroker)
        );
        assert_eq!(
            f.synonyms[0],
            (
                "log.flush.interval.messages".into(),
                "1".into(),
                ConfigSource::StaticBroker
            )
        );
        assert_eq!(get(&d, "flush.ms").source, ConfigSource::Default);
        assert!(get(&d, "remote.storage.enable").synonyms.is_empty());
        // --durability os: --flush-interval-ms is log.flush.interval.ms.
        let os = BrokerDefaults {
            sync_writes: false,
            flush_interval_ms: Some(1000),
        };
        let d = describe(&BTreeMap::new(), &os);
        let f = get(&d, "flush.ms");
        assert_eq!(
            (f.value.as_str(), f.source),
            ("1000", ConfigSource::StaticBroker)
        );
        assert_eq!(
            f.synonyms,
            vec![
                (
                    "log.flush.interval.ms".into(),
                    "1000".into(),
                    ConfigSource::StaticBroker
                ),
                (
                    "log.flush.scheduler.interval.ms".into(),
                    LONG_MAX.into(),
                    ConfigSource::Default
                ),
            ]
        );
        assert_eq!(get(&d, "flush.messages").source, ConfigSource::Default);
    }
}
