//! The FlatBuffers verifier over client buffers, with corekv's bounds
//! ([`codec::VERIFIER_OPTIONS`], the frame maximum): run once per buffer, before
//! anything reads it.
//!
//! After it, every generated accessor is safe to call. What the verifier cannot check is
//! checked once, by the code that reads the field: the response's status code here (the
//! envelope's one enum, needed before anything else is read), an operation or result
//! this build does not know by the dispatch in `mod.rs` and `unserved.rs`, and the enums
//! inside an operation by that operation's file while it decodes.

use crate::codec::{self, CodecError};
use crate::proto;

/// Verifies a client request: the frame bound, then the FlatBuffers verifier.
pub fn verify_request(bytes: &[u8]) -> Result<proto::Request<'_>, CodecError> {
    codec::verified_root::<proto::Request>(bytes)
}

/// Verifies a server response: the frame bound, the FlatBuffers verifier, and a status
/// code this build knows.
pub fn verify_response(bytes: &[u8]) -> Result<proto::Response<'_>, CodecError> {
    let response = codec::verified_root::<proto::Response>(bytes)?;
    if response.status().variant_name().is_none() {
        return Err(super::unknown_enum("Response.status", response.status().0));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, WIPOffset};

    use super::super::samples::{finish_request, put_request_bytes, watch_response_bytes};
    use super::*;
    use crate::frame::FRAME_BYTES_MAX;

    // A valid put and a valid transaction pass and read back through the accessors.
    #[test]
    fn valid_requests_verify() {
        let bytes = put_request_bytes();
        let request = verify_request(&bytes).unwrap();
        assert_eq!(
            (request.request_id(), request.client_id(), request.seq()),
            (77, 5, 3)
        );
        let put = request.op_as_put_request().unwrap();
        assert_eq!((put.key().bytes(), put.prev_kv()), (&b"k"[..], true));

        let bytes = super::super::samples::txn_request_bytes(
            proto::CompareTarget::ModRevision,
            proto::TxnOp::RangeRequest,
        );
        let txn = verify_request(&bytes).unwrap().op_as_txn_request().unwrap();
        assert_eq!(txn.compares().unwrap().get(0).number(), 4);
        let op = txn.success().unwrap().get(0);
        assert_eq!(op.op_as_range_request().unwrap().key().bytes(), b"k");
    }

    // Missing required fields are rejected by the verifier, and so is a buffer over the
    // frame maximum, before the verifier reads it.
    #[test]
    fn invalid_requests_are_rejected() {
        // A put without its key, written by hand: the generated builder refuses to omit a
        // required field.
        let mut builder = FlatBufferBuilder::new();
        let start = builder.start_table();
        builder.push_slot_always::<bool>(proto::PutRequest::VT_PREV_KV, true);
        let put = builder.end_table(start);
        let put: WIPOffset<flatbuffers::UnionWIPOffset> = WIPOffset::new(put.value());
        let bytes = finish_request(builder, proto::Op::PutRequest, put);
        assert!(matches!(
            verify_request(&bytes),
            Err(CodecError::Invalid(
                InvalidFlatbuffer::MissingRequiredField { .. }
            ))
        ));

        // A request without an operation.
        let mut builder = FlatBufferBuilder::new();
        let start = builder.start_table();
        builder.push_slot_always::<u64>(proto::Request::VT_REQUEST_ID, 77);
        let root = builder.end_table(start);
        builder.finish_minimal(root);
        assert!(matches!(
            verify_request(builder.finished_data()),
            Err(CodecError::Invalid(
                InvalidFlatbuffer::MissingRequiredField { .. }
            ))
        ));

        let bytes = vec![0u8; FRAME_BYTES_MAX + 1];
        assert_eq!(
            verify_request(&bytes).map(|_| ()),
            Err(CodecError::TooLarge {
                bytes: FRAME_BYTES_MAX + 1,
                max: FRAME_BYTES_MAX
            })
        );
    }

    // A valid watch response verifies and reads back; an error response without a result
    // verifies; an unknown status is rejected.
    #[test]
    fn responses_verify_or_are_rejected() {
        let bytes = watch_response_bytes(proto::StatusCode::Ok, proto::EventKind::Delete);
        let response = verify_response(&bytes).unwrap();
        let watch = response.result_as_watch_result().unwrap();
        let event = watch.events().unwrap().get(0);
        assert_eq!(
            (event.kind(), event.kv().mod_revision()),
            (proto::EventKind::Delete, 12)
        );

        let mut builder = FlatBufferBuilder::new();
        let message = builder.create_string("not the leader");
        let address = builder.create_string("127.0.0.2:2379");
        let leader = proto::LeaderHint::create(
            &mut builder,
            &proto::LeaderHintArgs {
                node_id: 2,
                client_address: Some(address),
            },
        );
        let root = proto::Response::create(
            &mut builder,
            &proto::ResponseArgs {
                request_id: 8,
                status: proto::StatusCode::NotLeader,
                message: Some(message),
                leader: Some(leader),
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        let response = verify_response(builder.finished_data()).unwrap();
        assert_eq!(
            response.leader().unwrap().client_address(),
            Some("127.0.0.2:2379")
        );

        assert_eq!(
            verify_response(&watch_response_bytes(
                proto::StatusCode(999),
                proto::EventKind::Put
            ))
            .map(|_| ()),
            Err(CodecError::UnknownEnum {
                field: "Response.status",
                value: 999
            })
        );
    }
}
