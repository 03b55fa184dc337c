//! The superseded versions of a group's keys (MVCC history), back to the compaction
//! revision: what a read at a past revision sees. The current version of every live key
//! stays in [`Keys`](super::keys::Keys); history holds only what writes replaced, and a
//! tombstone for each key deleted since.
//!
//! A version is the state of a key from its revision until the revision of the version
//! after it (its successor): a write at revision `r` that replaces the live entry pushes
//! that entry here, with `r` as its successor. A compaction to revision `C` keeps what a
//! read at any revision `R >= C` needs: it drops every version whose successor is at or
//! below `C` (nothing at or after `C` sees it), then a tombstone left at the front (before
//! a key's first version it is absent anyway). `droppable` lists every version by its
//! successor revision, so a compaction visits only keys that have something to drop.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use super::command::RANGE_END_UNBOUNDED;
use super::store::Entry;

/// Bytes a version counts for besides its key and value: the entry's fields, its slot in
/// the key's list, and its place in `droppable` (which holds a copy of the key).
pub const VERSION_OVERHEAD_BYTES: u64 = 128;

/// One past state of a key: `entry` from `revision` on (`None`: the key was deleted at
/// `revision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) revision: u64,
    pub(crate) entry: Option<Entry>,
}

impl Version {
    fn bytes(&self, key: &[u8]) -> u64 {
        let value = self.entry.as_ref().map_or(0, |entry| entry.value.len());
        VERSION_OVERHEAD_BYTES + 2 * key.len() as u64 + value as u64
    }
}

/// The history of one group's keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    /// Per key, its past versions, oldest first.
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
    /// (successor revision, key) of every version pushed, in the order they were pushed
    /// (which is revision order). Entries whose version a compaction already dropped stay
    /// until their turn comes; they then find nothing to do.
    droppable: VecDeque<(u64, Vec<u8>)>,
    /// What the versions count for (see [`VERSION_OVERHEAD_BYTES`]).
    bytes: u64,
}

/// Equal versions; `droppable` is bookkeeping that a restored store rebuilds in another
/// order for versions of equal revision, with the same effect.
impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        self.versions == other.versions && self.bytes == other.bytes
    }
}

impl Eq for History {}

/// What history says of a key at a revision.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PastState<'a> {
    /// The key held this entry.
    Present(&'a Entry),
    /// The key did not exist (deleted, or not yet created).
    Absent,
}

impl History {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many versions are kept.
    pub(crate) fn version_count(&self) -> usize {
        self.versions.values().map(Vec::len).sum()
    }

    /// Keeps `version` of `key`, replaced at `successor` (a write's revision).
    pub(crate) fn push(&mut self, key: &[u8], version: Version, successor: u64) {
        self.bytes += version.bytes(key);
        match self.versions.get_mut(key) {
            Some(list) => list.push(version),
            None => {
                self.versions.insert(key.to_vec(), vec![version]);
            }
        }
        self.droppable.push_back((successor, key.to_vec()));
    }

    /// Takes back the last [`History::push`] of `key` (a transaction rolls back).
    pub(crate) fn pop(&mut self, key: &[u8]) {
        let (_, last_key) = self.droppable.pop_back().expect("a push to take back");
        debug_assert_eq!(last_key, key, "pops mirror pushes");
        let list = self.versions.get_mut(key).expect("a pushed key");
        let version = list.pop().expect("a pushed version");
        self.bytes -= version.bytes(key);
        if list.is_empty() {
            self.versions.remove(key);
        }
    }

    /// The state of `key` at `revision` as history knows it, for a key whose live entry
    /// (if any) is newer than `revision`: its newest version at or before `revision`.
    pub(crate) fn state_at(&self, key: &[u8], revision: u64) -> PastState<'_> {
        let newest = self.versions.get(key).and_then(|list| {
            list.iter()
                .rev()
                .find(|version| version.revision <= revision)
        });
        match newest.and_then(|version| version.entry.as_ref()) {
            Some(entry) => PastState::Present(entry),
            None => PastState::Absent,
        }
    }

    /// The past versions of `key`, oldest first (empty when it has none).
    pub(crate) fn versions_of(&self, key: &[u8]) -> &[Version] {
        self.versions.get(key).map_or(&[], Vec::as_slice)
    }

    /// The keys with history in `[key, range_end)` (or `key` alone, or from `key` on, as
    /// [`Keys::range`](super::keys::Keys::range) reads its bounds), in order.
    pub(crate) fn keys_in<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let end = if range_end.is_empty() {
            Bound::Included(key)
        } else if range_end == RANGE_END_UNBOUNDED {
            Bound::Unbounded
        } else if range_end <= key {
            Bound::Excluded(key)
        } else {
            Bound::Excluded(range_end)
        };
        self.versions
            .range::<[u8], _>((Bound::Included(key), end))
            .map(|(key, _)| key.as_slice())
    }

    /// Drops what no read at `revision` or later needs. `live_mod_revision` gives the
    /// revision of a key's live entry, if it has one (the successor of its last version).
    pub(crate) fn compact(
        &mut self,
        revision: u64,
        live_mod_revision: impl Fn(&[u8]) -> Option<u64>,
    ) {
        while self
            .droppable
            .front()
            .is_some_and(|(successor, _)| *successor <= revision)
        {
            let (_, key) = self.droppable.pop_front().expect("checked above");
            self.compact_key(&key, revision, live_mod_revision(&key));
        }
    }

    /// The successor revision of the oldest version still kept, if any: compacting to it
    /// frees at least that version.
    pub(crate) fn oldest_successor(&self) -> Option<u64> {
        self.droppable.front().map(|(successor, _)| *successor)
    }

    fn compact_key(&mut self, key: &[u8], revision: u64, live_mod_revision: Option<u64>) {
        let Some(list) = self.versions.get_mut(key) else {
            return;
        };
        // The first version to keep: the oldest whose successor is after `revision`.
        let mut keep_from = list.len();
        for position in 0..list.len() {
            let successor = match list.get(position + 1) {
                Some(next) => Some(next.revision),
                None => live_mod_revision,
            };
            // The last version with no successor is a tombstone of a key deleted for
            // good: it is needed while a read before it could see an older version,
            // which this pass drops anyway, so it goes with them below.
            if successor.is_none_or(|successor| successor > revision) {
                keep_from = position;
                break;
            }
        }
        let mut freed = 0;
        for version in list.drain(..keep_from) {
            freed += version.bytes(key);
        }
        // Absence is what a read sees before a key's first version.
        if list
            .first()
            .is_some_and(|first| first.entry.is_none() && first.revision <= revision)
        {
            freed += list.remove(0).bytes(key);
        }
        self.bytes -= freed;
        if list.is_empty() {
            self.versions.remove(key);
        }
    }

    /// Every key with its versions, in key order (for snapshots).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[Version])> {
        self.versions
            .iter()
            .map(|(key, list)| (key.as_slice(), list.as_slice()))
    }

    /// Rebuilds history from a snapshot's versions (keys in order, each list oldest
    /// first); `live_mod_revision` gives each key's live entry revision.
    pub(crate) fn restored(
        versions: BTreeMap<Vec<u8>, Vec<Version>>,
        live_mod_revision: impl Fn(&[u8]) -> Option<u64>,
    ) -> History {
        let mut droppable = Vec::new();
        let mut bytes = 0;
        for (key, list) in &versions {
            for (position, version) in list.iter().enumerate() {
                bytes += version.bytes(key);
                let successor = match list.get(position + 1) {
                    Some(next) => next.revision,
                    None => live_mod_revision(key).unwrap_or(version.revision),
                };
                droppable.push((successor, key.clone()));
            }
        }
        droppable.sort();
        History {
            versions,
            droppable: droppable.into(),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, revision: u64) -> Entry {
        Entry {
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn present(state: PastState<'_>) -> Option<Vec<u8>> {
        match state {
            PastState::Present(entry) => Some(entry.value.clone()),
            PastState::Absent => None,
        }
    }

    // k: a@10, b@20, deleted@30, c@40 (live). Reads at every revision see the right
    // version; compactions drop only what no later read needs, and free its bytes.
    #[test]
    fn versions_and_compaction() {
        let mut history = History::default();
        let key = b"k".as_slice();
        history.push(
            key,
            Version {
                revision: 10,
                entry: Some(entry("a", 10)),
            },
            20,
        );
        history.push(
            key,
            Version {
                revision: 20,
                entry: Some(entry("b", 20)),
            },
            30,
        );
        history.push(
            key,
            Version {
                revision: 30,
                entry: None,
            },
            30,
        );
        let live = |_: &[u8]| Some(40);
        assert_eq!(present(history.state_at(key, 5)), None);
        assert_eq!(present(history.state_at(key, 15)), Some(b"a".to_vec()));
        assert_eq!(present(history.state_at(key, 29)), Some(b"b".to_vec()));
        assert_eq!(present(history.state_at(key, 35)), None);
        let before = history.bytes();
        history.compact(25, live);
        assert_eq!(present(history.state_at(key, 25)), Some(b"b".to_vec()));
        assert_eq!(present(history.state_at(key, 35)), None);
        assert!(history.bytes() < before);
        history.compact(30, live);
        // b's successor is the delete at 30: gone; the tombstone at the front goes too.
        assert_eq!(history.version_count(), 0);
        assert_eq!(history.bytes(), 0);
    }

    // A transaction's pushes are taken back exactly.
    #[test]
    fn pops_mirror_pushes() {
        let mut history = History::default();
        history.push(
            b"a",
            Version {
                revision: 1,
                entry: Some(entry("x", 1)),
            },
            2,
        );
        let bytes = history.bytes();
        history.push(
            b"b",
            Version {
                revision: 1,
                entry: Some(entry("y", 1)),
            },
            2,
        );
        history.pop(b"b");
        assert_eq!(history.bytes(), bytes);
        assert_eq!(history.version_count(), 1);
    }

    // A restored history compacts like the one it was taken from. a: 5 -> 15 -> live 25;
    // b: 10 -> live 20; pushed in successor order, as writes push them.
    #[test]
    fn restored_history_compacts_alike() {
        let mut history = History::default();
        for (key, revision, successor) in [(b"a", 5, 15), (b"b", 10, 20), (b"a", 15, 25)] {
            let version = Version {
                revision,
                entry: Some(entry("v", revision)),
            };
            history.push(key, version, successor);
        }
        let versions: BTreeMap<Vec<u8>, Vec<Version>> = history
            .iter()
            .map(|(key, list)| (key.to_vec(), list.to_vec()))
            .collect();
        let live = |key: &[u8]| Some(if key == b"a" { 25 } else { 20 });
        let mut restored = History::restored(versions, live);
        assert_eq!(restored, history);
        history.compact(20, live);
        restored.compact(20, live);
        assert_eq!(restored, history);
        assert_eq!(history.version_count(), 1);
    }
}
