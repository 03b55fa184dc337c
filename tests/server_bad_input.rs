//! Bad input to a live `corekv server`, each case on its own raw TCP connection: broken
//! frames close the connection, well-formed requests the server cannot serve get typed
//! error responses, and after every case the node still serves a normal client.
//!
//! The random garbage case takes its seed from `COREKV_TEST_SEED` when set, else from the
//! clock, and prints it; the random FlatBuffers case uses a fixed seed unless
//! `COREKV_TEST_SEED` is set.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{raw_connect, read_frame, wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::api::{self, ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
use corekv::frame::{self, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use corekv::keyspace::group_of;
use corekv::kv::{
    self, AppendRequest, Command, Compare, CompareResult, CompareTarget, Limits, PutRequest,
    RangeRequest, TxnOp, TxnRequest,
};
use corekv::proto;
use corekv::raft::rng::SeededRng;
use flatbuffers::FlatBufferBuilder;

const GROUPS: u64 = 4;
const SHARDS: u32 = 2;
/// Bytes of the value a client that never reads asks for again and again.
const UNREAD_VALUE_BYTES: usize = 128 << 10;
/// Requests for it sent at most (gigabytes of answers).
const UNREAD_REQUESTS_MAX: usize = 20_000;
/// Bytes of random garbage sent in one case (more when its first bytes announce a
/// longer frame that fits the bound).
const GARBAGE_BYTES: usize = 64 << 10;

/// One node alone: every group is led by the node under test, so each refusal comes
/// from its own checks and no leader hint gets in the way.
fn start(name: &str) -> TestCluster {
    let cluster = TestCluster::start_with(name, 1, SHARDS, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster
}

/// The node answers a status on a new connection and serves a normal client's write and
/// linearizable read.
fn assert_still_serves(cluster: &TestCluster, case: &str) {
    assert!(cluster.status(1).is_some(), "after {case}: no status");
    let client = cluster.client_of(1);
    let key = format!("alive/{case}");
    client
        .put(&key, case)
        .unwrap_or_else(|error| panic!("after {case}: put: {error}"));
    let pair = client
        .get(&key)
        .unwrap_or_else(|error| panic!("after {case}: get: {error}"));
    assert_eq!(
        pair.map(|pair| pair.value),
        Some(case.as_bytes().to_vec()),
        "after {case}"
    );
}

/// Sends `bytes` and expects the node to close the connection without an answer.
fn assert_closed_after(cluster: &TestCluster, case: &str, bytes: &[u8]) {
    let mut stream = raw_connect(&cluster.endpoint(1)).expect("connect");
    // The node may close while the bytes are still being written: that is the outcome
    // this case wants, so a failed write is not a failure.
    let _ = stream.write_all(bytes);
    match read_frame(&mut stream) {
        Ok(None) => {}
        Ok(Some(payload)) => panic!(
            "{case}: the node answered {:?} instead of closing",
            api::decode_response(&payload)
        ),
        Err(error) => panic!("{case}: the node neither answered nor closed: {error}"),
    }
    assert_still_serves(cluster, case);
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, payload).expect("frame fits");
    bytes
}

fn kv_request(request_id: u64, op: kv::Op) -> ApiRequest {
    ApiRequest {
        request_id,
        kind: RequestKind::Kv {
            command: Command {
                client_id: 0,
                seq: 0,
                op,
            },
            serializable: false,
            group: None,
            seen_revision: 0,
        },
    }
}

/// Sends `payload` in one frame on `stream` and reads the one response.
fn call_on(stream: &mut TcpStream, payload: &[u8]) -> ApiResponse {
    stream.write_all(&framed(payload)).expect("write");
    let answer = read_frame(stream)
        .expect("an answer")
        .expect("the connection stays open");
    api::decode_response(&answer).expect("a readable response")
}

/// Sends `request` on a new connection and expects the error `code` for it, then checks
/// the same connection still answers a status.
fn assert_refused(cluster: &TestCluster, case: &str, request: &ApiRequest, code: ErrorCode) {
    let mut stream = raw_connect(&cluster.endpoint(1)).expect("connect");
    let response = call_on(&mut stream, &api::request_to_bytes(request));
    assert_eq!(response.request_id, request.request_id, "{case}");
    match response.result {
        Err(error) => assert_eq!(error.code, code, "{case}: {error:?}"),
        Ok(result) => panic!("{case}: accepted, answered {result:?}"),
    }
    assert_status_on(&mut stream, case);
    assert_still_serves(cluster, case);
}

fn assert_status_on(stream: &mut TcpStream, case: &str) {
    let status = ApiRequest {
        request_id: 99,
        kind: RequestKind::Status,
    };
    let response = call_on(stream, &api::request_to_bytes(&status));
    assert_eq!(response.request_id, 99, "{case}");
    assert!(
        matches!(response.result, Ok(ApiResult::Status(_))),
        "{case}: the connection no longer serves: {response:?}"
    );
}

/// A Request whose union holds `op_type` with the table `op`.
fn request_with_op(
    request_id: u64,
    op_type: proto::Op,
    make_op: impl FnOnce(
        &mut FlatBufferBuilder<'static>,
    ) -> flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let op = make_op(&mut builder);
    let root = proto::Request::create(
        &mut builder,
        &proto::RequestArgs {
            request_id,
            op_type,
            op: Some(op),
            ..proto::RequestArgs::default()
        },
    );
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

/// `count` bytes drawn from `random`.
fn random_bytes(random: &mut SeededRng, count: usize) -> Vec<u8> {
    (0..count).map(|_| random.next_u64() as u8).collect()
}

// Oversized, corrupt and garbage frames close the connection and leave the node serving.
#[test]
fn broken_frames_close_the_connection() {
    let cluster = start("badframes");

    let mut oversized = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes().to_vec();
    oversized.extend_from_slice(&[0; 4 + 1024]);
    assert_closed_after(&cluster, "a length over the maximum", &oversized);
    assert_closed_after(
        &cluster,
        "a length of u32::MAX",
        &[0xff; FRAME_HEADER_BYTES],
    );

    let status = api::request_to_bytes(&ApiRequest {
        request_id: 5,
        kind: RequestKind::Status,
    });
    let mut bad_crc = framed(&status);
    bad_crc[4] ^= 0x01;
    assert_closed_after(&cluster, "a bad crc", &bad_crc);
    let mut flipped = framed(&status);
    *flipped.last_mut().expect("a payload") ^= 0x80;
    assert_closed_after(&cluster, "a payload that does not match its crc", &flipped);

    assert_closed_after(
        &cluster,
        "an HTTP request",
        b"GET / HTTP/1.1\r\nHost: corekv\r\n\r\n",
    );

    let seed = common::test_seed();
    let mut random = SeededRng::new(seed);
    let mut garbage = random_bytes(&mut random, GARBAGE_BYTES);
    let announced = u32::from_le_bytes(garbage[..4].try_into().expect("4 bytes")) as usize;
    if announced <= FRAME_BYTES_MAX {
        // A length within bounds: send the whole announced frame, whose crc fails.
        let rest = (announced + FRAME_HEADER_BYTES).saturating_sub(garbage.len());
        garbage.extend(random_bytes(&mut random, rest));
    }
    println!(
        "random garbage seed: {seed} (replay with COREKV_TEST_SEED={seed} cargo test --release \
         --test server_bad_input broken_frames_close_the_connection)"
    );
    assert_closed_after(&cluster, &format!("random garbage, seed {seed}"), &garbage);
}

// A frame with a good crc around bytes that are not a valid Request is closed or refused,
// never served, and the node keeps serving.
#[test]
fn invalid_flatbuffers_are_not_served() {
    let cluster = start("badbuffers");
    let request = api::request_to_bytes(&kv_request(
        6,
        kv::Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }),
    ));
    // The same bytes on every run unless COREKV_TEST_SEED asks for others.
    let seed = corekv::testing::test_seed_or(0x5eed);
    let mut random = SeededRng::new(seed);
    let random_case = format!(
        "random bytes (seed {seed}; replay with COREKV_TEST_SEED={seed} cargo test --release \
         --test server_bad_input invalid_flatbuffers_are_not_served)"
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an empty payload", Vec::new()),
        ("a truncated request", request[..request.len() / 2].to_vec()),
        ("a root offset past the end", {
            let mut bytes = request.clone();
            bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            bytes
        }),
        (&random_case, random_bytes(&mut random, 512)),
    ];
    for (case, payload) in cases {
        let mut stream = raw_connect(&cluster.endpoint(1)).expect("connect");
        stream.write_all(&framed(&payload)).expect("write");
        match read_frame(&mut stream) {
            Ok(None) => {}
            Ok(Some(answer)) => match api::decode_response(&answer) {
                Ok(ApiResponse {
                    result: Err(error), ..
                }) => assert_eq!(error.code, ErrorCode::InvalidRequest, "{case}"),
                other => panic!("{case}: answered {other:?}"),
            },
            Err(error) => panic!("{case}: the node neither answered nor closed: {error}"),
        }
        assert_still_serves(&cluster, case);
    }
    // Nothing of the broken put was applied.
    assert_eq!(cluster.client_of(1).get("k").expect("get"), None);
}

// Unknown operations get an UnknownOp answer, and the connection stays open.
#[test]
fn unknown_operations_are_answered_unknown_op() {
    let cluster = start("unknownop");
    let cases: Vec<(&str, Vec<u8>)> = vec![(
        "an op type past the schema",
        request_with_op(11, proto::Op(200), |builder| {
            proto::StatusRequest::create(builder, &proto::StatusRequestArgs {}).as_union_value()
        }),
    )];
    for (index, (case, payload)) in cases.into_iter().enumerate() {
        let mut stream = raw_connect(&cluster.endpoint(1)).expect("connect");
        let response = call_on(&mut stream, &payload);
        assert_eq!(response.request_id, 11 + index as u64, "{case}");
        match response.result {
            Err(error) => assert_eq!(error.code, ErrorCode::UnknownOp, "{case}: {error:?}"),
            Ok(result) => panic!("{case}: served, answered {result:?}"),
        }
        assert_status_on(&mut stream, case);
        assert_still_serves(&cluster, case);
    }
}

// Commands that break a bound get their typed error code and change nothing.
#[test]
fn invalid_commands_get_typed_errors() {
    let cluster = start("badcommands");
    let put = |key: Vec<u8>, value: Vec<u8>| {
        kv::Op::Put(PutRequest {
            key,
            value,
            ..PutRequest::default()
        })
    };
    let limits = Limits::default();
    let key_max = limits.key_bytes_max as usize;
    let value_max = limits.value_bytes_max as usize;
    assert_refused(
        &cluster,
        "an empty key",
        &kv_request(21, put(Vec::new(), b"v".to_vec())),
        ErrorCode::EmptyKey,
    );
    assert_refused(
        &cluster,
        "a key over the maximum",
        &kv_request(22, put(vec![b'k'; key_max + 1], b"v".to_vec())),
        ErrorCode::KeyTooLarge,
    );
    assert_refused(
        &cluster,
        "a value over the maximum",
        &kv_request(23, put(b"big".to_vec(), vec![b'v'; value_max + 1])),
        ErrorCode::ValueTooLarge,
    );
    assert_refused(
        &cluster,
        "an append past the value maximum",
        &kv_request(
            24,
            kv::Op::Append(AppendRequest {
                key: b"big".to_vec(),
                value: vec![b'v'; value_max + 1],
            }),
        ),
        ErrorCode::ValueTooLarge,
    );
    let same_key_puts = (0..=limits.txn_ops_max)
        .map(|index| {
            TxnOp::Put(PutRequest {
                key: b"txn".to_vec(),
                value: index.to_le_bytes().to_vec(),
                ..PutRequest::default()
            })
        })
        .collect();
    assert_refused(
        &cluster,
        "too many transaction ops",
        &kv_request(
            25,
            kv::Op::Txn(TxnRequest {
                compares: Vec::new(),
                success: same_key_puts,
                failure: Vec::new(),
            }),
        ),
        ErrorCode::TooManyTxnOps,
    );
    let first = b"span-0".to_vec();
    let second = (1..)
        .map(|index| format!("span-{index}").into_bytes())
        .find(|key| group_of(key, GROUPS) != group_of(&first, GROUPS))
        .expect("keys of another group exist");
    assert_refused(
        &cluster,
        "a transaction across groups",
        &kv_request(
            26,
            kv::Op::Txn(TxnRequest {
                compares: vec![Compare {
                    key: first.clone(),
                    target: CompareTarget::Version(0),
                    result: CompareResult::Equal,
                }],
                success: vec![TxnOp::Put(PutRequest {
                    key: second.clone(),
                    value: b"v".to_vec(),
                    ..PutRequest::default()
                })],
                failure: Vec::new(),
            }),
        ),
        ErrorCode::TxnSpansGroups,
    );
    let scoped = |request_id: u64, op: kv::Op, group: u64| {
        let mut request = kv_request(request_id, op);
        if let RequestKind::Kv { group: scope, .. } = &mut request.kind {
            *scope = Some(group);
        }
        request
    };
    assert_refused(
        &cluster,
        "a request scoped to a group that does not exist",
        &scoped(27, put(first.clone(), b"v".to_vec()), GROUPS),
        ErrorCode::InvalidRequest,
    );
    assert_refused(
        &cluster,
        "a put scoped to another group than its key's",
        &scoped(
            28,
            put(first.clone(), b"v".to_vec()),
            group_of(&second, GROUPS),
        ),
        ErrorCode::InvalidRequest,
    );
    // None of the refused writes left a trace.
    let client = cluster.client_of(1);
    for key in [b"big".as_slice(), b"txn", &first, &second] {
        assert_eq!(client.get(key).expect("get"), None, "{key:?}");
    }
    let range = client.range(RangeRequest::prefix(b"k")).expect("range");
    assert!(range.kvs.is_empty());
}

/// `st` of an established socket in /proc/net/tcp.
const TCP_ESTABLISHED: u8 = 0x01;

/// The state of the IPv4 TCP socket bound to `local` and connected to `remote`, from
/// /proc/net/tcp (`None` when there is none).
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => {
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )
        }
        SocketAddr::V6(_) => panic!("the test cluster listens on IPv4"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields[3], 16).expect("a hex state"))
    })
}

/// The peak resident memory of process `pid`, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in kB");
    kib * 1024
}

// A client that pipelines requests for big answers and never reads them is disconnected
// (its connection closed, not left hanging while its requests still run) and the node
// serves on.
#[test]
fn a_client_that_never_reads_is_disconnected() {
    let cluster = TestCluster::start_with("unread", 1, 1, 1, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster
        .client_of(1)
        .put("big", vec![b'v'; UNREAD_VALUE_BYTES])
        .expect("put");
    let read = kv_request(1, kv::Op::Range(RangeRequest::get(b"big")));
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend(framed(&api::request_to_bytes(&read)));
    }
    let mut stream = raw_connect(&cluster.endpoint(1)).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // Ask for gigabytes of answers, until the node stops taking requests.
    let mut requests = 0;
    while requests < UNREAD_REQUESTS_MAX {
        if stream.write_all(&batch).is_err() {
            break;
        }
        requests += 100;
    }
    // The node gives up on the connection: its end leaves the established state (the
    // client cannot tell yet, with the node's last bytes and its FIN unread).
    let local = stream.local_addr().expect("local address");
    let node = stream.peer_addr().expect("peer address");
    wait_for(
        "the node to close the connection of a client that does not read",
        || (tcp_state(node, local) != Some(TCP_ESTABLISHED)).then_some(()),
    );
    // Reading now gets what the kernel still held, then the end of the stream.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut chunk = vec![0u8; 1 << 20];
    let mut received = 0usize;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(bytes) => received += bytes,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => {
                panic!("the closed connection did not end after {received} bytes: {error}")
            }
        }
    }
    let pid = cluster.nodes[0].child.as_ref().expect("running").id();
    println!(
        "{requests} requests sent, {received} bytes received after the close; the node's \
         peak RSS was {} bytes",
        peak_rss_bytes(pid)
    );
    assert_still_serves(&cluster, "a client that never reads");
}
