//! What a shard asks of its storage and gets back from it, as values: the records one turn
//! writes to the shard's log, the bytes of a group's snapshot file, and the start state of
//! each group rebuilt from what storage recovered. The driver maps these to the WAL's
//! on-disk records and files; the simulator keeps them on its simulated disk. Both recover
//! through [`group_start`], so a restart in the simulator runs the server's recovery.

use std::sync::Arc;

use thiserror::Error;

use crate::multiraft::{GroupId, GroupStart, GroupWrite};
use crate::raft::{self, ConfState, InitialState, Snapshot, SnapshotMeta};

/// "CKVS": opens the envelope stored as a snapshot file's data.
const ENVELOPE_MAGIC: u32 = u32::from_le_bytes(*b"CKVS");
const ENVELOPE_VERSION: u16 = 1;
/// A membership list longer than this in a snapshot file is corruption.
const ENVELOPE_MEMBERS_MAX: u32 = 1024;

/// One record of a shard's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRecord {
    pub group: GroupId,
    pub kind: StorageRecordKind,
}

/// What a record says about its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageRecordKind {
    /// Entries that replace the log from the first one's index on.
    Entries(Vec<raft::Entry>),
    HardState(raft::HardState),
    /// A snapshot (in the group's snapshot file) replaced the whole log at this position.
    LogReset {
        index: u64,
        term: u64,
    },
    /// The group's snapshot file covers the log through this position.
    Compaction {
        index: u64,
        term: u64,
    },
}

/// The records of one turn, made durable by one write and one fsync; `sequence` names
/// the batch in [`ShardCore::on_persisted`](super::ShardCore::on_persisted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageBatch {
    pub sequence: u64,
    pub records: Vec<StorageRecord>,
}

/// Why recovered storage cannot start a group.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StorageError {
    #[error("group {group}: snapshot file: {reason}")]
    Envelope {
        group: GroupId,
        reason: &'static str,
    },
    #[error("group {group}: the snapshot file lists {count} members")]
    TooManyMembers { group: GroupId, count: u32 },
    #[error("group {group}: the log starts at {log_first_index} but the snapshot ends at {snapshot_index}")]
    LogGap {
        group: GroupId,
        log_first_index: u64,
        snapshot_index: u64,
    },
    #[error("group {group}: recovered entries are not contiguous after index {after}")]
    EntriesOutOfOrder { group: GroupId, after: u64 },
}

/// Appends the records for one turn's Raft writes to `records`, in order: per group a log
/// reset when a snapshot replaced the log, then entries, then the hard state.
pub fn records_for(writes: Vec<GroupWrite>, records: &mut Vec<StorageRecord>) {
    records.reserve(writes.len() * 2);
    for write in writes {
        if let Some(snapshot) = &write.snapshot {
            records.push(StorageRecord {
                group: write.group,
                kind: StorageRecordKind::LogReset {
                    index: snapshot.meta.index,
                    term: snapshot.meta.term,
                },
            });
        }
        if !write.entries.is_empty() {
            records.push(StorageRecord {
                group: write.group,
                kind: StorageRecordKind::Entries(write.entries),
            });
        }
        if let Some(hard) = write.hard_state {
            records.push(StorageRecord {
                group: write.group,
                kind: StorageRecordKind::HardState(hard),
            });
        }
    }
}

/// The data of a group's snapshot file: magic u32, version u16, voter count u32, voters
/// u64..., learner count u32, learners u64..., then the state machine snapshot
/// (little-endian). A snapshot is megabytes: call this off the shard's loop.
pub fn snapshot_file_data(snapshot: &Snapshot) -> Vec<u8> {
    let conf = &snapshot.meta.conf;
    let data = &snapshot.data;
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

fn decode_envelope(group: GroupId, bytes: &[u8]) -> Result<(ConfState, Vec<u8>), StorageError> {
    let truncated = StorageError::Envelope {
        group,
        reason: "truncated",
    };
    let mut at = 0usize;
    let mut take = |count: usize| -> Result<&[u8], StorageError> {
        let slice = bytes.get(at..at + count).ok_or(truncated.clone())?;
        at += count;
        Ok(slice)
    };
    let magic = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let version = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
    if magic != ENVELOPE_MAGIC || version != ENVELOPE_VERSION {
        return Err(StorageError::Envelope {
            group,
            reason: "bad magic or version",
        });
    }
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        if count > ENVELOPE_MEMBERS_MAX {
            return Err(StorageError::TooManyMembers { group, count });
        }
        for _ in 0..count {
            list.push(u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")));
        }
    }
    let [voters, learners] = lists;
    let rest = bytes[at..].to_vec();
    Ok((ConfState { voters, learners }, rest))
}

/// A group's snapshot file as storage read it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredSnapshot {
    pub index: u64,
    pub term: u64,
    /// What [`snapshot_file_data`] made.
    pub data: Vec<u8>,
}

/// What storage holds for one group of the shard (all empty for a new group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredGroup {
    pub group: GroupId,
    /// The newest durable snapshot file.
    pub snapshot: Option<RecoveredSnapshot>,
    pub hard_state: Option<raft::HardState>,
    /// The log's compaction point (0: none): entries through it are in a snapshot file.
    pub compaction_index: u64,
    /// The log's entries after both the compaction point and the snapshot, in order.
    pub entries: Vec<raft::Entry>,
}

impl RecoveredGroup {
    /// The index of the first entry the group needs from the log: after its snapshot.
    pub fn first_needed_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.index) + 1
    }
}

/// Rebuilds a group's start state from what storage recovered; `initial_conf` is the
/// membership of a group that has no snapshot yet.
pub fn group_start(
    recovered: RecoveredGroup,
    initial_conf: &ConfState,
) -> Result<GroupStart, StorageError> {
    let group = recovered.group;
    let snapshot = match recovered.snapshot {
        Some(file) => {
            let (conf, data) = decode_envelope(group, &file.data)?;
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
    if recovered.compaction_index > snapshot_index {
        // The log was compacted past every snapshot file this group has: the entries in
        // between are gone.
        return Err(StorageError::LogGap {
            group,
            log_first_index: recovered.compaction_index + 1,
            snapshot_index,
        });
    }
    for (expected, entry) in (snapshot_index + 1..).zip(&recovered.entries) {
        if entry.index != expected {
            return Err(StorageError::EntriesOutOfOrder {
                group,
                after: expected - 1,
            });
        }
    }
    Ok(GroupStart {
        id: group,
        conf: initial_conf.clone(),
        raft: InitialState {
            hard_state: recovered.hard_state.unwrap_or_default(),
            conf: initial_conf.clone(),
            snapshot,
            entries: recovered.entries,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::EntryKind;

    fn snapshot(index: u64, conf: ConfState, data: &[u8]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term: 2,
                conf,
            },
            data: Arc::from(data),
        }
    }

    fn entry(index: u64) -> raft::Entry {
        raft::Entry {
            term: 2,
            index,
            kind: EntryKind::Normal,
            data: Arc::from(&b"e"[..]),
        }
    }

    // The membership survives the trip through a snapshot file's data, and damaged data
    // is refused.
    #[test]
    fn snapshot_file_round_trip() {
        let conf = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![9],
        };
        let data = snapshot_file_data(&snapshot(5, conf.clone(), b"state"));
        let recovered = RecoveredGroup {
            group: 4,
            snapshot: Some(RecoveredSnapshot {
                index: 5,
                term: 2,
                data: data.clone(),
            }),
            entries: vec![entry(6), entry(7)],
            ..RecoveredGroup::default()
        };
        let start = group_start(recovered.clone(), &ConfState::with_voters(&[1])).unwrap();
        let restored = start.raft.snapshot.expect("a snapshot");
        assert_eq!(restored.meta.conf, conf);
        assert_eq!(&restored.data[..], b"state");
        assert_eq!(start.raft.entries.len(), 2);
        for cut in [7, 3] {
            let mut damaged = recovered.clone();
            damaged.snapshot.as_mut().unwrap().data.truncate(cut);
            assert!(group_start(damaged, &ConfState::with_voters(&[1])).is_err());
        }
        let mut garbage = recovered.clone();
        garbage.snapshot.as_mut().unwrap().data = b"nonsense-bytes".to_vec();
        assert!(group_start(garbage, &ConfState::with_voters(&[1])).is_err());
    }

    // Entries that do not follow the snapshot, or a compaction past the snapshot, are
    // refused: the group would start with a hole in its log.
    #[test]
    fn holes_are_refused() {
        let conf = ConfState::with_voters(&[1]);
        let with_gap = RecoveredGroup {
            group: 1,
            entries: vec![entry(1), entry(3)],
            ..RecoveredGroup::default()
        };
        assert!(matches!(
            group_start(with_gap, &conf),
            Err(StorageError::EntriesOutOfOrder { after: 1, .. })
        ));
        let compacted_past_snapshot = RecoveredGroup {
            group: 1,
            compaction_index: 9,
            ..RecoveredGroup::default()
        };
        assert!(matches!(
            group_start(compacted_past_snapshot, &conf),
            Err(StorageError::LogGap { .. })
        ));
        let fresh = group_start(RecoveredGroup::default(), &conf).unwrap();
        assert_eq!(fresh.raft.conf, conf);
        assert!(fresh.raft.snapshot.is_none());
    }

    // Raft writes become reset, entries, hard state records in that order.
    #[test]
    fn records_keep_order() {
        let write = GroupWrite {
            group: 3,
            snapshot: Some(snapshot(5, ConfState::with_voters(&[1]), b"s")),
            entries: vec![entry(6)],
            hard_state: Some(raft::HardState {
                term: 2,
                vote: 1,
                commit: 6,
            }),
        };
        let mut records = Vec::new();
        records_for(vec![write], &mut records);
        assert!(matches!(
            records[0].kind,
            StorageRecordKind::LogReset { index: 5, term: 2 }
        ));
        assert!(matches!(records[1].kind, StorageRecordKind::Entries(_)));
        assert!(matches!(records[2].kind, StorageRecordKind::HardState(_)));
        assert!(records.iter().all(|record| record.group == 3));
    }
}
