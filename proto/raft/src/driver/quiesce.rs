//! Quiescence: an idle group stops ticking, so it sends no heartbeats and costs nothing.
//!
//! A leader whose followers hold its whole log, with everything committed, applied and
//! persisted and nothing else pending (no read, transfer or membership change), stays idle for
//! a heartbeat interval, so every follower was sent the final commit index. Then it stops
//! ticking and tells its followers, which stop ticking too (they would otherwise campaign after
//! an election timeout without heartbeats). Anything that touches the group wakes it: a
//! proposal, a message from a peer, a transfer. A quiesced follower is also woken when the
//! leader's node falls silent (node-level liveness, measured by the caller from all traffic
//! between the two nodes), with its election clock set to how long that is: it then elects
//! within the ordinary election timeout of the leader's last sign of life.
//!
//! Safety does not depend on any of this: a group that does not tick only delays its own
//! elections. A follower that missed the notice keeps ticking and pre-votes after a timeout;
//! the other replicas refuse (they still hold the leader's lease), and the message wakes the
//! leader, which heartbeats again.

use raft::StateRole;
use raft::eraftpb::{Message, MessageType};

use super::Driver;

impl Driver {
    /// Whether the group has nothing in flight: this node leads, every replica holds the whole
    /// log, all of it is committed, applied and persisted, and no read, leadership transfer or
    /// membership change is pending, nor a joint configuration waiting to be left.
    pub(super) fn idle(&self) -> bool {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader
            || r.lead_transferee.is_some()
            || r.pending_read_count() > 0
            || r.ready_read_count() > 0
            || !self.held.is_empty()
        {
            return false;
        }
        let last = r.raft_log.last_index();
        r.raft_log.committed == last
            && r.raft_log.persisted == last
            && r.raft_log.applied == last
            && r.pending_conf_index <= r.raft_log.applied
            && self.raw.store().conf_state().voters_outgoing.is_empty()
            && r.prs()
                .iter()
                .all(|(_, pr)| pr.matched == last && pr.state == raft::ProgressState::Replicate)
    }

    /// Leader: the group has been idle long enough to quiesce (see the module docs).
    pub fn wants_to_quiesce(&self) -> bool {
        !self.quiesced && self.idle_ticks >= self.quiesce_after_ticks && self.idle()
    }

    /// Stops ticking. On the leader: returns the followers to tell and the commit index to
    /// tell them.
    pub fn quiesce(&mut self) -> (Vec<u64>, u64) {
        self.quiesced = true;
        let me = self.node_id;
        let followers = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(&id, _)| id)
            .filter(|&id| id != me)
            .collect();
        (followers, self.commit_index())
    }

    /// A follower heard from `leader` that the group quiesced at `term` and `commit`: it stops
    /// ticking if that is its own leader and term and it has that commit index (a follower that
    /// missed the last heartbeat keeps ticking, so it learns the rest). Returns whether it did.
    pub fn quiesce_follower(&mut self, leader: u64, term: u64, commit: u64) -> bool {
        let r = &self.raw.raft;
        if r.state != StateRole::Follower
            || r.leader_id != leader
            || r.term != term
            || r.raft_log.committed != commit
        {
            return false;
        }
        self.quiesced = true;
        true
    }

    /// Whether `msg` should wake this group: anything but the echoes of its last heartbeat
    /// round, which can arrive after it quiesced (a late response on the leader, a late or
    /// duplicated heartbeat on a follower) and carry no news; waking on them would only start
    /// another idle round.
    pub fn wakes_on(&self, msg: &Message) -> bool {
        if !self.quiesced || msg.term != self.raw.raft.term {
            return true;
        }
        match msg.get_msg_type() {
            MessageType::MsgHeartbeatResponse => self.raw.raft.state != StateRole::Leader,
            MessageType::MsgHeartbeat => {
                msg.from != self.raw.raft.leader_id || msg.commit > self.commit_index()
            }
            _ => true,
        }
    }

    /// Whether the group is quiesced (does not tick).
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Resumes ticking. Returns whether the group was quiesced.
    pub fn wake(&mut self) -> bool {
        if !self.quiesced {
            return false;
        }
        self.quiesced = false;
        self.idle_ticks = 0;
        true
    }

    /// A quiesced follower whose leader's node has been silent for `silent_ticks`: wakes with
    /// its election clock at that silence, so it campaigns once its election timeout has passed
    /// since the leader's last sign of life, as if it had been ticking all along.
    pub fn wake_leader_silent(&mut self, silent_ticks: u64) {
        if !self.wake() {
            return;
        }
        let r = &mut self.raw.raft;
        r.election_elapsed = r.election_elapsed.max(silent_ticks as usize);
        tracing::debug!(
            node = self.node_id,
            group = self.group,
            term = r.term,
            leader = r.leader_id,
            silent_ticks,
            "quiesced group woken: its leader's node is silent"
        );
    }
}
