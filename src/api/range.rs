//! Range: the read of one key or a range of keys (`RangeRequest`, answered by
//! `RangeResult`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::key_value::{decode_key_values, encode_key_values};
use super::{bytes_of, create_required_bytes, ErrorCode, RequestError};
use crate::codec::create_bytes;
use crate::kv;
use crate::proto;

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    range: &kv::RangeRequest,
) -> WIPOffset<UnionWIPOffset> {
    let key = create_required_bytes(builder, &range.key);
    let range_end = create_bytes(builder, &range.range_end);
    proto::RangeRequest::create(
        builder,
        &proto::RangeRequestArgs {
            key: Some(key),
            range_end,
            limit: range.limit,
            keys_only: range.keys_only,
            count_only: range.count_only,
            revision: range.revision,
        },
    )
    .as_union_value()
}

/// Refuses a read at a revision inside a transaction: its ops read the transaction's own
/// state. Separate from [`decode_request`] because a transaction checks this only once
/// every op of it has a known kind.
pub(super) fn check_request(
    request_id: u64,
    range: proto::RangeRequest<'_>,
) -> Result<(), RequestError> {
    if range.revision() != 0 {
        return Err(RequestError::new(
            request_id,
            ErrorCode::InvalidRequest,
            "a range inside a transaction reads the transaction's state: it takes no revision",
        ));
    }
    Ok(())
}

/// Decodes a range (inside a transaction, one that [`check_request`] accepted).
pub(super) fn decode_request(range: proto::RangeRequest<'_>) -> kv::RangeRequest {
    kv::RangeRequest {
        key: range.key().bytes().to_vec(),
        range_end: bytes_of(range.range_end()),
        limit: range.limit(),
        keys_only: range.keys_only(),
        count_only: range.count_only(),
        revision: range.revision(),
    }
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    range: &kv::RangeResponse,
) -> WIPOffset<UnionWIPOffset> {
    let kvs = encode_key_values(builder, &range.kvs);
    proto::RangeResult::create(
        builder,
        &proto::RangeResultArgs {
            kvs,
            count: range.count,
            more: range.more,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(range: proto::RangeResult<'_>) -> kv::RangeResponse {
    kv::RangeResponse {
        kvs: decode_key_values(range.kvs()),
        count: range.count(),
        more: range.more(),
    }
}

#[cfg(test)]
mod tests {
    use flatbuffers::FlatBufferBuilder;

    use super::super::samples::{
        bytes, finish_request, key_value, request_round_trip, result_round_trip,
    };
    use super::super::{decode_request as decode, RequestKind};
    use super::*;

    // Reads of one key, of a prefix with a limit and keys only, and a count of every key
    // from one on, and their results, decode to what was encoded.
    #[test]
    fn ranges_round_trip() {
        let ranges = [
            kv::RangeRequest::get(b"k"),
            kv::RangeRequest {
                limit: 10,
                keys_only: true,
                ..kv::RangeRequest::prefix(b"dir/")
            },
            kv::RangeRequest {
                key: bytes("a"),
                range_end: kv::RANGE_END_UNBOUNDED.to_vec(),
                limit: 0,
                keys_only: false,
                count_only: true,
                revision: 0,
            },
            kv::RangeRequest {
                revision: (1_700_000_000_000 << 16) | 3,
                ..kv::RangeRequest::prefix(b"dir/")
            },
        ];
        for range in ranges {
            let op = kv::Op::Range(range);
            assert_eq!(request_round_trip(op.clone()), op);
        }
        let results = [
            kv::RangeResponse::default(),
            kv::RangeResponse {
                kvs: vec![key_value("a", "1", 1), key_value("b", "", 2)],
                count: 5,
                more: true,
            },
        ];
        for range in results {
            let result = kv::OpResponse::Range(range);
            assert_eq!(result_round_trip(result.clone()), result);
        }
    }

    // A read at a revision reaches the server with its revision (a revision inside a
    // transaction is refused: see txn.rs).
    #[test]
    fn reads_at_a_revision_keep_it() {
        let mut builder = FlatBufferBuilder::new();
        let key = builder.create_vector(b"k");
        let range = proto::RangeRequest::create(
            &mut builder,
            &proto::RangeRequestArgs {
                key: Some(key),
                revision: 3,
                ..Default::default()
            },
        );
        let bytes = finish_request(builder, proto::Op::RangeRequest, range.as_union_value());
        let request = decode(&bytes).unwrap();
        let RequestKind::Kv { command, .. } = request.kind else {
            panic!("a key-value request");
        };
        assert_eq!(
            command.op,
            kv::Op::Range(kv::RangeRequest {
                revision: 3,
                ..kv::RangeRequest::get(b"k")
            })
        );
    }
}
