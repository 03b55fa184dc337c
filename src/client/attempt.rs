//! One key-value operation's attempt loop as a pure state machine: what to send next and
//! to whom, how each attempt's end is taken (an answer, a refusal, a lost or timed-out
//! call, no node to send to), the pause before a retry, the retry and deadline bounds,
//! whether a write may have been delivered, and the final result under the SDK's error
//! contract. Time comes in as a value (a [`Duration`] since the driver's epoch) and
//! randomness as a [`Random`]; routing is the [`Router`] passed in. The blocking
//! [`Pending`](super::Pending) drives it over sockets and threads; the simulator drives
//! it over its simulated network.
//!
//! ```text
//!               new
//!                │
//!                ▼
//!   ┌──────▶ Ready { at } ───── no attempt left, or the deadline ─────┐
//!   │            │                                                    │
//!   │            │ next() at `at` begins an attempt                   │
//!   │            ▼                                                    │
//!   │         Sending ──── sent(node) ────▶ InFlight                  │
//!   │            │                             │                      │
//!   │            │ end_attempt (not sent,      │ end_attempt (answer, │
//!   │            │ no node)                    │ lost, timed out)     │
//!   │            ▼                             ▼                      ▼
//!   └──── retry, at once or ◀──── how the attempt ended ──── final ─▶ Done
//!         after a pause
//! ```
//!
//! The driver's loop: call [`AttemptLoop::next`]; on [`Next::Send`], try the nodes of the
//! order and report [`AttemptLoop::sent`] or the attempt's end; on [`Next::Await`],
//! report the answer or, once `until` has passed, [`CallError::TimedOut`]; on
//! [`Next::Pause`], come back at `until`; on [`Next::Done`], take the result and the
//! session. A write owns its session from [`AttemptLoop::new`] to its result, so every
//! attempt carries the same (client id, seq) unless the group refused the session.

use std::time::Duration;

use thiserror::Error;

use super::options::{backoff, ClientOptions};
use super::random::Random;
use super::routing::{route_group, NodeOrder, Router};
use super::session::{Session, WriteEnd};
use super::ClientError;
use crate::api::{ApiError, ApiRequest, ApiResponse, ApiResult, ErrorCode, RequestKind};
use crate::frame::FRAME_BYTES_MAX;
use crate::kv::{self, Command};
use crate::multiraft::GroupId;

/// Why a call to a node produced no response.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CallError {
    /// The request never fully left this process (the connection was closed, or the
    /// write failed): the server cannot have applied it.
    #[error("not sent: {0}")]
    NotSent(String),
    /// No slot freed up among the requests in flight before the wait ended; not sent.
    #[error("{0} requests already in flight on the connection")]
    InFlightFull(usize),
    /// The request does not fit in a frame; not sent.
    #[error("request of {bytes} bytes exceeds the frame maximum")]
    TooLarge { bytes: usize },
    /// Sent, then the connection broke before the answer arrived.
    #[error("connection lost: {0}")]
    Lost(String),
    /// Sent, and no answer arrived before the wait ended.
    #[error("no answer in time")]
    TimedOut,
    /// Sent, and the answer could not be read.
    #[error("unreadable response: {0}")]
    Protocol(String),
}

impl CallError {
    /// True when the request may have reached the server (and a write may have applied).
    pub fn maybe_delivered(&self) -> bool {
        match self {
            CallError::NotSent(_) | CallError::InFlightFull(_) | CallError::TooLarge { .. } => {
                false
            }
            CallError::Lost(_) | CallError::TimedOut | CallError::Protocol(_) => true,
        }
    }
}

/// How one attempt ended, as the driver reports it.
#[derive(Debug)]
pub enum AttemptEnd {
    /// Node `node` answered.
    Answered {
        node: usize,
        result: Result<ApiResult, ApiError>,
    },
    /// The call to node `node` failed.
    Failed { node: usize, error: CallError },
    /// No node could take the request (every one down or busy connecting); the reason
    /// names each.
    NoNode(String),
}

impl AttemptEnd {
    /// The end of a call to `node`.
    pub fn of_call(node: usize, outcome: Result<ApiResponse, CallError>) -> AttemptEnd {
        match outcome {
            Ok(response) => AttemptEnd::Answered {
                node,
                result: response.result,
            },
            Err(error) => AttemptEnd::Failed { node, error },
        }
    }
}

/// What the driver does next for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send [`AttemptLoop::request`] to the first node of `order` that can take it, then
    /// report [`AttemptLoop::sent`] (or the attempt's end). The answer is awaited until
    /// `wait_until`.
    Send {
        order: NodeOrder,
        wait_until: Duration,
    },
    /// An attempt is in flight to `node`: report its answer, or its timeout once `until`
    /// has passed.
    Await { node: usize, until: Duration },
    /// The next attempt waits until `until` (a pause after a failure).
    Pause { until: Duration },
    /// The operation has its result ([`AttemptLoop::take_result`]).
    Done,
}

/// Why the attempt loop stopped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GiveUp {
    RetriesExhausted,
    DeadlinePassed,
}

/// Where an operation stands.
#[derive(Debug)]
enum Stage {
    /// The next attempt may begin at `at`.
    Ready { at: Duration },
    /// An attempt began; the driver is choosing its node.
    Sending {
        order: NodeOrder,
        wait_until: Duration,
    },
    /// An attempt was sent to `node`; its answer is awaited until `wait_until`.
    InFlight { node: usize, wait_until: Duration },
    /// The result (`None` once taken, or for an abandoned operation).
    Done(Option<Result<kv::Response, ClientError>>),
}

/// One operation's attempts, from its start to its result.
#[derive(Debug)]
pub struct AttemptLoop {
    request: ApiRequest,
    /// A write's session, from its start until the driver takes it back.
    session: Option<Session>,
    /// The group the op belongs to; `None` for a read across groups.
    routed: Option<GroupId>,
    group: GroupId,
    /// The seq the request carries (a write's).
    seq: u64,
    is_write: bool,
    serializable: bool,
    options: ClientOptions,
    deadline: Duration,
    /// The current (client id, seq) may have reached a server: its outcome is open.
    delivered: bool,
    /// Attempts begun so far.
    made: u32,
    failures_in_a_row: u32,
    last_error: String,
    /// The node a leader hint named, tried next.
    redirect: Option<usize>,
    /// The node whose attempt timed out, was lost or refused for want of a leader: the
    /// next attempt without a preferred node asks the others first.
    avoid: Option<usize>,
    redirects_in_a_row: u32,
    stage: Stage,
}

impl AttemptLoop {
    /// A new operation started at `now`: a write comes with its session, whose (client
    /// id, seq) stays the same across retries; `scope` confines the op to one group.
    /// `serializable` applies to reads only. Nothing is sent yet.
    pub fn new(
        op: kv::Op,
        serializable: bool,
        scope: Option<GroupId>,
        group_count: u64,
        session: Option<Session>,
        options: &ClientOptions,
        now: Duration,
    ) -> AttemptLoop {
        let is_write = session.is_some();
        let routed = scope.or_else(|| route_group(&op, group_count));
        debug_assert!(!is_write || routed.is_some(), "a write has a key");
        let group = routed.unwrap_or(0);
        let (client_id, seq) = match &session {
            Some(session) => (session.client_id(), session.next_seq(group)),
            None => (0, 0),
        };
        let serializable = serializable && !is_write;
        AttemptLoop {
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
            options: options.clone(),
            deadline: now.saturating_add(options.request_timeout),
            delivered: false,
            made: 0,
            failures_in_a_row: 0,
            last_error: String::from("no attempt was made"),
            redirect: None,
            avoid: None,
            redirects_in_a_row: 0,
            stage: Stage::Ready { at: now },
        }
    }

    /// Every attempt carries `revision` as the highest revision the client has seen, so
    /// its write gets a higher one and its read sees at least that much.
    pub fn set_seen_revision(&mut self, revision: u64) {
        if let RequestKind::Kv { seen_revision, .. } = &mut self.request.kind {
            *seen_revision = revision;
        }
    }

    /// The request each attempt sends (its `request_id` is the driver's to set).
    pub fn request(&self) -> &ApiRequest {
        &self.request
    }

    pub fn request_mut(&mut self) -> &mut ApiRequest {
        &mut self.request
    }

    /// The group the op is routed to; `None` for a read across groups.
    pub fn group(&self) -> Option<GroupId> {
        self.routed
    }

    /// The (client id, seq) the request carries now; (0, 0) for a read.
    pub fn session_seq(&self) -> (u64, u64) {
        match &self.request.kind {
            RequestKind::Kv { command, .. } => (command.client_id, command.seq),
            RequestKind::Compact { .. }
            | RequestKind::Status
            | RequestKind::WatchCreate { .. }
            | RequestKind::WatchCancel { .. }
            | RequestKind::WatchProgress { .. }
            | RequestKind::Lease { .. } => (0, 0),
        }
    }

    /// True when a copy of the write under its current (client id, seq) may have reached
    /// a server, so a failure leaves its outcome open.
    pub fn delivered(&self) -> bool {
        self.delivered
    }

    /// Attempts begun so far.
    pub fn attempts_made(&self) -> u32 {
        self.made
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done(_))
    }

    /// When the operation next moves on without news: the moment a retry may go (in the
    /// past when it may go at once), or the end of the wait for an attempt's answer.
    /// `None` once done.
    pub fn wake_at(&self) -> Option<Duration> {
        match self.stage {
            Stage::Ready { at } => Some(at),
            Stage::Sending { wait_until, .. } | Stage::InFlight { wait_until, .. } => {
                Some(wait_until)
            }
            Stage::Done(_) => None,
        }
    }

    /// What to do next at `now`. In `Ready`, once the pause has passed, this begins the
    /// next attempt (or ends the operation when none is left) and picks where it goes:
    /// the node a hint named, else the group's cached leader (writes and linearizable
    /// reads of one key), else any node.
    pub fn next(&mut self, now: Duration, router: &mut Router, random: &mut dyn Random) -> Next {
        match self.stage {
            Stage::Done(_) => return Next::Done,
            Stage::Sending { order, wait_until } => return Next::Send { order, wait_until },
            Stage::InFlight { node, wait_until } => {
                return Next::Await {
                    node,
                    until: wait_until,
                }
            }
            Stage::Ready { at } if now < at => return Next::Pause { until: at },
            Stage::Ready { .. } => {}
        }
        let wait_until = match self.begin(now) {
            Ok(wait_until) => wait_until,
            Err(give_up) => {
                let error = self.error(give_up);
                self.conclude(Err(error), false, random);
                return Next::Done;
            }
        };
        let preferred = self.redirect.take().or_else(|| {
            if self.serializable {
                let at_endpoint = self.options.serializable_reads_at_endpoint;
                return at_endpoint.then_some(router.endpoint_node()).flatten();
            }
            self.routed.and_then(|group| router.leader_of(group))
        });
        let order = router.order(preferred, self.avoid);
        self.stage = Stage::Sending { order, wait_until };
        Next::Send { order, wait_until }
    }

    /// The attempt begun by [`AttemptLoop::next`] went out to `node`.
    pub fn sent(&mut self, node: usize) {
        let Stage::Sending { wait_until, .. } = self.stage else {
            panic!("sent without an attempt being sent (in {:?})", self.stage);
        };
        self.stage = Stage::InFlight { node, wait_until };
    }

    /// Takes in how the current attempt ended at `now`: ends the operation with its
    /// result, or leaves it ready for the next attempt (after a pause when the failure
    /// calls for one).
    pub fn end_attempt(
        &mut self,
        now: Duration,
        end: AttemptEnd,
        router: &mut Router,
        random: &mut dyn Random,
    ) {
        match self.stage {
            Stage::Sending { .. } => {}
            Stage::InFlight { node, .. } => debug_assert!(match &end {
                AttemptEnd::Answered { node: from, .. } | AttemptEnd::Failed { node: from, .. } =>
                    *from == node,
                AttemptEnd::NoNode(_) => false,
            }),
            _ => panic!(
                "an attempt ended while none was under way (in {:?})",
                self.stage
            ),
        }
        let is_write = self.is_write;
        let mut redirected = false;
        // `Some((result, retired))` ends the operation; `None` retries at `resume_at`.
        let mut resume_at = now;
        let end = match end {
            AttemptEnd::Answered { node, result } => match result {
                Ok(ApiResult::Kv(response)) => {
                    if is_write {
                        router.set_leader(self.group, node);
                    }
                    Some((Ok(response), false))
                }
                Ok(ApiResult::Status(_) | ApiResult::Watch(_)) => {
                    self.delivered |= is_write;
                    Some((
                        Err(ClientError::Protocol(
                            "a status result for a key-value request".to_string(),
                        )),
                        false,
                    ))
                }
                Err(error) => {
                    let description = format!("{}: {error}", router.describe(node));
                    match error.code {
                        ErrorCode::NotLeader => {
                            self.forget_leader(router, node);
                            let hinted = error
                                .leader
                                .as_ref()
                                .and_then(|hint| router.node_for_hint(hint))
                                .filter(|&hinted| hinted != node);
                            if let Some(hinted) = hinted {
                                if let Some(group) = self.routed {
                                    router.set_leader(group, hinted);
                                }
                                self.redirect = Some(hinted);
                                redirected = true;
                                // One redirect goes at once; a second in a row waits, so
                                // stale hints cannot spin through the attempts.
                                let pause = self.redirects_in_a_row > 0;
                                resume_at = self.failed(now, description, pause, random);
                            } else {
                                resume_at = self.failed(now, description, true, random);
                            }
                            None
                        }
                        ErrorCode::NoLeader | ErrorCode::Overloaded => {
                            if error.code == ErrorCode::NoLeader {
                                self.forget_leader(router, node);
                                self.avoid = Some(node);
                            }
                            resume_at = self.failed(now, description, true, random);
                            None
                        }
                        ErrorCode::ShuttingDown | ErrorCode::Timeout => {
                            // A node shutting down may have proposed the write first.
                            self.delivered |= is_write;
                            self.forget_leader(router, node);
                            self.avoid = Some(node);
                            resume_at = self.failed(now, description, true, random);
                            None
                        }
                        ErrorCode::SessionExpired if is_write => {
                            self.session_expired(now, description, random)
                        }
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
            AttemptEnd::Failed { node, error } => {
                self.delivered |= is_write && error.maybe_delivered();
                let description = format!("{}: {error}", router.describe(node));
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
                        self.forget_leader(router, node);
                        self.avoid = Some(node);
                        resume_at = self.failed(now, description, true, random);
                        None
                    }
                    CallError::InFlightFull(_) => {
                        resume_at = self.failed(now, description, true, random);
                        None
                    }
                }
            }
            AttemptEnd::NoNode(reason) => {
                resume_at = self.failed(now, reason, true, random);
                None
            }
        };
        match end {
            Some((result, retired)) => self.conclude(result, retired, random),
            None => {
                self.stage = Stage::Ready { at: resume_at };
                self.redirects_in_a_row = if redirected {
                    self.redirects_in_a_row + 1
                } else {
                    0
                };
            }
        }
    }

    /// The result, once done (`None` before, after it was taken, or once abandoned).
    pub fn take_result(&mut self) -> Option<Result<kv::Response, ClientError>> {
        match &mut self.stage {
            Stage::Done(result) => result.take(),
            _ => None,
        }
    }

    /// The write's session once the operation is done, with the write's end recorded in
    /// it; `None` for a read, before the end, or once taken.
    pub fn take_session(&mut self) -> Option<Session> {
        if !self.is_done() {
            return None;
        }
        self.session.take()
    }

    /// Stops the operation where it stands and gives its session back: a write that may
    /// have been sent (delivered, or an attempt under way) counts as an unknown outcome,
    /// which retires its client id; one never sent leaves its seq unused. An abandoned
    /// operation has no result.
    pub fn abandon(&mut self, random: &mut dyn Random) -> Option<Session> {
        if self.is_done() {
            return self.session.take();
        }
        let maybe_sent =
            self.delivered || matches!(self.stage, Stage::Sending { .. } | Stage::InFlight { .. });
        self.stage = Stage::Done(None);
        let mut session = self.session.take()?;
        let end = if maybe_sent {
            WriteEnd::Unknown
        } else {
            WriteEnd::NotSent
        };
        session.finish(self.group, self.seq, end, random);
        Some(session)
    }

    /// Starts the next attempt at `now` and returns when its wait ends, or why there is
    /// none.
    fn begin(&mut self, now: Duration) -> Result<Duration, GiveUp> {
        if self.made > self.options.retries_max {
            return Err(GiveUp::RetriesExhausted);
        }
        if now >= self.deadline {
            return Err(GiveUp::DeadlinePassed);
        }
        self.made += 1;
        Ok(now
            .saturating_add(self.options.attempt_timeout)
            .min(self.deadline))
    }

    /// Records a failed attempt and returns when the next one may go: with `pause`, after
    /// the backoff (never past the deadline, and not at all when no attempt is left).
    fn failed(
        &mut self,
        now: Duration,
        error: String,
        pause: bool,
        random: &mut dyn Random,
    ) -> Duration {
        self.last_error = error;
        if !pause || self.made > self.options.retries_max {
            return now;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let ceiling = backoff(
            self.options.retry_backoff_initial,
            self.options.retry_backoff_max,
            self.failures_in_a_row,
        );
        // Jitter in [ceiling / 2, ceiling] keeps clients that failed together from
        // retrying together.
        let pause = ceiling.mul_f64(0.5 + random.fraction() / 2.0);
        now.saturating_add(pause).min(self.deadline)
    }

    fn error(&self, give_up: GiveUp) -> ClientError {
        let attempts = self.made;
        let last_error = self.last_error.clone();
        if self.delivered {
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

    /// Forgets `node` as the group's leader; a read across groups has no group, so it
    /// teaches nothing about leaders.
    fn forget_leader(&self, router: &mut Router, node: usize) {
        if let Some(group) = self.routed {
            router.forget_leader(group, node);
        }
    }

    /// A write's group answered `SessionExpired`: the result, with whether the session
    /// was retired, or `None` to send the write again at once under a fresh client id.
    fn session_expired(
        &mut self,
        now: Duration,
        description: String,
        random: &mut dyn Random,
    ) -> Option<(Result<kv::Response, ClientError>, bool)> {
        let session = self.session.as_mut().expect("a write has a session");
        session.retire(random);
        // A refusal does not mark its own delivery: `delivered` says whether an earlier
        // copy of the write may still be on its way.
        if self.delivered {
            // An earlier delivery may have applied, and the session that could tell is
            // gone.
            return Some((
                Err(ClientError::OutcomeUnknown {
                    attempts: self.made,
                    last_error: description,
                }),
                true,
            ));
        }
        // This seq reached no server before, and the refusal applied nothing: the write
        // is sent again, as the first write of a fresh client id.
        self.seq = session.next_seq(self.group);
        let client_id = session.client_id();
        if let RequestKind::Kv { command, .. } = &mut self.request.kind {
            command.client_id = client_id;
            command.seq = self.seq;
        }
        self.delivered = false;
        let resume_at = self.failed(now, description, false, random);
        debug_assert_eq!(resume_at, now);
        None
    }

    /// Ends the operation with `result`: records how the write ended in its session
    /// (unless the session was `retired` already).
    fn conclude(
        &mut self,
        result: Result<kv::Response, ClientError>,
        retired: bool,
        random: &mut dyn Random,
    ) {
        if let Some(session) = self.session.as_mut() {
            if !retired {
                // A refusal does not mark its own delivery: `delivered` says whether an
                // earlier copy of the write may still be on its way.
                let end = match &result {
                    Ok(_) => WriteEnd::Applied,
                    Err(_) if self.delivered => WriteEnd::Unknown,
                    Err(ClientError::Rejected { .. }) => WriteEnd::Refused,
                    Err(_) => WriteEnd::NotSent,
                };
                session.finish(self.group, self.seq, end, random);
            }
        }
        self.stage = Stage::Done(Some(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LeaderHint;
    use crate::kv::{PutRequest, RangeRequest};
    use crate::raft::rng::SeededRng;
    use crate::raft::NodeId;

    const GROUPS: u64 = 4;

    fn ms(milliseconds: u64) -> Duration {
        Duration::from_millis(milliseconds)
    }

    fn options() -> ClientOptions {
        ClientOptions {
            request_timeout: ms(1_000),
            attempt_timeout: ms(100),
            retries_max: 4,
            retry_backoff_initial: ms(10),
            retry_backoff_max: ms(40),
            ..ClientOptions::default()
        }
    }

    fn router() -> Router {
        Router::new((1..=3 as NodeId).map(|id| (format!("n{id}"), id)), None)
    }

    fn put() -> kv::Op {
        kv::Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    }

    fn write(session: Session, options: &ClientOptions) -> AttemptLoop {
        AttemptLoop::new(put(), false, None, GROUPS, Some(session), options, ms(0))
    }

    fn ok() -> Result<ApiResult, ApiError> {
        Ok(ApiResult::Kv(kv::Response {
            revision: 1,
            op: kv::OpResponse::Put(kv::PutResponse::default()),
        }))
    }

    fn refused(code: ErrorCode, leader: Option<NodeId>) -> Result<ApiResult, ApiError> {
        Err(ApiError {
            leader: leader.map(|node_id| LeaderHint {
                node_id,
                client_address: format!("n{node_id}"),
            }),
            ..ApiError::new(code, "refused")
        })
    }

    /// Begins the attempt due at `now` and sends it to the first node of its order.
    fn send(attempts: &mut AttemptLoop, now: Duration, router: &mut Router) -> usize {
        let random = &mut SeededRng::new(9);
        let Next::Send { mut order, .. } = attempts.next(now, router, random) else {
            panic!("an attempt is due at {now:?}");
        };
        let node = order.next().expect("a node to send to");
        attempts.sent(node);
        node
    }

    // A NotLeader hint is followed at once; a second hint in a row waits out a pause; the
    // leader that answers is cached, and the write's seq is the same on every attempt.
    #[test]
    fn a_redirect_chain_reaches_the_leader() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(1));
        let mut attempts = write(Session::with_client_id(7), &options);
        let group = attempts.group().expect("a write has a group");
        assert_eq!(send(&mut attempts, ms(0), &mut router), 0);
        let hinted = AttemptEnd::Answered {
            node: 0,
            result: refused(ErrorCode::NotLeader, Some(2)),
        };
        attempts.end_attempt(ms(5), hinted, &mut router, random);
        assert_eq!(router.leader_of(group), Some(1));
        assert_eq!(send(&mut attempts, ms(5), &mut router), 1);
        let hinted = AttemptEnd::Answered {
            node: 1,
            result: refused(ErrorCode::NotLeader, Some(3)),
        };
        attempts.end_attempt(ms(8), hinted, &mut router, random);
        let Next::Pause { until } = attempts.next(ms(8), &mut router, random) else {
            panic!("a second redirect in a row waits");
        };
        assert!(until > ms(8) && until <= ms(18), "{until:?}");
        assert_eq!(send(&mut attempts, until, &mut router), 2);
        assert_eq!(attempts.session_seq(), (7, 1));
        let answered = AttemptEnd::Answered {
            node: 2,
            result: ok(),
        };
        attempts.end_attempt(until, answered, &mut router, random);
        assert_eq!(attempts.next(until, &mut router, random), Next::Done);
        assert!(attempts.take_result().expect("the result").is_ok());
        assert_eq!(router.leader_of(group), Some(2));
        let session = attempts.take_session().expect("a write's session");
        assert_eq!((session.client_id(), session.next_seq(group)), (7, 2));
        assert_eq!(attempts.attempts_made(), 3);
    }

    // A SessionExpired answer to a write's first delivery applied nothing: the write goes
    // again at once as seq 1 of a fresh client id, and succeeds.
    #[test]
    fn session_expired_on_the_first_delivery_starts_a_fresh_session() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(1));
        let mut session = Session::with_client_id(7);
        let group = write(session.clone(), &options).group().expect("a group");
        session.finish(group, 1, WriteEnd::Applied, random);
        let mut attempts = write(session, &options);
        assert_eq!(attempts.session_seq(), (7, 2));
        let node = send(&mut attempts, ms(0), &mut router);
        let expired = AttemptEnd::Answered {
            node,
            result: refused(ErrorCode::SessionExpired, None),
        };
        attempts.end_attempt(ms(3), expired, &mut router, random);
        let (client_id, seq) = attempts.session_seq();
        assert_ne!(client_id, 7);
        assert_eq!(seq, 1);
        let node = send(&mut attempts, ms(3), &mut router);
        let answered = AttemptEnd::Answered { node, result: ok() };
        attempts.end_attempt(ms(4), answered, &mut router, random);
        assert!(attempts.take_result().expect("done").is_ok());
        let session = attempts.take_session().expect("a write's session");
        assert_eq!(
            (session.client_id(), session.next_seq(group)),
            (client_id, 2)
        );
    }

    // A SessionExpired answer after an earlier delivery may hide an applied write: the
    // result is OutcomeUnknown, and the client id is retired once.
    #[test]
    fn session_expired_after_a_delivery_is_an_unknown_outcome() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(1));
        let mut attempts = write(Session::with_client_id(7), &options);
        let node = send(&mut attempts, ms(0), &mut router);
        let lost = AttemptEnd::Failed {
            node,
            error: CallError::TimedOut,
        };
        attempts.end_attempt(ms(100), lost, &mut router, random);
        assert!(attempts.delivered());
        let until = attempts.wake_at().expect("a retry");
        let retry = send(&mut attempts, until, &mut router);
        assert_ne!(retry, node, "the node that timed out is tried last");
        let expired = AttemptEnd::Answered {
            node: retry,
            result: refused(ErrorCode::SessionExpired, None),
        };
        attempts.end_attempt(until, expired, &mut router, random);
        assert!(matches!(
            attempts.take_result(),
            Some(Err(ClientError::OutcomeUnknown { attempts: 2, .. }))
        ));
        let session = attempts.take_session().expect("a write's session");
        assert_ne!(session.client_id(), 7);
        assert_eq!(session.next_seq(0), 1);
    }

    // Each pause after a failure lies in [ceiling / 2, ceiling] of a ceiling that doubles
    // up to the maximum; after retries_max + 1 attempts a write never delivered is
    // Unavailable and leaves its seq unused.
    #[test]
    fn backoff_stays_in_its_bounds_and_retries_are_bounded() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(3));
        let mut attempts = write(Session::with_client_id(7), &options);
        let group = attempts.group().expect("a group");
        let mut now = ms(0);
        for failure in 1..=options.retries_max + 1 {
            let node = send(&mut attempts, now, &mut router);
            let no_leader = AttemptEnd::Answered {
                node,
                result: refused(ErrorCode::NoLeader, None),
            };
            attempts.end_attempt(now, no_leader, &mut router, random);
            let ceiling = backoff(
                options.retry_backoff_initial,
                options.retry_backoff_max,
                failure,
            );
            let pause = attempts.wake_at().expect("not done") - now;
            if failure <= options.retries_max {
                assert!(
                    pause >= ceiling / 2 && pause <= ceiling,
                    "{failure}: {pause:?}"
                );
            } else {
                assert_eq!(pause, Duration::ZERO, "no pause when no attempt is left");
            }
            now += pause;
        }
        assert_eq!(attempts.next(now, &mut router, random), Next::Done);
        assert!(matches!(
            attempts.take_result(),
            Some(Err(ClientError::Unavailable { attempts: 5, .. }))
        ));
        let session = attempts.take_session().expect("a write's session");
        assert_eq!((session.client_id(), session.next_seq(group)), (7, 1));
    }

    // No attempt waits past the deadline, and none begins at it: a write that may have
    // been delivered ends as OutcomeUnknown, a read as Timeout.
    #[test]
    fn the_deadline_bounds_every_wait() {
        let options = ClientOptions {
            request_timeout: ms(250),
            retries_max: 100,
            ..options()
        };
        let (mut router, random) = (router(), &mut SeededRng::new(5));
        let read = kv::Op::Range(RangeRequest::get(b"k"));
        let reader = AttemptLoop::new(read, false, None, GROUPS, None, &options, ms(0));
        for (mut attempts, is_write) in [
            (write(Session::with_client_id(7), &options), true),
            (reader, false),
        ] {
            let mut now = ms(0);
            loop {
                match attempts.next(now, &mut router, random) {
                    Next::Send {
                        mut order,
                        wait_until,
                    } => {
                        assert!(wait_until <= ms(250));
                        let node = order.next().expect("a node");
                        attempts.sent(node);
                        let timed_out = AttemptEnd::Failed {
                            node,
                            error: CallError::TimedOut,
                        };
                        attempts.end_attempt(wait_until, timed_out, &mut router, random);
                        now = wait_until;
                    }
                    Next::Pause { until } => {
                        assert!(until <= ms(250));
                        now = until;
                    }
                    Next::Await { .. } => unreachable!("every attempt ends at once"),
                    Next::Done => break,
                }
            }
            let result = attempts.take_result().expect("done");
            if is_write {
                assert!(matches!(result, Err(ClientError::OutcomeUnknown { .. })));
            } else {
                assert!(
                    matches!(result, Err(ClientError::Timeout { attempts: 3, .. })),
                    "{result:?}"
                );
            }
        }
    }

    // A refusal ends the operation at once; on a session not yet opened in the group it
    // retires the client id (the group may or may not know it).
    #[test]
    fn a_refusal_is_final() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(1));
        let mut attempts = write(Session::with_client_id(7), &options);
        let node = send(&mut attempts, ms(0), &mut router);
        let refusal = AttemptEnd::Answered {
            node,
            result: refused(ErrorCode::EmptyKey, None),
        };
        attempts.end_attempt(ms(1), refusal, &mut router, random);
        assert!(matches!(
            attempts.take_result(),
            Some(Err(ClientError::Rejected {
                code: ErrorCode::EmptyKey,
                ..
            }))
        ));
        assert!(!attempts.delivered());
        assert_ne!(attempts.take_session().expect("a session").client_id(), 7);
    }

    // An abandoned write retires its client id when an attempt was under way, and leaves
    // its seq unused when nothing was sent.
    #[test]
    fn abandoning_records_how_far_the_write_got() {
        let (options, mut router, random) = (options(), router(), &mut SeededRng::new(1));
        let mut attempts = write(Session::with_client_id(7), &options);
        send(&mut attempts, ms(0), &mut router);
        let session = attempts.abandon(random).expect("a session");
        assert_ne!(session.client_id(), 7);
        assert!(attempts.is_done() && attempts.take_result().is_none());

        let mut attempts = write(Session::with_client_id(8), &options);
        let session = attempts.abandon(random).expect("a session");
        assert_eq!(session.client_id(), 8);
    }
}
