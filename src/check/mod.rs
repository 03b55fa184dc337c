//! Linearizability checker for client histories (Wing & Gong with memoization), and the
//! checks of store-wide revisions: snapshot reads across groups and each client's causal
//! order (`snapshot.rs`, [`check_snapshot_read`] and [`CausalOrder`]).
//!
//! A [`History`] records what clients of the key-value store did: each operation's client,
//! input, invoke time and, if the client learned it, its output and return time. [`check`]
//! decides whether some order of the operations, each placed between its invoke and its
//! return, explains every output under the sequential key-value model (put, get, delete,
//! append, compare-and-set on independent keys).
//!
//! Recording is cheap: [`History::invoke`] pushes the operation and returns its
//! [`OperationId`]; later [`History::complete`] records the output, [`History::fail`]
//! records that it was definitely not applied, and [`History::give_up`] that the client
//! stopped waiting without learning the outcome. An operation never completed stays
//! pending. Threads of a process test can record on their own and merge with
//! [`History::push`].
//!
//! The checker is pure: no clock, no I/O, no threads. Times are numbers the caller supplies
//! (simulator ticks or steps, or monotonic nanoseconds in a process test), and the only
//! budget is a count of search steps ([`CheckOptions`]), so the same history always gets
//! the same result.
//!
//! # How the history is read
//!
//! - **Real-time order.** Operation A precedes B iff A returned strictly before B was
//!   invoked. An operation invoked at the same time another returns is concurrent with it:
//!   at equal times, call events sort before return events. This never reports a violation
//!   that a finer clock could explain away.
//! - **Pending operations** (never completed, or given up on) may have taken effect at any
//!   time after their invoke, or never. As in Porcupine, their return is at +infinity and
//!   their output is not checked, so the search may linearize them anywhere after their
//!   invoke, including after everything else, which is the same as never happening for
//!   the operations that were observed. A pending get constrains nothing and is dropped.
//! - **Failed operations** (the client knows they were not applied) are dropped.
//!
//! # The algorithm
//!
//! The model is per key, so a history is linearizable iff each key's sub-history is
//! (P-compositionality). Each key is searched on its own with Wing & Gong's depth-first
//! search over its call and return events and Lowe's cache of (linearized set, state)
//! configurations, the approach of Porcupine (anishathalye/porcupine). Pending operations
//! are what make such searches blow up, so the search only looks for linearizations of a
//! canonical shape that loses nothing (a pending operation whose effect nothing left can
//! observe is only placed where a failed compare-and-set needs it, and so on; the rules and
//! why they are safe are in `search.rs`), and a finished cache entry also covers the
//! configurations that differ from it only by a few more pending operations linearized
//! last. The cache finds entries by the hash of the whole configuration, pending
//! operations included, so a step costs the same however many came before it. A
//! brute-force test over thousands of tiny random histories checks that none of this
//! changes a verdict.
//!
//! Before its search, each key goes through a few direct checks (`contradiction.rs`) that
//! need no search at all: a read of "absent" after a completed write with no delete that
//! could come between them, and a read of a value that no writes invoked before the read
//! returned can make (a value never written, or one whose only writes started after the
//! read). They cost O(n log n) per key and report only what rules out every
//! linearization; on a history with many pending operations they find in microseconds a
//! violation the search may not prove within any budget.
//!
//! Keys are checked from the one with the fewest checked operations, and the first key
//! that fails is reported with its operations and either the contradiction or the longest
//! linearizable prefix found ([`Violation`] implements `Display`).
//!
//! # Cost
//!
//! A history of 10,000 operations over 100 keys from 10 clients (each client with one
//! operation in flight, 2% of them failed and 2% never answered) checks in a few
//! milliseconds in a release build: the test `ten_thousand_operations_check_quickly`
//! generates one, checks it (Ok) and checks a copy with one corrupted read (Illegal), each
//! within 20,000 steps per key, in about 10 ms of CPU time in all. All 10,000 operations on
//! one key from 10 clients (`ten_thousand_operations_on_one_key_check_quickly`) take about
//! 0.4 s. Measured on the 2-core build machine with
//! `cargo test --release --lib --no-run` and then
//! `/usr/bin/time <test binary> --exact check::tests::<test name>`; the tests themselves
//! bound search steps, never time.
//!
//! A step of the search costs about the same however many steps came before it (some 235
//! instructions on the fault-run history of `benches/check.rs`, at one million steps and
//! at ten million; `search_step_cost_does_not_grow_with_the_budget` checks the cache work
//! per step), so the budget bounds the time: on that history (77 operations on one key,
//! 40 of them pending) one million steps take about 0.05 s and ten million under a
//! second, where the memo no longer fits in the CPU caches. Its lost write is found by a
//! direct check in about 25 microseconds.
//!
//! The search is exponential in the worst case. What drives its cost is concurrency on one
//! key and, above all, pending operations on one key that some later read could have
//! seen: all 10,000 operations on one key from 10 busy clients take a few million steps
//! (under a second) when every operation completes, but a few percent of unanswered
//! writes on such a hot key can exhaust any reasonable budget, and proving a hot key's
//! history illegal costs far more than finding a linearization of it. The answer is then
//! [`CheckResult::Unknown`], never a wrong verdict.

mod checker;
mod contradiction;
mod events;
#[cfg(test)]
mod fault_history;
mod history;
mod memo;
mod model;
mod search;
mod snapshot;
#[cfg(test)]
mod tests;

pub use checker::{check, CheckOptions, CheckResult, Violation};
pub use contradiction::Contradiction;
pub use history::{
    ClientId, History, HistoryError, Input, Operation, OperationId, Outcome, Output,
};
pub use snapshot::{
    check_snapshot_read, CausalOrder, CausalViolation, Revealed, SnapshotViolation,
};
