//! Topic configs through [`Broker::handle`] on a standalone broker: CreateTopics with Kafka's
//! configs, DescribeConfigs with synonyms and documentation, Alter / IncrementalAlterConfigs,
//! what the honoured configs do to produces, manual replica assignments, and the
//! flush.messages / flush.ms syncs without fsync-before-ack.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_request::{
    AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, ProduceRequest, ProduceResponse, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::group_tests::{ctx, s};
use super::{Broker, BrokerConfig, Reply};
use crate::storage::{MemStorage, Storage};

fn open_with(config: BrokerConfig) -> Broker {
    Broker::open(
        Arc::new(MemStorage::new()) as Arc<dyn Storage>,
        BrokerConfig {
            offsets_partitions: 1,
            ..config
        },
        1,
        0,
    )
    .unwrap()
}

fn open() -> Broker {
    open_with(BrokerConfig::default())
}

fn now(b: &mut Broker, api: ApiKey, version: i16, req: RequestKind, now_ms: i64) -> ResponseKind {
    match b.handle(&ctx(api, version), req, now_ms) {
        Reply::Now(r) => r,
        Reply::AfterSync { response, .. } => ResponseKind::Produce(response),
        other => panic!("{other:?}"),
    }
}

fn create(b: &mut Broker, topic: CreatableTopic) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default().with_topics(vec![topic]);
    match now(
        b,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(req),
        0,
    ) {
        ResponseKind::CreateTopics(r) => r,
        other => panic!("{other:?}"),
    }
}

fn topic(name: &str, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        )
}

fn describe(b: &mut Broker, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResponse {
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_include_documentation(true)
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(name))
                .with_configuration_keys(keys.map(|k| k.iter().map(|x| s(x)).collect())),
        ]);
    match now(
        b,
        ApiKey::DescribeConfigs,
        4,
        RequestKind::DescribeConfigs(req),
        0,
    ) {
        ResponseKind::DescribeConfigs(r) => r,
        other => panic!("{other:?}"),
    }
}

/// name -> (value, source)
fn values(r: &DescribeConfigsResponse) -> BTreeMap<String, (String, i8)> {
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (c.value.as_ref().unwrap().to_string(), c.config_source),
            )
        })
        .collect()
}

/// IncrementalAlterConfigs of one topic: (error code, message).
fn alter(b: &mut Broker, name: &str, ops: &[(&str, i8, Option<&str>)]) -> (i16, String) {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(name))
            .with_configs(
                ops.iter()
                    .map(|(k, op, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(*op)
                            .with_value(v.map(s))
                    })
                    .collect(),
            ),
    ]);
    match now(
        b,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(req),
        0,
    ) {
        ResponseKind::IncrementalAlterConfigs(r) => (
            r.responses[0].error_code,
            r.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        other => panic!("{other:?}"),
    }
}

fn batch(ts: &[i64], c: Compression) -> Bytes {
    let records: Vec<Record> = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant: one batch.
            sequence: i as i32 - 1,
            timestamp: t,
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
            compression: c,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce(b: &mut Broker, name: &str, records: Bytes, now_ms: i64) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(name)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    match now(b, ApiKey::Produce, 9, RequestKind::Produce(req), now_ms) {
        ResponseKind::Produce(r) => r,
        other => panic!("{other:?}"),
    }
}

/// The 15 configs the integration test creates a topic with, as a client would send them.
pub(super) const MANY: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "lz4"),
    ("delete.retention.ms", "900"),
    ("file.delete.delay.ms", "30000"),
    ("flush.messages", "1000"),
    ("flush.ms", "5000"),
    ("index.interval.bytes", "8192"),
    ("max.message.bytes", "2000000"),
    ("message.timestamp.type", "LogAppendTime"),
    ("min.insync.replicas", "1"),
    ("preallocate", "TRUE"),
    ("retention.bytes", "104857600"),
    ("retention.ms", " 86400000 "),
    ("segment.bytes", "1048576"),
    ("unclean.leader.election.enable", "false"),
];

#[test]
fn create_with_kafka_configs_then_describe_with_sources_synonyms_and_docs() {
    let mut b = open();
    let r = create(&mut b, topic("t", MANY));
    let t = &r.topics[0];
    assert_eq!(t.error_code, 0, "{:?}", t.error_message);
    let returned = t.configs.as_ref().expect("v5+ returns the configs");
    assert_eq!(returned.len(), 33);
    let ret = |n: &str| returned.iter().find(|c| c.name.as_str() == n).unwrap();
    assert_eq!(ret("preallocate").value.as_deref(), Some("true"));
    assert_eq!(ret("preallocate").config_source, 1);
    assert_eq!(ret("segment.ms").config_source, 5);
    // Stored normalised, and the log uses them.
    assert_eq!(b.topics()["t"].configs["retention.ms"], "86400000");
    let log = &b.topics()["t"].partitions[0];
    assert_eq!(log.config().compression, Some(crate::log::Compression::Lz4));
    assert!(log.config().log_append_time);
    assert_eq!(log.config().segment_bytes, 1_048_576);

    let d = describe(&mut b, "t", None);
    let v = values(&d);
    assert_eq!(v.len(), 33);
    assert_eq!(v["compression.type"], ("lz4".into(), 1));
    assert_eq!(v["retention.ms"], ("86400000".into(), 1));
    assert_eq!(v["segment.ms"], ("604800000".into(), 5));
    assert_eq!(v["message.timestamp.after.max.ms"], ("3600000".into(), 5));
    assert_eq!(v["leader.replication.throttled.replicas"], ("".into(), 5));
    let c = |n: &str| {
        d.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == n)
            .unwrap()
    };
    let syn = |n: &str| -> Vec<(String, String, i8)> {
        c(n).synonyms
            .iter()
            .map(|x| {
                (
                    x.name.to_string(),
                    x.value.as_ref().unwrap().to_string(),
                    x.source,
                )
            })
            .collect()
    };
    assert_eq!(
        syn("retention.ms"),
        vec![
            ("retention.ms".into(), "86400000".into(), 1),
            ("log.retention.hours".into(), "168".into(), 5)
        ]
    );
    assert_eq!(
        syn("segment.bytes")[1],
        ("log.segment.bytes".into(), "1073741824".into(), 5)
    );
    assert_eq!(
        syn("compression.type")[1],
        ("compression.type".into(), "producer".into(), 5)
    );
    assert_eq!(
        syn("max.message.bytes")[1],
        ("message.max.bytes".into(), "1048588".into(), 5)
    );
    assert_eq!(
        syn("segment.ms"),
        vec![("log.roll.hours".into(), "168".into(), 5)]
    );
    // --durability fsync (the default) syncs every write: Kafka's log.flush.interval.messages=1.
    assert_eq!(
        syn("flush.messages"),
        vec![
            ("flush.messages".into(), "1000".into(), 1),
            ("log.flush.interval.messages".into(), "1".into(), 4),
            (
                "log.flush.interval.messages".into(),
                i64::MAX.to_string(),
                5
            ),
        ]
    );
    assert_eq!(c("min.cleanable.dirty.ratio").config_type, 6);
    assert_eq!(c("cleanup.policy").config_type, 7);
    assert_eq!(c("preallocate").config_type, 1);
    assert!(!c("retention.ms").read_only && !c("retention.ms").is_sensitive);
    assert!(
        c("compression.type")
            .documentation
            .as_ref()
            .unwrap()
            .contains("recompress")
    );
    // Only the keys asked for.
    let d = describe(&mut b, "t", Some(&["flush.ms", "no.such.key"]));
    assert_eq!(values(&d).keys().collect::<Vec<_>>(), vec!["flush.ms"]);
}

#[test]
fn refused_configs_get_invalid_config_with_kafkas_messages() {
    let mut b = open();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("retention.ms", "1"), ("dummy.doesntexist", "x")],
            "Unknown topic config name: dummy.doesntexist",
        ),
        (
            &[("segment.bytes", "1000")],
            "Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576",
        ),
        (
            &[("compression.type", "brotli")],
            "Invalid value brotli for configuration compression.type: String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
        ),
        (
            &[("cleanup.policy", "")],
            "Invalid value  for configuration cleanup.policy: Sluice needs at least one cleanup.policy: delete, compact or both",
        ),
    ];
    for (configs, message) in cases {
        let r = create(&mut b, topic("bad", configs));
        assert_eq!(r.topics[0].error_code, ResponseError::InvalidConfig.code());
        assert_eq!(r.topics[0].error_message.as_deref(), Some(*message));
    }
    let mut null = topic("bad", &[]);
    null.configs.push(
        CreatableTopicConfig::default()
            .with_name(s("retention.ms"))
            .with_value(None),
    );
    let r = create(&mut b, null);
    assert_eq!(
        r.topics[0].error_message.as_deref(),
        Some("Null value not supported for topic configs: retention.ms")
    );
    assert!(!b.topics().contains_key("bad"));
}

#[test]
fn incremental_alter_sets_deletes_appends_and_subtracts_like_kafka() {
    let mut b = open();
    create(&mut b, topic("t", &[("retention.ms", "1000")]));
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    assert_eq!(
        alter(
            &mut b,
            "t",
            &[
                ("compression.type", SET, Some("zstd")),
                ("flush.ms", SET, Some("1000")),
                ("retention.ms", DELETE, None),
                ("cleanup.policy", APPEND, Some("delete")),
                ("leader.replication.throttled.replicas", APPEND, Some("0:1")),
                (
                    "leader.replication.throttled.replicas",
                    APPEND,
                    Some("1:1,0:1")
                ),
            ],
        ),
        (0, String::new())
    );
    let v = values(&describe(&mut b, "t", None));
    assert_eq!(v["compression.type"], ("zstd".into(), 1));
    assert_eq!(v["flush.ms"], ("1000".into(), 1));
    assert_eq!(v["retention.ms"], ("604800000".into(), 5));
    assert_eq!(v["cleanup.policy"], ("delete".into(), 1));
    assert_eq!(v["leader.replication.throttled.replicas"].0, "0:1,1:1");
    assert_eq!(
        b.topics()["t"].partitions[0].config().compression,
        Some(crate::log::Compression::Zstd)
    );
    alter(
        &mut b,
        "t",
        &[(
            "leader.replication.throttled.replicas",
            SUBTRACT,
            Some("0:1"),
        )],
    );
    assert_eq!(
        values(&describe(&mut b, "t", None))["leader.replication.throttled.replicas"].0,
        "1:1"
    );
    let refused = |b: &mut Broker, ops: &[(&str, i8, Option<&str>)], msg: &str| {
        let (code, m) = alter(b, "t", ops);
        assert_eq!(code, ResponseError::InvalidConfig.code(), "{m}");
        assert!(m.contains(msg), "{m}");
    };
    refused(
        &mut b,
        &[("cleanup.policy", SUBTRACT, Some("delete"))],
        "at least one cleanup.policy",
    );
    refused(
        &mut b,
        &[("retention.ms", SUBTRACT, Some("1"))],
        "Can't SUBTRACT to key retention.ms because its type is not LIST.",
    );
    refused(
        &mut b,
        &[("retention.ms", SET, None)],
        "Null value not supported for topic configs: retention.ms",
    );
    refused(
        &mut b,
        &[("no.such", SET, Some("1"))],
        "Unknown topic config name: no.such",
    );
    refused(
        &mut b,
        &[
            ("min.compaction.lag.ms", SET, Some("10")),
            ("max.compaction.lag.ms", SET, Some("5")),
        ],
        "conflict topic config setting",
    );
    refused(
        &mut b,
        &[("remote.storage.enable", SET, Some("true"))],
        "Tiered Storage functionality is disabled",
    );
    // Nothing of a refused request was applied.
    assert_eq!(
        values(&describe(&mut b, "t", None))["compression.type"].0,
        "zstd"
    );
    // DELETE of an unknown key is a no-op, as in Kafka.
    assert_eq!(alter(&mut b, "t", &[("no.such", DELETE, None)]).0, 0);

    // AlterConfigs replaces every override.
    let legacy = |configs: Vec<LegacyConfig>| {
        RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            LegacyResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(configs),
        ]))
    };
    let ResponseKind::AlterConfigs(r) = now(
        &mut b,
        ApiKey::AlterConfigs,
        2,
        legacy(vec![
            LegacyConfig::default()
                .with_name(s("segment.ms"))
                .with_value(Some(s("60000"))),
        ]),
        0,
    ) else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(
        b.topics()["t"].configs,
        BTreeMap::from([("segment.ms".to_string(), "60000".to_string())])
    );
    let ResponseKind::AlterConfigs(r) = now(
        &mut b,
        ApiKey::AlterConfigs,
        2,
        legacy(vec![LegacyConfig::default().with_name(s("segment.ms"))]),
        0,
    ) else {
        panic!()
    };
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
}

#[test]
fn log_append_time_and_timestamp_bounds_show_in_produce_responses() {
    let mut b = open();
    create(
        &mut b,
        topic("lat", &[("message.timestamp.type", "LogAppendTime")]),
    );
    let r = produce(
        &mut b,
        "lat",
        batch(&[1, 2], Compression::Gzip),
        1_700_000_000_000,
    );
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.log_append_time_ms, 1_700_000_000_000);

    create(
        &mut b,
        topic("bounded", &[("message.timestamp.before.max.ms", "1000")]),
    );
    let now_ms = 1_700_000_000_000;
    let ok = produce(
        &mut b,
        "bounded",
        batch(&[now_ms - 1000, now_ms], Compression::None),
        now_ms,
    );
    let p = &ok.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.log_append_time_ms), (0, -1));
    for (ts, c) in [
        (now_ms - 1001, Compression::None),
        (now_ms - 5000, Compression::Snappy),
        (now_ms + 3_600_001, Compression::None),
    ] {
        let r = produce(&mut b, "bounded", batch(&[now_ms, ts], c), now_ms);
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ResponseError::InvalidTimestamp.code(), "{ts}");
        assert!(
            p.error_message.as_ref().unwrap().contains(&format!(
                "Timestamp {ts} of message with offset 1 is out of range"
            )),
            "{:?}",
            p.error_message
        );
    }
    assert_eq!(b.topics()["bounded"].partitions[0].log_end_offset(), 2);
}

#[test]
fn manual_replica_assignments_on_a_single_broker() {
    let mut b = open();
    let assigned = |name: &str, replicas: &[&[i32]]| {
        CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                replicas
                    .iter()
                    .enumerate()
                    .map(|(p, r)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(p as i32)
                            .with_broker_ids(r.iter().map(|&x| BrokerId(x)).collect())
                    })
                    .collect(),
            )
    };
    let r = create(&mut b, assigned("a", &[&[1], &[1]]));
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].num_partitions, 2);
    assert_eq!(b.topics()["a"].partitions.len(), 2);
    let r = create(&mut b, assigned("b", &[&[1], &[2]]));
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidReplicaAssignment.code()
    );
    assert_eq!(
        r.topics[0].error_message.as_deref(),
        Some(
            "The manual partition assignment includes broker 2, but no such broker is registered."
        )
    );
    let r = create(&mut b, assigned("b", &[&[1, 1]]));
    assert!(
        r.topics[0]
            .error_message
            .as_ref()
            .unwrap()
            .contains("more than once")
    );
    let r = create(&mut b, assigned("b", &[&[1]]).with_num_partitions(1));
    assert_eq!(r.topics[0].error_code, ResponseError::InvalidRequest.code());

    let grow = |b: &mut Broker, count: i32, replicas: &[&[i32]]| {
        let req = CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(s("a")))
                .with_count(count)
                .with_assignments(Some(
                    replicas
                        .iter()
                        .map(|r| {
                            CreatePartitionsAssignment::default()
                                .with_broker_ids(r.iter().map(|&x| BrokerId(x)).collect())
                        })
                        .collect(),
                )),
        ]);
        match now(
            b,
            ApiKey::CreatePartitions,
            3,
            RequestKind::CreatePartitions(req),
            0,
        ) {
            ResponseKind::CreatePartitions(r) => (
                r.results[0].error_code,
                r.results[0]
                    .error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ),
            other => panic!("{other:?}"),
        }
    };
    let (code, m) = grow(&mut b, 3, &[&[3]]);
    assert_eq!(code, ResponseError::InvalidReplicaAssignment.code());
    assert_eq!(
        m,
        "The manual partition assignment includes broker 3, but no such broker is registered."
    );
    let (code, m) = grow(&mut b, 4, &[&[1]]);
    assert_eq!(code, ResponseError::InvalidReplicaAssignment.code());
    assert_eq!(
        m,
        "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."
    );
    assert_eq!(grow(&mut b, 4, &[&[1], &[1]]).0, 0);
    assert_eq!(b.topics()["a"].partitions.len(), 4);
}

#[test]
fn flush_policies_sync_due_partitions_without_fsync_before_ack() {
    let mut b = open_with(BrokerConfig {
        sync_writes: false,
        flush_interval_ms: Some(1000),
        ..BrokerConfig::default()
    });
    create(&mut b, topic("every2", &[("flush.messages", "2")]));
    create(&mut b, topic("fast", &[("flush.ms", "50")]));
    create(&mut b, topic("plain", &[]));
    assert!(b.has_flush_policies());
    // --flush-interval-ms is Kafka's log.flush.interval.ms.
    let v = values(&describe(&mut b, "plain", None));
    assert_eq!(v["flush.ms"], ("1000".into(), 4));
    assert_eq!(v["flush.messages"], (i64::MAX.to_string(), 5));

    for t in ["every2", "fast", "plain"] {
        produce(&mut b, t, batch(&[1_000], Compression::None), 1_000);
    }
    assert!(b.take_due_sync_work(1_000).is_none(), "nothing due yet");
    assert_eq!(b.next_flush_deadline(), Some(1_050));
    produce(&mut b, "every2", batch(&[1_000], Compression::None), 1_010);
    let w = b.take_due_sync_work(1_010).expect("flush.messages reached");
    let id = |b: &Broker, t: &str| b.topics()[t].id;
    assert_eq!(w.ends, vec![(id(&b, "every2"), 0, 2)]);
    assert_eq!(
        w.seq,
        b.synced_seq(),
        "a partial sync completes no sequence"
    );
    b.complete_sync(w.seq, &w.ends, Ok(()));
    let w = b.take_due_sync_work(1_050).expect("flush.ms reached");
    assert_eq!(w.ends, vec![(id(&b, "fast"), 0, 1)]);
    // The periodic sync takes the rest.
    let w = b.take_sync_work().unwrap();
    assert_eq!(w.ends, vec![(id(&b, "plain"), 0, 1)]);
}

/// One batch of records with the given keys.
fn keyed_batch(keys: &[Option<&str>], c: Compression) -> Bytes {
    let records: Vec<Record> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 0,
            key: k.map(|k| Bytes::from(k.to_string())),
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
            compression: c,
        },
    )
    .unwrap();
    buf.freeze()
}

#[test]
fn compacted_topics_are_accepted_and_refuse_records_without_a_key() {
    let mut b = open();
    for (name, policy) in [("kv", "compact"), ("kvd", "compact,delete")] {
        let r = create(&mut b, topic(name, &[("cleanup.policy", policy)]));
        assert_eq!(r.topics[0].error_code, 0, "{r:?}");
        assert_eq!(
            values(&describe(&mut b, name, Some(&["cleanup.policy"])))["cleanup.policy"].0,
            policy
        );
    }
    let r = create(&mut b, topic("plain", &[]));
    assert_eq!(r.topics[0].error_code, 0);
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let (code, m) = alter(
        &mut b,
        "plain",
        &[("cleanup.policy", APPEND, Some("compact"))],
    );
    assert_eq!(code, 0, "{m}");
    assert_eq!(
        b.topics()["plain"].configs["cleanup.policy"],
        "delete,compact"
    );
    let (code, m) = alter(
        &mut b,
        "plain",
        &[("cleanup.policy", SUBTRACT, Some("compact"))],
    );
    assert_eq!(code, 0, "{m}");
    // One request: a keyless record in kv, a keyed batch in kvd, a keyless one in plain.
    let part = |records: Bytes| {
        vec![
            PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records)),
        ]
    };
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("kv")))
                .with_partition_data(part(keyed_batch(
                    &[Some("a"), None, Some("b"), None],
                    Compression::Lz4,
                ))),
            TopicProduceData::default()
                .with_name(TopicName(s("kvd")))
                .with_partition_data(part(keyed_batch(&[Some("a")], Compression::None))),
            TopicProduceData::default()
                .with_name(TopicName(s("plain")))
                .with_partition_data(part(keyed_batch(&[None], Compression::None))),
        ]);
    let ResponseKind::Produce(r) = now(&mut b, ApiKey::Produce, 9, RequestKind::Produce(req), 0)
    else {
        panic!()
    };
    let kv = &r.responses[0].partition_responses[0];
    assert_eq!(kv.error_code, ResponseError::InvalidRecord.code());
    let indexes: Vec<i32> = kv.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![1, 3]);
    let msg = "Compacted topic cannot accept message without key in topic partition kv-0.";
    assert!(
        kv.record_errors
            .iter()
            .all(|e| e.batch_index_error_message.as_deref() == Some(msg))
    );
    assert_eq!(
        kv.error_message.as_deref(),
        Some(
            "One or more records have been rejected due to 2 record errors in total, and only showing the first three errors at most: [RecordError(batchIndex=1, message='Compacted topic cannot accept message without key in topic partition kv-0.'), RecordError(batchIndex=3, message='Compacted topic cannot accept message without key in topic partition kv-0.')]"
        )
    );
    assert_eq!(
        b.topics()["kv"].partitions[0].log_end_offset(),
        0,
        "nothing written"
    );
    for other in &r.responses[1..] {
        assert_eq!(other.partition_responses[0].error_code, 0, "{r:?}");
    }
    assert_eq!(b.topics()["kvd"].partitions[0].log_end_offset(), 1);
    assert_eq!(b.topics()["plain"].partitions[0].log_end_offset(), 1);
}
