//! The `corekv` command: server, cluster and client commands (clap).
//!
//! Each family of subcommands lives in its own module and plugs in here as one variant
//! of [`Command`] and one arm in [`main`]; the client commands are in `cli.rs`.

mod cli;

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
    // server and cluster subcommands are added by the server module, one line each here
    // (for example `Server(corekv::server::ServerArgs),`), plus one arm each in `main`.
    /// The client commands (put, get, del, append, scan, txn, status), flattened so that
    /// they read `corekv put ...`.
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() {
    let arguments = Cli::parse();
    let code = match arguments.command {
        Command::Client(command) => cli::run(command),
    };
    std::process::exit(code);
}
