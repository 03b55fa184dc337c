//! One key-value operation from its start to its result: the attempt loop (routing,
//! leader hints, retries, session refusals) as a state machine that either blocks until
//! the result ([`Pending::wait`]) or moves on only as far as it can without blocking
//! ([`Pending::is_ready`]). The blocking calls of the [`Client`] are `start` then `wait`,
//! so there is one attempt loop for both.
//!
//! ```text
//!             start
//!               │
//!               ▼       send fails at once (no node, not sent): settle
//!   ┌──────▶ Ready ───────────────────────────────────────────┐
//!   │           │ send                                        │
//!   │           ▼                                             ▼
//!   │       InFlight ──answer, lost, timed out: settle──▶ (settle)
//!   │                                                     │       │
//!   └───── retry: pause until `resume_at`, or at once ────┘       │ final
//!                                                                 ▼
//!                                                               Done
//! ```
//!
//! A write holds its session from `start` to its result, so a thread with many writes in
//! flight holds as many sessions (see [`ClientOptions::sessions_max`]).

use std::sync::Arc;
use std::time::Instant;

use super::completions::{Completions, Notify};
use super::connection::{Call, CallError, Connection};
use super::options::{self, ClientOptions};
use super::session::{self, SessionGuard, WriteEnd};
use super::{route_group, Client, ClientError};
use crate::api::{ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
use crate::frame::FRAME_BYTES_MAX;
use crate::kv::{self, Command};
use crate::multiraft::GroupId;

/// Why the attempt loop stopped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GiveUp {
    RetriesExhausted,
    DeadlinePassed,
}

/// The attempts of one operation: how many were made, the last failure, the pause
/// before the next one.
#[derive(Debug)]
struct Attempts<'a> {
    options: &'a ClientOptions,
    deadline: Instant,
    made: u32,
    failures_in_a_row: u32,
    last_error: String,
    /// The next attempt waits until then (a backoff after a failure).
    resume_at: Option<Instant>,
}

impl<'a> Attempts<'a> {
    fn new(options: &'a ClientOptions, deadline: Instant) -> Attempts<'a> {
        Attempts {
            options,
            deadline,
            made: 0,
            failures_in_a_row: 0,
            last_error: String::from("no attempt was made"),
            resume_at: None,
        }
    }

    /// Starts the next attempt and returns when its wait ends, or why there is none.
    fn begin(&mut self) -> Result<Instant, GiveUp> {
        self.resume_at = None;
        if self.made > self.options.retries_max {
            return Err(GiveUp::RetriesExhausted);
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(GiveUp::DeadlinePassed);
        }
        self.made += 1;
        Ok((now + self.options.attempt_timeout).min(self.deadline))
    }

    /// Records a failed attempt; with `pause`, the next one waits for the backoff (never
    /// past the deadline, and not at all when no attempt is left).
    fn failed(&mut self, error: String, pause: bool) {
        self.last_error = error;
        if !pause || self.made > self.options.retries_max {
            return;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let ceiling = options::backoff(
            self.options.retry_backoff_initial,
            self.options.retry_backoff_max,
            self.failures_in_a_row,
        );
        // Jitter in [ceiling / 2, ceiling] keeps clients that failed together from
        // retrying together.
        let fraction = (session::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let pause = ceiling.mul_f64(0.5 + fraction / 2.0);
        self.resume_at = Some((Instant::now() + pause).min(self.deadline));
    }

    fn error(&self, give_up: GiveUp, write_maybe_applied: bool) -> ClientError {
        let attempts = self.made;
        let last_error = self.last_error.clone();
        if write_maybe_applied {
            return ClientError::OutcomeUnknown {
                attempts,
                last_error,
            };
        }
        match give_up {
            GiveUp::RetriesExhausted => ClientError::Unavailable {
                attempts,
                last_error,
            },
            GiveUp::DeadlinePassed => ClientError::Timeout {
                timeout: self.options.request_timeout,
                attempts,
                last_error,
            },
        }
    }
}

/// What one attempt produced.
#[derive(Debug)]
pub(super) enum Attempt {
    /// A node answered.
    Answered {
        node: usize,
        result: Result<ApiResult, ApiError>,
    },
    /// The call to `node` failed.
    Failed { node: usize, error: CallError },
    /// No node could take the request.
    NoNode(String),
    /// The request can never succeed (it does not fit in a frame).
    Fatal(ClientError),
}

impl Attempt {
    /// The attempt that a call to `node` ended in.
    pub(super) fn of_call(node: usize, outcome: Result<ApiResponse, CallError>) -> Attempt {
        match outcome {
            Ok(response) => Attempt::Answered {
                node,
                result: response.result,
            },
            Err(CallError::TooLarge { bytes }) => Attempt::Fatal(ClientError::RequestTooLarge {
                bytes,
                max: FRAME_BYTES_MAX,
            }),
            Err(error) => Attempt::Failed { node, error },
        }
    }
}

/// Where an operation stands.
#[derive(Debug)]
enum Stage {
    /// The next attempt goes out once `Attempts::resume_at` has passed.
    Ready,
    /// An attempt was sent to `node`; its answer is awaited until `wait_until`.
    InFlight {
        node: usize,
        call: Call,
        wait_until: Instant,
    },
    /// The result; the session (if any) is back in the pool.
    Done(Result<kv::Response, ClientError>),
}

/// A key-value operation in progress, started by [`Client::start`] or
/// [`Client::start_tagged`]. [`Pending::wait`] blocks until its result;
/// [`Pending::is_ready`] moves it on without blocking and says whether `wait` would
/// return at once.
///
/// Dropping an unfinished `Pending` abandons the operation: the answer is no longer
/// awaited, and a write that may have been sent retires its session (its outcome is
/// unknown, so its client id is never used again).
#[derive(Debug)]
#[must_use = "an operation's result comes from `wait`"]
pub struct Pending<'client> {
    client: &'client Client,
    request: ApiRequest,
    /// A write's session, from its start until its result.
    session: Option<SessionGuard<'client>>,
    /// The group the op belongs to; `None` for a read across groups.
    routed: Option<GroupId>,
    group: GroupId,
    /// The seq the request carries (a write's).
    seq: u64,
    is_write: bool,
    serializable: bool,
    /// The current (client id, seq) may have reached a server: its outcome is open.
    delivered: bool,
    attempts: Attempts<'client>,
    /// The node a leader hint named, tried next.
    redirect: Option<usize>,
    /// The node whose attempt timed out, was lost or refused for want of a leader: the
    /// next attempt without a preferred node asks the others first.
    avoid: Option<usize>,
    redirects_in_a_row: u32,
    stage: Stage,
    /// Where the end of each attempt is reported, until the result.
    notify: Option<Notify>,
}

impl<'client> Pending<'client> {
    /// A new operation; a write comes with its session, whose (client id, seq) stays the
    /// same across retries. Nothing is sent yet.
    pub(super) fn new(
        client: &'client Client,
        op: kv::Op,
        serializable: bool,
        deadline: Instant,
        session: Option<SessionGuard<'client>>,
        notify: Option<Notify>,
        scope: Option<GroupId>,
    ) -> Pending<'client> {
        let is_write = session.is_some();
        let routed = scope.or_else(|| route_group(&op, client.group_count));
        debug_assert!(!is_write || routed.is_some(), "a write has a key");
        let group = routed.unwrap_or(0);
        let (client_id, seq) = match &session {
            Some(session) => (session.client_id(), session.next_seq(group)),
            None => (0, 0),
        };
        let serializable = serializable && !is_write;
        Pending {
            client,
            request: ApiRequest {
                request_id: 0,
                kind: RequestKind::Kv {
                    command: Command { client_id, seq, op },
                    serializable,
                    group: scope,
                    seen_revision: 0,
                },
            },
            session,
            routed,
            group,
            seq,
            is_write,
            serializable,
            delivered: false,
            attempts: Attempts::new(&client.options, deadline),
            redirect: None,
            avoid: None,
            redirects_in_a_row: 0,
            stage: Stage::Ready,
            notify,
        }
    }

    /// Blocks until the operation's result: the first attempt's answer, and when that is
    /// not final, the retries and redirects that follow (see the module's documentation
    /// of [`client`](super)).
    pub fn wait(mut self) -> Result<kv::Response, ClientError> {
        self.advance(true, None);
        match std::mem::replace(&mut self.stage, Stage::Ready) {
            Stage::Done(result) => result,
            stage => unreachable!("a blocking advance ends done, not in {stage:?}"),
        }
    }

    /// Moves the operation on as far as it goes without waiting for the network: takes
    /// an answer that arrived, gives up on an attempt whose wait has ended, and sends the
    /// next attempt when a retry is due. True when the result is known, so that
    /// [`Pending::wait`] returns at once.
    ///
    /// Sending a retry may connect to a node (bounded by
    /// [`ClientOptions::connect_timeout`]) or wait for a free slot on a full connection
    /// (bounded by [`ClientOptions::in_flight_max`] answers to come).
    pub fn is_ready(&mut self) -> bool {
        self.advance(false, None);
        matches!(self.stage, Stage::Done(_))
    }

    /// When the operation next moves on without news on its completion queue: the end of
    /// a retry pause, or of the wait for an attempt's answer. `None` once the result is
    /// known. A thread that holds many operations can call [`Pending::is_ready`] on just
    /// those whose moment has come, instead of on all of them.
    pub fn poll_at(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Ready => Some(self.attempts.resume_at.unwrap_or_else(Instant::now)),
            Stage::InFlight { wait_until, .. } => Some(*wait_until),
            Stage::Done(_) => None,
        }
    }

    /// Runs the attempt loop until the result, or (when `block` is false) until it would
    /// have to wait for an answer or a pause. With `deferred`, requests are queued on
    /// their connections without being written, and each connection used is added to
    /// `deferred` for a later flush.
    fn advance(&mut self, block: bool, mut deferred: Option<&mut Vec<Arc<Connection>>>) {
        loop {
            match &mut self.stage {
                Stage::Done(_) => return,
                Stage::Ready => {
                    if let Some(resume_at) = self.attempts.resume_at {
                        let now = Instant::now();
                        if now < resume_at {
                            if !block {
                                return;
                            }
                            std::thread::sleep(resume_at - now);
                        }
                    }
                    self.send_attempt(deferred.as_deref_mut());
                }
                Stage::InFlight {
                    call, wait_until, ..
                } => {
                    if !block {
                        let arrived = call.poll();
                        if !arrived && Instant::now() < *wait_until {
                            return;
                        }
                    }
                    let Stage::InFlight {
                        node,
                        call,
                        wait_until,
                    } = std::mem::replace(&mut self.stage, Stage::Ready)
                    else {
                        unreachable!("matched as in flight above");
                    };
                    let outcome = call.wait(wait_until);
                    self.settle(Attempt::of_call(node, outcome));
                }
            }
        }
    }

    /// Begins the next attempt and sends it: to the node a hint named, else the group's
    /// cached leader (writes and linearizable reads of one key), else any node.
    fn send_attempt(&mut self, deferred: Option<&mut Vec<Arc<Connection>>>) {
        debug_assert!(matches!(self.stage, Stage::Ready));
        let wait_until = match self.attempts.begin() {
            Ok(wait_until) => wait_until,
            Err(give_up) => {
                let error = self.attempts.error(give_up, self.delivered);
                self.conclude(Err(error), false);
                return;
            }
        };
        let preferred = self.redirect.take().or_else(|| {
            if self.serializable {
                let at_endpoint = self.client.options.serializable_reads_at_endpoint;
                return at_endpoint.then_some(self.client.endpoint_node).flatten();
            }
            self.routed
                .is_some()
                .then(|| self.client.leader_of(self.group))
                .flatten()
        });
        match self.client.send_attempt(
            preferred,
            self.avoid,
            &mut self.request,
            wait_until,
            self.notify.as_ref(),
            deferred,
        ) {
            Ok((node, call)) => {
                self.stage = Stage::InFlight {
                    node,
                    call,
                    wait_until,
                }
            }
            Err(attempt) => self.settle(attempt),
        }
    }

    /// Forgets `node` as the group's leader; a read across groups has no group, so it
    /// teaches nothing about leaders.
    fn forget_leader(&self, node: usize) {
        if self.routed.is_some() {
            self.client.forget_leader(self.group, node);
        }
    }

    /// Takes in what an attempt produced: ends the operation with its result, or leaves
    /// it ready for the next attempt (after a pause when the failure calls for one).
    fn settle(&mut self, attempt: Attempt) {
        let client = self.client;
        let is_write = self.is_write;
        let mut redirected = false;
        let end = match attempt {
            Attempt::Answered { node, result } => match result {
                Ok(ApiResult::Kv(response)) => {
                    if is_write {
                        client.set_leader(self.group, node);
                    }
                    Some((Ok(response), false))
                }
                Ok(ApiResult::Status(_)) => {
                    self.delivered |= is_write;
                    Some((
                        Err(ClientError::Protocol(
                            "a status result for a key-value request".to_string(),
                        )),
                        false,
                    ))
                }
                Err(error) => {
                    let description = format!("{}: {error}", client.address_of(node));
                    match error.code {
                        ErrorCode::NotLeader => {
                            self.forget_leader(node);
                            let hinted = error
                                .leader
                                .as_ref()
                                .and_then(|hint| client.node_for_hint(hint))
                                .filter(|&hinted| hinted != node);
                            if let Some(hinted) = hinted {
                                if self.routed.is_some() {
                                    client.set_leader(self.group, hinted);
                                }
                                self.redirect = Some(hinted);
                                redirected = true;
                                // One redirect goes at once; a second in a row waits, so
                                // stale hints cannot spin through the attempts.
                                let pause = self.redirects_in_a_row > 0;
                                self.attempts.failed(description, pause);
                            } else {
                                self.attempts.failed(description, true);
                            }
                            None
                        }
                        ErrorCode::NoLeader | ErrorCode::Overloaded => {
                            if error.code == ErrorCode::NoLeader {
                                self.forget_leader(node);
                                self.avoid = Some(node);
                            }
                            self.attempts.failed(description, true);
                            None
                        }
                        ErrorCode::ShuttingDown | ErrorCode::Timeout => {
                            // A node shutting down may have proposed the write first.
                            self.delivered |= is_write;
                            self.forget_leader(node);
                            self.avoid = Some(node);
                            self.attempts.failed(description, true);
                            None
                        }
                        ErrorCode::SessionExpired if is_write => self.session_expired(description),
                        code => Some((
                            Err(ClientError::Rejected {
                                code,
                                message: error.message,
                            }),
                            false,
                        )),
                    }
                }
            },
            Attempt::Failed { node, error } => {
                self.delivered |= is_write && error.maybe_delivered();
                let description = format!("{}: {error}", client.address_of(node));
                match error {
                    CallError::Protocol(_) => {
                        Some((Err(ClientError::Protocol(description)), false))
                    }
                    CallError::TooLarge { bytes } => Some((
                        Err(ClientError::RequestTooLarge {
                            bytes,
                            max: FRAME_BYTES_MAX,
                        }),
                        false,
                    )),
                    // A leader that takes no answer in time may be hung or cut off while
                    // the others elected a new one: the next attempt asks another node,
                    // which answers or names the leader it knows.
                    CallError::NotSent(_) | CallError::Lost(_) | CallError::TimedOut => {
                        self.forget_leader(node);
                        self.avoid = Some(node);
                        self.attempts.failed(description, true);
                        None
                    }
                    CallError::InFlightFull(_) => {
                        self.attempts.failed(description, true);
                        None
                    }
                }
            }
            Attempt::NoNode(reason) => {
                self.attempts.failed(reason, true);
                None
            }
            Attempt::Fatal(error) => Some((Err(error), false)),
        };
        match end {
            Some((result, retired)) => self.conclude(result, retired),
            None => {
                self.stage = Stage::Ready;
                self.redirects_in_a_row = if redirected {
                    self.redirects_in_a_row + 1
                } else {
                    0
                };
            }
        }
    }

    /// A write's group answered `SessionExpired`: the result, with whether the session
    /// was retired, or `None` to send the write again under a fresh client id.
    fn session_expired(
        &mut self,
        description: String,
    ) -> Option<(Result<kv::Response, ClientError>, bool)> {
        let session = self.session.as_mut().expect("a write has a session");
        session.retire();
        // A refusal does not mark its own delivery: `delivered` says whether an earlier
        // copy of the write may still be on its way.
        if self.delivered {
            // An earlier delivery may have applied, and the session that could tell is
            // gone.
            return Some((
                Err(ClientError::OutcomeUnknown {
                    attempts: self.attempts.made,
                    last_error: description,
                }),
                true,
            ));
        }
        // This seq reached no server before, and the refusal applied nothing: the write
        // is sent again, as the first write of a fresh client id.
        self.seq = session.next_seq(self.group);
        if let RequestKind::Kv { command, .. } = &mut self.request.kind {
            command.client_id = session.client_id();
            command.seq = self.seq;
        }
        self.delivered = false;
        self.attempts.failed(description, false);
        None
    }

    /// Ends the operation with `result`: records how the write ended in its session
    /// (unless the session was `retired` already) and returns the session to the pool.
    fn conclude(&mut self, result: Result<kv::Response, ClientError>, retired: bool) {
        if let Some(mut session) = self.session.take() {
            if !retired {
                // A refusal does not mark its own delivery: `delivered` says whether an
                // earlier copy of the write may still be on its way.
                let end = match &result {
                    Ok(_) => WriteEnd::Applied,
                    Err(_) if self.delivered => WriteEnd::Unknown,
                    Err(ClientError::Rejected { .. }) => WriteEnd::Refused,
                    Err(_) => WriteEnd::NotSent,
                };
                session.finish(self.group, self.seq, end);
            }
        }
        if let Some(notify) = self.notify.take() {
            notify.completions.unregister();
        }
        self.stage = Stage::Done(result);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Only an operation without its result still holds these.
        if let Some(mut session) = self.session.take() {
            let maybe_sent = self.delivered || matches!(self.stage, Stage::InFlight { .. });
            let end = if maybe_sent {
                WriteEnd::Unknown
            } else {
                WriteEnd::NotSent
            };
            session.finish(self.group, self.seq, end);
        }
        if let Some(notify) = self.notify.take() {
            notify.completions.unregister();
        }
    }
}

impl Client {
    /// Starts a key-value operation and returns at once with it in flight (the request
    /// written to its connection), without waiting for the answer. `serializable` applies
    /// to read-only ops only. The routing, retries and sessions are those of the blocking
    /// calls, which are `start` followed by [`Pending::wait`].
    ///
    /// A write checks a session out of the pool first and holds it until its result: a
    /// thread that keeps `n` writes in flight needs [`ClientOptions::sessions_max`] of at
    /// least `n` (plus what other threads use), or `start` waits for a session that only
    /// its own pending writes could return, and fails with a timeout after
    /// [`ClientOptions::request_timeout`]. Sending may connect to a node or wait for a
    /// free slot on a connection that has [`ClientOptions::in_flight_max`] requests out.
    ///
    /// Errors here are only a session that stayed unavailable; every other failure is
    /// the result of [`Pending::wait`].
    pub fn start(&self, op: kv::Op, serializable: bool) -> Result<Pending<'_>, ClientError> {
        self.start_with(op, serializable, None, None)
    }

    /// Like [`Client::start`], confined to one group: ranges in `op` cover that group's
    /// keys only, and the request goes to the group's leader (a single key of another
    /// group is refused by the server). This is how an op over the whole keyspace that
    /// writes, a range delete, reaches every group's leader.
    pub fn start_in_group(
        &self,
        op: kv::Op,
        group: GroupId,
        serializable: bool,
    ) -> Result<Pending<'_>, ClientError> {
        self.start_scoped(op, serializable, None, None, Some(group))
    }

    /// Like [`Client::start`], and each time an attempt of the operation ends (answered,
    /// lost, not sent) its `tag` is pushed to `completions`, so one thread can wait for
    /// whichever of its operations has news (see [`Completions`]). Fails when
    /// `completions` already has its `pending_max` unfinished operations.
    pub fn start_tagged(
        &self,
        op: kv::Op,
        serializable: bool,
        completions: &Arc<Completions>,
        tag: u64,
    ) -> Result<Pending<'_>, ClientError> {
        let notify = Client::notify(completions, tag)?;
        self.start_with(op, serializable, Some(notify), None)
    }

    /// A batch: operations started through it are written to their connections together
    /// when it is flushed or dropped, one system call per connection instead of one per
    /// operation.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            client: self,
            connections: Vec::new(),
        }
    }

    fn notify(completions: &Arc<Completions>, tag: u64) -> Result<Notify, ClientError> {
        completions.register()?;
        Ok(Notify {
            completions: Arc::clone(completions),
            tag,
        })
    }

    fn start_with(
        &self,
        op: kv::Op,
        serializable: bool,
        notify: Option<Notify>,
        deferred: Option<&mut Vec<Arc<Connection>>>,
    ) -> Result<Pending<'_>, ClientError> {
        self.start_scoped(op, serializable, notify, deferred, None)
    }

    fn start_scoped(
        &self,
        op: kv::Op,
        serializable: bool,
        notify: Option<Notify>,
        deferred: Option<&mut Vec<Arc<Connection>>>,
        scope: Option<GroupId>,
    ) -> Result<Pending<'_>, ClientError> {
        if scope.is_none() && self.group_count > 1 {
            if let kv::Op::Delete(delete) = &op {
                if !delete.range_end.is_empty() {
                    if let Some(notify) = &notify {
                        notify.completions.unregister();
                    }
                    // No node need lead every group: each group's part goes to its
                    // own leader (see `Client::delete_with`).
                    return Err(ClientError::InvalidArgument(
                        "a range delete spans groups: use Client::delete_with, or start one \
                         part per group with Client::start_in_group"
                            .to_string(),
                    ));
                }
            }
        }
        let deadline = Instant::now() + self.options.request_timeout;
        let session = if op.is_read_only() {
            None
        } else {
            let session = self.sessions.checkout(deadline);
            if session.is_none() {
                if let Some(notify) = &notify {
                    notify.completions.unregister();
                }
                return Err(ClientError::Timeout {
                    timeout: self.options.request_timeout,
                    attempts: 0,
                    last_error: format!(
                        "every one of the {} sessions stayed in use",
                        self.options.sessions_max
                    ),
                });
            }
            session
        };
        let mut pending = Pending::new(self, op, serializable, deadline, session, notify, scope);
        pending.advance(false, deferred);
        Ok(pending)
    }
}

/// Operations started together from one thread, written to their connections together:
/// their requests are queued, and [`Batch::flush`] (or dropping the batch) writes each
/// connection's queue in one system call. Retries are never held back: only the first
/// attempt of an operation waits for the flush.
///
/// A request waits in its queue until the flush (only [`Pending::wait`] on one of its
/// operations writes the queue first; [`Pending::is_ready`] does not), so a batch is for
/// operations started in one go (say, the replacements of the operations that just
/// completed), not one kept open while waiting for answers.
#[derive(Debug)]
pub struct Batch<'client> {
    client: &'client Client,
    /// The connections with queued requests, each once; at most one per known node.
    connections: Vec<Arc<Connection>>,
}

impl<'client> Batch<'client> {
    /// Like [`Client::start`], written at the next flush.
    pub fn start(
        &mut self,
        op: kv::Op,
        serializable: bool,
    ) -> Result<Pending<'client>, ClientError> {
        self.client
            .start_with(op, serializable, None, Some(&mut self.connections))
    }

    /// Like [`Client::start_tagged`], written at the next flush.
    pub fn start_tagged(
        &mut self,
        op: kv::Op,
        serializable: bool,
        completions: &Arc<Completions>,
        tag: u64,
    ) -> Result<Pending<'client>, ClientError> {
        let notify = Client::notify(completions, tag)?;
        self.client
            .start_with(op, serializable, Some(notify), Some(&mut self.connections))
    }

    /// Writes every request started through the batch so far.
    pub fn flush(&mut self) {
        for connection in self.connections.drain(..) {
            connection.flush();
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
