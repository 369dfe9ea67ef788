//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only view of
//! the broker's own settings).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use tracing::info;

use super::{Broker, str};
use crate::topic_config::{self, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

type ConfigError = (ResponseError, Option<String>);

impl Broker {
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
                        for k in TOPIC_CONFIGS.iter().filter(|k| wanted(k.name)) {
                            let overridden = t.configs.contains_key(k.name);
                            let mut c = DescribeConfigsResourceResult::default()
                                .with_name(str(k.name))
                                .with_value(Some(str(topic_config::effective(&t.configs, k))))
                                .with_read_only(false)
                                .with_config_source(if overridden {
                                    SOURCE_DYNAMIC_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                })
                                .with_is_sensitive(false);
                            if version >= 3 {
                                c.config_type = k.kind as i8;
                                if req.include_documentation {
                                    c.documentation = Some(str(k.doc));
                                }
                            }
                            result.configs.push(c);
                        }
                    }
                },
                RESOURCE_BROKER => {
                    let node = self.config.node_id.to_string();
                    if !res.resource_name.is_empty() && res.resource_name.as_str() != node {
                        result.error_code = ResponseError::InvalidRequest.code();
                        result.error_message = Some(str(&format!("this is broker {node}")));
                    } else {
                        for (name, value) in self.broker_configs() {
                            if wanted(&name) {
                                result.configs.push(
                                    DescribeConfigsResourceResult::default()
                                        .with_name(str(&name))
                                        .with_value(Some(str(&value)))
                                        .with_read_only(true)
                                        .with_config_source(SOURCE_STATIC_BROKER),
                                );
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
        ]
    }

    /// Validates and installs new overrides for a topic, updating its logs.
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
        for (k, v) in &configs {
            topic_config::validate(k, v).map_err(|m| (ResponseError::InvalidConfig, Some(m)))?;
        }
        if validate_only {
            return Ok(());
        }
        if let Some(c) = &mut self.cluster {
            // Cluster mode: the change goes through `__meta` (see `alter_configs_cluster`).
            c.pending_configs.push((name.to_string(), configs));
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

    pub(super) fn alter_configs(&mut self, req: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut response = AlterConfigsResponse::default();
        for res in req.resources {
            let outcome = if res.resource_type != RESOURCE_TOPIC {
                Err((
                    ResponseError::InvalidRequest,
                    Some("only topic configs can be altered".to_string()),
                ))
            } else {
                let configs = res
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                self.set_topic_configs(res.resource_name.as_str(), configs, req.validate_only)
            };
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

    pub(super) fn incremental_alter_configs(
        &mut self,
        req: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut response = IncrementalAlterConfigsResponse::default();
        for res in req.resources {
            let name = res.resource_name.to_string();
            let outcome = (|| -> Result<(), ConfigError> {
                if res.resource_type != RESOURCE_TOPIC {
                    return Err((
                        ResponseError::InvalidRequest,
                        Some("only topic configs can be altered".into()),
                    ));
                }
                let mut configs = self
                    .topics
                    .get(&name)
                    .ok_or((
                        ResponseError::UnknownTopicOrPartition,
                        Some(format!("Topic '{name}' does not exist")),
                    ))?
                    .configs
                    .clone();
                for c in &res.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let k = topic_config::key(&key).ok_or((
                        ResponseError::InvalidConfig,
                        Some(format!("Unknown or unsupported topic config '{key}'")),
                    ))?;
                    match c.config_operation {
                        0 => {
                            configs.insert(key, value.unwrap_or_default());
                        }
                        1 => {
                            configs.remove(&key);
                        }
                        2 | 3 if k.kind == topic_config::ConfigType::List => {
                            let current = topic_config::effective(&configs, k).to_string();
                            let mut items: Vec<String> = current
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect();
                            for v in value
                                .unwrap_or_default()
                                .split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                            {
                                if c.config_operation == 2 {
                                    if !items.iter().any(|i| i == v) {
                                        items.push(v.to_string());
                                    }
                                } else {
                                    items.retain(|i| i != v);
                                }
                            }
                            configs.insert(key, items.join(","));
                        }
                        2 | 3 => {
                            return Err((
                                ResponseError::InvalidConfig,
                                Some(format!("{key} is not a list: APPEND/SUBTRACT do not apply")),
                            ));
                        }
                        op => {
                            return Err((
                                ResponseError::InvalidRequest,
                                Some(format!("unknown config operation {op}")),
                            ));
                        }
                    }
                }
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
