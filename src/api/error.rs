//! Why a request fails: [`ErrorCode`] and its one pairing with the schema's
//! [`StatusCode`](proto::StatusCode), [`ApiError`] (a refusal the server sends) with the
//! one mapping of every server-side error to a code, and the errors of reading a buffer
//! from the other side: [`RequestError`] (the server's) and [`ResponseError`] (the SDK's).
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
//! | `ClientError::ReadTimeout`               | `Timeout`        | retry (a read applies nothing)           |
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
//! | `KvError::Compacted`                     | `Compacted`      | read at `revision` (the oldest kept) on  |
//! | `KvError::FutureRevision`                | `FutureRevision` | report, or retry once time has passed it |
//! | `LeaseError::NotFound`                   | `LeaseNotFound`  | report (grant a new lease)               |
//! | other `LeaseError`s                      | `InvalidRequest` | report                                   |
//!
//! `Timeout` is the code for "outcome unknown": the write may or may not have been
//! applied, and retrying it with the same (client id, seq) is safe because the group's
//! session answers a duplicate with the first outcome. `Dropped` maps to `NoLeader`
//! rather than `Timeout` because the command is known not to have been applied; the retry
//! is the same either way.

use thiserror::Error;

use super::{ApiResponse, LeaderHint};
use crate::codec::CodecError;
use crate::kv::{KvError, LeaseError, SessionError};
use crate::multiraft;
use crate::proto;
use crate::raft::{NodeId, NO_NODE};

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
    /// Between shards: a snapshot read must be taken at the error's `revision` or later.
    StaleRevision,
}

/// Every error code with its wire value, in the schema's order: the one place the two
/// enums are paired.
const ERROR_CODES: [(ErrorCode, proto::StatusCode); 20] = [
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
    (ErrorCode::StaleRevision, proto::StatusCode::StaleRevision),
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

/// A refused request: its code, a human-readable message, and where the leader is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Set with [`ErrorCode::NotLeader`] when the answering node knows the leader.
    pub leader: Option<LeaderHint>,
    /// With [`ErrorCode::Compacted`]: the oldest revision still available (0 otherwise).
    pub revision: u64,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            leader: None,
            revision: 0,
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
                revision: 0,
            },
            ClientError::NotLeader { .. } | ClientError::Dropped => {
                ApiError::new(ErrorCode::NoLeader, message)
            }
            ClientError::GroupNotFound(_) => ApiError::new(ErrorCode::Internal, message),
            ClientError::Busy(_) => ApiError::new(ErrorCode::Overloaded, message),
            ClientError::OutcomeUnknown | ClientError::ReadTimeout { .. } => {
                ApiError::new(ErrorCode::Timeout, message)
            }
            // The shard core retries a snapshot read itself; a client never sees this.
            ClientError::RevisionBehind { needed, .. } => {
                let mut refused = ApiError::new(ErrorCode::StaleRevision, message);
                refused.revision = *needed;
                refused
            }
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
            KvError::InvalidRange | KvError::NotReadOnly | KvError::RevisionInTxn => {
                ErrorCode::InvalidRequest
            }
            KvError::CommandTooLarge { .. } | KvError::ResponseTooLarge { .. } => {
                ErrorCode::RequestTooLarge
            }
            KvError::Session(SessionError::Stale { .. } | SessionError::Expired { .. }) => {
                ErrorCode::SessionExpired
            }
            KvError::Compacted {
                compact_revision, ..
            } => {
                let mut refused = ApiError::new(ErrorCode::Compacted, error.to_string());
                refused.revision = *compact_revision;
                return refused;
            }
            KvError::FutureRevision { .. } => ErrorCode::FutureRevision,
            KvError::Lease(LeaseError::NotFound(_)) => ErrorCode::LeaseNotFound,
            KvError::Lease(_) => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<KvError> for ApiError {
    fn from(error: KvError) -> ApiError {
        ApiError::from(&error)
    }
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
    pub(super) fn new(
        request_id: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> RequestError {
        RequestError {
            request_id: Some(request_id),
            code,
            message: message.into(),
        }
    }

    /// An operation this build does not know, in the union `field` (`Request.op`, or
    /// `TxnRequestOp.op` inside a transaction). It names the request, so the server
    /// answers `UnknownOp` instead of closing the connection.
    pub(super) fn unknown_op(request_id: u64, field: &str, op_type: u8) -> RequestError {
        RequestError::new(
            request_id,
            ErrorCode::UnknownOp,
            format!("request {request_id}: unknown operation {op_type} in {field}"),
        )
    }

    /// The table of the union member that the discriminant names is missing. The
    /// verifier refuses such a buffer already, but the generated accessor still answers
    /// an `Option`, and this is its `None`.
    pub(super) fn missing_op(request_id: u64) -> RequestError {
        RequestError::new(
            request_id,
            ErrorCode::InvalidRequest,
            "the operation's table is missing",
        )
    }

    /// The response that answers the request, when it can be addressed.
    pub fn to_response(&self) -> Option<ApiResponse> {
        self.request_id.map(|request_id| ApiResponse {
            request_id,
            result: Err(ApiError::new(self.code, self.message.clone())),
        })
    }
}

/// A buffer that cannot be trusted at all (it failed verification, or holds an enum
/// value this build does not know where no answer can be given): not even its request
/// id is used, and the server closes the connection.
impl From<CodecError> for RequestError {
    fn from(error: CodecError) -> RequestError {
        RequestError {
            request_id: None,
            code: ErrorCode::InvalidRequest,
            message: error.to_string(),
        }
    }
}

/// Why a response cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// The buffer failed verification or holds an enum value this build does not know;
    /// nothing in it can be trusted, not even its id.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
