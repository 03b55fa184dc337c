//! Leases in the groups of one shard: proposing lease ops, the lease group leader's
//! expiries and checkpoints at each tick (on its own clock, see [`LeaseClock`]), applying
//! lease entries, and the linearizable lease reads that a put's check and a time-to-live
//! of one group's keys need (`docs/LEASES.md`).

use std::sync::Arc;

use super::lease_clock::LeaseClock;
use super::{ClientError, Group, GroupId, MultiRaft, Proposal, ReadMode, Reply, RequestId};
use crate::kv::lease::{LeaseAnswer, LeaseError, LeaseOp, LeaseResponse, Revocation, LEASE_GROUP};
use crate::kv::{self, LogEntry, Op, RangeRequest};
use crate::raft::{self, NO_NODE};

/// What a linearizable lease read answers once its read index is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRead {
    /// The lease as the replicated table has it (lease group only), with the keys of
    /// this group when asked: `LeaseNotFound` when it is not in the table.
    Lease { id: u64, keys: bool },
    /// The keys of this group attached to the lease.
    Keys { id: u64 },
}

impl MultiRaft {
    /// Proposes a lease op on `group`'s leader, stamped at or above `revision_floor`. The
    /// reply comes out of `ready()`.
    pub fn propose_lease(
        &mut self,
        request: RequestId,
        group_id: GroupId,
        op: LeaseOp,
        revision_floor: u64,
    ) {
        let proposals_max = self.config.proposals_pending_max;
        let Some(group) = self.groups.get_mut(&group_id) else {
            self.replies
                .push((request, Err(ClientError::GroupNotFound(group_id))));
            return;
        };
        if op.is_lease_table_op() && group_id != LEASE_GROUP {
            let error = ClientError::Kv(LeaseError::NotLeaseGroup.into());
            self.replies.push((request, Err(error)));
            return;
        }
        if group.proposals.len() >= proposals_max {
            self.replies.push((
                request,
                Err(ClientError::Busy("too many pending proposals")),
            ));
            return;
        }
        if let Err(error) = propose_lease_entry(group, group_id, op, revision_floor, Some(request))
        {
            self.replies.push((request, Err(error)));
        }
    }

    /// A linearizable read of lease state in `group` (see [`LeaseRead`]): any replica
    /// serves it after a read index.
    pub fn read_lease(&mut self, request: RequestId, group_id: GroupId, read: LeaseRead) {
        // The op is a placeholder: the lease read decides the answer.
        let op = Op::Range(RangeRequest::default());
        self.read_waiting(request, group_id, op, ReadMode::Linearizable, Some(read));
    }

    /// The revocations of the lease group after `position`, at most `max`, from this
    /// shard's replica of the lease group: `None` when it has none here, `Some(Err)` with
    /// the last position when some of them are no longer retained.
    pub fn revocations_after(
        &self,
        position: u64,
        max: usize,
    ) -> Option<Result<Vec<Revocation>, u64>> {
        let table = self.groups.get(&LEASE_GROUP)?.store.leases();
        Some(
            table
                .revocations_after(position, max)
                .ok_or(table.last_position()),
        )
    }

    /// The position of the newest revocation in this shard's replica of the lease group;
    /// `None` when it has none here.
    pub fn revocation_position(&self) -> Option<u64> {
        Some(
            self.groups
                .get(&LEASE_GROUP)?
                .store
                .leases()
                .last_position(),
        )
    }

    /// The groups this shard leads, with the position of the lease group's revocations
    /// each has applied through.
    pub fn led_revocation_watermarks(&self) -> Vec<(GroupId, u64)> {
        self.groups
            .iter()
            .filter(|(_, group)| group.raft.is_leader())
            .map(|(&id, group)| (id, group.store.applied_revocations().watermark()))
            .collect()
    }

    /// The lease group leader's work at a tick: take up the clock after a leadership
    /// change, propose the expiries that are due and a checkpoint when one is.
    pub(super) fn tick_leases(&mut self) {
        let now_ms = self.now_ms;
        let Some(group) = self.groups.get_mut(&LEASE_GROUP) else {
            return;
        };
        if !group.raft.is_leader() {
            group.lease_clock = None;
            return;
        }
        let term = group.raft.term();
        if group.lease_clock.as_ref().map(LeaseClock::term) != Some(term) {
            group.lease_clock = Some(LeaseClock::promote(term, now_ms));
        }
        let limits = group.store.lease_limits;
        let clock = group.lease_clock.as_mut().expect("set above");
        let mut ops = clock.due(now_ms, group.store.leases(), &limits);
        ops.extend(clock.checkpoint(now_ms, group.store.leases(), &limits));
        for op in ops {
            // Nobody waits for these: a dropped one is proposed again at its retry time.
            if propose_lease_entry(group, LEASE_GROUP, op, 0, None).is_err() {
                break;
            }
        }
    }
}

/// Proposes one lease entry on `group`, answered to `request` when there is one.
fn propose_lease_entry(
    group: &mut Group,
    group_id: GroupId,
    op: LeaseOp,
    revision_floor: u64,
    request: Option<RequestId>,
) -> Result<(), ClientError> {
    if !group.raft.is_leader() {
        return Err(ClientError::NotLeader {
            group: group_id,
            leader: group.raft.leader(),
        });
    }
    let revision = revision_floor.max(group.stamped_now() + 1);
    let data: raft::Payload = Arc::from(LogEntry::Lease { revision, op }.encode());
    match group.raft.propose(data) {
        Ok(index) => {
            group.stamped = group.stamped.max(revision);
            if let Some(request) = request {
                let term = group.raft.term();
                group.proposals.push_back(Proposal {
                    index,
                    term,
                    request,
                });
            }
            Ok(())
        }
        Err(raft::ProposeError::NotLeader { leader }) => Err(ClientError::NotLeader {
            group: group_id,
            leader,
        }),
        Err(raft::ProposeError::TransferInProgress) => Err(ClientError::NotLeader {
            group: group_id,
            leader: NO_NODE,
        }),
        Err(_) => Err(ClientError::Busy("too many uncommitted bytes")),
    }
}

/// Applies a committed lease entry; on the lease group's leader, moves its clock and
/// answers time-to-live from it.
pub(super) fn apply_lease_entry(
    group: &mut Group,
    index: u64,
    revision: u64,
    op: LeaseOp,
    now_ms: u64,
) -> kv::Outcome {
    let mut outcome = group.store.apply_lease(index, revision, &op);
    let Some(clock) = group.lease_clock.as_mut() else {
        return outcome;
    };
    match (&op, &mut outcome) {
        (LeaseOp::Grant { .. } | LeaseOp::KeepAlive { .. }, Ok(response)) => {
            if let kv::OpResponse::Lease(lease) = &response.op {
                clock.on_renewed(lease.id, lease.ttl_ms, now_ms);
            }
        }
        (LeaseOp::Checkpoint { leases }, Ok(_)) => {
            for &(id, remaining_ms) in leases {
                if let Some(record) = group.store.leases().get(id) {
                    let deadline = clock.deadline(id, record.remaining_ms);
                    clock.on_renewed(
                        id,
                        remaining_ms.min(deadline.saturating_sub(now_ms)),
                        now_ms,
                    );
                }
            }
        }
        (LeaseOp::Revoke { id } | LeaseOp::Expire { id, .. }, Ok(_)) => clock.on_removed(*id),
        (LeaseOp::TimeToLive { id, .. }, Ok(response)) => {
            if let kv::OpResponse::Lease(lease) = &mut response.op {
                lease.ttl_ms = clock.remaining(*id, lease.ttl_ms, now_ms);
            }
        }
        _ => {}
    }
    outcome
}

/// The answer to a lease read once its read index is applied.
pub(super) fn serve_lease_read(group: &Group, read: LeaseRead) -> Reply {
    let store = &group.store;
    let mut lease = LeaseResponse {
        answer: LeaseAnswer::TimeToLive,
        ..LeaseResponse::default()
    };
    match read {
        LeaseRead::Lease { id, keys } => {
            let record = store
                .leases()
                .get(id)
                .ok_or(ClientError::Kv(LeaseError::NotFound(id).into()))?;
            lease.id = id;
            lease.granted_ttl_ms = record.granted_ttl_ms;
            // The replicated time left: a check needs only that the lease exists, and a
            // time-to-live through the log answers from the leader's clock instead.
            lease.ttl_ms = record.remaining_ms;
            if keys {
                lease.keys = store.lease_keys(id);
            }
        }
        LeaseRead::Keys { id } => {
            lease.id = id;
            lease.keys = store.lease_keys(id);
        }
    }
    Ok(kv::Response {
        revision: store.revision(),
        op: kv::OpResponse::Lease(lease),
    })
}
