//! Recovery after a real network partition of `corekv server` processes: node 1 cut from
//! everyone (its outgoing packets dropped by cgroup, its ports' incoming ones by port,
//! with iptables on loopback) for much longer than an election, then healed. The node
//! must know every group's leader again and take writes within a bound that does not
//! depend on how long the partition lasted.
//!
//! Needs root and iptables with the cgroup match; without them the test says so and
//! passes without running (CI runs as root and installs iptables).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestCluster, SMALL_SEGMENT_ARGS};
use corekv::client::{Client, ClientOptions};
use corekv::keyspace::group_of;

const GROUPS: u64 = 8;
/// Long enough that the kernel's retransmissions on a connection kept open across the
/// partition back off to several seconds apart.
const PARTITION: Duration = Duration::from_secs(15);
/// Election timeout of the harness's servers: 10 ticks of 20 ms, randomized up to twice.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(400);
/// After the heal, node 1 must serve again within this: the transport reconnects within
/// its backoff's maximum (1 s) and a heartbeat follows. Loose for a shared machine; a
/// link left to the kernel's retransmission backoff takes far longer after this
/// partition.
const RECOVERY_MAX: Duration = Duration::from_secs(5);

/// iptables rules that cut one node of a loopback cluster off, removed on drop.
struct Cut {
    rules: Vec<Vec<String>>,
    cgroup: std::path::PathBuf,
}

fn iptables(arguments: &[String]) -> bool {
    Command::new("iptables")
        .args(arguments)
        .status()
        .is_ok_and(|status| status.success())
}

impl Cut {
    /// Cuts process `pid`, which listens on `ports`, off from every other process on
    /// loopback; `None` when this machine cannot (not root, no iptables or cgroup v2).
    fn isolate(pid: u32, ports: &[u16]) -> Option<Cut> {
        let unified = std::path::Path::new("/sys/fs/cgroup/unified");
        let root = if unified.join("cgroup.procs").exists() {
            unified.to_path_buf()
        } else {
            std::path::PathBuf::from("/sys/fs/cgroup")
        };
        let name = format!("corekv-test-cut-{}", std::process::id());
        let cgroup = root.join(&name);
        std::fs::create_dir_all(&cgroup).ok()?;
        // Every thread of the server moves with its process.
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).ok()?;
        let tag = ["-m", "comment", "--comment", &name].map(String::from);
        let mut rules: Vec<Vec<String>> = vec![["OUTPUT", "-m", "cgroup", "--path", &name]
            .iter()
            .map(|s| s.to_string())
            .chain(tag.clone())
            .chain(["-j", "DROP"].map(String::from))
            .collect()];
        for port in ports {
            rules.push(
                [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "tcp",
                    "--dport",
                    &port.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .chain(tag.clone())
                .chain(["-j", "DROP"].map(String::from))
                .collect(),
            );
        }
        let mut cut = Cut {
            rules: Vec::new(),
            cgroup,
        };
        for rule in rules {
            let mut add = vec!["-A".to_string()];
            add.extend(rule.iter().cloned());
            if !iptables(&add) {
                return None;
            }
            cut.rules.push(rule);
        }
        Some(cut)
    }

    fn heal(&mut self) {
        for rule in self.rules.drain(..) {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule);
            iptables(&delete);
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.heal();
        // The process leaves the cgroup when it exits; the cgroup goes once empty.
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
        let parent = self.cgroup.parent().map(|path| path.join("cgroup.procs"));
        for pid in procs.lines() {
            if let Some(parent) = &parent {
                let _ = std::fs::write(parent, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// One key in each group.
fn key_per_group() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; GROUPS as usize];
    let mut index = 0;
    while keys.iter().any(Option::is_none) {
        let key = format!("heal/{index}");
        let slot = &mut keys[group_of(key.as_bytes(), GROUPS) as usize];
        if slot.is_none() {
            *slot = Some(key);
        }
        index += 1;
    }
    keys.into_iter().flatten().collect()
}

// After a partition of many election timeouts, the cut node knows every group's leader
// and takes writes for every group within a bound independent of the partition's length.
#[test]
fn a_long_partition_heals_within_a_bound() {
    let cluster = TestCluster::start_with("heal", 3, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let pid = cluster.nodes[0].child.as_ref().expect("running").id();
    let node = &cluster.nodes[0];
    let ports = [node.client.port(), node.peer.port()];
    let Some(mut cut) = Cut::isolate(pid, &ports) else {
        println!("skipped: cutting a process off needs root, iptables and cgroup v2");
        return;
    };
    let others = Client::connect(
        &[cluster.endpoint(2), cluster.endpoint(3)],
        client_options(),
    )
    .expect("connect");
    let keys = key_per_group();
    let partition = partition_length();
    let started = Instant::now();
    // The majority serves throughout; writes keep data in flight to node 1 meanwhile.
    while started.elapsed() < partition {
        for key in &keys {
            others.put(key, b"during").expect("the majority serves");
        }
    }
    cut.heal();
    let healed = Instant::now();

    // Node 1 serves again: it names a live leader for every group, agreed by all, and a
    // client given only node 1 writes to every group.
    cluster.wait_for_leaders();
    let knows_leaders = healed.elapsed();
    let through_one = Client::connect(&[cluster.endpoint(1)], client_options()).expect("connect");
    for key in &keys {
        through_one.put(key, b"after").expect("node 1 serves");
    }
    let serves = healed.elapsed();
    println!(
        "partition of {partition:?}: node 1 knew every leader {knows_leaders:?} after the heal, \
         wrote to every group through it after {serves:?} (election timeout up to \
         {ELECTION_TIMEOUT_MAX:?})"
    );
    // For tools/heal-recovery.sh.
    println!(
        "heal-recovery partition_ms={} leaders_ms={} writes_ms={}",
        partition.as_millis(),
        knows_leaders.as_millis(),
        serves.as_millis()
    );
    assert!(
        serves < RECOVERY_MAX,
        "node 1 served every group {serves:?} after the heal"
    );
    drop(cut);
}

/// [`PARTITION`], or `COREKV_HEAL_PARTITION_MS` (tools/heal-recovery.sh measures several).
fn partition_length() -> Duration {
    std::env::var("COREKV_HEAL_PARTITION_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .map_or(PARTITION, Duration::from_millis)
}

fn client_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}
