//! Every transition and every refusal of the transaction coordinator.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest,
    GroupId, InitProducerIdRequest, ListTransactionsRequest, ProducerId, ResponseKind, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::*;

const ID: &str = "tx";

fn ctx(version: i16) -> RequestContext {
    RequestContext {
        token: 1,
        api_version: version,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn coordinator() -> (TxnCoordinator, ProducerIdAllocator) {
    let mut c = TxnCoordinator::new(TxnConfig {
        num_partitions: 3,
        max_timeout_ms: 60_000,
        id_expiration_ms: 1_000_000,
    });
    for p in 0..3 {
        assert!(c.load_partition(p, []).is_empty());
    }
    (c, ProducerIdAllocator::new(100))
}

fn init_req(timeout: i32) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(ID))))
        .with_transaction_timeout_ms(timeout)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// The response of the actions (answered at once or after a persist) and the persisted states.
fn outcome(actions: &[TxnAction]) -> (Option<ResponseKind>, Vec<TxnState>, Vec<MarkerJob>) {
    let mut body = None;
    let mut states = Vec::new();
    let mut markers = Vec::new();
    for a in actions {
        match a {
            TxnAction::Respond(r) => body = Some(r.body.clone()),
            TxnAction::Persist { record, then, .. } => {
                if let StoreRecord::Transaction { value: Some(v), .. } = record {
                    states.push(TxnState::from_code(v.state).unwrap());
                }
                if let Some(r) = then {
                    body = Some(r.body.clone());
                }
            }
            TxnAction::WriteMarkers(j) => markers.push(j.clone()),
        }
    }
    (body, states, markers)
}

fn init(c: &mut TxnCoordinator, ids: &mut ProducerIdAllocator, now: i64) -> (i16, i64, i16) {
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &init_req(10_000), now, ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!("no answer")
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn add(c: &mut TxnCoordinator, pid: i64, epoch: i16, parts: &[(&str, i32)], now: i64) -> Vec<i16> {
    add_v(c, 3, pid, epoch, parts, now).0
}

fn add_v(
    c: &mut TxnCoordinator,
    version: i16,
    pid: i64,
    epoch: i16,
    parts: &[(&str, i32)],
    now: i64,
) -> (Vec<i16>, Vec<TxnState>) {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in parts {
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(ID)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let exists = |t: &str, _p: i32| t != "missing";
    let (body, states, _) = outcome(&c.add_partitions(&ctx(version), &req, now, &exists));
    let Some(ResponseKind::AddPartitionsToTxn(r)) = body else {
        panic!("no answer")
    };
    let codes = r
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect();
    (codes, states)
}

fn end(
    c: &mut TxnCoordinator,
    pid: i64,
    epoch: i16,
    commit: bool,
    now: i64,
) -> (i16, Vec<TxnState>, Vec<MarkerJob>) {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let (body, states, markers) = outcome(&c.end_txn(&ctx(3), &req, now));
    let Some(ResponseKind::EndTxn(r)) = body else {
        panic!("no answer")
    };
    (r.error_code, states, markers)
}

fn state(c: &TxnCoordinator) -> TxnState {
    c.get(ID).unwrap().state
}

#[test]
fn a_transaction_commits_through_prepare_and_complete() {
    let (mut c, mut ids) = coordinator();
    let (e, pid, epoch) = init(&mut c, &mut ids, 0);
    assert_eq!((e, epoch), (0, 0));
    assert_eq!(state(&c), TxnState::Empty);
    // Empty → Ongoing.
    let (codes, states) = add_v(&mut c, 3, pid, epoch, &[("t", 0), ("t", 1)], 10);
    assert_eq!((codes, states), (vec![0, 0], vec![TxnState::Ongoing]));
    assert_eq!(c.get(ID).unwrap().start_ms, 10);
    // Adding a partition already in the transaction persists nothing.
    let (codes, states) = add_v(&mut c, 3, pid, epoch, &[("t", 1)], 11);
    assert_eq!((codes, states), (vec![0], vec![]));
    assert_eq!(c.verify(pid, epoch, "t", 1), Ok(()));
    assert_eq!(
        c.verify(pid, epoch, "t", 2),
        Err(ResponseError::InvalidTxnState)
    );
    // Ongoing → PrepareCommit, with the markers to write.
    let (e, states, markers) = end(&mut c, pid, epoch, true, 20);
    assert_eq!(e, 0);
    assert_eq!(states, vec![TxnState::PrepareCommit]);
    assert_eq!(markers.len(), 1);
    assert!(markers[0].commit);
    assert_eq!(
        markers[0].partitions,
        vec![("t".into(), 0), ("t".into(), 1)]
    );
    // While the markers are written: concurrent transactions.
    assert_eq!(
        add(&mut c, pid, epoch, &[("t", 0)], 21),
        vec![ResponseError::ConcurrentTransactions.code()]
    );
    assert_eq!(
        end(&mut c, pid, epoch, true, 21).0,
        ResponseError::ConcurrentTransactions.code()
    );
    assert_eq!(
        end(&mut c, pid, epoch, false, 21).0,
        ResponseError::InvalidTxnState.code()
    );
    // PrepareCommit → CompleteCommit.
    let (_, states, _) = outcome(&c.markers_written(&markers[0], 30, &mut ids));
    assert_eq!(states, vec![TxnState::CompleteCommit]);
    assert!(c.get(ID).unwrap().partitions.is_empty());
    // A retried EndTxn of the completed commit succeeds; an abort of it does not.
    assert_eq!(end(&mut c, pid, epoch, true, 31).0, 0);
    assert_eq!(
        end(&mut c, pid, epoch, false, 31).0,
        ResponseError::InvalidTxnState.code()
    );
    // The next transaction starts from CompleteCommit.
    assert_eq!(add(&mut c, pid, epoch, &[("u", 0)], 40), vec![0]);
    assert_eq!(c.get(ID).unwrap().partitions.len(), 1);
    let (e, states, markers) = end(&mut c, pid, epoch, false, 41);
    assert_eq!((e, states), (0, vec![TxnState::PrepareAbort]));
    let (_, states, _) = outcome(&c.markers_written(&markers[0], 42, &mut ids));
    assert_eq!(states, vec![TxnState::CompleteAbort]);
    // A stale markers_written (wrong epoch) changes nothing.
    assert!(c.markers_written(&markers[0], 43, &mut ids).is_empty());
}

#[test]
fn a_new_instance_bumps_the_epoch_and_fences_the_old_one() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, e0) = init(&mut c, &mut ids, 0);
    assert_eq!(add(&mut c, pid, e0, &[("t", 0)], 1), vec![0]);
    // A second instance while a transaction is open: the transaction is aborted at a bumped
    // epoch, and the request waits for the abort to complete.
    let actions = c.init_producer_id(&ctx(4), &init_req(10_000), 2, &mut ids);
    let (body, states, markers) = outcome(&actions);
    assert!(body.is_none(), "parked until the abort completes");
    assert_eq!(states, vec![TxnState::PrepareAbort]);
    assert_eq!(markers[0].producer_epoch, e0 + 1);
    assert!(!markers[0].commit);
    // A third instance meanwhile is told to retry.
    assert_eq!(
        init(&mut c, &mut ids, 3).0,
        ResponseError::ConcurrentTransactions.code()
    );
    // The abort completes: the parked request gets the next epoch.
    let (body, states, _) = outcome(&c.markers_written(&markers[0], 4, &mut ids));
    assert_eq!(states, vec![TxnState::CompleteAbort, TxnState::Empty]);
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!("the parked InitProducerId is answered")
    };
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, pid, e0 + 2)
    );
    assert_eq!(state(&c), TxnState::Empty);
    // The old instance is fenced everywhere.
    assert_eq!(
        add(&mut c, pid, e0, &[("t", 0)], 6),
        vec![ResponseError::ProducerFenced.code()]
    );
    // Before KIP-588 (v<2) the same refusal is INVALID_PRODUCER_EPOCH.
    assert_eq!(
        add_v(&mut c, 1, pid, e0, &[("t", 0)], 6).0,
        vec![ResponseError::InvalidProducerEpoch.code()]
    );
    assert_eq!(
        end(&mut c, pid, e0, true, 6).0,
        ResponseError::ProducerFenced.code()
    );
    assert_eq!(
        c.verify(pid, e0, "t", 0),
        Err(ResponseError::InvalidProducerEpoch)
    );
}

#[test]
fn refusals() {
    let (mut c, mut ids) = coordinator();
    // Timeouts out of range.
    for timeout in [0, -5, 60_001] {
        let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &init_req(timeout), 0, &mut ids));
        let Some(ResponseKind::InitProducerId(r)) = body else {
            panic!()
        };
        assert_eq!(
            r.error_code,
            ResponseError::InvalidTransactionTimeout.code()
        );
    }
    // An empty transactional id.
    let req = init_req(1000).with_transactional_id(Some(TransactionalId(s(""))));
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &req, 0, &mut ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    // Requests for an id that never initialised.
    assert_eq!(
        add(&mut c, 5, 0, &[("t", 0)], 0),
        vec![ResponseError::InvalidProducerIdMapping.code()]
    );
    assert_eq!(
        end(&mut c, 5, 0, true, 0).0,
        ResponseError::InvalidProducerIdMapping.code()
    );
    let (_, pid, epoch) = init(&mut c, &mut ids, 0);
    // Wrong producer id.
    assert_eq!(
        add(&mut c, pid + 1, epoch, &[("t", 0)], 0),
        vec![ResponseError::InvalidProducerIdMapping.code()]
    );
    // EndTxn with nothing started.
    assert_eq!(
        end(&mut c, pid, epoch, true, 0).0,
        ResponseError::InvalidTxnState.code()
    );
    // Unknown partitions fail, the others are not attempted, and nothing starts.
    let codes = add(&mut c, pid, epoch, &[("t", 0), ("missing", 0)], 0);
    assert_eq!(
        codes,
        vec![
            ResponseError::UnknownTopicOrPartition.code(),
            ResponseError::OperationNotAttempted.code()
        ]
    );
    assert_eq!(state(&c), TxnState::Empty);
    // A produce outside a transaction.
    assert_eq!(
        c.verify(pid, epoch, "t", 0),
        Err(ResponseError::InvalidTxnState)
    );
    assert_eq!(
        c.verify(999, 0, "t", 0),
        Err(ResponseError::InvalidTxnState)
    );
    // A coordinator that does not own the id's partition.
    assert!(c.unload_partition(c.partition_for(ID)).is_empty());
    assert_eq!(
        add(&mut c, pid, epoch, &[("t", 0)], 0),
        vec![ResponseError::NotCoordinator.code()]
    );
    assert_eq!(
        init(&mut c, &mut ids, 0).0,
        ResponseError::NotCoordinator.code()
    );
}

#[test]
fn kip_360_names_the_current_producer_or_is_fenced() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, e0) = init(&mut c, &mut ids, 0);
    let named = |pid: i64, epoch: i16| {
        init_req(10_000)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
    };
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &named(pid, e0), 1, &mut ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!()
    };
    assert_eq!((r.error_code, r.producer_epoch), (0, e0 + 1));
    // A retry of that bump gets the same answer, not a second bump.
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &named(pid, e0), 2, &mut ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!()
    };
    assert_eq!((r.error_code, r.producer_epoch), (0, e0 + 1));
    // A new instance (no id named) bumps again; the zombie still naming the first epoch is
    // not taken for a retry of that bump.
    let (e, _, e2) = init(&mut c, &mut ids, 3);
    assert_eq!((e, e2), (0, e0 + 2));
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &named(pid, e0 + 1), 3, &mut ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::ProducerFenced.code());
    // An epoch from further back is fenced.
    let (body, _, _) = outcome(&c.init_producer_id(&ctx(4), &named(pid, 7), 3, &mut ids));
    let Some(ResponseKind::InitProducerId(r)) = body else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::ProducerFenced.code());
}

#[test]
fn an_exhausted_epoch_moves_to_a_new_producer_id() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, _) = init(&mut c, &mut ids, 0);
    c.txns.get_mut(ID).unwrap().epoch = i16::MAX - 1;
    let (e, pid2, epoch) = init(&mut c, &mut ids, 1);
    assert_eq!((e, epoch), (0, 0));
    assert_ne!(pid2, pid);
    assert_eq!(c.get(ID).unwrap().last_producer_id, pid);
    assert_eq!(
        c.verify(pid2, 0, "t", 0),
        Err(ResponseError::InvalidTxnState)
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, epoch) = init(&mut c, &mut ids, 0);
    add(&mut c, pid, epoch, &[("t", 0)], 1_000);
    assert_eq!(c.poll_timeout(), Some(11_000));
    assert!(c.tick(10_999, &mut ids).is_empty());
    let (_, states, markers) = outcome(&c.tick(11_000, &mut ids));
    assert_eq!(states, vec![TxnState::PrepareAbort]);
    assert_eq!(
        (markers[0].producer_epoch, markers[0].commit),
        (epoch + 1, false)
    );
    assert_eq!(c.poll_timeout(), None);
    outcome(&c.markers_written(&markers[0], 11_001, &mut ids));
    assert_eq!(state(&c), TxnState::CompleteAbort);
    // The producer's commit is refused: it was fenced.
    assert_eq!(
        end(&mut c, pid, epoch, true, 11_002).0,
        ResponseError::ProducerFenced.code()
    );
}

#[test]
fn offsets_join_the_transaction_through_their_group_partition() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, epoch) = init(&mut c, &mut ids, 0);
    let req = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s(ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("g")));
    let (body, states, _) = outcome(&c.add_offsets(&ctx(3), &req, "__consumer_offsets", 7, 5));
    let Some(ResponseKind::AddOffsetsToTxn(r)) = body else {
        panic!()
    };
    assert_eq!((r.error_code, states), (0, vec![TxnState::Ongoing]));
    assert!(
        c.get(ID)
            .unwrap()
            .partitions
            .contains(&("__consumer_offsets".into(), 7))
    );
    let stale = req.with_producer_epoch(epoch + 3);
    let (body, _, _) = outcome(&c.add_offsets(&ctx(3), &stale, "__consumer_offsets", 7, 5));
    let Some(ResponseKind::AddOffsetsToTxn(r)) = body else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::ProducerFenced.code());
}

#[test]
fn a_restart_finishes_prepared_transactions_from_the_log() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, epoch) = init(&mut c, &mut ids, 0);
    let mut log = Vec::new();
    let mut keep = |actions: Vec<TxnAction>| {
        for a in actions {
            if let TxnAction::Persist { record, .. } = a {
                log.push(record);
            }
        }
    };
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(ID)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let topics = vec![
        AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![0, 1]),
    ];
    let add_req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(ID)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    keep(c.add_partitions(&ctx(3), &add_req, 1, &|_, _| true));
    keep(c.end_txn(&ctx(3), &req, 2));
    // "Crash" after the PrepareCommit record: a new coordinator finds the decision.
    let mut again = TxnCoordinator::new(c.config().clone());
    let part = again.partition_for(ID);
    let actions = again.load_partition(part, &log);
    let (_, _, markers) = outcome(&actions);
    assert_eq!(markers.len(), 1);
    assert!(markers[0].commit);
    assert_eq!(markers[0].partitions.len(), 2);
    assert_eq!(again.get(ID).unwrap().state, TxnState::PrepareCommit);
    outcome(&again.markers_written(&markers[0], 3, &mut ids));
    assert_eq!(again.get(ID).unwrap().state, TxnState::CompleteCommit);
    // The producer index is rebuilt too.
    assert_eq!(
        again.verify(pid, epoch, "t", 0),
        Err(ResponseError::InvalidTxnState)
    );
}

#[test]
fn describe_and_list() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, epoch) = init(&mut c, &mut ids, 0);
    add(&mut c, pid, epoch, &[("t", 2)], 100);
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s(ID)), TransactionalId(s("nope"))]);
    let ResponseKind::DescribeTransactions(r) = c.describe(&ctx(0), &req).body else {
        panic!()
    };
    assert_eq!(
        r.transaction_states[0].transaction_state.as_str(),
        "Ongoing"
    );
    assert_eq!(r.transaction_states[0].transaction_start_time_ms, 100);
    assert_eq!(r.transaction_states[0].topics[0].partitions, vec![2]);
    assert_eq!(
        r.transaction_states[1].error_code,
        ResponseError::TransactionalIdNotFound.code()
    );
    let list = |filters: Vec<&str>, duration: i64| {
        let req = ListTransactionsRequest::default()
            .with_state_filters(filters.into_iter().map(s).collect())
            .with_duration_filter(duration);
        let ResponseKind::ListTransactions(r) = c.list(&ctx(1), &req, 1_000).body else {
            panic!()
        };
        (r.transaction_states.len(), r.unknown_state_filters.len())
    };
    assert_eq!(list(vec![], -1), (1, 0));
    assert_eq!(list(vec!["Ongoing"], -1), (1, 0));
    assert_eq!(list(vec!["Empty", "Bogus"], -1), (0, 1));
    assert_eq!(list(vec![], 900), (1, 0));
    assert_eq!(list(vec![], 901), (0, 0));
}

#[test]
fn an_idle_transactional_id_expires_and_starts_over() {
    let (mut c, mut ids) = coordinator();
    let (_, pid, _) = init(&mut c, &mut ids, 0);
    // While a transaction is open the id does not expire (the timeout aborts it first).
    assert_eq!(c.poll_timeout(), Some(1_000_000));
    assert!(c.tick(999_999, &mut ids).is_empty());
    let actions = c.tick(1_000_000, &mut ids);
    assert!(matches!(
        &actions[..],
        [TxnAction::Persist {
            record: StoreRecord::Transaction { value: None, .. },
            ..
        }]
    ));
    assert!(c.get(ID).is_none());
    assert_eq!(c.poll_timeout(), None);
    let (e, pid2, epoch) = init(&mut c, &mut ids, 1_000_001);
    assert_eq!((e, epoch), (0, 0));
    assert_ne!(pid2, pid, "a new producer id after expiry");
}
