//! End-to-end throughput and latency of a 3-node corekv cluster, with a baseline build
//! loaded the same way in the same run as the reference when one is given.
//!
//! The cluster runs on loopback from fresh data directories with fsync on. It is first
//! filled (every key written once), then loaded for every client count and phase:
//! durable puts over the keyspace, linearizable gets, and a 70/30 put/get mix. Each
//! phase warms up, then measures for a fixed time; only the operations that complete
//! inside the window count. Every response is checked: a failed put, a failed get, and
//! a get that does not return the value the fill wrote are errors, counted apart and
//! never as throughput. The report gives ops/s, p50/p99/p999 latency, errors, and the
//! CPU the servers (`srv`) and this load generator (`gen`) used, as cores busy on
//! average and as CPU microseconds per operation (the machine has few cores, the servers
//! and the generator share them, and other work may too: CPU per operation says more
//! than ops/s on a busy machine), then the ratio corekv/baseline per phase and the goals.
//!
//! `--clients` is the number of operations in flight in total (a closed loop: each one
//! that completes is followed at once by the next).
//!
//! corekv is reached through the SDK (`corekv::client::Client`) by a few generator
//! threads (`--generator-threads`, default 2), which split the clients between them:
//! each runs `corekv::bench::driver` (the pipelined driver `corekv bench` uses too),
//! which keeps its share of operations in flight with `Client::start_tagged`, sleeps on
//! one completion queue until some operation has news, moves on exactly the tagged
//! operations, and writes the operations started after one wake-up together
//! (`Client::batch`). A latency is recorded from just before an operation's start to the
//! moment its completion is observed. `--threads-per-sdk-client` generator threads share
//! one `Client` (its pipelined connections, one per node); its session pool is sized so
//! every write in flight holds its own session. The fill runs the same way.
//!
//! etcd is no longer loaded here: the comparison with etcd goes over etcd's native gRPC
//! API with a pipelined async client, which needs tokio, tonic and protoc, so it lives in
//! `tools/bench-vs-etcd.sh` (and its `tools/etcd-load/` crate) outside this crate's build.
//! The JSON gateway client this bench had understated etcd (one blocking HTTP/1.1 call
//! per thread).
//!
//! Run: `cargo bench --bench cluster` (builds the release `corekv` binary, which the
//! bench starts from `target/release/corekv`), or `tools/bench-cluster.sh`. Options
//! after `--`, e.g. `cargo bench --bench cluster -- --clients 64 --seconds 5`; compare
//! with the build before a change with `--baseline-binary` (`tools/build-baseline.sh`)
//! and `--rounds`.

#[path = "support/latency.rs"]
mod latency;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use corekv::bench::cpu::{clock_ticks_per_second, cpu_seconds};
use corekv::bench::driver::{self, Completion, Next, Source, Start};
use corekv::bench::keys::Rng;
use corekv::bench::share;
use corekv::client::{
    Client, ClientError, ClientOptions, IN_FLIGHT_MAX_DEFAULT, SESSIONS_CEILING,
    SESSIONS_MAX_DEFAULT,
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

#[derive(Debug, Parser)]
struct Arguments {
    /// Seconds each phase is measured.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds each phase runs before it is measured.
    #[arg(long, default_value_t = 3.0)]
    warmup_seconds: f64,
    /// Operations in flight in total, one run per count, split over the generator
    /// threads.
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
    /// First port tried for the cluster's listeners.
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

fn key_of(index: u64) -> Vec<u8> {
    format!("bench-{index:08}").into_bytes()
}

// ---------------------------------------------------------------------------------------
// Phases and their measurement
// ---------------------------------------------------------------------------------------

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

/// CPU seconds of the cluster's processes and of this process.
fn cpu_sample(corekv: &Corekv, ticks_per_second: f64) -> (f64, f64) {
    let servers = corekv
        .processes
        .pids()
        .iter()
        .filter_map(|pid| cpu_seconds(&pid.to_string(), ticks_per_second))
        .sum();
    (
        servers,
        cpu_seconds("self", ticks_per_second).unwrap_or(0.0),
    )
}

/// The operation mix of a phase: true for a put.
fn is_put(phase: Phase, rng: &mut Rng) -> bool {
    match phase {
        Phase::Put => true,
        Phase::Get => false,
        Phase::Mix => rng.below(100) < MIX_PUT_PERCENT,
    }
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

/// An operation in flight: its key, whether it puts, and when it started.
struct InFlight {
    key: Vec<u8>,
    put: bool,
    started: Instant,
}

/// A generator thread's operations for `corekv::bench::driver`: `next` hands out the
/// key and whether to put, `finished` gets each operation's start, the moment its
/// completion was observed, and its checked outcome.
struct PhaseSource<'v, N, F> {
    value: &'v [u8],
    next: N,
    finished: F,
}

impl<N, F> Source for PhaseSource<'_, N, F>
where
    N: FnMut() -> Option<(Vec<u8>, bool)>,
    F: FnMut(Instant, Instant, Result<(), String>),
{
    type Context = InFlight;

    fn next(&mut self, _now: Instant) -> Next<InFlight> {
        let Some((key, put)) = (self.next)() else {
            return Next::Exhausted;
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
        Next::Start(Start {
            op,
            serializable: false,
            context: InFlight {
                key,
                put,
                started: Instant::now(),
            },
        })
    }

    fn complete(
        &mut self,
        operation: &mut InFlight,
        result: Result<kv::Response, ClientError>,
    ) -> Completion {
        let done = Instant::now();
        let checked = check_corekv(&operation.key, operation.put, self.value, result);
        (self.finished)(operation.started, done, checked);
        Completion::Done
    }
}

/// Keeps up to `in_flight` operations going through `client` until `next` hands out
/// no more and every operation started has completed.
fn generate(
    client: &Client,
    in_flight: usize,
    value: &[u8],
    next: impl FnMut() -> Option<(Vec<u8>, bool)>,
    finished: impl FnMut(Instant, Instant, Result<(), String>),
) {
    let mut source = PhaseSource {
        value,
        next,
        finished,
    };
    driver::drive(client, in_flight, &mut source).expect("a positive share of clients");
}

/// Runs one phase: `clients` operations in flight, warm-up, then the measured window.
fn run_phase(
    system: &Corekv,
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
                let client = system.client_for(thread);
                let mut rng = Rng::new(thread as u64 + 1);
                let mut tally = ThreadTally::new();
                barrier.wait();
                let begin = started
                    .lock()
                    .expect("start time")
                    .expect("set before release");
                let window_start = begin + warmup;
                let window_end = window_start + window;
                let record = |sent: Instant, done: Instant, result: Result<(), String>| {
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
                let next = || {
                    if Instant::now() >= window_end {
                        return None;
                    }
                    let key = key_of(rng.below(keys));
                    Some((key, is_put(phase, &mut rng)))
                };
                let in_flight = share(clients as u64, threads, thread) as usize;
                generate(client, in_flight, value, next, record);
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
fn fill(system: &Corekv, clients: usize, keys: u64, value: &[u8]) -> (f64, u64, Vec<String>) {
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
                let in_flight = share(clients as u64, threads, thread) as usize;
                let next = || next().map(|key| (key, true));
                let record = |_: Instant, _: Instant, result: Result<(), String>| match result {
                    Ok(()) => tally.ok += 1,
                    Err(error) => tally.error(error),
                };
                generate(system.client_for(thread), in_flight, value, next, record);
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

/// Fills, then runs every client count and phase on one cluster.
fn load(system: &Corekv, arguments: &Arguments, value: &[u8]) -> Vec<PhaseResult> {
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

impl Corekv {
    fn name(&self) -> &'static str {
        self.name
    }

    /// Generator threads that keep `clients` operations in flight.
    fn threads_for(&self, clients: usize) -> usize {
        self.generator_threads.min(clients)
    }

    /// The SDK client generator thread `thread` drives.
    fn client_for(&self, thread: usize) -> &Client {
        &self.clients[(thread / self.threads_per_client) % self.clients.len()]
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
    println!(
        "etcd: compared over its native gRPC API by tools/bench-vs-etcd.sh, not by this bench"
    );
    println!();
    println!("summary");
    print_header();
    for result in &results {
        print_result(result);
    }
    if arguments.baseline_binary.is_some() {
        print_ratios(&results, "baseline");
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
