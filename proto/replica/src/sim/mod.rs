//! Deterministic simulator of a cluster running the real [`Replica`] and the real [`Broker`].
//!
//! Three nodes, each a broker on [`MemStorage`] and a replica whose Raft stores live on a
//! simulated disk (writes complete after a random delay; a crash loses what did not complete,
//! and the broker's files fall back to what was synced). The network delays, reorders, drops
//! and duplicates batches and can cut links (symmetric, one-way, or a bridge). A client creates
//! a topic and produces with acks=all throughout. One run ([`run`]) injects faults for a while
//! — crashes and restarts, partitions, lossy links, slow disks, wall-clock jumps, pauses —
//! then heals everything and checks, in Kafka's terms:
//! - no acknowledged record is lost or moved (it is at its acknowledged offset on every replica);
//! - every replica holds the same log below the high watermark, and no value twice;
//! - nothing a consumer could read (below a high watermark, sampled on every node throughout)
//!   ever disappears or changes: no consumer sees an uncommitted record;
//! - each node's high watermark never goes back while it runs;
//! - one leader per term in every group, and every index a leader commits is on the disks of
//!   a majority of its voters, of both halves while the group is joint (`quorum`);
//! - the cluster acknowledges writes again soon after healing (liveness).
//!
//! Everything is driven by one seed: same seed, same history, same digest. A failure prints
//! the one-line replay command ([`replay_command`]).

pub mod client;
mod quorum;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use sluice_proto::broker::{Broker, BrokerConfig, InstallStep, REPLICA_FETCH_VERSION, Reply};
use sluice_proto::cluster::PartitionImage;
use sluice_proto::storage::{MemStorage, Storage};
use sluice_raft::LogStore;
use sluice_raft::META_GROUP;
use sluice_raft::rng::Rng;
use sluice_raft::sim::Fnv;
use sluice_raft::sim::net::{NetConfig, Network};

use crate::{
    ApplyJob, Io, PersistBatch, Replica, ReplicaConfig, apply_entries, install_meta_image,
};
use client::{Client, Sent, TOPIC};

/// The one-line command that replays `seed` with full output.
pub fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p sluice-replica --release replica_sim_replay -- --nocapture"
    )
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Inject faults (otherwise: a quiet run, for the liveness and speed baselines).
    pub faults: bool,
    /// Sim time the fault phase lasts (ms).
    pub fault_ms: u64,
    /// Sim time after healing within which writes must be acknowledged again (ms).
    pub heal_ms: u64,
    /// Print the history as it happens.
    pub verbose: bool,
    /// Break an invariant on purpose (to show the checks catch it).
    pub sabotage: Option<Sabotage>,
    /// One fault of this kind on the partition leader for the whole fault phase, instead of
    /// random overlapping faults.
    pub only: Option<Fault>,
    /// Partitions of the topic. The client writes partition 0; the others stay idle, so their
    /// groups quiesce and must wake through every fault: each needs one leader at the end.
    pub partitions: i32,
    /// Check every commit against the quorum that made it (`quorum`): after every step of
    /// every node, a look at each group it leads (costly with a thousand partitions).
    pub commit_check: bool,
    /// Among the faults, partition 0 moves (AlterPartitionReassignments): down to two of the
    /// three nodes, to another two (a swap), and back, so its Raft group changes membership (a
    /// learner seeded by a snapshot whose records it copies from another replica, promoted,
    /// voters removed)
    /// under crashes, partitions and lost disks.
    pub moves: bool,
    /// A fourth node runs from the start, joining as a fresh node (`--join`), and among the
    /// faults it is added to and removed from the cluster (AddRaftVoter / RemoveRaftVoter):
    /// `__meta`'s voters change under crashes, partitions and lost disks.
    pub members: bool,
    /// `__meta` is compacted once it holds this many applied entries.
    pub meta_compact_entries: u64,
}

/// The faults a single-fault run ([`SimConfig::only`]) injects on the partition leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cut from both peers, both ways.
    Isolation,
    /// Sends nothing to its peers; still hears them.
    CannotSend,
    /// Hears nothing from its peers; still sends (its heartbeats keep followers waiting).
    CannotReceive,
    /// Cut from one follower, both ways; the other follower reaches both.
    Bridge,
    /// The double-vote layout: node 2 is cut off from the start, so nodes 1 and 3 form the
    /// cluster (node 3 voting for node 1); at the fault node 3 loses its data dir and restarts
    /// while node 1 is cut off and node 2 comes back. Nodes 2 and 3 are both empty then: if
    /// node 3 voted, they would elect a second leader in the same term and lose every write.
    WipedVoter,
}

impl SimConfig {
    /// The default run for `seed`.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            faults: true,
            fault_ms: 8_000,
            heal_ms: 10_000,
            verbose: false,
            sabotage: None,
            only: None,
            partitions: 1,
            commit_check: true,
            moves: false,
            members: false,
            // Small (a run commits a few dozen `__meta` entries), so that compactions, images
            // sent to nodes that were away and restarts from an image happen in most runs.
            meta_compact_entries: 2 + seed % 12,
        }
    }
}

/// A deliberate bug, for the tests that show each check can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Acknowledge a produce at an offset one past where it is.
    MoveAnAck,
    /// Drop the last committed record from one replica's view (a diverged log).
    DivergeAReplica,
    /// Report a record a consumer saw that no replica keeps.
    PhantomRead,
    /// Never heal the partition.
    NeverHeal,
    /// Deliver node 1's answers to produces later than the bound.
    LateAnswers,
    /// Drop every Raft message of partition 1's group (an idle partition that never elects).
    SilenceAnIdlePartition,
    /// Node 2 reports its last committed `__meta` entry with another term (a forked log).
    ForkMeta,
    /// Never answer the extra node's Raft messages (`members`): it is added but can never
    /// catch up, so `__meta`'s membership never settles.
    IgnoreTheJoiner,
    /// Every `__meta` image a node installs gains a broker config no entry made (an image
    /// that is not the state at its index).
    CorruptMetaImage,
    /// Node 2's Raft writes go unrecorded, as if its disk acknowledged writes it dropped:
    /// commits counted on its acknowledgements lack a majority.
    UnrecordedAcks,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Hash of the history (events in order) and the final logs: equal for equal seeds.
    pub digest: u64,
    /// Produce requests sent / acknowledged.
    pub sent: u64,
    /// Produce requests acknowledged.
    pub acked: usize,
    /// Records in the final log.
    pub committed: usize,
    /// Longest time one answered request waited (sim ms).
    pub slowest_answer: u64,
    /// Longest stretch without any acknowledgement that overlaps the fault phase (sim ms).
    pub longest_no_ack: u64,
    /// The fault injected last before that answer (what most likely held it up).
    pub slowest_cause: Option<&'static str>,
    /// Longest time a produce to a running, unpaused node waited for its answer (or until the
    /// client gave up on it): what [`ANSWER_BOUND_MS`] bounds.
    pub slowest_owed: u64,
    /// Sim ms from healing to the first acknowledgement after it.
    pub recovered_after_ms: Option<u64>,
    /// When a node first knew a `__meta` leader (sim ms from the start), and its term.
    pub first_leader: Option<(u64, u64)>,
    /// Most groups quiesced on one node at the end (after the quiet period).
    pub quiesced_at_end: usize,
    /// Partition moves requested ([`SimConfig::moves`]).
    pub moves: usize,
    /// Node additions and removals committed in `__meta` ([`SimConfig::members`]).
    pub member_changes: usize,
    /// Joint configurations a leader was seen in (membership changes of moves and members).
    pub joint_configs: usize,
    /// Of those, swaps: a voter added and another removed in one change.
    pub joint_swaps: usize,
    /// `__meta` snapshot images installed.
    pub meta_images: usize,
    /// What went wrong (empty: the run passed).
    pub violations: Vec<String>,
}

/// Something scheduled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A Raft batch arrives.
    Deliver { from: u64, to: u64, bytes: Vec<u8> },
    /// The oldest in-flight persist of a node completes (if it still runs that incarnation).
    PersistDone { node: u64, life: u64 },
    /// The applier of a node finishes its oldest job.
    ApplyDone { node: u64, life: u64 },
    /// A crashed node starts again.
    Restart { node: u64 },
    /// A paused node runs again.
    Resume { node: u64 },
    /// The client acts.
    ClientTick,
    /// The next fault.
    Fault,
    /// Everything heals.
    Heal,
}

/// One node's durable state and, while it runs, its live state.
struct SimNode {
    id: u64,
    fs: MemStorage,
    /// Raft stores as they are on disk, per group.
    durable: BTreeMap<u64, LogStore>,
    /// Disk latency range (ms) of one persist.
    disk_ms: (u64, u64),
    /// Wall clock offset (a jump).
    wall_skew: i64,
    /// Paused (SIGSTOP): events wait.
    paused: bool,
    /// Incarnation: events of an earlier one are ignored.
    life: u64,
    live: Option<Live>,
    /// (incarnation, last high watermark seen).
    last_hw: (u64, i64),
    /// Offset up to which this incarnation's log was read by the consumer check.
    read_to: i64,
    /// Moves of partition 0 this node's `__meta` had applied when it was last observed: a
    /// node a move dropped and brought back copies the log anew, so its high watermark and
    /// reading position start over.
    moves_seen: u64,
}

struct Live {
    broker: Broker,
    replica: Replica,
    persists: VecDeque<PersistBatch>,
    applies: VecDeque<ApplyJob>,
    /// Client requests parked here: token → what was sent.
    parked: HashMap<u64, Sent>,
    /// Next time the replica wants to run.
    due: u64,
}

/// (offset, value) of a partition's records.
type Records = Vec<(i64, u64)>;

const NODES: u64 = 3;
/// The end of a run without new writes: replicas catch up before the final checks.
const QUIET_MS: u64 = 3_000;
const WALL_BASE: i64 = 1_700_000_000_000;
/// How long a running node may take to answer a produce under the random, overlapping faults:
/// a leader cut from its quorum steps down within the longest election timeout (1.6 s), and
/// a second fault that begins while the first is being resolved can cost another. (One fault
/// alone is held to 2 s: `a_faulty_leader_answers_within_an_election_timeout…`.)
pub const ANSWER_BOUND_MS: u64 = 4_000;

struct Sim {
    cfg: SimConfig,
    now: u64,
    rng: Rng,
    net: Network,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    client: Client,
    /// Outstanding client requests: (node, token) → sent.
    healed_at: Option<u64>,
    /// No new produce after this (sim ms).
    stop_producing: u64,
    first_ack_after_heal: Option<u64>,
    /// Most groups quiesced on one node at the end.
    quiesced_at_end: usize,
    first_leader: Option<(u64, u64)>,
    /// Faults injected: (sim ms, kind).
    faults: Vec<(u64, &'static str)>,
    slowest_cause: Option<&'static str>,
    /// Pauses: (node, from, until); `until` is `u64::MAX` while it lasts.
    pauses: Vec<(u64, u64, u64)>,
    slowest_owed: u64,
    /// When each acknowledgement arrived (sim ms).
    ack_times: Vec<u64>,
    /// (group, term) → the node that led it: Raft allows one leader per term.
    leaders: BTreeMap<(u64, u64), u64>,
    /// The fault phase (sim ms).
    fault_window: (u64, u64),
    /// Every (offset, value) any node ever exposed below its high watermark.
    seen: BTreeMap<i64, u64>,
    /// When partition 0 was last asked to move (sim ms).
    last_reassign: Option<u64>,
    /// Every committed `__meta` entry any node held: index → (term, digest of its data).
    meta_log: BTreeMap<u64, (u64, u64)>,
    /// Per node, how far its committed `__meta` entries were compared (reset at restart).
    meta_checked: Vec<u64>,
    /// Indexes of committed AddMember / RemoveMember entries.
    member_changes: BTreeSet<u64>,
    /// What each node wrote and each leader committed: the joint-majority check.
    commits: quorum::Commits,
    /// `__meta` snapshot images installed (sent by a leader, or resumed from at a restart).
    meta_images: usize,
    violations: Vec<String>,
    digest: Fnv,
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> Outcome {
    let mut sim = Sim::new(cfg.clone());
    sim.main();
    sim.outcome()
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let nodes = (1..=NODES + u64::from(cfg.members))
            .map(|id| SimNode {
                id,
                fs: MemStorage::new(),
                durable: BTreeMap::new(),
                disk_ms: (0, 3),
                wall_skew: 0,
                paused: false,
                life: 0,
                live: None,
                last_hw: (0, 0),
                read_to: 0,
                moves_seen: 0,
            })
            .collect();
        let net = Network {
            config: NetConfig {
                delay_us_min: 200,
                delay_us_max: 2_000,
                ..NetConfig::default()
            },
            ..Network::default()
        };
        let seed = rng.next_u64();
        Sim {
            cfg,
            now: 0,
            rng: Rng::new(seed),
            net,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            client: Client::default(),
            healed_at: None,
            stop_producing: u64::MAX,
            first_ack_after_heal: None,
            quiesced_at_end: 0,
            first_leader: None,
            faults: Vec::new(),
            slowest_cause: None,
            pauses: Vec::new(),
            slowest_owed: 0,
            ack_times: Vec::new(),
            leaders: BTreeMap::new(),
            fault_window: (0, 0),
            seen: BTreeMap::new(),
            last_reassign: None,
            meta_log: BTreeMap::new(),
            meta_checked: Vec::new(),
            member_changes: BTreeSet::new(),
            commits: quorum::Commits::default(),
            meta_images: 0,
            violations: Vec::new(),
            digest: Fnv::default(),
        }
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.cfg.verbose {
            eprintln!("[{:>6} ms] {}", self.now, what());
        }
    }

    fn at(&mut self, when: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq, event)));
    }

    fn wall(&self, node: usize) -> i64 {
        WALL_BASE + self.now as i64 + self.nodes[node].wall_skew
    }

    fn main(&mut self) {
        // Started within 50 ms of each other, as processes are: each node's Raft ticks run in a
        // phase of their own (nodes ticking in lockstep would tie elections far more often
        // than real ones do).
        for node in 1..=self.nodes.len() as u64 {
            let at = self.rng.range(0, 50);
            self.at(at, Event::Restart { node });
        }
        if self.cfg.only == Some(Fault::WipedVoter) {
            self.net.partition(&[2], &[1, 3]);
        }
        self.at(50, Event::ClientTick);
        let fault_start = 2_000;
        let heal_at = fault_start + self.cfg.fault_ms;
        self.fault_window = (fault_start, heal_at);
        if self.cfg.faults {
            self.at(fault_start, Event::Fault);
            self.at(heal_at, Event::Heal);
        } else {
            self.healed_at = Some(fault_start);
        }
        let end = heal_at + self.cfg.heal_ms;
        self.stop_producing = end.saturating_sub(QUIET_MS);
        while self.now < end {
            // The earliest of: a queued event, a node's replica timer.
            let next_event = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| !n.paused)
                .filter_map(|n| n.live.as_ref().map(|l| l.due))
                .min();
            let next = match (next_event, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end),
            };
            self.now = next.max(self.now).min(end);
            if self.now >= end {
                break;
            }
            while let Some(Reverse((t, _, _))) = self.queue.peek()
                && *t <= self.now
            {
                let Reverse((_, _, event)) = self.queue.pop().expect("peeked");
                self.handle(event);
            }
            for i in 0..self.nodes.len() {
                if !self.nodes[i].paused
                    && self.nodes[i]
                        .live
                        .as_ref()
                        .is_some_and(|l| l.due <= self.now)
                {
                    self.pass(i);
                    self.check_meta_log(i);
                }
            }
        }
        self.finish();
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.life += 1;
        let id = node.id;
        let config = BrokerConfig {
            node_id: id as i32,
            advertised_port: 9090 + id as i32,
            offsets_partitions: 1,
            cluster_members: Some((1..=NODES as i32).collect()),
            listeners: BTreeMap::from([(
                sluice_proto::security::REPLICA_LISTENER.to_string(),
                ("127.0.0.1".to_string(), 9190 + id as i32),
            )]),
            raft_addr: Some(format!("node-{id}:7000")),
            ..BrokerConfig::default()
        };
        let wall = WALL_BASE + self.now as i64 + node.wall_skew;
        let broker = match Broker::open(
            Arc::new(node.fs.clone()) as Arc<dyn Storage>,
            config,
            self.cfg.seed ^ id,
            wall,
        ) {
            Ok(b) => b,
            Err(e) => {
                self.violations.push(format!(
                    "node {id}: broker failed to open after a crash: {e}"
                ));
                return;
            }
        };
        let voters: Vec<u64> = (1..=NODES).collect();
        let meta = node
            .durable
            .entry(META_GROUP)
            .or_insert_with(|| LogStore::new(&voters))
            .clone();
        // The extra node joins as a new one: empty, not a voter anywhere yet.
        let joining = id > NODES && meta.hard_state().term == 0;
        if let Some(c) = self.meta_checked.get_mut(i) {
            *c = 0;
        }
        let replica = Replica::new(
            ReplicaConfig {
                node_id: id,
                // Independent per node and start (a linear mix let two nodes restarted
                // together draw the same election timeouts and tie every election).
                seed: Rng::new(self.cfg.seed ^ (id << 40) ^ (node.life << 20)).next_u64(),
                // Raft logs are not compacted in the simulator (snapshot installs copy records
                // over the network, which it does not model).
                compact_step: u64::MAX / 2,
                replica_timeout_ms: 10_000,
                meta_compact_entries: self.cfg.meta_compact_entries,
                started_ms: 0,
                recovering: node
                    .fs
                    .read_file(crate::RECOVERING_MARK)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.starts_with(b"recovering")),
                joining,
            },
            meta,
        )
        .expect("replica starts");
        node.read_to = 0;
        node.live = Some(Live {
            broker,
            replica,
            persists: VecDeque::new(),
            applies: VecDeque::new(),
            parked: HashMap::new(),
            due: self.now,
        });
        self.digest.u64(self.now).u64(1).u64(id);
        self.log(|| format!("node {id} starts (life {})", self.nodes[i].life));
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => {
                let i = (to - 1) as usize;
                if self.nodes[i].paused {
                    // A paused process reads its socket later.
                    self.at(self.now + 5, Event::Deliver { from, to, bytes });
                    return;
                }
                if self.cfg.sabotage == Some(Sabotage::IgnoreTheJoiner) && from > NODES {
                    return;
                }
                if let Some(live) = self.nodes[i].live.as_mut() {
                    self.digest
                        .u64(self.now)
                        .u64(2)
                        .u64(from)
                        .u64(to)
                        .words(&bytes);
                    let bytes = if self.cfg.sabotage == Some(Sabotage::SilenceAnIdlePartition) {
                        silence_partition_1(&live.broker, bytes)
                    } else {
                        bytes
                    };
                    live.replica.handle_message(from, &bytes);
                    live.due = self.now;
                }
            }
            Event::PersistDone { node, life } => {
                let i = (node - 1) as usize;
                if self.nodes[i].life != life || self.nodes[i].live.is_none() {
                    return;
                }
                if self.nodes[i].paused {
                    self.at(self.now + 5, Event::PersistDone { node, life });
                    return;
                }
                self.persist_done(i);
            }
            Event::ApplyDone { node, life } => {
                let i = (node - 1) as usize;
                if self.nodes[i].life != life || self.nodes[i].live.is_none() {
                    return;
                }
                if self.nodes[i].paused {
                    self.at(self.now + 5, Event::ApplyDone { node, life });
                    return;
                }
                self.apply_done(i);
            }
            Event::Restart { node } => {
                let i = (node - 1) as usize;
                if self.nodes[i].live.is_none() {
                    self.start(i);
                }
            }
            Event::Resume { node } => {
                let i = (node - 1) as usize;
                self.nodes[i].paused = false;
                self.resumed(node);
                self.log(|| format!("node {node} resumes"));
            }
            Event::ClientTick => {
                self.client_tick();
                let next = self.now + self.rng.range(4, 20);
                // The last seconds are quiet, so every replica catches up before the checks.
                if next < self.stop_producing {
                    self.at(next, Event::ClientTick);
                }
            }
            Event::Fault => {
                if self.healed_at.is_some() {
                    return;
                }
                self.fault();
                if self.healed_at.is_none() {
                    let next = self.now + self.rng.range(300, 1_500);
                    self.at(next, Event::Fault);
                }
            }
            Event::Heal => self.heal(),
        }
    }

    /// One loop pass of node `i`, as the server runs it.
    fn pass(&mut self, i: usize) {
        let wall = self.wall(i);
        let now = self.now;
        let id = self.nodes[i].id;
        let connected: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|&p| {
                p != id
                    && self.nodes[(p - 1) as usize].live.is_some()
                    && self.net.connected(id, p)
                    && self.net.connected(p, id)
            })
            .collect();
        let Some(live) = self.nodes[i].live.as_mut() else {
            return;
        };
        if live.replica.wants_peers()
            && let Err(e) = live.replica.peers_connected(&connected)
        {
            self.violations.push(format!("node {id}: {e}"));
        }
        live.replica.handle_timeout(now, wall, &mut live.broker);
        for (group, term, _, _) in live.replica.led_groups_view() {
            let first = *self.leaders.entry((group, term)).or_insert(id);
            if first != id {
                let v = format!(
                    "group {group} has two leaders in term {term}: node {first} and node {id}"
                );
                if !self.violations.contains(&v) {
                    self.violations.push(v);
                }
            }
        }
        if self.first_leader.is_none()
            && let Some((term, _)) = live.replica.meta_leader()
        {
            self.first_leader = Some((now, term));
        }
        // The server's connections wait for this before serving clients.
        live.replica.start_serving(&live.broker);
        live.due = live.replica.poll_timeout().max(now + 1);
        if live.replica.cut_off() && !live.parked.is_empty() {
            // Cut off from the cluster, the server closes its Kafka connections: the client
            // learns at once that these requests' outcome is unknown and goes elsewhere.
            let mut closed: Vec<Sent> = live.parked.drain().map(|(_, s)| s).collect();
            closed.sort_by_key(|s| (s.at, s.value));
            self.log(|| {
                format!(
                    "node {id} is cut off: {} requests' connections closed",
                    closed.len()
                )
            });
            if self.client.leader_hint == Some(id) {
                self.client.leader_hint = None;
            }
            for s in &closed {
                if s.value.is_some() {
                    self.owed(s, now);
                }
            }
        }
        self.run_io(i);
    }

    /// Ships what the replica sends and runs the I/O it asks for.
    fn run_io(&mut self, i: usize) {
        let id = self.nodes[i].id;
        loop {
            let wall = self.wall(i);
            let now = self.now;
            let Some(live) = self.nodes[i].live.as_mut() else {
                return;
            };
            let mut out = Vec::new();
            while let Some(t) = live.replica.poll_transmit() {
                out.push(t);
            }
            let io = live.replica.poll();
            for t in out {
                for delay_us in self.net.route(&mut self.rng, id, t.to) {
                    let when = self.now + delay_us.div_ceil(1_000);
                    self.at(
                        when,
                        Event::Deliver {
                            from: id,
                            to: t.to,
                            bytes: t.bytes.clone(),
                        },
                    );
                }
                if !t.snapshots.is_empty()
                    && let Some(live) = self.nodes[i].live.as_mut()
                {
                    live.replica.transmitted(&t, true);
                }
            }
            let Some(io) = io else {
                break;
            };
            let node = &mut self.nodes[i];
            let live = node.live.as_mut().expect("checked");
            match io {
                Io::Persist(batch) => {
                    live.persists.push_back(batch);
                    let (low, high) = node.disk_ms;
                    let life = node.life;
                    let when = now + self.rng.range(low, high + 1);
                    self.at(when, Event::PersistDone { node: id, life });
                }
                Io::Apply(job) => {
                    live.applies.push_back(job);
                    let life = node.life;
                    let when = now + self.rng.range(0, 3);
                    self.at(when, Event::ApplyDone { node: id, life });
                }
                Io::OpenGroup(open) => {
                    let store = node
                        .durable
                        .entry(open.group)
                        .or_insert_with(|| {
                            if open.joining {
                                LogStore::joining()
                            } else {
                                LogStore::new(&open.voters)
                            }
                        })
                        .clone();
                    if let Err(e) =
                        live.replica
                            .group_opened(open, store, now, wall, &mut live.broker)
                    {
                        self.violations.push(format!("node {id}: {e}"));
                    }
                }
                Io::RemoveGroup { group } => {
                    node.durable.remove(&group);
                }
                Io::CompactStore(c) => {
                    // The durable store follows once it holds the index (it may still be
                    // persisting up to it: it then keeps the longer log, as a crash would).
                    if let Some(store) = node.durable.get_mut(&c.group)
                        && store.last_index() >= c.index
                    {
                        store.compact(c.index, c.snapshot.data.clone());
                    }
                }
                Io::WriteMarks(marks) => {
                    for (_, path, bytes) in marks {
                        if let Some((dir, _)) = path.rsplit_once('/') {
                            let _ = node.fs.create_dir_all(dir);
                        }
                        let _ = node.fs.write_file_atomic(&path, &bytes);
                    }
                }
            }
        }
        self.settle(i);
    }

    /// The broker side after a step: syncs its files (the flusher), then answers parked
    /// client requests that are now due.
    fn settle(&mut self, i: usize) {
        let now = self.now;
        let Some(live) = self.nodes[i].live.as_mut() else {
            return;
        };
        if let Some(work) = live.broker.take_sync_work() {
            for f in &work.files {
                let _ = f.sync_data();
            }
            live.broker.complete_sync(work.seq, &work.ends, Ok(()));
        }
        let answers = live.broker.take_deferred();
        let mut done = Vec::new();
        for d in answers {
            if let Some(sent) = live.parked.remove(&d.token) {
                done.push((sent, d.response));
            }
        }
        for (sent, response) in done {
            self.answered(&sent, &response, now);
        }
        self.check_commits(i);
    }

    /// Every index a leader of node `i` committed since its last step is on a majority's
    /// disks (see `quorum`). Run after every step of the node: commits advance between steps
    /// (messages), membership changes take effect only within one.
    fn check_commits(&mut self, i: usize) {
        if !self.cfg.commit_check {
            return;
        }
        let id = self.nodes[i].id;
        let Some(live) = self.nodes[i].live.as_ref() else {
            return;
        };
        for led in live.replica.led_groups_view() {
            let store = live.replica.log_store(led.0);
            if let Some(v) = self
                .commits
                .check(id, led, |index| store.and_then(|s| s.term_of(index)))
                && !self.violations.contains(&v)
            {
                self.violations.push(v);
            }
        }
    }

    fn answered(&mut self, sent: &Sent, response: &ResponseKind, now: u64) {
        if now - sent.at > 300 {
            self.log(|| {
                format!(
                    "slow answer ({} ms) from node {}: {sent:?} {response:?}",
                    now - sent.at,
                    sent.node
                )
            });
        }
        if sent.value.is_some() {
            self.owed(sent, now);
        }
        let before = self.client.acked.len();
        let slowest = self.client.slowest_answer;
        self.client.answered(sent, response, now);
        if self.client.slowest_answer > slowest {
            self.slowest_cause = self
                .faults
                .iter()
                .rev()
                .find(|(at, _)| *at <= now)
                .map(|(_, kind)| *kind);
        }
        if self.client.acked.len() > before {
            let value = sent.value.expect("only produces are acknowledged");
            let offset = self.client.acked[&value];
            self.log(|| {
                format!(
                    "node {} acknowledged value {value} at offset {offset} (sent at {} ms)",
                    sent.node, sent.at
                )
            });
            if self.cfg.sabotage == Some(Sabotage::MoveAnAck) && self.client.acked.len() == 1 {
                self.client.acked.insert(value, offset + 1);
            }
            self.digest.u64(now).u64(3).u64(value).u64(offset as u64);
            self.ack_times.push(now);
            if let Some(h) = self.healed_at
                && now >= h
                && self.first_ack_after_heal.is_none()
            {
                self.first_ack_after_heal = Some(now - h);
            }
        }
    }

    fn resumed(&mut self, node: u64) {
        let now = self.now;
        for p in self
            .pauses
            .iter_mut()
            .filter(|p| p.0 == node && p.2 == u64::MAX)
        {
            p.2 = now;
        }
    }

    /// A produce sent to a node that ran throughout is answered within [`ANSWER_BOUND_MS`],
    /// whatever the faults: a leader that loses its quorum or its term fails what it parked at
    /// once, as Kafka's purgatory does. (A paused node answers late; a killed one never.)
    fn owed(&mut self, sent: &Sent, now: u64) {
        let paused = self
            .pauses
            .iter()
            .any(|&(n, from, until)| n == sent.node && from <= now && until >= sent.at);
        if paused {
            return;
        }
        let mut waited = now - sent.at;
        if self.cfg.sabotage == Some(Sabotage::LateAnswers) && sent.node == 1 {
            waited += ANSWER_BOUND_MS;
        }
        self.slowest_owed = self.slowest_owed.max(waited);
        if waited > ANSWER_BOUND_MS {
            self.violations.push(format!(
                "node {} took {waited} ms to answer a produce sent at {} ms (bound {ANSWER_BOUND_MS} ms)",
                sent.node, sent.at
            ));
        }
    }

    /// What a consumer of node `i` could read now: below its high watermark. Recorded, and the
    /// high watermark must not go back within one run of the node.
    fn observe(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_ref().filter(|l| l.replica.serving()) else {
            return;
        };
        let placement = live
            .broker
            .meta()
            .and_then(|m| m.partition(TOPIC, 0))
            .map(|p| (p.moves, p.hosted_on(node.id as i32)));
        if let Some((moves, hosted)) = placement {
            if moves != node.moves_seen || !hosted {
                node.moves_seen = moves;
                node.last_hw = (node.life, 0);
                node.read_to = 0;
            }
            if !hosted {
                return;
            }
        }
        // Nothing committed since the last look: nothing new to read, and no step back.
        if live.broker.high_watermark(TOPIC, 0) == Some(node.last_hw.1)
            && node.last_hw.0 == node.life
        {
            return;
        }
        let Some((hw, batches)) = live.broker.committed_batches(TOPIC, 0, node.read_to) else {
            return;
        };
        if node.last_hw.0 == node.life && hw < node.last_hw.1 {
            self.violations.push(format!(
                "node {}: high watermark went back from {} to {hw} at {} ms",
                node.id, node.last_hw.1, self.now
            ));
        }
        node.last_hw = (node.life, hw);
        for (offset, value) in client::records(&batches) {
            if offset >= hw {
                break;
            }
            if offset < node.read_to {
                continue;
            }
            node.read_to = offset + 1;
            match self.seen.get(&offset) {
                Some(&v) if v != value => self.violations.push(format!(
                    "offset {offset}: a consumer read value {v} earlier, node {} now holds {value}",
                    node.id
                )),
                Some(_) => {}
                None => {
                    self.seen.insert(offset, value);
                }
            }
        }
    }

    fn persist_done(&mut self, i: usize) {
        let wall = self.wall(i);
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_mut() else {
            return;
        };
        let Some(batch) = live.persists.pop_front() else {
            return;
        };
        let mut done: Vec<(u64, u64)> = Vec::new();
        for (group, p) in &batch.persists {
            let Some(store) = node.durable.get_mut(group) else {
                continue; // removed meanwhile
            };
            store.apply_persist(p);
            if !(self.cfg.sabotage == Some(Sabotage::UnrecordedAcks) && node.id == 2) {
                self.commits.wrote(node.id, *group, p);
            }
            match done.iter_mut().find(|(g, _)| g == group) {
                Some(d) => d.1 = p.number,
                None => done.push((*group, p.number)),
            }
        }
        if let Err(e) = live
            .replica
            .persisted(&done, &batch.written, now, wall, &mut live.broker)
        {
            self.violations.push(format!("node {}: {e}", node.id));
        }
        live.due = now;
        self.run_io(i);
    }

    fn apply_done(&mut self, i: usize) {
        let wall = self.wall(i);
        let id = self.nodes[i].id;
        let Some(live) = self.nodes[i].live.as_mut() else {
            return;
        };
        let Some(job) = live.applies.pop_front() else {
            return;
        };
        match job {
            ApplyJob::Entries { group, entries } => {
                if let Some(last) = apply_entries(&mut live.broker, group, entries, wall)
                    && let Err(e) = live.replica.applied(group, last)
                {
                    self.violations.push(format!("node {id}: {e}"));
                }
            }
            ApplyJob::MetaImage { index, mut data } => {
                if self.cfg.sabotage == Some(Sabotage::CorruptMetaImage)
                    && let Some(Ok(mut meta)) =
                        sluice_proto::cluster::MetaState::decode_image(&data)
                {
                    meta.broker_configs
                        .insert(99, BTreeMap::from([("sabotage".into(), "1".into())]));
                    data = meta.encode_image();
                }
                self.meta_images += 1;
                match install_meta_image(&mut live.broker, index, &data, wall) {
                    Ok(at) => {
                        if let Err(e) = live.replica.applied(META_GROUP, at) {
                            self.violations.push(format!("node {id}: {e}"));
                        }
                    }
                    Err(e) => self.violations.push(format!("node {id}: {e}")),
                }
            }
            ApplyJob::Install {
                group,
                index,
                image,
            } => {
                if !self.install(i, group, index, image.clone()) {
                    // No replica to copy from right now: again a little later.
                    let node = &mut self.nodes[i];
                    if let Some(live) = node.live.as_mut() {
                        live.applies.push_front(ApplyJob::Install {
                            group,
                            index,
                            image,
                        });
                        let life = node.life;
                        self.at(self.now + 50, Event::ApplyDone { node: id, life });
                    }
                    return;
                }
            }
        }
        if let Some(live) = self.nodes[i].live.as_mut() {
            live.due = self.now;
        }
        self.settle(i);
    }

    /// What the server's `catchup::install` does over the replica listener: copies the records
    /// a snapshot stands for from a reachable replica with replica fetches, then reports the
    /// snapshot applied. False when no replica can serve them now.
    fn install(&mut self, i: usize, group: u64, index: u64, image: PartitionImage) -> bool {
        let id = self.nodes[i].id;
        let wall = self.wall(i);
        let Some(live) = self.nodes[i].live.as_mut() else {
            return true;
        };
        let mut step = live.broker.install_begin(group, image, wall);
        loop {
            let (request, sources) = match step {
                InstallStep::Done | InstallStep::Gone => {
                    let live = self.nodes[i].live.as_mut().expect("checked");
                    if step == InstallStep::Done {
                        live.broker.install_finish(group, wall);
                    }
                    if let Err(e) = live.replica.applied(group, index) {
                        self.violations.push(format!("node {id}: {e}"));
                    }
                    self.log(|| format!("node {id}: group {group} installed its snapshot"));
                    return true;
                }
                InstallStep::Fetch {
                    request, sources, ..
                } => (request, sources),
            };
            let mut fetched = None;
            for (source, _, _) in &sources {
                let src = *source as u64;
                let j = (src - 1) as usize;
                if self.nodes[j].paused
                    || !self.net.connected(id, src)
                    || !self.net.connected(src, id)
                {
                    continue;
                }
                let wall_j = self.wall(j);
                let Some(source_live) = self.nodes[j].live.as_mut() else {
                    continue;
                };
                let mut request = (*request).clone();
                request.max_wait_ms = 0;
                let session = sluice_proto::security::Session {
                    principal: format!("User:node-{id}"),
                    host: String::new(),
                    listener: sluice_proto::security::REPLICA_LISTENER.to_string(),
                    node: Some(id as i32),
                };
                let reply = source_live.broker.handle_session(
                    &session,
                    &client::ctx(ApiKey::Fetch, REPLICA_FETCH_VERSION),
                    RequestKind::Fetch(request),
                    wall_j,
                );
                match reply {
                    (Reply::Now(ResponseKind::Fetch(r)), _) => {
                        fetched = Some(r);
                        break;
                    }
                    // The long poll, answered at once (what the server does at its deadline).
                    (Reply::Fetch(r), _) => {
                        fetched =
                            Some(source_live.broker.fetch(&r, REPLICA_FETCH_VERSION).response);
                        break;
                    }
                    other => self
                        .log(|| format!("node {id}: fetch from {src} for an install: {other:?}")),
                }
            }
            let Some(response) = fetched else {
                return false;
            };
            let live = self.nodes[i].live.as_mut().expect("checked");
            if let Err(e) = live.broker.install_fetched(group, &response, wall) {
                self.log(|| format!("node {id}: install of group {group}: {e}"));
                return false;
            }
            step = live.broker.install_next(group);
        }
    }

    /// Moves partition 0 to two of the three nodes, or back to all three, through a random
    /// running node (the request's answer is not awaited: a later move may redirect it).
    fn reassign(&mut self) {
        // Not while a node is rebuilding from a lost disk: a move to two replicas, one of them
        // still recovering, stays without a leader if that one crashes again (it restarts
        // unsure and votes only once caught up with a leader, which the other alone cannot be).
        if self
            .nodes
            .iter()
            .any(|n| n.live.as_ref().is_none_or(|l| l.replica.recovering()))
        {
            return;
        }
        let Some((via, i)) = self.pick_running(u64::MAX) else {
            return;
        };
        let now_replicas = self.nodes[i]
            .live
            .as_ref()
            .and_then(|l| l.broker.meta())
            .and_then(|m| m.partition(TOPIC, 0).map(|p| p.wanted().to_vec()))
            .unwrap_or_default();
        let mut target: Vec<i32> = (1..=NODES as i32).collect();
        if now_replicas.len() == NODES as usize {
            let out = self.rng.range(0, NODES) as usize;
            target.remove(out);
        } else if now_replicas.len() == 2 && self.rng.range(0, 2) == 0 {
            // A swap to another pair: one joint change adds the third node and removes one of
            // these, so the old and the new majorities differ.
            let keep = now_replicas[self.rng.range(0, 2) as usize];
            target.retain(|n| *n == keep || !now_replicas.contains(n));
        }
        let first = self.rng.range(0, target.len() as u64) as usize;
        target.rotate_left(first);
        self.log(|| format!("partition 0 moves to {target:?} (asked through node {via})"));
        self.last_reassign = Some(self.now);
        let wall = self.wall(i);
        let live = self.nodes[i].live.as_mut().expect("up");
        let _ = live.broker.handle(
            &client::ctx(ApiKey::AlterPartitionReassignments, 0),
            client::reassign_request(&target),
            wall,
        );
        live.due = self.now;
    }

    /// A random running, unpaused node with an id up to `max_id` to send an admin request
    /// through: (its id, its index).
    fn pick_running(&mut self, max_id: u64) -> Option<(u64, usize)> {
        let up: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.id <= max_id && n.live.is_some() && !n.paused)
            .map(|n| n.id)
            .collect();
        if up.is_empty() {
            return None;
        }
        let via = up[self.rng.range(0, up.len() as u64) as usize];
        Some((via, (via - 1) as usize))
    }

    /// Adds the extra node to the cluster, or removes it (through a random running node), as
    /// `sluice cluster add-node` / `remove-node` do.
    fn change_members(&mut self) {
        let extra = NODES as i32 + 1;
        let Some((via, i)) = self.pick_running(NODES) else {
            return;
        };
        let member = self.nodes[i]
            .live
            .as_ref()
            .and_then(|l| l.broker.meta())
            .is_some_and(|m| m.members().contains(&extra));
        let (key, request) = if member {
            self.log(|| format!("node {extra} is removed (asked through node {via})"));
            (
                ApiKey::RemoveRaftVoter,
                RequestKind::RemoveRaftVoter(
                    kafka_protocol::messages::RemoveRaftVoterRequest::default()
                        .with_voter_id(extra),
                ),
            )
        } else {
            self.log(|| format!("node {extra} is added (asked through node {via})"));
            (ApiKey::AddRaftVoter, client::add_voter_request(extra))
        };
        let wall = self.wall(i);
        let live = self.nodes[i].live.as_mut().expect("up");
        let _ = live.broker.handle(&client::ctx(key, 0), request, wall);
        live.due = self.now;
    }

    /// `__meta` is one log: every entry a node holds as committed matches what any other node
    /// held as committed at that index (Raft's log matching, across membership changes).
    fn check_meta_log(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let Some(store) = self.nodes[i]
            .live
            .as_ref()
            .and_then(|l| l.replica.log_store(META_GROUP))
        else {
            return;
        };
        if self.meta_checked.len() <= i {
            self.meta_checked.resize(i + 1, 0);
        }
        let commit = store.hard_state().commit;
        let from = self.meta_checked[i];
        for e in store
            .entries_slice()
            .iter()
            .filter(|e| e.index > from && e.index <= commit)
        {
            let mut seen = (e.term, Fnv::default().words(&e.data).finish());
            if self.cfg.sabotage == Some(Sabotage::ForkMeta) && id == 2 && e.index == commit {
                seen.0 += 1;
            }
            if matches!(
                sluice_proto::cluster::MetaCommand::decode(&e.data),
                Ok(Some(
                    sluice_proto::cluster::MetaCommand::AddMember { .. }
                        | sluice_proto::cluster::MetaCommand::RemoveMember { .. }
                ))
            ) {
                self.member_changes.insert(e.index);
            }
            let first = *self.meta_log.entry(e.index).or_insert(seen);
            if first != seen {
                let v = format!(
                    "node {id} committed __meta entry {} of term {}, another node one of term {} at that index",
                    e.index, seen.0, first.0
                );
                if !self.violations.contains(&v) {
                    self.violations.push(v);
                }
            }
        }
        self.meta_checked[i] = commit.max(from);
    }

    fn client_tick(&mut self) {
        for i in 0..NODES as usize {
            self.observe(i);
        }
        let outstanding: usize = self
            .nodes
            .iter()
            .filter_map(|n| n.live.as_ref())
            .map(|l| l.parked.len())
            .sum();
        // Requests older than the client's timeout are given up (their outcome is unknown).
        let now = self.now;
        let mut given_up = Vec::new();
        for n in &mut self.nodes {
            if let Some(l) = n.live.as_mut() {
                l.parked.retain(|_, s| {
                    let keep = now.saturating_sub(s.at) < 5_000;
                    if !keep {
                        given_up.push(s.clone());
                    }
                    keep
                });
            }
        }
        given_up.sort_by_key(|s| (s.at, s.node));
        for s in given_up {
            if s.value.is_some() {
                self.owed(&s, now);
            }
        }
        if outstanding >= 5 {
            return;
        }
        let up: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.live.as_ref().is_some_and(|l| l.replica.serving()) && !n.paused)
            .map(|n| n.id)
            .collect();
        if up.is_empty() {
            return;
        }
        let target = match self.client.leader_hint {
            Some(l) if up.contains(&l) => l,
            _ => up[self.rng.range(0, up.len() as u64) as usize],
        };
        let (value, request, api) = if self.client.topic_ready {
            let (v, r) = self.client.produce();
            (Some(v), r, (ApiKey::Produce, 9))
        } else {
            (
                None,
                client::create_topic_request(self.cfg.partitions),
                (ApiKey::CreateTopics, 7),
            )
        };
        let i = (target - 1) as usize;
        let wall = self.wall(i);
        let live = self.nodes[i].live.as_mut().expect("up");
        let reply = live
            .broker
            .handle(&client::ctx(api.0, api.1), request, wall);
        let sent = Sent {
            node: target,
            at: now,
            value,
        };
        live.due = now;
        match reply {
            Reply::Now(response) => self.answered(&sent, &response, now),
            Reply::Parked { token } => {
                live.parked.insert(token, sent);
            }
            Reply::AfterSync { response, .. } => {
                self.settle(i);
                self.answered(&sent, &ResponseKind::Produce(response), now);
            }
            Reply::Durable { response, .. } => {
                self.settle(i);
                self.answered(&sent, &response, now);
            }
            _ => {}
        }
    }

    fn fault(&mut self) {
        if let Some(only) = self.cfg.only {
            self.only_fault(only);
            return;
        }
        let kinds = if self.cfg.members {
            13
        } else if self.cfg.moves {
            12
        } else {
            11
        };
        let kind = self.rng.range(0, kinds);
        let a = self.rng.range(1, NODES + 1);
        let b = a % NODES + 1;
        let c = b % NODES + 1;
        self.digest.u64(self.now).u64(4).u64(kind).u64(a);
        const KINDS: [&str; 13] = [
            "kill -9",
            "isolation",
            "cannot send",
            "bridge",
            "lossy links",
            "slow disk",
            "clock jump",
            "pause",
            "links heal",
            "cannot receive",
            "disk lost",
            "reassign",
            "membership",
        ];
        let label = match KINDS[kind as usize] {
            "reassign" if !self.cfg.moves => "membership",
            k => k,
        };
        self.faults.push((self.now, label));
        match kind {
            0 => {
                // kill -9 (the partition leader the client writes to, when it knows one),
                // restart later.
                let a = self.client.leader_hint.unwrap_or(a);
                let i = (a - 1) as usize;
                if self.nodes[i].live.is_some() {
                    self.nodes[i].live = None;
                    self.nodes[i].fs.crash();
                    self.log(|| format!("node {a} crashes"));
                    let when = self.now + self.rng.range(200, 3_000);
                    self.at(when, Event::Restart { node: a });
                }
            }
            1 => {
                self.log(|| format!("node {a} isolated"));
                self.net.partition(&[a], &[b, c]);
            }
            2 => {
                self.log(|| format!("node {a} cannot send to {b} and {c}"));
                self.net.blocked.insert((a, b));
                self.net.blocked.insert((a, c));
            }
            3 => {
                self.log(|| format!("bridge: {b} and {c} cut, {a} reaches both"));
                self.net.partition(&[b], &[c]);
            }
            4 => {
                self.log(|| "lossy, duplicating, reordering network".to_string());
                self.net.config.drop_p = 0.1;
                self.net.config.dup_p = 0.05;
                self.net.config.long_delay_p = 0.05;
                self.net.config.long_delay_us_max = 300_000;
            }
            5 => {
                self.log(|| format!("node {a}: slow disk"));
                self.nodes[(a - 1) as usize].disk_ms = (5, 60);
            }
            6 => {
                let jump = self.rng.range(0, 600_000) as i64 - 300_000;
                self.log(|| format!("node {a}: wall clock jumps {jump} ms"));
                self.nodes[(a - 1) as usize].wall_skew += jump;
            }
            7 => {
                let i = (a - 1) as usize;
                if !self.nodes[i].paused {
                    self.nodes[i].paused = true;
                    self.pauses.push((a, self.now, u64::MAX));
                    self.log(|| format!("node {a} paused"));
                    let when = self.now + self.rng.range(100, 2_500);
                    self.at(when, Event::Resume { node: a });
                }
            }
            8 => {
                self.log(|| "links heal".to_string());
                self.net.heal();
            }
            10 => {
                // kill -9 and a wiped data dir, restart later; one node at a time (Raft cannot
                // survive a majority losing its disks).
                let lost = self
                    .nodes
                    .iter()
                    .any(|n| n.live.as_ref().is_none_or(|l| l.replica.recovering()));
                // Nor while partition 0 has fewer than three replicas (a move): a wiped replica
                // of two never votes again until it caught up with a leader, and the other
                // alone elects none (Raft's price; Kafka users run replication factor 3).
                let thin = self.nodes.iter().any(|n| {
                    n.live
                        .as_ref()
                        .and_then(|l| l.broker.meta())
                        .and_then(|m| m.partition(TOPIC, 0))
                        .is_some_and(|p| p.all_replicas().len() < NODES as usize || p.moving())
                });
                // A move asked lately may not have reached `__meta` yet.
                let thin = thin || self.last_reassign.is_some_and(|at| self.now < at + 3_000);
                if !lost && !thin && self.nodes[(a - 1) as usize].live.is_some() {
                    self.wipe(a);
                    let when = self.now + self.rng.range(200, 3_000);
                    self.at(when, Event::Restart { node: a });
                }
            }
            11 if self.cfg.moves => self.reassign(),
            11 | 12 if self.cfg.members => self.change_members(),
            _ => {
                // A deaf node: it still sends (a leader's heartbeats keep its followers
                // from electing) but hears nothing.
                self.log(|| format!("node {a} cannot receive from {b} and {c}"));
                self.net.blocked.insert((b, a));
                self.net.blocked.insert((c, a));
            }
        }
    }

    /// kill -9 of `node` and the loss of its data dir.
    fn wipe(&mut self, node: u64) {
        let n = &mut self.nodes[(node - 1) as usize];
        n.live = None;
        n.fs = MemStorage::new();
        n.durable.clear();
        self.log(|| format!("node {node} crashes and loses its data dir"));
    }

    /// The one fault of a single-fault run, on the node the client writes to, lasting until
    /// the heal.
    fn only_fault(&mut self, fault: Fault) {
        if !self.faults.is_empty() {
            return;
        }
        let a = self.client.leader_hint.unwrap_or(1);
        let b = a % NODES + 1;
        let c = b % NODES + 1;
        self.faults.push((self.now, "single"));
        self.log(|| format!("node {a}: {fault:?} until the heal"));
        match fault {
            Fault::Isolation => self.net.partition(&[a], &[b, c]),
            Fault::CannotSend => {
                self.net.blocked.insert((a, b));
                self.net.blocked.insert((a, c));
            }
            Fault::CannotReceive => {
                self.net.blocked.insert((b, a));
                self.net.blocked.insert((c, a));
            }
            Fault::Bridge => self.net.partition(&[a], &[b]),
            Fault::WipedVoter => {
                self.net.heal();
                self.wipe(3);
                self.net.partition(&[1], &[2, 3]);
                let when = self.now + 100;
                self.at(when, Event::Restart { node: 3 });
            }
        }
    }

    fn heal(&mut self) {
        self.log(|| "heal everything".to_string());
        self.healed_at = Some(self.now);
        self.net.heal();
        if self.cfg.sabotage == Some(Sabotage::NeverHeal) {
            self.net.partition(&[1], &[2, 3]);
            self.net.partition(&[2], &[3]);
        }
        self.net.config = NetConfig {
            delay_us_min: 200,
            delay_us_max: 2_000,
            ..NetConfig::default()
        };
        for i in 0..NODES as usize {
            self.nodes[i].disk_ms = (0, 3);
            self.nodes[i].paused = false;
            self.resumed(i as u64 + 1);
            if self.nodes[i].live.is_none() {
                self.start(i);
            }
        }
        self.digest.u64(self.now).u64(5);
    }

    /// The end-of-run checks, on the healed and quiet cluster.
    /// After healing, `__meta`'s voters are the members `__meta` records (every addition and
    /// removal completed), as its leader sees them.
    fn check_members_settled(&mut self) {
        let Some(n) = self.nodes.iter().find(|n| {
            n.live
                .as_ref()
                .is_some_and(|l| l.replica.meta_leader().is_some_and(|(_, id)| id == n.id))
        }) else {
            self.violations
                .push("no __meta leader at the end".to_string());
            return;
        };
        let live = n.live.as_ref().expect("found");
        let wanted = live.broker.wanted_meta_voters().unwrap_or_default();
        let cs = live
            .replica
            .log_store(META_GROUP)
            .map(|s| s.conf_state().clone())
            .unwrap_or_default();
        if !crate::moves::settled(n.id, &cs, &wanted) {
            self.violations.push(format!(
                "__meta's membership did not settle: voters {:?}, learners {:?}, members {wanted:?} (leader node {})",
                cs.voters, cs.learners, n.id
            ));
        }
    }

    /// Running nodes whose metadata stands at the same `__meta` index hold the same metadata,
    /// however they got there (entries, an image from a leader, a restart from their own).
    fn check_meta_states(&mut self) {
        let mut at: BTreeMap<u64, (u64, &sluice_proto::cluster::MetaState)> = BTreeMap::new();
        let mut found = Vec::new();
        for n in &self.nodes {
            let Some(live) = n.live.as_ref() else {
                continue;
            };
            let (Some(index), Some(meta)) = (live.broker.meta_applied(), live.broker.meta()) else {
                continue;
            };
            match at.get(&index) {
                Some((other, theirs)) if *theirs != meta => found.push(format!(
                    "nodes {other} and {} hold different metadata at __meta index {index}",
                    n.id
                )),
                Some(_) => {}
                None => {
                    at.insert(index, (n.id, meta));
                }
            }
        }
        self.violations.extend(found);
    }

    fn finish(&mut self) {
        if self.cfg.members {
            self.check_members_settled();
        }
        self.check_meta_states();
        if !self.client.topic_ready {
            self.violations
                .push("the topic was never created".to_string());
            return;
        }
        // (node, high watermark, (offset, value) below it)
        let mut logs: Vec<(u64, i64, Records)> = Vec::new();
        for n in &self.nodes {
            let Some(live) = n.live.as_ref() else {
                continue;
            };
            // Moves: only the partition's replicas hold it at the end, and no move is left.
            if let Some(p) = live.broker.meta().and_then(|m| m.partition(TOPIC, 0)) {
                if p.moving() {
                    self.violations.push(format!(
                        "node {}: partition 0 is still moving at the end ({:?} → {:?})",
                        n.id,
                        p.replicas,
                        p.wanted()
                    ));
                }
                if !p.replicas.contains(&(n.id as i32)) {
                    continue;
                }
            }
            // The extra node (`members`) never holds partition 0, and outside the cluster it
            // may not even know the topic.
            if n.id > NODES {
                continue;
            }
            let Some((hw, batches)) = live.broker.committed_batches(TOPIC, 0, 0) else {
                self.violations
                    .push(format!("node {}: no partition {TOPIC}-0 at the end", n.id));
                continue;
            };
            let mut records: Records = client::records(&batches)
                .into_iter()
                .filter(|(o, _)| *o < hw)
                .collect();
            if self.cfg.sabotage == Some(Sabotage::DivergeAReplica) && n.id == 2 {
                records.pop();
            }
            logs.push((n.id, hw, records));
        }
        if self.cfg.sabotage == Some(Sabotage::PhantomRead) {
            self.seen.insert(i64::MAX - 1, 7);
        }
        for (id, hw, records) in &logs {
            self.digest.u64(*id).u64(*hw as u64);
            for (o, v) in records {
                self.digest.u64(*o as u64).u64(*v);
            }
        }
        // The reference is the longest log; after the quiet period every replica matches it.
        logs.sort_by_key(|(id, hw, _)| (Reverse(*hw), *id));
        let Some((first_id, _, reference)) = logs.first() else {
            self.violations.push("no node runs at the end".to_string());
            return;
        };
        for (id, hw, records) in &logs[1..] {
            if records != reference {
                let diverge = records
                    .iter()
                    .zip(reference.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(records.len().min(reference.len()));
                self.violations.push(format!(
                    "node {id} (high watermark {hw}, {} records) and node {first_id} ({} records) differ from record {diverge}",
                    records.len(),
                    reference.len()
                ));
            }
        }
        let at: BTreeMap<i64, u64> = reference.iter().copied().collect();
        let mut values = std::collections::BTreeSet::new();
        for (o, v) in reference {
            if !values.insert(*v) {
                self.violations.push(format!(
                    "value {v} is in the log twice (again at offset {o})"
                ));
            }
        }
        for (&value, &offset) in &self.client.acked {
            if at.get(&offset) != Some(&value) {
                self.violations.push(format!(
                    "acknowledged value {value} at offset {offset} is not there (found {:?})",
                    at.get(&offset)
                ));
            }
        }
        for (&offset, &value) in &self.seen {
            if at.get(&offset) != Some(&value) {
                self.violations.push(format!(
                    "a consumer read value {value} at offset {offset}, which the final log does not hold ({:?})",
                    at.get(&offset)
                ));
            }
        }
        if self.client.last_ack_at + 1_000 < self.stop_producing {
            self.violations.push(format!(
                "no write acknowledged after {} ms (producing went on until {} ms): the cluster did not recover after healing",
                self.client.last_ack_at, self.stop_producing
            ));
        }
        match self.first_ack_after_heal {
            None => self
                .violations
                .push("no write acknowledged after healing".to_string()),
            Some(ms) if ms > 8_000 => self.violations.push(format!(
                "the first write after healing took {ms} ms to be acknowledged"
            )),
            Some(_) => {}
        }
        self.check_idle_partitions();
    }

    /// Every partition, idle ones included, is hosted by every running node and has one
    /// leader at the highest term any replica knows; the idle ones went quiet again.
    fn check_idle_partitions(&mut self) {
        if self.cfg.partitions <= 1 {
            return;
        }
        // partition → (node, led here, term)
        let mut views: BTreeMap<i32, Vec<(u64, bool, u64)>> = BTreeMap::new();
        for n in &self.nodes {
            let Some(live) = n.live.as_ref() else {
                continue;
            };
            let Some(meta) = live.broker.meta() else {
                continue;
            };
            for g in live.replica.group_states() {
                if let Some((TOPIC, p)) = meta.group(g.group) {
                    views.entry(p).or_default().push((n.id, g.leader, g.term));
                }
            }
            self.quiesced_at_end = self.quiesced_at_end.max(live.replica.quiesced_groups());
        }
        let running = self.nodes.iter().filter(|n| n.live.is_some()).count();
        for p in 0..self.cfg.partitions {
            let view = views.remove(&p).unwrap_or_default();
            if view.len() != running {
                self.violations.push(format!(
                    "partition {p}: hosted by {} of the {running} running nodes at the end",
                    view.len()
                ));
                continue;
            }
            let top = view.iter().map(|v| v.2).max().unwrap_or(0);
            let leaders: Vec<u64> = view
                .iter()
                .filter(|v| v.1 && v.2 == top)
                .map(|v| v.0)
                .collect();
            if leaders.len() != 1 {
                self.violations.push(format!(
                    "partition {p}: leaders {leaders:?} at term {top} at the end (views {view:?})"
                ));
            }
        }
    }

    fn longest_no_ack(&self) -> u64 {
        let (from, to) = self.fault_window;
        let mut last = from;
        let mut longest = 0;
        for &t in self.ack_times.iter().filter(|&&t| t >= from) {
            longest = longest.max(t - last);
            last = t;
            if t > to {
                return longest;
            }
        }
        longest.max(to - last)
    }

    fn outcome(&mut self) -> Outcome {
        Outcome {
            seed: self.cfg.seed,
            digest: self.digest.finish(),
            sent: self.client.sent,
            acked: self.client.acked.len(),
            committed: self.seen.len(),
            slowest_answer: self.client.slowest_answer,
            longest_no_ack: self.longest_no_ack(),
            slowest_cause: self.slowest_cause,
            slowest_owed: self.slowest_owed,
            recovered_after_ms: self.first_ack_after_heal,
            first_leader: self.first_leader,
            quiesced_at_end: self.quiesced_at_end,
            moves: self.faults.iter().filter(|(_, k)| *k == "reassign").count(),
            member_changes: self.member_changes.len(),
            joint_configs: self.commits.joint_configs(),
            joint_swaps: self.commits.joint_swaps(),
            meta_images: self.meta_images,
            violations: std::mem::take(&mut self.violations),
        }
    }
}

/// [`Sabotage::SilenceAnIdlePartition`]: the batch without partition 1's messages.
fn silence_partition_1(broker: &Broker, bytes: Vec<u8>) -> Vec<u8> {
    let Some(group) = broker
        .meta()
        .and_then(|m| m.partition(TOPIC, 1))
        .map(|p| p.group)
    else {
        return bytes;
    };
    let Ok(mut batch) = sluice_raft::PeerBatch::decode_from(&bytes[..]) else {
        return bytes;
    };
    batch.messages.retain(|m| m.group != group);
    batch.encode()
}

#[cfg(test)]
mod tests;
