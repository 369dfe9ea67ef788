//! Authorization through [`Broker::handle_session`] on [`MemStorage`]: ACLs created by a super
//! user, then a user's requests allowed or refused with Kafka's error codes, and nothing written
//! by a refused request; ACLs and credentials persist across reopen.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateTopicsRequest, DescribeAclsRequest, FetchRequest,
    JoinGroupRequest, MetadataRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};

use super::group_tests::{ctx, idempotent_batch, s, sync};
use super::{Broker, BrokerConfig, Reply};
use crate::security::{SecurityConfig, Session};
use crate::storage::{MemStorage, Storage};

fn open(fs: &MemStorage) -> Broker {
    let config = BrokerConfig {
        offsets_partitions: 2,
        auto_create_topics: false,
        security: SecurityConfig {
            authorizer: true,
            super_users: vec!["User:admin".into()],
        },
        ..BrokerConfig::default()
    };
    Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 3, 0).unwrap()
}

fn session(principal: &str) -> Session {
    Session {
        principal: principal.into(),
        host: "10.0.0.7".into(),
        listener: "SASL_SSL".into(),
        node: None,
    }
}

fn now(b: &mut Broker, who: &Session, key: ApiKey, v: i16, body: RequestKind) -> ResponseKind {
    let (reply, denied) = b.handle_session(who, &ctx(key, v), body, 1_000);
    let mut resp = match reply {
        Reply::Now(r) => r,
        Reply::AfterSync { response, .. } => {
            sync(b);
            ResponseKind::Produce(response)
        }
        Reply::Durable { response, .. } => {
            sync(b);
            response
        }
        other => panic!("{key:?}: {other:?}"),
    };
    // What the connection does for answers sent later.
    denied.apply(&mut resp);
    resp
}

fn allow(principal: &str, resource_type: i8, name: &str, operation: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_resource_pattern_type(3)
        .with_principal(s(principal))
        .with_host(s("*"))
        .with_operation(operation)
        .with_permission_type(3)
}

fn create_topic(b: &mut Broker, name: &str) {
    let admin = session("User:admin");
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let ResponseKind::CreateTopics(r) = now(
        b,
        &admin,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(req),
    ) else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}

fn produce(b: &mut Broker, who: &Session, topics: &[&str]) -> Vec<(String, i16)> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(
            topics
                .iter()
                .map(|t| {
                    TopicProduceData::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(idempotent_batch(-1, 0, 3))),
                        ])
                })
                .collect(),
        );
    let ResponseKind::Produce(r) = now(b, who, ApiKey::Produce, 9, RequestKind::Produce(req))
    else {
        panic!()
    };
    let mut out: Vec<(String, i16)> = r
        .responses
        .iter()
        .map(|t| (t.name.0.to_string(), t.partition_responses[0].error_code))
        .collect();
    out.sort();
    out
}

#[test]
fn acls_decide_what_a_user_may_do_and_denied_requests_write_nothing() {
    let fs = MemStorage::new();
    let mut b = open(&fs);
    create_topic(&mut b, "orders");
    create_topic(&mut b, "secret");
    let admin = session("User:admin");
    let alice = session("User:alice");

    // No ACL yet: alice may do nothing.
    let denied = ResponseError::TopicAuthorizationFailed.code();
    assert_eq!(
        produce(&mut b, &alice, &["orders"]),
        vec![("orders".into(), denied)]
    );

    // Nor ask for leader elections (ALTER on the cluster).
    let ResponseKind::ElectLeaders(r) = now(
        &mut b,
        &alice,
        ApiKey::ElectLeaders,
        2,
        RequestKind::ElectLeaders(
            kafka_protocol::messages::ElectLeadersRequest::default().with_topic_partitions(None),
        ),
    ) else {
        panic!()
    };
    assert_eq!(
        r.error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    // Nor describe the metadata quorum (DESCRIBE on the cluster).
    let ResponseKind::DescribeQuorum(r) = now(
        &mut b,
        &alice,
        ApiKey::DescribeQuorum,
        1,
        RequestKind::DescribeQuorum(kafka_protocol::messages::DescribeQuorumRequest::default()),
    ) else {
        panic!()
    };
    assert_eq!(
        r.error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    // A non-super user cannot create ACLs.
    let create =
        CreateAclsRequest::default().with_creations(vec![allow("User:alice", 2, "orders", 4)]);
    let ResponseKind::CreateAcls(r) = now(
        &mut b,
        &alice,
        ApiKey::CreateAcls,
        3,
        RequestKind::CreateAcls(create.clone()),
    ) else {
        panic!()
    };
    assert_eq!(
        r.results[0].error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    let ResponseKind::CreateAcls(r) = now(
        &mut b,
        &admin,
        ApiKey::CreateAcls,
        3,
        RequestKind::CreateAcls(create),
    ) else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0);

    // WRITE on orders only: one topic of the request is written, the other refused.
    assert_eq!(
        produce(&mut b, &alice, &["orders", "secret"]),
        vec![("orders".into(), 0), ("secret".into(), denied)]
    );
    assert_eq!(b.partition("orders", 0).unwrap().log_end_offset(), 3);
    assert_eq!(b.partition("secret", 0).unwrap().log_end_offset(), 0);

    // Metadata: WRITE implies DESCRIBE, so alice sees orders; secret is left out of listings
    // and refused when named.
    let ResponseKind::Metadata(m) = now(
        &mut b,
        &alice,
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    ) else {
        panic!()
    };
    let names: Vec<String> = m
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert_eq!(names, vec!["orders".to_string()]);
    let ResponseKind::Metadata(m) = now(
        &mut b,
        &alice,
        ApiKey::Metadata,
        12,
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("secret")))),
        ]))),
    ) else {
        panic!()
    };
    assert_eq!(m.topics[0].error_code, denied);

    // Groups need READ on the group.
    let join = JoinGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(s("g1")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"));
    let ResponseKind::JoinGroup(j) = now(
        &mut b,
        &alice,
        ApiKey::JoinGroup,
        9,
        RequestKind::JoinGroup(join),
    ) else {
        panic!()
    };
    assert_eq!(j.error_code, ResponseError::GroupAuthorizationFailed.code());

    // Only a cluster node may fetch as a replica, whatever the ACLs say.
    let fetch = FetchRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(2));
    match b
        .handle_session(
            &admin,
            &ctx(ApiKey::Fetch, 12),
            RequestKind::Fetch(fetch),
            0,
        )
        .0
    {
        Reply::Now(ResponseKind::Fetch(f)) => {
            assert_eq!(
                f.error_code,
                ResponseError::ClusterAuthorizationFailed.code()
            )
        }
        other => panic!("{other:?}"),
    }

    // Denials are counted by resource type.
    let denials = b.denials();
    assert!(
        denials.iter().any(|(t, n)| t == "TOPIC" && *n >= 2),
        "{denials:?}"
    );
    assert!(denials.iter().any(|(t, _)| t == "GROUP"), "{denials:?}");

    // ACLs survive reopen.
    drop(b);
    let mut b = open(&fs);
    let ResponseKind::DescribeAcls(d) = now(
        &mut b,
        &admin,
        ApiKey::DescribeAcls,
        3,
        RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_name_filter(None)
                .with_principal_filter(None)
                .with_host_filter(None)
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ),
    ) else {
        panic!()
    };
    assert_eq!(d.resources.len(), 1);
    assert_eq!(d.resources[0].resource_name.as_str(), "orders");
    assert_eq!(
        produce(&mut b, &alice, &["orders"]),
        vec![("orders".into(), 0)]
    );
}

#[test]
fn without_an_authorizer_everything_is_allowed() {
    let fs = MemStorage::new();
    let config = BrokerConfig {
        auto_create_topics: true,
        offsets_partitions: 2,
        ..BrokerConfig::default()
    };
    let mut b = Broker::open(Arc::new(fs.clone()) as Arc<dyn Storage>, config, 3, 0).unwrap();
    let anyone = session("User:ANONYMOUS");
    assert_eq!(
        produce(&mut b, &anyone, &["free"]),
        vec![("free".into(), 0)]
    );
}
