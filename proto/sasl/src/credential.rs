//! Salted SCRAM credentials and the rules Kafka applies when they are created.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use subtle::Choice;

use crate::{MAX_SALT_LEN, ScramMechanism, crypto};

/// Why a credential was refused. The Display text is meant for Kafka's `error_message`
/// (AlterUserScramCredentials answers these with UNACCEPTABLE_CREDENTIAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Fewer PBKDF2 iterations than Kafka allows.
    #[error("Iterations {iterations} is less than the minimum {minimum} for {mechanism}")]
    TooFewIterations {
        /// Mechanism of the credential.
        mechanism: ScramMechanism,
        /// Iterations requested.
        iterations: u32,
        /// [`ScramMechanism::min_iterations`].
        minimum: u32,
    },
    /// More PBKDF2 iterations than Kafka allows.
    #[error("Iterations {iterations} is more than the maximum {maximum} for {mechanism}")]
    TooManyIterations {
        /// Mechanism of the credential.
        mechanism: ScramMechanism,
        /// Iterations requested.
        iterations: u32,
        /// [`ScramMechanism::max_iterations`].
        maximum: u32,
    },
    /// An empty salt would make equal passwords produce equal credentials.
    #[error("Salt must not be empty for {mechanism}")]
    EmptySalt {
        /// Mechanism of the credential.
        mechanism: ScramMechanism,
    },
    /// The salt is sent in every server-first message, so it is kept small.
    #[error("Salt of {len} bytes is longer than the maximum {maximum} for {mechanism}")]
    SaltTooLong {
        /// Mechanism of the credential.
        mechanism: ScramMechanism,
        /// Length given.
        len: usize,
        /// [`MAX_SALT_LEN`].
        maximum: usize,
    },
    /// A salted password (or stored/server key) must be exactly one hash output long.
    #[error("{field} for {mechanism} must be {expected} bytes, not {actual}")]
    WrongLength {
        /// Which value: "Salted password", "Stored key" or "Server key".
        field: &'static str,
        /// Mechanism of the credential.
        mechanism: ScramMechanism,
        /// [`ScramMechanism::hash_len`].
        expected: usize,
        /// Length given.
        actual: usize,
    },
}

/// A salted, iterated credential: never the password (RFC 5802 section 3). Serde so the
/// broker can persist it; binary fields are base64 in the serialized form, and
/// deserializing re-checks [`ScramCredential::validate`] so a damaged file is refused
/// instead of silently locking the user out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CredentialRepr", into = "CredentialRepr")]
pub struct ScramCredential {
    /// Hash function the keys were derived with.
    pub mechanism: ScramMechanism,
    /// Salt sent to the client in server-first.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: checks a client proof.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs server-final.
    pub server_key: Vec<u8>,
    /// PBKDF2 iteration count sent to the client in server-first.
    pub iterations: u32,
}

impl ScramCredential {
    /// From a password: SaltedPassword = PBKDF2(HMAC-H, password, salt, i).
    /// Costs `iterations` HMACs, so callers on an async runtime may want a blocking thread.
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        // Check before the PBKDF2 so a huge iteration count costs nothing.
        check_params(mechanism, salt, iterations)?;
        let salted = crypto::salted_password(mechanism, password, salt, iterations);
        Self::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// From an already salted password, which is what Kafka's AlterUserScramCredentials
    /// carries (field `salted_password`), so the broker never sees the password.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        check_params(mechanism, salt, iterations)?;
        check_len("Salted password", mechanism, salted_password)?;
        let (stored_key, server_key) = crypto::derive_keys(mechanism, salted_password);
        Ok(ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            stored_key,
            server_key,
            iterations,
        })
    }

    /// Checks every rule `from_*` applies; the fields are public, so a credential built
    /// by hand or read from disk can be checked before it is trusted.
    pub fn validate(&self) -> Result<(), CredentialError> {
        check_params(self.mechanism, &self.salt, self.iterations)?;
        check_len("Stored key", self.mechanism, &self.stored_key)?;
        check_len("Server key", self.mechanism, &self.server_key)
    }

    /// Checks a clear-text password (SASL/PLAIN against the SCRAM store) in constant time.
    /// Costs `iterations` HMACs.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        self.verify_password_choice(password).into()
    }

    pub(crate) fn verify_password_choice(&self, password: &[u8]) -> Choice {
        // Never run PBKDF2 with an out-of-range count from a hand-built credential.
        if self.validate().is_err() {
            return Choice::from(0);
        }
        let salted = crypto::salted_password(self.mechanism, password, &self.salt, self.iterations);
        let (stored_key, server_key) = crypto::derive_keys(self.mechanism, &salted);
        crypto::ct_eq(&stored_key, &self.stored_key) & crypto::ct_eq(&server_key, &self.server_key)
    }
}

fn check_params(
    mechanism: ScramMechanism,
    salt: &[u8],
    iterations: u32,
) -> Result<(), CredentialError> {
    if iterations < mechanism.min_iterations() {
        return Err(CredentialError::TooFewIterations {
            mechanism,
            iterations,
            minimum: mechanism.min_iterations(),
        });
    }
    if iterations > mechanism.max_iterations() {
        return Err(CredentialError::TooManyIterations {
            mechanism,
            iterations,
            maximum: mechanism.max_iterations(),
        });
    }
    if salt.is_empty() {
        return Err(CredentialError::EmptySalt { mechanism });
    }
    if salt.len() > MAX_SALT_LEN {
        return Err(CredentialError::SaltTooLong {
            mechanism,
            len: salt.len(),
            maximum: MAX_SALT_LEN,
        });
    }
    Ok(())
}

fn check_len(
    field: &'static str,
    mechanism: ScramMechanism,
    value: &[u8],
) -> Result<(), CredentialError> {
    if value.len() == mechanism.hash_len() {
        Ok(())
    } else {
        Err(CredentialError::WrongLength {
            field,
            mechanism,
            expected: mechanism.hash_len(),
            actual: value.len(),
        })
    }
}

/// The persisted shape: base64 strings instead of JSON arrays of numbers.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialRepr {
    mechanism: ScramMechanism,
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: u32,
}

/// Why a persisted credential could not be loaded.
#[derive(Debug, thiserror::Error)]
enum ReprError {
    #[error("{field} is not valid base64: {source}")]
    Base64 {
        field: &'static str,
        source: base64::DecodeError,
    },
    #[error(transparent)]
    Invalid(#[from] CredentialError),
}

impl TryFrom<CredentialRepr> for ScramCredential {
    type Error = ReprError;

    fn try_from(r: CredentialRepr) -> Result<Self, Self::Error> {
        let decode = |field: &'static str, s: &str| {
            BASE64
                .decode(s)
                .map_err(|source| ReprError::Base64 { field, source })
        };
        let credential = ScramCredential {
            mechanism: r.mechanism,
            salt: decode("salt", &r.salt)?,
            stored_key: decode("stored_key", &r.stored_key)?,
            server_key: decode("server_key", &r.server_key)?,
            iterations: r.iterations,
        };
        credential.validate()?;
        Ok(credential)
    }
}

impl From<ScramCredential> for CredentialRepr {
    fn from(c: ScramCredential) -> Self {
        CredentialRepr {
            mechanism: c.mechanism,
            salt: BASE64.encode(&c.salt),
            stored_key: BASE64.encode(&c.stored_key),
            server_key: BASE64.encode(&c.server_key),
            iterations: c.iterations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &[u8] = b"0123456789abcdef";

    #[test]
    fn password_round_trip_both_mechanisms() {
        for m in ScramMechanism::ALL {
            let c = ScramCredential::from_password(m, b"secret", SALT, 4096).unwrap();
            assert_eq!(c.stored_key.len(), m.hash_len());
            assert_eq!(c.server_key.len(), m.hash_len());
            assert!(c.verify_password(b"secret"));
            assert!(!c.verify_password(b"secreT"));
            assert!(!c.verify_password(b""));
            c.validate().unwrap();
        }
    }

    #[test]
    fn from_salted_password_matches_from_password() {
        for m in ScramMechanism::ALL {
            let salted = crypto::salted_password(m, b"pw", SALT, 8192);
            let a = ScramCredential::from_salted_password(m, &salted, SALT, 8192).unwrap();
            let b = ScramCredential::from_password(m, b"pw", SALT, 8192).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn iteration_limits() {
        let m = ScramMechanism::Sha256;
        let err = ScramCredential::from_password(m, b"pw", SALT, 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Iterations 1000 is less than the minimum 4096 for SCRAM-SHA-256"
        );
        let err =
            ScramCredential::from_password(ScramMechanism::Sha512, b"pw", SALT, 16385).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Iterations 16385 is more than the maximum 16384 for SCRAM-SHA-512"
        );
        // A huge count is refused before any work is done.
        assert!(matches!(
            ScramCredential::from_password(m, b"pw", SALT, u32::MAX),
            Err(CredentialError::TooManyIterations { .. })
        ));
        assert!(ScramCredential::from_password(m, b"pw", SALT, 0).is_err());
        assert!(ScramCredential::from_password(m, b"pw", SALT, 4096).is_ok());
        assert!(ScramCredential::from_password(m, b"pw", SALT, 16384).is_ok());
    }

    #[test]
    fn salt_and_length_limits() {
        let m = ScramMechanism::Sha512;
        assert_eq!(
            ScramCredential::from_password(m, b"pw", b"", 4096),
            Err(CredentialError::EmptySalt { mechanism: m })
        );
        let long = vec![1u8; MAX_SALT_LEN + 1];
        assert!(matches!(
            ScramCredential::from_password(m, b"pw", &long, 4096),
            Err(CredentialError::SaltTooLong { .. })
        ));
        let err = ScramCredential::from_salted_password(m, &[0u8; 32], SALT, 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Salted password for SCRAM-SHA-512 must be 64 bytes, not 32"
        );
        assert!(ScramCredential::from_salted_password(m, &[0u8; 64], SALT, 4096).is_ok());
        assert!(
            ScramCredential::from_salted_password(ScramMechanism::Sha256, &[], SALT, 4096).is_err()
        );
    }

    #[test]
    fn hand_built_invalid_credential_never_verifies_or_panics() {
        let c = ScramCredential {
            mechanism: ScramMechanism::Sha256,
            salt: vec![],
            stored_key: vec![1, 2, 3],
            server_key: vec![],
            iterations: u32::MAX,
        };
        assert!(c.validate().is_err());
        assert!(!c.verify_password(b"anything"));
    }

    #[test]
    fn serde_is_base64_and_validated() {
        let c =
            ScramCredential::from_password(ScramMechanism::Sha256, b"pw", b"salt", 4096).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["mechanism"], "SCRAM-SHA-256");
        assert_eq!(json["salt"], "c2FsdA==");
        assert_eq!(json["iterations"], 4096);
        let back: ScramCredential = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, c);

        let mut bad = json.clone();
        bad["iterations"] = 10.into();
        assert!(serde_json::from_value::<ScramCredential>(bad).is_err());
        let mut bad = json.clone();
        bad["stored_key"] = "AAAA".into();
        assert!(serde_json::from_value::<ScramCredential>(bad).is_err());
        let mut bad = json;
        bad["salt"] = "not base64!".into();
        assert!(serde_json::from_value::<ScramCredential>(bad).is_err());
    }
}
