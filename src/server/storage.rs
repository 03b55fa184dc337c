//! The bridge between a shard core's storage values and the WAL: the core's records
//! become WAL records, cut into batches the log accepts; recovery reads back what each
//! group needs as the core's [`RecoveredGroup`]; snapshot files carry the data the core
//! encodes. The decisions (which records, in which order, and what recovery means) are
//! the core's (`shard/storage.rs`); this file moves them to and from disk.

use std::path::Path;

use thiserror::Error;

use crate::multiraft::GroupId;
use crate::raft::{self, EntryKind, Snapshot};
use crate::shard::storage::{self as core_storage, RecoveredSnapshot};
use crate::shard::{RecoveredGroup, StorageRecord, StorageRecordKind};
use crate::wal::record::{
    padded_batch_bytes, ENTRIES_BODY_HEADER_BYTES, ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES,
};
use crate::wal::{self, snapshot_file, Record, RecordKind, Recovery, Wal, WalError};

/// `Entry.kind` byte in the WAL for a normal entry.
const ENTRY_KIND_NORMAL: u8 = 0;
/// `Entry.kind` byte in the WAL for a membership change.
const ENTRY_KIND_CONF_CHANGE: u8 = 1;

/// Why a group's storage cannot be read back.
#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error("group {group}: reading its entries: {error}")]
    Read { group: GroupId, error: WalError },
    #[error("group {group}: entry {index} has unknown kind {kind}")]
    UnknownEntryKind {
        group: GroupId,
        index: u64,
        kind: u8,
    },
}

/// The WAL records of one turn, in the core's order.
pub fn wal_records(records: Vec<StorageRecord>) -> Vec<Record> {
    records
        .into_iter()
        .map(|record| Record {
            group_id: record.group,
            kind: match record.kind {
                StorageRecordKind::Entries(entries) => RecordKind::Entries {
                    entries: entries.into_iter().map(to_wal_entry).collect(),
                },
                StorageRecordKind::HardState(hard) => RecordKind::HardState(wal::HardState {
                    term: hard.term,
                    vote: hard.vote,
                    commit: hard.commit,
                }),
                StorageRecordKind::LogReset { index, term } => RecordKind::LogReset { index, term },
                StorageRecordKind::Compaction { index, term } => {
                    RecordKind::Compaction { index, term }
                }
            },
        })
        .collect()
}

/// Cuts one turn's records, in order, into WAL submissions that each fit one batch of at
/// most `batch_bytes_max` bytes and `batch_records_max` records. An Entries record too
/// large for a batch is cut between entries; a single entry must fit a batch (the server
/// sizes batches for the largest command).
///
/// A crash between two submissions keeps a prefix of the turn. A group may then restart
/// with entries whose hard state record was lost: that is safe, because its vote is the one
/// it persisted before sending it, entries of a newer term do not make it vote again in
/// that term, and a commit index is never needed from disk. A hard state, log reset or
/// compaction never becomes durable without the records before it.
pub fn submissions(
    records: Vec<Record>,
    batch_bytes_max: usize,
    batch_records_max: usize,
) -> Vec<Vec<Record>> {
    let fits = |bytes: usize, count: usize| {
        padded_batch_bytes(bytes) <= batch_bytes_max && count <= batch_records_max
    };
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut current: Vec<Record> = Vec::new();
    let mut current_bytes = 0;
    let mut push = |record: Record, current: &mut Vec<Record>, current_bytes: &mut usize| {
        let bytes = record.encoded_bytes();
        if !current.is_empty() && !fits(*current_bytes + bytes, current.len() + 1) {
            out.push(std::mem::take(current));
            *current_bytes = 0;
        }
        current.push(record);
        *current_bytes += bytes;
    };
    for record in records {
        if fits(record.encoded_bytes(), 1) {
            push(record, &mut current, &mut current_bytes);
            continue;
        }
        let group_id = record.group_id;
        let RecordKind::Entries { entries } = record.kind else {
            panic!("a WAL batch of {batch_bytes_max} bytes cannot hold a fixed-size record");
        };
        let header_bytes = RECORD_HEADER_BYTES + ENTRIES_BODY_HEADER_BYTES;
        let mut chunk: Vec<wal::Entry> = Vec::new();
        let mut chunk_bytes = header_bytes;
        for entry in entries {
            let entry_bytes = ENTRY_HEADER_BYTES + entry.payload.len();
            if !chunk.is_empty() && !fits(chunk_bytes + entry_bytes, 1) {
                let kind = RecordKind::Entries {
                    entries: std::mem::take(&mut chunk),
                };
                push(Record { group_id, kind }, &mut current, &mut current_bytes);
                chunk_bytes = header_bytes;
            }
            assert!(
                fits(chunk_bytes + entry_bytes, 1),
                "entry {} of group {group_id} ({entry_bytes} bytes) exceeds a WAL batch",
                entry.index
            );
            chunk.push(entry);
            chunk_bytes += entry_bytes;
        }
        let kind = RecordKind::Entries { entries: chunk };
        push(Record { group_id, kind }, &mut current, &mut current_bytes);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn to_wal_entry(entry: raft::Entry) -> wal::Entry {
    wal::Entry {
        index: entry.index,
        term: entry.term,
        kind: match entry.kind {
            EntryKind::Normal => ENTRY_KIND_NORMAL,
            EntryKind::ConfChange => ENTRY_KIND_CONF_CHANGE,
        },
        payload: entry.data,
    }
}

fn to_raft_entry(group: GroupId, entry: wal::Entry) -> Result<raft::Entry, RecoveryError> {
    let kind = match entry.kind {
        ENTRY_KIND_NORMAL => EntryKind::Normal,
        ENTRY_KIND_CONF_CHANGE => EntryKind::ConfChange,
        kind => {
            return Err(RecoveryError::UnknownEntryKind {
                group,
                index: entry.index,
                kind,
            })
        }
    };
    Ok(raft::Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.payload,
    })
}

/// Writes `snapshot` of `group` as its snapshot file (fsynced, renamed, directory
/// fsynced) so that a WAL record may then point at it. Blocking: run it off the loop.
pub fn write_snapshot_file(
    shard_dir: &Path,
    group: GroupId,
    snapshot: &Snapshot,
) -> Result<(), snapshot_file::SnapshotError> {
    let file = snapshot_file::Snapshot {
        group_id: group,
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        data: core_storage::snapshot_file_data(snapshot),
    };
    snapshot_file::write_snapshot(shard_dir, &file)
}

/// Reads back what the WAL and the snapshot files hold for each of `groups`.
pub async fn recover_groups(
    wal: &Wal,
    recovery: &Recovery,
    groups: &[GroupId],
) -> Result<Vec<RecoveredGroup>, RecoveryError> {
    let mut recovered = Vec::with_capacity(groups.len());
    for &group in groups {
        let mut out = RecoveredGroup {
            group,
            snapshot: recovery
                .snapshots
                .get(&group)
                .map(|file| RecoveredSnapshot {
                    index: file.index,
                    term: file.term,
                    data: file.data.clone(),
                }),
            ..RecoveredGroup::default()
        };
        if let Some(summary) = wal.group(group) {
            out.hard_state = summary.hard_state.map(|hard| raft::HardState {
                term: hard.term,
                vote: hard.vote,
                commit: hard.commit,
            });
            out.compaction_index = summary.compaction.map_or(0, |position| position.index);
            let low = summary.first_index.max(out.first_needed_index());
            if summary.last_index >= low {
                let entries = wal
                    .read_entries(group, low, summary.last_index + 1)
                    .await
                    .map_err(|error| RecoveryError::Read { group, error })?;
                for entry in entries {
                    out.entries.push(to_raft_entry(group, entry)?);
                }
            }
        }
        recovered.push(out);
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entries_record(group: u64, first: u64, payload_bytes: &[usize]) -> Record {
        let entries = payload_bytes
            .iter()
            .enumerate()
            .map(|(offset, &bytes)| wal::Entry {
                index: first + offset as u64,
                term: 1,
                kind: ENTRY_KIND_NORMAL,
                payload: Arc::from(vec![7u8; bytes]),
            })
            .collect();
        Record {
            group_id: group,
            kind: RecordKind::Entries { entries },
        }
    }

    fn hard_state_record(group: u64) -> Record {
        Record {
            group_id: group,
            kind: RecordKind::HardState(wal::HardState {
                term: 1,
                vote: 1,
                commit: 1,
            }),
        }
    }

    // Records that fit one batch stay one submission.
    #[test]
    fn small_turns_are_one_submission() {
        let records = vec![entries_record(1, 1, &[100, 200]), hard_state_record(1)];
        let out = submissions(records.clone(), 64 << 10, 16);
        assert_eq!(out, vec![records]);
    }

    // A turn larger than a batch is cut in order, between entries, and every submission
    // fits; the records' entries and order are kept.
    #[test]
    fn large_turns_are_cut_between_entries() {
        let batch_bytes_max = 16 << 10;
        let payloads = [6000, 6000, 6000, 6000, 100, 15000];
        let records = vec![
            entries_record(1, 5, &payloads),
            hard_state_record(1),
            entries_record(2, 1, &[10]),
            hard_state_record(2),
        ];
        let out = submissions(records, batch_bytes_max, 1024);
        assert!(out.len() > 1);
        let mut flat = Vec::new();
        for submission in &out {
            let bytes: usize = submission.iter().map(Record::encoded_bytes).sum();
            assert!(padded_batch_bytes(bytes) <= batch_bytes_max, "{bytes}");
            flat.extend(submission.iter().cloned());
        }
        let group_one: Vec<(u64, usize)> = flat
            .iter()
            .filter(|record| record.group_id == 1)
            .filter_map(|record| match &record.kind {
                RecordKind::Entries { entries } => Some(entries),
                _ => None,
            })
            .flatten()
            .map(|entry| (entry.index, entry.payload.len()))
            .collect();
        let expected: Vec<(u64, usize)> = payloads
            .iter()
            .enumerate()
            .map(|(offset, &bytes)| (5 + offset as u64, bytes))
            .collect();
        assert_eq!(group_one, expected);
        let kinds: Vec<(u64, bool)> = flat
            .iter()
            .map(|record| {
                (
                    record.group_id,
                    matches!(record.kind, RecordKind::HardState(_)),
                )
            })
            .collect();
        assert_eq!(kinds.iter().filter(|(_, hard)| *hard).count(), 2);
        assert_eq!(kinds.last(), Some(&(2, true)));
        let first_hard = kinds.iter().position(|&kind| kind == (1, true)).unwrap();
        assert!(kinds[..first_hard].iter().all(|&(group, _)| group == 1));
    }

    // The record count bound cuts too.
    #[test]
    fn record_count_bound_cuts() {
        let records: Vec<Record> = (0..5).map(hard_state_record).collect();
        let out = submissions(records, 64 << 10, 2);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    }
}
