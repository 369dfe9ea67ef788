//! Cluster mode: the broker as one replica among several.
//!
//! Writes do not touch the local log when a client sends them. The partition leader validates a
//! produce and turns it into a [`Proposal`] for the partition's Raft group; the runtime proposes
//! it, and every replica appends it when Raft hands the committed entry back
//! ([`Broker::apply_partition`]), assigning offsets from its own log end in log order. The
//! client's response waits (parked) until the proposer applied the entry and synced it, so
//! acks=all means "committed on a majority and durable here". Metadata changes go the same way
//! through the `__meta` group ([`Broker::apply_meta`]), which is the single source of topics,
//! replicas and broker addresses on every node.

use std::collections::{BTreeMap, HashMap, VecDeque};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest,
    InitProducerIdResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, ResponseKind, TopicName,
};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::{Broker, Deferred, OFFSETS_TOPIC, Reply, partition_dir, str, valid_topic_name};
use crate::batch;
use crate::cluster::{MetaCommand, MetaEvent, MetaState, PartitionEntry, ProposalId};
use crate::topic_config;

/// A broker's id, host and port.
pub(super) type BrokerAddr = (i32, String, i32);

/// Raft group id of `__meta`.
pub const META_GROUP: u64 = 0;
/// File in a partition directory recording the last Raft entry whose data is durable there.
const APPLIED_FILE: &str = "raft-applied";
/// How long a write waits for its entry to commit before the client hears REQUEST_TIMED_OUT.
const WAIT_MS_MAX: i64 = 30_000;

/// An entry for the runtime to propose.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Raft group ([`META_GROUP`] or a partition's).
    pub group: u64,
    /// Entry data.
    pub data: Vec<u8>,
}

/// A partition group this node starts or stops hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// Start hosting `group` (a replica here).
    Add {
        /// Group id.
        group: u64,
        /// The partition's replicas (the group's voters).
        voters: Vec<u64>,
        /// Entries up to this index are already in the local log.
        applied: u64,
        /// This node is the preferred leader: campaign at once rather than after a timeout.
        campaign: bool,
        /// For logs: the partition.
        topic: String,
        /// For logs: the partition.
        partition: i32,
    },
    /// Stop hosting `group` and delete its Raft state.
    Remove {
        /// Group id.
        group: u64,
    },
}

/// What this node knows about a hosted group's leadership.
#[derive(Debug, Clone, Copy, Default)]
struct Role {
    leader: i32,
    term: u64,
    /// Leader here: the coordinator partition is loaded once entries up to this index applied.
    load_at: Option<u64>,
}

/// Apply progress of one hosted partition group.
#[derive(Debug, Default)]
struct Applied {
    /// Last entry applied to the local log.
    index: u64,
    /// Applied entries not yet synced: (index, log end after it).
    unsynced: VecDeque<(u64, i64)>,
    /// Last entry known durable locally, and the log end after it.
    durable: (u64, i64),
    /// `durable` as last handed out to be written to [`APPLIED_FILE`].
    recorded: u64,
}

/// A client request waiting for entries to apply.
#[derive(Debug)]
enum Wait {
    /// One partition of a parked produce.
    Produce {
        token: u64,
        topic: usize,
        partition: usize,
        group: u64,
        since_ms: i64,
    },
    /// Coordinator responses waiting for their group-state write.
    Coordinator {
        group: u64,
        responses: Vec<sluice_coordinator::Response>,
        since_ms: i64,
    },
    /// One topic of a parked admin request.
    Admin {
        token: u64,
        slot: usize,
        since_ms: i64,
    },
}

/// A parked admin request being assembled.
#[derive(Debug)]
enum AdminWait {
    Create(CreateTopicsResponse),
    Delete(DeleteTopicsResponse),
    Partitions(CreatePartitionsResponse),
}

/// Cluster-mode state of the broker.
#[derive(Debug)]
pub struct ClusterState {
    node_id: i32,
    meta: MetaState,
    /// `__meta` leader and term as last reported (-1: unknown).
    meta_leader: (i32, u64),
    /// Hosted partition groups.
    roles: HashMap<u64, Role>,
    applied: HashMap<u64, Applied>,
    proposals: Vec<Proposal>,
    group_changes: Vec<GroupChange>,
    next_seq: u64,
    waits: HashMap<u64, Wait>,
    produces: HashMap<u64, (ProduceResponse, usize)>,
    admins: HashMap<u64, (AdminWait, usize)>,
    /// Tokens whose response is complete, delivered at the end of the apply batch.
    finished: Vec<(u64, ResponseKind, bool)>,
    wrote: bool,
    last_registration_ms: i64,
    last_offsets_create_ms: i64,
    next_producer_id: i64,
}

impl ClusterState {
    pub(super) fn new(node_id: i32, members: &[i32], now_ms: i64) -> Self {
        ClusterState {
            node_id,
            meta: MetaState::new(members),
            meta_leader: (-1, 0),
            roles: HashMap::new(),
            applied: HashMap::new(),
            proposals: Vec::new(),
            group_changes: Vec::new(),
            next_seq: 0,
            waits: HashMap::new(),
            produces: HashMap::new(),
            admins: HashMap::new(),
            finished: Vec::new(),
            wrote: false,
            last_registration_ms: i64::MIN,
            last_offsets_create_ms: i64::MIN,
            // Unique across nodes (node id in the top bits) and restarts (start time below).
            next_producer_id: (i64::from(node_id) << 48) | ((now_ms & ((1 << 42) - 1)) << 6),
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn proposal_id(&mut self) -> ProposalId {
        ProposalId {
            node: self.node_id as u64,
            seq: self.seq(),
        }
    }

    /// Leader and epoch of a partition: what a hosted group knows beats `__meta`'s record when
    /// its term is newer.
    fn leader_of(&self, topic: &str, partition: i32) -> (i32, i32) {
        let Some(mp) = self.meta.partition(topic, partition) else {
            return (-1, -1);
        };
        match self.roles.get(&mp.group) {
            // A replica knows best once its term caught up with the record: no leader in its
            // current term (an election, or an isolated old leader that stepped down) means
            // none, not the stale one `__meta` recorded.
            Some(r) if r.term as i32 >= mp.leader_epoch && r.term > 0 => {
                let leader = if r.leader > 0 { r.leader } else { -1 };
                (leader, r.term as i32)
            }
            _ => (mp.leader, mp.leader_epoch),
        }
    }

    fn is_local_leader(&self, group: u64) -> bool {
        self.roles
            .get(&group)
            .is_some_and(|r| r.leader == self.node_id)
    }

    fn endpoint(&self, node: i32) -> Option<NodeEndpoint> {
        let (host, port) = self.meta.brokers.get(&node)?;
        Some(
            NodeEndpoint::default()
                .with_node_id(BrokerId(node))
                .with_host(str(host))
                .with_port(*port),
        )
    }
}

/// Why a partition is not writable or readable here.
pub(super) struct NotHere {
    pub error: ResponseError,
    pub leader: i32,
    pub epoch: i32,
}

impl Broker {
    /// Whether this broker runs as a cluster replica.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The replicated metadata (cluster mode).
    pub fn meta(&self) -> Option<&MetaState> {
        self.cluster.as_ref().map(|c| &c.meta)
    }

    /// Entries to propose, in order.
    pub fn take_proposals(&mut self) -> Vec<Proposal> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.proposals))
            .unwrap_or_default()
    }

    /// Partition groups to start or stop hosting.
    pub fn take_group_changes(&mut self) -> Vec<GroupChange> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.group_changes))
            .unwrap_or_default()
    }

    /// Leader epoch of a partition (the Raft term of its leader; 0 standalone).
    pub(super) fn epoch_of(&self, topic: &str, partition: i32) -> i32 {
        match &self.cluster {
            None => 0,
            Some(c) => c.leader_of(topic, partition).1.max(0),
        }
    }

    /// Cluster mode: `Ok` when this node leads the partition, else the error and the leader
    /// hint to answer with.
    pub(super) fn check_leader(&self, topic: &str, partition: i32) -> Result<(), NotHere> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let Some(mp) = c.meta.partition(topic, partition) else {
            return Err(NotHere {
                error: ResponseError::UnknownTopicOrPartition,
                leader: -1,
                epoch: -1,
            });
        };
        if c.is_local_leader(mp.group) {
            return Ok(());
        }
        let (leader, epoch) = c.leader_of(topic, partition);
        Err(NotHere {
            error: if leader < 0 {
                ResponseError::LeaderNotAvailable
            } else {
                ResponseError::NotLeaderOrFollower
            },
            leader,
            epoch,
        })
    }

    /// Address of a broker for KIP-951 hints.
    pub(super) fn node_endpoint(&self, node: i32) -> Option<(String, i32)> {
        self.cluster.as_ref()?.meta.brokers.get(&node).cloned()
    }

    /// `__meta` leadership as the Raft driver reports it.
    pub fn meta_role_changed(&mut self, leader: u64, term: u64) {
        if let Some(c) = &mut self.cluster {
            c.meta_leader = (leader as i32, term);
        }
    }

    /// Periodic cluster duties: announce this broker, create `__consumer_offsets` (the `__meta`
    /// leader does), time out writes whose entries never committed.
    pub fn cluster_tick(&mut self, meta_caught_up: bool, now_ms: i64) {
        let advertised = (
            self.config.advertised_host.clone(),
            self.config.advertised_port,
        );
        let offsets_partitions = self.config.offsets_partitions;
        let Some(c) = &mut self.cluster else { return };
        let registered = c.meta.brokers.get(&c.node_id) == Some(&advertised);
        if !registered
            && c.meta_leader.0 > 0
            && now_ms.saturating_sub(c.last_registration_ms) >= 1000
        {
            c.last_registration_ms = now_ms;
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::RegisterBroker {
                    node_id: c.node_id,
                    host: advertised.0,
                    port: advertised.1,
                }
                .encode(),
            });
        }
        if c.meta_leader.0 == c.node_id
            && meta_caught_up
            && !c.meta.topics.contains_key(OFFSETS_TOPIC)
            && now_ms.saturating_sub(c.last_offsets_create_ms) >= 2000
        {
            c.last_offsets_create_ms = now_ms;
            let rf = c.meta.members().len().min(3) as i32;
            // No compaction yet: keep every record (retention would lose committed offsets).
            let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
            let id = super::random_uuid(&mut self.rng);
            let c = self.cluster.as_mut().expect("cluster");
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::CreateTopic {
                    request: None,
                    name: OFFSETS_TOPIC.into(),
                    id,
                    partitions: offsets_partitions,
                    replication_factor: rf,
                    configs,
                }
                .encode(),
            });
        }
        let c = self.cluster.as_mut().expect("cluster");
        let expired: Vec<u64> = c
            .waits
            .iter()
            .filter(|(_, w)| {
                let since = match w {
                    Wait::Produce { since_ms, .. }
                    | Wait::Coordinator { since_ms, .. }
                    | Wait::Admin { since_ms, .. } => *since_ms,
                };
                now_ms - since > WAIT_MS_MAX
            })
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            self.fail_wait(seq, ResponseError::RequestTimedOut);
        }
        self.deliver_finished();
    }

    /// A proposal the Raft driver refused (no leader known, or not the leader any more).
    pub fn proposal_dropped(&mut self, group: u64, data: &[u8]) {
        let seq = if group == META_GROUP {
            match MetaCommand::decode(data) {
                Ok(Some(
                    MetaCommand::CreateTopic { request, .. }
                    | MetaCommand::DeleteTopic { request, .. }
                    | MetaCommand::CreatePartitions { request, .. }
                    | MetaCommand::SetConfigs { request, .. },
                )) => request.map(|r| r.seq),
                _ => None,
            }
        } else {
            PartitionEntry::decode(data).map(|e| e.seq)
        };
        if let Some(seq) = seq {
            let error = if group == META_GROUP {
                ResponseError::NotController
            } else {
                ResponseError::NotLeaderOrFollower
            };
            self.fail_wait(seq, error);
            self.deliver_finished();
        }
    }

    /// Leadership of a hosted partition group changed. `last_index` is the group's last log
    /// index now (a new leader's first entry of its term).
    pub fn partition_role_changed(
        &mut self,
        group: u64,
        leader: u64,
        term: u64,
        last_index: u64,
        now_ms: i64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        let me = c.node_id;
        let role = c.roles.entry(group).or_default();
        let was_leader = role.leader == me;
        role.leader = leader as i32;
        role.term = term;
        let is_leader = leader as i32 == me;
        let place = c.meta.group(group).map(|(t, p)| (t.to_string(), p));
        if is_leader && !was_leader {
            role.load_at = Some(last_index);
            if let Some((topic, partition)) = &place {
                info!(node_id = me, topic = %topic, partition, term, leader_id = leader, "partition leader elected");
            }
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::Leader {
                    group,
                    leader: me,
                    term,
                }
                .encode(),
            });
            // The coordinator loads the partition once the previous terms are applied.
            let applied = c.applied.get(&group).map_or(0, |a| a.index);
            if applied >= last_index {
                self.on_leader_caught_up(group, now_ms);
            }
        } else if was_leader && !is_leader {
            role.load_at = None;
            let failed: Vec<u64> = c
                .waits
                .iter()
                .filter(|(_, w)| match w {
                    Wait::Produce { group: g, .. } | Wait::Coordinator { group: g, .. } => {
                        *g == group
                    }
                    Wait::Admin { .. } => false,
                })
                .map(|(s, _)| *s)
                .collect();
            for seq in failed {
                self.fail_wait(seq, ResponseError::NotLeaderOrFollower);
            }
            if let Some((topic, partition)) = place
                && topic == OFFSETS_TOPIC
            {
                let actions = self.coordinator.unload_partition(partition);
                self.execute(actions, None, now_ms);
                info!(
                    node_id = me,
                    partition, "group coordinator partition unloaded"
                );
            }
            self.deliver_finished();
        }
    }

    fn on_leader_caught_up(&mut self, group: u64, now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        let Some(role) = c.roles.get_mut(&group) else {
            return;
        };
        if role.load_at.take().is_none() {
            return;
        }
        if let Some((topic, partition)) = c.meta.group(group)
            && topic == OFFSETS_TOPIC
        {
            self.load_offsets_partition(partition, now_ms);
            info!(
                node_id = self.config.node_id,
                partition, "group coordinator partition loaded"
            );
        }
    }

    /// Applies committed `__meta` entries, then brings local topics and hosted groups in line
    /// with the result.
    pub fn apply_meta(&mut self, entries: &[(u64, Vec<u8>)], now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        let mut events = Vec::new();
        for (index, data) in entries {
            match MetaCommand::decode(data) {
                Ok(Some(cmd)) => {
                    debug!(node_id = c.node_id, index, command = ?cmd, "meta apply");
                    events.extend(c.meta.apply(cmd));
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(node_id = c.node_id, index, error = %e, "undecodable meta entry skipped")
                }
            }
        }
        // Deletions first (by id), then creations: a batch may delete and re-create a name.
        for ev in events {
            self.meta_event(ev, now_ms);
        }
        self.reconcile(now_ms);
        self.deliver_finished();
    }

    /// Makes local topics and hosted groups match the replicated metadata.
    fn reconcile(&mut self, now_ms: i64) {
        let Some(c) = &self.cluster else { return };
        let me = c.node_id;
        let wanted: Vec<(String, crate::cluster::MetaTopic)> = c
            .meta
            .topics
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (name, mt) in wanted {
            let count = mt.partitions.len() as i32;
            match self.topics.get(&name) {
                Some(t) if t.id != mt.id => {
                    // Only a replayed TopicDeleted removes local data (see `meta_event`).
                    warn!(node_id = me, topic = %name, local_id = %t.id, cluster_id = %mt.id, "local topic has another id than the cluster's; left alone");
                    continue;
                }
                None => {
                    if let Err((e, m)) = self.create_topic_with(
                        &name,
                        count,
                        mt.configs.clone(),
                        Some(mt.id),
                        now_ms,
                    ) {
                        warn!(node_id = me, topic = %name, error = ?e, message = ?m, "creating a replica failed");
                        continue;
                    }
                }
                Some(t) => {
                    let grow = (t.partitions.len() as i32) < count;
                    let reconfigure = t.configs != mt.configs;
                    if grow && let Err((e, m)) = self.add_partitions_local(&name, count, now_ms) {
                        warn!(node_id = me, topic = %name, error = ?e, message = ?m, "adding partitions failed");
                    }
                    if reconfigure {
                        self.set_configs_local(&name, mt.configs.clone());
                    }
                }
            }
            for (p, mp) in mt.partitions.iter().enumerate() {
                let c = self.cluster.as_ref().expect("cluster");
                if !mp.replicas.contains(&me) || c.applied.contains_key(&mp.group) {
                    continue;
                }
                let applied = self.recover_replica(&name, p as i32, now_ms);
                let c = self.cluster.as_mut().expect("cluster");
                c.applied.insert(
                    mp.group,
                    Applied {
                        index: applied.0,
                        durable: applied,
                        recorded: applied.0,
                        ..Applied::default()
                    },
                );
                c.roles.insert(mp.group, Role::default());
                c.group_changes.push(GroupChange::Add {
                    group: mp.group,
                    voters: mp.replicas.iter().map(|&r| r as u64).collect(),
                    applied: applied.0,
                    campaign: mp.replicas.first() == Some(&me) && applied.0 == 0,
                    topic: name.clone(),
                    partition: p as i32,
                });
            }
        }
        let c = self.cluster.as_mut().expect("cluster");
        let gone: Vec<u64> = c
            .applied
            .keys()
            .filter(|g| !c.meta.groups.contains_key(g))
            .copied()
            .collect();
        for group in gone {
            c.applied.remove(&group);
            c.roles.remove(&group);
            c.group_changes.push(GroupChange::Remove { group });
        }
    }

    /// Reads the partition's applied mark and cuts the local log back to it: anything after
    /// was not recorded durable and is re-applied from the Raft log.
    fn recover_replica(&mut self, topic: &str, partition: i32, now_ms: i64) -> (u64, i64) {
        let path = format!("{}/{APPLIED_FILE}", partition_dir(topic, partition));
        let mark = self
            .fs
            .read_file(&path)
            .ok()
            .flatten()
            .and_then(|b| {
                let s = String::from_utf8(b).ok()?;
                let mut it = s.split_whitespace();
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .unwrap_or((0u64, 0i64));
        if let Ok(log) = self.partition_mut(topic, partition) {
            let end = log.log_end_offset();
            if end > mark.1
                && let Err(e) = log.truncate_to(mark.1, now_ms)
            {
                warn!(node_id = self.config.node_id, topic, partition, error = %e, "truncating to the applied mark failed");
            }
        }
        self.rebuild_producer_state(topic, partition);
        mark
    }

    fn meta_event(&mut self, ev: MetaEvent, now_ms: i64) {
        let me = self.config.node_id as u64;
        let mine = |r: &Option<ProposalId>| r.filter(|r| r.node == me).map(|r| r.seq);
        match ev {
            MetaEvent::TopicCreated { name, request } => {
                info!(node_id = me, topic = %name, "topic created in the cluster");
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None, &name);
                }
            }
            MetaEvent::TopicDeleted {
                name, request, id, ..
            } => {
                info!(node_id = me, topic = %name, topic_id = %id, "topic deleted from the cluster");
                if self.topics.get(&name).is_some_and(|t| t.id == id)
                    && let Err((e, m)) = self.delete_topic_local(&name, now_ms)
                {
                    warn!(node_id = me, topic = %name, error = ?e, message = ?m, "removing a deleted topic failed");
                }
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None, &name);
                }
            }
            MetaEvent::PartitionsCreated { name, request, .. }
            | MetaEvent::ConfigsChanged { name, request } => {
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None, &name);
                }
            }
            MetaEvent::Refused {
                request,
                error,
                message,
            } => {
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, Some((error, message)), "");
                }
            }
            MetaEvent::BrokerRegistered { node_id } => {
                info!(node_id = me, broker = node_id, "broker registered");
            }
            MetaEvent::LeaderRecorded { .. } => {}
        }
    }

    /// Applies committed entries of a partition group to the local log.
    pub fn apply_partition(&mut self, group: u64, entries: &[(u64, u64, Vec<u8>)], now_ms: i64) {
        let me = self.config.node_id as u64;
        for (index, term, data) in entries {
            let Some(c) = &mut self.cluster else { return };
            let Some(applied) = c.applied.get_mut(&group) else {
                return;
            };
            if *index <= applied.index {
                continue;
            }
            applied.index = *index;
            let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p))
            else {
                continue;
            };
            if let Some(e) = PartitionEntry::decode(data) {
                let epoch = i32::try_from(*term).unwrap_or(i32::MAX);
                let result =
                    self.append_partition_at(&topic, partition, Some(e.records), epoch, e.now_ms);
                let c = self.cluster.as_mut().expect("cluster");
                if result.is_ok() {
                    c.wrote = true;
                }
                if let Err((err, msg)) = &result
                    && e.proposer != me
                {
                    warn!(node_id = me, topic = %topic, partition, index, error = ?err, message = ?msg, "a committed entry did not apply");
                }
                let end = self
                    .partition(&topic, partition)
                    .map_or(0, |l| l.log_end_offset());
                let sync_writes = self.config.sync_writes;
                let c = self.cluster.as_mut().expect("cluster");
                let applied = c.applied.get_mut(&group).expect("checked");
                if sync_writes {
                    applied.unsynced.push_back((*index, end));
                } else {
                    applied.durable = (*index, end);
                }
                if e.proposer == me {
                    self.complete_wait(e.seq, result);
                }
            }
            let c = self.cluster.as_mut().expect("cluster");
            if c.roles
                .get(&group)
                .and_then(|r| r.load_at)
                .is_some_and(|at| *index >= at)
            {
                self.on_leader_caught_up(group, now_ms);
            }
        }
    }

    /// Ends an apply round: one sync covers everything applied, and finished requests are
    /// answered once it completes.
    pub fn finish_apply(&mut self) {
        if let Some(c) = &mut self.cluster
            && std::mem::take(&mut c.wrote)
        {
            self.write_seq += 1;
        }
        self.deliver_finished();
    }

    /// Called by `complete_sync`: entries whose data is now durable.
    pub(super) fn cluster_synced(&mut self, topic_id: Uuid, partition: i32, end: i64) {
        let Some(c) = &mut self.cluster else { return };
        let Some(name) = self.ids.get(&topic_id) else {
            return;
        };
        let Some(mp) = c.meta.partition(name, partition) else {
            return;
        };
        if let Some(a) = c.applied.get_mut(&mp.group) {
            while let Some(&(index, e)) = a.unsynced.front() {
                if e > end {
                    break;
                }
                a.durable = (index, e);
                a.unsynced.pop_front();
            }
        }
    }

    /// Applied marks that moved since last asked: (group, file path, contents). The runtime
    /// writes them (atomically); Raft entries up to them never need re-applying.
    pub fn take_applied_marks(&mut self) -> Vec<(u64, String, Vec<u8>)> {
        let Some(c) = &mut self.cluster else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (group, a) in c.applied.iter_mut() {
            if a.durable.0 > a.recorded
                && let Some((topic, p)) = c.meta.group(*group)
            {
                a.recorded = a.durable.0;
                out.push((
                    *group,
                    format!("{}/{APPLIED_FILE}", partition_dir(topic, p)),
                    format!("{} {}\n", a.durable.0, a.durable.1).into_bytes(),
                ));
            }
        }
        out
    }

    /// The index up to which the local log of `group` is durable (what a restart resumes from).
    pub fn durable_applied(&self, group: u64) -> u64 {
        self.cluster
            .as_ref()
            .and_then(|c| c.applied.get(&group))
            .map_or(0, |a| a.durable.0)
    }

    fn complete_wait(
        &mut self,
        seq: u64,
        result: Result<(i64, i64), (ResponseError, Option<String>)>,
    ) {
        let ok = result.is_ok();
        let Some(c) = &mut self.cluster else { return };
        match c.waits.remove(&seq) {
            Some(Wait::Produce {
                token,
                topic,
                partition,
                ..
            }) => {
                if let Some((resp, outstanding)) = c.produces.get_mut(&token) {
                    let pr = &mut resp.responses[topic].partition_responses[partition];
                    match result {
                        Ok((base, start)) => {
                            pr.base_offset = base;
                            pr.log_start_offset = start;
                        }
                        Err((e, msg)) => {
                            pr.error_code = e.code();
                            pr.error_message = msg.map(|m| str(&m));
                        }
                    }
                    *outstanding -= 1;
                    if *outstanding == 0 {
                        let (resp, _) = c.produces.remove(&token).expect("present");
                        c.finished.push((token, ResponseKind::Produce(resp), ok));
                    }
                }
            }
            Some(Wait::Coordinator { responses, .. }) => {
                for r in responses {
                    let token = r.token;
                    let body = if ok {
                        r.body
                    } else {
                        r.into_error(ResponseError::CoordinatorNotAvailable).body
                    };
                    c.finished.push((token, body, ok));
                }
            }
            Some(Wait::Admin { .. }) | None => {}
        }
    }

    fn fail_wait(&mut self, seq: u64, error: ResponseError) {
        let Some(c) = &mut self.cluster else { return };
        match c.waits.remove(&seq) {
            Some(Wait::Produce {
                token,
                topic,
                partition,
                group,
                ..
            }) => {
                let hint = c
                    .meta
                    .group(group)
                    .map(|(t, p)| c.leader_of(t, p))
                    .unwrap_or((-1, -1));
                let endpoint = c.endpoint(hint.0);
                if let Some((resp, outstanding)) = c.produces.get_mut(&token) {
                    let pr = &mut resp.responses[topic].partition_responses[partition];
                    pr.error_code = error.code();
                    if hint.0 >= 0 && hint.0 != c.node_id {
                        pr.current_leader = LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(hint.0))
                            .with_leader_epoch(hint.1);
                        if let Some(ep) = endpoint
                            && !resp.node_endpoints.iter().any(|e| e.node_id.0 == hint.0)
                        {
                            resp.node_endpoints.push(ep);
                        }
                    }
                    *outstanding -= 1;
                    if *outstanding == 0 {
                        let (resp, _) = c.produces.remove(&token).expect("present");
                        c.finished.push((token, ResponseKind::Produce(resp), false));
                    }
                }
            }
            Some(Wait::Coordinator { responses, .. }) => {
                for r in responses {
                    let token = r.token;
                    c.finished.push((
                        token,
                        r.into_error(ResponseError::NotCoordinator).body,
                        false,
                    ));
                }
            }
            Some(Wait::Admin { .. }) => {
                self.admin_done(seq, Some((error, error.to_string())), "");
            }
            None => {}
        }
    }

    fn deliver_finished(&mut self) {
        let seq = self.write_seq;
        let sync = self.config.sync_writes;
        let Some(c) = &mut self.cluster else { return };
        for (token, response, wrote) in c.finished.drain(..) {
            self.deferred.push(Deferred {
                token,
                seq: if wrote && sync { seq } else { 0 },
                response,
            });
        }
    }

    fn admin_done(&mut self, seq: u64, error: Option<(ResponseError, String)>, _name: &str) {
        let Some(c) = &mut self.cluster else { return };
        let Some(Wait::Admin { token, slot, .. }) = c.waits.remove(&seq) else {
            return;
        };
        let Some((wait, outstanding)) = c.admins.get_mut(&token) else {
            return;
        };
        match wait {
            AdminWait::Create(r) => {
                let t = &mut r.topics[slot];
                match &error {
                    Some((e, m)) => {
                        t.error_code = e.code();
                        t.error_message = Some(str(m));
                    }
                    None => {
                        if let Some(mt) = c.meta.topics.get(t.name.as_str()) {
                            t.topic_id = mt.id;
                            t.num_partitions = mt.partitions.len() as i32;
                            t.replication_factor =
                                mt.partitions.first().map_or(1, |p| p.replicas.len() as i16);
                        }
                    }
                }
            }
            AdminWait::Delete(r) => {
                if let Some((e, m)) = &error {
                    r.responses[slot].error_code = e.code();
                    r.responses[slot].error_message = Some(str(m));
                }
            }
            AdminWait::Partitions(r) => {
                if let Some((e, m)) = &error {
                    r.results[slot].error_code = e.code();
                    r.results[slot].error_message = Some(str(m));
                }
            }
        }
        *outstanding -= 1;
        if *outstanding == 0 {
            let (wait, _) = c.admins.remove(&token).expect("present");
            let response = match wait {
                AdminWait::Create(r) => ResponseKind::CreateTopics(r),
                AdminWait::Delete(r) => ResponseKind::DeleteTopics(r),
                AdminWait::Partitions(r) => ResponseKind::CreatePartitions(r),
            };
            c.finished.push((token, response, false));
        }
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Produce in cluster mode: validate on the leader, propose one entry per partition.
    pub(super) fn produce_cluster(
        &mut self,
        req: ProduceRequest,
        version: i16,
        now_ms: i64,
    ) -> Reply {
        let acks = req.acks;
        let token = self.new_token();
        let mut response = ProduceResponse::default();
        let mut proposed = 0usize;
        for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
            let name = if version >= 13 {
                self.ids.get(&topic_data.topic_id).cloned()
            } else {
                Some(topic_data.name.0.to_string())
            };
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for (pi, pd) in topic_data.partition_data.into_iter().enumerate() {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let outcome = (|| -> Result<u64, (ResponseError, Option<String>, i32, i32)> {
                    if !matches!(acks, -1..=1) {
                        return Err((ResponseError::InvalidRequiredAcks, None, -1, -1));
                    }
                    if req.transactional_id.is_some() {
                        return Err((
                            ResponseError::TransactionalIdAuthorizationFailed,
                            None,
                            -1,
                            -1,
                        ));
                    }
                    let Some(n) = &name else {
                        return Err((ResponseError::UnknownTopicId, None, -1, -1));
                    };
                    if n == OFFSETS_TOPIC {
                        return Err((ResponseError::InvalidTopicException, None, -1, -1));
                    }
                    if !self.meta().is_some_and(|m| m.topics.contains_key(n)) {
                        self.auto_create(n, now_ms);
                        return Err((ResponseError::UnknownTopicOrPartition, None, -1, -1));
                    }
                    self.check_leader(n, pd.index)
                        .map_err(|h| (h.error, None, h.leader, h.epoch))?;
                    if let Some(f) = &self.storage_failure {
                        return Err((
                            ResponseError::KafkaStorageError,
                            Some(format!("storage failed: {f}")),
                            -1,
                            -1,
                        ));
                    }
                    let Some(records) = pd.records.as_deref() else {
                        return Err((
                            ResponseError::InvalidRecord,
                            Some("no records".into()),
                            -1,
                            -1,
                        ));
                    };
                    let limit = self
                        .partition(n, pd.index)
                        .map(|l| l.config().max_message_bytes)
                        .unwrap_or(usize::MAX);
                    let headers = batch::validate_all(records).map_err(|e| {
                        let code = match e {
                            batch::BatchError::Crc { .. } | batch::BatchError::Truncated { .. } => {
                                ResponseError::CorruptMessage
                            }
                            _ => ResponseError::InvalidRecord,
                        };
                        (code, Some(e.to_string()), -1, -1)
                    })?;
                    if let Some(h) = headers.iter().find(|h| h.total_bytes() > limit) {
                        return Err((
                            ResponseError::MessageTooLarge,
                            Some(format!(
                                "batch of {} bytes exceeds max.message.bytes {limit}",
                                h.total_bytes()
                            )),
                            -1,
                            -1,
                        ));
                    }
                    let c = self.cluster.as_mut().expect("cluster");
                    let group = c.meta.partition(n, pd.index).expect("checked").group;
                    let seq = c.seq();
                    c.proposals.push(Proposal {
                        group,
                        data: PartitionEntry {
                            proposer: c.node_id as u64,
                            seq,
                            now_ms,
                            records,
                        }
                        .encode(),
                    });
                    if acks != 0 {
                        c.waits.insert(
                            seq,
                            Wait::Produce {
                                token,
                                topic: ti,
                                partition: pi,
                                group,
                                since_ms: now_ms,
                            },
                        );
                    }
                    Ok(seq)
                })();
                match outcome {
                    Ok(_) => proposed += 1,
                    Err((e, msg, leader, epoch)) => {
                        pr.error_code = e.code();
                        pr.error_message = msg.map(|m| str(&m));
                        if leader >= 0 && version >= 10 {
                            pr.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(epoch);
                            if let Some(ep) = self.cluster.as_ref().and_then(|c| c.endpoint(leader))
                                && !response
                                    .node_endpoints
                                    .iter()
                                    .any(|x| x.node_id.0 == leader)
                            {
                                response.node_endpoints.push(ep);
                            }
                        }
                    }
                }
                partitions.push(pr);
            }
            let mut tr = TopicProduceResponse::default().with_partition_responses(partitions);
            if version >= 13 {
                tr.topic_id = topic_data.topic_id;
            } else {
                tr.name = topic_data.name;
            }
            response.responses.push(tr);
        }
        if acks == 0 {
            return Reply::Nothing;
        }
        if proposed == 0 {
            return Reply::Now(ResponseKind::Produce(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.produces.insert(token, (response, proposed));
        Reply::Parked { token }
    }

    /// Proposes the creation of a topic a client asked for by name (auto-creation).
    pub(super) fn auto_create(&mut self, name: &str, _now_ms: i64) {
        if !self.config.auto_create_topics || valid_topic_name(name).is_err() {
            return;
        }
        let partitions = self.config.default_partitions;
        let id = super::random_uuid(&mut self.rng);
        let Some(c) = &mut self.cluster else { return };
        let rf = c.meta.members().len().min(3) as i32;
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: MetaCommand::CreateTopic {
                request: None,
                name: name.to_string(),
                id,
                partitions,
                replication_factor: rf,
                configs: BTreeMap::new(),
            }
            .encode(),
        });
    }

    /// Metadata from the replicated state.
    pub(super) fn metadata_cluster(
        &mut self,
        req: MetadataRequest,
        version: i16,
        now_ms: i64,
    ) -> MetadataResponse {
        let auto_create =
            self.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        let requested: Option<Vec<_>> = match req.topics {
            Some(t) if !(version == 0 && t.is_empty()) => Some(t),
            _ => None,
        };
        let mut to_create = Vec::new();
        let c = self.cluster.as_ref().expect("cluster");
        // This node is always listed, registered yet or not: clients need a live broker to ask
        // (librdkafka's admin client gives up on an empty list).
        let mut listed = c.meta.brokers.clone();
        listed.entry(c.node_id).or_insert((
            self.config.advertised_host.clone(),
            self.config.advertised_port,
        ));
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
        let names: Vec<(Option<String>, Option<Uuid>)> = match requested {
            None => c
                .meta
                .topics
                .keys()
                .map(|n| (Some(n.clone()), None))
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|t| match t.name {
                    Some(n) => (Some(n.0.to_string()), None),
                    None => (
                        c.meta
                            .topics
                            .iter()
                            .find(|(_, m)| m.id == t.topic_id)
                            .map(|(n, _)| n.clone()),
                        Some(t.topic_id),
                    ),
                })
                .collect(),
        };
        for (name, by_id) in names {
            let Some(name) = name else {
                response.topics.push(
                    MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(by_id.unwrap_or_default()),
                );
                continue;
            };
            let mut mt = MetadataResponseTopic::default()
                .with_name(Some(TopicName(str(&name))))
                .with_is_internal(name == OFFSETS_TOPIC);
            let Some(topic) = c.meta.topics.get(&name) else {
                mt.error_code = if valid_topic_name(&name).is_err() {
                    ResponseError::InvalidTopicException.code()
                } else if auto_create && by_id.is_none() {
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
                        mp.replicas.iter().map(|&r| BrokerId(r)).collect();
                    MetadataResponsePartition::default()
                        .with_error_code(if leader < 0 {
                            ResponseError::LeaderNotAvailable.code()
                        } else {
                            0
                        })
                        .with_partition_index(p as i32)
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch.max(0))
                        .with_replica_nodes(replicas.clone())
                        .with_isr_nodes(replicas)
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
    pub(super) fn cluster_brokers(&self) -> Option<(Vec<BrokerAddr>, i32)> {
        let c = self.cluster.as_ref()?;
        let brokers = c
            .meta
            .brokers
            .iter()
            .map(|(id, (h, p))| (*id, h.clone(), *p))
            .collect();
        let controller = if c.meta_leader.0 > 0 {
            c.meta_leader.0
        } else {
            c.node_id
        };
        Some((brokers, controller))
    }

    fn admin_proposal(
        &mut self,
        token: u64,
        slot: usize,
        cmd: impl FnOnce(ProposalId) -> MetaCommand,
        now_ms: i64,
    ) {
        let c = self.cluster.as_mut().expect("cluster");
        let id = c.proposal_id();
        c.waits.insert(
            id.seq,
            Wait::Admin {
                token,
                slot,
                since_ms: now_ms,
            },
        );
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: cmd(id).encode(),
        });
    }

    /// CreateTopics through `__meta`: answered when the creation is applied here.
    pub(super) fn create_topics_cluster(&mut self, req: CreateTopicsRequest, now_ms: i64) -> Reply {
        let token = self.new_token();
        let members = self.meta().map_or(1, |m| m.members().len()) as i32;
        let mut response = CreateTopicsResponse::default();
        let mut pending = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let partitions = if t.num_partitions == -1 {
                self.config.default_partitions
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                members.min(3)
            } else {
                i32::from(t.replication_factor)
            };
            let check = (|| -> Result<BTreeMap<String, String>, (ResponseError, String)> {
                valid_topic_name(&name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
                if !t.assignments.is_empty() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "manual replica assignment is not supported; replicas are placed by the cluster".into(),
                    ));
                }
                if rf < 1 || rf > members {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "Replication factor {rf} must be between 1 and the number of brokers ({members})"
                        ),
                    ));
                }
                if self.meta().is_some_and(|m| m.topics.contains_key(&name)) {
                    return Err((
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    ));
                }
                let mut configs = BTreeMap::new();
                for c in &t.configs {
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    topic_config::validate(&c.name, &value)
                        .map_err(|m| (ResponseError::InvalidConfig, m))?;
                    configs.insert(c.name.to_string(), value);
                }
                Ok(configs)
            })();
            match check {
                Err((e, m)) => {
                    result.error_code = e.code();
                    result.error_message = Some(str(&m));
                }
                Ok(_) if req.validate_only => {
                    result.num_partitions = partitions;
                    result.replication_factor = rf as i16;
                }
                Ok(configs) => pending.push((response.topics.len(), name, partitions, rf, configs)),
            }
            response.topics.push(result);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::CreateTopics(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Create(response), pending.len()));
        for (slot, name, partitions, rf, configs) in pending {
            let id = super::random_uuid(&mut self.rng);
            self.admin_proposal(
                token,
                slot,
                |request| MetaCommand::CreateTopic {
                    request: Some(request),
                    name,
                    id,
                    partitions,
                    replication_factor: rf,
                    configs,
                },
                now_ms,
            );
        }
        Reply::Parked { token }
    }

    /// DeleteTopics through `__meta`.
    pub(super) fn delete_topics_cluster(&mut self, req: DeleteTopicsRequest, now_ms: i64) -> Reply {
        let token = self.new_token();
        let meta = self.meta().expect("cluster").clone();
        let mut targets: Vec<(Option<String>, Uuid)> = req
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect();
        for t in req.topics {
            match t.name {
                Some(n) => targets.push((Some(n.0.to_string()), Uuid::nil())),
                None => targets.push((
                    meta.topics
                        .iter()
                        .find(|(_, m)| m.id == t.topic_id)
                        .map(|(n, _)| n.clone()),
                    t.topic_id,
                )),
            }
        }
        let mut response = DeleteTopicsResponse::default();
        let mut pending = Vec::new();
        for (name, id) in targets {
            let mut r = DeletableTopicResult::default()
                .with_name(name.as_ref().map(|n| TopicName(str(n))))
                .with_topic_id(id);
            match name {
                None => r.error_code = ResponseError::UnknownTopicId.code(),
                Some(n) if n == OFFSETS_TOPIC => {
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
            self.admin_proposal(
                token,
                slot,
                |request| MetaCommand::DeleteTopic {
                    request: Some(request),
                    name,
                },
                now_ms,
            );
        }
        Reply::Parked { token }
    }

    /// CreatePartitions through `__meta`.
    pub(super) fn create_partitions_cluster(
        &mut self,
        req: CreatePartitionsRequest,
        now_ms: i64,
    ) -> Reply {
        let token = self.new_token();
        let meta = self.meta().expect("cluster").clone();
        let mut response = CreatePartitionsResponse::default();
        let mut pending = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let check = match meta.topics.get(&name) {
                _ if name == OFFSETS_TOPIC => Err((
                    ResponseError::InvalidRequest,
                    format!("{name} is an internal topic"),
                )),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                )),
                Some(_) if t.assignments.is_some() => Err((
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported".into(),
                )),
                Some(mt) if t.count <= mt.partitions.len() as i32 => Err((
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {} partitions, which is higher than or equal to the requested {}.",
                        mt.partitions.len(),
                        t.count
                    ),
                )),
                Some(_) => Ok(()),
            };
            match check {
                Err((e, m)) => {
                    r.error_code = e.code();
                    r.error_message = Some(str(&m));
                }
                Ok(()) if req.validate_only => {}
                Ok(()) => pending.push((response.results.len(), name, t.count)),
            }
            response.results.push(r);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::CreatePartitions(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Partitions(response), pending.len()));
        for (slot, name, count) in pending {
            self.admin_proposal(
                token,
                slot,
                |request| MetaCommand::CreatePartitions {
                    request: Some(request),
                    name,
                    count,
                },
                now_ms,
            );
        }
        Reply::Parked { token }
    }

    /// InitProducerId without a transactional id: ids are unique per node without
    /// coordination (node id in the top bits), so any broker answers at once.
    pub(super) fn init_producer_id_cluster(&mut self, req: &InitProducerIdRequest) -> ResponseKind {
        let mut r = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if req.transactional_id.is_some() {
            r.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return ResponseKind::InitProducerId(r);
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.next_producer_id += 1;
        r.producer_id = ProducerId(c.next_producer_id);
        r.producer_epoch = 0;
        ResponseKind::InitProducerId(r)
    }

    /// Coordinator of a group in cluster mode: the leader of its `__consumer_offsets` partition.
    pub(super) fn coordinator_node(&self, key: &str) -> Result<(i32, String, i32), ResponseError> {
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
    pub(super) fn persist_cluster(
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
        let seq = c.seq();
        c.proposals.push(Proposal {
            group,
            data: PartitionEntry {
                proposer: c.node_id as u64,
                seq,
                now_ms,
                records: batch,
            }
            .encode(),
        });
        c.waits.insert(
            seq,
            Wait::Coordinator {
                group,
                responses,
                since_ms: now_ms,
            },
        );
        Ok(())
    }
}
