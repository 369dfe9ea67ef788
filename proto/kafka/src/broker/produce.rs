//! Produce: validate, assign offsets, append; the response waits for the sync (group commit).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::{debug, warn};

use sluice_coordinator::BatchCheck;

use super::cluster::RemoteCheck;
use super::{Broker, Reply, groups, str};
use crate::batch;
use crate::log::LogError;

/// Why a partition's records are refused: the error, its message, and the per-record errors
/// (KIP-467) when single records are to blame.
pub(super) type RecordsRefusal = (
    ResponseError,
    Option<String>,
    Vec<BatchIndexAndErrorMessage>,
);

/// A topic's produce response, naming the topic the way the request version does (v13+: id).
pub(in crate::broker) fn topic_response(
    version: i16,
    name: kafka_protocol::messages::TopicName,
    id: uuid::Uuid,
    partitions: Vec<PartitionProduceResponse>,
) -> TopicProduceResponse {
    let tr = TopicProduceResponse::default().with_partition_responses(partitions);
    if version >= 13 {
        tr.with_topic_id(id)
    } else {
        tr.with_name(name)
    }
}

/// The checks of a produce's target both modes make first: valid acks, a topic id that names
/// a topic (v13+), and no client writes to an internal topic (only coordinators do, as Kafka).
pub(super) fn target_refusal(acks: i16, topic: Option<&str>) -> Option<ResponseError> {
    match topic {
        _ if !matches!(acks, -1..=1) => Some(ResponseError::InvalidRequiredAcks),
        None => Some(ResponseError::UnknownTopicId),
        Some(n) if super::is_internal(n) => Some(ResponseError::InvalidTopicException),
        Some(_) => None,
    }
}

impl Broker {
    pub(super) fn produce(&mut self, req: ProduceRequest, version: i16, now_ms: i64) -> Reply {
        let acks = req.acks;
        let mut response = ProduceResponse::default();
        let mut wrote = false;
        for topic_data in req.topic_data {
            let name = if version >= 13 {
                self.ids.get(&topic_data.topic_id).cloned()
            } else {
                Some(topic_data.name.0.to_string())
            };
            let topic_error = target_refusal(acks, name.as_deref()).or_else(|| {
                let n = name.as_deref().expect("refused above");
                self.ensure_topic_for_write(n, now_ms).err()
            });
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for pd in topic_data.partition_data {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let result = match (topic_error, &name) {
                    (Some(e), _) => Err((e, None)),
                    (None, Some(n)) => match self
                        .partition(n, pd.index)
                        .map_err(|e| (e, None, Vec::new()))
                        .and_then(|_| {
                            self.partition_refusal(
                                n,
                                pd.index,
                                acks,
                                req.transactional_id.as_ref().map(|t| t.0.as_str()),
                                pd.records.as_deref(),
                            )
                        }) {
                        Err((e, message, errors)) => {
                            pr.record_errors = errors;
                            Err((e, message))
                        }
                        Ok(_) => self.append_partition(n, pd.index, pd.records.as_deref(), now_ms),
                    },
                    (None, None) => unreachable!("topic error set when the name is unknown"),
                };
                match result {
                    Ok((base, start, append_time)) => {
                        wrote = true;
                        pr.base_offset = base;
                        pr.log_start_offset = start;
                        pr.log_append_time_ms = append_time;
                    }
                    Err((e, msg)) => {
                        pr.error_code = e.code();
                        pr.error_message = msg.map(|m| str(&m));
                    }
                }
                partitions.push(pr);
            }
            response.responses.push(topic_response(
                version,
                topic_data.name,
                topic_data.topic_id,
                partitions,
            ));
        }
        if wrote {
            self.write_seq += 1;
        }
        if acks == 0 {
            return Reply::Nothing;
        }
        if wrote && self.config.sync_writes {
            Reply::AfterSync {
                seq: self.write_seq,
                response,
            }
        } else {
            Reply::Now(kafka_protocol::messages::ResponseKind::Produce(response))
        }
    }

    /// What one partition of a produce must pass once its topic is known and this node may
    /// write it, before its records are written (standalone) or proposed (cluster mode, on
    /// the leader; apply then runs only the idempotence checks, which every replica decides
    /// alike). One path for both modes, so they refuse alike: acks=all with too few in-sync
    /// replicas, a storage failure, no records, a control batch from a client, a
    /// transactional batch without its transactional id or with a producer id that is not
    /// that id's, KIP-890's check that the partition is in the producer's ongoing transaction,
    /// a plain batch from a producer with a transaction open here, keyless records on a
    /// compacted topic. `Ok(Some(check))`: the transaction's coordinator is on another node,
    /// which must confirm the partition before the records go in.
    pub(super) fn partition_refusal(
        &self,
        topic: &str,
        partition: i32,
        acks: i16,
        transactional_id: Option<&str>,
        records: Option<&[u8]>,
    ) -> Result<Option<RemoteCheck>, RecordsRefusal> {
        let refuse = |e: ResponseError, m: String| (e, Some(m), Vec::new());
        if acks == -1
            && let Some(m) = self.min_insync_refusal(topic, partition)
        {
            return Err(refuse(ResponseError::NotEnoughReplicas, m));
        }
        if let Some(f) = &self.storage_failure {
            return Err(refuse(
                ResponseError::KafkaStorageError,
                format!("storage failed: {f}"),
            ));
        }
        let Some(records) = records else {
            return Err(refuse(ResponseError::InvalidRecord, "no records".into()));
        };
        if batch::headers(records).any(|(_, h)| h.is_control()) {
            // Only the transaction coordinator writes markers (as Kafka).
            return Err(refuse(
                ResponseError::InvalidRecord,
                "clients may not produce control batches".into(),
            ));
        }
        let mut remote = None;
        if let Some((_, h)) = batch::headers(records).find(|(_, h)| h.attributes & 0x10 != 0) {
            let Some(id) = transactional_id else {
                return Err(refuse(
                    ResponseError::InvalidRequest,
                    "transactional records need the producer's transactional id".into(),
                ));
            };
            if self.is_cluster() && !self.txn.coordinates(id) {
                remote = self
                    .remote_txn_check(id, &h, topic, partition)
                    .map_err(|(e, m)| refuse(e, m))?;
            } else {
                if let Some(e) = self.txn_id_refusal(Some(id), Some(records)) {
                    return Err(refuse(
                        e,
                        "the producer id does not belong to this transactional id".into(),
                    ));
                }
                // KIP-890: only into a partition of the producer's ongoing transaction, so a
                // late retry can never open a transaction nobody will end.
                if let Err(e) = self
                    .txn
                    .verify(h.producer_id, h.producer_epoch, topic, partition)
                {
                    let why = match e {
                        ResponseError::InvalidProducerEpoch => {
                            "the producer was fenced by a newer epoch"
                        }
                        _ => "the partition is not part of the producer's ongoing transaction",
                    };
                    debug!(topic, partition, producer_id = h.producer_id, error = ?e, "transactional produce refused");
                    return Err(refuse(e, why.into()));
                }
            }
        }
        if let Some((_, h)) = batch::headers(records).next()
            && let Some((e, m)) = self.plain_batch_in_transaction(topic, partition, &h)
        {
            return Err((e, m, Vec::new()));
        }
        if let Some((errors, message)) = self.keyless_refusal(topic, partition, Some(records)) {
            return Err((ResponseError::InvalidRecord, Some(message), errors));
        }
        Ok(remote)
    }

    /// A compacted topic refuses records without a key (KIP-467): the per-record errors and
    /// the partition's message, as Kafka words them; `None` when the records may be appended
    /// (or fail for another reason the append reports).
    pub(super) fn keyless_refusal(
        &self,
        topic: &str,
        partition: i32,
        records: Option<&[u8]>,
    ) -> Option<(Vec<BatchIndexAndErrorMessage>, String)> {
        let log = self.partition(topic, partition).ok()?;
        if !log.config().compact {
            return None;
        }
        let keyless = log.keyless_records(records?).ok()?;
        if keyless.is_empty() {
            return None;
        }
        let message = format!(
            "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
        );
        let shown: Vec<String> = keyless
            .iter()
            .take(3)
            .map(|(_, i)| format!("RecordError(batchIndex={i}, message='{message}')"))
            .collect();
        let summary = format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            keyless.len(),
            shown.join(", ")
        );
        debug!(
            topic,
            partition,
            records = keyless.len(),
            "refused records without a key"
        );
        let errors = keyless
            .iter()
            .map(|(_, i)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(*i)
                    .with_batch_index_error_message(Some(str(&message)))
            })
            .collect();
        Some((errors, summary))
    }

    /// Transactional records must come with the transactional id their producer id belongs
    /// to (so the id's ACL covers them); `None` when they do or are not transactional.
    pub(super) fn txn_id_refusal(
        &self,
        transactional_id: Option<&str>,
        records: Option<&[u8]>,
    ) -> Option<ResponseError> {
        let (_, h) = batch::headers(records?).find(|(_, h)| h.attributes & 0x10 != 0)?;
        let Some(id) = transactional_id else {
            return Some(ResponseError::InvalidRequest);
        };
        match self.txn.get(id) {
            Some(m) if m.producer_id == h.producer_id => None,
            _ => Some(ResponseError::InvalidProducerIdMapping),
        }
    }

    /// acks=all on a partition with fewer in-sync replicas than the topic's
    /// `min.insync.replicas` is refused, as Kafka does: standalone there is one replica; in
    /// cluster mode the ISR `__meta` records (the write itself still needs a Raft majority).
    fn min_insync_refusal(&self, topic: &str, partition: i32) -> Option<String> {
        let isr = match self.meta() {
            Some(m) => m.partition(topic, partition)?.in_sync().len(),
            None => 1,
        };
        let min = self.min_insync_replicas(topic);
        (isr < min).then(|| format!("{isr} in-sync replicas, min.insync.replicas is {min}"))
    }

    /// The topic's `min.insync.replicas` (1 when unset).
    pub(super) fn min_insync_replicas(&self, topic: &str) -> usize {
        self.topics
            .get(topic)
            .and_then(|t| t.configs.get("min.insync.replicas"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// The idempotence check of a produced record set: `Ok(Ok(Some(..)))` to append and record,
    /// `Ok(Ok(None))` for a non-idempotent append, `Ok(Err(base_offset))` for a duplicate.
    #[allow(clippy::type_complexity)]
    fn check_idempotent(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Result<
        Result<Option<(sluice_coordinator::BatchInfo, i64)>, i64>,
        (ResponseError, Option<String>),
    > {
        let headers: Vec<_> = batch::headers(records).map(|(_, h)| h).collect();
        let Some(first) = headers.first() else {
            return Ok(Ok(None)); // the append reports what is wrong
        };
        if headers.iter().all(|h| h.producer_id < 0) {
            return Ok(Ok(None));
        }
        if headers.len() > 1 {
            return Err((
                ResponseError::InvalidRecord,
                Some("an idempotent produce must carry exactly one record batch".into()),
            ));
        }
        let info = groups::batch_info(first);
        // The transaction checks ran before (`partition_refusal`): standalone just now, in
        // cluster mode on the leader before it proposed the entry.
        let table = self.producers.get(&(topic.to_string(), partition));
        let check = table.map_or(BatchCheck::Append, |t| t.check(&info));
        match check {
            BatchCheck::Append => Ok(Ok(Some((info, first.max_timestamp)))),
            BatchCheck::Duplicate { base_offset, .. } => {
                debug!(
                    topic,
                    partition,
                    producer_id = info.producer_id,
                    base_sequence = info.base_sequence,
                    base_offset,
                    "duplicate batch"
                );
                Ok(Err(base_offset))
            }
            BatchCheck::Reject(e) => Err((e, None)),
        }
    }

    /// As Kafka: while a producer id has a transaction open in a partition, only
    /// transactional batches of it are written there (a plain idempotent one, say with a
    /// bumped epoch, would fence the transaction's producer and could later pass for its
    /// retry). The refusal, if `h` is such a batch.
    pub(super) fn plain_batch_in_transaction(
        &self,
        topic: &str,
        partition: i32,
        h: &crate::batch::BatchHeader,
    ) -> Option<(ResponseError, Option<String>)> {
        let open = h.producer_id >= 0
            && h.attributes & 0x10 == 0
            && self
                .producers
                .get(&(topic.to_string(), partition))
                .is_some_and(|t| t.has_open_transaction(h.producer_id));
        open.then(|| {
            (
                ResponseError::InvalidTxnState,
                Some(format!(
                    "expected a transactional write from producer {}: it has a transaction open in this partition",
                    h.producer_id
                )),
            )
        })
    }

    /// Looks a topic up for a write, creating it when auto-creation is on.
    fn ensure_topic_for_write(&mut self, name: &str, now_ms: i64) -> Result<(), ResponseError> {
        if self.topics.contains_key(name) {
            return Ok(());
        }
        if !self.config.auto_create_topics
            || super::admin::internal_creation_refusal(name).is_some()
        {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        if super::valid_topic_name(name).is_err() {
            return Err(ResponseError::InvalidTopicException);
        }
        let partitions = self.config.default_partitions;
        self.create_topic(name, partitions, Default::default(), now_ms)
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Appends to one partition; returns (base offset, log start offset, log append time or -1).
    ///
    /// Batches of idempotent producers (`producer_id >= 0`) go through the partition's
    /// [`sluice_coordinator::ProducerStateTable`]: a retried batch is answered with its original
    /// offset and not written again; an out-of-order or fenced one is refused.
    #[allow(clippy::type_complexity)]
    fn append_partition(
        &mut self,
        topic: &str,
        partition: i32,
        records: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(i64, i64, i64), (ResponseError, Option<String>)> {
        self.append_partition_at(topic, partition, records, 0, now_ms)
    }

    /// [`Broker::append_partition`] stamping `epoch` as the batches' leader epoch (cluster
    /// mode: the Raft term of the entry).
    #[allow(clippy::type_complexity)]
    pub(super) fn append_partition_at(
        &mut self,
        topic: &str,
        partition: i32,
        records: Option<&[u8]>,
        epoch: i32,
        now_ms: i64,
    ) -> Result<(i64, i64, i64), (ResponseError, Option<String>)> {
        if let Some(f) = &self.storage_failure {
            return Err((
                ResponseError::KafkaStorageError,
                Some(format!("storage failed: {f}")),
            ));
        }
        let sync_writes = self.config.sync_writes;
        self.partition(topic, partition).map_err(|e| (e, None))?;
        let Some(records) = records else {
            return Err((ResponseError::InvalidRecord, Some("no records".into())));
        };
        // What a client's records must pass was checked before (`partition_refusal`). Apply
        // still refuses a control batch: a leader of a build before that check could have
        // committed one, and every replica must refuse it alike (never a forged marker).
        if batch::headers(records).any(|(_, h)| h.is_control()) {
            return Err((
                ResponseError::InvalidRecord,
                Some("clients may not produce control batches".into()),
            ));
        }
        let idempotent = match self.check_idempotent(topic, partition, records) {
            Ok(Ok(info)) => info,
            Ok(Err(duplicate_base)) => {
                let start = self
                    .partition(topic, partition)
                    .map_err(|e| (e, None))?
                    .log_start_offset();
                return Ok((duplicate_base, start, -1));
            }
            Err(e) => return Err(e),
        };
        let log = self
            .partition_mut(topic, partition)
            .map_err(|e| (e, None))?;
        match log.append(records, epoch, now_ms) {
            Ok(a) => {
                debug!(
                    topic,
                    partition,
                    base_offset = a.base_offset,
                    last_offset = a.last_offset,
                    "appended"
                );
                if !sync_writes {
                    // Without fsync, written is as durable as it gets: visible at once.
                    let end = log.log_end_offset();
                    log.mark_durable(end);
                }
                let log_start = log.log_start_offset();
                if let Some((info, _)) = idempotent {
                    // Before the next batch of this partition is checked (we hold the broker).
                    // The stored max timestamp: the append time with LogAppendTime.
                    let table = self
                        .producers
                        .entry((topic.to_string(), partition))
                        .or_default();
                    table.record_append(&info, a.base_offset, a.max_timestamp);
                    let transactional =
                        batch::headers(records).any(|(_, h)| h.attributes & 0x10 != 0);
                    if transactional {
                        let opened = table.first_unstable_offset().is_none();
                        table.record_txn_batch(
                            info.producer_id,
                            info.producer_epoch,
                            a.base_offset,
                        );
                        if opened {
                            self.sync_unstable(topic, partition);
                        }
                    }
                }
                Ok((a.base_offset, log_start, a.log_append_time))
            }
            Err(e @ LogError::Io { .. }) => {
                warn!(topic, partition, error = %e, "append failed");
                Err((ResponseError::KafkaStorageError, Some(e.to_string())))
            }
            Err(e) => Err(append_error(e)),
        }
    }
}

/// The Kafka error a refused append is answered with.
pub(in crate::broker) fn append_error(e: LogError) -> (ResponseError, Option<String>) {
    let code = match &e {
        LogError::Batch(
            crate::batch::BatchError::Crc { .. } | crate::batch::BatchError::Truncated { .. },
        )
        | LogError::Corrupt(_) => ResponseError::CorruptMessage,
        LogError::Batch(_) | LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
        LogError::TooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. } => ResponseError::KafkaStorageError,
    };
    (code, Some(e.to_string()))
}
