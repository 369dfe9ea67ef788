//! Fetch: read whole batches below the high watermark within the request's byte limits.
//!
//! Fetch sessions (KIP-227) are answered the way the KIP allows a broker without session
//! support to answer: every response carries session id 0, so clients keep sending full fetches.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};

use super::Broker;
use crate::log::LogError;

/// One evaluation of a fetch.
#[derive(Debug)]
pub struct FetchOutcome {
    /// The response as it stands.
    pub response: FetchResponse,
    /// Record bytes included.
    pub bytes: usize,
    /// Whether any partition carries an error (answer at once, don't wait).
    pub has_error: bool,
}

impl Broker {
    /// Evaluates a fetch against the current logs.
    pub fn fetch(&self, req: &FetchRequest, version: i16) -> FetchOutcome {
        let mut response = FetchResponse::default();
        if req.session_id != 0 || req.session_epoch > 0 {
            response.error_code = ResponseError::FetchSessionIdNotFound.code();
            return FetchOutcome {
                response,
                bytes: 0,
                has_error: true,
            };
        }
        let max_bytes = req.max_bytes.max(1) as usize;
        let mut total = 0usize;
        let mut has_error = false;
        let read_committed = req.isolation_level == 1;
        let mut hinted: Vec<i32> = Vec::new();
        // Another replica copying records (cluster mode): any replica serves it, up to its
        // own committed and durable end, whoever leads.
        let replica_id = if version >= 15 {
            req.replica_state.replica_id.0
        } else {
            req.replica_id.0
        };
        let replica = replica_id >= 0 && self.is_cluster_member(replica_id);
        for ft in &req.topics {
            let name = if version >= 13 {
                self.ids.get(&ft.topic_id).cloned()
            } else {
                Some(ft.topic.0.to_string())
            };
            let mut partitions = Vec::with_capacity(ft.partitions.len());
            for fp in &ft.partitions {
                let mut pd = PartitionData::default()
                    .with_partition_index(fp.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_preferred_read_replica((-1).into())
                    .with_aborted_transactions(read_committed.then(Vec::new))
                    .with_records(Some(Bytes::new()));
                let log = match &name {
                    None => Err(ResponseError::UnknownTopicId),
                    Some(n) => self.partition(n, fp.partition),
                };
                let log = match log.and_then(|l| {
                    let n = name.as_deref().unwrap_or_default();
                    if replica {
                        return Ok(l);
                    }
                    if let Err(h) = self.check_leader(n, fp.partition) {
                        if h.leader >= 0 {
                            pd.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(h.leader))
                                .with_leader_epoch(h.epoch);
                            hinted.push(h.leader);
                        }
                        return Err(h.error);
                    }
                    self.check_epoch(n, fp.partition, fp.current_leader_epoch)
                        .map(|_| l)
                }) {
                    Ok(l) => l,
                    Err(e) => {
                        pd.error_code = e.code();
                        has_error = true;
                        partitions.push(pd);
                        continue;
                    }
                };
                pd.high_watermark = log.high_watermark();
                let stable = log.last_stable_offset();
                pd.last_stable_offset = stable;
                pd.log_start_offset = log.log_start_offset();
                let room =
                    (fp.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                // read_committed stops at the last stable offset (replicas read everything).
                let limit = if read_committed && !replica {
                    stable
                } else {
                    i64::MAX
                };
                match log.read_below(fp.fetch_offset, room, total == 0, limit) {
                    Ok(read) => {
                        if read_committed && !read.records.is_empty() {
                            let upto = crate::batch::headers(&read.records)
                                .last()
                                .map_or(fp.fetch_offset, |(_, h)| h.last_offset() + 1);
                            let name = name.as_deref().unwrap_or_default();
                            match self.aborted_between(name, fp.partition, fp.fetch_offset, upto) {
                                Ok(aborted) => {
                                    pd.aborted_transactions = Some(
                                        aborted
                                            .into_iter()
                                            .map(|a| {
                                                AbortedTransaction::default()
                                                    .with_producer_id(ProducerId(a.producer_id))
                                                    .with_first_offset(a.first_offset)
                                            })
                                            .collect(),
                                    );
                                }
                                // Without the index a consumer would read aborted records.
                                Err(e) => {
                                    tracing::warn!(node_id = self.config.node_id, topic = name, partition = fp.partition, error = %e, "reading the aborted-transaction index failed");
                                    pd.error_code = ResponseError::KafkaStorageError.code();
                                    has_error = true;
                                    partitions.push(pd);
                                    continue;
                                }
                            }
                        }
                        total += read.records.len();
                        pd.records = Some(read.records);
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => {
                        pd.error_code = ResponseError::OffsetOutOfRange.code();
                        has_error = true;
                    }
                    Err(e) => {
                        tracing::warn!(topic = ?name, partition = fp.partition, error = %e, "fetch read failed");
                        pd.error_code = ResponseError::KafkaStorageError.code();
                        has_error = true;
                    }
                }
                partitions.push(pd);
            }
            let mut tr = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                tr.topic_id = ft.topic_id;
            } else {
                tr.topic = ft.topic.clone();
            }
            response.responses.push(tr);
        }
        if version >= 16 {
            hinted.sort_unstable();
            hinted.dedup();
            for node in hinted {
                if let Some((host, port)) = self.node_endpoint(node) {
                    response.node_endpoints.push(
                        NodeEndpoint::default()
                            .with_node_id(BrokerId(node))
                            .with_host(super::str(&host))
                            .with_port(port),
                    );
                }
            }
        }
        FetchOutcome {
            response,
            bytes: total,
            has_error,
        }
    }

    /// KIP-320 leader epoch check: -1 means the client does not know.
    pub(super) fn check_epoch(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<(), ResponseError> {
        let ours = self.epoch_of(topic, partition);
        match current_leader_epoch {
            -1 => Ok(()),
            e if e > ours => Err(ResponseError::UnknownLeaderEpoch),
            e if e < ours => Err(ResponseError::FencedLeaderEpoch),
            _ => Ok(()),
        }
    }
}
