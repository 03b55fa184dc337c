//! Speed of the linearizability checker (`corekv::check`) on fault-run histories, the
//! ones that leave many operations with unknown outcomes.
//!
//! Every history is the 77-operation, one-key history of `src/check/fault_history.rs`
//! (a healthy phase, a burst of 40 writes whose clients gave up, rounds of compare-and-sets
//! that fail because of them, then a final put and four reads), in three variants of its
//! last read:
//!
//! - `lost-write`: the key absent, although the final put returned before the read started
//!   and nothing could delete the key in between. The case of the fault-runs issue.
//! - `stale-read`: a value overwritten long before. No pair of operations shows that, so
//!   only the search can decide it, and it runs out of steps: the verdict is Unknown after
//!   exactly `budget` steps, which makes the steps per second of this row the search's
//!   own speed.
//! - `legal`: the final put's value.
//!
//! Each variant is checked at each budget (`part_search_steps_max`). The figures are the
//! verdict, this thread's CPU time per check (the cheapest of `--rounds` rounds, the
//! machine being shared; a round repeats a check that takes less than 20 ms), and for
//! Unknown verdicts the steps per second. `ratio` is steps/s at a budget against steps/s
//! at the first budget that ran out, measured in the same run: 1.00 means a step costs
//! the same however many came before it. The work of a step is bounded (the instructions
//! per step stay flat, see `tools/profile-check.sh`), but at ten million steps the memo
//! outgrows the CPU caches and each of its few lookups costs a trip to memory, so expect
//! a ratio of about 0.5 there.
//!
//! Run: `cargo bench --bench check` (budgets 1M, 3M and 10M), or for example
//! `cargo bench --bench check -- --budgets 1000000,4000000 --only stale-read --rounds 1`.
//! `tools/profile-check.sh` profiles one variant at one budget.

#[path = "support/cpu_time.rs"]
mod cpu_time;

/// The checker's public types under the names `src/check/fault_history.rs` uses; the
/// `path` makes `src/check` the folder of this module's files.
#[path = "../src/check"]
mod check {
    pub use corekv::check::{ClientId, History, Input, OperationId, Output};

    // The tests use the ids of the notable operations; the bench needs only the histories.
    #[allow(dead_code)]
    #[path = "fault_history.rs"]
    pub mod fault_history;
}

use std::hint::black_box;
use std::time::Duration;

use clap::Parser;
use corekv::check::{check, CheckOptions, CheckResult};
use cpu_time::cpu_time;

use check::fault_history::{fault_history, LastRead};

/// The least CPU time a round of checks takes: the clock (the scheduler's account) only
/// moves in steps of a millisecond or so.
const ROUND_CPU_TIME_MIN: Duration = Duration::from_millis(20);

#[derive(Debug, Parser)]
struct Arguments {
    /// Step budgets per key to check each history at (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [1_000_000u64, 3_000_000, 10_000_000]
    )]
    budgets: Vec<u64>,
    /// Run only these variants (comma-separated): lost-write, stale-read, legal.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Checks per (variant, budget); the cheapest is reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn verdict_name(result: &CheckResult) -> &'static str {
    match result {
        CheckResult::Ok => "Ok",
        CheckResult::Unknown => "Unknown",
        CheckResult::Illegal(_) => "Illegal",
    }
}

fn main() {
    let arguments = Arguments::parse();
    let rounds = arguments.rounds.max(1);
    let variants = [
        ("lost-write", LastRead::Absent),
        ("stale-read", LastRead::Stale),
        ("legal", LastRead::Final),
    ];
    println!(
        "{:<12} {:>12} {:>9} {:>10} {:>12} {:>6}",
        "history", "budget", "verdict", "cpu ms", "steps/s", "ratio"
    );
    for (name, last_read) in variants {
        if !arguments.only.is_empty() && !arguments.only.iter().any(|only| only == name) {
            continue;
        }
        let history = fault_history(last_read).history;
        let mut first_rate: Option<f64> = None;
        for &budget in &arguments.budgets {
            let options = CheckOptions {
                part_search_steps_max: budget,
            };
            let mut cheapest = f64::MAX;
            let mut result = CheckResult::Unknown;
            for _ in 0..rounds {
                // Checks that take less than the CPU clock's resolution are repeated and
                // the round's time divided among them.
                let started = cpu_time();
                let mut checks = 0u32;
                while checks == 0 || cpu_time() - started < ROUND_CPU_TIME_MIN {
                    result = black_box(check(black_box(&history), &options));
                    checks += 1;
                }
                let seconds = (cpu_time() - started).as_secs_f64() / f64::from(checks);
                cheapest = cheapest.min(seconds);
            }
            let seconds = cheapest;
            let milliseconds = seconds * 1e3;
            // One key, so an Unknown verdict means exactly `budget` steps were taken.
            let (rate, ratio) = match result {
                CheckResult::Unknown => {
                    let rate = budget as f64 / seconds.max(1e-9);
                    let ratio = rate / *first_rate.get_or_insert(rate);
                    (format!("{rate:.0}"), format!("{ratio:.2}"))
                }
                CheckResult::Ok | CheckResult::Illegal(_) => ("-".to_string(), "-".to_string()),
            };
            println!(
                "{name:<12} {budget:>12} {:>9} {milliseconds:>10.3} {rate:>12} {ratio:>6}",
                verdict_name(&result)
            );
        }
    }
    println!(
        "cpu ms: this thread's CPU time per check, cheapest of {rounds} rounds; steps/s: \
         budget / cpu time, for Unknown verdicts; ratio: steps/s against the first Unknown \
         budget of the same history"
    );
}
