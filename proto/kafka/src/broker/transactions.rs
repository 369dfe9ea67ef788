//! Transactions (KIP-98): the coordinator's requests, and on a standalone broker its actions
//! run against the broker's own logs (cluster mode executes them through Raft instead:
//! `cluster/txn.rs`).
//!
//! A decision (PrepareCommit / PrepareAbort) is appended to `__transaction_state` and the
//! markers wait for the sync that makes it durable ([`Broker::complete_sync`] runs them), so a
//! crash never leaves a marker without its decision; a restart finds every prepared decision
//! and writes its markers again. The markers go to every partition of the transaction (and to
//! the group's `__consumer_offsets` partition, which commits or drops TxnOffsetCommit's
//! offsets); the Complete state follows. Each data partition's [`ProducerStateTable`] tracks
//! open transactions (the last stable offset) and aborted ones (the index read_committed
//! fetches answer from).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId, RequestKind, ResponseKind,
};
use sluice_coordinator::{
    MarkerJob, ProducerStateTable, RequestContext as CoordContext, StoreRecord,
    TRANSACTION_STATE_TOPIC, TxnAction,
};
use tracing::{debug, info, warn};

use super::groups::{OFFSETS_TOPIC, encode_store_batch};
use super::{Broker, OPERATOR_EPOCH, Reply, groups};
use crate::codec::RequestContext;

/// A marker job waiting for the sync that makes its decision durable.
#[derive(Debug)]
pub(super) struct PendingMarkers {
    /// Sync sequence of the decision's record.
    pub seq: u64,
    /// The markers.
    pub job: MarkerJob,
    /// When the decision was made (the markers' timestamp).
    pub now_ms: i64,
    /// The markers are written; `seq` is now their sync, after which the transaction
    /// completes (a Complete record synced with its markers could outlive them on power loss).
    pub written: bool,
}

/// Whether a request is served by the transaction coordinator.
pub(super) fn is_txn_request(body: &RequestKind) -> bool {
    match body {
        RequestKind::InitProducerId(r) => r.transactional_id.is_some(),
        RequestKind::AddPartitionsToTxn(_)
        | RequestKind::AddOffsetsToTxn(_)
        | RequestKind::EndTxn(_)
        | RequestKind::TxnOffsetCommit(_)
        | RequestKind::DescribeTransactions(_)
        | RequestKind::ListTransactions(_)
        | RequestKind::DescribeProducers(_) => true,
        _ => false,
    }
}

impl Broker {
    /// Serves a transaction request.
    pub(super) fn txn_request(
        &mut self,
        ctx: &RequestContext,
        body: RequestKind,
        now_ms: i64,
    ) -> Reply {
        if let RequestKind::DescribeProducers(r) = &body {
            return Reply::Now(ResponseKind::DescribeProducers(self.describe_producers(r)));
        }
        if self.is_cluster() {
            // The coordinators live on the leaders of `__transaction_state`'s partitions.
            if !self.txn_topic_ready() {
                return Reply::Now(txn_error(body, ResponseError::CoordinatorNotAvailable));
            }
        } else if let Err(e) = self.ensure_txn_topic(now_ms) {
            warn!(node_id = self.config.node_id, error = %e, "creating {TRANSACTION_STATE_TOPIC} failed");
            return Reply::Now(txn_error(body, ResponseError::CoordinatorNotAvailable));
        }
        self.next_token += 1;
        let token = self.next_token;
        let cctx = CoordContext {
            token,
            api_version: ctx.api_version,
            client_id: ctx.client_id.clone().unwrap_or_default(),
            client_host: String::new(),
        };
        let actions = match body {
            RequestKind::InitProducerId(r) => {
                self.txn
                    .init_producer_id(&cctx, &r, now_ms, &mut self.producer_ids)
            }
            // v4+: a partition leader verifies (only nodes may send it, see `authorize`).
            RequestKind::AddPartitionsToTxn(r) if !r.transactions.is_empty() => {
                let resp = self.verify_txn_partitions(&r);
                return Reply::Now(ResponseKind::AddPartitionsToTxn(resp));
            }
            RequestKind::AddPartitionsToTxn(r) => {
                let meta = self.meta();
                let topics = &self.topics;
                let known: std::collections::HashSet<(String, i32)> = r
                    .v3_and_below_topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.as_str(), *p)))
                    .filter(|(t, p)| {
                        *t != OFFSETS_TOPIC
                            && *t != TRANSACTION_STATE_TOPIC
                            && match meta {
                                Some(m) => m.partition(t, *p).is_some(),
                                None => topics
                                    .get(*t)
                                    .is_some_and(|x| *p >= 0 && (*p as usize) < x.partitions.len()),
                            }
                    })
                    .map(|(t, p)| (t.to_string(), p))
                    .collect();
                let exists = |t: &str, p: i32| known.contains(&(t.to_string(), p));
                self.txn.add_partitions(&cctx, &r, now_ms, &exists)
            }
            RequestKind::AddOffsetsToTxn(r) => {
                let p = self.coordinator.partition_for(r.group_id.0.as_str());
                self.txn.add_offsets(&cctx, &r, OFFSETS_TOPIC, p, now_ms)
            }
            RequestKind::EndTxn(r) => self.txn.end_txn(&cctx, &r, now_ms),
            RequestKind::DescribeTransactions(r) => {
                vec![TxnAction::Respond(self.txn.describe(&cctx, &r))]
            }
            RequestKind::ListTransactions(r) => {
                vec![TxnAction::Respond(self.txn.list(&cctx, &r, now_ms))]
            }
            RequestKind::TxnOffsetCommit(r) => {
                // The offsets must belong to the producer's ongoing transaction (KIP-890): a
                // fenced zombie's or a late retry's commit is refused, or it would open a
                // transaction on `__consumer_offsets` that nobody ends. In cluster mode the
                // transaction's coordinator may be another node: it is asked first.
                let p = self.coordinator.partition_for(r.group_id.0.as_str());
                if self.is_cluster() && !self.txn.coordinates(&r.transactional_id) {
                    return self.verify_offsets_remotely(cctx, r, p);
                }
                if let Err(e) = self
                    .txn
                    .verify(r.producer_id.0, r.producer_epoch, OFFSETS_TOPIC, p)
                {
                    return Reply::Now(txn_error(RequestKind::TxnOffsetCommit(r), e));
                }
                let actions = self.txn_offset_commit_known(&cctx, r, now_ms);
                return self
                    .execute(actions, Some(token), now_ms)
                    .unwrap_or(Reply::Parked { token });
            }
            other => {
                warn!(node_id = self.config.node_id, request = ?other, "not a transaction request");
                return Reply::Nothing;
            }
        };
        self.execute_txn(actions, Some(token), now_ms)
            .unwrap_or(Reply::Parked { token })
    }

    /// Creates `__transaction_state` on first use (compacted, as Kafka's) and loads it.
    fn ensure_txn_topic(&mut self, now_ms: i64) -> Result<(), String> {
        if self.topics.contains_key(TRANSACTION_STATE_TOPIC) {
            return Ok(());
        }
        let configs = self.internal_topic_configs();
        let n = self.txn.config().num_partitions;
        self.create_topic(TRANSACTION_STATE_TOPIC, n, configs, now_ms)
            .map_err(|(e, m)| format!("{e:?} {}", m.unwrap_or_default()))?;
        info!(
            node_id = self.config.node_id,
            partitions = n,
            "created {TRANSACTION_STATE_TOPIC}"
        );
        self.load_txn_state(now_ms);
        Ok(())
    }

    /// Loads every partition of `__transaction_state` (standalone: this node coordinates all
    /// of them); prepared transactions get their markers written again.
    pub(super) fn load_txn_state(&mut self, now_ms: i64) {
        let Some(t) = self.topics.get(TRANSACTION_STATE_TOPIC) else {
            return;
        };
        let n = t.partitions.len() as i32;
        if n != self.txn.config().num_partitions {
            let cfg = sluice_coordinator::TxnConfig {
                num_partitions: n,
                ..self.txn.config().clone()
            };
            self.txn = sluice_coordinator::TxnCoordinator::new(cfg);
        }
        for p in 0..n {
            let records: Vec<StoreRecord> = match self
                .read_store_batches(TRANSACTION_STATE_TOPIC, p)
            {
                Ok(items) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        groups::Stored::Record(r) => Some(r),
                        _ => None,
                    })
                    .collect(),
                Err(e) => {
                    warn!(node_id = self.config.node_id, partition = p, error = %e, "cannot read {TRANSACTION_STATE_TOPIC}");
                    Vec::new()
                }
            };
            let actions = self.txn.load_partition(p, &records);
            // The decisions are durable: their markers may be written now.
            self.execute_txn(actions, None, now_ms);
        }
    }

    /// Executes transaction coordinator actions in order; returns the reply for `current`.
    pub(super) fn execute_txn(
        &mut self,
        actions: Vec<TxnAction>,
        current: Option<u64>,
        now_ms: i64,
    ) -> Option<Reply> {
        if self.is_cluster() {
            return self.execute_txn_cluster(actions, current, now_ms);
        }
        let mut mine = None;
        let mut last_seq = self.synced_seq;
        let mut decision_failed = false;
        for action in actions {
            match action {
                TxnAction::Respond(r) => {
                    if let Some(reply) = self.answer_now(current, r.token, r.body) {
                        mine = Some(reply);
                    }
                }
                TxnAction::Persist {
                    partition,
                    record,
                    id_block,
                    then,
                } => {
                    let outcome = self.persist_txn_record(partition, &record, id_block, now_ms);
                    // A WriteMarkers follows its own decision's Persist.
                    decision_failed = outcome.is_err();
                    if let Ok(seq) = outcome {
                        last_seq = seq.max(last_seq);
                    }
                    if let Some(r) = then {
                        let token = r.token;
                        let (seq, body) = match outcome {
                            Ok(seq) => (seq, r.body),
                            Err(e) => (0, r.into_error(e).body),
                        };
                        if Some(token) != current {
                            self.deferred.push(groups::Deferred {
                                token,
                                seq,
                                response: body,
                            });
                        } else if seq == 0 {
                            mine = Some(Reply::Now(body));
                        } else {
                            mine = Some(Reply::Durable {
                                seq,
                                response: body,
                            });
                        }
                    }
                }
                // A decision that was not stored gets no markers (the reload dropped it).
                TxnAction::WriteMarkers(_) if decision_failed => {}
                TxnAction::WriteMarkers(job) => {
                    self.pending_markers.push(PendingMarkers {
                        seq: last_seq,
                        job,
                        now_ms,
                        written: false,
                    });
                }
            }
        }
        self.run_due_markers();
        mine
    }

    /// Appends a transaction record to its `__transaction_state` partition (and a producer-id
    /// block to `__consumer_offsets`); returns the sync sequence that makes it durable (0:
    /// acknowledged without fsync).
    fn persist_txn_record(
        &mut self,
        partition: i32,
        record: &StoreRecord,
        id_block: Option<StoreRecord>,
        now_ms: i64,
    ) -> Result<u64, ResponseError> {
        if self.storage_failure.is_some() {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(block) = id_block {
            let write = sluice_coordinator::StoreWrite {
                partition: groups::PRODUCER_ID_PARTITION,
                record: block,
            };
            self.persist(&[write], None, now_ms)?;
        }
        let sync_writes = self.config.sync_writes;
        let result = encode_store_batch(&[record], None, now_ms).and_then(|batch| {
            let log = self
                .partition_mut(TRANSACTION_STATE_TOPIC, partition)
                .map_err(|e| format!("no partition {partition}: {e:?}"))?;
            log.append(&batch, 0, now_ms).map_err(|e| e.to_string())?;
            if !sync_writes {
                let end = log.log_end_offset();
                log.mark_durable(end);
            }
            Ok(())
        });
        if let Err(e) = result {
            warn!(node_id = self.config.node_id, partition, error = %e, "transaction state append failed");
            // Memory holds what was not stored: reload the partition to drop it.
            self.load_txn_state(now_ms);
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.write_seq += 1;
        Ok(if sync_writes { self.write_seq } else { 0 })
    }

    /// Writes the markers of every decision that is durable by now, then records each
    /// transaction's completion.
    pub(super) fn run_due_markers(&mut self) {
        loop {
            let synced = if self.config.sync_writes {
                self.synced_seq
            } else {
                u64::MAX
            };
            let Some(i) = self.pending_markers.iter().position(|m| m.seq <= synced) else {
                return;
            };
            let PendingMarkers {
                job,
                now_ms,
                written,
                ..
            } = self.pending_markers.remove(i);
            if written {
                // The markers are durable: the transaction completes.
                let actions = self
                    .txn
                    .markers_written(&job, now_ms, &mut self.producer_ids);
                self.execute_txn(actions, None, now_ms);
                continue;
            }
            if let Err(e) = self.write_markers(&job, now_ms) {
                // Storage failed: the broker refuses writes from now on, and a restart finds
                // the decision and writes the markers again.
                warn!(node_id = self.config.node_id, transactional_id = %job.transactional_id, error = %e, "writing transaction markers failed");
                continue;
            }
            self.pending_markers.push(PendingMarkers {
                seq: self.write_seq,
                job,
                now_ms,
                written: true,
            });
        }
    }

    /// Appends one commit or abort marker to every partition of the transaction.
    fn write_markers(&mut self, job: &MarkerJob, now_ms: i64) -> Result<(), String> {
        if let Some(f) = &self.storage_failure {
            return Err(format!("storage failed: {f}"));
        }
        for (topic, p) in &job.partitions {
            // A standalone broker's coordinator epoch is its partitions' leader epoch, 0.
            self.append_marker(job, (topic, *p), (0, 0), now_ms)?;
        }
        self.write_seq += 1;
        debug!(
            node_id = self.config.node_id,
            transactional_id = %job.transactional_id,
            commit = job.commit,
            partitions = job.partitions.len(),
            "transaction markers written"
        );
        Ok(())
    }

    /// Appends `job`'s marker to one partition (none to a partition that is gone) and tells
    /// its producer state (and, on `__consumer_offsets`, the group coordinator) the outcome.
    /// `coordinator_epoch`: of the coordinator that decided ([`OPERATOR_EPOCH`] for an
    /// operator's abort, which keeps the producer's).
    pub(super) fn append_marker(
        &mut self,
        job: &MarkerJob,
        (topic, p): (&str, i32),
        (leader_epoch, coordinator_epoch): (i32, i32),
        now_ms: i64,
    ) -> Result<(), String> {
        // Cluster mode: a marker applies once committed, so it is durable already.
        let durable_now = !self.config.sync_writes || self.is_cluster();
        let coordinator_epoch = if coordinator_epoch == OPERATOR_EPOCH {
            self.producers
                .get(&(topic.to_string(), p))
                .map_or(-1, |t| t.coordinator_epoch_of(job.producer_id))
        } else {
            coordinator_epoch
        };
        let marker = crate::batch::control_batch(
            job.producer_id,
            job.producer_epoch,
            job.commit,
            coordinator_epoch,
            now_ms,
        );
        let Ok(log) = self.partition_mut(topic, p) else {
            debug!(
                topic,
                partition = p,
                "partition of a transaction is gone: no marker"
            );
            return Ok(());
        };
        let appended = log
            .append(&marker, leader_epoch, now_ms)
            .map_err(|e| e.to_string())?;
        if durable_now {
            let end = log.log_end_offset();
            log.mark_durable(end);
        }
        let hw = log.high_watermark();
        if topic == OFFSETS_TOPIC {
            self.coordinator
                .complete_txn(p, job.producer_id, job.commit);
        }
        // Also on `__consumer_offsets`: its cleaner must not clean past an open
        // transaction's offsets nor let an aborted offset shadow a committed one.
        self.producers
            .entry((topic.to_string(), p))
            .or_default()
            .record_marker(
                job.producer_id,
                (job.producer_epoch, coordinator_epoch),
                job.commit,
                appended.base_offset,
                now_ms,
                hw,
            );
        self.sync_unstable(topic, p);
        Ok(())
    }

    /// WriteTxnMarkers on a standalone broker: an operator's abort of a hanging transaction
    /// (its own coordinator writes markers directly). Each marker is appended at once and the
    /// answer waits for its sync. A marker older than the producer's epoch in the partition is
    /// refused (INVALID_PRODUCER_EPOCH), as Kafka does.
    pub(super) fn write_txn_markers_standalone(
        &mut self,
        req: &kafka_protocol::messages::WriteTxnMarkersRequest,
        now_ms: i64,
    ) -> Reply {
        let mut resp = crate::broker::markers_error(req, ResponseError::UnknownServerError);
        let mut wrote = false;
        for (m, result) in req.markers.iter().zip(&mut resp.markers) {
            let job = MarkerJob {
                transactional_id: String::new(),
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                commit: m.transaction_result,
                partitions: Vec::new(),
            };
            for (t, topic) in m.topics.iter().zip(&mut result.topics) {
                let name = t.name.0.as_str();
                for (p, out) in t.partition_indexes.iter().zip(&mut topic.partitions) {
                    let newer = self
                        .producers
                        .get(&(name.to_string(), *p))
                        .and_then(|tbl| tbl.epoch_of(job.producer_id))
                        .is_some_and(|e| e > job.producer_epoch);
                    let outcome = if self.partition(name, *p).is_err() {
                        Err(ResponseError::UnknownTopicOrPartition)
                    } else if newer {
                        Err(ResponseError::InvalidProducerEpoch)
                    } else if self.storage_failure.is_some() {
                        Err(ResponseError::KafkaStorageError)
                    } else {
                        self.append_marker(&job, (name, *p), (0, OPERATOR_EPOCH), now_ms).map_err(|e| {
                            warn!(node_id = self.config.node_id, topic = name, partition = p, error = %e, "writing a marker failed");
                            ResponseError::KafkaStorageError
                        })
                    };
                    if outcome.is_ok() {
                        wrote = true;
                        info!(
                            node_id = self.config.node_id,
                            topic = name,
                            partition = p,
                            producer_id = job.producer_id,
                            commit = job.commit,
                            "transaction marker written on request"
                        );
                    }
                    out.error_code = outcome.err().map_or(0, |e| e.code());
                }
            }
        }
        let response = ResponseKind::WriteTxnMarkers(resp);
        if !wrote || !self.config.sync_writes {
            return Reply::Now(response);
        }
        self.write_seq += 1;
        Reply::Durable {
            seq: self.write_seq,
            response,
        }
    }

    /// Copies a partition's first undecided transaction offset from its producer state to its
    /// log, which answers the last stable offset from it.
    pub(super) fn sync_unstable(&mut self, topic: &str, partition: i32) {
        let first = self
            .producers
            .get(&(topic.to_string(), partition))
            .and_then(ProducerStateTable::first_unstable_offset);
        if let Ok(log) = self.partition_mut(topic, partition) {
            log.set_first_unstable(first);
        }
    }

    /// Aborted transactions whose records may lie in `[from, to)` of a partition, in marker
    /// order: those in its index files, then those its table holds.
    pub(super) fn aborted_between(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> std::io::Result<Vec<sluice_coordinator::AbortedTxn>> {
        let mut out = self.filed_aborted_between(topic, partition, from, to)?;
        if let Some(t) = self.producers.get(&(topic.to_string(), partition)) {
            out.extend(t.aborted_between(from, to));
        }
        // Each transaction once (a crash may have left an entry in a file and in the table).
        out.sort_by_key(|a| (a.last_offset, a.producer_id));
        out.dedup();
        Ok(out)
    }

    /// The sync of partition `(topic, partition)` reached `hw`: markers below it are durable.
    pub(super) fn txn_high_watermark(&mut self, topic: &str, partition: i32, hw: i64) {
        if let Some(t) = self.producers.get_mut(&(topic.to_string(), partition))
            && t.first_unstable_offset().is_some()
        {
            t.advance_high_watermark(hw);
            self.sync_unstable(topic, partition);
        }
    }

    /// DescribeProducers (v0): the producers each partition knows.
    fn describe_producers(&self, req: &DescribeProducersRequest) -> DescribeProducersResponse {
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.as_str();
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        let r = PartitionResponse::default().with_partition_index(*p);
                        if let Err(e) = self.partition(name, *p) {
                            return r.with_error_code(e.code());
                        }
                        if let Err(h) = self.check_leader(name, *p) {
                            return r.with_error_code(h.error.code());
                        }
                        let producers = self
                            .producers
                            .get(&(name.to_string(), *p))
                            .map(ProducerStateTable::producers)
                            .unwrap_or_default();
                        r.with_active_producers(
                            producers
                                .into_iter()
                                .map(|v| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(v.producer_id))
                                        .with_producer_epoch(v.epoch as i32)
                                        .with_last_sequence(v.last_sequence)
                                        .with_last_timestamp(v.last_timestamp_ms)
                                        .with_coordinator_epoch(v.coordinator_epoch)
                                        .with_current_txn_start_offset(v.txn_start_offset)
                                })
                                .collect(),
                        )
                    })
                    .collect();
                TopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        DescribeProducersResponse::default().with_topics(topics)
    }
}

/// A transaction request answered with `e` everywhere.
pub(crate) fn txn_error(body: RequestKind, e: ResponseError) -> ResponseKind {
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::*;
    let code = e.code();
    match body {
        RequestKind::InitProducerId(_) => InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .into(),
        RequestKind::AddPartitionsToTxn(r) => AddPartitionsToTxnResponse::default()
            .with_error_code(code)
            .with_results_by_topic_v3_and_below(
                r.v3_and_below_topics
                    .iter()
                    .map(|t| {
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(t.name.clone())
                            .with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_partition_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .into(),
        RequestKind::AddOffsetsToTxn(_) => AddOffsetsToTxnResponse::default()
            .with_error_code(code)
            .into(),
        RequestKind::EndTxn(_) => EndTxnResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .into(),
        RequestKind::TxnOffsetCommit(r) => TxnOffsetCommitResponse::default()
            .with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .into(),
        RequestKind::DescribeTransactions(r) => DescribeTransactionsResponse::default()
            .with_transaction_states(
                r.transactional_ids
                    .iter()
                    .map(|id| {
                        describe_transactions_response::TransactionState::default()
                            .with_transactional_id(id.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            )
            .into(),
        RequestKind::ListTransactions(_) => ListTransactionsResponse::default()
            .with_error_code(code)
            .into(),
        _ => ApiVersionsResponse::default().with_error_code(code).into(),
    }
}
