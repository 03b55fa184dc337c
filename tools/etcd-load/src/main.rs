//! etcd-load: loads an etcd cluster over its native gRPC API the way `corekv bench`
//! loads corekv, and prints the table of `tools/bench-vs-etcd.sh`.
//!
//! `etcd-load run` plans its operations with `corekv::bench` (the same workloads, keys,
//! values and seeds), turns each corekv request into the etcd call that means the same
//! (a range, a put, a compare-and-set transaction), turns the answer back into corekv's
//! types and checks it with the very checks `corekv bench` uses, so both systems are held
//! to the same answers. `--in-flight` operations run as tokio tasks, each waiting on its
//! own call (the gRPC channel multiplexes them), spread over `--connections` clients,
//! each a channel of its own to one member in turn. The report is `corekv bench`'s,
//! system "etcd", and `--json` prints it the same way.
//!
//! `etcd-load table FILE.json...` reads reports of both systems and prints, per workload
//! and in-flight count, ops/s, p50 and p99 of each, their ratio and the servers' CPU per
//! operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use corekv::bench::cpu::{clock_ticks_per_second, CpuMeter};
use corekv::bench::keys::Distribution;
use corekv::bench::ops::{Checked, CorekvOps, Stage};
use corekv::bench::parse_bench_duration;
use corekv::bench::progress::{Intervals, Progress};
use corekv::bench::recorder::Recorder;
use corekv::bench::report::{
    milliseconds, CpuReport, FillReport, IntervalReport, Report, RunDescription,
};
use corekv::bench::workload::{InsertCounter, OpKind, PlanOptions, Planned, Planner, Workload};
use corekv::kv;
use etcd_client::{Client, Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

/// Deadline of one etcd call; past it the operation is an error of kind "timeout".
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress reporter looks whether the load is done.
const FINISH_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Most gRPC clients (`--connections`).
const CONNECTIONS_MAX: usize = 1024;
/// Most tasks in flight (`--in-flight`).
const IN_FLIGHT_MAX: usize = 1 << 16;

#[derive(Debug, Parser)]
#[command(name = "etcd-load", about)]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load etcd and report.
    Run(RunArguments),
    /// Print the comparison table of `corekv bench --json` and `etcd-load run --json`
    /// reports.
    Table {
        /// Report files, one JSON report each.
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArguments {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// put, get, mixed, ycsb-a/b/c/d/e/f, txn or scan (etcd has no append).
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    #[arg(long, default_value_t = 0)]
    key_bytes: usize,
    #[arg(long, default_value = "bench-")]
    key_prefix: String,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    #[arg(long, default_value_t = 10)]
    scan_length: u64,
    /// Operations in flight in total (tokio tasks).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// gRPC clients, each its own channel to one member (in turn).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, value_parser = parse_bench_duration, default_value = "10s")]
    duration: Duration,
    #[arg(long, value_parser = parse_bench_duration, default_value = "0s")]
    warmup: Duration,
    #[arg(long)]
    serializable: bool,
    #[arg(long)]
    no_fill: bool,
    /// An earlier run wrote the keyspace: skip the fill, a missing key is an error.
    #[arg(long)]
    assume_filled: bool,
    /// etcd server pids whose CPU per operation to report.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    #[arg(long)]
    json: bool,
    #[arg(long)]
    quiet: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// An etcd error, by kind, as the report counts it.
fn etcd_error_kind(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => format!("grpc: {:?}", status.code()),
        etcd_client::Error::TransportError(_) => "transport".to_string(),
        etcd_client::Error::IoError(_) => "io".to_string(),
        _ => "client".to_string(),
    }
}

fn key_value(pair: &etcd_client::KeyValue) -> kv::KeyValue {
    kv::KeyValue {
        key: pair.key().to_vec(),
        value: pair.value().to_vec(),
        create_revision: pair.create_revision() as u64,
        mod_revision: pair.mod_revision() as u64,
        version: pair.version() as u64,
        lease: pair.lease() as u64,
    }
}

fn range_response(response: &etcd_client::GetResponse) -> kv::RangeResponse {
    kv::RangeResponse {
        kvs: response.kvs().iter().map(key_value).collect(),
        count: response.count() as u64,
        more: response.more(),
    }
}

fn get_options(range: &kv::RangeRequest, serializable: bool) -> GetOptions {
    let mut options = GetOptions::new();
    if !range.range_end.is_empty() {
        options = options.with_range(range.range_end.clone());
    }
    if range.limit > 0 {
        options = options.with_limit(range.limit as i64);
    }
    if serializable {
        options = options.with_serializable();
    }
    options
}

/// The etcd form of a transaction op; `None` for one etcd does not have.
fn txn_op(op: &kv::TxnOp) -> Option<TxnOp> {
    match op {
        kv::TxnOp::Put(put) => Some(TxnOp::put(put.key.clone(), put.value.clone(), None)),
        kv::TxnOp::Range(range) => Some(TxnOp::get(
            range.key.clone(),
            Some(get_options(range, false)),
        )),
        _ => None,
    }
}

fn compare(compare: &kv::Compare) -> Compare {
    let operator = match compare.result {
        kv::CompareResult::Equal => CompareOp::Equal,
        kv::CompareResult::NotEqual => CompareOp::NotEqual,
        kv::CompareResult::Greater => CompareOp::Greater,
        kv::CompareResult::Less => CompareOp::Less,
    };
    let key = compare.key.clone();
    match &compare.target {
        kv::CompareTarget::Value(value) => Compare::value(key, operator, value.clone()),
        kv::CompareTarget::Version(version) => Compare::version(key, operator, *version as i64),
        kv::CompareTarget::CreateRevision(revision) => {
            Compare::create_revision(key, operator, *revision as i64)
        }
        kv::CompareTarget::ModRevision(revision) => {
            Compare::mod_revision(key, operator, *revision as i64)
        }
    }
}

/// Runs a corekv op as the etcd call that means the same; the answer comes back in
/// corekv's types, or as (kind, message).
async fn execute(
    client: &mut KvClient,
    op: kv::Op,
    serializable: bool,
) -> Result<kv::Response, (String, String)> {
    let failed = |error: etcd_client::Error| (etcd_error_kind(&error), error.to_string());
    let unsupported = |what: &str| ("unsupported".to_string(), format!("etcd has no {what}"));
    let no_header = || {
        (
            "check: no header".to_string(),
            "no response header".to_string(),
        )
    };
    let call = async {
        match op {
            kv::Op::Range(range) => {
                let options = get_options(&range, serializable);
                let response = client.get(range.key, Some(options)).await.map_err(failed)?;
                let header = response.header().ok_or_else(no_header)?;
                Ok(kv::Response {
                    revision: header.revision() as u64,
                    op: kv::OpResponse::Range(range_response(&response)),
                })
            }
            kv::Op::Put(put) => {
                let response = client.put(put.key, put.value, None).await.map_err(failed)?;
                let header = response.header().ok_or_else(no_header)?;
                Ok(kv::Response {
                    revision: header.revision() as u64,
                    op: kv::OpResponse::Put(kv::PutResponse::default()),
                })
            }
            kv::Op::Txn(request) => {
                let success: Option<Vec<TxnOp>> = request.success.iter().map(txn_op).collect();
                let failure: Option<Vec<TxnOp>> = request.failure.iter().map(txn_op).collect();
                let (Some(success), Some(failure)) = (success, failure) else {
                    return Err(unsupported("such transaction op"));
                };
                let txn = Txn::new()
                    .when(request.compares.iter().map(compare).collect::<Vec<_>>())
                    .and_then(success)
                    .or_else(failure);
                let response = client.txn(txn).await.map_err(failed)?;
                let header = response.header().ok_or_else(no_header)?;
                let responses = response
                    .op_responses()
                    .into_iter()
                    .map(|answer| match answer {
                        etcd_client::TxnOpResponse::Put(_) => {
                            Ok(kv::TxnOpResponse::Put(kv::PutResponse::default()))
                        }
                        etcd_client::TxnOpResponse::Get(get) => {
                            Ok(kv::TxnOpResponse::Range(range_response(&get)))
                        }
                        _ => Err(unsupported("such transaction answer")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(kv::Response {
                    revision: header.revision() as u64,
                    op: kv::OpResponse::Txn(kv::TxnResponse {
                        succeeded: response.succeeded(),
                        responses,
                    }),
                })
            }
            kv::Op::Append(_) => Err(unsupported("append")),
            kv::Op::Delete(_) => Err(unsupported("delete in this load")),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err((
            "timeout".to_string(),
            format!("no answer in {CALL_TIMEOUT:?}"),
        )),
    }
}

/// Runs one planned operation to its end (a read-modify-write takes two calls) and
/// records it.
async fn run_one(
    client: &mut KvClient,
    ops: &CorekvOps,
    recorder: &Recorder,
    planned: Planned,
    stamp: u64,
) -> bool {
    let started = Instant::now();
    let (mut op, mut serializable) = ops.request(&planned, stamp);
    let mut stage = Stage::First;
    loop {
        let result = execute(client, op, serializable).await;
        let checked = match result {
            Ok(response) => ops.check(&planned, &mut stage, stamp, Ok(response)),
            Err((kind, message)) => Checked::Failed { kind, message },
        };
        match checked {
            Checked::Then(next) => {
                op = next;
                serializable = false;
            }
            Checked::Done(outcome) => {
                recorder.success(planned.kind, started.elapsed(), outcome);
                return true;
            }
            Checked::Failed { kind, message } => {
                recorder.error(planned.kind, &kind, || message);
                return false;
            }
        }
    }
}

/// Connects `count` clients, each to one member in turn.
async fn connect(endpoints: &[String], count: usize) -> anyhow::Result<Vec<KvClient>> {
    let mut clients = Vec::with_capacity(count);
    for index in 0..count {
        let endpoint = &endpoints[index % endpoints.len()];
        let client = Client::connect([endpoint.as_str()], None)
            .await
            .with_context(|| format!("connect to {endpoint}"))?;
        clients.push(client.kv_client());
    }
    Ok(clients)
}

/// Prints progress every interval until the `tasks` all finished; returns the intervals
/// and the seconds from `measure_start` to the end.
async fn report_progress(
    recorder: &Recorder,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    measure_start: Instant,
    progress: &Progress,
) -> anyhow::Result<(Vec<IntervalReport>, f64)> {
    let mut intervals = Intervals::new(recorder, measure_start);
    loop {
        let done = tasks.iter().all(|task| task.is_finished());
        intervals.tick(recorder, Instant::now(), done, progress);
        if done {
            break;
        }
        tokio::time::sleep(FINISH_POLL_INTERVAL).await;
    }
    progress.finish();
    for task in tasks {
        task.await.context("a load task panicked")?;
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    Ok((intervals.into_reports(), elapsed))
}

/// What load task `task` owns: a client of its own (a clone sharing its channel) and
/// shares of the checks and the recorder.
fn task_parts(
    clients: &[KvClient],
    ops: &Arc<CorekvOps>,
    recorder: &Arc<Recorder>,
    task: usize,
) -> (KvClient, Arc<CorekvOps>, Arc<Recorder>) {
    (
        clients[task % clients.len()].clone(),
        Arc::clone(ops),
        Arc::clone(recorder),
    )
}

async fn run(arguments: RunArguments) -> anyhow::Result<Report> {
    if arguments.workload == Workload::Append {
        bail!("etcd has no append");
    }
    if arguments.in_flight == 0 || arguments.in_flight > IN_FLIGHT_MAX {
        bail!("--in-flight must be in 1..={IN_FLIGHT_MAX}");
    }
    if arguments.connections == 0 || arguments.connections > CONNECTIONS_MAX {
        bail!("--connections must be in 1..={CONNECTIONS_MAX}");
    }
    if arguments.keys == 0 || arguments.scan_length == 0 {
        bail!("--keys and --scan-length must be positive");
    }
    let clients = connect(&arguments.endpoints, arguments.connections).await?;
    let needs_keys = arguments.workload.reads_existing_keys() && !arguments.no_fill;
    let fill = needs_keys && !arguments.assume_filled;
    let ops = Arc::new(CorekvOps::new(
        arguments.key_prefix.as_bytes(),
        arguments.key_bytes,
        arguments.value_bytes,
        arguments.serializable,
        arguments.keys,
        needs_keys,
    ));
    let in_flight = arguments.in_flight;

    let mut fill_report = None;
    if fill {
        let recorder = Arc::new(Recorder::new());
        let start = Instant::now();
        let tasks = (0..in_flight)
            .map(|task| {
                let (mut client, ops, recorder) = task_parts(&clients, &ops, &recorder, task);
                let keys = arguments.keys;
                tokio::spawn(async move {
                    let mut index = task as u64;
                    while index < keys {
                        let planned = Planned {
                            kind: OpKind::Put,
                            index,
                            length: 1,
                        };
                        run_one(&mut client, &ops, &recorder, planned, 0).await;
                        index += in_flight as u64;
                    }
                })
            })
            .collect();
        let progress = Progress::new(arguments.quiet, "fill");
        report_progress(&recorder, tasks, start, &progress).await?;
        fill_report = Some(FillReport {
            keys: arguments.keys,
            seconds: start.elapsed().as_secs_f64(),
            errors: recorder.snapshot().error_count(),
        });
    }

    let recorder = Arc::new(Recorder::new());
    recorder.set_recording(arguments.warmup.is_zero());
    let distribution = arguments
        .distribution
        .unwrap_or_else(|| arguments.workload.default_distribution());
    let plan = PlanOptions {
        workload: arguments.workload,
        keys: arguments.keys,
        distribution,
        read_ratio: arguments.read_ratio,
        scan_length_max: arguments.scan_length,
    };
    let inserts = InsertCounter::new(arguments.keys);
    let start = Instant::now();
    let end = start + arguments.warmup + arguments.duration;
    let tasks = (0..in_flight)
        .map(|task| {
            let (mut client, ops, recorder) = task_parts(&clients, &ops, &recorder, task);
            let seed = arguments
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(task as u64);
            let mut planner = Planner::new(&plan, seed, inserts.clone());
            tokio::spawn(async move {
                let mut stamp = (task as u64 + 1) << 40;
                while Instant::now() < end {
                    let planned = planner.plan();
                    stamp += 1;
                    let ok = run_one(&mut client, &ops, &recorder, planned, stamp).await;
                    if ok && planned.kind == OpKind::Insert {
                        planner.inserted(planned.index);
                    }
                }
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(arguments.warmup).await;
    recorder.set_recording(true);
    let ticks = clock_ticks_per_second();
    let servers = CpuMeter::start(
        arguments.server_pids.iter().map(u32::to_string).collect(),
        ticks,
    );
    let generator = CpuMeter::start(vec!["self".to_string()], ticks);
    let measure_start = Instant::now();
    let progress = Progress::new(arguments.quiet, arguments.workload.name());
    let (intervals, elapsed) = report_progress(&recorder, tasks, measure_start, &progress).await?;
    let description = RunDescription {
        system: "etcd".to_string(),
        workload: arguments.workload.name().to_string(),
        distribution: format!("{distribution:?}").to_lowercase(),
        keys: arguments.keys,
        key_bytes: arguments.key_bytes,
        value_bytes: arguments.value_bytes,
        in_flight,
        connections: clients.len(),
        threads: arguments.threads,
        rate_per_second: None,
        serializable: arguments.serializable,
    };
    let mut report = Report::new(description, &recorder.snapshot(), elapsed, intervals);
    report.fill = fill_report;
    if !arguments.server_pids.is_empty() {
        report.server_cpu = Some(CpuReport::new(
            arguments.server_pids.clone(),
            servers.stop(),
            report.ops,
        ));
    }
    report.generator_cpu = Some(CpuReport::new(
        vec![std::process::id()],
        generator.stop(),
        report.ops,
    ));
    Ok(report)
}

/// The comparison table: a row per workload and in-flight count, corekv beside etcd.
fn table(reports: &[Report]) -> String {
    let mut rows: BTreeMap<(String, usize), BTreeMap<String, &Report>> = BTreeMap::new();
    for report in reports {
        rows.entry((report.run.workload.clone(), report.run.in_flight))
            .or_default()
            .insert(report.run.system.clone(), report);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<8} {:>9} | {:>9} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} {:>7} | {:>8} {:>9} | {:>10} {:>10}\n",
        "workload", "in-flight", "corekv/s", "p50 ms", "p99 ms", "errors", "etcd/s", "p50 ms",
        "p99 ms", "errors", "ops ratio", "p99 ratio", "corekv us", "etcd us"
    ));
    let figures = |report: Option<&&Report>| match report {
        Some(report) => {
            let latency = report.worst_latency().cloned().unwrap_or_default();
            (
                format!("{:.0}", report.ops_per_second),
                milliseconds(latency.p50),
                milliseconds(latency.p99),
                report.errors.to_string(),
            )
        }
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    let cpu = |report: Option<&&Report>| {
        report
            .and_then(|report| report.server_cpu.as_ref())
            .and_then(|cpu| cpu.us_per_op)
            .map_or_else(|| "-".to_string(), |micros| format!("{micros:.0}"))
    };
    for ((workload, in_flight), systems) in &rows {
        let (corekv, etcd) = (systems.get("corekv"), systems.get("etcd"));
        let ratio = match (corekv, etcd) {
            (Some(corekv), Some(etcd)) if etcd.ops_per_second > 0.0 => {
                format!("{:.2}x", corekv.ops_per_second / etcd.ops_per_second)
            }
            _ => "-".to_string(),
        };
        let p99_ratio = match (
            corekv.and_then(|report| report.worst_latency()),
            etcd.and_then(|report| report.worst_latency()),
        ) {
            (Some(corekv), Some(etcd)) if etcd.p99 > 0 => {
                format!("{:.2}x", corekv.p99 as f64 / etcd.p99 as f64)
            }
            _ => "-".to_string(),
        };
        let (c_ops, c_p50, c_p99, c_errors) = figures(corekv);
        let (e_ops, e_p50, e_p99, e_errors) = figures(etcd);
        out.push_str(&format!(
            "{workload:<8} {in_flight:>9} | {c_ops:>9} {c_p50:>8} {c_p99:>8} {c_errors:>7} | \
             {e_ops:>9} {e_p50:>8} {e_p99:>8} {e_errors:>7} | {ratio:>8} {p99_ratio:>9} | \
             {:>10} {:>10}\n",
            cpu(corekv),
            cpu(etcd)
        ));
    }
    out.push_str(
        "ops ratio: corekv/etcd ops/s (above 1: corekv serves more); p99 ratio: corekv/etcd \
         (below 1: corekv is faster); us: servers' CPU microseconds per operation\n",
    );
    out
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    match arguments.command {
        Command::Run(arguments) => {
            let threads = arguments.threads.max(1);
            let json = arguments.json;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .context("tokio runtime")?;
            let report = runtime.block_on(run(arguments))?;
            if json {
                eprint!("{}", report.text());
                println!("{}", report.to_json());
            } else {
                print!("{}", report.text());
            }
            if report.errors > 0 {
                std::process::exit(corekv::bench::EXIT_OPERATIONS_FAILED);
            }
            Ok(())
        }
        Command::Table { files } => {
            let reports = files
                .iter()
                .map(|path| {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("read {}", path.display()))?;
                    Report::from_json(text.trim())
                        .with_context(|| format!("parse {}", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", table(&reports));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv::bench::recorder::Outcome;

    fn report(system: &str, micros: u64, ops: u64) -> Report {
        let recorder = Recorder::new();
        for _ in 0..ops {
            recorder.success(OpKind::Put, Duration::from_micros(micros), Outcome::Ok);
        }
        let description = RunDescription {
            system: system.to_string(),
            workload: "put".to_string(),
            distribution: "uniform".to_string(),
            keys: 10,
            key_bytes: 0,
            value_bytes: 8,
            in_flight: 64,
            connections: 1,
            threads: 1,
            rate_per_second: None,
            serializable: false,
        };
        Report::new(description, &recorder.snapshot(), 1.0, Vec::new())
    }

    // One row per workload and in-flight count, corekv beside etcd, with the ratios.
    #[test]
    fn table_puts_the_systems_side_by_side() {
        let text = table(&[report("etcd", 4000, 100), report("corekv", 1000, 300)]);
        let row = text
            .lines()
            .find(|line| line.starts_with("put"))
            .expect("a put row");
        assert!(row.contains("3.00x"), "{row}");
        assert!(row.contains(" 300 ") && row.contains(" 100 "), "{row}");
        assert!(row.contains("0.25x"), "{row}");
    }
}
