//! The WAL's error type: what went wrong, with the file and offset when there is one.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{DecodeError, RecordError};
use super::snapshot_file::SnapshotError;

/// Errors of the WAL layer. Cloneable so that one failure reaches every waiting task.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error while opening, listing or reading (recovery, `read_entries`). The WAL
    /// may still be usable; nothing durable was touched.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// A write or fdatasync of the log failed. Nothing after the last successful
    /// fdatasync is known to be on disk; the process must stop (see [`super::fatal`]).
    #[error("fatal: {operation} {path} failed: {source}")]
    Fatal {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// No space for a new segment. Everything already acknowledged is intact; the WAL
    /// accepts no more appends.
    #[error("disk full while preparing WAL segment {path}: {source}")]
    DiskFull {
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// An O_DIRECT read of the sentinel failed with EOPNOTSUPP: another DMA file was opened
    /// in this thread before [`super::segment::prime_direct_io`] ran, and glommio cached a
    /// wrong "polled I/O works" answer for the device.
    #[error(
        "O_DIRECT reads fail on {path} (EOPNOTSUPP): a DMA file was opened in this executor \
         thread before the WAL sentinel; open the WAL (or prime_direct_io) first"
    )]
    DirectReadUnsupported { path: PathBuf },
    /// The log on disk is damaged somewhere other than a torn tail: refuse to start.
    #[error("corrupt write-ahead log {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: CorruptionReason,
    },
    /// The caller passed a record that cannot be written.
    #[error("invalid record for group {group}: {reason}")]
    InvalidRecord { group: u64, reason: RecordError },
    /// The caller's records break the group's log: an append must start after the
    /// compaction point and at most one past the last index; a compaction cannot go back.
    #[error(
        "group {group}: cannot {operation} at index {index} (log holds ({first_index}, \
         {last_index}], compacted through {compaction_index})"
    )]
    InvalidLogOperation {
        group: u64,
        operation: &'static str,
        index: u64,
        first_index: u64,
        last_index: u64,
        compaction_index: u64,
    },
    /// One submission is larger than a batch.
    #[error("a submission of {bytes} bytes and {records} records exceeds the batch bounds ({bytes_max} bytes, {records_max} records)")]
    SubmissionTooLarge {
        bytes: usize,
        records: usize,
        bytes_max: usize,
        records_max: u32,
    },
    /// `try_submit` found the filling batch full while the previous one is still being
    /// written; await [`super::Wal::submit`] instead.
    #[error("the WAL is busy: one batch is syncing and the next one is full")]
    Backpressure,
    /// The requested entries are not in the log (compacted, or beyond the last index).
    #[error(
        "group {group}: entries [{low}, {high}) are outside the log [{first_index}, {last_index}]"
    )]
    Unavailable {
        group: u64,
        low: u64,
        high: u64,
        first_index: u64,
        last_index: u64,
    },
    /// A compaction needs the group's snapshot file on disk first.
    #[error("group {group}: no snapshot file covers index {index}; write the snapshot before compacting")]
    SnapshotMissing { group: u64, index: u64 },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("invalid WAL configuration: {0}")]
    Config(String),
    /// The WAL was closed, or stopped by an earlier fatal error.
    #[error("the WAL is closed")]
    Closed,
}

/// Why a log on disk is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionReason {
    #[error("{0}")]
    Batch(DecodeError),
    #[error("invalid batch ({error}) followed by a valid batch at offset {next_offset}")]
    ValidBatchFollows {
        error: DecodeError,
        next_offset: u64,
    },
    #[error("invalid batch ({error}) in a segment that is followed by segment {later_segment} holding data")]
    DataInLaterSegment {
        error: DecodeError,
        later_segment: u64,
    },
    #[error("segment holds no batch but the later segment {later_segment} does")]
    EmptySegmentBeforeData { later_segment: u64 },
    #[error("batch sequence {found} where {expected} was expected")]
    SequenceGap { expected: u64, found: u64 },
    #[error("segment file is missing (segments must be consecutive)")]
    MissingSegment,
    #[error("segment file of {bytes} bytes is not a positive multiple of the block size")]
    BadSegmentSize { bytes: u64 },
    #[error(
        "group {group}: entries from index {first_index} leave a hole after index {last_index}"
    )]
    LogHole {
        group: u64,
        first_index: u64,
        last_index: u64,
    },
    #[error("group {group}: entries from index {first_index} although the log is compacted through {compaction_index}")]
    AppendBeforeCompaction {
        group: u64,
        first_index: u64,
        compaction_index: u64,
    },
    #[error("group {group}: compaction to index {index} after compaction to {previous}")]
    CompactionRegressed {
        group: u64,
        index: u64,
        previous: u64,
    },
    #[error("group {group}: the log is compacted through {compaction_index} but the snapshot file {snapshot}")]
    SnapshotBehindLog {
        group: u64,
        compaction_index: u64,
        snapshot: String,
    },
    #[error("group {group}: entry {index} is not in the batch that should hold it")]
    EntryMissing { group: u64, index: u64 },
    #[error("stored batch no longer reads back: {0}")]
    ReadBack(DecodeError),
}

/// Turns a glommio error into the io::Error it carries, keeping the OS error code (the
/// glommio conversion replaces it with a message, which would hide ENOSPC).
pub(crate) fn into_io(error: glommio::GlommioError<()>) -> io::Error {
    match error {
        glommio::GlommioError::IoError(source) => source,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => other.into(),
    }
}

/// An [`WalError::Io`] for `operation` on `path`.
pub(crate) fn io_error(
    operation: &'static str,
    path: impl Into<PathBuf>,
    source: io::Error,
) -> WalError {
    WalError::Io {
        operation,
        path: path.into(),
        source: Arc::new(source),
    }
}

/// A [`WalError::Fatal`] for `operation` on `path`.
pub(crate) fn fatal_error(
    operation: &'static str,
    path: impl Into<PathBuf>,
    source: io::Error,
) -> WalError {
    WalError::Fatal {
        operation,
        path: path.into(),
        source: Arc::new(source),
    }
}
