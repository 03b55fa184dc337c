//! The data directory's identity file, `corekv.meta`: which cluster, node, group count and
//! shard count the data belongs to. Written once at bootstrap (temp file, fsync, rename,
//! fsync the directory); a restart with different settings is refused.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::ServerConfig;
use super::error::{DataDirError, IdentityFileError};

const META_FILE: &str = "corekv.meta";
const META_FORMAT_VERSION: u64 = 1;

/// What the data directory was created for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
    pub groups: u64,
    pub shards: u32,
}

impl DataIdentity {
    pub fn of(config: &ServerConfig) -> DataIdentity {
        DataIdentity {
            cluster_id: config.cluster_id,
            node_id: config.node_id,
            groups: config.groups,
            shards: config.shards,
        }
    }

    fn encode(&self) -> String {
        let body = format!(
            "format={META_FORMAT_VERSION}\ncluster_id={}\nnode_id={}\ngroups={}\nshards={}\n",
            self.cluster_id, self.node_id, self.groups, self.shards
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}crc32={crc}\n")
    }

    /// Reads an identity file back.
    fn decode(text: &str) -> Result<DataIdentity, IdentityFileError> {
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or(IdentityFileError::Truncated)?;
        let body = format!("{body}\n");
        let crc: u32 = crc_line
            .strip_prefix("crc32=")
            .and_then(|value| value.parse().ok())
            .ok_or(IdentityFileError::MissingChecksum)?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err(IdentityFileError::ChecksumMismatch);
        }
        let field = |name: &'static str| -> Result<u64, IdentityFileError> {
            body.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .and_then(|value| value.parse().ok())
                .ok_or(IdentityFileError::MissingField(name))
        };
        let format = field("format")?;
        if format != META_FORMAT_VERSION {
            return Err(IdentityFileError::UnknownFormat(format));
        }
        Ok(DataIdentity {
            cluster_id: field("cluster_id")?,
            node_id: field("node_id")?,
            groups: field("groups")?,
            shards: u32::try_from(field("shards")?)
                .map_err(|_| IdentityFileError::MissingField("shards"))?,
        })
    }
}

/// Did this start create the data directory (a new cluster member) or find it?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    Bootstrap,
    Restart,
}

/// Checks the data directory against `expected`, creating it on first start.
pub fn open_data_dir(data_dir: &Path, expected: DataIdentity) -> Result<Startup, DataDirError> {
    let io_error = |action, path: &Path, error: std::io::Error| DataDirError::Io {
        action,
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    fs::create_dir_all(data_dir).map_err(|error| io_error("create", data_dir, error))?;
    let path = data_dir.join(META_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let found = DataIdentity::decode(&text).map_err(|reason| DataDirError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            let mismatch = |text: String| Err(DataDirError::Mismatch(text));
            if found.cluster_id != expected.cluster_id {
                return mismatch(format!(
                    "{} belongs to cluster {:#x}, not {:#x} (check --initial-cluster and \
                     --initial-cluster-token)",
                    data_dir.display(),
                    found.cluster_id,
                    expected.cluster_id
                ));
            }
            if found.node_id != expected.node_id {
                return mismatch(format!(
                    "{} belongs to node {}, not {}",
                    data_dir.display(),
                    found.node_id,
                    expected.node_id
                ));
            }
            if found.groups != expected.groups {
                return mismatch(format!(
                    "the cluster was created with {} groups; --groups {} cannot change that",
                    found.groups, expected.groups
                ));
            }
            if found.shards != expected.shards {
                return mismatch(format!(
                    "the data was written by {} shards; restart with --shards {}",
                    found.shards, found.shards
                ));
            }
            Ok(Startup::Restart)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            write_atomically(&path, expected.encode().as_bytes())
                .map_err(|error| io_error("write", &path, error))?;
            Ok(Startup::Bootstrap)
        }
        Err(error) => Err(io_error("read", &path, error)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary: PathBuf = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> DataIdentity {
        DataIdentity {
            cluster_id: 0xabc,
            node_id: 2,
            groups: 16,
            shards: 2,
        }
    }

    // First start creates the file; a matching restart passes; any change is refused.
    #[test]
    fn identity_is_checked_on_restart() {
        let dir = std::env::temp_dir().join(format!("corekv-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(open_data_dir(&dir, identity()), Ok(Startup::Bootstrap));
        assert_eq!(open_data_dir(&dir, identity()), Ok(Startup::Restart));
        let other_cluster = DataIdentity {
            cluster_id: 0xdef,
            ..identity()
        };
        assert!(open_data_dir(&dir, other_cluster)
            .unwrap_err()
            .to_string()
            .contains("belongs to cluster"));
        let other_groups = DataIdentity {
            groups: 8,
            ..identity()
        };
        assert!(open_data_dir(&dir, other_groups)
            .unwrap_err()
            .to_string()
            .contains("groups"));
        fs::write(dir.join(META_FILE), "format=1\ngarbage\n").unwrap();
        assert!(open_data_dir(&dir, identity()).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
