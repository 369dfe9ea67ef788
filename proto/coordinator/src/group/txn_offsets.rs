//! Transactional offset commits (KIP-98, KIP-447): TxnOffsetCommit holds a producer's offsets
//! apart until its transaction's marker reaches the group's partition; a commit marker makes
//! them the group's committed offsets, an abort marker drops them.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::responses as resp;
use super::state::{Group, GroupState};
use super::{GroupCoordinator, PartitionStatus, ReplayError};
use crate::store::{OffsetKey, OffsetValue, StoreRecord};
use crate::{Action, Out, RequestContext, StoreWrite};

impl GroupCoordinator {
    /// TxnOffsetCommit (v0–v3). The offsets are persisted in the producer's transaction and
    /// become visible to OffsetFetch when it commits.
    pub fn txn_offset_commit(
        &mut self,
        ctx: &RequestContext,
        req: TxnOffsetCommitRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let p = ctx.pending();
        let group_id = req.group_id.0.as_str().to_owned();
        let answer = |code: &dyn Fn(&str, &OffsetValueRef) -> i16| {
            TxnOffsetCommitResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|pt| {
                                        let v = OffsetValueRef {
                                            metadata_len: pt
                                                .committed_metadata
                                                .as_ref()
                                                .map_or(0, |m| m.len()),
                                        };
                                        TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(pt.partition_index)
                                            .with_error_code(code(t.name.0.as_str(), &v))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        };
        if let Err(e) = self.group_status(&group_id, false) {
            out.respond(resp::response(p, answer(&|_, _| e.code())));
            return out.into_actions();
        }
        let partition = self.partition_for(&group_id);
        let group = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, partition, now_ms));
        // KIP-447: a consumer that names its generation must be a current member.
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
        let named = req.generation_id >= 0 || !member_id.is_empty() || instance_id.is_some();
        let check = if group.is(GroupState::Dead) {
            Err(ResponseError::CoordinatorNotAvailable)
        } else if named && !group.is(GroupState::Empty) {
            group.validate_member(member_id, instance_id).and(
                if req.generation_id >= 0 && req.generation_id != group.generation {
                    Err(ResponseError::IllegalGeneration)
                } else {
                    Ok(())
                },
            )
        } else {
            Ok(())
        };
        if let Err(e) = check {
            out.respond(resp::response(p, answer(&|_, _| e.code())));
            return out.into_actions();
        }
        let max_metadata = self.cfg.offset_metadata_max_bytes;
        let producer_id = req.producer_id.0;
        let mut writes = Vec::new();
        for t in &req.topics {
            for pt in &t.partitions {
                let metadata = pt
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("");
                if metadata.len() > max_metadata {
                    continue;
                }
                let value = OffsetValue {
                    offset: pt.committed_offset,
                    leader_epoch: pt.committed_leader_epoch,
                    metadata: metadata.to_owned(),
                    commit_timestamp_ms: now_ms,
                    expire_timestamp_ms: None,
                };
                group
                    .pending_txn
                    .entry(producer_id)
                    .or_default()
                    .insert((t.name.0.to_string(), pt.partition_index), value.clone());
                writes.push(StoreWrite {
                    partition,
                    record: StoreRecord::Offset {
                        key: OffsetKey {
                            group_id: group_id.clone(),
                            topic: t.name.0.to_string(),
                            partition: pt.partition_index,
                        },
                        value: Some(value),
                    },
                });
            }
        }
        tracing::debug!(group = %group_id, producer_id, offsets = writes.len(), "transactional offset commit");
        let response = resp::response(
            p,
            answer(&|_, v| {
                if v.metadata_len > max_metadata {
                    ResponseError::OffsetMetadataTooLarge.code()
                } else {
                    0
                }
            }),
        );
        if writes.is_empty() {
            out.respond(response);
        } else {
            out.push(Action::PersistTxn {
                producer_id,
                producer_epoch: req.producer_epoch,
                writes,
                then: vec![response],
            });
        }
        out.into_actions()
    }

    /// The marker of `producer_id`'s transaction was written to internal partition
    /// `partition`: its offsets become committed (or are dropped on abort).
    pub fn complete_txn(&mut self, partition: i32, producer_id: i64, commit: bool) {
        let mut vacant = Vec::new();
        for g in self
            .groups
            .values_mut()
            .filter(|g| g.partition == partition)
        {
            if let Some(offsets) = g.pending_txn.remove(&producer_id) {
                tracing::debug!(group = %g.id, producer_id, commit, offsets = offsets.len(), "transactional offsets completed");
                if commit {
                    g.offsets.extend(offsets);
                }
            }
            if g.is_vacant() {
                vacant.push(g.id.clone());
            }
        }
        for id in vacant {
            self.groups.remove(&id);
        }
    }

    /// Applies a stored offset record written in `producer_id`'s transaction, in log order, to
    /// a partition being loaded; its marker follows through [`GroupCoordinator::complete_txn`].
    pub fn replay_txn(
        &mut self,
        record: &StoreRecord,
        producer_id: i64,
    ) -> Result<(), ReplayError> {
        let StoreRecord::Offset {
            key,
            value: Some(v),
        } = record
        else {
            return Ok(());
        };
        let partition = self.partition_for(&key.group_id);
        if self.partitions.get(&partition) != Some(&PartitionStatus::Loading) {
            return Err(ReplayError::NotLoading {
                group: key.group_id.clone(),
                partition,
            });
        }
        self.groups
            .entry(key.group_id.clone())
            .or_insert_with(|| Group::new(&key.group_id, partition, v.commit_timestamp_ms))
            .pending_txn
            .entry(producer_id)
            .or_default()
            .insert((key.topic.clone(), key.partition), v.clone());
        Ok(())
    }
}

/// What the answer of one partition depends on.
struct OffsetValueRef {
    metadata_len: usize,
}
