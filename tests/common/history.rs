//! Records what the clients of a process test did as a [`corekv::check::History`] and
//! checks it for linearizability: every operation's invoke and end, with times from one
//! monotonic clock that every recording thread shares.
//!
//! The SDK's errors are mapped to what they say about the operation ([`error_ending`]):
//! an operation that may have applied stays pending (the checker may place it anywhere
//! after its invoke, or nowhere), and only one that definitely did not apply is failed
//! (the checker drops it). Getting this wrong in the safe direction only weakens the
//! check; getting it wrong the other way would report violations that did not happen.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use corekv::check::{
    check, CheckOptions, CheckResult, ClientId, History, Input, OperationId, Outcome, Output,
};
use corekv::client::{Client, ClientError, ErrorCode, PutResponse, RangeResponse};

use super::{RawGet, RawReadError};

/// Most operations one recorder takes. The checker decides far larger histories than a
/// process test makes; the bound turns a runaway loop into a clear failure instead of a
/// history too big to check.
pub const RECORDED_OPERATIONS_MAX: usize = 200_000;

/// What an error says about whether its operation took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorEnding {
    /// Definitely not applied: the checker drops the operation.
    NotApplied,
    /// May have applied, at any time after the invoke: the operation stays pending.
    Unknown,
}

/// What an SDK error says about its operation (see `src/client/error.rs`).
pub fn error_ending(error: &ClientError) -> ErrorEnding {
    match error {
        // Never sent, or no attempt may have reached a server: the SDK turns a failure
        // after a possible delivery into `OutcomeUnknown`.
        ClientError::InvalidArgument(_)
        | ClientError::RequestTooLarge { .. }
        | ClientError::Unavailable { .. }
        | ClientError::Timeout { .. } => ErrorEnding::NotApplied,
        // Refused for what the request is: every delivery of it is refused alike.
        ClientError::Rejected {
            code:
                ErrorCode::KeyTooLarge
                | ErrorCode::ValueTooLarge
                | ErrorCode::EmptyKey
                | ErrorCode::TooManyTxnOps
                | ErrorCode::TxnSpansGroups
                | ErrorCode::UnknownOp
                | ErrorCode::InvalidRequest
                | ErrorCode::RequestTooLarge,
            ..
        } => ErrorEnding::NotApplied,
        // Any other refusal may be the answer to a retry of a write whose earlier,
        // unanswered attempt was delivered and applied: the SDK reports the refusal, and
        // records that write's session outcome as unknown (`client/pending.rs`).
        ClientError::Rejected { .. } => ErrorEnding::Unknown,
        ClientError::OutcomeUnknown { .. } => ErrorEnding::Unknown,
        // An answer the SDK could not read may answer an applied write.
        ClientError::Protocol(_) => ErrorEnding::Unknown,
    }
}

/// How the recorded operations ended so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes the client saw acknowledged.
    pub writes_completed: u64,
    /// Reads that returned a value (or the key's absence).
    pub reads_completed: u64,
    /// Operations that definitely did not apply.
    pub not_applied: u64,
    /// Operations whose outcome the client never learned.
    pub unknown: u64,
}

#[derive(Debug, Default)]
struct Recorded {
    history: History,
    counts: Counts,
}

/// A history that several client threads record into at once.
#[derive(Debug)]
pub struct Recorder {
    /// Times are nanoseconds since this instant: one monotonic clock for every thread.
    clock_start: Instant,
    recorded: Mutex<Recorded>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            clock_start: Instant::now(),
            recorded: Mutex::new(Recorded::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A thread that panicked while recording fails its test anyway; what it recorded
        // is still a consistent history.
        self.recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_nanos()).expect("a test runs for < 500 years")
    }

    /// Records that `client` is about to send `input`. Call it before the request leaves,
    /// so the invoke time is no later than the real one.
    pub fn invoke(&self, client: ClientId, input: Input) -> OperationId {
        let mut recorded = self.lock();
        assert!(
            recorded.history.len() < RECORDED_OPERATIONS_MAX,
            "more than {RECORDED_OPERATIONS_MAX} operations recorded: a test loop ran away"
        );
        // The time is read under the lock, so recording order is time order.
        let time = self.now();
        recorded.history.invoke(client, input, time)
    }

    /// Records the output the client received for `id`. Call it after the answer came.
    pub fn complete(&self, id: OperationId, output: Output) {
        let mut recorded = self.lock();
        let time = self.now();
        match output {
            Output::Value(_) => recorded.counts.reads_completed += 1,
            Output::Done | Output::Swapped(_) => recorded.counts.writes_completed += 1,
        }
        recorded
            .history
            .complete(id, output, time)
            .expect("each operation is completed once, with an output of its kind");
    }

    /// Records that `id` ended with `ending`.
    pub fn end(&self, id: OperationId, ending: ErrorEnding) {
        let mut recorded = self.lock();
        let time = self.now();
        let result = match ending {
            ErrorEnding::NotApplied => {
                recorded.counts.not_applied += 1;
                recorded.history.fail(id, time)
            }
            ErrorEnding::Unknown => {
                recorded.counts.unknown += 1;
                recorded.history.give_up(id, time)
            }
        };
        result.expect("each operation ends once");
    }

    /// Records that `id` ended with the SDK error `error`.
    pub fn end_with_error(&self, id: OperationId, error: &ClientError) {
        self.end(id, error_ending(error));
    }

    /// `sdk.put(key, value)`, recorded as `client`'s.
    pub fn put(
        &self,
        sdk: &Client,
        client: ClientId,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<PutResponse, ClientError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let id = self.invoke(
            client,
            Input::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        );
        let result = sdk.put(key, value);
        match &result {
            Ok(_) => self.complete(id, Output::Done),
            Err(error) => self.end_with_error(id, error),
        }
        result
    }

    /// `sdk.get(key)` (linearizable), recorded as `client`'s; returns the value.
    pub fn get(
        &self,
        sdk: &Client,
        client: ClientId,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let key = key.as_ref();
        let id = self.invoke(client, Input::Get { key: key.to_vec() });
        let result = sdk.get(key).map(|found| found.map(|pair| pair.value));
        match &result {
            Ok(value) => self.complete(id, Output::Value(value.clone())),
            Err(error) => self.end_with_error(id, error),
        }
        result
    }

    /// `sdk.scan_prefix(prefix, 0)` (linearizable), recorded as one get of each of `keys`
    /// (which all start with `prefix`) by `client`, each invoked before the scan and
    /// completed after it. That is what the scan says about each key: a scan over many
    /// groups is not atomic, but each key's value was current at some moment within it.
    /// A key the answer leaves out is absent, unless a limit cut the answer short.
    pub fn scan_prefix(
        &self,
        sdk: &Client,
        client: ClientId,
        prefix: &[u8],
        keys: &[Vec<u8>],
    ) -> Result<RangeResponse, ClientError> {
        assert!(keys.iter().all(|key| key.starts_with(prefix)));
        let ids: Vec<OperationId> = keys
            .iter()
            .map(|key| self.invoke(client, Input::Get { key: key.clone() }))
            .collect();
        let result = sdk.scan_prefix(prefix, 0);
        for (key, id) in keys.iter().zip(ids) {
            match &result {
                Ok(scanned) => match scanned.kvs.iter().find(|pair| &pair.key == key) {
                    Some(pair) => self.complete(id, Output::Value(Some(pair.value.clone()))),
                    None if !scanned.more => self.complete(id, Output::Value(None)),
                    None => self.end(id, ErrorEnding::Unknown),
                },
                Err(error) => self.end_with_error(id, error),
            }
        }
        result
    }

    /// A linearizable get of `key` served by the node at `endpoint` itself, recorded as
    /// `client`'s.
    pub fn raw_get(
        &self,
        client: ClientId,
        endpoint: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, RawReadError> {
        let id = self.invoke(client, Input::Get { key: key.to_vec() });
        let result = RawGet::send(endpoint, key)
            .map_err(RawReadError::Lost)
            .and_then(RawGet::answer);
        self.end_raw_get(id, &result);
        result
    }

    /// Records how the raw get `id` ended.
    pub fn end_raw_get(&self, id: OperationId, result: &Result<Option<Vec<u8>>, RawReadError>) {
        match result {
            Ok(value) => self.complete(id, Output::Value(value.clone())),
            // A read applies nothing either way; a refusal is the definite one.
            Err(RawReadError::Refused(_)) => self.end(id, ErrorEnding::NotApplied),
            Err(RawReadError::Lost(_)) => self.end(id, ErrorEnding::Unknown),
        }
    }

    /// Reads every one of `keys` through `sdk` once all writes have ended, recorded as
    /// `client`'s, and checks each value with [`assert_final_value`]; returns what was
    /// read.
    pub fn read_final_values(
        &self,
        sdk: &Client,
        client: ClientId,
        keys: &[String],
    ) -> Vec<(String, Option<Vec<u8>>)> {
        let read: Vec<(String, Option<Vec<u8>>)> = keys
            .iter()
            .map(|key| {
                let value = self
                    .get(sdk, client, key)
                    .unwrap_or_else(|error| panic!("get {key}: {error}"));
                (key.clone(), value)
            })
            .collect();
        let history = self.history();
        for (key, value) in &read {
            assert_final_value(&history, key.as_bytes(), value.as_deref());
        }
        read
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        self.lock().history.clone()
    }

    /// Checks everything recorded so far (see [`assert_linearizable`]) and returns the
    /// counts.
    pub fn assert_linearizable(&self, replay: &str) -> Counts {
        let (history, counts) = {
            let recorded = self.lock();
            (recorded.history.clone(), recorded.counts)
        };
        let started = Instant::now();
        assert_linearizable(&history, replay);
        println!(
            "history: {} operations linearizable, checked in {:?} ({} writes and {} reads \
             completed, {} not applied, {} with unknown outcome)",
            history.len(),
            started.elapsed(),
            counts.writes_completed,
            counts.reads_completed,
            counts.not_applied,
            counts.unknown
        );
        counts
    }
}

/// Fails the test unless the checker finds `history` linearizable. `replay` says how to
/// run the test again (its seed, when it has one). An `Unknown` verdict fails too: a
/// test's history must be small enough for the checker to decide.
pub fn assert_linearizable(history: &History, replay: &str) {
    match check(history, &CheckOptions::default()) {
        CheckResult::Ok => {}
        CheckResult::Illegal(violation) => panic!(
            "the history of {} operations is not linearizable; {replay}\n{violation}",
            history.len()
        ),
        CheckResult::Unknown => panic!(
            "the checker could not decide the history of {} operations within its budget; \
             record fewer operations per key; {replay}",
            history.len()
        ),
    }
}

/// Fails the test unless `found` is a value a read of `key` may return after every write
/// of it ended, for a key that one client at a time wrote with puts: the value of its
/// last acknowledged put, or that of any put whose outcome is unknown (it may have
/// applied later). `None` (absent) only if no put of it was acknowledged.
pub fn assert_final_value(history: &History, key: &[u8], found: Option<&[u8]>) {
    let mut acknowledged: Option<(u64, &[u8])> = None;
    let mut unknown: Vec<&[u8]> = Vec::new();
    for operation in history.operations() {
        let Input::Put {
            key: written,
            value,
        } = &operation.input
        else {
            continue;
        };
        if written != key {
            continue;
        }
        match &operation.outcome {
            Outcome::Completed { return_time, .. } => {
                if acknowledged.is_none_or(|(time, _)| *return_time > time) {
                    acknowledged = Some((*return_time, value));
                }
            }
            Outcome::Pending { .. } => unknown.push(value),
            Outcome::Failed { .. } => {}
        }
    }
    let acknowledged = acknowledged.map(|(_, value)| value);
    let allowed = match found {
        Some(value) => acknowledged == Some(value) || unknown.contains(&value),
        None => acknowledged.is_none(),
    };
    let text = |value: &[u8]| String::from_utf8_lossy(value).into_owned();
    assert!(
        allowed,
        "{}: read {:?}, but the last acknowledged value is {:?} (unknown outcomes: {:?})",
        text(key),
        found.map(text),
        acknowledged.map(text),
        unknown.iter().map(|value| text(value)).collect::<Vec<_>>()
    );
}
