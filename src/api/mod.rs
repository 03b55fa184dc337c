//! The client protocol (`schema/client.fbs`) as Rust values: the request and response
//! envelopes, and the one dispatch over the operations in each direction. The server
//! decodes requests and encodes responses with it; the SDK in [`crate::client`] does the
//! reverse.
//!
//! The values ([`ApiRequest`], [`ApiResponse`], [`ApiError`], [`StatusInfo`], the [`kv`]
//! types they carry) name no FlatBuffers type, so another front end (etcd's gRPC API)
//! can map onto the same values. Only [`verify_request`] and [`verify_response`] hand out
//! FlatBuffers views, for tests and tools that read a verified buffer field by field.
//!
//! # Files
//!
//! | file           | owns                                                               |
//! |----------------|--------------------------------------------------------------------|
//! | `mod.rs`       | the envelopes and the one `match` over the op union per direction  |
//! | `error.rs`     | [`ErrorCode`], [`ApiError`], the error mapping, [`RequestError`], [`ResponseError`] |
//! | `verify.rs`    | the FlatBuffers verifier with corekv's bounds, once per buffer     |
//! | `put.rs`       | Put: `PutRequest` and `PutResult`                                  |
//! | `range.rs`     | Range: `RangeRequest` and `RangeResult`                            |
//! | `delete.rs`    | DeleteRange: `DeleteRequest` and `DeleteResult`                    |
//! | `append.rs`    | Append: `AppendRequest` and `AppendResult`                         |
//! | `txn.rs`       | Txn: compares, the branches' ops and their results                 |
//! | `status.rs`    | Status: [`StatusInfo`], [`GroupStatus`], [`Member`]                |
//! | `compact.rs`   | Compact: `CompactRequest` and `CompactResult`                      |
//! | `lease.rs`     | Leases: grant, revoke, keep-alive, time-to-live, list (`docs/LEASES.md`) |
//! | `key_value.rs` | `KeyValue`, the pair that reads and `prev_kv` return               |
//! | `watch.rs`     | Watch: create, cancel and progress requests, and the `WatchResult` stream |
//! | `unserved.rs`  | unknown ops                                                        |
//! | `samples.rs`   | for tests only: sample values and buffers the files' tests share   |
//!
//! The envelope is what every request or response carries whatever its op: the request
//! id, the session (client id, seq), `serializable`, the group scope, and on the way
//! back the status code, message, leader hint and revision.
//!
//! Each operation's file holds its request and result, encoding and decoding, and the
//! checks of its fields. Adding an operation is one new file and one `match` arm in each
//! of [`encode_request`], [`decode_request`], [`encode_response`] and
//! [`decode_response`] (and one in `txn.rs` if a transaction may run it); serving a lease
//! or watch op moves its arms out of `unserved.rs`.
//!
//! # Reading a buffer
//!
//! Every buffer from outside enters through [`decode_request`] or [`decode_response`],
//! which run the verifier once ([`verify_request`] / [`verify_response`]) and then decode.
//! What the verifier cannot check (an operation or enum value this build does not know, a
//! request the server does not serve) is checked while decoding, by the file that owns
//! the field, so each check is written once and runs once. Bad input is an error value,
//! never a panic.
//!
//! # What the server serves
//!
//! Put, Range (at the current revision or at a past one), DeleteRange, Append, Txn,
//! Compact, Status, watches and the lease ops; [`decode_request`] answers an op this
//! build does not know with [`ErrorCode::UnknownOp`]. A Range inside a Txn
//! reads the Txn's own state: a revision there is refused with
//! [`ErrorCode::InvalidRequest`].
//!
//! `serializable` is kept only on read-only commands (a Range, or a Txn of only Ranges):
//! a write always goes through the log, whatever the flag says.
//!
//! How server-side errors map to codes is in `error.rs`.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::codec::CodecError;
use crate::kv;
use crate::proto;
use crate::raft::{NodeId, NO_NODE};

mod append;
mod compact;
mod delete;
mod error;
mod key_value;
mod lease;
mod put;
mod range;
mod status;
mod txn;
mod unserved;
mod verify;
mod watch;

#[cfg(test)]
mod samples;

pub use error::{ApiError, ErrorCode, RequestError, ResponseError};
pub use lease::LeaseRequest;
pub use status::{GroupStatus, Member, StatusInfo};
pub use verify::{verify_request, verify_response};
pub use watch::{EventKind, WatchCreate, WatchEvent, WatchResponse};

/// One client request, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    /// Chosen by the client, unique among its requests in flight on one connection.
    pub request_id: u64,
    pub kind: RequestKind,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A key-value command. Its `client_id` and `seq` are the request's session (both 0:
    /// none). `serializable` is true only for a read-only command whose client asked for
    /// a possibly stale read from the local replica.
    Kv {
        command: kv::Command,
        serializable: bool,
        /// Only this group (see the schema's `Request.group`); `None`: the whole
        /// keyspace, split by the serving node where the op spans groups.
        group: Option<u64>,
        /// The highest revision the client has seen (0: none).
        seen_revision: u64,
    },
    /// Compact one group's history to `revision` (the schema's `Request.group` names it;
    /// the SDK sends one per group, each to that group's leader).
    Compact {
        revision: u64,
        seen_revision: u64,
        group: Option<u64>,
    },
    /// The answering node's state and the state of its groups.
    Status,
    /// Start a watch; its id is the request's id. `seen_revision` as for a command.
    WatchCreate {
        create: WatchCreate,
        seen_revision: u64,
    },
    /// End the watch of this connection with this id.
    WatchCancel { watch_id: u64 },
    /// Ask the watch of this connection with this id for a progress notification.
    WatchProgress { watch_id: u64 },
    /// A lease operation, served by the lease group (`docs/LEASES.md`); a time-to-live
    /// with a `group` reads the keys of the lease attached in that group.
    Lease {
        request: LeaseRequest,
        group: Option<u64>,
        seen_revision: u64,
    },
}

/// What a successful request answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiResult {
    /// The answer to a key-value command, with the store's revision.
    Kv(kv::Response),
    Status(StatusInfo),
    /// One response of a watch's stream, or the answer to a cancel or progress request.
    Watch(WatchResponse),
}

/// One server response, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// The `request_id` of the request this answers.
    pub request_id: u64,
    pub result: Result<ApiResult, ApiError>,
}

/// Where to send a write instead: the leader of the key's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// Never [`NO_NODE`].
    pub node_id: NodeId,
    /// The leader's client address, "host:port"; empty when the answering node does not
    /// know it.
    pub client_address: String,
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Writes `request` as a whole buffer into `builder` (reset first, so one builder serves
/// many requests) and returns the finished bytes, ready to be framed.
pub fn encode_request<'a>(
    builder: &'a mut FlatBufferBuilder<'_>,
    request: &ApiRequest,
) -> &'a [u8] {
    builder.reset();
    let (client_id, seq, serializable, group, seen_revision, op_type, op) = match &request.kind {
        RequestKind::Kv {
            command,
            serializable,
            group,
            seen_revision,
        } => {
            let (op_type, op) = match &command.op {
                kv::Op::Put(put) => (proto::Op::PutRequest, put::encode_request(builder, put)),
                kv::Op::Range(range) => (
                    proto::Op::RangeRequest,
                    range::encode_request(builder, range),
                ),
                kv::Op::Delete(delete) => (
                    proto::Op::DeleteRequest,
                    delete::encode_request(builder, delete),
                ),
                kv::Op::Append(append) => (
                    proto::Op::AppendRequest,
                    append::encode_request(builder, append),
                ),
                kv::Op::Txn(txn) => (proto::Op::TxnRequest, txn::encode_request(builder, txn)),
            };
            (
                command.client_id,
                command.seq,
                *serializable,
                *group,
                *seen_revision,
                op_type,
                op,
            )
        }
        RequestKind::Compact {
            revision,
            seen_revision,
            group,
        } => (
            0,
            0,
            false,
            *group,
            *seen_revision,
            proto::Op::CompactRequest,
            compact::encode_request(builder, *revision),
        ),
        RequestKind::Status => (
            0,
            0,
            false,
            None,
            0,
            proto::Op::StatusRequest,
            status::encode_request(builder),
        ),
        RequestKind::WatchCreate {
            create,
            seen_revision,
        } => (
            0,
            0,
            false,
            None,
            *seen_revision,
            proto::Op::WatchCreateRequest,
            watch::encode_create(builder, create),
        ),
        RequestKind::WatchCancel { watch_id } => (
            0,
            0,
            false,
            None,
            0,
            proto::Op::WatchCancelRequest,
            watch::encode_cancel(builder, *watch_id),
        ),
        RequestKind::WatchProgress { watch_id } => (
            0,
            0,
            false,
            None,
            0,
            proto::Op::WatchProgressRequest,
            watch::encode_progress(builder, *watch_id),
        ),
        RequestKind::Lease {
            request,
            group,
            seen_revision,
        } => {
            let (op_type, op) = lease::encode_request(builder, request);
            (0, 0, false, *group, *seen_revision, op_type, op)
        }
    };
    let root = proto::Request::create(
        builder,
        &proto::RequestArgs {
            request_id: request.request_id,
            client_id,
            seq,
            serializable,
            op_type,
            op: Some(op),
            group,
            seen_revision,
        },
    );
    builder.finish_minimal(root);
    builder.finished_data()
}

/// Encodes `request` into a fresh buffer.
pub fn request_to_bytes(request: &ApiRequest) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(request_capacity_hint(request));
    encode_request(&mut builder, request).to_vec()
}

/// A first guess at a request's encoded size, so that most builders never regrow.
pub fn request_capacity_hint(request: &ApiRequest) -> usize {
    match &request.kind {
        // The log encoding holds the same bytes with smaller framing per field.
        RequestKind::Kv { command, .. } => 128 + 2 * command.encoded_len(),
        RequestKind::WatchCreate { create, .. } => 128 + 2 * create.encoded_len(),
        RequestKind::Compact { .. }
        | RequestKind::Status
        | RequestKind::WatchCancel { .. }
        | RequestKind::WatchProgress { .. }
        | RequestKind::Lease { .. } => 64,
    }
}

/// Verifies and decodes a client request (the server's entry point).
pub fn decode_request(bytes: &[u8]) -> Result<ApiRequest, RequestError> {
    let request = verify_request(bytes)?;
    let request_id = request.request_id();
    let missing = || RequestError::missing_op(request_id);
    if let Some(lease) = lease::decode_request(&request) {
        return Ok(ApiRequest {
            request_id,
            kind: RequestKind::Lease {
                request: lease?,
                group: request.group(),
                seen_revision: request.seen_revision(),
            },
        });
    }
    let op = match request.op_type() {
        proto::Op::PutRequest => kv::Op::Put(put::decode_request(
            request.op_as_put_request().ok_or_else(missing)?,
        )),
        proto::Op::RangeRequest => kv::Op::Range(range::decode_request(
            request.op_as_range_request().ok_or_else(missing)?,
        )),
        proto::Op::DeleteRequest => kv::Op::Delete(delete::decode_request(
            request.op_as_delete_request().ok_or_else(missing)?,
        )),
        proto::Op::AppendRequest => kv::Op::Append(append::decode_request(
            request.op_as_append_request().ok_or_else(missing)?,
        )),
        proto::Op::TxnRequest => kv::Op::Txn(txn::decode_request(
            request_id,
            request.op_as_txn_request().ok_or_else(missing)?,
        )?),
        proto::Op::StatusRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::Status,
            })
        }
        proto::Op::CompactRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::Compact {
                    revision: compact::decode_request(
                        request.op_as_compact_request().ok_or_else(missing)?,
                    ),
                    seen_revision: request.seen_revision(),
                    group: request.group(),
                },
            })
        }
        proto::Op::WatchCreateRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::WatchCreate {
                    create: watch::decode_create(
                        request.op_as_watch_create_request().ok_or_else(missing)?,
                    ),
                    seen_revision: request.seen_revision(),
                },
            })
        }
        proto::Op::WatchCancelRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::WatchCancel {
                    watch_id: request
                        .op_as_watch_cancel_request()
                        .ok_or_else(missing)?
                        .watch_id(),
                },
            })
        }
        proto::Op::WatchProgressRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::WatchProgress {
                    watch_id: request
                        .op_as_watch_progress_request()
                        .ok_or_else(missing)?
                        .watch_id(),
                },
            })
        }
        not_served => return Err(unserved::refuse_request(request_id, not_served)),
    };
    let serializable = request.serializable() && op.is_read_only();
    Ok(ApiRequest {
        request_id,
        kind: RequestKind::Kv {
            command: kv::Command {
                client_id: request.client_id(),
                seq: request.seq(),
                op,
            },
            serializable,
            group: request.group(),
            seen_revision: request.seen_revision(),
        },
    })
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// Writes `response` as a whole buffer into `builder` (reset first) and returns the
/// finished bytes, ready to be framed.
pub fn encode_response<'a>(
    builder: &'a mut FlatBufferBuilder<'_>,
    response: &ApiResponse,
) -> &'a [u8] {
    builder.reset();
    let root = match &response.result {
        Ok(result) => {
            let (revision, result_type, result) = match result {
                ApiResult::Kv(kv_response) => {
                    let (result_type, result) = match &kv_response.op {
                        kv::OpResponse::Put(put) => {
                            (proto::OpResult::PutResult, put::encode_result(builder, put))
                        }
                        kv::OpResponse::Range(range) => (
                            proto::OpResult::RangeResult,
                            range::encode_result(builder, range),
                        ),
                        kv::OpResponse::Delete(delete) => (
                            proto::OpResult::DeleteResult,
                            delete::encode_result(builder, delete),
                        ),
                        kv::OpResponse::Append(append) => (
                            proto::OpResult::AppendResult,
                            append::encode_result(builder, append),
                        ),
                        kv::OpResponse::Txn(txn) => {
                            (proto::OpResult::TxnResult, txn::encode_result(builder, txn))
                        }
                        kv::OpResponse::Compact(compact) => (
                            proto::OpResult::CompactResult,
                            compact::encode_result(builder, compact),
                        ),
                        kv::OpResponse::Lease(lease) => lease::encode_result(builder, lease),
                    };
                    (kv_response.revision, result_type, result)
                }
                ApiResult::Status(status) => (
                    0,
                    proto::OpResult::StatusResult,
                    status::encode_result(builder, status),
                ),
                ApiResult::Watch(watch) => (
                    watch.revision,
                    proto::OpResult::WatchResult,
                    watch::encode_result(builder, watch),
                ),
            };
            proto::Response::create(
                builder,
                &proto::ResponseArgs {
                    request_id: response.request_id,
                    status: proto::StatusCode::Ok,
                    message: None,
                    leader: None,
                    revision,
                    result_type,
                    result: Some(result),
                },
            )
        }
        Err(error) => {
            let message = create_string(builder, &error.message);
            let leader = error.leader.as_ref().map(|hint| {
                debug_assert_ne!(hint.node_id, NO_NODE, "a leader hint names a node");
                let client_address = create_string(builder, &hint.client_address);
                proto::LeaderHint::create(
                    builder,
                    &proto::LeaderHintArgs {
                        node_id: hint.node_id,
                        client_address,
                    },
                )
            });
            proto::Response::create(
                builder,
                &proto::ResponseArgs {
                    request_id: response.request_id,
                    status: error.code.to_proto(),
                    message,
                    leader,
                    revision: error.revision,
                    result_type: proto::OpResult::NONE,
                    result: None,
                },
            )
        }
    };
    builder.finish_minimal(root);
    builder.finished_data()
}

/// Encodes `response` into a fresh buffer.
pub fn response_to_bytes(response: &ApiResponse) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(1024);
    encode_response(&mut builder, response).to_vec()
}

/// Verifies and decodes a server response (the SDK's entry point). The caller checks
/// that the result's kind is the one it asked for: the response does not name its
/// request's operation.
pub fn decode_response(bytes: &[u8]) -> Result<ApiResponse, ResponseError> {
    let response = verify_response(bytes)?;
    let request_id = response.request_id();
    let invalid = |reason| ResponseError::Invalid { request_id, reason };
    let missing = || invalid("the result's table is missing");
    let kv_result = |op| {
        ApiResult::Kv(kv::Response {
            revision: response.revision(),
            op,
        })
    };
    // The result is read before the status: a corekv server sends an error without one,
    // and a result this build cannot read makes any response unreadable, an error too.
    // `Err` holds why a result that reads is still refused when the status is Ok.
    let lease = lease::decode_result(&response)
        .map(|lease| lease.map(|lease| kv_result(kv::OpResponse::Lease(lease))));
    let result: Result<ApiResult, &'static str> = match response.result_type() {
        _ if lease.is_some() => Ok(lease.flatten().ok_or_else(missing)?),
        proto::OpResult::PutResult => Ok(kv_result(kv::OpResponse::Put(put::decode_result(
            response.result_as_put_result().ok_or_else(missing)?,
        )))),
        proto::OpResult::RangeResult => Ok(kv_result(kv::OpResponse::Range(range::decode_result(
            response.result_as_range_result().ok_or_else(missing)?,
        )))),
        proto::OpResult::DeleteResult => Ok(kv_result(kv::OpResponse::Delete(
            delete::decode_result(response.result_as_delete_result().ok_or_else(missing)?),
        ))),
        proto::OpResult::AppendResult => Ok(kv_result(kv::OpResponse::Append(
            append::decode_result(response.result_as_append_result().ok_or_else(missing)?),
        ))),
        proto::OpResult::TxnResult => Ok(kv_result(kv::OpResponse::Txn(txn::decode_result(
            request_id,
            response.result_as_txn_result().ok_or_else(missing)?,
        )?))),
        proto::OpResult::CompactResult => Ok(kv_result(kv::OpResponse::Compact(
            compact::decode_result(response.result_as_compact_result().ok_or_else(missing)?),
        ))),
        proto::OpResult::StatusResult => Ok(ApiResult::Status(status::decode_result(
            response.result_as_status_result().ok_or_else(missing)?,
        ))),
        proto::OpResult::WatchResult => Ok(ApiResult::Watch(
            watch::decode_result(
                response.result_as_watch_result().ok_or_else(missing)?,
                response.revision(),
            )
            .map_err(ResponseError::Codec)?,
        )),
        proto::OpResult::NONE => Err("status Ok without a result"),
        not_asked_for => Err(unserved::refuse_result(&response, not_asked_for)?),
    };
    // `verify_response` refused unknown status codes, so only Ok has no ErrorCode.
    if let Some(code) = ErrorCode::from_proto(response.status()) {
        let leader = response
            .leader()
            .filter(|hint| hint.node_id() != NO_NODE)
            .map(|hint| LeaderHint {
                node_id: hint.node_id(),
                client_address: hint.client_address().unwrap_or_default().to_string(),
            });
        return Ok(ApiResponse {
            request_id,
            result: Err(ApiError {
                code,
                message: response.message().unwrap_or_default().to_string(),
                leader,
                revision: response.revision(),
            }),
        });
    }
    Ok(ApiResponse {
        request_id,
        result: Ok(result.map_err(invalid)?),
    })
}

// ---------------------------------------------------------------------------------------
// Fields shared by the operations' files
// ---------------------------------------------------------------------------------------

/// Writes byte strings that the schema marks `required`: present even when empty.
fn create_required_bytes<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    bytes: &[u8],
) -> WIPOffset<flatbuffers::Vector<'b, u8>> {
    builder.create_vector(bytes)
}

/// Writes an empty string as an absent field: it reads back as empty all the same.
fn create_string<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    text: &str,
) -> Option<WIPOffset<&'b str>> {
    (!text.is_empty()).then(|| builder.create_string(text))
}

/// Reads an optional byte string; absent is empty.
fn bytes_of(vector: Option<flatbuffers::Vector<'_, u8>>) -> Vec<u8> {
    vector.map_or_else(Vec::new, |vector| vector.bytes().to_vec())
}

/// An enum value this build does not know, in a field where no answer can be given.
fn unknown_enum(field: &'static str, value: impl Into<u64>) -> CodecError {
    CodecError::UnknownEnum {
        field,
        value: value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::samples::{
        finish_request, finish_response, kv_request, put, sample_requests, sample_responses,
        sample_txn,
    };
    use super::*;

    // Every request kind, with every op, compare and flag, decodes to what was encoded.
    #[test]
    fn requests_round_trip() {
        let mut builder = FlatBufferBuilder::new();
        for request in sample_requests() {
            let encoded = encode_request(&mut builder, &request).to_vec();
            assert_eq!(encoded, request_to_bytes(&request));
            assert_eq!(decode_request(&encoded), Ok(request.clone()), "{request:?}");
        }
    }

    // `serializable` on a write is dropped: a write always goes through the log.
    #[test]
    fn serializable_is_kept_only_on_reads() {
        let request = kv_request(1, kv::Op::Put(put("k", "v")), true);
        let decoded = decode_request(&request_to_bytes(&request)).unwrap();
        assert_eq!(decoded, kv_request(1, kv::Op::Put(put("k", "v")), false));
        let request = kv_request(2, kv::Op::Txn(sample_txn()), true);
        let decoded = decode_request(&request_to_bytes(&request)).unwrap();
        assert!(matches!(
            decoded.kind,
            RequestKind::Kv {
                serializable: false,
                ..
            }
        ));
    }

    // A request scoped to one group keeps its group through the encoding, and one without
    // stays unscoped (group 0 is a real group, not "none").
    #[test]
    fn group_scope_round_trips() {
        for group in [None, Some(0), Some(5), Some(u64::MAX)] {
            let mut request = kv_request(9, kv::Op::Put(put("k", "v")), false);
            if let RequestKind::Kv { group: scope, .. } = &mut request.kind {
                *scope = group;
            }
            let decoded = decode_request(&request_to_bytes(&request)).unwrap();
            assert_eq!(decoded, request, "group {group:?}");
        }
    }

    // Every result kind and every error code, with and without a leader hint, decodes to
    // what was encoded.
    #[test]
    fn responses_round_trip() {
        let mut builder = FlatBufferBuilder::new();
        for response in sample_responses() {
            let encoded = encode_response(&mut builder, &response).to_vec();
            assert_eq!(encoded, response_to_bytes(&response));
            assert_eq!(
                decode_response(&encoded),
                Ok(response.clone()),
                "{response:?}"
            );
        }
    }

    // An operation this build does not know is answered UnknownOp under its request id;
    // an unreadable buffer has no id.
    #[test]
    fn unknown_operations_and_unreadable_buffers_are_refused() {
        let mut builder = FlatBufferBuilder::new();
        let status = proto::StatusRequest::create(&mut builder, &proto::StatusRequestArgs {});
        let bytes = finish_request(builder, proto::Op(200), status.as_union_value());
        let error = decode_request(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code, error.message.as_str()),
            (
                Some(77),
                ErrorCode::UnknownOp,
                "request 77: unknown operation 200 in Request.op"
            )
        );

        let error = decode_request(b"certainly not a request").unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (None, ErrorCode::InvalidRequest)
        );
        assert_eq!(error.to_response(), None);
    }

    // A response that verifies but breaks the protocol names its request; one that does
    // not verify, or holds a status code this build does not know, names none.
    #[test]
    fn bad_responses_are_refused() {
        let bytes = finish_response(FlatBufferBuilder::new(), proto::OpResult::NONE, None);
        let error = decode_response(&bytes).unwrap_err();
        assert_eq!(error.request_id(), Some(31));

        let error = decode_response(b"certainly not a response").unwrap_err();
        assert!(matches!(error, ResponseError::Codec(_)), "{error:?}");
        assert_eq!(error.request_id(), None);

        let mut builder = FlatBufferBuilder::new();
        let root = proto::Response::create(
            &mut builder,
            &proto::ResponseArgs {
                request_id: 8,
                status: proto::StatusCode(999),
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        assert_eq!(
            decode_response(builder.finished_data()),
            Err(ResponseError::Codec(CodecError::UnknownEnum {
                field: "Response.status",
                value: 999
            }))
        );
    }

    // A result this build cannot read makes an error response unreadable too, and a
    // result that reads is ignored on an error response.
    #[test]
    fn an_error_response_is_read_with_its_result() {
        let with_result = |result_type, status| {
            let mut builder = FlatBufferBuilder::new();
            let put = proto::PutResult::create(&mut builder, &proto::PutResultArgs::default());
            let root = proto::Response::create(
                &mut builder,
                &proto::ResponseArgs {
                    request_id: 8,
                    status,
                    result_type,
                    result: Some(put.as_union_value()),
                    ..Default::default()
                },
            );
            builder.finish_minimal(root);
            decode_response(builder.finished_data())
        };
        assert_eq!(
            with_result(proto::OpResult::PutResult, proto::StatusCode::NoLeader),
            Ok(ApiResponse {
                request_id: 8,
                result: Err(ApiError::new(ErrorCode::NoLeader, ""))
            })
        );
        assert_eq!(
            with_result(proto::OpResult(99), proto::StatusCode::NoLeader),
            Err(ResponseError::Codec(CodecError::UnknownEnum {
                field: "Response.result",
                value: 99
            }))
        );
    }
}
