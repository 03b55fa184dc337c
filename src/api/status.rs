//! Status: a node's report on itself, its cluster and its groups (`StatusRequest`,
//! answered by `StatusResult`), as [`StatusInfo`], [`GroupStatus`] and [`Member`].

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::create_string;
use crate::multiraft::{self, GroupId};
use crate::proto;
use crate::raft::{Index, NodeId, Role, Term};

/// A node's report on itself, its cluster and its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusInfo {
    pub node_id: NodeId,
    /// 0 when the node did not say.
    pub cluster_id: u64,
    /// Shards (cores) the node runs.
    pub shards: u32,
    /// Groups the keyspace is cut into; 0 when the node did not say.
    pub group_count: u64,
    /// The groups the node hosts, as its replicas see them.
    pub groups: Vec<GroupStatus>,
    /// Every node of the cluster.
    pub members: Vec<Member>,
}

/// One group as the answering node's replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub group_id: GroupId,
    /// The replica's role; `None` when the node did not say or sent a role this build
    /// does not know (a status report is shown, not acted on, so it is read leniently).
    pub role: Option<Role>,
    /// [`NO_NODE`](crate::raft::NO_NODE) when no leader is known.
    pub leader: NodeId,
    pub term: Term,
    pub commit: Index,
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    /// Voting members, ascending.
    pub voters: Vec<NodeId>,
}

impl From<&multiraft::GroupStatus> for GroupStatus {
    fn from(status: &multiraft::GroupStatus) -> GroupStatus {
        GroupStatus {
            group_id: status.group,
            role: Some(status.role),
            leader: status.leader,
            term: status.term,
            commit: status.commit,
            applied: status.applied,
            first_index: status.first_index,
            last_index: status.last_index,
            voters: status.conf.voters.clone(),
        }
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub node_id: NodeId,
    /// Where clients reach the node, "host:port".
    pub client_address: String,
    /// Where peers reach the node, "host:port".
    pub peer_address: String,
}

/// The request carries nothing: it asks for the whole report.
pub(super) fn encode_request(builder: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
    proto::StatusRequest::create(builder, &proto::StatusRequestArgs {}).as_union_value()
}

fn role_to_proto(role: Option<Role>) -> proto::GroupRole {
    match role {
        None => proto::GroupRole::Unspecified,
        Some(Role::Follower) => proto::GroupRole::Follower,
        Some(Role::PreCandidate) => proto::GroupRole::PreCandidate,
        Some(Role::Candidate) => proto::GroupRole::Candidate,
        Some(Role::Leader) => proto::GroupRole::Leader,
    }
}

fn role_from_proto(role: proto::GroupRole) -> Option<Role> {
    match role {
        proto::GroupRole::Follower => Some(Role::Follower),
        proto::GroupRole::PreCandidate => Some(Role::PreCandidate),
        proto::GroupRole::Candidate => Some(Role::Candidate),
        proto::GroupRole::Leader => Some(Role::Leader),
        _ => None,
    }
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    status: &StatusInfo,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
    let groups: Vec<_> = status
        .groups
        .iter()
        .map(|group| {
            let voters = (!group.voters.is_empty()).then(|| builder.create_vector(&group.voters));
            proto::GroupStatus::create(
                builder,
                &proto::GroupStatusArgs {
                    group_id: group.group_id,
                    leader: group.leader,
                    term: group.term,
                    commit: group.commit,
                    applied: group.applied,
                    role: role_to_proto(group.role),
                    first_index: group.first_index,
                    last_index: group.last_index,
                    voters,
                },
            )
        })
        .collect();
    let groups = (!groups.is_empty()).then(|| builder.create_vector(&groups));
    let members: Vec<_> = status
        .members
        .iter()
        .map(|member| {
            let client_address = create_string(builder, &member.client_address);
            let peer_address = create_string(builder, &member.peer_address);
            proto::Member::create(
                builder,
                &proto::MemberArgs {
                    node_id: member.node_id,
                    client_address,
                    peer_address,
                },
            )
        })
        .collect();
    let members = (!members.is_empty()).then(|| builder.create_vector(&members));
    proto::StatusResult::create(
        builder,
        &proto::StatusResultArgs {
            node_id: status.node_id,
            shards: status.shards,
            groups,
            cluster_id: status.cluster_id,
            group_count: status.group_count,
            members,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(status: proto::StatusResult<'_>) -> StatusInfo {
    let groups = status
        .groups()
        .iter()
        .flatten()
        .map(|group| GroupStatus {
            group_id: group.group_id(),
            role: role_from_proto(group.role()),
            leader: group.leader(),
            term: group.term(),
            commit: group.commit(),
            applied: group.applied(),
            first_index: group.first_index(),
            last_index: group.last_index(),
            voters: group
                .voters()
                .map_or_else(Vec::new, |voters| voters.iter().collect()),
        })
        .collect();
    let members = status
        .members()
        .iter()
        .flatten()
        .map(|member| Member {
            node_id: member.node_id(),
            client_address: member.client_address().unwrap_or_default().to_string(),
            peer_address: member.peer_address().unwrap_or_default().to_string(),
        })
        .collect();
    StatusInfo {
        node_id: status.node_id(),
        cluster_id: status.cluster_id(),
        shards: status.shards(),
        group_count: status.group_count(),
        groups,
        members,
    }
}

#[cfg(test)]
mod tests {
    use flatbuffers::FlatBufferBuilder;

    use super::super::samples::{finish_response, sample_status};
    use super::super::{decode_response, response_to_bytes, ApiResponse, ApiResult};
    use super::*;
    use crate::raft::NO_NODE;

    // A full report, and an empty one, decode to what was encoded.
    #[test]
    fn status_round_trips() {
        for status in [sample_status(), StatusInfo::default()] {
            let response = ApiResponse {
                request_id: 9,
                result: Ok(ApiResult::Status(status)),
            };
            assert_eq!(
                decode_response(&response_to_bytes(&response)),
                Ok(response.clone())
            );
        }
    }

    // A role from a newer build reads as unknown: a report is shown, not acted on.
    #[test]
    fn unknown_roles_read_as_none() {
        let mut builder = FlatBufferBuilder::new();
        let group = proto::GroupStatus::create(
            &mut builder,
            &proto::GroupStatusArgs {
                group_id: 7,
                role: proto::GroupRole(77),
                ..Default::default()
            },
        );
        let groups = builder.create_vector(&[group]);
        let status = proto::StatusResult::create(
            &mut builder,
            &proto::StatusResultArgs {
                groups: Some(groups),
                ..Default::default()
            },
        );
        let bytes = finish_response(
            builder,
            proto::OpResult::StatusResult,
            Some(status.as_union_value()),
        );
        let Ok(ApiResult::Status(status)) = decode_response(&bytes).unwrap().result else {
            panic!("a status result");
        };
        assert_eq!(
            (status.groups[0].group_id, status.groups[0].role),
            (7, None)
        );
    }

    // A group's status as the shard reports it becomes the wire form field by field.
    #[test]
    fn group_status_from_the_shard() {
        let shard_status = multiraft::GroupStatus {
            group: 3,
            role: Role::Candidate,
            leader: NO_NODE,
            term: 8,
            commit: 20,
            applied: 19,
            last_index: 22,
            first_index: 5,
            conf: crate::raft::ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
            },
        };
        assert_eq!(
            GroupStatus::from(&shard_status),
            GroupStatus {
                group_id: 3,
                role: Some(Role::Candidate),
                leader: NO_NODE,
                term: 8,
                commit: 20,
                applied: 19,
                first_index: 5,
                last_index: 22,
                voters: vec![1, 2, 3],
            }
        );
    }
}
