//! FlatBuffers code generated from `schema/` by `tools/gen-schema.sh`: the types of every
//! message that crosses a wire or a disk. Never edit the `*_generated.rs` files by hand;
//! change the schema and rerun the script (CI runs it with `--check`).
//!
//! Everything lives in the schema namespace `corekv` and is re-exported flat here, so
//! `proto::Message` is the wire form of `raft::Message` and `proto::Request` a client
//! request. Read buffers from outside only through `crate::codec`, which runs the
//! verifier with corekv's bounds before any accessor touches the bytes.

// The generated code reads and writes buffers through unsafe, unchecked accessors (sound
// once the verifier has accepted the buffer), carries compatibility items the crate has
// deprecated, and follows flatc's formatting and naming, not ours.
#[allow(
    unsafe_code,
    deprecated,
    dead_code,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
#[rustfmt::skip]
#[path = "raft_generated.rs"]
mod raft_generated;

#[allow(
    unsafe_code,
    deprecated,
    dead_code,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
#[rustfmt::skip]
#[path = "client_generated.rs"]
mod client_generated;

pub use client_generated::corekv::*;
pub use raft_generated::corekv::*;
