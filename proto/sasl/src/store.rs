//! Every user's SCRAM credentials: what the broker persists and authenticates against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ScramCredential, ScramMechanism, crypto};

/// Every user's credentials, by user name then mechanism. Serde (JSON) so the broker
/// persists it atomically; clones are cheap enough (it is small).
///
/// Serialized as `{"users": {"alice": [credential, ...]}}`: each credential carries its
/// own mechanism, so the file cannot disagree with itself. Loading refuses duplicate
/// mechanisms, users without credentials and invalid credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoreRepr", into = "StoreRepr")]
pub struct CredentialStore {
    users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

impl CredentialStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The user's credential for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// Adds or replaces the user's credential for `credential.mechanism`. The user name
    /// is taken as given: refusing empty or over-long names
    /// ([`crate::MAX_USER_NAME_LEN`]) is the caller's policy.
    pub fn upsert(&mut self, user: &str, credential: ScramCredential) {
        self.users
            .entry(user.to_owned())
            .or_default()
            .insert(credential.mechanism, credential);
    }

    /// Removes one mechanism's credential; true if it existed. A user with no credential
    /// left disappears.
    pub fn delete(&mut self, user: &str, mechanism: ScramMechanism) -> bool {
        let Some(creds) = self.users.get_mut(user) else {
            return false;
        };
        let removed = creds.remove(&mechanism).is_some();
        if creds.is_empty() {
            self.users.remove(user);
        }
        removed
    }

    /// Removes every credential of the user; true if the user existed.
    pub fn delete_user(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// (user, [(mechanism, iterations)]) sorted by user, for DescribeUserScramCredentials
    /// and `sluice users list`.
    pub fn users(&self) -> Vec<(String, Vec<(ScramMechanism, u32)>)> {
        self.users
            .iter()
            .map(|(user, creds)| (user.clone(), summary(creds)))
            .collect()
    }

    /// The user's (mechanism, iterations), weakest mechanism first; `None` if unknown.
    pub fn user(&self, user: &str) -> Option<Vec<(ScramMechanism, u32)>> {
        self.users.get(user).map(summary)
    }

    /// True when no user has a credential (e.g. the listener cannot authenticate anyone).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a PLAIN password against the user's strongest SCRAM credential (SHA-512
    /// first). An unknown user still costs one PBKDF2 at the minimum count, so the
    /// answer time says little about whether the user exists.
    pub fn verify_plain(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user).and_then(|c| c.values().next_back()) {
            Some(credential) => credential.verify_password(password),
            None => {
                let m = ScramMechanism::Sha512;
                let _ = crypto::salted_password(m, password, user.as_bytes(), m.min_iterations());
                false
            }
        }
    }
}

fn summary(creds: &BTreeMap<ScramMechanism, ScramCredential>) -> Vec<(ScramMechanism, u32)> {
    creds
        .values()
        .map(|c| (c.mechanism, c.iterations))
        .collect()
}

/// The persisted shape (see [`CredentialStore`]).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreRepr {
    users: BTreeMap<String, Vec<ScramCredential>>,
}

/// Why a persisted store could not be loaded.
#[derive(Debug, thiserror::Error)]
enum StoreReprError {
    #[error("user {user:?} has two {mechanism} credentials")]
    Duplicate {
        user: String,
        mechanism: ScramMechanism,
    },
    #[error("user {user:?} has no credential")]
    Empty { user: String },
}

impl TryFrom<StoreRepr> for CredentialStore {
    type Error = StoreReprError;

    fn try_from(repr: StoreRepr) -> Result<Self, Self::Error> {
        let mut users = BTreeMap::new();
        for (user, list) in repr.users {
            if list.is_empty() {
                return Err(StoreReprError::Empty { user });
            }
            let mut creds = BTreeMap::new();
            for c in list {
                let mechanism = c.mechanism;
                if creds.insert(mechanism, c).is_some() {
                    return Err(StoreReprError::Duplicate { user, mechanism });
                }
            }
            users.insert(user, creds);
        }
        Ok(CredentialStore { users })
    }
}

impl From<CredentialStore> for StoreRepr {
    fn from(store: CredentialStore) -> Self {
        StoreRepr {
            users: store
                .users
                .into_iter()
                .map(|(user, creds)| (user, creds.into_values().collect()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(m: ScramMechanism, password: &str, iterations: u32) -> ScramCredential {
        ScramCredential::from_password(m, password.as_bytes(), b"salty", iterations).unwrap()
    }

    #[test]
    fn upsert_get_delete() {
        let mut s = CredentialStore::new();
        assert!(s.is_empty());
        s.upsert("alice", cred(ScramMechanism::Sha256, "a", 4096));
        s.upsert("alice", cred(ScramMechanism::Sha512, "a", 8192));
        s.upsert("bob", cred(ScramMechanism::Sha256, "b", 4096));
        assert!(!s.is_empty());
        assert_eq!(
            s.get("alice", ScramMechanism::Sha512).unwrap().iterations,
            8192
        );
        assert!(s.get("bob", ScramMechanism::Sha512).is_none());
        assert!(s.get("carol", ScramMechanism::Sha256).is_none());

        // Upsert replaces.
        s.upsert("bob", cred(ScramMechanism::Sha256, "b2", 5000));
        assert_eq!(
            s.users(),
            vec![
                (
                    "alice".to_owned(),
                    vec![
                        (ScramMechanism::Sha256, 4096),
                        (ScramMechanism::Sha512, 8192)
                    ]
                ),
                ("bob".to_owned(), vec![(ScramMechanism::Sha256, 5000)]),
            ]
        );
        assert_eq!(s.user("bob"), Some(vec![(ScramMechanism::Sha256, 5000)]));
        assert_eq!(s.user("carol"), None);

        assert!(s.delete("alice", ScramMechanism::Sha256));
        assert!(!s.delete("alice", ScramMechanism::Sha256));
        assert_eq!(s.user("alice"), Some(vec![(ScramMechanism::Sha512, 8192)]));
        assert!(s.delete("alice", ScramMechanism::Sha512));
        assert_eq!(
            s.user("alice"),
            None,
            "a user with no credential disappears"
        );
        assert!(!s.delete("alice", ScramMechanism::Sha512));

        assert!(s.delete_user("bob"));
        assert!(!s.delete_user("bob"));
        assert!(s.is_empty());
    }

    #[test]
    fn verify_plain_uses_strongest() {
        let mut s = CredentialStore::new();
        s.upsert("alice", cred(ScramMechanism::Sha256, "old", 4096));
        assert!(s.verify_plain("alice", b"old"));
        s.upsert("alice", cred(ScramMechanism::Sha512, "new", 4096));
        assert!(s.verify_plain("alice", b"new"));
        assert!(
            !s.verify_plain("alice", b"old"),
            "SHA-512 wins over SHA-256"
        );
        assert!(!s.verify_plain("alice", b""));
        assert!(!s.verify_plain("nobody", b"new"));
    }

    #[test]
    fn json_round_trip() {
        let mut s = CredentialStore::new();
        s.upsert("alice", cred(ScramMechanism::Sha256, "a", 4096));
        s.upsert("alice", cred(ScramMechanism::Sha512, "a", 4096));
        s.upsert("b,o=b", cred(ScramMechanism::Sha512, "b", 10000));
        let json = serde_json::to_string_pretty(&s).unwrap();
        let back: CredentialStore = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(back.verify_plain("b,o=b", b"b"));

        let empty: CredentialStore = serde_json::from_str(r#"{"users":{}}"#).unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            serde_json::to_string(&CredentialStore::new()).unwrap(),
            r#"{"users":{}}"#
        );
    }

    #[test]
    fn json_refuses_inconsistent_files() {
        let c = serde_json::to_value(cred(ScramMechanism::Sha256, "a", 4096)).unwrap();
        let dup = serde_json::json!({ "users": { "alice": [c.clone(), c.clone()] } });
        assert!(serde_json::from_value::<CredentialStore>(dup).is_err());
        let empty_user = serde_json::json!({ "users": { "alice": [] } });
        assert!(serde_json::from_value::<CredentialStore>(empty_user).is_err());
        let mut bad = c;
        bad["iterations"] = 1.into();
        let bad = serde_json::json!({ "users": { "alice": [bad] } });
        assert!(serde_json::from_value::<CredentialStore>(bad).is_err());
        assert!(serde_json::from_str::<CredentialStore>("[]").is_err());
    }
}
