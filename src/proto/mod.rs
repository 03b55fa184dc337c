//! FlatBuffers code generated from `schema/` by `tools/gen-schema.sh`.
