//! One key-value operation from its start to its result, over the client's connections:
//! the driver of the operation's [`AttemptLoop`] (`client/attempt.rs`, where the
//! decisions are: routing, leader hints, retries, session refusals), which either blocks
//! until the result ([`Pending::wait`]) or moves on only as far as it can without
//! blocking ([`Pending::is_ready`]). The blocking calls of the [`Client`] are `start` then
//! `wait`, so there is one attempt loop for both, and the simulator drives the same one.
//!
//! A write holds its session from `start` to its result, so a thread with many writes in
//! flight holds as many sessions (see [`ClientOptions::sessions_max`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::{AttemptEnd, AttemptLoop, Next};
use super::completions::{Completions, Notify};
use super::connection::{Call, Connection, WriteWhen};
use super::random::OsRandom;
use super::routing::NodeOrder;
use super::{Client, ClientError, NODES_MAX};
// Named by the documentation's links only.
#[cfg(doc)]
use super::ClientOptions;
use crate::kv;
use crate::multiraft::GroupId;

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
    /// The decisions: where each attempt goes, how its end is taken, the result.
    attempts: AttemptLoop,
    /// The call of the attempt in flight (to the node the loop awaits).
    call: Option<Call>,
    /// Where the end of each attempt is reported, until the result.
    notify: Option<Notify>,
}

impl<'client> Pending<'client> {
    /// Blocks until the operation's result: the first attempt's answer, and when that is
    /// not final, the retries and redirects that follow (see the module's documentation
    /// of [`client`](super)).
    pub fn wait(mut self) -> Result<kv::Response, ClientError> {
        self.advance(true, None);
        let result = self
            .attempts
            .take_result()
            .expect("a blocking advance ends with the result");
        if let Ok(response) = &result {
            self.client.observe_revision(response.revision);
        }
        result
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
        self.attempts.is_done()
    }

    /// When the operation next moves on without news on its completion queue: the end of
    /// a retry pause, or of the wait for an attempt's answer. `None` once the result is
    /// known. A thread that holds many operations can call [`Pending::is_ready`] on just
    /// those whose moment has come, instead of on all of them.
    pub fn poll_at(&self) -> Option<Instant> {
        self.attempts
            .wake_at()
            .map(|moment| self.client.instant(moment))
    }

    /// Runs the attempt loop until the result, or (when `block` is false) until it would
    /// have to wait for an answer or a pause. With `deferred`, requests are queued on
    /// their connections without being written, and each connection used is added to
    /// `deferred` for a later flush.
    fn advance(&mut self, block: bool, mut deferred: Option<&mut Vec<Arc<Connection>>>) {
        loop {
            let now = self.client.now();
            let next = self
                .attempts
                .next(now, &mut self.client.router(), &mut OsRandom);
            match next {
                Next::Done => {
                    self.finish();
                    return;
                }
                Next::Pause { until } => {
                    if !block {
                        return;
                    }
                    std::thread::sleep(until.saturating_sub(now));
                }
                Next::Send { order, wait_until } => {
                    self.send(order, wait_until, deferred.as_deref_mut());
                }
                Next::Await { node, until } => {
                    let call = self.call.as_mut().expect("an attempt in flight has a call");
                    if !block && !call.poll() && now < until {
                        return;
                    }
                    let call = self.call.take().expect("checked above");
                    let outcome = call.wait(self.client.instant(until));
                    self.end_attempt(AttemptEnd::of_call(node, outcome));
                }
            }
        }
    }

    /// Sends the attempt just begun to the first node of `order` that has an open
    /// connection (connecting when due), and reports where it went, or how it ended.
    fn send(
        &mut self,
        order: NodeOrder,
        wait_until: Duration,
        deferred: Option<&mut Vec<Arc<Connection>>>,
    ) {
        let wait_until = self.client.instant(wait_until);
        let (node, connection) = match self.client.pick_node(order, wait_until) {
            Ok(picked) => picked,
            Err(reason) => return self.end_attempt(AttemptEnd::NoNode(reason)),
        };
        let write = if deferred.is_some() {
            WriteWhen::Deferred
        } else {
            WriteWhen::Now
        };
        let request = self.attempts.request_mut();
        match connection.send(request, wait_until, self.notify.as_ref(), write) {
            Ok(call) => {
                if let Some(deferred) = deferred {
                    if !deferred
                        .iter()
                        .any(|queued| Arc::ptr_eq(queued, &connection))
                    {
                        debug_assert!(deferred.len() < NODES_MAX);
                        deferred.push(connection);
                    }
                }
                self.attempts.sent(node);
                self.call = Some(call);
            }
            Err(error) => self.end_attempt(AttemptEnd::Failed { node, error }),
        }
    }

    /// Hands the end of the current attempt to the loop, under the router's lock (a hint
    /// may name a node the client did not know, which then gets its connection slot).
    fn end_attempt(&mut self, end: AttemptEnd) {
        let now = self.client.now();
        let mut router = self.client.router();
        self.attempts
            .end_attempt(now, end, &mut router, &mut OsRandom);
        self.client.add_new_nodes(&router);
    }

    /// The operation has its result: its session goes back to the pool (with the write's
    /// end recorded) and its completion queue stops counting it.
    fn finish(&mut self) {
        if let Some(session) = self.attempts.take_session() {
            self.client.sessions.give_back(session);
        }
        if let Some(notify) = self.notify.take() {
            notify.completions.unregister();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Only an operation without its result still holds its session.
        if let Some(session) = self.attempts.abandon(&mut OsRandom) {
            self.client.sessions.give_back(session);
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
        let options = match self.options_now() {
            Ok(options) => options,
            Err(error) => {
                if let Some(notify) = &notify {
                    notify.completions.unregister();
                }
                return Err(error);
            }
        };
        let started = self.now();
        let deadline = self.instant(started) + options.request_timeout;
        let session = if op.is_read_only() {
            None
        } else {
            let session = self.sessions.checkout(deadline);
            if session.is_none() {
                if let Some(notify) = &notify {
                    notify.completions.unregister();
                }
                return Err(ClientError::Timeout {
                    timeout: options.request_timeout,
                    attempts: 0,
                    last_error: format!(
                        "every one of the {} sessions stayed in use",
                        self.options.sessions_max
                    ),
                });
            }
            session
        };
        let mut attempts = AttemptLoop::new(
            op,
            serializable,
            scope,
            self.group_count,
            session,
            &options,
            started,
        );
        attempts.set_seen_revision(self.seen_revision());
        let mut pending = Pending {
            client: self,
            attempts,
            call: None,
            notify,
        };
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
