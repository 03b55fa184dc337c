//! A `corekv server` checks its data directory's identity before it serves: data of
//! another cluster, or a restart that would change the group or shard count, is refused
//! with a non-zero exit and a message that says why; the data stays usable.

mod common;

use common::{TestCluster, SMALL_SEGMENT_ARGS};

// A node refuses a data directory written by another cluster, and a restart with another
// --groups or --shards, and still starts from it with the right settings.
#[test]
fn foreign_or_changed_data_dir_is_refused() {
    let mut cluster = TestCluster::start_with("identity", 1, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    cluster.client().put("kept", "yes").expect("put");
    let status = cluster.terminate(1).expect("running");
    assert!(status.success(), "SIGTERM exit: {status}");

    // Another cluster (other members, so another cluster id) pointed at this data.
    let mut other = TestCluster::start_with("identity-other", 1, 1, 4, &SMALL_SEGMENT_ARGS);
    other.kill9(1);
    other.nodes[0].data_dir = cluster.nodes[0].data_dir.clone();
    let (status, stderr) = other.run_to_exit(1, &[]);
    assert!(
        !status.success(),
        "started on another cluster's data: {stderr}"
    );
    assert!(
        stderr.contains("belongs to cluster"),
        "unclear refusal: {stderr}"
    );

    // The same members under another cluster token.
    let (status, stderr) = cluster.run_to_exit(1, &["--initial-cluster-token", "another"]);
    assert!(
        !status.success(),
        "started with another cluster token: {stderr}"
    );
    assert!(
        stderr.contains("belongs to cluster"),
        "unclear refusal: {stderr}"
    );

    cluster.groups = 8;
    let (status, stderr) = cluster.run_to_exit(1, &[]);
    cluster.groups = 4;
    assert!(
        !status.success(),
        "started with another group count: {stderr}"
    );
    assert!(
        stderr.contains("created with 4 groups"),
        "unclear refusal: {stderr}"
    );

    cluster.shards = 2;
    let (status, stderr) = cluster.run_to_exit(1, &[]);
    cluster.shards = 1;
    assert!(
        !status.success(),
        "started with another shard count: {stderr}"
    );
    assert!(stderr.contains("--shards 1"), "unclear refusal: {stderr}");

    // None of the refused starts harmed the data.
    cluster.launch(1);
    cluster.wait_for_leaders();
    let value = cluster
        .client()
        .get("kept")
        .expect("get")
        .map(|pair| pair.value);
    assert_eq!(value, Some(b"yes".to_vec()));
}

/// Bytes of the regular files directly in `directory`.
fn directory_bytes(directory: &std::path::Path) -> u64 {
    std::fs::read_dir(directory)
        .expect("readable directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .metadata()
                .expect("metadata")
        })
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum()
}

// Under steady writes a node's WAL stays bounded: local snapshots reach their files and
// then their compaction records, which let old segments go; after kill -9 the node starts
// from those snapshot files with every acknowledged write.
#[test]
fn snapshots_keep_the_wal_bounded_and_survive_kill_nine() {
    const SEGMENT_BYTES: u64 = 4 << 20;
    const VALUE_BYTES: usize = 64 << 10;
    const KEYS: usize = 8;
    const PUTS: usize = 480;
    let mut args = SMALL_SEGMENT_ARGS.to_vec();
    args.extend(["--snapshot-entries", "20"]);
    let mut cluster = TestCluster::start_with("wal-bounded", 1, 1, 2, &args);
    cluster.wait_for_leaders();
    let client = cluster.client();
    let mut last = std::collections::BTreeMap::new();
    for put in 0..PUTS {
        let key = format!("big/{}", put % KEYS);
        let mut value = vec![b'a' + (put % 26) as u8; VALUE_BYTES];
        value[..8].copy_from_slice(&(put as u64).to_le_bytes());
        client.put(&key, &value).expect("put");
        last.insert(key, value);
    }
    let written_bytes = (PUTS * VALUE_BYTES) as u64;
    let wal_dir = cluster.nodes[0].data_dir.join("shard-0").join("wal");
    // The segments still pinned once the compactions are durable: the snapshot check runs
    // every few ticks, so wait for it rather than for a fixed time.
    let bound_bytes = 4 * SEGMENT_BYTES;
    let wal_bytes = common::wait_for("the WAL to shrink after compactions", || {
        let bytes = directory_bytes(&wal_dir);
        (bytes <= bound_bytes).then_some(bytes)
    });
    assert!(
        wal_bytes < written_bytes / 2,
        "{wal_bytes} WAL bytes for {written_bytes} bytes written"
    );

    cluster.kill9(1);
    cluster.launch(1);
    cluster.wait_for_leaders();
    let status = cluster.status(1).expect("status after restart");
    for group in &status.groups {
        assert!(
            group.first_index > 1,
            "group {} restarted without its snapshot: {group:?}",
            group.group_id
        );
    }
    let client = cluster.client();
    for (key, value) in &last {
        let pair = client.get(key).expect("get").expect("present");
        assert_eq!(&pair.value, value, "{key}");
    }
}
