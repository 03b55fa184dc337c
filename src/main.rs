//! The `corekv` command: server, cluster and client commands (clap).

use clap::Parser;

/// corekv: a strongly consistent, replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "corekv", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
