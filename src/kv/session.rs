//! Client sessions: the table that makes a retried command apply at most once, bounded
//! in sessions and in cached bytes, with deterministic eviction.
//!
//! # The rules
//!
//! A command belongs to a session when both its `client_id` and its `seq` are non-zero;
//! any other command is applied every time it is committed. For each client the group
//! remembers the highest applied `seq`, the Raft index of the last entry that carried
//! the client, and the outcome of that `seq`. When a command of client `c` with sequence
//! number `s` is committed:
//!
//! | the group knows `c`? | `s` against `last_seq` | what happens |
//! |---|---|---|
//! | no  | `s == 1` | a session opens; the command is applied |
//! | no  | `s > 1`  | [`SessionError::Expired`]; not applied |
//! | yes | `s > last_seq` | applied; `s` becomes `last_seq` (gaps are allowed: a seq the client abandoned may never commit) |
//! | yes | `s == last_seq` | not applied again; the cached outcome is returned |
//! | yes | `s < last_seq` | [`SessionError::Stale`]; not applied |
//!
//! Session errors change no session. Every other outcome, including a validation error,
//! is what the command answered and is cached as such. A read-only command (a Range, or
//! a Txn of only Ranges) caches no response: a duplicate of it runs the read again at the
//! current revision. That is still linearizable, because the client is still waiting for
//! the answer, so a later read point is within its request's lifetime; and it keeps
//! large range results out of the cache.
//!
//! # What the client promises
//!
//! - A client id is unique to one client incarnation (a random 64-bit id); a restarted
//!   client takes a new one and starts again at `seq` 1.
//! - A client has at most one outstanding command: it sends `seq` n+1 only after it has
//!   the answer to `seq` n, and retries resend the identical command. A client that
//!   wants to pipeline uses several client ids.
//!
//! # Eviction and its one gap
//!
//! The table holds at most `sessions_max` sessions (default 100,000) and at most
//! `session_cache_bytes_max` bytes of encoded cached outcomes. Past either bound the
//! session whose last entry is oldest in the log (lowest last index) is evicted, never
//! the session of the command being applied. Every replica applies the same entries in
//! the same order, so every replica evicts the same sessions.
//!
//! etcd and TiKV would apply a command of an unknown client. corekv refuses one with
//! `s > 1` instead ([`SessionError::Expired`]), because its session may have been
//! evicted after the command was applied, and applying it again would break
//! exactly-once silently; the client learns that the outcome is unknown and starts a new
//! session. The gap that remains is `s == 1`: a retry of a session's first command after
//! that session was evicted opens a new session and applies again. It needs
//! `sessions_max` other clients (or the byte bound's worth of cached outcomes) to have
//! been applied between the original and its retry. A client that cannot accept even
//! that opens every session with a read-only command, whose repetition is harmless.

use std::collections::BTreeMap;

use super::limits::{Limits, SessionError};
use super::response::{encode_outcome, Outcome};

/// What a session remembers about the answer to its last applied command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CachedOutcome {
    /// The command was read-only: run it again on a duplicate.
    Rerun,
    /// The command's outcome, returned as is on a duplicate.
    Stored(Outcome),
}

impl CachedOutcome {
    /// Bytes this cached outcome counts toward `session_cache_bytes_max`: its encoding.
    pub(crate) fn cached_bytes(&self) -> u64 {
        match self {
            CachedOutcome::Rerun => 0,
            CachedOutcome::Stored(outcome) => encode_outcome(outcome).len() as u64,
        }
    }
}

/// One client's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) last_seq: u64,
    /// The Raft index of the last entry of this client that was applied or answered from
    /// the cache. Unique across sessions, since one entry carries one command.
    pub(crate) last_index: u64,
    pub(crate) cached: CachedOutcome,
    pub(crate) cached_bytes: u64,
}

/// What to do with a command of a session.
#[derive(Debug)]
pub(crate) enum SessionCheck {
    /// Apply the command, then [`Sessions::record`] its outcome.
    Apply,
    /// A duplicate of a write: answer with this.
    Cached(Outcome),
    /// A duplicate of a read-only command: run it again.
    Rerun,
    /// Refuse the command.
    Refused(SessionError),
}

/// The sessions of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    by_client: BTreeMap<u64, Session>,
    /// Client id by last index, oldest first: the eviction order.
    by_last_index: BTreeMap<u64, u64>,
    cached_bytes_total: u64,
}

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    pub(crate) fn get(&self, client_id: u64) -> Option<&Session> {
        self.by_client.get(&client_id)
    }

    /// Sessions in client id order, for snapshots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &Session)> {
        self.by_client.iter()
    }

    /// Decides what the command `(client_id, seq)` at `index` does. A duplicate counts as
    /// use of the session and moves it to the back of the eviction order.
    pub(crate) fn check(&mut self, client_id: u64, seq: u64, index: u64) -> SessionCheck {
        debug_assert!(client_id != 0 && seq != 0);
        let Some(session) = self.by_client.get_mut(&client_id) else {
            return if seq == 1 {
                SessionCheck::Apply
            } else {
                SessionCheck::Refused(SessionError::Expired { client_id, seq })
            };
        };
        if seq > session.last_seq {
            return SessionCheck::Apply;
        }
        if seq < session.last_seq {
            return SessionCheck::Refused(SessionError::Stale {
                client_id,
                seq,
                last_seq: session.last_seq,
            });
        }
        assert!(index > session.last_index, "session index went backwards");
        let removed = self.by_last_index.remove(&session.last_index);
        debug_assert_eq!(removed, Some(client_id));
        session.last_index = index;
        self.by_last_index.insert(index, client_id);
        match &session.cached {
            CachedOutcome::Rerun => SessionCheck::Rerun,
            CachedOutcome::Stored(outcome) => SessionCheck::Cached(outcome.clone()),
        }
    }

    /// Records the outcome of the applied command `(client_id, seq)` at `index`, then
    /// evicts the oldest other sessions while a bound is exceeded.
    pub(crate) fn record(
        &mut self,
        client_id: u64,
        seq: u64,
        index: u64,
        cached: CachedOutcome,
        limits: &Limits,
    ) {
        let cached_bytes = cached.cached_bytes();
        let session = Session {
            last_seq: seq,
            last_index: index,
            cached,
            cached_bytes,
        };
        self.insert(client_id, session);
        self.evict(client_id, limits);
    }

    /// Inserts or replaces a session, keeping the eviction order and the byte total.
    pub(crate) fn insert(&mut self, client_id: u64, session: Session) {
        let index = session.last_index;
        self.cached_bytes_total += session.cached_bytes;
        if let Some(old) = self.by_client.insert(client_id, session) {
            assert!(old.last_index < index, "session index went backwards");
            self.by_last_index.remove(&old.last_index);
            self.cached_bytes_total -= old.cached_bytes;
        }
        let displaced = self.by_last_index.insert(index, client_id);
        assert!(displaced.is_none(), "two sessions share last index {index}");
    }

    /// True when another session already has `index` as its last index.
    pub(crate) fn has_last_index(&self, index: u64) -> bool {
        self.by_last_index.contains_key(&index)
    }

    fn evict(&mut self, keep_client_id: u64, limits: &Limits) {
        while self.by_client.len() as u64 > limits.sessions_max
            || self.cached_bytes_total > limits.session_cache_bytes_max
        {
            let Some((&oldest_index, &oldest_client)) = self.by_last_index.first_key_value() else {
                break;
            };
            if oldest_client == keep_client_id {
                // The only session left is the one being answered; it stays even if its
                // outcome alone exceeds the byte bound.
                break;
            }
            self.by_last_index.remove(&oldest_index);
            if let Some(evicted) = self.by_client.remove(&oldest_client) {
                self.cached_bytes_total -= evicted.cached_bytes;
            }
        }
        debug_assert_eq!(self.by_client.len(), self.by_last_index.len());
    }
}
