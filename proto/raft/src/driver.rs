//! One Raft group as a pure state machine: inputs are method calls, outputs are [`Task`]s.
//!
//! The driver wraps `raft::RawNode` and runs raft-rs's asynchronous ready flow:
//!
//! 1. After any input, [`Driver::handle_ready`] takes one `Ready`, writes its snapshot, entries
//!    and hard state into the in-memory [`LogStore`] (raft-rs must be able to read them back at
//!    once) and emits a [`Task::Persist`] carrying the same data, then calls
//!    `advance_append_async`: the driver does not wait for the disk.
//! 2. Messages raft-rs allows before persistence (a leader's appends and heartbeats) are emitted
//!    at once as [`Task::Send`]. Messages that must wait (votes, append responses; everything a
//!    non-leader sends) are held until the runtime reports [`Driver::persisted`] for their ready.
//!    Then the driver calls `on_persist_ready`, which lets raft-rs count the local replica in the
//!    commit quorum and release committed entries.
//! 3. Committed entries are emitted as [`Task::Apply`]; the runtime applies them whenever it likes
//!    and reports [`Driver::applied`]. Applying never blocks ticks, heartbeats or persistence.
//!
//! Time only enters through [`Driver::tick`]; the multi-group node converts milliseconds into
//! ticks. Nothing here touches a clock, a socket, a file or a thread.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raft::eraftpb::{
    ConfChange, ConfChangeV2, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft::{RawNode, StateRole};

use crate::GroupId;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::storage::LogStore;

mod quiesce;

/// Work the runtime must do durably, in emission order, before calling [`Driver::persisted`].
#[derive(Debug, Clone, PartialEq)]
pub struct Persist {
    /// Ready number to acknowledge with [`Driver::persisted`] once written.
    pub number: u64,
    /// Snapshot to install before the entries (a far-behind follower catching up).
    pub snapshot: Option<Snapshot>,
    /// Entries to append; any held entries at or after the first index are overwritten.
    pub entries: Vec<Entry>,
    /// New hard state (term, vote, commit).
    pub hard_state: Option<HardState>,
    /// False when only the commit index moved: the write may be lazy (no fsync), and the driver
    /// has not held any message back for it.
    pub must_sync: bool,
}

/// State-machine work: apply in emission order, then call [`Driver::applied`].
#[derive(Debug, Clone, PartialEq)]
pub enum Apply {
    /// Committed entries, contiguous and in index order (empty-data entries are leader no-ops;
    /// configuration changes were already applied to Raft by the driver).
    Entries(Vec<Entry>),
    /// Replace the state machine with this image (its metadata index is the new applied index).
    Snapshot(Snapshot),
}

/// Role, term and known leader of this replica, reported whenever one of them changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleChange {
    /// Raft role now.
    pub role: StateRole,
    /// Current term.
    pub term: u64,
    /// Known leader (0 if none).
    pub leader_id: u64,
}

/// An output of the driver. The runtime executes tasks; the driver never waits for them.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Write durably, then acknowledge with [`Driver::persisted`].
    Persist(Persist),
    /// Send these messages to their `to` peers (already cleared to go).
    Send(Vec<Message>),
    /// Apply to the state machine, then acknowledge with [`Driver::applied`].
    Apply(Apply),
    /// A linearizable read may be served once the state machine has applied `index`.
    ReadReady {
        /// The context passed to [`Driver::read_index`].
        ctx: Vec<u8>,
        /// Commit index at the time the leader confirmed its leadership.
        index: u64,
    },
    /// Role, term or leader changed (e.g. to redirect clients or start serving as leader).
    RoleChanged(RoleChange),
    /// A follower needs a snapshot newer than the stored one (e.g. it just joined and the stored
    /// snapshot's membership predates it): call [`Driver::compact`] at the applied index.
    SnapshotWanted,
}

/// Messages and snapshot installs waiting for the persistence of their ready.
#[derive(Debug)]
struct Held {
    number: u64,
    /// Whether the disk must confirm this ready before its messages may leave.
    blocking: bool,
    messages: Vec<Message>,
    snapshot: Option<Snapshot>,
}

/// A leader's view of one voter's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// The voter's node id (the leader itself included).
    pub id: u64,
    /// Highest index known to be in the voter's log.
    pub matched: u64,
    /// Heard from since the last quorum check (raft-rs clears it at each check).
    pub recent_active: bool,
    /// Being sent a snapshot: it fell behind the leader's retained log.
    pub snapshotting: bool,
    /// A learner (a replica being added): it receives the log but does not vote.
    pub learner: bool,
}

/// One Raft group on one node (see the module docs for the flow).
pub struct Driver {
    group: GroupId,
    node_id: u64,
    raw: RawNode<LogStore>,
    rng: Rng,
    election_ticks: (u64, u64),
    /// Count of raft-rs `reset`s observed through the logger (see `logger.rs`).
    resets: Arc<AtomicU64>,
    resets_seen: u64,
    held: VecDeque<Held>,
    persisted_number: u64,
    tasks: VecDeque<Task>,
    last_role: Option<RoleChange>,
    /// Index of the last membership change applied to raft-rs: a snapshot below it would pair
    /// an old index with a newer membership.
    conf_index: u64,
    /// Leader: ticks in a row the group had nothing in flight (see [`Driver::idle`]).
    idle_ticks: u64,
    /// Last index and term when the idle count started.
    idle_mark: (u64, u64),
    /// A leader quiesces after this many idle ticks: more than a heartbeat interval, so a
    /// heartbeat carrying the final commit index went to every follower meanwhile.
    quiesce_after_ticks: u64,
    /// Not ticking (see `quiesce.rs`).
    quiesced: bool,
    /// Peers that said they are installing this group's snapshot (see
    /// [`crate::PeerBatch::installing`]).
    peers_installing: BTreeSet<u64>,
    /// See [`Driver::resume_install`].
    resumed_install: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("group", &self.group)
            .field("node_id", &self.node_id)
            .field("role", &self.raw.raft.state)
            .field("term", &self.raw.raft.term)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts (or restarts) a replica of `group` from `store`, whose state machine has already
    /// applied up to `applied` (e.g. the snapshot index after a restart).
    pub fn new(config: &Config, group: GroupId, store: LogStore, applied: u64) -> Result<Self> {
        config.validate()?;
        let (logger, resets) = crate::logger::raft_logger(config.node_id, group);
        let raw = RawNode::new(&config.raft_config(applied), store, &logger)?;
        let seed = config.seed ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut driver = Driver {
            group,
            node_id: config.node_id,
            raw,
            rng: Rng::new(seed),
            election_ticks: (
                config.election_ticks_min as u64,
                config.election_ticks_max as u64,
            ),
            resets,
            resets_seen: 0,
            held: VecDeque::new(),
            persisted_number: 0,
            tasks: VecDeque::new(),
            last_role: None,
            conf_index: 0,
            idle_ticks: 0,
            idle_mark: (0, 0),
            quiesce_after_ticks: config.heartbeat_ticks as u64 + 1,
            quiesced: false,
            peers_installing: BTreeSet::new(),
            resumed_install: false,
        };
        // raft-rs starts from the store's membership and hands out only entries after `applied`:
        // membership changes between the snapshot and `applied` were applied before a restart
        // and must be applied again, or the group would run with the snapshot's membership.
        let replay: Vec<Entry> = driver
            .raw
            .store()
            .entries_slice()
            .iter()
            .filter(|e| e.index <= applied && e.get_entry_type() != EntryType::EntryNormal)
            .cloned()
            .collect();
        driver.apply_conf_changes(&replay);
        driver.reseed_election_timeout();
        driver.note_role();
        tracing::debug!(
            node = driver.node_id,
            group,
            term = driver.term(),
            applied,
            last_index = driver.store().last_index(),
            "raft group started"
        );
        Ok(driver)
    }

    /// The group this driver replicates.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Current role.
    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    /// Known leader id (0 if none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Highest index the runtime reported applied.
    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// The in-memory log (persisted and not yet persisted entries alike).
    pub fn store(&self) -> &LogStore {
        self.raw.store()
    }

    /// Index of the last entry in the log, persisted or not.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// What this replica knows of every voter's log: meaningful on the leader, which tracks
    /// its followers (a follower's view is stale).
    pub fn progress(&self) -> impl Iterator<Item = PeerProgress> + '_ {
        let learners = self.raw.raft.prs().conf().learners().clone();
        self.raw
            .raft
            .prs()
            .iter()
            .map(move |(&id, pr)| PeerProgress {
                id,
                matched: pr.matched,
                recent_active: pr.recent_active,
                snapshotting: pr.state == raft::ProgressState::Snapshot
                    || self.peers_installing.contains(&id),
                learner: learners.contains(&id),
            })
    }

    /// A membership change is proposed and not yet applied (raft-rs takes one at a time and
    /// turns another into an empty entry).
    pub fn conf_change_pending(&self) -> bool {
        self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied
    }

    /// Escape hatch for diagnostics and tests: the wrapped raft-rs node.
    pub fn raw_node(&self) -> &RawNode<LogStore> {
        &self.raw
    }

    /// Advances Raft's logical clock by one tick. Returns whether there is new work.
    pub fn tick(&mut self) -> bool {
        if self.installing_snapshot() {
            return false;
        }
        // A leader that hears no quorum steps down at its next quorum check, and its followers,
        // which may still hear it (a deaf leader), would wait out a whole election timeout of
        // their own before electing. On its way out it asks its most caught-up follower to
        // campaign at once (MsgTimeoutNow, as a leadership transfer does); the vote still
        // decides, so this is only ever faster.
        let successor = self.successor_if_checking();
        let term = self.raw.raft.term;
        let ready = self.raw.tick();
        if let Some(to) = successor
            && self.raw.raft.state == StateRole::Follower
            && self.raw.raft.term == term
            && self.raw.raft.leader_id == 0
        {
            tracing::debug!(
                node = self.node_id,
                group = self.group,
                term,
                to,
                "stepped down (no quorum heard): asking the most caught-up follower to campaign now"
            );
            self.raw.raft.send_timeout_now(to);
        }
        self.reseed_election_timeout();
        // Idle ticks count only while the log stands still: an entry appended and committed
        // between two ticks starts the count again, so a heartbeat carries its commit index.
        let mark = (self.raw.raft.raft_log.last_index(), self.raw.raft.term);
        if self.idle() && mark == self.idle_mark {
            self.idle_ticks += 1;
        } else {
            self.idle_ticks = 0;
            self.idle_mark = mark;
        }
        ready || self.raw.has_ready()
    }

    /// On a leader whose quorum check is due this tick: the follower with the longest log.
    fn successor_if_checking(&self) -> Option<u64> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader || r.election_elapsed + 1 < r.election_timeout() {
            return None;
        }
        r.prs()
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .filter(|(id, _)| r.prs().conf().voters().contains(**id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Feeds a message from a peer (its `to` must be this node).
    pub fn step(&mut self, mut msg: Message) -> Result<()> {
        tracing::trace!(
            node = self.node_id,
            group = self.group,
            term = self.raw.raft.term,
            msg_type = ?msg.get_msg_type(),
            from = msg.from,
            to = msg.to,
            msg_term = msg.term,
            index = msg.index,
            "recv"
        );
        // A leader remembers how far each follower's log reached. A replica rebuilt from an
        // empty data dir holds less, and raft-rs panics on a heartbeat committing past its log.
        // Committing less than the leader says is always safe: the entries follow in appends.
        if msg.get_msg_type() == MessageType::MsgHeartbeat {
            let last = self.raw.raft.raft_log.last_index();
            if msg.commit > last {
                tracing::debug!(
                    node = self.node_id,
                    group = self.group,
                    commit = msg.commit,
                    last_index = last,
                    "heartbeat commits past this replica's log (rebuilt from an empty data dir?)"
                );
                msg.commit = last;
            }
        }
        // Not while a snapshot is being installed: raft-rs reads the entries after the applied
        // index to campaign, and they are compacted (it would panic). The leader that asked
        // tries again after its transfer times out.
        if msg.get_msg_type() == MessageType::MsgTimeoutNow && self.installing_snapshot() {
            tracing::debug!(
                node = self.node_id,
                group = self.group,
                applied = self.raw.raft.raft_log.applied,
                snapshot = self.raw.store().snapshot_index(),
                "leadership offered while installing a snapshot: declined"
            );
            return Ok(());
        }
        let result = self.raw.step(msg);
        self.reseed_election_timeout();
        result.map_err(Error::from)
    }

    /// A snapshot is stored but not yet applied (its records are being copied): this replica
    /// must not campaign, neither on its own nor when a leader hands over.
    pub fn installing_snapshot(&self) -> bool {
        self.resumed_install || self.raw.raft.raft_log.applied < self.raw.store().snapshot_index()
    }

    /// A replica rebuilt from an empty data dir, before it votes again: its term becomes at
    /// least `term` (the highest its other voters answered) and its vote in that term is
    /// spent, so it votes only in later terms, in none of which it can have voted before it
    /// lost its state. A term it learned since from a leader newer than `term` is kept.
    pub fn forgo_votes_through(&mut self, term: u64) {
        let r = &mut self.raw.raft;
        if term > r.term {
            r.become_follower(term, raft::INVALID_ID);
        }
        if r.vote == raft::INVALID_ID {
            r.vote = self.node_id;
        }
        self.reseed_election_timeout();
    }

    /// Every ready so far is persisted (hard state included): nothing is held for the
    /// runtime's persistence any more.
    pub fn all_persisted(&self) -> bool {
        self.held.is_empty() && !self.raw.has_ready()
    }

    /// This replica is a voter of the group as far as it knows (a learner, or a replica that
    /// joined and has not received the membership yet, is not).
    pub fn is_voter(&self) -> bool {
        self.raw.raft.prs().conf().voters().contains(self.node_id)
    }

    /// A restart resumes an install cut short: the group opened with the snapshot's applied
    /// mark (raft-rs needs one), but the records are still being copied. Until the runtime
    /// reports the snapshot applied again, the replica counts as installing.
    pub fn resume_install(&mut self) {
        self.resumed_install = true;
    }

    /// `peer` says it is (or no longer is) installing this group's snapshot: until it is
    /// done, [`Driver::progress`] reports it as snapshotting, whatever it acknowledged.
    pub fn set_peer_installing(&mut self, peer: u64, installing: bool) {
        if installing {
            self.peers_installing.insert(peer);
        } else {
            self.peers_installing.remove(&peer);
        }
    }

    /// Proposes `data` as a new log entry (followers forward to the leader). What
    /// `RawNode::propose` does, with the payload kept as `Bytes`: its `Vec<u8>` would be copied
    /// by a caller that still needs the payload.
    pub fn propose(&mut self, data: impl Into<prost::bytes::Bytes>) -> Result<()> {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.raw.raft.id;
        m.entries = vec![Entry {
            data: data.into(),
            ..Entry::default()
        }];
        self.raw.step(m).map_err(Error::from)
    }

    /// Proposes a membership change (single-step `ConfChange` or joint `ConfChangeV2`).
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2) -> Result<()> {
        self.raw
            .propose_conf_change(Vec::new(), cc)
            .map_err(Error::from)
    }

    /// Asks for a linearizable read point; answered by [`Task::ReadReady`] with the same `ctx`
    /// (which should be unique per request).
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
        self.reseed_election_timeout();
    }

    /// Hands leadership to `to` (graceful shutdown or rebalancing). Only acts on the leader.
    pub fn transfer_leader(&mut self, to: u64) {
        tracing::debug!(
            node = self.node_id,
            group = self.group,
            term = self.term(),
            to,
            "transfer leader"
        );
        self.raw.transfer_leader(to);
        self.reseed_election_timeout();
    }

    /// A follower's log ends at `last_index` although this leader believes it matched more (the
    /// follower lost its data dir): forget that and probe it from its real end. Lowering a
    /// follower's match only delays commits, never undoes one (raft-rs never lowers its commit
    /// index). Returns whether anything changed.
    pub fn follower_lost_log(&mut self, peer: u64, last_index: u64) -> bool {
        if self.raw.raft.state != StateRole::Leader || peer == self.node_id {
            return false;
        }
        let term = self.raw.raft.term;
        let Some(pr) = self.raw.raft.mut_prs().get_mut(peer) else {
            return false;
        };
        if pr.matched <= last_index {
            return false;
        }
        tracing::debug!(
            node = self.node_id,
            group = self.group,
            term,
            peer,
            believed = pr.matched,
            last_index,
            "a follower lost its log: probing it again from its end"
        );
        pr.matched = last_index;
        pr.become_probe();
        // Sends the probe now rather than at the next heartbeat response.
        self.raw.raft.send_append(peer);
        true
    }

    /// Starts an election now (tests, or bootstrapping a single-node group).
    pub fn campaign(&mut self) -> Result<()> {
        if self.installing_snapshot() {
            return Ok(());
        }
        let result = self.raw.campaign();
        self.reseed_election_timeout();
        result.map_err(Error::from)
    }

    /// The runtime wrote every [`Persist`] up to and including ready `number`.
    pub fn persisted(&mut self, number: u64) {
        if number > self.persisted_number {
            self.persisted_number = number;
            self.release_held();
        }
    }

    /// The state machine applied everything up to `index`.
    pub fn applied(&mut self, index: u64) {
        if index >= self.raw.store().snapshot_index() {
            self.resumed_install = false;
        }
        if index > self.raw.raft.raft_log.applied {
            self.raw.advance_apply_to(index);
        }
    }

    /// Log retention: drops applied entries up to `index`, keeping `data` (the state machine
    /// image at `index`) as the snapshot sent to replicas that fall behind it.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<()> {
        let applied = self.applied_index();
        if index > applied || index < self.conf_index {
            return Err(Error::CompactBeyondApplied { index, applied });
        }
        self.raw.mut_store().compact(index, data);
        Ok(())
    }

    /// Tells raft-rs a peer could not be reached (pauses appends to it until it answers).
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// The transport finished (or failed) shipping a snapshot to `peer`; raft-rs stops sending
    /// appends to a peer while a snapshot is in flight, so every snapshot send must be reported.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Whether raft-rs has produced work not yet turned into tasks.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Next pending task, if any. Call [`Driver::handle_ready`] first after inputs.
    pub fn poll_task(&mut self) -> Option<Task> {
        self.tasks.pop_front()
    }

    /// Turns raft-rs's pending `Ready` (if any) into tasks. Call after a batch of inputs.
    pub fn handle_ready(&mut self) {
        // A ready can enable another (e.g. becoming leader appends a no-op): bound the loop.
        for _ in 0..4 {
            if !self.raw.has_ready() {
                break;
            }
            self.handle_one_ready();
        }
        if self.step_down_if_removed() && self.raw.has_ready() {
            self.handle_one_ready();
        }
        self.note_role();
        if self.raw.store().take_snapshot_wanted() {
            self.tasks.push_back(Task::SnapshotWanted);
        }
    }

    fn handle_one_ready(&mut self) {
        let mut rd = self.raw.ready();
        let number = rd.number();

        for rs in rd.take_read_states() {
            self.tasks.push_back(Task::ReadReady {
                ctx: rs.request_ctx,
                index: rs.index,
            });
        }

        let now = rd.take_messages();
        if !now.is_empty() {
            self.trace_send(&now);
            self.tasks.push_back(Task::Send(now));
        }

        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        let entries = rd.take_entries();
        let hard_state = rd.hs().cloned();
        let must_sync = rd.must_sync();
        {
            let store = self.raw.mut_store();
            if let Some(snapshot) = &snapshot {
                store.apply_snapshot(snapshot);
            }
            store.append(&entries);
            if let Some(hs) = &hard_state {
                store.set_hard_state(hs.clone());
            }
        }
        let needs_persist = snapshot.is_some() || !entries.is_empty() || hard_state.is_some();
        if needs_persist {
            tracing::debug!(
                node = self.node_id,
                group = self.group,
                term = self.raw.raft.term,
                number,
                entries = entries.len(),
                snapshot = snapshot.is_some(),
                must_sync,
                "persist"
            );
            self.tasks.push_back(Task::Persist(Persist {
                number,
                snapshot: snapshot.clone(),
                entries,
                hard_state,
                must_sync,
            }));
        }

        let committed = rd.take_committed_entries();
        if !committed.is_empty() {
            self.apply_conf_changes(&committed);
            self.tasks.push_back(Task::Apply(Apply::Entries(committed)));
        }

        self.held.push_back(Held {
            number,
            blocking: needs_persist && must_sync,
            messages: rd.take_persisted_messages(),
            snapshot,
        });
        self.raw.advance_append_async(rd);
        self.release_held();
    }

    /// Releases held messages (and snapshot installs) whose readies are persisted, in order.
    fn release_held(&mut self) {
        let mut released = None;
        while let Some(front) = self.held.front() {
            if front.blocking && front.number > self.persisted_number {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            if !held.messages.is_empty() {
                self.trace_send(&held.messages);
                self.tasks.push_back(Task::Send(held.messages));
            }
            if let Some(snapshot) = held.snapshot {
                self.tasks.push_back(Task::Apply(Apply::Snapshot(snapshot)));
            }
            released = Some(held.number);
        }
        if let Some(number) = released {
            // Every earlier ready is persisted (or had nothing that needed it).
            self.raw.on_persist_ready(number);
        }
    }

    /// A leader whose membership change removed it (one elected in the old half of a joint
    /// configuration, which raft-rs then leaves) hands leadership to the voter with the longest
    /// log and steps down at once: raft-rs would keep it leading, and panic at its next commit
    /// (its own progress is gone). Returns whether it stepped down.
    fn step_down_if_removed(&mut self) -> bool {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader || self.is_voter() {
            return false;
        }
        let successor = r
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.node_id && r.prs().conf().voters().contains(**id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let term = r.term;
        tracing::info!(
            node = self.node_id,
            group = self.group,
            term,
            to = ?successor,
            "this leader is no longer a voter of the group: stepping down"
        );
        if let Some(to) = successor {
            self.raw.raft.send_timeout_now(to);
        }
        self.raw.raft.become_follower(term, raft::INVALID_ID);
        true
    }

    /// raft-rs expects membership changes applied as their entries are handed out.
    fn apply_conf_changes(&mut self, committed: &[Entry]) {
        use prost::Message as _;
        for entry in committed {
            let cs = match entry.get_entry_type() {
                EntryType::EntryConfChange => {
                    let Ok(cc) = ConfChange::decode(&entry.data[..]) else {
                        continue;
                    };
                    self.raw.apply_conf_change(&cc)
                }
                EntryType::EntryConfChangeV2 => {
                    let Ok(cc) = ConfChangeV2::decode(&entry.data[..]) else {
                        continue;
                    };
                    self.raw.apply_conf_change(&cc)
                }
                EntryType::EntryNormal => continue,
            };
            match cs {
                Ok(cs) => {
                    self.conf_index = entry.index;
                    tracing::info!(
                        node = self.node_id,
                        group = self.group,
                        term = self.raw.raft.term,
                        index = entry.index,
                        voters = ?cs.voters,
                        outgoing = ?cs.voters_outgoing,
                        learners = ?cs.learners,
                        "membership changed"
                    );
                    self.raw.mut_store().set_conf_state(cs);
                }
                Err(error) => tracing::warn!(
                    node = self.node_id,
                    group = self.group,
                    term = self.raw.raft.term,
                    %error,
                    "conf change rejected"
                ),
            }
        }
    }

    /// Replaces raft-rs's thread_rng election timeout with one from the seeded PRNG.
    fn reseed_election_timeout(&mut self) {
        let resets = self.resets.load(Ordering::Relaxed);
        if resets != self.resets_seen {
            self.resets_seen = resets;
            let (low, high) = self.election_ticks;
            let timeout = self.rng.range(low, high) as usize;
            self.raw.raft.set_randomized_election_timeout(timeout);
        }
    }

    fn note_role(&mut self) {
        let now = RoleChange {
            role: self.raw.raft.state,
            term: self.raw.raft.term,
            leader_id: self.raw.raft.leader_id,
        };
        if self.last_role != Some(now) {
            tracing::info!(
                node = self.node_id,
                group = self.group,
                term = now.term,
                role = ?now.role,
                leader = now.leader_id,
                "role changed"
            );
            self.last_role = Some(now);
            self.tasks.push_back(Task::RoleChanged(now));
        }
    }

    fn trace_send(&self, messages: &[Message]) {
        if tracing::enabled!(tracing::Level::TRACE) {
            for m in messages {
                tracing::trace!(
                    node = self.node_id,
                    group = self.group,
                    term = self.raw.raft.term,
                    msg_type = ?m.get_msg_type(),
                    from = m.from,
                    to = m.to,
                    msg_term = m.term,
                    index = m.index,
                    "send"
                );
            }
        }
    }
}

/// Whether a message answers a request (used to tell apart heartbeat traffic in stats).
pub fn is_response(msg: &Message) -> bool {
    matches!(
        msg.get_msg_type(),
        MessageType::MsgAppendResponse
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVoteResponse
            | MessageType::MsgReadIndexResp
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: u64) -> Config {
        Config {
            seed: 99,
            ..Config::new(id)
        }
    }

    fn cluster(n: u64) -> Vec<Driver> {
        let voters: Vec<u64> = (1..=n).collect();
        (1..=n)
            .map(|id| Driver::new(&config(id), 7, LogStore::new(&voters), 0).unwrap())
            .collect()
    }

    /// Runs every task with an instant disk and network until nothing is left; returns the
    /// applied entries' data per node.
    fn pump(drivers: &mut [Driver], applied: &mut [Vec<Vec<u8>>]) {
        loop {
            let mut inbox = Vec::new();
            for (i, d) in drivers.iter_mut().enumerate() {
                // Twice: persisting releases held messages and committed entries.
                for _ in 0..2 {
                    d.handle_ready();
                    while let Some(task) = d.poll_task() {
                        match task {
                            Task::Persist(p) => d.persisted(p.number),
                            Task::Send(msgs) => {
                                // As the runtime does once a snapshot is shipped.
                                for m in &msgs {
                                    if m.get_msg_type() == MessageType::MsgSnapshot {
                                        d.report_snapshot(m.to, true);
                                    }
                                }
                                inbox.extend(msgs)
                            }
                            Task::Apply(Apply::Entries(es)) => {
                                let last = es.last().unwrap().index;
                                applied[i].extend(
                                    es.into_iter()
                                        .filter(|e| {
                                            !e.data.is_empty()
                                                && e.get_entry_type() == EntryType::EntryNormal
                                        })
                                        .map(|e| e.data.to_vec()),
                                );
                                d.applied(last);
                            }
                            Task::Apply(Apply::Snapshot(s)) => d.applied(s.metadata.unwrap().index),
                            Task::SnapshotWanted => {
                                let applied = d.applied_index();
                                d.compact(applied, b"image".to_vec()).unwrap();
                            }
                            Task::ReadReady { .. } | Task::RoleChanged(_) => {}
                        }
                    }
                }
            }
            if inbox.is_empty() && drivers.iter().all(|d| !d.has_ready()) {
                return;
            }
            for m in inbox {
                let to = (m.to - 1) as usize;
                let _ = drivers[to].step(m);
            }
        }
    }

    #[test]
    fn single_voter_commits_only_after_persist() {
        let mut d = Driver::new(&config(1), 1, LogStore::new(&[1]), 0).unwrap();
        d.campaign().unwrap();
        d.handle_ready();
        let mut numbers = Vec::new();
        while let Some(t) = d.poll_task() {
            if let Task::Persist(p) = t {
                numbers.push(p.number);
            }
        }
        for n in numbers {
            d.persisted(n);
        }
        d.handle_ready();
        while d.poll_task().is_some() {}
        assert_eq!(d.role(), StateRole::Leader);

        d.propose(b"batch-1".to_vec()).unwrap();
        d.handle_ready();
        let mut persist = None;
        while let Some(t) = d.poll_task() {
            match t {
                Task::Persist(p) => persist = Some(p),
                Task::Apply(Apply::Entries(es)) => {
                    assert!(
                        es.iter().all(|e| e.data[..] != b"batch-1"[..]),
                        "applied before persisted"
                    )
                }
                _ => {}
            }
        }
        let persist = persist.expect("entry must be persisted");
        assert_eq!(persist.entries.last().unwrap().data[..], b"batch-1"[..]);
        assert!(persist.must_sync);
        // raft-rs reads unpersisted entries from the store in the async flow.
        assert_eq!(
            d.store().last_index(),
            persist.entries.last().unwrap().index
        );
        d.persisted(persist.number);
        d.handle_ready();
        let applied: Vec<Vec<u8>> = std::iter::from_fn(|| d.poll_task())
            .filter_map(|t| match t {
                Task::Apply(Apply::Entries(es)) => Some(es),
                _ => None,
            })
            .flatten()
            .map(|e| e.data.to_vec())
            .collect();
        assert_eq!(applied, vec![b"batch-1".to_vec()]);
    }

    #[test]
    fn vote_is_sent_only_after_it_is_persisted() {
        let mut ds = cluster(3);
        ds[0].campaign().unwrap();
        ds[0].handle_ready();
        // Pre-vote request goes out first; pre-votes persist nothing.
        let mut to_two: Vec<Message> = std::iter::from_fn(|| ds[0].poll_task())
            .filter_map(|t| if let Task::Send(m) = t { Some(m) } else { None })
            .flatten()
            .filter(|m| m.to == 2)
            .collect();
        assert_eq!(to_two[0].get_msg_type(), MessageType::MsgRequestPreVote);
        ds[1].step(to_two.remove(0)).unwrap();
        ds[1].handle_ready();
        let pre: Vec<Message> = std::iter::from_fn(|| ds[1].poll_task())
            .filter_map(|t| if let Task::Send(m) = t { Some(m) } else { None })
            .flatten()
            .collect();
        assert_eq!(
            pre[0].get_msg_type(),
            MessageType::MsgRequestPreVoteResponse
        );
        ds[0].step(pre[0].clone()).unwrap();
        ds[0].handle_ready();
        // The candidate's own vote for itself is persisted before its vote requests leave.
        let tasks: Vec<Task> = std::iter::from_fn(|| ds[0].poll_task()).collect();
        assert!(!tasks.iter().any(|t| matches!(t, Task::Send(_))));
        for t in tasks {
            if let Task::Persist(p) = t {
                ds[0].persisted(p.number);
            }
        }
        let vote: Vec<Message> = std::iter::from_fn(|| ds[0].poll_task())
            .filter_map(|t| if let Task::Send(m) = t { Some(m) } else { None })
            .flatten()
            .filter(|m| m.to == 2)
            .collect();
        assert_eq!(vote[0].get_msg_type(), MessageType::MsgRequestVote);

        ds[1].step(vote[0].clone()).unwrap();
        ds[1].handle_ready();
        let tasks: Vec<Task> = std::iter::from_fn(|| ds[1].poll_task()).collect();
        let persist = tasks
            .iter()
            .find_map(|t| {
                if let Task::Persist(p) = t {
                    Some(p.clone())
                } else {
                    None
                }
            })
            .expect("the vote must be persisted");
        assert_eq!(persist.hard_state.as_ref().unwrap().vote, 1);
        assert!(
            !tasks.iter().any(|t| matches!(t, Task::Send(_))),
            "vote sent before persisted"
        );
        ds[1].persisted(persist.number);
        let sent: Vec<Message> = std::iter::from_fn(|| ds[1].poll_task())
            .filter_map(|t| if let Task::Send(m) = t { Some(m) } else { None })
            .flatten()
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].get_msg_type(), MessageType::MsgRequestVoteResponse);
        assert!(!sent[0].reject);
    }

    #[test]
    fn leader_replicates_before_its_own_persist() {
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 3];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        assert_eq!(ds[0].role(), StateRole::Leader);
        ds[0].propose(b"x".to_vec()).unwrap();
        ds[0].handle_ready();
        let tasks: Vec<Task> = std::iter::from_fn(|| ds[0].poll_task()).collect();
        let send_pos = tasks
            .iter()
            .position(|t| matches!(t, Task::Send(m) if m.iter().any(|m| m.get_msg_type() == MessageType::MsgAppend)))
            .expect("append sent without waiting for the disk");
        assert!(tasks.iter().any(|t| matches!(t, Task::Persist(_))));
        assert!(send_pos < tasks.len());
    }

    #[test]
    fn three_replicas_apply_the_same_entries() {
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 3];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        for i in 0..10u8 {
            // Proposals to a follower are forwarded to the leader.
            ds[(i % 3) as usize].propose(vec![i]).unwrap();
            pump(&mut ds, &mut applied);
        }
        assert_eq!(applied[0].len(), 10);
        assert_eq!(applied[0], applied[1]);
        assert_eq!(applied[0], applied[2]);
    }

    #[test]
    fn transfer_leader_and_read_index() {
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 3];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        ds[0].transfer_leader(3);
        pump(&mut ds, &mut applied);
        assert_eq!(ds[2].role(), StateRole::Leader);
        assert_eq!(ds[0].leader_id(), 3);

        ds[2].propose(b"w".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        let commit = ds[2].commit_index();
        // Read from a follower: forwarded to the leader, answered with the commit index.
        ds[1].read_index(b"r1".to_vec());
        let mut answer = None;
        for _ in 0..10 {
            for i in 0..3 {
                ds[i].handle_ready();
                let tasks: Vec<Task> = std::iter::from_fn(|| ds[i].poll_task()).collect();
                for t in tasks {
                    match t {
                        Task::ReadReady { ctx, index } => answer = Some((i, ctx, index)),
                        Task::Send(ms) => {
                            for m in ms {
                                let to = (m.to - 1) as usize;
                                ds[to].step(m).unwrap();
                            }
                        }
                        Task::Persist(p) => ds[i].persisted(p.number),
                        _ => {}
                    }
                }
            }
        }
        let (node, ctx, index) = answer.expect("read index answered");
        assert_eq!((node, ctx.as_slice()), (1, &b"r1"[..]));
        assert!(index >= commit);
    }

    #[test]
    fn election_timeouts_come_from_the_seed() {
        let a = cluster(3);
        let b = cluster(3);
        for (x, y) in a.iter().zip(&b) {
            let t = x.raw_node().raft.randomized_election_timeout();
            assert_eq!(t, y.raw_node().raft.randomized_election_timeout());
            assert!((20..40).contains(&t));
        }
    }

    #[test]
    fn compaction_is_limited_to_applied() {
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 3];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        ds[0].propose(b"a".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        let idx = ds[0].applied_index();
        assert!(matches!(
            ds[0].compact(idx + 1, vec![]),
            Err(Error::CompactBeyondApplied { .. })
        ));
        ds[0].compact(idx, b"img".to_vec()).unwrap();
        assert_eq!(ds[0].store().first_index(), idx + 1);
    }

    #[test]
    fn a_replica_that_lost_its_log_catches_up_from_a_snapshot() {
        let voters = [1, 2, 3];
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 3];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        ds[0].propose(b"a".to_vec()).unwrap();
        ds[0].propose(b"b".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        // Node 3 loses its disk; the leader compacted its log meanwhile.
        ds[2] = Driver::new(&config(3), 7, LogStore::new(&voters), 0).unwrap();
        applied[2].clear();
        let idx = ds[0].applied_index();
        ds[0].compact(idx, b"image".to_vec()).unwrap();
        // The leader still believes node 3 holds its old log: its heartbeats commit past the
        // empty one (raft-rs would panic), then the probe finds the gap and sends the snapshot.
        for _ in 0..3 {
            ds[0].tick();
        }
        pump(&mut ds, &mut applied);
        ds[0].propose(b"c".to_vec()).unwrap();
        for _ in 0..3 {
            ds[0].tick();
            pump(&mut ds, &mut applied);
        }
        assert!(ds[2].store().snapshot_index() >= idx);
        assert_eq!(ds[2].store().snapshot_ref().data, b"image");
        assert_eq!(ds[2].store().last_index(), ds[0].store().last_index());
        assert_eq!(applied[2], vec![b"c".to_vec()]);
    }

    #[test]
    fn add_a_voter_by_conf_change() {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeType};
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 4];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        ds[0].propose(b"before".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        // A joining replica starts empty and is seeded by a snapshot listing it.
        ds.push(Driver::new(&config(4), 7, LogStore::joining(), 0).unwrap());
        let cc = ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: ConfChangeType::AddNode as i32,
                node_id: 4,
            }],
            ..Default::default()
        };
        ds[0].propose_conf_change(cc).unwrap();
        pump(&mut ds, &mut applied);
        assert_eq!(ds[0].store().conf_state().voters.len(), 4);
        ds[0].propose(b"after".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        // "before" reached the new replica inside the snapshot image, "after" through the log.
        assert_eq!(applied[3], vec![b"after".to_vec()]);
        assert!(ds[3].store().snapshot_index() >= 2);
        assert_eq!(ds[3].store().conf_state().voters.len(), 4);
    }

    #[test]
    fn a_replica_installing_a_snapshot_declines_leadership_and_does_not_campaign() {
        use raft::eraftpb::{ConfState, SnapshotMetadata};
        // A replica being added receives the leader's snapshot; its records are still being
        // copied (not applied) when the leader hands over. raft-rs would read the compacted
        // entries after the applied index to campaign, and panic.
        let mut d = Driver::new(&config(4), 7, LogStore::joining(), 0).unwrap();
        let snapshot = Snapshot {
            data: b"image".to_vec(),
            metadata: Some(SnapshotMetadata {
                conf_state: Some(ConfState {
                    voters: vec![1, 2, 3, 4],
                    ..Default::default()
                }),
                index: 10,
                term: 1,
            }),
        };
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 1;
        m.to = 4;
        m.term = 1;
        m.snapshot = Some(snapshot);
        d.step(m).unwrap();
        d.handle_ready();
        while let Some(task) = d.poll_task() {
            if let Task::Persist(p) = task {
                d.persisted(p.number);
            }
        }
        assert!(d.installing_snapshot());
        let mut offer = Message::default();
        offer.set_msg_type(MessageType::MsgTimeoutNow);
        offer.from = 1;
        offer.to = 4;
        offer.term = 1;
        d.step(offer).unwrap();
        for _ in 0..100 {
            d.tick();
        }
        assert_eq!(d.role(), StateRole::Follower);
        // Once the install is applied, it may lead.
        d.applied(10);
        assert!(!d.installing_snapshot());
    }

    #[test]
    fn a_restart_keeps_the_membership_changes_it_applied() {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeType};
        let mut ds = cluster(3);
        let mut applied = vec![Vec::new(); 4];
        ds[0].campaign().unwrap();
        pump(&mut ds, &mut applied);
        ds.push(Driver::new(&config(4), 7, LogStore::joining(), 0).unwrap());
        let cc = ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: ConfChangeType::AddLearnerNode as i32,
                node_id: 4,
            }],
            ..Default::default()
        };
        ds[0].propose_conf_change(cc).unwrap();
        ds[0].propose(b"after".to_vec()).unwrap();
        pump(&mut ds, &mut applied);
        assert_eq!(ds[1].store().conf_state().learners, vec![4]);
        // Node 2 restarts from its log (no snapshot since the change), having applied it all.
        // Its store as a restart rebuilds it: the snapshot's membership, then the entries.
        let mut store = ds[1].store().clone();
        let snapshot_conf = store.snapshot_ref().get_metadata().get_conf_state().clone();
        assert!(snapshot_conf.learners.is_empty());
        store.set_conf_state(snapshot_conf);
        let last = store.last_index();
        let restarted = Driver::new(&config(2), 7, store, last).unwrap();
        assert_eq!(restarted.store().conf_state().learners, vec![4]);
        assert_eq!(restarted.store().conf_state().voters, vec![1, 2, 3]);
        let pr: Vec<PeerProgress> = ds[0].progress().collect();
        assert!(pr.iter().any(|p| p.id == 4 && p.learner));
        assert!(pr.iter().filter(|p| p.id != 4).all(|p| !p.learner));
    }
}
