//! The client protocol (`schema/client.fbs`) as Rust values: requests and responses mapped
//! to and from the [`kv`] types, the status report, and the one mapping of every
//! server-side error to a [`StatusCode`](proto::StatusCode). The server decodes requests
//! and encodes responses with it; the SDK in [`crate::client`] does the reverse.
//!
//! Every buffer from outside enters through [`decode_request`] or [`decode_response`],
//! which verify it first (`codec::verify_request` / `codec::verify_response`) and then
//! check what the verifier cannot. Bad input is an error value, never a panic.
//!
//! # What the server serves
//!
//! Put, Range, DeleteRange, Append, Txn and Status. Leases and watches are in the schema
//! but not served yet: [`decode_request`] answers them with [`ErrorCode::UnknownOp`], as
//! it does reads at a past revision (`RangeRequest.revision` other than 0) with
//! [`ErrorCode::InvalidRequest`], because the store keeps no history.
//!
//! `serializable` is kept only on read-only commands (a Range, or a Txn of only Ranges):
//! a write always goes through the log, whatever the flag says.
//!
//! # Error mapping
//!
//! | server-side error                        | code             | what the client does                     |
//! |------------------------------------------|------------------|------------------------------------------|
//! | `ClientError::NotLeader`, leader known   | `NotLeader`      | resend to the hinted leader              |
//! | `ClientError::NotLeader`, leader unknown | `NoLeader`       | back off, retry                          |
//! | `ClientError::Dropped`                   | `NoLeader`       | back off, retry (it was not applied)     |
//! | `ClientError::OutcomeUnknown`            | `Timeout`        | retry with the same (client id, seq)     |
//! | `ClientError::Busy`                      | `Overloaded`     | back off, retry                          |
//! | `ClientError::GroupNotFound`             | `Internal`       | report (every node hosts every group)    |
//! | `KvError::EmptyKey`                      | `EmptyKey`       | report                                   |
//! | `KvError::KeyTooLarge`                   | `KeyTooLarge`    | report                                   |
//! | `KvError::ValueTooLarge`                 | `ValueTooLarge`  | report                                   |
//! | `KvError::TooManyTxnOps`                 | `TooManyTxnOps`  | report                                   |
//! | `KvError::InvalidRange`                  | `InvalidRequest` | report                                   |
//! | `KvError::NotReadOnly`                   | `InvalidRequest` | report                                   |
//! | `KvError::CommandTooLarge`               | `RequestTooLarge`| report                                   |
//! | `KvError::ResponseTooLarge`              | `RequestTooLarge`| report                                   |
//! | `SessionError::Stale` / `Expired`        | `SessionExpired` | the outcome of that seq cannot be told   |
//!
//! `Timeout` is the code for "outcome unknown": the write may or may not have been
//! applied, and retrying it with the same (client id, seq) is safe because the group's
//! session answers a duplicate with the first outcome. `Dropped` maps to `NoLeader`
//! rather than `Timeout` because the command is known not to have been applied; the retry
//! is the same either way.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use thiserror::Error;

use crate::codec::{self, create_bytes, create_children, CodecError};
use crate::kv::{self, KvError, SessionError};
use crate::multiraft::{self, GroupId};
use crate::proto;
use crate::raft::{Index, NodeId, Role, Term, NO_NODE};

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

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
    },
    /// The answering node's state and the state of its groups.
    Status,
}

/// Why a request was refused: a [`StatusCode`](proto::StatusCode) other than `Ok`.
///
/// The same list as the schema's enum, so that a client can match it exhaustively; see
/// [`ErrorCode::to_proto`] for the pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// This node does not lead the key's group; the error carries a [`LeaderHint`].
    NotLeader,
    KeyTooLarge,
    ValueTooLarge,
    EmptyKey,
    TooManyTxnOps,
    /// A transaction touched keys of more than one group.
    TxnSpansGroups,
    /// The operation is unknown to the server or not served by it.
    UnknownOp,
    /// The request is malformed in a way no other code names.
    InvalidRequest,
    /// The outcome is unknown: the write may or may not have been applied. Retry with
    /// the same (client id, seq).
    Timeout,
    ShuttingDown,
    LeaseNotFound,
    Compacted,
    /// A bug or an unexpected state in the server.
    Internal,
    FutureRevision,
    /// The request or its response would exceed a size bound.
    RequestTooLarge,
    /// The server sheds load; retry later.
    Overloaded,
    /// The group's session has forgotten this (client id, seq): its outcome cannot be told.
    SessionExpired,
    WatchNotFound,
    /// No leader is known for the group (an election is in progress); retry.
    NoLeader,
}

/// Every error code with its wire value, in the schema's order: the one place the two
/// enums are paired.
const ERROR_CODES: [(ErrorCode, proto::StatusCode); 19] = [
    (ErrorCode::NotLeader, proto::StatusCode::NotLeader),
    (ErrorCode::KeyTooLarge, proto::StatusCode::KeyTooLarge),
    (ErrorCode::ValueTooLarge, proto::StatusCode::ValueTooLarge),
    (ErrorCode::EmptyKey, proto::StatusCode::EmptyKey),
    (ErrorCode::TooManyTxnOps, proto::StatusCode::TooManyTxnOps),
    (ErrorCode::TxnSpansGroups, proto::StatusCode::TxnSpansGroups),
    (ErrorCode::UnknownOp, proto::StatusCode::UnknownOp),
    (ErrorCode::InvalidRequest, proto::StatusCode::InvalidRequest),
    (ErrorCode::Timeout, proto::StatusCode::Timeout),
    (ErrorCode::ShuttingDown, proto::StatusCode::ShuttingDown),
    (ErrorCode::LeaseNotFound, proto::StatusCode::LeaseNotFound),
    (ErrorCode::Compacted, proto::StatusCode::Compacted),
    (ErrorCode::Internal, proto::StatusCode::Internal),
    (ErrorCode::FutureRevision, proto::StatusCode::FutureRevision),
    (
        ErrorCode::RequestTooLarge,
        proto::StatusCode::RequestTooLarge,
    ),
    (ErrorCode::Overloaded, proto::StatusCode::Overloaded),
    (ErrorCode::SessionExpired, proto::StatusCode::SessionExpired),
    (ErrorCode::WatchNotFound, proto::StatusCode::WatchNotFound),
    (ErrorCode::NoLeader, proto::StatusCode::NoLeader),
];

impl ErrorCode {
    /// Every code, in the schema's order.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        ERROR_CODES.iter().map(|&(code, _)| code)
    }

    /// The code's wire value.
    pub fn to_proto(self) -> proto::StatusCode {
        ERROR_CODES
            .iter()
            .find(|&&(code, _)| code == self)
            .map(|&(_, wire)| wire)
            .expect("ERROR_CODES lists every ErrorCode")
    }

    /// The code of a wire value; `None` for `Ok` and for values this build does not know.
    pub fn from_proto(wire: proto::StatusCode) -> Option<ErrorCode> {
        ERROR_CODES
            .iter()
            .find(|&&(_, known)| known == wire)
            .map(|&(code, _)| code)
    }

    /// The code's name as the schema spells it.
    pub fn name(self) -> &'static str {
        self.to_proto()
            .variant_name()
            .expect("every ErrorCode has a schema name")
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
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

/// A refused request: its code, a human-readable message, and where the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Set with [`ErrorCode::NotLeader`] when the answering node knows the leader.
    pub leader: Option<LeaderHint>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            leader: None,
        }
    }

    /// Maps the reply of the shard's groups to a code (see the module's table).
    /// `client_address` turns the leader's node id into its client address, from the
    /// server's member list.
    pub fn from_client_error(
        error: &multiraft::ClientError,
        client_address: impl FnOnce(NodeId) -> Option<String>,
    ) -> ApiError {
        use multiraft::ClientError;
        let message = error.to_string();
        match error {
            ClientError::NotLeader { leader, .. } if *leader != NO_NODE => ApiError {
                code: ErrorCode::NotLeader,
                message,
                leader: Some(LeaderHint {
                    node_id: *leader,
                    client_address: client_address(*leader).unwrap_or_default(),
                }),
            },
            ClientError::NotLeader { .. } | ClientError::Dropped => {
                ApiError::new(ErrorCode::NoLeader, message)
            }
            ClientError::GroupNotFound(_) => ApiError::new(ErrorCode::Internal, message),
            ClientError::Busy(_) => ApiError::new(ErrorCode::Overloaded, message),
            ClientError::OutcomeUnknown => ApiError::new(ErrorCode::Timeout, message),
            ClientError::Kv(error) => ApiError::from(error),
        }
    }
}

impl From<&KvError> for ApiError {
    fn from(error: &KvError) -> ApiError {
        let code = match error {
            KvError::EmptyKey => ErrorCode::EmptyKey,
            KvError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            KvError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            KvError::TooManyTxnOps { .. } => ErrorCode::TooManyTxnOps,
            KvError::InvalidRange | KvError::NotReadOnly => ErrorCode::InvalidRequest,
            KvError::CommandTooLarge { .. } | KvError::ResponseTooLarge { .. } => {
                ErrorCode::RequestTooLarge
            }
            KvError::Session(SessionError::Stale { .. } | SessionError::Expired { .. }) => {
                ErrorCode::SessionExpired
            }
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<KvError> for ApiError {
    fn from(error: KvError) -> ApiError {
        ApiError::from(&error)
    }
}

/// What a successful request answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiResult {
    /// The answer to a key-value command, with the store's revision.
    Kv(kv::Response),
    Status(StatusInfo),
}

/// One server response, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// The `request_id` of the request this answers.
    pub request_id: u64,
    pub result: Result<ApiResult, ApiError>,
}

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
    /// [`NO_NODE`] when no leader is known.
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

/// Why the server cannot serve a request it received.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The request's id when the buffer was valid enough to read it. Without it the
    /// server cannot address an answer and closes the connection instead.
    pub request_id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(request_id: u64, code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            request_id: Some(request_id),
            code,
            message: message.into(),
        }
    }

    /// The response that answers the request, when it can be addressed.
    pub fn to_response(&self) -> Option<ApiResponse> {
        self.request_id.map(|request_id| ApiResponse {
            request_id,
            result: Err(ApiError::new(self.code, self.message.clone())),
        })
    }
}

impl From<CodecError> for RequestError {
    fn from(error: CodecError) -> RequestError {
        match error {
            CodecError::UnknownOp { request_id, .. } => {
                RequestError::new(request_id, ErrorCode::UnknownOp, error.to_string())
            }
            other => RequestError {
                request_id: None,
                code: ErrorCode::InvalidRequest,
                message: other.to_string(),
            },
        }
    }
}

/// Why a response cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// The buffer failed verification; nothing in it can be trusted, not even its id.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The buffer is valid but its content breaks the protocol.
    #[error("response to request {request_id}: {reason}")]
    Invalid {
        request_id: u64,
        reason: &'static str,
    },
}

impl ResponseError {
    /// The id of the request the bad response answers, when it could be read.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ResponseError::Codec(_) => None,
            ResponseError::Invalid { request_id, .. } => Some(*request_id),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests: Rust to FlatBuffers (the SDK)
// ---------------------------------------------------------------------------------------

/// Writes byte strings that the schema marks `required`: present even when empty.
fn create_required_bytes<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    bytes: &[u8],
) -> WIPOffset<flatbuffers::Vector<'b, u8>> {
    builder.create_vector(bytes)
}

fn create_string<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    text: &str,
) -> Option<WIPOffset<&'b str>> {
    (!text.is_empty()).then(|| builder.create_string(text))
}

fn encode_put_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    put: &kv::PutRequest,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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

fn encode_range_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    range: &kv::RangeRequest,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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
            revision: 0,
        },
    )
    .as_union_value()
}

fn encode_delete_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    delete: &kv::DeleteRequest,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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

fn encode_append_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    append: &kv::AppendRequest,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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

fn encode_txn_ops<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    ops: &[kv::TxnOp],
) -> Option<WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<proto::TxnRequestOp<'b>>>>>
{
    create_children(builder, ops, |builder, op| {
        let (op_type, op) = match op {
            kv::TxnOp::Put(put) => (proto::TxnOp::PutRequest, encode_put_request(builder, put)),
            kv::TxnOp::Range(range) => (
                proto::TxnOp::RangeRequest,
                encode_range_request(builder, range),
            ),
            kv::TxnOp::Delete(delete) => (
                proto::TxnOp::DeleteRequest,
                encode_delete_request(builder, delete),
            ),
            kv::TxnOp::Append(append) => (
                proto::TxnOp::AppendRequest,
                encode_append_request(builder, append),
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

fn encode_txn_request<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    txn: &kv::TxnRequest,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
    let compares = create_children(builder, &txn.compares, encode_compare);
    let success = encode_txn_ops(builder, &txn.success);
    let failure = encode_txn_ops(builder, &txn.failure);
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

/// Writes `request` as a whole buffer into `builder` (reset first, so one builder serves
/// many requests) and returns the finished bytes, ready to be framed.
pub fn encode_request<'a>(
    builder: &'a mut FlatBufferBuilder<'_>,
    request: &ApiRequest,
) -> &'a [u8] {
    builder.reset();
    let (client_id, seq, serializable, group, op_type, op) = match &request.kind {
        RequestKind::Kv {
            command,
            serializable,
            group,
        } => {
            let (op_type, op) = match &command.op {
                kv::Op::Put(put) => (proto::Op::PutRequest, encode_put_request(builder, put)),
                kv::Op::Range(range) => (
                    proto::Op::RangeRequest,
                    encode_range_request(builder, range),
                ),
                kv::Op::Delete(delete) => (
                    proto::Op::DeleteRequest,
                    encode_delete_request(builder, delete),
                ),
                kv::Op::Append(append) => (
                    proto::Op::AppendRequest,
                    encode_append_request(builder, append),
                ),
                kv::Op::Txn(txn) => (proto::Op::TxnRequest, encode_txn_request(builder, txn)),
            };
            (
                command.client_id,
                command.seq,
                *serializable,
                *group,
                op_type,
                op,
            )
        }
        RequestKind::Status => {
            let status = proto::StatusRequest::create(builder, &proto::StatusRequestArgs {});
            (
                0,
                0,
                false,
                None,
                proto::Op::StatusRequest,
                status.as_union_value(),
            )
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
        RequestKind::Status => 64,
    }
}

// ---------------------------------------------------------------------------------------
// Requests: FlatBuffers to Rust (the server)
// ---------------------------------------------------------------------------------------

fn bytes_of(vector: Option<flatbuffers::Vector<'_, u8>>) -> Vec<u8> {
    vector.map_or_else(Vec::new, |vector| vector.bytes().to_vec())
}

fn decode_put_request(put: proto::PutRequest<'_>) -> kv::PutRequest {
    kv::PutRequest {
        key: put.key().bytes().to_vec(),
        value: bytes_of(put.value()),
        prev_kv: put.prev_kv(),
        lease: put.lease(),
    }
}

fn decode_range_request(
    request_id: u64,
    range: proto::RangeRequest<'_>,
) -> Result<kv::RangeRequest, RequestError> {
    if range.revision() != 0 {
        return Err(RequestError::new(
            request_id,
            ErrorCode::InvalidRequest,
            "reads at a past revision are not served: the store keeps no history",
        ));
    }
    Ok(kv::RangeRequest {
        key: range.key().bytes().to_vec(),
        range_end: bytes_of(range.range_end()),
        limit: range.limit(),
        keys_only: range.keys_only(),
        count_only: range.count_only(),
    })
}

fn decode_delete_request(delete: proto::DeleteRequest<'_>) -> kv::DeleteRequest {
    kv::DeleteRequest {
        key: delete.key().bytes().to_vec(),
        range_end: bytes_of(delete.range_end()),
        prev_kv: delete.prev_kv(),
    }
}

fn decode_append_request(append: proto::AppendRequest<'_>) -> kv::AppendRequest {
    kv::AppendRequest {
        key: append.key().bytes().to_vec(),
        value: bytes_of(append.value()),
    }
}

/// The verifier checked the union's table; a discriminant whose table is missing is still
/// possible in a hand-made buffer and is refused here.
fn missing_op(request_id: u64) -> RequestError {
    RequestError::new(
        request_id,
        ErrorCode::InvalidRequest,
        "the operation's table is missing",
    )
}

fn decode_compare(
    request_id: u64,
    compare: proto::Compare<'_>,
) -> Result<kv::Compare, RequestError> {
    // The operand the target does not use is ignored, as etcd ignores it.
    let target = match compare.target() {
        proto::CompareTarget::Value => kv::CompareTarget::Value(bytes_of(compare.value())),
        proto::CompareTarget::Version => kv::CompareTarget::Version(compare.number()),
        proto::CompareTarget::CreateRevision => kv::CompareTarget::CreateRevision(compare.number()),
        proto::CompareTarget::ModRevision => kv::CompareTarget::ModRevision(compare.number()),
        other => {
            return Err(RequestError::new(
                request_id,
                ErrorCode::InvalidRequest,
                format!("unknown compare target {}", other.0),
            ))
        }
    };
    let result = match compare.result() {
        proto::CompareResult::Equal => kv::CompareResult::Equal,
        proto::CompareResult::NotEqual => kv::CompareResult::NotEqual,
        proto::CompareResult::Greater => kv::CompareResult::Greater,
        proto::CompareResult::Less => kv::CompareResult::Less,
        other => {
            return Err(RequestError::new(
                request_id,
                ErrorCode::InvalidRequest,
                format!("unknown compare result {}", other.0),
            ))
        }
    };
    Ok(kv::Compare {
        key: compare.key().bytes().to_vec(),
        target,
        result,
    })
}

fn decode_txn_ops(
    request_id: u64,
    ops: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<proto::TxnRequestOp<'_>>>>,
) -> Result<Vec<kv::TxnOp>, RequestError> {
    let Some(ops) = ops else {
        return Ok(Vec::new());
    };
    let mut decoded = Vec::with_capacity(ops.len());
    for op in ops {
        let missing = || missing_op(request_id);
        decoded.push(match op.op_type() {
            proto::TxnOp::PutRequest => kv::TxnOp::Put(decode_put_request(
                op.op_as_put_request().ok_or_else(missing)?,
            )),
            proto::TxnOp::RangeRequest => kv::TxnOp::Range(decode_range_request(
                request_id,
                op.op_as_range_request().ok_or_else(missing)?,
            )?),
            proto::TxnOp::DeleteRequest => kv::TxnOp::Delete(decode_delete_request(
                op.op_as_delete_request().ok_or_else(missing)?,
            )),
            proto::TxnOp::AppendRequest => kv::TxnOp::Append(decode_append_request(
                op.op_as_append_request().ok_or_else(missing)?,
            )),
            other => {
                return Err(RequestError::new(
                    request_id,
                    ErrorCode::UnknownOp,
                    format!("unknown transaction operation {}", other.0),
                ))
            }
        });
    }
    Ok(decoded)
}

fn decode_txn_request(
    request_id: u64,
    txn: proto::TxnRequest<'_>,
) -> Result<kv::TxnRequest, RequestError> {
    let compares = match txn.compares() {
        Some(compares) => compares
            .iter()
            .map(|compare| decode_compare(request_id, compare))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(kv::TxnRequest {
        compares,
        success: decode_txn_ops(request_id, txn.success())?,
        failure: decode_txn_ops(request_id, txn.failure())?,
    })
}

fn not_served(request_id: u64, what: &str) -> RequestError {
    RequestError::new(
        request_id,
        ErrorCode::UnknownOp,
        format!("{what} is not served by this server yet"),
    )
}

/// Verifies and decodes a client request (the server's entry point).
pub fn decode_request(bytes: &[u8]) -> Result<ApiRequest, RequestError> {
    let request = codec::verify_request(bytes)?;
    let request_id = request.request_id();
    let missing = || missing_op(request_id);
    let op = match request.op_type() {
        proto::Op::PutRequest => kv::Op::Put(decode_put_request(
            request.op_as_put_request().ok_or_else(missing)?,
        )),
        proto::Op::RangeRequest => kv::Op::Range(decode_range_request(
            request_id,
            request.op_as_range_request().ok_or_else(missing)?,
        )?),
        proto::Op::DeleteRequest => kv::Op::Delete(decode_delete_request(
            request.op_as_delete_request().ok_or_else(missing)?,
        )),
        proto::Op::AppendRequest => kv::Op::Append(decode_append_request(
            request.op_as_append_request().ok_or_else(missing)?,
        )),
        proto::Op::TxnRequest => kv::Op::Txn(decode_txn_request(
            request_id,
            request.op_as_txn_request().ok_or_else(missing)?,
        )?),
        proto::Op::StatusRequest => {
            return Ok(ApiRequest {
                request_id,
                kind: RequestKind::Status,
            })
        }
        proto::Op::LeaseGrantRequest => return Err(not_served(request_id, "lease grant")),
        proto::Op::LeaseRevokeRequest => return Err(not_served(request_id, "lease revoke")),
        proto::Op::LeaseKeepAliveRequest => return Err(not_served(request_id, "lease keep-alive")),
        proto::Op::LeaseTimeToLiveRequest => {
            return Err(not_served(request_id, "lease time-to-live"))
        }
        proto::Op::WatchCreateRequest | proto::Op::WatchCancelRequest => {
            return Err(not_served(request_id, "watch"))
        }
        other => {
            return Err(RequestError::new(
                request_id,
                ErrorCode::UnknownOp,
                format!("unknown operation {}", other.0),
            ))
        }
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
        },
    })
}

// ---------------------------------------------------------------------------------------
// Responses: Rust to FlatBuffers (the server)
// ---------------------------------------------------------------------------------------

fn encode_key_value<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    key_value: &kv::KeyValue,
) -> WIPOffset<proto::KeyValue<'b>> {
    let key = create_required_bytes(builder, &key_value.key);
    let value = create_bytes(builder, &key_value.value);
    proto::KeyValue::create(
        builder,
        &proto::KeyValueArgs {
            key: Some(key),
            value,
            create_revision: key_value.create_revision,
            mod_revision: key_value.mod_revision,
            version: key_value.version,
            lease: key_value.lease,
        },
    )
}

fn encode_key_values<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    key_values: &[kv::KeyValue],
) -> Option<WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<proto::KeyValue<'b>>>>> {
    create_children(builder, key_values, encode_key_value)
}

fn encode_put_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    put: &kv::PutResponse,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
    let prev_kv = put
        .prev_kv
        .as_ref()
        .map(|key_value| encode_key_value(builder, key_value));
    proto::PutResult::create(builder, &proto::PutResultArgs { prev_kv }).as_union_value()
}

fn encode_range_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    range: &kv::RangeResponse,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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

fn encode_delete_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    delete: &kv::DeleteResponse,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
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

fn encode_append_result(
    builder: &mut FlatBufferBuilder<'_>,
    append: &kv::AppendResponse,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
    proto::AppendResult::create(
        builder,
        &proto::AppendResultArgs {
            value_bytes: append.value_bytes,
        },
    )
    .as_union_value()
}

fn encode_txn_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    txn: &kv::TxnResponse,
) -> WIPOffset<flatbuffers::UnionWIPOffset> {
    let responses = create_children(builder, &txn.responses, |builder, response| {
        let (result_type, result) = match response {
            kv::TxnOpResponse::Put(put) => (
                proto::TxnOpResult::PutResult,
                encode_put_result(builder, put),
            ),
            kv::TxnOpResponse::Range(range) => (
                proto::TxnOpResult::RangeResult,
                encode_range_result(builder, range),
            ),
            kv::TxnOpResponse::Delete(delete) => (
                proto::TxnOpResult::DeleteResult,
                encode_delete_result(builder, delete),
            ),
            kv::TxnOpResponse::Append(append) => (
                proto::TxnOpResult::AppendResult,
                encode_append_result(builder, append),
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

fn encode_status_result<'b>(
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
                            (proto::OpResult::PutResult, encode_put_result(builder, put))
                        }
                        kv::OpResponse::Range(range) => (
                            proto::OpResult::RangeResult,
                            encode_range_result(builder, range),
                        ),
                        kv::OpResponse::Delete(delete) => (
                            proto::OpResult::DeleteResult,
                            encode_delete_result(builder, delete),
                        ),
                        kv::OpResponse::Append(append) => (
                            proto::OpResult::AppendResult,
                            encode_append_result(builder, append),
                        ),
                        kv::OpResponse::Txn(txn) => {
                            (proto::OpResult::TxnResult, encode_txn_result(builder, txn))
                        }
                    };
                    (kv_response.revision, result_type, result)
                }
                ApiResult::Status(status) => (
                    0,
                    proto::OpResult::StatusResult,
                    encode_status_result(builder, status),
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
                    revision: 0,
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

// ---------------------------------------------------------------------------------------
// Responses: FlatBuffers to Rust (the SDK)
// ---------------------------------------------------------------------------------------

fn decode_key_value(key_value: proto::KeyValue<'_>) -> kv::KeyValue {
    kv::KeyValue {
        key: key_value.key().bytes().to_vec(),
        value: bytes_of(key_value.value()),
        create_revision: key_value.create_revision(),
        mod_revision: key_value.mod_revision(),
        version: key_value.version(),
        lease: key_value.lease(),
    }
}

fn decode_key_values(
    key_values: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<proto::KeyValue<'_>>>>,
) -> Vec<kv::KeyValue> {
    key_values.map_or_else(Vec::new, |key_values| {
        key_values.iter().map(decode_key_value).collect()
    })
}

fn decode_put_result(put: proto::PutResult<'_>) -> kv::PutResponse {
    kv::PutResponse {
        prev_kv: put.prev_kv().map(decode_key_value),
    }
}

fn decode_range_result(range: proto::RangeResult<'_>) -> kv::RangeResponse {
    kv::RangeResponse {
        kvs: decode_key_values(range.kvs()),
        count: range.count(),
        more: range.more(),
    }
}

fn decode_delete_result(delete: proto::DeleteResult<'_>) -> kv::DeleteResponse {
    kv::DeleteResponse {
        deleted: delete.deleted(),
        prev_kvs: decode_key_values(delete.prev_kvs()),
    }
}

fn decode_append_result(append: proto::AppendResult<'_>) -> kv::AppendResponse {
    kv::AppendResponse {
        value_bytes: append.value_bytes(),
    }
}

fn decode_txn_result(
    request_id: u64,
    txn: proto::TxnResult<'_>,
) -> Result<kv::TxnResponse, ResponseError> {
    let invalid = |reason| ResponseError::Invalid { request_id, reason };
    let mut responses = Vec::new();
    for response in txn.responses().iter().flatten() {
        let missing = || invalid("a transaction result's table is missing");
        responses.push(match response.result_type() {
            proto::TxnOpResult::PutResult => kv::TxnOpResponse::Put(decode_put_result(
                response.result_as_put_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::RangeResult => kv::TxnOpResponse::Range(decode_range_result(
                response.result_as_range_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::DeleteResult => kv::TxnOpResponse::Delete(decode_delete_result(
                response.result_as_delete_result().ok_or_else(missing)?,
            )),
            proto::TxnOpResult::AppendResult => kv::TxnOpResponse::Append(decode_append_result(
                response.result_as_append_result().ok_or_else(missing)?,
            )),
            _ => return Err(invalid("unknown transaction result")),
        });
    }
    Ok(kv::TxnResponse {
        succeeded: txn.succeeded(),
        responses,
    })
}

fn decode_status_result(status: proto::StatusResult<'_>) -> StatusInfo {
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

/// Verifies and decodes a server response (the SDK's entry point). The caller checks
/// that the result's kind is the one it asked for: the response does not name its
/// request's operation.
pub fn decode_response(bytes: &[u8]) -> Result<ApiResponse, ResponseError> {
    let response = codec::verify_response(bytes)?;
    let request_id = response.request_id();
    let invalid = |reason| ResponseError::Invalid { request_id, reason };
    if response.status() != proto::StatusCode::Ok {
        let code = ErrorCode::from_proto(response.status())
            .ok_or_else(|| invalid("unknown status code"))?;
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
            }),
        });
    }
    let missing = || invalid("the result's table is missing");
    let kv_response = |op| {
        ApiResult::Kv(kv::Response {
            revision: response.revision(),
            op,
        })
    };
    let result = match response.result_type() {
        proto::OpResult::PutResult => kv_response(kv::OpResponse::Put(decode_put_result(
            response.result_as_put_result().ok_or_else(missing)?,
        ))),
        proto::OpResult::RangeResult => kv_response(kv::OpResponse::Range(decode_range_result(
            response.result_as_range_result().ok_or_else(missing)?,
        ))),
        proto::OpResult::DeleteResult => kv_response(kv::OpResponse::Delete(decode_delete_result(
            response.result_as_delete_result().ok_or_else(missing)?,
        ))),
        proto::OpResult::AppendResult => kv_response(kv::OpResponse::Append(decode_append_result(
            response.result_as_append_result().ok_or_else(missing)?,
        ))),
        proto::OpResult::TxnResult => kv_response(kv::OpResponse::Txn(decode_txn_result(
            request_id,
            response.result_as_txn_result().ok_or_else(missing)?,
        )?)),
        proto::OpResult::StatusResult => ApiResult::Status(decode_status_result(
            response.result_as_status_result().ok_or_else(missing)?,
        )),
        proto::OpResult::NONE => return Err(invalid("status Ok without a result")),
        _ => {
            return Err(invalid(
                "a lease or watch result, which this client never asks for",
            ))
        }
    };
    Ok(ApiResponse {
        request_id,
        result: Ok(result),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    fn key_value(key: &str, value: &str, revision: u64) -> kv::KeyValue {
        kv::KeyValue {
            key: bytes(key),
            value: bytes(value),
            create_revision: revision,
            mod_revision: revision + 1,
            version: 2,
            lease: 0,
        }
    }

    fn put(key: &str, value: &str) -> kv::PutRequest {
        kv::PutRequest {
            key: bytes(key),
            value: bytes(value),
            prev_kv: false,
            lease: 0,
        }
    }

    fn kv_request(request_id: u64, op: kv::Op, serializable: bool) -> ApiRequest {
        ApiRequest {
            request_id,
            kind: RequestKind::Kv {
                command: kv::Command {
                    client_id: 0xfeed_0000_0000_0001,
                    seq: request_id + 1,
                    op,
                },
                serializable,
                group: None,
            },
        }
    }

    /// A transaction with every compare target, every compare result and every op kind.
    fn sample_txn() -> kv::TxnRequest {
        kv::TxnRequest {
            compares: vec![
                kv::Compare {
                    key: bytes("a"),
                    target: kv::CompareTarget::Value(bytes("x")),
                    result: kv::CompareResult::Equal,
                },
                kv::Compare {
                    key: bytes("a"),
                    target: kv::CompareTarget::Value(Vec::new()),
                    result: kv::CompareResult::NotEqual,
                },
                kv::Compare {
                    key: bytes("b"),
                    target: kv::CompareTarget::Version(3),
                    result: kv::CompareResult::Greater,
                },
                kv::Compare {
                    key: bytes("c"),
                    target: kv::CompareTarget::CreateRevision(u64::MAX),
                    result: kv::CompareResult::Less,
                },
                kv::Compare {
                    key: bytes("d"),
                    target: kv::CompareTarget::ModRevision(0),
                    result: kv::CompareResult::Equal,
                },
            ],
            success: vec![
                kv::TxnOp::Put(kv::PutRequest {
                    prev_kv: true,
                    lease: 9,
                    ..put("a", "y")
                }),
                kv::TxnOp::Range(kv::RangeRequest::prefix(b"a")),
                kv::TxnOp::Delete(kv::DeleteRequest {
                    key: bytes("b"),
                    range_end: Vec::new(),
                    prev_kv: true,
                }),
                kv::TxnOp::Append(kv::AppendRequest {
                    key: bytes("c"),
                    value: bytes("tail"),
                }),
            ],
            failure: vec![kv::TxnOp::Range(kv::RangeRequest::get(b"a"))],
        }
    }

    /// One request of every kind the server serves, with the flags each can carry.
    fn sample_requests() -> Vec<ApiRequest> {
        vec![
            kv_request(1, kv::Op::Put(put("k", "v")), false),
            kv_request(
                2,
                kv::Op::Put(kv::PutRequest {
                    key: bytes("k"),
                    value: Vec::new(),
                    prev_kv: true,
                    lease: 42,
                }),
                false,
            ),
            kv_request(3, kv::Op::Range(kv::RangeRequest::get(b"k")), false),
            kv_request(4, kv::Op::Range(kv::RangeRequest::get(b"k")), true),
            kv_request(
                5,
                kv::Op::Range(kv::RangeRequest {
                    limit: 10,
                    keys_only: true,
                    ..kv::RangeRequest::prefix(b"dir/")
                }),
                false,
            ),
            kv_request(
                6,
                kv::Op::Range(kv::RangeRequest {
                    key: bytes("a"),
                    range_end: kv::RANGE_END_UNBOUNDED.to_vec(),
                    limit: 0,
                    keys_only: false,
                    count_only: true,
                }),
                true,
            ),
            kv_request(
                7,
                kv::Op::Delete(kv::DeleteRequest {
                    key: bytes("k"),
                    range_end: Vec::new(),
                    prev_kv: false,
                }),
                false,
            ),
            kv_request(
                8,
                kv::Op::Delete(kv::DeleteRequest {
                    key: bytes("a"),
                    range_end: bytes("b"),
                    prev_kv: true,
                }),
                false,
            ),
            kv_request(
                9,
                kv::Op::Append(kv::AppendRequest {
                    key: bytes("log"),
                    value: vec![0, 0xff, 7],
                }),
                false,
            ),
            kv_request(10, kv::Op::Txn(sample_txn()), false),
            kv_request(
                11,
                kv::Op::Txn(kv::TxnRequest {
                    compares: Vec::new(),
                    success: vec![kv::TxnOp::Range(kv::RangeRequest::get(b"a"))],
                    failure: Vec::new(),
                }),
                true,
            ),
            kv_request(12, kv::Op::Txn(kv::TxnRequest::default()), false),
            // An empty key travels as is; refusing it is the store's job (EmptyKey).
            kv_request(13, kv::Op::Put(put("", "v")), false),
            ApiRequest {
                request_id: u64::MAX,
                kind: RequestKind::Status,
            },
        ]
    }

    fn sample_status() -> StatusInfo {
        StatusInfo {
            node_id: 2,
            cluster_id: 0xc1c1,
            shards: 4,
            group_count: 64,
            groups: vec![
                GroupStatus {
                    group_id: 0,
                    role: Some(Role::Leader),
                    leader: 2,
                    term: 5,
                    commit: 100,
                    applied: 99,
                    first_index: 10,
                    last_index: 101,
                    voters: vec![1, 2, 3],
                },
                GroupStatus {
                    group_id: 1,
                    role: Some(Role::Follower),
                    leader: 3,
                    ..GroupStatus::default()
                },
                GroupStatus {
                    group_id: 2,
                    role: Some(Role::PreCandidate),
                    ..GroupStatus::default()
                },
                GroupStatus {
                    group_id: 3,
                    role: Some(Role::Candidate),
                    ..GroupStatus::default()
                },
                GroupStatus {
                    group_id: 4,
                    role: None,
                    ..GroupStatus::default()
                },
            ],
            members: vec![
                Member {
                    node_id: 1,
                    client_address: "10.0.0.1:7379".to_string(),
                    peer_address: "10.0.0.1:7380".to_string(),
                },
                Member {
                    node_id: 2,
                    client_address: String::new(),
                    peer_address: String::new(),
                },
            ],
        }
    }

    fn kv_ok(request_id: u64, revision: u64, op: kv::OpResponse) -> ApiResponse {
        ApiResponse {
            request_id,
            result: Ok(ApiResult::Kv(kv::Response { revision, op })),
        }
    }

    /// One response of every result kind, and one error of every code.
    fn sample_responses() -> Vec<ApiResponse> {
        let mut responses = vec![
            kv_ok(1, 5, kv::OpResponse::Put(kv::PutResponse { prev_kv: None })),
            kv_ok(
                2,
                6,
                kv::OpResponse::Put(kv::PutResponse {
                    prev_kv: Some(key_value("k", "old", 3)),
                }),
            ),
            kv_ok(
                3,
                7,
                kv::OpResponse::Range(kv::RangeResponse {
                    kvs: vec![key_value("a", "1", 1), key_value("b", "", 2)],
                    count: 5,
                    more: true,
                }),
            ),
            kv_ok(4, 7, kv::OpResponse::Range(kv::RangeResponse::default())),
            kv_ok(
                5,
                8,
                kv::OpResponse::Delete(kv::DeleteResponse {
                    deleted: 2,
                    prev_kvs: vec![key_value("a", "1", 1), key_value("b", "2", 2)],
                }),
            ),
            kv_ok(
                6,
                9,
                kv::OpResponse::Append(kv::AppendResponse { value_bytes: 17 }),
            ),
            kv_ok(
                7,
                10,
                kv::OpResponse::Txn(kv::TxnResponse {
                    succeeded: true,
                    responses: vec![
                        kv::TxnOpResponse::Put(kv::PutResponse {
                            prev_kv: Some(key_value("a", "x", 4)),
                        }),
                        kv::TxnOpResponse::Range(kv::RangeResponse {
                            kvs: vec![key_value("a", "y", 4)],
                            count: 1,
                            more: false,
                        }),
                        kv::TxnOpResponse::Delete(kv::DeleteResponse {
                            deleted: 1,
                            prev_kvs: Vec::new(),
                        }),
                        kv::TxnOpResponse::Append(kv::AppendResponse { value_bytes: 4 }),
                    ],
                }),
            ),
            kv_ok(8, 10, kv::OpResponse::Txn(kv::TxnResponse::default())),
            ApiResponse {
                request_id: 9,
                result: Ok(ApiResult::Status(sample_status())),
            },
            ApiResponse {
                request_id: 10,
                result: Ok(ApiResult::Status(StatusInfo::default())),
            },
        ];
        for (offset, code) in ErrorCode::all().enumerate() {
            responses.push(ApiResponse {
                request_id: 100 + offset as u64,
                result: Err(ApiError::new(code, format!("because {code}"))),
            });
        }
        responses.push(ApiResponse {
            request_id: 200,
            result: Err(ApiError {
                code: ErrorCode::NotLeader,
                message: "not the leader".to_string(),
                leader: Some(LeaderHint {
                    node_id: 3,
                    client_address: "10.0.0.3:7379".to_string(),
                }),
            }),
        });
        responses.push(ApiResponse {
            request_id: 201,
            result: Err(ApiError {
                code: ErrorCode::NotLeader,
                message: String::new(),
                leader: Some(LeaderHint {
                    node_id: 3,
                    client_address: String::new(),
                }),
            }),
        });
        responses
    }

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

    // The pairing of error codes with wire values is one-to-one, leaves out Ok, and uses
    // the schema's names.
    #[test]
    fn error_codes_pair_with_wire_values() {
        let codes: Vec<ErrorCode> = ErrorCode::all().collect();
        assert_eq!(codes.len(), ERROR_CODES.len());
        for (position, code) in codes.iter().enumerate() {
            assert_eq!(ErrorCode::from_proto(code.to_proto()), Some(*code));
            assert!(!codes[..position].contains(code), "{code} listed twice");
            assert_eq!(format!("{code:?}"), code.name());
        }
        assert_eq!(ErrorCode::from_proto(proto::StatusCode::Ok), None);
        assert_eq!(ErrorCode::from_proto(proto::StatusCode(999)), None);
        // The schema has exactly one code more than ErrorCode: Ok.
        assert_eq!(
            proto::StatusCode::ENUM_VALUES.len(),
            ERROR_CODES.len() + 1,
            "a new StatusCode needs an ErrorCode"
        );
    }

    // Each error of the groups maps to the code in the module's table; a known leader
    // becomes a hint with its client address.
    #[test]
    fn client_errors_map_to_codes() {
        use multiraft::ClientError;
        let address = |node: NodeId| (node == 3).then(|| "10.0.0.3:7379".to_string());
        let error = ApiError::from_client_error(
            &ClientError::NotLeader {
                group: 5,
                leader: 3,
            },
            address,
        );
        assert_eq!(error.code, ErrorCode::NotLeader);
        assert_eq!(
            error.leader,
            Some(LeaderHint {
                node_id: 3,
                client_address: "10.0.0.3:7379".to_string()
            })
        );
        let error = ApiError::from_client_error(
            &ClientError::NotLeader {
                group: 5,
                leader: 4,
            },
            address,
        );
        assert_eq!(
            error.leader,
            Some(LeaderHint {
                node_id: 4,
                client_address: String::new()
            })
        );
        let cases = [
            (
                ClientError::NotLeader {
                    group: 5,
                    leader: NO_NODE,
                },
                ErrorCode::NoLeader,
            ),
            (ClientError::Dropped, ErrorCode::NoLeader),
            (ClientError::OutcomeUnknown, ErrorCode::Timeout),
            (ClientError::Busy("full"), ErrorCode::Overloaded),
            (ClientError::GroupNotFound(9), ErrorCode::Internal),
            (ClientError::Kv(KvError::EmptyKey), ErrorCode::EmptyKey),
        ];
        for (error, code) in cases {
            let mapped = ApiError::from_client_error(&error, address);
            assert_eq!(mapped.code, code, "{error:?}");
            assert_eq!(mapped.leader, None, "{error:?}");
            assert_eq!(mapped.message, error.to_string());
        }
    }

    // Each refusal of the store maps to the code in the module's table.
    #[test]
    fn kv_errors_map_to_codes() {
        let cases = [
            (KvError::EmptyKey, ErrorCode::EmptyKey),
            (
                KvError::KeyTooLarge {
                    key_bytes: 5,
                    key_bytes_max: 4,
                },
                ErrorCode::KeyTooLarge,
            ),
            (
                KvError::ValueTooLarge {
                    value_bytes: 5,
                    value_bytes_max: 4,
                },
                ErrorCode::ValueTooLarge,
            ),
            (
                KvError::TooManyTxnOps {
                    ops: 200,
                    txn_ops_max: 128,
                },
                ErrorCode::TooManyTxnOps,
            ),
            (KvError::InvalidRange, ErrorCode::InvalidRequest),
            (KvError::NotReadOnly, ErrorCode::InvalidRequest),
            (
                KvError::CommandTooLarge {
                    command_bytes: 9,
                    command_bytes_max: 8,
                },
                ErrorCode::RequestTooLarge,
            ),
            (
                KvError::ResponseTooLarge {
                    response_bytes_max: 8,
                },
                ErrorCode::RequestTooLarge,
            ),
            (
                KvError::Session(SessionError::Stale {
                    client_id: 1,
                    seq: 1,
                    last_seq: 2,
                }),
                ErrorCode::SessionExpired,
            ),
            (
                KvError::Session(SessionError::Expired {
                    client_id: 1,
                    seq: 2,
                }),
                ErrorCode::SessionExpired,
            ),
        ];
        for (error, code) in cases {
            let mapped = ApiError::from(&error);
            assert_eq!(mapped.code, code, "{error:?}");
            assert_eq!(mapped.message, error.to_string());
        }
    }

    fn finish_request(
        mut builder: FlatBufferBuilder<'static>,
        op_type: proto::Op,
        op: WIPOffset<flatbuffers::UnionWIPOffset>,
    ) -> Vec<u8> {
        let root = proto::Request::create(
            &mut builder,
            &proto::RequestArgs {
                request_id: 77,
                op_type,
                op: Some(op),
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        builder.finished_data().to_vec()
    }

    // Leases, watches and unknown operations are answered UnknownOp under their request
    // id; a read at a past revision is InvalidRequest; an unreadable buffer has no id.
    #[test]
    fn unserved_and_invalid_requests_are_refused() {
        let mut builder = FlatBufferBuilder::new();
        let lease = proto::LeaseGrantRequest::create(
            &mut builder,
            &proto::LeaseGrantRequestArgs::default(),
        );
        let bytes = finish_request(
            builder,
            proto::Op::LeaseGrantRequest,
            lease.as_union_value(),
        );
        let error = decode_request(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (Some(77), ErrorCode::UnknownOp)
        );
        assert_eq!(
            error.to_response().unwrap().result,
            Err(ApiError::new(ErrorCode::UnknownOp, error.message.clone()))
        );

        let mut builder = FlatBufferBuilder::new();
        let key = builder.create_vector(b"k");
        let watch = proto::WatchCreateRequest::create(
            &mut builder,
            &proto::WatchCreateRequestArgs {
                key: Some(key),
                ..Default::default()
            },
        );
        let bytes = finish_request(
            builder,
            proto::Op::WatchCreateRequest,
            watch.as_union_value(),
        );
        assert_eq!(
            decode_request(&bytes).unwrap_err().code,
            ErrorCode::UnknownOp
        );

        let mut builder = FlatBufferBuilder::new();
        let status = proto::StatusRequest::create(&mut builder, &proto::StatusRequestArgs {});
        let bytes = finish_request(builder, proto::Op(200), status.as_union_value());
        let error = decode_request(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (Some(77), ErrorCode::UnknownOp)
        );

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
        let error = decode_request(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (Some(77), ErrorCode::InvalidRequest)
        );

        let error = decode_request(b"certainly not a request").unwrap_err();
        assert_eq!(
            (error.request_id, error.code),
            (None, ErrorCode::InvalidRequest)
        );
        assert_eq!(error.to_response(), None);
    }

    fn finish_response(
        mut builder: FlatBufferBuilder<'static>,
        result_type: proto::OpResult,
        result: Option<WIPOffset<flatbuffers::UnionWIPOffset>>,
    ) -> Vec<u8> {
        let root = proto::Response::create(
            &mut builder,
            &proto::ResponseArgs {
                request_id: 31,
                result_type,
                result,
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        builder.finished_data().to_vec()
    }

    // A response that verifies but breaks the protocol names its request; one that does
    // not verify names none; a role from a newer build reads as unknown.
    #[test]
    fn bad_responses_are_refused() {
        let bytes = finish_response(FlatBufferBuilder::new(), proto::OpResult::NONE, None);
        let error = decode_response(&bytes).unwrap_err();
        assert_eq!(error.request_id(), Some(31));

        let mut builder = FlatBufferBuilder::new();
        let lease =
            proto::LeaseGrantResult::create(&mut builder, &proto::LeaseGrantResultArgs::default());
        let bytes = finish_response(
            builder,
            proto::OpResult::LeaseGrantResult,
            Some(lease.as_union_value()),
        );
        assert_eq!(decode_response(&bytes).unwrap_err().request_id(), Some(31));

        let error = decode_response(b"certainly not a response").unwrap_err();
        assert!(matches!(error, ResponseError::Codec(_)), "{error:?}");
        assert_eq!(error.request_id(), None);

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
