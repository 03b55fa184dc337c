//! Leases on real `corekv server` processes (3 nodes, 2 shards, 4 groups): expiry and
//! revocation delete the attached keys in every group, each above the revocation's
//! revision; a keep-alive keeps them through a kill -9 of the lease group's leader; a
//! leader kill does not expire a live lease early; `LeaseNotFound` for puts with a
//! missing, revoked or expired lease.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, TestCluster};
use corekv::client::{Client, ClientError, ErrorCode, RangeRequest};
use corekv::keyspace::group_of;
use corekv::kv::{self, OpResponse, LEASE_GROUP};

const GROUPS: u64 = 4;
const SHARDS: u32 = 2;

/// One key in each group, named after `prefix`.
fn key_per_group(prefix: &str) -> Vec<Vec<u8>> {
    (0..GROUPS)
        .map(|group| {
            (0..)
                .map(|n| format!("{prefix}/{n}").into_bytes())
                .find(|key| group_of(key, GROUPS) == group)
                .expect("some key lands in every group")
        })
        .collect()
}

fn assert_rejected<T: std::fmt::Debug>(result: Result<T, ClientError>, expected: ErrorCode) {
    assert!(
        matches!(&result, Err(ClientError::Rejected { code, .. }) if *code == expected),
        "expected a {expected:?} rejection, got {result:?}"
    );
}

/// Whether `key` exists now (a linearizable read).
fn exists(client: &Client, key: &[u8]) -> bool {
    client.get(key).expect("get").is_some()
}

/// The value of `key` as of `revision` (a read at a revision).
fn exists_at(client: &Client, key: &[u8], revision: u64) -> bool {
    let request = RangeRequest {
        revision,
        ..RangeRequest::get(key)
    };
    let response = client
        .execute(kv::Op::Range(request), false)
        .expect("read at");
    let OpResponse::Range(range) = response.op else {
        panic!("not a range: {:?}", response.op);
    };
    !range.kvs.is_empty()
}

fn lease_leader(cluster: &TestCluster) -> u64 {
    cluster.wait_for_leaders()[&LEASE_GROUP]
}

// A revoke of a lease whose keys live in every group leaves none of them behind; at the
// revocation's revision every key is still there (each deletion is above it); `ttl
// --keys` lists them all beforehand; and every later use of the lease is LeaseNotFound,
// as is a put with a lease that never existed.
#[test]
fn revoke_deletes_the_keys_in_every_group_above_its_revision() {
    let cluster = TestCluster::start("lease-revoke", 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    assert_rejected(
        client.put_with_lease("never", "v", 0x1234),
        ErrorCode::LeaseNotFound,
    );

    let lease = client.lease_grant(60, 0).expect("grant");
    let keys = key_per_group("revoke");
    for key in &keys {
        client
            .put_with_lease(key, "v", lease.id)
            .expect("put with lease");
    }
    client.put("revoke/unleased", "v").expect("put");
    let listed = client.lease_time_to_live(lease.id, true).expect("ttl");
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed.keys, expected);
    assert!(listed.ttl_seconds > 50 && listed.granted_ttl_seconds == 60);
    assert_eq!(client.lease_list().expect("list"), [lease.id]);

    let revoked_at = client.lease_revoke(lease.id).expect("revoke");
    for key in &keys {
        wait_for("the revoked lease's key to go", || {
            (!exists(&client, key)).then_some(())
        });
        assert!(
            exists_at(&client, key, revoked_at),
            "a deletion at or below the revocation's revision"
        );
    }
    assert!(exists(&client, b"revoke/unleased"));
    assert_rejected(
        client.put_with_lease(&keys[1], "v", lease.id),
        ErrorCode::LeaseNotFound,
    );
    assert_rejected(
        client.lease_keep_alive_once(lease.id),
        ErrorCode::LeaseNotFound,
    );
    assert_rejected(
        client.lease_time_to_live(lease.id, false),
        ErrorCode::LeaseNotFound,
    );
    assert_rejected(client.lease_revoke(lease.id), ErrorCode::LeaseNotFound);
    assert_eq!(client.lease_list().expect("list"), Vec::<u64>::new());
}

// A lease nobody keeps alive expires on the lease group leader's clock, and its keys go
// from every group; a put with it afterwards is LeaseNotFound.
#[test]
fn expiry_deletes_the_keys_in_every_group() {
    let cluster = TestCluster::start("lease-expiry", 3, SHARDS, GROUPS);
    cluster.wait_for_leaders();
    let client = cluster.client();
    let granted = Instant::now();
    let lease = client.lease_grant(2, 0).expect("grant");
    let keys = key_per_group("expiry");
    for key in &keys {
        client
            .put_with_lease(key, "v", lease.id)
            .expect("put with lease");
    }
    wait_for("the lease to expire", || {
        client.lease_time_to_live(lease.id, false).err()
    });
    assert!(
        granted.elapsed() >= Duration::from_secs(2),
        "expired before its time to live"
    );
    for key in &keys {
        wait_for("the expired lease's key to go", || {
            (!exists(&client, key)).then_some(())
        });
    }
    assert_rejected(
        client.put_with_lease(&keys[0], "v", lease.id),
        ErrorCode::LeaseNotFound,
    );
}

// A keep-alive thread keeps a lease, and its keys in every group, alive through a kill -9
// of the lease group's leader and well past the time to live; once it stops, the new
// leader expires the lease.
#[test]
fn keep_alive_keeps_the_keys_through_a_leader_kill() {
    let mut cluster = TestCluster::start("lease-keepalive", 3, SHARDS, GROUPS);
    let leader = lease_leader(&cluster);
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let client = Arc::new(common::connect(
        &others
            .iter()
            .map(|&id| cluster.endpoint(id))
            .collect::<Vec<_>>(),
    ));
    let lease = client.lease_grant(3, 0).expect("grant");
    let keys = key_per_group("keepalive");
    for key in &keys {
        client
            .put_with_lease(key, "v", lease.id)
            .expect("put with lease");
    }
    let keep_alive = client.keep_alive(lease.id);
    cluster.kill9(leader);
    let new_leader = cluster.wait_for_new_leader(LEASE_GROUP, leader);
    assert_ne!(new_leader, leader);
    let renewals = keep_alive.state().renewals;
    // Time itself is what this test is about: three times the TTL must pass.
    std::thread::sleep(Duration::from_secs(9));
    let state = keep_alive.state();
    assert!(state.lost.is_none(), "the lease was lost: {state:?}");
    assert!(
        state.renewals > renewals,
        "no renewal after the kill: {state:?}"
    );
    for key in &keys {
        assert!(exists(&client, key), "a key of a live lease went");
    }
    keep_alive.stop();
    wait_for("the lease to expire once nobody keeps it alive", || {
        client.lease_time_to_live(lease.id, false).err()
    });
    for key in &keys {
        wait_for("the expired lease's key to go", || {
            (!exists(&client, key)).then_some(())
        });
    }
}

// Killing the lease group's leader right after a keep-alive does not shorten the lease:
// it is still alive a little before its time to live has passed since that keep-alive,
// whatever the new leader's clock says; and it does expire afterwards.
#[test]
fn a_leader_kill_does_not_expire_a_live_lease_early() {
    let mut cluster = TestCluster::start("lease-no-early", 3, SHARDS, GROUPS);
    let leader = lease_leader(&cluster);
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let client = common::connect(
        &others
            .iter()
            .map(|&id| cluster.endpoint(id))
            .collect::<Vec<_>>(),
    );
    let ttl = Duration::from_secs(4);
    let lease = client.lease_grant(ttl.as_secs(), 0).expect("grant");
    let key = &key_per_group("early")[2];
    client
        .put_with_lease(key, "v", lease.id)
        .expect("put with lease");
    client.lease_keep_alive_once(lease.id).expect("keep-alive");
    let renewed = Instant::now();
    cluster.kill9(leader);
    cluster.wait_for_new_leader(LEASE_GROUP, leader);
    // Until shortly before the TTL has passed since the keep-alive, the lease lives.
    let margin = Duration::from_millis(500);
    while renewed.elapsed() < ttl - margin {
        let ttl_left = client.lease_time_to_live(lease.id, false);
        assert!(
            ttl_left.is_ok(),
            "expired {:?} after its keep-alive: {ttl_left:?}",
            renewed.elapsed()
        );
        assert!(exists(&client, key));
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for("the lease to expire in the end", || {
        client.lease_time_to_live(lease.id, false).err()
    });
    wait_for("its key to go", || (!exists(&client, key)).then_some(()));
}
