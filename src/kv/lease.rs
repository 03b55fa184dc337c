//! Leases as replicated state: the lease table of the lease group (grants, keep-alives,
//! checkpoints, revocations and the revocation log), each group's record of the
//! revocations it has applied (watermark and tombstones), the lease operations of the log
//! and their answers, and the lease bounds. No clock: a record holds the time to live
//! left when it last changed, never a deadline (`docs/LEASES.md`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::wire::{DecodeError, Reader, Writer};

/// The group whose store holds the lease table (see `docs/LEASES.md`).
pub const LEASE_GROUP: u64 = 0;

/// Default of [`LeaseLimits::leases_max`].
pub const LEASES_MAX_DEFAULT: u64 = 1_000_000;
/// Default of [`LeaseLimits::keys_per_lease_max`].
pub const KEYS_PER_LEASE_MAX_DEFAULT: u64 = 10_000;
/// Default of [`LeaseLimits::revocations_retained_max`].
pub const REVOCATIONS_RETAINED_MAX_DEFAULT: u64 = 100_000;
/// Default of [`LeaseLimits::revocations_per_entry_max`].
pub const REVOCATIONS_PER_ENTRY_MAX_DEFAULT: u64 = 64;
/// Default of [`LeaseLimits::revocations_per_second_max`].
pub const REVOCATIONS_PER_SECOND_MAX_DEFAULT: u64 = 1_000;
/// Default of [`LeaseLimits::checkpoint_batch_max`].
pub const CHECKPOINT_BATCH_MAX_DEFAULT: u64 = 1_000;
/// Default of [`LeaseLimits::tombstone_retain_ms`]: ten minutes.
pub const TOMBSTONE_RETAIN_MS_DEFAULT: u64 = 10 * 60 * 1000;
/// Default of [`LeaseLimits::list_max`].
pub const LEASE_LIST_MAX_DEFAULT: u64 = 10_000;
/// The shortest time to live a grant may ask for.
pub const TTL_SECONDS_MIN: u64 = 1;
/// The longest time to live a grant may ask for: one year.
pub const TTL_SECONDS_MAX: u64 = 365 * 24 * 3600;

const _: () = assert!(TTL_SECONDS_MIN > 0 && TTL_SECONDS_MIN < TTL_SECONDS_MAX);
const _: () = assert!(REVOCATIONS_PER_ENTRY_MAX_DEFAULT <= REVOCATIONS_RETAINED_MAX_DEFAULT);

/// The lease bounds (see the table in `docs/LEASES.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseLimits {
    /// Leases the lease table holds at most; a grant past it is refused.
    pub leases_max: u64,
    /// Keys of one lease one group holds at most; a put past it is refused.
    pub keys_per_lease_max: u64,
    /// Revocations the lease group's log keeps, and tombstones each group keeps.
    pub revocations_retained_max: u64,
    /// Leases one local revoke entry carries.
    pub revocations_per_entry_max: u64,
    /// Expiries the lease group's leader proposes per second.
    pub revocations_per_second_max: u64,
    /// Leases one checkpoint entry carries.
    pub checkpoint_batch_max: u64,
    /// How long (in revision milliseconds) a group keeps a revoked lease's tombstone.
    pub tombstone_retain_ms: u64,
    /// Lease ids one `list` answer holds.
    pub list_max: u64,
}

impl Default for LeaseLimits {
    fn default() -> LeaseLimits {
        LeaseLimits {
            leases_max: LEASES_MAX_DEFAULT,
            keys_per_lease_max: KEYS_PER_LEASE_MAX_DEFAULT,
            revocations_retained_max: REVOCATIONS_RETAINED_MAX_DEFAULT,
            revocations_per_entry_max: REVOCATIONS_PER_ENTRY_MAX_DEFAULT,
            revocations_per_second_max: REVOCATIONS_PER_SECOND_MAX_DEFAULT,
            checkpoint_batch_max: CHECKPOINT_BATCH_MAX_DEFAULT,
            tombstone_retain_ms: TOMBSTONE_RETAIN_MS_DEFAULT,
            list_max: LEASE_LIST_MAX_DEFAULT,
        }
    }
}

/// A lease operation, as a client asks for it or as the lease group's leader proposes
/// it. Every one of them is an entry of the lease group's log except
/// [`LeaseOp::RevokeLocal`], which is an entry of any group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Creates a lease of `ttl_ms`; `id` 0 lets the lease group choose one.
    Grant { id: u64, ttl_ms: u64 },
    /// Removes a lease; every group deletes its keys.
    Revoke { id: u64 },
    /// Restarts a lease's time to live.
    KeepAlive { id: u64 },
    /// The time left; with `keys`, the keys attached in the answering group.
    TimeToLive { id: u64, keys: bool },
    /// Lease ids, ascending, from `after` on (exclusive).
    List { after: u64 },
    /// The leader found the lease past its deadline: revoked unless a keep-alive ordered
    /// before this entry renewed it (its `renewals` moved on).
    Expire { id: u64, renewals: u64 },
    /// The time to live left of these leases, by id, on the leader's clock.
    Checkpoint { leases: Vec<(u64, u64)> },
    /// In any group: the revocations of the lease group through `through`, in order,
    /// as (position, lease); every attached key of these leases goes.
    RevokeLocal { revocations: Vec<(u64, u64)> },
}

/// Which lease operation a [`LeaseResponse`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LeaseAnswer {
    Grant,
    Revoke,
    KeepAlive,
    TimeToLive,
    List,
    /// An expiry, checkpoint or local revoke: nobody but the proposer reads it.
    #[default]
    Internal,
}

impl LeaseAnswer {
    pub(crate) fn tag(self) -> u8 {
        match self {
            LeaseAnswer::Grant => 1,
            LeaseAnswer::Revoke => 2,
            LeaseAnswer::KeepAlive => 3,
            LeaseAnswer::TimeToLive => 4,
            LeaseAnswer::List => 5,
            LeaseAnswer::Internal => 6,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Result<LeaseAnswer, DecodeError> {
        Ok(match tag {
            1 => LeaseAnswer::Grant,
            2 => LeaseAnswer::Revoke,
            3 => LeaseAnswer::KeepAlive,
            4 => LeaseAnswer::TimeToLive,
            5 => LeaseAnswer::List,
            6 => LeaseAnswer::Internal,
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "lease answer",
                    tag,
                })
            }
        })
    }
}

/// The answer to a lease operation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseResponse {
    pub answer: LeaseAnswer,
    pub id: u64,
    /// Milliseconds left (`TimeToLive`, `KeepAlive`), or granted (`Grant`).
    pub ttl_ms: u64,
    pub granted_ttl_ms: u64,
    /// The attached keys (`TimeToLive` with `keys`), or nothing.
    pub keys: Vec<Vec<u8>>,
    /// Lease ids (`List`).
    pub ids: Vec<u64>,
    /// More ids follow the last of `ids` (`List`).
    pub more: bool,
}

/// Why a lease operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0} not found")]
    NotFound(u64),
    #[error("lease {0} exists already")]
    Exists(u64),
    #[error("the cluster holds {leases_max} leases, its bound")]
    TooManyLeases { leases_max: u64 },
    #[error("lease {lease} has {keys_per_lease_max} keys in this group, its bound")]
    TooManyKeys { lease: u64, keys_per_lease_max: u64 },
    #[error("time to live of {ttl_seconds} s is outside [{TTL_SECONDS_MIN}, {TTL_SECONDS_MAX}]")]
    InvalidTtl { ttl_seconds: u64 },
    /// A lease-table operation reached a group other than the lease group.
    #[error("leases live in group {LEASE_GROUP}")]
    NotLeaseGroup,
}

/// One lease as the log last left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub granted_ttl_ms: u64,
    /// Grants and keep-alives of this lease so far: an expiry names the count it saw, so
    /// that a keep-alive ordered before it in the log saves the lease.
    pub renewals: u64,
    /// The time to live left when the record last changed (grant, keep-alive, checkpoint).
    pub remaining_ms: u64,
}

/// One revocation of the lease group's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Its place in the log of revocations, from 1, without gaps.
    pub position: u64,
    pub lease: u64,
    /// The revision of the entry that revoked it.
    pub revision: u64,
}

/// The lease table of the lease group (empty in every other group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<u64, LeaseRecord>,
    /// The same leases by (remaining_ms, id), so that a leader finds the leases due after
    /// taking leadership without walking the table.
    by_remaining: BTreeSet<(u64, u64)>,
    /// The last `revocations_retained_max` revocations, oldest first.
    revocations: VecDeque<Revocation>,
    /// The position of the newest revocation ever (0: none).
    last_position: u64,
}

impl LeaseTable {
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&LeaseRecord> {
        self.leases.get(&id)
    }

    /// Leases by ascending remaining time (for the leader's deadlines).
    pub fn by_remaining(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_remaining.iter().copied()
    }

    /// Every lease with its record, by id (for checkpoints and snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &LeaseRecord)> + '_ {
        self.leases.iter().map(|(&id, record)| (id, record))
    }

    /// Leases from `after` on (exclusive), by id.
    pub fn iter_after(&self, after: u64) -> impl Iterator<Item = (u64, &LeaseRecord)> + '_ {
        use std::ops::Bound;
        self.leases
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(&id, record)| (id, record))
    }

    /// The position of the newest revocation (0: none yet).
    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    /// The revocations after `position`, oldest first, at most `max`; `None` when some of
    /// them are no longer retained.
    pub fn revocations_after(&self, position: u64, max: usize) -> Option<Vec<Revocation>> {
        if position >= self.last_position {
            return Some(Vec::new());
        }
        let oldest = self.revocations.front()?.position;
        if position + 1 < oldest {
            return None;
        }
        let skip = (position + 1 - oldest) as usize;
        Some(
            self.revocations
                .iter()
                .skip(skip)
                .take(max)
                .copied()
                .collect(),
        )
    }

    fn insert(&mut self, id: u64, record: LeaseRecord) {
        if let Some(old) = self.leases.insert(id, record) {
            self.by_remaining.remove(&(old.remaining_ms, id));
        }
        self.by_remaining.insert((record.remaining_ms, id));
    }

    fn remove(&mut self, id: u64) -> Option<LeaseRecord> {
        let old = self.leases.remove(&id)?;
        self.by_remaining.remove(&(old.remaining_ms, id));
        Some(old)
    }

    /// Grants a lease at `revision`: the asked id, or the revision itself (the first free
    /// id from it on) when none was asked for. Deterministic on every replica.
    pub fn grant(
        &mut self,
        id: u64,
        ttl_ms: u64,
        revision: u64,
        limits: &LeaseLimits,
    ) -> Result<u64, LeaseError> {
        if self.leases.len() as u64 >= limits.leases_max {
            return Err(LeaseError::TooManyLeases {
                leases_max: limits.leases_max,
            });
        }
        let id = if id == 0 {
            let mut id = revision.max(1);
            while self.leases.contains_key(&id) {
                id = id.wrapping_add(1).max(1);
            }
            id
        } else if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists(id));
        } else {
            id
        };
        let record = LeaseRecord {
            granted_ttl_ms: ttl_ms,
            renewals: 1,
            remaining_ms: ttl_ms,
        };
        self.insert(id, record);
        Ok(id)
    }

    /// Restarts a lease's time to live; returns its record.
    pub fn keep_alive(&mut self, id: u64) -> Result<LeaseRecord, LeaseError> {
        let record = *self.leases.get(&id).ok_or(LeaseError::NotFound(id))?;
        let renewed = LeaseRecord {
            remaining_ms: record.granted_ttl_ms,
            renewals: record.renewals + 1,
            ..record
        };
        self.insert(id, renewed);
        Ok(renewed)
    }

    /// Lowers the remaining time of the leases named (never raises it: only a keep-alive
    /// does); unknown ids are skipped.
    pub fn checkpoint(&mut self, leases: &[(u64, u64)]) {
        for &(id, remaining_ms) in leases {
            if let Some(record) = self.leases.get(&id).copied() {
                if remaining_ms < record.remaining_ms {
                    let lowered = LeaseRecord {
                        remaining_ms,
                        ..record
                    };
                    self.insert(id, lowered);
                }
            }
        }
    }

    /// Revokes a lease at `revision`, appending it to the revocation log.
    pub fn revoke(
        &mut self,
        id: u64,
        revision: u64,
        limits: &LeaseLimits,
    ) -> Result<LeaseRecord, LeaseError> {
        let record = self.remove(id).ok_or(LeaseError::NotFound(id))?;
        self.last_position += 1;
        self.revocations.push_back(Revocation {
            position: self.last_position,
            lease: id,
            revision,
        });
        while self.revocations.len() as u64 > limits.revocations_retained_max.max(1) {
            self.revocations.pop_front();
        }
        Ok(record)
    }

    /// An expiry the leader proposed: revoked only if no keep-alive renewed the lease
    /// since the leader saw `renewals` (a checkpoint does not count).
    pub fn expire(&mut self, id: u64, renewals: u64, revision: u64, limits: &LeaseLimits) -> bool {
        match self.leases.get(&id) {
            Some(record) if record.renewals == renewals => {
                self.revoke(id, revision, limits).is_ok()
            }
            _ => false,
        }
    }

    /// Restores a table from its parts (the snapshot's decoder checked them).
    pub(crate) fn from_parts(
        leases: Vec<(u64, LeaseRecord)>,
        revocations: Vec<Revocation>,
        last_position: u64,
    ) -> LeaseTable {
        let mut table = LeaseTable {
            last_position,
            revocations: revocations.into(),
            ..LeaseTable::default()
        };
        for (id, record) in leases {
            table.insert(id, record);
        }
        table
    }

    pub(crate) fn revocations(&self) -> impl Iterator<Item = &Revocation> + '_ {
        self.revocations.iter()
    }
}

/// A group's record of the lease group's revocations it has applied: the position it
/// has applied through (the watermark) and the revoked leases it still refuses puts
/// for (tombstones), by lease, with the revision of the local revoke.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedRevocations {
    watermark: u64,
    tombstones: BTreeMap<u64, u64>,
    /// The same tombstones by (revision, lease), oldest first.
    by_revision: BTreeSet<(u64, u64)>,
}

impl AppliedRevocations {
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    pub fn is_tombstone(&self, lease: u64) -> bool {
        self.tombstones.contains_key(&lease)
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Records revocations applied at `revision`; returns the leases this group had not
    /// applied yet, whose keys must go.
    pub fn apply(
        &mut self,
        revocations: &[(u64, u64)],
        revision: u64,
        limits: &LeaseLimits,
    ) -> Vec<u64> {
        let mut fresh = Vec::new();
        for &(position, lease) in revocations {
            if position <= self.watermark {
                continue;
            }
            self.watermark = position;
            fresh.push(lease);
            if let Some(old) = self.tombstones.insert(lease, revision) {
                self.by_revision.remove(&(old, lease));
            }
            self.by_revision.insert((revision, lease));
        }
        self.forget(revision, limits);
        fresh
    }

    /// Drops tombstones older than `tombstone_retain_ms` before `revision`, and the oldest
    /// past `revocations_retained_max`.
    fn forget(&mut self, revision: u64, limits: &LeaseLimits) {
        let retain = limits.tombstone_retain_ms.saturating_mul(1 << 16);
        let horizon = revision.saturating_sub(retain);
        while let Some(&(oldest, lease)) = self.by_revision.first() {
            let too_many = self.by_revision.len() as u64 > limits.revocations_retained_max.max(1);
            if oldest >= horizon && !too_many {
                break;
            }
            self.by_revision.pop_first();
            self.tombstones.remove(&lease);
        }
    }

    /// A lease granted again under a revoked id: its tombstone goes, so puts with it are
    /// accepted again once the grant is checked.
    pub fn clear(&mut self, lease: u64) {
        if let Some(revision) = self.tombstones.remove(&lease) {
            self.by_revision.remove(&(revision, lease));
        }
    }

    pub(crate) fn from_parts(watermark: u64, tombstones: Vec<(u64, u64)>) -> AppliedRevocations {
        let mut applied = AppliedRevocations {
            watermark,
            ..AppliedRevocations::default()
        };
        for (lease, revision) in tombstones {
            applied.tombstones.insert(lease, revision);
            applied.by_revision.insert((revision, lease));
        }
        applied
    }

    pub(crate) fn tombstones(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tombstones
            .iter()
            .map(|(&lease, &revision)| (lease, revision))
    }
}

const LEASE_TAG_GRANT: u8 = 1;
const LEASE_TAG_REVOKE: u8 = 2;
const LEASE_TAG_KEEP_ALIVE: u8 = 3;
const LEASE_TAG_TIME_TO_LIVE: u8 = 4;
const LEASE_TAG_LIST: u8 = 5;
const LEASE_TAG_EXPIRE: u8 = 6;
const LEASE_TAG_CHECKPOINT: u8 = 7;
const LEASE_TAG_REVOKE_LOCAL: u8 = 8;

impl LeaseOp {
    /// Whether the op belongs to the lease group (all but [`LeaseOp::RevokeLocal`]).
    pub fn is_lease_table_op(&self) -> bool {
        !matches!(self, LeaseOp::RevokeLocal { .. })
    }

    pub(crate) fn encode(&self, writer: &mut Writer) {
        match self {
            LeaseOp::Grant { id, ttl_ms } => {
                writer.u8(LEASE_TAG_GRANT);
                writer.u64(*id);
                writer.u64(*ttl_ms);
            }
            LeaseOp::Revoke { id } => {
                writer.u8(LEASE_TAG_REVOKE);
                writer.u64(*id);
            }
            LeaseOp::KeepAlive { id } => {
                writer.u8(LEASE_TAG_KEEP_ALIVE);
                writer.u64(*id);
            }
            LeaseOp::TimeToLive { id, keys } => {
                writer.u8(LEASE_TAG_TIME_TO_LIVE);
                writer.u64(*id);
                writer.u8(u8::from(*keys));
            }
            LeaseOp::List { after } => {
                writer.u8(LEASE_TAG_LIST);
                writer.u64(*after);
            }
            LeaseOp::Expire { id, renewals } => {
                writer.u8(LEASE_TAG_EXPIRE);
                writer.u64(*id);
                writer.u64(*renewals);
            }
            LeaseOp::Checkpoint { leases } => {
                writer.u8(LEASE_TAG_CHECKPOINT);
                writer.count(leases.len());
                for &(id, remaining_ms) in leases {
                    writer.u64(id);
                    writer.u64(remaining_ms);
                }
            }
            LeaseOp::RevokeLocal { revocations } => {
                writer.u8(LEASE_TAG_REVOKE_LOCAL);
                writer.count(revocations.len());
                for &(position, lease) in revocations {
                    writer.u64(position);
                    writer.u64(lease);
                }
            }
        }
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<LeaseOp, DecodeError> {
        let tag = reader.u8()?;
        Ok(match tag {
            LEASE_TAG_GRANT => LeaseOp::Grant {
                id: reader.u64()?,
                ttl_ms: reader.u64()?,
            },
            LEASE_TAG_REVOKE => LeaseOp::Revoke { id: reader.u64()? },
            LEASE_TAG_KEEP_ALIVE => LeaseOp::KeepAlive { id: reader.u64()? },
            LEASE_TAG_TIME_TO_LIVE => LeaseOp::TimeToLive {
                id: reader.u64()?,
                keys: reader.bool("lease time-to-live keys")?,
            },
            LEASE_TAG_LIST => LeaseOp::List {
                after: reader.u64()?,
            },
            LEASE_TAG_EXPIRE => LeaseOp::Expire {
                id: reader.u64()?,
                renewals: reader.u64()?,
            },
            LEASE_TAG_CHECKPOINT => {
                let count = reader.count(16)?;
                let mut leases = Vec::with_capacity(count);
                for _ in 0..count {
                    leases.push((reader.u64()?, reader.u64()?));
                }
                LeaseOp::Checkpoint { leases }
            }
            LEASE_TAG_REVOKE_LOCAL => {
                let count = reader.count(16)?;
                let mut revocations = Vec::with_capacity(count);
                for _ in 0..count {
                    revocations.push((reader.u64()?, reader.u64()?));
                }
                LeaseOp::RevokeLocal { revocations }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "lease op",
                    tag,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LeaseLimits {
        LeaseLimits {
            leases_max: 3,
            revocations_retained_max: 2,
            tombstone_retain_ms: 1_000,
            ..LeaseLimits::default()
        }
    }

    // A grant picks the asked id or the first free one from the revision, refuses a taken
    // id and the grant past the bound.
    #[test]
    fn grants_choose_ids_and_respect_the_bound() {
        let mut table = LeaseTable::default();
        assert_eq!(table.grant(0, 5_000, 100, &limits()), Ok(100));
        assert_eq!(table.grant(101, 5_000, 100, &limits()), Ok(101));
        assert_eq!(table.grant(0, 5_000, 100, &limits()), Ok(102));
        assert_eq!(
            table.grant(7, 5_000, 100, &limits()),
            Err(LeaseError::TooManyLeases { leases_max: 3 })
        );
        table.revoke(100, 200, &limits()).unwrap();
        assert_eq!(
            table.grant(101, 5_000, 300, &limits()),
            Err(LeaseError::Exists(101))
        );
        assert_eq!(table.len(), 2);
    }

    // Keep-alives restore the full TTL, checkpoints only lower it, and the index by
    // remaining time follows both.
    #[test]
    fn keep_alives_and_checkpoints_move_the_remaining_time() {
        let mut table = LeaseTable::default();
        let a = table.grant(1, 10_000, 1, &limits()).unwrap();
        let b = table.grant(2, 4_000, 1, &limits()).unwrap();
        table.checkpoint(&[(a, 3_000), (b, 9_000), (99, 1)]);
        assert_eq!(table.get(a).unwrap().remaining_ms, 3_000);
        assert_eq!(table.get(b).unwrap().remaining_ms, 4_000);
        assert_eq!(
            table.by_remaining().collect::<Vec<_>>(),
            vec![(3_000, a), (4_000, b)]
        );
        assert_eq!(table.keep_alive(a).unwrap().remaining_ms, 10_000);
        assert_eq!(
            table.by_remaining().collect::<Vec<_>>(),
            vec![(4_000, b), (10_000, a)]
        );
        assert_eq!(table.keep_alive(3), Err(LeaseError::NotFound(3)));
    }

    // An expiry is applied only to the record whose deadline the leader computed; a
    // keep-alive in between saves the lease.
    #[test]
    fn an_expiry_after_a_keep_alive_is_skipped() {
        let mut table = LeaseTable::default();
        table.grant(1, 10_000, 1, &limits()).unwrap();
        table.checkpoint(&[(1, 2_000)]);
        assert_eq!(
            table.get(1).unwrap().renewals,
            1,
            "a checkpoint renews nothing"
        );
        table.keep_alive(1).unwrap();
        assert!(!table.expire(1, 1, 5, &limits()));
        assert!(table.get(1).is_some());
        assert!(table.expire(1, 2, 6, &limits()));
        assert!(table.get(1).is_none());
        assert!(!table.expire(1, 2, 7, &limits()));
    }

    // The revocation log keeps its last entries and says when a reader fell behind it.
    #[test]
    fn the_revocation_log_is_bounded_and_says_when_it_cannot_answer() {
        let mut table = LeaseTable::default();
        for id in 1..=3 {
            table.grant(id, 1_000, id, &limits()).unwrap();
        }
        for id in 1..=3 {
            table.revoke(id, 10 + id, &limits()).unwrap();
        }
        assert_eq!(table.last_position(), 3);
        let leases = |after| {
            table
                .revocations_after(after, 10)
                .map(|list| list.iter().map(|r| r.lease).collect::<Vec<_>>())
        };
        assert_eq!(leases(0), None);
        assert_eq!(leases(1), Some(vec![2, 3]));
        assert_eq!(leases(2), Some(vec![3]));
        assert_eq!(leases(3), Some(vec![]));
        assert_eq!(table.revocations_after(1, 1).unwrap().len(), 1);
    }

    // A group applies each revocation once, in order, keeps its tombstone for the
    // retention time (in revision milliseconds) and at most the bound.
    #[test]
    fn applied_revocations_keep_tombstones_for_a_bounded_time() {
        let mut applied = AppliedRevocations::default();
        let at = |ms: u64| ms << 16;
        assert_eq!(
            applied.apply(&[(1, 10), (2, 20)], at(0), &limits()),
            [10, 20]
        );
        assert_eq!(applied.apply(&[(2, 20), (3, 30)], at(10), &limits()), [30]);
        assert_eq!(applied.watermark(), 3);
        // Two retained at most: the oldest tombstone went.
        assert!(!applied.is_tombstone(10));
        assert!(applied.is_tombstone(20) && applied.is_tombstone(30));
        assert_eq!(applied.apply(&[], at(1_005), &limits()), Vec::<u64>::new());
        assert!(!applied.is_tombstone(20), "older than the retention");
        assert!(applied.is_tombstone(30));
        applied.clear(30);
        assert_eq!(applied.tombstone_count(), 0);
    }

    // Every lease op round-trips through its encoding; damaged bytes are refused.
    #[test]
    fn lease_ops_round_trip() {
        let ops = [
            LeaseOp::Grant { id: 0, ttl_ms: 5 },
            LeaseOp::Revoke { id: u64::MAX },
            LeaseOp::KeepAlive { id: 3 },
            LeaseOp::TimeToLive { id: 4, keys: true },
            LeaseOp::List { after: 9 },
            LeaseOp::Expire { id: 5, renewals: 6 },
            LeaseOp::Checkpoint {
                leases: vec![(1, 2), (3, 4)],
            },
            LeaseOp::RevokeLocal {
                revocations: vec![(7, 8)],
            },
        ];
        for op in ops {
            let mut writer = Writer::with_capacity(64);
            op.encode(&mut writer);
            let bytes = writer.into_bytes();
            let mut reader = Reader::new(&bytes);
            assert_eq!(LeaseOp::decode(&mut reader), Ok(op.clone()));
            reader.finish().unwrap();
            for length in 0..bytes.len() {
                let mut reader = Reader::new(&bytes[..length]);
                assert!(LeaseOp::decode(&mut reader).is_err(), "{op:?} {length}");
            }
        }
    }
}
