//! Put: the write of one key (`PutRequest`, answered by `PutResult`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::key_value::{decode_key_value, encode_key_value};
use super::{bytes_of, create_required_bytes};
use crate::codec::create_bytes;
use crate::kv;
use crate::proto;

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    put: &kv::PutRequest,
) -> WIPOffset<UnionWIPOffset> {
    let key = create_required_bytes(builder, &put.key);
    let value = create_bytes(builder, &put.value);
    proto::PutRequest::create(
        builder,
        &proto::PutRequestArgs {
            key: Some(key),
            value,
            lease: put.lease,
            prev_kv: put.prev_kv,
        },
    )
    .as_union_value()
}

pub(super) fn decode_request(put: proto::PutRequest<'_>) -> kv::PutRequest {
    kv::PutRequest {
        key: put.key().bytes().to_vec(),
        value: bytes_of(put.value()),
        prev_kv: put.prev_kv(),
        lease: put.lease(),
    }
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    put: &kv::PutResponse,
) -> WIPOffset<UnionWIPOffset> {
    let prev_kv = put
        .prev_kv
        .as_ref()
        .map(|key_value| encode_key_value(builder, key_value));
    proto::PutResult::create(builder, &proto::PutResultArgs { prev_kv }).as_union_value()
}

pub(super) fn decode_result(put: proto::PutResult<'_>) -> kv::PutResponse {
    kv::PutResponse {
        prev_kv: put.prev_kv().map(decode_key_value),
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{key_value, put, request_round_trip, result_round_trip};
    use super::*;

    // A put with and without a value, lease and prev_kv, and its result with and without
    // the previous pair, decode to what was encoded.
    #[test]
    fn puts_round_trip() {
        let puts = [
            put("k", "v"),
            kv::PutRequest {
                value: Vec::new(),
                prev_kv: true,
                lease: u64::MAX,
                ..put("k", "")
            },
            // An empty key travels as is; refusing it is the store's job (EmptyKey).
            put("", "v"),
        ];
        for put in puts {
            let op = kv::Op::Put(put);
            assert_eq!(request_round_trip(op.clone()), op);
        }
        for prev_kv in [None, Some(key_value("k", "old", 3))] {
            let result = kv::OpResponse::Put(kv::PutResponse { prev_kv });
            assert_eq!(result_round_trip(result.clone()), result);
        }
    }
}
