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

/// alice may write and read `orders`, describe the cluster, read group `g`, describe
/// transactional id `mine`; nothing else.
fn alice(op: Operation, rt: ResourceType, name: &str) -> bool {
    matches!(
        (op, rt, name),
        (
            Operation::Write | Operation::Read | Operation::Describe,
            ResourceType::Topic,
            "orders"
        ) | (Operation::Describe, ResourceType::Cluster, _)
            | (Operation::Read, ResourceType::Group, "g")
            | (Operation::Describe, ResourceType::TransactionalId, "mine")
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

#[test]
fn transactions_need_write_on_the_transactional_id_and_their_topics() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, TransactionalId,
    };
    let txn_denied = ResponseError::TransactionalIdAuthorizationFailed.code();
    // alice has no ACL on any transactional id.
    let end = EndTxnRequest::default().with_transactional_id(TransactionalId(s("tx")));
    let Decision::Refuse(ResponseKind::EndTxn(r)) = run(RequestKind::EndTxn(end), 3, None) else {
        panic!()
    };
    assert_eq!(r.error_code, txn_denied);
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")));
    let Decision::Refuse(ResponseKind::AddOffsetsToTxn(r)) =
        run(RequestKind::AddOffsetsToTxn(add), 3, None)
    else {
        panic!()
    };
    assert_eq!(r.error_code, txn_denied);
    let parts = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("orders")))
                .with_partitions(vec![0]),
        ]);
    let Decision::Refuse(ResponseKind::AddPartitionsToTxn(r)) =
        run(RequestKind::AddPartitionsToTxn(parts), 3, None)
    else {
        panic!()
    };
    assert_eq!(
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        txn_denied
    );
    // A transactional produce without WRITE on its id is refused whole.
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s("tx"))))
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("orders")))
                .with_partition_data(vec![PartitionProduceData::default().with_index(0)]),
        ]);
    let Decision::Refuse(ResponseKind::Produce(r)) = run(RequestKind::Produce(produce), 9, None)
    else {
        panic!()
    };
    assert_eq!(r.responses[0].partition_responses[0].error_code, txn_denied);
}

#[test]
fn a_transaction_may_not_add_a_topic_its_principal_cannot_write() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{AddPartitionsToTxnRequest, TransactionalId};
    // bob may write transactional id "tx" and topic "orders" only.
    let bob = |op: Operation, rt: ResourceType, name: &str| {
        matches!(
            (op, rt, name),
            (Operation::Write, ResourceType::TransactionalId, "tx")
                | (Operation::Write, ResourceType::Topic, "orders")
        )
    };
    let all = || vec!["orders".to_string(), "secret".to_string()];
    let name_of = |_| None;
    let cx = Context {
        may: &bob,
        may_quietly: &bob,
        name_of: &name_of,
        all_topics: &all,
        version: 3,
        node: None,
    };
    let topic = |n: &str| {
        AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(n)))
            .with_partitions(vec![0])
    };
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
        .with_v3_and_below_topics(vec![topic("orders"), topic("secret")]);
    let Decision::Refuse(ResponseKind::AddPartitionsToTxn(r)) =
        check(RequestKind::AddPartitionsToTxn(req.clone()), &cx)
    else {
        panic!()
    };
    let code =
        |t: usize| r.results_by_topic_v3_and_below[t].results_by_partition[0].partition_error_code;
    assert_eq!(code(0), ResponseError::OperationNotAttempted.code());
    assert_eq!(code(1), ResponseError::TopicAuthorizationFailed.code());
    // Only topics it may write: served.
    let ok = req.with_v3_and_below_topics(vec![topic("orders")]);
    assert!(matches!(
        check(RequestKind::AddPartitionsToTxn(ok), &cx),
        Decision::Serve(..)
    ));
}

#[test]
fn markers_come_from_nodes_or_as_an_operators_abort_with_cluster_action() {
    use kafka_protocol::messages::WriteTxnMarkersRequest;
    use kafka_protocol::messages::write_txn_markers_request::WritableTxnMarker;
    let markers = |commit: bool| {
        RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default().with_transaction_result(commit),
        ]))
    };
    let refused = |d: Decision| matches!(d, Decision::Refuse(ResponseKind::WriteTxnMarkers(_)));
    // alice has no CLUSTER_ACTION: neither commit nor abort.
    assert!(refused(run(markers(false), 1, None)));
    assert!(refused(run(markers(true), 1, None)));
    // A node (the coordinator) may write both.
    assert!(matches!(
        run(markers(true), 1, Some(2)),
        Decision::Serve(..)
    ));
    // An operator with CLUSTER_ACTION may abort, not commit.
    let operator = |op: Operation, rt: ResourceType, _: &str| {
        op == Operation::ClusterAction && rt == ResourceType::Cluster
    };
    let cx = |body| {
        let all = Vec::new;
        let name_of = |_| None;
        check(
            body,
            &Context {
                may: &operator,
                may_quietly: &operator,
                name_of: &name_of,
                all_topics: &all,
                version: 1,
                node: None,
            },
        )
    };
    assert!(matches!(cx(markers(false)), Decision::Serve(..)));
    assert!(refused(cx(markers(true))));
}

#[test]
fn describe_transactions_answers_each_denied_id_and_hides_undescribable_topics() {
    use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
    use kafka_protocol::messages::{
        DescribeTransactionsRequest, DescribeTransactionsResponse, TransactionalId,
    };
    let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        TransactionalId(s("mine")),
        TransactionalId(s("theirs")),
    ]);
    let Decision::Serve(RequestKind::DescribeTransactions(served), denied) =
        run(RequestKind::DescribeTransactions(req), 0, None)
    else {
        panic!()
    };
    assert_eq!(served.transactional_ids, vec![TransactionalId(s("mine"))]);
    let mut resp = ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(vec![
            TransactionState::default()
                .with_transactional_id(TransactionalId(s("mine")))
                .with_topics(vec![
                    TopicData::default().with_topic(TopicName(s("orders"))),
                    TopicData::default().with_topic(TopicName(s("secret"))),
                ]),
        ]),
    );
    denied.apply(&mut resp);
    let ResponseKind::DescribeTransactions(r) = resp else {
        panic!()
    };
    let states: Vec<(&str, i16, Vec<&str>)> = r
        .transaction_states
        .iter()
        .map(|t| {
            (
                t.transactional_id.0.as_str(),
                t.error_code,
                t.topics.iter().map(|x| x.topic.0.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("mine", 0, vec!["orders"]),
            (
                "theirs",
                ResponseError::TransactionalIdAuthorizationFailed.code(),
                vec![]
            ),
        ]
    );
}
