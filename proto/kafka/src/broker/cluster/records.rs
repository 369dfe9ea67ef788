//! DeleteRecords in cluster mode: the partition leader checks the offset against its high
//! watermark and proposes it through the partition's Raft log; every replica moves its log
//! start offset when it applies the entry, and the client is answered once the leader did.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use tracing::warn;

use super::super::{Broker, Reply};
use super::{AdminWait, Proposal, Wait};
use crate::cluster::DeleteRecordsEntry;
use crate::log::LogError;

impl Broker {
    /// DeleteRecords: validated here (leader, offset), applied by every replica.
    pub(in crate::broker) fn delete_records_cluster(&mut self, req: DeleteRecordsRequest) -> Reply {
        let token = self.new_token();
        let mut response = DeleteRecordsResponse::default();
        let mut slots = Vec::new();
        let mut proposals = Vec::new();
        for (ti, t) in req.topics.into_iter().enumerate() {
            let name = t.name.0.to_string();
            let mut partitions = Vec::new();
            for (pi, p) in t.partitions.into_iter().enumerate() {
                let mut r = DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                match self.delete_records_target(&name, p.partition_index, p.offset) {
                    Ok((group, offset)) => {
                        proposals.push((slots.len(), group, offset));
                        slots.push((ti, pi));
                    }
                    Err(e) => r.error_code = e.code(),
                }
                partitions.push(r);
            }
            response.topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        if proposals.is_empty() {
            return Reply::Now(ResponseKind::DeleteRecords(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        let proposer = c.node_id as u64;
        c.admins.insert(
            token,
            (AdminWait::DeleteRecords(response, slots), proposals.len()),
        );
        for (slot, group, offset) in proposals {
            let seq = c.seq();
            c.waits.insert(
                seq,
                Wait::Admin {
                    token,
                    slot,
                    group: Some(group),
                    since: c.mono,
                },
            );
            c.proposals.push(Proposal {
                group,
                data: DeleteRecordsEntry {
                    proposer,
                    seq,
                    offset,
                }
                .encode(),
            });
        }
        Reply::Parked { token }
    }

    /// The partition's group and the offset to delete before (-1: the high watermark).
    fn delete_records_target(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(u64, i64), ResponseError> {
        // An internal topic's records are its coordinator's state (as Kafka refuses).
        if crate::broker::is_internal(topic) {
            return Err(ResponseError::InvalidTopicException);
        }
        let log = self.partition(topic, partition)?;
        self.check_leader(topic, partition).map_err(|h| h.error)?;
        let hw = log.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let c = self.cluster.as_ref().expect("cluster");
        let group = c.meta.partition(topic, partition).expect("checked").group;
        Ok((group, offset))
    }

    /// A committed DeleteRecords entry, on every replica.
    pub(super) fn apply_delete_records(
        &mut self,
        topic: &str,
        partition: i32,
        d: DeleteRecordsEntry,
    ) {
        let me = self.config.node_id;
        let result = self.partition_mut(topic, partition).and_then(|log| {
            match log.delete_records_replicated(d.offset) {
                Ok(low) => Ok(low),
                Err(LogError::OffsetOutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
                Err(e) => {
                    warn!(node_id = me, topic, partition, error = %e, "delete records failed");
                    Err(ResponseError::KafkaStorageError)
                }
            }
        });
        if d.proposer != me as u64 {
            return;
        }
        let Some(c) = &mut self.cluster else { return };
        let Some(Wait::Admin { token, slot, .. }) = c.waits.remove(&d.seq) else {
            return;
        };
        if let Ok(low) = result
            && let Some((AdminWait::DeleteRecords(r, slots), _)) = c.admins.get_mut(&token)
        {
            let (t, p) = slots[slot];
            r.topics[t].partitions[p].low_watermark = low;
        }
        self.admin_slot_done(token, slot, result.err().map(|e| (e, String::new())));
        self.deliver_finished();
    }
}
