//! Clients of real `corekv server` processes while some nodes are stopped (SIGSTOP: the
//! kernel still accepts their connections, nothing answers): a client given only the live
//! nodes never waits for a stopped one, `--timeout` bounds a whole CLI command, and an
//! error names the node that failed.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::client::{Client, ClientError, ClientOptions, ATTEMPT_TIMEOUT_DEFAULT};
use corekv::keyspace::group_of;
use corekv::raft::NO_NODE;

const GROUPS: u64 = 8;
/// The CLI's exit status for "unavailable or timed out" (see `corekv --help`).
const EXIT_UNAVAILABLE: i32 = 4;
/// The CLI's exit status for "a write's outcome is unknown".
const EXIT_OUTCOME_UNKNOWN: i32 = 5;
/// Slack over a command's `--timeout` for starting the process and printing: generous,
/// since the bound is about correctness (no inner wait outlives the budget), not speed.
const COMMAND_SLACK: Duration = Duration::from_millis(1500);

/// One key in each group, so that every group's leader is asked.
fn key_per_group(prefix: &str) -> BTreeMap<u64, String> {
    let mut keys = BTreeMap::new();
    let mut index = 0;
    while keys.len() < GROUPS as usize {
        let key = format!("{prefix}{index}");
        keys.entry(group_of(key.as_bytes(), GROUPS)).or_insert(key);
        index += 1;
    }
    keys
}

/// Runs the CLI and returns its output and how long it took.
fn corekv(arguments: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .args(arguments)
        .output()
        .expect("the corekv binary runs");
    (output, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until every one of `live` names a leader among `live` for every group, all
/// agreeing.
fn wait_for_leaders_among(cluster: &TestCluster, live: &[u64]) {
    wait_for("leaders among the live nodes", || {
        let mut leaders = BTreeMap::new();
        for &id in live {
            let status = cluster.status(id)?;
            if status.groups.len() as u64 != GROUPS {
                return None;
            }
            for group in status.groups {
                if !live.contains(&group.leader) {
                    return None;
                }
                if *leaders.entry(group.group_id).or_insert(group.leader) != group.leader {
                    return None;
                }
            }
        }
        Some(())
    });
}

// With node 1 stopped, an SDK client and the CLI given only nodes 3 and 2 write and read
// every group without ever waiting for node 1, and never send to it.
#[test]
fn clients_of_the_live_nodes_do_not_wait_for_a_stopped_one() {
    let cluster = TestCluster::start_with("clients-live", 3, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster.signal(1, "-STOP");
    wait_for_leaders_among(&cluster, &[2, 3]);
    let given = vec![cluster.endpoint(3), cluster.endpoint(2)];

    let client = Client::connect(&given, ClientOptions::default()).expect("connect");
    let mut slowest = Duration::ZERO;
    for (group, key) in key_per_group("live/") {
        let started = Instant::now();
        client
            .put(&key, b"v")
            .unwrap_or_else(|error| panic!("put {key}: {error}"));
        let read = client
            .get(&key)
            .unwrap_or_else(|error| panic!("get {key}: {error}"));
        assert_eq!(
            read.map(|pair| pair.value),
            Some(b"v".to_vec()),
            "group {group}"
        );
        slowest = slowest.max(started.elapsed());
    }
    println!("slowest put + get through nodes 3 and 2: {slowest:?}");
    // An attempt sent to the stopped node would wait a whole attempt timeout.
    assert!(
        slowest < ATTEMPT_TIMEOUT_DEFAULT,
        "a put and get took {slowest:?}: some attempt waited for the stopped node"
    );
    assert!(
        !client.node_addresses().contains(&cluster.endpoint(1)),
        "the client knows the stopped node: {:?}",
        client.node_addresses()
    );

    let endpoints = given.join(",");
    for (group, key) in key_per_group("cli/") {
        let (put, took) = corekv(&[
            "put",
            &key,
            "x",
            "--endpoints",
            &endpoints,
            "--timeout",
            "1s",
        ]);
        assert!(
            put.status.success(),
            "put of group {group} through nodes 3 and 2 failed after {took:?}: {}",
            text(&put.stderr)
        );
        let (get, took) = corekv(&["get", &key, "--endpoints", &endpoints, "--timeout", "1s"]);
        assert!(
            get.status.success(),
            "get of group {group} failed after {took:?}: {}",
            text(&get.stderr)
        );
        assert!(text(&get.stdout).contains('x'), "{}", text(&get.stdout));
    }
    // A fresh CLI that names the stopped node first waits for it once, while connecting
    // (a share of its budget), and then skips it.
    let with_stopped_first = format!("{},{endpoints}", cluster.endpoint(1));
    for (group, key) in key_per_group("first/") {
        let (put, took) = corekv(&[
            "put",
            &key,
            "y",
            "--endpoints",
            &with_stopped_first,
            "--timeout",
            "2s",
        ]);
        assert!(
            put.status.success(),
            "put of group {group} with the stopped node named first failed after {took:?}: {}",
            text(&put.stderr)
        );
    }
    cluster.signal(1, "-CONT");
}

// With the majority stopped, `--timeout T` bounds the whole command, the connection to a
// stopped endpoint that comes first included.
#[test]
fn timeout_bounds_the_whole_command() {
    let cluster = TestCluster::start_with("clients-timeout", 3, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster.signal(2, "-STOP");
    cluster.signal(3, "-STOP");
    let timeout = Duration::from_secs(3);
    let endpoints = format!("{},{}", cluster.endpoint(2), cluster.endpoint(1));
    let bound = timeout + COMMAND_SLACK;
    for command in [
        vec!["put", "t/k", "v"],
        vec!["get", "t/k"],
        vec!["scan", "t/"],
    ] {
        let mut arguments = command.clone();
        arguments.extend(["--endpoints", &endpoints, "--timeout", "3s"]);
        let (output, took) = corekv(&arguments);
        println!(
            "{command:?} with the majority stopped: {took:?}, {:?}",
            output.status
        );
        // A put sent to the stopped node may have been delivered: its outcome is unknown.
        let allowed: &[i32] = if command[0] == "put" {
            &[EXIT_UNAVAILABLE, EXIT_OUTCOME_UNKNOWN]
        } else {
            &[EXIT_UNAVAILABLE]
        };
        let code = output.status.code().expect("an exit code");
        assert!(
            allowed.contains(&code),
            "{command:?} exited {code}: {}",
            text(&output.stderr)
        );
        assert!(
            took < bound,
            "{command:?} with --timeout {timeout:?} took {took:?}: {}",
            text(&output.stderr)
        );
    }
    cluster.signal(2, "-CONT");
    cluster.signal(3, "-CONT");
}

// A client whose only endpoint is node 3, with nodes 1 and 2 stopped, fails naming node
// 3 (which has no leader), not a node it was never given.
#[test]
fn errors_name_the_node_that_failed() {
    let cluster = TestCluster::start_with("clients-blame", 3, 1, GROUPS, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster.signal(1, "-STOP");
    cluster.signal(2, "-STOP");
    wait_for("node 3 to know no leader of any group", || {
        let status = cluster.status(3)?;
        status
            .groups
            .iter()
            .all(|group| group.leader == NO_NODE)
            .then_some(())
    });
    let (one, two, three) = (
        cluster.endpoint(1),
        cluster.endpoint(2),
        cluster.endpoint(3),
    );

    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let client = Client::connect(std::slice::from_ref(&three), options).expect("connect");
    let error = client.put("b/k", b"v").expect_err("no leader anywhere");
    let message = error.to_string();
    println!("the SDK's error: {message}");
    assert!(
        matches!(
            error,
            ClientError::Timeout { .. } | ClientError::Unavailable { .. }
        ),
        "{error:?}"
    );
    assert!(
        message.contains(&three) && message.contains("node 3"),
        "{message}"
    );
    assert!(
        !message.contains(&one) && !message.contains(&two),
        "{message}"
    );

    let (output, _) = corekv(&["put", "b/k", "v", "--endpoints", &three, "--timeout", "2s"]);
    let stderr = text(&output.stderr);
    println!("the CLI's error: {stderr}");
    assert_eq!(output.status.code(), Some(EXIT_UNAVAILABLE), "{stderr}");
    assert!(stderr.contains(&three), "{stderr}");
    assert!(!stderr.contains(&one) && !stderr.contains(&two), "{stderr}");
    cluster.signal(1, "-CONT");
    cluster.signal(2, "-CONT");
}
