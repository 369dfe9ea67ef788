//! Filters as DescribeAcls and DeleteAcls send them, with Kafka's matching rules.

use serde::{Deserialize, Serialize};

use crate::model::{AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD};

/// A filter as DescribeAcls / DeleteAcls send it (None = any).
///
/// Principal and host compare exactly: in a filter, `User:*` and `*` select the wildcard
/// bindings themselves, not every binding (as in Kafka).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclFilter {
    /// The resource type, or `Any`.
    pub resource_type: ResourceType,
    /// The resource name; `None` for any name.
    pub resource_name: Option<String>,
    /// `Any`, `Match`, `Literal` or `Prefixed`.
    pub pattern_type: PatternType,
    /// The exact principal; `None` for any.
    pub principal: Option<String>,
    /// The exact host; `None` for any.
    pub host: Option<String>,
    /// The operation, or `Any`.
    pub operation: Operation,
    /// The permission, or `Any`.
    pub permission: Permission,
}

impl AclFilter {
    /// The filter that matches every binding, e.g. to list them all.
    pub fn any() -> Self {
        AclFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    /// The filter that matches exactly `b`, e.g. to delete one binding.
    pub fn exact(b: &AclBinding) -> Self {
        AclFilter {
            resource_type: b.resource_type,
            resource_name: Some(b.resource_name.clone()),
            pattern_type: b.pattern_type,
            principal: Some(b.principal.clone()),
            host: Some(b.host.clone()),
            operation: b.operation,
            permission: b.permission,
        }
    }

    /// Whether `b` is selected, as Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_resource(b) && self.matches_entry(b)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_resource(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        let pattern = self.pattern_type;
        if !matches!(pattern, PatternType::Any | PatternType::Match) && pattern != b.pattern_type {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if pattern != PatternType::Match {
            return *name == b.resource_name;
        }
        // Match: every binding that would apply to a resource called `name`.
        match b.pattern_type {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.resource_name),
            _ => false,
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == Operation::Any || self.operation == b.operation)
            && (self.permission == Permission::Any || self.permission == b.permission)
    }

    /// Whether the resource part holds an `Unknown` type or pattern type, which Kafka refuses.
    pub(crate) fn has_unknown_pattern(&self) -> bool {
        self.resource_type == ResourceType::Unknown || self.pattern_type == PatternType::Unknown
    }

    /// Whether the entry part holds an `Unknown` operation or permission.
    pub(crate) fn has_unknown_entry(&self) -> bool {
        self.operation == Operation::Unknown || self.permission == Permission::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(rt: ResourceType, name: &str, pt: PatternType) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.to_owned(),
            pattern_type: pt,
            principal: "User:alice".to_owned(),
            host: "*".to_owned(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    fn filter(rt: ResourceType, name: Option<&str>, pt: PatternType) -> AclFilter {
        AclFilter {
            resource_type: rt,
            resource_name: name.map(str::to_owned),
            pattern_type: pt,
            ..AclFilter::any()
        }
    }

    use PatternType::{Any, Literal, Match, Prefixed};
    use ResourceType::{Group, Topic};

    #[test]
    fn any_pattern_matches_every_pattern_type_with_exact_name() {
        let f = filter(Topic, Some("foo"), Any);
        assert!(f.matches(&binding(Topic, "foo", Literal)));
        assert!(f.matches(&binding(Topic, "foo", Prefixed)));
        assert!(!f.matches(&binding(Topic, "*", Literal)));
        assert!(!f.matches(&binding(Topic, "fo", Prefixed)));
        assert!(!f.matches(&binding(Group, "foo", Literal)));
        let all = filter(ResourceType::Any, None, Any);
        assert!(all.matches(&binding(Group, "x", Prefixed)));
    }

    #[test]
    fn literal_and_prefixed_match_that_pattern_type_exactly() {
        let lit = filter(Topic, Some("foo"), Literal);
        assert!(lit.matches(&binding(Topic, "foo", Literal)));
        assert!(!lit.matches(&binding(Topic, "foo", Prefixed)));
        assert!(!lit.matches(&binding(Topic, "*", Literal)));
        let pre = filter(Topic, Some("fo"), Prefixed);
        assert!(pre.matches(&binding(Topic, "fo", Prefixed)));
        assert!(!pre.matches(&binding(Topic, "foo", Prefixed)));
        assert!(!pre.matches(&binding(Topic, "fo", Literal)));
        let any_prefixed = filter(ResourceType::Any, None, Prefixed);
        assert!(any_prefixed.matches(&binding(Group, "g", Prefixed)));
        assert!(!any_prefixed.matches(&binding(Group, "g", Literal)));
    }

    #[test]
    fn match_selects_bindings_that_apply_to_the_name() {
        let f = filter(Topic, Some("foo-bar"), Match);
        assert!(f.matches(&binding(Topic, "foo-bar", Literal)));
        assert!(f.matches(&binding(Topic, "*", Literal)));
        assert!(f.matches(&binding(Topic, "foo-", Prefixed)));
        assert!(f.matches(&binding(Topic, "foo-bar", Prefixed)));
        assert!(!f.matches(&binding(Topic, "foo-bar-baz", Prefixed)));
        assert!(!f.matches(&binding(Topic, "foo", Literal)));
        assert!(!f.matches(&binding(Topic, "*", Prefixed)));
        assert!(!f.matches(&binding(Group, "*", Literal)));
        let no_name = filter(ResourceType::Any, None, Match);
        assert!(no_name.matches(&binding(Topic, "anything", Prefixed)));
        assert!(no_name.matches(&binding(Group, "g", Literal)));
    }

    #[test]
    fn entry_fields_compare_exactly() {
        let b = binding(Topic, "t", Literal);
        let mut f = AclFilter::any();
        f.principal = Some("User:*".to_owned());
        assert!(
            !f.matches(&b),
            "User:* in a filter selects only wildcard bindings"
        );
        f.principal = Some("User:alice".to_owned());
        assert!(f.matches(&b));
        f.host = Some("10.0.0.1".to_owned());
        assert!(!f.matches(&b));
        f.host = Some("*".to_owned());
        assert!(f.matches(&b));
        f.operation = Operation::Write;
        assert!(!f.matches(&b));
        f.operation = Operation::Read;
        f.permission = Permission::Deny;
        assert!(!f.matches(&b));
        assert!(AclFilter::exact(&b).matches(&b));
    }

    #[test]
    fn unknown_filter_values_match_nothing() {
        let b = binding(Topic, "t", Literal);
        let mut f = AclFilter::any();
        f.operation = Operation::Unknown;
        assert!(!f.matches(&b));
        let f = filter(ResourceType::Unknown, None, Any);
        assert!(!f.matches(&b));
    }
}
