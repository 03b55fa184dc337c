//! The values Raft exchanges with its caller and its peers: entries, hard state,
//! configuration, snapshots and messages. Plain Rust types; `crate::codec` maps them to
//! and from the FlatBuffers schema at the edge.

use std::sync::Arc;

/// A replica's id inside a group. 0 means "none".
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A log index. The first real entry has index 1; 0 means "before the log".
pub type Index = u64;

/// The id that means "no node" (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// Entry payloads are shared, not copied, as one entry travels to the log, the WAL batch,
/// every follower's message and the state machine.
pub type Payload = Arc<[u8]>;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An opaque command for the state machine. An empty payload is the leader's no-op.
    Normal,
    /// An encoded [`ConfChange`].
    ConfChange,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Payload,
}

impl Entry {
    /// Bytes this entry counts for when messages and batches are bounded by size.
    pub fn size_bytes(&self) -> usize {
        // term + index + kind: the fixed part of an entry on the wire.
        17 + self.data.len()
    }
}

/// The state that must be durable before a vote or an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: NodeId,
    pub commit: Index,
}

/// A single-node membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a voter, or promote a learner to voter.
    AddVoter,
    /// Add a learner (receives the log, does not vote).
    AddLearner,
    /// Remove a voter or a learner.
    RemoveNode,
}

/// One membership change: what happens to which node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfChange {
    pub kind: ConfChangeKind,
    pub node_id: NodeId,
}

impl ConfChange {
    /// Encoded size: kind (1 byte) + node id (8 bytes, little-endian).
    pub const ENCODED_BYTES: usize = 9;

    /// Encodes the change as an entry payload.
    pub fn encode(&self) -> Payload {
        let mut bytes = [0u8; Self::ENCODED_BYTES];
        bytes[0] = match self.kind {
            ConfChangeKind::AddVoter => 0,
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::RemoveNode => 2,
        };
        bytes[1..].copy_from_slice(&self.node_id.to_le_bytes());
        Arc::from(&bytes[..])
    }

    /// Decodes an entry payload; `None` when it is not a valid change.
    pub fn decode(bytes: &[u8]) -> Option<ConfChange> {
        if bytes.len() != Self::ENCODED_BYTES {
            return None;
        }
        let kind = match bytes[0] {
            0 => ConfChangeKind::AddVoter,
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::RemoveNode,
            _ => return None,
        };
        let node_id = u64::from_le_bytes(bytes[1..].try_into().ok()?);
        Some(ConfChange { kind, node_id })
    }
}

/// The membership of a group: who votes and who only learns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// Sorted, no duplicates.
    pub voters: Vec<NodeId>,
    /// Sorted, no duplicates, disjoint from `voters`.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A membership of voters only.
    pub fn with_voters(voters: &[NodeId]) -> ConfState {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    /// Is `id` a voter?
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Is `id` a learner?
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Voters and learners, in that order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The membership after `change`. Changes that make no difference return `self`.
    pub fn applied(&self, change: ConfChange) -> ConfState {
        let mut next = self.clone();
        let id = change.node_id;
        next.voters.retain(|&v| v != id);
        next.learners.retain(|&v| v != id);
        match change.kind {
            ConfChangeKind::AddVoter => next.voters.push(id),
            ConfChangeKind::AddLearner => {
                // A voter is never demoted by "add learner": that would need a joint
                // configuration, which corekv does not use.
                if self.is_voter(id) {
                    next.voters.push(id);
                } else {
                    next.learners.push(id);
                }
            }
            ConfChangeKind::RemoveNode => {}
        }
        next.voters.sort_unstable();
        next.learners.sort_unstable();
        next
    }
}

/// What a snapshot covers: the log up to `index` (whose term is `term`) and the membership
/// at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf: ConfState,
}

/// A state machine snapshot with its metadata. `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Payload,
}

/// One piece of a snapshot in flight from a leader to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the whole snapshot.
    pub offset: u64,
    /// Total size of the snapshot in bytes.
    pub total_bytes: u64,
    pub data: Payload,
}

/// The kinds of message replicas exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Candidate asks for a vote. `index`/`log_term`: the candidate's last entry.
    Vote,
    VoteResponse,
    /// A would-be candidate asks whether it could win, without raising terms.
    PreVote,
    PreVoteResponse,
    /// Leader appends `entries` after (`index`, `log_term`) and announces `commit`.
    Append,
    /// Success: `index` is the follower's last matching index. Reject: `index` is the
    /// rejected `index` of the append, `reject_hint`/`log_term` point at where to retry.
    AppendResponse,
    /// Leader's liveness beacon; `context` names a read-index round (0: none).
    Heartbeat,
    HeartbeatResponse,
    /// One chunk of a snapshot (`snapshot` is set).
    Snapshot,
    /// Follower has received the snapshot up to byte `index` of chunk stream `log_term`
    /// (the snapshot's index is in `commit`); `reject` asks for a restart from 0.
    SnapshotResponse,
    /// Leader tells the transfer target to campaign now.
    TimeoutNow,
    /// Follower asks the leader for a read index on behalf of read `context`.
    ReadIndex,
    /// Leader answers a follower's read: `index` is the read index (`reject`: no leader
    /// could serve it; retry).
    ReadIndexResponse,
    /// A follower asks its group's leader to close the revision `index` (see
    /// `kv::store` on closed revisions). The shard's groups handle it; a replica that is
    /// handed one ignores it.
    CloseRequest,
}

/// A message between two replicas of one group. Fields not used by a kind are zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub log_term: Term,
    pub index: Index,
    pub commit: Index,
    pub entries: Vec<Entry>,
    pub reject: bool,
    pub reject_hint: Index,
    pub context: u64,
    pub snapshot: Option<SnapshotChunk>,
}

impl Message {
    /// A message of `kind` with every other field zero.
    pub fn new(kind: MessageKind, from: NodeId, to: NodeId, term: Term) -> Message {
        Message {
            kind,
            from,
            to,
            term,
            log_term: 0,
            index: 0,
            commit: 0,
            entries: Vec::new(),
            reject: false,
            reject_hint: 0,
            context: 0,
            snapshot: None,
        }
    }
}

/// A linearizable read that may be served once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read, as given to `read_index`.
    pub context: u64,
    pub index: Index,
}

/// The role a replica plays now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}
