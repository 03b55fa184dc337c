//! Lease throughput on a 3-node corekv cluster on loopback (fsync on): grants and
//! keep-alives per second, with durable puts at the same concurrency in the same run as
//! the reference (a lease op is one log entry of the lease group, like a put of one
//! group), and the servers' CPU per operation. Then the memory of 1,000,000 leases in one
//! lease group's store, measured in this process (resident set growth).
//!
//! Run: `cargo build --release && cargo bench --bench leases` (starts
//! `target/release/corekv`); options after `--`: `--threads N` (blocking SDK callers,
//! default 32), `--seconds S` per phase (default 5), `--leases N` for the memory
//! measurement (default 1,000,000).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv::client::{Client, ClientOptions};
use corekv::kv::{LeaseOp, Store};

const NODES: usize = 3;
const STARTUP_WAIT_MAX: Duration = Duration::from_secs(30);

struct Options {
    threads: usize,
    seconds: u64,
    leases: u64,
}

fn options() -> Options {
    let mut options = Options {
        threads: 32,
        seconds: 5,
        leases: 1_000_000,
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < arguments.len() {
        let value = arguments
            .get(index + 1)
            .and_then(|value| value.parse().ok());
        match (arguments[index].as_str(), value) {
            ("--threads", Some(value)) => options.threads = value as usize,
            ("--seconds", Some(value)) => options.seconds = value,
            ("--leases", Some(value)) => options.leases = value,
            // `cargo bench` passes `--bench`; anything else unknown is ignored alike.
            _ => {
                index += 1;
                continue;
            }
        }
        index += 2;
    }
    options
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// User plus system CPU time of process `pid` so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|both| {
            both.iter()
                .filter_map(|field| field.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // Linux reports these in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Cluster {
    children: Vec<Child>,
    root: PathBuf,
    endpoints: Vec<String>,
}

impl Cluster {
    fn start() -> Cluster {
        let root = std::env::temp_dir().join(format!("corekv-bench-leases-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("bench directory");
        let ports: Vec<(u16, u16)> = (0..NODES).map(|_| (free_port(), free_port())).collect();
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(index, (_, peer))| format!("{}=127.0.0.1:{peer}", index + 1))
            .collect();
        let clients: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(index, (client, _))| format!("{}=127.0.0.1:{client}", index + 1))
            .collect();
        let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/corekv");
        let children = (1..=NODES)
            .map(|node| {
                Command::new(binary)
                    .arg("server")
                    .args(["--node-id", &node.to_string()])
                    .args(["--initial-cluster", &peers.join(",")])
                    .args(["--initial-cluster-clients", &clients.join(",")])
                    .arg("--data-dir")
                    .arg(root.join(format!("node-{node}")))
                    .args(["--shards", "1", "--groups", "4"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start corekv server (build it with cargo build --release)")
            })
            .collect();
        let endpoints = ports
            .iter()
            .map(|(client, _)| format!("127.0.0.1:{client}"))
            .collect();
        Cluster {
            children,
            root,
            endpoints,
        }
    }

    fn cpu(&self) -> Duration {
        self.children.iter().map(|child| cpu_of(child.id())).sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `operation` from `threads` threads for `seconds`; returns (ops/s, server CPU µs
/// per op). Every operation must succeed.
fn phase(
    cluster: &Cluster,
    client: &Arc<Client>,
    options: &Options,
    operation: impl Fn(&Client, u64) + Sync,
) -> (f64, f64) {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let cpu_before = cluster.cpu();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..options.threads as u64 {
            let (done, stop, client, operation) = (&done, &stop, client, &operation);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    operation(client, thread * 1_000_000 + n);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(options.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let operations = done.load(Ordering::Relaxed).max(1);
    let cpu = (cluster.cpu() - cpu_before).as_secs_f64();
    (operations as f64 / elapsed, cpu * 1e6 / operations as f64)
}

fn main() {
    let options = options();
    let cluster = Cluster::start();
    let deadline = Instant::now() + STARTUP_WAIT_MAX;
    let client = loop {
        let connect_options = ClientOptions {
            sessions_max: options.threads.max(1) * 2,
            ..ClientOptions::default()
        };
        match Client::connect(&cluster.endpoints, connect_options) {
            Ok(client) => match client.lease_grant(60, 0) {
                Ok(_) => break Arc::new(client),
                Err(_) if Instant::now() < deadline => {}
                Err(error) => panic!("the lease group does not answer: {error}"),
            },
            Err(_) if Instant::now() < deadline => {}
            Err(error) => panic!("corekv did not answer: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "3 nodes, 1 shard, 4 groups, fsync on; {} blocking SDK threads, {} s per phase",
        options.threads, options.seconds
    );
    let (puts, put_cpu) = phase(&cluster, &client, &options, |client, n| {
        client.put(format!("bench/{n}"), "value").expect("put");
    });
    let (grants, grant_cpu) = phase(&cluster, &client, &options, |client, _| {
        client.lease_grant(600, 0).expect("grant");
    });
    let ids = client.lease_list().expect("list");
    let ids = Arc::new(ids);
    let keep_ids = Arc::clone(&ids);
    let (keep_alives, keep_cpu) = phase(&cluster, &client, &options, move |client, n| {
        let id = keep_ids[(n as usize) % keep_ids.len()];
        client.lease_keep_alive_once(id).expect("keep-alive");
    });
    println!("phase       ops/s   server CPU µs/op  ratio to puts");
    println!("put      {puts:8.0}   {put_cpu:10.0}        1.00");
    println!(
        "grant    {grants:8.0}   {grant_cpu:10.0}        {:.2}",
        grants / puts
    );
    println!(
        "keepalive{keep_alives:8.0}   {keep_cpu:10.0}        {:.2}",
        keep_alives / puts
    );
    drop(cluster);

    // Memory: one lease group store with `leases` leases, applied as the log would.
    let before = resident_bytes();
    let mut store = Store::default();
    store.set_lease_group(true);
    for index in 1..=options.leases {
        let op = LeaseOp::Grant {
            id: index,
            ttl_ms: 60_000,
        };
        store.apply_lease(index, index << 16, &op).expect("grant");
    }
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "{} leases in one lease group store: {:.1} MiB resident ({:.0} bytes per lease)",
        store.leases().len(),
        grown as f64 / (1024.0 * 1024.0),
        grown as f64 / options.leases.max(1) as f64
    );
}
