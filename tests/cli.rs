//! The built `corekv` binary's client commands: exit codes and the one-line error on
//! stderr for a dead endpoint and for usage errors, and plain output against a small
//! in-process fake node that speaks the real protocol.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::thread;

use corekv::api::{self, ApiResponse, ApiResult, Member, RequestKind, StatusInfo};
use corekv::frame::{self, FRAME_BYTES_MAX};
use corekv::kv::{self, KeyValue, OpResponse};

/// Exit codes documented in `corekv --help`.
const EXIT_NOT_FOUND: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNAVAILABLE: i32 = 4;

fn corekv(arguments: &[&str]) -> Output {
    corekv_with_stdin(arguments, "")
}

fn corekv_with_stdin(arguments: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the corekv binary runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("stdin accepts the input");
    child.wait_with_output().expect("corekv finishes")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8 errors")
}

/// An address where nothing listens.
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Asserts a failure: the exit code, nothing on stdout, one `corekv: ...` line on stderr
/// that contains `mentions`.
fn assert_fails(output: &Output, code: i32, mentions: &str) {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stdout_of(output), "", "nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.starts_with("corekv: "), "{stderr:?}");
    assert!(
        stderr.contains(mentions),
        "{stderr:?} should mention {mentions:?}"
    );
}

// Every client command against a dead endpoint fails fast with exit code 4 and one line
// naming the endpoint.
#[test]
fn a_dead_endpoint_is_reported_as_unavailable() {
    let dead = dead_endpoint();
    let endpoints = format!("--endpoints={dead}");
    for command in [
        vec!["put", "k", "v"],
        vec!["get", "k"],
        vec!["del", "k", "--prefix"],
        vec!["append", "k", "v"],
        vec!["scan", "p", "--limit", "3"],
        vec!["txn", "--then", "put k v"],
        vec!["status"],
    ] {
        let mut arguments = command.clone();
        arguments.extend([endpoints.as_str(), "--timeout", "5s"]);
        let output = corekv(&arguments);
        assert_fails(&output, EXIT_UNAVAILABLE, &dead);
        assert!(stderr_of(&output).contains("unavailable"), "{command:?}");
    }
}

// Usage errors exit with 2 before any network use: missing arguments, a bad timeout, a
// transaction that does not parse (from flags or from stdin).
#[test]
fn usage_errors_exit_with_2() {
    let dead = dead_endpoint();
    let endpoints = format!("--endpoints={dead}");
    let output = corekv(&["put", "only-a-key"]);
    assert_eq!(output.status.code(), Some(EXIT_USAGE));
    let output = corekv(&["get", "k", "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(EXIT_USAGE));
    let output = corekv(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(EXIT_USAGE));

    let output = corekv(&["txn", "--if", "size(k) = 3", "--then", "get k", &endpoints]);
    assert_fails(&output, EXIT_USAGE, "unknown target");
    let output = corekv(&["txn", "--then", "drop k", &endpoints]);
    assert_fails(&output, EXIT_USAGE, "unknown operation");
    let output = corekv_with_stdin(&["txn", &endpoints], "if version(k) > 1\nput k v\n");
    assert_fails(&output, EXIT_USAGE, "if, then or else");
}

// Help describes the transaction syntax and the exit codes.
#[test]
fn help_documents_syntax_and_exit_codes() {
    let output = corekv(&["txn", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout_of(&output);
    for needle in [
        "value(KEY)",
        "version(KEY)",
        "--then",
        "stdin",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "txn --help lacks {needle:?}");
    }
}

/// A one-node fake cluster: answers Status, stores nothing, answers puts with OK, a get
/// of "present" with a value and any other get with nothing, scans with two pairs.
fn start_fake_node() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let status = StatusInfo {
        node_id: 1,
        cluster_id: 0xc0de,
        shards: 1,
        group_count: 4,
        groups: Vec::new(),
        members: vec![Member {
            node_id: 1,
            client_address: address.clone(),
            peer_address: String::new(),
        }],
    };
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let status = status.clone();
            thread::spawn(move || serve(stream, &status));
        }
    });
    address
}

fn pair(key: &str, value: &[u8]) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }
}

fn answer(kind: &RequestKind, status: &StatusInfo) -> ApiResult {
    let RequestKind::Kv { command, .. } = kind else {
        return ApiResult::Status(status.clone());
    };
    let op = match &command.op {
        kv::Op::Put(_) => OpResponse::Put(kv::PutResponse::default()),
        kv::Op::Range(range) if range.range_end.is_empty() => {
            let kvs = if range.key == b"present" {
                vec![pair("present", b"tab\there")]
            } else {
                Vec::new()
            };
            OpResponse::Range(kv::RangeResponse {
                count: kvs.len() as u64,
                kvs,
                more: false,
            })
        }
        kv::Op::Range(_) => OpResponse::Range(kv::RangeResponse {
            kvs: vec![pair("p/1", b"one"), pair("p/2", b"two")],
            count: 2,
            more: false,
        }),
        kv::Op::Delete(_) => OpResponse::Delete(kv::DeleteResponse {
            deleted: 1,
            prev_kvs: Vec::new(),
        }),
        kv::Op::Append(_) => OpResponse::Append(kv::AppendResponse { value_bytes: 5 }),
        kv::Op::Txn(_) => OpResponse::Txn(kv::TxnResponse {
            succeeded: true,
            responses: vec![kv::TxnOpResponse::Put(kv::PutResponse::default())],
        }),
    };
    ApiResult::Kv(kv::Response { revision: 2, op })
}

fn serve(mut stream: TcpStream, status: &StatusInfo) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        while let Some(decoded) = frame::decode(&buffer[consumed..], FRAME_BYTES_MAX).unwrap() {
            consumed += decoded.consumed_bytes;
            let request = api::decode_request(decoded.payload).expect("a valid request");
            let response = ApiResponse {
                request_id: request.request_id,
                result: Ok(answer(&request.kind, status)),
            };
            let mut out = Vec::new();
            frame::encode(&mut out, &api::response_to_bytes(&response)).unwrap();
            if stream.write_all(&out).is_err() {
                return;
            }
        }
        buffer.drain(..consumed);
    }
}

// Against a live node each command prints its plain result: OK, the escaped value, the
// count, the length, tab-separated pairs, the transaction's branch, the status table; a
// missing key exits with 1 and prints nothing.
#[test]
fn commands_print_plain_results() {
    let node = start_fake_node();
    let endpoints = format!("--endpoints={node}");
    let run = |arguments: &[&str]| {
        let mut arguments = arguments.to_vec();
        arguments.push(&endpoints);
        let output = corekv(&arguments);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{arguments:?}: {}",
            stderr_of(&output)
        );
        stdout_of(&output)
    };
    assert_eq!(run(&["put", "k", "v"]), "OK\n");
    assert_eq!(run(&["get", "present"]), "tab\\there\n");
    assert_eq!(run(&["del", "k"]), "1\n");
    assert_eq!(run(&["append", "k", "tail"]), "5\n");
    assert_eq!(run(&["scan", "p/"]), "p/1\tone\np/2\ttwo\n");
    assert_eq!(run(&["scan", "p/", "--keys-only"]), "p/1\np/2\n");
    assert_eq!(
        run(&["txn", "--if", "version(k) = 0", "--then", "put k v"]),
        "SUCCESS\nOK\n"
    );
    let status = run(&["status"]);
    assert!(
        status.starts_with("cluster 0x000000000000c0de  groups 4\n"),
        "{status}"
    );
    assert!(
        status.contains(&format!("1     {node}  1       0       ok")),
        "{status}"
    );

    let output = corekv(&["get", "absent", &endpoints]);
    assert_eq!(output.status.code(), Some(EXIT_NOT_FOUND));
    assert_eq!(
        (stdout_of(&output), stderr_of(&output)),
        (String::new(), String::new())
    );
}
