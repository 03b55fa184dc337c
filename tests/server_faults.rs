//! Faults on a cluster of real `corekv server` processes: a leader killed with SIGKILL
//! under a steady writer, a follower down long enough to need a snapshot, and the whole
//! cluster stopped (SIGTERM and SIGKILL) and started again. Every write the SDK
//! acknowledged must survive each of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::client::{Client, ClientError};

/// Distinct keys the failover writer cycles through, so that keys are overwritten.
const WRITER_KEYS: u64 = 64;
/// Election timeout of the harness's servers: 10 ticks of 20 ms, randomized up to twice.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(400);
/// New leaders must be in place within this many election timeouts after a kill. Loose
/// on purpose: the test machine is shared and debug builds are slow.
const FAILOVER_ELECTION_TIMEOUTS_MAX: u32 = 10;

/// What one writer thread learned about each key: the value of its last acknowledged put,
/// and every value whose put ended with an unknown outcome (such a put may apply at any
/// later time, so any of those values may also be the final one).
#[derive(Debug, Default)]
struct KeyHistory {
    acknowledged: Option<String>,
    unknown: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct History {
    keys: BTreeMap<String, KeyHistory>,
    acknowledged_puts: u64,
    refused_puts: u64,
}

impl History {
    /// Checks a read of `key` against what the writer was told.
    fn check(&self, key: &str, found: Option<&str>) {
        let Some(history) = self.keys.get(key) else {
            return;
        };
        let allowed = match (found, &history.acknowledged) {
            (Some(value), Some(acknowledged)) => {
                value == acknowledged || history.unknown.contains(value)
            }
            (Some(value), None) => history.unknown.contains(value),
            (None, acknowledged) => acknowledged.is_none(),
        };
        assert!(
            allowed,
            "{key}: read {found:?}, but the last acknowledged value is {:?} (unknown outcomes: \
             {:?})",
            history.acknowledged, history.unknown
        );
    }
}

/// A thread that puts `w/<n>` = `<counter>` until told to stop, recording every outcome.
fn spawn_writer(
    client: Arc<Client>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut counter = 0u64;
        while !stop.load(Ordering::Relaxed) {
            counter += 1;
            let key = format!("w/{:02}", counter % WRITER_KEYS);
            let value = counter.to_string();
            let result = client.put(&key, &value);
            let mut history = history.lock().expect("history lock");
            let entry = history.keys.entry(key).or_default();
            match result {
                Ok(_) => {
                    entry.acknowledged = Some(value);
                    history.acknowledged_puts += 1;
                }
                Err(ClientError::OutcomeUnknown { .. }) => {
                    entry.unknown.insert(value);
                }
                // Not applied: nothing to remember about the value.
                Err(_) => history.refused_puts += 1,
            }
        }
    })
}

fn acknowledged_puts(history: &Mutex<History>) -> u64 {
    history.lock().expect("history lock").acknowledged_puts
}

/// Reads every key the writer touched through `client` and checks each against the
/// history; returns what was read.
fn check_all(client: &Client, history: &History) -> BTreeMap<String, Option<String>> {
    let mut read = BTreeMap::new();
    for key in history.keys.keys() {
        let value = client
            .get(key)
            .unwrap_or_else(|error| panic!("get {key}: {error}"))
            .map(|pair| String::from_utf8(pair.value).expect("utf-8 values"));
        history.check(key, value.as_deref());
        read.insert(key.clone(), value);
    }
    read
}

/// The node that leads the most groups.
fn busiest_leader(leaders: &BTreeMap<u64, u64>) -> u64 {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for &leader in leaders.values() {
        *counts.entry(leader).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(_, count)| count)
        .map(|(id, _)| id)
        .expect("a leader")
}

// Killing the leader of some groups with SIGKILL under a steady writer, then stopping
// another with SIGTERM: new leaders within a few election timeouts, no acknowledged write
// lost, and the restarted nodes catch up.
#[test]
fn killed_leader_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start_with("failover", 3, 2, 8, &SMALL_SEGMENT_ARGS);
    let leaders = cluster.wait_for_leaders();
    let victim = busiest_leader(&leaders);
    let led: Vec<u64> = leaders
        .iter()
        .filter(|&(_, &leader)| leader == victim)
        .map(|(&group, _)| group)
        .collect();

    let client = Arc::new(cluster.client());
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(client.clone(), history.clone(), stop.clone());
    wait_for("the writer's first 100 acknowledged puts", || {
        (acknowledged_puts(&history) >= 100).then_some(())
    });

    cluster.kill9(victim);
    let killed_at = Instant::now();
    let new_leaders = cluster.wait_for_leaders();
    let failover = killed_at.elapsed();
    println!("node {victim} led groups {led:?}; new leaders after {failover:?}: {new_leaders:?}");
    assert!(new_leaders.values().all(|&leader| leader != victim));
    assert!(
        failover < ELECTION_TIMEOUT_MAX * FAILOVER_ELECTION_TIMEOUTS_MAX,
        "new leaders took {failover:?}"
    );
    let before = acknowledged_puts(&history);
    wait_for("100 more acknowledged puts after the failover", || {
        (acknowledged_puts(&history) >= before + 100).then_some(())
    });
    // With one node down, a scan still sees every key through the other two.
    let scanned = client.scan_prefix("w/", 0).expect("scan with a node down");
    assert_eq!(scanned.kvs.len() as u64, WRITER_KEYS);

    // The killed node comes back under load; then another leader stops gracefully.
    cluster.launch(victim);
    cluster.wait_for_catch_up(victim);
    let leaders = cluster.wait_for_leaders();
    let stopped = busiest_leader(&leaders);
    let before = acknowledged_puts(&history);
    let status = cluster.terminate(stopped).expect("running");
    assert!(
        status.success(),
        "node {stopped} exited with {status} after SIGTERM"
    );
    wait_for("100 more acknowledged puts after the graceful stop", || {
        (acknowledged_puts(&history) >= before + 100).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");

    let history = history.lock().expect("history lock");
    println!(
        "{} acknowledged puts, {} refused",
        history.acknowledged_puts, history.refused_puts
    );
    let final_values = check_all(&client, &history);

    cluster.launch(stopped);
    cluster.wait_for_catch_up(stopped);
    cluster.wait_for_catch_up(victim);
    for id in [victim, stopped] {
        for (key, value) in &final_values {
            let local = cluster
                .local_get(id, key.as_bytes())
                .map(|pair| String::from_utf8(pair.value).expect("utf-8 values"));
            assert_eq!(&local, value, "node {id}'s own replica, key {key}");
        }
    }
}

// A follower down while its groups compact past its log catches up from snapshots.
#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    args.extend(["--snapshot-entries", "50"]);
    let mut cluster = TestCluster::start_with("snapshot", 3, 1, 4, &args);
    cluster.wait_for_leaders();
    let client = Arc::new(cluster.client());
    for index in 0..20 {
        client.put(format!("before/{index:03}"), "b").expect("put");
    }
    let follower = 3;
    cluster.wait_for_catch_up(follower);
    let follower_last: BTreeMap<u64, u64> = cluster
        .status(follower)
        .expect("follower status")
        .groups
        .iter()
        .map(|group| (group.group_id, group.last_index))
        .collect();

    cluster.kill9(follower);
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let client = client.clone();
            thread::spawn(move || {
                for index in 0..100 {
                    client
                        .put(format!("during/{writer}/{index:03}"), format!("{index}"))
                        .expect("put");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    // Every group's leader has dropped the entries the follower lacks.
    let leaders = cluster.wait_for_leaders();
    for (&group, &leader) in &leaders {
        let status = cluster.status(leader).expect("leader status");
        let group_status = status
            .groups
            .iter()
            .find(|found| found.group_id == group)
            .expect("hosted");
        assert!(
            group_status.first_index > follower_last[&group] + 1,
            "group {group}: the leader's log starts at {}, the follower has up to {}",
            group_status.first_index,
            follower_last[&group]
        );
    }

    cluster.launch(follower);
    cluster.wait_for_catch_up(follower);
    let status = cluster.status(follower).expect("follower status");
    for group in &status.groups {
        // The follower's log now starts after a snapshot, past everything it had.
        assert!(
            group.first_index > follower_last[&group.group_id] + 1,
            "group {}: {group:?}",
            group.group_id
        );
    }
    for writer in 0..4 {
        for index in 0..100 {
            let key = format!("during/{writer}/{index:03}");
            let pair = cluster
                .local_get(follower, key.as_bytes())
                .unwrap_or_else(|| panic!("node {follower} lacks {key}"));
            assert_eq!(pair.value, index.to_string().as_bytes());
        }
    }
    for index in 0..20 {
        let key = format!("before/{index:03}");
        assert!(
            cluster.local_get(follower, key.as_bytes()).is_some(),
            "{key}"
        );
    }
}

/// Puts `count` keys `<prefix>/<n>` and returns them with their values.
fn put_keys(client: &Client, prefix: &str, count: usize) -> BTreeMap<String, String> {
    (0..count)
        .map(|index| {
            let key = format!("{prefix}/{index:04}");
            let value = format!("{prefix}-value-{index}");
            client
                .put(&key, &value)
                .unwrap_or_else(|error| panic!("put {key}: {error}"));
            (key, value)
        })
        .collect()
}

fn assert_all_present(client: &Client, expected: &BTreeMap<String, String>) {
    for (key, value) in expected {
        let found = client
            .get(key)
            .unwrap_or_else(|error| panic!("get {key}: {error}"));
        assert_eq!(
            found.map(|pair| pair.value),
            Some(value.as_bytes().to_vec()),
            "{key}"
        );
    }
}

// The whole cluster stopped with SIGTERM exits cleanly and comes back with every
// acknowledged write; stopped with SIGKILL, it comes back with them too.
#[test]
fn whole_cluster_restarts_with_its_data() {
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    // Small enough that restarts recover groups from snapshot files plus the WAL.
    args.extend(["--snapshot-entries", "20"]);
    let mut cluster = TestCluster::start_with("restart", 3, 2, 8, &args);
    cluster.wait_for_leaders();
    let mut expected = put_keys(&cluster.client(), "first", 200);

    for (id, status) in cluster.terminate_all() {
        assert!(
            status.success(),
            "node {id} exited with {status} after SIGTERM"
        );
        assert!(
            cluster.log(id).contains("stopped cleanly"),
            "node {id}'s log"
        );
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_leaders();
    let client = cluster.client();
    assert_all_present(&client, &expected);
    expected.extend(put_keys(&client, "second", 100));
    drop(client);

    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_leaders();
    let client = cluster.client();
    assert_all_present(&client, &expected);
    let scanned = client.scan_prefix("", 0).expect("scan everything");
    assert_eq!(scanned.kvs.len(), expected.len());
}
