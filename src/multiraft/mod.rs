//! The Raft groups of one shard: tick them all, route messages by group, collect one
//! combined Ready (one WAL batch, one frame per peer), apply committed entries to each
//! group's KV store, and match results to the requests waiting for them. No I/O.
//!
//! Every request handed in gets exactly one reply out of [`MultiRaft::ready`], matched by
//! its [`RequestId`]: the caller never has to time out a request this layer accepted,
//! except when the node itself is cut off (then no entry ever commits here).
//!
//! | file            | owns                                                             |
//! |-----------------|------------------------------------------------------------------|
//! | `mod.rs`        | the groups: tick, step, propose, read, one Ready, apply           |
//! | [`lease_clock`] | the lease group leader's deadlines, on its own clock             |
//! | `leases.rs`     | lease proposals, expiries and checkpoints at a tick, lease reads  |

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub mod lease_clock;
mod leases;

use lease_clock::LeaseClock;
pub use leases::LeaseRead;

use crate::kv::{self, Command, KvError, LogEntry, Op, Store};
use crate::raft::{
    self, ConfState, Entry, EntryKind, Index, InitialState, Message, MessageKind, NodeId, RaftNode,
    ReadError, Role, Snapshot, Term, NO_NODE,
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
    /// A read at a revision, or a close it needs, did not come in time (retrying is safe).
    #[error("group {group} did not close revision {revision} in time")]
    ReadTimeout { group: GroupId, revision: u64 },
    /// A snapshot read at `revision` found, at its read index, writes up to `needed`:
    /// the snapshot must be taken at `needed` or later to contain everything committed
    /// before the read began.
    #[error("revision {revision} is behind writes at {needed}")]
    RevisionBehind { revision: u64, needed: u64 },
}

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// From this replica at once, possibly stale.
    Serializable,
    /// After a read index: everything committed before the read began is seen.
    Linearizable,
    /// The group's state at this revision, once this replica has applied a close (or a
    /// write) at or past it; any replica may serve it. A leader closes the revision on
    /// request; a follower asks its leader to.
    At(u64),
    /// A linearizable read at this revision: after a read index, like `Linearizable`,
    /// then like `At`; refused with [`ClientError::RevisionBehind`] when the read index
    /// shows writes past the revision.
    SnapshotAt(u64),
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
    /// A read at a revision waits as long for its revision to close.
    pub read_index_timeout_ticks: u64,
    /// Ticks between two close promises of a group's leader, also when the group is idle
    /// (see `kv::store` on closed revisions).
    pub close_interval_ticks: u64,
    /// A deliberate bug, for the simulator to prove it checks closed revisions: the leader
    /// stamps a write with the revision it last promised closed (or wrote at) instead of
    /// one above it and its clock.
    pub unsafe_stamp_at_closed: bool,
    /// A deliberate bug, for the simulator to prove it checks snapshot reads: a read at a
    /// revision the group has not closed yet is answered at once from the state at the
    /// closed revision, as if it were the asked one, instead of waiting for the close.
    pub unsafe_read_unclosed_revisions: bool,
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
            close_interval_ticks: 1,
            unsafe_stamp_at_closed: false,
            unsafe_read_unclosed_revisions: false,
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

/// A read waiting for something: its op and how it is served.
#[derive(Clone, Debug)]
struct WaitingRead {
    op: Op,
    mode: ReadMode,
    /// A lease read, answered instead of `op`.
    lease: Option<LeaseRead>,
}

/// One Raft group with its state machine and waiting requests.
#[derive(Debug)]
struct Group {
    raft: RaftNode,
    store: Store,
    proposals: VecDeque<Proposal>,
    /// The highest revision this replica's log holds or promises, and the term in which
    /// it was worked out: a leader stamps every write above it. A new term means another
    /// leader may have written, so it is worked out again from the log.
    stamped: u64,
    stamped_term: Term,
    /// The highest close this replica wants: its own periodic one as leader, or one a
    /// waiting read asks for; and the highest it proposed (as leader) or asked its
    /// leader for (as follower).
    close_wanted: u64,
    close_asked: u64,
    ticks_since_close: u64,
    /// Reads at a revision waiting for it to close, by (revision, request id), with the
    /// tick at which each gives up.
    reads_at: BTreeMap<(u64, RequestId), (Op, u64)>,
    /// Linearizable reads waiting for a read index, by request id (the read context), with
    /// the tick at which each gives up.
    reads_waiting: BTreeMap<RequestId, (WaitingRead, u64)>,
    /// The same reads ordered by (deadline tick, request id).
    reads_deadlines: BTreeSet<(u64, RequestId)>,
    /// Ticks since this group was opened.
    ticks: u64,
    /// Reads with a read index, waiting for the store to apply it.
    reads_ready: VecDeque<(Index, RequestId, WaitingRead)>,
    /// Storage asked for a snapshot now (the group's old entries pin log segments).
    snapshot_requested: bool,
    /// The lease group's leader's deadlines (lease group only, leader only).
    lease_clock: Option<LeaseClock>,
}

/// All Raft groups of one shard.
#[derive(Debug)]
pub struct MultiRaft {
    config: ShardConfig,
    groups: BTreeMap<GroupId, Group>,
    replies: Vec<(RequestId, Reply)>,
    /// Unix milliseconds at the last tick: the lease group leader's clock.
    now_ms: u64,
}

impl MultiRaft {
    /// Opens the shard's groups from what storage holds.
    pub fn new(config: ShardConfig, groups: Vec<GroupStart>) -> Result<MultiRaft, MultiRaftError> {
        config.limits.check()?;
        let mut shard = MultiRaft {
            config,
            groups: BTreeMap::new(),
            replies: Vec::new(),
            now_ms: 0,
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
        let mut store = store;
        store.set_lease_group(start.id == kv::LEASE_GROUP);
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
            stamped: 0,
            stamped_term: 0,
            close_wanted: 0,
            close_asked: 0,
            ticks_since_close: 0,
            reads_at: BTreeMap::new(),
            reads_waiting: BTreeMap::new(),
            reads_deadlines: BTreeSet::new(),
            ticks: 0,
            reads_ready: VecDeque::new(),
            snapshot_requested: false,
            lease_clock: None,
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

    /// Advances every group's clock by one tick; `now_revision` is the shard's hybrid
    /// logical clock, which a leader's periodic close promises. Answers the reads that
    /// waited too long for their read index (see `read_index_timeout_ticks`) or for
    /// their revision to close.
    pub fn tick(&mut self, now_revision: u64) {
        self.now_ms = self.now_ms.max(now_revision >> 16);
        self.tick_leases();
        let close_interval = self.config.close_interval_ticks;
        for (&id, group) in self.groups.iter_mut() {
            group.raft.tick();
            group.ticks += 1;
            group.ticks_since_close += 1;
            if group.raft.is_leader() && group.ticks_since_close >= close_interval {
                group.close_wanted = group.close_wanted.max(now_revision);
            }
            if !group.raft.is_leader() && !group.reads_at.is_empty() {
                // A close request or its effect may have been lost: ask again.
                group.close_asked = 0;
            }
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
            let ticks = group.ticks;
            let expired: Vec<(u64, RequestId)> = group
                .reads_at
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= ticks)
                .map(|(&key, _)| key)
                .collect();
            for (revision, request) in expired {
                group.reads_at.remove(&(revision, request));
                let error = ClientError::ReadTimeout {
                    group: id,
                    revision,
                };
                self.replies.push((request, Err(error)));
            }
        }
    }

    /// Feeds a peer's message to its group. Messages for unknown groups are dropped. A
    /// close request is this layer's own: the leader closes the revision it names.
    pub fn step(&mut self, group: GroupId, message: Message) {
        if let Some(group) = self.groups.get_mut(&group) {
            if message.kind == MessageKind::CloseRequest {
                if group.raft.is_leader() {
                    group.close_wanted = group.close_wanted.max(message.index);
                }
                return;
            }
            group.raft.step(message);
        }
    }

    /// Proposes a write (or a read through the log), stamped with a revision at or above
    /// `revision_floor` (the shard's clock, and what the client has seen). The reply
    /// comes out of `ready()`.
    pub fn propose(
        &mut self,
        request: RequestId,
        group_id: GroupId,
        command: &Command,
        revision_floor: u64,
    ) {
        let result = self.try_propose(request, group_id, command, revision_floor);
        if let Err(error) = result {
            self.replies.push((request, Err(error)));
        }
    }

    fn try_propose(
        &mut self,
        request: RequestId,
        group_id: GroupId,
        command: &Command,
        revision_floor: u64,
    ) -> Result<(), ClientError> {
        kv::validate(command, &self.config.limits)?;
        let proposals_max = self.config.proposals_pending_max;
        let unsafe_stamp = self.config.unsafe_stamp_at_closed;
        let group = self
            .groups
            .get_mut(&group_id)
            .ok_or(ClientError::GroupNotFound(group_id))?;
        if group.proposals.len() >= proposals_max {
            return Err(ClientError::Busy("too many pending proposals"));
        }
        if !group.raft.is_leader() {
            return Err(ClientError::NotLeader {
                group: group_id,
                leader: group.raft.leader(),
            });
        }
        let stamped = group.stamped_now();
        let revision = if unsafe_stamp {
            stamped
        } else {
            revision_floor.max(stamped + 1)
        };
        let data: raft::Payload = Arc::from(LogEntry::encode_write(revision, command));
        match group.raft.propose(data) {
            Ok(index) => {
                group.stamped = group.stamped.max(revision);
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

    /// Proposes a compaction of `group` to `revision` (a write of its own, without a
    /// session: applying it twice compacts alike). The reply is the store's revision.
    ///
    /// A store compacts no further than its closed revision, so a leader that has not
    /// yet promised `revision` closes it first, in the same log: the compaction then
    /// reaches `revision` even in a group that was idle until just now.
    pub fn propose_compaction(&mut self, request: RequestId, group_id: GroupId, revision: u64) {
        let Some(group) = self.groups.get_mut(&group_id) else {
            self.replies
                .push((request, Err(ClientError::GroupNotFound(group_id))));
            return;
        };
        if group.raft.is_leader() && revision > group.stamped_now() {
            let close: raft::Payload = Arc::from(LogEntry::Close { revision }.encode());
            if group.raft.propose(close).is_ok() {
                group.stamped = revision;
                group.ticks_since_close = 0;
            }
        }
        let data: raft::Payload = Arc::from(LogEntry::Compact { revision }.encode());
        match group.raft.propose(data) {
            Ok(index) => {
                let term = group.raft.term();
                group.proposals.push_back(Proposal {
                    index,
                    term,
                    request,
                });
            }
            Err(raft::ProposeError::NotLeader { leader }) => {
                let error = ClientError::NotLeader {
                    group: group_id,
                    leader,
                };
                self.replies.push((request, Err(error)));
            }
            Err(_) => {
                let error = ClientError::NotLeader {
                    group: group_id,
                    leader: NO_NODE,
                };
                self.replies.push((request, Err(error)));
            }
        }
    }

    /// Reads through the state machine without the log, as `mode` says (see
    /// [`ReadMode`]).
    pub fn read(&mut self, request: RequestId, group_id: GroupId, op: Op, mode: ReadMode) {
        self.read_waiting(request, group_id, op, mode, None);
    }

    fn read_waiting(
        &mut self,
        request: RequestId,
        group_id: GroupId,
        op: Op,
        mode: ReadMode,
        lease: Option<LeaseRead>,
    ) {
        let reads_max = self.config.reads_pending_max;
        let timeout_ticks = self.config.read_index_timeout_ticks;
        let unsafe_unclosed = self.config.unsafe_read_unclosed_revisions;
        let Some(group) = self.groups.get_mut(&group_id) else {
            self.replies
                .push((request, Err(ClientError::GroupNotFound(group_id))));
            return;
        };
        if group.reads_waiting.len() + group.reads_ready.len() + group.reads_at.len() >= reads_max
            && mode != ReadMode::Serializable
        {
            self.replies
                .push((request, Err(ClientError::Busy("too many pending reads"))));
            return;
        }
        match mode {
            ReadMode::Serializable => {
                let reply = group.store.read(&op).map_err(ClientError::from);
                self.replies.push((request, reply));
            }
            ReadMode::At(revision)
                if unsafe_unclosed && revision > group.store.closed_revision() =>
            {
                let closed = group.store.closed_revision();
                let reply = group.store.read_at(&op, closed).map(|mut response| {
                    response.revision = revision;
                    response
                });
                self.replies
                    .push((request, reply.map_err(ClientError::from)));
            }
            ReadMode::At(revision) => {
                if let Some(reply) = group.read_at_now(request, op, revision, timeout_ticks) {
                    self.replies.push((request, reply));
                }
            }
            ReadMode::Linearizable | ReadMode::SnapshotAt(_) => {
                match group.raft.read_index(request) {
                    Ok(()) => {
                        let deadline = group.ticks + timeout_ticks;
                        let read = WaitingRead { op, mode, lease };
                        group.reads_waiting.insert(request, (read, deadline));
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
            || self.groups.values().any(|group| {
                group.raft.has_ready()
                    || group.snapshot_requested
                    || group.close_wanted > group.close_asked
            })
    }

    /// Collects every group's Ready, applies what committed, and answers what it can.
    pub fn ready(&mut self) -> ShardReady {
        let mut out = ShardReady::default();
        let compact_entries = self.config.compact_entries;
        let node_id = self.config.node_id;
        let read_timeout_ticks = self.config.read_index_timeout_ticks;
        let now_ms = self.now_ms;
        for (&id, group) in self.groups.iter_mut() {
            group.ask_for_close(node_id, id, &mut out.messages);
            if group.raft.has_ready() {
                group_ready(id, group, read_timeout_ticks, now_ms, &mut out);
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

impl Group {
    /// The highest revision the log holds or promises, worked out again from the log in a
    /// new term (another leader may have written since this replica last knew).
    fn stamped_now(&mut self) -> u64 {
        let term = self.raft.term();
        if self.stamped_term != term {
            let log = self.raft.log();
            let mut highest = self.store.closed_revision();
            for index in log.applied + 1..=log.last_index() {
                if let Some(revision) = log
                    .entry_at(index)
                    .and_then(|entry| LogEntry::revision_of(&entry.data))
                {
                    highest = highest.max(revision);
                }
            }
            self.stamped = highest;
            self.stamped_term = term;
        }
        self.stamped
    }

    /// Proposes the close this replica wants (as leader), or asks its leader for it (as
    /// follower); one per group per turn, however many reads want it.
    fn ask_for_close(
        &mut self,
        node_id: NodeId,
        id: GroupId,
        messages: &mut Vec<(GroupId, Message)>,
    ) {
        if self.close_wanted <= self.close_asked {
            return;
        }
        // One try per want: a leader that cannot propose now (a transfer, the bound on
        // uncommitted entries) tries again at its next periodic close; a follower without
        // a leader, or whose request was lost, asks again at the next tick while reads
        // wait (see `tick`).
        let wanted = self.close_wanted;
        self.close_asked = wanted;
        if self.raft.is_leader() {
            let revision = wanted.max(self.stamped_now());
            let data: raft::Payload = Arc::from(LogEntry::Close { revision }.encode());
            if self.raft.propose(data).is_ok() {
                self.stamped = self.stamped.max(revision);
                self.close_asked = revision;
                self.ticks_since_close = 0;
            }
            return;
        }
        let leader = self.raft.leader();
        if leader == NO_NODE {
            return;
        }
        let mut request =
            Message::new(MessageKind::CloseRequest, node_id, leader, self.raft.term());
        request.index = wanted;
        messages.push((id, request));
    }

    /// Serves a read at `revision` now if it is closed here, else waits for it (and asks
    /// for it to be closed). `None`: it waits.
    fn read_at_now(
        &mut self,
        request: RequestId,
        op: Op,
        revision: u64,
        timeout_ticks: u64,
    ) -> Option<Reply> {
        if revision <= self.store.closed_revision() || revision < self.store.compact_revision() {
            return Some(self.store.read_at(&op, revision).map_err(ClientError::from));
        }
        let deadline = self.ticks + timeout_ticks;
        self.reads_at.insert((revision, request), (op, deadline));
        self.close_wanted = self.close_wanted.max(revision);
        None
    }
}

/// Takes one group's Ready into `out`: what to persist and send, then applies what
/// committed and serves the reads that became ready.
fn group_ready(
    id: GroupId,
    group: &mut Group,
    timeout_ticks: u64,
    now_ms: u64,
    out: &mut ShardReady,
) {
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
        group.store.set_lease_group(id == kv::LEASE_GROUP);
        for proposal in group.proposals.drain(..) {
            out.replies
                .push((proposal.request, Err(ClientError::OutcomeUnknown)));
        }
    }
    for entry in &ready.committed_entries {
        apply_entry(group, entry, now_ms, &mut out.replies);
    }
    for read in ready.read_states {
        if let Some((waiting, deadline)) = group.reads_waiting.remove(&read.context) {
            group.reads_deadlines.remove(&(deadline, read.context));
            group
                .reads_ready
                .push_back((read.index, read.context, waiting));
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
    serve_reads(group, timeout_ticks, &mut out.replies);
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
fn apply_entry(
    group: &mut Group,
    entry: &Entry,
    now_ms: u64,
    replies: &mut Vec<(RequestId, Reply)>,
) {
    let outcome = match entry.kind {
        EntryKind::Normal if !entry.data.is_empty() => match LogEntry::decode(&entry.data) {
            Ok(LogEntry::Write { revision, command }) => {
                Some(group.store.apply_owned(entry.index, revision, command))
            }
            Ok(LogEntry::Close { revision }) => {
                group.store.apply_close(entry.index, revision);
                None
            }
            Ok(LogEntry::Lease { revision, op }) => Some(leases::apply_lease_entry(
                group,
                entry.index,
                revision,
                op,
                now_ms,
            )),
            Ok(LogEntry::Compact { revision }) => {
                group.store.apply_compact(entry.index, revision);
                Some(Ok(kv::Response {
                    revision: group.store.revision(),
                    op: kv::OpResponse::Compact(kv::CompactResponse {
                        compact_revision: group.store.compact_revision(),
                    }),
                }))
            }
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

/// Answers the reads whose read index the store has reached, and the reads at a revision
/// the store has closed.
fn serve_reads(group: &mut Group, timeout_ticks: u64, replies: &mut Vec<(RequestId, Reply)>) {
    let applied = group.store.applied_index();
    while group
        .reads_ready
        .front()
        .is_some_and(|(index, _, _)| *index <= applied)
    {
        let (_, request, read) = group.reads_ready.pop_front().expect("present");
        match read.mode {
            ReadMode::SnapshotAt(revision) => {
                // Everything committed before the read began is applied now: the
                // snapshot must not be older than any of it.
                let needed = group.store.revision();
                if needed > revision {
                    let error = ClientError::RevisionBehind { revision, needed };
                    replies.push((request, Err(error)));
                } else if let Some(reply) =
                    group.read_at_now(request, read.op, revision, timeout_ticks)
                {
                    replies.push((request, reply));
                }
            }
            _ => {
                let reply = match read.lease {
                    Some(lease) => leases::serve_lease_read(group, lease),
                    None => group.store.read(&read.op).map_err(ClientError::from),
                };
                replies.push((request, reply));
            }
        }
    }
    let closed = group.store.closed_revision();
    while let Some(entry) = group.reads_at.first_entry() {
        if entry.key().0 > closed {
            break;
        }
        let ((revision, request), (op, _)) = entry.remove_entry();
        let reply = group
            .store
            .read_at(&op, revision)
            .map_err(ClientError::from);
        replies.push((request, reply));
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
/// A leader streaming its snapshot to a follower waits this many thresholds before it
/// takes a newer one.
const COMPACT_WHILE_SENDING_THRESHOLDS: u64 = 4;

/// Whether `group` has applied enough entries past its last snapshot to take another. A
/// newer snapshot restarts a transfer under way, and a follower whose transfer takes
/// longer than the leader takes to compact would never catch up: while a transfer runs,
/// the leader waits for a few thresholds more (its log stays bounded).
fn compact_due(group: &Group, threshold: u64) -> bool {
    let log = group.raft.log();
    let threshold = if group.raft.is_sending_snapshot() {
        threshold * COMPACT_WHILE_SENDING_THRESHOLDS
    } else {
        threshold
    };
    log.applied + 1 >= log.first_index() + threshold
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
