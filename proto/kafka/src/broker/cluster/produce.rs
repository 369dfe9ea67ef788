//! Produce on the partition leader: validate, then propose (nothing is written before commit).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, PartitionProduceResponse};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind};

use super::super::{Broker, Reply, str, valid_topic_name};
use super::{META_GROUP, Proposal, Wait};
use crate::cluster::MetaCommand;

/// Why a partition of a produce is refused: error, message, and the leader (id, epoch) to try.
pub(super) type Refusal = (ResponseError, Option<String>, i32, i32);

/// One partition of a produce request, as far as its answer is concerned.
#[derive(Debug)]
pub(super) struct PartitionProduce {
    /// The parked produce.
    pub token: u64,
    /// (topic, partition) position in the response.
    pub slot: (usize, usize),
    pub topic: Option<String>,
    pub partition: i32,
    pub records: Option<bytes::Bytes>,
    pub acks: i16,
    pub transactional_id: Option<String>,
    /// The transaction's coordinator confirmed the partition is in the transaction.
    pub verified: bool,
    /// When the request arrived (the monotonic clock, see `ClusterState::mono`).
    pub since: u64,
}

impl Broker {
    pub(in crate::broker) fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Produce in cluster mode: validate on the leader, propose one entry per partition.
    pub(in crate::broker) fn produce_cluster(
        &mut self,
        req: ProduceRequest,
        version: i16,
        now_ms: i64,
    ) -> Reply {
        let acks = req.acks;
        let token = self.new_token();
        let txn_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
        let mut response = ProduceResponse::default();
        let mut outstanding = 0usize;
        for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
            let name = if version >= 13 {
                self.ids.get(&topic_data.topic_id).cloned()
            } else {
                Some(topic_data.name.0.to_string())
            };
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for (pi, pd) in topic_data.partition_data.into_iter().enumerate() {
                let mut pr = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let step = PartitionProduce {
                    token,
                    slot: (ti, pi),
                    topic: name.clone(),
                    partition: pd.index,
                    records: pd.records,
                    acks,
                    transactional_id: txn_id.clone(),
                    verified: false,
                    since: self.cluster_clock(),
                };
                match self.produce_partition(step, &mut pr, now_ms) {
                    Ok(()) => outstanding += 1,
                    Err(refusal) => self.refuse_partition(&mut response, &mut pr, refusal, version),
                }
                partitions.push(pr);
            }
            response
                .responses
                .push(crate::broker::produce::topic_response(
                    version,
                    topic_data.name,
                    topic_data.topic_id,
                    partitions,
                ));
        }
        if acks == 0 {
            return Reply::Nothing;
        }
        if outstanding == 0 {
            return Reply::Now(ResponseKind::Produce(response));
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.produces.insert(token, (response, outstanding, version));
        Reply::Parked { token }
    }

    /// One partition of a produce: checks it, then proposes its entry (or first asks the
    /// transaction's coordinator on another node whether the partition is in the transaction,
    /// see `txn`). `Ok` when the partition's answer will come later.
    pub(super) fn produce_partition(
        &mut self,
        step: PartitionProduce,
        pr: &mut PartitionProduceResponse,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let acks = step.acks;
        if let Some(e) = crate::broker::produce::target_refusal(acks, step.topic.as_deref()) {
            return Err((e, None, -1, -1));
        }
        let n = step.topic.as_deref().expect("checked");
        if !self.meta().is_some_and(|m| m.topics.contains_key(n)) {
            let n = n.to_string();
            self.auto_create(&n, now_ms);
            return Err((ResponseError::UnknownTopicOrPartition, None, -1, -1));
        }
        self.check_leader(n, step.partition)
            .map_err(|h| (h.error, None, h.leader, h.epoch))?;
        // The same checks as standalone, decided here, not at apply: a replica whose producer
        // table was rebuilt from a trimmed log might decide otherwise.
        let verify = self
            .partition_refusal(
                n,
                step.partition,
                acks,
                step.transactional_id.as_deref(),
                step.records.as_deref(),
            )
            .map_err(|(e, m, errors)| {
                pr.record_errors = errors;
                (e, m, -1, -1)
            })?;
        if let Some(check) = verify
            && !step.verified
        {
            if acks == 0 {
                // Nobody would hear the verification's outcome (transactions need acks=all).
                return Err((ResponseError::InvalidRequiredAcks, None, -1, -1));
            }
            return self.verify_remotely(step, check);
        }
        let records = step.records.as_deref().expect("checked");
        // Everything apply would refuse, at the time the entry carries (apply stamps and
        // checks with it too, so the outcome is the same); only the size after a
        // recompression is left to apply.
        let mut predictable = true;
        if let Ok(log) = self.partition(n, step.partition) {
            let headers = log.check(records, now_ms).map_err(|e| {
                let (code, msg) = crate::broker::produce::append_error(e);
                (code, msg, -1, -1)
            })?;
            if log.config().log_append_time {
                pr.log_append_time_ms = now_ms;
            }
            // A recompressed batch may outgrow max.message.bytes: only apply knows.
            predictable = log
                .config()
                .compression
                .is_none_or(|t| headers.iter().all(|h| h.compression() == t as i16));
        }
        let c = self.cluster.as_mut().expect("cluster");
        let group = c.meta.partition(n, step.partition).expect("checked").group;
        let (seq, base) = c.propose_entry(group, now_ms, records, predictable);
        if acks == 1
            && let Some(base) = base
        {
            c.early_pending.insert(seq, (group, base));
        }
        if acks != 0 {
            c.waits.insert(
                seq,
                Wait::Produce {
                    token: step.token,
                    topic: step.slot.0,
                    partition: step.slot.1,
                    group,
                    since: step.since,
                },
            );
        }
        Ok(())
    }

    /// Fills a refused partition's answer (with the leader to go to, when that is why).
    pub(super) fn refuse_partition(
        &self,
        response: &mut ProduceResponse,
        pr: &mut PartitionProduceResponse,
        (e, msg, leader, epoch): Refusal,
        version: i16,
    ) {
        pr.error_code = e.code();
        pr.error_message = msg.map(|m| str(&m));
        if leader >= 0 && version >= 10 {
            pr.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch);
            if let Some(ep) = self.cluster.as_ref().and_then(|c| c.endpoint(leader))
                && !response
                    .node_endpoints
                    .iter()
                    .any(|x| x.node_id.0 == leader)
            {
                response.node_endpoints.push(ep);
            }
        }
    }

    /// Proposes the creation of a topic a client asked for by name (auto-creation).
    pub(in crate::broker) fn auto_create(&mut self, name: &str, _now_ms: i64) {
        // Internal topics are their coordinators' to create, at their size.
        if !self.config.auto_create_topics
            || valid_topic_name(name).is_err()
            || crate::broker::admin::internal_creation_refusal(name).is_some()
        {
            return;
        }
        let partitions = self.config.default_partitions;
        let id = crate::broker::random_uuid(&mut self.rng);
        let Some(c) = &mut self.cluster else { return };
        let rf = c.meta.members().len().min(3) as i32;
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: MetaCommand::CreateTopic {
                request: None,
                name: name.to_string(),
                id,
                partitions,
                replication_factor: rf,
                configs: BTreeMap::new(),
                assignment: None,
            }
            .encode(),
        });
    }
}
