//! Operations this build does not know at all: a request for one is answered
//! `UnknownOp`, and a result of a kind this build cannot read makes the response
//! unreadable. Every op in the schema is served; a new op added to the schema before it
//! is served gets its refusal here, and serving it moves it into a file of its own, with
//! arms in the dispatch of `mod.rs`.

use super::{unknown_enum, RequestError};
use crate::codec::CodecError;
use crate::proto;

/// The answer to a request for an operation `decode_request` does not serve.
pub(super) fn refuse_request(request_id: u64, op_type: proto::Op) -> RequestError {
    // `NONE` included: the verifier lets an explicit NONE discriminant through.
    RequestError::unknown_op(request_id, "Request.op", op_type.0)
}

/// Why a result that `decode_response` does not read is refused: a result kind this
/// build does not know makes the whole buffer unreadable.
pub(super) fn refuse_result(
    _response: &proto::Response<'_>,
    result_type: proto::OpResult,
) -> Result<&'static str, CodecError> {
    Err(unknown_enum("Response.result", result_type.0))
}

#[cfg(test)]
mod tests {
    use super::super::samples::watch_response_bytes;
    use super::super::{decode_response, ResponseError};
    use super::*;

    // A watch event of an unknown kind makes the response unreadable.
    #[test]
    fn unknown_watch_event_kinds_are_refused() {
        let bytes = watch_response_bytes(proto::StatusCode::Ok, proto::EventKind(2));
        assert_eq!(
            decode_response(&bytes),
            Err(ResponseError::Codec(CodecError::UnknownEnum {
                field: "Event.kind",
                value: 2
            }))
        );
    }
}
