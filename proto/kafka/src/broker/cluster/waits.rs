//! Requests parked until their entries apply: completing, failing and delivering them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::LeaderIdAndEpoch;
use kafka_protocol::messages::{BrokerId, ResponseKind};

use super::super::{Broker, Deferred, str};
use super::txn::StateWrite;
use super::{AdminWait, Wait};

impl Broker {
    /// The entry proposed as `seq` applied (or failed): its request's part is answered.
    pub(super) fn complete_wait(
        &mut self,
        seq: u64,
        result: Result<(i64, i64), (ResponseError, Option<String>)>,
    ) {
        let ok = result.is_ok();
        let Some(c) = &mut self.cluster else { return };
        match c.waits.remove(&seq) {
            Some(Wait::Produce {
                token,
                topic,
                partition,
                ..
            }) => {
                if let Some((resp, _, _)) = c.produces.get_mut(&token) {
                    let pr = &mut resp.responses[topic].partition_responses[partition];
                    match result {
                        Ok((base, start)) => {
                            pr.base_offset = base;
                            pr.log_start_offset = start;
                        }
                        Err((e, msg)) => {
                            pr.error_code = e.code();
                            pr.error_message = msg.map(|m| str(&m));
                        }
                    }
                }
                c.produce_partition_done(token);
            }
            Some(Wait::Coordinator { responses, .. }) => {
                for r in responses {
                    let token = r.token;
                    let body = if ok {
                        r.body
                    } else {
                        r.into_error(ResponseError::CoordinatorNotAvailable).body
                    };
                    c.finished.push((token, body));
                }
            }
            Some(Wait::TxnState { response, .. }) => {
                let outcome = if ok {
                    StateWrite::Applied
                } else {
                    StateWrite::Refused
                };
                let now = c.clock_ms;
                self.txn_state_done(seq, response, outcome, now);
            }
            Some(Wait::Marker { token, slot, .. }) => {
                let code = match &result {
                    Ok(_) => 0,
                    Err((e, _)) => e.code(),
                };
                let now = c.clock_ms;
                self.marker_slot_done(token, slot, code, now);
            }
            // A transaction state write whose wait expired applied after all.
            None if c.txn.awaits(seq) => {
                let outcome = if ok {
                    StateWrite::Applied
                } else {
                    StateWrite::Refused
                };
                let now = c.clock_ms;
                self.txn_state_done(seq, None, outcome, now);
            }
            Some(Wait::Admin { .. }) | None => {}
        }
    }

    pub(super) fn fail_wait(&mut self, seq: u64, error: ResponseError) {
        let Some(c) = &mut self.cluster else { return };
        match c.waits.remove(&seq) {
            Some(Wait::Produce {
                token,
                topic,
                partition,
                group,
                ..
            }) => {
                let hint = c
                    .meta
                    .group(group)
                    .map(|(t, p)| c.leader_of(t, p))
                    .unwrap_or((-1, -1));
                let endpoint = c.endpoint(hint.0);
                if let Some((resp, _, _)) = c.produces.get_mut(&token) {
                    let pr = &mut resp.responses[topic].partition_responses[partition];
                    pr.error_code = error.code();
                    if hint.0 >= 0 && hint.0 != c.node_id {
                        pr.current_leader = LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(hint.0))
                            .with_leader_epoch(hint.1);
                        if let Some(ep) = endpoint
                            && !resp.node_endpoints.iter().any(|e| e.node_id.0 == hint.0)
                        {
                            resp.node_endpoints.push(ep);
                        }
                    }
                }
                c.produce_partition_done(token);
            }
            Some(Wait::Coordinator { responses, .. }) => {
                for r in responses {
                    let token = r.token;
                    c.finished
                        .push((token, r.into_error(ResponseError::NotCoordinator).body));
                }
            }
            Some(Wait::TxnState { response, .. }) => {
                let outcome = if error == ResponseError::RequestTimedOut {
                    StateWrite::TimedOut
                } else {
                    StateWrite::Dropped
                };
                let now = c.clock_ms;
                self.txn_state_done(seq, response, outcome, now);
            }
            Some(Wait::Marker { token, slot, .. }) => {
                let now = c.clock_ms;
                self.marker_slot_done(token, slot, error.code(), now);
            }
            Some(Wait::Admin { token, slot, .. }) => {
                // Answered like Kafka: the client retries (NOT_CONTROLLER refreshes metadata).
                self.admin_slot_done(token, slot, Some((error, error.to_string())));
            }
            None => {}
        }
    }

    /// Answers finished requests at once: what they wrote is committed in Raft (durable in a
    /// majority of write-ahead logs), so no segment sync is waited for.
    pub(super) fn deliver_finished(&mut self) {
        let Some(c) = &mut self.cluster else { return };
        for (token, response) in c.finished.drain(..) {
            self.deferred.push(Deferred {
                token,
                seq: 0,
                response,
            });
        }
    }

    /// An admin proposal of this node applied (`error`: refused) or was dropped.
    pub(super) fn admin_done(&mut self, seq: u64, error: Option<(ResponseError, String)>) {
        let Some(c) = &mut self.cluster else { return };
        let Some(Wait::Admin { token, slot, .. }) = c.waits.remove(&seq) else {
            return;
        };
        self.admin_slot_done(token, slot, error);
    }

    pub(super) fn admin_slot_done(
        &mut self,
        token: u64,
        slot: usize,
        error: Option<(ResponseError, String)>,
    ) {
        let Some(c) = &mut self.cluster else { return };
        let Some((wait, outstanding)) = c.admins.get_mut(&token) else {
            return;
        };
        // The slot's error fields (DeleteRecords has no message); CreateTopics also learns the
        // topic's id and shape on success.
        let (code, message) = match wait {
            AdminWait::Security(r) => {
                if let Some((e, m)) = &error {
                    crate::broker::security::fail_all(r, *e, m);
                }
                let (wait, _) = c.admins.remove(&token).expect("present");
                let AdminWait::Security(response) = wait else {
                    unreachable!("matched above")
                };
                c.finished.push((token, response));
                return;
            }
            AdminWait::Create(r) => {
                let t = &mut r.topics[slot];
                if error.is_none()
                    && let Some(mt) = c.meta.topics.get(t.name.as_str())
                {
                    t.topic_id = mt.id;
                    t.num_partitions = mt.partitions.len() as i32;
                    t.replication_factor =
                        mt.partitions.first().map_or(1, |p| p.replicas.len() as i16);
                }
                if error.is_some() {
                    t.configs = None;
                }
                (&mut t.error_code, Some(&mut t.error_message))
            }
            AdminWait::Delete(r) => {
                let x = &mut r.responses[slot];
                (&mut x.error_code, Some(&mut x.error_message))
            }
            AdminWait::Partitions(r) => {
                let x = &mut r.results[slot];
                (&mut x.error_code, Some(&mut x.error_message))
            }
            AdminWait::Alter(r) => {
                let x = &mut r.responses[slot];
                (&mut x.error_code, Some(&mut x.error_message))
            }
            AdminWait::IncrementalAlter(r) => {
                let x = &mut r.responses[slot];
                (&mut x.error_code, Some(&mut x.error_message))
            }
            AdminWait::DeleteRecords(r, slots) => {
                let (t, p) = slots[slot];
                (&mut r.topics[t].partitions[p].error_code, None)
            }
            AdminWait::Reassign(r, slots) => {
                let (t, p) = slots[slot];
                let x = &mut r.responses[t].partitions[p];
                (&mut x.error_code, Some(&mut x.error_message))
            }
        };
        if let Some((e, m)) = &error {
            *code = e.code();
            if let Some(message) = message {
                *message = Some(str(m));
            }
        }
        *outstanding -= 1;
        if *outstanding == 0 {
            let (wait, _) = c.admins.remove(&token).expect("present");
            let response = match wait {
                AdminWait::Security(r) => r,
                AdminWait::Create(r) => ResponseKind::CreateTopics(r),
                AdminWait::Delete(r) => ResponseKind::DeleteTopics(r),
                AdminWait::Partitions(r) => ResponseKind::CreatePartitions(r),
                AdminWait::Alter(r) => ResponseKind::AlterConfigs(r),
                AdminWait::IncrementalAlter(r) => ResponseKind::IncrementalAlterConfigs(r),
                AdminWait::DeleteRecords(r, _) => ResponseKind::DeleteRecords(r),
                AdminWait::Reassign(r, _) => ResponseKind::AlterPartitionReassignments(r),
            };
            c.finished.push((token, response));
        }
    }
}
