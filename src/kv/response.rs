//! What applying or reading a command answers (etcd v3's response shapes, plus Append),
//! and the binary encoding of answers and errors that the simulator ships between nodes
//! and that snapshots use for cached session responses.

pub use super::lease::LeaseResponse;
use super::lease::{LeaseAnswer, LeaseError};
use super::limits::{KvError, SessionError};
use super::wire::{DecodeError, Reader, Writer};

/// The version byte that opens every encoded response.
pub const RESPONSE_FORMAT_VERSION: u8 = 1;

/// The answer to one command: a response, or the typed reason it was refused.
pub type Outcome = Result<Response, KvError>;

/// A successful answer. `revision` is etcd's header revision: the store's revision when
/// the command was answered, which is the Raft index of the entry that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub revision: u64,
    pub op: OpResponse,
}

/// The per-op part of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Append(AppendResponse),
    Txn(TxnResponse),
    /// A compaction's answer (compactions are no ops of a command: see `kv::entry`).
    Compact(CompactResponse),
    /// A lease operation's answer (lease ops are entries of their own: see `kv::entry`).
    Lease(LeaseResponse),
}

/// The answer of one op inside a transaction (transactions do not nest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Append(AppendResponse),
}

/// A key with its value and metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision of the write that created the key since it was last absent.
    pub create_revision: u64,
    /// The revision of the last change to the key.
    pub mod_revision: u64,
    /// Changes since creation: 1 after the put that created it; a deleted key has none.
    pub version: u64,
    pub lease: u64,
}

/// The answer to a Range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The key-values returned, in key order (empty for `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys match the range, regardless of limits.
    pub count: u64,
    /// True when a limit (the request's or the response size bound) left matching keys out.
    pub more: bool,
}

/// The answer to a Put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The key-value before the put, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// The answer to a DeleteRange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    pub deleted: u64,
    /// The deleted key-values in key order, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The answer to an Append: the length of the value after it. Returning the value itself
/// could cost a megabyte per call; the length is enough to order appends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendResponse {
    pub value_bytes: u64,
}

/// The answer to a compaction: the group's compaction revision after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactResponse {
    pub compact_revision: u64,
}

/// The answer to a Txn: which branch ran, and the answer of each of its ops in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

impl KeyValue {
    /// Fixed part of an encoded key-value: two `u32` lengths and four `u64` fields.
    pub const ENCODED_BYTES_FIXED: usize = 4 + 4 + 8 * 4;

    /// Encoded size; response size bounds count key-values by this measure.
    pub fn encoded_bytes(&self) -> usize {
        Self::ENCODED_BYTES_FIXED + self.key.len() + self.value.len()
    }
}

impl From<TxnOpResponse> for OpResponse {
    fn from(response: TxnOpResponse) -> OpResponse {
        match response {
            TxnOpResponse::Range(range) => OpResponse::Range(range),
            TxnOpResponse::Put(put) => OpResponse::Put(put),
            TxnOpResponse::Delete(delete) => OpResponse::Delete(delete),
            TxnOpResponse::Append(append) => OpResponse::Append(append),
        }
    }
}

const RESPONSE_TAG_RANGE: u8 = 1;
const RESPONSE_TAG_PUT: u8 = 2;
const RESPONSE_TAG_DELETE: u8 = 3;
const RESPONSE_TAG_APPEND: u8 = 4;
const RESPONSE_TAG_TXN: u8 = 5;
const RESPONSE_TAG_COMPACT: u8 = 6;
const RESPONSE_TAG_LEASE: u8 = 7;

/// Smallest encoded op response inside a Txn: tag and a Put without a previous value.
const TXN_OP_RESPONSE_ENCODED_BYTES_MIN: usize = 2;

const OUTCOME_TAG_RESPONSE: u8 = 0;
const OUTCOME_TAG_ERROR: u8 = 1;

const ERROR_TAG_EMPTY_KEY: u8 = 1;
const ERROR_TAG_KEY_TOO_LARGE: u8 = 2;
const ERROR_TAG_VALUE_TOO_LARGE: u8 = 3;
const ERROR_TAG_TOO_MANY_TXN_OPS: u8 = 4;
const ERROR_TAG_INVALID_RANGE: u8 = 5;
const ERROR_TAG_COMMAND_TOO_LARGE: u8 = 6;
const ERROR_TAG_RESPONSE_TOO_LARGE: u8 = 7;
const ERROR_TAG_NOT_READ_ONLY: u8 = 8;
const ERROR_TAG_SESSION_STALE: u8 = 9;
const ERROR_TAG_SESSION_EXPIRED: u8 = 10;
const ERROR_TAG_COMPACTED: u8 = 11;
const ERROR_TAG_FUTURE_REVISION: u8 = 12;
const ERROR_TAG_REVISION_IN_TXN: u8 = 13;
const ERROR_TAG_LEASE: u8 = 14;

const LEASE_ERROR_NOT_FOUND: u8 = 1;
const LEASE_ERROR_EXISTS: u8 = 2;
const LEASE_ERROR_TOO_MANY_LEASES: u8 = 3;
const LEASE_ERROR_TOO_MANY_KEYS: u8 = 4;
const LEASE_ERROR_INVALID_TTL: u8 = 5;
const LEASE_ERROR_NOT_LEASE_GROUP: u8 = 6;

impl Response {
    /// Encodes the response. Panics only if a list or byte string exceeds `u32::MAX`,
    /// which the store's limits rule out.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        encode_response(&mut writer, self);
        writer.into_bytes()
    }

    /// Decodes a response, rejecting bad lengths, tags and trailing bytes without
    /// panicking.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut reader = Reader::new(bytes);
        let response = decode_response(&mut reader)?;
        reader.finish()?;
        Ok(response)
    }
}

impl KvError {
    /// Encodes the error as a tag and its fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        encode_error(&mut writer, self);
        writer.into_bytes()
    }

    /// Decodes an error encoded by [`KvError::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KvError, DecodeError> {
        let mut reader = Reader::new(bytes);
        let error = decode_error(&mut reader)?;
        reader.finish()?;
        Ok(error)
    }
}

/// Encodes an outcome: a tag byte (0 response, 1 error), then the response or the error.
pub fn encode_outcome(outcome: &Outcome) -> Vec<u8> {
    let mut writer = Writer::default();
    write_outcome(&mut writer, outcome);
    writer.into_bytes()
}

/// Decodes an outcome encoded by [`encode_outcome`].
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, DecodeError> {
    let mut reader = Reader::new(bytes);
    let outcome = read_outcome(&mut reader)?;
    reader.finish()?;
    Ok(outcome)
}

/// The length of [`encode_outcome`]'s output, computed without encoding. Sessions count
/// their cached outcomes by it on every write, and every replica evicts by that count, so
/// it must equal the encoding's length exactly (a property test holds it to that).
pub(crate) fn outcome_encoded_len(outcome: &Outcome) -> usize {
    1 + match outcome {
        Ok(response) => response_encoded_len(response),
        Err(error) => error_encoded_len(error),
    }
}

fn response_encoded_len(response: &Response) -> usize {
    // Version byte and revision, then the op.
    1 + 8
        + match &response.op {
            OpResponse::Range(range) => range_encoded_len(range),
            OpResponse::Put(put) => put_encoded_len(put),
            OpResponse::Delete(delete) => delete_encoded_len(delete),
            OpResponse::Append(_) | OpResponse::Compact(_) => APPEND_RESPONSE_ENCODED_BYTES,
            OpResponse::Lease(lease) => lease_encoded_len(lease),
            OpResponse::Txn(txn) => {
                // Tag, succeeded, count, then each op's answer.
                let responses: usize = txn
                    .responses
                    .iter()
                    .map(|response| match response {
                        TxnOpResponse::Range(range) => range_encoded_len(range),
                        TxnOpResponse::Put(put) => put_encoded_len(put),
                        TxnOpResponse::Delete(delete) => delete_encoded_len(delete),
                        TxnOpResponse::Append(_) => APPEND_RESPONSE_ENCODED_BYTES,
                    })
                    .sum();
                1 + 1 + 4 + responses
            }
        }
}

/// Tag and the `u64` value length (and a compaction's tag and revision alike).
const APPEND_RESPONSE_ENCODED_BYTES: usize = 1 + 8;

fn key_values_encoded_len(key_values: &[KeyValue]) -> usize {
    key_values.iter().map(KeyValue::encoded_bytes).sum()
}

fn range_encoded_len(range: &RangeResponse) -> usize {
    // Tag, count, more, key-value count, then the key-values.
    1 + 8 + 1 + 4 + key_values_encoded_len(&range.kvs)
}

fn put_encoded_len(put: &PutResponse) -> usize {
    // Tag, presence byte, then the previous key-value if any.
    1 + 1 + put.prev_kv.as_ref().map_or(0, KeyValue::encoded_bytes)
}

fn delete_encoded_len(delete: &DeleteResponse) -> usize {
    // Tag, deleted, key-value count, then the key-values.
    1 + 8 + 4 + key_values_encoded_len(&delete.prev_kvs)
}

fn lease_encoded_len(lease: &LeaseResponse) -> usize {
    // Tag, answer, id, ttl, granted ttl, more, key count and keys, id count and ids.
    let keys: usize = lease.keys.iter().map(|key| 4 + key.len()).sum();
    1 + 1 + 3 * 8 + 1 + 4 + keys + 4 + 8 * lease.ids.len()
}

fn encode_lease(writer: &mut Writer, lease: &LeaseResponse) {
    writer.u8(RESPONSE_TAG_LEASE);
    writer.u8(lease.answer.tag());
    writer.u64(lease.id);
    writer.u64(lease.ttl_ms);
    writer.u64(lease.granted_ttl_ms);
    writer.u8(u8::from(lease.more));
    writer.count(lease.keys.len());
    for key in &lease.keys {
        writer.bytes(key);
    }
    writer.count(lease.ids.len());
    for &id in &lease.ids {
        writer.u64(id);
    }
}

fn decode_lease(reader: &mut Reader<'_>) -> Result<LeaseResponse, DecodeError> {
    let answer = LeaseAnswer::from_tag(reader.u8()?)?;
    let id = reader.u64()?;
    let ttl_ms = reader.u64()?;
    let granted_ttl_ms = reader.u64()?;
    let more = reader.bool("lease response more")?;
    let count = reader.count(4)?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        keys.push(reader.bytes()?);
    }
    let count = reader.count(8)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(reader.u64()?);
    }
    Ok(LeaseResponse {
        answer,
        id,
        ttl_ms,
        granted_ttl_ms,
        keys,
        ids,
        more,
    })
}

/// A lease error as a sub-tag and two `u64` fields (unused ones are 0).
fn lease_error_fields(error: &LeaseError) -> (u8, u64, u64) {
    match *error {
        LeaseError::NotFound(id) => (LEASE_ERROR_NOT_FOUND, id, 0),
        LeaseError::Exists(id) => (LEASE_ERROR_EXISTS, id, 0),
        LeaseError::TooManyLeases { leases_max } => (LEASE_ERROR_TOO_MANY_LEASES, leases_max, 0),
        LeaseError::TooManyKeys {
            lease,
            keys_per_lease_max,
        } => (LEASE_ERROR_TOO_MANY_KEYS, lease, keys_per_lease_max),
        LeaseError::InvalidTtl { ttl_seconds } => (LEASE_ERROR_INVALID_TTL, ttl_seconds, 0),
        LeaseError::NotLeaseGroup => (LEASE_ERROR_NOT_LEASE_GROUP, 0, 0),
    }
}

fn lease_error_of(tag: u8, first: u64, second: u64) -> Result<LeaseError, DecodeError> {
    Ok(match tag {
        LEASE_ERROR_NOT_FOUND => LeaseError::NotFound(first),
        LEASE_ERROR_EXISTS => LeaseError::Exists(first),
        LEASE_ERROR_TOO_MANY_LEASES => LeaseError::TooManyLeases { leases_max: first },
        LEASE_ERROR_TOO_MANY_KEYS => LeaseError::TooManyKeys {
            lease: first,
            keys_per_lease_max: second,
        },
        LEASE_ERROR_INVALID_TTL => LeaseError::InvalidTtl { ttl_seconds: first },
        LEASE_ERROR_NOT_LEASE_GROUP => LeaseError::NotLeaseGroup,
        tag => {
            return Err(DecodeError::UnknownTag {
                field: "lease error",
                tag,
            })
        }
    })
}

fn error_encoded_len(error: &KvError) -> usize {
    if let KvError::Lease(_) = error {
        // The tag, the lease error's tag, two `u64` fields.
        return 1 + 1 + 2 * 8;
    }
    // The tag, then the error's `u64` fields.
    let fields = match error {
        KvError::Lease(_) => unreachable!("counted above"),
        KvError::EmptyKey
        | KvError::InvalidRange
        | KvError::NotReadOnly
        | KvError::RevisionInTxn => 0,
        KvError::ResponseTooLarge { .. } => 1,
        KvError::KeyTooLarge { .. }
        | KvError::ValueTooLarge { .. }
        | KvError::TooManyTxnOps { .. }
        | KvError::CommandTooLarge { .. }
        | KvError::Session(SessionError::Expired { .. }) => 2,
        KvError::Session(SessionError::Stale { .. }) => 3,
        KvError::Compacted { .. } | KvError::FutureRevision { .. } => 2,
    };
    1 + 8 * fields
}

pub(crate) fn write_outcome(writer: &mut Writer, outcome: &Outcome) {
    match outcome {
        Ok(response) => {
            writer.u8(OUTCOME_TAG_RESPONSE);
            encode_response(writer, response);
        }
        Err(error) => {
            writer.u8(OUTCOME_TAG_ERROR);
            encode_error(writer, error);
        }
    }
}

pub(crate) fn read_outcome(reader: &mut Reader<'_>) -> Result<Outcome, DecodeError> {
    match reader.u8()? {
        OUTCOME_TAG_RESPONSE => Ok(Ok(decode_response(reader)?)),
        OUTCOME_TAG_ERROR => Ok(Err(decode_error(reader)?)),
        tag => Err(DecodeError::UnknownTag {
            field: "outcome",
            tag,
        }),
    }
}

fn encode_response(writer: &mut Writer, response: &Response) {
    writer.u8(RESPONSE_FORMAT_VERSION);
    writer.u64(response.revision);
    match &response.op {
        OpResponse::Range(range) => encode_range(writer, range),
        OpResponse::Put(put) => encode_put(writer, put),
        OpResponse::Delete(delete) => encode_delete(writer, delete),
        OpResponse::Append(append) => encode_append(writer, append),
        OpResponse::Compact(compact) => {
            writer.u8(RESPONSE_TAG_COMPACT);
            writer.u64(compact.compact_revision);
        }
        OpResponse::Lease(lease) => encode_lease(writer, lease),
        OpResponse::Txn(txn) => {
            writer.u8(RESPONSE_TAG_TXN);
            writer.u8(u8::from(txn.succeeded));
            writer.count(txn.responses.len());
            for response in &txn.responses {
                match response {
                    TxnOpResponse::Range(range) => encode_range(writer, range),
                    TxnOpResponse::Put(put) => encode_put(writer, put),
                    TxnOpResponse::Delete(delete) => encode_delete(writer, delete),
                    TxnOpResponse::Append(append) => encode_append(writer, append),
                }
            }
        }
    }
}

fn encode_key_value(writer: &mut Writer, key_value: &KeyValue) {
    writer.bytes(&key_value.key);
    writer.bytes(&key_value.value);
    writer.u64(key_value.create_revision);
    writer.u64(key_value.mod_revision);
    writer.u64(key_value.version);
    writer.u64(key_value.lease);
}

fn encode_range(writer: &mut Writer, range: &RangeResponse) {
    writer.u8(RESPONSE_TAG_RANGE);
    writer.u64(range.count);
    writer.u8(u8::from(range.more));
    writer.count(range.kvs.len());
    for key_value in &range.kvs {
        encode_key_value(writer, key_value);
    }
}

fn encode_put(writer: &mut Writer, put: &PutResponse) {
    writer.u8(RESPONSE_TAG_PUT);
    match &put.prev_kv {
        Some(key_value) => {
            writer.u8(1);
            encode_key_value(writer, key_value);
        }
        None => writer.u8(0),
    }
}

fn encode_delete(writer: &mut Writer, delete: &DeleteResponse) {
    writer.u8(RESPONSE_TAG_DELETE);
    writer.u64(delete.deleted);
    writer.count(delete.prev_kvs.len());
    for key_value in &delete.prev_kvs {
        encode_key_value(writer, key_value);
    }
}

fn encode_append(writer: &mut Writer, append: &AppendResponse) {
    writer.u8(RESPONSE_TAG_APPEND);
    writer.u64(append.value_bytes);
}

fn decode_response(reader: &mut Reader<'_>) -> Result<Response, DecodeError> {
    let version = reader.u8()?;
    if version != RESPONSE_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let revision = reader.u64()?;
    let tag = reader.u8()?;
    let op = if tag == RESPONSE_TAG_COMPACT {
        OpResponse::Compact(CompactResponse {
            compact_revision: reader.u64()?,
        })
    } else if tag == RESPONSE_TAG_LEASE {
        OpResponse::Lease(decode_lease(reader)?)
    } else if tag == RESPONSE_TAG_TXN {
        let succeeded = reader.bool("txn succeeded")?;
        let count = reader.count(TXN_OP_RESPONSE_ENCODED_BYTES_MIN)?;
        let mut responses = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = reader.u8()?;
            responses.push(decode_txn_op_response(reader, tag)?);
        }
        OpResponse::Txn(TxnResponse {
            succeeded,
            responses,
        })
    } else {
        decode_txn_op_response(reader, tag)?.into()
    };
    Ok(Response { revision, op })
}

fn decode_txn_op_response(reader: &mut Reader<'_>, tag: u8) -> Result<TxnOpResponse, DecodeError> {
    match tag {
        RESPONSE_TAG_RANGE => {
            let count = reader.u64()?;
            let more = reader.bool("range more")?;
            let kvs = decode_key_values(reader)?;
            Ok(TxnOpResponse::Range(RangeResponse { kvs, count, more }))
        }
        RESPONSE_TAG_PUT => {
            let prev_kv = if reader.bool("put prev_kv")? {
                Some(decode_key_value(reader)?)
            } else {
                None
            };
            Ok(TxnOpResponse::Put(PutResponse { prev_kv }))
        }
        RESPONSE_TAG_DELETE => {
            let deleted = reader.u64()?;
            let prev_kvs = decode_key_values(reader)?;
            Ok(TxnOpResponse::Delete(DeleteResponse { deleted, prev_kvs }))
        }
        RESPONSE_TAG_APPEND => Ok(TxnOpResponse::Append(AppendResponse {
            value_bytes: reader.u64()?,
        })),
        // A Txn tag here would be a nested transaction response, which cannot occur.
        tag => Err(DecodeError::UnknownTag {
            field: "response",
            tag,
        }),
    }
}

fn decode_key_values(reader: &mut Reader<'_>) -> Result<Vec<KeyValue>, DecodeError> {
    let count = reader.count(KeyValue::ENCODED_BYTES_FIXED)?;
    let mut key_values = Vec::with_capacity(count);
    for _ in 0..count {
        key_values.push(decode_key_value(reader)?);
    }
    Ok(key_values)
}

fn decode_key_value(reader: &mut Reader<'_>) -> Result<KeyValue, DecodeError> {
    Ok(KeyValue {
        key: reader.bytes()?,
        value: reader.bytes()?,
        create_revision: reader.u64()?,
        mod_revision: reader.u64()?,
        version: reader.u64()?,
        lease: reader.u64()?,
    })
}

fn encode_error(writer: &mut Writer, error: &KvError) {
    match error {
        KvError::EmptyKey => writer.u8(ERROR_TAG_EMPTY_KEY),
        KvError::KeyTooLarge {
            key_bytes,
            key_bytes_max,
        } => {
            writer.u8(ERROR_TAG_KEY_TOO_LARGE);
            writer.u64(*key_bytes);
            writer.u64(*key_bytes_max);
        }
        KvError::ValueTooLarge {
            value_bytes,
            value_bytes_max,
        } => {
            writer.u8(ERROR_TAG_VALUE_TOO_LARGE);
            writer.u64(*value_bytes);
            writer.u64(*value_bytes_max);
        }
        KvError::TooManyTxnOps { ops, txn_ops_max } => {
            writer.u8(ERROR_TAG_TOO_MANY_TXN_OPS);
            writer.u64(*ops);
            writer.u64(*txn_ops_max);
        }
        KvError::InvalidRange => writer.u8(ERROR_TAG_INVALID_RANGE),
        KvError::CommandTooLarge {
            command_bytes,
            command_bytes_max,
        } => {
            writer.u8(ERROR_TAG_COMMAND_TOO_LARGE);
            writer.u64(*command_bytes);
            writer.u64(*command_bytes_max);
        }
        KvError::ResponseTooLarge { response_bytes_max } => {
            writer.u8(ERROR_TAG_RESPONSE_TOO_LARGE);
            writer.u64(*response_bytes_max);
        }
        KvError::NotReadOnly => writer.u8(ERROR_TAG_NOT_READ_ONLY),
        KvError::RevisionInTxn => writer.u8(ERROR_TAG_REVISION_IN_TXN),
        KvError::Session(SessionError::Stale {
            client_id,
            seq,
            last_seq,
        }) => {
            writer.u8(ERROR_TAG_SESSION_STALE);
            writer.u64(*client_id);
            writer.u64(*seq);
            writer.u64(*last_seq);
        }
        KvError::Session(SessionError::Expired { client_id, seq }) => {
            writer.u8(ERROR_TAG_SESSION_EXPIRED);
            writer.u64(*client_id);
            writer.u64(*seq);
        }
        KvError::Compacted {
            revision,
            compact_revision,
        } => {
            writer.u8(ERROR_TAG_COMPACTED);
            writer.u64(*revision);
            writer.u64(*compact_revision);
        }
        KvError::FutureRevision {
            revision,
            closed_revision,
        } => {
            writer.u8(ERROR_TAG_FUTURE_REVISION);
            writer.u64(*revision);
            writer.u64(*closed_revision);
        }
        KvError::Lease(lease) => {
            let (tag, first, second) = lease_error_fields(lease);
            writer.u8(ERROR_TAG_LEASE);
            writer.u8(tag);
            writer.u64(first);
            writer.u64(second);
        }
    }
}

fn decode_error(reader: &mut Reader<'_>) -> Result<KvError, DecodeError> {
    Ok(match reader.u8()? {
        ERROR_TAG_EMPTY_KEY => KvError::EmptyKey,
        ERROR_TAG_KEY_TOO_LARGE => KvError::KeyTooLarge {
            key_bytes: reader.u64()?,
            key_bytes_max: reader.u64()?,
        },
        ERROR_TAG_VALUE_TOO_LARGE => KvError::ValueTooLarge {
            value_bytes: reader.u64()?,
            value_bytes_max: reader.u64()?,
        },
        ERROR_TAG_TOO_MANY_TXN_OPS => KvError::TooManyTxnOps {
            ops: reader.u64()?,
            txn_ops_max: reader.u64()?,
        },
        ERROR_TAG_INVALID_RANGE => KvError::InvalidRange,
        ERROR_TAG_COMMAND_TOO_LARGE => KvError::CommandTooLarge {
            command_bytes: reader.u64()?,
            command_bytes_max: reader.u64()?,
        },
        ERROR_TAG_RESPONSE_TOO_LARGE => KvError::ResponseTooLarge {
            response_bytes_max: reader.u64()?,
        },
        ERROR_TAG_NOT_READ_ONLY => KvError::NotReadOnly,
        ERROR_TAG_REVISION_IN_TXN => KvError::RevisionInTxn,
        ERROR_TAG_SESSION_STALE => KvError::Session(SessionError::Stale {
            client_id: reader.u64()?,
            seq: reader.u64()?,
            last_seq: reader.u64()?,
        }),
        ERROR_TAG_SESSION_EXPIRED => KvError::Session(SessionError::Expired {
            client_id: reader.u64()?,
            seq: reader.u64()?,
        }),
        ERROR_TAG_COMPACTED => KvError::Compacted {
            revision: reader.u64()?,
            compact_revision: reader.u64()?,
        },
        ERROR_TAG_FUTURE_REVISION => KvError::FutureRevision {
            revision: reader.u64()?,
            closed_revision: reader.u64()?,
        },
        ERROR_TAG_LEASE => {
            let tag = reader.u8()?;
            let (first, second) = (reader.u64()?, reader.u64()?);
            KvError::Lease(lease_error_of(tag, first, second)?)
        }
        tag => {
            return Err(DecodeError::UnknownTag {
                field: "error",
                tag,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_value(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: 9,
        }
    }

    // Every response shape and every error decodes back to itself, and its computed
    // encoded length is its encoding's length.
    #[test]
    fn outcomes_round_trip() {
        let responses = vec![
            OpResponse::Range(RangeResponse {
                kvs: vec![key_value(b"a", b"1"), key_value(b"b", b"")],
                count: 5,
                more: true,
            }),
            OpResponse::Put(PutResponse {
                prev_kv: Some(key_value(b"a", b"1")),
            }),
            OpResponse::Put(PutResponse { prev_kv: None }),
            OpResponse::Delete(DeleteResponse {
                deleted: 2,
                prev_kvs: vec![key_value(b"c", b"")],
            }),
            OpResponse::Append(AppendResponse { value_bytes: 77 }),
            OpResponse::Txn(TxnResponse {
                succeeded: true,
                responses: vec![
                    TxnOpResponse::Put(PutResponse { prev_kv: None }),
                    TxnOpResponse::Range(RangeResponse::default()),
                    TxnOpResponse::Delete(DeleteResponse::default()),
                    TxnOpResponse::Append(AppendResponse { value_bytes: 1 }),
                ],
            }),
        ];
        for op in responses {
            let response = Response { revision: 42, op };
            assert_eq!(Response::decode(&response.encode()), Ok(response.clone()));
            let outcome: Outcome = Ok(response);
            assert_eq!(
                outcome_encoded_len(&outcome),
                encode_outcome(&outcome).len()
            );
            assert_eq!(decode_outcome(&encode_outcome(&outcome)), Ok(outcome));
        }
        let errors = vec![
            KvError::EmptyKey,
            KvError::KeyTooLarge {
                key_bytes: 5000,
                key_bytes_max: 4096,
            },
            KvError::ValueTooLarge {
                value_bytes: 2,
                value_bytes_max: 1,
            },
            KvError::TooManyTxnOps {
                ops: 129,
                txn_ops_max: 128,
            },
            KvError::InvalidRange,
            KvError::CommandTooLarge {
                command_bytes: 9,
                command_bytes_max: 8,
            },
            KvError::ResponseTooLarge {
                response_bytes_max: 100,
            },
            KvError::NotReadOnly,
            KvError::Session(SessionError::Stale {
                client_id: 1,
                seq: 2,
                last_seq: 3,
            }),
            KvError::Session(SessionError::Expired {
                client_id: 1,
                seq: 2,
            }),
        ];
        for error in errors {
            assert_eq!(KvError::decode(&error.encode()), Ok(error.clone()));
            let outcome: Outcome = Err(error);
            assert_eq!(
                outcome_encoded_len(&outcome),
                encode_outcome(&outcome).len()
            );
            assert_eq!(decode_outcome(&encode_outcome(&outcome)), Ok(outcome));
        }
    }

    // Non-canonical booleans and nested transaction responses are rejected.
    #[test]
    fn non_canonical_responses_are_rejected() {
        let response = Response {
            revision: 1,
            op: OpResponse::Range(RangeResponse {
                kvs: vec![],
                count: 0,
                more: false,
            }),
        };
        let mut bytes = response.encode();
        // version, revision, tag, count, then the `more` byte.
        bytes[1 + 8 + 1 + 8] = 2;
        assert_eq!(
            Response::decode(&bytes),
            Err(DecodeError::UnknownTag {
                field: "range more",
                tag: 2
            })
        );

        let mut writer = Writer::default();
        writer.u8(RESPONSE_FORMAT_VERSION);
        writer.u64(1);
        writer.u8(RESPONSE_TAG_TXN);
        writer.u8(1);
        writer.u32(1);
        writer.u8(RESPONSE_TAG_TXN);
        writer.u8(1);
        writer.u32(0);
        assert_eq!(
            Response::decode(writer.as_slice()),
            Err(DecodeError::UnknownTag {
                field: "response",
                tag: RESPONSE_TAG_TXN
            })
        );
    }
}
