//! One shard's turn as a pure state machine: client requests, peer messages, mesh
//! messages, durability reports and ticks go in; one batch of log records, Raft messages
//! for peers, mesh messages for other shards, replies per client connection and snapshot
//! file jobs come out. No I/O: the glommio driver (`server/shard.rs`) moves bytes between
//! this core and the kernel, and the simulator drives the same core under faults.
//!
//! | file            | owns                                                            |
//! |-----------------|-----------------------------------------------------------------|
//! | [`config`]      | the core's settings: its shard, the keyspace, members, placement |
//! | [`dispatch`]    | where a request runs: one group, every group, or refused (pure)  |
//! | [`pending`]     | where answers go; requests waiting on Raft or on another shard   |
//! | [`gather`]      | requests split over groups or shards, and merging their parts    |
//! | [`mesh`]        | the messages shards of one node exchange                         |
//! | [`storage`]     | log records, snapshot file data, recovery to group start states  |
//! | [`snapshots`]   | which snapshot file is written next, and its compaction record   |
//! | [`persist`]     | turns waiting for their batch to be durable, and what they hold  |
//! | [`watch`]       | the watches of the shard's connections: merge, progress, bounds  |
//! | `leases.rs`     | lease requests, the lease check of puts, the pull of revocations |
//!
//! # One turn
//!
//! The driver hands in everything that happened since the last turn (the `on_*` methods),
//! then calls [`ShardCore::turn`], which collects every group's Ready and returns an
//! [`Output`]. The driver must act on it in this order:
//!
//! 1. write the snapshot files in `installs` (after the local file being written, if any):
//!    the batch's log resets point at them;
//! 2. write `batch` to the log (one write, one fsync), and report
//!    [`ShardCore::on_persisted`] once it and every earlier batch are durable;
//! 3. send `messages` to peers, `mesh` to other shards (reporting
//!    [`ShardCore::on_mesh_undeliverable`] for one that cannot be queued), and `replies`
//!    to client connections;
//! 4. start writing `snapshot_job`'s file off the loop, and report
//!    [`ShardCore::on_snapshot_written`] once it is durable.
//!
//! Every request the core accepts is answered exactly once (a stream item is not an
//! answer: only the reply marked `finished` is): by the Raft layer, by another shard over
//! the mesh, or at a deadline here.

pub mod config;
pub mod dispatch;
pub mod gather;
pub mod hlc;
mod leases;
pub mod mesh;
pub mod pending;
pub mod persist;
pub mod snapshots;
pub mod storage;
pub mod watch;

use flatbuffers::FlatBufferBuilder;
use thiserror::Error;

pub use config::{CoreConfig, Placement};
pub use mesh::{MeshBody, MeshMessage};
pub use pending::ConnectionId;
pub use snapshots::SnapshotJob;
pub use storage::{RecoveredGroup, StorageBatch, StorageRecord, StorageRecordKind};

use crate::api::{
    self, ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, GroupStatus, LeaderHint,
    RequestKind, StatusInfo,
};
use crate::keyspace::{group_of, shard_of};
use crate::kv::{Command, Op, Response};
use crate::multiraft::{GroupId, MultiRaft, MultiRaftError, ReadMode, Reply, RequestId};
use crate::raft::{self, Message, NodeId, Snapshot};
use dispatch::Target;
use gather::{GatherEnd, Merge, ScatterEnd, Scatters, StatusGathers};
use hlc::Hlc;
use pending::{Forwarded, Origin, Proposed};
use persist::Unpersisted;
use snapshots::SnapshotQueue;
use watch::{WatchKey, WatchOutput, Watches};

/// Ticks a shutting-down shard waits for its leaderships to move away.
pub const SHUTDOWN_TRANSFER_TICKS_MAX: u64 = 40;

/// Why a shard cannot start.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Groups(#[from] MultiRaftError),
    #[error("storage recovered group {group}, which this shard does not run")]
    UnexpectedGroup { group: GroupId },
}

/// An answer, or one item of a stream, for a client connection of this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    pub connection: ConnectionId,
    pub response: ApiResponse,
    /// The request is over: the connection's slot for it is free. False for a stream
    /// item that more items follow.
    pub finished: bool,
}

/// What a turn asks the driver to do, in the order of the module documentation.
#[derive(Debug, Default)]
pub struct Output {
    /// Snapshot files a leader sent, to write before `batch`.
    pub installs: Vec<(GroupId, Snapshot)>,
    /// The turn's log records; `None` when nothing needs to be durable.
    pub batch: Option<StorageBatch>,
    /// Raft messages for peer nodes, to send now.
    pub messages: Vec<(GroupId, Message)>,
    /// Messages for other shards of this node.
    pub mesh: Vec<MeshMessage>,
    pub replies: Vec<ClientReply>,
    /// A local snapshot file to write off the loop.
    pub snapshot_job: Option<SnapshotJob>,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.installs.is_empty()
            && self.batch.is_none()
            && self.messages.is_empty()
            && self.mesh.is_empty()
            && self.replies.is_empty()
            && self.snapshot_job.is_none()
    }
}

/// Sizes of the core's tables, for status and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreLoad {
    pub proposed: usize,
    pub forwarded: usize,
    pub scatters: usize,
    pub status_gathers: usize,
    pub unpersisted_batches: usize,
    pub watches: usize,
}

/// The state of one shard: its Raft groups and every request in flight.
pub struct ShardCore {
    config: CoreConfig,
    raft: MultiRaft,
    next_id: u64,
    proposed: Proposed,
    forwarded: Forwarded,
    scatters: Scatters,
    statuses: StatusGathers,
    snapshots: SnapshotQueue,
    unpersisted: Unpersisted,
    ticks: u64,
    /// The shard's clock: revisions are its values (see [`hlc`]).
    hlc: Hlc,
    accepting: bool,
    shutdown_started_tick: Option<u64>,
    watches: Watches,
    watch_out: Vec<WatchOutput>,
    builder: FlatBufferBuilder<'static>,
    out: Output,
    /// Lease checks and local revokes in flight (see `leases.rs`).
    leases: leases::LeaseWork,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ShardCore")
            .field("shard", &self.config.shard)
            .field("load", &self.load())
            .finish_non_exhaustive()
    }
}

impl ShardCore {
    /// Opens the shard's groups from what storage recovered for them (one
    /// [`RecoveredGroup`] per group of [`CoreConfig::groups_here`], empty for a new one).
    pub fn open(
        config: CoreConfig,
        recovered: Vec<RecoveredGroup>,
    ) -> Result<ShardCore, CoreError> {
        let here = config.groups_here();
        let mut starts = Vec::with_capacity(recovered.len());
        let mut compacted = std::collections::BTreeMap::new();
        for group in recovered {
            if !here.contains(&group.group) {
                return Err(CoreError::UnexpectedGroup { group: group.group });
            }
            compacted.insert(group.group, group.compaction_index);
            let conf = raft::ConfState::with_voters(config.placement.voters(group.group));
            starts.push(storage::group_start(group, &conf)?);
        }
        let raft = MultiRaft::new(config.raft.clone(), starts)?;
        Ok(ShardCore {
            config,
            raft,
            next_id: 0,
            proposed: Proposed::default(),
            forwarded: Forwarded::default(),
            scatters: Scatters::default(),
            statuses: StatusGathers::default(),
            snapshots: SnapshotQueue::new(compacted),
            unpersisted: Unpersisted::default(),
            ticks: 0,
            hlc: Hlc::default(),
            accepting: true,
            shutdown_started_tick: None,
            watches: Watches::default(),
            watch_out: Vec::new(),
            builder: FlatBufferBuilder::new(),
            out: Output::default(),
            leases: leases::LeaseWork::default(),
        })
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The shard's Raft groups (for status, tests and the simulator's checks).
    pub fn groups(&self) -> &MultiRaft {
        &self.raft
    }

    pub fn load(&self) -> CoreLoad {
        CoreLoad {
            proposed: self.proposed.len(),
            forwarded: self.forwarded.len(),
            scatters: self.scatters.len(),
            status_gathers: self.statuses.len(),
            unpersisted_batches: self.unpersisted.len(),
            watches: self.watches.len(),
        }
    }

    /// Whether a turn has anything to do.
    pub fn has_work(&self) -> bool {
        self.raft.has_ready()
            || self.snapshots.has_compactions()
            || self.snapshots.has_job_ready()
            || !self.out.is_empty()
            || self.watches.has_work()
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ----- inputs --------------------------------------------------------------------------

    /// A request from client connection `connection` of this shard.
    pub fn on_client_request(&mut self, connection: ConnectionId, request: ApiRequest) {
        let origin = Origin::Client {
            connection,
            request_id: request.request_id,
        };
        if !self.accepting {
            self.answer(origin, Err(shutting_down()));
            return;
        }
        match request.kind {
            RequestKind::Kv {
                command,
                serializable,
                group,
                mut seen_revision,
            } => {
                if self.config.unsafe_ignore_seen_revision {
                    seen_revision = 0;
                }
                self.hlc.observe(seen_revision);
                if let Err(error) = self.check_read_revision(&command.op) {
                    self.answer(origin, Err(error));
                    return;
                }
                match dispatch::target(&command.op, group, self.config.groups) {
                    Ok(Target::One(group)) => {
                        let read = single_group_read(&command.op, serializable);
                        let work = Work::Command {
                            command,
                            read,
                            seen_revision,
                        };
                        self.send_to_group(origin, group, work);
                    }
                    Ok(Target::All(merge)) => {
                        let read = match &command.op {
                            Op::Range(range) if range.revision != 0 => ReadMode::At(range.revision),
                            _ if serializable => ReadMode::Serializable,
                            // One revision for every group: a snapshot of the whole range.
                            Op::Range(_) => ReadMode::SnapshotAt(self.hlc.now()),
                            _ => ReadMode::Linearizable,
                        };
                        self.scatter(origin, merge, command, read, seen_revision);
                    }
                    Err(error) => self.answer(origin, Err(error)),
                }
            }
            RequestKind::Compact {
                revision,
                seen_revision,
                group,
            } => {
                self.hlc.observe(seen_revision);
                match group {
                    Some(group) if group < self.config.groups => {
                        self.send_to_group(origin, group, Work::Compact { revision });
                    }
                    _ => {
                        let error = ApiError::new(
                            ErrorCode::InvalidRequest,
                            "a compaction names one group; the SDK sends one per group",
                        );
                        self.answer(origin, Err(error));
                    }
                }
            }
            RequestKind::Status => self.start_status(origin),
            RequestKind::Lease {
                request,
                group,
                seen_revision,
            } => self.on_lease_request(origin, request, group, seen_revision),
            RequestKind::WatchCreate {
                create,
                seen_revision,
            } => {
                self.hlc.observe(seen_revision);
                self.create_watch(connection, request.request_id, create);
            }
            RequestKind::WatchCancel { watch_id } => {
                let key = WatchKey {
                    connection,
                    watch_id,
                };
                let found = self.watches.cancel(key, &mut self.watch_out);
                self.answer_watch_request(connection, request.request_id, watch_id, found, true);
            }
            RequestKind::WatchProgress { watch_id } => {
                let key = WatchKey {
                    connection,
                    watch_id,
                };
                let found = self.watches.want_progress(key);
                self.answer_watch_request(connection, request.request_id, watch_id, found, false);
            }
        }
    }

    /// Starts a watch of this connection over the groups its keys live in. Every group
    /// needs a replica on this node: a watch is served from applied state.
    fn create_watch(
        &mut self,
        connection: ConnectionId,
        request_id: u64,
        create: api::WatchCreate,
    ) {
        let groups: Vec<GroupId> = if create.range_end.is_empty() {
            vec![group_of(&create.key, self.config.groups)]
        } else {
            (0..self.config.groups).collect()
        };
        let node_id = self.config.node_id;
        let missing = groups
            .iter()
            .copied()
            .find(|&group| !self.config.placement.voters(group).contains(&node_id));
        let refusal = match missing {
            Some(group) => Some(self.not_here(group)),
            None => {
                let shards = self.config.shards;
                let key = WatchKey {
                    connection,
                    watch_id: request_id,
                };
                self.watches
                    .create(
                        key,
                        create,
                        &groups,
                        (self.config.shard, &|group| shard_of(group, shards)),
                        &mut self.watch_out,
                    )
                    .err()
                    .map(|refusal| {
                        let code = match refusal {
                            watch::WatchRefusal::Duplicate(_) => ErrorCode::InvalidRequest,
                            _ => ErrorCode::Overloaded,
                        };
                        ApiError::new(code, refusal.to_string())
                    })
            }
        };
        if let Some(error) = refusal {
            self.out.replies.push(ClientReply {
                connection,
                response: ApiResponse {
                    request_id,
                    result: Err(error),
                },
                finished: true,
            });
        }
    }

    /// Answers a cancel or progress request (not the watch's own stream).
    fn answer_watch_request(
        &mut self,
        connection: ConnectionId,
        request_id: u64,
        watch_id: u64,
        found: bool,
        canceled: bool,
    ) {
        let result = if found {
            Ok(ApiResult::Watch(api::WatchResponse {
                watch_id,
                canceled,
                ..api::WatchResponse::default()
            }))
        } else {
            let message = format!("no watch {watch_id} on this connection");
            Err(ApiError::new(ErrorCode::WatchNotFound, message))
        };
        self.out.replies.push(ClientReply {
            connection,
            response: ApiResponse { request_id, result },
            finished: true,
        });
    }

    /// The connection is gone: its watches end.
    pub fn on_connection_closed(&mut self, connection: ConnectionId) {
        self.watches.on_connection_closed(connection);
    }

    /// The connections that hold watches: the driver reports their backlogs.
    pub fn watch_connections(&self) -> Vec<ConnectionId> {
        self.watches.connections().collect()
    }

    /// Bytes and frames of replies queued for `connection`, not yet written to its
    /// socket.
    pub fn on_connection_backlog(&mut self, connection: ConnectionId, bytes: usize, frames: usize) {
        self.watches.set_backlog(connection, bytes, frames);
    }

    /// Hands the watches' output to the connections and other shards.
    fn flush_watches(&mut self) {
        self.watches.run(&self.raft, &mut self.watch_out);
        for output in self.watch_out.drain(..) {
            match output {
                WatchOutput::Reply {
                    key,
                    response,
                    finished,
                } => self.out.replies.push(ClientReply {
                    connection: key.connection,
                    response: ApiResponse {
                        request_id: key.watch_id,
                        result: Ok(ApiResult::Watch(response)),
                    },
                    finished,
                }),
                WatchOutput::Poll { shard, token, poll } => self.out.mesh.push(MeshMessage {
                    from_shard: self.config.shard,
                    to_shard: shard,
                    token,
                    body: MeshBody::WatchPoll { poll },
                }),
            }
        }
    }

    /// Refuses a read at a revision too far ahead of this node's clock to be a revision
    /// anyone was given: waiting for it would only time out.
    fn check_read_revision(&self, op: &Op) -> Result<(), ApiError> {
        let Op::Range(range) = op else {
            return Ok(());
        };
        let horizon = self.hlc.peek() + hlc::revision_of_millis(self.config.max_clock_offset_ms);
        if range.revision > horizon {
            let message = format!(
                "revision {} is in the future (this node's clock is at {})",
                range.revision,
                self.hlc.peek()
            );
            return Err(ApiError::new(ErrorCode::FutureRevision, message));
        }
        Ok(())
    }

    /// Raft messages a peer shard sent this shard.
    pub fn on_peer_messages(&mut self, messages: Vec<(GroupId, Message)>) {
        for (group, message) in messages {
            self.raft.step(group, message);
        }
    }

    /// One Raft message for `group` from a peer.
    pub fn on_peer_message(&mut self, group: GroupId, message: Message) {
        self.raft.step(group, message);
    }

    /// A message from another shard of this node.
    pub fn on_mesh(&mut self, message: MeshMessage) {
        let origin = Origin::Mesh {
            shard: message.from_shard,
            token: message.token,
        };
        match message.body {
            MeshBody::Request {
                group,
                request,
                read,
            } => {
                let work = match api::decode_request(&request) {
                    Ok(ApiRequest {
                        kind:
                            RequestKind::Kv {
                                command,
                                seen_revision,
                                ..
                            },
                        ..
                    }) => Some(Work::Command {
                        command,
                        read,
                        seen_revision,
                    }),
                    Ok(ApiRequest {
                        kind: RequestKind::Compact { revision, .. },
                        ..
                    }) => Some(Work::Compact { revision }),
                    Ok(ApiRequest {
                        kind:
                            RequestKind::Lease {
                                request: api::LeaseRequest::TimeToLive { id, keys },
                                group: Some(_),
                                ..
                            },
                        ..
                    }) => Some(Work::LeaseRead { id, keys }),
                    Ok(ApiRequest {
                        kind:
                            RequestKind::Lease {
                                request,
                                group: None,
                                seen_revision,
                            },
                        ..
                    }) => Some(Work::Lease {
                        request,
                        seen_revision,
                    }),
                    Ok(_) | Err(_) => None,
                };
                match work {
                    Some(work) if self.accepting => self.run_here(origin, group, work),
                    Some(_) => self.answer(origin, Err(shutting_down())),
                    None => {
                        let error =
                            ApiError::new(ErrorCode::Internal, "bad request between shards");
                        self.answer(origin, Err(error));
                    }
                }
            }
            MeshBody::Reply { response } => {
                let Some(origin) = self.forwarded.remove(message.token) else {
                    // Timed out here already; the answer came too late.
                    return;
                };
                let reply = match api::decode_response(&response) {
                    Ok(ApiResponse {
                        result: Ok(ApiResult::Kv(response)),
                        ..
                    }) => Ok(response),
                    Ok(ApiResponse {
                        result: Err(error), ..
                    }) => Err(error),
                    _ => Err(ApiError::new(
                        ErrorCode::Internal,
                        "bad reply between shards",
                    )),
                };
                self.answer(origin, reply);
            }
            MeshBody::Status => {
                let info = StatusInfo {
                    groups: self.group_statuses(),
                    ..StatusInfo::default()
                };
                let response = ApiResponse {
                    request_id: message.token,
                    result: Ok(ApiResult::Status(info)),
                };
                let bytes = api::encode_response(&mut self.builder, &response).to_vec();
                self.out.mesh.push(MeshMessage {
                    from_shard: self.config.shard,
                    to_shard: message.from_shard,
                    token: message.token,
                    body: MeshBody::StatusReply { response: bytes },
                });
            }
            MeshBody::StatusReply { response } => {
                let ended = match api::decode_response(&response) {
                    Ok(ApiResponse {
                        result: Ok(ApiResult::Status(info)),
                        ..
                    }) => self.statuses.part(message.token, info.groups),
                    _ => {
                        let error = ApiError::new(ErrorCode::Internal, "bad status between shards");
                        self.statuses.fail(message.token, error)
                    }
                };
                if let Some(ended) = ended {
                    self.end_gather(ended);
                }
            }
            MeshBody::WatchPoll { poll } => {
                let reply = watch::serve_poll(&self.raft, &poll);
                self.out.mesh.push(MeshMessage {
                    from_shard: self.config.shard,
                    to_shard: message.from_shard,
                    token: message.token,
                    body: MeshBody::WatchPollReply { reply },
                });
            }
            MeshBody::WatchPollReply { reply } => {
                self.watches
                    .on_poll_reply(message.token, reply, &mut self.watch_out);
            }
            MeshBody::Revocations { after } => {
                let revocations = self.local_revocations(after);
                self.out.mesh.push(MeshMessage {
                    from_shard: self.config.shard,
                    to_shard: message.from_shard,
                    token: message.token,
                    body: MeshBody::RevocationsReply { revocations },
                });
            }
            MeshBody::RevocationsReply { revocations } => self.on_revocations(revocations),
            MeshBody::RevocationPosition { position } => self.on_revocation_position(position),
        }
    }

    /// The driver could not queue `message` for its shard (the channel is full or
    /// closed): whatever waits on it is answered now or at its deadline.
    pub fn on_mesh_undeliverable(&mut self, message: MeshMessage) {
        let overloaded = || ApiError::new(ErrorCode::Overloaded, "shard queue full; retry");
        match message.body {
            MeshBody::Request { .. } => {
                if let Some(origin) = self.forwarded.remove(message.token) {
                    self.answer(origin, Err(overloaded()));
                }
            }
            MeshBody::Status => {
                if let Some(ended) = self.statuses.fail(message.token, overloaded()) {
                    self.end_gather(ended);
                }
            }
            MeshBody::WatchPoll { .. } => self.watches.on_poll_undeliverable(message.token),
            // The asking shard answers its client (or polls again) at its own deadline; a
            // pull of revocations is made again at the next sync.
            MeshBody::Reply { .. }
            | MeshBody::StatusReply { .. }
            | MeshBody::WatchPollReply { .. }
            | MeshBody::Revocations { .. }
            | MeshBody::RevocationsReply { .. }
            | MeshBody::RevocationPosition { .. } => {}
        }
    }

    /// Every batch up to `sequence` is durable.
    pub fn on_persisted(&mut self, sequence: u64) {
        for turn in self.unpersisted.durable(sequence) {
            self.out.messages.extend(turn.messages);
            self.raft.on_persisted(turn.token);
        }
    }

    /// The file of a local snapshot of `group` at (`index`, `term`) is durable.
    pub fn on_snapshot_written(&mut self, group: GroupId, index: u64, term: u64) {
        self.snapshots.on_written(group, index, term);
    }

    /// One tick of the shard's clock; `now_ms` is the physical clock (Unix milliseconds).
    pub fn on_tick(&mut self, now_ms: u64) {
        self.ticks += 1;
        self.watches.on_tick();
        self.hlc.set_physical(now_ms);
        let now_revision = self.hlc.now();
        self.raft.tick(now_revision);
        for origin in self.forwarded.expire(self.ticks) {
            let error = ApiError::new(ErrorCode::Timeout, "the owning shard did not answer");
            self.answer(origin, Err(error));
        }
        for ended in self.statuses.expire(self.ticks) {
            self.end_gather(ended);
        }
        if self.accepting {
            self.tick_revocations();
        }
    }

    /// Storage wants these groups to snapshot (their old entries pin log segments).
    pub fn request_snapshots(&mut self, groups: &[GroupId]) {
        for &group in groups {
            if !self.snapshots.is_pending(group) {
                self.raft.request_snapshot(group);
            }
        }
    }

    /// Asks the leader of `group` here to hand leadership to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> bool {
        self.raft.transfer_leader(group, to).is_ok()
    }

    /// Advances a graceful shutdown: stops taking requests, hands the groups this node
    /// leads to other members, then answers everything still waiting. True once the shard
    /// may stop (after one more turn, and once its last batch is durable).
    pub fn shutdown_step(&mut self) -> bool {
        let ticks = self.ticks;
        let started = *self.shutdown_started_tick.get_or_insert(ticks);
        self.accepting = false;
        // Hand each group this node leads to another member, so clients see a short
        // leader change instead of an election timeout. A group with no other member
        // has no one to hand over to.
        let handovers: Vec<(GroupId, NodeId)> = self
            .raft
            .led_groups()
            .into_iter()
            .enumerate()
            .filter_map(|(k, group)| {
                let others: Vec<NodeId> = self
                    .config
                    .placement
                    .voters(group)
                    .iter()
                    .copied()
                    .filter(|&id| id != self.config.node_id)
                    .collect();
                let target = *others.get(k % others.len().max(1))?;
                Some((group, target))
            })
            .collect();
        if !handovers.is_empty() && self.ticks < started + SHUTDOWN_TRANSFER_TICKS_MAX {
            for (group, target) in handovers {
                // A group whose transfer is refused (one is under way) is tried again at
                // the next step.
                let _ = self.raft.transfer_leader(group, target);
            }
            return false;
        }
        let waiting: Vec<Origin> = self
            .proposed
            .drain()
            .into_iter()
            .chain(self.forwarded.drain())
            .collect();
        for origin in waiting {
            self.answer(origin, Err(shutting_down()));
        }
        for origin in self.statuses.drain() {
            self.answer(origin, Err(shutting_down()));
        }
        self.watches.shut_down(&mut self.watch_out);
        self.flush_watches();
        true
    }

    /// Whether a local snapshot file is being written (a stopping shard waits for it).
    pub fn is_writing_snapshot(&self) -> bool {
        self.snapshots.is_writing()
    }

    // ----- the turn ------------------------------------------------------------------------

    /// Collects every group's Ready, applies what committed, and returns everything the
    /// driver must do (see the module documentation for the order).
    pub fn turn(&mut self) -> Output {
        if self.raft.has_ready() || self.snapshots.has_compactions() {
            let ready = self.raft.ready();
            for write in &ready.writes {
                if let Some(snapshot) = &write.snapshot {
                    self.snapshots.on_install(write.group, snapshot.meta.index);
                    self.out.installs.push((write.group, snapshot.clone()));
                }
            }
            // Compactions whose snapshot files became durable go first: they are older
            // than anything this turn resets.
            let mut records = self.snapshots.take_compactions();
            storage::records_for(ready.writes, &mut records);
            for taken in ready.snapshots {
                self.snapshots.queue(taken.group, taken.snapshot);
            }
            if self.out.messages.is_empty() {
                // The common case: nothing released since the last turn; no copy.
                self.out.messages = ready.messages;
            } else {
                self.out.messages.extend(ready.messages);
            }
            for (request, reply) in ready.replies {
                self.on_raft_reply(request, reply);
            }
            let mut persisted_messages = ready.persisted_messages;
            if self.config.unsafe_ack_before_fsync {
                self.out.messages.append(&mut persisted_messages);
            }
            if records.is_empty() {
                if let Some((token, messages)) =
                    self.unpersisted.attach(ready.token, persisted_messages)
                {
                    // Nothing to make durable and nothing ahead of it: no fsync.
                    self.out.messages.extend(messages);
                    self.raft.on_persisted(token);
                }
            } else {
                let sequence = self.unpersisted.push(ready.token, persisted_messages);
                self.out.batch = Some(StorageBatch { sequence, records });
            }
        }
        if self.out.snapshot_job.is_none() {
            self.out.snapshot_job = self.snapshots.next_job();
        }
        self.flush_watches();
        std::mem::take(&mut self.out)
    }

    // ----- routing -------------------------------------------------------------------------

    /// Runs `work` on `group` here, or forwards it to the shard that owns the group.
    fn send_to_group(&mut self, origin: Origin, group: GroupId, work: Work) {
        let owner = shard_of(group, self.config.shards);
        if owner == self.config.shard {
            self.run_here(origin, group, work);
            return;
        }
        if self.forwarded.is_full() {
            let error = ApiError::new(ErrorCode::Overloaded, "too many requests between shards");
            self.answer(origin, Err(error));
            return;
        }
        let token = self.next_id();
        let (kind, read) = match work {
            Work::Command {
                command,
                read,
                seen_revision,
            } => {
                let read = match read {
                    ReadMode::Linearizable if self.config.unsafe_forward_reads_as_serializable => {
                        ReadMode::Serializable
                    }
                    read => read,
                };
                let kind = RequestKind::Kv {
                    serializable: read == ReadMode::Serializable,
                    command,
                    // The mesh message names the group.
                    group: None,
                    seen_revision,
                };
                (kind, read)
            }
            Work::Compact { revision } => {
                let kind = RequestKind::Compact {
                    revision,
                    seen_revision: 0,
                    group: Some(group),
                };
                (kind, ReadMode::Linearizable)
            }
            Work::Lease {
                request,
                seen_revision,
            } => {
                let kind = RequestKind::Lease {
                    request,
                    group: None,
                    seen_revision,
                };
                (kind, ReadMode::Linearizable)
            }
            Work::LeaseRead { id, keys } => {
                let kind = RequestKind::Lease {
                    request: api::LeaseRequest::TimeToLive { id, keys },
                    group: Some(group),
                    seen_revision: 0,
                };
                (kind, ReadMode::Linearizable)
            }
            // Checked on this shard, but the group moved (never today): the owner checks
            // again.
            Work::Checked {
                command,
                seen_revision,
            } => {
                let kind = RequestKind::Kv {
                    serializable: false,
                    command,
                    group: None,
                    seen_revision,
                };
                (kind, ReadMode::Linearizable)
            }
        };
        let request = ApiRequest {
            request_id: token,
            kind,
        };
        let bytes = api::encode_request(&mut self.builder, &request).to_vec();
        let deadline = self.ticks + self.config.forward_timeout_ticks;
        self.forwarded.insert(token, origin, deadline);
        self.out.mesh.push(MeshMessage {
            from_shard: self.config.shard,
            to_shard: owner,
            token,
            body: MeshBody::Request {
                group,
                request: bytes,
                read,
            },
        });
    }

    /// Splits a request over the whole keyspace into one part per group, each read as
    /// `read` says.
    fn scatter(
        &mut self,
        origin: Origin,
        merge: Merge,
        command: Command,
        read: ReadMode,
        seen_revision: u64,
    ) {
        if self.scatters.is_full() {
            let error = ApiError::new(ErrorCode::Overloaded, "too many requests split over groups");
            self.answer(origin, Err(error));
            return;
        }
        let scatter = self.next_id();
        let groups = self.config.groups;
        // A snapshot read whose revision turns out to be behind a group's writes is
        // taken again, once, at the revision the groups named.
        let retry = matches!(read, ReadMode::SnapshotAt(_)).then(|| command.clone());
        self.scatters
            .start(scatter, origin, merge, groups as usize, retry);
        // A range delete spread over groups is one write per group: a retry may apply
        // twice, and deleting twice leaves the same state, so these parts carry no
        // session.
        let mut part = command;
        if merge == Merge::Delete {
            part.client_id = 0;
            part.seq = 0;
        }
        for group in 0..groups {
            let origin = Origin::Part { scatter };
            let work = Work::Command {
                command: part.clone(),
                read,
                seen_revision,
            };
            self.send_to_group(origin, group, work);
        }
    }

    /// Hands `work` to `group`'s replica on this shard, or says where the group lives
    /// when this node holds no replica of it.
    fn run_here(&mut self, origin: Origin, group: GroupId, work: Work) {
        if !self.raft.has_group(group) {
            let error = self.not_here(group);
            self.answer(origin, Err(error));
            return;
        }
        if let Work::Command {
            command,
            seen_revision,
            ..
        } = &work
        {
            if self.start_lease_check(origin, group, command, *seen_revision) {
                return;
            }
        }
        let id = self.next_id();
        self.proposed.insert(id, origin);
        match work {
            Work::Command {
                command,
                read,
                seen_revision,
            } => match command.op {
                Op::Range(_) => self.raft.read(id, group, command.op, read),
                _ => {
                    let floor = self.hlc.now().max(seen_revision.saturating_add(1));
                    self.raft.propose(id, group, &command, floor);
                }
            },
            Work::Checked {
                command,
                seen_revision,
            } => {
                let floor = self.hlc.now().max(seen_revision.saturating_add(1));
                self.raft.propose(id, group, &command, floor);
            }
            Work::Compact { revision } => self.raft.propose_compaction(id, group, revision),
            work @ (Work::Lease { .. } | Work::LeaseRead { .. }) => {
                self.run_lease_here(id, group, work)
            }
        }
    }

    /// The answer for a request of a group this node holds no replica of: a leader hint
    /// naming one of the group's members (spread over them, so that one member being down
    /// does not catch every retry).
    fn not_here(&mut self, group: GroupId) -> ApiError {
        let members: Vec<NodeId> = self
            .config
            .placement
            .voters(group)
            .iter()
            .copied()
            .filter(|&id| id != self.config.node_id)
            .collect();
        let message = format!("group {group} has no replica on this node");
        if members.is_empty() {
            return ApiError::new(ErrorCode::NoLeader, message);
        }
        let pick = members[(self.next_id() % members.len() as u64) as usize];
        ApiError {
            code: ErrorCode::NotLeader,
            message,
            leader: Some(LeaderHint {
                node_id: pick,
                client_address: self.config.client_address(pick),
            }),
            revision: 0,
        }
    }

    /// The Raft layer's answer to a request of this shard.
    fn on_raft_reply(&mut self, request: RequestId, reply: Reply) {
        if self.on_revoke_reply(request) {
            return;
        }
        let Some(origin) = self.proposed.remove(request) else {
            return;
        };
        let config = &self.config;
        let reply = reply.map_err(|error| {
            ApiError::from_client_error(&error, |id| Some(config.client_address(id)))
        });
        self.answer(origin, reply);
    }

    /// Delivers an answer where its origin wants it.
    fn answer(&mut self, origin: Origin, reply: Result<Response, ApiError>) {
        match origin {
            Origin::Client {
                connection,
                request_id,
            } => self.out.replies.push(ClientReply {
                connection,
                response: ApiResponse {
                    request_id,
                    result: reply.map(ApiResult::Kv),
                },
                finished: true,
            }),
            Origin::Mesh { shard, token } => {
                let response = ApiResponse {
                    request_id: token,
                    result: reply.map(ApiResult::Kv),
                };
                let bytes = api::encode_response(&mut self.builder, &response).to_vec();
                self.out.mesh.push(MeshMessage {
                    from_shard: self.config.shard,
                    to_shard: shard,
                    token,
                    body: MeshBody::Reply { response: bytes },
                });
            }
            Origin::Part { scatter } => match self.scatters.part(scatter, reply) {
                Some(ScatterEnd::Answer(origin, merged)) => self.answer(origin, merged),
                Some(ScatterEnd::Retry {
                    origin,
                    merge,
                    command,
                    revision,
                }) => self.scatter(origin, merge, command, ReadMode::At(revision), 0),
                None => {}
            },
            Origin::LeaseCheck { token } => self.on_lease_checked(token, reply),
        }
    }

    // ----- status --------------------------------------------------------------------------

    fn group_statuses(&self) -> Vec<GroupStatus> {
        self.raft.status().iter().map(GroupStatus::from).collect()
    }

    /// Starts a node status: this shard's groups now, every other shard's over the mesh.
    fn start_status(&mut self, origin: Origin) {
        if self.statuses.is_full() {
            let error = ApiError::new(ErrorCode::Overloaded, "too many status requests");
            self.answer(origin, Err(error));
            return;
        }
        let token = self.next_id();
        let others: Vec<u32> = (0..self.config.shards)
            .filter(|&shard| shard != self.config.shard)
            .collect();
        for &shard in &others {
            self.out.mesh.push(MeshMessage {
                from_shard: self.config.shard,
                to_shard: shard,
                token,
                body: MeshBody::Status,
            });
        }
        let deadline = self.ticks + self.config.status_timeout_ticks;
        let own = self.group_statuses();
        if let Some(ended) = self
            .statuses
            .start(token, origin, own, others.len(), deadline)
        {
            self.end_gather(ended);
        }
    }

    fn end_gather(&mut self, ended: GatherEnd) {
        let (origin, result) = match ended {
            GatherEnd::Complete(origin, groups) => {
                let config = &self.config;
                let info = StatusInfo {
                    node_id: config.node_id,
                    cluster_id: config.cluster_id,
                    shards: config.shards,
                    group_count: config.groups,
                    groups,
                    members: config.members.clone(),
                };
                (origin, Ok(ApiResult::Status(info)))
            }
            GatherEnd::Failed(origin, error) => (origin, Err(error)),
        };
        match origin {
            Origin::Client {
                connection,
                request_id,
            } => self.out.replies.push(ClientReply {
                connection,
                response: ApiResponse { request_id, result },
                finished: true,
            }),
            // Only clients ask for a node's status.
            Origin::Mesh { .. } | Origin::Part { .. } | Origin::LeaseCheck { .. } => {
                debug_assert!(false, "a status gather for {origin:?}");
            }
        }
    }
}

/// What one group is asked to do for a request.
#[derive(Clone, Debug)]
enum Work {
    /// A key-value command: a write (stamped above `seen_revision`) or a read served as
    /// `read` says.
    Command {
        command: Command,
        read: ReadMode,
        seen_revision: u64,
    },
    /// A compaction of the group's history.
    Compact { revision: u64 },
    /// A lease op of the lease group's table, through its log.
    Lease {
        request: api::LeaseRequest,
        seen_revision: u64,
    },
    /// A linearizable read of a lease (in the lease group) or of its keys (any group).
    LeaseRead { id: u64, keys: bool },
    /// A write whose leases were checked: proposed as it is.
    Checked {
        command: Command,
        seen_revision: u64,
    },
}

/// How a read confined to one group is served: at its revision, or from the local
/// replica when asked, or linearizably (everything before it is seen).
fn single_group_read(op: &Op, serializable: bool) -> ReadMode {
    match op {
        Op::Range(range) if range.revision != 0 => ReadMode::At(range.revision),
        _ if serializable => ReadMode::Serializable,
        _ => ReadMode::Linearizable,
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::ShuttingDown,
        "the node is shutting down; retry on another node",
    )
}

#[cfg(test)]
mod tests;
