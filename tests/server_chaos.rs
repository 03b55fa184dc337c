//! Harder faults on real `corekv server` processes: repeated SIGKILLs of random nodes and
//! of the whole cluster while clients write and read, and a leader frozen with SIGSTOP
//! that must not serve a stale linearizable read when it wakes up. Every operation is
//! recorded and the history checked for linearizability.
//!
//! The crash schedule takes its seed from `COREKV_TEST_SEED` when set, else from the
//! clock, and prints it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::Recorder;
use common::workload::{spawn_put_get_clients, OwnedKeys};
use common::{wait_for, RawGet, RawReadError, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::check::{ClientId, Input};
use corekv::client::{Client, ClientOptions};
use corekv::keyspace::group_of;
use corekv::raft::rng::SeededRng;

/// The crash test's keys: each of its client threads writes its own, and reads those
/// of the next.
const CRASH_KEYS: OwnedKeys = OwnedKeys {
    prefix: "c/",
    writers: 3,
    keys_per_writer: 16,
};
/// Single-node crashes before the whole cluster is killed.
const CRASH_ROUNDS: u64 = 3;
/// Acknowledged puts to wait for between two faults.
const PUTS_BETWEEN_FAULTS: u64 = 40;
/// The history's client id of the final reads (the client threads are
/// `0..CRASH_KEYS.writers`).
const FINAL_READER: ClientId = ClientId(CRASH_KEYS.writers);

fn wait_for_puts(recorder: &Recorder, more: u64, what: &str) {
    let before = recorder.counts().writes_completed;
    wait_for(what, || {
        (recorder.counts().writes_completed >= before + more).then_some(())
    });
}

// Random nodes killed with SIGKILL one at a time, then all at once, while clients write
// their own keys and read each other's: the history of every put and get is
// linearizable, every acknowledged write survives and every replica ends with the same
// data.
#[test]
fn repeated_crashes_under_load_lose_nothing() {
    let seed = common::test_seed();
    let replay = format!(
        "seed {seed}; replay with COREKV_TEST_SEED={seed} cargo test --release --test \
         server_chaos repeated_crashes_under_load_lose_nothing"
    );
    println!("crash schedule {replay}");
    let mut random = SeededRng::new(seed);
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    // Snapshots and compactions happen between the crashes, so restarts recover from
    // snapshot files plus the WAL.
    args.extend(["--snapshot-entries", "30"]);
    let mut cluster = TestCluster::start_with("crashes", 3, 2, 8, &args);
    cluster.wait_for_leaders();
    let client = Arc::new(cluster.client());
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let threads = spawn_put_get_clients(&client, &recorder, CRASH_KEYS, &stop);

    wait_for_puts(&recorder, PUTS_BETWEEN_FAULTS, "the first puts");
    for round in 0..CRASH_ROUNDS {
        let victim = random.range(1, 4);
        println!("round {round}: kill -9 node {victim}");
        cluster.kill9(victim);
        cluster.wait_for_leaders();
        wait_for_puts(&recorder, PUTS_BETWEEN_FAULTS, "puts with a node down");
        cluster.launch(victim);
        cluster.wait_for_leaders();
        wait_for_puts(&recorder, PUTS_BETWEEN_FAULTS, "puts after a restart");
    }
    println!("kill -9 every node");
    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    cluster.wait_for_leaders();
    wait_for_puts(
        &recorder,
        PUTS_BETWEEN_FAULTS,
        "puts after the whole cluster restarted",
    );
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("client thread");
    }
    let during = recorder.counts();
    assert!(
        during.reads_completed > 0,
        "no read succeeded while the faults ran; {replay}"
    );
    let final_values = recorder.read_final_values(&client, FINAL_READER, &CRASH_KEYS.all());
    recorder.assert_linearizable(&replay);
    for id in 1..=3 {
        cluster.wait_for_catch_up(id);
        for (key, value) in &final_values {
            let local = cluster.local_get(id, key.as_bytes()).map(|pair| pair.value);
            assert_eq!(&local, value, "node {id}'s own replica, key {key}");
        }
    }
}

/// Rounds of the paused leader test, each on its own key.
const PAUSED_ROUNDS: u64 = 3;
/// The history's client ids of the paused leader test: the SDK, and the raw reads sent to
/// the frozen node.
const SDK_CLIENT: ClientId = ClientId(0);
const RESUMED_READER: ClientId = ClientId(1);
/// Reads sent to the frozen node, each on its own connection, before it resumes.
const READS_WHILE_FROZEN: usize = 8;

// A leader frozen with SIGSTOP while the others elect a new one and take a write must not
// answer a linearizable read with the old value when it resumes: a read sent to it while
// it is frozen, and every read after until it serves one, returns the new value, and the
// history of every round is linearizable.
#[test]
fn paused_leader_serves_no_stale_read() {
    let replay = "replay with cargo test --release --test server_chaos \
                  paused_leader_serves_no_stale_read";
    let cluster = TestCluster::start_with("paused", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let client = Client::connect(&cluster.endpoints(), options).expect("connect");
    let recorder = Recorder::new();
    for round in 0..PAUSED_ROUNDS {
        let key = format!("paused/{round}");
        let group = group_of(key.as_bytes(), cluster.groups);
        let leader = cluster.wait_for_leaders()[&group];
        recorder.put(&client, SDK_CLIENT, &key, "old").expect("put");
        // Every replica has the old value, so only a stale read could return it.
        for id in 1..=3 {
            wait_for("the old value everywhere", || {
                let pair = cluster.local_get(id, key.as_bytes())?;
                (pair.value == b"old").then_some(())
            });
        }
        // Connections the node accepts while it runs: once it resumes, requests on them
        // are as ready to be read as the messages of its peers.
        let endpoint = cluster.endpoint(leader);
        let connections: Vec<_> = (0..READS_WHILE_FROZEN)
            .map(|_| common::raw_connect(&endpoint))
            .collect();
        cluster.signal(leader, "-STOP");
        let new_leader = cluster.wait_for_new_leader(group, leader);
        println!("round {round}: group {group}: froze {leader}, new leader {new_leader}");
        // The client's cached leader is the frozen node: the put must find the new one
        // well before its deadline.
        let started = Instant::now();
        recorder
            .put(&client, SDK_CLIENT, &key, "new")
            .expect("put while the old leader is frozen");
        println!("round {round}: the put took {:?}", started.elapsed());

        // These reads wait in the frozen node's sockets, so the node finds them next to
        // the new leader's messages when it wakes: the moment a stale read could happen.
        let input = Input::Get {
            key: key.as_bytes().to_vec(),
        };
        let sent: Vec<_> = connections
            .into_iter()
            .map(|connection| {
                let id = recorder.invoke(RESUMED_READER, input.clone());
                let sent =
                    connection.and_then(|connection| RawGet::send_on(connection, key.as_bytes()));
                (id, sent)
            })
            .collect();
        cluster.signal(leader, "-CONT");
        let mut served = Vec::new();
        let mut refusals: Vec<RawReadError> = Vec::new();
        for (id, sent) in sent {
            let result = sent.map_err(RawReadError::Lost).and_then(RawGet::answer);
            recorder.end_raw_get(id, &result);
            match result {
                Ok(value) => served.push(value),
                Err(error) => refusals.push(error),
            }
        }
        // Until the resumed node serves a read, it is asked again; a round in which it
        // serves none fails here.
        if served.is_empty() {
            served.push(wait_for(
                "a linearizable read served by the resumed node",
                || match recorder.raw_get(RESUMED_READER, &endpoint, key.as_bytes()) {
                    Ok(value) => Some(value),
                    Err(error) => {
                        refusals.push(error);
                        None
                    }
                },
            ));
        }
        println!(
            "round {round}: node {leader} served {} read(s) and refused {} (first refusal: {:?})",
            served.len(),
            refusals.len(),
            refusals.first()
        );
        for value in &served {
            assert_eq!(
                value.as_deref(),
                Some(b"new".as_slice()),
                "round {round}: node {leader} (leader before node {new_leader}) served a stale \
                 read"
            );
        }
        assert_eq!(
            recorder.get(&client, SDK_CLIENT, &key).expect("get"),
            Some(b"new".to_vec())
        );
    }
    let counts = recorder.assert_linearizable(replay);
    // Per round: the resumed node's read(s) and the SDK's.
    assert!(counts.reads_completed >= 2 * PAUSED_ROUNDS, "{counts:?}");
    // Every node serves again.
    cluster.wait_for_leaders();
}
