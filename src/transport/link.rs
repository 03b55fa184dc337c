//! The outbound link to one peer shard: its bounded queue of messages waiting to be
//! written, and the writer task that connects (with a timeout and backoff), reports to
//! the link's health, and writes each flushed batch as one whole frame.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use futures_lite::io::AsyncWriteExt;
use glommio::channels::local_channel::LocalReceiver;
use glommio::net::TcpStream;

use super::health::{backoff_delay, Health, HealthTracker};
use super::Shared;
use crate::codec::{self, PeerBatch};
use crate::frame;
use crate::multiraft::GroupId;
use crate::raft::Message;

/// An upper bound on the bytes a batch takes around its messages: the root offset, the
/// `PeerBatch` table and its vtable, the messages vector's length, and alignment.
pub(crate) const BATCH_HEADER_BYTES_BOUND: usize = 128;

/// An upper bound on the bytes one message takes in a batch, apart from its entries and
/// snapshot chunk: its slot in the messages vector, the `GroupMessage` table, the
/// `Message` table with every field present, both vtables, the entries vector's length,
/// and alignment. The writer asserts that every batch stays under the sum of the bounds.
pub(crate) const MESSAGE_BYTES_BOUND_FIXED: usize = 256;

/// An upper bound on the bytes of one entry apart from its payload: its slot in the
/// entries vector, the `Entry` table and vtable, the payload's length, and alignment.
const ENTRY_BYTES_BOUND_FIXED: usize = 64;

/// An upper bound on the bytes of a snapshot chunk apart from its data and membership
/// ids: the chunk, meta and membership tables with their vtables, vector lengths, and
/// alignment.
const SNAPSHOT_BYTES_BOUND_FIXED: usize = 256;

/// Bytes of one node id in a membership vector.
const NODE_ID_BYTES: usize = 8;

/// Buffers that grew past this size for a large batch are given back after it, so that
/// one large snapshot chunk does not pin its memory for the life of the link.
const BUFFER_BYTES_RETAINED: usize = 1 << 20;

/// What the writer's buffers start with; most batches fit.
const BUFFER_BYTES_INITIAL: usize = 64 << 10;

/// An upper bound on the bytes `message` adds to an encoded batch. The queue counts
/// messages by this bound, so that a batch of everything the queue holds always fits
/// in one frame (see `TransportConfig::validate`).
pub(crate) fn message_bytes_bound(message: &Message) -> usize {
    let entries_bytes: usize = message
        .entries
        .iter()
        .map(|entry| ENTRY_BYTES_BOUND_FIXED + entry.data.len())
        .sum();
    let snapshot_bytes = message.snapshot.as_ref().map_or(0, |chunk| {
        let conf = &chunk.meta.conf;
        SNAPSHOT_BYTES_BOUND_FIXED
            + chunk.data.len()
            + NODE_ID_BYTES * (conf.voters.len() + conf.learners.len())
    });
    MESSAGE_BYTES_BOUND_FIXED + entries_bytes + snapshot_bytes
}

/// The messages for one peer that were accepted and are not yet written or dropped.
///
/// They move through three stages: `pending` (sent during the current loop turn),
/// `flushed` (the turn ended; waiting for the writer) and in flight (taken by the
/// writer, being encoded and written). The bounds cover all three together, so a
/// writer that cannot keep up makes `send` drop new messages instead of growing.
#[derive(Debug)]
pub(crate) struct PeerQueue {
    pending: Vec<(GroupId, Message)>,
    pending_bytes: usize,
    flushed: Vec<(GroupId, Message)>,
    flushed_bytes: usize,
    in_flight_messages: usize,
    in_flight_bytes: usize,
    messages_max: usize,
    bytes_max: usize,
}

impl PeerQueue {
    pub(crate) fn new(messages_max: usize, bytes_max: usize) -> PeerQueue {
        assert!(messages_max > 0 && bytes_max > 0);
        PeerQueue {
            pending: Vec::new(),
            pending_bytes: 0,
            flushed: Vec::new(),
            flushed_bytes: 0,
            in_flight_messages: 0,
            in_flight_bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    /// Messages accepted and neither written nor dropped yet.
    pub(crate) fn messages(&self) -> usize {
        self.pending.len() + self.flushed.len() + self.in_flight_messages
    }

    /// Bytes (counted by [`message_bytes_bound`]) of those messages.
    pub(crate) fn bytes(&self) -> usize {
        self.pending_bytes + self.flushed_bytes + self.in_flight_bytes
    }

    /// Accepts a message of `bytes` bytes for the current turn, or refuses it (and
    /// drops it) when either bound would be exceeded.
    pub(crate) fn push(&mut self, group: GroupId, message: Message, bytes: usize) -> bool {
        if self.messages() + 1 > self.messages_max || self.bytes() + bytes > self.bytes_max {
            return false;
        }
        self.pending.push((group, message));
        self.pending_bytes += bytes;
        debug_assert!(self.messages() <= self.messages_max && self.bytes() <= self.bytes_max);
        true
    }

    /// Ends the turn: what was sent during it becomes ready for the writer, behind what
    /// earlier turns flushed. Returns whether anything was moved.
    pub(crate) fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.flushed.append(&mut self.pending);
        self.flushed_bytes += mem::take(&mut self.pending_bytes);
        true
    }

    /// Hands everything flushed to the writer as one batch: swaps it into `batch`
    /// (which must be empty; its allocation is kept for the next turns) and returns its
    /// bytes, or returns `None` when nothing is flushed. One batch at most is in flight.
    pub(crate) fn take_flushed(&mut self, batch: &mut Vec<(GroupId, Message)>) -> Option<usize> {
        assert!(
            batch.is_empty(),
            "the writer's batch vector is returned empty"
        );
        assert_eq!(self.in_flight_messages, 0, "one batch in flight at a time");
        if self.flushed.is_empty() {
            return None;
        }
        mem::swap(&mut self.flushed, batch);
        self.in_flight_messages = batch.len();
        self.in_flight_bytes = mem::take(&mut self.flushed_bytes);
        Some(self.in_flight_bytes)
    }

    /// The batch in flight was written, or dropped: it no longer counts.
    pub(crate) fn finish_in_flight(&mut self) {
        self.in_flight_messages = 0;
        self.in_flight_bytes = 0;
    }

    /// Drops every message not in flight (pending and flushed) and returns how many.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.pending.len() + self.flushed.len();
        self.pending.clear();
        self.flushed.clear();
        self.pending_bytes = 0;
        self.flushed_bytes = 0;
        dropped
    }
}

/// The state of one outbound link shared by the transport (which queues and flushes)
/// and the link's writer task.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) address: SocketAddr,
    pub(crate) queue: RefCell<PeerQueue>,
    health: Cell<HealthTracker>,
    ever_connected: Cell<bool>,
}

impl Link {
    pub(crate) fn new(address: SocketAddr, queue: PeerQueue, health: HealthTracker) -> Link {
        Link {
            address,
            queue: RefCell::new(queue),
            health: Cell::new(health),
            ever_connected: Cell::new(false),
        }
    }

    pub(crate) fn health(&self) -> Health {
        self.health.get().health()
    }

    fn update_health<T>(&self, update: impl FnOnce(&mut HealthTracker) -> T) -> T {
        let mut tracker = self.health.get();
        let result = update(&mut tracker);
        self.health.set(tracker);
        result
    }
}

/// Why the writer left a connection.
#[derive(Debug)]
enum ConnectionEnd {
    /// A write failed or timed out; the connection is closed and the link reconnects.
    WriteFailed,
    /// The transport is gone (its doorbell was dropped): the writer stops.
    TransportGone,
}

/// The writer's reusable encoding state: one builder and one frame buffer per link.
struct Encoder {
    builder: FlatBufferBuilder<'static>,
    frame: Vec<u8>,
    batch: PeerBatch,
}

impl Encoder {
    /// Encodes `self.batch` as one frame into `self.frame`, or returns `None` when the
    /// frame would exceed `frame_bytes_max`. `bytes_bound` is what the queue counted for
    /// these messages; the encoded batch must stay under it plus the header's bound.
    fn encode(&mut self, frame_bytes_max: usize, bytes_bound: usize) -> Option<()> {
        self.frame.clear();
        let payload = codec::encode_peer_batch(&mut self.builder, &self.batch);
        debug_assert!(
            payload.len() <= bytes_bound + BATCH_HEADER_BYTES_BOUND,
            "batch of {} bytes is over its bound of {} bytes",
            payload.len(),
            bytes_bound + BATCH_HEADER_BYTES_BOUND
        );
        if payload.len() > frame_bytes_max {
            return None;
        }
        frame::encode(&mut self.frame, payload).ok()
    }

    /// Gives back memory that grew for an unusually large batch.
    fn shrink(&mut self) {
        if self.frame.capacity() > BUFFER_BYTES_RETAINED {
            self.frame = Vec::with_capacity(BUFFER_BYTES_INITIAL);
            self.builder = FlatBufferBuilder::with_capacity(BUFFER_BYTES_INITIAL);
        }
    }
}

/// The writer task of one link: connect, write batches until a write fails, reconnect;
/// runs until the transport stops it (or is dropped).
pub(crate) async fn run_writer(shared: Rc<Shared>, link: Rc<Link>, doorbell: LocalReceiver<()>) {
    let config = &shared.config;
    let mut encoder = Encoder {
        builder: FlatBufferBuilder::with_capacity(BUFFER_BYTES_INITIAL),
        frame: Vec::with_capacity(BUFFER_BYTES_INITIAL),
        batch: PeerBatch {
            cluster_id: config.cluster_id,
            from_node: config.node_id,
            from_shard: config.shard,
            to_shard: config.shard,
            messages: Vec::new(),
        },
    };
    loop {
        match connect(link.address, config).await {
            Ok(mut stream) => {
                link.update_health(HealthTracker::on_connected);
                let reconnect = link.ever_connected.replace(true);
                shared.count(|stats| {
                    stats.connects += 1;
                    stats.reconnects += u64::from(reconnect);
                });
                match write_batches(&shared, &link, &mut stream, &doorbell, &mut encoder).await {
                    ConnectionEnd::TransportGone => return,
                    ConnectionEnd::WriteFailed => {
                        link.update_health(HealthTracker::on_connection_lost);
                        shared.count(|stats| stats.connections_lost += 1);
                    }
                }
                // Dropping the stream closes the connection: whatever part of a frame
                // reached the peer is discarded by its reader with the connection.
            }
            Err(_) => {
                let became_down = link.update_health(HealthTracker::on_connect_failed);
                shared.count(|stats| stats.connect_failures += 1);
                if became_down {
                    // Down: nothing queued will be delivered soon, and Raft resends
                    // what still matters once the peer is back.
                    let dropped = link.queue.borrow_mut().clear();
                    shared.count(|stats| stats.messages_dropped_peer_down += dropped as u64);
                }
            }
        }
        let failures = link.health.get().consecutive_failures();
        let delay = backoff_delay(failures, config.backoff_min, config.backoff_max);
        if !delay.is_zero() {
            glommio::timer::sleep(delay).await;
        }
    }
}

/// Opens a connection to `address` within the connect timeout, set up for writing
/// frames: no Nagle delay (a batch is already one write) and a bound on how long a
/// write may make no progress.
async fn connect(address: SocketAddr, config: &super::TransportConfig) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(address, config.connect_timeout).await?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(config.write_timeout))?;
    crate::tcp::set_unacknowledged_timeout(&stream, config.unacknowledged_timeout)?;
    Ok(stream)
}

/// Writes every flushed batch as one frame, waiting for the doorbell when there is
/// none, until a write fails or the transport goes away.
async fn write_batches(
    shared: &Shared,
    link: &Link,
    stream: &mut TcpStream,
    doorbell: &LocalReceiver<()>,
    encoder: &mut Encoder,
) -> ConnectionEnd {
    let config = &shared.config;
    loop {
        // The queue is checked before waiting, so a ring that arrived while the link
        // was reconnecting (or several turns' worth) is never needed to find work.
        let bytes_bound = loop {
            let taken = link
                .queue
                .borrow_mut()
                .take_flushed(&mut encoder.batch.messages);
            if let Some(bytes) = taken {
                break bytes;
            }
            if doorbell.recv().await.is_none() {
                return ConnectionEnd::TransportGone;
            }
        };
        let message_count = encoder.batch.messages.len() as u64;
        let encoded = encoder.encode(config.frame_bytes_max, bytes_bound);
        // The messages are encoded (or cannot be): the vector goes back empty, keeping
        // its allocation for the next batch.
        encoder.batch.messages.clear();
        if encoded.is_none() {
            link.queue.borrow_mut().finish_in_flight();
            shared.count(|stats| stats.messages_dropped_unsent += message_count);
            continue;
        }
        let result = stream.write_all(&encoder.frame).await;
        link.queue.borrow_mut().finish_in_flight();
        let frame_bytes = encoder.frame.len() as u64;
        encoder.shrink();
        match result {
            Ok(()) => shared.count(|stats| {
                stats.batches_sent += 1;
                stats.messages_sent += message_count;
                stats.bytes_sent += frame_bytes;
            }),
            Err(_) => {
                // Part of the frame may have left: the connection is closed, never
                // resumed, so the peer cannot see half a frame followed by another.
                shared.count(|stats| stats.messages_dropped_unsent += message_count);
                return ConnectionEnd::WriteFailed;
            }
        }
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::raft::{ConfState, Entry, EntryKind, MessageKind, SnapshotChunk, SnapshotMeta};

    fn message(kind: MessageKind) -> Message {
        let mut message = Message::new(kind, u64::MAX, u64::MAX, u64::MAX);
        message.log_term = u64::MAX;
        message.index = u64::MAX;
        message.commit = u64::MAX;
        message.reject = true;
        message.reject_hint = u64::MAX;
        message.context = u64::MAX;
        message
    }

    // The byte bound of a message is never below its real encoded size, for every
    // shape a message takes, alone or many in a batch.
    #[test]
    fn byte_bound_covers_the_encoded_size() {
        let mut append = message(MessageKind::Append);
        append.index = 0;
        append.entries = (1..=20u64)
            .map(|index| Entry {
                term: u64::MAX,
                index,
                kind: EntryKind::ConfChange,
                data: Arc::from(vec![7u8; (index * 13 % 31) as usize]),
            })
            .collect();
        let mut snapshot = message(MessageKind::Snapshot);
        snapshot.snapshot = Some(SnapshotChunk {
            meta: SnapshotMeta {
                index: u64::MAX,
                term: u64::MAX,
                conf: ConfState {
                    voters: (1..=7).collect(),
                    learners: (8..=11).collect(),
                },
            },
            offset: 3,
            total_bytes: u64::MAX,
            data: Arc::from(vec![1u8; 1001]),
        });
        let samples = [message(MessageKind::Heartbeat), append, snapshot];
        for sample in &samples {
            for count in [1, 2, 100] {
                let batch = PeerBatch {
                    cluster_id: u64::MAX,
                    from_node: u64::MAX,
                    from_shard: u32::MAX,
                    to_shard: u32::MAX,
                    messages: (0..count).map(|_| (u64::MAX, sample.clone())).collect(),
                };
                let encoded = codec::peer_batch_to_bytes(&batch).len();
                let bound = BATCH_HEADER_BYTES_BOUND + count * message_bytes_bound(sample);
                assert!(
                    encoded <= bound,
                    "{:?} x{count}: {encoded} > {bound}",
                    sample.kind
                );
            }
        }
    }

    // The queue refuses the message that would cross either bound, counts every stage
    // (pending, flushed, in flight) against them, and frees room only when the writer
    // finishes a batch or the queue is cleared.
    #[test]
    fn queue_bounds_cover_every_stage() {
        let heartbeat = message(MessageKind::Heartbeat);
        let mut queue = PeerQueue::new(3, 1000);
        assert!(queue.push(1, heartbeat.clone(), 300));
        assert!(queue.push(2, heartbeat.clone(), 300));
        assert!(
            !queue.push(3, heartbeat.clone(), 401),
            "over the byte bound"
        );
        assert!(queue.flush());
        assert!(!queue.flush(), "nothing new this turn");
        let mut batch = Vec::new();
        assert_eq!(queue.take_flushed(&mut batch), Some(600));
        assert_eq!(
            batch.iter().map(|(group, _)| *group).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(queue.push(3, heartbeat.clone(), 400));
        assert!(
            !queue.push(4, heartbeat.clone(), 1),
            "over the message bound"
        );
        assert_eq!((queue.messages(), queue.bytes()), (3, 1000));
        batch.clear();
        queue.finish_in_flight();
        assert_eq!((queue.messages(), queue.bytes()), (1, 400));
        assert_eq!(queue.take_flushed(&mut batch), None, "3 is not flushed yet");
        assert!(queue.push(4, heartbeat.clone(), 100));
        assert!(queue.flush());
        assert_eq!(queue.clear(), 2);
        assert_eq!((queue.messages(), queue.bytes()), (0, 0));
    }

    // Batches of several turns waiting for the writer leave as one, in turn order.
    #[test]
    fn turns_waiting_for_the_writer_merge_in_order() {
        let heartbeat = message(MessageKind::Heartbeat);
        let mut queue = PeerQueue::new(100, 100_000);
        for turn in 0..3u64 {
            for group in 0..2u64 {
                assert!(queue.push(turn * 10 + group, heartbeat.clone(), 10));
            }
            assert!(queue.flush());
        }
        let mut batch = Vec::new();
        assert_eq!(queue.take_flushed(&mut batch), Some(60));
        let groups: Vec<_> = batch.iter().map(|(group, _)| *group).collect();
        assert_eq!(groups, [0, 1, 10, 11, 20, 21]);
    }
}
