//! A bounded fault run in the default test run: `tools/faults.sh` on a real 3-node and a
//! real 5-node cluster in network namespaces, under seeded, overlapping faults, with every
//! history checked by `corekv::check` after the heal (see the script).
//!
//! Needs root (namespaces, iptables); without it the test says so and passes without
//! running. CI runs as root. The seed comes from `COREKV_TEST_SEED` when set and is
//! printed; a failure keeps the run directory and prints the replay command.

use std::path::PathBuf;
use std::process::Command;

/// Seconds of faults per cluster: a few cycles of fault and heal each.
const FAULT_SECONDS: u64 = 40;

/// The fault client the script drives, built beside this test as an example.
fn client_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's path");
    let release = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    release.join("examples").join("faults_client")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

// Three and five nodes under every fault the script offers: the histories are
// linearizable, every replica agrees and every group writes again within the bound.
#[test]
fn bounded_fault_runs_pass() {
    if !is_root() {
        println!("skipped: the fault run needs root (network namespaces, iptables)");
        return;
    }
    let client = client_binary();
    assert!(
        client.exists(),
        "{} is missing: cargo test builds the examples",
        client.display()
    );
    let seed = corekv::testing::test_seed() % 1_000_000_000;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/faults.sh");
    for nodes in [3, 5] {
        println!("fault run: {nodes} nodes, seed {seed}");
        let status = Command::new(script)
            .args(["--seed", &seed.to_string()])
            .args(["--nodes", &nodes.to_string()])
            .args(["--duration", &FAULT_SECONDS.to_string()])
            .args(["--lock-wait", "900"])
            .args(["--binary", env!("CARGO_BIN_EXE_corekv")])
            .arg("--client-binary")
            .arg(&client)
            .status()
            .expect("tools/faults.sh runs");
        assert!(
            status.success(),
            "the {nodes}-node fault run failed ({status}); replay with \
             COREKV_TEST_SEED={seed} cargo test --release --test server_faults_run \
             (or the tools/faults.sh command printed above)"
        );
    }
}
