//! Kafka's ACL model and authorizer for Sluice, as pure data.
//!
//! The crate is sans-IO: it turns CreateAcls / DescribeAcls / DeleteAcls requests into
//! validated bindings and filters, keeps the ACL set indexed by resource so that the
//! per-request [`Acls::authorize`] decision does not scan unrelated bindings, and builds the
//! response parts, so the broker only moves data between the wire, storage and this crate.
//!
//! Decisions follow Kafka's `StandardAuthorizer` with
//! `allow.everyone.if.no.acl.found = false`: deny wins, and no matching allow means denied.
//! Super users are the broker's concern and are checked before this crate is asked.
#![deny(missing_docs)]

mod authorizer;
mod error;
mod filter;
mod model;
mod requests;
mod responses;

pub use authorizer::Acls;
pub use error::{AclError, INVALID_REQUEST, ParseNameError, SECURITY_DISABLED};
pub use filter::AclFilter;
pub use model::{
    AclBinding, CLUSTER_NAME, Operation, PatternType, Permission, ResourceType, WILDCARD,
    WILDCARD_PRINCIPAL,
};
pub use responses::{create_result, delete_result, describe_response};
