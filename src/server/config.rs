//! Server settings: command-line flags, optionally read from a TOML file first (flags win),
//! and the checks that reject a configuration before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::error::ConfigError;
use crate::raft::NodeId;

/// Default port clients connect to.
pub const CLIENT_PORT_DEFAULT: u16 = 7379;
/// Default first peer port; shard `s` listens on `peer port + s`.
pub const PEER_PORT_DEFAULT: u16 = 7380;

/// `corekv server` flags. Every flag can also come from `--config FILE` (TOML, same
/// names with underscores); a flag given on the command line wins.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerArgs {
    /// TOML file with any of these settings.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id in the cluster (1, 2, ...).
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// Every member's peer address, etcd style: `1=127.0.0.1:7380,2=127.0.0.1:7390`.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Every member's client address, same form; used for leader hints. Defaults to the
    /// peer host with the client port.
    #[arg(long)]
    pub initial_cluster_clients: Option<String>,
    /// Where clients connect (every shard listens here with SO_REUSEPORT).
    #[arg(long)]
    pub listen_client: Option<SocketAddr>,
    /// This node's first peer address; defaults to its entry in `initial_cluster`.
    #[arg(long)]
    pub listen_peer: Option<SocketAddr>,
    /// Data directory (created if absent).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Shards (cores) to run; the same on every node. Default: available CPUs.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Raft groups of the cluster, fixed at bootstrap.
    #[arg(long)]
    pub groups: Option<u64>,
    /// Milliseconds per Raft tick.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Ticks without a leader before an election.
    #[arg(long)]
    pub election_ticks: Option<u64>,
    /// Ticks between heartbeats.
    #[arg(long)]
    pub heartbeat_ticks: Option<u64>,
    /// Applied entries between snapshots of a group.
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Bytes of each WAL segment file.
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
    /// Token mixed into the cluster id so two clusters with the same members differ.
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// Pin each shard to a CPU (off when several nodes share one machine).
    #[arg(long)]
    pub pin: Option<bool>,
    /// Microseconds an idle shard spins before it sleeps: a message between shards then
    /// arrives in ~20 µs instead of ~135 µs, at the price of that CPU time. 0 suits
    /// several nodes sharing few cores.
    #[arg(long)]
    pub idle_spin_micros: Option<u64>,
}

impl ServerArgs {
    /// Fills unset flags from the `--config` file, if one is given.
    pub fn merged_with_file(self) -> Result<ServerArgs, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::ReadFile {
            path: path.clone(),
            error,
        })?;
        let file: ServerArgs = toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
            path: path.clone(),
            error: Box::new(error),
        })?;
        Ok(ServerArgs {
            config: self.config,
            node_id: self.node_id.or(file.node_id),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            initial_cluster_clients: self
                .initial_cluster_clients
                .or(file.initial_cluster_clients),
            listen_client: self.listen_client.or(file.listen_client),
            listen_peer: self.listen_peer.or(file.listen_peer),
            data_dir: self.data_dir.or(file.data_dir),
            shards: self.shards.or(file.shards),
            groups: self.groups.or(file.groups),
            tick_ms: self.tick_ms.or(file.tick_ms),
            election_ticks: self.election_ticks.or(file.election_ticks),
            heartbeat_ticks: self.heartbeat_ticks.or(file.heartbeat_ticks),
            snapshot_entries: self.snapshot_entries.or(file.snapshot_entries),
            wal_segment_bytes: self.wal_segment_bytes.or(file.wal_segment_bytes),
            initial_cluster_token: self.initial_cluster_token.or(file.initial_cluster_token),
            pin: self.pin.or(file.pin),
            idle_spin_micros: self.idle_spin_micros.or(file.idle_spin_micros),
        })
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// First peer address (shard `s` listens on port + s).
    pub peer: SocketAddr,
    pub client: SocketAddr,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node_id: NodeId,
    pub members: BTreeMap<NodeId, Member>,
    pub listen_client: SocketAddr,
    pub listen_peer: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: u32,
    pub groups: u64,
    pub tick: Duration,
    pub election_ticks: u64,
    pub heartbeat_ticks: u64,
    pub snapshot_entries: u64,
    pub wal_segment_bytes: u64,
    pub cluster_id: u64,
    pub pin: bool,
    pub idle_spin: Duration,
}

/// How long an idle shard spins before it parks unless `--idle-spin-micros` says
/// otherwise (the environment notes measured cross-shard latency with this value).
pub const IDLE_SPIN_DEFAULT: Duration = Duration::from_micros(100);
/// Longer spins only burn CPU: past a tick, the loop has work anyway.
pub const IDLE_SPIN_MICROS_MAX: u64 = 10_000;

/// Groups of a new cluster when not given.
pub const GROUPS_DEFAULT: u64 = 64;
/// Largest WAL batch: room for one entry holding the largest command a client may send
/// (`kv::limits::COMMAND_BYTES_MAX_DEFAULT`) with its record and batch framing, so that no
/// valid write can be too large for the log. A turn with more is cut into several batches.
pub const WAL_BATCH_BYTES_MAX: usize = 4 << 20;
const _: () =
    assert!(WAL_BATCH_BYTES_MAX as u64 >= 2 * crate::kv::limits::COMMAND_BYTES_MAX_DEFAULT);
/// A WAL segment holds at least one largest batch.
pub const WAL_SEGMENT_BYTES_MIN: u64 = WAL_BATCH_BYTES_MAX as u64;
/// WAL files are written in blocks of this many bytes.
const WAL_BLOCK_BYTES: u64 = crate::wal::record::BLOCK_BYTES as u64;
/// Shards are bounded so that peer ports (`peer port + shard`) stay sane.
pub const SHARDS_MAX: u32 = 256;

impl ServerConfig {
    pub fn from_args(args: ServerArgs) -> Result<ServerConfig, ConfigError> {
        let args = args.merged_with_file()?;
        let node_id = args
            .node_id
            .ok_or(ConfigError::Missing { flag: "--node-id" })?;
        let cluster_text = args.initial_cluster.ok_or(ConfigError::Missing {
            flag: "--initial-cluster",
        })?;
        let peers = parse_members(&cluster_text)?;
        let clients = match &args.initial_cluster_clients {
            Some(text) => parse_members(text)?,
            None => peers
                .iter()
                .map(|(&id, peer)| (id, SocketAddr::new(peer.ip(), CLIENT_PORT_DEFAULT)))
                .collect(),
        };
        let mut members = BTreeMap::new();
        for (&id, &peer) in &peers {
            let client = *clients.get(&id).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "member {id} has no client address in --initial-cluster-clients"
                ))
            })?;
            members.insert(id, Member { id, peer, client });
        }
        let me = members
            .get(&node_id)
            .ok_or_else(|| {
                ConfigError::Invalid(format!("--node-id {node_id} is not in --initial-cluster"))
            })?
            .clone();
        let shards = args
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        if shards == 0 || shards > SHARDS_MAX {
            return Err(ConfigError::Invalid(format!(
                "--shards must be 1..={SHARDS_MAX}"
            )));
        }
        let groups = args.groups.unwrap_or(GROUPS_DEFAULT);
        if groups == 0 {
            return Err(ConfigError::Invalid("--groups must be at least 1".into()));
        }
        let election_ticks = args.election_ticks.unwrap_or(10);
        let heartbeat_ticks = args.heartbeat_ticks.unwrap_or(2);
        if election_ticks <= heartbeat_ticks || heartbeat_ticks == 0 {
            return Err(ConfigError::Invalid(
                "--election-ticks must exceed --heartbeat-ticks (>= 1)".into(),
            ));
        }
        let wal_segment_bytes = args.wal_segment_bytes.unwrap_or(64 << 20);
        if wal_segment_bytes < WAL_SEGMENT_BYTES_MIN || wal_segment_bytes % WAL_BLOCK_BYTES != 0 {
            return Err(ConfigError::Invalid(format!(
                "--wal-segment-bytes must be a multiple of {WAL_BLOCK_BYTES} and at least \
                 {WAL_SEGMENT_BYTES_MIN} (one largest batch)"
            )));
        }
        let token = args
            .initial_cluster_token
            .unwrap_or_else(|| "corekv".into());
        let cluster_id = cluster_id_of(&token, &members);
        Ok(ServerConfig {
            node_id,
            listen_client: args.listen_client.unwrap_or(me.client),
            listen_peer: args.listen_peer.unwrap_or(me.peer),
            members,
            data_dir: args
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("corekv-{node_id}"))),
            shards,
            groups,
            tick: Duration::from_millis(args.tick_ms.unwrap_or(50).max(1)),
            election_ticks,
            heartbeat_ticks,
            snapshot_entries: args.snapshot_entries.unwrap_or(10_000).max(1),
            wal_segment_bytes,
            cluster_id,
            pin: args.pin.unwrap_or(false),
            idle_spin: args.idle_spin_micros.map_or(IDLE_SPIN_DEFAULT, |micros| {
                Duration::from_micros(micros.min(IDLE_SPIN_MICROS_MAX))
            }),
        })
    }

    /// The directory of one shard's WAL and snapshots.
    pub fn shard_dir(&self, shard: u32) -> PathBuf {
        shard_dir(&self.data_dir, shard)
    }
}

pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_members(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
    let refuse = |text: &str, reason: String| ConfigError::Member {
        text: text.to_string(),
        reason,
    };
    let mut out = BTreeMap::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (id, address) = part
            .split_once('=')
            .ok_or_else(|| refuse(part, "expected ID=HOST:PORT".into()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| refuse(id, "not a node id".into()))?;
        if id == 0 {
            return Err(refuse(part, "node id 0 is reserved".into()));
        }
        let address: SocketAddr = address
            .trim()
            .parse()
            .map_err(|error| refuse(address, format!("{error}")))?;
        if out.insert(id, address).is_some() {
            return Err(refuse(part, format!("node {id} is listed twice")));
        }
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid("the cluster has no members".into()));
    }
    Ok(out)
}

/// A cluster's id: a hash of the token and the members' peer addresses, so a node never
/// joins a cluster it was not created for.
pub fn cluster_id_of(token: &str, members: &BTreeMap<NodeId, Member>) -> u64 {
    let mut text = token.to_string();
    for member in members.values() {
        text.push_str(&format!("|{}={}", member.id, member.peer));
    }
    let hash = crate::keyspace::group_of(text.as_bytes(), u64::MAX);
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Member lists parse in the etcd form and reject duplicates and junk.
    #[test]
    fn parses_members() {
        let members = parse_members("1=127.0.0.1:7380, 2=127.0.0.2:7380").unwrap();
        assert_eq!(members.len(), 2);
        assert!(parse_members("1=127.0.0.1:7380,1=127.0.0.1:7381").is_err());
        assert!(parse_members("x=127.0.0.1:1").is_err());
        assert!(parse_members("1=nowhere").is_err());
        assert!(parse_members("").is_err());
    }

    // A WAL segment must hold the largest batch, in whole blocks.
    #[test]
    fn wal_segments_hold_the_largest_batch() {
        let args = |segment_bytes: u64| ServerArgs {
            node_id: Some(1),
            initial_cluster: Some("1=127.0.0.1:9000".into()),
            wal_segment_bytes: Some(segment_bytes),
            ..ServerArgs::default()
        };
        assert!(ServerConfig::from_args(args(WAL_SEGMENT_BYTES_MIN)).is_ok());
        assert!(ServerConfig::from_args(args(WAL_SEGMENT_BYTES_MIN - 4096)).is_err());
        assert!(ServerConfig::from_args(args(WAL_SEGMENT_BYTES_MIN + 1)).is_err());
    }

    // Flags win over the file; the file fills the rest.
    #[test]
    fn file_fills_unset_flags() {
        let dir = std::env::temp_dir().join(format!("corekv-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corekv.toml");
        std::fs::write(
            &path,
            "node_id = 2\ngroups = 8\ninitial_cluster = \"2=127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path),
            groups: Some(4),
            ..ServerArgs::default()
        };
        let config = ServerConfig::from_args(args).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.groups, 4);
        assert_eq!(config.listen_client.port(), CLIENT_PORT_DEFAULT);
        std::fs::remove_dir_all(dir).unwrap();
    }

    // The example config shipped in deploy/ parses and makes a valid configuration.
    #[test]
    fn deploy_example_parses() {
        let text = include_str!("../../deploy/corekv.toml.example");
        let args: ServerArgs = toml::from_str(text).unwrap();
        let config = ServerConfig::from_args(args).unwrap();
        assert_eq!(config.node_id, 1);
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.listen_client.port(), 7379);
    }
}
