//! Length-prefixed, crc32-checked frames with a hard maximum size: the unit every TCP
//! link (peer and client) carries. The layout is documented byte by byte in
//! `docs/FORMATS.md` ("Frames").
//!
//! ```text
//! offset 0: u32 little-endian  payload length in bytes (at most the decoder's maximum)
//! offset 4: u32 little-endian  crc32 (IEEE, as crc32fast computes it) of the payload
//! offset 8: payload
//! ```
//!
//! The decoder works on whatever prefix of the stream has arrived: it asks for more,
//! returns one whole frame, or names what is wrong. The length is checked against the
//! maximum as soon as its four bytes are there, so a hostile or corrupt length never
//! makes the caller wait for, or allocate, more than the maximum.

use std::ops::Range;

use thiserror::Error;

/// Bytes before the payload: the length and the crc32.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The largest payload any corekv link accepts. A frame must hold the largest peer batch
/// (bounded by the transport) and the largest client response (bounded by the server);
/// both stay well below this.
pub const FRAME_BYTES_MAX: usize = 16 << 20;

// The length travels as a u32.
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES == 8);

/// Bytes of the length field, which comes first.
const LENGTH_BYTES: usize = 4;

/// What is wrong with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The payload is longer than the maximum. On decode the connection must be closed:
    /// nothing after this header can be trusted to be a frame boundary.
    #[error("frame payload of {length} bytes exceeds the maximum of {max} bytes")]
    TooLarge { length: u64, max: usize },
    /// The payload does not match its crc32.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
}

/// One whole frame found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedFrame<'a> {
    /// The payload, checked against its crc32.
    pub payload: &'a [u8],
    /// Bytes of the buffer the frame took, header included: drop them before decoding
    /// the next frame.
    pub consumed_bytes: usize,
}

impl DecodedFrame<'_> {
    /// Where the payload sits in the buffer given to [`decode`].
    pub fn payload_range(&self) -> Range<usize> {
        FRAME_HEADER_BYTES..self.consumed_bytes
    }
}

/// Total bytes a frame with a payload of `payload_bytes` takes.
pub const fn frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Appends one frame holding `payload` to `out`. Fails, leaving `out` unchanged, when
/// the payload exceeds [`FRAME_BYTES_MAX`].
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            length: payload.len() as u64,
            max: FRAME_BYTES_MAX,
        });
    }
    let length = u32::try_from(payload.len()).expect("FRAME_BYTES_MAX fits in a u32");
    out.reserve(frame_bytes(payload.len()));
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the frame at the start of `buffer`, accepting payloads of at most
/// `payload_bytes_max` bytes.
///
/// - `Ok(None)`: `buffer` holds only a prefix of a valid frame; read more and call again
///   with the longer buffer.
/// - `Ok(Some(frame))`: one whole, checked frame; the next frame starts at
///   `frame.consumed_bytes`.
/// - `Err(_)`: the stream is corrupt or hostile; close the connection.
///
/// Reads no byte past the frame and allocates nothing.
pub fn decode(
    buffer: &[u8],
    payload_bytes_max: usize,
) -> Result<Option<DecodedFrame<'_>>, FrameError> {
    let Some(length_bytes) = buffer.first_chunk::<LENGTH_BYTES>() else {
        return Ok(None);
    };
    let length = u32::from_le_bytes(*length_bytes);
    // Checked before waiting for the rest: a length over the bound must never make the
    // caller grow its buffer to receive it.
    if u64::from(length) > payload_bytes_max as u64 {
        return Err(FrameError::TooLarge {
            length: u64::from(length),
            max: payload_bytes_max,
        });
    }
    let payload_bytes = length as usize;
    let Some(header) = buffer.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let consumed_bytes = frame_bytes(payload_bytes);
    let Some(payload) = buffer.get(FRAME_HEADER_BYTES..consumed_bytes) else {
        return Ok(None);
    };
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(FrameError::BadChecksum { expected, actual });
    }
    debug_assert!(payload.len() <= payload_bytes_max);
    Ok(Some(DecodedFrame {
        payload,
        consumed_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, payload).expect("payload within the bound");
        out
    }

    fn sample_payload(payload_bytes: usize) -> Vec<u8> {
        (0..payload_bytes).map(|i| (i * 31 + 7) as u8).collect()
    }

    // A frame decodes to exactly the payload it was built from, for sizes around the
    // header size and an empty payload.
    #[test]
    fn round_trip() {
        for payload_bytes in [0, 1, 7, 8, 9, 100, 4096] {
            let payload = sample_payload(payload_bytes);
            let bytes = framed(&payload);
            assert_eq!(bytes.len(), frame_bytes(payload_bytes));
            let frame = decode(&bytes, FRAME_BYTES_MAX).unwrap().unwrap();
            assert_eq!(frame.payload, &payload[..]);
            assert_eq!(frame.consumed_bytes, bytes.len());
            assert_eq!(&bytes[frame.payload_range()], &payload[..]);
        }
    }

    // The header is the length then the crc32, both little-endian, as FORMATS.md says.
    #[test]
    fn header_layout_is_little_endian_length_then_crc() {
        let bytes = framed(b"corekv");
        assert_eq!(&bytes[0..4], &6u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32fast::hash(b"corekv").to_le_bytes());
        assert_eq!(&bytes[8..], b"corekv");
        // The worked example in docs/FORMATS.md, byte for byte.
        let example = [
            6, 0, 0, 0, 0x72, 0x3b, 0x85, 0x94, b'c', b'o', b'r', b'e', b'k', b'v',
        ];
        assert_eq!(bytes, example);
        // The crc32 of the empty payload is 0 with this polynomial and its conventions.
        assert_eq!(framed(b""), vec![0; FRAME_HEADER_BYTES]);
    }

    // Every strict prefix of a frame asks for more input, and never errs or misreads.
    #[test]
    fn partial_input_at_every_split_point_needs_more() {
        let payload = sample_payload(300);
        let bytes = framed(&payload);
        for split in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..split], FRAME_BYTES_MAX),
                Ok(None),
                "split {split}"
            );
        }
        let frame = decode(&bytes, FRAME_BYTES_MAX).unwrap().unwrap();
        assert_eq!(frame.payload, &payload[..]);
    }

    // Frames back to back in one buffer decode one after the other, each consuming only
    // its own bytes, and the bytes after them are left alone.
    #[test]
    fn consecutive_frames_decode_in_order() {
        let payloads = [sample_payload(5), sample_payload(0), sample_payload(77)];
        let mut stream = Vec::new();
        for payload in &payloads {
            encode(&mut stream, payload).unwrap();
        }
        // Half of a further frame: must be reported as "need more", not as an error.
        let tail = framed(b"tail");
        stream.extend_from_slice(&tail[..6]);
        let mut offset = 0;
        for payload in &payloads {
            let frame = decode(&stream[offset..], FRAME_BYTES_MAX).unwrap().unwrap();
            assert_eq!(frame.payload, &payload[..]);
            offset += frame.consumed_bytes;
        }
        assert_eq!(decode(&stream[offset..], FRAME_BYTES_MAX), Ok(None));
    }

    // A length over the maximum is rejected as soon as its four bytes arrive, before the
    // crc or any payload byte exists.
    #[test]
    fn oversized_length_rejected_from_the_length_alone() {
        let max = 1024;
        let length = (max + 1) as u32;
        let header = length.to_le_bytes();
        for available in 0..LENGTH_BYTES {
            assert_eq!(decode(&header[..available], max), Ok(None));
        }
        let expected = Err(FrameError::TooLarge {
            length: u64::from(length),
            max,
        });
        assert_eq!(decode(&header, max), expected);
        assert_eq!(
            decode(&u32::MAX.to_le_bytes(), FRAME_BYTES_MAX),
            Err(FrameError::TooLarge {
                length: u64::from(u32::MAX),
                max: FRAME_BYTES_MAX,
            })
        );
        // Exactly the maximum is fine.
        let bytes = framed(&sample_payload(max));
        assert!(decode(&bytes, max).unwrap().is_some());
        assert!(decode(&bytes, max - 1).is_err());
    }

    // The encoder refuses a payload over the maximum and leaves the output untouched.
    #[test]
    fn encoder_refuses_oversized_payload() {
        let payload = vec![0u8; FRAME_BYTES_MAX + 1];
        let mut out = vec![1, 2, 3];
        assert_eq!(
            encode(&mut out, &payload),
            Err(FrameError::TooLarge {
                length: (FRAME_BYTES_MAX + 1) as u64,
                max: FRAME_BYTES_MAX,
            })
        );
        assert_eq!(out, vec![1, 2, 3]);
        let mut out = Vec::new();
        encode(&mut out, &payload[..FRAME_BYTES_MAX]).unwrap();
        assert_eq!(out.len(), frame_bytes(FRAME_BYTES_MAX));
    }

    // Any single flipped bit in the crc or the payload is caught by the checksum.
    #[test]
    fn bad_crc_is_rejected() {
        let payload = sample_payload(64);
        let bytes = framed(&payload);
        for byte in 4..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[byte] ^= 1 << bit;
                let result = decode(&corrupt, FRAME_BYTES_MAX);
                assert!(
                    matches!(result, Err(FrameError::BadChecksum { .. })),
                    "byte {byte} bit {bit}: {result:?}"
                );
            }
        }
    }
}
