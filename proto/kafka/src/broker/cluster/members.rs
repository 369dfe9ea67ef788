//! Node membership (KIP-853's AddRaftVoter and RemoveRaftVoter): a node is added to or removed
//! from the cluster's members in `__meta`. The `__meta` leader then changes `__meta`'s Raft
//! voters one step at a time (the replica core, as for a partition move): a new node joins as
//! a learner and votes once caught up. A removed node's replicas move to the other members
//! first (decommission); it leaves `__meta` once it holds none. Both answer once the change is
//! recorded; `sluice cluster add-node` / `remove-node` then follow it to the end.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
    ResponseKind,
};

use super::super::{Broker, Reply, str};
use super::AdminWait;
use crate::cluster::MetaCommand;

/// A voter heard from within this long (ms) counts as up when a removal checks the quorum.
const UP_WITHIN_MS: i64 = 2000;

impl Broker {
    /// AddRaftVoter: records the node as a member (its Raft address from the first listener).
    pub(in crate::broker) fn add_raft_voter(&mut self, req: AddRaftVoterRequest) -> Reply {
        let fail = |e: ResponseError, m: String| {
            Reply::Now(ResponseKind::AddRaftVoter(
                AddRaftVoterResponse::default()
                    .with_error_code(e.code())
                    .with_error_message(Some(str(&m))),
            ))
        };
        if let Some(refusal) = self.membership_refusal(req.cluster_id.as_deref()) {
            return fail(refusal.0, refusal.1);
        }
        let node = req.voter_id;
        let Some(listener) = req.listeners.first() else {
            return fail(
                ResponseError::InvalidRequest,
                format!(
                    "AddRaftVoter for node {node} names no listener: give its raft address (HOST:PORT)"
                ),
            );
        };
        let raft_addr = format!("{}:{}", listener.host.as_str(), listener.port);
        if let Ok(ip) = listener.host.as_str().parse::<std::net::IpAddr>()
            && ip.is_unspecified()
        {
            return fail(
                ResponseError::InvalidRequest,
                format!(
                    "{raft_addr} is not an address other nodes can reach node {node} at: give its IP or host name"
                ),
            );
        }
        let c = self.cluster.as_ref().expect("checked");
        if c.meta.members().contains(&node) {
            let at = c
                .meta
                .raft_addrs
                .get(&node)
                .map_or("unknown", String::as_str);
            return fail(
                ResponseError::DuplicateVoter,
                format!("node {node} is already a member of the cluster (raft address {at})"),
            );
        }
        let token = self.new_token();
        let response = ResponseKind::AddRaftVoter(AddRaftVoterResponse::default());
        self.one_change(token, response, |request| MetaCommand::AddMember {
            request: Some(request),
            node_id: node,
            raft_addr,
        });
        Reply::Parked { token }
    }

    /// RemoveRaftVoter: refused when a partition would find no other member for its replica or
    /// the remaining members could not form a quorum; else the node stops being a member and
    /// its replicas start moving.
    pub(in crate::broker) fn remove_raft_voter(&mut self, req: RemoveRaftVoterRequest) -> Reply {
        let fail = |e: ResponseError, m: String| {
            Reply::Now(ResponseKind::RemoveRaftVoter(
                RemoveRaftVoterResponse::default()
                    .with_error_code(e.code())
                    .with_error_message(Some(str(&m))),
            ))
        };
        if let Some(refusal) = self.membership_refusal(req.cluster_id.as_deref()) {
            return fail(refusal.0, refusal.1);
        }
        let node = req.voter_id;
        let c = self.cluster.as_ref().expect("checked");
        if c.meta.members().contains(&node)
            && let Some(m) = self
                .quorum_refusal(node)
                .or_else(|| self.sole_replica_refusal(node))
        {
            return fail(ResponseError::InvalidRequest, m);
        }
        if let Some((e, m)) = c.meta.removal_refusal(node) {
            return fail(e, m);
        }
        let token = self.new_token();
        let response = ResponseKind::RemoveRaftVoter(RemoveRaftVoterResponse::default());
        self.one_change(token, response, |request| MetaCommand::RemoveMember {
            request: Some(request),
            node_id: node,
        });
        Reply::Parked { token }
    }

    /// The voters `__meta` should have: the members. A removed node leaves `__meta` at once
    /// (a dead one would otherwise count against its quorum while its replicas move); its
    /// replicas move on in their own groups. `None` standalone.
    pub fn wanted_meta_voters(&self) -> Option<Vec<u64>> {
        let c = self.cluster.as_ref()?;
        Some(c.meta.members().iter().map(|&v| v as u64).collect())
    }

    /// Whether `node` is a member of the cluster as `__meta` records it (`None`: standalone).
    pub fn is_member(&self, node: i32) -> Option<bool> {
        Some(self.cluster.as_ref()?.meta.members().contains(&node))
    }

    /// Every node the Raft transport should reach: `(id, Raft address if known)`, for the
    /// members and the nodes still holding a replica.
    pub fn cluster_peers(&self) -> Vec<(u64, Option<String>)> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.meta
            .meta_voters()
            .into_iter()
            .map(|id| (id as u64, c.meta.raft_addrs.get(&id).cloned()))
            .collect()
    }

    /// Standalone, a request for another cluster, or a node of an older version still in the
    /// cluster (it would not apply membership changes, and its state would part from the
    /// others').
    fn membership_refusal(&self, cluster_id: Option<&str>) -> Option<(ResponseError, String)> {
        let Some(c) = &self.cluster else {
            return Some((
                ResponseError::InvalidRequest,
                "this is a standalone broker: nodes are added to and removed from a cluster started with `sluice raft-cluster`".into(),
            ));
        };
        let old: Vec<i32> = c
            .meta
            .members()
            .iter()
            .copied()
            .filter(|m| c.meta.brokers.contains_key(m) && !c.meta.raft_addrs.contains_key(m))
            .collect();
        if !old.is_empty() {
            return Some((
                ResponseError::InvalidRequest,
                format!(
                    "nodes {old:?} run an older version that does not know membership changes: upgrade every node first"
                ),
            ));
        }
        match cluster_id {
            Some(id) if !id.is_empty() && id != self.cluster_id => Some((
                ResponseError::InconsistentClusterId,
                format!(
                    "the request is for cluster {id:?}, this is cluster {:?}",
                    self.cluster_id
                ),
            )),
            _ => None,
        }
    }

    /// Whether the members left after removing `node` include a majority that is up (heard
    /// from lately, as this node's `__meta` view says): otherwise the cluster would lose its
    /// quorum, and the removal is refused.
    fn quorum_refusal(&self, node: i32) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let quorum = c.quorum.as_ref()?;
        let left: Vec<i32> = c
            .meta
            .members()
            .iter()
            .copied()
            .filter(|m| *m != node)
            .collect();
        let up: Vec<i32> =
            left.iter()
                .copied()
                .filter(|m| {
                    *m == c.node_id
                        || quorum.voters.iter().any(|v| {
                            v.id == *m && v.last_heard_ms >= quorum.as_of_ms - UP_WITHIN_MS
                        })
                })
                .collect();
        (up.len() * 2 <= left.len()).then(|| {
            format!(
                "removing node {node} would leave the cluster without a quorum: of the remaining members {left:?} only {up:?} are up; bring members back or add nodes first"
            )
        })
    }

    /// A node that is down and holds the only replica of a partition cannot be removed: no
    /// leader could move that replica, and the removal would never complete.
    fn sole_replica_refusal(&self, node: i32) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let up = node == c.node_id
            || c.quorum.as_ref().is_some_and(|q| {
                q.voters
                    .iter()
                    .any(|v| v.id == node && v.last_heard_ms >= q.as_of_ms - UP_WITHIN_MS)
            });
        if up {
            return None;
        }
        c.meta.topics.iter().find_map(|(name, t)| {
            t.partitions.iter().enumerate().find_map(|(i, p)| {
                (p.replicas == [node]).then(|| {
                    format!(
                        "node {node} is down and holds the only replica of {name}-{i}: bring it back so the replica can move, or delete the topic"
                    )
                })
            })
        })
    }

    /// Queues one `__meta` change; `response` is sent (with the refusal, if any) once applied.
    fn one_change(
        &mut self,
        token: u64,
        response: ResponseKind,
        cmd: impl FnOnce(crate::cluster::ProposalId) -> MetaCommand,
    ) {
        let c = self.cluster.as_mut().expect("cluster");
        c.admins.insert(token, (AdminWait::Security(response), 1));
        self.admin_proposal(token, 0, cmd);
    }
}
