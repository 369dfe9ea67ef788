//! Produce: validate, assign offsets, append; the response waits for the sync (group commit).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::{debug, warn};

use super::{Broker, Reply, str};
use crate::log::LogError;

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
            let topic_error = match &name {
                _ if !matches!(acks, -1..=1) => Some(ResponseError::InvalidRequiredAcks),
                _ if req.transactional_id.is_some() => {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                }
                None => Some(ResponseError::UnknownTopicId),
                Some(n) => self.ensure_topic_for_write(n, now_ms).err(),
            };
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for pd in topic_data.partition_data {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let result = match (topic_error, &name) {
                    (Some(e), _) => Err((e, None)),
                    (None, Some(n)) => self.append_partition(n, pd.index, pd.records.as_deref(), now_ms),
                    (None, None) => unreachable!("topic error set when the name is unknown"),
                };
                match result {
                    Ok((base, start)) => {
                        wrote = true;
                        pr.base_offset = base;
                        pr.log_start_offset = start;
                    }
                    Err((e, msg)) => {
                        pr.error_code = e.code();
                        pr.error_message = msg.map(|m| str(&m));
                    }
                }
                partitions.push(pr);
            }
            let mut tr = TopicProduceResponse::default().with_partition_responses(partitions);
            if version >= 13 {
                tr.topic_id = topic_data.topic_id;
            } else {
                tr.name = topic_data.name;
            }
            response.responses.push(tr);
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

    /// Looks a topic up for a write, creating it when auto-creation is on.
    fn ensure_topic_for_write(&mut self, name: &str, now_ms: i64) -> Result<(), ResponseError> {
        if self.topics.contains_key(name) {
            return Ok(());
        }
        if !self.config.auto_create_topics {
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

    /// Appends to one partition; returns (base offset, log start offset).
    #[allow(clippy::type_complexity)]
    fn append_partition(
        &mut self,
        topic: &str,
        partition: i32,
        records: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(i64, i64), (ResponseError, Option<String>)> {
        if let Some(f) = &self.storage_failure {
            return Err((ResponseError::KafkaStorageError, Some(format!("storage failed: {f}"))));
        }
        let epoch = self.leader_epoch();
        let sync_writes = self.config.sync_writes;
        let log = self.partition_mut(topic, partition).map_err(|e| (e, None))?;
        let Some(records) = records else {
            return Err((ResponseError::InvalidRecord, Some("no records".into())));
        };
        match log.append(records, epoch, now_ms) {
            Ok(a) => {
                debug!(topic, partition, base_offset = a.base_offset, last_offset = a.last_offset, "appended");
                if !sync_writes {
                    // Without fsync, written is as durable as it gets: visible at once.
                    let end = log.log_end_offset();
                    log.mark_durable(end);
                }
                Ok((a.base_offset, log.log_start_offset()))
            }
            Err(LogError::Batch(e)) => {
                let code = match e {
                    crate::batch::BatchError::Crc { .. } | crate::batch::BatchError::Truncated { .. } => {
                        ResponseError::CorruptMessage
                    }
                    _ => ResponseError::InvalidRecord,
                };
                Err((code, Some(e.to_string())))
            }
            Err(e @ LogError::TooLarge { .. }) => Err((ResponseError::MessageTooLarge, Some(e.to_string()))),
            Err(e) => {
                warn!(topic, partition, error = %e, "append failed");
                Err((ResponseError::KafkaStorageError, Some(e.to_string())))
            }
        }
    }
}
