//! Raft core throughput: entries committed per second through an in-memory 3-node cluster.

fn main() {}
