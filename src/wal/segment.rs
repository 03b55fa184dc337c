//! Segment files `<data>/wal/<seq>.wal`: names and listing, the direct-I/O sentinel,
//! creation (preallocated, pre-zeroed, then renamed into place), whole-segment reads, and
//! the map from batch sequence numbers to where each batch sits.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::error::{into_io, io_error, CorruptionReason, WalError};
use super::record::BLOCK_BYTES;
use super::snapshot_file::sync_directory;

/// The WAL's folder inside a shard's data folder.
pub const WAL_DIRECTORY: &str = "wal";
/// A file holding one really written block, opened with O_DIRECT before any other DMA
/// file of the executor thread (see [`prime_direct_io`]).
pub const SENTINEL_FILE_NAME: &str = "direct-io.sentinel";
const SEGMENT_SUFFIX: &str = ".wal";
const TEMPORARY_SUFFIX: &str = ".wal.tmp";
/// Size of each write that zeroes a new segment (and a torn tail).
pub const ZERO_CHUNK_BYTES: usize = 1024 * 1024;
/// Size of each read when a segment is read back whole.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
const _: () = assert!(ZERO_CHUNK_BYTES % BLOCK_BYTES == 0 && READ_CHUNK_BYTES % BLOCK_BYTES == 0);

/// `<data_dir>/wal`.
pub fn wal_directory(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_DIRECTORY)
}

/// The path of segment `sequence`; zero-padded so that names sort like numbers.
pub fn segment_path(wal_dir: &Path, sequence: u64) -> PathBuf {
    wal_dir.join(format!("{sequence:020}{SEGMENT_SUFFIX}"))
}

fn temporary_segment_path(wal_dir: &Path, sequence: u64) -> PathBuf {
    wal_dir.join(format!("{sequence:020}{TEMPORARY_SUFFIX}"))
}

/// The segment files found in a WAL folder.
#[derive(Debug, Default)]
pub struct SegmentListing {
    /// Complete segments, sorted by sequence.
    pub segments: Vec<(u64, PathBuf)>,
    /// Segments whose creation was interrupted: never used, safe to delete.
    pub temporary: Vec<PathBuf>,
}

/// Lists segment files (blocking; used once at start).
pub fn list_segments(wal_dir: &Path) -> Result<SegmentListing, WalError> {
    let mut listing = SegmentListing::default();
    let items = match fs::read_dir(wal_dir) {
        Ok(items) => items,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(listing),
        Err(error) => return Err(io_error("listing", wal_dir, error)),
    };
    for item in items {
        let item = item.map_err(|error| io_error("listing", wal_dir, error))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMPORARY_SUFFIX) {
            listing.temporary.push(item.path());
        } else if let Some(sequence) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            listing.segments.push((sequence, item.path()));
        }
    }
    listing
        .segments
        .sort_unstable_by_key(|(sequence, _)| *sequence);
    Ok(listing)
}

/// Makes O_DIRECT reads work in this executor thread, and checks that they do.
///
/// glommio decides once per device and thread whether the device supports polled I/O, by
/// reading block 0 of the first DMA file opened on it. If that file is empty the read
/// "succeeds" with nothing, glommio caches "polled I/O works", and every later O_DIRECT
/// read on the device fails with EOPNOTSUPP (writes still work, so the problem hides until
/// recovery). Opening a file that holds a really written block first gives the probe a real
/// read to fail. This writes that sentinel (with std, fsynced) if it is missing, DMA-opens
/// it, and reads it back with O_DIRECT: if another DMA file was opened earlier in the
/// thread and poisoned the cache, the read fails now with
/// [`WalError::DirectReadUnsupported`] instead of during recovery.
pub async fn prime_direct_io(wal_dir: &Path) -> Result<(), WalError> {
    let path = wal_dir.join(SENTINEL_FILE_NAME);
    let present = fs::metadata(&path)
        .map(|metadata| metadata.len() >= BLOCK_BYTES as u64)
        .unwrap_or(false);
    if !present {
        let write = || -> io::Result<()> {
            let block: Vec<u8> = (0..BLOCK_BYTES)
                .map(|position| (position % 251) as u8 | 1)
                .collect();
            let temporary = wal_dir.join(format!("{SENTINEL_FILE_NAME}.tmp"));
            fs::write(&temporary, &block)?;
            fs::File::open(&temporary)?.sync_all()?;
            fs::rename(&temporary, &path)?;
            sync_directory(wal_dir)
        };
        write().map_err(|error| io_error("writing the sentinel", &path, error))?;
    }
    let file = DmaFile::open(&path)
        .await
        .map_err(|error| io_error("opening the sentinel", &path, into_io(error)))?;
    let read = file.read_at_aligned(0, BLOCK_BYTES).await;
    let closed = file.close().await;
    match read {
        Ok(bytes) if bytes.len() == BLOCK_BYTES => {}
        Ok(bytes) => {
            return Err(io_error(
                "reading the sentinel",
                &path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} bytes read", bytes.len()),
                ),
            ))
        }
        Err(error) => return Err(read_error(&path, into_io(error))),
    }
    closed.map_err(|error| io_error("closing the sentinel", &path, into_io(error)))
}

/// A read error, naming the glommio pitfall when it is the cause.
pub(crate) fn read_error(path: &Path, error: io::Error) -> WalError {
    if error.raw_os_error() == Some(libc_eopnotsupp()) {
        WalError::DirectReadUnsupported {
            path: path.to_path_buf(),
        }
    } else {
        io_error("reading", path, error)
    }
}

/// EOPNOTSUPP on Linux (95 on every architecture glommio supports); spelled out because
/// the crate does not depend on libc directly.
fn libc_eopnotsupp() -> i32 {
    95
}

/// ENOSPC on Linux.
fn is_disk_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(28) || error.kind() == io::ErrorKind::StorageFull
}

/// Opens an existing segment for O_DIRECT reads, and writes when `writable`.
pub async fn open_segment(path: &Path, writable: bool) -> Result<DmaFile, WalError> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .dma_open(path)
        .await
        .map_err(|error| io_error("opening", path, into_io(error)))
}

/// Reads a whole segment into memory. Recovery holds one segment at a time.
pub async fn read_segment(file: &DmaFile, path: &Path) -> Result<Vec<u8>, WalError> {
    let size = file
        .file_size()
        .await
        .map_err(|error| io_error("sizing", path, into_io(error)))?;
    if size == 0 || size % BLOCK_BYTES as u64 != 0 {
        return Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: CorruptionReason::BadSegmentSize { bytes: size },
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    while (bytes.len() as u64) < size {
        let position = bytes.len() as u64;
        let length = READ_CHUNK_BYTES.min((size - position) as usize);
        let chunk = file
            .read_at_aligned(position, length)
            .await
            .map_err(|error| read_error(path, into_io(error)))?;
        if chunk.is_empty() {
            return Err(io_error(
                "reading",
                path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of file at {position}"),
                ),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Overwrites `[start, end)` of `file` with zeros (block aligned) without syncing.
pub async fn write_zeros(
    file: &DmaFile,
    path: &Path,
    start: u64,
    end: u64,
) -> Result<(), WalError> {
    assert!(start % BLOCK_BYTES as u64 == 0 && end % BLOCK_BYTES as u64 == 0 && start <= end);
    if start == end {
        return Ok(());
    }
    let mut zeros = file.alloc_dma_buffer(ZERO_CHUNK_BYTES);
    zeros.as_bytes_mut().fill(0);
    let zeros = Rc::new(zeros);
    let mut position = start;
    while position < end {
        let length = (end - position).min(ZERO_CHUNK_BYTES as u64) as usize;
        let written = if length == ZERO_CHUNK_BYTES {
            file.write_rc_at(zeros.clone(), position).await
        } else {
            let mut tail = file.alloc_dma_buffer(length);
            tail.as_bytes_mut().fill(0);
            file.write_at(tail, position).await
        };
        match written {
            Ok(count) if count == length => position += length as u64,
            Ok(count) => {
                return Err(io_error(
                    "zeroing",
                    path,
                    io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write of {count} bytes"),
                    ),
                ))
            }
            Err(error) => {
                let error = into_io(error);
                return Err(if is_disk_full(&error) {
                    WalError::DiskFull {
                        path: path.to_path_buf(),
                        source: error.into(),
                    }
                } else {
                    io_error("zeroing", path, error)
                });
            }
        }
    }
    Ok(())
}

/// Creates segment `sequence` of `bytes` bytes: preallocated, every block overwritten with
/// zeros and made durable under a temporary name, then renamed into place and the folder
/// synced. Appends into blocks already written this way need no metadata update, which
/// makes their fdatasync the cheapest there is. A crash leaves either no segment or a
/// complete zeroed one (plus maybe a temporary file that the next start deletes).
pub async fn create_segment(
    wal_dir: &Path,
    sequence: u64,
    bytes: u64,
) -> Result<DmaFile, WalError> {
    let temporary = temporary_segment_path(wal_dir, sequence);
    let final_path = segment_path(wal_dir, sequence);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&temporary)
        .await
        .map_err(|error| io_error("creating", &temporary, into_io(error)))?;
    let prepared = async {
        file.pre_allocate(bytes, false).await.map_err(|error| {
            let error = into_io(error);
            if is_disk_full(&error) {
                WalError::DiskFull {
                    path: temporary.clone(),
                    source: error.into(),
                }
            } else {
                io_error("preallocating", &temporary, error)
            }
        })?;
        write_zeros(&file, &temporary, 0, bytes).await?;
        file.fdatasync()
            .await
            .map_err(|error| io_error("syncing", &temporary, into_io(error)))
    }
    .await;
    if let Err(error) = prepared {
        // Give the space back; the file was never part of the log.
        let _ = file.close().await;
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    file.rename(&final_path)
        .await
        .map_err(|error| io_error("renaming", &temporary, into_io(error)))?;
    // The folder fsync waits for a journal commit: off the executor thread, so that
    // commits go on meanwhile.
    let folder = wal_dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || sync_directory(&folder))
        .await
        .map_err(|error| io_error("syncing", wal_dir, error))?;
    Ok(file)
}

/// Removes a segment file and syncs the folder, so that a deleted segment cannot come
/// back after a crash while a newer deletion stays (segments must stay consecutive).
pub fn delete_segment(wal_dir: &Path, path: &Path) -> Result<(), WalError> {
    fs::remove_file(path).map_err(|error| io_error("removing", path, error))?;
    sync_directory(wal_dir).map_err(|error| io_error("syncing", wal_dir, error))
}

/// Where one batch sits on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLocation {
    pub segment: u64,
    pub offset: u64,
    pub padded_bytes: u32,
}

/// Locations of every live batch, indexed by batch sequence (sequences are consecutive,
/// so this is a queue, not a map).
#[derive(Clone, Debug, Default)]
pub struct BatchLocations {
    first_sequence: u64,
    locations: VecDeque<BatchLocation>,
}

impl BatchLocations {
    /// Adds the location of the next batch.
    pub fn push(&mut self, sequence: u64, location: BatchLocation) {
        if self.locations.is_empty() {
            self.first_sequence = sequence;
        }
        assert_eq!(
            sequence,
            self.first_sequence + self.locations.len() as u64,
            "batches are consecutive"
        );
        self.locations.push_back(location);
    }

    pub fn get(&self, sequence: u64) -> Option<BatchLocation> {
        let position = sequence.checked_sub(self.first_sequence)?;
        self.locations.get(usize::try_from(position).ok()?).copied()
    }

    /// Segment of a batch, or `pending` for a batch not written yet.
    pub fn segment_of(&self, sequence: u64, pending: u64) -> u64 {
        self.get(sequence)
            .map_or(pending, |location| location.segment)
    }

    /// Forgets batches of segments before `segment`.
    pub fn drop_before_segment(&mut self, segment: u64) {
        while self
            .locations
            .front()
            .is_some_and(|location| location.segment < segment)
        {
            self.locations.pop_front();
            self.first_sequence += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Batch locations are found by sequence and dropped segment by segment.
    #[test]
    fn batch_locations_by_sequence() {
        let mut locations = BatchLocations::default();
        for (sequence, segment) in [(10, 1), (11, 1), (12, 2), (13, 3)] {
            locations.push(
                sequence,
                BatchLocation {
                    segment,
                    offset: sequence * 4096,
                    padded_bytes: 4096,
                },
            );
        }
        assert_eq!(locations.get(12).unwrap().segment, 2);
        assert_eq!(locations.get(9), None);
        assert_eq!(locations.segment_of(14, 99), 99);
        locations.drop_before_segment(2);
        assert_eq!(locations.get(11), None);
        assert_eq!(locations.get(13).unwrap().segment, 3);
        assert_eq!(locations.len(), 2);
    }

    // Segment names sort in sequence order and parse back.
    #[test]
    fn segment_names_sort_numerically() {
        let directory =
            std::env::temp_dir().join(format!("corekv-segment-names-{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        fs::create_dir_all(&directory).unwrap();
        for sequence in [10u64, 9, 100] {
            fs::write(segment_path(&directory, sequence), b"").unwrap();
        }
        fs::write(temporary_segment_path(&directory, 101), b"").unwrap();
        fs::write(directory.join(SENTINEL_FILE_NAME), b"").unwrap();
        let listing = list_segments(&directory).unwrap();
        let sequences: Vec<u64> = listing
            .segments
            .iter()
            .map(|(sequence, _)| *sequence)
            .collect();
        assert_eq!(sequences, vec![9, 10, 100]);
        assert_eq!(listing.temporary.len(), 1);
        fs::remove_dir_all(&directory).unwrap();
    }
}
