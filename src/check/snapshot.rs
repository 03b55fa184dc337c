//! Checks of store-wide revisions that a per-key linearizability check cannot make: that
//! a read at revision R across groups returned exactly the writes with revisions ≤ R (one
//! consistent snapshot: none missing, none extra, each key at its version as of R), and
//! that revisions respect each client's causal order (a client's write gets a revision
//! above everything it saw before it, and a snapshot taken now is at or above it).
//!
//! Both are pure. The caller supplies what the snapshot should hold: in the simulator,
//! each group's history at R as a replica that had closed R held it; a process test can
//! build it from writes whose revisions it knows.

use std::collections::HashMap;
use std::fmt;

use super::ClientId;
use crate::kv::KeyValue;

/// How a read at one revision differs from what the store held at that revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotViolation {
    /// A key the store held at the revision is not in the read.
    Missing {
        key: Vec<u8>,
        expected: Box<KeyValue>,
    },
    /// The read holds a key the store did not hold at the revision.
    Extra { key: Vec<u8>, got: Box<KeyValue> },
    /// The key is in both, at different versions or values.
    Differs {
        key: Vec<u8>,
        got: Box<KeyValue>,
        expected: Box<KeyValue>,
    },
    /// A key-value in the read was written after the read's revision.
    AfterRevision { key: Vec<u8>, mod_revision: u64 },
    /// The read's key-values are not in key order, or a key appears twice.
    Unordered { key: Vec<u8> },
}

impl fmt::Display for SnapshotViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        match self {
            SnapshotViolation::Missing { key, expected } => write!(
                f,
                "key {:?} (mod revision {}) is missing",
                show(key),
                expected.mod_revision
            ),
            SnapshotViolation::Extra { key, got } => write!(
                f,
                "key {:?} (mod revision {}) should not be there",
                show(key),
                got.mod_revision
            ),
            SnapshotViolation::Differs { key, got, expected } => write!(
                f,
                "key {:?} is at mod revision {} version {} value {:?}, expected mod revision \
                 {} version {} value {:?}",
                show(key),
                got.mod_revision,
                got.version,
                show(&got.value),
                expected.mod_revision,
                expected.version,
                show(&expected.value)
            ),
            SnapshotViolation::AfterRevision { key, mod_revision } => write!(
                f,
                "key {:?} has mod revision {mod_revision}, after the read's revision",
                show(key)
            ),
            SnapshotViolation::Unordered { key } => {
                write!(f, "key {:?} is out of key order or repeated", show(key))
            }
        }
    }
}

/// Checks a read at `revision` (its key-values, in key order, over some range) against
/// `expected`: what the store held over the same range at `revision`, in key order.
/// Returns the first difference.
pub fn check_snapshot_read(
    revision: u64,
    got: &[KeyValue],
    expected: &[KeyValue],
) -> Result<(), SnapshotViolation> {
    for pair in got.windows(2) {
        if pair[0].key >= pair[1].key {
            return Err(SnapshotViolation::Unordered {
                key: pair[1].key.clone(),
            });
        }
    }
    if let Some(late) = got.iter().find(|kv| kv.mod_revision > revision) {
        return Err(SnapshotViolation::AfterRevision {
            key: late.key.clone(),
            mod_revision: late.mod_revision,
        });
    }
    let (mut left, mut right) = (got.iter().peekable(), expected.iter().peekable());
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => return Ok(()),
            (Some(g), None) => {
                return Err(SnapshotViolation::Extra {
                    key: g.key.clone(),
                    got: Box::new((*g).clone()),
                })
            }
            (None, Some(e)) => {
                return Err(SnapshotViolation::Missing {
                    key: e.key.clone(),
                    expected: Box::new((*e).clone()),
                })
            }
            (Some(g), Some(e)) if g.key < e.key => {
                return Err(SnapshotViolation::Extra {
                    key: g.key.clone(),
                    got: Box::new((*g).clone()),
                })
            }
            (Some(g), Some(e)) if g.key > e.key => {
                return Err(SnapshotViolation::Missing {
                    key: e.key.clone(),
                    expected: Box::new((*e).clone()),
                })
            }
            (Some(g), Some(e)) => {
                if g != e {
                    return Err(SnapshotViolation::Differs {
                        key: g.key.clone(),
                        got: Box::new((*g).clone()),
                        expected: Box::new((*e).clone()),
                    });
                }
                left.next();
                right.next();
            }
        }
    }
}

/// A revision that breaks a client's causal order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CausalViolation {
    /// A write got a revision at or below one the client had seen before invoking it.
    WriteNotAfterSeen {
        client: ClientId,
        revision: u64,
        seen: u64,
    },
    /// A snapshot read without a revision was taken below one the client had seen.
    SnapshotBeforeSeen {
        client: ClientId,
        revision: u64,
        seen: u64,
    },
}

impl fmt::Display for CausalViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CausalViolation::WriteNotAfterSeen {
                client,
                revision,
                seen,
            } => write!(
                f,
                "client {} wrote at revision {revision} after it had seen revision {seen}",
                client.0
            ),
            CausalViolation::SnapshotBeforeSeen {
                client,
                revision,
                seen,
            } => write!(
                f,
                "client {} read a snapshot at revision {revision} after it had seen revision \
                 {seen}",
                client.0
            ),
        }
    }
}

/// What one operation of a client revealed of revisions, for [`CausalOrder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revealed {
    /// A write that took effect at this revision.
    Write(u64),
    /// A read of one revision chosen by the store (a snapshot read without a revision).
    Snapshot(u64),
    /// Any other answer carrying a revision the client has now seen (a read's header, a
    /// read at a revision the client chose, a compare that did not write).
    Seen(u64),
}

/// Each client's highest revision seen, and the check of every later answer against it.
///
/// Call [`CausalOrder::invoked`] when a client starts an operation and
/// [`CausalOrder::completed`] when it learns the answer: an operation is held to what the
/// client had seen when it started it, so operations of one client may overlap.
#[derive(Clone, Debug, Default)]
pub struct CausalOrder {
    seen: HashMap<ClientId, u64>,
}

impl CausalOrder {
    pub fn new() -> CausalOrder {
        CausalOrder::default()
    }

    /// The client's highest revision seen so far, to keep with the operation it starts
    /// now (and, as the SDK does, to send with it).
    pub fn invoked(&self, client: ClientId) -> u64 {
        self.seen.get(&client).copied().unwrap_or(0)
    }

    /// The operation the client started when it had seen `seen_at_invoke` revealed
    /// `revealed`.
    pub fn completed(
        &mut self,
        client: ClientId,
        seen_at_invoke: u64,
        revealed: Revealed,
    ) -> Result<(), CausalViolation> {
        let revision = match revealed {
            Revealed::Write(revision) => {
                if revision <= seen_at_invoke {
                    return Err(CausalViolation::WriteNotAfterSeen {
                        client,
                        revision,
                        seen: seen_at_invoke,
                    });
                }
                revision
            }
            Revealed::Snapshot(revision) => {
                if revision < seen_at_invoke {
                    return Err(CausalViolation::SnapshotBeforeSeen {
                        client,
                        revision,
                        seen: seen_at_invoke,
                    });
                }
                revision
            }
            Revealed::Seen(revision) => revision,
        };
        let seen = self.seen.entry(client).or_default();
        *seen = (*seen).max(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, mod_revision: u64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn an_exact_snapshot_passes() {
        let store = [kv("a", "1", 3), kv("b", "2", 5)];
        assert_eq!(check_snapshot_read(5, &store, &store), Ok(()));
        assert_eq!(check_snapshot_read(9, &[], &[]), Ok(()));
    }

    #[test]
    fn missing_extra_and_stale_keys_are_caught() {
        let expected = [kv("a", "1", 3), kv("c", "2", 5)];
        let missing = check_snapshot_read(5, &[kv("a", "1", 3)], &expected);
        assert!(matches!(missing, Err(SnapshotViolation::Missing { key, .. }) if key == b"c"));
        let extra = [kv("a", "1", 3), kv("b", "x", 4), kv("c", "2", 5)];
        let extra = check_snapshot_read(5, &extra, &expected);
        assert!(matches!(extra, Err(SnapshotViolation::Extra { key, .. }) if key == b"b"));
        let stale = [kv("a", "0", 2), kv("c", "2", 5)];
        let stale = check_snapshot_read(5, &stale, &expected);
        assert!(matches!(stale, Err(SnapshotViolation::Differs { key, .. }) if key == b"a"));
        let late = [kv("a", "1", 3), kv("c", "3", 6)];
        let late = check_snapshot_read(5, &late, &expected);
        assert!(matches!(
            late,
            Err(SnapshotViolation::AfterRevision {
                mod_revision: 6,
                ..
            })
        ));
        let repeated = [kv("a", "1", 3), kv("a", "1", 3)];
        let repeated = check_snapshot_read(5, &repeated, &expected);
        assert!(matches!(repeated, Err(SnapshotViolation::Unordered { .. })));
        assert!(check_snapshot_read(5, &[], &expected)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn causal_order_holds_each_operation_to_what_its_client_had_seen() {
        let (one, two) = (ClientId(1), ClientId(2));
        let mut order = CausalOrder::new();
        let seen = order.invoked(one);
        assert_eq!(seen, 0);
        order.completed(one, seen, Revealed::Seen(40)).unwrap();
        let seen = order.invoked(one);
        assert_eq!(seen, 40);
        // Another client has seen nothing: a lower revision is no violation for it.
        order.completed(two, 0, Revealed::Write(10)).unwrap();
        let error = order.completed(one, seen, Revealed::Write(40)).unwrap_err();
        assert_eq!(
            error,
            CausalViolation::WriteNotAfterSeen {
                client: one,
                revision: 40,
                seen: 40
            }
        );
        assert!(order.completed(one, seen, Revealed::Snapshot(39)).is_err());
        order.completed(one, seen, Revealed::Snapshot(40)).unwrap();
        order.completed(one, seen, Revealed::Write(41)).unwrap();
        assert_eq!(order.invoked(one), 41);
        // An operation started before a later answer is held to what was seen then.
        order.completed(one, 30, Revealed::Write(35)).unwrap();
        assert_eq!(order.invoked(one), 41);
    }
}
