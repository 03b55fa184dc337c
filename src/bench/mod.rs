//! `corekv bench`: load any corekv cluster through the SDK and report what it served:
//! throughput, errors by kind, latency quantiles per operation kind, the servers' CPU
//! per operation, progress while it runs, JSON and an SVG plot.
//!
//! | file          | owns                                                             |
//! |---------------|------------------------------------------------------------------|
//! | `keys.rs`     | key names, value shapes, uniform/zipfian/latest key choice       |
//! | `workload.rs` | the workloads' mixes (put, get, mixed, YCSB A-F, append, txn, scan) |
//! | `ops.rs`      | corekv requests for planned operations, and the check of answers |
//! | `schedule.rs` | closed loop, or open loop at scheduled times (`--rate`)          |
//! | `driver.rs`   | many operations in flight from one thread through one SDK client |
//! | `latency.rs`  | the histogram layout and quantiles shared with the benches       |
//! | `recorder.rs` | shared atomic counts and histograms, errors by kind              |
//! | `cpu.rs`      | processes' CPU from `/proc/<pid>/stat`                           |
//! | `report.rs`   | the report (text, JSON)                                          |
//! | `progress.rs` | the run cut into one-second intervals, the progress line         |
//! | `plot.rs`     | throughput and p99 over time as SVG                              |
//!
//! A run: connect `--connections` SDK clients; wait until every group answers a
//! linearizable read (`--wait-ready`); write every key once when the workload reads
//! existing keys (the fill, reported apart); then `--threads` threads each keep their
//! share of `--in-flight` operations going (`driver.rs`) for `--count` operations or
//! `--duration`, after an optional `--warmup` that is not counted. Every answer is
//! checked (`ops.rs`); a failed operation counts under its kind of error and never as
//! throughput. With `--rate`, operations start at scheduled times and their latency
//! counts from those times (`schedule.rs`). The `workload.rs`, `keys.rs`, `recorder.rs`,
//! `cpu.rs` and `report.rs` parts know nothing of corekv's SDK: the etcd load generator
//! in `tools/etcd-load/` uses them too.

pub mod cpu;
pub mod driver;
pub mod keys;
pub mod latency;
pub mod ops;
pub mod plot;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod schedule;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use thiserror::Error;

use crate::client::{
    Client, ClientError, ClientOptions, ATTEMPT_TIMEOUT_DEFAULT, CONNECT_TIMEOUT_DEFAULT,
    IN_FLIGHT_CEILING, IN_FLIGHT_MAX_DEFAULT, SESSIONS_CEILING, SESSIONS_MAX_DEFAULT,
};
use crate::flag_values::{parse_duration, DurationBounds, DurationError};
use crate::kv::{self, RangeRequest};

use cpu::{clock_ticks_per_second, CpuMeter};
use driver::{Completion, Next, Source, Start};
use keys::{Distribution, KEYS_MAX};
use ops::{Checked, CorekvOps, Stage};
use progress::{Intervals, Progress};
use recorder::{Recorder, LATE_START};
use report::{CpuReport, FillReport, IntervalReport, Report, RunDescription};
use schedule::{Due, Limit, Schedule};
use workload::{InsertCounter, OpKind, PlanOptions, Planned, Planner, Workload};

// Usage and unavailable are the numbers the client commands use (src/cli.rs, in the
// binary, which this library cannot import), so a script reads them alike.

/// Exit code of a run in which some operations failed (the report says which).
pub const EXIT_OPERATIONS_FAILED: i32 = 1;
/// Exit code of a command line that cannot run.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a run that could not reach the cluster, or found it not ready.
pub const EXIT_UNAVAILABLE: i32 = 4;

/// Most SDK clients (`--connections`): each has a connection per node.
pub const CONNECTIONS_MAX: usize = 1024;
/// Most load threads.
pub const THREADS_MAX: usize = 256;
/// Longest scan (`--scan-length`).
pub const SCAN_LENGTH_MAX: u64 = 10_000;
/// Largest value (`--value-bytes`); the server's own bound is lower by default.
pub const VALUE_BYTES_MAX: usize = 64 << 20;
/// Longest key asked for (`--key-bytes`); the server's own bound is lower by default,
/// so a longer key is a way to see refusals counted as errors.
pub const KEY_BYTES_MAX: usize = 1 << 20;
/// How often the main thread looks whether the load threads are done.
const FINISH_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How often `--wait-ready` asks again.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Keys tried per group to find one of each group for the readiness check.
const READY_PROBES_PER_GROUP_MAX: u64 = 1024;

/// Why a bench could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cannot reach the cluster: {0}")]
    Connect(ClientError),
    #[error("the cluster is not ready: {0}")]
    NotReady(String),
    #[error("{path}: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Parses "500ms", "10s", "2m" or a bare number of seconds, from zero to a week.
pub fn parse_bench_duration(text: &str) -> Result<Duration, DurationError> {
    let bounds = DurationBounds {
        zero_allowed: true,
        max: Duration::from_secs(7 * 24 * 3600),
        described: "between 0 and a week",
    };
    parse_duration(text, bounds)
}

/// `corekv bench` flags.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Client addresses (host:port) of one or more nodes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7379",
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,
    /// What to run (see `src/bench/workload.rs` for the mixes).
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// `mixed`: the fraction of operations that are gets (the rest are puts).
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Keys of the keyspace (written once first when the workload reads them).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are picked (default: zipfian for the YCSB workloads, else uniform).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Bytes of every key, padded after the index (0: prefix plus 12 digits).
    #[arg(long, default_value_t = 0)]
    pub key_bytes: usize,
    /// The prefix of every key the bench touches.
    #[arg(long, default_value = "bench-")]
    pub key_prefix: String,
    /// Bytes of every value (and of every append).
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Scans read up to this many keys (each scan's length is uniform in 1..=N).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub scan_length: u64,
    /// Operations in flight in total, split over the threads.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// SDK clients (each with one pipelined connection per node).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Load threads; raised to --connections (every client has a thread of its own).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Run this many operations (instead of --duration).
    #[arg(long, conflicts_with_all = ["duration", "warmup"])]
    pub count: Option<u64>,
    /// Run for this long (default 10s): a number with ms, s or m.
    #[arg(long, value_parser = parse_bench_duration)]
    pub duration: Option<Duration>,
    /// Run this long first without counting (with --duration).
    #[arg(long, value_parser = parse_bench_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Open loop: start this many operations per second at scheduled times, whatever
    /// the answers; latency counts from the scheduled time.
    #[arg(long, value_name = "OPS_PER_SECOND")]
    pub rate: Option<f64>,
    /// Serializable gets and scans (from any replica, possibly stale).
    #[arg(long)]
    pub serializable: bool,
    /// Do not write the keyspace first (reads of unwritten keys then count as misses).
    #[arg(long, conflicts_with = "assume_filled")]
    pub no_fill: bool,
    /// Do not write the keyspace first: an earlier run with the same --keys, --key-prefix,
    /// --key-bytes and --value-bytes did, so a missing key is still an error.
    #[arg(long)]
    pub assume_filled: bool,
    /// Deadline of each operation, retries included.
    #[arg(long, value_parser = parse_bench_duration, default_value = "10s")]
    pub timeout: Duration,
    /// How long to wait for the cluster to answer and every group to have a leader
    /// (0: do not check).
    #[arg(long, value_parser = parse_bench_duration, default_value = "30s")]
    pub wait_ready: Duration,
    /// Server process ids whose CPU per operation to report (servers on this machine).
    #[arg(long, value_delimiter = ',', value_name = "PID,...")]
    pub server_pids: Vec<u32>,
    /// A file of server process ids (whitespace-separated), such as the
    /// `cluster.pids` that `corekv cluster` writes in its data directory.
    #[arg(long, value_name = "FILE")]
    pub server_pids_file: Option<PathBuf>,
    /// Print the report as JSON on stdout (the text summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write throughput and p99 over time to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl BenchArgs {
    fn check(&self) -> Result<(), BenchError> {
        let fail = |reason: &str| Err(BenchError::InvalidArgument(reason.to_string()));
        if self.keys == 0 || self.keys > KEYS_MAX / 2 {
            return fail("--keys must be in 1..=5*10^11 (inserts take indexes past them)");
        }
        if self.in_flight == 0 || self.in_flight > IN_FLIGHT_CEILING {
            return fail("--in-flight must be in 1..=2^20");
        }
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return fail("--connections must be in 1..=1024");
        }
        if self.connections > self.in_flight {
            return fail("--connections must be at most --in-flight");
        }
        if self.threads == 0 || self.threads > THREADS_MAX {
            return fail("--threads must be in 1..=256");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return fail("--read-ratio must be in 0..=1");
        }
        if self.scan_length == 0 || self.scan_length > SCAN_LENGTH_MAX {
            return fail("--scan-length must be in 1..=10000");
        }
        if self.value_bytes > VALUE_BYTES_MAX || self.key_bytes > KEY_BYTES_MAX {
            return fail("--value-bytes must be at most 64 MiB and --key-bytes at most 1 MiB");
        }
        if self.count == Some(0) {
            return fail("--count must be positive");
        }
        if self.duration.is_some_and(|duration| duration.is_zero()) || self.timeout.is_zero() {
            return fail("--duration and --timeout must be positive");
        }
        if self
            .rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return fail("--rate must be a positive number of operations per second");
        }
        if self
            .endpoints
            .iter()
            .all(|endpoint| endpoint.trim().is_empty())
        {
            return fail("--endpoints names no endpoint");
        }
        Ok(())
    }

    /// Threads that run: at least one per client, at most one per operation in flight.
    fn thread_count(&self) -> usize {
        self.threads.max(self.connections).min(self.in_flight)
    }

    fn distribution(&self) -> Distribution {
        self.distribution
            .unwrap_or_else(|| self.workload.default_distribution())
    }
}

/// The share of `total` that part `part` of `parts` takes (the first ones take the rest).
pub fn share(total: u64, parts: usize, part: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((part as u64) < total % parts)
}

/// Where one thread's operations come from.
enum Plan {
    Workload(Box<Planner>),
    /// The fill: every `step`-th key from `next` on, up to `end`.
    Fill {
        next: u64,
        step: u64,
        end: u64,
    },
}

/// An operation in flight, as the source tracks it.
#[derive(Debug)]
pub struct InFlight {
    planned: Planned,
    stage: Stage,
    latency_from: Instant,
    stamp: u64,
}

/// One thread's source of operations: its plan, its schedule, the checks, and where the
/// outcomes go.
struct LoadSource<'r> {
    plan: Plan,
    schedule: Schedule,
    ops: &'r CorekvOps,
    recorder: &'r Recorder,
    /// The stamp of this thread's next write: thread number in the top bits.
    stamp: u64,
}

impl LoadSource<'_> {
    fn plan_next(&mut self) -> Option<Planned> {
        match &mut self.plan {
            Plan::Workload(planner) => Some(planner.plan()),
            Plan::Fill { next, step, end } => {
                let index = *next;
                if index >= *end {
                    return None;
                }
                *next += *step;
                Some(Planned {
                    kind: OpKind::Put,
                    index,
                    length: 1,
                })
            }
        }
    }
}

impl Source for LoadSource<'_> {
    type Context = InFlight;

    fn next(&mut self, now: Instant) -> Next<InFlight> {
        let latency_from = match self.schedule.next(now) {
            Due::Done => return Next::Exhausted,
            Due::NotBefore(moment) => return Next::NotBefore(moment),
            Due::Now { latency_from, late } => {
                if late {
                    self.recorder.late_start();
                }
                latency_from
            }
        };
        let Some(planned) = self.plan_next() else {
            return Next::Exhausted;
        };
        self.stamp += 1;
        let (op, serializable) = self.ops.request(&planned, self.stamp);
        Next::Start(Start {
            op,
            serializable,
            context: InFlight {
                planned,
                stage: Stage::First,
                latency_from,
                stamp: self.stamp,
            },
        })
    }

    fn complete(
        &mut self,
        context: &mut InFlight,
        result: Result<kv::Response, ClientError>,
    ) -> Completion {
        let kind = context.planned.kind;
        match self
            .ops
            .check(&context.planned, &mut context.stage, context.stamp, result)
        {
            Checked::Then(op) => Completion::Then {
                op,
                serializable: false,
            },
            Checked::Done(outcome) => {
                self.recorder
                    .success(kind, context.latency_from.elapsed(), outcome);
                if let (OpKind::Insert, Plan::Workload(planner)) = (kind, &mut self.plan) {
                    planner.inserted(context.planned.index);
                }
                Completion::Done
            }
            Checked::Failed {
                kind: error_kind,
                message,
            } => {
                self.recorder.error(kind, &error_kind, || message);
                Completion::Done
            }
        }
    }
}

/// The clients of a run, connected once every group answers.
fn connect(args: &BenchArgs) -> Result<Vec<Client>, BenchError> {
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|endpoint| endpoint.trim().to_string())
        .filter(|endpoint| !endpoint.is_empty())
        .collect();
    // Each client carries the writes of its threads in flight, each holding a session,
    // and at most all of them on one connection: size both bounds past the share.
    let per_client = (args.in_flight.div_ceil(args.connections)).max(1);
    let options = ClientOptions {
        request_timeout: args.timeout,
        attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT.min(args.timeout),
        connect_timeout: CONNECT_TIMEOUT_DEFAULT.min(args.timeout),
        sessions_max: per_client.clamp(SESSIONS_MAX_DEFAULT, SESSIONS_CEILING),
        in_flight_max: per_client.clamp(IN_FLIGHT_MAX_DEFAULT, IN_FLIGHT_CEILING),
        ..ClientOptions::default()
    };
    let deadline = Instant::now() + args.wait_ready;
    let first = loop {
        match Client::connect(&endpoints, options.clone()) {
            Ok(client) => break client,
            Err(error) if Instant::now() >= deadline => return Err(BenchError::Connect(error)),
            Err(_) => std::thread::sleep(READY_POLL_INTERVAL),
        }
    };
    if !args.wait_ready.is_zero() {
        wait_for_leaders(&first, args, deadline)?;
    }
    let mut clients = vec![first];
    while clients.len() < args.connections {
        clients.push(Client::connect(&endpoints, options.clone()).map_err(BenchError::Connect)?);
    }
    Ok(clients)
}

/// Waits until a linearizable read of a key of every group succeeds: every group has a
/// leader that can confirm it still leads.
fn wait_for_leaders(
    client: &Client,
    args: &BenchArgs,
    deadline: Instant,
) -> Result<(), BenchError> {
    let groups = client.group_count();
    let mut probes: Vec<Option<Vec<u8>>> = vec![None; groups as usize];
    let mut found = 0;
    for probe in 0..groups.saturating_mul(READY_PROBES_PER_GROUP_MAX) {
        if found == groups {
            break;
        }
        let key = format!("{}ready-{probe}", args.key_prefix).into_bytes();
        let group = crate::keyspace::group_of(&key, groups) as usize;
        if probes[group].is_none() {
            probes[group] = Some(key);
            found += 1;
        }
    }
    for (group, key) in probes.iter().enumerate() {
        let Some(key) = key else { continue };
        loop {
            match client.execute(kv::Op::Range(RangeRequest::get(key)), false) {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => {
                    return Err(BenchError::NotReady(format!(
                        "group {group} did not answer a linearizable read: {error}"
                    )))
                }
                Err(_) => std::thread::sleep(READY_POLL_INTERVAL),
            }
        }
    }
    Ok(())
}

/// The server pids from the flags and the pid file.
fn server_pids(args: &BenchArgs) -> Result<Vec<u32>, BenchError> {
    let mut pids = args.server_pids.clone();
    if let Some(path) = &args.server_pids_file {
        let text = std::fs::read_to_string(path).map_err(|error| BenchError::File {
            path: path.clone(),
            error,
        })?;
        for word in text.split_whitespace() {
            let pid = word.parse().map_err(|_| {
                BenchError::InvalidArgument(format!("{}: {word:?} is not a pid", path.display()))
            })?;
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Runs `sources` (one per thread, with its client and in-flight share) to the end while
/// the main thread prints progress every [`progress::PROGRESS_INTERVAL`]. Recording starts after
/// `warmup`; returns the intervals and the measured seconds (to the last thread's end).
fn run_threads(
    clients: &[Client],
    sources: Vec<(usize, usize, LoadSource<'_>)>,
    recorder: &Recorder,
    warmup: Duration,
    progress: &Progress,
    mut on_measure_start: impl FnMut(),
) -> (Vec<IntervalReport>, f64) {
    let last_end = Mutex::new(Instant::now());
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .into_iter()
            .map(|(client, in_flight, mut source)| {
                let client = &clients[client];
                let last_end = &last_end;
                scope.spawn(move || {
                    driver::drive(client, in_flight, &mut source)
                        .expect("the in-flight share is a valid queue bound");
                    let now = Instant::now();
                    let mut last = last_end.lock().unwrap_or_else(PoisonError::into_inner);
                    *last = (*last).max(now);
                })
            })
            .collect();
        let finished = || handles.iter().all(|handle| handle.is_finished());
        let start = Instant::now();
        recorder.set_recording(warmup.is_zero());
        while !finished() && start.elapsed() < warmup {
            std::thread::sleep(FINISH_POLL_INTERVAL);
        }
        recorder.set_recording(true);
        on_measure_start();
        let measure_start = Instant::now();
        let mut intervals = Intervals::new(recorder, measure_start);
        loop {
            let done = finished();
            intervals.tick(recorder, Instant::now(), done, progress);
            if done {
                break;
            }
            let until_tick = intervals
                .next_end()
                .saturating_duration_since(Instant::now());
            std::thread::sleep(FINISH_POLL_INTERVAL.min(until_tick));
        }
        progress.finish();
        let end = *last_end.lock().unwrap_or_else(PoisonError::into_inner);
        (
            intervals.into_reports(),
            end.saturating_duration_since(measure_start).as_secs_f64(),
        )
    })
}

/// Runs the bench and returns its report (progress goes to stderr on the way).
pub fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    args.check()?;
    let pids = server_pids(args)?;
    let missing: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&pid| !cpu::is_alive(pid))
        .collect();
    if !missing.is_empty() {
        return Err(BenchError::InvalidArgument(format!(
            "no running process with pid {missing:?}"
        )));
    }
    let clients = connect(args)?;
    let threads = args.thread_count();
    let needs_keys = args.workload.reads_existing_keys() && !args.no_fill;
    let fill = needs_keys && !args.assume_filled;
    let ops = CorekvOps::new(
        args.key_prefix.as_bytes(),
        args.key_bytes,
        args.value_bytes,
        args.serializable,
        args.keys,
        needs_keys,
    );
    let thread_client = |thread: usize| thread % clients.len();
    let in_flight_of = |thread: usize| share(args.in_flight as u64, threads, thread) as usize;

    let mut fill_report = None;
    if fill {
        let fill_recorder = Recorder::new();
        let sources = (0..threads)
            .map(|thread| {
                let source = LoadSource {
                    plan: Plan::Fill {
                        next: thread as u64,
                        step: threads as u64,
                        end: args.keys,
                    },
                    schedule: Schedule::closed(Instant::now(), Limit::Count(u64::MAX)),
                    ops: &ops,
                    recorder: &fill_recorder,
                    stamp: 0,
                };
                (thread_client(thread), in_flight_of(thread), source)
            })
            .collect();
        let (_, seconds) = run_threads(
            &clients,
            sources,
            &fill_recorder,
            Duration::ZERO,
            &Progress::new(args.quiet, "fill"),
            || {},
        );
        let snapshot = fill_recorder.snapshot();
        fill_report = Some(FillReport {
            keys: args.keys,
            seconds,
            errors: snapshot.error_count(),
        });
        if snapshot.error_count() > 0 {
            // The run's reads would count the missing keys as errors of their own: say
            // where they come from.
            for (kind, tally) in &snapshot.errors {
                eprintln!(
                    "fill: {} errors of kind {kind}, e.g. {:?}",
                    tally.count, tally.samples
                );
            }
        }
    }

    let recorder = Recorder::new();
    let inserts = InsertCounter::new(args.keys);
    let plan = PlanOptions {
        workload: args.workload,
        keys: args.keys,
        distribution: args.distribution(),
        read_ratio: args.read_ratio,
        scan_length_max: args.scan_length,
    };
    let start = Instant::now();
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let sources = (0..threads)
        .map(|thread| {
            let limit = match args.count {
                Some(count) => Limit::Count(share(count, threads, thread)),
                None => Limit::Until(start + args.warmup + duration),
            };
            let schedule = match args.rate {
                Some(rate) => Schedule::open(start, rate / threads as f64, limit, LATE_START),
                None => Schedule::closed(start, limit),
            };
            let seed = args
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(thread as u64);
            let source = LoadSource {
                plan: Plan::Workload(Box::new(Planner::new(&plan, seed, inserts.clone()))),
                schedule,
                ops: &ops,
                recorder: &recorder,
                stamp: (thread as u64 + 1) << 40,
            };
            (thread_client(thread), in_flight_of(thread), source)
        })
        .collect();
    let ticks = clock_ticks_per_second();
    let mut meters = None;
    let (intervals, elapsed) = run_threads(
        &clients,
        sources,
        &recorder,
        args.warmup,
        &Progress::new(args.quiet, args.workload.name()),
        || {
            let servers = CpuMeter::start(pids.iter().map(u32::to_string).collect(), ticks);
            let generator = CpuMeter::start(vec!["self".to_string()], ticks);
            meters = Some((servers, generator));
        },
    );
    let snapshot = recorder.snapshot();
    let description = RunDescription {
        system: "corekv".to_string(),
        workload: args.workload.name().to_string(),
        distribution: format!("{:?}", args.distribution()).to_lowercase(),
        keys: args.keys,
        key_bytes: args.key_bytes,
        value_bytes: args.value_bytes,
        in_flight: args.in_flight,
        connections: clients.len(),
        threads,
        rate_per_second: args.rate,
        serializable: args.serializable,
    };
    let mut report = Report::new(description, &snapshot, elapsed, intervals);
    report.fill = fill_report;
    if let Some((servers, generator)) = meters {
        if !pids.is_empty() {
            report.server_cpu = Some(CpuReport::new(pids.clone(), servers.stop(), report.ops));
        }
        report.generator_cpu = Some(CpuReport::new(
            vec![std::process::id()],
            generator.stop(),
            report.ops,
        ));
    }
    if let Some(path) = &args.plot {
        let title = format!("corekv {}", args.workload.name());
        std::fs::write(path, plot::svg(&title, &report.intervals)).map_err(|error| {
            BenchError::File {
                path: path.clone(),
                error,
            }
        })?;
    }
    Ok(report)
}

/// `corekv bench`: runs, prints the report (JSON on stdout with `--json`, the text
/// summary on stdout otherwise, on stderr with it), and returns the exit code.
pub fn command(args: BenchArgs) -> i32 {
    match run(&args) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report.text());
                println!("{}", report.to_json());
            } else {
                print!("{}", report.text());
            }
            if report.errors > 0 {
                EXIT_OPERATIONS_FAILED
            } else {
                0
            }
        }
        Err(error) => {
            eprintln!("corekv bench: {error}");
            match error {
                BenchError::InvalidArgument(_) => EXIT_USAGE,
                BenchError::File { .. } => EXIT_USAGE,
                BenchError::Connect(_) | BenchError::NotReady(_) => EXIT_UNAVAILABLE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Durations take ms, s, m or bare seconds, zero included, and refuse the rest.
    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_bench_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_bench_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_bench_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_bench_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_bench_duration("-1s").is_err());
        assert!(parse_bench_duration("5h").is_err());
    }

    // Shares add up to the total and differ by at most one.
    #[test]
    fn shares_add_up() {
        for (total, parts) in [(10u64, 3usize), (2, 5), (64, 2)] {
            let shares: Vec<u64> = (0..parts).map(|part| share(total, parts, part)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }
}
