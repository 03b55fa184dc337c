//! Raft core throughput: entries committed per second through an in-memory 3-node cluster.
//!
//! Three `RaftNode`s live in one thread with no I/O. One loop turn: the leader proposes a
//! batch of 256-byte entries; every node takes its `Ready`, hands its entries and hard
//! state to a "store" that keeps them only until the (instant) write completes, reports
//! the write durable at once with `on_persisted`, and routes its messages; then every
//! queued message is stepped into its destination. Nothing ticks while measuring: a real
//! server ticks every ~100 ms, which is nothing next to millions of entries a second.
//!
//! Two drivers run the same loop: `lean`, written here with only what a real server
//! would do (reused inboxes, no copies of applied entries), and `harness`, the test
//! cluster of `corekv::raft::harness`, whose storage and applied lists are emptied every
//! turn so its cost stays flat instead of growing with the run.
//!
//! Only entries committed *and applied on the leader* inside the timed window count;
//! at the end the followers must have applied exactly what the leader applied.
//!
//! The whole cluster runs on one core, so "entries/s per core" is the throughput of three
//! replicas sharing that core. The per-replica figure (three times that) is the number of
//! entries one core pushes through one replica, the leader and follower mix averaged.
//!
//! Reference, measured in the same run: the "memcpy floor", the cheapest thing that moves
//! the same data to three replicas: per entry, copy 256 bytes into a fresh shared payload
//! (as a server copies a request out of its network buffer) and push an `Entry` holding it
//! onto three `Vec`s (the three logs). It is the speed of light for this design: Raft can
//! only add work to it, so `raft / floor` says how much of a core goes to the data itself
//! and how much to the protocol. (The batch-1 figure, the other candidate, measures how
//! well batching amortizes per-turn cost, which the table shows anyway.)
//!
//! Allocations are counted with a wrapper around the system allocator; one allocation
//! per entry, the payload itself, is inherent to the workload (the floor shows it).
//!
//! Run: `cargo bench --bench raft` (all configurations, ~20 s), or one configuration
//! for a fixed number of entries, e.g. for a profiler:
//! `cargo bench --bench raft -- --driver lean --batch 256 --entries 300000`.

// The counting allocator (benches/support) is an `unsafe impl GlobalAlloc` that forwards
// every call unchanged to `std::alloc::System`; these files are measurement tools.
#![allow(unsafe_code)]

#[path = "support/counting_allocator.rs"]
mod counting_allocator;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use corekv::raft::harness::Cluster;
use corekv::raft::{
    ConfState, Config, Entry, EntryKind, HardState, InitialState, Message, NodeId, Payload,
    RaftNode, Ready,
};
use counting_allocator::allocations;

/// Replicas in the cluster, with ids `1..=NODE_COUNT`.
const NODE_COUNT: usize = 3;
/// The replica that is elected and proposes.
const LEADER_ID: NodeId = 1;
/// Size of every proposed entry's payload.
const PAYLOAD_BYTES: usize = 256;
/// Proposals per loop turn, one configuration each.
const BATCHES: [usize; 3] = [1, 16, 256];
/// A replica compacts its log once it applied this many entries past its last snapshot,
/// as a real server snapshots periodically; it keeps memory flat over a long run.
const COMPACTION_INTERVAL_ENTRIES: u64 = 16_384;
/// Turns run before the timed window, so the logs and buffers reach their steady size.
const WARMUP_TURNS: u64 = 2_000;
/// Turns allowed for an election or for the cluster to settle after the timed window.
const SETTLE_TURNS_MAX: u64 = 10_000;
/// How long the floor is measured.
const FLOOR_SECONDS: f64 = 1.0;

/// Which loop drives the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Driver {
    /// The loop written in this file: only what a real server does.
    Lean,
    /// `corekv::raft::harness::Cluster`, the test cluster.
    Harness,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Lean => "lean",
            Driver::Harness => "harness",
        }
    }
}

/// Raft core throughput through an in-memory 3-node cluster on one core.
#[derive(Debug, Parser)]
struct Arguments {
    /// Seconds each configuration is measured.
    #[arg(long, default_value_t = 2.5)]
    seconds: f64,
    /// Run only this batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Run only this driver.
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// Measure a fixed number of entries instead of a fixed time (repeatable, for
    /// profilers).
    #[arg(long)]
    entries: Option<u64>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// When a timed window ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    After(Duration),
    AtEntries(u64),
}

/// Time this thread spent on a CPU, from the scheduler's own account
/// (`/proc/thread-self/schedstat`, first field, nanoseconds). The machine is shared, so
/// wall time counts other processes' turns too; CPU time is what "per core" means.
/// `None` where the kernel does not keep that account.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanoseconds))
}

/// Starts a timed window: wall clock, CPU clock and allocation counter.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    cpu_started: Option<Duration>,
    allocations_started: u64,
}

impl Window {
    fn start() -> Window {
        Window {
            cpu_started: thread_cpu_time(),
            allocations_started: allocations(),
            started: Instant::now(),
        }
    }

    fn finish(&self, entries: u64) -> Measurement {
        let wall = self.started.elapsed();
        let allocations = allocations() - self.allocations_started;
        let cpu = match (self.cpu_started, thread_cpu_time()) {
            (Some(started), Some(now)) => now.saturating_sub(started),
            _ => wall,
        };
        Measurement {
            entries,
            wall,
            cpu,
            allocations,
        }
    }
}

/// What one timed window measured.
#[derive(Clone, Copy, Debug)]
struct Measurement {
    entries: u64,
    wall: Duration,
    /// CPU time of the thread (wall time where the kernel does not report it).
    cpu: Duration,
    allocations: u64,
}

impl Measurement {
    /// Entries per second of CPU time: the throughput of one core.
    fn entries_per_core_second(&self) -> f64 {
        self.entries as f64 / self.cpu.as_secs_f64()
    }

    fn entries_per_wall_second(&self) -> f64 {
        self.entries as f64 / self.wall.as_secs_f64()
    }

    /// The share of the wall time this thread was on a CPU (below 1: the machine is busy).
    fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64()
    }

    fn allocations_per_entry(&self) -> f64 {
        self.allocations as f64 / self.entries as f64
    }
}

/// Makes proposal payloads: every one distinct (a counter in its first bytes), each a new
/// shared buffer, as a server copies each request out of its network buffer.
#[derive(Debug)]
struct PayloadMaker {
    template: [u8; PAYLOAD_BYTES],
    made: u64,
}

impl PayloadMaker {
    fn new() -> PayloadMaker {
        let mut template = [0u8; PAYLOAD_BYTES];
        for (k, byte) in template.iter_mut().enumerate() {
            *byte = k as u8;
        }
        PayloadMaker { template, made: 0 }
    }

    fn next(&mut self) -> Payload {
        self.made += 1;
        self.template[..8].copy_from_slice(&self.made.to_le_bytes());
        Arc::from(&self.template[..])
    }
}

/// Is this an entry the benchmark proposed (not a leader's no-op or a membership change)?
fn is_proposal(entry: &Entry) -> bool {
    entry.kind == EntryKind::Normal && entry.data.len() == PAYLOAD_BYTES
}

fn node_index(id: NodeId) -> usize {
    let index = (id - 1) as usize;
    assert!(index < NODE_COUNT, "node {id} is not in the cluster");
    index
}

// ----- lean driver ---------------------------------------------------------------------

/// One replica and what its "store" and state machine keep.
#[derive(Debug)]
struct Replica {
    node: RaftNode,
    /// Entries handed to storage by the current Ready; emptied once the write completes,
    /// as a store hands them to its write-ahead log and lets go.
    write_batch: Vec<Entry>,
    hard_state: HardState,
    /// Proposals applied so far.
    applied_proposals: u64,
    /// Log index of the last compaction.
    compacted_index: u64,
}

/// Three replicas and their inboxes, driven turn by turn with no copies and no I/O.
#[derive(Debug)]
struct LeanCluster {
    replicas: Vec<Replica>,
    /// Messages waiting for each replica (index `id - 1`), reused every turn.
    inboxes: Vec<Vec<Message>>,
    /// What a compaction's snapshot holds; the state machine here has no state.
    snapshot_data: Payload,
}

impl LeanCluster {
    fn new() -> LeanCluster {
        let ids: Vec<NodeId> = (1..=NODE_COUNT as NodeId).collect();
        let conf = ConfState::with_voters(&ids);
        let replicas = ids
            .iter()
            .map(|&id| {
                let state = InitialState {
                    conf: conf.clone(),
                    ..InitialState::default()
                };
                Replica {
                    node: RaftNode::new(Config::new(id), state).expect("valid configuration"),
                    write_batch: Vec::new(),
                    hard_state: HardState::default(),
                    applied_proposals: 0,
                    compacted_index: 0,
                }
            })
            .collect();
        LeanCluster {
            replicas,
            inboxes: (0..NODE_COUNT).map(|_| Vec::new()).collect(),
            snapshot_data: Arc::from(&[][..]),
        }
    }

    fn leader(&mut self) -> &mut RaftNode {
        &mut self.replicas[node_index(LEADER_ID)].node
    }

    /// Elects the leader and waits until every replica applied its no-op.
    fn elect(&mut self) {
        self.leader().campaign_now();
        for _ in 0..SETTLE_TURNS_MAX {
            self.turn();
            if self.is_settled() {
                return;
            }
        }
        panic!("no leader within {SETTLE_TURNS_MAX} turns");
    }

    /// Is the leader elected, is everything applied everywhere and is nothing in flight?
    fn is_settled(&self) -> bool {
        let leader = &self.replicas[node_index(LEADER_ID)].node;
        let last_index = leader.log().last_index();
        leader.is_leader()
            && self.inboxes.iter().all(Vec::is_empty)
            && self.replicas.iter().all(|replica| {
                !replica.node.has_ready() && replica.node.log().applied == last_index
            })
    }

    /// Every replica handles its Ready, then every queued message is delivered.
    fn turn(&mut self) {
        for replica in &mut self.replicas {
            if replica.node.has_ready() {
                let ready = replica.node.ready();
                Self::handle_ready(replica, &mut self.inboxes, ready, &self.snapshot_data);
            }
        }
        for (replica, inbox) in self.replicas.iter_mut().zip(&mut self.inboxes) {
            for message in inbox.drain(..) {
                replica.node.step(message);
            }
        }
    }

    /// Persists (instantly), sends, applies and reports durability, in the order the
    /// `Ready` contract asks.
    fn handle_ready(
        replica: &mut Replica,
        inboxes: &mut [Vec<Message>],
        mut ready: Ready,
        snapshot_data: &Payload,
    ) {
        // Handing off the Ready's own vector: no entry is copied.
        replica.write_batch = std::mem::take(&mut ready.entries);
        if let Some(hard_state) = ready.hard_state {
            replica.hard_state = hard_state;
        }
        for message in ready.messages.drain(..) {
            inboxes[node_index(message.to)].push(message);
        }
        replica.applied_proposals += ready
            .committed_entries
            .iter()
            .filter(|entry| is_proposal(entry))
            .count() as u64;
        replica.write_batch.clear();
        replica.node.on_persisted(ready.number);
        for message in ready.persisted_messages.drain(..) {
            inboxes[node_index(message.to)].push(message);
        }
        let applied = replica.node.log().applied;
        if applied - replica.compacted_index >= COMPACTION_INTERVAL_ENTRIES {
            replica
                .node
                .compact(applied, snapshot_data.clone())
                .expect("compacting applied entries");
            replica.compacted_index = applied;
        }
    }

    fn applied_proposals(&self, id: NodeId) -> u64 {
        self.replicas[node_index(id)].applied_proposals
    }
}

/// Runs the lean driver at `batch` proposals per turn until `stop`.
// Never inlined, so that a profiler can collect inside this function alone.
#[inline(never)]
fn run_lean(batch: usize, stop: Stop) -> Measurement {
    let mut cluster = LeanCluster::new();
    cluster.elect();
    let mut payloads = PayloadMaker::new();
    let mut propose_turn = |cluster: &mut LeanCluster| {
        let leader = cluster.leader();
        for _ in 0..batch {
            leader.propose(payloads.next()).expect("the leader accepts");
        }
        cluster.turn();
    };
    for _ in 0..WARMUP_TURNS {
        propose_turn(&mut cluster);
    }
    let applied_before = cluster.applied_proposals(LEADER_ID);
    let window = Window::start();
    let mut turns = 0u64;
    loop {
        propose_turn(&mut cluster);
        turns += 1;
        let applied = cluster.applied_proposals(LEADER_ID) - applied_before;
        let done = match stop {
            // Reading the clock every 64 turns keeps it out of the batch-1 figure.
            Stop::After(duration) => turns % 64 == 0 && window.started.elapsed() >= duration,
            Stop::AtEntries(entries) => applied >= entries,
        };
        if done {
            break;
        }
    }
    let measurement = window.finish(cluster.applied_proposals(LEADER_ID) - applied_before);
    settle_lean(&mut cluster, payloads.made);
    measurement
}

/// Stops proposing, runs until quiet, and checks every replica applied every proposal.
fn settle_lean(cluster: &mut LeanCluster, proposed: u64) {
    for _ in 0..SETTLE_TURNS_MAX {
        if cluster.is_settled() {
            break;
        }
        cluster.turn();
    }
    assert!(cluster.is_settled(), "the cluster did not settle");
    for id in 1..=NODE_COUNT as NodeId {
        assert_eq!(
            cluster.applied_proposals(id),
            proposed,
            "replica {id} applied a different number of proposals"
        );
    }
}

// ----- harness driver ------------------------------------------------------------------

/// Proposals each replica of a harness cluster applied, with compaction points.
#[derive(Debug, Default)]
struct HarnessCounts {
    applied_proposals: [u64; NODE_COUNT],
    compacted_index: [u64; NODE_COUNT],
}

/// Counts and empties what the harness kept this turn (a real store hands it off), and
/// compacts like the lean driver.
fn trim_harness(cluster: &mut Cluster, counts: &mut HarnessCounts, snapshot_data: &Payload) {
    for id in 1..=NODE_COUNT as NodeId {
        let index = node_index(id);
        let peer = cluster.peers.get_mut(&id).expect("known node");
        counts.applied_proposals[index] += peer
            .applied
            .iter()
            .filter(|entry| is_proposal(entry))
            .count() as u64;
        peer.applied.clear();
        peer.storage.entries.clear();
        let applied = peer.node.log().applied;
        if applied - counts.compacted_index[index] >= COMPACTION_INTERVAL_ENTRIES {
            cluster.compact(id, snapshot_data.clone());
            counts.compacted_index[index] = applied;
        }
    }
}

/// Runs the harness driver at `batch` proposals per turn until `stop`.
// Never inlined, so that a profiler can collect inside this function alone.
#[inline(never)]
fn run_harness(batch: usize, stop: Stop) -> Measurement {
    let ids: Vec<NodeId> = (1..=NODE_COUNT as NodeId).collect();
    let mut cluster = Cluster::new(&ids, |_| {});
    cluster.elect(LEADER_ID);
    assert_eq!(cluster.leader(), Some(LEADER_ID));
    let snapshot_data: Payload = Arc::from(&[][..]);
    let mut counts = HarnessCounts::default();
    let mut payloads = PayloadMaker::new();
    let mut propose_turn = |cluster: &mut Cluster, counts: &mut HarnessCounts| {
        let leader = cluster.node_mut(LEADER_ID);
        for _ in 0..batch {
            leader.propose(payloads.next()).expect("the leader accepts");
        }
        for &id in &ids {
            cluster.process_ready(id);
        }
        cluster.deliver_all();
        trim_harness(cluster, counts, &snapshot_data);
    };
    for _ in 0..WARMUP_TURNS {
        propose_turn(&mut cluster, &mut counts);
    }
    let leader_index = node_index(LEADER_ID);
    let applied_before = counts.applied_proposals[leader_index];
    let window = Window::start();
    let mut turns = 0u64;
    loop {
        propose_turn(&mut cluster, &mut counts);
        turns += 1;
        let applied = counts.applied_proposals[leader_index] - applied_before;
        let done = match stop {
            Stop::After(duration) => turns % 64 == 0 && window.started.elapsed() >= duration,
            Stop::AtEntries(entries) => applied >= entries,
        };
        if done {
            break;
        }
    }
    let measurement = window.finish(counts.applied_proposals[leader_index] - applied_before);
    cluster.stabilize();
    trim_harness(&mut cluster, &mut counts, &snapshot_data);
    for (index, &applied) in counts.applied_proposals.iter().enumerate() {
        assert_eq!(
            applied,
            payloads.made,
            "replica {} applied a different number of proposals",
            index + 1
        );
    }
    measurement
}

// ----- reference -----------------------------------------------------------------------

/// The memcpy floor: per entry, a new 256-byte shared payload and an `Entry` pushed onto
/// three logs, in batches of the largest batch size. See the top of the file.
// Never inlined, so that a profiler can collect inside this function alone.
#[inline(never)]
fn run_floor(stop: Stop) -> Measurement {
    let batch = BATCHES[BATCHES.len() - 1];
    let mut logs: Vec<Vec<Entry>> = (0..NODE_COUNT).map(|_| Vec::with_capacity(batch)).collect();
    let mut payloads = PayloadMaker::new();
    let mut index = 0u64;
    let mut floor_turn = |logs: &mut Vec<Vec<Entry>>, index: &mut u64| {
        for _ in 0..batch {
            *index += 1;
            let entry = Entry {
                term: 1,
                index: *index,
                kind: EntryKind::Normal,
                data: payloads.next(),
            };
            for log in logs.iter_mut() {
                log.push(entry.clone());
            }
        }
        black_box(&mut *logs);
        // Emptied every batch (capacity kept): the next batch reuses the freed payloads'
        // memory. Kept longer, glibc hands the top of its heap back to the kernel and
        // page-faults it in again, which measures the allocator's trimming instead.
        logs.iter_mut().for_each(Vec::clear);
    };
    for _ in 0..WARMUP_TURNS {
        floor_turn(&mut logs, &mut index);
    }
    let entries_before = index;
    let window = Window::start();
    loop {
        floor_turn(&mut logs, &mut index);
        let done = match stop {
            Stop::After(duration) => window.started.elapsed() >= duration,
            Stop::AtEntries(entries) => index - entries_before >= entries,
        };
        if done {
            break;
        }
    }
    window.finish(index - entries_before)
}

// ----- report --------------------------------------------------------------------------

fn print_header() {
    println!(
        "{:<8} {:>5} {:>9} {:>12} {:>13} {:>12} {:>9} {:>12} {:>8} {:>7}",
        "driver",
        "batch",
        "entries",
        "entries/s",
        "replica-e/s",
        "wall e/s",
        "cpu share",
        "allocs/entry",
        "vs floor",
        "vs b=1"
    );
}

fn print_row(
    driver: &str,
    batch: usize,
    measurement: &Measurement,
    floor: &Measurement,
    batch_one: Option<&Measurement>,
) {
    let rate = measurement.entries_per_core_second();
    let versus_batch_one = batch_one.map_or_else(
        || "-".to_string(),
        |baseline| format!("{:.2}x", rate / baseline.entries_per_core_second()),
    );
    println!(
        "{:<8} {:>5} {:>9} {:>12.0} {:>13.0} {:>12.0} {:>9.2} {:>12.2} {:>8.3} {:>7}",
        driver,
        batch,
        measurement.entries,
        rate,
        rate * NODE_COUNT as f64,
        measurement.entries_per_wall_second(),
        measurement.cpu_share(),
        measurement.allocations_per_entry(),
        rate / floor.entries_per_core_second(),
        versus_batch_one
    );
}

fn main() {
    let arguments = Arguments::parse();
    assert!(arguments.seconds > 0.0, "--seconds must be positive");
    let stop = match arguments.entries {
        Some(entries) => Stop::AtEntries(entries),
        None => Stop::After(Duration::from_secs_f64(arguments.seconds)),
    };
    let floor_stop = match arguments.entries {
        Some(entries) => Stop::AtEntries(entries),
        None => Stop::After(Duration::from_secs_f64(FLOOR_SECONDS)),
    };
    let batches: Vec<usize> = match arguments.batch {
        Some(batch) => {
            assert!(batch > 0, "--batch must be at least 1");
            vec![batch]
        }
        None => BATCHES.to_vec(),
    };
    let drivers: Vec<Driver> = match arguments.driver {
        Some(driver) => vec![driver],
        None => vec![Driver::Lean, Driver::Harness],
    };

    println!(
        "Raft core, 3 replicas in one thread (one core), {PAYLOAD_BYTES}-byte entries, \
         no I/O."
    );
    println!(
        "entries/s: entries committed and applied on the leader per second of CPU time, \
         i.e. the whole cluster's throughput on one core."
    );
    println!(
        "replica-e/s = 3 x entries/s: entries one core pushes through one replica. \
         wall e/s and cpu share show how much the shared machine got in the way."
    );
    let floor = run_floor(floor_stop);
    println!(
        "floor (new payload + push onto 3 logs): {:.0} entries/s per core, {:.2} \
         allocs/entry, cpu share {:.2}",
        floor.entries_per_core_second(),
        floor.allocations_per_entry(),
        floor.cpu_share()
    );
    print_header();
    for driver in drivers {
        let mut batch_one: Option<Measurement> = None;
        for &batch in &batches {
            let measurement = match driver {
                Driver::Lean => run_lean(batch, stop),
                Driver::Harness => run_harness(batch, stop),
            };
            print_row(
                driver.name(),
                batch,
                &measurement,
                &floor,
                batch_one.as_ref(),
            );
            if batch == 1 {
                batch_one = Some(measurement);
            }
        }
    }
}
