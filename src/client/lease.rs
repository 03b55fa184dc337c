//! Leases in the SDK: grant, revoke, keep-alive, time-to-live and list through the lease
//! group's leader, and [`KeepAlive`], a thread that renews a lease before it expires and
//! rides out node failures (`docs/LEASES.md`).
//!
//! A lease op is retried like a compaction: leader hints are followed, and `NoLeader`,
//! `Timeout`, `Overloaded`, `ShuttingDown` and lost connections are retried after a pause
//! until the request timeout. A retried grant without a caller-chosen id may grant twice;
//! the extra lease holds no key and expires at its TTL.
//!
//! ```no_run
//! use std::sync::Arc;
//! use corekv::client::{Client, ClientOptions};
//!
//! let client = Arc::new(Client::connect(&["127.0.0.1:7379".into()], ClientOptions::default())?);
//! let lease = client.lease_grant(10, 0)?;
//! client.put_with_lease("service/a", "10.0.0.1:80", lease.id)?;
//! let keep_alive = client.keep_alive(lease.id);
//! // ... while the service runs, its key stays; a crash lets it expire in 10 s.
//! keep_alive.stop();
//! client.lease_revoke(lease.id)?;
//! # Ok::<(), corekv::client::ClientError>(())
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::attempt::CallError;
use super::{lock, options, Client, ClientError};
use crate::api::{ApiRequest, ApiResponse, ApiResult, ErrorCode, LeaseRequest, RequestKind};
use crate::kv::{self, LeaseResponse, OpResponse, LEASE_GROUP};
use crate::multiraft::GroupId;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub ttl_seconds: u64,
}

/// A lease's time left, and its keys when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub id: u64,
    /// Seconds left, rounded up.
    pub ttl_seconds: u64,
    pub granted_ttl_seconds: u64,
    /// Every key attached to the lease, in key order, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// The shortest pause between two keep-alives of one [`KeepAlive`].
pub const KEEP_ALIVE_INTERVAL_MIN: Duration = Duration::from_millis(100);

impl Client {
    /// Grants a lease of `ttl_seconds`; `id` 0 lets the cluster choose one.
    pub fn lease_grant(&self, ttl_seconds: u64, id: u64) -> Result<Lease, ClientError> {
        let lease = self.lease_call(LEASE_GROUP, None, LeaseRequest::Grant { ttl_seconds, id })?;
        Ok(Lease {
            id: lease.id,
            ttl_seconds: lease.granted_ttl_ms / 1000,
        })
    }

    /// Revokes a lease and returns the revocation's revision: the cluster deletes every
    /// key attached to it, in every group, each at a revision above that one (soon after
    /// this returns; see `docs/LEASES.md` for what a reader sees meanwhile).
    pub fn lease_revoke(&self, id: u64) -> Result<u64, ClientError> {
        let (_, revision) =
            self.lease_call_with_revision(LEASE_GROUP, None, LeaseRequest::Revoke { id })?;
        Ok(revision)
    }

    /// Restarts a lease's time to live once; returns the seconds it has now.
    pub fn lease_keep_alive_once(&self, id: u64) -> Result<u64, ClientError> {
        let lease = self.lease_call(LEASE_GROUP, None, LeaseRequest::KeepAlive { id })?;
        Ok(lease.ttl_ms / 1000)
    }

    /// The time a lease has left; with `keys`, every key attached to it (asked of each
    /// group, which indexes its own keys).
    pub fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTimeToLive, ClientError> {
        let lease = self.lease_call(
            LEASE_GROUP,
            None,
            LeaseRequest::TimeToLive { id, keys: false },
        )?;
        let mut found = Vec::new();
        if keys {
            for group in 0..self.group_count() {
                let request = LeaseRequest::TimeToLive { id, keys: true };
                let part = self.lease_call(group, Some(group), request)?;
                found.extend(part.keys);
            }
            found.sort();
        }
        Ok(LeaseTimeToLive {
            id,
            ttl_seconds: lease.ttl_ms / 1000,
            granted_ttl_seconds: lease.granted_ttl_ms / 1000,
            keys: found,
        })
    }

    /// Every lease id, ascending (paged through the lease group).
    pub fn lease_list(&self) -> Result<Vec<u64>, ClientError> {
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = self.lease_call(LEASE_GROUP, None, LeaseRequest::List { after })?;
            ids.extend_from_slice(&page.ids);
            match page.ids.last() {
                Some(&last) if page.more => after = last,
                _ => return Ok(ids),
            }
        }
    }

    /// Writes `value` at `key`, attached to lease `lease`: `LeaseNotFound` when the lease
    /// does not exist (or has expired).
    pub fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: u64,
    ) -> Result<kv::Response, ClientError> {
        let op = kv::Op::Put(kv::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease,
            prev_kv: false,
        });
        self.execute(op, false)
    }

    /// Keeps lease `id` alive from a thread of its own until [`KeepAlive::stop`] or drop:
    /// a keep-alive every third of the time to live, retried through node failures.
    pub fn keep_alive(self: &Arc<Self>, id: u64) -> KeepAlive {
        let shared = Arc::new(KeepAliveShared {
            stop: AtomicBool::new(false),
            state: Mutex::new(KeepAliveState::default()),
        });
        let client = Arc::clone(self);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("lease-keep-alive-{id}"))
            .spawn(move || keep_alive_loop(&client, id, &thread_shared))
            .ok();
        KeepAlive { shared, thread }
    }

    /// One lease op on `group`'s leader (the request names `scope` as its group).
    fn lease_call(
        &self,
        group: GroupId,
        scope: Option<GroupId>,
        request: LeaseRequest,
    ) -> Result<LeaseResponse, ClientError> {
        Ok(self.lease_call_with_revision(group, scope, request)?.0)
    }

    /// [`Client::lease_call`] with the revision of the answer.
    fn lease_call_with_revision(
        &self,
        group: GroupId,
        scope: Option<GroupId>,
        request: LeaseRequest,
    ) -> Result<(LeaseResponse, u64), ClientError> {
        let started = Instant::now();
        let deadline = started + self.options.request_timeout;
        let mut preferred = self.router().leader_of(group);
        let mut avoid = None;
        let mut last_error = String::from("no attempt was made");
        for attempt in 0..=self.options.retries_max {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let wait_until = (now + self.options.attempt_timeout).min(deadline);
            let order = self.router().order(preferred.take(), avoid);
            let (node, connection) = match self.pick_node(order, wait_until) {
                Ok(picked) => picked,
                Err(reason) => {
                    last_error = reason;
                    self.lease_pause(attempt, deadline);
                    continue;
                }
            };
            let mut call = ApiRequest {
                request_id: 0,
                kind: RequestKind::Lease {
                    request: request.clone(),
                    group: scope,
                    seen_revision: self.seen_revision(),
                },
            };
            let address = connection.address().to_string();
            match connection.call(&mut call, wait_until) {
                Ok(ApiResponse {
                    result: Ok(ApiResult::Kv(response)),
                    ..
                }) => {
                    self.observe_revision(response.revision);
                    if request.is_read_only() && scope.is_some() {
                        // Any replica serves a read of one group: not a leader hint.
                    } else {
                        self.router().set_leader(group, node);
                    }
                    return match response.op {
                        OpResponse::Lease(lease) => Ok((lease, response.revision)),
                        other => Err(super::unexpected_result("lease op", &other)),
                    };
                }
                Ok(ApiResponse {
                    result: Ok(ApiResult::Status(_) | ApiResult::Watch(_)),
                    ..
                }) => {
                    return Err(ClientError::Protocol(format!(
                        "{address}: asked for a lease op, got a status or a watch result"
                    )))
                }
                Ok(ApiResponse {
                    result: Err(error), ..
                }) => {
                    last_error = format!("{address}: {error}");
                    match error.code {
                        ErrorCode::NotLeader => {
                            let mut router = self.router();
                            router.forget_leader(group, node);
                            preferred = error
                                .leader
                                .as_ref()
                                .and_then(|hint| router.node_for_hint(hint));
                            self.add_new_nodes(&router);
                        }
                        ErrorCode::NoLeader
                        | ErrorCode::Overloaded
                        | ErrorCode::Timeout
                        | ErrorCode::ShuttingDown => {
                            avoid = Some(node);
                            self.lease_pause(attempt, deadline);
                        }
                        code => {
                            return Err(ClientError::Rejected {
                                code,
                                message: error.message,
                            })
                        }
                    }
                }
                Err(CallError::Protocol(message)) => {
                    return Err(ClientError::Protocol(format!("{address}: {message}")))
                }
                Err(error) => {
                    last_error = format!("{address}: {error}");
                    lock(&self.router).forget_leader(group, node);
                    avoid = Some(node);
                    self.lease_pause(attempt, deadline);
                }
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.options.retries_max + 1,
            last_error,
        })
    }

    /// The backoff before attempt `attempt + 1` (never past `deadline`).
    fn lease_pause(&self, attempt: u32, deadline: Instant) {
        let pause = options::backoff(
            self.options.retry_backoff_initial,
            self.options.retry_backoff_max,
            attempt + 1,
        );
        let until = (Instant::now() + pause).min(deadline);
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
}

/// What a [`KeepAlive`] has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepAliveState {
    /// Keep-alives the cluster answered.
    pub renewals: u64,
    /// The time to live the last answer gave, in seconds.
    pub ttl_seconds: u64,
    /// Set once the lease is gone (expired or revoked): the thread has stopped.
    pub lost: Option<String>,
}

#[derive(Debug)]
struct KeepAliveShared {
    stop: AtomicBool,
    state: Mutex<KeepAliveState>,
}

/// A thread keeping one lease alive; stops when dropped.
#[derive(Debug)]
pub struct KeepAlive {
    shared: Arc<KeepAliveShared>,
    thread: Option<JoinHandle<()>>,
}

impl KeepAlive {
    /// What the thread has seen so far.
    pub fn state(&self) -> KeepAliveState {
        lock(&self.shared.state).clone()
    }

    /// Stops renewing (the lease then expires at its time to live unless revoked).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.halt();
    }
}

fn keep_alive_loop(client: &Client, id: u64, shared: &KeepAliveShared) {
    while !shared.stop.load(Ordering::Acquire) {
        let interval = match client.lease_keep_alive_once(id) {
            Ok(ttl_seconds) => {
                let mut state = lock(&shared.state);
                state.renewals += 1;
                state.ttl_seconds = ttl_seconds;
                (Duration::from_secs(ttl_seconds) / 3).max(KEEP_ALIVE_INTERVAL_MIN)
            }
            Err(ClientError::Rejected {
                code: ErrorCode::LeaseNotFound,
                message,
            }) => {
                lock(&shared.state).lost = Some(message);
                return;
            }
            // Unavailable for the whole request timeout: try again at once (the lease may
            // still be alive on a new leader).
            Err(_) => KEEP_ALIVE_INTERVAL_MIN,
        };
        let until = Instant::now() + interval;
        while !shared.stop.load(Ordering::Acquire) {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            std::thread::park_timeout(left);
        }
    }
}
