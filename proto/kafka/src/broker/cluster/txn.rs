//! Transactions in cluster mode.
//!
//! The coordinator of a transactional id is the leader of its `__transaction_state` partition:
//! it loads the partition once the leader's earlier terms are applied, and every state change
//! goes through the partition's Raft group before it is answered (committed there means durable
//! on a majority). A decision's markers reach each partition of the transaction through that
//! partition's leader, as Kafka's coordinator sends them: a WriteTxnMarkers request (to this node
//! itself without a round trip), which the leader turns into a [`MarkerEntry`] of the partition's
//! group. Once every partition's marker applied, the transaction completes. A coordinator that
//! loses its partition drops its rounds; the next leader finds the prepared decision in the log
//! and sends the markers again (a marker written twice is harmless: the second closes nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, RequestKind,
    ResponseKind, TopicName, TransactionalId, TxnOffsetCommitRequest, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use sluice_coordinator::{
    MarkerJob, RequestContext as CoordContext, Response, StoreRecord, TRANSACTION_STATE_TOPIC,
    TxnAction,
};
use tracing::{debug, info, warn};

use super::super::groups::{self, encode_store_batch};
use super::super::{Broker, OFFSETS_TOPIC, Reply, str};
use super::{BrokerAddr, Wait};
use crate::cluster::MarkerEntry;

/// The WriteTxnMarkers version coordinators send (the only one Kafka defines today).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// The coordinator epoch an operator's abort marker is written with (authorization sets it):
/// it is fenced by no coordinator and fences none, whatever epoch the client sent.
pub const OPERATOR_EPOCH: i32 = i32::MIN;
/// Longest pause between two attempts of a marker round.
const BACKOFF_MAX_MS: u64 = 1_000;

/// A request for the runtime to send to `node`'s replica listener (WriteTxnMarkers from a
/// coordinator, AddPartitionsToTxn verification from a partition leader); its answer (or why
/// none came) goes back through [`Broker::peer_response`].
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// Identifies the request in [`Broker::peer_response`].
    pub id: u64,
    /// The node it goes to.
    pub node: i32,
    /// That node's replica listener.
    pub host: String,
    /// That node's replica listener.
    pub port: i32,
    /// The API and version of `request`.
    pub api_key: ApiKey,
    /// The API and version of `request`.
    pub version: i16,
    /// The request.
    pub request: RequestKind,
}

/// The AddPartitionsToTxn version partition leaders verify with (KIP-890: `verify_only`).
const VERIFY_VERSION: i16 = 4;

/// What a partition leader asks a transaction's coordinator on another node before it lets a
/// producer's first transactional batch into a partition.
#[derive(Debug, Clone)]
pub(in crate::broker) struct RemoteCheck {
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
}

/// One decision's markers on their way to every partition of the transaction.
#[derive(Debug)]
struct Round {
    job: MarkerJob,
    /// Partitions whose marker has not applied yet.
    pending: BTreeSet<(String, i32)>,
    /// Requests of this round awaiting an answer.
    in_flight: usize,
    /// When it is next sent (the monotonic clock).
    retry_at: u64,
    backoff_ms: u64,
}

/// Cluster-mode transaction state outside the coordinator proper.
#[derive(Debug, Default)]
pub(in crate::broker) struct ClusterTxn {
    rounds: BTreeMap<u64, Round>,
    next_id: u64,
    outbox: Vec<PeerRequest>,
    /// Produce partitions waiting for their coordinator's verification, by request id.
    verifying: HashMap<u64, super::produce::PartitionProduce>,
    /// TxnOffsetCommit requests waiting for their coordinator's verification.
    verifying_offsets: HashMap<u64, (CoordContext, TxnOffsetCommitRequest)>,
    /// Kafka's verification guard: each verification out, by request id, with the
    /// (partition group, producer) it speaks for and whether a marker for that producer was
    /// proposed there since it was asked. Such an answer describes the transaction the marker
    /// ends, so it is not trusted: a late batch of it must not open a transaction no
    /// coordinator knows.
    guards: HashMap<u64, (u64, i64, bool)>,
    /// Leader side: the newest coordinator epoch of a marker proposed per (partition group,
    /// producer) and not applied yet, so a deposed coordinator's marker arriving meanwhile is
    /// fenced before it is proposed behind it.
    proposed_epochs: HashMap<(u64, i64), i32>,
    /// Requests sent: id → (round, partitions it carries).
    sent: HashMap<u64, (u64, Vec<(String, i32)>)>,
    /// WriteTxnMarkers requests this node serves for itself: token → request id.
    local: HashMap<u64, u64>,
    /// Parked WriteTxnMarkers requests: response so far, partitions outstanding.
    parked: HashMap<u64, (WriteTxnMarkersResponse, usize)>,
    /// State writes in flight (by proposal sequence): their `__transaction_state` partition
    /// and the marker jobs they decide. Kept when a write's wait expires (the entry may still
    /// commit), dropped when it is refused or dropped.
    after: HashMap<u64, (i32, Vec<MarkerJob>)>,
    /// Partitions whose memory holds a write that never reached the log: reloaded once no
    /// write of theirs is in flight.
    reload: BTreeSet<i32>,
    /// When the tick next retries `reload` (a log that cannot be read is retried each second),
    /// on the monotonic clock.
    reload_at: u64,
    /// Leader side: the transactional id a producer's open transaction in a partition group
    /// was verified for, until a marker for the producer is proposed there. Later batches of
    /// that transaction pass without asking the coordinator again.
    verified: HashMap<(u64, i64), String>,
}

impl ClusterTxn {
    /// A marker for `producer_id` in `group` was proposed or applied: the verifications out
    /// for it there describe the transaction the marker ends (Kafka's verification guard).
    fn trip_guards(&mut self, group: u64, producer_id: i64) {
        for (g, pid, stale) in self.guards.values_mut() {
            *stale |= (*g, *pid) == (group, producer_id);
        }
    }
}

impl ClusterTxn {
    /// Whether `seq` is a transaction state write still awaited.
    pub(super) fn awaits(&self, seq: u64) -> bool {
        self.after.contains_key(&seq)
    }
}

/// What became of a transaction state write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateWrite {
    /// Committed and appended: answer, and send the markers it decided.
    Applied,
    /// Committed but refused by the log (memory holds what the log does not).
    Refused,
    /// Dropped before it entered the log (leadership lost or moving).
    Dropped,
    /// Not committed within the wait: the client hears so, the markers wait for the entry.
    TimedOut,
}

impl Broker {
    /// Coordinator of a transactional id: the leader of its `__transaction_state` partition.
    /// Before the topic exists, asks for it and answers COORDINATOR_NOT_AVAILABLE (clients
    /// retry).
    pub(in crate::broker) fn txn_coordinator_node(
        &self,
        key: &str,
    ) -> Result<BrokerAddr, ResponseError> {
        let n = self.txn.config().num_partitions;
        let c = self.cluster.as_ref().expect("cluster");
        let Some(t) = c.meta.topics.get(TRANSACTION_STATE_TOPIC) else {
            c.txn_topic_wanted.set(true);
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        if t.partitions.len() as i32 != n {
            warn!(
                node_id = c.node_id,
                partitions = t.partitions.len(),
                expected = n,
                "{TRANSACTION_STATE_TOPIC} has an unexpected partition count"
            );
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let p = sluice_coordinator::partition_for(key, n);
        let (leader, _) = c.leader_of(TRANSACTION_STATE_TOPIC, p);
        c.meta
            .broker_addr(leader, c.listener.as_deref())
            .map(|(h, port)| (leader, h, port))
            .ok_or(ResponseError::CoordinatorNotAvailable)
    }

    /// Whether a transaction request can be served here at all: the topic exists (else it is
    /// asked for).
    pub(in crate::broker) fn txn_topic_ready(&mut self) -> bool {
        let Some(c) = &mut self.cluster else {
            return true;
        };
        if c.meta.topics.contains_key(TRANSACTION_STATE_TOPIC) {
            return true;
        }
        c.txn_topic_wanted.set(true);
        false
    }

    /// Creates `__transaction_state` once a transaction request asked for it (through
    /// `__meta`, whose leader this proposal is forwarded to; a second create is refused there).
    pub(super) fn want_txn_topic(&mut self, meta_caught_up: bool, now_ms: i64) {
        // A partition whose load failed, or whose memory went ahead of its log, is loaded
        // again (once no write of it is in flight).
        if let Some(c) = &mut self.cluster
            && !c.txn.reload.is_empty()
            && c.mono >= c.txn.reload_at
        {
            c.txn.reload_at = c.mono + 1_000;
            self.reload_quiet_partitions(now_ms);
        }
        let n = self.txn.config().num_partitions;
        let segment_bytes = self.config.offsets_segment_bytes;
        let Some(c) = &mut self.cluster else { return };
        if !c.txn_topic_wanted.get()
            || !meta_caught_up
            || c.meta_leader.0 <= 0
            || !super::due(c.last_txn_create, c.mono, 2000)
        {
            return;
        }
        if c.meta.topics.contains_key(TRANSACTION_STATE_TOPIC) {
            c.txn_topic_wanted.set(false);
            return;
        }
        c.last_txn_create = Some(c.mono);
        let rf = c.meta.members().len().min(3) as i32;
        let id = super::super::random_uuid(&mut self.rng);
        info!(
            node_id = self.config.node_id,
            partitions = n,
            replication_factor = rf,
            "creating {TRANSACTION_STATE_TOPIC}"
        );
        self.propose_meta(crate::cluster::MetaCommand::CreateTopic {
            request: None,
            name: TRANSACTION_STATE_TOPIC.into(),
            id,
            partitions: n,
            replication_factor: rf,
            configs: super::offsets_topic_configs(segment_bytes),
            assignment: None,
        });
    }

    /// Executes transaction coordinator actions in cluster mode; returns the reply for
    /// `current` when it is answered at once.
    pub(in crate::broker) fn execute_txn_cluster(
        &mut self,
        actions: Vec<TxnAction>,
        current: Option<u64>,
        now_ms: i64,
    ) -> Option<Reply> {
        let mut mine = None;
        let mut last_seq = None;
        let mut decision_failed = false;
        for action in actions {
            match action {
                TxnAction::Respond(r) => {
                    if let Some(reply) = self.answer_now(current, r.token, r.body) {
                        mine = Some(reply);
                    }
                }
                // Cluster producer ids come from a range unique to the node: no block record.
                TxnAction::Persist {
                    partition,
                    record,
                    then,
                    ..
                } => match self.propose_txn_state(partition, &record, then.map(Box::new), now_ms) {
                    // A WriteMarkers follows its own decision's Persist.
                    Ok(seq) => {
                        last_seq = Some(seq);
                        decision_failed = false;
                    }
                    Err(then) => {
                        decision_failed = true;
                        // Memory holds what was not proposed: reload the partition to drop it
                        // (once its writes in flight are in the log).
                        if let Some(c) = &mut self.cluster {
                            c.txn.reload.insert(partition);
                        }
                        self.reload_quiet_partitions(now_ms);
                        if let Some(r) = then {
                            let token = r.token;
                            let body = (*r).into_error(ResponseError::NotCoordinator).body;
                            if let Some(reply) = self.answer_now(current, token, body) {
                                mine = Some(reply);
                            }
                        }
                    }
                },
                TxnAction::WriteMarkers(_) if decision_failed => {}
                TxnAction::WriteMarkers(job) => match last_seq {
                    // Sent once the decision is committed.
                    Some(seq) => {
                        let c = self.cluster.as_mut().expect("cluster");
                        if let Some((_, jobs)) = c.txn.after.get_mut(&seq) {
                            jobs.push(job);
                        }
                    }
                    // A decision found in the log at load: committed already.
                    None => self.start_marker_round(job),
                },
            }
        }
        self.drive_marker_rounds(now_ms);
        self.deliver_finished();
        mine
    }

    /// Proposes a transaction state record to its `__transaction_state` partition; the
    /// response waits until it applies. `Err` (with the response) when this node does not
    /// lead the partition.
    fn propose_txn_state(
        &mut self,
        partition: i32,
        record: &StoreRecord,
        then: Option<Box<Response>>,
        now_ms: i64,
    ) -> Result<u64, Option<Box<Response>>> {
        if self.storage_failure.is_some() {
            return Err(then);
        }
        let Ok(batch) = encode_store_batch(&[record], None, now_ms) else {
            return Err(then);
        };
        let Some(c) = &mut self.cluster else {
            return Err(then);
        };
        let Some(group) = c
            .meta
            .partition(TRANSACTION_STATE_TOPIC, partition)
            .map(|p| p.group)
        else {
            return Err(then);
        };
        if !c.is_local_leader(group) {
            return Err(then);
        }
        let (seq, _) = c.propose_entry(group, now_ms, &batch, true);
        c.waits.insert(
            seq,
            Wait::TxnState {
                group,
                response: then,
                since: c.mono,
            },
        );
        c.txn.after.insert(seq, (partition, Vec::new()));
        Ok(seq)
    }

    /// A transaction state write applied, failed or timed out: its response goes out, and
    /// the markers it decided start once it is in the log (and only then).
    pub(super) fn txn_state_done(
        &mut self,
        seq: u64,
        response: Option<Box<Response>>,
        outcome: StateWrite,
        now_ms: i64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        let error = match outcome {
            StateWrite::Applied => None,
            StateWrite::Refused | StateWrite::TimedOut => {
                Some(ResponseError::CoordinatorNotAvailable)
            }
            StateWrite::Dropped => Some(ResponseError::NotCoordinator),
        };
        if let Some(r) = response {
            let token = r.token;
            let body = match error {
                None => r.body,
                Some(e) => (*r).into_error(e).body,
            };
            c.finished.push((token, body));
        }
        if outcome == StateWrite::TimedOut {
            return; // the entry may still commit: its markers wait for it
        }
        let Some((partition, jobs)) = c.txn.after.remove(&seq) else {
            return;
        };
        match outcome {
            StateWrite::Applied => {
                for job in jobs {
                    self.start_marker_round(job);
                }
                self.drive_marker_rounds(now_ms);
            }
            _ => {
                let c = self.cluster.as_mut().expect("cluster");
                c.txn.reload.insert(partition);
                self.reload_quiet_partitions(now_ms);
            }
        }
    }

    /// Reloads the partitions marked for it that have no state write in flight any more.
    fn reload_quiet_partitions(&mut self, now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        let busy: BTreeSet<i32> = c.txn.after.values().map(|(p, _)| *p).collect();
        let due: Vec<i32> = c.txn.reload.difference(&busy).copied().collect();
        for p in due {
            let c = self.cluster.as_mut().expect("cluster");
            c.txn.reload.remove(&p);
            warn!(
                node_id = c.node_id,
                partition = p,
                "a transaction state write did not reach the log: reloading the partition"
            );
            self.reload_txn_partition(p, now_ms);
        }
    }

    fn start_marker_round(&mut self, job: MarkerJob) {
        let c = self.cluster.as_mut().expect("cluster");
        c.txn.next_id += 1;
        let id = c.txn.next_id;
        debug!(node_id = c.node_id, transactional_id = %job.transactional_id, commit = job.commit, partitions = job.partitions.len(), "writing transaction markers");
        c.txn.rounds.insert(
            id,
            Round {
                pending: job.partitions.iter().cloned().collect(),
                job,
                in_flight: 0,
                retry_at: c.mono,
                backoff_ms: 50,
            },
        );
    }

    /// Sends the markers of every round that is due, and completes the rounds whose markers
    /// all applied.
    pub(super) fn drive_marker_rounds(&mut self, now_ms: i64) {
        let n = self.txn.config().num_partitions;
        let Some(c) = &mut self.cluster else { return };
        let me = c.node_id;
        let now = c.mono;
        let mut local = Vec::new();
        let mut done = Vec::new();
        let due: Vec<u64> = c
            .txn
            .rounds
            .iter()
            .filter(|(_, r)| r.in_flight == 0 && (r.pending.is_empty() || r.retry_at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let mut round = c.txn.rounds.remove(&id).expect("listed");
            // Partitions of deleted topics need no marker.
            round
                .pending
                .retain(|(t, p)| c.meta.partition(t, *p).is_some());
            if round.pending.is_empty() {
                done.push(round.job);
                continue;
            }
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            let mut leaderless = false;
            for (t, p) in &round.pending {
                match c.leader_of(t, *p).0 {
                    l if l > 0 => by_leader.entry(l).or_default().push((t.clone(), *p)),
                    _ => leaderless = true,
                }
            }
            if leaderless {
                round.retry_at = now + round.backoff_ms;
                round.backoff_ms = (round.backoff_ms * 2).min(BACKOFF_MAX_MS);
            }
            // This coordinator's epoch: the term of its `__transaction_state` partition.
            let coordinator_epoch = c
                .meta
                .partition(
                    TRANSACTION_STATE_TOPIC,
                    sluice_coordinator::partition_for(&round.job.transactional_id, n),
                )
                .and_then(|mp| c.roles.get(&mp.group))
                .map_or(0, |r| i32::try_from(r.term).unwrap_or(i32::MAX));
            for (node, parts) in by_leader {
                let request = markers_request(&round.job, &parts, coordinator_epoch);
                let addr = c
                    .meta
                    .listeners
                    .get(&node)
                    .and_then(|l| l.get(crate::security::REPLICA_LISTENER))
                    .cloned();
                if node != me && addr.is_none() {
                    round.retry_at = now + round.backoff_ms;
                    continue;
                }
                c.txn.next_id += 1;
                let rid = c.txn.next_id;
                round.in_flight += 1;
                c.txn.sent.insert(rid, (id, parts));
                if node == me {
                    local.push((rid, request));
                } else {
                    let (host, port) = addr.expect("checked");
                    c.txn.outbox.push(PeerRequest {
                        id: rid,
                        node,
                        host,
                        port,
                        api_key: ApiKey::WriteTxnMarkers,
                        version: WRITE_TXN_MARKERS_VERSION,
                        request: RequestKind::WriteTxnMarkers(request),
                    });
                }
            }
            c.txn.rounds.insert(id, round);
        }
        for (rid, request) in local {
            let token = self.new_token();
            let c = self.cluster.as_mut().expect("cluster");
            c.txn.local.insert(token, rid);
            if let Some(resp) = self.write_txn_markers(token, request, now_ms) {
                let c = self.cluster.as_mut().expect("cluster");
                c.txn.local.remove(&token);
                self.marker_response(rid, Ok(resp), now_ms);
            }
        }
        for job in done {
            debug!(node_id = self.config.node_id, transactional_id = %job.transactional_id, commit = job.commit, "transaction markers written");
            let actions = self
                .txn
                .markers_written(&job, now_ms, &mut self.producer_ids);
            self.execute_txn_cluster(actions, None, now_ms);
        }
    }

    /// Requests to send to other nodes.
    pub fn take_peer_requests(&mut self) -> Vec<PeerRequest> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.txn.outbox))
            .unwrap_or_default()
    }

    /// Whether a [`PeerRequest`] is still wanted: a marker request of a round this node gave
    /// up (it lost its coordinator partition) must not be sent late.
    pub fn peer_request_wanted(&self, id: u64) -> bool {
        let Some(c) = &self.cluster else {
            return false;
        };
        c.txn.verifying.contains_key(&id)
            || c.txn.verifying_offsets.contains_key(&id)
            || c.txn
                .sent
                .get(&id)
                .is_some_and(|(round, _)| c.txn.rounds.contains_key(round))
    }

    /// The answer to a [`PeerRequest`] (`Err`: none came, e.g. the node is down).
    pub fn peer_response(&mut self, id: u64, result: Result<ResponseKind, String>, now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        c.clock_ms = now_ms;
        let stale = c.txn.guards.remove(&id).is_some_and(|(_, _, stale)| stale);
        // Only a yes can be stale: a refusal (a fenced zombie's, say) stands as it came.
        let result = if stale && confirms(&result) {
            debug!(
                node_id = c.node_id,
                "a marker ended the transaction while it was verified: refused"
            );
            Ok(guard_tripped())
        } else {
            result
        };
        if let Some(step) = c.txn.verifying.remove(&id) {
            self.verified(step, result, now_ms);
            self.deliver_finished();
            return;
        }
        if let Some((cctx, req)) = c.txn.verifying_offsets.remove(&id) {
            let p = self.coordinator.partition_for(req.group_id.0.as_str());
            let code = verification_code(&result, OFFSETS_TOPIC, p);
            if code == 0 {
                let actions = self.txn_offset_commit_known(&cctx, req, now_ms);
                self.execute(actions, None, now_ms);
            } else {
                let e =
                    ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
                debug!(node_id = self.config.node_id, error = ?e, "TxnOffsetCommit refused by its coordinator");
                let body = super::super::transactions::txn_error(
                    RequestKind::TxnOffsetCommit(req),
                    offsets_verification_error(e),
                );
                self.answer_now(None, cctx.token, body);
            }
            self.deliver_finished();
            return;
        }
        let result = result.and_then(|r| match r {
            ResponseKind::WriteTxnMarkers(r) => Ok(r),
            other => Err(format!("not a WriteTxnMarkers response: {other:?}")),
        });
        self.marker_response(id, result, now_ms);
    }

    /// The answer to a WriteTxnMarkers request.
    fn marker_response(
        &mut self,
        id: u64,
        result: Result<WriteTxnMarkersResponse, String>,
        now_ms: i64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        let Some((round_id, parts)) = c.txn.sent.remove(&id) else {
            return;
        };
        let Some(round) = c.txn.rounds.get_mut(&round_id) else {
            return; // the coordinator gave the transaction up meanwhile
        };
        round.in_flight = round.in_flight.saturating_sub(1);
        let mut failed = None;
        let mut fenced = false;
        match result {
            Ok(resp) => {
                for m in &resp.markers {
                    for t in &m.topics {
                        for p in &t.partitions {
                            let key = (t.name.0.to_string(), p.partition_index);
                            fenced |=
                                p.error_code == ResponseError::TransactionCoordinatorFenced.code();
                            // A newer producer epoch was written there: a fence's abort
                            // already ended this transaction in that partition (as Kafka).
                            if p.error_code == 0
                                || p.error_code == ResponseError::InvalidProducerEpoch.code()
                            {
                                round.pending.remove(&key);
                            } else {
                                failed = Some(format!(
                                    "{}-{}: {:?}",
                                    key.0,
                                    key.1,
                                    ResponseError::try_from_code(p.error_code)
                                ));
                            }
                        }
                    }
                }
                if failed.is_none() && parts.iter().any(|k| round.pending.contains(k)) {
                    failed = Some("the answer left partitions out".to_string());
                }
            }
            Err(e) => failed = Some(e),
        }
        if fenced {
            // A newer coordinator wrote for this producer: this one lost its partition.
            warn!(node_id = c.node_id, transactional_id = %round.job.transactional_id, "a newer transaction coordinator took over: giving up its markers here");
            c.txn.rounds.remove(&round_id);
            return;
        }
        if let Some(why) = failed {
            debug!(node_id = c.node_id, transactional_id = %round.job.transactional_id, reason = %why, "transaction markers not written yet; retrying");
            round.retry_at = c.mono + round.backoff_ms;
            round.backoff_ms = (round.backoff_ms * 2).min(BACKOFF_MAX_MS);
        } else {
            round.backoff_ms = 50;
        }
        self.drive_marker_rounds(now_ms);
        self.deliver_finished();
    }

    /// WriteTxnMarkers (from a coordinator, or this node's own): each partition's marker is
    /// proposed to its group; answered once all applied (`None`: parked under `token`).
    pub(in crate::broker) fn write_txn_markers(
        &mut self,
        token: u64,
        req: WriteTxnMarkersRequest,
        now_ms: i64,
    ) -> Option<WriteTxnMarkersResponse> {
        let mut resp = WriteTxnMarkersResponse::default();
        let mut outstanding = 0usize;
        for (mi, m) in req.markers.iter().enumerate() {
            let mut result = WritableTxnMarkerResult::default().with_producer_id(m.producer_id);
            for (ti, t) in m.topics.iter().enumerate() {
                let name = t.name.0.to_string();
                let mut topic = WritableTxnMarkerTopicResult::default().with_name(t.name.clone());
                for (pi, p) in t.partition_indexes.iter().enumerate() {
                    let error = (|| {
                        if self.storage_failure.is_some() {
                            return Err(ResponseError::KafkaStorageError);
                        }
                        let c = self.cluster.as_ref().expect("cluster");
                        let group = c
                            .meta
                            .partition(&name, *p)
                            .map(|mp| mp.group)
                            .ok_or(ResponseError::UnknownTopicOrPartition)?;
                        self.check_leader(&name, *p).map_err(|h| h.error)?;
                        // The fence is decided from the producer table: not before the earlier
                        // terms' markers in the log applied (the coordinator retries).
                        if !c.leader_caught_up(group) {
                            return Err(ResponseError::NotLeaderOrFollower);
                        }
                        self.marker_fenced(
                            (&name, *p),
                            group,
                            (m.producer_id.0, m.producer_epoch),
                            m.coordinator_epoch,
                        )?;
                        Ok(group)
                    })();
                    let code = match error {
                        Ok(group) => {
                            // An operator's abort keeps the producer's coordinator epoch,
                            // resolved here so every replica writes the same record.
                            let coordinator_epoch = if m.coordinator_epoch == OPERATOR_EPOCH {
                                self.producers
                                    .get(&(name.clone(), *p))
                                    .map_or(-1, |t| t.coordinator_epoch_of(m.producer_id.0))
                            } else {
                                m.coordinator_epoch
                            };
                            let c = self.cluster.as_mut().expect("cluster");
                            let seq = c.propose_marker(
                                group,
                                now_ms,
                                (m.producer_id.0, m.producer_epoch),
                                m.transaction_result,
                                coordinator_epoch,
                            );
                            c.waits.insert(
                                seq,
                                Wait::Marker {
                                    token,
                                    slot: (mi, ti, pi),
                                    group,
                                    since: c.mono,
                                },
                            );
                            outstanding += 1;
                            0
                        }
                        Err(e) => e.code(),
                    };
                    topic.partitions.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(*p)
                            .with_error_code(code),
                    );
                }
                result.topics.push(topic);
            }
            resp.markers.push(result);
        }
        if outstanding == 0 {
            return Some(resp);
        }
        let c = self.cluster.as_mut().expect("cluster");
        c.txn.parked.insert(token, (resp, outstanding));
        None
    }

    /// One partition of a parked WriteTxnMarkers request is answered (`code` 0: written).
    pub(super) fn marker_slot_done(
        &mut self,
        token: u64,
        slot: (usize, usize, usize),
        code: i16,
        now_ms: i64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        let Some((resp, outstanding)) = c.txn.parked.get_mut(&token) else {
            return;
        };
        if let Some(p) = resp
            .markers
            .get_mut(slot.0)
            .and_then(|m| m.topics.get_mut(slot.1))
            .and_then(|t| t.partitions.get_mut(slot.2))
        {
            p.error_code = code;
        }
        *outstanding -= 1;
        if *outstanding > 0 {
            return;
        }
        let (resp, _) = c.txn.parked.remove(&token).expect("present");
        match c.txn.local.remove(&token) {
            Some(rid) => self.marker_response(rid, Ok(resp), now_ms),
            None => c
                .finished
                .push((token, ResponseKind::WriteTxnMarkers(resp))),
        }
    }

    /// Why the leader refuses to propose a marker of `(producer id, epoch)` from a coordinator
    /// at `coordinator_epoch` to a partition (group `group`): an older coordinator than one
    /// whose marker the producer got here, or than one this leader already proposed for it (a
    /// late request of one deposed), or an older producer epoch, as Kafka refuses them. The
    /// producer state (kept in the control records and snapshots) survives restarts. The
    /// leader decides alone; replicas append what committed, so their logs stay identical.
    fn marker_fenced(
        &self,
        (topic, partition): (&str, i32),
        group: u64,
        (producer_id, producer_epoch): (i64, i16),
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let table = self.producers.get(&(topic.to_string(), partition));
        let proposed = self
            .cluster
            .as_ref()
            .and_then(|c| c.txn.proposed_epochs.get(&(group, producer_id)).copied());
        let newest = table
            .map_or(-1, |t| t.coordinator_epoch_of(producer_id))
            .max(proposed.unwrap_or(-1));
        if coordinator_epoch != OPERATOR_EPOCH && coordinator_epoch < newest {
            return Err(ResponseError::TransactionCoordinatorFenced);
        }
        if table
            .and_then(|t| t.epoch_of(producer_id))
            .is_some_and(|e| e > producer_epoch)
        {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(())
    }

    /// A committed marker entry, on every replica: the control batch is appended (with the
    /// coordinator epoch the leader resolved) and the partition's producer state learns the
    /// transaction's end. A verification this node has out for the producer there now speaks
    /// of an ended transaction (the marker may have been proposed by an earlier leader).
    pub(in crate::broker) fn apply_marker(
        &mut self,
        group: u64,
        (topic, partition): (&str, i32),
        epoch: i32,
        m: MarkerEntry,
    ) -> Result<(), ResponseError> {
        if let Some(c) = &mut self.cluster {
            c.txn.trip_guards(group, m.producer_id);
            if c.txn
                .proposed_epochs
                .get(&(group, m.producer_id))
                .is_some_and(|e| *e <= m.coordinator_epoch)
            {
                c.txn.proposed_epochs.remove(&(group, m.producer_id));
            }
        }
        let job = MarkerJob {
            transactional_id: String::new(),
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            commit: m.commit,
            partitions: Vec::new(),
        };
        self.append_marker(
            &job,
            (topic, partition),
            (epoch, m.coordinator_epoch),
            m.now_ms,
        )
            .map_err(|e| {
                warn!(node_id = self.config.node_id, topic, partition, error = %e, "appending a transaction marker failed");
                ResponseError::KafkaStorageError
            })
    }

    /// A committed coordinator write to an internal topic, on every replica: appended as it
    /// is (coordinators' batches carry no sequence to check); a TxnOffsetCommit's batch opens
    /// its transaction in the partition's producer state.
    pub(super) fn append_internal(
        &mut self,
        topic: &str,
        partition: i32,
        records: &[u8],
        epoch: i32,
        now_ms: i64,
    ) -> Result<(i64, i64, i64), (ResponseError, Option<String>)> {
        if let Some(f) = &self.storage_failure {
            return Err((
                ResponseError::KafkaStorageError,
                Some(format!("storage failed: {f}")),
            ));
        }
        let log = self
            .partition_mut(topic, partition)
            .map_err(|e| (e, None))?;
        let a = log
            .append(records, epoch, now_ms)
            .map_err(crate::broker::produce::append_error)?;
        let start = log.log_start_offset();
        if let Some((_, h)) = crate::batch::headers(records).next()
            && h.attributes & 0x10 != 0
            && h.producer_id >= 0
        {
            self.producers
                .entry((topic.to_string(), partition))
                .or_default()
                .record_txn_batch(h.producer_id, h.producer_epoch, a.base_offset);
            self.sync_unstable(topic, partition);
        }
        Ok((a.base_offset, start, a.log_append_time))
    }

    /// A transactional batch whose coordinator is on another node (see `partition_refusal`):
    /// only a batch that would open the transaction in this partition needs its word (later
    /// ones belong to the transaction the first one opened); `Ok(None)` when none is needed.
    pub(in crate::broker) fn remote_txn_check(
        &self,
        transactional_id: &str,
        h: &crate::batch::BatchHeader,
        topic: &str,
        partition: i32,
    ) -> Result<Option<RemoteCheck>, (ResponseError, String)> {
        let c = self.cluster.as_ref().expect("cluster");
        let group = c.meta.partition(topic, partition).map(|mp| mp.group);
        let open = group.is_some_and(|g| {
            c.txn.verified.get(&(g, h.producer_id)).map(String::as_str) == Some(transactional_id)
        }) && self
            .producers
            .get(&(topic.to_string(), partition))
            .is_some_and(|t| t.in_transaction(h.producer_id, h.producer_epoch));
        // A new leader verifies only once its earlier terms' markers applied: one applying
        // while the verification is out would trip its guard and refuse a good batch.
        if !open && !group.is_some_and(|g| c.leader_caught_up(g)) {
            return Err((
                ResponseError::NotLeaderOrFollower,
                "the partition's new leader is still applying earlier terms".into(),
            ));
        }
        Ok((!open).then(|| RemoteCheck {
            transactional_id: transactional_id.to_string(),
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
        }))
    }

    /// Parks a produce partition until the transaction's coordinator (on another node)
    /// confirms the partition is in the producer's ongoing transaction (KIP-890).
    pub(super) fn verify_remotely(
        &mut self,
        step: super::produce::PartitionProduce,
        check: RemoteCheck,
    ) -> Result<(), super::produce::Refusal> {
        let topic = step.topic.clone().unwrap_or_default();
        let Some(id) = self.ask_coordinator(&check, &topic, step.partition) else {
            // Retriable for every client (as Kafka maps coordinator errors for produce).
            return Err((
                ResponseError::NotEnoughReplicas,
                Some("the transaction's coordinator is not known yet".into()),
                -1,
                -1,
            ));
        };
        let c = self.cluster.as_mut().expect("cluster");
        c.txn.verifying.insert(id, step);
        Ok(())
    }

    /// Parks a TxnOffsetCommit until the transaction's coordinator (on another node) confirms
    /// the group's `__consumer_offsets` partition is in the producer's ongoing transaction.
    pub(in crate::broker) fn verify_offsets_remotely(
        &mut self,
        cctx: CoordContext,
        req: TxnOffsetCommitRequest,
        partition: i32,
    ) -> Reply {
        let check = RemoteCheck {
            transactional_id: req.transactional_id.0.to_string(),
            producer_id: req.producer_id.0,
            epoch: req.producer_epoch,
        };
        let Some(id) = self.ask_coordinator(&check, OFFSETS_TOPIC, partition) else {
            let body = super::super::transactions::txn_error(
                RequestKind::TxnOffsetCommit(req),
                ResponseError::CoordinatorNotAvailable,
            );
            return Reply::Now(body);
        };
        let token = cctx.token;
        let c = self.cluster.as_mut().expect("cluster");
        c.txn.verifying_offsets.insert(id, (cctx, req));
        Reply::Parked { token }
    }

    /// Queues AddPartitionsToTxn v4 (`verify_only`) for (`topic`, `partition`) to the
    /// transaction's coordinator; returns the request id, `None` when no other node is known
    /// to coordinate it.
    fn ask_coordinator(&mut self, check: &RemoteCheck, topic: &str, partition: i32) -> Option<u64> {
        let n = self.txn.config().num_partitions;
        let c = self.cluster.as_mut().expect("cluster");
        let me = c.node_id;
        let p = sluice_coordinator::partition_for(&check.transactional_id, n);
        let (leader, _) = c.leader_of(TRANSACTION_STATE_TOPIC, p);
        let (host, port) = c
            .meta
            .listeners
            .get(&leader)
            .and_then(|l| l.get(crate::security::REPLICA_LISTENER))
            .cloned()
            .filter(|_| leader > 0 && leader != me)?;
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(str(&check.transactional_id)))
                .with_producer_id(ProducerId(check.producer_id))
                .with_producer_epoch(check.epoch)
                .with_verify_only(true)
                .with_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(str(topic)))
                        .with_partitions(vec![partition]),
                ]),
        ]);
        c.txn.next_id += 1;
        let id = c.txn.next_id;
        if let Some(mp) = c.meta.partition(topic, partition) {
            c.txn
                .guards
                .insert(id, (mp.group, check.producer_id, false));
        }
        debug!(node_id = me, transactional_id = %check.transactional_id, topic, partition, coordinator = leader, "verifying a transactional write with its coordinator");
        c.txn.outbox.push(PeerRequest {
            id,
            node: leader,
            host,
            port,
            api_key: ApiKey::AddPartitionsToTxn,
            version: VERIFY_VERSION,
            request: RequestKind::AddPartitionsToTxn(request),
        });
        Some(id)
    }

    /// The coordinator's answer to a verification: the partition goes on (and is proposed) or
    /// is refused.
    fn verified(
        &mut self,
        mut step: super::produce::PartitionProduce,
        result: Result<ResponseKind, String>,
        now_ms: i64,
    ) {
        let code = verification_code(
            &result,
            step.topic.as_deref().unwrap_or_default(),
            step.partition,
        );
        let (token, (ti, pi)) = (step.token, step.slot);
        let Some(c) = &mut self.cluster else { return };
        let Some((resp, _, version)) = c.produces.get_mut(&token) else {
            return;
        };
        let version = *version;
        let mut pr = resp.responses[ti].partition_responses[pi].clone();
        let outcome = if code == 0 {
            step.verified = true;
            let pid = step
                .records
                .as_deref()
                .and_then(|r| crate::batch::headers(r).next())
                .map(|(_, h)| h.producer_id);
            let group = step
                .topic
                .as_deref()
                .and_then(|t| c.meta.partition(t, step.partition))
                .map(|mp| mp.group);
            if let (Some(pid), Some(group), Some(id)) = (pid, group, step.transactional_id.clone())
            {
                c.txn.verified.insert((group, pid), id);
            }
            self.produce_partition(step, &mut pr, now_ms)
        } else {
            let e = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
            debug!(node_id = self.config.node_id, error = ?e, "transactional produce refused by its coordinator");
            Err((verification_error(e), None, -1, -1))
        };
        let c = self.cluster.as_mut().expect("cluster");
        let Some((mut resp, outstanding, _)) = c.produces.remove(&token) else {
            return;
        };
        let refused = outcome.is_err();
        if let Err(refusal) = outcome {
            self.refuse_partition(&mut resp, &mut pr, refusal, version);
        }
        resp.responses[ti].partition_responses[pi] = pr;
        let c = self.cluster.as_mut().expect("cluster");
        c.produces.insert(token, (resp, outstanding, version));
        if refused {
            c.produce_partition_done(token);
        }
    }

    /// AddPartitionsToTxn v4+ from a partition leader: whether each partition is in the
    /// producer's ongoing transaction (`verify_only`; adding is for clients, v3 and below).
    pub(in crate::broker) fn verify_txn_partitions(
        &self,
        req: &AddPartitionsToTxnRequest,
    ) -> AddPartitionsToTxnResponse {
        let results = req
            .transactions
            .iter()
            .map(|t| {
                let id = t.transactional_id.0.as_str();
                let mapping = self.txn.get(id).map(|m| m.producer_id);
                let topic_results = t
                    .topics
                    .iter()
                    .map(|topic| {
                        let partitions = topic
                            .partitions
                            .iter()
                            .map(|&p| {
                                let result = if !t.verify_only {
                                    Err(ResponseError::InvalidRequest)
                                } else if !self.txn.coordinates(id) {
                                    Err(ResponseError::NotCoordinator)
                                } else if mapping != Some(t.producer_id.0) {
                                    Err(ResponseError::InvalidProducerIdMapping)
                                } else {
                                    self.txn.verify(
                                        t.producer_id.0,
                                        t.producer_epoch,
                                        &topic.name.0,
                                        p,
                                    )
                                };
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_partition_error_code(result.err().map_or(0, |e| e.code()))
                            })
                            .collect();
                        AddPartitionsToTxnTopicResult::default()
                            .with_name(topic.name.clone())
                            .with_results_by_partition(partitions)
                    })
                    .collect();
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results)
            })
            .collect();
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
    }

    /// This node now coordinates the transactions of `partition`: load them, and finish the
    /// decisions that were prepared.
    pub(super) fn load_txn_partition(&mut self, partition: i32, now_ms: i64) {
        let records = match self.read_store_batches(TRANSACTION_STATE_TOPIC, partition) {
            Ok(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    groups::Stored::Record(r) => Some(r),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                warn!(node_id = self.config.node_id, partition, error = %e, "cannot read {TRANSACTION_STATE_TOPIC}; not coordinating its transactions yet (retrying)");
                if let Some(c) = &mut self.cluster {
                    c.txn.reload.insert(partition);
                }
                return;
            }
        };
        let actions = self.txn.load_partition(partition, &records);
        info!(
            node_id = self.config.node_id,
            partition,
            prepared = actions.len(),
            "transaction coordinator partition loaded"
        );
        self.execute_txn_cluster(actions, None, now_ms);
    }

    /// This node no longer coordinates the transactions of `partition`.
    pub(super) fn unload_txn_partition(&mut self, partition: i32, now_ms: i64) {
        self.drop_txn_partition(partition, now_ms);
        info!(
            node_id = self.config.node_id,
            partition, "transaction coordinator partition unloaded"
        );
    }

    /// Forgets `partition`'s transactions, its marker rounds (a reload starts them again:
    /// two rounds of one decision could end the producer's next transaction) and its writes
    /// in flight; parked InitProducerId requests are answered NOT_COORDINATOR.
    fn drop_txn_partition(&mut self, partition: i32, now_ms: i64) {
        let actions = self.txn.unload_partition(partition);
        let n = self.txn.config().num_partitions;
        if let Some(c) = &mut self.cluster {
            c.txn.rounds.retain(|_, r| {
                sluice_coordinator::partition_for(&r.job.transactional_id, n) != partition
            });
            c.txn.after.retain(|_, (p, _)| *p != partition);
            c.txn.reload.remove(&partition);
        }
        self.execute_txn_cluster(actions, None, now_ms);
    }

    /// Drops what memory holds for `partition` beyond its log (a write that was not proposed).
    fn reload_txn_partition(&mut self, partition: i32, now_ms: i64) {
        // Only a leader whose earlier terms are applied (else the catch-up loads it).
        let leads = self.cluster.as_ref().is_some_and(|c| {
            c.meta
                .partition(TRANSACTION_STATE_TOPIC, partition)
                .is_some_and(|p| {
                    c.is_local_leader(p.group)
                        && c.roles.get(&p.group).is_some_and(|r| r.load_at.is_none())
                })
        });
        self.drop_txn_partition(partition, now_ms);
        if leads {
            self.load_txn_partition(partition, now_ms);
        }
    }
}

impl super::ClusterState {
    /// Queues a marker entry; returns its sequence.
    fn propose_marker(
        &mut self,
        group: u64,
        now_ms: i64,
        (producer_id, producer_epoch): (i64, i16),
        commit: bool,
        coordinator_epoch: i32,
    ) -> u64 {
        let seq = self.seq();
        // A marker takes an offset: offsets after it are not predicted.
        self.predict(group, seq, &[], false);
        // The producer's next batch here opens a new transaction: verified again, and the
        // verifications out now speak of the transaction this marker ends.
        self.txn.verified.remove(&(group, producer_id));
        self.txn.trip_guards(group, producer_id);
        if coordinator_epoch != OPERATOR_EPOCH {
            let e = self
                .txn
                .proposed_epochs
                .entry((group, producer_id))
                .or_insert(coordinator_epoch);
            *e = (*e).max(coordinator_epoch);
        }
        self.proposals.push(super::Proposal {
            group,
            data: MarkerEntry {
                proposer: self.node_id as u64,
                seq,
                now_ms,
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
            }
            .encode(),
        });
        seq
    }
}

/// The WriteTxnMarkers request carrying `job`'s marker to `parts`.
fn markers_request(
    job: &MarkerJob,
    parts: &[(String, i32)],
    coordinator_epoch: i32,
) -> WriteTxnMarkersRequest {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t).or_default().push(*p);
    }
    WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(job.producer_id))
            .with_producer_epoch(job.producer_epoch)
            .with_transaction_result(job.commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(str(t)))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ),
    ])
}

/// A WriteTxnMarkers request answered with `e` for every partition.
pub fn markers_error(req: &WriteTxnMarkersRequest, e: ResponseError) -> WriteTxnMarkersResponse {
    WriteTxnMarkersResponse::default().with_markers(
        req.markers
            .iter()
            .map(|m| {
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(
                        m.topics
                            .iter()
                            .map(|t| {
                                WritableTxnMarkerTopicResult::default()
                                    .with_name(t.name.clone())
                                    .with_partitions(
                                        t.partition_indexes
                                            .iter()
                                            .map(|p| {
                                                WritableTxnMarkerPartitionResult::default()
                                                    .with_partition_index(*p)
                                                    .with_error_code(e.code())
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// The error code a verification answered for (`topic`, `partition`); coordinator
/// unavailable when no answer came.
fn verification_code(result: &Result<ResponseKind, String>, topic: &str, partition: i32) -> i16 {
    match result {
        Ok(ResponseKind::AddPartitionsToTxn(r)) if r.error_code != 0 => r.error_code,
        Ok(ResponseKind::AddPartitionsToTxn(r)) => r
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.results_by_partition)
            .find(|p| p.partition_index == partition)
            .map_or(ResponseError::UnknownServerError.code(), |p| {
                p.partition_error_code
            }),
        _ => ResponseError::CoordinatorNotAvailable.code(),
    }
}

/// The TxnOffsetCommit error for a verification the coordinator refused: coordinator troubles
/// are retriable (COORDINATOR_NOT_AVAILABLE makes clients look the coordinator up again).
fn offsets_verification_error(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::NotCoordinator
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::ConcurrentTransactions => ResponseError::CoordinatorNotAvailable,
        other => other,
    }
}

/// Whether a verification's answer confirms every partition it asked about.
fn confirms(result: &Result<ResponseKind, String>) -> bool {
    match result {
        Ok(ResponseKind::AddPartitionsToTxn(r)) => {
            r.error_code == 0
                && r.results_by_transaction
                    .iter()
                    .flat_map(|t| &t.topic_results)
                    .flat_map(|t| &t.results_by_partition)
                    .all(|p| p.partition_error_code == 0)
        }
        _ => false,
    }
}

/// The answer a verification gets when a marker for its producer was proposed in its
/// partition while it was out: the partition is not in an ongoing transaction any more.
fn guard_tripped() -> ResponseKind {
    ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidTxnState.code()),
    )
}

/// The produce error for a verification the coordinator refused: coordinator troubles are
/// retriable for every client (NOT_ENOUGH_REPLICAS, as Kafka maps them); the rest as they are.
fn verification_error(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::NotCoordinator
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
        other => other,
    }
}

/// A WriteTxnMarkers request of producer 5 for one partition (tests).
#[cfg(test)]
pub(in crate::broker) fn txn_tests_marker_request(
    topic: &str,
    partition: i32,
    commit: bool,
) -> WriteTxnMarkersRequest {
    let job = MarkerJob {
        transactional_id: "tx".into(),
        producer_id: 5,
        producer_epoch: 0,
        commit,
        partitions: Vec::new(),
    };
    markers_request(&job, &[(topic.to_string(), partition)], 0)
}
