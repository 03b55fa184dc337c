//! Where the answer to each request of a shard goes, and the requests it waits on: those
//! handed to its Raft groups (answered by the Raft layer, exactly once each) and those
//! forwarded to another shard of the node (answered over the mesh, or timed out here at
//! their deadline).

use std::collections::{BTreeMap, VecDeque};

use crate::multiraft::RequestId;

/// A client connection's id on its shard, chosen by the driver.
pub type ConnectionId = u64;

/// Requests forwarded to other shards and not yet answered, per shard. Past it a request
/// that must be forwarded is refused `Overloaded`.
pub const FORWARDS_MAX: usize = 65_536;

/// Where the answer to a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this shard.
    Client {
        connection: ConnectionId,
        request_id: u64,
    },
    /// Another shard of the node, which forwarded the request.
    Mesh { shard: u32, token: u64 },
    /// One part of a request split over groups (see [`super::gather`]).
    Part { scatter: u64 },
    /// The lease check of a put waiting in the shard's lease checks (see
    /// [`super::leases`]).
    LeaseCheck { token: u64 },
}

/// The requests handed to the Raft layer. The Raft layer answers each exactly once, and
/// bounds how many wait per group (`proposals_pending_max`, `reads_pending_max`), so this
/// table is bounded by those bounds times the shard's groups.
#[derive(Debug, Default)]
pub struct Proposed {
    waiting: BTreeMap<RequestId, Origin>,
}

impl Proposed {
    pub fn insert(&mut self, request: RequestId, origin: Origin) {
        let previous = self.waiting.insert(request, origin);
        debug_assert!(previous.is_none(), "request ids are never reused");
    }

    pub fn remove(&mut self, request: RequestId) -> Option<Origin> {
        self.waiting.remove(&request)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn drain(&mut self) -> Vec<Origin> {
        std::mem::take(&mut self.waiting).into_values().collect()
    }
}

/// The requests this shard forwarded, by mesh token, each with its deadline tick.
#[derive(Debug, Default)]
pub struct Forwarded {
    waiting: BTreeMap<u64, Origin>,
    /// (deadline tick, token) in the order they were sent: deadlines only grow.
    deadlines: VecDeque<(u64, u64)>,
}

impl Forwarded {
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= FORWARDS_MAX
    }

    pub fn insert(&mut self, token: u64, origin: Origin, deadline: u64) {
        debug_assert!(!self.is_full());
        self.waiting.insert(token, origin);
        debug_assert!(self
            .deadlines
            .back()
            .is_none_or(|&(last, _)| last <= deadline));
        self.deadlines.push_back((deadline, token));
    }

    /// The origin of the answered (or undeliverable) request `token`.
    pub fn remove(&mut self, token: u64) -> Option<Origin> {
        self.waiting.remove(&token)
    }

    /// The origins of the requests whose deadline is at or before `tick`.
    pub fn expire(&mut self, tick: u64) -> Vec<Origin> {
        let mut expired = Vec::new();
        while let Some(&(deadline, token)) = self.deadlines.front() {
            if deadline > tick {
                break;
            }
            self.deadlines.pop_front();
            // A token answered before its deadline is gone from `waiting` already.
            expired.extend(self.waiting.remove(&token));
        }
        if self.waiting.is_empty() {
            self.deadlines.clear();
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn drain(&mut self) -> Vec<Origin> {
        self.deadlines.clear();
        std::mem::take(&mut self.waiting).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(request_id: u64) -> Origin {
        Origin::Client {
            connection: 1,
            request_id,
        }
    }

    // A forwarded request is answered once: by its reply, or at its deadline.
    #[test]
    fn forwards_end_by_reply_or_deadline() {
        let mut forwarded = Forwarded::default();
        forwarded.insert(1, origin(1), 10);
        forwarded.insert(2, origin(2), 12);
        assert_eq!(forwarded.remove(1), Some(origin(1)));
        assert!(forwarded.expire(10).is_empty(), "answered already");
        assert_eq!(forwarded.expire(12), vec![origin(2)]);
        assert_eq!(forwarded.len(), 0);
        assert_eq!(forwarded.remove(2), None);
    }
}
