//! Maps Raft messages and client requests to and from the FlatBuffers schema.
