//! The key-value state machine of one Raft group: apply, revisions, sessions, snapshots.
