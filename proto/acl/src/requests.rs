//! Conversions from the kafka-protocol request structs to bindings and filters.

use kafka_protocol::messages::DescribeAclsRequest;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::protocol::StrBytes;

use crate::error::AclError;
use crate::filter::AclFilter;
use crate::model::{AclBinding, Operation, PatternType, Permission, ResourceType};

impl AclBinding {
    /// Validates a CreateAcls creation as Kafka does and returns the binding to store.
    ///
    /// Every refusal is `INVALID_REQUEST` (42), with Kafka's message where it has one:
    /// a CLUSTER resource not named `kafka-cluster`, an empty resource name, a resource type
    /// or pattern type that is not concrete (Any, Match, Unknown or an undefined code), an
    /// operation Any/Unknown, a permission other than Allow/Deny, or a principal that is not
    /// `Type:name`. Undefined codes are reported as `UNKNOWN`, as Kafka's `fromCode` does.
    pub fn from_creation(c: &AclCreation) -> Result<AclBinding, AclError> {
        let binding = AclBinding {
            resource_type: ResourceType::from_code(c.resource_type)
                .unwrap_or(ResourceType::Unknown),
            resource_name: c.resource_name.to_string(),
            pattern_type: PatternType::from_code(c.resource_pattern_type)
                .unwrap_or(PatternType::Unknown),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: Operation::from_code(c.operation).unwrap_or(Operation::Unknown),
            permission: Permission::from_code(c.permission_type).unwrap_or(Permission::Unknown),
        };
        binding.validate()?;
        Ok(binding)
    }
}

impl AclFilter {
    /// The filter of a DescribeAcls request; an unknown code anywhere is `INVALID_REQUEST`.
    pub fn from_describe(r: &DescribeAclsRequest) -> Result<AclFilter, AclError> {
        from_codes(Codes {
            resource_type: r.resource_type_filter,
            resource_name: r.resource_name_filter.as_ref(),
            pattern_type: r.pattern_type_filter,
            principal: r.principal_filter.as_ref(),
            host: r.host_filter.as_ref(),
            operation: r.operation,
            permission: r.permission_type,
        })
    }

    /// One filter of a DeleteAcls request; an unknown code anywhere is `INVALID_REQUEST`.
    pub fn from_delete(f: &DeleteAclsFilter) -> Result<AclFilter, AclError> {
        from_codes(Codes {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.as_ref(),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.as_ref(),
            host: f.host_filter.as_ref(),
            operation: f.operation,
            permission: f.permission_type,
        })
    }
}

/// The wire fields shared by DescribeAcls and DeleteAcls filters.
struct Codes<'a> {
    resource_type: i8,
    resource_name: Option<&'a StrBytes>,
    pattern_type: i8,
    principal: Option<&'a StrBytes>,
    host: Option<&'a StrBytes>,
    operation: i8,
    permission: i8,
}

/// Builds the filter and refuses `Unknown` (or undefined) codes with the messages of Kafka's
/// `AclControlManager.validateFilter`: such a filter could only ever match nothing.
fn from_codes(c: Codes<'_>) -> Result<AclFilter, AclError> {
    let filter = AclFilter {
        resource_type: ResourceType::from_code(c.resource_type).unwrap_or(ResourceType::Unknown),
        resource_name: c.resource_name.map(|s| s.to_string()),
        pattern_type: PatternType::from_code(c.pattern_type).unwrap_or(PatternType::Unknown),
        principal: c.principal.map(|s| s.to_string()),
        host: c.host.map(|s| s.to_string()),
        operation: Operation::from_code(c.operation).unwrap_or(Operation::Unknown),
        permission: Permission::from_code(c.permission).unwrap_or(Permission::Unknown),
    };
    if filter.has_unknown_pattern() {
        return Err(AclError::invalid_request("Unknown patternFilter."));
    }
    if filter.has_unknown_entry() {
        return Err(AclError::invalid_request("Unknown entryFilter."));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::INVALID_REQUEST;

    fn creation() -> AclCreation {
        AclCreation::default()
            .with_resource_type(ResourceType::Topic.code())
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_resource_pattern_type(PatternType::Literal.code())
            .with_principal(StrBytes::from_static_str("User:alice"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(Operation::Read.code())
            .with_permission_type(Permission::Allow.code())
    }

    fn refused(c: AclCreation) -> (i16, String) {
        let err = AclBinding::from_creation(&c).unwrap_err();
        (err.code(), err.to_string())
    }

    fn invalid(message: &str) -> (i16, String) {
        (INVALID_REQUEST, message.to_owned())
    }

    #[test]
    fn valid_creation_becomes_a_binding() {
        let b = AclBinding::from_creation(&creation()).unwrap();
        assert_eq!(
            b,
            AclBinding {
                resource_type: ResourceType::Topic,
                resource_name: "orders".to_owned(),
                pattern_type: PatternType::Literal,
                principal: "User:alice".to_owned(),
                host: "*".to_owned(),
                operation: Operation::Read,
                permission: Permission::Allow,
            }
        );
        let c = creation()
            .with_resource_type(ResourceType::Cluster.code())
            .with_resource_name(StrBytes::from_static_str("kafka-cluster"))
            .with_principal(StrBytes::from_static_str("User:*"))
            .with_operation(Operation::All.code())
            .with_permission_type(Permission::Deny.code());
        assert!(AclBinding::from_creation(&c).is_ok());
        let c = creation().with_resource_pattern_type(PatternType::Prefixed.code());
        assert!(AclBinding::from_creation(&c).is_ok());
    }

    #[test]
    fn refuses_non_concrete_resource_types() {
        for (code, name) in [(0, "UNKNOWN"), (1, "ANY"), (99, "UNKNOWN"), (-1, "UNKNOWN")] {
            let c = creation().with_resource_type(code);
            assert_eq!(refused(c), invalid(&format!("Invalid resourceType {name}")));
        }
    }

    #[test]
    fn refuses_non_concrete_pattern_types() {
        for (code, name) in [(0, "UNKNOWN"), (1, "ANY"), (2, "MATCH"), (5, "UNKNOWN")] {
            let c = creation().with_resource_pattern_type(code);
            assert_eq!(refused(c), invalid(&format!("Invalid patternType {name}")));
        }
    }

    #[test]
    fn refuses_any_or_unknown_operation() {
        for (code, name) in [(0, "UNKNOWN"), (1, "ANY"), (15, "UNKNOWN")] {
            let c = creation().with_operation(code);
            assert_eq!(refused(c), invalid(&format!("Invalid operation {name}")));
        }
    }

    #[test]
    fn refuses_permission_other_than_allow_or_deny() {
        for (code, name) in [(0, "UNKNOWN"), (1, "ANY"), (7, "UNKNOWN")] {
            let c = creation().with_permission_type(code);
            assert_eq!(
                refused(c),
                invalid(&format!("Invalid permissionType {name}"))
            );
        }
    }

    #[test]
    fn refuses_malformed_principal() {
        for p in ["alice", "", ":alice", "User:"] {
            let c = creation().with_principal(StrBytes::from_string(p.to_owned()));
            assert_eq!(
                refused(c),
                invalid(&format!(
                    "expected a string in format principalType:principalName but got {p}"
                ))
            );
        }
    }

    #[test]
    fn refuses_cluster_resource_under_another_name() {
        let c = creation()
            .with_resource_type(ResourceType::Cluster.code())
            .with_resource_name(StrBytes::from_static_str("my-cluster"));
        assert_eq!(
            refused(c),
            invalid("The only valid name for the CLUSTER resource is kafka-cluster")
        );
    }

    #[test]
    fn refuses_empty_resource_name() {
        let c = creation().with_resource_name(StrBytes::from_static_str(""));
        assert_eq!(refused(c.clone()), invalid("Invalid empty resource name"));
        let c = c.with_resource_pattern_type(PatternType::Prefixed.code());
        assert_eq!(refused(c), invalid("Invalid empty resource name"));
    }

    #[test]
    fn describe_filter_converts_and_refuses_unknown_codes() {
        let r = DescribeAclsRequest::default()
            .with_resource_type_filter(ResourceType::Any.code())
            .with_resource_name_filter(None)
            .with_pattern_type_filter(PatternType::Match.code())
            .with_principal_filter(Some(StrBytes::from_static_str("User:bob")))
            .with_host_filter(None)
            .with_operation(Operation::Any.code())
            .with_permission_type(Permission::Allow.code());
        let f = AclFilter::from_describe(&r).unwrap();
        assert_eq!(
            f,
            AclFilter {
                resource_type: ResourceType::Any,
                resource_name: None,
                pattern_type: PatternType::Match,
                principal: Some("User:bob".to_owned()),
                host: None,
                operation: Operation::Any,
                permission: Permission::Allow,
            }
        );
        let bad = r.clone().with_resource_type_filter(0);
        assert_eq!(
            AclFilter::from_describe(&bad).unwrap_err(),
            AclError::invalid_request("Unknown patternFilter.")
        );
        let bad = r.clone().with_pattern_type_filter(42);
        assert_eq!(
            AclFilter::from_describe(&bad).unwrap_err().code(),
            INVALID_REQUEST
        );
        let bad = r.clone().with_operation(0);
        assert_eq!(
            AclFilter::from_describe(&bad).unwrap_err(),
            AclError::invalid_request("Unknown entryFilter.")
        );
        let bad = r.with_permission_type(9);
        assert_eq!(
            AclFilter::from_describe(&bad).unwrap_err(),
            AclError::invalid_request("Unknown entryFilter.")
        );
    }

    #[test]
    fn delete_filter_converts_and_refuses_unknown_codes() {
        let f = DeleteAclsFilter::default()
            .with_resource_type_filter(ResourceType::Topic.code())
            .with_resource_name_filter(Some(StrBytes::from_static_str("orders")))
            .with_pattern_type_filter(PatternType::Prefixed.code())
            .with_principal_filter(None)
            .with_host_filter(Some(StrBytes::from_static_str("10.0.0.1")))
            .with_operation(Operation::Write.code())
            .with_permission_type(Permission::Any.code());
        let filter = AclFilter::from_delete(&f).unwrap();
        assert_eq!(
            filter,
            AclFilter {
                resource_type: ResourceType::Topic,
                resource_name: Some("orders".to_owned()),
                pattern_type: PatternType::Prefixed,
                principal: None,
                host: Some("10.0.0.1".to_owned()),
                operation: Operation::Write,
                permission: Permission::Any,
            }
        );
        let bad = f.with_pattern_type_filter(PatternType::Unknown.code());
        assert_eq!(
            AclFilter::from_delete(&bad).unwrap_err(),
            AclError::invalid_request("Unknown patternFilter.")
        );
    }
}
