//! What the schema has and the server does not serve yet, watches, and operations this
//! build does not know at all: a request for any of them is answered
//! `UnknownOp`, and the SDK, which never asks for one, refuses their results. Serving
//! one moves it out of here into a file of its own, with arms in the dispatch of
//! `mod.rs`.

use super::{unknown_enum, ErrorCode, RequestError};
use crate::codec::CodecError;
use crate::proto;

/// The answer to a request for an operation `decode_request` does not serve.
pub(super) fn refuse_request(request_id: u64, op_type: proto::Op) -> RequestError {
    let what = match op_type {
        proto::Op::WatchCreateRequest | proto::Op::WatchCancelRequest => "watch",
        // `NONE` included: the verifier lets an explicit NONE discriminant through.
        unknown => return RequestError::unknown_op(request_id, "Request.op", unknown.0),
    };
    RequestError::new(
        request_id,
        ErrorCode::UnknownOp,
        format!("{what} is not served by this server yet"),
    )
}

/// Why a result that `decode_response` does not read is refused when it comes with
/// status Ok. A result kind this build does not know, or a watch event of an unknown
/// kind, makes the whole buffer unreadable instead.
pub(super) fn refuse_result(
    response: &proto::Response<'_>,
    result_type: proto::OpResult,
) -> Result<&'static str, CodecError> {
    match result_type {
        proto::OpResult::WatchResult => {
            let events = response.result_as_watch_result().and_then(|w| w.events());
            for event in events.iter().flatten() {
                if event.kind().variant_name().is_none() {
                    return Err(unknown_enum("Event.kind", event.kind().0));
                }
            }
        }
        unknown => return Err(unknown_enum("Response.result", unknown.0)),
    }
    Ok("a watch result, which this client never asks for")
}

#[cfg(test)]
mod tests {
    use flatbuffers::FlatBufferBuilder;

    use super::super::samples::{finish_request, watch_response_bytes};
    use super::super::{decode_request, decode_response, ApiError, ResponseError};
    use super::*;

    // Watches are answered UnknownOp under their request id, saying what is not served.
    #[test]
    fn watches_are_refused() {
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
        let error = decode_request(&bytes).unwrap_err();
        assert_eq!(
            (error.request_id, error.code, error.message.as_str()),
            (
                Some(77),
                ErrorCode::UnknownOp,
                "watch is not served by this server yet"
            )
        );
        assert_eq!(
            error.to_response().unwrap().result,
            Err(ApiError::new(ErrorCode::UnknownOp, error.message.clone()))
        );
    }

    // A watch result with status Ok names its request; a watch event of an unknown kind
    // makes the response unreadable.
    #[test]
    fn watch_results_are_refused() {
        let bytes = watch_response_bytes(proto::StatusCode::Ok, proto::EventKind::Put);
        assert_eq!(decode_response(&bytes).unwrap_err().request_id(), Some(8));
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
