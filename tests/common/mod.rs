//! Process-level test support: a cluster of real `corekv server` processes on loopback,
//! each with its own data directory, that tests start, kill -9, stop and restart.

#![allow(dead_code)]

pub mod history;
pub mod workload;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use corekv::api::{self, ApiRequest, ApiResponse, ApiResult, RequestKind, StatusInfo};
use corekv::client::{Client, ClientOptions};
use corekv::frame::{self, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use corekv::kv::{self, Command as KvCommand, KeyValue, OpResponse, RangeRequest};
use corekv::raft::{NodeId, Role, NO_NODE};

/// How long a test waits for a cluster to get where it must before it fails.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often a wait re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Small WAL segments: a new segment is pre-zeroed before the node serves, and 64 MiB
/// of zeroes per shard makes a start slow on a busy test machine.
pub const SMALL_SEGMENT_ARGS: [&str; 2] = ["--wal-segment-bytes", "4194304"];
/// Bound on one raw call to a node (a status, a serializable read, a bad frame).
pub const RAW_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of each node's log printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 40;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Test ports come from below the kernel's ephemeral range (32768 and up by default):
/// a port in that range can be taken as the source port of some outgoing connection
/// while its node is down, and the node could not listen on it again when it restarts.
const TEST_PORTS_FIRST: u16 = 10_000;
const TEST_PORTS_END: u16 = 32_000;
/// Ports one test binary starts from apart from another's, by process id.
const TEST_PORTS_PER_BINARY: u16 = 200;

/// `count` consecutive free ports on 127.0.0.1.
fn free_ports(count: u16) -> u16 {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        // Spread concurrent test binaries over the range by process id.
        let slots = u32::from((TEST_PORTS_END - TEST_PORTS_FIRST) / TEST_PORTS_PER_BINARY);
        let slot = (std::process::id() % slots) as u16;
        let start = TEST_PORTS_FIRST + slot * TEST_PORTS_PER_BINARY;
        let _ = NEXT_PORT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let base = NEXT_PORT.fetch_add(count, Ordering::Relaxed);
        // Past the end, wrap around to the start of the range: the ports a binary used
        // first are free again by then, or the bind check below skips them.
        if base + count > TEST_PORTS_END {
            let _ = NEXT_PORT.compare_exchange(
                base + count,
                TEST_PORTS_FIRST,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            continue;
        }
        let all_free =
            (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
}

/// The `corekv` executable the servers run: this build's, or `COREKV_SERVER_BINARY`
/// (a tool measuring another build, e.g. `tools/heal-recovery.sh --binary`).
pub fn server_binary() -> PathBuf {
    std::env::var_os("COREKV_SERVER_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_corekv")))
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
        let root = std::env::temp_dir().join(format!("corekv-test-{name}-{}", std::process::id()));
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
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        let initial_clients = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.client))
            .collect::<Vec<_>>()
            .join(",");
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
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .expect("known node")
    }

    /// The command line that starts node `id`.
    pub fn server_command(&self, id: u64) -> Command {
        let node = self
            .nodes
            .iter()
            .find(|node| node.id == id)
            .expect("known node");
        let mut command = Command::new(server_binary());
        command
            .arg("server")
            .args(["--node-id", &id.to_string()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-clients", &self.initial_clients])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--shards", &self.shards.to_string()])
            .args(["--groups", &self.groups.to_string()])
            .args([
                "--tick-ms",
                "20",
                "--election-ticks",
                "10",
                "--heartbeat-ticks",
                "2",
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Where node `id`'s stderr goes, across all of its starts.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// Everything node `id` wrote to stderr so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub fn launch(&mut self, id: u64) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("node log file");
        let mut command = self.server_command(id);
        command.stderr(log);
        let child = command.spawn().expect("start corekv server");
        self.node_mut(id).child = Some(child);
    }

    /// Runs node `id` to completion (for starts that must fail) and returns its exit
    /// status and stderr.
    pub fn run_to_exit(&self, id: u64, extra_args: &[&str]) -> (ExitStatus, String) {
        let mut command = self.server_command(id);
        command.args(extra_args).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start corekv server");
        let deadline = Instant::now() + WAIT_MAX;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} kept running; it was expected to refuse to start");
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
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
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
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

    /// Ids of the nodes this harness started and has not stopped.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.id)
            .collect()
    }

    /// SIGTERM to every running node at once, then waits for each; returns each node's
    /// exit status.
    pub fn terminate_all(&mut self) -> Vec<(u64, ExitStatus)> {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let ids = self.live_ids();
        ids.into_iter()
            .map(|id| (id, self.terminate(id).expect("a running node")))
            .collect()
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match self.node_mut(id).child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Client endpoints of the nodes that are running (or all, with `all`).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.client.to_string())
            .collect()
    }

    pub fn endpoint(&self, id: u64) -> String {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .expect("known node")
            .client
            .to_string()
    }
}

impl TestCluster {
    /// A client that knows every node.
    pub fn client(&self) -> Client {
        connect(&self.endpoints())
    }

    /// A client given only node `id`'s endpoint (it learns the others from its status).
    pub fn client_of(&self, id: u64) -> Client {
        connect(&[self.endpoint(id)])
    }

    /// Node `id`'s status, asked on a fresh connection; `None` when it does not answer.
    pub fn status(&self, id: u64) -> Option<StatusInfo> {
        let request = ApiRequest {
            request_id: 1,
            kind: RequestKind::Status,
        };
        match raw_call(&self.endpoint(id), &request) {
            Ok(ApiResponse {
                result: Ok(ApiResult::Status(status)),
                ..
            }) => Some(status),
            _ => None,
        }
    }

    /// Each group's leader, when every running node answers its status, names a leader
    /// for every group, and all of them agree on it.
    pub fn agreed_leaders(&self) -> Option<BTreeMap<u64, NodeId>> {
        let live = self.live_ids();
        let mut leaders: BTreeMap<u64, NodeId> = BTreeMap::new();
        for id in &live {
            let status = self.status(*id)?;
            if status.groups.len() as u64 != self.groups {
                return None;
            }
            for group in status.groups {
                if group.leader == NO_NODE || !live.contains(&group.leader) {
                    return None;
                }
                if group.leader == *id && group.role != Some(Role::Leader) {
                    return None;
                }
                if *leaders.entry(group.group_id).or_insert(group.leader) != group.leader {
                    return None;
                }
            }
        }
        Some(leaders)
    }

    /// Waits until every running node serves and agrees on a live leader for every group.
    pub fn wait_for_leaders(&self) -> BTreeMap<u64, NodeId> {
        wait_for(
            "a leader for every group, agreed by every running node",
            || self.agreed_leaders(),
        )
    }

    /// Waits until node `id` has applied, in every group, at least what the group's
    /// leader had committed when this was called.
    pub fn wait_for_catch_up(&self, id: u64) {
        let leaders = self.wait_for_leaders();
        let mut targets: BTreeMap<u64, u64> = BTreeMap::new();
        for (&group, &leader) in &leaders {
            let status = wait_for("the leader's status", || self.status(leader));
            let commit = status
                .groups
                .iter()
                .find(|found| found.group_id == group)
                .expect("the leader hosts the group")
                .commit;
            targets.insert(group, commit);
        }
        wait_for(
            &format!("node {id} to apply up to its leaders' commit"),
            || {
                let status = self.status(id)?;
                targets
                    .iter()
                    .all(|(&group, &commit)| {
                        status
                            .groups
                            .iter()
                            .any(|found| found.group_id == group && found.applied >= commit)
                    })
                    .then_some(())
            },
        );
    }

    /// Sends signal `name` (as `kill` spells it: `-STOP`, `-CONT`) to node `id`.
    pub fn signal(&self, id: u64, name: &str) {
        let node = self
            .nodes
            .iter()
            .find(|node| node.id == id)
            .expect("known node");
        let pid = node.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits until every node but `old_leader` names one and the same new leader of
    /// `group` (which says so itself), and returns it.
    pub fn wait_for_new_leader(&self, group: u64, old_leader: NodeId) -> NodeId {
        let others: Vec<u64> = self
            .nodes
            .iter()
            .map(|node| node.id)
            .filter(|&id| id != old_leader)
            .collect();
        wait_for("a new leader among the others", || {
            let mut seen = std::collections::BTreeSet::new();
            for &id in &others {
                let status = self.status(id)?;
                let state = status.groups.iter().find(|found| found.group_id == group)?;
                if state.leader == NO_NODE || state.leader == old_leader {
                    return None;
                }
                if state.leader == id && state.role != Some(Role::Leader) {
                    return None;
                }
                seen.insert(state.leader);
            }
            (seen.len() == 1).then(|| *seen.first().expect("one"))
        })
    }

    /// A serializable read of `key` served by node `id`'s own replica.
    pub fn local_get(&self, id: u64, key: &[u8]) -> Option<KeyValue> {
        let request = ApiRequest {
            request_id: 7,
            kind: RequestKind::Kv {
                command: KvCommand {
                    client_id: 0,
                    seq: 0,
                    op: kv::Op::Range(RangeRequest::get(key)),
                },
                serializable: true,
                group: None,
                seen_revision: 0,
            },
        };
        let response = raw_call(&self.endpoint(id), &request).expect("node answers");
        match response.result {
            Ok(ApiResult::Kv(kv::Response {
                op: OpResponse::Range(range),
                ..
            })) => range.kvs.into_iter().find(|pair| pair.key == key),
            other => panic!("node {id}: a serializable read of {key:?} answered {other:?}"),
        }
    }
}

/// The seed of a randomized test: `COREKV_TEST_SEED` when set (to replay a failure),
/// else taken from the clock. Tests print it. (Not every test binary that includes this
/// module is randomized, hence the allow.)
#[allow(unused_imports)]
pub use corekv::testing::test_seed;

/// Client options for tests: the default retries, a deadline long enough for an election
/// on a busy machine.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// Connects a client, waiting for a node to answer.
pub fn connect(endpoints: &[String]) -> Client {
    wait_for("a client connection", || {
        Client::connect(endpoints, client_options()).ok()
    })
}

/// Sends `request` in one frame on a fresh connection to `endpoint` and reads one
/// response frame back.
pub fn raw_call(endpoint: &str, request: &ApiRequest) -> std::io::Result<ApiResponse> {
    let mut stream = raw_connect(endpoint)?;
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, &api::request_to_bytes(request)).expect("frame fits");
    stream.write_all(&bytes)?;
    let payload = read_frame(&mut stream)?
        .ok_or_else(|| std::io::Error::other("the node closed the connection"))?;
    api::decode_response(&payload).map_err(std::io::Error::other)
}

/// Why a raw read returned no value.
#[derive(Debug)]
pub enum RawReadError {
    /// The node answered with a refusal: it served nothing.
    Refused(api::ApiError),
    /// No answer came: the connection failed or timed out.
    Lost(std::io::Error),
}

/// A linearizable get of one key sent on its own connection to one chosen node, so a
/// test decides which replica serves it (the SDK would pick a node itself).
#[derive(Debug)]
pub struct RawGet {
    stream: TcpStream,
    key: Vec<u8>,
}

impl RawGet {
    /// Connects to `endpoint` and writes the request.
    pub fn send(endpoint: &str, key: &[u8]) -> std::io::Result<RawGet> {
        RawGet::send_on(raw_connect(endpoint)?, key)
    }

    /// Writes the request on `stream`, a connection from [`raw_connect`]. The node may be
    /// stopped, in which case the request waits in its socket until it resumes.
    pub fn send_on(mut stream: TcpStream, key: &[u8]) -> std::io::Result<RawGet> {
        let request = ApiRequest {
            request_id: 9,
            kind: RequestKind::Kv {
                command: KvCommand {
                    client_id: 0,
                    seq: 0,
                    op: kv::Op::Range(RangeRequest::get(key)),
                },
                serializable: false,
                group: None,
                seen_revision: 0,
            },
        };
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, &api::request_to_bytes(&request)).expect("frame fits");
        stream.write_all(&bytes)?;
        Ok(RawGet {
            stream,
            key: key.to_vec(),
        })
    }

    /// Waits for the answer: the key's value (`None`: absent), or why there is none.
    pub fn answer(mut self) -> Result<Option<Vec<u8>>, RawReadError> {
        let payload = read_frame(&mut self.stream)
            .map_err(RawReadError::Lost)?
            .ok_or_else(|| {
                RawReadError::Lost(std::io::Error::other("the node closed the connection"))
            })?;
        let response = api::decode_response(&payload)
            .unwrap_or_else(|error| panic!("an undecodable answer to a read: {error}"));
        match response.result {
            Ok(ApiResult::Kv(kv::Response {
                op: OpResponse::Range(range),
                ..
            })) => Ok(range
                .kvs
                .into_iter()
                .find(|pair| pair.key == self.key)
                .map(|pair| pair.value)),
            Ok(other) => panic!("a read answered {other:?}"),
            Err(error) => Err(RawReadError::Refused(error)),
        }
    }
}

/// A std connection to `endpoint` with [`RAW_CALL_TIMEOUT`] on reads and writes.
pub fn raw_connect(endpoint: &str) -> std::io::Result<TcpStream> {
    let address: SocketAddr = endpoint.parse().expect("an ip:port endpoint");
    let stream = TcpStream::connect_timeout(&address, RAW_CALL_TIMEOUT)?;
    stream.set_read_timeout(Some(RAW_CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(RAW_CALL_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one frame's payload; `None` when the peer closed the connection first.
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    // Exactly one frame's bytes are read, never more, so that frames pipelined behind it
    // stay in the socket for the next call.
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if closed(&error) => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "a response frame of {length} bytes"
        )));
    }
    let mut bytes = header.to_vec();
    bytes.resize(FRAME_HEADER_BYTES + length, 0);
    match stream.read_exact(&mut bytes[FRAME_HEADER_BYTES..]) {
        Ok(()) => {}
        Err(error) if closed(&error) => return Ok(None),
        Err(error) => return Err(error),
    }
    match frame::decode(&bytes, FRAME_BYTES_MAX) {
        Ok(Some(decoded)) => Ok(Some(decoded.payload.to_vec())),
        Ok(None) => Err(std::io::Error::other(
            "a frame shorter than its header says",
        )),
        Err(error) => Err(std::io::Error::other(error)),
    }
}

/// The peer closed the connection (cleanly or with a reset).
fn closed(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test cluster kept at {}", self.root.display());
            for node in &self.nodes {
                let log = self.log(node.id);
                let lines: Vec<&str> = log.lines().collect();
                let start = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
                eprintln!("--- node {} log (last lines) ---", node.id);
                for line in &lines[start..] {
                    eprintln!("{line}");
                }
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            return;
        }
        // A node that panicked is a bug even when the test's own checks passed.
        for node in &self.nodes {
            let log = self.log(node.id);
            assert!(
                !log.contains("panicked"),
                "node {} panicked (cluster kept at {}):\n{log}",
                node.id,
                self.root.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
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
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT_MAX:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
