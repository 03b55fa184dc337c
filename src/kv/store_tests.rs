//! Unit tests of the state machine: every op and its edges, transactions, revisions,
//! sessions and snapshots.

use super::*;

/// A store with small limits, so the size bounds can be hit with small inputs.
fn small_limits() -> Limits {
    Limits {
        key_bytes_max: 16,
        value_bytes_max: 16,
        txn_ops_max: 4,
        command_bytes_max: 1024,
        response_bytes_max: 200,
        sessions_max: 3,
        session_cache_bytes_max: 1024,
        history_bytes_max: 1 << 20,
    }
}

fn plain(op: Op) -> Command {
    Command {
        client_id: 0,
        seq: 0,
        op,
    }
}

fn with_session(client_id: u64, seq: u64, op: Op) -> Command {
    Command { client_id, seq, op }
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    })
}

fn put_prev(key: &[u8], value: &[u8]) -> Op {
    Op::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        prev_kv: true,
        lease: 0,
    })
}

fn delete(key: &[u8], range_end: &[u8], prev_kv: bool) -> Op {
    Op::Delete(DeleteRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv,
    })
}

fn append(key: &[u8], value: &[u8]) -> Op {
    Op::Append(AppendRequest {
        key: key.to_vec(),
        value: value.to_vec(),
    })
}

fn range(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..RangeRequest::default()
    }
}

fn op_response(outcome: Outcome) -> OpResponse {
    outcome.expect("command failed").op
}

fn range_response(outcome: Outcome) -> RangeResponse {
    match op_response(outcome) {
        OpResponse::Range(range) => range,
        other => panic!("not a range response: {other:?}"),
    }
}

fn keys_of(response: &RangeResponse) -> Vec<&[u8]> {
    response
        .kvs
        .iter()
        .map(|key_value| key_value.key.as_slice())
        .collect()
}

/// A store holding keys a, ab, abc, b, c, each with value "v".
fn store_with_keys() -> Store {
    let mut store = Store::default();
    for (index, key) in [&b"a"[..], b"ab", b"abc", b"b", b"c"]
        .into_iter()
        .enumerate()
    {
        store
            .apply(index as u64 + 1, index as u64 + 1, &plain(put(key, b"v")))
            .expect("put failed");
    }
    store
}

// Put, put, delete, put: revisions follow the log and the version restarts after delete.
#[test]
fn versions_and_revisions_follow_etcd() {
    let mut store = Store::default();
    store.apply(3, 3, &plain(put(b"k", b"1"))).unwrap();
    let first = store.get(b"k").unwrap();
    assert_eq!(
        (first.create_revision, first.mod_revision, first.version),
        (3, 3, 1)
    );

    store.apply(5, 5, &plain(put(b"k", b"2"))).unwrap();
    let second = store.get(b"k").unwrap();
    assert_eq!(
        (second.create_revision, second.mod_revision, second.version),
        (3, 5, 2)
    );

    let deleted = op_response(store.apply(6, 6, &plain(delete(b"k", b"", false))));
    assert_eq!(
        deleted,
        OpResponse::Delete(DeleteResponse {
            deleted: 1,
            prev_kvs: vec![]
        })
    );
    assert_eq!(store.get(b"k"), None);

    store.apply(9, 9, &plain(put(b"k", b"3"))).unwrap();
    let third = store.get(b"k").unwrap();
    assert_eq!(
        (third.create_revision, third.mod_revision, third.version),
        (9, 9, 1)
    );
    assert_eq!(store.revision(), 9);
}

// Only a write that changes something moves the revision; reads, refused commands,
// no-ops and a delete of nothing do not. The answer's revision is the store's.
#[test]
fn only_writes_move_the_revision() {
    let mut store = Store::default();
    let read = store
        .apply(1, 10, &plain(Op::Range(RangeRequest::get(b"k"))))
        .unwrap();
    assert_eq!(read.revision, 0);
    store.apply_noop(2);
    assert_eq!(store.revision(), 0);
    assert_eq!(
        store.apply(4, 20, &plain(put(b"", b"x"))),
        Err(KvError::EmptyKey)
    );
    assert_eq!(store.applied_index(), 4);
    assert_eq!(store.key_count(), 0);
    let written = store.apply(7, 30, &plain(put(b"k", b"x"))).unwrap();
    assert_eq!(written.revision, 30);
    let nothing = store
        .apply(8, 40, &plain(delete(b"absent", b"", false)))
        .unwrap();
    assert_eq!(nothing.revision, 30);
    assert_eq!(
        store
            .read(&Op::Range(RangeRequest::get(b"k")))
            .unwrap()
            .revision,
        30
    );
}

// A write at or below the closed revision would break the leader's promise: it stops the
// replica.
#[test]
#[should_panic(expected = "at or below the closed revision")]
fn a_write_at_a_closed_revision_panics() {
    let mut store = Store::default();
    store.apply_close(1, 50);
    let _ = store.apply(2, 50, &plain(put(b"k", b"x")));
}

// A command that changes nothing (a refused one, a delete of nothing, a repeat of a
// session's last write) still took its revision: the store's closed revision covers it,
// so a new leader continuing above the closed revision continues above it, and revisions
// rise along the log.
#[test]
fn a_command_that_changes_nothing_still_takes_its_revision() {
    let mut store = Store::default();
    store.apply(1, 10, &plain(put(b"k", b"x"))).unwrap();
    let _ = store.apply(2, 20, &plain(put(b"", b"x")));
    assert_eq!((store.revision(), store.closed_revision()), (10, 20));
    store
        .apply(3, 30, &plain(delete(b"absent", b"", false)))
        .unwrap();
    store
        .apply(4, 40, &with_session(7, 1, put(b"k", b"y")))
        .unwrap();
    let repeated = store
        .apply(5, 50, &with_session(7, 1, put(b"k", b"y")))
        .unwrap();
    assert_eq!(repeated.revision, 40, "the repeat answers as the first did");
    assert_eq!((store.revision(), store.closed_revision()), (40, 50));
    let at_the_repeat = store.read_at(&Op::Range(RangeRequest::get(b"k")), 50);
    assert_eq!(range_response(at_the_repeat).kvs[0].mod_revision, 40);
}

#[test]
#[should_panic(expected = "at or below the closed revision")]
fn a_write_at_the_revision_of_a_refused_command_panics() {
    let mut store = Store::default();
    let _ = store.apply(1, 20, &plain(put(b"", b"x")));
    let _ = store.apply(2, 20, &plain(put(b"k", b"x")));
}

// Applying an index that does not increase is a caller bug and stops the replica.
#[test]
#[should_panic(expected = "applied after entry")]
fn out_of_order_apply_panics() {
    let mut store = Store::default();
    store.apply_noop(5);
    store.apply_noop(5);
}

// Single-key gets see exactly one key, or nothing when it is missing.
#[test]
fn get_single_key() {
    let store = store_with_keys();
    let found = range_response(store.read(&Op::Range(RangeRequest::get(b"ab"))));
    assert_eq!(keys_of(&found), vec![&b"ab"[..]]);
    assert_eq!((found.count, found.more), (1, false));
    assert_eq!(found.kvs[0].value, b"v".to_vec());
    assert_eq!(found.kvs[0].create_revision, 2);

    let missing = range_response(store.read(&Op::Range(RangeRequest::get(b"zz"))));
    assert_eq!(
        missing,
        RangeResponse {
            kvs: vec![],
            count: 0,
            more: false
        }
    );
}

// Prefix scans, half-open ranges, the unbounded end and an empty range.
#[test]
fn range_bounds() {
    let store = store_with_keys();
    let read = |request: RangeRequest| range_response(store.read(&Op::Range(request)));

    let prefix = read(RangeRequest::prefix(b"ab"));
    assert_eq!(keys_of(&prefix), vec![&b"ab"[..], b"abc"]);

    let half_open = read(range(b"ab", b"b"));
    assert_eq!(keys_of(&half_open), vec![&b"ab"[..], b"abc"]);

    let from_b = read(range(b"b", RANGE_END_UNBOUNDED));
    assert_eq!(keys_of(&from_b), vec![&b"b"[..], b"c"]);

    let everything = read(range(b"\0", RANGE_END_UNBOUNDED));
    assert_eq!(everything.count, 5);

    let empty = read(range(b"b", b"b"));
    assert_eq!(empty, RangeResponse::default());

    // A prefix of 0xff bytes scans to the end of the keyspace.
    let mut store = store_with_keys();
    store.apply(10, 10, &plain(put(b"\xff\xff", b"x"))).unwrap();
    store
        .apply(11, 11, &plain(put(b"\xff\xff\x01", b"x")))
        .unwrap();
    let high = range_response(store.read(&Op::Range(RangeRequest::prefix(b"\xff\xff"))));
    assert_eq!(keys_of(&high), vec![&b"\xff\xff"[..], b"\xff\xff\x01"]);
}

// A limit cuts the key-values but not the count, and sets `more` only when it cut.
#[test]
fn range_limit_count_and_more() {
    let store = store_with_keys();
    let read = |limit| {
        let request = RangeRequest {
            limit,
            ..range(b"a", RANGE_END_UNBOUNDED)
        };
        range_response(store.read(&Op::Range(request)))
    };
    let limited = read(2);
    assert_eq!(keys_of(&limited), vec![&b"a"[..], b"ab"]);
    assert_eq!((limited.count, limited.more), (5, true));
    let exact = read(5);
    assert_eq!((exact.kvs.len(), exact.count, exact.more), (5, 5, false));
    let unlimited = read(0);
    assert_eq!((unlimited.kvs.len(), unlimited.more), (5, false));
}

// count_only returns the count alone; keys_only returns metadata without values.
#[test]
fn range_count_only_and_keys_only() {
    let store = store_with_keys();
    let counted = RangeRequest {
        count_only: true,
        ..RangeRequest::prefix(b"a")
    };
    let counted = range_response(store.read(&Op::Range(counted)));
    assert_eq!(
        counted,
        RangeResponse {
            kvs: vec![],
            count: 3,
            more: false
        }
    );

    let keys = RangeRequest {
        keys_only: true,
        ..RangeRequest::prefix(b"a")
    };
    let keys = range_response(store.read(&Op::Range(keys)));
    assert_eq!(keys_of(&keys), vec![&b"a"[..], b"ab", b"abc"]);
    assert!(keys.kvs.iter().all(|key_value| key_value.value.is_empty()));
    assert_eq!(keys.kvs[2].mod_revision, 3);
}

// A Range stops at the response byte bound, keeps a prefix, and says there is more.
#[test]
fn range_stops_at_the_response_bound() {
    let mut store = Store::new(small_limits()).unwrap();
    for (index, key) in [b"a", b"b", b"c", b"d"].into_iter().enumerate() {
        store
            .apply(
                index as u64 + 1,
                index as u64 + 1,
                &plain(put(key, &[b'x'; 16])),
            )
            .unwrap();
    }
    // Each key-value encodes to 40 + 1 + 16 = 57 bytes; 200 bytes hold three.
    let all = range_response(store.read(&Op::Range(range(b"a", RANGE_END_UNBOUNDED))));
    assert_eq!(keys_of(&all), vec![&b"a"[..], b"b", b"c"]);
    assert_eq!((all.count, all.more), (4, true));
    // Without values each costs 41 bytes, and all four fit.
    let keys_only = RangeRequest {
        keys_only: true,
        ..range(b"a", RANGE_END_UNBOUNDED)
    };
    let keys_only = range_response(store.read(&Op::Range(keys_only)));
    assert_eq!((keys_only.kvs.len(), keys_only.more), (4, false));
}

// Put with prev_kv returns the old key-value, none for a new key, and stores the lease.
#[test]
fn put_prev_kv_and_lease() {
    let mut store = Store::default();
    let first = op_response(store.apply(1, 1, &plain(put_prev(b"k", b"1"))));
    assert_eq!(first, OpResponse::Put(PutResponse { prev_kv: None }));
    let second = op_response(store.apply(2, 2, &plain(put_prev(b"k", b"2"))));
    let expected = KeyValue {
        key: b"k".to_vec(),
        value: b"1".to_vec(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    };
    assert_eq!(
        second,
        OpResponse::Put(PutResponse {
            prev_kv: Some(expected)
        })
    );
    let leased = PutRequest {
        key: b"k".to_vec(),
        value: b"3".to_vec(),
        prev_kv: false,
        lease: 77,
    };
    store.apply(3, 3, &plain(Op::Put(leased))).unwrap();
    assert_eq!(store.get(b"k").unwrap().lease, 77);
    // Without prev_kv the answer carries nothing.
    let quiet = op_response(store.apply(4, 4, &plain(put(b"k", b"4"))));
    assert_eq!(quiet, OpResponse::Put(PutResponse { prev_kv: None }));
}

// Deleting a range returns how many keys went and, when asked, what they were.
#[test]
fn delete_range_with_prev_kv() {
    let mut store = store_with_keys();
    let response = op_response(store.apply(6, 6, &plain(delete(b"a", b"b", true))));
    let OpResponse::Delete(deleted) = response else {
        panic!("not a delete response")
    };
    assert_eq!(deleted.deleted, 3);
    let keys: Vec<&[u8]> = deleted
        .prev_kvs
        .iter()
        .map(|kv| kv.key.as_slice())
        .collect();
    assert_eq!(keys, vec![&b"a"[..], b"ab", b"abc"]);
    assert_eq!(deleted.prev_kvs[1].value, b"v".to_vec());
    assert_eq!(deleted.prev_kvs[1].mod_revision, 2);
    assert_eq!(store.key_count(), 2);

    let none = op_response(store.apply(7, 7, &plain(delete(b"zz", b"", true))));
    assert_eq!(
        none,
        OpResponse::Delete(DeleteResponse {
            deleted: 0,
            prev_kvs: vec![]
        })
    );

    let rest = op_response(store.apply(8, 8, &plain(delete(b"\0", RANGE_END_UNBOUNDED, false))));
    assert_eq!(
        rest,
        OpResponse::Delete(DeleteResponse {
            deleted: 2,
            prev_kvs: vec![]
        })
    );
    assert_eq!(store.key_count(), 0);
}

// A delete whose previous key-values would exceed the response bound deletes nothing.
#[test]
fn delete_prev_kv_over_the_response_bound_changes_nothing() {
    let mut store = Store::new(small_limits()).unwrap();
    for (index, key) in [b"a", b"b", b"c", b"d"].into_iter().enumerate() {
        store
            .apply(
                index as u64 + 1,
                index as u64 + 1,
                &plain(put(key, &[b'x'; 16])),
            )
            .unwrap();
    }
    let before = store.clone();
    let refused = store.apply(5, 5, &plain(delete(b"a", RANGE_END_UNBOUNDED, true)));
    assert_eq!(
        refused,
        Err(KvError::ResponseTooLarge {
            response_bytes_max: 200
        })
    );
    assert_eq!(store.keys, before.keys);
    // Without prev_kv the same delete is fine.
    let done = op_response(store.apply(6, 6, &plain(delete(b"a", RANGE_END_UNBOUNDED, false))));
    assert_eq!(
        done,
        OpResponse::Delete(DeleteResponse {
            deleted: 4,
            prev_kvs: vec![]
        })
    );
}

// Append creates a missing key, extends an existing one, and refuses to grow past the
// value bound without changing anything.
#[test]
fn append_creates_extends_and_is_bounded() {
    let mut store = Store::new(small_limits()).unwrap();
    let created = op_response(store.apply(1, 1, &plain(append(b"log", b"abc"))));
    assert_eq!(
        created,
        OpResponse::Append(AppendResponse { value_bytes: 3 })
    );
    let first = store.get(b"log").unwrap();
    assert_eq!(
        (first.create_revision, first.mod_revision, first.version),
        (1, 1, 1)
    );

    store
        .apply(
            2,
            2,
            &plain(Op::Put(PutRequest {
                key: b"log".to_vec(),
                value: b"abc".to_vec(),
                prev_kv: false,
                lease: 5,
            })),
        )
        .unwrap();
    let extended = op_response(store.apply(3, 3, &plain(append(b"log", b"defgh"))));
    assert_eq!(
        extended,
        OpResponse::Append(AppendResponse { value_bytes: 8 })
    );
    let second = store.get(b"log").unwrap();
    assert_eq!(second.value, b"abcdefgh".to_vec());
    assert_eq!(
        (second.create_revision, second.mod_revision, second.version),
        (1, 3, 3)
    );
    assert_eq!(second.lease, 5, "append keeps the key's lease");

    let refused = store.apply(4, 4, &plain(append(b"log", b"123456789")));
    assert_eq!(
        refused,
        Err(KvError::ValueTooLarge {
            value_bytes: 17,
            value_bytes_max: 16
        })
    );
    assert_eq!(store.get(b"log").unwrap(), second);
    assert_eq!(store.revision(), 3, "a refused append moves nothing");
}

/// Runs a Txn with one compare against key `k` (holding "m", created at 2, modified at
/// 4, version 2) or against the missing key `missing`, and says which branch ran.
fn compare_succeeds(key: &[u8], target: CompareTarget, result: CompareResult) -> bool {
    let mut store = Store::default();
    store.apply(2, 2, &plain(put(b"k", b"a"))).unwrap();
    store.apply(4, 4, &plain(put(b"k", b"m"))).unwrap();
    let txn = TxnRequest {
        compares: vec![Compare {
            key: key.to_vec(),
            target,
            result,
        }],
        success: vec![],
        failure: vec![],
    };
    match op_response(store.apply(5, 5, &plain(Op::Txn(txn)))) {
        OpResponse::Txn(response) => response.succeeded,
        other => panic!("not a txn response: {other:?}"),
    }
}

// Each compare target with each result, on a present key and on a missing one.
#[test]
fn txn_compare_semantics() {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    let value = |bytes: &[u8]| CompareTarget::Value(bytes.to_vec());
    let cases: Vec<(&[u8], CompareTarget, CompareResult, bool)> = vec![
        (b"k", value(b"m"), Equal, true),
        (b"k", value(b"n"), Equal, false),
        (b"k", value(b"n"), NotEqual, true),
        (b"k", value(b"m"), NotEqual, false),
        (b"k", value(b"a"), Greater, true),
        (b"k", value(b"m"), Greater, false),
        (b"k", value(b"mm"), Less, true),
        (b"k", value(b"a"), Less, false),
        (b"k", CompareTarget::Version(2), Equal, true),
        (b"k", CompareTarget::Version(1), NotEqual, true),
        (b"k", CompareTarget::Version(1), Greater, true),
        (b"k", CompareTarget::Version(2), Less, false),
        (b"k", CompareTarget::CreateRevision(2), Equal, true),
        (b"k", CompareTarget::CreateRevision(3), Less, true),
        (b"k", CompareTarget::CreateRevision(2), Greater, false),
        (b"k", CompareTarget::CreateRevision(2), NotEqual, false),
        (b"k", CompareTarget::ModRevision(4), Equal, true),
        (b"k", CompareTarget::ModRevision(3), Greater, true),
        (b"k", CompareTarget::ModRevision(4), Less, false),
        (b"k", CompareTarget::ModRevision(5), NotEqual, true),
        // A missing key has version and revisions 0 ...
        (b"missing", CompareTarget::Version(0), Equal, true),
        (b"missing", CompareTarget::Version(1), Less, true),
        (b"missing", CompareTarget::CreateRevision(0), Equal, true),
        (b"missing", CompareTarget::ModRevision(0), Equal, true),
        (b"missing", CompareTarget::ModRevision(0), Greater, false),
        (b"missing", CompareTarget::ModRevision(1), NotEqual, true),
        // ... and fails every value compare, even against the empty value.
        (b"missing", value(b""), Equal, false),
        (b"missing", value(b"x"), NotEqual, false),
        (b"missing", value(b"x"), Less, false),
        (b"missing", value(b""), Greater, false),
    ];
    for (key, target, result, expected) in cases {
        let described = format!("{:?} {target:?} {result:?}", String::from_utf8_lossy(key));
        assert_eq!(
            compare_succeeds(key, target, result),
            expected,
            "{described}"
        );
    }
}

// A Txn runs the branch its compares pick, each op seeing the ones before it, all at
// the entry's revision; an empty compare list succeeds.
#[test]
fn txn_runs_one_branch_in_order() {
    let mut store = Store::default();
    store.apply(1, 1, &plain(put(b"k", b"1"))).unwrap();
    let txn = |expected: &[u8]| TxnRequest {
        compares: vec![Compare {
            key: b"k".to_vec(),
            target: CompareTarget::Value(expected.to_vec()),
            result: CompareResult::Equal,
        }],
        success: vec![
            TxnOp::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            }),
            TxnOp::Append(AppendRequest {
                key: b"k".to_vec(),
                value: b"+".to_vec(),
            }),
            TxnOp::Range(RangeRequest::get(b"k")),
        ],
        failure: vec![TxnOp::Delete(DeleteRequest {
            key: b"k".to_vec(),
            range_end: vec![],
            prev_kv: true,
        })],
    };
    let OpResponse::Txn(success) = op_response(store.apply(2, 2, &plain(Op::Txn(txn(b"1")))))
    else {
        panic!("not a txn response");
    };
    assert!(success.succeeded);
    assert_eq!(success.responses.len(), 3);
    let TxnOpResponse::Range(read) = &success.responses[2] else {
        panic!("not a range")
    };
    assert_eq!(read.kvs[0].value, b"2+".to_vec());
    assert_eq!((read.kvs[0].mod_revision, read.kvs[0].version), (2, 3));

    let OpResponse::Txn(failure) = op_response(store.apply(3, 3, &plain(Op::Txn(txn(b"1")))))
    else {
        panic!("not a txn response");
    };
    assert!(!failure.succeeded);
    let TxnOpResponse::Delete(deleted) = &failure.responses[0] else {
        panic!("not a delete")
    };
    assert_eq!(deleted.prev_kvs[0].value, b"2+".to_vec());
    assert_eq!(store.get(b"k"), None);

    let empty = TxnRequest::default();
    let OpResponse::Txn(empty) = op_response(store.apply(4, 4, &plain(Op::Txn(empty)))) else {
        panic!("not a txn response");
    };
    assert!(empty.succeeded && empty.responses.is_empty());
}

// A Txn whose late op fails leaves no trace of its earlier puts, deletes and appends.
#[test]
fn failed_txn_rolls_back_everything() {
    let mut store = Store::new(small_limits()).unwrap();
    store.apply(1, 1, &plain(put(b"a", b"old"))).unwrap();
    store.apply(2, 2, &plain(put(b"b", b"0123456789"))).unwrap();
    store.apply(3, 3, &plain(put(b"c", b"c"))).unwrap();
    let before = store.clone();
    let txn = TxnRequest {
        compares: vec![],
        success: vec![
            TxnOp::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"new".to_vec(),
                ..Default::default()
            }),
            TxnOp::Append(AppendRequest {
                key: b"b".to_vec(),
                value: b"ab".to_vec(),
            }),
            TxnOp::Delete(DeleteRequest {
                key: b"c".to_vec(),
                range_end: vec![],
                prev_kv: false,
            }),
            // "b" now holds 12 bytes; 5 more exceed the 16-byte bound.
            TxnOp::Append(AppendRequest {
                key: b"b".to_vec(),
                value: b"12345".to_vec(),
            }),
        ],
        failure: vec![],
    };
    let refused = store.apply(4, 4, &plain(Op::Txn(txn)));
    assert_eq!(
        refused,
        Err(KvError::ValueTooLarge {
            value_bytes: 17,
            value_bytes_max: 16
        })
    );
    assert_eq!(store.keys, before.keys);
    assert_eq!(
        store.revision(),
        before.revision(),
        "a refused txn moves nothing"
    );
    assert_eq!(
        store.history, before.history,
        "its history pushes are taken back"
    );
}

// An append creating a key inside a failed Txn is removed again.
#[test]
fn failed_txn_removes_keys_it_created() {
    let mut store = Store::new(small_limits()).unwrap();
    let txn = TxnRequest {
        compares: vec![],
        success: vec![
            TxnOp::Append(AppendRequest {
                key: b"new".to_vec(),
                value: b"x".to_vec(),
            }),
            TxnOp::Put(PutRequest {
                key: b"p".to_vec(),
                value: b"y".to_vec(),
                ..Default::default()
            }),
            TxnOp::Append(AppendRequest {
                key: b"p".to_vec(),
                value: vec![0; 16],
            }),
        ],
        failure: vec![],
    };
    assert!(matches!(
        store.apply(1, 1, &plain(Op::Txn(txn))),
        Err(KvError::ValueTooLarge { .. })
    ));
    assert_eq!(store.key_count(), 0);
}

// A command that fails validation at apply is answered with the error and changes only
// the applied index and the closed revision (it took its revision).
#[test]
fn invalid_commands_change_only_the_applied_index_and_closed_revision() {
    let mut store = Store::new(small_limits()).unwrap();
    store.apply(1, 1, &plain(put(b"a", b"1"))).unwrap();
    let before = store.snapshot();
    let invalid = [
        (
            put(&[b'k'; 17], b"v"),
            KvError::KeyTooLarge {
                key_bytes: 17,
                key_bytes_max: 16,
            },
        ),
        (
            put(b"k", &[0; 17]),
            KvError::ValueTooLarge {
                value_bytes: 17,
                value_bytes_max: 16,
            },
        ),
        (delete(b"b", b"a", false), KvError::InvalidRange),
        (append(b"", b"x"), KvError::EmptyKey),
        (
            Op::Txn(TxnRequest {
                compares: vec![],
                success: (0..5)
                    .map(|_| TxnOp::Range(RangeRequest::get(b"a")))
                    .collect(),
                failure: vec![],
            }),
            KvError::TooManyTxnOps {
                ops: 5,
                txn_ops_max: 4,
            },
        ),
    ];
    for (offset, (op, error)) in invalid.into_iter().enumerate() {
        let index = 2 + offset as u64;
        assert_eq!(store.apply(index, index, &plain(op)), Err(error));
    }
    // Each took its revision (the index, here) and nothing else.
    let mut expected = Store::restore(&before).unwrap();
    expected.apply_close(store.applied_index(), store.applied_index());
    assert_eq!(store.snapshot(), expected.snapshot());
}

// Reads outside the log serve Ranges and read-only Txns, and refuse writes.
#[test]
fn reads_outside_the_log() {
    let store = store_with_keys();
    assert_eq!(store.read(&put(b"a", b"x")), Err(KvError::NotReadOnly));
    assert_eq!(store.read(&append(b"a", b"x")), Err(KvError::NotReadOnly));
    let write_txn = TxnRequest {
        compares: vec![],
        success: vec![],
        failure: vec![TxnOp::Put(PutRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })],
    };
    assert_eq!(store.read(&Op::Txn(write_txn)), Err(KvError::NotReadOnly));
    let read_txn = TxnRequest {
        compares: vec![Compare {
            key: b"a".to_vec(),
            target: CompareTarget::Version(1),
            result: CompareResult::Equal,
        }],
        success: vec![TxnOp::Range(RangeRequest::prefix(b"a"))],
        failure: vec![],
    };
    let response = store.read(&Op::Txn(read_txn)).unwrap();
    assert_eq!(response.revision, 5);
    let OpResponse::Txn(txn) = response.op else {
        panic!("not a txn response")
    };
    assert!(txn.succeeded);
    let TxnOpResponse::Range(scanned) = &txn.responses[0] else {
        panic!("not a range")
    };
    assert_eq!(scanned.count, 3);
    assert_eq!(
        store.read(&Op::Range(range(b"b", b"a"))),
        Err(KvError::InvalidRange)
    );
}

// A retried write is answered from the cache and not applied again.
#[test]
fn session_retry_is_not_applied_twice() {
    let mut store = Store::default();
    let first = store
        .apply(1, 1, &with_session(9, 1, append(b"k", b"x")))
        .unwrap();
    let retry = store
        .apply(2, 2, &with_session(9, 1, append(b"k", b"x")))
        .unwrap();
    assert_eq!(
        retry, first,
        "the retry returns the original response, revision included"
    );
    assert_eq!(store.get(b"k").unwrap().value, b"x".to_vec());
    assert_eq!(store.revision(), 1, "the retry wrote nothing");

    let next = store
        .apply(3, 3, &with_session(9, 2, append(b"k", b"y")))
        .unwrap();
    assert_eq!(
        next.op,
        OpResponse::Append(AppendResponse { value_bytes: 2 })
    );
    assert_eq!(store.session_last_seq(9), Some(2));
    // Without a session the same append applies every time.
    store.apply(4, 4, &plain(append(b"k", b"z"))).unwrap();
    store.apply(5, 5, &plain(append(b"k", b"z"))).unwrap();
    assert_eq!(store.get(b"k").unwrap().value, b"xyzz".to_vec());
    assert_eq!(store.session_count(), 1);
}

// An error outcome is cached like a response.
#[test]
fn session_caches_errors_too() {
    let mut store = Store::new(small_limits()).unwrap();
    store
        .apply(1, 1, &with_session(4, 1, append(b"k", &[0; 10])))
        .unwrap();
    let refused = store.apply(2, 2, &with_session(4, 2, append(b"k", &[0; 10])));
    assert!(matches!(refused, Err(KvError::ValueTooLarge { .. })));
    // The key shrinks; a real re-run would now succeed, the cached answer does not change.
    store.apply(3, 3, &plain(put(b"k", b""))).unwrap();
    assert_eq!(
        store.apply(4, 4, &with_session(4, 2, append(b"k", &[0; 10]))),
        refused
    );
    assert_eq!(store.get(b"k").unwrap().value, Vec::<u8>::new());
}

// An older seq is Stale, an unknown client past seq 1 is Expired, and gaps are allowed.
#[test]
fn session_stale_expired_and_gaps() {
    let mut store = Store::default();
    assert_eq!(
        store.apply(1, 1, &with_session(5, 2, put(b"k", b"1"))),
        Err(KvError::Session(SessionError::Expired {
            client_id: 5,
            seq: 2
        }))
    );
    assert_eq!(store.key_count(), 0);
    assert_eq!(store.session_count(), 0);

    store
        .apply(2, 2, &with_session(5, 1, put(b"k", b"1")))
        .unwrap();
    store
        .apply(3, 3, &with_session(5, 4, put(b"k", b"4")))
        .unwrap();
    assert_eq!(
        store.apply(4, 4, &with_session(5, 3, put(b"k", b"3"))),
        Err(KvError::Session(SessionError::Stale {
            client_id: 5,
            seq: 3,
            last_seq: 4
        }))
    );
    assert_eq!(store.get(b"k").unwrap().value, b"4".to_vec());
    assert_eq!(store.session_last_seq(5), Some(4));
}

// A duplicate of a read-only command runs the read again at the current revision.
#[test]
fn session_rerun_of_reads() {
    let mut store = Store::default();
    store.apply(1, 1, &plain(put(b"k", b"1"))).unwrap();
    let read = Op::Range(RangeRequest::get(b"k"));
    let first = store
        .apply(2, 2, &with_session(3, 1, read.clone()))
        .unwrap();
    store.apply(3, 3, &plain(put(b"k", b"2"))).unwrap();
    let again = store.apply(4, 4, &with_session(3, 1, read)).unwrap();
    // A read answers with the store's revision: the last write's.
    assert_eq!(first.revision, 1);
    assert_eq!(again.revision, 3);
    let OpResponse::Range(again) = again.op else {
        panic!("not a range")
    };
    assert_eq!(again.kvs[0].value, b"2".to_vec());
    // A write under the seq of a cached read is not applied.
    let refused = store.apply(5, 5, &with_session(3, 1, put(b"k", b"3")));
    assert_eq!(refused, Err(KvError::NotReadOnly));
    assert_eq!(store.get(b"k").unwrap().value, b"2".to_vec());
}

// Past sessions_max the session with the oldest last entry goes, and a duplicate counts
// as use; an evicted client then gets Expired.
#[test]
fn session_eviction_is_least_recently_used() {
    let mut store = Store::new(small_limits()).unwrap();
    store
        .apply(1, 1, &with_session(1, 1, put(b"a", b"1")))
        .unwrap();
    store
        .apply(2, 2, &with_session(2, 1, put(b"b", b"1")))
        .unwrap();
    store
        .apply(3, 3, &with_session(3, 1, put(b"c", b"1")))
        .unwrap();
    // A duplicate from client 1 makes client 2 the oldest.
    store
        .apply(4, 4, &with_session(1, 1, put(b"a", b"1")))
        .unwrap();
    store
        .apply(5, 5, &with_session(4, 1, put(b"d", b"1")))
        .unwrap();
    assert_eq!(store.session_count(), 3);
    assert_eq!(store.session_last_seq(2), None);
    assert_eq!(store.session_last_seq(1), Some(1));
    assert_eq!(
        store.apply(6, 6, &with_session(2, 2, put(b"b", b"2"))),
        Err(KvError::Session(SessionError::Expired {
            client_id: 2,
            seq: 2
        }))
    );
    assert_eq!(store.get(b"b").unwrap().value, b"1".to_vec());
}

// Past session_cache_bytes_max the oldest sessions go until the cached bytes fit again.
#[test]
fn session_eviction_by_cached_bytes() {
    let limits = Limits {
        session_cache_bytes_max: 150,
        sessions_max: 100,
        ..small_limits()
    };
    let mut store = Store::new(limits).unwrap();
    store.apply(1, 1, &plain(put(b"k", &[b'v'; 16]))).unwrap();
    // Each cached Put answer with a previous key-value (1 + 1 + 8 + 1 + 1 + 57 = 69
    // bytes) is large; three of them exceed 150 bytes.
    store
        .apply(2, 2, &with_session(1, 1, put_prev(b"k", &[b'v'; 16])))
        .unwrap();
    store
        .apply(3, 3, &with_session(2, 1, put_prev(b"k", &[b'v'; 16])))
        .unwrap();
    assert_eq!(store.session_count(), 2);
    store
        .apply(4, 4, &with_session(3, 1, put_prev(b"k", &[b'v'; 16])))
        .unwrap();
    assert_eq!(store.session_count(), 2);
    assert_eq!(store.session_last_seq(1), None);
    // Read-only sessions cache nothing and cost no bytes.
    for client_id in 10..20 {
        store
            .apply(
                client_id,
                client_id,
                &with_session(client_id, 1, Op::Range(RangeRequest::get(b"k"))),
            )
            .unwrap();
    }
    assert_eq!(store.session_count(), 12);
}

// Sessions, cached answers and their eviction order survive a snapshot and restore.
#[test]
fn sessions_survive_snapshots() {
    let mut store = Store::new(small_limits()).unwrap();
    store
        .apply(1, 1, &with_session(1, 1, append(b"a", b"x")))
        .unwrap();
    store
        .apply(2, 2, &with_session(2, 1, append(b"b", b"x")))
        .unwrap();
    let cached = store
        .apply(3, 3, &with_session(1, 2, append(b"a", b"y")))
        .unwrap();
    let mut restored = Store::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    assert_eq!(
        restored
            .apply(4, 4, &with_session(1, 2, append(b"a", b"y")))
            .unwrap(),
        cached
    );
    assert_eq!(restored.get(b"a").unwrap().value, b"xy".to_vec());
    assert_eq!(
        restored.apply(5, 5, &with_session(1, 1, append(b"a", b"x"))),
        Err(KvError::Session(SessionError::Stale {
            client_id: 1,
            seq: 1,
            last_seq: 2
        }))
    );
    // Client 2 is now the oldest and is the one evicted by two new clients.
    restored
        .apply(6, 6, &with_session(3, 1, append(b"c", b"x")))
        .unwrap();
    restored
        .apply(7, 7, &with_session(4, 1, append(b"d", b"x")))
        .unwrap();
    assert_eq!(restored.session_last_seq(2), None);
    assert_eq!(restored.session_last_seq(1), Some(2));
}

// A snapshot restores to an equal store that snapshots to the same bytes.
#[test]
fn snapshot_round_trip_is_byte_identical() {
    let mut store = store_with_keys();
    store
        .apply(6, 6, &with_session(8, 1, put_prev(b"a", b"w")))
        .unwrap();
    store
        .apply(
            7,
            7,
            &with_session(9, 1, Op::Range(RangeRequest::get(b"a"))),
        )
        .unwrap();
    store.apply_noop(8);
    let bytes = store.snapshot();
    let restored = Store::restore(&bytes).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.snapshot(), bytes);
    let empty = Store::default();
    assert_eq!(
        empty.snapshot().len(),
        236,
        "the smallest snapshot, as documented"
    );
    assert_eq!(Store::restore(&empty.snapshot()).unwrap(), empty);
}

// A snapshot has the documented layout: header fields at their offsets, records, crc.
#[test]
fn snapshot_matches_the_documented_layout() {
    let mut store = Store::default();
    store
        .apply(5, 5, &with_session(7, 1, put(b"k", b"v")))
        .unwrap();
    let bytes = store.snapshot();
    let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    assert_eq!(&bytes[..4], b"CKVS");
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    assert_eq!(u64_at(8), 5, "applied index");
    assert_eq!((u64_at(16), u64_at(24), u64_at(32)), (5, 5, 0), "revisions");
    assert_eq!(u64_at(40), 4096);
    assert_eq!(u64_at(48), 1024 * 1024);
    assert_eq!(u64_at(56), 128);
    assert_eq!(u64_at(80), 100_000);
    assert_eq!(u64_at(96), 32 * 1024 * 1024, "history bytes max");
    assert_eq!(u64_at(104), 1, "key count");
    // The key record: "k", "v", create 5, mod 5, version 1, lease 0.
    assert_eq!(&bytes[112..122], &[1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
    assert_eq!(
        (u64_at(122), u64_at(130), u64_at(138), u64_at(146)),
        (5, 5, 1, 0)
    );
    assert_eq!(u64_at(154), 0, "history key count");
    assert_eq!(u64_at(162), 1, "session count");
    assert_eq!((u64_at(170), u64_at(178), u64_at(186)), (7, 1, 5));
    assert_eq!(bytes[194], 1, "a stored outcome");
    let outcome_bytes = u32::from_le_bytes(bytes[195..199].try_into().unwrap()) as usize;
    let outcome = decode_outcome(&bytes[199..199 + outcome_bytes]).unwrap();
    assert_eq!(
        outcome,
        Ok(Response {
            revision: 5,
            op: OpResponse::Put(PutResponse::default())
        })
    );
    // The lease section: eight lease limits, then empty tables.
    let leases = 199 + outcome_bytes;
    assert_eq!(u64_at(leases), 1_000_000, "leases max");
    let tables = leases + 8 * 8;
    assert_eq!(
        (0..5).map(|k| u64_at(tables + 8 * k)).collect::<Vec<_>>(),
        [0, 0, 0, 0, 0],
        "leases, last position, revocations, watermark, tombstones"
    );
    let crc_offset = tables + 5 * 8;
    assert_eq!(bytes.len(), crc_offset + 4);
    let crc = u32::from_le_bytes(bytes[crc_offset..].try_into().unwrap());
    assert_eq!(crc, crc32fast::hash(&bytes[..crc_offset]));
}

/// Rewrites the trailing crc so a test can reach the checks behind it.
fn reseal(bytes: &mut [u8]) {
    let body_bytes = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body_bytes]);
    bytes[body_bytes..].copy_from_slice(&crc.to_le_bytes());
}

// Damaged snapshots are refused with the reason: size, magic, version, crc, trailing bytes.
#[test]
fn damaged_snapshots_are_refused() {
    let bytes = store_with_keys().snapshot();
    assert!(matches!(
        Store::restore(&bytes[..10]),
        Err(SnapshotError::TooShort { .. })
    ));

    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(Store::restore(&magic), Err(SnapshotError::BadMagic));

    let mut version = bytes.clone();
    version[4] = 1;
    assert_eq!(
        Store::restore(&version),
        Err(SnapshotError::UnsupportedVersion { version: 1 })
    );

    let mut flipped = bytes.clone();
    flipped[40] ^= 1;
    assert!(matches!(
        Store::restore(&flipped),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));

    let mut padded = bytes[..bytes.len() - 4].to_vec();
    padded.extend_from_slice(&[0; 5]);
    reseal(&mut padded);
    assert!(matches!(
        Store::restore(&padded),
        Err(SnapshotError::Decode(DecodeError::TrailingBytes { .. }))
    ));
}

// A well-sealed snapshot whose state breaks an invariant is refused, not trusted.
#[test]
fn inconsistent_snapshots_are_refused() {
    // Header: magic 4, version 4, applied index 8, three revisions 24, limits 64, key
    // count 8.
    let first_key_offset = 4 + 4 + 8 + 24 + 64 + 8;
    let mut store = Store::default();
    store.apply(1, 1, &plain(put(b"a", b"1"))).unwrap();
    store.apply(2, 2, &plain(put(b"b", b"1"))).unwrap();

    // The second key renamed to the first: keys no longer strictly increase.
    let mut duplicate = store.snapshot();
    let second_key_offset = first_key_offset + 4 + 1 + 4 + 1 + 32;
    duplicate[second_key_offset + 4] = b'a';
    reseal(&mut duplicate);
    assert!(matches!(
        Store::restore(&duplicate),
        Err(SnapshotError::Invalid { .. })
    ));

    // A mod revision past the store's revision.
    let mut future = store.snapshot();
    let mod_revision_offset = first_key_offset + 4 + 1 + 4 + 1 + 8;
    future[mod_revision_offset] = 9;
    reseal(&mut future);
    assert!(matches!(
        Store::restore(&future),
        Err(SnapshotError::Invalid { .. })
    ));

    // Limits that do not check out.
    let mut limits = store.snapshot();
    limits[40..48].copy_from_slice(&0u64.to_le_bytes());
    reseal(&mut limits);
    assert!(matches!(
        Store::restore(&limits),
        Err(SnapshotError::Limits(_))
    ));

    // A key count far beyond the bytes present.
    let mut count = store.snapshot();
    count[first_key_offset - 8..first_key_offset].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut count);
    assert!(matches!(
        Store::restore(&count),
        Err(SnapshotError::Decode(
            DecodeError::LengthExceedsInput { .. }
        ))
    ));
}

/// The values of `[key, range_end)` at `revision`, in key order, as (key, value) text.
fn values_at(store: &Store, key: &[u8], range_end: &[u8], revision: u64) -> Vec<(String, String)> {
    let read = store
        .read_at(&Op::Range(range(key, range_end)), revision)
        .unwrap_or_else(|error| panic!("read at {revision}: {error}"));
    assert_eq!(read.revision, revision);
    range_response(Ok(read))
        .kvs
        .into_iter()
        .map(|pair| {
            (
                String::from_utf8(pair.key).unwrap(),
                String::from_utf8(pair.value).unwrap(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

// Reads at a revision see the keyspace exactly as it was: puts, appends, deletes,
// re-creations and a transaction's final state, keys deleted since included.
#[test]
fn reads_at_a_revision_see_the_past() {
    let mut store = Store::default();
    store.apply(1, 10, &plain(put(b"a", b"1"))).unwrap();
    store.apply(2, 20, &plain(put(b"b", b"1"))).unwrap();
    store.apply(3, 30, &plain(append(b"a", b"2"))).unwrap();
    store
        .apply(4, 40, &plain(delete(b"b", b"", false)))
        .unwrap();
    let txn = TxnRequest {
        compares: vec![],
        success: vec![
            TxnOp::Put(PutRequest {
                key: b"c".to_vec(),
                value: b"x".to_vec(),
                ..PutRequest::default()
            }),
            TxnOp::Put(PutRequest {
                key: b"c".to_vec(),
                value: b"y".to_vec(),
                ..PutRequest::default()
            }),
        ],
        failure: vec![],
    };
    store.apply(5, 50, &plain(Op::Txn(txn))).unwrap();
    store.apply(6, 60, &plain(put(b"b", b"2"))).unwrap();
    store.apply_close(7, 70);
    let all = |revision| values_at(&store, b"a", RANGE_END_UNBOUNDED, revision);
    assert_eq!(all(9), pairs(&[]));
    assert_eq!(all(10), pairs(&[("a", "1")]));
    assert_eq!(all(25), pairs(&[("a", "1"), ("b", "1")]));
    assert_eq!(all(30), pairs(&[("a", "12"), ("b", "1")]));
    assert_eq!(all(45), pairs(&[("a", "12")]));
    assert_eq!(all(50), pairs(&[("a", "12"), ("c", "y")]));
    assert_eq!(all(70), pairs(&[("a", "12"), ("b", "2"), ("c", "y")]));
    let b_again = store
        .read_at(&Op::Range(RangeRequest::get(b"b")), 60)
        .unwrap();
    let found = range_response(Ok(b_again)).kvs;
    assert_eq!(
        (
            found[0].create_revision,
            found[0].mod_revision,
            found[0].version
        ),
        (60, 60, 1),
        "a key created again starts a new life"
    );
    assert_eq!(
        store.read_at(&Op::Range(RangeRequest::get(b"a")), 71),
        Err(KvError::FutureRevision {
            revision: 71,
            closed_revision: 70
        })
    );
}

// A compaction keeps exactly what reads at or after it need, refuses reads before it,
// and frees the history it no longer needs; the history bound compacts on its own.
#[test]
fn compaction_keeps_what_later_reads_need() {
    let mut store = Store::default();
    store.apply(1, 10, &plain(put(b"a", b"1"))).unwrap();
    store.apply(2, 20, &plain(put(b"a", b"2"))).unwrap();
    store.apply(3, 30, &plain(put(b"b", b"1"))).unwrap();
    store
        .apply(4, 40, &plain(delete(b"b", b"", false)))
        .unwrap();
    store.apply(5, 50, &plain(put(b"a", b"3"))).unwrap();
    let before = store.history_bytes();
    store.apply_compact(6, 35);
    assert_eq!(store.compact_revision(), 35);
    assert!(store.history_bytes() < before);
    assert_eq!(
        store.read_at(&Op::Range(RangeRequest::get(b"a")), 34),
        Err(KvError::Compacted {
            revision: 34,
            compact_revision: 35
        })
    );
    let all = |store: &Store, revision| values_at(store, b"a", RANGE_END_UNBOUNDED, revision);
    assert_eq!(all(&store, 35), pairs(&[("a", "2"), ("b", "1")]));
    assert_eq!(all(&store, 45), pairs(&[("a", "2")]));
    assert_eq!(all(&store, 50), pairs(&[("a", "3")]));
    // The snapshot keeps the history and the compaction point.
    let restored = Store::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    assert_eq!(all(&restored, 35), pairs(&[("a", "2"), ("b", "1")]));
    store.apply_compact(7, 50);
    assert_eq!(store.history_versions(), 0);
    assert_eq!(store.history_bytes(), 0);

    let mut bounded = Store::new(Limits {
        history_bytes_max: 1_000,
        ..Limits::default()
    })
    .unwrap();
    for index in 1..=100 {
        bounded
            .apply(index, index * 10, &plain(put(b"k", &[b'v'; 40])))
            .unwrap();
    }
    assert!(
        bounded.history_bytes() <= 1_000,
        "{}",
        bounded.history_bytes()
    );
    assert!(bounded.compact_revision() > 0);
    assert_eq!(
        values_at(&bounded, b"k", b"", 1_000),
        pairs(&[("k", &"v".repeat(40))])
    );
}
