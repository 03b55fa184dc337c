//! What can go wrong in a run and how much: the fault mixes, the deliberately broken
//! builds, the cluster layout, and the intensities each seed draws.

use corekv::multiraft::GroupId;
use corekv::raft::NodeId;

use crate::network::NetworkFaults;
use crate::rng::SimRng;

/// Steps between two ticks of a node whose clock runs at the nominal rate.
pub const TICK_STEPS: u64 = 5;
/// Crash and partition rates are drawn per thousand steps, so longer runs see more faults.
const STEPS_PER_THOUSAND: f64 = 1_000.0;

/// A deliberate bug, to show that the simulator catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The real code.
    Nothing,
    /// `raft::Config::unsafe_commit_old_terms`: commit old-term entries by counting
    /// replicas (figure 8 of the Raft paper).
    CommitOldTerms,
    /// Send `persisted_messages` (votes, append acks) before the fsync.
    AckBeforeFsync,
    /// The shard core serves a linearizable read forwarded to another shard as a
    /// serializable one (from the local replica, possibly stale).
    ForwardReadsSerializable,
    /// `multiraft::ShardConfig::unsafe_stamp_at_closed`: a leader stamps a write with the
    /// revision of its last promise instead of one above it.
    StampAtClosed,
    /// `multiraft::ShardConfig::unsafe_read_unclosed_revisions`: a read at a revision not
    /// yet closed is served at once from the closed state.
    ReadUnclosed,
    /// `shard::CoreConfig::unsafe_ignore_seen_revision`: a write's revision ignores what
    /// its client has seen.
    IgnoreSeenRevision,
}

impl Broken {
    pub fn from_name(name: &str) -> Option<Broken> {
        match name {
            "" | "none" => Some(Broken::Nothing),
            "commit_old_terms" => Some(Broken::CommitOldTerms),
            "ack_before_fsync" => Some(Broken::AckBeforeFsync),
            "forward_reads_serializable" => Some(Broken::ForwardReadsSerializable),
            "stamp_at_closed" => Some(Broken::StampAtClosed),
            "read_unclosed" => Some(Broken::ReadUnclosed),
            "ignore_seen_revision" => Some(Broken::IgnoreSeenRevision),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Broken::Nothing => "none",
            Broken::CommitOldTerms => "commit_old_terms",
            Broken::AckBeforeFsync => "ack_before_fsync",
            Broken::ForwardReadsSerializable => "forward_reads_serializable",
            Broken::StampAtClosed => "stamp_at_closed",
            Broken::ReadUnclosed => "read_unclosed",
            Broken::IgnoreSeenRevision => "ignore_seen_revision",
        }
    }
}

/// Which faults a run injects; the intensities come from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultMix {
    /// Delays and reordering only.
    Calm,
    /// Loss, duplication and long delays.
    Lossy,
    /// Partitions of every kind, with light loss.
    Partitions,
    /// Crashes and restarts, with unsynced writes lost.
    Crashes,
    /// All of the above.
    Everything,
}

impl FaultMix {
    pub const ALL: [FaultMix; 5] = [
        FaultMix::Calm,
        FaultMix::Lossy,
        FaultMix::Partitions,
        FaultMix::Crashes,
        FaultMix::Everything,
    ];

    /// Every ten consecutive seeds cover each mix on 3 and on 5 nodes.
    pub fn of_seed(seed: u64) -> FaultMix {
        FaultMix::ALL[(seed % 5) as usize]
    }

    pub fn has_loss(self) -> bool {
        matches!(self, FaultMix::Lossy | FaultMix::Everything)
    }

    pub fn has_partitions(self) -> bool {
        matches!(self, FaultMix::Partitions | FaultMix::Everything)
    }

    pub fn has_crashes(self) -> bool {
        matches!(self, FaultMix::Crashes | FaultMix::Everything)
    }
}

/// The cluster size a seed runs with.
pub fn nodes_of_seed(seed: u64) -> usize {
    if (seed / 5) % 2 == 0 {
        3
    } else {
        5
    }
}

/// The intensities of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub groups: usize,
    /// Shards (cores) of every node; group `g` lives on shard `g % shards`.
    pub shards: u32,
    /// Messages a mesh channel between two shards holds; past it the sender gets the
    /// message back (the server answers `Overloaded`).
    pub mesh_channel_messages_max: usize,
    /// Steps a mesh message takes between the shards of one node.
    pub mesh_delay_steps_max: u64,
    /// Ticks a request forwarded to another shard waits for its answer.
    pub forward_timeout_ticks: u64,
    /// Ticks between a leader's close promises.
    pub close_interval_ticks: u64,
    /// Bytes of history a group keeps before it compacts the oldest away.
    pub history_bytes_max: u64,
    pub clients: usize,
    pub keys: usize,
    pub fsync_steps_max: u64,
    pub crash_probability: f64,
    /// Chance that a node is crashed within a few steps of winning an election, before
    /// its first entries replicate: the schedule that exposes figure 8 of the Raft paper.
    pub new_leader_crash_probability: f64,
    pub down_steps_max: u64,
    pub partition_probability: f64,
    pub partition_steps_max: u64,
    pub compact_entries: u64,
    pub proposals_pending_max: usize,
    pub reads_pending_max: usize,
    pub snapshot_chunk_bytes: usize,
    pub append_bytes_max: usize,
    pub inflight_messages_max: usize,
    /// Chance per step that some group's leader is asked to hand leadership to another
    /// member (a forced election that bypasses the followers' leader lease).
    pub transfer_probability: f64,
    /// Each node ticks every this many steps, give or take: nodes' clocks drift apart.
    pub tick_steps_min: u64,
    pub tick_steps_max: u64,
    /// Each node's physical clock is off the true time by up to this many milliseconds
    /// either way (drawn per node): within the default `max_clock_offset` of 500 ms, so
    /// revisions must keep every promise anyway.
    pub clock_offset_ms_max: u64,
}

/// The members of group `group` in a cluster of `nodes`: all three nodes of a 3-node
/// cluster; in a 5-node cluster, nodes g, g+1, g+2 (mod 5), so each node holds some groups
/// and not others, and clients must route.
pub fn members_of(group: GroupId, nodes: usize) -> Vec<NodeId> {
    if nodes <= 3 {
        return (1..=nodes as NodeId).collect();
    }
    let mut members: Vec<NodeId> = (0..3)
        .map(|offset| (group + offset) % nodes as u64 + 1)
        .collect();
    members.sort_unstable();
    members
}

pub fn draw_params(rng: &mut SimRng, mix: FaultMix) -> (Params, NetworkFaults) {
    let mut faults = NetworkFaults::calm(rng.between(1, 12));
    if mix.has_loss() {
        faults.drop_probability = rng.fraction_between(0.01, 0.15);
        faults.duplicate_probability = rng.fraction_between(0.0, 0.08);
        faults.client_drop_probability = rng.fraction_between(0.0, 0.05);
        faults.spike_probability = rng.fraction_between(0.0, 0.03);
        faults.spike_delay_steps_max = rng.between(50, 250);
    } else if mix != FaultMix::Calm {
        faults.drop_probability = rng.fraction_between(0.0, 0.02);
    }
    let params = Params {
        groups: rng.between(3, 4) as usize,
        shards: rng.between(1, 3) as u32,
        mesh_channel_messages_max: rng.between(2, 64) as usize,
        mesh_delay_steps_max: rng.between(0, 3),
        forward_timeout_ticks: rng.between(40, 120),
        close_interval_ticks: rng.between(2, 10),
        history_bytes_max: rng.between(2 << 10, 64 << 10),
        clients: rng.between(3, 6) as usize,
        keys: rng.between(4, 10) as usize,
        fsync_steps_max: rng.between(1, 20),
        crash_probability: if mix.has_crashes() {
            rng.fraction_between(0.7, 2.7) / STEPS_PER_THOUSAND
        } else {
            0.0
        },
        new_leader_crash_probability: if mix.has_crashes() {
            rng.fraction_between(0.0, 0.3)
        } else {
            0.0
        },
        down_steps_max: rng.between(50, 800),
        partition_probability: if mix.has_partitions() {
            rng.fraction_between(0.7, 2.0) / STEPS_PER_THOUSAND
        } else {
            0.0
        },
        partition_steps_max: rng.between(100, 1_200),
        compact_entries: rng.between(20, 50),
        proposals_pending_max: rng.between(4, 64) as usize,
        reads_pending_max: rng.between(4, 64) as usize,
        snapshot_chunk_bytes: rng.between(64, 4_096) as usize,
        append_bytes_max: rng.between(64, 8_192) as usize,
        inflight_messages_max: rng.between(1, 64) as usize,
        transfer_probability: if mix == FaultMix::Calm {
            0.0
        } else {
            rng.fraction_between(0.0, 2.0) / STEPS_PER_THOUSAND
        },
        tick_steps_min: TICK_STEPS - rng.between(0, 1),
        tick_steps_max: TICK_STEPS + rng.between(0, 1),
        clock_offset_ms_max: [0, 20, 240][rng.index(3)],
    };
    (params, faults)
}
