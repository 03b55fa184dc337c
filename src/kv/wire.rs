//! Little-endian byte writing and bounds-checked reading shared by the command, response
//! and snapshot encodings, so every decoder rejects a bad length before it allocates.

use thiserror::Error;

/// Why bytes could not be decoded into a command, a response or an error value.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("input ends early: {needed} bytes needed, {remaining} remaining")]
    Truncated { needed: u64, remaining: u64 },
    #[error("length or count {length} exceeds the {remaining} bytes remaining")]
    LengthExceedsInput { length: u64, remaining: u64 },
    #[error("{bytes} bytes left over after the value")]
    TrailingBytes { bytes: u64 },
    #[error("unsupported encoding version {version}")]
    UnsupportedVersion { version: u8 },
    #[error("unknown {field} tag {tag}")]
    UnknownTag { field: &'static str, tag: u8 },
    #[error("unknown bits set in {field} flags {flags:#04x}")]
    UnknownFlags { field: &'static str, flags: u8 },
}

/// Appends fixed-width little-endian fields to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(capacity_bytes: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity_bytes),
        }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// A `u32` count of elements. Counts are bounded far below `u32::MAX` by the limits
    /// (keys, values, txn ops, sessions), so a larger one is a broken invariant.
    pub(crate) fn count(&mut self, count: usize) {
        let count = u32::try_from(count).expect("encoded count exceeds u32::MAX");
        self.u32(count);
    }

    /// A byte string: `u32` length, then the bytes.
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.count(value.len());
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn raw(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads fixed-width little-endian fields from a slice, failing instead of panicking
/// when the slice is too short.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        if length > self.bytes.len() {
            return Err(DecodeError::Truncated {
                needed: length as u64,
                remaining: self.bytes.len() as u64,
            });
        }
        let (head, tail) = self.bytes.split_at(length);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut field = [0u8; 4];
        field.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(field))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut field = [0u8; 8];
        field.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(field))
    }

    /// A boolean stored as one byte, 0 or 1; anything else is not a canonical encoding.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { field, tag }),
        }
    }

    /// A `u32` element count, rejected when even elements of `element_bytes_min` bytes
    /// each could not fit in what is left, so a forged count never drives an allocation.
    pub(crate) fn count(&mut self, element_bytes_min: usize) -> Result<usize, DecodeError> {
        debug_assert!(element_bytes_min > 0);
        let count = self.u32()? as usize;
        let remaining = self.remaining();
        if count > remaining / element_bytes_min {
            return Err(DecodeError::LengthExceedsInput {
                length: count as u64,
                remaining: remaining as u64,
            });
        }
        Ok(count)
    }

    /// A byte string: `u32` length, then that many bytes, copied out.
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let length = self.count(1)?;
        Ok(self.take(length)?.to_vec())
    }

    /// Fails unless every byte has been consumed, so each value has one encoding.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                bytes: self.bytes.len() as u64,
            })
        }
    }
}
