//! Node-to-node links of one shard: batching, framing, connecting, health and bounds.
//!
//! Group `g` lives on shard `g % shards` of every node, and every node has the same
//! number of shards, so shard `s` of one node only ever talks to shard `s` of the
//! others. Each shard runs one [`Transport`] inside its own glommio executor; it is
//! single-threaded (`Rc`, `RefCell`) and shares nothing with other shards. Shard `s`
//! listens for its peers on its own address (`peer_base_port + s` in the server).
//!
//! # Links and frames
//!
//! Every pair of nodes has two TCP connections per shard, one in each direction: this
//! side dials each peer and only writes on that connection (`link.rs`), and reads
//! whatever the peers dialled in (`inbound.rs`). During a loop turn the shard calls
//! [`Transport::send`] for each message; at the end of the turn, [`Transport::flush`]
//! hands each peer's messages to its writer, which sends them as **one** frame
//! (`frame::encode` of a FlatBuffers `PeerBatch` naming the cluster, the sending node,
//! and both shards). While the writer is still busy with an earlier frame, the turns
//! that end in the meantime merge into its next frame, in order: a slow link sends
//! fewer, larger frames, never more than one per turn. Each link reuses one
//! `FlatBufferBuilder` and one frame buffer. A frame is written whole; when a write
//! fails or makes no progress for `write_timeout`, the connection is closed and the
//! rest of that frame is never sent on another connection, so a peer never sees half a
//! frame followed by another.
//!
//! The reader checks everything that arrives before the shard sees it: the frame
//! length (against `frame_bytes_max`, before buffering), the crc, the FlatBuffers
//! verifier and codec checks, the cluster id, both shard numbers, that the sender is a
//! configured peer, that every message is addressed to this node, and that a
//! connection keeps speaking for the same node. A failed check closes that connection
//! and is counted; nothing on the wire can panic the transport or stop another link.
//! A peer's newer connection replaces its older one, which a restarted peer may leave
//! half-open.
//! Decoded batches go to the shard's loop through a bounded channel; when it is full,
//! the reader of that connection waits (and TCP pushes back on that peer only).
//!
//! # Health
//!
//! Each outbound link is [`Health::Healthy`] (connected, writes succeed),
//! [`Health::Probing`] (connecting or reconnecting) or [`Health::Down`]. A link starts
//! Probing. A lost connection moves it to Probing and is retried at once (the peer may
//! just have restarted); each failed attempt waits longer, from `backoff_min` doubling
//! up to `backoff_max`; after `failures_before_down` failed attempts in a row the link
//! is Down: its queue is cleared and new messages are dropped until an attempt
//! succeeds, which makes it Healthy again. A closed connection is noticed at the next
//! write that fails, so the batch or two written just before that are lost. A
//! connection whose data stays unacknowledged for `unacknowledged_timeout` (a cut
//! link: the kernel would otherwise keep retransmitting with a growing backoff and keep
//! the connection open past the heal) is aborted by the kernel and reconnected.
//!
//! # Bounds, and what is dropped
//!
//! | bound                     | what it limits                                          |
//! |---------------------------|---------------------------------------------------------|
//! | `queue_messages_max`      | messages per peer accepted and not yet written          |
//! | `queue_bytes_max`         | their encoded size (an upper bound of it, per message)  |
//! | `frame_bytes_max`         | a frame's payload, on both sides; the read buffer       |
//! | `inbound_batches_max`     | decoded batches waiting for the shard's loop            |
//! | `inbound_connections_max` | inbound connections open at once                        |
//!
//! `queue_bytes_max` plus a batch header must fit in `frame_bytes_max`, so everything a
//! peer's queue holds always fits in one frame. Raft tolerates lost messages (it resends
//! appends, heartbeats and votes on its own timers), so the transport never blocks the
//! shard and never retries: it drops, and counts in [`TransportStats`], a message sent
//! while its peer's queue is full, a message sent while its peer is Down, the queue of
//! a peer that goes Down, the batch whose write failed, and a message for a node that
//! is not a configured peer.
//!
//! # Use
//!
//! [`Transport::start`] must run inside the shard's glommio executor: it binds the
//! listener and spawns the tasks there. [`Transport::close`] stops them and closes every
//! socket; dropping the transport stops them too, without waiting.
//!
//! glommio 0.9 can park an executor for good while one of its tasks is runnable: when
//! the preemption timer fires between the run loop arming it and running the task
//! queues (the thread was descheduled that long, as on a loaded machine), the loop
//! reads "preempted before running anything" as "nothing to run". Executors that run a
//! transport should set `LocalExecutorBuilder::preempt_timer` far above any plausible
//! descheduling (the tests use 60 s); with one task queue per executor the timer has
//! no fairness to provide anyway.

mod health;
mod inbound;
mod link;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use thiserror::Error;

pub use self::health::Health;
use self::health::HealthTracker;
use self::inbound::InboundConnections;
pub use self::inbound::InboundRejection;
use self::link::{Link, PeerQueue, BATCH_HEADER_BYTES_BOUND, MESSAGE_BYTES_BOUND_FIXED};
use crate::codec::PeerBatch;
use crate::frame::FRAME_BYTES_MAX;
use crate::multiraft::GroupId;
use crate::raft::{Message, NodeId, NO_NODE};

/// Default of [`TransportConfig::queue_messages_max`]: a turn of a shard leading many
/// groups sends each peer one message per group, and a few turns may wait behind a slow
/// write.
pub const QUEUE_MESSAGES_MAX_DEFAULT: usize = 65_536;
/// Default of [`TransportConfig::queue_bytes_max`].
pub const QUEUE_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Default of [`TransportConfig::inbound_batches_max`].
pub const INBOUND_BATCHES_MAX_DEFAULT: usize = 256;
/// Default of [`TransportConfig::inbound_connections_max`]: a few per peer, so that
/// restarts and stale connections never lock a real peer out.
pub const INBOUND_CONNECTIONS_MAX_DEFAULT: usize = 64;
/// Default of [`TransportConfig::connect_timeout`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// Default of [`TransportConfig::write_timeout`].
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default of [`TransportConfig::unacknowledged_timeout`]: a few heartbeats, above an
/// election timeout at the default ticks. A link's heartbeats keep data in flight, so a
/// cut link holds unacknowledged data within one heartbeat.
pub const UNACKNOWLEDGED_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default of [`TransportConfig::backoff_min`].
pub const BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(10);
/// Default of [`TransportConfig::backoff_max`].
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(1);
/// Default of [`TransportConfig::failures_before_down`].
pub const FAILURES_BEFORE_DOWN_DEFAULT: u32 = 5;

const _: () = assert!(QUEUE_BYTES_MAX_DEFAULT + BATCH_HEADER_BYTES_BOUND <= FRAME_BYTES_MAX);

/// Everything one shard's transport needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Batches from any other cluster are refused.
    pub cluster_id: u64,
    /// This node; never [`NO_NODE`], never one of `peers`.
    pub node_id: NodeId,
    /// This shard (core index); the same on both ends of every link.
    pub shard: u32,
    /// This shard's peer address (port 0 picks a free one; see
    /// [`Transport::listen_address`]).
    pub listen: SocketAddr,
    /// Each peer node's address for this shard.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Messages per peer accepted and not yet written (pending, flushed, in flight).
    pub queue_messages_max: usize,
    /// Bytes of those messages, each counted by an upper bound of its encoded size.
    pub queue_bytes_max: usize,
    /// Largest frame payload sent or accepted; at most [`FRAME_BYTES_MAX`].
    pub frame_bytes_max: usize,
    /// Capacity of the channel of decoded inbound batches.
    pub inbound_batches_max: usize,
    /// Inbound connections open at once; more are closed as they are accepted.
    pub inbound_connections_max: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a write may make no progress before the connection is given up.
    pub write_timeout: Duration,
    /// How long sent data may stay unacknowledged by the peer's kernel before the
    /// connection is given up (`TCP_USER_TIMEOUT`). Without it a connection across a
    /// partition stays open, the kernel's retransmissions back off exponentially, and
    /// after the heal the link waits for the next retransmission: seconds after a long
    /// partition. With it the link reconnects (every `backoff_max` at most), so it is
    /// back within about `backoff_max` of the heal, however long the partition lasted.
    pub unacknowledged_timeout: Duration,
    /// Delay after the first failed connection attempt; it doubles with each failure.
    pub backoff_min: Duration,
    /// Longest delay between connection attempts.
    pub backoff_max: Duration,
    /// Failed connection attempts in a row that make a link Down.
    pub failures_before_down: u32,
}

impl TransportConfig {
    /// A configuration with the default bounds and timings.
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        shard: u32,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            shard,
            listen,
            peers,
            queue_messages_max: QUEUE_MESSAGES_MAX_DEFAULT,
            queue_bytes_max: QUEUE_BYTES_MAX_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX,
            inbound_batches_max: INBOUND_BATCHES_MAX_DEFAULT,
            inbound_connections_max: INBOUND_CONNECTIONS_MAX_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            write_timeout: WRITE_TIMEOUT_DEFAULT,
            unacknowledged_timeout: UNACKNOWLEDGED_TIMEOUT_DEFAULT,
            backoff_min: BACKOFF_MIN_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            failures_before_down: FAILURES_BEFORE_DOWN_DEFAULT,
        }
    }

    /// Checks the relations the transport relies on.
    pub fn validate(&self) -> Result<(), TransportError> {
        let invalid = |reason: String| Err(TransportError::InvalidConfig(reason));
        if self.node_id == NO_NODE {
            return invalid("node_id is the \"no node\" id 0".into());
        }
        if self.peers.contains_key(&NO_NODE) {
            return invalid("a peer has the \"no node\" id 0".into());
        }
        if self.peers.contains_key(&self.node_id) {
            return invalid(format!("node {} is listed as its own peer", self.node_id));
        }
        if self.queue_messages_max == 0 || self.inbound_batches_max == 0 {
            return invalid("queue_messages_max and inbound_batches_max must be positive".into());
        }
        if self.inbound_connections_max == 0 {
            return invalid("inbound_connections_max must be positive".into());
        }
        if self.frame_bytes_max > FRAME_BYTES_MAX {
            return invalid(format!(
                "frame_bytes_max {} is over the frame layer's maximum {FRAME_BYTES_MAX}",
                self.frame_bytes_max
            ));
        }
        if self.queue_bytes_max < MESSAGE_BYTES_BOUND_FIXED
            || self.queue_bytes_max + BATCH_HEADER_BYTES_BOUND > self.frame_bytes_max
        {
            return invalid(format!(
                "queue_bytes_max {} must hold a message ({MESSAGE_BYTES_BOUND_FIXED} bytes) \
                 and leave {BATCH_HEADER_BYTES_BOUND} bytes of frame_bytes_max {} for the \
                 batch header",
                self.queue_bytes_max, self.frame_bytes_max
            ));
        }
        if self.connect_timeout.is_zero()
            || self.write_timeout.is_zero()
            || self.unacknowledged_timeout.is_zero()
        {
            return invalid(
                "connect_timeout, write_timeout and unacknowledged_timeout must be positive".into(),
            );
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return invalid("backoff_min must be positive and at most backoff_max".into());
        }
        if self.failures_before_down == 0 {
            return invalid("failures_before_down must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a transport could not start.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("invalid transport config: {0}")]
    InvalidConfig(String),
    #[error("cannot listen for peers on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
}

/// Counters of one transport since it started (and, where noted, current amounts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames written whole, the messages in them, and their bytes (headers included).
    pub batches_sent: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Frames accepted and handed to the shard, their messages and bytes.
    pub batches_received: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Messages refused because their peer's queue was at a bound.
    pub messages_dropped_queue_full: u64,
    /// Messages sent while their peer was Down, and queues cleared when it went Down.
    pub messages_dropped_peer_down: u64,
    /// Messages of batches whose write failed, or sent after the transport was closed,
    /// or still queued when it closed.
    pub messages_dropped_unsent: u64,
    /// Messages addressed to a node that is not a configured peer.
    pub messages_dropped_unknown_peer: u64,
    /// Messages and bytes waiting in all queues now (not counters).
    pub messages_queued: u64,
    pub bytes_queued: u64,
    /// Successful connection attempts; those after a link's first one are also
    /// counted as reconnects.
    pub connects: u64,
    pub reconnects: u64,
    /// Failed connection attempts (refused, unreachable, timed out).
    pub connect_failures: u64,
    /// Outbound connections given up after a failed write.
    pub connections_lost: u64,
    /// Inbound connections accepted, and closed at once because of the bound.
    pub inbound_connections_accepted: u64,
    pub inbound_connections_refused: u64,
    /// Inbound connections closed because of what they sent (see [`InboundRejection`]).
    pub inbound_frames_rejected: u64,
    /// Inbound connections that ended in the middle of a frame.
    pub inbound_connections_truncated: u64,
    /// Inbound connections that failed to read (reset, ...).
    pub inbound_connections_failed: u64,
    /// Inbound connections closed because their peer opened a newer one.
    pub inbound_connections_replaced: u64,
    /// Inbound connections open now (not a counter).
    pub inbound_connections_open: u64,
    /// Errors accepting connections (out of descriptors, ...).
    pub inbound_accept_errors: u64,
}

impl TransportStats {
    /// Every message dropped, whatever the reason.
    pub fn messages_dropped(&self) -> u64 {
        self.messages_dropped_queue_full
            + self.messages_dropped_peer_down
            + self.messages_dropped_unsent
            + self.messages_dropped_unknown_peer
    }
}

/// A spawned task with a stop signal: it runs until its body ends or the signal's sender
/// is dropped, whichever comes first. Stopping drops the body inside the task (closing
/// its sockets) before the task finishes, so awaiting the handle after a stop means the
/// sockets are closed.
#[derive(Debug)]
pub(crate) struct StoppableTask {
    stop: Option<LocalSender<()>>,
    task: Option<JoinHandle<()>>,
}

impl StoppableTask {
    /// Spawns `body` on the current executor.
    pub(crate) fn spawn(body: impl Future<Output = ()> + 'static) -> StoppableTask {
        // Nothing is ever sent: dropping the sender is the signal.
        let (stop, stopped) = local_channel::new_bounded::<()>(1);
        let task = glommio::spawn_local(futures_lite::future::or(body, async move {
            // `None` once the sender is dropped.
            let _ = stopped.recv().await;
        }))
        .detach();
        StoppableTask {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals the task to stop and returns its handle (once) to await its end.
    pub(crate) fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.stop = None;
        self.task.take()
    }
}

/// What the transport and its tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    stats: RefCell<TransportStats>,
    pub(crate) inbound: RefCell<InboundConnections>,
    /// Why the last inbound connection closed by this side was closed.
    pub(crate) last_rejection: RefCell<Option<InboundRejection>>,
}

impl Shared {
    pub(crate) fn count(&self, update: impl FnOnce(&mut TransportStats)) {
        update(&mut self.stats.borrow_mut());
    }
}

/// The transport's side of one outbound link.
#[derive(Debug)]
struct LinkHandle {
    link: Rc<Link>,
    /// Rung after a flush that gave the writer work; capacity one, as one ring is
    /// enough for the writer to find everything flushed.
    doorbell: LocalSender<()>,
    writer: RefCell<StoppableTask>,
}

/// The node-to-node transport of one shard. See the module documentation.
#[derive(Debug)]
pub struct Transport {
    shared: Rc<Shared>,
    links: BTreeMap<NodeId, LinkHandle>,
    acceptor: RefCell<StoppableTask>,
    listen_address: SocketAddr,
    closed: Cell<bool>,
}

impl Transport {
    /// Binds the listener and spawns the accept task and one writer task per peer on the
    /// current glommio executor (it panics outside one). Inbound batches arrive,
    /// verified and decoded, on the returned receiver, which holds at most
    /// `inbound_batches_max` of them.
    pub fn start(
        config: TransportConfig,
    ) -> Result<(Transport, LocalReceiver<PeerBatch>), TransportError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen).map_err(|error| TransportError::Listen {
                address: config.listen,
                source: error.into(),
            })?;
        let listen_address = listener
            .local_addr()
            .map_err(|error| TransportError::Listen {
                address: config.listen,
                source: error.into(),
            })?;
        let (sender, receiver) = local_channel::new_bounded(config.inbound_batches_max);
        let shared = Rc::new(Shared {
            config,
            stats: RefCell::new(TransportStats::default()),
            inbound: RefCell::new(InboundConnections::default()),
            last_rejection: RefCell::new(None),
        });
        let config = &shared.config;
        let links = config
            .peers
            .iter()
            .map(|(&peer, &address)| {
                let link = Rc::new(Link::new(
                    address,
                    PeerQueue::new(config.queue_messages_max, config.queue_bytes_max),
                    HealthTracker::new(config.failures_before_down),
                ));
                let (doorbell, rings) = local_channel::new_bounded(1);
                let writer = StoppableTask::spawn(link::run_writer(
                    Rc::clone(&shared),
                    Rc::clone(&link),
                    rings,
                ));
                let handle = LinkHandle {
                    link,
                    doorbell,
                    writer: RefCell::new(writer),
                };
                (peer, handle)
            })
            .collect();
        let acceptor = StoppableTask::spawn(inbound::run_acceptor(
            Rc::clone(&shared),
            listener,
            Rc::new(sender),
        ));
        let transport = Transport {
            shared,
            links,
            acceptor: RefCell::new(acceptor),
            listen_address,
            closed: Cell::new(false),
        };
        Ok((transport, receiver))
    }

    /// The address the listener is bound to (with the port chosen when `listen` had 0).
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_address
    }

    /// Queues `message` for `message.to`, to leave at the next [`Transport::flush`].
    /// Never blocks: over a bound, to a peer that is Down, or to an unknown node, the
    /// message is dropped and counted (Raft resends what matters).
    pub fn send(&self, group: GroupId, message: Message) {
        let Some(handle) = self.links.get(&message.to) else {
            self.shared
                .count(|stats| stats.messages_dropped_unknown_peer += 1);
            return;
        };
        if self.closed.get() {
            self.shared
                .count(|stats| stats.messages_dropped_unsent += 1);
            return;
        }
        if handle.link.health() == Health::Down {
            self.shared
                .count(|stats| stats.messages_dropped_peer_down += 1);
            return;
        }
        let bytes = link::message_bytes_bound(&message);
        if !handle.link.queue.borrow_mut().push(group, message, bytes) {
            self.shared
                .count(|stats| stats.messages_dropped_queue_full += 1);
        }
    }

    /// Ends the loop turn: every peer with messages queued since the last flush gets
    /// them in one frame (merged with earlier turns the writer has not reached yet).
    pub fn flush(&self) {
        for handle in self.links.values() {
            if handle.link.queue.borrow_mut().flush() {
                // Full means a ring is already waiting, which is enough.
                let _ = handle.doorbell.try_send(());
            }
        }
    }

    /// The health of the link to `peer`, or `None` when it is not a configured peer.
    pub fn health(&self, peer: NodeId) -> Option<Health> {
        self.links.get(&peer).map(|handle| handle.link.health())
    }

    /// The configured peers, in ascending order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.links.keys().copied()
    }

    /// The counters, and the amounts queued now.
    pub fn stats(&self) -> TransportStats {
        let mut stats = *self.shared.stats.borrow();
        for handle in self.links.values() {
            let queue = handle.link.queue.borrow();
            stats.messages_queued += queue.messages() as u64;
            stats.bytes_queued += queue.bytes() as u64;
        }
        stats.inbound_connections_open = self.shared.inbound.borrow().len() as u64;
        stats
    }

    /// Why the last inbound connection this side closed was refused (the counters say
    /// how many were).
    pub fn last_inbound_rejection(&self) -> Option<InboundRejection> {
        self.shared.last_rejection.borrow().clone()
    }

    /// Stops every task and waits until they are gone, which closes the listener and
    /// every connection. Messages still queued are dropped and counted; later sends are
    /// dropped too.
    pub async fn close(&self) {
        self.closed.set(true);
        // The acceptor first, so that no reader starts after the readers are stopped.
        let acceptor = self.acceptor.borrow_mut().stop();
        if let Some(task) = acceptor {
            task.await;
        }
        let readers = self.shared.inbound.borrow_mut().take_all();
        let mut tasks: Vec<JoinHandle<()>> = readers
            .into_iter()
            .filter_map(|mut reader| reader.stop())
            .collect();
        tasks.extend(
            self.links
                .values()
                .filter_map(|handle| handle.writer.borrow_mut().stop()),
        );
        for task in tasks {
            task.await;
        }
        for handle in self.links.values() {
            let mut queue = handle.link.queue.borrow_mut();
            // The writers are gone: nothing is in flight any more.
            queue.finish_in_flight();
            let dropped = queue.clear() as u64;
            self.shared
                .count(|stats| stats.messages_dropped_unsent += dropped);
        }
    }
}

impl Drop for Transport {
    /// Stops the tasks without waiting: they hold the shared state, so without the
    /// signal they would outlive the transport.
    fn drop(&mut self) {
        self.acceptor.get_mut().stop();
        if let Ok(mut inbound) = self.shared.inbound.try_borrow_mut() {
            for mut reader in inbound.take_all() {
                reader.stop();
            }
        }
        for handle in self.links.values() {
            handle.writer.borrow_mut().stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
        TransportConfig::new(1, 1, 0, address, BTreeMap::from([(2, address)]))
    }

    // The defaults are valid, and each relation the transport relies on is enforced.
    #[test]
    fn config_validation() {
        assert!(config().validate().is_ok());
        type Corruption = fn(&mut TransportConfig);
        let cases: [(Corruption, &str); 9] = [
            (|c| c.node_id = 0, "node_id"),
            (|c| c.node_id = 2, "own peer"),
            (|c| c.queue_messages_max = 0, "queue_messages_max"),
            (
                |c| c.frame_bytes_max = FRAME_BYTES_MAX + 1,
                "frame_bytes_max",
            ),
            (|c| c.queue_bytes_max = c.frame_bytes_max, "batch header"),
            (|c| c.queue_bytes_max = 100, "hold a message"),
            (|c| c.connect_timeout = Duration::ZERO, "connect_timeout"),
            (|c| c.backoff_min = c.backoff_max * 2, "backoff_min"),
            (|c| c.failures_before_down = 0, "failures_before_down"),
        ];
        for (corrupt, expected) in cases {
            let mut config = config();
            corrupt(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
