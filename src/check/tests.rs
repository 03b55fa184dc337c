//! Tests of the whole checker: hand-built histories with known verdicts, randomized
//! histories recorded from a real sequential execution, and the size the simulator needs.

use std::collections::HashMap;

use super::fault_history::{self, fault_history, LastRead};
use super::*;

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn put(key: &str, value: &str) -> Input {
    Input::Put {
        key: bytes(key),
        value: bytes(value),
    }
}

fn get(key: &str) -> Input {
    Input::Get { key: bytes(key) }
}

fn delete(key: &str) -> Input {
    Input::Delete { key: bytes(key) }
}

fn append(key: &str, value: &str) -> Input {
    Input::Append {
        key: bytes(key),
        value: bytes(value),
    }
}

fn cas(key: &str, expected: Option<&str>, new_value: &str) -> Input {
    Input::CompareAndSet {
        key: bytes(key),
        expected: expected.map(bytes),
        new_value: bytes(new_value),
    }
}

fn read(value: Option<&str>) -> Output {
    Output::Value(value.map(bytes))
}

/// A hand-built history, one call per operation.
struct Script {
    history: History,
}

impl Script {
    fn new() -> Script {
        Script {
            history: History::new(),
        }
    }

    fn done(&mut self, client: u64, input: Input, invoke: u64, output: Output, ret: u64) {
        let id = self.history.invoke(ClientId(client), input, invoke);
        self.history.complete(id, output, ret).unwrap();
    }

    fn pending(&mut self, client: u64, input: Input, invoke: u64) {
        self.history.invoke(ClientId(client), input, invoke);
    }

    fn failed(&mut self, client: u64, input: Input, invoke: u64, ret: u64) {
        let id = self.history.invoke(ClientId(client), input, invoke);
        self.history.fail(id, ret).unwrap();
    }

    fn check(&self) -> CheckResult {
        check(&self.history, &CheckOptions::default())
    }

    fn violation(&self) -> Violation {
        match self.check() {
            CheckResult::Illegal(violation) => violation,
            other => panic!("expected a violation, got {other:?}"),
        }
    }
}

// An empty history and a plain sequential one are linearizable.
#[test]
fn sequential_history_is_linearizable() {
    assert_eq!(Script::new().check(), CheckResult::Ok);
    let mut script = Script::new();
    script.done(1, get("k"), 0, read(None), 1);
    script.done(1, put("k", "a"), 2, Output::Done, 3);
    script.done(2, get("k"), 4, read(Some("a")), 5);
    script.done(2, append("k", "b"), 6, Output::Done, 7);
    script.done(1, get("k"), 8, read(Some("ab")), 9);
    script.done(1, delete("k"), 10, Output::Done, 11);
    script.done(2, get("k"), 12, read(None), 13);
    script.done(2, append("k", "c"), 14, Output::Done, 15);
    script.done(1, get("k"), 16, read(Some("c")), 17);
    assert_eq!(script.check(), CheckResult::Ok);
}

// Overlapping writes may take effect in either order, and overlapping reads may see any
// value the order allows, even the opposite order from the invokes.
#[test]
fn concurrent_writes_and_reads_are_linearizable() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 10);
    script.done(2, put("k", "b"), 1, Output::Done, 10);
    script.done(3, get("k"), 2, read(Some("b")), 3);
    script.done(3, get("k"), 4, read(Some("a")), 5);
    script.done(4, get("k"), 11, read(Some("a")), 12);
    // Appends that overlap land in one order, seen whole by a later read.
    script.done(1, append("l", "x"), 20, Output::Done, 30);
    script.done(2, append("l", "y"), 21, Output::Done, 29);
    script.done(3, get("l"), 22, read(Some("y")), 25);
    script.done(4, get("l"), 31, read(Some("yx")), 32);
    assert_eq!(script.check(), CheckResult::Ok);
}

// A pending write may have taken effect at any point after its invoke, even long after
// the client gave up, or never.
#[test]
fn pending_writes_may_or_may_not_take_effect() {
    let mut took_effect = Script::new();
    took_effect.done(1, put("k", "a"), 0, Output::Done, 1);
    took_effect.pending(2, put("k", "b"), 2);
    took_effect.done(3, get("k"), 3, read(Some("a")), 4);
    took_effect.done(3, get("k"), 50, read(Some("b")), 51);
    took_effect.done(3, get("k"), 52, read(Some("b")), 53);
    assert_eq!(took_effect.check(), CheckResult::Ok);

    let mut never = Script::new();
    never.done(1, put("k", "a"), 0, Output::Done, 1);
    let timed_out = never.history.invoke(ClientId(2), append("k", "b"), 2);
    never.history.give_up(timed_out, 5).unwrap();
    never.pending(4, delete("k"), 3);
    never.pending(5, get("k"), 3);
    never.done(3, get("k"), 6, read(Some("a")), 7);
    never.done(3, get("k"), 100, read(Some("a")), 101);
    assert_eq!(never.check(), CheckResult::Ok);

    // A pending write cannot act before it was invoked.
    let mut too_early = Script::new();
    too_early.done(1, get("k"), 0, read(Some("b")), 1);
    too_early.pending(2, put("k", "b"), 2);
    assert!(matches!(too_early.check(), CheckResult::Illegal(_)));
}

// Compare-and-set succeeds exactly when its expectation holds at its linearization point,
// and concurrent ones against the same expectation can only both succeed in sequence.
#[test]
fn compare_and_set_histories_are_linearizable() {
    let mut script = Script::new();
    script.done(1, cas("k", None, "a"), 0, Output::Swapped(true), 1);
    script.done(1, cas("k", None, "b"), 2, Output::Swapped(false), 3);
    script.done(2, cas("k", Some("a"), "c"), 4, Output::Swapped(true), 8);
    script.done(3, cas("k", Some("a"), "d"), 5, Output::Swapped(false), 9);
    script.done(3, get("k"), 10, read(Some("c")), 11);
    // A chain of two swaps whose calls overlap: the second expects the first's value.
    script.done(1, cas("k", Some("c"), "e"), 20, Output::Swapped(true), 30);
    script.done(2, cas("k", Some("e"), "f"), 21, Output::Swapped(true), 29);
    script.pending(3, cas("k", Some("f"), "g"), 22);
    script.done(4, get("k"), 31, read(Some("g")), 32);
    assert_eq!(script.check(), CheckResult::Ok);
}

// A pending write whose value nobody ever reads can still be what made a compare-and-set
// fail; the checker must not discard it.
#[test]
fn unseen_pending_writes_can_explain_failed_compare_and_set() {
    let mut put_explains = Script::new();
    put_explains.done(1, put("k", "x"), 0, Output::Done, 1);
    put_explains.pending(2, put("k", "unseen"), 2);
    put_explains.done(3, cas("k", Some("x"), "y"), 3, Output::Swapped(false), 4);
    put_explains.done(3, delete("k"), 5, Output::Done, 6);
    put_explains.done(3, get("k"), 7, read(None), 8);
    assert_eq!(put_explains.check(), CheckResult::Ok);

    let mut delete_explains = Script::new();
    delete_explains.done(1, put("k", "x"), 0, Output::Done, 1);
    delete_explains.pending(2, delete("k"), 2);
    delete_explains.done(3, cas("k", Some("x"), "y"), 3, Output::Swapped(false), 4);
    delete_explains.done(3, put("k", "z"), 5, Output::Done, 6);
    delete_explains.done(3, get("k"), 7, read(Some("z")), 8);
    assert_eq!(delete_explains.check(), CheckResult::Ok);

    // The pending swap makes the key "n", the append makes it "na", so the later
    // compare-and-set expecting "xa" fails.
    let mut swap_explains = Script::new();
    swap_explains.done(1, put("k", "x"), 0, Output::Done, 1);
    swap_explains.pending(2, cas("k", Some("x"), "n"), 2);
    swap_explains.done(3, append("k", "a"), 3, Output::Done, 4);
    swap_explains.done(3, cas("k", Some("xa"), "y"), 5, Output::Swapped(false), 6);
    swap_explains.done(3, delete("k"), 7, Output::Done, 8);
    swap_explains.done(3, get("k"), 9, read(None), 10);
    assert_eq!(swap_explains.check(), CheckResult::Ok);

    let mut swap_from_absent_explains = Script::new();
    swap_from_absent_explains.pending(2, cas("k", None, "n"), 0);
    swap_from_absent_explains.done(3, cas("k", None, "x"), 1, Output::Swapped(false), 2);
    swap_from_absent_explains.done(3, delete("k"), 3, Output::Done, 4);
    swap_from_absent_explains.done(3, get("k"), 5, read(None), 6);
    assert_eq!(swap_from_absent_explains.check(), CheckResult::Ok);

    // Without any pending write the same failure is a violation.
    let mut nothing_explains = Script::new();
    nothing_explains.done(1, put("k", "x"), 0, Output::Done, 1);
    nothing_explains.done(3, cas("k", Some("x"), "y"), 3, Output::Swapped(false), 4);
    assert!(matches!(nothing_explains.check(), CheckResult::Illegal(_)));
}

// Failed operations are dropped: a failed write is never seen, a failed read checks nothing.
#[test]
fn failed_operations_are_dropped() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 1);
    script.failed(2, put("k", "b"), 2, 3);
    script.failed(3, get("k"), 2, 3);
    script.done(1, get("k"), 4, read(Some("a")), 5);
    assert_eq!(script.check(), CheckResult::Ok);

    let mut seen = Script::new();
    seen.done(1, put("k", "a"), 0, Output::Done, 1);
    seen.failed(2, put("k", "b"), 2, 3);
    seen.done(1, get("k"), 4, read(Some("b")), 5);
    assert!(matches!(seen.check(), CheckResult::Illegal(_)));
}

// A call at the same time as a return is concurrent with it; only a strictly later call
// comes after it.
#[test]
fn equal_times_count_as_concurrent() {
    let mut touching = Script::new();
    touching.done(1, put("k", "a"), 0, Output::Done, 10);
    touching.done(2, get("k"), 10, read(None), 12);
    assert_eq!(touching.check(), CheckResult::Ok);

    let mut after = Script::new();
    after.done(1, put("k", "a"), 0, Output::Done, 10);
    after.done(2, get("k"), 11, read(None), 12);
    assert!(matches!(after.check(), CheckResult::Illegal(_)));
}

// A read after a completed write that returns the value from before it is caught.
#[test]
fn stale_read_is_illegal() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 1);
    script.done(1, put("k", "b"), 2, Output::Done, 3);
    script.done(2, get("k"), 4, read(Some("a")), 5);
    let violation = script.violation();
    assert_eq!(violation.key, bytes("k"));
    assert_eq!(violation.longest_prefix, vec![0, 1]);
    assert_eq!(violation.value_after_prefix, Some(bytes("b")));
}

// A completed put that later reads never show, while they show the value from before it,
// is a lost write.
#[test]
fn lost_write_is_illegal() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 1);
    script.done(2, get("k"), 2, read(Some("a")), 3);
    script.done(1, put("k", "b"), 4, Output::Done, 6);
    script.done(2, get("k"), 5, read(Some("a")), 7);
    script.done(3, get("k"), 8, read(Some("a")), 9);
    script.done(2, get("k"), 10, read(Some("a")), 11);
    let violation = script.violation();
    // put a, get a, then the concurrent get a and the put b in either order; nothing can
    // follow the put.
    assert_eq!(violation.longest_prefix.len(), 4);
    assert_eq!(violation.value_after_prefix, Some(bytes("b")));
}

// A read of a value nobody wrote is caught before any search, and the report says why.
#[test]
fn read_of_unwritten_value_is_illegal() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 5);
    script.done(2, get("k"), 1, read(Some("z")), 4);
    let violation = script.violation();
    assert_eq!(
        violation.contradiction,
        Some(Contradiction::UnwrittenValue {
            observer: 1,
            later_writes: Vec::new()
        })
    );
    assert!(violation.longest_prefix.is_empty());
    let report = violation.to_string();
    assert!(
        report.ends_with(
            "no linearization exists: [1] op 1 saw \"z\", which no puts, compare-and-sets \
             and appends invoked before it returned at 4 can make"
        ),
        "{report}"
    );
}

/// The contradiction `check` reports for the script, if any.
fn contradiction_of(script: &Script) -> Option<Contradiction> {
    match script.check() {
        CheckResult::Illegal(violation) => violation.contradiction,
        CheckResult::Ok | CheckResult::Unknown => None,
    }
}

// A read of "absent" after a completed write is a contradiction unless a delete may take
// effect between them; a delete that precedes the write or follows the read does not count.
#[test]
fn absent_after_a_completed_write_is_a_direct_contradiction() {
    let lost = |write: Input, deleter: Option<(u64, Option<u64>)>| {
        let mut script = Script::new();
        script.done(1, write, 10, Output::Done, 11);
        script.done(2, get("k"), 12, read(None), 13);
        if let Some((invoke, end)) = deleter {
            match end {
                Some(ret) => script.done(3, delete("k"), invoke, Output::Done, ret),
                None => script.pending(3, delete("k"), invoke),
            }
        }
        script
    };
    let found = Some(Contradiction::AbsentAfterWrite {
        observer: 1,
        write: 0,
    });
    for (write, deleter) in [
        (put("k", "a"), None),
        (append("k", "a"), None),
        // Returned before the write was invoked: it precedes the write.
        (put("k", "a"), Some((0, Some(9)))),
        // Invoked after the read returned: it follows the read.
        (put("k", "a"), Some((14, None))),
    ] {
        let script = lost(write.clone(), deleter);
        let deleter_first = deleter.is_some_and(|(invoke, _)| invoke < 10);
        let expected = if deleter_first {
            // The delete sorts first in invoke order.
            Some(Contradiction::AbsentAfterWrite {
                observer: 2,
                write: 1,
            })
        } else {
            found.clone()
        };
        assert_eq!(contradiction_of(&script), expected, "{write:?} {deleter:?}");
    }
    // A delete that may take effect in between explains the read.
    for delete in [
        (5, None),
        (12, None),
        (9, Some(12)),
        (13, Some(20)),
        (5, Some(10)),
    ] {
        assert_eq!(
            lost(put("k", "a"), Some(delete)).check(),
            CheckResult::Ok,
            "{delete:?}"
        );
    }

    // A swap is a write; a failed one is not, and a swap expecting absent is an observer.
    let mut swapped = Script::new();
    swapped.done(1, cas("k", None, "a"), 0, Output::Swapped(true), 1);
    swapped.done(2, cas("k", None, "b"), 2, Output::Swapped(true), 3);
    assert_eq!(
        contradiction_of(&swapped),
        Some(Contradiction::AbsentAfterWrite {
            observer: 1,
            write: 0
        })
    );
    let mut failed = Script::new();
    failed.done(1, cas("k", Some("x"), "a"), 0, Output::Swapped(false), 1);
    failed.done(2, get("k"), 2, read(None), 3);
    assert_eq!(failed.check(), CheckResult::Ok);
    // A write concurrent with the read may come after it.
    let mut concurrent = Script::new();
    concurrent.done(1, put("k", "a"), 0, Output::Done, 5);
    concurrent.done(2, get("k"), 5, read(None), 6);
    assert_eq!(concurrent.check(), CheckResult::Ok);
}

// A read of a value that the writes invoked before it returned cannot make is a
// contradiction, with the writes of that value that started too late named; values made
// of a put and appends, or by a swap nobody saw fail, are not.
#[test]
fn values_no_earlier_write_makes_are_direct_contradictions() {
    let mut future = Script::new();
    future.done(1, get("k"), 0, read(Some("a")), 1);
    future.done(2, put("k", "a"), 2, Output::Done, 3);
    future.pending(3, cas("k", None, "a"), 4);
    assert_eq!(
        contradiction_of(&future),
        Some(Contradiction::UnwrittenValue {
            observer: 0,
            later_writes: vec![1, 2]
        })
    );
    let report = future.violation().to_string();
    assert!(
        report.ends_with(
            "[0] op 0 saw \"a\", which no puts, compare-and-sets and appends invoked before \
             it returned at 1 can make; [1] op 1, [2] op 2 writing that value only started later"
        ),
        "{report}"
    );

    // A write invoked when the read returns is concurrent with it.
    let mut touching = Script::new();
    touching.done(1, get("k"), 0, read(Some("a")), 2);
    touching.done(2, put("k", "a"), 2, Output::Done, 3);
    assert_eq!(touching.check(), CheckResult::Ok);

    let mut built = Script::new();
    built.done(1, put("k", "x"), 0, Output::Done, 1);
    built.pending(2, append("k", "a"), 2);
    built.done(3, append("k", "b"), 3, Output::Done, 5);
    built.done(4, get("k"), 4, read(Some("xab")), 6);
    built.done(4, get("k"), 7, read(Some("xab")), 8);
    assert_eq!(built.check(), CheckResult::Ok);
    // The same value read before the second append was invoked.
    let mut early = Script::new();
    early.done(1, put("k", "x"), 0, Output::Done, 1);
    early.pending(2, append("k", "a"), 2);
    early.done(4, get("k"), 2, read(Some("xab")), 3);
    early.done(3, append("k", "b"), 4, Output::Done, 5);
    assert!(matches!(
        contradiction_of(&early),
        Some(Contradiction::UnwrittenValue { observer: 2, .. })
    ));

    // A swap that failed wrote nothing; one whose outcome is unknown may have.
    let mut failed_swap = Script::new();
    failed_swap.done(1, cas("k", None, "a"), 0, Output::Swapped(false), 1);
    failed_swap.done(2, get("k"), 2, read(Some("a")), 3);
    assert!(contradiction_of(&failed_swap).is_some());
    let mut unknown_swap = Script::new();
    unknown_swap.pending(1, cas("k", None, "a"), 0);
    unknown_swap.done(2, get("k"), 2, read(Some("a")), 3);
    assert_eq!(unknown_swap.check(), CheckResult::Ok);
    // An empty value needs a put of it or an empty append.
    let mut empty = Script::new();
    empty.done(1, append("k", ""), 0, Output::Done, 1);
    empty.done(2, get("k"), 2, read(Some("")), 3);
    assert_eq!(empty.check(), CheckResult::Ok);
    let mut no_empty = Script::new();
    no_empty.done(1, append("k", "a"), 0, Output::Done, 1);
    no_empty.done(2, get("k"), 2, read(Some("")), 3);
    assert!(contradiction_of(&no_empty).is_some());
}

// An append whose bytes show up twice was applied twice.
#[test]
fn duplicated_append_is_illegal() {
    let mut script = Script::new();
    script.done(1, append("k", "x"), 0, Output::Done, 3);
    script.done(2, append("k", "y"), 1, Output::Done, 4);
    script.done(3, get("k"), 5, read(Some("xyx")), 6);
    assert!(matches!(script.check(), CheckResult::Illegal(_)));
    // The same appends seen once each in some order are fine.
    let mut once = Script::new();
    once.done(1, append("k", "x"), 0, Output::Done, 3);
    once.done(2, append("k", "y"), 1, Output::Done, 4);
    once.done(3, get("k"), 5, read(Some("yx")), 6);
    assert_eq!(once.check(), CheckResult::Ok);
}

// Two compare-and-sets against the same expectation cannot both succeed when nothing
// restores the expected value in between.
#[test]
fn double_compare_and_set_success_is_illegal() {
    let mut script = Script::new();
    script.done(1, put("k", "a"), 0, Output::Done, 1);
    script.done(2, cas("k", Some("a"), "b"), 2, Output::Swapped(true), 5);
    script.done(3, cas("k", Some("a"), "c"), 3, Output::Swapped(true), 6);
    assert!(matches!(script.check(), CheckResult::Illegal(_)));
    // With a put of the expected value between them, both may succeed.
    script.done(4, put("k", "a"), 3, Output::Done, 4);
    assert_eq!(script.check(), CheckResult::Ok);
}

// With several failing keys, the one with the fewest checked operations is reported,
// with its operations in invoke order and a readable report.
#[test]
fn smallest_failing_key_is_reported() {
    let mut script = Script::new();
    script.done(1, put("big", "a"), 0, Output::Done, 1);
    script.done(1, put("big", "b"), 2, Output::Done, 3);
    script.done(1, get("big"), 4, read(Some("a")), 5);
    script.done(2, get("ok"), 0, read(None), 1);
    script.done(
        3,
        cas("small", Some("v"), "w"),
        7,
        Output::Swapped(false),
        8,
    );
    script.pending(3, get("small"), 1);
    script.done(4, put("small", "v"), 2, Output::Done, 6);
    let violation = script.violation();
    assert_eq!(violation.key, bytes("small"));
    let indexes: Vec<usize> = violation
        .operations
        .iter()
        .map(|(id, _)| id.index())
        .collect();
    assert_eq!(indexes, vec![6, 4]);
    let report = violation.to_string();
    assert!(report.contains("key \"small\" (2 operations"), "{report}");
    assert!(
        report.contains(
            "[1] op 4 client 3: cas(\"small\", expected Some(\"v\"), new \"w\") -> false  \
             [invoke 7, return 8]"
        ),
        "{report}"
    );
    assert!(
        report.contains("longest linearizable prefix (1 of 2): [0]"),
        "{report}"
    );
    assert!(
        report.contains("value after that prefix: Some(\"v\")"),
        "{report}"
    );
}

/// Many overlapping puts, each seen by one instantaneous read while all are in flight:
/// linearizable, but the search has to try many orders of the puts.
fn contended_history(writers: u64) -> Script {
    let mut script = Script::new();
    for writer in 0..writers {
        script.done(writer, put("k", &writer.to_string()), 0, Output::Done, 100);
    }
    for writer in 0..writers {
        let value = writer.to_string();
        script.done(
            writers,
            get("k"),
            50 + writer,
            read(Some(&value)),
            50 + writer,
        );
    }
    script
}

// A search that runs out of steps says Unknown, never Ok; a violation on a key searched
// after the exhausted one still makes the whole result Illegal.
#[test]
fn exhausted_budget_is_unknown() {
    let mut script = contended_history(12);
    assert_eq!(script.check(), CheckResult::Ok);
    let tight = CheckOptions {
        part_search_steps_max: 50,
    };
    assert_eq!(check(&script.history, &tight), CheckResult::Unknown);
    // A longer key (30 operations) that fails at once: its first read sees a value that
    // was never written.
    script.done(20, get("other"), 0, read(Some("ghost")), 1);
    for round in 1..30 {
        script.done(
            20,
            put("other", &round.to_string()),
            2 * round,
            Output::Done,
            2 * round + 1,
        );
    }
    assert!(matches!(
        check(&script.history, &tight),
        CheckResult::Illegal(violation) if violation.key == bytes("other")
    ));
}

/// A small deterministic generator (splitmix64), so every randomized case replays from its
/// seed.
/// The tests' generator: the crate's one seeded generator.
struct Random {
    rng: crate::raft::rng::SeededRng,
}

impl Random {
    fn new(seed: u64) -> Random {
        Random {
            rng: crate::raft::rng::SeededRng::new(seed),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The shape of a generated history.
struct Workload {
    clients: u64,
    keys: u64,
    operations: u64,
    /// Chance that an operation ends without the client learning its outcome.
    pending_percent: u64,
    /// Chance that an operation is refused without being applied.
    failed_percent: u64,
}

enum ClientState {
    Idle,
    InFlight {
        id: OperationId,
        input: Input,
        output: Option<Output>,
    },
}

/// Records a history of clients running against one real sequential store: each operation
/// is invoked, applied to the store at one instant, and returned, with other clients' steps
/// interleaved at random, so every history it makes is linearizable. Times advance by 0 or
/// 1 per event, so calls and returns often share a time.
fn generate(seed: u64, workload: &Workload) -> History {
    let mut random = Random::new(seed);
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut history = History::with_capacity(workload.operations as usize);
    let mut clients: Vec<ClientState> = (0..workload.clients).map(|_| ClientState::Idle).collect();
    let mut invoked = 0u64;
    let mut in_flight = 0u64;
    let mut time = 0u64;
    // Unique value names: put values start with 'p', append bytes with 'a', swap values
    // with 'c', so only the put of a value can ever make it the whole value of a key.
    let mut next_value = 0u64;
    while invoked < workload.operations || in_flight > 0 {
        time += random.below(2);
        let client = random.below(workload.clients) as usize;
        match &mut clients[client] {
            ClientState::Idle => {
                if invoked == workload.operations {
                    continue;
                }
                let key = format!("key{}", random.below(workload.keys)).into_bytes();
                next_value += 1;
                let input = match random.below(10) {
                    0..=2 => Input::Get { key },
                    3..=4 => Input::Put {
                        key,
                        value: format!("p{next_value};").into_bytes(),
                    },
                    5 => Input::Delete { key },
                    6..=7 => Input::Append {
                        key,
                        value: format!("a{next_value};").into_bytes(),
                    },
                    _ => {
                        // Usually expect the current value so that swaps succeed often.
                        let expected = if random.percent(70) {
                            store.get(&key).cloned()
                        } else {
                            None
                        };
                        Input::CompareAndSet {
                            key,
                            expected,
                            new_value: format!("c{next_value};").into_bytes(),
                        }
                    }
                };
                let id = history.invoke(ClientId(client as u64), input.clone(), time);
                clients[client] = ClientState::InFlight {
                    id,
                    input,
                    output: None,
                };
                invoked += 1;
                in_flight += 1;
            }
            ClientState::InFlight {
                id,
                input,
                output: output @ None,
            } => {
                if random.percent(workload.failed_percent) {
                    history.fail(*id, time).unwrap();
                } else if random.percent(workload.pending_percent) {
                    // Gave up before the store applied it: it never takes effect.
                    history.give_up(*id, time).unwrap();
                } else {
                    *output = Some(apply(&mut store, input));
                    continue;
                }
                clients[client] = ClientState::Idle;
                in_flight -= 1;
            }
            ClientState::InFlight {
                id,
                output: Some(output),
                ..
            } => {
                if random.percent(workload.pending_percent) {
                    // Applied, but the reply was lost.
                    history.give_up(*id, time).unwrap();
                } else {
                    history.complete(*id, output.clone(), time).unwrap();
                }
                clients[client] = ClientState::Idle;
                in_flight -= 1;
            }
        }
    }
    history
}

/// The sequential key-value store the generator runs against.
fn apply(store: &mut HashMap<Vec<u8>, Vec<u8>>, input: &Input) -> Output {
    match input {
        Input::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            Output::Done
        }
        Input::Get { key } => Output::Value(store.get(key).cloned()),
        Input::Delete { key } => {
            store.remove(key);
            Output::Done
        }
        Input::Append { key, value } => {
            store
                .entry(key.clone())
                .or_default()
                .extend_from_slice(value);
            Output::Done
        }
        Input::CompareAndSet {
            key,
            expected,
            new_value,
        } => {
            let swapped = store.get(key) == expected.as_ref();
            if swapped {
                store.insert(key.clone(), new_value.clone());
            }
            Output::Swapped(swapped)
        }
    }
}

/// Rewrites the output of one completed get so that no linearization can explain it, in
/// one of three ways picked by `random`: a value never written, a value first written by a
/// put invoked after the get returned, or a value overwritten before the get was invoked.
/// Returns the index of the corrupted get and the way, or `None` if there is no get.
fn corrupt_one_read(
    history: &History,
    random: &mut Random,
) -> Option<(History, usize, &'static str)> {
    let operations = history.operations();
    let reads: Vec<usize> = (0..operations.len())
        .filter(|&index| {
            operations[index].input.is_read_only() && operations[index].return_time().is_some()
        })
        .collect();
    if reads.is_empty() {
        return None;
    }
    let target = reads[random.below(reads.len() as u64) as usize];
    let read = &operations[target];
    let key = read.input.key();
    let invoke = read.invoke_time;
    let ret = read
        .return_time()
        .expect("reads were filtered on completion");
    let puts_on_key = |index: &usize| matches!(&operations[*index].input, Input::Put { key: put_key, .. } if put_key == key);
    let put_value = |index: usize| match &operations[index].input {
        Input::Put { value, .. } => value.clone(),
        _ => unreachable!("filtered on puts"),
    };

    let future: Vec<usize> = (0..operations.len())
        .filter(puts_on_key)
        .filter(|&index| operations[index].invoke_time > ret)
        .collect();
    // A completed put followed by a completed write of the key that was invoked after the
    // put returned and returned before the read was invoked: nothing can bring the put's
    // value back, because values are unique.
    let overwritten: Vec<usize> = (0..operations.len())
        .filter(puts_on_key)
        .filter(|&put| {
            let Some(put_return) = operations[put].return_time() else {
                return false;
            };
            operations.iter().any(|write| {
                !write.input.is_read_only()
                    && !matches!(write.input, Input::CompareAndSet { .. })
                    && write.input.key() == key
                    && write.invoke_time > put_return
                    && write.return_time().is_some_and(|time| time < invoke)
            })
        })
        .collect();

    let (value, way) = match random.below(3) {
        1 if !future.is_empty() => (
            put_value(future[random.below(future.len() as u64) as usize]),
            "future value",
        ),
        2 if !overwritten.is_empty() => (
            put_value(overwritten[random.below(overwritten.len() as u64) as usize]),
            "overwritten value",
        ),
        _ => (b"never written".to_vec(), "unwritten value"),
    };
    let mut corrupted = History::with_capacity(operations.len());
    for (index, operation) in operations.iter().enumerate() {
        let mut operation = operation.clone();
        if index == target {
            operation.outcome = Outcome::Completed {
                output: Output::Value(Some(value.clone())),
                return_time: ret,
            };
        }
        corrupted.push(operation).unwrap();
    }
    Some((corrupted, target, way))
}

/// Seeds to run: `COREKV_TEST_SEED=<n>` replays one, otherwise `count` from 0.
fn seeds(count: u64) -> Vec<u64> {
    match crate::testing::test_seed_from_env() {
        Some(seed) => vec![seed],
        None => (0..count).collect(),
    }
}

/// Configurations (operations placed, sorted store contents) the brute force has found to
/// lead nowhere.
type FailedConfigurations = std::collections::HashSet<(u16, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Decides linearizability straight from the definition, for tiny histories: tries every
/// order of the operations that respects real time, with each pending operation either
/// placed somewhere after its invoke or left out. Shares nothing with the checker but the
/// history types.
fn brute_force_linearizable(history: &History) -> bool {
    let operations: Vec<&Operation> = history
        .operations()
        .iter()
        .filter(|operation| !matches!(operation.outcome, Outcome::Failed { .. }))
        .collect();
    assert!(operations.len() <= 16, "brute force is for tiny histories");
    let mut failed = FailedConfigurations::new();
    brute_force_from(&operations, 0, &mut HashMap::new(), &mut failed)
}

fn brute_force_from(
    operations: &[&Operation],
    placed: u16,
    store: &mut HashMap<Vec<u8>, Vec<u8>>,
    failed: &mut FailedConfigurations,
) -> bool {
    let unplaced = |index: usize| placed & (1 << index) == 0;
    let all_completed_placed = (0..operations.len())
        .all(|index| !unplaced(index) || operations[index].return_time().is_none());
    if all_completed_placed {
        return true;
    }
    let mut snapshot: Vec<(Vec<u8>, Vec<u8>)> = store
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    snapshot.sort();
    if failed.contains(&(placed, snapshot.clone())) {
        return false;
    }
    for next in (0..operations.len()).filter(|&index| unplaced(index)) {
        // Nothing unplaced may have returned before this operation was invoked.
        let blocked = (0..operations.len()).any(|other| {
            unplaced(other)
                && operations[other]
                    .return_time()
                    .is_some_and(|time| time < operations[next].invoke_time)
        });
        if blocked {
            continue;
        }
        let before = store.clone();
        let output = apply(store, &operations[next].input);
        let consistent = operations[next].output().is_none_or(|seen| *seen == output);
        if consistent && brute_force_from(operations, placed | (1 << next), store, failed) {
            return true;
        }
        *store = before;
    }
    failed.insert((placed, snapshot));
    false
}

/// The size of a tiny random history and how its operations end.
struct TinyShape {
    /// At most this many operations (at least one).
    operations_max: u64,
    /// Of every ten operations, how many complete; one fails, one is given up on, and
    /// the rest stay pending.
    completed_tenths: u64,
}

/// A tiny history over two keys with outputs drawn at random from a small pool, so that
/// about half of them are linearizable, with pending, failed and given-up operations and
/// many equal times.
fn tiny_random_history(random: &mut Random, shape: &TinyShape) -> History {
    fn pick<'a>(random: &mut Random, choices: &[&'a str]) -> &'a str {
        choices[random.below(choices.len() as u64) as usize]
    }
    let mut history = History::new();
    let count = 1 + random.below(shape.operations_max);
    for _ in 0..count {
        let key = pick(random, &["k", "k", "k", "l"]).to_string();
        let input = match random.below(5) {
            0 => Input::Get { key: bytes(&key) },
            1 => Input::Put {
                key: bytes(&key),
                value: bytes(pick(random, &["x", "y", "q", "u"])),
            },
            2 => Input::Delete { key: bytes(&key) },
            3 => Input::Append {
                key: bytes(&key),
                value: bytes(pick(random, &["a", "b", "c"])),
            },
            _ => Input::CompareAndSet {
                key: bytes(&key),
                expected: [None, Some("x"), Some("y"), Some("xa"), Some("a")]
                    [random.below(5) as usize]
                    .map(bytes),
                new_value: bytes(pick(random, &["x", "y", "u", "v"])),
            },
        };
        let output = match &input {
            Input::Get { .. } => Output::Value(
                [
                    None,
                    Some("x"),
                    Some("y"),
                    Some("xa"),
                    Some("a"),
                    Some("ab"),
                    Some("ya"),
                ][random.below(7) as usize]
                    .map(bytes),
            ),
            Input::CompareAndSet { .. } => Output::Swapped(random.percent(50)),
            _ => Output::Done,
        };
        let invoke = random.below(8);
        let id = history.invoke(ClientId(random.below(3)), input, invoke);
        // Of ten: the first `completed_tenths` complete, the next fails, the next is
        // given up on, the rest stay pending.
        let outcome = random.below(10);
        let completed = shape.completed_tenths;
        if outcome < completed {
            history
                .complete(id, output, invoke + random.below(5))
                .unwrap();
        } else if outcome == completed {
            history.fail(id, invoke + random.below(5)).unwrap();
        } else if outcome == completed + 1 {
            history.give_up(id, invoke + random.below(5)).unwrap();
        }
    }
    history
}

// On thousands of tiny random histories the checker agrees with a brute-force search over
// every order, so its pruning of pending operations and its direct contradictions never
// change a verdict.
#[test]
fn tiny_histories_agree_with_brute_force() {
    let shape = TinyShape {
        operations_max: 10,
        completed_tenths: 6,
    };
    agree_with_brute_force(&shape, 0x7e57_0000, "tiny_histories_agree");
}

// The same with up to 12 operations, most of them pending: the histories where the cache
// covers configurations by their subsets of pending operations.
#[test]
fn tiny_histories_with_many_pending_agree_with_brute_force() {
    let shape = TinyShape {
        operations_max: 12,
        completed_tenths: 3,
    };
    agree_with_brute_force(&shape, 0x9e4d_0000, "tiny_histories_with_many");
}

/// Checks 10,000 tiny histories of `shape` (seeds mixed with `salt`) against the brute
/// force; `test` names the test in the replay command.
fn agree_with_brute_force(shape: &TinyShape, salt: u64, test: &str) {
    let options = CheckOptions::default();
    let mut verdicts = [0u32; 2];
    for seed in seeds(10_000) {
        let mut random = Random::new(seed ^ salt);
        let history = tiny_random_history(&mut random, shape);
        let expected = brute_force_linearizable(&history);
        verdicts[usize::from(expected)] += 1;
        let result = check(&history, &options);
        let agrees = match &result {
            CheckResult::Ok => expected,
            CheckResult::Illegal(_) => !expected,
            CheckResult::Unknown => false,
        };
        assert!(
            agrees,
            "seed {seed}; replay with COREKV_TEST_SEED={seed} cargo test --release --lib \
             check::tests::{test}\nbrute force says linearizable: {expected}\n\
             checker: {result:?}\nhistory: {:#?}",
            history.operations()
        );
    }
    // Both verdicts are common, or the comparison proves little.
    if crate::testing::test_seed_from_env().is_none() {
        assert!(verdicts.iter().all(|&count| count > 2_000), "{verdicts:?}");
    }
}

// Histories recorded from a real sequential execution check Ok, and the same history with
// one read corrupted checks Illegal.
#[test]
fn random_histories_are_linearizable_and_corruptions_are_not() {
    let options = CheckOptions::default();
    for seed in seeds(400) {
        let mut random = Random::new(seed ^ 0xc0ff_ee00);
        let workload = Workload {
            clients: 2 + random.below(5),
            keys: 1 + random.below(3),
            operations: 20 + random.below(150),
            pending_percent: random.below(8),
            failed_percent: random.below(8),
        };
        let replay = format!(
            "seed {seed}; replay with COREKV_TEST_SEED={seed} cargo test --release --lib \
             check::tests::random_histories"
        );
        let history = generate(seed, &workload);
        assert_eq!(check(&history, &options), CheckResult::Ok, "{replay}");
        let Some((corrupted, target, way)) = corrupt_one_read(&history, &mut random) else {
            continue;
        };
        match check(&corrupted, &options) {
            CheckResult::Illegal(violation) => {
                assert!(
                    violation
                        .operations
                        .iter()
                        .any(|(id, _)| id.index() == target),
                    "{replay}: the violation is not on the corrupted read\n{violation}"
                );
            }
            other => panic!("{replay}: read {target} given a {way} checks {other:?}"),
        }
    }
}

/// The size the cluster simulator records: 10,000 operations, 100 keys, 10 clients.
fn simulator_sized_history(seed: u64) -> History {
    generate(
        seed,
        &Workload {
            clients: 10,
            keys: 100,
            operations: 10_000,
            pending_percent: 2,
            failed_percent: 2,
        },
    )
}

// A simulator-sized history checks Ok within a small fixed step budget, and the same
// history with one read corrupted checks Illegal within it (so both take well under a
// second; the time is measured in the module documentation).
#[test]
fn ten_thousand_operations_check_quickly() {
    let seed = 7;
    let history = simulator_sized_history(seed);
    assert_eq!(history.len(), 10_000);
    let options = CheckOptions {
        part_search_steps_max: 20_000,
    };
    assert_eq!(check(&history, &options), CheckResult::Ok, "seed {seed}");
    let mut random = Random::new(seed);
    let (corrupted, target, way) =
        corrupt_one_read(&history, &mut random).expect("the history has reads");
    match check(&corrupted, &options) {
        CheckResult::Illegal(violation) => assert!(
            violation
                .operations
                .iter()
                .any(|(id, _)| id.index() == target),
            "seed {seed}: the violation is not on the corrupted read\n{violation}"
        ),
        other => panic!("seed {seed}: read {target} given a {way} checks {other:?}"),
    }
}

// All 10,000 operations on one hot key, 10 clients in flight, still check within budget.
#[test]
fn ten_thousand_operations_on_one_key_check_quickly() {
    let seed = 11;
    let history = generate(
        seed,
        &Workload {
            clients: 10,
            keys: 1,
            operations: 10_000,
            pending_percent: 0,
            failed_percent: 2,
        },
    );
    let options = CheckOptions {
        part_search_steps_max: 10_000_000,
    };
    assert_eq!(check(&history, &options), CheckResult::Ok, "seed {seed}");
}

// The fault-run history has the advertised shape: 77 operations on one key, 40 of them
// pending, the final put returned before the last read started, the variants differ only
// in the last read's output, and as recorded by a sequential store it checks Ok.
#[test]
fn fault_history_has_the_advertised_shape() {
    let fault = fault_history(LastRead::Final);
    let operations = fault.history.operations();
    assert_eq!(operations.len(), 77);
    let pending = operations
        .iter()
        .filter(|operation| matches!(operation.outcome, Outcome::Pending { .. }))
        .count();
    assert_eq!(pending, 40);
    assert!(operations
        .iter()
        .all(|operation| operation.input.key() == fault_history::KEY));
    let final_write = &operations[fault.final_write.index()];
    let last_read = &operations[fault.last_read.index()];
    assert!(final_write.return_time().unwrap() < last_read.invoke_time);
    for variant in [LastRead::Absent, LastRead::Stale] {
        let other = fault_history(variant);
        assert_eq!(other.last_read, fault.last_read);
        for (index, (left, right)) in operations
            .iter()
            .zip(other.history.operations())
            .enumerate()
        {
            assert_eq!(
                left == right,
                index != fault.last_read.index(),
                "{variant:?} op {index}"
            );
        }
    }
    assert_eq!(
        check(&fault.history, &CheckOptions::default()),
        CheckResult::Ok
    );
}

/// Checks the one key of `history` with the search alone, as `check` does after its
/// direct checks.
fn search_one_key(history: &History, budget: u64) -> (search::PartResult, search::SearchCounters) {
    let part: Vec<usize> = (0..history.len()).collect();
    assert!(history
        .operations()
        .iter()
        .all(|operation| model::is_checked(operation)
            && operation.input.key() == history.operations()[0].input.key()));
    search::check_part(history, &part, budget)
}

// The work of a search step does not grow with the steps taken before it: on the fault-run
// history that only the search can decide, at 1M and at 4M steps the cache makes about one
// lookup per configuration, compares about one entry per lookup, and does the same work
// per step at both budgets. (Before lookups went by hash, each visit walked a chain that
// grew with the steps: some 3,000 entries per visit after 1M steps.)
#[test]
fn search_step_cost_does_not_grow_with_the_budget() {
    let history = fault_history(LastRead::Stale).history;
    let mut work_per_step = Vec::new();
    for budget in [1_000_000u64, 4_000_000] {
        let (result, counters) = search_one_key(&history, budget);
        assert!(matches!(result, search::PartResult::Exhausted));
        assert_eq!(counters.steps, budget);
        let cache = counters.cache;
        assert!(
            cache.entries <= cache.visits && cache.visits <= counters.steps,
            "{counters:?}"
        );
        assert!(
            cache.lookups <= cache.visits * memo::LOOKUPS_PER_VISIT_MAX,
            "{counters:?}"
        );
        // Chains only hold entries whose 64-bit hashes collide.
        assert!(cache.entries_compared <= cache.lookups, "{counters:?}");
        let work = cache.visits + cache.lookups + cache.entries_compared;
        work_per_step.push(work as f64 / counters.steps as f64);
    }
    assert!(
        work_per_step[1] <= 1.2 * work_per_step[0] && work_per_step[1] < 2.0,
        "cache work per step at 1M and 4M steps: {work_per_step:?}"
    );
}

// On the fault-run history, the lost write is found before any search (one step of budget
// is enough) and named by its two operations; the legal variant checks Ok or Unknown within
// the default budget; the stale read, which only a search could prove, is never Ok.
#[test]
fn fault_history_lost_write_is_found_without_a_search() {
    let fault = fault_history(LastRead::Absent);
    let one_step = CheckOptions {
        part_search_steps_max: 1,
    };
    let CheckResult::Illegal(violation) = check(&fault.history, &one_step) else {
        panic!("the lost write is not reported");
    };
    let position_of = |id: OperationId| {
        violation
            .operations
            .iter()
            .position(|(other, _)| *other == id)
            .expect("the operation is on the key")
    };
    assert_eq!(
        violation.contradiction,
        Some(Contradiction::AbsentAfterWrite {
            observer: position_of(fault.last_read),
            write: position_of(fault.final_write),
        })
    );
    let report = violation.to_string();
    assert!(
        report.contains("no delete of the key can take effect"),
        "{report}"
    );

    let options = CheckOptions::default();
    let legal = check(&fault_history(LastRead::Final).history, &options);
    assert!(
        matches!(legal, CheckResult::Ok | CheckResult::Unknown),
        "{legal:?}"
    );
    let stale = check(&fault_history(LastRead::Stale).history, &options);
    assert_ne!(stale, CheckResult::Ok);
}
