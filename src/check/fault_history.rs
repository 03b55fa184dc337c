//! A fault-run history of one key with many operations of unknown outcome, built to the
//! shape that makes the search slow, for the checker's tests and `benches/check.rs`.
//!
//! The bench includes this file with `#[path]`, so it names the checker's types only
//! through `super::` and uses nothing but the public API.
//!
//! The story, in the simulator's value names (`<client>.<number>` for puts and
//! compare-and-sets, `<<client>.<number>>` for appends):
//!
//! 1. Healthy: two clients write and read the key, one operation at a time.
//! 2. A fault: 40 clients propose writes that time out; they give up, and each write may
//!    apply later or never. Nobody ever reads what they wrote.
//! 3. Meanwhile one client keeps doing rounds of put, get, compare-and-set against the
//!    value it just read. Each compare-and-set fails: one of the burst's writes landed in
//!    between, and the client's next put overwrites it.
//! 4. Healed: a client puts the key and four clients read it.
//!
//! Every failed compare-and-set needs one write of the burst placed right before it, and
//! any of the 40 will do, so after `r` rounds the search has reached the same completed
//! operations and the same value through every `r`-subset of the burst. When the last
//! read cannot be explained, nothing the search does in the rounds can help, and it
//! tries all of those subsets before it can say so.

use super::{ClientId, History, Input, OperationId, Output};

/// Completed operations before the fault.
pub const HEALTHY_OPERATIONS: usize = 8;
/// Writes of the fault whose clients gave up: the pending operations.
pub const PENDING_WRITES: usize = 40;
/// Rounds of put, get, failed compare-and-set during the fault.
pub const ROUNDS: usize = 8;
/// Completed reads after the final put.
pub const FINAL_READS: usize = 4;
/// Every operation of the history; all of them are checked (no pending reads, nothing
/// failed).
pub const OPERATIONS: usize = HEALTHY_OPERATIONS + PENDING_WRITES + 3 * ROUNDS + 1 + FINAL_READS;
const _: () = assert!(OPERATIONS == 77);

/// Steps after its invoke at which a client of the burst gives up.
const GIVE_UP_AFTER_STEPS: u64 = 250;

/// The key every operation touches.
pub const KEY: &[u8] = b"hot";

/// What the last read after the final put returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastRead {
    /// The final put's value: every output is one a sequential store gave, so the
    /// history is linearizable.
    Final,
    /// The key absent, although the final put returned before the read was invoked and
    /// no delete was in flight from then on: a lost write, shown by those two operations
    /// alone.
    Absent,
    /// The value of the first put of the history, overwritten long before. Illegal too,
    /// but no pair of operations shows it: only a search that has ruled out every
    /// placement of the burst's writes can tell.
    Stale,
}

/// A fault-run history and its notable operations.
#[derive(Debug)]
pub struct FaultHistory {
    pub history: History,
    /// The completed put after the cluster healed.
    pub final_write: OperationId,
    /// The last read, whose output [`LastRead`] chose.
    pub last_read: OperationId,
}

/// Records the history, its last read returning what `last_read` says.
pub fn fault_history(last_read: LastRead) -> FaultHistory {
    let mut recorder = Recorder {
        history: History::with_capacity(OPERATIONS),
        time: 0,
    };
    let key = || KEY.to_vec();

    // 1. Healthy.
    let first_value = b"1.1".to_vec();
    recorder.done(1, put(&first_value), Output::Done);
    recorder.done(2, Input::Get { key: key() }, read(b"1.1"));
    recorder.done(2, append(b"<2.3>"), Output::Done);
    recorder.done(1, Input::Get { key: key() }, read(b"1.1<2.3>"));
    recorder.done(
        1,
        compare_and_set(b"1.1<2.3>", b"1.4"),
        Output::Swapped(true),
    );
    recorder.done(2, Input::Get { key: key() }, read(b"1.4"));
    recorder.done(2, Input::Delete { key: key() }, Output::Done);
    recorder.done(1, Input::Get { key: key() }, Output::Value(None));

    // 2. The burst: two puts for every append, each from its own client.
    for number in 0..PENDING_WRITES {
        let client = 10 + number as u64;
        let value = format!("{client}.1");
        let input = if number % 3 == 2 {
            append(format!("<{value}>").as_bytes())
        } else {
            put(value.as_bytes())
        };
        let id = recorder
            .history
            .invoke(ClientId(client), input, recorder.time);
        recorder
            .history
            .give_up(id, recorder.time + GIVE_UP_AFTER_STEPS)
            .expect("a give-up comes after its invoke");
        recorder.time += 1;
    }

    // 3. The rounds, all while the burst's writes are in flight.
    for round in 1..=ROUNDS {
        let value = format!("3.{}", 10 * round);
        let new_value = format!("3.{}", 10 * round + 1);
        recorder.done(3, put(value.as_bytes()), Output::Done);
        recorder.done(3, Input::Get { key: key() }, read(value.as_bytes()));
        recorder.done(
            3,
            compare_and_set(value.as_bytes(), new_value.as_bytes()),
            Output::Swapped(false),
        );
    }

    // 4. Healed.
    recorder.time += GIVE_UP_AFTER_STEPS;
    let final_value = b"4.1".to_vec();
    let final_write = recorder.done(4, put(&final_value), Output::Done);
    let mut last = final_write;
    for reader in 0..FINAL_READS as u64 {
        let is_last = reader + 1 == FINAL_READS as u64;
        let seen = match last_read {
            LastRead::Absent if is_last => None,
            LastRead::Stale if is_last => Some(first_value.clone()),
            LastRead::Final | LastRead::Absent | LastRead::Stale => Some(final_value.clone()),
        };
        last = recorder.done(5 + reader, Input::Get { key: key() }, Output::Value(seen));
    }
    assert_eq!(recorder.history.len(), OPERATIONS);
    FaultHistory {
        history: recorder.history,
        final_write,
        last_read: last,
    }
}

/// Records completed operations one after another, each taking two steps.
struct Recorder {
    history: History,
    time: u64,
}

impl Recorder {
    fn done(&mut self, client: u64, input: Input, output: Output) -> OperationId {
        let id = self.history.invoke(ClientId(client), input, self.time);
        self.history
            .complete(id, output, self.time + 1)
            .expect("the output fits the input and the times grow");
        self.time += 2;
        id
    }
}

fn put(value: &[u8]) -> Input {
    Input::Put {
        key: KEY.to_vec(),
        value: value.to_vec(),
    }
}

fn append(value: &[u8]) -> Input {
    Input::Append {
        key: KEY.to_vec(),
        value: value.to_vec(),
    }
}

fn compare_and_set(expected: &[u8], new_value: &[u8]) -> Input {
    Input::CompareAndSet {
        key: KEY.to_vec(),
        expected: Some(expected.to_vec()),
        new_value: new_value.to_vec(),
    }
}

fn read(value: &[u8]) -> Output {
    Output::Value(Some(value.to_vec()))
}
