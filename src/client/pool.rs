//! The blocking client's pool of sessions: at most `sessions_max` client ids, each used
//! by one write at a time, so that writes from many threads (or many pending writes of
//! one thread) never have two writes outstanding under one (client id, group).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::random::OsRandom;
use super::session::Session;

/// The idle sessions and how many are out.
#[derive(Debug)]
struct PoolState {
    idle: Vec<Session>,
    checked_out: usize,
}

/// At most `sessions_max` sessions; a write past the bound waits for one to come back.
/// Every session checked out must be given back exactly once ([`SessionPool::give_back`]),
/// with its write's end recorded in it.
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
    pub(crate) fn checkout(&self, wait_until: Instant) -> Option<Session> {
        let mut state = lock(&self.state);
        loop {
            if let Some(session) = state.idle.pop() {
                state.checked_out += 1;
                return Some(session);
            }
            if state.checked_out < self.sessions_max {
                state.checked_out += 1;
                return Some(Session::fresh(&mut OsRandom));
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

    /// Returns a checked-out session, and wakes a writer waiting for one.
    pub(crate) fn give_back(&self, session: Session) {
        let mut state = lock(&self.state);
        assert!(state.checked_out > 0, "a session returns only once");
        state.checked_out -= 1;
        state.idle.push(session);
        debug_assert!(state.idle.len() + state.checked_out <= self.sessions_max);
        drop(state);
        self.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::session::WriteEnd;
    use std::time::Duration;

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
        first.finish(3, 1, WriteEnd::Applied, &mut OsRandom);
        let first_id = first.client_id();
        pool.give_back(first);
        let again = pool.checkout(deadline).unwrap();
        assert_eq!((again.client_id(), again.next_seq(3)), (first_id, 2));
        pool.give_back(again);
        pool.give_back(second);
    }
}
