//! ACLs and SCRAM credentials as one replicated value: the standalone broker keeps it in
//! `meta/acls.json` and `meta/users.json`; a cluster keeps it in `__meta`, changed only by
//! [`SecurityChange`]s applied in log order.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_acl::{AclBinding, AclFilter, Acls};
use sluice_sasl::CredentialStore;

use super::scram_admin::{self, ScramChange};

/// ACLs and SCRAM credentials, as the broker holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityState {
    /// ACL bindings.
    pub acls: Acls,
    /// SCRAM credentials (shared with connections doing SASL without the broker lock).
    pub credentials: Arc<CredentialStore>,
}

/// A change to [`SecurityState`], replicated through `__meta` in cluster mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SecurityChange {
    /// Add these bindings.
    CreateAcls(Vec<AclBinding>),
    /// Remove the bindings matching each filter.
    DeleteAcls(Vec<AclFilter>),
    /// Change credentials.
    Scram(Vec<ScramChange>),
}

impl SecurityState {
    /// Applies a change; for DeleteAcls, what each filter removed.
    pub fn apply(&mut self, change: &SecurityChange) -> Vec<Vec<AclBinding>> {
        match change {
            SecurityChange::CreateAcls(list) => {
                for b in list {
                    self.acls.add(b.clone());
                }
                Vec::new()
            }
            SecurityChange::DeleteAcls(filters) => filters
                .iter()
                .map(|f| self.acls.remove_matching(f))
                .collect(),
            SecurityChange::Scram(changes) => {
                let store = Arc::make_mut(&mut self.credentials);
                for c in changes {
                    scram_admin::apply(store, c);
                }
                Vec::new()
            }
        }
    }
}
