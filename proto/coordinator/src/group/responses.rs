//! Builders of group responses that respect each API version's field rules.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{
    HeartbeatResponse, JoinGroupResponse, ResponseKind, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::{Pending, Response};

/// Kafka's `NoGeneration`.
pub(crate) const NO_GENERATION: i32 = -1;

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

pub(crate) fn opt_s(v: Option<&str>) -> Option<StrBytes> {
    v.map(s)
}

pub(crate) fn response(p: Pending, body: impl Into<ResponseKind>) -> Response {
    Response {
        token: p.token,
        api_version: p.api_version,
        body: body.into(),
    }
}

/// The fields of a JoinGroup answer (Kafka's `JoinGroupResult`).
pub(crate) struct JoinResult<'a> {
    pub error: i16,
    pub member_id: &'a str,
    pub generation: i32,
    pub protocol_type: Option<&'a str>,
    pub protocol_name: Option<&'a str>,
    pub leader: &'a str,
    pub members: Vec<JoinGroupResponseMember>,
    pub skip_assignment: bool,
}

pub(crate) fn join(p: Pending, r: JoinResult<'_>) -> Response {
    // protocol_name is a non-nullable string before v7: null there would break old clients.
    let protocol_name = match (r.protocol_name, p.api_version < 7) {
        (None, true) => Some(StrBytes::new()),
        (name, _) => opt_s(name),
    };
    let body = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_type(opt_s(r.protocol_type))
        .with_protocol_name(protocol_name)
        .with_leader(s(r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(s(r.member_id))
        .with_members(r.members);
    response(p, body)
}

pub(crate) fn join_error(p: Pending, member_id: &str, error: ResponseError) -> Response {
    join(
        p,
        JoinResult {
            error: error.code(),
            member_id,
            generation: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: "",
            members: Vec::new(),
            skip_assignment: false,
        },
    )
}

pub(crate) fn sync(
    p: Pending,
    error: i16,
    protocol_type: Option<&str>,
    protocol_name: Option<&str>,
    assignment: Bytes,
) -> Response {
    let body = SyncGroupResponse::default()
        .with_error_code(error)
        .with_protocol_type(opt_s(protocol_type))
        .with_protocol_name(opt_s(protocol_name))
        .with_assignment(assignment);
    response(p, body)
}

pub(crate) fn sync_error(p: Pending, error: ResponseError) -> Response {
    sync(p, error.code(), None, None, Bytes::new())
}

pub(crate) fn heartbeat(p: Pending, error: i16) -> Response {
    response(p, HeartbeatResponse::default().with_error_code(error))
}
