//! Append: bytes added to the value of one key (`AppendRequest`, answered by
//! `AppendResult`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::{bytes_of, create_required_bytes};
use crate::codec::create_bytes;
use crate::kv;
use crate::proto;

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    append: &kv::AppendRequest,
) -> WIPOffset<UnionWIPOffset> {
    let key = create_required_bytes(builder, &append.key);
    let value = create_bytes(builder, &append.value);
    proto::AppendRequest::create(
        builder,
        &proto::AppendRequestArgs {
            key: Some(key),
            value,
        },
    )
    .as_union_value()
}

pub(super) fn decode_request(append: proto::AppendRequest<'_>) -> kv::AppendRequest {
    kv::AppendRequest {
        key: append.key().bytes().to_vec(),
        value: bytes_of(append.value()),
    }
}

pub(super) fn encode_result(
    builder: &mut FlatBufferBuilder<'_>,
    append: &kv::AppendResponse,
) -> WIPOffset<UnionWIPOffset> {
    proto::AppendResult::create(
        builder,
        &proto::AppendResultArgs {
            value_bytes: append.value_bytes,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(append: proto::AppendResult<'_>) -> kv::AppendResponse {
    kv::AppendResponse {
        value_bytes: append.value_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{request_round_trip, result_round_trip};
    use super::*;

    // An append of any bytes, an empty one too, and its result decode to what was
    // encoded.
    #[test]
    fn appends_round_trip() {
        for value in [vec![0, 0xff, 7], Vec::new()] {
            let op = kv::Op::Append(kv::AppendRequest {
                key: b"log".to_vec(),
                value,
            });
            assert_eq!(request_round_trip(op.clone()), op);
        }
        for value_bytes in [0, 17, u64::MAX] {
            let result = kv::OpResponse::Append(kv::AppendResponse { value_bytes });
            assert_eq!(result_round_trip(result.clone()), result);
        }
    }
}
