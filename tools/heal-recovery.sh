#!/usr/bin/env bash
# How long a cluster takes to serve every group through a node again after that node was
# cut off by a real partition (iptables DROP of everything it sends and everything sent
# to its ports, on loopback), for several partition lengths and one or two builds:
#
#   sudo tools/heal-recovery.sh [--lengths-ms 2000,20000] [--runs N] [--binary PATH]...
#
# Each run is the process test `server_faults_heal` with COREKV_HEAL_PARTITION_MS set
# (and COREKV_SERVER_BINARY when --binary names another build, e.g. one from
# tools/build-baseline.sh). It prints one line per run: the build, the partition's
# length, when the cut node named every group's leader again and when a client given
# only that node had written to every group, both counted from the heal. Needs root.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

lengths_ms="2000,20000"
runs=1
binaries=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --lengths-ms) lengths_ms="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --binary) binaries+=("$2"); shift 2 ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "heal-recovery: unknown flag $1" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "heal-recovery: needs root (iptables)" >&2; exit 2; }
command -v iptables >/dev/null || {
    source tools/lib/processes.sh
    apt_install iptables
}
cargo build --release --test server_faults_heal --bin corekv >/dev/null 2>&1 ||
    cargo build --release --test server_faults_heal --bin corekv
(( ${#binaries[@]} > 0 )) || binaries=("$PWD/target/release/corekv")

IFS=',' read -r -a lengths <<<"$lengths_ms"
printf '%-40s %12s %5s %12s %12s %s\n' build partition_ms run leaders_ms writes_ms result
for binary in "${binaries[@]}"; do
    for length in "${lengths[@]}"; do
        for (( run = 1; run <= runs; run++ )); do
            output=$(COREKV_SERVER_BINARY="$binary" COREKV_HEAL_PARTITION_MS="$length" \
                cargo test --release --test server_faults_heal -- --nocapture 2>&1) &&
                result=pass || result=FAIL
            line=$(grep -o 'heal-recovery partition_ms=[0-9]* leaders_ms=[0-9]* writes_ms=[0-9]*' \
                <<<"$output" | tail -n 1 || true)
            leaders=$(sed -n 's/.*leaders_ms=\([0-9]*\).*/\1/p' <<<"$line")
            writes=$(sed -n 's/.*writes_ms=\([0-9]*\).*/\1/p' <<<"$line")
            if grep -q 'skipped:' <<<"$output"; then result=skipped; fi
            printf '%-40s %12s %5s %12s %12s %s\n' "$(basename "$binary")" "$length" "$run" \
                "${leaders:--}" "${writes:--}" "$result"
        done
    done
done
