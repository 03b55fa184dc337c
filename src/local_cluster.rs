//! `corekv cluster`: a local cluster of server processes on loopback for trying corekv
//! out, with data under `./corekv-data`. Each member is a real `corekv server` process.
//! While it runs, `<data-dir>/cluster.pids` lists the members' process ids, one a line,
//! so that `corekv bench --server-pids-file` can report their CPU per operation.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

/// `corekv cluster` flags.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Members to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Client port of node 1; node `n` uses this plus `10 * (n - 1)`.
    #[arg(long, default_value_t = 7379)]
    pub base_port: u16,
    /// Root of the members' data directories.
    #[arg(long, default_value = "corekv-data")]
    pub data_dir: PathBuf,
    /// Shards per member (every member shares this machine's cores).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Raft groups of the cluster.
    #[arg(long, default_value_t = 16)]
    pub groups: u64,
}

/// The file under the data directory that lists the members' process ids while they run.
pub const PIDS_FILE: &str = "cluster.pids";

/// How often the launcher checks on its members.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// The client and first peer port of member `node`.
pub fn ports(base_port: u16, node: u64) -> (u16, u16) {
    let client = base_port + 10 * (node as u16 - 1);
    (client, client + 1)
}

/// Starts the members, prints how to reach them, and stops them all on Ctrl-C (or when
/// any of them exits).
pub fn run(args: ClusterArgs) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err("--nodes must be 1..=9".into());
    }
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let initial_cluster: Vec<String> = (1..=args.nodes)
        .map(|node| format!("{node}=127.0.0.1:{}", ports(args.base_port, node).1))
        .collect();
    let clients: Vec<String> = (1..=args.nodes)
        .map(|node| format!("{node}=127.0.0.1:{}", ports(args.base_port, node).0))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|error| format!("cannot install the signal handler: {error}"))?;
    }
    let mut children: Vec<(u64, Child)> = Vec::new();
    for node in 1..=args.nodes {
        let data_dir = args.data_dir.join(format!("node-{node}"));
        let child = Command::new(&executable)
            .arg("server")
            .args(["--node-id", &node.to_string()])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-clients", &clients.join(",")])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--shards", &args.shards.to_string()])
            .args(["--groups", &args.groups.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start node {node}: {error}"))?;
        children.push((node, child));
    }
    let endpoints: Vec<String> = (1..=args.nodes)
        .map(|node| format!("127.0.0.1:{}", ports(args.base_port, node).0))
        .collect();
    let pids_file = args.data_dir.join(PIDS_FILE);
    let pids: String = children
        .iter()
        .map(|(_, child)| format!("{}\n", child.id()))
        .collect();
    // The servers create the data directory themselves, maybe not yet: create it first.
    let written =
        std::fs::create_dir_all(&args.data_dir).and_then(|()| std::fs::write(&pids_file, pids));
    if let Err(error) = written {
        eprintln!("corekv cluster: {}: {error}", pids_file.display());
    }
    println!(
        "corekv: {} nodes running, data under {}",
        args.nodes,
        args.data_dir.display()
    );
    println!("  endpoints: {}", endpoints.join(","));
    println!(
        "  try:       corekv put hello world --endpoints {}",
        endpoints.join(",")
    );
    println!(
        "             corekv get hello --endpoints {}",
        endpoints.join(",")
    );
    println!(
        "             corekv status --endpoints {}",
        endpoints.join(",")
    );
    println!(
        "  bench:     corekv bench --workload ycsb-a --server-pids-file {} --endpoints {}",
        pids_file.display(),
        endpoints.join(",")
    );
    println!("  stop:      Ctrl-C");
    let mut exited = None;
    while !stop.load(Ordering::Relaxed) && exited.is_none() {
        std::thread::sleep(WATCH_INTERVAL);
        for (node, child) in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some((*node, status));
            }
        }
    }
    for (_, child) in &mut children {
        terminate(child);
    }
    for (_, child) in &mut children {
        let _ = child.wait();
    }
    let _ = std::fs::remove_file(&pids_file);
    match exited {
        Some((node, status)) if !stop.load(Ordering::Relaxed) => {
            Err(format!("node {node} exited ({status}); stopped the others"))
        }
        _ => Ok(()),
    }
}

/// Asks a member to shut down gracefully (SIGTERM through `kill`, which every Linux has).
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
}
