//! Metadata and the admin APIs through `__meta`; coordinator lookup and group-state writes.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ProducerId, ResponseKind, TopicName,
};

use super::super::{Broker, OFFSETS_TOPIC, Reply, str, valid_topic_name};
use super::{AdminWait, BrokerAddr, ConfigTarget, META_GROUP, Proposal, Wait};
use crate::cluster::{MetaCommand, ProposalId};

impl Broker {
    /// Metadata from the replicated state.
    pub(in crate::broker) fn metadata_cluster(
        &mut self,
        req: MetadataRequest,
        version: i16,
        now_ms: i64,
    ) -> MetadataResponse {
        let auto_create = self.config.auto_create_topics
            && (version < 4 || req.allow_auto_topic_creation)
            && !self.auto_create_denied;
        let mut to_create = Vec::new();
        let c = self.cluster.as_ref().expect("cluster");
        // This node is always listed, registered yet or not: clients need a live broker to ask
        // (librdkafka's admin client gives up on an empty list).
        let listener = self.listener.as_deref();
        let mut listed: BTreeMap<i32, (String, i32)> = c
            .meta
            .brokers
            .keys()
            .filter_map(|&id| Some((id, c.meta.broker_addr(id, listener)?)))
            .collect();
        listed.insert(c.node_id, self.advertised());
        let brokers: Vec<MetadataResponseBroker> = listed
            .iter()
            .map(|(id, (host, port))| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(*id))
                    .with_host(str(host))
                    .with_port(*port)
            })
            .collect();
        let controller = if c.meta_leader.0 > 0 && c.meta.brokers.contains_key(&c.meta_leader.0) {
            c.meta_leader.0
        } else {
            c.node_id
        };
        let mut response = MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(str(&self.cluster_id)))
            .with_controller_id(BrokerId(controller));
        let names = crate::broker::metadata::requested_names(
            req.topics,
            version,
            c.meta.topics.keys().cloned(),
            |id| c.meta.name_of(id).map(str::to_string),
        );
        for (name, by_id) in names {
            let Some(name) = name else {
                response
                    .topics
                    .push(crate::broker::metadata::unknown_topic_id(by_id));
                continue;
            };
            let mut mt = MetadataResponseTopic::default()
                .with_name(Some(TopicName(str(&name))))
                .with_is_internal(crate::broker::is_internal(&name));
            let Some(topic) = c.meta.topics.get(&name) else {
                mt.error_code = if valid_topic_name(&name).is_err() {
                    ResponseError::InvalidTopicException.code()
                } else if auto_create
                    && by_id.is_none()
                    && crate::broker::admin::internal_creation_refusal(&name).is_none()
                {
                    to_create.push(name.clone());
                    ResponseError::LeaderNotAvailable.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                response.topics.push(mt);
                continue;
            };
            mt.topic_id = topic.id;
            mt.partitions = topic
                .partitions
                .iter()
                .enumerate()
                .map(|(p, mp)| {
                    let (leader, epoch) = c.leader_of(&name, p as i32);
                    let replicas: Vec<BrokerId> =
                        mp.all_replicas().into_iter().map(BrokerId).collect();
                    let isr: Vec<BrokerId> = mp.in_sync().iter().map(|&r| BrokerId(r)).collect();
                    MetadataResponsePartition::default()
                        .with_error_code(if leader < 0 {
                            ResponseError::LeaderNotAvailable.code()
                        } else {
                            0
                        })
                        .with_partition_index(p as i32)
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch.max(0))
                        .with_replica_nodes(replicas)
                        .with_isr_nodes(isr)
                })
                .collect();
            response.topics.push(mt);
        }
        for name in to_create {
            self.auto_create(&name, now_ms);
        }
        response
    }

    /// The broker list and controller for DescribeCluster.
    pub(in crate::broker) fn cluster_brokers(&self) -> Option<(Vec<BrokerAddr>, i32)> {
        let c = self.cluster.as_ref()?;
        let listener = self.listener.as_deref();
        let brokers = c
            .meta
            .brokers
            .keys()
            .filter_map(|&id| {
                let (h, p) = c.meta.broker_addr(id, listener)?;
                Some((id, h, p))
            })
            .collect();
        let controller = if c.meta_leader.0 > 0 {
            c.meta_leader.0
        } else {
            c.node_id
        };
        Some((brokers, controller))
    }

    /// Queues a security change for `__meta`; `response` is sent once it applied.
    pub(in crate::broker) fn security_proposal(
        &mut self,
        token: u64,
        change: crate::security::state::SecurityChange,
        response: ResponseKind,
    ) {
        let c = self.cluster.as_mut().expect("cluster");
        c.admins.insert(token, (AdminWait::Security(response), 1));
        self.admin_proposal(token, 0, |request| MetaCommand::Security {
            request: Some(request),
            change,
        });
    }

    pub(super) fn admin_proposal(
        &mut self,
        token: u64,
        slot: usize,
        cmd: impl FnOnce(ProposalId) -> MetaCommand,
    ) {
        let c = self.cluster.as_mut().expect("cluster");
        let id = c.proposal_id();
        c.waits.insert(
            id.seq,
            Wait::Admin {
                token,
                slot,
                group: None,
                since: c.mono,
            },
        );
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: cmd(id).encode(),
        });
    }

    /// CreateTopics through `__meta`: answered when the creation is applied here. A manual
    /// replica assignment is checked here against the members (and again at apply) and placed
    /// as given.
    pub(in crate::broker) fn create_topics_cluster(
        &mut self,
        req: CreateTopicsRequest,
        version: i16,
    ) -> Reply {
        let token = self.new_token();
        let members: Vec<i32> = self.meta().map_or(Vec::new(), |m| m.members().to_vec());
        let n = members.len().max(1) as i32;
        let mut response = CreateTopicsResponse::default();
        let mut pending = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut result = crate::broker::admin::creatable_result(&t);
            #[allow(clippy::type_complexity)]
            let check = (|| -> Result<
                (i32, i32, BTreeMap<String, String>, Option<Vec<Vec<i32>>>),
                (ResponseError, String),
            > {
                if let Some(m) = crate::broker::admin::internal_creation_refusal(&name) {
                    return Err((ResponseError::InvalidRequest, m));
                }
                valid_topic_name(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
                let (partitions, rf, assignment) = if t.assignments.is_empty() {
                    let rf = if t.replication_factor == -1 {
                        n.min(3)
                    } else {
                        i32::from(t.replication_factor)
                    };
                    if rf < 1 || rf > n {
                        return Err((
                            ResponseError::InvalidReplicationFactor,
                            format!(
                                "Replication factor {rf} must be between 1 and the number of brokers ({n})"
                            ),
                        ));
                    }
                    (self.requested_partitions(t.num_partitions), rf, None)
                } else {
                    let a = crate::broker::admin::manual_assignment(&t, &members)?;
                    (a.len() as i32, a[0].len() as i32, Some(a))
                };
                if self.meta().is_some_and(|m| m.topics.contains_key(&name)) {
                    return Err((
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    ));
                }
                let configs = crate::broker::admin::creation_configs(&t.configs)?;
                Ok((partitions, rf, configs, assignment))
            })();
            match check {
                Err((e, m)) => {
                    result.error_code = e.code();
                    result.error_message = Some(str(&m));
                }
                Ok((partitions, rf, configs, assignment)) => {
                    if version >= 5 {
                        result.configs = Some(self.creatable_configs(&configs));
                    }
                    if req.validate_only {
                        result.num_partitions = partitions;
                        result.replication_factor = rf as i16;
                    } else {
                        pending.push((
                            response.topics.len(),
                            name,
                            partitions,
                            rf,
                            configs,
                            assignment,
                        ));
                    }
                }
            }
            response.topics.push(result);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::CreateTopics(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Create(response), pending.len()));
        for (slot, name, partitions, rf, configs, assignment) in pending {
            let id = crate::broker::random_uuid(&mut self.rng);
            self.admin_proposal(token, slot, |request| MetaCommand::CreateTopic {
                request: Some(request),
                name,
                id,
                partitions,
                replication_factor: rf,
                configs,
                assignment,
            });
        }
        Reply::Parked { token }
    }

    /// DeleteTopics through `__meta`.
    pub(in crate::broker) fn delete_topics_cluster(&mut self, req: DeleteTopicsRequest) -> Reply {
        let token = self.new_token();
        let meta = &self.cluster.as_ref().expect("cluster").meta;
        let targets =
            crate::broker::admin::delete_targets(req, |id| meta.name_of(id).map(str::to_string));
        let mut response = DeleteTopicsResponse::default();
        let mut pending = Vec::new();
        for (name, id) in targets {
            let mut r = DeletableTopicResult::default()
                .with_name(name.as_ref().map(|n| TopicName(str(n))))
                .with_topic_id(id);
            match name {
                None => r.error_code = ResponseError::UnknownTopicId.code(),
                Some(n) if crate::broker::is_internal(&n) => {
                    r.error_code = ResponseError::InvalidTopicException.code();
                    r.error_message = Some(str(&format!(
                        "{n} is an internal topic and cannot be deleted"
                    )));
                }
                Some(n) => match meta.topics.get(&n) {
                    None => r.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    Some(t) => {
                        r.topic_id = t.id;
                        pending.push((response.responses.len(), n));
                    }
                },
            }
            response.responses.push(r);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::DeleteTopics(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Delete(response), pending.len()));
        for (slot, name) in pending {
            self.admin_proposal(token, slot, |request| MetaCommand::DeleteTopic {
                request: Some(request),
                name,
            });
        }
        Reply::Parked { token }
    }

    /// CreatePartitions through `__meta`.
    pub(in crate::broker) fn create_partitions_cluster(
        &mut self,
        req: CreatePartitionsRequest,
    ) -> Reply {
        let token = self.new_token();
        let meta = &self.cluster.as_ref().expect("cluster").meta;
        let mut response = CreatePartitionsResponse::default();
        let mut pending = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let check = match meta.topics.get(&name) {
                _ if crate::broker::is_internal(&name) => Err((
                    ResponseError::InvalidRequest,
                    format!("{name} is an internal topic"),
                )),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                )),
                Some(mt) if t.count <= mt.partitions.len() as i32 => Err((
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {} partitions, which is higher than or equal to the requested {}.",
                        mt.partitions.len(),
                        t.count
                    ),
                )),
                Some(mt) => match &t.assignments {
                    None => Ok(None),
                    Some(a) => crate::broker::admin::check_partition_assignments(
                        a,
                        t.count - mt.partitions.len() as i32,
                        meta.members(),
                        mt.partitions.first().map_or(1, |p| p.replicas.len()),
                    )
                    .map(Some),
                },
            };
            match check {
                Err((e, m)) => {
                    r.error_code = e.code();
                    r.error_message = Some(str(&m));
                }
                Ok(_) if req.validate_only => {}
                Ok(assignment) => pending.push((response.results.len(), name, t.count, assignment)),
            }
            response.results.push(r);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::CreatePartitions(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Partitions(response), pending.len()));
        for (slot, name, count, assignment) in pending {
            self.admin_proposal(token, slot, |request| MetaCommand::CreatePartitions {
                request: Some(request),
                name,
                count,
                assignment,
            });
        }
        Reply::Parked { token }
    }

    /// InitProducerId without a transactional id: ids are unique per node without
    /// coordination (node id in the top bits), so any broker answers at once.
    pub(in crate::broker) fn init_producer_id_cluster(
        &mut self,
        req: &InitProducerIdRequest,
    ) -> ResponseKind {
        let mut r = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        debug_assert!(req.transactional_id.is_none(), "served by the coordinator");
        r.producer_id = ProducerId(self.producer_ids.allocate().0);
        r.producer_epoch = 0;
        ResponseKind::InitProducerId(r)
    }

    /// Coordinator of a group in cluster mode: the leader of its `__consumer_offsets` partition.
    pub(in crate::broker) fn coordinator_node(
        &self,
        key: &str,
    ) -> Result<(i32, String, i32), ResponseError> {
        let c = self.cluster.as_ref().expect("cluster");
        let Some(t) = c.meta.topics.get(OFFSETS_TOPIC) else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let p = sluice_coordinator::partition_for(key, t.partitions.len() as i32);
        let (leader, _) = c.leader_of(OFFSETS_TOPIC, p);
        c.meta
            .brokers
            .get(&leader)
            .map(|(h, port)| (leader, h.clone(), *port))
            .ok_or(ResponseError::CoordinatorNotAvailable)
    }

    /// Group-state writes in cluster mode: proposed to the offsets partition's group; the
    /// responses wait until they apply. `Err` when this node no longer leads the partition.
    pub(in crate::broker) fn persist_cluster(
        &mut self,
        partition: i32,
        batch: &[u8],
        responses: Vec<sluice_coordinator::Response>,
        now_ms: i64,
    ) -> Result<(), Vec<sluice_coordinator::Response>> {
        let Some(c) = &mut self.cluster else {
            return Err(responses);
        };
        let Some(group) = c.meta.partition(OFFSETS_TOPIC, partition).map(|p| p.group) else {
            return Err(responses);
        };
        if !c.is_local_leader(group) {
            return Err(responses);
        }
        let (seq, _) = c.propose_entry(group, now_ms, batch, true);
        c.waits.insert(
            seq,
            Wait::Coordinator {
                group,
                responses,
                since: c.mono,
            },
        );
        Ok(())
    }

    /// AlterConfigs / IncrementalAlterConfigs in cluster mode: the standalone code validates and
    /// computes each topic's new overrides; they are proposed to `__meta` as `SetConfigs` and
    /// the response waits until they apply here.
    pub(in crate::broker) fn alter_configs_cluster(
        &mut self,
        body: kafka_protocol::messages::RequestKind,
    ) -> Reply {
        let token = self.new_token();
        let (wait, names) = match body {
            kafka_protocol::messages::RequestKind::AlterConfigs(r) => {
                let resp = self.alter_configs(r);
                let names: Vec<String> = resp
                    .responses
                    .iter()
                    .map(|x| x.resource_name.to_string())
                    .collect();
                (AdminWait::Alter(resp), names)
            }
            kafka_protocol::messages::RequestKind::IncrementalAlterConfigs(r) => {
                let resp = self.incremental_alter_configs(r);
                let names: Vec<String> = resp
                    .responses
                    .iter()
                    .map(|x| x.resource_name.to_string())
                    .collect();
                (AdminWait::IncrementalAlter(resp), names)
            }
            other => unreachable!("only config requests come here, got {other:?}"),
        };
        let c = self.cluster.as_mut().expect("cluster");
        let pending = std::mem::take(&mut c.pending_configs);
        if pending.is_empty() {
            return Reply::Now(match wait {
                AdminWait::Alter(r) => ResponseKind::AlterConfigs(r),
                AdminWait::IncrementalAlter(r) => ResponseKind::IncrementalAlterConfigs(r),
                _ => unreachable!("built above"),
            });
        }
        c.admins.insert(token, (wait, pending.len()));
        for (target, configs) in pending {
            let name = match &target {
                ConfigTarget::Topic(name) => name.clone(),
                ConfigTarget::Broker(-1) => String::new(),
                ConfigTarget::Broker(node) => node.to_string(),
            };
            let slot = names.iter().position(|n| *n == name).unwrap_or(0);
            self.admin_proposal(token, slot, |request| match target {
                ConfigTarget::Topic(name) => MetaCommand::SetConfigs {
                    request: Some(request),
                    name,
                    configs,
                },
                ConfigTarget::Broker(node) => MetaCommand::SetBrokerConfigs {
                    request: Some(request),
                    node,
                    configs,
                },
            });
        }
        Reply::Parked { token }
    }
}

impl Broker {
    /// Kafka's `UnderReplicatedPartitions` (partitions this node leads whose in-sync replicas
    /// lack one of their replicas) and `OfflinePartitionsCount` (partitions with no leader,
    /// counted only by the `__meta` leader, as Kafka counts them on the active controller).
    /// Standalone: both 0.
    pub fn partition_health(&self) -> (usize, usize) {
        let Some(c) = &self.cluster else {
            return (0, 0);
        };
        let (mut under, mut offline) = (0, 0);
        let controller = c.meta_leader.0 == c.node_id;
        for (name, t) in &c.meta.topics {
            for (p, mp) in t.partitions.iter().enumerate() {
                let (leader, _) = c.leader_of(name, p as i32);
                if leader == c.node_id && mp.in_sync().len() < mp.replicas.len() {
                    under += 1;
                }
                if controller && leader < 0 {
                    offline += 1;
                }
            }
        }
        (under, offline)
    }
}
