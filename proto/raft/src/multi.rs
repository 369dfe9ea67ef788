//! Multi-Raft: every group a node hosts, one shared tick clock, and per-peer batching.
//!
//! A node runs the metadata group (`__meta`, [`META_GROUP`]) plus one group per partition
//! replica. Inputs that touch a group only mark it dirty; the ready of each dirty group is
//! processed once when the runtime polls. Messages for the same peer, from every group, are
//! gathered into one [`PeerBatch`] per poll, so a tick of a thousand groups sends one batch per
//! peer rather than thousands of messages. Idle followers cost one `RawNode::tick` per tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft::eraftpb::ConfChangeV2;

use crate::GroupId;
use crate::config::Config;
use crate::driver::{Driver, Task};
use crate::error::{Error, Result};
use crate::storage::LogStore;
use crate::wire::{GroupMessage, PeerBatch};

/// Group id of the cluster metadata group (`__meta`).
pub const META_GROUP: GroupId = 0;

/// Limit on ticks replayed after a stall: a runtime that was paused for seconds should not
/// fire a burst of elections; the remainder is skipped.
const CATCH_UP_TICKS_MAX: u64 = 8;

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
        let driver = Driver::new(&self.config, group, store, applied)?;
        self.groups.insert(group, driver);
        self.dirty.insert(group);
        Ok(())
    }

    /// Stops hosting `group` (replica moved away); its pending outputs are discarded.
    pub fn remove_group(&mut self, group: GroupId) -> Option<Driver> {
        self.held.remove(&group);
        self.dirty.remove(&group);
        self.tasks.retain(|(g, _)| *g != group);
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
        for (&id, driver) in self.groups.iter_mut() {
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
        }
        self.next_tick_ms = Some(next + due * tick_ms);
    }

    /// `peer` reports that its log of `group` ends at `last_index` (it lost its data dir): if
    /// this node leads `group` and believes the peer holds more, it probes the peer again.
    pub fn follower_lost_log(&mut self, group: GroupId, peer: u64, last_index: u64) {
        if let Some(d) = self.groups.get_mut(&group)
            && d.follower_lost_log(peer, last_index)
        {
            self.dirty.insert(group);
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
            if let Err(error) = driver.step(msg) {
                tracing::debug!(node = self.config.node_id, group = gm.group, term = driver.term(), %error, "step failed");
            }
            self.dirty.insert(gm.group);
        }
    }

    /// Proposes `data` to `group`.
    pub fn propose(&mut self, group: GroupId, data: Vec<u8>) -> Result<()> {
        self.driver(group)?.propose(data)
    }

    /// Proposes a membership change to `group`.
    pub fn propose_conf_change(&mut self, group: GroupId, cc: ConfChangeV2) -> Result<()> {
        self.driver(group)?.propose_conf_change(cc)
    }

    /// Requests a linearizable read point for `group` (see [`Driver::read_index`]).
    pub fn read_index(&mut self, group: GroupId, ctx: Vec<u8>) -> Result<()> {
        self.driver(group)?.read_index(ctx);
        Ok(())
    }

    /// Hands leadership of `group` to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: u64) -> Result<()> {
        self.driver(group)?.transfer_leader(to);
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
                driver.transfer_leader(to);
                self.dirty.insert(id);
            }
        }
    }

    /// Starts an election in `group` now.
    pub fn campaign(&mut self, group: GroupId) -> Result<()> {
        self.driver(group)?.campaign()
    }

    /// The runtime persisted `group`'s readies up to `number`.
    pub fn persisted(&mut self, group: GroupId, number: u64) -> Result<()> {
        self.driver(group)?.persisted(number);
        Ok(())
    }

    /// The state machine of `group` applied up to `index`.
    pub fn applied(&mut self, group: GroupId, index: u64) -> Result<()> {
        self.driver(group)?.applied(index);
        Ok(())
    }

    /// Log retention for `group` (see [`Driver::compact`]).
    pub fn compact(&mut self, group: GroupId, index: u64, data: Vec<u8>) -> Result<()> {
        self.driver(group)?.compact(index, data)
    }

    /// The transport shipped (or failed to ship) a snapshot of `group` to `peer`.
    pub fn report_snapshot(&mut self, group: GroupId, peer: u64, delivered: bool) -> Result<()> {
        self.driver(group)?.report_snapshot(peer, delivered);
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
        let to = *self.outbox.keys().next()?;
        let messages = self.outbox.remove(&to).expect("key exists");
        Some(PeerBatch {
            from: self.config.node_id,
            to,
            messages,
            formed: false,
            lost: Vec::new(),
        })
    }

    /// Processes the readies of dirty groups and routes their tasks.
    fn flush(&mut self) {
        while let Some(id) = self.dirty.pop_first() {
            let Some(driver) = self.groups.get_mut(&id) else {
                continue;
            };
            driver.handle_ready();
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Apply;

    /// Instant network and disk; returns the batches sent per (from, to) in this round.
    fn round(nodes: &mut [Node], now_ms: u64) -> BTreeMap<(u64, u64), usize> {
        let mut sent = BTreeMap::new();
        let mut inflight = Vec::new();
        for n in nodes.iter_mut() {
            n.handle_timeout(now_ms);
        }
        loop {
            for n in nodes.iter_mut() {
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
                    inflight.push(PeerBatch::decode_from(&b.encode()).unwrap());
                }
            }
            if inflight.is_empty() {
                return sent;
            }
            for b in inflight.drain(..) {
                nodes[(b.to - 1) as usize].step(b);
            }
        }
    }

    #[test]
    fn one_batch_per_peer_for_many_groups() {
        let voters = [1, 2, 3];
        let mut nodes: Vec<Node> = voters
            .iter()
            .map(|&id| {
                let mut n = Node::new(Config::new(id)).unwrap();
                for g in 0..50 {
                    n.add_group(g, LogStore::new(&voters), 0).unwrap();
                }
                n
            })
            .collect();
        // Node 1 campaigns everywhere, so it leads all 50 groups.
        for g in 0..50 {
            nodes[0].campaign(g).unwrap();
        }
        round(&mut nodes, 0);
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
}
