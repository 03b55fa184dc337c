//! One Raft replica as a deterministic state machine: no clock, no files, no sockets.
//!
//! Ticks and messages go in; a [`Ready`](node::Ready) comes out with what to persist, what
//! to send (now, or only after the persist) and what to apply. One fsync may cover the
//! Readies of many groups: the caller reports durability with `on_persisted`.

pub mod types;

pub use types::*;
