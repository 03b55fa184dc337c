#!/usr/bin/env bash
# Profiles where a corekv server's time goes under the cluster bench's put load
# (benches/cluster.rs): starts the 3-node cluster and the load, samples one process with
# `perf record -g` on the software clock while the load is measured, and prints the top
# symbols by self time.
#
#   tools/profile-cluster.sh [node1|node2|node3|bench] [phase] [clients] [seconds]
#
# `bench` samples the load generator (the SDK side) instead of a server. Defaults: node1,
# put, 256 clients, 15 s of sampling. Output files go to target/profile-cluster/ (or
# $PROFILE_DIR); `perf report -i <file>` opens the data.
set -euo pipefail

target=${1:-node1}
phase=${2:-put}
clients=${3:-256}
seconds=${4:-15}
# Symbols listed in the report.
top_symbols=40
# Sampling rate (Hz) of the software clock; this VM has no hardware counters.
frequency=999

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=${PROFILE_DIR:-$root/target/profile-cluster}
mkdir -p "$out"

if ! command -v perf >/dev/null; then
    echo "perf is missing: installing linux-perf with apt-get" >&2
    apt-get install -y linux-perf >/dev/null || { apt-get update >/dev/null; apt-get install -y linux-perf >/dev/null; }
fi

case "$target" in node1 | node2 | node3 | bench) ;; *) echo "target must be node1..node3 or bench" >&2; exit 2 ;; esac

executable=$(cd "$root" && cargo bench --bench cluster --no-run 2>&1 |
    sed -n 's/.*Executable benches\/cluster.rs (\(.*\))/\1/p')
if [ -z "$executable" ]; then
    echo "could not build or find the cluster bench executable" >&2
    exit 1
fi
executable="$root/$executable"

log="$out/bench.$target.$phase.txt"
# The load runs a little longer than the sampling so perf sees only the steady state.
"$executable" --systems corekv --skip-fill --phases "$phase" --clients "$clients" \
    --warmup-seconds 3 --seconds $((seconds + 5)) >"$log" 2>&1 &
bench_pid=$!
trap 'kill "$bench_pid" 2>/dev/null || true' EXIT

# Wait until the load starts warming up, then pick the process to sample.
for _ in $(seq 1 600); do
    grep -q "warming up" "$log" && break
    kill -0 "$bench_pid" 2>/dev/null || { cat "$log"; echo "the bench stopped early" >&2; exit 1; }
    sleep 0.1
done
if [ "$target" = bench ]; then
    pid=$bench_pid
else
    pid=$(sed -n "s/^corekv node ${target#node}: pid \([0-9]*\).*/\1/p" "$log")
fi
[ -n "$pid" ] || { cat "$log"; echo "no pid for $target" >&2; exit 1; }
sleep 3

data="$out/perf.$target.$phase.data"
perf record -e cpu-clock -F "$frequency" -g -p "$pid" -o "$data" -- sleep "$seconds" \
    >"$out/perf-record.txt" 2>&1
wait "$bench_pid" || true
trap - EXIT

echo "load (the bench's own report):"
grep -E "^(system|corekv) " "$log" | head -n 4
echo
echo "self time by symbol, $target ($pid), $phase, $clients clients, ${seconds} s:"
perf report -i "$data" --stdio --no-children --sort symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -n "$top_symbols"
echo
echo "self time by thread:"
perf report -i "$data" --stdio --no-children --sort comm 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -n 10
echo
echo "data: $data (perf report -i $data)"
