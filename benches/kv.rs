//! CPU cost of the key-value state machine's hot paths, against plain `BTreeMap` floors
//! measured in the same run.
//!
//! A `Store` is filled with `--keys` keys (default 6,250, the keys of one of 16 groups in
//! a 100k-key workload) of 16 bytes (`key-%012d`, so keys share long prefixes as real ones
//! do) with 256-byte values, and 256 client sessions are opened. Then each phase runs
//! `--ops` operations on random keys, each write carrying a session `(client_id, seq)` of a
//! random client as the server's commands do:
//!
//! - `build`: only builds the commands (a key and a value copied into fresh buffers, as
//!   decoding a log entry does) and drops them: the part of every phase that is not the
//!   store's.
//! - `put`: builds and applies single-key Puts. Floor: `BTreeMap<Vec<u8>, Vec<u8>>::insert`
//!   of the same built key and value.
//! - `get`: builds a one-key Range and serves it with `Store::read`. Floor: a `BTreeMap`
//!   lookup that copies the key and value out, as an answer must.
//! - `scan`: serves a Range of 100 consecutive keys; a phase runs `--ops / 100` of them, so
//!   every phase reads or writes about `--ops` keys. Floor: the `BTreeMap` range copied out.
//! - `delete+put`: alternately deletes a random key and puts it back (two commands per op).
//! - `append`: applies 16-byte Appends.
//!
//! Figures are nanoseconds of this thread's CPU time per op (the machine is shared, so wall
//! time would count other processes too), the cheapest of four rounds, and allocations
//! per op, counted by a wrapper around the system allocator. `ratio` is the phase against
//! its floor. For figures that do not move with the machine's load, count instructions:
//! `valgrind --tool=callgrind target/release/deps/kv-<hash> --ops 100000 --only put`.
//!
//! Run: `cargo bench --bench kv`, or e.g. `cargo bench --bench kv -- --ops 200000 --only put`.

// The counting allocator (benches/support) is an `unsafe impl GlobalAlloc` that forwards
// every call unchanged to `std::alloc::System`; these files are measurement tools.
#![allow(unsafe_code)]

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Parser;
use corekv::kv::{
    AppendRequest, Command, DeleteRequest, Limits, Op, PutRequest, RangeRequest, Store,
};
use corekv::raft::rng::SeededRng;
use counting_allocator::allocations;

/// Bytes of every value the bench writes with a Put.
const VALUE_BYTES: usize = 256;
/// Bytes of every Append.
const APPEND_BYTES: usize = 16;
/// Keys one `scan` op reads; a scan phase runs `--ops / SCAN_KEYS` of them.
const SCAN_KEYS: u64 = 100;
/// Client sessions, ids `1..=CLIENTS`, as a server with 256 connected clients has.
const CLIENTS: u64 = 256;
/// The RNG seed, fixed so runs compare.
const SEED: u64 = 0x6b76_b3c4;

/// Single-key costs of the kv state machine against `BTreeMap` floors.
#[derive(Debug, Parser)]
struct Arguments {
    /// Keys in the store before the phases run.
    #[arg(long, default_value_t = 6_250)]
    keys: u64,
    /// Operations per phase.
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Run only these phases (comma-separated): build, floor-put, put, floor-get, get,
    /// floor-scan, scan, floor-delete+put, delete+put, append.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The crate's SplitMix64 generator with the draws the bench needs.
#[derive(Debug)]
struct Rng {
    inner: SeededRng,
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.inner.next_u64()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Time this thread spent on a CPU (`/proc/thread-self/schedstat`), falling back to wall
/// time where the kernel does not keep that account.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.with(|start| start.elapsed()))
}

thread_local! {
    static START: Instant = Instant::now();
}

/// What one timed phase cost per op.
#[derive(Clone, Copy, Debug)]
struct Cost {
    nanoseconds_per_op: f64,
    allocations_per_op: f64,
}

/// Rounds each phase's ops are split into; the cheapest round is reported, since on a
/// shared machine the others lose time to neighbours' cache and memory traffic.
const ROUNDS: u64 = 4;

/// Runs `body` once per op, in [`ROUNDS`] rounds, and reports the cheapest round.
fn measure(ops: u64, mut body: impl FnMut(u64)) -> Cost {
    let round_ops = ops.div_ceil(ROUNDS);
    let mut best: Option<Cost> = None;
    for round in 0..ROUNDS {
        let allocations_before = allocations();
        let cpu_before = cpu_time();
        for op in round * round_ops..(round + 1) * round_ops {
            body(op);
        }
        let cpu = cpu_time() - cpu_before;
        let allocations = allocations() - allocations_before;
        let cost = Cost {
            nanoseconds_per_op: cpu.as_nanos() as f64 / round_ops as f64,
            allocations_per_op: allocations as f64 / round_ops as f64,
        };
        if best.is_none_or(|best| cost.nanoseconds_per_op < best.nanoseconds_per_op) {
            best = Some(cost);
        }
    }
    best.expect("at least one round")
}

fn key_of(number: u64) -> Vec<u8> {
    format!("key-{number:012}").into_bytes()
}

/// The state the phases share: the keys, a value template, sessions and the log position.
#[derive(Debug)]
struct Workload {
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
    seqs: Vec<u64>,
    index: u64,
    rng: Rng,
}

impl Workload {
    fn new(key_count: u64) -> Workload {
        Workload {
            keys: (0..key_count).map(key_of).collect(),
            value: vec![b'v'; VALUE_BYTES],
            seqs: vec![0; CLIENTS as usize + 1],
            index: 0,
            rng: Rng {
                inner: SeededRng::new(SEED),
            },
        }
    }

    fn random_key(&mut self) -> &[u8] {
        let position = self.rng.below(self.keys.len() as u64) as usize;
        &self.keys[position]
    }

    /// A command of a random client with its next seq; the op's buffers are fresh copies,
    /// as decoding a log entry makes them.
    fn command(&mut self, op: Op) -> Command {
        let client_id = 1 + self.rng.below(CLIENTS);
        let seq = &mut self.seqs[client_id as usize];
        *seq += 1;
        Command {
            client_id,
            seq: *seq,
            op,
        }
    }

    fn put_op(&mut self, key: Vec<u8>) -> Op {
        Op::Put(PutRequest {
            key,
            value: self.value.clone(),
            prev_kv: false,
            lease: 0,
        })
    }

    /// The bounds of a range over [`SCAN_KEYS`] consecutive keys.
    fn random_span(&mut self) -> (Vec<u8>, Vec<u8>) {
        let span = SCAN_KEYS.min(self.keys.len() as u64);
        let first = self.rng.below(self.keys.len() as u64 - span + 1);
        (key_of(first), key_of(first + span))
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }
}

/// Applies a command the way the server does: it owns the decoded command.
fn apply(store: &mut Store, index: u64, command: Command) {
    let outcome = store.apply_owned(index, index, command);
    debug_assert!(outcome.is_ok(), "{outcome:?}");
    let _ = black_box(outcome);
}

fn print_row(name: &str, cost: Cost, floor: Option<Cost>) {
    let ratio = floor.map_or(String::from("-"), |floor| {
        format!("{:.2}", cost.nanoseconds_per_op / floor.nanoseconds_per_op)
    });
    println!(
        "{name:<22} {:>10.1} {:>12.2} {ratio:>8}",
        cost.nanoseconds_per_op, cost.allocations_per_op
    );
}

fn main() {
    let arguments = Arguments::parse();
    assert!(arguments.keys > 0, "--keys must be positive");
    assert!(arguments.ops > 0, "--ops must be positive");
    let runs =
        |phase: &str| arguments.only.is_empty() || arguments.only.iter().any(|only| only == phase);
    let ops = arguments.ops;

    let mut workload = Workload::new(arguments.keys);
    let mut store = Store::new(Limits::default()).expect("default limits are sound");
    let mut floor_map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for position in 0..workload.keys.len() {
        let key = workload.keys[position].clone();
        floor_map.insert(key.clone(), workload.value.clone());
        let index = workload.next_index();
        let op = workload.put_op(key);
        apply(
            &mut store,
            index,
            Command {
                client_id: 0,
                seq: 0,
                op,
            },
        );
    }
    for client_id in 1..=CLIENTS {
        let key = workload.keys[client_id as usize % workload.keys.len()].clone();
        let op = workload.put_op(key);
        workload.seqs[client_id as usize] = 1;
        let index = workload.next_index();
        apply(
            &mut store,
            index,
            Command {
                client_id,
                seq: 1,
                op,
            },
        );
    }
    assert_eq!(store.session_count() as u64, CLIENTS);

    println!(
        "kv state machine, {} keys of 16 B, {VALUE_BYTES}-B values, {CLIENTS} sessions, {ops} \
         ops per phase",
        arguments.keys
    );
    println!(
        "ns/op: this thread's CPU time, cheapest of {ROUNDS} rounds; ratio: against the \
         phase's BTreeMap floor."
    );
    println!(
        "{:<22} {:>10} {:>12} {:>8}",
        "phase", "ns/op", "allocs/op", "ratio"
    );

    if runs("build") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let op = workload.put_op(key);
            black_box(workload.command(op));
        });
        print_row("build", cost, None);
    }

    let mut floor = None;
    if runs("floor-put") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let value = workload.value.clone();
            black_box(floor_map.insert(key, value));
        });
        print_row("floor-put", cost, None);
        floor = Some(cost);
    }
    if runs("put") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let op = workload.put_op(key);
            let command = workload.command(op);
            let index = workload.next_index();
            apply(&mut store, index, command);
        });
        print_row("put", cost, floor);
    }

    let mut floor = None;
    if runs("floor-get") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let found = floor_map
                .get(&key)
                .map(|value| (key.clone(), value.clone()));
            black_box(found);
        });
        print_row("floor-get", cost, None);
        floor = Some(cost);
    }
    if runs("get") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let op = Op::Range(RangeRequest {
                key,
                ..RangeRequest::default()
            });
            let outcome = store.read(&op);
            debug_assert!(outcome.is_ok());
            let _ = black_box(outcome);
        });
        print_row("get", cost, floor);
    }

    let mut floor = None;
    if runs("floor-scan") {
        let cost = measure(ops / SCAN_KEYS, |_| {
            let (start, end) = workload.random_span();
            let found: Vec<(Vec<u8>, Vec<u8>)> = floor_map
                .range(start..end)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            black_box(found);
        });
        print_row("floor-scan", cost, None);
        floor = Some(cost);
    }
    if runs("scan") {
        let cost = measure(ops / SCAN_KEYS, |_| {
            let (key, range_end) = workload.random_span();
            let op = Op::Range(RangeRequest {
                key,
                range_end,
                ..RangeRequest::default()
            });
            let outcome = store.read(&op);
            debug_assert!(outcome.is_ok());
            let _ = black_box(outcome);
        });
        print_row("scan", cost, floor);
    }

    let mut floor = None;
    if runs("floor-delete+put") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            black_box(floor_map.remove(&key));
            let value = workload.value.clone();
            black_box(floor_map.insert(key, value));
        });
        print_row("floor-delete+put", cost, None);
        floor = Some(cost);
    }
    if runs("delete+put") {
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let delete = Op::Delete(DeleteRequest {
                key: key.clone(),
                range_end: Vec::new(),
                prev_kv: false,
            });
            let command = workload.command(delete);
            let index = workload.next_index();
            apply(&mut store, index, command);
            let put = workload.put_op(key);
            let command = workload.command(put);
            let index = workload.next_index();
            apply(&mut store, index, command);
        });
        print_row("delete+put", cost, floor);
    }

    if runs("append") {
        let tail = vec![b'a'; APPEND_BYTES];
        let cost = measure(ops, |_| {
            let key = workload.random_key().to_vec();
            let append = Op::Append(AppendRequest {
                key,
                value: tail.clone(),
            });
            let command = workload.command(append);
            let index = workload.next_index();
            apply(&mut store, index, command);
        });
        print_row("append", cost, None);
    }
}
