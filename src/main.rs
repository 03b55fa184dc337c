//! The `corekv` command: server, cluster and client commands (clap).
//!
//! Each family of subcommands lives in its own module and plugs in here as one variant
//! of [`Command`] and one arm in [`main`]; the client commands are in `cli.rs`, `watch`
//! (a stream, not one answer) in `cli_watch.rs`.

mod cli;
mod cli_json;
mod cli_watch;

use clap::{Parser, Subcommand};

/// corekv: a strongly consistent, replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "corekv", version, about, after_help = cli::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every subcommand of `corekv`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one corekv node (one executor per shard).
    Server(Box<corekv::server::ServerArgs>),
    /// Start a local cluster of server processes on loopback (data under ./corekv-data).
    Cluster(corekv::local_cluster::ClusterArgs),
    /// Load a cluster and report throughput, latency, errors and CPU per operation.
    Bench(Box<corekv::bench::BenchArgs>),
    /// The client commands (put, get, del, append, scan, txn, status), flattened so that
    /// they read `corekv put ...`.
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Print every change of KEY (or, with --prefix, of every key starting with it), one
    /// line per event: PUT|DELETE, key, value, revision.
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Watch(cli_watch::WatchArgs),
}

fn main() {
    let arguments = Cli::parse();
    let code = match arguments.command {
        Command::Client(command) => cli::run(command),
        Command::Watch(args) => cli_watch::run(args),
        Command::Server(args) => run_server(*args),
        Command::Bench(args) => corekv::bench::command(*args),
        Command::Cluster(args) => match corekv::local_cluster::run(args) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("corekv cluster: {error}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// Exit status of a server that could not start or stopped on an error.
const SERVER_FAILED_EXIT_CODE: i32 = 1;

fn run_server(args: corekv::server::ServerArgs) -> i32 {
    let config = match corekv::server::ServerConfig::from_args(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("corekv server: {error}");
            return cli::EXIT_USAGE;
        }
    };
    match corekv::server::run(config) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("corekv server: {error}");
            SERVER_FAILED_EXIT_CODE
        }
    }
}
