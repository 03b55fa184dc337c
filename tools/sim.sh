#!/usr/bin/env bash
# Long explorations with the cluster simulator (tests/sim.rs) in a release build.
#
#   tools/sim.sh [--seeds N] [--steps M] [--start S] [--broken KNOB] [--threads T]
#
# Runs N seeds (default 20000) from S (default: a random start far from the CI seeds, so
# every exploration covers new ground; it is printed) with M main-phase steps per run
# (default 6000), and prints the simulator's summary: seeds per second, runs per fault
# mix, faults injected, operations checked. Every failing seed is reported with the
# command that replays it. KNOB runs a deliberately broken build (commit_old_terms,
# ack_before_fsync or forward_reads_serializable) to see how often the checks catch it.
set -euo pipefail

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

seeds=20000
steps=6000
start=""
broken=none
threads=""
while [ $# -gt 0 ]; do
    case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --start) start=$2; shift 2 ;;
    --broken) broken=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
for number in "$seeds" "$steps" ${start:+"$start"} ${threads:+"$threads"}; do
    case "$number" in '' | *[!0-9]*) echo "not a number: $number" >&2; exit 2 ;; esac
done
if [ -z "$start" ]; then
    # Above the CI seeds (1 to a few thousand), and different on every call.
    start=$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') + 1000000 ))
fi

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
echo "sim.sh: $seeds seeds from $start, $steps steps each, broken build: $broken"
export COREKV_TEST_CASES=$seeds COREKV_TEST_SEED=$start SIM_STEPS=$steps SIM_BROKEN=$broken
if [ -n "$threads" ]; then
    export SIM_THREADS=$threads
fi
cargo test --release --test sim -- simulate_ci_seeds --exact --nocapture
