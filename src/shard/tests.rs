//! The shard core driven by hand: one node of one or two shards whose disk makes every
//! batch durable at once and whose mesh the test controls (deliver, drop, refuse).

use super::*;
use crate::api::Member;
use crate::keyspace::group_of;
use crate::kv::{OpResponse, PutRequest, RangeRequest};

/// Ticks a test waits for something that must happen (elections take 10 to 20).
const TICKS_MAX: u64 = 200;

/// One node's shards and what they sent.
struct Node {
    cores: Vec<ShardCore>,
    /// Mesh messages sent and not yet delivered.
    mesh: Vec<MeshMessage>,
    /// Client replies, by shard.
    replies: Vec<Vec<ClientReply>>,
    now_ms: u64,
}

impl Node {
    fn new(shards: u32, groups: u64) -> Node {
        let cores = (0..shards)
            .map(|shard| {
                let mut config =
                    CoreConfig::new(1, shard, shards, groups, Placement::Everywhere(vec![1]));
                config.members = vec![Member {
                    node_id: 1,
                    client_address: "127.0.0.1:7379".into(),
                    peer_address: "127.0.0.1:7380".into(),
                }];
                config.forward_timeout_ticks = 30;
                config.status_timeout_ticks = 20;
                let recovered = config
                    .groups_here()
                    .into_iter()
                    .map(|group| RecoveredGroup {
                        group,
                        ..RecoveredGroup::default()
                    })
                    .collect();
                ShardCore::open(config, recovered).expect("an empty disk opens")
            })
            .collect();
        Node {
            cores,
            mesh: Vec::new(),
            replies: (0..shards).map(|_| Vec::new()).collect(),
            now_ms: 1_000,
        }
    }

    /// Runs a turn on every shard with work; batches are durable at once, mesh messages
    /// are kept for the test to deliver.
    fn turns(&mut self) {
        for _ in 0..8 {
            let mut worked = false;
            for (shard, core) in self.cores.iter_mut().enumerate() {
                while core.has_work() {
                    worked = true;
                    let output = core.turn();
                    assert!(
                        output.messages.is_empty(),
                        "a one-node cluster sends no peer messages"
                    );
                    self.mesh.extend(output.mesh);
                    self.replies[shard].extend(output.replies);
                    if let Some(job) = output.snapshot_job {
                        core.on_snapshot_written(
                            job.group,
                            job.snapshot.meta.index,
                            job.snapshot.meta.term,
                        );
                    }
                    if let Some(batch) = output.batch {
                        core.on_persisted(batch.sequence);
                    }
                }
            }
            if !worked {
                return;
            }
        }
    }

    fn tick(&mut self) {
        self.now_ms += 10;
        for core in &mut self.cores {
            core.on_tick(self.now_ms);
        }
        self.turns();
    }

    fn deliver_mesh(&mut self) {
        while !self.mesh.is_empty() {
            for message in std::mem::take(&mut self.mesh) {
                let to = message.to_shard as usize;
                self.cores[to].on_mesh(message);
            }
            self.turns();
        }
    }

    /// Ticks until every group of the node has a leader.
    fn elect(&mut self) {
        for _ in 0..TICKS_MAX {
            if self.cores.iter().all(|core| {
                let groups = core.groups();
                groups.group_ids().count() == groups.led_groups().len()
            }) {
                return;
            }
            self.tick();
        }
        panic!("no leaders after {TICKS_MAX} ticks");
    }

    fn take_reply(&mut self, shard: usize, request_id: u64) -> Option<ClientReply> {
        let replies = &mut self.replies[shard];
        let position = replies
            .iter()
            .position(|reply| reply.response.request_id == request_id)?;
        Some(replies.remove(position))
    }
}

fn put(key: &[u8], value: &[u8], request_id: u64) -> ApiRequest {
    ApiRequest {
        request_id,
        kind: RequestKind::Kv {
            command: Command {
                client_id: 0,
                seq: 0,
                op: Op::Put(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..PutRequest::default()
                }),
            },
            serializable: false,
            group: None,
            seen_revision: 0,
        },
    }
}

fn range(range: RangeRequest, request_id: u64) -> ApiRequest {
    ApiRequest {
        request_id,
        kind: RequestKind::Kv {
            command: Command {
                client_id: 0,
                seq: 0,
                op: Op::Range(range),
            },
            serializable: false,
            group: None,
            seen_revision: 0,
        },
    }
}

fn status(request_id: u64) -> ApiRequest {
    ApiRequest {
        request_id,
        kind: RequestKind::Status,
    }
}

/// A key whose group lives on `shard`.
fn key_on_shard(shard: u32, shards: u32, groups: u64) -> Vec<u8> {
    (0..)
        .map(|n| format!("key-{n}").into_bytes())
        .find(|key| shard_of(group_of(key, groups), shards) == shard)
        .expect("some key lands on every shard")
}

fn error_code(reply: &ClientReply) -> Option<ErrorCode> {
    reply.response.result.as_ref().err().map(|error| error.code)
}

// A write accepted by one shard for a group of the other goes over the mesh, commits
// there, and its answer comes back to the connection it came from; a linearizable read
// through the same path sees it.
#[test]
fn requests_for_another_shard_are_forwarded_and_answered() {
    let mut node = Node::new(2, 4);
    node.elect();
    let key = key_on_shard(1, 2, 4);
    node.cores[0].on_client_request(7, put(&key, b"v", 1));
    node.turns();
    assert_eq!(node.mesh.len(), 1, "forwarded to shard 1");
    node.deliver_mesh();
    let reply = node.take_reply(0, 1).expect("answered on shard 0");
    assert_eq!(reply.connection, 7);
    assert!(reply.finished);
    assert!(matches!(
        reply.response.result,
        Ok(ApiResult::Kv(Response {
            op: OpResponse::Put(_),
            ..
        }))
    ));
    node.cores[0].on_client_request(7, range(RangeRequest::get(&key), 2));
    node.turns();
    node.deliver_mesh();
    // A read waits for its read index: a tick or two of heartbeats.
    for _ in 0..5 {
        node.tick();
    }
    let reply = node.take_reply(0, 2).expect("the read is answered");
    let Ok(ApiResult::Kv(Response {
        op: OpResponse::Range(found),
        ..
    })) = reply.response.result
    else {
        panic!("a range answer, got {reply:?}");
    };
    assert_eq!(found.kvs.len(), 1);
    assert_eq!(found.kvs[0].value, b"v");
    assert_eq!(
        node.cores[0].load(),
        CoreLoad::default(),
        "nothing left waiting"
    );
}

// A forwarded request whose mesh message is lost is answered at its deadline, and one
// the mesh refuses is answered at once: neither waits forever.
#[test]
fn forwarded_requests_end_by_their_deadline() {
    let mut node = Node::new(2, 4);
    node.elect();
    let key = key_on_shard(1, 2, 4);
    node.cores[0].on_client_request(7, put(&key, b"v", 1));
    node.turns();
    node.mesh.clear();
    node.cores[0].on_client_request(7, put(&key, b"w", 2));
    node.turns();
    let refused = node.mesh.pop().expect("a forward");
    node.cores[0].on_mesh_undeliverable(refused);
    node.turns();
    let reply = node.take_reply(0, 2).expect("refused at once");
    assert_eq!(error_code(&reply), Some(ErrorCode::Overloaded));
    for _ in 0..30 {
        assert!(node.take_reply(0, 1).is_none());
        node.tick();
    }
    let reply = node.take_reply(0, 1).expect("timed out");
    assert_eq!(error_code(&reply), Some(ErrorCode::Timeout));
    assert_eq!(node.cores[0].load().forwarded, 0);
}

// A node status gathers every shard's groups; one whose part is lost, or cannot be sent,
// is answered with an error instead of leaking (the gather table empties).
#[test]
fn status_gathers_always_answer() {
    let mut node = Node::new(2, 4);
    node.elect();
    node.cores[0].on_client_request(3, status(1));
    node.turns();
    node.deliver_mesh();
    let reply = node.take_reply(0, 1).expect("complete");
    let Ok(ApiResult::Status(info)) = reply.response.result else {
        panic!("a status, got {reply:?}");
    };
    let groups: Vec<u64> = info.groups.iter().map(|group| group.group_id).collect();
    assert_eq!(groups, [0, 1, 2, 3]);
    assert_eq!(info.members.len(), 1);

    node.cores[0].on_client_request(3, status(2));
    node.turns();
    node.mesh.clear();
    node.cores[0].on_client_request(3, status(3));
    node.turns();
    let refused = node.mesh.pop().expect("a status part");
    node.cores[0].on_mesh_undeliverable(refused);
    node.turns();
    let reply = node.take_reply(0, 3).expect("refused at once");
    assert_eq!(error_code(&reply), Some(ErrorCode::Overloaded));
    for _ in 0..20 {
        node.tick();
    }
    let reply = node.take_reply(0, 2).expect("timed out");
    assert_eq!(error_code(&reply), Some(ErrorCode::Timeout));
    assert_eq!(node.cores[0].load().status_gathers, 0);
}

// A range over the whole keyspace is split over every group of both shards and merged
// in key order.
#[test]
fn ranges_over_every_group_are_merged() {
    let mut node = Node::new(2, 4);
    node.elect();
    let keys: Vec<Vec<u8>> = (0..12).map(|n| format!("k{n:02}").into_bytes()).collect();
    for (index, key) in keys.iter().enumerate() {
        node.cores[0].on_client_request(1, put(key, b"v", index as u64 + 1));
        node.turns();
        node.deliver_mesh();
    }
    assert_eq!(node.replies[0].len(), keys.len());
    node.replies[0].clear();
    let scan = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    node.cores[1].on_client_request(2, range(scan, 100));
    node.turns();
    node.deliver_mesh();
    for _ in 0..5 {
        node.tick();
        node.deliver_mesh();
    }
    let reply = node.take_reply(1, 100).expect("merged");
    let Ok(ApiResult::Kv(Response {
        op: OpResponse::Range(found),
        ..
    })) = reply.response.result
    else {
        panic!("a range answer, got {reply:?}");
    };
    let found: Vec<Vec<u8>> = found.kvs.into_iter().map(|pair| pair.key).collect();
    assert_eq!(found, keys);
    assert_eq!(node.cores[1].load(), CoreLoad::default());
}

// A stopping shard refuses new requests and answers every waiting one.
#[test]
fn shutdown_answers_everything() {
    let mut node = Node::new(2, 4);
    node.elect();
    let key = key_on_shard(1, 2, 4);
    node.cores[0].on_client_request(7, put(&key, b"v", 1));
    node.turns();
    node.mesh.clear();
    assert!(
        node.cores[0].shutdown_step(),
        "a one-node cluster has no one to hand over to"
    );
    node.cores[0].on_client_request(7, put(&key, b"w", 2));
    node.turns();
    for request_id in [1, 2] {
        let reply = node.take_reply(0, request_id).expect("answered");
        assert_eq!(error_code(&reply), Some(ErrorCode::ShuttingDown));
    }
}

// A range over every group is one snapshot at one revision, named in the answer; read
// again at that revision after more writes, it is the same; below the compaction
// revision it is refused.
#[test]
fn ranges_over_every_group_are_snapshots_at_one_revision() {
    let mut node = Node::new(2, 4);
    node.elect();
    let scan = |revision| RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    };
    let read = |node: &mut Node, request_id, revision| {
        node.cores[0].on_client_request(1, range(scan(revision), request_id));
        for _ in 0..10 {
            node.turns();
            node.deliver_mesh();
            node.tick();
        }
        node.take_reply(0, request_id).expect("answered")
    };
    for (index, key) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        node.cores[0].on_client_request(1, put(key.as_bytes(), b"1", 10 + index as u64));
        node.turns();
        node.deliver_mesh();
    }
    let first = read(&mut node, 100, 0);
    let Ok(ApiResult::Kv(first)) = first.response.result else {
        panic!("a snapshot, got {first:?}");
    };
    let OpResponse::Range(before) = &first.op else {
        panic!("a range");
    };
    assert_eq!(before.kvs.len(), 6);
    assert!(before
        .kvs
        .iter()
        .all(|pair| pair.mod_revision <= first.revision));
    for (index, key) in ["a", "g"].iter().enumerate() {
        node.cores[0].on_client_request(1, put(key.as_bytes(), b"2", 20 + index as u64));
        node.turns();
        node.deliver_mesh();
    }
    let again = read(&mut node, 101, first.revision);
    let Ok(ApiResult::Kv(again)) = again.response.result else {
        panic!("a read at a revision, got {again:?}");
    };
    assert_eq!(again.revision, first.revision);
    assert_eq!(again.op, first.op, "the same snapshot");
    let now = read(&mut node, 102, 0);
    let Ok(ApiResult::Kv(now)) = now.response.result else {
        panic!("a snapshot, got {now:?}");
    };
    assert!(now.revision > first.revision);
    let OpResponse::Range(after) = &now.op else {
        panic!("a range");
    };
    assert_eq!(after.kvs.len(), 7);
}

#[path = "lease_tests.rs"]
mod leases;
