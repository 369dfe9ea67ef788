//! Where this node stands with its peers: whether it reaches a majority (else it stops serving
//! clients, see [`crate::reach`]) and whether, having started empty, it may vote yet (see
//! [`crate::recovery`]). The `Replica` side of those two pure state machines.

use sluice_raft::eraftpb::MessageType;
use sluice_raft::{GroupTerm, LostLog, META_GROUP, Node, PeerBatch, PeerProgress};
use tracing::{debug, info, warn};

use sluice_proto::broker::Broker;

use crate::reach;
use crate::recovery::{self, Standing};
use crate::{DEFERRED_MAX, Io, LOST_REPORT_MS, RECOVERING_MARK, Replica, Transmit, UNSURE_LOG_MS};

impl Replica {
    /// Drops what would make a group that may not vote yet grant a vote or campaign, and notes
    /// the commit index its leader sends it (see [`recovery`]).
    pub(crate) fn screen(&mut self, batch: &mut PeerBatch) {
        let node_id = self.cfg.node_id;
        let recovery = &mut self.recovery;
        let unsure = matches!(recovery.standing(), Standing::Unsure { .. });
        let deferred = &mut self.deferred;
        batch.messages.retain(|gm| {
            let Some(m) = &gm.message else { return true };
            if recovery.may_vote(gm.group) {
                return true;
            }
            match m.get_msg_type() {
                MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgTimeoutNow => {
                    // Still unsure: a new cluster's first campaign may be waiting for it, so
                    // keep the request until the last peer reports in (then answered or
                    // dropped) rather than make the candidate wait out an election timeout.
                    if unsure && deferred.len() < DEFERRED_MAX {
                        deferred.push((batch.from, gm.clone()));
                    } else {
                        debug!(node_id, group = gm.group, from = m.from, term = m.term, msg_type = ?m.get_msg_type(), "not voting: this replica has not caught up since starting empty");
                    }
                    false
                }
                MessageType::MsgAppend | MessageType::MsgHeartbeat => {
                    recovery.leader_commit(gm.group, m.commit, m.term);
                    true
                }
                _ => true,
            }
        });
    }

    /// Drops leadership hand-overs to groups in which this replica is not a voter as far as it
    /// knows, and vote requests while its log there is also empty. A replica that left a group
    /// deleted its state; added back, it starts empty as a learner. Raft's safety rests on
    /// every voter remembering its vote and log, and a candidate that missed the removal still
    /// counts the replica as a voter: its empty log would grant that candidate a vote that
    /// elects it without entries it lacks. Once seeded (a snapshot of the committed log, past
    /// its removal and return), its log refuses such a candidate, and it answers votes as Raft
    /// has learners do: a promotion it has not applied yet may already count it (a joint
    /// change whose leader died before telling it, whose new half needs its vote).
    pub(crate) fn screen_non_voters(&mut self, batch: &mut PeerBatch) {
        let node = &self.node;
        let node_id = self.cfg.node_id;
        batch.messages.retain(|gm| {
            let Some(m) = &gm.message else { return true };
            let asks = match m.get_msg_type() {
                MessageType::MsgTimeoutNow => true,
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => node
                    .group(gm.group)
                    .is_some_and(|d| d.store().last_index() == 0),
                _ => false,
            };
            if asks && node.group(gm.group).is_some_and(|d| !d.is_voter()) {
                debug!(node_id, group = gm.group, from = m.from, term = m.term, msg_type = ?m.get_msg_type(), "not voting: not a voter of this group as far as this replica knows");
                return false;
            }
            true
        });
    }

    pub(crate) fn on_recovery(&mut self, change: recovery::Change) {
        let node_id = self.cfg.node_id;
        match change {
            recovery::Change::Bootstrap => {
                info!(
                    node_id,
                    "every peer's raft state is empty too: forming a new cluster"
                );
                self.node.hold_elections(META_GROUP, false);
                for (from, gm) in std::mem::take(&mut self.deferred) {
                    self.node.step(PeerBatch {
                        from,
                        to: node_id,
                        messages: vec![gm],
                        formed: false,
                        lost: Vec::new(),
                        quiesced: Vec::new(),
                        incarnation: 0,
                        heartbeats: None,
                        heartbeat_responses: None,
                        installing: Vec::new(),
                        term_queries: Vec::new(),
                        terms: Vec::new(),
                    });
                }
            }
            recovery::Change::Recovering { told_by } => {
                self.deferred.clear();
                warn!(
                    node_id,
                    told_by,
                    "the cluster exists but this node's raft state is empty (a lost data dir?): it votes again once it has caught up"
                )
            }
            recovery::Change::CaughtUp {
                group,
                commit,
                term,
            } => {
                debug!(
                    node_id,
                    group,
                    commit,
                    term,
                    "caught up since starting empty: voting again, in terms after its peers' newest"
                );
                if let Err(e) = self.node.forgo_votes_through(group, term) {
                    warn!(node_id, group, error = %e, "raising the term of a rebuilt replica failed");
                }
                // `raft/recovering` is cleared only once this hard state is durable: a crash
                // in between would restart the node with its old term and vote free.
                self.forgo_pending.insert(group);
                self.node.hold_elections(group, false);
            }
            recovery::Change::Member => {
                let behind: Vec<u64> = self.recovery.behind().collect();
                info!(
                    node_id,
                    groups_catching_up = behind.len(),
                    first = ?&behind[..behind.len().min(16)],
                    "__meta caught up since starting empty: this node votes again (each partition once it has caught up)"
                )
            }
        }
    }

    pub(crate) fn check_recovery(&mut self, broker: &Broker) {
        if !self.marked && !self.recovering() {
            return;
        }
        let node = &self.node;
        // Raft's applied index starts at a compacted log's snapshot, before the broker has
        // installed the image: nothing counts as applied until it has.
        let meta_applied = match self.meta_image_pending {
            Some(_) => 0,
            None => node.group(META_GROUP).map_or(0, |d| d.applied_index()),
        };
        let changes = self.recovery.check(
            META_GROUP,
            |g| node.group(g).map(|d| d.commit_index()),
            |g| voters_of(node, g),
            self.cfg.node_id,
            meta_applied,
            !self.opening.is_empty(),
        );
        for change in changes {
            self.on_recovery(change);
        }
        self.report_lost_logs(broker);
        let node = &self.node;
        self.forgo_pending
            .retain(|g| node.group(*g).is_some_and(|d| !d.all_persisted()));
        if self.marked && !self.recovering() && self.forgo_pending.is_empty() {
            info!(
                node_id = self.cfg.node_id,
                "every group caught up since starting empty: raft/recovering cleared"
            );
            self.marked = false;
            self.io.push_back(Io::WriteMarks(vec![(
                META_GROUP,
                RECOVERING_MARK.to_string(),
                Vec::new(),
            )]));
        }
    }

    /// Tells the leader of every group that is behind and holds less than its leader says is
    /// committed where its log really ends (at most every [`LOST_REPORT_MS`]): the leader still
    /// believes in what this node held before it lost its data dir, and an idle group would
    /// otherwise get nothing but heartbeats. A group that has heard from no leader at all (it
    /// opened after its leader quiesced, so nothing wakes it) tells the leader `__meta`
    /// recorded: a leader that believes the replica holds more probes it; any other ignores it.
    fn report_lost_logs(&mut self, broker: &Broker) {
        let now = self.reach.now();
        if now < self.next_lost_report {
            return;
        }
        self.next_lost_report = now + LOST_REPORT_MS;
        let me = self.cfg.node_id;
        let mut awaited: std::collections::BTreeMap<u64, usize> = Default::default();
        for (group, target) in self.recovery.targets() {
            let Some(d) = self.node.group(group) else {
                continue;
            };
            // Every other voter is asked its term until it answers (see `recovery`).
            for peer in self
                .recovery
                .unanswered(group, &voters_of(&self.node, group), me)
            {
                self.term_queries_out.entry(peer).or_default().push(group);
                if target > 0 && d.commit_index() >= target {
                    // Caught up: only the answer is missing.
                    *awaited.entry(peer).or_insert(0) += 1;
                }
            }
            let mut leader = d.leader_id();
            let unheard = target == 0 && leader == 0;
            if unheard {
                leader = broker.recorded_leader(group).unwrap_or(0);
            }
            if (unheard || target > d.last_index()) && leader != 0 && leader != me {
                self.lost_out.entry(leader).or_default().push(LostLog {
                    group,
                    last_index: d.last_index(),
                });
            }
        }
        if !awaited.is_empty() && now >= self.next_unsure_log {
            self.next_unsure_log = now + UNSURE_LOG_MS;
            info!(
                node_id = me,
                groups_by_peer = ?awaited,
                "caught up since starting empty, but these peers have not told their terms yet: each group votes again once every other replica of it did (bring them back, or move the partitions off them)"
            );
        }
        for &peer in self.lost_out.keys().chain(self.term_queries_out.keys()) {
            self.reach.forget_sent(peer);
            self.pings_due = true;
        }
    }

    /// An empty node that has not heard from every peer yet says, now and then, which ones it
    /// waits for: a new cluster forms only once all its peers are up.
    pub(crate) fn report_unsure(&mut self, now: u64) {
        let Standing::Unsure { empty_peers } = self.recovery.standing() else {
            return;
        };
        if now < self.next_unsure_log {
            return;
        }
        self.next_unsure_log = now + UNSURE_LOG_MS;
        let me = self.cfg.node_id;
        let waiting: Vec<u64> = self
            .voters
            .iter()
            .copied()
            .filter(|v| *v != me && !empty_peers.contains(v))
            .collect();
        info!(
            node_id = me,
            waiting_for = ?waiting,
            "empty raft state: waiting to hear from every peer before forming a new cluster (an empty node cannot tell a new cluster from one whose state it lost)"
        );
    }

    /// Answers a peer's term queries, and notes its answers to this node's.
    pub(crate) fn exchange_terms(&mut self, from: u64, batch: &mut PeerBatch) {
        for group in std::mem::take(&mut batch.term_queries) {
            if let Some(d) = self.node.group(group) {
                self.terms_out.entry(from).or_default().push(GroupTerm {
                    group,
                    term: d.term(),
                });
                self.reach.forget_sent(from);
                self.pings_due = true;
            }
        }
        for t in std::mem::take(&mut batch.terms) {
            self.recovery.term_heard(t.group, from, t.term);
        }
    }

    /// Where this node stands after starting (see [`recovery`]).
    pub fn standing(&self) -> &Standing {
        self.recovery.standing()
    }

    /// Whether this node or any of its groups has yet to catch up since starting empty.
    pub fn recovering(&self) -> bool {
        *self.recovery.standing() != Standing::Member || self.recovery.behind().next().is_some()
    }

    /// Whether this node is cut off from a majority of the cluster: it closes its Kafka
    /// connections and refuses new ones until it hears a majority again (see [`reach`]).
    pub fn cut_off(&self) -> bool {
        self.serving && self.reach.cut_off()
    }

    pub(crate) fn update_reach(&mut self, now: u64) {
        if self.voters.is_empty() {
            self.refresh_voters();
        }
        let me = self.cfg.node_id;
        if let Some(change) = self.reach.update(now, me, &self.voters)
            && self.serving
            && self.stopping.is_none()
        {
            match change {
                reach::Change::CutOff { heard } => warn!(
                    node_id = me,
                    heard = ?heard,
                    voters = ?self.voters,
                    silent_ms = reach::SILENT_MS,
                    "cut off from a majority of the cluster: closing Kafka connections until it is reached again"
                ),
                reach::Change::Rejoined => {
                    info!(
                        node_id = me,
                        "a majority of the cluster is reached again: serving Kafka clients"
                    )
                }
            }
        }
        self.pings_due = true;
    }

    /// Every other node `__meta` knows: voters and learners (pinged, and checked for silence).
    pub(crate) fn peers(&self) -> Vec<u64> {
        let mut all = self.voters.clone();
        all.extend(&self.learners);
        all
    }

    /// [`Replica::peers`] and the runtime's other peers, without duplicates.
    fn ping_targets(&self) -> Vec<u64> {
        let mut all = self.peers();
        all.extend(&self.known_peers);
        all.sort_unstable();
        all.dedup();
        all
    }

    pub(crate) fn refresh_voters(&mut self) {
        let (learners, voters): (Vec<PeerProgress>, Vec<PeerProgress>) = self
            .node
            .group(META_GROUP)
            .map(|d| d.progress().partition(|p| p.learner))
            .unwrap_or_default();
        self.voters = voters.iter().map(|p| p.id).collect();
        self.voters.sort_unstable();
        self.learners = learners.iter().map(|p| p.id).collect();
        self.learners.sort_unstable();
    }

    /// Whether this node's `__meta` took part in a term (told to peers in every batch).
    pub(crate) fn formed(&self) -> bool {
        self.node.group(META_GROUP).is_some_and(|d| d.term() > 0)
    }

    pub(crate) fn poll_ping(&mut self) -> Option<Transmit> {
        if std::mem::take(&mut self.pings_due) {
            let me = self.cfg.node_id;
            let now = self.reach.now();
            self.pings
                .extend(self.reach.pings_due(now, me, &self.ping_targets()));
        }
        let to = self.pings.pop_front()?;
        let batch = PeerBatch {
            from: self.cfg.node_id,
            to,
            messages: Vec::new(),
            formed: self.formed(),
            lost: self.lost_out.remove(&to).unwrap_or_default(),
            quiesced: Vec::new(),
            incarnation: self.node.incarnation(),
            heartbeats: None,
            heartbeat_responses: None,
            installing: self.node.installing(),
            term_queries: self.term_queries_out.remove(&to).unwrap_or_default(),
            terms: self.terms_out.remove(&to).unwrap_or_default(),
        };
        Some(Transmit {
            to,
            bytes: batch.encode(),
            snapshots: Vec::new(),
        })
    }
}

/// The replicas of `group` on this node, learners included: a voter demoted to learner (a
/// move in progress) may be the only other one that remembers a term.
fn voters_of(node: &Node, group: u64) -> Vec<u64> {
    node.group(group)
        .map(|d| d.progress().map(|p| p.id).collect())
        .unwrap_or_default()
}
