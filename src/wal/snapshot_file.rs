//! Per-group snapshot files `<data>/snap/<group>.snap`: written to a temporary file,
//! fsynced, renamed and the directory fsynced, so that a crash leaves either the old or the
//! new snapshot, never a mix. Verified on load.
//!
//! These use std::fs (blocking) on purpose: snapshots are rare and off the commit path, and
//! O_DIRECT would buy nothing for a file written once and read once. A caller on a glommio
//! executor that writes large snapshots should run these through
//! `glommio::executor().spawn_blocking`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// "KSNP" as a little-endian u32.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"KSNP");
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 48;
/// Snapshots are loaded whole into memory; this bounds what a length field is believed.
pub const SNAPSHOT_DATA_BYTES_MAX: u64 = 1 << 30;

const SNAPSHOT_DIRECTORY: &str = "snap";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".snap.tmp";

/// A group's snapshot: the state machine through `index`, whose entry had `term`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub group_id: u64,
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// The header of a snapshot file, without the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMetadata {
    pub group_id: u64,
    pub index: u64,
    pub term: u64,
    pub data_bytes: u64,
}

/// Errors of snapshot files.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("corrupt snapshot file {path}: {reason}")]
    Corrupt {
        path: PathBuf,
        reason: SnapshotCorruption,
    },
    #[error("snapshot data of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
}

/// What is wrong with a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotCorruption {
    #[error("{available} bytes are too few for a header")]
    HeaderTruncated { available: usize },
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("header checksum mismatch")]
    BadHeaderChecksum,
    #[error("unsupported format version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("data length {declared} does not match the {available} bytes after the header")]
    LengthMismatch { declared: u64, available: u64 },
    #[error("data length {declared} exceeds the limit")]
    TooLarge { declared: u64 },
    #[error("data checksum mismatch")]
    BadDataChecksum,
    #[error("the file is named for group {named} but holds group {found}")]
    WrongGroup { named: u64, found: u64 },
}

fn io_error(operation: &'static str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        operation,
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}

/// `<data_dir>/snap`.
pub fn snapshot_directory(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOT_DIRECTORY)
}

/// `<data_dir>/snap/<group>.snap`.
pub fn snapshot_path(data_dir: &Path, group_id: u64) -> PathBuf {
    snapshot_directory(data_dir).join(format!("{group_id}{SNAPSHOT_SUFFIX}"))
}

fn temporary_path(data_dir: &Path, group_id: u64) -> PathBuf {
    snapshot_directory(data_dir).join(format!("{group_id}{TEMPORARY_SUFFIX}"))
}

fn data_checksum(header: &[u8], data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..40]);
    hasher.update(data);
    hasher.finalize()
}

/// The header bytes for `snapshot` (layout in docs/FORMATS.md).
pub fn encode_header(snapshot: &Snapshot) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..4].copy_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&snapshot.group_id.to_le_bytes());
    header[16..24].copy_from_slice(&snapshot.index.to_le_bytes());
    header[24..32].copy_from_slice(&snapshot.term.to_le_bytes());
    header[32..40].copy_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let data_crc = data_checksum(&header, &snapshot.data);
    header[40..44].copy_from_slice(&data_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..44]);
    header[44..48].copy_from_slice(&header_crc.to_le_bytes());
    header
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// Verifies a header (not the data) and returns what it says.
pub fn decode_header(bytes: &[u8]) -> Result<SnapshotMetadata, SnapshotCorruption> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(SnapshotCorruption::HeaderTruncated {
            available: bytes.len(),
        });
    }
    let magic = read_u32(bytes, 0);
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotCorruption::BadMagic { found: magic });
    }
    if read_u32(bytes, 44) != crc32fast::hash(&bytes[0..44]) {
        return Err(SnapshotCorruption::BadHeaderChecksum);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotCorruption::UnsupportedVersion { found: version });
    }
    if bytes[6] != 0 || bytes[7] != 0 {
        return Err(SnapshotCorruption::ReservedNotZero);
    }
    let metadata = SnapshotMetadata {
        group_id: read_u64(bytes, 8),
        index: read_u64(bytes, 16),
        term: read_u64(bytes, 24),
        data_bytes: read_u64(bytes, 32),
    };
    if metadata.data_bytes > SNAPSHOT_DATA_BYTES_MAX {
        return Err(SnapshotCorruption::TooLarge {
            declared: metadata.data_bytes,
        });
    }
    Ok(metadata)
}

/// Decodes and verifies a whole snapshot file's bytes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, SnapshotCorruption> {
    let metadata = decode_header(bytes)?;
    let available = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if available != metadata.data_bytes {
        return Err(SnapshotCorruption::LengthMismatch {
            declared: metadata.data_bytes,
            available,
        });
    }
    let data = &bytes[SNAPSHOT_HEADER_BYTES..];
    if read_u32(bytes, 40) != data_checksum(bytes, data) {
        return Err(SnapshotCorruption::BadDataChecksum);
    }
    Ok(Snapshot {
        group_id: metadata.group_id,
        index: metadata.index,
        term: metadata.term,
        data: data.to_vec(),
    })
}

/// Fsyncs a directory so that a rename or removal in it is durable.
pub(crate) fn sync_directory(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes the snapshot durably: temporary file, fsync, rename over the old one, fsync the
/// directory. When this returns, a crash leaves this snapshot in place.
pub fn write_snapshot(data_dir: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    if snapshot.data.len() as u64 > SNAPSHOT_DATA_BYTES_MAX {
        return Err(SnapshotError::TooLarge {
            bytes: snapshot.data.len() as u64,
            limit: SNAPSHOT_DATA_BYTES_MAX,
        });
    }
    let directory = snapshot_directory(data_dir);
    fs::create_dir_all(&directory).map_err(|error| io_error("creating", &directory, error))?;
    let temporary = temporary_path(data_dir, snapshot.group_id);
    let final_path = snapshot_path(data_dir, snapshot.group_id);
    let header = encode_header(snapshot);
    let write = || -> io::Result<()> {
        let mut file = File::create(&temporary)?;
        file.write_all(&header)?;
        file.write_all(&snapshot.data)?;
        file.sync_all()
    };
    write().map_err(|error| io_error("writing", &temporary, error))?;
    fs::rename(&temporary, &final_path).map_err(|error| io_error("renaming", &temporary, error))?;
    sync_directory(&directory).map_err(|error| io_error("syncing", &directory, error))
}

/// Reads and verifies only the header of a group's snapshot file, if there is one.
pub fn read_snapshot_metadata(
    data_dir: &Path,
    group_id: u64,
) -> Result<Option<SnapshotMetadata>, SnapshotError> {
    let path = snapshot_path(data_dir, group_id);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("opening", &path, error)),
    };
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        let read = file
            .read(&mut header[filled..])
            .map_err(|error| io_error("reading", &path, error))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let metadata = decode_header(&header[..filled]).map_err(|reason| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    })?;
    if metadata.group_id != group_id {
        return Err(SnapshotError::Corrupt {
            path,
            reason: SnapshotCorruption::WrongGroup {
                named: group_id,
                found: metadata.group_id,
            },
        });
    }
    Ok(Some(metadata))
}

/// Reads and verifies a group's snapshot file, if there is one.
pub fn read_snapshot(data_dir: &Path, group_id: u64) -> Result<Option<Snapshot>, SnapshotError> {
    let path = snapshot_path(data_dir, group_id);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("reading", &path, error)),
    };
    let snapshot = decode_snapshot(&bytes).map_err(|reason| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    })?;
    if snapshot.group_id != group_id {
        return Err(SnapshotError::Corrupt {
            path,
            reason: SnapshotCorruption::WrongGroup {
                named: group_id,
                found: snapshot.group_id,
            },
        });
    }
    Ok(Some(snapshot))
}

/// Removes a group's snapshot file (if any) durably.
pub fn remove_snapshot(data_dir: &Path, group_id: u64) -> Result<(), SnapshotError> {
    let path = snapshot_path(data_dir, group_id);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error("removing", &path, error)),
    }
    let directory = snapshot_directory(data_dir);
    sync_directory(&directory).map_err(|error| io_error("syncing", &directory, error))
}

/// Loads and verifies every snapshot file, keyed by group. With `remove_temporary`,
/// leftovers of interrupted writes (`*.snap.tmp`) are deleted; they never replaced a
/// snapshot, so they hold nothing anybody relies on.
pub fn load_snapshots(
    data_dir: &Path,
    remove_temporary: bool,
) -> Result<BTreeMap<u64, Snapshot>, SnapshotError> {
    let directory = snapshot_directory(data_dir);
    let mut snapshots = BTreeMap::new();
    let listing = match fs::read_dir(&directory) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(snapshots),
        Err(error) => return Err(io_error("listing", &directory, error)),
    };
    for item in listing {
        let item = item.map_err(|error| io_error("listing", &directory, error))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMPORARY_SUFFIX) {
            if remove_temporary {
                fs::remove_file(item.path())
                    .map_err(|error| io_error("removing", &item.path(), error))?;
            }
            continue;
        }
        let Some(group) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(snapshot) = read_snapshot(data_dir, group)? {
            snapshots.insert(group, snapshot);
        }
    }
    Ok(snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_directory(name: &str) -> PathBuf {
        let directory =
            std::env::temp_dir().join(format!("corekv-snapshot-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        fs::create_dir_all(&directory).unwrap();
        directory
    }

    fn sample() -> Snapshot {
        Snapshot {
            group_id: 17,
            index: 1000,
            term: 7,
            data: (0..5000u32).map(|value| value as u8).collect(),
        }
    }

    // A written snapshot reads back identical, and a rewrite replaces it.
    #[test]
    fn write_then_read_round_trip() {
        let directory = test_directory("round-trip");
        let snapshot = sample();
        write_snapshot(&directory, &snapshot).unwrap();
        assert_eq!(
            read_snapshot(&directory, 17).unwrap(),
            Some(snapshot.clone())
        );
        let metadata = read_snapshot_metadata(&directory, 17).unwrap().unwrap();
        assert_eq!(
            (metadata.index, metadata.term, metadata.data_bytes),
            (1000, 7, 5000)
        );
        let newer = Snapshot {
            index: 2000,
            data: vec![1, 2, 3],
            ..snapshot
        };
        write_snapshot(&directory, &newer).unwrap();
        let loaded = load_snapshots(&directory, true).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[&17], newer);
        remove_snapshot(&directory, 17).unwrap();
        assert_eq!(read_snapshot(&directory, 17).unwrap(), None);
        fs::remove_dir_all(&directory).unwrap();
    }

    // Every kind of damage is reported with its typed reason, never a panic.
    #[test]
    fn damaged_files_are_refused() {
        let snapshot = sample();
        let mut good = encode_header(&snapshot).to_vec();
        good.extend_from_slice(&snapshot.data);
        assert_eq!(decode_snapshot(&good).unwrap(), snapshot);

        assert!(matches!(
            decode_snapshot(&good[..10]),
            Err(SnapshotCorruption::HeaderTruncated { .. })
        ));
        let mut bytes = good.clone();
        bytes[0] ^= 1;
        assert!(matches!(
            decode_snapshot(&bytes),
            Err(SnapshotCorruption::BadMagic { .. })
        ));
        let mut bytes = good.clone();
        bytes[20] ^= 1;
        assert_eq!(
            decode_snapshot(&bytes),
            Err(SnapshotCorruption::BadHeaderChecksum)
        );
        let mut bytes = good.clone();
        bytes[100] ^= 1;
        assert_eq!(
            decode_snapshot(&bytes),
            Err(SnapshotCorruption::BadDataChecksum)
        );
        assert!(matches!(
            decode_snapshot(&good[..good.len() - 1]),
            Err(SnapshotCorruption::LengthMismatch { .. })
        ));
        let mut bytes = good.clone();
        bytes[4] = 9;
        let header_crc = crc32fast::hash(&bytes[0..44]);
        bytes[44..48].copy_from_slice(&header_crc.to_le_bytes());
        assert_eq!(
            decode_snapshot(&bytes),
            Err(SnapshotCorruption::UnsupportedVersion { found: 9 })
        );
    }

    // A file named for one group but holding another is refused, and temporary leftovers
    // are ignored or removed.
    #[test]
    fn wrong_group_and_leftovers() {
        let directory = test_directory("wrong-group");
        write_snapshot(&directory, &sample()).unwrap();
        fs::rename(snapshot_path(&directory, 17), snapshot_path(&directory, 18)).unwrap();
        assert!(matches!(
            read_snapshot(&directory, 18),
            Err(SnapshotError::Corrupt {
                reason: SnapshotCorruption::WrongGroup {
                    named: 18,
                    found: 17
                },
                ..
            })
        ));
        fs::remove_file(snapshot_path(&directory, 18)).unwrap();
        fs::write(temporary_path(&directory, 5), b"partial").unwrap();
        assert!(load_snapshots(&directory, false).unwrap().is_empty());
        assert!(temporary_path(&directory, 5).exists());
        assert!(load_snapshots(&directory, true).unwrap().is_empty());
        assert!(!temporary_path(&directory, 5).exists());
        fs::remove_dir_all(&directory).unwrap();
    }
}
