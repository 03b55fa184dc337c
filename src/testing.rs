//! The seed of every randomized test, from one environment variable read in one place, so
//! that one spelling replays any of them: `COREKV_TEST_SEED=<seed> cargo test ...`.
//!
//! The crate's unit tests and its integration tests (through `tests/common`) take their
//! seed here and draw from [`crate::raft::rng::SeededRng`] seeded with it; `tests/tidy.rs`
//! fails on any other seed variable. Reading the environment and the clock is I/O, which
//! is why this is not part of `raft::rng`: the pure layers' tests may call it, their
//! production code may not (`tests/tidy.rs` checks that too).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

/// The one environment variable that sets the seed of a randomized test.
pub const TEST_SEED_VARIABLE: &str = "COREKV_TEST_SEED";
/// Sets how many cases a test that runs many seeded cases runs ([`test_cases_or`]).
pub const TEST_CASES_VARIABLE: &str = "COREKV_TEST_CASES";

/// The seed `COREKV_TEST_SEED` sets, if it is set. A value that is not a number fails the
/// test, so that a typo never silently runs some other seed.
pub fn test_seed_from_env() -> Option<u64> {
    number_from_env(TEST_SEED_VARIABLE)
}

fn number_from_env(variable: &str) -> Option<u64> {
    let text = std::env::var(variable).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{variable}={text:?} is not an unsigned 64-bit integer")),
    )
}

/// The seed of a test that explores: `COREKV_TEST_SEED` when set, else one taken from the
/// clock, so every run tries a new one. The test prints it with its replay command.
pub fn test_seed() -> u64 {
    test_seed_from_env().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    })
}

/// The seed of a test that is the same on every run unless asked: `COREKV_TEST_SEED` when
/// set, else `default`.
pub fn test_seed_or(default: u64) -> u64 {
    test_seed_from_env().unwrap_or(default)
}

/// How many cases a test that runs many seeded cases runs: `COREKV_TEST_CASES` when set,
/// else `default`.
pub fn test_cases_or(default: u64) -> u64 {
    number_from_env(TEST_CASES_VARIABLE).unwrap_or(default)
}

/// Runs `case` once per seed: `COREKV_TEST_CASES` times (else `cases_default`), case `k`
/// with the seed `first + k`, where `first` is [`test_seed_or`]`(first_default)`. A failing
/// case prints its seed and the command that replays it alone:
/// `COREKV_TEST_SEED=<its seed> COREKV_TEST_CASES=1 <replay>`.
pub fn run_seeded_cases(
    replay: &str,
    first_default: u64,
    cases_default: u64,
    mut case: impl FnMut(u64),
) {
    let first = test_seed_or(first_default);
    let cases = test_cases_or(cases_default);
    for number in 0..cases {
        let seed = first.wrapping_add(number);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(seed))) {
            eprintln!(
                "case {number} of {cases} failed with seed {seed}; replay it alone with: \
                 {TEST_SEED_VARIABLE}={seed} {TEST_CASES_VARIABLE}=1 {replay}"
            );
            resume_unwind(panic);
        }
    }
}
