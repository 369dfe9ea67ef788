//! The answer builders, so the broker only moves data around.

use kafka_protocol::messages::DescribeAclsResponse;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::protocol::StrBytes;

use crate::error::AclError;
use crate::model::AclBinding;

/// The DescribeAcls answer: bindings grouped by (resource type, name, pattern type) into
/// `DescribeAclsResource` entries, sorted and deduplicated; error code and message on `Err`.
/// `throttle_time_ms` is left at 0 for the broker to set.
pub fn describe_response(result: Result<Vec<AclBinding>, AclError>) -> DescribeAclsResponse {
    let mut bindings = match result {
        Ok(bindings) => bindings,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    };
    bindings.sort();
    bindings.dedup();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    let mut last: Option<&AclBinding> = None;
    for b in &bindings {
        let same_resource = last.is_some_and(|l| {
            l.resource_type == b.resource_type
                && l.resource_name == b.resource_name
                && l.pattern_type == b.pattern_type
        });
        if !same_resource {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                    .with_pattern_type(b.pattern_type.code()),
            );
        }
        if let Some(resource) = resources.last_mut() {
            resource.acls.push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
        }
        last = Some(b);
    }
    DescribeAclsResponse::default()
        .with_error_code(0)
        .with_error_message(None)
        .with_resources(resources)
}

/// One CreateAcls result: success, or the refusal's code and message.
pub fn create_result(r: Result<(), AclError>) -> AclCreationResult {
    match r {
        Ok(()) => AclCreationResult::default()
            .with_error_code(0)
            .with_error_message(None),
        Err(e) => AclCreationResult::default()
            .with_error_code(e.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}

/// One DeleteAcls filter result: one `DeleteAclsMatchingAcl` per removed binding, in the
/// order given, or the refusal's code and message.
pub fn delete_result(r: Result<Vec<AclBinding>, AclError>) -> DeleteAclsFilterResult {
    match r {
        Ok(removed) => DeleteAclsFilterResult::default()
            .with_error_code(0)
            .with_error_message(None)
            .with_matching_acls(removed.into_iter().map(matching_acl).collect()),
        Err(e) => DeleteAclsFilterResult::default()
            .with_error_code(e.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
    }
}

fn matching_acl(b: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_error_code(0)
        .with_error_message(None)
        .with_resource_type(b.resource_type.code())
        .with_resource_name(StrBytes::from_string(b.resource_name))
        .with_pattern_type(b.pattern_type.code())
        .with_principal(StrBytes::from_string(b.principal))
        .with_host(StrBytes::from_string(b.host))
        .with_operation(b.operation.code())
        .with_permission_type(b.permission.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Operation, PatternType, Permission, ResourceType};

    fn b(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        op: Operation,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.to_owned(),
            pattern_type: pt,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    /// (resource type, name, pattern type, [(principal, operation)]).
    type ResourceSummary = (i8, String, i8, Vec<(String, i8)>);

    #[test]
    fn describe_groups_by_resource_and_pattern() {
        use PatternType::{Literal, Prefixed};
        use ResourceType::{Group, Topic};
        let bindings = vec![
            b(Topic, "t", Prefixed, "User:a", Operation::Read),
            b(Topic, "t", Literal, "User:b", Operation::Write),
            b(Group, "g", Literal, "User:a", Operation::Read),
            b(Topic, "t", Literal, "User:a", Operation::Read),
            b(Topic, "t", Literal, "User:a", Operation::Read),
        ];
        let resp = describe_response(Ok(bindings));
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.error_message, None);
        let summary: Vec<ResourceSummary> = resp
            .resources
            .iter()
            .map(|r| {
                (
                    r.resource_type,
                    r.resource_name.to_string(),
                    r.pattern_type,
                    r.acls
                        .iter()
                        .map(|a| (a.principal.to_string(), a.operation))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    2,
                    "t".to_owned(),
                    3,
                    vec![("User:a".to_owned(), 3), ("User:b".to_owned(), 4)]
                ),
                (2, "t".to_owned(), 4, vec![("User:a".to_owned(), 3)]),
                (3, "g".to_owned(), 3, vec![("User:a".to_owned(), 3)]),
            ]
        );
        assert_eq!(resp.resources[0].acls[0].host.to_string(), "*");
        assert_eq!(resp.resources[0].acls[0].permission_type, 3);
    }

    #[test]
    fn describe_error_carries_code_and_message() {
        let resp = describe_response(Err(AclError::security_disabled()));
        assert_eq!(resp.error_code, 54);
        assert_eq!(
            resp.error_message.as_deref(),
            Some("No Authorizer is configured.")
        );
        assert!(resp.resources.is_empty());
    }

    #[test]
    fn create_result_success_and_error() {
        let ok = create_result(Ok(()));
        assert_eq!((ok.error_code, ok.error_message), (0, None));
        let err = create_result(Err(AclError::invalid_request(
            "Invalid empty resource name",
        )));
        assert_eq!(err.error_code, 42);
        assert_eq!(
            err.error_message.as_deref(),
            Some("Invalid empty resource name")
        );
    }

    #[test]
    fn delete_result_lists_each_removed_binding() {
        let removed = vec![
            b(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:a",
                Operation::Read,
            ),
            b(
                ResourceType::Group,
                "g",
                PatternType::Prefixed,
                "User:b",
                Operation::Delete,
            ),
        ];
        let r = delete_result(Ok(removed));
        assert_eq!(r.error_code, 0);
        assert_eq!(r.matching_acls.len(), 2);
        let m = &r.matching_acls[1];
        assert_eq!(
            (
                m.error_code,
                m.resource_type,
                m.resource_name.to_string(),
                m.pattern_type
            ),
            (0, 3, "g".to_owned(), 4)
        );
        assert_eq!(
            (
                m.principal.to_string(),
                m.host.to_string(),
                m.operation,
                m.permission_type
            ),
            ("User:b".to_owned(), "*".to_owned(), 6, 3)
        );
        let err = delete_result(Err(AclError::invalid_request("Unknown entryFilter.")));
        assert_eq!(err.error_code, 42);
        assert_eq!(err.error_message.as_deref(), Some("Unknown entryFilter."));
        assert!(err.matching_acls.is_empty());
    }
}
