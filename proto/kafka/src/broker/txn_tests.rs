//! Transactions through [`Broker::handle`] on [`MemStorage`]: markers only after the decision
//! is durable, the last stable offset, aborted transactions in fetches, offsets committed in a
//! transaction, fencing, timeouts, and a crash between the decision and its markers.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, CreateTopicsRequest, EndTxnRequest,
    FetchRequest, GroupId, InitProducerIdRequest, ListOffsetsRequest, OffsetFetchRequest,
    ProduceRequest, ProducerId, RequestKind, ResponseKind, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::group_tests::{ctx, s, sync};
use super::{Broker, BrokerConfig, Reply};
use crate::storage::{MemStorage, Storage};

fn open(fs: &MemStorage, now: i64) -> Broker {
    let config = BrokerConfig {
        offsets_partitions: 2,
        ..BrokerConfig::default()
    };
    let mut b = Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 9, now).unwrap();
    sync(&mut b);
    b
}

fn answer(b: &mut Broker, reply: Reply) -> ResponseKind {
    match reply {
        Reply::Now(r) => r,
        Reply::Durable { seq, response } => {
            sync(b);
            assert!(b.synced_seq() >= seq);
            response
        }
        Reply::AfterSync { seq, response } => {
            sync(b);
            assert!(b.synced_seq() >= seq);
            ResponseKind::Produce(response)
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn create(b: &mut Broker, topic: &str) {
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s(topic)))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    b.handle(
        &ctx(ApiKey::CreateTopics, 5),
        RequestKind::CreateTopics(req),
        0,
    );
    sync(b);
}

fn init(b: &mut Broker, id: &str, timeout_ms: i32, now: i64) -> (i16, i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let reply = b.handle(
        &ctx(ApiKey::InitProducerId, 4),
        RequestKind::InitProducerId(req),
        now,
    );
    let ResponseKind::InitProducerId(r) = answer(b, reply) else {
        panic!()
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn add(b: &mut Broker, id: &str, pid: i64, epoch: i16, topic: &str, now: i64) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![0]),
        ]);
    let reply = b.handle(
        &ctx(ApiKey::AddPartitionsToTxn, 3),
        RequestKind::AddPartitionsToTxn(req),
        now,
    );
    let ResponseKind::AddPartitionsToTxn(r) = answer(b, reply) else {
        panic!()
    };
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// EndTxn, answered once the decision is durable (the markers are then written, unsynced).
fn end(b: &mut Broker, id: &str, pid: i64, epoch: i16, commit: bool, now: i64) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let reply = b.handle(&ctx(ApiKey::EndTxn, 3), RequestKind::EndTxn(req), now);
    let ResponseKind::EndTxn(r) = answer(b, reply) else {
        panic!()
    };
    r.error_code
}

pub(super) fn batch(pid: i64, epoch: i16, seq: i32, values: &[&str], transactional: bool) -> Bytes {
    let keyed: Vec<(String, &str)> = values.iter().map(|v| (format!("k{v}"), *v)).collect();
    let keyed: Vec<(&str, &str)> = keyed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    keyed_batch(pid, epoch, seq, &keyed, transactional)
}

fn keyed_batch(
    pid: i64,
    epoch: i16,
    seq: i32,
    records: &[(&str, &str)],
    transactional: bool,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_000,
            key: Some(Bytes::from(k.to_string())),
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(b: &mut Broker, topic: &str, records: Bytes, txn: Option<&str>, now: i64) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_transactional_id(txn.map(|t| TransactionalId(s(t))))
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let reply = b.handle(&ctx(ApiKey::Produce, 9), RequestKind::Produce(req), now);
    let ResponseKind::Produce(r) = answer(b, reply) else {
        panic!()
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A fetch of partition 0 from offset 0.
fn fetch_partition(
    b: &Broker,
    topic: &str,
    read_committed: bool,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let req = FetchRequest::default()
        .with_max_bytes(1 << 20)
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let out = b.fetch(&req, 11);
    let pd = out.response.responses[0].partitions[0].clone();
    assert_eq!(pd.error_code, 0);
    pd
}

/// Every record of a fetched partition.
fn records(pd: &kafka_protocol::messages::fetch_response::PartitionData) -> Vec<Record> {
    let mut buf = pd.records.clone().unwrap_or_default();
    if buf.is_empty() {
        return Vec::new();
    }
    RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}

fn value(r: &Record) -> String {
    String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap()
}

/// A fetch from offset 0: (values seen, last stable offset, aborted (producer, first offset)).
pub(super) fn fetch(
    b: &Broker,
    topic: &str,
    read_committed: bool,
) -> (Vec<String>, i64, Vec<(i64, i64)>) {
    let pd = fetch_partition(b, topic, read_committed);
    let values = records(&pd)
        .iter()
        .filter(|r| !r.control)
        .map(value)
        .collect();
    let aborted = pd
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    (values, pd.last_stable_offset, aborted)
}

/// What a read_committed consumer delivers: records of aborted transactions skipped.
fn committed_view(b: &Broker, topic: &str) -> Vec<String> {
    let pd = fetch_partition(b, topic, true);
    let aborted: Vec<(i64, i64)> = pd
        .aborted_transactions
        .iter()
        .flatten()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    let mut skipping = std::collections::HashSet::new();
    let mut values = Vec::new();
    for r in records(&pd) {
        if aborted.contains(&(r.producer_id, r.offset)) {
            skipping.insert(r.producer_id);
        }
        if r.control {
            skipping.remove(&r.producer_id);
            continue;
        }
        if !(r.transactional && skipping.contains(&r.producer_id)) {
            values.push(value(&r));
        }
    }
    values
}

#[test]
fn committed_records_become_visible_only_once_the_marker_is_durable() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (e, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    assert_eq!((e, epoch), (0, 0));
    assert_eq!(add(&mut b, "tx", pid, epoch, "t", 1), 0);
    let (e, base) = produce(
        &mut b,
        "t",
        batch(pid, epoch, 0, &["a", "b"], true),
        Some("tx"),
        2,
    );
    assert_eq!((e, base), (0, 0));
    // A plain record after the open transaction.
    assert_eq!(
        produce(&mut b, "t", batch(-1, -1, -1, &["plain"], false), None, 3).0,
        0
    );
    let (all, lso, _) = fetch(&b, "t", false);
    assert_eq!(all, vec!["a", "b", "plain"]);
    assert_eq!(lso, 0, "the open transaction holds the last stable offset");
    assert!(fetch(&b, "t", true).0.is_empty());
    // ListOffsets read_committed answers the LSO.
    let lo = ListOffsetsRequest::default()
        .with_isolation_level(1)
        .with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let Reply::Now(ResponseKind::ListOffsets(r)) = b.handle(
        &ctx(ApiKey::ListOffsets, 5),
        RequestKind::ListOffsets(lo),
        3,
    ) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].offset, 0);

    // EndTxn is answered once PrepareCommit is durable; the marker is written then, but is
    // not durable yet: still nothing for read_committed.
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let reply = b.handle(&ctx(ApiKey::EndTxn, 3), RequestKind::EndTxn(req), 4);
    let Reply::Durable { .. } = reply else {
        panic!("EndTxn waits for its decision to be durable: {reply:?}")
    };
    let before = b.topics()["t"].partitions[0].log_end_offset();
    sync(&mut b); // the decision is durable: the marker is appended now
    assert_eq!(b.topics()["t"].partitions[0].log_end_offset(), before + 1);
    assert!(fetch(&b, "t", true).0.is_empty(), "marker not yet durable");
    sync(&mut b);
    let (seen, lso, aborted) = fetch(&b, "t", true);
    assert_eq!(seen, vec!["a", "b", "plain"]);
    assert_eq!(lso, 4);
    assert!(aborted.is_empty());
    assert_eq!(
        b.txn.get("tx").unwrap().state,
        sluice_coordinator::TxnState::CompleteCommit
    );
}

#[test]
fn aborted_transactions_are_listed_for_read_committed_fetches() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    add(&mut b, "tx", pid, epoch, "t", 1);
    produce(
        &mut b,
        "t",
        batch(pid, epoch, 0, &["x", "y"], true),
        Some("tx"),
        2,
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, false, 3), 0);
    sync(&mut b);
    add(&mut b, "tx", pid, epoch, "t", 4);
    produce(
        &mut b,
        "t",
        batch(pid, epoch, 2, &["z"], true),
        Some("tx"),
        5,
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 6), 0);
    sync(&mut b);
    let (all, lso, aborted) = fetch(&b, "t", true);
    assert_eq!(all, vec!["x", "y", "z"], "read_committed gets the batches");
    assert_eq!(lso, 5);
    assert_eq!(aborted, vec![(pid, 0)], "and is told which to skip");
    assert_eq!(committed_view(&b, "t"), vec!["z"]);
    // read_uncommitted is told nothing.
    let (_, _, none) = fetch(&b, "t", false);
    assert!(none.is_empty());
    // The aborted index survives a restart (crash: rebuilt from the log).
    drop(b);
    fs.crash();
    let b = open(&fs, 10);
    assert_eq!(committed_view(&b, "t"), vec!["z"]);
}

#[test]
fn produces_outside_the_transaction_and_from_zombies_are_refused() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    create(&mut b, "u");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    add(&mut b, "tx", pid, epoch, "t", 1);
    // Not added: refused, nothing written.
    let (e, _) = produce(
        &mut b,
        "u",
        batch(pid, epoch, 0, &["no"], true),
        Some("tx"),
        2,
    );
    assert_eq!(e, ResponseError::InvalidTxnState.code());
    assert_eq!(b.topics()["u"].partitions[0].log_end_offset(), 0);
    // Transactional records without their transactional id, or under another one: refused.
    let (e, _) = produce(&mut b, "t", batch(pid, epoch, 0, &["no"], true), None, 2);
    assert_eq!(e, ResponseError::InvalidRequest.code());
    let (e, _) = produce(
        &mut b,
        "t",
        batch(pid, epoch, 0, &["no"], true),
        Some("other"),
        2,
    );
    assert_eq!(e, ResponseError::InvalidProducerIdMapping.code());
    // Markers are the coordinator's: a client's control batch is refused.
    let forged = Bytes::from(crate::batch::control_batch(pid, epoch, true, 0, 2));
    let (e, _) = produce(&mut b, "t", forged, Some("tx"), 2);
    assert_eq!(e, ResponseError::InvalidRecord.code());
    assert_eq!(b.topics()["t"].partitions[0].log_end_offset(), 0);
    assert_eq!(
        produce(
            &mut b,
            "t",
            batch(pid, epoch, 0, &["old"], true),
            Some("tx"),
            3
        )
        .0,
        0
    );
    // While its transaction is open here, a plain idempotent batch of the same producer id
    // (a bumped epoch, sequence 0) is refused: it would fence the producer.
    let (e, _) = produce(
        &mut b,
        "t",
        batch(pid, epoch + 1, 0, &["intruder"], false),
        None,
        3,
    );
    assert_eq!(e, ResponseError::InvalidTxnState.code());
    assert_eq!(
        produce(
            &mut b,
            "t",
            batch(pid, epoch, 1, &["still mine"], true),
            Some("tx"),
            3
        )
        .0,
        0
    );
    // A new instance fences the old one: its open transaction is aborted, and the request
    // is answered once the abort is complete.
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s("tx"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let reply = b.handle(
        &ctx(ApiKey::InitProducerId, 4),
        RequestKind::InitProducerId(req),
        4,
    );
    let Reply::Parked { token } = reply else {
        panic!("parked until the abort completes: {reply:?}")
    };
    sync(&mut b); // the abort decision: markers written
    sync(&mut b); // markers durable; the new epoch persisted
    sync(&mut b);
    let answered: Vec<_> = b.take_deferred();
    let d = answered
        .iter()
        .find(|d| d.token == token)
        .expect("answered");
    assert!(b.synced_seq() >= d.seq);
    let ResponseKind::InitProducerId(r) = &d.response else {
        panic!()
    };
    assert_eq!((r.error_code, r.producer_id.0), (0, pid));
    assert_eq!(r.producer_epoch, epoch + 2);
    // The zombie's writes and commit are refused.
    let (e, _) = produce(
        &mut b,
        "t",
        batch(pid, epoch, 2, &["zombie"], true),
        Some("tx"),
        6,
    );
    assert_eq!(e, ResponseError::InvalidProducerEpoch.code());
    assert_eq!(
        end(&mut b, "tx", pid, epoch, true, 6),
        ResponseError::ProducerFenced.code()
    );
    assert!(
        committed_view(&b, "t").is_empty(),
        "the fenced transaction was aborted"
    );
}

#[test]
fn a_crash_between_the_decision_and_its_markers_is_finished_at_restart() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    add(&mut b, "tx", pid, epoch, "t", 1);
    produce(
        &mut b,
        "t",
        batch(pid, epoch, 0, &["a"], true),
        Some("tx"),
        2,
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 3), 0);
    // The commit was acknowledged and its marker appended, but never synced: crash.
    drop(b);
    fs.crash();
    let mut b = open(&fs, 10);
    // The restart found PrepareCommit and wrote the marker again.
    assert_eq!(committed_view(&b, "t"), vec!["a"]);
    sync(&mut b);
    assert_eq!(
        b.txn.get("tx").unwrap().state,
        sluice_coordinator::TxnState::CompleteCommit
    );
    // An open transaction at a crash stays open (its producer may still commit it).
    add(&mut b, "tx", pid, epoch, "t", 11);
    produce(
        &mut b,
        "t",
        batch(pid, epoch, 1, &["b"], true),
        Some("tx"),
        12,
    );
    drop(b);
    fs.crash();
    let mut b = open(&fs, 20);
    assert_eq!(
        fetch(&b, "t", true).1,
        2,
        "LSO rebuilt at the open transaction"
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 21), 0);
    sync(&mut b);
    assert_eq!(committed_view(&b, "t"), vec!["a", "b"]);
}

#[test]
fn a_transaction_past_its_timeout_is_aborted() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 5_000, 0);
    add(&mut b, "tx", pid, epoch, "t", 1_000);
    produce(
        &mut b,
        "t",
        batch(pid, epoch, 0, &["late"], true),
        Some("tx"),
        1_001,
    );
    assert_eq!(b.poll_timeout(0), Some(6_000));
    b.tick(6_000);
    sync(&mut b);
    sync(&mut b);
    let (_, lso, aborted) = fetch(&b, "t", true);
    assert_eq!((lso, aborted), (2, vec![(pid, 0)]));
    assert!(committed_view(&b, "t").is_empty());
    assert_eq!(
        end(&mut b, "tx", pid, epoch, true, 6_001),
        ResponseError::ProducerFenced.code()
    );
}

fn offset_fetch(b: &mut Broker, require_stable: bool) -> (i16, i64) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let reply = b.handle(
        &ctx(ApiKey::OffsetFetch, 7),
        RequestKind::OffsetFetch(req),
        0,
    );
    let ResponseKind::OffsetFetch(r) = answer(b, reply) else {
        panic!()
    };
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

fn txn_commit_offset(b: &mut Broker, pid: i64, epoch: i16, offset: i64, now: i64) -> i16 {
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("g")));
    let reply = b.handle(
        &ctx(ApiKey::AddOffsetsToTxn, 3),
        RequestKind::AddOffsetsToTxn(add),
        now,
    );
    let ResponseKind::AddOffsetsToTxn(r) = answer(b, reply) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let reply = b.handle(
        &ctx(ApiKey::TxnOffsetCommit, 3),
        RequestKind::TxnOffsetCommit(req),
        now,
    );
    let ResponseKind::TxnOffsetCommit(r) = answer(b, reply) else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

#[test]
fn offsets_committed_in_a_transaction_appear_with_its_commit() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    assert_eq!(txn_commit_offset(&mut b, pid, epoch, 42, 1), 0);
    assert_eq!(
        offset_fetch(&mut b, false),
        (0, -1),
        "not visible before the commit"
    );
    // The group's partition holds its cleaner back while the transaction is open.
    let p = b.coordinator.partition_for("g") as usize;
    let log = &b.topics()[super::OFFSETS_TOPIC].partitions[p];
    assert!(log.last_stable_offset() < log.high_watermark());
    assert_eq!(
        offset_fetch(&mut b, true).0,
        ResponseError::UnstableOffsetCommit.code(),
        "require_stable is told to retry"
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 2), 0);
    sync(&mut b);
    assert_eq!(offset_fetch(&mut b, true), (0, 42));
    sync(&mut b);
    let log = &b.topics()[super::OFFSETS_TOPIC].partitions[p];
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    // An aborted one leaves the committed offset alone.
    assert_eq!(txn_commit_offset(&mut b, pid, epoch, 50, 3), 0);
    assert_eq!(end(&mut b, "tx", pid, epoch, false, 4), 0);
    sync(&mut b);
    assert_eq!(offset_fetch(&mut b, true), (0, 42));
    // Replayed the same way after a crash.
    drop(b);
    fs.crash();
    let mut b = open(&fs, 10);
    assert_eq!(offset_fetch(&mut b, true), (0, 42));
    // A fenced producer's offsets are refused.
    let (e, _, _) = init(&mut b, "tx", 60_000, 11);
    assert_eq!(e, 0);
    assert_eq!(
        txn_commit_offset_raw(&mut b, pid, epoch),
        ResponseError::InvalidProducerEpoch.code()
    );
}

fn txn_commit_offset_raw(b: &mut Broker, pid: i64, epoch: i16) -> i16 {
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(7)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let reply = b.handle(
        &ctx(ApiKey::TxnOffsetCommit, 3),
        RequestKind::TxnOffsetCommit(req),
        12,
    );
    let ResponseKind::TxnOffsetCommit(r) = answer(b, reply) else {
        panic!()
    };
    r.topics[0].partitions[0].error_code
}

/// A compacted topic `c` whose key K holds a committed value, then an aborted one (of
/// transactional id "tx": its producer id and epoch are returned), then 20 fillers that roll
/// segments (so those are closed and cleanable).
fn compacted_with_an_aborted_value(fs: &MemStorage) -> (Broker, i64, i16) {
    let mut b = open(fs, 0);
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("c")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("cleanup.policy"))
                    .with_value(Some(s("compact"))),
                kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                    .with_name(s("internal.segment.bytes"))
                    .with_value(Some(s("300"))),
            ]),
    ]);
    b.handle(
        &ctx(ApiKey::CreateTopics, 5),
        RequestKind::CreateTopics(req),
        0,
    );
    sync(&mut b);
    assert_eq!(
        produce(
            &mut b,
            "c",
            keyed_batch(-1, -1, -1, &[("K", "committed")], false),
            None,
            1
        )
        .0,
        0
    );
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 2);
    add(&mut b, "tx", pid, epoch, "c", 3);
    produce(
        &mut b,
        "c",
        keyed_batch(pid, epoch, 0, &[("K", "aborted")], true),
        Some("tx"),
        4,
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, false, 5), 0);
    sync(&mut b);
    // Later records roll segments, so the ones above are closed and cleanable.
    for i in 0..20 {
        let v = format!("filler-{i}");
        produce(
            &mut b,
            "c",
            keyed_batch(-1, -1, -1, &[(&v, &v)], false),
            None,
            6,
        );
    }
    (b, pid, epoch)
}

#[test]
fn the_cleaner_drops_aborted_records_and_never_lets_them_shadow_committed_ones() {
    let fs = MemStorage::new();
    let (mut b, _, _) = compacted_with_an_aborted_value(&fs);
    assert!(b.topics()["c"].partitions[0].segment_count() > 3);
    assert_eq!(committed_view(&b, "c")[0], "committed");
    let cleaned = b.clean_now(10_000);
    assert!(!cleaned.is_empty(), "the partition was cleaned");
    let (all, _, _) = fetch(&b, "c", false);
    assert!(
        !all.contains(&"aborted".to_string()),
        "aborted records removed: {all:?}"
    );
    assert_eq!(
        committed_view(&b, "c").first().map(String::as_str),
        Some("committed"),
        "the committed record of K survives the clean"
    );
}

#[test]
fn markers_of_transactions_cleaned_away_go_after_delete_retention_and_the_index_forgets_them() {
    const DAY_MS: i64 = 86_400_000; // delete.retention.ms's default
    let fs = MemStorage::new();
    let (mut b, pid, epoch) = compacted_with_an_aborted_value(&fs);
    assert!(!b.clean_now(10_000).is_empty());
    let markers = |b: &Broker| {
        let mut n = 0;
        b.topics()["c"].partitions[0]
            .for_each_batch_header(0, |h| n += usize::from(h.is_control()))
            .unwrap();
        n
    };
    // The aborted record is gone, its marker and index entry stay for delete.retention.ms.
    assert_eq!(markers(&b), 1);
    assert_eq!(fetch(&b, "c", true).2.len(), 1);
    // The producer commits another transaction (so the abort marker is no longer its last
    // batch, which stays with the epoch it carries).
    add(&mut b, "tx", pid, epoch, "c", 20_000);
    let next = keyed_batch(pid, epoch, 1, &[("K2", "next")], true);
    assert_eq!(produce(&mut b, "c", next, Some("tx"), 20_000).0, 0);
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 20_000), 0);
    sync(&mut b);
    // The aborted transaction's entry goes to an index file, which the clean must rewrite.
    b.aborted_spill = 1;
    b.apply_retention(20_000);
    let filed = |fs: &MemStorage| {
        fs.list_dir("logs/c-0")
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".txnindex"))
            .count()
    };
    assert_eq!(filed(&fs), 1);
    assert_eq!(fetch(&b, "c", true).2.len(), 1);
    // A day later (and more records to make the log dirty), the next clean removes the abort
    // marker and the index forgets that transaction; the commit marker stays with its record.
    for i in 0..60 {
        let v = format!("later-{i}");
        produce(
            &mut b,
            "c",
            keyed_batch(-1, -1, -1, &[(&v, &v)], false),
            None,
            DAY_MS + 20_000,
        );
    }
    let stats = b.clean_now(DAY_MS + 20_000);
    assert_eq!(stats.iter().map(|s| s.markers_removed).sum::<u64>(), 1);
    assert_eq!(markers(&b), 1);
    let (_, lso, aborted) = fetch(&b, "c", true);
    assert!(aborted.is_empty(), "{aborted:?}");
    assert_eq!(committed_view(&b, "c")[0], "committed");
    // A restart rebuilds no open transaction from what is left: the LSO is the log end.
    let end = b.topics()["c"].partitions[0].log_end_offset();
    assert_eq!(lso, end);
    drop(b);
    assert_eq!(filed(&fs), 0, "the emptied index file is gone");
    let b = open(&fs, DAY_MS + 30_000);
    assert_eq!(fetch(&b, "c", true).1, end);
    assert!(fetch(&b, "c", true).2.is_empty());
}

#[test]
fn an_operator_aborts_a_hanging_transaction_with_write_txn_markers() {
    use kafka_protocol::messages::WriteTxnMarkersRequest;
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "h");
    let (_, pid, epoch) = init(&mut b, "stuck", 60_000, 1);
    add(&mut b, "stuck", pid, epoch, "h", 2);
    assert_eq!(
        produce(
            &mut b,
            "h",
            batch(pid, epoch, 0, &["open"], true),
            Some("stuck"),
            3
        )
        .0,
        0
    );
    // The transaction holds the LSO back.
    assert_eq!(fetch(&b, "h", true).1, 0);
    let marker = |commit: bool, epoch: i16| {
        RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_transaction_result(commit)
                .with_topics(vec![
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(s("h")))
                        .with_partition_indexes(vec![0]),
                ]),
        ]))
    };
    let code = |b: &mut Broker, req| {
        let reply = b.handle(&ctx(ApiKey::WriteTxnMarkers, 1), req, 4);
        let ResponseKind::WriteTxnMarkers(r) = answer(b, reply) else {
            panic!()
        };
        r.markers[0].topics[0].partitions[0].error_code
    };
    // A client may not commit for the coordinator, nor abort below the producer's epoch.
    assert_eq!(
        code(&mut b, marker(true, epoch)),
        ResponseError::ClusterAuthorizationFailed.code()
    );
    if epoch > 0 {
        assert_eq!(
            code(&mut b, marker(false, epoch - 1)),
            ResponseError::InvalidProducerEpoch.code()
        );
    }
    // `kafka-transactions.sh abort`: the records are aborted and the LSO moves past them.
    assert_eq!(code(&mut b, marker(false, epoch)), 0);
    let (_, lso, aborted) = fetch(&b, "h", true);
    assert_eq!((lso, aborted), (2, vec![(pid, 0)]));
    assert!(committed_view(&b, "h").is_empty());
}

/// What a client may not do to `__transaction_state` (partition `p`): create it, delete it,
/// grow it (ids would move to other partitions), let retention delete it, delete its records.
/// Each request with the error it gets.
pub(super) fn refused_on_the_transaction_state(p: i32) -> Vec<(ApiKey, i16, RequestKind, i16)> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{
        CreatePartitionsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    };
    let name = || TopicName(s(sluice_coordinator::TRANSACTION_STATE_TOPIC));
    let invalid = ResponseError::InvalidTopicException.code();
    vec![
        (
            ApiKey::CreateTopics,
            5,
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                    .with_name(name())
                    .with_num_partitions(1)
                    .with_replication_factor(-1),
            ])),
            ResponseError::InvalidRequest.code(),
        ),
        (
            ApiKey::DeleteTopics,
            6,
            RequestKind::DeleteTopics(
                DeleteTopicsRequest::default()
                    .with_topics(vec![DeleteTopicState::default().with_name(Some(name()))]),
            ),
            invalid,
        ),
        (
            ApiKey::CreatePartitions,
            3,
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                CreatePartitionsTopic::default().with_name(name()).with_count(60),
            ])),
            ResponseError::InvalidRequest.code(),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            1,
            RequestKind::IncrementalAlterConfigs(
                kafka_protocol::messages::IncrementalAlterConfigsRequest::default().with_resources(
                    vec![
                        kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(s(sluice_coordinator::TRANSACTION_STATE_TOPIC))
                            .with_configs(vec![
                                kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig::default()
                                    .with_name(s("cleanup.policy"))
                                    .with_config_operation(0)
                                    .with_value(Some(s("compact,delete"))),
                            ]),
                    ],
                ),
            ),
            ResponseError::InvalidConfig.code(),
        ),
        (
            ApiKey::DeleteRecords,
            2,
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                DeleteRecordsTopic::default().with_name(name()).with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(p)
                        .with_offset(-1),
                ]),
            ])),
            invalid,
        ),
    ]
}

/// The error of the one topic (or partition) a response of [`refused_on_the_transaction_state`]
/// is about.
pub(super) fn only_error(r: &ResponseKind) -> i16 {
    match r {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        ResponseKind::DeleteTopics(r) => r.responses[0].error_code,
        ResponseKind::CreatePartitions(r) => r.results[0].error_code,
        ResponseKind::DeleteRecords(r) => r.topics[0].partitions[0].error_code,
        ResponseKind::IncrementalAlterConfigs(r) => r.responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn clients_may_not_write_the_transaction_state_topic() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 1_000);
    // Not even before it exists (with a partition count of the client's choosing).
    let (key, version, req, want) = refused_on_the_transaction_state(0).remove(0);
    let reply = b.handle(&ctx(key, version), req, 1_000);
    assert_eq!(only_error(&answer(&mut b, reply)), want);
    // Nor by naming it in Metadata with auto-creation on (as `kafka-topics --describe` may).
    let named = kafka_protocol::messages::MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
                Some(TopicName(s(sluice_coordinator::TRANSACTION_STATE_TOPIC))),
            ),
        ]))
        .with_allow_auto_topic_creation(true);
    let reply = b.handle(
        &ctx(ApiKey::Metadata, 12),
        RequestKind::Metadata(named),
        1_000,
    );
    let ResponseKind::Metadata(r) = answer(&mut b, reply) else {
        panic!()
    };
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    // The first transactional producer creates __transaction_state.
    let (code, _, _) = init(&mut b, "t1", 60_000, 1_000);
    assert_eq!(code, 0);
    let (code, _) = produce(
        &mut b,
        sluice_coordinator::TRANSACTION_STATE_TOPIC,
        batch(-1, -1, -1, &["forged state"], false),
        None,
        1_000,
    );
    assert_eq!(code, ResponseError::InvalidTopicException.code());
    for (key, version, req, want) in refused_on_the_transaction_state(0) {
        let reply = b.handle(&ctx(key, version), req, 1_000);
        assert_eq!(only_error(&answer(&mut b, reply)), want, "{key:?}");
    }
    // Metadata calls it internal, as Kafka does.
    let md = kafka_protocol::messages::MetadataRequest::default().with_topics(None);
    let reply = b.handle(&ctx(ApiKey::Metadata, 12), RequestKind::Metadata(md), 1_000);
    let ResponseKind::Metadata(r) = answer(&mut b, reply) else {
        panic!()
    };
    let t = r
        .topics
        .iter()
        .find(|t| {
            t.name.as_ref().map(|n| n.0.as_str())
                == Some(sluice_coordinator::TRANSACTION_STATE_TOPIC)
        })
        .expect("listed");
    assert!(t.is_internal);
    assert_eq!(t.partitions.len(), 50, "at the coordinator's size");
    // The coordinator still works.
    assert_eq!(init(&mut b, "t1", 60_000, 2_000).0, 0);
}

#[test]
fn a_txn_offset_commit_of_unknown_partitions_is_refused_for_those_only() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    assert_eq!(txn_commit_offset(&mut b, pid, epoch, 42, 1), 0);
    let part = |p: i32, offset: i64| {
        TxnOffsetCommitRequestPartition::default()
            .with_partition_index(p)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(-1)
    };
    let topic = |name: &str, parts| {
        TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(name)))
            .with_partitions(parts)
    };
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![
            topic("t", vec![part(0, 43), part(7, 1)]),
            topic("nope", vec![part(0, 1)]),
            topic(super::OFFSETS_TOPIC, vec![part(0, 1)]),
        ]);
    let reply = b.handle(
        &ctx(ApiKey::TxnOffsetCommit, 3),
        RequestKind::TxnOffsetCommit(req),
        2,
    );
    let ResponseKind::TxnOffsetCommit(r) = answer(&mut b, reply) else {
        panic!()
    };
    let mut codes: Vec<(String, i32, i16)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    codes.sort();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        codes,
        vec![
            (super::OFFSETS_TOPIC.to_string(), 0, unknown),
            ("nope".to_string(), 0, unknown),
            ("t".to_string(), 0, 0),
            ("t".to_string(), 7, unknown),
        ]
    );
    assert_eq!(end(&mut b, "tx", pid, epoch, true, 3), 0);
    sync(&mut b);
    assert_eq!(offset_fetch(&mut b, true), (0, 43));
}

/// Aborts `n` transactions of one record each in `t`, then commits one of `committed`.
fn aborts_then_commit(
    b: &mut Broker,
    pid: i64,
    epoch: i16,
    seq: &mut i32,
    n: usize,
    committed: &str,
    now: i64,
) {
    for i in 0..n {
        assert_eq!(add(b, "tx", pid, epoch, "t", now), 0);
        let v = format!("aborted-{seq}-{i}");
        assert_eq!(
            produce(
                b,
                "t",
                batch(pid, epoch, *seq, &[&v], true),
                Some("tx"),
                now
            )
            .0,
            0
        );
        *seq += 1;
        assert_eq!(end(b, "tx", pid, epoch, false, now), 0);
        sync(b);
    }
    assert_eq!(add(b, "tx", pid, epoch, "t", now), 0);
    assert_eq!(
        produce(
            b,
            "t",
            batch(pid, epoch, *seq, &[committed], true),
            Some("tx"),
            now
        )
        .0,
        0
    );
    *seq += 1;
    assert_eq!(end(b, "tx", pid, epoch, true, now), 0);
    sync(b);
}

fn index_files(fs: &MemStorage) -> Vec<String> {
    fs.list_dir("logs/t-0")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".txnindex"))
        .collect()
}

#[test]
fn the_aborted_index_moves_to_files_and_survives_restarts_and_crashes() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 0);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    let mut seq = 0;
    aborts_then_commit(&mut b, pid, epoch, &mut seq, 5, "c1", 1);
    let five = fetch(&b, "t", true).2;
    assert_eq!(five.len(), 5, "{five:?}");

    // A snapshot that still holds all five (as a crash would find it if the next one were
    // never written), then the table's entries go to a file and the snapshot follows.
    b.aborted_spill = usize::MAX;
    b.apply_retention(2);
    let before_spill = fs.raw("logs/t-0/producer.snapshot").unwrap();
    b.aborted_spill = 2;
    b.apply_retention(3);
    assert_eq!(index_files(&fs).len(), 1);
    assert_eq!(b.producers[&("t".to_string(), 0)].aborted_len(), 0);
    assert_eq!(
        fetch(&b, "t", true).2,
        five,
        "read_committed learns them from the file"
    );
    assert_eq!(committed_view(&b, "t"), vec!["c1"]);
    // A fetch from the middle is told only what concerns it.
    let from = five[3].1;
    let tail = b.aborted_between("t", 0, from, i64::MAX).unwrap();
    assert_eq!(tail.len(), 2, "{tail:?}");

    // More aborts after the file: the fetch joins both, once each.
    aborts_then_commit(&mut b, pid, epoch, &mut seq, 1, "c2", 4);
    let six = fetch(&b, "t", true).2;
    assert_eq!(six.len(), 6, "{six:?}");
    assert_eq!(&six[..5], &five[..]);
    assert_eq!(committed_view(&b, "t"), vec!["c1", "c2"]);

    // A clean restart, then a crash that kept the file but lost the snapshot written after
    // it: the entries are neither lost nor reported twice.
    b.close();
    let b = open(&fs, 5);
    assert_eq!(fetch(&b, "t", true).2, six);
    drop(b);
    fs.set_raw("logs/t-0/producer.snapshot", before_spill);
    fs.crash();
    let b = open(&fs, 6);
    assert_eq!(fetch(&b, "t", true).2, six);
    assert_eq!(committed_view(&b, "t"), vec!["c1", "c2"]);

    // A damaged file: the start rebuilds the index from the whole log instead.
    drop(b);
    let file = format!("logs/t-0/{}", index_files(&fs)[0]);
    let mut raw = fs.raw(&file).unwrap();
    raw[8] ^= 0xff;
    fs.set_raw(&file, raw);
    let mut b = open(&fs, 7);
    assert!(
        index_files(&fs).is_empty(),
        "a rebuild starts the files afresh"
    );
    assert_eq!(fetch(&b, "t", true).2, six);
    assert_eq!(committed_view(&b, "t"), vec!["c1", "c2"]);
    b.aborted_spill = 2;
    b.apply_retention(8);
    assert_eq!(index_files(&fs).len(), 1);
    assert_eq!(fetch(&b, "t", true).2, six);

    // Records deleted past every marker: retention deletes the file too.
    let end = b.partition("t", 0).unwrap().log_end_offset();
    b.partition_mut("t", 0)
        .unwrap()
        .delete_records_before(end)
        .unwrap();
    b.apply_retention(9);
    assert!(index_files(&fs).is_empty());
    assert!(b.aborted_between("t", 0, 0, i64::MAX).unwrap().is_empty());
}

#[test]
fn without_fsync_before_ack_only_synced_markers_are_filed() {
    let fs = MemStorage::new();
    let config = BrokerConfig {
        offsets_partitions: 2,
        sync_writes: false,
        ..BrokerConfig::default()
    };
    let mut b = Broker::open(
        Arc::new(fs.clone()) as Arc<dyn Storage>,
        config.clone(),
        9,
        0,
    )
    .unwrap();
    sync(&mut b);
    create(&mut b, "t");
    let (_, pid, epoch) = init(&mut b, "tx", 60_000, 0);
    // Three aborts; the periodic flush syncs the first two.
    for i in 0..3 {
        if i == 2 {
            sync(&mut b);
        }
        assert_eq!(add(&mut b, "tx", pid, epoch, "t", 1), 0);
        let v = format!("a{i}");
        produce(
            &mut b,
            "t",
            batch(pid, epoch, i, &[&v], true),
            Some("tx"),
            1,
        );
        assert_eq!(end(&mut b, "tx", pid, epoch, false, 1), 0);
    }
    let log = b.partition("t", 0).unwrap();
    assert_eq!(
        log.high_watermark(),
        log.log_end_offset(),
        "acknowledged without fsync"
    );
    assert!(log.synced_end() < log.log_end_offset());
    b.aborted_spill = 2;
    b.apply_retention(2);
    assert_eq!(index_files(&fs).len(), 1);
    assert_eq!(
        b.producers[&("t".to_string(), 0)].aborted_len(),
        1,
        "the unsynced marker stays in memory"
    );
    assert_eq!(fetch(&b, "t", true).2.len(), 3);
    // A crash loses the unsynced tail; the file describes only what is left.
    drop(b);
    fs.crash();
    let b = Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 9, 3).unwrap();
    let end = b.partition("t", 0).unwrap().log_end_offset();
    let aborted = b.aborted_between("t", 0, 0, i64::MAX).unwrap();
    assert!(
        aborted.iter().all(|a| a.last_offset < end),
        "{aborted:?} end {end}"
    );
    assert_eq!(aborted.len(), 2, "the two synced aborts are still known");
}
