//! The transaction coordinator (KIP-98), sans-IO.
//!
//! One [`TxnMetadata`] per transactional id, stored in the internal topic `__transaction_state`
//! (partition [`partition_for`] of the id) as a [`StoreRecord::Transaction`]. Every state change
//! is persisted before it is answered. A transaction moves Empty → Ongoing (AddPartitionsToTxn,
//! AddOffsetsToTxn) → PrepareCommit / PrepareAbort (EndTxn, a timeout, or a new producer
//! instance fencing the old one) → CompleteCommit / CompleteAbort once the server wrote the
//! commit or abort marker to every partition of the transaction.
//!
//! The server drives it like the group coordinator: execute the returned [`TxnAction`]s in
//! order. [`TxnAction::WriteMarkers`] comes after the Persist of a Prepare state and must only
//! run once that record is durable (so a crash between the two finds the decision and finishes
//! it, never a marker without a decision); after the markers are written the server calls
//! [`TxnCoordinator::markers_written`], whose Persist records the Complete state.
//! After a restart, [`TxnCoordinator::load_partition`] hands back the markers of every
//! transaction that was prepared but not completed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::producer::ProducerIdAllocator;
use crate::store::{StoreRecord, TxnValue, partition_for};
use crate::{RequestContext, Response};

/// The internal topic holding transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's `transaction.max.timeout.ms` default.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

/// A transaction's state, with Kafka's names and codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxnState {
    /// No transaction in progress.
    Empty,
    /// Partitions were added; records may be written.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
    /// The transactional id expired.
    Dead,
}

impl TxnState {
    /// Code stored in `__transaction_state` (Kafka's).
    pub fn code(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
        }
    }

    /// The state of a stored code.
    pub fn from_code(code: u8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// Current producer id.
    pub producer_id: i64,
    /// Producer id before an epoch exhaustion moved to a new one (-1: none).
    pub last_producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
    /// Epoch before the last bump (-1: none).
    pub last_epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// State.
    pub state: TxnState,
    /// Partitions of the ongoing (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction started (-1: none).
    pub start_ms: i64,
    /// Last state change.
    pub update_ms: i64,
}

impl TxnMetadata {
    fn value(&self) -> TxnValue {
        TxnValue {
            producer_id: self.producer_id,
            last_producer_id: self.last_producer_id,
            producer_epoch: self.epoch,
            last_producer_epoch: self.last_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state.code(),
            partitions: self.partitions.iter().cloned().collect(),
            start_ms: self.start_ms,
            update_ms: self.update_ms,
        }
    }

    fn from_value(v: &TxnValue) -> Option<TxnMetadata> {
        Some(TxnMetadata {
            producer_id: v.producer_id,
            last_producer_id: v.last_producer_id,
            epoch: v.producer_epoch,
            last_epoch: v.last_producer_epoch,
            timeout_ms: v.timeout_ms,
            state: TxnState::from_code(v.state)?,
            partitions: v.partitions.iter().cloned().collect(),
            start_ms: v.start_ms,
            update_ms: v.update_ms,
        })
    }

    /// No transaction open or completing: the id may expire.
    fn is_idle(&self) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }

    /// Moves to the next epoch (or a new producer id when the epoch is exhausted, as Kafka).
    fn bump_epoch(&mut self, ids: &mut ProducerIdAllocator) -> Option<StoreRecord> {
        if self.epoch >= i16::MAX - 1 {
            let (id, block) = ids.allocate();
            self.last_producer_id = self.producer_id;
            self.last_epoch = self.epoch;
            self.producer_id = id;
            self.epoch = 0;
            block
        } else {
            self.last_epoch = self.epoch;
            self.epoch += 1;
            None
        }
    }
}

/// Settings of the transaction coordinator.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Partitions of `__transaction_state`.
    pub num_partitions: i32,
    /// Largest `transaction.timeout.ms` a producer may ask for.
    pub max_timeout_ms: i32,
    /// A transactional id idle this long (no transaction open) is forgotten (Kafka's
    /// `transactional.id.expiration.ms`, 7 days).
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            num_partitions: 50,
            max_timeout_ms: MAX_TIMEOUT_MS,
            id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Markers the server must write: one control batch per partition, as `producer_id` at
/// `producer_epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    /// The transaction.
    pub transactional_id: String,
    /// Producer id of the batches the markers close.
    pub producer_id: i64,
    /// Epoch the markers carry (a fence's bumped epoch fences the old producer everywhere).
    pub producer_epoch: i16,
    /// Commit (true) or abort.
    pub commit: bool,
    /// Every partition of the transaction.
    pub partitions: Vec<(String, i32)>,
}

/// Something the server must do for the transaction coordinator.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TxnAction {
    /// Append `record` to `partition` of `__transaction_state` (after `id_block`, if any, to
    /// the producer-id partition of `__consumer_offsets`); once durable, send `then`.
    Persist {
        /// Partition of `__transaction_state`.
        partition: i32,
        /// The transaction's new state.
        record: StoreRecord,
        /// A producer-id block that must be durable too.
        id_block: Option<StoreRecord>,
        /// Response to send once durable.
        then: Option<Response>,
    },
    /// Once the Persist before it is durable: write the markers, then call
    /// [`TxnCoordinator::markers_written`].
    WriteMarkers(MarkerJob),
    /// Send a response now.
    Respond(Response),
}

/// The sans-IO transaction coordinator. See the module docs.
#[derive(Debug, Default)]
pub struct TxnCoordinator {
    cfg: TxnConfig,
    txns: BTreeMap<String, TxnMetadata>,
    by_producer: HashMap<i64, String>,
    loaded: BTreeSet<i32>,
    /// InitProducerId requests parked until the transaction they ended completes: (request,
    /// its transaction timeout).
    waiting_inits: HashMap<String, (RequestContext, i32)>,
}

fn respond(
    ctx: &RequestContext,
    body: impl Into<kafka_protocol::messages::ResponseKind>,
) -> Response {
    Response {
        token: ctx.token,
        api_version: ctx.api_version,
        body: body.into(),
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH for clients older than KIP-588.
fn fenced(version: i16, first_version: i16) -> ResponseError {
    if version >= first_version {
        ResponseError::ProducerFenced
    } else {
        ResponseError::InvalidProducerEpoch
    }
}

impl TxnCoordinator {
    /// A coordinator that owns no partition yet.
    pub fn new(cfg: TxnConfig) -> TxnCoordinator {
        assert!(cfg.num_partitions > 0);
        TxnCoordinator {
            cfg,
            ..Default::default()
        }
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.cfg.num_partitions)
    }

    /// Settings.
    pub fn config(&self) -> &TxnConfig {
        &self.cfg
    }

    /// The state of one transactional id.
    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    /// Every transactional id this coordinator holds.
    pub fn all(&self) -> impl Iterator<Item = (&String, &TxnMetadata)> {
        self.txns.iter()
    }

    /// Whether this coordinator holds `transactional_id`'s partition (it can verify the id's
    /// producers; in cluster mode another node may be its coordinator).
    pub fn coordinates(&self, transactional_id: &str) -> bool {
        self.owns(transactional_id)
    }

    fn owns(&self, transactional_id: &str) -> bool {
        self.loaded.contains(&self.partition_for(transactional_id))
    }

    fn persist(
        &self,
        id: &str,
        id_block: Option<StoreRecord>,
        then: Option<Response>,
    ) -> TxnAction {
        TxnAction::Persist {
            partition: self.partition_for(id),
            record: StoreRecord::Transaction {
                transactional_id: id.to_string(),
                value: self.txns.get(id).map(TxnMetadata::value),
            },
            id_block,
            then,
        }
    }

    fn index(&mut self, id: &str) {
        if let Some(m) = self.txns.get(id) {
            if m.last_producer_id >= 0
                && self
                    .by_producer
                    .get(&m.last_producer_id)
                    .map(String::as_str)
                    == Some(id)
            {
                self.by_producer.remove(&m.last_producer_id);
            }
            self.by_producer.insert(m.producer_id, id.to_string());
        }
    }

    /// Loads one partition of `__transaction_state` from its records in log order. Returns
    /// the markers of transactions that were prepared but not completed: write them (their
    /// decision is durable), then call [`TxnCoordinator::markers_written`].
    pub fn load_partition<'r>(
        &mut self,
        partition: i32,
        records: impl IntoIterator<Item = &'r StoreRecord>,
    ) -> Vec<TxnAction> {
        let n = self.cfg.num_partitions;
        self.txns.retain(|id, _| partition_for(id, n) != partition);
        self.by_producer
            .retain(|_, id| partition_for(id, n) != partition);
        for r in records {
            let StoreRecord::Transaction {
                transactional_id,
                value,
            } = r
            else {
                continue;
            };
            match value.as_ref().and_then(TxnMetadata::from_value) {
                Some(m) => {
                    self.txns.insert(transactional_id.clone(), m);
                    self.index(transactional_id);
                }
                None => {
                    if let Some(m) = self.txns.remove(transactional_id) {
                        self.by_producer.remove(&m.producer_id);
                    }
                }
            }
        }
        self.loaded.insert(partition);
        self.txns
            .iter()
            .filter(|(id, m)| partition_for(id, n) == partition && m.state.is_prepare())
            .map(|(id, m)| {
                tracing::info!(transactional_id = %id, state = m.state.as_str(), "finishing a prepared transaction");
                TxnAction::WriteMarkers(MarkerJob {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    producer_epoch: m.epoch,
                    commit: m.state == TxnState::PrepareCommit,
                    partitions: m.partitions.iter().cloned().collect(),
                })
            })
            .collect()
    }

    /// Gives up a partition (leadership moved).
    pub fn unload_partition(&mut self, partition: i32) -> Vec<TxnAction> {
        let n = self.cfg.num_partitions;
        let mut out = Vec::new();
        let waiting: Vec<String> = self
            .waiting_inits
            .keys()
            .filter(|id| partition_for(id, n) == partition)
            .cloned()
            .collect();
        for id in waiting {
            let (ctx, _) = self.waiting_inits.remove(&id).expect("listed");
            out.push(TxnAction::Respond(respond(
                &ctx,
                InitProducerIdResponse::default()
                    .with_error_code(ResponseError::NotCoordinator.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )));
        }
        self.loaded.remove(&partition);
        self.txns.retain(|id, _| partition_for(id, n) != partition);
        self.by_producer
            .retain(|_, id| partition_for(id, n) != partition);
        out
    }

    /// Decides to abort the ongoing transaction of `id` at a bumped epoch (fencing the
    /// producer that runs it), and the markers that carry the decision.
    fn fence_and_abort(
        &mut self,
        id: &str,
        now_ms: i64,
        ids: &mut ProducerIdAllocator,
        out: &mut Vec<TxnAction>,
    ) {
        let m = self.txns.get_mut(id).expect("known transaction");
        let old_producer = m.producer_id;
        // The markers go out at the bumped epoch under the producer id of the batches.
        let block = if m.epoch >= i16::MAX - 1 {
            None
        } else {
            m.bump_epoch(ids)
        };
        m.state = TxnState::PrepareAbort;
        m.update_ms = now_ms;
        let job = MarkerJob {
            transactional_id: id.to_string(),
            producer_id: old_producer,
            producer_epoch: m.epoch,
            commit: false,
            partitions: m.partitions.iter().cloned().collect(),
        };
        tracing::info!(transactional_id = %id, producer_id = old_producer, epoch = m.epoch, "aborting the ongoing transaction and fencing its producer");
        out.push(self.persist(id, block, None));
        out.push(TxnAction::WriteMarkers(job));
    }

    /// InitProducerId with a transactional id (v0–v5): a new producer id, or the next epoch of
    /// the id's producer (fencing any older instance). An ongoing transaction is aborted first;
    /// the request is answered once that abort completes.
    pub fn init_producer_id(
        &mut self,
        ctx: &RequestContext,
        req: &InitProducerIdRequest,
        now_ms: i64,
        ids: &mut ProducerIdAllocator,
    ) -> Vec<TxnAction> {
        let id = req
            .transactional_id
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let answer = |e: Option<ResponseError>, pid: i64, epoch: i16| {
            respond(
                ctx,
                InitProducerIdResponse::default()
                    .with_error_code(e.map_or(0, |e| e.code()))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch),
            )
        };
        let fail = |e: ResponseError| vec![TxnAction::Respond(answer(Some(e), -1, -1))];
        if id.is_empty() {
            return fail(ResponseError::InvalidRequest);
        }
        if req.transaction_timeout_ms <= 0 || req.transaction_timeout_ms > self.cfg.max_timeout_ms {
            return fail(ResponseError::InvalidTransactionTimeout);
        }
        if !self.owns(&id) {
            return fail(ResponseError::NotCoordinator);
        }
        let mut out = Vec::new();
        let Some(m) = self.txns.get_mut(&id) else {
            let (pid, block) = ids.allocate();
            self.txns.insert(
                id.clone(),
                TxnMetadata {
                    producer_id: pid,
                    last_producer_id: -1,
                    epoch: 0,
                    last_epoch: -1,
                    timeout_ms: req.transaction_timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    update_ms: now_ms,
                },
            );
            self.index(&id);
            tracing::info!(transactional_id = %id, producer_id = pid, "new transactional producer");
            out.push(self.persist(&id, block, Some(answer(None, pid, 0))));
            return out;
        };
        // KIP-360: a producer that names its id and epoch must be the current one (or retry
        // the bump that made it current).
        if req.producer_id.0 >= 0 {
            let current = m.producer_id == req.producer_id.0 && m.epoch == req.producer_epoch;
            let retried = (m.last_producer_id == req.producer_id.0
                || (m.last_producer_id < 0 && m.producer_id == req.producer_id.0))
                && m.last_epoch == req.producer_epoch
                && m.state == TxnState::Empty;
            if retried {
                return vec![TxnAction::Respond(answer(None, m.producer_id, m.epoch))];
            }
            if !current {
                return fail(fenced(ctx.api_version, 4));
            }
        }
        match m.state {
            // Kafka answers CONCURRENT_TRANSACTIONS and lets the client retry; librdkafka
            // gives that up as an error of init_transactions(), so the request waits instead
            // for the ending transaction to complete (milliseconds here) and gets its epoch.
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                if self.waiting_inits.contains_key(&id) {
                    return fail(ResponseError::ConcurrentTransactions);
                }
                self.waiting_inits
                    .insert(id, (ctx.clone(), req.transaction_timeout_ms));
                Vec::new()
            }
            TxnState::Ongoing => {
                if self.waiting_inits.contains_key(&id) {
                    return fail(ResponseError::ConcurrentTransactions);
                }
                self.fence_and_abort(&id, now_ms, ids, &mut out);
                self.waiting_inits
                    .insert(id, (ctx.clone(), req.transaction_timeout_ms));
                out
            }
            TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort
            | TxnState::Dead => {
                let block = m.bump_epoch(ids);
                if req.producer_id.0 < 0 {
                    // A new instance, not a KIP-360 bump: no older epoch may claim to retry it.
                    m.last_epoch = -1;
                }
                m.state = TxnState::Empty;
                m.timeout_ms = req.transaction_timeout_ms;
                m.partitions.clear();
                m.start_ms = -1;
                m.update_ms = now_ms;
                let (pid, epoch) = (m.producer_id, m.epoch);
                self.index(&id);
                tracing::info!(transactional_id = %id, producer_id = pid, epoch, "transactional producer epoch bumped");
                out.push(self.persist(&id, block, Some(answer(None, pid, epoch))));
                out
            }
        }
    }

    /// The checks every request of a running producer passes: the coordinator owns the id,
    /// the producer id maps to it and the epoch is current.
    fn check_producer(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        fenced_error: ResponseError,
    ) -> Result<&TxnMetadata, ResponseError> {
        if !self.owns(id) {
            return Err(ResponseError::NotCoordinator);
        }
        let m = self
            .txns
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.epoch != epoch {
            return Err(fenced_error);
        }
        Ok(m)
    }

    /// [`TxnCoordinator::check_producer`], and no transaction of the id is completing.
    fn check_running(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        fenced_error: ResponseError,
    ) -> Result<(), ResponseError> {
        let m = self.check_producer(id, producer_id, epoch, fenced_error)?;
        if m.state.is_prepare() {
            Err(ResponseError::ConcurrentTransactions)
        } else {
            Ok(())
        }
    }

    /// Adds partitions to the ongoing transaction (starting one if none is).
    fn add(
        &mut self,
        id: &str,
        partitions: &[(String, i32)],
        now_ms: i64,
        then: Response,
    ) -> Vec<TxnAction> {
        let m = self.txns.get_mut(id).expect("checked");
        let new: Vec<_> = partitions
            .iter()
            .filter(|p| !m.partitions.contains(*p))
            .cloned()
            .collect();
        if m.state == TxnState::Ongoing && new.is_empty() {
            return vec![TxnAction::Respond(then)];
        }
        if m.state != TxnState::Ongoing {
            m.state = TxnState::Ongoing;
            m.start_ms = now_ms;
            m.partitions.clear();
        }
        m.partitions.extend(new);
        m.update_ms = now_ms;
        vec![self.persist(id, None, Some(then))]
    }

    /// AddPartitionsToTxn (v0–v3). `exists` tells whether a partition exists.
    pub fn add_partitions(
        &mut self,
        ctx: &RequestContext,
        req: &AddPartitionsToTxnRequest,
        now_ms: i64,
        exists: &dyn Fn(&str, i32) -> bool,
    ) -> Vec<TxnAction> {
        let id = req.v3_and_below_transactional_id.0.to_string();
        let requested: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect();
        let answer = |code: &dyn Fn(&str, i32) -> i16| {
            let mut by_topic: BTreeMap<&str, Vec<AddPartitionsToTxnPartitionResult>> =
                BTreeMap::new();
            for (t, p) in &requested {
                by_topic.entry(t.as_str()).or_default().push(
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code(t, *p)),
                );
            }
            respond(
                ctx,
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                    by_topic
                        .into_iter()
                        .map(|(t, r)| {
                            AddPartitionsToTxnTopicResult::default()
                                .with_name(TopicName(str(t)))
                                .with_results_by_partition(r)
                        })
                        .collect(),
                ),
            )
        };
        if requested.iter().any(|(t, p)| !exists(t, *p)) {
            // As Kafka: the unknown ones fail, the rest is not attempted.
            return vec![TxnAction::Respond(answer(&|t, p| {
                if exists(t, p) {
                    ResponseError::OperationNotAttempted.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                }
            }))];
        }
        let checked = self.check_running(
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            fenced(ctx.api_version, 2),
        );
        if let Err(e) = checked {
            return vec![TxnAction::Respond(answer(&|_, _| e.code()))];
        }
        let ok = answer(&|_, _| 0);
        self.add(&id, &requested, now_ms, ok)
    }

    /// AddOffsetsToTxn (v0–v3): the group's `__consumer_offsets` partition (`offsets_partition`)
    /// joins the transaction, so TxnOffsetCommit's offsets get its markers.
    pub fn add_offsets(
        &mut self,
        ctx: &RequestContext,
        req: &AddOffsetsToTxnRequest,
        offsets_topic: &str,
        offsets_partition: i32,
        now_ms: i64,
    ) -> Vec<TxnAction> {
        let id = req.transactional_id.0.to_string();
        let answer = |e: Option<ResponseError>| {
            respond(
                ctx,
                AddOffsetsToTxnResponse::default().with_error_code(e.map_or(0, |e| e.code())),
            )
        };
        let checked = self.check_running(
            &id,
            req.producer_id.0,
            req.producer_epoch,
            fenced(ctx.api_version, 2),
        );
        if let Err(e) = checked {
            return vec![TxnAction::Respond(answer(Some(e)))];
        }
        self.add(
            &id,
            &[(offsets_topic.to_string(), offsets_partition)],
            now_ms,
            answer(None),
        )
    }

    /// EndTxn (v0–v3): commit or abort the ongoing transaction. Answered once the decision is
    /// durable; the markers follow.
    pub fn end_txn(
        &mut self,
        ctx: &RequestContext,
        req: &EndTxnRequest,
        now_ms: i64,
    ) -> Vec<TxnAction> {
        let id = req.transactional_id.0.to_string();
        let answer = |e: Option<ResponseError>| {
            respond(
                ctx,
                EndTxnResponse::default()
                    .with_error_code(e.map_or(0, |e| e.code()))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
        };
        let state = match self.check_producer(
            &id,
            req.producer_id.0,
            req.producer_epoch,
            fenced(ctx.api_version, 2),
        ) {
            Ok(m) => m.state,
            Err(e) => return vec![TxnAction::Respond(answer(Some(e)))],
        };
        let commit = req.committed;
        let refuse = |e| vec![TxnAction::Respond(answer(Some(e)))];
        match (state, commit) {
            (TxnState::Ongoing, _) => {
                let m = self.txns.get_mut(&id).expect("checked");
                m.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                m.update_ms = now_ms;
                let job = MarkerJob {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    producer_epoch: m.epoch,
                    commit,
                    partitions: m.partitions.iter().cloned().collect(),
                };
                tracing::debug!(transactional_id = %id, commit, partitions = job.partitions.len(), "ending transaction");
                vec![
                    self.persist(&id, None, Some(answer(None))),
                    TxnAction::WriteMarkers(job),
                ]
            }
            // A retry of an EndTxn that completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                vec![TxnAction::Respond(answer(None))]
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                refuse(ResponseError::ConcurrentTransactions)
            }
            _ => refuse(ResponseError::InvalidTxnState),
        }
    }

    /// The markers of a [`MarkerJob`] are written: the transaction completes.
    pub fn markers_written(
        &mut self,
        job: &MarkerJob,
        now_ms: i64,
        ids: &mut ProducerIdAllocator,
    ) -> Vec<TxnAction> {
        let Some(m) = self.txns.get_mut(&job.transactional_id) else {
            return Vec::new();
        };
        let expected = if job.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if m.state != expected || m.epoch != job.producer_epoch {
            return Vec::new();
        }
        m.state = if job.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.start_ms = -1;
        m.update_ms = now_ms;
        let mut out = vec![self.persist(&job.transactional_id, None, None)];
        if let Some((ctx, timeout_ms)) = self.waiting_inits.remove(&job.transactional_id) {
            // The parked InitProducerId: the next epoch, as its retry would have got.
            let m = self.txns.get_mut(&job.transactional_id).expect("known");
            let block = m.bump_epoch(ids);
            m.last_epoch = -1; // the epoch before was the fence's: nobody's to retry
            m.state = TxnState::Empty;
            m.timeout_ms = timeout_ms;
            m.update_ms = now_ms;
            let (pid, epoch) = (m.producer_id, m.epoch);
            self.index(&job.transactional_id);
            let answer = respond(
                &ctx,
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch),
            );
            out.push(self.persist(&job.transactional_id, block, Some(answer)));
        }
        out
    }

    /// Aborts (and fences) every transaction past its timeout.
    pub fn tick(&mut self, now_ms: i64, ids: &mut ProducerIdAllocator) -> Vec<TxnAction> {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                m.state == TxnState::Ongoing
                    && now_ms >= m.start_ms.saturating_add(m.timeout_ms as i64)
                    && self.owns(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in expired {
            tracing::info!(transactional_id = %id, "transaction timed out");
            self.fence_and_abort(&id, now_ms, ids, &mut out);
        }
        let idle: Vec<String> = self
            .txns
            .iter()
            .filter(|(id, m)| {
                m.is_idle()
                    && now_ms >= m.update_ms.saturating_add(self.cfg.id_expiration_ms)
                    && self.owns(id)
                    && !self.waiting_inits.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            tracing::info!(transactional_id = %id, "transactional id expired");
            if let Some(m) = self.txns.remove(&id) {
                self.by_producer.remove(&m.producer_id);
            }
            out.push(self.persist(&id, None, None)); // a tombstone
        }
        out
    }

    /// When [`TxnCoordinator::tick`] next has work.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.txns
            .values()
            .filter_map(|m| match m.state {
                TxnState::Ongoing => Some(m.start_ms.saturating_add(m.timeout_ms as i64)),
                _ if m.is_idle() => Some(m.update_ms.saturating_add(self.cfg.id_expiration_ms)),
                _ => None,
            })
            .min()
    }

    /// KIP-890 verification of a transactional produce: the partition must be part of the
    /// producer's ongoing transaction, at its current epoch.
    pub fn verify(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ResponseError> {
        let m = self
            .by_producer
            .get(&producer_id)
            .and_then(|id| self.txns.get(id))
            .filter(|m| m.producer_id == producer_id)
            .ok_or(ResponseError::InvalidTxnState)?;
        if epoch < m.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if epoch > m.epoch
            || m.state != TxnState::Ongoing
            || !m.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// DescribeTransactions (v0).
    pub fn describe(&self, ctx: &RequestContext, req: &DescribeTransactionsRequest) -> Response {
        let states = req
            .transactional_ids
            .iter()
            .map(|tid| {
                let id = tid.0.as_str();
                let s = TransactionState::default().with_transactional_id(tid.clone());
                if !self.owns(id) {
                    return s.with_error_code(ResponseError::NotCoordinator.code());
                }
                let Some(m) = self.txns.get(id) else {
                    return s.with_error_code(ResponseError::TransactionalIdNotFound.code());
                };
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    topics.entry(t.as_str()).or_default().push(*p);
                }
                s.with_transaction_state(str(m.state.as_str()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(str(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            })
            .collect();
        respond(
            ctx,
            DescribeTransactionsResponse::default().with_transaction_states(states),
        )
    }

    /// ListTransactions (v0–v1): filtered by state, producer id and (v1) running time.
    pub fn list(
        &self,
        ctx: &RequestContext,
        req: &ListTransactionsRequest,
        now_ms: i64,
    ) -> Response {
        let known = [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
            TxnState::Dead,
        ];
        let mut unknown = Vec::new();
        let mut states = BTreeSet::new();
        for f in &req.state_filters {
            match known.iter().find(|s| s.as_str() == f.as_str()) {
                Some(s) => {
                    states.insert(*s);
                }
                None => unknown.push(f.clone()),
            }
        }
        let listed = self
            .txns
            .iter()
            .filter(|(id, _)| self.owns(id))
            .filter(|(_, m)| req.state_filters.is_empty() || states.contains(&m.state))
            .filter(|(_, m)| {
                req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id)
            })
            .filter(|(_, m)| {
                req.duration_filter < 0
                    || (m.state == TxnState::Ongoing
                        && now_ms.saturating_sub(m.start_ms) >= req.duration_filter)
            })
            .map(|(id, m)| {
                ListedState::default()
                    .with_transactional_id(TransactionalId(str(id)))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(str(m.state.as_str()))
            })
            .collect();
        respond(
            ctx,
            ListTransactionsResponse::default()
                .with_unknown_state_filters(unknown)
                .with_transaction_states(listed),
        )
    }
}

#[cfg(test)]
mod tests;
