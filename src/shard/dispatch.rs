//! Where a key-value request runs, decided from the request alone: on one group (here, or
//! on the shard that owns it), split over every group, or refused. Pure: the shard core
//! acts on the answer.

use super::gather::Merge;
use crate::api::{ApiError, ErrorCode};
use crate::keyspace::group_of;
use crate::kv::Op;
use crate::multiraft::GroupId;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The one group every key of the op belongs to.
    One(GroupId),
    /// A range or range delete over the whole keyspace: one part per group, merged.
    All(Merge),
}

/// The target of `op` among `groups` groups; `scope` is the one group the client
/// confined the request to (see the schema's `Request.group`).
pub fn target(op: &Op, scope: Option<GroupId>, groups: u64) -> Result<Target, ApiError> {
    if let Some(group) = scope {
        if group >= groups {
            let message = format!("group {group} does not exist ({groups} groups)");
            return Err(ApiError::new(ErrorCode::InvalidRequest, message));
        }
        if !single_keys_in_group(op, group, groups) {
            let message = format!("the request names a key outside group {group}");
            return Err(ApiError::new(ErrorCode::InvalidRequest, message));
        }
        return Ok(Target::One(group));
    }
    match op {
        Op::Range(range) if !range.range_end.is_empty() && groups > 1 => {
            Ok(Target::All(Merge::Range { limit: range.limit }))
        }
        Op::Delete(delete) if !delete.range_end.is_empty() && groups > 1 => {
            Ok(Target::All(Merge::Delete))
        }
        op => single_group(op, groups).map(Target::One).ok_or_else(|| {
            ApiError::new(
                ErrorCode::TxnSpansGroups,
                "a transaction must touch keys of one group only",
            )
        }),
    }
}

/// The one group every key of `op` belongs to; `None` when the keys span groups (a key
/// that starts a range spans every group when there are several).
fn single_group(op: &Op, groups: u64) -> Option<GroupId> {
    let mut keys = op.keys();
    let Some(first) = keys.next() else {
        // A transaction without keys touches nothing: any group serves it alike.
        return Some(group_of(&[], groups));
    };
    if first.range_start && groups > 1 {
        return None;
    }
    let group = group_of(first.key, groups);
    keys.all(|key| !(key.range_start && groups > 1) && group_of(key.key, groups) == group)
        .then_some(group)
}

/// Whether every key `op` names on its own (not as the start of a range) belongs to
/// `group`: a group-scoped op may range over its group's keys, but a single key of
/// another group would be a write or read the group does not own.
fn single_keys_in_group(op: &Op, group: GroupId, groups: u64) -> bool {
    op.keys()
        .all(|key| key.range_start || group_of(key.key, groups) == group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{PutRequest, RangeRequest, TxnOp, TxnRequest};

    fn key_in(group: GroupId, groups: u64) -> Vec<u8> {
        (0..)
            .map(|n| format!("key-{n}").into_bytes())
            .find(|key| group_of(key, groups) == group)
            .expect("some key lands in every group")
    }

    fn put(key: Vec<u8>) -> PutRequest {
        PutRequest {
            key,
            ..PutRequest::default()
        }
    }

    // Single keys go to their group, whole-keyspace ranges split, and a transaction over
    // two groups or a scope that does not hold the key is refused.
    #[test]
    fn requests_find_their_groups() {
        let groups = 4;
        let (a, b) = (key_in(1, groups), key_in(2, groups));
        assert_eq!(
            target(&Op::Put(put(a.clone())), None, groups),
            Ok(Target::One(1))
        );
        let scan = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            limit: 5,
            ..RangeRequest::default()
        };
        assert_eq!(
            target(&Op::Range(scan.clone()), None, groups),
            Ok(Target::All(Merge::Range { limit: 5 }))
        );
        assert_eq!(
            target(&Op::Range(scan), Some(3), groups),
            Ok(Target::One(3))
        );
        let spanning = TxnRequest {
            success: vec![TxnOp::Put(put(a.clone())), TxnOp::Put(put(b))],
            ..TxnRequest::default()
        };
        let refused = target(&Op::Txn(spanning), None, groups).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TxnSpansGroups);
        let outside = target(&Op::Put(put(a)), Some(2), groups).unwrap_err();
        assert_eq!(outside.code, ErrorCode::InvalidRequest);
        let missing = target(&Op::Put(put(vec![1])), Some(9), groups).unwrap_err();
        assert_eq!(missing.code, ErrorCode::InvalidRequest);
    }
}
