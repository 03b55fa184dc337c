//! The SDK: a blocking client for a corekv cluster, built on std sockets and threads and
//! safe to share between threads (`Client` is `Send + Sync`; share it by reference or in
//! an `Arc`).
//!
//! # How an operation travels
//!
//! - [`Client::connect`] asks the first endpoint that answers for its status: the
//!   cluster id, the group count (which [`group_of`] divides by) and every member's client
//!   address. The client sends only to the endpoints it was given and to nodes a live
//!   node names as a group's leader in a `NotLeader` answer (see `client/routing.rs`):
//!   leaving a dead node out of the endpoints keeps every request away from it.
//!   [`ClientOptions::route_to_all_members`] sends to every member the status lists.
//! - Each node has one pipelined connection (`client/connection.rs`): many requests in flight,
//!   matched to responses by request id, at most [`ClientOptions::in_flight_max`] at once.
//!   A node whose connection fails is skipped for a growing pause (`client/node.rs`).
//! - A write goes to its group's cached leader, or to any node when none is cached; a
//!   `NotLeader` answer names the leader, which is cached and tried next. `NoLeader`,
//!   `Timeout` (outcome unknown), `Overloaded`, `ShuttingDown`, a lost connection and an
//!   attempt without an answer within [`ClientOptions::attempt_timeout`] are retried
//!   after a pause (doubling with jitter, capped), at most
//!   [`ClientOptions::retries_max`] times and never past
//!   [`ClientOptions::request_timeout`]. Every retry of a write carries the same
//!   (client id, seq), so the group applies it at most once. A cached leader that lost
//!   the connection or gave no answer in time is forgotten, so a hung old leader does
//!   not hold its groups' requests while the others have elected a new one.
//! - Reads are linearizable unless asked otherwise; any node serves them. A linearizable
//!   read of one key prefers its group's cached leader (which answers without asking
//!   another node); a serializable read, or a range across groups, goes to the next node
//!   in turn.
//! - A range read with a `range_end` is sent once: any replica serves it, scattering it
//!   over the groups and merging the answers. A transaction is routed by its first key;
//!   one that spans groups is refused by the server (`TxnSpansGroups`). A delete with a
//!   `range_end` is a write to every group, and no node need lead them all: the client
//!   sends one part per group, confined to that group (`Request.group`), to that group's
//!   leader with that group's session, and merges the answers
//!   ([`Client::delete_with`]).
//!
//! # Decisions and I/O
//!
//! The decisions above are plain code without clock, sockets or threads, so that the
//! simulator's clients run them too: [`routing`] (the nodes, the leader cache, the order
//! in which nodes are tried, leader hints), [`attempt`] (one operation's attempt loop:
//! retries, backoff, deadline, redirects, the result) and [`session`] (a client id's seqs
//! per group). Time is passed in as a duration since an epoch and randomness as a
//! [`random::Random`]. What is left here is I/O: connections (`client/connection.rs`),
//! node health (`client/node.rs`), the session pool (`client/pool.rs`) and the driver of
//! the attempt loop, [`Pending`] (`client/pending.rs`).
//!
//! # Watches
//!
//! [`Client::watch`] opens a [`WatchStream`] (`client/watch.rs`) on a connection of its
//! own: a watch is many answers to one request. The stream resumes by itself on another
//! node after a disconnect or a node failure, from the revision after the last one it
//! delivered, so no change is lost or delivered twice; a compacted revision ends it with
//! [`WatchError::Compacted`].
//! # Leases
//!
//! `client/lease.rs`: grant, revoke, keep-alive, time-to-live and list through the lease
//! group's leader, [`Client::put_with_lease`], and [`KeepAlive`], a thread that renews a
//! lease before it expires and rides out node failures (`docs/LEASES.md`).
//!
//! # Sessions
//!
//! Writes are exactly-once through sessions (`client/session.rs`): each write checks a client id
//! out of a pool of at most [`ClientOptions::sessions_max`], takes that id's next seq in
//! its group, and returns the id when done, so no (client id, group) ever has two writes
//! outstanding. When a group answers `SessionExpired` to a write's first delivery, the
//! write was not applied: the client id is retired and the write is sent again under a
//! fresh one. When it answers so to a retry, the first delivery may have applied and the
//! write ends with [`ClientError::OutcomeUnknown`]. A write whose outcome stays unknown,
//! and a refused first write of a group, retire their client id too (the table in
//! `client/session.rs` says why).
//!
//! # Many operations from one thread
//!
//! [`Client::start`] sends an operation and returns a [`Pending`] at once; its
//! [`Pending::wait`] runs the rest of the attempt loop above, exactly as a blocking call
//! does (the blocking calls are `start` then `wait`). [`Pending::is_ready`] moves an
//! operation on without blocking and says whether its result is in. With
//! [`Client::start_tagged`], each operation reports the end of each of its attempts to a
//! [`Completions`] queue under a tag, so one thread can keep many operations in flight
//! and sleep until any of them has news. Operations started through a [`Batch`]
//! ([`Client::batch`]) are written together when it is flushed: one system call per
//! connection for all of them. A pending write holds its session until its result:
//! [`ClientOptions::sessions_max`] bounds the writes in flight from one client, whether
//! they come from many threads or from one.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use corekv::client::{Client, ClientOptions, Completions, Pending};
//! use corekv::kv;
//!
//! let client = Client::connect(&["127.0.0.1:7379".to_string()], ClientOptions::default())?;
//! let completions = Arc::new(Completions::new(64)?);
//! let mut batch = client.batch();
//! let mut pendings: Vec<Option<Pending<'_>>> = Vec::new();
//! for index in 0..64u64 {
//!     let op = kv::Op::Put(kv::PutRequest {
//!         key: format!("key-{index}").into_bytes(),
//!         value: b"value".to_vec(),
//!         ..kv::PutRequest::default()
//!     });
//!     pendings.push(Some(batch.start_tagged(op, false, &completions, index)?));
//! }
//! batch.flush();
//! let (mut left, mut tags) = (pendings.len(), Vec::new());
//! while left > 0 {
//!     tags.clear();
//!     completions.wait_until(Instant::now() + Duration::from_millis(5), &mut tags);
//!     // A retry pause or an attempt timeout raises no tag: look at those too.
//!     let now = Instant::now();
//!     for (index, slot) in pendings.iter().enumerate() {
//!         let due = slot.as_ref().and_then(Pending::poll_at);
//!         if due.is_some_and(|moment| moment <= now) {
//!             tags.push(index as u64);
//!         }
//!     }
//!     for &tag in &tags {
//!         let slot = &mut pendings[tag as usize];
//!         if slot.as_mut().is_some_and(Pending::is_ready) {
//!             let response = slot.take().expect("ready").wait()?;
//!             println!("key-{tag} written at revision {}", response.revision);
//!             left -= 1;
//!         }
//!     }
//! }
//! # Ok::<(), corekv::client::ClientError>(())
//! ```
//!
//! # Errors
//!
//! See [`ClientError`]: a write that may have been applied always ends in
//! `OutcomeUnknown` (never `Timeout` or `Unavailable`), so a caller can tell "not
//! applied" from "maybe applied".

pub mod attempt;
mod completions;
mod connection;
mod error;
mod lease;
mod node;
mod options;
mod pending;
mod pool;
pub mod random;
mod revisions;
pub mod routing;
pub mod session;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

pub use completions::{Completions, COMPLETIONS_PENDING_CEILING};
pub use error::ClientError;
pub use lease::{KeepAlive, KeepAliveState, Lease, LeaseTimeToLive, KEEP_ALIVE_INTERVAL_MIN};
pub use options::{
    ClientOptions, ATTEMPT_TIMEOUT_DEFAULT, CONNECT_TIMEOUT_DEFAULT, IN_FLIGHT_CEILING,
    IN_FLIGHT_MAX_DEFAULT, RECONNECT_BACKOFF_INITIAL_DEFAULT, RECONNECT_BACKOFF_MAX_DEFAULT,
    REQUEST_TIMEOUT_DEFAULT, RETRIES_CEILING, RETRIES_MAX_DEFAULT, RETRY_BACKOFF_INITIAL_DEFAULT,
    RETRY_BACKOFF_MAX_DEFAULT, SESSIONS_CEILING, SESSIONS_MAX_DEFAULT,
};
pub use pending::{Batch, Pending};
pub use revisions::{CompareAndPut, List, ListPage, LIST_PAGE_KEYS_DEFAULT};
pub use routing::NODES_MAX;
pub use watch::{WatchError, WatchItem, WatchStream, WATCH_RESUME_DEADLINE, WATCH_SILENCE_TIMEOUT};

pub use crate::api::{
    ErrorCode, EventKind, GroupStatus, Member, StatusInfo, WatchCreate, WatchEvent,
};
pub use crate::kv::{
    AppendResponse, Compare, CompareResult, CompareTarget, DeleteResponse, KeyValue, PutResponse,
    RangeRequest, RangeResponse, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

use crate::api::{ApiRequest, ApiResponse, ApiResult, RequestKind};
// Named by the documentation's links only.
#[cfg(doc)]
use crate::keyspace::group_of;
use crate::kv::{self, OpResponse};
use crate::multiraft::GroupId;
use crate::raft::{NodeId, NO_NODE};
use attempt::CallError;
use connection::Connection;
use node::Node;
use pool::SessionPool;
use routing::{NodeOrder, Router};

/// Options of a put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Return the key-value as it was before the put.
    pub prev_kv: bool,
    /// The lease id stored with the key; 0 means none.
    pub lease: u64,
}

/// One node's answer to a status request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's client address.
    pub address: String,
    /// The node's id, or [`NO_NODE`] when the cluster has not named it to this client.
    pub node_id: NodeId,
    pub result: Result<StatusInfo, ClientError>,
}

/// A connection-pooling, retrying client of one corekv cluster.
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    cluster_id: u64,
    group_count: u64,
    members: Vec<Member>,
    /// Where requests go: the nodes, the leader cache, the rotation (`client/routing.rs`).
    /// Taken for each decision and let go before any I/O.
    router: Mutex<Router>,
    /// Each router node's connection and health, at the router's index. Only ever
    /// appended to, and only under the router's lock, so an index the router gives out
    /// names a node here too.
    nodes: RwLock<Vec<Arc<Node>>>,
    sessions: SessionPool,
    /// The moment the client's time values count from (the attempt loop reads time as a
    /// duration since then).
    epoch: Instant,
    /// The highest revision any answer carried: every request sends it, so that what the
    /// client does next is ordered after what it saw (see `shard/hlc.rs`).
    seen_revision: AtomicU64,
    /// No operation waits past this moment ([`Client::set_deadline`]).
    deadline: Option<Instant>,
}

/// Groups a range delete writes to at once (each part holds a session until answered).
pub const DELETE_PARTS_IN_FLIGHT_MAX: usize = 16;

fn unexpected_result(asked: &str, response: &OpResponse) -> ClientError {
    ClientError::Protocol(format!("asked for a {asked}, got {response:?}"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Asks one connection for its node's status.
fn status_call(
    connection: &Connection,
    wait_until: Instant,
    timeout: Duration,
) -> Result<StatusInfo, ClientError> {
    let mut request = ApiRequest {
        request_id: 0,
        kind: RequestKind::Status,
    };
    let address = connection.address();
    match connection.call(&mut request, wait_until) {
        Ok(ApiResponse {
            result: Ok(ApiResult::Status(status)),
            ..
        }) => Ok(status),
        Ok(ApiResponse {
            result: Ok(ApiResult::Kv(response)),
            ..
        }) => Err(ClientError::Protocol(format!(
            "{address}: asked for a status, got {response:?}"
        ))),
        Ok(ApiResponse {
            result: Ok(ApiResult::Watch(watch)),
            ..
        }) => Err(ClientError::Protocol(format!(
            "{address}: asked for a status, got {watch:?}"
        ))),
        Ok(ApiResponse {
            result: Err(error), ..
        }) => Err(ClientError::Rejected {
            code: error.code,
            message: error.message,
        }),
        Err(CallError::TimedOut) => Err(ClientError::Timeout {
            timeout,
            attempts: 1,
            last_error: format!("{address}: no status answer"),
        }),
        Err(CallError::Protocol(message)) => {
            Err(ClientError::Protocol(format!("{address}: {message}")))
        }
        Err(error) => Err(ClientError::Unavailable {
            attempts: 1,
            last_error: format!("{address}: {error}"),
        }),
    }
}

impl Client {
    /// Connects to the cluster through the first of `endpoints` ("host:port") that
    /// answers a status request, and learns the cluster's members from it.
    pub fn connect(endpoints: &[String], options: ClientOptions) -> Result<Client, ClientError> {
        options.check()?;
        if endpoints.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one endpoint is needed".to_string(),
            ));
        }
        if endpoints.len() > NODES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "at most {NODES_MAX} endpoints"
            )));
        }
        let deadline = Instant::now() + options.request_timeout;
        let mut attempts = 0;
        let mut last_error = String::from("no endpoint was tried");
        // The endpoints that failed to answer keep their health, so the client's first
        // requests skip them instead of waiting for them again.
        let mut tried: Vec<Arc<Node>> = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    timeout: options.request_timeout,
                    attempts,
                    last_error,
                });
            }
            attempts += 1;
            // A hung endpoint must not use up the whole budget while others are left to
            // ask: each gets an equal share of what is left, the last one all of it.
            let endpoints_left = (endpoints.len() - index) as u32;
            let share = deadline.saturating_duration_since(now) / endpoints_left;
            let wait_until = (now + options.attempt_timeout.min(share)).min(deadline);
            let node = Arc::new(Node::new(endpoint.clone()));
            tried.push(Arc::clone(&node));
            let connection = match node.connection(&options, wait_until) {
                Ok(connection) => connection,
                Err(unavailable) => {
                    last_error = unavailable.reason;
                    continue;
                }
            };
            match status_call(&connection, wait_until, options.attempt_timeout) {
                Ok(status) => return Client::from_status(endpoints, node, &tried, status, options),
                Err(error) => {
                    last_error = format!("{endpoint}: {error}");
                    node.mark_unresponsive(&options, last_error.clone());
                }
            }
        }
        Err(ClientError::Unavailable {
            attempts,
            last_error,
        })
    }

    /// Builds the client from the first status: the endpoints become the nodes, with the
    /// ids the members' list gives their addresses (and every member too with
    /// [`ClientOptions::route_to_all_members`]); the one that answered keeps its
    /// connection, and the endpoints tried before it keep their health (down).
    fn from_status(
        endpoints: &[String],
        answered: Arc<Node>,
        tried: &[Arc<Node>],
        status: StatusInfo,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if status.group_count == 0 {
            return Err(ClientError::Protocol(format!(
                "{}: the node does not say how many groups the keyspace has",
                answered.address()
            )));
        }
        let members: Vec<(String, NodeId)> = status
            .members
            .iter()
            .filter(|member| !member.client_address.is_empty())
            .map(|member| (member.client_address.clone(), member.node_id))
            .collect();
        let addresses = routing::nodes_to_route(endpoints, &members, options.route_to_all_members);
        let mut router = Router::new(addresses, Some(answered.address()));
        assert!(!router.is_empty(), "a status names at least one address");
        if let Some(endpoint) = router.endpoint_node() {
            // The members' list names the node's id; the node's own status does when the
            // list does not.
            if router.node_id(endpoint) == NO_NODE {
                router.learn_node_id(endpoint, status.node_id);
            }
        }
        // The node that answered keeps its connection.
        let nodes = (0..router.len())
            .map(|index| {
                if Some(index) == router.endpoint_node() {
                    return Arc::clone(&answered);
                }
                let address = router.address(index);
                tried
                    .iter()
                    .find(|node| node.address() == address)
                    .map_or_else(|| Arc::new(Node::new(address.to_string())), Arc::clone)
            })
            .collect();
        Ok(Client {
            sessions: SessionPool::new(options.sessions_max),
            options,
            cluster_id: status.cluster_id,
            group_count: status.group_count,
            members: status.members,
            router: Mutex::new(router),
            nodes: RwLock::new(nodes),
            epoch: Instant::now(),
            seen_revision: AtomicU64::new(0),
            deadline: None,
        })
    }

    /// The cluster's id as its first node reported it (0: not reported).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The highest revision this client has seen in an answer.
    pub fn seen_revision(&self) -> u64 {
        self.seen_revision.load(Ordering::Relaxed)
    }

    /// Takes in a revision an answer carried.
    fn observe_revision(&self, revision: u64) {
        self.seen_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// How many groups the keyspace is cut into.
    pub fn group_count(&self) -> u64 {
        self.group_count
    }

    /// The cluster's members as the first node reported them.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The client addresses of every node this client knows, in the order it knows them.
    pub fn node_addresses(&self) -> Vec<String> {
        self.nodes_snapshot()
            .iter()
            .map(|node| node.address().to_string())
            .collect()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Bounds every later operation and status request of this client by `deadline`, on
    /// top of its own [`ClientOptions::request_timeout`]: a command given one time budget
    /// for everything (connecting, asking for status, retrying) sets the moment its
    /// budget ends, as `corekv --timeout` does.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The options of an operation that starts now: the request timeout cut to what is
    /// left before the client's deadline; a `Timeout` once nothing is left.
    fn options_now(&self) -> Result<std::borrow::Cow<'_, ClientOptions>, ClientError> {
        let Some(deadline) = self.deadline else {
            return Ok(std::borrow::Cow::Borrowed(&self.options));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout {
                timeout: self.options.request_timeout,
                attempts: 0,
                last_error: "the client's deadline passed before the operation began".into(),
            });
        }
        let mut options = self.options.clone();
        options.request_timeout = options.request_timeout.min(left);
        options.attempt_timeout = options.attempt_timeout.min(left);
        options.connect_timeout = options.connect_timeout.min(left);
        Ok(std::borrow::Cow::Owned(options))
    }

    // ----------------------------------------------------------------------------------
    // Key-value operations
    // ----------------------------------------------------------------------------------

    /// Writes `value` at `key`.
    pub fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<PutResponse, ClientError> {
        self.put_with(key, value, PutOptions::default())
    }

    /// Writes `value` at `key`, returning the previous pair when asked.
    pub fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: PutOptions,
    ) -> Result<PutResponse, ClientError> {
        let op = kv::Op::Put(kv::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            prev_kv: options.prev_kv,
            lease: options.lease,
        });
        match self.execute(op, false)?.op {
            OpResponse::Put(put) => Ok(put),
            other => Err(unexpected_result("put", &other)),
        }
    }

    /// Reads one key, linearizably.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>, ClientError> {
        self.get_one(key.as_ref(), false)
    }

    /// Reads one key from any node's local replica, possibly stale.
    pub fn get_serializable(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>, ClientError> {
        self.get_one(key.as_ref(), true)
    }

    fn get_one(&self, key: &[u8], serializable: bool) -> Result<Option<KeyValue>, ClientError> {
        let range = self.range_with(RangeRequest::get(key), serializable)?;
        Ok(range.kvs.into_iter().find(|pair| pair.key == key))
    }

    /// Reads a key or a range of keys, linearizably.
    pub fn range(&self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.range_with(request, false)
    }

    /// Reads a key or a range of keys from any node's local replicas, possibly stale.
    pub fn range_serializable(&self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.range_with(request, true)
    }

    fn range_with(
        &self,
        request: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, ClientError> {
        match self.execute(kv::Op::Range(request), serializable)?.op {
            OpResponse::Range(range) => Ok(range),
            other => Err(unexpected_result("range", &other)),
        }
    }

    /// Reads every key that starts with `prefix` (every key when it is empty), at most
    /// `limit` of them (0: the server's own bound), in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        limit: u64,
    ) -> Result<RangeResponse, ClientError> {
        self.range(RangeRequest {
            limit,
            ..prefix_range(prefix.as_ref())
        })
    }

    /// Deletes one key.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<DeleteResponse, ClientError> {
        self.delete_range(key, [])
    }

    /// Deletes the keys in [`key`, `range_end`) (`key` alone when `range_end` is empty;
    /// every key from `key` on when it is [`kv::RANGE_END_UNBOUNDED`]).
    pub fn delete_range(
        &self,
        key: impl AsRef<[u8]>,
        range_end: impl AsRef<[u8]>,
    ) -> Result<DeleteResponse, ClientError> {
        let delete = kv::DeleteRequest {
            key: key.as_ref().to_vec(),
            range_end: range_end.as_ref().to_vec(),
            prev_kv: false,
        };
        Ok(self.delete_with(delete)?.0)
    }

    /// Runs a delete and returns its answer and revision. A range delete is sent to
    /// every group's leader as one write per group (at most
    /// [`DELETE_PARTS_IN_FLIGHT_MAX`] at once), each exactly once through its own session,
    /// and the answers are merged: deleted counts add up, previous key-values come in key
    /// order, the revision is the highest. Unlike etcd's (one Raft group, one entry), it is
    /// not atomic across groups: a reader may see some groups' keys gone and others not
    /// yet, and when one part fails, the parts that succeeded stay applied and the error
    /// is returned (retrying the whole delete is safe).
    pub fn delete_with(
        &self,
        delete: kv::DeleteRequest,
    ) -> Result<(DeleteResponse, u64), ClientError> {
        let as_delete = |response: kv::Response| match response.op {
            OpResponse::Delete(delete) => Ok((delete, response.revision)),
            other => Err(unexpected_result("delete", &other)),
        };
        if delete.range_end.is_empty() || self.group_count <= 1 {
            return as_delete(self.start(kv::Op::Delete(delete), false)?.wait()?);
        }
        let groups: Vec<GroupId> = (0..self.group_count).collect();
        let mut merged = DeleteResponse::default();
        let mut revision = 0;
        // Each part in flight holds a session: never more than the pool has.
        let in_flight = DELETE_PARTS_IN_FLIGHT_MAX.min(self.options.sessions_max);
        // Once a part may have applied, a later failure leaves the delete half done: the
        // caller must not read it as "not applied".
        let mut applied_parts = 0;
        let mut first_error: Option<ClientError> = None;
        for window in groups.chunks(in_flight) {
            let mut parts = Vec::with_capacity(window.len());
            for &group in window {
                match self.start_in_group(kv::Op::Delete(delete.clone()), group, false) {
                    Ok(part) => parts.push(part),
                    Err(error) => {
                        first_error.get_or_insert(error);
                        break;
                    }
                }
            }
            // Every part started is waited for, so none applies after the caller is told.
            for part in parts {
                match part.wait().and_then(as_delete) {
                    Ok((answer, part_revision)) => {
                        applied_parts += 1;
                        merged.deleted += answer.deleted;
                        merged.prev_kvs.extend(answer.prev_kvs);
                        revision = revision.max(part_revision);
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        match first_error {
            None => {
                merged.prev_kvs.sort_by(|a, b| a.key.cmp(&b.key));
                Ok((merged, revision))
            }
            Some(error) if applied_parts == 0 => Err(error),
            Some(error) => Err(ClientError::OutcomeUnknown {
                attempts: 1,
                last_error: format!(
                    "the range delete applied in {applied_parts} of {} groups, then: {error}",
                    self.group_count
                ),
            }),
        }
    }

    /// Appends `value` to the value at `key` (creating the key when absent).
    pub fn append(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<AppendResponse, ClientError> {
        let op = kv::Op::Append(kv::AppendRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
        match self.execute(op, false)?.op {
            OpResponse::Append(append) => Ok(append),
            other => Err(unexpected_result("append", &other)),
        }
    }

    /// Runs a transaction; all of its keys must belong to one group.
    pub fn txn(&self, request: TxnRequest) -> Result<TxnResponse, ClientError> {
        match self.execute(kv::Op::Txn(request), false)?.op {
            OpResponse::Txn(txn) => Ok(txn),
            other => Err(unexpected_result("transaction", &other)),
        }
    }

    /// Runs any key-value op and returns the whole response, revision included.
    /// `serializable` applies to read-only ops only; writes always go through the log.
    /// A range delete goes to every group's leader (see [`Client::delete_with`]).
    pub fn execute(&self, op: kv::Op, serializable: bool) -> Result<kv::Response, ClientError> {
        match op {
            kv::Op::Delete(delete) if !delete.range_end.is_empty() && self.group_count > 1 => {
                let (delete, revision) = self.delete_with(delete)?;
                Ok(kv::Response {
                    revision,
                    op: OpResponse::Delete(delete),
                })
            }
            op => self.start(op, serializable)?.wait(),
        }
    }

    /// Now, as the attempt loop counts time: since the client's epoch.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The moment `since_epoch` after the client's epoch.
    fn instant(&self, since_epoch: Duration) -> Instant {
        self.epoch + since_epoch
    }

    fn router(&self) -> MutexGuard<'_, Router> {
        lock(&self.router)
    }

    fn nodes_snapshot(&self) -> Vec<Arc<Node>> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Gives each node the router learned since the last call (from a leader hint) its
    /// connection slot. Called with the router's lock held, so that no index the router
    /// gives out lacks its node.
    fn add_new_nodes(&self, router: &Router) {
        let known = self
            .nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        if known == router.len() {
            return;
        }
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for index in nodes.len()..router.len() {
            nodes.push(Arc::new(Node::new(router.address(index).to_string())));
        }
        debug_assert!(nodes.len() <= NODES_MAX);
    }

    /// The first node of `order` with an open connection. Down nodes are skipped without
    /// touching the network.
    fn pick_node(
        &self,
        order: NodeOrder,
        wait_until: Instant,
    ) -> Result<(usize, Arc<Connection>), String> {
        // Each node is taken out of the lock on its own (this runs for every request, and
        // a connection attempt must not hold the lock).
        let node_at = |index: usize| {
            Arc::clone(
                &self
                    .nodes
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)[index],
            )
        };
        let mut reasons = Vec::new();
        for index in order {
            match node_at(index).connection(&self.options, wait_until) {
                Ok(connection) => return Ok((index, connection)),
                Err(unavailable) => reasons.push(unavailable.reason),
            }
        }
        Err(format!(
            "no node can take the request: {}",
            reasons.join("; ")
        ))
    }

    // ----------------------------------------------------------------------------------
    // Status
    // ----------------------------------------------------------------------------------

    /// Asks the node at `endpoint` ("host:port") for its status: through its pooled
    /// connection when the client knows the node, through a one-off connection otherwise.
    pub fn status(&self, endpoint: &str) -> Result<StatusInfo, ClientError> {
        let options = self.options_now()?;
        let deadline = Instant::now() + options.request_timeout;
        let known = self
            .nodes_snapshot()
            .into_iter()
            .find(|node| node.address() == endpoint);
        let connection = match known {
            Some(node) => node.connection(&options, deadline).map_err(|unavailable| {
                ClientError::Unavailable {
                    attempts: 1,
                    last_error: unavailable.reason,
                }
            })?,
            None => Arc::new(
                Connection::open(
                    endpoint,
                    options.connect_timeout,
                    options.attempt_timeout,
                    options.in_flight_max,
                )
                .map_err(|error| ClientError::Unavailable {
                    attempts: 1,
                    last_error: format!("{endpoint}: connect failed: {error}"),
                })?,
            ),
        };
        status_call(&connection, deadline, options.request_timeout)
    }

    /// Asks every known node for its status, all at once, and returns the answers in the
    /// order the client knows the nodes.
    pub fn status_all(&self) -> Vec<NodeStatus> {
        let nodes = self.nodes_snapshot();
        std::thread::scope(|scope| {
            let asks: Vec<_> = nodes
                .iter()
                .map(|node| scope.spawn(move || self.status(node.address())))
                .collect();
            nodes
                .iter()
                .zip(asks)
                .enumerate()
                .map(|(index, (node, ask))| {
                    let result = ask.join().unwrap_or_else(|_| {
                        Err(ClientError::Protocol(
                            "the status request panicked".to_string(),
                        ))
                    });
                    let mut router = self.router();
                    if let Ok(status) = &result {
                        router.learn_node_id(index, status.node_id);
                    }
                    NodeStatus {
                        address: node.address().to_string(),
                        node_id: router.node_id(index),
                        result,
                    }
                })
                .collect()
        })
    }

    /// Each known node's address with a word for the health of its connection
    /// ("idle", "healthy", "closed", "probing", "down"), for diagnostics.
    pub fn node_health(&self) -> Vec<(String, &'static str)> {
        self.nodes_snapshot()
            .iter()
            .map(|node| (node.address().to_string(), node.health_name()))
            .collect()
    }
}

/// The range of every key starting with `prefix`; an empty prefix selects every key (keys
/// are never empty, so the scan starts at the smallest one, `[0]`).
pub fn prefix_range(prefix: &[u8]) -> RangeRequest {
    if prefix.is_empty() {
        RangeRequest {
            key: vec![0],
            range_end: kv::RANGE_END_UNBOUNDED.to_vec(),
            ..RangeRequest::default()
        }
    } else {
        RangeRequest::prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An empty prefix scans every key; another prefix scans up to its successor.
    #[test]
    fn prefix_ranges() {
        let all = prefix_range(b"");
        assert_eq!(
            (all.key, all.range_end),
            (vec![0], kv::RANGE_END_UNBOUNDED.to_vec())
        );
        let some = prefix_range(b"ab");
        assert_eq!((some.key, some.range_end), (b"ab".to_vec(), b"ac".to_vec()));
    }

    // The client can be shared between threads, and an operation in progress can move
    // to another thread.
    #[test]
    fn client_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        fn movable<T: Send>() {}
        shareable::<Client>();
        shareable::<Completions>();
        movable::<Pending<'static>>();
    }
}
