//! A classic group's state (Kafka's `GroupMetadata`): members, generation, protocol and timers.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use super::member::Member;
use crate::store::{GroupMetadataValue, OffsetValue, StoreRecord};

/// The classic group states, named as Kafka names them in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; the group may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join before a new generation starts.
    PreparingRebalance,
    /// A generation started; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted or unloaded; never visible for long because dead groups are dropped.
    Dead,
}

impl GroupState {
    /// Kafka's wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What the join phase of a rebalance is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinTimer {
    /// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group waits for more members,
    /// extending by one delay each time a member arrives, up to the rebalance timeout.
    Initial { deadline_ms: i64, remaining_ms: i64 },
    /// Kafka's `DelayedJoin`: completes when every member rejoined, or at the deadline.
    Rebalance { deadline_ms: i64 },
}

/// A group and its committed offsets.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    /// Partition of the internal log that stores this group.
    pub partition: i32,
    pub state: GroupState,
    pub state_since_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Ordered so leader fallback and member lists are deterministic.
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → member id of static members.
    pub static_members: BTreeMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending_members: BTreeMap<String, i64>,
    /// Members that got their JoinGroup response but have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    /// Members that have to rejoin before the current rebalance can complete, see `JoinTimer`.
    pub join_timer: Option<JoinTimer>,
    /// Set when a member is added during the initial delayed join, which extends the delay.
    pub new_member_added: bool,
    /// Members still in `pending_sync` at this time are removed and the group rebalances.
    pub sync_deadline_ms: Option<i64>,
    /// Topics the members subscribe to, when the protocol type is `consumer` and parsable.
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Offsets of open transactions (TxnOffsetCommit) by producer id, applied by its commit
    /// marker and dropped by its abort marker.
    pub pending_txn: BTreeMap<i64, BTreeMap<(String, i32), OffsetValue>>,
}

impl Group {
    pub fn new(id: &str, partition: i32, now_ms: i64) -> Group {
        Group {
            id: id.to_owned(),
            partition,
            state: GroupState::Empty,
            state_since_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            join_timer: None,
            new_member_added: false,
            sync_deadline_ms: None,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
        }
    }

    pub fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    pub fn transition(&mut self, to: GroupState, now_ms: i64) {
        use GroupState::*;
        let valid = match to {
            Empty => matches!(self.state, PreparingRebalance),
            PreparingRebalance => matches!(self.state, Empty | Stable | CompletingRebalance),
            CompletingRebalance => matches!(self.state, PreparingRebalance),
            Stable => matches!(self.state, CompletingRebalance),
            Dead => true,
        };
        assert!(
            valid,
            "group {}: invalid transition {:?} -> {:?}",
            self.id, self.state, to
        );
        tracing::debug!(group = %self.id, from = self.state.as_str(), to = to.as_str(), "group state");
        self.state = to;
        self.state_since_ms = now_ms;
        if to != PreparingRebalance {
            self.join_timer = None;
            self.new_member_added = false;
        }
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Adds a member; the first member fixes the protocol type and becomes leader.
    pub fn add(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        debug_assert_eq!(
            self.protocol_type.as_deref(),
            Some(member.protocol_type.as_str())
        );
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        self.pending_members.remove(&member.id);
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member (without answering its pending requests: callers do that first).
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id);
        if let Some(m) = &member
            && let Some(instance) = &m.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        member
    }

    /// Kafka's `supportsProtocols`: a joining member must share the protocol type and at least one
    /// protocol with every current member (an empty group accepts any non-empty offer).
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> Vec<&str> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    /// Kafka's `selectProtocol`: every member votes for its most preferred common protocol and the
    /// most votes win. Kafka breaks ties by hash order; we break them by the leader's preference so
    /// the choice is deterministic.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(v) = m.vote(&candidates) {
                *votes.entry(v).or_default() += 1;
            }
        }
        let max = votes.values().copied().max()?;
        let leader_order = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        leader_order
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| votes.get(n) == Some(&max))
            .or_else(|| votes.iter().find(|(_, v)| **v == max).map(|(n, _)| *n))
            .map(str::to_owned)
    }

    /// The largest rebalance timeout of the members: how long a join phase may take.
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    /// Every member sent its JoinGroup and no KIP-394 member id is still outstanding.
    pub fn has_all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// Kafka's `maybeElectNewJoinedLeader`: if the leader did not rejoin, any rejoined member leads.
    /// False when nobody rejoined.
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.clone() else {
            return false;
        };
        if self
            .members
            .get(&leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                tracing::info!(group = %self.id, old = %leader, new = %m.id, "new leader elected");
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// Decodes the consumer protocol subscriptions to learn the subscribed topics (used by offset
    /// expiry and OffsetDelete). `None` when the group is not a consumer group or a subscription does
    /// not parse, which makes both conservative.
    pub fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let metadata = m.metadata(protocol);
            let mut buf = metadata.clone();
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            // Newer clients may send a newer version; its prefix is readable as our newest one.
            let version = version.clamp(0, 3);
            let sub = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
            topics.extend(sub.topics.iter().map(|t| t.as_str().to_owned()));
        }
        Some(topics)
    }

    /// Kafka's `isSubscribedToTopic`: unknown subscriptions count as subscribed.
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match (&self.subscribed_topics, self.members.is_empty()) {
            (_, true) => false,
            (Some(topics), false) => topics.contains(topic),
            (None, false) => true,
        }
    }

    /// The durable metadata record of the group as it is now.
    pub fn metadata_record(&self) -> StoreRecord {
        let protocol = self.protocol_name.as_deref();
        StoreRecord::Group {
            group_id: self.id.clone(),
            value: Some(GroupMetadataValue {
                protocol_type: self.protocol_type.clone(),
                generation: self.generation,
                protocol: self.protocol_name.clone(),
                leader: self.leader.clone(),
                state_timestamp_ms: self.state_since_ms,
                members: self
                    .members
                    .values()
                    .map(|m| m.to_value(protocol))
                    .collect(),
            }),
        }
    }

    /// Replaces the membership part of the group with a stored record (replay).
    pub fn apply_metadata(&mut self, v: &GroupMetadataValue, now_ms: i64) {
        self.protocol_type = v.protocol_type.clone();
        self.generation = v.generation;
        self.protocol_name = v.protocol.clone();
        self.leader = v.leader.clone();
        self.state_since_ms = v.state_timestamp_ms;
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.pending_sync.clear();
        self.join_timer = None;
        self.sync_deadline_ms = None;
        let protocol_type = v.protocol_type.clone().unwrap_or_default();
        for mv in &v.members {
            let m = Member::from_value(mv, &protocol_type, v.protocol.as_deref(), now_ms);
            if let Some(i) = &m.instance_id {
                self.static_members.insert(i.clone(), m.id.clone());
            }
            self.members.insert(m.id.clone(), m);
        }
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.subscribed_topics = self.compute_subscribed_topics();
    }
}
