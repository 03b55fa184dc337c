//! The Raft groups of one shard: tick them all, route messages by group, collect one
//! combined Ready (one WAL batch, one frame per peer), apply committed entries to each
//! group's KV store, and match results to the requests waiting for them. No I/O.
//!
//! Every request handed in gets exactly one reply out of [`MultiRaft::ready`], matched by
//! its [`RequestId`]: the caller never has to time out a request this layer accepted,
//! except when the node itself is cut off (then no entry ever commits here).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::kv::{self, Command, KvError, Op, Store};
use crate::raft::{
    self, ConfState, Entry, EntryKind, Index, InitialState, Message, NodeId, RaftNode, ReadError,
    Role, Snapshot, Term, NO_NODE,
};

/// A Raft group's id (a slice of the keyspace).
pub type GroupId = u64;
/// The caller's id for one request; unique among the requests in flight on this shard.
/// Never reuse one (a counter is enough): a linearizable read's id is its read-index
/// context, and a late answer to an earlier read that timed out must not be taken for a
/// new read's.
pub type RequestId = u64;

/// Why a request got no result from the state machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Ask `leader` instead (0: unknown, try another node).
    #[error("not the leader of group {group} (leader hint: {leader})")]
    NotLeader { group: GroupId, leader: NodeId },
    #[error("group {0} does not exist on this node")]
    GroupNotFound(GroupId),
    /// A bound was reached (pending proposals or reads, uncommitted bytes).
    #[error("busy: {0}")]
    Busy(&'static str),
    /// Leadership changed before the outcome was known: the command may or may not have
    /// been applied. Retrying with the same session (client id, seq) is safe.
    #[error("leadership changed; the outcome is unknown, retry with the same session")]
    OutcomeUnknown,
    /// The proposal was overwritten by another leader's entry: it was not applied.
    #[error("the proposal was dropped by a leader change; it was not applied")]
    Dropped,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// The reply to one request.
pub type Reply = Result<kv::Response, ClientError>;

/// Snapshots one `MultiRaft::ready` takes at most (each encodes a group's whole state on
/// the shard's thread); groups past due wait for the next Ready.
pub const SNAPSHOTS_PER_READY_MAX: usize = 1;

/// Settings of a shard's groups.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// This node's id in every group.
    pub node_id: NodeId,
    /// Template for every group's replica (its `id` and `seed` are set per group).
    pub raft: raft::Config,
    pub limits: kv::Limits,
    /// A group snapshots and compacts its log once this many entries (plus a per-group
    /// spread of up to an eighth, see `compact_threshold`) are applied past the last
    /// snapshot.
    pub compact_entries: u64,
    /// Proposals waiting for their entry to apply, per group.
    pub proposals_pending_max: usize,
    /// Linearizable reads waiting, per group.
    pub reads_pending_max: usize,
    /// Ticks a linearizable read may wait for its read index. The request or the answer
    /// can be lost between a follower and the leader, or go to a leader that is gone; then
    /// the read is answered `NotLeader` after this many ticks (retrying a read is safe).
    pub read_index_timeout_ticks: u64,
}

impl ShardConfig {
    pub fn new(node_id: NodeId) -> ShardConfig {
        ShardConfig {
            node_id,
            raft: raft::Config::new(node_id),
            limits: kv::Limits::default(),
            compact_entries: 10_000,
            proposals_pending_max: 100_000,
            reads_pending_max: 100_000,
            // Longer than an election (10 to 20 ticks by default), so a read survives a
            // quick leader change when its answer is merely slow.
            read_index_timeout_ticks: 30,
        }
    }
}

/// What storage holds for one group when the node starts.
#[derive(Clone, Debug)]
pub struct GroupStart {
    pub id: GroupId,
    /// Membership for a new group (ignored when `raft.snapshot` is set).
    pub conf: ConfState,
    /// Hard state, snapshot and entries from storage (empty for a new group).
    pub raft: InitialState,
}

/// What one group asks storage to write in this turn.
#[derive(Clone, Debug)]
pub struct GroupWrite {
    pub group: GroupId,
    /// Replaces the group's whole log and state machine.
    pub snapshot: Option<Snapshot>,
    /// Replace any log suffix from their first index.
    pub entries: Vec<Entry>,
    pub hard_state: Option<raft::HardState>,
}

/// A snapshot this node took of one of its groups: storage keeps it (the log before it
/// is garbage) and the group sends it to followers that fall behind.
#[derive(Clone, Debug)]
pub struct GroupSnapshot {
    pub group: GroupId,
    pub snapshot: Snapshot,
}

/// The shard's work for one loop turn.
#[derive(Debug, Default)]
pub struct ShardReady {
    /// One WAL batch: write all, then one fsync.
    pub writes: Vec<GroupWrite>,
    /// Send now.
    pub messages: Vec<(GroupId, Message)>,
    /// Send only once `writes` (and every earlier batch) are durable.
    pub persisted_messages: Vec<(GroupId, Message)>,
    pub replies: Vec<(RequestId, Reply)>,
    pub snapshots: Vec<GroupSnapshot>,
    /// Hand back to [`MultiRaft::on_persisted`] once `writes` are durable.
    pub token: PersistToken,
}

/// Which Ready of which group a batch made durable.
#[derive(Clone, Debug, Default)]
pub struct PersistToken {
    numbers: Vec<(GroupId, u64)>,
}

impl PersistToken {
    /// Adds a later Ready's token: both are reported durable together, in order.
    pub fn extend(&mut self, later: PersistToken) {
        self.numbers.extend(later.numbers);
    }
}

/// Why a shard's groups cannot be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultiRaftError {
    #[error(transparent)]
    Limits(#[from] kv::LimitsError),
    #[error("group {0} exists already")]
    DuplicateGroup(GroupId),
    #[error("group {group}: the snapshot does not restore: {error}")]
    Restore {
        group: GroupId,
        error: kv::SnapshotError,
    },
    #[error("group {group}: {reason}")]
    Replica { group: GroupId, reason: String },
}

/// Status of one group on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub role: Role,
    pub leader: NodeId,
    pub term: Term,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub first_index: Index,
    pub conf: ConfState,
}

/// A proposal waiting for its entry.
#[derive(Clone, Copy, Debug)]
struct Proposal {
    index: Index,
    term: Term,
    request: RequestId,
}

/// One Raft group with its state machine and waiting requests.
#[derive(Debug)]
struct Group {
    raft: RaftNode,
    store: Store,
    proposals: VecDeque<Proposal>,
    /// Linearizable reads waiting for a read index, by request id (the read context), with
    /// the tick at which each gives up.
    reads_waiting: BTreeMap<RequestId, (Op, u64)>,
    /// The same reads ordered by (deadline tick, request id).
    reads_deadlines: BTreeSet<(u64, RequestId)>,
    /// Ticks since this group was opened.
    ticks: u64,
    /// Reads with a read index, waiting for the store to apply it.
    reads_ready: VecDeque<(Index, RequestId, Op)>,
    /// Storage asked for a snapshot now (the group's old entries pin log segments).
    snapshot_requested: bool,
}

/// All Raft groups of one shard.
#[derive(Debug)]
pub struct MultiRaft {
    config: ShardConfig,
    groups: BTreeMap<GroupId, Group>,
    replies: Vec<(RequestId, Reply)>,
}

impl MultiRaft {
    /// Opens the shard's groups from what storage holds.
    pub fn new(config: ShardConfig, groups: Vec<GroupStart>) -> Result<MultiRaft, MultiRaftError> {
        config.limits.check()?;
        let mut shard = MultiRaft {
            config,
            groups: BTreeMap::new(),
            replies: Vec::new(),
        };
        for start in groups {
            shard.add_group(start)?;
        }
        Ok(shard)
    }

    /// Adds a group (from storage, or new).
    pub fn add_group(&mut self, start: GroupStart) -> Result<(), MultiRaftError> {
        if self.groups.contains_key(&start.id) {
            return Err(MultiRaftError::DuplicateGroup(start.id));
        }
        let mut raft_config = self.config.raft.clone();
        raft_config.id = self.config.node_id;
        // Different groups draw different election timeouts, so they do not all
        // campaign in the same tick.
        raft_config.seed = self.config.raft.seed
            ^ start.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.config.node_id.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let store = match &start.raft.snapshot {
            Some(snapshot) => {
                Store::restore(&snapshot.data).map_err(|error| MultiRaftError::Restore {
                    group: start.id,
                    error,
                })?
            }
            None => Store::new(self.config.limits)?,
        };
        let mut initial = start.raft;
        if initial.snapshot.is_none() {
            initial.conf = start.conf;
        }
        let raft =
            RaftNode::new(raft_config, initial).map_err(|reason| MultiRaftError::Replica {
                group: start.id,
                reason,
            })?;
        let group = Group {
            raft,
            store,
            proposals: VecDeque::new(),
            reads_waiting: BTreeMap::new(),
            reads_deadlines: BTreeSet::new(),
            ticks: 0,
            reads_ready: VecDeque::new(),
            snapshot_requested: false,
        };
        self.groups.insert(start.id, group);
        Ok(())
    }

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Whether this shard holds a replica of `group`.
    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// The replica of `group` (for status and tests).
    pub fn raft(&self, group: GroupId) -> Option<&RaftNode> {
        self.groups.get(&group).map(|group| &group.raft)
    }

    /// The state machine of `group` (for status and tests).
    pub fn store(&self, group: GroupId) -> Option<&Store> {
        self.groups.get(&group).map(|group| &group.store)
    }

    pub fn status(&self) -> Vec<GroupStatus> {
        self.groups
            .iter()
            .map(|(&id, group)| {
                let status = group.raft.status();
                GroupStatus {
                    group: id,
                    role: status.role,
                    leader: status.leader,
                    term: status.term,
                    commit: status.commit,
                    applied: status.applied,
                    last_index: status.last_index,
                    first_index: status.first_index,
                    conf: status.conf,
                }
            })
            .collect()
    }

    /// Advances every group's clock by one tick, and answers the linearizable reads that
    /// waited too long for their read index (see `read_index_timeout_ticks`).
    pub fn tick(&mut self) {
        for (&id, group) in self.groups.iter_mut() {
            group.raft.tick();
            group.ticks += 1;
            while let Some(&(deadline, request)) = group.reads_deadlines.first() {
                if deadline > group.ticks {
                    break;
                }
                group.reads_deadlines.pop_first();
                let removed = group.reads_waiting.remove(&request);
                debug_assert!(removed.is_some(), "every deadline has its read");
                let error = ClientError::NotLeader {
                    group: id,
                    leader: group.raft.leader(),
                };
                self.replies.push((request, Err(error)));
            }
        }
    }

    /// Feeds a peer's message to its group. Messages for unknown groups are dropped.
    pub fn step(&mut self, group: GroupId, message: Message) {
        if let Some(group) = self.groups.get_mut(&group) {
            group.raft.step(message);
        }
    }

    /// Proposes a write (or a read through the log). The reply comes out of `ready()`.
    pub fn propose(&mut self, request: RequestId, group_id: GroupId, command: &Command) {
        let result = self.try_propose(request, group_id, command);
        if let Err(error) = result {
            self.replies.push((request, Err(error)));
        }
    }

    fn try_propose(
        &mut self,
        request: RequestId,
        group_id: GroupId,
        command: &Command,
    ) -> Result<(), ClientError> {
        kv::validate(command, &self.config.limits)?;
        let proposals_max = self.config.proposals_pending_max;
        let group = self
            .groups
            .get_mut(&group_id)
            .ok_or(ClientError::GroupNotFound(group_id))?;
        if group.proposals.len() >= proposals_max {
            return Err(ClientError::Busy("too many pending proposals"));
        }
        let data: raft::Payload = Arc::from(command.encode());
        match group.raft.propose(data) {
            Ok(index) => {
                let term = group.raft.term();
                group.proposals.push_back(Proposal {
                    index,
                    term,
                    request,
                });
                Ok(())
            }
            Err(raft::ProposeError::NotLeader { leader }) => Err(ClientError::NotLeader {
                group: group_id,
                leader,
            }),
            Err(raft::ProposeError::TransferInProgress) => Err(ClientError::NotLeader {
                group: group_id,
                leader: NO_NODE,
            }),
            Err(_) => Err(ClientError::Busy("too many uncommitted bytes")),
        }
    }

    /// Reads through the state machine without the log. Linearizable reads wait for a
    /// read index (any replica can serve them: a follower asks the leader); serializable
    /// reads are answered at once from this replica, possibly stale.
    pub fn read(&mut self, request: RequestId, group_id: GroupId, op: Op, serializable: bool) {
        let reads_max = self.config.reads_pending_max;
        let Some(group) = self.groups.get_mut(&group_id) else {
            self.replies
                .push((request, Err(ClientError::GroupNotFound(group_id))));
            return;
        };
        if serializable {
            let reply = group.store.read(&op).map_err(ClientError::from);
            self.replies.push((request, reply));
            return;
        }
        if group.reads_waiting.len() + group.reads_ready.len() >= reads_max {
            self.replies
                .push((request, Err(ClientError::Busy("too many pending reads"))));
            return;
        }
        match group.raft.read_index(request) {
            Ok(()) => {
                let deadline = group.ticks + self.config.read_index_timeout_ticks;
                group.reads_waiting.insert(request, (op, deadline));
                group.reads_deadlines.insert((deadline, request));
            }
            Err(ReadError::NoLeader) => {
                let error = ClientError::NotLeader {
                    group: group_id,
                    leader: NO_NODE,
                };
                self.replies.push((request, Err(error)));
            }
            Err(ReadError::Busy) => {
                self.replies
                    .push((request, Err(ClientError::Busy("too many pending reads"))));
            }
        }
    }

    /// Asks the leader of `group` to hand leadership to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> Result<(), ClientError> {
        let group_state = self
            .groups
            .get_mut(&group)
            .ok_or(ClientError::GroupNotFound(group))?;
        group_state
            .raft
            .transfer_leader(to)
            .map_err(|_| ClientError::NotLeader {
                group,
                leader: group_state.raft.leader(),
            })
    }

    /// Asks `group` to snapshot and compact its log at the next `ready()`, whatever its
    /// entry count: storage wants the segments its old entries pin.
    pub fn request_snapshot(&mut self, group: GroupId) {
        if let Some(group) = self.groups.get_mut(&group) {
            group.snapshot_requested = true;
        }
    }

    /// Groups this node leads.
    pub fn led_groups(&self) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, g)| g.raft.is_leader())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Is there anything to do?
    pub fn has_ready(&self) -> bool {
        !self.replies.is_empty()
            || self
                .groups
                .values()
                .any(|group| group.raft.has_ready() || group.snapshot_requested)
    }

    /// Collects every group's Ready, applies what committed, and answers what it can.
    pub fn ready(&mut self) -> ShardReady {
        let mut out = ShardReady::default();
        let compact_entries = self.config.compact_entries;
        for (&id, group) in self.groups.iter_mut() {
            if group.raft.has_ready() {
                group_ready(id, group, &mut out);
            }
            // After applying (or on request, for an idle group whose old entries pin WAL
            // segments): a snapshot that lets the log be compacted. Taking one stops the
            // loop for the time it takes to encode the group's state, so a Ready takes at
            // most SNAPSHOTS_PER_READY_MAX; a group past due is asked again for the next.
            let threshold = compact_threshold(id, compact_entries);
            if out.snapshots.len() >= SNAPSHOTS_PER_READY_MAX {
                if compact_due(group, threshold) {
                    group.snapshot_requested = true;
                }
                continue;
            }
            if let Some(snapshot) = maybe_compact(group, threshold) {
                out.snapshots.push(GroupSnapshot {
                    group: id,
                    snapshot,
                });
            }
        }
        out.replies.append(&mut self.replies);
        out
    }

    /// Reports that the writes of a `ShardReady` are durable.
    pub fn on_persisted(&mut self, token: PersistToken) {
        for (id, number) in token.numbers {
            if let Some(group) = self.groups.get_mut(&id) {
                group.raft.on_persisted(number);
            }
        }
    }
}

/// Takes one group's Ready into `out`: what to persist and send, then applies what
/// committed and serves the reads that became ready.
fn group_ready(id: GroupId, group: &mut Group, out: &mut ShardReady) {
    let ready = group.raft.ready();
    out.token.numbers.push((id, ready.number));
    if let Some(soft) = ready.soft_state {
        if soft.role != Role::Leader {
            // The outcome of what this replica proposed is now unknown to it.
            for proposal in group.proposals.drain(..) {
                out.replies
                    .push((proposal.request, Err(ClientError::OutcomeUnknown)));
            }
        }
    }
    if ready.must_persist() {
        out.writes.push(GroupWrite {
            group: id,
            snapshot: ready.snapshot.clone(),
            entries: ready.entries,
            hard_state: ready.hard_state,
        });
    }
    out.messages
        .extend(ready.messages.into_iter().map(|message| (id, message)));
    out.persisted_messages.extend(
        ready
            .persisted_messages
            .into_iter()
            .map(|message| (id, message)),
    );
    if let Some(snapshot) = &ready.snapshot {
        group.store = restore_store(id, &snapshot.data);
        for proposal in group.proposals.drain(..) {
            out.replies
                .push((proposal.request, Err(ClientError::OutcomeUnknown)));
        }
    }
    for entry in &ready.committed_entries {
        apply_entry(group, entry, &mut out.replies);
    }
    for read in ready.read_states {
        if let Some((op, deadline)) = group.reads_waiting.remove(&read.context) {
            group.reads_deadlines.remove(&(deadline, read.context));
            group.reads_ready.push_back((read.index, read.context, op));
        }
    }
    for context in ready.failed_reads {
        if let Some((_, deadline)) = group.reads_waiting.remove(&context) {
            group.reads_deadlines.remove(&(deadline, context));
            let error = ClientError::NotLeader {
                group: id,
                leader: group.raft.leader(),
            };
            out.replies.push((context, Err(error)));
        }
    }
    serve_reads(group, &mut out.replies);
}

fn restore_store(group: GroupId, data: &[u8]) -> Store {
    // The leader took this snapshot from its own store and it arrived through checksummed
    // frames; a snapshot that does not restore means this replica cannot follow the group
    // at all, and continuing would serve wrong data.
    Store::restore(data).unwrap_or_else(|error| {
        panic!("group {group}: a snapshot from the leader does not restore: {error}")
    })
}

/// Applies one committed entry and answers the proposal that carried it, if it was ours.
fn apply_entry(group: &mut Group, entry: &Entry, replies: &mut Vec<(RequestId, Reply)>) {
    let outcome = match entry.kind {
        EntryKind::Normal if !entry.data.is_empty() => match Command::decode(&entry.data) {
            Ok(command) => Some(group.store.apply_owned(entry.index, command)),
            Err(_) => {
                // Every replica decodes the same bytes the same way, so skipping keeps
                // them identical; the proposer validated what it encoded.
                group.store.apply_noop(entry.index);
                None
            }
        },
        _ => {
            group.store.apply_noop(entry.index);
            None
        }
    };
    while let Some(proposal) = group.proposals.front().copied() {
        if proposal.index > entry.index {
            break;
        }
        group.proposals.pop_front();
        let reply = if proposal.index == entry.index && proposal.term == entry.term {
            match &outcome {
                Some(outcome) => outcome.clone().map_err(ClientError::from),
                None => Err(ClientError::Dropped),
            }
        } else {
            Err(ClientError::Dropped)
        };
        replies.push((proposal.request, reply));
    }
}

/// Answers the reads whose read index the store has reached.
fn serve_reads(group: &mut Group, replies: &mut Vec<(RequestId, Reply)>) {
    let applied = group.store.applied_index();
    while group
        .reads_ready
        .front()
        .is_some_and(|(index, _, _)| *index <= applied)
    {
        let (_, request, op) = group.reads_ready.pop_front().expect("present");
        replies.push((request, group.store.read(&op).map_err(ClientError::from)));
    }
}

/// The entries a group applies between its snapshots: `compact_entries` plus up to an
/// eighth more, by group. Groups under the same load would otherwise all reach their
/// snapshot in the same few milliseconds, and the stalls of taking them would add up.
fn compact_threshold(group: GroupId, compact_entries: u64) -> u64 {
    let spread = compact_entries / 8;
    // A multiplicative hash so that consecutive groups land far apart in the spread.
    let offset = group.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    compact_entries + offset % spread.max(1)
}

/// Whether `group` has applied enough entries past its last snapshot to take another.
fn compact_due(group: &Group, threshold: u64) -> bool {
    group.raft.log().applied + 1 >= group.raft.log().first_index() + threshold
}

/// Snapshots the store and compacts the log when `threshold` entries were applied since
/// the last snapshot, or on request when anything was.
fn maybe_compact(group: &mut Group, threshold: u64) -> Option<Snapshot> {
    let applied = group.raft.log().applied;
    let first = group.raft.log().first_index();
    let requested = std::mem::take(&mut group.snapshot_requested);
    let due = compact_due(group, threshold);
    if !(due || (requested && applied >= first)) {
        return None;
    }
    debug_assert_eq!(
        group.store.applied_index(),
        applied,
        "store and log applied alike"
    );
    let data: raft::Payload = Arc::from(group.store.snapshot());
    group
        .raft
        .compact(applied, data)
        .expect("compacting what was applied");
    group.raft.snapshot().cloned()
}

#[cfg(test)]
mod tests;
