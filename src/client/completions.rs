//! A completion queue: how one thread with many [`Pending`](super::Pending) operations
//! learns which of them have news without polling each one or sleeping on any one.
//!
//! An operation started with [`Client::start_tagged`](super::Client::start_tagged) carries
//! a tag chosen by its owner. Whenever one of its attempts ends on the connection (an
//! answer, a lost connection, a request that could not be sent), the connection's reader
//! pushes the tag here and wakes a thread that waits on the queue. The owner then asks
//! only the tagged operations [`Pending::is_ready`](super::Pending::is_ready). A tag is a
//! hint, never a promise: an operation that turned out not to be final (a redirect, a
//! retry) is simply not ready yet, and a stale tag for an operation already harvested is
//! harmless.
//!
//! What raises no tag: the end of a retry pause and the end of an attempt's wait. An
//! owner that wants retries to go on while it waits looks now and then for operations
//! whose [`Pending::poll_at`](super::Pending::poll_at) has passed and calls `is_ready` on
//! them (the cluster bench does so every few milliseconds).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::options::RETRIES_CEILING;
use super::ClientError;

/// Largest `pending_max` a queue accepts.
pub const COMPLETIONS_PENDING_CEILING: usize = 1 << 20;

#[derive(Debug, Default)]
struct State {
    /// Tags pushed and not yet taken, in the order they were pushed.
    tags: Vec<u64>,
    /// Operations that report to this queue and have not finished.
    registered: usize,
    /// Threads blocked in [`Completions::wait_until`].
    waiters: usize,
}

/// Tags of pending operations that have news, shared by the operations one thread (or a
/// few) started. At most `pending_max` unfinished operations report to one queue.
///
/// The queue is bounded through its operations: each attempt of an operation pushes at
/// most one tag, an operation makes at most `retries_max + 1` attempts, and at most
/// `pending_max` operations report at once. Tags stay until the owner drains them
/// ([`Completions::take`], [`Completions::wait_until`]); while more than
/// [`Completions::tags_max`] wait undrained, no new operation may report here.
#[derive(Debug)]
pub struct Completions {
    state: Mutex<State>,
    /// Signalled when a tag is pushed and a thread waits.
    pushed: Condvar,
    pending_max: usize,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Completions {
    /// A queue for at most `pending_max` unfinished operations (in
    /// `1..=`[`COMPLETIONS_PENDING_CEILING`]).
    pub fn new(pending_max: usize) -> Result<Completions, ClientError> {
        if pending_max == 0 || pending_max > COMPLETIONS_PENDING_CEILING {
            return Err(ClientError::InvalidArgument(format!(
                "pending_max must be in 1..={COMPLETIONS_PENDING_CEILING}"
            )));
        }
        Ok(Completions {
            state: Mutex::new(State::default()),
            pushed: Condvar::new(),
            pending_max,
        })
    }

    /// The most unfinished operations that may report to this queue at once.
    pub fn pending_max(&self) -> usize {
        self.pending_max
    }

    /// Unfinished operations reporting to this queue now.
    pub fn registered(&self) -> usize {
        lock(&self.state).registered
    }

    /// Moves the tags pushed so far into `tags` (appending), waiting until at least one
    /// is there or `until` passes. Returns how many were moved.
    pub fn wait_until(&self, until: Instant, tags: &mut Vec<u64>) -> usize {
        let mut state = lock(&self.state);
        loop {
            if !state.tags.is_empty() {
                let moved = state.tags.len();
                tags.append(&mut state.tags);
                return moved;
            }
            let now = Instant::now();
            if now >= until {
                return 0;
            }
            state.waiters += 1;
            state = self
                .pushed
                .wait_timeout(state, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
    }

    /// Moves the tags pushed so far into `tags` without waiting. Returns how many moved.
    pub fn take(&self, tags: &mut Vec<u64>) -> usize {
        let mut state = lock(&self.state);
        let moved = state.tags.len();
        tags.append(&mut state.tags);
        moved
    }

    /// Counts one more operation reporting here, or refuses it past `pending_max`.
    pub(crate) fn register(&self) -> Result<(), ClientError> {
        let mut state = lock(&self.state);
        if state.tags.len() >= self.tags_max() {
            return Err(ClientError::InvalidArgument(format!(
                "{} tags wait undrained on this completion queue (take them first)",
                state.tags.len()
            )));
        }
        if state.registered >= self.pending_max {
            return Err(ClientError::InvalidArgument(format!(
                "{} operations already report to this completion queue (its pending_max)",
                self.pending_max
            )));
        }
        state.registered += 1;
        Ok(())
    }

    /// Most tags the queue holds undrained before it refuses new operations: what its
    /// `pending_max` operations can raise with every attempt.
    pub fn tags_max(&self) -> usize {
        self.pending_max * (RETRIES_CEILING as usize + 1)
    }

    /// Counts one operation less: it finished or was dropped.
    pub(crate) fn unregister(&self) {
        let mut state = lock(&self.state);
        assert!(state.registered > 0, "an operation unregisters once");
        state.registered -= 1;
    }

    /// Records news for the operation tagged `tag` and wakes a waiting thread.
    pub(crate) fn push(&self, tag: u64) {
        let wake = {
            let mut state = lock(&self.state);
            state.tags.push(tag);
            debug_assert!(
                state.tags.len() <= 2 * self.tags_max(),
                "more tags than the operations' attempts can raise"
            );
            state.waiters > 0
        };
        if wake {
            self.pushed.notify_one();
        }
    }
}

/// Where an attempt's end is reported: a queue and the operation's tag in it.
#[derive(Clone, Debug)]
pub(crate) struct Notify {
    pub(crate) completions: std::sync::Arc<Completions>,
    pub(crate) tag: u64,
}

impl Notify {
    pub(crate) fn push(&self) {
        self.completions.push(self.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    // Tags left undrained stop new operations from reporting once they reach the bound,
    // and draining them lets operations in again.
    #[test]
    fn undrained_tags_are_bounded() {
        let completions = Completions::new(1).unwrap();
        for tag in 0..completions.tags_max() as u64 {
            completions.register().unwrap();
            completions.push(tag);
            completions.unregister();
        }
        assert!(completions.register().is_err());
        let mut tags = Vec::new();
        assert_eq!(completions.take(&mut tags), completions.tags_max());
        completions.register().unwrap();
    }

    // A waiter wakes with the tags pushed from another thread; without tags, it returns
    // empty at its deadline.
    #[test]
    fn a_waiter_gets_pushed_tags() {
        let completions = Arc::new(Completions::new(4).unwrap());
        let mut tags = Vec::new();
        assert_eq!(completions.wait_until(Instant::now(), &mut tags), 0);
        let pusher = Arc::clone(&completions);
        let thread = std::thread::spawn(move || {
            pusher.push(7);
            pusher.push(9);
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while tags.len() < 2 && Instant::now() < deadline {
            completions.wait_until(deadline, &mut tags);
        }
        thread.join().unwrap();
        assert_eq!(tags, vec![7, 9]);
        assert_eq!(completions.take(&mut tags), 0);
    }

    // Registrations stop at pending_max and free up when operations unregister.
    #[test]
    fn registrations_are_bounded() {
        assert!(Completions::new(0).is_err());
        let completions = Completions::new(2).unwrap();
        completions.register().unwrap();
        completions.register().unwrap();
        assert!(completions.register().is_err());
        completions.unregister();
        completions.register().unwrap();
        assert_eq!(completions.registered(), 2);
    }
}
