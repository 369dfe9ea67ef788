//! DescribeQuorum (KIP-595, KIP-853's v2): the `__meta` Raft group as Kafka describes its
//! metadata quorum (`__cluster_metadata`), for `kafka-metadata-quorum describe --status`,
//! AdminClient `describeMetadataQuorum` and `sluice cluster status`. The replica core hands
//! the broker what it knows at each housekeeping round; the `__meta` leader knows every
//! voter's log end, a follower only the leader, term and commit index.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::super::{Broker, str};

/// The name Kafka gives its metadata log; `__meta` answers to it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// `__meta` as the replica core last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaQuorum {
    /// Leader node id (-1: none known).
    pub leader: i32,
    /// Its term (Kafka's leader epoch).
    pub term: u64,
    /// Commit index (Kafka's high watermark of the metadata log).
    pub commit: u64,
    /// Every voter.
    pub voters: Vec<QuorumVoter>,
    /// The wall clock when it was taken: the voters' `last_heard_ms` are readings of it, so
    /// "heard lately" is judged against this, not a later reading a clock step may shift.
    pub as_of_ms: i64,
}

/// A led partition's Raft group as the replica core last saw it (DescribeQuorum).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupProgress {
    /// The leader's term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Every replica; `log_end` is the last index known to match the leader's log (the
    /// leader's own: its last index).
    pub replicas: Vec<QuorumVoter>,
}

/// One voter of `__meta` (or of a partition's group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumVoter {
    /// Node id.
    pub id: i32,
    /// Last index known in its log (-1: not known here, i.e. this node does not lead).
    pub log_end: i64,
    /// Wall-clock ms when this node last heard from it (-1: never).
    pub last_heard_ms: i64,
    /// A learner (a replica being added by a move): it receives the log but does not vote,
    /// so DescribeQuorum lists it among the observers, as KRaft does.
    pub observer: bool,
}

impl Broker {
    /// Records `__meta`'s state for DescribeQuorum (the replica core, every housekeeping round).
    pub fn set_meta_quorum(&mut self, quorum: MetaQuorum) {
        if let Some(c) = &mut self.cluster {
            c.quorum = Some(quorum);
        }
    }

    /// Records a led partition's Raft group for DescribeQuorum (the replica core, at each
    /// housekeeping round that looks at the group).
    pub fn report_group_progress(&mut self, group: u64, progress: GroupProgress) {
        if let Some(c) = &mut self.cluster {
            c.group_progress.insert(group, progress);
        }
    }

    /// Forgets the progress of groups this node no longer leads (`led` is sorted).
    pub fn keep_group_progress(&mut self, led: &[u64]) {
        if let Some(c) = &mut self.cluster {
            c.group_progress.retain(|g, _| led.binary_search(g).is_ok());
        }
    }

    /// Answers DescribeQuorum: `__cluster_metadata` partition 0 is `__meta` (standalone: this
    /// node is the only voter); in a cluster a data partition is its own Raft group, which its
    /// leader describes in Raft terms (leader epoch = term, high watermark = commit index, log
    /// end offsets = Raft indexes), so an operator sees how far each replica is behind.
    pub(in crate::broker) fn describe_quorum(
        &self,
        r: DescribeQuorumRequest,
        version: i16,
    ) -> DescribeQuorumResponse {
        let me = self.config.node_id;
        let quorum = match &self.cluster {
            Some(c) => c.quorum.clone().unwrap_or_default(),
            None => MetaQuorum {
                leader: me,
                term: 0,
                commit: 0,
                voters: vec![QuorumVoter {
                    id: me,
                    log_end: 0,
                    last_heard_ms: -1,
                    observer: false,
                }],
                ..MetaQuorum::default()
            },
        };
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.topic_name.0.as_str();
                let ours = name == METADATA_TOPIC;
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        if ours && p.partition_index == 0 {
                            partition_data(0, &quorum)
                        } else if ours {
                            refused(p.partition_index, ResponseError::UnknownTopicOrPartition)
                        } else {
                            self.describe_group(name, p.partition_index)
                        }
                    })
                    .collect();
                TopicData::default()
                    .with_topic_name(TopicName(str(name)))
                    .with_partitions(partitions)
            })
            .collect();
        let mut response = DescribeQuorumResponse::default().with_topics(topics);
        if version >= 2 {
            response.nodes = self.quorum_nodes(&quorum);
        }
        response
    }

    /// A data partition's Raft group, answered by its leader (Kafka's error otherwise).
    fn describe_group(&self, topic: &str, partition: i32) -> PartitionData {
        let Some(c) = &self.cluster else {
            return refused(partition, ResponseError::UnknownTopicOrPartition);
        };
        let Some(mp) = c.meta.partition(topic, partition) else {
            return refused(partition, ResponseError::UnknownTopicOrPartition);
        };
        match c.group_progress.get(&mp.group) {
            Some(g) if mp.leader == c.node_id && i64::from(mp.leader_epoch) == g.term as i64 => {
                partition_data(
                    partition,
                    &MetaQuorum {
                        leader: c.node_id,
                        term: g.term,
                        commit: g.commit,
                        voters: g.replicas.clone(),
                        ..MetaQuorum::default()
                    },
                )
            }
            _ => refused(partition, ResponseError::NotLeaderOrFollower)
                .with_leader_id(BrokerId(mp.leader))
                .with_leader_epoch(mp.leader_epoch),
        }
    }

    /// v2: each voter's listeners, as registered in `__meta`.
    fn quorum_nodes(&self, quorum: &MetaQuorum) -> Vec<Node> {
        let Some(m) = self.meta() else {
            return Vec::new();
        };
        quorum
            .voters
            .iter()
            .filter_map(|v| {
                let listeners = m.listeners.get(&v.id)?;
                Some(
                    Node::default().with_node_id(BrokerId(v.id)).with_listeners(
                        listeners
                            .iter()
                            .filter(|(name, _)| name.as_str() != crate::security::REPLICA_LISTENER)
                            .filter_map(|(name, (host, port))| {
                                Some(
                                    Listener::default()
                                        .with_name(str(name))
                                        .with_host(str(host))
                                        .with_port(u16::try_from(*port).ok()?),
                                )
                            })
                            .collect(),
                    ),
                )
            })
            .collect()
    }
}

/// One quorum as Kafka's DescribeQuorum partition answer.
fn partition_data(partition: i32, quorum: &MetaQuorum) -> PartitionData {
    let state = |observer: bool| {
        quorum
            .voters
            .iter()
            .filter(move |v| v.observer == observer)
            .map(|v| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(v.id))
                    .with_log_end_offset(v.log_end)
                    .with_last_fetch_timestamp(v.last_heard_ms)
                    .with_last_caught_up_timestamp(if v.log_end >= quorum.commit as i64 {
                        v.last_heard_ms
                    } else {
                        -1
                    })
            })
            .collect::<Vec<_>>()
    };
    PartitionData::default()
        .with_partition_index(partition)
        .with_leader_id(BrokerId(quorum.leader))
        .with_leader_epoch(i32::try_from(quorum.term).unwrap_or(i32::MAX))
        .with_high_watermark(quorum.commit as i64)
        .with_current_voters(state(false))
        .with_observers(state(true))
}

/// A partition DescribeQuorum cannot describe here.
fn refused(partition: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(error.code())
        .with_leader_id(BrokerId(-1))
}
