//! `KeyValue`: the pair with its revisions that a read returns, and that a put or delete
//! returns as it was before (`prev_kv`).

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{bytes_of, create_required_bytes};
use crate::codec::{create_bytes, create_children};
use crate::kv;
use crate::proto;

/// A list of pairs on the wire.
type KeyValues<'b> = flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<proto::KeyValue<'b>>>;

pub(super) fn encode_key_value<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    key_value: &kv::KeyValue,
) -> WIPOffset<proto::KeyValue<'b>> {
    let key = create_required_bytes(builder, &key_value.key);
    let value = create_bytes(builder, &key_value.value);
    proto::KeyValue::create(
        builder,
        &proto::KeyValueArgs {
            key: Some(key),
            value,
            create_revision: key_value.create_revision,
            mod_revision: key_value.mod_revision,
            version: key_value.version,
            lease: key_value.lease,
        },
    )
}

/// An empty list is an absent field.
pub(super) fn encode_key_values<'b>(
    builder: &mut FlatBufferBuilder<'b>,
    key_values: &[kv::KeyValue],
) -> Option<WIPOffset<KeyValues<'b>>> {
    create_children(builder, key_values, encode_key_value)
}

pub(super) fn decode_key_value(key_value: proto::KeyValue<'_>) -> kv::KeyValue {
    kv::KeyValue {
        key: key_value.key().bytes().to_vec(),
        value: bytes_of(key_value.value()),
        create_revision: key_value.create_revision(),
        mod_revision: key_value.mod_revision(),
        version: key_value.version(),
        lease: key_value.lease(),
    }
}

pub(super) fn decode_key_values(key_values: Option<KeyValues<'_>>) -> Vec<kv::KeyValue> {
    key_values.map_or_else(Vec::new, |key_values| {
        key_values.iter().map(decode_key_value).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A pair with every field at its edge (empty key and value, zero and maximal numbers)
    // reads back as written, alone and in a list.
    #[test]
    fn key_values_round_trip() {
        let pairs = vec![
            kv::KeyValue {
                key: Vec::new(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            },
            kv::KeyValue {
                key: vec![0xff; 3],
                value: vec![0; 5],
                create_revision: u64::MAX,
                mod_revision: u64::MAX,
                version: u64::MAX,
                lease: u64::MAX,
            },
        ];
        for pair in &pairs {
            let mut builder = FlatBufferBuilder::new();
            let root = encode_key_value(&mut builder, pair);
            builder.finish_minimal(root);
            let read = flatbuffers::root::<proto::KeyValue>(builder.finished_data()).unwrap();
            assert_eq!(&decode_key_value(read), pair);
        }
        let mut builder = FlatBufferBuilder::new();
        assert!(encode_key_values(&mut builder, &[]).is_none());
        let list = encode_key_values(&mut builder, &pairs).unwrap();
        let result = proto::RangeResult::create(
            &mut builder,
            &proto::RangeResultArgs {
                kvs: Some(list),
                ..Default::default()
            },
        );
        builder.finish_minimal(result);
        let read = flatbuffers::root::<proto::RangeResult>(builder.finished_data()).unwrap();
        assert_eq!(decode_key_values(read.kvs()), pairs);
        assert_eq!(decode_key_values(None), Vec::new());
    }
}
