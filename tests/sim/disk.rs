//! The disk of one simulated shard: its log, whose batches (the shard core's
//! `StorageBatch`es) become durable in order after a random fsync delay, and its snapshot
//! files. Durable records are applied the way the WAL applies them, with the checks the
//! WAL makes; a crash keeps every durable batch plus a random prefix of the pending ones,
//! and a local snapshot file whose write was under way either landed whole or not at all
//! (the real files are renamed into place). A restarted shard recovers through the same
//! `RecoveredGroup` values the server's recovery builds.

use std::collections::{BTreeMap, VecDeque};

use corekv::multiraft::GroupId;
use corekv::raft::{Entry, HardState, Snapshot};
use corekv::shard::storage::{snapshot_file_data, RecoveredSnapshot};
use corekv::shard::{RecoveredGroup, SnapshotJob, StorageBatch, StorageRecordKind};

/// What the log holds for one group.
#[derive(Clone, Debug, Default)]
struct GroupLog {
    hard_state: Option<HardState>,
    /// Entries through this index are covered by a snapshot file.
    compaction_index: u64,
    /// Entries after the compaction point, contiguous.
    entries: Vec<Entry>,
}

impl GroupLog {
    fn last_index(&self) -> u64 {
        self.compaction_index + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index <= self.compaction_index {
            return None;
        }
        self.entries
            .get((index - self.compaction_index - 1) as usize)
            .map(|entry| entry.term)
    }
}

/// One log batch on its way to the platter.
#[derive(Debug)]
pub struct PendingBatch {
    pub durable_at: u64,
    pub batch: StorageBatch,
}

/// A local snapshot file being written off the loop.
#[derive(Debug)]
pub struct PendingFile {
    pub done_at: u64,
    pub group: GroupId,
    pub file: RecoveredSnapshot,
    /// The file is on disk already (an install waited for it), its report still to come.
    pub landed: bool,
}

/// One shard's disk.
#[derive(Debug, Default)]
pub struct ShardDisk {
    groups: BTreeMap<GroupId, GroupLog>,
    files: BTreeMap<GroupId, RecoveredSnapshot>,
    pub pending: VecDeque<PendingBatch>,
    pub writing: Option<PendingFile>,
}

impl ShardDisk {
    /// Makes one batch durable, checking each record as the WAL would.
    pub fn make_durable(&mut self, batch: StorageBatch) -> Result<(), String> {
        for record in batch.records {
            let group = record.group;
            let log = self.groups.entry(group).or_default();
            let file_index = self.files.get(&group).map(|file| file.index);
            apply(log, file_index, record.kind)
                .map_err(|error| format!("group {group}: {error}"))?;
        }
        Ok(())
    }

    /// Writes a snapshot a leader sent: durable before the batch that resets the log to it.
    /// Like the server, it waits for the local file being written, which lands first.
    pub fn write_installed(&mut self, group: GroupId, snapshot: &Snapshot) {
        if let Some(writing) = self.writing.as_mut() {
            if !writing.landed {
                writing.landed = true;
                self.files.insert(writing.group, writing.file.clone());
            }
        }
        self.files.insert(group, file_of(snapshot));
    }

    /// Starts writing a local snapshot's file, done at `done_at`.
    pub fn start_file(&mut self, job: &SnapshotJob, done_at: u64) -> Result<(), String> {
        if self.writing.is_some() {
            return Err(format!(
                "the core asked for the file of group {} while another is being written",
                job.group
            ));
        }
        self.writing = Some(PendingFile {
            done_at,
            group: job.group,
            file: file_of(&job.snapshot),
            landed: false,
        });
        Ok(())
    }

    /// The local snapshot file whose write has finished by `now`: it is durable.
    pub fn finish_file(&mut self, now: u64) -> Option<(GroupId, u64, u64)> {
        if self
            .writing
            .as_ref()
            .is_none_or(|file| !file.landed && file.done_at > now)
        {
            return None;
        }
        let PendingFile {
            group,
            file,
            landed,
            ..
        } = self.writing.take().expect("checked above");
        let done = (group, file.index, file.term);
        if !landed {
            self.files.insert(group, file);
        }
        Some(done)
    }

    /// The shard crashed: the first `kept` pending batches reached the disk (batches are
    /// atomic, since the real WAL checksums each one), the rest are lost; the file being
    /// written landed if `file_landed`. Returns how many batches were lost.
    pub fn crash(&mut self, kept: usize, file_landed: bool) -> Result<usize, String> {
        let lost = self.pending.len() - kept;
        let survivors: Vec<PendingBatch> = self.pending.drain(..kept).collect();
        self.pending.clear();
        if let Some(PendingFile {
            group,
            file,
            landed,
            ..
        }) = self.writing.take()
        {
            if file_landed && !landed {
                self.files.insert(group, file);
            }
        }
        for pending in survivors {
            self.make_durable(pending.batch)?;
        }
        Ok(lost)
    }

    /// What a restarted shard's groups start from, read back the way the server reads its
    /// WAL: a snapshot file newer than the log's compaction point (its record never became
    /// durable) compacts the log, or resets it when the log holds another term at that
    /// index, as the WAL's recovery does; then entries after both the compaction point and
    /// the snapshot file.
    pub fn recover(&mut self, groups: &[GroupId]) -> Vec<RecoveredGroup> {
        for (&group, file) in &self.files {
            let log = self.groups.entry(group).or_default();
            if file.index <= log.compaction_index {
                continue;
            }
            let keeps_log = log.term(file.index).is_none_or(|term| term == file.term);
            if keeps_log {
                let covered = (file.index - log.compaction_index) as usize;
                log.entries.drain(..covered.min(log.entries.len()));
            } else {
                log.entries.clear();
            }
            log.compaction_index = file.index;
        }
        groups
            .iter()
            .map(|&group| {
                let log = self.groups.get(&group).cloned().unwrap_or_default();
                let snapshot = self.files.get(&group).cloned();
                let mut recovered = RecoveredGroup {
                    group,
                    snapshot,
                    hard_state: log.hard_state,
                    compaction_index: log.compaction_index,
                    entries: Vec::new(),
                };
                let low = recovered.first_needed_index();
                recovered.entries = log
                    .entries
                    .iter()
                    .filter(|entry| entry.index >= low)
                    .cloned()
                    .collect();
                recovered
            })
            .collect()
    }
}

fn file_of(snapshot: &Snapshot) -> RecoveredSnapshot {
    RecoveredSnapshot {
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        data: snapshot_file_data(snapshot),
    }
}

/// Applies one durable record to its group's log.
fn apply(
    log: &mut GroupLog,
    file_index: Option<u64>,
    kind: StorageRecordKind,
) -> Result<(), String> {
    match kind {
        StorageRecordKind::Entries(entries) => {
            let Some(first) = entries.first() else {
                return Ok(());
            };
            if first.index <= log.compaction_index {
                return Err(format!(
                    "entries from index {} would overwrite the compacted log through {}",
                    first.index, log.compaction_index
                ));
            }
            if first.index > log.last_index() + 1 {
                return Err(format!(
                    "entries from index {} leave a gap after the durable log ending at {}",
                    first.index,
                    log.last_index()
                ));
            }
            log.entries
                .truncate((first.index - log.compaction_index - 1) as usize);
            log.entries.extend(entries);
        }
        StorageRecordKind::HardState(hard_state) => log.hard_state = Some(hard_state),
        StorageRecordKind::LogReset { index, term } => {
            // A later install may have replaced the file already: it covers the reset too.
            if file_index.is_none_or(|file| file < index) {
                return Err(format!(
                    "a log reset to index {index} (term {term}) is durable but the snapshot \
                     file it points at is not (the file holds {file_index:?})"
                ));
            }
            let commit = log.hard_state.map_or(0, |hard| hard.commit);
            if index < commit {
                return Err(format!(
                    "a received snapshot at index {index} is behind the durable commit {commit}"
                ));
            }
            if index < log.compaction_index {
                return Err(format!(
                    "a log reset to index {index} goes back before the compaction point {}",
                    log.compaction_index
                ));
            }
            log.entries.clear();
            log.compaction_index = index;
        }
        StorageRecordKind::Compaction { index, term } => {
            if file_index.is_none_or(|file| file < index) {
                return Err(format!(
                    "a compaction to index {index} is durable but no snapshot file covers it \
                     (the file holds {file_index:?})"
                ));
            }
            if index < log.compaction_index {
                return Err(format!(
                    "a compaction to index {index} goes back before the compaction point {}",
                    log.compaction_index
                ));
            }
            if index > log.last_index() {
                return Err(format!(
                    "a compaction to index {index} covers entries that are not durable (the \
                     durable log ends at {})",
                    log.last_index()
                ));
            }
            if let Some(held) = log.term(index) {
                if held != term {
                    return Err(format!(
                        "a compaction to index {index} has term {term} but the durable entry \
                         has term {held}"
                    ));
                }
            }
            log.entries.drain(..(index - log.compaction_index) as usize);
            log.compaction_index = index;
        }
    }
    Ok(())
}
