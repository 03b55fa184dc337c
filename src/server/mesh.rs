//! The channels between the shards of one node. The messages are the shard core's
//! ([`crate::shard::MeshMessage`]); this file only builds and connects the channels.
//!
//! The mesh is one bounded `shared_channel` per ordered pair of shards, created before the
//! executors start, so that shard `i` always reaches shard `j` through the same channel.

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{GlommioError, ResourceType};

use crate::shard::MeshMessage;

/// One shard's ends of the mesh, before the executor connects them.
#[derive(Debug)]
pub struct MeshEnds {
    /// Indexed by destination shard; `None` at this shard's own index.
    pub senders: Vec<Option<SharedSender<MeshMessage>>>,
    /// (source shard, receiver) for every other shard.
    pub receivers: Vec<(u32, SharedReceiver<MeshMessage>)>,
}

/// The connected senders of one shard, indexed by destination shard.
#[derive(Debug)]
pub struct MeshSenders {
    senders: Vec<Option<ConnectedSender<MeshMessage>>>,
}

impl MeshSenders {
    /// Queues `message` for its shard without waiting; gives it back when the channel is
    /// full or closed (the loop never blocks on another shard). `Err(None)`: the channel
    /// failed in a way that does not give the message back, which glommio's channels do
    /// not do today; whoever waits on it then ends at its deadline.
    pub fn try_send(&self, message: MeshMessage) -> Result<(), Option<MeshMessage>> {
        match self.senders.get(message.to_shard as usize) {
            Some(Some(sender)) => sender.try_send(message).map_err(|error| match error {
                GlommioError::WouldBlock(ResourceType::Channel(message))
                | GlommioError::Closed(ResourceType::Channel(message)) => Some(message),
                _ => None,
            }),
            _ => Err(Some(message)),
        }
    }
}

/// Creates the channels for `shards` shards, each bounded to `messages_max`.
pub fn build(shards: u32, messages_max: usize) -> Vec<MeshEnds> {
    let count = shards as usize;
    let mut ends: Vec<MeshEnds> = (0..count)
        .map(|_| MeshEnds {
            senders: (0..count).map(|_| None).collect(),
            receivers: Vec::new(),
        })
        .collect();
    for from in 0..count {
        for to in 0..count {
            if from == to {
                continue;
            }
            let (sender, receiver) = shared_channel::new_bounded(messages_max);
            ends[from].senders[to] = Some(sender);
            ends[to].receivers.push((from as u32, receiver));
        }
    }
    ends
}

impl MeshEnds {
    /// Connects every end on the current executor. Returns the senders and the connected
    /// receivers (source shard, receiver). Each connection waits for the other shard to
    /// connect its end, so all of them are started at once: connecting one after another
    /// could wait on a shard that waits on this one.
    pub async fn connect(
        self,
    ) -> (
        MeshSenders,
        Vec<(u32, shared_channel::ConnectedReceiver<MeshMessage>)>,
    ) {
        let sender_tasks: Vec<_> = self
            .senders
            .into_iter()
            .map(|sender| {
                glommio::spawn_local(async move {
                    match sender {
                        Some(sender) => Some(sender.connect().await),
                        None => None,
                    }
                })
            })
            .collect();
        let receiver_tasks: Vec<_> = self
            .receivers
            .into_iter()
            .map(|(from, receiver)| {
                glommio::spawn_local(async move { (from, receiver.connect().await) })
            })
            .collect();
        let mut senders = Vec::with_capacity(sender_tasks.len());
        for task in sender_tasks {
            senders.push(task.await);
        }
        let mut receivers = Vec::with_capacity(receiver_tasks.len());
        for task in receiver_tasks {
            receivers.push(task.await);
        }
        (MeshSenders { senders }, receivers)
    }
}
