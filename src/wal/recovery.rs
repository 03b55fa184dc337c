//! Reading the log back at start: every segment in order, every batch verified, each
//! group's state rebuilt; a torn tail told apart from corruption.
//!
//! The rules (docs/FORMATS.md has the full argument):
//! - Batches are written one at a time, each after the previous one's fdatasync, into
//!   pre-zeroed segments. So a crash can leave at most one partial batch, at the end of the
//!   data, followed by zeros only.
//! - An invalid batch that a partial write can explain (missing or partial blocks: bad
//!   magic, bad checksums, truncated), in the last segment holding data, with no valid batch
//!   after it, is a torn tail: it was never acknowledged. `Wal::open` overwrites it with zeros
//!   and appends continue there; no block holding acknowledged data is touched.
//! - Anything else is corruption and recovery refuses, naming the file and offset: an
//!   invalid batch followed by a valid one, an invalid batch in a segment followed by a
//!   segment with data, a sequence gap, a missing segment, damage a partial write cannot
//!   explain (a bad version, a valid checksum over malformed records, non-zero padding).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use glommio::io::DmaFile;

use super::error::{into_io, io_error, CorruptionReason, WalError};
use super::group_log::{GroupLog, GroupSummary};
use super::record::{
    decode_batch, decode_batch_header, BatchView, DecodeError, Entry, LogPosition, RecordViewKind,
    BATCH_MAGIC, BLOCK_BYTES,
};
use super::segment::{
    list_segments, open_segment, prime_direct_io, read_segment, segment_path, wal_directory,
    write_zeros, BatchLocation, BatchLocations,
};
use super::snapshot_file::{self, Snapshot};

/// How a segment's data ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentTail {
    /// Only zeros after the last valid batch.
    Zero,
    /// An invalid batch at `offset`; bytes up to `nonzero_end` are not all zero.
    Invalid {
        offset: u64,
        error: DecodeError,
        nonzero_end: u64,
        valid_batch_after: Option<u64>,
    },
    /// A valid batch whose sequence number is not the expected one.
    SequenceGap {
        offset: u64,
        expected: u64,
        found: u64,
    },
}

/// The valid batches of one segment and how its data ends.
#[derive(Clone, Debug)]
pub struct SegmentScan<'a> {
    pub batches: Vec<(u64, BatchView<'a>)>,
    /// First byte after the last valid batch.
    pub end_offset: u64,
    pub tail: SegmentTail,
}

impl SegmentScan<'_> {
    /// True when the segment holds anything but zeros.
    pub fn has_data(&self) -> bool {
        !self.batches.is_empty() || self.tail != SegmentTail::Zero
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&byte| byte == 0)
}

/// Reads the batches of a whole segment held in memory. `expected_sequence` is the
/// sequence the first batch must carry (`None` for the first batch of the log). Pure.
pub fn scan_segment(bytes: &[u8], segment: u64, expected_sequence: Option<u64>) -> SegmentScan<'_> {
    assert!(bytes.len() % BLOCK_BYTES == 0, "segments are whole blocks");
    let mut batches = Vec::new();
    let mut expected = expected_sequence;
    let mut offset = 0usize;
    let tail = loop {
        if all_zero(&bytes[offset..]) {
            break SegmentTail::Zero;
        }
        match decode_batch(&bytes[offset..], segment, offset as u64) {
            Ok(view) => {
                let sequence = view.header.sequence;
                if let Some(expected) = expected.filter(|&expected| expected != sequence) {
                    break SegmentTail::SequenceGap {
                        offset: offset as u64,
                        expected,
                        found: sequence,
                    };
                }
                expected = Some(sequence + 1);
                let padded = view.header.padded_bytes();
                batches.push((offset as u64, view));
                offset += padded;
            }
            Err(error) => {
                // A header that verifies on its own gives the batch's extent, so the search
                // for a later valid batch skips its payload (which holds caller data that
                // could imitate a batch). Otherwise every later block is a candidate.
                let search_from = match decode_batch_header(&bytes[offset..]) {
                    Ok(header) if offset + header.padded_bytes() <= bytes.len() => {
                        offset + header.padded_bytes()
                    }
                    _ => offset + BLOCK_BYTES,
                };
                let valid_batch_after = find_valid_batch(bytes, segment, search_from, expected);
                let nonzero_end = bytes
                    .iter()
                    .rposition(|&byte| byte != 0)
                    .map_or(offset, |last| {
                        (last + 1).div_ceil(BLOCK_BYTES) * BLOCK_BYTES
                    });
                break SegmentTail::Invalid {
                    offset: offset as u64,
                    error,
                    nonzero_end: nonzero_end as u64,
                    valid_batch_after: valid_batch_after.map(|found| found as u64),
                };
            }
        }
    };
    SegmentScan {
        batches,
        end_offset: offset as u64,
        tail,
    }
}

/// The first block boundary at or after `from` holding a valid batch written for that very
/// place with a sequence at least `minimum_sequence`.
fn find_valid_batch(
    bytes: &[u8],
    segment: u64,
    from: usize,
    minimum_sequence: Option<u64>,
) -> Option<usize> {
    let magic = BATCH_MAGIC.to_le_bytes();
    (from..bytes.len()).step_by(BLOCK_BYTES).find(|&offset| {
        bytes[offset..offset + 4] == magic
            && decode_batch(&bytes[offset..], segment, offset as u64).is_ok_and(|view| {
                minimum_sequence.is_none_or(|minimum| view.header.sequence >= minimum)
            })
    })
}

/// A torn tail found (and, by `Wal::open`, zeroed) at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub segment: u64,
    /// Where the invalid batch starts; appends continue here.
    pub offset: u64,
    /// End of the non-zero bytes that were (or would be) overwritten with zeros.
    pub end_offset: u64,
    pub error: DecodeError,
}

/// What recovery found, for the caller.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Every group with state in the log or a snapshot file.
    pub groups: BTreeMap<u64, GroupSummary>,
    /// The snapshot files loaded (and verified) before the log was replayed.
    pub snapshots: BTreeMap<u64, Snapshot>,
    pub torn_tail: Option<TornTail>,
    pub segments: usize,
    pub batches: u64,
    pub records: u64,
    /// Sequence of the last valid batch (0: none).
    pub last_sequence: u64,
}

/// Applies decoded batches to group states, in log order.
#[derive(Debug)]
pub(crate) struct Replay {
    pub groups: HashMap<u64, GroupLog>,
    /// Groups whose last record was GroupRemoved.
    removed: HashSet<u64>,
    /// Where each group's first held run was written, for error messages.
    pub locations: BatchLocations,
    cache_bytes_max: usize,
    pub last_sequence: Option<u64>,
    pub batches: u64,
    pub records: u64,
}

impl Replay {
    pub fn new(cache_bytes_max: usize) -> Self {
        Replay {
            groups: HashMap::new(),
            removed: HashSet::new(),
            locations: BatchLocations::default(),
            cache_bytes_max,
            last_sequence: None,
            batches: 0,
            records: 0,
        }
    }

    pub fn expected_sequence(&self) -> Option<u64> {
        self.last_sequence.map(|sequence| sequence + 1)
    }

    /// Applies one verified batch read from `segment` at `offset` of `path`.
    pub fn apply(
        &mut self,
        batch: &BatchView<'_>,
        segment: u64,
        offset: u64,
        path: &Path,
    ) -> Result<(), WalError> {
        let sequence = batch.header.sequence;
        let corrupt = |reason| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        self.locations.push(
            sequence,
            BatchLocation {
                segment,
                offset,
                padded_bytes: batch.header.padded_bytes() as u32,
            },
        );
        for record in &batch.records {
            let group_id = record.group_id;
            match &record.kind {
                RecordViewKind::Entries { entries } => {
                    let group = self.groups.entry(group_id).or_default();
                    let first_index = entries[0].index;
                    if first_index <= group.compaction_index() {
                        return Err(corrupt(CorruptionReason::AppendBeforeCompaction {
                            group: group_id,
                            first_index,
                            compaction_index: group.compaction_index(),
                        }));
                    }
                    if first_index > group.last_index() + 1 {
                        // The records before this one were collected: a later compaction
                        // covers them, or `finish` reports the hole.
                        group.forget_entries();
                    }
                    group.append_views(entries, sequence, self.cache_bytes_max);
                    self.removed.remove(&group_id);
                }
                RecordViewKind::HardState(state) => {
                    self.groups
                        .entry(group_id)
                        .or_default()
                        .set_hard_state(*state, sequence);
                    self.removed.remove(&group_id);
                }
                RecordViewKind::Compaction { index, term }
                | RecordViewKind::LogReset { index, term } => {
                    let group = self.groups.entry(group_id).or_default();
                    if group.check_compaction(*index).is_err() {
                        return Err(corrupt(CorruptionReason::CompactionRegressed {
                            group: group_id,
                            index: *index,
                            previous: group.compaction_index(),
                        }));
                    }
                    let position = LogPosition {
                        index: *index,
                        term: *term,
                    };
                    if matches!(record.kind, RecordViewKind::LogReset { .. }) {
                        group.reset(position, sequence);
                    } else {
                        group.compact(position, sequence);
                    }
                    self.removed.remove(&group_id);
                }
                RecordViewKind::GroupRemoved => {
                    self.groups.remove(&group_id);
                    self.removed.insert(group_id);
                }
            }
        }
        self.last_sequence = Some(sequence);
        self.batches += 1;
        self.records += batch.records.len() as u64;
        Ok(())
    }

    /// Brings in the snapshot files, then checks every group's log is whole.
    pub fn finish(
        &mut self,
        data_dir: &Path,
        wal_dir: &Path,
        snapshots: &BTreeMap<u64, Snapshot>,
    ) -> Result<SnapshotOutcome, WalError> {
        let mut outcome = SnapshotOutcome::default();
        for (&group_id, group) in &self.groups {
            let Some(compaction) = group.compaction() else {
                continue;
            };
            let covered = snapshots
                .get(&group_id)
                .is_some_and(|snapshot| snapshot.index >= compaction.index);
            if !covered {
                let snapshot = match snapshots.get(&group_id) {
                    Some(snapshot) => format!("covers only index {}", snapshot.index),
                    None => "is missing".to_string(),
                };
                return Err(WalError::Corrupt {
                    path: snapshot_file::snapshot_path(data_dir, group_id),
                    offset: 0,
                    reason: CorruptionReason::SnapshotBehindLog {
                        group: group_id,
                        compaction_index: compaction.index,
                        snapshot,
                    },
                });
            }
        }
        for (&group_id, snapshot) in snapshots {
            if self.removed.contains(&group_id) {
                outcome.stale.push(group_id);
                continue;
            }
            let group = self.groups.entry(group_id).or_default();
            if snapshot.index > group.compaction_index() {
                // The snapshot was written but its compaction record was not (yet) durable:
                // do what the writer would have done with it. Every entry after the last
                // durable compaction is still held, so the term check has what it needs.
                let position = LogPosition {
                    index: snapshot.index,
                    term: snapshot.term,
                };
                let keeps_log = group.compaction_keeps_log(position);
                if keeps_log {
                    group.compact(position, 0);
                } else {
                    group.reset(position, 0);
                }
                outcome.unrecorded.push((group_id, position, keeps_log));
            }
        }
        for (&group_id, group) in &self.groups {
            if let Some(first_held) = group.first_held_index() {
                if first_held != group.first_index() {
                    let run = group
                        .run_of(first_held)
                        .expect("the first held index has a run");
                    let (path, offset) = match self.locations.get(run.batch_sequence) {
                        Some(location) => {
                            (segment_path(wal_dir, location.segment), location.offset)
                        }
                        None => (wal_dir.to_path_buf(), 0),
                    };
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        reason: CorruptionReason::LogHole {
                            group: group_id,
                            first_index: first_held,
                            last_index: group.first_index() - 1,
                        },
                    });
                }
            }
        }
        Ok(outcome)
    }
}

/// What `Replay::finish` did with the snapshot files.
#[derive(Clone, Debug, Default)]
pub(crate) struct SnapshotOutcome {
    /// Groups whose snapshot files are stale: the group was removed after they were written.
    pub stale: Vec<u64>,
    /// Compactions taken from snapshot files because their records never became durable:
    /// (group, position, whether the log after it was kept). `Wal::open` writes them.
    pub unrecorded: Vec<(u64, LogPosition, bool)>,
}

/// One segment file as recovery left it.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    pub sequence: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Open for reads and writes (`Wal::open` only).
    pub file: Option<DmaFile>,
}

/// Everything `Wal::open` needs to continue the log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub replay: Replay,
    pub segments: Vec<RecoveredSegment>,
    /// The last segment holding a valid batch and the end of its data, where appends
    /// continue (None: no segment holds a batch).
    pub write_position: Option<(u64, u64)>,
    pub torn_tail: Option<TornTail>,
    pub snapshots: BTreeMap<u64, Snapshot>,
    pub snapshot_outcome: SnapshotOutcome,
}

impl Recovered {
    pub fn report(&self) -> Recovery {
        let groups = self
            .replay
            .groups
            .iter()
            .map(|(&id, group)| (id, group.summary(id)))
            .collect();
        Recovery {
            groups,
            snapshots: self
                .snapshots
                .iter()
                .filter(|(id, _)| !self.snapshot_outcome.stale.contains(id))
                .map(|(&id, snapshot)| (id, snapshot.clone()))
                .collect(),
            torn_tail: self.torn_tail.clone(),
            segments: self.segments.len(),
            batches: self.replay.batches,
            records: self.replay.records,
            last_sequence: self.replay.last_sequence.unwrap_or(0),
        }
    }
}

/// A decision recovery defers until it knows whether a later segment holds data.
#[derive(Debug)]
enum Pending {
    /// An invalid batch that a torn write explains, if nothing follows it.
    Invalid {
        path: PathBuf,
        segment: u64,
        offset: u64,
        error: DecodeError,
        nonzero_end: u64,
    },
    /// A segment without data, acceptable only if no later segment has data.
    Empty { path: PathBuf },
}

/// Reads the log under `data_dir`. With `writable`, segment files stay open for the writer,
/// temporary files of interrupted segment or snapshot creation are deleted, and stale
/// snapshot files are reported for deletion; otherwise nothing on disk changes (except the
/// sentinel, which is created if missing).
pub(crate) async fn recover(
    data_dir: &Path,
    writable: bool,
    cache_bytes_max: usize,
) -> Result<Recovered, WalError> {
    let wal_dir = wal_directory(data_dir);
    std::fs::create_dir_all(&wal_dir).map_err(|error| io_error("creating", &wal_dir, error))?;
    prime_direct_io(&wal_dir).await?;
    let snapshots = snapshot_file::load_snapshots(data_dir, writable)?;
    let listing = list_segments(&wal_dir)?;
    if writable && !listing.temporary.is_empty() {
        for path in &listing.temporary {
            std::fs::remove_file(path).map_err(|error| io_error("removing", path, error))?;
        }
        snapshot_file::sync_directory(&wal_dir)
            .map_err(|error| io_error("syncing", &wal_dir, error))?;
    }
    for pair in listing.segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(WalError::Corrupt {
                path: segment_path(&wal_dir, pair[0].0 + 1),
                offset: 0,
                reason: CorruptionReason::MissingSegment,
            });
        }
    }
    let mut replay = Replay::new(cache_bytes_max);
    let mut segments = Vec::with_capacity(listing.segments.len());
    let mut pending: Option<Pending> = None;
    let mut write_position = None;
    for (sequence, path) in &listing.segments {
        let (sequence, path) = (*sequence, path.clone());
        let file = open_segment(&path, writable).await?;
        let bytes = read_segment(&file, &path).await?;
        let scan = scan_segment(&bytes, sequence, replay.expected_sequence());
        let has_data = scan.has_data();
        if has_data {
            match pending.take() {
                Some(Pending::Invalid {
                    path,
                    offset,
                    error,
                    ..
                }) => {
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        reason: CorruptionReason::DataInLaterSegment {
                            error,
                            later_segment: sequence,
                        },
                    })
                }
                Some(Pending::Empty { path }) => {
                    return Err(WalError::Corrupt {
                        path,
                        offset: 0,
                        reason: CorruptionReason::EmptySegmentBeforeData {
                            later_segment: sequence,
                        },
                    })
                }
                None => {}
            }
        }
        for (offset, batch) in &scan.batches {
            replay.apply(batch, sequence, *offset, &path)?;
        }
        match &scan.tail {
            SegmentTail::Zero => {
                if !has_data && pending.is_none() {
                    pending = Some(Pending::Empty { path: path.clone() });
                }
            }
            SegmentTail::SequenceGap {
                offset,
                expected,
                found,
            } => {
                return Err(WalError::Corrupt {
                    path,
                    offset: *offset,
                    reason: CorruptionReason::SequenceGap {
                        expected: *expected,
                        found: *found,
                    },
                });
            }
            SegmentTail::Invalid {
                offset,
                error,
                nonzero_end,
                valid_batch_after,
            } => {
                if let Some(next_offset) = valid_batch_after {
                    return Err(WalError::Corrupt {
                        path,
                        offset: *offset,
                        reason: CorruptionReason::ValidBatchFollows {
                            error: error.clone(),
                            next_offset: *next_offset,
                        },
                    });
                }
                if !error.is_possible_torn_write() {
                    return Err(WalError::Corrupt {
                        path,
                        offset: *offset,
                        reason: CorruptionReason::Batch(error.clone()),
                    });
                }
                pending = Some(Pending::Invalid {
                    path: path.clone(),
                    segment: sequence,
                    offset: *offset,
                    error: error.clone(),
                    nonzero_end: *nonzero_end,
                });
            }
        }
        if !scan.batches.is_empty() {
            write_position = Some((sequence, scan.end_offset));
        }
        drop(scan);
        let file = if writable {
            Some(file)
        } else {
            file.close()
                .await
                .map_err(|error| io_error("closing", &path, into_io(error)))?;
            None
        };
        segments.push(RecoveredSegment {
            sequence,
            path,
            bytes: bytes.len() as u64,
            file,
        });
    }
    let torn_tail = match pending {
        Some(Pending::Invalid {
            path,
            segment,
            offset,
            error,
            nonzero_end,
        }) => Some(TornTail {
            path,
            segment,
            offset,
            end_offset: nonzero_end,
            error,
        }),
        Some(Pending::Empty { .. }) | None => None,
    };
    let snapshot_outcome = replay.finish(data_dir, &wal_dir, &snapshots)?;
    Ok(Recovered {
        replay,
        segments,
        write_position,
        torn_tail,
        snapshots,
        snapshot_outcome,
    })
}

/// Overwrites a torn tail with zeros and syncs, so that the log ends cleanly where appends
/// continue. The blocks overwritten never held an acknowledged batch.
pub(crate) async fn zero_torn_tail(file: &DmaFile, torn: &TornTail) -> Result<(), WalError> {
    write_zeros(file, &torn.path, torn.offset, torn.end_offset).await?;
    file.fdatasync()
        .await
        .map_err(|error| io_error("syncing", &torn.path, into_io(error)))
}

/// A group as [`inspect`] sees it: its summary and every entry of its log.
#[derive(Clone, Debug)]
pub struct InspectedGroup {
    pub summary: GroupSummary,
    pub entries: Vec<Entry>,
}

/// The whole content of a log, read without changing anything.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub recovery: Recovery,
    pub groups: BTreeMap<u64, InspectedGroup>,
}

/// Reads the log under `data_dir` the way recovery does, without repairing a torn tail or
/// deleting anything, and returns every group with all its entries in memory. For tests and
/// tools; call it on a glommio executor (it primes direct I/O first, like `Wal::open`).
pub async fn inspect(data_dir: &Path) -> Result<Inspection, WalError> {
    let recovered = recover(data_dir, false, usize::MAX).await?;
    let recovery = recovered.report();
    let groups = recovered
        .replay
        .groups
        .iter()
        .map(|(&id, group)| {
            let entries: Vec<Entry> = group.cached_entries().cloned().collect();
            (
                id,
                InspectedGroup {
                    summary: group.summary(id),
                    entries,
                },
            )
        })
        .collect();
    Ok(Inspection { recovery, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{encode_batch, HardState, Record, RecordKind};

    const SEGMENT_BYTES: usize = 16 * BLOCK_BYTES;

    fn entries_record(group_id: u64, first: u64, count: u64, size: usize) -> Record {
        Record {
            group_id,
            kind: RecordKind::Entries {
                entries: (first..first + count)
                    .map(|index| Entry {
                        index,
                        term: 1,
                        kind: 0,
                        payload: vec![index as u8; size].into(),
                    })
                    .collect(),
            },
        }
    }

    /// A segment with `count` batches starting at `first_sequence`; returns the bytes and
    /// each batch's offset.
    fn segment_with_batches(
        segment: u64,
        first_sequence: u64,
        count: u64,
    ) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = vec![0u8; SEGMENT_BYTES];
        let mut offsets = Vec::new();
        let mut offset = 0;
        for number in 0..count {
            let records = vec![
                entries_record(1, number * 2 + 1, 2, 3000),
                Record {
                    group_id: 1,
                    kind: RecordKind::HardState(HardState {
                        term: 1,
                        vote: 1,
                        commit: number,
                    }),
                },
            ];
            let batch = encode_batch(&records, first_sequence + number, segment, offset as u32);
            bytes[offset..offset + batch.len()].copy_from_slice(&batch);
            offsets.push(offset);
            offset += batch.len();
        }
        (bytes, offsets)
    }

    // A clean segment yields every batch and a zero tail.
    #[test]
    fn clean_segment() {
        let (bytes, offsets) = segment_with_batches(4, 10, 3);
        let scan = scan_segment(&bytes, 4, Some(10));
        assert_eq!(scan.batches.len(), 3);
        assert_eq!(scan.tail, SegmentTail::Zero);
        assert_eq!(scan.end_offset as usize, offsets[2] + 2 * BLOCK_BYTES);
    }

    // A damaged last batch followed by zeros is a torn-write candidate with no valid batch
    // after it.
    #[test]
    fn torn_last_batch() {
        let (mut bytes, offsets) = segment_with_batches(4, 10, 3);
        bytes[offsets[2] + 5000] ^= 0xff;
        let scan = scan_segment(&bytes, 4, Some(10));
        assert_eq!(scan.batches.len(), 2);
        match scan.tail {
            SegmentTail::Invalid {
                offset,
                error,
                nonzero_end,
                valid_batch_after,
            } => {
                assert_eq!(offset as usize, offsets[2]);
                assert!(error.is_possible_torn_write());
                assert_eq!(nonzero_end as usize, offsets[2] + 2 * BLOCK_BYTES);
                assert_eq!(valid_batch_after, None);
            }
            other => panic!("unexpected tail {other:?}"),
        }
    }

    // A missing header block with a written second block is still a torn tail.
    #[test]
    fn torn_batch_without_its_header_block() {
        let (mut bytes, offsets) = segment_with_batches(4, 10, 3);
        bytes[offsets[2]..offsets[2] + BLOCK_BYTES].fill(0);
        let scan = scan_segment(&bytes, 4, Some(10));
        assert!(matches!(
            scan.tail,
            SegmentTail::Invalid {
                error: DecodeError::BadMagic { found: 0 },
                valid_batch_after: None,
                ..
            }
        ));
    }

    // Damage in the middle is reported with the valid batch that follows it.
    #[test]
    fn damage_in_the_middle_finds_the_next_batch() {
        let (mut bytes, offsets) = segment_with_batches(4, 10, 3);
        bytes[offsets[1] + 3] ^= 0x10;
        let scan = scan_segment(&bytes, 4, Some(10));
        assert!(matches!(
            scan.tail,
            SegmentTail::Invalid { valid_batch_after: Some(next), .. } if next as usize == offsets[2]
        ));
        // Payload damage keeps the header, whose length is trusted for the search.
        let (mut bytes, offsets) = segment_with_batches(4, 10, 3);
        bytes[offsets[0] + 4000] ^= 0x10;
        let scan = scan_segment(&bytes, 4, Some(10));
        assert!(matches!(
            scan.tail,
            SegmentTail::Invalid { valid_batch_after: Some(next), .. } if next as usize == offsets[1]
        ));
    }

    // A valid batch with an unexpected sequence stops the scan as a sequence gap.
    #[test]
    fn sequence_gap() {
        let (bytes, _) = segment_with_batches(4, 10, 2);
        let scan = scan_segment(&bytes, 4, Some(9));
        assert_eq!(
            scan.tail,
            SegmentTail::SequenceGap {
                offset: 0,
                expected: 9,
                found: 10
            }
        );
    }

    // A batch copied to another place does not verify there.
    #[test]
    fn misplaced_batch_is_not_valid() {
        let (bytes, _) = segment_with_batches(4, 10, 1);
        let scan = scan_segment(&bytes, 5, None);
        assert!(matches!(
            scan.tail,
            SegmentTail::Invalid {
                error: DecodeError::WrongLocation { .. },
                ..
            }
        ));
    }

    // Replay applies records in order and rebuilds state; a hole is refused.
    #[test]
    fn replay_rebuilds_state_and_refuses_holes() {
        let (bytes, _) = segment_with_batches(1, 1, 3);
        let scan = scan_segment(&bytes, 1, None);
        let mut replay = Replay::new(usize::MAX);
        for (offset, batch) in &scan.batches {
            replay
                .apply(batch, 1, *offset, Path::new("segment"))
                .unwrap();
        }
        let group = &replay.groups[&1];
        assert_eq!(group.last_index(), 6);
        assert_eq!(group.hard_state().unwrap().commit, 2);
        assert_eq!(replay.last_sequence, Some(3));

        // Entries resuming after a gap are accepted while reading (a later compaction may
        // cover the gap) and refused at the end when nothing does.
        let hole = encode_batch(&[entries_record(1, 9, 1, 1)], 4, 2, 0);
        let scan = scan_segment(&hole, 2, replay.expected_sequence());
        replay
            .apply(&scan.batches[0].1, 2, 0, Path::new("next"))
            .unwrap();
        let mut covered = Replay {
            groups: replay.groups.clone(),
            ..Replay::new(usize::MAX)
        };
        let error = replay
            .finish(Path::new("data"), Path::new("data/wal"), &BTreeMap::new())
            .unwrap_err();
        assert!(matches!(
            error,
            WalError::Corrupt {
                reason: CorruptionReason::LogHole {
                    group: 1,
                    first_index: 9,
                    ..
                },
                ..
            }
        ));
        // A compaction through 8 (with its snapshot) covers the gap.
        covered
            .groups
            .get_mut(&1)
            .unwrap()
            .compact(LogPosition { index: 8, term: 1 }, 5);
        let snapshot = Snapshot {
            group_id: 1,
            index: 8,
            term: 1,
            data: Vec::new(),
        };
        let snapshots = BTreeMap::from([(1, snapshot)]);
        covered
            .finish(Path::new("data"), Path::new("data/wal"), &snapshots)
            .unwrap();
        assert_eq!(covered.groups[&1].first_held_index(), Some(9));
    }
}
