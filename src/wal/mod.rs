//! The per-shard write-ahead log: segments, group commit, recovery, garbage collection.
//!
//! One WAL per shard holds the entries and hard states of every Raft group on that shard,
//! so that one `fdatasync` makes a whole loop turn of every group durable. The byte layout
//! is in `docs/FORMATS.md`.
//!
//! | file               | owns                                                          |
//! |--------------------|---------------------------------------------------------------|
//! | [`record`]         | records and batches to and from bytes (pure)                  |
//! | [`group_log`]      | one group's hard state, compaction point, entry index, cache (pure) |
//! | [`segment`]        | segment files: names, sentinel, creation with pre-zeroing, reads |
//! | [`recovery`]       | reading segments back, torn tail versus corruption, replay    |
//! | [`writer`]         | [`Wal`]: group commit, the committer and segment tasks        |
//! | [`gc`]             | which segments are garbage, which groups must snapshot (pure) |
//! | [`snapshot_file`]  | per-group snapshot files (std::fs, off the hot path)          |
//!
//! # Contract
//! - A [`Wal`] belongs to one glommio executor; its handle is cloned freely between tasks
//!   of that executor and never crosses threads.
//! - Call [`segment::prime_direct_io`] (done by [`Wal::open`] and [`recovery::inspect`])
//!   before any other DMA file is opened in the executor thread: glommio probes polled
//!   I/O support on the first DMA file of a device and caches a wrong answer when that
//!   file is empty, after which every O_DIRECT read fails with EOPNOTSUPP.
//! - A failed write or fdatasync is fatal: every pending and later call returns
//!   [`WalError::Fatal`] and the caller must stop the process with [`fatal`]. Retrying is
//!   unsafe because Linux may drop the dirty state of a failed fsync.

pub mod error;
pub mod gc;
pub mod group_log;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot_file;
pub mod writer;

pub use error::{CorruptionReason, WalError};
pub use group_log::GroupSummary;
pub use record::{Entry, HardState, LogPosition, Record, RecordKind};
pub use recovery::{inspect, Inspection, Recovery, TornTail};
pub use writer::{Ticket, Wal, WalStats};

use record::{BATCH_BYTES_LIMIT, BLOCK_BYTES};

/// Exit status of a process stopped by [`fatal`] (EX_IOERR from sysexits.h).
pub const FATAL_EXIT_CODE: i32 = 74;

/// Logs a fatal WAL error and ends the process with [`FATAL_EXIT_CODE`]. This is the
/// documented reaction to [`WalError::Fatal`]: the state on disk is whatever the last
/// successful fdatasync made durable, and restart recovers from there and from peers.
pub fn fatal(error: &WalError) -> ! {
    fatal_storage(&format!("write-ahead log error: {error}"))
}

/// Logs a storage failure other than the log's own (a snapshot file that cannot be
/// written) and ends the process with [`FATAL_EXIT_CODE`], for the same reason as
/// [`fatal`]: what is on disk stays whatever was made durable, and restart recovers.
pub fn fatal_storage(what: &str) -> ! {
    eprintln!("corekv: fatal storage failure, stopping: {what}");
    std::process::exit(FATAL_EXIT_CODE)
}

/// Tunables of one WAL. Every bound the writer keeps is here or a named constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size of every new segment file; a multiple of [`BLOCK_BYTES`], at most 4 GiB
    /// (batch offsets are u32).
    pub segment_bytes: u64,
    /// Largest batch on disk (header, records and padding); a multiple of
    /// [`BLOCK_BYTES`], at most `segment_bytes` and [`BATCH_BYTES_LIMIT`]. One submission
    /// must fit in one batch.
    pub batch_bytes_max: usize,
    /// Most records in one batch.
    pub batch_records_max: u32,
    /// Segments kept created and zeroed ahead of the one being written.
    pub segments_ready_ahead: usize,
    /// Bytes of recent entries each group keeps in memory for `read_entries`.
    pub cache_bytes_per_group_max: usize,
    /// A group whose oldest live entry is this many segments behind the segment being
    /// written is listed by [`Wal::groups_to_snapshot`].
    pub segments_pinned_max: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: 64 * 1024 * 1024,
            batch_bytes_max: 1024 * 1024,
            batch_records_max: 16 * 1024,
            segments_ready_ahead: 1,
            cache_bytes_per_group_max: 1024 * 1024,
            segments_pinned_max: 4,
        }
    }
}

impl WalConfig {
    /// Checks the relations between the fields.
    pub fn validate(&self) -> Result<(), WalError> {
        let block = BLOCK_BYTES as u64;
        let problem = if self.segment_bytes % block != 0 || self.segment_bytes < 2 * block {
            Some("segment_bytes must be a multiple of 4096 and at least 8192")
        } else if self.segment_bytes > u64::from(u32::MAX) + 1 {
            Some("segment_bytes must be at most 4 GiB")
        } else if self.batch_bytes_max % BLOCK_BYTES != 0 || self.batch_bytes_max < BLOCK_BYTES {
            Some("batch_bytes_max must be a positive multiple of 4096")
        } else if self.batch_bytes_max as u64 > self.segment_bytes
            || self.batch_bytes_max > BATCH_BYTES_LIMIT
        {
            Some("batch_bytes_max must fit in a segment and in the 64 MiB batch limit")
        } else if self.batch_records_max == 0 {
            Some("batch_records_max must be positive")
        } else if self.segments_ready_ahead == 0 {
            Some("segments_ready_ahead must be positive")
        } else {
            None
        };
        match problem {
            Some(text) => Err(WalError::Config(text.to_string())),
            None => Ok(()),
        }
    }
}
