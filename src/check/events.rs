//! The call and return events of one key, in time order, as doubly linked lists that the
//! search lifts operations out of and puts back into in O(1).

use super::history::History;

/// The heads of the two event lists; events are numbered from [`FIRST_EVENT`].
pub(super) const COMPLETED_HEAD: u32 = 0;
pub(super) const PENDING_HEAD: u32 = 1;
const FIRST_EVENT: u32 = 2;

/// Marks a return event in `Events::call_return`.
const NOT_A_CALL: u32 = u32::MAX;
/// Marks the call of a pending operation, which has no return event, in
/// `Events::call_return`.
const NO_RETURN: u32 = u32::MAX - 1;

/// Order of events that share a time. Calls first: an operation invoked at the time
/// another returns is concurrent with it, never after it.
const RANK_CALL: u8 = 0;
const RANK_RETURN: u8 = 1;

/// Where an operation's events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// Call and return in the completed list.
    Completed,
    /// A pending operation whose call starts in the pending list.
    PendingListed,
    /// A pending operation whose call is in neither list: the search finds it by other
    /// means.
    PendingUnlisted,
}

/// The events of one key in two doubly linked lists with heads, in arrays indexed by event
/// number, each list in time order:
///
/// - the completed list holds the call and the return of every completed operation;
/// - the pending list holds the calls of the pending operations the search walks. A
///   pending operation's return is at +infinity, after everything, so it never ends the
///   window of candidates and is not stored: the search succeeds as soon as the completed
///   list is empty, because the pending operations left can all be linearized last.
///
/// Unlinking an event keeps its own links, so relinking events in the reverse order of
/// their unlinking restores the lists exactly.
pub(super) struct Events {
    next: Vec<u32>,
    previous: Vec<u32>,
    /// The position (in the key's history) of the operation of each event.
    operation: Vec<u32>,
    /// For the call of a completed operation, its return event; [`NOT_A_CALL`] for a
    /// return, [`NO_RETURN`] for the call of a pending operation.
    call_return: Vec<u32>,
    /// Each event's place in the time order of all events of the key. An operation may be
    /// linearized when its call comes before the first return left in the completed list.
    order: Vec<u32>,
    /// The call event of each operation, by position.
    call: Vec<u32>,
}

impl Events {
    /// The events of the operations of one key (`part` holds their indexes in the
    /// history, in invoke order).
    pub(super) fn new(history: &History, part: &[usize], placement: &[Placement]) -> Events {
        let mut sorted: Vec<(u64, u8, u32)> = Vec::with_capacity(part.len() * 2);
        for (position, &index) in part.iter().enumerate() {
            let operation = &history.operations()[index];
            let position = u32::try_from(position).expect("operations per key fit in u32");
            sorted.push((operation.invoke_time, RANK_CALL, position));
            if placement[position as usize] == Placement::Completed {
                let time = operation
                    .return_time()
                    .expect("completed operations return");
                sorted.push((time, RANK_RETURN, position));
            }
        }
        // The position breaks the remaining ties, so the order never depends on the sort.
        sorted.sort_unstable();

        let count = sorted.len() + FIRST_EVENT as usize;
        let mut events = Events {
            next: (0..count as u32).collect(),
            previous: (0..count as u32).collect(),
            operation: vec![0; count],
            call_return: vec![NOT_A_CALL; count],
            order: vec![0; count],
            call: vec![NOT_A_CALL; part.len()],
        };
        for (slot, &(_, rank, position)) in sorted.iter().enumerate() {
            let event = slot as u32 + FIRST_EVENT;
            events.operation[event as usize] = position;
            events.order[event as usize] = slot as u32;
            if rank == RANK_RETURN {
                let call = events.call[position as usize];
                // Every call sorts before its return: invoke <= return and calls rank first.
                assert_ne!(call, NOT_A_CALL, "a return event precedes its call");
                events.call_return[call as usize] = event;
                events.push_back(COMPLETED_HEAD, event);
                continue;
            }
            events.call[position as usize] = event;
            match placement[position as usize] {
                Placement::Completed => events.push_back(COMPLETED_HEAD, event),
                Placement::PendingListed => {
                    events.call_return[event as usize] = NO_RETURN;
                    events.push_back(PENDING_HEAD, event);
                }
                Placement::PendingUnlisted => {
                    events.call_return[event as usize] = NO_RETURN;
                }
            }
        }
        events
    }

    fn push_back(&mut self, head: u32, event: u32) {
        let last = self.previous[head as usize];
        self.next[last as usize] = event;
        self.previous[event as usize] = last;
        self.next[event as usize] = head;
        self.previous[head as usize] = event;
    }

    pub(super) fn first(&self, head: u32) -> u32 {
        self.next[head as usize]
    }

    pub(super) fn next(&self, event: u32) -> u32 {
        self.next[event as usize]
    }

    pub(super) fn previous(&self, event: u32) -> u32 {
        self.previous[event as usize]
    }

    pub(super) fn is_return(&self, event: u32) -> bool {
        self.call_return[event as usize] == NOT_A_CALL
    }

    /// The position of the operation of `event`.
    pub(super) fn operation(&self, event: u32) -> u32 {
        self.operation[event as usize]
    }

    pub(super) fn order(&self, event: u32) -> u32 {
        self.order[event as usize]
    }

    /// The call event of the operation at `position`.
    pub(super) fn call_of(&self, position: u32) -> u32 {
        self.call[position as usize]
    }

    /// The last event of the list at `head` that comes before `order`, or `head`.
    pub(super) fn last_before(&self, head: u32, order: u32) -> u32 {
        let mut event = head;
        while self.next[event as usize] != head
            && self.order[self.next[event as usize] as usize] < order
        {
            event = self.next[event as usize];
        }
        event
    }

    /// True if some call of the completed list before `order` satisfies `predicate`, which
    /// is given the call's operation position.
    pub(super) fn window_has(&self, order: u32, predicate: impl Fn(u32) -> bool) -> bool {
        let mut event = self.next[COMPLETED_HEAD as usize];
        while event != COMPLETED_HEAD && self.order[event as usize] < order {
            if !self.is_return(event) && predicate(self.operation[event as usize]) {
                return true;
            }
            event = self.next[event as usize];
        }
        false
    }

    /// Takes an event out of its list; its own links stay as they were.
    pub(super) fn unlink(&mut self, event: u32) {
        let (previous, next) = (self.previous[event as usize], self.next[event as usize]);
        self.next[previous as usize] = next;
        self.previous[next as usize] = previous;
    }

    /// Puts an event back where it was unlinked from; correct only if every event unlinked
    /// after it has been relinked already.
    pub(super) fn relink(&mut self, event: u32) {
        let (previous, next) = (self.previous[event as usize], self.next[event as usize]);
        self.next[previous as usize] = event;
        self.previous[next as usize] = event;
    }

    /// Unlinks a completed operation's call and return.
    pub(super) fn lift_completed(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.call_return[call as usize]);
    }

    /// Undoes [`Events::lift_completed`].
    pub(super) fn unlift_completed(&mut self, call: u32) {
        self.relink(self.call_return[call as usize]);
        self.relink(call);
    }
}
