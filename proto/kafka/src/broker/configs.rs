//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only view of
//! the broker's own settings).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use tracing::info;

use super::cluster::ConfigTarget;
use super::{Broker, str};
use crate::throttle;
use crate::topic_config::{self, BrokerDefaults, ConfigType};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;

type ConfigError = (ResponseError, Option<String>);

/// One dynamic broker config as DescribeConfigs reports it.
fn dynamic_entry(
    (name, doc): (&str, &str),
    value: &str,
    source: throttle::Source,
    version: i16,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default()
        .with_name(str(name))
        .with_value(Some(str(value)))
        .with_read_only(false)
        .with_config_source(source.code());
    if version >= 3 {
        c.config_type = ConfigType::Long as i8;
        if documentation {
            c.documentation = Some(str(doc));
        }
    }
    c
}

fn invalid_config(m: String) -> ConfigError {
    (ResponseError::InvalidConfig, Some(m))
}

impl Broker {
    /// The broker flags that stand in for Kafka broker configs in DescribeConfigs.
    pub(super) fn broker_defaults(&self) -> BrokerDefaults {
        BrokerDefaults {
            sync_writes: self.config.sync_writes,
            flush_interval_ms: self.config.flush_interval_ms,
        }
    }

    /// A topic's configs as DescribeConfigs (and CreateTopics v5+) report them.
    pub(super) fn describe_topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
        wanted: impl Fn(&str) -> bool,
        synonyms: bool,
        documentation: bool,
        version: i16,
    ) -> Vec<DescribeConfigsResourceResult> {
        topic_config::describe(overrides, &self.broker_defaults())
            .into_iter()
            .filter(|d| wanted(d.name))
            .map(|d| {
                let mut c = DescribeConfigsResourceResult::default()
                    .with_name(str(d.name))
                    .with_value(Some(str(&d.value)))
                    .with_read_only(false)
                    .with_config_source(d.source as i8)
                    .with_is_sensitive(false);
                if synonyms {
                    c.synonyms = d
                        .synonyms
                        .iter()
                        .map(|(n, v, s)| {
                            DescribeConfigsSynonym::default()
                                .with_name(str(n))
                                .with_value(Some(str(v)))
                                .with_source(*s as i8)
                        })
                        .collect();
                }
                if version >= 3 {
                    c.config_type = d.key.kind as i8;
                    if documentation {
                        c.documentation = Some(str(d.key.doc));
                    }
                }
                c
            })
            .collect()
    }

    pub(super) fn describe_configs(
        &self,
        req: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let mut response = DescribeConfigsResponse::default();
        for res in req.resources {
            let keys: Option<Vec<String>> = res
                .configuration_keys
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match res.resource_type {
                RESOURCE_TOPIC => match self.topics.get(res.resource_name.as_str()) {
                    None => {
                        result.error_code = ResponseError::UnknownTopicOrPartition.code();
                        result.error_message = Some(str(&format!(
                            "Topic '{}' does not exist",
                            res.resource_name.as_str()
                        )));
                    }
                    Some(t) => {
                        result.configs = self.describe_topic_configs(
                            &t.configs,
                            wanted,
                            req.include_synonyms,
                            req.include_documentation,
                            version,
                        );
                    }
                },
                RESOURCE_BROKER if res.resource_name.is_empty() && self.cluster.is_some() => {
                    // The cluster-wide defaults (`kafka-configs --entity-default`): only what
                    // is set there, as Kafka answers.
                    let defaults = self.dynamic_broker_configs(-1);
                    for (name, doc) in throttle::DYNAMIC_BROKER_CONFIGS {
                        let Some(value) = defaults.get(name).filter(|_| wanted(name)) else {
                            continue;
                        };
                        result.configs.push(dynamic_entry(
                            (name, doc),
                            value,
                            throttle::Source::ClusterDefault,
                            version,
                            req.include_documentation,
                        ));
                    }
                }
                RESOURCE_BROKER => {
                    let node = self.config.node_id.to_string();
                    if !res.resource_name.is_empty() && res.resource_name.as_str() != node {
                        result.error_code = ResponseError::InvalidRequest.code();
                        result.error_message = Some(str(&format!("this is broker {node}")));
                    } else {
                        for (name, value) in self.broker_configs() {
                            if wanted(&name) {
                                let mut c = DescribeConfigsResourceResult::default()
                                    .with_name(str(&name))
                                    .with_value(Some(str(&value)))
                                    .with_read_only(true)
                                    .with_config_source(SOURCE_STATIC_BROKER);
                                if version >= 3 {
                                    c.config_type = ConfigType::String as i8;
                                }
                                result.configs.push(c);
                            }
                        }
                        if let Some(cl) = &self.cluster {
                            for (name, doc) in throttle::DYNAMIC_BROKER_CONFIGS {
                                if !wanted(name) {
                                    continue;
                                }
                                let (value, source) =
                                    throttle::rate(&cl.meta.broker_configs, cl.node_id, name);
                                result.configs.push(dynamic_entry(
                                    (name, doc),
                                    &value.to_string(),
                                    source,
                                    version,
                                    req.include_documentation,
                                ));
                            }
                        }
                    }
                }
                _ => {
                    result.error_code = ResponseError::InvalidRequest.code();
                    result.error_message =
                        Some(str("only topic and broker resources are supported"));
                }
            }
            response.results.push(result);
        }
        response
    }

    fn broker_configs(&self) -> Vec<(String, String)> {
        vec![
            ("broker.id".into(), self.config.node_id.to_string()),
            (
                "num.partitions".into(),
                self.config.default_partitions.to_string(),
            ),
            (
                "auto.create.topics.enable".into(),
                self.config.auto_create_topics.to_string(),
            ),
            ("log.dirs".into(), self.fs.describe()),
            (
                "sluice.sync.writes".into(),
                self.config.sync_writes.to_string(),
            ),
            // Kafka has no API for a broker's software version; `sluice cluster status` reads it here.
            ("sluice.version".into(), env!("CARGO_PKG_VERSION").into()),
        ]
    }

    /// Validates a topic's complete new overrides and installs them, updating its logs.
    fn set_topic_configs(
        &mut self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ConfigError> {
        if !self.topics.contains_key(name) {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                Some(format!("Topic '{name}' does not exist")),
            ));
        }
        let configs = topic_config::validate_all(&configs).map_err(invalid_config)?;
        // An internal topic's records are its coordinator's state (committed offsets,
        // transactions, and on a standalone broker the producer-id blocks): retention must
        // never delete them. Kafka lets this through; losing producer-id blocks would hand
        // ids out again, so Sluice does not.
        if super::is_internal(name)
            && configs.get("cleanup.policy").map(|p| p.trim()) != Some("compact")
        {
            return Err(invalid_config(format!(
                "cleanup.policy of internal topic {name} must stay compact: its records are its coordinator's state"
            )));
        }
        if validate_only {
            return Ok(());
        }
        if let Some(c) = &mut self.cluster {
            // Cluster mode: the change goes through `__meta` (see `alter_configs_cluster`).
            c.pending_configs
                .push((ConfigTarget::Topic(name.to_string()), configs));
            return Ok(());
        }
        let topic = self.topics.get_mut(name).unwrap();
        let old = std::mem::replace(&mut topic.configs, configs);
        if let Err(e) = self.persist_topics() {
            self.topics.get_mut(name).unwrap().configs = old;
            return Err((ResponseError::KafkaStorageError, Some(e.to_string())));
        }
        let topic = self.topics.get_mut(name).unwrap();
        let log_config = topic_config::log_config(&topic.configs);
        for log in &mut topic.partitions {
            log.set_config(log_config.clone());
        }
        info!(topic = name, configs = ?topic.configs, "topic configs changed");
        Ok(())
    }

    /// A broker resource's name as a node id: empty is the cluster-wide default (-1), as in
    /// Kafka; otherwise a node of this cluster.
    fn broker_resource(&self, name: &str) -> Result<i32, ConfigError> {
        let Some(c) = &self.cluster else {
            return Err((
                ResponseError::InvalidRequest,
                Some(
                    "dynamic broker configs (the replication throttles) apply to cluster mode; \
                     this broker is standalone"
                        .into(),
                ),
            ));
        };
        if name.is_empty() {
            return Ok(-1);
        }
        match name.parse::<i32>() {
            Ok(n) if c.meta.members().contains(&n) || c.meta.brokers.contains_key(&n) => Ok(n),
            _ => Err((
                ResponseError::InvalidRequest,
                Some(format!("broker {name} is not a node of this cluster")),
            )),
        }
    }

    /// The dynamic configs currently set on a broker resource (-1: cluster-wide defaults).
    fn dynamic_broker_configs(&self, node: i32) -> BTreeMap<String, String> {
        self.cluster
            .as_ref()
            .and_then(|c| c.meta.broker_configs.get(&node).cloned())
            .unwrap_or_default()
    }

    /// Validates a broker resource's complete new dynamic configs and proposes them.
    fn set_broker_configs(
        &mut self,
        node: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ConfigError> {
        let mut valid = BTreeMap::new();
        for (k, v) in configs {
            let v = throttle::validate(&k, &v).map_err(|m| {
                let kind = if m.starts_with("Cannot update") {
                    ResponseError::InvalidRequest
                } else {
                    ResponseError::InvalidConfig
                };
                (kind, Some(m))
            })?;
            valid.insert(k, v);
        }
        if validate_only {
            return Ok(());
        }
        let c = self.cluster.as_mut().expect("checked by broker_resource");
        c.pending_configs.push((ConfigTarget::Broker(node), valid));
        Ok(())
    }

    /// AlterConfigs: the request's configs replace the topic's overrides.
    pub(super) fn alter_configs(&mut self, req: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut response = AlterConfigsResponse::default();
        for res in req.resources {
            let outcome = (|| -> Result<(), ConfigError> {
                if res.resource_type == RESOURCE_BROKER {
                    let node = self.broker_resource(res.resource_name.as_str())?;
                    let configs = res
                        .configs
                        .iter()
                        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                        .collect();
                    return self.set_broker_configs(node, configs, req.validate_only);
                }
                if res.resource_type != RESOURCE_TOPIC {
                    return Err((
                        ResponseError::InvalidRequest,
                        Some("only topic and broker configs can be altered".to_string()),
                    ));
                }
                let nulls: Vec<&str> = res
                    .configs
                    .iter()
                    .filter(|c| c.value.is_none())
                    .map(|c| c.name.as_str())
                    .collect();
                if !nulls.is_empty() {
                    return Err(invalid_config(format!(
                        "Null value not supported for topic configs: {}",
                        nulls.join(",")
                    )));
                }
                let configs = res
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                self.set_topic_configs(res.resource_name.as_str(), configs, req.validate_only)
            })();
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((e, m)) = outcome {
                r.error_code = e.code();
                r.error_message = m.map(|m| str(&m));
            }
            response.responses.push(r);
        }
        response
    }

    /// IncrementalAlterConfigs: SET, DELETE, and APPEND / SUBTRACT on list configs, applied to
    /// the topic's overrides in order; the result is validated as a whole.
    pub(super) fn incremental_alter_configs(
        &mut self,
        req: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut response = IncrementalAlterConfigsResponse::default();
        for res in req.resources {
            let name = res.resource_name.to_string();
            let outcome = (|| -> Result<(), ConfigError> {
                if res.resource_type == RESOURCE_BROKER {
                    let node = self.broker_resource(&name)?;
                    let mut configs = self.dynamic_broker_configs(node);
                    for c in res.configs.iter() {
                        match (c.config_operation, &c.value) {
                            (0, Some(v)) => {
                                configs.insert(c.name.to_string(), v.to_string());
                            }
                            (1, _) => {
                                configs.remove(c.name.as_str());
                            }
                            (0, None) => {
                                return Err(invalid_config(format!(
                                    "Null value not supported for: {}",
                                    c.name.as_str()
                                )));
                            }
                            (op, _) => {
                                return Err(invalid_config(format!(
                                    "Config operation {op} is not valid for {}: it is not a list",
                                    c.name.as_str()
                                )));
                            }
                        }
                    }
                    return self.set_broker_configs(node, configs, req.validate_only);
                }
                if res.resource_type != RESOURCE_TOPIC {
                    return Err((
                        ResponseError::InvalidRequest,
                        Some("only topic and broker configs can be altered".into()),
                    ));
                }
                let configs = self
                    .topics
                    .get(&name)
                    .ok_or((
                        ResponseError::UnknownTopicOrPartition,
                        Some(format!("Topic '{name}' does not exist")),
                    ))?
                    .configs
                    .clone();
                let ops = res.configs.iter().map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                });
                let configs = incremental(configs, ops)?;
                self.set_topic_configs(&name, configs, req.validate_only)
            })();
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((e, m)) = outcome {
                r.error_code = e.code();
                r.error_message = m.map(|m| str(&m));
            }
            response.responses.push(r);
        }
        response
    }
}

/// Applies IncrementalAlterConfigs operations (name, op, value) to a topic's overrides, as
/// Kafka's controller does: SET (0) replaces, DELETE (1) removes, APPEND (2) / SUBTRACT (3) add
/// or remove items of a LIST config, starting from its current value or default.
pub(crate) fn incremental(
    mut configs: BTreeMap<String, String>,
    ops: impl IntoIterator<Item = (String, i8, Option<String>)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    for (key, op, value) in ops {
        match op {
            0 => {
                let v = value.ok_or_else(|| {
                    invalid_config(format!("Null value not supported for topic configs: {key}"))
                })?;
                configs.insert(key, v);
            }
            1 => {
                configs.remove(&key);
            }
            2 | 3 => {
                let k = topic_config::key_of(&key)
                    .ok_or_else(|| invalid_config(format!("Unknown topic config name: {key}")))?;
                let what = if op == 2 { "APPEND" } else { "SUBTRACT" };
                if k.kind != ConfigType::List {
                    return Err(invalid_config(format!(
                        "Can't {what} to key {key} because its type is not LIST."
                    )));
                }
                let current = topic_config::effective(&configs, k).unwrap_or("");
                let mut items = topic_config::list_items(current);
                for v in value.unwrap_or_default().split(',').map(str::trim) {
                    if op == 2 {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else if let Some(at) = items.iter().position(|i| i == v) {
                        items.remove(at);
                    }
                }
                configs.insert(key, items.join(","));
            }
            op => {
                return Err((
                    ResponseError::InvalidRequest,
                    Some(format!("unknown config operation {op}")),
                ));
            }
        }
    }
    Ok(configs)
}
