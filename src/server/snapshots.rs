//! A shard's snapshot files, written off the event loop: a group's snapshot is megabytes
//! and its file takes two fsyncs (file, then directory), which on the loop stalled every
//! client of the shard for milliseconds. Files are written on glommio's blocking thread,
//! one at a time, and the WAL's Compaction record for a local snapshot follows only once
//! its file is durable.
//!
//! Crash safety does not depend on the Compaction record: until it is durable the WAL
//! keeps the entries the snapshot covers, and recovery starts from the newest snapshot
//! file and the entries after it whether or not the record made it.
//!
//! An installed snapshot (sent by a leader) is different: its WAL record (a log reset)
//! is in the same turn as the entries after it, so the turn waits for its file (and for
//! a local file being written): installs still stall the loop, but they are rare (a
//! follower that fell behind the leader's log). The
//! files of one shard are written one at a time, so an installed snapshot never races a
//! local one of the same group for the temporary file or the rename, and a local
//! snapshot still queued for a group that installs one is dropped (it is older).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::channels::local_channel::LocalSender;
use glommio::sync::Semaphore;

use super::shard::Event;
use super::storage;
use crate::multiraft::GroupId;
use crate::raft::Snapshot;
use crate::wal::{self, Record, RecordKind, Wal};

/// The snapshot files of one shard: the queue of local snapshots, the one being written,
/// and the Compaction records that wait for the next WAL batch.
///
/// The queue holds at most one snapshot per group of the shard (a newer one replaces the
/// older), so the shard's group count bounds it.
#[derive(Debug)]
pub struct SnapshotFiles {
    shard_dir: PathBuf,
    /// One permit: held by whoever writes a file.
    writer: Rc<Semaphore>,
    queued: VecDeque<(GroupId, Snapshot)>,
    writing: Option<GroupId>,
    compactions: Vec<Record>,
}

impl SnapshotFiles {
    pub fn new(shard_dir: PathBuf) -> SnapshotFiles {
        SnapshotFiles {
            shard_dir,
            writer: Rc::new(Semaphore::new(1)),
            queued: VecDeque::new(),
            writing: None,
            compactions: Vec::new(),
        }
    }

    /// Queues a snapshot this shard took of `group`, replacing an older one still queued.
    pub fn queue(&mut self, group: GroupId, snapshot: Snapshot) {
        match self.queued.iter_mut().find(|(queued, _)| *queued == group) {
            Some(slot) => slot.1 = snapshot,
            None => self.queued.push_back((group, snapshot)),
        }
    }

    /// Whether a snapshot of `group` is queued or being written (asking for another one
    /// would only repeat the work).
    pub fn is_pending(&self, group: GroupId) -> bool {
        self.writing == Some(group) || self.queued.iter().any(|(queued, _)| *queued == group)
    }

    /// Starts writing the next queued snapshot unless a file is being written; its task
    /// reports [`Event::SnapshotWritten`] when the file is durable.
    pub fn start_next(&mut self, events: &Rc<LocalSender<Event>>) {
        if self.writing.is_some() {
            return;
        }
        let Some((group, snapshot)) = self.queued.pop_front() else {
            return;
        };
        self.writing = Some(group);
        let writer = self.writer.clone();
        let shard_dir = self.shard_dir.clone();
        let events = events.clone();
        // glommio runs a spawned task at once, up to its first wait: this one queues for
        // the writer before any later turn can, so an installed snapshot taken after this
        // local one is written after it too.
        glommio::spawn_local(async move {
            let (index, term) = (snapshot.meta.index, snapshot.meta.term);
            {
                let _permit = writer
                    .acquire_static_permit(1)
                    .await
                    .expect("the snapshot writer is never closed");
                write_off_loop(shard_dir, group, snapshot).await;
            }
            // The writer is free before the loop hears of it: a turn waiting to install a
            // snapshot must not wait on a full event queue that only the loop empties.
            let _ = events
                .send(Event::SnapshotWritten { group, index, term })
                .await;
        })
        .detach();
    }

    /// The file of a local snapshot of `group` at (`index`, `term`) is durable: its
    /// Compaction record goes in the next WAL batch, unless the log of the group was reset
    /// past it meanwhile (an installed snapshot; the WAL refuses a compaction that goes
    /// back).
    pub fn on_written(&mut self, group: GroupId, index: u64, term: u64, wal: &Wal) {
        debug_assert_eq!(self.writing, Some(group));
        self.writing = None;
        let compacted = wal
            .group(group)
            .and_then(|summary| summary.compaction)
            .map_or(0, |position| position.index);
        if index > compacted {
            self.compactions.push(Record {
                group_id: group,
                kind: RecordKind::Compaction { index, term },
            });
        }
    }

    /// The Compaction records ready for the WAL; they go before the turn's own records.
    pub fn take_compactions(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.compactions)
    }

    pub fn has_compactions(&self) -> bool {
        !self.compactions.is_empty()
    }

    /// Drops the queued local snapshots of `groups`, which are installing newer ones,
    /// and hands out the writer for those.
    pub fn prepare_install(&mut self, groups: &[GroupId]) -> FileWriter {
        self.queued.retain(|(queued, _)| !groups.contains(queued));
        self.file_writer()
    }

    pub fn file_writer(&self) -> FileWriter {
        FileWriter {
            writer: self.writer.clone(),
            shard_dir: self.shard_dir.clone(),
        }
    }
}

/// The shard's snapshot file writer, usable without holding the shard.
#[derive(Debug)]
pub struct FileWriter {
    writer: Rc<Semaphore>,
    shard_dir: PathBuf,
}

impl FileWriter {
    /// Writes the snapshots a leader sent (their WAL records follow in this turn) after
    /// the file being written, if any; returns once every file is durable.
    pub async fn write_installed(&self, snapshots: Vec<(GroupId, Snapshot)>) {
        if snapshots.is_empty() {
            return;
        }
        let _permit = self
            .writer
            .acquire_permit(1)
            .await
            .expect("the snapshot writer is never closed");
        for (group, snapshot) in snapshots {
            write_off_loop(self.shard_dir.clone(), group, snapshot).await;
        }
    }

    /// Waits for the file being written, if any (a stopping shard leaves no temporary
    /// file behind).
    pub async fn idle(&self) {
        let _ = self.writer.acquire_permit(1).await;
    }
}

/// Writes one snapshot file on glommio's blocking thread; a failure stops the process
/// like a failed WAL write.
async fn write_off_loop(shard_dir: PathBuf, group: GroupId, snapshot: Snapshot) {
    let written = glommio::executor()
        .spawn_blocking(move || storage::write_snapshot_file(&shard_dir, group, &snapshot))
        .await;
    if let Err(error) = written {
        wal::fatal_storage(&format!(
            "writing the snapshot file of group {group}: {error}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use glommio::channels::local_channel;
    use glommio::LocalExecutorBuilder;

    use super::*;
    use crate::raft::{ConfState, SnapshotMeta};
    use crate::wal::snapshot_file;

    /// Bound on a step that must not hang.
    const STEP_TIMEOUT: Duration = Duration::from_secs(20);

    fn snapshot(index: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term: 1,
                conf: ConfState::with_voters(&[1]),
            },
            data: Arc::from(vec![7u8; 4096]),
        }
    }

    // An install waiting for the writer gets it although the loop's event queue is full:
    // the local write being done frees the writer before it reports to the loop. Then
    // both files are on disk and the local write's report arrives.
    #[test]
    fn an_install_does_not_wait_on_a_full_event_queue() {
        let shard_dir =
            std::env::temp_dir().join(format!("corekv-snapshots-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&shard_dir);
        std::fs::create_dir_all(&shard_dir).unwrap();
        let directory = shard_dir.clone();
        LocalExecutorBuilder::default()
            .preempt_timer(crate::server::EXECUTOR_PREEMPT_TIMER)
            .spawn(move || async move {
                let (sender, receiver) = local_channel::new_bounded(1);
                let events = Rc::new(sender);
                events.try_send(Event::Tick).expect("room for one event");
                let mut files = SnapshotFiles::new(directory.clone());
                files.queue(0, snapshot(10));
                files.start_next(&events);
                assert!(files.is_pending(0));
                let writer = files.prepare_install(&[1]);
                let install = writer.write_installed(vec![(1, snapshot(20))]);
                let timeout = glommio::timer::Timer::new(STEP_TIMEOUT);
                let finished = futures_lite::future::or(
                    async {
                        install.await;
                        true
                    },
                    async {
                        timeout.await;
                        false
                    },
                )
                .await;
                assert!(finished, "the install never got the writer");
                for (group, index) in [(0, 10), (1, 20)] {
                    let file = snapshot_file::read_snapshot(&directory, group)
                        .unwrap()
                        .expect("written");
                    assert_eq!(file.index, index, "group {group}");
                }
                assert!(matches!(receiver.recv().await, Some(Event::Tick)));
                assert!(matches!(
                    receiver.recv().await,
                    Some(Event::SnapshotWritten {
                        group: 0,
                        index: 10,
                        term: 1
                    })
                ));
            })
            .expect("executor starts")
            .join()
            .expect("executor runs");
        let _ = std::fs::remove_dir_all(&shard_dir);
    }
}
