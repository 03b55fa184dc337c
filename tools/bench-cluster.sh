#!/usr/bin/env bash
# Runs the end-to-end cluster bench (benches/cluster.rs): a 3-node corekv cluster on
# loopback through its phases (put, get, 70/30 mix) at each client count, and with
# `--baseline-binary FILE` (see tools/build-baseline.sh) the same load on a baseline
# build in the same run, with the ratio corekv/baseline.
#
#   tools/bench-cluster.sh [bench options...]
#   tools/bench-cluster.sh --clients 64 --seconds 5
#   tools/bench-cluster.sh --baseline-binary target/baseline/corekv --rounds 3
#
# The comparison with etcd (over its native gRPC API) is tools/bench-vs-etcd.sh.
# `cargo bench` builds the release `corekv` binary (target/release/corekv) that the bench
# starts. Options go to the bench; `--help` lists them. The output is also kept in
# target/bench-cluster.txt.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

mkdir -p "$root/target"
cd "$root"
cargo bench --bench cluster -- "$@" 2>&1 | tee "$root/target/bench-cluster.txt"
