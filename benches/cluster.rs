//! End-to-end throughput and latency of a 3-node corekv cluster, with a 3-member etcd
//! cluster loaded the same way in the same run as the reference.
//!
//! Both clusters run on loopback from fresh data directories with fsync on. Each system
//! is first filled (every key written once), then loaded for every client count and
//! phase: durable puts over the keyspace, linearizable gets, and a 70/30 put/get mix.
//! Each phase warms up, then measures for a fixed time; only the operations that
//! complete inside the window count. Every response is checked: a failed put, a failed
//! get, and a get that does not return the value the fill wrote are errors, counted
//! apart and never as throughput. The report gives ops/s, p50/p99/p999 latency, errors,
//! and the CPU the servers (`srv`) and this load generator (`gen`) used, as cores busy on
//! average and as CPU microseconds per operation (the machine has few cores, the servers
//! and the generator share them, and other work may too: CPU per operation says more
//! than ops/s on a busy machine), then the ratio corekv/etcd per phase and the goals.
//!
//! `--clients` is the number of operations in flight in total (a closed loop: each one
//! that completes is followed at once by the next).
//!
//! corekv is reached through the SDK (`corekv::client::Client`) by a few generator
//! threads (`--generator-threads`, default 2), which split the clients between them: each
//! keeps its share of operations in flight with `Client::start_tagged`, all tagged into
//! one completion queue of its own, and sleeps on that queue until some operation has
//! news. It then moves on exactly the tagged operations (`Pending::is_ready`); each one
//! that is done is checked, its latency is recorded from just before its start to the
//! moment its completion is observed, and the next operation is started in its place;
//! the operations started after one wake-up are written together (`Client::batch`, one
//! system call per connection).
//! Completions are harvested in the order they arrive, not oldest first, so a fast
//! answer is never held behind a slow one. Every 5 ms (`GENERATOR_SWEEP_INTERVAL`) a
//! thread also moves on the operations whose retry pause or attempt wait has ended
//! (`Pending::poll_at`): those raise no tag. `--threads-per-sdk-client` generator threads share one `Client` (its
//! pipelined connections, one per node); its session pool is sized so every write in
//! flight holds its own session. The fill runs the same way.
//!
//! etcd is reached through its v3 JSON gateway with a minimal HTTP/1.1 keep-alive client
//! below: one thread per client, one operation at a time, one connection per thread
//! spread over the members (HTTP/1.1 cannot pipeline usefully), keys and values
//! base64-encoded as the gateway wants; a response counts only when it is a 200 that
//! carries a header revision (and, for a get, the value).
//!
//! Run: `cargo bench --bench cluster` (builds the release `corekv` binary, which the
//! bench starts from `target/release/corekv`), or `tools/bench-cluster.sh`, which
//! installs etcd first when it is missing. Options after `--`, e.g.
//! `cargo bench --bench cluster -- --clients 64 --seconds 5 --systems corekv`.
//! Without an `etcd` executable the bench says so and reports corekv alone.

#[path = "support/latency.rs"]
mod latency;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use corekv::client::{
    Batch, Client, ClientError, ClientOptions, Completions, Pending, IN_FLIGHT_MAX_DEFAULT,
    SESSIONS_CEILING, SESSIONS_MAX_DEFAULT,
};
use corekv::kv::{self, OpResponse, RangeRequest};
use histogram::Histogram;
use latency::{new_histogram, quantiles};

/// Members of each cluster.
const NODES: usize = 3;
/// How long a cluster may take to elect its leaders and take a first write.
const STARTUP_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often startup re-checks the cluster.
const STARTUP_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a stopping server may take after SIGTERM before it is killed.
const SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(10);
/// Error messages kept per phase to show what went wrong.
const ERROR_SAMPLES_MAX: usize = 3;
/// The project's goals on this machine: durable puts per second within a p99 bound, and
/// linearizable gets per second.
const PUT_GOAL: f64 = 30_000.0;
const PUT_P99_GOAL_US: u64 = 20_000;
const GET_GOAL: f64 = 100_000.0;
/// Percent of the mixed phase's operations that are puts.
const MIX_PUT_PERCENT: u64 = 70;
/// Lines of a server log shown when the server fails.
const LOG_TAIL_LINES: usize = 20;
/// Ports tried from the base port when looking for free ones.
const PORT_SEARCH_SPAN: u16 = 2000;
/// How often a corekv generator thread moves on every operation it holds, for the retry
/// pauses and attempt timeouts that raise no completion tag.
const GENERATOR_SWEEP_INTERVAL: Duration = Duration::from_millis(5);

/// HTTP: the largest response head and body accepted from the etcd gateway.
const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
const HTTP_BODY_BYTES_MAX: usize = 1 << 20;
/// Bytes asked of the socket per read.
const HTTP_READ_CHUNK_BYTES: usize = 16 * 1024;
/// No single request to etcd may take longer than this (it then counts as an error).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
struct Arguments {
    /// Seconds each phase is measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds each phase runs before it is measured.
    #[arg(long, default_value_t = 3.0)]
    warmup_seconds: f64,
    /// Operations in flight in total, one run per count (corekv: split over the
    /// generator threads; etcd: one thread per client).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256])]
    clients: Vec<usize>,
    /// corekv generator threads, each keeping its share of the clients' operations in
    /// flight through the SDK's non-blocking calls.
    #[arg(long, default_value_t = 2)]
    generator_threads: usize,
    /// Phases to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Phase::Put, Phase::Get, Phase::Mix])]
    phases: Vec<Phase>,
    /// Keys of the keyspace; all are written once before the phases.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes of every value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Which systems to load.
    #[arg(long, value_enum, default_value_t = Systems::Both)]
    systems: Systems,
    /// corekv shards per node (the three nodes share this machine's cores).
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// corekv Raft groups.
    #[arg(long, default_value_t = 16)]
    groups: u64,
    /// corekv generator threads that share one SDK `Client` (and its connections).
    #[arg(long, default_value_t = 16)]
    threads_per_sdk_client: usize,
    /// An extra flag for every corekv server, e.g. `--corekv-server-arg=--snapshot-entries=100000`
    /// (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    corekv_server_arg: Vec<String>,
    /// The corekv server executable (default: the release build next to this bench).
    #[arg(long)]
    corekv_binary: Option<PathBuf>,
    /// A second corekv server executable (say, the build before a change), loaded the
    /// same way in the same run and reported as `baseline`, with the ratio corekv /
    /// baseline per phase. Build one with `tools/build-baseline.sh REV`.
    #[arg(long)]
    baseline_binary: Option<PathBuf>,
    /// With a baseline: how many times to load baseline then corekv, one after the
    /// other, so that both see the machine's changing load alike; each configuration
    /// reports its best round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The etcd executable.
    #[arg(long, default_value = "etcd")]
    etcd_binary: PathBuf,
    /// First port tried for the clusters' listeners.
    #[arg(long, default_value_t = 27_000)]
    base_port: u16,
    /// Skip the fill (the get phase then counts missing keys as errors).
    #[arg(long)]
    skip_fill: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Durable puts to random keys.
    Put,
    /// Linearizable gets of random keys.
    Get,
    /// 70% puts, 30% gets.
    Mix,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Put => "put",
            Phase::Get => "get",
            Phase::Mix => "mix70/30",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Systems {
    Corekv,
    Etcd,
    Both,
}

// ---------------------------------------------------------------------------------------
// What one client thread does, for either system
// ---------------------------------------------------------------------------------------

/// One client thread's view of a system: one operation at a time.
trait Worker {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// Reads `key` linearizably and checks that it holds `expected`.
    fn get(&mut self, key: &[u8], expected: &[u8]) -> Result<(), String>;
}

/// How one load thread drives a system.
enum Driver<'a> {
    /// One blocking operation at a time.
    Blocking(Box<dyn Worker + 'a>),
    /// Many operations in flight through a shared SDK client.
    Pipelined(&'a Client),
}

/// A system under load: hands out drivers and names its processes.
trait System: Sync {
    fn name(&self) -> &'static str;
    /// Threads that keep `clients` operations in flight.
    fn threads_for(&self, clients: usize) -> usize;
    fn driver(&self, thread: usize) -> Driver<'_>;
    fn pids(&self) -> Vec<u32>;
    /// Fails when a member process has exited.
    fn check_alive(&self) -> Result<(), String>;
}

fn key_of(index: u64) -> Vec<u8> {
    format!("bench-{index:08}").into_bytes()
}

/// A small, fast generator for key choices (xorshift64*); quality is not a concern.
#[derive(Debug)]
struct KeyChooser {
    state: u64,
}

impl KeyChooser {
    fn new(seed: u64) -> KeyChooser {
        KeyChooser {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

// ---------------------------------------------------------------------------------------
// Phases and their measurement
// ---------------------------------------------------------------------------------------

/// What one thread saw inside the measured window.
#[derive(Debug)]
struct ThreadTally {
    ok: u64,
    errors: u64,
    error_samples: Vec<String>,
    /// Latency of successful operations, microseconds.
    latency_us: Histogram,
}

impl ThreadTally {
    fn new() -> ThreadTally {
        ThreadTally {
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
            latency_us: new_histogram(),
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push(message);
        }
    }
}

/// The figures of one phase.
#[derive(Debug)]
struct PhaseResult {
    system: &'static str,
    clients: usize,
    phase: &'static str,
    ops_per_second: f64,
    /// (p50, p99, p999) in microseconds.
    latency_us: (u64, u64, u64),
    errors: u64,
    error_samples: Vec<String>,
    /// Cores the system's processes used on average during the window.
    server_cores: f64,
    /// Cores this load generator used on average during the window.
    generator_cores: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds a process has used so far (0 when it cannot be read).
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> f64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; the fields after it do not. After the ')',
    // field 3 (state) comes first, so utime (field 14) and stime (15) are at 11 and 12.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&index| {
            fields
                .get(index)
                .and_then(|field| field.parse::<f64>().ok())
        })
        .sum();
    ticks / ticks_per_second
}

/// CPU seconds of the system's processes and of this process.
fn cpu_sample(system: &dyn System, ticks_per_second: f64) -> (f64, f64) {
    let servers = system
        .pids()
        .iter()
        .map(|pid| cpu_seconds(&pid.to_string(), ticks_per_second))
        .sum();
    (servers, cpu_seconds("self", ticks_per_second))
}

/// The operation mix of a phase: true for a put.
fn is_put(phase: Phase, chooser: &mut KeyChooser) -> bool {
    match phase {
        Phase::Put => true,
        Phase::Get => false,
        Phase::Mix => chooser.below(100) < MIX_PUT_PERCENT,
    }
}

/// The share of `clients` operations in flight that thread `thread` of `threads` keeps.
fn share(clients: usize, threads: usize, thread: usize) -> usize {
    clients / threads + usize::from(thread < clients % threads)
}

/// Checks a corekv answer: a put must succeed, a get must return `expected` at `key`.
fn check_corekv(
    key: &[u8],
    put: bool,
    expected: &[u8],
    result: Result<kv::Response, ClientError>,
) -> Result<(), String> {
    let response = result.map_err(|error| error.to_string())?;
    let name = || String::from_utf8_lossy(key);
    match (put, response.op) {
        (true, OpResponse::Put(_)) => Ok(()),
        (false, OpResponse::Range(range)) => {
            match range.kvs.into_iter().find(|pair| pair.key == key) {
                Some(pair) if pair.value == expected => Ok(()),
                Some(pair) => Err(format!(
                    "{}: read {} bytes that differ from what was written",
                    name(),
                    pair.value.len()
                )),
                None => Err(format!("{}: missing", name())),
            }
        }
        (_, other) => Err(format!("{}: unexpected answer {other:?}", name())),
    }
}

/// One corekv operation in flight in a generator thread.
struct InFlight<'c> {
    pending: Pending<'c>,
    key: Vec<u8>,
    put: bool,
    started: Instant,
}

/// One generator thread's operations: a fixed number of slots, each holding at most one
/// operation, whose index is its tag in the thread's completion queue. The operations
/// started after one wake-up go out together (`Batch`): one write per connection.
struct Generator<'c, 'v> {
    batch: Batch<'c>,
    value: &'v [u8],
    completions: Arc<Completions>,
    slots: Vec<Option<InFlight<'c>>>,
    /// Slots holding an operation.
    active: usize,
    /// `next` has no more operations to hand out.
    exhausted: bool,
}

impl<'c, 'v> Generator<'c, 'v> {
    /// Keeps up to `in_flight` operations going through `client` until `next` hands out
    /// no more (it returns the key and whether to put) and every operation started has
    /// completed. `finished` gets each operation's start, the moment its completion was
    /// observed, and its checked outcome.
    fn run(
        client: &'c Client,
        in_flight: usize,
        value: &'v [u8],
        mut next: impl FnMut() -> Option<(Vec<u8>, bool)>,
        mut finished: impl FnMut(Instant, Instant, Result<(), String>),
    ) {
        let completions = Completions::new(in_flight).expect("a positive share of clients");
        let mut generator = Generator {
            batch: client.batch(),
            value,
            completions: Arc::new(completions),
            slots: (0..in_flight).map(|_| None).collect(),
            active: 0,
            exhausted: false,
        };
        for slot in 0..in_flight {
            generator.refill(slot, &mut next, &mut finished);
        }
        generator.batch.flush();
        let mut tags = Vec::with_capacity(in_flight);
        let mut next_sweep = Instant::now() + GENERATOR_SWEEP_INTERVAL;
        while generator.active > 0 || !generator.exhausted {
            tags.clear();
            generator.completions.wait_until(next_sweep, &mut tags);
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + GENERATOR_SWEEP_INTERVAL;
                // Only the operations whose pause or attempt wait has ended, and empty
                // slots, whose start failed: polling every answer channel would cost a
                // cache miss each.
                let due = generator.slots.iter().enumerate().filter(|(_, slot)| {
                    slot.as_ref()
                        .and_then(|operation| operation.pending.poll_at())
                        .is_none_or(|poll_at| poll_at <= now)
                });
                tags.extend(due.map(|(slot, _)| slot as u64));
            }
            for &tag in &tags {
                generator.harvest(tag as usize, &mut next, &mut finished);
            }
            generator.batch.flush();
        }
    }

    /// Takes the slot's operation when it is done (or fills an empty slot).
    fn harvest(
        &mut self,
        slot: usize,
        next: &mut impl FnMut() -> Option<(Vec<u8>, bool)>,
        finished: &mut impl FnMut(Instant, Instant, Result<(), String>),
    ) {
        // A slot whose start failed is filled again; a stale tag, or an operation that
        // went on to a retry, leaves its slot alone.
        if let Some(operation) = &mut self.slots[slot] {
            if !operation.pending.is_ready() {
                return;
            }
        }
        if let Some(operation) = self.slots[slot].take() {
            self.active -= 1;
            let result = operation.pending.wait();
            let done = Instant::now();
            let checked = check_corekv(&operation.key, operation.put, self.value, result);
            finished(operation.started, done, checked);
        }
        self.refill(slot, next, finished);
    }

    /// Starts the next operation in an empty slot, unless `next` has none.
    fn refill(
        &mut self,
        slot: usize,
        next: &mut impl FnMut() -> Option<(Vec<u8>, bool)>,
        finished: &mut impl FnMut(Instant, Instant, Result<(), String>),
    ) {
        debug_assert!(self.slots[slot].is_none());
        if self.exhausted {
            return;
        }
        let Some((key, put)) = next() else {
            self.exhausted = true;
            return;
        };
        let op = if put {
            kv::Op::Put(kv::PutRequest {
                key: key.clone(),
                value: self.value.to_vec(),
                ..kv::PutRequest::default()
            })
        } else {
            kv::Op::Range(RangeRequest::get(&key))
        };
        let started = Instant::now();
        match self
            .batch
            .start_tagged(op, false, &self.completions, slot as u64)
        {
            Ok(pending) => {
                self.slots[slot] = Some(InFlight {
                    pending,
                    key,
                    put,
                    started,
                });
                self.active += 1;
            }
            // The slot stays empty until the next sweep fills it.
            Err(error) => finished(started, Instant::now(), Err(error.to_string())),
        }
    }
}

/// Runs one phase: `clients` operations in flight, warm-up, then the measured window.
fn run_phase(
    system: &dyn System,
    phase: Phase,
    clients: usize,
    arguments: &Arguments,
    value: &[u8],
    ticks_per_second: f64,
) -> PhaseResult {
    let warmup = Duration::from_secs_f64(arguments.warmup_seconds);
    let window = Duration::from_secs_f64(arguments.seconds);
    let keys = arguments.keys;
    let threads = system.threads_for(clients);
    let barrier = Barrier::new(threads + 1);
    let tallies = Mutex::new(Vec::with_capacity(threads));
    let started = Mutex::new(None::<Instant>);
    let (cpu_start, cpu_end, measured_start, measured_end) = std::thread::scope(|scope| {
        for thread in 0..threads {
            let barrier = &barrier;
            let tallies = &tallies;
            let started = &started;
            scope.spawn(move || {
                let driver = system.driver(thread);
                let mut chooser = KeyChooser::new(thread as u64 + 1);
                let mut tally = ThreadTally::new();
                barrier.wait();
                let begin = started
                    .lock()
                    .expect("start time")
                    .expect("set before release");
                let window_start = begin + warmup;
                let window_end = window_start + window;
                let mut record = |sent: Instant, done: Instant, result: Result<(), String>| {
                    if done < window_start || done >= window_end {
                        return;
                    }
                    match result {
                        Ok(()) => {
                            tally.ok += 1;
                            let micros = (done - sent).as_micros() as u64;
                            tally
                                .latency_us
                                .increment(micros)
                                .expect("latency fits the histogram");
                        }
                        Err(error) => tally.error(error),
                    }
                };
                match driver {
                    Driver::Blocking(mut worker) => loop {
                        let key = key_of(chooser.below(keys));
                        let put = is_put(phase, &mut chooser);
                        let sent = Instant::now();
                        if sent >= window_end {
                            break;
                        }
                        let result = if put {
                            worker.put(&key, value)
                        } else {
                            worker.get(&key, value)
                        };
                        record(sent, Instant::now(), result);
                    },
                    Driver::Pipelined(client) => {
                        let next = || {
                            if Instant::now() >= window_end {
                                return None;
                            }
                            let key = key_of(chooser.below(keys));
                            Some((key, is_put(phase, &mut chooser)))
                        };
                        let in_flight = share(clients, threads, thread);
                        Generator::run(client, in_flight, value, next, record);
                    }
                }
                tallies.lock().expect("tallies").push(tally);
            });
        }
        let begin = Instant::now();
        *started.lock().expect("start time") = Some(begin);
        barrier.wait();
        let window_start = begin + warmup;
        let window_end = window_start + window;
        std::thread::sleep(window_start.saturating_duration_since(Instant::now()));
        let cpu_start = cpu_sample(system, ticks_per_second);
        let measured_start = Instant::now();
        std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
        let cpu_end = cpu_sample(system, ticks_per_second);
        (cpu_start, cpu_end, measured_start, Instant::now())
    });
    let elapsed = (measured_end - measured_start).as_secs_f64();
    let tallies = tallies.into_inner().expect("tallies");
    let mut latency = new_histogram();
    let (mut ok, mut errors, mut error_samples) = (0, 0, Vec::new());
    for tally in tallies {
        ok += tally.ok;
        errors += tally.errors;
        for sample in tally.error_samples {
            if error_samples.len() < ERROR_SAMPLES_MAX {
                error_samples.push(sample);
            }
        }
        latency
            .checked_add_assign(&tally.latency_us)
            .expect("histograms of one configuration add up");
    }
    PhaseResult {
        system: system.name(),
        clients,
        phase: phase.name(),
        ops_per_second: ok as f64 / arguments.seconds,
        latency_us: quantiles(&latency),
        errors,
        error_samples,
        server_cores: (cpu_end.0 - cpu_start.0) / elapsed,
        generator_cores: (cpu_end.1 - cpu_start.1) / elapsed,
    }
}

/// Writes every key once with `clients` operations in flight; returns (puts/s, errors).
fn fill(system: &dyn System, clients: usize, keys: u64, value: &[u8]) -> (f64, u64, Vec<String>) {
    let start = Instant::now();
    let threads = system.threads_for(clients);
    let tallies = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let tallies = &tallies;
            scope.spawn(move || {
                let mut tally = ThreadTally::new();
                // This thread writes every key whose index is its own modulo the threads.
                let mut index = thread as u64;
                let mut next = || {
                    if index >= keys {
                        return None;
                    }
                    let key = key_of(index);
                    index += threads as u64;
                    Some(key)
                };
                match system.driver(thread) {
                    Driver::Blocking(mut worker) => {
                        while let Some(key) = next() {
                            match worker.put(&key, value) {
                                Ok(()) => tally.ok += 1,
                                Err(error) => tally.error(error),
                            }
                        }
                    }
                    Driver::Pipelined(client) => {
                        let in_flight = share(clients, threads, thread);
                        let next = || next().map(|key| (key, true));
                        let record =
                            |_: Instant, _: Instant, result: Result<(), String>| match result {
                                Ok(()) => tally.ok += 1,
                                Err(error) => tally.error(error),
                            };
                        Generator::run(client, in_flight, value, next, record);
                    }
                }
                tallies.lock().expect("tallies").push(tally);
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let tallies = tallies.into_inner().expect("tallies");
    let ok: u64 = tallies.iter().map(|tally| tally.ok).sum();
    let errors = tallies.iter().map(|tally| tally.errors).sum();
    let samples = tallies
        .into_iter()
        .flat_map(|tally| tally.error_samples)
        .take(ERROR_SAMPLES_MAX)
        .collect();
    (ok as f64 / seconds, errors, samples)
}

/// Fills, then runs every client count and phase on one system.
fn load(system: &dyn System, arguments: &Arguments, value: &[u8]) -> Vec<PhaseResult> {
    let ticks_per_second = clock_ticks_per_second();
    let fill_clients = arguments.clients.iter().copied().max().unwrap_or(64);
    if !arguments.skip_fill {
        println!(
            "{}: filling {} keys with {fill_clients} clients",
            system.name(),
            arguments.keys
        );
        let (rate, errors, samples) = fill(system, fill_clients, arguments.keys, value);
        println!(
            "{}: fill done at {rate:.0} puts/s, {errors} errors",
            system.name()
        );
        for sample in samples {
            println!("    error: {sample}");
        }
    }
    let mut results = Vec::new();
    for &clients in &arguments.clients {
        for &phase in &arguments.phases {
            if let Err(error) = system.check_alive() {
                println!("{}: {error}; stopping this system's phases", system.name());
                return results;
            }
            println!(
                "{}: {} with {clients} clients: warming up {:.0} s, measuring {:.0} s",
                system.name(),
                phase.name(),
                arguments.warmup_seconds,
                arguments.seconds
            );
            let result = run_phase(system, phase, clients, arguments, value, ticks_per_second);
            print_result(&result);
            results.push(result);
        }
    }
    results
}

fn milliseconds(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn print_header() {
    println!(
        "{:<7} {:>7} {:<9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "system",
        "clients",
        "phase",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "srv cpu",
        "srv us",
        "gen cpu",
        "gen us"
    );
}

/// CPU microseconds spent per successful operation by `cores` busy cores.
fn cpu_micros_per_operation(cores: f64, ops_per_second: f64) -> String {
    if ops_per_second > 0.0 {
        format!("{:.1}", cores * 1e6 / ops_per_second)
    } else {
        "-".to_string()
    }
}

fn print_result(result: &PhaseResult) {
    let (p50, p99, p999) = result.latency_us;
    println!(
        "{:<7} {:>7} {:<9} {:>9.0} {:>8} {:>8} {:>8} {:>7} {:>8.2} {:>8} {:>8.2} {:>8}",
        result.system,
        result.clients,
        result.phase,
        result.ops_per_second,
        milliseconds(p50),
        milliseconds(p99),
        milliseconds(p999),
        result.errors,
        result.server_cores,
        cpu_micros_per_operation(result.server_cores, result.ops_per_second),
        result.generator_cores,
        cpu_micros_per_operation(result.generator_cores, result.ops_per_second),
    );
    for sample in &result.error_samples {
        println!("    error: {sample}");
    }
}

// ---------------------------------------------------------------------------------------
// Processes, ports and data directories
// ---------------------------------------------------------------------------------------

/// `count` consecutive free ports on 127.0.0.1 at or after `from`.
fn free_ports(from: u16, count: u16) -> Result<u16, String> {
    let last = from.saturating_add(PORT_SEARCH_SPAN);
    let mut base = from;
    while base.saturating_add(count) < last {
        let all_free =
            (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok(base);
        }
        base += count;
    }
    Err(format!(
        "no {count} consecutive free ports in {from}..{last}"
    ))
}

/// A fresh directory for one cluster's data, under the system's temporary directory
/// (a real disk here: the fsyncs must be real).
fn fresh_directory(name: &str) -> Result<PathBuf, String> {
    let root = std::env::temp_dir().join(format!("corekv-bench-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|error| format!("{}: {error}", root.display()))?;
    Ok(root)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Server processes of one cluster, stopped and cleaned up on drop.
#[derive(Debug)]
struct Processes {
    name: &'static str,
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    root: PathBuf,
}

impl Processes {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn check_alive(&self) -> Result<(), String> {
        for (index, child) in self.children.iter().enumerate() {
            let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("X");
            if state == "Z" || state == "X" {
                return Err(format!(
                    "{} member {} exited; its log ends with:\n{}",
                    self.name,
                    index + 1,
                    log_tail(&self.logs[index])
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT_MAX;
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(STARTUP_POLL_INTERVAL),
                }
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn spawn_logged(mut command: Command, log: &Path) -> Result<Child, String> {
    let file = fs::File::create(log).map_err(|error| format!("{}: {error}", log.display()))?;
    let file_for_errors = file
        .try_clone()
        .map_err(|error| format!("{}: {error}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file_for_errors)
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))
}

// ---------------------------------------------------------------------------------------
// corekv
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Corekv {
    /// "corekv", or "baseline" for the build compared against.
    name: &'static str,
    processes: Processes,
    clients: Vec<Arc<Client>>,
    threads_per_client: usize,
    generator_threads: usize,
}

impl System for Corekv {
    fn name(&self) -> &'static str {
        self.name
    }

    fn threads_for(&self, clients: usize) -> usize {
        self.generator_threads.min(clients)
    }

    fn driver(&self, thread: usize) -> Driver<'_> {
        let client = &self.clients[(thread / self.threads_per_client) % self.clients.len()];
        Driver::Pipelined(client)
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.pids()
    }

    fn check_alive(&self) -> Result<(), String> {
        self.processes.check_alive()
    }
}

/// Starts three `corekv server` processes and waits until every group has a leader that
/// takes writes.
fn start_corekv(
    arguments: &Arguments,
    binary: &Path,
    name: &'static str,
) -> Result<Corekv, String> {
    let root = fresh_directory(name)?;
    let shards = arguments.shards as u16;
    let mut next = arguments.base_port;
    let mut addresses = Vec::new();
    for _ in 0..NODES {
        let client = free_ports(next, 1)?;
        let peer = free_ports(client + 1, shards)?;
        next = peer + shards;
        addresses.push((client, peer));
    }
    let initial_cluster: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(index, (_, peer))| format!("{}=127.0.0.1:{peer}", index + 1))
        .collect();
    let initial_clients: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(index, (client, _))| format!("{}=127.0.0.1:{client}", index + 1))
        .collect();
    let mut processes = Processes {
        name: "corekv",
        children: Vec::new(),
        logs: Vec::new(),
        root: root.clone(),
    };
    for node in 1..=NODES {
        let mut command = Command::new(binary);
        command
            .arg("server")
            .args(["--node-id", &node.to_string()])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-clients", &initial_clients.join(",")])
            .arg("--data-dir")
            .arg(root.join(format!("node-{node}")))
            .args(["--shards", &arguments.shards.to_string()])
            .args(["--groups", &arguments.groups.to_string()])
            .args(&arguments.corekv_server_arg);
        let log = root.join(format!("node-{node}.log"));
        let child = spawn_logged(command, &log)?;
        println!(
            "corekv node {node}: pid {}, clients on 127.0.0.1:{}, log {}",
            child.id(),
            addresses[node - 1].0,
            log.display()
        );
        processes.children.push(child);
        processes.logs.push(log);
    }
    let endpoints: Vec<String> = addresses
        .iter()
        .map(|(client, _)| format!("127.0.0.1:{client}"))
        .collect();
    let deadline = Instant::now() + STARTUP_WAIT_MAX;
    let first = loop {
        processes.check_alive()?;
        match Client::connect(&endpoints, ClientOptions::default()) {
            Ok(client) => break client,
            Err(error) if Instant::now() >= deadline => {
                return Err(format!("corekv did not answer: {error}"))
            }
            Err(_) => std::thread::sleep(STARTUP_POLL_INTERVAL),
        }
    };
    // One put per group: each group has a leader that commits through the WAL.
    let mut missing: Vec<u64> = (0..arguments.groups).collect();
    let mut probe = 0u64;
    while !missing.is_empty() {
        let key = format!("startup-{probe}").into_bytes();
        probe += 1;
        let group = corekv::keyspace::group_of(&key, first.group_count());
        if !missing.contains(&group) {
            continue;
        }
        loop {
            processes.check_alive()?;
            match first.put(&key, b"ready") {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("corekv group {group} took no write: {error}"))
                }
                Err(_) => std::thread::sleep(STARTUP_POLL_INTERVAL),
            }
        }
        missing.retain(|&other| other != group);
    }
    let mut leaders = [0u32; NODES + 1];
    for node in first.status_all() {
        if let Ok(status) = node.result {
            for group in status.groups {
                if group.role == Some(corekv::raft::Role::Leader) {
                    leaders[status.node_id as usize % (NODES + 1)] += 1;
                }
            }
        }
    }
    println!(
        "corekv: {} groups, {} shard(s) per node; groups led by node 1/2/3: {}/{}/{}",
        arguments.groups, arguments.shards, leaders[1], leaders[2], leaders[3]
    );
    drop(first);
    // Every write in flight holds a session until its result, and at most every client's
    // operation is in flight on one connection: size both bounds so that neither stalls
    // the generator.
    let in_flight_max = arguments.clients.iter().copied().max().unwrap_or(1);
    let options = ClientOptions {
        sessions_max: in_flight_max.clamp(SESSIONS_MAX_DEFAULT, SESSIONS_CEILING),
        in_flight_max: in_flight_max.max(IN_FLIGHT_MAX_DEFAULT),
        ..ClientOptions::default()
    };
    let clients_needed = arguments
        .generator_threads
        .min(in_flight_max)
        .div_ceil(arguments.threads_per_sdk_client);
    let mut clients = Vec::new();
    while clients.len() < clients_needed {
        let client = Client::connect(&endpoints, options.clone())
            .map_err(|error| format!("corekv: an SDK client: {error}"))?;
        clients.push(Arc::new(client));
    }
    Ok(Corekv {
        name,
        processes,
        clients,
        threads_per_client: arguments.threads_per_sdk_client,
        generator_threads: arguments.generator_threads,
    })
}

// ---------------------------------------------------------------------------------------
// etcd through its v3 JSON gateway
// ---------------------------------------------------------------------------------------

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as the gateway's JSON wants bytes.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (word >> (18 - 6 * position)) & 0x3f;
                out.push(BASE64_ALPHABET[index as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One HTTP/1.1 keep-alive connection to one etcd member.
#[derive(Debug)]
struct HttpConnection {
    address: SocketAddr,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    request: Vec<u8>,
}

/// A response: status code and body.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

impl HttpConnection {
    fn new(address: SocketAddr) -> HttpConnection {
        HttpConnection {
            address,
            stream: None,
            buffer: Vec::with_capacity(HTTP_READ_CHUNK_BYTES),
            request: Vec::with_capacity(1024),
        }
    }

    /// POSTs a JSON body; on any failure the connection is dropped and the next call
    /// opens a new one.
    fn post(&mut self, path: &str, body: &str) -> Result<HttpResponse, String> {
        let result = self.try_post(path, body);
        if result.is_err() {
            self.stream = None;
            self.buffer.clear();
        }
        result
    }

    fn try_post(&mut self, path: &str, body: &str) -> Result<HttpResponse, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.address, HTTP_CONNECT_TIMEOUT)
                .map_err(|error| format!("connect {}: {error}", self.address))?;
            stream
                .set_nodelay(true)
                .map_err(|error| error.to_string())?;
            stream
                .set_read_timeout(Some(HTTP_TIMEOUT))
                .map_err(|error| error.to_string())?;
            stream
                .set_write_timeout(Some(HTTP_TIMEOUT))
                .map_err(|error| error.to_string())?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        )
        .expect("writing to a vector");
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&self.request)
            .map_err(|error| format!("write: {error}"))?;
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            if self.buffer.len() > HTTP_HEAD_BYTES_MAX {
                return Err("response head too long".to_string());
            }
            read_more(stream, &mut self.buffer)?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line `{status_line}`"))?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => content_length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        self.buffer.drain(..head_end + 4);
        let body = if chunked {
            read_chunked(stream, &mut self.buffer)?
        } else {
            let length = content_length.ok_or("response has neither length nor chunks")?;
            if length > HTTP_BODY_BYTES_MAX {
                return Err(format!("response body of {length} bytes"));
            }
            while self.buffer.len() < length {
                read_more(stream, &mut self.buffer)?;
            }
            self.buffer.drain(..length).collect()
        };
        if close {
            self.stream = None;
        }
        Ok(HttpResponse { status, body })
    }
}

fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; HTTP_READ_CHUNK_BYTES];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed by etcd".to_string()),
            Ok(read) => {
                buffer.extend_from_slice(&chunk[..read]);
                return Ok(());
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("read: {error}")),
        }
    }
}

/// Reads a chunked body (`size\r\n data\r\n ... 0\r\n\r\n`, no trailers expected).
fn read_chunked(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = find(buffer, b"\r\n") {
                break at;
            }
            read_more(stream, buffer)?;
        };
        let size_text = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        if body.len() + size > HTTP_BODY_BYTES_MAX {
            return Err("chunked body too long".to_string());
        }
        buffer.drain(..line_end + 2);
        while buffer.len() < size + 2 {
            read_more(stream, buffer)?;
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

#[derive(Debug)]
struct Etcd {
    processes: Processes,
    endpoints: Vec<SocketAddr>,
}

struct EtcdWorker {
    connection: HttpConnection,
    body: String,
}

/// True when a gateway answer carries a response header with a revision.
fn has_revision(body: &[u8]) -> bool {
    find(body, b"\"header\"").is_some() && find(body, b"\"revision\":\"").is_some()
}

impl EtcdWorker {
    fn call(&mut self, path: &str) -> Result<Vec<u8>, String> {
        let response = self.connection.post(path, &self.body)?;
        if response.status != 200 {
            return Err(format!(
                "{path}: HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        if !has_revision(&response.body) {
            return Err(format!(
                "{path}: no header revision in {}",
                String::from_utf8_lossy(&response.body)
            ));
        }
        Ok(response.body)
    }
}

impl Worker for EtcdWorker {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.body.clear();
        write!(
            self.body,
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            base64(key),
            base64(value)
        )
        .expect("writing to a string");
        self.call("/v3/kv/put").map(|_| ())
    }

    fn get(&mut self, key: &[u8], expected: &[u8]) -> Result<(), String> {
        self.body.clear();
        // Without "serializable": true, a range is linearizable.
        write!(self.body, "{{\"key\":\"{}\"}}", base64(key)).expect("writing to a string");
        let body = self.call("/v3/kv/range")?;
        let value = format!("\"value\":\"{}\"", base64(expected));
        if find(&body, b"\"count\":\"1\"").is_none() || find(&body, value.as_bytes()).is_none() {
            return Err(format!(
                "{}: missing or different: {}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }
}

impl Etcd {
    fn worker(&self, thread: usize) -> EtcdWorker {
        EtcdWorker {
            connection: HttpConnection::new(self.endpoints[thread % self.endpoints.len()]),
            body: String::new(),
        }
    }
}

impl System for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn threads_for(&self, clients: usize) -> usize {
        clients
    }

    fn driver(&self, thread: usize) -> Driver<'_> {
        Driver::Blocking(Box::new(self.worker(thread)))
    }

    fn pids(&self) -> Vec<u32> {
        self.processes.pids()
    }

    fn check_alive(&self) -> Result<(), String> {
        self.processes.check_alive()
    }
}

/// True when `binary` runs (`etcd --version`).
fn etcd_present(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts a 3-member etcd cluster (fsync on, as by default) and waits until every
/// member takes a put.
fn start_etcd(arguments: &Arguments, first_port: u16) -> Result<Etcd, String> {
    let root = fresh_directory("etcd")?;
    let mut next = first_port;
    let mut ports = Vec::new();
    for _ in 0..NODES {
        let client = free_ports(next, 1)?;
        let peer = free_ports(client + 1, 1)?;
        next = peer + 1;
        ports.push((client, peer));
    }
    let initial_cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(index, (_, peer))| format!("member{}=http://127.0.0.1:{peer}", index + 1))
        .collect();
    let mut processes = Processes {
        name: "etcd",
        children: Vec::new(),
        logs: Vec::new(),
        root: root.clone(),
    };
    for (index, (client, peer)) in ports.iter().enumerate() {
        let name = format!("member{}", index + 1);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new(&arguments.etcd_binary);
        command
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(root.join(&name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args([
                "--initial-cluster-token",
                &format!("bench-{}", std::process::id()),
            ])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let log = root.join(format!("{name}.log"));
        let child = spawn_logged(command, &log)?;
        println!(
            "etcd {name}: pid {}, clients on {client_url}, log {}",
            child.id(),
            log.display()
        );
        processes.children.push(child);
        processes.logs.push(log);
    }
    let endpoints: Vec<SocketAddr> = ports
        .iter()
        .map(|(client, _)| SocketAddr::from(([127, 0, 0, 1], *client)))
        .collect();
    let etcd = Etcd {
        processes,
        endpoints,
    };
    let deadline = Instant::now() + STARTUP_WAIT_MAX;
    for member in 0..NODES {
        let mut worker = etcd.worker(member);
        loop {
            etcd.check_alive()?;
            match worker.put(b"startup", b"ready") {
                Ok(()) => break,
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("etcd member {} took no write: {error}", member + 1))
                }
                Err(_) => std::thread::sleep(STARTUP_POLL_INTERVAL),
            }
        }
    }
    Ok(etcd)
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

/// The release `corekv` binary: given, or the one cargo built for this bench.
fn corekv_binary(arguments: &Arguments) -> PathBuf {
    arguments
        .corekv_binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_corekv")))
}

fn main() {
    let arguments = Arguments::parse();
    if arguments.clients.contains(&0) || arguments.keys == 0 || arguments.seconds <= 0.0 {
        eprintln!("--clients, --keys and --seconds must be positive");
        std::process::exit(2);
    }
    if arguments.threads_per_sdk_client == 0
        || arguments.generator_threads == 0
        || arguments.shards == 0
        || arguments.groups == 0
    {
        eprintln!(
            "--threads-per-sdk-client, --generator-threads, --shards and --groups must be \
             positive"
        );
        std::process::exit(2);
    }
    let value: Vec<u8> = (0..arguments.value_bytes)
        .map(|index| b'a' + (index % 26) as u8)
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cluster bench: {NODES} nodes on loopback, {cores} cores, {} keys, {}-byte values, \
         clients {:?}, {:.0} s warm-up + {:.0} s per phase, fsync on",
        arguments.keys,
        arguments.value_bytes,
        arguments.clients,
        arguments.warmup_seconds,
        arguments.seconds
    );
    // The machine may be shared: its load before the run says how far to trust it.
    println!(
        "load average before the run: {}",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut results: Vec<PhaseResult> = Vec::new();
    let mut failed = false;
    let mut etcd_ran = false;

    if arguments.systems != Systems::Etcd {
        let mut builds = Vec::new();
        if let Some(baseline) = &arguments.baseline_binary {
            builds.push(("baseline", baseline.clone()));
        }
        builds.push(("corekv", corekv_binary(&arguments)));
        let rounds = if builds.len() > 1 {
            arguments.rounds.max(1)
        } else {
            1
        };
        for round in 1..=rounds {
            for (name, binary) in &builds {
                println!(
                    "{name} binary (round {round} of {rounds}): {}",
                    binary.display()
                );
                match start_corekv(&arguments, binary, name) {
                    Ok(corekv) => {
                        println!(
                            "{name}: {} generator thread(s) over {} SDK client(s), {} threads \
                             each at most",
                            corekv.generator_threads,
                            corekv.clients.len(),
                            corekv.threads_per_client
                        );
                        results.extend(load(&corekv, &arguments, &value));
                    }
                    Err(error) => {
                        println!("{name}: could not start: {error}");
                        failed = true;
                    }
                }
            }
        }
        if rounds > 1 {
            results = best_rounds(results);
        }
    }
    if arguments.systems != Systems::Corekv {
        if etcd_present(&arguments.etcd_binary) {
            let first_port = arguments.base_port.saturating_add(100);
            match start_etcd(&arguments, first_port) {
                Ok(etcd) => {
                    etcd_ran = true;
                    results.extend(load(&etcd, &arguments, &value));
                }
                Err(error) => {
                    println!("etcd: could not start: {error}");
                    failed = true;
                }
            }
        } else {
            println!(
                "etcd: `{}` not found; reporting corekv alone \
                 (install with `apt-get install -y etcd-server etcd-client`, or run \
                 tools/bench-cluster.sh)",
                arguments.etcd_binary.display()
            );
        }
    }

    println!();
    println!("summary");
    print_header();
    for result in &results {
        print_result(result);
    }
    if arguments.baseline_binary.is_some() {
        print_ratios(&results, "baseline");
    }
    if etcd_ran {
        print_ratios(&results, "etcd");
    }
    print_goals(&results);
    if failed {
        std::process::exit(1);
    }
}

/// Keeps, per system, client count and phase, the round with the most operations per
/// second (and its latencies, errors and CPU).
fn best_rounds(results: Vec<PhaseResult>) -> Vec<PhaseResult> {
    let mut best: Vec<PhaseResult> = Vec::new();
    for result in results {
        let same = best.iter_mut().find(|kept| {
            kept.system == result.system
                && kept.clients == result.clients
                && kept.phase == result.phase
        });
        match same {
            Some(kept) if kept.ops_per_second >= result.ops_per_second => {}
            Some(kept) => *kept = result,
            None => best.push(result),
        }
    }
    best
}

/// The ratios corekv / `reference` per client count and phase: ops/s (above 1: corekv
/// is faster), latency and servers' CPU per operation (below 1: corekv is cheaper).
fn print_ratios(results: &[PhaseResult], reference: &str) {
    println!();
    println!("corekv / {reference}");
    println!(
        "{:>7} {:<9} {:>10} {:>10} {:>10} {:>12}",
        "clients", "phase", "ops/s", "p50", "p99", "srv cpu/op"
    );
    let ratio = |ours: f64, theirs: f64| {
        if theirs > 0.0 && ours.is_finite() && theirs.is_finite() {
            format!("{:.3}x", ours / theirs)
        } else {
            "-".to_string()
        }
    };
    let cpu_per_op = |result: &PhaseResult| result.server_cores / result.ops_per_second.max(1e-9);
    for corekv in results.iter().filter(|result| result.system == "corekv") {
        let Some(other) = results.iter().find(|result| {
            result.system == reference
                && result.clients == corekv.clients
                && result.phase == corekv.phase
        }) else {
            continue;
        };
        println!(
            "{:>7} {:<9} {:>10} {:>10} {:>10} {:>12}",
            corekv.clients,
            corekv.phase,
            ratio(corekv.ops_per_second, other.ops_per_second),
            ratio(corekv.latency_us.0 as f64, other.latency_us.0 as f64),
            ratio(corekv.latency_us.1 as f64, other.latency_us.1 as f64),
            ratio(cpu_per_op(corekv), cpu_per_op(other)),
        );
    }
}

/// The project's goals on this machine against the best corekv figures measured.
fn print_goals(results: &[PhaseResult]) {
    /// The corekv runs of `phase` without errors.
    fn corekv<'a>(
        results: &'a [PhaseResult],
        phase: &'static str,
    ) -> impl Iterator<Item = &'a PhaseResult> + 'a {
        results
            .iter()
            .filter(move |result| result.system == "corekv" && result.phase == phase)
            .filter(|result| result.errors == 0)
    }
    if results.iter().all(|result| result.system != "corekv") {
        return;
    }
    let fastest = |phase: &'static str| {
        corekv(results, phase).max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second))
    };
    let describe = |result: Option<&PhaseResult>| match result {
        Some(result) => format!(
            "{:.0}/s at p99 {} ms ({} clients)",
            result.ops_per_second,
            milliseconds(result.latency_us.1),
            result.clients
        ),
        None => "none".to_string(),
    };
    let put_within_bound = corekv(results, "put")
        .filter(|result| result.latency_us.1 < PUT_P99_GOAL_US)
        .max_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second));
    let put_met = put_within_bound.is_some_and(|result| result.ops_per_second >= PUT_GOAL);
    let get_best = fastest("get");
    let get_met = get_best.is_some_and(|result| result.ops_per_second >= GET_GOAL);
    let verdict = |met: bool| if met { "met" } else { "not met" };
    println!();
    println!(
        "goal: >= {PUT_GOAL:.0} durable puts/s at p99 < {} ms: {}; fastest put run {}; \
         fastest within the p99 bound {}",
        PUT_P99_GOAL_US / 1000,
        verdict(put_met),
        describe(fastest("put")),
        describe(put_within_bound)
    );
    println!(
        "goal: >= {GET_GOAL:.0} linearizable gets/s: {}; fastest get run {}",
        verdict(get_met),
        describe(get_best)
    );
}
