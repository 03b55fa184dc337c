//! The replicated log of one replica, held in memory from the last snapshot on, with the
//! four positions that matter: committed, applied, persisted, and handed out to storage.

use std::collections::VecDeque;

use super::types::{Entry, Index, Term};

/// The in-memory log. Entries before `first_index()` are covered by a snapshot.
///
/// Invariants (checked by [`RaftLog::check`]):
/// `snapshot_index <= applied <= committed`, `applied <= persisted` unless a snapshot is
/// being installed, `committed <= last_index()`, `persisted <= last_index()` and
/// `handed_out <= last_index()`.
#[derive(Debug, Clone)]
pub struct RaftLog {
    snapshot_index: Index,
    snapshot_term: Term,
    /// `entries[k].index == snapshot_index + 1 + k`.
    entries: VecDeque<Entry>,
    /// Highest index known to be committed.
    pub committed: Index,
    /// Highest index handed out to the state machine.
    pub applied: Index,
    /// Highest index known to be durable on this replica's disk.
    persisted: Index,
    /// Highest index handed out to storage in a `Ready` (durable or on its way).
    handed_out: Index,
}

impl RaftLog {
    /// A log that starts after a snapshot at (`index`, `term`), with `entries` already
    /// durable after it and `committed` known.
    pub fn restore(index: Index, term: Term, entries: Vec<Entry>, committed: Index) -> RaftLog {
        let mut log = RaftLog {
            snapshot_index: index,
            snapshot_term: term,
            entries: VecDeque::with_capacity(entries.len()),
            committed: index,
            applied: index,
            persisted: index,
            handed_out: index,
        };
        for (k, entry) in entries.into_iter().enumerate() {
            assert_eq!(
                entry.index,
                index + 1 + k as u64,
                "recovered entries must be contiguous"
            );
            log.entries.push_back(entry);
        }
        log.persisted = log.last_index();
        log.handed_out = log.last_index();
        log.committed = committed.clamp(index, log.last_index());
        log
    }

    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot_term, |entry| entry.term)
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// The term of the entry at `index`; `None` if it is compacted away or not yet written.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.snapshot_index - 1) as usize].term)
    }

    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's election restriction: is a log ending at (`last_index`, `last_term`) at least
    /// as up to date as this one?
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    fn entry(&self, index: Index) -> &Entry {
        &self.entries[(index - self.snapshot_index - 1) as usize]
    }

    /// The entry at `index`, when the log holds it (not compacted, not beyond its end).
    pub fn entry_at(&self, index: Index) -> Option<&Entry> {
        (index > self.snapshot_index && index <= self.last_index()).then(|| self.entry(index))
    }

    /// Entries in `[low, high)`, stopping early once `bytes_max` is reached (at least one
    /// entry is returned when the range is not empty). `None` if `low` is compacted.
    pub fn slice(&self, low: Index, high: Index, bytes_max: usize) -> Option<Vec<Entry>> {
        if low < self.first_index() {
            return None;
        }
        let high = high.min(self.last_index() + 1);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for index in low..high {
            let entry = self.entry(index);
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    /// Bytes of the entries in `[low, high)` that are still in the log.
    pub fn bytes_between(&self, low: Index, high: Index) -> usize {
        let low = low.max(self.first_index());
        let high = high.min(self.last_index() + 1);
        (low..high)
            .map(|index| self.entry(index).size_bytes())
            .sum()
    }

    /// Appends entries that continue the log (the leader's own proposals).
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "appended entries must continue the log"
        );
        self.entries.push_back(entry);
    }

    /// The follower's side of an append: if the log holds (`prev_index`, `prev_term`),
    /// merges `entries` after it (truncating a conflicting suffix) and returns the index of
    /// the last entry the append covers. `None` when the log does not match.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<Index> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        // The first entry this log does not hold yet; entries covered by the snapshot
        // are committed and therefore already equal.
        let conflict = entries.iter().position(|entry| {
            entry.index > self.snapshot_index && !self.match_term(entry.index, entry.term)
        });
        if let Some(first_new) = conflict {
            let from = entries[first_new].index;
            if from <= self.last_index() {
                assert!(
                    from > self.committed,
                    "a committed entry ({from}) must never be truncated"
                );
                self.truncate_from(from);
            }
            for entry in &entries[first_new..] {
                self.append(entry.clone());
            }
        }
        Some(last_new)
    }

    /// Drops every entry at `index` and after; what was persisted or handed out there
    /// must be written again.
    fn truncate_from(&mut self, index: Index) {
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(index - 1);
        self.handed_out = self.handed_out.min(index - 1);
    }

    /// For fast backtracking: the largest index `<= index` whose term is `<= term`, with
    /// its term. When the search reaches the snapshot and even the snapshot's last entry
    /// has a greater term, the answer lies in the compacted part: it returns the index
    /// below the snapshot with term 0 ("unknown"), so a leader probing there sends the
    /// snapshot instead of retrying the same append forever.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(found) if found <= term => return (index, found),
                Some(_) if index > self.snapshot_index => index -= 1,
                Some(_) => return (index - 1, 0),
                None => return (index, 0),
            }
        }
    }

    /// Raises the commit index; it never goes down.
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Entries not yet handed out to storage; marks them handed out.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.handed_out + 1;
        let to = self.last_index();
        if from > to {
            return Vec::new();
        }
        self.handed_out = to;
        self.slice(from, to + 1, usize::MAX)
            .expect("unpersisted entries are never compacted")
    }

    /// Storage reports that the log up to (`index`, `term`) is durable. A report about
    /// entries that were since overwritten (their term differs) is ignored.
    pub fn on_persisted(&mut self, index: Index, term: Term) -> bool {
        if index > self.persisted && index <= self.handed_out && self.match_term(index, term) {
            self.persisted = index;
            return true;
        }
        false
    }

    /// Committed entries that are durable here and not yet applied; marks them applied.
    pub fn take_committed(&mut self, bytes_max: usize) -> Vec<Entry> {
        let to = self.committed.min(self.persisted);
        if to <= self.applied {
            return Vec::new();
        }
        let out = self
            .slice(self.applied + 1, to + 1, bytes_max)
            .expect("unapplied entries are never compacted");
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    /// Is there anything committed, durable and unapplied?
    pub fn has_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applied
    }

    pub fn has_unpersisted(&self) -> bool {
        self.handed_out < self.last_index()
    }

    /// Drops entries up to `index` (already applied), which a snapshot now covers.
    pub fn compact_to(&mut self, index: Index) {
        assert!(
            index <= self.applied,
            "compacting {index} beyond applied {}",
            self.applied
        );
        if index <= self.snapshot_index {
            return;
        }
        let term = self.term(index).expect("compaction point is in the log");
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log by a snapshot at (`index`, `term`) received from the leader.
    pub fn install_snapshot(&mut self, index: Index, term: Term) {
        assert!(
            index > self.committed,
            "a snapshot must move the log forward"
        );
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.committed = index;
        self.applied = index;
        // The snapshot is handed out in the same Ready as anything after it, and storage
        // writes a Ready in order, so entries after it are durable only after it is.
        self.persisted = index;
        self.handed_out = index;
    }

    /// Panics if an invariant does not hold.
    pub fn check(&self) {
        assert!(
            self.snapshot_index <= self.applied,
            "applied before the snapshot"
        );
        assert!(self.applied <= self.committed, "applied beyond committed");
        assert!(
            self.committed <= self.last_index(),
            "committed beyond the log"
        );
        assert!(
            self.persisted <= self.last_index(),
            "persisted beyond the log"
        );
        assert!(
            self.handed_out <= self.last_index(),
            "handed out beyond the log"
        );
        assert!(
            self.persisted <= self.handed_out,
            "persisted what was never handed out"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use std::sync::Arc;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Arc::from(&b""[..]),
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(k, &t)| entry(k as u64 + 1, t))
            .collect();
        RaftLog::restore(0, 0, entries, 0)
    }

    // A conflicting suffix is replaced and the persisted mark falls back before it.
    #[test]
    fn maybe_append_truncates_conflicts() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.persisted(), 4);
        let last = log.maybe_append(2, 1, &[entry(3, 3), entry(4, 3), entry(5, 3)]);
        assert_eq!(last, Some(5));
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.persisted(), 2);
        assert_eq!(log.take_unpersisted().len(), 3);
        log.check();
    }

    // An append whose entries the log already has changes nothing.
    #[test]
    fn maybe_append_is_idempotent() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.maybe_append(0, 0, &[entry(1, 1), entry(2, 1)]), Some(2));
        assert_eq!(
            log.last_index(),
            3,
            "a stale shorter append must not truncate"
        );
        assert_eq!(log.persisted(), 3);
        assert_eq!(log.maybe_append(3, 9, &[]), None);
    }

    // The conflict search walks back to the first entry whose term is small enough.
    #[test]
    fn find_conflict_by_term_walks_back() {
        let log = log_with_terms(&[1, 1, 2, 2, 5, 5]);
        assert_eq!(log.find_conflict_by_term(6, 3), (4, 2));
        assert_eq!(log.find_conflict_by_term(6, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(6, 0), (0, 0));
        assert_eq!(log.find_conflict_by_term(10, 5), (6, 5));
    }

    // When even the snapshot's last entry has a greater term, the agreement point is in
    // the compacted part: the search says so (index below the snapshot, unknown term)
    // rather than claiming the snapshot's index.
    #[test]
    fn find_conflict_by_term_below_the_snapshot() {
        let log = RaftLog::restore(4, 3, vec![entry(5, 3), entry(6, 4)], 4);
        assert_eq!(log.find_conflict_by_term(6, 3), (5, 3));
        assert_eq!(log.find_conflict_by_term(6, 2), (3, 0));
        assert_eq!(log.find_conflict_by_term(4, 3), (4, 3));
    }

    // Only durable committed entries are handed to the state machine.
    #[test]
    fn committed_entries_wait_for_persistence() {
        let mut log = log_with_terms(&[]);
        for index in 1..=3 {
            log.append(entry(index, 1));
        }
        assert_eq!(log.take_unpersisted().len(), 3);
        log.commit_to(3);
        assert!(log.take_committed(usize::MAX).is_empty());
        assert!(log.on_persisted(2, 1));
        assert_eq!(log.take_committed(usize::MAX).len(), 2);
        assert!(
            !log.on_persisted(3, 7),
            "a report for another term is ignored"
        );
        log.compact_to(2);
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        log.check();
    }
}
