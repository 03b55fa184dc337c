//! The bridge between a shard's Raft groups and its WAL: Raft writes become WAL records,
//! recovery becomes each group's start state, and snapshot files carry the membership
//! Raft needs next to the state machine bytes.

use std::path::Path;
use std::sync::Arc;

use crate::multiraft::{GroupId, GroupStart, GroupWrite};
use crate::raft::{self, ConfState, EntryKind, InitialState, Snapshot, SnapshotMeta};
use crate::wal::record::{
    padded_batch_bytes, ENTRIES_BODY_HEADER_BYTES, ENTRY_HEADER_BYTES, RECORD_HEADER_BYTES,
};
use crate::wal::{self, snapshot_file, Record, RecordKind, Recovery, Wal};

/// `Entry.kind` byte in the WAL for a normal entry.
const ENTRY_KIND_NORMAL: u8 = 0;
/// `Entry.kind` byte in the WAL for a membership change.
const ENTRY_KIND_CONF_CHANGE: u8 = 1;

/// "CKVS": opens the envelope stored as a snapshot file's data.
const ENVELOPE_MAGIC: u32 = u32::from_le_bytes(*b"CKVS");
const ENVELOPE_VERSION: u16 = 1;
/// A membership list longer than this in a snapshot file is corruption.
const ENVELOPE_MEMBERS_MAX: u32 = 1024;

/// The WAL records for one loop turn's writes, in order: per group a log reset when a
/// snapshot replaced the log, then entries, then the hard state.
pub fn records_for(writes: &[GroupWrite]) -> Vec<Record> {
    let mut records = Vec::with_capacity(writes.len() * 2);
    for write in writes {
        if let Some(snapshot) = &write.snapshot {
            records.push(Record {
                group_id: write.group,
                kind: RecordKind::LogReset {
                    index: snapshot.meta.index,
                    term: snapshot.meta.term,
                },
            });
        }
        if !write.entries.is_empty() {
            let entries = write.entries.iter().map(to_wal_entry).collect();
            records.push(Record {
                group_id: write.group,
                kind: RecordKind::Entries { entries },
            });
        }
        if let Some(hard) = write.hard_state {
            let hard = wal::HardState {
                term: hard.term,
                vote: hard.vote,
                commit: hard.commit,
            };
            records.push(Record {
                group_id: write.group,
                kind: RecordKind::HardState(hard),
            });
        }
    }
    records
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

fn to_wal_entry(entry: &raft::Entry) -> wal::Entry {
    wal::Entry {
        index: entry.index,
        term: entry.term,
        kind: match entry.kind {
            EntryKind::Normal => ENTRY_KIND_NORMAL,
            EntryKind::ConfChange => ENTRY_KIND_CONF_CHANGE,
        },
        payload: entry.data.clone(),
    }
}

fn to_raft_entry(entry: wal::Entry) -> Result<raft::Entry, String> {
    let kind = match entry.kind {
        ENTRY_KIND_NORMAL => EntryKind::Normal,
        ENTRY_KIND_CONF_CHANGE => EntryKind::ConfChange,
        other => return Err(format!("entry {} has unknown kind {other}", entry.index)),
    };
    Ok(raft::Entry {
        term: entry.term,
        index: entry.index,
        kind,
        data: entry.payload,
    })
}

/// Writes `snapshot` of `group` as its snapshot file (fsynced, renamed, directory
/// fsynced) so that a WAL record may then point at it.
pub fn write_snapshot_file(
    shard_dir: &Path,
    group: GroupId,
    snapshot: &Snapshot,
) -> Result<(), String> {
    let file = snapshot_file::Snapshot {
        group_id: group,
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        data: encode_envelope(&snapshot.meta.conf, &snapshot.data),
    };
    snapshot_file::write_snapshot(shard_dir, &file).map_err(|error| error.to_string())
}

/// Snapshot file data: magic u32, version u16, voter count u32, voters u64..., learner
/// count u32, learners u64..., then the state machine snapshot (little-endian).
fn encode_envelope(conf: &ConfState, data: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(14 + 8 * (conf.voters.len() + conf.learners.len()) + data.len());
    out.extend_from_slice(&ENVELOPE_MAGIC.to_le_bytes());
    out.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
    for list in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.extend_from_slice(data);
    out
}

fn decode_envelope(bytes: &[u8]) -> Result<(ConfState, Vec<u8>), String> {
    let mut at = 0usize;
    let mut take = |count: usize| -> Result<&[u8], String> {
        let slice = bytes
            .get(at..at + count)
            .ok_or("snapshot envelope is truncated")?;
        at += count;
        Ok(slice)
    };
    let magic = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let version = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
    if magic != ENVELOPE_MAGIC || version != ENVELOPE_VERSION {
        return Err("snapshot envelope has a bad magic or version".into());
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if count > ENVELOPE_MEMBERS_MAX {
            return Err(format!("snapshot envelope lists {count} members"));
        }
        for _ in 0..count {
            list.push(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
        }
    }
    let [voters, learners] = lists;
    let rest = bytes[at..].to_vec();
    Ok((ConfState { voters, learners }, rest))
}

/// Rebuilds the start state of `groups` from what the WAL recovered.
pub async fn recover_groups(
    wal: &Wal,
    recovery: &Recovery,
    groups: &[GroupId],
    initial_conf: &ConfState,
) -> Result<Vec<GroupStart>, String> {
    let mut starts = Vec::with_capacity(groups.len());
    for &group in groups {
        let snapshot = match recovery.snapshots.get(&group) {
            Some(file) => {
                let (conf, data) = decode_envelope(&file.data)
                    .map_err(|error| format!("group {group}: {error}"))?;
                Some(Snapshot {
                    meta: SnapshotMeta {
                        index: file.index,
                        term: file.term,
                        conf,
                    },
                    data: Arc::from(data),
                })
            }
            None => None,
        };
        let snapshot_index = snapshot.as_ref().map_or(0, |snapshot| snapshot.meta.index);
        let mut hard_state = raft::HardState::default();
        let mut entries = Vec::new();
        if let Some(summary) = wal.group(group) {
            if let Some(hard) = summary.hard_state {
                hard_state = raft::HardState {
                    term: hard.term,
                    vote: hard.vote,
                    commit: hard.commit,
                };
            }
            let low = summary.first_index.max(snapshot_index + 1);
            if summary.first_index > snapshot_index + 1 {
                return Err(format!(
                    "group {group}: the log starts at {} but the snapshot ends at {snapshot_index}",
                    summary.first_index
                ));
            }
            if summary.last_index >= low {
                for entry in wal
                    .read_entries(group, low, summary.last_index + 1)
                    .await
                    .map_err(|error| format!("group {group}: {error}"))?
                {
                    entries.push(to_raft_entry(entry)?);
                }
            }
        }
        starts.push(GroupStart {
            id: group,
            conf: initial_conf.clone(),
            raft: InitialState {
                hard_state,
                conf: initial_conf.clone(),
                snapshot,
                entries,
            },
        });
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The membership survives the trip through a snapshot file's data.
    #[test]
    fn envelope_round_trip() {
        let conf = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![9],
        };
        let bytes = encode_envelope(&conf, b"state");
        let (decoded, data) = decode_envelope(&bytes).unwrap();
        assert_eq!(decoded, conf);
        assert_eq!(data, b"state");
        assert!(decode_envelope(&bytes[..7]).is_err());
        assert!(decode_envelope(b"nonsense-bytes").is_err());
    }

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

    // Raft writes become reset, entries, hard state records in that order.
    #[test]
    fn records_keep_order() {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: 5,
                term: 2,
                conf: ConfState::with_voters(&[1]),
            },
            data: Arc::from(&b"s"[..]),
        };
        let entry = raft::Entry {
            term: 2,
            index: 6,
            kind: EntryKind::Normal,
            data: Arc::from(&b"e"[..]),
        };
        let write = GroupWrite {
            group: 3,
            snapshot: Some(snapshot),
            entries: vec![entry],
            hard_state: Some(raft::HardState {
                term: 2,
                vote: 1,
                commit: 6,
            }),
        };
        let records = records_for(&[write]);
        assert!(matches!(
            records[0].kind,
            RecordKind::LogReset { index: 5, term: 2 }
        ));
        assert!(matches!(records[1].kind, RecordKind::Entries { .. }));
        assert!(matches!(records[2].kind, RecordKind::HardState(_)));
        assert!(records.iter().all(|record| record.group_id == 3));
    }
}
