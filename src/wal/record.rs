//! WAL records and batches to and from bytes, exactly as `docs/FORMATS.md` lays them
//! out. Pure code (no I/O, no glommio) so that it can be unit tested and fuzzed.

use std::sync::Arc;

/// The unit of O_DIRECT I/O and of padding: a batch always starts on a block boundary and
/// is padded with zeros to the next one, so no block that holds acknowledged data is ever
/// written again.
pub const BLOCK_BYTES: usize = 4096;
const _: () = assert!(BLOCK_BYTES.is_power_of_two() && BLOCK_BYTES % 512 == 0);

/// "KWAL" read as a little-endian u32: the first four bytes of every batch.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"KWAL");
/// The only batch format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Fixed size of a batch header.
pub const BATCH_HEADER_BYTES: usize = 48;
/// No batch is larger than this, whatever the configuration says: it bounds what a decoder
/// will believe from a length field.
pub const BATCH_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const _: () = assert!(BATCH_BYTES_LIMIT % BLOCK_BYTES == 0);
const _: () = assert!(BATCH_HEADER_BYTES < BLOCK_BYTES);

/// kind u8 + group id u64 + body length u32.
pub const RECORD_HEADER_BYTES: usize = 13;
/// first index u64 + entry count u32 at the start of an Entries body.
pub const ENTRIES_BODY_HEADER_BYTES: usize = 12;
/// term u64 + entry kind u8 + payload length u32 before each entry payload.
pub const ENTRY_HEADER_BYTES: usize = 13;
/// term, vote, commit.
pub const HARD_STATE_BODY_BYTES: usize = 24;
/// index, term.
pub const COMPACTION_BODY_BYTES: usize = 16;

/// Record kind tags on disk.
pub const RECORD_KIND_ENTRIES: u8 = 1;
pub const RECORD_KIND_HARD_STATE: u8 = 2;
pub const RECORD_KIND_COMPACTION: u8 = 3;
pub const RECORD_KIND_GROUP_REMOVED: u8 = 4;
pub const RECORD_KIND_LOG_RESET: u8 = 5;

/// One log entry of one group. The payload is shared so that one entry can sit in the
/// caller's log, the WAL cache and a batch without being copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    /// Opaque to the WAL; the caller's entry type (normal, configuration change, ...).
    pub kind: u8,
    pub payload: Arc<[u8]>,
}

/// The Raft state that must be durable before a vote or an append is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// A point of a group's log: an index and the term of the entry at that index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// What one record says about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Consecutive entries starting at `entries[0].index`. Appending at index `i` truncates
    /// every entry of the group at `i` or later written by earlier records: later records
    /// win.
    Entries { entries: Vec<Entry> },
    /// The group's new hard state; replaces the previous one.
    HardState(HardState),
    /// Entries up to and including `index` are covered by a snapshot whose last entry is
    /// (`index`, `term`); they are garbage from now on. Later entries stay. (When the
    /// log disagrees with the snapshot about the term at `index`, the writer records a
    /// [`RecordKind::LogReset`] instead, so that replay never needs that term.)
    Compaction { index: u64, term: u64 },
    /// The group left this shard: forget everything written for it before.
    GroupRemoved,
    /// The log is replaced by a snapshot whose last entry is (`index`, `term`): every entry
    /// is dropped, as Raft does when it installs a snapshot that conflicts with its log.
    LogReset { index: u64, term: u64 },
}

/// One record of one group inside a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub group_id: u64,
    pub kind: RecordKind,
}

/// A record that must not be written: a bug in the caller, reported as a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("an Entries record must hold at least one entry")]
    NoEntries,
    #[error("entry index 0 is reserved (the first real entry has index 1)")]
    ZeroIndex,
    #[error("entries are not consecutive: index {found} follows index {previous}")]
    NotConsecutive { previous: u64, found: u64 },
    #[error("an Entries record holds {count} entries, more than a u32 counts")]
    TooManyEntries { count: usize },
    #[error("an entry payload of {bytes} bytes is longer than a u32 counts")]
    PayloadTooLarge { bytes: usize },
    #[error("a record of {bytes} bytes does not fit in a batch of at most {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
}

impl Record {
    /// Checks what encoding relies on; the writer calls it before accepting a record.
    pub fn validate(&self) -> Result<(), RecordError> {
        if let RecordKind::Entries { entries } = &self.kind {
            let Some(first) = entries.first() else {
                return Err(RecordError::NoEntries);
            };
            if first.index == 0 {
                return Err(RecordError::ZeroIndex);
            }
            if u32::try_from(entries.len()).is_err() {
                return Err(RecordError::TooManyEntries {
                    count: entries.len(),
                });
            }
            for pair in entries.windows(2) {
                if pair[0].index.checked_add(1) != Some(pair[1].index) {
                    return Err(RecordError::NotConsecutive {
                        previous: pair[0].index,
                        found: pair[1].index,
                    });
                }
            }
            for entry in entries {
                if u32::try_from(entry.payload.len()).is_err() {
                    return Err(RecordError::PayloadTooLarge {
                        bytes: entry.payload.len(),
                    });
                }
            }
        }
        let bytes = self.encoded_bytes();
        if bytes > BATCH_BYTES_LIMIT - BATCH_HEADER_BYTES {
            return Err(RecordError::RecordTooLarge {
                bytes,
                limit: BATCH_BYTES_LIMIT - BATCH_HEADER_BYTES,
            });
        }
        Ok(())
    }

    /// Bytes this record takes inside a batch payload.
    pub fn encoded_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.body_bytes()
    }

    fn body_bytes(&self) -> usize {
        match &self.kind {
            RecordKind::Entries { entries } => {
                ENTRIES_BODY_HEADER_BYTES
                    + entries
                        .iter()
                        .map(|entry| ENTRY_HEADER_BYTES + entry.payload.len())
                        .sum::<usize>()
            }
            RecordKind::HardState(_) => HARD_STATE_BODY_BYTES,
            RecordKind::Compaction { .. } | RecordKind::LogReset { .. } => COMPACTION_BODY_BYTES,
            RecordKind::GroupRemoved => 0,
        }
    }

    /// Appends the record's bytes to `out`. The record must have passed [`Record::validate`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_bytes = self.body_bytes();
        let start = out.len();
        out.reserve(RECORD_HEADER_BYTES + body_bytes);
        let kind = match &self.kind {
            RecordKind::Entries { .. } => RECORD_KIND_ENTRIES,
            RecordKind::HardState(_) => RECORD_KIND_HARD_STATE,
            RecordKind::Compaction { .. } => RECORD_KIND_COMPACTION,
            RecordKind::GroupRemoved => RECORD_KIND_GROUP_REMOVED,
            RecordKind::LogReset { .. } => RECORD_KIND_LOG_RESET,
        };
        out.push(kind);
        out.extend_from_slice(&self.group_id.to_le_bytes());
        out.extend_from_slice(&to_u32(body_bytes).to_le_bytes());
        match &self.kind {
            RecordKind::Entries { entries } => {
                assert!(
                    !entries.is_empty(),
                    "an Entries record must be validated first"
                );
                out.extend_from_slice(&entries[0].index.to_le_bytes());
                out.extend_from_slice(&to_u32(entries.len()).to_le_bytes());
                for entry in entries {
                    out.extend_from_slice(&entry.term.to_le_bytes());
                    out.push(entry.kind);
                    out.extend_from_slice(&to_u32(entry.payload.len()).to_le_bytes());
                    out.extend_from_slice(&entry.payload);
                }
            }
            RecordKind::HardState(state) => {
                out.extend_from_slice(&state.term.to_le_bytes());
                out.extend_from_slice(&state.vote.to_le_bytes());
                out.extend_from_slice(&state.commit.to_le_bytes());
            }
            RecordKind::Compaction { index, term } | RecordKind::LogReset { index, term } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
            }
            RecordKind::GroupRemoved => {}
        }
        assert_eq!(out.len() - start, RECORD_HEADER_BYTES + body_bytes);
    }
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).expect("lengths are bounded by BATCH_BYTES_LIMIT before encoding")
}

/// The fields of a batch header besides magic, version and checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Batch sequence number: 1 for the first batch of a WAL, +1 for every batch after,
    /// across segments.
    pub sequence: u64,
    /// Sequence number of the segment the batch was written to.
    pub segment: u64,
    /// Byte offset of the batch inside its segment (a multiple of [`BLOCK_BYTES`]).
    pub offset: u32,
    /// Bytes of records after the header.
    pub payload_bytes: u32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Bytes the batch occupies on disk: header, payload and zero padding to the block.
    pub fn padded_bytes(&self) -> usize {
        padded_batch_bytes(self.payload_bytes as usize)
    }
}

/// Bytes a batch with `payload_bytes` of records occupies on disk.
pub fn padded_batch_bytes(payload_bytes: usize) -> usize {
    (BATCH_HEADER_BYTES + payload_bytes).div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// Accumulates the records of one batch. The header space is reserved up front so that
/// sealing writes the header in place, and the buffer is reused batch after batch.
#[derive(Debug)]
pub struct BatchBuilder {
    bytes: Vec<u8>,
    record_count: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        BatchBuilder {
            bytes: vec![0; BATCH_HEADER_BYTES],
            record_count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Header and records encoded so far, without padding.
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one validated record.
    pub fn push(&mut self, record: &Record) {
        record.encode(&mut self.bytes);
        self.record_count += 1;
        assert!(
            self.bytes.len() <= BATCH_BYTES_LIMIT,
            "the writer bounds batches first"
        );
    }

    /// Writes the header for the given place on disk and returns header plus records;
    /// the caller pads to [`padded_batch_bytes`] with zeros.
    pub fn seal(&mut self, sequence: u64, segment: u64, offset: u32) -> &[u8] {
        let payload_bytes = to_u32(self.bytes.len() - BATCH_HEADER_BYTES);
        let header = BatchHeader {
            sequence,
            segment,
            offset,
            payload_bytes,
            record_count: self.record_count,
        };
        write_header(&mut self.bytes, &header);
        &self.bytes
    }

    /// Empties the builder for the next batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.bytes.truncate(BATCH_HEADER_BYTES);
        self.bytes[..BATCH_HEADER_BYTES].fill(0);
        self.record_count = 0;
    }
}

/// Fills `bytes[..BATCH_HEADER_BYTES]` for a batch whose payload follows in
/// `bytes[BATCH_HEADER_BYTES..]`.
fn write_header(bytes: &mut [u8], header: &BatchHeader) {
    assert_eq!(
        bytes.len(),
        BATCH_HEADER_BYTES + header.payload_bytes as usize
    );
    assert!(
        header.offset as usize % BLOCK_BYTES == 0,
        "batches start on a block"
    );
    bytes[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    bytes[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[6..8].copy_from_slice(&0u16.to_le_bytes());
    bytes[8..16].copy_from_slice(&header.sequence.to_le_bytes());
    bytes[16..24].copy_from_slice(&header.segment.to_le_bytes());
    bytes[24..28].copy_from_slice(&header.offset.to_le_bytes());
    bytes[28..32].copy_from_slice(&header.payload_bytes.to_le_bytes());
    bytes[32..36].copy_from_slice(&header.record_count.to_le_bytes());
    bytes[36..40].copy_from_slice(&0u32.to_le_bytes());
    let mut batch_crc = crc32fast::Hasher::new();
    batch_crc.update(&bytes[0..40]);
    batch_crc.update(&bytes[BATCH_HEADER_BYTES..]);
    bytes[40..44].copy_from_slice(&batch_crc.finalize().to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&header_crc.to_le_bytes());
}

/// Why bytes are not a valid batch. The variants up to `BadBatchChecksum` are what a write
/// torn by a crash can leave behind; the others cannot come from a torn write of a batch
/// this code produced (see [`DecodeError::is_possible_torn_write`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{available} bytes are too few for a batch header")]
    HeaderTruncated { available: usize },
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadHeaderChecksum { stored: u32, computed: u32 },
    #[error("the batch claims {needed} bytes but only {available} are there")]
    BatchTruncated { needed: usize, available: usize },
    #[error("batch checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadBatchChecksum { stored: u32, computed: u32 },
    #[error("unsupported format version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("payload of {payload_bytes} bytes exceeds the batch limit")]
    PayloadTooLarge { payload_bytes: u32 },
    #[error(
        "batch written for segment {segment} offset {offset}, \
         found in segment {expected_segment} offset {expected_offset}"
    )]
    WrongLocation {
        segment: u64,
        offset: u32,
        expected_segment: u64,
        expected_offset: u64,
    },
    #[error("padding after the payload is not zero")]
    PaddingNotZero,
    #[error("record {record}: unknown kind {kind}")]
    UnknownRecordKind { record: u32, kind: u8 },
    #[error("record {record} runs past the end of the payload")]
    RecordTruncated { record: u32 },
    #[error("record {record}: its body length does not match its content")]
    RecordBodyMismatch { record: u32 },
    #[error("record {record}: {reason}")]
    InvalidRecord { record: u32, reason: RecordError },
    #[error("header counts {declared} records but the payload holds {found}")]
    RecordCountMismatch { declared: u32, found: u32 },
}

impl DecodeError {
    /// True for what a crash in the middle of writing a valid batch over zeroed blocks can
    /// produce: missing or partial blocks. Everything else means the bytes were written
    /// whole and damaged later, or were never written by this code.
    pub fn is_possible_torn_write(&self) -> bool {
        matches!(
            self,
            DecodeError::HeaderTruncated { .. }
                | DecodeError::BadMagic { .. }
                | DecodeError::BadHeaderChecksum { .. }
                | DecodeError::BatchTruncated { .. }
                | DecodeError::BadBatchChecksum { .. }
        )
    }
}

/// One entry inside a decoded batch; the payload borrows the batch bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

impl EntryView<'_> {
    pub fn to_entry(&self) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            kind: self.kind,
            payload: self.payload.into(),
        }
    }
}

/// What a decoded record says; entry payloads borrow the batch bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordViewKind<'a> {
    Entries { entries: Vec<EntryView<'a>> },
    HardState(HardState),
    Compaction { index: u64, term: u64 },
    GroupRemoved,
    LogReset { index: u64, term: u64 },
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub group_id: u64,
    pub kind: RecordViewKind<'a>,
}

impl RecordView<'_> {
    pub fn to_record(&self) -> Record {
        let kind = match &self.kind {
            RecordViewKind::Entries { entries } => RecordKind::Entries {
                entries: entries.iter().map(EntryView::to_entry).collect(),
            },
            RecordViewKind::HardState(state) => RecordKind::HardState(*state),
            RecordViewKind::Compaction { index, term } => RecordKind::Compaction {
                index: *index,
                term: *term,
            },
            RecordViewKind::GroupRemoved => RecordKind::GroupRemoved,
            RecordViewKind::LogReset { index, term } => RecordKind::LogReset {
                index: *index,
                term: *term,
            },
        };
        Record {
            group_id: self.group_id,
            kind,
        }
    }
}

/// A verified batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    pub records: Vec<RecordView<'a>>,
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("two bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Decodes and verifies the header at the start of `bytes`: magic, header checksum,
/// version, reserved fields and the payload bound. It does not look at the payload.
pub fn decode_batch_header(bytes: &[u8]) -> Result<BatchHeader, DecodeError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(DecodeError::HeaderTruncated {
            available: bytes.len(),
        });
    }
    let magic = read_u32(bytes, 0);
    if magic != BATCH_MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let stored = read_u32(bytes, 44);
    let computed = crc32fast::hash(&bytes[0..44]);
    if stored != computed {
        return Err(DecodeError::BadHeaderChecksum { stored, computed });
    }
    let version = read_u16(bytes, 4);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    if read_u16(bytes, 6) != 0 || read_u32(bytes, 36) != 0 {
        return Err(DecodeError::ReservedNotZero);
    }
    let header = BatchHeader {
        sequence: read_u64(bytes, 8),
        segment: read_u64(bytes, 16),
        offset: read_u32(bytes, 24),
        payload_bytes: read_u32(bytes, 28),
        record_count: read_u32(bytes, 32),
    };
    if header.payload_bytes as usize > BATCH_BYTES_LIMIT - BATCH_HEADER_BYTES {
        return Err(DecodeError::PayloadTooLarge {
            payload_bytes: header.payload_bytes,
        });
    }
    Ok(header)
}

/// Decodes and verifies the batch at the start of `bytes`, which was read from `segment`
/// at byte `offset`. `bytes` may extend past the batch (to the end of the segment); the
/// batch, its padding included, must fit in it.
pub fn decode_batch(bytes: &[u8], segment: u64, offset: u64) -> Result<BatchView<'_>, DecodeError> {
    let header = decode_batch_header(bytes)?;
    let padded = header.padded_bytes();
    if padded > bytes.len() {
        return Err(DecodeError::BatchTruncated {
            needed: padded,
            available: bytes.len(),
        });
    }
    let payload_end = BATCH_HEADER_BYTES + header.payload_bytes as usize;
    let stored = read_u32(bytes, 40);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..40]);
    hasher.update(&bytes[BATCH_HEADER_BYTES..payload_end]);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(DecodeError::BadBatchChecksum { stored, computed });
    }
    if header.segment != segment || u64::from(header.offset) != offset {
        return Err(DecodeError::WrongLocation {
            segment: header.segment,
            offset: header.offset,
            expected_segment: segment,
            expected_offset: offset,
        });
    }
    if bytes[payload_end..padded].iter().any(|&byte| byte != 0) {
        return Err(DecodeError::PaddingNotZero);
    }
    let records = decode_records(&bytes[BATCH_HEADER_BYTES..payload_end], header.record_count)?;
    Ok(BatchView { header, records })
}

/// Decodes exactly `declared` records filling `payload`.
fn decode_records(payload: &[u8], declared: u32) -> Result<Vec<RecordView<'_>>, DecodeError> {
    // Every record takes at least a header, which bounds the allocation whatever the
    // header claims.
    let mut records =
        Vec::with_capacity((declared as usize).min(payload.len() / RECORD_HEADER_BYTES));
    let mut at = 0;
    let mut ordinal: u32 = 0;
    while at < payload.len() {
        if ordinal == declared {
            return Err(DecodeError::RecordCountMismatch {
                declared,
                found: ordinal + 1,
            });
        }
        if payload.len() - at < RECORD_HEADER_BYTES {
            return Err(DecodeError::RecordTruncated { record: ordinal });
        }
        let kind = payload[at];
        let group_id = read_u64(payload, at + 1);
        let body_bytes = read_u32(payload, at + 9) as usize;
        let body_start = at + RECORD_HEADER_BYTES;
        if payload.len() - body_start < body_bytes {
            return Err(DecodeError::RecordTruncated { record: ordinal });
        }
        let body = &payload[body_start..body_start + body_bytes];
        let view_kind = decode_record_body(kind, body, ordinal)?;
        records.push(RecordView {
            group_id,
            kind: view_kind,
        });
        at = body_start + body_bytes;
        ordinal += 1;
    }
    if ordinal != declared {
        return Err(DecodeError::RecordCountMismatch {
            declared,
            found: ordinal,
        });
    }
    Ok(records)
}

fn decode_record_body(
    kind: u8,
    body: &[u8],
    record: u32,
) -> Result<RecordViewKind<'_>, DecodeError> {
    let mismatch = DecodeError::RecordBodyMismatch { record };
    match kind {
        RECORD_KIND_ENTRIES => {
            if body.len() < ENTRIES_BODY_HEADER_BYTES {
                return Err(mismatch);
            }
            let first_index = read_u64(body, 0);
            let count = read_u32(body, 8);
            if count == 0 {
                return Err(DecodeError::InvalidRecord {
                    record,
                    reason: RecordError::NoEntries,
                });
            }
            if first_index == 0 {
                return Err(DecodeError::InvalidRecord {
                    record,
                    reason: RecordError::ZeroIndex,
                });
            }
            if first_index.checked_add(u64::from(count) - 1).is_none() {
                return Err(DecodeError::InvalidRecord {
                    record,
                    reason: RecordError::NotConsecutive {
                        previous: u64::MAX,
                        found: 0,
                    },
                });
            }
            let mut entries = Vec::with_capacity(
                (count as usize).min((body.len() - ENTRIES_BODY_HEADER_BYTES) / ENTRY_HEADER_BYTES),
            );
            let mut at = ENTRIES_BODY_HEADER_BYTES;
            for position in 0..u64::from(count) {
                if body.len() - at < ENTRY_HEADER_BYTES {
                    return Err(mismatch);
                }
                let term = read_u64(body, at);
                let entry_kind = body[at + 8];
                let payload_bytes = read_u32(body, at + 9) as usize;
                let payload_start = at + ENTRY_HEADER_BYTES;
                if body.len() - payload_start < payload_bytes {
                    return Err(mismatch);
                }
                entries.push(EntryView {
                    index: first_index + position,
                    term,
                    kind: entry_kind,
                    payload: &body[payload_start..payload_start + payload_bytes],
                });
                at = payload_start + payload_bytes;
            }
            if at != body.len() {
                return Err(mismatch);
            }
            Ok(RecordViewKind::Entries { entries })
        }
        RECORD_KIND_HARD_STATE => {
            if body.len() != HARD_STATE_BODY_BYTES {
                return Err(mismatch);
            }
            Ok(RecordViewKind::HardState(HardState {
                term: read_u64(body, 0),
                vote: read_u64(body, 8),
                commit: read_u64(body, 16),
            }))
        }
        RECORD_KIND_COMPACTION => {
            if body.len() != COMPACTION_BODY_BYTES {
                return Err(mismatch);
            }
            Ok(RecordViewKind::Compaction {
                index: read_u64(body, 0),
                term: read_u64(body, 8),
            })
        }
        RECORD_KIND_GROUP_REMOVED => {
            if !body.is_empty() {
                return Err(mismatch);
            }
            Ok(RecordViewKind::GroupRemoved)
        }
        RECORD_KIND_LOG_RESET => {
            if body.len() != COMPACTION_BODY_BYTES {
                return Err(mismatch);
            }
            Ok(RecordViewKind::LogReset {
                index: read_u64(body, 0),
                term: read_u64(body, 8),
            })
        }
        other => Err(DecodeError::UnknownRecordKind {
            record,
            kind: other,
        }),
    }
}

/// Encodes `records` as one complete batch padded to the block, as the writer puts it on
/// disk. For tests, tools and fuzzing; the writer uses [`BatchBuilder`] directly.
pub fn encode_batch(records: &[Record], sequence: u64, segment: u64, offset: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for record in records {
        record.validate().expect("encode_batch takes valid records");
        builder.push(record);
    }
    let mut bytes = builder.seal(sequence, segment, offset).to_vec();
    let padded = padded_batch_bytes(bytes.len() - BATCH_HEADER_BYTES);
    bytes.resize(padded, 0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, term: u64, payload: &[u8]) -> Entry {
        Entry {
            index,
            term,
            kind: (index % 3) as u8,
            payload: payload.into(),
        }
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record {
                group_id: 7,
                kind: RecordKind::Entries {
                    entries: vec![
                        entry(5, 2, b"alpha"),
                        entry(6, 2, b""),
                        entry(7, 3, &[9; 300]),
                    ],
                },
            },
            Record {
                group_id: 7,
                kind: RecordKind::HardState(HardState {
                    term: 3,
                    vote: 2,
                    commit: 6,
                }),
            },
            Record {
                group_id: u64::MAX,
                kind: RecordKind::Compaction {
                    index: 100,
                    term: 4,
                },
            },
            Record {
                group_id: 0,
                kind: RecordKind::GroupRemoved,
            },
            Record {
                group_id: 3,
                kind: RecordKind::LogReset { index: 9, term: 2 },
            },
        ]
    }

    fn decode_owned(bytes: &[u8], segment: u64, offset: u64) -> Result<Vec<Record>, DecodeError> {
        decode_batch(bytes, segment, offset)
            .map(|batch| batch.records.iter().map(RecordView::to_record).collect())
    }

    // Encoding then decoding a batch gives back the same header fields and records.
    #[test]
    fn batch_round_trip() {
        let records = sample_records();
        let bytes = encode_batch(&records, 42, 3, 8192);
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        let batch = decode_batch(&bytes, 3, 8192).unwrap();
        assert_eq!(batch.header.sequence, 42);
        assert_eq!(batch.header.segment, 3);
        assert_eq!(batch.header.offset, 8192);
        assert_eq!(batch.header.record_count, 5);
        assert_eq!(batch.header.padded_bytes(), bytes.len());
        let decoded: Vec<Record> = batch.records.iter().map(RecordView::to_record).collect();
        assert_eq!(decoded, records);
    }

    // The builder can be reused after clear and produces the same bytes as encode_batch.
    #[test]
    fn builder_reuse_matches_encode_batch() {
        let records = sample_records();
        let mut builder = BatchBuilder::new();
        builder.push(&records[0]);
        builder.seal(1, 1, 0);
        builder.clear();
        assert!(builder.is_empty());
        for record in &records {
            builder.push(record);
        }
        let mut sealed = builder.seal(9, 2, 4096).to_vec();
        sealed.resize(padded_batch_bytes(sealed.len() - BATCH_HEADER_BYTES), 0);
        assert_eq!(sealed, encode_batch(&records, 9, 2, 4096));
    }

    // The header sits at the documented offsets (docs/FORMATS.md).
    #[test]
    fn header_layout_matches_the_documentation() {
        let bytes = encode_batch(&sample_records(), 0x0102_0304_0506_0708, 0x11, 0x2000);
        assert_eq!(&bytes[0..4], b"KWAL");
        assert_eq!(&bytes[4..6], &[1, 0]);
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x11u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &0x2000u32.to_le_bytes());
        let payload_bytes = read_u32(&bytes, 28) as usize;
        assert_eq!(read_u32(&bytes, 32), 5);
        assert_eq!(read_u32(&bytes, 36), 0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[0..40]);
        crc.update(&bytes[48..48 + payload_bytes]);
        assert_eq!(read_u32(&bytes, 40), crc.finalize());
        assert_eq!(read_u32(&bytes, 44), crc32fast::hash(&bytes[0..44]));
        // First record: kind, group, body length, then first index and count.
        assert_eq!(bytes[48], RECORD_KIND_ENTRIES);
        assert_eq!(read_u64(&bytes, 49), 7);
        assert_eq!(read_u64(&bytes, 61), 5);
        assert_eq!(read_u32(&bytes, 69), 3);
    }

    /// Rewrites both checksums after a deliberate change so that deeper checks are reached.
    fn refresh_checksums(bytes: &mut [u8]) {
        let payload_bytes = read_u32(bytes, 28) as usize;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[0..40]);
        crc.update(&bytes[48..48 + payload_bytes]);
        let batch_crc = crc.finalize();
        bytes[40..44].copy_from_slice(&batch_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[0..44]);
        bytes[44..48].copy_from_slice(&header_crc.to_le_bytes());
    }

    // Each kind of damage is reported with its own typed error.
    #[test]
    fn every_corruption_has_its_typed_error() {
        let good = encode_batch(&sample_records(), 5, 1, 0);

        let error = decode_batch(&good[..20], 1, 0).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::HeaderTruncated { available: 20 }
        ));

        let zeros = vec![0u8; BLOCK_BYTES];
        assert!(matches!(
            decode_batch(&zeros, 1, 0),
            Err(DecodeError::BadMagic { found: 0 })
        ));

        let mut bytes = good.clone();
        bytes[10] ^= 1;
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::BadHeaderChecksum { .. })
        ));

        let mut bytes = good.clone();
        bytes[100] ^= 0x40;
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::BadBatchChecksum { .. })
        ));

        let error = decode_batch(&good[..good.len() - BLOCK_BYTES / 2], 1, 0).unwrap_err();
        assert!(matches!(error, DecodeError::BatchTruncated { .. }));

        let mut bytes = good.clone();
        bytes[4] = 2;
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::UnsupportedVersion { found: 2 })
        ));

        let mut bytes = good.clone();
        bytes[6] = 1;
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::ReservedNotZero)
        ));

        let mut bytes = good.clone();
        bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[0..44]);
        bytes[44..48].copy_from_slice(&header_crc.to_le_bytes());
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::PayloadTooLarge { .. })
        ));

        assert!(matches!(
            decode_batch(&good, 2, 0),
            Err(DecodeError::WrongLocation { .. })
        ));
        assert!(matches!(
            decode_batch(&good, 1, 4096),
            Err(DecodeError::WrongLocation { .. })
        ));

        let mut bytes = good.clone();
        let last = bytes.len() - 1;
        bytes[last] = 1;
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::PaddingNotZero)
        ));

        let mut bytes = good.clone();
        bytes[48] = 99;
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::UnknownRecordKind {
                record: 0,
                kind: 99
            })
        ));

        // The first record's body length pointing past the payload.
        let mut bytes = good.clone();
        bytes[57..61].copy_from_slice(&1_000_000u32.to_le_bytes());
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::RecordTruncated { record: 0 })
        ));

        // The first record claims one entry fewer than its body holds.
        let mut bytes = good.clone();
        bytes[69..73].copy_from_slice(&2u32.to_le_bytes());
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::RecordBodyMismatch { record: 0 })
        ));

        let mut bytes = good.clone();
        bytes[61..69].copy_from_slice(&0u64.to_le_bytes());
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::InvalidRecord {
                record: 0,
                reason: RecordError::ZeroIndex
            })
        ));

        let mut bytes = good.clone();
        bytes[32..36].copy_from_slice(&6u32.to_le_bytes());
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::RecordCountMismatch {
                declared: 6,
                found: 5
            })
        ));

        let mut bytes = good.clone();
        bytes[32..36].copy_from_slice(&4u32.to_le_bytes());
        refresh_checksums(&mut bytes);
        assert!(matches!(
            decode_batch(&bytes, 1, 0),
            Err(DecodeError::RecordCountMismatch {
                declared: 4,
                found: 5
            })
        ));
    }

    // Torn-write candidates are exactly the errors a partial write can produce.
    #[test]
    fn torn_write_classification() {
        assert!(DecodeError::BadMagic { found: 0 }.is_possible_torn_write());
        assert!(DecodeError::BadBatchChecksum {
            stored: 1,
            computed: 2
        }
        .is_possible_torn_write());
        assert!(!DecodeError::UnsupportedVersion { found: 9 }.is_possible_torn_write());
        assert!(!DecodeError::PaddingNotZero.is_possible_torn_write());
        assert!(!DecodeError::RecordCountMismatch {
            declared: 1,
            found: 2
        }
        .is_possible_torn_write());
    }

    // Validation rejects what encoding cannot represent or Raft never writes.
    #[test]
    fn validation_rejects_bad_records() {
        let empty = Record {
            group_id: 1,
            kind: RecordKind::Entries { entries: vec![] },
        };
        assert_eq!(empty.validate(), Err(RecordError::NoEntries));
        let zero = Record {
            group_id: 1,
            kind: RecordKind::Entries {
                entries: vec![entry(0, 1, b"")],
            },
        };
        assert_eq!(zero.validate(), Err(RecordError::ZeroIndex));
        let gap = Record {
            group_id: 1,
            kind: RecordKind::Entries {
                entries: vec![entry(1, 1, b""), entry(3, 1, b"")],
            },
        };
        assert_eq!(
            gap.validate(),
            Err(RecordError::NotConsecutive {
                previous: 1,
                found: 3
            })
        );
        for record in sample_records() {
            assert_eq!(record.validate(), Ok(()));
        }
    }

    fn arbitrary_record() -> impl Strategy<Value = Record> {
        let entries = (
            1u64..1 << 40,
            proptest::collection::vec(
                (
                    any::<u64>(),
                    any::<u8>(),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                1..6,
            ),
        )
            .prop_map(|(first, items)| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(position, (term, kind, payload))| Entry {
                        index: first + position as u64,
                        term,
                        kind,
                        payload: payload.into(),
                    })
                    .collect::<Vec<_>>()
            });
        prop_oneof![
            (any::<u64>(), entries).prop_map(|(group_id, entries)| Record {
                group_id,
                kind: RecordKind::Entries { entries }
            }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(group_id, term, vote, commit)| Record {
                    group_id,
                    kind: RecordKind::HardState(HardState { term, vote, commit })
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(group_id, index, term)| Record {
                group_id,
                kind: RecordKind::Compaction { index, term }
            }),
            any::<u64>().prop_map(|group_id| Record {
                group_id,
                kind: RecordKind::GroupRemoved
            }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(group_id, index, term)| Record {
                group_id,
                kind: RecordKind::LogReset { index, term }
            }),
        ]
    }

    /// Proptest's settings, seeded from `COREKV_TEST_SEED` (printed) like every randomized
    /// test; proptest draws from its own generator, which its shrinking needs.
    fn proptest_config() -> ProptestConfig {
        let seed = crate::testing::test_seed();
        println!("proptest seed: replay with COREKV_TEST_SEED={seed} cargo test --lib wal::record");
        ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(proptest_config())]

        // Any list of valid records survives a round trip.
        #[test]
        fn arbitrary_batches_round_trip(
            records in proptest::collection::vec(arbitrary_record(), 1..12),
            sequence in any::<u64>(),
            segment in any::<u64>(),
            block in 0u32..1000,
        ) {
            let offset = block * BLOCK_BYTES as u32;
            let bytes = encode_batch(&records, sequence, segment, offset);
            prop_assert_eq!(decode_owned(&bytes, segment, u64::from(offset)).unwrap(), records);
        }

        // Random bytes never make the decoder panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3 * BLOCK_BYTES)) {
            let _ = decode_batch(&bytes, 0, 0);
        }

        // Mutated valid batches never make the decoder panic, and a mutation that changes
        // a checksummed byte is always detected.
        #[test]
        fn mutated_batches_never_panic(
            records in proptest::collection::vec(arbitrary_record(), 1..8),
            flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..8),
            truncate in proptest::option::of(any::<usize>()),
        ) {
            let mut bytes = encode_batch(&records, 3, 1, 0);
            let payload_end = BATCH_HEADER_BYTES + read_u32(&bytes, 28) as usize;
            for (position, mask) in &flips {
                let position = position % bytes.len();
                bytes[position] ^= mask;
            }
            let changed_checksummed = flips.iter().any(|(position, _)| position % bytes.len() < payload_end);
            if let Some(cut) = truncate {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            let result = decode_owned(&bytes, 1, 0);
            if changed_checksummed && result.is_ok() {
                // Two flips of one byte can cancel out; then the bytes are unchanged.
                let original = encode_batch(&records, 3, 1, 0);
                prop_assert_eq!(&bytes[..payload_end.min(bytes.len())], &original[..payload_end.min(bytes.len())]);
            }
        }
    }

    // A seeded loop of byte-level mutations over many batches; prints its seed so that a
    // failure can be replayed with COREKV_TEST_SEED.
    #[test]
    fn seeded_mutation_loop_never_panics() {
        let seed = crate::testing::test_seed();
        println!(
            "seeded_mutation_loop_never_panics: replay with COREKV_TEST_SEED={seed} cargo test \
             --lib wal::record::tests::seeded_mutation_loop_never_panics"
        );
        let mut random = crate::raft::rng::SeededRng::new(seed);
        let mut next = move || random.next_u64();
        let base = encode_batch(&sample_records(), 11, 2, 0);
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            let mutations = 1 + next() % 6;
            for _ in 0..mutations {
                let position = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[position] ^= 1 << (next() % 8),
                    1 => bytes[position] = next() as u8,
                    _ => bytes.truncate(position),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = decode_batch(&bytes, 2, 0);
        }
    }
}
