//! The metadata state machine replicated by the `__meta` Raft group: brokers, topics,
//! partitions, replica assignments, configs and the last known leader of every partition.
//!
//! Commands are validated when they are *applied*, not when proposed: two nodes may propose
//! conflicting commands (two CreateTopics of one name), and only Raft order decides which wins.
//! Everything an apply decides (group ids, replica placement) depends only on the state and the
//! command, so every node computes the same result.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Starts `__meta` snapshot data (format version 1: the state as JSON after it).
const IMAGE_MAGIC: &[u8] = b"sluice-meta-image/1\n";

/// Identifies a proposal so the node that proposed it can answer the waiting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// Proposing node.
    pub node: u64,
    /// Proposer-local sequence.
    pub seq: u64,
}

/// A change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A node announces where clients reach it.
    RegisterBroker {
        /// Node id.
        node_id: i32,
        /// Advertised Kafka host.
        host: String,
        /// Advertised Kafka port.
        port: i32,
        /// Advertised address per listener name (absent in entries of older versions).
        #[serde(default)]
        listeners: BTreeMap<String, (String, i32)>,
        /// Where peers reach its Raft transport (absent in entries of older versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raft_addr: Option<String>,
    },
    /// Adds a node to the cluster (AddRaftVoter): it may host partitions, and `__meta` takes it
    /// in as a learner, then a voter once it caught up.
    AddMember {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// The new node's id.
        node_id: i32,
        /// Its Raft address (`host:port`).
        raft_addr: String,
    },
    /// Removes a node (RemoveRaftVoter): every replica it holds moves to the other members,
    /// then it leaves `__meta`.
    RemoveMember {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// The node leaving.
        node_id: i32,
    },
    /// Changes ACLs or SCRAM credentials.
    Security {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// The change.
        change: crate::security::state::SecurityChange,
    },
    /// Creates a topic; replicas are placed at apply time.
    CreateTopic {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Topic name.
        name: String,
        /// Topic id chosen by the proposer.
        id: Uuid,
        /// Partition count.
        partitions: i32,
        /// Replicas per partition.
        replication_factor: i32,
        /// Config overrides.
        configs: BTreeMap<String, String>,
        /// Replicas per partition chosen by the client (absent in entries of older versions:
        /// placed by the cluster).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Topic name.
        name: String,
    },
    /// Grows a topic to `count` partitions.
    CreatePartitions {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Topic name.
        name: String,
        /// New total partition count.
        count: i32,
        /// Replicas of each new partition chosen by the client (absent: placed by the cluster).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Replaces a topic's config overrides.
    SetConfigs {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Topic name.
        name: String,
        /// The complete new overrides.
        configs: BTreeMap<String, String>,
    },
    /// Replaces a node's dynamic broker configs (`node` -1: the cluster-wide defaults).
    SetBrokerConfigs {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Node id, or -1.
        node: i32,
        /// The complete new dynamic configs.
        configs: BTreeMap<String, String>,
    },
    /// A node became leader of a partition group in `term`.
    Leader {
        /// Partition group.
        group: u64,
        /// The new leader.
        leader: i32,
        /// Its Raft term (the leader epoch).
        term: u64,
    },
    /// The leader of a partition group in `term` reports which replicas keep up with it.
    Isr {
        /// Partition group.
        group: u64,
        /// The reporting leader.
        leader: i32,
        /// Its term; a report from an older term than the recorded leader's is ignored.
        term: u64,
        /// Replicas in sync, the leader included.
        isr: Vec<i32>,
    },
    /// Moves a partition to other replicas (AlterPartitionReassignments); `None` cancels the
    /// move in progress.
    Reassign {
        /// Waiting request, if any.
        request: Option<ProposalId>,
        /// Topic name.
        topic: String,
        /// Partition.
        partition: i32,
        /// The replicas wanted, the first the preferred leader.
        replicas: Option<Vec<i32>>,
    },
    /// The leader of a partition group reports that its Raft voters are now `replicas`, the
    /// move's target: the move is complete.
    Reassigned {
        /// Partition group.
        group: u64,
        /// The voters (the target, in its order).
        replicas: Vec<i32>,
        /// The move reported on (`MetaPartition::moves` when the leader saw it): a report
        /// about an earlier move settles nothing.
        #[serde(default)]
        move_id: u64,
    },
}

impl MetaCommand {
    /// Entry data for the `__meta` log.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("meta commands serialize")
    }

    /// Parses entry data; `None` for an empty (no-op) entry.
    pub fn decode(data: &[u8]) -> Result<Option<Self>, String> {
        if data.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(data)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// One partition as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaPartition {
    /// Its Raft group id.
    pub group: u64,
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// Last leader reported through `__meta` (-1: none yet).
    pub leader: i32,
    /// That leader's term.
    pub leader_epoch: i32,
    /// In-sync replicas as that leader last reported them (empty: not reported yet, all).
    pub isr: Vec<i32>,
    /// The replicas a move in progress goes to (AlterPartitionReassignments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<i32>>,
    /// Every node that may be in the group's Raft membership while a move (or its cancel) is
    /// under way: they keep hosting it until its leader reports the membership settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub involved: Vec<i32>,
    /// The replicas the group's Raft log started with, once they differ from `replicas`: a
    /// replica rebuilding the group from the log must start from them (None: `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Vec<i32>>,
    /// Moves (and cancels) accepted so far: identifies the one a completion report is about.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moves: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MetaPartition {
    /// The replicas the partition's Raft group should have: the move's target while one is in
    /// progress.
    pub fn wanted(&self) -> &[i32] {
        self.target.as_deref().unwrap_or(&self.replicas)
    }

    /// Whether `node` holds (or is getting, or may still be in the membership of) a replica.
    pub fn hosted_on(&self, node: i32) -> bool {
        self.replicas.contains(&node)
            || self.involved.contains(&node)
            || self.target.as_ref().is_some_and(|t| t.contains(&node))
    }

    /// The voters the group's Raft log started with.
    pub fn initial_voters(&self) -> &[i32] {
        self.initial.as_deref().unwrap_or(&self.replicas)
    }

    /// Whether a move or its cleanup is under way.
    pub fn moving(&self) -> bool {
        self.target.is_some() || !self.involved.is_empty()
    }

    /// Every replica during a move, as Kafka lists them: the target's, then those leaving.
    pub fn all_replicas(&self) -> Vec<i32> {
        let mut all = self.wanted().to_vec();
        all.extend(
            self.replicas
                .iter()
                .filter(|r| !all.contains(r))
                .copied()
                .collect::<Vec<_>>(),
        );
        all
    }

    /// The in-sync replicas to report to clients.
    pub fn in_sync(&self) -> &[i32] {
        if self.isr.is_empty() {
            &self.replicas
        } else {
            &self.isr
        }
    }
}

/// A topic as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaTopic {
    /// Topic id.
    pub id: Uuid,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<MetaPartition>,
}

/// What applying a command changed, for the node to act on (create logs, start groups,
/// answer the proposer).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaEvent {
    /// A broker's address is known (or changed).
    BrokerRegistered {
        /// Node id.
        node_id: i32,
    },
    /// A topic exists now.
    TopicCreated {
        /// Topic.
        name: String,
        /// Waiting request.
        request: Option<ProposalId>,
    },
    /// A topic is gone, with the groups of its partitions.
    TopicDeleted {
        /// Topic.
        name: String,
        /// Its id.
        id: Uuid,
        /// Partition groups to stop.
        groups: Vec<u64>,
        /// Waiting request.
        request: Option<ProposalId>,
    },
    /// Partitions `from..` of a topic exist now.
    PartitionsCreated {
        /// Topic.
        name: String,
        /// First new partition.
        from: i32,
        /// Waiting request.
        request: Option<ProposalId>,
    },
    /// A topic's configs changed.
    ConfigsChanged {
        /// Topic.
        name: String,
        /// Waiting request.
        request: Option<ProposalId>,
    },
    /// A node's dynamic broker configs changed.
    BrokerConfigsChanged {
        /// Waiting request.
        request: Option<ProposalId>,
    },
    /// A command was refused.
    Refused {
        /// Waiting request.
        request: Option<ProposalId>,
        /// Kafka error.
        error: ResponseError,
        /// Why.
        message: String,
    },
    /// A partition leader was recorded.
    LeaderRecorded {
        /// Partition group.
        group: u64,
    },
    /// ACLs or credentials changed.
    SecurityChanged {
        /// Waiting request, if any.
        request: Option<ProposalId>,
    },
    /// A node was added to or removed from the members.
    MembersChanged {
        /// Waiting request, if any.
        request: Option<ProposalId>,
    },
    /// A partition's move began, was cancelled or completed: nodes start or stop hosting it.
    ReassignmentChanged {
        /// Partition group.
        group: u64,
        /// Waiting request, if any.
        request: Option<ProposalId>,
    },
}

/// The replicated metadata (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    members: Vec<i32>,
    /// The members the cluster started with.
    #[serde(default)]
    initial: Vec<i32>,
    /// Advertised Kafka addresses by node id.
    pub brokers: BTreeMap<i32, (String, i32)>,
    /// Advertised addresses by node id, then listener name.
    #[serde(default)]
    pub listeners: BTreeMap<i32, BTreeMap<String, (String, i32)>>,
    /// ACLs and SCRAM credentials.
    #[serde(default)]
    pub security: crate::security::state::SecurityState,
    /// Topics by name.
    pub topics: BTreeMap<String, MetaTopic>,
    /// Partition group id → (topic, partition).
    pub groups: BTreeMap<u64, (String, i32)>,
    /// Dynamic broker configs by node id (-1: the cluster-wide defaults).
    #[serde(default)]
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Raft addresses by node id, as nodes registered them or AddMember gave them.
    #[serde(default)]
    pub raft_addrs: BTreeMap<i32, String>,
    next_group: u64,
    placements: u64,
}

impl MetaState {
    /// The empty state of a cluster whose nodes are `members`.
    pub fn new(members: &[i32]) -> Self {
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        MetaState {
            initial: members.clone(),
            members,
            brokers: BTreeMap::new(),
            listeners: BTreeMap::new(),
            security: Default::default(),
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
            raft_addrs: BTreeMap::new(),
            next_group: 1,
            placements: 0,
        }
    }

    /// The cluster's node ids, ascending.
    pub fn members(&self) -> &[i32] {
        &self.members
    }

    /// The voters `__meta` should have: the members, and a removed node until no partition
    /// replica is left on it (it keeps learning how its moves end).
    pub fn meta_voters(&self) -> Vec<i32> {
        let mut voters = self.members.clone();
        for t in self.topics.values() {
            for p in &t.partitions {
                for &n in p.replicas.iter().chain(&p.involved) {
                    if !voters.contains(&n) {
                        voters.push(n);
                    }
                }
            }
        }
        voters.sort_unstable();
        voters
    }

    /// The members new replicas may be placed on: those the cluster started with, and added
    /// ones once they registered (started and caught up): a node added but not started yet
    /// gets nothing it would leave without a replica.
    pub fn placeable(&self) -> Vec<i32> {
        self.members
            .iter()
            .copied()
            .filter(|m| self.initial.contains(m) || self.brokers.contains_key(m))
            .collect()
    }

    /// Whether `node` still holds, gets or may be in the membership of any partition replica.
    pub fn hosts_anything(&self, node: i32) -> bool {
        self.topics
            .values()
            .any(|t| t.partitions.iter().any(|p| p.hosted_on(node)))
    }

    /// Why removing `node` is refused, if it is: not a member, the last one, or some partition
    /// it holds finds no other member to move to.
    pub fn removal_refusal(&self, node: i32) -> Option<(ResponseError, String)> {
        if !self.members.contains(&node) {
            return Some((
                ResponseError::VoterNotFound,
                format!(
                    "node {node} is not a member of the cluster (members: {:?})",
                    self.members
                ),
            ));
        }
        if self.members.len() == 1 {
            return Some((
                ResponseError::InvalidRequest,
                format!("node {node} is the cluster's last member"),
            ));
        }
        let placeable = self.placeable();
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let wanted = p.wanted();
                if wanted.contains(&node)
                    && !placeable.iter().any(|m| *m != node && !wanted.contains(m))
                {
                    return Some((
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "removing node {node} would leave partition {name}-{i} (replication factor {}) below its replication factor: no other running member can take its replica; add a node (and start it) first, or lower the replication factor with a reassignment",
                            wanted.len()
                        ),
                    ));
                }
            }
        }
        None
    }

    /// Drops the addresses of removed nodes that hold no replica any more: clients and peers
    /// stop being told about them.
    fn forget_departed(&mut self) {
        let gone: Vec<i32> = self
            .brokers
            .keys()
            .chain(self.raft_addrs.keys())
            .copied()
            .filter(|n| !self.members.contains(n) && !self.hosts_anything(*n))
            .collect();
        for n in gone {
            self.brokers.remove(&n);
            self.listeners.remove(&n);
            self.raft_addrs.remove(&n);
        }
    }

    /// Moves every replica of `node` (no longer a member) to the least loaded member that does
    /// not hold one of the partition yet, in the replica's place (so a preferred leader's
    /// place goes to its replacement). Returns the groups whose move began.
    fn move_off(&mut self, node: i32) -> Vec<u64> {
        let mut load: BTreeMap<i32, usize> = self.placeable().iter().map(|&m| (m, 0)).collect();
        for t in self.topics.values() {
            for p in &t.partitions {
                for r in p.wanted() {
                    if let Some(n) = load.get_mut(r) {
                        *n += 1;
                    }
                }
            }
        }
        let mut moved = Vec::new();
        for t in self.topics.values_mut() {
            for part in &mut t.partitions {
                let wanted = part.wanted().to_vec();
                let Some(at) = wanted.iter().position(|&r| r == node) else {
                    continue;
                };
                let Some((&to, _)) = load
                    .iter()
                    .filter(|(m, _)| !wanted.contains(m))
                    .min_by_key(|(m, n)| (**n, **m))
                else {
                    continue;
                };
                *load.get_mut(&to).expect("member") += 1;
                let mut target = wanted;
                target[at] = to;
                for r in part.replicas.iter().chain(target.iter()) {
                    if !part.involved.contains(r) {
                        part.involved.push(*r);
                    }
                }
                part.moves += 1;
                part.target = (target != part.replicas).then_some(target);
                moved.push(part.group);
            }
        }
        moved
    }

    /// The state as `__meta` snapshot data: what a replica too far behind installs instead of
    /// the entries compacted away, and what a restart resumes from.
    pub fn encode_image(&self) -> Vec<u8> {
        let mut out = IMAGE_MAGIC.to_vec();
        serde_json::to_writer(&mut out, self).expect("the metadata serializes");
        out
    }

    /// Reads [`MetaState::encode_image`]'s output; `None` for other snapshot data (the empty
    /// bootstrap snapshot of a new cluster's log).
    pub fn decode_image(data: &[u8]) -> Option<Result<Self, String>> {
        let body = data.strip_prefix(IMAGE_MAGIC)?;
        Some(serde_json::from_slice(body).map_err(|e| format!("a __meta snapshot image: {e}")))
    }

    /// The name of the topic with id `id`.
    pub fn name_of(&self, id: Uuid) -> Option<&str> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(n, _)| n.as_str())
    }

    /// The partition behind a group id.
    pub fn group(&self, group: u64) -> Option<(&str, i32)> {
        self.groups.get(&group).map(|(t, p)| (t.as_str(), *p))
    }

    /// A partition's metadata.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&MetaPartition> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    /// Applies one command (see the module docs).
    pub fn apply(&mut self, cmd: MetaCommand) -> Vec<MetaEvent> {
        match cmd {
            MetaCommand::RegisterBroker {
                node_id,
                host,
                port,
                listeners,
                raft_addr,
            } => {
                if !self.members.contains(&node_id) {
                    return vec![refused(
                        None,
                        ResponseError::BrokerIdNotRegistered,
                        format!("node {node_id} is not a cluster member"),
                    )];
                }
                self.brokers.insert(node_id, (host, port));
                self.listeners.insert(node_id, listeners);
                // The address AddMember (or the first registration) recorded is what peers
                // were told and dial: a node's own view (its bind address, a name resolved
                // on its host) never replaces it.
                if let Some(a) = raft_addr {
                    self.raft_addrs.entry(node_id).or_insert(a);
                }
                vec![MetaEvent::BrokerRegistered { node_id }]
            }
            MetaCommand::AddMember {
                request,
                node_id,
                raft_addr,
            } => {
                if node_id <= 0 {
                    return vec![refused(
                        request,
                        ResponseError::InvalidRequest,
                        format!("{node_id} is not a valid node id (ids start at 1)"),
                    )];
                }
                if self.members.contains(&node_id) {
                    return vec![refused(
                        request,
                        ResponseError::DuplicateVoter,
                        format!("node {node_id} is already a member of the cluster"),
                    )];
                }
                if let Some((other, _)) = self
                    .raft_addrs
                    .iter()
                    .find(|(id, a)| **a == raft_addr && self.members.contains(id))
                {
                    return vec![refused(
                        request,
                        ResponseError::InvalidRequest,
                        format!("node {other} already uses the raft address {raft_addr}"),
                    )];
                }
                self.members.push(node_id);
                self.members.sort_unstable();
                self.raft_addrs.insert(node_id, raft_addr);
                vec![MetaEvent::MembersChanged { request }]
            }
            MetaCommand::RemoveMember { request, node_id } => {
                if let Some((e, m)) = self.removal_refusal(node_id) {
                    return vec![refused(request, e, m)];
                }
                self.members.retain(|m| *m != node_id);
                let mut events: Vec<MetaEvent> = self
                    .move_off(node_id)
                    .into_iter()
                    .map(|group| MetaEvent::ReassignmentChanged {
                        group,
                        request: None,
                    })
                    .collect();
                self.broker_configs.remove(&node_id);
                self.forget_departed();
                events.push(MetaEvent::MembersChanged { request });
                events
            }
            MetaCommand::Security { request, change } => {
                self.security.apply(&change);
                vec![MetaEvent::SecurityChanged { request }]
            }
            MetaCommand::CreateTopic {
                request,
                name,
                id,
                partitions,
                replication_factor,
                configs,
                assignment,
            } => {
                if self.topics.contains_key(&name) {
                    return vec![refused(
                        request,
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    )];
                }
                let parts = if let Some(assignment) = assignment {
                    if let Err(e) = self
                        .check_placement(assignment.len() as i32, 1)
                        .and_then(|()| self.check_assignment(&assignment, None))
                    {
                        return vec![refused(request, e.0, e.1)];
                    }
                    assignment
                        .into_iter()
                        .enumerate()
                        .map(|(p, replicas)| self.place_on(&name, p as i32, replicas))
                        .collect()
                } else {
                    if let Err(e) = self.check_placement(partitions, replication_factor) {
                        return vec![refused(request, e.0, e.1)];
                    }
                    (0..partitions)
                        .map(|p| self.place(&name, p, replication_factor))
                        .collect()
                };
                self.topics.insert(
                    name.clone(),
                    MetaTopic {
                        id,
                        configs,
                        partitions: parts,
                    },
                );
                vec![MetaEvent::TopicCreated { name, request }]
            }
            MetaCommand::DeleteTopic { request, name } => match self.topics.remove(&name) {
                None => vec![refused(
                    request,
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                )],
                Some(t) => {
                    let groups: Vec<u64> = t.partitions.iter().map(|p| p.group).collect();
                    for g in &groups {
                        self.groups.remove(g);
                    }
                    vec![MetaEvent::TopicDeleted {
                        name,
                        id: t.id,
                        groups,
                        request,
                    }]
                }
            },
            MetaCommand::CreatePartitions {
                request,
                name,
                count,
                assignment,
            } => {
                let Some(t) = self.topics.get(&name) else {
                    return vec![refused(
                        request,
                        ResponseError::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    )];
                };
                let from = t.partitions.len() as i32;
                if count <= from {
                    return vec![refused(
                        request,
                        ResponseError::InvalidPartitions,
                        format!(
                            "Topic currently has {from} partitions, {count} would not be an increase."
                        ),
                    )];
                }
                let rf = t.partitions.first().map_or(1, |p| p.replicas.len() as i32);
                if let Err(e) = self.check_placement(count - from, rf) {
                    return vec![refused(request, e.0, e.1)];
                }
                let parts: Vec<MetaPartition> = match assignment {
                    Some(assignment) => {
                        if assignment.len() as i64 != i64::from(count - from) {
                            return vec![refused(
                                request,
                                ResponseError::InvalidReplicaAssignment,
                                format!(
                                    "Attempted to add {} additional partition(s), but only {} assignment(s) were specified.",
                                    count - from,
                                    assignment.len()
                                ),
                            )];
                        }
                        if let Err(e) = self.check_assignment(&assignment, Some(rf as usize)) {
                            return vec![refused(request, e.0, e.1)];
                        }
                        assignment
                            .into_iter()
                            .zip(from..count)
                            .map(|(replicas, p)| self.place_on(&name, p, replicas))
                            .collect()
                    }
                    None => (from..count).map(|p| self.place(&name, p, rf)).collect(),
                };
                self.topics
                    .get_mut(&name)
                    .expect("checked")
                    .partitions
                    .extend(parts);
                vec![MetaEvent::PartitionsCreated {
                    name,
                    from,
                    request,
                }]
            }
            MetaCommand::SetConfigs {
                request,
                name,
                configs,
            } => match self.topics.get_mut(&name) {
                None => vec![refused(
                    request,
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{name}' does not exist."),
                )],
                Some(t) => {
                    t.configs = configs;
                    vec![MetaEvent::ConfigsChanged { name, request }]
                }
            },
            MetaCommand::SetBrokerConfigs {
                request,
                node,
                configs,
            } => {
                if configs.is_empty() {
                    self.broker_configs.remove(&node);
                } else {
                    self.broker_configs.insert(node, configs);
                }
                vec![MetaEvent::BrokerConfigsChanged { request }]
            }
            MetaCommand::Leader {
                group,
                leader,
                term,
            } => {
                let Some(part) = self.group_partition_mut(group) else {
                    return Vec::new();
                };
                let term = i32::try_from(term).unwrap_or(i32::MAX);
                if term < part.leader_epoch {
                    return Vec::new();
                }
                if term > part.leader_epoch || leader != part.leader {
                    // A new leader reports its own view of who keeps up.
                    part.isr.clear();
                }
                part.leader = leader;
                part.leader_epoch = term;
                vec![MetaEvent::LeaderRecorded { group }]
            }
            MetaCommand::Isr {
                group,
                leader,
                term,
                mut isr,
            } => {
                let Some(part) = self.group_partition_mut(group) else {
                    return Vec::new();
                };
                let term = i32::try_from(term).unwrap_or(i32::MAX);
                isr.sort_unstable();
                isr.dedup();
                if term != part.leader_epoch
                    || leader != part.leader
                    || !isr.contains(&leader)
                    || isr.iter().any(|r| !part.hosted_on(*r))
                {
                    return Vec::new();
                }
                part.isr = isr;
                vec![MetaEvent::LeaderRecorded { group }]
            }
            MetaCommand::Reassign {
                request,
                topic,
                partition,
                replicas,
            } => {
                let missing = || format!("The partition {topic}-{partition} does not exist.");
                let Some(group) = self.partition(&topic, partition).map(|p| p.group) else {
                    return vec![refused(
                        request,
                        ResponseError::UnknownTopicOrPartition,
                        missing(),
                    )];
                };
                if let Some(r) = &replicas
                    && let Err((e, m)) = self.check_assignment(std::slice::from_ref(r), None)
                {
                    return vec![refused(request, e, m)];
                }
                let part = self.group_partition_mut(group).expect("checked");
                if replicas.is_none() && part.target.is_none() {
                    return vec![refused(
                        request,
                        ResponseError::NoReassignmentInProgress,
                        format!("No reassignment is in progress for partition {topic}-{partition}"),
                    )];
                }
                // Whoever may join the membership stays a host until it settles.
                for r in part.replicas.iter().chain(replicas.iter().flatten()) {
                    if !part.involved.contains(r) {
                        part.involved.push(*r);
                    }
                }
                part.moves += 1;
                match replicas {
                    None => part.target = None,
                    // Back to where it is: nothing to move.
                    Some(r) if r == part.replicas => part.target = None,
                    Some(r) => part.target = Some(r),
                }
                vec![MetaEvent::ReassignmentChanged { group, request }]
            }
            MetaCommand::Reassigned {
                group,
                replicas,
                move_id,
            } => {
                let Some(part) = self.group_partition_mut(group) else {
                    return Vec::new();
                };
                // Only the membership still wanted settles a move (not one cancelled or
                // replaced since).
                if replicas.as_slice() != part.wanted() || !part.moving() || move_id != part.moves {
                    return Vec::new();
                }
                if replicas != part.replicas && part.initial.is_none() {
                    part.initial = Some(part.replicas.clone());
                }
                part.isr.retain(|r| replicas.contains(r));
                part.replicas = replicas;
                part.target = None;
                part.involved.clear();
                self.forget_departed();
                vec![MetaEvent::ReassignmentChanged {
                    group,
                    request: None,
                }]
            }
        }
    }

    /// Where clients on `listener` reach `node` (its default address when it did not register
    /// that listener).
    pub fn broker_addr(&self, node: i32, listener: Option<&str>) -> Option<(String, i32)> {
        listener
            .and_then(|l| self.listeners.get(&node)?.get(l).cloned())
            .or_else(|| self.brokers.get(&node).cloned())
    }

    /// The partition a group replicates.
    fn group_partition_mut(&mut self, group: u64) -> Option<&mut MetaPartition> {
        let (topic, p) = self.groups.get(&group)?;
        self.topics.get_mut(topic)?.partitions.get_mut(*p as usize)
    }

    fn check_placement(&self, partitions: i32, rf: i32) -> Result<(), (ResponseError, String)> {
        if !(1..=100_000).contains(&partitions) {
            return Err((
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be between 1 and 100000, got {partitions}"),
            ));
        }
        let brokers = self.placeable().len();
        if rf < 1 || rf as usize > brokers {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "Replication factor {rf} must be between 1 and the number of brokers ({brokers})"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a client's replica lists against the members, as Kafka's controller does:
    /// non-empty, known brokers, none twice, one replica count (`rf` when given) for all.
    fn check_assignment(
        &self,
        assignment: &[Vec<i32>],
        rf: Option<usize>,
    ) -> Result<(), (ResponseError, String)> {
        let mut rf = rf;
        for replicas in assignment {
            let bad = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
            if replicas.is_empty() {
                return bad(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            for (i, b) in sorted.iter().enumerate() {
                if !self.placeable().contains(b) {
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
            match rf {
                Some(n) if n != replicas.len() => {
                    return bad(format!(
                        "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {n} replica(s).",
                        replicas.len()
                    ));
                }
                _ => rf = Some(replicas.len()),
            }
        }
        Ok(())
    }

    /// Places one new partition: replicas rotate over the members, so preferred leaders (the
    /// first replica) spread evenly across nodes.
    fn place(&mut self, topic: &str, partition: i32, rf: i32) -> MetaPartition {
        let placeable = self.placeable();
        let n = placeable.len();
        let start = (self.placements % n as u64) as usize;
        self.placements += 1;
        let replicas = (0..rf as usize)
            .map(|i| placeable[(start + i) % n])
            .collect();
        self.place_on(topic, partition, replicas)
    }

    /// Places one new partition on `replicas` (the first is its preferred leader).
    fn place_on(&mut self, topic: &str, partition: i32, replicas: Vec<i32>) -> MetaPartition {
        let group = self.next_group;
        self.next_group += 1;
        self.groups.insert(group, (topic.to_string(), partition));
        MetaPartition {
            group,
            replicas,
            leader: -1,
            leader_epoch: 0,
            isr: Vec::new(),
            target: None,
            involved: Vec::new(),
            initial: None,
            moves: 0,
        }
    }
}

fn refused(request: Option<ProposalId>, error: ResponseError, message: String) -> MetaEvent {
    MetaEvent::Refused {
        request,
        error,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: i32, rf: i32) -> MetaCommand {
        MetaCommand::CreateTopic {
            request: None,
            name: name.into(),
            id: Uuid::from_u128(name.len() as u128),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
            assignment: None,
        }
    }

    fn add(node: i32, addr: &str) -> MetaCommand {
        MetaCommand::AddMember {
            request: None,
            node_id: node,
            raft_addr: addr.into(),
        }
    }

    fn register(node: i32) -> MetaCommand {
        MetaCommand::RegisterBroker {
            node_id: node,
            host: "h".into(),
            port: 9000 + node,
            listeners: BTreeMap::new(),
            raft_addr: Some(format!("elsewhere:{node}")),
        }
    }

    fn remove(node: i32) -> MetaCommand {
        MetaCommand::RemoveMember {
            request: None,
            node_id: node,
        }
    }

    fn refusal(events: &[MetaEvent]) -> Option<ResponseError> {
        events.iter().find_map(|e| match e {
            MetaEvent::Refused { error, .. } => Some(*error),
            _ => None,
        })
    }

    #[test]
    fn an_image_brings_back_the_same_state_and_applies_on_alike() {
        let mut m = MetaState::new(&[1, 2, 3]);
        for cmd in [
            register(1),
            add(4, "h:7004"),
            create("orders", 6, 3),
            create("t", 2, 1),
            MetaCommand::SetBrokerConfigs {
                request: None,
                node: -1,
                configs: BTreeMap::from([("log.retention.ms".into(), "1000".into())]),
            },
            MetaCommand::DeleteTopic {
                request: None,
                name: "t".into(),
            },
        ] {
            m.apply(cmd);
        }
        let image = m.encode_image();
        let mut back = MetaState::decode_image(&image)
            .expect("an image")
            .expect("decodes");
        assert_eq!(back, m);
        // Placement and group ids continue from the same counters.
        let (a, b) = (
            m.apply(create("later", 4, 2)),
            back.apply(create("later", 4, 2)),
        );
        assert_eq!((a, &back), (b, &m));
        assert!(
            MetaState::decode_image(b"").is_none(),
            "the bootstrap snapshot"
        );
        assert!(
            MetaState::decode_image(&image[..image.len() - 1])
                .expect("an image")
                .is_err()
        );
    }

    #[test]
    fn members_are_added_once_and_refused_on_a_taken_address() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.raft_addrs.insert(1, "h:7001".into());
        assert_eq!(refusal(&m.apply(add(4, "h:7004"))), None);
        assert_eq!(m.members(), &[1, 2, 3, 4]);
        assert_eq!(m.meta_voters(), vec![1, 2, 3, 4]);
        assert_eq!(
            refusal(&m.apply(add(4, "h:7009"))),
            Some(ResponseError::DuplicateVoter)
        );
        assert_eq!(
            refusal(&m.apply(add(5, "h:7001"))),
            Some(ResponseError::InvalidRequest),
            "node 1's address"
        );
        assert_eq!(
            refusal(&m.apply(add(0, "h:7000"))),
            Some(ResponseError::InvalidRequest)
        );
        assert_eq!(m.members(), &[1, 2, 3, 4]);
        assert_eq!(m.raft_addrs[&4], "h:7004");
    }

    #[test]
    fn a_removed_member_moves_every_replica_then_is_forgotten() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.apply(create("t", 6, 2));
        m.apply(add(4, "h:7004"));
        // Added but not started: nothing is placed on it.
        assert_eq!(m.placeable(), vec![1, 2, 3]);
        m.apply(register(4));
        assert_eq!(m.placeable(), vec![1, 2, 3, 4]);
        assert_eq!(
            m.raft_addrs[&4], "h:7004",
            "the address it was added with stays"
        );
        m.apply(MetaCommand::RegisterBroker {
            node_id: 2,
            host: "h".into(),
            port: 9002,
            listeners: BTreeMap::new(),
            raft_addr: Some("h:7002".into()),
        });
        let on_2: Vec<u64> = m.topics["t"]
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&2))
            .map(|p| p.group)
            .collect();
        assert_eq!(on_2.len(), 4, "6 partitions x 2 replicas over 3 nodes");
        let events = m.apply(remove(2));
        assert_eq!(refusal(&events), None);
        assert_eq!(m.members(), &[1, 3, 4]);
        // Every replica of node 2 goes elsewhere, in its place, spread over the others (node 4
        // holds nothing yet, so it takes most), and never twice into one partition.
        let mut took = BTreeMap::new();
        for p in &m.topics["t"].partitions {
            let wanted = p.wanted();
            assert!(!wanted.contains(&2), "{p:?}");
            assert_eq!(wanted.len(), 2);
            assert_ne!(wanted[0], wanted[1]);
            if on_2.contains(&p.group) {
                let at = p.replicas.iter().position(|r| *r == 2).unwrap();
                *took.entry(wanted[at]).or_insert(0) += 1;
                assert!(p.hosted_on(2), "node 2 hosts until the move settles");
            }
        }
        assert!(took[&4] >= 2, "{took:?}");
        // Node 2 stays a `__meta` voter (and known) until its last replica moved.
        assert!(m.meta_voters().contains(&2));
        assert!(m.brokers.contains_key(&2));
        for group in on_2 {
            let (t, p) = m.group(group).map(|(t, p)| (t.to_string(), p)).unwrap();
            let mp = m.partition(&t, p).unwrap().clone();
            m.apply(MetaCommand::Reassigned {
                group,
                replicas: mp.wanted().to_vec(),
                move_id: mp.moves,
            });
        }
        assert_eq!(m.meta_voters(), vec![1, 3, 4]);
        assert!(!m.brokers.contains_key(&2) && !m.raft_addrs.contains_key(&2));
        assert_eq!(
            refusal(&m.apply(remove(2))),
            Some(ResponseError::VoterNotFound)
        );
    }

    #[test]
    fn a_removal_that_leaves_a_partition_short_is_refused_and_changes_nothing() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.apply(create("t", 1, 3));
        let before = m.clone();
        assert_eq!(
            refusal(&m.apply(remove(3))),
            Some(ResponseError::InvalidReplicationFactor)
        );
        assert_eq!(m, before);
        // With a fourth node there is room, once it runs.
        m.apply(add(4, "h:7004"));
        assert_eq!(
            refusal(&m.clone().apply(remove(3))),
            Some(ResponseError::InvalidReplicationFactor)
        );
        m.apply(register(4));
        assert_eq!(refusal(&m.apply(remove(3))), None);
        assert_eq!(m.topics["t"].partitions[0].wanted().len(), 3);
        assert!(m.topics["t"].partitions[0].wanted().contains(&4));
        let mut lone = MetaState::new(&[1]);
        assert_eq!(
            refusal(&lone.apply(remove(1))),
            Some(ResponseError::InvalidRequest)
        );
    }

    #[test]
    fn a_move_settles_only_on_its_own_report_and_its_nodes_host_until_then() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.apply(create("t", 1, 1));
        let home = m.topics["t"].partitions[0].replicas[0];
        let to = if home == 3 { 1 } else { home + 1 };
        let group = m.topics["t"].partitions[0].group;
        let reassign = |replicas: Option<Vec<i32>>| MetaCommand::Reassign {
            request: None,
            topic: "t".into(),
            partition: 0,
            replicas,
        };
        // Nothing to cancel: refused, and nothing changes.
        let before = m.clone();
        assert!(matches!(
            m.apply(reassign(None))[..],
            [MetaEvent::Refused {
                error: ResponseError::NoReassignmentInProgress,
                ..
            }]
        ));
        assert_eq!(m, before);
        m.apply(reassign(Some(vec![to])));
        let reported = |move_id| MetaCommand::Reassigned {
            group,
            replicas: vec![to],
            move_id,
        };
        // A report about an earlier move settles nothing.
        assert!(m.apply(reported(0)).is_empty());
        let p = &m.topics["t"].partitions[0];
        assert!(p.hosted_on(home) && p.hosted_on(to));
        assert!(!m.apply(reported(1)).is_empty());
        let p = &m.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![to]);
        assert_eq!(p.initial_voters(), &[home]);
        assert!(!p.moving() && !p.hosted_on(home));
        // A cancel keeps every node that took part hosting until the leader reports.
        m.apply(reassign(Some(vec![home])));
        m.apply(reassign(None));
        let p = &m.topics["t"].partitions[0];
        assert!(p.target.is_none() && p.moving() && p.hosted_on(home));
        let settled = MetaCommand::Reassigned {
            group,
            replicas: vec![to],
            move_id: 3,
        };
        assert!(!m.apply(settled).is_empty());
        assert!(!m.topics["t"].partitions[0].hosted_on(home));
    }

    #[test]
    fn replicas_rotate_so_leaders_spread_and_groups_are_unique() {
        let mut m = MetaState::new(&[3, 1, 2]);
        assert_eq!(
            m.apply(create("t", 6, 3)),
            vec![MetaEvent::TopicCreated {
                name: "t".into(),
                request: None
            }]
        );
        let t = &m.topics["t"];
        let mut preferred = BTreeMap::new();
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 3);
            *preferred.entry(p.replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(
            preferred.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
        let groups: Vec<u64> = t.partitions.iter().map(|p| p.group).collect();
        assert_eq!(groups, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(m.group(4), Some(("t", 3)));
    }

    #[test]
    fn conflicting_commands_are_decided_by_log_order() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.apply(create("t", 1, 1));
        let again = m.apply(create("t", 2, 1));
        assert!(matches!(
            &again[..],
            [MetaEvent::Refused {
                error: ResponseError::TopicAlreadyExists,
                ..
            }]
        ));
        assert!(matches!(
            &m.apply(create("u", 1, 4))[..],
            [MetaEvent::Refused {
                error: ResponseError::InvalidReplicationFactor,
                ..
            }]
        ));
        assert_eq!(m.topics["t"].partitions.len(), 1);
    }

    #[test]
    fn leaders_only_move_forward_in_term_and_delete_frees_groups() {
        let mut m = MetaState::new(&[1, 2, 3]);
        m.apply(create("t", 2, 3));
        m.apply(MetaCommand::Leader {
            group: 1,
            leader: 2,
            term: 5,
        });
        m.apply(MetaCommand::Leader {
            group: 1,
            leader: 3,
            term: 4,
        });
        assert_eq!(m.partition("t", 0).unwrap().leader, 2);
        assert_eq!(m.partition("t", 0).unwrap().leader_epoch, 5);
        // ISR reports: only from the recorded leader in its term, listing itself and replicas.
        let isr = |leader: i32, term: u64, isr: Vec<i32>| MetaCommand::Isr {
            group: 1,
            leader,
            term,
            isr,
        };
        assert_eq!(m.partition("t", 0).unwrap().in_sync(), &[1, 2, 3]);
        m.apply(isr(2, 5, vec![2, 1]));
        assert_eq!(m.partition("t", 0).unwrap().in_sync(), &[1, 2]);
        for stale in [
            isr(3, 5, vec![3]),
            isr(2, 4, vec![2]),
            isr(2, 5, vec![1]),
            isr(2, 5, vec![2, 7]),
        ] {
            m.apply(stale);
            assert_eq!(m.partition("t", 0).unwrap().in_sync(), &[1, 2]);
        }
        // A new leader starts from "all" until it reports.
        m.apply(MetaCommand::Leader {
            group: 1,
            leader: 3,
            term: 6,
        });
        assert_eq!(m.partition("t", 0).unwrap().in_sync(), &[1, 2, 3]);
        let ev = m.apply(MetaCommand::DeleteTopic {
            request: None,
            name: "t".into(),
        });
        assert!(
            matches!(&ev[..], [MetaEvent::TopicDeleted { groups, .. }] if groups == &vec![1, 2])
        );
        assert!(m.groups.is_empty());
        // New groups never reuse ids of deleted ones.
        m.apply(create("t", 1, 1));
        assert_eq!(m.topics["t"].partitions[0].group, 3);
        let grown = m.apply(MetaCommand::CreatePartitions {
            request: None,
            name: "t".into(),
            count: 3,
            assignment: None,
        });
        assert!(matches!(
            &grown[..],
            [MetaEvent::PartitionsCreated { from: 1, .. }]
        ));
        assert_eq!(m.topics["t"].partitions.len(), 3);
    }

    #[test]
    fn manual_assignments_are_checked_and_placed_as_given() {
        let mut m = MetaState::new(&[1, 2, 3]);
        let with = |name: &str, a: Vec<Vec<i32>>| MetaCommand::CreateTopic {
            request: None,
            name: name.into(),
            id: Uuid::from_u128(name.len() as u128),
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignment: Some(a),
        };
        assert_eq!(
            m.apply(with("t", vec![vec![3, 1], vec![2, 3]])),
            vec![MetaEvent::TopicCreated {
                name: "t".into(),
                request: None
            }]
        );
        let replicas: Vec<Vec<i32>> = m.topics["t"]
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect();
        assert_eq!(replicas, vec![vec![3, 1], vec![2, 3]]);
        assert_eq!(m.group(2), Some(("t", 1)));
        let refused_with = |m: &mut MetaState, cmd: MetaCommand, text: &str| match &m.apply(cmd)[..]
        {
            [MetaEvent::Refused { error, message, .. }] => {
                assert_eq!(*error, ResponseError::InvalidReplicaAssignment);
                assert!(message.contains(text), "{message}");
            }
            other => panic!("{other:?}"),
        };
        refused_with(
            &mut m,
            with("u", vec![vec![4]]),
            "broker 4, but no such broker",
        );
        refused_with(&mut m, with("u", vec![vec![1, 1]]), "more than once");
        refused_with(
            &mut m,
            with("u", vec![vec![1], vec![1, 2]]),
            "not consistent",
        );
        assert!(!m.topics.contains_key("u"));
        let grow = |a: Vec<Vec<i32>>, count: i32| MetaCommand::CreatePartitions {
            request: None,
            name: "t".into(),
            count,
            assignment: Some(a),
        };
        refused_with(&mut m, grow(vec![vec![1, 2]], 4), "Attempted to add 2");
        refused_with(&mut m, grow(vec![vec![1]], 3), "with 1 replica(s)");
        assert!(matches!(
            &m.apply(grow(vec![vec![1, 2]], 3))[..],
            [MetaEvent::PartitionsCreated { from: 2, .. }]
        ));
        assert_eq!(m.topics["t"].partitions[2].replicas, vec![1, 2]);
    }

    #[test]
    fn entries_without_an_assignment_decode_as_before() {
        let c = create("x", 3, 2);
        let json = String::from_utf8(c.encode()).unwrap();
        assert!(!json.contains("assignment"), "{json}");
        assert_eq!(MetaCommand::decode(json.as_bytes()).unwrap(), Some(c));
        let grow = br#"{"CreatePartitions":{"request":null,"name":"x","count":4}}"#;
        assert!(matches!(
            MetaCommand::decode(grow).unwrap(),
            Some(MetaCommand::CreatePartitions {
                assignment: None,
                count: 4,
                ..
            })
        ));
    }

    #[test]
    fn commands_round_trip_through_the_log_encoding() {
        let c = create("x", 3, 2);
        assert_eq!(MetaCommand::decode(&c.encode()).unwrap(), Some(c));
        assert_eq!(MetaCommand::decode(&[]).unwrap(), None);
        assert!(MetaCommand::decode(b"{").is_err());
    }
}
