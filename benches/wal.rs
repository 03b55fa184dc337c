//! Write-ahead log throughput per shard against the raw device.

fn main() {}
