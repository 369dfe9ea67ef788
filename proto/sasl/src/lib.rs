//! Sans-IO SASL for Sluice's Kafka listener: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677) as Kafka speaks them, plus the salted credential store they
//! authenticate against.
//!
//! Nothing here does I/O, reads a clock or draws randomness: the broker passes in the
//! client's bytes, the store, and random nonces and salts, and sends back what
//! [`Authenticator::step`] returns. That keeps the exchange deterministic under test.
//!
//! ```
//! use sluice_sasl::{Authenticator, CredentialStore, Mechanism, ScramCredential, ScramMechanism, Step};
//!
//! let mut store = CredentialStore::new();
//! let salt = b"random salt from the caller";
//! let cred = ScramCredential::from_password(ScramMechanism::Sha256, b"pw", salt, 4096).unwrap();
//! store.upsert("alice", cred);
//!
//! let mut auth = Authenticator::new(Mechanism::Plain, String::new());
//! let step = auth.step(b"\0alice\0pw", &store).unwrap();
//! assert_eq!(step, Step::Done { user: "alice".into(), final_message: vec![] });
//! ```

#![deny(missing_docs)]

mod authenticator;
mod client;
mod credential;
mod crypto;
mod mechanism;
mod plain;
mod scram;
mod store;

#[cfg(test)]
mod tests;

pub use authenticator::{AuthError, Authenticator, InvalidServerNonce, Step};
pub use client::{ClientError, ScramClient, plain_message};
pub use credential::{CredentialError, ScramCredential};
pub use mechanism::{Mechanism, ScramMechanism};
pub use store::CredentialStore;

/// Longest user name accepted from a client, in UTF-8 bytes (Kafka has no limit; this
/// bounds memory and log lines).
pub const MAX_USER_NAME_LEN: usize = 255;

/// Longest PLAIN password accepted, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Longest credential salt; it travels in every server-first message.
pub const MAX_SALT_LEN: usize = 1024;

/// Fewest bytes of server nonce [`Authenticator::new`] accepts for SCRAM.
pub const MIN_SERVER_NONCE_LEN: usize = 18;
