//! Serializes a store's whole state to bytes and restores it, byte-identical for equal
//! states, checksummed, and refusing (never panicking on) any damaged or forged input.
//!
//! The byte layout is written down in `docs/FORMATS.md`.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::history::{History, Version};
use super::keys::Keys;
use super::lease::{AppliedRevocations, LeaseLimits, LeaseRecord, LeaseTable, Revocation};
use super::limits::{Limits, LimitsError};
use super::response::{read_outcome, write_outcome};
use super::session::{CachedOutcome, Session, Sessions};
use super::store::{Entry, Store};
use super::wire::{DecodeError, Reader, Writer};

/// The first four bytes of every kv snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CKVS";
/// The layout version this code writes. Version 3 added the lease section; version 2
/// (without it) is read as a store without leases. Version 1 (revisions were log
/// indexes, no history) is refused: its revisions cannot be ordered against revisions
/// that are clock values.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
/// The oldest layout version this code reads.
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 2;

/// Magic, version, applied index, revision, closed and compact revisions, eight limits,
/// key count, history key count, session count, crc.
const SNAPSHOT_BYTES_MIN: usize = 4 + 4 + 8 + 3 * 8 + 8 * 8 + 8 + 8 + 8 + 4;
/// Smallest key record: two lengths, a one-byte key, four `u64` fields.
const KEY_RECORD_BYTES_MIN: usize = 4 + 1 + 4 + 4 * 8;
/// Smallest history record: a one-byte key with its length, a version count, and one
/// tombstone (revision, present flag).
const HISTORY_RECORD_BYTES_MIN: usize = 4 + 1 + 8 + 8 + 1;
/// Smallest version inside a history record: a tombstone.
const VERSION_RECORD_BYTES_MIN: usize = 8 + 1;
/// Smallest session record: client id, seq, last index, cached kind.
const SESSION_RECORD_BYTES_MIN: usize = 8 + 8 + 8 + 1;

const CACHED_KIND_RERUN: u8 = 0;
const CACHED_KIND_STORED: u8 = 1;

/// Why bytes could not be restored as a store.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    #[error("snapshot of {bytes} bytes is shorter than the smallest one")]
    TooShort { bytes: u64 },
    #[error("not a kv snapshot (bad magic)")]
    BadMagic,
    #[error("unsupported kv snapshot version {version}")]
    UnsupportedVersion { version: u32 },
    #[error("kv snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("kv snapshot: {0}")]
    Decode(#[from] DecodeError),
    #[error("kv snapshot: {0}")]
    Limits(#[from] LimitsError),
    #[error("kv snapshot is inconsistent: {reason}")]
    Invalid { reason: &'static str },
}

fn invalid(reason: &'static str) -> SnapshotError {
    SnapshotError::Invalid { reason }
}

impl Store {
    /// Serializes the whole state: applied index, limits, every key with its metadata,
    /// every session with its cached outcome. Equal stores give identical bytes, because
    /// keys and sessions are written in key and client id order.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.raw(&SNAPSHOT_MAGIC);
        writer.u32(SNAPSHOT_FORMAT_VERSION);
        writer.u64(self.applied_index);
        writer.u64(self.revision);
        writer.u64(self.closed_revision);
        writer.u64(self.compact_revision);
        let limits = &self.limits;
        for limit in [
            limits.key_bytes_max,
            limits.value_bytes_max,
            limits.txn_ops_max,
            limits.command_bytes_max,
            limits.response_bytes_max,
            limits.sessions_max,
            limits.session_cache_bytes_max,
            limits.history_bytes_max,
        ] {
            writer.u64(limit);
        }
        writer.u64(self.keys.len() as u64);
        for (key, entry) in self.keys.iter() {
            writer.bytes(key);
            writer.bytes(&entry.value);
            writer.u64(entry.create_revision);
            writer.u64(entry.mod_revision);
            writer.u64(entry.version);
            writer.u64(entry.lease);
        }
        let history: Vec<(&[u8], &[Version])> = self.history.iter().collect();
        writer.u64(history.len() as u64);
        for (key, versions) in history {
            writer.bytes(key);
            writer.u64(versions.len() as u64);
            for version in versions {
                writer.u64(version.revision);
                match &version.entry {
                    None => writer.u8(0),
                    Some(entry) => {
                        writer.u8(1);
                        writer.bytes(&entry.value);
                        writer.u64(entry.create_revision);
                        writer.u64(entry.mod_revision);
                        writer.u64(entry.version);
                        writer.u64(entry.lease);
                    }
                }
            }
        }
        writer.u64(self.sessions.len() as u64);
        for (client_id, session) in self.sessions.iter() {
            writer.u64(*client_id);
            writer.u64(session.last_seq);
            writer.u64(session.last_index);
            match &session.cached {
                CachedOutcome::Rerun => writer.u8(CACHED_KIND_RERUN),
                CachedOutcome::Stored(outcome) => {
                    writer.u8(CACHED_KIND_STORED);
                    let mut encoded = Writer::default();
                    write_outcome(&mut encoded, outcome);
                    debug_assert_eq!(encoded.len() as u64, session.cached_bytes);
                    writer.bytes(encoded.as_slice());
                }
            }
        }
        self.write_leases(&mut writer);
        let crc = crc32fast::hash(writer.as_slice());
        writer.u32(crc);
        writer.into_bytes()
    }

    /// Restores a store from [`Store::snapshot`]'s bytes. Checks the magic, the version
    /// and the crc, then every length against the bytes left before allocating, and the
    /// state's own invariants (sorted unique keys, revisions within the applied index,
    /// sessions within their bounds). Never panics, whatever the input.
    pub fn restore(bytes: &[u8]) -> Result<Store, SnapshotError> {
        if bytes.len() < SNAPSHOT_BYTES_MIN {
            return Err(SnapshotError::TooShort {
                bytes: bytes.len() as u64,
            });
        }
        if bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let mut reader = Reader::new(&body[4..]);
        let version = reader.u32()?;
        if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion { version });
        }
        let stored = Reader::new(crc_bytes).u32()?;
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }

        let applied_index = reader.u64()?;
        let revision = reader.u64()?;
        let closed_revision = reader.u64()?;
        let compact_revision = reader.u64()?;
        if compact_revision > revision.max(closed_revision) {
            return Err(invalid("compaction past the closed revision"));
        }
        let limits = Limits {
            key_bytes_max: reader.u64()?,
            value_bytes_max: reader.u64()?,
            txn_ops_max: reader.u64()?,
            command_bytes_max: reader.u64()?,
            response_bytes_max: reader.u64()?,
            sessions_max: reader.u64()?,
            session_cache_bytes_max: reader.u64()?,
            history_bytes_max: reader.u64()?,
        };
        limits.check()?;
        let keys = read_keys(&mut reader, revision, &limits)?;
        let history = read_history(&mut reader, revision, &keys, &limits)?;
        let sessions = read_sessions(&mut reader, applied_index, &limits)?;
        let (lease_limits, leases, revoked) = if version >= 3 {
            read_leases(&mut reader)?
        } else {
            Default::default()
        };
        reader.finish()?;
        Ok(Store {
            limits,
            applied_index,
            revision,
            closed_revision,
            compact_revision,
            keys,
            history,
            sessions,
            leases,
            revoked,
            lease_limits,
            is_lease_group: false,
        })
    }

    /// The lease section: the lease limits, the table, the revocation log, and this
    /// group's applied revocations, each in id or position order.
    fn write_leases(&self, writer: &mut Writer) {
        let limits = &self.lease_limits;
        for limit in [
            limits.leases_max,
            limits.keys_per_lease_max,
            limits.revocations_retained_max,
            limits.revocations_per_entry_max,
            limits.revocations_per_second_max,
            limits.checkpoint_batch_max,
            limits.tombstone_retain_ms,
            limits.list_max,
        ] {
            writer.u64(limit);
        }
        writer.u64(self.leases.len() as u64);
        for (id, record) in self.leases.iter() {
            writer.u64(id);
            writer.u64(record.granted_ttl_ms);
            writer.u64(record.renewals);
            writer.u64(record.remaining_ms);
        }
        writer.u64(self.leases.last_position());
        let revocations: Vec<&Revocation> = self.leases.revocations().collect();
        writer.u64(revocations.len() as u64);
        for revocation in revocations {
            writer.u64(revocation.position);
            writer.u64(revocation.lease);
            writer.u64(revocation.revision);
        }
        writer.u64(self.revoked.watermark());
        let tombstones: Vec<(u64, u64)> = self.revoked.tombstones().collect();
        writer.u64(tombstones.len() as u64);
        for (lease, revision) in tombstones {
            writer.u64(lease);
            writer.u64(revision);
        }
    }
}

/// The lease section of [`Store::write_leases`], checked: ids and positions strictly
/// increasing, remaining time within the granted one, positions without gaps.
fn read_leases(
    reader: &mut Reader<'_>,
) -> Result<(LeaseLimits, LeaseTable, AppliedRevocations), SnapshotError> {
    let limits = LeaseLimits {
        leases_max: reader.u64()?,
        keys_per_lease_max: reader.u64()?,
        revocations_retained_max: reader.u64()?,
        revocations_per_entry_max: reader.u64()?,
        revocations_per_second_max: reader.u64()?,
        checkpoint_batch_max: reader.u64()?,
        tombstone_retain_ms: reader.u64()?,
        list_max: reader.u64()?,
    };
    let count = read_record_count(reader, 4 * 8)?;
    let mut leases = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = reader.u64()?;
        let record = LeaseRecord {
            granted_ttl_ms: reader.u64()?,
            renewals: reader.u64()?,
            remaining_ms: reader.u64()?,
        };
        if leases.last().is_some_and(|&(last, _)| id <= last) || id == 0 {
            return Err(invalid("lease ids not in strictly increasing order"));
        }
        if record.remaining_ms > record.granted_ttl_ms {
            return Err(invalid("lease remaining time above its granted time"));
        }
        leases.push((id, record));
    }
    let last_position = reader.u64()?;
    let count = read_record_count(reader, 3 * 8)?;
    let mut revocations: Vec<Revocation> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let revocation = Revocation {
            position: reader.u64()?,
            lease: reader.u64()?,
            revision: reader.u64()?,
        };
        if let Some(last) = revocations.last() {
            if revocation.position != last.position + 1 {
                return Err(invalid("revocation positions with a gap"));
            }
        }
        revocations.push(revocation);
    }
    if revocations.last().map_or(0, |last| last.position) > last_position {
        return Err(invalid("revocation past the last position"));
    }
    let watermark = reader.u64()?;
    let count = read_record_count(reader, 2 * 8)?;
    let mut tombstones: Vec<(u64, u64)> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tombstone = (reader.u64()?, reader.u64()?);
        if tombstones
            .last()
            .is_some_and(|&(last, _)| tombstone.0 <= last)
        {
            return Err(invalid("tombstones not in strictly increasing order"));
        }
        tombstones.push(tombstone);
    }
    Ok((
        limits,
        LeaseTable::from_parts(leases, revocations, last_position),
        AppliedRevocations::from_parts(watermark, tombstones),
    ))
}

/// A `u64` record count, refused when records of `record_bytes_min` could not fit.
fn read_record_count(
    reader: &mut Reader<'_>,
    record_bytes_min: usize,
) -> Result<u64, SnapshotError> {
    let count = reader.u64()?;
    let remaining = reader.remaining() as u64;
    if count > remaining / record_bytes_min as u64 {
        return Err(DecodeError::LengthExceedsInput {
            length: count,
            remaining,
        }
        .into());
    }
    Ok(count)
}

fn read_keys(
    reader: &mut Reader<'_>,
    revision: u64,
    limits: &Limits,
) -> Result<Keys, SnapshotError> {
    let count = read_record_count(reader, KEY_RECORD_BYTES_MIN)?;
    let mut keys = Keys::default();
    for _ in 0..count {
        let key = reader.bytes()?;
        let value = reader.bytes()?;
        let entry = Entry {
            value,
            create_revision: reader.u64()?,
            mod_revision: reader.u64()?,
            version: reader.u64()?,
            lease: reader.u64()?,
        };
        if key.is_empty() || key.len() as u64 > limits.key_bytes_max {
            return Err(invalid("key length outside the limits"));
        }
        check_entry(&entry, revision, limits)?;
        if let Some(last_key) = keys.last_key() {
            if key.as_slice() <= last_key {
                return Err(invalid("keys not in strictly increasing order"));
            }
        }
        keys.insert_new(key, entry);
    }
    Ok(keys)
}

/// The checks of one stored entry, live or past: revisions in order and within the
/// store's, a version, a value within the limits.
fn check_entry(entry: &Entry, revision: u64, limits: &Limits) -> Result<(), SnapshotError> {
    if entry.value.len() as u64 > limits.value_bytes_max {
        return Err(invalid("value length outside the limits"));
    }
    if entry.create_revision == 0
        || entry.create_revision > entry.mod_revision
        || entry.mod_revision > revision
    {
        return Err(invalid("key revisions out of order"));
    }
    if entry.version == 0 {
        return Err(invalid("stored key with version 0"));
    }
    Ok(())
}

fn read_history(
    reader: &mut Reader<'_>,
    revision: u64,
    keys: &Keys,
    limits: &Limits,
) -> Result<History, SnapshotError> {
    let count = read_record_count(reader, HISTORY_RECORD_BYTES_MIN)?;
    let mut versions: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    let mut last_key: Option<Vec<u8>> = None;
    for _ in 0..count {
        let key = reader.bytes()?;
        if key.is_empty() || key.len() as u64 > limits.key_bytes_max {
            return Err(invalid("history key length outside the limits"));
        }
        if last_key.as_ref().is_some_and(|last| key <= *last) {
            return Err(invalid("history keys not in strictly increasing order"));
        }
        let version_count = read_record_count(reader, VERSION_RECORD_BYTES_MIN)?;
        if version_count == 0 {
            return Err(invalid("a history key without versions"));
        }
        let mut list = Vec::new();
        let mut previous = 0;
        for _ in 0..version_count {
            let at = reader.u64()?;
            let entry = match reader.u8()? {
                0 => None,
                1 => {
                    let entry = Entry {
                        value: reader.bytes()?,
                        create_revision: reader.u64()?,
                        mod_revision: reader.u64()?,
                        version: reader.u64()?,
                        lease: reader.u64()?,
                    };
                    check_entry(&entry, revision, limits)?;
                    if entry.mod_revision != at {
                        return Err(invalid("a past version whose revision is not its entry's"));
                    }
                    Some(entry)
                }
                tag => {
                    return Err(DecodeError::UnknownTag {
                        field: "history version",
                        tag,
                    }
                    .into())
                }
            };
            if at == 0 || at < previous || at > revision {
                return Err(invalid("history versions out of order"));
            }
            previous = at;
            list.push(Version {
                revision: at,
                entry,
            });
        }
        if keys
            .get(&key)
            .is_some_and(|live| live.mod_revision < previous)
        {
            return Err(invalid("a live entry older than its history"));
        }
        last_key = Some(key.clone());
        versions.insert(key, list);
    }
    Ok(History::restored(versions, |key| {
        keys.get(key).map(|entry| entry.mod_revision)
    }))
}

fn read_sessions(
    reader: &mut Reader<'_>,
    applied_index: u64,
    limits: &Limits,
) -> Result<Sessions, SnapshotError> {
    let count = read_record_count(reader, SESSION_RECORD_BYTES_MIN)?;
    if count > limits.sessions_max {
        return Err(invalid("more sessions than sessions_max"));
    }
    let mut sessions = Vec::new();
    // Last indexes seen so far, to refuse a shared one at the record that repeats it.
    let mut last_indexes = BTreeSet::new();
    let mut last_client_id = 0;
    for _ in 0..count {
        let client_id = reader.u64()?;
        let last_seq = reader.u64()?;
        let last_index = reader.u64()?;
        let (cached, cached_bytes) = match reader.u8()? {
            CACHED_KIND_RERUN => (CachedOutcome::Rerun, 0),
            CACHED_KIND_STORED => {
                let encoded = reader.bytes()?;
                let mut outcome_reader = Reader::new(&encoded);
                let outcome = read_outcome(&mut outcome_reader)?;
                outcome_reader.finish()?;
                (CachedOutcome::Stored(outcome), encoded.len() as u64)
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    field: "cached outcome",
                    tag,
                }
                .into())
            }
        };
        // Client ids are written in increasing order and 0 is not a session, so a strict
        // increase from 0 checks both.
        if client_id <= last_client_id {
            return Err(invalid(
                "session client ids not in strictly increasing order",
            ));
        }
        last_client_id = client_id;
        if last_seq == 0 {
            return Err(invalid("session with seq 0"));
        }
        if last_index == 0 || last_index > applied_index {
            return Err(invalid("session last index outside the applied log"));
        }
        if !last_indexes.insert(last_index) {
            return Err(invalid("two sessions share a last index"));
        }
        sessions.push((
            client_id,
            Session {
                last_seq,
                last_index,
                cached,
                cached_bytes,
            },
        ));
    }
    Ok(Sessions::from_restored(sessions))
}
