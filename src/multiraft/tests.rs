//! Three in-memory nodes running several groups each through `MultiRaft`: writes through
//! leaders, linearizable reads on followers, session retries, and log compaction.

use std::collections::BTreeMap;

use super::*;
use crate::kv::{OpResponse, PutRequest, RangeRequest};
use crate::raft::ConfState;

struct Node {
    shard: MultiRaft,
    replies: BTreeMap<RequestId, Reply>,
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    fn new(groups: u64, compact_entries: u64) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            let mut config = ShardConfig::new(id);
            config.compact_entries = compact_entries;
            let starts = (0..groups)
                .map(|group| GroupStart {
                    id: group,
                    conf: ConfState::with_voters(&[1, 2, 3]),
                    raft: InitialState::default(),
                })
                .collect();
            let shard = MultiRaft::new(config, starts).expect("valid shard");
            nodes.insert(
                id,
                Node {
                    shard,
                    replies: BTreeMap::new(),
                },
            );
        }
        Cluster { nodes }
    }

    /// Runs Readies and delivers messages until nothing moves (instant, lossless disks
    /// and network).
    fn stabilize(&mut self) {
        for _ in 0..1_000 {
            let mut outbox = Vec::new();
            for node in self.nodes.values_mut() {
                while node.shard.has_ready() {
                    let ready = node.shard.ready();
                    outbox.extend(ready.messages);
                    outbox.extend(ready.persisted_messages);
                    node.replies.extend(ready.replies);
                    node.shard.on_persisted(ready.token);
                }
            }
            if outbox.is_empty() {
                return;
            }
            for (group, message) in outbox {
                self.nodes
                    .get_mut(&message.to)
                    .unwrap()
                    .shard
                    .step(group, message);
            }
        }
        panic!("did not settle");
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.shard.tick(1 << 40);
            }
            self.stabilize();
        }
    }

    fn leader(&self, group: GroupId) -> NodeId {
        self.nodes[&1].shard.raft(group).unwrap().leader()
    }
}

fn put(client_id: u64, seq: u64, key: &str, value: &str) -> Command {
    Command {
        client_id,
        seq,
        op: Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        }),
    }
}

// Every group elects a leader; writes apply on every replica; a follower serves a
// linearizable read that sees them; a retried write is answered without applying twice.
#[test]
fn writes_reads_and_session_retries() {
    let mut cluster = Cluster::new(4, 10_000);
    cluster.tick(40);
    for group in 0..4 {
        let leader = cluster.leader(group);
        assert_ne!(leader, NO_NODE, "group {group} has a leader");
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.shard.propose(
            100 + group,
            group,
            &put(7 + group, 1, "k", &format!("v{group}")),
            0,
        );
    }
    cluster.stabilize();
    for group in 0..4 {
        let leader = cluster.leader(group);
        let reply = &cluster.nodes[&leader].replies[&(100 + group)];
        let revision = reply.as_ref().expect("put applied").revision;
        // Retrying the same (client, seq) returns the first answer, not a new revision.
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.shard.propose(
            200 + group,
            group,
            &put(7 + group, 1, "k", &format!("v{group}")),
            0,
        );
        cluster.stabilize();
        let retry = cluster.nodes[&leader].replies[&(200 + group)]
            .as_ref()
            .unwrap();
        assert_eq!(retry.revision, revision);
        // A follower reads through a read index and sees the write.
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        let node = cluster.nodes.get_mut(&follower).unwrap();
        node.shard.read(
            300 + group,
            group,
            Op::Range(RangeRequest::get(b"k")),
            ReadMode::Linearizable,
        );
        cluster.stabilize();
        let read = cluster.nodes[&follower].replies[&(300 + group)]
            .as_ref()
            .unwrap();
        let OpResponse::Range(range) = &read.op else {
            panic!("range reply")
        };
        assert_eq!(range.kvs[0].value, format!("v{group}").into_bytes());
    }
}

// A proposal to a follower is answered with the leader's id.
#[test]
fn follower_redirects_to_leader() {
    let mut cluster = Cluster::new(1, 10_000);
    cluster.tick(40);
    let leader = cluster.leader(0);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let node = cluster.nodes.get_mut(&follower).unwrap();
    node.shard.propose(1, 0, &put(1, 1, "k", "v"), 0);
    cluster.stabilize();
    let reply = &cluster.nodes[&follower].replies[&1];
    assert_eq!(reply, &Err(ClientError::NotLeader { group: 0, leader }));
}

// Groups snapshot and compact their logs as entries apply, and keep serving.
#[test]
fn compaction_keeps_serving() {
    let mut cluster = Cluster::new(1, 5);
    cluster.tick(40);
    let leader = cluster.leader(0);
    for seq in 1..=20 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.shard
            .propose(seq, 0, &put(1, seq, &format!("k{seq}"), "v"), 0);
        cluster.stabilize();
    }
    for node in cluster.nodes.values() {
        let raft = node.shard.raft(0).unwrap();
        assert!(
            raft.log().first_index() > 10,
            "compacted: first index {}",
            raft.log().first_index()
        );
        assert_eq!(node.shard.store(0).unwrap().key_count(), 20);
    }
}

// A snapshot requested by storage compacts the log even below the entry threshold.
#[test]
fn requested_snapshot_compacts_early() {
    let mut cluster = Cluster::new(1, 10_000);
    cluster.tick(40);
    let leader = cluster.leader(0);
    for seq in 1..=5 {
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.shard
            .propose(seq, 0, &put(1, seq, &format!("k{seq}"), "v"), 0);
        cluster.stabilize();
    }
    let before = cluster.nodes[&leader]
        .shard
        .raft(0)
        .unwrap()
        .log()
        .first_index();
    assert_eq!(before, 1, "nothing compacted below the threshold");
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.shard.request_snapshot(0);
    assert!(node.shard.has_ready());
    let ready = node.shard.ready();
    assert_eq!(ready.snapshots.len(), 1);
    let after = node.shard.raft(0).unwrap().log().first_index();
    assert!(
        after > 5,
        "compacted through what was applied: first index {after}"
    );
}

// Groups due for a snapshot together take them one Ready at a time, and every one of
// them gets its turn.
#[test]
fn snapshots_are_spread_over_readies() {
    let groups = 4;
    let mut cluster = Cluster::new(groups, 10_000);
    cluster.tick(40);
    for group in 0..groups {
        let leader = cluster.leader(group);
        let node = cluster.nodes.get_mut(&leader).unwrap();
        node.shard.propose(
            group + 1,
            group,
            &put(group + 1, 1, &format!("g{group}"), "v"),
            0,
        );
        cluster.stabilize();
    }
    let node = cluster.nodes.get_mut(&1).unwrap();
    for group in 0..groups {
        node.shard.request_snapshot(group);
    }
    let mut taken = Vec::new();
    while node.shard.has_ready() {
        let ready = node.shard.ready();
        assert!(ready.snapshots.len() <= SNAPSHOTS_PER_READY_MAX);
        taken.extend(ready.snapshots.iter().map(|snapshot| snapshot.group));
        node.shard.on_persisted(ready.token);
    }
    taken.sort_unstable();
    assert_eq!(taken, (0..groups).collect::<Vec<_>>());
}

// Each group's snapshot point lies in [compact_entries, compact_entries * 9 / 8), and the
// groups do not all share one.
#[test]
fn snapshot_thresholds_spread_by_group() {
    let compact_entries = 10_000;
    let thresholds: Vec<u64> = (0..64)
        .map(|group| compact_threshold(group, compact_entries))
        .collect();
    assert!(thresholds
        .iter()
        .all(|&threshold| (compact_entries..compact_entries * 9 / 8).contains(&threshold)));
    let distinct: std::collections::BTreeSet<u64> = thresholds.iter().copied().collect();
    assert!(distinct.len() > 32, "{thresholds:?}");
}

// A follower's linearizable read whose read-index request is lost is answered NotLeader
// (with the leader's id) once the read timeout passes, instead of waiting forever.
#[test]
fn lost_read_index_request_times_out() {
    let mut cluster = Cluster::new(1, 10_000);
    cluster.tick(40);
    let leader = cluster.leader(0);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let node = cluster.nodes.get_mut(&follower).unwrap();
    node.shard.read(
        1,
        0,
        Op::Range(RangeRequest::get(b"k")),
        ReadMode::Linearizable,
    );
    // The ReadIndex message to the leader is lost.
    let ready = node.shard.ready();
    assert!(ready.replies.is_empty());
    assert!(ready
        .messages
        .iter()
        .any(|(_, message)| message.kind == crate::raft::MessageKind::ReadIndex));
    node.shard.on_persisted(ready.token);
    let timeout = ShardConfig::new(follower).read_index_timeout_ticks;
    cluster.tick(timeout as usize - 1);
    assert!(!cluster.nodes[&follower].replies.contains_key(&1));
    cluster.tick(1);
    let reply = &cluster.nodes[&follower].replies[&1];
    assert_eq!(reply, &Err(ClientError::NotLeader { group: 0, leader }));
}

// Reads at a revision: one already closed is served at once on a follower; one past the
// closed revision waits until the follower's request makes the leader close it; a
// snapshot read older than what the read index shows is refused with the revision it
// needs.
#[test]
fn reads_at_a_revision_wait_for_it_to_close() {
    let mut cluster = Cluster::new(1, 10_000);
    cluster.tick(40);
    let leader = cluster.leader(0);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .shard
        .propose(1, 0, &put(1, 1, "k", "v"), 0);
    cluster.stabilize();
    let written = cluster.nodes[&leader].replies[&1]
        .clone()
        .expect("applied")
        .revision;
    assert!(written > 1 << 40, "above the leader's close promises");

    let value_of = |reply: &Reply| match &reply.as_ref().expect("served").op {
        OpResponse::Range(range) => range.kvs.first().map(|pair| pair.value.clone()),
        other => panic!("a range, got {other:?}"),
    };
    let node = cluster.nodes.get_mut(&follower).unwrap();
    node.shard.read(
        2,
        0,
        Op::Range(RangeRequest::get(b"k")),
        ReadMode::At(written),
    );
    node.shard.read(
        3,
        0,
        Op::Range(RangeRequest::get(b"k")),
        ReadMode::At(written - 1),
    );
    let ahead = written + 1_000;
    node.shard.read(
        4,
        0,
        Op::Range(RangeRequest::get(b"k")),
        ReadMode::At(ahead),
    );
    node.shard.read(
        5,
        0,
        Op::Range(RangeRequest::get(b"k")),
        ReadMode::SnapshotAt(written - 1),
    );
    cluster.stabilize();
    let replies = &cluster.nodes[&follower].replies;
    assert_eq!(value_of(&replies[&2]), Some(b"v".to_vec()));
    assert_eq!(value_of(&replies[&3]), None, "before the write");
    assert_eq!(replies[&4].as_ref().unwrap().revision, ahead);
    assert_eq!(value_of(&replies[&4]), Some(b"v".to_vec()));
    assert_eq!(
        replies[&5],
        Err(ClientError::RevisionBehind {
            revision: written - 1,
            needed: written
        })
    );
    // The leader's promise holds: a later write is stamped above it.
    cluster
        .nodes
        .get_mut(&leader)
        .unwrap()
        .shard
        .propose(6, 0, &put(1, 2, "k", "w"), 0);
    cluster.stabilize();
    let later = cluster.nodes[&leader].replies[&6]
        .clone()
        .expect("applied")
        .revision;
    assert!(later > ahead);
}

// A compaction past everything the group has closed closes it first, so it reaches the
// revision asked for, and later writes stay above it.
#[test]
fn compaction_past_the_closed_revision_closes_first() {
    let mut cluster = Cluster::new(1, 10_000);
    cluster.tick(40);
    let leader = cluster.leader(0);
    let closed = cluster.nodes[&leader]
        .shard
        .store(0)
        .unwrap()
        .closed_revision();
    let target = closed + 1_000;
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.shard.propose_compaction(1, 0, target);
    cluster.stabilize();
    let reply = cluster.nodes[&leader].replies[&1]
        .clone()
        .expect("compacted");
    let OpResponse::Compact(compact) = reply.op else {
        panic!("a compaction reply, got {:?}", reply.op);
    };
    assert_eq!(compact.compact_revision, target);
    for node in cluster.nodes.values() {
        let store = node.shard.store(0).unwrap();
        assert_eq!(store.compact_revision(), target);
        assert!(store.closed_revision() >= target);
    }
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.shard.propose(2, 0, &put(1, 1, "k", "v"), 0);
    cluster.stabilize();
    let written = cluster.nodes[&leader].replies[&2].clone().expect("applied");
    assert!(written.revision > target);
}
