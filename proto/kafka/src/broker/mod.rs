//! The broker core: topics, partitions and the handling of every request, with no I/O of its own.
//!
//! [`Broker::handle`] takes a decoded request and the current time and answers with a [`Reply`]:
//! a response to send now, a produce response to send once the data is synced, or a fetch the
//! runtime should re-evaluate when new data becomes visible or its wait expires. The runtime
//! drives syncing through [`Broker::take_sync_work`] / [`Broker::complete_sync`] — that is
//! group commit: every append between two syncs shares one fdatasync per file.

mod aborted_index;
mod admin;
mod cleaning;
mod cluster;
mod configs;
mod elect;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_snapshots;
mod security;
mod transactions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ProduceResponse, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use sluice_coordinator::{
    GroupConfig, GroupCoordinator, ProducerIdAllocator, ProducerStateTable, TxnConfig,
    TxnCoordinator,
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::codec::RequestContext;
use crate::log::{LogError, PartitionLog, SyncWork};
use crate::storage::{Storage, StoreFile};
use crate::topic_config;
use crate::versions;

pub use cleaning::{CleanJob, CleanTarget};
pub use cluster::{
    GroupChange, GroupProgress, InstallStep, META_GROUP, METADATA_TOPIC, MetaQuorum,
    OPERATOR_EPOCH, PeerRequest, Proposal, QuorumVoter, REPLICA_FETCH_VERSION,
    WRITE_TXN_MARKERS_VERSION, markers_error, replica_fetch,
};
pub use fetch::FetchOutcome;
pub use groups::{Deferred, OFFSETS_TOPIC, sync_failed};
pub use security::{SecurityChange, SecurityState};
pub(crate) use transactions::txn_error;

/// Settings of the broker core.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id.
    pub node_id: i32,
    /// Host clients should connect to (Metadata).
    pub advertised_host: String,
    /// Port clients should connect to (Metadata).
    pub advertised_port: i32,
    /// Create unknown topics on Metadata/Produce.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    pub default_partitions: i32,
    /// Acknowledge produces only after fdatasync (the default). Off: after the write.
    pub sync_writes: bool,
    /// Without fsync-before-ack: how often the runtime syncs every log (`--flush-interval-ms`;
    /// DescribeConfigs reports it as Kafka's `log.flush.interval.ms`).
    pub flush_interval_ms: Option<i64>,
    /// Partitions of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.num.partitions`); an existing topic keeps its count.
    pub offsets_partitions: i32,
    /// Segment size of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.segment.bytes`); below 1 MiB it is set as `internal.segment.bytes`.
    pub offsets_segment_bytes: u64,
    /// How long the first rebalance of an empty group waits (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: i64,
    /// Cluster mode: the node ids of every cluster member (None: standalone).
    pub cluster_members: Option<Vec<i32>>,
    /// Advertised address per listener name: Metadata answers a client with the addresses of
    /// the listener it came in on (`advertised_host`/`advertised_port` when not listed).
    pub listeners: BTreeMap<String, (String, i32)>,
    /// Authorizer and super users.
    pub security: crate::security::SecurityConfig,
    /// Cluster mode: where peers reach this node's Raft transport (registered in `__meta`, so
    /// a node that joins later learns every member's address).
    pub raft_addr: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            default_partitions: 1,
            sync_writes: true,
            flush_interval_ms: None,
            offsets_partitions: 50,
            offsets_segment_bytes: 100 << 20,
            group_initial_rebalance_delay_ms: 3000,
            cluster_members: None,
            listeners: BTreeMap::new(),
            security: Default::default(),
            raft_addr: None,
        }
    }
}

/// Errors opening the broker's state.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Reading or writing metadata failed.
    #[error("metadata storage error at {path}: {source}")]
    Meta {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Metadata exists but does not parse.
    #[error("metadata file {path} is corrupt: {reason}")]
    CorruptMeta {
        /// File.
        path: String,
        /// Parser's message.
        reason: String,
    },
    /// A partition log failed to open.
    #[error("opening partition {topic}-{partition}: {source}")]
    Log {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Cause.
        #[source]
        source: LogError,
    },
}

/// What to do with a handled request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response now.
    Now(ResponseKind),
    /// Send nothing (Produce with acks=0).
    Nothing,
    /// Send this produce response once [`Broker::synced_seq`] reaches `seq`; if a sync fails
    /// first, answer KAFKA_STORAGE_ERROR instead.
    AfterSync {
        /// Sync sequence that must complete.
        seq: u64,
        /// Response to send then.
        response: ProduceResponse,
    },
    /// Long-poll: call [`Broker::fetch`] again when data arrives, until it is satisfied or
    /// `max_wait_ms` passed.
    Fetch(Box<kafka_protocol::messages::FetchRequest>),
    /// Send this response (of any kind, e.g. an OffsetCommit whose records were appended to
    /// `__consumer_offsets`) once [`Broker::synced_seq`] reaches `seq`; if a sync fails first,
    /// answer it as failed.
    Durable {
        /// Sync sequence that must complete.
        seq: u64,
        /// Response to send then.
        response: ResponseKind,
    },
    /// The group coordinator parked the request (JoinGroup waiting for the rebalance, SyncGroup
    /// waiting for the leader): its response comes later from [`Broker::take_deferred`] with this
    /// token, after some other request or [`Broker::tick`].
    Parked {
        /// Identifies the response in [`Broker::take_deferred`].
        token: u64,
    },
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partition logs, indexed by partition number.
    pub partitions: Vec<PartitionLog>,
}

/// A sync the runtime must perform: fdatasync every file, then call
/// [`Broker::complete_sync`].
#[derive(Debug)]
pub struct SyncBatch {
    /// Sequence this sync completes.
    pub seq: u64,
    /// Files to sync.
    pub files: Vec<Arc<dyn StoreFile>>,
    /// Which partitions become durable up to which offset, by topic id: a topic deleted and
    /// re-created under the same name while the sync ran is another log.
    pub ends: Vec<(Uuid, i32, i64)>,
}

#[derive(Serialize, Deserialize)]
struct StoredTopic {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct StoredCluster {
    cluster_id: String,
    node_id: i32,
}

const TOPICS_FILE: &str = "meta/topics.json";
/// Written by a clean shutdown once every log is synced and indexed; removed (durably) before
/// anything else at start. Its presence lets the start skip checking every batch of the last
/// segments.
const CLEAN_SHUTDOWN_FILE: &str = "meta/clean-shutdown";
const CLUSTER_FILE: &str = "meta/cluster.json";

/// The broker core.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    fs: Arc<dyn Storage>,
    cluster_id: String,
    topics: BTreeMap<String, Topic>,
    ids: HashMap<Uuid, String>,
    rng: StdRng,
    write_seq: u64,
    synced_seq: u64,
    storage_failure: Option<String>,
    /// Consumer groups and committed offsets (state in `__consumer_offsets`).
    coordinator: GroupCoordinator,
    /// Idempotent producer ids (blocks reserved in `__consumer_offsets` partition 0).
    producer_ids: ProducerIdAllocator,
    /// Producer block records appended: (sync sequence, block end).
    pending_id_blocks: Vec<(u64, i64)>,
    /// Idempotent-producer state per data partition.
    producers: HashMap<(String, i32), ProducerStateTable>,
    /// The offset each partition's producer snapshot on disk resumes at.
    snapshotted: HashMap<(String, i32), i64>,
    /// Each partition's aborted-transaction index files (`aborted_index`).
    aborted_files: HashMap<(String, i32), Vec<aborted_index::IndexFile>>,
    /// Aborted transactions a partition's table holds before the oldest go to a file.
    aborted_spill: usize,
    /// When a cluster node last moved aborted transactions to index files.
    last_spill: Option<u64>,
    /// Last coordinator token handed out.
    next_token: u64,
    /// Responses to parked requests, for the runtime to deliver.
    deferred: Vec<groups::Deferred>,
    /// Cluster mode state (None: standalone).
    cluster: Option<cluster::ClusterState>,
    /// ACLs and SCRAM credentials.
    security: SecurityState,
    /// The listener of the request being handled (see [`Broker::handle_session`]).
    listener: Option<String>,
    /// Cluster mode: users and ACLs found in this node's data dir (`sluice users add` before the
    /// cluster existed) to copy into `__meta` once it is caught up.
    security_import: Option<SecurityState>,
    /// When the import was last proposed.
    last_import: Option<u64>,
    /// Set while handling a Metadata request whose principal may not create topics (v0-3
    /// requests carry no `allow_auto_topic_creation` flag).
    auto_create_denied: bool,
    /// Authorization denials by ACL resource type code, for metrics.
    denials: std::cell::RefCell<security::Denials>,
    /// The partition the cleaner took last (round robin).
    last_cleaned: Option<(String, i32)>,
    /// Transactions (state in `__transaction_state`).
    txn: TxnCoordinator,
    /// Markers waiting for their decision to be durable.
    pending_markers: Vec<transactions::PendingMarkers>,
}

pub(crate) fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Kafka's internal topics: written only by their coordinators (client produces are refused),
/// never deleted and never grown (their partition count places groups and transactional ids).
pub(crate) fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == sluice_coordinator::TRANSACTION_STATE_TOPIC
}

pub(crate) fn partition_dir(topic: &str, partition: i32) -> String {
    format!("logs/{topic}-{partition}")
}

impl Broker {
    /// Opens the broker's state from `fs` (creating it on first start) and recovers every log.
    ///
    /// `seed` feeds the generator of topic and cluster ids.
    pub fn open(
        fs: Arc<dyn Storage>,
        config: BrokerConfig,
        seed: u64,
        now_ms: i64,
    ) -> Result<Self, BrokerError> {
        let meta_err = |path: &str| {
            let path = path.to_string();
            move |source| BrokerError::Meta { path, source }
        };
        fs.create_dir_all("meta").map_err(meta_err("meta"))?;
        fs.create_dir_all("logs").map_err(meta_err("logs"))?;
        let mut rng = StdRng::seed_from_u64(seed);
        let cluster: Option<StoredCluster> = read_json(&*fs, CLUSTER_FILE)?;
        let cluster_id = match cluster {
            Some(c) => c.cluster_id,
            None => {
                let id = kafka_uuid_string(random_uuid(&mut rng));
                let c = StoredCluster {
                    cluster_id: id.clone(),
                    node_id: config.node_id,
                };
                fs.write_file_atomic(CLUSTER_FILE, &serde_json::to_vec_pretty(&c).unwrap())
                    .map_err(meta_err(CLUSTER_FILE))?;
                id
            }
        };
        let clean = fs
            .read_file(CLEAN_SHUTDOWN_FILE)
            .map_err(meta_err(CLEAN_SHUTDOWN_FILE))?
            .is_some();
        if clean {
            // Gone for good before any write: a crash from here on must be recovered.
            fs.remove_file(CLEAN_SHUTDOWN_FILE)
                .map_err(meta_err(CLEAN_SHUTDOWN_FILE))?;
            fs.sync_dir("meta").map_err(meta_err("meta"))?;
        }
        let stored: Vec<StoredTopic> = read_json(&*fs, TOPICS_FILE)?.unwrap_or_default();
        let mut topics = BTreeMap::new();
        let mut ids = HashMap::new();
        let mut wanted_dirs = std::collections::HashSet::new();
        for t in stored {
            let log_config = topic_config::log_config(&t.configs);
            let mut partitions = Vec::new();
            for p in 0..t.partitions {
                let dir = partition_dir(&t.name, p);
                wanted_dirs.insert(dir.clone());
                let open = if clean {
                    PartitionLog::open_after_clean_shutdown
                } else {
                    PartitionLog::open
                };
                let log = open(fs.clone(), dir, log_config.clone(), now_ms).map_err(|source| {
                    BrokerError::Log {
                        topic: t.name.clone(),
                        partition: p,
                        source,
                    }
                })?;
                partitions.push(log);
            }
            ids.insert(t.id, t.name.clone());
            topics.insert(
                t.name,
                Topic {
                    id: t.id,
                    configs: t.configs,
                    partitions,
                },
            );
        }
        // Directories of topics deleted before a crash finished removing them.
        for name in fs.list_dir("logs").map_err(meta_err("logs"))? {
            let dir = format!("logs/{name}");
            if !wanted_dirs.contains(&dir) {
                warn!(dir = %dir, "removing directory of a deleted topic");
                fs.remove_dir_all(&dir).map_err(meta_err(&dir))?;
            }
        }
        let group_config = GroupConfig {
            num_partitions: config.offsets_partitions,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            member_id_seed: rng.r#gen(),
            ..GroupConfig::default()
        };
        let mut broker = Broker {
            config,
            fs,
            cluster_id,
            topics,
            ids,
            rng,
            write_seq: 0,
            synced_seq: 0,
            storage_failure: None,
            coordinator: GroupCoordinator::new(group_config),
            producer_ids: ProducerIdAllocator::new(ProducerIdAllocator::DEFAULT_BLOCK_SIZE),
            pending_id_blocks: Vec::new(),
            producers: HashMap::new(),
            snapshotted: HashMap::new(),
            aborted_files: HashMap::new(),
            aborted_spill: aborted_index::SPILL_ENTRIES,
            last_spill: None,
            next_token: 0,
            deferred: Vec::new(),
            cluster: None,
            security: SecurityState::default(),
            listener: None,
            security_import: None,
            last_import: None,
            auto_create_denied: false,
            denials: Default::default(),
            last_cleaned: None,
            txn: TxnCoordinator::new(TxnConfig {
                num_partitions: broker_txn_partitions(),
                ..TxnConfig::default()
            }),
            pending_markers: Vec::new(),
        };
        if let Some(members) = broker.config.cluster_members.clone() {
            // Topics, the offsets topic and coordinator partitions come from `__meta` and
            // partition leadership; local logs are reconciled once `__meta` is applied.
            let boot = cluster::next_boot(&*broker.fs)?;
            broker.cluster = Some(cluster::ClusterState::new(
                broker.config.node_id,
                &members,
                now_ms,
                boot,
            ));
            broker.producer_ids = ProducerIdAllocator::unbounded(cluster::first_producer_id(
                broker.config.node_id,
                now_ms,
            ));
            let local = security::load(&*broker.fs)?;
            if !local.acls.is_empty() || !local.credentials.is_empty() {
                broker.security_import = Some(local);
            }
        } else {
            broker.security = security::load(&*broker.fs)?;
            broker.open_groups(now_ms)?;
            broker.load_txn_state(now_ms);
        }
        info!(
            node_id = broker.config.node_id,
            topics = broker.topics.len(),
            partitions = broker.topics.values().map(|t| t.partitions.len()).sum::<usize>(),
            cluster_id = %broker.cluster_id,
            "broker state recovered"
        );
        Ok(broker)
    }

    /// The cluster id (generated on first start).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Every local partition log, for metrics: (topic, partition, log start, high watermark,
    /// log end, bytes on disk), sorted by topic and partition.
    pub fn log_stats(&self) -> Vec<(String, i32, i64, i64, i64, u64)> {
        let mut out: Vec<_> = self
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions.iter().enumerate().map(move |(p, log)| {
                    (
                        name.clone(),
                        p as i32,
                        log.log_start_offset(),
                        log.high_watermark(),
                        log.log_end_offset(),
                        log.size_bytes(),
                    )
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// The address this node advertises on the listener of the request being handled.
    pub(crate) fn advertised(&self) -> (String, i32) {
        self.listener
            .as_ref()
            .and_then(|l| self.config.listeners.get(l))
            .cloned()
            .unwrap_or_else(|| {
                (
                    self.config.advertised_host.clone(),
                    self.config.advertised_port,
                )
            })
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Topics by name.
    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    /// Handles one request from an anonymous client (tests and tools; connections use
    /// [`Broker::handle_session`]).
    pub fn handle(&mut self, ctx: &RequestContext, body: RequestKind, now_ms: i64) -> Reply {
        let session = crate::security::Session::anonymous("", "PLAINTEXT");
        self.handle_session(&session, ctx, body, now_ms).0
    }

    /// Handles one request from `client_host` (as Kafka shows it, e.g. `/127.0.0.1`; the group
    /// coordinator reports it in DescribeGroups).
    pub fn handle_from(
        &mut self,
        ctx: &RequestContext,
        client_host: &str,
        body: RequestKind,
        now_ms: i64,
    ) -> Reply {
        let v = ctx.api_version;
        if self.cluster.is_some() {
            match body {
                RequestKind::Metadata(r) => {
                    return Reply::Now(ResponseKind::Metadata(self.metadata_cluster(r, v, now_ms)));
                }
                RequestKind::Produce(r) => return self.produce_cluster(r, v, now_ms),
                RequestKind::CreateTopics(r) => return self.create_topics_cluster(r, v),
                RequestKind::DeleteTopics(r) => return self.delete_topics_cluster(r),
                RequestKind::CreatePartitions(r) => {
                    return self.create_partitions_cluster(r);
                }
                RequestKind::InitProducerId(r) if r.transactional_id.is_none() => {
                    return Reply::Now(self.init_producer_id_cluster(&r));
                }
                RequestKind::AlterConfigs(_) | RequestKind::IncrementalAlterConfigs(_) => {
                    return self.alter_configs_cluster(body);
                }
                RequestKind::DeleteRecords(r) => return self.delete_records_cluster(r),
                other => return self.handle_common(ctx, client_host, other, now_ms),
            }
        }
        self.handle_common(ctx, client_host, body, now_ms)
    }

    fn handle_common(
        &mut self,
        ctx: &RequestContext,
        client_host: &str,
        body: RequestKind,
        now_ms: i64,
    ) -> Reply {
        let v = ctx.api_version;
        if transactions::is_txn_request(&body) {
            return self.txn_request(ctx, body, now_ms);
        }
        if groups::is_group_request(&body) {
            return self.group_request(ctx, client_host, body, now_ms);
        }
        match body {
            RequestKind::ApiVersions(_) => {
                Reply::Now(ResponseKind::ApiVersions(versions::api_versions_response()))
            }
            RequestKind::Metadata(r) => {
                Reply::Now(ResponseKind::Metadata(self.metadata(r, v, now_ms)))
            }
            RequestKind::Produce(r) => self.produce(r, v, now_ms),
            RequestKind::Fetch(r) => Reply::Fetch(Box::new(r)),
            RequestKind::WriteTxnMarkers(r) => {
                if !self.is_cluster() {
                    return self.write_txn_markers_standalone(&r, now_ms);
                }
                let token = self.new_token();
                match self.write_txn_markers(token, r, now_ms) {
                    Some(resp) => Reply::Now(ResponseKind::WriteTxnMarkers(resp)),
                    None => Reply::Parked { token },
                }
            }
            RequestKind::ListOffsets(r) => {
                Reply::Now(ResponseKind::ListOffsets(self.list_offsets(r, v)))
            }
            RequestKind::CreateTopics(r) => {
                Reply::Now(ResponseKind::CreateTopics(self.create_topics(r, v, now_ms)))
            }
            RequestKind::DeleteTopics(r) => {
                Reply::Now(ResponseKind::DeleteTopics(self.delete_topics(r, now_ms)))
            }
            RequestKind::CreatePartitions(r) => Reply::Now(ResponseKind::CreatePartitions(
                self.create_partitions(r, now_ms),
            )),
            RequestKind::DescribeConfigs(r) => {
                Reply::Now(ResponseKind::DescribeConfigs(self.describe_configs(r, v)))
            }
            RequestKind::AlterConfigs(r) => {
                Reply::Now(ResponseKind::AlterConfigs(self.alter_configs(r)))
            }
            RequestKind::IncrementalAlterConfigs(r) => Reply::Now(
                ResponseKind::IncrementalAlterConfigs(self.incremental_alter_configs(r)),
            ),
            RequestKind::DescribeCluster(r) => {
                Reply::Now(ResponseKind::DescribeCluster(self.describe_cluster(r, v)))
            }
            RequestKind::ElectLeaders(r) => {
                Reply::Now(ResponseKind::ElectLeaders(self.elect_leaders(r, v)))
            }
            RequestKind::DescribeQuorum(r) => {
                Reply::Now(ResponseKind::DescribeQuorum(self.describe_quorum(r, v)))
            }
            RequestKind::AlterPartitionReassignments(r) => self.alter_partition_reassignments(r),
            RequestKind::AddRaftVoter(r) => self.add_raft_voter(r),
            RequestKind::RemoveRaftVoter(r) => self.remove_raft_voter(r),
            RequestKind::ListPartitionReassignments(r) => Reply::Now(
                ResponseKind::ListPartitionReassignments(self.list_partition_reassignments(r)),
            ),
            RequestKind::DescribeLogDirs(r) => {
                Reply::Now(ResponseKind::DescribeLogDirs(self.describe_log_dirs(r)))
            }
            RequestKind::DeleteRecords(r) => {
                Reply::Now(ResponseKind::DeleteRecords(self.delete_records(r)))
            }
            RequestKind::OffsetForLeaderEpoch(r) => Reply::Now(ResponseKind::OffsetForLeaderEpoch(
                self.offset_for_leader_epoch(r),
            )),
            other => {
                // Unreachable for versions we advertise: decode_request refuses unknown APIs.
                warn!(api = ?ctx.api_key, "request for an API this broker does not serve");
                let _ = other;
                Reply::Nothing
            }
        }
    }

    /// Takes the pending sync: all files written since the last one, and the sequence it
    /// completes. `None` when nothing was written.
    pub fn take_sync_work(&mut self) -> Option<SyncBatch> {
        let mut files = Vec::new();
        let mut ends = Vec::new();
        for t in self.topics.values_mut() {
            for (p, log) in t.partitions.iter_mut().enumerate() {
                if let Some(SyncWork {
                    files: f,
                    end_offset,
                }) = log.take_sync_work()
                {
                    files.extend(f);
                    ends.push((t.id, p as i32, end_offset));
                }
            }
        }
        if files.is_empty() && self.synced_seq == self.write_seq {
            return None;
        }
        Some(SyncBatch {
            seq: self.write_seq,
            files,
            ends,
        })
    }

    /// Without fsync-before-ack: the sync the topics' `flush.messages` / `flush.ms` call for now,
    /// of the partitions that are due only (the periodic [`Broker::take_sync_work`] covers the
    /// rest). It completes no sync sequence. `None` when no partition is due.
    pub fn take_due_sync_work(&mut self, now_ms: i64) -> Option<SyncBatch> {
        let mut files = Vec::new();
        let mut ends = Vec::new();
        for t in self.topics.values_mut() {
            for (p, log) in t.partitions.iter_mut().enumerate() {
                if !log.flush_due(now_ms) {
                    continue;
                }
                if let Some(SyncWork {
                    files: f,
                    end_offset,
                }) = log.take_sync_work()
                {
                    files.extend(f);
                    ends.push((t.id, p as i32, end_offset));
                }
            }
        }
        if files.is_empty() {
            return None;
        }
        Some(SyncBatch {
            seq: self.synced_seq,
            files,
            ends,
        })
    }

    /// The earliest time a partition's `flush.ms` makes it due a sync (`None`: none pending).
    pub fn next_flush_deadline(&self) -> Option<i64> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|l| l.flush_deadline())
            .min()
    }

    /// Whether any topic sets `flush.messages` or `flush.ms` (the runtime then checks
    /// [`Broker::take_due_sync_work`] after writes, not only on its timer).
    pub fn has_flush_policies(&self) -> bool {
        self.topics
            .values()
            .any(|t| t.configs.contains_key("flush.messages") || t.configs.contains_key("flush.ms"))
    }

    /// Reports the outcome of a [`SyncBatch`]. On success its data becomes visible to consumers
    /// and the produces waiting for it are answered; on failure the broker stops accepting
    /// writes (a failed fsync leaves the page cache in an unknown state).
    pub fn complete_sync(
        &mut self,
        seq: u64,
        ends: &[(Uuid, i32, i64)],
        result: Result<(), String>,
    ) {
        match result {
            Ok(()) => {
                for (id, p, end) in ends {
                    let mut undecided = None;
                    if let Some(log) = self
                        .ids
                        .get(id)
                        .and_then(|name| self.topics.get_mut(name))
                        .and_then(|t| t.partitions.get_mut(*p as usize))
                    {
                        log.mark_durable(*end);
                        log.mark_synced(*end);
                        if log.last_stable_offset() < log.high_watermark() {
                            undecided = Some(log.high_watermark());
                        }
                    }
                    // A marker that became durable lets read_committed consumers past it.
                    if let Some(hw) = undecided
                        && let Some(name) = self.ids.get(id).cloned()
                    {
                        self.txn_high_watermark(&name, *p, hw);
                    }
                    self.cluster_synced(*id, *p, *end);
                }
                self.synced_seq = self.synced_seq.max(seq);
                self.id_blocks_synced();
                // Decisions now durable: their markers go out (and get the next sync).
                self.run_due_markers();
            }
            Err(e) => {
                tracing::error!(error = %e, "fsync failed: refusing further writes");
                self.storage_failure = Some(e);
            }
        }
    }

    /// The last completed sync sequence.
    pub fn synced_seq(&self) -> u64 {
        self.synced_seq
    }

    /// Set once a sync failed; every later produce is answered KAFKA_STORAGE_ERROR.
    pub fn storage_failure(&self) -> Option<&str> {
        self.storage_failure.as_deref()
    }

    /// Deletes expired segments of every partition.
    pub fn apply_retention(&mut self, now_ms: i64) {
        for (name, t) in &mut self.topics {
            for (p, log) in t.partitions.iter_mut().enumerate() {
                if let Err(e) = log.apply_retention(now_ms) {
                    warn!(topic = %name, partition = p, error = %e, "retention failed");
                }
            }
        }
        // Aborted transactions wholly before a partition's log start concern no reader.
        let topics = &self.topics;
        for ((topic, p), table) in self.producers.iter_mut() {
            if let Some(log) = topics
                .get(topic)
                .and_then(|t| t.partitions.get(*p as usize))
            {
                table.trim_aborted(log.log_start_offset());
            }
        }
        self.trim_aborted_files();
        // Also the periodic moment to record producer state, so a restart replays little.
        self.snapshot_producer_states();
    }

    /// Clean shutdown: syncs every log and writes their indexes.
    pub fn close(&mut self) {
        self.snapshot_producer_states();
        let mut clean = self.storage_failure.is_none();
        for (name, t) in &mut self.topics {
            for (p, log) in t.partitions.iter_mut().enumerate() {
                if let Err(e) = log.close() {
                    warn!(topic = %name, partition = p, error = %e, "closing log failed");
                    clean = false;
                }
            }
        }
        self.synced_seq = self.write_seq;
        if clean && let Err(e) = self.fs.write_file_atomic(CLEAN_SHUTDOWN_FILE, b"") {
            warn!(node_id = self.config.node_id, error = %e, "recording the clean shutdown failed (the next start checks every log tail)");
        }
    }

    /// Creates `__consumer_offsets` on first start, replays it into the group coordinator and the
    /// producer-id allocator, and rebuilds every data partition's idempotent-producer state.
    fn open_groups(&mut self, now_ms: i64) -> Result<(), BrokerError> {
        if let Some(t) = self.topics.get_mut(OFFSETS_TOPIC)
            && !topic_config::is_compacted(&t.configs)
        {
            // Created before compaction existed (with retention.ms=-1): compact it from now on,
            // as Kafka's is, so it stays bounded; with `--offsets-topic-segment-bytes` segments
            // (from the next roll) rather than 1 GiB ones, which would wait long to be cleaned.
            t.configs
                .insert("cleanup.policy".to_string(), "compact".to_string());
            if !t.configs.contains_key("segment.bytes")
                && !t.configs.contains_key("internal.segment.bytes")
            {
                let key = if self.config.offsets_segment_bytes < 1 << 20 {
                    "internal.segment.bytes"
                } else {
                    "segment.bytes"
                };
                t.configs.insert(
                    key.to_string(),
                    self.config.offsets_segment_bytes.to_string(),
                );
            }
            let log_config = topic_config::log_config(&t.configs);
            for log in &mut t.partitions {
                log.set_config(log_config.clone());
            }
            self.persist_topics().map_err(|source| BrokerError::Meta {
                path: TOPICS_FILE.into(),
                source,
            })?;
            info!("__consumer_offsets is compacted from now on");
        }
        if !self.topics.contains_key(OFFSETS_TOPIC) {
            // Compacted, as Kafka's: the latest commit per group and partition is what counts.
            let configs = self.internal_topic_configs();
            let n = self.config.offsets_partitions;
            self.create_topic(OFFSETS_TOPIC, n, configs, now_ms)
                .map_err(|(e, msg)| BrokerError::Meta {
                    path: TOPICS_FILE.into(),
                    source: std::io::Error::other(format!(
                        "creating {OFFSETS_TOPIC}: {e:?} {}",
                        msg.unwrap_or_default()
                    )),
                })?;
        }
        let n = self.topics[OFFSETS_TOPIC].partitions.len() as i32;
        if n != self.config.offsets_partitions {
            warn!(
                node_id = self.config.node_id,
                existing = n,
                configured = self.config.offsets_partitions,
                "__consumer_offsets keeps the partition count it was created with"
            );
        }
        // The coordinator must hash groups over the partitions that exist.
        if n != self.config.offsets_partitions {
            let group_config = GroupConfig {
                num_partitions: n,
                initial_rebalance_delay_ms: self.config.group_initial_rebalance_delay_ms,
                member_id_seed: self.rng.r#gen(),
                ..GroupConfig::default()
            };
            self.coordinator = GroupCoordinator::new(group_config);
        }
        // Standalone: this node leads every internal partition.
        for p in 0..n {
            self.load_offsets_partition(p, now_ms);
        }
        // Data partitions, and `__consumer_offsets` for its transactions (TxnOffsetCommit).
        let data: Vec<(String, i32)> = self
            .topics
            .iter()
            .filter(|(name, _)| name.as_str() != sluice_coordinator::TRANSACTION_STATE_TOPIC)
            .flat_map(|(name, t)| (0..t.partitions.len() as i32).map(move |p| (name.clone(), p)))
            .collect();
        for (topic, p) in &data {
            self.load_producer_state(topic, *p, true);
        }
        info!(
            node_id = self.config.node_id,
            offsets_partitions = n,
            producer_partitions = data.len(),
            "group coordinator loaded"
        );
        Ok(())
    }

    /// Configs of an internal topic when it is created (`__consumer_offsets`,
    /// `__transaction_state`): compacted, as Kafka's, with `--offsets-topic-segment-bytes`
    /// segments (below 1 MiB as `internal.segment.bytes`).
    fn internal_topic_configs(&self) -> BTreeMap<String, String> {
        let segment_key = if self.config.offsets_segment_bytes < 1 << 20 {
            "internal.segment.bytes"
        } else {
            "segment.bytes"
        };
        BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                segment_key.to_string(),
                self.config.offsets_segment_bytes.to_string(),
            ),
        ])
    }

    fn new_uuid(&mut self) -> Uuid {
        random_uuid(&mut self.rng)
    }

    fn persist_topics(&self) -> Result<(), std::io::Error> {
        let stored: Vec<StoredTopic> = self
            .topics
            .iter()
            .map(|(name, t)| StoredTopic {
                name: name.clone(),
                id: t.id,
                partitions: t.partitions.len() as i32,
                configs: t.configs.clone(),
            })
            .collect();
        self.fs
            .write_file_atomic(TOPICS_FILE, &serde_json::to_vec_pretty(&stored).unwrap())
    }

    /// A partition's high watermark, if this broker holds the partition (the simulator reads
    /// it to skip re-reading a log that committed nothing new).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        Some(self.partition(topic, partition).ok()?.high_watermark())
    }

    /// A partition's high watermark and every batch below it from offset `from` (or the log
    /// start): what any consumer may see (the replica simulator compares it across replicas).
    pub fn committed_batches(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
    ) -> Option<(i64, bytes::Bytes)> {
        let log = self.partition(topic, partition).ok()?;
        let from = from.clamp(log.log_start_offset(), log.log_end_offset());
        let read = log.read(from, usize::MAX, true).ok()?;
        Some((log.high_watermark(), read.records))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<&PartitionLog, ResponseError> {
        self.topics
            .get(topic)
            .and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|p| t.partitions.get(p))
            })
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionLog, ResponseError> {
        self.topics
            .get_mut(topic)
            .and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|p| t.partitions.get_mut(p))
            })
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    fs: &dyn Storage,
    path: &str,
) -> Result<Option<T>, BrokerError> {
    let Some(raw) = fs.read_file(path).map_err(|source| BrokerError::Meta {
        path: path.to_string(),
        source,
    })?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| BrokerError::CorruptMeta {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

fn random_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid()
}

/// Kafka prints cluster ids as URL-safe base64 of the UUID without padding.
fn kafka_uuid_string(id: Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// Partitions of `__transaction_state` when it is created (Kafka's
/// `transaction.state.log.num.partitions`).
fn broker_txn_partitions() -> i32 {
    50
}

/// Checks a topic name as Kafka does.
pub(crate) fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("Topic name '{name}' is illegal"));
    }
    if name.len() > 249 {
        return Err(format!("Topic name is longer than 249 characters: {name}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "Topic name '{name}' contains '{c}'; legal characters are ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod group_tests;

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod config_tests;

#[cfg(test)]
mod security_tests;

#[cfg(test)]
mod restart_tests;

#[cfg(test)]
mod txn_tests;
