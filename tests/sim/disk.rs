//! The disk of one simulated node: one WAL whose batches become durable in order after a
//! random fsync delay, the durable Raft state of each group it holds, and what a crash
//! keeps (every durable batch, plus a random prefix of the pending ones).

use std::collections::{BTreeMap, VecDeque};

use corekv::multiraft::{GroupId, GroupSnapshot, GroupStart, GroupWrite, PersistToken};
use corekv::raft::{ConfState, Entry, HardState, InitialState, Message, Snapshot};

/// What storage holds for one group: the state a restarted replica starts from.
#[derive(Clone, Debug, Default)]
pub struct GroupDurable {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl GroupDurable {
    fn snapshot_index(&self) -> u64 {
        self.snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.meta.index)
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Writes one group's part of a batch: the snapshot (replacing log and state machine),
    /// then entries (replacing the log from their first index), then the hard state.
    fn write(&mut self, write: GroupWrite) -> Result<(), String> {
        if let Some(snapshot) = write.snapshot {
            if snapshot.meta.index < self.hard_state.commit {
                return Err(format!(
                    "a received snapshot at index {} is behind the durable commit {}",
                    snapshot.meta.index, self.hard_state.commit
                ));
            }
            self.entries.clear();
            self.snapshot = Some(snapshot);
        }
        if let Some(first) = write.entries.first() {
            let snapshot_index = self.snapshot_index();
            if first.index <= snapshot_index {
                return Err(format!(
                    "entries from index {} would overwrite the durable snapshot at {}",
                    first.index, snapshot_index
                ));
            }
            if first.index > self.last_index() + 1 {
                return Err(format!(
                    "entries from index {} leave a gap after the durable log ending at {}",
                    first.index,
                    self.last_index()
                ));
            }
            self.entries
                .truncate((first.index - snapshot_index - 1) as usize);
            self.entries.extend(write.entries);
        }
        if let Some(hard_state) = write.hard_state {
            self.hard_state = hard_state;
        }
        Ok(())
    }

    /// Keeps the node's own compaction snapshot and drops the entries it covers.
    fn compact(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let index = snapshot.meta.index;
        let snapshot_index = self.snapshot_index();
        if index <= snapshot_index {
            return Ok(());
        }
        if index > self.last_index() {
            return Err(format!(
                "a compaction snapshot at index {index} covers entries that are not durable \
                 (the durable log ends at {})",
                self.last_index()
            ));
        }
        let covered = &self.entries[(index - snapshot_index - 1) as usize];
        if covered.term != snapshot.meta.term {
            return Err(format!(
                "a compaction snapshot at index {index} has term {} but the durable entry has \
                 term {}",
                snapshot.meta.term, covered.term
            ));
        }
        self.entries.drain(..(index - snapshot_index) as usize);
        self.snapshot = Some(snapshot);
        Ok(())
    }
}

/// One WAL batch on its way to the platter.
#[derive(Debug)]
pub struct PendingBatch {
    pub durable_at: u64,
    pub writes: Vec<GroupWrite>,
    pub snapshots: Vec<GroupSnapshot>,
    /// Sent once the batch is durable.
    pub persisted_messages: Vec<(GroupId, Message)>,
    pub token: PersistToken,
}

/// A node's disk: durable state per group and the batches not yet durable.
#[derive(Debug)]
pub struct Disk {
    pub groups: BTreeMap<GroupId, GroupDurable>,
    pub pending: VecDeque<PendingBatch>,
}

impl Disk {
    /// An empty disk for a node that holds `groups`.
    pub fn new(groups: &[GroupId]) -> Disk {
        Disk {
            groups: groups
                .iter()
                .map(|&group| (group, GroupDurable::default()))
                .collect(),
            pending: VecDeque::new(),
        }
    }

    /// Makes one batch durable.
    pub fn make_durable(
        &mut self,
        writes: Vec<GroupWrite>,
        snapshots: Vec<GroupSnapshot>,
    ) -> Result<(), String> {
        for write in writes {
            let group = write.group;
            let durable = self
                .groups
                .get_mut(&group)
                .ok_or_else(|| format!("a write for group {group}, which this node lacks"))?;
            durable
                .write(write)
                .map_err(|error| format!("group {group}: {error}"))?;
        }
        for GroupSnapshot { group, snapshot } in snapshots {
            let durable = self
                .groups
                .get_mut(&group)
                .ok_or_else(|| format!("a snapshot for group {group}, which this node lacks"))?;
            durable
                .compact(snapshot)
                .map_err(|error| format!("group {group}: {error}"))?;
        }
        Ok(())
    }

    /// The node crashed: the first `kept` pending batches reached the disk (batches are
    /// atomic, since the real WAL checksums each one), the rest are lost. Returns how many
    /// were lost.
    pub fn crash(&mut self, kept: usize) -> Result<usize, String> {
        let lost = self.pending.len() - kept;
        let survivors: Vec<PendingBatch> = self.pending.drain(..kept).collect();
        self.pending.clear();
        for batch in survivors {
            self.make_durable(batch.writes, batch.snapshots)?;
        }
        Ok(lost)
    }

    /// What a restarted node's groups start from.
    pub fn group_starts(&self, conf_of: impl Fn(GroupId) -> ConfState) -> Vec<GroupStart> {
        self.groups
            .iter()
            .map(|(&group, durable)| GroupStart {
                id: group,
                conf: conf_of(group),
                raft: InitialState {
                    hard_state: durable.hard_state,
                    conf: conf_of(group),
                    snapshot: durable.snapshot.clone(),
                    entries: durable.entries.clone(),
                },
            })
            .collect()
    }
}
