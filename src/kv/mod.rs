//! The key-value state machine of one Raft group: apply, revisions, sessions, snapshots.
//!
//! The model is etcd v3 per group: Range, Put, DeleteRange and Txn with compares on
//! value, version, create and mod revision, plus Append. The state machine is pure: no
//! I/O, no clock, no glommio. It is driven by committed entries in log order and is
//! deterministic: the same entries give the same answers and byte-identical snapshots
//! on every replica.
//!
//! - [`command`]: commands and their log encoding.
//! - [`response`]: answers and their encoding.
//! - [`limits`]: the bounds, the errors, and [`validate`].
//! - [`store`]: [`Store`], the state machine; its docs define revisions and closed
//!   revisions.
//! - [`history`]: the superseded versions behind reads at a past revision, and compaction.
//! - [`changes`]: the changes of a range between two revisions, read from the history
//!   (what watches send).
//! - [`lease`]: leases as replicated state: the lease group's table and revocation log,
//!   each group's applied revocations, the lease ops and their bounds (`docs/LEASES.md`);
//!   `store_leases.rs` applies them to a [`Store`].
//! - [`entry`]: what a log entry carries for the state machine: a write stamped with its
//!   revision, a close promise, or a compaction.
//! - `keys`: the keyspace behind [`Store`], a hash index for point operations beside an
//!   ordered set of the same keys for ranges and snapshots.
//! - [`session`]: exactly-once application of retried commands; its docs state the rules.
//! - [`snapshot`]: [`Store::snapshot`] and [`Store::restore`].
//!
//! The byte layouts are in `docs/FORMATS.md`.

pub mod changes;
pub mod command;
pub mod entry;
pub mod history;
mod keys;
pub mod lease;
pub mod limits;
pub mod response;
pub mod session;
pub mod snapshot;
pub mod store;
mod wire;

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod store_tests;

pub use command::{
    prefix_end, AppendRequest, Command, Compare, CompareResult, CompareTarget, DeleteRequest, Op,
    OpKey, PutRequest, RangeRequest, TxnOp, TxnRequest, RANGE_END_UNBOUNDED,
};
pub use entry::LogEntry;
pub use lease::{LeaseError, LeaseLimits, LeaseOp, LeaseResponse, LEASE_GROUP};
pub use limits::{validate, KvError, Limits, LimitsError, SessionError};
pub use response::{
    decode_outcome, encode_outcome, AppendResponse, CompactResponse, DeleteResponse, KeyValue,
    OpResponse, Outcome, PutResponse, RangeResponse, Response, TxnOpResponse, TxnResponse,
};
pub use snapshot::SnapshotError;
pub use store::Store;
pub use wire::DecodeError;
