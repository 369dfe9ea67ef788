//! Errors, carrying the Kafka error code the broker answers with.

/// Kafka's `INVALID_REQUEST` error code, the answer to a malformed ACL creation or filter.
pub const INVALID_REQUEST: i16 = 42;

/// Kafka's `SECURITY_DISABLED` error code, the answer when no authorizer is configured.
pub const SECURITY_DISABLED: i16 = 54;

/// Errors refusing one ACL creation or filter, with the Kafka error code to answer.
///
/// The display text is the message Kafka puts in the response, so it is sent as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The creation or filter itself is malformed; `code` is normally [`INVALID_REQUEST`].
    #[error("{message}")]
    Invalid {
        /// Kafka error code for the response.
        code: i16,
        /// Human-readable reason, as Kafka words it.
        message: String,
    },
    /// The broker declines for a reason outside the request (not authorized, no authorizer),
    /// so the broker can answer through the same response builders.
    #[error("{message}")]
    Refused {
        /// Kafka error code for the response.
        code: i16,
        /// Human-readable reason, as Kafka words it.
        message: String,
    },
}

impl AclError {
    /// An `INVALID_REQUEST` refusal, the usual answer to a malformed creation or filter.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        AclError::Invalid {
            code: INVALID_REQUEST,
            message: message.into(),
        }
    }

    /// Kafka's answer to an ACL request when no authorizer is configured.
    pub fn security_disabled() -> Self {
        AclError::Refused {
            code: SECURITY_DISABLED,
            message: "No Authorizer is configured.".to_owned(),
        }
    }

    /// The Kafka error code to put in the response.
    pub fn code(&self) -> i16 {
        match self {
            AclError::Invalid { code, .. } | AclError::Refused { code, .. } => *code,
        }
    }

    /// The error message to put in the response.
    pub fn message(&self) -> &str {
        match self {
            AclError::Invalid { message, .. } | AclError::Refused { message, .. } => message,
        }
    }
}

/// A name that is not one of an enum's Kafka names (e.g. `"TOPIC"`), from `FromStr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct ParseNameError {
    /// Which enum was being parsed, e.g. `"resource type"`.
    pub kind: &'static str,
    /// The text that did not parse.
    pub name: String,
}
