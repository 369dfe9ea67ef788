//! Who is asking, and may they: listeners' security protocols, the principal of a connection,
//! SASL per connection ([`sasl`]) and the authorization of every request ([`authorize`]).
//!
//! The mechanisms themselves (PLAIN, SCRAM) live in `sluice-sasl` and the ACL model in
//! `sluice-acl`; this module connects them to Kafka's requests. Nothing here touches a socket:
//! TLS is the server's, and hands over only the client certificate's common name.

pub mod authorize;
pub mod sasl;
pub mod scram_admin;
pub mod state;

pub use sluice_acl as acl;
pub use sluice_sasl as credentials;

/// A principal that authenticated nothing (PLAINTEXT, SSL without a client certificate).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The internal listener of cluster nodes for replica catch-up: TCP with mutual TLS by
/// cluster certificate. Its address is registered in `__meta` like a client listener's, but no
/// client is ever told it.
pub const REPLICA_LISTENER: &str = "__replica";

/// The name of the cluster resource in ACLs.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// Kafka's four security protocols of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS; a client certificate (if asked for and given) names the principal.
    Ssl,
    /// SASL over clear text.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Parses Kafka's name (case-insensitive, as Kafka).
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Whether connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before any other request.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Who sent a request, as the authorizer and Metadata need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `User:name` (or [`ANONYMOUS`]).
    pub principal: String,
    /// The client's IP address as text, matched against ACL hosts.
    pub host: String,
    /// The listener the connection came in on: Metadata answers with its addresses.
    pub listener: String,
    /// A cluster node, authenticated by its cluster certificate (replica catch-up).
    pub node: Option<i32>,
}

impl Session {
    /// An anonymous session on `listener` from `host`.
    pub fn anonymous(host: &str, listener: &str) -> Self {
        Session {
            principal: ANONYMOUS.to_string(),
            host: host.to_string(),
            listener: listener.to_string(),
            node: None,
        }
    }
}

/// The broker's security settings.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Whether ACLs are enforced (`--authorizer acl`). Off: everything is allowed, as Kafka
    /// without an authorizer.
    pub authorizer: bool,
    /// Principals allowed everything (`--super-users`).
    pub super_users: Vec<String>,
}
