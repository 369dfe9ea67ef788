//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeLogDirs.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    TopicName,
};
use tracing::{info, warn};
use uuid::Uuid;

use super::{Broker, Topic, partition_dir, str, valid_topic_name};
use crate::log::PartitionLog;
use crate::topic_config;

type AdminError = (ResponseError, Option<String>);

/// The topics a DeleteTopics request names, as (name if known, id when named by id).
pub(in crate::broker) fn delete_targets(
    req: DeleteTopicsRequest,
    name_of: impl Fn(Uuid) -> Option<String>,
) -> Vec<(Option<String>, Uuid)> {
    let by_name = req.topic_names.iter().map(|n| n.0.to_string());
    let mut targets: Vec<(Option<String>, Uuid)> =
        by_name.map(|n| (Some(n), Uuid::nil())).collect();
    for t in req.topics {
        targets.push(match t.name {
            Some(n) => (Some(n.0.to_string()), Uuid::nil()),
            None => (name_of(t.topic_id), t.topic_id),
        });
    }
    targets
}

/// A CreateTopics entry's configs, validated and normalised as Kafka's controller does.
pub(in crate::broker) fn creation_configs(
    configs: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<BTreeMap<String, String>, (ResponseError, String)> {
    let nulls: Vec<&str> = configs
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| c.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err((
            ResponseError::InvalidConfig,
            format!(
                "Null value not supported for topic configs: {}",
                nulls.join(",")
            ),
        ));
    }
    let raw = configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect();
    topic_config::validate_all(&raw).map_err(|m| (ResponseError::InvalidConfig, m))
}

/// Checks one partition's manual replica list as Kafka's controller does: not empty, every
/// broker known, none twice, and (when given) the same replica count as the other partitions.
pub(in crate::broker) fn check_replicas(
    replicas: &[i32],
    brokers: &[i32],
    rf: Option<usize>,
) -> Result<(), (ResponseError, String)> {
    let bad = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    if replicas.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, b) in sorted.iter().enumerate() {
        if !brokers.contains(b) {
            return bad(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == *b {
            return bad(format!(
                "The manual partition assignment includes the broker {b} more than once."
            ));
        }
    }
    if let Some(rf) = rf
        && replicas.len() != rf
    {
        return bad(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
            replicas.len()
        ));
    }
    Ok(())
}

/// A CreateTopics entry's manual assignment, checked as Kafka does, as replica lists by
/// partition.
pub(in crate::broker) fn manual_assignment(
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    brokers: &[i32],
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    if t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1."
                .into(),
        ));
    }
    if t.num_partitions != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .into(),
        ));
    }
    let mut parts: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut rf = None;
    for a in &t.assignments {
        if parts.contains_key(&a.partition_index) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Found multiple manual partition assignments for partition {}",
                    a.partition_index
                ),
            ));
        }
        let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        check_replicas(&replicas, brokers, rf)?;
        rf = Some(replicas.len());
        parts.insert(a.partition_index, replicas);
    }
    if parts.keys().copied().ne(0..parts.len() as i32) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(parts.into_values().collect())
}

/// A CreateTopics result for `t` before anything is known about the outcome.
pub(in crate::broker) fn creatable_result(
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(t.name.clone())
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

/// A CreatePartitions entry's manual assignments for `additional` new partitions of a topic
/// with `rf` replicas per partition, checked as Kafka does.
pub(in crate::broker) fn check_partition_assignments(
    assignments: &[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment],
    additional: i32,
    brokers: &[i32],
    rf: usize,
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    if assignments.len() as i64 != i64::from(additional) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                assignments.len()
            ),
        ));
    }
    assignments
        .iter()
        .map(|a| {
            let replicas: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            check_replicas(&replicas, brokers, Some(rf)).map(|()| replicas)
        })
        .collect()
}

impl Broker {
    /// Partitions a CreateTopics entry asks for (-1: the broker default).
    pub(super) fn requested_partitions(&self, num_partitions: i32) -> i32 {
        if num_partitions == -1 {
            self.config.default_partitions
        } else {
            num_partitions
        }
    }

    /// Creates a topic (directories first, then the metadata that makes it exist).
    pub(super) fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Uuid, AdminError> {
        self.create_topic_with(name, partitions, configs, None, now_ms)
    }

    /// Creates a topic with a given id (cluster mode: the id `__meta` chose) or a new one.
    pub(super) fn create_topic_with(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        id: Option<Uuid>,
        now_ms: i64,
    ) -> Result<Uuid, AdminError> {
        if self.topics.contains_key(name) {
            return Err((
                ResponseError::TopicAlreadyExists,
                Some(format!("Topic '{name}' already exists.")),
            ));
        }
        valid_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, Some(m)))?;
        if !(1..=100_000).contains(&partitions) {
            return Err((
                ResponseError::InvalidPartitions,
                Some(format!(
                    "Number of partitions must be between 1 and 100000, got {partitions}"
                )),
            ));
        }
        let log_config = topic_config::log_config(&configs);
        let logs = self.open_new_partitions(name, 0..partitions, &log_config, now_ms)?;
        let id = id.unwrap_or_else(|| self.new_uuid());
        self.topics.insert(
            name.to_string(),
            Topic {
                id,
                configs,
                partitions: logs,
            },
        );
        if let Err(e) = self.persist_topics() {
            self.topics.remove(name);
            for p in 0..partitions {
                let _ = self.fs.remove_dir_all(&partition_dir(name, p));
            }
            return Err((ResponseError::KafkaStorageError, Some(e.to_string())));
        }
        self.ids.insert(id, name.to_string());
        info!(topic = name, partitions, topic_id = %id, "topic created");
        Ok(id)
    }

    /// A topic's configs as CreateTopics v5+ returns them.
    pub(super) fn creatable_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<CreatableTopicConfigs> {
        self.describe_topic_configs(overrides, |_| true, false, false, 0)
            .into_iter()
            .map(|c| {
                CreatableTopicConfigs::default()
                    .with_name(c.name)
                    .with_value(c.value)
                    .with_read_only(c.read_only)
                    .with_config_source(c.config_source)
                    .with_is_sensitive(c.is_sensitive)
            })
            .collect()
    }

    pub(super) fn create_topics(
        &mut self,
        req: CreateTopicsRequest,
        version: i16,
        now_ms: i64,
    ) -> CreateTopicsResponse {
        let mut response = CreateTopicsResponse::default();
        let node = self.config.node_id;
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut result = creatable_result(&t);
            let outcome = (|| -> Result<(Uuid, i32, BTreeMap<String, String>), AdminError> {
                if let Some(m) = internal_creation_refusal(&name) {
                    return Err((ResponseError::InvalidRequest, Some(m)));
                }
                let partitions = if t.assignments.is_empty() {
                    if !(t.replication_factor == -1 || t.replication_factor == 1) {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            Some(format!(
                                "Replication factor {} is larger than the number of brokers (1)",
                                t.replication_factor
                            )),
                        ));
                    }
                    self.requested_partitions(t.num_partitions)
                } else {
                    manual_assignment(&t, &[node])
                        .map_err(|(e, m)| (e, Some(m)))?
                        .len() as i32
                };
                let configs = creation_configs(&t.configs).map_err(|(e, m)| (e, Some(m)))?;
                if req.validate_only {
                    if self.topics.contains_key(&name) {
                        return Err((
                            ResponseError::TopicAlreadyExists,
                            Some(format!("Topic '{name}' already exists.")),
                        ));
                    }
                    valid_topic_name(&name)
                        .map_err(|m| (ResponseError::InvalidTopicException, Some(m)))?;
                    return Ok((Uuid::nil(), partitions, configs));
                }
                let id = self.create_topic(&name, partitions, configs.clone(), now_ms)?;
                Ok((id, partitions, configs))
            })();
            match outcome {
                Ok((id, partitions, configs)) => {
                    result.topic_id = id;
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    if version >= 5 {
                        result.configs = Some(self.creatable_configs(&configs));
                    }
                }
                Err((e, msg)) => {
                    result.error_code = e.code();
                    result.error_message = msg.map(|m| str(&m));
                }
            }
            response.topics.push(result);
        }
        response
    }

    pub(super) fn delete_topics(
        &mut self,
        req: DeleteTopicsRequest,
        now_ms: i64,
    ) -> DeleteTopicsResponse {
        let targets = delete_targets(req, |id| self.ids.get(&id).cloned());
        let mut response = DeleteTopicsResponse::default();
        for (name, id) in targets {
            let mut r = DeletableTopicResult::default()
                .with_name(name.as_ref().map(|n| TopicName(str(n))))
                .with_topic_id(id);
            match name.as_deref().map(|n| self.delete_topic(n, now_ms)) {
                None => r.error_code = ResponseError::UnknownTopicId.code(),
                Some(Ok(deleted_id)) => r.topic_id = deleted_id,
                Some(Err((e, msg))) => {
                    r.error_code = e.code();
                    r.error_message = msg.map(|m| str(&m));
                }
            }
            response.responses.push(r);
        }
        response
    }

    fn delete_topic(&mut self, name: &str, now_ms: i64) -> Result<Uuid, AdminError> {
        if super::is_internal(name) {
            return Err((
                ResponseError::InvalidTopicException,
                Some(format!("{name} is an internal topic and cannot be deleted")),
            ));
        }
        self.delete_topic_local(name, now_ms)
    }

    /// Removes a topic's logs and metadata here (cluster mode: `__meta` deleted it).
    pub(super) fn delete_topic_local(
        &mut self,
        name: &str,
        now_ms: i64,
    ) -> Result<Uuid, AdminError> {
        let Some(topic) = self.topics.remove(name) else {
            return Err((ResponseError::UnknownTopicOrPartition, None));
        };
        // Metadata first: once it is gone the topic is gone, even if removing files is cut short.
        if let Err(e) = self.persist_topics() {
            self.topics.insert(name.to_string(), topic);
            return Err((ResponseError::KafkaStorageError, Some(e.to_string())));
        }
        self.ids.remove(&topic.id);
        for p in 0..topic.partitions.len() as i32 {
            if let Err(e) = self.fs.remove_dir_all(&partition_dir(name, p)) {
                warn!(topic = name, partition = p, error = %e, "could not remove partition directory; it is removed on next start");
            }
        }
        self.on_topic_deleted(name, now_ms);
        info!(topic = name, "topic deleted");
        Ok(topic.id)
    }

    pub(super) fn create_partitions(
        &mut self,
        req: CreatePartitionsRequest,
        now_ms: i64,
    ) -> CreatePartitionsResponse {
        let mut response = CreatePartitionsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let outcome = (|| -> Result<(), AdminError> {
                if super::is_internal(&name) {
                    // Adding partitions would move groups and transactional ids to other
                    // partitions (partition_for).
                    return Err((
                        ResponseError::InvalidRequest,
                        Some(format!("{name} is an internal topic")),
                    ));
                }
                let topic = self
                    .topics
                    .get(&name)
                    .ok_or((ResponseError::UnknownTopicOrPartition, None))?;
                let current = topic.partitions.len() as i32;
                if t.count <= current {
                    return Err((
                        ResponseError::InvalidPartitions,
                        Some(format!(
                            "Topic currently has {current} partitions, which is higher than or equal to the requested {}.",
                            t.count
                        )),
                    ));
                }
                if t.count > 100_000 {
                    return Err((
                        ResponseError::InvalidPartitions,
                        Some("at most 100000 partitions".into()),
                    ));
                }
                if let Some(assignments) = &t.assignments {
                    // One broker: each new partition may only be [this node].
                    check_partition_assignments(
                        assignments,
                        t.count - current,
                        &[self.config.node_id],
                        1,
                    )
                    .map_err(|(e, m)| (e, Some(m)))?;
                }
                if req.validate_only {
                    return Ok(());
                }
                let log_config = topic_config::log_config(&topic.configs);
                let added =
                    self.open_new_partitions(&name, current..t.count, &log_config, now_ms)?;
                self.topics.get_mut(&name).unwrap().partitions.extend(added);
                self.persist_topics()
                    .map_err(|e| (ResponseError::KafkaStorageError, Some(e.to_string())))?;
                info!(topic = %name, partitions = t.count, "partitions added");
                Ok(())
            })();
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
            if let Err((e, msg)) = outcome {
                r.error_code = e.code();
                r.error_message = msg.map(|m| str(&m));
            }
            response.results.push(r);
        }
        response
    }

    /// Opens (creating) partitions `range` of `name`, then syncs their directories and the
    /// logs directory: created first and synced after, the file system commits its journal
    /// once for all of them instead of once per partition (3,000 partitions took seconds).
    fn open_new_partitions(
        &self,
        name: &str,
        range: std::ops::Range<i32>,
        log_config: &crate::log::LogConfig,
        now_ms: i64,
    ) -> Result<Vec<PartitionLog>, AdminError> {
        let storage = |e: String| (ResponseError::KafkaStorageError, Some(e));
        let mut logs = Vec::with_capacity(range.len());
        for p in range {
            let log = PartitionLog::open_unsynced(
                self.fs.clone(),
                partition_dir(name, p),
                log_config.clone(),
                now_ms,
            )
            .map_err(|e| storage(e.to_string()))?;
            logs.push(log);
        }
        for log in &logs {
            self.fs
                .sync_dir(log.dir())
                .map_err(|e| storage(format!("{}: {e}", log.dir())))?;
        }
        self.fs
            .sync_dir("logs")
            .map_err(|e| storage(format!("logs: {e}")))?;
        Ok(logs)
    }

    /// Grows a topic's local partitions to `count` (cluster mode: `__meta` added them).
    pub(super) fn add_partitions_local(
        &mut self,
        name: &str,
        count: i32,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        let topic = self
            .topics
            .get(name)
            .ok_or((ResponseError::UnknownTopicOrPartition, None))?;
        let current = topic.partitions.len() as i32;
        let log_config = topic_config::log_config(&topic.configs);
        let added = self.open_new_partitions(name, current..count, &log_config, now_ms)?;
        self.topics.get_mut(name).unwrap().partitions.extend(added);
        self.persist_topics()
            .map_err(|e| (ResponseError::KafkaStorageError, Some(e.to_string())))?;
        info!(topic = %name, partitions = count, "partitions added");
        Ok(())
    }

    /// Replaces a topic's config overrides here (cluster mode: `__meta` changed them).
    pub(super) fn set_configs_local(&mut self, name: &str, configs: BTreeMap<String, String>) {
        let Some(t) = self.topics.get_mut(name) else {
            return;
        };
        let log_config = topic_config::log_config(&configs);
        t.configs = configs;
        for log in &mut t.partitions {
            log.set_config(log_config.clone());
        }
        if let Err(e) = self.persist_topics() {
            warn!(topic = %name, error = %e, "persisting topic configs failed");
        }
    }

    pub(super) fn describe_log_dirs(&self, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.topic.0.to_string(), t.partitions))
                .collect()
        });
        let mut topics = Vec::new();
        for (name, t) in &self.topics {
            let filter = match &wanted {
                None => None,
                Some(w) => match w.get(name) {
                    None => continue,
                    Some(ps) => Some(ps),
                },
            };
            let partitions = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(p, _)| filter.is_none_or(|ps| ps.contains(&(*p as i32))))
                .map(|(p, log)| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p as i32)
                        .with_partition_size(log.size_bytes() as i64)
                        .with_offset_lag(0)
                })
                .collect();
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str(name)))
                    .with_partitions(partitions),
            );
        }
        DescribeLogDirsResponse::default().with_results(vec![
            DescribeLogDirsResult::default()
                .with_log_dir(str(&self.fs.describe()))
                .with_topics(topics)
                .with_total_bytes(-1)
                .with_usable_bytes(-1),
        ])
    }
}

/// Clients may not create Kafka's internal topics: their coordinators create them with the
/// partition count and configs they rely on (a `__transaction_state` of the wrong size would
/// put transactional ids on partitions that do not exist). Kafka's words.
pub(in crate::broker) fn internal_creation_refusal(name: &str) -> Option<String> {
    (super::is_internal(name) || name == super::METADATA_TOPIC)
        .then(|| format!("Creation of internal topic {name} is prohibited."))
}
