//! The entry point: splits a history by key, searches the keys from the smallest, and
//! turns the first failure into a readable [`Violation`].

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

use super::contradiction::Contradiction;
use super::history::{DisplayBytes, DisplayValue, History, Operation, OperationId};
use super::model::{is_checked, MixHasher};
use super::search::{check_part, PartResult};

/// Bounds on the work of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps allowed per key before that key's result becomes unknown. A step is
    /// one look at a candidate operation (or one backtrack) in the search, so the bound is
    /// deterministic, unlike a wall clock deadline. The work of a step is bounded by a
    /// constant (a few cache lookups by hash), so the bound limits the time too. The cache
    /// gains at most one entry per step, so it also limits memory: about 80 bytes per
    /// entry, freed when the key is done.
    pub part_search_steps_max: u64,
}

impl Default for CheckOptions {
    /// One million steps per key: under a tenth of a second in a release build (see
    /// `benches/check.rs`), far more than a linearizable history of a thousand operations
    /// per key needs unless most of its clients hammer that one key.
    fn default() -> CheckOptions {
        CheckOptions {
            part_search_steps_max: 1_000_000,
        }
    }
}

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history is linearizable, so the whole history is (the model is per key).
    Ok,
    /// Some key's history is not linearizable; the violation is the smallest such key
    /// (among those whose search finished within the budget).
    Illegal(Violation),
    /// No key failed, but at least one key ran out of search steps.
    Unknown,
}

/// The smallest key history (fewest checked operations) that is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// The checked operations on the key in invoke order, each with its id in the history.
    /// Failed operations and reads whose output nobody saw are left out.
    pub operations: Vec<(OperationId, Operation)>,
    /// The longest prefix of a linearization the search found, as positions in
    /// `operations`, in linearization order; the search found no way to extend it to all
    /// the completed operations. Pending operations in it are ones that may have taken
    /// effect there. Empty if the violation was found without a search (`contradiction`).
    pub longest_prefix: Vec<usize>,
    /// The key's value after that prefix (`None`: absent).
    pub value_after_prefix: Option<Vec<u8>>,
    /// A few operations that contradict each other directly, if the checker found the
    /// violation that way, before any search.
    pub contradiction: Option<Contradiction>,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "not linearizable: key {} ({} operations checked on it)",
            DisplayBytes(&self.key),
            self.operations.len()
        )?;
        writeln!(formatter, "operations on the key in invoke order:")?;
        for (position, (id, operation)) in self.operations.iter().enumerate() {
            writeln!(formatter, "  [{position}] op {} {operation}", id.index())?;
        }
        if let Some(contradiction) = &self.contradiction {
            formatter.write_str("no linearization exists: ")?;
            return contradiction.describe(&self.operations, formatter);
        }
        let prefix: Vec<String> = self.longest_prefix.iter().map(usize::to_string).collect();
        writeln!(
            formatter,
            "longest linearizable prefix ({} of {}): [{}]",
            self.longest_prefix.len(),
            self.operations.len(),
            prefix.join(", ")
        )?;
        writeln!(
            formatter,
            "value after that prefix: {}",
            DisplayValue(self.value_after_prefix.as_deref())
        )?;
        let mut in_prefix = vec![false; self.operations.len()];
        for &position in &self.longest_prefix {
            if let Some(slot) = in_prefix.get_mut(position) {
                *slot = true;
            }
        }
        let rest: Vec<String> = (0..self.operations.len())
            .filter(|&position| !in_prefix[position])
            .map(|position| position.to_string())
            .collect();
        write!(
            formatter,
            "no linearization extends it; operations left out: [{}]",
            rest.join(", ")
        )
    }
}

/// Checks whether `history` is linearizable with respect to a key-value store of
/// independent keys (put, get, delete, append, compare-and-set).
///
/// Keys are checked from the fewest operations to the most (ties by key bytes), and the
/// first key that fails is reported, so the report is the smallest failing key and the
/// result is the same on every run.
pub fn check(history: &History, options: &CheckOptions) -> CheckResult {
    let mut parts = partition(history);
    parts.sort_unstable_by(|left, right| {
        (left.operations.len(), left.key).cmp(&(right.operations.len(), right.key))
    });
    let mut exhausted = false;
    for part in &parts {
        let violation = |longest_prefix, value_after_prefix, contradiction| {
            let operations = part
                .operations
                .iter()
                .map(|&index| {
                    (
                        OperationId::from_index(index),
                        history.operations()[index].clone(),
                    )
                })
                .collect();
            CheckResult::Illegal(Violation {
                key: part.key.to_vec(),
                operations,
                longest_prefix,
                value_after_prefix,
                contradiction,
            })
        };
        match check_part(history, &part.operations, options.part_search_steps_max).0 {
            PartResult::Linearizable => {}
            PartResult::Contradiction(contradiction) => {
                return violation(Vec::new(), None, Some(contradiction))
            }
            PartResult::Exhausted => exhausted = true,
            PartResult::Illegal {
                longest_prefix,
                value_after_prefix,
            } => return violation(longest_prefix, value_after_prefix, None),
        }
    }
    if exhausted {
        CheckResult::Unknown
    } else {
        CheckResult::Ok
    }
}

/// The checked operations on one key, as indexes into the history, in invoke order.
struct Part<'a> {
    key: &'a [u8],
    operations: Vec<usize>,
}

fn partition(history: &History) -> Vec<Part<'_>> {
    let mut part_by_key: HashMap<&[u8], usize, BuildHasherDefault<MixHasher>> = HashMap::default();
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (index, operation) in history.operations().iter().enumerate() {
        if !is_checked(operation) {
            continue;
        }
        let key = operation.input.key();
        let part = *part_by_key.entry(key).or_insert_with(|| {
            parts.push(Part {
                key,
                operations: Vec::new(),
            });
            parts.len() - 1
        });
        parts[part].operations.push(index);
    }
    let operations = history.operations();
    for part in &mut parts {
        part.operations
            .sort_unstable_by_key(|&index| (operations[index].invoke_time, index));
    }
    parts
}
