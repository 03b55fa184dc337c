//! Watch: `WatchCreateRequest`, `WatchCancelRequest` and `WatchProgressRequest`, and the
//! `WatchResult` stream a watch answers with (its creation, its events, progress
//! notifications and its end).
//!
//! A watch is the one request answered many times: every `WatchResult` of one watch
//! carries the request id of its create request, which is also its watch id, and only
//! the last one (`canceled`) ends it. `Response.revision` of each is the watch's
//! progress: every event at or below it has been sent.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use super::key_value::{decode_key_value, encode_key_value};
use super::{bytes_of, create_required_bytes, create_string, unknown_enum};
use crate::codec::{create_bytes, CodecError};
use crate::kv::{self, KeyValue};
use crate::proto;

/// Streams the changes of one key (empty `range_end`) or a range of keys, as Range reads
/// its bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCreate {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The first revision to send changes of (inclusive); 0: changes after now.
    pub start_revision: u64,
    pub prev_kv: bool,
    /// Periodic progress notifications while no events come.
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchCreate {
    /// The watch of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> WatchCreate {
        WatchCreate {
            key: key.into(),
            ..WatchCreate::default()
        }
    }

    /// The watch of every key that starts with `prefix` (every key for an empty one).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> WatchCreate {
        let key = prefix.into();
        let range_end = kv::prefix_end(&key);
        WatchCreate {
            key,
            range_end,
            ..WatchCreate::default()
        }
    }

    /// Bytes of the request's fields (its bound is the frame's).
    pub fn encoded_len(&self) -> usize {
        self.key.len() + self.range_end.len() + 32
    }
}

/// What changed in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of a watched key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// After a put: the new pair. After a delete: the key, with `mod_revision` the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The pair before the change, when the watch asked for it and the key existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }

    /// Bytes the event takes on the wire, about.
    pub fn encoded_bytes(&self) -> usize {
        let pair =
            |kv: &KeyValue| kv::KeyValue::ENCODED_BYTES_FIXED + kv.key.len() + kv.value.len();
        16 + pair(&self.kv) + self.prev_kv.as_ref().map_or(0, pair)
    }
}

/// One response of a watch's stream (or the answer to a cancel or progress request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    pub watch_id: u64,
    /// Every event at or below this revision has been sent (the envelope's revision).
    pub revision: u64,
    /// The first response of a watch.
    pub created: bool,
    /// The last response of a watch.
    pub canceled: bool,
    /// With a cancel for compaction: the group's compaction revision (a watch may start
    /// after it).
    pub compact_revision: u64,
    /// Why the server ended the watch; empty when the client cancelled it.
    pub cancel_reason: String,
    /// In revision order, every event of one revision in one response.
    pub events: Vec<WatchEvent>,
}

impl WatchResponse {
    /// Whether this is a progress notification (nothing but the revision).
    pub fn is_progress(&self) -> bool {
        !self.created && !self.canceled && self.events.is_empty()
    }
}

pub(super) fn encode_create<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    create: &WatchCreate,
) -> WIPOffset<UnionWIPOffset> {
    let key = create_required_bytes(builder, &create.key);
    let range_end = create_bytes(builder, &create.range_end);
    proto::WatchCreateRequest::create(
        builder,
        &proto::WatchCreateRequestArgs {
            key: Some(key),
            range_end,
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            progress_notify: create.progress_notify,
            no_put: create.no_put,
            no_delete: create.no_delete,
        },
    )
    .as_union_value()
}

pub(super) fn decode_create(create: proto::WatchCreateRequest<'_>) -> WatchCreate {
    WatchCreate {
        key: create.key().bytes().to_vec(),
        range_end: bytes_of(create.range_end()),
        start_revision: create.start_revision(),
        prev_kv: create.prev_kv(),
        progress_notify: create.progress_notify(),
        no_put: create.no_put(),
        no_delete: create.no_delete(),
    }
}

pub(super) fn encode_cancel<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    watch_id: u64,
) -> WIPOffset<UnionWIPOffset> {
    proto::WatchCancelRequest::create(builder, &proto::WatchCancelRequestArgs { watch_id })
        .as_union_value()
}

pub(super) fn encode_progress<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    watch_id: u64,
) -> WIPOffset<UnionWIPOffset> {
    proto::WatchProgressRequest::create(builder, &proto::WatchProgressRequestArgs { watch_id })
        .as_union_value()
}

pub(super) fn encode_result<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    watch: &WatchResponse,
) -> WIPOffset<UnionWIPOffset> {
    let events: Vec<_> = watch
        .events
        .iter()
        .map(|event| {
            let kv = encode_key_value(builder, &event.kv);
            let prev_kv = event
                .prev_kv
                .as_ref()
                .map(|prev| encode_key_value(builder, prev));
            let kind = match event.kind {
                EventKind::Put => proto::EventKind::Put,
                EventKind::Delete => proto::EventKind::Delete,
            };
            proto::Event::create(
                builder,
                &proto::EventArgs {
                    kind,
                    kv: Some(kv),
                    prev_kv,
                },
            )
        })
        .collect();
    let events = (!events.is_empty()).then(|| builder.create_vector(&events));
    let cancel_reason = create_string(builder, &watch.cancel_reason);
    proto::WatchResult::create(
        builder,
        &proto::WatchResultArgs {
            watch_id: watch.watch_id,
            created: watch.created,
            canceled: watch.canceled,
            compact_revision: watch.compact_revision,
            events,
            cancel_reason,
        },
    )
    .as_union_value()
}

pub(super) fn decode_result(
    watch: proto::WatchResult<'_>,
    revision: u64,
) -> Result<WatchResponse, CodecError> {
    let mut events = Vec::new();
    for event in watch.events().iter().flatten() {
        let kind = match event.kind() {
            proto::EventKind::Put => EventKind::Put,
            proto::EventKind::Delete => EventKind::Delete,
            unknown => return Err(unknown_enum("Event.kind", unknown.0)),
        };
        events.push(WatchEvent {
            kind,
            kv: decode_key_value(event.kv()),
            prev_kv: event.prev_kv().map(decode_key_value),
        });
    }
    Ok(WatchResponse {
        watch_id: watch.watch_id(),
        revision,
        created: watch.created(),
        canceled: watch.canceled(),
        compact_revision: watch.compact_revision(),
        cancel_reason: watch.cancel_reason().unwrap_or_default().to_string(),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{
        decode_request, decode_response, request_to_bytes, response_to_bytes, ApiRequest,
        ApiResponse, ApiResult, RequestKind,
    };
    use super::*;

    fn pair(key: &str, revision: u64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            create_revision: 1,
            mod_revision: revision,
            version: 2,
            lease: 0,
        }
    }

    // Every watch request round-trips with all its options.
    #[test]
    fn watch_requests_round_trip() {
        let create = WatchCreate {
            start_revision: 9,
            prev_kv: true,
            progress_notify: true,
            no_put: true,
            no_delete: false,
            ..WatchCreate::prefix("p/")
        };
        for kind in [
            RequestKind::WatchCreate {
                create,
                seen_revision: 4,
            },
            RequestKind::WatchCancel { watch_id: 7 },
            RequestKind::WatchProgress { watch_id: 8 },
        ] {
            let request = ApiRequest {
                request_id: 3,
                kind,
            };
            assert_eq!(decode_request(&request_to_bytes(&request)), Ok(request));
        }
    }

    // Events, progress and cancels round-trip, with the envelope's revision.
    #[test]
    fn watch_responses_round_trip() {
        let events = vec![
            WatchEvent {
                kind: EventKind::Put,
                kv: pair("a", 5),
                prev_kv: Some(pair("a", 4)),
            },
            WatchEvent {
                kind: EventKind::Delete,
                kv: pair("b", 5),
                prev_kv: None,
            },
        ];
        for watch in [
            WatchResponse {
                watch_id: 3,
                revision: 5,
                events,
                ..WatchResponse::default()
            },
            WatchResponse {
                watch_id: 3,
                revision: 6,
                ..WatchResponse::default()
            },
            WatchResponse {
                watch_id: 3,
                revision: 6,
                canceled: true,
                compact_revision: 6,
                cancel_reason: "compacted".into(),
                ..WatchResponse::default()
            },
        ] {
            let response = ApiResponse {
                request_id: 3,
                result: Ok(ApiResult::Watch(watch)),
            };
            assert_eq!(decode_response(&response_to_bytes(&response)), Ok(response));
        }
    }
}
