//! State-machine tests of the group coordinator: no sockets, time from a fake clock.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::*;
use crate::{Response, StoreRecord};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// A consumer-protocol subscription (version 1) to `topics`.
fn sub(topics: &[&str]) -> Bytes {
    let s =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| sb(t)).collect());
    let mut b = BytesMut::new();
    b.put_i16(1);
    s.encode(&mut b, 1).unwrap();
    b.freeze()
}

fn range(topics: &[&str]) -> Vec<(&'static str, Bytes)> {
    vec![("range", sub(topics))]
}

/// Drives a coordinator like the server would, recording responses and the internal log.
struct Harness {
    c: GroupCoordinator,
    now: i64,
    next_token: u64,
    responses: BTreeMap<u64, Response>,
    /// Every durable record, in append order.
    log: Vec<(i32, StoreRecord)>,
}

impl Harness {
    fn new(cfg: GroupConfig) -> Harness {
        let mut c = GroupCoordinator::new(cfg);
        for p in 0..c.config().num_partitions {
            c.load_partition(p, [], 0).unwrap();
        }
        Harness {
            c,
            now: 0,
            next_token: 0,
            responses: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    fn quick() -> Harness {
        Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            num_partitions: 4,
            ..GroupConfig::default()
        })
    }

    fn ctx(&mut self, version: i16) -> RequestContext {
        self.next_token += 1;
        RequestContext {
            token: self.next_token,
            api_version: version,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn answer(&mut self, r: Response) {
        let mut buf = BytesMut::new();
        r.body
            .encode(&mut buf, r.api_version)
            .unwrap_or_else(|e| panic!("response {:?} does not encode: {e}", r.body));
        let token = r.token;
        assert!(
            self.responses.insert(token, r).is_none(),
            "token {token} answered twice"
        );
    }

    fn run(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Respond(r) => self.answer(r),
                Action::Persist { writes, then } | Action::PersistTxn { writes, then, .. } => {
                    for w in writes {
                        assert_eq!(
                            w.partition,
                            w.record
                                .group_id()
                                .map_or(w.partition, |g| self.c.partition_for(g))
                        );
                        // Through the byte format, as the server would store it.
                        let (k, v) = w.record.encode();
                        let decoded = StoreRecord::decode(&k, v.as_deref()).unwrap();
                        assert_eq!(decoded, w.record);
                        self.log.push((w.partition, decoded));
                    }
                    for r in then {
                        self.answer(r);
                    }
                }
            }
        }
    }

    fn send(&mut self, version: i16, req: impl Into<RequestKind>) -> u64 {
        let ctx = self.ctx(version);
        let actions = self.c.handle(&ctx, req.into(), self.now).unwrap();
        self.run(actions);
        ctx.token
    }

    /// Moves the clock to `now + ms`, ticking at every deadline on the way.
    fn advance(&mut self, ms: i64) {
        let target = self.now + ms;
        for _ in 0..10_000 {
            match self.c.poll_timeout(self.now) {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    let actions = self.c.tick(self.now);
                    self.run(actions);
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timers do not make progress");
    }

    fn take(&mut self, token: u64) -> Option<ResponseKind> {
        self.responses.remove(&token).map(|r| r.body)
    }

    fn join_req(
        group: &str,
        member: &str,
        instance: Option<&str>,
        protocols: &[(&str, Bytes)],
    ) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_group_instance_id(instance.map(sb))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(REBALANCE_MS)
            .with_protocol_type(sb("consumer"))
            .with_protocols(
                protocols
                    .iter()
                    .map(|(n, m)| {
                        JoinGroupRequestProtocol::default()
                            .with_name(sb(n))
                            .with_metadata(m.clone())
                    })
                    .collect(),
            )
    }

    fn join(
        &mut self,
        version: i16,
        group: &str,
        member: &str,
        instance: Option<&str>,
        protocols: &[(&str, Bytes)],
    ) -> u64 {
        self.send(version, Self::join_req(group, member, instance, protocols))
    }

    fn join_resp(&mut self, token: u64) -> JoinGroupResponse {
        match self.take(token) {
            Some(ResponseKind::JoinGroup(r)) => r,
            other => panic!("expected a JoinGroup response for {token}, got {other:?}"),
        }
    }

    /// KIP-394 dance: first join gets MEMBER_ID_REQUIRED, returns the second join's token.
    fn join_dynamic(&mut self, group: &str, protocols: &[(&str, Bytes)]) -> (String, u64) {
        let t = self.join(5, group, "", None, protocols);
        let r = self.join_resp(t);
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
        let id = r.member_id.to_string();
        (id.clone(), self.join(5, group, &id, None, protocols))
    }

    fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> u64 {
        let req = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_generation_id(generation)
            .with_protocol_type(Some(sb("consumer")))
            .with_protocol_name(Some(sb("range")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(m))
                            .with_assignment(Bytes::copy_from_slice(a))
                    })
                    .collect(),
            );
        self.send(5, req)
    }

    fn sync_resp(&mut self, token: u64) -> SyncGroupResponse {
        match self.take(token) {
            Some(ResponseKind::SyncGroup(r)) => r,
            other => panic!("expected a SyncGroup response for {token}, got {other:?}"),
        }
    }

    fn heartbeat(&mut self, group: &str, member: &str, generation: i32) -> i16 {
        self.heartbeat_static(group, member, None, generation)
    }

    fn heartbeat_static(
        &mut self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_group_instance_id(instance.map(sb))
            .with_generation_id(generation);
        let t = self.send(4, req);
        match self.take(t) {
            Some(ResponseKind::Heartbeat(r)) => r.error_code,
            other => panic!("expected Heartbeat, got {other:?}"),
        }
    }

    fn commit(
        &mut self,
        version: i16,
        group: &str,
        member: &str,
        generation: i32,
        offsets: &[(&str, i32, i64)],
    ) -> Vec<i16> {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (t, p, o) in offsets {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(5)
                .with_committed_metadata(Some(sb("m")));
            match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(topics);
        let t = self.send(version, req);
        match self.take(t) {
            Some(ResponseKind::OffsetCommit(r)) => r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            other => panic!("expected OffsetCommit, got {other:?}"),
        }
    }

    /// OffsetFetch v7 of one group; `None` topics = all.
    fn fetch(&mut self, group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchResponse {
        let req = OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(sb(t)))
                            .with_partition_indexes(ps.to_vec())
                    })
                    .collect()
            }));
        let t = self.send(7, req);
        match self.take(t) {
            Some(ResponseKind::OffsetFetch(r)) => r,
            other => panic!("expected OffsetFetch, got {other:?}"),
        }
    }

    fn describe(&mut self, version: i16, group: &str) -> DescribedGroup {
        let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
        let t = self.send(version, req);
        match self.take(t) {
            Some(ResponseKind::DescribeGroups(mut r)) => r.groups.remove(0),
            other => panic!("expected DescribeGroups, got {other:?}"),
        }
    }

    /// Two dynamic members through one full rebalance; returns (leader, follower, generation).
    fn stable_pair(&mut self, group: &str) -> (String, String, i32) {
        let (a, ta) = self.join_dynamic(group, &range(&["t"]));
        let (b, tb) = self.join_dynamic(group, &range(&["t"]));
        // With no initial delay the first member completes generation 1 alone; b's join triggers
        // generation 2 once a rejoins.
        let ra = self.join_resp(ta);
        assert_eq!(ra.generation_id, 1);
        let ta = self.join(5, group, &a, None, &range(&["t"]));
        let ra = self.join_resp(ta);
        let rb = self.join_resp(tb);
        assert_eq!((ra.error_code, rb.error_code), (0, 0));
        assert_eq!(ra.generation_id, rb.generation_id);
        let generation = ra.generation_id;
        let leader = ra.leader.to_string();
        let follower = if leader == a { b.clone() } else { a.clone() };
        let tl = self.sync(group, &leader, generation, &[(&a, b"A"), (&b, b"B")]);
        let tf = self.sync(group, &follower, generation, &[]);
        assert_eq!(self.sync_resp(tl).error_code, 0);
        assert_eq!(self.sync_resp(tf).error_code, 0);
        assert_eq!(self.c.group_state(group), Some(GroupState::Stable));
        (leader, follower, generation)
    }
}

#[test]
fn three_members_form_one_generation_after_the_initial_delay() {
    let mut h = Harness::new(GroupConfig {
        num_partitions: 4,
        ..GroupConfig::default()
    });
    let mut members = Vec::new();
    for topics in [["a"], ["b"], ["c"]] {
        let (id, t) = h.join_dynamic("g", &range(&topics));
        members.push((id, t));
    }
    // Kafka's group.initial.rebalance.delay.ms: nobody is answered before 3 s, and because members
    // kept arriving during the first delay it is extended once more.
    h.advance(2999);
    assert!(members.iter().all(|(_, t)| !h.responses.contains_key(t)));
    h.advance(3001);
    assert_eq!(h.c.group_state("g"), Some(GroupState::CompletingRebalance));

    let responses: Vec<JoinGroupResponse> = members.iter().map(|(_, t)| h.join_resp(*t)).collect();
    let leader = responses[0].leader.to_string();
    assert!(members.iter().any(|(id, _)| *id == leader));
    for (r, (id, _)) in responses.iter().zip(&members) {
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.member_id.as_str(), id);
        if *id == leader {
            // The leader gets every member's subscription.
            let mut got: Vec<(String, Bytes)> = r
                .members
                .iter()
                .map(|m| (m.member_id.to_string(), m.metadata.clone()))
                .collect();
            got.sort();
            let mut want: Vec<(String, Bytes)> = members
                .iter()
                .zip([["a"], ["b"], ["c"]])
                .map(|((id, _), t)| (id.clone(), sub(&t)))
                .collect();
            want.sort();
            assert_eq!(got, want);
        } else {
            assert!(r.members.is_empty());
        }
    }

    // Followers sync first and wait; the leader's assignment is persisted, then everyone answered.
    let followers: Vec<&String> = members
        .iter()
        .map(|(id, _)| id)
        .filter(|id| **id != leader)
        .collect();
    let tf: Vec<u64> = followers.iter().map(|f| h.sync("g", f, 1, &[])).collect();
    assert!(tf.iter().all(|t| !h.responses.contains_key(t)));
    let assignments: Vec<(String, Vec<u8>)> = members
        .iter()
        .map(|(id, _)| (id.clone(), format!("assign-{id}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = assignments
        .iter()
        .map(|(i, a)| (i.as_str(), a.as_slice()))
        .collect();
    let log_before = h.log.len();
    let tl = h.sync("g", &leader, 1, &refs);
    assert_eq!(
        h.log.len(),
        log_before + 1,
        "assignment stored before answering"
    );
    assert!(
        matches!(&h.log[log_before].1, StoreRecord::Group { value: Some(v), .. } if v.members.len() == 3)
    );
    for (t, id) in tf.iter().zip(&followers).chain([(&tl, &&leader)]) {
        let r = h.sync_resp(*t);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.assignment.as_ref(), format!("assign-{id}").as_bytes());
    }
    assert_eq!(h.c.group_state("g"), Some(GroupState::Stable));
    for (id, _) in &members {
        assert_eq!(h.heartbeat("g", id, 1), 0);
    }
    let d = h.describe(5, "g");
    assert_eq!((d.group_state.as_str(), d.members.len()), ("Stable", 3));
}

#[test]
fn a_silent_member_is_evicted_after_its_session_timeout() {
    let mut h = Harness::quick();
    let (leader, follower, generation) = h.stable_pair("g");
    // The leader heartbeats every 3 s, the follower never again.
    for _ in 0..3 {
        h.advance(3000);
        assert_eq!(h.heartbeat("g", &leader, generation), 0);
    }
    h.advance(1001);
    assert_eq!(h.c.group_state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.heartbeat("g", &leader, generation),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        h.heartbeat("g", &follower, generation),
        ResponseError::UnknownMemberId.code()
    );
    // The survivor rejoins; it is the only member, so the join completes at once.
    let t = h.join(5, "g", &leader, None, &range(&["t"]));
    let r = h.join_resp(t);
    assert_eq!(
        (r.error_code, r.generation_id, r.members.len()),
        (0, generation + 1, 1)
    );
}

#[test]
fn sessions_run_on_the_monotonic_clock_once_it_is_handed_in() {
    // The members' deadlines were set on the wall clock (as when a broker loads its groups
    // at start-up); the monotonic clock handed in later reads far less (ms since the process
    // started): the deadlines move onto it.
    let mut h = Harness::quick();
    h.now = 1_700_000_000_000;
    let (leader, follower, generation) = h.stable_pair("g");
    let start = 5;
    h.c.set_monotonic(start, h.now);
    // The wall clock steps an hour ahead: no session is over, and the next deadline reported
    // (on the wall clock) is still at most a session timeout away.
    h.now += 3_600_000;
    let actions = h.c.tick(h.now);
    h.run(actions);
    assert_eq!(h.c.group_state("g"), Some(GroupState::Stable));
    assert!(
        h.c.poll_timeout(h.now)
            .is_some_and(|t| t > h.now && t <= h.now + SESSION_MS as i64)
    );
    // Monotonic time decides: the leader heartbeats, the silent follower is evicted once its
    // session timeout has passed on that clock.
    h.c.set_monotonic(start + 5_000, h.now);
    assert_eq!(h.heartbeat("g", &leader, generation), 0);
    h.c.set_monotonic(start + SESSION_MS as i64 + 1, h.now);
    let actions = h.c.tick(h.now);
    h.run(actions);
    assert_eq!(h.c.group_state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.heartbeat("g", &follower, generation),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
    let mut h = Harness::quick();
    let (leader, follower, generation) = h.stable_pair("g");
    // The leader rejoins (as after a metadata change): a rebalance starts.
    let t = h.join(5, "g", &leader, None, &range(&["t"]));
    assert!(!h.responses.contains_key(&t));
    // The follower keeps heartbeating (so its session never expires) but never rejoins.
    let mut elapsed = 0;
    while elapsed < REBALANCE_MS as i64 - 3000 {
        h.advance(3000);
        elapsed += 3000;
        assert_eq!(
            h.heartbeat("g", &follower, generation),
            ResponseError::RebalanceInProgress.code()
        );
    }
    assert!(!h.responses.contains_key(&t));
    h.advance(3000);
    let r = h.join_resp(t);
    assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
    assert_eq!(r.members.len(), 1, "the follower was dropped");
    assert_eq!(
        h.heartbeat("g", &follower, generation),
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn zombies_are_fenced() {
    let mut h = Harness::quick();
    let (leader, follower, generation) = h.stable_pair("g");
    assert_eq!(
        h.heartbeat("g", &follower, generation - 1),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        h.heartbeat("g", "nobody", generation),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.heartbeat("other-group", &follower, generation),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.commit(8, "g", &follower, generation - 1, &[("t", 0, 1)]),
        vec![ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        h.commit(8, "g", "", -1, &[("t", 0, 1)]),
        vec![ResponseError::UnknownMemberId.code()],
        "only members may commit for a non-empty group"
    );
    let t = h.sync("g", &follower, generation - 1, &[]);
    assert_eq!(
        h.sync_resp(t).error_code,
        ResponseError::IllegalGeneration.code()
    );

    // During a rebalance heartbeats say REBALANCE_IN_PROGRESS, commits are still accepted.
    let tj = h.join(5, "g", &leader, None, &range(&["t"]));
    assert_eq!(
        h.heartbeat("g", &follower, generation),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        h.commit(8, "g", &follower, generation, &[("t", 0, 7)]),
        vec![0]
    );
    let t = h.sync("g", &follower, generation, &[]);
    assert_eq!(
        h.sync_resp(t).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    // The follower rejoins: new generation; the old generation is now a zombie.
    let tf = h.join(5, "g", &follower, None, &range(&["t"]));
    let (rl, rf) = (h.join_resp(tj), h.join_resp(tf));
    assert_eq!(rl.generation_id, generation + 1);
    assert_eq!(rf.generation_id, generation + 1);
    assert_eq!(
        h.commit(8, "g", &follower, generation, &[("t", 0, 8)]),
        vec![ResponseError::IllegalGeneration.code()]
    );
    // In CompletingRebalance commits of the current generation must wait for the assignment.
    assert_eq!(
        h.commit(8, "g", &follower, generation + 1, &[("t", 0, 8)]),
        vec![ResponseError::RebalanceInProgress.code()]
    );
}

#[test]
fn kip_394_member_id_required() {
    let mut h = Harness::quick();
    // v4+: a dynamic member first gets an id and must come back with it.
    let t = h.join(4, "g", "", None, &range(&["t"]));
    let r = h.join_resp(t);
    assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
    assert!(r.member_id.starts_with("client-"));
    assert_eq!(r.generation_id, -1);
    assert_eq!(h.c.group_state("g"), Some(GroupState::Empty));
    let t = h.join(4, "g", &r.member_id, None, &range(&["t"]));
    let r2 = h.join_resp(t);
    assert_eq!(
        (r2.error_code, r2.member_id.as_str()),
        (0, r.member_id.as_str())
    );

    // v3 and older: joined at once with a generated id.
    let t = h.join(3, "g2", "", None, &range(&["t"]));
    let r = h.join_resp(t);
    assert_eq!((r.error_code, r.generation_id), (0, 1));
    assert!(!r.member_id.is_empty());

    // A pending member that never comes back is forgotten after its session timeout; until then it
    // holds up the rebalance of the group it would join.
    let (leader, follower, generation) = h.stable_pair("g3");
    let t = h.join(5, "g3", "", None, &range(&["t"]));
    let pending = h.join_resp(t).member_id.to_string();
    let tl = h.join(5, "g3", &leader, None, &range(&["t"]));
    let tf = h.join(5, "g3", &follower, None, &range(&["t"]));
    assert!(!h.responses.contains_key(&tl) && !h.responses.contains_key(&tf));
    h.advance(SESSION_MS as i64 + 1);
    for t in [tl, tf] {
        let r = h.join_resp(t);
        assert_eq!((r.error_code, r.generation_id), (0, generation + 1));
    }
    let t = h.join(5, "g3", &pending, None, &range(&["t"]));
    assert_eq!(
        h.join_resp(t).error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[test]
fn static_member_rejoins_without_a_rebalance() {
    let mut h = Harness::quick();
    // Static members skip KIP-394.
    let ta = h.join(9, "g", "", Some("ia"), &range(&["t"]));
    let a = h.join_resp(ta);
    assert_eq!((a.error_code, a.generation_id), (0, 1));
    assert!(a.member_id.starts_with("ia-"));
    let t = h.sync("g", &a.member_id, 1, &[(&a.member_id, b"A")]);
    assert_eq!(h.sync_resp(t).error_code, 0);

    // The client restarts: same instance id, no member id, same protocols.
    let log_before = h.log.len();
    let t = h.join(9, "g", "", Some("ia"), &range(&["t"]));
    let r = h.join_resp(t);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1, "no rebalance");
    assert_ne!(r.member_id, a.member_id);
    // v9 (KIP-814): the rejoined leader learns it leads but must skip assignment.
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_eq!(h.c.group_state("g"), Some(GroupState::Stable));
    assert_eq!(
        h.log.len(),
        log_before + 1,
        "the new member id is persisted first"
    );

    // The old incarnation is fenced; the new one continues with its old assignment.
    assert_eq!(
        h.heartbeat_static("g", &a.member_id, Some("ia"), 1),
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(h.heartbeat_static("g", &r.member_id, Some("ia"), 1), 0);
    let t = h.sync("g", &r.member_id, 1, &[]);
    assert_eq!(h.sync_resp(t).assignment.as_ref(), b"A");

    // A static rejoin with different protocols does rebalance.
    let t = h.join(
        9,
        "g",
        "",
        Some("ia"),
        &[("roundrobin", sub(&["t"])), ("range", sub(&["t"]))],
    );
    assert_eq!(h.c.group_state("g"), Some(GroupState::CompletingRebalance));
    let r2 = h.join_resp(t);
    assert_eq!(
        (r2.generation_id, r2.protocol_name.as_deref()),
        (2, Some("roundrobin"))
    );
}

#[test]
fn batched_leave() {
    let mut h = Harness::quick();
    let (leader, follower, _) = h.stable_pair("g");
    let req = LeaveGroupRequest::default()
        .with_group_id(gid("g"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(sb(&leader)),
            MemberIdentity::default().with_member_id(sb("ghost")),
            MemberIdentity::default().with_member_id(sb(&follower)),
        ]);
    let t = h.send(5, req);
    let Some(ResponseKind::LeaveGroup(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, ResponseError::UnknownMemberId.code(), 0]);
    // Everyone left: the group is empty and that is persisted.
    assert_eq!(h.c.group_state("g"), Some(GroupState::Empty));
    assert!(
        matches!(h.log.last(), Some((_, StoreRecord::Group { value: Some(v), .. })) if v.members.is_empty())
    );

    // v0–v2 leave one member and put its error at the top level.
    let req = LeaveGroupRequest::default()
        .with_group_id(gid("g"))
        .with_member_id(sb("ghost"));
    let t = h.send(1, req);
    let Some(ResponseKind::LeaveGroup(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
}

#[test]
fn stable_follower_rejoin_with_same_metadata_needs_no_rebalance() {
    let mut h = Harness::quick();
    let (_, follower, generation) = h.stable_pair("g");
    let t = h.join(5, "g", &follower, None, &range(&["t"]));
    let r = h.join_resp(t);
    assert_eq!((r.error_code, r.generation_id), (0, generation));
    assert!(r.members.is_empty());
    assert_eq!(h.c.group_state("g"), Some(GroupState::Stable));
    // Changed metadata (a cooperative client revoking, or a new subscription) rebalances.
    let t = h.join(5, "g", &follower, None, &range(&["t", "u"]));
    assert!(!h.responses.contains_key(&t));
    assert_eq!(h.c.group_state("g"), Some(GroupState::PreparingRebalance));
}

#[test]
fn protocol_is_chosen_by_member_votes() {
    let mut h = Harness::quick();
    let m = sub(&["t"]);
    let t1 = h.join(
        3,
        "g",
        "",
        None,
        &[("range", m.clone()), ("roundrobin", m.clone())],
    );
    let id1 = h.join_resp(t1).member_id.to_string();
    let t2 = h.join(
        3,
        "g",
        "",
        None,
        &[("roundrobin", m.clone()), ("range", m.clone())],
    );
    let t1 = h.join(
        3,
        "g",
        &id1,
        None,
        &[("range", m.clone()), ("roundrobin", m.clone())],
    );
    h.join_resp(t1);
    let id2 = h.join_resp(t2).member_id.to_string();
    let t3 = h.join(
        3,
        "g",
        "",
        None,
        &[("roundrobin", m.clone()), ("sticky", m.clone())],
    );
    // A member sharing no protocol with the group is refused.
    let bad = h.join(3, "g", "", None, &[("sticky", m.clone())]);
    assert_eq!(
        h.join_resp(bad).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    assert!(!h.responses.contains_key(&t3));
    // The others rejoin; roundrobin is the only protocol all three support.
    let t1 = h.join(
        3,
        "g",
        &id1,
        None,
        &[("range", m.clone()), ("roundrobin", m.clone())],
    );
    let t2 = h.join(
        3,
        "g",
        &id2,
        None,
        &[("roundrobin", m.clone()), ("range", m.clone())],
    );
    for t in [t1, t2, t3] {
        let r = h.join_resp(t);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
    }
    // Empty protocol type or list cannot start a group.
    let mut req = Harness::join_req("g4", "", None, &[]);
    req.protocol_type = sb("consumer");
    let t = h.send(3, req);
    assert_eq!(
        h.join_resp(t).error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
}

#[test]
fn offset_commit_and_fetch() {
    let mut h = Harness::quick();
    // A standalone consumer (no group management) commits with generation -1.
    assert_eq!(
        h.commit(
            8,
            "solo",
            "",
            -1,
            &[("t", 0, 10), ("t", 1, 11), ("u", 0, 5)]
        ),
        vec![0, 0, 0]
    );
    assert_eq!(h.log.len(), 3, "each offset is stored before the answer");
    let r = h.fetch("solo", Some(&[("t", &[0, 2])]));
    let parts = &r.topics[0].partitions;
    assert_eq!(
        (
            parts[0].committed_offset,
            parts[0].committed_leader_epoch,
            parts[0].metadata.as_deref()
        ),
        (10, 5, Some("m"))
    );
    assert_eq!((parts[1].committed_offset, parts[1].error_code), (-1, 0));
    let all = h.fetch("solo", None);
    let n: usize = all.topics.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(n, 3);
    // Unknown groups have no offsets, and no error.
    let r = h.fetch("nobody", Some(&[("t", &[0])]));
    assert_eq!(r.topics[0].partitions[0].committed_offset, -1);

    // v8+: several groups at once.
    let (leader, _, generation) = h.stable_pair("cg");
    assert_eq!(
        h.commit(8, "cg", &leader, generation, &[("t", 0, 99)]),
        vec![0]
    );
    let req = OffsetFetchRequest::default()
        .with_require_stable(true)
        .with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("cg"))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(sb("t")))
                        .with_partition_indexes(vec![0]),
                ])),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("solo"))
                .with_topics(None),
            OffsetFetchRequestGroup::default().with_group_id(gid("")),
        ]);
    let t = h.send(9, req);
    let Some(ResponseKind::OffsetFetch(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.groups.len(), 3);
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 99);
    assert_eq!(r.groups[1].topics.len(), 2);
    assert_eq!(
        r.groups[2].error_code, 0,
        "the empty group id is valid for offsets"
    );

    // Old versions: v1 has no top-level error, v2 with retention time.
    assert_eq!(h.commit(2, "solo", "", -1, &[("t", 0, 12)]), vec![0]);
    let req = OffsetFetchRequest::default()
        .with_group_id(gid("solo"))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let t = h.send(1, req);
    let Some(ResponseKind::OffsetFetch(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].committed_offset, 12);

    // Oversized metadata is refused per partition.
    let big = "x".repeat(5000);
    let req = OffsetCommitRequest::default()
        .with_group_id(gid("solo"))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(sb(&big))),
                ]),
        ]);
    let t = h.send(8, req);
    let Some(ResponseKind::OffsetCommit(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::OffsetMetadataTooLarge.code()
    );
    // A generation of a group that does not exist.
    assert_eq!(
        h.commit(8, "ghost", "m", 3, &[("t", 0, 1)]),
        vec![ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        h.commit(9, "ghost", "m", 3, &[("t", 0, 1)]),
        vec![ResponseError::GroupIdNotFound.code()]
    );
}

/// What a client can observe of a group: state, members (id, metadata, assignment), offsets
/// (topic, partition, offset, leader epoch, metadata) and generation.
type Observed = (
    String,
    Vec<(String, Bytes, Bytes)>,
    Vec<(String, i32, i64, i32, String)>,
    Option<i32>,
);

fn observe(h: &mut Harness, group: &str) -> Observed {
    let d = h.describe(5, group);
    let mut members: Vec<(String, Bytes, Bytes)> = d
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.member_metadata.clone(),
                m.member_assignment.clone(),
            )
        })
        .collect();
    members.sort();
    let offsets = h
        .fetch(group, None)
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.metadata.as_deref().unwrap_or("").to_owned(),
                )
            })
        })
        .collect();
    (
        d.group_state.to_string(),
        members,
        offsets,
        h.c.group_generation(group),
    )
}

#[test]
fn replaying_the_log_rebuilds_the_same_state() {
    let mut h = Harness::quick();
    let (leader, follower, generation) = h.stable_pair("g");
    assert_eq!(
        h.commit(8, "g", &leader, generation, &[("t", 0, 10), ("t", 1, 20)]),
        vec![0, 0]
    );
    assert_eq!(
        h.commit(8, "g", &follower, generation, &[("t", 1, 21)]),
        vec![0]
    );
    assert_eq!(h.commit(8, "solo", "", -1, &[("x", 3, 7)]), vec![0]);
    assert_eq!(h.commit(8, "gone", "", -1, &[("x", 0, 1)]), vec![0]);
    let t = h.send(
        2,
        DeleteGroupsRequest::default().with_groups_names(vec![gid("gone")]),
    );
    h.take(t);
    // Static member replaced in a stable group (persisted without a rebalance).
    let ts = h.join(9, "s", "", Some("i1"), &range(&["t"]));
    let s1 = h.join_resp(ts).member_id.to_string();
    let t = h.sync("s", &s1, 1, &[(&s1, b"S")]);
    h.take(t);
    let t = h.join(9, "s", "", Some("i1"), &range(&["t"]));
    let s2 = h.join_resp(t).member_id.to_string();

    let before: Vec<_> = ["g", "solo", "gone", "s"]
        .iter()
        .map(|g| observe(&mut h, g))
        .collect();

    // kill -9: a fresh coordinator loads every partition from the log.
    let log = std::mem::take(&mut h.log);
    let mut fresh = GroupCoordinator::new(h.c.config().clone());
    for p in 0..fresh.config().num_partitions {
        let records: Vec<&StoreRecord> = log
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| r)
            .collect();
        fresh.load_partition(p, records, h.now).unwrap();
    }
    h.c = fresh;
    let after: Vec<_> = ["g", "solo", "gone", "s"]
        .iter()
        .map(|g| observe(&mut h, g))
        .collect();
    assert_eq!(before, after);
    assert_eq!(h.c.group_state("gone"), None);

    // Members carry on with their generation after the restart ...
    assert_eq!(h.heartbeat("g", &leader, generation), 0);
    assert_eq!(h.heartbeat_static("s", &s2, Some("i1"), 1), 0);
    assert_eq!(
        h.heartbeat_static("s", &s1, Some("i1"), 1),
        ResponseError::FencedInstanceId.code()
    );
    // ... and one that died with the broker is evicted a session timeout later.
    for _ in 0..3 {
        h.advance(3000);
        assert_eq!(h.heartbeat("g", &leader, generation), 0);
    }
    h.advance(1001);
    assert_eq!(h.c.group_state("g"), Some(GroupState::PreparingRebalance));
    assert_eq!(
        h.heartbeat("g", &leader, generation),
        ResponseError::RebalanceInProgress.code()
    );
    let _ = follower;
}

#[test]
fn offsets_expire_after_retention_and_deleted_topics_lose_them() {
    let retention = 60_000;
    let mut h = Harness::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        num_partitions: 4,
        offsets_retention_ms: retention,
        offsets_retention_check_interval_ms: 1000,
        ..GroupConfig::default()
    });
    // A standalone group: expires `retention` after its commit.
    h.commit(8, "solo", "", -1, &[("t", 0, 1)]);
    // A consumer group that then empties: expires `retention` after it became empty, however old
    // the commit.
    let (leader, follower, generation) = h.stable_pair("cg");
    h.commit(
        8,
        "cg",
        &leader,
        generation,
        &[("t", 0, 5), ("gone-topic", 0, 3)],
    );
    for _ in 0..10 {
        h.advance(3000);
        assert_eq!(h.heartbeat("cg", &leader, generation), 0);
        assert_eq!(h.heartbeat("cg", &follower, generation), 0);
    }
    let req = LeaveGroupRequest::default()
        .with_group_id(gid("cg"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(sb(&leader)),
            MemberIdentity::default().with_member_id(sb(&follower)),
        ]);
    let t = h.send(3, req);
    h.take(t);
    assert_eq!(h.c.group_state("cg"), Some(GroupState::Empty));

    // The broker deletes a topic: its offsets get tombstones right away.
    let n = h.log.len();
    let actions = h.c.topic_deleted("gone-topic", h.now);
    h.run(actions);
    assert_eq!(
        h.log[n..]
            .iter()
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>(),
        vec![StoreRecord::Offset {
            key: crate::store::OffsetKey {
                group_id: "cg".into(),
                topic: "gone-topic".into(),
                partition: 0
            },
            value: None
        }]
    );

    h.advance(retention / 2 + 1000);
    assert_eq!(
        h.c.group_state("solo"),
        None,
        "standalone group expired with its offset"
    );
    assert_eq!(
        h.fetch("cg", Some(&[("t", &[0])])).topics[0].partitions[0].committed_offset,
        5
    );
    h.advance(retention / 2);
    assert_eq!(h.c.group_state("cg"), None);
    // Tombstones for the offsets and the groups, replayable to nothing.
    let mut fresh = GroupCoordinator::new(h.c.config().clone());
    for p in 0..4 {
        let records: Vec<&StoreRecord> = h
            .log
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| r)
            .collect();
        fresh.load_partition(p, records, h.now).unwrap();
    }
    assert_eq!(fresh.group_state("cg"), None);
    assert_eq!(fresh.group_state("solo"), None);
}

#[test]
fn delete_groups_and_offsets() {
    let mut h = Harness::quick();
    let (leader, _, generation) = h.stable_pair("cg");
    h.commit(
        8,
        "cg",
        &leader,
        generation,
        &[("t", 0, 5), ("other", 0, 3)],
    );
    h.commit(8, "solo", "", -1, &[("t", 0, 1)]);
    let req =
        DeleteGroupsRequest::default().with_groups_names(vec![gid("cg"), gid("solo"), gid("nope")]);
    let t = h.send(2, req);
    let Some(ResponseKind::DeleteGroups(r)) = h.take(t) else {
        panic!()
    };
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(
        codes,
        vec![
            ResponseError::NonEmptyGroup.code(),
            0,
            ResponseError::GroupIdNotFound.code()
        ]
    );
    assert_eq!(h.c.group_state("solo"), None);

    // OffsetDelete: a consumer group keeps offsets of topics it subscribes to.
    let req = OffsetDeleteRequest::default()
        .with_group_id(gid("cg"))
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(sb("t")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(sb("other")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let t = h.send(0, req);
    let Some(ResponseKind::OffsetDelete(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::GroupSubscribedToTopic.code()
    );
    assert_eq!(r.topics[1].partitions[0].error_code, 0);
    let offsets = h.fetch("cg", None);
    assert_eq!(offsets.topics.len(), 1);
    assert_eq!(offsets.topics[0].name.0.as_str(), "t");

    // v6 DescribeGroups reports unknown groups as GROUP_ID_NOT_FOUND, older ones as Dead.
    assert_eq!(
        h.describe(6, "nope").error_code,
        ResponseError::GroupIdNotFound.code()
    );
    let d = h.describe(5, "nope");
    assert_eq!((d.error_code, d.group_state.as_str()), (0, "Dead"));

    let t = h.send(
        5,
        ListGroupsRequest::default().with_states_filter(vec![sb("stable")]),
    );
    let Some(ResponseKind::ListGroups(r)) = h.take(t) else {
        panic!()
    };
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].group_id.0.as_str(), "cg");
}

#[test]
fn partitions_that_are_not_owned_or_still_loading() {
    let mut c = GroupCoordinator::new(GroupConfig {
        num_partitions: 2,
        ..GroupConfig::default()
    });
    let ctx = RequestContext {
        token: 1,
        api_version: 4,
        client_id: "c".into(),
        client_host: "/h".into(),
    };
    let hb = |g: &str| {
        RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(gid(g))
                .with_member_id(sb("m")),
        )
    };
    let code = |actions: Vec<Action>| match &actions[..] {
        [
            Action::Respond(Response {
                body: ResponseKind::Heartbeat(r),
                ..
            }),
        ] => r.error_code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(c.handle(&ctx, hb("g"), 0).unwrap()),
        ResponseError::NotCoordinator.code()
    );
    let p = c.partition_for("g");
    c.begin_load(p);
    // Kafka answers heartbeats blindly while loading.
    assert_eq!(code(c.handle(&ctx, hb("g"), 0).unwrap()), 0);
    let join = Harness::join_req("g", "", None, &range(&["t"]));
    let actions = c.handle(&ctx, RequestKind::JoinGroup(join), 0).unwrap();
    assert!(
        matches!(&actions[..], [Action::Respond(Response { body: ResponseKind::JoinGroup(r), .. })]
        if r.error_code == ResponseError::CoordinatorLoadInProgress.code())
    );
    c.finish_load(p, 0);
    assert_eq!(
        code(c.handle(&ctx, hb("g"), 0).unwrap()),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        code(c.handle(&ctx, hb(""), 0).unwrap()),
        ResponseError::InvalidGroupId.code()
    );
    assert!(
        c.handle(&ctx, RequestKind::ApiVersions(Default::default()), 0)
            .is_err()
    );
}

#[test]
fn unloading_answers_parked_requests() {
    let mut h = Harness::new(GroupConfig {
        num_partitions: 4,
        ..GroupConfig::default()
    });
    let t = h.join(3, "g", "", None, &range(&["t"]));
    assert!(!h.responses.contains_key(&t), "parked in the initial delay");
    let p = h.c.partition_for("g");
    let actions = h.c.unload_partition(p);
    h.run(actions);
    assert_eq!(
        h.join_resp(t).error_code,
        ResponseError::NotCoordinator.code()
    );
    assert_eq!(h.c.group_state("g"), None);
}

#[test]
fn members_that_never_sync_are_removed() {
    let mut h = Harness::quick();
    let (a, ta) = h.join_dynamic("g", &range(&["t"]));
    h.join_resp(ta);
    let (b, tb) = h.join_dynamic("g", &range(&["t"]));
    let ta = h.join(5, "g", &a, None, &range(&["t"]));
    let (ra, _rb) = (h.join_resp(ta), h.join_resp(tb));
    // The first member leads; it syncs, the other never does.
    assert_eq!(ra.leader.as_str(), a);
    let t = h.sync("g", &a, ra.generation_id, &[]);
    assert_eq!(h.sync_resp(t).error_code, 0);
    // Both keep heartbeating, but b never sends SyncGroup: after the rebalance timeout it is removed.
    let generation = ra.generation_id;
    for _ in 0..(REBALANCE_MS / 3000) - 1 {
        h.advance(3000);
        assert_eq!(h.heartbeat("g", &a, generation), 0);
        assert_eq!(h.heartbeat("g", &b, generation), 0);
    }
    h.advance(3001);
    assert_eq!(
        h.heartbeat("g", &b, generation),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        h.heartbeat("g", &a, generation),
        ResponseError::RebalanceInProgress.code()
    );
    let d = h.describe(5, "g");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id.as_str(), a);
}

#[test]
fn every_supported_version_is_answered_in_an_encodable_form() {
    let mut h = Harness::quick();
    for v in 0..=9i16 {
        let g = format!("g{v}");
        let instance = (v >= 5 && v % 2 == 1).then(|| format!("i{v}"));
        let mut t = h.join(v, &g, "", instance.as_deref(), &range(&["t"]));
        let mut r = h.join_resp(t);
        if r.error_code == ResponseError::MemberIdRequired.code() {
            t = h.join(v, &g, &r.member_id, None, &range(&["t"]));
            r = h.join_resp(t);
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        let member = r.member_id.to_string();
        let sync = SyncGroupRequest::default()
            .with_group_id(gid(&g))
            .with_member_id(sb(&member))
            .with_group_instance_id(instance.as_deref().map(sb))
            .with_generation_id(r.generation_id)
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(sb(&member))
                    .with_assignment(Bytes::from_static(b"a")),
            ]);
        let t = h.send(v.min(5), sync);
        assert_eq!(h.sync_resp(t).error_code, 0, "SyncGroup v{}", v.min(5));
        let hb = HeartbeatRequest::default()
            .with_group_id(gid(&g))
            .with_member_id(sb(&member))
            .with_group_instance_id(instance.as_deref().map(sb))
            .with_generation_id(r.generation_id);
        let t = h.send(v.min(4), hb);
        assert!(matches!(h.take(t), Some(ResponseKind::Heartbeat(r)) if r.error_code == 0));
        let commit = OffsetCommitRequest::default()
            .with_group_id(gid(&g))
            .with_member_id(sb(&member))
            .with_group_instance_id(instance.as_deref().map(sb))
            .with_generation_id_or_member_epoch(r.generation_id)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(3),
                    ]),
            ]);
        let t = h.send(v.clamp(2, 9), commit);
        assert!(
            matches!(h.take(t), Some(ResponseKind::OffsetCommit(r)) if r.topics[0].partitions[0].error_code == 0)
        );
        let fv = v.clamp(1, 9);
        let fetch = if fv < 8 {
            OffsetFetchRequest::default()
                .with_group_id(gid(&g))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(sb("t")))
                        .with_partition_indexes(vec![0]),
                ]))
        } else {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default().with_group_id(gid(&g)),
            ])
        };
        let t = h.send(fv, fetch);
        assert!(matches!(h.take(t), Some(ResponseKind::OffsetFetch(_))));
        let t = h.send(
            v.min(6),
            DescribeGroupsRequest::default()
                .with_groups(vec![gid(&g), gid("unknown")])
                .with_include_authorized_operations(v >= 3),
        );
        assert!(matches!(h.take(t), Some(ResponseKind::DescribeGroups(_))));
        let t = h.send(v.min(5), ListGroupsRequest::default());
        assert!(matches!(h.take(t), Some(ResponseKind::ListGroups(_))));
        let leave = if v.min(5) >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(gid(&g))
                .with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(sb(&member))
                        .with_group_instance_id(instance.as_deref().map(sb)),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(gid(&g))
                .with_member_id(sb(&member))
        };
        let t = h.send(v.min(5), leave);
        assert!(matches!(h.take(t), Some(ResponseKind::LeaveGroup(r)) if r.error_code == 0));
        let t = h.send(
            v.min(2),
            DeleteGroupsRequest::default().with_groups_names(vec![gid(&g)]),
        );
        assert!(
            matches!(h.take(t), Some(ResponseKind::DeleteGroups(r)) if r.results[0].error_code == 0)
        );
        assert_eq!(h.c.group_state(&g), None);
    }
    // Error forms too.
    for v in 0..=9i16 {
        let t = h.join(v, "", "", None, &range(&["t"]));
        assert_eq!(
            h.join_resp(t).error_code,
            ResponseError::InvalidGroupId.code()
        );
    }
    for v in 1..=9i16 {
        let req = if v < 8 {
            OffsetFetchRequest::default()
                .with_group_id(gid("x"))
                .with_topics(Some(vec![]))
        } else {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default().with_group_id(gid("x")),
            ])
        };
        let p = h.c.partition_for("x");
        h.c.begin_load(p);
        let t = h.send(v, req);
        assert!(matches!(h.take(t), Some(ResponseKind::OffsetFetch(_))));
        h.c.finish_load(p, h.now);
    }
}

#[test]
fn a_restarted_static_member_fences_its_parked_old_incarnation() {
    let mut h = Harness::quick();
    let t = h.join(5, "g", "", Some("ia"), &range(&["t"]));
    let old = h.join_resp(t).member_id.to_string();
    let t = h.sync("g", &old, 1, &[(&old, b"A")]);
    assert_eq!(h.sync_resp(t).error_code, 0);
    let (b, tb) = h.join_dynamic("g", &range(&["t"]));
    let t_old = h.join(5, "g", &old, Some("ia"), &range(&["t"]));
    let (r_old, rb) = (h.join_resp(t_old), h.join_resp(tb));
    assert_eq!((r_old.generation_id, rb.generation_id), (2, 2));

    // The old incarnation rejoins with new metadata and is parked until b rejoins ...
    let t_old = h.join(5, "g", &old, Some("ia"), &range(&["t", "v"]));
    assert!(!h.responses.contains_key(&t_old));
    assert_eq!(h.c.group_state("g"), Some(GroupState::PreparingRebalance));
    // ... when the client restarts with the same instance id: the parked old join is fenced.
    let t_new = h.join(5, "g", "", Some("ia"), &range(&["t", "v"]));
    assert_eq!(
        h.join_resp(t_old).error_code,
        ResponseError::FencedInstanceId.code()
    );
    assert!(!h.responses.contains_key(&t_new));
    let tb = h.join(5, "g", &b, None, &range(&["t"]));
    let (rn, rb) = (h.join_resp(t_new), h.join_resp(tb));
    assert_eq!((rn.error_code, rb.error_code), (0, 0));
    assert_eq!((rn.generation_id, rb.generation_id), (3, 3));
    assert_ne!(rn.member_id.as_str(), old);
    assert_eq!(
        h.heartbeat_static("g", &old, Some("ia"), 3),
        ResponseError::FencedInstanceId.code()
    );
}
