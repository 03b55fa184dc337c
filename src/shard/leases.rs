//! Leases in the shard core (`docs/LEASES.md`): where a lease request runs, the check a
//! put with a lease passes against the lease group before it is proposed, and the pull of
//! the lease group's revocations into every group this shard leads.
//!
//! | bound                   | value | what it limits                                   |
//! |-------------------------|-------|--------------------------------------------------|
//! | [`LEASE_CHECKS_MAX`]    | 4,096 | puts of this shard waiting for their lease check |
//! | [`LEASE_SYNC_TICKS`]    | 2     | ticks between two pulls of revocations           |
//! | [`LEASE_ANNOUNCE_TICKS`] | 20   | ticks between repeated announcements of the last revocation |
//!
//! The shard holding the lease group announces its replica's last revocation position to
//! the other shards when it changes (and every [`LEASE_ANNOUNCE_TICKS`]); a shard pulls
//! only when a group it leads is behind the last position it knows, so a cluster without
//! revocations sends no lease messages at all.
//! | `revocations_per_entry_max` | 64 | leases per local revoke entry (and per pull)   |
//!
//! A check waits no longer than the read or forward it rides on: both have deadlines.

use std::collections::BTreeMap;

use super::mesh::{MeshBody, MeshMessage};
use super::pending::Origin;
use super::{ShardCore, Work};
use crate::api::{ApiError, ErrorCode, LeaseRequest};
use crate::keyspace::shard_of;
use crate::kv::lease::{LeaseLimits, LeaseOp, Revocation, LEASE_GROUP};
use crate::kv::{Command, Op, Response, TxnOp};
use crate::multiraft::{GroupId, LeaseRead, RequestId};

/// Puts waiting for their lease check, per shard; past it a put with a lease is refused
/// `Overloaded`.
pub const LEASE_CHECKS_MAX: usize = 4_096;
/// Ticks between two pulls of the lease group's revocations.
pub const LEASE_SYNC_TICKS: u64 = 2;
/// Ticks between two announcements of the lease group's last revocation position to the
/// other shards when it has not changed (one may have been lost).
pub const LEASE_ANNOUNCE_TICKS: u64 = 20;

/// A put (or txn) waiting for the check of its leases.
#[derive(Debug)]
pub(super) struct PendingCheck {
    origin: Origin,
    group: GroupId,
    command: Command,
    seen_revision: u64,
    /// Leases still to check, the next last.
    leases: Vec<u64>,
}

/// The shard's lease work in flight.
#[derive(Debug, Default)]
pub(super) struct LeaseWork {
    checks: BTreeMap<u64, PendingCheck>,
    /// Local revokes proposed and not yet answered, by request and by group.
    revoking: BTreeMap<RequestId, GroupId>,
    revoking_groups: BTreeMap<GroupId, RequestId>,
    /// The lease group's last revocation position, as this shard last heard of it.
    known_position: u64,
    /// The last position this shard announced (the lease group's shard only).
    announced_position: u64,
}

/// The leases a write attaches keys to, without repeats.
fn leases_of(op: &Op) -> Vec<u64> {
    let mut leases: Vec<u64> = match op {
        Op::Put(put) => vec![put.lease],
        Op::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                TxnOp::Put(put) => Some(put.lease),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    leases.retain(|&lease| lease != 0);
    leases.sort_unstable();
    leases.dedup();
    leases
}

impl ShardCore {
    /// A lease request from a client or another node's SDK: table ops to the lease group,
    /// a time-to-live scoped to a group as a read of that group.
    pub(super) fn on_lease_request(
        &mut self,
        origin: Origin,
        request: LeaseRequest,
        group: Option<GroupId>,
        seen_revision: u64,
    ) {
        self.hlc.observe(seen_revision);
        match (group, &request) {
            (None, _) => {
                let work = Work::Lease {
                    request,
                    seen_revision,
                };
                self.send_to_group(origin, LEASE_GROUP, work);
            }
            (Some(group), &LeaseRequest::TimeToLive { id, keys }) if group < self.config.groups => {
                self.send_to_group(origin, group, Work::LeaseRead { id, keys });
            }
            (Some(_), _) => {
                let error = ApiError::new(
                    ErrorCode::InvalidRequest,
                    "only a lease time-to-live names a group",
                );
                self.answer(origin, Err(error));
            }
        }
    }

    /// Runs a lease request on `group`'s replica here.
    pub(super) fn run_lease_here(&mut self, id: RequestId, group: GroupId, work: Work) {
        match work {
            Work::Lease {
                request,
                seen_revision,
            } => {
                let floor = self.hlc.now().max(seen_revision.saturating_add(1));
                self.raft.propose_lease(id, group, request.to_op(), floor);
            }
            Work::LeaseRead { id: lease, keys } => {
                let read = if group == LEASE_GROUP {
                    LeaseRead::Lease { id: lease, keys }
                } else {
                    LeaseRead::Keys { id: lease }
                };
                self.raft.read_lease(id, group, read);
            }
            _ => unreachable!("only lease work runs here"),
        }
    }

    /// Starts the lease check of a write to `group` when it attaches keys to leases and
    /// the lease group cannot check them itself at apply; true when it did (the write
    /// waits for it).
    pub(super) fn start_lease_check(
        &mut self,
        origin: Origin,
        group: GroupId,
        command: &Command,
        seen_revision: u64,
    ) -> bool {
        if group == LEASE_GROUP {
            return false;
        }
        let leases = leases_of(&command.op);
        if leases.is_empty() {
            return false;
        }
        if self.leases.checks.len() >= LEASE_CHECKS_MAX {
            let error = ApiError::new(ErrorCode::Overloaded, "too many puts waiting for leases");
            self.answer(origin, Err(error));
            return true;
        }
        let token = self.next_id();
        self.leases.checks.insert(
            token,
            PendingCheck {
                origin,
                group,
                command: command.clone(),
                seen_revision,
                leases,
            },
        );
        self.check_next_lease(token);
        true
    }

    fn check_next_lease(&mut self, token: u64) {
        let Some(check) = self.leases.checks.get_mut(&token) else {
            return;
        };
        match check.leases.pop() {
            Some(lease) => {
                let work = Work::LeaseRead {
                    id: lease,
                    keys: false,
                };
                self.send_to_group(Origin::LeaseCheck { token }, LEASE_GROUP, work);
            }
            None => {
                let check = self.leases.checks.remove(&token).expect("present");
                let work = Work::Checked {
                    command: check.command,
                    seen_revision: check.seen_revision,
                };
                self.run_here(check.origin, check.group, work);
            }
        }
    }

    /// The lease group's answer to one check.
    pub(super) fn on_lease_checked(&mut self, token: u64, reply: Result<Response, ApiError>) {
        match reply {
            Ok(_) => self.check_next_lease(token),
            Err(mut error) => {
                let Some(check) = self.leases.checks.remove(&token) else {
                    return;
                };
                if error.code == ErrorCode::NotLeader && error.leader.is_some() {
                    // A hint to a node that holds the lease group says nothing about the
                    // key's group: the client cannot act on it.
                    error = ApiError::new(
                        ErrorCode::NoLeader,
                        format!("lease group not on this node: {}", error.message),
                    );
                }
                self.answer(check.origin, Err(error));
            }
        }
    }

    /// A Raft reply to a local revoke this shard proposed: true when it was one.
    pub(super) fn on_revoke_reply(&mut self, request: RequestId) -> bool {
        match self.leases.revoking.remove(&request) {
            Some(group) => {
                self.leases.revoking_groups.remove(&group);
                true
            }
            None => false,
        }
    }

    /// At a tick: every [`LEASE_SYNC_TICKS`], asks the lease group's replica on this node
    /// for the revocations after the lowest watermark of the groups this shard leads.
    pub(super) fn tick_revocations(&mut self) {
        let owner = shard_of(LEASE_GROUP, self.config.shards);
        if owner == self.config.shard {
            self.announce_position();
        }
        if self.ticks % LEASE_SYNC_TICKS != 0 {
            return;
        }
        let known = self.leases.known_position;
        let after = self
            .raft
            .led_revocation_watermarks()
            .into_iter()
            .filter(|(group, _)| !self.leases.revoking_groups.contains_key(group))
            .map(|(_, watermark)| watermark)
            .filter(|&watermark| watermark < known)
            .min();
        let Some(after) = after else {
            return;
        };
        if owner == self.config.shard {
            let revocations = self.local_revocations(after);
            self.on_revocations(revocations);
        } else {
            let token = self.next_id();
            self.out.mesh.push(MeshMessage {
                from_shard: self.config.shard,
                to_shard: owner,
                token,
                body: MeshBody::Revocations { after },
            });
        }
    }

    /// On the lease group's shard: tells the other shards the replica's last revocation
    /// position when it moved, and again every [`LEASE_ANNOUNCE_TICKS`].
    fn announce_position(&mut self) {
        let Some(position) = self.raft.revocation_position() else {
            return;
        };
        self.leases.known_position = position;
        let moved = position != self.leases.announced_position;
        if position == 0 || !(moved || self.ticks % LEASE_ANNOUNCE_TICKS == 0) {
            return;
        }
        self.leases.announced_position = position;
        for shard in (0..self.config.shards).filter(|&shard| shard != self.config.shard) {
            self.out.mesh.push(MeshMessage {
                from_shard: self.config.shard,
                to_shard: shard,
                token: 0,
                body: MeshBody::RevocationPosition { position },
            });
        }
    }

    /// The lease group's shard announced its last revocation position.
    pub(super) fn on_revocation_position(&mut self, position: u64) {
        self.leases.known_position = self.leases.known_position.max(position);
    }

    /// The revocations after `after` in this shard's replica of the lease group. When
    /// some are no longer retained, the retained ones: a group that far behind keeps the
    /// keys of the forgotten revocations (see "Not done" in `docs/LEASES.md`).
    pub(super) fn local_revocations(&self, after: u64) -> Vec<Revocation> {
        let max = LeaseLimits::default().revocations_per_entry_max as usize;
        match self.raft.revocations_after(after, max) {
            Some(Ok(revocations)) => revocations,
            None | Some(Err(_)) => Vec::new(),
        }
    }

    /// Revocations the lease group applied: each group this shard leads that has not
    /// applied some of them proposes one local revoke, stamped above them.
    pub(super) fn on_revocations(&mut self, revocations: Vec<Revocation>) {
        let Some(last) = revocations.last().copied() else {
            return;
        };
        self.leases.known_position = self.leases.known_position.max(last.position);
        let max = LeaseLimits::default().revocations_per_entry_max as usize;
        for (group, watermark) in self.raft.led_revocation_watermarks() {
            if watermark >= last.position || self.leases.revoking_groups.contains_key(&group) {
                continue;
            }
            let batch: Vec<&Revocation> = revocations
                .iter()
                .filter(|revocation| revocation.position > watermark)
                .take(max)
                .collect();
            let Some(highest) = batch.iter().map(|revocation| revocation.revision).max() else {
                continue;
            };
            let op = LeaseOp::RevokeLocal {
                revocations: batch
                    .iter()
                    .map(|revocation| (revocation.position, revocation.lease))
                    .collect(),
            };
            let request = self.next_id();
            self.leases.revoking.insert(request, group);
            self.leases.revoking_groups.insert(group, request);
            let floor = self.hlc.now().max(highest.saturating_add(1));
            self.raft.propose_lease(request, group, op, floor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{PutRequest, TxnRequest};

    // The leases of a put or of a txn's puts, each once; none for other ops.
    #[test]
    fn the_leases_of_a_write() {
        let put = |lease| PutRequest {
            key: b"k".to_vec(),
            lease,
            ..PutRequest::default()
        };
        assert_eq!(leases_of(&Op::Put(put(0))), Vec::<u64>::new());
        assert_eq!(leases_of(&Op::Put(put(4))), [4]);
        let txn = TxnRequest {
            compares: Vec::new(),
            success: vec![TxnOp::Put(put(5)), TxnOp::Put(put(3)), TxnOp::Put(put(5))],
            failure: vec![TxnOp::Put(put(0))],
        };
        assert_eq!(leases_of(&Op::Txn(txn)), [3, 5]);
    }
}
