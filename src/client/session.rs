//! Sessions for exactly-once writes: one client id with its next sequence number per
//! group, used by one write at a time, as plain data (fresh ids come from the
//! [`Random`] passed in). The blocking client keeps many in a pool (`client/pool.rs`);
//! the simulator gives each simulated client one.
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

use std::collections::HashMap;

use super::random::Random;
use crate::multiraft::GroupId;

/// One client id and where its session stands in each group it wrote to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
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
pub enum WriteEnd {
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
    /// A session under a fresh client id from `random`.
    pub fn fresh(random: &mut dyn Random) -> Session {
        Session::with_client_id(random.client_id())
    }

    pub fn with_client_id(client_id: u64) -> Session {
        assert_ne!(client_id, 0, "client id 0 means no session");
        Session {
            client_id,
            groups: HashMap::new(),
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The seq the next write to `group` carries (1 opens the session).
    pub fn next_seq(&self, group: GroupId) -> u64 {
        self.groups
            .get(&group)
            .map_or(1, |session| session.next_seq)
    }

    /// Records how the write of `seq` to `group` ended (see the module's table).
    /// `random` gives the fresh client id when the end retires the session.
    pub fn finish(&mut self, group: GroupId, seq: u64, end: WriteEnd, random: &mut dyn Random) {
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
            WriteEnd::Refused | WriteEnd::Unknown => self.retire(random),
        }
    }

    /// Replaces the client id by a fresh one with no sessions: the old id is never used
    /// again.
    pub fn retire(&mut self, random: &mut dyn Random) {
        *self = Session::fresh(random);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::rng::SeededRng;

    // Seqs start at 1 per group and rise by one per applied write, independently per
    // group; an unsent write leaves its seq for the next one.
    #[test]
    fn seqs_are_per_group_and_start_at_one() {
        let random = &mut SeededRng::new(1);
        let mut session = Session::with_client_id(7);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (1, 1));
        session.finish(0, 1, WriteEnd::Applied, random);
        session.finish(0, 2, WriteEnd::Applied, random);
        session.finish(1, 1, WriteEnd::NotSent, random);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (3, 1));
        session.finish(1, 1, WriteEnd::Applied, random);
        assert_eq!((session.next_seq(0), session.next_seq(1)), (3, 2));
        assert_eq!(session.client_id(), 7);
    }

    // A refusal on an opened session leaves a gap; a refusal on a session that may not
    // be open, or an unknown outcome, retires the client id to one the random source
    // gives.
    #[test]
    fn used_seqs_gap_or_retire() {
        let random = &mut SeededRng::new(1);
        let mut session = Session::with_client_id(7);
        session.finish(0, 1, WriteEnd::Applied, random);
        session.finish(0, 2, WriteEnd::Refused, random);
        assert_eq!((session.client_id(), session.next_seq(0)), (7, 3));
        session.finish(5, 1, WriteEnd::Refused, random);
        let expected = SeededRng::new(1).client_id();
        assert_eq!(session.client_id(), expected);
        assert_eq!((session.next_seq(0), session.next_seq(5)), (1, 1));

        let mut session = Session::with_client_id(8);
        session.finish(0, 1, WriteEnd::Applied, random);
        session.finish(0, 2, WriteEnd::Unknown, random);
        assert_ne!(session.client_id(), 8);
        assert_eq!(session.next_seq(0), 1);
    }
}
