//! The settings of one shard core: which shard of which node it is, how the keyspace is
//! cut, the cluster's members and where each group's replicas live, and the deadlines of
//! the requests it waits on.

use std::collections::BTreeMap;

use crate::api::Member;
use crate::keyspace::shard_of;
use crate::multiraft::{GroupId, ShardConfig};
use crate::raft::NodeId;

/// Default of [`CoreConfig::forward_timeout_ticks`].
pub const FORWARD_TIMEOUT_TICKS_DEFAULT: u64 = 600;
/// Default of [`CoreConfig::status_timeout_ticks`].
pub const STATUS_TIMEOUT_TICKS_DEFAULT: u64 = 200;
/// Default of [`CoreConfig::max_clock_offset_ms`].
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 500;

/// Which nodes hold a replica of each group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Every group on every one of these nodes (a cluster without placement).
    Everywhere(Vec<NodeId>),
    /// Each group on the nodes listed for it.
    PerGroup(BTreeMap<GroupId, Vec<NodeId>>),
}

impl Placement {
    /// The voters of `group` (empty for a group the placement does not know).
    pub fn voters(&self, group: GroupId) -> &[NodeId] {
        match self {
            Placement::Everywhere(nodes) => nodes,
            Placement::PerGroup(groups) => groups.get(&group).map_or(&[], Vec::as_slice),
        }
    }

    pub fn holds(&self, group: GroupId, node: NodeId) -> bool {
        self.voters(group).contains(&node)
    }
}

/// Everything a shard core is told at start.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub node_id: NodeId,
    pub cluster_id: u64,
    /// This shard's index, below `shards`.
    pub shard: u32,
    /// Shards of every node.
    pub shards: u32,
    /// Groups the keyspace is cut into.
    pub groups: u64,
    /// Every node of the cluster, for status answers and leader hints.
    pub members: Vec<Member>,
    pub placement: Placement,
    /// Settings of this shard's Raft groups.
    pub raft: ShardConfig,
    /// Ticks a request forwarded to another shard may wait before it is answered
    /// `Timeout` (outcome unknown).
    pub forward_timeout_ticks: u64,
    /// Ticks a node status waits for the other shards' groups.
    pub status_timeout_ticks: u64,
    /// How far apart the nodes' clocks may be: a read at a revision further ahead of
    /// this node's clock is refused `FutureRevision` rather than waited for.
    pub max_clock_offset_ms: u64,
    /// A deliberate bug, for the simulator to prove it catches shard-layer mistakes: a
    /// linearizable read forwarded to another shard is served as a serializable one.
    pub unsafe_forward_reads_as_serializable: bool,
    /// A deliberate bug: votes and append acknowledgements leave before their batch is
    /// durable.
    pub unsafe_ack_before_fsync: bool,
    /// A deliberate bug, for the simulator to prove it checks causal order: the revision a
    /// client has seen neither advances the clock nor floors its write's revision.
    pub unsafe_ignore_seen_revision: bool,
}

impl CoreConfig {
    /// A core for shard `shard` of node `node_id` with default deadlines.
    pub fn new(
        node_id: NodeId,
        shard: u32,
        shards: u32,
        groups: u64,
        placement: Placement,
    ) -> CoreConfig {
        CoreConfig {
            node_id,
            cluster_id: 0,
            shard,
            shards,
            groups,
            members: Vec::new(),
            placement,
            raft: ShardConfig::new(node_id),
            forward_timeout_ticks: FORWARD_TIMEOUT_TICKS_DEFAULT,
            status_timeout_ticks: STATUS_TIMEOUT_TICKS_DEFAULT,
            max_clock_offset_ms: MAX_CLOCK_OFFSET_MS_DEFAULT,
            unsafe_forward_reads_as_serializable: false,
            unsafe_ack_before_fsync: false,
            unsafe_ignore_seen_revision: false,
        }
    }

    /// The groups this shard runs: those of its shard index that the placement puts on
    /// this node.
    pub fn groups_here(&self) -> Vec<GroupId> {
        (0..self.groups)
            .filter(|&group| shard_of(group, self.shards) == self.shard)
            .filter(|&group| self.placement.holds(group, self.node_id))
            .collect()
    }

    /// The client address of member `node`, or "" when the configuration does not name it.
    pub fn client_address(&self, node: NodeId) -> String {
        self.members
            .iter()
            .find(|member| member.node_id == node)
            .map(|member| member.client_address.clone())
            .unwrap_or_default()
    }
}
