//! One Raft replica as a deterministic state machine: no clock, no files, no sockets.
//!
//! Ticks and messages go in; a [`Ready`] comes out with what to persist, what to send (now,
//! or only after the persist) and what to apply. One fsync may cover the Readies of many
//! groups: the caller reports durability with [`RaftNode::on_persisted`], and a leader
//! counts itself toward a commit, and a candidate its own vote, only after that.
//!
//! Files: `types` (values), `config` (settings and bounds), `log` (the in-memory log),
//! `progress` (the leader's view of followers), `rng` (seeded timeouts), `node` (roles,
//! step, tick, Ready).

pub mod config;
pub mod harness;
#[cfg(test)]
mod interaction_tests;
pub mod log;
pub mod node;
pub mod progress;
pub mod rng;
pub mod types;

pub use config::Config;
pub use node::{
    CompactError, InitialState, ProposeError, RaftNode, ReadError, Ready, SoftState, Status,
    TransferError, CAMPAIGN_TRANSFER,
};
pub use types::*;
