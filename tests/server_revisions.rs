//! Store-wide revisions on real `corekv server` processes: a paged list of 10,000 keys
//! over every group under concurrent writes is one consistent snapshot; reads at a past
//! revision see it; a compacted revision is refused; history and the compaction point
//! survive a restart of the whole cluster; a client's writes are stamped above what it
//! has seen.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::TestCluster;
use corekv::client::{Client, ClientError, CompareAndPut, ErrorCode, RangeRequest};
use corekv::kv::{self, OpResponse};

const GROUPS: u64 = 8;
const SHARDS: u32 = 2;
/// Keys the list reads.
const LIST_KEYS: usize = 10_000;
/// Operations one thread keeps in flight while filling.
const FILL_IN_FLIGHT: usize = 128;
/// Keys each page of the list asks for.
const PAGE_KEYS: u64 = 700;

/// Writes `value` at `key` and returns the write's revision.
fn put(
    client: &Client,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<u64, ClientError> {
    let op = kv::Op::Put(kv::PutRequest {
        key: key.as_ref().to_vec(),
        value: value.as_ref().to_vec(),
        ..kv::PutRequest::default()
    });
    Ok(client.execute(op, false)?.revision)
}

fn key_of(index: usize) -> Vec<u8> {
    format!("list/{index:05}").into_bytes()
}

/// Writes `value` to every key with many puts in flight; returns each key's revision.
fn fill(client: &Client, value: &[u8]) -> Vec<u64> {
    let mut revisions = vec![0; LIST_KEYS];
    for chunk_start in (0..LIST_KEYS).step_by(FILL_IN_FLIGHT) {
        let chunk_end = (chunk_start + FILL_IN_FLIGHT).min(LIST_KEYS);
        let pendings: Vec<_> = (chunk_start..chunk_end)
            .map(|index| {
                let op = kv::Op::Put(kv::PutRequest {
                    key: key_of(index),
                    value: value.to_vec(),
                    ..kv::PutRequest::default()
                });
                client.start(op, false).expect("a session")
            })
            .collect();
        for (index, pending) in (chunk_start..chunk_end).zip(pendings) {
            revisions[index] = pending.wait().expect("fill put").revision;
        }
    }
    revisions
}

/// Asserts that `error` is the server's rejection with `expected`.
fn assert_rejected(error: &ClientError, expected: ErrorCode) {
    assert!(
        matches!(error, ClientError::Rejected { code, .. } if *code == expected),
        "expected a {expected:?} rejection, got {error}"
    );
}

/// Acknowledged writes by key index: (revision, value), in acknowledgement order.
type Acknowledged = BTreeMap<usize, Vec<(u64, Vec<u8>)>>;

// A paged list of 10,000 keys over every group, taken while writers keep overwriting
// them, is exactly the state at its one revision: every key holds the value of its last
// acknowledged write at or before that revision, and none of a later one.
#[test]
fn a_paged_list_under_writes_is_one_snapshot() {
    let cluster = TestCluster::start("revisions-list", 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    let filled = fill(&client, b"fill");
    let written: Arc<Mutex<Acknowledged>> = Arc::default();
    {
        let mut written = written.lock().unwrap();
        for (index, &revision) in filled.iter().enumerate() {
            written.insert(index, vec![(revision, b"fill".to_vec())]);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let client = cluster.client();
            let written = Arc::clone(&written);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let index = (round * 7_919 + writer * 3_331) % LIST_KEYS;
                    let value = format!("w{writer}.{round}").into_bytes();
                    round += 1;
                    match put(&client, key_of(index), &value) {
                        Ok(revision) => written
                            .lock()
                            .unwrap()
                            .entry(index)
                            .or_default()
                            .push((revision, value)),
                        // Not applied: nothing to record. An unknown outcome leaves the
                        // key's expected value open, so the key is left out.
                        Err(ClientError::OutcomeUnknown { .. }) => written
                            .lock()
                            .unwrap()
                            .entry(index)
                            .or_default()
                            .push((u64::MAX, value)),
                        Err(_) => {}
                    }
                }
                round
            })
        })
        .collect();
    // Let the writers run before the list starts, and keep them running through it.
    common::wait_for("writes under way", || {
        let written = written.lock().unwrap();
        (written.values().map(Vec::len).sum::<usize>() > LIST_KEYS + 200).then_some(())
    });
    let request = RangeRequest::prefix(b"list/");
    let mut listed: Vec<kv::KeyValue> = Vec::new();
    let mut revision = 0;
    let mut pages = 0;
    for page in client.list(request, PAGE_KEYS) {
        let page = page.expect("a page");
        if revision == 0 {
            revision = page.revision;
        }
        assert_eq!(
            page.revision, revision,
            "every page at the first page's revision"
        );
        listed.extend(page.kvs);
        pages += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: usize = writers
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .sum();
    assert!(rounds > 0);
    assert!(pages >= LIST_KEYS as u64 / PAGE_KEYS, "{pages} pages");
    assert_eq!(listed.len(), LIST_KEYS, "every key, once");
    let written = written.lock().unwrap();
    let mut checked = 0;
    let mut newer_than_list = 0;
    for (index, pair) in listed.iter().enumerate() {
        assert_eq!(pair.key, key_of(index), "in key order");
        let writes = &written[&index];
        if writes.iter().any(|&(at, _)| at == u64::MAX) {
            continue;
        }
        newer_than_list += writes.iter().filter(|&&(at, _)| at > revision).count();
        let expected = writes
            .iter()
            .filter(|&&(at, _)| at <= revision)
            .max_by_key(|&&(at, _)| at)
            .expect("the fill is older than the list");
        assert_eq!(
            (pair.mod_revision, &pair.value),
            (expected.0, &expected.1),
            "key {index} at revision {revision}"
        );
        checked += 1;
    }
    assert!(checked > LIST_KEYS * 9 / 10, "{checked} keys checked");
    assert!(newer_than_list > 0, "writes went on during the list");
    // Read again at the list's revision later: the same snapshot.
    let again: Vec<kv::KeyValue> = client
        .list(
            RangeRequest {
                revision,
                ..RangeRequest::prefix(b"list/")
            },
            2_000,
        )
        .flat_map(|page| page.expect("a page").kvs)
        .collect();
    assert_eq!(again, listed);
}

// History at a revision survives a restart of every node, as does the compaction point:
// below it reads are refused with Compacted and the oldest revision kept.
#[test]
fn history_and_compaction_survive_a_restart() {
    let mut cluster = TestCluster::start("revisions-restart", 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    let first = put(&client, "h/a", "1").expect("put");
    let second = put(&client, "h/a", "2").expect("put");
    put(&client, "h/b", "1").expect("put");
    let third = put(&client, "h/a", "3").expect("put");
    assert!(first < second && second < third);
    // Causality: a client's writes come after everything it has seen.
    assert!(client.seen_revision() >= third);
    let value_at = |client: &Client, revision| {
        client
            .get_at("h/a", revision)
            .map(|found| found.map(|pair| pair.value))
    };
    assert_eq!(value_at(&client, second).unwrap(), Some(b"2".to_vec()));
    assert_eq!(value_at(&client, first - 1).unwrap(), None);
    let compacted = client.compact(second).expect("compact");
    assert!(compacted <= second && compacted > first, "{compacted}");
    assert_rejected(&value_at(&client, first).unwrap_err(), ErrorCode::Compacted);
    drop(client);
    for (id, status) in cluster.terminate_all() {
        assert!(status.success(), "node {id} stopped cleanly");
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_leaders();
    let client = cluster.client();
    assert_eq!(value_at(&client, second).unwrap(), Some(b"2".to_vec()));
    assert_eq!(value_at(&client, third).unwrap(), Some(b"3".to_vec()));
    assert_rejected(&value_at(&client, first).unwrap_err(), ErrorCode::Compacted);
    // The optimistic update: a stale mod revision conflicts and shows the current pair.
    match client.compare_and_put("h/a", second, "4").expect("txn") {
        CompareAndPut::Conflict { current } => {
            assert_eq!(current.map(|pair| pair.mod_revision), Some(third))
        }
        other => panic!("a conflict, got {other:?}"),
    }
    match client.compare_and_put("h/a", third, "4").expect("txn") {
        CompareAndPut::Written { revision } => assert!(revision > third),
        other => panic!("a write, got {other:?}"),
    }
    let response = client
        .execute(
            kv::Op::Range(RangeRequest {
                revision: u64::MAX,
                ..RangeRequest::get(b"h/a")
            }),
            false,
        )
        .unwrap_err();
    assert_rejected(&response, ErrorCode::FutureRevision);
    let OpResponse::Range(now) = client
        .execute(kv::Op::Range(RangeRequest::get(b"h/a")), false)
        .expect("get")
        .op
    else {
        panic!("a range");
    };
    assert_eq!(now.kvs[0].value, b"4".to_vec());
}

/// Runs the `corekv` CLI against `endpoints` and returns its exit code and stdout.
fn corekv(endpoints: &[String], arguments: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(arguments)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .output()
        .expect("run corekv");
    (
        output.status.code().expect("an exit code"),
        String::from_utf8(output.stdout).expect("utf-8"),
    )
}

// The CLI reads at a revision, prints etcdctl's JSON shape with the revision it read at,
// and compacts: a read below the compaction point then fails with the rejection's code.
#[test]
fn the_cli_reads_at_a_revision_and_compacts() {
    let cluster = TestCluster::start("revisions-cli", 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    let endpoints = cluster.endpoints();
    let client = cluster.client();
    let first = put(&client, "c/a", "one").expect("put");
    let second = put(&client, "c/a", "two").expect("put");
    let first_text = first.to_string();
    let (code, out) = corekv(&endpoints, &["get", "c/a", "--rev", &first_text]);
    assert_eq!((code, out.as_str()), (0, "one\n"));
    let (code, out) = corekv(
        &endpoints,
        &["get", "c/a", "--rev", &first_text, "--write-out", "json"],
    );
    assert_eq!(code, 0);
    // "c/a" and "one" in base64; the header names the revision asked for.
    assert!(
        out.contains(&format!("\"revision\":{first}}}")) && out.contains("\"key\":\"Yy9h\""),
        "{out}"
    );
    assert!(out.contains("\"value\":\"b25l\""), "{out}");
    assert!(out.contains(&format!("\"mod_revision\":{first},")), "{out}");
    let (code, out) = corekv(&endpoints, &["scan", "c/", "--rev", &first_text]);
    assert_eq!((code, out.as_str()), (0, "c/a\tone\n"));
    let (code, out) = corekv(&endpoints, &["compact", &second.to_string()]);
    assert_eq!(code, 0, "{out}");
    let compacted: u64 = out.trim().parse().expect("a revision");
    assert!(compacted > first && compacted <= second, "{compacted}");
    let (code, _) = corekv(&endpoints, &["get", "c/a", "--rev", &first_text]);
    assert_eq!(code, 3, "a read below the compaction point is refused");
    let (code, out) = corekv(&endpoints, &["get", "c/a"]);
    assert_eq!((code, out.as_str()), (0, "two\n"));
}
