//! What a log entry carries for the state machine, and its bytes: a write (a command
//! stamped with its revision by the leader that proposed it), a close promise, or a
//! compaction. The revision travels in the entry so that every replica applies the same
//! one; it sits right after the tag, so [`LogEntry::revision_of`] reads it without
//! decoding the command.
//!
//! Layout (little-endian): tag `u8`, revision `u64`, then for a write the command's
//! client id, seq and op exactly as [`Command::encode`] writes them after its version
//! byte, and for a lease op the op as `kv::lease` encodes it. Tag 1 is a bare command of
//! the first format, which had no revision: refused.

use super::command::Command;
use super::lease::LeaseOp;
use super::wire::{DecodeError, Reader, Writer};

/// A write: the revision, then the command.
const ENTRY_TAG_WRITE: u8 = 2;
/// A close promise: no later write of the group gets a revision at or below this one.
const ENTRY_TAG_CLOSE: u8 = 3;
/// A compaction: history before the revision may go.
const ENTRY_TAG_COMPACT: u8 = 4;
/// A lease operation (`docs/LEASES.md`), stamped like a write.
const ENTRY_TAG_LEASE: u8 = 5;
/// Tag and revision.
pub const ENTRY_HEADER_BYTES: usize = 1 + 8;

/// One log entry for the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    Write { revision: u64, command: Command },
    Close { revision: u64 },
    Compact { revision: u64 },
    Lease { revision: u64, op: LeaseOp },
}

impl LogEntry {
    /// The bytes of a write entry, built without an intermediate command buffer.
    pub fn encode_write(revision: u64, command: &Command) -> Vec<u8> {
        let mut writer = Writer::with_capacity(ENTRY_HEADER_BYTES + command.encoded_len() - 1);
        writer.u8(ENTRY_TAG_WRITE);
        writer.u64(revision);
        command.encode_body(&mut writer);
        writer.into_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            LogEntry::Write { revision, command } => LogEntry::encode_write(*revision, command),
            LogEntry::Close { revision } => header(ENTRY_TAG_CLOSE, *revision),
            LogEntry::Compact { revision } => header(ENTRY_TAG_COMPACT, *revision),
            LogEntry::Lease { revision, op } => {
                let mut writer = Writer::with_capacity(ENTRY_HEADER_BYTES + 32);
                writer.u8(ENTRY_TAG_LEASE);
                writer.u64(*revision);
                op.encode(&mut writer);
                writer.into_bytes()
            }
        }
    }

    /// Decodes an entry's bytes; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        let mut reader = Reader::new(bytes);
        let tag = reader.u8()?;
        let revision = reader.u64()?;
        let entry = match tag {
            ENTRY_TAG_WRITE => LogEntry::Write {
                revision,
                command: Command::decode_body(&mut reader)?,
            },
            ENTRY_TAG_CLOSE => LogEntry::Close { revision },
            ENTRY_TAG_COMPACT => LogEntry::Compact { revision },
            ENTRY_TAG_LEASE => LogEntry::Lease {
                revision,
                op: LeaseOp::decode(&mut reader)?,
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "log entry",
                    tag,
                })
            }
        };
        reader.finish()?;
        Ok(entry)
    }

    /// The revision a write, close or lease entry's bytes carry, read from the header
    /// alone: a new leader scans its log for the highest one it must stay above. `None`
    /// for bytes that are none of those.
    pub fn revision_of(bytes: &[u8]) -> Option<u64> {
        let tag = *bytes.first()?;
        if tag != ENTRY_TAG_WRITE && tag != ENTRY_TAG_CLOSE && tag != ENTRY_TAG_LEASE {
            return None;
        }
        let revision = bytes.get(1..ENTRY_HEADER_BYTES)?;
        Some(u64::from_le_bytes(revision.try_into().expect("8 bytes")))
    }
}

impl LogEntry {
    /// Whether an entry's bytes carry a write (as opposed to a close or a compaction).
    pub fn is_write(bytes: &[u8]) -> bool {
        bytes.first() == Some(&ENTRY_TAG_WRITE)
    }
}

fn header(tag: u8, revision: u64) -> Vec<u8> {
    let mut writer = Writer::with_capacity(ENTRY_HEADER_BYTES);
    writer.u8(tag);
    writer.u64(revision);
    writer.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Op, PutRequest};

    fn command() -> Command {
        Command {
            client_id: 7,
            seq: 3,
            op: Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            }),
        }
    }

    // Every kind round-trips, the header gives the revision without decoding, and damaged
    // or first-format bytes are refused.
    #[test]
    fn entries_round_trip() {
        let revision = (1_700_000_000_000 << 16) | 5;
        for entry in [
            LogEntry::Write {
                revision,
                command: command(),
            },
            LogEntry::Close { revision },
            LogEntry::Compact { revision },
            LogEntry::Lease {
                revision,
                op: LeaseOp::KeepAlive { id: 3 },
            },
        ] {
            let bytes = entry.encode();
            assert_eq!(LogEntry::decode(&bytes), Ok(entry.clone()));
            let expected = (!matches!(entry, LogEntry::Compact { .. })).then_some(revision);
            assert_eq!(LogEntry::revision_of(&bytes), expected);
            for length in 0..bytes.len() {
                assert!(LogEntry::decode(&bytes[..length]).is_err(), "{length}");
            }
        }
        assert!(LogEntry::decode(&command().encode()).is_err());
        assert_eq!(
            LogEntry::encode_write(revision, &command()).len(),
            ENTRY_HEADER_BYTES + command().encoded_len() - 1
        );
    }
}
