#!/usr/bin/env bash
# Where a corekv node's time goes under a bench load: starts a fresh 3-node cluster on
# loopback (`corekv cluster`), loads it with `corekv bench`, samples one process with
# `perf record` on the software clock while the load is steady, and writes a flame graph
# (inferno) and prints the per-layer split, the top symbols by self time and the time by
# thread.
#
#   tools/profile.sh                                   # node 1, puts, 256 in flight, 15 s
#   tools/profile.sh --target node2 --workload get
#   tools/profile.sh --target bench --workload ycsb-a  # the load generator (SDK side)
#
# Options: --target [node1] (node1..node3, or bench), --workload [put] (any of corekv
# bench's), --in-flight [256], --seconds [15] of sampling, --frequency [499] Hz,
# --call-graph [dwarf] (dwarf, or fp for a build with frame pointers: the release
# profile keeps none, so `-g` alone would lose the callers of every hot symbol).
#
# A developer tool: it installs what it lacks (linux-perf with apt-get; inferno with
# `cargo install inferno --root target/tools` once), nothing at CI time. Output goes to
# target/profile/ (or $PROFILE_DIR): perf.<target>.<workload>.data (`perf report -i`),
# flame.<target>.<workload>.svg, the bench's log and report.
# A layer is the innermost corekv (or glommio) frame on a sample's stack: a memcpy
# called by the WAL counts as WAL, an io_uring submission through glommio as glommio.
# No pipefail: the reports below end in `head`, which stops perf early on purpose.
set -eu

target=node1
workload=put
in_flight=256
seconds=15
frequency=499
call_graph=dwarf
# Symbols listed in the report.
top_symbols=30
# Client port of node 1 (node n: + 10 (n - 1)).
base_port=25000
# How long the cluster may take to list its pids, and the load to start measuring.
startup_seconds_max=120

while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --workload) workload=$2; shift 2 ;;
        --in-flight) in_flight=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --frequency) frequency=$2; shift 2 ;;
        --call-graph) call_graph=$2; shift 2 ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$target" in node1 | node2 | node3 | bench) ;; *) echo "--target: node1..node3 or bench" >&2; exit 2 ;; esac
case "$call_graph" in dwarf) call_graph=dwarf,16384 ;; fp) ;; *) echo "--call-graph: dwarf or fp" >&2; exit 2 ;; esac

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=tools/lib/processes.sh
. "$root/tools/lib/processes.sh"
out=${PROFILE_DIR:-$root/target/profile}
mkdir -p "$out"

if ! command -v perf >/dev/null; then
    echo "perf is missing: installing linux-perf with apt-get" >&2
    apt_install linux-perf
fi
inferno_bin=$root/target/tools/bin
if [ ! -x "$inferno_bin/inferno-flamegraph" ]; then
    echo "inferno is missing: cargo install inferno --root target/tools" >&2
    cargo install inferno --root "$root/target/tools" --locked >/dev/null
fi
(cd "$root" && cargo build --release --bin corekv 2>&1 | tail -n 1) >&2
corekv=$root/target/release/corekv

work=$(mktemp -d /var/tmp/corekv-profile.XXXXXX)
cluster_pid=
bench_pid=
cleanup() {
    stop_processes $bench_pid $cluster_pid
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$corekv" cluster --base-port "$base_port" --data-dir "$work/data" >"$out/cluster.log" 2>&1 &
cluster_pid=$!
deadline=$((SECONDS + startup_seconds_max))
wait_for_pids "$work/data/cluster.pids" 3 "$startup_seconds_max" "$out/cluster.log"
endpoints=127.0.0.1:$base_port,127.0.0.1:$((base_port + 10)),127.0.0.1:$((base_port + 20))

name=$target.$workload
log=$out/bench.$name.log
# The load runs past the sampling on both sides, so perf sees only the steady state.
warmup=3
"$corekv" bench --endpoints "$endpoints" --workload "$workload" --in-flight "$in_flight" \
    --keys 20000 --warmup "${warmup}s" --duration "$((seconds + 3))s" \
    --server-pids-file "$work/data/cluster.pids" --json >"$out/bench.$name.json" 2>"$log" &
bench_pid=$!
# The progress lines of the measured part start with the workload's name.
until grep -q "^$workload \[" "$log"; do
    kill -0 "$bench_pid" 2>/dev/null || { cat "$log" >&2; echo "the bench stopped early" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { cat "$log" >&2; echo "the load did not start" >&2; exit 1; }
    sleep 0.2
done
if [ "$target" = bench ]; then
    pid=$bench_pid
else
    pid=$(sed -n "${target#node}p" "$work/data/cluster.pids")
fi

data=$out/perf.$name.data
perf record -e cpu-clock -F "$frequency" --call-graph "$call_graph" -p "$pid" -o "$data" \
    -- sleep "$seconds" >"$out/perf-record.$name.txt" 2>&1
wait "$bench_pid" || true
bench_pid=

echo "load (corekv bench's report; the sampled window is inside it):"
grep -E "^(throughput|op |CPU)|^(get|put|insert|scan|append|rmw) +[0-9]" "$log" | head -n 12
echo
flame=$out/flame.$name.svg
perf script -i "$data" 2>/dev/null | "$inferno_bin/inferno-collapse-perf" 2>/dev/null |
    "$inferno_bin/inferno-flamegraph" --title "corekv $target, $workload, $in_flight in flight" >"$flame"
echo "flame graph: $flame"
echo
echo "samples by layer ($target, pid $pid, $workload, $in_flight in flight, ${seconds} s at $frequency Hz):"
# perf script prints one sample per blank-line-separated paragraph: a header line, then
# one frame per line from the innermost out. Layers are tried on each frame in the order
# listed; the first frame that matches a layer names the sample's layer.
perf script -i "$data" -F comm,tid,ip,sym 2>/dev/null | awk '
    BEGIN {
        RS = ""; FS = "\n"
        n = 0
        layer[++n] = "replies: encode and write";        pattern[n] = "response_to_bytes|write_replies|Connections::reply"
        layer[++n] = "client requests: read and decode"; pattern[n] = "corekv::api::|corekv::server::connections"
        layer[++n] = "kv apply (state machine)";         pattern[n] = "corekv::kv::"
        layer[++n] = "multiraft";                        pattern[n] = "corekv::multiraft::"
        layer[++n] = "raft core";                        pattern[n] = "corekv::raft::"
        layer[++n] = "WAL";                              pattern[n] = "corekv::wal::"
        layer[++n] = "transport (peer links, codec)";    pattern[n] = "corekv::transport::|corekv::codec::|corekv::frame::"
        layer[++n] = "shard core";                       pattern[n] = "corekv::shard::"
        layer[++n] = "server loop: other";               pattern[n] = "corekv::server::"
        layer[++n] = "glommio / io_uring";               pattern[n] = "glommio::|io_uring"
        layer[++n] = "SDK (client)";                     pattern[n] = "corekv::client::"
        layer[++n] = "bench driver";                     pattern[n] = "corekv::bench::"
    }
    {
        total++
        found = ""
        for (line = 2; line <= NF && found == ""; line++) {
            for (i = 1; i <= n; i++) {
                if ($line ~ pattern[i]) { found = layer[i]; break }
            }
        }
        if (found == "") found = ($0 ~ /kernel|\[k\]/) ? "kernel, no corekv frame" : "other (libc, runtime)"
        count[found]++
    }
    END {
        for (name in count) printf "%6.1f%%  %s\n", 100 * count[name] / total, name
        printf "%6.1f%%  every sample (%d)\n", 100, total
    }' |
    sort -rn
echo
echo "self time by symbol:"
perf report -i "$data" --stdio --no-children --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/( +-)* *$//' | head -n "$top_symbols"
echo
echo "self time by thread:"
perf report -i "$data" --stdio --no-children --sort comm -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/( +-)* *$//' | head -n 10
echo
echo "data: $data (perf report -i $data)"
