//! Simulated clients that run the SDK's own decisions: each owns a
//! `corekv::client::routing::Router` over the cluster's nodes, one
//! `corekv::client::session::Session`, and one operation at a time through the SDK's
//! `corekv::client::attempt::AttemptLoop`. The client sends each attempt where the loop
//! says, feeds back every reply, every attempt timeout and every connection lost to a
//! crash, and records the operation in the history the checker reads from the loop's
//! final result, under the SDK's error contract:
//!
//! - `complete` on `Ok`;
//! - `give_up` (pending) when the write may have applied: `OutcomeUnknown`, or any failure
//!   after a copy of the write may have been delivered; and at the end of the run;
//! - `fail` when it certainly did not apply: `Unavailable` or `Timeout` of an operation
//!   never delivered, or the refusal of a put with an empty key (validation refuses every
//!   attempt alike). Any other refusal of a valid operation is a protocol violation.
//!
//! Steps map to the SDK's time as the nodes' clocks do (2 ms a step, see `world.rs`), so
//! the SDK's timeouts are set in steps here: an attempt waits [`ATTEMPT_TIMEOUT_STEPS`],
//! a retry pauses 10 to 40 steps, and the deadline of a final read after healing leaves
//! room for elections (10 to 20 ticks of about 5 steps) and many attempts.

use std::collections::BTreeMap;
use std::time::Duration;

use corekv::api::{ApiRequest, ApiResponse, ErrorCode};
use corekv::check::{CausalOrder, ClientId, History, Input, OperationId, Output, Revealed};
use corekv::client::attempt::{AttemptEnd, AttemptLoop, CallError, Next};
use corekv::client::routing::Router;
use corekv::client::session::Session;
use corekv::client::{ClientError, ClientOptions};
use corekv::kv::{
    AppendRequest, Compare, CompareResult, CompareTarget, DeleteRequest, KeyValue, Op, OpResponse,
    PutRequest, RangeRequest, Response, TxnOp, TxnRequest,
};
use corekv::multiraft::{GroupId, RequestId};
use corekv::raft::{NodeId, NO_NODE};

use crate::invariants::Violation;
use crate::rng::SimRng;
use crate::trace::{Event, OpKind, ReplyKind, Trace};

/// Milliseconds of SDK time per step: the clients' clock runs with the nodes' clocks
/// (`STEP_MS` in `world.rs`).
const STEP_MS: u64 = 2;
/// Steps a client waits for an attempt's reply before it tries another node.
pub const ATTEMPT_TIMEOUT_STEPS: u64 = 250;
/// Attempts of one operation of a worker before the SDK gives up on it.
pub const ATTEMPTS_MAX: u32 = 8;
/// Steps a worker's operation may take, retries included: room for every attempt to time
/// out, with the pauses between them, and within the world's drain phase.
const REQUEST_TIMEOUT_STEPS: u64 = 2_500;
/// Attempts of a final read after healing; running out means the cluster did not recover.
pub const FINAL_READ_ATTEMPTS_MAX: u32 = 40;
/// Steps a final read may take: every attempt may time out, and the world waits 12,000
/// steps for all final reads.
const FINAL_READ_TIMEOUT_STEPS: u64 = 11_000;
/// The first pause after a failure is drawn from [this / 2, this] steps; each later one
/// doubles the ceiling up to [`BACKOFF_STEPS_MAX`]: pauses of 10 to 40 steps.
const BACKOFF_STEPS_INITIAL: u64 = 20;
const BACKOFF_STEPS_MAX: u64 = 40;
/// Pause between two operations of one client.
const THINK_STEPS_MAX: u64 = 20;
/// The most keys a page of a paged scan asks for (pages of 1 to this many keys).
const SCAN_PAGE_KEYS_MAX: u64 = 4;
/// How far back before the client's highest seen revision a scan at an older revision
/// reads, at most, in milliseconds of the revisions' clock.
const SCAN_BACK_MS_MAX: u64 = 400;
/// Pages of one scan at most: the key set is small, so a scan that pages on past this
/// is not making progress.
const SCAN_PAGES_MAX: u32 = 64;

const _: () = assert!(BACKOFF_STEPS_INITIAL <= BACKOFF_STEPS_MAX);
const _: () = assert!(ATTEMPTS_MAX as u64 * ATTEMPT_TIMEOUT_STEPS < REQUEST_TIMEOUT_STEPS);
const _: () =
    assert!(FINAL_READ_ATTEMPTS_MAX as u64 * ATTEMPT_TIMEOUT_STEPS < FINAL_READ_TIMEOUT_STEPS);

/// What the world shares with a client while it acts.
#[derive(Debug)]
pub struct Shared<'a> {
    pub now: u64,
    pub rng: &'a mut SimRng,
    pub history: &'a mut History,
    pub trace: &'a mut Trace,
    pub keys: &'a [Vec<u8>],
    /// The group of each key.
    pub key_groups: &'a [GroupId],
    pub members: &'a BTreeMap<GroupId, Vec<NodeId>>,
    pub next_request_id: &'a mut RequestId,
    /// Scans that finished since the world last looked, for it to check against the
    /// replicas' history.
    pub snapshot_reads: &'a mut Vec<SnapshotRead>,
    /// Each client's highest revision seen, and the check of its causal order.
    pub causal: &'a mut CausalOrder,
    /// The highest revision of a write any client has completed so far.
    pub writes_completed_max: &'a mut u64,
    /// The world's counter of client ids. Sessions retire to fresh ids the SDK draws from
    /// the run's generator, so clients no longer take ids from it; the field can go with
    /// its line in `World::with_clients`.
    #[allow(dead_code)]
    pub next_client_id: &'a mut u64,
}

/// A request the client hands to the network.
#[derive(Debug)]
pub struct Outgoing {
    pub to: NodeId,
    pub request: ApiRequest,
}

/// What a client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Random operations during the run.
    Worker,
    /// One read of one key after healing, to see what survived.
    FinalReader { key: usize },
}

/// A scan of a range of keys across groups: every page read at one revision, the first
/// page's (or one the client chose), and checked as one snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotRead {
    pub client: u64,
    pub revision: u64,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub kvs: Vec<KeyValue>,
    pub pages: u32,
}

/// A scan in progress.
#[derive(Debug)]
struct Scan {
    read: SnapshotRead,
    /// The client chose the revision (else the first page's answer chose it).
    chosen: bool,
    /// Keys per page; 0 for one unlimited page.
    limit: u64,
    /// The highest revision of a write any client had completed when the scan started:
    /// a snapshot at a revision the store chose must hold it (real-time order, which
    /// the read index of each group gives whatever the clocks say).
    writes_before: u64,
}

/// The operation a client is waiting for.
#[derive(Debug)]
struct InFlight {
    /// Its place in the linearizability history (scans are checked as snapshots instead).
    operation: Option<OperationId>,
    /// The client's highest revision seen when it started the operation.
    seen_at_invoke: u64,
    scan: Option<Scan>,
    kind: OpKind,
    key: usize,
    group: GroupId,
    /// The value the key holds if the operation applies (put, compare-and-set).
    written: Option<Vec<u8>>,
    /// The SDK's attempt loop, holding a write's session until the result.
    attempts: AttemptLoop,
    /// The request id of the attempt in flight and the router's index of its node. A
    /// reply to an earlier attempt is dropped, as the SDK's connection drops an answer
    /// nobody waits for any more.
    awaiting: Option<(RequestId, usize)>,
}

/// One simulated client.
#[derive(Debug)]
pub struct Client {
    pub role: Role,
    /// The id the world gave this client: its name in the history and the trace, and the
    /// client id of its first session.
    pub client_id: u64,
    options: ClientOptions,
    /// The SDK's routing over every node of the cluster, built at the first poll.
    router: Option<Router>,
    /// The session of the next write (`None` while a write holds it).
    session: Option<Session>,
    /// The last value this client saw or wrote per key, to make compare-and-sets that
    /// sometimes succeed.
    known_values: BTreeMap<usize, Option<Vec<u8>>>,
    current: Option<InFlight>,
    next_op_at: u64,
    ops_started: u64,
    /// A final reader that got its answer.
    pub finished: bool,
    /// A final reader whose read failed.
    pub gave_up: bool,
}

/// The SDK's time at step `step`.
fn time(step: u64) -> Duration {
    Duration::from_millis(step * STEP_MS)
}

/// The SDK's options for a client of `role`, in steps.
fn options(role: Role) -> ClientOptions {
    let (attempts_max, timeout_steps) = match role {
        Role::Worker => (ATTEMPTS_MAX, REQUEST_TIMEOUT_STEPS),
        Role::FinalReader { .. } => (FINAL_READ_ATTEMPTS_MAX, FINAL_READ_TIMEOUT_STEPS),
    };
    let options = ClientOptions {
        request_timeout: time(timeout_steps),
        attempt_timeout: time(ATTEMPT_TIMEOUT_STEPS),
        retries_max: attempts_max - 1,
        retry_backoff_initial: time(BACKOFF_STEPS_INITIAL),
        retry_backoff_max: time(BACKOFF_STEPS_MAX),
        ..ClientOptions::default()
    };
    options
        .check()
        .expect("the simulated clients' options work");
    options
}

/// The SDK's router over every node that holds a group, addressed as the nodes name
/// each other in their leader hints.
fn cluster_router(members: &BTreeMap<GroupId, Vec<NodeId>>) -> Router {
    let mut nodes: Vec<NodeId> = members.values().flatten().copied().collect();
    nodes.sort_unstable();
    nodes.dedup();
    Router::new(nodes.into_iter().map(|id| (format!("n{id}"), id)), None)
}

fn reply_kind(response: &ApiResponse) -> ReplyKind {
    match &response.result {
        Ok(_) => ReplyKind::Ok,
        Err(error) if error.code == ErrorCode::NotLeader => ReplyKind::NotLeader {
            leader: error.leader.as_ref().map_or(NO_NODE, |hint| hint.node_id),
        },
        Err(error) => ReplyKind::Refused(error.code),
    }
}

fn history_error(error: corekv::check::HistoryError) -> Violation {
    Violation::new("history recording", error.to_string())
}

impl Client {
    pub fn new(role: Role, client_id: u64, first_op_at: u64) -> Client {
        Client {
            role,
            client_id,
            options: options(role),
            router: None,
            session: Some(Session::with_client_id(client_id)),
            known_values: BTreeMap::new(),
            current: None,
            next_op_at: first_op_at,
            ops_started: 0,
            finished: false,
            gave_up: false,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.current.is_some()
    }

    /// True unless this is a final reader still waiting for its answer.
    pub fn finished_reading(&self) -> bool {
        match self.role {
            Role::Worker => true,
            Role::FinalReader { .. } => self.finished,
        }
    }

    /// Moves the operation on (an attempt whose wait ended times out, a retry goes when
    /// due), or starts a new one when it is time; returns the attempt to send, if any.
    /// `issue_new` is false once the run stops taking new operations.
    pub fn poll(
        &mut self,
        shared: &mut Shared<'_>,
        issue_new: bool,
    ) -> Result<Option<Outgoing>, Violation> {
        if self.current.is_none() {
            let start = match self.role {
                Role::Worker => issue_new && shared.now >= self.next_op_at,
                Role::FinalReader { .. } => !self.finished,
            };
            if !start {
                return Ok(None);
            }
            self.start(shared);
        }
        let now = time(shared.now);
        let router = self
            .router
            .get_or_insert_with(|| cluster_router(shared.members));
        let op = self.current.as_mut().expect("an operation started above");
        // Each turn either returns or ends an attempt, and an operation makes at most
        // `retries_max + 1` attempts, so this loop ends.
        loop {
            match op.attempts.next(now, router, &mut *shared.rng) {
                Next::Done => break,
                Next::Pause { .. } => return Ok(None),
                Next::Await { node, until } => {
                    if now < until {
                        return Ok(None);
                    }
                    op.awaiting = None;
                    let timed_out = AttemptEnd::Failed {
                        node,
                        error: CallError::TimedOut,
                    };
                    op.attempts
                        .end_attempt(now, timed_out, router, &mut *shared.rng);
                }
                Next::Send { mut order, .. } => {
                    // A simulated connection always takes the request (a node that is
                    // down swallows it), so the attempt goes to the first node in order.
                    let Some(node) = order.next() else {
                        let none = AttemptEnd::NoNode("the router knows no node".to_string());
                        op.attempts.end_attempt(now, none, router, &mut *shared.rng);
                        continue;
                    };
                    op.attempts.sent(node);
                    *shared.next_request_id += 1;
                    let request_id = *shared.next_request_id;
                    op.awaiting = Some((request_id, node));
                    let to = router.node_id(node);
                    let (session, seq) = op.attempts.session_seq();
                    shared.trace.record(
                        shared.now,
                        Event::Request {
                            client: self.client_id,
                            operation: op.operation.map_or(usize::MAX, OperationId::index),
                            attempt: op.attempts.attempts_made(),
                            request: request_id,
                            node: to,
                            group: op.group,
                            kind: op.kind,
                            session,
                            seq,
                        },
                    );
                    let mut request = op.attempts.request().clone();
                    request.request_id = request_id;
                    return Ok(Some(Outgoing { to, request }));
                }
            }
        }
        self.conclude(shared)?;
        Ok(None)
    }

    /// Picks and records a new operation and hands it to a fresh attempt loop.
    fn start(&mut self, shared: &mut Shared<'_>) {
        let number = self.ops_started;
        self.ops_started += 1;
        let (key, kind) = match self.role {
            Role::FinalReader { key } => (key, OpKind::Get),
            Role::Worker => {
                let key = shared.rng.index(shared.keys.len());
                let kind = match shared.rng.below(100) {
                    0..=24 => OpKind::Put,
                    25..=48 => OpKind::Get,
                    49..=54 => OpKind::Scan,
                    55..=62 => OpKind::Delete,
                    63..=77 => OpKind::Append,
                    78..=98 => OpKind::CompareAndSet,
                    _ => OpKind::InvalidPut,
                };
                (key, kind)
            }
        };
        if kind == OpKind::Scan {
            self.start_scan(shared, key);
            return;
        }
        let key_bytes = shared.keys[key].clone();
        let unique = format!("{}.{}", self.client_id, number).into_bytes();
        let mut written = None;
        let (input, op) = match kind {
            OpKind::Get => (
                Input::Get {
                    key: key_bytes.clone(),
                },
                Op::Range(RangeRequest::get(&key_bytes)),
            ),
            OpKind::Put => {
                written = Some(unique.clone());
                (
                    Input::Put {
                        key: key_bytes.clone(),
                        value: unique.clone(),
                    },
                    Op::Put(PutRequest {
                        key: key_bytes,
                        value: unique,
                        ..PutRequest::default()
                    }),
                )
            }
            OpKind::InvalidPut => (
                Input::Put {
                    key: Vec::new(),
                    value: unique.clone(),
                },
                Op::Put(PutRequest {
                    key: Vec::new(),
                    value: unique,
                    ..PutRequest::default()
                }),
            ),
            OpKind::Delete => (
                Input::Delete {
                    key: key_bytes.clone(),
                },
                Op::Delete(DeleteRequest {
                    key: key_bytes,
                    ..DeleteRequest::default()
                }),
            ),
            OpKind::Append => {
                let mut value = b"<".to_vec();
                value.extend_from_slice(&unique);
                value.push(b'>');
                (
                    Input::Append {
                        key: key_bytes.clone(),
                        value: value.clone(),
                    },
                    Op::Append(AppendRequest {
                        key: key_bytes,
                        value,
                    }),
                )
            }
            OpKind::Scan => unreachable!("scans start above"),
            OpKind::CompareAndSet => {
                let expected = match self.known_values.get(&key) {
                    Some(Some(value)) if shared.rng.chance(0.7) => Some(value.clone()),
                    _ => None,
                };
                written = Some(unique.clone());
                // "Absent" is version 0: a value compare is false on a missing key.
                let target = match &expected {
                    Some(value) => CompareTarget::Value(value.clone()),
                    None => CompareTarget::Version(0),
                };
                (
                    Input::CompareAndSet {
                        key: key_bytes.clone(),
                        expected,
                        new_value: unique.clone(),
                    },
                    Op::Txn(TxnRequest {
                        compares: vec![Compare {
                            key: key_bytes.clone(),
                            target,
                            result: CompareResult::Equal,
                        }],
                        success: vec![TxnOp::Put(PutRequest {
                            key: key_bytes,
                            value: unique,
                            ..PutRequest::default()
                        })],
                        failure: Vec::new(),
                    }),
                )
            }
        };
        let operation = shared
            .history
            .invoke(ClientId(self.client_id), input, shared.now);
        let session = if op.is_read_only() {
            None
        } else {
            Some(self.session.take().expect("one operation at a time"))
        };
        let group_count = shared.members.len() as u64;
        let seen_at_invoke = shared.causal.invoked(ClientId(self.client_id));
        let mut attempts = AttemptLoop::new(
            op,
            false,
            None,
            group_count,
            session,
            &self.options,
            time(shared.now),
        );
        attempts.set_seen_revision(seen_at_invoke);
        // The SDK routes by the key as the world placed it (an empty key has a group too).
        let group = attempts.group().expect("every operation here has a key");
        debug_assert!(kind == OpKind::InvalidPut || shared.key_groups[key] == group);
        self.current = Some(InFlight {
            operation: Some(operation),
            seen_at_invoke,
            scan: None,
            kind,
            key,
            group,
            written,
            attempts,
            awaiting: None,
        });
    }

    /// Starts a scan from the key at `first` (or of every key) to the end of the key
    /// set, which spans groups: at the revision of its first page, at the highest the
    /// client has seen, or at an older one; in one page or in pages of a few keys.
    fn start_scan(&mut self, shared: &mut Shared<'_>, first: usize) {
        let seen_at_invoke = shared.causal.invoked(ClientId(self.client_id));
        let start = if shared.rng.chance(0.5) {
            b"k".to_vec()
        } else {
            shared.keys[first].clone()
        };
        let revision = match shared.rng.below(10) {
            0..=4 => 0,
            5..=7 => seen_at_invoke,
            _ => {
                let back = shared.rng.below(SCAN_BACK_MS_MAX) << 16;
                seen_at_invoke.saturating_sub(back)
            }
        };
        let limit = if shared.rng.chance(0.5) {
            0
        } else {
            shared.rng.between(1, SCAN_PAGE_KEYS_MAX)
        };
        let scan = Scan {
            read: SnapshotRead {
                client: self.client_id,
                revision,
                start: start.clone(),
                end: b"l".to_vec(),
                kvs: Vec::new(),
                pages: 0,
            },
            chosen: revision != 0,
            limit,
            writes_before: *shared.writes_completed_max,
        };
        let attempts = self.scan_page(shared, &scan, start, seen_at_invoke);
        self.current = Some(InFlight {
            operation: None,
            seen_at_invoke,
            scan: Some(scan),
            kind: OpKind::Scan,
            key: first,
            group: 0,
            written: None,
            attempts,
            awaiting: None,
        });
    }

    /// The attempt loop of the scan's page from `start`.
    fn scan_page(
        &self,
        shared: &mut Shared<'_>,
        scan: &Scan,
        start: Vec<u8>,
        seen: u64,
    ) -> AttemptLoop {
        let request = RangeRequest {
            key: start,
            range_end: scan.read.end.clone(),
            limit: scan.limit,
            revision: scan.read.revision,
            ..RangeRequest::default()
        };
        let mut attempts = AttemptLoop::new(
            Op::Range(request),
            false,
            None,
            shared.members.len() as u64,
            None,
            &self.options,
            time(shared.now),
        );
        attempts.set_seen_revision(seen);
        attempts
    }

    /// A page of the scan in flight came back: the next page starts, or the scan is
    /// done and goes to the world's check.
    fn scan_page_done(
        &mut self,
        shared: &mut Shared<'_>,
        response: Response,
    ) -> Result<(), Violation> {
        let mut op = self.current.take().expect("an operation in flight");
        let mut scan = op.scan.take().expect("a scan");
        let OpResponse::Range(range) = response.op else {
            return Err(Violation::new(
                "client protocol",
                format!("a scan was answered with {:?}", response.op),
            ));
        };
        if scan.read.revision == 0 {
            scan.read.revision = response.revision;
            if response.revision < scan.writes_before {
                return Err(Violation::new(
                    "real-time order",
                    format!(
                        "client {}'s scan from {:?} was served at revision {}, below a write \
                         completed at revision {} before the scan started",
                        self.client_id,
                        String::from_utf8_lossy(&scan.read.start),
                        response.revision,
                        scan.writes_before
                    ),
                ));
            }
        } else if response.revision != scan.read.revision {
            return Err(Violation::new(
                "client protocol",
                format!(
                    "a scan at revision {} was answered at revision {}",
                    scan.read.revision, response.revision
                ),
            ));
        }
        scan.read.pages += 1;
        let next = range.kvs.last().map(|kv| {
            let mut next = kv.key.clone();
            next.push(0);
            next
        });
        scan.read.kvs.extend(range.kvs);
        if let (true, Some(next)) = (range.more, next) {
            if scan.read.pages >= SCAN_PAGES_MAX {
                return Err(Violation::new(
                    "client protocol",
                    format!("a scan went on for {} pages", scan.read.pages),
                ));
            }
            op.attempts = self.scan_page(shared, &scan, next, op.seen_at_invoke);
            op.scan = Some(scan);
            self.current = Some(op);
            return Ok(());
        }
        let revealed = if scan.chosen {
            Revealed::Seen(scan.read.revision)
        } else {
            Revealed::Snapshot(scan.read.revision)
        };
        shared
            .causal
            .completed(ClientId(self.client_id), op.seen_at_invoke, revealed)
            .map_err(|error| Violation::new("causal order", error.to_string()))?;
        shared.snapshot_reads.push(scan.read);
        self.end_operation(shared);
        Ok(())
    }

    /// Handles a node's answer to one of this client's requests.
    pub fn on_reply(
        &mut self,
        shared: &mut Shared<'_>,
        node: NodeId,
        response: ApiResponse,
    ) -> Result<(), Violation> {
        let request = response.request_id;
        shared.trace.record(
            shared.now,
            Event::Reply {
                request,
                node,
                reply: reply_kind(&response),
            },
        );
        let Some(op) = self.current.as_mut() else {
            return Ok(());
        };
        let Some((_, index)) = op.awaiting.filter(|&(awaited, _)| awaited == request) else {
            // A late answer to an attempt (or an operation) no longer waited for.
            return Ok(());
        };
        if let Err(error) = &response.result {
            // The SDK takes SessionExpired as an evicted session: on a first delivery it
            // sends the write again under a fresh client id, after a delivery it reports
            // OutcomeUnknown; either way the history would never show it. Nothing evicts
            // sessions here (a group's table holds 100,000, the run opens a few dozen),
            // so the refusal itself is the bug: the group forgot a session whose earlier
            // seqs it applied, or took a seq this session had already moved past.
            if error.code == ErrorCode::SessionExpired {
                let (session, seq) = op.attempts.session_seq();
                return Err(Violation::new(
                    "exactly-once sessions",
                    format!(
                        "request {request} (client {session} seq {seq} in group {}) was \
                         refused by its session, which nothing evicts here: the group forgot \
                         a session it had opened, or was sent a seq the session had passed: \
                         {}",
                        op.group, error.message
                    ),
                ));
            }
        }
        op.awaiting = None;
        let router = self
            .router
            .as_mut()
            .expect("a client that sent has its router");
        let answered = AttemptEnd::Answered {
            node: index,
            result: response.result,
        };
        op.attempts
            .end_attempt(time(shared.now), answered, router, &mut *shared.rng);
        if op.attempts.is_done() {
            self.conclude(shared)?;
        }
        Ok(())
    }

    /// Node `node` crashed: the connection to it is lost, and with it the answer to an
    /// attempt in flight there. The world calls this for every client when it crashes a
    /// node.
    pub fn on_node_crashed(
        &mut self,
        shared: &mut Shared<'_>,
        node: NodeId,
    ) -> Result<(), Violation> {
        let (Some(op), Some(router)) = (self.current.as_mut(), self.router.as_mut()) else {
            return Ok(());
        };
        let Some((_, index)) = op
            .awaiting
            .filter(|&(_, index)| router.node_id(index) == node)
        else {
            return Ok(());
        };
        op.awaiting = None;
        let lost = AttemptEnd::Failed {
            node: index,
            error: CallError::Lost(format!("n{node} crashed")),
        };
        op.attempts
            .end_attempt(time(shared.now), lost, router, &mut *shared.rng);
        if op.attempts.is_done() {
            self.conclude(shared)?;
        }
        Ok(())
    }

    /// Records the result of the finished operation as the SDK's error contract reads it.
    fn conclude(&mut self, shared: &mut Shared<'_>) -> Result<(), Violation> {
        let op = self.current.as_mut().expect("an operation in flight");
        let result = op.attempts.take_result().expect("a finished operation");
        if let Some(session) = op.attempts.take_session() {
            self.session = Some(session);
        }
        let delivered = op.attempts.delivered();
        let kind = op.kind;
        if kind == OpKind::Scan {
            return self.conclude_scan(shared, result);
        }
        let error = match result {
            Ok(response) => return self.complete(shared, response),
            Err(error) => error,
        };
        if let Role::FinalReader { .. } = self.role {
            self.gave_up = true;
        }
        match error {
            // Validation refuses an empty key on every node, before anything is proposed.
            ClientError::Rejected {
                code: ErrorCode::EmptyKey,
                ..
            } if kind == OpKind::InvalidPut && !delivered => self.fail(shared),
            ClientError::Rejected {
                code: ErrorCode::EmptyKey,
                ..
            } if kind == OpKind::InvalidPut => self.give_up(shared),
            ClientError::Rejected { .. }
            | ClientError::Protocol(_)
            | ClientError::RequestTooLarge { .. }
            | ClientError::InvalidArgument(_) => Err(Violation::new(
                "client protocol",
                format!("a {kind:?} ended with: {error}"),
            )),
            ClientError::OutcomeUnknown { .. } => self.give_up(shared),
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } if delivered => {
                self.give_up(shared)
            }
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } => self.fail(shared),
        }
    }

    /// A page of a scan ended. A scan at a revision the client chose (or a later page,
    /// at the first page's) may find it compacted away, or not yet closed when it gives
    /// up waiting; any other refusal is a protocol violation. A scan that fails has
    /// nothing to check.
    fn conclude_scan(
        &mut self,
        shared: &mut Shared<'_>,
        result: Result<Response, ClientError>,
    ) -> Result<(), Violation> {
        let error = match result {
            Ok(response) => return self.scan_page_done(shared, response),
            Err(error) => error,
        };
        let op = self.current.take().expect("an operation in flight");
        let scan = op.scan.expect("a scan");
        let at_revision = scan.chosen || scan.read.pages > 0;
        match error {
            ClientError::Rejected {
                code: ErrorCode::Compacted | ErrorCode::FutureRevision,
                ..
            } if at_revision => {}
            ClientError::Rejected { .. }
            | ClientError::Protocol(_)
            | ClientError::RequestTooLarge { .. }
            | ClientError::InvalidArgument(_) => {
                return Err(Violation::new(
                    "client protocol",
                    format!(
                        "a scan from {:?} at revision {} ended with: {error}",
                        String::from_utf8_lossy(&scan.read.start),
                        scan.read.revision
                    ),
                ))
            }
            ClientError::OutcomeUnknown { .. }
            | ClientError::Unavailable { .. }
            | ClientError::Timeout { .. } => {}
        }
        self.end_operation(shared);
        Ok(())
    }

    fn complete(&mut self, shared: &mut Shared<'_>, response: Response) -> Result<(), Violation> {
        let op = self.current.take().expect("an operation in flight");
        let revealed = match (op.kind, &response.op) {
            (OpKind::Put | OpKind::Append, _) => Revealed::Write(response.revision),
            (OpKind::CompareAndSet, OpResponse::Txn(txn)) if txn.succeeded => {
                Revealed::Write(response.revision)
            }
            _ => Revealed::Seen(response.revision),
        };
        shared
            .causal
            .completed(ClientId(self.client_id), op.seen_at_invoke, revealed)
            .map_err(|error| Violation::new("causal order", format!("a {:?}: {error}", op.kind)))?;
        if let Revealed::Write(revision) = revealed {
            *shared.writes_completed_max = (*shared.writes_completed_max).max(revision);
        }
        let key = &shared.keys[op.key];
        let output = match (op.kind, response.op) {
            (OpKind::Put, OpResponse::Put(_))
            | (OpKind::Delete, OpResponse::Delete(_))
            | (OpKind::Append, OpResponse::Append(_)) => Output::Done,
            (OpKind::CompareAndSet, OpResponse::Txn(txn)) => Output::Swapped(txn.succeeded),
            (OpKind::Get, OpResponse::Range(range)) => {
                if range.kvs.len() > 1 || range.kvs.iter().any(|kv| &kv.key != key) {
                    return Err(Violation::new(
                        "client protocol",
                        format!("a get of one key returned {} keys", range.kvs.len()),
                    ));
                }
                Output::Value(range.kvs.into_iter().next().map(|kv| kv.value))
            }
            (kind, other) => {
                return Err(Violation::new(
                    "client protocol",
                    format!("a {kind:?} was answered with {other:?}"),
                ));
            }
        };
        match (&output, op.kind) {
            (Output::Value(value), _) => {
                self.known_values.insert(op.key, value.clone());
            }
            (Output::Done, OpKind::Delete) => {
                self.known_values.insert(op.key, None);
            }
            (Output::Done, OpKind::Put) | (Output::Swapped(true), _) => {
                self.known_values.insert(op.key, op.written.clone());
            }
            _ => {
                self.known_values.remove(&op.key);
            }
        }
        shared
            .history
            .complete(op.operation.expect("in the history"), output, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::Completed {
                client: self.client_id,
                operation: op.operation.map_or(usize::MAX, OperationId::index),
            },
        );
        self.end_operation(shared);
        Ok(())
    }

    fn fail(&mut self, shared: &mut Shared<'_>) -> Result<(), Violation> {
        let op = self.current.take().expect("an operation in flight");
        let operation = op.operation.expect("scans never fail into the history");
        shared
            .history
            .fail(operation, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::Failed {
                client: self.client_id,
                operation: operation.index(),
            },
        );
        self.known_values.remove(&op.key);
        self.end_operation(shared);
        Ok(())
    }

    /// Stops waiting for the current operation; its outcome stays unknown. A write that
    /// may still apply retires its session (the SDK's rule for an unknown outcome).
    pub fn give_up(&mut self, shared: &mut Shared<'_>) -> Result<(), Violation> {
        let Some(mut op) = self.current.take() else {
            return Ok(());
        };
        if let Some(session) = op.attempts.abandon(&mut *shared.rng) {
            self.session = Some(session);
        }
        let Some(operation) = op.operation else {
            // A scan: nothing to check.
            self.end_operation(shared);
            return Ok(());
        };
        shared
            .history
            .give_up(operation, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::GaveUp {
                client: self.client_id,
                operation: operation.index(),
            },
        );
        self.known_values.remove(&op.key);
        if let Role::FinalReader { .. } = self.role {
            self.gave_up = true;
        }
        self.end_operation(shared);
        Ok(())
    }

    /// After an operation: the next one comes after a pause; a final reader is done.
    fn end_operation(&mut self, shared: &mut Shared<'_>) {
        debug_assert!(self.session.is_some(), "the session is back");
        self.next_op_at = shared.now + shared.rng.between(0, THINK_STEPS_MAX);
        if let Role::FinalReader { .. } = self.role {
            self.finished = true;
        }
    }
}
