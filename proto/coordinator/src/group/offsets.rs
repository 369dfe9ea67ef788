//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete, retention and deleted topics.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::responses as resp;
use super::state::{Group, GroupState};
use super::{GroupCoordinator, PartitionStatus};
use crate::store::{OffsetKey, OffsetValue, StoreRecord};
use crate::{Action, Out, RequestContext, StoreWrite};

/// One partition's answer in an OffsetFetch.
struct FetchedOffset {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    /// UNSTABLE_OFFSET_COMMIT while a transaction holds an offset of the partition.
    error: i16,
}

type FetchedTopics = Vec<(String, Vec<FetchedOffset>)>;

fn topic_name(s: &str) -> TopicName {
    TopicName(resp::s(s))
}

impl Group {
    /// Kafka's `validateOffsetCommit` for non-transactional commits.
    fn validate_offset_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if self.is(GroupState::Dead) {
            Err(ResponseError::CoordinatorNotAvailable)
        } else if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                Err(ResponseError::IllegalGeneration)
            } else {
                Ok(())
            }
        } else if !self.is(GroupState::Empty) {
            // Only members may commit for a group with members.
            Err(ResponseError::UnknownMemberId)
        } else {
            Ok(())
        }
    }

    /// Offsets past retention, following Kafka's `removeExpiredOffsets` (KIP-211): an empty group's
    /// offsets expire `retention` after it became empty; a stable consumer group's offsets of topics
    /// it no longer subscribes to expire `retention` after their commit; offsets of groups that only
    /// commit (no protocol) expire `retention` after their commit.
    fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let expired = |v: &OffsetValue, base_ms: i64| match v.expire_timestamp_ms {
            Some(t) => now_ms >= t,
            None => now_ms - base_ms >= retention_ms,
        };
        let keep_topics = match (self.protocol_type.as_deref(), self.state) {
            (Some(_), GroupState::Empty) => None,
            (Some("consumer"), GroupState::Stable) if self.subscribed_topics.is_some() => {
                self.subscribed_topics.as_ref()
            }
            (None, _) => None,
            _ => return Vec::new(),
        };
        let base_is_state = matches!(
            (self.protocol_type.as_deref(), self.state),
            (Some(_), GroupState::Empty)
        );
        self.offsets
            .iter()
            .filter(|((topic, _), _)| keep_topics.is_none_or(|t| !t.contains(topic)))
            .filter(|(_, v)| {
                let base = if base_is_state {
                    self.state_since_ms
                } else {
                    v.commit_timestamp_ms
                };
                expired(v, base)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl GroupCoordinator {
    /// OffsetCommit (v2–v9). Accepted commits are persisted before the answer.
    pub fn offset_commit(
        &mut self,
        ctx: &RequestContext,
        req: OffsetCommitRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let p = ctx.pending();
        let group_id = req.group_id.0.as_str().to_owned();
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
        let generation = req.generation_id_or_member_epoch;
        let answer_all = |code: i16| {
            OffsetCommitResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|pt| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(pt.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        };
        if let Err(e) = self.group_status(&group_id, true) {
            out.respond(resp::response(p, answer_all(e.code())));
            return out.into_actions();
        }
        if !self.groups.contains_key(&group_id) {
            if generation >= 0 {
                // A commit from a generation of a group we do not know.
                let e = if ctx.api_version >= 9 {
                    ResponseError::GroupIdNotFound
                } else {
                    ResponseError::IllegalGeneration
                };
                out.respond(resp::response(p, answer_all(e.code())));
                return out.into_actions();
            }
            // A standalone consumer using Kafka only to store offsets.
            let partition = self.partition_for(&group_id);
            self.groups
                .insert(group_id.clone(), Group::new(&group_id, partition, now_ms));
        }
        let group = self.groups.get_mut(&group_id).expect("exists");
        if let Err(e) = group.validate_offset_commit(generation, member_id, instance_id) {
            out.respond(resp::response(p, answer_all(e.code())));
            return out.into_actions();
        }
        match group.state {
            GroupState::Empty => {}
            GroupState::Stable | GroupState::PreparingRebalance => {
                // A commit proves the member alive; during a rebalance the heartbeat tells it to rejoin.
                if let Some(m) = group.members.get_mut(member_id) {
                    m.touch(self.mono.unwrap_or(now_ms));
                }
            }
            GroupState::CompletingRebalance => {
                out.respond(resp::response(
                    p,
                    answer_all(ResponseError::RebalanceInProgress.code()),
                ));
                return out.into_actions();
            }
            GroupState::Dead => unreachable!("validated"),
        }
        let expire = (ctx.api_version <= 4 && req.retention_time_ms != -1)
            .then(|| now_ms.saturating_add(req.retention_time_ms));
        let mut writes = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for pt in &t.partitions {
                let metadata = pt
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("");
                let code = if metadata.len() > self.cfg.offset_metadata_max_bytes {
                    ResponseError::OffsetMetadataTooLarge.code()
                } else {
                    let value = OffsetValue {
                        offset: pt.committed_offset,
                        leader_epoch: pt.committed_leader_epoch,
                        metadata: metadata.to_owned(),
                        commit_timestamp_ms: now_ms,
                        expire_timestamp_ms: expire,
                    };
                    group.offsets.insert(
                        (t.name.0.as_str().to_owned(), pt.partition_index),
                        value.clone(),
                    );
                    writes.push(StoreWrite {
                        partition: group.partition,
                        record: StoreRecord::Offset {
                            key: OffsetKey {
                                group_id: group_id.clone(),
                                topic: t.name.0.as_str().to_owned(),
                                partition: pt.partition_index,
                            },
                            value: Some(value),
                        },
                    });
                    0
                };
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(pt.partition_index)
                        .with_error_code(code),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        tracing::debug!(group = %group_id, offsets = writes.len(), "offset commit");
        let response = resp::response(p, OffsetCommitResponse::default().with_topics(topics));
        out.persist(writes, vec![response]);
        out.into_actions()
    }

    /// The offsets of one group, Kafka's `handleFetchOffsets` (`None` topics = all committed).
    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Result<FetchedTopics, ResponseError> {
        self.group_status(group_id, true)?;
        let group = self.groups.get(group_id);
        let unstable = |topic: &str, partition: i32| {
            require_stable
                && group.is_some_and(|g| {
                    g.pending_txn
                        .values()
                        .any(|o| o.contains_key(&(topic.to_owned(), partition)))
                })
        };
        let fetched = |topic: &str, partition: i32| match group
            .and_then(|g| g.offsets.get(&(topic.to_owned(), partition)))
        {
            _ if unstable(topic, partition) => FetchedOffset {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: ResponseError::UnstableOffsetCommit.code(),
            },
            Some(v) => FetchedOffset {
                partition,
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata.clone(),
                error: 0,
            },
            None => FetchedOffset {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: 0,
            },
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let offsets = parts.iter().map(|p| fetched(&t, *p)).collect();
                    (t, offsets)
                })
                .collect(),
            None => {
                let mut all: FetchedTopics = Vec::new();
                for (topic, partition) in group.into_iter().flat_map(|g| g.offsets.keys()) {
                    if all.last().is_none_or(|(t, _)| t != topic) {
                        all.push((topic.clone(), Vec::new()));
                    }
                    all.last_mut()
                        .expect("pushed")
                        .1
                        .push(fetched(topic, *partition));
                }
                all
            }
        })
    }

    /// OffsetFetch (v1–v9; several groups from v8). Always answered at once; with
    /// `require_stable` (v7+), a partition an open transaction committed an offset for is
    /// answered UNSTABLE_OFFSET_COMMIT, which the client retries (KIP-447).
    pub fn offset_fetch(&self, ctx: &RequestContext, req: OffsetFetchRequest) -> Vec<Action> {
        let mut out = Out::default();
        let v = ctx.api_version;
        let body = if v < 8 {
            let requested: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                    .collect()
            });
            match self.fetch_offsets(
                req.group_id.0.as_str(),
                requested.clone(),
                req.require_stable,
            ) {
                Ok(topics) => OffsetFetchResponse::default().with_topics(v7_topics(topics, 0)),
                Err(e) if v < 2 => {
                    // v1 has no top-level error: every requested partition carries it.
                    let topics = requested
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(t, parts)| {
                            let offsets = parts
                                .into_iter()
                                .map(|partition| FetchedOffset {
                                    partition,
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                    error: 0,
                                })
                                .collect();
                            (t, offsets)
                        })
                        .collect();
                    OffsetFetchResponse::default().with_topics(v7_topics(topics, e.code()))
                }
                Err(e) => OffsetFetchResponse::default().with_error_code(e.code()),
            }
        } else {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let requested = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let group =
                        OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                    match self.fetch_offsets(g.group_id.0.as_str(), requested, req.require_stable) {
                        Ok(topics) => group.with_topics(v8_topics(topics)),
                        Err(e) => group.with_error_code(e.code()),
                    }
                })
                .collect();
            OffsetFetchResponse::default().with_groups(groups)
        };
        out.respond(resp::response(ctx.pending(), body));
        out.into_actions()
    }

    /// OffsetDelete (v0): deletes offsets of an empty group, or of topics a consumer group does not
    /// subscribe to.
    pub fn offset_delete(
        &mut self,
        ctx: &RequestContext,
        req: OffsetDeleteRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let p = ctx.pending();
        let group_id = req.group_id.0.as_str().to_owned();
        let error_response =
            |e: ResponseError| OffsetDeleteResponse::default().with_error_code(e.code());
        if let Err(e) = self.group_status(&group_id, false) {
            out.respond(resp::response(p, error_response(e)));
            return out.into_actions();
        }
        let Some(group) = self.groups.get(&group_id) else {
            out.respond(resp::response(
                p,
                error_response(ResponseError::GroupIdNotFound),
            ));
            return out.into_actions();
        };
        let consumer_group = group.protocol_type.as_deref() == Some("consumer");
        let check_subscription = match group.state {
            GroupState::Empty => false,
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable
                if consumer_group =>
            {
                true
            }
            _ => {
                out.respond(resp::response(
                    p,
                    error_response(ResponseError::NonEmptyGroup),
                ));
                return out.into_actions();
            }
        };
        let mut eligible = Vec::new();
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let topic = t.name.0.as_str();
                let subscribed = check_subscription && group.is_subscribed_to(topic);
                let partitions = t
                    .partitions
                    .iter()
                    .map(|pt| {
                        let code = if subscribed {
                            ResponseError::GroupSubscribedToTopic.code()
                        } else {
                            eligible.push((topic.to_owned(), pt.partition_index));
                            0
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(pt.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        let writes = self.remove_offsets_and_cleanup(&group_id, eligible, now_ms);
        let response = resp::response(p, OffsetDeleteResponse::default().with_topics(topics));
        out.persist(writes, vec![response]);
        out.into_actions()
    }

    /// Removes offsets of a group, returning their tombstones; an empty group left without offsets
    /// dies and gets a tombstone too (Kafka's `cleanupGroupMetadata`).
    pub(crate) fn remove_offsets_and_cleanup(
        &mut self,
        group_id: &str,
        keys: Vec<(String, i32)>,
        now_ms: i64,
    ) -> Vec<StoreWrite> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Vec::new();
        };
        let mut writes = Vec::new();
        for (topic, partition) in keys {
            if group.offsets.remove(&(topic.clone(), partition)).is_some() {
                writes.push(StoreWrite {
                    partition: group.partition,
                    record: StoreRecord::Offset {
                        key: OffsetKey {
                            group_id: group_id.to_owned(),
                            topic,
                            partition,
                        },
                        value: None,
                    },
                });
            }
        }
        if group.is(GroupState::Empty)
            && group.offsets.is_empty()
            && group.pending_members.is_empty()
        {
            tracing::info!(group = %group_id, "removing empty group without offsets");
            group.transition(GroupState::Dead, now_ms);
            writes.push(StoreWrite {
                partition: group.partition,
                record: StoreRecord::Group {
                    group_id: group_id.to_owned(),
                    value: None,
                },
            });
            self.groups.remove(group_id);
        }
        writes
    }

    /// Expires offsets past retention and removes empty groups left with none.
    pub(crate) fn expire_offsets(&mut self, now_ms: i64, out: &mut Out) {
        let retention_ms = self.cfg.offsets_retention_ms;
        let work: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .map(|g| (g.id.clone(), g.expired_offsets(now_ms, retention_ms)))
            .collect();
        let mut writes = Vec::new();
        for (group_id, keys) in work {
            if !keys.is_empty() {
                tracing::info!(group = %group_id, expired = keys.len(), "expiring offsets");
            }
            writes.extend(self.remove_offsets_and_cleanup(&group_id, keys, now_ms));
        }
        out.persist(writes, Vec::new());
    }

    /// The broker deleted `topic`: drop every group's offsets for it (as Kafka's
    /// `handleDeletedPartitions`) and return the tombstones to store.
    pub fn topic_deleted(&mut self, topic: &str, now_ms: i64) -> Vec<Action> {
        let mut out = Out::default();
        let work: Vec<(String, Vec<(String, i32)>)> = self
            .groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .map(|g| {
                let keys = g
                    .offsets
                    .keys()
                    .filter(|(t, _)| t == topic)
                    .cloned()
                    .collect::<Vec<_>>();
                (g.id.clone(), keys)
            })
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        let mut writes = Vec::new();
        for (group_id, keys) in work {
            writes.extend(self.remove_offsets_and_cleanup(&group_id, keys, now_ms));
        }
        out.persist(writes, Vec::new());
        out.into_actions()
    }
}

fn v7_topics(topics: FetchedTopics, error: i16) -> Vec<OffsetFetchResponseTopic> {
    topics
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|f| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(f.partition)
                                .with_committed_offset(f.offset)
                                .with_committed_leader_epoch(f.leader_epoch)
                                .with_metadata(Some(resp::s(&f.metadata)))
                                .with_error_code(if f.error != 0 { f.error } else { error })
                        })
                        .collect(),
                )
        })
        .collect()
}

fn v8_topics(topics: FetchedTopics) -> Vec<OffsetFetchResponseTopics> {
    topics
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopics::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|f| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(f.partition)
                                .with_committed_offset(f.offset)
                                .with_committed_leader_epoch(f.leader_epoch)
                                .with_metadata(Some(resp::s(&f.metadata)))
                                .with_error_code(f.error)
                        })
                        .collect(),
                )
        })
        .collect()
}
