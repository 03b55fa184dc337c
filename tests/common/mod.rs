//! Process-level test support: a cluster of real `corekv server` processes on loopback,
//! each with its own data directory, that tests start, kill -9, stop and restart.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for a cluster to get where it must before it fails.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often a wait re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// `count` consecutive free ports on 127.0.0.1.
fn free_ports(count: u16) -> u16 {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        // Spread concurrent test binaries over the range by process id.
        let start = 20_000 + (std::process::id() % 2_000) as u16 * 20;
        let _ = NEXT_PORT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let base = NEXT_PORT.fetch_add(count, Ordering::Relaxed);
        assert!(base < 64_000, "ran out of test ports");
        let all_free = (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// One member of a test cluster.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

/// A cluster of server processes.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<Node>,
    pub root: PathBuf,
    pub shards: u32,
    pub groups: u64,
    initial_cluster: String,
    initial_clients: String,
    pub extra_args: Vec<String>,
}

impl TestCluster {
    /// Starts `count` nodes with `shards` shards and `groups` groups each, with fast
    /// ticks so elections take a fraction of a second.
    pub fn start(name: &str, count: u64, shards: u32, groups: u64) -> TestCluster {
        TestCluster::start_with(name, count, shards, groups, &[])
    }

    pub fn start_with(
        name: &str,
        count: u64,
        shards: u32,
        groups: u64,
        extra_args: &[&str],
    ) -> TestCluster {
        let root = std::env::temp_dir()
            .join(format!("corekv-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("test directory");
        let mut nodes = Vec::new();
        for id in 1..=count {
            let client_port = free_ports(1);
            let peer_port = free_ports(shards as u16);
            nodes.push(Node {
                id,
                client: SocketAddr::from(([127, 0, 0, 1], client_port)),
                peer: SocketAddr::from(([127, 0, 0, 1], peer_port)),
                data_dir: root.join(format!("node-{id}")),
                child: None,
            });
        }
        let initial_cluster =
            nodes.iter().map(|n| format!("{}={}", n.id, n.peer)).collect::<Vec<_>>().join(",");
        let initial_clients =
            nodes.iter().map(|n| format!("{}={}", n.id, n.client)).collect::<Vec<_>>().join(",");
        let mut cluster = TestCluster {
            nodes,
            root,
            shards,
            groups,
            initial_cluster,
            initial_clients,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=count {
            cluster.launch(id);
        }
        cluster
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|node| node.id == id).expect("known node")
    }

    /// The command line that starts node `id`.
    pub fn server_command(&self, id: u64) -> Command {
        let node = self.nodes.iter().find(|node| node.id == id).expect("known node");
        let mut command = Command::new(env!("CARGO_BIN_EXE_corekv"));
        command
            .arg("server")
            .args(["--node-id", &id.to_string()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-clients", &self.initial_clients])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--shards", &self.shards.to_string()])
            .args(["--groups", &self.groups.to_string()])
            .args(["--tick-ms", "20", "--election-ticks", "10", "--heartbeat-ticks", "2"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub fn launch(&mut self, id: u64) {
        let mut command = self.server_command(id);
        let child = command.spawn().expect("start corekv server");
        self.node_mut(id).child = Some(child);
    }

    /// SIGKILL: no shutdown, nothing flushed beyond what was already durable.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the process to exit; returns its status.
    pub fn terminate(&mut self, id: u64) -> Option<ExitStatus> {
        let mut child = self.node_mut(id).child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} did not exit within {WAIT_MAX:?} of SIGTERM");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match self.node_mut(id).child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Client endpoints of the nodes that are running (or all, with `all`).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.client.to_string()).collect()
    }

    pub fn endpoint(&self, id: u64) -> String {
        self.nodes.iter().find(|node| node.id == id).expect("known node").client.to_string()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Polls `condition` until it returns `Some`, failing the test with `what` after
/// [`WAIT_MAX`].
pub fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {WAIT_MAX:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}
