//! The bridge between a shard's Raft groups and its WAL: Raft writes become WAL records,
//! recovery becomes each group's start state, and snapshot files carry the membership
//! Raft needs next to the state machine bytes.

use std::path::Path;
use std::sync::Arc;

use crate::multiraft::{GroupId, GroupStart, GroupWrite};
use crate::raft::{self, ConfState, EntryKind, InitialState, Snapshot, SnapshotMeta};
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
