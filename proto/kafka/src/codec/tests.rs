//! Codec tests: every advertised API at its lowest and highest version goes through
//! encode → decode → broker → encode → decode; bad frames are errors, never panics.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;

use super::*;
use crate::broker::{Broker, BrokerConfig, Reply};
use crate::storage::MemStorage;
use crate::versions::SUPPORTED;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic() -> TopicName {
    TopicName(s("rt"))
}

/// A request for `key` that is valid at `version` and touches topic "rt".
fn request(key: ApiKey, version: i16, topic_id: uuid::Uuid) -> RequestKind {
    match key {
        ApiKey::Produce => {
            let mut td = produce_request::TopicProduceData::default().with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(crate::batch::tests::batch(3, Compression::None, 1000))),
            ]);
            if version >= 13 {
                td.topic_id = topic_id;
            } else {
                td.name = topic();
            }
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(1)
                    .with_topic_data(vec![td]),
            )
        }
        ApiKey::Fetch => {
            let mut ft = fetch_request::FetchTopic::default().with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20),
            ]);
            if version >= 13 {
                ft.topic_id = topic_id;
            } else {
                ft.topic = topic();
            }
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![ft])
                    .with_replica_id(BrokerId(-1)),
            )
        }
        ApiKey::ListOffsets => {
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2),
                    ]),
            ]))
        }
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
            ])))
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(if version >= 3 {
            ApiVersionsRequest::default()
                .with_client_software_name(s("test"))
                .with_client_software_version(s("1"))
        } else {
            ApiVersionsRequest::default()
        }),
        ApiKey::CreateTopics => {
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(&format!("new-{version}"))))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ]))
        }
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(TopicName(s("nope")))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("nope"))])
        }),
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(0),
                    ]),
            ]))
        }
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_leader_epoch(0),
                    ]),
            ]),
        ),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("rt")),
        ]))
        }
        ApiKey::AlterConfigs => {
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("rt"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("100000")))]),
        ]))
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic())
                .with_count(1),
        ]))
        }
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("rt"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.bytes"))
                            .with_config_operation(0)
                            .with_value(Some(s("1000000"))),
                    ]),
            ]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => {
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
                describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(s("__cluster_metadata")))
                    .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
            ]))
        }
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_replicas(Some(vec![BrokerId(1)])),
                    ]),
            ]),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_topics(None),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![0]),
            ])),
        ),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])
        } else {
            FindCoordinatorRequest::default().with_key(s("g"))
        }),
        ApiKey::JoinGroup => {
            let mut r = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"meta")),
                ]);
            if version >= 1 {
                r.rebalance_timeout_ms = 10_000;
            }
            RequestKind::JoinGroup(r)
        }
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(1)
                .with_member_id(s("m")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(1)
                .with_member_id(s("m")),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s("m")),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m"))
        }),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0]),
                    ])),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ]))
        }),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        ),
        // v4+: a partition leader's verification (the v3 fields may not be set).
        ApiKey::AddPartitionsToTxn if version >= 4 => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default().with_transactions(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(s("tx")))
                    .with_producer_id(ProducerId(0))
                    .with_verify_only(true)
                    .with_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![0]),
                    ]),
            ]),
        ),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                .with_v3_and_below_producer_id(ProducerId(0))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![0]),
                ]),
        ),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g"))),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_committed(true),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("tx"))]),
        ),
        ApiKey::ListTransactions => {
            RequestKind::ListTransactions(ListTransactionsRequest::default())
        }
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]))
        }
        ApiKey::WriteTxnMarkers => {
            RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(1)
                    .with_transaction_result(true)
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0]),
                    ]),
            ]))
        }
        ApiKey::SaslHandshake => {
            RequestKind::SaslHandshake(SaslHandshakeRequest::default().with_mechanism(s("PLAIN")))
        }
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"\0alice\0secret")),
        ),
        ApiKey::CreateAcls => {
            RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(s("rt"))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:alice"))
                    .with_host(s("*"))
                    .with_operation(3)
                    .with_permission_type(3),
            ]))
        }
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::DeleteAcls => {
            RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![
                delete_acls_request::DeleteAclsFilter::default()
                    .with_resource_type_filter(2)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1),
            ]))
        }
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default())
        }
        ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(
            AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(s("alice"))
                    .with_mechanism(2)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"0123456789abcdef"))
                    .with_salted_password(Bytes::from(vec![9u8; 64])),
            ]),
        ),
        ApiKey::AddRaftVoter => RequestKind::AddRaftVoter(
            kafka_protocol::messages::AddRaftVoterRequest::default()
                .with_voter_id(4)
                .with_timeout_ms(30_000)
                .with_listeners(vec![
                    kafka_protocol::messages::add_raft_voter_request::Listener::default()
                        .with_name(s("RAFT"))
                        .with_host(s("127.0.0.1"))
                        .with_port(7004),
                ]),
        ),
        ApiKey::RemoveRaftVoter => RequestKind::RemoveRaftVoter(
            kafka_protocol::messages::RemoveRaftVoterRequest::default().with_voter_id(2),
        ),
        other => panic!("no test request for {other:?}"),
    }
}

/// SASL requests are the connection's: answer them as a connection without SASL does.
fn sasl_answer(body: RequestKind, version: i16) -> Option<ResponseKind> {
    use crate::security::sasl::ConnectionAuth;
    let mut auth = ConnectionAuth::new(None, crate::security::ANONYMOUS.into());
    match body {
        RequestKind::SaslHandshake(r) => Some(ResponseKind::SaslHandshake(
            auth.handshake(&r, version, "n".repeat(24)).0,
        )),
        RequestKind::SaslAuthenticate(r) => Some(ResponseKind::SaslAuthenticate(
            auth.authenticate(&r.auth_bytes, version, &Default::default(), 0)
                .0,
        )),
        _ => None,
    }
}

fn broker() -> (Broker, uuid::Uuid) {
    let fs = Arc::new(MemStorage::new());
    let mut b = Broker::open(fs, BrokerConfig::default(), 1, 0).unwrap();
    let ctx = RequestContext {
        api_key: ApiKey::CreateTopics,
        api_version: 7,
        correlation_id: 0,
        client_id: None,
    };
    let r = b.handle(
        &ctx,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic())
                .with_num_partitions(1)
                .with_replication_factor(1),
        ])),
        0,
    );
    let Reply::Now(ResponseKind::CreateTopics(r)) = r else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0);
    (b, r.topics[0].topic_id)
}

#[test]
fn every_api_round_trips_at_lowest_and_highest_version() {
    for &(key, lo, hi) in SUPPORTED {
        for version in [lo, hi] {
            let (mut b, id) = broker();
            let body = request(key, version, id);
            let frame = encode_request(key, version, 42, Some("test-client"), &body)
                .unwrap_or_else(|e| panic!("{key:?} v{version} request: {e}"));
            let decoded = decode_request(frame.slice(4..))
                .unwrap_or_else(|e| panic!("{key:?} v{version} decode: {e}"));
            assert_eq!(decoded.ctx.api_key, key);
            assert_eq!(decoded.ctx.api_version, version);
            assert_eq!(decoded.ctx.correlation_id, 42);
            assert_eq!(decoded.ctx.client_id.as_deref(), Some("test-client"));
            if let Some(response) = sasl_answer(decoded.body.clone(), version) {
                let out = encode_response(&decoded.ctx, &response).unwrap();
                let (_, back) = decode_response(key, version, out.slice(4..)).unwrap();
                assert_eq!(encode_response(&decoded.ctx, &back).unwrap(), out);
                continue;
            }
            let response = match b.handle(&decoded.ctx, decoded.body, 0) {
                Reply::Now(r) => r,
                Reply::AfterSync { response, .. } => ResponseKind::Produce(response),
                Reply::Fetch(req) => ResponseKind::Fetch(b.fetch(&req, version).response),
                Reply::Durable { response, .. } => response,
                Reply::Parked { token } => {
                    // Parked joins complete when the initial rebalance delay has passed.
                    b.tick(1_000_000);
                    b.take_deferred()
                        .into_iter()
                        .find(|d| d.token == token)
                        .unwrap_or_else(|| panic!("{key:?} v{version}: parked and never answered"))
                        .response
                }
                Reply::Nothing => panic!("{key:?} v{version}: no response"),
            };
            let out = encode_response(&decoded.ctx, &response)
                .unwrap_or_else(|e| panic!("{key:?} v{version} response: {e}"));
            let (corr, back) = decode_response(key, version, out.slice(4..))
                .unwrap_or_else(|e| panic!("{key:?} v{version} response decode: {e}"));
            assert_eq!(corr, 42);
            // Fields a version lacks are dropped on the wire; what the version carries must survive.
            let again = encode_response(&decoded.ctx, &back).unwrap();
            assert_eq!(again, out, "{key:?} v{version} response changed in transit");
        }
    }
}

#[test]
fn produced_batches_come_back_on_fetch_at_every_fetch_version() {
    let (mut b, id) = broker();
    let ctx = |key, v| RequestContext {
        api_key: key,
        api_version: v,
        correlation_id: 1,
        client_id: None,
    };
    let Reply::AfterSync { response, .. } =
        b.handle(&ctx(ApiKey::Produce, 9), request(ApiKey::Produce, 9, id), 0)
    else {
        panic!()
    };
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let work = b.take_sync_work().unwrap();
    for f in &work.files {
        f.sync_data().unwrap();
    }
    b.complete_sync(work.seq, &work.ends, Ok(()));
    for v in 4..=18 {
        let RequestKind::Fetch(req) = request(ApiKey::Fetch, v, id) else {
            panic!()
        };
        let out = b.fetch(&req, v);
        let p = &out.response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(p.high_watermark, 3, "v{v}");
        let recs = p.records.clone().unwrap();
        assert_eq!(
            crate::batch::validate_all(&recs).unwrap()[0].records_count,
            3
        );
    }
}

#[test]
fn null_client_id_is_accepted() {
    let body = request(ApiKey::ApiVersions, 3, uuid::Uuid::nil());
    let frame = encode_request(ApiKey::ApiVersions, 3, 7, None, &body).unwrap();
    let r = decode_request(frame.slice(4..)).unwrap();
    assert_eq!(r.ctx.client_id, None);
}

#[test]
fn unsupported_api_versions_gets_a_v0_error_with_ranges() {
    // ApiVersions v9 does not exist: header is flexible, body unknown.
    let mut raw = Vec::new();
    raw.extend_from_slice(&18i16.to_be_bytes());
    raw.extend_from_slice(&9i16.to_be_bytes());
    raw.extend_from_slice(&77i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    raw.push(0);
    let err = decode_request(Bytes::from(raw)).unwrap_err();
    let (ctx, resp) = err.response().expect("ApiVersions answers");
    let bytes = encode_response(&ctx, &resp).unwrap();
    let (corr, body) = decode_api_versions_v0(bytes.slice(4..)).unwrap();
    assert_eq!(corr, 77);
    assert_eq!(body.error_code, 35);
    assert!(
        body.api_keys
            .iter()
            .any(|k| k.api_key == 0 && k.max_version == 13)
    );
}

#[test]
fn unknown_api_key_and_unsupported_versions_are_errors() {
    let mut raw = vec![0x7f, 0x00, 0, 0, 0, 0, 0, 5, 0xff, 0xff];
    assert!(matches!(
        decode_request(Bytes::from(raw.clone())),
        Err(DecodeError::UnknownApiKey {
            api_key: 0x7f00,
            correlation_id: 5
        })
    ));
    raw[0] = 0;
    raw[1] = 0; // Produce v0: older than we serve
    assert!(matches!(
        decode_request(Bytes::from(raw.clone())),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    // An API Kafka defines but we do not serve (e.g. StopReplica = 5, ZooKeeper-era).
    raw[1] = 5;
    assert!(matches!(
        decode_request(Bytes::from(raw)),
        Err(DecodeError::UnknownApiKey { .. })
    ));
}

#[test]
fn truncated_and_mutated_frames_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let id = uuid::Uuid::from_u128(1);
    let mut frames = Vec::new();
    for &(key, lo, hi) in SUPPORTED {
        for v in [lo, hi] {
            frames.push(
                encode_request(key, v, 1, Some("c"), &request(key, v, id))
                    .unwrap()
                    .slice(4..),
            );
        }
    }
    let (mut b, _) = broker();
    for i in 0..30_000 {
        let f = &frames[i % frames.len()];
        let mut m = f.to_vec();
        match rng.gen_range(0..3) {
            0 => m.truncate(rng.gen_range(0..m.len())),
            1 => {
                for _ in 0..rng.gen_range(1..6) {
                    let j = rng.gen_range(0..m.len());
                    m[j] = rng.r#gen();
                }
            }
            _ => m = (0..rng.gen_range(0..64)).map(|_| rng.r#gen()).collect(),
        }
        // Whatever decodes must also be handled without panicking.
        if let Ok(r) = decode_request(Bytes::from(m)) {
            // Creating up to 100k partitions per request is legal but slow on MemStorage.
            if matches!(
                r.body,
                RequestKind::CreateTopics(_) | RequestKind::CreatePartitions(_)
            ) {
                continue;
            }
            if let Reply::Fetch(req) = b.handle(&r.ctx, r.body, 0) {
                b.fetch(&req, r.ctx.api_version);
            }
        }
    }
}
