//! What the tests of the protocol's files share: one request and one response of every
//! kind, round trips through the wire, and buffers written field by field.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{
    ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, GroupStatus, LeaderHint, Member,
    RequestKind, StatusInfo,
};
use crate::kv;
use crate::proto;
use crate::raft::Role;

pub(super) fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

pub(super) fn key_value(key: &str, value: &str, revision: u64) -> kv::KeyValue {
    kv::KeyValue {
        key: bytes(key),
        value: bytes(value),
        create_revision: revision,
        mod_revision: revision + 1,
        version: 2,
        lease: 0,
    }
}

pub(super) fn put(key: &str, value: &str) -> kv::PutRequest {
    kv::PutRequest {
        key: bytes(key),
        value: bytes(value),
        prev_kv: false,
        lease: 0,
    }
}

pub(super) fn kv_request(request_id: u64, op: kv::Op, serializable: bool) -> ApiRequest {
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
            seen_revision: 0,
        },
    }
}

/// A transaction with every compare target, every compare result and every op kind.
pub(super) fn sample_txn() -> kv::TxnRequest {
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
pub(super) fn sample_requests() -> Vec<ApiRequest> {
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
                revision: 0,
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

pub(super) fn sample_status() -> StatusInfo {
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

pub(super) fn kv_ok(request_id: u64, revision: u64, op: kv::OpResponse) -> ApiResponse {
    ApiResponse {
        request_id,
        result: Ok(ApiResult::Kv(kv::Response { revision, op })),
    }
}

/// A transaction's results, one of every op kind.
pub(super) fn sample_txn_result() -> kv::TxnResponse {
    kv::TxnResponse {
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
    }
}

/// One response of every result kind, and one error of every code.
pub(super) fn sample_responses() -> Vec<ApiResponse> {
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
        kv_ok(7, 10, kv::OpResponse::Txn(sample_txn_result())),
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
            revision: 0,
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
            revision: 0,
        }),
    });
    responses
}

pub(super) fn finish_request(
    mut builder: FlatBufferBuilder<'static>,
    op_type: proto::Op,
    op: WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let root = proto::Request::create(
        &mut builder,
        &proto::RequestArgs {
            request_id: 77,
            client_id: 5,
            seq: 3,
            serializable: false,
            op_type,
            op: Some(op),
            group: None,
            seen_revision: 0,
        },
    );
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

pub(super) fn put_request_bytes() -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let key = builder.create_vector(b"k");
    let value = builder.create_vector(b"v");
    let put = proto::PutRequest::create(
        &mut builder,
        &proto::PutRequestArgs {
            key: Some(key),
            value: Some(value),
            lease: 0,
            prev_kv: true,
        },
    );
    finish_request(builder, proto::Op::PutRequest, put.as_union_value())
}

pub(super) fn txn_request_bytes(target: proto::CompareTarget, op_type: proto::TxnOp) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let key = builder.create_vector(b"k");
    let compare = proto::Compare::create(
        &mut builder,
        &proto::CompareArgs {
            key: Some(key),
            target,
            result: proto::CompareResult::Greater,
            value: None,
            number: 4,
        },
    );
    let compares = builder.create_vector(&[compare]);
    let range = proto::RangeRequest::create(
        &mut builder,
        &proto::RangeRequestArgs {
            key: Some(key),
            ..Default::default()
        },
    );
    let op = proto::TxnRequestOp::create(
        &mut builder,
        &proto::TxnRequestOpArgs {
            op_type,
            op: Some(range.as_union_value()),
        },
    );
    let success = builder.create_vector(&[op]);
    let txn = proto::TxnRequest::create(
        &mut builder,
        &proto::TxnRequestArgs {
            compares: Some(compares),
            success: Some(success),
            failure: None,
        },
    );
    finish_request(builder, proto::Op::TxnRequest, txn.as_union_value())
}

pub(super) fn watch_response_bytes(
    status: proto::StatusCode,
    event_kind: proto::EventKind,
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let key = builder.create_vector(b"k");
    let kv = proto::KeyValue::create(
        &mut builder,
        &proto::KeyValueArgs {
            key: Some(key),
            mod_revision: 12,
            ..Default::default()
        },
    );
    let event = proto::Event::create(
        &mut builder,
        &proto::EventArgs {
            kind: event_kind,
            kv: Some(kv),
            prev_kv: None,
        },
    );
    let events = builder.create_vector(&[event]);
    let watch = proto::WatchResult::create(
        &mut builder,
        &proto::WatchResultArgs {
            watch_id: 3,
            events: Some(events),
            ..Default::default()
        },
    );
    let root = proto::Response::create(
        &mut builder,
        &proto::ResponseArgs {
            request_id: 8,
            status,
            revision: 12,
            result_type: proto::OpResult::WatchResult,
            result: Some(watch.as_union_value()),
            ..Default::default()
        },
    );
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

pub(super) fn finish_response(
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

/// `op` as the server reads it after the SDK wrote it.
pub(super) fn request_round_trip(op: kv::Op) -> kv::Op {
    let request = kv_request(1, op, false);
    match super::decode_request(&super::request_to_bytes(&request)) {
        Ok(ApiRequest {
            kind: RequestKind::Kv { command, .. },
            ..
        }) => command.op,
        other => panic!("{request:?} read back as {other:?}"),
    }
}

/// `op` as the SDK reads it after the server wrote it, at revision 7.
pub(super) fn result_round_trip(op: kv::OpResponse) -> kv::OpResponse {
    let response = kv_ok(1, 7, op);
    match super::decode_response(&super::response_to_bytes(&response)) {
        Ok(ApiResponse {
            result: Ok(ApiResult::Kv(kv::Response { revision: 7, op })),
            ..
        }) => op,
        other => panic!("{response:?} read back as {other:?}"),
    }
}
