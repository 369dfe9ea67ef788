//! Offset queries and truncation: ListOffsets, DeleteRecords, OffsetForLeaderEpoch.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::Broker;
use crate::log::LogError;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

impl Broker {
    pub(super) fn list_offsets(
        &self,
        req: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let mut response = ListOffsetsResponse::default();
        let read_committed = req.isolation_level == 1;
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut partitions = Vec::new();
            for p in t.partitions {
                let mut r = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                let outcome = self
                    .partition(&name, p.partition_index)
                    .and_then(|log| {
                        self.check_leader(&name, p.partition_index)
                            .map_err(|h| h.error)?;
                        self.check_epoch(&name, p.partition_index, p.current_leader_epoch)
                            .map(|_| log)
                    })
                    .and_then(|log| {
                        let found = match p.timestamp {
                            LATEST if read_committed => Ok(Some((log.last_stable_offset(), -1))),
                            LATEST => Ok(Some((log.high_watermark(), -1))),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                            MAX_TIMESTAMP => log.max_timestamp_offset(),
                            LATEST_TIERED => Ok(None),
                            ts if ts < 0 => return Err(ResponseError::InvalidRequest),
                            ts => log.offset_for_timestamp(ts),
                        };
                        found.map_err(|e: LogError| {
                            tracing::warn!(topic = %name, error = %e, "list offsets failed");
                            ResponseError::KafkaStorageError
                        })
                    });
                match outcome {
                    Ok(Some((offset, ts))) => {
                        r.offset = offset;
                        r.timestamp = ts;
                        if version >= 4 {
                            r.leader_epoch = self.epoch_of(&name, p.partition_index);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => r.error_code = e.code(),
                }
                partitions.push(r);
            }
            response.topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        response
    }

    pub(super) fn delete_records(&mut self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let mut response = DeleteRecordsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut partitions = Vec::new();
            for p in t.partitions {
                let mut r = DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                // An internal topic's records are its coordinator's state (as Kafka refuses).
                let target = if super::is_internal(&name) {
                    Err(ResponseError::InvalidTopicException)
                } else {
                    self.partition_mut(&name, p.partition_index)
                };
                match target {
                    Err(e) => r.error_code = e.code(),
                    Ok(log) => {
                        let offset = if p.offset == -1 {
                            log.high_watermark()
                        } else {
                            p.offset
                        };
                        match log.delete_records_before(offset) {
                            Ok(low) => r.low_watermark = low,
                            Err(LogError::OffsetOutOfRange { .. }) => {
                                r.error_code = ResponseError::OffsetOutOfRange.code()
                            }
                            Err(e) => {
                                tracing::warn!(topic = %name, error = %e, "delete records failed");
                                r.error_code = ResponseError::KafkaStorageError.code()
                            }
                        }
                    }
                }
                partitions.push(r);
            }
            response.topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        response
    }

    pub(super) fn offset_for_leader_epoch(
        &self,
        req: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let mut response = OffsetForLeaderEpochResponse::default();
        for t in req.topics {
            let name = t.topic.0.to_string();
            let mut partitions = Vec::new();
            for p in t.partitions {
                let mut r = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                let ours = self.epoch_of(&name, p.partition);
                match self.partition(&name, p.partition).and_then(|log| {
                    self.check_leader(&name, p.partition).map_err(|h| h.error)?;
                    self.check_epoch(&name, p.partition, p.current_leader_epoch)
                        .map(|_| log)
                }) {
                    Err(e) => r.error_code = e.code(),
                    Ok(log) if p.leader_epoch >= ours => {
                        r.leader_epoch = ours;
                        r.end_offset = log.log_end_offset();
                    }
                    Ok(log) => {
                        // The largest epoch <= the requested one, and where the next began.
                        let mut found = (-1, log.log_start_offset());
                        let mut end = None;
                        let _ = log.for_each_batch_header(log.log_start_offset(), |h| {
                            if end.is_some() {
                                return;
                            }
                            if h.partition_leader_epoch <= p.leader_epoch {
                                found.0 = h.partition_leader_epoch;
                            } else {
                                end = Some(h.base_offset);
                            }
                        });
                        r.leader_epoch = if found.0 < 0 { p.leader_epoch } else { found.0 };
                        r.end_offset = end.unwrap_or(log.log_end_offset()).max(found.1);
                    }
                }
                partitions.push(r);
            }
            response.topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(partitions),
            );
        }
        response
    }
}
