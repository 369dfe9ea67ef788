//! Administrative group APIs: ListGroups, DescribeGroups, DeleteGroups.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};

use super::responses as resp;
use super::state::GroupState;
use super::{GroupCoordinator, PartitionStatus};
use crate::store::StoreRecord;
use crate::{Action, Out, RequestContext, StoreWrite};

/// READ | DELETE | DESCRIBE as Kafka's AclOperation bits: what a group allows without ACLs.
const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
/// Kafka's "authorized operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

impl GroupCoordinator {
    /// ListGroups (v0–v5, with state filter v4+ and type filter v5+). Every group here is "classic".
    pub fn list_groups(&self, ctx: &RequestContext, req: ListGroupsRequest) -> Vec<Action> {
        let mut out = Out::default();
        let loading = self
            .partitions
            .values()
            .any(|s| *s == PartitionStatus::Loading);
        let state_ok = |state: GroupState| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state.as_str()))
        };
        let type_ok = req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.as_str().eq_ignore_ascii_case("classic"));
        let groups = self
            .groups
            .values()
            .filter(|g| self.partitions.get(&g.partition) == Some(&PartitionStatus::Active))
            .filter(|g| type_ok && state_ok(g.state))
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(resp::s(&g.id)))
                    .with_protocol_type(resp::s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_group_state(resp::s(g.state.as_str()))
                    .with_group_type(resp::s("classic"))
            })
            .collect();
        let error = if loading {
            ResponseError::CoordinatorLoadInProgress.code()
        } else {
            0
        };
        let body = ListGroupsResponse::default()
            .with_error_code(error)
            .with_groups(groups);
        out.respond(resp::response(ctx.pending(), body));
        out.into_actions()
    }

    /// DescribeGroups (v0–v6). Member metadata and assignments are only shown for stable groups.
    pub fn describe_groups(&self, ctx: &RequestContext, req: DescribeGroupsRequest) -> Vec<Action> {
        let mut out = Out::default();
        let operations = if ctx.api_version >= 3 && req.include_authorized_operations {
            GROUP_AUTHORIZED_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        };
        let groups = req
            .groups
            .iter()
            .map(|id| {
                let described = DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_authorized_operations(operations);
                if let Err(e) = self.group_status(id.0.as_str(), true) {
                    return described.with_error_code(e.code());
                }
                let Some(g) = self.groups.get(id.0.as_str()) else {
                    let dead = described.with_group_state(resp::s(GroupState::Dead.as_str()));
                    // v6 (KIP-1043) reports unknown groups as an error instead of a Dead group.
                    return if ctx.api_version >= 6 {
                        dead.with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(resp::s(&format!(
                                "Group {} not found.",
                                id.0.as_str()
                            ))))
                    } else {
                        dead
                    };
                };
                let stable = g.is(GroupState::Stable);
                let protocol = if stable {
                    g.protocol_name.clone().unwrap_or_default()
                } else {
                    String::new()
                };
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let (metadata, assignment) = if stable {
                            (m.metadata(&protocol), m.assignment.clone())
                        } else {
                            (Bytes::new(), Bytes::new())
                        };
                        DescribedGroupMember::default()
                            .with_member_id(resp::s(&m.id))
                            .with_group_instance_id(resp::opt_s(m.instance_id.as_deref()))
                            .with_client_id(resp::s(&m.client_id))
                            .with_client_host(resp::s(&m.client_host))
                            .with_member_metadata(metadata)
                            .with_member_assignment(assignment)
                    })
                    .collect();
                described
                    .with_group_state(resp::s(g.state.as_str()))
                    .with_protocol_type(resp::s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(resp::s(&protocol))
                    .with_members(members)
            })
            .collect();
        let body = DescribeGroupsResponse::default().with_groups(groups);
        out.respond(resp::response(ctx.pending(), body));
        out.into_actions()
    }

    /// DeleteGroups (v0–v2): only empty groups can be deleted; their offsets go with them.
    pub fn delete_groups(
        &mut self,
        ctx: &RequestContext,
        req: DeleteGroupsRequest,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut out = Out::default();
        let mut writes = Vec::new();
        let mut results = Vec::with_capacity(req.groups_names.len());
        for id in &req.groups_names {
            let group_id = id.0.as_str();
            let code = match self.group_status(group_id, true) {
                Err(e) => e.code(),
                Ok(()) => match self.groups.get(group_id).map(|g| g.state) {
                    None | Some(GroupState::Dead) => ResponseError::GroupIdNotFound.code(),
                    Some(GroupState::Empty) => {
                        let mut g = self.groups.remove(group_id).expect("exists");
                        g.transition(GroupState::Dead, now_ms);
                        for (topic, partition) in g.offsets.keys() {
                            writes.push(StoreWrite {
                                partition: g.partition,
                                record: StoreRecord::Offset {
                                    key: crate::store::OffsetKey {
                                        group_id: group_id.to_owned(),
                                        topic: topic.clone(),
                                        partition: *partition,
                                    },
                                    value: None,
                                },
                            });
                        }
                        writes.push(StoreWrite {
                            partition: g.partition,
                            record: StoreRecord::Group {
                                group_id: group_id.to_owned(),
                                value: None,
                            },
                        });
                        tracing::info!(group = %group_id, offsets = g.offsets.len(), "group deleted");
                        0
                    }
                    Some(_) => ResponseError::NonEmptyGroup.code(),
                },
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id.clone())
                    .with_error_code(code),
            );
        }
        let response = resp::response(
            ctx.pending(),
            DeleteGroupsResponse::default().with_results(results),
        );
        out.persist(writes, vec![response]);
        out.into_actions()
    }
}
