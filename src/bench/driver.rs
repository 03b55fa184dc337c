//! The pipelined load driver: one thread keeps many operations in flight through one
//! SDK [`Client`], without a thread per operation.
//!
//! The thread holds a fixed number of slots, each with at most one operation, whose
//! index is its tag in the thread's [`Completions`] queue. It sleeps on that queue until
//! some operation has news (or the next open-loop start is due), then moves on exactly
//! the tagged operations ([`Pending::is_ready`]); each one that is done goes to the
//! [`Source`], which checks and records it and may continue it with another request (a
//! read-modify-write's transaction). Free slots take the source's next operations, and
//! the requests started after one wake-up are written together ([`Client::batch`], one
//! system call per connection). Completions are taken in the order they arrive, so a
//! fast answer never waits behind a slow one. Every [`SWEEP_INTERVAL`] the thread also
//! moves on the operations whose retry pause or attempt wait has ended
//! ([`Pending::poll_at`]): those raise no tag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Batch, Client, ClientError, Completions, Pending};
use crate::kv;

/// How often the thread moves on the operations whose retry pause or attempt wait has
/// ended (they raise no completion tag).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(5);
/// Requests one operation may chain after its first (a read-modify-write has one).
pub const FOLLOW_UPS_MAX: u32 = 4;

/// An operation for a free slot.
#[derive(Debug)]
pub struct Start<C> {
    pub op: kv::Op,
    pub serializable: bool,
    /// What the source wants back with the answer.
    pub context: C,
}

/// What the source has for a free slot.
#[derive(Debug)]
pub enum Next<C> {
    Start(Start<C>),
    /// Nothing before this moment (an open loop's next scheduled start).
    NotBefore(Instant),
    /// Nothing more: the thread ends once the operations in flight are done.
    Exhausted,
}

/// What becomes of an operation after an answer.
#[derive(Debug)]
pub enum Completion {
    Done,
    /// It goes on with this request, in the same slot and with the same context.
    Then {
        op: kv::Op,
        serializable: bool,
    },
}

/// Where a driver's operations come from and where their answers go.
pub trait Source {
    type Context;
    /// The next operation, given that a slot is free `now`.
    fn next(&mut self, now: Instant) -> Next<Self::Context>;
    /// An operation's answer (or the error that kept it from starting).
    fn complete(
        &mut self,
        context: &mut Self::Context,
        result: Result<kv::Response, ClientError>,
    ) -> Completion;
}

struct Slot<'c, C> {
    pending: Pending<'c>,
    context: C,
    follow_ups: u32,
}

struct Driver<'c, 's, S: Source> {
    batch: Batch<'c>,
    completions: Arc<Completions>,
    slots: Vec<Option<Slot<'c, S::Context>>>,
    /// Indexes of the empty slots.
    free: Vec<usize>,
    source: &'s mut S,
}

/// Keeps up to `in_flight` operations of `source` going through `client` until the
/// source is exhausted and every operation started has completed. Fails only when
/// `in_flight` is not a valid completion queue bound.
pub fn drive<S: Source>(
    client: &Client,
    in_flight: usize,
    source: &mut S,
) -> Result<(), ClientError> {
    let mut driver = Driver {
        batch: client.batch(),
        completions: Arc::new(Completions::new(in_flight)?),
        slots: (0..in_flight).map(|_| None).collect(),
        free: (0..in_flight).rev().collect(),
        source,
    };
    let mut tags = Vec::with_capacity(in_flight);
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
    let mut exhausted = false;
    loop {
        let mut wake = next_sweep;
        while !exhausted {
            let Some(&slot) = driver.free.last() else {
                break;
            };
            match driver.source.next(Instant::now()) {
                Next::Start(start) => {
                    driver.free.pop();
                    driver.place(slot, start.op, start.serializable, start.context, 0);
                }
                Next::NotBefore(moment) => {
                    wake = wake.min(moment);
                    break;
                }
                Next::Exhausted => exhausted = true,
            }
        }
        driver.batch.flush();
        if exhausted && driver.free.len() == in_flight {
            return Ok(());
        }
        tags.clear();
        driver.completions.wait_until(wake, &mut tags);
        let now = Instant::now();
        if now >= next_sweep {
            next_sweep = now + SWEEP_INTERVAL;
            // Only the operations whose pause or attempt wait has ended: polling every
            // answer channel would cost a cache miss each.
            let due = driver.slots.iter().enumerate().filter(|(_, slot)| {
                slot.as_ref()
                    .and_then(|slot| slot.pending.poll_at())
                    .is_some_and(|moment| moment <= now)
            });
            tags.extend(due.map(|(index, _)| index as u64));
        }
        for &tag in &tags {
            driver.harvest(tag as usize);
        }
    }
}

impl<'c, S: Source> Driver<'c, '_, S> {
    /// Starts an operation in the empty `slot` (written at the next flush). One that
    /// cannot start is answered with its error at once.
    fn place(
        &mut self,
        slot: usize,
        mut op: kv::Op,
        mut serializable: bool,
        mut context: S::Context,
        mut follow_ups: u32,
    ) {
        debug_assert!(self.slots[slot].is_none());
        loop {
            match self
                .batch
                .start_tagged(op, serializable, &self.completions, slot as u64)
            {
                Ok(pending) => {
                    self.slots[slot] = Some(Slot {
                        pending,
                        context,
                        follow_ups,
                    });
                    return;
                }
                Err(error) => match self.source.complete(&mut context, Err(error)) {
                    Completion::Done => {
                        self.free.push(slot);
                        return;
                    }
                    Completion::Then {
                        op: next,
                        serializable: next_serializable,
                    } => {
                        follow_ups += 1;
                        assert!(follow_ups <= FOLLOW_UPS_MAX, "an operation chains too much");
                        op = next;
                        serializable = next_serializable;
                    }
                },
            }
        }
    }

    /// Takes the slot's operation when it is done; a stale tag, or an operation that
    /// went on to a retry, leaves the slot alone.
    fn harvest(&mut self, slot: usize) {
        let Some(entry) = &mut self.slots[slot] else {
            return;
        };
        if !entry.pending.is_ready() {
            return;
        }
        let Slot {
            pending,
            mut context,
            follow_ups,
        } = self.slots[slot].take().expect("checked above");
        let result = pending.wait();
        match self.source.complete(&mut context, result) {
            Completion::Done => self.free.push(slot),
            Completion::Then { op, serializable } => {
                assert!(follow_ups < FOLLOW_UPS_MAX, "an operation chains too much");
                self.place(slot, op, serializable, context, follow_ups + 1);
            }
        }
    }
}
