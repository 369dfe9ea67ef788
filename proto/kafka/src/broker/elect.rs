//! ElectLeaders (KIP-460), as `kafka-leader-election` and AdminClient send it. A preferred
//! election hands a partition to its first replica: the replica core's leader balance moves
//! leadership there once that replica is in sync (within its 2 s balance round), so the answer
//! says whether a move is due. An unclean election would make an out-of-sync replica leader;
//! Raft never does that (a leader needs a majority of the replicas), so it is answered as
//! Kafka answers when no eligible leader exists.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{Broker, str};

/// `election_type` of a preferred election (the only kind before v1).
const PREFERRED: i8 = 0;

impl Broker {
    /// Answers an ElectLeaders request (`None` partitions: every partition).
    pub(super) fn elect_leaders(
        &self,
        r: ElectLeadersRequest,
        version: i16,
    ) -> ElectLeadersResponse {
        let election = if version == 0 {
            PREFERRED
        } else {
            r.election_type
        };
        let wanted: Vec<(String, Vec<i32>)> = match r.topic_partitions {
            Some(list) => list
                .into_iter()
                .map(|t| (t.topic.0.to_string(), t.partitions))
                .collect(),
            None => self
                .topic_names()
                .into_iter()
                .map(|t| {
                    let n = self.partition_count(&t);
                    (t, (0..n).collect())
                })
                .collect(),
        };
        let mut results: Vec<ReplicaElectionResult> = Vec::new();
        for (topic, partitions) in wanted {
            let partition_result = partitions
                .into_iter()
                .map(|p| {
                    let (error, message) = self.election_outcome(&topic, p, election);
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(error.map_or(0, |e| e.code()))
                        .with_error_message(message.map(|m| str(&m)))
                })
                .collect();
            results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str(&topic)))
                    .with_partition_result(partition_result),
            );
        }
        ElectLeadersResponse::default().with_replica_election_results(results)
    }

    /// The error (and message) Kafka gives for one partition, `None` when an election is due.
    fn election_outcome(
        &self,
        topic: &str,
        partition: i32,
        election: i8,
    ) -> (Option<ResponseError>, Option<String>) {
        let tp = format!("{topic}-{partition}");
        if !self.is_known_partition(topic, partition) {
            return (
                Some(ResponseError::UnknownTopicOrPartition),
                Some(format!("The partition {tp} does not exist.")),
            );
        }
        let not_needed = || {
            (
                Some(ResponseError::ElectionNotNeeded),
                Some(format!(
                    "Leader election not needed for topic partition {tp}"
                )),
            )
        };
        let Some((leader, replicas, isr)) = self.placement(topic, partition) else {
            return not_needed(); // standalone: the one replica leads
        };
        if election != PREFERRED {
            if leader > 0 {
                return not_needed();
            }
            return (
                Some(ResponseError::EligibleLeadersNotAvailable),
                Some(format!(
                    "No leader can be elected for {tp}: in Raft mode a leader needs a majority of \
                     its replicas, and an out-of-sync replica is never made leader"
                )),
            );
        }
        let preferred = replicas.first().copied().unwrap_or(-1);
        if leader == preferred {
            return not_needed();
        }
        if !isr.contains(&preferred) {
            return (
                Some(ResponseError::PreferredLeaderNotAvailable),
                Some(format!(
                    "Failed to elect leader for partition {tp} under strategy \
                     PreferredReplicaPartitionLeaderElectionStrategy: its preferred replica \
                     {preferred} is not in sync"
                )),
            );
        }
        (None, None)
    }

    /// Every topic's name (the cluster's, in cluster mode).
    fn topic_names(&self) -> Vec<String> {
        match self.meta() {
            Some(m) => m.topics.keys().cloned().collect(),
            None => self.topics.keys().cloned().collect(),
        }
    }

    fn partition_count(&self, topic: &str) -> i32 {
        let n = match self.meta() {
            Some(m) => m.topics.get(topic).map_or(0, |t| t.partitions.len()),
            None => self.topics.get(topic).map_or(0, |t| t.partitions.len()),
        };
        n as i32
    }

    fn is_known_partition(&self, topic: &str, partition: i32) -> bool {
        (0..self.partition_count(topic)).contains(&partition)
    }

    /// Cluster mode: the partition's leader (-1: none), replicas (preferred first) and in-sync
    /// replicas.
    fn placement(&self, topic: &str, partition: i32) -> Option<(i32, Vec<i32>, Vec<i32>)> {
        let mp = self.meta()?.partition(topic, partition)?;
        let (leader, _) = self.cluster.as_ref()?.leader_of(topic, partition);
        Some((leader, mp.wanted().to_vec(), mp.in_sync().to_vec()))
    }
}
