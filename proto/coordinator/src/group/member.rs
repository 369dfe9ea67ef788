//! One member of a classic group (Kafka's `MemberMetadata`).

use bytes::Bytes;

use crate::Pending;
use crate::store::MemberValue;

/// A member as the coordinator tracks it between requests.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: String,
    /// Static membership id (KIP-345): survives restarts of the client with a new member id.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// Supported protocols in the member's preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub awaiting_join: Option<Pending>,
    /// A SyncGroup waiting for the leader's assignment.
    pub awaiting_sync: Option<Pending>,
    /// Joined in the current rebalance and not yet answered: expires on the new-member timeout,
    /// because a client that gave up on a long JoinGroup cannot heartbeat to keep itself alive.
    pub is_new: bool,
    /// The member is evicted if no heartbeat (or other proof of life) arrives before this.
    pub heartbeat_deadline_ms: i64,
}

impl Member {
    /// Whether the member's protocols equal `protocols` (names, order and metadata).
    pub fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// The member's first choice among `candidates` (Kafka's `MemberMetadata.vote`).
    pub fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| candidates.contains(name))
    }

    /// Whether a missed heartbeat deadline is forgiven: members blocked in a JoinGroup or SyncGroup
    /// cannot heartbeat, the rebalance timeout bounds them instead (except new members).
    pub fn heartbeat_satisfied(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    /// Proof of life: push the session deadline out by one session timeout.
    pub fn touch(&mut self, now_ms: i64) {
        self.heartbeat_deadline_ms = now_ms + self.session_timeout_ms as i64;
    }

    /// The durable form, with the metadata of the selected protocol only (as Kafka stores it).
    pub fn to_value(&self, protocol: Option<&str>) -> MemberValue {
        MemberValue {
            member_id: self.id.clone(),
            group_instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            session_timeout_ms: self.session_timeout_ms,
            subscription: protocol.map(|p| self.metadata(p)).unwrap_or_default(),
            assignment: self.assignment.clone(),
        }
    }

    /// Rebuilds a member from its durable form; it must heartbeat within a session timeout of `now_ms`.
    pub fn from_value(
        v: &MemberValue,
        protocol_type: &str,
        protocol: Option<&str>,
        now_ms: i64,
    ) -> Member {
        Member {
            id: v.member_id.clone(),
            instance_id: v.group_instance_id.clone(),
            client_id: v.client_id.clone(),
            client_host: v.client_host.clone(),
            rebalance_timeout_ms: v.rebalance_timeout_ms,
            session_timeout_ms: v.session_timeout_ms,
            protocol_type: protocol_type.to_owned(),
            protocols: protocol
                .map(|p| vec![(p.to_owned(), v.subscription.clone())])
                .unwrap_or_default(),
            assignment: v.assignment.clone(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
            heartbeat_deadline_ms: now_ms + v.session_timeout_ms as i64,
        }
    }
}
