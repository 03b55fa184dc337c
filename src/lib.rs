//! corekv: a strongly consistent, replicated key-value store on Raft, built as a
//! thread-per-core, shared-nothing server on io_uring.
//!
//! # The map
//!
//! Modules from the bottom up; a module uses only the modules listed above it.
//!
//! | module      | owns                                                           | I/O |
//! |-------------|----------------------------------------------------------------|-----|
//! | [`testing`] | the seed of every randomized test, from `COREKV_TEST_SEED`     | yes |
//! | [`proto`]   | FlatBuffers code generated from `schema/` (wire and disk)      | no  |
//! | [`frame`]   | length-prefixed, crc32-checked frames with a hard size limit   | no  |
//! | [`keyspace`] | key -> group -> shard, shared by server and SDK               | no  |
//! | [`raft`]    | one Raft replica as a pure state machine (`Ready`/`advance`)   | no  |
//! | [`codec`]   | Raft values to and from FlatBuffers; the shared verifier bounds | no  |
//! | [`kv`]      | the key-value state machine: apply, revisions, sessions, leases | no  |
//! | [`multiraft`] | the groups of one shard: tick, step, one combined Ready, apply | no  |
//! | [`check`]   | the linearizability checker; snapshot reads and causal order   | no  |
//! | [`wal`]     | the per-shard write-ahead log: segments, group commit, recovery| yes |
//! | [`api`]     | the client protocol as Rust values, one file per operation     | no  |
//! | [`shard`]   | one shard's turn as a state machine: routing, forwarding, storage, watches | no  |
//! | [`tcp`]     | TCP options std lacks: the unacknowledged-data timeout         | yes |
//! | [`transport`] | one shard's node-to-node links: batches, frames, health, bounds | yes |
//! | [`server`]  | the node: shards, loop turn, WAL batches, client requests      | yes |
//! | [`local_cluster`] | `corekv cluster`: server processes on loopback           | yes |
//! | [`client`]  | the SDK: connections, health, leader cache, sessions, retries  | yes |
//! | [`flag_values`] | durations as the CLI's and the bench's flags take them       | no  |
//! | [`bench`]   | `corekv bench`: workloads, pipelined load, checks, reports     | yes |
//!
//! `raft`, `kv`, `multiraft`, `shard`, `check`, `proto`, `frame`, `codec`, `keyspace` and
//! `api` never touch the clock, the filesystem, sockets, threads, the environment or
//! glommio, nor the modules that do: time arrives as ticks (carrying `now`), randomness
//! as a seeded generator, and I/O as data handed in and out. That is what lets one
//! process simulate a whole cluster, shard cores included, deterministically;
//! `tests/tidy.rs` keeps it true. `server` is the glommio driver of `shard`. The SDK's
//! decisions (`client::routing`, `client::attempt`, `client::session`) are pure in the
//! same way, so the simulator's clients route, retry and keep sessions as the SDK does.

pub mod api;
pub mod bench;
pub mod check;
pub mod client;
pub mod codec;
pub mod flag_values;
pub mod frame;
pub mod keyspace;
pub mod kv;
pub mod local_cluster;
pub mod multiraft;
pub mod proto;
pub mod raft;
pub mod server;
pub mod shard;
pub mod tcp;
pub mod testing;
pub mod transport;
pub mod wal;
