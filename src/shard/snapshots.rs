//! A shard's snapshot files, as decisions: which local snapshot is written next (one at a
//! time, off the loop, by the driver), and the Compaction record that may follow once its
//! file is durable.
//!
//! Crash safety does not depend on the Compaction record: until it is durable the log
//! keeps the entries the snapshot covers, and recovery starts from the newest snapshot
//! file and the entries after it whether or not the record made it.
//!
//! A snapshot a leader sent (an install) is different: its log reset goes in the same
//! batch as the entries after it, so its file must be durable before that batch is
//! written. The driver writes installs after the file being written, if any; a local
//! snapshot still queued for a group that installs one is dropped here (it is older).

use std::collections::{BTreeMap, VecDeque};

use super::storage::{StorageRecord, StorageRecordKind};
use crate::multiraft::GroupId;
use crate::raft::Snapshot;

/// A local snapshot whose file the driver writes off the loop; it reports
/// [`ShardCore::on_snapshot_written`](super::ShardCore::on_snapshot_written) when the
/// file is durable.
#[derive(Clone, Debug)]
pub struct SnapshotJob {
    pub group: GroupId,
    pub snapshot: Snapshot,
}

/// The queue of local snapshots, the one being written, and the Compaction records that
/// wait for the next batch.
///
/// The queue holds at most one snapshot per group of the shard (a newer one replaces the
/// older), so the shard's group count bounds it.
#[derive(Debug, Default)]
pub struct SnapshotQueue {
    queued: VecDeque<SnapshotJob>,
    writing: Option<GroupId>,
    compactions: Vec<StorageRecord>,
    /// Per group, the log position storage has compacted or reset to (a Compaction at or
    /// below it would go back, which the log refuses).
    compacted: BTreeMap<GroupId, u64>,
}

impl SnapshotQueue {
    /// A queue for groups whose logs storage has compacted to the given indexes.
    pub fn new(compacted: BTreeMap<GroupId, u64>) -> SnapshotQueue {
        SnapshotQueue {
            compacted,
            ..SnapshotQueue::default()
        }
    }

    /// Queues a snapshot this shard took of `group`, replacing an older one still queued.
    pub fn queue(&mut self, group: GroupId, snapshot: Snapshot) {
        match self.queued.iter_mut().find(|job| job.group == group) {
            Some(job) => job.snapshot = snapshot,
            None => self.queued.push_back(SnapshotJob { group, snapshot }),
        }
    }

    /// Whether a snapshot of `group` is queued or being written (asking for another one
    /// would only repeat the work).
    pub fn is_pending(&self, group: GroupId) -> bool {
        self.writing == Some(group) || self.queued.iter().any(|job| job.group == group)
    }

    /// Whether [`SnapshotQueue::next_job`] has a file to hand out.
    pub fn has_job_ready(&self) -> bool {
        self.writing.is_none() && !self.queued.is_empty()
    }

    /// The next file to write, unless one is being written.
    pub fn next_job(&mut self) -> Option<SnapshotJob> {
        if self.writing.is_some() {
            return None;
        }
        let job = self.queued.pop_front()?;
        self.writing = Some(job.group);
        Some(job)
    }

    /// The file of a local snapshot of `group` at (`index`, `term`) is durable: its
    /// Compaction record goes in the next batch, unless the log of the group was reset
    /// past it meanwhile (an installed snapshot).
    pub fn on_written(&mut self, group: GroupId, index: u64, term: u64) {
        debug_assert_eq!(self.writing, Some(group));
        self.writing = None;
        if index > self.compacted_index(group) {
            self.compacted.insert(group, index);
            self.compactions.push(StorageRecord {
                group,
                kind: StorageRecordKind::Compaction { index, term },
            });
        }
    }

    fn compacted_index(&self, group: GroupId) -> u64 {
        self.compacted.get(&group).copied().unwrap_or(0)
    }

    /// The Compaction records ready for the log; they go before the turn's own records.
    pub fn take_compactions(&mut self) -> Vec<StorageRecord> {
        std::mem::take(&mut self.compactions)
    }

    pub fn has_compactions(&self) -> bool {
        !self.compactions.is_empty()
    }

    /// `group` installs a snapshot at `index` (a log reset): a local snapshot still queued
    /// for it is older and is dropped.
    pub fn on_install(&mut self, group: GroupId, index: u64) {
        self.queued.retain(|job| job.group != group);
        let compacted = self.compacted.entry(group).or_insert(0);
        *compacted = (*compacted).max(index);
    }

    /// Whether a file is being written (a stopping shard waits for it).
    pub fn is_writing(&self) -> bool {
        self.writing.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::raft::{ConfState, SnapshotMeta};

    fn snapshot(index: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term: 1,
                conf: ConfState::with_voters(&[1]),
            },
            data: Arc::from(&b"s"[..]),
        }
    }

    // One file at a time; a newer snapshot of a queued group replaces the older one.
    #[test]
    fn files_are_written_one_at_a_time_newest_first() {
        let mut queue = SnapshotQueue::default();
        queue.queue(1, snapshot(10));
        queue.queue(2, snapshot(11));
        queue.queue(1, snapshot(12));
        let first = queue.next_job().expect("a job");
        assert_eq!((first.group, first.snapshot.meta.index), (1, 12));
        assert!(queue.next_job().is_none(), "one file at a time");
        assert!(queue.is_pending(1) && queue.is_pending(2));
        queue.on_written(1, 12, 1);
        assert_eq!(queue.next_job().map(|job| job.group), Some(2));
        let records = queue.take_compactions();
        assert_eq!(
            records,
            vec![StorageRecord {
                group: 1,
                kind: StorageRecordKind::Compaction { index: 12, term: 1 }
            }]
        );
    }

    // An install drops an older queued local snapshot, and a local file that lands after
    // an install past it writes no Compaction (the log would refuse to go back).
    #[test]
    fn installs_win_over_older_local_snapshots() {
        let mut queue = SnapshotQueue::new(BTreeMap::from([(1, 5)]));
        queue.queue(1, snapshot(8));
        queue.queue(2, snapshot(9));
        let writing = queue.next_job().expect("a job");
        assert_eq!(writing.group, 1);
        queue.queue(2, snapshot(9));
        queue.on_install(2, 20);
        queue.on_install(1, 30);
        assert!(!queue.is_pending(2));
        queue.on_written(1, 8, 1);
        assert!(!queue.has_compactions());
        assert!(queue.next_job().is_none());
    }
}
