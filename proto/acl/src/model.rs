//! The ACL vocabulary: Kafka's enums with their wire codes, and one binding.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{AclError, ParseNameError};

/// The only name the cluster resource has; Kafka refuses CLUSTER ACLs on any other.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// A literal resource name or host that stands for every resource or host.
pub const WILDCARD: &str = "*";

/// The principal that stands for every principal in a binding.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Defines one of Kafka's ACL enums with its wire code and printed name, so the code,
/// `Display`, `FromStr` and serde forms cannot drift apart.
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )*
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const VALUES: &'static [$name] = &[$($name::$variant),*];

            /// The value for a wire code; `None` for a code Kafka does not define.
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// The wire code.
            pub fn code(self) -> i8 {
                match self {
                    $( $name::$variant => $code, )*
                }
            }

            /// The name Kafka prints, e.g. in error messages and `kafka-acls.sh` output.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        /// Case-insensitive, as Kafka's `fromString`.
        impl FromStr for $name {
            type Err = ParseNameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::VALUES
                    .iter()
                    .copied()
                    .find(|v| v.name().eq_ignore_ascii_case(s))
                    .ok_or_else(|| ParseNameError { kind: $kind, name: s.to_owned() })
            }
        }
    };
}

kafka_enum! {
    /// The kind of resource an ACL protects (Kafka's `ResourceType`).
    ResourceType, "resource type" {
        /// A code this broker does not understand; never stored.
        Unknown = 0 => "UNKNOWN",
        /// Filter-only: any resource type.
        Any = 1 => "ANY",
        /// A topic.
        Topic = 2 => "TOPIC",
        /// A consumer group.
        Group = 3 => "GROUP",
        /// The cluster itself, always named [`CLUSTER_NAME`].
        Cluster = 4 => "CLUSTER",
        /// A transactional id.
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        /// A delegation token.
        DelegationToken = 6 => "DELEGATION_TOKEN",
        /// A user (for creating tokens on its behalf).
        User = 7 => "USER",
    }
}

kafka_enum! {
    /// How a binding's resource name is matched (Kafka's `PatternType`).
    PatternType, "pattern type" {
        /// A code this broker does not understand; never stored.
        Unknown = 0 => "UNKNOWN",
        /// Filter-only: any pattern type, exact name.
        Any = 1 => "ANY",
        /// Filter-only: every binding that would apply to the given name.
        Match = 2 => "MATCH",
        /// The name exactly, or every resource when the name is [`WILDCARD`].
        Literal = 3 => "LITERAL",
        /// Every resource whose name starts with the binding's name.
        Prefixed = 4 => "PREFIXED",
    }
}

kafka_enum! {
    /// What a principal does to a resource (Kafka's `AclOperation`).
    Operation, "operation" {
        /// A code this broker does not understand; never stored.
        Unknown = 0 => "UNKNOWN",
        /// Filter-only: any operation.
        Any = 1 => "ANY",
        /// Every operation.
        All = 2 => "ALL",
        /// Read.
        Read = 3 => "READ",
        /// Write.
        Write = 4 => "WRITE",
        /// Create.
        Create = 5 => "CREATE",
        /// Delete.
        Delete = 6 => "DELETE",
        /// Alter.
        Alter = 7 => "ALTER",
        /// Describe.
        Describe = 8 => "DESCRIBE",
        /// Inter-broker cluster actions.
        ClusterAction = 9 => "CLUSTER_ACTION",
        /// Describe configs.
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        /// Alter configs.
        AlterConfigs = 11 => "ALTER_CONFIGS",
        /// Idempotent produce.
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        /// Create delegation tokens.
        CreateTokens = 13 => "CREATE_TOKENS",
        /// Describe delegation tokens.
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
    }
}

kafka_enum! {
    /// Whether a binding grants or forbids (Kafka's `AclPermissionType`).
    Permission, "permission type" {
        /// A code this broker does not understand; never stored.
        Unknown = 0 => "UNKNOWN",
        /// Filter-only: either permission.
        Any = 1 => "ANY",
        /// Forbids; wins over any allow.
        Deny = 2 => "DENY",
        /// Grants.
        Allow = 3 => "ALLOW",
    }
}

/// One ACL: who may (or may not) do what on which resources.
///
/// The field order is the sort order, so sets of bindings list by resource first, the way
/// DescribeAcls groups them.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AclBinding {
    /// The kind of resource; concrete (not `Any`/`Unknown`) in a valid binding.
    pub resource_type: ResourceType,
    /// The resource name, a prefix for `Prefixed`, or [`WILDCARD`] for every resource.
    pub resource_name: String,
    /// `Literal` or `Prefixed` in a valid binding.
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`; [`WILDCARD_PRINCIPAL`] for everyone.
    pub principal: String,
    /// The client IP as text, or [`WILDCARD`] for every host.
    pub host: String,
    /// The operation; `All` covers every one.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Checks the binding as Kafka checks a new ACL, so nothing unmatchable or ambiguous is
    /// stored. The order and wording follow Kafka's `AclApis.handleCreateAcls` then
    /// `AclControlManager.validateNewAcl`; every refusal is `INVALID_REQUEST`.
    pub fn validate(&self) -> Result<(), AclError> {
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(AclError::invalid_request(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            )));
        }
        if self.resource_name.is_empty() {
            return Err(AclError::invalid_request("Invalid empty resource name"));
        }
        if matches!(
            self.resource_type,
            ResourceType::Unknown | ResourceType::Any
        ) {
            return Err(AclError::invalid_request(format!(
                "Invalid resourceType {}",
                self.resource_type
            )));
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(AclError::invalid_request(format!(
                "Invalid patternType {}",
                self.pattern_type
            )));
        }
        if matches!(self.operation, Operation::Unknown | Operation::Any) {
            return Err(AclError::invalid_request(format!(
                "Invalid operation {}",
                self.operation
            )));
        }
        if !matches!(self.permission, Permission::Allow | Permission::Deny) {
            return Err(AclError::invalid_request(format!(
                "Invalid permissionType {}",
                self.permission
            )));
        }
        if !is_principal(&self.principal) {
            return Err(AclError::invalid_request(format!(
                "expected a string in format principalType:principalName but got {}",
                self.principal
            )));
        }
        Ok(())
    }
}

/// `Type:name` with both parts non-empty (Kafka only needs the colon, but an empty type or
/// name can never be an authenticated principal, so such a binding would match nobody).
fn is_principal(principal: &str) -> bool {
    matches!(principal.split_once(':'), Some((kind, name)) if !kind.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for v in ResourceType::VALUES {
            assert_eq!(ResourceType::from_code(v.code()), Some(*v));
        }
        for v in PatternType::VALUES {
            assert_eq!(PatternType::from_code(v.code()), Some(*v));
        }
        for v in Operation::VALUES {
            assert_eq!(Operation::from_code(v.code()), Some(*v));
        }
        for v in Permission::VALUES {
            assert_eq!(Permission::from_code(v.code()), Some(*v));
        }
        assert_eq!(ResourceType::from_code(8), None);
        assert_eq!(PatternType::from_code(-1), None);
        assert_eq!(Operation::from_code(15), None);
        assert_eq!(Permission::from_code(4), None);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(Operation::DescribeTokens.code(), 14);
    }

    #[test]
    fn display_and_parse_use_kafka_names() {
        assert_eq!(
            ResourceType::TransactionalId.to_string(),
            "TRANSACTIONAL_ID"
        );
        assert_eq!(PatternType::Literal.to_string(), "LITERAL");
        assert_eq!(Operation::ClusterAction.to_string(), "CLUSTER_ACTION");
        assert_eq!(Permission::Allow.to_string(), "ALLOW");
        assert_eq!("topic".parse::<ResourceType>(), Ok(ResourceType::Topic));
        assert_eq!("Describe_Configs".parse(), Ok(Operation::DescribeConfigs));
        let err = "bogus".parse::<Permission>().unwrap_err();
        assert_eq!(err.to_string(), "unknown permission type `bogus`");
    }

    #[test]
    fn serde_uses_kafka_names() {
        let json = serde_json::to_string(&Operation::IdempotentWrite).unwrap();
        assert_eq!(json, "\"IDEMPOTENT_WRITE\"");
        let back: Operation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Operation::IdempotentWrite);
    }

    #[test]
    fn principal_needs_type_and_name() {
        assert!(is_principal("User:alice"));
        assert!(is_principal("User:*"));
        assert!(is_principal("User:CN=a,O=b:c"));
        assert!(!is_principal("alice"));
        assert!(!is_principal(":alice"));
        assert!(!is_principal("User:"));
        assert!(!is_principal(""));
    }
}
