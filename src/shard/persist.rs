//! Turns whose log batch is not yet durable, with what waits for it: the Raft layer's
//! persist token and the messages that may leave only once the batch is on disk (votes
//! and append acknowledgements). Batches become durable in order, so this is a queue.
//!
//! Its length is bounded by the batches the log accepts ahead of its fsync: the driver
//! waits for room in the log before the next turn's batch, so a slow disk slows the turns
//! instead of growing this queue. A turn with nothing to write adds no entry.

use std::collections::VecDeque;

use crate::multiraft::{GroupId, PersistToken};
use crate::raft::Message;

/// One batch on its way to disk.
#[derive(Debug)]
pub struct WaitingTurn {
    pub sequence: u64,
    pub token: PersistToken,
    pub messages: Vec<(GroupId, Message)>,
}

/// The turns waiting for their batches, oldest first.
#[derive(Debug, Default)]
pub struct Unpersisted {
    waiting: VecDeque<WaitingTurn>,
    last_sequence: u64,
}

impl Unpersisted {
    /// A turn with records to write: its batch's sequence number.
    pub fn push(&mut self, token: PersistToken, messages: Vec<(GroupId, Message)>) -> u64 {
        self.last_sequence += 1;
        self.waiting.push_back(WaitingTurn {
            sequence: self.last_sequence,
            token,
            messages,
        });
        self.last_sequence
    }

    /// A turn with nothing to write: it is durable once every earlier batch is, so it
    /// joins the newest one waiting. With none waiting it is durable now, and its token
    /// and messages come back.
    pub fn attach(
        &mut self,
        token: PersistToken,
        messages: Vec<(GroupId, Message)>,
    ) -> Option<(PersistToken, Vec<(GroupId, Message)>)> {
        match self.waiting.back_mut() {
            Some(newest) => {
                newest.token.extend(token);
                newest.messages.extend(messages);
                None
            }
            None => Some((token, messages)),
        }
    }

    /// Every batch through `sequence` is durable: their turns, oldest first.
    pub fn durable(&mut self, sequence: u64) -> Vec<WaitingTurn> {
        let mut done = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|turn| turn.sequence <= sequence)
        {
            done.push(self.waiting.pop_front().expect("present"));
        }
        done
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Batches become durable in order; a turn without records waits for the newest
    // batch before it, or is durable at once when there is none.
    #[test]
    fn turns_wait_for_every_earlier_batch() {
        let mut unpersisted = Unpersisted::default();
        assert!(unpersisted
            .attach(PersistToken::default(), Vec::new())
            .is_some());
        let first = unpersisted.push(PersistToken::default(), Vec::new());
        let second = unpersisted.push(PersistToken::default(), Vec::new());
        assert!(unpersisted
            .attach(PersistToken::default(), Vec::new())
            .is_none());
        assert_eq!(unpersisted.durable(first).len(), 1);
        assert_eq!(unpersisted.len(), 1);
        assert!(unpersisted.durable(first).is_empty(), "reported twice");
        assert_eq!(unpersisted.durable(second).len(), 1);
        assert!(unpersisted.is_empty());
    }
}
