//! The per-shard write-ahead log: segments, group commit, recovery, garbage collection.
