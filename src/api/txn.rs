//! Txn: compares, then one of two lists of ops run atomically (`TxnRequest`, answered by
//! `TxnResult`). A branch's ops are a union of their own (`TxnOp`, answered by
//! `TxnOpResult`); the matches over it here are where an op joins transactions.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, UnionWIPOffset, Vector, WIPOffset};

use super::{append, bytes_of, create_required_bytes, delete, put, range, unknown_enum};
use super::{RequestError, ResponseError};
use crate::codec::{create_bytes, create_children};
use crate::kv;
use crate::proto;

/// A branch (`success` or `failure`) on the wire.
type Branch<'b> = Vector<'b, ForwardsUOffset<proto::TxnRequestOp<'b>>>;

fn encode_compare<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    compare: &kv::Compare,
) -> WIPOffset<proto::Compare<'b>> {
    let key = create_required_bytes(builder, &compare.key);
    let (target, value, number) = match &compare.target {
        kv::CompareTarget::Value(value) => {
            (proto::CompareTarget::Value, create_bytes(builder, value), 0)
        }
        kv::CompareTarget::Version(number) => (proto::CompareTarget::Version, None, *number),
        kv::CompareTarget::CreateRevision(number) => {
            (proto::CompareTarget::CreateRevision, None, *number)
        }
        kv::CompareTarget::ModRevision(number) => {
            (proto::CompareTarget::ModRevision, None, *number)
        }
    };
    let result = match compare.result {
        kv::CompareResult::Equal => proto::CompareResult::Equal,
        kv::CompareResult::NotEqual => proto::CompareResult::NotEqual,
        kv::CompareResult::Greater => proto::CompareResult::Greater,
        kv::CompareResult::Less => proto::CompareResult::Less,
    };
    proto::Compare::create(
        builder,
        &proto::CompareArgs {
            key: Some(key),
            target,
            result,
            value,
            number,
        },
    )
}

fn encode_branch<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    ops: &[kv::TxnOp],
) -> Option<WIPOffset<Branch<'b>>> {
    create_children(builder, ops, |builder, op| {
        let (op_type, op) = match op {
            kv::TxnOp::Put(put) => (proto::TxnOp::PutRequest, put::encode_request(builder, put)),
            kv::TxnOp::Range(range) => (
                proto::TxnOp::RangeRequest,
                range::encode_request(builder, range),
            ),
            kv::TxnOp::Delete(delete) => (
                proto::TxnOp::DeleteRequest,
                delete::encode_request(builder, delete),
            ),
            kv::TxnOp::Append(append) => (
                proto::TxnOp::AppendRequest,
                append::encode_request(builder, append),
            ),
        };
        proto::TxnRequestOp::create(
            builder,
            &proto::TxnRequestOpArgs {
                op_type,
                op: Some(op),
            },
        )
    })
}

pub(super) fn encode_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    txn: &kv::TxnRequest,
) -> WIPOffset<UnionWIPOffset> {
    let compares = create_children(builder, &txn.compares, encode_compare);
    let success = encode_branch(builder, &txn.success);
    let failure = encode_branch(builder, &txn.failure);
    proto::TxnRequest::create(
        builder,
        &proto::TxnRequestArgs {
            compares,
            success,
            failure,
        },
    )
    .as_union_value()
}

/// A compare target or result this build does not know makes the whole request
/// unreadable (no answer, the connection closes), as it always has.
fn decode_compare(compare: proto::Compare<'_>) -> Result<kv::Compare, RequestError> {
    // The operand the target does not use is ignored, as etcd ignores it.
    let target = match compare.target() {
        proto::CompareTarget::Value => kv::CompareTarget::Value(bytes_of(compare.value())),
        proto::CompareTarget::Version => kv::CompareTarget::Version(compare.number()),
        proto::CompareTarget::CreateRevision => kv::CompareTarget::CreateRevision(compare.number()),
        proto::CompareTarget::ModRevision => kv::CompareTarget::ModRevision(compare.number()),
        other => return Err(unknown_enum("Compare.target", other.0).into()),
    };
    let result = match compare.result() {
        proto::CompareResult::Equal => kv::CompareResult::Equal,
        proto::CompareResult::NotEqual => kv::CompareResult::NotEqual,
        proto::CompareResult::Greater => kv::CompareResult::Greater,
        proto::CompareResult::Less => kv::CompareResult::Less,
        other => return Err(unknown_enum("Compare.result", other.0).into()),
    };
    Ok(kv::Compare {
        key: compare.key().bytes().to_vec(),
        target,
        result,
    })
}

/// Decodes a branch's ops; an op this build does not know (`NONE` included: the
/// verifier lets an explicit NONE discriminant through) is answered `UnknownOp`.
fn decode_branch(request_id: u64, ops: Option<Branch<'_>>) -> Result<Vec<kv::TxnOp>, RequestError> {
    let Some(ops) = ops else {
        return Ok(Vec::new());
    };
    let missing = || RequestError::missing_op(request_id);
    let mut decoded = Vec::with_capacity(ops.len());
    for op in ops {
        decoded.push(match op.op_type() {
            proto::TxnOp::PutRequest => kv::TxnOp::Put(put::decode_request(
                op.op_as_put_request().ok_or_else(missing)?,
            )),
            proto::TxnOp::RangeRequest => kv::TxnOp::Range(range::decode_request(
                op.op_as_range_request().ok_or_else(missing)?,
            )),
            proto::TxnOp::DeleteRequest => kv::TxnOp::Delete(delete::decode_request(
                op.op_as_delete_request().ok_or_else(missing)?,
            )),
            proto::TxnOp::AppendRequest => kv::TxnOp::Append(append::decode_request(
                op.op_as_append_request().ok_or_else(missing)?,
            )),
            other => {
                return Err(RequestError::unknown_op(
                    request_id,
                    "TxnRequestOp.op",
                    other.0,
                ))
            }
        });
    }
    Ok(decoded)
}

/// Decodes a transaction. The checks run in a fixed order, and the first that fails is
/// the answer: the compares' enums, then every op's kind (both branches), then the ops'
/// fields (`range::check_request`).
pub(super) fn decode_request(
    request_id: u64,
    txn: proto::TxnRequest<'_>,
) -> Result<kv::TxnRequest, RequestError> {
    let compares = match txn.compares() {
        Some(compares) => compares
            .iter()
            .map(decode_compare)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let success = decode_branch(request_id, txn.success())?;
    let failure = decode_branch(request_id, txn.failure())?;
    let ops = txn.success().into_iter().flatten();
    for op in ops.chain(txn.failure().into_iter().flatten()) {
        if let Some(range_request) = op.op_as_range_request() {
            range::check_request(request_id, range_request)?;
        }
    }
    Ok(kv::TxnRequest {
        compares,
        success,
        failure,
    })
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    txn: &kv::TxnResponse,
) -> WIPOffset<UnionWIPOffset> {
    let responses = create_children(builder, &txn.responses, |builder, response| {
        let (result_type, result) = match response {
            kv::TxnOpResponse::Put(put) => (
                proto::TxnOpResult::PutResult,
                put::encode_result(builder, put),
            ),
            kv::TxnOpResponse::Range(range) => (
                proto::TxnOpResult::RangeResult,
                range::encode_result(builder, range),
            ),
            kv::TxnOpResponse::Delete(delete) => (
                proto::TxnOpResult::DeleteResult,
                delete::encode_result(builder, delete),
            ),
            kv::TxnOpResponse::Append(append) => (
                proto::TxnOpResult::AppendResult,
                append::encode_result(builder, append),
            ),
        };
        proto::TxnResponseOp::create(
            builder,
            &proto::TxnResponseOpArgs {
                result_type,
                result: Some(result),
            },
        )
    });
    proto::TxnResult::create(
        builder,
        &proto::TxnResultArgs {
            succeeded: txn.succeeded,
            responses,
        },
    )
    .as_union_value()
}

/// Decodes a transaction's results; one of a kind this build does not know (`NONE`
/// included) makes the response unreadable.
pub(super) fn decode_result(
    request_id: u64,
    txn: proto::TxnResult<'_>,
) -> Result<kv::TxnResponse, ResponseError> {
    let missing = || ResponseError::Invalid {
        request_id,
        reason: "a transaction result's table is missing",
    };
    let mut responses = Vec::new();
    for response in txn.responses().iter().flatten() {
        responses.push(match response.result_type() {
            proto::TxnOpResult::PutResult => kv::TxnOpResponse::Put(put::decode_result(
                response.result_as_put_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::RangeResult => kv::TxnOpResponse::Range(range::decode_result(
                response.result_as_range_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::DeleteResult => kv::TxnOpResponse::Delete(delete::decode_result(
                response.result_as_delete_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::AppendResult => kv::TxnOpResponse::Append(append::decode_result(
                response.result_as_append_result().ok_or_else(missing)?,
            )),
            other => return Err(unknown_enum("TxnResponseOp.result", other.0).into()),
        });
    }
    Ok(kv::TxnResponse {
        succeeded: txn.succeeded(),
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::super::samples::{
        finish_request, finish_response, request_round_trip, result_round_trip, sample_txn,
        sample_txn_result, txn_request_bytes,
    };
    use super::super::{decode_request as decode, decode_response, ErrorCode};
    use super::*;
    use crate::codec::CodecError;

    // A transaction with every compare target and result and every op kind, an empty
    // one, and results of every op kind decode to what was encoded.
    #[test]
    fn transactions_round_trip() {
        for txn in [sample_txn(), kv::TxnRequest::default()] {
            let op = kv::Op::Txn(txn);
            assert_eq!(request_round_trip(op.clone()), op);
        }
        let results = [kv::TxnResponse::default(), sample_txn_result()];
        for txn in results {
            let result = kv::OpResponse::Txn(txn);
            assert_eq!(result_round_trip(result.clone()), result);
        }
    }

    // An unknown op in a branch is answered UnknownOp under the request's id; an unknown
    // compare target or result makes the request unreadable.
    #[test]
    fn invalid_transactions_are_refused() {
        let bytes = txn_request_bytes(proto::CompareTarget::Value, proto::TxnOp(9));
        let error = decode(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code, error.message.as_str()),
            (
                Some(77),
                ErrorCode::UnknownOp,
                "request 77: unknown operation 9 in TxnRequestOp.op"
            )
        );

        let bytes = txn_request_bytes(proto::CompareTarget(4), proto::TxnOp::RangeRequest);
        assert_eq!(
            decode(&bytes).unwrap_err(),
            RequestError::from(CodecError::UnknownEnum {
                field: "Compare.target",
                value: 4
            })
        );
        // An unknown compare comes before an unknown op.
        let bytes = txn_request_bytes(proto::CompareTarget(4), proto::TxnOp(9));
        assert_eq!(decode(&bytes).unwrap_err().request_id, None);
    }

    // Every op's kind is checked before any op's fields: an unknown op in `failure` is
    // the answer even when a read in `success` asks for a past revision.
    #[test]
    fn op_kinds_are_checked_before_op_fields() {
        let txn_bytes = |failure_op: proto::TxnOp| {
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
            let ops: Vec<_> = [proto::TxnOp::RangeRequest, failure_op]
                .into_iter()
                .map(|op_type| {
                    proto::TxnRequestOp::create(
                        &mut builder,
                        &proto::TxnRequestOpArgs {
                            op_type,
                            op: Some(range.as_union_value()),
                        },
                    )
                })
                .collect();
            let success = builder.create_vector(&ops[..1]);
            let failure = builder.create_vector(&ops[1..]);
            let txn = proto::TxnRequest::create(
                &mut builder,
                &proto::TxnRequestArgs {
                    compares: None,
                    success: Some(success),
                    failure: Some(failure),
                },
            );
            finish_request(builder, proto::Op::TxnRequest, txn.as_union_value())
        };
        let error = decode(&txn_bytes(proto::TxnOp(9))).unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (Some(77), ErrorCode::UnknownOp)
        );
        let error = decode(&txn_bytes(proto::TxnOp::RangeRequest)).unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (Some(77), ErrorCode::InvalidRequest)
        );
    }

    // A transaction result of a kind this build does not know makes the response
    // unreadable.
    #[test]
    fn unknown_transaction_results_are_refused() {
        let mut builder = FlatBufferBuilder::new();
        let put = proto::PutResult::create(&mut builder, &proto::PutResultArgs::default());
        let op = proto::TxnResponseOp::create(
            &mut builder,
            &proto::TxnResponseOpArgs {
                result_type: proto::TxnOpResult(9),
                result: Some(put.as_union_value()),
            },
        );
        let responses = builder.create_vector(&[op]);
        let txn = proto::TxnResult::create(
            &mut builder,
            &proto::TxnResultArgs {
                succeeded: true,
                responses: Some(responses),
            },
        );
        let bytes = finish_response(
            builder,
            proto::OpResult::TxnResult,
            Some(txn.as_union_value()),
        );
        assert_eq!(
            decode_response(&bytes),
            Err(ResponseError::Codec(CodecError::UnknownEnum {
                field: "TxnResponseOp.result",
                value: 9
            }))
        );
    }
}
