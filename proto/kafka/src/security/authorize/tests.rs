//! [`check`] with a hand-made permission table: what is stripped, what is refused whole, and
//! what [`Denied::apply`] adds to the answer.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, GroupId, HeartbeatRequest, MetadataRequest,
    ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_acl::{Operation, ResourceType};

use super::*;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// alice may write and read `orders`, describe the cluster, read group `g`; nothing else.
fn alice(op: Operation, rt: ResourceType, name: &str) -> bool {
    matches!(
        (op, rt, name),
        (
            Operation::Write | Operation::Read | Operation::Describe,
            ResourceType::Topic,
            "orders"
        ) | (Operation::Describe, ResourceType::Cluster, _)
            | (Operation::Read, ResourceType::Group, "g")
    )
}

fn run(body: RequestKind, version: i16, node: Option<i32>) -> Decision {
    let all = || vec!["orders".to_string(), "secret".to_string()];
    let name_of = |_| None;
    let cx = Context {
        may: &alice,
        may_quietly: &alice,
        name_of: &name_of,
        all_topics: &all,
        version,
        node,
    };
    check(body, &cx)
}

#[test]
fn produce_loses_denied_topics_and_answers_them_with_the_error() {
    let topic = |n: &str| {
        TopicProduceData::default()
            .with_name(TopicName(s(n)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(3)])
    };
    let req = ProduceRequest::default().with_topic_data(vec![topic("orders"), topic("secret")]);
    let Decision::Serve(RequestKind::Produce(r), denied) = run(RequestKind::Produce(req), 9, None)
    else {
        panic!()
    };
    assert_eq!(r.topic_data.len(), 1);
    assert_eq!(r.topic_data[0].name.0.as_str(), "orders");
    let mut resp = ResponseKind::Produce(ProduceResponse::default());
    denied.apply(&mut resp);
    let ResponseKind::Produce(p) = resp else {
        panic!()
    };
    assert_eq!(p.responses[0].name.0.as_str(), "secret");
    assert_eq!(p.responses[0].partition_responses[0].index, 3);
    assert_eq!(
        p.responses[0].partition_responses[0].error_code,
        ResponseError::TopicAuthorizationFailed.code()
    );
}

#[test]
fn only_the_node_itself_fetches_as_a_replica() {
    let fetch = || RequestKind::Fetch(FetchRequest::default().with_replica_id(BrokerId(2)));
    for node in [None, Some(3)] {
        match run(fetch(), 12, node) {
            Decision::Refuse(ResponseKind::Fetch(f)) => assert_eq!(
                f.error_code,
                ResponseError::ClusterAuthorizationFailed.code()
            ),
            other => panic!("{node:?}: {other:?}"),
        }
    }
    assert!(matches!(run(fetch(), 12, Some(2)), Decision::Serve(..)));
}

#[test]
fn metadata_listings_hide_what_may_not_be_described() {
    let Decision::Serve(_, denied) = run(
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
        12,
        None,
    ) else {
        panic!()
    };
    let mut resp = ResponseKind::Metadata(
        kafka_protocol::messages::MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default().with_name(Some(TopicName(s("orders")))),
            MetadataResponseTopic::default().with_name(Some(TopicName(s("secret")))),
        ]),
    );
    denied.apply(&mut resp);
    let ResponseKind::Metadata(m) = resp else {
        panic!()
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].name.as_ref().unwrap().0.as_str(), "orders");
}

#[test]
fn group_requests_without_read_on_the_group_are_refused_whole() {
    let hb =
        |g: &str| RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(s(g))));
    assert!(matches!(run(hb("g"), 4, None), Decision::Serve(..)));
    match run(hb("other"), 4, None) {
        Decision::Refuse(ResponseKind::Heartbeat(h)) => {
            assert_eq!(h.error_code, ResponseError::GroupAuthorizationFailed.code())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_topics_needs_create_on_the_cluster_or_the_topic() {
    let req = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("new"))),
    ]);
    let Decision::Serve(RequestKind::CreateTopics(r), denied) =
        run(RequestKind::CreateTopics(req), 7, None)
    else {
        panic!()
    };
    assert!(r.topics.is_empty());
    let mut resp = ResponseKind::CreateTopics(Default::default());
    denied.apply(&mut resp);
    let ResponseKind::CreateTopics(c) = resp else {
        panic!()
    };
    assert_eq!(
        c.topics[0].error_code,
        ResponseError::TopicAuthorizationFailed.code()
    );
}
