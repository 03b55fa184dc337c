//! Lowe's memo for the search: the set of linearized operations of a key, kept compact and
//! hashed incrementally, and the cache of configurations already explored.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::model::{mix64, MixHasher};
use super::search::{Constraint, Position};

/// The linearized operations of a key.
///
/// Completed and pending operations live in two bitsets. The completed one is stored in
/// the cache from its first word with a gap onwards: the search linearizes completed
/// operations roughly in invoke order, so below some point every one is linearized, and
/// only a window of a few words past that point differs between configurations. That keeps
/// a cache entry a few words long even when the key has thousands of operations.
///
/// Hashes of the completed and of the pending members are kept up to date as bits flip
/// (each operation has a fixed random 64-bit code; a hash is the xor of the codes of the
/// members), so hashing a set costs nothing per lookup, and the hash of the set without
/// some members is a few xors away.
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
    completed_hash: u64,
    pending_hash: u64,
    pending_count: u32,
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
        let codes = (0..pending.len())
            .map(|position| mix64(position as u64 ^ 0x5851_f42d_4c95_7f2d))
            .collect();
        Linearized {
            index,
            pending: pending.to_vec(),
            completed: vec![0; (counts[0] as usize).div_ceil(64)],
            pending_words: vec![0; (counts[1] as usize).div_ceil(64)],
            completed_low: 0,
            completed_high_word: 0,
            codes,
            completed_hash: 0,
            pending_hash: 0,
            pending_count: 0,
        }
    }

    /// Adds the operation at `position` if absent, removes it if present.
    pub(super) fn flip(&mut self, position: u32) {
        let index = self.index[position as usize] as usize;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.pending[position as usize] {
            self.pending_hash ^= self.codes[position as usize];
            self.pending_words[word] ^= bit;
            if self.pending_words[word] & bit != 0 {
                self.pending_count += 1;
            } else {
                self.pending_count -= 1;
            }
            return;
        }
        self.completed_hash ^= self.codes[position as usize];
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

    /// The word and bit of a linearized pending operation in `pending_words`.
    fn pending_bit(&self, position: u32) -> (usize, u64) {
        debug_assert!(self.pending[position as usize], "not a pending operation");
        let index = self.index[position as usize] as usize;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        debug_assert_ne!(self.pending_words[word] & bit, 0, "not linearized");
        (word, bit)
    }
}

/// How many of the most recently linearized pending operations [`Cache::visit`] tries
/// leaving out of a configuration to find a finished entry that covers it.
pub(super) const PENDING_PROBES_MAX: usize = 4;

/// The most slot lookups one visit makes: the summary's slot, the configuration itself,
/// and for each of at most three constraints the same set under a looser one and its
/// subsets (each of the last few pending operations left out alone, and the last two,
/// three, ... together).
pub(super) const LOOKUPS_PER_VISIT_MAX: u64 = 2 + 3 * (2 * PENDING_PROBES_MAX as u64 - 1);

/// Lowe's memo, extended for pending operations: every configuration (linearized set,
/// position) the search has reached, and which of them it has finished exploring (without
/// finding a linearization, or the search would have stopped).
///
/// An entry is found by the hash of its whole configuration: the completed and the
/// pending operations linearized, the state and the constraint. Two configurations share
/// an entry only if all four are equal, so their futures are the same; and a lookup costs
/// the same however many entries there are.
///
/// A configuration is pruned when a finished entry covers it: the same completed
/// operations linearized, a subset of its pending operations, the same state and a
/// constraint that allows at least as much ([`Constraint::looser_or_equal`]). Exact
/// repeats are the special case of Lowe's cache (an exact repeat is always finished: the
/// entries still being explored are the search stack, whose sets are all smaller). The
/// subset case is sound because a pending operation never has to precede anything and
/// accepts any output: a linearization of the rest from the larger configuration,
/// followed by its extra pending operations, would be one from the finished entry, which
/// has none. Without it, every pending write would double the configurations of the rest
/// of the key's history.
///
/// Finding every finished subset would take a scan of all the entries with the same
/// completed operations and state, and those grow with the steps taken: on a fault-run
/// history with 40 pending writes, thousands per lookup after a million steps, which made
/// each step slower than the one before. So a visit looks up only a few subsets, each by
/// its hash: the set without any pending operation, without one of the last
/// [`PENDING_PROBES_MAX`] pending operations linearized, and without the last two, three,
/// ... of them together. The depth-first search explores the configuration without a
/// pending operation before the one with it (completed candidates come first), so that is
/// where a covering entry usually is; on random histories with many pending operations
/// these few find about as many covers as the scan did. A configuration found covered is
/// recorded as finished too, so that a larger one can be covered through it. Missing a
/// cover only costs steps, never a verdict.
///
/// Most of those lookups would miss, each a cache miss in a table of millions of entries,
/// so the slot of the configuration with no pending operation and no constraint, whose
/// hash every configuration with the same completed set and state can compute, also
/// holds a [`Summary`] of the entries with that completed set and state; lookups it shows
/// cannot hit are skipped. A configuration without pending operations (most of them, in
/// most histories) is looked up and recorded in that one slot.
///
/// The cost of a visit is therefore bounded by a constant: at most
/// [`LOOKUPS_PER_VISIT_MAX`] lookups and one insert.
pub(super) struct Cache {
    /// The slot of each configuration hash.
    slots: HashMap<u64, Slot, BuildHasherDefault<MixHasher>>,
    entries: Vec<CacheEntry>,
    /// For each entry, its completed window followed by its pending words.
    words: Vec<u64>,
    /// The pending words of a configuration with some operations left out.
    scratch: Vec<u64>,
    counters: CacheCounters,
}

/// What the cache keeps under one configuration hash.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The first entry with this hash; entries whose hashes are equal (distinct
    /// configurations only by a 64-bit collision) chain through `CacheEntry::next`.
    first: u32,
    /// Meaningful in the slot of a configuration without pending operations and without
    /// constraint: what the entries with its completed set and state have.
    summary: Summary,
}

/// What the entries with one completed set and state have (or, after a 64-bit hash
/// collision, the entries of two; a summary only ever says which lookups to skip, so it
/// may overstate what exists, never understate it).
#[derive(Clone, Copy, Debug)]
struct Summary {
    /// The fewest pending operations in the set of any entry, at most `u16::MAX`.
    pending_min: u16,
    /// Bit [`constraint_kind`] is set if some entry has a constraint of that kind.
    constraint_kinds: u8,
}

impl Slot {
    const EMPTY: Slot = Slot {
        first: NO_ENTRY,
        summary: Summary {
            pending_min: u16::MAX,
            constraint_kinds: 0,
        },
    };

    /// Notes an entry with `pending_count` pending operations and `constraint`.
    fn summarize(&mut self, pending_count: u32, constraint: Constraint) {
        let pending_count = u16::try_from(pending_count).unwrap_or(u16::MAX);
        self.summary.pending_min = self.summary.pending_min.min(pending_count);
        self.summary.constraint_kinds |= constraint_kind(constraint);
    }
}

/// What the cache did, for tests that check the cost of a step stays flat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CacheCounters {
    /// Configurations looked up by the search.
    pub(super) visits: u64,
    /// Hash lookups of slots.
    pub(super) lookups: u64,
    /// Entries compared word by word with a configuration looked for.
    pub(super) entries_compared: u64,
    /// Entries recorded.
    pub(super) entries: u64,
}

/// Chain terminator in [`Cache`]; entry numbers start at 0.
const NO_ENTRY: u32 = u32::MAX;

/// The part of a configuration hash that comes from its position.
fn position_code(position: Position) -> u64 {
    let constraint = match position.constraint {
        Constraint::Free => 1,
        Constraint::NoBlindWrite => 2,
        Constraint::FailedCompareAndSetExpecting(state) => 3 | (u64::from(state) << 2),
    };
    mix64(mix64(constraint) ^ u64::from(position.state))
}

/// The bit of a constraint's kind in [`Summary::constraint_kinds`].
fn constraint_kind(constraint: Constraint) -> u8 {
    match constraint {
        Constraint::Free => 1,
        Constraint::NoBlindWrite => 2,
        Constraint::FailedCompareAndSetExpecting(_) => 4,
    }
}

/// The pending operations a lookup leaves out of the linearized set.
#[derive(Clone, Copy, Debug)]
enum LeftOut<'a> {
    Nothing,
    These(&'a [u32]),
    All,
}

impl Cache {
    pub(super) fn new() -> Cache {
        Cache {
            slots: HashMap::default(),
            entries: Vec::new(),
            words: Vec::new(),
            scratch: Vec::new(),
            counters: CacheCounters::default(),
        }
    }

    /// Records a configuration and returns its entry, or `None` if a finished entry
    /// covers it. `recent_pending` lists the pending operations of the set in the order
    /// they were linearized; see [`Cache`] for the subsets of them tried.
    pub(super) fn visit(
        &mut self,
        linearized: &Linearized,
        position: Position,
        recent_pending: &[u32],
    ) -> Option<u32> {
        self.counters.visits += 1;
        let lookups_before = self.counters.lookups;
        let entry = self.visit_counted(linearized, position, recent_pending);
        debug_assert!(
            self.counters.lookups - lookups_before <= LOOKUPS_PER_VISIT_MAX,
            "a visit made more lookups than LOOKUPS_PER_VISIT_MAX"
        );
        entry
    }

    fn visit_counted(
        &mut self,
        linearized: &Linearized,
        position: Position,
        recent_pending: &[u32],
    ) -> Option<u32> {
        let plain = Position {
            state: position.state,
            constraint: Constraint::Free,
        };
        let summary_hash = linearized.completed_hash ^ position_code(plain);
        if linearized.pending_count == 0 {
            // A constraint comes only from a pending operation linearized last.
            debug_assert_eq!(position.constraint, Constraint::Free);
            // One slot holds the configuration and its summary: look up and record at once.
            let Cache {
                slots,
                entries,
                words,
                counters,
                ..
            } = self;
            counters.lookups += 1;
            let slot = slots.entry(summary_hash).or_insert(Slot::EMPTY);
            let pending = &linearized.pending_words;
            if chain_has_finished(
                entries, words, counters, slot.first, linearized, position, pending,
            ) {
                return None;
            }
            return Some(push_entry(
                entries, words, counters, slot, linearized, position, false,
            ));
        }
        self.counters.lookups += 1;
        let cover = match self.slots.get(&summary_hash) {
            Some(&slot) => self.cover(linearized, position, recent_pending, slot),
            None => Cover::None,
        };
        let finished = match cover {
            // Recorded already, summary included.
            Cover::Itself => return None,
            Cover::Other => true,
            Cover::None => false,
        };
        let hash = linearized.completed_hash ^ linearized.pending_hash ^ position_code(position);
        let entry = self.insert(hash, linearized, position, finished);
        self.slots
            .entry(summary_hash)
            .or_insert(Slot::EMPTY)
            .summarize(linearized.pending_count, position.constraint);
        (!finished).then_some(entry)
    }

    /// Marks an entry fully explored: no linearization continues from it.
    pub(super) fn finish(&mut self, entry: u32) {
        self.entries[entry as usize].finished = true;
    }

    pub(super) fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Looks for a finished entry that covers a configuration with pending operations,
    /// among those the summary slot `plain` of its completed set and state says may exist.
    fn cover(
        &mut self,
        linearized: &Linearized,
        position: Position,
        recent_pending: &[u32],
        plain: Slot,
    ) -> Cover {
        let summary = plain.summary;
        let own_kind = constraint_kind(position.constraint);
        if summary.constraint_kinds & own_kind != 0
            && self.is_finished(linearized, position, LeftOut::Nothing)
        {
            return Cover::Itself;
        }
        // Without any pending operation: in the summary slot itself.
        if summary.pending_min == 0
            && self.chain_has_finished(
                plain.first,
                linearized,
                Position {
                    state: position.state,
                    constraint: Constraint::Free,
                },
                LeftOut::All,
            )
        {
            return Cover::Other;
        }
        let recent = &recent_pending[recent_pending.len().saturating_sub(PENDING_PROBES_MAX)..];
        // Each of the last few alone, then the last two, three, ... together: every
        // contiguous run of `recent` that is one operation or ends at the last one.
        let singles = (0..recent.len()).rev().map(|start| &recent[start..=start]);
        let suffixes = (0..recent.len().saturating_sub(1))
            .rev()
            .map(|start| &recent[start..]);
        let subsets = singles.chain(suffixes).filter(|left_out| {
            let left = linearized.pending_count - left_out.len() as u32;
            left > 0 && left >= u32::from(summary.pending_min)
        });
        for (looseness, constraint) in position.constraint.looser_or_equal().enumerate() {
            if summary.constraint_kinds & constraint_kind(constraint) == 0 {
                continue;
            }
            let candidate = Position {
                state: position.state,
                constraint,
            };
            if looseness > 0 && self.is_finished(linearized, candidate, LeftOut::Nothing) {
                return Cover::Other;
            }
            for left_out in subsets.clone() {
                if self.is_finished(linearized, candidate, LeftOut::These(left_out)) {
                    return Cover::Other;
                }
            }
        }
        Cover::None
    }

    /// True if the configuration of `linearized` less the pending operations `left_out`,
    /// at `position`, has a finished entry.
    fn is_finished(
        &mut self,
        linearized: &Linearized,
        position: Position,
        left_out: LeftOut<'_>,
    ) -> bool {
        self.counters.lookups += 1;
        let set_hash = match left_out {
            LeftOut::Nothing => linearized.completed_hash ^ linearized.pending_hash,
            LeftOut::These(left_out) => left_out.iter().fold(
                linearized.completed_hash ^ linearized.pending_hash,
                |hash, &left| hash ^ linearized.codes[left as usize],
            ),
            LeftOut::All => linearized.completed_hash,
        };
        match self.slots.get(&(set_hash ^ position_code(position))) {
            Some(slot) => self.chain_has_finished(slot.first, linearized, position, left_out),
            None => false,
        }
    }

    /// True if the chain from `first` has a finished entry for the configuration of
    /// `linearized` less `left_out`, at `position`.
    fn chain_has_finished(
        &mut self,
        first: u32,
        linearized: &Linearized,
        position: Position,
        left_out: LeftOut<'_>,
    ) -> bool {
        if first == NO_ENTRY {
            return false;
        }
        let pending: &[u64] = match left_out {
            LeftOut::Nothing => &linearized.pending_words,
            LeftOut::These(left_out) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&linearized.pending_words);
                for &left in left_out {
                    let (word, bit) = linearized.pending_bit(left);
                    self.scratch[word] &= !bit;
                }
                &self.scratch
            }
            LeftOut::All => {
                self.scratch.clear();
                self.scratch.resize(linearized.pending_words.len(), 0);
                &self.scratch
            }
        };
        chain_has_finished(
            &self.entries,
            &self.words,
            &mut self.counters,
            first,
            linearized,
            position,
            pending,
        )
    }

    /// Records an entry under `hash`; `finished` if it is known to lead nowhere.
    fn insert(
        &mut self,
        hash: u64,
        linearized: &Linearized,
        position: Position,
        finished: bool,
    ) -> u32 {
        let slot = self.slots.entry(hash).or_insert(Slot::EMPTY);
        push_entry(
            &mut self.entries,
            &mut self.words,
            &mut self.counters,
            slot,
            linearized,
            position,
            finished,
        )
    }
}

/// True if the chain from `first` has a finished entry for the configuration with the
/// completed operations of `linearized`, the pending words `pending`, at `position`.
fn chain_has_finished(
    entries: &[CacheEntry],
    words: &[u64],
    counters: &mut CacheCounters,
    first: u32,
    linearized: &Linearized,
    position: Position,
    pending: &[u64],
) -> bool {
    let window = linearized.completed_window();
    let mut candidate = first;
    while candidate != NO_ENTRY {
        counters.entries_compared += 1;
        let entry = &entries[candidate as usize];
        if entry.finished
            && entry.position == position
            && entry.low_word as usize == linearized.low_word()
            && entry.window_words as usize == window.len()
        {
            let stored = &words[entry.words_start..][..window.len() + pending.len()];
            let (stored_window, stored_pending) = stored.split_at(window.len());
            if stored_window == window && stored_pending == pending {
                return true;
            }
        }
        candidate = entry.next;
    }
    false
}

/// Records the configuration of `linearized` at `position` as a new entry at the head of
/// `slot`'s chain.
fn push_entry(
    entries: &mut Vec<CacheEntry>,
    words: &mut Vec<u64>,
    counters: &mut CacheCounters,
    slot: &mut Slot,
    linearized: &Linearized,
    position: Position,
    finished: bool,
) -> u32 {
    let window = linearized.completed_window();
    let entry = u32::try_from(entries.len()).expect("cache entries fit in u32");
    slot.summarize(linearized.pending_count, position.constraint);
    entries.push(CacheEntry {
        position,
        next: slot.first,
        finished,
        low_word: u32::try_from(linearized.low_word()).expect("bitset words fit in u32"),
        window_words: u32::try_from(window.len()).expect("bitset words fit in u32"),
        words_start: words.len(),
    });
    slot.first = entry;
    words.extend_from_slice(window);
    words.extend_from_slice(&linearized.pending_words);
    counters.entries += 1;
    entry
}

struct CacheEntry {
    position: Position,
    next: u32,
    finished: bool,
    low_word: u32,
    window_words: u32,
    words_start: usize,
}

/// What [`Cache::cover`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cover {
    /// Nothing: the configuration is new.
    None,
    /// The configuration itself, finished.
    Itself,
    /// Another finished entry.
    Other,
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
        let hash = linearized.completed_hash;
        linearized.flip(2);
        linearized.flip(2);
        assert_eq!(linearized.completed_hash, hash);
        assert_eq!(linearized.pending_count, 1);
    }

    fn at(state: u32, constraint: Constraint) -> Position {
        Position { state, constraint }
    }

    // A finished configuration covers the ones with the same completed set and state, a
    // looser or equal constraint and more pending operations among the last few
    // linearized; nothing else.
    #[test]
    fn finished_entries_cover_supersets_of_recent_pending() {
        // Positions 0 and 1 are completed, 2 to 7 pending.
        let pending: Vec<bool> = (0..8).map(|position| position >= 2).collect();
        let mut linearized = Linearized::new(&pending);
        let mut cache = Cache::new();
        linearized.flip(0);
        let free = at(5, Constraint::Free);
        let entry = cache
            .visit(&linearized, free, &[])
            .expect("a new configuration");
        // An entry still being explored covers nothing.
        linearized.flip(2);
        let with_two = cache
            .visit(&linearized, free, &[2])
            .expect("not covered yet");
        linearized.flip(2);
        cache.finish(entry);
        cache.finish(with_two);
        assert_eq!(cache.visit(&linearized, free, &[]), None, "an exact repeat");
        let strict = at(5, Constraint::NoBlindWrite);
        linearized.flip(2);
        assert_eq!(
            cache.visit(&linearized, strict, &[2]),
            None,
            "a stricter constraint"
        );
        linearized.flip(2);
        assert!(cache
            .visit(&linearized, at(6, Constraint::Free), &[])
            .is_some());

        // {3}, {3, 4} and {3, 4, 5} (the last two and three together) are covered by {}.
        for (position, recent) in [(3, &[3][..]), (4, &[3, 4]), (5, &[3, 4, 5])] {
            linearized.flip(position);
            assert_eq!(cache.visit(&linearized, free, recent), None, "{recent:?}");
        }
        // {3, 4, 5, 6, 7}: leaving out the last two gives {3, 4, 5}, found covered above.
        linearized.flip(6);
        linearized.flip(7);
        assert_eq!(cache.visit(&linearized, free, &[3, 4, 5, 6, 7]), None);
        // {2, ..., 7} with 2 linearized last: {3, ..., 7}, found covered just now.
        linearized.flip(2);
        assert_eq!(cache.visit(&linearized, free, &[3, 4, 5, 6, 7, 2]), None);
        // Found covered, it was recorded as finished: now it is an exact repeat.
        assert_eq!(cache.visit(&linearized, free, &[2, 3, 4, 5, 6, 7]), None);
        // Another completed set is another configuration.
        linearized.flip(1);
        assert!(cache
            .visit(&linearized, free, &[3, 4, 5, 6, 7, 2])
            .is_some());
        let counters = cache.counters();
        assert!(counters.lookups <= counters.visits * LOOKUPS_PER_VISIT_MAX);
    }

    // Only subsets without some of the last few pending operations are tried: the same set
    // is covered when its extra operations were linearized last, and not when they were
    // linearized before the ones the finished entry has.
    #[test]
    fn covers_are_looked_for_among_the_last_pending_operations() {
        let pending = vec![true; 5];
        let free = at(1, Constraint::Free);
        for (order, covered) in [([0, 1, 2, 3, 4], true), ([2, 3, 4, 0, 1], false)] {
            let mut linearized = Linearized::new(&pending);
            let mut cache = Cache::new();
            linearized.flip(0);
            linearized.flip(1);
            let entry = cache.visit(&linearized, free, &[0, 1]).expect("new");
            cache.finish(entry);
            for position in 2..5 {
                linearized.flip(position);
            }
            let found = cache.visit(&linearized, free, &order).is_none();
            assert_eq!(found, covered, "{order:?}");
        }
    }
}
