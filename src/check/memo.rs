//! Lowe's memo for the search: the set of linearized operations of a key, kept compact and
//! hashed incrementally, and the cache of configurations already explored.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::model::{mix64, MixHasher};
use super::search::Position;

/// The linearized operations of a key.
///
/// Completed and pending operations live in two bitsets. The completed one is stored in
/// the cache from its first word with a gap onwards: the search linearizes completed
/// operations roughly in invoke order, so below some point every one is linearized, and
/// only a window of a few words past that point differs between configurations. That keeps
/// a cache entry a few words long even when the key has thousands of operations.
///
/// A hash of the completed members is kept up to date as bits flip (each completed
/// operation has a fixed random 64-bit code; the hash is the xor of the codes of the
/// members), so hashing a set costs nothing per lookup. Pending operations are left out
/// of the hash on purpose: the cache must find entries that differ only in pending
/// operations under one hash (see [`Cache`]).
pub(super) struct Linearized {
    /// For each operation (by position in the key's history), its index in the bitset of
    /// its kind.
    index: Vec<u32>,
    pending: Vec<bool>,
    completed: Vec<u64>,
    pending_words: Vec<u64>,
    /// Every completed operation with a lower index is linearized; this one is not.
    completed_low: usize,
    /// Every word of `completed` from this one on is zero.
    completed_high_word: usize,
    codes: Vec<u64>,
    hash: u64,
}

impl Linearized {
    /// An empty set over the operations of a key, `pending[position]` telling which are
    /// pending.
    pub(super) fn new(pending: &[bool]) -> Linearized {
        let mut counts = [0u32; 2];
        let index = pending
            .iter()
            .map(|&pending| {
                let count = &mut counts[usize::from(pending)];
                *count += 1;
                *count - 1
            })
            .collect();
        let codes = pending
            .iter()
            .enumerate()
            .map(|(position, &pending)| {
                if pending {
                    0
                } else {
                    mix64(position as u64 ^ 0x5851_f42d_4c95_7f2d)
                }
            })
            .collect();
        Linearized {
            index,
            pending: pending.to_vec(),
            completed: vec![0; (counts[0] as usize).div_ceil(64)],
            pending_words: vec![0; (counts[1] as usize).div_ceil(64)],
            completed_low: 0,
            completed_high_word: 0,
            codes,
            hash: 0,
        }
    }

    /// Adds the operation at `position` if absent, removes it if present.
    pub(super) fn flip(&mut self, position: u32) {
        let index = self.index[position as usize] as usize;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.pending[position as usize] {
            self.pending_words[word] ^= bit;
            return;
        }
        self.hash ^= self.codes[position as usize];
        self.completed[word] ^= bit;
        if self.completed[word] & bit != 0 {
            self.completed_high_word = self.completed_high_word.max(word + 1);
            if index == self.completed_low {
                self.advance_low();
            }
        } else {
            self.completed_low = self.completed_low.min(index);
            while self.completed_high_word > 0 && self.completed[self.completed_high_word - 1] == 0
            {
                self.completed_high_word -= 1;
            }
        }
    }

    fn advance_low(&mut self) {
        while let Some(&word) = self.completed.get(self.completed_low / 64) {
            let shift = self.completed_low % 64;
            let ones = (word >> shift).trailing_ones() as usize;
            self.completed_low += ones;
            if shift + ones < 64 {
                break;
            }
        }
    }

    /// The first word of the completed bitset that is stored; all words before it are
    /// full.
    fn low_word(&self) -> usize {
        self.completed_low / 64
    }

    /// The stored part of the completed bitset.
    fn completed_window(&self) -> &[u64] {
        let low_word = self.low_word();
        &self.completed[low_word..self.completed_high_word.max(low_word)]
    }
}

/// Lowe's memo, extended for pending operations: every configuration (linearized set,
/// position) the search has reached, and which of them it has finished exploring (without
/// finding a linearization, or the search would have stopped).
///
/// A configuration is pruned when a finished entry covers it: the same completed
/// operations linearized, a subset of its pending operations, and a position that covers
/// its position ([`Position::covers`]). Exact repeats are the special case of Lowe's cache
/// (an exact repeat is always finished: the entries still being explored are the search
/// stack, whose sets are all smaller). The subset case is sound because a pending
/// operation never has to precede anything and accepts any output: a linearization of the
/// rest from the larger configuration, followed by its extra pending operations, would be
/// one from the finished entry, which has none. Without it, every pending write would
/// double the configurations of the rest of the key's history.
pub(super) struct Cache {
    /// First entry for a hash of (completed set, state); entries with equal hashes chain
    /// through `next`.
    first_by_hash: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    entries: Vec<CacheEntry>,
    /// For each entry, its completed window followed by its pending words.
    words: Vec<u64>,
}

struct CacheEntry {
    position: Position,
    next: u32,
    finished: bool,
    low_word: u32,
    window_words: u32,
    words_start: usize,
}

/// Chain terminator in [`Cache`]; entry numbers start at 0.
const NO_ENTRY: u32 = u32::MAX;

impl Cache {
    pub(super) fn new() -> Cache {
        Cache {
            first_by_hash: HashMap::default(),
            entries: Vec::new(),
            words: Vec::new(),
        }
    }

    /// Records a configuration and returns its entry, or `None` if a finished entry
    /// covers it.
    pub(super) fn visit(&mut self, linearized: &Linearized, position: Position) -> Option<u32> {
        // Only the state goes into the hash, not the constraint, so that one chain holds
        // every entry that may cover this one.
        let hash = linearized.hash ^ mix64(u64::from(position.state));
        let low_word = linearized.low_word();
        let window = linearized.completed_window();
        let pending = &linearized.pending_words;
        let head = self.first_by_hash.entry(hash).or_insert(NO_ENTRY);
        let mut candidate = *head;
        while candidate != NO_ENTRY {
            let entry = &self.entries[candidate as usize];
            if entry.finished
                && entry.position.covers(position)
                && entry.low_word as usize == low_word
                && entry.window_words as usize == window.len()
            {
                let (entry_window, entry_pending) = self.words
                    [entry.words_start..entry.words_start + window.len() + pending.len()]
                    .split_at(window.len());
                let pending_subset = entry_pending
                    .iter()
                    .zip(pending)
                    .all(|(&finished, &current)| finished & !current == 0);
                if entry_window == window && pending_subset {
                    return None;
                }
            }
            candidate = entry.next;
        }
        let entry = u32::try_from(self.entries.len()).expect("cache entries fit in u32");
        self.entries.push(CacheEntry {
            position,
            next: *head,
            finished: false,
            low_word: u32::try_from(low_word).expect("bitset words fit in u32"),
            window_words: u32::try_from(window.len()).expect("bitset words fit in u32"),
            words_start: self.words.len(),
        });
        *head = entry;
        self.words.extend_from_slice(window);
        self.words.extend_from_slice(pending);
        Some(entry)
    }

    /// Marks an entry fully explored: no linearization continues from it.
    pub(super) fn finish(&mut self, entry: u32) {
        self.entries[entry as usize].finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The compact form tracks the first unlinearized completed operation and the last
    // non-empty word through sets and clears, and pending operations stay apart.
    #[test]
    fn compact_window_follows_flips() {
        let mut pending = vec![false; 200];
        pending[3] = true;
        let mut linearized = Linearized::new(&pending);
        // Position 3 is pending, so completed index 3 is position 4.
        for position in [0, 1, 2, 4, 5] {
            linearized.flip(position);
        }
        linearized.flip(3);
        assert_eq!(linearized.completed_low, 5);
        assert_eq!(linearized.pending_words, vec![1]);
        for position in 6..=70 {
            linearized.flip(position);
        }
        assert_eq!(linearized.completed_low, 70);
        assert_eq!(linearized.low_word(), 1);
        assert_eq!(linearized.completed_window(), &[(1u64 << 6) - 1]);
        linearized.flip(150);
        assert_eq!(linearized.completed_window().len(), 2);
        linearized.flip(150);
        assert_eq!(linearized.completed_window().len(), 1);
        linearized.flip(2);
        assert_eq!(linearized.completed_low, 2);
        assert_eq!(linearized.low_word(), 0);
        let hash = linearized.hash;
        linearized.flip(2);
        linearized.flip(2);
        assert_eq!(linearized.hash, hash);
    }
}
