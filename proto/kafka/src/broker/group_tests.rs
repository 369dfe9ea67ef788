//! Consumer groups and idempotent producers through [`Broker::handle`], on [`MemStorage`]:
//! parked joins answered by `tick`, group-state records appended to `__consumer_offsets` and
//! released after the sync, replay after a crash, producer dedupe across reopen.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, GroupId, InitProducerIdRequest, JoinGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, RequestKind, ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{Broker, BrokerConfig, OFFSETS_TOPIC, Reply};
use crate::codec::RequestContext;
use crate::storage::{MemStorage, Storage};

pub(super) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(super) fn ctx(api_key: ApiKey, api_version: i16) -> RequestContext {
    RequestContext {
        api_key,
        api_version,
        correlation_id: 1,
        client_id: Some("test".into()),
    }
}

fn config() -> BrokerConfig {
    BrokerConfig {
        offsets_partitions: 4,
        group_initial_rebalance_delay_ms: 100,
        ..BrokerConfig::default()
    }
}

fn open(fs: &MemStorage, now_ms: i64) -> Broker {
    Broker::open(
        Arc::new(fs.clone()) as Arc<dyn Storage>,
        config(),
        7,
        now_ms,
    )
    .unwrap()
}

/// What the flusher does: sync every written file, then report it.
pub(super) fn sync(b: &mut Broker) {
    if let Some(work) = b.take_sync_work() {
        for f in &work.files {
            f.sync_data().unwrap();
        }
        b.complete_sync(work.seq, &work.ends, Ok(()));
    }
}

/// The response of a request that is either answered now or after a sync.
fn answer(b: &mut Broker, reply: Reply) -> ResponseKind {
    match reply {
        Reply::Now(r) => r,
        Reply::Durable { seq, response } => {
            assert!(
                b.synced_seq() < seq,
                "a durable answer waits for a sync not yet done"
            );
            sync(b);
            assert!(b.synced_seq() >= seq);
            response
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn join(member_id: &str) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member_id))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"meta")),
            ]),
    )
}

fn commit(member_id: &str, generation: i32, topic: &str, offset: i64) -> RequestKind {
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member_id))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]),
    )
}

fn fetch_offset(b: &mut Broker, topic: &str) -> i64 {
    let req = RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    let ResponseKind::OffsetFetch(r) = call(b, ApiKey::OffsetFetch, 7, req, 0) else {
        panic!("not an OffsetFetch response")
    };
    r.topics[0].partitions[0].committed_offset
}

/// Handles a request and returns its answer (syncing when it waits for one).
fn call(b: &mut Broker, key: ApiKey, v: i16, req: RequestKind, now_ms: i64) -> ResponseKind {
    let reply = b_handle(b, key, v, req, now_ms);
    answer(b, reply)
}

fn b_handle(b: &mut Broker, key: ApiKey, v: i16, req: RequestKind, now_ms: i64) -> Reply {
    b.handle(&ctx(key, v), req, now_ms)
}

/// Creates `topic` (one partition) through a Metadata request with auto-creation.
fn create_topic(b: &mut Broker, topic: &str) {
    let req = RequestKind::Metadata(
        kafka_protocol::messages::MetadataRequest::default()
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(s(topic)))),
            ]))
            .with_allow_auto_topic_creation(true),
    );
    let Reply::Now(ResponseKind::Metadata(m)) = b_handle(b, ApiKey::Metadata, 12, req, 0) else {
        panic!()
    };
    assert_eq!(m.topics[0].error_code, 0);
}

/// Joins a one-member group and completes the rebalance; returns (member id, generation).
fn join_and_sync(b: &mut Broker, now_ms: i64) -> (String, i32) {
    // v5: KIP-394 asks a new dynamic member to rejoin with the id it is given.
    let Reply::Now(ResponseKind::JoinGroup(r)) =
        b_handle(b, ApiKey::JoinGroup, 5, join(""), now_ms)
    else {
        panic!("first join is answered at once")
    };
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    let member = r.member_id.to_string();
    // The real join waits for the initial rebalance delay: parked.
    let Reply::Parked { token } = b_handle(b, ApiKey::JoinGroup, 5, join(&member), now_ms) else {
        panic!("join is parked during the initial delay")
    };
    assert!(b.take_deferred().is_empty());
    let deadline = b.poll_timeout(0).expect("the delay is a deadline");
    assert!(
        deadline > now_ms && deadline <= now_ms + 10_000,
        "{deadline}"
    );
    b.tick(deadline);
    let mut answers = b.take_deferred();
    assert_eq!(answers.len(), 1);
    let d = answers.pop().unwrap();
    assert_eq!(d.token, token);
    assert_eq!(d.seq, 0, "a join answer needs no write");
    let ResponseKind::JoinGroup(j) = d.response else {
        panic!()
    };
    assert_eq!(j.error_code, 0);
    assert_eq!(j.leader.as_str(), member);
    assert_eq!(j.members.len(), 1);
    let sync_req = RequestKind::SyncGroup(
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(j.generation_id)
            .with_member_id(s(&member))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&member))
                    .with_assignment(Bytes::from_static(b"assigned")),
            ]),
    );
    // The leader's assignment is persisted first: the answer waits for the sync.
    let reply = b_handle(b, ApiKey::SyncGroup, 3, sync_req, deadline);
    assert!(matches!(reply, Reply::Durable { .. }), "{reply:?}");
    let ResponseKind::SyncGroup(sg) = answer(b, reply) else {
        panic!()
    };
    assert_eq!(sg.error_code, 0);
    assert_eq!(&sg.assignment[..], b"assigned");
    (member, j.generation_id)
}

#[test]
fn offsets_topic_is_created_internal_and_not_writable() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    assert_eq!(b.topics()[OFFSETS_TOPIC].partitions.len(), 4);
    let req = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s(OFFSETS_TOPIC)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(idempotent_batch(-1, 0, 1))),
                    ]),
            ]),
    );
    let Reply::Now(ResponseKind::Produce(r)) = b_handle(&mut b, ApiKey::Produce, 9, req, 0) else {
        panic!()
    };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
}

#[test]
fn group_join_sync_commit_and_fetch_through_handle() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 1_000);
    create_topic(&mut b, "t");
    let (member, generation) = join_and_sync(&mut b, 1_000);
    let ResponseKind::OffsetCommit(c) = call(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "t", 42),
        1_200,
    ) else {
        panic!()
    };
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_offset(&mut b, "t"), 42);
    // Unknown topics are refused before the coordinator sees them.
    let ResponseKind::OffsetCommit(c) = call(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "nope", 1),
        1_200,
    ) else {
        panic!()
    };
    let codes: Vec<i16> = c
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(codes, vec![ResponseError::UnknownTopicOrPartition.code()]);
}

#[test]
fn synced_offset_commit_survives_a_crash_and_unsynced_one_does_not() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 1_000);
    create_topic(&mut b, "t");
    let (member, generation) = join_and_sync(&mut b, 1_000);
    call(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "t", 10),
        1_100,
    );
    // A second commit is appended but its sync never happens.
    let reply = b_handle(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "t", 20),
        1_200,
    );
    assert!(matches!(reply, Reply::Durable { .. }));
    drop(b);
    fs.crash();
    let mut b = open(&fs, 2_000);
    assert_eq!(fetch_offset(&mut b, "t"), 10);
    // The group came back with its member, which may keep committing.
    let ResponseKind::OffsetCommit(c) = call(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "t", 30),
        2_100,
    ) else {
        panic!()
    };
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetch_offset(&mut b, "t"), 30);
}

/// One batch of `n` records from an idempotent producer.
pub(super) fn idempotent_batch(producer_id: i64, base_sequence: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id >= 0 {
                base_sequence + i as i32
            } else {
                i as i32 - 1
            },
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
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
    .unwrap();
    buf.freeze()
}

pub(super) fn produce(b: &mut Broker, batch: Bytes) -> (i16, i64) {
    let req = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]),
    );
    let resp = match b_handle(b, ApiKey::Produce, 9, req, 1_000) {
        Reply::AfterSync { response, .. } => {
            sync(b);
            response
        }
        Reply::Now(ResponseKind::Produce(r)) => r,
        other => panic!("{other:?}"),
    };
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// InitProducerId; `reserves_block`: the answer must wait for a new id block to be durable
/// (later ids of a durable block are answered at once).
fn init_producer_id(b: &mut Broker, reserves_block: bool) -> i64 {
    let req =
        RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(None));
    let reply = b_handle(b, ApiKey::InitProducerId, 4, req, 0);
    assert_eq!(
        matches!(reply, Reply::Durable { .. }),
        reserves_block,
        "{reply:?}"
    );
    let ResponseKind::InitProducerId(r) = answer(b, reply) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.producer_epoch, 0);
    r.producer_id.0
}

#[test]
fn idempotent_retry_returns_the_original_offset_and_is_written_once() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create_topic(&mut b, "t");
    let pid = init_producer_id(&mut b, true);
    assert_eq!(produce(&mut b, idempotent_batch(pid, 0, 3)), (0, 0));
    assert_eq!(produce(&mut b, idempotent_batch(pid, 3, 2)), (0, 3));
    let end = b.topics()["t"].partitions[0].log_end_offset();
    assert_eq!(end, 5);
    // A retry of the first batch: same offsets, nothing written.
    assert_eq!(produce(&mut b, idempotent_batch(pid, 0, 3)), (0, 0));
    assert_eq!(b.topics()["t"].partitions[0].log_end_offset(), end);
    // A gap in sequences is refused.
    let (code, _) = produce(&mut b, idempotent_batch(pid, 9, 1));
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    // A second producer gets another id.
    assert_ne!(init_producer_id(&mut b, false), pid);
}

#[test]
fn producer_state_and_ids_survive_reopen() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create_topic(&mut b, "t");
    let pid = init_producer_id(&mut b, true);
    assert_eq!(produce(&mut b, idempotent_batch(pid, 0, 3)), (0, 0));
    drop(b);
    fs.crash();
    let mut b = open(&fs, 10);
    // The retry after the restart is still recognised from the log's batch headers.
    assert_eq!(produce(&mut b, idempotent_batch(pid, 0, 3)), (0, 0));
    assert_eq!(b.topics()["t"].partitions[0].log_end_offset(), 3);
    assert_eq!(produce(&mut b, idempotent_batch(pid, 3, 1)), (0, 3));
    // Ids of the block reserved before the crash are never handed out again.
    let next = init_producer_id(&mut b, true);
    assert!(next > pid, "{next} after {pid}");
}

#[test]
fn acks_all_is_refused_when_min_insync_replicas_exceeds_the_one_replica() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create_topic(&mut b, "t");
    let two = std::collections::BTreeMap::from([("min.insync.replicas".into(), "2".into())]);
    b.set_configs_local("t", two);
    let (err, _) = produce(&mut b, idempotent_batch(-1, 0, 1));
    assert_eq!(err, ResponseError::NotEnoughReplicas.code());
    assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 0);
    b.set_configs_local("t", std::collections::BTreeMap::new());
    assert_eq!(produce(&mut b, idempotent_batch(-1, 0, 1)), (0, 0));
}

#[test]
fn offsets_topic_is_compacted_and_stays_bounded_after_many_commits() {
    use kafka_protocol::messages::OffsetDeleteRequest;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    assert_eq!(
        b.topics()[OFFSETS_TOPIC].configs["cleanup.policy"],
        "compact"
    );
    // Small segments, so cleaning has closed segments to work on.
    let small = {
        let mut c = b.topics()[OFFSETS_TOPIC].configs.clone();
        c.insert("internal.segment.bytes".into(), "4096".into());
        c
    };
    b.set_configs_local(OFFSETS_TOPIC, small.clone());
    create_topic(&mut b, "t");
    create_topic(&mut b, "u");
    let (member, generation) = join_and_sync(&mut b, 0);
    let mut now = 10_000;
    let mut peak = 0u64;
    for i in 1..=3000i64 {
        let ResponseKind::OffsetCommit(r) = call(
            &mut b,
            ApiKey::OffsetCommit,
            8,
            commit(&member, generation, "t", i),
            now,
        ) else {
            panic!()
        };
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        if i == 1 {
            call(
                &mut b,
                ApiKey::OffsetCommit,
                8,
                commit(&member, generation, "u", 7),
                now,
            );
        }
        if i % 500 == 0 {
            now += 1000;
            b.clean_now(now);
            let size: u64 = b.topics()[OFFSETS_TOPIC]
                .partitions
                .iter()
                .map(|l| l.size_bytes())
                .sum();
            peak = peak.max(size);
        }
    }
    let size: u64 = b.topics()[OFFSETS_TOPIC]
        .partitions
        .iter()
        .map(|l| l.size_bytes())
        .sum();
    assert!(
        peak < 40_000 && size < 40_000,
        "__consumer_offsets holds {size} bytes (peak {peak}) after 3000 commits"
    );
    // OffsetDelete of "u" writes a tombstone; cleaning keeps it (delete.retention.ms).
    let ResponseKind::LeaveGroup(_) = call(
        &mut b,
        ApiKey::LeaveGroup,
        0,
        RequestKind::LeaveGroup(
            kafka_protocol::messages::LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(&member)),
        ),
        now,
    ) else {
        panic!()
    };
    let req = RequestKind::OffsetDelete(
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("u")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]),
    );
    let ResponseKind::OffsetDelete(r) = call(&mut b, ApiKey::OffsetDelete, 0, req, now) else {
        panic!()
    };
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "{r:?}");
    assert_eq!(fetch_offset(&mut b, "u"), -1);
    // More commits by a new member roll the segment holding the tombstone.
    let (member, generation) = join_and_sync(&mut b, now);
    for i in 0..300 {
        let ResponseKind::OffsetCommit(r) = call(
            &mut b,
            ApiKey::OffsetCommit,
            8,
            commit(&member, generation, "t", 5000 + i),
            now,
        ) else {
            panic!()
        };
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "{r:?}");
    }
    b.clean_now(now + 1);
    b.close();
    let mut b = open(&fs, now + 2);
    assert_eq!(fetch_offset(&mut b, "u"), -1, "after the first clean");
    // Past delete.retention.ms the tombstone goes too.
    b.clean_now(now + 1 + 86_400_000);
    b.close();
    // Replay after a restart rebuilds the committed offsets from the cleaned log.
    let mut b = open(&fs, now + 2);
    assert_eq!(fetch_offset(&mut b, "t"), 5299);
    assert_eq!(fetch_offset(&mut b, "u"), -1);
}

#[test]
fn an_offsets_topic_from_before_compaction_is_compacted_on_start_and_keeps_its_offsets() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create_topic(&mut b, "t");
    // As an older Sluice created it.
    b.set_configs_local(
        OFFSETS_TOPIC,
        std::collections::BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]),
    );
    let (member, generation) = join_and_sync(&mut b, 0);
    let ResponseKind::OffsetCommit(r) = call(
        &mut b,
        ApiKey::OffsetCommit,
        8,
        commit(&member, generation, "t", 42),
        10_000,
    ) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    b.close();
    let mut b = open(&fs, 20_000);
    let c = &b.topics()[OFFSETS_TOPIC].configs;
    assert_eq!(c["cleanup.policy"], "compact");
    assert_eq!(c["segment.bytes"], "104857600");
    assert!(b.topics()[OFFSETS_TOPIC].partitions[0].config().compact);
    assert_eq!(fetch_offset(&mut b, "t"), 42);
    // Persisted: a second start finds it as it is.
    b.close();
    let b = open(&fs, 30_000);
    assert_eq!(
        b.topics()[OFFSETS_TOPIC].configs["cleanup.policy"],
        "compact"
    );
}
