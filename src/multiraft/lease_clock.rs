//! The lease group leader's deadlines: which leases are past their time on this
//! replica's own clock, and what the next checkpoint says. Held only by the leader and
//! only in memory; the log holds what any leader needs to rebuild it (`docs/LEASES.md`).
//!
//! Taking leadership costs O(1): a lease that nothing touched in this leadership has the
//! deadline `promoted_at_ms + remaining_ms`, read off the table's index by remaining
//! time, which a cursor walks once. A lease granted, kept alive or checkpointed since has
//! a deadline of its own. Time is a value handed in (`now_ms`).

use std::collections::{BTreeSet, HashMap};

use crate::kv::lease::{LeaseLimits, LeaseOp, LeaseTable};

/// How long after proposing an expiry the leader proposes it again if the lease is still
/// there (the proposal may have been dropped by a leader change).
pub const EXPIRY_RETRY_MS: u64 = 1_000;
/// Milliseconds between two checkpoints of remaining time.
pub const CHECKPOINT_INTERVAL_MS: u64 = 5_000;

/// One leadership's deadlines.
#[derive(Debug)]
pub struct LeaseClock {
    /// The term this clock belongs to: a new term is a new leadership.
    term: u64,
    promoted_at_ms: u64,
    /// Leases with a deadline of their own, and the same ordered by (deadline, id).
    own: HashMap<u64, u64>,
    by_deadline: BTreeSet<(u64, u64)>,
    /// How far the walk of the table's (remaining_ms, id) index has come.
    cursor: Option<(u64, u64)>,
    /// Expiries proposed in the current second, and that second.
    second: u64,
    proposed_this_second: u64,
    last_checkpoint_ms: u64,
    checkpoint_after: u64,
}

impl LeaseClock {
    /// The clock of a leadership taken at `now_ms` in `term`.
    pub fn promote(term: u64, now_ms: u64) -> LeaseClock {
        LeaseClock {
            term,
            promoted_at_ms: now_ms,
            own: HashMap::new(),
            by_deadline: BTreeSet::new(),
            cursor: None,
            second: 0,
            proposed_this_second: 0,
            last_checkpoint_ms: now_ms,
            checkpoint_after: 0,
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    fn set_deadline(&mut self, id: u64, deadline_ms: u64) {
        if let Some(old) = self.own.insert(id, deadline_ms) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline_ms, id));
    }

    /// A grant, keep-alive or checkpoint of `id` applied at `now_ms`, leaving
    /// `remaining_ms`.
    pub fn on_renewed(&mut self, id: u64, remaining_ms: u64, now_ms: u64) {
        self.set_deadline(id, now_ms.saturating_add(remaining_ms));
    }

    /// The lease is gone.
    pub fn on_removed(&mut self, id: u64) {
        if let Some(old) = self.own.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
    }

    /// The deadline of lease `id` whose record says `remaining_ms` (for time-to-live).
    pub fn deadline(&self, id: u64, remaining_ms: u64) -> u64 {
        match self.own.get(&id) {
            Some(&deadline) => deadline,
            None => self.promoted_at_ms.saturating_add(remaining_ms),
        }
    }

    /// Milliseconds lease `id` has left at `now_ms`.
    pub fn remaining(&self, id: u64, remaining_ms: u64, now_ms: u64) -> u64 {
        self.deadline(id, remaining_ms).saturating_sub(now_ms)
    }

    /// The expiries to propose at `now_ms`, within the per-second bound. Each is given
    /// [`EXPIRY_RETRY_MS`] before it is proposed again.
    pub fn due(&mut self, now_ms: u64, table: &LeaseTable, limits: &LeaseLimits) -> Vec<LeaseOp> {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.proposed_this_second = 0;
        }
        let budget = limits
            .revocations_per_second_max
            .saturating_sub(self.proposed_this_second);
        let mut due = Vec::new();
        while (due.len() as u64) < budget {
            let Some(&(deadline, id)) = self.by_deadline.first() else {
                break;
            };
            if deadline > now_ms {
                break;
            }
            match table.get(id) {
                Some(record) => {
                    due.push(LeaseOp::Expire {
                        id,
                        renewals: record.renewals,
                    });
                    self.set_deadline(id, now_ms + EXPIRY_RETRY_MS);
                }
                None => self.on_removed(id),
            }
        }
        let from = self.cursor;
        let mut walked = None;
        for (remaining_ms, id) in table.by_remaining() {
            if (due.len() as u64) >= budget {
                break;
            }
            if from.is_some_and(|cursor| (remaining_ms, id) <= cursor) {
                continue;
            }
            if self.promoted_at_ms.saturating_add(remaining_ms) > now_ms {
                break;
            }
            walked = Some((remaining_ms, id));
            if self.own.contains_key(&id) {
                continue;
            }
            let renewals = table.get(id).map_or(0, |record| record.renewals);
            due.push(LeaseOp::Expire { id, renewals });
            self.set_deadline(id, now_ms + EXPIRY_RETRY_MS);
        }
        if walked.is_some() {
            self.cursor = walked;
        }
        self.proposed_this_second += due.len() as u64;
        due
    }

    /// A checkpoint to propose at `now_ms`, once per [`CHECKPOINT_INTERVAL_MS`]: the
    /// remaining time of the next `checkpoint_batch_max` leases whose time left is below
    /// what the log says.
    pub fn checkpoint(
        &mut self,
        now_ms: u64,
        table: &LeaseTable,
        limits: &LeaseLimits,
    ) -> Option<LeaseOp> {
        if now_ms < self.last_checkpoint_ms + CHECKPOINT_INTERVAL_MS || table.is_empty() {
            return None;
        }
        self.last_checkpoint_ms = now_ms;
        let mut leases = Vec::new();
        let mut last = None;
        for (id, record) in table
            .iter_after(self.checkpoint_after)
            .take(limits.checkpoint_batch_max as usize)
        {
            last = Some(id);
            let remaining = self.remaining(id, record.remaining_ms, now_ms);
            if remaining < record.remaining_ms {
                leases.push((id, remaining));
            }
        }
        // At the end of the table the walk starts over.
        self.checkpoint_after = match last {
            Some(id) if table.iter_after(id).next().is_some() => id,
            _ => 0,
        };
        (!leases.is_empty()).then_some(LeaseOp::Checkpoint { leases })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(leases: &[(u64, u64)]) -> LeaseTable {
        let mut table = LeaseTable::default();
        for &(id, ttl_ms) in leases {
            table.grant(id, ttl_ms, 1, &LeaseLimits::default()).unwrap();
        }
        table
    }

    fn ids(ops: &[LeaseOp]) -> Vec<u64> {
        ops.iter()
            .map(|op| match op {
                LeaseOp::Expire { id, .. } => *id,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    // A new leader gives every lease its whole remaining time from the moment it took
    // over, however late that is, and expires them in order of their deadlines.
    #[test]
    fn a_new_leader_extends_every_lease_by_its_remaining_time() {
        let mut table = table(&[(1, 1_000), (2, 3_000), (3, 2_000)]);
        let limits = LeaseLimits::default();
        let mut clock = LeaseClock::promote(4, 1_000_000);
        let mut expire = |clock: &mut LeaseClock, now_ms| {
            let due = ids(&clock.due(now_ms, &table, &limits));
            for &id in &due {
                table.revoke(id, now_ms << 16, &limits).unwrap();
                clock.on_removed(id);
            }
            due
        };
        assert!(expire(&mut clock, 1_000_999).is_empty());
        assert_eq!(expire(&mut clock, 1_001_000), [1]);
        assert_eq!(expire(&mut clock, 1_002_500), [3]);
        assert_eq!(clock.remaining(2, 3_000, 1_002_500), 500);
        assert_eq!(expire(&mut clock, 1_003_000), [2]);
    }

    // An expiry that did not apply (its proposal was lost) is proposed again after the
    // retry time.
    #[test]
    fn an_expiry_is_proposed_again_until_it_applies() {
        let table = table(&[(1, 1_000)]);
        let limits = LeaseLimits::default();
        let mut clock = LeaseClock::promote(1, 0);
        assert_eq!(ids(&clock.due(1_000, &table, &limits)), [1]);
        assert!(clock.due(1_999, &table, &limits).is_empty());
        assert_eq!(ids(&clock.due(2_000, &table, &limits)), [1]);
    }

    // A lease renewed in this leadership has its own deadline; the walk of the table
    // skips it.
    #[test]
    fn a_renewed_lease_expires_at_its_own_deadline() {
        let table = table(&[(1, 1_000), (2, 1_000)]);
        let limits = LeaseLimits::default();
        let mut clock = LeaseClock::promote(1, 0);
        clock.on_renewed(1, 1_000, 900);
        assert_eq!(ids(&clock.due(1_000, &table, &limits)), [2]);
        assert!(clock.due(1_899, &table, &limits).is_empty());
        assert_eq!(ids(&clock.due(1_900, &table, &limits)), [1]);
        clock.on_removed(1);
        assert_eq!(ids(&clock.due(10_000, &table, &limits)), [2]);
    }

    // At most `revocations_per_second_max` expiries leave per second.
    #[test]
    fn expiries_are_bounded_per_second() {
        let leases: Vec<(u64, u64)> = (1..=10).map(|id| (id, 1_000)).collect();
        let table = table(&leases);
        let limits = LeaseLimits {
            revocations_per_second_max: 4,
            ..LeaseLimits::default()
        };
        let mut clock = LeaseClock::promote(1, 0);
        assert_eq!(clock.due(5_000, &table, &limits).len(), 4);
        assert_eq!(clock.due(5_500, &table, &limits).len(), 0);
        assert_eq!(clock.due(6_000, &table, &limits).len(), 4);
        assert_eq!(clock.due(7_000, &table, &limits).len(), 4);
    }

    // A checkpoint records the time left of leases whose deadline came closer, a batch
    // at a time, once per interval.
    #[test]
    fn checkpoints_record_the_time_left() {
        let table = table(&[(1, 10_000), (2, 20_000), (3, 30_000)]);
        let limits = LeaseLimits {
            checkpoint_batch_max: 2,
            ..LeaseLimits::default()
        };
        let mut clock = LeaseClock::promote(1, 0);
        assert_eq!(clock.checkpoint(1_000, &table, &limits), None, "too early");
        assert_eq!(
            clock.checkpoint(6_000, &table, &limits),
            Some(LeaseOp::Checkpoint {
                leases: vec![(1, 4_000), (2, 14_000)]
            })
        );
        assert_eq!(clock.checkpoint(7_000, &table, &limits), None);
        assert_eq!(
            clock.checkpoint(11_000, &table, &limits),
            Some(LeaseOp::Checkpoint {
                leases: vec![(3, 19_000)]
            })
        );
    }
}
