//! The bounds on keys, values, transactions, commands, responses and sessions, the typed
//! errors of the kv layer, and the validation that both the proposer and the state
//! machine run on every command.

use thiserror::Error;

use super::command::{
    Command, Compare, CompareTarget, DeleteRequest, Op, RangeRequest, TxnOp, COMMAND_HEADER_BYTES,
    RANGE_END_UNBOUNDED,
};
use super::lease::LeaseError;
use super::response::KeyValue;

/// Default bound on a key (and on a range end): 4 KiB.
pub const KEY_BYTES_MAX_DEFAULT: u64 = 4 * 1024;
/// Default bound on a value, including the value an Append produces: 1 MiB.
pub const VALUE_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Default bound on each of a transaction's compare, success and failure lists (etcd's).
pub const TXN_OPS_MAX_DEFAULT: u64 = 128;
/// Default bound on an encoded command: room for one maximal Put with its key.
pub const COMMAND_BYTES_MAX_DEFAULT: u64 = 2 * 1024 * 1024;
/// Default bound on the key-values one response carries, counted in encoded bytes.
pub const RESPONSE_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
/// Default bound on the number of client sessions a group remembers.
pub const SESSIONS_MAX_DEFAULT: u64 = 100_000;
/// Default bound on the encoded bytes of all cached session responses together.
pub const SESSION_CACHE_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default bound on a group's history (superseded versions, counted as
/// `kv::history::VERSION_OVERHEAD_BYTES` plus key and value each): past it the oldest
/// versions are compacted away. 64 groups of a node at this bound hold 2 GiB of history.
pub const HISTORY_BYTES_MAX_DEFAULT: u64 = 32 * 1024 * 1024;

/// Ceiling for every byte limit, so every length fits the `u32` fields of the encodings.
pub const LIMIT_BYTES_CEILING: u64 = 1 << 30;
/// Ceiling for `history_bytes_max` (it counts memory, not an encoded length).
pub const HISTORY_BYTES_CEILING: u64 = 1 << 40;
/// Ceiling for `txn_ops_max`.
pub const TXN_OPS_CEILING: u64 = 1 << 16;
/// Ceiling for `sessions_max`.
pub const SESSIONS_CEILING: u64 = 1 << 32;

/// Encoded size of a Put command around its key and value: version, client id, seq, op
/// tag, two lengths, lease, flags.
const PUT_COMMAND_OVERHEAD_BYTES: u64 = 1 + 8 + 8 + 1 + 4 + 4 + 8 + 1;

/// Every bound the state machine enforces. The limits are part of the replicated state
/// (they are in snapshots) because replicas that enforced different limits would
/// diverge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: u64,
    pub value_bytes_max: u64,
    /// Bound on each of a Txn's compares, success ops and failure ops.
    pub txn_ops_max: u64,
    pub command_bytes_max: u64,
    /// Bound on the encoded key-values of one response, summed over a Txn's ops. A Range
    /// stops early (with `more`) at the bound; a Put or Delete whose previous key-values
    /// would cross it fails with [`KvError::ResponseTooLarge`] and changes nothing.
    pub response_bytes_max: u64,
    pub sessions_max: u64,
    pub session_cache_bytes_max: u64,
    /// Bound on the history's bytes; the oldest versions are compacted away past it.
    pub history_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            txn_ops_max: TXN_OPS_MAX_DEFAULT,
            command_bytes_max: COMMAND_BYTES_MAX_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            session_cache_bytes_max: SESSION_CACHE_BYTES_MAX_DEFAULT,
            history_bytes_max: HISTORY_BYTES_MAX_DEFAULT,
        }
    }
}

const _: () = assert!(
    COMMAND_BYTES_MAX_DEFAULT
        >= PUT_COMMAND_OVERHEAD_BYTES + KEY_BYTES_MAX_DEFAULT + VALUE_BYTES_MAX_DEFAULT
);
const _: () = assert!(
    RESPONSE_BYTES_MAX_DEFAULT
        >= KeyValue::ENCODED_BYTES_FIXED as u64 + KEY_BYTES_MAX_DEFAULT + VALUE_BYTES_MAX_DEFAULT
);

/// A set of limits that cannot work together.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid kv limits: {reason}")]
pub struct LimitsError {
    pub reason: &'static str,
}

impl Limits {
    /// Checks that the limits are usable: nothing is zero, nothing exceeds the encodings'
    /// ceilings, the largest Put fits in a command and the largest key-value fits in a
    /// response (so a Range always makes progress).
    pub fn check(&self) -> Result<(), LimitsError> {
        let fail = |reason| Err(LimitsError { reason });
        if self.key_bytes_max == 0 || self.key_bytes_max > LIMIT_BYTES_CEILING {
            return fail("key_bytes_max must be in 1..=2^30");
        }
        if self.value_bytes_max > LIMIT_BYTES_CEILING {
            return fail("value_bytes_max must be at most 2^30");
        }
        if self.txn_ops_max == 0 || self.txn_ops_max > TXN_OPS_CEILING {
            return fail("txn_ops_max must be in 1..=2^16");
        }
        if self.command_bytes_max > LIMIT_BYTES_CEILING
            || self.command_bytes_max
                < PUT_COMMAND_OVERHEAD_BYTES + self.key_bytes_max + self.value_bytes_max
        {
            return fail("command_bytes_max must hold the largest Put and be at most 2^30");
        }
        if self.response_bytes_max > LIMIT_BYTES_CEILING
            || self.response_bytes_max
                < KeyValue::ENCODED_BYTES_FIXED as u64 + self.key_bytes_max + self.value_bytes_max
        {
            return fail("response_bytes_max must hold the largest key-value and be at most 2^30");
        }
        if self.sessions_max == 0 || self.sessions_max > SESSIONS_CEILING {
            return fail("sessions_max must be in 1..=2^32");
        }
        if self.session_cache_bytes_max > LIMIT_BYTES_CEILING {
            return fail("session_cache_bytes_max must be at most 2^30");
        }
        if self.history_bytes_max > HISTORY_BYTES_CEILING {
            return fail("history_bytes_max must be at most 2^40");
        }
        Ok(())
    }
}

/// Why a command was refused. Every refusal is deterministic, so every replica gives the
/// same answer for the same entry.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KvError {
    #[error("empty key")]
    EmptyKey,
    #[error("key of {key_bytes} bytes exceeds {key_bytes_max}")]
    KeyTooLarge { key_bytes: u64, key_bytes_max: u64 },
    #[error("value of {value_bytes} bytes exceeds {value_bytes_max}")]
    ValueTooLarge {
        value_bytes: u64,
        value_bytes_max: u64,
    },
    #[error("transaction list of {ops} entries exceeds {txn_ops_max}")]
    TooManyTxnOps { ops: u64, txn_ops_max: u64 },
    #[error("range end sorts before the key")]
    InvalidRange,
    #[error("command of {command_bytes} bytes exceeds {command_bytes_max}")]
    CommandTooLarge {
        command_bytes: u64,
        command_bytes_max: u64,
    },
    #[error("previous key-values would exceed the response bound of {response_bytes_max} bytes")]
    ResponseTooLarge { response_bytes_max: u64 },
    #[error("only Range and read-only Txn can be served outside the log")]
    NotReadOnly,
    #[error("a range inside a transaction reads the transaction's state: it takes no revision")]
    RevisionInTxn,
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A read at a revision whose history a compaction dropped.
    #[error("revision {revision} is compacted: the oldest available is {compact_revision}")]
    Compacted {
        revision: u64,
        compact_revision: u64,
    },
    /// A read at a revision the group has not closed yet: its state may still change.
    #[error("revision {revision} is not closed yet (closed through {closed_revision})")]
    FutureRevision { revision: u64, closed_revision: u64 },
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// Why a command with a session was not applied (see [`crate::kv::session`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SessionError {
    /// The client already had a later command applied; this one is a delayed duplicate.
    #[error("client {client_id} seq {seq} is older than its last applied seq {last_seq}")]
    Stale {
        client_id: u64,
        seq: u64,
        last_seq: u64,
    },
    /// The group has no session for the client (never opened with seq 1, or evicted), so
    /// it cannot tell whether this command was applied before. The client must start a
    /// new session under a new client id; the outcome of this request is unknown.
    #[error("no session for client {client_id} at seq {seq}: open one with seq 1")]
    Expired { client_id: u64, seq: u64 },
}

/// Checks a command against the limits, without looking at the store. The proposer calls
/// it before proposing; the state machine calls it again on every committed entry,
/// because entries may come from a replica with a different build.
pub fn validate(command: &Command, limits: &Limits) -> Result<(), KvError> {
    validate_op(&command.op, limits)
}

/// Checks the op of a read served outside the log.
pub(crate) fn validate_read(op: &Op, limits: &Limits) -> Result<(), KvError> {
    if !op.is_read_only() {
        return Err(KvError::NotReadOnly);
    }
    validate_op(op, limits)
}

/// Checks an op and the size of a command that would carry it.
fn validate_op(op: &Op, limits: &Limits) -> Result<(), KvError> {
    match op {
        Op::Range(range) => validate_range(range, limits)?,
        Op::Put(put) => {
            validate_key(&put.key, limits)?;
            validate_value(&put.value, limits)?;
        }
        Op::Delete(delete) => validate_delete(delete, limits)?,
        Op::Append(append) => {
            validate_key(&append.key, limits)?;
            validate_value(&append.value, limits)?;
        }
        Op::Txn(txn) => {
            for list_length in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
                if list_length as u64 > limits.txn_ops_max {
                    return Err(KvError::TooManyTxnOps {
                        ops: list_length as u64,
                        txn_ops_max: limits.txn_ops_max,
                    });
                }
            }
            for compare in &txn.compares {
                validate_compare(compare, limits)?;
            }
            for op in txn.success.iter().chain(&txn.failure) {
                validate_txn_op(op, limits)?;
            }
        }
    }
    let command_bytes = (COMMAND_HEADER_BYTES + op.encoded_len()) as u64;
    if command_bytes > limits.command_bytes_max {
        return Err(KvError::CommandTooLarge {
            command_bytes,
            command_bytes_max: limits.command_bytes_max,
        });
    }
    Ok(())
}

fn validate_txn_op(op: &TxnOp, limits: &Limits) -> Result<(), KvError> {
    match op {
        TxnOp::Range(range) if range.revision != 0 => Err(KvError::RevisionInTxn),
        TxnOp::Range(range) => validate_range(range, limits),
        TxnOp::Put(put) => {
            validate_key(&put.key, limits)?;
            validate_value(&put.value, limits)
        }
        TxnOp::Delete(delete) => validate_delete(delete, limits),
        TxnOp::Append(append) => {
            validate_key(&append.key, limits)?;
            validate_value(&append.value, limits)
        }
    }
}

fn validate_key(key: &[u8], limits: &Limits) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() as u64 > limits.key_bytes_max {
        return Err(KvError::KeyTooLarge {
            key_bytes: key.len() as u64,
            key_bytes_max: limits.key_bytes_max,
        });
    }
    Ok(())
}

fn validate_value(value: &[u8], limits: &Limits) -> Result<(), KvError> {
    if value.len() as u64 > limits.value_bytes_max {
        return Err(KvError::ValueTooLarge {
            value_bytes: value.len() as u64,
            value_bytes_max: limits.value_bytes_max,
        });
    }
    Ok(())
}

/// A key with an optional range end: the end is bounded like a key, and must not sort
/// before the key unless it is the unbounded marker.
fn validate_key_range(key: &[u8], range_end: &[u8], limits: &Limits) -> Result<(), KvError> {
    validate_key(key, limits)?;
    if range_end.len() as u64 > limits.key_bytes_max {
        return Err(KvError::KeyTooLarge {
            key_bytes: range_end.len() as u64,
            key_bytes_max: limits.key_bytes_max,
        });
    }
    if !range_end.is_empty() && range_end != RANGE_END_UNBOUNDED && range_end < key {
        return Err(KvError::InvalidRange);
    }
    Ok(())
}

fn validate_range(range: &RangeRequest, limits: &Limits) -> Result<(), KvError> {
    validate_key_range(&range.key, &range.range_end, limits)
}

fn validate_delete(delete: &DeleteRequest, limits: &Limits) -> Result<(), KvError> {
    validate_key_range(&delete.key, &delete.range_end, limits)
}

fn validate_compare(compare: &Compare, limits: &Limits) -> Result<(), KvError> {
    validate_key(&compare.key, limits)?;
    if let CompareTarget::Value(value) = &compare.target {
        validate_value(value, limits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::command::{AppendRequest, PutRequest, TxnRequest};

    fn command(op: Op) -> Command {
        Command {
            client_id: 0,
            seq: 0,
            op,
        }
    }

    fn put(key: &[u8], value_bytes: usize) -> Op {
        Op::Put(PutRequest {
            key: key.to_vec(),
            value: vec![b'v'; value_bytes],
            ..PutRequest::default()
        })
    }

    // The default limits pass their own check, and broken ones are named.
    #[test]
    fn default_limits_are_sound() {
        assert_eq!(Limits::default().check(), Ok(()));
        let broken = Limits {
            response_bytes_max: 10,
            ..Limits::default()
        };
        assert!(broken.check().is_err());
        let broken = Limits {
            sessions_max: 0,
            ..Limits::default()
        };
        assert!(broken.check().is_err());
        let broken = Limits {
            command_bytes_max: 1024,
            ..Limits::default()
        };
        assert!(broken.check().is_err());
    }

    // Each limit yields its own typed error, exactly at the boundary.
    #[test]
    fn limits_are_enforced_at_their_boundaries() {
        let limits = Limits::default();
        let key_max = limits.key_bytes_max as usize;
        let value_max = limits.value_bytes_max as usize;
        assert_eq!(
            validate(&command(put(b"", 1)), &limits),
            Err(KvError::EmptyKey)
        );
        assert_eq!(
            validate(&command(put(&vec![b'k'; key_max], 1)), &limits),
            Ok(())
        );
        assert_eq!(
            validate(&command(put(&vec![b'k'; key_max + 1], 1)), &limits),
            Err(KvError::KeyTooLarge {
                key_bytes: 4097,
                key_bytes_max: 4096
            })
        );
        assert_eq!(validate(&command(put(b"k", value_max)), &limits), Ok(()));
        assert_eq!(
            validate(&command(put(b"k", value_max + 1)), &limits),
            Err(KvError::ValueTooLarge {
                value_bytes: 1_048_577,
                value_bytes_max: 1_048_576
            })
        );
        let append = Op::Append(AppendRequest {
            key: b"k".to_vec(),
            value: vec![0; value_max + 1],
        });
        assert!(matches!(
            validate(&command(append), &limits),
            Err(KvError::ValueTooLarge { .. })
        ));
    }

    // A txn may hold 128 ops per list; 129 in any list is refused.
    #[test]
    fn txn_op_count_is_bounded() {
        let limits = Limits::default();
        let ops = |count: usize| -> Vec<TxnOp> {
            (0..count)
                .map(|_| TxnOp::Range(RangeRequest::get(b"k")))
                .collect()
        };
        let txn = |success, failure| {
            command(Op::Txn(TxnRequest {
                compares: vec![],
                success,
                failure,
            }))
        };
        assert_eq!(validate(&txn(ops(128), ops(128)), &limits), Ok(()));
        assert_eq!(
            validate(&txn(ops(0), ops(129)), &limits),
            Err(KvError::TooManyTxnOps {
                ops: 129,
                txn_ops_max: 128
            })
        );
        let compares = (0..129)
            .map(|_| Compare {
                key: b"k".to_vec(),
                target: CompareTarget::Version(0),
                result: crate::kv::command::CompareResult::Equal,
            })
            .collect();
        let too_many_compares = command(Op::Txn(TxnRequest {
            compares,
            success: vec![],
            failure: vec![],
        }));
        assert!(matches!(
            validate(&too_many_compares, &limits),
            Err(KvError::TooManyTxnOps { .. })
        ));
    }

    // A range end below the key is invalid, except the unbounded marker; equal is empty.
    #[test]
    fn range_end_order_is_checked() {
        let limits = Limits::default();
        let range = |key: &[u8], end: &[u8]| {
            command(Op::Range(RangeRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                ..RangeRequest::default()
            }))
        };
        assert_eq!(
            validate(&range(b"b", b"a"), &limits),
            Err(KvError::InvalidRange)
        );
        assert_eq!(validate(&range(b"b", b"b"), &limits), Ok(()));
        assert_eq!(validate(&range(b"b", b"\0"), &limits), Ok(()));
        assert_eq!(validate(&range(b"b", b""), &limits), Ok(()));
        assert_eq!(validate(&range(b"", b"b"), &limits), Err(KvError::EmptyKey));
        let delete = command(Op::Delete(DeleteRequest {
            key: b"z".to_vec(),
            range_end: b"y".to_vec(),
            prev_kv: false,
        }));
        assert_eq!(validate(&delete, &limits), Err(KvError::InvalidRange));
    }

    // A txn of valid puts that together exceed the command bound is refused.
    #[test]
    fn command_size_is_bounded() {
        let limits = Limits::default();
        let big_put = TxnOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![0; limits.value_bytes_max as usize],
            ..PutRequest::default()
        });
        let txn = Op::Txn(TxnRequest {
            compares: vec![],
            success: vec![big_put.clone(), big_put],
            failure: vec![],
        });
        assert!(matches!(
            validate(&command(txn), &limits),
            Err(KvError::CommandTooLarge { .. })
        ));
    }
}
