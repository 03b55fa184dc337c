//! The changes of a group's keys between two revisions, read back from the live keys and
//! their history: what a watch sends. Nothing is recorded for watches at apply time; the
//! history that reads at a past revision need holds every change after the compaction
//! revision, with the state before it.
//!
//! A key's states, oldest first, are its history's versions (a tombstone for each delete)
//! and then its live entry. Each state that begins at a revision in the asked window is
//! one change: a put when the state holds an entry, a delete for a tombstone; the state
//! before it is the change's previous pair. A compaction to `C` keeps every state a read
//! at `C` or later needs, so every change after `C` and the state before it are kept:
//! changes are served from `C + 1` on.

use super::history::Version;
use super::limits::KvError;
use super::response::KeyValue;
use super::store::Store;

/// What a change did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// After a put, the pair written; after a delete, the key alone with `mod_revision`
    /// the revision of the delete.
    pub kv: KeyValue,
    /// The pair before the change, if the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl Change {
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }

    /// Bytes the change takes on the wire, about (what a watch's budgets count).
    pub fn encoded_bytes(&self) -> usize {
        let pair = |kv: &KeyValue| KeyValue::ENCODED_BYTES_FIXED + kv.key.len() + kv.value.len();
        16 + pair(&self.kv) + self.prev_kv.as_ref().map_or(0, pair)
    }
}

/// The changes of a window, possibly cut short.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// In revision order (key order within a revision).
    pub changes: Vec<Change>,
    /// Every change of the asked keys from the window's start through this revision is
    /// in `changes`: the window's end, or less when the byte budget cut it (always at a
    /// revision boundary, never inside one revision).
    pub complete_through: u64,
}

impl Store {
    /// The changes of the keys in `[key, range_end)` (as Range reads its bounds) at
    /// revisions `from..=to`, `to` no further than the closed revision. Once the changes
    /// taken exceed `bytes_max`, the changes of later revisions are left for the next
    /// call; the first revision is always taken whole. Refused with
    /// [`KvError::Compacted`] when `from` is at or below the compaction revision.
    pub fn changes(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: u64,
        to: u64,
        bytes_max: usize,
    ) -> Result<Changes, KvError> {
        if from <= self.compact_revision && self.compact_revision > 0 {
            return Err(KvError::Compacted {
                revision: from,
                compact_revision: self.compact_revision,
            });
        }
        let to = to.min(self.closed_revision());
        let mut found = Changes {
            changes: Vec::new(),
            complete_through: to,
        };
        // No write since `from`: nothing to look at (the common case of an idle group).
        if to < from || self.revision < from {
            return Ok(found);
        }
        let mut live = self
            .keys
            .range(key, range_end)
            .map(|(key, _)| key.as_slice())
            .peekable();
        let mut past = self.history.keys_in(key, range_end).peekable();
        loop {
            let next = match (live.peek().copied(), past.peek().copied()) {
                (None, None) => break,
                (Some(a), None) => {
                    live.next();
                    a
                }
                (None, Some(b)) => {
                    past.next();
                    b
                }
                (Some(a), Some(b)) => {
                    if a <= b {
                        live.next();
                    }
                    if b <= a {
                        past.next();
                    }
                    a.min(b)
                }
            };
            self.key_changes(next, from, to, &mut found.changes);
        }
        // Stable: key order stays within a revision.
        found.changes.sort_by_key(Change::revision);
        cut_at_budget(&mut found, bytes_max);
        Ok(found)
    }

    /// The changes of one key at revisions `from..=to`, appended in revision order.
    fn key_changes(&self, key: &[u8], from: u64, to: u64, out: &mut Vec<Change>) {
        let versions = self.history.versions_of(key);
        let live = self.keys.get(key);
        if live.is_some_and(|entry| entry.mod_revision < from)
            && versions
                .last()
                .is_none_or(|version| version.revision < from)
        {
            return;
        }
        // The states in order: the past versions, then the live entry.
        let state = |position: usize| -> Option<(u64, Option<&super::store::Entry>)> {
            match versions.get(position) {
                Some(Version { revision, entry }) => Some((*revision, entry.as_ref())),
                None if position == versions.len() => {
                    live.map(|entry| (entry.mod_revision, Some(entry)))
                }
                None => None,
            }
        };
        let first = versions.partition_point(|version| version.revision < from);
        let mut position = first;
        while let Some((revision, entry)) = state(position) {
            if revision > to {
                break;
            }
            let prev_kv = position
                .checked_sub(1)
                .and_then(state)
                .and_then(|(_, entry)| entry)
                .map(|entry| entry.key_value(key, false));
            let change = match entry {
                Some(entry) => Change {
                    kind: ChangeKind::Put,
                    kv: entry.key_value(key, false),
                    prev_kv,
                },
                None => Change {
                    kind: ChangeKind::Delete,
                    kv: KeyValue {
                        key: key.to_vec(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: revision,
                        version: 0,
                        lease: 0,
                    },
                    prev_kv,
                },
            };
            out.push(change);
            position += 1;
        }
    }
}

/// Keeps the first revisions whose changes fit `bytes_max` (the first one whatever its
/// size), and says where the kept ones end.
fn cut_at_budget(found: &mut Changes, bytes_max: usize) {
    let mut bytes = 0;
    let mut cut = None;
    for (position, change) in found.changes.iter().enumerate() {
        let starts_revision =
            position > 0 && found.changes[position - 1].revision() != change.revision();
        if starts_revision && bytes > bytes_max {
            cut = Some(position);
            break;
        }
        bytes += change.encoded_bytes();
    }
    if let Some(cut) = cut {
        let first_left = found.changes[cut].revision();
        found.changes.truncate(cut);
        found.complete_through = first_left - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, DeleteRequest, Op, PutRequest, TxnOp, TxnRequest};

    fn put(key: &str, value: &str) -> Op {
        Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })
    }

    fn delete(key: &str) -> Op {
        Op::Delete(DeleteRequest {
            key: key.into(),
            ..DeleteRequest::default()
        })
    }

    fn apply(store: &mut Store, index: u64, revision: u64, op: Op) {
        let command = Command {
            client_id: 0,
            seq: 0,
            op,
        };
        store.apply(index, revision, &command).unwrap();
    }

    fn summary(changes: &Changes) -> Vec<(u64, ChangeKind, String, Option<String>)> {
        changes
            .changes
            .iter()
            .map(|change| {
                (
                    change.revision(),
                    change.kind,
                    String::from_utf8(change.kv.key.clone()).unwrap(),
                    change
                        .prev_kv
                        .as_ref()
                        .map(|prev| String::from_utf8(prev.value.clone()).unwrap()),
                )
            })
            .collect()
    }

    /// A store with puts, an overwrite, a delete and a re-create of a few keys.
    fn sample() -> Store {
        let mut store = Store::default();
        apply(&mut store, 1, 10, put("a", "1"));
        apply(&mut store, 2, 20, put("b", "1"));
        apply(&mut store, 3, 30, put("a", "2"));
        apply(&mut store, 4, 40, delete("a"));
        apply(&mut store, 5, 50, put("a", "3"));
        apply(&mut store, 6, 60, put("c", "1"));
        store
    }

    // Every change of a key comes back once, in revision order, with the state before it.
    #[test]
    fn one_key_changes_are_its_history() {
        let store = sample();
        let changes = store.changes(b"a", b"", 1, 60, usize::MAX).unwrap();
        use ChangeKind::{Delete, Put};
        assert_eq!(
            summary(&changes),
            vec![
                (10, Put, "a".into(), None),
                (30, Put, "a".into(), Some("1".into())),
                (40, Delete, "a".into(), Some("2".into())),
                (50, Put, "a".into(), None),
            ]
        );
        assert_eq!(changes.complete_through, 60);
        let window = store.changes(b"a", b"", 31, 45, usize::MAX).unwrap();
        assert_eq!(
            summary(&window),
            vec![(40, Delete, "a".into(), Some("2".into()))]
        );
    }

    // A range's changes are merged over its keys by revision; a window past the last
    // write is empty.
    #[test]
    fn range_changes_are_in_revision_order() {
        let store = sample();
        let changes = store.changes(b"a", b"c", 15, 60, usize::MAX).unwrap();
        let revisions: Vec<u64> = changes.changes.iter().map(Change::revision).collect();
        assert_eq!(revisions, vec![20, 30, 40, 50]);
        let all = store.changes(b"", &[0], 1, 60, usize::MAX).unwrap();
        assert_eq!(all.changes.len(), 6);
        assert!(store
            .changes(b"", &[0], 61, 60, usize::MAX)
            .unwrap()
            .changes
            .is_empty());
    }

    // The changes of one Txn share its revision and are never split by the budget.
    #[test]
    fn a_budget_cuts_between_revisions_only() {
        let mut store = Store::default();
        let txn = TxnRequest {
            compares: vec![],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: b"x".to_vec(),
                    value: vec![0; 100],
                    ..PutRequest::default()
                }),
                TxnOp::Put(PutRequest {
                    key: b"y".to_vec(),
                    value: vec![0; 100],
                    ..PutRequest::default()
                }),
            ],
            failure: vec![],
        };
        apply(&mut store, 1, 10, Op::Txn(txn));
        apply(&mut store, 2, 20, put("z", "1"));
        let changes = store.changes(b"", &[0], 1, 20, 1).unwrap();
        let revisions: Vec<u64> = changes.changes.iter().map(Change::revision).collect();
        assert_eq!(revisions, vec![10, 10]);
        assert_eq!(changes.complete_through, 19);
        let rest = store.changes(b"", &[0], 20, 20, 1).unwrap();
        assert_eq!(rest.changes.len(), 1);
    }

    // At or below the compaction revision the changes are gone; just above it they are
    // all there, with their previous pairs.
    #[test]
    fn compacted_windows_are_refused() {
        let mut store = sample();
        store.apply_compact(7, 40);
        assert!(matches!(
            store.changes(b"a", b"", 40, 60, usize::MAX),
            Err(KvError::Compacted {
                compact_revision: 40,
                ..
            })
        ));
        let changes = store.changes(b"a", b"", 41, 60, usize::MAX).unwrap();
        assert_eq!(
            summary(&changes),
            vec![(50, ChangeKind::Put, "a".into(), None)]
        );
    }
}
