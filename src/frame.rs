//! Length-prefixed, crc32-checked frames with a hard maximum size.
