//! The Raft replica: roles, `step`, `tick`, proposals, reads, leadership transfer,
//! membership, snapshots, and the `Ready`/`on_persisted` interface.
//!
//! Role dispatch happens in one place ([`RaftNode::step`]); leader-only logic lives in
//! `step_leader`. Nothing here reads a clock or touches I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::config::Config;
use super::log::RaftLog;
use super::progress::{Inflights, Progress, ProgressState};
use super::rng::SeededRng;
use super::types::*;

/// `Message::context` of a vote request sent because the leader asked for a transfer:
/// voters answer it even while they believe a leader is alive.
pub const CAMPAIGN_TRANSFER: u64 = 1;

/// What a replica restarts from: everything its storage holds.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// Membership when there is no snapshot: the group's initial membership. A replica
    /// that joins later starts from it too, since changes after it are only in the log.
    pub conf: ConfState,
    /// The latest snapshot, if the log was ever compacted (or a snapshot installed).
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// Role, leader and term: what callers route by. Reported in a `Ready` when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: NodeId,
    pub term: Term,
}

/// Why a proposal was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader})")]
    NotLeader { leader: NodeId },
    #[error("leadership is being transferred")]
    TransferInProgress,
    #[error("too many uncommitted bytes")]
    Busy,
    #[error("a membership change is still pending")]
    ConfChangePending,
    #[error("the leader has not committed an entry of its term yet")]
    NotReadyForConfChange,
    #[error("invalid membership change")]
    InvalidConfChange,
}

/// Why a read index was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no leader is known")]
    NoLeader,
    #[error("too many reads pending")]
    Busy,
}

/// Why a leadership transfer was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader})")]
    NotLeader { leader: NodeId },
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

/// Why a compaction was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("index {index} is not applied yet (applied {applied})")]
    NotApplied { index: Index, applied: Index },
}

/// What the caller must do after a round of `step`/`tick`/`propose`: persist, send, apply.
///
/// A `Ready` is a take: what it hands out is never handed out again. The caller:
/// 1. writes `snapshot`, `entries` (which replace any log suffix from their first index)
///    and `hard_state` to storage, in that order, after the writes of earlier Readies;
/// 2. sends `messages` at once;
/// 3. applies `committed_entries` (and restores `snapshot` first if set) in order;
/// 4. once the writes of this Ready and all earlier ones are durable, sends
///    `persisted_messages` and calls [`RaftNode::on_persisted`] with `number`.
///
/// One fsync can make the Readies of many groups durable.
#[derive(Debug, Default)]
pub struct Ready {
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads that may be served once `index` is applied.
    pub read_states: Vec<ReadState>,
    /// Reads (by context) this replica can no longer confirm: it lost leadership.
    pub failed_reads: Vec<u64>,
}

impl Ready {
    /// Does this Ready ask storage to write anything?
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// A read waiting for its heartbeat round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    from: NodeId,
    context: u64,
    index: Index,
    round: u64,
}

/// A Ready handed out whose writes are not yet reported durable.
#[derive(Clone, Copy, Debug)]
struct UnpersistedReady {
    number: u64,
    last_entry: Option<(Index, Term)>,
    self_vote_term: Option<Term>,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// A snapshot of a replica's state for status reports and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: Index,
    pub applied: Index,
    pub persisted: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub conf: ConfState,
}

/// One Raft replica.
#[derive(Debug)]
pub struct RaftNode {
    config: Config,
    id: NodeId,
    term: Term,
    vote: NodeId,
    leader: NodeId,
    role: Role,
    log: RaftLog,
    conf: ConfState,
    /// Membership at the snapshot, and after each applied change since.
    conf_base: ConfState,
    conf_history: Vec<(Index, ConfState)>,
    /// Ordered so that broadcasts are deterministic.
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    rng: SeededRng,
    transferee: Option<NodeId>,
    pending_conf_index: Index,
    uncommitted_bytes: usize,
    /// New entries or a new commit index await a broadcast at the next `ready()`.
    broadcast_pending: bool,
    self_vote_pending: Option<Term>,
    read_round: u64,
    read_round_needed: bool,
    reads_waiting_for_term: Vec<PendingRead>,
    reads_pending: VecDeque<PendingRead>,
    /// The latest local snapshot: what a lagging follower is sent.
    snapshot: Option<Snapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,
    snapshot_to_hand_out: Option<Snapshot>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,
    next_ready_number: u64,
    unpersisted_readies: VecDeque<UnpersistedReady>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
}

impl RaftNode {
    /// A replica restarted from `state` (or new, when `state` is empty).
    pub fn new(config: Config, state: InitialState) -> Result<RaftNode, String> {
        config.validate()?;
        let (snapshot_index, snapshot_term, conf) = match &state.snapshot {
            Some(snapshot) => (
                snapshot.meta.index,
                snapshot.meta.term,
                snapshot.meta.conf.clone(),
            ),
            None => (0, 0, state.conf.clone()),
        };
        if let Some(first) = state.entries.first() {
            if first.index != snapshot_index + 1 {
                return Err(format!(
                    "entries start at {} but the snapshot ends at {snapshot_index}",
                    first.index
                ));
            }
        }
        let log = RaftLog::restore(
            snapshot_index,
            snapshot_term,
            state.entries,
            state.hard_state.commit,
        );
        let id = config.id;
        let mut node = RaftNode {
            rng: SeededRng::new(config.seed),
            id,
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            leader: NO_NODE,
            role: Role::Follower,
            log,
            conf_base: conf.clone(),
            conf,
            conf_history: Vec::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            transferee: None,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            broadcast_pending: false,
            self_vote_pending: None,
            read_round: 0,
            read_round_needed: false,
            reads_waiting_for_term: Vec::new(),
            reads_pending: VecDeque::new(),
            snapshot: state.snapshot,
            incoming_snapshot: None,
            snapshot_to_hand_out: None,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            next_ready_number: 1,
            unpersisted_readies: VecDeque::new(),
            last_hard_state: state.hard_state,
            last_soft_state: SoftState {
                role: Role::Follower,
                leader: NO_NODE,
                term: 0,
            },
            config,
        };
        node.last_hard_state.commit = node.log.committed;
        node.randomize_election_timeout();
        node.last_soft_state = node.soft_state();
        Ok(node)
    }

    // ----- accessors -------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// The leader's record of `id` (for tests and status).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// Whether this leader is streaming its snapshot to some follower.
    pub fn is_sending_snapshot(&self) -> bool {
        self.role == Role::Leader
            && self
                .progress
                .values()
                .any(|progress| progress.state == ProgressState::Snapshot)
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            persisted: self.log.persisted(),
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            conf: self.conf.clone(),
        }
    }

    /// May this replica become leader?
    fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    // ----- inputs ----------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.election_elapsed = 0;
                self.campaign(self.config.pre_vote, false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, NO_NODE);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transferee = None;
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_timeout_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Starts an election now (as if the election timer fired).
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader {
            self.campaign(self.config.pre_vote, false);
        }
    }

    /// Proposes a command. Returns the index the entry will have if it commits.
    pub fn propose(&mut self, data: Payload) -> Result<Index, ProposeError> {
        self.propose_entry(EntryKind::Normal, data)
    }

    /// Proposes a membership change. At most one may be pending, and only once the leader
    /// has committed an entry of its own term.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.committed_in_term() {
            return Err(ProposeError::NotReadyForConfChange);
        }
        if self.pending_conf_index > self.log.applied {
            return Err(ProposeError::ConfChangePending);
        }
        let next = self.conf.applied(change);
        let member = self.conf.members().any(|id| id == change.node_id);
        if change.node_id == NO_NODE
            || next.voters.is_empty()
            || (change.kind == ConfChangeKind::RemoveNode && !member)
        {
            return Err(ProposeError::InvalidConfChange);
        }
        let index = self.propose_entry(EntryKind::ConfChange, change.encode())?;
        self.pending_conf_index = index;
        Ok(index)
    }

    fn propose_entry(&mut self, kind: EntryKind, data: Payload) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind,
            data,
        };
        let bytes = entry.size_bytes();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.config.uncommitted_bytes_max
        {
            return Err(ProposeError::Busy);
        }
        self.uncommitted_bytes += bytes;
        let index = entry.index;
        self.log.append(entry);
        self.broadcast_pending = true;
        Ok(index)
    }

    /// Starts a linearizable read named `context`: a `ReadState` with this context comes
    /// out in a later `Ready` (or the context is listed in `failed_reads`).
    pub fn read_index(&mut self, context: u64) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => {
                if self.reads_pending.len() + self.reads_waiting_for_term.len()
                    >= self.config.pending_reads_max
                {
                    return Err(ReadError::Busy);
                }
                self.enqueue_read(self.id, context);
                Ok(())
            }
            _ if self.leader != NO_NODE => {
                let mut message =
                    Message::new(MessageKind::ReadIndex, self.id, self.leader, self.term);
                message.context = context;
                self.messages.push(message);
                Ok(())
            }
            _ => Err(ReadError::NoLeader),
        }
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.conf.is_voter(target) {
            return Err(TransferError::NotVoter(target));
        }
        if target == self.id || self.transferee == Some(target) {
            return Ok(());
        }
        self.transferee = Some(target);
        // The transfer must finish within an election timeout.
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    /// The leader transferring leadership to, if any.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee
    }

    /// Compacts the log up to `index` (applied), which the state machine snapshot `data`
    /// covers. The snapshot is kept to catch up followers that need older entries.
    pub fn compact(&mut self, index: Index, data: Payload) -> Result<(), CompactError> {
        if index > self.log.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Ok(());
        }
        let term = self
            .log
            .term(index)
            .expect("applied entries are in the log");
        let conf = self.conf_at(index);
        self.log.compact_to(index);
        // Keep the membership at the snapshot as the new base, and later changes.
        self.conf_history.retain(|(at, _)| *at > index);
        self.conf_base = conf.clone();
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        });
        Ok(())
    }

    /// The latest local snapshot.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    fn conf_at(&self, index: Index) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or_else(|| self.conf_base.clone(), |(_, conf)| conf.clone())
    }

    // ----- step ------------------------------------------------------------------------

    /// Feeds a message from a peer. Invalid messages are dropped.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id || !self.is_well_formed(&message) {
            return;
        }
        if message.term > self.term {
            let is_vote_request = matches!(message.kind, MessageKind::Vote | MessageKind::PreVote);
            if is_vote_request {
                let forced = message.context == CAMPAIGN_TRANSFER;
                let in_lease = self.config.check_quorum
                    && self.leader != NO_NODE
                    && self.election_elapsed < self.config.election_timeout_ticks;
                // A replica that heard from a leader recently does not help depose it.
                if !forced && in_lease {
                    return;
                }
            }
            match message.kind {
                // A pre-vote does not raise terms: the candidate has not raised its own.
                MessageKind::PreVote => {}
                MessageKind::PreVoteResponse if !message.reject => {}
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(message.term, message.from)
                }
                _ => self.become_follower(message.term, NO_NODE),
            }
        } else if message.term < self.term {
            self.step_lower_term(message);
            return;
        }
        match message.kind {
            MessageKind::Vote | MessageKind::PreVote => self.handle_vote_request(message),
            _ => match self.role {
                Role::Leader => self.step_leader(message),
                Role::Candidate | Role::PreCandidate => self.step_candidate(message),
                Role::Follower => self.step_follower(message),
            },
        }
    }

    /// Checks what the rest of the code relies on, so a faulty peer cannot trip an assert.
    fn is_well_formed(&self, message: &Message) -> bool {
        if message.from == NO_NODE || message.from == self.id {
            return false;
        }
        for (k, entry) in message.entries.iter().enumerate() {
            if entry.index != message.index + 1 + k as u64 || entry.term > message.term {
                return false;
            }
            if k > 0 && entry.term < message.entries[k - 1].term {
                return false;
            }
        }
        if let Some(first) = message.entries.first() {
            if first.term < message.log_term {
                return false;
            }
        }
        match (&message.snapshot, message.kind) {
            (Some(chunk), MessageKind::Snapshot) => {
                let end = chunk.offset.checked_add(chunk.data.len() as u64);
                end.is_some_and(|end| end <= chunk.total_bytes)
                    && chunk.total_bytes <= self.config.snapshot_bytes_max
                    && chunk.meta.term <= message.term
            }
            (None, MessageKind::Snapshot) => false,
            (Some(_), _) => false,
            (None, _) => true,
        }
    }

    fn step_lower_term(&mut self, message: Message) {
        match message.kind {
            // A leader cut off by a partition keeps sending; tell it the term moved on so
            // it steps down (with check-quorum or pre-vote it would not hear otherwise).
            MessageKind::Append | MessageKind::Heartbeat
                if self.config.check_quorum || self.config.pre_vote =>
            {
                let reply = Message::new(
                    MessageKind::AppendResponse,
                    self.id,
                    message.from,
                    self.term,
                );
                self.messages.push(reply);
            }
            MessageKind::PreVote => {
                let mut reply = Message::new(
                    MessageKind::PreVoteResponse,
                    self.id,
                    message.from,
                    self.term,
                );
                reply.reject = true;
                self.messages.push(reply);
            }
            _ => {}
        }
    }

    fn handle_vote_request(&mut self, message: Message) {
        let pre = message.kind == MessageKind::PreVote;
        let can_vote = self.vote == message.from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre && message.term > self.term);
        let response_kind = if pre {
            MessageKind::PreVoteResponse
        } else {
            MessageKind::VoteResponse
        };
        if can_vote && self.log.is_up_to_date(message.index, message.log_term) {
            let reply = Message::new(response_kind, self.id, message.from, message.term);
            if pre {
                self.messages.push(reply);
            } else {
                self.election_elapsed = 0;
                self.vote = message.from;
                // The vote must be durable before the candidate may count it.
                self.persisted_messages.push(reply);
            }
        } else {
            let mut reply = Message::new(response_kind, self.id, message.from, self.term);
            reply.reject = true;
            self.messages.push(reply);
        }
    }

    fn step_follower(&mut self, message: Message) {
        match message.kind {
            MessageKind::Append => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_append(message);
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_heartbeat(message);
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = message.from;
                self.handle_snapshot_chunk(message);
            }
            MessageKind::TimeoutNow if self.promotable() => self.campaign(false, true),
            MessageKind::ReadIndexResponse => {
                if message.reject {
                    self.failed_reads.push(message.context);
                } else {
                    self.read_states.push(ReadState {
                        context: message.context,
                        index: message.index,
                    });
                }
            }
            MessageKind::ReadIndex => {
                // Not the leader (any more): the asker retries elsewhere.
                self.reject_read(message.from, message.context);
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, message: Message) {
        match message.kind {
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot => {
                // Someone won this term.
                self.become_follower(message.term, message.from);
                self.step_follower(message);
            }
            MessageKind::PreVoteResponse if self.role == Role::PreCandidate => {
                match self.poll(message.from, !message.reject) {
                    VoteResult::Won => self.campaign(false, false),
                    VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                    VoteResult::Pending => {}
                }
            }
            MessageKind::VoteResponse if self.role == Role::Candidate => {
                match self.poll(message.from, !message.reject) {
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                    VoteResult::Pending => {}
                }
            }
            MessageKind::ReadIndex => self.reject_read(message.from, message.context),
            _ => {}
        }
    }

    fn step_leader(&mut self, message: Message) {
        let from = message.from;
        if let Some(progress) = self.progress.get_mut(&from) {
            progress.recent_active = true;
        } else if message.kind != MessageKind::ReadIndex {
            return;
        }
        match message.kind {
            MessageKind::AppendResponse => self.handle_append_response(message),
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(message),
            MessageKind::SnapshotResponse => self.handle_snapshot_response(message),
            MessageKind::ReadIndex => {
                if !self.conf.members().any(|id| id == from)
                    || self.reads_pending.len() + self.reads_waiting_for_term.len()
                        >= self.config.pending_reads_max
                {
                    self.reject_read(from, message.context);
                } else {
                    self.enqueue_read(from, message.context);
                }
            }
            _ => {}
        }
    }

    // ----- follower side ---------------------------------------------------------------

    fn handle_append(&mut self, message: Message) {
        let mut reply = Message::new(
            MessageKind::AppendResponse,
            self.id,
            message.from,
            self.term,
        );
        if message.index < self.log.committed {
            // Everything up to our commit index is already settled. The commit index may
            // run ahead of what this replica has made durable, and the leader takes the
            // answer as a durable match, so it too waits for the persist.
            reply.index = self.log.committed;
            self.persisted_messages.push(reply);
            return;
        }
        match self
            .log
            .maybe_append(message.index, message.log_term, &message.entries)
        {
            Some(last_new) => {
                self.log.commit_to(message.commit.min(last_new));
                reply.index = last_new;
                // Acknowledging entries promises they are durable.
                self.persisted_messages.push(reply);
            }
            None => {
                let probe = message.index.min(self.log.last_index());
                let (hint_index, hint_term) =
                    self.log.find_conflict_by_term(probe, message.log_term);
                reply.index = message.index;
                reply.reject = true;
                reply.reject_hint = hint_index;
                reply.log_term = hint_term;
                self.messages.push(reply);
            }
        }
    }

    fn handle_heartbeat(&mut self, message: Message) {
        self.log
            .commit_to(message.commit.min(self.log.last_index()));
        let mut reply = Message::new(
            MessageKind::HeartbeatResponse,
            self.id,
            message.from,
            self.term,
        );
        reply.context = message.context;
        self.messages.push(reply);
    }

    fn handle_snapshot_chunk(&mut self, message: Message) {
        let chunk = message.snapshot.expect("checked by is_well_formed");
        let mut reply = Message::new(
            MessageKind::SnapshotResponse,
            self.id,
            message.from,
            self.term,
        );
        reply.commit = chunk.meta.index;
        if chunk.meta.index <= self.log.committed {
            // Nothing to install: say how far we are, once that is durable (see
            // handle_append).
            self.incoming_snapshot = None;
            let mut done = Message::new(
                MessageKind::AppendResponse,
                self.id,
                message.from,
                self.term,
            );
            done.index = self.log.committed;
            self.persisted_messages.push(done);
            return;
        }
        // A first chunk starts a new reception, unless it is a late copy of the first
        // chunk of the snapshot being received: restarting then would drop bytes the
        // leader already counts as acknowledged and will not send again.
        let same_snapshot = self.incoming_snapshot.as_ref().is_some_and(|incoming| {
            incoming.meta == chunk.meta && incoming.total_bytes == chunk.total_bytes
        });
        if chunk.offset == 0 && !same_snapshot {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: chunk.meta.clone(),
                total_bytes: chunk.total_bytes,
                data: Vec::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            reply.reject = true;
            self.messages.push(reply);
            return;
        };
        if incoming.meta != chunk.meta || incoming.total_bytes != chunk.total_bytes {
            reply.reject = true;
            self.messages.push(reply);
            return;
        }
        if chunk.offset == incoming.data.len() as u64 {
            incoming.data.extend_from_slice(&chunk.data);
        }
        reply.index = incoming.data.len() as u64;
        if incoming.data.len() as u64 == incoming.total_bytes {
            let incoming = self.incoming_snapshot.take().expect("present");
            self.install_snapshot(message.from, incoming);
        } else {
            self.messages.push(reply);
        }
    }

    fn install_snapshot(&mut self, leader: NodeId, incoming: IncomingSnapshot) {
        let meta = incoming.meta;
        let mut reply = Message::new(MessageKind::AppendResponse, self.id, leader, self.term);
        reply.index = meta.index;
        if self.log.match_term(meta.index, meta.term) {
            // The log already holds the snapshot's last entry: only the commit moves.
            self.log.commit_to(meta.index);
            self.persisted_messages.push(reply);
            return;
        }
        self.log.install_snapshot(meta.index, meta.term);
        self.conf = meta.conf.clone();
        self.conf_base = meta.conf.clone();
        self.conf_history.clear();
        let snapshot = Snapshot {
            meta,
            data: Arc::from(incoming.data),
        };
        self.snapshot = Some(snapshot.clone());
        self.snapshot_to_hand_out = Some(snapshot);
        self.persisted_messages.push(reply);
    }

    // ----- leader side -----------------------------------------------------------------

    fn handle_append_response(&mut self, message: Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        if message.reject {
            let mut hint = message.reject_hint;
            if message.log_term > 0 {
                hint = self
                    .log
                    .find_conflict_by_term(message.reject_hint, message.log_term)
                    .0;
            }
            let progress = self
                .progress
                .get_mut(&from)
                .expect("checked in step_leader");
            if progress.state == ProgressState::Snapshot {
                return;
            }
            if progress.maybe_decrease_to(message.index, hint) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        let progress = self
            .progress
            .get_mut(&from)
            .expect("checked in step_leader");
        if !progress.maybe_update(message.index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot => {
                let snapshot_index = progress.snapshot.map_or(0, |send| send.index);
                if progress.matched >= snapshot_index {
                    progress.become_probe();
                    progress.become_replicate();
                }
            }
            ProgressState::Replicate => progress.inflights.free_to(message.index),
        }
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
        // Keep the pipeline full.
        while self.send_append(from, false) {}
        if self.transferee == Some(from) && self.progress[&from].matched == last_index {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, message: Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        let progress = self
            .progress
            .get_mut(&from)
            .expect("checked in step_leader");
        progress.probe_sent = false;
        if progress.state == ProgressState::Replicate && progress.inflights.is_full() {
            progress.inflights.free_first();
        }
        if message.context > progress.read_round_acked {
            progress.read_round_acked = message.context;
        }
        if progress.matched < last_index {
            self.send_append(from, true);
        }
        self.release_confirmed_reads();
    }

    fn handle_snapshot_response(&mut self, message: Message) {
        let from = message.from;
        let progress = self
            .progress
            .get_mut(&from)
            .expect("checked in step_leader");
        let Some(send) = progress.snapshot.as_mut() else {
            return;
        };
        if progress.state != ProgressState::Snapshot || message.commit != send.index {
            return;
        }
        if message.reject {
            send.acked_offset = 0;
            send.sent_offset = 0;
        } else {
            send.acked_offset = send.acked_offset.max(message.index);
            send.sent_offset = send.sent_offset.max(send.acked_offset);
        }
        self.send_snapshot_chunks(from);
    }

    /// Commits the highest index a quorum holds, if it is of the current term.
    fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|id| self.progress.get(id).map_or(0, |progress| progress.matched))
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let index = matched[self.quorum() - 1];
        if index <= self.log.committed {
            return false;
        }
        // Figure 8: counting replicas commits only entries of the current term.
        let term_ok =
            self.log.term(index) == Some(self.term) || self.config.unsafe_commit_old_terms;
        if !term_ok {
            return false;
        }
        let before = self.log.committed;
        let first_commit_in_term = !self.committed_in_term();
        self.log.commit_to(index);
        let committed_bytes = self.log.bytes_between(before + 1, index + 1);
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed_bytes);
        if first_commit_in_term && self.committed_in_term() {
            let waiting = std::mem::take(&mut self.reads_waiting_for_term);
            for read in waiting {
                self.enqueue_read(read.from, read.context);
            }
        }
        true
    }

    /// Sends an append to `to` if its window allows. Returns whether a message went out.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if to == self.id || progress.is_paused() {
            return false;
        }
        let previous_index = progress.next - 1;
        let previous_term = self.log.term(previous_index);
        let entries = self
            .log
            .slice(progress.next, u64::MAX, self.config.append_bytes_max);
        let (Some(previous_term), Some(entries)) = (previous_term, entries) else {
            return self.start_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let progress = self.progress.get_mut(&to).expect("present");
        let mut message = Message::new(MessageKind::Append, self.id, to, self.term);
        message.index = previous_index;
        message.log_term = previous_term;
        message.commit = self.log.committed;
        if let Some(last) = entries.last() {
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            match progress.state {
                ProgressState::Replicate => {
                    progress.next = last.index + 1;
                    progress.inflights.add(last.index, bytes);
                }
                ProgressState::Probe => progress.probe_sent = true,
                ProgressState::Snapshot => unreachable!("paused"),
            }
        } else if progress.state == ProgressState::Probe {
            progress.probe_sent = true;
        }
        message.entries = entries;
        self.messages.push(message);
        true
    }

    fn start_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.as_ref() else {
            return false;
        };
        let index = snapshot.meta.index;
        let progress = self.progress.get_mut(&to).expect("present");
        if !progress.recent_active {
            // Do not stream a snapshot into a follower that may be down.
            return false;
        }
        progress.become_snapshot(index);
        self.send_snapshot_chunks(to)
    }

    /// Streams the snapshot to `to`, keeping at most the configured chunks in flight.
    fn send_snapshot_chunks(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.as_ref() else {
            return false;
        };
        let progress = self.progress.get_mut(&to).expect("present");
        let Some(send) = progress.snapshot.as_mut() else {
            return false;
        };
        if send.index != snapshot.meta.index {
            // The leader compacted again: start over with the newer snapshot.
            *send = super::progress::SnapshotSend {
                index: snapshot.meta.index,
                acked_offset: 0,
                sent_offset: 0,
            };
        }
        let total = snapshot.data.len() as u64;
        let chunk_bytes = self.config.snapshot_chunk_bytes as u64;
        let window = chunk_bytes * self.config.snapshot_chunks_in_flight_max;
        let mut sent_any = false;
        loop {
            let first_chunk = send.sent_offset == 0;
            let more = send.sent_offset < total || (total == 0 && first_chunk);
            if !more || send.sent_offset - send.acked_offset >= window {
                break;
            }
            let start = send.sent_offset;
            let end = (start + chunk_bytes).min(total);
            let mut message = Message::new(MessageKind::Snapshot, self.id, to, self.term);
            message.commit = self.log.committed;
            message.snapshot = Some(SnapshotChunk {
                meta: snapshot.meta.clone(),
                offset: start,
                total_bytes: total,
                data: Arc::from(&snapshot.data[start as usize..end as usize]),
            });
            self.messages.push(message);
            sent_any = true;
            if total == 0 {
                // An empty snapshot is one empty chunk; mark it sent.
                send.sent_offset = 1;
                break;
            }
            send.sent_offset = end;
        }
        sent_any
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.messages.push(Message::new(
            MessageKind::TimeoutNow,
            self.id,
            to,
            self.term,
        ));
    }

    fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for peer in peers {
            if self.send_append(peer, true) {
                while self.send_append(peer, false) {}
            }
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for peer in peers {
            let progress = self.progress.get_mut(&peer).expect("present");
            let mut message = Message::new(MessageKind::Heartbeat, self.id, peer, self.term);
            message.commit = progress.matched.min(self.log.committed);
            message.context = self.read_round;
            self.messages.push(message);
            // A snapshot stream that made no progress since the last heartbeat resends
            // from what the follower confirmed (chunks may have been dropped).
            if let Some(send) = progress.snapshot.as_mut() {
                if send.sent_offset > send.acked_offset {
                    send.sent_offset = send.acked_offset;
                    self.send_snapshot_chunks(peer);
                }
            }
        }
    }

    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let active = self
            .conf
            .voters
            .iter()
            .filter(|&&voter| {
                voter == id
                    || self
                        .progress
                        .get(&voter)
                        .is_some_and(|progress| progress.recent_active)
            })
            .count();
        for (&peer, progress) in self.progress.iter_mut() {
            if peer != id {
                progress.recent_active = false;
            }
        }
        active >= self.quorum()
    }

    // ----- reads -----------------------------------------------------------------------

    fn enqueue_read(&mut self, from: NodeId, context: u64) {
        if !self.committed_in_term() {
            // The commit index is known to be current only once an entry of this term
            // is committed.
            self.reads_waiting_for_term.push(PendingRead {
                from,
                context,
                index: 0,
                round: 0,
            });
            return;
        }
        let read = PendingRead {
            from,
            context,
            index: self.log.committed,
            round: self.read_round + 1,
        };
        if self.conf.voters == [self.id] {
            self.deliver_read(read);
            return;
        }
        self.read_round_needed = true;
        self.reads_pending.push_back(read);
    }

    fn deliver_read(&mut self, read: PendingRead) {
        if read.from == self.id {
            self.read_states.push(ReadState {
                context: read.context,
                index: read.index,
            });
        } else {
            let mut message = Message::new(
                MessageKind::ReadIndexResponse,
                self.id,
                read.from,
                self.term,
            );
            message.index = read.index;
            message.context = read.context;
            self.messages.push(message);
        }
    }

    fn reject_read(&mut self, to: NodeId, context: u64) {
        let mut message = Message::new(MessageKind::ReadIndexResponse, self.id, to, self.term);
        message.reject = true;
        message.context = context;
        self.messages.push(message);
    }

    /// Releases every read whose heartbeat round a quorum acknowledged.
    fn release_confirmed_reads(&mut self) {
        if self.reads_pending.is_empty() {
            return;
        }
        let mut acked: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|&voter| {
                if voter == self.id {
                    u64::MAX
                } else {
                    self.progress
                        .get(&voter)
                        .map_or(0, |progress| progress.read_round_acked)
                }
            })
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[self.quorum() - 1];
        while self
            .reads_pending
            .front()
            .is_some_and(|read| read.round <= confirmed)
        {
            let read = self.reads_pending.pop_front().expect("present");
            self.deliver_read(read);
        }
    }

    fn fail_pending_reads(&mut self) {
        let reads: Vec<PendingRead> = self
            .reads_pending
            .drain(..)
            .chain(self.reads_waiting_for_term.drain(..))
            .collect();
        for read in reads {
            if read.from == self.id {
                self.failed_reads.push(read.context);
            } else {
                self.reject_read(read.from, read.context);
            }
        }
    }

    // ----- roles -----------------------------------------------------------------------

    fn randomize_election_timeout(&mut self) {
        let timeout = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.range(timeout, 2 * timeout);
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            assert!(
                term > self.term,
                "the term never decreases ({} -> {term})",
                self.term
            );
            self.term = term;
            self.vote = NO_NODE;
        }
        if self.role == Role::Leader {
            self.fail_pending_reads();
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomize_election_timeout();
        self.transferee = None;
        self.votes.clear();
        self.self_vote_pending = None;
        self.uncommitted_bytes = 0;
        self.broadcast_pending = false;
        self.read_round_needed = false;
        self.progress.clear();
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn campaign(&mut self, pre: bool, transfer: bool) {
        if !self.promotable() {
            return;
        }
        let (kind, term) = if pre {
            self.reset(self.term);
            self.role = Role::PreCandidate;
            // A pre-candidate's own pre-vote changes no state: it counts at once.
            if self.poll(self.id, true) == VoteResult::Won {
                return self.campaign(false, transfer);
            }
            (MessageKind::PreVote, self.term + 1)
        } else {
            self.reset(self.term + 1);
            self.role = Role::Candidate;
            self.vote = self.id;
            // Its own vote counts once it is durable (see on_persisted).
            self.self_vote_pending = Some(self.term);
            (MessageKind::Vote, self.term)
        };
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for voter in voters {
            let mut message = Message::new(kind, self.id, voter, term);
            message.index = self.log.last_index();
            message.log_term = self.log.last_term();
            if transfer {
                message.context = CAMPAIGN_TRANSFER;
            }
            self.messages.push(message);
        }
    }

    fn poll(&mut self, from: NodeId, granted: bool) -> VoteResult {
        if self.conf.is_voter(from) {
            self.votes.entry(from).or_insert(granted);
        }
        let granted_count = self.votes.values().filter(|&&granted| granted).count();
        let rejected_count = self.votes.len() - granted_count;
        if granted_count >= self.quorum() {
            VoteResult::Won
        } else if rejected_count > self.conf.voters.len() - self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.conf.members().collect();
        for id in members {
            let inflights = Inflights::new(
                self.config.inflight_messages_max,
                self.config.inflight_bytes_max,
            );
            let mut progress = Progress::new(next, inflights, self.conf.is_learner(id));
            if id == self.id {
                progress.matched = self.log.persisted();
                progress.become_replicate();
                progress.next = next;
                progress.recent_active = true;
            }
            self.progress.insert(id, progress);
        }
        // A membership change in the uncommitted tail may still be pending.
        self.pending_conf_index = self.log.last_index();
        // The no-op of the new term: committing it commits everything before it.
        let noop = Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Normal,
            data: Arc::from(&[][..]),
        };
        self.log.append(noop);
        self.broadcast_pending = true;
    }

    fn apply_conf_change(&mut self, index: Index, change: ConfChange) {
        self.conf = self.conf.applied(change);
        self.conf_history.push((index, self.conf.clone()));
        if self.role != Role::Leader {
            return;
        }
        if !self.conf.is_voter(self.id) {
            // Removed (or demoted): hand over by stepping down; a voter will time out.
            self.become_follower(self.term, NO_NODE);
            return;
        }
        let next = self.log.last_index() + 1;
        let members: Vec<NodeId> = self.conf.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            let is_learner = self.conf.is_learner(id);
            let inflights = Inflights::new(
                self.config.inflight_messages_max,
                self.config.inflight_bytes_max,
            );
            self.progress
                .entry(id)
                .or_insert_with(|| {
                    let mut progress = Progress::new(next, inflights, is_learner);
                    progress.recent_active = true;
                    progress
                })
                .is_learner = is_learner;
        }
        if self.transferee.is_some_and(|id| !self.conf.is_voter(id)) {
            self.transferee = None;
        }
        self.maybe_commit();
        self.broadcast_pending = true;
        self.release_confirmed_reads();
    }

    // ----- output ----------------------------------------------------------------------

    /// Is there anything for the caller to do?
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.snapshot_to_hand_out.is_some()
            || self.log.has_unpersisted()
            || self.log.has_committed()
            || self.broadcast_pending
            || self.read_round_needed
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
    }

    /// Takes everything there is to persist, send and apply.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            if self.broadcast_pending {
                self.broadcast_pending = false;
                self.broadcast_append();
            }
            if self.read_round_needed {
                self.read_round_needed = false;
                self.read_round += 1;
                self.heartbeat_elapsed = 0;
                self.broadcast_heartbeat();
            }
        }
        let number = self.next_ready_number;
        self.next_ready_number += 1;
        let mut ready = Ready {
            number,
            ..Ready::default()
        };
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            self.last_soft_state = soft;
            ready.soft_state = Some(soft);
        }
        ready.snapshot = self.snapshot_to_hand_out.take();
        ready.entries = self.log.take_unpersisted();
        let hard = self.hard_state();
        if hard != self.last_hard_state {
            self.last_hard_state = hard;
            ready.hard_state = Some(hard);
        }
        let last_entry = ready.entries.last().map(|entry| (entry.index, entry.term));
        let self_vote_term = self.self_vote_pending.take();
        if last_entry.is_some() || self_vote_term.is_some() {
            self.unpersisted_readies.push_back(UnpersistedReady {
                number,
                last_entry,
                self_vote_term,
            });
        }
        ready.messages = std::mem::take(&mut self.messages);
        ready.persisted_messages = std::mem::take(&mut self.persisted_messages);
        ready.committed_entries = self.log.take_committed(self.config.apply_bytes_max);
        for entry in &ready.committed_entries {
            if entry.kind == EntryKind::ConfChange {
                if let Some(change) = ConfChange::decode(&entry.data) {
                    self.apply_conf_change(entry.index, change);
                }
            }
        }
        ready.read_states = std::mem::take(&mut self.read_states);
        ready.failed_reads = std::mem::take(&mut self.failed_reads);
        // Applying a membership change may have produced messages; they go out next time.
        self.log.check();
        ready
    }

    /// Storage reports that the writes of every Ready up to `number` are durable.
    pub fn on_persisted(&mut self, number: u64) {
        while self
            .unpersisted_readies
            .front()
            .is_some_and(|ready| ready.number <= number)
        {
            let ready = self.unpersisted_readies.pop_front().expect("present");
            if let Some((index, term)) = ready.last_entry {
                self.log.on_persisted(index, term);
            }
            if let Some(term) = ready.self_vote_term {
                if self.role == Role::Candidate && self.term == term {
                    match self.poll(self.id, true) {
                        VoteResult::Won => self.become_leader(),
                        VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                        VoteResult::Pending => {}
                    }
                }
            }
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            if let Some(progress) = self.progress.get_mut(&self.id) {
                progress.matched = progress.matched.max(persisted);
            }
            if self.maybe_commit() {
                self.broadcast_pending = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: Term, index: Index) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Arc::from(&b"x"[..]),
        }
    }

    fn append(prev_index: Index, entries: Vec<Entry>, commit: Index) -> Message {
        let mut message = Message::new(MessageKind::Append, 1, 2, 1);
        message.index = prev_index;
        message.log_term = if prev_index == 0 { 0 } else { 1 };
        message.commit = commit;
        message.entries = entries;
        message
    }

    // A follower whose commit index ran ahead of its durable log acknowledges a stale
    // append only after the persist: the leader records the answer as a durable match.
    #[test]
    fn stale_append_is_acknowledged_after_the_persist() {
        let state = InitialState {
            conf: ConfState::with_voters(&[1, 2, 3]),
            ..InitialState::default()
        };
        let mut follower = RaftNode::new(Config::new(2), state).expect("valid");
        follower.step(append(0, vec![entry(1, 1), entry(1, 2)], 2));
        // A duplicate of an earlier append, below the commit index.
        follower.step(append(0, vec![entry(1, 1)], 2));
        let ready = follower.ready();
        assert_eq!(ready.entries.len(), 2, "the entries are not durable yet");
        assert!(
            ready
                .messages
                .iter()
                .all(|message| message.kind != MessageKind::AppendResponse),
            "no acknowledgement may leave before the persist: {:?}",
            ready.messages
        );
        let acknowledged: Vec<Index> = ready
            .persisted_messages
            .iter()
            .filter(|message| message.kind == MessageKind::AppendResponse && !message.reject)
            .map(|message| message.index)
            .collect();
        assert_eq!(acknowledged, vec![2, 2]);
    }

    fn snapshot_chunk(data: &[u8], offset: u64, total_bytes: u64) -> Message {
        let mut message = Message::new(MessageKind::Snapshot, 1, 2, 1);
        message.snapshot = Some(SnapshotChunk {
            meta: SnapshotMeta {
                index: 5,
                term: 1,
                conf: ConfState::with_voters(&[1, 2, 3]),
            },
            offset,
            total_bytes,
            data: Arc::from(data),
        });
        message
    }

    // A late copy of a snapshot's first chunk does not throw away the chunks received
    // after it: the leader never resends what was acknowledged, so the stream would stall.
    #[test]
    fn repeated_first_chunk_keeps_the_received_bytes() {
        let state = InitialState {
            conf: ConfState::with_voters(&[1, 2, 3]),
            ..InitialState::default()
        };
        let mut follower = RaftNode::new(Config::new(2), state).expect("valid");
        follower.step(snapshot_chunk(b"abcd", 0, 12));
        follower.step(snapshot_chunk(b"efgh", 4, 12));
        follower.step(snapshot_chunk(b"abcd", 0, 12));
        let received: Vec<Index> = follower
            .ready()
            .messages
            .iter()
            .filter(|message| message.kind == MessageKind::SnapshotResponse)
            .map(|message| message.index)
            .collect();
        assert_eq!(received, vec![4, 8, 8]);
        follower.step(snapshot_chunk(b"ijkl", 8, 12));
        let ready = follower.ready();
        let snapshot = ready.snapshot.expect("the snapshot is complete");
        assert_eq!(&snapshot.data[..], b"abcdefghijkl");
    }
}
