//! Recovery of the write-ahead log on real files: fresh and reused data folders, torn
//! tails, corruption, garbage collection, snapshots, and the glommio direct-I/O pitfall.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};

use corekv::wal::record::{decode_batch_header, BLOCK_BYTES};
use corekv::wal::segment::{segment_path, wal_directory};
use corekv::wal::snapshot_file::{self, Snapshot};
use corekv::wal::{
    CorruptionReason, Entry, HardState, Record, RecordKind, Wal, WalConfig, WalError,
};
use glommio::LocalExecutorBuilder;

/// Runs `make()` on a brand-new executor in its own thread, as a shard would.
fn on_fresh_executor<T, F, G>(make: G) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
    G: FnOnce() -> F + Send + 'static,
{
    LocalExecutorBuilder::default()
        // See corekv::server::EXECUTOR_PREEMPT_TIMER: avoids a glommio hang under load.
        .preempt_timer(corekv::server::EXECUTOR_PREEMPT_TIMER)
        .spawn(make)
        .expect("executor starts")
        .join()
        .expect("executor runs")
}

fn test_directory(name: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-recovery-{name}"));
    let _ = fs::remove_dir_all(&directory);
    fs::create_dir_all(&directory).unwrap();
    directory
}

fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 32 * 1024,
        batch_records_max: 256,
        segments_ready_ahead: 1,
        cache_bytes_per_group_max: 4 * 1024,
        segments_pinned_max: 3,
    }
}

/// The payload of entry `index` of `group` with `term`: a pure function, so any entry read
/// back can be checked.
fn payload(group: u64, index: u64, term: u64) -> Vec<u8> {
    let mut state = group.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ term;
    let length = (state % 700) as usize;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn entries(group: u64, first: u64, count: u64, term: u64) -> Record {
    Record {
        group_id: group,
        kind: RecordKind::Entries {
            entries: (first..first + count)
                .map(|index| Entry {
                    index,
                    term,
                    kind: (index % 2) as u8,
                    payload: payload(group, index, term).into(),
                })
                .collect(),
        },
    }
}

fn hard_state(group: u64, term: u64, commit: u64) -> Record {
    Record {
        group_id: group,
        kind: RecordKind::HardState(HardState {
            term,
            vote: group,
            commit,
        }),
    }
}

fn check_entries(group: u64, read: &[Entry], low: u64, high: u64, term: u64) {
    assert_eq!(
        read.len() as u64,
        high - low,
        "group {group} [{low}, {high})"
    );
    for (entry, index) in read.iter().zip(low..) {
        assert_eq!(entry.index, index);
        assert_eq!(entry.term, term, "group {group} index {index}");
        assert_eq!(
            &entry.payload[..],
            &payload(group, index, term)[..],
            "group {group} index {index}"
        );
    }
}

/// Writes `batches` batches of one record each for group 1 (entries 1..=batches), one
/// append (so one batch) at a time, then closes.
fn write_batches(directory: &Path, config: WalConfig, batches: u64) {
    let directory = directory.to_path_buf();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&directory, config).await.unwrap();
        for index in 1..=batches {
            wal.append(vec![entries(1, index, 1, 1), hard_state(1, 1, index)])
                .await
                .unwrap();
        }
        wal.close().await.unwrap();
    });
}

/// Offsets of the batches at the start of a segment file, read with the public decoder.
fn batch_offsets(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode_batch_header(&bytes[offset..]) {
            Ok(header) => {
                offsets.push(offset as u64);
                offset += header.padded_bytes();
            }
            Err(_) => break,
        }
    }
    offsets
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

// A WAL created in a brand-new folder is recovered, with O_DIRECT reads, by a brand-new
// executor: every record comes back, from memory and from disk.
#[test]
fn brand_new_directory_recovers_on_a_fresh_executor() {
    let directory = test_directory("brand-new");
    let config = small_config();
    let (write_directory, write_config) = (directory.clone(), config.clone());
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&write_directory, write_config).await.unwrap();
        assert!(recovery.groups.is_empty());
        assert_eq!(recovery.torn_tail, None);
        for round in 0..40u64 {
            let tickets: Vec<_> = (1..=3u64)
                .map(|group| {
                    wal.try_submit(vec![
                        entries(group, round * 2 + 1, 2, 1),
                        hard_state(group, 1, round * 2),
                    ])
                    .unwrap()
                })
                .collect();
            // Three groups in one loop turn share one batch.
            assert!(tickets.windows(2).all(|pair| pair[0] == pair[1]));
            wal.wait(tickets[0]).await.unwrap();
        }
        // The first DMA file this thread opened for the log was a new, empty segment: the
        // sentinel is what keeps these O_DIRECT reads working.
        check_entries(1, &wal.read_entries(1, 1, 81).await.unwrap(), 1, 81, 1);
        wal.close().await.unwrap();
    });
    let read_directory = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&read_directory, config).await.unwrap();
        assert_eq!(recovery.groups.len(), 3);
        assert_eq!(recovery.torn_tail, None);
        for group in 1..=3u64 {
            let summary = recovery.groups[&group];
            assert_eq!((summary.first_index, summary.last_index), (1, 80));
            assert_eq!(
                summary.hard_state,
                Some(HardState {
                    term: 1,
                    vote: group,
                    commit: 78
                })
            );
            // The cache holds a few KiB: most of these are read back from the segments.
            let read = wal.read_entries(group, 1, 81).await.unwrap();
            check_entries(group, &read, 1, 81, 1);
        }
        // Appending continues after recovery.
        wal.append(vec![entries(2, 81, 1, 2)]).await.unwrap();
        check_entries(2, &wal.read_entries(2, 81, 82).await.unwrap(), 81, 82, 2);
        wal.close().await.unwrap();
    });
    assert!(wal_directory(&directory)
        .join(corekv::wal::segment::SENTINEL_FILE_NAME)
        .exists());
}

// When another empty DMA file is opened first in a thread (the glommio IOPOLL pitfall),
// opening the WAL either works with real reads or fails with the named error, never with a
// later EOPNOTSUPP during recovery.
#[test]
fn pitfall_is_detected_not_hidden() {
    let directory = test_directory("pitfall");
    write_batches(&directory, small_config(), 5);
    let empty_file = directory.join("empty-first");
    fs::write(&empty_file, b"").unwrap();
    let result = on_fresh_executor(move || async move {
        let empty = glommio::io::DmaFile::open(&empty_file).await.unwrap();
        empty.close().await.unwrap();
        match Wal::open(&directory, small_config()).await {
            Ok((wal, _)) => {
                let read = wal.read_entries(1, 1, 6).await.map(|read| read.len());
                wal.close().await.unwrap();
                read.map(|_| "reads work".to_string())
                    .map_err(|error| error.to_string())
            }
            Err(WalError::DirectReadUnsupported { .. }) => Ok("named error".to_string()),
            Err(other) => Err(other.to_string()),
        }
    });
    println!("pitfall outcome: {result:?}");
    assert!(result.is_ok(), "{result:?}");
}

// A damaged last batch is a torn tail: recovery drops it, zeroes it, reports it, and
// appends continue at that place; the next recovery is clean.
#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let directory = test_directory("torn-tail");
    write_batches(&directory, small_config(), 6);
    let path = segment_path(&wal_directory(&directory), 1);
    let offsets = batch_offsets(&path);
    assert_eq!(offsets.len(), 6);
    flip_byte(&path, offsets[5] + 100);
    let reopen = directory.clone();
    let torn_offset = offsets[5];
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&reopen, small_config()).await.unwrap();
        let torn = recovery.torn_tail.expect("a torn tail");
        assert_eq!((torn.segment, torn.offset), (1, torn_offset));
        assert_eq!(recovery.groups[&1].last_index, 5);
        check_entries(1, &wal.read_entries(1, 1, 6).await.unwrap(), 1, 6, 1);
        wal.append(vec![entries(1, 6, 2, 2)]).await.unwrap();
        wal.close().await.unwrap();
    });
    assert_eq!(
        batch_offsets(&path)[5],
        offsets[5],
        "the next batch starts where the torn one did"
    );
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&directory, small_config()).await.unwrap();
        assert_eq!(recovery.torn_tail, None);
        assert_eq!(recovery.groups[&1].last_index, 7);
        check_entries(1, &wal.read_entries(1, 6, 8).await.unwrap(), 6, 8, 2);
        wal.close().await.unwrap();
    });
}

// Garbage after the last batch (a torn write whose first block never reached the disk) is
// a torn tail too.
#[test]
fn garbage_after_the_last_batch_is_a_torn_tail() {
    let directory = test_directory("torn-garbage");
    write_batches(&directory, small_config(), 3);
    let path = segment_path(&wal_directory(&directory), 1);
    let offsets = batch_offsets(&path);
    let end = offsets[2] + BLOCK_BYTES as u64;
    let mut bytes = fs::read(&path).unwrap();
    for (position, byte) in bytes[(end as usize + BLOCK_BYTES)..(end as usize + 3 * BLOCK_BYTES)]
        .iter_mut()
        .enumerate()
    {
        *byte = (position * 7 + 1) as u8;
    }
    fs::write(&path, &bytes).unwrap();
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&directory, small_config()).await.unwrap();
        let torn = recovery.torn_tail.expect("a torn tail");
        assert_eq!(torn.offset, end);
        assert_eq!(torn.end_offset, end + 3 * BLOCK_BYTES as u64);
        assert_eq!(recovery.groups[&1].last_index, 3);
        wal.close().await.unwrap();
    });
}

// Damage to a batch followed by valid batches is corruption: recovery refuses, names the
// file and the offset, and leaves the file as it was.
#[test]
fn corruption_in_the_middle_is_refused() {
    let directory = test_directory("corrupt-middle");
    write_batches(&directory, small_config(), 5);
    let path = segment_path(&wal_directory(&directory), 1);
    let offsets = batch_offsets(&path);
    flip_byte(&path, offsets[1] + 60);
    let before = fs::read(&path).unwrap();
    let reopen = directory.clone();
    let error = on_fresh_executor(move || async move {
        Wal::open(&reopen, small_config())
            .await
            .map(|_| ())
            .unwrap_err()
    });
    match &error {
        WalError::Corrupt {
            path: reported,
            offset,
            reason: CorruptionReason::ValidBatchFollows { next_offset, .. },
        } => {
            assert_eq!(reported, &path);
            assert_eq!(*offset, offsets[1]);
            assert_eq!(*next_offset, offsets[2]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("00000000000000000001.wal") && message.contains(&offsets[1].to_string()),
        "{message}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a refused log is not modified"
    );
}

// Damage to the last batch of a segment followed by a segment with data is corruption, and
// so is a missing segment.
#[test]
fn corruption_before_a_later_segment_and_missing_segments_are_refused() {
    let directory = test_directory("corrupt-segment");
    let config = small_config();
    // 40 batches of two blocks each fill five 64 KiB segments.
    let big = config.clone();
    let write_directory = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&write_directory, big).await.unwrap();
        for index in 1..=40u64 {
            let record = Record {
                group_id: 1,
                kind: RecordKind::Entries {
                    entries: vec![Entry {
                        index,
                        term: 1,
                        kind: 0,
                        payload: vec![index as u8; 5000].into(),
                    }],
                },
            };
            wal.append(vec![record]).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let wal_dir = wal_directory(&directory);
    let first = segment_path(&wal_dir, 1);
    let offsets = batch_offsets(&first);
    assert!(segment_path(&wal_dir, 3).exists());
    let saved = fs::read(&first).unwrap();
    flip_byte(&first, *offsets.last().unwrap() + 200);
    let reopen = directory.clone();
    let error = on_fresh_executor(move || async move {
        Wal::open(&reopen, small_config())
            .await
            .map(|_| ())
            .unwrap_err()
    });
    assert!(
        matches!(&error, WalError::Corrupt { path, offset, reason: CorruptionReason::DataInLaterSegment { later_segment: 2, .. } }
            if *path == first && offset == offsets.last().unwrap()),
        "{error:?}"
    );
    fs::write(&first, saved).unwrap();
    let moved = wal_dir.join("moved-away");
    fs::rename(segment_path(&wal_dir, 2), &moved).unwrap();
    let reopen = directory.clone();
    let error = on_fresh_executor(move || async move {
        Wal::open(&reopen, small_config())
            .await
            .map(|_| ())
            .unwrap_err()
    });
    assert!(
        matches!(&error, WalError::Corrupt { path, reason: CorruptionReason::MissingSegment, .. } if *path == segment_path(&wal_dir, 2)),
        "{error:?}"
    );
    fs::rename(&moved, segment_path(&wal_dir, 2)).unwrap();
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&directory, small_config()).await.unwrap();
        assert_eq!(recovery.groups[&1].last_index, 40);
        wal.close().await.unwrap();
    });
}

// Later records win across batches and restarts; invalid operations are errors, not panics.
#[test]
fn later_records_win_and_bad_operations_are_refused() {
    let directory = test_directory("later-wins");
    let reopen = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&directory, small_config()).await.unwrap();
        wal.append(vec![entries(5, 1, 10, 1)]).await.unwrap();
        wal.append(vec![entries(5, 7, 2, 2)]).await.unwrap();
        assert_eq!(wal.group(5).unwrap().last_index, 8);
        let gap = wal.try_submit(vec![entries(5, 20, 1, 2)]).unwrap_err();
        assert!(
            matches!(
                gap,
                WalError::InvalidLogOperation {
                    group: 5,
                    index: 20,
                    ..
                }
            ),
            "{gap:?}"
        );
        let no_snapshot = wal.compact(5, 3, 1).await.unwrap_err();
        assert!(
            matches!(
                no_snapshot,
                WalError::SnapshotMissing { group: 5, index: 3 }
            ),
            "{no_snapshot:?}"
        );
        let empty = wal.try_submit(vec![Record {
            group_id: 5,
            kind: RecordKind::Entries { entries: vec![] },
        }]);
        assert!(matches!(
            empty,
            Err(WalError::InvalidRecord { group: 5, .. })
        ));
        let beyond = wal.read_entries(5, 1, 10).await.unwrap_err();
        assert!(matches!(beyond, WalError::Unavailable { .. }));
        wal.close().await.unwrap();
    });
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&reopen, small_config()).await.unwrap();
        assert_eq!(recovery.groups[&5].last_index, 8);
        let read = wal.read_entries(5, 1, 9).await.unwrap();
        check_entries(5, &read[..6], 1, 7, 1);
        check_entries(5, &read[6..], 7, 9, 2);
        wal.close().await.unwrap();
    });
}

// Two records of one group in the same batch, the second truncating the first, read back
// from disk as the second one says, before and after a restart.
#[test]
fn later_records_win_inside_one_batch() {
    let directory = test_directory("later-wins-batch");
    let reopen = directory.clone();
    let expected = |read: &[Entry]| {
        check_entries(2, &read[..2], 1, 3, 1);
        check_entries(2, &read[2..4], 3, 5, 2);
        check_entries(2, &read[4..], 5, 41, 3);
    };
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&directory, small_config()).await.unwrap();
        let first = wal.try_submit(vec![entries(2, 1, 6, 1)]).unwrap();
        let second = wal.try_submit(vec![entries(2, 3, 2, 2)]).unwrap();
        assert_eq!(first, second, "one loop turn, one batch");
        wal.wait(second).await.unwrap();
        // Enough later entries that the first ones leave the 4 KiB cache.
        for index in 5..=40 {
            wal.append(vec![entries(2, index, 1, 3)]).await.unwrap();
        }
        expected(&wal.read_entries(2, 1, 41).await.unwrap());
        wal.close().await.unwrap();
    });
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&reopen, small_config()).await.unwrap();
        expected(&wal.read_entries(2, 1, 41).await.unwrap());
        wal.close().await.unwrap();
    });
}

// Segments are collected once compaction and relogging free them; a laggard group is named
// for a snapshot; state-only groups keep their hard state through collection; a removed
// group stays removed.
#[test]
fn garbage_collection_keeps_what_groups_need() {
    let directory = test_directory("collection");
    let reopen = directory.clone();
    let wal_dir = wal_directory(&directory);
    let observed_wal_dir = wal_dir.clone();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&directory, small_config()).await.unwrap();
        // Group 7 writes only a hard state, group 8 one entry, group 9 is removed later.
        wal.append(vec![
            hard_state(7, 3, 0),
            entries(8, 1, 1, 1),
            entries(9, 1, 1, 1),
        ])
        .await
        .unwrap();
        // Group 1 writes a lot: many segments.
        let mut next = 1;
        for _ in 0..150 {
            wal.append(vec![entries(1, next, 4, 1), hard_state(1, 1, next)])
                .await
                .unwrap();
            next += 4;
        }
        let segments_before = fs::read_dir(&observed_wal_dir).unwrap().count();
        assert!(
            wal.groups_to_snapshot().contains(&8),
            "{:?}",
            wal.groups_to_snapshot()
        );
        assert!(wal.groups_to_snapshot().contains(&1));
        assert_eq!(
            wal.stats().segments_deleted,
            0,
            "group 8 and group 1 pin the first segment"
        );
        // Snapshot and compact both laggards; remove group 9.
        for (group, index) in [(8u64, 1u64), (1, next - 1)] {
            let snapshot = Snapshot {
                group_id: group,
                index,
                term: 1,
                data: vec![group as u8; 100],
            };
            snapshot_file::write_snapshot(&directory, &snapshot).unwrap();
            wal.compact(group, index, 1).await.unwrap();
        }
        wal.remove_group(9).await.unwrap();
        // A few more batches carry the relogged records and the deletions out.
        for _ in 0..10 {
            wal.append(vec![entries(1, next, 4, 1)]).await.unwrap();
            next += 4;
        }
        assert!(wal.stats().relogged_records > 0, "{:?}", wal.stats());
        assert!(
            wal.groups_to_snapshot().is_empty(),
            "{:?}",
            wal.groups_to_snapshot()
        );
        // Old entries of group 1 that are still live read back from disk.
        let summary = wal.group(1).unwrap();
        check_entries(
            1,
            &wal.read_entries(1, summary.first_index, summary.last_index + 1)
                .await
                .unwrap(),
            summary.first_index,
            summary.last_index + 1,
            1,
        );
        // Closing finishes the deletions already decided.
        wal.close().await.unwrap();
        let segments_after = fs::read_dir(&observed_wal_dir).unwrap().count();
        assert!(
            segments_after < segments_before,
            "{segments_after} < {segments_before}"
        );
    });
    assert!(!segment_path(&wal_dir, 1).exists());
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&reopen, small_config()).await.unwrap();
        assert_eq!(
            recovery.groups[&7].hard_state,
            Some(HardState {
                term: 3,
                vote: 7,
                commit: 0
            })
        );
        assert_eq!(
            recovery.groups[&8]
                .compaction
                .map(|position| position.index),
            Some(1)
        );
        assert_eq!(recovery.groups[&8].last_index, 1);
        assert!(!recovery.groups.contains_key(&9));
        assert!(!snapshot_file::snapshot_path(&reopen, 9).exists());
        assert_eq!(recovery.snapshots[&8].data, vec![8u8; 100]);
        let summary = recovery.groups[&1];
        check_entries(
            1,
            &wal.read_entries(1, summary.first_index, summary.last_index + 1)
                .await
                .unwrap(),
            summary.first_index,
            summary.last_index + 1,
            1,
        );
        wal.close().await.unwrap();
    });
}

// A snapshot file whose compaction record never became durable still compacts the group on
// recovery; a compaction record whose snapshot file is gone is refused.
#[test]
fn snapshots_and_compaction_records_agree() {
    let directory = test_directory("snapshots");
    let write_directory = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&write_directory, small_config()).await.unwrap();
        wal.append(vec![entries(3, 1, 10, 1), entries(4, 1, 10, 1)])
            .await
            .unwrap();
        for group in [3u64, 4] {
            snapshot_file::write_snapshot(
                &write_directory,
                &Snapshot {
                    group_id: group,
                    index: 6,
                    term: 1,
                    data: vec![1, 2],
                },
            )
            .unwrap();
        }
        // Group 3 gets its compaction record; group 4 "crashes" before it.
        wal.compact(3, 6, 1).await.unwrap();
        wal.close().await.unwrap();
    });
    let reopen = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&reopen, small_config()).await.unwrap();
        for group in [3u64, 4] {
            let summary = recovery.groups[&group];
            assert_eq!(
                (summary.first_index, summary.last_index),
                (7, 10),
                "group {group}"
            );
            check_entries(
                group,
                &wal.read_entries(group, 7, 11).await.unwrap(),
                7,
                11,
                1,
            );
        }
        wal.close().await.unwrap();
    });
    fs::remove_file(snapshot_file::snapshot_path(&directory, 3)).unwrap();
    let error = on_fresh_executor(move || async move {
        Wal::open(&directory, small_config())
            .await
            .map(|_| ())
            .unwrap_err()
    });
    assert!(
        matches!(
            &error,
            WalError::Corrupt {
                reason: CorruptionReason::SnapshotBehindLog {
                    group: 3,
                    compaction_index: 6,
                    ..
                },
                ..
            }
        ),
        "{error:?}"
    );
}

// A compaction recovery takes from a snapshot file (its record was lost in a crash) is
// written to the log, so that it survives the collection of the segment holding the entry
// at the snapshot index.
#[test]
fn compaction_from_a_snapshot_file_survives_collection() {
    let directory = test_directory("snapshot-collection");
    let first = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&first, small_config()).await.unwrap();
        wal.append(vec![entries(6, 1, 6, 1)]).await.unwrap();
        // Group 1 fills the first segment, so entries 7 and later of group 6 go elsewhere.
        for index in 1..=20 {
            wal.append(vec![entries(1, index, 1, 1), hard_state(1, 1, index)])
                .await
                .unwrap();
        }
        wal.append(vec![entries(6, 7, 4, 1)]).await.unwrap();
        // The snapshot is written; the crash comes before the compaction record.
        let snapshot = Snapshot {
            group_id: 6,
            index: 6,
            term: 1,
            data: vec![6],
        };
        snapshot_file::write_snapshot(&first, &snapshot).unwrap();
        wal.close().await.unwrap();
    });
    let second = directory.clone();
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&second, small_config()).await.unwrap();
        assert_eq!(recovery.groups[&6].first_index, 7);
        // Group 1 compacts everything and moves on: the first segment is no longer needed.
        let snapshot = Snapshot {
            group_id: 1,
            index: 20,
            term: 1,
            data: vec![],
        };
        snapshot_file::write_snapshot(&second, &snapshot).unwrap();
        wal.compact(1, 20, 1).await.unwrap();
        let mut next = 21;
        for _ in 0..40 {
            wal.append(vec![entries(1, next, 4, 1)]).await.unwrap();
            next += 4;
        }
        wal.close().await.unwrap();
    });
    assert!(
        !segment_path(&wal_directory(&directory), 1).exists(),
        "the segment holding group 6's entries through 6 was collected"
    );
    on_fresh_executor(move || async move {
        let (wal, recovery) = Wal::open(&directory, small_config()).await.unwrap();
        let summary = recovery.groups[&6];
        assert_eq!((summary.first_index, summary.last_index), (7, 10));
        check_entries(6, &wal.read_entries(6, 7, 11).await.unwrap(), 7, 11, 1);
        wal.close().await.unwrap();
    });
}

// A full filling batch makes try_submit report backpressure while submit waits for room;
// everything submitted becomes durable in ticket order.
#[test]
fn backpressure_and_ticket_order() {
    let directory = test_directory("backpressure");
    on_fresh_executor(move || async move {
        let config = WalConfig {
            batch_records_max: 4,
            ..small_config()
        };
        let (wal, _) = Wal::open(&directory, config).await.unwrap();
        let mut tickets = Vec::new();
        let mut index = 1;
        let backpressure = loop {
            match wal.try_submit(vec![entries(1, index, 1, 1)]) {
                Ok(ticket) => {
                    tickets.push(ticket);
                    index += 1;
                }
                Err(error) => break error,
            }
        };
        assert!(
            matches!(backpressure, WalError::Backpressure),
            "{backpressure:?}"
        );
        assert_eq!(tickets.len(), 4, "one batch holds four records");
        let waited = wal.submit(vec![entries(1, index, 1, 1)]).await.unwrap();
        assert!(waited > tickets[0]);
        wal.wait(waited).await.unwrap();
        assert!(tickets.iter().all(|&ticket| wal.is_durable(ticket)));
        wal.close().await.unwrap();
    });
}

// Submitters waiting for room get it in the order they asked, and one that gives up does
// not hold up those behind it.
#[test]
fn room_is_given_in_order_and_a_cancelled_waiter_leaves_the_line() {
    let directory = test_directory("room-line");
    on_fresh_executor(move || async move {
        let config = WalConfig {
            batch_records_max: 2,
            ..small_config()
        };
        let (wal, _) = Wal::open(&directory, config).await.unwrap();
        // Batch 1 is being written; batch 2 fills up behind it.
        wal.try_submit(vec![entries(1, 1, 1, 1), entries(2, 1, 1, 1)])
            .unwrap();
        let mut index = 2;
        while wal.try_submit(vec![entries(1, index, 1, 1)]).is_ok() {
            index += 1;
        }
        let submitter = |group: u64| {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.submit(vec![entries(group, 1, 1, 1)]).await })
        };
        let (first, second, third) = (submitter(5), submitter(6), submitter(7));
        glommio::executor().yield_now().await;
        drop(first.cancel().await);
        let second = second.await.unwrap();
        let third = third.await.unwrap();
        assert!(second <= third, "{second:?} <= {third:?}");
        wal.wait(third).await.unwrap();
        assert!(wal.group(6).is_some() && wal.group(7).is_some());
        wal.close().await.unwrap();
    });
}

/// Unmounts the small file system of the disk-full test, whatever happens.
struct SmallFileSystem(PathBuf);

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

// Running out of space for a new segment stops appends with a clear DiskFull error, and
// every acknowledged record is still there. Needs root to mount a 640 KiB tmpfs.
#[test]
fn disk_full_is_reported_and_acknowledged_records_survive() {
    let directory = test_directory("disk-full");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=640k", "tmpfs"])
        .arg(&directory)
        .status();
    if !mounted.is_ok_and(|status| status.success()) {
        println!("disk_full test not run: mounting a small tmpfs needs root");
        return;
    }
    let _mounted = SmallFileSystem(directory.clone());
    // The sentinel and two 256 KiB segments fit; a third one does not.
    let config = WalConfig {
        segment_bytes: 256 * 1024,
        batch_bytes_max: 64 * 1024,
        ..small_config()
    };
    let write_directory = directory.clone();
    let (acknowledged, error) = on_fresh_executor(move || async move {
        let (wal, _) = Wal::open(&write_directory, config).await.unwrap();
        let mut acknowledged = 0;
        let error = loop {
            let record = Record {
                group_id: 1,
                kind: RecordKind::Entries {
                    entries: vec![Entry {
                        index: acknowledged + 1,
                        term: 1,
                        kind: 0,
                        payload: vec![acknowledged as u8; 30_000].into(),
                    }],
                },
            };
            match wal.append(vec![record]).await {
                Ok(()) => acknowledged += 1,
                Err(error) => break error,
            }
            assert!(acknowledged < 1000, "the file system never filled up");
        };
        let later = wal.try_submit(vec![entries(2, 1, 1, 1)]).unwrap_err();
        assert!(matches!(later, WalError::DiskFull { .. }), "{later:?}");
        let closed = wal.close().await.unwrap_err();
        assert!(matches!(closed, WalError::DiskFull { .. }), "{closed:?}");
        (acknowledged, error)
    });
    assert!(matches!(error, WalError::DiskFull { .. }), "{error:?}");
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(
        acknowledged >= 8,
        "{acknowledged} appends before the disk filled"
    );
    on_fresh_executor(move || async move {
        let inspection = corekv::wal::inspect(&directory).await.unwrap();
        let group = &inspection.groups[&1];
        assert_eq!(group.summary.last_index, acknowledged);
        for entry in &group.entries {
            assert_eq!(
                &entry.payload[..],
                &vec![(entry.index - 1) as u8; 30_000][..]
            );
        }
    });
}
