//! The listener for peer shards and the reader of each inbound connection: reads
//! frames into a bounded buffer, verifies and decodes each batch, checks that it is
//! meant for this cluster, node and shard, and hands it to the shard's loop. Anything
//! wrong closes that one connection; every other link keeps running.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures_lite::io::AsyncReadExt;
use glommio::channels::local_channel::LocalSender;
use glommio::net::{TcpListener, TcpStream};
use thiserror::Error;

use super::{Shared, StoppableTask};
use crate::codec::{self, CodecError, PeerBatch};
use crate::frame::{self, FrameError, FRAME_HEADER_BYTES};
use crate::raft::NodeId;

/// What a reader's buffer starts with, and what it returns to once a larger frame has
/// been consumed; most batches fit.
const READ_BUFFER_BYTES_INITIAL: usize = 64 << 10;

/// Why an inbound connection was closed by this side.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InboundRejection {
    /// The frame layer refused the stream: a length over `frame_bytes_max` or a bad crc.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The payload is not a valid peer batch (verifier or codec checks).
    #[error("bad peer batch: {0}")]
    Batch(#[from] CodecError),
    /// The batch comes from another cluster.
    #[error("batch from cluster {actual}, this is cluster {expected}")]
    WrongCluster { expected: u64, actual: u64 },
    /// The batch was sent by, or to, another shard than this one.
    #[error("batch from shard {from_shard} to shard {to_shard}, this is shard {expected}")]
    WrongShard {
        expected: u32,
        from_shard: u32,
        to_shard: u32,
    },
    /// The sender is not one of this shard's configured peers.
    #[error("batch from node {node}, which is not a configured peer")]
    UnknownNode { node: NodeId },
    /// A message in the batch is addressed to another node.
    #[error("message for node {to}, this is node {expected}")]
    WrongDestination { expected: NodeId, to: NodeId },
    /// The connection's first batch came from one node and a later one from another.
    #[error("connection from node {first} sent a batch from node {later}")]
    NodeChanged { first: NodeId, later: NodeId },
}

/// How a reader finished.
#[derive(Debug)]
enum ReaderEnd {
    /// The peer closed the connection between two frames.
    Closed,
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// Reading failed (reset, ...).
    Failed,
    /// This side refused what the peer sent.
    Rejected(InboundRejection),
    /// The shard's loop dropped its receiver: nobody is listening any more.
    ReceiverGone,
}

/// The open inbound connections, so that their number is bounded, a peer's newer
/// connection replaces its older one, and the transport can stop them all.
#[derive(Debug, Default)]
pub(crate) struct InboundConnections {
    next_id: u64,
    open: BTreeMap<u64, OpenConnection>,
    /// The connection currently serving each peer that identified itself.
    by_node: BTreeMap<NodeId, u64>,
}

#[derive(Debug)]
struct OpenConnection {
    node: Option<NodeId>,
    /// `None` only between the registration and the spawn, which happen in one go.
    task: Option<StoppableTask>,
}

impl InboundConnections {
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// Takes every reader out, for the transport to stop them.
    pub(crate) fn take_all(&mut self) -> Vec<StoppableTask> {
        self.by_node.clear();
        let open = std::mem::take(&mut self.open);
        open.into_values()
            .filter_map(|connection| connection.task)
            .collect()
    }

    /// Records that `id` carries batches from `node`; returns the reader of the
    /// connection it replaces, if any. A peer only opens a new connection after giving
    /// up on its old one, so the old one is stale even if this side has not noticed.
    fn identify(&mut self, id: u64, node: NodeId) -> Option<StoppableTask> {
        if let Some(connection) = self.open.get_mut(&id) {
            connection.node = Some(node);
        }
        let previous = self.by_node.insert(node, id)?;
        if previous == id {
            return None;
        }
        self.open.remove(&previous)?.task
    }

    /// Forgets connection `id` once its reader has finished.
    fn remove(&mut self, id: u64) {
        if let Some(connection) = self.open.remove(&id) {
            if let Some(node) = connection.node {
                if self.by_node.get(&node) == Some(&id) {
                    self.by_node.remove(&node);
                }
            }
        }
    }
}

/// Accepts peer connections until stopped, each read by its own task.
pub(crate) async fn run_acceptor(
    shared: Rc<Shared>,
    listener: TcpListener,
    sender: Rc<LocalSender<PeerBatch>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(_) => {
                // Out of descriptors or memory, most likely: wait instead of spinning,
                // the condition may pass.
                shared.count(|stats| stats.inbound_accept_errors += 1);
                glommio::timer::sleep(shared.config.backoff_min).await;
                continue;
            }
        };
        let mut connections = shared.inbound.borrow_mut();
        if connections.len() >= shared.config.inbound_connections_max {
            drop(stream);
            shared.count(|stats| stats.inbound_connections_refused += 1);
            continue;
        }
        let id = connections.next_id;
        connections.next_id += 1;
        connections.open.insert(
            id,
            OpenConnection {
                node: None,
                task: None,
            },
        );
        // The task starts running only after this function yields, so it always finds
        // its own registration.
        let task = StoppableTask::spawn(run_reader(
            Rc::clone(&shared),
            stream,
            id,
            Rc::clone(&sender),
        ));
        if let Some(connection) = connections.open.get_mut(&id) {
            connection.task = Some(task);
        }
        drop(connections);
        shared.count(|stats| stats.inbound_connections_accepted += 1);
    }
}

/// Reads one connection to its end, then counts how it ended and forgets it.
async fn run_reader(
    shared: Rc<Shared>,
    stream: TcpStream,
    id: u64,
    sender: Rc<LocalSender<PeerBatch>>,
) {
    let end = read_batches(&shared, stream, id, &sender).await;
    shared.count(|stats| match end {
        ReaderEnd::Closed | ReaderEnd::ReceiverGone => {}
        ReaderEnd::Truncated => stats.inbound_connections_truncated += 1,
        ReaderEnd::Failed => stats.inbound_connections_failed += 1,
        ReaderEnd::Rejected(_) => stats.inbound_frames_rejected += 1,
    });
    if let ReaderEnd::Rejected(rejection) = end {
        *shared.last_rejection.borrow_mut() = Some(rejection);
    }
    shared.inbound.borrow_mut().remove(id);
}

/// Checks the header of a decoded batch against this shard.
fn check_batch(shared: &Shared, batch: &PeerBatch) -> Result<(), InboundRejection> {
    let config = &shared.config;
    if batch.cluster_id != config.cluster_id {
        return Err(InboundRejection::WrongCluster {
            expected: config.cluster_id,
            actual: batch.cluster_id,
        });
    }
    if batch.to_shard != config.shard || batch.from_shard != config.shard {
        return Err(InboundRejection::WrongShard {
            expected: config.shard,
            from_shard: batch.from_shard,
            to_shard: batch.to_shard,
        });
    }
    if !config.peers.contains_key(&batch.from_node) {
        return Err(InboundRejection::UnknownNode {
            node: batch.from_node,
        });
    }
    if let Some((_, message)) = batch.messages.iter().find(|(_, m)| m.to != config.node_id) {
        return Err(InboundRejection::WrongDestination {
            expected: config.node_id,
            to: message.to,
        });
    }
    Ok(())
}

/// The read loop of one connection. The buffer holds at most one frame in progress
/// plus what arrived behind it, and never grows past `frame_bytes_max` plus the header:
/// the frame decoder refuses a longer length before the buffer is grown for it.
async fn read_batches(
    shared: &Shared,
    mut stream: TcpStream,
    id: u64,
    sender: &LocalSender<PeerBatch>,
) -> ReaderEnd {
    let payload_bytes_max = shared.config.frame_bytes_max;
    let buffer_bytes_max = frame::frame_bytes(payload_bytes_max);
    let initial_bytes = READ_BUFFER_BYTES_INITIAL.min(buffer_bytes_max);
    let mut buffer = vec![0u8; initial_bytes];
    // Bytes `start..end` of the buffer are received and not yet consumed.
    let mut start = 0;
    let mut end = 0;
    let mut node: Option<NodeId> = None;
    loop {
        // Every whole frame in the buffer, in order.
        loop {
            let (batch, consumed_bytes) =
                match frame::decode(&buffer[start..end], payload_bytes_max) {
                    Err(error) => return ReaderEnd::Rejected(error.into()),
                    Ok(None) => break,
                    Ok(Some(frame)) => match codec::decode_peer_batch(frame.payload) {
                        Err(error) => return ReaderEnd::Rejected(error.into()),
                        Ok(batch) => (batch, frame.consumed_bytes),
                    },
                };
            if let Err(rejection) = check_batch(shared, &batch) {
                return ReaderEnd::Rejected(rejection);
            }
            match node {
                None => {
                    node = Some(batch.from_node);
                    let replaced = shared.inbound.borrow_mut().identify(id, batch.from_node);
                    if let Some(mut replaced) = replaced {
                        // Dropping its stop signal ends the old reader, which closes its
                        // socket; it finishes on its own, nobody waits for it here.
                        drop(replaced.stop());
                        shared.count(|stats| stats.inbound_connections_replaced += 1);
                    }
                }
                Some(first) if first != batch.from_node => {
                    return ReaderEnd::Rejected(InboundRejection::NodeChanged {
                        first,
                        later: batch.from_node,
                    });
                }
                Some(_) => {}
            }
            start += consumed_bytes;
            let message_count = batch.messages.len() as u64;
            shared.count(|stats| {
                stats.batches_received += 1;
                stats.messages_received += message_count;
                stats.bytes_received += consumed_bytes as u64;
            });
            // A full channel holds this reader (and so this connection) back until the
            // shard's loop catches up; other connections are not affected.
            if sender.send(batch).await.is_err() {
                return ReaderEnd::ReceiverGone;
            }
            glommio::yield_if_needed().await;
        }

        // Room for the rest of the frame in progress: its whole size when its length
        // has arrived (already checked against the maximum by the decoder), else a
        // header.
        if start == end {
            start = 0;
            end = 0;
            if buffer.len() > READ_BUFFER_BYTES_INITIAL {
                buffer = vec![0u8; initial_bytes];
            }
        }
        let needed_bytes = match buffer[start..end].first_chunk::<4>() {
            Some(length) => frame::frame_bytes(u32::from_le_bytes(*length) as usize),
            None => FRAME_HEADER_BYTES,
        };
        assert!(
            needed_bytes <= buffer_bytes_max,
            "the decoder refuses lengths over the maximum"
        );
        if start + needed_bytes > buffer.len() {
            buffer.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if needed_bytes > buffer.len() {
            buffer.resize(needed_bytes, 0);
        }
        debug_assert!(buffer.len() <= buffer_bytes_max.max(initial_bytes));
        debug_assert!(end < buffer.len());

        match stream.read(&mut buffer[end..]).await {
            Ok(0) if start == end => return ReaderEnd::Closed,
            Ok(0) => return ReaderEnd::Truncated,
            Ok(read_bytes) => end += read_bytes,
            Err(_) => return ReaderEnd::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A peer's second connection replaces its first; a finished connection only clears
    // the peer's entry when that entry is still its own.
    #[test]
    fn newer_connection_of_a_node_replaces_the_older() {
        let mut connections = InboundConnections::default();
        for id in [0, 1] {
            connections.open.insert(
                id,
                OpenConnection {
                    node: None,
                    task: None,
                },
            );
        }
        assert!(connections.identify(0, 7).is_none());
        assert!(
            connections.identify(0, 7).is_none(),
            "same connection again"
        );
        // The old entry has no task in this test, so nothing comes back, but it is gone.
        assert!(connections.identify(1, 7).is_none());
        assert_eq!(connections.len(), 1);
        assert_eq!(connections.by_node.get(&7), Some(&1));
        connections.remove(0);
        assert_eq!(connections.by_node.get(&7), Some(&1));
        connections.remove(1);
        assert!(connections.by_node.is_empty());
        assert_eq!(connections.len(), 0);
    }
}
