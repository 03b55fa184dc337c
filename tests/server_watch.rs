//! Watches on real `corekv server` processes: the events of a prefix over every group and
//! of one key under concurrent writes are exactly the committed history, in revision
//! order, once each; a watch resumed after its serving node is killed loses and repeats
//! nothing; a compacted start revision is refused with the compaction revision; a Txn's
//! events arrive in one response; a watcher that does not read is cancelled with the
//! revision to resume from.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{raw_connect, read_frame, wait_for, TestCluster, WAIT_MAX};
use corekv::api::{self, ApiRequest, ApiResult, RequestKind};
use corekv::client::{
    Client, ClientError, EventKind, WatchCreate, WatchError, WatchEvent, WatchItem, WatchStream,
};
use corekv::frame;
use corekv::keyspace::group_of;
use corekv::kv::{self, OpResponse};

const GROUPS: u64 = 8;
const SHARDS: u32 = 2;
const WRITERS: usize = 4;
const WRITES_PER_WRITER: usize = 150;

/// One committed change as the writer saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Written {
    revision: u64,
    key: Vec<u8>,
    /// `None` for a delete.
    value: Option<Vec<u8>>,
}

fn written_of(event: &WatchEvent) -> Written {
    Written {
        revision: event.revision(),
        key: event.kv.key.clone(),
        value: match event.kind {
            EventKind::Put => Some(event.kv.value.clone()),
            EventKind::Delete => None,
        },
    }
}

/// Puts (or, every fifth write, deletes) keys under `w/`; returns what surely committed
/// and what may have (an outcome left unknown).
fn write_concurrently(
    client: &Client,
    writers: usize,
    per_writer: usize,
) -> (Vec<Written>, Vec<Written>) {
    let committed = Mutex::new(Vec::new());
    let maybe = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let (committed, maybe) = (&committed, &maybe);
            scope.spawn(move || {
                for index in 0..per_writer {
                    let key = format!("w/{writer}/{}", index % 17).into_bytes();
                    let value = format!("{writer}-{index}").into_bytes();
                    let delete = index % 5 == 4;
                    let op = if delete {
                        kv::Op::Delete(kv::DeleteRequest {
                            key: key.clone(),
                            ..kv::DeleteRequest::default()
                        })
                    } else {
                        kv::Op::Put(kv::PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            ..kv::PutRequest::default()
                        })
                    };
                    match client.execute(op, false) {
                        Ok(response) => {
                            let changed = match &response.op {
                                OpResponse::Delete(deleted) => deleted.deleted > 0,
                                _ => true,
                            };
                            if changed {
                                committed.lock().unwrap().push(Written {
                                    revision: response.revision,
                                    key,
                                    value: (!delete).then_some(value),
                                });
                            }
                        }
                        Err(ClientError::OutcomeUnknown { .. } | ClientError::Timeout { .. }) => {
                            maybe.lock().unwrap().push(Written {
                                revision: 0,
                                key,
                                value: (!delete).then_some(value),
                            });
                        }
                        Err(error) => panic!("write {writer}/{index}: {error}"),
                    }
                }
            });
        }
    });
    (committed.into_inner().unwrap(), maybe.into_inner().unwrap())
}

/// Every event of `stream` until it has delivered everything through `revision`,
/// checking the order as they come.
fn collect_through(stream: &mut WatchStream, revision: u64) -> Vec<WatchEvent> {
    let deadline = Instant::now() + WAIT_MAX;
    let mut events: Vec<WatchEvent> = Vec::new();
    while stream.next_revision() <= revision {
        assert!(
            Instant::now() < deadline,
            "the watch delivered only up to {} of {revision}",
            stream.next_revision()
        );
        match stream.next(Duration::from_secs(1)) {
            Ok(Some(WatchItem::Events {
                revision: through,
                events: batch,
            })) => {
                for event in &batch {
                    assert!(
                        event.revision() <= through,
                        "an event past its response's revision"
                    );
                    if let Some(last) = events.last() {
                        assert!(
                            last.revision() <= event.revision(),
                            "revision {} after {}",
                            event.revision(),
                            last.revision()
                        );
                    }
                }
                events.extend(batch);
            }
            Ok(Some(WatchItem::Progress { .. }) | None) => {}
            Err(error) => panic!("the watch ended: {error}"),
        }
    }
    events
}

/// Checks that `events` are exactly the `committed` changes of the keys `watched` says,
/// plus possibly some of `maybe`, each once.
fn assert_events_are_history(
    events: &[WatchEvent],
    committed: &[Written],
    maybe: &[Written],
    watched: impl Fn(&[u8]) -> bool,
) {
    let seen: Vec<Written> = events.iter().map(written_of).collect();
    let unique: BTreeSet<&Written> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    let expected: BTreeSet<&Written> = committed.iter().filter(|w| watched(&w.key)).collect();
    let missing: Vec<_> = expected.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "committed changes never delivered: {missing:?}"
    );
    let maybe: BTreeSet<(&[u8], Option<&[u8]>)> = maybe
        .iter()
        .map(|w| (w.key.as_slice(), w.value.as_deref()))
        .collect();
    for extra in unique.difference(&expected) {
        // A delete's outcome may be unknown too; a put is known by its unique value.
        assert!(
            maybe.contains(&(extra.key.as_slice(), extra.value.as_deref())),
            "an event of no write: {extra:?}"
        );
    }
}

/// Writes `value` at `key` and returns the write's revision.
fn put(client: &Client, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> u64 {
    let op = kv::Op::Put(kv::PutRequest {
        key: key.as_ref().to_vec(),
        value: value.as_ref().to_vec(),
        ..kv::PutRequest::default()
    });
    client.execute(op, false).expect("put").revision
}

fn start(name: &str) -> TestCluster {
    let cluster = TestCluster::start(name, 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    cluster
}

// A prefix watch over every group and a one-key watch, under writes from four threads,
// deliver exactly the committed changes of their keys, in revision order, once each.
#[test]
fn events_under_concurrent_writes_equal_the_history() {
    let cluster = start("watch-history");
    let client = cluster.client();
    let mut prefix = client
        .watch(WatchCreate::prefix("w/"))
        .expect("prefix watch");
    let mut one = client.watch(WatchCreate::key("w/1/3")).expect("key watch");
    let (committed, maybe) = write_concurrently(&client, WRITERS, WRITES_PER_WRITER);
    assert!(
        maybe.is_empty(),
        "no faults, yet outcomes unknown: {maybe:?}"
    );
    let last = committed.iter().map(|w| w.revision).max().unwrap();
    let events = collect_through(&mut prefix, last);
    assert_events_are_history(&events, &committed, &[], |key| key.starts_with(b"w/"));
    let events = collect_through(&mut one, last);
    assert!(!events.is_empty());
    assert_events_are_history(&events, &committed, &[], |key| key == b"w/1/3");
}

// A watch served by node 1, which is killed in the middle of the writes, resumes on
// another node from its last revision: nothing is lost, nothing repeated.
#[test]
fn resume_after_killing_the_serving_node_loses_nothing() {
    let mut cluster = start("watch-resume");
    let client = cluster.client();
    let addresses = vec![
        cluster.endpoint(1),
        cluster.endpoint(2),
        cluster.endpoint(3),
    ];
    let mut stream = WatchStream::open(
        addresses,
        WatchCreate::prefix("w/"),
        0,
        Duration::from_secs(2),
    )
    .expect("watch");
    assert_eq!(stream.serving_address(), cluster.endpoint(1));
    let (mut committed, mut maybe) = write_concurrently(&client, WRITERS, WRITES_PER_WRITER / 3);
    let before = committed.iter().map(|w| w.revision).max().unwrap();
    // Some events are delivered by node 1 before it dies.
    let mut events = collect_through(&mut stream, before / 2 + before / 4);
    cluster.kill9(1);
    let survivors = Client::connect(
        &[cluster.endpoint(2), cluster.endpoint(3)],
        common::client_options(),
    )
    .expect("client of the survivors");
    let (after, after_maybe) = write_concurrently(&survivors, WRITERS, WRITES_PER_WRITER / 3);
    committed.extend(after);
    maybe.extend(after_maybe);
    let last = committed.iter().map(|w| w.revision).max().unwrap();
    let next = stream.next_revision();
    events.extend(collect_through(&mut stream, last));
    assert!(events.iter().all(|event| event.revision() > 0));
    assert!(
        stream.openings() >= 2,
        "the watch never moved off node 1 (next {next})"
    );
    assert_ne!(stream.serving_address(), cluster.endpoint(1));
    assert_events_are_history(&events, &committed, &maybe, |key| key.starts_with(b"w/"));
}

// A watch that starts at or below the compaction revision is refused with it; one that
// starts just after it gets every change from there.
#[test]
fn a_compacted_start_revision_gets_the_error() {
    let cluster = start("watch-compacted");
    let client = cluster.client();
    let mut revisions = Vec::new();
    for index in 0..5 {
        revisions.push(put(&client, "c/k", format!("v{index}")));
    }
    let compacted = client.compact(revisions[3]).expect("compact");
    assert!(compacted >= revisions[3], "compacted to {compacted}");
    let create = |start| WatchCreate {
        start_revision: start,
        ..WatchCreate::key("c/k")
    };
    let refused = client.watch(create(revisions[1])).and_then(|mut stream| {
        stream
            .next(Duration::from_secs(5))
            .map(|item| (stream.next_revision(), item))
    });
    match refused {
        Err(WatchError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, revisions[3]),
        other => panic!("a compacted start was served: {other:?}"),
    }
    let mut stream = client
        .watch(create(revisions[3] + 1))
        .expect("watch after the compaction");
    let events = collect_through(&mut stream, revisions[4]);
    let seen: Vec<u64> = events.iter().map(WatchEvent::revision).collect();
    assert_eq!(seen, vec![revisions[4]]);
    assert_eq!(events[0].kv.value, b"v4");
}

// Every change of one Txn arrives in one response, at the Txn's revision.
#[test]
fn a_txns_events_arrive_together() {
    let cluster = start("watch-txn");
    let client = cluster.client();
    // Three keys of one group, as a Txn must have.
    let group = group_of(b"t/0", GROUPS);
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|index| format!("t/{index}").into_bytes())
        .filter(|key| group_of(key, GROUPS) == group)
        .take(3)
        .collect();
    let mut stream = client
        .watch(WatchCreate {
            prev_kv: true,
            ..WatchCreate::prefix("t/")
        })
        .expect("watch");
    put(&client, &keys[0], "before");
    let txn = kv::TxnRequest {
        compares: vec![],
        success: keys
            .iter()
            .map(|key| {
                kv::TxnOp::Put(kv::PutRequest {
                    key: key.clone(),
                    value: b"txn".to_vec(),
                    ..kv::PutRequest::default()
                })
            })
            .collect(),
        failure: vec![],
    };
    let response = client.execute(kv::Op::Txn(txn), false).expect("txn");
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        assert!(Instant::now() < deadline, "no events of the txn");
        match stream.next(Duration::from_secs(1)).expect("watch") {
            Some(WatchItem::Events { events, .. })
                if events.iter().any(|e| e.revision() == response.revision) =>
            {
                // The put before may share the response; the Txn's events are all here.
                let events: Vec<WatchEvent> = events
                    .into_iter()
                    .filter(|e| e.revision() == response.revision)
                    .collect();
                let keys_seen: Vec<&[u8]> = events.iter().map(|e| e.kv.key.as_slice()).collect();
                let mut sorted = keys.iter().map(Vec::as_slice).collect::<Vec<_>>();
                sorted.sort();
                assert_eq!(keys_seen, sorted, "the txn's events in one response");
                assert!(events.iter().all(|e| e.revision() == response.revision));
                let previous = events.iter().find(|e| e.kv.key == keys[0]).unwrap();
                assert_eq!(previous.prev_kv.as_ref().unwrap().value, b"before");
                break;
            }
            _ => {}
        }
    }
}

// A watcher whose client stops reading is cancelled, with the reason and the revision
// through which it got everything, instead of the node buffering without end.
#[test]
fn a_slow_watcher_is_cancelled() {
    let cluster = start("watch-slow");
    let client = cluster.client();
    let endpoint = cluster.endpoint(1);
    let mut stream = raw_connect(&endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = ApiRequest {
        request_id: 5,
        kind: RequestKind::WatchCreate {
            create: WatchCreate::prefix("s/"),
            seen_revision: 0,
        },
    };
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, &api::request_to_bytes(&request)).unwrap();
    stream.write_all(&bytes).unwrap();
    // 48 MiB of changes, far more than the socket buffers and the backlog bound hold.
    let value = vec![b'x'; 512 << 10];
    let mut revisions = Vec::new();
    for index in 0..96 {
        revisions.push(put(&client, format!("s/{}", index % 8), &value));
    }
    // Reads nothing until the node has given up on it.
    let cancelled_by = Instant::now() + WAIT_MAX;
    let mut delivered = BTreeMap::new();
    let mut ended = None;
    std::thread::sleep(Duration::from_secs(4));
    while Instant::now() < cancelled_by && ended.is_none() {
        let Some(payload) = read_frame(&mut stream).expect("read") else {
            break;
        };
        let response = api::decode_response(&payload).expect("decode");
        let Ok(ApiResult::Watch(watch)) = response.result else {
            panic!("{response:?}");
        };
        for event in &watch.events {
            delivered.insert(event.revision(), event.kv.key.clone());
        }
        if watch.canceled {
            ended = Some(watch);
        }
    }
    let ended = ended.expect("the slow watcher was never cancelled");
    assert_eq!(ended.cancel_reason, "the watcher fell behind its buffer");
    let resume = ended.revision;
    assert!(
        resume < *revisions.last().unwrap(),
        "it got everything: not slow"
    );
    for revision in revisions.iter().filter(|&&r| r <= resume) {
        assert!(
            delivered.contains_key(revision),
            "revision {revision} lost before the cancel"
        );
    }
    assert!(delivered.keys().all(|&r| r <= resume));
    // The node still serves, and a watch resumed from the revision gets the rest.
    let mut resumed = client
        .watch(WatchCreate {
            start_revision: resume + 1,
            ..WatchCreate::prefix("s/")
        })
        .expect("resume");
    let rest = collect_through(&mut resumed, *revisions.last().unwrap());
    let rest: Vec<u64> = rest.iter().map(WatchEvent::revision).collect();
    let expected: Vec<u64> = revisions.iter().copied().filter(|&r| r > resume).collect();
    assert_eq!(rest, expected);
    wait_for("node 1 to answer", || cluster.status(1));
}

// `corekv watch --prefix P --rev R --prev-kv` prints one line per event (type, key,
// value, revision, previous value), and `--write-out json` one object per line.
#[test]
fn the_cli_prints_one_line_per_event() {
    let cluster = start("watch-cli");
    let client = cluster.client();
    let first = put(&client, "cli/a", "1");
    put(&client, "cli/a", "2");
    let deleted = client
        .execute(
            kv::Op::Delete(kv::DeleteRequest {
                key: b"cli/a".to_vec(),
                ..kv::DeleteRequest::default()
            }),
            false,
        )
        .expect("delete")
        .revision;
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_corekv"))
            .args(["watch", "cli/", "--prefix", "--rev", &first.to_string()])
            .args(["--count", "3", "--endpoints", &cluster.endpoint(2)])
            .args(extra)
            .output()
            .expect("corekv watch");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let lines = run(&["--prev-kv"]);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("PUT\tcli/a\t1\t{first}"));
    assert!(lines[1].starts_with("PUT\tcli/a\t2\t") && lines[1].ends_with("\t1"));
    assert_eq!(lines[2], format!("DELETE\tcli/a\t\t{deleted}\t2"));
    let json = run(&["--write-out", "json"]);
    let json: Vec<&str> = json.lines().collect();
    assert_eq!(json.len(), 3);
    assert!(json[0].starts_with("{\"type\":\"PUT\",\"kv\":{\"key\":\"Y2xpL2E=\""));
    assert!(json[2].starts_with("{\"type\":\"DELETE\""));
}
