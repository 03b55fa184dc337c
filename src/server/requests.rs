//! Client requests on one shard: accept connections, read frames, route each request to
//! the shard that owns its group (over the mesh when it is another shard), scatter ranges
//! and range deletes over every group and merge the answers, and write replies back.
//!
//! Requests for a group this node does not lead are answered by the Raft layer with a
//! leader hint (`NotLeader`); the SDK retries there. Forwarding writes between nodes
//! would add a hop and a second place to lose a reply; a hint costs one round trip once,
//! after which the client's leader cache is right. Linearizable reads need no leader:
//! any replica serves them after a read index.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use super::config::ServerConfig;
use super::mesh::{MeshBody, MeshMessage, MeshSenders};
use super::shard::{Event, Shard};
use crate::api::{
    self, ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, GroupStatus, Member,
    RequestKind, StatusInfo,
};
use crate::frame;
use crate::keyspace::{group_of, shard_of};
use crate::kv::{self, Command, Op, OpResponse, Response, TxnOp};
use crate::multiraft::{GroupId, MultiRaft, Reply, RequestId};

/// A client connection's id on its shard.
pub type ConnectionId = u64;

/// Requests one connection may have in flight; its reader waits beyond that.
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: u64 = 1024;
/// Encoded replies waiting for one connection's socket; a client that does not read is
/// disconnected rather than buffered without end.
pub const CONNECTION_FRAMES_QUEUED_MAX: usize = 2048;
/// Bytes of those replies past which the connection's next requests wait: a frame may
/// carry megabytes, so the frame count alone would let one client that reads slowly or
/// not at all hold gigabytes of the node's memory. (Requests already taken still add
/// their answers, at most `CONNECTION_REQUESTS_IN_FLIGHT_MAX` of them.)
pub const CONNECTION_QUEUED_BYTES_MAX: usize = 64 << 20;
/// Bytes of queued replies at which the connection is dropped outright: requests taken
/// while the queue was still under [`CONNECTION_QUEUED_BYTES_MAX`] may each answer up to
/// the response budget, and a thousand of them must not add up to gigabytes. A client
/// that pipelines many large scans reads its answers, and the writer drains them long
/// before this.
pub const CONNECTION_QUEUED_BYTES_HARD_MAX: usize = 2 * CONNECTION_QUEUED_BYTES_MAX;
/// A reply write that makes no progress for this long closes the connection: the client
/// stopped reading.
pub const CONNECTION_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Client connections one shard holds.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Bytes of queued reply frames gathered into one socket write (a frame larger than this
/// goes alone).
pub const REPLY_WRITE_BYTES_MAX: usize = 256 << 10;
/// Bytes read from a socket at a time.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// Ticks a request forwarded to another shard may wait before it is answered "timeout".
pub const FORWARD_TIMEOUT_TICKS: u64 = 600;

/// A decoded request from a connection of this shard.
#[derive(Debug)]
pub struct ClientRequest {
    pub connection: ConnectionId,
    pub request: ApiRequest,
}

/// Where the answer to a request goes.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Client {
        connection: ConnectionId,
        request_id: u64,
    },
    Mesh {
        shard: u32,
        token: u64,
    },
    Part {
        scatter: u64,
    },
}

/// A request split over several groups, waiting for every part.
#[derive(Debug)]
struct Scatter {
    origin: Origin,
    merge: Merge,
    remaining: usize,
    parts: Vec<Result<Response, ApiError>>,
}

/// How the parts of a scatter become one answer.
#[derive(Clone, Copy, Debug)]
enum Merge {
    Range { limit: u64 },
    Delete,
}

/// A node status waiting for the other shards' groups.
#[derive(Debug)]
struct StatusScatter {
    origin: Origin,
    remaining: usize,
    groups: Vec<GroupStatus>,
}

#[derive(Debug)]
struct Connection {
    frames: LocalSender<Vec<u8>>,
    permits: Rc<Semaphore>,
    /// Bytes in `frames` not yet written to the socket (the writer task subtracts).
    queued_bytes: Rc<Cell<usize>>,
    /// Never sent on: dropping the connection closes these channels, which stops its
    /// reader and writer tasks, so the socket is closed and its buffers freed.
    _stop_reader: LocalSender<()>,
    _stop_writer: LocalSender<()>,
}

/// One connection's ends, made when it is accepted.
#[derive(Debug)]
struct ConnectionEnds {
    outgoing: LocalReceiver<Vec<u8>>,
    permits: Rc<Semaphore>,
    queued_bytes: Rc<Cell<usize>>,
    /// The writer tells the reader it wrote a frame (one pending signal is enough).
    written_sender: LocalSender<()>,
    written: LocalReceiver<()>,
    stop_reader: LocalReceiver<()>,
    stop_writer: LocalReceiver<()>,
}

/// The request side of one shard.
pub struct Requests {
    shard: u32,
    config: Arc<ServerConfig>,
    next_id: u64,
    /// Requests handed to the Raft layer.
    pending: BTreeMap<RequestId, Origin>,
    /// Requests sent to another shard, with the tick they were sent at.
    forwarded: BTreeMap<u64, (Origin, u64)>,
    scatters: BTreeMap<u64, Scatter>,
    statuses: BTreeMap<u64, StatusScatter>,
    connections: BTreeMap<ConnectionId, Connection>,
    accepting: bool,
    ticks: u64,
    builder: FlatBufferBuilder<'static>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Requests")
            .field("shard", &self.shard)
            .field("pending", &self.pending.len())
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Requests {
    pub fn new(shard: u32, config: Arc<ServerConfig>) -> Requests {
        Requests {
            shard,
            config,
            next_id: 1,
            pending: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            scatters: BTreeMap::new(),
            statuses: BTreeMap::new(),
            connections: BTreeMap::new(),
            accepting: true,
            ticks: 0,
            builder: FlatBufferBuilder::new(),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A request read from one of this shard's connections.
    pub fn on_client_request(
        &mut self,
        request: ClientRequest,
        raft: &mut MultiRaft,
        mesh: &MeshSenders,
    ) {
        let origin = Origin::Client {
            connection: request.connection,
            request_id: request.request.request_id,
        };
        if !self.accepting {
            self.answer(origin, Err(shutting_down()), mesh);
            return;
        }
        match request.request.kind {
            RequestKind::Kv {
                command,
                serializable,
                group: None,
            } => self.route(origin, command, serializable, raft, mesh),
            RequestKind::Kv {
                command,
                serializable,
                group: Some(group),
            } => self.route_to_group(origin, group, command, serializable, raft, mesh),
            RequestKind::Status => self.start_status(origin, raft, mesh),
        }
    }

    /// Sends `command` to the group(s) it touches.
    fn route(
        &mut self,
        origin: Origin,
        command: Command,
        serializable: bool,
        raft: &mut MultiRaft,
        mesh: &MeshSenders,
    ) {
        let groups = self.config.groups;
        let target = match &command.op {
            Op::Range(range) if !range.range_end.is_empty() && groups > 1 => {
                Target::All(Merge::Range { limit: range.limit })
            }
            Op::Delete(delete) if !delete.range_end.is_empty() && groups > 1 => {
                Target::All(Merge::Delete)
            }
            op => match single_group(op, groups) {
                Some(group) => Target::One(group),
                None => {
                    let error = ApiError::new(
                        ErrorCode::TxnSpansGroups,
                        "a transaction must touch keys of one group only",
                    );
                    self.answer(origin, Err(error), mesh);
                    return;
                }
            },
        };
        match target {
            Target::One(group) => {
                self.send_to_group(origin, group, command, serializable, raft, mesh)
            }
            Target::All(merge) => {
                let scatter = self.next_id();
                self.scatters.insert(
                    scatter,
                    Scatter {
                        origin,
                        merge,
                        remaining: groups as usize,
                        parts: Vec::new(),
                    },
                );
                // A range delete spread over groups is one write per group: a retry may
                // apply twice, and deleting twice leaves the same state, so these parts
                // carry no session.
                let mut part = command;
                if matches!(merge, Merge::Delete) {
                    part.client_id = 0;
                    part.seq = 0;
                }
                for group in 0..groups {
                    let origin = Origin::Part { scatter };
                    self.send_to_group(origin, group, part.clone(), serializable, raft, mesh);
                }
            }
        }
    }

    /// Sends `command` to the one group the client named: its ranges cover that group's
    /// keys only, and every single key it names must belong to the group.
    fn route_to_group(
        &mut self,
        origin: Origin,
        group: GroupId,
        command: Command,
        serializable: bool,
        raft: &mut MultiRaft,
        mesh: &MeshSenders,
    ) {
        let groups = self.config.groups;
        let refusal = if group >= groups {
            Some(format!("group {group} does not exist ({groups} groups)"))
        } else if !single_keys_in_group(&command.op, group, groups) {
            Some(format!("the request names a key outside group {group}"))
        } else {
            None
        };
        match refusal {
            Some(message) => {
                let error = ApiError::new(ErrorCode::InvalidRequest, &message);
                self.answer(origin, Err(error), mesh);
            }
            None => self.send_to_group(origin, group, command, serializable, raft, mesh),
        }
    }

    /// Runs `command` on `group` here, or forwards it to the shard that owns the group.
    fn send_to_group(
        &mut self,
        origin: Origin,
        group: GroupId,
        command: Command,
        serializable: bool,
        raft: &mut MultiRaft,
        mesh: &MeshSenders,
    ) {
        let owner = shard_of(group, self.config.shards);
        if owner == self.shard {
            self.run_local(origin, group, command, serializable, raft);
            return;
        }
        let token = self.next_id();
        let request = ApiRequest {
            request_id: token,
            kind: RequestKind::Kv {
                command,
                serializable,
                // The mesh message names the group.
                group: None,
            },
        };
        let bytes = api::encode_request(&mut self.builder, &request).to_vec();
        let message = MeshMessage {
            from_shard: self.shard,
            token,
            body: MeshBody::Request {
                group,
                request: bytes,
            },
        };
        match mesh.try_send(owner, message) {
            Ok(()) => {
                self.forwarded.insert(token, (origin, self.ticks));
            }
            Err(_) => {
                let error = ApiError::new(ErrorCode::Overloaded, "shard queue full; retry");
                self.answer(origin, Err(error), mesh);
            }
        }
    }

    fn run_local(
        &mut self,
        origin: Origin,
        group: GroupId,
        command: Command,
        serializable: bool,
        raft: &mut MultiRaft,
    ) {
        let id = self.next_id();
        self.pending.insert(id, origin);
        match command.op {
            Op::Range(_) => raft.read(id, group, command.op, serializable),
            _ => raft.propose(id, group, &command),
        }
    }

    /// A message from another shard of this node.
    pub fn on_mesh_message(
        &mut self,
        message: MeshMessage,
        raft: &mut MultiRaft,
        mesh: &MeshSenders,
    ) {
        let origin = Origin::Mesh {
            shard: message.from_shard,
            token: message.token,
        };
        match message.body {
            MeshBody::Request { group, request } => match api::decode_request(&request) {
                Ok(ApiRequest {
                    kind:
                        RequestKind::Kv {
                            command,
                            serializable,
                            ..
                        },
                    ..
                }) => {
                    self.run_local(origin, group, command, serializable, raft);
                }
                Ok(_) | Err(_) => {
                    let error = ApiError::new(ErrorCode::Internal, "bad request between shards");
                    self.answer(origin, Err(error), mesh);
                }
            },
            MeshBody::Reply { response } => {
                let Some((origin, _)) = self.forwarded.remove(&message.token) else {
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
                self.answer(origin, reply, mesh);
            }
            MeshBody::Status => {
                let info = StatusInfo {
                    groups: group_statuses(raft),
                    ..StatusInfo::default()
                };
                let response = ApiResponse {
                    request_id: message.token,
                    result: Ok(ApiResult::Status(info)),
                };
                let bytes = api::encode_response(&mut self.builder, &response).to_vec();
                let reply = MeshMessage {
                    from_shard: self.shard,
                    token: message.token,
                    body: MeshBody::StatusReply { response: bytes },
                };
                let _ = mesh.try_send(message.from_shard, reply);
            }
            MeshBody::StatusReply { response } => {
                let groups = match api::decode_response(&response) {
                    Ok(ApiResponse {
                        result: Ok(ApiResult::Status(info)),
                        ..
                    }) => info.groups,
                    _ => Vec::new(),
                };
                self.status_part(message.token, Some(groups));
            }
        }
    }

    /// The Raft layer's answer to a request of this shard.
    pub fn on_reply(&mut self, request: RequestId, reply: Reply, mesh: &MeshSenders) {
        let Some(origin) = self.pending.remove(&request) else {
            return;
        };
        let members = &self.config.members;
        let reply = reply.map_err(|error| {
            ApiError::from_client_error(&error, |id| {
                members.get(&id).map(|member| member.client.to_string())
            })
        });
        self.answer(origin, reply, mesh);
    }

    /// Delivers an answer where its origin wants it.
    fn answer(&mut self, origin: Origin, reply: Result<Response, ApiError>, mesh: &MeshSenders) {
        match origin {
            Origin::Client {
                connection,
                request_id,
            } => {
                let answer_bytes = encode_reply(&mut self.builder, request_id, reply).len();
                if answer_bytes > frame::FRAME_BYTES_MAX {
                    // Dropping the answer would leave the client waiting for it; say why
                    // there is none instead.
                    let error = ApiError::new(
                        ErrorCode::RequestTooLarge,
                        format!("the answer of {answer_bytes} bytes exceeds the frame maximum"),
                    );
                    encode_reply(&mut self.builder, request_id, Err(error));
                }
                queue_reply(
                    &mut self.connections,
                    connection,
                    self.builder.finished_data(),
                    true,
                );
            }
            Origin::Mesh { shard, token } => {
                let bytes = encode_reply(&mut self.builder, token, reply).to_vec();
                let message = MeshMessage {
                    from_shard: self.shard,
                    token,
                    body: MeshBody::Reply { response: bytes },
                };
                // The other shard times the request out if its reply cannot be queued.
                let _ = mesh.try_send(shard, message);
            }
            Origin::Part { scatter } => {
                let Some(state) = self.scatters.get_mut(&scatter) else {
                    return;
                };
                state.parts.push(reply);
                state.remaining -= 1;
                if state.remaining == 0 {
                    let state = self.scatters.remove(&scatter).expect("present");
                    let merged = merge(state.merge, state.parts);
                    self.answer(state.origin, merged, mesh);
                }
            }
        }
    }

    /// Starts a node status: this shard's groups now, every other shard's over the mesh.
    fn start_status(&mut self, origin: Origin, raft: &MultiRaft, mesh: &MeshSenders) {
        let token = self.next_id();
        let mut waiting = StatusScatter {
            origin,
            remaining: 0,
            groups: group_statuses(raft),
        };
        for shard in (0..self.config.shards).filter(|&shard| shard != self.shard) {
            let message = MeshMessage {
                from_shard: self.shard,
                token,
                body: MeshBody::Status,
            };
            if mesh.try_send(shard, message).is_ok() {
                waiting.remaining += 1;
            }
        }
        self.statuses.insert(token, waiting);
        self.status_part(token, None);
    }

    /// Adds one shard's groups (`None`: only check) to a node status; answers once every
    /// shard reported.
    fn status_part(&mut self, token: u64, groups: Option<Vec<GroupStatus>>) {
        let Some(waiting) = self.statuses.get_mut(&token) else {
            return;
        };
        if let Some(groups) = groups {
            waiting.groups.extend(groups);
            waiting.remaining = waiting.remaining.saturating_sub(1);
        }
        if waiting.remaining > 0 {
            return;
        }
        let mut waiting = self.statuses.remove(&token).expect("present");
        waiting.groups.sort_by_key(|group| group.group_id);
        let config = &self.config;
        let info = StatusInfo {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            shards: config.shards,
            group_count: config.groups,
            groups: waiting.groups,
            members: config
                .members
                .values()
                .map(|member| Member {
                    node_id: member.id,
                    client_address: member.client.to_string(),
                    peer_address: member.peer.to_string(),
                })
                .collect(),
        };
        if let Origin::Client {
            connection,
            request_id,
        } = waiting.origin
        {
            let response = ApiResponse {
                request_id,
                result: Ok(ApiResult::Status(info)),
            };
            let bytes = api::encode_response(&mut self.builder, &response);
            queue_reply(&mut self.connections, connection, bytes, true);
        }
    }

    /// Times out requests forwarded to a shard that never answered.
    pub fn on_tick(&mut self, ticks: u64, mesh: &MeshSenders) {
        self.ticks = ticks;
        let expired: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, (_, sent))| ticks.saturating_sub(*sent) > FORWARD_TIMEOUT_TICKS)
            .map(|(&token, _)| token)
            .collect();
        for token in expired {
            let (origin, _) = self.forwarded.remove(&token).expect("present");
            let error = ApiError::new(ErrorCode::Timeout, "the owning shard did not answer");
            self.answer(origin, Err(error), mesh);
        }
    }

    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Answers every request still waiting with "shutting down".
    pub fn fail_all_shutting_down(&mut self, mesh: &MeshSenders) {
        let origins: Vec<Origin> = self
            .pending
            .values()
            .copied()
            .chain(self.forwarded.values().map(|(origin, _)| *origin))
            .collect();
        self.pending.clear();
        self.forwarded.clear();
        for origin in origins {
            self.answer(origin, Err(shutting_down()), mesh);
        }
    }

    fn register(&mut self) -> Option<(ConnectionId, ConnectionEnds)> {
        if !self.accepting || self.connections.len() >= CONNECTIONS_MAX {
            return None;
        }
        let (frames, outgoing) = local_channel::new_bounded(CONNECTION_FRAMES_QUEUED_MAX);
        let (stop_reader_sender, stop_reader) = local_channel::new_bounded(1);
        let (stop_writer_sender, stop_writer) = local_channel::new_bounded(1);
        let (written_sender, written) = local_channel::new_bounded(1);
        let permits = Rc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
        let queued_bytes = Rc::new(Cell::new(0));
        let id = self.next_id();
        let connection = Connection {
            frames,
            permits: permits.clone(),
            queued_bytes: queued_bytes.clone(),
            _stop_reader: stop_reader_sender,
            _stop_writer: stop_writer_sender,
        };
        self.connections.insert(id, connection);
        let ends = ConnectionEnds {
            outgoing,
            permits,
            queued_bytes,
            written_sender,
            written,
            stop_reader,
            stop_writer,
        };
        Some((id, ends))
    }

    fn unregister(&mut self, connection: ConnectionId) {
        self.connections.remove(&connection);
    }
}

/// Encodes the answer to a key-value request.
fn encode_reply<'a>(
    builder: &'a mut FlatBufferBuilder<'static>,
    request_id: u64,
    reply: Result<Response, ApiError>,
) -> &'a [u8] {
    let response = ApiResponse {
        request_id,
        result: reply.map(ApiResult::Kv),
    };
    api::encode_response(builder, &response)
}

fn group_statuses(raft: &MultiRaft) -> Vec<GroupStatus> {
    raft.status().iter().map(GroupStatus::from).collect()
}

enum Target {
    One(GroupId),
    All(Merge),
}

fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::ShuttingDown,
        "the node is shutting down; retry on another node",
    )
}

/// The one group every key of `op` belongs to; `None` when the keys span groups.
fn single_group(op: &Op, groups: u64) -> Option<GroupId> {
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut ranged = false;
    match op {
        Op::Range(range) => keys.push(&range.key),
        Op::Put(put) => keys.push(&put.key),
        Op::Delete(delete) => keys.push(&delete.key),
        Op::Append(append) => keys.push(&append.key),
        Op::Txn(txn) => {
            keys.extend(txn.compares.iter().map(|compare| compare.key.as_slice()));
            for op in txn.success.iter().chain(&txn.failure) {
                let (key, range_end): (&[u8], &[u8]) = match op {
                    TxnOp::Range(range) => (&range.key, &range.range_end),
                    TxnOp::Put(put) => (&put.key, &[]),
                    TxnOp::Delete(delete) => (&delete.key, &delete.range_end),
                    TxnOp::Append(append) => (&append.key, &[]),
                };
                keys.push(key);
                ranged |= !range_end.is_empty();
            }
        }
    }
    if ranged && groups > 1 {
        return None;
    }
    let first = group_of(keys.first().copied().unwrap_or_default(), groups);
    keys.iter()
        .all(|key| group_of(key, groups) == first)
        .then_some(first)
}

/// Whether every key `op` names on its own (not as the start of a range) belongs to
/// `group`: a group-scoped op may range over its group's keys, but a single key of
/// another group would be a write or read the group does not own.
fn single_keys_in_group(op: &Op, group: GroupId, groups: u64) -> bool {
    let in_group = |key: &[u8]| group_of(key, groups) == group;
    let txn_op_fits = |op: &TxnOp| match op {
        TxnOp::Range(range) => !range.range_end.is_empty() || in_group(&range.key),
        TxnOp::Put(put) => in_group(&put.key),
        TxnOp::Delete(delete) => !delete.range_end.is_empty() || in_group(&delete.key),
        TxnOp::Append(append) => in_group(&append.key),
    };
    match op {
        Op::Range(range) => !range.range_end.is_empty() || in_group(&range.key),
        Op::Delete(delete) => !delete.range_end.is_empty() || in_group(&delete.key),
        Op::Put(put) => in_group(&put.key),
        Op::Append(append) => in_group(&append.key),
        Op::Txn(txn) => {
            txn.compares.iter().all(|compare| in_group(&compare.key))
                && txn.success.iter().chain(&txn.failure).all(txn_op_fits)
        }
    }
}

/// One answer from the answers of every group.
fn merge(merge: Merge, parts: Vec<Result<Response, ApiError>>) -> Result<Response, ApiError> {
    let mut revision = 0;
    let mut ranges = Vec::new();
    let mut deletes = Vec::new();
    for part in parts {
        let response = part?;
        revision = revision.max(response.revision);
        match response.op {
            OpResponse::Range(range) => ranges.push(range),
            OpResponse::Delete(delete) => deletes.push(delete),
            _ => return Err(ApiError::new(ErrorCode::Internal, "unexpected part answer")),
        }
    }
    let op = match merge {
        Merge::Range { limit } => OpResponse::Range(merge_ranges(
            ranges,
            limit,
            kv::Limits::default().response_bytes_max,
        )),
        Merge::Delete => {
            let mut out = kv::DeleteResponse::default();
            for delete in deletes {
                out.deleted += delete.deleted;
                out.prev_kvs.extend(delete.prev_kvs);
            }
            out.prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
            OpResponse::Delete(out)
        }
    };
    Ok(Response { revision, op })
}

/// One range answer from the answers of every group, each a prefix of its group's
/// matching keys. The merged `kvs` are a prefix of all matching keys too, so a client can
/// page on from the last one: nothing past the smallest last key of a group that stopped
/// early (its next keys are unknown here), at most `limit` pairs (0: no limit), and at most
/// `response_bytes_max` bytes as the store counts them (so that eight groups' full
/// answers cannot add up to more than a frame holds).
fn merge_ranges(
    ranges: Vec<kv::RangeResponse>,
    limit: u64,
    response_bytes_max: u64,
) -> kv::RangeResponse {
    let mut out = kv::RangeResponse::default();
    let mut cut: Option<Vec<u8>> = None;
    for range in ranges {
        out.count += range.count;
        if range.more {
            out.more = true;
            // A group that stopped before its first key (it cannot, while every key-value
            // fits the budget) would allow no key at all: the empty key sorts first.
            let last = range.kvs.last().map_or(&[][..], |pair| pair.key.as_slice());
            if cut.as_ref().is_none_or(|cut| last < cut.as_slice()) {
                cut = Some(last.to_vec());
            }
        }
        out.kvs.extend(range.kvs);
    }
    out.kvs.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(cut) = cut {
        let kept = out.kvs.partition_point(|pair| pair.key <= cut);
        out.kvs.truncate(kept);
    }
    if limit > 0 && out.kvs.len() as u64 > limit {
        out.kvs.truncate(limit as usize);
        out.more = true;
    }
    let mut bytes = 0u64;
    let within = out
        .kvs
        .iter()
        .take_while(|pair| {
            bytes += pair.encoded_bytes() as u64;
            bytes <= response_bytes_max
        })
        .count();
    if within < out.kvs.len() {
        out.kvs.truncate(within);
        out.more = true;
    }
    out
}

/// Frames an encoded response straight from the encoder's buffer and queues it for a
/// connection; `releases` gives back the request's in-flight permit. A free function over
/// the connection table so that the payload can stay borrowed from the shard's builder.
fn queue_reply(
    connections: &mut BTreeMap<ConnectionId, Connection>,
    connection: ConnectionId,
    payload: &[u8],
    releases: bool,
) {
    let Some(state) = connections.get(&connection) else {
        return;
    };
    if releases {
        state.permits.signal(1);
    }
    let mut frame_bytes = Vec::with_capacity(payload.len() + frame::FRAME_HEADER_BYTES);
    if frame::encode(&mut frame_bytes, payload).is_err() {
        return;
    }
    let queued_bytes = state.queued_bytes.get() + frame_bytes.len();
    if queued_bytes > CONNECTION_QUEUED_BYTES_HARD_MAX
        || state.frames.try_send(frame_bytes).is_err()
    {
        // A client that does not read its replies loses its connection: dropping it
        // stops its tasks, which close the socket.
        connections.remove(&connection);
        return;
    }
    state.queued_bytes.set(queued_bytes);
}

/// Binds this shard's client listener (SO_REUSEPORT: every shard binds the same address
/// and the kernel spreads connections) and accepts until shutdown.
pub fn start_client_listener(shard: Rc<RefCell<Shard>>) -> std::io::Result<JoinHandle<()>> {
    let address = shard.borrow().config.listen_client;
    let listener = TcpListener::bind(address)?;
    let task = glommio::spawn_local(async move {
        loop {
            let Ok(stream) = listener.accept().await else {
                continue;
            };
            let Some((connection, ends)) = shard.borrow_mut().requests.register() else {
                continue;
            };
            let ConnectionEnds {
                outgoing,
                permits,
                queued_bytes,
                written_sender,
                written,
                stop_reader,
                stop_writer,
            } = ends;
            let _ = stream.set_nodelay(true);
            if stream
                .set_write_timeout(Some(CONNECTION_WRITE_TIMEOUT))
                .is_err()
            {
                shard.borrow_mut().requests.unregister(connection);
                continue;
            }
            let (mut reader, mut writer) = futures_lite::io::split(stream);
            // Each task ends when its connection is dropped (the client closed, broke the
            // protocol, or stopped reading), wherever it is waiting; the socket closes once
            // both halves are gone.
            let writer_shard = shard.clone();
            let writer_queued_bytes = queued_bytes.clone();
            glommio::spawn_local(async move {
                let progress = WriteProgress {
                    queued_bytes: &writer_queued_bytes,
                    written: &written_sender,
                };
                let write = write_replies(&outgoing, &mut writer, &progress);
                futures_lite::future::or(stopped(&stop_writer), write).await;
                // A failed or stalled write ends the connection, reader included.
                writer_shard.borrow_mut().requests.unregister(connection);
            })
            .detach();
            let events = shard.borrow().events.clone();
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let room = ReplyRoom {
                    queued_bytes: &queued_bytes,
                    written: &written,
                };
                let read = read_requests(connection, &mut reader, &events, &permits, &room, &shard);
                futures_lite::future::or(stopped(&stop_reader), read).await;
                shard.borrow_mut().requests.unregister(connection);
            })
            .detach();
        }
    })
    .detach();
    Ok(task)
}

/// Writes a connection's reply frames until it closes. The frames queued by the time the
/// socket is free go out in one write (up to [`REPLY_WRITE_BYTES_MAX`]): a turn answers
/// many requests of one connection at once, and a send per reply would cost a system call
/// each.
async fn write_replies(
    outgoing: &LocalReceiver<Vec<u8>>,
    writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    progress: &WriteProgress<'_>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(REPLY_WRITE_BYTES_MAX);
    while let Some(frame) = outgoing.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < REPLY_WRITE_BYTES_MAX {
            match futures_lite::future::poll_once(outgoing.recv()).await {
                Some(Some(frame)) => batch.extend_from_slice(&frame),
                // Nothing more queued now, or the connection is over: write what there is.
                _ => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            return;
        }
        progress.wrote(batch.len());
    }
}

/// The writer's side of a connection's reply accounting.
#[derive(Debug)]
struct WriteProgress<'a> {
    queued_bytes: &'a Cell<usize>,
    written: &'a LocalSender<()>,
}

impl WriteProgress<'_> {
    /// Frames of `bytes` left for the socket: room for the reader (one pending signal is
    /// enough to wake it).
    fn wrote(&self, bytes: usize) {
        self.queued_bytes
            .set(self.queued_bytes.get().saturating_sub(bytes));
        let _ = self.written.try_send(());
    }
}

/// What a connection's reader checks before it takes another request: room among the
/// replies waiting for the socket.
#[derive(Debug)]
struct ReplyRoom<'a> {
    queued_bytes: &'a Cell<usize>,
    written: &'a LocalReceiver<()>,
}

impl ReplyRoom<'_> {
    /// Waits until the queued replies are within [`CONNECTION_QUEUED_BYTES_MAX`]; false
    /// when the writer is gone.
    async fn wait(&self) -> bool {
        while self.queued_bytes.get() > CONNECTION_QUEUED_BYTES_MAX {
            if self.written.recv().await.is_none() {
                return false;
            }
        }
        true
    }
}

/// Resolves once the connection that holds the other end of `stop` is dropped.
async fn stopped(stop: &LocalReceiver<()>) {
    while stop.recv().await.is_some() {}
}

/// Reads frames from one connection until it closes or misbehaves.
async fn read_requests(
    connection: ConnectionId,
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    events: &Rc<LocalSender<Event>>,
    permits: &Rc<Semaphore>,
    room: &ReplyRoom<'_>,
    shard: &Rc<RefCell<Shard>>,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        loop {
            let (payload_range, consumed) = match frame::decode(&buffer, frame::FRAME_BYTES_MAX) {
                Ok(Some(decoded)) => (decoded.payload_range(), decoded.consumed_bytes),
                Ok(None) => break,
                // Framing is lost: nothing after this point can be trusted.
                Err(_) => return,
            };
            let decoded = api::decode_request(&buffer[payload_range]);
            buffer.drain(..consumed);
            match decoded {
                Ok(request) => {
                    if !room.wait().await || permits.acquire(1).await.is_err() {
                        return;
                    }
                    let event = Event::Client(ClientRequest {
                        connection,
                        request,
                    });
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(error) => match error.request_id {
                    // A well-formed request this server cannot serve: answer it, keep going.
                    Some(request_id) => {
                        let mut this = shard.borrow_mut();
                        let requests = &mut this.requests;
                        let reply = Err(ApiError::new(error.code, &error.message));
                        let bytes = encode_reply(&mut requests.builder, request_id, reply);
                        queue_reply(&mut requests.connections, connection, bytes, false);
                    }
                    // Not even a request: close.
                    None => return,
                },
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value_bytes: usize) -> kv::KeyValue {
        kv::KeyValue {
            key: key.as_bytes().to_vec(),
            value: vec![b'v'; value_bytes],
            ..kv::KeyValue::default()
        }
    }

    fn range(keys: &[&str], count: u64, more: bool) -> kv::RangeResponse {
        kv::RangeResponse {
            kvs: keys.iter().map(|key| pair(key, 0)).collect(),
            count,
            more,
        }
    }

    fn keys(range: &kv::RangeResponse) -> Vec<String> {
        range
            .kvs
            .iter()
            .map(|pair| String::from_utf8(pair.key.clone()).unwrap())
            .collect()
    }

    // Complete answers merge into key order; the limit keeps the first keys.
    #[test]
    fn merged_ranges_are_ordered_and_limited() {
        let parts = vec![
            range(&["b", "d"], 2, false),
            range(&["a", "c", "e"], 3, false),
        ];
        let merged = merge_ranges(parts.clone(), 0, u64::MAX);
        assert_eq!(keys(&merged), ["a", "b", "c", "d", "e"]);
        assert_eq!((merged.count, merged.more), (5, false));
        let limited = merge_ranges(parts, 3, u64::MAX);
        assert_eq!(keys(&limited), ["a", "b", "c"]);
        assert_eq!((limited.count, limited.more), (5, true));
    }

    // A group that stopped early hides its later keys: nothing past its last key is
    // returned, so the answer has no hole a client paging on would skip.
    #[test]
    fn merged_ranges_stop_at_a_group_that_stopped_early() {
        let parts = vec![
            range(&["a", "c"], 4, true),
            range(&["b", "d", "f"], 3, false),
        ];
        let merged = merge_ranges(parts, 0, u64::MAX);
        assert_eq!(keys(&merged), ["a", "b", "c"]);
        assert_eq!((merged.count, merged.more), (7, true));
    }

    // The merged answer stays within the byte budget however many groups filled theirs.
    #[test]
    fn merged_ranges_respect_the_byte_budget() {
        let big = 1000;
        let parts: Vec<kv::RangeResponse> = (0..8)
            .map(|group| kv::RangeResponse {
                kvs: (0..4)
                    .map(|index| pair(&format!("k{index}{group}"), big))
                    .collect(),
                count: 4,
                more: false,
            })
            .collect();
        let one = pair("k00", big).encoded_bytes() as u64;
        let merged = merge_ranges(parts, 0, 10 * one);
        assert_eq!(merged.kvs.len(), 10);
        assert_eq!((merged.count, merged.more), (32, true));
        assert_eq!(keys(&merged)[..3], ["k00", "k01", "k02"]);
    }
}
