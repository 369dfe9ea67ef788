//! The simulated Kafka client: creates the topic, then produces one record per request with
//! acks=all to whichever node it believes leads, following NOT_LEADER_OR_FOLLOWER hints as
//! librdkafka does. Every value is unique (a retry sends a new one), so the checks can tell
//! where each acknowledged value must be.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_proto::codec::RequestContext;

/// The topic the simulator writes (partition 0 of it; RF 3).
pub const TOPIC: &str = "sim";

/// A request the client sent and is waiting on.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The node it went to.
    pub node: u64,
    /// Sent at (sim ms).
    pub at: u64,
    /// The produced value (`None`: CreateTopics).
    pub value: Option<u64>,
}

/// What the client knows and saw.
#[derive(Debug, Default)]
pub struct Client {
    /// The topic exists (CreateTopics answered, or TOPIC_ALREADY_EXISTS).
    pub topic_ready: bool,
    /// Node believed to lead the partition.
    pub leader_hint: Option<u64>,
    next_value: u64,
    /// Acknowledged values and the offset each was acknowledged at.
    pub acked: BTreeMap<u64, i64>,
    /// Sim time of the last acknowledgement.
    pub last_ack_at: u64,
    /// Longest stretch without an acknowledgement while requests were outstanding (sim ms),
    /// from the first acknowledgement on.
    pub longest_gap: u64,
    /// Longest time a produce waited for its answer (answered ones only).
    pub slowest_answer: u64,
    /// Requests sent.
    pub sent: u64,
}

impl Client {
    /// The next produce: its value and request.
    pub fn produce(&mut self) -> (u64, RequestKind) {
        self.next_value += 1;
        self.sent += 1;
        let value = self.next_value;
        (value, produce_request(value))
    }

    /// Records an answer to `sent`, received at `now`.
    pub fn answered(&mut self, sent: &Sent, response: &ResponseKind, now: u64) {
        if sent.value.is_some() {
            self.slowest_answer = self.slowest_answer.max(now.saturating_sub(sent.at));
        }
        match response {
            ResponseKind::CreateTopics(r) => {
                let code = r.topics.first().map_or(-1, |t| t.error_code);
                if code == 0 || code == ResponseError::TopicAlreadyExists.code() {
                    self.topic_ready = true;
                }
            }
            ResponseKind::Produce(r) => {
                let Some(p) = r
                    .responses
                    .first()
                    .and_then(|t| t.partition_responses.first())
                else {
                    return;
                };
                if p.error_code == 0 {
                    if let Some(v) = sent.value {
                        self.acked.insert(v, p.base_offset);
                    }
                    if self.last_ack_at > 0 {
                        self.longest_gap = self.longest_gap.max(now - self.last_ack_at);
                    }
                    self.last_ack_at = now;
                    self.leader_hint = Some(sent.node);
                } else if p.current_leader.leader_id.0 > 0 {
                    self.leader_hint = Some(p.current_leader.leader_id.0 as u64);
                } else {
                    self.leader_hint = None;
                }
            }
            _ => {}
        }
    }
}

/// A request context as a client's connection would give it.
pub fn ctx(api_key: ApiKey, api_version: i16) -> RequestContext {
    RequestContext {
        api_key,
        api_version,
        correlation_id: 1,
        client_id: Some("sim".into()),
    }
}

/// AddRaftVoter for node `node` (its Raft address does not matter in the simulator).
pub fn add_voter_request(node: i32) -> RequestKind {
    use kafka_protocol::messages::AddRaftVoterRequest;
    use kafka_protocol::messages::add_raft_voter_request::Listener;
    RequestKind::AddRaftVoter(
        AddRaftVoterRequest::default()
            .with_voter_id(node)
            .with_listeners(vec![
                Listener::default()
                    .with_name(StrBytes::from_static_str("RAFT"))
                    .with_host(StrBytes::from_string(format!("node-{node}")))
                    .with_port(7000),
            ]),
    )
}

/// AlterPartitionReassignments moving [`TOPIC`]-0 to `replicas`.
pub fn reassign_request(replicas: &[i32]) -> RequestKind {
    use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    RequestKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsRequest::default().with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(replicas.iter().map(|r| BrokerId(*r)).collect())),
                ]),
        ]),
    )
}

/// CreateTopics for [`TOPIC`] with `partitions` partitions (the client writes partition 0).
pub fn create_topic_request(partitions: i32) -> RequestKind {
    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(partitions)
            .with_replication_factor(3),
    ]))
}

fn produce_request(value: u64) -> RequestKind {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_000,
        key: None,
        value: Some(Bytes::from(value.to_be_bytes().to_vec())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("a one-record batch encodes");
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(buf.freeze())),
                    ]),
            ]),
    )
}

/// (offset, value) of every record in `batches`.
pub fn records(batches: &Bytes) -> Vec<(i64, u64)> {
    let mut b = batches.clone();
    let mut out = Vec::new();
    while b.len() > 12 {
        let Ok(set) = RecordBatchDecoder::decode(&mut b) else {
            break;
        };
        for r in set.records {
            let v = r
                .value
                .as_ref()
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            out.push((r.offset, v));
        }
    }
    out
}
