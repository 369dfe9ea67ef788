//! The classic rebalance protocol of one group: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
//! timers that bound them. Mirrors Kafka's `GroupCoordinator` (Scala, 3.x) method by method so error
//! codes and corner cases match what clients were written against.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;

use super::Env;
use super::member::Member;
use super::responses::{self as resp, JoinResult};
use super::state::{Group, GroupState, JoinTimer};
use crate::{Action, Pending, StoreWrite};

/// A decoded JoinGroup, after the coordinator checked the group id and session timeout.
pub(crate) struct JoinArgs {
    pub pending: Pending,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394: v4+ dynamic members must first obtain a member id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+ understands `skip_assignment` (KIP-814).
    pub supports_skip_assignment: bool,
    pub reason: Option<String>,
}

/// A decoded SyncGroup.
pub(crate) struct SyncArgs {
    pub pending: Pending,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

impl Group {
    /// Kafka's `acceptJoiningMember` (group.max.size).
    pub(crate) fn accept_joining_member(&self, member_id: &str, max_size: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || self
                        .members
                        .values()
                        .filter(|m| m.awaiting_join.is_some())
                        .count()
                        < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.has_member(member_id) || self.members.len() < max_size
            }
        }
    }

    /// Kafka's `validateCurrentMember`: the static id (if any) must map to this member id, and the
    /// member id must be known.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            return match self.static_members.get(instance) {
                Some(current) if current != member_id => {
                    tracing::info!(group = %self.id, instance, member_id, current = %current,
                        "fencing static member with stale member id");
                    Err(ResponseError::FencedInstanceId)
                }
                Some(_) => Ok(()),
                None => Err(ResponseError::UnknownMemberId),
            };
        }
        if self.has_member(member_id) {
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        }
    }

    /// JoinGroup, from `doNewMemberJoinGroup` / `doCurrentMemberJoinGroup`.
    pub(crate) fn join(&mut self, env: &mut Env<'_>, args: JoinArgs) {
        if !self.accept_joining_member(&args.member_id, env.cfg.group_max_size) {
            env.out.respond(resp::join_error(
                args.pending,
                &args.member_id,
                ResponseError::GroupMaxSizeReached,
            ));
        } else if args.member_id.is_empty() {
            self.join_new_member(env, args);
        } else {
            self.join_known_member(env, args);
        }
        if self.is(GroupState::PreparingRebalance) {
            self.try_complete_join(env);
        }
    }

    fn join_new_member(&mut self, env: &mut Env<'_>, args: JoinArgs) {
        if !self.supports_protocols(&args.protocol_type, &args.protocols) {
            env.out.respond(resp::join_error(
                args.pending,
                "",
                ResponseError::InconsistentGroupProtocol,
            ));
            return;
        }
        let prefix = args.instance_id.as_deref().unwrap_or(&args.client_id);
        let mut new_id = env.ids.next(prefix);
        while self.has_member(&new_id) || self.pending_members.contains_key(&new_id) {
            new_id = env.ids.next(prefix);
        }
        if let Some(instance) = args.instance_id.clone() {
            match self.static_members.get(&instance).cloned() {
                Some(old_id) => {
                    tracing::info!(group = %self.id, instance = %instance, old = %old_id, new = %new_id,
                        state = self.state.as_str(), "static member rejoined, replacing its member id");
                    self.update_static_member_and_rebalance(env, &old_id, new_id, args);
                }
                None => self.add_member_and_rebalance(env, new_id, args),
            }
        } else if args.require_known_member_id {
            // KIP-394: remember the id; the member must come back with it within a session timeout.
            self.pending_members
                .insert(new_id.clone(), env.mono_ms + args.session_timeout_ms as i64);
            env.out.respond(resp::join_error(
                args.pending,
                &new_id,
                ResponseError::MemberIdRequired,
            ));
        } else {
            self.add_member_and_rebalance(env, new_id, args);
        }
    }

    fn join_known_member(&mut self, env: &mut Env<'_>, args: JoinArgs) {
        let id = args.member_id.clone();
        if !self.supports_protocols(&args.protocol_type, &args.protocols) {
            env.out.respond(resp::join_error(
                args.pending,
                &id,
                ResponseError::InconsistentGroupProtocol,
            ));
            return;
        }
        if self.pending_members.contains_key(&id) {
            // The second JoinGroup of KIP-394. Pending members are dynamic by construction.
            let mut args = args;
            args.instance_id = None;
            self.add_member_and_rebalance(env, id, args);
            return;
        }
        if let Err(e) = self.validate_member(&id, args.instance_id.as_deref()) {
            env.out.respond(resp::join_error(args.pending, &id, e));
            return;
        }
        let matches = self.members[&id].matches(&args.protocols);
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(env, &id, args),
            GroupState::CompletingRebalance if matches => {
                // A retry of a join whose response was lost: answer with the current generation.
                let members = if self.is_leader(&id) {
                    self.current_member_metadata()
                } else {
                    Vec::new()
                };
                let r = self.join_result(&id, members, false);
                env.out.respond(resp::join(args.pending, r));
            }
            GroupState::CompletingRebalance => self.update_member_and_rebalance(env, &id, args),
            GroupState::Stable if self.is_leader(&id) || !matches => {
                // A leader's rejoin forces a rebalance: that is how it reacts to topic metadata
                // changes that do not change any member's metadata.
                self.update_member_and_rebalance(env, &id, args);
            }
            GroupState::Stable => {
                // A follower with unchanged metadata (e.g. a cooperative client's follow-up join)
                // just learns the current generation and can SyncGroup.
                let r = self.join_result(&id, Vec::new(), false);
                env.out.respond(resp::join(args.pending, r));
            }
            GroupState::Empty | GroupState::Dead => {
                tracing::warn!(group = %self.id, member = %id, state = self.state.as_str(),
                    "known member joined a group in an unexpected state");
                env.out.respond(resp::join_error(
                    args.pending,
                    &id,
                    ResponseError::UnknownMemberId,
                ));
            }
        }
    }

    fn join_result<'a>(
        &'a self,
        member_id: &'a str,
        members: Vec<JoinGroupResponseMember>,
        skip: bool,
    ) -> JoinResult<'a> {
        JoinResult {
            error: 0,
            member_id,
            generation: self.generation,
            protocol_type: self.protocol_type.as_deref(),
            protocol_name: self.protocol_name.as_deref(),
            leader: self.leader.as_deref().unwrap_or(""),
            members,
            skip_assignment: skip,
        }
    }

    /// What the leader receives: every member with its metadata for the selected protocol.
    fn current_member_metadata(&self) -> Vec<JoinGroupResponseMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(resp::s(&m.id))
                    .with_group_instance_id(resp::opt_s(m.instance_id.as_deref()))
                    .with_metadata(m.metadata(protocol))
            })
            .collect()
    }

    fn add_member_and_rebalance(&mut self, env: &mut Env<'_>, id: String, args: JoinArgs) {
        tracing::info!(group = %self.id, member = %id, instance = ?args.instance_id,
            reason = ?args.reason, "adding new member");
        let member = Member {
            id,
            instance_id: args.instance_id,
            client_id: args.client_id,
            client_host: args.client_host,
            rebalance_timeout_ms: args.rebalance_timeout_ms,
            session_timeout_ms: args.session_timeout_ms,
            protocol_type: args.protocol_type,
            protocols: args.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(args.pending),
            awaiting_sync: None,
            is_new: true,
            // A new member cannot heartbeat while its join is parked: bound it separately.
            heartbeat_deadline_ms: env.mono_ms + env.cfg.new_member_join_timeout_ms,
        };
        if self.is(GroupState::PreparingRebalance) && self.generation == 0 {
            self.new_member_added = true;
        }
        self.add(member);
        self.maybe_prepare_rebalance(env, "new member joined");
    }

    fn update_member_and_rebalance(&mut self, env: &mut Env<'_>, id: &str, args: JoinArgs) {
        let member = self.members.get_mut(id).expect("validated member");
        member.protocols = args.protocols;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.session_timeout_ms = args.session_timeout_ms;
        if let Some(old) = member.awaiting_join.replace(args.pending) {
            // Superseded by the retry; the client no longer waits for it.
            env.out.respond(resp::join_error(
                old,
                id,
                ResponseError::RebalanceInProgress,
            ));
        }
        self.maybe_prepare_rebalance(env, "member rejoined");
    }

    fn update_static_member_and_rebalance(
        &mut self,
        env: &mut Env<'_>,
        old_id: &str,
        new_id: String,
        args: JoinArgs,
    ) {
        let current_leader = self.leader.clone();
        let mut member = self.members.remove(old_id).expect("static member exists");
        // Fence the previous incarnation if it is still waiting on a rebalance.
        if let Some(p) = member.awaiting_join.take() {
            env.out
                .respond(resp::join_error(p, old_id, ResponseError::FencedInstanceId));
        }
        if let Some(p) = member.awaiting_sync.take() {
            env.out
                .respond(resp::sync_error(p, ResponseError::FencedInstanceId));
        }
        member.id = new_id.clone();
        member.protocols = args.protocols;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.session_timeout_ms = args.session_timeout_ms;
        member.awaiting_join = Some(args.pending);
        member.touch(env.mono_ms);
        if self.is_leader(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);

        match self.state {
            GroupState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    // Same protocol: no rebalance, just persist the new member id (KIP-345).
                    let pending = self
                        .members
                        .get_mut(&new_id)
                        .and_then(|m| m.awaiting_join.take())
                        .expect("just set");
                    let (members, leader, skip) = if args.supports_skip_assignment {
                        let leads = self.is_leader(&new_id);
                        let members = if leads {
                            self.current_member_metadata()
                        } else {
                            Vec::new()
                        };
                        (members, self.leader.clone(), leads)
                    } else {
                        // Old clients: report the old leader id so the rejoined leader does not
                        // think it must assign (a stable group would ignore that assignment).
                        (Vec::new(), current_leader, false)
                    };
                    let mut r = self.join_result(&new_id, members, skip);
                    r.leader = leader.as_deref().unwrap_or("");
                    let response = resp::join(pending, r);
                    let write = StoreWrite {
                        partition: self.partition,
                        record: self.metadata_record(),
                    };
                    env.out.push(Action::Persist {
                        writes: vec![write],
                        then: vec![response],
                    });
                } else {
                    self.maybe_prepare_rebalance(env, "static member rejoined with new protocols");
                }
            }
            GroupState::CompletingRebalance => {
                // The leader may already be assigning to the old member id: start over.
                self.prepare_rebalance(env, "static member rejoined during CompletingRebalance");
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {
                unreachable!("group {} with a static member is {:?}", self.id, self.state)
            }
        }
    }

    /// Starts a rebalance unless one is already preparing.
    pub(crate) fn maybe_prepare_rebalance(&mut self, env: &mut Env<'_>, reason: &str) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(env, reason);
        }
    }

    pub(crate) fn prepare_rebalance(&mut self, env: &mut Env<'_>, reason: &str) {
        tracing::info!(group = %self.id, generation = self.generation, state = self.state.as_str(),
            reason, "preparing rebalance");
        if self.is(GroupState::CompletingRebalance) {
            self.reset_and_propagate_assignment_error(env, ResponseError::RebalanceInProgress);
        }
        self.sync_deadline_ms = None;
        let timer = if self.is(GroupState::Empty) {
            let delay = env.cfg.initial_rebalance_delay_ms;
            JoinTimer::Initial {
                deadline_ms: env.mono_ms + delay,
                remaining_ms: (self.rebalance_timeout_ms() - delay).max(0),
            }
        } else {
            JoinTimer::Rebalance {
                deadline_ms: env.mono_ms + self.rebalance_timeout_ms(),
            }
        };
        self.transition(GroupState::PreparingRebalance, env.now_ms);
        self.join_timer = Some(timer);
        match timer {
            JoinTimer::Initial { deadline_ms, .. } if deadline_ms <= env.mono_ms => {
                self.on_join_timer(env)
            }
            JoinTimer::Initial { .. } => {}
            JoinTimer::Rebalance { .. } => self.try_complete_join(env),
        }
    }

    /// Completes the join phase early when everyone is in (never during the initial delay).
    pub(crate) fn try_complete_join(&mut self, env: &mut Env<'_>) {
        if matches!(self.join_timer, Some(JoinTimer::Rebalance { .. }))
            && self.has_all_members_joined()
        {
            self.complete_join(env);
        }
    }

    /// The join-phase deadline passed.
    fn on_join_timer(&mut self, env: &mut Env<'_>) {
        match self.join_timer {
            Some(JoinTimer::Initial { remaining_ms, .. })
                if self.new_member_added && remaining_ms > 0 =>
            {
                // Someone arrived during the delay: wait one more delay for stragglers.
                self.new_member_added = false;
                let delay = env.cfg.initial_rebalance_delay_ms.min(remaining_ms);
                self.join_timer = Some(JoinTimer::Initial {
                    deadline_ms: env.mono_ms + delay,
                    remaining_ms: remaining_ms - delay,
                });
            }
            _ => self.complete_join(env),
        }
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, start the next generation
    /// and answer every parked JoinGroup (the leader gets the member list).
    fn complete_join(&mut self, env: &mut Env<'_>) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "removing member that did not rejoin in time");
            if let Some(m) = self.remove(&id)
                && let Some(p) = m.awaiting_sync
            {
                env.out
                    .respond(resp::sync_error(p, ResponseError::UnknownMemberId));
            }
        }
        if self.is(GroupState::Dead) {
            return;
        }
        if !self.maybe_elect_new_joined_leader() && !self.members.is_empty() {
            // Only static members that did not rejoin are left: wait another rebalance timeout
            // (their session timeouts will remove them if they are gone for good).
            tracing::warn!(group = %self.id, "no member rejoined; extending the join phase");
            // At least 1 ms, so a zero rebalance timeout cannot make the timer spin.
            self.join_timer = Some(JoinTimer::Rebalance {
                deadline_ms: env.mono_ms + self.rebalance_timeout_ms().max(1),
            });
            return;
        }
        self.generation += 1;
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, env.now_ms);
            self.subscribed_topics = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is now empty");
            env.out.push(Action::Persist {
                writes: vec![StoreWrite {
                    partition: self.partition,
                    record: self.metadata_record(),
                }],
                then: Vec::new(),
            });
            return;
        }
        self.protocol_name = self.select_protocol();
        self.subscribed_topics = self.compute_subscribed_topics();
        self.transition(GroupState::CompletingRebalance, env.now_ms);
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(),
            protocol = ?self.protocol_name, leader = ?self.leader, "stabilized group");
        let leader_members = self.current_member_metadata();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let pending = self
                .members
                .get_mut(&id)
                .and_then(|m| m.awaiting_join.take());
            if let Some(p) = pending {
                let members = if self.is_leader(&id) {
                    leader_members.clone()
                } else {
                    Vec::new()
                };
                let r = self.join_result(&id, members, false);
                env.out.respond(resp::join(p, r));
            }
            let m = self.members.get_mut(&id).expect("member");
            m.touch(env.mono_ms);
            m.is_new = false;
            self.pending_sync.insert(id);
        }
        self.sync_deadline_ms = Some(env.mono_ms + self.rebalance_timeout_ms());
    }

    fn reset_and_propagate_assignment_error(&mut self, env: &mut Env<'_>, error: ResponseError) {
        debug_assert!(self.is(GroupState::CompletingRebalance));
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(p) = m.awaiting_sync.take() {
                env.out.respond(resp::sync_error(p, error));
                m.touch(env.mono_ms);
            }
        }
    }

    /// Removes a member that left or timed out, and rebalances the rest.
    pub(crate) fn remove_member_and_update(&mut self, env: &mut Env<'_>, id: &str, reason: &str) {
        let Some(member) = self.remove(id) else {
            return;
        };
        tracing::info!(group = %self.id, member = %id, reason, "removing member");
        if let Some(p) = member.awaiting_join {
            env.out
                .respond(resp::join_error(p, "", ResponseError::UnknownMemberId));
        }
        if let Some(p) = member.awaiting_sync {
            env.out
                .respond(resp::sync_error(p, ResponseError::UnknownMemberId));
        }
        match self.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(env, reason)
            }
            GroupState::PreparingRebalance => self.try_complete_join(env),
        }
    }

    /// SyncGroup, from `doSyncGroup`.
    pub(crate) fn sync(&mut self, env: &mut Env<'_>, args: SyncArgs) {
        let p = args.pending;
        if let Err(e) = self.validate_sync(&args) {
            env.out.respond(resp::sync_error(p, e));
            return;
        }
        match self.state {
            GroupState::Empty => {
                env.out
                    .respond(resp::sync_error(p, ResponseError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                env.out
                    .respond(resp::sync_error(p, ResponseError::RebalanceInProgress));
            }
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(&args.member_id).expect("validated");
                if let Some(old) = member.awaiting_sync.replace(p) {
                    env.out
                        .respond(resp::sync_error(old, ResponseError::RebalanceInProgress));
                }
                self.pending_sync.remove(&args.member_id);
                if self.is_leader(&args.member_id) {
                    self.complete_sync(env, args.assignments);
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&args.member_id);
                let member = self.members.get_mut(&args.member_id).expect("validated");
                member.touch(env.mono_ms);
                let assignment = member.assignment.clone();
                env.out.respond(resp::sync(
                    p,
                    0,
                    self.protocol_type.as_deref(),
                    self.protocol_name.as_deref(),
                    assignment,
                ));
            }
            GroupState::Dead => unreachable!("dead groups are not reachable"),
        }
    }

    fn validate_sync(&self, args: &SyncArgs) -> Result<(), ResponseError> {
        if self.is(GroupState::Dead) {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.validate_member(&args.member_id, args.instance_id.as_deref())?;
        if args.generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if args
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || args
                .protocol_name
                .as_ref()
                .is_some_and(|n| self.protocol_name.as_ref() != Some(n))
        {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// The leader's assignment arrived: store it, then answer every parked SyncGroup.
    ///
    /// The group becomes Stable in memory at once; the answers wait for the store write, so no member
    /// acts on an assignment that a crash could forget.
    fn complete_sync(&mut self, env: &mut Env<'_>, assignments: Vec<(String, Bytes)>) {
        let mut by_member: BTreeMap<String, Bytes> = assignments.into_iter().collect();
        let missing: Vec<&String> = self
            .members
            .keys()
            .filter(|id| !by_member.contains_key(*id))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(group = %self.id, generation = self.generation, ?missing,
                "leader sent no assignment for some members; giving them empty ones");
        }
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(),
            "assignment received from leader");
        let mut responses = Vec::new();
        for m in self.members.values_mut() {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
            if let Some(p) = m.awaiting_sync.take() {
                responses.push(resp::sync(
                    p,
                    0,
                    self.protocol_type.as_deref(),
                    self.protocol_name.as_deref(),
                    m.assignment.clone(),
                ));
                m.touch(env.mono_ms);
            }
        }
        self.transition(GroupState::Stable, env.now_ms);
        env.out.push(Action::Persist {
            writes: vec![StoreWrite {
                partition: self.partition,
                record: self.metadata_record(),
            }],
            then: responses,
        });
    }

    /// Heartbeat, from `handleHeartbeat` (`timer_ms`: the clock timers run on); returns the
    /// error code to answer.
    pub(crate) fn heartbeat(
        &mut self,
        timer_ms: i64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        if self.is(GroupState::Dead) {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if let Err(e) = self.validate_member(member_id, instance_id) {
            return e.code();
        }
        if generation != self.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match self.state {
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members
                    .get_mut(member_id)
                    .expect("validated")
                    .touch(timer_ms);
                0
            }
            GroupState::PreparingRebalance => {
                self.members
                    .get_mut(member_id)
                    .expect("validated")
                    .touch(timer_ms);
                ResponseError::RebalanceInProgress.code()
            }
            GroupState::Dead => unreachable!(),
        }
    }

    /// One member of a LeaveGroup, from `handleLeaveGroup`; returns its error code.
    pub(crate) fn leave(
        &mut self,
        env: &mut Env<'_>,
        member_id: &str,
        instance_id: Option<&str>,
        reason: Option<&str>,
    ) -> i16 {
        let reason = format!("member left: {}", reason.unwrap_or("not provided"));
        if member_id.is_empty() {
            // Administrative removal by group.instance.id.
            return match instance_id
                .and_then(|i| self.static_members.get(i))
                .cloned()
            {
                Some(current) => {
                    self.remove_member_and_update(env, &current, &reason);
                    0
                }
                None => ResponseError::UnknownMemberId.code(),
            };
        }
        if self.pending_members.remove(member_id).is_some() {
            if self.is(GroupState::PreparingRebalance) {
                self.try_complete_join(env);
            }
            return 0;
        }
        match self.validate_member(member_id, instance_id) {
            Ok(()) => {
                self.remove_member_and_update(env, member_id, &reason);
                0
            }
            Err(e) => e.code(),
        }
    }

    /// Fires every expired timer of the group.
    pub(crate) fn tick(&mut self, env: &mut Env<'_>) {
        let now = env.mono_ms;
        if self.is(GroupState::PreparingRebalance)
            && let Some(
                JoinTimer::Initial { deadline_ms, .. } | JoinTimer::Rebalance { deadline_ms },
            ) = self.join_timer
            && deadline_ms <= now
        {
            self.on_join_timer(env);
        }
        if let Some(deadline) = self.sync_deadline_ms
            && deadline <= now
        {
            self.sync_deadline_ms = None;
            if matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) && !self.pending_sync.is_empty()
            {
                let late: Vec<String> = self.pending_sync.iter().cloned().collect();
                tracing::info!(group = %self.id, ?late, "members did not sync in time");
                for id in &late {
                    if let Some(m) = self.remove(id) {
                        if let Some(p) = m.awaiting_join {
                            env.out.respond(resp::join_error(
                                p,
                                "",
                                ResponseError::UnknownMemberId,
                            ));
                        }
                        if let Some(p) = m.awaiting_sync {
                            env.out
                                .respond(resp::sync_error(p, ResponseError::UnknownMemberId));
                        }
                    }
                }
                self.prepare_rebalance(env, "pending sync expired");
            }
        }
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            tracing::info!(group = %self.id, member = %id, "pending member expired");
            self.pending_members.remove(&id);
            if self.is(GroupState::PreparingRebalance) {
                self.try_complete_join(env);
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline_ms <= now && !m.heartbeat_satisfied())
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update(env, &id, "session timeout expired");
        }
    }

    /// The earliest time `tick` has work for this group.
    /// Moves every deadline by `delta` ms: when the timers' clock changes from the wall clock
    /// to the monotonic one (see `GroupCoordinator::set_monotonic`).
    pub(crate) fn shift_deadlines(&mut self, delta: i64) {
        for m in self.members.values_mut() {
            m.heartbeat_deadline_ms = m.heartbeat_deadline_ms.saturating_add(delta);
        }
        for d in self.pending_members.values_mut() {
            *d = d.saturating_add(delta);
        }
        if let Some(JoinTimer::Initial { deadline_ms, .. } | JoinTimer::Rebalance { deadline_ms }) =
            &mut self.join_timer
        {
            *deadline_ms = deadline_ms.saturating_add(delta);
        }
        if let Some(d) = &mut self.sync_deadline_ms {
            *d = d.saturating_add(delta);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let join = match (self.state, self.join_timer) {
            (
                GroupState::PreparingRebalance,
                Some(JoinTimer::Initial { deadline_ms, .. } | JoinTimer::Rebalance { deadline_ms }),
            ) => Some(deadline_ms),
            _ => None,
        };
        let sync = self.sync_deadline_ms;
        let pending = self.pending_members.values().copied().min();
        let members = self
            .members
            .values()
            .filter(|m| !m.heartbeat_satisfied())
            .map(|m| m.heartbeat_deadline_ms)
            .min();
        [join, sync, pending, members].into_iter().flatten().min()
    }
}
