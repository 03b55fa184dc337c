//! Sessions for exactly-once writes: a pool of client ids, each with its next sequence
//! number per group, checked out by one write at a time.
//!
//! The server's rules (see `kv::session`): per (client id, group), seq 1 opens the
//! session and each later write takes a higher seq (gaps are allowed); a retry of the same
//! (client id, seq) gets the first outcome; one write is outstanding per (client id,
//! group); an unknown client whose seq is above 1 is refused as expired. A `Client` used
//! from many threads therefore needs many client ids: a write checks one session out of
//! the pool, keeps it for all its retries, and returns it when done.
//!
//! What a finished write does to its session in its group:
//!
//! | how the write ended                                   | opened before? | effect                     |
//! |-------------------------------------------------------|----------------|----------------------------|
//! | applied (a success answer)                            | either         | opened; next seq = seq + 1 |
//! | refused on its first delivery                         | yes            | next seq = seq + 1 (a gap) |
//! | refused on its first delivery                         | no             | the client id is retired   |
//! | outcome unknown (or refused after an earlier delivery)| either         | the client id is retired   |
//! | never sent                                            | either         | unchanged (seq reused)     |
//!
//! Retiring keeps two promises. After seq 1 ended without a success, the group may or may
//! not have opened the session, so neither seq 1 (it could return the cached outcome of a
//! different write) nor seq 2 (it could be refused as expired) is safe; a fresh client id
//! is. And after an unknown outcome, a copy of the write may still be on its way to the
//! log: a fresh client id keeps the next write from being outstanding beside it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::multiraft::GroupId;

/// A random 64-bit number. The standard library's `RandomState` keys its hasher from the
/// operating system's randomness; hashing a process-wide counter, the time and the
/// process id with it gives distinct, unpredictable values without another crate.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A fresh client id: random and never 0 (0 means "no session").
pub(crate) fn random_client_id() -> u64 {
    loop {
        let id = random_u64();
        if id != 0 {
            return id;
        }
    }
}

/// One client id and where its session stands in each group it wrote to.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: u64,
    groups: HashMap<GroupId, GroupSession>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GroupSession {
    next_seq: u64,
    /// A write of this session was applied in the group, so the group knows the client.
    opened: bool,
}

impl GroupSession {
    const NEW: GroupSession = GroupSession {
        next_seq: 1,
        opened: false,
    };
}

/// How a write ended, as far as its session is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteEnd {
    /// A success answer: applied exactly once.
    Applied,
    /// Refused by the server on the write's only delivery: the seq is used up, and no
    /// copy of the write is left anywhere.
    Refused,
    /// The write may have been applied, or a copy of it may still be in flight.
    Unknown,
    /// The request never left this process: the seq was not used.
    NotSent,
}

impl Session {
    pub(crate) fn fresh() -> Session {
        Session::with_client_id(random_client_id())
    }

    pub(crate) fn with_client_id(client_id: u64) -> Session {
        assert_ne!(client_id, 0, "client id 0 means no session");
        Session {
            client_id,
            groups: HashMap::new(),
        }
    }

    pub(crate) fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The seq the next write to `group` carries (1 opens the session).
    pub(crate) fn next_seq(&self, group: GroupId) -> u64 {
        self.groups
            .get(&group)
            .map_or(1, |session| session.next_seq)
    }

    /// Records how the write of `seq` to `group` ended (see the module's table).
    pub(crate) fn finish(&mut self, group: GroupId, seq: u64, end: WriteEnd) {
        // One hash lookup per write: this runs for every write the client makes.
        let session = self.groups.entry(group).or_insert(GroupSession::NEW);
        assert_eq!(
            session.next_seq, seq,
            "a write carries its session's next seq"
        );
        match end {
            WriteEnd::NotSent => {}
            WriteEnd::Applied => {
                *session = GroupSession {
                    next_seq: seq + 1,
                    opened: true,
                };
            }
            WriteEnd::Refused if session.opened => session.next_seq = seq + 1,
            WriteEnd::Refused | WriteEnd::Unknown => self.retire(),
        }
    }

    /// Replaces the client id by a fresh one with no sessions: the old id is never used
    /// again.
    pub(crate) fn retire(&mut self) {
        *self = Session::fresh();
    }
}

/// The idle sessions and how many are out.
#[derive(Debug)]
struct PoolState {
    idle: Vec<Session>,
    checked_out: usize,
}

/// At most `sessions_max` sessions; a write past the bound waits for one to come back.
#[derive(Debug)]
pub(crate) struct SessionPool {
    state: Mutex<PoolState>,
    returned: Condvar,
    sessions_max: usize,
}

fn lock(mutex: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionPool {
    pub(crate) fn new(sessions_max: usize) -> SessionPool {
        assert!(sessions_max > 0, "the pool holds at least one session");
        SessionPool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                checked_out: 0,
            }),
            returned: Condvar::new(),
            sessions_max,
        }
    }

    /// Takes an idle session (the most recently returned: its sessions are the warmest
    /// on the server), or opens a new one while under the bound, or waits for one until
    /// `wait_until` (`None` when the wait ends first).
    pub(crate) fn checkout(&self, wait_until: Instant) -> Option<SessionGuard<'_>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(session) = state.idle.pop() {
                state.checked_out += 1;
                return Some(SessionGuard {
                    pool: self,
                    session: Some(session),
                });
            }
            if state.checked_out < self.sessions_max {
                state.checked_out += 1;
                return Some(SessionGuard {
                    pool: self,
                    session: Some(Session::fresh()),
                });
            }
            let now = Instant::now();
            if now >= wait_until {
                return None;
            }
            state = self
                .returned
                .wait_timeout(state, wait_until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, session: Session) {
        let mut state = lock(&self.state);
        assert!(state.checked_out > 0, "a session returns only once");
        state.checked_out -= 1;
        state.idle.push(session);
        debug_assert!(state.idle.len() + state.checked_out <= self.sessions_max);
        drop(state);
        self.returned.notify_one();
    }
}

/// A checked-out session; it goes back to the pool when dropped.
#[derive(Debug)]
pub(crate) struct SessionGuard<'pool> {
    pool: &'pool SessionPool,
    session: Option<Session>,
}

impl std::ops::Deref for SessionGuard<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for SessionGuard<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // Seqs start at 1 per group and rise by one per applied write, independently per
    // group; an unsent write leaves its seq for the next one.
    #[test]
    fn seqs_are_per_group_and_start_at_one() {
        let mut session = Session::with_client_id(7);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (1, 1));
        session.finish(0, 1, WriteEnd::Applied);
        session.finish(0, 2, WriteEnd::Applied);
        session.finish(1, 1, WriteEnd::NotSent);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (3, 1));
        session.finish(1, 1, WriteEnd::Applied);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (3, 2));
        assert_eq!(session.client_id(), 7);
    }

    // A refusal on an opened session leaves a gap; a refusal on a session that may not
    // be open, or an unknown outcome, retires the client id.
    #[test]
    fn used_seqs_gap_or_retire() {
        let mut session = Session::with_client_id(7);
        session.finish(0, 1, WriteEnd::Applied);
        session.finish(0, 2, WriteEnd::Refused);
        assert_eq!((session.client_id(), session.next_seq(0)), (7, 3));
        session.finish(5, 1, WriteEnd::Refused);
        assert_ne!(session.client_id(), 7);
        assert_eq!((session.next_seq(0), session.next_seq(5)), (1, 1));

        let mut session = Session::with_client_id(8);
        session.finish(0, 1, WriteEnd::Applied);
        session.finish(0, 2, WriteEnd::Unknown);
        assert_ne!(session.client_id(), 8);
        assert_eq!(session.next_seq(0), 1);
    }

    // The pool never hands out more than its bound; a returned session is reused with its
    // seqs, and a waiter past the bound gives up at its deadline.
    #[test]
    fn pool_is_bounded_and_reuses_sessions() {
        let pool = SessionPool::new(2);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut first = pool.checkout(deadline).unwrap();
        let second = pool.checkout(deadline).unwrap();
        assert_ne!(first.client_id(), second.client_id());
        assert!(pool.checkout(Instant::now()).is_none());
        first.finish(3, 1, WriteEnd::Applied);
        let first_id = first.client_id();
        drop(first);
        let again = pool.checkout(deadline).unwrap();
        assert_eq!((again.client_id(), again.next_seq(3)), (first_id, 2));
    }

    // Client ids are nonzero and do not repeat over many draws.
    #[test]
    fn client_ids_are_distinct() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| random_client_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
