//! Metadata and DescribeCluster: who the brokers are and where every partition lives.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

use super::{Broker, str, valid_topic_name};

/// The topics a Metadata request asks about, as (name if known, id when asked by id): all of
/// `all` when it names none (v0: an empty list means all).
pub(in crate::broker) fn requested_names(
    req_topics: Option<Vec<kafka_protocol::messages::metadata_request::MetadataRequestTopic>>,
    version: i16,
    all: impl Iterator<Item = String>,
    name_of: impl Fn(uuid::Uuid) -> Option<String>,
) -> Vec<(Option<String>, Option<uuid::Uuid>)> {
    match req_topics {
        Some(list) if !(version == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                Some(n) => (Some(n.0.to_string()), None),
                None => (name_of(t.topic_id), Some(t.topic_id)),
            })
            .collect(),
        _ => all.map(|n| (Some(n), None)).collect(),
    }
}

/// The Metadata entry for a topic id nobody knows.
pub(in crate::broker) fn unknown_topic_id(id: Option<uuid::Uuid>) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(ResponseError::UnknownTopicId.code())
        .with_topic_id(id.unwrap_or_default())
}

impl Broker {
    pub(super) fn metadata(
        &mut self,
        req: MetadataRequest,
        version: i16,
        now_ms: i64,
    ) -> MetadataResponse {
        let node = BrokerId(self.config.node_id);
        let (host, port) = self.advertised();
        let mut response = MetadataResponse::default()
            .with_brokers(vec![
                MetadataResponseBroker::default()
                    .with_node_id(node)
                    .with_host(str(&host))
                    .with_port(port),
            ])
            .with_cluster_id(Some(str(&self.cluster_id)))
            .with_controller_id(node);
        let auto_create = self.config.auto_create_topics
            && (version < 4 || req.allow_auto_topic_creation)
            && !self.auto_create_denied;
        let names = requested_names(req.topics, version, self.topics.keys().cloned(), |id| {
            self.ids.get(&id).cloned()
        });
        for (name, by_id) in names {
            let Some(name) = name else {
                response.topics.push(unknown_topic_id(by_id));
                continue;
            };
            let mut error = None;
            if !self.topics.contains_key(&name) {
                if let Err(_msg) = valid_topic_name(&name) {
                    error = Some(ResponseError::InvalidTopicException);
                } else if auto_create
                    && by_id.is_none()
                    // Internal topics are their coordinators' to create, at their size.
                    && super::admin::internal_creation_refusal(&name).is_none()
                {
                    let partitions = self.config.default_partitions;
                    if let Err((e, _)) =
                        self.create_topic(&name, partitions, Default::default(), now_ms)
                    {
                        error = Some(e);
                    }
                } else {
                    error = Some(ResponseError::UnknownTopicOrPartition);
                }
            }
            let mut mt = MetadataResponseTopic::default()
                .with_name(Some(TopicName(str(&name))))
                .with_is_internal(super::is_internal(&name));
            if let Some(e) = error {
                mt.error_code = e.code();
                response.topics.push(mt);
                continue;
            }
            let t = &self.topics[&name];
            mt.topic_id = t.id;
            mt.partitions = (0..t.partitions.len() as i32)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect();
            response.topics.push(mt);
        }
        response
    }

    pub(super) fn describe_cluster(
        &self,
        _req: DescribeClusterRequest,
        _version: i16,
    ) -> DescribeClusterResponse {
        if let Some((brokers, controller)) = self.cluster_brokers() {
            return DescribeClusterResponse::default()
                .with_cluster_id(str(&self.cluster_id))
                .with_controller_id(BrokerId(controller))
                .with_brokers(
                    brokers
                        .into_iter()
                        .map(|(id, host, port)| {
                            DescribeClusterBroker::default()
                                .with_broker_id(BrokerId(id))
                                .with_host(str(&host))
                                .with_port(port)
                        })
                        .collect(),
                );
        }
        let node = BrokerId(self.config.node_id);
        let (host, port) = self.advertised();
        DescribeClusterResponse::default()
            .with_cluster_id(str(&self.cluster_id))
            .with_controller_id(node)
            .with_brokers(vec![
                DescribeClusterBroker::default()
                    .with_broker_id(node)
                    .with_host(str(&host))
                    .with_port(port),
            ])
    }
}
