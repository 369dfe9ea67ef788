//! Cluster mode without Raft or sockets: three brokers on [`MemStorage`], and a test "log" that
//! commits every proposal in order and applies it on all three, as Raft would.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, MetadataRequest, ProduceRequest, ProduceResponse, RequestKind,
    ResponseKind, TopicName,
};

use super::group_tests::{ctx, idempotent_batch, s, sync};
use super::{Broker, BrokerConfig, GroupChange, META_GROUP, Reply};
use crate::storage::{MemStorage, Storage};

struct Cluster {
    fs: Vec<MemStorage>,
    brokers: Vec<Broker>,
    /// Committed entries per group: (index, term, data).
    logs: BTreeMap<u64, Vec<(u64, u64, Vec<u8>)>>,
    term: u64,
    hosted: Vec<Vec<GroupChange>>,
    /// Answers to parked requests taken from the brokers and not claimed yet.
    answers: Vec<Vec<super::Deferred>>,
}

fn open(fs: &MemStorage, node: i32) -> Broker {
    let config = BrokerConfig {
        node_id: node,
        advertised_port: 9090 + node,
        offsets_partitions: 2,
        cluster_members: Some(vec![1, 2, 3]),
        // Replica catch-up sources are found by this listener's registered address.
        listeners: std::collections::BTreeMap::from([(
            crate::security::REPLICA_LISTENER.to_string(),
            ("127.0.0.1".to_string(), 9190 + node),
        )]),
        ..BrokerConfig::default()
    };
    Broker::open(
        Arc::new(fs.clone()) as Arc<dyn Storage>,
        config,
        node as u64,
        0,
    )
    .unwrap()
}

impl Cluster {
    fn new() -> Self {
        let fs: Vec<MemStorage> = (0..3).map(|_| MemStorage::new()).collect();
        let brokers = fs
            .iter()
            .enumerate()
            .map(|(i, f)| open(f, i as i32 + 1))
            .collect();
        let mut c = Cluster {
            fs,
            brokers,
            logs: BTreeMap::new(),
            term: 1,
            hosted: vec![Vec::new(); 3],
            answers: (0..3).map(|_| Vec::new()).collect(),
        };
        for b in &mut c.brokers {
            b.meta_role_changed(1, 1);
        }
        for _ in 0..3 {
            for b in &mut c.brokers {
                b.cluster_tick(true, 0, 0);
            }
            c.run();
        }
        c
    }

    /// Commits every queued proposal (in node order) and applies it everywhere, until quiet.
    fn run(&mut self) {
        loop {
            let mut any = false;
            for i in 0..3 {
                for p in self.brokers[i].take_proposals() {
                    any = true;
                    let log = self.logs.entry(p.group).or_default();
                    let index = log.len() as u64 + 1;
                    log.push((index, self.term, p.data.clone()));
                    for b in &mut self.brokers {
                        if p.group == META_GROUP {
                            b.apply_meta(&[(index, p.data.clone())], 0);
                        } else {
                            b.apply_partition(p.group, &[(index, self.term, p.data.clone())], 0);
                        }
                        b.finish_apply();
                    }
                }
                let changes = self.brokers[i].take_group_changes();
                self.hosted[i].extend(changes);
            }
            if !any {
                return;
            }
        }
    }

    /// Commits `data` to `group`'s log and applies it on the brokers `on` only (the others
    /// are down or behind).
    fn commit_on(&mut self, group: u64, data: Vec<u8>, on: &[usize]) {
        let log = self.logs.entry(group).or_default();
        let index = log.len() as u64 + 1;
        log.push((index, 1, data.clone()));
        for &i in on {
            self.brokers[i].apply_partition(group, &[(index, 1, data.clone())], 0);
            self.brokers[i].finish_apply();
        }
    }

    fn lead(&mut self, group: u64, leader: u64) {
        for b in &mut self.brokers {
            let last = self.logs.get(&group).map_or(0, |l| l.len() as u64);
            b.partition_role_changed(group, leader, self.term, last, 0);
        }
        self.run();
    }

    /// A cluster with topic `t` (one partition, RF 3) led by node `leader`; returns its group.
    fn with_topic_led_by(leader: u64) -> (Cluster, u64) {
        let mut c = Cluster::new();
        create_topic(&mut c, "t", 1);
        let g = c.group_of("t", 0);
        c.lead(g, leader);
        (c, g)
    }

    fn group_of(&self, topic: &str, p: i32) -> u64 {
        self.brokers[0]
            .meta()
            .unwrap()
            .partition(topic, p)
            .unwrap()
            .group
    }
}

fn produce_req(topic: &str, batch: Bytes) -> RequestKind {
    produce_req_acks(topic, batch, -1)
}

fn produce_req_acks(topic: &str, batch: Bytes, acks: i16) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ]),
            ]),
    )
}

/// A Metadata response for every topic.
fn metadata(b: &mut Broker) -> kafka_protocol::messages::MetadataResponse {
    let r = b.handle(
        &ctx(ApiKey::Metadata, 12),
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
        0,
    );
    match r {
        Reply::Now(ResponseKind::Metadata(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn topic_of<'a>(
    m: &'a kafka_protocol::messages::MetadataResponse,
    name: &str,
) -> &'a kafka_protocol::messages::metadata_response::MetadataResponseTopic {
    m.topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        .unwrap_or_else(|| panic!("{name} not in {m:?}"))
}

/// A produce to `t`-0 the leader parks until its entry applies; returns the token.
fn produce_parked(b: &mut Broker, batch: Bytes) -> u64 {
    match b.handle(&ctx(ApiKey::Produce, 11), produce_req("t", batch), 0) {
        Reply::Parked { token } => token,
        other => panic!("a produce on the leader waits for its entry: {other:?}"),
    }
}

/// The parked produce's response, once its entry applied: committed in Raft (durable in a
/// majority of write-ahead logs), it waits for no sync of the local segment.
fn delivered(b: &mut Broker, token: u64) -> ProduceResponse {
    let d = b
        .take_deferred()
        .into_iter()
        .find(|d| d.token == token)
        .expect("answered after apply");
    assert_eq!(d.seq, 0, "a committed produce waits for no segment sync");
    match d.response {
        ResponseKind::Produce(r) => r,
        other => panic!("{other:?}"),
    }
}

fn create_topic(c: &mut Cluster, name: &str, partitions: i32) {
    let req = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(3),
    ]));
    let Reply::Parked { token } = c.brokers[1].handle(&ctx(ApiKey::CreateTopics, 7), req, 0) else {
        panic!("create topics waits for __meta")
    };
    c.run();
    let d = c.brokers[1].take_deferred();
    let ResponseKind::CreateTopics(r) = &d.iter().find(|d| d.token == token).unwrap().response
    else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    assert_eq!(r.topics[0].replication_factor, 3);
}

#[test]
fn a_produce_is_answered_after_apply_and_every_replica_holds_the_same_log() {
    let mut c = Cluster::new();
    // Every node registered, and the __meta leader created the offsets topic.
    assert_eq!(c.brokers[2].meta().unwrap().brokers.len(), 3);
    assert!(
        c.brokers[0]
            .meta()
            .unwrap()
            .topics
            .contains_key(super::OFFSETS_TOPIC)
    );
    create_topic(&mut c, "t", 1);
    let g = c.group_of("t", 0);
    for hosted in &c.hosted {
        assert!(hosted.iter().any(|h| matches!(h, GroupChange::Add { group, voters, .. } if *group == g && voters.len() == 3)));
    }
    c.lead(g, 2);

    // A follower refuses with a hint to the leader (KIP-951).
    let r = c.brokers[0].handle(
        &ctx(ApiKey::Produce, 11),
        produce_req("t", idempotent_batch(-1, 0, 3)),
        0,
    );
    let Reply::Now(ResponseKind::Produce(r)) = r else {
        panic!("{r:?}")
    };
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(p.current_leader.leader_id.0, 2);
    assert_eq!(p.current_leader.leader_epoch, 1);
    assert_eq!(r.node_endpoints[0].port, 9092);

    // The leader proposes; nothing is in any log until the entry commits and applies.
    let mut tokens = Vec::new();
    for i in 0..3 {
        tokens.push(produce_parked(
            &mut c.brokers[1],
            idempotent_batch(-1, 0, 2 + i),
        ));
        assert_eq!(
            c.brokers[1].partition("t", 0).unwrap().log_end_offset(),
            [0, 2, 5][i]
        );
        c.run();
    }
    // Answered and readable before any segment sync: committed in Raft is durable.
    let answers = c.brokers[1].take_deferred();
    assert!(answers.iter().all(|d| d.seq == 0));
    assert_eq!(c.brokers[1].partition("t", 0).unwrap().high_watermark(), 9);
    let bases: Vec<i64> = tokens
        .iter()
        .map(
            |t| match &answers.iter().find(|d| d.token == *t).unwrap().response {
                ResponseKind::Produce(r) => r.responses[0].partition_responses[0].base_offset,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(bases, vec![0, 2, 5]);
    for i in 0..3 {
        sync(&mut c.brokers[i]);
    }
    let files: Vec<_> =
        c.fs.iter()
            .map(|fs| fs.raw("logs/t-0/00000000000000000000.log").unwrap())
            .collect();
    assert_eq!(files[0], files[1]);
    assert_eq!(files[1], files[2]);
    // The leader epoch stamped into the batches is the entry's term.
    let h = crate::batch::BatchHeader::parse(&files[0]).unwrap();
    assert_eq!(h.partition_leader_epoch, 1);
}

#[test]
fn idempotent_retries_are_deduplicated_at_apply_on_every_replica() {
    let (mut c, _) = Cluster::with_topic_led_by(1);
    let pid = 42;
    for _ in 0..2 {
        // The second is a retry of the first (same producer, same sequence).
        let token = produce_parked(&mut c.brokers[0], idempotent_batch(pid, 0, 4));
        c.run();
        let r = delivered(&mut c.brokers[0], token);
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
    }
    for b in &c.brokers {
        assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 4);
    }
}

/// An entry a leader proposed before a crash can commit and apply after its restart. It must
/// not complete a request of the new start (proposal sequences used to restart at 0, so the
/// first new produce was answered with the old entry's offset; the replica simulator found it).
#[test]
fn a_restarted_leader_never_answers_a_new_produce_with_an_old_entry() {
    let (mut c, g) = Cluster::with_topic_led_by(1);
    // Node 1 proposes two records; the entry is in flight when node 1 crashes.
    produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 2));
    let old = c.brokers[0].take_proposals();
    assert_eq!(old.len(), 1);
    // Node 1 restarts, replays __meta and leads the partition again in a later term.
    let meta_log = c.logs[&META_GROUP].clone();
    let mut b = open(&c.fs[0], 1);
    let entries: Vec<(u64, Vec<u8>)> = meta_log.iter().map(|(i, _, d)| (*i, d.clone())).collect();
    b.apply_meta(&entries, 0);
    let _ = b.take_group_changes();
    c.brokers[0] = b;
    c.term = 2;
    c.lead(g, 1);
    // A new produce on the restarted leader.
    let token = produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 3));
    let new = c.brokers[0].take_proposals();
    // The old entry commits (the new leader's log held it) and applies everywhere first.
    for p in old.iter().chain(new.iter()) {
        let log = c.logs.entry(p.group).or_default();
        let index = log.len() as u64 + 1;
        log.push((index, c.term, p.data.clone()));
        for b in &mut c.brokers {
            b.apply_partition(p.group, &[(index, c.term, p.data.clone())], 0);
            b.finish_apply();
        }
        if std::ptr::eq(p, &old[0]) {
            sync(&mut c.brokers[0]);
            assert!(
                c.brokers[0]
                    .take_deferred()
                    .iter()
                    .all(|d| d.token != token),
                "the old entry answered the new request"
            );
        }
    }
    // The new request is answered with its own entry's offset: after the old entry's records.
    let r = delivered(&mut c.brokers[0], token);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    let before = c.brokers[1].partition("t", 0).unwrap().log_end_offset() - 3;
    assert_eq!(p.base_offset, before);
    assert!(before >= 2, "the old entry's two records come first");
}

#[test]
fn losing_leadership_fails_waiting_produces_with_a_hint() {
    let (mut c, g) = Cluster::with_topic_led_by(1);
    let token = produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 1));
    // The proposal is lost (never committed): node 3 takes over in a later term.
    let _ = c.brokers[0].take_proposals();
    c.term = 2;
    c.lead(g, 3);
    let d = c.brokers[0].take_deferred();
    let ResponseKind::Produce(r) = &d.iter().find(|d| d.token == token).unwrap().response else {
        panic!()
    };
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(p.current_leader.leader_id.0, 3);
    assert_eq!(p.current_leader.leader_epoch, 2);
    // Metadata on every node names the new leader and epoch.
    for b in &mut c.brokers {
        let m = metadata(b);
        let t = topic_of(&m, "t");
        assert_eq!(t.partitions[0].leader_id.0, 3);
        assert_eq!(t.partitions[0].leader_epoch, 2);
        assert_eq!(m.brokers.len(), 3);
        assert_eq!(m.controller_id.0, 1);
    }
}

#[test]
fn a_restart_truncates_to_the_applied_mark_and_skips_what_it_holds() {
    restart_truncates_to_the_applied_mark(false);
}

#[test]
fn a_restart_reads_the_per_partition_mark_of_an_earlier_version() {
    restart_truncates_to_the_applied_mark(true);
}

/// `legacy`: the mark is in the partition's own file, as earlier versions wrote it, instead of
/// the node's table.
fn restart_truncates_to_the_applied_mark(legacy: bool) {
    let (mut c, g) = Cluster::with_topic_led_by(1);
    for i in 0..2 {
        produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 2));
        c.run();
        if i == 0 {
            // The first entry is synced on node 2 and its mark written; the second is not.
            sync(&mut c.brokers[1]);
            for (_, path, bytes) in c.brokers[1].take_applied_marks() {
                if legacy {
                    // `group index end` in the table; `index end` in the partition's file.
                    let text = String::from_utf8(bytes).unwrap();
                    let (_, mark) = text.trim().split_once(' ').unwrap();
                    c.fs[1]
                        .write_file_atomic("logs/t-0/raft-applied", format!("{mark}\n").as_bytes())
                        .unwrap();
                } else {
                    c.fs[1].write_file_atomic(&path, &bytes).unwrap();
                }
            }
        }
    }
    let mark = c.brokers[1].durable_applied(g);
    assert!(mark > 0);
    // Node 2 restarts with its whole log on disk (4 records), but only 2 recorded applied.
    let meta_log = c.logs[&META_GROUP].clone();
    let mut b = open(&c.fs[1], 2);
    let entries: Vec<(u64, Vec<u8>)> = meta_log.iter().map(|(i, _, d)| (*i, d.clone())).collect();
    b.apply_meta(&entries, 0);
    let changes = b.take_group_changes();
    let add = changes
        .iter()
        .find_map(|ch| match ch {
            GroupChange::Add { group, applied, .. } if *group == g => Some(*applied),
            _ => None,
        })
        .unwrap();
    assert_eq!(add, mark);
    assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 2);
    // Raft re-delivers from before the mark (its commit index may lag): those are skipped.
    let all = c.logs[&g].clone();
    b.apply_partition(g, &all, 0);
    b.finish_apply();
    assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 4);
    sync(&mut b);
    sync(&mut c.brokers[0]);
    assert_eq!(
        c.fs[1].raw("logs/t-0/00000000000000000000.log"),
        c.fs[0].raw("logs/t-0/00000000000000000000.log")
    );
}

#[test]
fn replaying_meta_after_a_restart_never_drops_a_recreated_topic() {
    let mut c = Cluster::new();
    create_topic(&mut c, "t", 1);
    let req = RequestKind::DeleteTopics(
        kafka_protocol::messages::DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(s("t"))]),
    );
    let Reply::Parked { .. } = c.brokers[0].handle(&ctx(ApiKey::DeleteTopics, 4), req, 0) else {
        panic!()
    };
    c.run();
    assert!(
        c.brokers[2].partition("t", 0).is_err(),
        "deleted on every node"
    );
    create_topic(&mut c, "t", 1);
    let g = c.group_of("t", 0);
    c.lead(g, 1);
    produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 3));
    c.run();
    sync(&mut c.brokers[1]);
    for (_, path, bytes) in c.brokers[1].take_applied_marks() {
        c.fs[1].write_file_atomic(&path, &bytes).unwrap();
    }
    let id = c.brokers[1].topics()["t"].id;
    // Restart node 2: the replay creates and deletes the first "t" before creating this one.
    let mut b = open(&c.fs[1], 2);
    let entries: Vec<(u64, Vec<u8>)> = c.logs[&META_GROUP]
        .iter()
        .map(|(i, _, d)| (*i, d.clone()))
        .collect();
    for e in &entries {
        b.apply_meta(std::slice::from_ref(e), 0);
    }
    assert_eq!(b.topics()["t"].id, id);
    assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 3);
}

/// The parked CreateTopics `token` was answered REQUEST_TIMED_OUT.
fn assert_timed_out(b: &mut Broker, token: u64) {
    let d = b.take_deferred();
    let ResponseKind::CreateTopics(r) = &d.iter().find(|d| d.token == token).unwrap().response
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::RequestTimedOut.code()
    );
}

/// CreateTopics for one topic `t` with one partition and three replicas.
fn create_t_rf3() -> RequestKind {
    RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(3),
    ]))
}

#[test]
fn a_wall_clock_stepped_back_does_not_stall_a_timeout() {
    // Timers run on the monotonic clock the replica core hands in: with the wall clock stepped
    // back an hour just after the request arrived, the wait still ends 30 s later.
    let fs = MemStorage::new();
    let mut b = open(&fs, 1);
    let wall = 3_600_000;
    b.cluster_tick(false, 1_000, wall);
    let req = create_t_rf3();
    let Reply::Parked { token } = b.handle(&ctx(ApiKey::CreateTopics, 7), req, wall) else {
        panic!()
    };
    let stepped_back = wall - 3_600_000;
    b.cluster_tick(false, 30_000, stepped_back + 29_000);
    assert!(b.take_deferred().is_empty(), "not yet 30 s");
    b.cluster_tick(false, 31_100, stepped_back + 30_100);
    assert_timed_out(&mut b, token);
}

#[test]
fn an_admin_request_waits_for_a_meta_leader_and_times_out_without_one() {
    let fs = MemStorage::new();
    let mut b = open(&fs, 1);
    // No `__meta` leader yet: raft-rs drops the proposal.
    let req = create_t_rf3();
    let Reply::Parked { token } = b.handle(&ctx(ApiKey::CreateTopics, 7), req, 0) else {
        panic!()
    };
    // Dropped proposals are proposed again on every tick while the request waits.
    for now in [200, 400] {
        let p = b.take_proposals();
        assert_eq!(p.len(), 1, "proposed again at {now}");
        b.proposal_dropped(p[0].group, &p[0].data);
        assert!(b.take_deferred().is_empty());
        b.cluster_tick(false, now as u64, now);
    }
    // Still no leader after 30 s: the client hears REQUEST_TIMED_OUT.
    b.cluster_tick(false, 31_000, 31_000);
    assert_timed_out(&mut b, token);
}

#[test]
fn compaction_waits_for_the_hint_and_for_the_recorded_applied_mark() {
    let (mut c, g) = Cluster::with_topic_led_by(1);
    for _ in 0..3 {
        produce_parked(&mut c.brokers[0], idempotent_batch(-1, 0, 2));
        c.run();
    }
    let b = &mut c.brokers[1];
    sync(b);
    // The leader's hint: every replica holds entries up to 3.
    let hint = crate::cluster::encode_compact_hint(3);
    let index = c.logs[&g].len() as u64 + 1;
    b.apply_partition(g, &[(index, 1, hint)], 0);
    // Durable, hinted, but the applied mark was not handed out to be written yet: a restart
    // would find its mark below the compacted log.
    assert!(b.take_compactions(1).is_empty());
    assert!(!b.take_applied_marks().is_empty());
    let due = b.take_compactions(1);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].0, due[0].1), (g, 3));
    // The image kept with the snapshot: the durable applied mark and the log end there.
    let image = crate::cluster::PartitionImage::decode(&due[0].2).unwrap();
    assert_eq!(image.applied_index, b.durable_applied(g));
    assert_eq!((image.start_offset, image.end_offset), (0, 6));
    // Not again for less than a step.
    assert!(b.take_compactions(1).is_empty());
}

#[test]
fn topic_config_changes_go_through_meta_to_every_replica() {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut c = Cluster::new();
    create_topic(&mut c, "t", 1);
    let req = RequestKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_config_operation(0)
                        .with_value(Some(s("60000"))),
                ]),
        ]),
    );
    let Reply::Parked { token } =
        c.brokers[2].handle(&ctx(ApiKey::IncrementalAlterConfigs, 1), req, 0)
    else {
        panic!("a config change waits for __meta")
    };
    // Nothing changes anywhere before the change is committed.
    assert!(c.brokers[2].topics()["t"].configs.is_empty());
    c.run();
    let d = c.brokers[2].take_deferred();
    let ResponseKind::IncrementalAlterConfigs(r) =
        &d.iter().find(|d| d.token == token).unwrap().response
    else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    for b in &c.brokers {
        assert_eq!(b.topics()["t"].configs["retention.ms"], "60000");
        assert_eq!(
            b.meta().unwrap().topics["t"].configs["retention.ms"],
            "60000"
        );
    }
}

#[test]
fn replication_throttle_rates_are_dynamic_broker_configs_kept_in_meta() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
    const RATE: &str = "follower.replication.throttled.rate";
    let mut c = Cluster::new();
    create_topic(&mut c, "t", 1);
    let set = |name: &str, key: &str, op: i8, value: Option<&str>| {
        RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s(name))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(s(key))
                            .with_config_operation(op)
                            .with_value(value.map(s)),
                    ]),
            ]),
        )
    };
    let alter = |c: &mut Cluster, req: RequestKind| -> (i16, Option<String>) {
        match c.brokers[1].handle(&ctx(ApiKey::IncrementalAlterConfigs, 1), req, 0) {
            Reply::Now(ResponseKind::IncrementalAlterConfigs(r)) => (
                r.responses[0].error_code,
                r.responses[0].error_message.as_ref().map(|m| m.to_string()),
            ),
            Reply::Parked { token } => {
                c.run();
                let d = c.brokers[1].take_deferred();
                let Some(ResponseKind::IncrementalAlterConfigs(r)) =
                    d.into_iter().find(|d| d.token == token).map(|d| d.response)
                else {
                    panic!("no answer")
                };
                (r.responses[0].error_code, None)
            }
            other => panic!("{other:?}"),
        }
    };
    let describe = |c: &mut Cluster, node: usize, name: &str| -> Vec<(String, String, i8)> {
        let req =
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s(name))
                    .with_configuration_keys(None),
            ]));
        let Reply::Now(ResponseKind::DescribeConfigs(r)) =
            c.brokers[node].handle(&ctx(ApiKey::DescribeConfigs, 4), req, 0)
        else {
            panic!()
        };
        assert_eq!(r.results[0].error_code, 0, "{r:?}");
        r.results[0]
            .configs
            .iter()
            .filter(|e| e.name.contains("throttled.rate"))
            .map(|e| {
                (
                    e.name.to_string(),
                    e.value.as_ref().unwrap().to_string(),
                    e.config_source,
                )
            })
            .collect()
    };
    // Refused as Kafka refuses them: a static config, a negative rate.
    let (code, msg) = alter(&mut c, set("2", "num.partitions", 0, Some("3")));
    assert_eq!(code, ResponseError::InvalidRequest.code(), "{msg:?}");
    let (code, _) = alter(&mut c, set("2", RATE, 0, Some("-1")));
    assert_eq!(code, ResponseError::InvalidConfig.code());
    // Set on node 2 (through node 2) and cluster-wide: every node's __meta has both.
    assert_eq!(alter(&mut c, set("2", RATE, 0, Some("1000"))).0, 0);
    assert_eq!(alter(&mut c, set("", RATE, 0, Some("5000"))).0, 0);
    for b in &c.brokers {
        let m = b.meta().unwrap();
        assert_eq!(m.broker_configs[&2][RATE], "1000");
        assert_eq!(m.broker_configs[&-1][RATE], "5000");
    }
    // Node 2 reports its own rate; node 1 the cluster-wide one; the default resource only that.
    let d = describe(&mut c, 1, "2");
    assert!(d.contains(&(RATE.into(), "1000".into(), 2)), "{d:?}");
    assert!(describe(&mut c, 0, "1").contains(&(RATE.into(), "5000".into(), 3)));
    assert_eq!(
        describe(&mut c, 0, ""),
        vec![(RATE.into(), "5000".into(), 3)]
    );
    // Deleted: back to Kafka's default, unlimited.
    assert_eq!(alter(&mut c, set("2", RATE, 1, None)).0, 0);
    assert!(describe(&mut c, 1, "2").contains(&(RATE.into(), "5000".into(), 3)));
    assert_eq!(alter(&mut c, set("", RATE, 1, None)).0, 0);
    assert!(describe(&mut c, 1, "2").contains(&(RATE.into(), i64::MAX.to_string(), 5)));
}

#[test]
fn a_replica_behind_the_compacted_log_copies_records_from_another_replica() {
    use super::InstallStep;
    let (mut c, g) = Cluster::with_topic_led_by(1);
    // Node 3 is down while the others take idempotent writes.
    // Commits an entry and applies it on the nodes `on` only.
    let apply = |c: &mut Cluster, data: Vec<u8>, on: &[usize]| c.commit_on(g, data, on);
    for seq in 0..5 {
        produce_parked(&mut c.brokers[0], idempotent_batch(42, seq * 2, 2));
        for p in c.brokers[0].take_proposals() {
            apply(&mut c, p.data, &[0, 1]);
        }
    }
    for i in 0..2 {
        sync(&mut c.brokers[i]);
        let _ = c.brokers[i].take_applied_marks();
    }
    // The leader hints past node 3 (it was not active) and compacts: node 3 needs a snapshot.
    let hinted = c.logs[&g].len() as u64;
    apply(&mut c, crate::cluster::encode_compact_hint(hinted), &[0, 1]);
    let due = c.brokers[0].take_compactions(1);
    let image = crate::cluster::PartitionImage::decode(&due[0].2).unwrap();
    assert_eq!(image.end_offset, 10);

    // Node 3 starts copying, then crashes before the install completes: it comes back with its
    // applied mark where it was and starts over from there (the copy was never recorded).
    let InstallStep::Fetch { request, .. } = c.brokers[2].install_begin(g, image.clone(), 0) else {
        panic!("node 3 lacks records")
    };
    let response = c.brokers[1]
        .fetch(&request, super::REPLICA_FETCH_VERSION)
        .response;
    c.brokers[2].install_fetched(g, &response, 0).unwrap();
    assert_eq!(c.brokers[2].partition("t", 0).unwrap().log_end_offset(), 10);
    sync(&mut c.brokers[2]);
    c.brokers[2] = open(&c.fs[2], 3);
    let meta: Vec<(u64, Vec<u8>)> = c.logs[&META_GROUP]
        .iter()
        .map(|(i, _, d)| (*i, d.clone()))
        .collect();
    c.brokers[2].apply_meta(&meta, 0);
    assert_eq!(c.brokers[2].partition("t", 0).unwrap().log_end_offset(), 0);
    c.lead(g, 1);

    // Node 3 installs it, copying from node 2 (a follower: replicas serve replica fetches).
    let mut step = c.brokers[2].install_begin(g, image, 0);
    assert!(c.brokers[2].installing(g));
    let mut rounds = 0;
    while let InstallStep::Fetch {
        request, sources, ..
    } = step
    {
        assert_eq!(sources[0].0, 1, "the leader is asked first");
        let response = c.brokers[1]
            .fetch(&request, super::REPLICA_FETCH_VERSION)
            .response;
        c.brokers[2].install_fetched(g, &response, 0).unwrap();
        step = c.brokers[2].install_next(g);
        rounds += 1;
    }
    assert_eq!(step, InstallStep::Done);
    assert!(rounds >= 1);
    c.brokers[2].install_finish(g, 0);
    assert!(!c.brokers[2].installing(g));
    // Raft then hands over everything after its snapshot point: what the image covered is
    // skipped, and a retry of the last idempotent batch is deduplicated on every replica.
    let all = c.logs[&g].clone();
    c.brokers[2].apply_partition(g, &all, 0);
    c.brokers[2].finish_apply();
    produce_parked(&mut c.brokers[0], idempotent_batch(42, 8, 2));
    produce_parked(&mut c.brokers[0], idempotent_batch(42, 10, 3));
    for p in c.brokers[0].take_proposals() {
        apply(&mut c, p.data, &[0, 1, 2]);
    }
    for i in 0..3 {
        sync(&mut c.brokers[i]);
        assert_eq!(c.brokers[i].partition("t", 0).unwrap().log_end_offset(), 13);
    }
    assert_eq!(
        c.fs[2].raw("logs/t-0/00000000000000000000.log"),
        c.fs[0].raw("logs/t-0/00000000000000000000.log")
    );
    // Its applied mark moved to the image's index with the copied data durable.
    assert!(c.brokers[2].durable_applied(g) > hinted);
}

#[test]
fn acks_1_is_answered_once_the_leader_persisted_with_the_offset_apply_assigns() {
    let (mut c, g) = Cluster::with_topic_led_by(1);
    let plain =
        |n: usize| crate::batch::tests::batch(n, kafka_protocol::records::Compression::None, 0);
    // Two acks=1 produces of plain batches and one of an idempotent producer, in flight at once.
    let mut tokens = Vec::new();
    for (batch, acks) in [
        (plain(3), 1),
        (idempotent_batch(9, 0, 2), 1),
        (plain(4), 1),
        (plain(2), -1),
    ] {
        match c.brokers[0].handle(
            &ctx(ApiKey::Produce, 9),
            produce_req_acks("t", batch, acks),
            0,
        ) {
            Reply::Parked { token } => tokens.push(token),
            other => panic!("{other:?}"),
        }
    }
    // The runtime proposes them (Raft indexes follow the log) and persists them on the leader.
    let proposals = c.brokers[0].take_proposals();
    let first = c.logs.get(&g).map_or(0, |l| l.len() as u64) + 1;
    let indexed: Vec<(u64, u64, u64)> = proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let e = crate::cluster::PartitionEntry::decode(&p.data).unwrap();
            (g, e.seq, first + i as u64)
        })
        .collect();
    c.brokers[0].entries_indexed(&indexed);
    c.brokers[0].leader_persisted(g, first + 3);
    let early = c.brokers[0].take_deferred();
    // Only the first is answered: the idempotent batch may turn out a duplicate, so what
    // follows it cannot be predicted; acks=all waits for the commit.
    assert_eq!(early.len(), 1, "{early:?}");
    assert_eq!(early[0].token, tokens[0]);
    assert_eq!(early[0].seq, 0, "no segment sync awaited");
    let ResponseKind::Produce(r) = &early[0].response else {
        panic!()
    };
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
    assert_eq!(c.brokers[0].partition("t", 0).unwrap().log_end_offset(), 0);
    // Commit and apply: the early answer's offset is where the batch landed; the others are
    // answered now, once, at their applied offsets.
    for (i, p) in proposals.into_iter().enumerate() {
        let index = first + i as u64;
        c.logs
            .entry(g)
            .or_default()
            .push((index, 1, p.data.clone()));
        for b in &mut c.brokers {
            b.apply_partition(g, &[(index, 1, p.data.clone())], 0);
            b.finish_apply();
        }
    }
    let rest = delivered_all(&mut c.brokers[0]);
    let bases: Vec<(u64, i64)> = rest
        .iter()
        .map(|(t, r)| (*t, r.responses[0].partition_responses[0].base_offset))
        .collect();
    assert_eq!(bases, vec![(tokens[1], 3), (tokens[2], 5), (tokens[3], 9)]);
    let log = c.brokers[0].partition("t", 0).unwrap();
    assert_eq!(log.log_end_offset(), 11);
    // Once nothing is in flight, predictions resume from the log end.
    let Reply::Parked { token } = c.brokers[0].handle(
        &ctx(ApiKey::Produce, 9),
        produce_req_acks("t", plain(1), 1),
        0,
    ) else {
        panic!()
    };
    let p = c.brokers[0].take_proposals().remove(0);
    let e = crate::cluster::PartitionEntry::decode(&p.data).unwrap();
    c.brokers[0].entries_indexed(&[(g, e.seq, first + 4)]);
    c.brokers[0].leader_persisted(g, first + 4);
    let d = c.brokers[0].take_deferred();
    assert_eq!(d[0].token, token);
    let ResponseKind::Produce(r) = &d[0].response else {
        panic!()
    };
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 11);
}

/// Every answered produce after a sync, in delivery order: (token, response).
fn delivered_all(b: &mut Broker) -> Vec<(u64, ProduceResponse)> {
    sync(b);
    b.take_deferred()
        .into_iter()
        .map(|d| match d.response {
            ResponseKind::Produce(r) => (d.token, r),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn delete_records_goes_through_the_partition_log_to_every_replica() {
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let req = |offset: i64| {
        RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(offset),
                ]),
        ]))
    };
    let answer = |r: Reply| match r {
        Reply::Now(ResponseKind::DeleteRecords(r)) => r.topics[0].partitions[0].clone(),
        other => panic!("{other:?}"),
    };
    let (mut c, _) = Cluster::with_topic_led_by(2);
    for _ in 0..3 {
        produce_parked(&mut c.brokers[1], idempotent_batch(-1, 0, 2));
        c.run();
    }
    sync(&mut c.brokers[1]);
    // A follower refuses; past the high watermark is out of range.
    let r = answer(c.brokers[0].handle(&ctx(ApiKey::DeleteRecords, 2), req(2), 0));
    assert_eq!(r.error_code, ResponseError::NotLeaderOrFollower.code());
    let r = answer(c.brokers[1].handle(&ctx(ApiKey::DeleteRecords, 2), req(7), 0));
    assert_eq!(r.error_code, ResponseError::OffsetOutOfRange.code());
    // On the leader it waits for the entry, then every replica starts its log at 4.
    let Reply::Parked { token } = c.brokers[1].handle(&ctx(ApiKey::DeleteRecords, 2), req(4), 0)
    else {
        panic!("DeleteRecords waits for its entry")
    };
    assert_eq!(
        c.brokers[1].partition("t", 0).unwrap().log_start_offset(),
        0
    );
    c.run();
    let d = c.brokers[1].take_deferred();
    let ResponseKind::DeleteRecords(r) = &d.iter().find(|d| d.token == token).unwrap().response
    else {
        panic!()
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 4));
    for b in &c.brokers {
        assert_eq!(b.partition("t", 0).unwrap().log_start_offset(), 4);
    }
}

#[test]
fn acks_all_is_refused_while_the_isr_is_below_min_insync_replicas() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let mut c = Cluster::new();
    let req = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(s("min.insync.replicas"))
                    .with_value(Some(s("3"))),
            ]),
    ]));
    assert!(matches!(
        c.brokers[0].handle(&ctx(ApiKey::CreateTopics, 7), req, 0),
        Reply::Parked { .. }
    ));
    c.run();
    let g = c.group_of("t", 0);
    c.lead(g, 1);
    let produce = |b: &mut Broker, acks: i16| {
        b.handle(
            &ctx(ApiKey::Produce, 9),
            produce_req_acks("t", idempotent_batch(-1, 0, 1), acks),
            0,
        )
    };
    assert!(matches!(
        produce(&mut c.brokers[0], -1),
        Reply::Parked { .. }
    ));
    // The leader reports node 3 out of sync: Metadata says so on every node, acks=all is
    // refused, acks=1 is not.
    c.brokers[0].report_isr(g, 1, vec![2, 1], 0);
    c.run();
    for b in &mut c.brokers {
        let m = metadata(b);
        let t = topic_of(&m, "t");
        let isr: Vec<i32> = t.partitions[0].isr_nodes.iter().map(|b| b.0).collect();
        assert_eq!(isr, vec![1, 2]);
        assert_eq!(t.partitions[0].replica_nodes.len(), 3);
    }
    let Reply::Now(ResponseKind::Produce(r)) = produce(&mut c.brokers[0], -1) else {
        panic!("refused at once")
    };
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::NotEnoughReplicas.code()
    );
    assert!(matches!(
        produce(&mut c.brokers[0], 1),
        Reply::Parked { .. }
    ));
    // Only the recorded leader's reports count; node 3 back in sync lifts the refusal.
    c.brokers[1].report_isr(g, 1, vec![2], 0);
    c.brokers[0].report_isr(g, 1, vec![1, 2, 3], 0);
    c.run();
    assert!(matches!(
        produce(&mut c.brokers[0], -1),
        Reply::Parked { .. }
    ));
}

#[test]
fn the_leader_refuses_what_standalone_refuses_and_proposes_nothing() {
    // One validation path (`partition_refusal`) for both modes: the refusals
    // `txn_tests::produces_outside_the_transaction_and_from_zombies_are_refused` sees, here on a cluster leader.
    let (mut c, _) = Cluster::with_topic_led_by(1);
    let pid = 7;
    let cases = [
        (
            "a client's control batch",
            Bytes::from(crate::batch::control_batch(pid, 0, true, 0, 2)),
            Some("tx"),
            ResponseError::InvalidRecord,
        ),
        (
            "transactional records without their transactional id",
            super::txn_tests::batch(pid, 0, 0, &["no"], true),
            None,
            ResponseError::InvalidRequest,
        ),
    ];
    for (what, batch, txn_id, want) in cases {
        let req = match produce_req("t", batch) {
            RequestKind::Produce(r) => RequestKind::Produce(r.with_transactional_id(
                txn_id.map(|t| kafka_protocol::messages::TransactionalId(s(t))),
            )),
            _ => unreachable!(),
        };
        let Reply::Now(ResponseKind::Produce(r)) =
            c.brokers[0].handle(&ctx(ApiKey::Produce, 9), req, 0)
        else {
            panic!("{what}: refused at once")
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            want.code(),
            "{what}"
        );
        assert!(c.brokers[0].take_proposals().is_empty(), "{what}: proposed");
    }
}

#[test]
fn a_lost_leader_record_is_proposed_again_before_the_isr() {
    let mut c = Cluster::new();
    create_topic(&mut c, "t", 1);
    let g = c.group_of("t", 0);
    // Node 1 becomes leader, but its Leader record never reaches `__meta` (no meta leader).
    let last = c.logs.get(&g).map_or(0, |l| l.len() as u64);
    for b in &mut c.brokers {
        b.partition_role_changed(g, 1, 1, last, 0);
    }
    let _ = c.brokers[0].take_proposals();
    c.brokers[0].report_isr(g, 1, vec![1, 2], 0);
    c.run();
    let mp = c.brokers[2]
        .meta()
        .unwrap()
        .partition("t", 0)
        .unwrap()
        .clone();
    assert_eq!(
        (mp.leader, mp.leader_epoch),
        (1, 1),
        "re-proposed and applied"
    );
    assert!(
        mp.isr.is_empty(),
        "the ISR waits for the leader record: {mp:?}"
    );
    c.brokers[0].report_isr(g, 1, vec![1, 2], 0);
    c.run();
    let mp = c.brokers[2]
        .meta()
        .unwrap()
        .partition("t", 0)
        .unwrap()
        .clone();
    assert_eq!(mp.in_sync(), &[1, 2]);
}

/// CreateTopics through node 2 with a manual assignment or configs; the parked response.
/// Creates topic `name` (one partition, RF 3) with `configs`; returns its group.
fn create_configured(c: &mut Cluster, name: &str, configs: &[(&str, &str)]) -> u64 {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(s(k))
                .with_value(Some(s(v)))
        })
        .collect();
    let r = create_topic_with(
        c,
        CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(configs),
    );
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    c.group_of(name, 0)
}

fn create_topic_with(
    c: &mut Cluster,
    topic: CreatableTopic,
) -> kafka_protocol::messages::CreateTopicsResponse {
    let req = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic]));
    match c.brokers[1].handle(&ctx(ApiKey::CreateTopics, 7), req, 0) {
        Reply::Now(ResponseKind::CreateTopics(r)) => r,
        Reply::Parked { token } => {
            c.run();
            let d = c.brokers[1].take_deferred();
            let ResponseKind::CreateTopics(r) =
                d.into_iter().find(|d| d.token == token).unwrap().response
            else {
                panic!()
            };
            r
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn recompression_and_log_append_time_leave_every_replica_byte_identical() {
    let mut c = Cluster::new();
    let g = create_configured(
        &mut c,
        "z",
        &[
            ("compression.type", "zstd"),
            ("compression.zstd.level", "5"),
            ("message.timestamp.type", "LogAppendTime"),
        ],
    );
    c.lead(g, 1);
    // The leader proposes at its time; each replica applies later, at a time of its own.
    let leader_ms = 1_700_000_000_000;
    let mut tokens = Vec::new();
    for (i, codec) in [
        kafka_protocol::records::Compression::Gzip,
        kafka_protocol::records::Compression::None,
        kafka_protocol::records::Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let batch = if i == 0 {
            idempotent_batch(42, 0, 3)
        } else {
            crate::batch::tests::batch(4, codec, leader_ms - 10)
        };
        let req = produce_req("z", batch);
        let Reply::Parked { token } =
            c.brokers[0].handle(&ctx(ApiKey::Produce, 11), req, leader_ms + i as i64)
        else {
            panic!("parked on the leader")
        };
        tokens.push((token, leader_ms + i as i64));
    }
    let proposals = c.brokers[0].take_proposals();
    assert_eq!(proposals.len(), 3);
    for p in proposals {
        let log = c.logs.entry(p.group).or_default();
        let index = log.len() as u64 + 1;
        log.push((index, c.term, p.data.clone()));
        for (n, b) in c.brokers.iter_mut().enumerate() {
            b.apply_partition(
                p.group,
                &[(index, c.term, p.data.clone())],
                5_000 * n as i64,
            );
            b.finish_apply();
        }
    }
    let answered = delivered_all(&mut c.brokers[0]);
    for b in &mut c.brokers {
        sync(b);
    }
    for (token, at) in tokens {
        let (_, r) = answered.iter().find(|(t, _)| *t == token).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "{p:?}");
        assert_eq!(p.log_append_time_ms, at);
    }
    let segment = "logs/z-0/00000000000000000000.log";
    let files: Vec<Vec<u8>> =
        c.fs.iter()
            .map(|f| f.read_file(segment).unwrap().unwrap())
            .collect();
    assert!(!files[0].is_empty());
    assert_eq!(files[0], files[1], "replicas 1 and 2 hold the same bytes");
    assert_eq!(files[0], files[2], "replicas 1 and 3 hold the same bytes");
    let mut at = 0usize;
    let mut n = 0;
    while at < files[0].len() {
        let h = crate::batch::validate(&files[0][at..]).expect("CRC valid after the rewrite");
        assert_eq!(h.compression(), 4, "stored as zstd");
        assert!(h.is_log_append_time());
        assert_eq!(
            h.max_timestamp,
            leader_ms + n,
            "the entry's time, not the replica's"
        );
        if n == 0 {
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 0, 0)
            );
        }
        at += h.total_bytes();
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn a_manual_replica_assignment_is_checked_and_honoured_by_meta() {
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    let mut c = Cluster::new();
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
    let r = create_topic_with(&mut c, assigned("m", &[&[3, 2], &[2, 1], &[1, 3]]));
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    assert_eq!(
        (r.topics[0].num_partitions, r.topics[0].replication_factor),
        (3, 2)
    );
    for b in &c.brokers {
        let t = &b.meta().unwrap().topics["m"];
        let replicas: Vec<Vec<i32>> = t.partitions.iter().map(|p| p.replicas.clone()).collect();
        assert_eq!(replicas, vec![vec![3, 2], vec![2, 1], vec![1, 3]]);
    }
    // Node 1 hosts partitions 1 and 2 only, and campaigns first for partition 2.
    let g2 = c.group_of("m", 2);
    let adds: Vec<(u64, bool)> = c.hosted[0]
        .iter()
        .filter_map(|h| match h {
            GroupChange::Add {
                group,
                topic,
                campaign,
                ..
            } if topic == "m" => Some((*group, *campaign)),
            _ => None,
        })
        .collect();
    assert_eq!(adds, vec![(c.group_of("m", 1), false), (g2, true)]);
    assert_eq!(c.brokers[0].topics()["m"].partitions.len(), 3);
    // Refused at once: a broker that is not a member, mixed replica counts.
    let r = create_topic_with(&mut c, assigned("x", &[&[1, 7]]));
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidReplicaAssignment.code()
    );
    assert_eq!(
        r.topics[0].error_message.as_deref(),
        Some(
            "The manual partition assignment includes broker 7, but no such broker is registered."
        )
    );
    let r = create_topic_with(&mut c, assigned("x", &[&[1, 2], &[3]]));
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::InvalidReplicaAssignment.code()
    );

    // CreatePartitions with an assignment, through __meta.
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    let req = RequestKind::CreatePartitions(
        kafka_protocol::messages::CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(TopicName(s("m")))
                .with_count(4)
                .with_assignments(Some(vec![
                    CreatePartitionsAssignment::default()
                        .with_broker_ids(vec![BrokerId(2), BrokerId(3)]),
                ])),
        ]),
    );
    let Reply::Parked { token } = c.brokers[2].handle(&ctx(ApiKey::CreatePartitions, 3), req, 0)
    else {
        panic!("waits for __meta")
    };
    c.run();
    let d = c.brokers[2].take_deferred();
    let ResponseKind::CreatePartitions(r) = &d.iter().find(|d| d.token == token).unwrap().response
    else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    for b in &c.brokers {
        assert_eq!(
            b.meta().unwrap().topics["m"].partitions[3].replicas,
            vec![2, 3]
        );
    }
}

#[test]
fn acks_1_waits_for_apply_when_the_batch_is_recompressed() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::records::Compression;
    let mut c = Cluster::new();
    let r = create_topic_with(
        &mut c,
        CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(3)
            .with_configs(
                [
                    ("compression.type", "uncompressed"),
                    ("max.message.bytes", "4000"),
                ]
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
            ),
    );
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    let g = c.group_of("t", 0);
    c.lead(g, 1);
    // Small gzipped, past max.message.bytes once decompressed.
    let big = crate::batch::tests::batch(400, Compression::Gzip, 0);
    assert!(big.len() < 4000, "{}", big.len());
    assert!(crate::batch::tests::batch(400, Compression::None, 0).len() > 4000);
    let mut tokens = Vec::new();
    for batch in [crate::batch::tests::batch(2, Compression::None, 0), big] {
        let Reply::Parked { token } =
            c.brokers[0].handle(&ctx(ApiKey::Produce, 9), produce_req_acks("t", batch, 1), 0)
        else {
            panic!()
        };
        tokens.push(token);
    }
    let proposals = c.brokers[0].take_proposals();
    let first = c.logs.get(&g).map_or(0, |l| l.len() as u64) + 1;
    let indexed: Vec<(u64, u64, u64)> = proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let e = crate::cluster::PartitionEntry::decode(&p.data).unwrap();
            (g, e.seq, first + i as u64)
        })
        .collect();
    c.brokers[0].entries_indexed(&indexed);
    c.brokers[0].leader_persisted(g, first + 1);
    let early = c.brokers[0].take_deferred();
    assert_eq!(
        early.iter().map(|d| d.token).collect::<Vec<_>>(),
        vec![tokens[0]],
        "the batch apply recompresses is not answered before apply"
    );
    for (i, p) in proposals.into_iter().enumerate() {
        let index = first + i as u64;
        c.logs
            .entry(g)
            .or_default()
            .push((index, 1, p.data.clone()));
        for b in &mut c.brokers {
            b.apply_partition(g, &[(index, 1, p.data.clone())], 0);
            b.finish_apply();
        }
    }
    let rest = delivered_all(&mut c.brokers[0]);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, tokens[1]);
    assert_eq!(
        rest[0].1.responses[0].partition_responses[0].error_code,
        ResponseError::MessageTooLarge.code()
    );
    for b in &c.brokers {
        assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 2);
    }
}

/// One keyed record (a tombstone when `value` is `None`).
fn keyed_batch(key: &str, value: Option<&str>) -> Bytes {
    use kafka_protocol::records::Compression;
    crate::log::keyed_test_batch(&[(Some(key), value)], Compression::None, 1_000, None)
}

/// Node 3 installs `image` of `group` (topic `t`) from node 2, then applies every committed
/// entry and runs the cleans it holds (its source's last one again, and any ordered since).
fn install_compacted(c: &mut Cluster, group: u64, image: crate::cluster::PartitionImage, now: i64) {
    use super::InstallStep;
    let end = image.end_offset;
    let mut step = c.brokers[2].install_begin(group, image, 0);
    let mut rounds = 0;
    while let InstallStep::Fetch { request, .. } = step {
        let response = c.brokers[1]
            .fetch(&request, super::REPLICA_FETCH_VERSION)
            .response;
        c.brokers[2].install_fetched(group, &response, 0).unwrap();
        step = c.brokers[2].install_next(group);
        rounds += 1;
        assert!(rounds < 10, "the install makes no progress");
    }
    assert_eq!(step, InstallStep::Done);
    assert_eq!(
        c.brokers[2].partition("t", 0).unwrap().log_end_offset(),
        end
    );
    c.brokers[2].install_finish(group, 0);
    let all = c.logs[&group].clone();
    c.brokers[2].apply_partition(group, &all, 0);
    c.brokers[2].finish_apply();
    sync(&mut c.brokers[2]);
    let _ = c.brokers[2].take_applied_marks();
    assert_eq!(c.brokers[2].clean_now(now).len(), 1);
}

/// Every stored batch of a partition from its log start, byte for byte.
fn stored_bytes(b: &Broker, topic: &str) -> Vec<u8> {
    let log = b.partition(topic, 0).unwrap();
    log.read(log.log_start_offset(), 1 << 30, true)
        .unwrap()
        .records
        .to_vec()
}

#[test]
fn every_replica_of_a_compacted_partition_runs_the_clean_its_leader_orders() {
    let mut c = Cluster::new();
    let g = create_configured(
        &mut c,
        "t",
        &[
            ("cleanup.policy", "compact"),
            ("internal.segment.bytes", "1000"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    c.lead(g, 1);
    for i in 0..60 {
        let value = format!("v{i}");
        let value = (i % 11 != 10).then_some(value.as_str());
        produce_parked(
            &mut c.brokers[0],
            keyed_batch(&format!("k{}", i % 5), value),
        );
        c.run();
    }
    let settle = |c: &mut Cluster| {
        for b in &mut c.brokers {
            sync(b);
            let _ = b.take_applied_marks();
        }
    };
    settle(&mut c);
    let before = stored_bytes(&c.brokers[0], "t");
    // Followers never order; the leader orders one clean, which every replica records.
    for i in [1, 2, 0] {
        c.brokers[i].cluster_tick(true, 10_000, 10_000);
    }
    c.run();
    settle(&mut c);
    for b in &mut c.brokers {
        let log = b.partition("t", 0).unwrap();
        assert_eq!(log.cleaner_state().pending.len(), 1, "one ordered clean");
        assert_eq!(b.clean_now(10_000).len(), 1, "the ordered clean runs here");
    }
    let after = stored_bytes(&c.brokers[0], "t");
    assert!(
        after.len() < before.len() / 3,
        "{} -> {}",
        before.len(),
        after.len()
    );
    for b in &c.brokers[1..] {
        assert!(stored_bytes(b, "t") == after, "a replica's log differs");
    }
    // The leader does not order again while nothing new is dirty.
    c.brokers[0].cluster_tick(true, 12_000, 12_000);
    c.run();
    assert!(
        c.brokers[2]
            .partition("t", 0)
            .unwrap()
            .cleaner_state()
            .pending
            .is_empty()
    );

    // Node 3 misses more writes and a second clean, then catches up from a snapshot: it copies
    // the compacted log (gaps and all) and takes over the cleaner state, and ends with the
    // same bytes as the others.
    let apply = |c: &mut Cluster, data: Vec<u8>, on: &[usize]| c.commit_on(g, data, on);
    let settle_two = |c: &mut Cluster| {
        for b in &mut c.brokers[..2] {
            sync(b);
            let _ = b.take_applied_marks();
        }
    };
    for i in 60..100 {
        produce_parked(
            &mut c.brokers[0],
            keyed_batch(&format!("k{}", i % 7), Some("w")),
        );
        for p in c.brokers[0].take_proposals() {
            apply(&mut c, p.data, &[0, 1]);
        }
    }
    settle_two(&mut c);
    c.brokers[0].cluster_tick(true, 20_000, 20_000);
    for p in c.brokers[0].take_proposals() {
        assert!(crate::cluster::CleanEntry::decode(&p.data).is_some());
        apply(&mut c, p.data, &[0, 1]);
    }
    settle_two(&mut c);
    for b in &mut c.brokers[..2] {
        assert_eq!(b.clean_now(20_000).len(), 1);
    }
    let hinted = c.logs[&g].len() as u64;
    apply(&mut c, crate::cluster::encode_compact_hint(hinted), &[0, 1]);
    settle_two(&mut c);
    let due = c.brokers[0].take_compactions(1);
    let image = crate::cluster::PartitionImage::decode(&due[0].2).unwrap();
    assert!(
        !image.cleaner.is_empty(),
        "the image carries the cleaner state"
    );
    install_compacted(&mut c, g, image, 20_000);
    let want = stored_bytes(&c.brokers[0], "t");
    assert!(stored_bytes(&c.brokers[1], "t") == want);
    assert!(
        stored_bytes(&c.brokers[2], "t") == want,
        "the installed replica differs"
    );

    // Once more, with the snapshot taken before a clean that removes every record between
    // node 3's log end and the image's end: the source then answers with records past the
    // image, and node 3 raises its log end to the image's without records.
    let produce = |c: &mut Cluster, range: std::ops::Range<i32>| {
        for i in range {
            produce_parked(
                &mut c.brokers[0],
                keyed_batch(&format!("k{}", i % 7), Some("z")),
            );
            for p in c.brokers[0].take_proposals() {
                c.commit_on(g, p.data, &[0, 1]);
            }
        }
    };
    let behind = c.brokers[2].partition("t", 0).unwrap().log_end_offset();
    produce(&mut c, 100..114);
    settle_two(&mut c);
    let hinted = c.logs[&g].len() as u64;
    apply(&mut c, crate::cluster::encode_compact_hint(hinted), &[0, 1]);
    settle_two(&mut c);
    let due = c.brokers[0].take_compactions(1);
    let image = crate::cluster::PartitionImage::decode(&due[0].2).unwrap();
    assert_eq!(image.end_offset, behind + 14);
    produce(&mut c, 114..160);
    settle_two(&mut c);
    c.brokers[0].cluster_tick(true, 30_000, 30_000);
    for p in c.brokers[0].take_proposals() {
        apply(&mut c, p.data, &[0, 1]);
    }
    settle_two(&mut c);
    for b in &mut c.brokers[..2] {
        assert_eq!(b.clean_now(30_000).len(), 1);
    }
    install_compacted(&mut c, g, image, 30_000);
    let want = stored_bytes(&c.brokers[0], "t");
    assert!(
        stored_bytes(&c.brokers[2], "t") == want,
        "the replica installed across a cleaned gap differs"
    );
    let end = c.brokers[0].partition("t", 0).unwrap().log_end_offset();
    assert_eq!(
        c.brokers[2].partition("t", 0).unwrap().log_end_offset(),
        end
    );
}

#[test]
fn elect_leaders_answers_as_kafka_for_preferred_and_unclean_elections() {
    use kafka_protocol::messages::ElectLeadersRequest;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let (mut c, g) = Cluster::with_topic_led_by(1);
    let preferred = c.brokers[0]
        .meta()
        .unwrap()
        .partition("t", 0)
        .unwrap()
        .replicas[0];
    let elect = |c: &mut Cluster, election: i8, topic: &str| {
        let req = RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                .with_election_type(election)
                .with_topic_partitions(Some(vec![
                    TopicPartitions::default()
                        .with_topic(TopicName(s(topic)))
                        .with_partitions(vec![0]),
                ])),
        );
        let Reply::Now(ResponseKind::ElectLeaders(r)) =
            c.brokers[0].handle(&ctx(ApiKey::ElectLeaders, 2), req, 0)
        else {
            panic!("answered at once")
        };
        r.replica_election_results[0].partition_result[0].error_code
    };
    // Led by another replica than the preferred one: the balance moves it (no error).
    let other = if preferred == 1 { 2 } else { 1 };
    c.lead(g, other as u64);
    assert_eq!(elect(&mut c, 0, "t"), 0);
    // Led by the preferred replica: nothing to do.
    c.term += 1;
    c.lead(g, preferred as u64);
    assert_eq!(
        elect(&mut c, 0, "t"),
        ResponseError::ElectionNotNeeded.code()
    );
    // Unclean while a leader exists: not needed either; and an unknown topic is said so.
    assert_eq!(
        elect(&mut c, 1, "t"),
        ResponseError::ElectionNotNeeded.code()
    );
    assert_eq!(
        elect(&mut c, 0, "nope"),
        ResponseError::UnknownTopicOrPartition.code()
    );
    // Every partition when none is named.
    let Reply::Now(ResponseKind::ElectLeaders(r)) = c.brokers[0].handle(
        &ctx(ApiKey::ElectLeaders, 2),
        RequestKind::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(None)),
        0,
    ) else {
        panic!("answered at once")
    };
    assert!(
        r.replica_election_results
            .iter()
            .any(|t| t.topic.0.as_str() == "t")
    );
}

#[test]
fn describe_quorum_reports_meta_as_kafkas_metadata_quorum() {
    use super::{MetaQuorum, QuorumVoter};
    use kafka_protocol::messages::DescribeQuorumRequest;
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let mut c = Cluster::new();
    let voters = (1..=3)
        .map(|id| QuorumVoter {
            id,
            log_end: if id == 3 { 5 } else { 9 },
            last_heard_ms: 1_000 + i64::from(id),
            observer: false,
        })
        .collect();
    c.brokers[0].set_meta_quorum(MetaQuorum {
        leader: 1,
        term: 4,
        commit: 9,
        voters,
        as_of_ms: 2_000,
    });
    let ask = |c: &mut Cluster, topic: &str, version: i16| {
        let req = RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(s(topic)))
                .with_partitions(vec![PartitionData::default()]),
        ]));
        let Reply::Now(ResponseKind::DescribeQuorum(r)) =
            c.brokers[0].handle(&ctx(ApiKey::DescribeQuorum, version), req, 0)
        else {
            panic!("answered at once")
        };
        r
    };
    let r = ask(&mut c, "__cluster_metadata", 2);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 1, 4));
    assert_eq!(p.high_watermark, 9);
    assert_eq!(p.current_voters.len(), 3);
    let v3 = &p.current_voters[2];
    assert_eq!((v3.replica_id.0, v3.log_end_offset), (3, 5));
    assert_eq!(v3.last_fetch_timestamp, 1_003);
    assert_eq!(
        v3.last_caught_up_timestamp, -1,
        "node 3 is behind the commit"
    );
    assert_eq!(p.current_voters[0].last_caught_up_timestamp, 1_001);
    assert!(
        r.nodes.iter().all(|n| n
            .listeners
            .iter()
            .all(|l| l.name.as_str() != crate::security::REPLICA_LISTENER)),
        "{:?}",
        r.nodes
    );
    let r = ask(&mut c, "other", 1);
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
}

// ---------------------------------------------------------------------------------------------
// Transactions in cluster mode
// ---------------------------------------------------------------------------------------------

mod txn {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, DescribeTransactionsRequest,
        EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest, ProducerId, TransactionalId,
    };
    use sluice_coordinator::TRANSACTION_STATE_TOPIC;

    use super::super::txn_tests::{batch, fetch};
    use super::*;
    use crate::security::Session;

    const ID: &str = "tx";

    /// The answer to a request parked on broker `i`, once the cluster ran.
    fn parked(c: &mut Cluster, i: usize, reply: Reply) -> ResponseKind {
        let token = match reply {
            Reply::Now(r) => return r,
            Reply::Parked { token } => token,
            other => panic!("{other:?}"),
        };
        c.run();
        loop {
            let taken = c.brokers[i].take_deferred();
            c.answers[i].extend(taken);
            if let Some(at) = c.answers[i].iter().position(|d| d.token == token) {
                return c.answers[i].remove(at).response;
            }
            // Waiting on another node (a verification, markers): carry what is asked.
            assert!(carry_once(c) > 0, "no answer for token {token}");
        }
    }

    fn call(c: &mut Cluster, i: usize, key: ApiKey, v: i16, req: RequestKind) -> ResponseKind {
        let reply = c.brokers[i].handle(&ctx(key, v), req, 10_000);
        parked(c, i, reply)
    }

    /// Carries requests between the brokers (as the runtime does over the replica listeners)
    /// until none is left; returns how many went from one node to another.
    fn carry(c: &mut Cluster) -> usize {
        let mut carried = 0;
        loop {
            match carry_once(c) {
                0 => return carried,
                n => carried += n,
            }
        }
    }

    /// Carries the requests the brokers queued so far; returns how many.
    fn carry_once(c: &mut Cluster) -> usize {
        let mut carried = 0;
        {
            {
                for from in 0..3 {
                    for m in c.brokers[from].take_peer_requests() {
                        carried += 1;
                        let to = m.node as usize - 1;
                        let session = Session {
                            node: Some(from as i32 + 1),
                            ..Session::anonymous("127.0.0.1", crate::security::REPLICA_LISTENER)
                        };
                        let (reply, _) = c.brokers[to].handle_session(
                            &session,
                            &ctx(m.api_key, m.version),
                            m.request,
                            10_000,
                        );
                        let resp = parked(c, to, reply);
                        c.brokers[from].peer_response(m.id, Ok(resp), 10_000);
                        c.run();
                    }
                }
            }
        }
        carried
    }

    fn txn_group(c: &Cluster) -> u64 {
        let p = sluice_coordinator::partition_for(ID, 50);
        c.group_of(TRANSACTION_STATE_TOPIC, p)
    }

    fn describe_state(c: &mut Cluster, i: usize) -> (i16, String) {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s(ID))]);
        let ResponseKind::DescribeTransactions(r) = call(
            c,
            i,
            ApiKey::DescribeTransactions,
            0,
            RequestKind::DescribeTransactions(req),
        ) else {
            panic!()
        };
        let t = &r.transaction_states[0];
        (t.error_code, t.transaction_state.to_string())
    }

    /// AddPartitionsToTxn of `t`-0 to `ID`'s transaction on coordinator `coord`.
    fn add_t0(c: &mut Cluster, coord: usize, pid: i64, epoch: i16) {
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(ID)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![0]),
            ]);
        let ResponseKind::AddPartitionsToTxn(r) = call(
            c,
            coord,
            ApiKey::AddPartitionsToTxn,
            3,
            RequestKind::AddPartitionsToTxn(add),
        ) else {
            panic!()
        };
        let codes: Vec<i16> = r.results_by_topic_v3_and_below[0]
            .results_by_partition
            .iter()
            .map(|p| p.partition_error_code)
            .collect();
        assert_eq!(codes, vec![0], "{r:?}");
    }

    /// A transactional produce of `ID`'s producer to `t`-0 on its leader (node 2): the error.
    fn produce_t0(c: &mut Cluster, pid: i64, epoch: i16, seq: i32, value: &str) -> i16 {
        let mut req = produce_req("t", batch(pid, epoch, seq, &[value], true));
        if let RequestKind::Produce(p) = &mut req {
            p.transactional_id = Some(TransactionalId(s(ID)));
        }
        let ResponseKind::Produce(r) = call(c, 1, ApiKey::Produce, 9, req) else {
            panic!()
        };
        r.responses[0].partition_responses[0].error_code
    }

    /// Begins a transaction of `ID` on coordinator `coord` with one batch on `t`-0 (led by
    /// node 2), and asks to commit it.
    fn commit_one(c: &mut Cluster, coord: usize, pid: i64, epoch: i16, seq: i32, value: &str) {
        add_t0(c, coord, pid, epoch);
        assert_eq!(produce_t0(c, pid, epoch, seq, value), 0);
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let ResponseKind::EndTxn(r) = call(c, coord, ApiKey::EndTxn, 3, RequestKind::EndTxn(end))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0, "{r:?}");
    }

    #[test]
    fn a_leader_asks_the_coordinator_on_another_node_before_a_transaction_opens_there() {
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        // Not added to the transaction: node 2 asks node 1, which says no; nothing is written.
        assert_eq!(
            produce_t0(&mut c, pid, epoch, 0, "stray"),
            ResponseError::InvalidTxnState.code()
        );
        assert_eq!(c.brokers[1].partition("t", 0).unwrap().log_end_offset(), 0);
        // Added: the first batch is verified, later ones of the same transaction are not.
        add_t0(&mut c, 0, pid, epoch);
        assert_eq!(produce_t0(&mut c, pid, epoch, 0, "one"), 0);
        let mut req = produce_req("t", batch(pid, epoch, 1, &["two"], true));
        if let RequestKind::Produce(p) = &mut req {
            p.transactional_id = Some(TransactionalId(s(ID)));
        }
        let reply = c.brokers[1].handle(&ctx(ApiKey::Produce, 9), req, 10_000);
        assert!(
            c.brokers[1].take_peer_requests().is_empty(),
            "no second verification"
        );
        let ResponseKind::Produce(r) = parked(&mut c, 1, reply) else {
            panic!()
        };
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        // A plain idempotent batch of the same producer id is refused by the leader while the
        // transaction is open there (it would fence the transaction's producer).
        let ResponseKind::Produce(r) = call(
            &mut c,
            1,
            ApiKey::Produce,
            9,
            produce_req("t", batch(pid, epoch + 1, 0, &["intruder"], false)),
        ) else {
            panic!()
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidTxnState.code()
        );
        // A new instance fences this one: its open transaction is aborted (markers carried
        // to node 2 on the way) and the old epoch's next batch is refused by the coordinator.
        let r = init_on_node_1(&mut c);
        assert_eq!((r.error_code, r.producer_id.0), (0, pid), "{r:?}");
        assert!(r.producer_epoch > epoch);
        // The records are below the LSO now, listed as aborted (a consumer skips them).
        let (seen, lso, aborted) = fetch(&c.brokers[1], "t", true);
        assert_eq!((seen.len(), lso), (2, 3), "{seen:?}");
        assert_eq!(aborted, vec![(pid, 0)]);
        assert_eq!(
            produce_t0(&mut c, pid, epoch, 2, "zombie"),
            ResponseError::InvalidProducerEpoch.code()
        );
        // AddPartitionsToTxn v4 is for nodes: a client is refused.
        let v4 = AddPartitionsToTxnRequest::default().with_transactions(vec![
            kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s(ID)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_verify_only(true),
        ]);
        let ResponseKind::AddPartitionsToTxn(r) = call(
            &mut c,
            0,
            ApiKey::AddPartitionsToTxn,
            4,
            RequestKind::AddPartitionsToTxn(v4),
        ) else {
            panic!()
        };
        assert_eq!(
            r.error_code,
            ResponseError::ClusterAuthorizationFailed.code()
        );
    }

    /// Node 2 (leading t-0) takes a transactional batch and asks node 1, the coordinator,
    /// whether t-0 is in the transaction: the parked produce and the question.
    fn verification_out(
        c: &mut Cluster,
        pid: i64,
        epoch: i16,
        value: &str,
    ) -> (Reply, crate::broker::cluster::PeerRequest) {
        let mut req = produce_req("t", batch(pid, epoch, 0, &[value], true));
        if let RequestKind::Produce(p) = &mut req {
            p.transactional_id = Some(TransactionalId(s(ID)));
        }
        let reply = c.brokers[1].handle(&ctx(ApiKey::Produce, 9), req, 10_000);
        let asked = c.brokers[1].take_peer_requests();
        assert_eq!(asked.len(), 1);
        (reply, asked.into_iter().next().unwrap())
    }

    /// The transaction is aborted meanwhile: its marker is written to t-0 (its end offset
    /// returned).
    fn abort_with_marker(c: &mut Cluster, pid: i64, epoch: i16) -> i64 {
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(false);
        let ResponseKind::EndTxn(r) = call(c, 0, ApiKey::EndTxn, 3, RequestKind::EndTxn(end))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0, "{r:?}");
        carry(c);
        let end_before = c.brokers[1].partition("t", 0).unwrap().log_end_offset();
        assert_eq!(end_before, 1, "the abort marker");
        end_before
    }

    #[test]
    fn a_verification_answered_before_its_transaction_ended_opens_nothing_after_the_marker() {
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        add_t0(&mut c, 0, pid, epoch);
        // Node 1 says yes, but its answer is held up on the way back.
        let (reply, m) = verification_out(&mut c, pid, epoch, "late");
        let session = Session {
            node: Some(2),
            ..Session::anonymous("127.0.0.1", crate::security::REPLICA_LISTENER)
        };
        let (answer, _) =
            c.brokers[0].handle_session(&session, &ctx(m.api_key, m.version), m.request, 10_000);
        let answer = parked(&mut c, 0, answer);
        let end_before = abort_with_marker(&mut c, pid, epoch);
        // The yes arrives after the marker: it speaks of the ended transaction, so the batch
        // is refused rather than opening a transaction no coordinator knows.
        c.brokers[1].peer_response(m.id, Ok(answer), 10_000);
        let ResponseKind::Produce(r) = parked(&mut c, 1, reply) else {
            panic!()
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidTxnState.code()
        );
        c.run();
        let log = c.brokers[1].partition("t", 0).unwrap();
        assert_eq!(log.log_end_offset(), end_before);
        let (_, lso, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!(lso, end_before, "no transaction left open");
    }

    #[test]
    fn a_refused_verification_keeps_its_error_when_a_marker_came_meanwhile() {
        // A zombie's batch (its transaction was ended and its epoch bumped elsewhere) is
        // verified while the new instance's marker is proposed in the partition: the
        // coordinator's refusal reaches the client as it is (the zombie is fenced), not as the
        // guard's INVALID_TXN_STATE, which only stands in for a yes that may be stale.
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        add_t0(&mut c, 0, pid, epoch);
        let (reply, m) = verification_out(&mut c, pid, epoch, "zombie");
        let end_before = abort_with_marker(&mut c, pid, epoch);
        let refusal = AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![
            AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(s(ID)))
                .with_topic_results(vec![
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(TopicName(s("t")))
                        .with_results_by_partition(vec![
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(0)
                                .with_partition_error_code(
                                    ResponseError::InvalidProducerEpoch.code(),
                                ),
                        ]),
                ]),
        ]);
        c.brokers[1].peer_response(m.id, Ok(ResponseKind::AddPartitionsToTxn(refusal)), 10_000);
        let ResponseKind::Produce(r) = parked(&mut c, 1, reply) else {
            panic!()
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidProducerEpoch.code()
        );
        c.run();
        assert_eq!(
            c.brokers[1].partition("t", 0).unwrap().log_end_offset(),
            end_before,
            "nothing written"
        );
    }

    #[test]
    fn the_transaction_state_topic_is_neither_deleted_grown_nor_trimmed_by_clients() {
        let (mut c, tg, _, _) = coordinated_by_node_1();
        // Asked of node 1, which leads the id's coordinator partition.
        let p = sluice_coordinator::partition_for(ID, 50);
        for (key, version, req, want) in
            super::super::txn_tests::refused_on_the_transaction_state(p)
        {
            let r = call(&mut c, 0, key, version, req);
            assert_eq!(super::super::txn_tests::only_error(&r), want, "{key:?}");
        }
        assert!(
            c.logs.contains_key(&tg),
            "the coordinator's group is still there"
        );
    }

    #[test]
    fn a_new_leader_takes_markers_and_verified_batches_only_once_its_earlier_terms_applied() {
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        add_t0(&mut c, 0, pid, epoch);
        let g = c.group_of("t", 0);
        c.term += 1;
        let last = c.logs.get(&g).map_or(0, |l| l.len() as u64);
        // Node 3 is elected leader of t-0, with an entry of an earlier term not applied yet.
        c.brokers[2].partition_role_changed(g, 3, c.term, last + 1, 0);
        let mut req = crate::broker::cluster::txn_tests_marker_request("t", 0, false);
        req.markers[0].producer_id = ProducerId(pid);
        req.markers[0].producer_epoch = epoch;
        let session = Session {
            node: Some(1),
            ..Session::anonymous("127.0.0.1", crate::security::REPLICA_LISTENER)
        };
        let (reply, _) = c.brokers[2].handle_session(
            &session,
            &ctx(ApiKey::WriteTxnMarkers, 1),
            RequestKind::WriteTxnMarkers(req),
            10_000,
        );
        let Reply::Now(ResponseKind::WriteTxnMarkers(r)) = reply else {
            panic!("answered at once: {reply:?}")
        };
        assert_eq!(
            r.markers[0].topics[0].partitions[0].error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        // A transactional batch that needs the coordinator's word is sent back too.
        let mut req = produce_req("t", batch(pid, epoch, 0, &["early"], true));
        if let RequestKind::Produce(p) = &mut req {
            p.transactional_id = Some(TransactionalId(s(ID)));
        }
        let reply = c.brokers[2].handle(&ctx(ApiKey::Produce, 9), req, 10_000);
        let Reply::Now(ResponseKind::Produce(r)) = reply else {
            panic!("answered at once: {reply:?}")
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        assert!(
            c.brokers[2].take_peer_requests().is_empty(),
            "no verification"
        );
    }

    /// InitProducerId of `ID` on node 1.
    fn init_on_node_1(c: &mut Cluster) -> kafka_protocol::messages::InitProducerIdResponse {
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(ID))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let ResponseKind::InitProducerId(r) = call(
            c,
            0,
            ApiKey::InitProducerId,
            4,
            RequestKind::InitProducerId(init),
        ) else {
            panic!()
        };
        r
    }

    /// Three nodes, `t`-0 led by node 2, and `ID` coordinated by node 1 (FindCoordinator
    /// checked on the way); returns the cluster, the transaction's group and the producer.
    fn coordinated_by_node_1() -> (Cluster, u64, i64, i16) {
        let (mut c, _) = Cluster::with_topic_led_by(2);
        // No __transaction_state yet: the first FindCoordinator asks for it.
        let find = || {
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default()
                    .with_key_type(1)
                    .with_coordinator_keys(vec![s(ID)]),
            )
        };
        let ResponseKind::FindCoordinator(r) = call(&mut c, 0, ApiKey::FindCoordinator, 4, find())
        else {
            panic!()
        };
        assert_eq!(
            r.coordinators[0].error_code,
            ResponseError::CoordinatorNotAvailable.code()
        );
        for i in 0..3 {
            c.brokers[i].cluster_tick(true, 10_000, 10_000);
        }
        c.run();
        let tg = txn_group(&c);
        c.lead(tg, 1);
        let ResponseKind::FindCoordinator(r) = call(&mut c, 2, ApiKey::FindCoordinator, 4, find())
        else {
            panic!()
        };
        assert_eq!(
            (r.coordinators[0].error_code, r.coordinators[0].node_id.0),
            (0, 1)
        );

        let r = init_on_node_1(&mut c);
        assert_eq!(r.error_code, 0, "{r:?}");
        (c, tg, r.producer_id.0, r.producer_epoch)
    }

    #[test]
    fn markers_reach_a_partition_led_elsewhere_and_a_new_coordinator_finishes_a_decision() {
        let (mut c, tg, pid, epoch) = coordinated_by_node_1();
        assert_eq!(pid >> 48, 1, "a producer id from node 1's range");
        // Any other node refuses the transaction's requests.
        assert_eq!(
            describe_state(&mut c, 1).0,
            ResponseError::NotCoordinator.code()
        );

        commit_one(&mut c, 0, pid, epoch, 0, "one");
        // Decided, not yet marked: read_committed sees nothing on the leader.
        let (seen, lso, _) = fetch(&c.brokers[1], "t", true);
        assert!(seen.is_empty() && lso == 0, "{seen:?} {lso}");
        assert_eq!(describe_state(&mut c, 0).1, "PrepareCommit");
        // The marker goes to node 2, which proposes it; every replica appends it.
        assert_eq!(carry(&mut c), 1);
        assert_eq!(describe_state(&mut c, 0).1, "CompleteCommit");
        let (seen, lso, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!((seen, lso), (vec!["one".to_string()], 2));
        for b in &c.brokers {
            assert_eq!(b.partition("t", 0).unwrap().log_end_offset(), 2);
        }

        // A second commit is decided, and its coordinator loses the partition before any
        // marker is out: the new coordinator finds the decision and finishes it.
        commit_one(&mut c, 0, pid, epoch, 1, "two");
        let lost = c.brokers[0].take_peer_requests();
        assert_eq!(lost.len(), 1, "the marker was about to go out");
        c.lead(tg, 3);
        assert_eq!(
            describe_state(&mut c, 0).0,
            ResponseError::NotCoordinator.code()
        );
        assert_eq!(describe_state(&mut c, 2).1, "PrepareCommit");
        assert_eq!(carry(&mut c), 1);
        assert_eq!(describe_state(&mut c, 2).1, "CompleteCommit");
        let (seen, lso, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!(seen, vec!["one".to_string(), "two".to_string()]);
        assert_eq!(lso, 4);
        // The old coordinator's late answer changes nothing.
        c.brokers[0].peer_response(lost[0].id, Err("lost".into()), 10_000);
        c.run();
        assert!(c.brokers[0].take_peer_requests().is_empty());
    }

    #[test]
    fn a_client_may_only_abort_and_never_produce_control_batches() {
        let (mut c, _) = Cluster::with_topic_led_by(1);
        let marker = |c: &mut Cluster, commit: bool| {
            let req = crate::broker::cluster::txn_tests_marker_request("t", 0, commit);
            let ResponseKind::WriteTxnMarkers(r) = call(
                c,
                0,
                ApiKey::WriteTxnMarkers,
                1,
                RequestKind::WriteTxnMarkers(req),
            ) else {
                panic!()
            };
            r.markers[0].topics[0].partitions[0].error_code
        };
        let markers = |c: &Cluster| {
            c.logs.get(&c.group_of("t", 0)).map_or(0, |l| {
                l.iter()
                    .filter(|(_, _, d)| crate::cluster::MarkerEntry::decode(d).is_some())
                    .count()
            })
        };
        // A commit is the coordinator's.
        assert_eq!(
            marker(&mut c, true),
            ResponseError::ClusterAuthorizationFailed.code()
        );
        assert_eq!(markers(&c), 0);
        // An operator's abort of a hanging transaction (`kafka-transactions.sh abort`) goes
        // through the partition's log like the coordinator's markers.
        assert_eq!(marker(&mut c, false), 0);
        assert_eq!(markers(&c), 1);
        // A control batch from a client is refused by the leader, before it is proposed.
        let control = Bytes::from(crate::batch::control_batch(5, 0, true, 0, 1_000));
        let ResponseKind::Produce(r) =
            call(&mut c, 0, ApiKey::Produce, 9, produce_req("t", control))
        else {
            panic!()
        };
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            ResponseError::InvalidRecord.code()
        );
    }
    #[test]
    fn a_marker_from_a_coordinator_that_lost_its_partition_is_refused() {
        let (mut c, tg, pid, epoch) = coordinated_by_node_1();
        commit_one(&mut c, 0, pid, epoch, 0, "one");
        // Node 1's marker request for this commit is held back (its network is cut), and
        // node 3 takes the coordinator partition over, finishing the commit.
        let late = c.brokers[0].take_peer_requests();
        assert_eq!(late.len(), 1);
        c.term += 1;
        c.lead(tg, 3);
        assert_eq!(carry(&mut c), 1);
        assert_eq!(describe_state(&mut c, 2).1, "CompleteCommit");
        // The producer's next transaction is open on t-0 when node 1's request arrives: it
        // carries an older coordinator epoch and is refused, so it cannot end that one.
        add_t0(&mut c, 2, pid, epoch);
        assert_eq!(produce_t0(&mut c, pid, epoch, 1, "two"), 0);
        let m = late.into_iter().next().unwrap();
        let session = Session {
            node: Some(1),
            ..Session::anonymous("127.0.0.1", crate::security::REPLICA_LISTENER)
        };
        let (reply, _) =
            c.brokers[1].handle_session(&session, &ctx(m.api_key, m.version), m.request, 10_000);
        let ResponseKind::WriteTxnMarkers(r) = parked(&mut c, 1, reply) else {
            panic!()
        };
        assert_eq!(
            r.markers[0].topics[0].partitions[0].error_code,
            ResponseError::TransactionCoordinatorFenced.code()
        );
        // "two" is still undecided: read_committed stops before it.
        let (seen, lso, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!((seen, lso), (vec!["one".to_string()], 2));
        // And node 1, no longer coordinator, does not send what it still had queued.
        assert!(!c.brokers[0].peer_request_wanted(m.id));
        // The fence outlives a restart of the partition's leader: the commit marker carries
        // the coordinator epoch, and the producer state rebuilt from the log has it.
        let epoch_of = |b: &Broker| {
            b.producers
                .get(&("t".to_string(), 0))
                .map(|t| t.coordinator_epoch_of(pid))
        };
        let newer = epoch_of(&c.brokers[1]).unwrap();
        assert!(newer > 0, "{newer}");
        sync(&mut c.brokers[1]);
        for (_, path, bytes) in c.brokers[1].take_applied_marks() {
            c.fs[1].write_file_atomic(&path, &bytes).unwrap();
        }
        let mut b = open(&c.fs[1], 2);
        let entries: Vec<(u64, Vec<u8>)> = c.logs[&META_GROUP]
            .iter()
            .map(|(i, _, d)| (*i, d.clone()))
            .collect();
        b.apply_meta(&entries, 0);
        assert_eq!(epoch_of(&b), Some(newer));
        // A deposed coordinator's marker is refused also while a newer one is proposed and
        // not applied yet: the leader remembers what it proposed.
        let marker = |ce: i32| {
            let mut r = crate::broker::cluster::txn_tests_marker_request("t", 0, false);
            r.markers[0].producer_id = ProducerId(pid);
            r.markers[0].producer_epoch = epoch;
            r.markers[0].coordinator_epoch = ce;
            RequestKind::WriteTxnMarkers(r)
        };
        let ask = |c: &mut Cluster, ce: i32| {
            let (reply, _) = c.brokers[1].handle_session(
                &session,
                &ctx(ApiKey::WriteTxnMarkers, 1),
                marker(ce),
                10_000,
            );
            reply
        };
        assert!(matches!(ask(&mut c, newer + 2), Reply::Parked { .. }));
        let Reply::Now(ResponseKind::WriteTxnMarkers(r)) = ask(&mut c, newer + 1) else {
            panic!("refused at once")
        };
        assert_eq!(
            r.markers[0].topics[0].partitions[0].error_code,
            ResponseError::TransactionCoordinatorFenced.code()
        );
    }

    #[test]
    fn a_txn_offset_commit_is_verified_with_a_coordinator_on_another_node() {
        use kafka_protocol::messages::txn_offset_commit_request::{
            TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::{GroupId, TxnOffsetCommitRequest};
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        // Group "g"'s coordinator is node 2 (it leads g's __consumer_offsets partition).
        let p = sluice_coordinator::partition_for("g", 2);
        let og = c.group_of(crate::broker::OFFSETS_TOPIC, p);
        c.lead(og, 2);
        let commit = || {
            RequestKind::TxnOffsetCommit(
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s(ID)))
                    .with_group_id(GroupId(s("g")))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_topics(vec![
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(s("t")))
                            .with_partitions(vec![
                                TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(5),
                            ]),
                    ]),
            )
        };
        let code = |c: &mut Cluster| {
            let ResponseKind::TxnOffsetCommit(r) = call(c, 1, ApiKey::TxnOffsetCommit, 3, commit())
            else {
                panic!()
            };
            r.topics[0].partitions[0].error_code
        };
        // No AddOffsetsToTxn: node 1 says the offsets partition is not in the transaction, and
        // nothing is written to __consumer_offsets.
        let before = c.logs.get(&og).map_or(0, Vec::len);
        assert_eq!(code(&mut c), ResponseError::InvalidTxnState.code());
        assert_eq!(c.logs.get(&og).map_or(0, Vec::len), before);
        // After AddOffsetsToTxn it is accepted.
        let add = kafka_protocol::messages::AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s("g")));
        let ResponseKind::AddOffsetsToTxn(r) = call(
            &mut c,
            0,
            ApiKey::AddOffsetsToTxn,
            3,
            RequestKind::AddOffsetsToTxn(add),
        ) else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(code(&mut c), 0);
    }
    #[test]
    fn a_decision_whose_wait_expired_is_finished_when_its_entry_commits() {
        let (mut c, _, pid, epoch) = coordinated_by_node_1();
        add_t0(&mut c, 0, pid, epoch);
        assert_eq!(produce_t0(&mut c, pid, epoch, 0, "slow"), 0);
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let Reply::Parked { token } =
            c.brokers[0].handle(&ctx(ApiKey::EndTxn, 3), RequestKind::EndTxn(end), 10_000)
        else {
            panic!("EndTxn waits for its PrepareCommit")
        };
        // The PrepareCommit does not commit within the wait (no quorum for 30 s)...
        let held = c.brokers[0].take_proposals();
        assert_eq!(held.len(), 1);
        c.brokers[0].cluster_tick(true, 45_000, 45_000);
        let d = c.brokers[0].take_deferred();
        let answer = d.iter().find(|d| d.token == token).expect("answered");
        let ResponseKind::EndTxn(r) = &answer.response else {
            panic!()
        };
        assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
        // ...then it does: the markers go out and the transaction completes.
        for p in held {
            c.commit_on(p.group, p.data, &[0, 1, 2]);
        }
        assert_eq!(carry(&mut c), 1);
        assert_eq!(describe_state(&mut c, 0).1, "CompleteCommit");
        let (seen, _, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!(seen, vec!["slow".to_string()]);
    }
    #[test]
    fn a_reload_of_the_coordinator_partition_leaves_one_round_per_decision() {
        let (mut c, tg, pid, epoch) = coordinated_by_node_1();
        commit_one(&mut c, 0, pid, epoch, 0, "one");
        let first = c.brokers[0].take_peer_requests();
        assert_eq!(first.len(), 1, "the commit's marker request");
        // Another transactional id of the same __transaction_state partition has a state
        // write dropped (e.g. leadership wavered): the partition reloads from its log.
        let p = sluice_coordinator::partition_for(ID, 50);
        let other = (0..)
            .map(|i| format!("other-{i}"))
            .find(|id| sluice_coordinator::partition_for(id, 50) == p)
            .unwrap();
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(&other))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let reply = c.brokers[0].handle(
            &ctx(ApiKey::InitProducerId, 4),
            RequestKind::InitProducerId(init),
            10_000,
        );
        assert!(matches!(reply, Reply::Parked { .. }));
        let dropped = c.brokers[0].take_proposals();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].group, tg);
        c.brokers[0].proposal_dropped(dropped[0].group, &dropped[0].data);
        // The reload found the prepared commit and sends its markers again; the first round
        // is gone, so its request is not sent, and only one marker reaches t-0.
        assert!(!c.brokers[0].peer_request_wanted(first[0].id));
        assert_eq!(carry(&mut c), 1);
        assert_eq!(describe_state(&mut c, 0).1, "CompleteCommit");
        let (seen, lso, _) = fetch(&c.brokers[1], "t", true);
        assert_eq!((seen, lso), (vec!["one".to_string()], 2));
    }
}
