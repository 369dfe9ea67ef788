//! Topic configuration: the keys the log honours, their defaults, validation and description.

use std::collections::BTreeMap;

use crate::log::LogConfig;

/// Kafka's config value types, as DescribeConfigs reports them.
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
    /// LIST
    List = 7,
}

/// One supported topic config key.
#[derive(Debug)]
pub struct ConfigKey {
    /// Kafka's name for it.
    pub name: &'static str,
    /// Value type.
    pub kind: ConfigType,
    /// Default value.
    pub default: &'static str,
    /// One line for DescribeConfigs' documentation field.
    pub doc: &'static str,
    min: i64,
    allowed: &'static [&'static str],
}

/// Every topic config Sluice understands; anything else is refused with INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        kind: ConfigType::List,
        default: "delete",
        doc: "Only 'delete' is supported (no compaction yet).",
        min: 0,
        allowed: &["delete"],
    },
    ConfigKey {
        name: "retention.ms",
        kind: ConfigType::Long,
        default: "604800000",
        doc: "Delete closed segments whose newest record is older than this; -1 keeps forever.",
        min: -1,
        allowed: &[],
    },
    ConfigKey {
        name: "retention.bytes",
        kind: ConfigType::Long,
        default: "-1",
        doc: "Delete the oldest closed segments while a partition is larger than this; -1 for no limit.",
        min: -1,
        allowed: &[],
    },
    ConfigKey {
        name: "segment.bytes",
        kind: ConfigType::Int,
        default: "1073741824",
        doc: "Roll to a new segment file past this size.",
        min: 14,
        allowed: &[],
    },
    ConfigKey {
        name: "segment.ms",
        kind: ConfigType::Long,
        default: "604800000",
        doc: "Roll to a new segment file after this time.",
        min: 1,
        allowed: &[],
    },
    ConfigKey {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        default: "1048588",
        doc: "Largest record batch accepted.",
        min: 0,
        allowed: &[],
    },
    ConfigKey {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        default: "4096",
        doc: "Bytes between sparse index entries.",
        min: 0,
        allowed: &[],
    },
    ConfigKey {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        default: "CreateTime",
        doc: "Only CreateTime is supported.",
        min: 0,
        allowed: &["CreateTime"],
    },
    ConfigKey {
        name: "compression.type",
        kind: ConfigType::String,
        default: "producer",
        doc: "Batches are stored as the producer compressed them.",
        min: 0,
        allowed: &["producer"],
    },
    ConfigKey {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        default: "1",
        doc: "Replicas that must have a write for acks=all.",
        min: 1,
        allowed: &[],
    },
];

/// Looks up a key.
pub fn key(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// Checks a value for a key; the error text goes back to the client.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let k = key(name).ok_or_else(|| format!("Unknown or unsupported topic config '{name}'"))?;
    match k.kind {
        ConfigType::Long | ConfigType::Int => {
            let v: i64 = value.trim().parse().map_err(|_| {
                format!("Invalid value {value} for configuration {name}: not a number")
            })?;
            if k.kind == ConfigType::Int && i32::try_from(v).is_err() {
                return Err(format!(
                    "Invalid value {value} for configuration {name}: out of range"
                ));
            }
            if v < k.min {
                return Err(format!(
                    "Invalid value {value} for configuration {name}: must be at least {}",
                    k.min
                ));
            }
        }
        ConfigType::List | ConfigType::String => {
            for part in value.split(',').map(str::trim) {
                if !k.allowed.is_empty() && !k.allowed.contains(&part) {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: supported values are {}",
                        k.allowed.join(", ")
                    ));
                }
            }
        }
        ConfigType::Boolean => {}
    }
    Ok(())
}

/// The effective value: the override, else the default.
pub fn effective<'a>(overrides: &'a BTreeMap<String, String>, k: &'a ConfigKey) -> &'a str {
    overrides
        .get(k.name)
        .map(String::as_str)
        .unwrap_or(k.default)
}

/// Builds the log settings for a topic from its overrides.
pub fn log_config(overrides: &BTreeMap<String, String>) -> LogConfig {
    let num = |name: &str| -> i64 {
        let k = key(name).expect("known key");
        effective(overrides, k)
            .trim()
            .parse()
            .unwrap_or_else(|_| k.default.parse().unwrap())
    };
    LogConfig {
        segment_bytes: num("segment.bytes") as u64,
        segment_ms: num("segment.ms"),
        retention_ms: num("retention.ms"),
        retention_bytes: num("retention.bytes"),
        index_interval_bytes: num("index.interval.bytes") as u64,
        max_message_bytes: num("max.message.bytes") as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("no.such.key", "1").is_err());
    }

    #[test]
    fn overrides_reach_the_log_config() {
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "4096".to_string());
        o.insert("retention.ms".to_string(), "60000".to_string());
        let c = log_config(&o);
        assert_eq!(c.segment_bytes, 4096);
        assert_eq!(c.retention_ms, 60000);
        assert_eq!(c.retention_bytes, -1);
    }
}
