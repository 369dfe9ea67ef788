//! The broker's side of security: requests from a [`Session`] are authorized before they are
//! handled, and the ACL and SCRAM-credential admin APIs. Standalone, ACLs and credentials live
//! in `meta/acls.json` and `meta/users.json` (replaced atomically); in cluster mode they are
//! `__meta` state, changed only through its log.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterUserScramCredentialsResponse, CreateAclsResponse, DeleteAclsResponse, ListGroupsResponse,
    RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use sluice_acl::{AclBinding, AclFilter, Acls, Operation, ResourceType};
use sluice_sasl::CredentialStore;
use tracing::{info, warn};

use super::{Broker, BrokerError, Reply, read_json};
use crate::codec::RequestContext;
use crate::security::authorize::{self, Context, Decision, Denied};
use crate::security::scram_admin;
pub use crate::security::state::{SecurityChange, SecurityState};
use crate::security::{CLUSTER_RESOURCE, Session};

pub(super) const ACLS_FILE: &str = "meta/acls.json";
pub(super) const USERS_FILE: &str = "meta/users.json";

/// Reads the standalone broker's ACLs and credentials.
pub(super) fn load(fs: &dyn crate::storage::Storage) -> Result<SecurityState, BrokerError> {
    let acls: Acls = read_json(fs, ACLS_FILE)?.unwrap_or_default();
    let credentials: CredentialStore = read_json(fs, USERS_FILE)?.unwrap_or_default();
    Ok(SecurityState {
        acls,
        credentials: Arc::new(credentials),
    })
}

impl Broker {
    /// The SCRAM credential store, for SASL exchanges run outside the broker lock.
    pub fn credentials(&self) -> Arc<CredentialStore> {
        self.security.credentials.clone()
    }

    /// ACLs and credentials.
    pub fn security_state(&self) -> &SecurityState {
        &self.security
    }

    /// Whether `session` may do `op` on a resource: always without an authorizer; super users
    /// and cluster nodes may do everything; otherwise the ACLs decide (no match: denied).
    pub fn may(&self, session: &Session, op: Operation, rt: ResourceType, name: &str) -> bool {
        let allowed = self.may_quietly(session, op, rt, name);
        if !allowed {
            self.denials.borrow_mut().count(rt);
            info!(
                node_id = self.config.node_id,
                principal = %session.principal,
                host = %session.host,
                operation = %op,
                resource_type = %rt,
                resource = %name,
                "authorization denied"
            );
        }
        allowed
    }

    /// [`Broker::may`] without logging or counting a denial: for filtering listings.
    pub fn may_quietly(
        &self,
        session: &Session,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        let sec = &self.config.security;
        if !sec.authorizer || session.node.is_some() || sec.super_users.contains(&session.principal)
        {
            return true;
        }
        self.security
            .acls
            .authorize(&session.principal, &session.host, op, rt, name)
    }

    /// Handles one request from an authenticated session: authorizes it, handles what it may
    /// do, and returns the reply with the denied parts (to add to the response once it is
    /// ready: [`Denied::apply`]; already applied to a [`Reply::Now`]).
    pub fn handle_session(
        &mut self,
        session: &Session,
        ctx: &RequestContext,
        body: RequestKind,
        now_ms: i64,
    ) -> (Reply, Denied) {
        self.listener = Some(session.listener.clone());
        if let Some(c) = &mut self.cluster {
            c.listener = self.listener.clone();
        }
        let (reply, denied) = self.handle_authorized(session, ctx, body, now_ms);
        self.listener = None;
        if let Some(c) = &mut self.cluster {
            c.listener = None;
        }
        match reply {
            Reply::Now(mut resp) => {
                denied.apply(&mut resp);
                if let ResponseKind::ListGroups(r) = &mut resp {
                    self.filter_groups(session, r);
                }
                if let ResponseKind::ListTransactions(r) = &mut resp {
                    // Only the transactional ids the principal may describe (as Kafka).
                    r.transaction_states.retain(|t| {
                        self.may_quietly(
                            session,
                            Operation::Describe,
                            ResourceType::TransactionalId,
                            &t.transactional_id.0,
                        )
                    });
                }
                (Reply::Now(resp), Denied::default())
            }
            other => (other, denied),
        }
    }

    fn handle_authorized(
        &mut self,
        session: &Session,
        ctx: &RequestContext,
        body: RequestKind,
        now_ms: i64,
    ) -> (Reply, Denied) {
        let v = ctx.api_version;
        let may_cluster =
            |b: &Broker, op| b.may(session, op, ResourceType::Cluster, CLUSTER_RESOURCE);
        match body {
            RequestKind::CreateAcls(r) => {
                if !may_cluster(self, Operation::Alter) {
                    let results = r
                        .creations
                        .iter()
                        .map(|_| sluice_acl::create_result(Err(cluster_denied_acl())))
                        .collect();
                    return now(ResponseKind::CreateAcls(
                        CreateAclsResponse::default().with_results(results),
                    ));
                }
                let parsed: Vec<_> = r.creations.iter().map(AclBinding::from_creation).collect();
                let valid: Vec<AclBinding> = parsed
                    .iter()
                    .filter_map(|p| p.as_ref().ok().cloned())
                    .collect();
                let results = parsed
                    .into_iter()
                    .map(|p| sluice_acl::create_result(p.map(|_| ())))
                    .collect();
                let resp = CreateAclsResponse::default().with_results(results);
                if valid.is_empty() {
                    return now(ResponseKind::CreateAcls(resp));
                }
                let change = SecurityChange::CreateAcls(valid);
                (
                    self.change_security(change, ResponseKind::CreateAcls(resp), now_ms),
                    Denied::default(),
                )
            }
            RequestKind::DeleteAcls(r) => {
                if !may_cluster(self, Operation::Alter) {
                    let results = r
                        .filters
                        .iter()
                        .map(|_| sluice_acl::delete_result(Err(cluster_denied_acl())))
                        .collect();
                    return now(ResponseKind::DeleteAcls(
                        DeleteAclsResponse::default().with_filter_results(results),
                    ));
                }
                let parsed: Vec<_> = r.filters.iter().map(AclFilter::from_delete).collect();
                if parsed.iter().any(|p| p.is_err()) {
                    // Kafka validates every filter before deleting anything.
                    let results = parsed
                        .into_iter()
                        .map(|p| sluice_acl::delete_result(p.map(|_| Vec::new())))
                        .collect();
                    return now(ResponseKind::DeleteAcls(
                        DeleteAclsResponse::default().with_filter_results(results),
                    ));
                }
                let filters: Vec<AclFilter> = parsed.into_iter().map(Result::unwrap).collect();
                // The answer lists what each filter removes; computed from the current set
                // (in cluster mode the apply may differ only if another change came first).
                let results = filters
                    .iter()
                    .map(|f| sluice_acl::delete_result(Ok(self.security.acls.matching(f))))
                    .collect();
                let resp = DeleteAclsResponse::default().with_filter_results(results);
                let change = SecurityChange::DeleteAcls(filters);
                (
                    self.change_security(change, ResponseKind::DeleteAcls(resp), now_ms),
                    Denied::default(),
                )
            }
            RequestKind::DescribeAcls(r) => {
                let result = if !may_cluster(self, Operation::Describe) {
                    Err(cluster_denied_acl())
                } else {
                    AclFilter::from_describe(&r).map(|f| self.security.acls.matching(&f))
                };
                now(ResponseKind::DescribeAcls(sluice_acl::describe_response(
                    result,
                )))
            }
            RequestKind::DescribeUserScramCredentials(r) => {
                if !may_cluster(self, Operation::Describe) {
                    return now(ResponseKind::DescribeUserScramCredentials(
                        // No error message, as Kafka: librdkafka (2.16) crashes on one here.
                        kafka_protocol::messages::DescribeUserScramCredentialsResponse::default()
                            .with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
                    ));
                }
                now(ResponseKind::DescribeUserScramCredentials(
                    scram_admin::describe(&self.security.credentials, &r),
                ))
            }
            RequestKind::AlterUserScramCredentials(r) => {
                if !may_cluster(self, Operation::Alter) {
                    let mut users: Vec<String> = r
                        .deletions
                        .iter()
                        .map(|d| d.name.to_string())
                        .chain(r.upsertions.iter().map(|u| u.name.to_string()))
                        .collect();
                    users.sort();
                    users.dedup();
                    let results = users
                        .into_iter()
                        .map(|u| {
                            kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                                .with_user(StrBytes::from_string(u))
                                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                        })
                        .collect();
                    return now(ResponseKind::AlterUserScramCredentials(
                        AlterUserScramCredentialsResponse::default().with_results(results),
                    ));
                }
                let (changes, resp) = scram_admin::plan_alter(&self.security.credentials, &r);
                if changes.is_empty() {
                    return now(ResponseKind::AlterUserScramCredentials(resp));
                }
                (
                    self.change_security(
                        SecurityChange::Scram(changes),
                        ResponseKind::AlterUserScramCredentials(resp),
                        now_ms,
                    ),
                    Denied::default(),
                )
            }
            body => {
                let (body, denied) = {
                    let all_topics = || self.topics.keys().cloned().collect::<Vec<_>>();
                    let name_of = |id| self.ids.get(&id).cloned();
                    let may = |op, rt, name: &str| self.may(session, op, rt, name);
                    let quiet = |op, rt, name: &str| self.may_quietly(session, op, rt, name);
                    let cx = Context {
                        may: &may,
                        may_quietly: &quiet,
                        name_of: &name_of,
                        all_topics: &all_topics,
                        version: v,
                        node: session.node,
                    };
                    match authorize::check(body, &cx) {
                        Decision::Refuse(resp) => return now(resp),
                        Decision::Serve(body, denied) => (body, denied),
                    }
                };
                // Only the group coordinator shows client hosts (DescribeGroups).
                let host = if session.host.is_empty() || !super::groups::is_group_request(&body) {
                    String::new()
                } else {
                    format!("/{}", session.host)
                };
                // Metadata v0-3 has no auto-creation flag: `check` could not turn it off.
                if v < 4
                    && let RequestKind::Metadata(r) = &body
                    && !r.allow_auto_topic_creation
                {
                    self.auto_create_denied = !self.may_quietly(
                        session,
                        Operation::Create,
                        ResourceType::Cluster,
                        CLUSTER_RESOURCE,
                    );
                }
                let reply = self.handle_from(ctx, &host, body, now_ms);
                self.auto_create_denied = false;
                (reply, denied)
            }
        }
    }

    /// ListGroups without DESCRIBE on the cluster lists only the groups the principal may
    /// describe.
    fn filter_groups(&self, session: &Session, r: &mut ListGroupsResponse) {
        let quiet = |op, rt, name: &str| self.may_quietly(session, op, rt, name);
        if quiet(Operation::Describe, ResourceType::Cluster, CLUSTER_RESOURCE) {
            return;
        }
        r.groups
            .retain(|g| quiet(Operation::Describe, ResourceType::Group, &g.group_id));
    }

    /// Makes a security change: standalone, applied and persisted now (the answer waits for
    /// nothing more); in cluster mode proposed to `__meta` and answered once applied.
    fn change_security(
        &mut self,
        change: SecurityChange,
        response: ResponseKind,
        now_ms: i64,
    ) -> Reply {
        if self.is_cluster() {
            return self.propose_security(change, response);
        }
        let _ = now_ms;
        let before = self.security.clone();
        self.security.apply(&change);
        if let Err(e) = self.persist_security() {
            warn!(node_id = self.config.node_id, error = %e, "persisting ACLs/credentials failed");
            self.security = before;
            return Reply::Now(storage_failed(response));
        }
        Reply::Now(response)
    }

    pub(super) fn persist_security(&self) -> std::io::Result<()> {
        self.fs.write_file_atomic(
            ACLS_FILE,
            &serde_json::to_vec_pretty(&self.security.acls).expect("ACLs serialize"),
        )?;
        self.fs.write_file_atomic(
            USERS_FILE,
            &serde_json::to_vec_pretty(&*self.security.credentials).expect("credentials serialize"),
        )
    }
}

fn now(resp: ResponseKind) -> (Reply, Denied) {
    (Reply::Now(resp), Denied::default())
}

fn cluster_denied_acl() -> sluice_acl::AclError {
    sluice_acl::AclError::Invalid {
        code: ResponseError::ClusterAuthorizationFailed.code(),
        message: "Authorization failed.".into(),
    }
}

/// The same answer, every entry failed with KAFKA_STORAGE_ERROR (nothing was changed).
fn storage_failed(mut response: ResponseKind) -> ResponseKind {
    fail_all(
        &mut response,
        ResponseError::KafkaStorageError,
        "could not persist the change",
    );
    response
}

/// Fails every entry of a security admin answer with `error` (the change was not made).
pub(super) fn fail_all(response: &mut ResponseKind, error: ResponseError, message: &str) {
    let code = error.code();
    let msg = Some(StrBytes::from_string(message.to_string()));
    match response {
        ResponseKind::CreateAcls(r) => {
            for x in &mut r.results {
                x.error_code = code;
                x.error_message = msg.clone();
            }
        }
        ResponseKind::DeleteAcls(r) => {
            for x in &mut r.filter_results {
                x.error_code = code;
                x.error_message = msg.clone();
                x.matching_acls.clear();
            }
        }
        ResponseKind::AlterUserScramCredentials(r) => {
            for x in &mut r.results {
                x.error_code = code;
                x.error_message = msg.clone();
            }
        }
        ResponseKind::AddRaftVoter(r) => {
            r.error_code = code;
            r.error_message = msg;
        }
        ResponseKind::RemoveRaftVoter(r) => {
            r.error_code = code;
            r.error_message = msg;
        }
        _ => {}
    }
}

/// Authorization denials counted by ACL resource type, for metrics.
#[derive(Debug, Default, Clone)]
pub struct Denials {
    by_type: std::collections::BTreeMap<String, u64>,
}

impl Denials {
    fn count(&mut self, rt: ResourceType) {
        *self.by_type.entry(rt.to_string()).or_default() += 1;
    }
}

impl Broker {
    /// Authorization denials so far, by resource type (`TOPIC`, `GROUP`, ...).
    pub fn denials(&self) -> Vec<(String, u64)> {
        self.denials
            .borrow()
            .by_type
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

impl Broker {
    /// Cluster mode: proposes a security change to `__meta`; the answer waits for its apply.
    fn propose_security(&mut self, change: SecurityChange, response: ResponseKind) -> Reply {
        let token = self.new_token();
        self.security_proposal(token, change, response);
        Reply::Parked { token }
    }
}

impl Broker {
    /// Cluster mode: copies users and ACLs of this node's data dir into `__meta` (users and
    /// bindings `__meta` lacks; it never overwrites), then removes the local files so a later
    /// change through the Kafka APIs is never undone by a restart.
    pub(super) fn import_security(&mut self, meta_caught_up: bool) {
        let Some(local) = &self.security_import else {
            return;
        };
        if !meta_caught_up || !self.cluster_ready() {
            return;
        }
        let Some(meta) = self.meta().map(|m| &m.security) else {
            return;
        };
        let mut creds = Vec::new();
        for (user, list) in local.credentials.users() {
            if meta.credentials.user(&user).is_some() {
                continue;
            }
            for (mech, _) in list {
                if let Some(c) = local.credentials.get(&user, mech) {
                    creds.push(crate::security::scram_admin::ScramChange::Upsert {
                        user: user.clone(),
                        credential: c.clone(),
                    });
                }
            }
        }
        let acls: Vec<AclBinding> = local
            .acls
            .iter()
            .filter(|b| meta.acls.matching(&AclFilter::exact(b)).is_empty())
            .cloned()
            .collect();
        if creds.is_empty() && acls.is_empty() {
            let users = local.credentials.users().len();
            let bindings = local.acls.len();
            for f in [ACLS_FILE, USERS_FILE] {
                match self.fs.remove_file(f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(node_id = self.config.node_id, file = f, error = %e, "removing an imported file failed")
                    }
                }
            }
            info!(
                node_id = self.config.node_id,
                users,
                acls = bindings,
                "users and ACLs of the local data dir are in the cluster's metadata"
            );
            self.security_import = None;
            return;
        }
        let now = self.cluster_clock();
        if !super::cluster::due(self.last_import, now, 3000) {
            return;
        }
        self.last_import = Some(now);
        let mut changes = Vec::new();
        if !creds.is_empty() {
            changes.push(SecurityChange::Scram(creds));
        }
        if !acls.is_empty() {
            changes.push(SecurityChange::CreateAcls(acls));
        }
        for change in changes {
            self.propose_meta(crate::cluster::MetaCommand::Security {
                request: None,
                change,
            });
        }
    }
}
