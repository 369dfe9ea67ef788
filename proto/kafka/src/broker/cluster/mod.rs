//! Cluster mode: the broker as one replica among several.
//!
//! Writes do not touch the local log when a client sends them. The partition leader validates a
//! produce and turns it into a [`Proposal`] for the partition's Raft group; the runtime proposes
//! it, and every replica appends it when Raft hands the committed entry back
//! ([`Broker::apply_partition`]), assigning offsets from its own log end in log order. The
//! client's response waits (parked) until the proposer applied the entry and synced it, so
//! acks=all means "committed on a majority and durable here". Metadata changes go the same way
//! through the `__meta` group ([`Broker::apply_meta`]), which is the single source of topics,
//! replicas and broker addresses on every node.

use std::collections::{BTreeMap, HashMap, VecDeque};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::NodeEndpoint;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsResponse, CreateTopicsResponse, DeleteTopicsResponse,
    ProduceResponse, ResponseKind,
};

use super::{Broker, BrokerError, OFFSETS_TOPIC, str};

mod admin;
mod apply;
mod compaction;
mod early;
mod install;
mod members;
mod produce;
mod quorum;
mod reassign;
mod records;
mod txn;
mod waits;
pub use install::{InstallStep, REPLICA_FETCH_VERSION, replica_fetch};
pub use quorum::{GroupProgress, METADATA_TOPIC, MetaQuorum, QuorumVoter};
pub(super) use txn::RemoteCheck;
#[cfg(test)]
pub(super) use txn::txn_tests_marker_request;
pub use txn::{OPERATOR_EPOCH, PeerRequest, WRITE_TXN_MARKERS_VERSION, markers_error};

use crate::cluster::{MetaCommand, MetaState, PartitionEntry, PartitionImage, ProposalId};

/// A broker's id, host and port.
pub(super) type BrokerAddr = (i32, String, i32);

/// Raft group id of `__meta`.
pub const META_GROUP: u64 = 0;
/// The applied marks of every hosted partition (relative to the data dir), one line
/// `group index end` each: the last Raft entry whose data is durable in the partition's log
/// and the log end after it. One file per node, replaced atomically (a file per partition
/// cost two fsyncs and an inode each, every 200 ms, per busy partition).
const APPLIED_TABLE: &str = "raft/applied";
/// The per-partition mark file of earlier versions, read when the table lacks the group.
const APPLIED_FILE: &str = "raft-applied";
/// How long a write waits for its entry to commit before the client hears REQUEST_TIMED_OUT.
const WAIT_MS_MAX: u64 = 30_000;

/// An entry for the runtime to propose.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// Raft group ([`META_GROUP`] or a partition's).
    pub group: u64,
    /// Entry data.
    pub data: Vec<u8>,
}

/// A partition group this node starts or stops hosting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// Start hosting `group` (a replica here).
    Add {
        /// Group id.
        group: u64,
        /// The voters the group's Raft log started with (a new store's bootstrap membership).
        voters: Vec<u64>,
        /// The preferred leader (the first replica wanted).
        preferred: u64,
        /// Entries up to this index are already in the local log.
        applied: u64,
        /// This node is the preferred leader: campaign at once rather than after a timeout.
        campaign: bool,
        /// This node is being added to the group (a partition moving here): it starts empty,
        /// outside the membership, and is seeded by the leader's snapshot.
        joining: bool,
        /// For logs: the partition.
        topic: String,
        /// For logs: the partition.
        partition: i32,
    },
    /// Stop hosting `group` and delete its Raft state.
    Remove {
        /// Group id.
        group: u64,
    },
}

/// What this node knows about a hosted group's leadership.
#[derive(Debug, Clone, Copy, Default)]
struct Role {
    leader: i32,
    term: u64,
    /// Leader here: the coordinator partition is loaded once entries up to this index applied.
    load_at: Option<u64>,
}

/// Apply progress of one hosted partition group.
#[derive(Debug, Default)]
struct Applied {
    /// Last entry applied to the local log.
    index: u64,
    /// Applied entries not yet synced: (index, log end after it).
    unsynced: VecDeque<(u64, i64)>,
    /// Last entry known durable locally, and the log end after it.
    durable: (u64, i64),
    /// `durable` as last handed out to be written to [`APPLIED_TABLE`].
    recorded: u64,
    /// The log end after `recorded`.
    recorded_end: i64,
    /// Highest compaction hint applied: every replica holds the log up to here.
    compact_hint: u64,
    /// Raft index this node last compacted its log to.
    compacted: u64,
}

/// A client request waiting for entries to apply.
#[derive(Debug)]
enum Wait {
    /// One partition of a parked produce.
    Produce {
        token: u64,
        topic: usize,
        partition: usize,
        group: u64,
        /// When it was parked (the monotonic clock).
        since: u64,
    },
    /// Coordinator responses waiting for their group-state write.
    Coordinator {
        group: u64,
        responses: Vec<sluice_coordinator::Response>,
        /// When it was parked (the monotonic clock).
        since: u64,
    },
    /// A transaction coordinator's state write (and its response, if any).
    TxnState {
        group: u64,
        response: Option<Box<sluice_coordinator::Response>>,
        /// When it was parked (the monotonic clock).
        since: u64,
    },
    /// One partition of a parked WriteTxnMarkers request: (marker, topic, partition) slot.
    Marker {
        token: u64,
        slot: (usize, usize, usize),
        group: u64,
        /// When it was parked (the monotonic clock).
        since: u64,
    },
    /// One topic (or partition) of a parked admin request.
    Admin {
        token: u64,
        slot: usize,
        /// The partition group it went through (DeleteRecords); `None`: `__meta`.
        group: Option<u64>,
        /// When it was parked (the monotonic clock).
        since: u64,
    },
}

/// A parked admin request being assembled.
#[derive(Debug)]
enum AdminWait {
    /// One `__meta` change answered as a whole: CreateAcls, DeleteAcls,
    /// AlterUserScramCredentials, AddRaftVoter, RemoveRaftVoter.
    Security(ResponseKind),
    Create(CreateTopicsResponse),
    Delete(DeleteTopicsResponse),
    Partitions(CreatePartitionsResponse),
    Alter(kafka_protocol::messages::AlterConfigsResponse),
    IncrementalAlter(kafka_protocol::messages::IncrementalAlterConfigsResponse),
    /// Slots are (topic, partition) positions in the response.
    Reassign(
        kafka_protocol::messages::AlterPartitionReassignmentsResponse,
        Vec<(usize, usize)>,
    ),
    /// Slots are (topic, partition) positions in the response.
    DeleteRecords(
        kafka_protocol::messages::DeleteRecordsResponse,
        Vec<(usize, usize)>,
    ),
}

/// Cluster-mode state of the broker.
#[derive(Debug)]
pub struct ClusterState {
    pub(in crate::broker) node_id: i32,
    /// The listener of the request being handled (addresses in hints follow it).
    pub(in crate::broker) listener: Option<String>,
    pub(in crate::broker) meta: MetaState,
    /// The `__meta` index `meta` stands at (the last entry applied, or the image installed).
    meta_applied: u64,
    /// `__meta` leader and term as last reported (-1: unknown).
    meta_leader: (i32, u64),
    /// Hosted partition groups.
    roles: HashMap<u64, Role>,
    applied: HashMap<u64, Applied>,
    /// Groups copying records for a snapshot image (their entries wait in the runtime).
    installing: HashMap<u64, PartitionImage>,
    /// Led groups: offsets predicted for own entries (acks=1, see `early`).
    predicted: HashMap<u64, early::Predicted>,
    /// acks=1 produces to answer once the leader persisted (group, Raft index): (seq, base).
    early: BTreeMap<(u64, u64), (u64, i64)>,
    /// acks=1 produces with a predicted base, waiting for their Raft index: seq → (group, base).
    early_pending: HashMap<u64, (u64, i64)>,
    /// ISR reports proposed to `__meta` and not yet seen applied: group → (isr, when).
    isr_proposed: HashMap<u64, (Vec<i32>, u64)>,
    /// Completed moves reported to `__meta` and not yet seen applied: group → when.
    reassigned_reported: HashMap<u64, u64>,
    /// Leader records proposed again (the first was lost, e.g. `__meta` was electing):
    /// group → (term, when).
    leader_reproposed: HashMap<u64, (u64, u64)>,
    proposals: Vec<Proposal>,
    group_changes: Vec<GroupChange>,
    /// `__meta` proposals dropped for want of a leader, proposed again on the next tick.
    retry: Vec<(u64, Vec<u8>)>,
    /// Validated config changes of the request being handled, to propose.
    pub(super) pending_configs: Vec<(ConfigTarget, BTreeMap<String, String>)>,
    next_seq: u64,
    waits: HashMap<u64, Wait>,
    /// Parked produces: response so far, partitions outstanding, request version.
    produces: HashMap<u64, (ProduceResponse, usize, i16)>,
    admins: HashMap<u64, (AdminWait, usize)>,
    /// Tokens whose response is complete, delivered at the end of the apply batch.
    finished: Vec<(u64, ResponseKind)>,
    /// [`APPLIED_TABLE`] as read at the first recovery (groups leave it as they are removed).
    marks_read: Option<HashMap<u64, (u64, i64)>>,
    wrote: bool,
    /// `__meta` as the replica core last reported it (DescribeQuorum).
    quorum: Option<MetaQuorum>,
    /// Led partitions' Raft groups as the replica core last reported them (DescribeQuorum on
    /// a data partition): group → progress.
    group_progress: HashMap<u64, GroupProgress>,
    /// Led compacted partitions with a clean ordered and not yet applied: group → when.
    clean_ordered: HashMap<u64, u64>,
    /// When led partitions were last checked for a clean to order.
    last_clean_check: Option<u64>,
    last_registration: Option<u64>,
    last_offsets_create: Option<u64>,
    last_txn_create: Option<u64>,
    /// A transaction request arrived before `__transaction_state` exists: create it.
    txn_topic_wanted: std::cell::Cell<bool>,
    /// Marker rounds and WriteTxnMarkers requests in flight (see `txn`).
    txn: txn::ClusterTxn,
    /// The wall clock as last handed in (for work done where no time is passed).
    clock_ms: i64,
    /// The monotonic clock (ms) as the replica core last handed it in: every timer and
    /// retry of this module runs on it, so a wall clock stepped back never stalls one. Work
    /// started between two loop passes (a client request, a peer's answer) counts from the
    /// last pass, at most one housekeeping interval earlier.
    mono: u64,
}

/// Whether a duty last done at `last` (`None`: never) is due again, `every` ms later on the
/// monotonic clock.
pub(super) fn due(last: Option<u64>, now: u64, every: u64) -> bool {
    last.is_none_or(|at| now.saturating_sub(at) >= every)
}

/// The first producer id this start of a node hands out: unique across nodes (node id in the
/// top bits) and restarts (start time below), so no id block is ever persisted.
pub(super) fn first_producer_id(node_id: i32, now_ms: i64) -> i64 {
    (i64::from(node_id) << 48) | ((now_ms & ((1 << 42) - 1)) << 6)
}

impl ClusterState {
    /// `boot` numbers this start of the node (see [`next_boot`]): the sequences of its
    /// proposals start above every earlier start's.
    pub(super) fn new(node_id: i32, members: &[i32], now_ms: i64, boot: u64) -> Self {
        ClusterState {
            node_id,
            listener: None,
            meta: MetaState::new(members),
            meta_applied: 0,
            meta_leader: (-1, 0),
            roles: HashMap::new(),
            applied: HashMap::new(),
            installing: HashMap::new(),
            predicted: HashMap::new(),
            early: BTreeMap::new(),
            early_pending: HashMap::new(),
            isr_proposed: HashMap::new(),
            reassigned_reported: HashMap::new(),
            leader_reproposed: HashMap::new(),
            proposals: Vec::new(),
            group_changes: Vec::new(),
            retry: Vec::new(),
            pending_configs: Vec::new(),
            next_seq: boot << 32,
            waits: HashMap::new(),
            produces: HashMap::new(),
            admins: HashMap::new(),
            finished: Vec::new(),
            marks_read: None,
            wrote: false,
            quorum: None,
            group_progress: HashMap::new(),
            clean_ordered: HashMap::new(),
            last_clean_check: None,
            last_registration: None,
            last_offsets_create: None,
            last_txn_create: None,
            txn_topic_wanted: std::cell::Cell::new(false),
            txn: txn::ClusterTxn::default(),
            clock_ms: now_ms,
            mono: 0,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

/// Where a node counts its starts.
const BOOTS_FILE: &str = "meta/boots";

/// Counts this start of the node, durably, and returns its number. A node matches the entries
/// it proposed to the requests waiting on them by sequence number; entries from before a
/// restart still apply after it, so a restarted node must never reuse an earlier start's
/// sequences (it answered a new produce with the offset of an old entry the replica
/// simulator found).
pub(super) fn next_boot(fs: &dyn crate::storage::Storage) -> Result<u64, BrokerError> {
    let meta = |source| BrokerError::Meta {
        path: BOOTS_FILE.to_string(),
        source,
    };
    let last = match fs.read_file(BOOTS_FILE).map_err(meta)? {
        None => 0,
        Some(raw) => std::str::from_utf8(&raw)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| BrokerError::CorruptMeta {
                path: BOOTS_FILE.to_string(),
                reason: "not a number".to_string(),
            })?,
    };
    let boot = last + 1;
    fs.create_dir_all("meta").map_err(meta)?;
    fs.write_file_atomic(BOOTS_FILE, format!("{boot}\n").as_bytes())
        .map_err(meta)?;
    fs.sync_dir("meta").map_err(meta)?;
    Ok(boot)
}

impl ClusterState {
    /// Queues a partition entry proposed by this node; returns its sequence and, on a leader
    /// that can tell, the offset it will be appended at.
    /// Queues a partition entry; returns its sequence and, when certain, its predicted base
    /// offset (`predictable`: nothing but the log end decides whether it applies, see `early`).
    fn propose_entry(
        &mut self,
        group: u64,
        now_ms: i64,
        records: &[u8],
        predictable: bool,
    ) -> (u64, Option<i64>) {
        let seq = self.seq();
        let base = self.predict(group, seq, records, predictable);
        self.proposals.push(Proposal {
            group,
            data: PartitionEntry {
                proposer: self.node_id as u64,
                seq,
                now_ms,
                records,
            }
            .encode(),
        });
        (seq, base)
    }

    /// One partition of the parked produce `token` is answered; when it was the last, the
    /// response is ready for delivery.
    fn produce_partition_done(&mut self, token: u64) {
        let Some((_, outstanding, _)) = self.produces.get_mut(&token) else {
            return;
        };
        *outstanding -= 1;
        if *outstanding == 0 {
            let (resp, _, _) = self.produces.remove(&token).expect("present");
            self.finished.push((token, ResponseKind::Produce(resp)));
        }
    }

    /// Records in `__meta` that this node leads `group` in `term`.
    fn propose_leader_record(&mut self, group: u64, term: u64) {
        self.proposals.push(Proposal {
            group: META_GROUP,
            data: MetaCommand::Leader {
                group,
                leader: self.node_id,
                term,
            }
            .encode(),
        });
    }

    fn proposal_id(&mut self) -> ProposalId {
        ProposalId {
            node: self.node_id as u64,
            seq: self.seq(),
        }
    }

    /// Leader and epoch of a partition: what a hosted group knows beats `__meta`'s record when
    /// its term is newer.
    pub(in crate::broker) fn leader_of(&self, topic: &str, partition: i32) -> (i32, i32) {
        let Some(mp) = self.meta.partition(topic, partition) else {
            return (-1, -1);
        };
        match self.roles.get(&mp.group) {
            // A replica knows best once its term caught up with the record: no leader in its
            // current term (an election, or an isolated old leader that stepped down) means
            // none, not the stale one `__meta` recorded.
            Some(r) if r.term as i32 >= mp.leader_epoch && r.term > 0 => {
                let leader = if r.leader > 0 { r.leader } else { -1 };
                (leader, r.term as i32)
            }
            _ => (mp.leader, mp.leader_epoch),
        }
    }

    /// This node leads `group` and has applied its earlier terms' entries: state it decides
    /// from (producer tables, transaction markers) is as fresh as the log.
    fn leader_caught_up(&self, group: u64) -> bool {
        self.roles
            .get(&group)
            .is_some_and(|r| r.leader == self.node_id && r.load_at.is_none())
    }

    fn is_local_leader(&self, group: u64) -> bool {
        self.roles
            .get(&group)
            .is_some_and(|r| r.leader == self.node_id)
    }

    fn endpoint(&self, node: i32) -> Option<NodeEndpoint> {
        let (host, port) = &self.meta.broker_addr(node, self.listener.as_deref())?;
        Some(
            NodeEndpoint::default()
                .with_node_id(BrokerId(node))
                .with_host(str(host))
                .with_port(*port),
        )
    }
}

/// Why a partition is not writable or readable here.
pub(super) struct NotHere {
    pub error: ResponseError,
    pub leader: i32,
    pub epoch: i32,
}

/// What a config change is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::broker) enum ConfigTarget {
    /// A topic's overrides.
    Topic(String),
    /// A node's dynamic broker configs (-1: the cluster-wide defaults).
    Broker(i32),
}

impl Broker {
    /// Whether this broker runs as a cluster replica.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether this replica's `__meta` view can answer clients: a `__meta` leader is known and
    /// this node's own registration (with its advertised address) has applied. The runtime
    /// also checks that everything committed is applied.
    pub fn cluster_ready(&self) -> bool {
        let Some(c) = &self.cluster else { return true };
        c.meta_leader.0 > 0 && self.registered()
    }

    /// Whether `__meta` holds this node with the Kafka address it advertises now.
    fn registered(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| {
            c.meta.brokers.get(&c.node_id).is_some_and(|(host, port)| {
                *host == self.config.advertised_host && *port == self.config.advertised_port
            }) && c
                .meta
                .listeners
                .get(&c.node_id)
                .is_some_and(|l| *l == self.config.listeners)
                // Any address: the one it was added with stays (see `RegisterBroker`).
                && (self.config.raft_addr.is_none() || c.meta.raft_addrs.contains_key(&c.node_id))
        })
    }

    /// Whether `node` is a broker of this cluster (registered in `__meta`).
    pub(super) fn is_cluster_member(&self, node: i32) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.meta.brokers.contains_key(&node))
    }

    /// The replicated metadata (cluster mode).
    pub fn meta(&self) -> Option<&MetaState> {
        self.cluster.as_ref().map(|c| &c.meta)
    }

    /// Entries to propose, in order.
    pub fn take_proposals(&mut self) -> Vec<Proposal> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.proposals))
            .unwrap_or_default()
    }

    /// Partition groups to start or stop hosting.
    pub fn take_group_changes(&mut self) -> Vec<GroupChange> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.group_changes))
            .unwrap_or_default()
    }

    /// Leader epoch of a partition (the Raft term of its leader; 0 standalone).
    pub(super) fn epoch_of(&self, topic: &str, partition: i32) -> i32 {
        match &self.cluster {
            None => 0,
            Some(c) => c.leader_of(topic, partition).1.max(0),
        }
    }

    /// Cluster mode: `Ok` when this node leads the partition, else the error and the leader
    /// hint to answer with.
    pub(super) fn check_leader(&self, topic: &str, partition: i32) -> Result<(), NotHere> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let Some(mp) = c.meta.partition(topic, partition) else {
            return Err(NotHere {
                error: ResponseError::UnknownTopicOrPartition,
                leader: -1,
                epoch: -1,
            });
        };
        if c.is_local_leader(mp.group) {
            return Ok(());
        }
        let (leader, epoch) = c.leader_of(topic, partition);
        Err(NotHere {
            error: if leader < 0 {
                ResponseError::LeaderNotAvailable
            } else {
                ResponseError::NotLeaderOrFollower
            },
            leader,
            epoch,
        })
    }

    /// Address of a broker for KIP-951 hints.
    pub(super) fn node_endpoint(&self, node: i32) -> Option<(String, i32)> {
        let c = self.cluster.as_ref()?;
        c.meta.broker_addr(node, self.listener.as_deref())
    }

    /// The runtime's view, as leader of `group` in `term`, of the replicas that keep up with
    /// it. Proposed to `__meta` when it differs from the recorded ISR (what Metadata reports);
    /// a proposal not applied within 5 s is made again. Returns whether `__meta` already records
    /// this leadership and ISR (nothing left to retry).
    /// `now` is the monotonic clock.
    pub fn report_isr(&mut self, group: u64, term: u64, mut isr: Vec<i32>, now: u64) -> bool {
        let Some(c) = &mut self.cluster else {
            return true;
        };
        let me = c.node_id;
        isr.sort_unstable();
        let Some(mp) = c
            .meta
            .group(group)
            .and_then(|(t, p)| c.meta.partition(t, p))
        else {
            return false;
        };
        // Wait until `__meta` records this leadership (its Leader entry goes first). That
        // entry is lost if `__meta` had no leader when it was proposed: propose it again.
        if mp.leader != me || mp.leader_epoch as u64 != term {
            let due = c
                .leader_reproposed
                .get(&group)
                .is_none_or(|(t, at)| *t != term || now.saturating_sub(*at) >= 2000);
            if (mp.leader_epoch as u64) < term && due {
                c.leader_reproposed.insert(group, (term, now));
                c.propose_leader_record(group, term);
            }
            return false;
        }
        c.leader_reproposed.remove(&group);
        let mut current = mp.in_sync().to_vec();
        current.sort_unstable();
        if current == isr {
            c.isr_proposed.remove(&group);
            return true;
        }
        if c.isr_proposed
            .get(&group)
            .is_some_and(|(p, at)| *p == isr && now.saturating_sub(*at) < 5000)
        {
            return false;
        }
        tracing::info!(node_id = me, group, term, isr = ?isr, was = ?current, "in-sync replicas changed");
        c.isr_proposed.insert(group, (isr.clone(), now));
        c.proposals.push(Proposal {
            group: META_GROUP,
            data: MetaCommand::Isr {
                group,
                leader: me,
                term,
                isr,
            }
            .encode(),
        });
        false
    }

    /// `__meta` leadership as the Raft driver reports it.
    pub fn meta_role_changed(&mut self, leader: u64, term: u64) {
        if let Some(c) = &mut self.cluster {
            c.meta_leader = (leader as i32, term);
        }
    }

    /// Hands in the server's monotonic clock (`now`, ms, one origin per process) and the wall
    /// clock read with it: the cluster module's timers and the group coordinator's session,
    /// join and sync timeouts run on the monotonic one, which never goes back. The server
    /// calls it before it hands the broker requests, ticks or applies.
    pub fn advance_clock(&mut self, now: u64, wall_ms: i64) {
        self.coordinator.set_monotonic(now as i64, wall_ms);
        if let Some(c) = &mut self.cluster {
            c.mono = c.mono.max(now);
        }
    }

    /// The monotonic clock as last handed in (see `ClusterState::mono`); 0 standalone.
    pub(super) fn cluster_clock(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.mono)
    }

    /// Periodic cluster duties: announce this broker, create `__consumer_offsets` (the `__meta`
    /// leader does), time out writes whose entries never committed. `now` is the replica
    /// core's monotonic clock, which every timer here runs on; `now_ms` the wall clock.
    pub fn cluster_tick(&mut self, meta_caught_up: bool, now: u64, now_ms: i64) {
        let advertised = (
            self.config.advertised_host.clone(),
            self.config.advertised_port,
        );
        let listeners = self.config.listeners.clone();
        let raft_addr = self.config.raft_addr.clone();
        let offsets_partitions = self.config.offsets_partitions;
        let offsets_segment_bytes = self.config.offsets_segment_bytes;
        let registered = self.registered();
        // A cluster writes producer snapshots only at shutdown; the aborted-transaction index
        // still goes to disk as it grows (a restart without a snapshot rebuilds it).
        if self.cluster.is_some() && due(self.last_spill, now, 10_000) {
            self.last_spill = Some(now);
            self.spill_aborted();
        }
        let Some(c) = &mut self.cluster else { return };
        c.clock_ms = now_ms;
        c.mono = c.mono.max(now);
        if !registered && c.meta_leader.0 > 0 && due(c.last_registration, now, 1000) {
            c.last_registration = Some(now);
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::RegisterBroker {
                    node_id: c.node_id,
                    host: advertised.0,
                    port: advertised.1,
                    listeners,
                    raft_addr,
                }
                .encode(),
            });
        }
        if c.meta_leader.0 == c.node_id
            && meta_caught_up
            && !c.meta.topics.contains_key(OFFSETS_TOPIC)
            && due(c.last_offsets_create, now, 2000)
        {
            c.last_offsets_create = Some(now);
            let rf = c.meta.members().len().min(3) as i32;
            let configs = offsets_topic_configs(offsets_segment_bytes);
            let id = super::random_uuid(&mut self.rng);
            let c = self.cluster.as_mut().expect("cluster");
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::CreateTopic {
                    request: None,
                    name: OFFSETS_TOPIC.into(),
                    id,
                    partitions: offsets_partitions,
                    replication_factor: rf,
                    configs,
                    assignment: None,
                }
                .encode(),
            });
        }
        let c = self.cluster.as_mut().expect("cluster");
        if c.meta_leader.0 == c.node_id
            && meta_caught_up
            && let Some(t) = c.meta.topics.get(OFFSETS_TOPIC)
            && !crate::topic_config::is_compacted(&t.configs)
            && due(c.last_offsets_create, now, 2000)
        {
            // Created by a build without cluster compaction (retention.ms=-1): compacted from
            // now on, as Kafka's is.
            c.last_offsets_create = Some(now);
            let mut configs = t.configs.clone();
            configs.remove("retention.ms");
            configs.extend(offsets_topic_configs(offsets_segment_bytes));
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: MetaCommand::SetConfigs {
                    request: None,
                    name: OFFSETS_TOPIC.into(),
                    configs,
                }
                .encode(),
            });
        }
        for (seq, data) in std::mem::take(&mut c.retry) {
            if c.waits.contains_key(&seq) {
                c.proposals.push(Proposal {
                    group: META_GROUP,
                    data,
                });
            }
        }
        let expired: Vec<u64> = c
            .waits
            .iter()
            .filter(|(_, w)| {
                let since = match w {
                    Wait::Produce { since, .. }
                    | Wait::Coordinator { since, .. }
                    | Wait::TxnState { since, .. }
                    | Wait::Marker { since, .. }
                    | Wait::Admin { since, .. } => *since,
                };
                now.saturating_sub(since) > WAIT_MS_MAX
            })
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            self.fail_wait(seq, ResponseError::RequestTimedOut);
        }
        self.want_txn_topic(meta_caught_up, now_ms);
        self.drive_marker_rounds(now_ms);
        self.import_security(meta_caught_up);
        self.order_cleans(now_ms);
        self.deliver_finished();
    }

    /// Queues a `__meta` command nobody waits for.
    pub(in crate::broker) fn propose_meta(&mut self, cmd: MetaCommand) {
        if let Some(c) = &mut self.cluster {
            c.proposals.push(Proposal {
                group: META_GROUP,
                data: cmd.encode(),
            });
        }
    }

    /// A proposal the Raft driver refused (no leader known, or not the leader any more).
    pub fn proposal_dropped(&mut self, group: u64, data: &[u8]) {
        if group == META_GROUP {
            // No `__meta` leader right now (start-up, election): keep the request waiting and
            // propose again on the next tick, until it applies or its wait expires.
            let waiting = match MetaCommand::decode(data) {
                Ok(Some(
                    MetaCommand::CreateTopic { request, .. }
                    | MetaCommand::DeleteTopic { request, .. }
                    | MetaCommand::CreatePartitions { request, .. }
                    | MetaCommand::SetConfigs { request, .. }
                    | MetaCommand::SetBrokerConfigs { request, .. }
                    | MetaCommand::Reassign { request, .. }
                    | MetaCommand::AddMember { request, .. }
                    | MetaCommand::RemoveMember { request, .. }
                    | MetaCommand::Security { request, .. },
                )) => request.map(|r| r.seq),
                _ => None,
            };
            if let Some(c) = &mut self.cluster
                && let Some(seq) = waiting
                && c.waits.contains_key(&seq)
            {
                c.retry.push((seq, data.to_vec()));
            }
            return;
        }
        if let Some(e) = PartitionEntry::decode(data) {
            if let Some(c) = &mut self.cluster {
                c.prediction_dropped(group, e.seq);
            }
            self.fail_wait(e.seq, ResponseError::NotLeaderOrFollower);
            self.deliver_finished();
        } else if let Some(e) = crate::cluster::DeleteRecordsEntry::decode(data) {
            self.fail_wait(e.seq, ResponseError::NotLeaderOrFollower);
            self.deliver_finished();
        } else if let Some(m) = crate::cluster::MarkerEntry::decode(data) {
            if let Some(c) = &mut self.cluster {
                c.prediction_dropped(group, m.seq);
            }
            self.fail_wait(m.seq, ResponseError::NotLeaderOrFollower);
            self.deliver_finished();
        }
    }
}

/// `__consumer_offsets`' configs: compacted, as Kafka's, so its size follows live groups and
/// not commits, in segments of `--offsets-topic-segment-bytes`.
fn offsets_topic_configs(segment_bytes: u64) -> BTreeMap<String, String> {
    let key = if segment_bytes < 1 << 20 {
        "internal.segment.bytes"
    } else {
        "segment.bytes"
    };
    BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (key.to_string(), segment_bytes.to_string()),
    ])
}
