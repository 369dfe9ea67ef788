//! Kafka's authorization of every request: which operation on which resource each API needs,
//! and what a client sees when it lacks it.
//!
//! [`check`] decides before the broker touches anything. A request refused whole gets its
//! error response at once; a request that names several topics (or groups, or config
//! resources) loses the denied ones, so nothing is written for them, and [`Denied::apply`] adds
//! their errors to the answer, whenever it is sent. Listings (Metadata for all topics, all the
//! offsets of a group) leave out what the principal may not describe, as Kafka does.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    DescribeClusterResponse, DescribeLogDirsResponse, FetchResponse, GroupId, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, OffsetCommitResponse,
    OffsetDeleteResponse, OffsetFetchResponse, RequestKind, ResponseKind, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_acl::{Operation, ResourceType};
use uuid::Uuid;

use super::CLUSTER_RESOURCE;

/// Whether the requesting principal may do `Operation` on a resource.
pub type May<'a> = &'a dyn Fn(Operation, ResourceType, &str) -> bool;

/// What [`check`] decided.
#[derive(Debug)]
pub enum Decision {
    /// Serve this request (the permitted part of it); add `Denied`'s errors to its answer.
    Serve(RequestKind, Denied),
    /// Answer this at once; nothing is served.
    Refuse(ResponseKind),
}

/// The parts of a request that were not permitted, to be answered with errors.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Denied {
    items: Vec<Item>,
    /// Topics to leave out of listings.
    hide_topics: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Produce(TopicName, Uuid, Vec<i32>),
    Fetch(TopicName, Uuid, Vec<i32>),
    ListOffsets(TopicName, Vec<i32>),
    LeaderEpoch(TopicName, Vec<i32>),
    Metadata(Option<TopicName>, Uuid),
    CreateTopic(TopicName),
    DeleteTopic(Option<TopicName>, Uuid),
    CreatePartitions(TopicName),
    DeleteRecords(TopicName, Vec<i32>),
    /// (resource type, resource name, error)
    Config(i8, StrBytes, ResponseError),
    OffsetCommit(TopicName, Vec<i32>),
    OffsetFetch(TopicName, Vec<i32>),
    OffsetDelete(TopicName, Vec<i32>),
    DescribeGroup(GroupId),
    DescribeTransaction(kafka_protocol::messages::TransactionalId),
    DeleteGroup(GroupId),
    Coordinator(StrBytes, ResponseError),
}

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

fn denied_message() -> Option<StrBytes> {
    Some(StrBytes::from_static_str("Authorization failed."))
}

/// Config resource types (DescribeConfigs, AlterConfigs).
const CONFIG_TOPIC: i8 = 2;

impl Denied {
    /// Whether nothing was denied.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.hide_topics.is_empty()
    }

    /// Adds the denied parts' errors to `resp` and leaves hidden topics out of it.
    pub fn apply(&self, resp: &mut ResponseKind) {
        if self.is_empty() {
            return;
        }
        let hidden = |name: &str| self.hide_topics.contains(name);
        match resp {
            ResponseKind::Metadata(r) => {
                r.topics
                    .retain(|t| !t.name.as_ref().is_some_and(|n| hidden(n.0.as_str())));
            }
            ResponseKind::OffsetFetch(r) => {
                r.topics.retain(|t| !hidden(t.name.0.as_str()));
                for g in &mut r.groups {
                    g.topics.retain(|t| !hidden(t.name.0.as_str()));
                }
            }
            ResponseKind::DescribeTransactions(r) => {
                for state in &mut r.transaction_states {
                    state.topics.retain(|t| !hidden(t.topic.0.as_str()));
                }
            }
            _ => {}
        }
        for item in &self.items {
            apply_item(item, resp);
        }
    }
}

fn apply_item(item: &Item, resp: &mut ResponseKind) {
    match (item, resp) {
        (Item::Produce(name, id, parts), ResponseKind::Produce(r)) => {
            r.responses.push(
                TopicProduceResponse::default()
                    .with_name(name.clone())
                    .with_topic_id(*id)
                    .with_partition_responses(
                        parts
                            .iter()
                            .map(|&p| {
                                PartitionProduceResponse::default()
                                    .with_index(p)
                                    .with_error_code(TOPIC_DENIED.code())
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        (Item::Fetch(name, id, parts), ResponseKind::Fetch(r)) => {
            r.responses.push(
                FetchableTopicResponse::default()
                    .with_topic(name.clone())
                    .with_topic_id(*id)
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                PartitionData::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_DENIED.code())
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        (Item::ListOffsets(name, parts), ResponseKind::ListOffsets(r)) => {
            r.topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(name.clone())
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_DENIED.code())
                                    .with_timestamp(-1)
                                    .with_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        (Item::LeaderEpoch(name, parts), ResponseKind::OffsetForLeaderEpoch(r)) => {
            r.topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(name.clone())
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                EpochEndOffset::default()
                                    .with_partition(p)
                                    .with_error_code(TOPIC_DENIED.code())
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        (Item::Metadata(name, id), ResponseKind::Metadata(r)) => {
            r.topics.push(
                MetadataResponseTopic::default()
                    .with_name(name.clone())
                    .with_topic_id(*id)
                    .with_error_code(TOPIC_DENIED.code()),
            );
        }
        (Item::CreateTopic(name), ResponseKind::CreateTopics(r)) => {
            r.topics.push(
                CreatableTopicResult::default()
                    .with_name(name.clone())
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(denied_message())
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
        }
        (Item::DeleteTopic(name, id), ResponseKind::DeleteTopics(r)) => {
            r.responses.push(
                DeletableTopicResult::default()
                    .with_name(name.clone())
                    .with_topic_id(*id)
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(denied_message()),
            );
        }
        (Item::CreatePartitions(name), ResponseKind::CreatePartitions(r)) => {
            r.results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(name.clone())
                    .with_error_code(TOPIC_DENIED.code())
                    .with_error_message(denied_message()),
            );
        }
        (Item::DeleteRecords(name, parts), ResponseKind::DeleteRecords(r)) => {
            r.topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(name.clone())
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                DeleteRecordsPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_low_watermark(-1)
                                    .with_error_code(TOPIC_DENIED.code())
                            })
                            .collect(),
                    ),
            );
        }
        (Item::Config(t, name, e), ResponseKind::DescribeConfigs(r)) => {
            r.results.push(
                DescribeConfigsResult::default()
                    .with_resource_type(*t)
                    .with_resource_name(name.clone())
                    .with_error_code(e.code())
                    .with_error_message(denied_message()),
            );
        }
        (Item::Config(t, name, e), ResponseKind::AlterConfigs(r)) => {
            r.responses.push(
                kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(*t)
                    .with_resource_name(name.clone())
                    .with_error_code(e.code())
                    .with_error_message(denied_message()),
            );
        }
        (Item::Config(t, name, e), ResponseKind::IncrementalAlterConfigs(r)) => {
            r.responses.push(
                kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(*t)
                    .with_resource_name(name.clone())
                    .with_error_code(e.code())
                    .with_error_message(denied_message()),
            );
        }
        (Item::OffsetCommit(name, parts), ResponseKind::OffsetCommit(r)) => {
            r.topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_DENIED.code())
                            })
                            .collect(),
                    ),
            );
        }
        (Item::OffsetFetch(name, parts), ResponseKind::OffsetFetch(r)) => {
            if r.groups.is_empty() {
                r.topics.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(name.clone())
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_committed_leader_epoch(-1)
                                        .with_error_code(TOPIC_DENIED.code())
                                })
                                .collect(),
                        ),
                );
            } else {
                // v8+: one group per request from the clients we serve; the denied topics
                // belong to it.
                if let Some(g) = r.groups.first_mut() {
                    g.topics.push(
                        OffsetFetchResponseTopics::default()
                            .with_name(name.clone())
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|&p| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_committed_leader_epoch(-1)
                                            .with_error_code(TOPIC_DENIED.code())
                                    })
                                    .collect(),
                            ),
                    );
                }
            }
        }
        (Item::OffsetDelete(name, parts), ResponseKind::OffsetDelete(r)) => {
            r.topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC_DENIED.code())
                            })
                            .collect(),
                    ),
            );
        }
        (Item::DescribeGroup(g), ResponseKind::DescribeGroups(r)) => {
            r.groups.push(
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(GROUP_DENIED.code()),
            );
        }
        (Item::DescribeTransaction(id), ResponseKind::DescribeTransactions(r)) => {
            r.transaction_states.push(
                kafka_protocol::messages::describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code()),
            );
        }
        (Item::DeleteGroup(g), ResponseKind::DeleteGroups(r)) => {
            r.results.push(
                DeletableGroupResult::default()
                    .with_group_id(g.clone())
                    .with_error_code(GROUP_DENIED.code()),
            );
        }
        (Item::Coordinator(key, e), ResponseKind::FindCoordinator(r)) => {
            r.coordinators.push(
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(kafka_protocol::messages::BrokerId(-1))
                    .with_host(StrBytes::from_static_str(""))
                    .with_port(-1)
                    .with_error_code(e.code())
                    .with_error_message(denied_message()),
            );
        }
        _ => {}
    }
}

/// What [`check`] needs to know besides the request.
pub struct Context<'a> {
    /// The permission check for this request's principal (a denial is logged and counted).
    pub may: May<'a>,
    /// The same check for filtering listings: a topic left out is not a denial worth a log
    /// line (Kafka's `logIfDenied = false`).
    pub may_quietly: May<'a>,
    /// Topic names by id (requests may name topics by id).
    pub name_of: &'a dyn Fn(Uuid) -> Option<String>,
    /// Every topic's name, for listings.
    pub all_topics: &'a dyn Fn() -> Vec<String>,
    /// The request's API version.
    pub version: i16,
    /// The cluster node the session authenticated as, if any: only a node may fetch as a
    /// replica, and only as itself.
    pub node: Option<i32>,
}

impl Context<'_> {
    fn topic(&self, op: Operation, name: &str) -> bool {
        (self.may)(op, ResourceType::Topic, name)
    }
    fn cluster(&self, op: Operation) -> bool {
        (self.may)(op, ResourceType::Cluster, CLUSTER_RESOURCE)
    }
    fn group(&self, op: Operation, name: &str) -> bool {
        (self.may)(op, ResourceType::Group, name)
    }
    fn hidden_topics(&self) -> HashSet<String> {
        (self.all_topics)()
            .into_iter()
            .filter(|t| !(self.may_quietly)(Operation::Describe, ResourceType::Topic, t))
            .collect()
    }
}

/// Decides what of `body` its principal may do (see the module docs).
pub fn check(body: RequestKind, cx: &Context<'_>) -> Decision {
    let mut denied = Denied::default();
    let body = match body {
        // Markers are written by transaction coordinators — the cluster's own nodes, on the
        // replica listener — and, for an operator aborting a hanging transaction (Kafka's
        // `kafka-transactions.sh abort`, AdminClient.abortTransaction), by a client allowed
        // CLUSTER_ACTION on the cluster: abort markers only, a commit is the coordinator's.
        RequestKind::WriteTxnMarkers(r)
            if cx.node.is_none()
                && (r.markers.iter().any(|m| m.transaction_result)
                    || !cx.cluster(Operation::ClusterAction)) =>
        {
            return Decision::Refuse(ResponseKind::WriteTxnMarkers(crate::broker::markers_error(
                &r,
                ResponseError::ClusterAuthorizationFailed,
            )));
        }
        // An operator's abort is fenced by no coordinator and fences none.
        RequestKind::WriteTxnMarkers(mut r) if cx.node.is_none() => {
            for m in &mut r.markers {
                m.coordinator_epoch = crate::broker::OPERATOR_EPOCH;
            }
            RequestKind::WriteTxnMarkers(r)
        }
        RequestKind::Produce(r)
            if r.transactional_id.as_ref().is_some_and(|id| {
                !(cx.may)(Operation::Write, ResourceType::TransactionalId, &id.0)
            }) =>
        {
            let code = ResponseError::TransactionalIdAuthorizationFailed.code();
            let topics = r
                .topic_data
                .iter()
                .map(|t| {
                    kafka_protocol::messages::produce_response::TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_partition_responses(
                            t.partition_data
                                .iter()
                                .map(|p| {
                                    kafka_protocol::messages::produce_response::PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                        .with_log_append_time_ms(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            return Decision::Refuse(ResponseKind::Produce(
                kafka_protocol::messages::ProduceResponse::default().with_responses(topics),
            ));
        }
        RequestKind::Produce(mut r) => {
            r.topic_data.retain(|t| {
                let name = if t.name.0.is_empty() {
                    (cx.name_of)(t.topic_id).unwrap_or_default()
                } else {
                    t.name.0.to_string()
                };
                if cx.topic(Operation::Write, &name) {
                    return true;
                }
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                denied
                    .items
                    .push(Item::Produce(t.name.clone(), t.topic_id, parts));
                false
            });
            RequestKind::Produce(r)
        }
        RequestKind::Fetch(mut r) => {
            let replica_id = if cx.version >= 15 {
                r.replica_state.replica_id.0
            } else {
                r.replica_id.0
            };
            if replica_id >= 0 {
                // A replica reads past the high watermark: never on a client's word.
                if cx.node == Some(replica_id) {
                    return Decision::Serve(RequestKind::Fetch(r), denied);
                }
                return Decision::Refuse(ResponseKind::Fetch(
                    FetchResponse::default().with_error_code(CLUSTER_DENIED.code()),
                ));
            }
            r.topics.retain(|t| {
                let name = if cx.version >= 13 {
                    (cx.name_of)(t.topic_id).unwrap_or_default()
                } else {
                    t.topic.0.to_string()
                };
                // An unknown topic id is the broker's to answer (UNKNOWN_TOPIC_ID).
                if (cx.version >= 13 && name.is_empty()) || cx.topic(Operation::Read, &name) {
                    return true;
                }
                let parts = t.partitions.iter().map(|p| p.partition).collect();
                denied
                    .items
                    .push(Item::Fetch(t.topic.clone(), t.topic_id, parts));
                false
            });
            RequestKind::Fetch(r)
        }
        RequestKind::ListOffsets(mut r) => {
            if cx.node != Some(r.replica_id.0) {
                r.topics.retain(|t| {
                    if cx.topic(Operation::Describe, &t.name.0) {
                        return true;
                    }
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    denied.items.push(Item::ListOffsets(t.name.clone(), parts));
                    false
                });
            }
            RequestKind::ListOffsets(r)
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            if cx.node != Some(r.replica_id.0) {
                r.topics.retain(|t| {
                    if cx.topic(Operation::Describe, &t.topic.0) {
                        return true;
                    }
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    denied.items.push(Item::LeaderEpoch(t.topic.clone(), parts));
                    false
                });
            }
            RequestKind::OffsetForLeaderEpoch(r)
        }
        RequestKind::Metadata(mut r) => {
            let all = match &r.topics {
                None => true,
                Some(list) => cx.version == 0 && list.is_empty(),
            };
            if all {
                denied.hide_topics = cx.hidden_topics();
            } else if let Some(list) = &mut r.topics {
                list.retain(|t| {
                    let name = match &t.name {
                        Some(n) => Some(n.0.to_string()),
                        None => (cx.name_of)(t.topic_id),
                    };
                    match name {
                        None => true,
                        Some(n) if cx.topic(Operation::Describe, &n) => true,
                        Some(_) => {
                            denied
                                .items
                                .push(Item::Metadata(t.name.clone(), t.topic_id));
                            false
                        }
                    }
                });
                if cx.version == 0 && list.is_empty() {
                    // v0 reads an empty list as "all topics": show none instead.
                    denied.hide_topics = (cx.all_topics)().into_iter().collect();
                }
                // Auto-creation needs CREATE on the cluster or on the topic; asked only when
                // the request wants it, and not a denial worth a log line (Kafka's
                // logIfDenied = false).
                let quiet = |op, rt, name: &str| (cx.may_quietly)(op, rt, name);
                if (cx.version < 4 || r.allow_auto_topic_creation)
                    && !quiet(Operation::Create, ResourceType::Cluster, CLUSTER_RESOURCE)
                    && list.iter().any(|t| {
                        t.name
                            .as_ref()
                            .is_some_and(|n| !quiet(Operation::Create, ResourceType::Topic, &n.0))
                    })
                {
                    r.allow_auto_topic_creation = false;
                }
            }
            RequestKind::Metadata(r)
        }
        RequestKind::CreateTopics(mut r) => {
            let cluster = cx.cluster(Operation::Create);
            r.topics.retain(|t| {
                if cluster || cx.topic(Operation::Create, &t.name.0) {
                    return true;
                }
                denied.items.push(Item::CreateTopic(t.name.clone()));
                false
            });
            RequestKind::CreateTopics(r)
        }
        RequestKind::DeleteTopics(mut r) => {
            r.topic_names.retain(|n| {
                if cx.topic(Operation::Delete, &n.0) {
                    return true;
                }
                denied
                    .items
                    .push(Item::DeleteTopic(Some(n.clone()), Uuid::nil()));
                false
            });
            r.topics.retain(|t| {
                let name = match &t.name {
                    Some(n) => Some(n.0.to_string()),
                    None => (cx.name_of)(t.topic_id),
                };
                match name {
                    None => true,
                    Some(n) if cx.topic(Operation::Delete, &n) => true,
                    Some(_) => {
                        denied
                            .items
                            .push(Item::DeleteTopic(t.name.clone(), t.topic_id));
                        false
                    }
                }
            });
            RequestKind::DeleteTopics(r)
        }
        RequestKind::CreatePartitions(mut r) => {
            r.topics.retain(|t| {
                if cx.topic(Operation::Alter, &t.name.0) {
                    return true;
                }
                denied.items.push(Item::CreatePartitions(t.name.clone()));
                false
            });
            RequestKind::CreatePartitions(r)
        }
        RequestKind::DeleteRecords(mut r) => {
            r.topics.retain(|t| {
                if cx.topic(Operation::Delete, &t.name.0) {
                    return true;
                }
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                denied
                    .items
                    .push(Item::DeleteRecords(t.name.clone(), parts));
                false
            });
            RequestKind::DeleteRecords(r)
        }
        RequestKind::DescribeConfigs(mut r) => {
            retain_configs(&mut r.resources, cx, false, &mut denied, |res| {
                (res.resource_type, &res.resource_name)
            });
            RequestKind::DescribeConfigs(r)
        }
        RequestKind::AlterConfigs(mut r) => {
            retain_configs(&mut r.resources, cx, true, &mut denied, |res| {
                (res.resource_type, &res.resource_name)
            });
            RequestKind::AlterConfigs(r)
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            retain_configs(&mut r.resources, cx, true, &mut denied, |res| {
                (res.resource_type, &res.resource_name)
            });
            RequestKind::IncrementalAlterConfigs(r)
        }
        RequestKind::FindCoordinator(mut r) => {
            let (op, rt, err) = if r.key_type == 1 {
                (
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    ResponseError::TransactionalIdAuthorizationFailed,
                )
            } else {
                (Operation::Describe, ResourceType::Group, GROUP_DENIED)
            };
            if cx.version < 4 {
                if !(cx.may)(op, rt, &r.key) {
                    return Decision::Refuse(ResponseKind::FindCoordinator(
                        kafka_protocol::messages::FindCoordinatorResponse::default()
                            .with_error_code(err.code())
                            .with_error_message(denied_message())
                            .with_node_id(kafka_protocol::messages::BrokerId(-1))
                            .with_port(-1),
                    ));
                }
            } else {
                r.coordinator_keys.retain(|k| {
                    if (cx.may)(op, rt, k) {
                        return true;
                    }
                    denied.items.push(Item::Coordinator(k.clone(), err));
                    false
                });
            }
            RequestKind::FindCoordinator(r)
        }
        RequestKind::JoinGroup(r) => {
            if !cx.group(Operation::Read, &r.group_id.0) {
                return Decision::Refuse(ResponseKind::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(GROUP_DENIED.code())
                        .with_generation_id(-1),
                ));
            }
            RequestKind::JoinGroup(r)
        }
        RequestKind::SyncGroup(r) => {
            if !cx.group(Operation::Read, &r.group_id.0) {
                return Decision::Refuse(ResponseKind::SyncGroup(
                    SyncGroupResponse::default().with_error_code(GROUP_DENIED.code()),
                ));
            }
            RequestKind::SyncGroup(r)
        }
        RequestKind::Heartbeat(r) => {
            if !cx.group(Operation::Read, &r.group_id.0) {
                return Decision::Refuse(ResponseKind::Heartbeat(
                    HeartbeatResponse::default().with_error_code(GROUP_DENIED.code()),
                ));
            }
            RequestKind::Heartbeat(r)
        }
        RequestKind::LeaveGroup(r) => {
            if !cx.group(Operation::Read, &r.group_id.0) {
                return Decision::Refuse(ResponseKind::LeaveGroup(
                    LeaveGroupResponse::default().with_error_code(GROUP_DENIED.code()),
                ));
            }
            RequestKind::LeaveGroup(r)
        }
        RequestKind::OffsetCommit(mut r) => {
            if !cx.group(Operation::Read, &r.group_id.0) {
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(GROUP_DENIED.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Decision::Refuse(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ));
            }
            r.topics.retain(|t| {
                if cx.topic(Operation::Read, &t.name.0) {
                    return true;
                }
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                denied.items.push(Item::OffsetCommit(t.name.clone(), parts));
                false
            });
            RequestKind::OffsetCommit(r)
        }
        RequestKind::OffsetFetch(mut r) => {
            if cx.version < 8 {
                if !cx.group(Operation::Describe, &r.group_id.0) {
                    return Decision::Refuse(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(GROUP_DENIED.code()),
                    ));
                }
                match &mut r.topics {
                    None => denied.hide_topics = cx.hidden_topics(),
                    Some(list) => list.retain(|t| {
                        if cx.topic(Operation::Describe, &t.name.0) {
                            return true;
                        }
                        denied.items.push(Item::OffsetFetch(
                            t.name.clone(),
                            t.partition_indexes.clone(),
                        ));
                        false
                    }),
                }
            } else {
                if r.groups
                    .iter()
                    .any(|g| !cx.group(Operation::Describe, &g.group_id.0))
                {
                    let groups = r
                        .groups
                        .iter()
                        .map(|g| {
                            kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default()
                                .with_group_id(g.group_id.clone())
                                .with_error_code(if cx.group(Operation::Describe, &g.group_id.0) {
                                    ResponseError::CoordinatorNotAvailable.code()
                                } else {
                                    GROUP_DENIED.code()
                                })
                        })
                        .collect();
                    return Decision::Refuse(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default().with_groups(groups),
                    ));
                }
                for g in &mut r.groups {
                    match &mut g.topics {
                        None => denied.hide_topics = cx.hidden_topics(),
                        Some(list) => list.retain(|t| {
                            if cx.topic(Operation::Describe, &t.name.0) {
                                return true;
                            }
                            denied.items.push(Item::OffsetFetch(
                                t.name.clone(),
                                t.partition_indexes.clone(),
                            ));
                            false
                        }),
                    }
                }
            }
            RequestKind::OffsetFetch(r)
        }
        RequestKind::OffsetDelete(mut r) => {
            if !cx.group(Operation::Delete, &r.group_id.0) {
                return Decision::Refuse(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_DENIED.code()),
                ));
            }
            r.topics.retain(|t| {
                if cx.topic(Operation::Read, &t.name.0) {
                    return true;
                }
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                denied.items.push(Item::OffsetDelete(t.name.clone(), parts));
                false
            });
            RequestKind::OffsetDelete(r)
        }
        RequestKind::DescribeGroups(mut r) => {
            r.groups.retain(|g| {
                if cx.group(Operation::Describe, &g.0) {
                    return true;
                }
                denied.items.push(Item::DescribeGroup(g.clone()));
                false
            });
            RequestKind::DescribeGroups(r)
        }
        RequestKind::DeleteGroups(mut r) => {
            r.groups_names.retain(|g| {
                if cx.group(Operation::Delete, &g.0) {
                    return true;
                }
                denied.items.push(Item::DeleteGroup(g.clone()));
                false
            });
            RequestKind::DeleteGroups(r)
        }
        RequestKind::InitProducerId(r) => {
            let allowed = match &r.transactional_id {
                Some(id) => (cx.may)(Operation::Write, ResourceType::TransactionalId, &id.0),
                None => {
                    (cx.may_quietly)(
                        Operation::IdempotentWrite,
                        ResourceType::Cluster,
                        CLUSTER_RESOURCE,
                    ) || (cx.all_topics)()
                        .iter()
                        .any(|t| (cx.may_quietly)(Operation::Write, ResourceType::Topic, t))
                }
            };
            if !allowed {
                let e = if r.transactional_id.is_some() {
                    ResponseError::TransactionalIdAuthorizationFailed
                } else {
                    CLUSTER_DENIED
                };
                return Decision::Refuse(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(e.code())
                        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                        .with_producer_epoch(-1),
                ));
            }
            RequestKind::InitProducerId(r)
        }
        // v4+ is broker to broker (KIP-890's verification): the cluster's nodes only.
        RequestKind::AddPartitionsToTxn(r) if cx.version >= 4 => {
            if cx.node.is_none() {
                let mut resp = kafka_protocol::messages::AddPartitionsToTxnResponse::default();
                resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
                return Decision::Refuse(ResponseKind::AddPartitionsToTxn(resp));
            }
            RequestKind::AddPartitionsToTxn(r)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            if !(cx.may)(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.v3_and_below_transactional_id.0,
            ) {
                return Decision::Refuse(txn_error(
                    RequestKind::AddPartitionsToTxn(r),
                    ResponseError::TransactionalIdAuthorizationFailed,
                ));
            }
            let denied_topics: Vec<String> = r
                .v3_and_below_topics
                .iter()
                .filter(|t| !cx.topic(Operation::Write, &t.name.0))
                .map(|t| t.name.0.to_string())
                .collect();
            if !denied_topics.is_empty() {
                // As Kafka: the denied topics fail, the rest is not attempted.
                let mut resp = txn_error(
                    RequestKind::AddPartitionsToTxn(r),
                    ResponseError::OperationNotAttempted,
                );
                if let ResponseKind::AddPartitionsToTxn(a) = &mut resp {
                    a.error_code = 0;
                    for t in &mut a.results_by_topic_v3_and_below {
                        if denied_topics.iter().any(|d| d == t.name.0.as_str()) {
                            for p in &mut t.results_by_partition {
                                p.partition_error_code = TOPIC_DENIED.code();
                            }
                        }
                    }
                }
                return Decision::Refuse(resp);
            }
            RequestKind::AddPartitionsToTxn(r)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let error = if !(cx.may)(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.transactional_id.0,
            ) {
                Some(ResponseError::TransactionalIdAuthorizationFailed)
            } else if !cx.group(Operation::Read, &r.group_id.0) {
                Some(GROUP_DENIED)
            } else {
                None
            };
            if let Some(e) = error {
                return Decision::Refuse(txn_error(RequestKind::AddOffsetsToTxn(r), e));
            }
            RequestKind::AddOffsetsToTxn(r)
        }
        RequestKind::EndTxn(r) => {
            if !(cx.may)(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.transactional_id.0,
            ) {
                return Decision::Refuse(txn_error(
                    RequestKind::EndTxn(r),
                    ResponseError::TransactionalIdAuthorizationFailed,
                ));
            }
            RequestKind::EndTxn(r)
        }
        RequestKind::TxnOffsetCommit(r) => {
            let error = if !(cx.may)(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.transactional_id.0,
            ) {
                Some(ResponseError::TransactionalIdAuthorizationFailed)
            } else if !cx.group(Operation::Read, &r.group_id.0) {
                Some(GROUP_DENIED)
            } else if r
                .topics
                .iter()
                .any(|t| !cx.topic(Operation::Read, &t.name.0))
            {
                Some(TOPIC_DENIED)
            } else {
                None
            };
            if let Some(e) = error {
                return Decision::Refuse(txn_error(RequestKind::TxnOffsetCommit(r), e));
            }
            RequestKind::TxnOffsetCommit(r)
        }
        // As Kafka: each id the principal may not describe gets its own error, and the
        // partitions of topics it may not describe are left out of the others.
        RequestKind::DescribeTransactions(mut r) => {
            r.transactional_ids.retain(|id| {
                if (cx.may)(Operation::Describe, ResourceType::TransactionalId, &id.0) {
                    return true;
                }
                denied.items.push(Item::DescribeTransaction(id.clone()));
                false
            });
            denied.hide_topics = cx.hidden_topics();
            RequestKind::DescribeTransactions(r)
        }
        RequestKind::DescribeProducers(r) => {
            if r.topics
                .iter()
                .any(|t| !cx.topic(Operation::Read, &t.name.0))
            {
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        kafka_protocol::messages::describe_producers_response::TopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| {
                                        kafka_protocol::messages::describe_producers_response::PartitionResponse::default()
                                            .with_partition_index(*p)
                                            .with_error_code(TOPIC_DENIED.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Decision::Refuse(ResponseKind::DescribeProducers(
                    kafka_protocol::messages::DescribeProducersResponse::default()
                        .with_topics(topics),
                ));
            }
            RequestKind::DescribeProducers(r)
        }
        RequestKind::DescribeCluster(r) => {
            if !cx.cluster(Operation::Describe) {
                return Decision::Refuse(ResponseKind::DescribeCluster(
                    DescribeClusterResponse::default()
                        .with_error_code(CLUSTER_DENIED.code())
                        .with_error_message(denied_message()),
                ));
            }
            RequestKind::DescribeCluster(r)
        }
        RequestKind::DescribeQuorum(r) => {
            if !cx.cluster(Operation::Describe) {
                return Decision::Refuse(ResponseKind::DescribeQuorum(
                    kafka_protocol::messages::DescribeQuorumResponse::default()
                        .with_error_code(CLUSTER_DENIED.code()),
                ));
            }
            RequestKind::DescribeQuorum(r)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            if !cx.cluster(Operation::Alter) {
                return Decision::Refuse(ResponseKind::AlterPartitionReassignments(
                    kafka_protocol::messages::AlterPartitionReassignmentsResponse::default()
                        .with_error_code(CLUSTER_DENIED.code())
                        .with_error_message(denied_message()),
                ));
            }
            RequestKind::AlterPartitionReassignments(r)
        }
        RequestKind::AddRaftVoter(r) => {
            if !cx.cluster(Operation::Alter) {
                return Decision::Refuse(ResponseKind::AddRaftVoter(
                    kafka_protocol::messages::AddRaftVoterResponse::default()
                        .with_error_code(CLUSTER_DENIED.code())
                        .with_error_message(denied_message()),
                ));
            }
            RequestKind::AddRaftVoter(r)
        }
        RequestKind::RemoveRaftVoter(r) => {
            if !cx.cluster(Operation::Alter) {
                return Decision::Refuse(ResponseKind::RemoveRaftVoter(
                    kafka_protocol::messages::RemoveRaftVoterResponse::default()
                        .with_error_code(CLUSTER_DENIED.code())
                        .with_error_message(denied_message()),
                ));
            }
            RequestKind::RemoveRaftVoter(r)
        }
        RequestKind::ListPartitionReassignments(r) => {
            if !cx.cluster(Operation::Describe) {
                return Decision::Refuse(ResponseKind::ListPartitionReassignments(
                    kafka_protocol::messages::ListPartitionReassignmentsResponse::default()
                        .with_error_code(CLUSTER_DENIED.code())
                        .with_error_message(denied_message()),
                ));
            }
            RequestKind::ListPartitionReassignments(r)
        }
        RequestKind::ElectLeaders(r) => {
            if !cx.cluster(Operation::Alter) {
                return Decision::Refuse(ResponseKind::ElectLeaders(
                    kafka_protocol::messages::ElectLeadersResponse::default()
                        .with_error_code(CLUSTER_DENIED.code()),
                ));
            }
            RequestKind::ElectLeaders(r)
        }
        RequestKind::DescribeLogDirs(r) => {
            if !cx.cluster(Operation::Describe) {
                return Decision::Refuse(ResponseKind::DescribeLogDirs(
                    DescribeLogDirsResponse::default().with_error_code(CLUSTER_DENIED.code()),
                ));
            }
            RequestKind::DescribeLogDirs(r)
        }
        other => other,
    };
    Decision::Serve(body, denied)
}

/// Keeps the config resources the principal may describe (`alter` false) or alter; the others
/// become denied items.
fn retain_configs<T>(
    resources: &mut Vec<T>,
    cx: &Context<'_>,
    alter: bool,
    denied: &mut Denied,
    key: impl Fn(&T) -> (i8, &StrBytes),
) {
    resources.retain(|res| {
        let (resource_type, name) = key(res);
        match config_permission(cx, resource_type, name, alter) {
            None => true,
            Some(e) => {
                denied
                    .items
                    .push(Item::Config(resource_type, name.clone(), e));
                false
            }
        }
    });
}

/// The error for a config resource the principal may not describe (`alter` false) or alter.
fn config_permission(
    cx: &Context<'_>,
    resource_type: i8,
    name: &str,
    alter: bool,
) -> Option<ResponseError> {
    let op = if alter {
        Operation::AlterConfigs
    } else {
        Operation::DescribeConfigs
    };
    if resource_type == CONFIG_TOPIC {
        (!cx.topic(op, name)).then_some(TOPIC_DENIED)
    } else {
        // Broker and broker-logger resources are the cluster's.
        (!cx.cluster(op)).then_some(CLUSTER_DENIED)
    }
}

use crate::broker::txn_error;

#[cfg(test)]
mod tests;
