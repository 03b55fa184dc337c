//! The commands a Raft group applies (etcd v3's Range, Put, DeleteRange and Txn, plus
//! Append) and their compact binary encoding as log entry payloads.
//!
//! The encoding is internal to corekv (the client protocol is FlatBuffers); its byte
//! layout is written down in `docs/FORMATS.md`.

use super::wire::{DecodeError, Reader, Writer};

/// The version byte that opens every encoded command.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Encoded bytes of a command before its op: version, client id, seq.
pub const COMMAND_HEADER_BYTES: usize = 1 + 8 + 8;

/// The `range_end` that means "every key greater than or equal to `key`" (etcd's
/// convention).
pub const RANGE_END_UNBOUNDED: &[u8] = b"\0";

/// Smallest encoded op: tag, then an Append with an empty key and an empty value.
const OP_ENCODED_BYTES_MIN: usize = 1 + 4 + 4;
/// Smallest encoded compare: empty key, result, target tag, empty value.
const COMPARE_ENCODED_BYTES_MIN: usize = 4 + 1 + 1 + 4;

const OP_TAG_RANGE: u8 = 1;
const OP_TAG_PUT: u8 = 2;
const OP_TAG_DELETE: u8 = 3;
const OP_TAG_APPEND: u8 = 4;
const OP_TAG_TXN: u8 = 5;

const RANGE_FLAG_KEYS_ONLY: u8 = 1;
const RANGE_FLAG_COUNT_ONLY: u8 = 2;
const PREV_KV_FLAG: u8 = 1;

/// One client command as it travels through the Raft log.
///
/// `client_id` and `seq` name the command for exactly-once application: when either is 0
/// the command has no session and is applied every time it is committed (see
/// [`crate::kv::session`] for the rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub client_id: u64,
    pub seq: u64,
    pub op: Op,
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reads one key or a range of keys.
    Range(RangeRequest),
    /// Writes one key.
    Put(PutRequest),
    /// Deletes one key or a range of keys.
    Delete(DeleteRequest),
    /// Appends bytes to the value of one key, creating it when absent.
    Append(AppendRequest),
    /// Compares, then runs one of two op lists atomically.
    Txn(TxnRequest),
}

/// An op inside a transaction. Transactions do not nest, and this type makes a nested one
/// impossible to express rather than an error to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
    Append(AppendRequest),
}

/// One key an op names, as [`Op::keys`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpKey<'a> {
    pub key: &'a [u8],
    /// The key opens a range (its op's `range_end` is not empty) instead of naming one
    /// key: the range may reach keys of other groups.
    pub range_start: bool,
}

impl<'a> OpKey<'a> {
    fn single(key: &'a [u8]) -> OpKey<'a> {
        OpKey {
            key,
            range_start: false,
        }
    }

    fn range(key: &'a [u8], range_end: &[u8]) -> OpKey<'a> {
        OpKey {
            key,
            range_start: !range_end.is_empty(),
        }
    }
}

/// A read of `[key, range_end)`, or of `key` alone when `range_end` is empty.
///
/// `range_end == b"\0"` means every key from `key` on; [`prefix_end`] computes the end of a
/// prefix scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The most key-values to return; 0 means no limit.
    pub limit: u64,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only the count of matching keys.
    pub count_only: bool,
    /// Read the state at this revision; 0: the current state. Never inside a Txn (which
    /// reads its own state), so never in the log: the log encoding leaves it out.
    pub revision: u64,
}

/// A write of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Return the key-value as it was before the put.
    pub prev_kv: bool,
    /// The lease id stored with the key; 0 means none. corekv stores it and returns it but
    /// does not expire keys by lease.
    pub lease: u64,
}

/// A deletion of `[key, range_end)`, or of `key` alone when `range_end` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// Appends `value` to the current value of `key`; an absent key is created with `value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// etcd's transaction: if every compare holds, run `success`, else run `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// One condition of a transaction: `<target of key> <result> <operand>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// What a compare looks at, with the operand to compare it against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value, compared bytewise. On a missing key every value compare is false.
    Value(Vec<u8>),
    /// The version; a missing key has version 0.
    Version(u64),
    /// The create revision; a missing key has 0.
    CreateRevision(u64),
    /// The mod revision; a missing key has 0.
    ModRevision(u64),
}

/// How the target must relate to the operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// The `range_end` that selects every key starting with `prefix`: the prefix with its
/// last byte below 0xff incremented and the bytes after it dropped. A prefix of only
/// 0xff bytes (or an empty one) has no such end, and the scan runs to the end of the
/// keyspace ([`RANGE_END_UNBOUNDED`]).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(position) => {
            let mut end = prefix[..=position].to_vec();
            end[position] += 1;
            end
        }
        None => RANGE_END_UNBOUNDED.to_vec(),
    }
}

impl RangeRequest {
    /// Reads one key.
    pub fn get(key: &[u8]) -> RangeRequest {
        RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        }
    }

    /// Reads every key that starts with `prefix` (which must not be empty).
    pub fn prefix(prefix: &[u8]) -> RangeRequest {
        RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..RangeRequest::default()
        }
    }
}

impl Command {
    /// The (client id, seq) pair when the command belongs to a session.
    pub fn session(&self) -> Option<(u64, u64)> {
        if self.client_id == 0 || self.seq == 0 {
            None
        } else {
            Some((self.client_id, self.seq))
        }
    }

    /// Encodes the command as a log entry payload.
    ///
    /// Panics if a key, value or list is longer than `u32::MAX`; [`crate::kv::validate`]
    /// rejects such a command long before, so callers validate first.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(self.encoded_len());
        writer.u8(COMMAND_FORMAT_VERSION);
        self.encode_body(&mut writer);
        debug_assert_eq!(writer.len(), self.encoded_len());
        writer.into_bytes()
    }

    /// The command after its version byte: client id, seq, op (a log entry carries it
    /// behind its own header, see [`crate::kv::entry`]).
    pub(crate) fn encode_body(&self, writer: &mut Writer) {
        writer.u64(self.client_id);
        writer.u64(self.seq);
        encode_op(writer, &self.op);
    }

    /// Reads what [`Command::encode_body`] wrote.
    pub(crate) fn decode_body(reader: &mut Reader<'_>) -> Result<Command, DecodeError> {
        let client_id = reader.u64()?;
        let seq = reader.u64()?;
        let op = decode_op(reader)?;
        Ok(Command { client_id, seq, op })
    }

    /// The length of [`Command::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        COMMAND_HEADER_BYTES + self.op.encoded_len()
    }

    /// Decodes a log entry payload. Every length is checked against the bytes that remain
    /// before anything is allocated; bad input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let command = Command::decode_body(&mut reader)?;
        reader.finish()?;
        Ok(command)
    }
}

impl Op {
    /// True when the op cannot change the store: a Range, or a Txn whose both branches
    /// hold only Ranges. Such commands are re-run instead of cached by sessions.
    pub fn is_read_only(&self) -> bool {
        match self {
            Op::Range(_) => true,
            Op::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(TxnOp::is_read_only),
            Op::Put(_) | Op::Delete(_) | Op::Append(_) => false,
        }
    }

    /// Every key the op names, in order: its own key, or a transaction's compare keys
    /// and then the key of each op of `success` and of `failure`. This is the one
    /// definition of "the keys of an op" that routing (which group, does it fit one
    /// group) is built on.
    pub fn keys(&self) -> impl Iterator<Item = OpKey<'_>> {
        let (own, txn) = match self {
            Op::Range(range) => (Some(OpKey::range(&range.key, &range.range_end)), None),
            Op::Put(put) => (Some(OpKey::single(&put.key)), None),
            Op::Delete(delete) => (Some(OpKey::range(&delete.key, &delete.range_end)), None),
            Op::Append(append) => (Some(OpKey::single(&append.key)), None),
            Op::Txn(txn) => (None, Some(txn)),
        };
        let compares = txn
            .into_iter()
            .flat_map(|txn| &txn.compares)
            .map(|compare| OpKey::single(&compare.key));
        let ops = txn
            .into_iter()
            .flat_map(|txn| txn.success.iter().chain(&txn.failure))
            .map(TxnOp::key);
        own.into_iter().chain(compares).chain(ops)
    }

    /// The length of this op's encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Op::Range(range) => range_body_len(range),
            Op::Put(put) => put_body_len(put),
            Op::Delete(delete) => delete_body_len(delete),
            Op::Append(append) => append_body_len(append),
            Op::Txn(txn) => {
                let compares: usize = txn.compares.iter().map(compare_len).sum();
                let ops: usize = txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .map(TxnOp::encoded_len)
                    .sum();
                4 + compares + 4 + 4 + ops
            }
        }
    }
}

impl TxnOp {
    pub fn is_read_only(&self) -> bool {
        matches!(self, TxnOp::Range(_))
    }

    /// The one key the op names (see [`Op::keys`]).
    pub fn key(&self) -> OpKey<'_> {
        match self {
            TxnOp::Range(range) => OpKey::range(&range.key, &range.range_end),
            TxnOp::Put(put) => OpKey::single(&put.key),
            TxnOp::Delete(delete) => OpKey::range(&delete.key, &delete.range_end),
            TxnOp::Append(append) => OpKey::single(&append.key),
        }
    }

    /// The length of this op's encoding.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            TxnOp::Range(range) => range_body_len(range),
            TxnOp::Put(put) => put_body_len(put),
            TxnOp::Delete(delete) => delete_body_len(delete),
            TxnOp::Append(append) => append_body_len(append),
        }
    }
}

impl From<TxnOp> for Op {
    fn from(op: TxnOp) -> Op {
        match op {
            TxnOp::Range(range) => Op::Range(range),
            TxnOp::Put(put) => Op::Put(put),
            TxnOp::Delete(delete) => Op::Delete(delete),
            TxnOp::Append(append) => Op::Append(append),
        }
    }
}

fn range_body_len(range: &RangeRequest) -> usize {
    4 + range.key.len() + 4 + range.range_end.len() + 8 + 1
}

fn put_body_len(put: &PutRequest) -> usize {
    4 + put.key.len() + 4 + put.value.len() + 8 + 1
}

fn delete_body_len(delete: &DeleteRequest) -> usize {
    4 + delete.key.len() + 4 + delete.range_end.len() + 1
}

fn append_body_len(append: &AppendRequest) -> usize {
    4 + append.key.len() + 4 + append.value.len()
}

fn compare_len(compare: &Compare) -> usize {
    let operand = match &compare.target {
        CompareTarget::Value(value) => 4 + value.len(),
        CompareTarget::Version(_)
        | CompareTarget::CreateRevision(_)
        | CompareTarget::ModRevision(_) => 8,
    };
    4 + compare.key.len() + 1 + 1 + operand
}

fn encode_op(writer: &mut Writer, op: &Op) {
    match op {
        Op::Range(range) => encode_range(writer, range),
        Op::Put(put) => encode_put(writer, put),
        Op::Delete(delete) => encode_delete(writer, delete),
        Op::Append(append) => encode_append(writer, append),
        Op::Txn(txn) => {
            writer.u8(OP_TAG_TXN);
            writer.count(txn.compares.len());
            for compare in &txn.compares {
                encode_compare(writer, compare);
            }
            for ops in [&txn.success, &txn.failure] {
                writer.count(ops.len());
                for op in ops {
                    encode_txn_op(writer, op);
                }
            }
        }
    }
}

fn encode_txn_op(writer: &mut Writer, op: &TxnOp) {
    match op {
        TxnOp::Range(range) => encode_range(writer, range),
        TxnOp::Put(put) => encode_put(writer, put),
        TxnOp::Delete(delete) => encode_delete(writer, delete),
        TxnOp::Append(append) => encode_append(writer, append),
    }
}

fn encode_range(writer: &mut Writer, range: &RangeRequest) {
    writer.u8(OP_TAG_RANGE);
    writer.bytes(&range.key);
    writer.bytes(&range.range_end);
    writer.u64(range.limit);
    let mut flags = 0;
    if range.keys_only {
        flags |= RANGE_FLAG_KEYS_ONLY;
    }
    if range.count_only {
        flags |= RANGE_FLAG_COUNT_ONLY;
    }
    writer.u8(flags);
}

fn encode_put(writer: &mut Writer, put: &PutRequest) {
    writer.u8(OP_TAG_PUT);
    writer.bytes(&put.key);
    writer.bytes(&put.value);
    writer.u64(put.lease);
    writer.u8(if put.prev_kv { PREV_KV_FLAG } else { 0 });
}

fn encode_delete(writer: &mut Writer, delete: &DeleteRequest) {
    writer.u8(OP_TAG_DELETE);
    writer.bytes(&delete.key);
    writer.bytes(&delete.range_end);
    writer.u8(if delete.prev_kv { PREV_KV_FLAG } else { 0 });
}

fn encode_append(writer: &mut Writer, append: &AppendRequest) {
    writer.u8(OP_TAG_APPEND);
    writer.bytes(&append.key);
    writer.bytes(&append.value);
}

const COMPARE_RESULT_EQUAL: u8 = 1;
const COMPARE_RESULT_NOT_EQUAL: u8 = 2;
const COMPARE_RESULT_GREATER: u8 = 3;
const COMPARE_RESULT_LESS: u8 = 4;

const COMPARE_TARGET_VALUE: u8 = 1;
const COMPARE_TARGET_VERSION: u8 = 2;
const COMPARE_TARGET_CREATE_REVISION: u8 = 3;
const COMPARE_TARGET_MOD_REVISION: u8 = 4;

fn encode_compare(writer: &mut Writer, compare: &Compare) {
    writer.bytes(&compare.key);
    writer.u8(match compare.result {
        CompareResult::Equal => COMPARE_RESULT_EQUAL,
        CompareResult::NotEqual => COMPARE_RESULT_NOT_EQUAL,
        CompareResult::Greater => COMPARE_RESULT_GREATER,
        CompareResult::Less => COMPARE_RESULT_LESS,
    });
    match &compare.target {
        CompareTarget::Value(value) => {
            writer.u8(COMPARE_TARGET_VALUE);
            writer.bytes(value);
        }
        CompareTarget::Version(version) => {
            writer.u8(COMPARE_TARGET_VERSION);
            writer.u64(*version);
        }
        CompareTarget::CreateRevision(revision) => {
            writer.u8(COMPARE_TARGET_CREATE_REVISION);
            writer.u64(*revision);
        }
        CompareTarget::ModRevision(revision) => {
            writer.u8(COMPARE_TARGET_MOD_REVISION);
            writer.u64(*revision);
        }
    }
}

fn decode_op(reader: &mut Reader<'_>) -> Result<Op, DecodeError> {
    let tag = reader.u8()?;
    if tag != OP_TAG_TXN {
        return decode_txn_op_body(reader, tag).map(Op::from);
    }
    let compare_count = reader.count(COMPARE_ENCODED_BYTES_MIN)?;
    let mut compares = Vec::with_capacity(compare_count);
    for _ in 0..compare_count {
        compares.push(decode_compare(reader)?);
    }
    let success = decode_txn_ops(reader)?;
    let failure = decode_txn_ops(reader)?;
    Ok(Op::Txn(TxnRequest {
        compares,
        success,
        failure,
    }))
}

fn decode_txn_ops(reader: &mut Reader<'_>) -> Result<Vec<TxnOp>, DecodeError> {
    let count = reader.count(OP_ENCODED_BYTES_MIN)?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = reader.u8()?;
        ops.push(decode_txn_op_body(reader, tag)?);
    }
    Ok(ops)
}

fn decode_txn_op_body(reader: &mut Reader<'_>, tag: u8) -> Result<TxnOp, DecodeError> {
    match tag {
        OP_TAG_RANGE => {
            let key = reader.bytes()?;
            let range_end = reader.bytes()?;
            let limit = reader.u64()?;
            let flags = reader.u8()?;
            if flags & !(RANGE_FLAG_KEYS_ONLY | RANGE_FLAG_COUNT_ONLY) != 0 {
                return Err(DecodeError::UnknownFlags {
                    field: "range",
                    flags,
                });
            }
            Ok(TxnOp::Range(RangeRequest {
                key,
                range_end,
                limit,
                keys_only: flags & RANGE_FLAG_KEYS_ONLY != 0,
                count_only: flags & RANGE_FLAG_COUNT_ONLY != 0,
                revision: 0,
            }))
        }
        OP_TAG_PUT => {
            let key = reader.bytes()?;
            let value = reader.bytes()?;
            let lease = reader.u64()?;
            let prev_kv = decode_prev_kv_flag(reader, "put")?;
            Ok(TxnOp::Put(PutRequest {
                key,
                value,
                prev_kv,
                lease,
            }))
        }
        OP_TAG_DELETE => {
            let key = reader.bytes()?;
            let range_end = reader.bytes()?;
            let prev_kv = decode_prev_kv_flag(reader, "delete")?;
            Ok(TxnOp::Delete(DeleteRequest {
                key,
                range_end,
                prev_kv,
            }))
        }
        OP_TAG_APPEND => {
            let key = reader.bytes()?;
            let value = reader.bytes()?;
            Ok(TxnOp::Append(AppendRequest { key, value }))
        }
        // A Txn tag here is a nested transaction, which has no meaning.
        tag => Err(DecodeError::UnknownTag { field: "op", tag }),
    }
}

fn decode_prev_kv_flag(reader: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    let flags = reader.u8()?;
    if flags & !PREV_KV_FLAG != 0 {
        return Err(DecodeError::UnknownFlags { field, flags });
    }
    Ok(flags & PREV_KV_FLAG != 0)
}

fn decode_compare(reader: &mut Reader<'_>) -> Result<Compare, DecodeError> {
    let key = reader.bytes()?;
    let result = match reader.u8()? {
        COMPARE_RESULT_EQUAL => CompareResult::Equal,
        COMPARE_RESULT_NOT_EQUAL => CompareResult::NotEqual,
        COMPARE_RESULT_GREATER => CompareResult::Greater,
        COMPARE_RESULT_LESS => CompareResult::Less,
        tag => {
            return Err(DecodeError::UnknownTag {
                field: "compare result",
                tag,
            })
        }
    };
    let target = match reader.u8()? {
        COMPARE_TARGET_VALUE => CompareTarget::Value(reader.bytes()?),
        COMPARE_TARGET_VERSION => CompareTarget::Version(reader.u64()?),
        COMPARE_TARGET_CREATE_REVISION => CompareTarget::CreateRevision(reader.u64()?),
        COMPARE_TARGET_MOD_REVISION => CompareTarget::ModRevision(reader.u64()?),
        tag => {
            return Err(DecodeError::UnknownTag {
                field: "compare target",
                tag,
            })
        }
    };
    Ok(Compare {
        key,
        target,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_command() -> Command {
        Command {
            client_id: 7,
            seq: 3,
            op: Op::Txn(TxnRequest {
                compares: vec![
                    Compare {
                        key: b"a".to_vec(),
                        target: CompareTarget::Value(b"x".to_vec()),
                        result: CompareResult::Equal,
                    },
                    Compare {
                        key: b"b".to_vec(),
                        target: CompareTarget::ModRevision(9),
                        result: CompareResult::Less,
                    },
                ],
                success: vec![
                    TxnOp::Put(PutRequest {
                        key: b"a".to_vec(),
                        value: b"y".to_vec(),
                        prev_kv: true,
                        lease: 5,
                    }),
                    TxnOp::Range(RangeRequest::prefix(b"a")),
                ],
                failure: vec![
                    TxnOp::Delete(DeleteRequest {
                        key: b"a".to_vec(),
                        range_end: b"c".to_vec(),
                        prev_kv: false,
                    }),
                    TxnOp::Append(AppendRequest {
                        key: b"z".to_vec(),
                        value: b"1".to_vec(),
                    }),
                ],
            }),
        }
    }

    // prefix_end increments the last byte below 0xff and drops what follows it.
    #[test]
    fn prefix_end_increments_last_incrementable_byte() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), RANGE_END_UNBOUNDED.to_vec());
        assert_eq!(prefix_end(b""), RANGE_END_UNBOUNDED.to_vec());
    }

    // A command with every op kind decodes back to itself, and encoded_len is exact.
    #[test]
    fn command_round_trips() {
        let command = sample_command();
        let bytes = command.encode();
        assert_eq!(bytes.len(), command.encoded_len());
        assert_eq!(Command::decode(&bytes), Ok(command));
    }

    // The encoding of a Put is exactly the documented layout.
    #[test]
    fn put_encoding_matches_the_documented_layout() {
        let command = Command {
            client_id: 0x0102,
            seq: 3,
            op: Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"vv".to_vec(),
                prev_kv: true,
                lease: 9,
            }),
        };
        let expected: Vec<u8> = [
            &[1u8][..],
            &[0x02, 0x01, 0, 0, 0, 0, 0, 0],
            &[3, 0, 0, 0, 0, 0, 0, 0],
            &[OP_TAG_PUT],
            &[1, 0, 0, 0, b'k'],
            &[2, 0, 0, 0, b'v', b'v'],
            &[9, 0, 0, 0, 0, 0, 0, 0],
            &[PREV_KV_FLAG],
        ]
        .concat();
        assert_eq!(command.encode(), expected);
    }

    // Every strict prefix of an encoding and any extra trailing byte are rejected.
    #[test]
    fn truncated_or_padded_commands_are_rejected() {
        let bytes = sample_command().encode();
        for length in 0..bytes.len() {
            assert!(
                Command::decode(&bytes[..length]).is_err(),
                "prefix {length} accepted"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(
            Command::decode(&padded),
            Err(DecodeError::TrailingBytes { bytes: 1 })
        );
    }

    // A forged element count larger than the input is refused before any allocation.
    #[test]
    fn huge_counts_are_rejected() {
        let mut writer = Writer::default();
        writer.u8(COMMAND_FORMAT_VERSION);
        writer.u64(1);
        writer.u64(1);
        writer.u8(OP_TAG_TXN);
        writer.u32(u32::MAX);
        let result = Command::decode(writer.as_slice());
        assert!(
            matches!(result, Err(DecodeError::LengthExceedsInput { .. })),
            "{result:?}"
        );
    }

    // Unknown versions, tags and flag bits are errors, and a nested Txn cannot be decoded.
    #[test]
    fn unknown_tags_and_flags_are_rejected() {
        let mut bytes = sample_command().encode();
        bytes[0] = 2;
        assert_eq!(
            Command::decode(&bytes),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );

        let command = Command {
            client_id: 0,
            seq: 0,
            op: Op::Range(RangeRequest::get(b"k")),
        };
        let mut bytes = command.encode();
        let flags_position = bytes.len() - 1;
        bytes[flags_position] = 4;
        assert_eq!(
            Command::decode(&bytes),
            Err(DecodeError::UnknownFlags {
                field: "range",
                flags: 4
            })
        );

        let mut writer = Writer::default();
        writer.u8(COMMAND_FORMAT_VERSION);
        writer.u64(0);
        writer.u64(0);
        writer.u8(OP_TAG_TXN);
        writer.u32(0);
        writer.u32(1);
        writer.u8(OP_TAG_TXN);
        writer.u32(0);
        writer.u32(0);
        writer.u32(0);
        writer.u32(0);
        assert_eq!(
            Command::decode(writer.as_slice()),
            Err(DecodeError::UnknownTag {
                field: "op",
                tag: OP_TAG_TXN
            })
        );
    }

    // Only Ranges, and Txns made only of Ranges, count as read-only.
    #[test]
    fn read_only_classification() {
        assert!(Op::Range(RangeRequest::get(b"a")).is_read_only());
        assert!(!Op::Put(PutRequest::default()).is_read_only());
        assert!(!sample_command().op.is_read_only());
        let reads = TxnRequest {
            compares: vec![],
            success: vec![TxnOp::Range(RangeRequest::get(b"a"))],
            failure: vec![],
        };
        assert!(Op::Txn(reads).is_read_only());
    }

    // Every op lists the keys it names in order, compares before branch ops, and marks
    // exactly the keys that open a range.
    #[test]
    fn ops_list_their_keys() {
        let keys = |op: &Op| -> Vec<(Vec<u8>, bool)> {
            op.keys()
                .map(|op_key| (op_key.key.to_vec(), op_key.range_start))
                .collect()
        };
        let single = |key: &str| (key.as_bytes().to_vec(), false);
        let range_start = |key: &str| (key.as_bytes().to_vec(), true);
        assert_eq!(keys(&Op::Range(RangeRequest::get(b"a"))), [single("a")]);
        assert_eq!(
            keys(&Op::Range(RangeRequest::prefix(b"a"))),
            [range_start("a")]
        );
        assert_eq!(keys(&Op::Put(PutRequest::default())), [single("")]);
        let delete = DeleteRequest {
            key: b"d".to_vec(),
            range_end: b"e".to_vec(),
            prev_kv: false,
        };
        assert_eq!(keys(&Op::Delete(delete)), [range_start("d")]);
        let append = AppendRequest {
            key: b"log".to_vec(),
            value: Vec::new(),
        };
        assert_eq!(keys(&Op::Append(append)), [single("log")]);
        assert_eq!(
            keys(&sample_command().op),
            [
                single("a"),
                single("b"),
                single("a"),
                range_start("a"),
                range_start("a"),
                single("z"),
            ]
        );
        assert_eq!(keys(&Op::Txn(TxnRequest::default())), []);
    }
}
