//! Faults on a cluster of real `corekv server` processes: a leader killed with SIGKILL
//! under steady writes and reads, a follower down long enough to need a snapshot, and
//! the whole cluster stopped (SIGTERM and SIGKILL) and started again. Every write the SDK
//! acknowledged must survive each of them, and the history of every operation must be
//! linearizable.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::history::Recorder;
use common::workload::{spawn_put_get_clients, OwnedKeys};
use common::{wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::check::ClientId;
use corekv::client::Client;

/// The failover test's keys: each of its two client threads cycles through its own, so
/// that keys are overwritten, and reads those of the other.
const FAILOVER_KEYS: OwnedKeys = OwnedKeys {
    prefix: "w/",
    writers: 2,
    keys_per_writer: 32,
};
/// Election timeout of the harness's servers: 10 ticks of 20 ms, randomized up to twice.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(400);
/// New leaders must be in place within this many election timeouts after a kill. Loose
/// on purpose: the test machine is shared and debug builds are slow.
const FAILOVER_ELECTION_TIMEOUTS_MAX: u32 = 10;
/// The history's client ids of the failover test's scan and final reads (the client
/// threads are `0..FAILOVER_KEYS.writers`).
const SCANNER: ClientId = ClientId(FAILOVER_KEYS.writers);
const FINAL_READER: ClientId = ClientId(FAILOVER_KEYS.writers + 1);

fn acknowledged_puts(recorder: &Recorder) -> u64 {
    recorder.counts().writes_completed
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

// Killing the leader of some groups with SIGKILL under steady writes and reads, then
// stopping another with SIGTERM: new leaders within a few election timeouts, no
// acknowledged write lost, a linearizable history, and the restarted nodes catch up.
#[test]
fn killed_leader_loses_no_acknowledged_write() {
    let replay =
        "replay with cargo test --release --test server_faults killed_leader_loses_no_acknowledged_write";
    let mut cluster = TestCluster::start_with("failover", 3, 2, 8, &SMALL_SEGMENT_ARGS);
    let leaders = cluster.wait_for_leaders();
    let victim = busiest_leader(&leaders);
    let led: Vec<u64> = leaders
        .iter()
        .filter(|&(_, &leader)| leader == victim)
        .map(|(&group, _)| group)
        .collect();

    let client = Arc::new(cluster.client());
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let threads = spawn_put_get_clients(&client, &recorder, FAILOVER_KEYS, &stop);
    wait_for("the first 100 acknowledged puts", || {
        (acknowledged_puts(&recorder) >= 100).then_some(())
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
    let before = acknowledged_puts(&recorder);
    wait_for("100 more acknowledged puts after the failover", || {
        (acknowledged_puts(&recorder) >= before + 100).then_some(())
    });
    // With one node down, a scan still sees every key through the other two.
    let keys: Vec<Vec<u8>> = FAILOVER_KEYS
        .all()
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let scanned = recorder
        .scan_prefix(&client, SCANNER, b"w/", &keys)
        .expect("scan with a node down");
    assert_eq!(scanned.kvs.len(), keys.len());

    // The killed node comes back under load; then another leader stops gracefully.
    cluster.launch(victim);
    cluster.wait_for_catch_up(victim);
    let leaders = cluster.wait_for_leaders();
    let stopped = busiest_leader(&leaders);
    let before = acknowledged_puts(&recorder);
    let status = cluster.terminate(stopped).expect("running");
    assert!(
        status.success(),
        "node {stopped} exited with {status} after SIGTERM"
    );
    wait_for("100 more acknowledged puts after the graceful stop", || {
        (acknowledged_puts(&recorder) >= before + 100).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("client thread");
    }
    let during = recorder.counts();
    println!(
        "{} acknowledged puts, {} reads, {} not applied, {} unknown",
        during.writes_completed, during.reads_completed, during.not_applied, during.unknown
    );
    assert!(
        during.reads_completed > 0,
        "no read succeeded while the faults ran"
    );
    let final_values = recorder.read_final_values(&client, FINAL_READER, &FAILOVER_KEYS.all());
    recorder.assert_linearizable(replay);

    cluster.launch(stopped);
    cluster.wait_for_catch_up(stopped);
    cluster.wait_for_catch_up(victim);
    for id in [victim, stopped] {
        for (key, value) in &final_values {
            let local = cluster.local_get(id, key.as_bytes()).map(|pair| pair.value);
            assert_eq!(&local, value, "node {id}'s own replica, key {key}");
        }
    }
}

/// Writer threads of the lagging follower test; in the history, writer `n` is client `n`
/// and the reads the follower serves come from `FOLLOWER_READER`.
const SNAPSHOT_WRITERS: u64 = 4;
const FOLLOWER_READER: ClientId = ClientId(SNAPSHOT_WRITERS);

// A follower down while its groups compact past its log catches up from snapshots, and
// then serves linearizable reads of everything written, before and while it was down.
#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let replay =
        "replay with cargo test --release --test server_faults lagging_follower_catches_up_from_a_snapshot";
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    args.extend(["--snapshot-entries", "50"]);
    let mut cluster = TestCluster::start_with("snapshot", 3, 1, 4, &args);
    cluster.wait_for_leaders();
    let client = Arc::new(cluster.client());
    let recorder = Arc::new(Recorder::new());
    for index in 0..20 {
        recorder
            .put(&client, ClientId(0), format!("before/{index:03}"), "b")
            .expect("put");
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
    let writers: Vec<_> = (0..SNAPSHOT_WRITERS)
        .map(|writer| {
            let (client, recorder) = (client.clone(), recorder.clone());
            thread::spawn(move || {
                for index in 0..100 {
                    recorder
                        .put(
                            &client,
                            ClientId(writer),
                            format!("during/{writer}/{index:03}"),
                            format!("{index}"),
                        )
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
    for writer in 0..SNAPSHOT_WRITERS {
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
    // The restored follower serves linearizable reads of every key itself.
    let endpoint = cluster.endpoint(follower);
    let keys = (0..20).map(|index| format!("before/{index:03}")).chain(
        (0..SNAPSHOT_WRITERS)
            .flat_map(|writer| (0..100).map(move |index| format!("during/{writer}/{index:03}"))),
    );
    for key in keys {
        let value = recorder
            .raw_get(FOLLOWER_READER, &endpoint, key.as_bytes())
            .unwrap_or_else(|error| {
                panic!("node {follower}: a linearizable read of {key}: {error:?}")
            });
        assert!(value.is_some(), "node {follower} reads no {key}");
    }
    recorder.assert_linearizable(replay);
}

/// Puts `count` keys `<prefix>/<n>`, recorded as `client`'s, and returns them with their
/// values.
fn put_keys(
    recorder: &Recorder,
    sdk: &Client,
    client: ClientId,
    prefix: &str,
    count: usize,
) -> BTreeMap<String, String> {
    (0..count)
        .map(|index| {
            let key = format!("{prefix}/{index:04}");
            let value = format!("{prefix}-value-{index}");
            recorder
                .put(sdk, client, &key, &value)
                .unwrap_or_else(|error| panic!("put {key}: {error}"));
            (key, value)
        })
        .collect()
}

fn assert_all_present(
    recorder: &Recorder,
    sdk: &Client,
    client: ClientId,
    expected: &BTreeMap<String, String>,
) {
    for (key, value) in expected {
        let found = recorder
            .get(sdk, client, key)
            .unwrap_or_else(|error| panic!("get {key}: {error}"));
        assert_eq!(found, Some(value.as_bytes().to_vec()), "{key}");
    }
}

// The whole cluster stopped with SIGTERM exits cleanly and comes back with every
// acknowledged write; stopped with SIGKILL, it comes back with them too; the history
// across the restarts is linearizable.
#[test]
fn whole_cluster_restarts_with_its_data() {
    let replay =
        "replay with cargo test --release --test server_faults whole_cluster_restarts_with_its_data";
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    // Small enough that restarts recover groups from snapshot files plus the WAL.
    args.extend(["--snapshot-entries", "20"]);
    let mut cluster = TestCluster::start_with("restart", 3, 2, 8, &args);
    cluster.wait_for_leaders();
    let recorder = Recorder::new();
    // One client id per SDK client: each start of the cluster gets a new one.
    let mut expected = put_keys(&recorder, &cluster.client(), ClientId(0), "first", 200);

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
    assert_all_present(&recorder, &client, ClientId(1), &expected);
    expected.extend(put_keys(&recorder, &client, ClientId(1), "second", 100));
    drop(client);

    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_leaders();
    let client = cluster.client();
    assert_all_present(&recorder, &client, ClientId(2), &expected);
    let keys: Vec<Vec<u8>> = expected.keys().map(|key| key.as_bytes().to_vec()).collect();
    let scanned = recorder
        .scan_prefix(&client, ClientId(2), b"", &keys)
        .expect("scan everything");
    assert_eq!(scanned.kvs.len(), expected.len());
    recorder.assert_linearizable(replay);
}
