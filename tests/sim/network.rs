//! The simulated network: every message (between nodes, and between clients and nodes)
//! waits in one queue ordered by delivery step, with random delay (hence reordering), loss
//! and duplication, and a matrix of cut links for partitions, checked at delivery.

use std::collections::BTreeMap;

use corekv::api::{ApiRequest, ApiResponse};
use corekv::multiraft::GroupId;
use corekv::raft::{Message, NodeId};

use crate::rng::SimRng;

/// Most nodes in a simulated cluster (the link bitmask in traces has 8 bits per node).
pub const NODES_MAX: usize = 8;
/// Messages in flight at once. A healthy cluster of 5 nodes stays far below; a storm of
/// messages that feed on each other (each answer provoking more than one new message)
/// crosses it, and the run fails instead of exhausting memory.
pub const IN_FLIGHT_MESSAGES_MAX: usize = 200_000;

/// Something in flight.
#[derive(Debug)]
pub enum Envelope {
    Peer {
        from: NodeId,
        to: NodeId,
        group: GroupId,
        message: Message,
    },
    /// A client request on the client's connection to `to`.
    Request {
        client: usize,
        to: NodeId,
        request: ApiRequest,
    },
    /// A node's answer on the connection it came from.
    Reply {
        from: NodeId,
        client: usize,
        response: ApiResponse,
    },
}

/// How unreliable the network is in this run.
#[derive(Clone, Debug)]
pub struct NetworkFaults {
    /// Chance that a node-to-node message is lost.
    pub drop_probability: f64,
    /// Chance that a node-to-node message arrives twice.
    pub duplicate_probability: f64,
    /// Chance that a client request or reply is lost.
    pub client_drop_probability: f64,
    /// Every message takes between 1 and this many steps.
    pub delay_steps_max: u64,
    /// Chance that a message takes much longer (up to `spike_delay_steps_max`), which
    /// reorders it behind many later ones.
    pub spike_probability: f64,
    pub spike_delay_steps_max: u64,
}

impl NetworkFaults {
    /// A network that loses nothing and delays a little (after healing).
    pub fn calm(delay_steps_max: u64) -> NetworkFaults {
        NetworkFaults {
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            client_drop_probability: 0.0,
            delay_steps_max,
            spike_probability: 0.0,
            spike_delay_steps_max: delay_steps_max,
        }
    }
}

/// What happened to a message handed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    Lost,
    Duplicated,
}

/// The queue of messages in flight and the state of the links.
#[derive(Debug)]
pub struct Network {
    /// By (delivery step, send order): a deterministic order for equal steps.
    /// Boxed: an envelope is a few hundred bytes, and the map moves its neighbours on
    /// every insert and removal.
    queue: BTreeMap<(u64, u64), Box<Envelope>>,
    sent: u64,
    /// `cut[from][to]` (node indexes): the link drops everything.
    cut: [[bool; NODES_MAX]; NODES_MAX],
    pub faults: NetworkFaults,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            queue: BTreeMap::new(),
            sent: 0,
            cut: [[false; NODES_MAX]; NODES_MAX],
            faults,
        }
    }

    fn delay(&self, rng: &mut SimRng) -> u64 {
        if rng.chance(self.faults.spike_probability) {
            rng.between(1, self.faults.spike_delay_steps_max)
        } else {
            rng.between(1, self.faults.delay_steps_max)
        }
    }

    fn enqueue(&mut self, at: u64, envelope: Envelope) {
        self.sent += 1;
        self.queue.insert((at, self.sent), Box::new(envelope));
    }

    /// Sends a message between nodes: it may be lost, delayed, or duplicated.
    pub fn send_peer(
        &mut self,
        rng: &mut SimRng,
        now: u64,
        from: NodeId,
        group: GroupId,
        message: Message,
    ) -> SendOutcome {
        if rng.chance(self.faults.drop_probability) {
            return SendOutcome::Lost;
        }
        let to = message.to;
        let outcome = if rng.chance(self.faults.duplicate_probability) {
            let at = now + self.delay(rng);
            self.enqueue(
                at,
                Envelope::Peer {
                    from,
                    to,
                    group,
                    message: message.clone(),
                },
            );
            SendOutcome::Duplicated
        } else {
            SendOutcome::Queued
        };
        let at = now + self.delay(rng);
        self.enqueue(
            at,
            Envelope::Peer {
                from,
                to,
                group,
                message,
            },
        );
        outcome
    }

    /// Sends a client request or reply: it may be lost or delayed, never duplicated (a
    /// client connection does not duplicate; the client's retries do that on purpose).
    pub fn send_client(&mut self, rng: &mut SimRng, now: u64, envelope: Envelope) -> SendOutcome {
        if rng.chance(self.faults.client_drop_probability) {
            return SendOutcome::Lost;
        }
        let at = now + self.delay(rng);
        self.enqueue(at, envelope);
        SendOutcome::Queued
    }

    /// The next message due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Envelope> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(*entry.remove())
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Is the link from node `from` to node `to` cut?
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut[(from - 1) as usize][(to - 1) as usize]
    }

    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut[(from - 1) as usize][(to - 1) as usize] = true;
        }
    }

    /// Cuts both directions between every node of `left` and every node of `right`.
    pub fn cut_between(&mut self, left: &[NodeId], right: &[NodeId]) {
        for &a in left {
            for &b in right {
                self.cut_link(a, b);
                self.cut_link(b, a);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut = [[false; NODES_MAX]; NODES_MAX];
    }

    /// The cut links as a bitmask (bit `from * 8 + to`, node indexes) for the trace.
    pub fn cut_mask(&self) -> u64 {
        let mut mask = 0;
        for from in 0..NODES_MAX {
            for to in 0..NODES_MAX {
                if self.cut[from][to] {
                    mask |= 1 << (from * NODES_MAX + to);
                }
            }
        }
        mask
    }
}
