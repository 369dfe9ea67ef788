//! Applying committed entries: `__meta` commands reconcile local topics and hosted groups;
//! partition entries are appended on every replica; leadership changes move coordinators.

use kafka_protocol::error::ResponseError;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::super::{Broker, OFFSETS_TOPIC, partition_dir};
use super::{APPLIED_FILE, APPLIED_TABLE, Applied, GroupChange, META_GROUP, Role, Wait};
use crate::cluster::{
    MetaCommand, MetaEvent, MetaState, PartitionEntry, PartitionImage, ProposalId,
};

impl Broker {
    /// Leadership of a hosted partition group changed. `last_index` is the group's last log
    /// index now (a new leader's first entry of its term).
    pub fn partition_role_changed(
        &mut self,
        group: u64,
        leader: u64,
        term: u64,
        last_index: u64,
        now_ms: i64,
    ) {
        let Some(c) = &mut self.cluster else { return };
        c.clock_ms = now_ms;
        let me = c.node_id;
        let role = c.roles.entry(group).or_default();
        let was_leader = role.leader == me;
        role.leader = leader as i32;
        role.term = term;
        let is_leader = leader as i32 == me;
        let place = c.meta.group(group).map(|(t, p)| (t.to_string(), p));
        if is_leader && !was_leader {
            role.load_at = Some(last_index);
            c.start_predicting(group);
            if let Some((topic, partition)) = &place {
                info!(node_id = me, topic = %topic, partition, term, leader_id = leader, "partition leader elected");
            }
            c.propose_leader_record(group, term);
            // The coordinator loads the partition once the previous terms are applied.
            let applied = c.applied.get(&group).map_or(0, |a| a.index);
            if applied >= last_index {
                self.on_leader_caught_up(group, now_ms);
            }
        } else if was_leader && !is_leader {
            role.load_at = None;
            c.stop_predicting(group);
            let failed: Vec<u64> = c
                .waits
                .iter()
                .filter(|(_, w)| match w {
                    Wait::Produce { group: g, .. }
                    | Wait::Coordinator { group: g, .. }
                    | Wait::TxnState { group: g, .. }
                    | Wait::Marker { group: g, .. } => *g == group,
                    Wait::Admin { group: g, .. } => *g == Some(group),
                })
                .map(|(s, _)| *s)
                .collect();
            for seq in failed {
                self.fail_wait(seq, ResponseError::NotLeaderOrFollower);
            }
            if let Some((topic, partition)) = &place
                && topic == sluice_coordinator::TRANSACTION_STATE_TOPIC
            {
                self.unload_txn_partition(*partition, now_ms);
            }
            if let Some((topic, partition)) = place
                && topic == OFFSETS_TOPIC
            {
                let actions = self.coordinator.unload_partition(partition);
                self.execute(actions, None, now_ms);
                info!(
                    node_id = me,
                    partition, "group coordinator partition unloaded"
                );
            }
            self.deliver_finished();
        }
    }

    pub(super) fn on_leader_caught_up(&mut self, group: u64, now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        let Some(role) = c.roles.get_mut(&group) else {
            return;
        };
        if role.load_at.take().is_none() {
            return;
        }
        self.resync_prediction(group);
        let Some(c) = &mut self.cluster else { return };
        if let Some((topic, partition)) = c.meta.group(group)
            && topic == sluice_coordinator::TRANSACTION_STATE_TOPIC
        {
            self.load_txn_partition(partition, now_ms);
            return;
        }
        let Some(c) = &mut self.cluster else { return };
        if let Some((topic, partition)) = c.meta.group(group)
            && topic == OFFSETS_TOPIC
        {
            self.load_offsets_partition(partition, now_ms);
            info!(
                node_id = self.config.node_id,
                partition, "group coordinator partition loaded"
            );
        }
    }

    /// Applies committed `__meta` entries, then brings local topics and hosted groups in line
    /// with the result.
    pub fn apply_meta(&mut self, entries: &[(u64, Vec<u8>)], now_ms: i64) {
        let Some(c) = &mut self.cluster else { return };
        let mut events = Vec::new();
        for (index, data) in entries {
            // Already in an installed image.
            if *index <= c.meta_applied {
                continue;
            }
            c.meta_applied = *index;
            match MetaCommand::decode(data) {
                Ok(Some(cmd)) => {
                    debug!(node_id = c.node_id, index, command = ?cmd, "meta apply");
                    events.extend(c.meta.apply(cmd));
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(node_id = c.node_id, index, error = %e, "undecodable meta entry skipped")
                }
            }
        }
        // Only topic changes touch local state; leader records (frequent during elections) and
        // registrations do not, and reconciling costs a pass over every topic.
        let reshaped = events.iter().any(|ev| {
            matches!(
                ev,
                MetaEvent::TopicCreated { .. }
                    | MetaEvent::TopicDeleted { .. }
                    | MetaEvent::PartitionsCreated { .. }
                    | MetaEvent::ConfigsChanged { .. }
                    | MetaEvent::ReassignmentChanged { .. }
            )
        });
        // Deletions first (by id), then creations: a batch may delete and re-create a name.
        for ev in events {
            self.meta_event(ev, now_ms);
        }
        if reshaped {
            self.reconcile(now_ms);
        }
        self.deliver_finished();
    }

    /// Records that `__meta` entries up to `index` are applied (entries without a command,
    /// such as membership changes, included): where [`Broker::meta_image`] stands.
    pub fn meta_applied_to(&mut self, index: u64) {
        if let Some(c) = &mut self.cluster {
            c.meta_applied = c.meta_applied.max(index);
        }
    }

    /// The `__meta` index the metadata stands at.
    pub fn meta_applied(&self) -> Option<u64> {
        self.cluster.as_ref().map(|c| c.meta_applied)
    }

    /// The metadata as `__meta` snapshot data, with the index it stands at.
    pub fn meta_image(&self) -> Option<(u64, Vec<u8>)> {
        let c = self.cluster.as_ref()?;
        Some((c.meta_applied, c.meta.encode_image()))
    }

    /// Installs a `__meta` snapshot image taken at `index`: this node was behind what its
    /// leader compacted away, or restarts from its own compacted log. Local topics and hosted
    /// groups are brought in line as if every entry the image stands for had applied.
    pub fn install_meta_image(
        &mut self,
        index: u64,
        data: &[u8],
        now_ms: i64,
    ) -> Result<(), String> {
        let state = match MetaState::decode_image(data) {
            Some(decoded) => decoded?,
            None => return Err("the snapshot holds no metadata image".to_string()),
        };
        let me = self.config.node_id;
        let Some(c) = &mut self.cluster else {
            return Ok(());
        };
        if index <= c.meta_applied {
            return Ok(());
        }
        let old = std::mem::replace(&mut c.meta, state);
        c.meta_applied = index;
        info!(
            node_id = me,
            index,
            topics = c.meta.topics.len(),
            "installed a __meta snapshot image"
        );
        // Topics this node knew from the cluster and the image no longer has were deleted in
        // the entries it skipped (a restart knew none yet: nothing local goes).
        let deleted: Vec<String> = self
            .topics
            .iter()
            .filter(|(name, t)| {
                old.topics.get(*name).is_some_and(|o| o.id == t.id)
                    && c.meta.topics.get(*name).is_none_or(|n| n.id != t.id)
            })
            .map(|(name, _)| name.clone())
            .collect();
        // Hosted groups whose replicas changed learn their voters and preferred leader.
        let mut changes = Vec::new();
        for (&group, (topic, partition)) in &c.meta.groups {
            let (Some(new), true) = (
                c.meta.partition(topic, *partition),
                c.applied.contains_key(&group),
            ) else {
                continue;
            };
            if old.partition(topic, *partition) != Some(new) && new.hosted_on(me) {
                changes.push(replicas_changed(group, topic, *partition, new));
            }
        }
        c.group_changes.extend(changes);
        self.security = c.meta.security.clone();
        // Own `__meta` proposals the skipped entries may hold: their outcome is unknown here.
        let waiting: Vec<u64> = c
            .waits
            .iter()
            .filter(|(_, w)| matches!(w, Wait::Admin { group: None, .. }))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in waiting {
            self.fail_wait(seq, ResponseError::RequestTimedOut);
        }
        for name in deleted {
            info!(node_id = me, topic = %name, "topic deleted from the cluster");
            if let Err((e, m)) = self.delete_topic_local(&name, now_ms) {
                warn!(node_id = me, topic = %name, error = ?e, message = ?m, "removing a deleted topic failed");
            }
        }
        self.reconcile(now_ms);
        self.deliver_finished();
        Ok(())
    }

    /// Makes local topics and hosted groups match the replicated metadata.
    pub(super) fn reconcile(&mut self, now_ms: i64) {
        let Some(c) = &self.cluster else { return };
        let me = c.node_id;
        let wanted: Vec<(String, crate::cluster::MetaTopic)> = c
            .meta
            .topics
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (name, mt) in wanted {
            let count = mt.partitions.len() as i32;
            match self.topics.get(&name) {
                Some(t) if t.id != mt.id => {
                    // Only a replayed TopicDeleted removes local data (see `meta_event`).
                    warn!(node_id = me, topic = %name, local_id = %t.id, cluster_id = %mt.id, "local topic has another id than the cluster's; left alone");
                    continue;
                }
                None => {
                    if let Err((e, m)) = self.create_topic_with(
                        &name,
                        count,
                        mt.configs.clone(),
                        Some(mt.id),
                        now_ms,
                    ) {
                        warn!(node_id = me, topic = %name, error = ?e, message = ?m, "creating a replica failed");
                        continue;
                    }
                }
                Some(t) => {
                    let grow = (t.partitions.len() as i32) < count;
                    let reconfigure = t.configs != mt.configs;
                    if grow && let Err((e, m)) = self.add_partitions_local(&name, count, now_ms) {
                        warn!(node_id = me, topic = %name, error = ?e, message = ?m, "adding partitions failed");
                    }
                    if reconfigure {
                        self.set_configs_local(&name, mt.configs.clone());
                    }
                }
            }
            for (p, mp) in mt.partitions.iter().enumerate() {
                let c = self.cluster.as_ref().expect("cluster");
                if !mp.hosted_on(me) || c.applied.contains_key(&mp.group) {
                    continue;
                }
                let joining = !mp.replicas.contains(&me);
                let applied = self.recover_replica(mp.group, &name, p as i32, now_ms);
                let c = self.cluster.as_mut().expect("cluster");
                c.applied.insert(
                    mp.group,
                    Applied {
                        index: applied.0,
                        durable: applied,
                        recorded: applied.0,
                        recorded_end: applied.1,
                        ..Applied::default()
                    },
                );
                c.roles.insert(mp.group, Role::default());
                c.group_changes.push(GroupChange::Add {
                    group: mp.group,
                    voters: mp.initial_voters().iter().map(|&r| r as u64).collect(),
                    preferred: mp.wanted().first().map_or(0, |&r| r as u64),
                    applied: applied.0,
                    campaign: !joining && mp.replicas.first() == Some(&me) && applied.0 == 0,
                    joining,
                    topic: name.clone(),
                    partition: p as i32,
                });
            }
        }
        let c = self.cluster.as_mut().expect("cluster");
        // Partitions that moved away from this node: their records go.
        let moved: Vec<(u64, String, i32)> = c
            .applied
            .keys()
            .filter_map(|g| {
                let (t, p) = c.meta.group(*g)?;
                let mp = c.meta.partition(t, p)?;
                (!mp.hosted_on(me)).then(|| (*g, t.to_string(), p))
            })
            .collect();
        let gone: Vec<u64> = c
            .applied
            .keys()
            .filter(|g| !c.meta.groups.contains_key(g))
            .copied()
            .chain(moved.iter().map(|(g, _, _)| *g))
            .collect();
        for (group, topic, partition) in moved {
            info!(node_id = me, group, topic = %topic, partition, "partition moved to other replicas: its local records go");
            self.forget_moved_replica(&topic, partition, now_ms);
            let c = self.cluster.as_mut().expect("cluster");
            if let Some(t) = &mut c.marks_read {
                t.remove(&group);
            }
        }
        let c = self.cluster.as_mut().expect("cluster");
        for group in gone {
            c.applied.remove(&group);
            // An install or a clean still running for it stops (its log is gone or reset).
            c.installing.remove(&group);
            c.clean_ordered.remove(&group);
            if let Some(t) = &mut c.marks_read {
                t.remove(&group);
            }
            c.roles.remove(&group);
            c.group_changes.push(GroupChange::Remove { group });
        }
    }

    /// A partition that moved to other replicas: its local records, producer state and
    /// applied mark go (if it comes back, it is seeded afresh by its leader's snapshot).
    fn forget_moved_replica(&mut self, topic: &str, partition: i32, now_ms: i64) {
        if let Ok(log) = self.partition_mut(topic, partition)
            && let Err(e) = log.reset_to(0, now_ms)
        {
            warn!(node_id = self.config.node_id, topic, partition, error = %e, "dropping the records of a moved partition failed");
        }
        let key = (topic.to_string(), partition);
        self.producers.remove(&key);
        self.snapshotted.remove(&key);
        self.delete_aborted_files(topic, partition);
        let dir = partition_dir(topic, partition);
        for file in ["producer.snapshot", APPLIED_FILE] {
            let _ = self.fs.remove_file(&format!("{dir}/{file}"));
        }
    }

    /// Reads the partition's applied mark and cuts the local log back to it: anything after
    /// was not recorded durable and is re-applied from the Raft log.
    pub(super) fn recover_replica(
        &mut self,
        group: u64,
        topic: &str,
        partition: i32,
        now_ms: i64,
    ) -> (u64, i64) {
        let parse = |line: &str| -> Option<(u64, i64)> {
            let mut it = line.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        let c = self.cluster.as_mut().expect("cluster");
        let table = c.marks_read.get_or_insert_with(|| {
            let text = self.fs.read_file(APPLIED_TABLE).ok().flatten();
            let text = text
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let (g, rest) = l.split_once(' ')?;
                    Some((g.parse().ok()?, parse(rest)?))
                })
                .collect()
        });
        let mark = table.get(&group).copied().or_else(|| {
            let path = format!("{}/{APPLIED_FILE}", partition_dir(topic, partition));
            let bytes = self.fs.read_file(&path).ok().flatten()?;
            parse(&String::from_utf8(bytes).ok()?)
        });
        let mark = mark.unwrap_or((0u64, 0i64));
        if let Ok(log) = self.partition_mut(topic, partition) {
            let end = log.log_end_offset();
            if end > mark.1
                && let Err(e) = log.truncate_to(mark.1, now_ms)
            {
                warn!(node_id = self.config.node_id, topic, partition, error = %e, "truncating to the applied mark failed");
            }
        }
        self.rebuild_producer_state(topic, partition);
        mark
    }

    pub(super) fn meta_event(&mut self, ev: MetaEvent, now_ms: i64) {
        let me = self.config.node_id as u64;
        let mine = |r: &Option<ProposalId>| r.filter(|r| r.node == me).map(|r| r.seq);
        match ev {
            MetaEvent::TopicCreated { name, request } => {
                info!(node_id = me, topic = %name, "topic created in the cluster");
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
            MetaEvent::TopicDeleted {
                name, request, id, ..
            } => {
                info!(node_id = me, topic = %name, topic_id = %id, "topic deleted from the cluster");
                if self.topics.get(&name).is_some_and(|t| t.id == id)
                    && let Err((e, m)) = self.delete_topic_local(&name, now_ms)
                {
                    warn!(node_id = me, topic = %name, error = ?e, message = ?m, "removing a deleted topic failed");
                }
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
            MetaEvent::PartitionsCreated { request, .. }
            | MetaEvent::ConfigsChanged { request, .. }
            | MetaEvent::BrokerConfigsChanged { request } => {
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
            MetaEvent::Refused {
                request,
                error,
                message,
            } => {
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, Some((error, message)));
                }
            }
            MetaEvent::BrokerRegistered { node_id } => {
                info!(node_id = me, broker = node_id, "broker registered");
            }
            MetaEvent::MembersChanged { request } => {
                if let Some(c) = &self.cluster {
                    info!(node_id = me, members = ?c.meta.members(), "cluster members changed");
                }
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
            MetaEvent::LeaderRecorded { .. } => {}
            MetaEvent::ReassignmentChanged { group, request } => {
                if let Some(c) = &mut self.cluster
                    && let Some((t, p)) = c.meta.group(group)
                    && let Some(mp) = c.meta.partition(t, p)
                {
                    info!(node_id = me, group, topic = %t, partition = p, replicas = ?mp.replicas, target = ?mp.target, "partition reassignment changed");
                    // A hosted group learns its (new) preferred leader.
                    if c.applied.contains_key(&group) && mp.hosted_on(me as i32) {
                        let change = replicas_changed(group, t, p, mp);
                        c.group_changes.push(change);
                    }
                }
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
            MetaEvent::SecurityChanged { request } => {
                if let Some(c) = &self.cluster {
                    self.security = c.meta.security.clone();
                }
                info!(node_id = me, "ACLs or SCRAM credentials changed");
                if let Some(seq) = mine(&request) {
                    self.admin_done(seq, None);
                }
            }
        }
    }

    /// Applies committed entries of a partition group to the local log.
    pub fn apply_partition<D: AsRef<[u8]>>(
        &mut self,
        group: u64,
        entries: &[(u64, u64, D)],
        now_ms: i64,
    ) {
        let me = self.config.node_id as u64;
        if let Some(c) = &mut self.cluster {
            c.clock_ms = now_ms;
        }
        for (index, term, data) in entries {
            let data = data.as_ref();
            let Some(c) = &mut self.cluster else { return };
            let Some(applied) = c.applied.get_mut(&group) else {
                return;
            };
            if *index <= applied.index {
                continue;
            }
            applied.index = *index;
            let Some((topic, partition)) = c.meta.group(group).map(|(t, p)| (t.to_string(), p))
            else {
                continue;
            };
            if let Some(d) = crate::cluster::DeleteRecordsEntry::decode(data) {
                self.apply_delete_records(&topic, partition, d);
                continue;
            }
            if let Some(order) = crate::cluster::CleanEntry::decode(data) {
                c.clean_ordered.remove(&group);
                if let Ok(log) = self.partition_mut(&topic, partition)
                    && let Err(e) =
                        log.order_clean(*index, order.upto, order.now_ms, order.delete_retention_ms)
                {
                    warn!(node_id = me, topic = %topic, partition, index, error = %e, "recording an ordered clean failed");
                }
                // The order is in the (synced) checkpoint: durable as soon as what precedes it.
                let end = self
                    .partition(&topic, partition)
                    .map_or(0, |l| l.log_end_offset());
                let c = self.cluster.as_mut().expect("cluster");
                let a = c.applied.get_mut(&group).expect("checked");
                if a.unsynced.is_empty() {
                    a.durable = (*index, end);
                } else {
                    a.unsynced.push_back((*index, end));
                }
                continue;
            }
            if let Some(m) = crate::cluster::MarkerEntry::decode(data) {
                let epoch = i32::try_from(*term).unwrap_or(i32::MAX);
                let result = self.apply_marker(group, (&topic, partition), epoch, m);
                let end = self
                    .partition(&topic, partition)
                    .map_or(0, |l| l.log_end_offset());
                let c = self.cluster.as_mut().expect("cluster");
                c.wrote |= result.is_ok();
                c.applied
                    .get_mut(&group)
                    .expect("checked")
                    .unsynced
                    .push_back((*index, end));
                if m.proposer == me {
                    self.prediction_applied(group, m.seq, None);
                    self.complete_wait(m.seq, result.map(|()| (0, 0)).map_err(|e| (e, None)));
                }
                continue;
            }
            if let Some(hint) = crate::cluster::decode_compact_hint(data) {
                let a = c.applied.get_mut(&group).expect("checked");
                a.compact_hint = a.compact_hint.max(hint);
                self.noop_applied(group, &topic, partition, *index);
                continue;
            }
            let Some(e) = PartitionEntry::decode(data) else {
                // A leader's empty entry or a membership change: nothing to write.
                self.noop_applied(group, &topic, partition, *index);
                self.maybe_caught_up(group, *index, now_ms);
                continue;
            };
            {
                let epoch = i32::try_from(*term).unwrap_or(i32::MAX);
                let result = if crate::broker::is_internal(&topic) {
                    self.append_internal(&topic, partition, e.records, epoch, e.now_ms)
                } else {
                    self.append_partition_at(&topic, partition, Some(e.records), epoch, e.now_ms)
                }
                .map(|(base, start, _)| (base, start));
                let c = self.cluster.as_mut().expect("cluster");
                if result.is_ok() {
                    c.wrote = true;
                }
                if let Err((err, msg)) = &result
                    && e.proposer != me
                {
                    warn!(node_id = me, topic = %topic, partition, index, error = ?err, message = ?msg, "a committed entry did not apply");
                }
                // Committed in Raft, so durable in a majority of write-ahead logs: readable
                // and acknowledged now. The segment's own sync only moves the applied mark
                // (what a restart keeps, and how far the Raft log may be compacted).
                let end = match self.partition_mut(&topic, partition) {
                    Ok(log) => {
                        let end = log.log_end_offset();
                        log.mark_durable(end);
                        end
                    }
                    Err(_) => 0,
                };
                let c = self.cluster.as_mut().expect("cluster");
                let applied = c.applied.get_mut(&group).expect("checked");
                applied.unsynced.push_back((*index, end));
                if e.proposer == me {
                    self.prediction_applied(group, e.seq, result.as_ref().ok().map(|r| r.0));
                    self.complete_wait(e.seq, result);
                }
            }
            self.maybe_caught_up(group, *index, now_ms);
        }
    }

    /// A new leader here has applied up to its term's first entry: it may act as coordinator.
    fn maybe_caught_up(&mut self, group: u64, index: u64, now_ms: i64) {
        let Some(c) = &self.cluster else { return };
        if c.roles
            .get(&group)
            .and_then(|r| r.load_at)
            .is_some_and(|at| index >= at)
        {
            self.on_leader_caught_up(group, now_ms);
        }
    }

    /// An applied entry that wrote nothing: durable as soon as what precedes it.
    fn noop_applied(&mut self, group: u64, topic: &str, partition: i32, index: u64) {
        let end = self
            .partition(topic, partition)
            .map_or(0, |l| l.log_end_offset());
        let Some(a) = self
            .cluster
            .as_mut()
            .and_then(|c| c.applied.get_mut(&group))
        else {
            return;
        };
        if a.unsynced.is_empty() {
            a.durable = (index, end);
        } else {
            a.unsynced.push_back((index, end));
        }
    }

    /// Ends an apply round: one sync covers everything applied, and finished requests are
    /// answered once it completes.
    pub fn finish_apply(&mut self) {
        if let Some(c) = &mut self.cluster
            && std::mem::take(&mut c.wrote)
        {
            self.write_seq += 1;
        }
        self.deliver_finished();
    }

    /// Called by `complete_sync`: entries whose data is now durable.
    pub(in crate::broker) fn cluster_synced(&mut self, topic_id: Uuid, partition: i32, end: i64) {
        let Some(c) = &mut self.cluster else { return };
        let Some(name) = self.ids.get(&topic_id) else {
            return;
        };
        let Some(mp) = c.meta.partition(name, partition) else {
            return;
        };
        if let Some(a) = c.applied.get_mut(&mp.group) {
            while let Some(&(index, e)) = a.unsynced.front() {
                if e > end {
                    break;
                }
                a.durable = (index, e);
                a.unsynced.pop_front();
            }
        }
    }

    /// Applied marks that moved since last asked: (group, file path, contents). The runtime
    /// writes them (atomically); Raft entries up to them never need re-applying.
    pub fn take_applied_marks(&mut self) -> Vec<(u64, String, Vec<u8>)> {
        let Some(c) = &mut self.cluster else {
            return Vec::new();
        };
        let mut moved = false;
        for a in c.applied.values_mut() {
            if a.durable.0 > a.recorded {
                a.recorded = a.durable.0;
                a.recorded_end = a.durable.1;
                moved = true;
            }
        }
        if !moved {
            return Vec::new();
        }
        let mut rows: Vec<(u64, u64, i64)> = c
            .applied
            .iter()
            .filter(|(_, a)| a.recorded > 0)
            .map(|(&g, a)| (g, a.recorded, a.recorded_end))
            .collect();
        rows.sort_unstable();
        let mut text = String::with_capacity(rows.len() * 24);
        for (g, index, end) in rows {
            text.push_str(&format!("{g} {index} {end}\n"));
        }
        vec![(META_GROUP, APPLIED_TABLE.to_string(), text.into_bytes())]
    }

    /// Partition groups whose Raft log may now be compacted, to which index, and the snapshot
    /// image to keep there (sent to a replica that falls behind it): the leader hinted the
    /// point and this node's segment log has it durably. Only steps of at least `min_entries`.
    pub fn take_compactions(&mut self, min_entries: u64) -> Vec<(u64, u64, Vec<u8>)> {
        let Some(c) = &mut self.cluster else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for (group, a) in c.applied.iter_mut() {
            // `recorded`: the applied mark handed out to be written, so a restart never finds
            // its mark below the compacted log.
            let to = a.compact_hint.min(a.recorded);
            if to >= a.compacted + min_entries.max(1) && !c.installing.contains_key(group) {
                a.compacted = to;
                due.push((*group, to, a.recorded, a.recorded_end));
            }
        }
        let mut out = Vec::new();
        for (group, to, applied_index, end_offset) in due {
            if let Some(image) = self.partition_image(group, applied_index, end_offset) {
                out.push((group, to, image));
            }
        }
        out
    }

    /// The snapshot image of `group`'s local log at its applied mark `applied_index`, where the
    /// log ended at `end_offset` (`None`: not a partition of this cluster).
    fn partition_image(&self, group: u64, applied_index: u64, end_offset: i64) -> Option<Vec<u8>> {
        let c = self.cluster.as_ref()?;
        let (topic, p) = c.meta.group(group)?;
        let log = self.partition(topic, p).ok();
        let start_offset = log.map_or(0, |l| l.log_start_offset()).min(end_offset);
        let cleaner = log
            .filter(|l| l.config().compact || *l.cleaner_state() != Default::default())
            .map(|l| l.cleaner_state().encode())
            .unwrap_or_default();
        let image = PartitionImage {
            applied_index,
            end_offset,
            start_offset,
            cleaner,
        };
        Some(image.encode())
    }

    /// A snapshot image of `group` at its recorded applied mark, for a replica the stored
    /// snapshot cannot serve (one being added is not in its membership): (index, image), or
    /// `None` when nothing was applied since the last compaction (or it is being installed).
    pub fn compaction_now(&mut self, group: u64) -> Option<(u64, Vec<u8>)> {
        let c = self.cluster.as_mut()?;
        if c.installing.contains_key(&group) {
            return None;
        }
        // Not counted as a compaction step: the replica core may refuse it (below its last
        // membership change), and a later request tries again.
        let a = c.applied.get(&group)?;
        if a.recorded == 0 {
            return None;
        }
        let (to, end_offset) = (a.recorded, a.recorded_end);
        Some((to, self.partition_image(group, to, end_offset)?))
    }

    /// The index up to which the local log of `group` is durable (what a restart resumes from).
    pub fn durable_applied(&self, group: u64) -> u64 {
        self.cluster
            .as_ref()
            .and_then(|c| c.applied.get(&group))
            .map_or(0, |a| a.durable.0)
    }
}

/// What a hosted group whose replicas changed learns: its voters and preferred leader.
fn replicas_changed(
    group: u64,
    topic: &str,
    partition: i32,
    mp: &crate::cluster::MetaPartition,
) -> GroupChange {
    GroupChange::Add {
        group,
        voters: mp.initial_voters().iter().map(|&r| r as u64).collect(),
        preferred: mp.wanted().first().map_or(0, |&r| r as u64),
        applied: 0,
        campaign: false,
        joining: false,
        topic: topic.to_string(),
        partition,
    }
}
