//! DeleteRange: the deletion of one key or a range of keys (`DeleteRequest`, answered by
//! `DeleteResult`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::key_value::{decode_key_values, encode_key_values};
use super::{bytes_of, create_required_bytes};
use crate::codec::create_bytes;
use crate::kv;
use crate::proto;

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    delete: &kv::DeleteRequest,
) -> WIPOffset<UnionWIPOffset> {
    let key = create_required_bytes(builder, &delete.key);
    let range_end = create_bytes(builder, &delete.range_end);
    proto::DeleteRequest::create(
        builder,
        &proto::DeleteRequestArgs {
            key: Some(key),
            range_end,
            prev_kv: delete.prev_kv,
        },
    )
    .as_union_value()
}

pub(super) fn decode_request(delete: proto::DeleteRequest<'_>) -> kv::DeleteRequest {
    kv::DeleteRequest {
        key: delete.key().bytes().to_vec(),
        range_end: bytes_of(delete.range_end()),
        prev_kv: delete.prev_kv(),
    }
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    delete: &kv::DeleteResponse,
) -> WIPOffset<UnionWIPOffset> {
    let prev_kvs = encode_key_values(builder, &delete.prev_kvs);
    proto::DeleteResult::create(
        builder,
        &proto::DeleteResultArgs {
            deleted: delete.deleted,
            prev_kvs,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(delete: proto::DeleteResult<'_>) -> kv::DeleteResponse {
    kv::DeleteResponse {
        deleted: delete.deleted(),
        prev_kvs: decode_key_values(delete.prev_kvs()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::samples::{bytes, key_value, request_round_trip, result_round_trip};
    use super::*;

    // A delete of one key and of a range, with and without prev_kv, and results with and
    // without the deleted pairs, decode to what was encoded.
    #[test]
    fn deletes_round_trip() {
        let deletes = [
            kv::DeleteRequest {
                key: bytes("k"),
                range_end: Vec::new(),
                prev_kv: false,
            },
            kv::DeleteRequest {
                key: bytes("a"),
                range_end: bytes("b"),
                prev_kv: true,
            },
            kv::DeleteRequest {
                key: bytes("a"),
                range_end: kv::RANGE_END_UNBOUNDED.to_vec(),
                prev_kv: false,
            },
        ];
        for delete in deletes {
            let op = kv::Op::Delete(delete);
            assert_eq!(request_round_trip(op.clone()), op);
        }
        let results = [
            kv::DeleteResponse::default(),
            kv::DeleteResponse {
                deleted: 2,
                prev_kvs: vec![key_value("a", "1", 1), key_value("b", "2", 2)],
            },
            kv::DeleteResponse {
                deleted: 5,
                prev_kvs: Vec::new(),
            },
        ];
        for delete in results {
            let result = kv::OpResponse::Delete(delete);
            assert_eq!(result_round_trip(result.clone()), result);
        }
    }
}
