//! DescribeUserScramCredentials and AlterUserScramCredentials over the credential store.
//!
//! An alteration is checked whole first ([`plan_alter`]): every user gets a result, and the
//! changes of users whose every operation is valid come out as [`ScramChange`]s, which the
//! standalone broker applies and persists at once and a cluster node replicates through
//! `__meta` before applying.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use sluice_sasl::{CredentialStore, ScramCredential, ScramMechanism};

/// One change to the credential store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramChange {
    /// Sets a user's credential for its mechanism.
    Upsert {
        /// User name (without `User:`).
        user: String,
        /// The salted credential.
        credential: ScramCredential,
    },
    /// Removes a user's credential for one mechanism.
    Delete {
        /// User name.
        user: String,
        /// Mechanism.
        mechanism: ScramMechanism,
    },
}

/// Applies one change.
pub fn apply(store: &mut CredentialStore, change: &ScramChange) {
    match change {
        ScramChange::Upsert { user, credential } => store.upsert(user, credential.clone()),
        ScramChange::Delete { user, mechanism } => {
            store.delete(user, *mechanism);
        }
    }
}

/// Answers DescribeUserScramCredentials: all users when `users` is null or empty.
pub fn describe(
    store: &CredentialStore,
    req: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let infos = |list: Vec<(ScramMechanism, u32)>| -> Vec<CredentialInfo> {
        list.into_iter()
            .map(|(m, i)| {
                CredentialInfo::default()
                    .with_mechanism(m.kafka_type())
                    .with_iterations(i as i32)
            })
            .collect()
    };
    let results = match req.users.as_ref().filter(|u| !u.is_empty()) {
        None => store
            .users()
            .into_iter()
            .map(|(user, list)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user))
                    .with_credential_infos(infos(list))
            })
            .collect(),
        Some(users) => {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for u in users {
                let name = u.name.to_string();
                if !seen.insert(name.clone()) {
                    out.push(
                        DescribeUserScramCredentialsResult::default()
                            .with_user(u.name.clone())
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            )))),
                    );
                    continue;
                }
                let r = DescribeUserScramCredentialsResult::default().with_user(u.name.clone());
                out.push(match store.user(&name) {
                    Some(list) => r.with_credential_infos(infos(list)),
                    None => r
                        .with_error_code(ResponseError::ResourceNotFound.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Attempt to describe a user credential that does not exist: {name}"
                        )))),
                });
            }
            out
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// Checks an AlterUserScramCredentials request against `store`: the changes to make, and the
/// response to send once they are made.
pub fn plan_alter(
    store: &CredentialStore,
    req: &AlterUserScramCredentialsRequest,
) -> (Vec<ScramChange>, AlterUserScramCredentialsResponse) {
    // Per user: the first error, or the changes.
    let mut users: BTreeMap<String, Result<Vec<ScramChange>, (ResponseError, String)>> =
        BTreeMap::new();
    let mut seen: std::collections::HashSet<(String, i8)> = std::collections::HashSet::new();
    let fail = |users: &mut BTreeMap<_, Result<Vec<ScramChange>, _>>,
                user: &str,
                e: ResponseError,
                msg: String| {
        let entry = users.entry(user.to_string()).or_insert(Ok(Vec::new()));
        if entry.is_ok() {
            *entry = Err((e, msg));
        }
    };
    let push =
        |users: &mut BTreeMap<String, Result<Vec<ScramChange>, _>>, user: &str, c: ScramChange| {
            if let Ok(v) = users.entry(user.to_string()).or_insert(Ok(Vec::new())) {
                v.push(c);
            }
        };
    let ops = req
        .deletions
        .iter()
        .map(|d| (d.name.to_string(), d.mechanism, None))
        .chain(
            req.upsertions
                .iter()
                .map(|u| (u.name.to_string(), u.mechanism, Some(u))),
        );
    for (user, mech_code, upsert) in ops {
        if user.is_empty() {
            fail(
                &mut users,
                &user,
                ResponseError::UnacceptableCredential,
                "Username must not be empty".into(),
            );
            continue;
        }
        if !seen.insert((user.clone(), mech_code)) {
            fail(
                &mut users,
                &user,
                ResponseError::DuplicateResource,
                format!(
                    "A user credential cannot be altered twice in the same request: {user} (mechanism {mech_code})"
                ),
            );
            continue;
        }
        let Some(mechanism) = ScramMechanism::from_kafka_type(mech_code) else {
            fail(
                &mut users,
                &user,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {mech_code}"),
            );
            continue;
        };
        match upsert {
            None => {
                if store.get(&user, mechanism).is_none() {
                    fail(
                        &mut users,
                        &user,
                        ResponseError::ResourceNotFound,
                        format!(
                            "Attempt to delete a user credential that does not exist: {user} {}",
                            mechanism.name()
                        ),
                    );
                    continue;
                }
                push(
                    &mut users,
                    &user,
                    ScramChange::Delete {
                        user: user.clone(),
                        mechanism,
                    },
                );
            }
            Some(u) => {
                let iterations = u32::try_from(u.iterations).unwrap_or(0);
                match ScramCredential::from_salted_password(
                    mechanism,
                    &u.salted_password,
                    &u.salt,
                    iterations,
                ) {
                    Ok(credential) => push(
                        &mut users,
                        &user,
                        ScramChange::Upsert {
                            user: user.clone(),
                            credential,
                        },
                    ),
                    Err(e) => fail(
                        &mut users,
                        &user,
                        ResponseError::UnacceptableCredential,
                        e.to_string(),
                    ),
                }
            }
        }
    }
    let mut changes = Vec::new();
    let mut results = Vec::new();
    for (user, outcome) in users {
        let r = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
        results.push(match outcome {
            Ok(c) => {
                changes.extend(c);
                r
            }
            Err((e, msg)) => r
                .with_error_code(e.code())
                .with_error_message(Some(StrBytes::from_string(msg))),
        });
    }
    (
        changes,
        AlterUserScramCredentialsResponse::default().with_results(results),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;

    fn upsert(user: &str, mech: i8, iterations: i32) -> ScramCredentialUpsertion {
        let len = if mech == 2 { 64 } else { 32 };
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.into()))
            .with_mechanism(mech)
            .with_iterations(iterations)
            .with_salt(bytes::Bytes::from_static(b"0123456789abcdef"))
            .with_salted_password(bytes::Bytes::from(vec![7u8; len]))
    }

    #[test]
    fn alter_then_describe() {
        let mut store = CredentialStore::default();
        let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            upsert("alice", 2, 8192),
            upsert("bob", 1, 4096),
            upsert("carol", 1, 10),
        ]);
        let (changes, resp) = plan_alter(&store, &req);
        assert_eq!(changes.len(), 2);
        let codes: Vec<(String, i16)> = resp
            .results
            .iter()
            .map(|r| (r.user.to_string(), r.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![
                ("alice".into(), 0),
                ("bob".into(), 0),
                ("carol".into(), ResponseError::UnacceptableCredential.code())
            ]
        );
        for c in &changes {
            apply(&mut store, c);
        }
        let d = describe(&store, &DescribeUserScramCredentialsRequest::default());
        assert_eq!(d.results.len(), 2);
        assert_eq!(d.results[0].credential_infos[0].iterations, 8192);
        assert_eq!(d.results[0].credential_infos[0].mechanism, 2);
        let one = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            UserName::default().with_name(StrBytes::from_static_str("nobody")),
        ]));
        assert_eq!(
            describe(&store, &one).results[0].error_code,
            ResponseError::ResourceNotFound.code()
        );
        // Deleting what does not exist is refused; a duplicate in one request too.
        let del = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("alice"))
                    .with_mechanism(1),
            ])
            .with_upsertions(vec![upsert("bob", 1, 4096), upsert("bob", 1, 4096)]);
        let (changes, resp) = plan_alter(&store, &del);
        assert!(changes.is_empty());
        assert!(resp.results.iter().all(|r| r.error_code != 0));
    }
}
