//! Multi-Raft: every group a node hosts, one shared tick clock, and per-peer batching.
//!
//! A node runs the metadata group (`__meta`, [`META_GROUP`]) plus one group per partition
//! replica. Inputs that touch a group only mark it dirty; the ready of each dirty group is
//! processed once when the runtime polls. Messages for the same peer, from every group, are
//! gathered into one [`PeerBatch`] per poll, so a tick of a thousand groups sends one batch per
//! peer rather than thousands of messages.
//!
//! Idle partition groups quiesce (`driver/quiesce.rs`): they stop ticking, so an idle group
//! costs nothing per tick and sends nothing. What replaces their heartbeats is node liveness:
//! a node pings every peer it holds quiesced followers on when it sent that peer nothing for
//! [`PING_MS`], and a quiesced follower whose leader's node was not heard from for the minimum
//! election timeout wakes with its election clock at that silence, so it elects within the same
//! bound as a follower that had been ticking.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft::eraftpb::ConfChangeV2;

use crate::GroupId;
use crate::config::Config;
use crate::driver::{Driver, Task};
use crate::error::{Error, Result};
use crate::storage::LogStore;
use crate::wire::{GroupMessage, PeerBatch, Quiesced};

/// Group id of the cluster metadata group (`__meta`).
pub const META_GROUP: GroupId = 0;

/// Limit on ticks replayed after a stall: a runtime that was paused for seconds should not
/// fire a burst of elections; the remainder is skipped.
const CATCH_UP_TICKS_MAX: u64 = 8;

/// A peer this node holds quiesced followers on, or leads quiesced groups for, that was sent
/// nothing for this long (ms) gets an empty batch: its quiesced followers' sign of life.
pub const PING_MS: u64 = 200;

/// All Raft groups hosted by one node (see the module docs).
#[derive(Debug)]
pub struct Node {
    config: Config,
    groups: BTreeMap<GroupId, Driver>,
    dirty: BTreeSet<GroupId>,
    outbox: BTreeMap<u64, Vec<GroupMessage>>,
    tasks: VecDeque<(GroupId, Task)>,
    next_tick_ms: Option<u64>,
    dropped_msgs: u64,
    /// Groups that do not tick, so never campaign (a replica rebuilt from an empty data dir
    /// until it caught up).
    held: BTreeSet<GroupId>,
    /// Quiesce notices to send, per peer.
    notices: BTreeMap<u64, Vec<Quiesced>>,
    /// Node liveness for quiesced groups (see the module docs).
    live: Liveness,
    /// Groups that may tick: every group that is not quiesced is here (a quiesced one leaves
    /// at its next tick), so a tick costs the awake groups, not all of them.
    ticking: BTreeSet<GroupId>,
    /// Local groups installing a snapshot (see [`PeerBatch::installing`]).
    installing: BTreeSet<GroupId>,
    /// What each peer last said it is installing.
    peers_installing: BTreeMap<u64, BTreeSet<GroupId>>,
}

/// What went to one peer.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    /// When (ms) the last batch went.
    at_ms: u64,
    /// Batches sent so far.
    batches: u64,
    /// Raft messages sent so far.
    messages: u64,
}

/// What this node heard from and sent to each peer, as of the last tick.
#[derive(Debug, Default)]
struct Liveness {
    now_ms: u64,
    /// Last time (ms) each peer was heard.
    heard: BTreeMap<u64, u64>,
    /// Peers heard since the last tick (batches carry no time).
    fresh: BTreeSet<u64>,
    /// What went to each peer.
    sent: BTreeMap<u64, Sent>,
    /// Peers owed a sign of life: every follower this node told of a quiesced group.
    watched: BTreeSet<u64>,
    /// Peers to ping at the next poll.
    ping: BTreeSet<u64>,
    /// Each peer's last incarnation.
    incarnations: BTreeMap<u64, u64>,
}

impl Node {
    /// A node hosting no group yet.
    pub fn new(config: Config) -> Result<Self> {
        config.validate()?;
        Ok(Node {
            config,
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            outbox: BTreeMap::new(),
            tasks: VecDeque::new(),
            next_tick_ms: None,
            dropped_msgs: 0,
            held: BTreeSet::new(),
            notices: BTreeMap::new(),
            live: Liveness::default(),
            ticking: BTreeSet::new(),
            installing: BTreeSet::new(),
            peers_installing: BTreeMap::new(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.node_id
    }

    /// Starts hosting `group` from `store` (fresh: [`LogStore::new`]; restart: the recovered
    /// store), with the state machine applied up to `applied`.
    pub fn add_group(&mut self, group: GroupId, store: LogStore, applied: u64) -> Result<()> {
        if self.groups.contains_key(&group) {
            return Err(Error::GroupExists(group));
        }
        let mut driver = Driver::new(&self.config, group, store, applied)?;
        // Peers that said they install this group before it opened here.
        for (peer, groups) in &self.peers_installing {
            if groups.contains(&group) {
                driver.set_peer_installing(*peer, true);
            }
        }
        self.groups.insert(group, driver);
        self.dirty.insert(group);
        self.ticking.insert(group);
        Ok(())
    }

    /// Stops hosting `group` (replica moved away); its pending outputs are discarded.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Driver> {
        self.held.remove(&group);
        self.dirty.remove(&group);
        self.ticking.remove(&group);
        self.tasks.retain(|(g, _)| *g != group);
        self.installing.remove(&group);
        self.groups.remove(&group)
    }

    /// The driver of `group`, for inspection.
    pub fn group(&self, group: GroupId) -> Option<&Driver> {
        self.groups.get(&group)
    }

    /// Ids of the hosted groups, ascending.
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Messages dropped because a peer's queue hit [`Config::peer_queue_msgs_max`].
    pub fn dropped_msgs(&self) -> u64 {
        self.dropped_msgs
    }

    /// The group's driver, woken if it was quiesced: for inputs that need its clock running.
    fn awake(&mut self, group: GroupId) -> Result<&mut Driver> {
        let d = self.driver(group)?;
        d.wake();
        Ok(d)
    }

    fn driver(&mut self, group: GroupId) -> Result<&mut Driver> {
        self.dirty.insert(group);
        self.groups
            .get_mut(&group)
            .ok_or(Error::UnknownGroup(group))
    }

    /// Advances every group's clock to `now_ms` (one raft tick per elapsed `tick_ms`).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let tick_ms = self.config.tick_ms;
        let next = *self.next_tick_ms.get_or_insert(now_ms + tick_ms);
        if now_ms < next {
            return;
        }
        let due = (now_ms - next) / tick_ms + 1;
        let ticks = due.min(CATCH_UP_TICKS_MAX);
        self.track_liveness(now_ms);
        let me = self.config.node_id;
        for id in std::mem::take(&mut self.ticking) {
            let Some(driver) = self.groups.get_mut(&id) else {
                continue;
            };
            if driver.is_quiesced() {
                continue;
            }
            self.ticking.insert(id);
            if self.held.contains(&id) {
                continue;
            }
            let mut ready = false;
            for _ in 0..ticks {
                ready |= driver.tick();
            }
            if ready {
                self.dirty.insert(id);
            }
            if self.config.quiesce && id != META_GROUP && driver.wants_to_quiesce() {
                self.ticking.remove(&id);
                let (followers, commit) = driver.quiesce();
                let term = driver.term();
                tracing::trace!(node = me, group = id, term, commit, "quiesced");
                for f in followers {
                    self.live.watched.insert(f);
                    self.notices.entry(f).or_default().push(Quiesced {
                        group: id,
                        term,
                        commit,
                    });
                }
            }
        }
        self.next_tick_ms = Some(next + due * tick_ms);
    }

    /// Liveness at a tick: records who was heard, wakes quiesced followers whose leader's node
    /// fell silent, and picks the peers to ping.
    fn track_liveness(&mut self, now_ms: u64) {
        let live = &mut self.live;
        live.now_ms = now_ms;
        for p in std::mem::take(&mut live.fresh) {
            live.heard.insert(p, now_ms);
        }
        let silent_after = self.config.election_ticks_min as u64 * self.config.tick_ms;
        let silent: BTreeMap<u64, u64> = live
            .heard
            .iter()
            .map(|(&p, &at)| (p, now_ms.saturating_sub(at)))
            .filter(|&(_, quiet)| quiet >= silent_after)
            .collect();
        if !silent.is_empty() {
            for (&id, driver) in self.groups.iter_mut() {
                if driver.is_quiesced()
                    && let Some(&quiet) = silent.get(&driver.leader_id())
                {
                    driver.wake_leader_silent(quiet / self.config.tick_ms);
                    self.ticking.insert(id);
                }
            }
        }
        for &p in &live.watched {
            if live
                .sent
                .get(&p)
                .is_none_or(|s| now_ms.saturating_sub(s.at_ms) >= PING_MS)
            {
                live.ping.insert(p);
            }
        }
    }

    /// `peer` restarted: it forgot which groups were quiesced (a wiped one forgot them
    /// altogether and waits to hear from their leaders). Every quiesced group it replicates
    /// wakes, so leaders heartbeat it and followers see their leader's new state.
    fn peer_restarted(&mut self, peer: u64) {
        let mut woken = 0;
        for (&id, driver) in self.groups.iter_mut() {
            if driver.is_quiesced()
                && (driver.leader_id() == peer || driver.progress().any(|p| p.id == peer))
            {
                driver.wake();
                self.ticking.insert(id);
                woken += 1;
            }
        }
        tracing::debug!(
            node = self.config.node_id,
            peer,
            woken,
            "peer restarted: woke the quiesced groups it replicates"
        );
    }

    /// What this node puts in every batch's `incarnation`: its seed, drawn anew at each start.
    pub fn incarnation(&self) -> u64 {
        self.config.seed
    }

    /// Peer batches and raft messages this node has sent, in all.
    pub fn sent(&self) -> (u64, u64) {
        self.live
            .sent
            .values()
            .fold((0, 0), |(b, m), s| (b + s.batches, m + s.messages))
    }

    /// Peer batches and raft messages this node has sent to `peer`.
    pub fn sent_to(&self, peer: u64) -> (u64, u64) {
        self.live
            .sent
            .get(&peer)
            .map_or((0, 0), |s| (s.batches, s.messages))
    }

    /// Groups quiesced on this node (led or followed).
    pub fn quiesced_groups(&self) -> usize {
        self.groups.values().filter(|d| d.is_quiesced()).count()
    }

    /// `peer` reports that its log of `group` ends at `last_index` (it lost its data dir): if
    /// this node leads `group` and believes the peer holds more, it probes the peer again.
    pub fn follower_lost_log(&mut self, group: GroupId, peer: u64, last_index: u64) {
        if let Some(d) = self.groups.get_mut(&group) {
            let probed = d.follower_lost_log(peer, last_index);
            // Even with nothing to probe (this leader restarted since, or never believed
            // more), a quiesced leader wakes: its heartbeats tell the rebuilt replica who leads
            // and what is committed, which it waits for.
            if probed || (d.role() == raft::StateRole::Leader && d.is_quiesced()) {
                d.wake();
                self.ticking.insert(group);
                self.dirty.insert(group);
            }
        }
    }

    /// Stops (`true`) or resumes ticking `group`: a group that does not tick never starts an
    /// election of its own; it still follows a leader.
    pub fn hold_elections(&mut self, group: GroupId, hold: bool) {
        if hold {
            self.held.insert(group);
        } else {
            self.held.remove(&group);
        }
    }

    /// When [`Node::handle_timeout`] should next be called (None before the first call).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_tick_ms
    }

    /// Feeds a batch received from a peer. Messages for unknown groups are skipped (the group
    /// may not be created here yet; the sender retries).
    pub fn step(&mut self, batch: PeerBatch) {
        self.live.fresh.insert(batch.from);
        self.peer_installing(batch.from, &batch.installing);
        if batch.incarnation != 0 {
            let was = self.live.incarnations.insert(batch.from, batch.incarnation);
            if was.is_some_and(|was| was != batch.incarnation) {
                self.peer_restarted(batch.from);
            }
        }
        for gm in batch.messages {
            let Some(msg) = gm.message else { continue };
            let Some(driver) = self.groups.get_mut(&gm.group) else {
                tracing::debug!(
                    node = self.config.node_id,
                    group = gm.group,
                    from = batch.from,
                    "message for unknown group"
                );
                continue;
            };
            // A message wakes a quiesced group: the leader has news, a follower wants
            // something, or a replica restarted and campaigns.
            if driver.wakes_on(&msg) {
                driver.wake();
            }
            if let Err(error) = driver.step(msg) {
                tracing::debug!(node = self.config.node_id, group = gm.group, term = driver.term(), %error, "step failed");
            }
            self.dirty.insert(gm.group);
        }
        // After the messages: the batch's heartbeats carried the commit index the notice names.
        for q in batch.quiesced {
            if let Some(driver) = self.groups.get_mut(&q.group)
                && driver.quiesce_follower(batch.from, q.term, q.commit)
            {
                tracing::trace!(
                    node = self.config.node_id,
                    group = q.group,
                    term = q.term,
                    leader = batch.from,
                    "quiesced (follower)"
                );
            }
        }
    }

    /// Proposes `data` to `group`.
    pub fn propose(&mut self, group: GroupId, data: impl Into<prost::bytes::Bytes>) -> Result<()> {
        self.awake(group)?.propose(data)
    }

    /// Proposes a membership change to `group`.
    pub fn propose_conf_change(&mut self, group: GroupId, cc: ConfChangeV2) -> Result<()> {
        self.awake(group)?.propose_conf_change(cc)
    }

    /// Requests a linearizable read point for `group` (see [`Driver::read_index`]).
    pub fn read_index(&mut self, group: GroupId, ctx: Vec<u8>) -> Result<()> {
        self.awake(group)?.read_index(ctx);
        Ok(())
    }

    /// Hands leadership of `group` to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: u64) -> Result<()> {
        self.awake(group)?.transfer_leader(to);
        Ok(())
    }

    /// Graceful shutdown: hands every group this node leads to the peer `choose` picks.
    pub fn transfer_all_leadership(
        &mut self,
        mut choose: impl FnMut(GroupId, &Driver) -> Option<u64>,
    ) {
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in ids {
            let driver = self.groups.get_mut(&id).expect("listed");
            if driver.role() == raft::StateRole::Leader
                && let Some(to) = choose(id, driver)
            {
                driver.wake();
                driver.transfer_leader(to);
                self.dirty.insert(id);
            }
        }
    }

    /// Starts an election in `group` now.
    pub fn campaign(&mut self, group: GroupId) -> Result<()> {
        self.awake(group)?.campaign()
    }

    /// The runtime persisted `group`'s readies up to `number`.
    pub fn persisted(&mut self, group: GroupId, number: u64) -> Result<()> {
        let driver = self.driver(group)?;
        driver.persisted(number);
        self.note_installing(group);
        Ok(())
    }

    /// A snapshot of `group` was stored and not applied yet: peers are told from now on.
    fn note_installing(&mut self, group: GroupId) {
        if self
            .groups
            .get(&group)
            .is_some_and(|d| d.installing_snapshot())
            && self.installing.insert(group)
        {
            self.ping_peers_of(group);
        }
    }

    /// Peers learn of an install starting or ending from the next batch: one goes to every
    /// other replica of `group` now rather than at the next ping.
    fn ping_peers_of(&mut self, group: GroupId) {
        let me = self.config.node_id;
        if let Some(d) = self.groups.get(&group) {
            self.live
                .ping
                .extend(d.progress().map(|p| p.id).filter(|id| *id != me));
        }
    }

    /// See [`Driver::forgo_votes_through`].
    pub fn forgo_votes_through(&mut self, group: GroupId, term: u64) -> Result<()> {
        self.driver(group)?.forgo_votes_through(term);
        self.dirty.insert(group);
        Ok(())
    }

    /// A restart resumes an install of `group` cut short: its applied mark is the snapshot's,
    /// but its records are still being copied (see [`Driver::resume_install`]).
    pub fn resume_install(&mut self, group: GroupId) -> Result<()> {
        self.driver(group)?.resume_install();
        self.note_installing(group);
        Ok(())
    }

    /// The state machine of `group` applied up to `index`.
    pub fn applied(&mut self, group: GroupId, index: u64) -> Result<()> {
        let driver = self.driver(group)?;
        driver.applied(index);
        if !driver.installing_snapshot() && self.installing.remove(&group) {
            self.ping_peers_of(group);
        }
        Ok(())
    }

    /// Stops pinging nodes that left the cluster: only `peers` (sorted) are still owed signs
    /// of life for quiesced groups.
    pub fn keep_watching(&mut self, peers: &[u64]) {
        self.live.watched.retain(|p| peers.binary_search(p).is_ok());
        self.live.ping.retain(|p| peers.binary_search(p).is_ok());
    }

    /// Groups this node is installing a snapshot of (told to every peer in each batch).
    pub fn installing(&self) -> Vec<GroupId> {
        self.installing.iter().copied().collect()
    }

    /// A batch from `peer` listed the groups it is installing: the drivers of the groups it
    /// starts or stops installing learn it.
    fn peer_installing(&mut self, peer: u64, groups: &[GroupId]) {
        let now: BTreeSet<GroupId> = groups.iter().copied().collect();
        let before = self.peers_installing.remove(&peer).unwrap_or_default();
        for (g, installing) in before
            .difference(&now)
            .map(|g| (*g, false))
            .chain(now.difference(&before).map(|g| (*g, true)))
        {
            if let Some(d) = self.groups.get_mut(&g) {
                d.set_peer_installing(peer, installing);
                // A quiesced leader would not look at the group again: its ISR and a move
                // waiting on this peer depend on it. (Followers stay as they are: a woken
                // follower of a quiet leader would campaign.)
                if d.role() == raft::StateRole::Leader {
                    d.wake();
                    self.ticking.insert(g);
                    self.dirty.insert(g);
                }
            }
        }
        if !now.is_empty() {
            self.peers_installing.insert(peer, now);
        }
    }

    /// Log retention for `group` (see [`Driver::compact`]).
    pub fn compact(&mut self, group: GroupId, index: u64, data: Vec<u8>) -> Result<()> {
        self.driver(group)?.compact(index, data)
    }

    /// The transport shipped (or failed to ship) a snapshot of `group` to `peer`.
    pub fn report_snapshot(&mut self, group: GroupId, peer: u64, delivered: bool) -> Result<()> {
        self.awake(group)?.report_snapshot(peer, delivered);
        Ok(())
    }

    /// Next persist / apply / read / role task of any group.
    pub fn poll_task(&mut self) -> Option<(GroupId, Task)> {
        self.flush();
        self.tasks.pop_front()
    }

    /// Next batch of messages for one peer (every group's messages to that peer).
    pub fn poll_transmit(&mut self) -> Option<PeerBatch> {
        self.flush();
        let to = [
            self.outbox.keys().next(),
            self.notices.keys().next(),
            self.live.ping.first(),
        ]
        .into_iter()
        .flatten()
        .min()
        .copied()?;
        let messages = self.outbox.remove(&to).unwrap_or_default();
        let quiesced = self.notices.remove(&to).unwrap_or_default();
        self.live.ping.remove(&to);
        let sent = self.live.sent.entry(to).or_default();
        sent.at_ms = self.live.now_ms;
        sent.batches += 1;
        sent.messages += messages.len() as u64;
        Some(PeerBatch {
            from: self.config.node_id,
            to,
            messages,
            formed: false,
            lost: Vec::new(),
            quiesced,
            incarnation: self.config.seed,
            heartbeats: None,
            heartbeat_responses: None,
            installing: self.installing(),
            term_queries: Vec::new(),
            terms: Vec::new(),
        })
    }

    /// Processes the readies of dirty groups and routes their tasks.
    fn flush(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            let Some(driver) = self.groups.get_mut(&id) else {
                continue;
            };
            driver.handle_ready();
            // Every input marks its group dirty: one that woke it puts it back on the clock.
            if !driver.is_quiesced() {
                self.ticking.insert(id);
            }
            while let Some(task) = driver.poll_task() {
                match task {
                    Task::Send(messages) => {
                        for message in messages {
                            let queue = self.outbox.entry(message.to).or_default();
                            if queue.len() >= self.config.peer_queue_msgs_max {
                                queue.remove(0);
                                self.dropped_msgs += 1;
                            }
                            queue.push(GroupMessage {
                                group: id,
                                message: Some(message),
                            });
                        }
                    }
                    other => self.tasks.push_back((id, other)),
                }
            }
            self.note_installing(id);
        }
    }
}

#[cfg(test)]
mod quiesce_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Apply;

    /// Instant network and disk; returns the batches sent per (from, to) in this round.
    pub(super) fn round(nodes: &mut [Node], now_ms: u64) -> BTreeMap<(u64, u64), usize> {
        round_with(nodes, now_ms, &[])
    }

    /// [`round`] with the nodes in `down` crashed: not run, and nothing reaches them.
    pub(super) fn round_with(
        nodes: &mut [Node],
        now_ms: u64,
        down: &[u64],
    ) -> BTreeMap<(u64, u64), usize> {
        let mut sent = BTreeMap::new();
        let mut inflight = Vec::new();
        for n in nodes.iter_mut().filter(|n| !down.contains(&n.id())) {
            n.handle_timeout(now_ms);
        }
        loop {
            for n in nodes.iter_mut().filter(|n| !down.contains(&n.id())) {
                while let Some((g, task)) = n.poll_task() {
                    match task {
                        Task::Persist(p) => n.persisted(g, p.number).unwrap(),
                        Task::Apply(Apply::Entries(es)) => {
                            n.applied(g, es.last().unwrap().index).unwrap()
                        }
                        _ => {}
                    }
                }
                while let Some(b) = n.poll_transmit() {
                    *sent.entry((b.from, b.to)).or_insert(0) += 1;
                    inflight.push(PeerBatch::decode_from(&b.encode()[..]).unwrap());
                }
            }
            if inflight.is_empty() {
                return sent;
            }
            for b in inflight.drain(..) {
                if !down.contains(&b.to) {
                    nodes[(b.to - 1) as usize].step(b);
                }
            }
        }
    }

    /// Three nodes hosting groups `0..groups` with `config`, node 1 leading every group.
    pub(super) fn led_by_node_1(groups: u64, config: impl Fn(u64) -> Config) -> Vec<Node> {
        let voters = [1, 2, 3];
        let mut nodes: Vec<Node> = voters
            .iter()
            .map(|&id| {
                let mut n = Node::new(config(id)).unwrap();
                for g in 0..groups {
                    n.add_group(g, LogStore::new(&voters), 0).unwrap();
                }
                n
            })
            .collect();
        for g in 0..groups {
            nodes[0].campaign(g).unwrap();
        }
        round(&mut nodes, 0);
        nodes
    }

    #[test]
    fn a_peer_installing_a_snapshot_is_reported_snapshotting_until_it_says_it_is_done() {
        let mut nodes = led_by_node_1(3, Config::new);
        let snapshotting = |n: &Node, g: GroupId, peer: u64| {
            n.group(g)
                .unwrap()
                .progress()
                .find(|p| p.id == peer)
                .unwrap()
                .snapshotting
        };
        assert!(!snapshotting(&nodes[0], 1, 2));
        let batch = |installing: Vec<GroupId>| PeerBatch {
            from: 2,
            to: 1,
            messages: Vec::new(),
            formed: true,
            lost: Vec::new(),
            quiesced: Vec::new(),
            incarnation: 0,
            heartbeats: None,
            heartbeat_responses: None,
            installing,
            term_queries: Vec::new(),
            terms: Vec::new(),
        };
        // Node 2 acknowledged the log, but its records are still being copied.
        nodes[0].step(PeerBatch::decode_from(&batch(vec![1]).encode()[..]).unwrap());
        assert!(snapshotting(&nodes[0], 1, 2));
        assert!(!snapshotting(&nodes[0], 2, 2), "only the group it named");
        assert!(!snapshotting(&nodes[0], 1, 3), "only the peer that said so");
        // Any later batch that no longer names the group clears it.
        nodes[0].step(batch(Vec::new()));
        assert!(!snapshotting(&nodes[0], 1, 2));
    }

    #[test]
    fn one_batch_per_peer_for_many_groups() {
        let mut nodes = led_by_node_1(50, Config::new);
        for g in 0..50 {
            assert_eq!(nodes[0].group(g).unwrap().role(), raft::StateRole::Leader);
        }
        // A heartbeat tick of 50 groups: one batch to each peer, not 50.
        let mut heartbeat_round = None;
        for tick in 1..=4 {
            let sent = round(&mut nodes, tick * 50);
            if sent.contains_key(&(1, 2)) {
                heartbeat_round = Some(sent);
                break;
            }
        }
        let sent = heartbeat_round.expect("heartbeats within 3 ticks");
        assert_eq!(sent[&(1, 2)], 1);
        assert_eq!(sent[&(1, 3)], 1);
        assert_eq!(
            sent[&(2, 1)],
            1,
            "responses to all groups' heartbeats are batched too"
        );
        assert!(matches!(
            nodes[0].propose(99, vec![]),
            Err(Error::UnknownGroup(99))
        ));
    }

    #[test]
    fn the_heartbeats_raft_rs_sends_travel_coalesced() {
        let mut nodes = led_by_node_1(50, |id| Config {
            quiesce: false,
            ..Config::new(id)
        });
        // The leader's heartbeat tick: its batch to node 2 as it goes on the wire.
        let mut wire = None;
        for tick in 1..=4 {
            nodes[0].handle_timeout(tick * 50);
            if let Some(b) = nodes[0].poll_transmit() {
                wire = Some(b.encode());
                break;
            }
        }
        let bytes = wire.expect("heartbeats within 3 ticks");
        let raw = <PeerBatch as prost::Message>::decode(&bytes[..]).unwrap();
        let beats = raw.heartbeats.expect("coalesced");
        assert_eq!(
            beats.groups.len(),
            50,
            "every group's heartbeat in the column"
        );
        assert!(raw.messages.is_empty(), "{:?}", raw.messages);
        // Expanded, they are what raft-rs sent: the followers answer, coalesced too.
        let batch = PeerBatch::decode_from(&bytes[..]).unwrap();
        assert_eq!(batch.messages.len(), 50);
        nodes[1].step(batch);
        let reply = nodes[1].poll_transmit().expect("responses");
        let raw = <PeerBatch as prost::Message>::decode(&reply.encode()[..]).unwrap();
        assert_eq!(raw.heartbeat_responses.expect("coalesced").groups.len(), 50);
        assert!(raw.messages.is_empty(), "{:?}", raw.messages);
    }
}
