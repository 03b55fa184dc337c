//! The corekv side of a planned operation: the request that carries it, and the check
//! of every answer. An answer counts only when it is what the operation must return: a
//! put's answer is a put's, a get returns a value that some write of that key stores
//! (see `keys.rs`), a scan returns keys of its range in order with their values, an
//! append reports a value at least as long as what it appended, and a read-modify-write
//! either wrote or lost the race to another writer. Anything else is an error of a
//! named kind, never throughput.

use crate::client::ClientError;
use crate::kv::{self, OpResponse, RangeRequest};

use super::keys::{KeyFormat, ValueFormat};
use super::recorder::Outcome;
use super::workload::{OpKind, Planned};

/// Kinds of failed checks, as the report names them.
pub const CHECK_MISSING: &str = "check: missing key";
pub const CHECK_WRONG_VALUE: &str = "check: wrong value";
pub const CHECK_WRONG_ANSWER: &str = "check: wrong answer";
pub const CHECK_SHORT_SCAN: &str = "check: short scan";

/// The kind of an SDK error, as the report counts it.
pub fn client_error_kind(error: &ClientError) -> String {
    match error {
        ClientError::InvalidArgument(_) => "invalid argument".to_string(),
        ClientError::Unavailable { .. } => "unavailable".to_string(),
        ClientError::Timeout { .. } => "timeout".to_string(),
        ClientError::OutcomeUnknown { .. } => "outcome unknown".to_string(),
        ClientError::Rejected { code, .. } => format!("rejected: {code}"),
        ClientError::RequestTooLarge { .. } => "request too large".to_string(),
        ClientError::Protocol(_) => "protocol".to_string(),
    }
}

/// Where a multi-step operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The first request is out.
    First,
    /// A read-modify-write's transaction is out.
    Transaction,
}

/// What an answer means for its operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The operation is done, correctly.
    Done(Outcome),
    /// The operation goes on with this request (a read-modify-write's transaction).
    Then(kv::Op),
    /// The operation failed: a kind and a message.
    Failed { kind: String, message: String },
}

/// The requests and checks of one run.
#[derive(Clone, Debug)]
pub struct CorekvOps {
    pub keys: KeyFormat,
    /// Appends go to keys of their own, so that appended values never meet a get.
    pub append_keys: KeyFormat,
    pub values: ValueFormat,
    pub serializable: bool,
    /// Keys `0..filled` were written before the run: a linearizable read must find them.
    pub filled: u64,
    /// Keys at and past this index are inserts; a read of one is a read of a key this
    /// thread saw inserted.
    pub first_insert: u64,
}

fn failed(kind: &str, message: String) -> Checked {
    Checked::Failed {
        kind: kind.to_string(),
        message,
    }
}

impl CorekvOps {
    /// The requests and checks of a run over `keys` keys named `prefix` + index (padded
    /// to `key_bytes`), with `value_bytes` values; `filled` says whether keys `0..keys`
    /// were written before the run.
    pub fn new(
        prefix: &[u8],
        key_bytes: usize,
        value_bytes: usize,
        serializable: bool,
        keys: u64,
        filled: bool,
    ) -> CorekvOps {
        let keys_format = KeyFormat::new(prefix, key_bytes);
        CorekvOps {
            append_keys: keys_format.namespace(b"append-"),
            keys: keys_format,
            values: ValueFormat { value_bytes },
            serializable,
            filled: if filled { keys } else { 0 },
            first_insert: keys,
        }
    }

    fn name(&self, index: u64) -> String {
        String::from_utf8_lossy(&self.keys.key(index)).into_owned()
    }

    /// The first request of `planned`; `stamp` marks the value it writes.
    pub fn request(&self, planned: &Planned, stamp: u64) -> (kv::Op, bool) {
        let key = self.keys.key(planned.index);
        match planned.kind {
            OpKind::Get => (kv::Op::Range(RangeRequest::get(&key)), self.serializable),
            // A read-modify-write reads linearizably: a stale read could only lose the
            // compare.
            OpKind::ReadModifyWrite => (kv::Op::Range(RangeRequest::get(&key)), false),
            OpKind::Put | OpKind::Insert => (
                kv::Op::Put(kv::PutRequest {
                    key,
                    value: self.values.value(planned.index, stamp),
                    ..kv::PutRequest::default()
                }),
                false,
            ),
            OpKind::Scan => {
                let range = RangeRequest {
                    key,
                    range_end: self.keys.key(planned.index + planned.length),
                    limit: planned.length,
                    ..RangeRequest::default()
                };
                (kv::Op::Range(range), self.serializable)
            }
            OpKind::Append => (
                kv::Op::Append(kv::AppendRequest {
                    key: self.append_keys.key(planned.index),
                    value: self.values.value(planned.index, stamp),
                }),
                false,
            ),
        }
    }

    /// True when a read of key `index` must find it.
    fn must_exist(&self, index: u64, serializable: bool) -> bool {
        !serializable && (index < self.filled || index >= self.first_insert)
    }

    /// Checks the answer to `planned` at `stage`; `stamp` marks what a follow-up writes.
    pub fn check(
        &self,
        planned: &Planned,
        stage: &mut Stage,
        stamp: u64,
        result: Result<kv::Response, ClientError>,
    ) -> Checked {
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return Checked::Failed {
                    kind: client_error_kind(&error),
                    message: error.to_string(),
                }
            }
        };
        match (planned.kind, *stage, response.op) {
            (OpKind::Put | OpKind::Insert, _, OpResponse::Put(_)) => Checked::Done(Outcome::Ok),
            (OpKind::Get, _, OpResponse::Range(range)) => {
                match self.check_one(planned.index, &range, self.serializable) {
                    Ok(Some(_)) => Checked::Done(Outcome::Ok),
                    Ok(None) => Checked::Done(Outcome::NotFound),
                    Err(checked) => checked,
                }
            }
            (OpKind::Scan, _, OpResponse::Range(range)) => self.check_scan(planned, &range),
            (OpKind::Append, _, OpResponse::Append(append)) => {
                if append.value_bytes >= self.values.value_bytes as u64 {
                    Checked::Done(Outcome::Ok)
                } else {
                    failed(
                        CHECK_WRONG_ANSWER,
                        format!(
                            "an append of {} bytes left a value of {}",
                            self.values.value_bytes, append.value_bytes
                        ),
                    )
                }
            }
            (OpKind::ReadModifyWrite, Stage::First, OpResponse::Range(range)) => {
                let revision = match self.check_one(planned.index, &range, false) {
                    Ok(found) => found.unwrap_or(0),
                    Err(checked) => return checked,
                };
                *stage = Stage::Transaction;
                Checked::Then(self.cas(planned.index, revision, stamp))
            }
            (OpKind::ReadModifyWrite, Stage::Transaction, OpResponse::Txn(txn)) => {
                match (txn.succeeded, txn.responses.as_slice()) {
                    (true, [kv::TxnOpResponse::Put(_)]) => Checked::Done(Outcome::Ok),
                    (false, [kv::TxnOpResponse::Range(range)]) => {
                        match self.check_one(planned.index, range, false) {
                            Ok(_) => Checked::Done(Outcome::Conflict),
                            Err(checked) => checked,
                        }
                    }
                    _ => failed(
                        CHECK_WRONG_ANSWER,
                        format!("{}: transaction answered {txn:?}", self.name(planned.index)),
                    ),
                }
            }
            (kind, _, other) => failed(
                CHECK_WRONG_ANSWER,
                format!(
                    "{}: a {} answered {other:?}",
                    self.name(planned.index),
                    kind.name()
                ),
            ),
        }
    }

    /// A transaction that writes key `index` only if its mod revision is still
    /// `revision` (0: still absent), and reads it otherwise.
    fn cas(&self, index: u64, revision: u64, stamp: u64) -> kv::Op {
        let key = self.keys.key(index);
        kv::Op::Txn(kv::TxnRequest {
            compares: vec![kv::Compare {
                key: key.clone(),
                target: kv::CompareTarget::ModRevision(revision),
                result: kv::CompareResult::Equal,
            }],
            success: vec![kv::TxnOp::Put(kv::PutRequest {
                key: key.clone(),
                value: self.values.value(index, stamp),
                ..kv::PutRequest::default()
            })],
            failure: vec![kv::TxnOp::Range(RangeRequest::get(&key))],
        })
    }

    /// Checks a read of key `index`: its mod revision when found, `None` when missing
    /// and allowed to be.
    fn check_one(
        &self,
        index: u64,
        range: &kv::RangeResponse,
        serializable: bool,
    ) -> Result<Option<u64>, Checked> {
        let key = self.keys.key(index);
        match range.kvs.as_slice() {
            [] if self.must_exist(index, serializable) => Err(failed(
                CHECK_MISSING,
                format!("{}: not found", self.name(index)),
            )),
            [] => Ok(None),
            [pair] if pair.key == key => match self.values.check(index, &pair.value) {
                Ok(()) => Ok(Some(pair.mod_revision)),
                Err(mismatch) => Err(failed(
                    CHECK_WRONG_VALUE,
                    format!("{}: {mismatch}", self.name(index)),
                )),
            },
            pairs => Err(failed(
                CHECK_WRONG_ANSWER,
                format!("{}: a get answered {} keys", self.name(index), pairs.len()),
            )),
        }
    }

    /// Checks a scan: keys in its range, ascending, each with a value of its key; every
    /// key that must exist in the range is there (not for serializable scans, which may
    /// be stale).
    fn check_scan(&self, planned: &Planned, range: &kv::RangeResponse) -> Checked {
        let end = planned.index + planned.length;
        let mut previous = None;
        for pair in &range.kvs {
            let Some(index) = self.keys.index_of(&pair.key) else {
                return failed(
                    CHECK_WRONG_ANSWER,
                    format!(
                        "a scan from {} returned the foreign key {:?}",
                        self.name(planned.index),
                        String::from_utf8_lossy(&pair.key)
                    ),
                );
            };
            if index < planned.index || index >= end || previous.is_some_and(|p| p >= index) {
                return failed(
                    CHECK_WRONG_ANSWER,
                    format!(
                        "a scan of {}..{end} returned {index} out of range or order",
                        planned.index
                    ),
                );
            }
            previous = Some(index);
            if let Err(mismatch) = self.values.check(index, &pair.value) {
                return failed(
                    CHECK_WRONG_VALUE,
                    format!("{}: {mismatch}", self.name(index)),
                );
            }
        }
        let must = if self.serializable {
            0
        } else {
            end.min(self.filled).saturating_sub(planned.index)
        };
        if (range.kvs.len() as u64) < must {
            return failed(
                CHECK_SHORT_SCAN,
                format!(
                    "a scan of {}..{end} returned {} keys, {must} exist",
                    planned.index,
                    range.kvs.len()
                ),
            );
        }
        Checked::Done(Outcome::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KeyValue;

    fn ops() -> CorekvOps {
        let keys = KeyFormat::new(b"t-", 0);
        CorekvOps {
            append_keys: keys.namespace(b"a-"),
            keys,
            values: ValueFormat { value_bytes: 40 },
            serializable: false,
            filled: 10,
            first_insert: 100,
        }
    }

    fn pair(ops: &CorekvOps, index: u64, stamp: u64) -> KeyValue {
        KeyValue {
            key: ops.keys.key(index),
            value: ops.values.value(index, stamp),
            create_revision: 1,
            mod_revision: 7,
            version: 1,
            lease: 0,
        }
    }

    fn range(kvs: Vec<KeyValue>) -> Result<kv::Response, ClientError> {
        let count = kvs.len() as u64;
        Ok(kv::Response {
            revision: 9,
            op: OpResponse::Range(kv::RangeResponse {
                kvs,
                count,
                more: false,
            }),
        })
    }

    fn kind(checked: &Checked) -> &str {
        match checked {
            Checked::Failed { kind, .. } => kind,
            _ => "",
        }
    }

    // A get passes with a value of its key, and fails on a missing filled key, on
    // another key's value and on an answer of the wrong type.
    #[test]
    fn gets_are_checked() {
        let ops = ops();
        let get = Planned {
            kind: OpKind::Get,
            index: 3,
            length: 1,
        };
        let check = |result| ops.check(&get, &mut Stage::First, 0, result);
        assert_eq!(
            check(range(vec![pair(&ops, 3, 5)])),
            Checked::Done(Outcome::Ok)
        );
        assert_eq!(kind(&check(range(vec![]))), CHECK_MISSING);
        let mut foreign = pair(&ops, 3, 0);
        foreign.value = ops.values.value(4, 0);
        assert_eq!(kind(&check(range(vec![foreign]))), CHECK_WRONG_VALUE);
        let put = Ok(kv::Response {
            revision: 1,
            op: OpResponse::Put(kv::PutResponse::default()),
        });
        assert_eq!(kind(&check(put)), CHECK_WRONG_ANSWER);
        let refused = Err(ClientError::Rejected {
            code: crate::api::ErrorCode::KeyTooLarge,
            message: "too large".to_string(),
        });
        assert_eq!(kind(&check(refused)), "rejected: KeyTooLarge");
        // Past the fill and before the inserts nobody wrote the key: a miss is allowed.
        let unwritten = Planned { index: 50, ..get };
        assert_eq!(
            ops.check(&unwritten, &mut Stage::First, 0, range(vec![])),
            Checked::Done(Outcome::NotFound)
        );
    }

    // A scan must return the filled keys of its range, in order, and nothing outside.
    #[test]
    fn scans_are_checked() {
        let ops = ops();
        let scan = Planned {
            kind: OpKind::Scan,
            index: 8,
            length: 4,
        };
        let check = |kvs| ops.check(&scan, &mut Stage::First, 0, range(kvs));
        let full = vec![pair(&ops, 8, 0), pair(&ops, 9, 0)];
        assert_eq!(check(full), Checked::Done(Outcome::Ok));
        assert_eq!(kind(&check(vec![pair(&ops, 8, 0)])), CHECK_SHORT_SCAN);
        let backwards = vec![pair(&ops, 9, 0), pair(&ops, 8, 0)];
        assert_eq!(kind(&check(backwards)), CHECK_WRONG_ANSWER);
        let outside = vec![pair(&ops, 8, 0), pair(&ops, 9, 0), pair(&ops, 12, 0)];
        assert_eq!(kind(&check(outside)), CHECK_WRONG_ANSWER);
    }

    // A read-modify-write reads, then sends a compare-and-set on the revision it read;
    // a lost race is a conflict, a won one a success.
    #[test]
    fn read_modify_write_is_a_cas() {
        let ops = ops();
        let rmw = Planned {
            kind: OpKind::ReadModifyWrite,
            index: 2,
            length: 1,
        };
        let mut stage = Stage::First;
        let Checked::Then(kv::Op::Txn(txn)) =
            ops.check(&rmw, &mut stage, 11, range(vec![pair(&ops, 2, 0)]))
        else {
            panic!("a read-modify-write goes on with a transaction");
        };
        assert_eq!(stage, Stage::Transaction);
        assert_eq!(txn.compares[0].target, kv::CompareTarget::ModRevision(7));
        let answer = |succeeded, responses| {
            Ok(kv::Response {
                revision: 10,
                op: OpResponse::Txn(kv::TxnResponse {
                    succeeded,
                    responses,
                }),
            })
        };
        let won = answer(
            true,
            vec![kv::TxnOpResponse::Put(kv::PutResponse::default())],
        );
        assert_eq!(
            ops.check(&rmw, &mut stage, 11, won),
            Checked::Done(Outcome::Ok)
        );
        let lost_read = kv::RangeResponse {
            kvs: vec![pair(&ops, 2, 3)],
            count: 1,
            more: false,
        };
        let lost = answer(false, vec![kv::TxnOpResponse::Range(lost_read)]);
        assert_eq!(
            ops.check(&rmw, &mut stage, 11, lost),
            Checked::Done(Outcome::Conflict)
        );
    }
}
