//! Compact: drop every group's history before a revision (`CompactRequest`, answered by
//! `CompactResult` with the lowest compaction revision among the groups).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::kv;
use crate::proto;

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    revision: u64,
) -> WIPOffset<UnionWIPOffset> {
    proto::CompactRequest::create(builder, &proto::CompactRequestArgs { revision }).as_union_value()
}

pub(super) fn decode_request(compact: proto::CompactRequest<'_>) -> u64 {
    compact.revision()
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    compact: &kv::CompactResponse,
) -> WIPOffset<UnionWIPOffset> {
    proto::CompactResult::create(
        builder,
        &proto::CompactResultArgs {
            compact_revision: compact.compact_revision,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(compact: proto::CompactResult<'_>) -> kv::CompactResponse {
    kv::CompactResponse {
        compact_revision: compact.compact_revision(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_request, decode_response, encode_response, ApiRequest};
    use super::super::{ApiResponse, ApiResult, RequestKind};
    use crate::kv;

    // A compaction's request and result round-trip.
    #[test]
    fn compact_round_trips() {
        let request = ApiRequest {
            request_id: 4,
            kind: RequestKind::Compact {
                revision: 99,
                seen_revision: 7,
                group: Some(3),
            },
        };
        let bytes = super::super::request_to_bytes(&request);
        assert_eq!(decode_request(&bytes).unwrap(), request);
        let response = ApiResponse {
            request_id: 4,
            result: Ok(ApiResult::Kv(kv::Response {
                revision: 120,
                op: kv::OpResponse::Compact(kv::CompactResponse {
                    compact_revision: 99,
                }),
            })),
        };
        let mut builder = flatbuffers::FlatBufferBuilder::new();
        let bytes = encode_response(&mut builder, &response).to_vec();
        assert_eq!(decode_response(&bytes).unwrap(), response);
    }
}
