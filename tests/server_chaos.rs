//! Harder faults on real `corekv server` processes: repeated SIGKILLs of random nodes and
//! of the whole cluster while writers run, and a leader frozen with SIGSTOP that must not
//! serve a stale linearizable read when it wakes up.
//!
//! The crash schedule takes its seed from `COREKV_TEST_SEED` when set, else from the
//! clock, and prints it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{raw_call, wait_for, TestCluster, SMALL_SEGMENT_ARGS};
use corekv::api::{ApiRequest, ApiResult, RequestKind};
use corekv::client::{Client, ClientError, ClientOptions};
use corekv::keyspace::group_of;
use corekv::kv::{self, Command as KvCommand, OpResponse, RangeRequest};

/// Writer threads of the crash test; each owns its own keys.
const WRITERS: u64 = 3;
/// Keys per writer, overwritten in turn.
const KEYS_PER_WRITER: u64 = 16;
/// Single-node crashes before the whole cluster is killed.
const CRASH_ROUNDS: u64 = 3;
/// Acknowledged puts to wait for between two faults.
const PUTS_BETWEEN_FAULTS: u64 = 40;

/// What the writers were told about each key: the last acknowledged value and every value
/// whose put ended with an unknown outcome (which may apply at any later time).
#[derive(Debug, Default)]
struct History {
    acknowledged: BTreeMap<String, String>,
    unknown: BTreeMap<String, BTreeSet<String>>,
    acknowledged_puts: u64,
}

impl History {
    fn allows(&self, key: &str, found: Option<&str>) -> bool {
        let unknown = self.unknown.get(key);
        match (found, self.acknowledged.get(key)) {
            (Some(value), acknowledged) => {
                acknowledged.map(String::as_str) == Some(value)
                    || unknown.is_some_and(|values| values.contains(value))
            }
            (None, acknowledged) => acknowledged.is_none(),
        }
    }
}

/// xorshift64*: small, seedable, replayable.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

fn wait_for_puts(history: &Mutex<History>, more: u64, what: &str) {
    let before = history.lock().expect("history lock").acknowledged_puts;
    wait_for(what, || {
        (history.lock().expect("history lock").acknowledged_puts >= before + more).then_some(())
    });
}

// Random nodes killed with SIGKILL one at a time, then all at once, while writers run:
// every acknowledged write survives and every replica ends with the same data.
#[test]
fn repeated_crashes_under_load_lose_nothing() {
    let seed = common::test_seed();
    println!("crash schedule seed: {seed} (replay with COREKV_TEST_SEED={seed})");
    let mut random = Random(seed);
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    // Snapshots and compactions happen between the crashes, so restarts recover from
    // snapshot files plus the WAL.
    args.extend(["--snapshot-entries", "30"]);
    let mut cluster = TestCluster::start_with("crashes", 3, 2, 8, &args);
    cluster.wait_for_leaders();
    let client = Arc::new(cluster.client());
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (client, history, stop) = (client.clone(), history.clone(), stop.clone());
            thread::spawn(move || {
                let mut counter = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    counter += 1;
                    let key = format!("c/{writer}/{:02}", counter % KEYS_PER_WRITER);
                    let value = format!("{writer}-{counter}");
                    let result = client.put(&key, &value);
                    let mut history = history.lock().expect("history lock");
                    match result {
                        Ok(_) => {
                            history.acknowledged.insert(key, value);
                            history.acknowledged_puts += 1;
                        }
                        Err(ClientError::OutcomeUnknown { .. }) => {
                            history.unknown.entry(key).or_default().insert(value);
                        }
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();

    wait_for_puts(&history, PUTS_BETWEEN_FAULTS, "the first puts");
    for round in 0..CRASH_ROUNDS {
        let victim = 1 + random.below(3);
        println!("round {round}: kill -9 node {victim}");
        cluster.kill9(victim);
        cluster.wait_for_leaders();
        wait_for_puts(&history, PUTS_BETWEEN_FAULTS, "puts with a node down");
        cluster.launch(victim);
        cluster.wait_for_leaders();
        wait_for_puts(&history, PUTS_BETWEEN_FAULTS, "puts after a restart");
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
        &history,
        PUTS_BETWEEN_FAULTS,
        "puts after the whole cluster restarted",
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }

    let history = history.lock().expect("history lock");
    println!("{} acknowledged puts", history.acknowledged_puts);
    let mut final_values = BTreeMap::new();
    for writer in 0..WRITERS {
        for index in 0..KEYS_PER_WRITER {
            let key = format!("c/{writer}/{index:02}");
            let value = client
                .get(&key)
                .unwrap_or_else(|error| panic!("get {key}: {error}"))
                .map(|pair| String::from_utf8(pair.value).expect("utf-8 values"));
            assert!(
                history.allows(&key, value.as_deref()),
                "{key}: read {value:?}, last acknowledged {:?}, unknown outcomes {:?}",
                history.acknowledged.get(&key),
                history.unknown.get(&key)
            );
            final_values.insert(key, value);
        }
    }
    for id in 1..=3 {
        cluster.wait_for_catch_up(id);
        for (key, value) in &final_values {
            let local = cluster
                .local_get(id, key.as_bytes())
                .map(|pair| String::from_utf8(pair.value).expect("utf-8 values"));
            assert_eq!(&local, value, "node {id}'s own replica, key {key}");
        }
    }
}

/// A linearizable read of `key` served by node `id`: the value, or `Err` with the
/// node's refusal.
fn linearizable_read_on(
    cluster: &TestCluster,
    id: u64,
    key: &[u8],
) -> Result<Option<Vec<u8>>, String> {
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
        },
    };
    let response = raw_call(&cluster.endpoint(id), &request).map_err(|error| error.to_string())?;
    match response.result {
        Ok(ApiResult::Kv(kv::Response {
            op: OpResponse::Range(range),
            ..
        })) => Ok(range
            .kvs
            .into_iter()
            .find(|pair| pair.key == key)
            .map(|pair| pair.value)),
        Ok(other) => panic!("a read answered {other:?}"),
        Err(error) => Err(format!("{error:?}")),
    }
}

// A leader frozen with SIGSTOP while the others elect a new one and take a write must not
// answer a linearizable read with the old value when it resumes.
#[test]
fn paused_leader_serves_no_stale_read() {
    let cluster = TestCluster::start_with("paused", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let client = Client::connect(&cluster.endpoints(), options).expect("connect");
    for round in 0..3u64 {
        let key = format!("paused/{round}");
        let group = group_of(key.as_bytes(), cluster.groups);
        let leader = cluster.wait_for_leaders()[&group];
        client.put(&key, "old").expect("put");
        // Every replica has the old value, so only a stale read could return it.
        for id in 1..=3 {
            wait_for("the old value everywhere", || {
                let pair = cluster.local_get(id, key.as_bytes())?;
                (pair.value == b"old").then_some(())
            });
        }
        cluster.signal(leader, "-STOP");
        let new_leader = cluster.wait_for_new_leader(group, leader);
        println!("round {round}: group {group}: froze {leader}, new leader {new_leader}");
        // The client's cached leader is the frozen node: the put must find the new one
        // well before its deadline.
        let started = Instant::now();
        client
            .put(&key, "new")
            .expect("put while the old leader is frozen");
        println!("round {round}: the put took {:?}", started.elapsed());
        cluster.signal(leader, "-CONT");
        match linearizable_read_on(&cluster, leader, key.as_bytes()) {
            Ok(value) => assert_eq!(
                value.as_deref(),
                Some(b"new".as_slice()),
                "round {round}: node {leader} (leader before node {new_leader}) served a stale read"
            ),
            Err(refusal) => println!("round {round}: the resumed node refused: {refusal}"),
        }
        assert_eq!(
            client.get(&key).expect("get").map(|pair| pair.value),
            Some(b"new".to_vec())
        );
    }
    // Every node serves again.
    cluster.wait_for_leaders();
}
