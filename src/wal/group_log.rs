//! One group's view of the WAL: its hard state, compaction point, where each live entry
//! sits on disk (runs) and a bounded cache of its most recent entries. Pure bookkeeping,
//! shared by the writer and by recovery so that both apply records the same way.

use std::collections::VecDeque;

use super::record::{Entry, EntryView, HardState, LogPosition};

/// Bytes an entry counts for in the cache besides its payload (the struct and the queue
/// slot), so that many empty entries are bounded too.
pub const CACHED_ENTRY_OVERHEAD_BYTES: usize = 64;

/// Consecutive entries of one term written by one record: where to find them again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first_index: u64,
    pub last_index: u64,
    pub term: u64,
    /// The batch holding the entries. Several records of the group in one batch may make
    /// up one run; reading it back applies them in order ("later records win").
    pub batch_sequence: u64,
}

/// What the caller can learn about a group without reading entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: u64,
    pub hard_state: Option<HardState>,
    /// Entries through this position are covered by a snapshot.
    pub compaction: Option<LogPosition>,
    /// First index of the log (compaction index + 1, or 1).
    pub first_index: u64,
    /// Last index of the log; `first_index - 1` when it holds no entry.
    pub last_index: u64,
    /// Term of the entry at `last_index` (the compaction term, or 0, when the log is empty).
    pub last_term: u64,
}

/// Why an operation does not fit the group's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOperationError {
    /// Appending at `index` would leave a hole or rewrite compacted entries.
    BadAppend { index: u64 },
    /// Compacting to `index` would go back before the current compaction point.
    CompactionRegressed { index: u64, previous: u64 },
}

/// One group's state.
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    hard_state: Option<HardState>,
    /// Batch holding the record of the current hard state (0: none).
    hard_state_batch: u64,
    compaction: Option<LogPosition>,
    /// Batch holding the record of the current compaction point (0: none).
    compaction_batch: u64,
    runs: VecDeque<Run>,
    /// Most recent entries, contiguous, ending at the last index.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
}

fn cached_bytes(entry_payload_bytes: usize) -> usize {
    entry_payload_bytes + CACHED_ENTRY_OVERHEAD_BYTES
}

impl GroupLog {
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    pub fn compaction(&self) -> Option<LogPosition> {
        self.compaction
    }

    pub fn compaction_index(&self) -> u64 {
        self.compaction.map_or(0, |position| position.index)
    }

    pub fn first_index(&self) -> u64 {
        self.compaction_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        self.runs
            .back()
            .map_or(self.compaction_index(), |run| run.last_index)
    }

    /// First index of an entry actually held (runs may start late while recovery has not
    /// yet seen the group's compaction record).
    pub fn first_held_index(&self) -> Option<u64> {
        self.runs.front().map(|run| run.first_index)
    }

    pub fn summary(&self, group_id: u64) -> GroupSummary {
        let last_index = self.last_index();
        GroupSummary {
            group_id,
            hard_state: self.hard_state,
            compaction: self.compaction,
            first_index: self.first_index(),
            last_index,
            last_term: self.term(last_index).unwrap_or(0),
        }
    }

    /// Term of the entry at `index`, when the log knows it (the compaction point counts).
    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some(position) = self.compaction {
            if index == position.index {
                return Some(position.term);
            }
        }
        self.run_of(index).map(|run| run.term)
    }

    /// The run holding `index`.
    pub fn run_of(&self, index: u64) -> Option<&Run> {
        let position = self.runs.partition_point(|run| run.last_index < index);
        self.runs
            .get(position)
            .filter(|run| run.first_index <= index)
    }

    /// Runs overlapping `[low, high)`, in order.
    pub fn runs_between(&self, low: u64, high: u64) -> impl Iterator<Item = &Run> {
        let start = self.runs.partition_point(|run| run.last_index < low);
        self.runs
            .range(start..)
            .take_while(move |run| run.first_index < high)
    }

    /// First index held in the cache.
    pub fn cache_first_index(&self) -> Option<u64> {
        self.cache.front().map(|entry| entry.index)
    }

    /// Cached entries in `[low, high)`; `low` must be at or after the cache start.
    pub fn cached(&self, low: u64, high: u64) -> Vec<Entry> {
        let Some(first) = self.cache_first_index() else {
            return Vec::new();
        };
        assert!(low >= first, "cached() is called for the cached range only");
        let start = (low - first) as usize;
        let end = ((high - first) as usize).min(self.cache.len());
        self.cache.range(start..end).cloned().collect()
    }

    /// Oldest batch holding entries this group still needs.
    pub fn oldest_entry_batch(&self) -> Option<u64> {
        self.runs.iter().map(|run| run.batch_sequence).min()
    }

    /// Oldest batch holding the current hard state or compaction record.
    pub fn oldest_state_batch(&self) -> Option<u64> {
        [self.hard_state_batch, self.compaction_batch]
            .into_iter()
            .filter(|&batch| batch != 0)
            .min()
    }

    /// Checks that entries starting at `first_index` may be appended: after the compaction
    /// point and at most one past the last index.
    pub fn check_append(&self, first_index: u64) -> Result<(), LogOperationError> {
        if first_index > self.compaction_index() && first_index <= self.last_index() + 1 {
            Ok(())
        } else {
            Err(LogOperationError::BadAppend { index: first_index })
        }
    }

    /// Forgets every entry held, keeping the hard state and compaction point. Recovery
    /// calls it when a group's entries resume after a gap: the records of the gap were
    /// collected because a later compaction covers them, which recovery checks once it has
    /// read everything.
    pub fn forget_entries(&mut self) {
        self.runs.clear();
        self.clear_cache();
    }

    /// Drops every entry at `index` or later: a later record wins over earlier ones.
    fn truncate_from(&mut self, index: u64) {
        while let Some(run) = self.runs.back_mut() {
            if run.first_index >= index {
                self.runs.pop_back();
            } else {
                if run.last_index >= index {
                    run.last_index = index - 1;
                }
                break;
            }
        }
        while let Some(entry) = self.cache.back() {
            if entry.index < index {
                break;
            }
            self.cache_bytes -= cached_bytes(entry.payload.len());
            self.cache.pop_back();
        }
    }

    /// Records runs for entries starting at `first_index` with these terms.
    fn push_runs(
        &mut self,
        first_index: u64,
        terms: impl Iterator<Item = u64>,
        batch_sequence: u64,
    ) {
        for (index, term) in (first_index..).zip(terms) {
            match self.runs.back_mut() {
                Some(run)
                    if run.term == term
                        && run.batch_sequence == batch_sequence
                        && run.last_index + 1 == index =>
                {
                    run.last_index = index;
                }
                _ => self.runs.push_back(Run {
                    first_index: index,
                    last_index: index,
                    term,
                    batch_sequence,
                }),
            }
        }
    }

    fn push_cache(&mut self, entry: Entry, cache_bytes_max: usize) {
        debug_assert!(self
            .cache
            .back()
            .is_none_or(|last| last.index + 1 == entry.index));
        self.cache_bytes += cached_bytes(entry.payload.len());
        self.cache.push_back(entry);
        while self.cache_bytes > cache_bytes_max {
            let Some(evicted) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= cached_bytes(evicted.payload.len());
        }
    }

    /// How many entries at the end of a list whose payload sizes are `sizes` fit in the
    /// cache; the others are skipped so that recovery does not copy what it would evict.
    fn cacheable_suffix(
        sizes: impl DoubleEndedIterator<Item = usize>,
        cache_bytes_max: usize,
    ) -> usize {
        let mut total = 0;
        let mut count = 0;
        for size in sizes.rev() {
            total += cached_bytes(size);
            if total > cache_bytes_max {
                break;
            }
            count += 1;
        }
        count
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }

    /// Appends entries written in batch `batch_sequence`.
    /// [`GroupLog::check_append`] must have accepted `entries[0].index`.
    pub fn append(&mut self, entries: &[Entry], batch_sequence: u64, cache_bytes_max: usize) {
        let first_index = entries[0].index;
        self.truncate_from(first_index);
        self.push_runs(
            first_index,
            entries.iter().map(|entry| entry.term),
            batch_sequence,
        );
        let keep = Self::cacheable_suffix(
            entries.iter().map(|entry| entry.payload.len()),
            cache_bytes_max,
        );
        if keep < entries.len() {
            self.clear_cache();
        }
        for entry in &entries[entries.len() - keep..] {
            self.push_cache(entry.clone(), cache_bytes_max);
        }
        self.after_append();
    }

    /// [`GroupLog::append`] for entries decoded from disk.
    pub fn append_views(
        &mut self,
        entries: &[EntryView<'_>],
        batch_sequence: u64,
        cache_bytes_max: usize,
    ) {
        let first_index = entries[0].index;
        self.truncate_from(first_index);
        self.push_runs(
            first_index,
            entries.iter().map(|entry| entry.term),
            batch_sequence,
        );
        let keep = Self::cacheable_suffix(
            entries.iter().map(|entry| entry.payload.len()),
            cache_bytes_max,
        );
        if keep < entries.len() {
            self.clear_cache();
        }
        for entry in &entries[entries.len() - keep..] {
            self.push_cache(entry.to_entry(), cache_bytes_max);
        }
        self.after_append();
    }

    fn after_append(&mut self) {
        // Entries that a recovered compaction already covers stay out of the log.
        let compaction_index = self.compaction_index();
        self.drop_through(compaction_index);
        debug_assert!(self
            .cache
            .back()
            .is_none_or(|last| last.index == self.last_index()));
    }

    /// Drops every entry at `index` or before.
    fn drop_through(&mut self, index: u64) {
        while let Some(run) = self.runs.front_mut() {
            if run.last_index <= index {
                self.runs.pop_front();
            } else {
                if run.first_index <= index {
                    run.first_index = index + 1;
                }
                break;
            }
        }
        while let Some(entry) = self.cache.front() {
            if entry.index > index {
                break;
            }
            self.cache_bytes -= cached_bytes(entry.payload.len());
            self.cache.pop_front();
        }
    }

    pub fn set_hard_state(&mut self, hard_state: HardState, batch_sequence: u64) {
        self.hard_state = Some(hard_state);
        self.hard_state_batch = batch_sequence;
    }

    /// Checks that the log may be compacted to `index`.
    pub fn check_compaction(&self, index: u64) -> Result<(), LogOperationError> {
        let previous = self.compaction_index();
        if index < previous {
            Err(LogOperationError::CompactionRegressed { index, previous })
        } else {
            Ok(())
        }
    }

    /// Whether a snapshot at `position` keeps the entries after it. It does unless the log
    /// holds the entry at its index with another term; then installing the snapshot
    /// replaces the whole log ([`GroupLog::reset`]), as Raft does. An entry the log does
    /// not hold contradicts nothing: it is beyond the log, or it was collected before the
    /// entries held now.
    pub fn compaction_keeps_log(&self, position: LogPosition) -> bool {
        self.term(position.index)
            .is_none_or(|term| term == position.term)
    }

    /// Marks entries through `position.index` as covered by a snapshot and drops them;
    /// later entries stay.
    pub fn compact(&mut self, position: LogPosition, batch_sequence: u64) {
        assert!(
            position.index >= self.compaction_index(),
            "check_compaction first"
        );
        self.drop_through(position.index);
        self.compaction = Some(position);
        self.compaction_batch = batch_sequence;
    }

    /// Replaces the whole log by a snapshot at `position`.
    pub fn reset(&mut self, position: LogPosition, batch_sequence: u64) {
        assert!(
            position.index >= self.compaction_index(),
            "check_compaction first"
        );
        self.forget_entries();
        self.compaction = Some(position);
        self.compaction_batch = batch_sequence;
    }

    /// Records that the current compaction point was written to `batch_sequence` (after
    /// recovery took it from a snapshot file).
    pub fn compaction_written(&mut self, batch_sequence: u64) {
        assert!(self.compaction.is_some());
        self.compaction_batch = batch_sequence;
    }

    /// Re-points the hard state and compaction records to `batch_sequence` after they were
    /// written again there (see `gc`), so that older segments stop being needed.
    pub fn relogged(&mut self, batch_sequence: u64) {
        if self.hard_state.is_some() {
            self.hard_state_batch = batch_sequence;
        }
        if self.compaction.is_some() {
            self.compaction_batch = batch_sequence;
        }
    }

    /// Entries in the cache (for tests and inspection).
    pub fn cached_entries(&self) -> impl Iterator<Item = &Entry> {
        self.cache.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, terms: &[u64], size: usize) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(position, &term)| Entry {
                index: first + position as u64,
                term,
                kind: 0,
                payload: vec![position as u8; size].into(),
            })
            .collect()
    }

    // Appending, then appending at an earlier index, truncates the later entries.
    #[test]
    fn later_records_win() {
        let mut log = GroupLog::default();
        log.check_append(1).unwrap();
        log.append(&entries(1, &[1, 1, 1, 2, 2], 10), 1, usize::MAX);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.runs.len(), 2);
        log.check_append(4).unwrap();
        log.append(&entries(4, &[3], 10), 2, usize::MAX);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(3), Some(1));
        assert_eq!(log.term(4), Some(3));
        assert_eq!(log.term(5), None);
        assert_eq!(
            log.cached(1, 5)
                .iter()
                .map(|entry| entry.term)
                .collect::<Vec<_>>(),
            vec![1, 1, 1, 3]
        );
        assert_eq!(
            log.check_append(6),
            Err(LogOperationError::BadAppend { index: 6 })
        );
        assert_eq!(
            log.check_append(0),
            Err(LogOperationError::BadAppend { index: 0 })
        );
    }

    // The cache keeps only the most recent entries within its byte bound, contiguously.
    #[test]
    fn cache_is_bounded_and_contiguous() {
        let mut log = GroupLog::default();
        let bound = 3 * cached_bytes(100);
        log.append(&entries(1, &[1; 10], 100), 1, bound);
        assert_eq!(log.cache_first_index(), Some(8));
        assert_eq!(log.cached(8, 11).len(), 3);
        log.append(&entries(11, &[1], 100), 2, bound);
        assert_eq!(log.cache_first_index(), Some(9));
        log.append(&entries(5, &[2], 100), 3, bound);
        assert_eq!(log.cache_first_index(), Some(5));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.cache.len(), 1);
    }

    // Compaction drops covered entries and keeps later ones; a snapshot that disagrees
    // with the log about the term at its index resets the whole log.
    #[test]
    fn compaction_and_reset() {
        let mut log = GroupLog::default();
        log.append(&entries(1, &[1, 1, 2, 2], 1), 1, usize::MAX);
        log.check_compaction(2).unwrap();
        assert!(log.compaction_keeps_log(LogPosition { index: 2, term: 1 }));
        log.compact(LogPosition { index: 2, term: 1 }, 2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.first_held_index(), Some(3));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.cache_first_index(), Some(3));
        assert_eq!(
            log.check_append(2),
            Err(LogOperationError::BadAppend { index: 2 })
        );
        assert_eq!(
            log.check_compaction(1),
            Err(LogOperationError::CompactionRegressed {
                index: 1,
                previous: 2
            })
        );
        let conflicting = LogPosition { index: 3, term: 9 };
        assert!(!log.compaction_keeps_log(conflicting));
        log.reset(conflicting, 3);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.first_held_index(), None);
        let beyond = LogPosition { index: 50, term: 9 };
        assert!(log.compaction_keeps_log(beyond));
        log.compact(beyond, 4);
        assert_eq!((log.first_index(), log.last_index()), (51, 50));
        log.check_append(51).unwrap();
        assert_eq!(log.oldest_state_batch(), Some(4));
    }

    // A compaction below the first held entry (its own entry collected) keeps the log, and
    // forgetting entries keeps the hard state and compaction point.
    #[test]
    fn compaction_below_the_held_entries_and_forgetting() {
        let mut log = GroupLog::default();
        log.append(&entries(1, &[1, 1, 1, 1], 1), 1, usize::MAX);
        log.compact(LogPosition { index: 2, term: 1 }, 2);
        log.forget_entries();
        log.append(&entries(10, &[3, 3], 1), 3, usize::MAX);
        log.compact(LogPosition { index: 8, term: 2 }, 4);
        assert_eq!((log.first_held_index(), log.last_index()), (Some(10), 11));
        assert_eq!(log.compaction_index(), 8);
        assert_eq!(log.oldest_entry_batch(), Some(3));
    }
}
