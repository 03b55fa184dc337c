//! The keyspace of one group: a hash index that serves point reads and writes without
//! comparing keys, beside an ordered set of the same keys for ranges and snapshots.
//!
//! Keys of one group tend to share long prefixes (`key-00001234`), so every comparison in
//! an ordered map runs into a `memcmp` of most of the key, a dozen times per lookup. The
//! hash map finds a key with one hash and one comparison; the ordered set is touched only
//! when a key appears or disappears. Nothing ever iterates the hash map: every walk in key
//! order goes through the ordered set, so the hash map's seeds and layout never show in an
//! answer or a snapshot.
//!
//! A third index holds the keys attached to each lease, so that a revocation finds them
//! without a walk of the keyspace. It is derived from the entries (a restore rebuilds
//! it), and only the methods here change an entry's lease.

use std::collections::btree_set;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;

use super::command::RANGE_END_UNBOUNDED;
use super::store::Entry;

/// The keys of a group with their entries.
#[derive(Clone, Default)]
pub(crate) struct Keys {
    entries: HashMap<Vec<u8>, Entry, SeededHasherBuilder>,
    /// The same keys as `entries`, in order.
    ordered: BTreeSet<Vec<u8>>,
    /// The keys whose entry names a lease, by lease.
    by_lease: BTreeMap<u64, BTreeSet<Vec<u8>>>,
}

/// Equal key sets with equal entries; the hash map compares regardless of its layout.
impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Keys {}

/// Printed in key order, like the ordered map it replaces.
impl fmt::Debug for Keys {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}

impl Keys {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// An entry to change in place; its lease must stay as it is (use [`Keys::insert`] or
    /// [`Keys::replace`] to change it).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }

    /// Adds a key that is not present. Panics if it is: callers look it up first, and
    /// silently replacing would hide a bug that loses an entry's history.
    pub(crate) fn insert_new(&mut self, key: Vec<u8>, entry: Entry) {
        let added = self.ordered.insert(key.clone());
        assert!(added, "insert_new of a present key");
        if entry.lease != 0 {
            self.by_lease
                .entry(entry.lease)
                .or_default()
                .insert(key.clone());
        }
        self.entries.insert(key, entry);
    }

    /// Sets `key` to `entry`, returning the entry it replaces.
    pub(crate) fn insert(&mut self, key: Vec<u8>, entry: Entry) -> Option<Entry> {
        if self.entries.contains_key(key.as_slice()) {
            return self.replace(&key, entry);
        }
        self.insert_new(key, entry);
        None
    }

    /// Replaces the entry of a present key, returning the old one (`None`, and nothing
    /// changes, when the key is absent).
    pub(crate) fn replace(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        let new_lease = entry.lease;
        let present = self.entries.get_mut(key)?;
        let old = std::mem::replace(present, entry);
        if old.lease != new_lease {
            self.unlink_lease(old.lease, key);
            if new_lease != 0 {
                self.by_lease
                    .entry(new_lease)
                    .or_default()
                    .insert(key.to_vec());
            }
        }
        Some(old)
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        let removed = self.ordered.remove(key);
        debug_assert!(removed, "key in the hash index but not in the ordered set");
        self.unlink_lease(entry.lease, key);
        Some(entry)
    }

    fn unlink_lease(&mut self, lease: u64, key: &[u8]) {
        if lease == 0 {
            return;
        }
        if let Some(keys) = self.by_lease.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_lease.remove(&lease);
            }
        }
    }

    /// The keys attached to `lease`, in key order.
    pub(crate) fn of_lease(&self, lease: u64) -> impl Iterator<Item = &Vec<u8>> + '_ {
        self.by_lease.get(&lease).into_iter().flatten()
    }

    /// How many keys are attached to `lease`.
    pub(crate) fn lease_key_count(&self, lease: u64) -> usize {
        self.by_lease.get(&lease).map_or(0, BTreeSet::len)
    }

    /// The greatest key, for the restore's order check.
    pub(crate) fn last_key(&self) -> Option<&[u8]> {
        self.ordered.last().map(Vec::as_slice)
    }

    /// Every key with its entry, in key order.
    pub(crate) fn iter(&self) -> KeyRange<'_> {
        KeyRange::Ordered {
            keys: self.ordered.range::<[u8], _>(..),
            entries: &self.entries,
        }
    }

    /// The keys of `[key, range_end)`, of `key` alone when `range_end` is empty, or of every
    /// key from `key` on when `range_end` is the unbounded marker, in key order. A range end
    /// that does not sort after the key selects nothing (validation refuses the inverted
    /// case; this keeps the store from panicking even without it).
    pub(crate) fn range<'a>(&'a self, key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        if range_end.is_empty() {
            return KeyRange::One(self.entries.get_key_value(key));
        }
        let end = if range_end == RANGE_END_UNBOUNDED {
            Bound::Unbounded
        } else if range_end <= key {
            Bound::Excluded(key)
        } else {
            Bound::Excluded(range_end)
        };
        KeyRange::Ordered {
            keys: self.ordered.range::<[u8], _>((Bound::Included(key), end)),
            entries: &self.entries,
        }
    }

    /// Checks that the hash index and the ordered set hold the same keys.
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        assert_eq!(self.entries.len(), self.ordered.len());
        for (lease, keys) in &self.by_lease {
            for key in keys {
                assert_eq!(self.entries.get(key).map(|entry| entry.lease), Some(*lease));
            }
        }
        let leased = self
            .entries
            .values()
            .filter(|entry| entry.lease != 0)
            .count();
        assert_eq!(
            leased,
            self.by_lease.values().map(BTreeSet::len).sum::<usize>()
        );
        for key in &self.ordered {
            assert!(
                self.entries.contains_key(key),
                "ordered key {key:?} not indexed"
            );
        }
    }
}

/// Keys with their entries in key order: one looked up by hash, or a walk of the ordered
/// set that finds each entry by hash.
#[derive(Debug)]
pub(crate) enum KeyRange<'a> {
    One(Option<(&'a Vec<u8>, &'a Entry)>),
    Ordered {
        keys: btree_set::Range<'a, Vec<u8>>,
        entries: &'a HashMap<Vec<u8>, Entry, SeededHasherBuilder>,
    },
}

impl<'a> Iterator for KeyRange<'a> {
    type Item = (&'a Vec<u8>, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            KeyRange::One(found) => found.take(),
            KeyRange::Ordered { keys, entries } => {
                let key = keys.next()?;
                let entry = entries.get(key.as_slice());
                assert!(entry.is_some(), "ordered key missing from the hash index");
                entry.map(|entry| (key, entry))
            }
        }
    }
}

/// Makes [`SeededHasher`]s keyed by two random words chosen when the map is made; the
/// key index and the session table hash with it.
///
/// The hash only has to spread keys and client ids, never to be the same on two replicas,
/// since nothing depends on a map's layout. Random seeds keep a client from choosing keys
/// that collide on purpose and turn each lookup into a scan, which a fixed fast hash would
/// allow.
#[derive(Clone, Debug)]
pub(crate) struct SeededHasherBuilder {
    seeds: [u64; 2],
}

impl Default for SeededHasherBuilder {
    fn default() -> SeededHasherBuilder {
        // std's RandomState draws from the operating system once per thread and varies from
        // there; hashing two constants with it yields two random words.
        let random = RandomState::new();
        SeededHasherBuilder {
            seeds: [random.hash_one(0u64), random.hash_one(1u64) | 1],
        }
    }
}

impl BuildHasher for SeededHasherBuilder {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher {
            state: self.seeds[0],
            seed: self.seeds[1],
        }
    }
}

/// A fast keyed hash of byte strings: each 16-byte block (the last one read with
/// overlapping loads, so no byte is padded) is mixed in with one 64×64→128-bit multiply
/// whose halves are folded together.
#[derive(Debug)]
pub(crate) struct SeededHasher {
    state: u64,
    seed: u64,
}

/// The multiplier that mixes lengths and other integers in.
const INTEGER_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The full product of `left` and `right` with its high half folded onto its low half.
fn folded_multiply(left: u64, right: u64) -> u64 {
    let product = u128::from(left) * u128::from(right);
    (product as u64) ^ ((product >> 64) as u64)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u64::from(u32::from_le_bytes(word))
}

impl SeededHasher {
    fn mix(&mut self, low: u64, high: u64) {
        self.state = folded_multiply(low ^ self.state, high ^ self.seed);
    }
}

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while rest.len() > 16 {
            self.mix(u64_at(rest, 0), u64_at(rest, 8));
            rest = &rest[16..];
        }
        // The last 1 to 16 bytes. The length is hashed separately (the slice's `Hash`
        // writes it first), and for each length these loads cover every byte.
        let length = rest.len();
        let (low, high) = if length >= 8 {
            (u64_at(rest, 0), u64_at(rest, length - 8))
        } else if length >= 4 {
            (u32_at(rest, 0), u32_at(rest, length - 4))
        } else if length > 0 {
            let spread = u64::from(rest[0])
                | u64::from(rest[length / 2]) << 8
                | u64::from(rest[length - 1]) << 16;
            (spread, 0)
        } else {
            return;
        };
        self.mix(low, high);
    }

    fn write_u64(&mut self, value: u64) {
        self.state = folded_multiply(self.state ^ value, INTEGER_MULTIPLIER);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64) -> Entry {
        Entry {
            value: vec![version as u8],
            create_revision: 1,
            mod_revision: version,
            version,
            lease: 0,
        }
    }

    // Random inserts and removes leave the hash index and the ordered set with the same
    // keys, and ranges answer exactly what an ordered map answers.
    #[test]
    fn hash_index_agrees_with_an_ordered_map() {
        let alphabet = b"ab\0\xff";
        let replay = "cargo test --lib kv::keys::tests::hash_index_agrees_with_an_ordered_map";
        crate::testing::run_seeded_cases(replay, 0, 100, |seed| {
            let mut random = crate::raft::rng::SeededRng::new(seed);
            let mut next = |bound: u64| random.range(0, bound);
            let mut keys = Keys::default();
            let mut model = std::collections::BTreeMap::new();
            for step in 0..400u64 {
                let length = 1 + next(3) as usize;
                let key: Vec<u8> = (0..length)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect();
                match next(3) {
                    0 => assert_eq!(keys.remove(&key), model.remove(&key), "seed {seed}"),
                    _ => assert_eq!(
                        keys.insert(key.clone(), entry(step)),
                        model.insert(key, entry(step)),
                        "seed {seed}"
                    ),
                }
                keys.assert_consistent();
                assert_eq!(keys.len(), model.len());
                let end_length = next(4) as usize;
                let start: Vec<u8> = (0..1 + next(2) as usize)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect();
                let range_end: Vec<u8> = (0..end_length)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect();
                let found: Vec<(&Vec<u8>, &Entry)> = keys.range(&start, &range_end).collect();
                let expected: Vec<(&Vec<u8>, &Entry)> = if range_end.is_empty() {
                    model.get_key_value(&start).into_iter().collect()
                } else if range_end.as_slice() == RANGE_END_UNBOUNDED {
                    model.range(start.clone()..).collect()
                } else if range_end <= start {
                    Vec::new()
                } else {
                    model.range(start.clone()..range_end.clone()).collect()
                };
                assert_eq!(found, expected, "seed {seed} step {step}");
            }
            let all: Vec<(&Vec<u8>, &Entry)> = keys.iter().collect();
            let expected: Vec<(&Vec<u8>, &Entry)> = model.iter().collect();
            assert_eq!(all, expected, "seed {seed}");
            assert_eq!(keys.last_key(), model.keys().next_back().map(Vec::as_slice));
        });
    }

    // Equal contents are equal whatever the hash seeds, and differing entries are not.
    #[test]
    fn equality_ignores_the_hash_layout() {
        let mut left = Keys::default();
        let mut right = Keys::default();
        for number in 0..100u64 {
            left.insert(format!("key-{number:08}").into_bytes(), entry(number));
        }
        for number in (0..100u64).rev() {
            right.insert(format!("key-{number:08}").into_bytes(), entry(number));
        }
        assert_eq!(left, right);
        right.insert(b"key-00000007".to_vec(), entry(8));
        assert_ne!(left, right);
    }

    // Every length from 0 to 40 and every single-byte change gives a different hash, so
    // the tail loads really cover every byte.
    #[test]
    fn hash_covers_every_byte() {
        let builder = SeededHasherBuilder::default();
        for length in 1..=40usize {
            let base: Vec<u8> = (0..length as u8).collect();
            let base_hash = builder.hash_one(&base);
            for position in 0..length {
                let mut changed = base.clone();
                changed[position] ^= 0x5a;
                assert_ne!(
                    builder.hash_one(&changed),
                    base_hash,
                    "length {length} byte {position} does not reach the hash"
                );
            }
        }
    }
}
