//! Settings of one replica: timing in ticks, bounds on messages and windows, the seed.

use super::types::NodeId;

/// How a replica behaves. Every bound that limits memory or message size is here.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The actual
    /// timeout is drawn from `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub election_timeout_ticks: u64,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_timeout_ticks: u64,
    /// Ask "could I win?" before raising the term, so a partitioned node rejoining does
    /// not depose a healthy leader.
    pub pre_vote: bool,
    /// A leader that hears from no quorum for an election timeout steps down; followers
    /// that heard from a leader within an election timeout ignore vote requests.
    pub check_quorum: bool,
    /// Bytes of entries in one append message (at least one entry is always sent).
    pub append_bytes_max: usize,
    /// Appends in flight to one follower.
    pub inflight_messages_max: usize,
    /// Bytes of appends in flight to one follower.
    pub inflight_bytes_max: usize,
    /// Bytes of committed entries handed out in one `Ready`.
    pub apply_bytes_max: usize,
    /// Bytes a leader accepts in proposals that are not committed yet.
    pub uncommitted_bytes_max: usize,
    /// Bytes of snapshot data in one chunk message.
    pub snapshot_chunk_bytes: usize,
    /// Chunks of a snapshot in flight to one follower.
    pub snapshot_chunks_in_flight_max: u64,
    /// Largest snapshot a follower accepts.
    pub snapshot_bytes_max: u64,
    /// Linearizable reads waiting for confirmation at once.
    pub pending_reads_max: usize,
    /// Seed of the generator that randomizes election timeouts.
    pub seed: u64,
    /// DELIBERATELY UNSAFE, for tests only: lets a leader commit an entry of an older term
    /// by counting its replicas (the bug of figure 8 in the Raft paper). The simulator must
    /// catch it.
    pub unsafe_commit_old_terms: bool,
}

impl Config {
    /// Defaults for replica `id`: 10-tick elections, 2-tick heartbeats, pre-vote and
    /// check-quorum on.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_timeout_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            append_bytes_max: 1 << 20,
            inflight_messages_max: 256,
            inflight_bytes_max: 32 << 20,
            apply_bytes_max: 64 << 20,
            uncommitted_bytes_max: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_in_flight_max: 4,
            snapshot_bytes_max: 4 << 30,
            pending_reads_max: 1 << 16,
            seed: id,
            unsafe_commit_old_terms: false,
        }
    }

    /// Checks relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id 0 is reserved for \"none\"".into());
        }
        if self.heartbeat_timeout_ticks == 0 {
            return Err("heartbeat timeout must be at least one tick".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_timeout_ticks {
            return Err("election timeout must be longer than the heartbeat timeout".into());
        }
        if self.inflight_messages_max == 0 || self.snapshot_chunks_in_flight_max == 0 {
            return Err("in-flight windows must hold at least one message".into());
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err("snapshot chunks must hold at least one byte".into());
        }
        Ok(())
    }
}
