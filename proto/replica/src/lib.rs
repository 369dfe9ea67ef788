//! The cluster replica of one node, as a sans-IO state machine.
//!
//! [`Replica`] owns the node's Raft groups (`__meta` and one per hosted partition) and every
//! decision a cluster node makes beside the Kafka broker's: which proposals enter a log (only
//! through the leader, which the broker's early acks=1 answers rely on), which followers are in
//! sync, how far each Raft log may be dropped, when leadership goes back to a partition's
//! preferred replica, how it is handed off on shutdown, and in which order committed entries
//! are applied. It is shaped like quinn-proto: the runtime feeds it time
//! ([`Replica::handle_timeout`]), peer traffic ([`Replica::handle_message`]) and the results of
//! the I/O it asked for ([`Replica::persisted`], [`Replica::applied`],
//! [`Replica::group_opened`]), and drains what it wants done: [`Replica::poll_transmit`] (Raft
//! batches per peer), [`Replica::poll`] (persist, apply, open or drop a group's store, write
//! marks) and [`Replica::poll_timeout`]. Time is one monotonic millisecond clock; the wall
//! clock (`wall_ms`) only reaches the broker, for record timestamps and retention.
//!
//! The broker is passed in (`&mut Broker`) where a decision reads or changes it, so the same
//! code runs under the server's lock and in the deterministic simulator.

pub mod apply;
pub mod leadership;
pub mod liveness;
pub mod moves;
pub mod reach;
pub mod recovery;
pub mod sim;

/// The simulator's tests allocate and free on every simulated message: mimalloc runs them
/// markedly faster than the system allocator (see `sim::tests`).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
mod standing;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use sluice_proto::broker::{Broker, GroupChange, GroupProgress, MetaQuorum, QuorumVoter};
use sluice_proto::cluster::{PartitionEntry, PartitionImage, encode_compact_hint};
use sluice_raft::eraftpb::{ConfState, MessageType, Snapshot};
use sluice_raft::{
    Apply, Driver, LogStore, META_GROUP, PeerBatch, PeerProgress, Persist, StateRole, Task,
};
use tracing::{debug, error, info, warn};

pub use apply::{ApplyJob, apply_entries, install_meta_image};
use liveness::Silence;
use reach::Reach;
use recovery::{Recovery, Standing};

/// How often the replica samples follower liveness, reports the ISR, proposes compaction hints
/// and lets the broker run its cluster timers.
const HOUSEKEEPING_MS: u64 = 200;
/// How often leadership is checked against the preferred replicas.
const BALANCE_MS: u64 = 2_000;
/// Transfers started per balance round: a restarted node takes its partitions back gradually.
const BALANCE_MOVES: usize = 16;
/// How often a leader leaving a moving partition retries handing it over.
const MOVE_TRANSFER_EVERY_MS: u64 = 3000;
/// A member not yet in `__meta` is taken in as a learner only if heard from within this long.
const JOINER_HEARD_MS: u64 = 5000;
/// A preferred replica repeats its first campaign for a new partition this long: its first
/// one is lost when the other replicas open the group a moment later than it does.
const EARLY_CAMPAIGN_MS: u64 = 3_000;
/// How often it repeats it meanwhile.
const EARLY_CAMPAIGN_EVERY_MS: u64 = 50;
/// A new partition's other replicas start no election of their own for this long (ms): the
/// preferred replica, which may open the group later than they do (thousands of groups open
/// one after another), wins it in term 1 and leaders end up spread as placed. If it never
/// comes, they elect one of themselves after this plus an election timeout.
const FRESH_DEFER_MS: u64 = 3_000;
/// On shutdown, how long leadership hand-off may take before the node stops anyway.
const HANDOFF_MS: u64 = 2_000;
/// On shutdown, how often transfers are retried for groups still led here.
const HANDOFF_RETRY_MS: u64 = 500;
/// How often a replica rebuilt from an empty data dir tells leaders where its logs really end.
const LOST_REPORT_MS: u64 = 500;
/// How often a node unsure whether the cluster is new says which peers it waits for.
const UNSURE_LOG_MS: u64 = 5_000;
/// Vote requests an unsure node keeps until it knows whether the cluster is new.
const DEFERRED_MAX: usize = 64;
/// Bytes of entry data a group may hold in memory before its leader proposes a compaction hint
/// even if fewer than `compact_step` entries accumulated (entries are whole produce requests,
/// up to megabytes each).
const COMPACT_BYTES: usize = 16 << 20;

/// Errors the replica reports to its runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// raft-rs refused an operation the replica needed.
    #[error("node {node}: raft group {group}: {source}")]
    Raft {
        /// This node.
        node: u64,
        /// The group.
        group: u64,
        /// What raft-rs said.
        #[source]
        source: sluice_raft::Error,
    },
}

/// Settings of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's id.
    pub node_id: u64,
    /// Seed for election jitter (differs between processes and starts).
    pub seed: u64,
    /// A leader proposes a compaction hint once every live replica holds this many more entries.
    pub compact_step: u64,
    /// A follower silent this long (ms) leaves the ISR and stops holding compaction back.
    pub replica_timeout_ms: u64,
    /// `__meta`'s log is compacted to a snapshot image of the metadata once it holds this many
    /// applied entries (Kafka's `metadata.log.max.record.bytes.between.snapshots`, counted
    /// in entries); 0: never (see docs/OPERATIONS.md on why that is the default for now).
    pub meta_compact_entries: u64,
    /// Milliseconds from process start to the replica clock's zero (for "elected after" logs).
    pub started_ms: u64,
    /// [`RECOVERING_MARK`] said `recovering` at start: the node stopped before it caught up
    /// after starting empty, so what it holds cannot vote yet either.
    pub recovering: bool,
    /// This node is joining a running cluster for the first time (`--join`, and the cluster
    /// says it never registered): its empty state is new, not lost, so it need not recover a
    /// vote it never cast. It is not a voter anywhere yet and becomes one only once caught up.
    pub joining: bool,
}

/// The file (relative to the data dir, through [`Io::WriteMarks`]) that says this node started
/// empty and has not caught up yet: `recovering` while so, empty once it has. A crash half-way
/// through catching up must not turn a partial copy into a voter.
pub const RECOVERING_MARK: &str = "raft/recovering";

/// A partition group to start hosting: the runtime opens (or creates) its Raft store and hands
/// it to [`Replica::group_opened`].
#[derive(Debug, Clone)]
pub struct OpenGroup {
    /// Raft group.
    pub group: u64,
    /// The partition's replicas (the group's voters).
    pub voters: Vec<u64>,
    /// Entries up to this index are already in the local partition log.
    pub applied: u64,
    /// This node is the preferred leader: campaign at once rather than after a timeout.
    pub campaign: bool,
    /// This node is being added to the group: a new store starts empty, outside the
    /// membership, and is seeded by the leader's snapshot.
    pub joining: bool,
    /// For logs: the partition's topic.
    pub topic: String,
    /// For logs: the partition.
    pub partition: i32,
}

/// A group's Raft log was compacted in memory: the runtime rewrites its store to match.
#[derive(Debug, Clone)]
pub struct StoreCompaction {
    /// Raft group.
    pub group: u64,
    /// Compacted up to this index.
    pub index: u64,
    /// The new snapshot (its data: where the partition log stood).
    pub snapshot: Snapshot,
}

/// Entries and hard states to make durable, for any number of groups.
#[derive(Debug, Default)]
pub struct PersistBatch {
    /// What to write, per group, in order.
    pub persists: Vec<(u64, Persist)>,
    /// Last entry index written per group (answers acks=1 produce requests on the leader).
    pub written: Vec<(u64, u64)>,
}

/// I/O the replica asks its runtime for, in order.
#[derive(Debug)]
pub enum Io {
    /// Write and fsync, then report with [`Replica::persisted`]; Raft messages that depend on
    /// it are released only then.
    Persist(PersistBatch),
    /// Hand to the applier (off the loop); it reports with [`Replica::applied`].
    Apply(ApplyJob),
    /// Open a partition group's store, then [`Replica::group_opened`].
    OpenGroup(OpenGroup),
    /// Stop hosting a group: drop its store and delete its Raft state.
    RemoveGroup {
        /// Raft group.
        group: u64,
    },
    /// Rewrite a group's store after an in-memory compaction.
    CompactStore(StoreCompaction),
    /// Record partitions' applied marks and [`RECOVERING_MARK`] (path relative to the data dir,
    /// bytes), atomically and durably, before any later I/O.
    WriteMarks(Vec<(u64, String, Vec<u8>)>),
}

/// A Raft batch for one peer.
#[derive(Debug)]
pub struct Transmit {
    /// Receiving node.
    pub to: u64,
    /// The encoded [`PeerBatch`].
    pub bytes: Vec<u8>,
    /// Groups whose snapshot travels in it (report with [`Replica::transmitted`]).
    pub snapshots: Vec<u64>,
}

/// What a pass of [`Replica::handle_timeout`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pass {
    /// Housekeeping ran (the runtime may publish gauges on the same cadence).
    pub housekeeping: bool,
}

/// One group's Raft state, for metrics.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// Raft group.
    pub group: u64,
    /// Led by this node.
    pub leader: bool,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
}

/// What [`Replica::begin_shutdown`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Nothing to hand off (or nobody to hand it to): stop now.
    Now,
    /// Transfers started; [`Replica::stopped`] turns true when done or after the hand-off bound.
    HandingOff,
}

/// A node's cluster state machine (see the crate docs).
pub struct Replica {
    cfg: ReplicaConfig,
    node: sluice_raft::Node,
    /// Preferred leader (first replica) of each hosted partition group.
    preferred: HashMap<u64, u64>,
    /// Last compaction hint proposed per led group.
    hinted: HashMap<u64, u64>,
    silence: Silence,
    /// Quiesced led groups housekeeping already settled (ISR recorded, nothing to compact):
    /// skipped until they wake or a peer's reach changes.
    settled: HashSet<u64>,
    /// Peers silent at the last housekeeping round.
    silent_peers: BTreeSet<u64>,
    next_housekeeping: u64,
    next_balance: u64,
    /// Since when the node is handing off leadership to stop.
    stopping: Option<u64>,
    last_transfer: u64,
    /// Led groups whose leadership this node handed over to leave them (a move): when.
    move_transfers: HashMap<u64, u64>,
    stopped: bool,
    /// (term, leader id) of `__meta` last logged.
    meta_leader: (u64, u64),
    /// The first-election campaign was made (or is not this node's to make).
    first_campaign: bool,
    /// Serving Kafka clients (latched once `__meta` caught up and the node registered).
    serving: bool,
    /// Which peers this node hears: cut off from a majority, it stops serving clients.
    reach: Reach,
    /// `__meta`'s voters (refreshed at housekeeping).
    voters: Vec<u64>,
    /// `__meta`'s learners: nodes joining the cluster (refreshed with `voters`).
    learners: Vec<u64>,
    /// Every node the runtime can reach (its transport's peers): pinged too, so a node that
    /// joins is heard by a `__meta` leader its own (initial) view does not know yet.
    known_peers: Vec<u64>,
    /// New partitions this node is the preferred leader of, still without a leader: group →
    /// (give up at, campaign again at).
    early_campaigns: BTreeMap<u64, (u64, u64)>,
    /// New groups this node is not the preferred replica of, with when they may campaign
    /// (see [`FRESH_DEFER_MS`]).
    deferred_fresh: BTreeMap<u64, u64>,
    /// Pings are checked once Raft's own batches of this pass are out.
    pings_due: bool,
    pings: VecDeque<u64>,
    /// Started with an empty `__meta`: whether and which groups may vote yet.
    recovery: Recovery,
    /// Groups asked for with [`Io::OpenGroup`] and not opened yet.
    opening: std::collections::BTreeSet<u64>,
    /// [`RECOVERING_MARK`] says `recovering`.
    marked: bool,
    /// Vote requests that arrived while unsure whether the cluster is new: (from, message).
    deferred: Vec<(u64, sluice_raft::GroupMessage)>,
    /// Peers connected at the last [`Replica::peers_connected`].
    connected: Vec<u64>,
    /// When an unsure node next says which peers it waits for.
    next_unsure_log: u64,
    /// Lost-log reports to send, per peer (see `standing::report_lost_logs`).
    lost_out: std::collections::BTreeMap<u64, Vec<sluice_raft::LostLog>>,
    /// Term queries of groups catching up since starting empty, per peer (see `recovery`).
    term_queries_out: BTreeMap<u64, Vec<u64>>,
    /// Answers to peers' term queries, per peer.
    terms_out: BTreeMap<u64, Vec<sluice_raft::GroupTerm>>,
    /// Groups whose spent vote (see `recovery`) is not durable yet.
    forgo_pending: BTreeSet<u64>,
    next_lost_report: u64,
    /// The index of a `__meta` snapshot image handed to the broker and not yet reported
    /// installed: until it is, the broker's metadata is not what `__meta` has applied.
    meta_image_pending: Option<u64>,
    io: VecDeque<Io>,
}

impl Replica {
    /// A replica whose `__meta` log is `meta`: its snapshot image (if it was compacted) and
    /// the entries after it are applied again on every boot (the metadata lives in memory).
    pub fn new(cfg: ReplicaConfig, meta: LogStore) -> Result<Self, Error> {
        let node_id = cfg.node_id;
        let raft = |source| Error::Raft {
            node: node_id,
            group: META_GROUP,
            source,
        };
        let mut config = sluice_raft::Config::new(node_id);
        config.seed = cfg.seed ^ node_id;
        // Elections after 0.8–1.6 s of leader silence (5+ heartbeats of 150 ms): clients see a
        // new partition leader about 1.5 s after a node dies (docs/OPERATIONS.md, measured).
        config.election_ticks_min = 16;
        config.election_ticks_max = 32;
        let mut node = sluice_raft::Node::new(config).map_err(raft)?;
        let empty = (meta.hard_state().term == 0 && !cfg.joining) || cfg.recovering;
        let voters = meta.conf_state().voters.clone();
        // A compacted log resumes from its image, installed before the entries after it.
        let image = (meta.snapshot_index() > 1)
            .then(|| meta.snapshot_ref())
            .filter(|snap| !snap.data.is_empty())
            .map(|snap| (meta.snapshot_index(), snap.data.clone()));
        node.add_group(META_GROUP, meta, 0).map_err(raft)?;
        let mut recovery = Recovery::new(empty, META_GROUP);
        if empty {
            info!(
                node_id,
                "empty raft state: voting only once every peer reports an empty state too (a new cluster) or a leader has brought this node up to date (a lost data dir)"
            );
            if voters == [node_id] {
                recovery.heard(node_id, false, &voters, node_id);
            } else {
                node.hold_elections(META_GROUP, true);
            }
        }
        let mut io = VecDeque::new();
        let meta_image_pending = image.map(|(index, data)| {
            info!(node_id, index, "__meta resumes from its snapshot image");
            io.push_back(Io::Apply(ApplyJob::MetaImage { index, data }));
            index
        });
        // Written before anything this node persists can make its state look intact.
        if empty && !cfg.recovering && voters != [node_id] {
            io.push_back(Io::WriteMarks(vec![(
                META_GROUP,
                RECOVERING_MARK.to_string(),
                b"recovering\n".to_vec(),
            )]));
        }
        Ok(Replica {
            cfg,
            node,
            preferred: HashMap::new(),
            hinted: HashMap::new(),
            silence: Silence::default(),
            settled: HashSet::new(),
            silent_peers: BTreeSet::new(),
            next_housekeeping: 0,
            next_balance: 0,
            stopping: None,
            last_transfer: 0,
            move_transfers: HashMap::new(),
            stopped: false,
            meta_leader: (0, 0),
            first_campaign: false,
            serving: false,
            reach: Reach::default(),
            voters: Vec::new(),
            learners: Vec::new(),
            known_peers: Vec::new(),
            early_campaigns: BTreeMap::new(),
            deferred_fresh: BTreeMap::new(),
            pings_due: false,
            pings: VecDeque::new(),
            marked: empty && voters != [node_id],
            deferred: Vec::new(),
            connected: Vec::new(),
            next_unsure_log: UNSURE_LOG_MS,
            lost_out: Default::default(),
            term_queries_out: BTreeMap::new(),
            terms_out: BTreeMap::new(),
            forgo_pending: BTreeSet::new(),
            next_lost_report: 0,
            meta_image_pending,
            recovery,
            opening: Default::default(),
            io,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    fn err(&self, group: u64) -> impl Fn(sluice_raft::Error) -> Error {
        let node = self.cfg.node_id;
        move |source| Error::Raft {
            node,
            group,
            source,
        }
    }

    /// A Raft batch arrived from `from` (the transport authenticated it). Batches whose ids do
    /// not match are dropped with a warning. Entries are copied out of it: a batch holds many
    /// groups' entries, and one kept entry (`__meta` keeps thousands between compactions)
    /// sharing the batch's buffer would keep all of it.
    pub fn handle_message(&mut self, from: u64, bytes: &[u8]) {
        let node_id = self.cfg.node_id;
        match PeerBatch::decode_from(bytes) {
            Ok(mut batch) if batch.from == from && batch.to == node_id => {
                self.reach.heard(from);
                if self.voters.is_empty() {
                    self.refresh_voters();
                }
                if let Some(change) = self
                    .recovery
                    .heard(from, batch.formed, &self.voters, node_id)
                {
                    self.on_recovery(change);
                }
                for lost in std::mem::take(&mut batch.lost) {
                    self.node
                        .follower_lost_log(lost.group, from, lost.last_index);
                }
                self.exchange_terms(from, &mut batch);
                if self.recovery.behind().next().is_some() {
                    self.screen(&mut batch);
                }
                self.screen_non_voters(&mut batch);
                // Even an empty batch goes in: a ping is what keeps quiesced groups from
                // taking their leader's node for dead, and it may carry quiesce notices.
                self.node.step(batch);
            }
            Ok(batch) => warn!(
                node_id,
                peer_id = from,
                batch_from = batch.from,
                batch_to = batch.to,
                "dropped a raft batch with mismatched ids"
            ),
            Err(e) => {
                warn!(node_id, peer_id = from, error = %e, "dropped an undecodable raft batch")
            }
        }
    }

    /// The applier applied `group` up to `index`.
    pub fn applied(&mut self, group: u64, index: u64) -> Result<(), Error> {
        if group == META_GROUP && self.meta_image_pending.is_some_and(|at| index >= at) {
            self.meta_image_pending = None;
        }
        if self.node.group(group).is_some() {
            self.node.applied(group, index).map_err(self.err(group))?;
        }
        Ok(())
    }

    /// Advances to `now`: ticks the groups that are due, runs housekeeping and leader balance
    /// when due, admits the broker's proposals and group changes, continues a shutdown
    /// hand-off, and turns what Raft produced into transmits and [`Io`]. Call it on every wake.
    pub fn handle_timeout(&mut self, now: u64, wall_ms: i64, broker: &mut Broker) -> Pass {
        let mut pass = Pass::default();
        broker.advance_clock(now, wall_ms);
        if self.node.poll_timeout().is_none_or(|t| now >= t) {
            self.node.handle_timeout(now);
        }
        self.repeat_early_campaigns(now);
        self.release_deferred_fresh(now);
        self.update_reach(now);
        self.report_unsure(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_MS;
            pass.housekeeping = true;
            self.housekeeping(now, wall_ms, broker);
        }
        if now >= self.next_balance && self.stopping.is_none() {
            self.next_balance = now + BALANCE_MS;
            self.balance_leaders();
        }
        for change in broker.take_group_changes() {
            self.group_change(change);
        }
        // After the group changes: the groups `__meta`'s entries create must be opening
        // before this node counts as caught up.
        self.check_recovery(broker);
        self.admit(broker);
        if let Some(since) = self.stopping {
            let leading = self.led_groups();
            if leading == 0 || now.saturating_sub(since) > HANDOFF_MS {
                info!(
                    node_id = self.cfg.node_id,
                    still_leading = leading,
                    "leadership handed off; stopping"
                );
                self.stopped = true;
                return pass;
            }
            if now.saturating_sub(self.last_transfer) >= HANDOFF_RETRY_MS {
                self.last_transfer = now;
                self.transfer_leadership();
            }
        }
        self.drive(now, wall_ms, broker);
        pass
    }

    /// The runtime wrote and fsynced a [`PersistBatch`]: `done` is the last persist number
    /// written per group, `written` the batch's own list.
    pub fn persisted(
        &mut self,
        done: &[(u64, u64)],
        written: &[(u64, u64)],
        now: u64,
        wall_ms: i64,
        broker: &mut Broker,
    ) -> Result<(), Error> {
        for &(group, number) in done {
            if self.node.group(group).is_some() {
                self.node
                    .persisted(group, number)
                    .map_err(self.err(group))?;
            }
        }
        for &(group, index) in written {
            broker.leader_persisted(group, index);
        }
        self.drive(now, wall_ms, broker);
        Ok(())
    }

    /// The store of a group asked for with [`Io::OpenGroup`] is open: start its Raft group,
    /// resuming a snapshot install that was cut short.
    pub fn group_opened(
        &mut self,
        open: OpenGroup,
        store: LogStore,
        now: u64,
        wall_ms: i64,
        broker: &mut Broker,
    ) -> Result<(), Error> {
        let node_id = self.cfg.node_id;
        let OpenGroup {
            group,
            applied,
            campaign,
            topic,
            partition,
            ..
        } = open;
        self.opening.remove(&group);
        if self.node.group(group).is_some() {
            return Ok(());
        }
        // Never part of an election (its log holds at most the bootstrap snapshot of voters).
        let fresh = store.hard_state().term == 0;
        self.recovery.group_opened(group);
        // Raft refuses an applied index beyond the durable commit; entries in between are
        // skipped by the broker (it remembers what its log holds).
        let mut applied = applied.min(store.hard_state().commit);
        let compacted = store.snapshot_index();
        // A fresh group's log starts with its voters at index 1: nothing was compacted.
        let mut install = None;
        if applied < compacted && compacted > 1 {
            match PartitionImage::decode(&store.snapshot_ref().data) {
                Some(image) => {
                    info!(node_id, group, topic = %topic, partition, applied, compacted, "the local log is behind the installed snapshot: resuming the install");
                    install = Some(ApplyJob::Install {
                        group,
                        index: compacted,
                        image,
                    });
                }
                None => {
                    error!(node_id, group, topic = %topic, partition, applied, compacted, "the applied mark is below the compacted raft log and no snapshot image was kept: entries in between cannot be re-applied")
                }
            }
            applied = compacted;
        }
        self.node
            .add_group(group, store, applied)
            .map_err(self.err(group))?;
        if let Some(job) = install {
            self.node.resume_install(group).map_err(self.err(group))?;
            self.io.push_back(Io::Apply(job));
        }
        debug!(node_id, group, topic = %topic, partition, applied, fresh, "hosting partition group");
        if !self.recovery.may_vote(group) {
            self.node.hold_elections(group, true);
        } else if campaign && fresh {
            self.node.campaign(group).map_err(self.err(group))?;
            self.early_campaigns.insert(
                group,
                (now + EARLY_CAMPAIGN_MS, now + EARLY_CAMPAIGN_EVERY_MS),
            );
        } else if fresh {
            self.node.hold_elections(group, true);
            self.deferred_fresh.insert(group, now + FRESH_DEFER_MS);
        }
        self.drive(now, wall_ms, broker);
        Ok(())
    }

    /// New groups whose leader is known, or whose deferral ran out, tick again (a follower
    /// that does not tick would never notice its leader die).
    fn release_deferred_fresh(&mut self, now: u64) {
        if self.deferred_fresh.is_empty() {
            return;
        }
        let node = &mut self.node;
        let recovery = &self.recovery;
        self.deferred_fresh.retain(|&group, until| {
            let waiting = node.group(group).is_some_and(|d| d.leader_id() == 0);
            if waiting && now < *until {
                return true;
            }
            if recovery.may_vote(group) {
                node.hold_elections(group, false);
            }
            false
        });
    }

    /// A new partition's preferred replica campaigns again until the group has a leader: its
    /// first pre-vote reached replicas that had not opened the group yet and was dropped, and
    /// otherwise a replica whose election timeout ran out first would lead it, anywhere.
    /// Pre-vote makes the repeats harmless: the term moves only with a majority.
    fn repeat_early_campaigns(&mut self, now: u64) {
        if self.early_campaigns.is_empty() {
            return;
        }
        let node_id = self.cfg.node_id;
        let mut again = Vec::new();
        self.early_campaigns.retain(|&group, (until, next)| {
            let Some(driver) = self.node.group(group) else {
                return false;
            };
            if driver.leader_id() != 0 || now >= *until {
                return false;
            }
            if now >= *next {
                *next = now + EARLY_CAMPAIGN_EVERY_MS;
                if driver.role() != StateRole::Candidate {
                    again.push(group);
                }
            }
            true
        });
        for group in again {
            if let Err(e) = self.node.campaign(group) {
                debug!(node_id, group, error = %e, "repeating the first campaign failed");
            }
        }
    }

    /// Whether [`Replica::peers_connected`] still matters: `__meta` of a fresh cluster that
    /// never had a leader, or a node unsure whether the cluster is new.
    pub fn wants_peers(&self) -> bool {
        let fresh = !self.first_campaign
            && self
                .node
                .group(META_GROUP)
                .is_some_and(|d| d.term() == 0 && d.leader_id() == 0);
        fresh || matches!(self.recovery.standing(), Standing::Unsure { .. })
    }

    /// The peers the transport is connected to. On a fresh cluster the lowest-id voter
    /// campaigns for `__meta` as soon as it reaches a majority, so nodes started together elect
    /// their first leader in term 1 within a round trip of connecting, not after an election
    /// timeout; every other node waits for its timeout as usual (a missing lowest node costs
    /// only that). Pre-vote keeps a lone early campaign from disturbing anything.
    pub fn peers_connected(&mut self, connected: &[u64]) -> Result<(), Error> {
        if !self.wants_peers() {
            return Ok(());
        }
        // A peer that just connected is pinged at once: an empty node learns from every
        // peer's first batch whether the cluster is new before anyone campaigns.
        for &p in connected {
            if !self.connected.contains(&p) {
                self.reach.forget_sent(p);
                self.pings_due = true;
            }
        }
        self.connected = connected.to_vec();
        if self.first_campaign || !self.recovery.may_vote(META_GROUP) {
            return Ok(());
        }
        let me = self.cfg.node_id;
        let voters: Vec<u64> = self
            .node
            .group(META_GROUP)
            .map(|d| d.progress().map(|p| p.id).collect())
            .unwrap_or_default();
        if voters.iter().min() != Some(&me) {
            self.first_campaign = true;
            return Ok(());
        }
        let reachable = 1 + voters
            .iter()
            .filter(|v| **v != me && connected.contains(v))
            .count();
        if reachable * 2 > voters.len() {
            self.first_campaign = true;
            info!(
                node_id = me,
                reachable,
                voters = voters.len(),
                "fresh cluster: campaigning for __meta at once"
            );
            self.node
                .campaign(META_GROUP)
                .map_err(self.err(META_GROUP))?;
        }
        Ok(())
    }

    /// The next Raft batch to send (an empty one pings a peer nothing else went to lately).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let Some(mut batch) = self.node.poll_transmit() else {
            return self.poll_ping();
        };
        batch.formed = self.formed();
        batch.lost = self.lost_out.remove(&batch.to).unwrap_or_default();
        batch.term_queries = self.term_queries_out.remove(&batch.to).unwrap_or_default();
        batch.terms = self.terms_out.remove(&batch.to).unwrap_or_default();
        self.reach.sent(batch.to);
        let snapshots = batch
            .messages
            .iter()
            .filter(|m| {
                m.message
                    .as_ref()
                    .is_some_and(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            })
            .map(|m| m.group)
            .collect();
        Some(Transmit {
            to: batch.to,
            bytes: batch.encode(),
            snapshots,
        })
    }

    /// Whether a [`Transmit`] carrying snapshots was handed to the transport.
    pub fn transmitted(&mut self, transmit: &Transmit, delivered: bool) {
        for &group in &transmit.snapshots {
            let _ = self.node.report_snapshot(group, transmit.to, delivered);
        }
    }

    /// The next I/O to run, in order.
    pub fn poll(&mut self) -> Option<Io> {
        self.io.pop_front()
    }

    /// When [`Replica::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> u64 {
        self.node
            .poll_timeout()
            .map_or(self.next_housekeeping, |t| t.min(self.next_housekeeping))
    }

    /// Starts a graceful stop: leadership of every led group is handed to a caught-up peer.
    pub fn begin_shutdown(&mut self, now: u64) -> Shutdown {
        let node_id = self.cfg.node_id;
        if self.stopping.is_some() {
            return if self.stopped {
                Shutdown::Now
            } else {
                Shutdown::HandingOff
            };
        }
        let leading = self.led_groups();
        info!(node_id, leading, "stopping: handing off leadership");
        self.stopping = Some(now);
        self.last_transfer = now;
        if leading == 0 {
            self.stopped = true;
            return Shutdown::Now;
        }
        if self.transfer_leadership() == 0 {
            info!(node_id, "no live peer to hand leadership to; stopping");
            self.stopped = true;
            return Shutdown::Now;
        }
        Shutdown::HandingOff
    }

    /// The shutdown hand-off is over: the runtime may stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// `__meta`'s (term, leader id), once a leader is known.
    pub fn meta_leader(&self) -> Option<(u64, u64)> {
        let meta = self.node.group(META_GROUP)?;
        (meta.leader_id() != 0).then(|| (meta.term(), meta.leader_id()))
    }

    /// Whether this node may serve Kafka clients: once `__meta` caught up with its commit index
    /// and the broker is registered and knows a `__meta` leader, and from then on. Returns
    /// `Some(applied)` the one time it turns true (for the start-up log line).
    pub fn start_serving(&mut self, broker: &Broker) -> Option<u64> {
        if self.serving {
            return None;
        }
        let applied = self.meta_caught_up()?;
        if !broker.cluster_ready() {
            return None;
        }
        self.serving = true;
        Some(applied)
    }

    /// See [`Replica::start_serving`]; false again while [`Replica::cut_off`].
    pub fn serving(&self) -> bool {
        self.serving && !self.reach.cut_off()
    }

    /// `__meta`'s applied index if it caught up with its commit index.
    pub fn meta_caught_up(&self) -> Option<u64> {
        if self.meta_image_pending.is_some() {
            return None;
        }
        let meta = self.node.group(META_GROUP)?;
        (meta.applied_index() >= meta.commit_index()).then_some(meta.applied_index())
    }

    /// The nodes the runtime's transport reaches (see `known_peers`).
    pub fn set_known_peers(&mut self, mut peers: Vec<u64>) {
        peers.retain(|p| *p != self.cfg.node_id);
        peers.sort_unstable();
        self.known_peers = peers;
    }

    /// `__meta`'s voters as this node's log has them (both halves of a joint configuration).
    pub fn meta_voters(&self) -> Vec<u64> {
        self.meta_conf(false)
    }

    /// `__meta`'s voters and learners as this node's log has them.
    pub fn meta_membership(&self) -> Vec<u64> {
        self.meta_conf(true)
    }

    fn meta_conf(&self, with_learners: bool) -> Vec<u64> {
        self.node.group(META_GROUP).map_or_else(Vec::new, |d| {
            let cs = d.store().conf_state();
            let learners: &[u64] = if with_learners { &cs.learners } else { &[] };
            let mut all: Vec<u64> = cs
                .voters
                .iter()
                .chain(&cs.voters_outgoing)
                .chain(learners)
                .copied()
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        })
    }

    /// A hosted group's in-memory Raft log (the runtime rewrites idle groups from it to free
    /// old write-ahead log files).
    pub fn log_store(&self, group: u64) -> Option<&LogStore> {
        self.node.group(group).map(|d| d.store())
    }

    /// Hosted groups that are quiesced (see `sluice_raft`'s `driver/quiesce.rs`).
    pub fn quiesced_groups(&self) -> usize {
        self.node.quiesced_groups()
    }

    /// Raft batches and messages sent to `peer` so far.
    pub fn sent_to(&self, peer: u64) -> (u64, u64) {
        self.node.sent_to(peer)
    }

    /// Every group's Raft state, for metrics.
    pub fn group_states(&self) -> Vec<GroupState> {
        let mut groups: Vec<GroupState> = self
            .node
            .group_ids()
            .filter_map(|g| {
                let d = self.node.group(g)?;
                Some(GroupState {
                    group: g,
                    leader: d.role() == StateRole::Leader,
                    term: d.term(),
                    commit: d.commit_index(),
                    applied: d.applied_index(),
                    first_index: d.store().first_index(),
                    last_index: d.last_index(),
                })
            })
            .collect();
        groups.sort_by_key(|g| g.group);
        groups
    }

    /// The groups this node leads: (group, term, commit index, membership), without copying.
    pub fn led_groups_view(&self) -> impl Iterator<Item = (u64, u64, u64, &ConfState)> + '_ {
        self.node.group_ids().filter_map(|g| {
            let d = self.node.group(g)?;
            (d.role() == StateRole::Leader)
                .then(|| (g, d.term(), d.commit_index(), d.store().conf_state()))
        })
    }

    fn housekeeping(&mut self, now: u64, wall_ms: i64, broker: &mut Broker) {
        self.refresh_voters();
        if !self.voters.is_empty() {
            // `__meta`'s members, and every node the cluster says holds a replica (a move to
            // a node `__meta` has not taken in yet).
            let mut peers = self.peers();
            peers.extend(broker.cluster_peers().into_iter().map(|(id, _)| id));
            peers.sort_unstable();
            peers.dedup();
            self.node.keep_watching(&peers);
        }
        broker.set_meta_quorum(self.meta_quorum(now, wall_ms));
        broker.cluster_tick(self.meta_caught_up().is_some(), now, wall_ms);
        let marks = broker.take_applied_marks();
        // Hints are already spaced by the leader: act on each.
        let compactions = broker.take_compactions(1);
        if !marks.is_empty() {
            self.io.push_back(Io::WriteMarks(marks));
        }
        let led = self.led_partitions();
        // `led` is sorted (group ids in order): thousands of groups make a linear scan per
        // entry quadratic.
        self.hinted.retain(|g, _| led.binary_search(g).is_ok());
        broker.keep_group_progress(&led);
        self.move_replicas(&led, now, broker);
        self.move_meta_voters(now, broker);
        self.silence.retain_groups(&led);
        let me = self.cfg.node_id;
        let timeout = self.cfg.replica_timeout_ms;
        // A quiesced group hears nothing from its followers, so raft-rs's `recent_active`
        // stands still: what the node hears from each peer says instead whether it is alive.
        let silent = self.reach.silent(now, me, &self.peers());
        if silent != self.silent_peers {
            self.settled.clear();
            self.silent_peers = silent.clone();
        }
        self.settled.retain(|g| led.binary_search(g).is_ok());
        for &group in &led {
            let Some(driver) = self.node.group(group) else {
                continue;
            };
            let quiesced = driver.is_quiesced();
            if !quiesced {
                self.settled.remove(&group);
            } else if silent.is_empty() && self.settled.contains(&group) {
                // Idle, and nothing about its replicas can have changed.
                continue;
            }
            let mut progress: Vec<PeerProgress> = driver.progress().collect();
            if quiesced {
                for pr in progress.iter_mut().filter(|pr| pr.id != me) {
                    pr.recent_active = !silent.contains(&pr.id);
                }
            }
            self.silence.sample(group, me, &progress, now);
            broker
                .report_group_progress(group, self.group_progress(driver, &progress, now, wall_ms));
            // Compaction: each replica then drops what it also has durably in its segment log.
            let held = liveness::held_by_live(&self.silence, group, &progress, now, timeout);
            let last = self.hinted.get(&group).copied().unwrap_or(0);
            let bytes: usize = driver
                .store()
                .entries_slice()
                .iter()
                .map(|e| e.data.len())
                .sum();
            let isr = liveness::in_sync(&self.silence, group, me, &progress, now, timeout);
            let recorded = broker.report_isr(group, driver.term(), isr, now);
            if let Some(held) = held
                && liveness::hint_due(held, last, self.cfg.compact_step, bytes, COMPACT_BYTES)
            {
                self.hinted.insert(group, held);
                let _ = self.node.propose(group, encode_compact_hint(held));
            } else if quiesced && recorded {
                self.settled.insert(group);
            }
        }
        for (group, index, image) in compactions {
            self.compact_group(group, index, image);
        }
        self.compact_meta(broker, false);
    }

    /// Compacts `__meta`'s log to an image of the metadata once it holds
    /// `meta_compact_entries` applied entries. A leader waits until every peer it hears from
    /// has what it applied (they go on with entries; a peer that was away gets the image).
    /// `now`: a peer needs a newer image than the stored one (a node being added is not in its
    /// membership): compact to what is applied at once.
    fn compact_meta(&mut self, broker: &Broker, now: bool) {
        let Some(d) = self.node.group(META_GROUP) else {
            return;
        };
        let applied = d.applied_index();
        if self.cfg.meta_compact_entries == 0
            || self.meta_image_pending.is_some()
            || (!now && applied < d.store().snapshot_index() + self.cfg.meta_compact_entries)
        {
            return;
        }
        let me = self.cfg.node_id;
        // A new leader knows nothing of its peers' logs yet (`matched` 0): it waits too.
        if !now
            && d.role() == StateRole::Leader
            && d.progress()
                .any(|p| p.id != me && !self.silent_peers.contains(&p.id) && p.matched < applied)
        {
            return;
        }
        // The broker's metadata must stand exactly at the index the log is compacted to (its
        // applier may be ahead of what the replica heard back).
        if broker.meta_applied() != Some(applied) {
            return;
        }
        match broker.meta_image() {
            Some((at, image)) if at == applied => {
                info!(
                    node_id = me,
                    index = applied,
                    bytes = image.len(),
                    "__meta log compacted to a snapshot image"
                );
                self.compact_group(META_GROUP, applied, image);
            }
            _ => {}
        }
    }

    /// `__meta` for DescribeQuorum: its leader, term and commit index, and each voter's log end
    /// (known on the leader only) and when this node last heard from it.
    fn meta_quorum(&self, now: u64, wall_ms: i64) -> MetaQuorum {
        let me = self.cfg.node_id;
        let Some(meta) = self.node.group(META_GROUP) else {
            return MetaQuorum::default();
        };
        let leading = meta.role() == StateRole::Leader;
        let progress: Vec<PeerProgress> = meta.progress().collect();
        let voters = self
            .voters
            .iter()
            .map(|&v| (v, false))
            .chain(self.learners.iter().map(|&l| (l, true)))
            .map(|(v, observer)| {
                let log_end = if v == me {
                    meta.last_index() as i64
                } else if leading {
                    progress
                        .iter()
                        .find(|p| p.id == v)
                        .map_or(-1, |p| p.matched as i64)
                } else {
                    -1
                };
                let last_heard_ms = if v == me {
                    wall_ms
                } else {
                    self.reach
                        .last_heard(v)
                        .map_or(-1, |at| wall_ms - now.saturating_sub(at) as i64)
                };
                QuorumVoter {
                    id: v as i32,
                    log_end,
                    last_heard_ms,
                    observer,
                }
            })
            .collect();
        let leader = meta.leader_id();
        MetaQuorum {
            leader: if leader == 0 { -1 } else { leader as i32 },
            term: meta.term(),
            commit: meta.commit_index(),
            voters,
            as_of_ms: wall_ms,
        }
    }

    /// Node membership, on the `__meta` leader: the same steps as a partition move, towards
    /// the members `__meta` records (AddRaftVoter / RemoveRaftVoter), once this leader has
    /// applied everything committed (a stale view would undo a change just made).
    fn move_meta_voters(&mut self, now: u64, broker: &mut Broker) {
        if !self.leads(META_GROUP) || self.meta_caught_up().is_none() {
            return;
        }
        let Some(mut wanted) = broker.wanted_meta_voters() else {
            return;
        };
        // A member not heard from lately (added, not started yet) is not taken in: as a
        // learner that never catches up it would hold back every later change.
        let me = self.cfg.node_id;
        let voters = self.meta_voters();
        wanted.retain(|&w| {
            w == me
                || voters.contains(&w)
                || self
                    .reach
                    .last_heard(w)
                    .is_some_and(|at| now.saturating_sub(at) <= JOINER_HEARD_MS)
        });
        if wanted.is_empty() {
            return;
        }
        if self.membership_settled(META_GROUP, &wanted) {
            return;
        }
        self.step_membership(META_GROUP, &wanted, now);
    }

    /// Whether `group`'s Raft membership is `wanted`, with this node voting (no change due);
    /// also true while a change is pending (nothing to do yet).
    fn membership_settled(&self, group: u64, wanted: &[u64]) -> bool {
        let Some(driver) = self.node.group(group) else {
            return true;
        };
        if driver.conf_change_pending() {
            return true;
        }
        let cs = driver.store().conf_state();
        moves::settled(self.cfg.node_id, cs, wanted)
    }

    /// Partition reassignment, on the leader: one membership change at a time towards the
    /// replicas `__meta` wants (learners first; once caught up, one joint change promotes them
    /// and removes the replicas left behind, leadership handed over first if this node is one
    /// of them), then the move is reported complete.
    fn move_replicas(&mut self, led: &[u64], now: u64, broker: &mut Broker) {
        for &group in led {
            let Some(driver) = self.node.group(group) else {
                continue;
            };
            let Some(wanted) = broker.wanted_voters(group) else {
                continue;
            };
            if driver.conf_change_pending() {
                continue;
            }
            let cs = driver.store().conf_state();
            // A leader outside the voters (its removal committed under it) hands over first.
            if moves::settled(self.cfg.node_id, cs, &wanted) {
                // The monotonic clock: a report lost to a wall-clock jump back would otherwise
                // wait that long to be sent again.
                broker.report_voters(group, &cs.voters, now);
                continue;
            }
            self.step_membership(group, &wanted, now);
        }
        self.move_transfers
            .retain(|g, _| *g == META_GROUP || led.binary_search(g).is_ok());
    }

    /// One membership step of a led group towards `wanted` (see [`moves::next_step`]).
    fn step_membership(&mut self, group: u64, wanted: &[u64], now: u64) {
        {
            let Some(driver) = self.node.group(group) else {
                return;
            };
            let cs = driver.store().conf_state();
            // Only peers heard from lately count as caught up: raft-rs's `recent_active` lasts
            // an election timeout, long enough to remove a replica while a wanted one just died.
            // A quiesced group's `recent_active` stands still (no ticks, no quorum checks): what
            // the node hears from each peer says instead whether it is alive, as for the ISR.
            let quiesced = driver.is_quiesced();
            let mut progress: Vec<PeerProgress> = driver.progress().collect();
            for p in progress.iter_mut().filter(|p| p.id != self.cfg.node_id) {
                let heard = self
                    .reach
                    .last_heard(p.id)
                    .is_some_and(|at| now.saturating_sub(at) <= moves::HEARD_WITHIN_MS);
                p.recent_active = (p.recent_active || quiesced) && heard;
            }
            let step = moves::next_step(
                self.cfg.node_id,
                cs,
                wanted,
                (driver.commit_index(), driver.store().snapshot_index()),
                &progress,
            );
            let node_id = self.cfg.node_id;
            match step {
                moves::Step::Change(cc) => {
                    if cc.changes.is_empty() {
                        info!(node_id, group, "leaving a joint configuration");
                    } else if group == META_GROUP {
                        info!(node_id, group, change = ?cc.changes, "changing the cluster's __meta voters");
                    } else {
                        info!(node_id, group, change = ?cc.changes, "changing a partition's replicas");
                    }
                    if let Err(e) = self.node.propose_conf_change(group, cc) {
                        warn!(node_id, group, error = %e, "proposing a membership change failed");
                    }
                }
                moves::Step::HandOver(to) => {
                    let due = self
                        .move_transfers
                        .get(&group)
                        .is_none_or(|at| now.saturating_sub(*at) >= MOVE_TRANSFER_EVERY_MS);
                    if due {
                        self.move_transfers.insert(group, now);
                        info!(
                            node_id,
                            group, to, "this replica is leaving the group: handing leadership over"
                        );
                        let _ = self.node.transfer_leader(group, to);
                    }
                }
                moves::Step::Wait => {}
            }
        }
    }

    /// A led group's replicas for DescribeQuorum: how far each one's log matches the leader's.
    fn group_progress(
        &self,
        driver: &Driver,
        progress: &[PeerProgress],
        now: u64,
        wall_ms: i64,
    ) -> GroupProgress {
        let me = self.cfg.node_id;
        let mut replicas: Vec<QuorumVoter> = progress
            .iter()
            .map(|p| QuorumVoter {
                id: p.id as i32,
                log_end: if p.id == me {
                    driver.last_index() as i64
                } else {
                    p.matched as i64
                },
                last_heard_ms: if p.id == me {
                    wall_ms
                } else {
                    self.reach
                        .last_heard(p.id)
                        .map_or(-1, |at| wall_ms - now.saturating_sub(at) as i64)
                },
                observer: p.learner,
            })
            .collect();
        replicas.sort_by_key(|r| r.id);
        GroupProgress {
            term: driver.term(),
            commit: driver.commit_index(),
            replicas,
        }
    }

    /// Drops a group's Raft log up to `index` in memory, keeping `image` (where the segment log
    /// stood) as the snapshot for a replica that falls behind; the store follows.
    fn compact_group(&mut self, group: u64, index: u64, image: Vec<u8>) {
        let node_id = self.cfg.node_id;
        let Some(driver) = self.node.group(group) else {
            return;
        };
        let index = index.min(driver.applied_index());
        if index <= driver.store().snapshot_index() {
            return;
        }
        if let Err(e) = self.node.compact(group, index, image) {
            debug!(node_id, group, index, error = %e, "compaction skipped");
            return;
        }
        let store = self.node.group(group).expect("checked").store();
        self.io.push_back(Io::CompactStore(StoreCompaction {
            group,
            index,
            snapshot: store.snapshot_ref().clone(),
        }));
    }

    /// Preferred-leader election (Kafka's auto leader rebalance): a group led by another
    /// replica than its first one is handed back once that replica is live and caught up, so
    /// leaders stay spread evenly after elections that ignored placement.
    fn balance_leaders(&mut self) {
        let me = self.cfg.node_id;
        let mut moves = Vec::new();
        for (&group, &to) in &self.preferred {
            if to == me || to == 0 {
                continue;
            }
            let Some(driver) = self.node.group(group) else {
                continue;
            };
            if driver.role() != StateRole::Leader {
                continue;
            }
            let progress: Vec<PeerProgress> = driver.progress().collect();
            if leadership::preferred_ready(to, driver.last_index(), &progress) {
                moves.push((group, to));
            }
        }
        moves.sort_unstable();
        for (group, to) in moves.into_iter().take(BALANCE_MOVES) {
            debug!(
                node_id = me,
                group, to, "handing leadership to the preferred replica"
            );
            let _ = self.node.transfer_leader(group, to);
        }
    }

    fn group_change(&mut self, change: GroupChange) {
        match change {
            GroupChange::Add {
                group,
                voters,
                preferred,
                applied,
                campaign,
                joining,
                topic,
                partition,
            } => {
                self.preferred.insert(group, preferred);
                // Also sent for a hosted group whose replicas changed (its preferred leader).
                if self.node.group(group).is_none() && !self.opening.contains(&group) {
                    self.opening.insert(group);
                    self.io.push_back(Io::OpenGroup(OpenGroup {
                        group,
                        voters,
                        applied,
                        campaign,
                        joining,
                        topic,
                        partition,
                    }));
                }
            }
            GroupChange::Remove { group } => {
                self.preferred.remove(&group);
                // An open still queued for it must not resurrect it.
                self.io
                    .retain(|io| !matches!(io, Io::OpenGroup(o) if o.group == group));
                self.node.remove_group(group);
                self.opening.remove(&group);
                self.recovery.group_removed(group);
                info!(node_id = self.cfg.node_id, group, "partition group removed");
                self.io.push_back(Io::RemoveGroup { group });
            }
        }
    }

    /// Proposal admission: a partition entry enters the log only through this node as leader
    /// (raft-rs would forward it), because the leader's offset predictions (acks=1) rely on
    /// that; `__meta` entries are forwarded to its leader.
    fn admit(&mut self, broker: &mut Broker) {
        let node_id = self.cfg.node_id;
        let mut indexed = Vec::new();
        for p in broker.take_proposals() {
            let group = p.group;
            // Shared with the entry raft-rs makes of it, not copied.
            let data = bytes::Bytes::from(p.data);
            let leads = group == META_GROUP || self.leads(group);
            let proposed = if leads {
                self.node
                    .propose(group, data.clone())
                    .map_err(|e| e.to_string())
            } else {
                Err("not the leader".to_string())
            };
            match proposed {
                Ok(()) => {
                    if group != META_GROUP
                        && let Some(e) = PartitionEntry::decode(&data)
                        && let Some(d) = self.node.group(group)
                    {
                        indexed.push((group, e.seq, d.last_index()));
                    }
                }
                Err(e) => {
                    debug!(node_id, group, error = %e, "proposal dropped");
                    broker.proposal_dropped(group, &data);
                }
            }
        }
        if !indexed.is_empty() {
            broker.entries_indexed(&indexed);
        }
    }

    /// Turns Raft's tasks into I/O (one persist batch for all groups) and broker events.
    fn drive(&mut self, now: u64, wall_ms: i64, broker: &mut Broker) {
        broker.advance_clock(now, wall_ms);
        let mut persists = Vec::new();
        let mut written = std::collections::BTreeMap::new();
        while let Some((group, task)) = self.node.poll_task() {
            match task {
                Task::Persist(p) => {
                    if let Some(e) = p.entries.last() {
                        written.insert(group, e.index);
                    }
                    persists.push((group, p));
                }
                other => self.on_task(group, other, now, wall_ms, broker),
            }
        }
        if !persists.is_empty() {
            self.io.push_back(Io::Persist(PersistBatch {
                persists,
                written: written.into_iter().collect(),
            }));
        }
    }

    fn on_task(&mut self, group: u64, task: Task, now: u64, wall_ms: i64, broker: &mut Broker) {
        let node_id = self.cfg.node_id;
        match task {
            Task::Persist(_) | Task::Send(_) => unreachable!("handled by drive / the Node"),
            Task::Apply(Apply::Entries(entries)) => {
                self.io
                    .push_back(Io::Apply(ApplyJob::Entries { group, entries }));
            }
            Task::Apply(Apply::Snapshot(s)) if group == META_GROUP => {
                let (index, term) = s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term));
                info!(
                    node_id,
                    index,
                    term,
                    bytes = s.data.len(),
                    "__meta snapshot received: its leader compacted past this node's log"
                );
                self.meta_image_pending = Some(index);
                self.io.push_back(Io::Apply(ApplyJob::MetaImage {
                    index,
                    data: s.data,
                }));
            }
            Task::Apply(Apply::Snapshot(s)) => {
                let (index, term) = s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term));
                match PartitionImage::decode(&s.data) {
                    Some(image) if group != META_GROUP => {
                        info!(
                            node_id,
                            group,
                            index,
                            term,
                            end_offset = image.end_offset,
                            "snapshot received: the leader compacted past this replica's log"
                        );
                        self.io.push_back(Io::Apply(ApplyJob::Install {
                            group,
                            index,
                            image,
                        }));
                    }
                    _ => error!(
                        node_id,
                        group,
                        index,
                        "a snapshot without a partition image arrived (from a node that compacted before snapshots carried one?); this replica cannot rebuild from it"
                    ),
                }
            }
            Task::RoleChanged(rc) if group == META_GROUP => {
                debug!(node_id, group, role = ?rc.role, term = rc.term, leader_id = rc.leader_id, "meta role changed");
                broker.meta_role_changed(rc.leader_id, rc.term);
                if rc.leader_id != 0 && (rc.term, rc.leader_id) != self.meta_leader {
                    self.meta_leader = (rc.term, rc.leader_id);
                    info!(
                        node_id,
                        term = rc.term,
                        leader_id = rc.leader_id,
                        is_leader = rc.role == StateRole::Leader,
                        elapsed_ms = self.cfg.started_ms + now,
                        "meta leader elected"
                    );
                }
            }
            Task::RoleChanged(rc) => {
                debug!(node_id, group, role = ?rc.role, term = rc.term, leader_id = rc.leader_id, "partition role changed");
                let last_index = self.node.group(group).map_or(0, |d| d.last_index());
                broker.partition_role_changed(group, rc.leader_id, rc.term, last_index, wall_ms);
            }
            Task::SnapshotWanted => {
                // A replica being added is not in the stored snapshot's membership (or the
                // snapshot is older than what it lacks): compact to what is applied and
                // durable here, under the current membership.
                debug!(
                    node_id,
                    group, "a peer asked for a newer snapshot than the stored one"
                );
                if group == META_GROUP {
                    self.compact_meta(broker, true);
                } else if let Some((index, image)) = broker.compaction_now(group) {
                    self.compact_group(group, index, image);
                }
            }
            Task::ReadReady { .. } => {}
        }
    }

    fn leads(&self, group: u64) -> bool {
        self.node
            .group(group)
            .is_some_and(|d| d.role() == StateRole::Leader)
    }

    /// The partition groups this node leads, in ascending order.
    fn led_partitions(&self) -> Vec<u64> {
        self.node
            .group_ids()
            .filter(|&g| g != META_GROUP && self.leads(g))
            .collect()
    }

    fn led_groups(&self) -> usize {
        self.node.group_ids().filter(|&g| self.leads(g)).count()
    }

    /// Hands every group this node leads to a live follower whose log is complete; returns how
    /// many transfers started (0: nobody to hand to, e.g. the last node standing).
    fn transfer_leadership(&mut self) -> usize {
        let me = self.cfg.node_id;
        let mut started = 0;
        self.node.transfer_all_leadership(|_, driver| {
            let progress: Vec<PeerProgress> = driver.progress().collect();
            let to = leadership::handoff_target(me, driver.last_index(), &progress);
            started += usize::from(to.is_some());
            to
        });
        started
    }
}
