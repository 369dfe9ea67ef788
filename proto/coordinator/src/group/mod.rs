//! The classic group coordinator: groups, their rebalances and their committed offsets.
//!
//! [`GroupCoordinator`] owns a set of partitions of the internal log. A group lives in partition
//! [`partition_for`](crate::partition_for)`(group_id, n)`; requests for groups of other partitions are
//! answered NOT_COORDINATOR, and groups of a partition that is still being replayed answer
//! COORDINATOR_LOAD_IN_PROGRESS, exactly like a Kafka broker that leads some `__consumer_offsets`
//! partitions.

mod admin;
mod member;
mod offsets;
mod rebalance;
mod responses;
mod state;
#[cfg(test)]
mod tests;
mod txn_offsets;

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse, RequestKind,
    SyncGroupRequest,
};

pub use state::GroupState;

use self::rebalance::{JoinArgs, SyncArgs};
use self::responses as resp;
use self::state::Group;
use crate::store::{StoreRecord, partition_for};
use crate::{Action, Out, RequestContext};

/// Tunables, named after the Kafka broker settings they mirror.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Partitions of the internal log (`offsets.topic.num.partitions`, default 50).
    pub num_partitions: i32,
    /// `group.initial.rebalance.delay.ms` (default 3000): how long the first rebalance of an empty
    /// group waits for more members. Tests and small deployments may set 0.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` (default 6000).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (default 1800000).
    pub max_session_timeout_ms: i32,
    /// How long a new member's parked JoinGroup keeps it alive (Kafka's 5 minutes).
    pub new_member_join_timeout_ms: i64,
    /// `group.max.size` (default unbounded).
    pub group_max_size: usize,
    /// `offsets.retention.minutes` in ms (default 7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms` (default 600000).
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes` (default 4096).
    pub offset_metadata_max_bytes: usize,
    /// Seed for generated member ids; give each process a random one so ids never repeat across
    /// restarts (the coordinator itself has no randomness).
    pub member_id_seed: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            num_partitions: 50,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            new_member_join_timeout_ms: 300_000,
            group_max_size: usize::MAX,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            member_id_seed: 0,
        }
    }
}

/// Why [`GroupCoordinator::replay`] refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The record's group maps to a partition that is not being loaded.
    #[error("record for group {group} belongs to partition {partition}, which is not loading")]
    NotLoading {
        /// Group id of the record.
        group: String,
        /// Its partition.
        partition: i32,
    },
}

/// A request the group coordinator does not handle, given back to the caller.
#[derive(Debug, thiserror::Error)]
#[error("not a group coordinator request")]
pub struct NotAGroupRequest(pub Box<RequestKind>);

/// Whether a partition of the internal log is usable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionStatus {
    Loading,
    Active,
}

/// Deterministic generator of unique member ids (`<client or instance id>-<uuid-like>`).
#[derive(Debug, Clone)]
pub(crate) struct MemberIds {
    seed: u64,
    counter: u64,
}

impl MemberIds {
    pub(crate) fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let a = splitmix64(self.seed ^ self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = splitmix64(a ^ self.counter);
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a group operation may touch besides the group: config, clocks, output, id generator.
pub(crate) struct Env<'a> {
    pub cfg: &'a GroupConfig,
    /// The wall clock: state and commit timestamps.
    pub now_ms: i64,
    /// The clock timers run on (heartbeat, join and sync deadlines): see
    /// [`GroupCoordinator::set_monotonic`].
    pub mono_ms: i64,
    pub out: &'a mut Out,
    pub ids: &'a mut MemberIds,
}

/// The sans-IO classic group coordinator. See the crate docs for how a server drives it.
#[derive(Debug)]
pub struct GroupCoordinator {
    cfg: GroupConfig,
    partitions: BTreeMap<i32, PartitionStatus>,
    groups: BTreeMap<String, Group>,
    ids: MemberIds,
    next_expiry_check_ms: Option<i64>,
    /// The monotonic clock as last handed in; `None`: timers run on the wall clock given.
    mono: Option<i64>,
}

impl GroupCoordinator {
    /// A coordinator that owns no partitions yet: load some with [`GroupCoordinator::load_partition`].
    pub fn new(cfg: GroupConfig) -> GroupCoordinator {
        assert!(cfg.num_partitions > 0, "num_partitions must be positive");
        assert!(cfg.initial_rebalance_delay_ms >= 0);
        let ids = MemberIds {
            seed: cfg.member_id_seed,
            counter: 0,
        };
        GroupCoordinator {
            cfg,
            partitions: BTreeMap::new(),
            groups: BTreeMap::new(),
            ids,
            next_expiry_check_ms: None,
            mono: None,
        }
    }

    /// Hands in the server's monotonic clock (`mono_ms`) with the wall clock read at the same
    /// moment (`now_ms`). From then on session, join and sync timeouts run on it, so a wall
    /// clock stepped forward does not expire every member at once (nor a step back hold
    /// expiries off); timestamps that are stored or shown keep the wall clock each call is
    /// given. [`GroupCoordinator::poll_timeout`] answers on the wall clock. Deadlines set
    /// before the first call (members loaded at start-up) are moved onto the new clock.
    pub fn set_monotonic(&mut self, mono_ms: i64, now_ms: i64) {
        match self.mono {
            Some(m) => self.mono = Some(m.max(mono_ms)),
            None => {
                let delta = mono_ms.saturating_sub(now_ms);
                for g in self.groups.values_mut() {
                    g.shift_deadlines(delta);
                }
                self.mono = Some(mono_ms);
            }
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The internal-log partition that stores `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.cfg.num_partitions)
    }

    /// The state of a group, if this coordinator holds it (for metrics and tests).
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// The generation of a group, if this coordinator holds it.
    pub fn group_generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation)
    }

    /// Handles any group request; other request kinds are given back.
    pub fn handle(
        &mut self,
        ctx: &RequestContext,
        request: RequestKind,
        now_ms: i64,
    ) -> Result<Vec<Action>, NotAGroupRequest> {
        Ok(match request {
            RequestKind::JoinGroup(r) => self.join_group(ctx, r, now_ms),
            RequestKind::SyncGroup(r) => self.sync_group(ctx, r, now_ms),
            RequestKind::Heartbeat(r) => self.heartbeat(ctx, r, now_ms),
            RequestKind::LeaveGroup(r) => self.leave_group(ctx, r, now_ms),
            RequestKind::OffsetCommit(r) => self.offset_commit(ctx, r, now_ms),
            RequestKind::OffsetFetch(r) => self.offset_fetch(ctx, r),
            RequestKind::OffsetDelete(r) => self.offset_delete(ctx, r, now_ms),
            RequestKind::ListGroups(r) => self.list_groups(ctx, r),
            RequestKind::DescribeGroups(r) => self.describe_groups(ctx, r),
            RequestKind::DeleteGroups(r) => self.delete_groups(ctx, r, now_ms),
            other => return Err(NotAGroupRequest(Box::new(other))),
        })
    }

    /// Kafka's `validateGroupStatus`. Offset and admin APIs accept the empty group id.
    fn group_status(&self, group_id: &str, allow_empty_id: bool) -> Result<(), ResponseError> {
        if group_id.is_empty() && !allow_empty_id {
            return Err(ResponseError::InvalidGroupId);
        }
        match self.partitions.get(&self.partition_for(group_id)) {
            None => Err(ResponseError::NotCoordinator),
            Some(PartitionStatus::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            Some(PartitionStatus::Active) => Ok(()),
        }
    }

    fn env_for<'a>(
        cfg: &'a GroupConfig,
        ids: &'a mut MemberIds,
        out: &'a mut Out,
        now_ms: i64,
        mono_ms: i64,
    ) -> Env<'a> {
        Env {
            cfg,
            now_ms,
            mono_ms,
            out,
            ids,
        }
    }

    /// JoinGroup (v0–v9). The answer may be deferred until the rebalance completes.
    pub fn join_group(
        &mut self,
        ctx: &RequestContext,
        req: JoinGroupRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let timer_ms = self.mono.unwrap_or(now_ms);
        let mut out = Out::default();
        let p = ctx.pending();
        let group_id = req.group_id.0.as_str().to_owned();
        let member_id = req.member_id.as_str().to_owned();
        if let Err(e) = self.group_status(&group_id, false) {
            out.respond(resp::join_error(p, &member_id, e));
            return out.into_actions();
        }
        if req.session_timeout_ms < self.cfg.min_session_timeout_ms
            || req.session_timeout_ms > self.cfg.max_session_timeout_ms
        {
            out.respond(resp::join_error(
                p,
                &member_id,
                ResponseError::InvalidSessionTimeout,
            ));
            return out.into_actions();
        }
        if !self.groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                out.respond(resp::join_error(
                    p,
                    &member_id,
                    ResponseError::UnknownMemberId,
                ));
                return out.into_actions();
            }
            let partition = self.partition_for(&group_id);
            self.groups
                .insert(group_id.clone(), Group::new(&group_id, partition, now_ms));
        }
        let instance_id = req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_owned());
        let args = JoinArgs {
            pending: p,
            require_known_member_id: ctx.api_version >= 4 && instance_id.is_none(),
            supports_skip_assignment: ctx.api_version >= 9,
            member_id,
            instance_id,
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout_ms: if ctx.api_version == 0 || req.rebalance_timeout_ms < 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols: req
                .protocols
                .into_iter()
                .map(|pr| (pr.name.as_str().to_owned(), pr.metadata))
                .collect(),
            reason: req.reason.map(|r| r.as_str().to_owned()),
        };
        let group = self.groups.get_mut(&group_id).expect("created above");
        let mut env = Self::env_for(&self.cfg, &mut self.ids, &mut out, now_ms, timer_ms);
        group.join(&mut env, args);
        out.into_actions()
    }

    /// SyncGroup (v0–v5). Followers wait for the leader; the leader's assignment is persisted first.
    pub fn sync_group(
        &mut self,
        ctx: &RequestContext,
        req: SyncGroupRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let timer_ms = self.mono.unwrap_or(now_ms);
        let mut out = Out::default();
        let p = ctx.pending();
        let group_id = req.group_id.0.as_str();
        match self.group_status(group_id, false) {
            // The rebalance state was lost with the old coordinator: make the member rejoin.
            Err(ResponseError::CoordinatorLoadInProgress) => {
                out.respond(resp::sync_error(p, ResponseError::RebalanceInProgress))
            }
            Err(e) => out.respond(resp::sync_error(p, e)),
            Ok(()) => match self.groups.get_mut(group_id) {
                None => out.respond(resp::sync_error(p, ResponseError::UnknownMemberId)),
                Some(group) => {
                    let args = SyncArgs {
                        pending: p,
                        member_id: req.member_id.as_str().to_owned(),
                        instance_id: req
                            .group_instance_id
                            .as_ref()
                            .map(|s| s.as_str().to_owned()),
                        generation: req.generation_id,
                        protocol_type: req.protocol_type.as_ref().map(|s| s.as_str().to_owned()),
                        protocol_name: req.protocol_name.as_ref().map(|s| s.as_str().to_owned()),
                        assignments: req
                            .assignments
                            .into_iter()
                            .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
                            .collect(),
                    };
                    let mut env =
                        Self::env_for(&self.cfg, &mut self.ids, &mut out, now_ms, timer_ms);
                    group.sync(&mut env, args);
                }
            },
        }
        out.into_actions()
    }

    /// Heartbeat (v0–v4). Always answered at once.
    pub fn heartbeat(
        &mut self,
        ctx: &RequestContext,
        req: HeartbeatRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let group_id = req.group_id.0.as_str();
        let code = match self.group_status(group_id, false) {
            // Kafka answers blindly while loading: the member will learn more once loaded.
            Err(ResponseError::CoordinatorLoadInProgress) => 0,
            Err(e) => e.code(),
            Ok(()) => match self.groups.get_mut(group_id) {
                None => ResponseError::UnknownMemberId.code(),
                Some(group) => group.heartbeat(
                    self.mono.unwrap_or(now_ms),
                    req.member_id.as_str(),
                    req.group_instance_id.as_ref().map(|s| s.as_str()),
                    req.generation_id,
                ),
            },
        };
        out.respond(resp::heartbeat(ctx.pending(), code));
        out.into_actions()
    }

    /// LeaveGroup (v0–v5; batched from v3).
    pub fn leave_group(
        &mut self,
        ctx: &RequestContext,
        req: LeaveGroupRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let timer_ms = self.mono.unwrap_or(now_ms);
        let mut out = Out::default();
        let group_id = req.group_id.0.as_str().to_owned();
        let leaving: Vec<(String, Option<String>, Option<String>)> = if ctx.api_version < 3 {
            vec![(req.member_id.as_str().to_owned(), None, None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_owned(),
                        m.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
                        m.reason.as_ref().map(|s| s.as_str().to_owned()),
                    )
                })
                .collect()
        };
        let (top, members): (i16, Vec<i16>) = match self.group_status(&group_id, false) {
            Err(e) => (e.code(), Vec::new()),
            Ok(()) => match self.groups.get_mut(&group_id) {
                None => (
                    0,
                    vec![ResponseError::UnknownMemberId.code(); leaving.len()],
                ),
                Some(group) => {
                    let mut env =
                        Self::env_for(&self.cfg, &mut self.ids, &mut out, now_ms, timer_ms);
                    let codes = leaving
                        .iter()
                        .map(|(id, instance, reason)| {
                            group.leave(&mut env, id, instance.as_deref(), reason.as_deref())
                        })
                        .collect();
                    (0, codes)
                }
            },
        };
        let mut body = LeaveGroupResponse::default();
        if ctx.api_version < 3 {
            body.error_code = if top != 0 {
                top
            } else {
                members.first().copied().unwrap_or(0)
            };
        } else {
            body.error_code = top;
            body.members = leaving
                .iter()
                .zip(&members)
                .map(|((id, instance, _), code)| {
                    MemberResponse::default()
                        .with_member_id(resp::s(id))
                        .with_group_instance_id(resp::opt_s(instance.as_deref()))
                        .with_error_code(*code)
                })
                .collect();
        }
        out.respond(resp::response(ctx.pending(), body));
        out.into_actions()
    }

    /// Drives every timer that is due: session timeouts, join and sync deadlines, the initial
    /// rebalance delay and offset expiry. Call when [`GroupCoordinator::poll_timeout`] has passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Action> {
        let mut out = Out::default();
        let timer_ms = self.mono.unwrap_or(now_ms);
        for group in self.groups.values_mut() {
            if self.partitions.get(&group.partition) != Some(&PartitionStatus::Active) {
                continue;
            }
            if group.next_deadline().is_some_and(|d| d <= timer_ms) {
                let mut env = Self::env_for(&self.cfg, &mut self.ids, &mut out, now_ms, timer_ms);
                group.tick(&mut env);
            }
        }
        if self.next_expiry_check_ms.is_some_and(|t| t <= now_ms) {
            self.next_expiry_check_ms = Some(now_ms + self.cfg.offsets_retention_check_interval_ms);
            self.expire_offsets(now_ms, &mut out);
        }
        out.into_actions()
    }

    /// When [`GroupCoordinator::tick`] next has work (absolute wall-clock ms, from `now_ms`, the
    /// wall clock now), or `None` if never.
    ///
    /// Computed by scanning the groups: cheap for thousands of groups; a timer wheel would be the
    /// next step beyond that.
    pub fn poll_timeout(&self, now_ms: i64) -> Option<i64> {
        // Group deadlines are on the timer clock: as a wall-clock time from `now_ms`.
        let to_wall = |d: i64| now_ms.saturating_add(d - self.mono.unwrap_or(now_ms));
        self.groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .filter_map(Group::next_deadline)
            .map(to_wall)
            .chain(self.next_expiry_check_ms)
            .min()
    }

    /// Starts loading `partition`: its groups answer COORDINATOR_LOAD_IN_PROGRESS until
    /// [`GroupCoordinator::finish_load`]. Any state of the partition held before is dropped.
    pub fn begin_load(&mut self, partition: i32) {
        assert!((0..self.cfg.num_partitions).contains(&partition));
        self.groups.retain(|_, g| g.partition != partition);
        self.partitions.insert(partition, PartitionStatus::Loading);
    }

    /// Applies one stored record, in log order, to a partition being loaded.
    /// Producer-id blocks are not group state and are ignored.
    pub fn replay(&mut self, record: &StoreRecord) -> Result<(), ReplayError> {
        let Some(group_id) = record.group_id() else {
            return Ok(());
        };
        let partition = self.partition_for(group_id);
        if self.partitions.get(&partition) != Some(&PartitionStatus::Loading) {
            return Err(ReplayError::NotLoading {
                group: group_id.to_owned(),
                partition,
            });
        }
        match record {
            StoreRecord::Offset { key, value } => match value {
                Some(v) => {
                    self.groups
                        .entry(key.group_id.clone())
                        .or_insert_with(|| {
                            Group::new(&key.group_id, partition, v.commit_timestamp_ms)
                        })
                        .offsets
                        .insert((key.topic.clone(), key.partition), v.clone());
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&key.group_id) {
                        g.offsets.remove(&(key.topic.clone(), key.partition));
                        if g.is_vacant() {
                            self.groups.remove(&key.group_id);
                        }
                    }
                }
            },
            StoreRecord::Group { group_id, value } => match value {
                Some(v) => {
                    self.groups
                        .entry(group_id.clone())
                        .or_insert_with(|| Group::new(group_id, partition, v.state_timestamp_ms))
                        .apply_metadata(v, 0);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(group_id) {
                        let offsets = std::mem::take(&mut g.offsets);
                        *g = Group::new(group_id, partition, g.state_since_ms);
                        g.offsets = offsets;
                        if g.is_vacant() {
                            self.groups.remove(group_id);
                        }
                    }
                }
            },
            StoreRecord::ProducerIdBlock { .. } | StoreRecord::Transaction { .. } => {
                unreachable!("has no group id")
            }
        }
        Ok(())
    }

    /// Ends the load of `partition`: loaded members must heartbeat within a session timeout of
    /// `now_ms`, as after a Kafka coordinator failover.
    pub fn finish_load(&mut self, partition: i32, now_ms: i64) {
        for g in self
            .groups
            .values_mut()
            .filter(|g| g.partition == partition)
        {
            for m in g.members.values_mut() {
                m.touch(self.mono.unwrap_or(now_ms));
            }
        }
        self.partitions.insert(partition, PartitionStatus::Active);
        self.next_expiry_check_ms
            .get_or_insert(now_ms + self.cfg.offsets_retention_check_interval_ms);
        tracing::debug!(
            partition,
            groups = self
                .groups
                .values()
                .filter(|g| g.partition == partition)
                .count(),
            "coordinator partition loaded"
        );
    }

    /// Loads a partition from its records in log order (`begin_load`, `replay`…, `finish_load`).
    pub fn load_partition<'r>(
        &mut self,
        partition: i32,
        records: impl IntoIterator<Item = &'r StoreRecord>,
        now_ms: i64,
    ) -> Result<(), ReplayError> {
        self.begin_load(partition);
        for r in records {
            self.replay(r)?;
        }
        self.finish_load(partition, now_ms);
        Ok(())
    }

    /// Gives up `partition` (leadership moved): its groups are dropped and parked requests are
    /// answered NOT_COORDINATOR so clients look the coordinator up again.
    pub fn unload_partition(&mut self, partition: i32) -> Vec<Action> {
        let mut out = Out::default();
        self.partitions.remove(&partition);
        let ids: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.partition == partition)
            .map(|g| g.id.clone())
            .collect();
        for id in ids {
            let g = self.groups.remove(&id).expect("listed");
            for m in g.members.into_values() {
                if let Some(p) = m.awaiting_join {
                    out.respond(resp::join_error(p, &m.id, ResponseError::NotCoordinator));
                }
                if let Some(p) = m.awaiting_sync {
                    out.respond(resp::sync_error(p, ResponseError::NotCoordinator));
                }
            }
        }
        if self.partitions.is_empty() {
            self.next_expiry_check_ms = None;
        }
        out.into_actions()
    }

    /// Partitions this coordinator owns (loaded or loading).
    pub fn owned_partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }
}

impl Group {
    /// A group with nothing worth keeping: no members, metadata, offsets or pending joins.
    fn is_vacant(&self) -> bool {
        self.members.is_empty()
            && self.offsets.is_empty()
            && self.pending_txn.is_empty()
            && self.pending_members.is_empty()
            && self.generation == 0
            && self.protocol_type.is_none()
    }
}
