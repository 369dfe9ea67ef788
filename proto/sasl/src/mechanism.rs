//! Mechanism names and codes, as Kafka spells them on the wire.

use std::fmt;

use serde::{Deserialize, Serialize};

/// SCRAM hash functions Kafka supports.
///
/// Serialized under the SASL mechanism name so persisted credentials read like Kafka's
/// `kafka-configs --describe` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    /// SCRAM-SHA-512 (same construction as RFC 7677, with SHA-512).
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// Every SCRAM mechanism, weakest first (the `Ord` order).
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name: "SCRAM-SHA-256" or "SCRAM-SHA-512".
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a SASL mechanism name; case-sensitive, as Kafka's `SaslHandshake` is.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's `ScramMechanism` code used by Describe/AlterUserScramCredentials
    /// (0 is Kafka's UNKNOWN and has no variant here).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// Inverse of [`ScramMechanism::kafka_type`]; `None` for UNKNOWN (0) and anything else.
    pub fn from_kafka_type(t: i8) -> Option<Self> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Fewest PBKDF2 iterations a credential may use (Kafka's minimum, also RFC 7677's).
    pub fn min_iterations(self) -> u32 {
        4096
    }

    /// Most PBKDF2 iterations a credential may use (Kafka's maximum); bounds the cost
    /// of a PLAIN login verified against this credential.
    pub fn max_iterations(self) -> u32 {
        16384
    }

    /// Output length of the hash in bytes: the length of keys, proofs and salted passwords.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SASL mechanisms the listener can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SASL/PLAIN (RFC 4616), checked against the SCRAM credential store.
    Plain,
    /// SASL/SCRAM (RFC 5802) with the given hash.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Every mechanism, in the order a `SaslHandshake` response lists them.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The SASL mechanism name: "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    /// Parses a SASL mechanism name; case-sensitive, as in Kafka.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "PLAIN" => Some(Mechanism::Plain),
            _ => ScramMechanism::from_name(s).map(Mechanism::Scram),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<ScramMechanism> for Mechanism {
    fn from(m: ScramMechanism) -> Self {
        Mechanism::Scram(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("plain"), None);
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn kafka_types_round_trip() {
        assert_eq!(ScramMechanism::Sha256.kafka_type(), 1);
        assert_eq!(ScramMechanism::Sha512.kafka_type(), 2);
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
            assert_eq!(m.min_iterations(), 4096);
            assert_eq!(m.max_iterations(), 16384);
        }
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
        assert_eq!(ScramMechanism::from_kafka_type(3), None);
        assert_eq!(ScramMechanism::from_kafka_type(-1), None);
    }

    #[test]
    fn serde_uses_mechanism_names() {
        let json = serde_json::to_string(&ScramMechanism::Sha512).unwrap();
        assert_eq!(json, "\"SCRAM-SHA-512\"");
        let back: ScramMechanism = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ScramMechanism::Sha512);
    }
}
