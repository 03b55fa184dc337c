//! A healthy cluster of real `corekv server` processes on loopback, driven through the
//! SDK: writes and reads through every node, ranges merged across groups, transactions,
//! deletes, appends, revisions and versions, on three nodes and on one.

mod common;

use std::collections::BTreeSet;

use common::{raw_call, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::api::{ApiRequest, ApiResult, ErrorCode, RequestKind};
use corekv::client::{
    Client, Compare, CompareResult, CompareTarget, RangeRequest, TxnOp, TxnOpResponse, TxnRequest,
};
use corekv::keyspace::group_of;
use corekv::kv::{self, Command, OpResponse, PutRequest};

const GROUPS: u64 = 8;
const SHARDS: u32 = 2;
/// Keys of the range checks: enough that every group holds some.
const SCAN_KEYS: usize = 48;

fn put_op(key: &[u8], value: &[u8]) -> TxnOp {
    TxnOp::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    })
}

fn value_of(client: &Client, key: &[u8]) -> Option<Vec<u8>> {
    client.get(key).expect("get").map(|pair| pair.value)
}

/// Writes through each node's client and reads every write back through every other.
fn writes_and_reads_through_every_node(cluster: &TestCluster) {
    let ids: Vec<u64> = cluster.nodes.iter().map(|node| node.id).collect();
    let clients: Vec<Client> = ids.iter().map(|&id| cluster.client_of(id)).collect();
    let everywhere = cluster.client();
    for (writer, client) in clients.iter().enumerate() {
        for index in 0..10 {
            let key = format!("node/{writer}/{index}");
            client
                .put(&key, format!("value {writer} {index}"))
                .expect("put");
        }
    }
    for writer in 0..clients.len() {
        for index in 0..10 {
            let key = format!("node/{writer}/{index}");
            let expected = format!("value {writer} {index}").into_bytes();
            for reader in clients.iter().chain([&everywhere]) {
                assert_eq!(
                    value_of(reader, key.as_bytes()),
                    Some(expected.clone()),
                    "{key}"
                );
            }
        }
    }
    // Any replica serves a linearizable read (read index), not only the leader.
    for &id in &ids {
        let request = ApiRequest {
            request_id: 3,
            kind: RequestKind::Kv {
                command: Command {
                    client_id: 0,
                    seq: 0,
                    op: kv::Op::Range(RangeRequest::get(b"node/0/0")),
                },
                serializable: false,
                group: None,
                seen_revision: 0,
            },
        };
        let response = raw_call(&cluster.endpoint(id), &request).expect("node answers");
        match response.result {
            Ok(ApiResult::Kv(kv::Response {
                op: OpResponse::Range(range),
                ..
            })) => assert_eq!(range.kvs[0].value, b"value 0 0", "node {id}"),
            other => panic!("node {id}: a linearizable read answered {other:?}"),
        }
    }
}

/// A put sent to a follower is refused with a hint that names the leader's client
/// address, and the SDK's own put of the same key succeeds by following it.
fn follower_hints_the_leader(cluster: &TestCluster) {
    let leaders = cluster.wait_for_leaders();
    let key = b"hinted".to_vec();
    let group = group_of(&key, GROUPS);
    let leader = leaders[&group];
    let Some(follower) = cluster
        .nodes
        .iter()
        .map(|node| node.id)
        .find(|&id| id != leader)
    else {
        return;
    };
    let request = ApiRequest {
        request_id: 4,
        kind: RequestKind::Kv {
            command: Command {
                client_id: 0,
                seq: 0,
                op: kv::Op::Put(PutRequest {
                    key: key.clone(),
                    value: b"x".to_vec(),
                    ..PutRequest::default()
                }),
            },
            serializable: false,
            group: None,
            seen_revision: 0,
        },
    };
    let response = raw_call(&cluster.endpoint(follower), &request).expect("node answers");
    let error = response
        .result
        .expect_err("a follower does not take writes");
    // The leader may have moved between the status and the put; then the hint names
    // whoever leads now, still not the follower.
    assert_eq!(error.code, ErrorCode::NotLeader, "{error:?}");
    let hint = error.leader.expect("a hint");
    assert_ne!(hint.node_id, follower);
    assert_eq!(hint.client_address, cluster.endpoint(hint.node_id));
    cluster
        .client_of(follower)
        .put(&key, b"y")
        .expect("the SDK follows the hint");
}

/// A prefix scan sees the keys of every group, in key order, and honours its limit.
fn ranges_merge_every_group(client: &Client) {
    let keys: Vec<String> = (0..SCAN_KEYS)
        .map(|index| format!("scan/{index:03}"))
        .collect();
    let groups: BTreeSet<u64> = keys
        .iter()
        .map(|key| group_of(key.as_bytes(), GROUPS))
        .collect();
    assert_eq!(
        groups.len() as u64,
        GROUPS,
        "the scan keys must cover every group"
    );
    // Written in reverse so that write order cannot pass for key order.
    for key in keys.iter().rev() {
        client.put(key, format!("v-{key}")).expect("put");
    }
    let all = client.scan_prefix("scan/", 0).expect("scan");
    let found: Vec<String> = all
        .kvs
        .iter()
        .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
        .collect();
    assert_eq!(found, keys);
    assert_eq!(all.count, SCAN_KEYS as u64);
    assert!(!all.more);
    for pair in &all.kvs {
        assert_eq!(pair.value, [b"v-".as_slice(), &pair.key].concat());
    }
    let limited = client.scan_prefix("scan/", 10).expect("scan with a limit");
    let found: Vec<String> = limited
        .kvs
        .iter()
        .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
        .collect();
    assert_eq!(found, keys[..10]);
    assert!(limited.more);
    assert_eq!(limited.count, SCAN_KEYS as u64);
    let window = client
        .range(RangeRequest {
            key: b"scan/010".to_vec(),
            range_end: b"scan/020".to_vec(),
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(window.kvs.len(), 10);
    assert_eq!(window.kvs[0].key, b"scan/010");
    assert_eq!(window.kvs[9].key, b"scan/019");
}

/// A range delete reaches every group's leader, whichever nodes lead them: its counts
/// and previous key-values are merged in key order, and nothing outside the range goes.
fn range_delete_spans_groups(client: &Client) {
    let deleted = client
        .delete_range("scan/", "scan/010")
        .expect("delete a window");
    assert_eq!(deleted.deleted, 10);
    let (deleted, revision) = client
        .delete_with(kv::DeleteRequest {
            key: b"scan/".to_vec(),
            range_end: kv::prefix_end(b"scan/"),
            prev_kv: true,
        })
        .expect("delete range");
    assert_eq!(deleted.deleted, SCAN_KEYS as u64 - 10);
    let keys: Vec<String> = deleted
        .prev_kvs
        .iter()
        .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (10..SCAN_KEYS)
        .map(|index| format!("scan/{index:03}"))
        .collect();
    assert_eq!(keys, expected);
    assert!(revision > 0);
    assert!(client.scan_prefix("scan/", 0).expect("scan").kvs.is_empty());
    // Keys next to the range stay.
    assert!(client.get("cas").expect("get").is_some());
}

/// Compare-and-swap: the success branch runs when the compare holds, the failure branch
/// (with its read) when it does not.
fn transactions_compare_and_swap(client: &Client) {
    client.put("cas", "one").expect("put");
    let swap = |expected: &str, new: &str| TxnRequest {
        compares: vec![Compare {
            key: b"cas".to_vec(),
            target: CompareTarget::Value(expected.as_bytes().to_vec()),
            result: CompareResult::Equal,
        }],
        success: vec![put_op(b"cas", new.as_bytes())],
        failure: vec![TxnOp::Range(RangeRequest::get(b"cas"))],
    };
    let first = client.txn(swap("one", "two")).expect("txn");
    assert!(first.succeeded);
    assert!(matches!(first.responses[..], [TxnOpResponse::Put(_)]));
    assert_eq!(value_of(client, b"cas"), Some(b"two".to_vec()));
    let second = client.txn(swap("one", "three")).expect("txn");
    assert!(!second.succeeded);
    match &second.responses[..] {
        [TxnOpResponse::Range(range)] => assert_eq!(range.kvs[0].value, b"two"),
        other => panic!("the failure branch answered {other:?}"),
    }
    assert_eq!(value_of(client, b"cas"), Some(b"two".to_vec()));
    // A compare on a missing key: version 0. Creates the key only if absent.
    let create = TxnRequest {
        compares: vec![Compare {
            key: b"cas-new".to_vec(),
            target: CompareTarget::Version(0),
            result: CompareResult::Equal,
        }],
        success: vec![put_op(b"cas-new", b"created")],
        failure: vec![],
    };
    assert!(client.txn(create.clone()).expect("txn").succeeded);
    assert!(!client.txn(create).expect("txn").succeeded);
    assert_eq!(value_of(client, b"cas-new"), Some(b"created".to_vec()));
}

/// Deletes remove a key once; appends grow a value and create a missing key.
fn deletes_and_appends(client: &Client) {
    client.put("gone", "soon").expect("put");
    assert_eq!(client.delete("gone").expect("delete").deleted, 1);
    assert_eq!(value_of(client, b"gone"), None);
    assert_eq!(client.delete("gone").expect("delete").deleted, 0);
    assert_eq!(client.append("log", "ab").expect("append").value_bytes, 2);
    assert_eq!(client.append("log", "cd").expect("append").value_bytes, 4);
    assert_eq!(value_of(client, b"log"), Some(b"abcd".to_vec()));
}

/// Versions count a key's changes; create and mod revisions follow the group's log; a
/// deleted key starts over.
fn revisions_and_versions(client: &Client) {
    let mut last_mod_revision = 0;
    let mut create_revision = 0;
    for round in 1..=3u64 {
        let op = kv::Op::Put(PutRequest {
            key: b"ver".to_vec(),
            value: format!("v{round}").into_bytes(),
            ..PutRequest::default()
        });
        let response = client.execute(op, false).expect("put");
        let pair = client.get("ver").expect("get").expect("present");
        assert_eq!(pair.version, round);
        assert_eq!(pair.mod_revision, response.revision);
        assert!(pair.mod_revision > last_mod_revision);
        if round == 1 {
            create_revision = pair.create_revision;
            assert_eq!(create_revision, pair.mod_revision);
        }
        assert_eq!(pair.create_revision, create_revision);
        last_mod_revision = pair.mod_revision;
    }
    client.delete("ver").expect("delete");
    client.put("ver", "again").expect("put");
    let pair = client.get("ver").expect("get").expect("present");
    assert_eq!(pair.version, 1);
    assert!(pair.create_revision > last_mod_revision);
    let read = client
        .execute(kv::Op::Range(RangeRequest::get(b"ver")), false)
        .expect("get");
    assert!(read.revision >= pair.mod_revision);
}

fn exercise(cluster: &TestCluster) -> Client {
    cluster.wait_for_leaders();
    writes_and_reads_through_every_node(cluster);
    follower_hints_the_leader(cluster);
    let client = cluster.client();
    ranges_merge_every_group(&client);
    transactions_compare_and_swap(&client);
    deletes_and_appends(&client);
    revisions_and_versions(&client);
    range_delete_spans_groups(&client);
    client
}

// A scan whose groups together hold more than one answer may carry comes back in pages
// within the response budget, without holes, that reach every key.
#[test]
fn big_scans_come_in_pages() {
    let cluster = TestCluster::start_with("bigscan", 1, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    // 24 values just under 1 MiB: three times the 8 MiB response budget, more than the
    // 16 MiB frame maximum when merged whole.
    let value = vec![b'x'; 1000 << 10];
    let keys: Vec<Vec<u8>> = (0..24)
        .map(|index| format!("big/{index:02}").into_bytes())
        .collect();
    for key in &keys {
        client.put(key, &value).expect("put");
    }
    let budget = kv::Limits::default().response_bytes_max;
    let mut from = b"big/".to_vec();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .range(RangeRequest {
                key: from.clone(),
                range_end: kv::prefix_end(b"big/"),
                ..RangeRequest::default()
            })
            .expect("a page of the scan");
        pages += 1;
        let bytes: usize = page.kvs.iter().map(|pair| pair.encoded_bytes()).sum();
        assert!(bytes as u64 <= budget, "a page of {bytes} bytes");
        assert!(!page.kvs.is_empty());
        assert!(page.kvs.iter().all(|pair| pair.value == value));
        seen.extend(page.kvs.iter().map(|pair| pair.key.clone()));
        if !page.more {
            break;
        }
        // The next page starts just after this one's last key.
        from = page.kvs.last().expect("a key").key.clone();
        from.push(0);
    }
    assert_eq!(seen, keys);
    assert!(pages >= 3, "{pages} pages");
}

// Writes at every bound (the largest key, the largest value, the most transaction ops)
// are stored and replicated, and no node stops on them.
#[test]
fn writes_at_the_bounds_are_stored_everywhere() {
    let cluster = TestCluster::start_with("bounds", 3, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    let limits = kv::Limits::default();
    let big_value = vec![b'v'; limits.value_bytes_max as usize];
    client
        .put("largest-value", &big_value)
        .expect("a value of the largest size");
    let big_key = vec![b'k'; limits.key_bytes_max as usize];
    client
        .put(&big_key, "v")
        .expect("a key of the largest size");
    let most_ops = TxnRequest {
        compares: Vec::new(),
        success: (0..limits.txn_ops_max)
            .map(|index| put_op(b"most-ops", &index.to_le_bytes()))
            .collect(),
        failure: Vec::new(),
    };
    assert!(
        client
            .txn(most_ops)
            .expect("a transaction of the most ops")
            .succeeded
    );
    // Two largest values from one turn in one group: more than one WAL batch of the
    // old size.
    let second = (0..)
        .map(|index| format!("largest-value-{index}"))
        .find(|key| group_of(key.as_bytes(), GROUPS) == group_of(b"largest-value", GROUPS))
        .expect("a key of the same group");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| client.put("largest-value", &big_value));
        client
            .put(&second, &big_value)
            .expect("a second largest value");
        first
            .join()
            .expect("writer")
            .expect("the first largest value again");
    });
    for node in &cluster.nodes {
        cluster.wait_for_catch_up(node.id);
        let pair = cluster
            .local_get(node.id, b"largest-value")
            .expect("replicated");
        assert_eq!(pair.value, big_value, "node {}", node.id);
        assert!(
            cluster.local_get(node.id, &big_key).is_some(),
            "node {}",
            node.id
        );
        let pair = cluster.local_get(node.id, b"most-ops").expect("replicated");
        assert_eq!(pair.version, limits.txn_ops_max);
    }
}

// Three nodes serve every operation through any node, with answers merged across groups.
#[test]
fn three_nodes_serve_every_operation() {
    let cluster = TestCluster::start_with("serve3", 3, SHARDS, GROUPS, &SMALL_SEGMENT_ARGS);
    exercise(&cluster);
}

// One node alone is a complete cluster: the same operations with the same answers.
#[test]
fn one_node_serves_every_operation() {
    let cluster = TestCluster::start_with("serve1", 1, SHARDS, GROUPS, &SMALL_SEGMENT_ARGS);
    exercise(&cluster);
}
