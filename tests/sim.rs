//! The deterministic cluster simulator: thousands of seeded runs of a whole corekv cluster
//! (3 or 5 nodes of 1 to 3 shards, each shard the server's own `shard::ShardCore` with its
//! Raft groups and KV stores, the mesh between a node's shards, and a disk per shard
//! holding the core's log records and snapshot files) under network loss, duplication,
//! delay, partitions, full mesh channels, and crashes that lose unsynced writes and
//! half-written snapshot files. Raft's safety properties are checked as it runs, every
//! restart recovers through the server's recovery, every request a core takes must get
//! exactly one answer, and every client history is checked for linearizability at the end.
//!
//! - `cargo test --release --test sim` runs the CI budget (`COREKV_TEST_CASES`, default
//!   4,000 seeds from `COREKV_TEST_SEED`, default 1; `SIM_STEPS` main-phase steps,
//!   default 6,000).
//! - `COREKV_TEST_SEED=123 cargo test --release --test sim -- replay --nocapture` replays
//!   one seed (`SIM_ECHO=1` prints every event; `SIM_BROKEN=commit_old_terms`,
//!   `ack_before_fsync`, `forward_reads_serializable`, `stamp_at_closed`, `read_unclosed` or
//!   `ignore_seen_revision` replays a
//!   broken build's run).
//! - `tools/sim.sh --seeds N --steps M` explores more seeds and reports seeds per second.
//!
//! The support modules live in `tests/sim/`: `rng` (the one generator), `faults` (mixes,
//! broken builds, intensities), `network`, `disk`, `client`, `invariants`, `trace`,
//! `report`, and `world` (one run, step by step).

#[path = "sim/client.rs"]
mod client;
#[path = "sim/disk.rs"]
mod disk;
#[path = "sim/faults.rs"]
mod faults;
#[path = "sim/invariants.rs"]
mod invariants;
#[path = "sim/network.rs"]
mod network;
#[path = "sim/report.rs"]
mod report;
#[path = "sim/rng.rs"]
mod rng;
#[path = "sim/trace.rs"]
mod trace;
#[path = "sim/world.rs"]
mod world;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use corekv::testing::{test_cases_or, test_seed_or};
use faults::{nodes_of_seed, Broken, FaultMix};
use report::{RunConfig, RunReport, Stats, Verdict};
use world::run;

/// Seeds the CI run covers by default.
const CI_SEEDS_DEFAULT: u64 = 4_000;
/// Main-phase steps of a CI run by default (1,200 ticks; healing and checks follow).
const CI_STEPS_DEFAULT: u64 = 6_000;
/// Worker threads when `SIM_THREADS` is not set (each runs whole seeds on its own).
const THREADS_MAX_DEFAULT: usize = 4;
/// Failure reports printed in full; further failing seeds are listed by number.
const FAILURES_PRINTED_MAX: usize = 3;
/// The share of runs whose history may be left undecided by the checker's step budget.
const UNKNOWN_VERDICTS_PER_MILLE_MAX: u64 = 20;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {text:?}")),
        Err(_) => default,
    }
}

fn env_broken() -> Broken {
    let name = std::env::var("SIM_BROKEN").unwrap_or_default();
    Broken::from_name(name.trim()).unwrap_or_else(|| {
        panic!("SIM_BROKEN must be none, commit_old_terms, ack_before_fsync or forward_reads_serializable, got {name:?}")
    })
}

fn threads() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |count| count.get());
    env_u64("SIM_THREADS", available.min(THREADS_MAX_DEFAULT) as u64).max(1) as usize
}

/// The command that replays a run.
fn replay_command(report: &RunReport, steps: u64) -> String {
    let broken = match report.broken {
        Broken::Nothing => String::new(),
        broken => format!("SIM_BROKEN={} ", broken.name()),
    };
    format!(
        "COREKV_TEST_SEED={} SIM_STEPS={steps} {broken}cargo test --release --test sim -- replay \
         --nocapture",
        report.seed
    )
}

/// The full report of a failed run: seed, fault mix, the check, the replay command, and
/// the last events.
fn failure_report(report: &RunReport, steps: u64) -> String {
    let Some(failure) = &report.failure else {
        return String::new();
    };
    let mut out = format!(
        "=== simulation failure: seed {} ({:?} faults, {} nodes x {} shards, {} groups, broken \
         build: {}) ===\ncheck failed: {}\nat step {}: {}\nreplay: {}\nlast {} events:\n",
        report.seed,
        report.mix,
        report.nodes,
        report.shards,
        report.groups,
        report.broken.name(),
        failure.check,
        failure.step,
        failure.message,
        replay_command(report, steps),
        failure.trace.len()
    );
    for line in &failure.trace {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Runs `seeds` on worker threads (each run is single-threaded and deterministic on its
/// own). Once a run satisfies `stop_when`, no new seed starts; every seed below it still
/// runs, so the smallest such seed is the same on every machine.
fn run_seeds(
    seeds: &[u64],
    steps: u64,
    broken: Broken,
    stop_when: fn(&RunReport) -> bool,
) -> Vec<RunReport> {
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let reports = Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads() {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let position = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(&seed) = seeds.get(position) else {
                    return;
                };
                let report = run(RunConfig {
                    seed,
                    steps,
                    broken,
                    echo_trace: false,
                });
                if stop_when(&report) {
                    stop.store(true, Ordering::SeqCst);
                }
                reports.lock().expect("no worker panicked").push(report);
            });
        }
    });
    let mut reports = reports.into_inner().expect("no worker panicked");
    reports.sort_by_key(|report| report.seed);
    reports
}

/// One line (and a table) saying what the runs did.
fn summary(reports: &[RunReport], seconds: f64) -> String {
    let mut total = Stats::default();
    let mut per_mix: BTreeMap<(FaultMix, usize), (u64, u64)> = BTreeMap::new();
    let mut unknown = 0;
    let mut failed = 0;
    for report in reports {
        total.add(&report.stats);
        let counts = per_mix.entry((report.mix, report.nodes)).or_default();
        counts.0 += 1;
        if report.failure.is_some() {
            counts.1 += 1;
            failed += 1;
        }
        if report.verdict == Verdict::Unknown {
            unknown += 1;
        }
    }
    let mixes: Vec<String> = per_mix
        .iter()
        .map(|((mix, nodes), (runs, failures))| {
            format!("{mix:?}/{nodes}n {runs} ({failures} failed)")
        })
        .collect();
    format!(
        "sim: {} seeds, {} failed, in {seconds:.1} s = {:.1} seeds/s\n\
         sim: per fault mix: {}\n\
         sim: faults: {} messages dropped, {} duplicated, {} partitions, {} leadership \
         transfers, {} crashes, {} \
         restarts, {} WAL batches lost, {} snapshots installed, {} compactions, {} mesh \
         messages ({} refused); {} leaders elected, {} entries applied, {} steps, {} events\n\
         sim: {} operations checked ({} completed, {} failed, {} pending), checker verdict \
         unknown on {} runs; {} scans across groups checked as snapshots ({} unchecked)",
        reports.len(),
        failed,
        reports.len() as f64 / seconds.max(1e-9),
        mixes.join(", "),
        total.messages_dropped,
        total.messages_duplicated,
        total.partitions,
        total.transfers,
        total.crashes,
        total.restarts,
        total.batches_lost,
        total.snapshots_installed,
        total.compactions,
        total.mesh_messages,
        total.mesh_refused,
        total.leaders_elected,
        total.entries_applied,
        total.steps,
        total.events,
        total.operations,
        total.operations_completed,
        total.operations_failed,
        total.operations_pending,
        unknown,
        total.snapshot_reads_checked,
        total.snapshot_reads_unchecked
    )
}

// Every seed of the CI budget, across all fault mixes on 3 and 5 nodes, passes every
// safety check and produces a linearizable history.
#[test]
fn simulate_ci_seeds() {
    let count = test_cases_or(CI_SEEDS_DEFAULT);
    let start = test_seed_or(1);
    let steps = env_u64("SIM_STEPS", CI_STEPS_DEFAULT);
    let broken = env_broken();
    let seeds: Vec<u64> = (start..start + count).collect();
    let began = Instant::now();
    let reports = run_seeds(&seeds, steps, broken, |_| false);
    let seconds = began.elapsed().as_secs_f64();
    println!("{}", summary(&reports, seconds));
    let failures: Vec<&RunReport> = reports
        .iter()
        .filter(|report| report.failure.is_some())
        .collect();
    for report in failures.iter().take(FAILURES_PRINTED_MAX) {
        println!("{}", failure_report(report, steps));
    }
    let unknown = reports
        .iter()
        .filter(|report| report.verdict == Verdict::Unknown)
        .count() as u64;
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed a check; failing seeds: {:?}; first replay: {}",
        failures.len(),
        reports.len(),
        failures
            .iter()
            .map(|report| (report.seed, report.failure.as_ref().map(|f| f.check)))
            .collect::<Vec<_>>(),
        replay_command(failures[0], steps)
    );
    assert!(
        unknown * 1_000 <= count * UNKNOWN_VERDICTS_PER_MILLE_MAX,
        "the checker could not decide {unknown} of {count} histories within its step budget"
    );
}

// Replays one seed (COREKV_TEST_SEED, default 1) and fails with its report if any check
// fails.
#[test]
fn replay() {
    let seed = test_seed_or(1);
    let steps = env_u64("SIM_STEPS", CI_STEPS_DEFAULT);
    let began = Instant::now();
    let report = run(RunConfig {
        seed,
        steps,
        broken: env_broken(),
        echo_trace: env_u64("SIM_ECHO", 0) != 0,
    });
    println!(
        "{}",
        summary(std::slice::from_ref(&report), began.elapsed().as_secs_f64())
    );
    println!("sim: digest {:016x}", report.digest);
    assert!(
        report.failure.is_none(),
        "{}",
        failure_report(&report, steps)
    );
}

// The same seed gives the same run: every event, the history and the counts hash alike,
// on both cluster sizes and with every kind of fault.
#[test]
fn same_seed_same_run() {
    let steps = 1_500;
    for seed in [4, 9] {
        assert_eq!(FaultMix::of_seed(seed), FaultMix::Everything);
        let runs: Vec<RunReport> = (0..2)
            .map(|_| {
                run(RunConfig {
                    seed,
                    steps,
                    broken: Broken::Nothing,
                    echo_trace: false,
                })
            })
            .collect();
        assert_eq!(runs[0].nodes, nodes_of_seed(seed));
        assert_eq!(
            runs[0].digest, runs[1].digest,
            "seed {seed} is not reproducible"
        );
        assert_eq!(
            runs[0].stats, runs[1].stats,
            "seed {seed} is not reproducible"
        );
        assert!(runs[0].stats.operations > 0, "seed {seed} ran operations");
    }
}

/// Runs a broken build on the CI seeds whose fault mix can expose it, up to the first
/// seed that fails a safety check; returns that run, and prints what failed on the way.
fn catch_broken_build(broken: Broken, exposed_by: fn(FaultMix) -> bool) -> Option<RunReport> {
    let count = test_cases_or(CI_SEEDS_DEFAULT);
    let start = test_seed_or(1);
    let steps = env_u64("SIM_STEPS", CI_STEPS_DEFAULT);
    let seeds: Vec<u64> = (start..start + count)
        .filter(|&seed| exposed_by(FaultMix::of_seed(seed)))
        .collect();
    let began = Instant::now();
    let reports = run_seeds(&seeds, steps, broken, |report| {
        report
            .failure
            .as_ref()
            .is_some_and(|failure| failure.is_safety())
    });
    let seconds = began.elapsed().as_secs_f64();
    let mut failed_checks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for report in &reports {
        if let Some(failure) = &report.failure {
            failed_checks
                .entry(failure.check)
                .or_default()
                .push(report.seed);
        }
    }
    println!(
        "broken build ({}): {} seeds run in {seconds:.1} s; failed checks by seed: \
         {failed_checks:?}",
        broken.name(),
        reports.len()
    );
    let caught = reports.into_iter().find(|report| {
        report
            .failure
            .as_ref()
            .is_some_and(|failure| failure.is_safety())
    })?;
    let failure = caught.failure.as_ref().expect("a failed run");
    println!(
        "broken build ({}) caught by seed {} ({:?}, {} nodes x {} shards), {} check: {}\n\
         replay: {}",
        broken.name(),
        caught.seed,
        caught.mix,
        caught.nodes,
        caught.shards,
        failure.check,
        failure.message,
        replay_command(&caught, steps)
    );
    Some(caught)
}

// Deliberately broken builds fail a safety check within the CI seed budget: votes and
// append acknowledgements sent before the fsync (exposed by crashes), a leader that
// commits entries of older terms by counting replicas (figure 8 of the Raft paper,
// exposed by leader changes), and a shard core that serves a linearizable read forwarded
// from another shard from its local replica (exposed by any lag, so by every mix), and a
// leader that stamps a write at the revision it last closed (exposed by any close
// followed by a write, so by every mix), and a group that serves a read at a revision
// it has not closed yet from the state it has closed (exposed by scans at a revision
// another group's write took, so by every mix), and a shard that ignores the revision a
// client has seen (exposed by clocks that are apart, which every mix may draw).
#[test]
fn broken_build_is_caught() {
    let acks = catch_broken_build(Broken::AckBeforeFsync, FaultMix::has_crashes);
    let figure_8 = catch_broken_build(Broken::CommitOldTerms, |mix| {
        mix.has_crashes() || mix.has_partitions()
    });
    let stale_forwarded_reads = catch_broken_build(Broken::ForwardReadsSerializable, |_| true);
    let stamped_at_closed = catch_broken_build(Broken::StampAtClosed, |_| true);
    let unclosed_reads = catch_broken_build(Broken::ReadUnclosed, |_| true);
    let causality = catch_broken_build(Broken::IgnoreSeenRevision, |_| true);
    assert!(
        causality.is_some(),
        "writes that ignore the revision their client has seen passed every check"
    );
    assert!(
        unclosed_reads.is_some(),
        "serving reads at revisions not yet closed passed every check"
    );
    assert!(
        stamped_at_closed.is_some(),
        "stamping writes at the closed revision passed every check"
    );
    assert!(
        stale_forwarded_reads.is_some(),
        "serving forwarded linearizable reads from the local replica passed every check"
    );
    assert!(
        acks.is_some(),
        "acknowledging before the fsync passed every safety check"
    );
    assert!(
        figure_8.is_some(),
        "committing old-term entries by counting passed every safety check"
    );
}
