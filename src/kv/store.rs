//! The state machine of one group: the ordered keyspace with etcd's per-key metadata,
//! applied entry by entry, plus reads served outside the log.
//!
//! # Revisions
//!
//! The group's revision is the Raft index of the last applied entry. Every applied entry
//! moves it to its index, whatever it carries: writes, reads, refused commands, no-ops
//! and configuration changes alike. Unlike etcd, revisions therefore have gaps, but they
//! stay strictly increasing, a key's `mod_revision` is still the revision of its last
//! change, and a revision names a log position that every replica agrees on without
//! extra state. All ops of one Txn share its entry's revision.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::command::{
    AppendRequest, Command, Compare, CompareResult, CompareTarget, DeleteRequest, Op, PutRequest,
    RangeRequest, TxnOp, TxnRequest, RANGE_END_UNBOUNDED,
};
use super::limits::{validate, validate_read, KvError, Limits, LimitsError};
use super::response::{
    AppendResponse, DeleteResponse, KeyValue, OpResponse, Outcome, PutResponse, RangeResponse,
    Response, TxnOpResponse, TxnResponse,
};
use super::session::{CachedOutcome, SessionCheck, Sessions};

/// A stored value with etcd's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: u64,
    pub(crate) mod_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: u64,
}

impl Entry {
    fn key_value(&self, key: &[u8], keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if keys_only {
                Vec::new()
            } else {
                self.value.clone()
            },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    fn encoded_bytes(&self, key: &[u8], keys_only: bool) -> u64 {
        let value_bytes = if keys_only { 0 } else { self.value.len() };
        (KeyValue::ENCODED_BYTES_FIXED + key.len() + value_bytes) as u64
    }
}

/// The key-value state machine of one Raft group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    pub(crate) limits: Limits,
    pub(crate) applied_index: u64,
    pub(crate) keys: BTreeMap<Vec<u8>, Entry>,
    pub(crate) sessions: Sessions,
}

/// The bytes of key-values one command may still return.
#[derive(Debug)]
struct ResponseBudget {
    remaining_bytes: u64,
    response_bytes_max: u64,
}

impl ResponseBudget {
    fn new(limits: &Limits) -> ResponseBudget {
        ResponseBudget {
            remaining_bytes: limits.response_bytes_max,
            response_bytes_max: limits.response_bytes_max,
        }
    }

    fn charge(&mut self, bytes: u64) -> Result<(), KvError> {
        if bytes > self.remaining_bytes {
            return Err(KvError::ResponseTooLarge {
                response_bytes_max: self.response_bytes_max,
            });
        }
        self.remaining_bytes -= bytes;
        Ok(())
    }
}

/// How to take back one change of a Txn that has to be rolled back.
#[derive(Debug)]
enum UndoRecord {
    /// Put the key back as it was (absent when `None`).
    Restore { key: Vec<u8>, entry: Option<Entry> },
    /// Undo an Append to an existing key without copying its old value.
    Truncate {
        key: Vec<u8>,
        value_bytes: usize,
        mod_revision: u64,
        version: u64,
    },
}

impl Default for Store {
    fn default() -> Store {
        Store::with_checked_limits(Limits::default())
    }
}

impl Store {
    /// An empty store at revision 0 that enforces `limits`.
    pub fn new(limits: Limits) -> Result<Store, LimitsError> {
        limits.check()?;
        Ok(Store::with_checked_limits(limits))
    }

    fn with_checked_limits(limits: Limits) -> Store {
        Store {
            limits,
            applied_index: 0,
            keys: BTreeMap::new(),
            sessions: Sessions::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The group's revision: equal to the applied index (see the module docs).
    pub fn revision(&self) -> u64 {
        self.applied_index
    }

    /// How many keys the store holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// One key with its metadata, for tests and tools.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get(key).map(|entry| entry.key_value(key, false))
    }

    /// How many client sessions the store remembers.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The last applied seq of a client, if it has a session.
    pub fn session_last_seq(&self, client_id: u64) -> Option<u64> {
        self.sessions.get(client_id).map(|session| session.last_seq)
    }

    /// Marks an entry that carries no command (the leader's empty entry, a configuration
    /// change) as applied, so the revision follows the log.
    ///
    /// Panics if `index` is not above the applied index: applying out of order is a bug
    /// in the caller that would silently corrupt the replica.
    pub fn apply_noop(&mut self, index: u64) {
        self.advance(index);
    }

    /// Applies the command of the committed entry at `index` and answers it.
    ///
    /// The revision moves to `index` whatever the outcome. A command that the session
    /// rules refuse changes nothing else; one that fails validation or execution changes
    /// no key (its session, if it has one, caches the error as its answer). Bad commands
    /// are answered with errors; the only panic is an `index` that does not increase.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        self.advance(index);
        let session = command.session();
        if let Some((client_id, seq)) = session {
            match self.sessions.check(client_id, seq, index) {
                SessionCheck::Apply => {}
                SessionCheck::Cached(outcome) => return outcome,
                SessionCheck::Rerun => return self.read(&command.op),
                SessionCheck::Refused(error) => return Err(error.into()),
            }
        }
        let outcome = validate(command, &self.limits)
            .and_then(|()| self.execute(index, &command.op))
            .map(|op| Response {
                revision: index,
                op,
            });
        if let Some((client_id, seq)) = session {
            let cached = if command.op.is_read_only() {
                CachedOutcome::Rerun
            } else {
                CachedOutcome::Stored(outcome.clone())
            };
            self.sessions
                .record(client_id, seq, index, cached, &self.limits);
        }
        outcome
    }

    /// Serves a Range, or a Txn of only Ranges, at the current revision without going
    /// through the log: after a ReadIndex round for a linearizable read, or directly for
    /// a serializable one. Any other op is [`KvError::NotReadOnly`].
    pub fn read(&self, op: &Op) -> Outcome {
        validate_read(op, &self.limits)?;
        let mut budget = ResponseBudget::new(&self.limits);
        let op = match op {
            Op::Range(range) => OpResponse::Range(range_of(&self.keys, range, &mut budget)),
            Op::Txn(txn) => {
                let succeeded = compares_hold(&self.keys, &txn.compares);
                let ops = if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                let mut responses = Vec::with_capacity(ops.len());
                for op in ops {
                    let TxnOp::Range(range) = op else {
                        return Err(KvError::NotReadOnly);
                    };
                    responses.push(TxnOpResponse::Range(range_of(
                        &self.keys,
                        range,
                        &mut budget,
                    )));
                }
                OpResponse::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            Op::Put(_) | Op::Delete(_) | Op::Append(_) => return Err(KvError::NotReadOnly),
        };
        Ok(Response {
            revision: self.applied_index,
            op,
        })
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "entry {index} applied after entry {}",
            self.applied_index
        );
        self.applied_index = index;
    }

    /// Runs a validated op. On error nothing has changed: single ops check before they
    /// write, and a Txn rolls back the ops it already ran.
    fn execute(&mut self, index: u64, op: &Op) -> Result<OpResponse, KvError> {
        let mut budget = ResponseBudget::new(&self.limits);
        let mut undo = Vec::new();
        let response = match op {
            Op::Range(range) => OpResponse::Range(range_of(&self.keys, range, &mut budget)),
            Op::Put(put) => OpResponse::Put(self.put(index, put, &mut budget, &mut undo)?),
            Op::Delete(delete) => {
                OpResponse::Delete(self.delete(delete, &mut budget, &mut undo)?)
            }
            Op::Append(append) => OpResponse::Append(self.append(index, append, &mut undo)?),
            Op::Txn(txn) => OpResponse::Txn(self.txn(index, txn, &mut budget)?),
        };
        Ok(response)
    }

    fn txn(
        &mut self,
        index: u64,
        txn: &TxnRequest,
        budget: &mut ResponseBudget,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = compares_hold(&self.keys, &txn.compares);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut undo = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            // Each op sees the effects of the ops before it in the same Txn.
            let response = match op {
                TxnOp::Range(range) => {
                    Ok(TxnOpResponse::Range(range_of(&self.keys, range, budget)))
                }
                TxnOp::Put(put) => self
                    .put(index, put, budget, &mut undo)
                    .map(TxnOpResponse::Put),
                TxnOp::Delete(delete) => self
                    .delete(delete, budget, &mut undo)
                    .map(TxnOpResponse::Delete),
                TxnOp::Append(append) => self
                    .append(index, append, &mut undo)
                    .map(TxnOpResponse::Append),
            };
            match response {
                Ok(response) => responses.push(response),
                Err(error) => {
                    self.roll_back(undo);
                    return Err(error);
                }
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    fn put(
        &mut self,
        index: u64,
        put: &PutRequest,
        budget: &mut ResponseBudget,
        undo: &mut Vec<UndoRecord>,
    ) -> Result<PutResponse, KvError> {
        let previous = self.keys.get(put.key.as_slice());
        let prev_kv = match previous {
            Some(entry) if put.prev_kv => {
                budget.charge(entry.encoded_bytes(&put.key, false))?;
                Some(entry.key_value(&put.key, false))
            }
            _ => None,
        };
        let entry = Entry {
            value: put.value.clone(),
            create_revision: previous.map_or(index, |entry| entry.create_revision),
            mod_revision: index,
            version: previous.map_or(1, |entry| entry.version.saturating_add(1)),
            lease: put.lease,
        };
        let old = self.keys.insert(put.key.clone(), entry);
        undo.push(UndoRecord::Restore {
            key: put.key.clone(),
            entry: old,
        });
        Ok(PutResponse { prev_kv })
    }

    fn delete(
        &mut self,
        delete: &DeleteRequest,
        budget: &mut ResponseBudget,
        undo: &mut Vec<UndoRecord>,
    ) -> Result<DeleteResponse, KvError> {
        let mut matched = Vec::new();
        let mut matched_bytes = 0;
        for (key, entry) in key_range(&self.keys, &delete.key, &delete.range_end) {
            matched_bytes += entry.encoded_bytes(key, false);
            matched.push(key.clone());
        }
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            // Charge the whole answer before deleting anything, so a refusal changes nothing.
            budget.charge(matched_bytes)?;
            prev_kvs.reserve(matched.len());
        }
        for key in matched.iter() {
            let old = self.keys.remove(key.as_slice());
            if let (true, Some(entry)) = (delete.prev_kv, &old) {
                prev_kvs.push(entry.key_value(key, false));
            }
            undo.push(UndoRecord::Restore {
                key: key.clone(),
                entry: old,
            });
        }
        Ok(DeleteResponse {
            deleted: matched.len() as u64,
            prev_kvs,
        })
    }

    fn append(
        &mut self,
        index: u64,
        append: &AppendRequest,
        undo: &mut Vec<UndoRecord>,
    ) -> Result<AppendResponse, KvError> {
        let old_value_bytes = self
            .keys
            .get(append.key.as_slice())
            .map_or(0, |entry| entry.value.len());
        let value_bytes = old_value_bytes as u64 + append.value.len() as u64;
        if value_bytes > self.limits.value_bytes_max {
            return Err(KvError::ValueTooLarge {
                value_bytes,
                value_bytes_max: self.limits.value_bytes_max,
            });
        }
        match self.keys.get_mut(append.key.as_slice()) {
            Some(entry) => {
                undo.push(UndoRecord::Truncate {
                    key: append.key.clone(),
                    value_bytes: entry.value.len(),
                    mod_revision: entry.mod_revision,
                    version: entry.version,
                });
                entry.value.extend_from_slice(&append.value);
                entry.mod_revision = index;
                entry.version = entry.version.saturating_add(1);
            }
            None => {
                let entry = Entry {
                    value: append.value.clone(),
                    create_revision: index,
                    mod_revision: index,
                    version: 1,
                    lease: 0,
                };
                self.keys.insert(append.key.clone(), entry);
                undo.push(UndoRecord::Restore {
                    key: append.key.clone(),
                    entry: None,
                });
            }
        }
        Ok(AppendResponse { value_bytes })
    }

    /// Takes back a Txn's changes, newest first.
    fn roll_back(&mut self, undo: Vec<UndoRecord>) {
        for record in undo.into_iter().rev() {
            match record {
                UndoRecord::Restore {
                    key,
                    entry: Some(entry),
                } => {
                    self.keys.insert(key, entry);
                }
                UndoRecord::Restore { key, entry: None } => {
                    self.keys.remove(&key);
                }
                UndoRecord::Truncate {
                    key,
                    value_bytes,
                    mod_revision,
                    version,
                } => {
                    let entry = self.keys.get_mut(&key);
                    debug_assert!(entry.is_some(), "appended key vanished before roll back");
                    if let Some(entry) = entry {
                        entry.value.truncate(value_bytes);
                        entry.mod_revision = mod_revision;
                        entry.version = version;
                    }
                }
            }
        }
    }
}

/// The keys of `[key, range_end)`, of `key` alone when `range_end` is empty, or of every
/// key from `key` on when `range_end` is the unbounded marker. A range end that does not
/// sort after the key selects nothing (validation refuses the inverted case; this keeps
/// the store from panicking even without it).
fn key_range<'a>(
    keys: &'a BTreeMap<Vec<u8>, Entry>,
    key: &'a [u8],
    range_end: &'a [u8],
) -> std::collections::btree_map::Range<'a, Vec<u8>, Entry> {
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == RANGE_END_UNBOUNDED {
        (Bound::Included(key), Bound::Unbounded)
    } else if range_end <= key {
        (Bound::Included(key), Bound::Excluded(key))
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    };
    keys.range::<[u8], _>(bounds)
}

/// etcd's Range: `count` is every matching key; `kvs` stop at the request's limit or when
/// the next key-value would exceed the response budget, and `more` says whether they
/// stopped early. `kvs` is always a prefix of the matching keys, so a client can page.
fn range_of(
    keys: &BTreeMap<Vec<u8>, Entry>,
    range: &RangeRequest,
    budget: &mut ResponseBudget,
) -> RangeResponse {
    let mut response = RangeResponse::default();
    for (key, entry) in key_range(keys, &range.key, &range.range_end) {
        response.count += 1;
        if range.count_only || response.more {
            continue;
        }
        if range.limit != 0 && response.kvs.len() as u64 >= range.limit {
            response.more = true;
            continue;
        }
        if budget
            .charge(entry.encoded_bytes(key, range.keys_only))
            .is_err()
        {
            response.more = true;
            continue;
        }
        response.kvs.push(entry.key_value(key, range.keys_only));
    }
    response
}

fn compares_hold(keys: &BTreeMap<Vec<u8>, Entry>, compares: &[Compare]) -> bool {
    compares
        .iter()
        .all(|compare| compare_holds(keys.get(compare.key.as_slice()), compare))
}

/// etcd's compare: a missing key has version and revisions 0, and fails every value
/// compare (there is no value to compare, and an empty value is not a missing one).
fn compare_holds(entry: Option<&Entry>, compare: &Compare) -> bool {
    let ordering = match (&compare.target, entry) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(value), Some(entry)) => entry.value.as_slice().cmp(value.as_slice()),
        (CompareTarget::Version(version), entry) => {
            entry.map_or(0, |entry| entry.version).cmp(version)
        }
        (CompareTarget::CreateRevision(revision), entry) => {
            entry.map_or(0, |entry| entry.create_revision).cmp(revision)
        }
        (CompareTarget::ModRevision(revision), entry) => {
            entry.map_or(0, |entry| entry.mod_revision).cmp(revision)
        }
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}
