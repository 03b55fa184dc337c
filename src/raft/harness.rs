//! An in-memory cluster of replicas for tests and benches: instant "disks", a message
//! queue with cut links, crash and restart. Pure: time is whatever the caller ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::Config;
use super::node::{InitialState, RaftNode, Ready};
use super::types::*;

/// What one replica's storage holds: the durable part of its Readies.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot.
    pub entries: Vec<Entry>,
}

impl MemoryStorage {
    /// Writes what a Ready asks to persist.
    pub fn write(&mut self, ready: &Ready) {
        if let Some(snapshot) = &ready.snapshot {
            self.entries
                .retain(|entry| entry.index > snapshot.meta.index);
            if self
                .entries
                .first()
                .is_some_and(|entry| entry.index != snapshot.meta.index + 1)
            {
                self.entries.clear();
            }
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = ready.entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
    }

    /// Drops entries a snapshot at `index` covers.
    pub fn compact(&mut self, snapshot: Snapshot) {
        self.entries
            .retain(|entry| entry.index > snapshot.meta.index);
        self.snapshot = Some(snapshot);
    }

    pub fn initial_state(&self, conf: &ConfState) -> InitialState {
        InitialState {
            hard_state: self.hard_state,
            conf: conf.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// One replica with its storage and what it applied.
#[derive(Debug)]
pub struct Peer {
    pub node: RaftNode,
    pub storage: MemoryStorage,
    /// Entries applied, in order, since the last restore from a snapshot.
    pub applied: Vec<Entry>,
    /// Index of the snapshot the applied list starts after.
    pub applied_base: Index,
    pub read_states: Vec<ReadState>,
    pub failed_reads: Vec<u64>,
    pub config: Config,
}

/// A cluster of replicas joined by a perfect network whose links can be cut.
#[derive(Debug)]
pub struct Cluster {
    pub peers: BTreeMap<NodeId, Peer>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: VecDeque<Message>,
    /// Directed links (from, to) that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes that are down: messages to and from them are dropped, they are not stepped.
    pub down: BTreeSet<NodeId>,
    /// The membership every replica starts with.
    pub initial_conf: ConfState,
}

impl Cluster {
    /// A new cluster whose voters are `ids`; `configure` adjusts each replica's settings.
    pub fn new(ids: &[NodeId], configure: impl Fn(&mut Config)) -> Cluster {
        Cluster::with_learners(ids, &[], configure)
    }

    /// A new cluster with voters `ids` and learners `learners`.
    pub fn with_learners(
        ids: &[NodeId],
        learners: &[NodeId],
        configure: impl Fn(&mut Config),
    ) -> Cluster {
        let mut conf = ConfState::with_voters(ids);
        conf.learners = learners.to_vec();
        conf.learners.sort_unstable();
        let mut peers = BTreeMap::new();
        for &id in ids.iter().chain(learners) {
            let mut config = Config::new(id);
            configure(&mut config);
            let storage = MemoryStorage::default();
            let node = RaftNode::new(config.clone(), storage.initial_state(&conf))
                .expect("valid configuration");
            let peer = Peer {
                node,
                storage,
                applied: Vec::new(),
                applied_base: 0,
                read_states: Vec::new(),
                failed_reads: Vec::new(),
                config,
            };
            peers.insert(id, peer);
        }
        Cluster {
            peers,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            initial_conf: conf,
        }
    }

    /// Adds a replica that is not in the initial membership (to be added by a change).
    ///
    /// Like every replica of the group it starts from the group's initial membership,
    /// which is not in the log: it learns later changes by applying their entries (or
    /// from a snapshot). Started from an empty membership instead, it would believe
    /// itself the only voter once promoted and elect itself alone.
    pub fn add_empty_peer(&mut self, id: NodeId, configure: impl Fn(&mut Config)) {
        let mut config = Config::new(id);
        configure(&mut config);
        let storage = MemoryStorage::default();
        let node = RaftNode::new(config.clone(), storage.initial_state(&self.initial_conf))
            .expect("valid configuration");
        let peer = Peer {
            node,
            storage,
            applied: Vec::new(),
            applied_base: 0,
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            config,
        };
        self.peers.insert(id, peer);
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.peers[&id].node
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        &mut self.peers.get_mut(&id).expect("known node").node
    }

    /// The leader with the highest term among live nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.peers
            .iter()
            .filter(|(id, peer)| !self.down.contains(id) && peer.node.is_leader())
            .max_by_key(|(_, peer)| peer.node.term())
            .map(|(&id, _)| id)
    }

    /// Handles one Ready of `id` as a real node would with an instant disk: persist, send,
    /// apply, then report durability. Returns the Ready for inspection.
    pub fn process_ready(&mut self, id: NodeId) -> Option<Ready> {
        if self.down.contains(&id) {
            return None;
        }
        let peer = self.peers.get_mut(&id).expect("known node");
        if !peer.node.has_ready() {
            return None;
        }
        let mut ready = peer.node.ready();
        peer.storage.write(&ready);
        if let Some(snapshot) = &ready.snapshot {
            peer.applied.clear();
            peer.applied_base = snapshot.meta.index;
        }
        peer.applied.extend(ready.committed_entries.iter().cloned());
        peer.read_states.extend(ready.read_states.iter().copied());
        peer.failed_reads.extend(ready.failed_reads.iter().copied());
        peer.node.on_persisted(ready.number);
        let messages = std::mem::take(&mut ready.messages);
        let persisted = std::mem::take(&mut ready.persisted_messages);
        for message in messages.into_iter().chain(persisted) {
            self.send(message);
        }
        Some(ready)
    }

    /// Queues a message unless its link is cut or an end is down.
    pub fn send(&mut self, message: Message) {
        let link = (message.from, message.to);
        if self.cut.contains(&link)
            || self.down.contains(&message.from)
            || self.down.contains(&message.to)
        {
            return;
        }
        self.in_flight.push_back(message);
    }

    /// Delivers every queued message (not the ones their delivery produces).
    pub fn deliver_all(&mut self) -> usize {
        let batch: Vec<Message> = self.in_flight.drain(..).collect();
        let count = batch.len();
        for message in batch {
            self.deliver(message);
        }
        count
    }

    /// Steps one message into its destination, if it is alive and the link is intact.
    pub fn deliver(&mut self, message: Message) {
        let link = (message.from, message.to);
        if self.cut.contains(&link) || self.down.contains(&message.to) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&message.to) {
            peer.node.step(message);
        }
    }

    /// Processes Readies and delivers messages until the cluster is quiet. Bounded by
    /// `rounds_max` so a livelock fails loudly instead of hanging.
    pub fn stabilize(&mut self) {
        const ROUNDS_MAX: usize = 10_000;
        for _ in 0..ROUNDS_MAX {
            let ids: Vec<NodeId> = self.peers.keys().copied().collect();
            let mut busy = false;
            for id in ids {
                while self.process_ready(id).is_some() {
                    busy = true;
                }
            }
            if self.deliver_all() > 0 {
                busy = true;
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster did not settle within {ROUNDS_MAX} rounds");
    }

    /// Ticks every live node `ticks` times, stabilizing after each tick.
    pub fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.peers.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) {
                    self.node_mut(id).tick();
                }
            }
            self.stabilize();
        }
    }

    /// Makes `id` campaign and runs the cluster until quiet.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign_now();
        self.stabilize();
    }

    /// Cuts both directions between `id` and every other node.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.peers.keys().copied().filter(|&o| o != id).collect();
        for other in others {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    /// Cuts both directions between every node of `left` and every node of `right`.
    pub fn partition(&mut self, left: &[NodeId], right: &[NodeId]) {
        for &a in left {
            for &b in right {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Stops `id`: what it did not persist is lost (here every Ready is persisted at
    /// once, so only messages in flight and memory state are lost).
    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
        self.in_flight
            .retain(|message| message.to != id && message.from != id);
    }

    /// Restarts `id` from its storage.
    pub fn restart(&mut self, id: NodeId) {
        self.down.remove(&id);
        let conf = self.initial_conf.clone();
        let peer = self.peers.get_mut(&id).expect("known node");
        let state = peer.storage.initial_state(&conf);
        peer.applied_base = state
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.meta.index);
        peer.applied.clear();
        peer.node = RaftNode::new(peer.config.clone(), state).expect("valid restart state");
    }

    /// Compacts `id`'s log up to what it applied, with `data` as the snapshot payload.
    pub fn compact(&mut self, id: NodeId, data: Payload) {
        let peer = self.peers.get_mut(&id).expect("known node");
        let index = peer.node.log().applied;
        peer.node
            .compact(index, data)
            .expect("compacting applied entries");
        let snapshot = peer.node.snapshot().expect("just compacted").clone();
        peer.storage.compact(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn payload(text: &str) -> Payload {
        Arc::from(text.as_bytes())
    }

    fn normal_payloads(peer: &Peer) -> Vec<Vec<u8>> {
        peer.applied
            .iter()
            .filter(|entry| entry.kind == EntryKind::Normal && !entry.data.is_empty())
            .map(|entry| entry.data.to_vec())
            .collect()
    }

    // Three nodes elect a leader and every node applies the same proposals in order.
    #[test]
    fn elect_and_replicate() {
        let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
        cluster.elect(1);
        assert_eq!(cluster.leader(), Some(1));
        for k in 0..10 {
            cluster
                .node_mut(1)
                .propose(payload(&format!("v{k}")))
                .expect("leader accepts");
        }
        cluster.stabilize();
        let expected: Vec<Vec<u8>> = (0..10).map(|k| format!("v{k}").into_bytes()).collect();
        for id in [1, 2, 3] {
            assert_eq!(normal_payloads(&cluster.peers[&id]), expected, "node {id}");
        }
    }

    // Elections happen by themselves through ticks alone.
    #[test]
    fn ticks_elect_a_leader() {
        let mut cluster = Cluster::new(&[1, 2, 3, 4, 5], |_| {});
        cluster.tick_all(40);
        let leader = cluster.leader().expect("a leader after 40 ticks");
        let term = cluster.node(leader).term();
        for peer in cluster.peers.values() {
            assert_eq!(peer.node.leader(), leader);
            assert_eq!(peer.node.term(), term);
        }
    }

    // A single-node cluster commits once its own write is durable.
    #[test]
    fn single_node_commits() {
        let mut cluster = Cluster::new(&[1], |_| {});
        cluster.elect(1);
        assert!(cluster.node(1).is_leader());
        cluster.node_mut(1).propose(payload("x")).unwrap();
        cluster.stabilize();
        assert_eq!(normal_payloads(&cluster.peers[&1]), vec![b"x".to_vec()]);
        cluster.node_mut(1).read_index(7).unwrap();
        cluster.stabilize();
        assert_eq!(
            cluster.peers[&1].read_states,
            vec![ReadState {
                context: 7,
                index: 2
            }]
        );
    }

    // A follower whose log conflicts with the leader's right at the leader's snapshot
    // (its own uncommitted entries of an older term run past the snapshot's index) gets
    // the snapshot, instead of the same rejected append again and again.
    #[test]
    fn conflict_at_the_snapshot_sends_the_snapshot() {
        let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
        cluster.elect(1);
        // Node 1 leads alone and appends entries nobody else gets.
        cluster.isolate(1);
        for k in 0..9 {
            cluster
                .node_mut(1)
                .propose(payload(&format!("lost{k}")))
                .unwrap();
        }
        cluster.stabilize();
        cluster.tick_all(40);
        let leader = cluster.leader().expect("2 or 3 leads");
        assert_ne!(leader, 1);
        for k in 0..5 {
            cluster
                .node_mut(leader)
                .propose(payload(&format!("v{k}")))
                .unwrap();
        }
        cluster.stabilize();
        cluster.tick_all(3);
        cluster.compact(2, payload("snapshot"));
        cluster.compact(3, payload("snapshot"));
        let snapshot_index = cluster.node(2).log().snapshot_index();
        assert_eq!(snapshot_index, cluster.node(3).log().snapshot_index());
        assert!(cluster.node(1).log().last_index() > snapshot_index);
        // A new leader term starts probing node 1 from the end of the compacted log.
        cluster.crash(leader);
        cluster.tick_all(30);
        cluster.restart(leader);
        cluster.tick_all(40);
        let leader = cluster.leader().expect("2 or 3 leads again");
        assert_ne!(leader, 1);
        cluster.heal();
        cluster.tick_all(10);
        let expected = cluster.node(leader).log();
        let follower = cluster.node(1).log();
        assert_eq!(follower.last_index(), expected.last_index());
        assert_eq!(follower.last_term(), expected.last_term());
        assert_eq!(
            cluster.peers[&1]
                .storage
                .snapshot
                .as_ref()
                .map(|s| s.meta.index),
            Some(snapshot_index)
        );
    }

    // A follower that missed compacted entries catches up through a chunked snapshot.
    #[test]
    fn snapshot_catch_up() {
        let mut cluster = Cluster::new(&[1, 2, 3], |config| config.snapshot_chunk_bytes = 3);
        cluster.elect(1);
        cluster.isolate(3);
        for k in 0..5 {
            cluster
                .node_mut(1)
                .propose(payload(&format!("v{k}")))
                .unwrap();
        }
        cluster.stabilize();
        cluster.compact(1, payload("snapshot-bytes"));
        assert!(cluster.node(1).log().first_index() > 2);
        cluster.heal();
        cluster.tick_all(3);
        let peer = &cluster.peers[&3];
        assert_eq!(
            peer.storage.snapshot.as_ref().unwrap().data.as_ref(),
            b"snapshot-bytes"
        );
        assert_eq!(peer.node.log().committed, cluster.node(1).log().committed);
        cluster.node_mut(1).propose(payload("after")).unwrap();
        cluster.stabilize();
        assert_eq!(normal_payloads(&cluster.peers[&3]), vec![b"after".to_vec()]);
    }

    // Leadership moves to the transfer target.
    #[test]
    fn transfer_leadership() {
        let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
        cluster.elect(1);
        cluster.node_mut(1).transfer_leader(3).unwrap();
        cluster.stabilize();
        assert_eq!(cluster.leader(), Some(3));
    }

    // A learner is added, replicates, is promoted, and can then lead.
    #[test]
    fn membership_add_learner_and_promote() {
        let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
        cluster.add_empty_peer(4, |_| {});
        cluster.elect(1);
        let change = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: 4,
        };
        cluster.node_mut(1).propose_conf_change(change).unwrap();
        cluster.stabilize();
        cluster.tick_all(3);
        assert!(cluster.node(1).conf().is_learner(4));
        assert_eq!(
            cluster.node(4).log().committed,
            cluster.node(1).log().committed
        );
        let promote = ConfChange {
            kind: ConfChangeKind::AddVoter,
            node_id: 4,
        };
        cluster.node_mut(1).propose_conf_change(promote).unwrap();
        cluster.stabilize();
        assert!(cluster.node(4).conf().is_voter(4));
        assert_eq!(
            cluster.node(4).conf(),
            cluster.node(1).conf(),
            "the new voter must know the whole membership, or it elects itself alone"
        );
        cluster.node_mut(1).transfer_leader(4).unwrap();
        cluster.stabilize();
        assert_eq!(cluster.leader(), Some(4));
    }

    // Restarted nodes come back with their durable log and rejoin.
    #[test]
    fn crash_and_restart() {
        let mut cluster = Cluster::new(&[1, 2, 3], |_| {});
        cluster.elect(1);
        cluster.node_mut(1).propose(payload("a")).unwrap();
        cluster.stabilize();
        cluster.crash(1);
        cluster.tick_all(40);
        let leader = cluster.leader().expect("new leader");
        assert_ne!(leader, 1);
        cluster.node_mut(leader).propose(payload("b")).unwrap();
        cluster.stabilize();
        cluster.restart(1);
        cluster.tick_all(5);
        let applied = normal_payloads(&cluster.peers[&1]);
        assert_eq!(applied, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
