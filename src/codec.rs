//! Maps Raft values to and from their FlatBuffers form (`schema/raft.fbs`): single
//! messages and the [`PeerBatch`] one shard sends a peer shard per loop turn.
//!
//! Every buffer from outside (a peer, a client, a file) first runs the FlatBuffers
//! verifier with corekv's bounds ([`VERIFIER_OPTIONS`], through `verified_root`); a Raft
//! buffer is then checked here for what the verifier cannot check: enum values this
//! build knows, fields a kind requires, and the orderings Raft relies on. Anything wrong
//! is a [`CodecError`], never a panic, and nothing unverified ever reaches a generated
//! accessor.
//!
//! The client protocol is [`crate::api`]'s. It shares what every FlatBuffers reader and
//! writer of corekv needs, which stays here because `api` already builds on this layer
//! and a module of four items would be one more name in the map for nothing: the
//! verifier bounds and `verified_root`, [`CodecError`], and the builder helpers
//! `create_bytes` and `create_children`.

use std::sync::Arc;

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};
use thiserror::Error;

use crate::frame::FRAME_BYTES_MAX;
use crate::proto;
use crate::raft::{
    ConfChange, ConfState, Entry, EntryKind, Message, MessageKind, NodeId, SnapshotChunk,
    SnapshotMeta, NO_NODE,
};

/// Deepest nesting of tables the verifier accepts. The deepest honest path is a client
/// response: Response → TxnResult → TxnResponseOp → RangeResult → KeyValue (5); a peer
/// batch reaches PeerBatch → GroupMessage → Message → SnapshotChunk → SnapshotMeta →
/// ConfState (6). The margin leaves room for the schema to grow.
pub const VERIFIER_DEPTH_MAX: usize = 16;

/// Most tables the verifier visits in one buffer. Every honest table takes at least 8
/// bytes of the buffer (its 4-byte vtable offset and the 4-byte offset that reaches it),
/// so a frame can hold no more; a buffer claiming more reuses tables to inflate the work.
pub const VERIFIER_TABLES_MAX: usize = FRAME_BYTES_MAX / 8;

/// Most bytes the verifier reads in one buffer, counting shared parts (vtables, tables
/// reached twice) each time they are reached. Honest buffers stay under twice their
/// length; the bound caps the verification work of a hostile one.
pub const VERIFIER_APPARENT_BYTES_MAX: usize = 4 * FRAME_BYTES_MAX;

/// The verifier bounds for every buffer corekv reads.
pub const VERIFIER_OPTIONS: VerifierOptions = VerifierOptions {
    max_depth: VERIFIER_DEPTH_MAX,
    max_tables: VERIFIER_TABLES_MAX,
    max_apparent_size: VERIFIER_APPARENT_BYTES_MAX,
    ignore_missing_null_terminator: false,
};

/// Why a buffer was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The buffer is larger than any frame may be.
    #[error("buffer of {bytes} bytes exceeds the frame maximum of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// The FlatBuffers verifier rejected the buffer (out of bounds, misaligned, missing
    /// required field, over the verifier bounds, ...).
    #[error("invalid FlatBuffers buffer: {0}")]
    Invalid(#[from] InvalidFlatbuffer),
    /// An enum or union field holds a value this build does not know.
    #[error("unknown value {value} in {field}")]
    UnknownEnum { field: &'static str, value: u64 },
    /// A field the message's kind requires is absent.
    #[error("missing {field}")]
    MissingField { field: &'static str },
    /// A field holds a value the protocol forbids.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
}

/// Everything one shard sends to one peer shard in one loop turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerBatch {
    /// The cluster of the sender; a receiver refuses batches from any other cluster.
    pub cluster_id: u64,
    /// The sending node; never [`NO_NODE`].
    pub from_node: NodeId,
    /// The sending shard (core index) on `from_node`.
    pub from_shard: u32,
    /// The receiving shard on the node the link leads to.
    pub to_shard: u32,
    /// (group id, message for that group's replica on the receiving shard).
    pub messages: Vec<(u64, Message)>,
}

/// Runs the verifier with corekv's bounds over a buffer from outside: the one way in for
/// every root, Raft's here and the client protocol's in [`crate::api`].
pub(crate) fn verified_root<'buf, T>(bytes: &'buf [u8]) -> Result<T::Inner, CodecError>
where
    T: flatbuffers::Follow<'buf> + flatbuffers::Verifiable + 'buf,
{
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge {
            bytes: bytes.len(),
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(flatbuffers::root_with_opts::<T>(&VERIFIER_OPTIONS, bytes)?)
}

// ---------------------------------------------------------------------------------------
// Raft values to FlatBuffers
// ---------------------------------------------------------------------------------------

fn message_kind_to_proto(kind: MessageKind) -> proto::MessageKind {
    match kind {
        MessageKind::Vote => proto::MessageKind::Vote,
        MessageKind::VoteResponse => proto::MessageKind::VoteResponse,
        MessageKind::PreVote => proto::MessageKind::PreVote,
        MessageKind::PreVoteResponse => proto::MessageKind::PreVoteResponse,
        MessageKind::Append => proto::MessageKind::Append,
        MessageKind::AppendResponse => proto::MessageKind::AppendResponse,
        MessageKind::Heartbeat => proto::MessageKind::Heartbeat,
        MessageKind::HeartbeatResponse => proto::MessageKind::HeartbeatResponse,
        MessageKind::Snapshot => proto::MessageKind::Snapshot,
        MessageKind::SnapshotResponse => proto::MessageKind::SnapshotResponse,
        MessageKind::TimeoutNow => proto::MessageKind::TimeoutNow,
        MessageKind::ReadIndex => proto::MessageKind::ReadIndex,
        MessageKind::ReadIndexResponse => proto::MessageKind::ReadIndexResponse,
        MessageKind::CloseRequest => proto::MessageKind::CloseRequest,
    }
}

fn entry_kind_to_proto(kind: EntryKind) -> proto::EntryKind {
    match kind {
        EntryKind::Normal => proto::EntryKind::Normal,
        EntryKind::ConfChange => proto::EntryKind::ConfChange,
    }
}

/// Writes empty byte strings as absent fields: they read back as empty all the same.
pub(crate) fn create_bytes<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    bytes: &[u8],
) -> Option<WIPOffset<flatbuffers::Vector<'b, u8>>> {
    (!bytes.is_empty()).then(|| builder.create_vector(bytes))
}

/// Writes one table per item, then the vector of their offsets (FlatBuffers wants
/// children before their parent); an empty list is an absent field, like empty bytes.
pub(crate) fn create_children<'b, T, Child>(
    builder: &mut FlatBufferBuilder<'b>,
    items: &[T],
    mut encode: impl FnMut(&mut FlatBufferBuilder<'b>, &T) -> WIPOffset<Child>,
) -> Option<WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<Child>>>> {
    if items.is_empty() {
        return None;
    }
    let offsets: Vec<WIPOffset<Child>> = items.iter().map(|item| encode(builder, item)).collect();
    Some(builder.create_vector(&offsets))
}

fn create_ids<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    ids: &[NodeId],
) -> Option<WIPOffset<flatbuffers::Vector<'b, u64>>> {
    (!ids.is_empty()).then(|| builder.create_vector(ids))
}

fn encode_conf_state<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    conf: &ConfState,
) -> WIPOffset<proto::ConfState<'b>> {
    let voters = create_ids(builder, &conf.voters);
    let learners = create_ids(builder, &conf.learners);
    proto::ConfState::create(builder, &proto::ConfStateArgs { voters, learners })
}

fn encode_snapshot_meta<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    meta: &SnapshotMeta,
) -> WIPOffset<proto::SnapshotMeta<'b>> {
    let conf = encode_conf_state(builder, &meta.conf);
    proto::SnapshotMeta::create(
        builder,
        &proto::SnapshotMetaArgs {
            index: meta.index,
            term: meta.term,
            conf: Some(conf),
        },
    )
}

fn encode_snapshot_chunk<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    chunk: &SnapshotChunk,
) -> WIPOffset<proto::SnapshotChunk<'b>> {
    let meta = encode_snapshot_meta(builder, &chunk.meta);
    let data = create_bytes(builder, &chunk.data);
    proto::SnapshotChunk::create(
        builder,
        &proto::SnapshotChunkArgs {
            meta: Some(meta),
            offset: chunk.offset,
            total_bytes: chunk.total_bytes,
            data,
        },
    )
}

fn encode_entry<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    entry: &Entry,
) -> WIPOffset<proto::Entry<'b>> {
    let data = create_bytes(builder, &entry.data);
    proto::Entry::create(
        builder,
        &proto::EntryArgs {
            term: entry.term,
            index: entry.index,
            kind: entry_kind_to_proto(entry.kind),
            data,
        },
    )
}

/// Writes `message` into `builder` (which may be building a larger buffer) and returns
/// its offset. The message must keep the contract of [`Message`]: entries only on
/// `Append`, a snapshot exactly on `Snapshot`; [`decode_message`] rejects anything else.
pub fn encode_message<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    message: &Message,
) -> WIPOffset<proto::Message<'b>> {
    debug_assert_eq!(
        check_message_shape(message),
        Ok(()),
        "encoding a message that decode would reject: {message:?}"
    );
    let entries = create_children(builder, &message.entries, encode_entry);
    let snapshot = message
        .snapshot
        .as_ref()
        .map(|chunk| encode_snapshot_chunk(builder, chunk));
    proto::Message::create(
        builder,
        &proto::MessageArgs {
            kind: message_kind_to_proto(message.kind),
            from: message.from,
            to: message.to,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            commit: message.commit,
            entries,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context,
            snapshot,
        },
    )
}

/// Encodes one message as a whole buffer (for a single message on a channel or in a
/// test; peers exchange [`PeerBatch`]es).
pub fn message_to_bytes(message: &Message) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::with_capacity(message_capacity_hint(message));
    let root = encode_message(&mut builder, message);
    builder.finish_minimal(root);
    builder.finished_data().to_vec()
}

/// A first guess at a message's encoded size, so that most builders never regrow.
fn message_capacity_hint(message: &Message) -> usize {
    let entries_bytes: usize = message
        .entries
        .iter()
        .map(|entry| entry.size_bytes() + 32)
        .sum();
    let snapshot_bytes = message
        .snapshot
        .as_ref()
        .map_or(0, |chunk| chunk.data.len() + 128);
    128 + entries_bytes + snapshot_bytes
}

/// Writes `batch` as a whole buffer into `builder` (reset first, so one builder serves
/// every turn without reallocating) and returns the finished bytes, ready to be framed.
pub fn encode_peer_batch<'a>(
    builder: &'a mut FlatBufferBuilder<'_>,
    batch: &PeerBatch,
) -> &'a [u8] {
    builder.reset();
    let group_messages: Vec<_> = batch
        .messages
        .iter()
        .map(|(group_id, message)| {
            let message = encode_message(builder, message);
            proto::GroupMessage::create(
                builder,
                &proto::GroupMessageArgs {
                    group_id: *group_id,
                    message: Some(message),
                },
            )
        })
        .collect();
    let messages = (!group_messages.is_empty()).then(|| builder.create_vector(&group_messages));
    let root = proto::PeerBatch::create(
        builder,
        &proto::PeerBatchArgs {
            from_node: batch.from_node,
            from_shard: batch.from_shard,
            to_shard: batch.to_shard,
            messages,
            cluster_id: batch.cluster_id,
        },
    );
    builder.finish_minimal(root);
    builder.finished_data()
}

/// Encodes `batch` into a fresh buffer.
pub fn peer_batch_to_bytes(batch: &PeerBatch) -> Vec<u8> {
    let capacity = 64
        + batch
            .messages
            .iter()
            .map(|(_, message)| message_capacity_hint(message) + 16)
            .sum::<usize>();
    let mut builder = FlatBufferBuilder::with_capacity(capacity);
    encode_peer_batch(&mut builder, batch).to_vec()
}

// ---------------------------------------------------------------------------------------
// FlatBuffers to Raft values
// ---------------------------------------------------------------------------------------

fn message_kind_from_proto(kind: proto::MessageKind) -> Result<MessageKind, CodecError> {
    Ok(match kind {
        proto::MessageKind::Vote => MessageKind::Vote,
        proto::MessageKind::VoteResponse => MessageKind::VoteResponse,
        proto::MessageKind::PreVote => MessageKind::PreVote,
        proto::MessageKind::PreVoteResponse => MessageKind::PreVoteResponse,
        proto::MessageKind::Append => MessageKind::Append,
        proto::MessageKind::AppendResponse => MessageKind::AppendResponse,
        proto::MessageKind::Heartbeat => MessageKind::Heartbeat,
        proto::MessageKind::HeartbeatResponse => MessageKind::HeartbeatResponse,
        proto::MessageKind::Snapshot => MessageKind::Snapshot,
        proto::MessageKind::SnapshotResponse => MessageKind::SnapshotResponse,
        proto::MessageKind::TimeoutNow => MessageKind::TimeoutNow,
        proto::MessageKind::ReadIndex => MessageKind::ReadIndex,
        proto::MessageKind::ReadIndexResponse => MessageKind::ReadIndexResponse,
        proto::MessageKind::CloseRequest => MessageKind::CloseRequest,
        // `Unspecified` included: a kind that was never written is not a message.
        other => {
            return Err(CodecError::UnknownEnum {
                field: "Message.kind",
                value: u64::from(other.0),
            })
        }
    })
}

fn entry_kind_from_proto(kind: proto::EntryKind) -> Result<EntryKind, CodecError> {
    match kind {
        proto::EntryKind::Normal => Ok(EntryKind::Normal),
        proto::EntryKind::ConfChange => Ok(EntryKind::ConfChange),
        other => Err(CodecError::UnknownEnum {
            field: "Entry.kind",
            value: u64::from(other.0),
        }),
    }
}

fn payload(bytes: Option<flatbuffers::Vector<'_, u8>>) -> Arc<[u8]> {
    Arc::from(bytes.map_or(&[][..], |vector| vector.bytes()))
}

/// Node ids in ascending order, without duplicates or the "no node" id.
fn decode_ids(
    ids: Option<flatbuffers::Vector<'_, u64>>,
    field: &'static str,
) -> Result<Vec<NodeId>, CodecError> {
    let ids: Vec<NodeId> = ids.map_or_else(Vec::new, |vector| vector.iter().collect());
    if ids.contains(&NO_NODE) {
        return Err(CodecError::InvalidField {
            field,
            reason: "holds the \"no node\" id 0",
        });
    }
    if !ids.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(CodecError::InvalidField {
            field,
            reason: "not strictly ascending",
        });
    }
    Ok(ids)
}

fn decode_conf_state(conf: Option<proto::ConfState<'_>>) -> Result<ConfState, CodecError> {
    let Some(conf) = conf else {
        return Ok(ConfState::default());
    };
    let voters = decode_ids(conf.voters(), "ConfState.voters")?;
    let learners = decode_ids(conf.learners(), "ConfState.learners")?;
    // Both are sorted: one merge-like pass would do, but memberships are a handful of
    // nodes and binary search keeps it obvious.
    if learners
        .iter()
        .any(|learner| voters.binary_search(learner).is_ok())
    {
        return Err(CodecError::InvalidField {
            field: "ConfState.learners",
            reason: "a node is both voter and learner",
        });
    }
    Ok(ConfState { voters, learners })
}

fn decode_snapshot_meta(meta: proto::SnapshotMeta<'_>) -> Result<SnapshotMeta, CodecError> {
    Ok(SnapshotMeta {
        index: meta.index(),
        term: meta.term(),
        conf: decode_conf_state(meta.conf())?,
    })
}

fn decode_snapshot_chunk(chunk: proto::SnapshotChunk<'_>) -> Result<SnapshotChunk, CodecError> {
    let data = payload(chunk.data());
    let end = chunk.offset().checked_add(data.len() as u64);
    if end.is_none_or(|end| end > chunk.total_bytes()) {
        return Err(CodecError::InvalidField {
            field: "SnapshotChunk.data",
            reason: "extends past total_bytes",
        });
    }
    Ok(SnapshotChunk {
        meta: decode_snapshot_meta(chunk.meta())?,
        offset: chunk.offset(),
        total_bytes: chunk.total_bytes(),
        data,
    })
}

fn decode_entry(entry: proto::Entry<'_>) -> Result<Entry, CodecError> {
    let kind = entry_kind_from_proto(entry.kind())?;
    let data = payload(entry.data());
    if kind == EntryKind::ConfChange && ConfChange::decode(&data).is_none() {
        return Err(CodecError::InvalidField {
            field: "Entry.data",
            reason: "not a valid conf change",
        });
    }
    Ok(Entry {
        term: entry.term(),
        index: entry.index(),
        kind,
        data,
    })
}

/// Checks what [`Message`] promises beyond its field types: entries only on `Append`,
/// consecutive from `index + 1` with terms that never decrease, and a snapshot exactly
/// on `Snapshot`.
fn check_message_shape(message: &Message) -> Result<(), CodecError> {
    if !message.entries.is_empty() {
        if message.kind != MessageKind::Append {
            return Err(CodecError::InvalidField {
                field: "Message.entries",
                reason: "only an Append carries entries",
            });
        }
        let mut expected_index = message.index;
        let mut previous_term = 0;
        for entry in &message.entries {
            expected_index = expected_index
                .checked_add(1)
                .ok_or(CodecError::InvalidField {
                    field: "Entry.index",
                    reason: "overflows",
                })?;
            if entry.index != expected_index {
                return Err(CodecError::InvalidField {
                    field: "Entry.index",
                    reason: "entries are not consecutive from index + 1",
                });
            }
            if entry.term < previous_term {
                return Err(CodecError::InvalidField {
                    field: "Entry.term",
                    reason: "decreases",
                });
            }
            previous_term = entry.term;
        }
    }
    match (message.kind, &message.snapshot) {
        (MessageKind::Snapshot, None) => Err(CodecError::MissingField {
            field: "Message.snapshot",
        }),
        (MessageKind::Snapshot, Some(_)) | (_, None) => Ok(()),
        (_, Some(_)) => Err(CodecError::InvalidField {
            field: "Message.snapshot",
            reason: "only a Snapshot message carries a snapshot",
        }),
    }
}

/// Decodes a message from a verified buffer (as reached through [`verify_peer_batch`] or
/// another verified root), checking everything the verifier does not.
pub fn decode_message(message: proto::Message<'_>) -> Result<Message, CodecError> {
    let kind = message_kind_from_proto(message.kind())?;
    let entries = match message.entries() {
        None => Vec::new(),
        Some(entries) => entries
            .iter()
            .map(decode_entry)
            .collect::<Result<Vec<_>, _>>()?,
    };
    let snapshot = message.snapshot().map(decode_snapshot_chunk).transpose()?;
    let decoded = Message {
        kind,
        from: message.from(),
        to: message.to(),
        term: message.term(),
        log_term: message.log_term(),
        index: message.index(),
        commit: message.commit(),
        entries,
        reject: message.reject(),
        reject_hint: message.reject_hint(),
        context: message.context(),
        snapshot,
    };
    check_message_shape(&decoded)?;
    Ok(decoded)
}

/// Verifies and decodes a buffer made by [`message_to_bytes`].
pub fn message_from_bytes(bytes: &[u8]) -> Result<Message, CodecError> {
    decode_message(verified_root::<proto::Message>(bytes)?)
}

/// Verifies a peer batch and checks its header, without decoding the messages: for a
/// receiver that routes each group's message on without copying it.
pub fn verify_peer_batch(bytes: &[u8]) -> Result<proto::PeerBatch<'_>, CodecError> {
    let batch = verified_root::<proto::PeerBatch>(bytes)?;
    if batch.from_node() == NO_NODE {
        return Err(CodecError::InvalidField {
            field: "PeerBatch.from_node",
            reason: "is the \"no node\" id 0",
        });
    }
    Ok(batch)
}

/// Verifies and decodes a peer batch made by [`encode_peer_batch`].
pub fn decode_peer_batch(bytes: &[u8]) -> Result<PeerBatch, CodecError> {
    let batch = verify_peer_batch(bytes)?;
    let messages = match batch.messages() {
        None => Vec::new(),
        Some(messages) => messages
            .iter()
            .map(|group_message| {
                Ok((
                    group_message.group_id(),
                    decode_message(group_message.message())?,
                ))
            })
            .collect::<Result<Vec<_>, CodecError>>()?,
    };
    Ok(PeerBatch {
        cluster_id: batch.cluster_id(),
        from_node: batch.from_node(),
        from_shard: batch.from_shard(),
        to_shard: batch.to_shard(),
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ConfChangeKind;

    /// A change that makes a valid value invalid, and the field the error must name.
    type Corruption<T> = (fn(&mut T), &'static str);

    /// Every kind, in declaration order. `sample_message` matches exhaustively, so a new
    /// kind fails to compile there until it is added here too.
    const ALL_KINDS: [MessageKind; 14] = [
        MessageKind::Vote,
        MessageKind::VoteResponse,
        MessageKind::PreVote,
        MessageKind::PreVoteResponse,
        MessageKind::Append,
        MessageKind::AppendResponse,
        MessageKind::Heartbeat,
        MessageKind::HeartbeatResponse,
        MessageKind::Snapshot,
        MessageKind::SnapshotResponse,
        MessageKind::TimeoutNow,
        MessageKind::ReadIndex,
        MessageKind::ReadIndexResponse,
        MessageKind::CloseRequest,
    ];

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Arc::from(data),
        }
    }

    fn sample_chunk() -> SnapshotChunk {
        SnapshotChunk {
            meta: SnapshotMeta {
                index: 100,
                term: 3,
                conf: ConfState {
                    voters: vec![1, 2, 3],
                    learners: vec![4],
                },
            },
            offset: 4096,
            total_bytes: 10_000,
            data: Arc::from(&[0xab_u8; 100][..]),
        }
    }

    /// A message of `kind` with every field that kind uses set to a distinct value.
    fn sample_message(kind: MessageKind) -> Message {
        let mut message = Message::new(kind, 1, 2, 7);
        match kind {
            MessageKind::Vote | MessageKind::PreVote => {
                message.index = 10;
                message.log_term = 6;
            }
            MessageKind::VoteResponse | MessageKind::PreVoteResponse => message.reject = true,
            MessageKind::Append => {
                message.index = 10;
                message.log_term = 6;
                message.commit = 9;
                let conf_change = ConfChange {
                    kind: ConfChangeKind::AddLearner,
                    node_id: 4,
                };
                message.entries = vec![
                    entry(6, 11, b""),
                    Entry {
                        kind: EntryKind::ConfChange,
                        data: conf_change.encode(),
                        ..entry(7, 12, b"")
                    },
                    entry(7, 13, b"put k v"),
                ];
            }
            MessageKind::AppendResponse => {
                message.reject = true;
                message.index = 12;
                message.reject_hint = 8;
                message.log_term = 5;
            }
            MessageKind::Heartbeat => {
                message.commit = 9;
                message.context = 42;
            }
            MessageKind::HeartbeatResponse => message.context = 42,
            MessageKind::Snapshot => message.snapshot = Some(sample_chunk()),
            MessageKind::SnapshotResponse => {
                message.index = 4196;
                message.log_term = 3;
                message.commit = 100;
            }
            MessageKind::TimeoutNow => {}
            MessageKind::ReadIndex => message.context = 99,
            MessageKind::ReadIndexResponse => {
                message.index = 55;
                message.context = 99;
            }
            MessageKind::CloseRequest => message.index = 77,
        }
        message
    }

    /// Builds a buffer whose root is a message written field by field, so tests can
    /// write what `encode_message` never would.
    fn raw_message_bytes(
        write: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<proto::Message<'static>>,
    ) -> Vec<u8> {
        let mut builder = FlatBufferBuilder::new();
        let root = write(&mut builder);
        builder.finish_minimal(root);
        builder.finished_data().to_vec()
    }

    fn raw_message_of_kind(kind: proto::MessageKind) -> Vec<u8> {
        raw_message_bytes(|builder| {
            proto::Message::create(
                builder,
                &proto::MessageArgs {
                    kind,
                    from: 1,
                    to: 2,
                    term: 3,
                    ..Default::default()
                },
            )
        })
    }

    // Every kind of message decodes to exactly the message that was encoded.
    #[test]
    fn every_message_kind_round_trips() {
        for kind in ALL_KINDS {
            let message = sample_message(kind);
            let bytes = message_to_bytes(&message);
            assert_eq!(message_from_bytes(&bytes), Ok(message), "{kind:?}");
        }
    }

    // A message with every field at its maximum survives the trip, so no field is
    // narrowed on the wire.
    #[test]
    fn extreme_field_values_round_trip() {
        let mut message = Message::new(MessageKind::AppendResponse, u64::MAX, u64::MAX, u64::MAX);
        message.log_term = u64::MAX;
        message.index = u64::MAX;
        message.commit = u64::MAX;
        message.reject = true;
        message.reject_hint = u64::MAX;
        message.context = u64::MAX;
        assert_eq!(message_from_bytes(&message_to_bytes(&message)), Ok(message));
    }

    // A batch for many groups, with every kind mixed in, decodes to the same batch in the
    // same order; an empty batch does too.
    #[test]
    fn batches_with_many_groups_round_trip() {
        let batch = PeerBatch {
            cluster_id: u64::MAX,
            from_node: 3,
            from_shard: 1,
            to_shard: 0,
            messages: (0..1000u64)
                .map(|group_id| {
                    let kind = ALL_KINDS[group_id as usize % ALL_KINDS.len()];
                    (group_id * 7 + 1, sample_message(kind))
                })
                .collect(),
        };
        let bytes = peer_batch_to_bytes(&batch);
        assert_eq!(decode_peer_batch(&bytes), Ok(batch.clone()));

        // One builder reused across turns gives the same bytes as a fresh one.
        let mut builder = FlatBufferBuilder::new();
        let empty = PeerBatch {
            from_node: 9,
            ..PeerBatch::default()
        };
        assert_eq!(
            decode_peer_batch(encode_peer_batch(&mut builder, &empty)),
            Ok(empty)
        );
        assert_eq!(encode_peer_batch(&mut builder, &batch), &bytes[..]);
    }

    // The zero-copy view of a batch exposes the header and each group's message.
    #[test]
    fn verified_batch_view_reads_without_decoding() {
        let batch = PeerBatch {
            cluster_id: 41,
            from_node: 5,
            from_shard: 2,
            to_shard: 3,
            messages: vec![(11, sample_message(MessageKind::Heartbeat))],
        };
        let bytes = peer_batch_to_bytes(&batch);
        let view = verify_peer_batch(&bytes).unwrap();
        assert_eq!(
            (
                view.cluster_id(),
                view.from_node(),
                view.from_shard(),
                view.to_shard()
            ),
            (41, 5, 2, 3)
        );
        let messages = view.messages().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages.get(0).group_id(), 11);
        assert_eq!(
            messages.get(0).message().kind(),
            proto::MessageKind::Heartbeat
        );
    }

    // A kind this build does not know, or the unset kind, is rejected by name.
    #[test]
    fn unknown_and_unset_message_kinds_are_rejected() {
        for raw in [
            proto::MessageKind::Unspecified,
            proto::MessageKind(15),
            proto::MessageKind(255),
        ] {
            assert_eq!(
                message_from_bytes(&raw_message_of_kind(raw)),
                Err(CodecError::UnknownEnum {
                    field: "Message.kind",
                    value: u64::from(raw.0),
                })
            );
        }
    }

    // Entries that break Raft's ordering, sit on the wrong kind, or carry an unknown kind
    // or a malformed conf change are all rejected.
    #[test]
    fn malformed_entries_are_rejected() {
        let append = sample_message(MessageKind::Append);
        let cases: [Corruption<Message>; 6] = [
            (|m| m.entries[1].index = 20, "Entry.index"),
            (|m| m.index = 11, "Entry.index"),
            (|m| m.entries[2].term = 1, "Entry.term"),
            (|m| m.kind = MessageKind::Heartbeat, "Message.entries"),
            (|m| m.entries[0].kind = EntryKind::ConfChange, "Entry.data"),
            (
                |m| {
                    m.index = u64::MAX;
                    m.entries.truncate(1);
                },
                "Entry.index",
            ),
        ];
        for (corrupt, field) in cases {
            let mut message = append.clone();
            corrupt(&mut message);
            // Encoded field by field: `encode_message` asserts the shape in debug builds.
            let bytes = raw_message_bytes(|builder| {
                let entries: Vec<_> = message
                    .entries
                    .iter()
                    .map(|entry| encode_entry(builder, entry))
                    .collect();
                let entries = builder.create_vector(&entries);
                proto::Message::create(
                    builder,
                    &proto::MessageArgs {
                        kind: message_kind_to_proto(message.kind),
                        index: message.index,
                        entries: Some(entries),
                        ..Default::default()
                    },
                )
            });
            let error = message_from_bytes(&bytes).unwrap_err();
            assert!(
                matches!(error, CodecError::InvalidField { field: f, .. } if f == field),
                "{field}: {error:?}"
            );
        }

        let bytes = raw_message_bytes(|builder| {
            let unknown = proto::Entry::create(
                builder,
                &proto::EntryArgs {
                    index: 1,
                    kind: proto::EntryKind(9),
                    ..Default::default()
                },
            );
            let entries = builder.create_vector(&[unknown]);
            proto::Message::create(
                builder,
                &proto::MessageArgs {
                    kind: proto::MessageKind::Append,
                    entries: Some(entries),
                    ..Default::default()
                },
            )
        });
        assert_eq!(
            message_from_bytes(&bytes),
            Err(CodecError::UnknownEnum {
                field: "Entry.kind",
                value: 9
            })
        );
    }

    fn snapshot_message_bytes(chunk: &SnapshotChunk, kind: proto::MessageKind) -> Vec<u8> {
        raw_message_bytes(|builder| {
            let snapshot = encode_snapshot_chunk(builder, chunk);
            proto::Message::create(
                builder,
                &proto::MessageArgs {
                    kind,
                    snapshot: Some(snapshot),
                    ..Default::default()
                },
            )
        })
    }

    // A snapshot message needs its chunk, a chunk must fit its total size and carry a
    // sane membership, and no other kind may carry a chunk.
    #[test]
    fn malformed_snapshots_are_rejected() {
        assert_eq!(
            message_from_bytes(&raw_message_of_kind(proto::MessageKind::Snapshot)),
            Err(CodecError::MissingField {
                field: "Message.snapshot"
            })
        );
        let valid = sample_chunk();
        assert!(message_from_bytes(&snapshot_message_bytes(
            &valid,
            proto::MessageKind::Snapshot
        ))
        .is_ok());
        assert!(matches!(
            message_from_bytes(&snapshot_message_bytes(
                &valid,
                proto::MessageKind::Heartbeat
            )),
            Err(CodecError::InvalidField {
                field: "Message.snapshot",
                ..
            })
        ));

        let cases: [Corruption<SnapshotChunk>; 7] = [
            (|c| c.total_bytes = c.offset + 99, "SnapshotChunk.data"),
            (|c| c.offset = u64::MAX - 10, "SnapshotChunk.data"),
            (|c| c.meta.conf.voters = vec![2, 1], "ConfState.voters"),
            (|c| c.meta.conf.voters = vec![1, 1], "ConfState.voters"),
            (|c| c.meta.conf.voters = vec![0, 1], "ConfState.voters"),
            (|c| c.meta.conf.learners = vec![5, 4], "ConfState.learners"),
            (|c| c.meta.conf.learners = vec![3], "ConfState.learners"),
        ];
        for (corrupt, field) in cases {
            let mut chunk = valid.clone();
            corrupt(&mut chunk);
            let error = message_from_bytes(&snapshot_message_bytes(
                &chunk,
                proto::MessageKind::Snapshot,
            ))
            .unwrap_err();
            assert!(
                matches!(error, CodecError::InvalidField { field: f, .. } if f == field),
                "{field}: {error:?}"
            );
        }
    }

    // A batch written before `cluster_id` existed (the field absent) reads as cluster 0,
    // and cluster 0 costs no bytes on the wire: the field is an additive change.
    #[test]
    fn batch_without_cluster_id_reads_as_cluster_zero() {
        let mut builder = FlatBufferBuilder::new();
        let root = proto::PeerBatch::create(
            &mut builder,
            &proto::PeerBatchArgs {
                from_node: 4,
                from_shard: 1,
                to_shard: 1,
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        let old_writer_bytes = builder.finished_data().to_vec();
        let decoded = decode_peer_batch(&old_writer_bytes).unwrap();
        assert_eq!(
            decoded,
            PeerBatch {
                cluster_id: 0,
                from_node: 4,
                from_shard: 1,
                to_shard: 1,
                messages: Vec::new(),
            }
        );
        assert_eq!(peer_batch_to_bytes(&decoded), old_writer_bytes);
        let with_cluster = PeerBatch {
            cluster_id: 7,
            ..decoded
        };
        assert!(peer_batch_to_bytes(&with_cluster).len() > old_writer_bytes.len());
    }

    // A batch must name its sender, and a group message without its message fails the
    // verifier's required-field check.
    #[test]
    fn malformed_batches_are_rejected() {
        let anonymous = PeerBatch::default();
        assert!(matches!(
            decode_peer_batch(&peer_batch_to_bytes(&anonymous)),
            Err(CodecError::InvalidField {
                field: "PeerBatch.from_node",
                ..
            })
        ));

        let mut builder = FlatBufferBuilder::new();
        // Written by hand: the generated builder refuses to omit a required field.
        let start = builder.start_table();
        builder.push_slot_always::<u64>(proto::GroupMessage::VT_GROUP_ID, 1);
        let group_message: WIPOffset<proto::GroupMessage> =
            WIPOffset::new(builder.end_table(start).value());
        let messages = builder.create_vector(&[group_message]);
        let root = proto::PeerBatch::create(
            &mut builder,
            &proto::PeerBatchArgs {
                from_node: 1,
                messages: Some(messages),
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        assert!(matches!(
            decode_peer_batch(builder.finished_data()),
            Err(CodecError::Invalid(
                InvalidFlatbuffer::MissingRequiredField { .. }
            ))
        ));
    }

    // A buffer over the frame maximum is refused before the verifier reads it.
    #[test]
    fn buffers_over_the_frame_maximum_are_refused() {
        let bytes = vec![0u8; FRAME_BYTES_MAX + 1];
        assert_eq!(
            decode_peer_batch(&bytes),
            Err(CodecError::TooLarge {
                bytes: FRAME_BYTES_MAX + 1,
                max: FRAME_BYTES_MAX
            })
        );
    }

    // A small buffer that points many times at one large table (a DAG, which no honest
    // encoder writes) is stopped by the apparent-size bound instead of costing work
    // proportional to its expansion.
    #[test]
    fn shared_tables_cannot_inflate_verification_work() {
        let mut builder = FlatBufferBuilder::new();
        let payload_bytes = 1 << 20;
        let data = builder.create_vector(&vec![7u8; payload_bytes]);
        let entry = proto::Entry::create(
            &mut builder,
            &proto::EntryArgs {
                index: 1,
                data: Some(data),
                ..Default::default()
            },
        );
        let entries = builder.create_vector(&[entry]);
        let message = proto::Message::create(
            &mut builder,
            &proto::MessageArgs {
                kind: proto::MessageKind::Append,
                entries: Some(entries),
                ..Default::default()
            },
        );
        let group_message = proto::GroupMessage::create(
            &mut builder,
            &proto::GroupMessageArgs {
                group_id: 1,
                message: Some(message),
            },
        );
        let copies = VERIFIER_APPARENT_BYTES_MAX / payload_bytes + 1;
        let messages = builder.create_vector(&vec![group_message; copies]);
        let root = proto::PeerBatch::create(
            &mut builder,
            &proto::PeerBatchArgs {
                from_node: 1,
                messages: Some(messages),
                ..Default::default()
            },
        );
        builder.finish_minimal(root);
        let bytes = builder.finished_data();
        assert!(bytes.len() < 2 * payload_bytes);
        assert_eq!(
            verify_peer_batch(bytes).map(|_| ()),
            Err(CodecError::Invalid(InvalidFlatbuffer::ApparentSizeTooLarge))
        );
    }
}
