//! The depth-first search of Wing & Gong over one key's events, with Lowe's memo, and
//! the rules that keep pending operations from multiplying the configurations.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::contradiction::{self, Contradiction};
use super::events::{Events, Placement, COMPLETED_HEAD, PENDING_HEAD};
use super::history::History;
use super::memo::{Cache, CacheCounters, Linearized};
use super::model::{KeyModel, MixHasher, StateId, Step, ABSENT};

/// The verdict on one key.
pub(super) enum PartResult {
    Linearizable,
    /// Found by a direct check, before any search.
    Contradiction(Contradiction),
    /// Found by the search.
    Illegal {
        longest_prefix: Vec<usize>,
        value_after_prefix: Option<Vec<u8>>,
    },
    Exhausted,
}

/// What a configuration allows next, from the operation linearized last (see
/// [`check_part`] for why each restriction loses no linearization).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Constraint {
    /// After a completed operation (or at the start): anything.
    Free,
    /// After a pending operation: no blind write (put or delete).
    NoBlindWrite,
    /// After a pending operation whose effect nobody can see, linearized from the given
    /// state: only a completed compare-and-set that failed and expected that state.
    FailedCompareAndSetExpecting(StateId),
}

impl Constraint {
    fn allows(self, step: Step) -> bool {
        match self {
            Constraint::Free => true,
            Constraint::NoBlindWrite => !matches!(step, Step::Write { .. } | Step::Delete),
            Constraint::FailedCompareAndSetExpecting(state) => {
                is_failed_compare_and_set_expecting(step, state)
            }
        }
    }

    /// The constraints that allow every candidate `self` allows: `self` first, then the
    /// looser ones. A failed search from a configuration with any of them proves that a
    /// search from the same configuration with `self` fails.
    pub(super) fn looser_or_equal(self) -> impl Iterator<Item = Constraint> {
        let looser = match self {
            Constraint::Free => [None, None],
            Constraint::NoBlindWrite => [Some(Constraint::Free), None],
            Constraint::FailedCompareAndSetExpecting(_) => {
                [Some(Constraint::NoBlindWrite), Some(Constraint::Free)]
            }
        };
        std::iter::once(self).chain(looser.into_iter().flatten())
    }
}

fn is_failed_compare_and_set_expecting(step: Step, state: StateId) -> bool {
    matches!(
        step,
        Step::CompareAndSet {
            expected,
            swapped: Some(false),
            ..
        } if expected == state
    )
}

/// Where the search stands, besides the linearized set: the model state and the
/// constraint on the next operation. Two configurations with equal sets and positions
/// have the same futures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) state: StateId,
    pub(super) constraint: Constraint,
}

/// Where the search takes its next candidate from, at one configuration. The sources are
/// tried in this order; completed operations come first, so configurations without a
/// pending operation finish first and then cover (see [`Cache`]) those that linearize it
/// and later reach the same state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Calls of the completed list, walked forward up to the first return.
    Completed,
    /// Calls of the pending list (live pending puts, appends and deletes), walked
    /// backward from the end of the window, most recently invoked first.
    Pending,
    /// Pending compare-and-sets still of use that expect the current state (the others
    /// would change nothing), in invoke order.
    PendingCompareAndSet,
    /// Dead pending puts, appends and deletes (see [`check_part`]), in invoke order, only
    /// where a failed compare-and-set in the window expects the current state.
    Dead,
    /// Nothing left: backtrack.
    Exhausted,
}

/// How a checked operation takes part in the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Completed,
    /// A pending put, append or delete: alive (walked in the pending list) while some
    /// operation not yet linearized might observe its effect, dead after (then only
    /// tried as `Source::Dead`).
    PendingTracked,
    /// A pending compare-and-set: a candidate while some operation not yet linearized
    /// might observe its effect or might need it to have failed; useless after.
    PendingCompareAndSet,
}

/// One linearized operation on the search stack, with what is needed to resume the walk
/// after it is undone.
struct Frame {
    operation: u32,
    position_before: Position,
    entry: u32,
    source: Source,
    /// Where in `source` the operation was found: an event for the lists, an index for
    /// the others.
    cursor: u32,
    /// The order of the first return left in the completed list at the configuration the
    /// operation was linearized from: the end of its window of candidates.
    window_end: u32,
}

/// The depth-first search of Wing & Gong over one key, with Lowe's cache.
///
/// At each configuration the search first walks the completed list from the front. A call
/// is an operation that may be linearized now (every operation that must precede it is
/// linearized); if the model accepts it and the cache does not cover the resulting
/// configuration, it is lifted out and the walk restarts from the front. Reaching a return
/// ends the window: every later operation has to wait for that one. The search then tries
/// the pending operations invoked before that return (see [`Source`]), and after them
/// backtracks: it undoes the last linearized operation and tries the candidates after it.
/// An empty completed list is a full linearization (the pending operations left go last);
/// backtracking with nothing to undo means there is none.
///
/// Pending operations can be linearized almost anywhere, which multiplies the
/// configurations, so the search only looks for linearizations of a canonical shape. Each
/// rule below turns any linearization into one of that shape by moving pending operations
/// later or to the end (where they are harmless: a pending operation never has to precede
/// anything and its output is not checked), so a linearization exists iff a canonical one
/// does:
///
/// - A pending operation that would leave the state unchanged is not linearized: the same
///   sequence without it is valid.
/// - A blind write (put or delete) never comes right after a pending operation: it erases
///   that operation's effect, so the pending one can go to the end instead.
/// - A pending put, append or delete is *dead* once no operation left to linearize can
///   observe its effect ([`KeyModel::may_observe`]: no read output and no compare-and-set
///   expectation among them starts with the value it puts, contains the bytes it appends,
///   or, for a delete, is absent or starts with the bytes of an append). A dead operation
///   is only linearized right before a completed compare-and-set that failed and expected
///   the state the dead operation starts from. Until the next reset of the key every
///   state after it shows its effect, so no read and no successful compare-and-set can
///   happen there; the only operations it can matter to are failed compare-and-sets that
///   would succeed without it. Moved to just before the first of those (where it still
///   makes that one fail, and every later state still shows its effect), or to the end
///   if there is none, the sequence stays valid.
/// - A pending compare-and-set is useless once no operation left can observe the value it
///   swaps in and no failed compare-and-set left expects a value that could follow its
///   expectation ([`KeyModel::may_follow`]): if it swapped, the states until the next
///   reset are then unobservable, and without it they differ from every failed
///   expectation too, so dropping it (and the pending compare-and-sets after it that it
///   kept from swapping) leaves the sequence valid.
///
/// Whether an operation is alive depends only on which operations are linearized, and a
/// configuration with fewer pending operations linearized keeps at least as many alive.
/// So every canonical sequence after a configuration is canonical after one that has the
/// same completed operations and state, a subset of its pending operations and a looser
/// constraint, which is what lets a finished cache entry cover it (see [`Cache`]).
pub(super) fn check_part(
    history: &History,
    part: &[usize],
    steps_max: u64,
) -> (PartResult, SearchCounters) {
    let mut model = KeyModel::new();
    let model_steps: Vec<Step> = part
        .iter()
        .map(|&index| model.prepare(&history.operations()[index]))
        .collect();
    if !model_steps.iter().any(|step| step.observes_state()) {
        // Without an observed output every order is accepted.
        return (PartResult::Linearizable, SearchCounters::default());
    }
    // The direct checks prove in O(n log n) what the search may not prove within any
    // budget when many operations are pending.
    if let Some(contradiction) = contradiction::find(history, part, &model, &model_steps) {
        return (
            PartResult::Contradiction(contradiction),
            SearchCounters::default(),
        );
    }
    let mut search = Search::new(history, part, model, model_steps);
    let result = search.run(steps_max);
    let counters = SearchCounters {
        steps: search.steps_taken,
        cache: search.cache.counters(),
    };
    (result, counters)
}

/// What the search of one key did, for tests that check what a step costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SearchCounters {
    pub(super) steps: u64,
    pub(super) cache: CacheCounters,
}

/// The state of the search over one key.
struct Search {
    model: KeyModel,
    /// Each operation as the model sees it, by position.
    model_steps: Vec<Step>,
    kinds: Vec<Kind>,
    events: Events,
    linearized: Linearized,
    is_linearized: Vec<bool>,
    /// For each pending operation, how many operations that keep it alive (may observe
    /// its effect, or for a compare-and-set may need it) are not linearized.
    keepers_left: Vec<u32>,
    /// For each operation, the pending operations it keeps alive:
    /// `kept[kept_start[position]..kept_start[position + 1]]`.
    kept_start: Vec<u32>,
    kept: Vec<u32>,
    /// The tracked pending operations in invoke order.
    tracked: Vec<u32>,
    /// The pending compare-and-sets by expected state, each list in invoke order.
    compare_and_sets: HashMap<StateId, Vec<u32>, BuildHasherDefault<MixHasher>>,
    any_failed_compare_and_set: bool,
    cache: Cache,
    stack: Vec<Frame>,
    /// The pending operations on the stack, in the order they were linearized: the ones
    /// the cache tries leaving out to find a cover.
    pending_stack: Vec<u32>,
    steps_taken: u64,
    /// The longest prefix seen, kept incrementally: `stack[..agreeing]` equals
    /// `longest[..agreeing]`, so a new maximum copies only the part that changed.
    longest: Vec<u32>,
    longest_state: StateId,
    agreeing: usize,
    position: Position,
    window_end: u32,
}

impl Search {
    fn new(history: &History, part: &[usize], model: KeyModel, model_steps: Vec<Step>) -> Search {
        let kinds: Vec<Kind> = part
            .iter()
            .zip(&model_steps)
            .map(|(&index, &step)| {
                if history.operations()[index].return_time().is_some() {
                    return Kind::Completed;
                }
                match step {
                    Step::Write { .. } | Step::Append { .. } | Step::Delete => Kind::PendingTracked,
                    Step::CompareAndSet { .. } => Kind::PendingCompareAndSet,
                    Step::Read { .. } => unreachable!("pending reads are not checked"),
                }
            })
            .collect();

        // The operations that keep each pending one alive: those that may observe its
        // effect, found by grouping operations by the value they observe and matching
        // each pending operation against each value, and for a compare-and-set also the
        // failed compare-and-sets it may be needed to explain.
        let mut observers_by_value: HashMap<StateId, Vec<u32>, BuildHasherDefault<MixHasher>> =
            HashMap::default();
        let mut observed_values: Vec<StateId> = Vec::new();
        let mut failed_compare_and_sets: Vec<(u32, StateId)> = Vec::new();
        for (position, &step) in model_steps.iter().enumerate() {
            let value = match step {
                Step::Read { value } => value,
                Step::CompareAndSet {
                    expected, swapped, ..
                } => {
                    if swapped == Some(false) {
                        failed_compare_and_sets.push((position as u32, expected));
                    }
                    expected
                }
                Step::Write { .. } | Step::Delete | Step::Append { .. } => continue,
            };
            let observers = observers_by_value.entry(value).or_default();
            if observers.is_empty() {
                observed_values.push(value);
            }
            observers.push(position as u32);
        }
        let mut keeps: Vec<Vec<u32>> = vec![Vec::new(); part.len()];
        let mut keepers_left = vec![0u32; part.len()];
        let mut tracked = Vec::new();
        for (position, &kind) in kinds.iter().enumerate() {
            if kind == Kind::Completed {
                continue;
            }
            let mut keep = |keeper: u32| {
                if keeper as usize != position {
                    keeps[keeper as usize].push(position as u32);
                    keepers_left[position] += 1;
                }
            };
            for &value in &observed_values {
                if model.may_observe(model_steps[position], value) {
                    observers_by_value[&value]
                        .iter()
                        .for_each(|&observer| keep(observer));
                }
            }
            match model_steps[position] {
                Step::CompareAndSet { expected, .. } => {
                    for &(failed, failed_expected) in &failed_compare_and_sets {
                        if model.may_follow(failed_expected, expected) {
                            keep(failed);
                        }
                    }
                }
                Step::Write { .. } | Step::Append { .. } | Step::Delete => {
                    tracked.push(position as u32)
                }
                Step::Read { .. } => unreachable!("pending reads are not checked"),
            }
        }
        let mut kept_start = Vec::with_capacity(part.len() + 1);
        let mut kept = Vec::new();
        for list in &keeps {
            kept_start.push(kept.len() as u32);
            kept.extend_from_slice(list);
        }
        kept_start.push(kept.len() as u32);

        let mut compare_and_sets: HashMap<StateId, Vec<u32>, BuildHasherDefault<MixHasher>> =
            HashMap::default();
        for (position, &kind) in kinds.iter().enumerate() {
            if let (Kind::PendingCompareAndSet, Step::CompareAndSet { expected, .. }) =
                (kind, model_steps[position])
            {
                compare_and_sets
                    .entry(expected)
                    .or_default()
                    .push(position as u32);
            }
        }
        let any_failed_compare_and_set = model_steps.iter().any(|&step| {
            matches!(
                step,
                Step::CompareAndSet {
                    swapped: Some(false),
                    ..
                }
            )
        });

        let placement: Vec<Placement> = kinds
            .iter()
            .zip(&keepers_left)
            .map(|(&kind, &live)| match kind {
                Kind::Completed => Placement::Completed,
                Kind::PendingTracked if live > 0 => Placement::PendingListed,
                Kind::PendingTracked | Kind::PendingCompareAndSet => Placement::PendingUnlisted,
            })
            .collect();
        let events = Events::new(history, part, &placement);
        let pending: Vec<bool> = kinds.iter().map(|&kind| kind != Kind::Completed).collect();
        // Operations are in invoke order, which is the order of their call events, so the
        // lists built in position order are sorted by call order too.
        Search {
            model,
            model_steps,
            kinds,
            events,
            linearized: Linearized::new(&pending),
            is_linearized: vec![false; part.len()],
            keepers_left,
            kept_start,
            kept,
            tracked,
            compare_and_sets,
            any_failed_compare_and_set,
            cache: Cache::new(),
            stack: Vec::with_capacity(part.len()),
            pending_stack: Vec::new(),
            steps_taken: 0,
            longest: Vec::new(),
            longest_state: ABSENT,
            agreeing: 0,
            position: Position {
                state: ABSENT,
                constraint: Constraint::Free,
            },
            window_end: 0,
        }
    }

    fn run(&mut self, steps_max: u64) -> PartResult {
        let mut source = Source::Completed;
        let mut cursor = self.events.first(COMPLETED_HEAD);
        // Counted in a local, which stays in a register, and stored on the way out.
        let mut steps_taken = 0u64;
        while self.events.first(COMPLETED_HEAD) != COMPLETED_HEAD {
            if steps_taken == steps_max {
                self.steps_taken = steps_taken;
                return PartResult::Exhausted;
            }
            steps_taken += 1;
            // The candidate at `cursor`, or `None` once `source` has no more; moving to the
            // next source or backtracking happens below.
            let candidate = match source {
                Source::Completed => {
                    debug_assert_ne!(cursor, COMPLETED_HEAD, "the walk passed the last return");
                    if self.events.is_return(cursor) {
                        self.window_end = self.events.order(cursor);
                        None
                    } else {
                        Some(self.events.operation(cursor))
                    }
                }
                Source::Pending => (cursor != PENDING_HEAD).then(|| self.events.operation(cursor)),
                Source::PendingCompareAndSet => self
                    .compare_and_sets
                    .get(&self.position.state)
                    .and_then(|list| list.get(cursor as usize).copied())
                    .filter(|&operation| self.is_in_window(operation)),
                Source::Dead => {
                    if cursor == 0 && !self.dead_operations_may_help() {
                        None
                    } else {
                        self.tracked
                            .get(cursor as usize)
                            .copied()
                            .filter(|&operation| self.is_in_window(operation))
                    }
                }
                Source::Exhausted => {
                    let Some(frame) = self.undo() else {
                        self.steps_taken = steps_taken;
                        return self.illegal();
                    };
                    source = frame.source;
                    cursor = self.advance(frame.source, frame.cursor);
                    continue;
                }
            };
            let Some(operation) = candidate else {
                (source, cursor) = match source {
                    Source::Completed => (
                        Source::Pending,
                        self.events.last_before(PENDING_HEAD, self.window_end),
                    ),
                    Source::Pending => (Source::PendingCompareAndSet, 0),
                    Source::PendingCompareAndSet => (Source::Dead, 0),
                    Source::Dead | Source::Exhausted => (Source::Exhausted, 0),
                };
                continue;
            };
            if self.try_linearize(operation, source, cursor) {
                source = Source::Completed;
                cursor = self.events.first(COMPLETED_HEAD);
            } else {
                cursor = self.advance(source, cursor);
            }
        }
        self.steps_taken = steps_taken;
        PartResult::Linearizable
    }

    /// The cursor after `cursor` in `source`.
    fn advance(&self, source: Source, cursor: u32) -> u32 {
        match source {
            Source::Completed => self.events.next(cursor),
            Source::Pending => self.events.previous(cursor),
            Source::PendingCompareAndSet | Source::Dead => cursor + 1,
            Source::Exhausted => unreachable!("an exhausted source has no cursor"),
        }
    }

    /// True if the pending operation at `operation` was invoked before the first return
    /// left, so it may be linearized now.
    fn is_in_window(&self, operation: u32) -> bool {
        self.events.order(self.events.call_of(operation)) < self.window_end
    }

    /// True if some failed compare-and-set in the window expects the current state: the
    /// only place a dead operation may go.
    fn dead_operations_may_help(&self) -> bool {
        self.any_failed_compare_and_set
            && self.events.window_has(self.window_end, |operation| {
                is_failed_compare_and_set_expecting(
                    self.model_steps[operation as usize],
                    self.position.state,
                )
            })
    }

    /// Linearizes `operation` next if the rules, the model and the cache allow it.
    fn try_linearize(&mut self, operation: u32, source: Source, cursor: u32) -> bool {
        let index = operation as usize;
        let step = self.model_steps[index];
        let kind = self.kinds[index];
        if self.is_linearized[index] || !self.position.constraint.allows(step) {
            return false;
        }
        let live = self.keepers_left[index] > 0;
        match kind {
            // Live operations are walked in the pending list, dead ones only come from
            // `Source::Dead`.
            Kind::PendingTracked if live == (source == Source::Dead) => return false,
            // Nothing left can observe or need a useless compare-and-set.
            Kind::PendingCompareAndSet if !live => return false,
            Kind::Completed | Kind::PendingTracked | Kind::PendingCompareAndSet => {}
        }
        let Some(next_state) = self.model.step(self.position.state, step) else {
            return false;
        };
        if kind != Kind::Completed && next_state == self.position.state {
            return false;
        }
        let constraint = match source {
            Source::Completed => Constraint::Free,
            Source::Pending | Source::PendingCompareAndSet => Constraint::NoBlindWrite,
            Source::Dead => Constraint::FailedCompareAndSetExpecting(self.position.state),
            Source::Exhausted => unreachable!("an exhausted source has no candidates"),
        };
        let next_position = Position {
            state: next_state,
            constraint,
        };
        self.linearized.flip(operation);
        let Some(entry) = self
            .cache
            .visit(&self.linearized, next_position, &self.pending_stack)
        else {
            self.linearized.flip(operation);
            return false;
        };
        self.stack.push(Frame {
            operation,
            position_before: self.position,
            entry,
            source,
            cursor,
            window_end: self.window_end,
        });
        self.position = next_position;
        if kind != Kind::Completed {
            self.pending_stack.push(operation);
        }
        self.take_out(operation);
        if self.stack.len() > self.longest.len() {
            self.longest.truncate(self.agreeing);
            self.longest.extend(
                self.stack[self.agreeing..]
                    .iter()
                    .map(|frame| frame.operation),
            );
            self.agreeing = self.stack.len();
            self.longest_state = next_state;
        }
        true
    }

    /// Undoes the last linearized operation; `None` if there is none.
    fn undo(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.agreeing = self.agreeing.min(self.stack.len());
        self.cache.finish(frame.entry);
        if self.kinds[frame.operation as usize] != Kind::Completed {
            let popped = self.pending_stack.pop();
            debug_assert_eq!(popped, Some(frame.operation), "pending stack out of step");
        }
        self.put_back(frame.operation);
        self.linearized.flip(frame.operation);
        self.position = frame.position_before;
        self.window_end = frame.window_end;
        Some(frame)
    }

    /// Takes a newly linearized operation out of the lists, and the pending puts, appends
    /// and deletes it was the last keeper of out of the pending list.
    fn take_out(&mut self, operation: u32) {
        let index = operation as usize;
        let call = self.events.call_of(operation);
        match self.kinds[index] {
            Kind::Completed => self.events.lift_completed(call),
            Kind::PendingTracked if self.keepers_left[index] > 0 => self.events.unlink(call),
            Kind::PendingTracked | Kind::PendingCompareAndSet => {}
        }
        self.is_linearized[index] = true;
        let kept = self.kept_start[index] as usize..self.kept_start[index + 1] as usize;
        for &pending in &self.kept[kept] {
            let pending = pending as usize;
            self.keepers_left[pending] -= 1;
            if self.keepers_left[pending] == 0
                && self.kinds[pending] == Kind::PendingTracked
                && !self.is_linearized[pending]
            {
                self.events.unlink(self.events.call_of(pending as u32));
            }
        }
    }

    /// Undoes [`Search::take_out`], in the reverse order.
    fn put_back(&mut self, operation: u32) {
        let index = operation as usize;
        let kept = self.kept_start[index] as usize..self.kept_start[index + 1] as usize;
        for &pending in self.kept[kept].iter().rev() {
            let pending = pending as usize;
            if self.keepers_left[pending] == 0
                && self.kinds[pending] == Kind::PendingTracked
                && !self.is_linearized[pending]
            {
                self.events.relink(self.events.call_of(pending as u32));
            }
            self.keepers_left[pending] += 1;
        }
        self.is_linearized[index] = false;
        let call = self.events.call_of(operation);
        match self.kinds[index] {
            Kind::Completed => self.events.unlift_completed(call),
            Kind::PendingTracked if self.keepers_left[index] > 0 => self.events.relink(call),
            Kind::PendingTracked | Kind::PendingCompareAndSet => {}
        }
    }

    fn illegal(&self) -> PartResult {
        PartResult::Illegal {
            longest_prefix: self
                .longest
                .iter()
                .map(|&operation| operation as usize)
                .collect(),
            value_after_prefix: self.model.value(self.longest_state).map(<[u8]>::to_vec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A constraint offered as looser allows every step the original allows, which is what
    // makes a failed search under it a proof for the original.
    #[test]
    fn looser_constraints_allow_at_least_as_much() {
        let steps = [
            Step::Read { value: 3 },
            Step::Write { value: 3 },
            Step::Delete,
            Step::Append { append: 0 },
            Step::CompareAndSet {
                expected: 3,
                new_value: 4,
                swapped: Some(false),
            },
            Step::CompareAndSet {
                expected: 4,
                new_value: 5,
                swapped: Some(false),
            },
            Step::CompareAndSet {
                expected: 3,
                new_value: 4,
                swapped: Some(true),
            },
            Step::CompareAndSet {
                expected: 3,
                new_value: 4,
                swapped: None,
            },
        ];
        let constraints = [
            Constraint::Free,
            Constraint::NoBlindWrite,
            Constraint::FailedCompareAndSetExpecting(3),
        ];
        for constraint in constraints {
            let looser: Vec<Constraint> = constraint.looser_or_equal().collect();
            assert_eq!(looser[0], constraint);
            assert!(looser.contains(&Constraint::Free));
            for other in looser {
                for step in steps {
                    assert!(
                        !constraint.allows(step) || other.allows(step),
                        "{other:?} offered as looser than {constraint:?} refuses {step:?}"
                    );
                }
            }
        }
    }
}
