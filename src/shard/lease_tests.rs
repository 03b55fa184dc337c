//! Leases through the shard core of one node with two shards: the lease group on shard
//! 0, the key's group on shard 1, so the lease check and the pull of revocations cross
//! the mesh.

use super::*;
use crate::api::LeaseRequest;
use crate::kv::{OpResponse, LEASE_GROUP};

fn lease(request: LeaseRequest, request_id: u64) -> ApiRequest {
    ApiRequest {
        request_id,
        kind: RequestKind::Lease {
            request,
            group: None,
            seen_revision: 0,
        },
    }
}

fn put_with_lease(key: &[u8], lease: u64, request_id: u64) -> ApiRequest {
    let mut request = put(key, b"v", request_id);
    if let RequestKind::Kv { command, .. } = &mut request.kind {
        if let Op::Put(put) = &mut command.op {
            put.lease = lease;
        }
    }
    request
}

/// Sends `request` to shard 1 and returns its answer, delivering the mesh and ticking.
fn call(node: &mut Node, request: ApiRequest) -> Result<Response, ApiError> {
    let request_id = request.request_id;
    node.cores[1].on_client_request(3, request);
    for _ in 0..TICKS_MAX {
        node.turns();
        node.deliver_mesh();
        if let Some(reply) = node.take_reply(1, request_id) {
            return match reply.response.result {
                Ok(ApiResult::Kv(response)) => Ok(response),
                Ok(other) => panic!("not a kv answer: {other:?}"),
                Err(error) => Err(error),
            };
        }
        node.tick();
    }
    panic!("no answer to request {request_id}");
}

fn lease_id(response: Response) -> u64 {
    match response.op {
        OpResponse::Lease(lease) => lease.id,
        other => panic!("not a lease answer: {other:?}"),
    }
}

// A put on shard 1 with a lease the lease group (shard 0) does not have is refused
// LeaseNotFound; with a granted one it is written; after the revoke, the key's group
// pulls the revocation over the mesh and deletes the key above the revocation's
// revision, and the next put with the lease is refused.
#[test]
fn a_revocation_reaches_a_group_on_another_shard() {
    let mut node = Node::new(2, 4);
    node.elect();
    let key = key_on_shard(1, 2, 4);
    let group = group_of(&key, 4);
    assert_ne!(shard_of(LEASE_GROUP, 2), 1);
    let refused = call(&mut node, put_with_lease(&key, 77, 1)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::LeaseNotFound);

    let granted = call(
        &mut node,
        lease(
            LeaseRequest::Grant {
                ttl_seconds: 60,
                id: 0,
            },
            2,
        ),
    );
    let id = lease_id(granted.expect("grant"));
    call(&mut node, put_with_lease(&key, id, 3)).expect("put with a granted lease");
    let store = |node: &Node| node.cores[1].groups().store(group).expect("here").clone();
    assert_eq!(store(&node).get(&key).map(|pair| pair.lease), Some(id));

    let revoked_at = call(&mut node, lease(LeaseRequest::Revoke { id }, 4))
        .expect("revoke")
        .revision;
    for _ in 0..TICKS_MAX {
        if store(&node).get(&key).is_none() {
            break;
        }
        node.tick();
        node.deliver_mesh();
    }
    let store = store(&node);
    assert!(
        store.get(&key).is_none(),
        "the revoked lease's key is still there"
    );
    assert!(
        store.revision() > revoked_at,
        "a deletion at or below the revocation"
    );
    assert_eq!(store.applied_revocations().watermark(), 1);
    let refused = call(&mut node, put_with_lease(&key, id, 5)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::LeaseNotFound);
}
