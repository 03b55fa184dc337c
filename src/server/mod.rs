//! The corekv node: one glommio executor per shard, a channel mesh between them, and a
//! graceful shutdown on SIGINT/SIGTERM. This is the driver of the pure shard core
//! ([`crate::shard`]): it owns sockets, files, timers and threads, and every decision
//! about requests and storage is the core's.
//!
//! | file            | owns                                                            |
//! |-----------------|-----------------------------------------------------------------|
//! | [`config`]      | flags, the optional TOML file, checks                           |
//! | [`error`]       | the server's error type                                         |
//! | [`meta`]        | the data directory's identity (cluster, node, groups, shards)   |
//! | [`shard`]       | a shard's event loop: events into the core, its output to I/O   |
//! | [`connections`] | client sockets: framing, back-pressure, reply writes            |
//! | [`storage`]     | the core's records to WAL batches, recovery from the WAL        |
//! | [`snapshots`]   | snapshot files written off the loop                             |
//! | [`mesh`]        | the channels between the shards of the node                     |

pub mod config;
pub mod connections;
pub mod error;
pub mod mesh;
pub mod meta;
pub mod shard;
pub mod snapshots;
pub mod storage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

pub use config::{ServerArgs, ServerConfig};
pub use error::ServerError;

/// Locked memory for each executor's registered I/O buffers. Small enough that several
/// nodes fit on one machine under a default `ulimit -l` for root; the systemd unit sets
/// `LimitMEMLOCK=` for more.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 2 << 20;
/// The executors' preemption timer. glommio 0.9 can park an executor for good when its
/// preemption timer fires while the thread is descheduled (a loaded machine): the run loop
/// then takes "preempted before running anything" for "nothing to run" and sleeps in
/// `io_uring_enter` with runnable tasks queued (seen here with gdb; the transport tests hung
/// about 5 times in 1,000 stressed runs). A shard's loop yields on its own after every
/// turn, so a timer far above any turn's length loses nothing and avoids the hang.
pub const EXECUTOR_PREEMPT_TIMER: Duration = Duration::from_secs(60);

/// Runs a node until SIGINT/SIGTERM; returns once every shard stopped cleanly.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    let startup = meta::open_data_dir(&config.data_dir, meta::DataIdentity::of(&config))?;
    eprintln!(
        "corekv: node {} ({:?}) cluster {:#x}: {} shards, {} groups, clients on {}, peers on {}",
        config.node_id,
        startup,
        config.cluster_id,
        config.shards,
        config.groups,
        config.listen_client,
        config.listen_peer
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        ctrlc::set_handler(move || shutdown.store(true, Ordering::Relaxed))?;
    }
    let config = Arc::new(config);
    let mesh_ends = mesh::build(config.shards, shard::MESH_CHANNEL_MESSAGES_MAX);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for (index, mesh) in (0..config.shards).zip(mesh_ends) {
        let placement = if config.pin {
            Placement::Fixed(index as usize % cpus)
        } else {
            Placement::Unbound
        };
        let config = config.clone();
        let shutdown = shutdown.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spin_before_park(config.idle_spin)
            .preempt_timer(EXECUTOR_PREEMPT_TIMER)
            .spawn(move || async move {
                let result = shard::run_shard(index, config, mesh, shutdown.clone()).await;
                if result.is_err() {
                    // The other shards stop too: a node that cannot serve some of its
                    // groups must not pretend to serve.
                    shutdown.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|error| ServerError::Executor {
                shard: index,
                reason: error.to_string(),
            })?;
        handles.push((index, handle));
    }
    let mut failure = None;
    for (index, handle) in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                // One shard cannot serve its groups: the node must not pretend to.
                shutdown.store(true, Ordering::Relaxed);
                failure.get_or_insert(error);
            }
            Err(error) => {
                shutdown.store(true, Ordering::Relaxed);
                failure.get_or_insert(ServerError::ShardPanicked {
                    shard: index,
                    reason: error.to_string(),
                });
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => {
            eprintln!("corekv: node {} stopped cleanly", config.node_id);
            Ok(())
        }
    }
}
