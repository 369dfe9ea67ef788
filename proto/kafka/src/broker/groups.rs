//! Consumer groups and idempotent producers: the broker's side of `sluice-coordinator`.
//!
//! The coordinator is sans-IO and answers with [`Action`]s; this module executes them against the
//! broker's own logs. `Persist` writes become one record batch per internal partition, appended to
//! `__consumer_offsets` like any produce, and their responses wait for the sync sequence that
//! covers them (the same group commit as produce acks). Responses addressed to an earlier, parked
//! request (JoinGroup/SyncGroup completing later) go to an outbox the runtime drains with
//! [`Broker::take_deferred`].
//!
//! Startup replays every `__consumer_offsets` partition into the coordinator and the producer-id
//! allocator ([`Broker::load_offsets_partition`]), and rebuilds the per-partition
//! [`ProducerStateTable`]s from the batch headers of every data partition.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest, RequestKind,
    ResponseKind, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_coordinator::{
    Action, BatchInfo, CoordinatorType, RequestContext as CoordContext, Response, StoreRecord,
    StoreWrite, find_coordinator,
};
use tracing::{debug, warn};

use super::{Broker, Reply};
use crate::batch::BatchHeader;
use crate::codec::RequestContext;

/// Name of the internal topic holding group metadata, committed offsets and producer-id blocks.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Internal partition holding `ProducerIdBlock` records (as docs/coordinator.md suggests).
pub(super) const PRODUCER_ID_PARTITION: i32 = 0;

/// One item of an internal partition, in log order.
#[derive(Debug)]
pub(super) enum Stored {
    /// A record outside any transaction.
    Record(StoreRecord),
    /// A record written in the transaction of this producer id.
    Txn(i64, StoreRecord),
    /// A transaction marker of this producer id: commit (true) or abort.
    Marker(i64, bool),
}

/// A response to an earlier request that was parked ([`Reply::Parked`]), to be delivered by the
/// runtime to the connection waiting for `token`.
#[derive(Debug)]
pub struct Deferred {
    /// Token of the parked request ([`Reply::Parked`]).
    pub token: u64,
    /// Send only once [`Broker::synced_seq`] reaches this (0: at once).
    pub seq: u64,
    /// The response.
    pub response: ResponseKind,
}

/// Whether a request is served by the group coordinator / producer-id allocator.
pub(super) fn is_group_request(body: &RequestKind) -> bool {
    matches!(
        body,
        RequestKind::FindCoordinator(_)
            | RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::OffsetDelete(_)
            | RequestKind::ListGroups(_)
            | RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::InitProducerId(_)
    )
}

/// The idempotence fields of a stored or produced batch.
pub(super) fn batch_info(h: &BatchHeader) -> BatchInfo {
    BatchInfo {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        last_offset_delta: h.last_offset_delta,
    }
}

/// Encodes the writes of one Persist for one partition as a single record batch (a
/// transactional one of `txn`'s producer id and epoch, for TxnOffsetCommit).
pub(super) fn encode_store_batch(
    records: &[&StoreRecord],
    txn: Option<(i64, i16)>,
    now_ms: i64,
) -> Result<Bytes, String> {
    let (producer_id, producer_epoch) = txn.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = r.encode();
            Record {
                transactional: txn.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // RecordBatchEncoder starts a new batch whenever offset - sequence changes
                // (FACTS.md): keep it constant so the whole Persist is one batch.
                sequence: i as i32 - 1,
                timestamp: now_ms,
                key: Some(key),
                value,
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

impl Broker {
    /// Serves a group-coordinator or InitProducerId request.
    pub(super) fn group_request(
        &mut self,
        ctx: &RequestContext,
        client_host: &str,
        body: RequestKind,
        now_ms: i64,
    ) -> Reply {
        if let RequestKind::FindCoordinator(r) = &body {
            return Reply::Now(ResponseKind::FindCoordinator(
                self.find_coordinator(r, ctx.api_version),
            ));
        }
        self.next_token += 1;
        let token = self.next_token;
        let cctx = CoordContext {
            token,
            api_version: ctx.api_version,
            client_id: ctx.client_id.clone().unwrap_or_default(),
            client_host: client_host.to_string(),
        };
        let actions = match body {
            RequestKind::InitProducerId(r) => {
                self.producer_ids
                    .init_producer_id(&cctx, &r, PRODUCER_ID_PARTITION)
            }
            RequestKind::OffsetCommit(r) => self.offset_commit(&cctx, r, now_ms),
            other => match self.coordinator.handle(&cctx, other, now_ms) {
                Ok(actions) => actions,
                Err(e) => {
                    warn!(node_id = self.config.node_id, api = ?ctx.api_key, request = ?e.0, "not a group request");
                    return Reply::Nothing;
                }
            },
        };
        self.execute(actions, Some(token), now_ms)
            .unwrap_or(Reply::Parked { token })
    }

    fn find_coordinator(
        &self,
        req: &FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let node = self.config.node_id;
        let (host, port) = self.advertised();
        let cluster = self.is_cluster();
        find_coordinator(req, version, |kind, key| match kind {
            CoordinatorType::Group if cluster => self.coordinator_node(key),
            // Standalone: this node leads every partition of __consumer_offsets.
            CoordinatorType::Group => Ok((node, host.clone(), port)),
            CoordinatorType::Transaction if cluster => self.txn_coordinator_node(key),
            CoordinatorType::Transaction => Ok((node, host.clone(), port)),
        })
    }

    /// OffsetCommit: partitions of unknown topics are answered UNKNOWN_TOPIC_OR_PARTITION here
    /// (as KafkaApis does); the rest goes to the coordinator.
    fn offset_commit(
        &mut self,
        cctx: &CoordContext,
        mut req: OffsetCommitRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut unknown = Vec::new();
        for t in &mut req.topics {
            let (known, missing) =
                self.known_partitions(t.name.as_str(), &mut t.partitions, |p| p.partition_index);
            t.partitions = known;
            if !missing.is_empty() {
                unknown.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            missing
                                .into_iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(
                                            ResponseError::UnknownTopicOrPartition.code(),
                                        )
                                })
                                .collect(),
                        ),
                );
            }
        }
        req.topics.retain(|t| !t.partitions.is_empty());
        let mut actions = self
            .coordinator
            .handle(cctx, RequestKind::OffsetCommit(req), now_ms)
            .unwrap_or_default();
        if let Some(ResponseKind::OffsetCommit(resp)) = response_for(&mut actions, cctx.token) {
            resp.topics.extend(unknown);
        }
        actions
    }

    /// TxnOffsetCommit, once verified: partitions of unknown topics (and of the internal
    /// topics) are answered UNKNOWN_TOPIC_OR_PARTITION here, as for OffsetCommit; the rest goes
    /// to the coordinator (nothing when nothing is left: no transaction is opened for it).
    pub(super) fn txn_offset_commit_known(
        &mut self,
        cctx: &CoordContext,
        mut req: TxnOffsetCommitRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut unknown = Vec::new();
        for t in &mut req.topics {
            let (known, missing) =
                self.known_partitions(t.name.as_str(), &mut t.partitions, |p| p.partition_index);
            t.partitions = known;
            if !missing.is_empty() {
                unknown.push(
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            missing
                                .into_iter()
                                .map(|p| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(
                                            ResponseError::UnknownTopicOrPartition.code(),
                                        )
                                })
                                .collect(),
                        ),
                );
            }
        }
        req.topics.retain(|t| !t.partitions.is_empty());
        if req.topics.is_empty() {
            return vec![Action::Respond(Response {
                token: cctx.token,
                api_version: cctx.api_version,
                body: ResponseKind::TxnOffsetCommit(
                    TxnOffsetCommitResponse::default().with_topics(unknown),
                ),
            })];
        }
        let mut actions = self.coordinator.txn_offset_commit(cctx, req, now_ms);
        if let Some(ResponseKind::TxnOffsetCommit(resp)) = response_for(&mut actions, cctx.token) {
            resp.topics.extend(unknown);
        }
        actions
    }

    /// Splits `parts` (taken) into those of partitions `topic` has and the indexes of the
    /// others; an internal topic has none a client may commit offsets for.
    fn known_partitions<P>(
        &self,
        topic: &str,
        parts: &mut Vec<P>,
        index: impl Fn(&P) -> i32,
    ) -> (Vec<P>, Vec<i32>) {
        let count = self
            .topics
            .get(topic)
            .filter(|_| !super::is_internal(topic))
            .map_or(0, |x| x.partitions.len() as i32);
        let (known, missing): (Vec<P>, Vec<P>) = std::mem::take(parts)
            .into_iter()
            .partition(|p| (0..count).contains(&index(p)));
        (known, missing.iter().map(index).collect())
    }

    /// Runs the coordinator's timers; responses go to the outbox.
    pub fn tick(&mut self, now_ms: i64) {
        let actions = self.coordinator.tick(now_ms);
        self.execute(actions, None, now_ms);
        // Transactions past their timeout are aborted.
        let actions = self.txn.tick(now_ms, &mut self.producer_ids);
        self.execute_txn(actions, None, now_ms);
    }

    /// Absolute wall-clock time (ms) at which [`Broker::tick`] is next needed, if any; `now_ms`
    /// is the wall clock now (group timers run on the monotonic clock, see
    /// [`Broker::advance_clock`]).
    pub fn poll_timeout(&self, now_ms: i64) -> Option<i64> {
        let txn = self.txn.poll_timeout();
        match (self.coordinator.poll_timeout(now_ms), txn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Responses to parked requests produced since the last call, in order.
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// An answer available now: the reply when it is for the request being handled
    /// (`current`), else queued for its parked connection.
    pub(super) fn answer_now(
        &mut self,
        current: Option<u64>,
        token: u64,
        body: ResponseKind,
    ) -> Option<Reply> {
        if Some(token) == current {
            return Some(Reply::Now(body));
        }
        self.deferred.push(Deferred {
            token,
            seq: 0,
            response: body,
        });
        None
    }

    /// Executes coordinator actions in order. Returns the reply for `current` if one of the
    /// actions answers it; every other response goes to the outbox.
    pub(super) fn execute(
        &mut self,
        actions: Vec<Action>,
        current: Option<u64>,
        now_ms: i64,
    ) -> Option<Reply> {
        let mut mine = None;
        for action in actions {
            let txn = match &action {
                Action::PersistTxn {
                    producer_id,
                    producer_epoch,
                    ..
                } => Some((*producer_id, *producer_epoch)),
                _ => None,
            };
            match action {
                Action::Respond(r) => {
                    if let Some(reply) = self.answer_now(current, r.token, r.body) {
                        mine = Some(reply);
                    }
                }
                Action::Persist { writes, then } if self.is_cluster() => {
                    self.persist_replicated(&writes, then, None, now_ms);
                }
                Action::PersistTxn { writes, then, .. } if self.is_cluster() => {
                    self.persist_replicated(&writes, then, txn, now_ms);
                }
                Action::Persist { writes, then } | Action::PersistTxn { writes, then, .. } => {
                    let outcome = self.persist(&writes, txn, now_ms);
                    for r in then {
                        let token = r.token;
                        let (seq, body) = match &outcome {
                            Ok(seq) => (*seq, r.body),
                            Err(e) => (0, r.into_error(*e).body),
                        };
                        if Some(token) == current {
                            mine = Some(if seq == 0 {
                                Reply::Now(body)
                            } else {
                                Reply::Durable {
                                    seq,
                                    response: body,
                                }
                            });
                        } else {
                            self.deferred.push(Deferred {
                                token,
                                seq,
                                response: body,
                            });
                        }
                    }
                }
            }
        }
        mine
    }

    /// Cluster mode: the writes of one Persist become one entry per internal partition; the
    /// responses wait (parked) until the last entry is applied here.
    fn persist_replicated(
        &mut self,
        writes: &[StoreWrite],
        then: Vec<Response>,
        txn: Option<(i64, i16)>,
        now_ms: i64,
    ) {
        let mut by_partition: BTreeMap<i32, Vec<&StoreRecord>> = BTreeMap::new();
        for w in writes {
            by_partition.entry(w.partition).or_default().push(&w.record);
        }
        let last = by_partition.keys().next_back().copied();
        let mut then = Some(then);
        for (p, records) in &by_partition {
            let responses = if Some(*p) == last {
                then.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let refused = match encode_store_batch(records, txn, now_ms) {
                Ok(batch) => self.persist_cluster(*p, &batch, responses, now_ms).err(),
                Err(e) => {
                    warn!(node_id = self.config.node_id, partition = p, error = %e, "encoding group state failed");
                    Some(responses)
                }
            };
            for r in refused.unwrap_or_default() {
                self.deferred.push(Deferred {
                    token: r.token,
                    seq: 0,
                    response: r.into_error(ResponseError::NotCoordinator).body,
                });
            }
        }
    }

    /// Appends the writes of one Persist (one batch per internal partition); returns the sync
    /// sequence that makes them durable (0 when writes are acknowledged without fsync).
    pub(super) fn persist(
        &mut self,
        writes: &[StoreWrite],
        txn: Option<(i64, i16)>,
        now_ms: i64,
    ) -> Result<u64, ResponseError> {
        if self.storage_failure.is_some() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let mut by_partition: BTreeMap<i32, Vec<&StoreRecord>> = BTreeMap::new();
        for w in writes {
            by_partition.entry(w.partition).or_default().push(&w.record);
        }
        let epoch = 0;
        let sync_writes = self.config.sync_writes;
        let mut failed = Vec::new();
        for (p, records) in &by_partition {
            let result = encode_store_batch(records, txn, now_ms).and_then(|batch| {
                let log = self
                    .partition_mut(OFFSETS_TOPIC, *p)
                    .map_err(|e| format!("no partition {p} of {OFFSETS_TOPIC}: {e:?}"))?;
                let appended = log
                    .append(&batch, epoch, now_ms)
                    .map_err(|e| e.to_string())?;
                if !sync_writes {
                    let end = log.log_end_offset();
                    log.mark_durable(end);
                }
                Ok(appended)
            });
            match result {
                Ok(a) => {
                    debug!(
                        node_id = self.config.node_id,
                        partition = p,
                        base_offset = a.base_offset,
                        records = records.len(),
                        "group state appended"
                    );
                    if let Some((producer_id, epoch)) = txn {
                        // TxnOffsetCommit's batch opens the transaction in this partition.
                        self.producers
                            .entry((OFFSETS_TOPIC.to_string(), *p))
                            .or_default()
                            .record_txn_batch(producer_id, epoch, a.base_offset);
                        self.sync_unstable(OFFSETS_TOPIC, *p);
                    }
                }
                Err(e) => {
                    warn!(node_id = self.config.node_id, partition = p, error = %e, "group state append failed");
                    failed.push(*p);
                }
            }
        }
        if !failed.is_empty() {
            // Memory already holds what was not stored: reload from the log to drop it.
            for p in failed {
                self.load_offsets_partition(p, now_ms);
            }
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.write_seq += 1;
        for w in writes {
            if let StoreRecord::ProducerIdBlock { block_end } = w.record {
                self.pending_id_blocks.push((self.write_seq, block_end));
            }
        }
        Ok(if sync_writes { self.write_seq } else { 0 })
    }

    /// Producer-id blocks whose record became durable.
    pub(super) fn id_blocks_synced(&mut self) {
        let synced = self.synced_seq;
        let allocator = &mut self.producer_ids;
        self.pending_id_blocks.retain(|&(seq, end)| {
            if seq <= synced {
                allocator.block_persisted(end);
                false
            } else {
                true
            }
        });
    }

    /// (Re)loads one partition of `__consumer_offsets` into the coordinator (and producer-id
    /// blocks into the allocator). Cluster mode calls this on becoming leader of the partition.
    pub fn load_offsets_partition(&mut self, partition: i32, now_ms: i64) {
        let items = match self.read_store_batches(OFFSETS_TOPIC, partition) {
            Ok(r) => r,
            Err(e) => {
                warn!(node_id = self.config.node_id, partition, error = %e, "cannot read __consumer_offsets partition; loading what was read");
                Vec::new()
            }
        };
        self.coordinator.begin_load(partition);
        for item in &items {
            let replayed = match item {
                Stored::Record(r) => {
                    self.producer_ids.replay(r);
                    self.coordinator.replay(r)
                }
                Stored::Txn(pid, r) => self.coordinator.replay_txn(r, *pid),
                Stored::Marker(pid, commit) => {
                    self.coordinator.complete_txn(partition, *pid, *commit);
                    Ok(())
                }
            };
            if let Err(e) = replayed {
                warn!(node_id = self.config.node_id, partition, error = %e, "replaying __consumer_offsets partition failed");
            }
        }
        self.coordinator.finish_load(partition, now_ms);
    }

    /// Every item of an internal partition (`__consumer_offsets`, `__transaction_state`) in
    /// log order: records, transactional records with their producer, and markers.
    pub(super) fn read_store_batches(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<Stored>, String> {
        let log = self
            .partition(topic, partition)
            .map_err(|e| format!("{e:?}"))?;
        let mut offset = log.log_start_offset();
        let mut out = Vec::new();
        loop {
            let read = log.read(offset, 1 << 20, true).map_err(|e| e.to_string())?;
            if read.records.is_empty() {
                break;
            }
            for (at, h) in crate::batch::headers(&read.records) {
                let whole = &read.records[at..at + h.total_bytes()];
                if h.is_control() {
                    if let Some(commit) = crate::batch::control_commits(whole) {
                        out.push(Stored::Marker(h.producer_id, commit));
                    }
                    continue;
                }
                let transactional = h.attributes & 0x10 != 0 && h.producer_id >= 0;
                let mut buf = Bytes::copy_from_slice(whole);
                let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| e.to_string())?;
                for rec in sets.into_iter().flat_map(|s| s.records) {
                    let Some(key) = &rec.key else { continue };
                    match StoreRecord::decode(key, rec.value.as_deref()) {
                        Ok(r) if transactional => out.push(Stored::Txn(h.producer_id, r)),
                        Ok(r) => out.push(Stored::Record(r)),
                        Err(e) => {
                            warn!(node_id = self.config.node_id, topic, partition, offset = rec.offset, error = %e, "skipping undecodable internal record")
                        }
                    }
                }
            }
            // Guard against a read that made no progress (e.g. empty batches).
            for (_, h) in crate::batch::headers(&read.records) {
                offset = offset.max(h.last_offset() + 1);
            }
        }
        Ok(out)
    }

    /// Rebuilds the idempotent-producer state of one data partition from its batch headers.
    /// Rebuilds a partition's producer state from every batch of its log (the log was cut back
    /// or rewritten: no snapshot can be trusted).
    pub(super) fn rebuild_producer_state(&mut self, topic: &str, partition: i32) {
        self.load_producer_state(topic, partition, false);
    }

    /// Forgets committed offsets (and producer state) of a deleted topic.
    pub(super) fn on_topic_deleted(&mut self, topic: &str, now_ms: i64) {
        self.producers.retain(|(t, _), _| t != topic);
        self.snapshotted.retain(|(t, _), _| t != topic);
        self.aborted_files.retain(|(t, _), _| t != topic);
        let actions = self.coordinator.topic_deleted(topic, now_ms);
        self.execute(actions, None, now_ms);
    }
}

/// The answer to send instead of `response` when the sync it waited for failed: produce
/// partitions get KAFKA_STORAGE_ERROR, coordinator responses COORDINATOR_NOT_AVAILABLE (as
/// Kafka answers a failed append to `__consumer_offsets`).
pub fn sync_failed(response: ResponseKind, api_version: i16) -> ResponseKind {
    match response {
        ResponseKind::Produce(mut r) => {
            for t in &mut r.responses {
                for p in &mut t.partition_responses {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::KafkaStorageError.code();
                        p.base_offset = -1;
                    }
                }
            }
            ResponseKind::Produce(r)
        }
        body => {
            Response {
                token: 0,
                api_version,
                body,
            }
            .into_error(ResponseError::CoordinatorNotAvailable)
            .body
        }
    }
}

/// The response among `actions` addressed to `token`, sent at once or after a persist.
fn response_for(actions: &mut [Action], token: u64) -> Option<&mut ResponseKind> {
    actions.iter_mut().find_map(|a| match a {
        Action::Respond(r) if r.token == token => Some(&mut r.body),
        Action::Persist { then, .. } | Action::PersistTxn { then, .. } => then
            .iter_mut()
            .find(|r| r.token == token)
            .map(|r| &mut r.body),
        _ => None,
    })
}
