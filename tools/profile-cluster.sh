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
# No pipefail: the reports below end in `head`, which stops perf early on purpose.
set -eu

target=${1:-node1}
phase=${2:-put}
clients=${3:-256}
seconds=${4:-15}
# Symbols listed in the report.
top_symbols=40
# Sampling rate (Hz) of the software clock; this VM has no hardware counters.
frequency=499

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
# Puts need no data beforehand; gets and the mix read keys that must exist (a missing key
# is an error), so the bench fills the keyspace first for them.
fill=()
[ "$phase" = put ] && fill=(--skip-fill)
# The load runs a little longer than the sampling so perf sees only the steady state.
"$executable" --systems corekv "${fill[@]}" --phases "$phase" --clients "$clients" \
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
# DWARF call graphs: the release build keeps no frame pointers, so `-g` alone would lose
# the callers of every hot symbol.
perf record -e cpu-clock -F "$frequency" --call-graph dwarf,16384 -p "$pid" -o "$data" \
    -- sleep "$seconds" \
    >"$out/perf-record.txt" 2>&1
wait "$bench_pid" || true
trap - EXIT

echo "load (the bench's own report):"
grep -E "^corekv +[0-9]+ " "$log" | head -n 1
echo
echo "self time by symbol, $target ($pid), $phase, $clients clients, ${seconds} s:"
perf report -i "$data" --stdio --no-children --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed 's/ *$//' | head -n "$top_symbols"
echo
echo "time including callees, by symbol:"
perf report -i "$data" --stdio --children --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed 's/ *$//' | head -n "$top_symbols"
echo
echo "self time by thread:"
perf report -i "$data" --stdio --no-children --sort comm -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed 's/ *$//' | head -n 10
echo
echo "samples by layer (a sample counts for the first layer on its stack, top-down order):"
# perf script prints one call stack per sample, blank-line separated: awk's paragraph
# mode reads one sample per record.
perf script -i "$data" -F ip,sym 2>/dev/null | awk '
    BEGIN {
        RS = ""
        layers = 0
        layer[++layers] = "kv apply (state machine)";            pattern[layers] = "Store::apply"
        layer[++layers] = "client replies: write";               pattern[layers] = "write_replies"
        layer[++layers] = "client requests: read and decode";    pattern[layers] = "read_requests"
        layer[++layers] = "peer transport: receive and decode";  pattern[layers] = "corekv::transport::inbound"
        layer[++layers] = "peer transport: decode";              pattern[layers] = "decode_peer_batch"
        layer[++layers] = "peer transport: send";                pattern[layers] = "corekv::transport::link"
        layer[++layers] = "peer transport: other";               pattern[layers] = "corekv::transport"
        layer[++layers] = "WAL";                                 pattern[layers] = "corekv::wal"
        layer[++layers] = "raft core";                           pattern[layers] = "corekv::raft"
        layer[++layers] = "multiraft ready: other";              pattern[layers] = "MultiRaft::ready"
        layer[++layers] = "requests: routing and answers";       pattern[layers] = "corekv::server::requests"
        layer[++layers] = "shard loop: other";                   pattern[layers] = "corekv::server::shard"
        layer[++layers] = "glommio: park, reactor, io_uring";    pattern[layers] = "glommio::"
        layer[++layers] = "SDK: call (encode, write, wait)";     pattern[layers] = "client::connection::Connection::call"
        layer[++layers] = "SDK: reader thread";                  pattern[layers] = "client::connection::read_loop"
        layer[++layers] = "SDK: other";                          pattern[layers] = "corekv::client"
        layer[++layers] = "bench worker";                        pattern[layers] = "cluster::"
    }
    {
        total++
        for (i = 1; i <= layers; i++) {
            if (index($0, pattern[i]) > 0) { count[layer[i]]++; next }
        }
        count["other"]++
    }
    END { for (name in count) printf "%6.1f%%  %s\n", 100 * count[name] / total, name }' |
    sort -rn
echo
echo "data: $data (perf report -i $data)"
