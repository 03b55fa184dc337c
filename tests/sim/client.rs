//! Simulated clients: each runs one operation at a time, routes it to the node it believes
//! leads the key's group, retries with the same (client id, seq) so a write applies at most
//! once, and records every operation in the history the checker reads.
//!
//! How an operation ends in the history:
//! - `complete` at the first successful reply to any of its attempts;
//! - `fail` only when no attempt can ever apply: the one attempt ever sent came back
//!   `Dropped`, or validation refused the command (which every attempt would be);
//! - `give_up` (pending) after [`ATTEMPTS_MAX`] attempts, or at the end of the run. A
//!   write given up on may still apply later, so the client then starts a new session
//!   under a new client id (a retry of an abandoned seq 1 could otherwise open the session
//!   behind its successor's back).

use std::collections::BTreeMap;

use corekv::api::{ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
use corekv::check::{ClientId, History, Input, OperationId, Output};
use corekv::kv::{
    AppendRequest, Command, Compare, CompareResult, CompareTarget, DeleteRequest, Op, OpResponse,
    PutRequest, RangeRequest, Response, TxnOp, TxnRequest,
};
use corekv::multiraft::{GroupId, RequestId};
use corekv::raft::{NodeId, NO_NODE};

use crate::invariants::Violation;
use crate::rng::SimRng;
use crate::trace::{Event, OpKind, ReplyKind, Trace};

/// Steps a client waits for an attempt's reply before it tries another node.
pub const ATTEMPT_TIMEOUT_STEPS: u64 = 250;
/// Attempts of one operation before the client gives up on it.
pub const ATTEMPTS_MAX: u32 = 8;
/// Attempts of a final read after healing; running out means the cluster did not recover.
pub const FINAL_READ_ATTEMPTS_MAX: u32 = 40;
/// Wait before retrying after "busy" or "no leader known".
const BACKOFF_STEPS_MIN: u64 = 10;
const BACKOFF_STEPS_MAX: u64 = 40;
/// Pause between two operations of one client.
const THINK_STEPS_MAX: u64 = 20;

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

/// The operation a client is waiting for.
#[derive(Debug)]
struct InFlight {
    operation: OperationId,
    kind: OpKind,
    key: usize,
    group: GroupId,
    /// Every attempt carries the same command: a write's (client id, seq) stay the same.
    command: Command,
    /// The session seq of a write (0 for a read).
    seq: u64,
    /// The value the key holds if the operation applies (put, compare-and-set).
    written: Option<Vec<u8>>,
    /// Every attempt sent; a reply to any of them answers the operation.
    requests: Vec<RequestId>,
    target: NodeId,
    attempt_deadline: u64,
    retry_at: Option<u64>,
}

/// One simulated client.
#[derive(Debug)]
pub struct Client {
    pub role: Role,
    /// The id of the current session incarnation.
    pub client_id: u64,
    /// The next seq per group (1 when the group has not seen this incarnation).
    seqs: BTreeMap<GroupId, u64>,
    leader_guess: BTreeMap<GroupId, NodeId>,
    /// The last value this client saw or wrote per key, to make compare-and-sets that
    /// sometimes succeed.
    known_values: BTreeMap<usize, Option<Vec<u8>>>,
    current: Option<InFlight>,
    next_op_at: u64,
    ops_started: u64,
    /// A final reader that got its answer.
    pub finished: bool,
    /// A final reader that ran out of attempts.
    pub gave_up: bool,
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
            seqs: BTreeMap::new(),
            leader_guess: BTreeMap::new(),
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

    fn attempts_max(&self) -> u32 {
        match self.role {
            Role::Worker => ATTEMPTS_MAX,
            Role::FinalReader { .. } => FINAL_READ_ATTEMPTS_MAX,
        }
    }

    /// Retries, gives up, or starts a new operation when it is time. `issue_new` is false
    /// once the run stops taking new operations.
    pub fn poll(
        &mut self,
        shared: &mut Shared<'_>,
        issue_new: bool,
    ) -> Result<Option<Outgoing>, Violation> {
        let now = shared.now;
        let attempts_max = self.attempts_max();
        if let Some(op) = self.current.as_mut() {
            let timed_out = op.retry_at.is_none() && now >= op.attempt_deadline;
            let retry_due = op.retry_at.is_some_and(|at| now >= at);
            if !timed_out && !retry_due {
                return Ok(None);
            }
            if op.requests.len() as u32 >= attempts_max {
                self.give_up(shared)?;
                return Ok(None);
            }
            if timed_out {
                // The target may be down or cut off: try the next member.
                let members = &shared.members[&op.group];
                op.target = next_member(members, op.target);
            }
            return Ok(Some(self.send_attempt(shared)));
        }
        let start = match self.role {
            Role::Worker => issue_new && now >= self.next_op_at,
            Role::FinalReader { .. } => !self.finished,
        };
        if !start {
            return Ok(None);
        }
        self.start(shared);
        Ok(Some(self.send_attempt(shared)))
    }

    /// Picks and records a new operation.
    fn start(&mut self, shared: &mut Shared<'_>) {
        let number = self.ops_started;
        self.ops_started += 1;
        let (key, kind) = match self.role {
            Role::FinalReader { key } => (key, OpKind::Get),
            Role::Worker => {
                let key = shared.rng.index(shared.keys.len());
                let kind = match shared.rng.below(100) {
                    0..=24 => OpKind::Put,
                    25..=54 => OpKind::Get,
                    55..=62 => OpKind::Delete,
                    63..=77 => OpKind::Append,
                    78..=98 => OpKind::CompareAndSet,
                    _ => OpKind::InvalidPut,
                };
                (key, kind)
            }
        };
        let key_bytes = shared.keys[key].clone();
        let group = shared.key_groups[key];
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
        let (command, seq) = if kind == OpKind::Get {
            let command = Command {
                client_id: 0,
                seq: 0,
                op,
            };
            (command, 0)
        } else {
            let seq = *self.seqs.entry(group).or_insert(1);
            let command = Command {
                client_id: self.client_id,
                seq,
                op,
            };
            (command, seq)
        };
        let operation = shared
            .history
            .invoke(ClientId(self.client_id), input, shared.now);
        let members = &shared.members[&group];
        let target = match self.leader_guess.get(&group) {
            Some(&leader) => leader,
            None => members[shared.rng.index(members.len())],
        };
        self.current = Some(InFlight {
            operation,
            kind,
            key,
            group,
            command,
            seq,
            written,
            requests: Vec::new(),
            target,
            attempt_deadline: 0,
            retry_at: None,
        });
    }

    fn send_attempt(&mut self, shared: &mut Shared<'_>) -> Outgoing {
        let op = self.current.as_mut().expect("an operation in flight");
        *shared.next_request_id += 1;
        let request = *shared.next_request_id;
        op.requests.push(request);
        op.attempt_deadline = shared.now + ATTEMPT_TIMEOUT_STEPS;
        op.retry_at = None;
        shared.trace.record(
            shared.now,
            Event::Request {
                client: self.client_id,
                operation: op.operation.index(),
                attempt: op.requests.len() as u32,
                request,
                node: op.target,
                group: op.group,
                kind: op.kind,
                seq: op.seq,
            },
        );
        Outgoing {
            to: op.target,
            request: ApiRequest {
                request_id: request,
                kind: RequestKind::Kv {
                    command: op.command.clone(),
                    serializable: false,
                    group: None,
                    seen_revision: 0,
                },
            },
        }
    }

    /// Handles a node's answer to one of this client's requests.
    pub fn on_reply(
        &mut self,
        shared: &mut Shared<'_>,
        node: NodeId,
        response: ApiResponse,
    ) -> Result<(), Violation> {
        let now = shared.now;
        let request = response.request_id;
        shared.trace.record(
            now,
            Event::Reply {
                request,
                node,
                reply: reply_kind(&response),
            },
        );
        let Some(op) = self.current.as_mut() else {
            return Ok(());
        };
        if !op.requests.contains(&request) {
            // A late answer to an operation this client already finished or abandoned.
            return Ok(());
        }
        let backoff = shared.rng.between(BACKOFF_STEPS_MIN, BACKOFF_STEPS_MAX);
        let error = match response.result {
            Ok(ApiResult::Kv(response)) => return self.complete(shared, response),
            Ok(ApiResult::Status(_)) => {
                return Err(Violation::new(
                    "client protocol",
                    format!("request {request} was answered with a node status"),
                ));
            }
            Err(error) => error,
        };
        match error.code {
            ErrorCode::NotLeader => {
                let leader = error.leader.as_ref().map_or(NO_NODE, |hint| hint.node_id);
                let members = &shared.members[&op.group];
                if leader != NO_NODE && members.contains(&leader) {
                    self.leader_guess.insert(op.group, leader);
                    op.target = leader;
                    op.retry_at = Some(now);
                } else {
                    op.target = next_member(members, op.target);
                    op.retry_at = Some(now + backoff);
                }
            }
            ErrorCode::NoLeader => {
                op.target = next_member(&shared.members[&op.group], op.target);
                op.retry_at = Some(now + backoff);
            }
            // Busy, or the outcome is unknown: the same (client id, seq) again is safe.
            ErrorCode::Overloaded | ErrorCode::Timeout => op.retry_at = Some(now + backoff),
            ErrorCode::SessionExpired => {
                return Err(Violation::new(
                    "exactly-once sessions",
                    format!(
                        "request {request} (client {} seq {} in group {}) was refused by its \
                         session although every earlier seq of this session was applied: {}",
                        self.client_id, op.seq, op.group, error.message
                    ),
                ));
            }
            ErrorCode::EmptyKey if op.kind == OpKind::InvalidPut => {
                // Validation is deterministic: every attempt is refused alike.
                return self.fail(shared);
            }
            code => {
                return Err(Violation::new(
                    "client protocol",
                    format!(
                        "a valid {:?} to n{node} was refused with {code:?}: {}",
                        op.kind, error.message
                    ),
                ));
            }
        }
        Ok(())
    }

    fn complete(&mut self, shared: &mut Shared<'_>, response: Response) -> Result<(), Violation> {
        let op = self.current.take().expect("an operation in flight");
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
        if op.seq != 0 {
            self.seqs.insert(op.group, op.seq + 1);
        }
        shared
            .history
            .complete(op.operation, output, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::Completed {
                client: self.client_id,
                operation: op.operation.index(),
            },
        );
        self.next_op_at = shared.now + shared.rng.between(0, THINK_STEPS_MAX);
        if matches!(self.role, Role::FinalReader { .. }) {
            self.finished = true;
        }
        Ok(())
    }

    fn fail(&mut self, shared: &mut Shared<'_>) -> Result<(), Violation> {
        let op = self.current.take().expect("an operation in flight");
        // The seq was not used up: nothing carrying it applied, so the next write reuses it.
        shared
            .history
            .fail(op.operation, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::Failed {
                client: self.client_id,
                operation: op.operation.index(),
            },
        );
        self.next_op_at = shared.now + shared.rng.between(0, THINK_STEPS_MAX);
        Ok(())
    }

    /// Stops waiting for the current operation; its outcome stays unknown.
    pub fn give_up(&mut self, shared: &mut Shared<'_>) -> Result<(), Violation> {
        let Some(op) = self.current.take() else {
            return Ok(());
        };
        shared
            .history
            .give_up(op.operation, shared.now)
            .map_err(history_error)?;
        shared.trace.record(
            shared.now,
            Event::GaveUp {
                client: self.client_id,
                operation: op.operation.index(),
            },
        );
        if op.seq != 0 {
            // The abandoned write may still apply: continue under a new session.
            *shared.next_client_id += 1;
            self.client_id = *shared.next_client_id;
            self.seqs.clear();
        }
        self.known_values.remove(&op.key);
        self.next_op_at = shared.now + shared.rng.between(0, THINK_STEPS_MAX);
        if matches!(self.role, Role::FinalReader { .. }) {
            self.gave_up = true;
            self.finished = true;
        }
        Ok(())
    }
}

/// The member after `current` in `members`, wrapping around.
fn next_member(members: &[NodeId], current: NodeId) -> NodeId {
    let position = members.iter().position(|&member| member == current);
    match position {
        Some(position) => members[(position + 1) % members.len()],
        None => members[0],
    }
}
