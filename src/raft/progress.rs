//! The leader's view of each follower: how far it matches, what to send next, and a
//! bounded window of appends in flight (probe / replicate / snapshot states).

use std::collections::VecDeque;

use super::types::Index;

/// How the leader currently replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Unknown match: one append at a time until the follower accepts one.
    Probe,
    /// Known match: appends are pipelined up to the in-flight window.
    Replicate,
    /// The follower needs entries that were compacted: a snapshot is on its way.
    Snapshot,
}

/// Appends sent and not yet acknowledged, bounded by count and by bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index of the append, its size in bytes), oldest first.
    sent: VecDeque<(Index, usize)>,
    bytes: usize,
    messages_max: usize,
    bytes_max: usize,
}

impl Inflights {
    pub fn new(messages_max: usize, bytes_max: usize) -> Inflights {
        assert!(
            messages_max > 0,
            "the in-flight window must hold at least one append"
        );
        Inflights {
            sent: VecDeque::new(),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub fn add(&mut self, last_index: Index, bytes: usize) {
        debug_assert!(self.sent.back().is_none_or(|&(last, _)| last < last_index));
        self.sent.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Forgets every append up to and including `index`.
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.sent.front() {
            if last > index {
                break;
            }
            self.sent.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest slot: a heartbeat response shows the follower is alive, so one
    /// more append may go even if acknowledgements were lost.
    pub fn free_first(&mut self) {
        if let Some((last, _)) = self.sent.front().copied() {
            self.free_to(last);
        }
    }

    pub fn is_full(&self) -> bool {
        self.sent.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    pub fn reset(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }
}

/// A snapshot being streamed to a follower in chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    /// Index of the snapshot being sent.
    pub index: Index,
    /// Bytes the follower confirmed.
    pub acked_offset: u64,
    /// Bytes sent so far (acknowledged or not).
    pub sent_offset: u64,
}

/// The leader's record of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (durably) on the follower.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    pub state: ProgressState,
    /// In `Probe`: an append is out and not answered yet.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest read-index round this follower acknowledged.
    pub read_round_acked: u64,
    /// In `Snapshot`: the stream in progress.
    pub snapshot: Option<SnapshotSend>,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next: Index, inflights: Inflights, is_learner: bool) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights,
            recent_active: false,
            read_round_acked: 0,
            snapshot: None,
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.state = state;
        self.inflights.reset();
        self.snapshot = None;
    }

    pub fn become_probe(&mut self) {
        let after_snapshot = self.snapshot.map(|send| send.index);
        self.reset_state(ProgressState::Probe);
        // Leaving a snapshot: the follower has at least the snapshot, or will say otherwise.
        self.next = match after_snapshot {
            Some(index) => (self.matched + 1).max(index + 1),
            None => self.matched + 1,
        };
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot = Some(SnapshotSend {
            index,
            acked_offset: 0,
            sent_offset: 0,
        });
    }

    /// The follower acknowledged up to `index`. Returns whether that was news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// The follower rejected an append after `rejected`; `hint` is where the leader thinks
    /// the logs may agree. Returns false when the rejection is stale.
    pub fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        // In probe, only the answer to the append that is out counts.
        if self.next == 0 || self.next - 1 != rejected {
            return false;
        }
        self.next = (rejected.min(hint) + 1).max(self.matched + 1);
        self.probe_sent = false;
        true
    }

    /// May nothing more be sent to this follower right now?
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The window closes at its message bound and at its byte bound, and reopens as acks free it.
    #[test]
    fn inflights_bounds() {
        let mut window = Inflights::new(3, 100);
        window.add(1, 10);
        window.add(2, 10);
        assert!(!window.is_full());
        window.add(3, 10);
        assert!(window.is_full());
        window.free_to(2);
        assert_eq!(window.len(), 1);
        window.add(4, 95);
        assert!(window.is_full(), "bytes bound");
        window.free_first();
        window.free_first();
        assert!(window.is_empty());
    }

    // A stale rejection in probe (for an append that is not the one out) is ignored.
    #[test]
    fn probe_ignores_stale_rejects() {
        let mut progress = Progress::new(10, Inflights::new(4, 1 << 20), false);
        progress.probe_sent = true;
        assert!(!progress.maybe_decrease_to(5, 5));
        assert!(progress.maybe_decrease_to(9, 4));
        assert_eq!(progress.next, 5);
        assert!(!progress.is_paused());
    }
}
