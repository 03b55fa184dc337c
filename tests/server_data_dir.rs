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
