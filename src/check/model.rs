//! The sequential model of one key (absent, or a byte string) and its step function, with
//! every value the key can hold interned to a small number so the search can copy, compare
//! and memoize states in O(1).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::history::{Input, Operation, Outcome, Output};

/// An interned value of the key. Equal ids mean equal values and the converse, so a state
/// comparison is an integer comparison.
pub(crate) type StateId = u32;

/// The state of a key that does not exist. Distinct from a key holding an empty value.
pub(crate) const ABSENT: StateId = 0;

/// One operation as the model sees it: its input with the values interned, and the output
/// the client saw, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A completed get that read `value`.
    Read { value: StateId },
    /// A put of `value`, completed or pending: a put's output says nothing.
    Write { value: StateId },
    /// A delete, completed or pending.
    Delete,
    /// An append of the bytes registered as number `append` in the model.
    Append { append: u32 },
    /// A compare-and-set; `swapped` is `None` when the client never saw the output.
    CompareAndSet {
        expected: StateId,
        new_value: StateId,
        swapped: Option<bool>,
    },
}

impl Step {
    /// True if the step checks an output against the state. Histories of a key without any
    /// such step are linearizable whatever the order, so the search can skip them.
    pub(crate) fn observes_state(self) -> bool {
        matches!(
            self,
            Step::Read { .. }
                | Step::CompareAndSet {
                    swapped: Some(_),
                    ..
                }
        )
    }
}

/// Decides whether an operation takes part in the check at all, before any model exists.
/// Failed operations were not applied, and a read whose output nobody saw constrains
/// nothing; both are dropped.
pub(crate) fn is_checked(operation: &Operation) -> bool {
    match operation.outcome {
        Outcome::Completed { .. } => true,
        Outcome::Failed { .. } => false,
        Outcome::Pending { .. } => !operation.input.is_read_only(),
    }
}

/// The model of one key: the interned values and the memoized appends.
#[derive(Debug)]
pub(crate) struct KeyModel {
    /// Interned values by id; slot [`ABSENT`] holds an unused empty vector.
    values: Vec<Vec<u8>>,
    /// Interned ids by hash of the value; values with equal hashes are chained through
    /// `next_same_hash`, so every value is stored once.
    ids_by_hash: HashMap<u64, StateId, BuildHasherDefault<MixHasher>>,
    next_same_hash: Vec<StateId>,
    /// The bytes of every append operation of the key.
    appends: Vec<Vec<u8>>,
    /// Memoized append results: (state, append number) to the resulting state. The search
    /// revisits the same append from the same state many times while backtracking.
    append_results: HashMap<u64, StateId, BuildHasherDefault<MixHasher>>,
    /// The bytes of the appends by length, to tell quickly whether a value starts with
    /// the bytes of some append.
    appends_by_length: HashMap<usize, HashSet<Vec<u8>, BuildHasherDefault<MixHasher>>>,
}

impl KeyModel {
    pub(crate) fn new() -> KeyModel {
        KeyModel {
            values: vec![Vec::new()],
            ids_by_hash: HashMap::default(),
            next_same_hash: vec![ABSENT],
            appends: Vec::new(),
            append_results: HashMap::default(),
            appends_by_length: HashMap::new(),
        }
    }

    /// Translates a checked operation (see [`is_checked`]) into a model step.
    pub(crate) fn prepare(&mut self, operation: &Operation) -> Step {
        debug_assert!(is_checked(operation));
        let output = match &operation.outcome {
            Outcome::Completed { output, .. } => Some(output),
            Outcome::Failed { .. } | Outcome::Pending { .. } => None,
        };
        match &operation.input {
            Input::Get { .. } => match output {
                Some(Output::Value(value)) => Step::Read {
                    value: self.intern_option(value.as_deref()),
                },
                // History::complete and History::push refuse other outputs for a get, and a
                // pending get is not checked.
                _ => unreachable!("a checked get has a value output"),
            },
            Input::Put { value, .. } => Step::Write {
                value: self.intern(value),
            },
            Input::Delete { .. } => Step::Delete,
            Input::Append { value, .. } => {
                let append = u32::try_from(self.appends.len()).expect("appends fit in u32");
                self.appends.push(value.clone());
                self.appends_by_length
                    .entry(value.len())
                    .or_default()
                    .insert(value.clone());
                Step::Append { append }
            }
            Input::CompareAndSet {
                expected,
                new_value,
                ..
            } => Step::CompareAndSet {
                expected: self.intern_option(expected.as_deref()),
                new_value: self.intern(new_value),
                swapped: match output {
                    Some(Output::Swapped(swapped)) => Some(*swapped),
                    None => None,
                    Some(_) => unreachable!("a compare-and-set has a swapped output"),
                },
            },
        }
    }

    /// Applies `step` to `state`: the next state, or `None` if the output the client saw
    /// is impossible from `state`.
    pub(crate) fn step(&mut self, state: StateId, step: Step) -> Option<StateId> {
        match step {
            Step::Read { value } => (value == state).then_some(state),
            Step::Write { value } => Some(value),
            Step::Delete => Some(ABSENT),
            Step::Append { append } => Some(self.append(state, append)),
            Step::CompareAndSet {
                expected,
                new_value,
                swapped,
            } => {
                let matches = expected == state;
                if swapped.is_some_and(|swapped| swapped != matches) {
                    return None;
                }
                Some(if matches { new_value } else { state })
            }
        }
    }

    /// True if an operation that observed `value` (a read that returned it, or a
    /// compare-and-set that expected it) may have seen the effect of the pending `step`:
    /// `value` starts with the value a put writes or a compare-and-set swaps in, contains
    /// the bytes an append adds, or (after a delete) is absent or starts with the bytes of
    /// some append of the key. Those effects last in the value until the next put, delete
    /// or swap, so if this is false for every observer left, every state from the step up
    /// to the next reset differs from every value they observe.
    pub(crate) fn may_observe(&self, step: Step, value: StateId) -> bool {
        let observed = self.value(value);
        match step {
            Step::Write { value: written }
            | Step::CompareAndSet {
                new_value: written, ..
            } => observed
                .is_some_and(|observed| observed.starts_with(&self.values[written as usize])),
            Step::Append { append } => {
                let added = &self.appends[append as usize];
                observed.is_some_and(|observed| {
                    added.is_empty() || observed.windows(added.len()).any(|window| window == added)
                })
            }
            Step::Delete => observed.is_none_or(|observed| {
                self.appends.iter().any(|added| observed.starts_with(added))
            }),
            Step::Read { .. } => unreachable!("reads have no effect to observe"),
        }
    }

    /// True if the state could be `later` after starting at `earlier` and appending bytes:
    /// `later` starts with `earlier`, or `earlier` is absent (conservatively anything).
    /// A pending compare-and-set from `earlier` matters to a failed compare-and-set that
    /// expected `later`, because without the swap the state might have been `later`.
    pub(crate) fn may_follow(&self, later: StateId, earlier: StateId) -> bool {
        match (self.value(earlier), self.value(later)) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(earlier), Some(later)) => later.starts_with(earlier),
        }
    }

    /// The value of an interned state, `None` for an absent key.
    pub(crate) fn value(&self, state: StateId) -> Option<&[u8]> {
        (state != ABSENT).then(|| self.values[state as usize].as_slice())
    }

    /// The state holding `value`, if it has been interned.
    pub(crate) fn state_of(&self, value: &[u8]) -> Option<StateId> {
        self.lookup(value)
    }

    /// How many states are interned; their ids are below this.
    pub(crate) fn state_count(&self) -> usize {
        self.values.len()
    }

    /// The bytes of append number `append`.
    pub(crate) fn append_bytes(&self, append: u32) -> &[u8] {
        &self.appends[append as usize]
    }

    fn append(&mut self, state: StateId, append: u32) -> StateId {
        let memo_key = (u64::from(state) << 32) | u64::from(append);
        if let Some(&result) = self.append_results.get(&memo_key) {
            return result;
        }
        let mut value = self.values[state as usize].clone();
        value.extend_from_slice(&self.appends[append as usize]);
        let result = self.intern_owned(value);
        self.append_results.insert(memo_key, result);
        result
    }

    fn intern_option(&mut self, value: Option<&[u8]>) -> StateId {
        match value {
            None => ABSENT,
            Some(value) => self.intern(value),
        }
    }

    fn intern(&mut self, value: &[u8]) -> StateId {
        match self.lookup(value) {
            Some(id) => id,
            None => self.insert(value.to_vec()),
        }
    }

    fn intern_owned(&mut self, value: Vec<u8>) -> StateId {
        match self.lookup(&value) {
            Some(id) => id,
            None => self.insert(value),
        }
    }

    fn lookup(&self, value: &[u8]) -> Option<StateId> {
        let mut candidate = *self.ids_by_hash.get(&hash_bytes(value))?;
        while candidate != ABSENT {
            if self.values[candidate as usize] == value {
                return Some(candidate);
            }
            candidate = self.next_same_hash[candidate as usize];
        }
        None
    }

    fn insert(&mut self, value: Vec<u8>) -> StateId {
        let id = StateId::try_from(self.values.len()).expect("states fit in u32");
        let hash = hash_bytes(&value);
        let previous = self.ids_by_hash.insert(hash, id).unwrap_or(ABSENT);
        self.values.push(value);
        self.next_same_hash.push(previous);
        id
    }
}

/// The 64-bit finalizer of splitmix64: a cheap bijection that spreads every input bit over
/// the whole output. Used for hash keys and for the per-operation bitset hashes.
pub(crate) fn mix64(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// A fast deterministic hash of a byte string, eight bytes at a time. Collisions only cost
/// a comparison: every lookup compares the bytes.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks are eight bytes"));
        hash = mix64(hash ^ word);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix64(hash ^ u64::from_le_bytes(tail))
}

/// A hasher for maps keyed by one `u64`. The keys are mixed with [`mix64`] so that
/// structured keys (small ids, packed pairs) spread over the table; it is deterministic,
/// unlike the standard library's randomly seeded hasher.
#[derive(Debug, Default)]
pub(crate) struct MixHasher {
    hash: u64,
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        self.hash = mix64(self.hash ^ hash_bytes(bytes));
    }

    fn write_u64(&mut self, value: u64) {
        self.hash = mix64(self.hash ^ value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::{ClientId, Outcome};

    fn completed(input: Input, output: Output) -> Operation {
        Operation {
            client: ClientId(0),
            input,
            invoke_time: 0,
            outcome: Outcome::Completed {
                output,
                return_time: 1,
            },
        }
    }

    // Interning gives equal values equal ids, keeps absent and empty apart, and appends
    // build on the current value.
    #[test]
    fn steps_follow_the_sequential_key_value_semantics() {
        let mut model = KeyModel::new();
        let key = b"k".to_vec();
        let append_a = model.prepare(&completed(
            Input::Append {
                key: key.clone(),
                value: b"a".to_vec(),
            },
            Output::Done,
        ));
        let append_b = model.prepare(&completed(
            Input::Append {
                key: key.clone(),
                value: b"b".to_vec(),
            },
            Output::Done,
        ));
        let read_ab = model.prepare(&completed(
            Input::Get { key: key.clone() },
            Output::Value(Some(b"ab".to_vec())),
        ));
        let put_empty = model.prepare(&completed(
            Input::Put {
                key: key.clone(),
                value: Vec::new(),
            },
            Output::Done,
        ));
        let read_absent = model.prepare(&completed(
            Input::Get { key: key.clone() },
            Output::Value(None),
        ));
        let swap_from_empty = model.prepare(&completed(
            Input::CompareAndSet {
                key: key.clone(),
                expected: Some(Vec::new()),
                new_value: b"c".to_vec(),
            },
            Output::Swapped(true),
        ));

        let state = model.step(ABSENT, append_a).unwrap();
        assert_eq!(model.value(state), Some(&b"a"[..]));
        let state = model.step(state, append_b).unwrap();
        assert_eq!(model.step(state, read_ab), Some(state));
        assert_eq!(model.step(ABSENT, read_ab), None);

        let empty = model.step(state, put_empty).unwrap();
        assert_ne!(empty, ABSENT);
        assert_eq!(model.step(empty, read_absent), None);
        assert_eq!(model.step(ABSENT, read_absent), Some(ABSENT));

        let swapped = model.step(empty, swap_from_empty).unwrap();
        assert_eq!(model.value(swapped), Some(&b"c"[..]));
        // The same compare-and-set reporting success on a key that is absent is impossible.
        assert_eq!(model.step(ABSENT, swap_from_empty), None);
        assert_eq!(model.step(swapped, Step::Delete), Some(ABSENT));
    }

    // A compare-and-set whose output nobody saw is accepted either way and still changes
    // the state only when the expectation matches.
    #[test]
    fn pending_compare_and_set_accepts_any_output() {
        let mut model = KeyModel::new();
        let pending = Operation {
            client: ClientId(0),
            input: Input::CompareAndSet {
                key: b"k".to_vec(),
                expected: None,
                new_value: b"v".to_vec(),
            },
            invoke_time: 0,
            outcome: Outcome::Pending { give_up_time: None },
        };
        let step = model.prepare(&pending);
        assert!(!step.observes_state());
        let written = model.step(ABSENT, step).unwrap();
        assert_eq!(model.value(written), Some(&b"v"[..]));
        assert_eq!(model.step(written, step), Some(written));
    }
}
