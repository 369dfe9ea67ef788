//! Installing a snapshot image: a replica whose Raft log fell behind the leader's compacted
//! log gets a [`PartitionImage`] instead of entries, and copies the records it lacks from
//! another replica with ordinary Fetch requests (as a Kafka follower does), batch for batch:
//! replica logs are byte-identical, so the copy is too. Entries after the image wait until the
//! copy is complete (the runtime holds them back), then apply as usual.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use tracing::{info, warn};

use super::super::{Broker, str};
use super::BrokerAddr;
use crate::cluster::PartitionImage;
use crate::throttle;

/// Fetch version used between replicas (topic names, `replica_id` in the body).
pub const REPLICA_FETCH_VERSION: i16 = 12;
/// Bytes asked for per replica fetch.
const FETCH_BYTES: i32 = 8 << 20;
/// Smallest fetch of a throttled install (a batch larger than the limit still comes whole).
const THROTTLED_FETCH_BYTES_MIN: i32 = 16 << 10;

/// What an installing replica does next.
#[derive(Debug, Clone, PartialEq)]
pub enum InstallStep {
    /// The local log reached the image: call [`Broker::install_finish`].
    Done,
    /// Fetch `request` from one of `sources` (partition replicas, the leader first) and hand
    /// the response to [`Broker::install_fetched`].
    Fetch {
        /// The replica fetch to send.
        request: Box<FetchRequest>,
        /// Where to send it: (node id, host, port).
        sources: Vec<BrokerAddr>,
        /// Local log end and the image's end, for logs.
        from: i64,
        /// See `from`.
        to: i64,
    },
    /// This node no longer hosts the group.
    Gone,
}

impl Broker {
    /// Starts installing `image` for `group` (a snapshot received, or found unfinished at
    /// restart). Empties the local log first if the image's log starts past its end.
    pub fn install_begin(&mut self, group: u64, image: PartitionImage, now_ms: i64) -> InstallStep {
        let me = self.config.node_id;
        let Some(c) = &mut self.cluster else {
            return InstallStep::Gone;
        };
        let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p)) else {
            return InstallStep::Gone;
        };
        c.installing.insert(group, image.clone());
        let Ok(log) = self.partition_mut(&topic, partition) else {
            return InstallStep::Gone;
        };
        if let Some(state) = crate::log::CleanerState::decode(&image.cleaner)
            && let Err(e) = log.adopt_cleaner_state(&state)
        {
            warn!(node_id = me, topic = %topic, partition, error = %e, "taking over the source's cleaner state failed");
        }
        let end = log.log_end_offset();
        info!(node_id = me, topic = %topic, partition, group, local_end = end, image_end = image.end_offset, applied_index = image.applied_index, "installing a snapshot: copying records from another replica");
        if end < image.start_offset
            && let Err(e) = log.reset_to(image.start_offset, now_ms)
        {
            warn!(node_id = me, topic = %topic, partition, error = %e, "resetting the log failed");
        }
        // Records past the snapshot's end are left from an earlier copy of the partition (one
        // moved away whose deletion a crash undid): the entries after the snapshot make them
        // again.
        if end > image.end_offset {
            warn!(node_id = me, topic = %topic, partition, group, local_end = end, image_end = image.end_offset, "records past the snapshot left from an earlier copy: cutting them");
            if let Err(e) = log.truncate_to(image.end_offset, now_ms) {
                warn!(node_id = me, topic = %topic, partition, error = %e, "cutting the log back failed");
            }
        }
        self.install_next(group)
    }

    /// The next step of an install begun with [`Broker::install_begin`].
    pub fn install_next(&self, group: u64) -> InstallStep {
        let Some(c) = &self.cluster else {
            return InstallStep::Gone;
        };
        let (Some(image), Some((topic, partition))) =
            (c.installing.get(&group), c.meta.group(group))
        else {
            return InstallStep::Gone;
        };
        let Ok(log) = self.partition(topic, partition) else {
            return InstallStep::Gone;
        };
        let from = log.log_end_offset();
        if from >= image.end_offset {
            return InstallStep::Done;
        }
        let leader = c.roles.get(&group).map_or(-1, |r| r.leader);
        let mut sources: Vec<BrokerAddr> = c
            .meta
            .partition(topic, partition)
            .map(|mp| mp.all_replicas())
            .unwrap_or_default()
            .into_iter()
            .filter(|&r| r != c.node_id)
            .filter_map(|r| {
                let listener = c.meta.listeners.get(&r)?;
                let (h, p) = listener.get(crate::security::REPLICA_LISTENER)?;
                Some((r, h.clone(), *p))
            })
            .collect();
        sources.sort_by_key(|(r, _, _)| *r != leader);
        // Throttled: fetches of about a tenth of a second's worth, so the copy trickles
        // rather than lands in 8 MiB bursts between long pauses.
        let rate = sources
            .iter()
            .map(|(r, _, _)| self.install_rate(group, *r))
            .min()
            .unwrap_or(throttle::UNLIMITED);
        let max_bytes = if rate != throttle::UNLIMITED {
            (rate / 10).clamp(THROTTLED_FETCH_BYTES_MIN as i64, FETCH_BYTES as i64) as i32
        } else {
            FETCH_BYTES
        };
        let mut request = replica_fetch(c.node_id, topic, partition, from);
        request.max_bytes = max_bytes;
        for t in &mut request.topics {
            for p in &mut t.partitions {
                p.partition_max_bytes = max_bytes;
            }
        }
        InstallStep::Fetch {
            request: Box::new(request),
            sources,
            from,
            to: image.end_offset,
        }
    }

    /// Appends what a replica fetch returned. `Err` carries why this source could not serve
    /// (try another, or again later).
    pub fn install_fetched(
        &mut self,
        group: u64,
        response: &FetchResponse,
        now_ms: i64,
    ) -> Result<(), String> {
        let me = self.config.node_id;
        let Some(c) = &self.cluster else {
            return Err("not a cluster".into());
        };
        let (Some(image), Some((topic, partition))) =
            (c.installing.get(&group).cloned(), c.meta.group(group))
        else {
            return Err("no install in progress".into());
        };
        let topic = topic.to_string();
        let pd = response
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| "the response lacks the partition".to_string())?;
        if response.error_code != 0 {
            return Err(format!("fetch error {}", response.error_code));
        }
        let log = self
            .partition_mut(&topic, partition)
            .map_err(|e| format!("{e:?}"))?;
        if pd.error_code == ResponseError::OffsetOutOfRange.code()
            && pd.log_start_offset > log.log_end_offset()
        {
            // The source's retention moved past everything here: restart the log there.
            let start = pd.log_start_offset.min(image.end_offset);
            log.reset_to(start, now_ms).map_err(|e| e.to_string())?;
            return Ok(());
        }
        if let Some(e) = ResponseError::try_from_code(pd.error_code) {
            return Err(format!("{e:?}"));
        }
        let records = pd.records.as_deref().unwrap_or_default();
        // The source has no record from here to the image's end (compaction removed them): it
        // answered with records past the image, or with none while it holds the image's end.
        let first = crate::batch::headers(records)
            .next()
            .map(|(_, h)| h.base_offset);
        let none_below_end = match first {
            Some(base) => base >= image.end_offset,
            None => pd.high_watermark >= image.end_offset,
        };
        if none_below_end {
            log.skip_to(image.end_offset, now_ms)
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        if records.is_empty() {
            return Err(format!(
                "no records yet (its high watermark {})",
                pd.high_watermark
            ));
        }
        let before = log.log_end_offset();
        let end = log
            .append_replicated(records, image.end_offset, now_ms)
            .map_err(|e| e.to_string())?;
        if end == before {
            return Err(format!("nothing new below offset {}", image.end_offset));
        }
        tracing::debug!(node_id = me, topic = %topic, partition, from = before, to = end, "snapshot install: records copied");
        Ok(())
    }

    /// Completes an install: the producer state is rebuilt from the copied log, and entries up
    /// to the image's applied index count as applied (they are skipped when Raft hands them
    /// over again).
    pub fn install_finish(&mut self, group: u64, now_ms: i64) {
        let me = self.config.node_id;
        let Some(c) = &mut self.cluster else { return };
        let Some(image) = c.installing.remove(&group) else {
            return;
        };
        let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p)) else {
            return;
        };
        self.rebuild_producer_state(&topic, partition);
        let Ok(log) = self.partition_mut(&topic, partition) else {
            return;
        };
        let end = log.log_end_offset();
        let unsynced = log.has_unsynced();
        let c = self.cluster.as_mut().expect("cluster");
        let Some(a) = c.applied.get_mut(&group) else {
            return;
        };
        if a.index > image.applied_index {
            // A mark left from an earlier copy of the partition: the snapshot is the state now,
            // and the entries after it are applied again (recorded anew, lower).
            a.unsynced.clear();
            a.durable = (0, 0);
            a.recorded = 0;
            a.recorded_end = 0;
            a.index = 0;
        }
        if image.applied_index > a.index {
            a.index = image.applied_index;
            if unsynced {
                a.unsynced.push_back((image.applied_index, end));
                c.wrote = true;
            } else {
                a.durable = (image.applied_index, end);
            }
        }
        info!(node_id = me, topic = %topic, partition, group, end_offset = end, applied_index = image.applied_index, "snapshot installed");
        if c.roles
            .get(&group)
            .and_then(|r| r.load_at)
            .is_some_and(|at| image.applied_index >= at)
        {
            self.on_leader_caught_up(group, now_ms);
        }
        self.finish_apply();
    }

    /// Whether `group` is copying records for a snapshot.
    pub fn installing(&self, group: u64) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.installing.contains_key(&group))
    }

    /// The byte rate an install of `group` may copy from `source` at, under Kafka's
    /// replication throttles ([`throttle::UNLIMITED`] when none applies): this node's
    /// follower rate if the topic's `follower.replication.throttled.replicas` names this
    /// replica, the source's leader rate if `leader.replication.throttled.replicas` names the
    /// source's, whichever is lower. Both come from `__meta`, so the copying node enforces the
    /// source's limit too.
    pub fn install_rate(&self, group: u64, source: i32) -> i64 {
        let Some(c) = &self.cluster else {
            return throttle::UNLIMITED;
        };
        let Some((topic, partition)) = c.meta.group(group) else {
            return throttle::UNLIMITED;
        };
        let Some(t) = c.meta.topics.get(topic) else {
            return throttle::UNLIMITED;
        };
        let names = |key: &str, node: i32| {
            t.configs
                .get(key)
                .is_some_and(|list| throttle::names_replica(list, partition, node))
        };
        let mut rate = throttle::UNLIMITED;
        if names("follower.replication.throttled.replicas", c.node_id) {
            rate = rate
                .min(throttle::rate(&c.meta.broker_configs, c.node_id, throttle::FOLLOWER_RATE).0);
        }
        if names("leader.replication.throttled.replicas", source) {
            rate =
                rate.min(throttle::rate(&c.meta.broker_configs, source, throttle::LEADER_RATE).0);
        }
        rate
    }
}

/// A replica's fetch: from `offset`, as replica `node_id` (served by any replica, not only the
/// leader, up to its committed and durable end).
pub fn replica_fetch(node_id: i32, topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(str(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(offset)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(FETCH_BYTES),
                ]),
        ])
}
