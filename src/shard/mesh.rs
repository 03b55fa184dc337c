//! The messages one shard sends another shard of the same node. Payloads are FlatBuffers
//! client requests and responses (the same bytes a client sends), so a shard never reads
//! another shard's memory: the driver moves these values over bounded channels.

use super::watch::{WatchPoll, WatchPollReply};
use crate::kv::lease::Revocation;
use crate::multiraft::{GroupId, ReadMode};

/// A message between two shards of one node.
#[derive(Debug)]
pub struct MeshMessage {
    pub from_shard: u32,
    pub to_shard: u32,
    /// The sender's id for this exchange; a reply carries it back.
    pub token: u64,
    pub body: MeshBody,
}

/// What a mesh message asks or answers.
#[derive(Debug)]
pub enum MeshBody {
    /// Serve this client request (FlatBuffers `Request`) on `group`, which the receiving
    /// shard owns, a read as `read` says; answer with a `Reply` carrying the same token.
    Request {
        group: GroupId,
        request: Vec<u8>,
        read: ReadMode,
    },
    /// The answer (FlatBuffers `Response`) to the request with this token.
    Reply { response: Vec<u8> },
    /// Report the status of every group of the receiving shard.
    Status,
    /// The answer to `Status` (FlatBuffers `Response` with a status result).
    StatusReply { response: Vec<u8> },
    /// Read a watcher's changes from the receiving shard's groups (see
    /// [`super::watch`]). Values, not FlatBuffers: they never leave the node, and the
    /// receiving shard owns what it is sent.
    WatchPoll { poll: WatchPoll },
    /// The answer to `WatchPoll`.
    WatchPollReply { reply: WatchPollReply },
    /// Send the lease group's revocations after this position (to the shard that holds
    /// the lease group; see `docs/LEASES.md`).
    Revocations { after: u64 },
    /// The answer to `Revocations`, oldest first (empty when the lease group is not here
    /// or has none after the position).
    RevocationsReply { revocations: Vec<Revocation> },
    /// From the shard that holds the lease group: its last revocation position.
    RevocationPosition { position: u64 },
}
