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

use std::collections::HashMap;

use super::keys::SeededHasherBuilder;
use super::limits::{Limits, SessionError};
use super::response::{outcome_encoded_len, Outcome};

/// What a session remembers about the answer to its last applied command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CachedOutcome {
    /// The command was read-only: run it again on a duplicate.
    Rerun,
    /// The command's outcome, returned as is on a duplicate.
    Stored(Outcome),
}

impl CachedOutcome {
    /// Bytes this cached outcome counts toward `session_cache_bytes_max`: the length of its
    /// encoding, computed without encoding it.
    pub(crate) fn cached_bytes(&self) -> u64 {
        match self {
            CachedOutcome::Rerun => 0,
            CachedOutcome::Stored(outcome) => outcome_encoded_len(outcome) as u64,
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

/// Marks the end of the eviction list in [`Slot::older`] and [`Slot::newer`].
const NO_SLOT: usize = usize::MAX;

/// A session in the slot array, linked into the eviction list.
#[derive(Clone, Debug)]
struct Slot {
    client_id: u64,
    session: Session,
    /// The slot of the session with the next lower last index, or [`NO_SLOT`].
    older: usize,
    /// The slot of the session with the next higher last index, or [`NO_SLOT`].
    newer: usize,
}

/// The sessions of one group.
///
/// Sessions live in a dense slot array, found by client id through a hash map (never
/// iterated: snapshots sort the sessions by client id), and are linked in a list ordered
/// by last index, oldest first: the eviction order. A session's last index only ever
/// moves to the index being applied, which is above every other session's, so touching a
/// session moves it to the newest end of the list in O(1), and the oldest session is
/// always at the other end.
/// Which session is evicted is therefore exactly the one with the lowest last index, the
/// same on every replica and after any snapshot and restore.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    by_client: HashMap<u64, usize, SeededHasherBuilder>,
    slots: Vec<Slot>,
    oldest: usize,
    newest: usize,
    cached_bytes_total: u64,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            by_client: HashMap::default(),
            slots: Vec::new(),
            oldest: NO_SLOT,
            newest: NO_SLOT,
            cached_bytes_total: 0,
        }
    }
}

/// Two tables are equal when they hold the same sessions: the slot layout is an accident
/// of history, and the eviction order follows from the sessions' last indexes.
impl PartialEq for Sessions {
    fn eq(&self, other: &Sessions) -> bool {
        self.len() == other.len()
            && self.cached_bytes_total == other.cached_bytes_total
            && self.iter().eq(other.iter())
    }
}

impl Eq for Sessions {}

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    pub(crate) fn get(&self, client_id: u64) -> Option<&Session> {
        self.by_client
            .get(&client_id)
            .map(|&slot| &self.slots[slot].session)
    }

    /// Sessions in client id order, for snapshots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &Session)> {
        let mut slots: Vec<&Slot> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|slot| slot.client_id);
        slots
            .into_iter()
            .map(|slot| (&slot.client_id, &slot.session))
    }

    /// Decides what the command `(client_id, seq)` at `index` does. A duplicate counts as
    /// use of the session and moves it to the back of the eviction order.
    pub(crate) fn check(&mut self, client_id: u64, seq: u64, index: u64) -> SessionCheck {
        debug_assert!(client_id != 0 && seq != 0);
        let Some(&slot) = self.by_client.get(&client_id) else {
            return if seq == 1 {
                SessionCheck::Apply
            } else {
                SessionCheck::Refused(SessionError::Expired { client_id, seq })
            };
        };
        let session = &self.slots[slot].session;
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
        self.touch(slot, index);
        match &self.slots[slot].session.cached {
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
        match self.by_client.get(&client_id) {
            Some(&slot) => {
                self.touch(slot, index);
                let session = &mut self.slots[slot].session;
                self.cached_bytes_total -= session.cached_bytes;
                self.cached_bytes_total += cached_bytes;
                session.last_seq = seq;
                session.cached = cached;
                session.cached_bytes = cached_bytes;
            }
            None => {
                assert!(
                    self.newest == NO_SLOT || self.slots[self.newest].session.last_index < index,
                    "session index went backwards"
                );
                self.push_newest(
                    client_id,
                    Session {
                        last_seq: seq,
                        last_index: index,
                        cached,
                        cached_bytes,
                    },
                );
            }
        }
        self.evict(client_id, limits);
    }

    /// Builds the table from restored sessions, in any order. The caller has checked that
    /// client ids and last indexes are unique.
    pub(crate) fn from_restored(mut sessions: Vec<(u64, Session)>) -> Sessions {
        sessions.sort_unstable_by_key(|(_, session)| session.last_index);
        let mut table = Sessions::default();
        for (client_id, session) in sessions {
            table.push_newest(client_id, session);
        }
        table
    }

    /// Appends a session that is not in the table yet at the newest end of the list.
    fn push_newest(&mut self, client_id: u64, session: Session) {
        debug_assert!(
            self.newest == NO_SLOT
                || self.slots[self.newest].session.last_index < session.last_index
        );
        let slot = self.slots.len();
        self.cached_bytes_total += session.cached_bytes;
        self.slots.push(Slot {
            client_id,
            session,
            older: self.newest,
            newer: NO_SLOT,
        });
        match self.newest {
            NO_SLOT => self.oldest = slot,
            newest => self.slots[newest].newer = slot,
        }
        self.newest = slot;
        let displaced = self.by_client.insert(client_id, slot);
        assert!(displaced.is_none(), "client {client_id} has two sessions");
    }

    /// Moves the session in `slot` to `index`, the newest end of the eviction order.
    fn touch(&mut self, slot: usize, index: u64) {
        assert!(
            self.slots[self.newest].session.last_index < index,
            "session index went backwards"
        );
        self.slots[slot].session.last_index = index;
        if slot == self.newest {
            return;
        }
        self.unlink(slot);
        let newest = self.newest;
        self.slots[slot].older = newest;
        self.slots[slot].newer = NO_SLOT;
        self.slots[newest].newer = slot;
        self.newest = slot;
    }

    /// Takes `slot` out of the eviction list, joining its neighbours.
    fn unlink(&mut self, slot: usize) {
        let Slot { older, newer, .. } = self.slots[slot];
        match older {
            NO_SLOT => self.oldest = newer,
            older => self.slots[older].newer = newer,
        }
        match newer {
            NO_SLOT => self.newest = older,
            newer => self.slots[newer].older = older,
        }
    }

    /// Removes the oldest session. The last slot moves into its place, so the array stays
    /// dense; its neighbours and its client's entry follow it.
    fn remove_oldest(&mut self) {
        let slot = self.oldest;
        self.unlink(slot);
        let removed = self.slots.swap_remove(slot);
        self.by_client.remove(&removed.client_id);
        self.cached_bytes_total -= removed.session.cached_bytes;
        if slot < self.slots.len() {
            let Slot {
                client_id,
                older,
                newer,
                ..
            } = self.slots[slot];
            match older {
                NO_SLOT => self.oldest = slot,
                older => self.slots[older].newer = slot,
            }
            match newer {
                NO_SLOT => self.newest = slot,
                newer => self.slots[newer].older = slot,
            }
            self.by_client.insert(client_id, slot);
        }
    }

    fn evict(&mut self, keep_client_id: u64, limits: &Limits) {
        while self.by_client.len() as u64 > limits.sessions_max
            || self.cached_bytes_total > limits.session_cache_bytes_max
        {
            if self.oldest == NO_SLOT {
                break;
            }
            if self.slots[self.oldest].client_id == keep_client_id {
                // The only session left is the one being answered; it stays even if its
                // outcome alone exceeds the byte bound.
                break;
            }
            self.remove_oldest();
        }
        debug_assert_eq!(self.by_client.len(), self.slots.len());
    }

    /// Checks the table's structure: the list holds every slot once in increasing last
    /// index order, the map points at the right slots, and the byte total adds up.
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        assert_eq!(self.by_client.len(), self.slots.len());
        for (&client_id, &slot) in &self.by_client {
            assert_eq!(self.slots[slot].client_id, client_id);
        }
        let mut seen = 0;
        let mut previous = NO_SLOT;
        let mut slot = self.oldest;
        while slot != NO_SLOT {
            assert_eq!(self.slots[slot].older, previous);
            if previous != NO_SLOT {
                assert!(
                    self.slots[previous].session.last_index < self.slots[slot].session.last_index
                );
            }
            seen += 1;
            assert!(seen <= self.slots.len(), "eviction list has a cycle");
            previous = slot;
            slot = self.slots[slot].newer;
        }
        assert_eq!(previous, self.newest);
        assert_eq!(seen, self.slots.len());
        let total: u64 = self
            .slots
            .iter()
            .map(|slot| slot.session.cached_bytes)
            .sum();
        assert_eq!(total, self.cached_bytes_total);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::response::{encode_outcome, AppendResponse, OpResponse, Response};
    use crate::raft::rng::SeededRng;

    /// The eviction rule written as plainly as possible: client id to (last index, bytes);
    /// evict the lowest last index other than the kept client while over a bound.
    #[derive(Debug, Default)]
    struct Model {
        sessions: BTreeMap<u64, (u64, u64)>,
    }

    impl Model {
        fn evict(&mut self, keep_client_id: u64, limits: &Limits) {
            loop {
                let bytes: u64 = self.sessions.values().map(|(_, bytes)| bytes).sum();
                if self.sessions.len() as u64 <= limits.sessions_max
                    && bytes <= limits.session_cache_bytes_max
                {
                    return;
                }
                let (&oldest, _) = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, (last_index, _))| *last_index)
                    .expect("over a bound with no sessions");
                if oldest == keep_client_id {
                    return;
                }
                self.sessions.remove(&oldest);
            }
        }
    }

    fn stored(value_bytes: u64) -> CachedOutcome {
        CachedOutcome::Stored(Ok(Response {
            revision: 1,
            op: OpResponse::Append(AppendResponse { value_bytes }),
        }))
    }

    // Random records and duplicates evict exactly the sessions the plain rule evicts, the
    // table stays consistent, and a table rebuilt from its sessions equals it.
    #[test]
    fn eviction_matches_the_plain_rule() {
        let replay = "cargo test --lib kv::session::tests::eviction_matches_the_plain_rule";
        crate::testing::run_seeded_cases(replay, 0, 200, |seed| {
            let mut random = SeededRng::new(seed);
            let limits = Limits {
                sessions_max: 1 + random.next_u64() % 8,
                session_cache_bytes_max: 40 + random.next_u64() % 200,
                ..Limits::default()
            };
            let mut sessions = Sessions::default();
            let mut model = Model::default();
            let mut seqs: BTreeMap<u64, u64> = BTreeMap::new();
            for index in 1..=300u64 {
                let client_id = 1 + random.next_u64() % 12;
                let seq = *seqs.get(&client_id).unwrap_or(&0);
                let duplicate = seq > 0 && random.next_u64() % 4 == 0;
                if duplicate {
                    let check = sessions.check(client_id, seq, index);
                    match model.sessions.get_mut(&client_id) {
                        Some((last_index, _)) => {
                            assert!(!matches!(check, SessionCheck::Apply), "seed {seed}");
                            *last_index = index;
                        }
                        // An evicted session is refused, except at seq 1, which opens a
                        // new one (the documented gap); this walk does not apply it.
                        None => assert!(
                            matches!(check, SessionCheck::Refused(_))
                                || (seq == 1 && matches!(check, SessionCheck::Apply)),
                            "seed {seed}: evicted session answered"
                        ),
                    }
                } else {
                    let seq = if model.sessions.contains_key(&client_id) {
                        seq + 1
                    } else {
                        1
                    };
                    assert!(matches!(
                        sessions.check(client_id, seq, index),
                        SessionCheck::Apply
                    ));
                    let cached = if random.next_u64() % 3 == 0 {
                        CachedOutcome::Rerun
                    } else {
                        stored(random.next_u64())
                    };
                    let bytes = cached.cached_bytes();
                    sessions.record(client_id, seq, index, cached, &limits);
                    model.sessions.insert(client_id, (index, bytes));
                    model.evict(client_id, &limits);
                    seqs.insert(client_id, seq);
                }
                sessions.assert_consistent();
                let table: Vec<(u64, u64, u64)> = sessions
                    .iter()
                    .map(|(&client_id, session)| {
                        (client_id, session.last_index, session.cached_bytes)
                    })
                    .collect();
                let expected: Vec<(u64, u64, u64)> = model
                    .sessions
                    .iter()
                    .map(|(&client_id, &(last_index, bytes))| (client_id, last_index, bytes))
                    .collect();
                assert_eq!(table, expected, "seed {seed} index {index}");
            }
            let rebuilt = Sessions::from_restored(
                sessions
                    .iter()
                    .map(|(&client_id, session)| (client_id, session.clone()))
                    .collect(),
            );
            rebuilt.assert_consistent();
            assert_eq!(rebuilt, sessions, "seed {seed}");
        });
    }

    // The byte count of a cached outcome is the length of its encoding.
    #[test]
    fn cached_bytes_is_the_encoded_length() {
        let outcome = Ok(Response {
            revision: 7,
            op: OpResponse::Append(AppendResponse { value_bytes: 3 }),
        });
        assert_eq!(
            CachedOutcome::Stored(outcome.clone()).cached_bytes(),
            encode_outcome(&outcome).len() as u64
        );
        assert_eq!(CachedOutcome::Rerun.cached_bytes(), 0);
    }
}
