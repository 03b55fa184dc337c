//! The state machine of one group: the ordered keyspace with etcd's per-key metadata and
//! its history, applied entry by entry, plus reads served outside the log, at the current
//! revision or at a past one.
//!
//! # Revisions
//!
//! A revision is a store-wide hybrid logical clock value (high 48 bits Unix milliseconds,
//! low 16 a counter) that the group's leader stamps into each write entry when it proposes
//! it, strictly above every revision and promise before it in the log; every replica
//! applies the same one. A key's `create_revision` and `mod_revision` are revisions of
//! writes, and all ops of one Txn share its entry's revision. Only a write that changes
//! something moves the store's revision: reads, refused commands, no-ops and writes that
//! change nothing (a delete of an absent key) do not.
//!
//! A **closed revision** `c` is a promise the leader put in the log: no later write of the
//! group gets a revision at or below `c`. Because revisions grow in log order, a write
//! entry applied at revision `r` closes `r` too, whether or not it changed anything (a
//! refused command or a repeat of a session's write took its revision all the same). Once a replica has applied a close (or a write)
//! at or past `R`, the group's state at `R` can no longer change, and any replica may read
//! it. A write at or below the closed revision would break that promise: applying one
//! stops the replica.
//!
//! # History
//!
//! Every version a write replaces stays in [`History`] until a compaction drops it, so a
//! Range may read at any revision from the compaction revision up to the closed one.

use std::borrow::Cow;

use super::command::{
    AppendRequest, Command, Compare, CompareResult, CompareTarget, DeleteRequest, Op, PutRequest,
    RangeRequest, TxnOp, TxnRequest,
};
use super::history::{History, PastState, Version};
use super::keys::Keys;
use super::lease::{AppliedRevocations, LeaseLimits, LeaseTable};
use super::limits::{validate, validate_read, KvError, Limits, LimitsError};
use super::response::{
    AppendResponse, DeleteResponse, KeyValue, OpResponse, Outcome, PutResponse, RangeResponse,
    Response, TxnOpResponse, TxnResponse,
};
use super::session::{CachedOutcome, SessionCheck, Sessions};

#[path = "store_leases.rs"]
mod leases;

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
    pub(crate) fn key_value(&self, key: &[u8], keys_only: bool) -> KeyValue {
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
    /// The revision of the last write that changed something.
    pub(crate) revision: u64,
    /// The highest close promise or write entry's revision applied (see the module
    /// documentation).
    pub(crate) closed_revision: u64,
    /// Reads below this revision are refused: their history is gone.
    pub(crate) compact_revision: u64,
    pub(crate) keys: Keys,
    pub(crate) history: History,
    pub(crate) sessions: Sessions,
    /// The lease table: empty except in the lease group (see `kv::lease`).
    pub(crate) leases: LeaseTable,
    /// The lease group's revocations this group has applied.
    pub(crate) revoked: AppliedRevocations,
    pub(crate) lease_limits: LeaseLimits,
    /// This store is the lease group's: a put checks its lease against the table itself.
    /// Set by the owner of the store, not replicated.
    pub(crate) is_lease_group: bool,
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
    /// Take back the last version pushed to the key's history.
    History { key: Vec<u8> },
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
            revision: 0,
            closed_revision: 0,
            compact_revision: 0,
            keys: Keys::default(),
            history: History::default(),
            sessions: Sessions::default(),
            leases: LeaseTable::default(),
            revoked: AppliedRevocations::default(),
            lease_limits: LeaseLimits::default(),
            is_lease_group: false,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The revision of the last write that changed something (see the module docs).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The highest revision no later write can get: a close promise or a write applied.
    pub fn closed_revision(&self) -> u64 {
        self.closed_revision.max(self.revision)
    }

    /// The oldest revision a read may ask for.
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Bytes the history counts for (see [`super::history::VERSION_OVERHEAD_BYTES`]).
    pub fn history_bytes(&self) -> u64 {
        self.history.bytes()
    }

    /// How many past versions the history keeps.
    pub fn history_versions(&self) -> usize {
        self.history.version_count()
    }

    /// Whether two replicas hold the same data: equal but for the log position and the
    /// close promises, which move on in an idle group (a replica that has applied one
    /// more close holds nothing else).
    pub fn same_contents(&self, other: &Store) -> bool {
        self.limits == other.limits
            && self.revision == other.revision
            && self.compact_revision == other.compact_revision
            && self.keys == other.keys
            && self.history == other.history
            && self.sessions == other.sessions
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

    /// Applies the command of the committed entry at `index`, stamped with `revision`, and
    /// answers it.
    ///
    /// A command that the session rules refuse changes nothing else; one that fails
    /// validation or execution changes no key (its session, if it has one, caches the
    /// error as its answer). Bad commands are answered with errors. Panics on an `index`
    /// that does not increase, and on a `revision` at or below the closed revision: both
    /// are bugs upstream that would silently corrupt the replica or break a promise.
    pub fn apply(&mut self, index: u64, revision: u64, command: &Command) -> Outcome {
        self.apply_command(index, revision, Cow::Borrowed(command))
    }

    /// [`Store::apply`] for a caller that owns the command, as one that has just decoded
    /// it does: the store keeps the command's key and value buffers instead of copying
    /// them. Answers and effects are exactly those of [`Store::apply`].
    pub fn apply_owned(&mut self, index: u64, revision: u64, command: Command) -> Outcome {
        self.apply_command(index, revision, Cow::Owned(command))
    }

    /// Applies a close promise: no later write gets a revision at or below `revision`.
    pub fn apply_close(&mut self, index: u64, revision: u64) {
        self.advance(index);
        self.closed_revision = self.closed_revision.max(revision);
    }

    /// Applies a compaction: history before `revision` (never past the closed revision)
    /// is dropped, and reads below it are refused from now on.
    pub fn apply_compact(&mut self, index: u64, revision: u64) {
        self.advance(index);
        self.compact_to(revision.min(self.closed_revision()));
    }

    fn compact_to(&mut self, revision: u64) {
        if revision <= self.compact_revision {
            return;
        }
        self.compact_revision = revision;
        let keys = &self.keys;
        self.history.compact(revision, |key| {
            keys.get(key).map(|entry| entry.mod_revision)
        });
    }

    /// Keeps the history within `history_bytes_max` by compacting its oldest versions
    /// away (deterministically, so every replica drops the same ones).
    fn bound_history(&mut self) {
        while self.history.bytes() > self.limits.history_bytes_max {
            let Some(oldest) = self.history.oldest_successor() else {
                return;
            };
            let revision = oldest.max(self.compact_revision + 1);
            self.compact_to(revision);
        }
    }

    fn apply_command(&mut self, index: u64, revision: u64, command: Cow<'_, Command>) -> Outcome {
        self.advance(index);
        assert!(
            revision > self.closed_revision(),
            "entry {index}: a write at revision {revision} at or below the closed revision {}",
            self.closed_revision()
        );
        // The entry's revision is taken whether or not the command changes anything (a
        // refused or repeated command, a failed compare, a delete of nothing): later
        // entries stay above it, so revisions rise along the log and a new leader that
        // continues above this store's closed revision continues above every stamp.
        self.closed_revision = self.closed_revision.max(revision);
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
                let before = self.history.bytes();
                let mut write = Write {
                    revision,
                    changed: false,
                };
                let executed = self.execute(&mut write, op);
                if write.changed {
                    self.revision = revision;
                    if self.history.bytes() > before {
                        self.bound_history();
                    }
                }
                executed.map(|op| Response {
                    revision: self.revision,
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
        self.read_view(op, View::Current)
    }

    /// Serves a read-only op as the group's state was at `revision`: refused below the
    /// compaction revision ([`KvError::Compacted`]) and above the closed one
    /// ([`KvError::FutureRevision`]), since that state may still change. The answer's
    /// revision is `revision`.
    pub fn read_at(&self, op: &Op, revision: u64) -> Outcome {
        if revision < self.compact_revision {
            return Err(KvError::Compacted {
                revision,
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.closed_revision() {
            return Err(KvError::FutureRevision {
                revision,
                closed_revision: self.closed_revision(),
            });
        }
        let mut response = self.read_view(op, View::At(revision))?;
        response.revision = revision;
        Ok(response)
    }

    fn read_view(&self, op: &Op, view: View) -> Outcome {
        validate_read(op, &self.limits)?;
        let mut budget = ResponseBudget::new(&self.limits);
        let op = match op {
            Op::Range(range) => OpResponse::Range(self.range(range, view, &mut budget)),
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
                    responses.push(TxnOpResponse::Range(self.range(range, view, &mut budget)));
                }
                OpResponse::Txn(TxnResponse {
                    succeeded,
                    responses,
                })
            }
            Op::Put(_) | Op::Delete(_) | Op::Append(_) => return Err(KvError::NotReadOnly),
        };
        Ok(Response {
            revision: self.revision,
            op,
        })
    }

    /// A Range over the current state or the state at a revision.
    fn range(
        &self,
        range: &RangeRequest,
        view: View,
        budget: &mut ResponseBudget,
    ) -> RangeResponse {
        match view {
            View::Current => range_of(
                self.keys
                    .range(&range.key, &range.range_end)
                    .map(|(key, entry)| (key.as_slice(), entry)),
                range,
                budget,
            ),
            View::At(revision) => range_of(self.states_at(range, revision), range, budget),
        }
    }

    /// The keys of `range` that existed at `revision`, with their entries then, in key
    /// order: the live keys and the keys with history, merged.
    fn states_at<'a>(
        &'a self,
        range: &'a RangeRequest,
        revision: u64,
    ) -> impl Iterator<Item = (&'a [u8], &'a Entry)> + 'a {
        let mut live = self
            .keys
            .range(&range.key, &range.range_end)
            .map(|(key, _)| key.as_slice())
            .peekable();
        let mut past = self
            .history
            .keys_in(&range.key, &range.range_end)
            .peekable();
        std::iter::from_fn(move || loop {
            let key = match (live.peek(), past.peek()) {
                (None, None) => return None,
                (Some(&a), None) => live.next().unwrap_or(a),
                (None, Some(&b)) => past.next().unwrap_or(b),
                (Some(&a), Some(&b)) => {
                    if a < b {
                        live.next().unwrap_or(a)
                    } else if b < a {
                        past.next().unwrap_or(b)
                    } else {
                        past.next();
                        live.next().unwrap_or(a)
                    }
                }
            };
            if let Some(entry) = self.state_at(key, revision) {
                return Some((key, entry));
            }
        })
    }

    /// The entry `key` held at `revision`, if it existed then.
    fn state_at(&self, key: &[u8], revision: u64) -> Option<&Entry> {
        if let Some(entry) = self.keys.get(key) {
            if entry.mod_revision <= revision {
                return Some(entry);
            }
        }
        match self.history.state_at(key, revision) {
            PastState::Present(entry) => Some(entry),
            PastState::Absent => None,
        }
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
    fn execute(&mut self, write: &mut Write, op: Cow<'_, Op>) -> Result<OpResponse, KvError> {
        let mut budget = ResponseBudget::new(&self.limits);
        let response = match op {
            Cow::Owned(Op::Put(put)) => {
                OpResponse::Put(self.put(write, Cow::Owned(put), &mut budget, None)?)
            }
            Cow::Owned(Op::Append(append)) => {
                OpResponse::Append(self.append(write, Cow::Owned(append), None)?)
            }
            // The other ops only read their request, owned or not.
            op => match op.as_ref() {
                Op::Range(range) => {
                    OpResponse::Range(self.range(range, View::Current, &mut budget))
                }
                Op::Put(put) => {
                    OpResponse::Put(self.put(write, Cow::Borrowed(put), &mut budget, None)?)
                }
                Op::Delete(delete) => {
                    OpResponse::Delete(self.delete(write, delete, &mut budget, None)?)
                }
                Op::Append(append) => {
                    OpResponse::Append(self.append(write, Cow::Borrowed(append), None)?)
                }
                Op::Txn(txn) => OpResponse::Txn(self.txn(write, txn, &mut budget)?),
            },
        };
        Ok(response)
    }

    fn txn(
        &mut self,
        write: &mut Write,
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
        let changed_before = write.changed;
        for op in ops {
            // Each op sees the effects of the ops before it in the same Txn.
            let response = match op {
                TxnOp::Range(range) => Ok(TxnOpResponse::Range(self.range(
                    range,
                    View::Current,
                    budget,
                ))),
                TxnOp::Put(put) => self
                    .put(write, Cow::Borrowed(put), budget, Some(&mut undo))
                    .map(TxnOpResponse::Put),
                TxnOp::Delete(delete) => self
                    .delete(write, delete, budget, Some(&mut undo))
                    .map(TxnOpResponse::Delete),
                TxnOp::Append(append) => self
                    .append(write, Cow::Borrowed(append), Some(&mut undo))
                    .map(TxnOpResponse::Append),
            };
            match response {
                Ok(response) => responses.push(response),
                Err(error) => {
                    self.roll_back(undo);
                    write.changed = changed_before;
                    return Err(error);
                }
            }
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    /// Keeps the live `entry` of `key`, which a write at `write.revision` replaces, in the
    /// history; `undo`, inside a Txn, learns to take it back.
    fn keep_version(
        &mut self,
        write: &Write,
        key: &[u8],
        version: Version,
        undo: &mut Option<&mut Vec<UndoRecord>>,
    ) {
        self.history.push(key, version, write.revision);
        if let Some(undo) = undo {
            undo.push(UndoRecord::History { key: key.to_vec() });
        }
    }

    /// Writes one key. `undo`, present inside a Txn, receives how to take the write back.
    fn put(
        &mut self,
        write: &mut Write,
        put: Cow<'_, PutRequest>,
        budget: &mut ResponseBudget,
        mut undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<PutResponse, KvError> {
        let (prev_kv_wanted, lease) = (put.prev_kv, put.lease);
        self.check_lease(lease, &put.key)?;
        let (key, value): (Cow<'_, [u8]>, Vec<u8>) = match put {
            Cow::Borrowed(put) => (Cow::Borrowed(&put.key), put.value.clone()),
            Cow::Owned(put) => (Cow::Owned(put.key), put.value),
        };
        write.changed = true;
        let revision = write.revision;
        match self.keys.get(&key) {
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
                    mod_revision: revision,
                    version: entry.version.saturating_add(1),
                    lease,
                };
                let old = self
                    .keys
                    .replace(&key, written)
                    .expect("the key is present");
                if let Some(undo) = undo.as_deref_mut() {
                    // Only a Txn that may roll back needs a second copy.
                    undo.push(UndoRecord::Restore {
                        key: key.to_vec(),
                        entry: Some(old.clone()),
                    });
                }
                let version = Version {
                    revision: old.mod_revision,
                    entry: Some(old),
                };
                self.keep_version(write, &key, version, &mut undo);
                Ok(PutResponse { prev_kv })
            }
            None => {
                self.create(write, key.into_owned(), value, lease, undo);
                Ok(PutResponse { prev_kv: None })
            }
        }
    }

    /// Deletes one key or a range. `undo`, present inside a Txn, receives the deleted
    /// entries.
    fn delete(
        &mut self,
        write: &mut Write,
        delete: &DeleteRequest,
        budget: &mut ResponseBudget,
        mut undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<DeleteResponse, KvError> {
        let matched: Vec<Vec<u8>> = if delete.range_end.is_empty() {
            match self.keys.get(&delete.key) {
                Some(_) => vec![delete.key.clone()],
                None => Vec::new(),
            }
        } else {
            self.keys
                .range(&delete.key, &delete.range_end)
                .map(|(key, _)| key.clone())
                .collect()
        };
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            // Charge the whole answer before deleting anything, so a refusal changes nothing.
            let matched_bytes: u64 = matched
                .iter()
                .filter_map(|key| Some(self.keys.get(key)?.encoded_bytes(key, false)))
                .sum();
            budget.charge(matched_bytes)?;
            prev_kvs.reserve(matched.len());
        }
        let deleted = matched.len() as u64;
        if deleted > 0 {
            write.changed = true;
        }
        for key in matched {
            let old = self.keys.remove(&key).expect("a matched key is present");
            if delete.prev_kv {
                prev_kvs.push(old.key_value(&key, false));
            }
            let tombstone = Version {
                revision: write.revision,
                entry: None,
            };
            if let Some(undo) = undo.as_deref_mut() {
                undo.push(UndoRecord::Restore {
                    key: key.clone(),
                    entry: Some(old.clone()),
                });
            }
            let kept = Version {
                revision: old.mod_revision,
                entry: Some(old),
            };
            self.keep_version(write, &key, kept, &mut undo);
            self.keep_version(write, &key, tombstone, &mut undo);
        }
        Ok(DeleteResponse { deleted, prev_kvs })
    }

    /// Appends to one key, creating it when absent. `undo`, present inside a Txn, receives
    /// how to take the append back.
    fn append(
        &mut self,
        write: &mut Write,
        append: Cow<'_, AppendRequest>,
        mut undo: Option<&mut Vec<UndoRecord>>,
    ) -> Result<AppendResponse, KvError> {
        let value_bytes_max = self.limits.value_bytes_max;
        let too_large = |value_bytes| KvError::ValueTooLarge {
            value_bytes,
            value_bytes_max,
        };
        let revision = write.revision;
        match self.keys.get_mut(&append.key) {
            Some(entry) => {
                let value_bytes = entry.value.len() as u64 + append.value.len() as u64;
                if value_bytes > value_bytes_max {
                    return Err(too_large(value_bytes));
                }
                write.changed = true;
                let version = Version {
                    revision: entry.mod_revision,
                    entry: Some(entry.clone()),
                };
                if let Some(undo) = undo.as_deref_mut() {
                    undo.push(UndoRecord::Truncate {
                        key: append.key.clone(),
                        value_bytes: entry.value.len(),
                        mod_revision: entry.mod_revision,
                        version: entry.version,
                    });
                }
                entry.value.extend_from_slice(&append.value);
                entry.mod_revision = revision;
                entry.version = entry.version.saturating_add(1);
                self.keep_version(write, &append.key, version, &mut undo);
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
                self.create(write, key, value, 0, undo);
                Ok(AppendResponse { value_bytes })
            }
        }
    }

    /// Stores a key that is absent at version 1, created at the write's revision; `undo`,
    /// present inside a Txn, learns to remove it again.
    fn create(
        &mut self,
        write: &mut Write,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
        undo: Option<&mut Vec<UndoRecord>>,
    ) {
        write.changed = true;
        if let Some(undo) = undo {
            undo.push(UndoRecord::Restore {
                key: key.clone(),
                entry: None,
            });
        }
        let created = Entry {
            value,
            create_revision: write.revision,
            mod_revision: write.revision,
            version: 1,
            lease,
        };
        self.keys.insert_new(key, created);
    }

    /// Takes back a Txn's changes, newest first.
    fn roll_back(&mut self, undo: Vec<UndoRecord>) {
        for record in undo.into_iter().rev() {
            match record {
                UndoRecord::History { key } => self.history.pop(&key),
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

/// Which state a read sees.
#[derive(Clone, Copy, Debug)]
enum View {
    /// The current state.
    Current,
    /// The state at this revision (within the history).
    At(u64),
}

/// The write being applied: its revision, and whether it changed anything yet.
#[derive(Debug)]
struct Write {
    revision: u64,
    changed: bool,
}

/// etcd's Range: `count` is every matching key; `kvs` stop at the request's limit or when
/// the next key-value would exceed the response budget, and `more` says whether they
/// stopped early. `kvs` is always a prefix of the matching keys, so a client can page.
fn range_of<'a>(
    matching: impl Iterator<Item = (&'a [u8], &'a Entry)>,
    range: &RangeRequest,
    budget: &mut ResponseBudget,
) -> RangeResponse {
    let mut response = RangeResponse::default();
    for (key, entry) in matching {
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
