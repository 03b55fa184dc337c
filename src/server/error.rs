//! The server's errors: one type for everything that stops a node from starting or
//! serving, converted to a message and an exit status only in `main`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use super::storage::RecoveryError;
use crate::shard::CoreError;
use crate::transport::TransportError;
use crate::wal::WalError;

/// Why a node cannot start or keep serving.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot install the signal handler: {0}")]
    Signal(#[from] ctrlc::Error),
    #[error("cannot start shard {shard}: {reason}")]
    Executor { shard: u32, reason: String },
    #[error("shard {shard} stopped abnormally: {reason}")]
    ShardPanicked { shard: u32, reason: String },
    #[error("shard {shard}: opening the WAL: {error}")]
    Wal { shard: u32, error: WalError },
    #[error("shard {shard}: recovering its groups: {error}")]
    Recovery { shard: u32, error: RecoveryError },
    #[error("shard {shard}: {error}")]
    Core { shard: u32, error: CoreError },
    #[error("shard {shard}: {error}")]
    Transport { shard: u32, error: TransportError },
    #[error("shard {shard}: client listener on {address}: {error}")]
    ClientListener {
        shard: u32,
        address: SocketAddr,
        error: io::Error,
    },
}

/// A configuration that cannot work: a flag, the config file, or how they combine.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    ReadFile { path: PathBuf, error: io::Error },
    #[error("{path}: {error}")]
    ParseFile {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("{flag} is required")]
    Missing { flag: &'static str },
    #[error("`{text}`: {reason}")]
    Member { text: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// A data directory that belongs to another cluster, node or layout, or that cannot be
/// read or written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DataDirError {
    #[error("cannot {action} {path}: {reason}")]
    Io {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Corrupt {
        path: PathBuf,
        reason: IdentityFileError,
    },
    #[error("{0}")]
    Mismatch(String),
}

/// What is wrong with a data directory's identity file.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum IdentityFileError {
    #[error("truncated identity file")]
    Truncated,
    #[error("missing checksum")]
    MissingChecksum,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("missing or invalid field {0}")]
    MissingField(&'static str),
    #[error("unknown format {0}")]
    UnknownFormat(u64),
}
