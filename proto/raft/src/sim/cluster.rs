//! The simulated world: nodes, their disks and state machines, the network and the clock, run
//! as a discrete-event loop ordered by (time, sequence number).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use raft::eraftpb::MessageType;

use crate::GroupId;
use crate::StateRole;
use crate::config::Config;
use crate::driver::{Apply, Task};
use crate::multi::{META_GROUP, Node};
use crate::rng::Rng;
use crate::sim::Fnv;
use crate::sim::checker::{Checker, StateMachine, Violation};
use crate::sim::disk::Disk;
use crate::sim::net::{NetConfig, Network};
use crate::storage::LogStore;
use crate::wire::{GroupMessage, PeerBatch};

/// One simulated run's scenario. [`SimConfig::from_seed`] derives a randomized one.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Cluster size (3 or 5).
    pub nodes: u64,
    /// Groups per node: `__meta` (0) plus partitions 1..groups.
    pub groups: u64,
    /// Node start times are spread over this window ("started together").
    pub start_skew_us: u64,
    /// Network outside the fault phase.
    pub net: NetConfig,
    /// Disk write latency range outside the fault phase.
    pub disk_latency_us: (u64, u64),
    /// Crash the `__meta` leader once all groups elected, and time the re-election.
    pub leader_crash: bool,
    /// Inject random faults during the fault phase (otherwise only leadership transfers).
    pub faults: bool,
    /// Request leadership transfers during the fault phase.
    pub transfers: bool,
    /// Issue ReadIndex requests and check them.
    pub reads: bool,
    /// Length of the fault phase.
    pub fault_phase_ms: u64,
    /// Compact a replica's log once it holds this many applied entries.
    pub compact_after_entries: u64,
    /// All groups must elect within this long after start.
    pub startup_bound_ms: u64,
    /// After the fault phase heals, every group must elect and commit on every node this fast.
    pub heal_bound_ms: u64,
    /// Keep a human-readable event log (replays).
    pub history: bool,
    /// Deliberate bug, to prove the checker has teeth: report writes persisted as soon as they
    /// are submitted, so a crash loses acknowledged votes and entries.
    pub bug_ack_before_durable: bool,
    /// Deliberate bug, to prove coalescing is checked: every coalesced heartbeat is delivered
    /// to the next group's column entry (the wrong group).
    pub bug_misroute_heartbeats: bool,
    /// Deliberate bug, to prove a dead leader's quiesced groups are checked: the crashed
    /// `__meta` leader stays down while something keeps pinging its peers in its name, so its
    /// quiesced followers never notice it died.
    pub bug_ghost_pings: bool,
    /// Half of the faults crash a node, which restarts soon after: what the tests of the
    /// deliberate disk bug use, as only crashes in quick succession turn it into lost writes.
    pub crash_heavy: bool,
}

impl SimConfig {
    /// A randomized scenario for `seed`: 3 or 5 nodes, random network and disk latencies,
    /// random fault mix.
    pub fn from_seed(seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x5EED_5EED_5EED_5EED);
        let nodes = if r.chance(0.5) { 3 } else { 5 };
        SimConfig {
            seed,
            nodes,
            groups: 3,
            start_skew_us: r.range(0, 100_000),
            net: NetConfig {
                delay_us_min: 100,
                delay_us_max: r.range(500, 10_000),
                ..NetConfig::default()
            },
            disk_latency_us: (100, r.range(500, 20_000)),
            leader_crash: true,
            faults: true,
            transfers: true,
            reads: true,
            fault_phase_ms: r.range(2_000, 6_000),
            compact_after_entries: r.range(5, 60),
            startup_bound_ms: 10_000,
            heal_bound_ms: 20_000,
            history: false,
            bug_ack_before_durable: false,
            bug_misroute_heartbeats: false,
            bug_ghost_pings: false,
            crash_heavy: false,
        }
    }

    /// A fault-free cluster that only elects (for startup statistics and idle measurements).
    pub fn calm(seed: u64) -> Self {
        SimConfig {
            leader_crash: false,
            faults: false,
            transfers: false,
            reads: false,
            ..SimConfig::from_seed(seed)
        }
    }
}

/// What one run measured (on success).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The run's seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Digest of the whole history (events, bytes sent, writes, applies).
    pub digest: u64,
    /// Term of the first leader of each group.
    pub first_leader_term: Vec<u64>,
    /// Time until every group had its first leader.
    pub first_leaders_ms: u64,
    /// Time from crashing the `__meta` leader to a new `__meta` leader.
    pub crash_election_ms: Option<u64>,
    /// Time from that crash until every group the crashed node led (quiesced ones among them)
    /// had a new leader.
    pub orphans_elected_ms: Option<u64>,
    /// How many groups the crashed node led.
    pub orphans: u64,
    /// Latencies of leadership transfers that completed.
    pub transfer_ms: Vec<u64>,
    /// Transfers requested.
    pub transfers_requested: u64,
    /// Time from healing every fault to "every group led and committing on every node".
    pub recovery_ms: u64,
    /// Entries committed, all groups.
    pub committed: u64,
    /// ReadIndex answers checked.
    pub reads_ok: u64,
    /// Snapshots installed on lagging replicas.
    pub snapshots_installed: u64,
    /// Most groups quiesced on one node at a tick (idle groups stop ticking).
    pub quiesced_max: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_ms: u64,
    /// Human-readable event log (when [`SimConfig::history`]).
    pub history: Vec<String>,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: usize,
        epoch: u64,
    },
    Deliver {
        from: u64,
        to: u64,
        bytes: Vec<u8>,
    },
    DiskDone {
        node: usize,
        epoch: u64,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    SnapReport {
        node: usize,
        epoch: u64,
        group: GroupId,
        peer: u64,
        ok: bool,
    },
    Propose,
    Read,
    CrashLeader,
    Fault,
    Check,
    /// `bug_ghost_pings`: an empty batch in a dead node's name to every other node.
    Ghost {
        from: u64,
        incarnation: u64,
    },
}

impl Ev {
    /// The node whose process runs this event, if one does.
    fn runs_on(&self) -> Option<usize> {
        match self {
            Ev::Tick { node, .. } | Ev::DiskDone { node, .. } | Ev::SnapReport { node, .. } => {
                Some(*node)
            }
            Ev::Deliver { to, .. } => Some((*to - 1) as usize),
            _ => None,
        }
    }

    fn code(&self) -> u64 {
        match self {
            Ev::Tick { node, .. } => 1 + ((*node as u64) << 8),
            Ev::Deliver { from, to, .. } => 2 + (from << 8) + (to << 16),
            Ev::DiskDone { node, .. } => 3 + ((*node as u64) << 8),
            Ev::Crash { node } => 4 + ((*node as u64) << 8),
            Ev::Restart { node } => 5 + ((*node as u64) << 8),
            Ev::SnapReport { node, .. } => 6 + ((*node as u64) << 8),
            Ev::Propose => 7,
            Ev::Read => 8,
            Ev::CrashLeader => 9,
            Ev::Fault => 10,
            Ev::Check => 11,
            Ev::Ghost { from, .. } => 12 + (from << 8),
        }
    }
}

struct Scheduled {
    at_us: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Startup,
    CrashElection { old_term: u64, at_us: u64 },
    Faults { until_us: u64 },
    Healing { since_us: u64 },
    Done,
}

struct SimNode {
    id: u64,
    epoch: u64,
    node: Option<Node>,
    disk: Disk,
    sms: BTreeMap<GroupId, StateMachine>,
    /// Groups in which this replica applied an entry proposed after the heal.
    post_heal: BTreeSet<GroupId>,
    /// A paused process (a frozen VM, a long GC) runs nothing until then; its clock has jumped
    /// when it resumes.
    paused_until_us: u64,
}

/// The world of one run.
struct World {
    cfg: SimConfig,
    rng: Rng,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    net: Network,
    checker: Checker,
    digest: Fnv,
    phase: Phase,
    out: Outcome,
    first_terms: BTreeMap<GroupId, u64>,
    /// read id → (group, highest index applied anywhere when issued)
    reads: BTreeMap<u64, (GroupId, u64)>,
    /// (group, target) → (requested at, term then)
    transfers: BTreeMap<(GroupId, u64), u64>,
    /// Groups the node crashed in the crash-election phase led, and their terms then.
    orphans: BTreeMap<GroupId, u64>,
    next_id: u64,
}

const TICK_US: u64 = 50_000;
const DAY_US: u64 = 86_400_000_000;

/// Runs one scenario to completion. `Err` describes the first safety or liveness violation.
pub fn run(cfg: &SimConfig) -> Result<Outcome, Violation> {
    let mut w = World::new(cfg.clone());
    w.run()?;
    w.out.digest = w.digest.finish();
    w.out.sim_ms = w.now_us / 1000;
    w.out.first_leader_term = w.first_terms.values().copied().collect();
    w.out.committed = (0..cfg.groups).map(|g| w.checker.committed_len(g)).sum();
    Ok(w.out)
}

impl World {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let voters: Vec<u64> = (1..=cfg.nodes).collect();
        let nodes = (0..cfg.nodes as usize)
            .map(|i| {
                let mut disk = Disk::new(cfg.disk_latency_us);
                for g in 0..cfg.groups {
                    disk.durable.insert(g, LogStore::new(&voters));
                }
                SimNode {
                    id: i as u64 + 1,
                    epoch: 0,
                    node: None,
                    disk,
                    sms: BTreeMap::new(),
                    post_heal: BTreeSet::new(),
                    paused_until_us: 0,
                }
            })
            .collect();
        let net = Network {
            config: cfg.net.clone(),
            ..Network::default()
        };
        let out = Outcome {
            seed: cfg.seed,
            nodes: cfg.nodes,
            ..Outcome::default()
        };
        let mut w = World {
            rng: rng.fork(),
            cfg,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            net,
            checker: Checker::default(),
            digest: Fnv::default(),
            phase: Phase::Startup,
            out,
            first_terms: BTreeMap::new(),
            reads: BTreeMap::new(),
            transfers: BTreeMap::new(),
            orphans: BTreeMap::new(),
            next_id: 1,
        };
        for i in 0..w.nodes.len() {
            let at = w.rng.range(0, w.cfg.start_skew_us.max(1));
            w.schedule(at, Ev::Restart { node: i });
        }
        w.schedule(500_000, Ev::Check);
        w
    }

    fn schedule(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at_us,
            seq: self.seq,
            ev,
        }));
    }

    fn after(&mut self, low_ms: u64, high_ms: u64, ev: Ev) {
        let at = self.now_us + self.rng.range(low_ms * 1000, high_ms * 1000);
        self.schedule(at, ev);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.history {
            let line = format!("{:>10.3}ms {}", self.now_us as f64 / 1000.0, line());
            self.out.history.push(line);
        }
    }

    fn run(&mut self) -> Result<(), Violation> {
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at_us > DAY_US {
                return Err("simulation ran away (a day of simulated time)".into());
            }
            self.now_us = s.at_us;
            self.out.events += 1;
            self.digest.u64(s.at_us).u64(s.ev.code());
            if self.cfg.history
                && !matches!(
                    s.ev,
                    Ev::Deliver { .. } | Ev::Tick { .. } | Ev::DiskDone { .. }
                )
            {
                let ev = format!("{:?}", s.ev);
                self.note(|| ev);
            }
            self.handle(s.ev)?;
            if self.phase == Phase::Done {
                return self.final_checks();
            }
        }
        Err("event queue ran dry".into())
    }

    fn paused(&self, i: usize) -> bool {
        self.now_us < self.nodes[i].paused_until_us
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    fn alive_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.alive(i)).collect()
    }

    /// The live leader of `group` with the highest term, if any.
    fn leader_of(&self, group: GroupId) -> Option<(usize, u64)> {
        let mut best = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(d) = n.node.as_ref().and_then(|n| n.group(group)) else {
                continue;
            };
            if d.role() == StateRole::Leader && best.is_none_or(|(_, t)| d.term() > t) {
                best = Some((i, d.term()));
            }
        }
        best
    }

    fn handle(&mut self, ev: Ev) -> Result<(), Violation> {
        // A paused process handles everything that reached it once it resumes, in order.
        if let Some(i) = ev.runs_on()
            && self.paused(i)
        {
            let at = self.nodes[i].paused_until_us;
            self.schedule(at, ev);
            return Ok(());
        }
        match ev {
            Ev::Tick { node, epoch } => {
                if self.nodes[node].epoch != epoch || !self.alive(node) {
                    return Ok(());
                }
                let now_ms = self.now_us / 1000;
                let n = self.nodes[node].node.as_mut().expect("alive");
                n.handle_timeout(now_ms);
                self.out.quiesced_max = self.out.quiesced_max.max(n.quiesced_groups() as u64);
                self.maybe_compact(node);
                self.drain(node)?;
                self.schedule(self.now_us + TICK_US, Ev::Tick { node, epoch });
            }
            Ev::Deliver { from, to, bytes } => {
                let i = (to - 1) as usize;
                if !self.alive(i) || !self.net.connected(from, to) {
                    return Ok(());
                }
                let batch =
                    PeerBatch::decode_from(&bytes[..]).map_err(|e| format!("wire decode: {e}"))?;
                self.nodes[i].node.as_mut().expect("alive").step(batch);
                self.drain(i)?;
            }
            Ev::DiskDone { node, epoch } => {
                if self.nodes[node].epoch != epoch || !self.alive(node) {
                    return Ok(());
                }
                let n = &mut self.nodes[node];
                if let Some((group, number)) = n.disk.complete_one() {
                    n.node
                        .as_mut()
                        .expect("alive")
                        .persisted(group, number)
                        .map_err(|e| e.to_string())?;
                    self.drain(node)?;
                }
            }
            Ev::Crash { node } => self.crash(node),
            Ev::Restart { node } => self.restart(node)?,
            Ev::SnapReport {
                node,
                epoch,
                group,
                peer,
                ok,
            } => {
                if self.nodes[node].epoch == epoch && self.alive(node) {
                    let n = self.nodes[node].node.as_mut().expect("alive");
                    let _ = n.report_snapshot(group, peer, ok);
                    self.drain(node)?;
                }
            }
            Ev::Propose => {
                // After healing, enough proposals that each of hundreds of groups gets several
                // within the bound.
                let burst = if matches!(self.phase, Phase::Healing { .. }) {
                    1 + self.cfg.groups / 200
                } else {
                    1
                };
                for _ in 0..burst {
                    self.propose()?;
                }
                let (lo, hi) = if matches!(self.phase, Phase::Healing { .. }) {
                    (5, 30)
                } else {
                    (10, 100)
                };
                self.after(lo, hi, Ev::Propose);
            }
            Ev::Read => {
                self.read()?;
                self.after(20, 200, Ev::Read);
            }
            Ev::CrashLeader => match self.leader_of(META_GROUP) {
                Some((i, term)) => {
                    self.orphans = (0..self.cfg.groups)
                        .filter_map(|g| match self.leader_of(g) {
                            Some((l, t)) if l == i => Some((g, t)),
                            _ => None,
                        })
                        .collect();
                    self.out.orphans = self.orphans.len() as u64;
                    let incarnation = self.nodes[i].node.as_ref().map_or(0, Node::incarnation);
                    self.crash(i);
                    self.phase = Phase::CrashElection {
                        old_term: term,
                        at_us: self.now_us,
                    };
                    if self.cfg.bug_ghost_pings {
                        let from = self.nodes[i].id;
                        self.schedule(self.now_us, Ev::Ghost { from, incarnation });
                    } else {
                        self.after(500, 3_000, Ev::Restart { node: i });
                    }
                }
                None => self.after(50, 100, Ev::CrashLeader),
            },
            Ev::Fault => self.fault()?,
            Ev::Ghost { from, incarnation } => {
                if matches!(self.phase, Phase::CrashElection { .. }) {
                    let others: Vec<u64> = self
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|&to| to != from)
                        .collect();
                    for to in others {
                        let ping = PeerBatch {
                            from,
                            to,
                            incarnation,
                            ..Default::default()
                        };
                        self.schedule(
                            self.now_us + 1_000,
                            Ev::Deliver {
                                from,
                                to,
                                bytes: ping.encode(),
                            },
                        );
                    }
                    self.schedule(self.now_us + 100_000, Ev::Ghost { from, incarnation });
                }
            }
            Ev::Check => {
                self.check_logs()?;
                self.check_progress()?;
                self.schedule(self.now_us + 250_000, Ev::Check);
            }
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.node.take().is_some() {
            n.epoch += 1;
            n.disk.crash();
            n.sms.clear();
            n.post_heal.clear();
        }
    }

    fn restart(&mut self, i: usize) -> Result<(), Violation> {
        if self.alive(i) {
            return Ok(());
        }
        let id = self.nodes[i].id;
        let mut config = Config::new(id);
        config.seed = Fnv::default()
            .u64(self.cfg.seed)
            .u64(id)
            .u64(self.nodes[i].epoch)
            .finish();
        let mut node = Node::new(config).map_err(|e| e.to_string())?;
        let mut sms = BTreeMap::new();
        for (&g, store) in &self.nodes[i].disk.durable {
            let sm = if store.snapshot_index() > 0 {
                self.checker.on_restore(id, g, store.snapshot_ref())?
            } else {
                StateMachine::default()
            };
            node.add_group(g, store.clone(), sm.applied)
                .map_err(|e| e.to_string())?;
            sms.insert(g, sm);
        }
        let n = &mut self.nodes[i];
        n.node = Some(node);
        n.sms = sms;
        let epoch = n.epoch;
        // First tick lands anywhere within one tick period: nodes' clocks are not aligned.
        let phase = self.rng.range(1, TICK_US);
        let at = self.now_us + phase;
        self.nodes[i]
            .node
            .as_mut()
            .expect("just set")
            .handle_timeout(self.now_us / 1000);
        self.schedule(at, Ev::Tick { node: i, epoch });
        self.drain(i)
    }

    fn maybe_compact(&mut self, i: usize) {
        let threshold = self.cfg.compact_after_entries;
        let n = &mut self.nodes[i];
        let node = n.node.as_mut().expect("alive");
        for (&g, sm) in &n.sms {
            let Some(d) = node.group(g) else { continue };
            if sm.applied >= d.store().first_index() + threshold && sm.applied <= d.applied_index()
            {
                let image = sm.image();
                node.compact(g, sm.applied, image.clone())
                    .expect("applied index");
                // Retention on disk drops only what the disk holds (always the case unless the
                // disk acknowledged writes it did not make: `bug_ack_before_durable`).
                let durable = n.disk.durable.get_mut(&g).expect("durable store");
                if durable.term_of(sm.applied).is_some() {
                    durable.compact(sm.applied, image);
                }
            }
        }
    }

    /// Executes a node's tasks and ships its batches until it has nothing left.
    fn drain(&mut self, i: usize) -> Result<(), Violation> {
        let Some(mut node) = self.nodes[i].node.take() else {
            return Ok(());
        };
        let result = self.drain_node(i, &mut node);
        self.nodes[i].node = Some(node);
        result
    }

    fn drain_node(&mut self, i: usize, node: &mut Node) -> Result<(), Violation> {
        let id = self.nodes[i].id;
        loop {
            let mut progressed = false;
            while let Some((g, task)) = node.poll_task() {
                progressed = true;
                self.task(i, id, node, g, task)?;
            }
            while let Some(batch) = node.poll_transmit() {
                progressed = true;
                self.send(i, batch)?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn task(
        &mut self,
        i: usize,
        id: u64,
        node: &mut Node,
        g: GroupId,
        task: Task,
    ) -> Result<(), Violation> {
        match task {
            Task::Persist(p) => {
                self.checker
                    .on_persist(id, g, &p.entries, p.snapshot.as_ref())?;
                self.digest
                    .u64(g)
                    .u64(p.number)
                    .u64(p.entries.last().map_or(0, |e| e.index));
                let epoch = self.nodes[i].epoch;
                let number = p.number;
                let done = self.nodes[i].disk.submit(&mut self.rng, self.now_us, g, p);
                self.schedule(done, Ev::DiskDone { node: i, epoch });
                if self.cfg.bug_ack_before_durable {
                    node.persisted(g, number).map_err(|e| e.to_string())?;
                }
            }
            Task::Apply(Apply::Entries(entries)) => {
                let healing = matches!(self.phase, Phase::Healing { .. });
                let mut sm = self.nodes[i].sms[&g];
                for e in &entries {
                    sm = self.checker.on_apply(id, g, sm, e)?;
                    if healing && e.data.first() == Some(&b'H') {
                        self.nodes[i].post_heal.insert(g);
                    }
                }
                self.digest.u64(g).u64(sm.applied);
                self.nodes[i].sms.insert(g, sm);
                node.applied(g, sm.applied).map_err(|e| e.to_string())?;
            }
            Task::Apply(Apply::Snapshot(snapshot)) => {
                let sm = self.checker.on_restore(id, g, &snapshot)?;
                self.out.snapshots_installed += 1;
                self.note(|| format!("node {id} group {g} installed snapshot at {}", sm.applied));
                self.nodes[i].sms.insert(g, sm);
                node.applied(g, sm.applied).map_err(|e| e.to_string())?;
            }
            Task::ReadReady { ctx, index } => {
                let read = u64::from_le_bytes(ctx.as_slice().try_into().unwrap_or_default());
                if let Some((rg, floor)) = self.reads.remove(&read) {
                    if rg != g || index < floor {
                        return Err(format!(
                            "linearizability: read {read} on group {g} node {id} got index {index} but {floor} was already applied when issued"
                        ));
                    }
                    self.out.reads_ok += 1;
                }
            }
            Task::RoleChanged(rc) => {
                self.note(|| {
                    format!(
                        "node {id} group {g} {:?} term {} leader {}",
                        rc.role, rc.term, rc.leader_id
                    )
                });
                if rc.role == StateRole::Leader {
                    let store = node.group(g).expect("hosted").store();
                    self.checker.on_leader(id, g, rc.term, store)?;
                    self.on_new_leader(id, g, rc.term);
                }
            }
            Task::SnapshotWanted => {
                let sm = self.nodes[i].sms[&g];
                if node.compact(g, sm.applied, sm.image()).is_ok() {
                    let durable = self.nodes[i]
                        .disk
                        .durable
                        .get_mut(&g)
                        .expect("durable store");
                    if durable.term_of(sm.applied).is_some() {
                        durable.compact(sm.applied, sm.image());
                    }
                }
            }
            Task::Send(_) => unreachable!("the node routes sends into peer batches"),
        }
        Ok(())
    }

    fn on_new_leader(&mut self, id: u64, g: GroupId, term: u64) {
        if let Some(at) = self.transfers.remove(&(g, id)) {
            self.out.transfer_ms.push((self.now_us - at) / 1000);
        }
        if self.phase == Phase::Startup {
            self.first_terms.entry(g).or_insert(term);
            if self.first_terms.len() as u64 == self.cfg.groups {
                self.out.first_leaders_ms = self.now_us / 1000;
                if self.cfg.leader_crash {
                    self.phase = Phase::CrashElection {
                        old_term: u64::MAX,
                        at_us: 0,
                    };
                    self.after(200, 1_000, Ev::CrashLeader);
                } else {
                    self.start_faults();
                }
                self.after(10, 50, Ev::Propose);
                if self.cfg.reads {
                    self.after(10, 50, Ev::Read);
                }
            }
        } else if let Phase::CrashElection { old_term, at_us } = self.phase
            && old_term != u64::MAX
            && self.orphans.get(&g).is_some_and(|&t| term > t)
        {
            self.orphans.remove(&g);
            let ms = (self.now_us - at_us) / 1000;
            if g == META_GROUP {
                self.out.crash_election_ms = Some(ms);
            }
            // Every group the dead node led, quiesced or not, elects before faults begin.
            if self.orphans.is_empty() {
                self.out.orphans_elected_ms = Some(ms);
                self.start_faults();
            }
        }
    }

    fn start_faults(&mut self) {
        self.phase = Phase::Faults {
            until_us: self.now_us + self.cfg.fault_phase_ms * 1000,
        };
        self.after(50, 300, Ev::Fault);
    }

    fn send(&mut self, i: usize, batch: PeerBatch) -> Result<(), Violation> {
        let mut bytes = batch.encode();
        if self.cfg.bug_misroute_heartbeats {
            bytes = misroute_heartbeats(&bytes);
        }
        check_wire(&batch, &bytes)?;
        self.digest.bytes(&bytes);
        let (from, to) = (batch.from, batch.to);
        let delays = self.net.route(&mut self.rng, from, to);
        for &d in &delays {
            self.schedule(
                self.now_us + d,
                Ev::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
        // The transport reports every snapshot it ships (raft-rs pauses the peer until then).
        let epoch = self.nodes[i].epoch;
        for gm in &batch.messages {
            if gm
                .message
                .as_ref()
                .is_some_and(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            {
                let ok = !delays.is_empty();
                let at = self.now_us + delays.first().copied().unwrap_or(100_000);
                self.schedule(
                    at,
                    Ev::SnapReport {
                        node: i,
                        epoch,
                        group: gm.group,
                        peer: to,
                        ok,
                    },
                );
            }
        }
        Ok(())
    }

    fn propose(&mut self) -> Result<(), Violation> {
        let alive = self.alive_nodes();
        if alive.is_empty() {
            return Ok(());
        }
        // After healing, every group must take a new entry: go round them all (a random pick
        // leaves some of hundreds of groups without one within the bound).
        let g = if matches!(self.phase, Phase::Healing { .. }) {
            self.next_id % self.cfg.groups
        } else {
            self.rng.range(0, self.cfg.groups)
        };
        let i = match self.leader_of(g) {
            Some((i, _)) if self.rng.chance(0.8) => i,
            _ => alive[self.rng.range(0, alive.len() as u64) as usize],
        };
        if self.paused(i) {
            return Ok(());
        }
        let marker = if matches!(self.phase, Phase::Healing { .. }) {
            b'H'
        } else {
            b'P'
        };
        let mut data = vec![marker];
        data.extend_from_slice(&self.next_id.to_le_bytes());
        self.next_id += 1;
        let pad = self.rng.range(0, 48) as usize;
        data.resize(data.len() + pad, 0xAB);
        let _ = self.nodes[i].node.as_mut().expect("alive").propose(g, data);
        self.drain(i)
    }

    fn read(&mut self) -> Result<(), Violation> {
        let alive = self.alive_nodes();
        if alive.is_empty() {
            return Ok(());
        }
        let g = self.rng.range(0, self.cfg.groups);
        let i = alive[self.rng.range(0, alive.len() as u64) as usize];
        if self.paused(i) {
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.reads.insert(id, (g, self.checker.committed_len(g)));
        let _ = self.nodes[i]
            .node
            .as_mut()
            .expect("alive")
            .read_index(g, id.to_le_bytes().to_vec());
        self.drain(i)
    }

    fn request_transfer(&mut self, g: GroupId) -> Result<(), Violation> {
        let Some((i, _)) = self.leader_of(g) else {
            return Ok(());
        };
        if self.paused(i) {
            return Ok(());
        }
        let others: Vec<usize> = self.alive_nodes().into_iter().filter(|&j| j != i).collect();
        if others.is_empty() {
            return Ok(());
        }
        let target = self.nodes[others[self.rng.range(0, others.len() as u64) as usize]].id;
        self.transfers.insert((g, target), self.now_us);
        self.out.transfers_requested += 1;
        self.nodes[i]
            .node
            .as_mut()
            .expect("alive")
            .transfer_leader(g, target)
            .map_err(|e| e.to_string())?;
        self.drain(i)
    }

    fn fault(&mut self) -> Result<(), Violation> {
        let Phase::Faults { until_us } = self.phase else {
            return Ok(());
        };
        if self.now_us >= until_us {
            return self.heal();
        }
        self.after(100, 600, Ev::Fault);
        if !self.cfg.faults {
            if self.cfg.transfers {
                let g = self.rng.range(0, self.cfg.groups);
                self.request_transfer(g)?;
            }
            return Ok(());
        }
        let n = self.nodes.len();
        if self.cfg.crash_heavy && self.rng.chance(0.5) {
            let i = self.rng.range(0, n as u64) as usize;
            self.crash(i);
            self.after(50, 1_000, Ev::Restart { node: i });
            return Ok(());
        }
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        let pick = self.rng.range(0, 100);
        match pick {
            0..5 if n >= 3 => {
                // A bridge: two nodes cannot reach each other, a third reaches both.
                let mut order = ids.clone();
                for k in (1..order.len()).rev() {
                    order.swap(k, self.rng.range(0, k as u64 + 1) as usize);
                }
                let (a, b, c) = (order[0], order[1], order[2]);
                self.note(|| format!("bridge: {b} and {c} cut, {a} reaches both"));
                self.net.partition(&[b], &[c]);
            }
            0..15 => {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for &id in &ids {
                    if self.rng.chance(0.5) {
                        a.push(id)
                    } else {
                        b.push(id)
                    }
                }
                self.note(|| format!("partition {a:?} | {b:?}"));
                self.net.partition(&a, &b);
            }
            15..25 => {
                let from = ids[self.rng.range(0, n as u64) as usize];
                let to = ids[self.rng.range(0, n as u64) as usize];
                if from != to {
                    self.note(|| format!("one-way block {from} -> {to}"));
                    self.net.blocked.insert((from, to));
                }
            }
            25..40 => {
                self.note(|| "network healed".into());
                self.net.heal();
            }
            40..50 => {
                let i = self.rng.range(0, n as u64) as usize;
                self.crash(i);
                self.after(200, 3_000, Ev::Restart { node: i });
            }
            50..55 => {
                let i = self.rng.range(0, n as u64) as usize;
                let ms = self.rng.range(300, 3_000);
                self.note(|| format!("node {} paused for {ms} ms", i + 1));
                self.nodes[i].paused_until_us = self.now_us + ms * 1000;
            }
            55..65 => {
                self.net.config.drop_p = self.rng.range(0, 30) as f64 / 100.0;
                self.net.config.dup_p = self.rng.range(0, 10) as f64 / 100.0;
                self.net.config.long_delay_p = self.rng.range(0, 5) as f64 / 100.0;
            }
            65..72 => {
                let i = self.rng.range(0, n as u64) as usize;
                self.nodes[i].disk.latency_us = (1_000, self.rng.range(2_000, 200_000));
            }
            72..90 if self.cfg.transfers => {
                let g = self.rng.range(0, self.cfg.groups);
                self.request_transfer(g)?;
            }
            90..100 if self.cfg.transfers => {
                // Graceful shutdown: hand every leadership away, then stop.
                let i = self.rng.range(0, n as u64) as usize;
                if self.alive(i) {
                    let others: Vec<u64> = self
                        .alive_nodes()
                        .into_iter()
                        .filter(|&j| j != i)
                        .map(|j| self.nodes[j].id)
                        .collect();
                    if !others.is_empty() {
                        let to = others[self.rng.range(0, others.len() as u64) as usize];
                        self.nodes[i]
                            .node
                            .as_mut()
                            .expect("alive")
                            .transfer_all_leadership(|_, _| Some(to));
                        self.drain(i)?;
                        self.after(200, 400, Ev::Crash { node: i });
                        self.after(1_000, 3_000, Ev::Restart { node: i });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), Violation> {
        self.note(|| "heal everything".into());
        self.net.heal();
        self.net.config = self.cfg.net.clone();
        for n in &mut self.nodes {
            n.disk.latency_us = self.cfg.disk_latency_us;
        }
        self.phase = Phase::Healing {
            since_us: self.now_us,
        };
        for i in 0..self.nodes.len() {
            self.restart(i)?;
        }
        Ok(())
    }

    fn check_progress(&mut self) -> Result<(), Violation> {
        match self.phase {
            Phase::Startup if self.now_us > self.cfg.startup_bound_ms * 1000 => Err(format!(
                "liveness: only {} of {} groups elected a leader within {} ms of start",
                self.first_terms.len(),
                self.cfg.groups,
                self.cfg.startup_bound_ms
            )),
            Phase::CrashElection { at_us, old_term }
                if old_term != u64::MAX && self.now_us - at_us > 10_000_000 =>
            {
                let left: Vec<GroupId> = self.orphans.keys().take(10).copied().collect();
                Err(format!(
                    "liveness: {} of the {} groups the crashed node led (first: {left:?}) had no new leader within 10 s",
                    self.orphans.len(),
                    self.out.orphans
                ))
            }
            Phase::Healing { since_us } => {
                let done = self
                    .nodes
                    .iter()
                    .all(|n| n.node.is_some() && n.post_heal.len() as u64 == self.cfg.groups);
                if done {
                    self.out.recovery_ms = (self.now_us - since_us) / 1000;
                    self.phase = Phase::Done;
                    Ok(())
                } else if self.now_us - since_us > self.cfg.heal_bound_ms * 1000 {
                    let lagging: Vec<(u64, usize)> = self
                        .nodes
                        .iter()
                        .map(|n| (n.id, n.post_heal.len()))
                        .collect();
                    Err(format!(
                        "liveness: {} ms after healing, not every node applied a new entry in every group (node, groups done): {lagging:?}",
                        self.cfg.heal_bound_ms
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn check_logs(&self) -> Result<(), Violation> {
        for g in 0..self.cfg.groups {
            let stores: Vec<(u64, &LogStore)> = self
                .nodes
                .iter()
                .filter_map(|n| Some((n.id, n.node.as_ref()?.group(g)?.store())))
                .collect();
            for a in 0..stores.len() {
                for b in a + 1..stores.len() {
                    Checker::compare_logs(g, stores[a], stores[b])?;
                }
            }
        }
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), Violation> {
        self.check_logs()?;
        // Durable logs obey log matching too.
        for g in 0..self.cfg.groups {
            for a in 0..self.nodes.len() {
                for b in a + 1..self.nodes.len() {
                    Checker::compare_logs(
                        g,
                        (self.nodes[a].id, &self.nodes[a].disk.durable[&g]),
                        (self.nodes[b].id, &self.nodes[b].disk.durable[&g]),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// `bug_misroute_heartbeats`: the batch with its coalesced heartbeats shifted one group over.
fn misroute_heartbeats(bytes: &[u8]) -> Vec<u8> {
    use prost::Message as _;
    let mut raw = PeerBatch::decode(bytes).expect("the simulator's own batch");
    if let Some(b) = &mut raw.heartbeats
        && !b.groups.is_empty()
    {
        b.groups.rotate_left(1);
    }
    raw.encode_to_vec()
}

/// Coalescing on the wire must hand every message back to its own group, unchanged, with each
/// group's other messages in their order (coalesced heartbeats may move after them: raft-rs
/// tolerates any order, a network reorders too).
fn check_wire(sent: &PeerBatch, bytes: &[u8]) -> Result<(), Violation> {
    use prost::Message as _;
    let got = PeerBatch::decode_from(bytes).map_err(|e| format!("wire decode: {e}"))?;
    // (group, is a heartbeat or response, the message's bytes).
    let key = |gm: &GroupMessage| {
        let m = gm.message.as_ref();
        let beat = m.is_some_and(|m| {
            matches!(
                m.get_msg_type(),
                MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
            )
        });
        (
            gm.group,
            beat,
            m.map(|m| m.encode_to_vec()).unwrap_or_default(),
        )
    };
    let mut a: Vec<_> = sent.messages.iter().map(key).collect();
    let mut b: Vec<_> = got.messages.iter().map(key).collect();
    let others = |v: &[(u64, bool, Vec<u8>)]| -> Vec<(u64, bool, Vec<u8>)> {
        v.iter().filter(|(_, beat, _)| !beat).cloned().collect()
    };
    if others(&a) != others(&b) {
        return Err(format!(
            "wire: batch {} -> {} reordered or changed messages on the way",
            sent.from, sent.to
        ));
    }
    a.sort();
    b.sort();
    if a != b {
        let lost = a.iter().find(|m| !b.contains(m)).map(|(g, _, _)| g);
        return Err(format!(
            "wire: batch {} -> {} delivered heartbeats to the wrong group or changed them (one of group {lost:?} did not arrive as sent)",
            sent.from, sent.to
        ));
    }
    Ok(())
}
