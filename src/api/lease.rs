//! Leases: grant, revoke, keep-alive, time-to-live and list (`Lease*Request`, answered by
//! `Lease*Result`). Times are whole seconds on the wire and milliseconds inside; a time
//! left is rounded up, so a live lease never reads as 0 seconds.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::{ErrorCode, RequestError};
use crate::kv::lease::{LeaseAnswer, LeaseOp, LeaseResponse, TTL_SECONDS_MAX, TTL_SECONDS_MIN};
use crate::proto;

/// A lease operation a client may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRequest {
    /// `id` 0 lets the lease group choose.
    Grant {
        ttl_seconds: u64,
        id: u64,
    },
    Revoke {
        id: u64,
    },
    KeepAlive {
        id: u64,
    },
    /// With `keys`, the keys attached in the group asked (the lease group, or the one
    /// `Request.group` names).
    TimeToLive {
        id: u64,
        keys: bool,
    },
    List {
        after: u64,
    },
}

impl LeaseRequest {
    /// The op the lease group's log carries for it.
    pub fn to_op(&self) -> LeaseOp {
        match *self {
            LeaseRequest::Grant { ttl_seconds, id } => LeaseOp::Grant {
                id,
                ttl_ms: ttl_seconds * 1000,
            },
            LeaseRequest::Revoke { id } => LeaseOp::Revoke { id },
            LeaseRequest::KeepAlive { id } => LeaseOp::KeepAlive { id },
            LeaseRequest::TimeToLive { id, keys } => LeaseOp::TimeToLive { id, keys },
            LeaseRequest::List { after } => LeaseOp::List { after },
        }
    }

    /// Whether it only reads (time-to-live and list).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            LeaseRequest::TimeToLive { .. } | LeaseRequest::List { .. }
        )
    }
}

fn seconds_of(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    request: &LeaseRequest,
) -> (proto::Op, WIPOffset<UnionWIPOffset>) {
    match *request {
        LeaseRequest::Grant { ttl_seconds, id } => (
            proto::Op::LeaseGrantRequest,
            proto::LeaseGrantRequest::create(
                builder,
                &proto::LeaseGrantRequestArgs { ttl_seconds, id },
            )
            .as_union_value(),
        ),
        LeaseRequest::Revoke { id } => (
            proto::Op::LeaseRevokeRequest,
            proto::LeaseRevokeRequest::create(builder, &proto::LeaseRevokeRequestArgs { id })
                .as_union_value(),
        ),
        LeaseRequest::KeepAlive { id } => (
            proto::Op::LeaseKeepAliveRequest,
            proto::LeaseKeepAliveRequest::create(builder, &proto::LeaseKeepAliveRequestArgs { id })
                .as_union_value(),
        ),
        LeaseRequest::TimeToLive { id, keys } => (
            proto::Op::LeaseTimeToLiveRequest,
            proto::LeaseTimeToLiveRequest::create(
                builder,
                &proto::LeaseTimeToLiveRequestArgs { id, keys },
            )
            .as_union_value(),
        ),
        LeaseRequest::List { after } => (
            proto::Op::LeaseListRequest,
            proto::LeaseListRequest::create(builder, &proto::LeaseListRequestArgs { after })
                .as_union_value(),
        ),
    }
}

/// Decodes the lease op of a request; `None` when `op_type` is no lease op. A time to
/// live outside [`TTL_SECONDS_MIN`]..=[`TTL_SECONDS_MAX`] is refused here.
pub(super) fn decode_request(
    request: &proto::Request<'_>,
) -> Option<Result<LeaseRequest, RequestError>> {
    let request_id = request.request_id();
    let missing = || RequestError::missing_op(request_id);
    let decoded = match request.op_type() {
        proto::Op::LeaseGrantRequest => request.op_as_lease_grant_request().map(|grant| {
            let ttl_seconds = grant.ttl_seconds();
            if !(TTL_SECONDS_MIN..=TTL_SECONDS_MAX).contains(&ttl_seconds) {
                return Err(RequestError::new(
                    request_id,
                    ErrorCode::InvalidRequest,
                    format!(
                        "time to live of {ttl_seconds} s is outside \
                         [{TTL_SECONDS_MIN}, {TTL_SECONDS_MAX}]"
                    ),
                ));
            }
            Ok(LeaseRequest::Grant {
                ttl_seconds,
                id: grant.id(),
            })
        }),
        proto::Op::LeaseRevokeRequest => request
            .op_as_lease_revoke_request()
            .map(|revoke| Ok(LeaseRequest::Revoke { id: revoke.id() })),
        proto::Op::LeaseKeepAliveRequest => request
            .op_as_lease_keep_alive_request()
            .map(|keep| Ok(LeaseRequest::KeepAlive { id: keep.id() })),
        proto::Op::LeaseTimeToLiveRequest => {
            request.op_as_lease_time_to_live_request().map(|ttl| {
                Ok(LeaseRequest::TimeToLive {
                    id: ttl.id(),
                    keys: ttl.keys(),
                })
            })
        }
        proto::Op::LeaseListRequest => request.op_as_lease_list_request().map(|list| {
            Ok(LeaseRequest::List {
                after: list.after(),
            })
        }),
        _ => return None,
    };
    Some(decoded.unwrap_or_else(|| Err(missing())))
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    lease: &LeaseResponse,
) -> (proto::OpResult, WIPOffset<UnionWIPOffset>) {
    match lease.answer {
        LeaseAnswer::Grant => (
            proto::OpResult::LeaseGrantResult,
            proto::LeaseGrantResult::create(
                builder,
                &proto::LeaseGrantResultArgs {
                    id: lease.id,
                    ttl_seconds: seconds_of(lease.granted_ttl_ms),
                },
            )
            .as_union_value(),
        ),
        LeaseAnswer::KeepAlive => (
            proto::OpResult::LeaseKeepAliveResult,
            proto::LeaseKeepAliveResult::create(
                builder,
                &proto::LeaseKeepAliveResultArgs {
                    id: lease.id,
                    ttl_seconds: seconds_of(lease.ttl_ms),
                },
            )
            .as_union_value(),
        ),
        LeaseAnswer::TimeToLive => {
            let keys: Vec<_> = lease
                .keys
                .iter()
                .map(|key| {
                    let key = builder.create_vector(key);
                    proto::LeaseKey::create(builder, &proto::LeaseKeyArgs { key: Some(key) })
                })
                .collect();
            let keys = (!keys.is_empty()).then(|| builder.create_vector(&keys));
            (
                proto::OpResult::LeaseTimeToLiveResult,
                proto::LeaseTimeToLiveResult::create(
                    builder,
                    &proto::LeaseTimeToLiveResultArgs {
                        id: lease.id,
                        ttl_seconds: seconds_of(lease.ttl_ms),
                        granted_ttl_seconds: seconds_of(lease.granted_ttl_ms),
                        keys,
                    },
                )
                .as_union_value(),
            )
        }
        LeaseAnswer::List => {
            let ids = (!lease.ids.is_empty()).then(|| builder.create_vector(&lease.ids));
            (
                proto::OpResult::LeaseListResult,
                proto::LeaseListResult::create(
                    builder,
                    &proto::LeaseListResultArgs {
                        ids,
                        more: lease.more,
                    },
                )
                .as_union_value(),
            )
        }
        // An internal op's answer goes nowhere but to its proposer; a revoke's says
        // nothing more than Ok.
        LeaseAnswer::Revoke | LeaseAnswer::Internal => (
            proto::OpResult::LeaseRevokeResult,
            proto::LeaseRevokeResult::create(builder, &proto::LeaseRevokeResultArgs {})
                .as_union_value(),
        ),
    }
}

/// Decodes a lease result; `None` when `result_type` is no lease result.
pub(super) fn decode_result(response: &proto::Response<'_>) -> Option<Option<LeaseResponse>> {
    let lease =
        match response.result_type() {
            proto::OpResult::LeaseGrantResult => {
                response
                    .result_as_lease_grant_result()
                    .map(|grant| LeaseResponse {
                        answer: LeaseAnswer::Grant,
                        id: grant.id(),
                        ttl_ms: grant.ttl_seconds().saturating_mul(1000),
                        granted_ttl_ms: grant.ttl_seconds().saturating_mul(1000),
                        ..LeaseResponse::default()
                    })
            }
            proto::OpResult::LeaseRevokeResult => {
                response
                    .result_as_lease_revoke_result()
                    .map(|_| LeaseResponse {
                        answer: LeaseAnswer::Revoke,
                        ..LeaseResponse::default()
                    })
            }
            proto::OpResult::LeaseKeepAliveResult => response
                .result_as_lease_keep_alive_result()
                .map(|keep| LeaseResponse {
                    answer: LeaseAnswer::KeepAlive,
                    id: keep.id(),
                    ttl_ms: keep.ttl_seconds().saturating_mul(1000),
                    ..LeaseResponse::default()
                }),
            proto::OpResult::LeaseTimeToLiveResult => response
                .result_as_lease_time_to_live_result()
                .map(|ttl| LeaseResponse {
                    answer: LeaseAnswer::TimeToLive,
                    id: ttl.id(),
                    ttl_ms: ttl.ttl_seconds().saturating_mul(1000),
                    granted_ttl_ms: ttl.granted_ttl_seconds().saturating_mul(1000),
                    keys: ttl
                        .keys()
                        .iter()
                        .flatten()
                        .map(|key| key.key().bytes().to_vec())
                        .collect(),
                    ..LeaseResponse::default()
                }),
            proto::OpResult::LeaseListResult => {
                response
                    .result_as_lease_list_result()
                    .map(|list| LeaseResponse {
                        answer: LeaseAnswer::List,
                        ids: list.ids().iter().flatten().collect(),
                        more: list.more(),
                        ..LeaseResponse::default()
                    })
            }
            _ => return None,
        };
    Some(lease)
}

#[cfg(test)]
mod tests {
    use super::super::{decode_request, decode_response, encode_response, request_to_bytes};
    use super::super::{ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
    use super::*;
    use crate::kv;

    fn request(lease: LeaseRequest, group: Option<u64>) -> ApiRequest {
        ApiRequest {
            request_id: 5,
            kind: RequestKind::Lease {
                request: lease,
                group,
                seen_revision: 77,
            },
        }
    }

    // Every lease request round-trips, with and without a group.
    #[test]
    fn lease_requests_round_trip() {
        for lease in [
            LeaseRequest::Grant {
                ttl_seconds: 10,
                id: 0,
            },
            LeaseRequest::Grant {
                ttl_seconds: TTL_SECONDS_MAX,
                id: u64::MAX,
            },
            LeaseRequest::Revoke { id: 3 },
            LeaseRequest::KeepAlive { id: 4 },
            LeaseRequest::TimeToLive { id: 5, keys: true },
            LeaseRequest::List { after: 6 },
        ] {
            for group in [None, Some(3)] {
                let sent = request(lease.clone(), group);
                assert_eq!(decode_request(&request_to_bytes(&sent)), Ok(sent));
            }
        }
    }

    // A grant of a time to live outside the bounds is refused under its request id.
    #[test]
    fn a_grant_outside_the_ttl_bounds_is_refused() {
        for ttl_seconds in [0, TTL_SECONDS_MAX + 1] {
            let sent = request(LeaseRequest::Grant { ttl_seconds, id: 0 }, None);
            let error = decode_request(&request_to_bytes(&sent)).unwrap_err();
            assert_eq!(
                (error.request_id, error.code),
                (Some(5), ErrorCode::InvalidRequest)
            );
        }
    }

    // Every lease result round-trips; times left are rounded up to whole seconds.
    #[test]
    fn lease_results_round_trip() {
        let results = [
            LeaseResponse {
                answer: LeaseAnswer::Grant,
                id: 9,
                ttl_ms: 10_000,
                granted_ttl_ms: 10_000,
                ..LeaseResponse::default()
            },
            LeaseResponse {
                answer: LeaseAnswer::Revoke,
                ..LeaseResponse::default()
            },
            LeaseResponse {
                answer: LeaseAnswer::KeepAlive,
                id: 9,
                ttl_ms: 4_000,
                ..LeaseResponse::default()
            },
            LeaseResponse {
                answer: LeaseAnswer::TimeToLive,
                id: 9,
                ttl_ms: 3_000,
                granted_ttl_ms: 10_000,
                keys: vec![b"a".to_vec(), b"b".to_vec()],
                ..LeaseResponse::default()
            },
            LeaseResponse {
                answer: LeaseAnswer::List,
                ids: vec![1, 2, 3],
                more: true,
                ..LeaseResponse::default()
            },
        ];
        let mut builder = flatbuffers::FlatBufferBuilder::new();
        for lease in results {
            let response = ApiResponse {
                request_id: 2,
                result: Ok(ApiResult::Kv(kv::Response {
                    revision: 10,
                    op: kv::OpResponse::Lease(lease),
                })),
            };
            let bytes = encode_response(&mut builder, &response).to_vec();
            assert_eq!(decode_response(&bytes).unwrap(), response);
        }
        let rounded = LeaseResponse {
            answer: LeaseAnswer::KeepAlive,
            id: 1,
            ttl_ms: 1,
            ..LeaseResponse::default()
        };
        let response = ApiResponse {
            request_id: 2,
            result: Ok(ApiResult::Kv(kv::Response {
                revision: 10,
                op: kv::OpResponse::Lease(rounded),
            })),
        };
        let bytes = encode_response(&mut builder, &response).to_vec();
        let Ok(ApiResult::Kv(decoded)) = decode_response(&bytes).unwrap().result else {
            panic!("not a kv result");
        };
        let kv::OpResponse::Lease(lease) = decoded.op else {
            panic!("not a lease result");
        };
        assert_eq!(lease.ttl_ms, 1_000, "a live lease never reads as 0 seconds");
    }
}
