#!/usr/bin/env bash
# Runs the end-to-end cluster bench (benches/cluster.rs): a 3-node corekv cluster and a
# 3-member etcd cluster on loopback, loaded the same way, with the ratio corekv/etcd.
#
#   tools/bench-cluster.sh [bench options...]
#   tools/bench-cluster.sh --clients 64 --seconds 5
#
# Installs etcd from Debian's packages when it is missing (the bench itself installs
# nothing; without etcd it reports corekv alone). `cargo bench` builds the release
# `corekv` binary (target/release/corekv) that the bench starts. Options go to the bench;
# `--help` lists them. The output is also kept in target/bench-cluster.txt.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)

if ! command -v etcd >/dev/null; then
    echo "etcd is missing: installing etcd-server and etcd-client with apt-get" >&2
    if ! apt-get install -y etcd-server etcd-client >/dev/null; then
        apt-get update >/dev/null
        apt-get install -y etcd-server etcd-client >/dev/null
    fi
fi

mkdir -p "$root/target"
cd "$root"
cargo bench --bench cluster -- "$@" 2>&1 | tee "$root/target/bench-cluster.txt"
