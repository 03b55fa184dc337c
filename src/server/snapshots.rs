//! A shard's snapshot files, written off the event loop: a group's snapshot is megabytes
//! and its file takes two fsyncs (file, then directory), which on the loop stalled every
//! client of the shard for milliseconds. Files are written on glommio's blocking thread,
//! one at a time; which file comes next, and the WAL Compaction record that follows it,
//! are the shard core's decisions (`shard/snapshots.rs`).
//!
//! An installed snapshot (sent by a leader) is written by the turn itself, before the WAL
//! batch whose log reset points at it, after the local file being written (if any): so
//! installs still stall the loop, but they are rare (a follower that fell behind the
//! leader's log), and an installed snapshot never races a local one of the same group for
//! the temporary file or the rename.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::channels::local_channel::LocalSender;
use glommio::sync::Semaphore;

use super::shard::Event;
use super::storage;
use crate::multiraft::GroupId;
use crate::raft::Snapshot;
use crate::shard::SnapshotJob;
use crate::wal;

/// The shard's snapshot file writer, usable without holding the shard.
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    /// One permit: held by whoever writes a file.
    writer: Rc<Semaphore>,
    shard_dir: PathBuf,
}

impl SnapshotFiles {
    pub fn new(shard_dir: PathBuf) -> SnapshotFiles {
        SnapshotFiles {
            writer: Rc::new(Semaphore::new(1)),
            shard_dir,
        }
    }

    /// Writes a local snapshot's file in the background; [`Event::SnapshotWritten`]
    /// follows once it is durable.
    pub fn start(&self, job: SnapshotJob, events: &Rc<LocalSender<Event>>) {
        let writer = self.writer.clone();
        let shard_dir = self.shard_dir.clone();
        let events = events.clone();
        // glommio runs a spawned task at once, up to its first wait: this one queues for
        // the writer before any later turn can, so an installed snapshot taken after this
        // local one is written after it too.
        glommio::spawn_local(async move {
            let SnapshotJob { group, snapshot } = job;
            let (index, term) = (snapshot.meta.index, snapshot.meta.term);
            {
                let _permit = writer
                    .acquire_static_permit(1)
                    .await
                    .expect("the snapshot writer is never closed");
                write_off_loop(shard_dir, group, snapshot).await;
            }
            // The writer is free before the loop hears of it: a turn waiting to install a
            // snapshot must not wait on a full event queue that only the loop empties. A
            // loop that is gone needs no report.
            let _ = events
                .send(Event::SnapshotWritten { group, index, term })
                .await;
        })
        .detach();
    }

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
        let _permit = self.writer.acquire_permit(1).await;
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
                let files = SnapshotFiles::new(directory.clone());
                let job = SnapshotJob {
                    group: 0,
                    snapshot: snapshot(10),
                };
                files.start(job, &events);
                let install = files.write_installed(vec![(1, snapshot(20))]);
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
