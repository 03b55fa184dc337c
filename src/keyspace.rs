//! How the keyspace is cut: key -> group (a stable hash, the same in every client and
//! server build) and group -> shard. Pure arithmetic, shared by the server and the SDK.

use crate::multiraft::GroupId;

/// The group that owns `key` among `group_count` groups.
///
/// FNV-1a (64-bit) is stable across builds and platforms, which the mapping must be: a
/// client and a server that disagree would send every request to the wrong group.
pub fn group_of(key: &[u8], group_count: u64) -> GroupId {
    assert!(group_count > 0, "a cluster has at least one group");
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash % group_count
}

/// The shard (core) of a node that runs `group`; every node has the same shard count, so
/// a group's replicas all live on the same shard index and talk shard to shard.
pub fn shard_of(group: GroupId, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "a node has at least one shard");
    (group % u64::from(shard_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    // The mapping is pinned: changing it would strand the data of every existing cluster.
    #[test]
    fn group_of_is_stable() {
        assert_eq!(group_of(b"", 64), 0xcbf2_9ce4_8422_2325 % 64);
        assert_eq!(group_of(b"a", 1_000_003), 0xaf63_dc4c_8601_ec8c % 1_000_003);
        assert_eq!(group_of(b"anything", 1), 0);
    }

    // Keys spread over the groups (no group is left empty by a small sample).
    #[test]
    fn keys_spread_over_groups() {
        let mut seen = [0u32; 16];
        for k in 0..1_000 {
            seen[group_of(format!("key-{k}").as_bytes(), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 20), "{seen:?}");
    }

    #[test]
    fn shard_of_wraps() {
        assert_eq!(shard_of(5, 2), 1);
        assert_eq!(shard_of(4, 1), 0);
    }
}
