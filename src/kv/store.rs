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

use std::borrow::Cow;

use super::command::{
    AppendRequest, Command, Compare, CompareResult, CompareTarget, DeleteRequest, Op, PutRequest,
    RangeRequest, TxnOp, TxnRequest,
};
use super::keys::Keys;
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

    /// The key-value of a removed entry, moving its value rather than copying it.
    fn into_key_value(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
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
    pub(crate) keys: Keys,
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
            keys: Keys::default(),
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
        self.apply_command(index, Cow::Borrowed(command))
    }

    /// [`Store::apply`] for a caller that owns the command, as one that has just decoded
    /// it does: the store keeps the command's key and value buffers instead of copying
    /// them. Answers and effects are exactly those of [`Store::apply`].
    pub fn apply_owned(&mut self, index: u64, command: Command) -> Outcome {
        self.apply_command(index, Cow::Owned(command))
    }

    fn apply_command(&mut self, index: u64, command: Cow<'_, Command>) -> Outcome {
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
        // Decided before the op moves into `execute`; only a session needs it.
        let read_only = session.is_some() && command.op.is_read_only();
        let outcome = match validate(&command, &self.limits) {
            Ok(()) => {
                let op = match command {
                    Cow::Borrowed(command) => Cow::Borrowed(&command.op),
                    Cow::Owned(command) => Cow::Owned(command.op),
                };
                self.execute(index, op).map(|op| Response {
                    revision: index,
                    op,
                })
            }
            Err(error) => Err(error),
        };
        if let Some((client_id, seq)) = session {
            let cached = if read_only {
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
    /// write, so only a Txn keeps an undo log, to roll back the ops it already ran.
    fn execute(&mut self, index: u64, op: Cow<'_, Op>) -> Result<OpResponse, KvError> {
        let mut budget = ResponseBudget::new(&self.limits);
        let response = match op {
            Cow::Owned(Op::Put(put)) => {
                OpResponse::Put(self.put(index, Cow::Owned(put), &mut budget, None)?)
            }
            Cow::Owned(Op::Append(append)) => {
                OpResponse::Append(self.append(index, Cow::Owned(append), None)?)
            }
            // The other ops only read their request, owned or not.
            op => match op.as_ref() {
                Op::Range(range) => OpResponse::Range(range_of(&self.keys, range, &mut budget)),
                Op::Put(put) => {
                    OpResponse::Put(self.put(index, Cow::Borrowed(put), &mut budget, None)?)
                }
                Op::Delete(delete) => OpResponse::Delete(self.delete(delete, &mut budget, None)?),
                Op::Append(append) => {
                    OpResponse::Append(self.append(index, Cow::Borrowed(append), None)?)
                }
                Op::Txn(txn) => OpResponse::Txn(self.txn(index, txn, &mut budget)?),
            },
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
                    .put(index, Cow::Borrowed(put), budget, Some(&mut undo))
                    .map(TxnOpResponse::Put),
                TxnOp::Delete(delete) => self
                    .delete(delete, budget, Some(&mut undo))
                    .map(TxnOpResponse::Delete),
                TxnOp::Append(append) => self
                    .append(index, Cow::Borrowed(append), Some(&mut undo))
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

    /// Writes one key. `undo`, present inside a Txn, receives how to take the write back.
    fn put(
        &mut self,
        index: u64,
        put: Cow<'_, PutRequest>,
        budget: &mut ResponseBudget,
        undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<PutResponse, KvError> {
        let (prev_kv_wanted, lease) = (put.prev_kv, put.lease);
        let (key, value): (Cow<'_, [u8]>, Vec<u8>) = match put {
            Cow::Borrowed(put) => (Cow::Borrowed(&put.key), put.value.clone()),
            Cow::Owned(put) => (Cow::Owned(put.key), put.value),
        };
        match self.keys.get_mut(&key) {
            Some(entry) => {
                let prev_kv = if prev_kv_wanted {
                    budget.charge(entry.encoded_bytes(&key, false))?;
                    Some(entry.key_value(&key, false))
                } else {
                    None
                };
                let written = Entry {
                    value,
                    create_revision: entry.create_revision,
                    mod_revision: index,
                    version: entry.version.saturating_add(1),
                    lease,
                };
                let old = std::mem::replace(entry, written);
                if let Some(undo) = undo {
                    undo.push(UndoRecord::Restore {
                        key: key.into_owned(),
                        entry: Some(old),
                    });
                }
                Ok(PutResponse { prev_kv })
            }
            None => {
                self.create(index, key.into_owned(), value, lease, undo);
                Ok(PutResponse { prev_kv: None })
            }
        }
    }

    /// Deletes one key or a range. `undo`, present inside a Txn, receives the deleted
    /// entries.
    fn delete(
        &mut self,
        delete: &DeleteRequest,
        budget: &mut ResponseBudget,
        undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<DeleteResponse, KvError> {
        if delete.range_end.is_empty() {
            return self.delete_one(delete, budget, undo);
        }
        let mut matched = Vec::new();
        let mut matched_bytes = 0;
        for (key, entry) in self.keys.range(&delete.key, &delete.range_end) {
            matched_bytes += entry.encoded_bytes(key, false);
            matched.push(key.clone());
        }
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            // Charge the whole answer before deleting anything, so a refusal changes nothing.
            budget.charge(matched_bytes)?;
            prev_kvs.reserve(matched.len());
        }
        let deleted = matched.len() as u64;
        match undo {
            Some(undo) => {
                for key in matched {
                    let old = self.keys.remove(&key);
                    if let (true, Some(entry)) = (delete.prev_kv, &old) {
                        prev_kvs.push(entry.key_value(&key, false));
                    }
                    undo.push(UndoRecord::Restore { key, entry: old });
                }
            }
            None => {
                for key in matched {
                    let old = self.keys.remove(&key);
                    if let (true, Some(entry)) = (delete.prev_kv, old) {
                        prev_kvs.push(entry.into_key_value(key));
                    }
                }
            }
        }
        Ok(DeleteResponse { deleted, prev_kvs })
    }

    /// [`Store::delete`] of `delete.key` alone, found by hash.
    fn delete_one(
        &mut self,
        delete: &DeleteRequest,
        budget: &mut ResponseBudget,
        undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<DeleteResponse, KvError> {
        let Some(entry) = self.keys.get(&delete.key) else {
            return Ok(DeleteResponse {
                deleted: 0,
                prev_kvs: Vec::new(),
            });
        };
        if delete.prev_kv {
            // Charge the answer before deleting, so a refusal changes nothing.
            budget.charge(entry.encoded_bytes(&delete.key, false))?;
        }
        let old = self.keys.remove(&delete.key);
        debug_assert!(old.is_some(), "a key found by get vanished");
        let mut prev_kvs = Vec::new();
        match (undo, old) {
            (Some(undo), old) => {
                if let (true, Some(entry)) = (delete.prev_kv, &old) {
                    prev_kvs.push(entry.key_value(&delete.key, false));
                }
                undo.push(UndoRecord::Restore {
                    key: delete.key.clone(),
                    entry: old,
                });
            }
            (None, Some(entry)) if delete.prev_kv => {
                prev_kvs.push(entry.into_key_value(delete.key.clone()));
            }
            (None, _) => {}
        }
        Ok(DeleteResponse {
            deleted: 1,
            prev_kvs,
        })
    }

    /// Appends to one key, creating it when absent. `undo`, present inside a Txn, receives
    /// how to take the append back.
    fn append(
        &mut self,
        index: u64,
        append: Cow<'_, AppendRequest>,
        undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<AppendResponse, KvError> {
        let value_bytes_max = self.limits.value_bytes_max;
        let too_large = |value_bytes| KvError::ValueTooLarge {
            value_bytes,
            value_bytes_max,
        };
        match self.keys.get_mut(&append.key) {
            Some(entry) => {
                let value_bytes = entry.value.len() as u64 + append.value.len() as u64;
                if value_bytes > value_bytes_max {
                    return Err(too_large(value_bytes));
                }
                if let Some(undo) = undo {
                    undo.push(UndoRecord::Truncate {
                        key: append.key.clone(),
                        value_bytes: entry.value.len(),
                        mod_revision: entry.mod_revision,
                        version: entry.version,
                    });
                }
                entry.value.extend_from_slice(&append.value);
                entry.mod_revision = index;
                entry.version = entry.version.saturating_add(1);
                Ok(AppendResponse { value_bytes })
            }
            None => {
                let value_bytes = append.value.len() as u64;
                if value_bytes > value_bytes_max {
                    return Err(too_large(value_bytes));
                }
                let (key, value) = match append {
                    Cow::Borrowed(append) => (append.key.clone(), append.value.clone()),
                    Cow::Owned(append) => (append.key, append.value),
                };
                self.create(index, key, value, 0, undo);
                Ok(AppendResponse { value_bytes })
            }
        }
    }

    /// Stores a key that is absent at version 1, created at `index`; `undo`, present
    /// inside a Txn, learns to remove it again.
    fn create(
        &mut self,
        index: u64,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
        undo: Option<&mut Vec<UndoRecord>>,
    ) {
        if let Some(undo) = undo {
            undo.push(UndoRecord::Restore {
                key: key.clone(),
                entry: None,
            });
        }
        let created = Entry {
            value,
            create_revision: index,
            mod_revision: index,
            version: 1,
            lease,
        };
        self.keys.insert_new(key, created);
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

/// etcd's Range: `count` is every matching key; `kvs` stop at the request's limit or when
/// the next key-value would exceed the response budget, and `more` says whether they
/// stopped early. `kvs` is always a prefix of the matching keys, so a client can page.
fn range_of(keys: &Keys, range: &RangeRequest, budget: &mut ResponseBudget) -> RangeResponse {
    let mut response = RangeResponse::default();
    for (key, entry) in keys.range(&range.key, &range.range_end) {
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

fn compares_hold(keys: &Keys, compares: &[Compare]) -> bool {
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
