//! The recorded client history: operations on the key-value store, their inputs, outputs
//! and invoke/return times, built cheaply while a simulation or a process test runs.

use std::fmt;

/// Who issued an operation. Only used for the report: the checker does not assume that a
/// client has at most one operation in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

/// Names one operation of a [`History`]: its position in recording order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(usize);

impl OperationId {
    /// The position of the operation in [`History::operations`].
    pub fn index(self) -> usize {
        self.0
    }

    /// The id of the operation at `index`; only the checker makes ids other than
    /// [`History::invoke`] and [`History::push`], to name operations in a report.
    pub(crate) fn from_index(index: usize) -> OperationId {
        OperationId(index)
    }
}

/// What the client asked for. Every operation touches exactly one key, which is what lets
/// the checker split the history by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Set `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Read `key`; answered with [`Output::Value`].
    Get { key: Vec<u8> },
    /// Remove `key` (a no-op if it is absent).
    Delete { key: Vec<u8> },
    /// Append `value` to the current value of `key`, creating the key if it is absent.
    Append { key: Vec<u8>, value: Vec<u8> },
    /// Set `key` to `new_value` if its current value equals `expected` (`None`: the key is
    /// absent); answered with [`Output::Swapped`]. The model of a one-key transaction.
    CompareAndSet {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Vec<u8>,
    },
}

impl Input {
    /// The one key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Input::Put { key, .. }
            | Input::Get { key }
            | Input::Delete { key }
            | Input::Append { key, .. }
            | Input::CompareAndSet { key, .. } => key,
        }
    }

    /// True for operations that never change the store, whose outcome only matters when
    /// the client saw their output.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Input::Get { .. })
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Input::Put { .. } => "put",
            Input::Get { .. } => "get",
            Input::Delete { .. } => "delete",
            Input::Append { .. } => "append",
            Input::CompareAndSet { .. } => "cas",
        }
    }

    fn accepts(&self, output: &Output) -> bool {
        matches!(
            (self, output),
            (Input::Put { .. }, Output::Done)
                | (Input::Delete { .. }, Output::Done)
                | (Input::Append { .. }, Output::Done)
                | (Input::Get { .. }, Output::Value(_))
                | (Input::CompareAndSet { .. }, Output::Swapped(_))
        )
    }
}

/// What the client was told when the operation completed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put, delete or append was applied.
    Done,
    /// The value a get read (`None`: the key was absent).
    Value(Option<Vec<u8>>),
    /// Whether a compare-and-set found its expected value and wrote the new one.
    Swapped(bool),
}

impl Output {
    fn kind_name(&self) -> &'static str {
        match self {
            Output::Done => "done",
            Output::Value(_) => "value",
            Output::Swapped(_) => "swapped",
        }
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The client got `output` at `return_time`.
    Completed { output: Output, return_time: u64 },
    /// The client knows the operation was not applied (for example the request was refused
    /// before it was proposed). The checker drops it.
    Failed { return_time: u64 },
    /// The client never learned the outcome: still in flight, timed out, or the client
    /// crashed. The operation may have taken effect at any time after its invoke, or never.
    /// `give_up_time` is when the client stopped waiting, kept only for the report.
    Pending { give_up_time: Option<u64> },
}

/// One operation as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: ClientId,
    pub input: Input,
    pub invoke_time: u64,
    pub outcome: Outcome,
}

impl Operation {
    /// The time the client learned the output, or `None` if it never did (pending or failed
    /// operations have no output).
    pub fn return_time(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Completed { return_time, .. } => Some(return_time),
            Outcome::Failed { .. } | Outcome::Pending { .. } => None,
        }
    }

    /// The output the client saw, if it saw one.
    pub fn output(&self) -> Option<&Output> {
        match &self.outcome {
            Outcome::Completed { output, .. } => Some(output),
            Outcome::Failed { .. } | Outcome::Pending { .. } => None,
        }
    }
}

/// A history that cannot be checked because the caller recorded it inconsistently.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("operation {index} does not exist in this history")]
    UnknownOperation { index: usize },
    #[error("operation {index} already ended; an operation ends at most once")]
    AlreadyEnded { index: usize },
    #[error("operation {index} is a {input} but was completed with a {output} output")]
    OutputMismatch {
        index: usize,
        input: &'static str,
        output: &'static str,
    },
    #[error("operation {index} ends at {end_time}, before its invoke at {invoke_time}")]
    EndBeforeInvoke {
        index: usize,
        invoke_time: u64,
        end_time: u64,
    },
}

/// The history of one run: operations in recording order.
///
/// Recording costs one `Vec` push per invoke and one in-place update per completion, so a
/// simulator can record every client operation. Times are plain numbers chosen by the
/// caller (simulator ticks or steps, or monotonic nanoseconds in a process test); only
/// their order matters. An operation that is never completed, failed or given up on stays
/// pending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn with_capacity(operations: usize) -> History {
        History {
            operations: Vec::with_capacity(operations),
        }
    }

    /// Records that `client` invoked `input` at `time`. The operation is pending until it
    /// is completed or failed.
    pub fn invoke(&mut self, client: ClientId, input: Input, time: u64) -> OperationId {
        let id = OperationId(self.operations.len());
        self.operations.push(Operation {
            client,
            input,
            invoke_time: time,
            outcome: Outcome::Pending { give_up_time: None },
        });
        id
    }

    /// Records that the client received `output` for `id` at `time`.
    pub fn complete(
        &mut self,
        id: OperationId,
        output: Output,
        time: u64,
    ) -> Result<(), HistoryError> {
        let operation = self.pending_operation(id, time)?;
        if !operation.input.accepts(&output) {
            return Err(HistoryError::OutputMismatch {
                index: id.0,
                input: operation.input.kind_name(),
                output: output.kind_name(),
            });
        }
        operation.outcome = Outcome::Completed {
            output,
            return_time: time,
        };
        Ok(())
    }

    /// Records that the client learned at `time` that `id` was definitely not applied.
    pub fn fail(&mut self, id: OperationId, time: u64) -> Result<(), HistoryError> {
        let operation = self.pending_operation(id, time)?;
        operation.outcome = Outcome::Failed { return_time: time };
        Ok(())
    }

    /// Records that the client stopped waiting for `id` at `time` without learning its
    /// outcome (a timeout, a lost connection). The operation stays pending for the checker:
    /// it may still have taken effect, at any time after its invoke.
    pub fn give_up(&mut self, id: OperationId, time: u64) -> Result<(), HistoryError> {
        let operation = self.pending_operation(id, time)?;
        operation.outcome = Outcome::Pending {
            give_up_time: Some(time),
        };
        Ok(())
    }

    /// Appends an operation recorded elsewhere (for example by one thread of a process
    /// test), after checking that it is consistent.
    pub fn push(&mut self, operation: Operation) -> Result<OperationId, HistoryError> {
        let index = self.operations.len();
        let end_time = match &operation.outcome {
            Outcome::Completed {
                output,
                return_time,
            } => {
                if !operation.input.accepts(output) {
                    return Err(HistoryError::OutputMismatch {
                        index,
                        input: operation.input.kind_name(),
                        output: output.kind_name(),
                    });
                }
                Some(*return_time)
            }
            Outcome::Failed { return_time } => Some(*return_time),
            Outcome::Pending { give_up_time } => *give_up_time,
        };
        if let Some(end_time) = end_time {
            if end_time < operation.invoke_time {
                return Err(HistoryError::EndBeforeInvoke {
                    index,
                    invoke_time: operation.invoke_time,
                    end_time,
                });
            }
        }
        self.operations.push(operation);
        Ok(OperationId(index))
    }

    /// All operations in recording order; `OperationId::index` points into this slice.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operation `id` if it has not ended yet and `end_time` is not before its invoke.
    fn pending_operation(
        &mut self,
        id: OperationId,
        end_time: u64,
    ) -> Result<&mut Operation, HistoryError> {
        let operation = self
            .operations
            .get_mut(id.0)
            .ok_or(HistoryError::UnknownOperation { index: id.0 })?;
        if !matches!(operation.outcome, Outcome::Pending { give_up_time: None }) {
            return Err(HistoryError::AlreadyEnded { index: id.0 });
        }
        if end_time < operation.invoke_time {
            return Err(HistoryError::EndBeforeInvoke {
                index: id.0,
                invoke_time: operation.invoke_time,
                end_time,
            });
        }
        Ok(operation)
    }
}

/// Writes bytes as a quoted string, escaping anything that is not printable ASCII, so keys
/// and values in a report are readable whether they are text or binary.
pub(crate) struct DisplayBytes<'a>(pub &'a [u8]);

impl fmt::Display for DisplayBytes<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("\"")?;
        for &byte in self.0 {
            write!(formatter, "{}", std::ascii::escape_default(byte))?;
        }
        formatter.write_str("\"")
    }
}

/// Writes an optional value as `None` or `Some("...")`.
pub(crate) struct DisplayValue<'a>(pub Option<&'a [u8]>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => formatter.write_str("None"),
            Some(bytes) => write!(formatter, "Some({})", DisplayBytes(bytes)),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Put { key, value } => {
                write!(
                    formatter,
                    "put({}, {})",
                    DisplayBytes(key),
                    DisplayBytes(value)
                )
            }
            Input::Get { key } => write!(formatter, "get({})", DisplayBytes(key)),
            Input::Delete { key } => write!(formatter, "delete({})", DisplayBytes(key)),
            Input::Append { key, value } => {
                write!(
                    formatter,
                    "append({}, {})",
                    DisplayBytes(key),
                    DisplayBytes(value)
                )
            }
            Input::CompareAndSet {
                key,
                expected,
                new_value,
            } => write!(
                formatter,
                "cas({}, expected {}, new {})",
                DisplayBytes(key),
                DisplayValue(expected.as_deref()),
                DisplayBytes(new_value)
            ),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Done => formatter.write_str("ok"),
            Output::Value(value) => write!(formatter, "{}", DisplayValue(value.as_deref())),
            Output::Swapped(swapped) => write!(formatter, "{swapped}"),
        }
    }
}

/// One line per operation: `client 3: put("k", "v") -> ok  [invoke 10, return 20]`.
impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "client {}: {} -> ", self.client.0, self.input)?;
        match &self.outcome {
            Outcome::Completed {
                output,
                return_time,
            } => write!(
                formatter,
                "{output}  [invoke {}, return {return_time}]",
                self.invoke_time
            ),
            Outcome::Failed { return_time } => write!(
                formatter,
                "failed (not applied)  [invoke {}, return {return_time}]",
                self.invoke_time
            ),
            Outcome::Pending { give_up_time: None } => write!(
                formatter,
                "?  [invoke {}, never returned]",
                self.invoke_time
            ),
            Outcome::Pending {
                give_up_time: Some(time),
            } => write!(
                formatter,
                "?  [invoke {}, gave up at {time}, outcome unknown]",
                self.invoke_time
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(key: &str) -> Input {
        Input::Get {
            key: key.as_bytes().to_vec(),
        }
    }

    // Recording moves an operation from pending to exactly one end state.
    #[test]
    fn operations_end_once() {
        let mut history = History::new();
        let read = history.invoke(ClientId(1), get("k"), 5);
        assert_eq!(
            history.operations()[0].outcome,
            Outcome::Pending { give_up_time: None }
        );
        history.complete(read, Output::Value(None), 7).unwrap();
        assert_eq!(history.operations()[0].return_time(), Some(7));
        assert_eq!(
            history.fail(read, 9),
            Err(HistoryError::AlreadyEnded { index: 0 })
        );
        let timed_out = history.invoke(ClientId(1), get("k"), 8);
        history.give_up(timed_out, 20).unwrap();
        assert_eq!(
            history.complete(timed_out, Output::Value(None), 21),
            Err(HistoryError::AlreadyEnded { index: 1 })
        );
        assert_eq!(history.operations()[1].return_time(), None);
    }

    // Inconsistent recordings are errors, not panics.
    #[test]
    fn inconsistent_recordings_are_rejected() {
        let mut history = History::new();
        let read = history.invoke(ClientId(1), get("k"), 5);
        assert_eq!(
            history.complete(read, Output::Done, 6),
            Err(HistoryError::OutputMismatch {
                index: 0,
                input: "get",
                output: "done"
            })
        );
        assert_eq!(
            history.complete(read, Output::Value(None), 4),
            Err(HistoryError::EndBeforeInvoke {
                index: 0,
                invoke_time: 5,
                end_time: 4
            })
        );
        assert_eq!(
            history.complete(OperationId(3), Output::Value(None), 6),
            Err(HistoryError::UnknownOperation { index: 3 })
        );
        let pushed = history.push(Operation {
            client: ClientId(2),
            input: get("k"),
            invoke_time: 10,
            outcome: Outcome::Failed { return_time: 9 },
        });
        assert!(matches!(pushed, Err(HistoryError::EndBeforeInvoke { .. })));
        assert_eq!(history.len(), 1);
    }

    // The report line names the client, the operation, its output and both times.
    #[test]
    fn operations_display_readably() {
        let operation = Operation {
            client: ClientId(3),
            input: Input::CompareAndSet {
                key: b"k".to_vec(),
                expected: None,
                new_value: vec![b'v', 0xff],
            },
            invoke_time: 10,
            outcome: Outcome::Completed {
                output: Output::Swapped(true),
                return_time: 20,
            },
        };
        assert_eq!(
            operation.to_string(),
            "client 3: cas(\"k\", expected None, new \"v\\xff\") -> true  [invoke 10, return 20]"
        );
    }
}
