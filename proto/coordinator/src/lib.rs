//! Sans-IO group coordinator and idempotent-producer state for Sluice (issue 3).
//!
//! Nothing in this crate touches a socket, a file, a clock, a thread or a runtime: requests come in as
//! decoded `kafka-protocol` structs, time comes in as `now_ms: i64` arguments, and everything that must
//! happen outside (send a response, make a record durable) goes out as an [`Action`]. The same shape as
//! `quinn-proto`: the server owns the I/O, this crate owns the protocol, and tests drive it on a fake
//! clock.
//!
//! # What the server must drive
//!
//! **Setup.** Create one [`GroupCoordinator`] with a [`GroupConfig`] (give `member_id_seed` a random
//! value per process). The coordinator's durable state lives in an internal partitioned log
//! (`__consumer_offsets`, `GroupConfig::num_partitions` partitions); a group belongs to partition
//! [`partition_for`]`(group_id, n)`, Kafka's own function. For every partition this node leads (all of
//! them on a single node), read the partition's records in log order, decode each with
//! [`StoreRecord::decode`] (key, value; `None` value = tombstone) and call
//! [`GroupCoordinator::load_partition`] (or `begin_load` / `replay`… / `finish_load` when streaming).
//! While a partition loads, its groups answer COORDINATOR_LOAD_IN_PROGRESS; groups of partitions not
//! owned answer NOT_COORDINATOR. When leadership of a partition moves away, call
//! [`GroupCoordinator::unload_partition`].
//!
//! **Requests.** Hold the coordinator under a mutex. For JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups call
//! [`GroupCoordinator::handle`] with a [`RequestContext`] (a unique `token` for this request, its API
//! version, client id and client address) and the current time. FindCoordinator is answered by
//! [`find_coordinator`], InitProducerId by [`ProducerIdAllocator::init_producer_id`].
//!
//! **Actions.** Every call returns a list of [`Action`]s, to execute in order:
//! - [`Action::Respond`]: send `body` as the response to the request identified by `token`, encoded at
//!   `api_version`. The token may belong to an earlier request: JoinGroup and SyncGroup answers are
//!   deferred until the rebalance progresses, so a connection task must wait for its token's response
//!   (e.g. a oneshot per token) and, like Kafka, not process the connection's next request meanwhile.
//! - [`Action::Persist`]: append each [`StoreWrite`] (`record.encode()` as key/value) to its partition
//!   of the internal log, wait until they are durable (fsync / Raft commit), then send the `then`
//!   responses. Appends must reach each partition in the order the actions were emitted (enqueue them
//!   while still holding the lock). The coordinator's memory is already updated when the action is
//!   emitted; if the append fails, answer the `then` responses with [`Response::into_error`] and
//!   reload the partition from the log, which discards what was not stored.
//!
//! Every token gets exactly one response, unless its partition is unloaded first, in which case it is
//! answered NOT_COORDINATOR. If a connection closes, its pending responses can simply be dropped.
//!
//! **Time.** After every call, [`GroupCoordinator::poll_timeout`] tells when the coordinator next needs
//! [`GroupCoordinator::tick`] (session timeouts, rebalance and sync deadlines, the initial rebalance
//! delay, offset retention). Tick then, and execute the returned actions like any others.
//!
//! **Other inputs.** When a topic is deleted call [`GroupCoordinator::topic_deleted`] so its committed
//! offsets go away.
//!
//! # Idempotent producer
//!
//! [`ProducerStateTable`] (one per partition log) decides for each incoming batch of an idempotent
//! producer whether to append it, answer it as a duplicate with its original offset, or reject it; feed
//! it every appended batch and, on startup, every stored batch header. [`ProducerIdAllocator`] hands out
//! producer ids in blocks whose reservation is a [`StoreRecord::ProducerIdBlock`] the server must make
//! durable before answering.
//!
//! # Modules
//! - [`store`]: the durable record format and `partition_for`.
//! - `group`: the coordinator: `state` (group + states), `member`, `rebalance` (join/sync/heartbeat/
//!   leave/timers), `offsets` (commit/fetch/delete/retention), `admin` (list/describe/delete).
//! - [`producer`]: producer id allocation and per-partition sequence tracking.
//! - `find_coordinator`: the FindCoordinator answer, batched or not.
#![deny(missing_docs)]

mod find_coordinator;
mod group;
pub mod producer;
pub mod store;
pub mod txn;

use kafka_protocol::messages::ResponseKind;

pub use find_coordinator::{CoordinatorType, find_coordinator};
pub use group::{GroupConfig, GroupCoordinator, GroupState, NotAGroupRequest, ReplayError};
pub use producer::{
    AbortedTxn, BatchCheck, BatchInfo, ProducerIdAllocator, ProducerStateTable, ProducerView,
    SnapshotError,
};
pub use store::{StoreError, StoreRecord, TxnValue, partition_for};
pub use txn::{
    MarkerJob, TRANSACTION_STATE_TOPIC, TxnAction, TxnConfig, TxnCoordinator, TxnMetadata, TxnState,
};

/// Identifies a request and what the server knows about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Opaque, unique per request: responses are addressed by it.
    pub token: u64,
    /// API version of the request (responses are encoded at the same version).
    pub api_version: i16,
    /// Client id from the request header (shown by DescribeGroups, prefixes member ids).
    pub client_id: String,
    /// Client address as Kafka shows it, e.g. `/127.0.0.1`.
    pub client_host: String,
}

impl RequestContext {
    pub(crate) fn pending(&self) -> Pending {
        Pending {
            token: self.token,
            api_version: self.api_version,
        }
    }
}

/// A request that still needs its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub token: u64,
    pub api_version: i16,
}

/// A response for the request identified by `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The request's token from its [`RequestContext`].
    pub token: u64,
    /// Version to encode the body at (the request's version).
    pub api_version: i16,
    /// The response message.
    pub body: ResponseKind,
}

/// A record to append to a partition of the internal log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreWrite {
    /// Partition of the internal log.
    pub partition: i32,
    /// The record; `record.encode()` gives the Kafka record key and value.
    pub record: StoreRecord,
}

/// Something the server must do on the coordinator's behalf.
// Actions are short-lived and moved, not stored: boxing the response would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a response now.
    Respond(Response),
    /// Make `writes` durable, then send `then` (which may be empty).
    Persist {
        /// Records to append, in order.
        writes: Vec<StoreWrite>,
        /// Responses to send once every write is durable.
        then: Vec<Response>,
    },
    /// As [`Action::Persist`], appended as a transactional batch of `producer_id` (TxnOffsetCommit):
    /// the transaction's marker later commits or aborts them.
    PersistTxn {
        /// The transaction's producer id.
        producer_id: i64,
        /// Its epoch.
        producer_epoch: i16,
        /// Records to append, in order.
        writes: Vec<StoreWrite>,
        /// Responses to send once every write is durable.
        then: Vec<Response>,
    },
}

/// Collects actions in emission order.
#[derive(Debug, Default)]
pub(crate) struct Out {
    actions: Vec<Action>,
}

impl Out {
    pub(crate) fn respond(&mut self, r: Response) {
        self.actions.push(Action::Respond(r));
    }

    pub(crate) fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// Persist-then-respond; with nothing to write the responses go out at once.
    pub(crate) fn persist(&mut self, writes: Vec<StoreWrite>, then: Vec<Response>) {
        if writes.is_empty() {
            self.actions.extend(then.into_iter().map(Action::Respond));
        } else {
            self.actions.push(Action::Persist { writes, then });
        }
    }

    pub(crate) fn into_actions(self) -> Vec<Action> {
        self.actions
    }
}

impl Response {
    /// The same response with every error code set to `error`: what to send when the writes of a
    /// [`Action::Persist`] could not be made durable (Kafka answers COORDINATOR_NOT_AVAILABLE or
    /// NOT_COORDINATOR there).
    pub fn into_error(mut self, error: kafka_protocol::ResponseError) -> Response {
        let code = error.code();
        match &mut self.body {
            ResponseKind::JoinGroup(r) => {
                r.error_code = code;
                r.members.clear();
                r.generation_id = -1;
            }
            ResponseKind::SyncGroup(r) => {
                r.error_code = code;
                r.assignment = Default::default();
            }
            ResponseKind::OffsetCommit(r) => {
                for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    p.error_code = code;
                }
            }
            ResponseKind::TxnOffsetCommit(r) => {
                for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    p.error_code = code;
                }
            }
            ResponseKind::OffsetDelete(r) => {
                r.error_code = code;
                r.topics.clear();
            }
            ResponseKind::DeleteGroups(r) => {
                for g in &mut r.results {
                    g.error_code = code;
                }
            }
            ResponseKind::InitProducerId(r) => {
                r.error_code = code;
                r.producer_id = kafka_protocol::messages::ProducerId(-1);
                r.producer_epoch = -1;
            }
            ResponseKind::EndTxn(r) => {
                r.error_code = code;
                r.producer_id = kafka_protocol::messages::ProducerId(-1);
                r.producer_epoch = -1;
            }
            ResponseKind::AddOffsetsToTxn(r) => r.error_code = code,
            ResponseKind::AddPartitionsToTxn(r) => {
                r.error_code = code;
                for p in r
                    .results_by_topic_v3_and_below
                    .iter_mut()
                    .chain(
                        r.results_by_transaction
                            .iter_mut()
                            .flat_map(|t| t.topic_results.iter_mut()),
                    )
                    .flat_map(|t| t.results_by_partition.iter_mut())
                {
                    p.partition_error_code = code;
                }
            }
            ResponseKind::LeaveGroup(r) => {
                r.error_code = code;
                r.members.clear();
            }
            ResponseKind::Heartbeat(r) => r.error_code = code,
            // Every response a coordinator parks on a write must be covered above: a failed
            // write answered as a success would tell a client its change happened.
            other => tracing::error!(response = ?other, "a failed write's answer carries no error"),
        }
        self
    }
}
