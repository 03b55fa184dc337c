//! `corekv bench` against a real 3-node cluster: a short YCSB-A run reports throughput
//! without errors and the servers' CPU, and failed operations (keys the server refuses,
//! writes to a cluster that lost its quorum) are counted as errors by kind, never as
//! throughput.

mod common;

use std::process::{Command, Output};

use common::{TestCluster, SMALL_SEGMENT_ARGS};
use corekv::bench::report::Report;

/// Exit code of a run in which some operations failed.
const EXIT_OPERATIONS_FAILED: i32 = 1;

fn bench(cluster: &TestCluster, arguments: &[&str]) -> (Output, Report) {
    let output = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .arg("bench")
        .args(["--endpoints", &cluster.endpoints().join(",")])
        .args(["--json", "--quiet"])
        .args(arguments)
        .output()
        .expect("the corekv binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = Report::from_json(stdout.trim())
        .unwrap_or_else(|error| panic!("no JSON report ({error}): {stdout}\nstderr: {stderr}"));
    (output, report)
}

// One cluster for the three runs keeps the test short: the healthy run first, the
// refused keys next, the lost quorum last.
#[test]
fn bench_reports_ops_and_counts_errors() {
    let mut cluster = TestCluster::start_with("bench-cli", 3, 1, 4, &SMALL_SEGMENT_ARGS);
    cluster.wait_for_leaders();
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| node.child.as_ref().expect("running").id().to_string())
        .collect();

    let (output, report) = bench(
        &cluster,
        &[
            "--workload",
            "ycsb-a",
            "--keys",
            "200",
            "--in-flight",
            "16",
            "--duration",
            "2s",
            "--server-pids",
            &pids.join(","),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{report:?}");
    assert!(report.ops > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.fill.as_ref().map(|fill| fill.errors), Some(0));
    for op in ["get", "put"] {
        let operation = report.operation(op).expect("both kinds ran");
        assert!(operation.ops > 0 && operation.latency_us.p99 >= operation.latency_us.p50);
    }
    let server_cpu = report.server_cpu.as_ref().expect("pids were given");
    assert_eq!(server_cpu.pids.len(), 3);
    assert!(!report.intervals.is_empty());

    // Keys past the server's bound are refused: every put is an error of that kind.
    let (output, report) = bench(
        &cluster,
        &["--workload", "put", "--key-bytes", "5000", "--count", "20"],
    );
    assert_eq!(output.status.code(), Some(EXIT_OPERATIONS_FAILED));
    assert_eq!((report.ops, report.errors), (0, 20), "{report:?}");
    assert_eq!(
        report.errors_by_kind.get("rejected: KeyTooLarge"),
        Some(&20)
    );

    // Two of three nodes stopped: no write can commit, and each one ends in an error
    // within its deadline.
    cluster.terminate(2);
    cluster.terminate(3);
    let (output, report) = bench(
        &cluster,
        &[
            "--workload",
            "put",
            "--count",
            "8",
            "--in-flight",
            "8",
            "--timeout",
            "1s",
            "--wait-ready",
            "0",
        ],
    );
    assert_eq!(output.status.code(), Some(EXIT_OPERATIONS_FAILED));
    assert_eq!((report.ops, report.errors), (0, 8), "{report:?}");
    let kinds: Vec<&String> = report.errors_by_kind.keys().collect();
    assert!(
        kinds
            .iter()
            .all(|kind| ["unavailable", "timeout", "outcome unknown"].contains(&kind.as_str())),
        "{kinds:?}"
    );
}
