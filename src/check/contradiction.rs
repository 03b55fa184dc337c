//! Direct contradictions: a few operations of a key that no linearization can reconcile,
//! found in O(n log n) before the search, which may need more steps than any budget to
//! prove the same thing when many operations are pending.
//!
//! Each check reports a contradiction only when the operations it names rule out every
//! linearization, whatever the other operations did; otherwise it stays silent and leaves
//! the key to the search. Times are read as the search reads them: operation A precedes B
//! only if A returned strictly before B was invoked, and a pending operation may take
//! effect at any time after its invoke.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

use super::history::{DisplayBytes, History, Input, Operation, OperationId, Output};
use super::model::{KeyModel, MixHasher, StateId, Step, ABSENT};

/// The most work (bytes of the value times kinds of append length) spent on deciding
/// whether one observed value can be made from the writes before it; a longer check is
/// skipped, which only leaves the value to the search.
const VALUE_CHECK_WORK_MAX: usize = 1 << 16;

/// Operations of one key that no linearization can reconcile. Positions index
/// [`Violation::operations`](super::Violation::operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contradiction {
    /// `observer` (a get, or a compare-and-set that swapped expecting the key absent) saw
    /// the key absent, but `write` (a put, an append, or a compare-and-set that swapped)
    /// returned before `observer` was invoked, and every delete of the key either
    /// returned before `write` was invoked or was invoked after `observer` returned.
    AbsentAfterWrite { observer: usize, write: usize },
    /// `observer` (a get, or a compare-and-set that swapped) saw a value that no sequence
    /// of puts, compare-and-sets and appends invoked before it returned can make.
    /// `later_writes` are the puts and compare-and-sets of exactly that value, all of them
    /// invoked after `observer` returned.
    UnwrittenValue {
        observer: usize,
        later_writes: Vec<usize>,
    },
}

/// One operation of the key as the checks read it.
#[derive(Clone, Copy)]
struct Timed {
    step: Step,
    invoke: u64,
    /// `None` for a pending operation, which may take effect at any time after `invoke`.
    return_time: Option<u64>,
}

impl Timed {
    /// The state a completed get or a compare-and-set that swapped saw.
    fn observed(self) -> Option<StateId> {
        match (self.step, self.return_time) {
            (Step::Read { value }, Some(_)) => Some(value),
            (
                Step::CompareAndSet {
                    expected,
                    swapped: Some(true),
                    ..
                },
                _,
            ) => Some(expected),
            _ => None,
        }
    }

    /// The value the operation sets if it takes effect and may have swapped: a put's, or
    /// a compare-and-set's that nobody saw fail.
    fn sets(self) -> Option<StateId> {
        match self.step {
            Step::Write { value } => Some(value),
            Step::CompareAndSet {
                new_value, swapped, ..
            } if swapped != Some(false) => Some(new_value),
            _ => None,
        }
    }
}

/// Looks for a contradiction among the operations of one key (`part`: their indexes in
/// the history, in invoke order; `steps`: them as `model` prepared them).
pub(super) fn find(
    history: &History,
    part: &[usize],
    model: &KeyModel,
    steps: &[Step],
) -> Option<Contradiction> {
    let timed: Vec<Timed> = part
        .iter()
        .zip(steps)
        .map(|(&index, &step)| {
            let operation = &history.operations()[index];
            Timed {
                step,
                invoke: operation.invoke_time,
                return_time: operation.return_time(),
            }
        })
        .collect();
    absent_after_write(&timed).or_else(|| unwritten_value(&timed, model))
}

/// A completed read of "absent" after a completed write with no delete in between.
///
/// After a put, an append or a swap the key holds a value until a delete takes effect, so
/// an operation that saw it absent must be linearized before the write, or after a delete
/// linearized after the write. The first is ruled out when the write returned before the
/// observer was invoked; the second when every delete either returned before the write was
/// invoked (so it precedes the write) or was invoked after the observer returned. Of the
/// writes that returned before the observer was invoked, the one invoked last rules out
/// the most deletes, so it is the only one tried.
fn absent_after_write(operations: &[Timed]) -> Option<Contradiction> {
    if !operations
        .iter()
        .any(|operation| operation.observed() == Some(ABSENT))
    {
        return None;
    }
    // Completed writes that leave the key present: (return, invoke, position).
    let mut writes: Vec<(u64, u64, usize)> = Vec::new();
    // Deletes, completed or pending: (invoke, end), a pending one ending never.
    let mut deletes: Vec<(u64, u64)> = Vec::new();
    for (position, operation) in operations.iter().enumerate() {
        let leaves_present = match operation.step {
            Step::Write { .. } | Step::Append { .. } => true,
            Step::CompareAndSet { swapped, .. } => swapped == Some(true),
            Step::Delete => {
                let end = operation.return_time.unwrap_or(u64::MAX);
                deletes.push((operation.invoke, end));
                false
            }
            Step::Read { .. } => false,
        };
        if let (true, Some(return_time)) = (leaves_present, operation.return_time) {
            writes.push((return_time, operation.invoke, position));
        }
    }
    writes.sort_unstable();
    // latest_write[k]: among the first k + 1 writes by return time, the one invoked last.
    let latest_write: Vec<(u64, usize)> = writes
        .iter()
        .scan(
            None,
            |latest: &mut Option<(u64, usize)>, &(_, invoke, position)| {
                if latest.is_none_or(|(latest_invoke, _)| invoke > latest_invoke) {
                    *latest = Some((invoke, position));
                }
                *latest
            },
        )
        .collect();
    deletes.sort_unstable();
    // latest_end[k]: the latest end among the first k + 1 deletes by invoke time.
    let latest_end: Vec<u64> = deletes
        .iter()
        .scan(0u64, |latest, &(_, end)| {
            *latest = (*latest).max(end);
            Some(*latest)
        })
        .collect();

    for (position, operation) in operations.iter().enumerate() {
        let (Some(ABSENT), Some(return_time)) = (operation.observed(), operation.return_time)
        else {
            continue;
        };
        let before =
            writes.partition_point(|&(write_return, _, _)| write_return < operation.invoke);
        let Some(&(write_invoke, write)) = before.checked_sub(1).map(|last| &latest_write[last])
        else {
            continue;
        };
        let invoked_in_time =
            deletes.partition_point(|&(delete_invoke, _)| delete_invoke <= return_time);
        let delete_may_intervene = invoked_in_time
            .checked_sub(1)
            .is_some_and(|last| latest_end[last] >= write_invoke);
        if !delete_may_intervene {
            return Some(Contradiction::AbsentAfterWrite {
                observer: position,
                write,
            });
        }
    }
    None
}

/// When the writes of a key became available, to tell whether a value can be made from
/// the writes invoked by some time: a value is a base (the value of a put or a swap, or
/// the empty start of an absent key) followed by appended bytes.
struct Writes<'a> {
    model: &'a KeyModel,
    /// For each state, the earliest invoke of an operation that sets it (`u64::MAX`:
    /// none does).
    base_invoke: Vec<u64>,
    /// The lengths of the values some operation sets, ascending.
    base_lengths: Vec<usize>,
    /// For the bytes of each append, the earliest invoke of an append of them.
    append_invoke: HashMap<&'a [u8], u64, BuildHasherDefault<MixHasher>>,
    /// The lengths of the appends, ascending, without 0 (an empty append adds nothing).
    append_lengths: Vec<usize>,
    /// Whether `value[..end]` can be made, for the value being decided; kept to reuse.
    reachable: Vec<bool>,
}

impl<'a> Writes<'a> {
    fn new(operations: &[Timed], model: &'a KeyModel) -> Writes<'a> {
        let mut writes = Writes {
            model,
            base_invoke: vec![u64::MAX; model.state_count()],
            base_lengths: Vec::new(),
            append_invoke: HashMap::default(),
            append_lengths: Vec::new(),
            reachable: Vec::new(),
        };
        for operation in operations {
            if let Some(state) = operation.sets() {
                let earliest = &mut writes.base_invoke[state as usize];
                if *earliest == u64::MAX {
                    let length = model.value(state).map_or(0, <[u8]>::len);
                    if let Err(slot) = writes.base_lengths.binary_search(&length) {
                        writes.base_lengths.insert(slot, length);
                    }
                }
                *earliest = (*earliest).min(operation.invoke);
            }
            if let Step::Append { append } = operation.step {
                let bytes = model.append_bytes(append);
                let earliest = writes.append_invoke.entry(bytes).or_insert(u64::MAX);
                *earliest = (*earliest).min(operation.invoke);
                if let (false, Err(slot)) = (
                    bytes.is_empty(),
                    writes.append_lengths.binary_search(&bytes.len()),
                ) {
                    writes.append_lengths.insert(slot, bytes.len());
                }
            }
        }
        writes
    }

    /// False if no sequence of the writes invoked by `time` can leave the key holding
    /// `state`, from any start. Each append may be counted more than once, which can only
    /// make a value look possible. `None` if deciding would take more than
    /// [`VALUE_CHECK_WORK_MAX`].
    fn can_make(&mut self, state: StateId, time: u64) -> Option<bool> {
        if self.base_invoke[state as usize] <= time {
            return Some(true);
        }
        let value = self
            .model
            .value(state)
            .expect("an observed value is present");
        if value.is_empty() {
            return Some(self.append_invoke.get(value).is_some_and(|&at| at <= time));
        }
        if self.append_lengths.is_empty() {
            return Some(false);
        }
        if value
            .len()
            .saturating_mul(self.append_lengths.len() + self.base_lengths.len())
            > VALUE_CHECK_WORK_MAX
        {
            return None;
        }
        // reachable[end]: the key can hold value[..end]; 0 stands for absent or empty,
        // from which an append makes exactly the appended bytes.
        let reachable = &mut self.reachable;
        reachable.clear();
        reachable.resize(value.len() + 1, false);
        reachable[0] = true;
        for &length in &self.base_lengths {
            if length > 0 && length < value.len() {
                let prefix = self.model.state_of(&value[..length]);
                if prefix.is_some_and(|prefix| self.base_invoke[prefix as usize] <= time) {
                    reachable[length] = true;
                }
            }
        }
        for start in 0..value.len() {
            if !reachable[start] {
                continue;
            }
            for &length in &self.append_lengths {
                let end = start + length;
                if end > value.len() {
                    break;
                }
                let invoked = self.append_invoke.get(&value[start..end]);
                if invoked.is_some_and(|&at| at <= time) {
                    reachable[end] = true;
                }
            }
        }
        Some(reachable[value.len()])
    }
}

/// A completed read of a value that the writes invoked before it returned cannot make.
/// Every operation linearized before the observer was invoked before the observer
/// returned, so the value it saw must be made by those.
fn unwritten_value(operations: &[Timed], model: &KeyModel) -> Option<Contradiction> {
    if !operations
        .iter()
        .any(|operation| operation.observed().is_some_and(|state| state != ABSENT))
    {
        return None;
    }
    let mut writes = Writes::new(operations, model);
    // For each state, the earliest time at which it was found possible: writes only get
    // added as time goes on, so it stays possible, and many reads see the same value.
    let mut possible_from: HashMap<StateId, u64, BuildHasherDefault<MixHasher>> =
        HashMap::default();
    for (position, operation) in operations.iter().enumerate() {
        let (Some(state), Some(return_time)) = (operation.observed(), operation.return_time) else {
            continue;
        };
        if state == ABSENT
            || writes.base_invoke[state as usize] <= return_time
            || possible_from
                .get(&state)
                .is_some_and(|&from| from <= return_time)
        {
            continue;
        }
        match writes.can_make(state, return_time) {
            Some(false) => {
                let later_writes = operations
                    .iter()
                    .enumerate()
                    .filter(|(_, other)| other.sets() == Some(state))
                    .map(|(position, _)| position)
                    .collect();
                return Some(Contradiction::UnwrittenValue {
                    observer: position,
                    later_writes,
                });
            }
            Some(true) | None => {
                let from = possible_from.entry(state).or_insert(return_time);
                *from = (*from).min(return_time);
            }
        }
    }
    None
}

impl Contradiction {
    /// Writes the contradiction in words, naming operations as `[position] op <id>` and
    /// giving the times that make it one.
    pub(super) fn describe(
        &self,
        operations: &[(OperationId, Operation)],
        formatter: &mut fmt::Formatter<'_>,
    ) -> fmt::Result {
        let name = |position: usize| match operations.get(position) {
            Some((id, _)) => format!("[{position}] op {}", id.index()),
            None => format!("[{position}]"),
        };
        let times = |position: usize| {
            operations
                .get(position)
                .map(|(_, operation)| (operation.invoke_time, operation.return_time()))
        };
        match self {
            Contradiction::AbsentAfterWrite { observer, write } => {
                let (Some((observer_invoke, _)), Some((_, Some(write_return)))) =
                    (times(*observer), times(*write))
                else {
                    return write!(formatter, "{self:?}");
                };
                write!(
                    formatter,
                    "{} saw the key absent, but {} wrote it and returned at {write_return}, \
                     before {} was invoked at {observer_invoke}, and no delete of the key \
                     can take effect between them",
                    name(*observer),
                    name(*write),
                    name(*observer),
                )
            }
            Contradiction::UnwrittenValue {
                observer,
                later_writes,
            } => {
                let Some((_, operation)) = operations.get(*observer) else {
                    return write!(formatter, "{self:?}");
                };
                let seen = match (&operation.input, operation.output()) {
                    (_, Some(Output::Value(Some(value)))) => value.as_slice(),
                    (Input::CompareAndSet { expected, .. }, _) => {
                        expected.as_deref().unwrap_or_default()
                    }
                    _ => &[],
                };
                write!(
                    formatter,
                    "{} saw {}, which no puts, compare-and-sets and appends invoked before it \
                     returned at {} can make",
                    name(*observer),
                    DisplayBytes(seen),
                    operation.return_time().unwrap_or_default(),
                )?;
                if !later_writes.is_empty() {
                    let names: Vec<String> = later_writes.iter().map(|&at| name(at)).collect();
                    write!(
                        formatter,
                        "; {} writing that value only started later",
                        names.join(", ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::{ClientId, Outcome};

    /// The model and the timed operations of puts of `bases` and appends of `appends`,
    /// all invoked at 10 and pending, and of a read of each of `reads`.
    fn writes_of(bases: &[&[u8]], appends: &[&[u8]], reads: &[&[u8]]) -> (KeyModel, Vec<Timed>) {
        let pending = |input: Input| Operation {
            client: ClientId(0),
            input,
            invoke_time: 10,
            outcome: Outcome::Pending { give_up_time: None },
        };
        let mut operations: Vec<Operation> = Vec::new();
        for &value in bases {
            operations.push(pending(Input::Put {
                key: b"k".to_vec(),
                value: value.to_vec(),
            }));
        }
        for &value in appends {
            operations.push(pending(Input::Append {
                key: b"k".to_vec(),
                value: value.to_vec(),
            }));
        }
        for &value in reads {
            operations.push(Operation {
                client: ClientId(1),
                input: Input::Get { key: b"k".to_vec() },
                invoke_time: 20,
                outcome: Outcome::Completed {
                    output: Output::Value(Some(value.to_vec())),
                    return_time: 21,
                },
            });
        }
        let mut model = KeyModel::new();
        let timed = operations
            .iter()
            .map(|operation| Timed {
                step: model.prepare(operation),
                invoke: operation.invoke_time,
                return_time: operation.return_time(),
            })
            .collect();
        (model, timed)
    }

    // A value can be made from a base followed by appends, or from appends alone (from
    // an absent key), with writes invoked in time; anything else cannot.
    #[test]
    fn values_are_bases_followed_by_appends() {
        let makeable: [&[u8]; 6] = [b"p1", b"p12", b"p1<a>", b"p12<bb><a>", b"<a><a>", b"<bb>"];
        let unmakeable: [&[u8]; 5] = [b"p", b"p2", b"<a>p1", b"p1<a", b"x<a>"];
        let reads: Vec<&[u8]> = makeable.iter().chain(&unmakeable).copied().collect();
        let (model, timed) = writes_of(&[b"p1", b"p12"], &[b"<a>", b"<bb>"], &reads);
        let mut writes = Writes::new(&timed, &model);
        // Values made with appends cannot be made before the appends were invoked.
        let cases = (makeable.iter().map(|&value| (value, 10, true)))
            .chain(makeable[2..].iter().map(|&value| (value, 9, false)))
            .chain(unmakeable.iter().map(|&value| (value, 10, false)));
        for (value, time, expected) in cases {
            let state = model.state_of(value).expect("interned");
            let made = writes.can_make(state, time);
            assert_eq!(made, Some(expected), "{} at {time}", DisplayBytes(value));
        }
    }

    // Deciding a long value against many kinds of append is skipped, never guessed.
    #[test]
    fn long_checks_are_skipped() {
        let lengths: Vec<Vec<u8>> = (1..=64).map(|length| vec![b'a'; length]).collect();
        let appends: Vec<&[u8]> = lengths.iter().map(Vec::as_slice).collect();
        let short = [b'a'; 100];
        let long = vec![b'b'; VALUE_CHECK_WORK_MAX];
        let (model, timed) = writes_of(&[], &appends, &[&short, &long]);
        let mut writes = Writes::new(&timed, &model);
        let short = model.state_of(&short).expect("interned");
        let long = model.state_of(&long).expect("interned");
        assert_eq!(writes.can_make(short, 10), Some(true));
        assert_eq!(writes.can_make(long, 10), None);
    }
}
