//! Partition reassignment (KIP-455): AlterPartitionReassignments records a partition's target
//! replicas in `__meta`; every node then hosts the partitions it replicates or is getting
//! (`reconcile`), and the partition's leader changes its Raft group's membership one step at a
//! time until the voters are the target (the replica core drives that), then reports the move
//! complete (`Reassigned`), after which the replicas left behind drop their copy.
//! ListPartitionReassignments lists the moves in progress. Standalone, the only replica is this
//! broker, so nothing can move.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};

use super::super::{Broker, Reply, str};
use super::{AdminWait, META_GROUP, Proposal};
use crate::cluster::MetaCommand;

/// How long a leader waits before reporting a completed move again (the first report may be
/// lost while `__meta` elects).
const REPORT_AGAIN_MS: u64 = 2000;

impl Broker {
    /// AlterPartitionReassignments: each partition's move is recorded in `__meta` (checked
    /// there against the members) and answered once applied.
    pub(in crate::broker) fn alter_partition_reassignments(
        &mut self,
        req: AlterPartitionReassignmentsRequest,
    ) -> Reply {
        let mut response = AlterPartitionReassignmentsResponse::default();
        let mut pending = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut tr = ReassignableTopicResponse::default().with_name(t.name.clone());
            for p in t.partitions {
                let mut pr = ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index);
                let replicas: Option<Vec<i32>> =
                    p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
                match self.reassignment_refusal(&name, p.partition_index, replicas.as_deref()) {
                    Some((e, m)) => {
                        pr.error_code = e.code();
                        pr.error_message = Some(str(&m));
                    }
                    None if self.cluster.is_some() => pending.push((
                        (response.responses.len(), tr.partitions.len()),
                        name.clone(),
                        p.partition_index,
                        replicas,
                    )),
                    // Standalone: only "stay here" passes the check, and it moves nothing.
                    None => {}
                }
                tr.partitions.push(pr);
            }
            response.responses.push(tr);
        }
        if pending.is_empty() {
            return Reply::Now(ResponseKind::AlterPartitionReassignments(response));
        }
        let token = self.new_token();
        let slots: Vec<(usize, usize)> = pending.iter().map(|(slot, ..)| *slot).collect();
        let c = self.cluster.as_mut().expect("cluster");
        c.admins
            .insert(token, (AdminWait::Reassign(response, slots), pending.len()));
        for (slot, (_, topic, partition, replicas)) in pending.into_iter().enumerate() {
            self.admin_proposal(token, slot, |request| MetaCommand::Reassign {
                request: Some(request),
                topic,
                partition,
                replicas,
            });
        }
        Reply::Parked { token }
    }

    /// Why a partition cannot be moved to `replicas` (`None`: cancel), as Kafka answers; the
    /// cluster checks the replicas against its members again when it applies the move.
    fn reassignment_refusal(
        &self,
        topic: &str,
        partition: i32,
        replicas: Option<&[i32]>,
    ) -> Option<(ResponseError, String)> {
        let missing = (
            ResponseError::UnknownTopicOrPartition,
            format!("The partition {topic}-{partition} does not exist."),
        );
        let Some(c) = &self.cluster else {
            // Standalone: the partition stays on this broker.
            if self.partition(topic, partition).is_err() {
                return Some(missing);
            }
            let me = self.config.node_id;
            return match replicas {
                None => Some((
                    ResponseError::NoReassignmentInProgress,
                    format!("No reassignment is in progress for partition {topic}-{partition}"),
                )),
                Some([only]) if *only == me => None,
                Some(r) => Some((
                    ResponseError::InvalidReplicaAssignment,
                    match r.iter().find(|&&b| b != me) {
                        Some(b) => format!(
                            "The manual partition assignment includes broker {b}, but no such broker is registered."
                        ),
                        None => format!("The replica assignment {r:?} is invalid."),
                    },
                )),
            };
        };
        if c.meta.partition(topic, partition).is_none() {
            return Some(missing);
        }
        replicas.filter(|r| r.is_empty()).map(|_| {
            (
                ResponseError::InvalidReplicaAssignment,
                "The manual partition assignment includes an empty replica list.".into(),
            )
        })
    }

    /// ListPartitionReassignments: the moves in progress (all, or those of the partitions
    /// asked for).
    pub(in crate::broker) fn list_partition_reassignments(
        &self,
        req: ListPartitionReassignmentsRequest,
    ) -> ListPartitionReassignmentsResponse {
        let mut response = ListPartitionReassignmentsResponse::default();
        let Some(c) = &self.cluster else {
            return response;
        };
        let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        for (name, mt) in &c.meta.topics {
            let asked = wanted.as_ref().map(|w| w.get(name));
            if asked == Some(None) {
                continue;
            }
            let partitions: Vec<OngoingPartitionReassignment> = mt
                .partitions
                .iter()
                .enumerate()
                .filter(|(p, _)| asked.flatten().is_none_or(|ps| ps.contains(&(*p as i32))))
                .filter_map(|(p, mp)| {
                    let target = mp.target.as_ref()?;
                    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
                    Some(
                        OngoingPartitionReassignment::default()
                            .with_partition_index(p as i32)
                            .with_replicas(ids(mp.all_replicas()))
                            .with_adding_replicas(ids(target
                                .iter()
                                .filter(|r| !mp.replicas.contains(r))
                                .copied()
                                .collect()))
                            .with_removing_replicas(ids(mp
                                .replicas
                                .iter()
                                .filter(|r| !target.contains(r))
                                .copied()
                                .collect())),
                    )
                })
                .collect();
            if !partitions.is_empty() {
                response.topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str(name)))
                        .with_partitions(partitions),
                );
            }
        }
        response
    }

    /// The leader `__meta` last recorded for partition group `group`: a replica that has heard
    /// from no leader yet (it was rebuilt after losing its data dir while the group was idle)
    /// tells this one where its log ends.
    pub fn recorded_leader(&self, group: u64) -> Option<u64> {
        let c = self.cluster.as_ref()?;
        let (t, p) = c.meta.group(group)?;
        let leader = c.meta.partition(t, p)?.leader;
        (leader > 0).then_some(leader as u64)
    }

    /// The voters a partition group should have (the move's target while one is in progress);
    /// `None` for `__meta`, unknown groups and standalone.
    pub fn wanted_voters(&self, group: u64) -> Option<Vec<u64>> {
        if group == META_GROUP {
            return None;
        }
        let c = self.cluster.as_ref()?;
        let (t, p) = c.meta.group(group)?;
        let mp = c.meta.partition(t, p)?;
        Some(mp.wanted().iter().map(|&r| r as u64).collect())
    }

    /// The leader of `group` found its voters equal to the replicas wanted, with no learner:
    /// a move (or its cancel) is complete, which `__meta` records (again after a while, if the
    /// first report was lost).
    /// `now` is the monotonic clock (it only times the report again).
    pub fn report_voters(&mut self, group: u64, voters: &[u64], now: u64) {
        let Some(c) = &mut self.cluster else { return };
        let Some((t, p)) = c.meta.group(group) else {
            return;
        };
        let Some((target, move_id)) = c
            .meta
            .partition(t, p)
            .filter(|mp| mp.moving())
            .map(|mp| (mp.wanted().to_vec(), mp.moves))
        else {
            c.reassigned_reported.remove(&group);
            return;
        };
        let mut have: Vec<i32> = voters.iter().map(|&v| v as i32).collect();
        let mut want = target.clone();
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            return;
        }
        if c.reassigned_reported
            .get(&group)
            .is_some_and(|at| now.saturating_sub(*at) < REPORT_AGAIN_MS)
        {
            return;
        }
        c.reassigned_reported.insert(group, now);
        tracing::info!(node_id = c.node_id, group, replicas = ?target, "partition moved: reporting the new replicas");
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: MetaCommand::Reassigned {
                group,
                replicas: target,
                move_id,
            }
            .encode(),
        });
    }
}
