//! Applying lease operations to a [`Store`]: the lease group's table ops, a group's local
//! revoke (which deletes the attached keys), and the check a put with a lease passes.
//! The rules are in `docs/LEASES.md`.

use super::{DeleteRequest, KvError, OpResponse, Outcome, Response, ResponseBudget, Store, Write};
use crate::kv::lease::{
    AppliedRevocations, LeaseAnswer, LeaseError, LeaseOp, LeaseResponse, LeaseTable,
};

impl Store {
    /// Makes this store the lease group's (set by its owner at open; not replicated).
    pub fn set_lease_group(&mut self, is_lease_group: bool) {
        self.is_lease_group = is_lease_group;
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    pub fn applied_revocations(&self) -> &AppliedRevocations {
        &self.revoked
    }

    /// The keys of this group attached to `lease`, in key order.
    pub fn lease_keys(&self, lease: u64) -> Vec<Vec<u8>> {
        self.keys.of_lease(lease).cloned().collect()
    }

    /// Whether a put of `key` may attach it to `lease` (0: no lease, always).
    pub(super) fn check_lease(&self, lease: u64, key: &[u8]) -> Result<(), KvError> {
        if lease == 0 {
            return Ok(());
        }
        if self.revoked.is_tombstone(lease)
            || (self.is_lease_group && self.leases.get(lease).is_none())
        {
            return Err(LeaseError::NotFound(lease).into());
        }
        let attached = self.keys.get(key).is_some_and(|entry| entry.lease == lease);
        let keys_per_lease_max = self.lease_limits.keys_per_lease_max;
        if !attached && self.keys.lease_key_count(lease) as u64 >= keys_per_lease_max {
            return Err(LeaseError::TooManyKeys {
                lease,
                keys_per_lease_max,
            }
            .into());
        }
        Ok(())
    }

    /// Applies the lease op of the committed entry at `index`, stamped with `revision`.
    /// Lease-table ops outside the lease group are refused ([`LeaseError::NotLeaseGroup`])
    /// and change nothing. Panics like [`Store::apply`] on an index that does not increase
    /// or a revision at or below the closed one.
    pub fn apply_lease(&mut self, index: u64, revision: u64, op: &LeaseOp) -> Outcome {
        self.advance(index);
        assert!(
            revision > self.closed_revision(),
            "entry {index}: a lease op at revision {revision} at or below the closed revision {}",
            self.closed_revision()
        );
        // Taken whether or not the op changes anything, as a write entry's (see
        // `Store::apply`): revisions rise along the log.
        self.closed_revision = self.closed_revision.max(revision);
        if op.is_lease_table_op() && !self.is_lease_group {
            return Err(LeaseError::NotLeaseGroup.into());
        }
        let limits = self.lease_limits;
        let mut response = LeaseResponse::default();
        match op {
            &LeaseOp::Grant { id, ttl_ms } => {
                response.answer = LeaseAnswer::Grant;
                let id = self.leases.grant(id, ttl_ms, revision, &limits)?;
                self.revoked.clear(id);
                response.id = id;
                response.ttl_ms = ttl_ms;
                response.granted_ttl_ms = ttl_ms;
            }
            &LeaseOp::Revoke { id } => {
                response.answer = LeaseAnswer::Revoke;
                self.leases.revoke(id, revision, &limits)?;
                response.id = id;
            }
            &LeaseOp::KeepAlive { id } => {
                response.answer = LeaseAnswer::KeepAlive;
                let record = self.leases.keep_alive(id)?;
                response.id = id;
                response.ttl_ms = record.remaining_ms;
                response.granted_ttl_ms = record.granted_ttl_ms;
            }
            &LeaseOp::TimeToLive { id, keys } => {
                response.answer = LeaseAnswer::TimeToLive;
                let record = *self.leases.get(id).ok_or(LeaseError::NotFound(id))?;
                response.id = id;
                response.ttl_ms = record.remaining_ms;
                response.granted_ttl_ms = record.granted_ttl_ms;
                if keys {
                    response.keys = self.lease_keys(id);
                }
            }
            &LeaseOp::List { after } => {
                response.answer = LeaseAnswer::List;
                let list_max = limits.list_max as usize;
                let mut ids = self.leases.iter_after(after).map(|(id, _)| id);
                response.ids = ids.by_ref().take(list_max).collect();
                response.more = ids.next().is_some();
            }
            &LeaseOp::Expire { id, renewals } => {
                if !self.leases.expire(id, renewals, revision, &limits) {
                    return Err(LeaseError::NotFound(id).into());
                }
                response.id = id;
            }
            LeaseOp::Checkpoint { leases } => self.leases.checkpoint(leases),
            LeaseOp::RevokeLocal { revocations } => {
                let fresh = self.revoked.apply(revocations, revision, &limits);
                let mut write = Write {
                    revision,
                    changed: false,
                };
                let mut budget = ResponseBudget::new(&self.limits);
                for lease in fresh {
                    for key in self.lease_keys(lease) {
                        let delete = DeleteRequest {
                            key,
                            ..DeleteRequest::default()
                        };
                        self.delete(&mut write, &delete, &mut budget, None)?;
                    }
                }
                if write.changed {
                    self.revision = revision;
                    self.bound_history();
                }
            }
        }
        Ok(Response {
            revision: self.revision.max(revision),
            op: OpResponse::Lease(response),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::lease::LeaseOp;
    use crate::kv::{Command, KvError, LeaseError, Op, OpResponse, PutRequest, Store};

    fn put(store: &mut Store, index: u64, key: &str, lease: u64) -> Result<(), KvError> {
        let command = Command {
            client_id: 0,
            seq: 0,
            op: Op::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease,
                prev_kv: false,
            }),
        };
        store.apply(index, index << 16, &command).map(|_| ())
    }

    fn lease(store: &mut Store, index: u64, op: LeaseOp) -> Result<u64, KvError> {
        store
            .apply_lease(index, index << 16, &op)
            .map(|response| match response.op {
                OpResponse::Lease(lease) => lease.id,
                other => panic!("{other:?}"),
            })
    }

    // In the lease group a put names a lease of the table; a local revoke deletes the
    // lease's keys at its revision, and from then on the lease's tombstone refuses puts.
    #[test]
    fn a_local_revoke_deletes_the_attached_keys_and_refuses_later_puts() {
        let mut store = Store::default();
        store.set_lease_group(true);
        assert_eq!(
            put(&mut store, 1, "a", 5),
            Err(KvError::Lease(LeaseError::NotFound(5)))
        );
        let id = lease(
            &mut store,
            2,
            LeaseOp::Grant {
                id: 5,
                ttl_ms: 1000,
            },
        )
        .unwrap();
        put(&mut store, 3, "a", id).unwrap();
        put(&mut store, 4, "b", id).unwrap();
        put(&mut store, 5, "c", 0).unwrap();
        put(&mut store, 6, "b", 0).unwrap();
        assert_eq!(store.lease_keys(id), [b"a".to_vec()]);
        lease(&mut store, 7, LeaseOp::Revoke { id }).unwrap();
        let position = store.leases().last_position();
        lease(
            &mut store,
            8,
            LeaseOp::RevokeLocal {
                revocations: vec![(position, id)],
            },
        )
        .unwrap();
        assert!(store.get(b"a").is_none());
        assert!(store.get(b"b").is_some() && store.get(b"c").is_some());
        assert_eq!(store.revision(), 8 << 16);
        assert_eq!(
            put(&mut store, 9, "a", id),
            Err(KvError::Lease(LeaseError::NotFound(id)))
        );
        store.keys.assert_consistent();
    }

    // Outside the lease group a put with any lease is accepted (the proposer checked it),
    // table ops are refused, and a local revoke applies once.
    #[test]
    fn other_groups_refuse_table_ops_and_apply_each_revocation_once() {
        let mut store = Store::default();
        assert_eq!(
            lease(&mut store, 1, LeaseOp::Grant { id: 1, ttl_ms: 5 }),
            Err(KvError::Lease(LeaseError::NotLeaseGroup))
        );
        put(&mut store, 2, "x", 9).unwrap();
        let revoke = LeaseOp::RevokeLocal {
            revocations: vec![(1, 9)],
        };
        lease(&mut store, 3, revoke.clone()).unwrap();
        assert!(store.get(b"x").is_none());
        put(&mut store, 4, "y", 8).unwrap();
        put(&mut store, 5, "x", 8).unwrap();
        lease(&mut store, 6, revoke).unwrap();
        assert_eq!(store.applied_revocations().watermark(), 1);
        assert_eq!(
            store.lease_keys(8).len(),
            2,
            "a repeated revoke changes nothing"
        );
    }

    // A put past `keys_per_lease_max` keys of one lease is refused; rewriting an attached
    // key is not a new one.
    #[test]
    fn keys_per_lease_are_bounded() {
        let mut store = Store::default();
        store.lease_limits.keys_per_lease_max = 2;
        put(&mut store, 1, "a", 3).unwrap();
        put(&mut store, 2, "b", 3).unwrap();
        put(&mut store, 3, "a", 3).unwrap();
        assert_eq!(
            put(&mut store, 4, "c", 3),
            Err(KvError::Lease(LeaseError::TooManyKeys {
                lease: 3,
                keys_per_lease_max: 2
            }))
        );
    }
}
