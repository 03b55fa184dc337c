#!/usr/bin/env bash
# Per-core scaling of corekv on this machine: one node and three nodes, each with one
# shard and with two shards (one executor per shard, so two shards should use two
# cores), loaded with durable puts and with linearizable gets by `corekv bench`. Prints
# ops/s, the servers' cores busy, operations per server CPU-second, and the ratio
# 2 shards / 1 shard for each node count and workload.
#
#   tools/bench-scaling.sh                       # 10 s per run, 128 in flight
#   tools/bench-scaling.sh --seconds 5 --in-flight 256
#
# The design's promise is >= 1.8x from 2 shards on a single node with cores to spare.
# The load generator shares the machine's cores with the servers, and three nodes of
# two shards are six executors: on a 2-core machine the ratio says what the machine
# gives, not what the design can. Each run's JSON report and log go to
# target/bench-scaling/. Options: --seconds [10], --warmup-seconds [2], --in-flight
# [128], --keys [20000], --value-bytes [256], --groups [16], --base-port [24000].
set -euo pipefail

seconds=10
warmup_seconds=2
in_flight=128
keys=20000
value_bytes=256
groups=16
base_port=24000
# How long a cluster may take to list its pids after it starts.
startup_seconds_max=60

while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --warmup-seconds) warmup_seconds=$2; shift 2 ;;
        --in-flight) in_flight=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --value-bytes) value_bytes=$2; shift 2 ;;
        --groups) groups=$2; shift 2 ;;
        --base-port) base_port=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=tools/lib/processes.sh
. "$root/tools/lib/processes.sh"
out=$root/target/bench-scaling
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log
command -v jq >/dev/null || apt_install jq
(cd "$root" && cargo build --release --bin corekv 2>&1 | tail -n 1) >&2
corekv=$root/target/release/corekv

work=$(mktemp -d /var/tmp/corekv-scaling.XXXXXX)
cluster_pid=
stop_cluster() {
    [ -n "$cluster_pid" ] || return 0
    stop_processes "$cluster_pid"
    wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=
}
trap 'stop_cluster; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

echo "load average before the runs: $(cat /proc/loadavg); $(nproc) cores" >&2
failed=0
rows=()
for nodes in 1 3; do
    for shards in 1 2; do
        name=n$nodes-s$shards
        data=$work/$name
        "$corekv" cluster --nodes "$nodes" --shards "$shards" --groups "$groups" \
            --base-port "$base_port" --data-dir "$data" >"$out/$name-cluster.log" 2>&1 &
        cluster_pid=$!
        wait_for_pids "$data/cluster.pids" "$nodes" "$startup_seconds_max" "$out/$name-cluster.log"
        endpoints=$(seq 1 "$nodes" | while read -r node; do
            echo "127.0.0.1:$((base_port + 10 * (node - 1)))"; done | paste -sd,)
        for workload in put get; do
            echo "$nodes node(s), $shards shard(s): $workload" >&2
            report=$out/$name-$workload.json
            "$corekv" bench --endpoints "$endpoints" --workload "$workload" --keys "$keys" \
                --value-bytes "$value_bytes" --in-flight "$in_flight" \
                --duration "${seconds}s" --warmup "${warmup_seconds}s" \
                --server-pids-file "$data/cluster.pids" --json --quiet \
                >"$report" 2>"$out/$name-$workload.log" ||
                { failed=1; tail -n 20 "$out/$name-$workload.log" >&2; }
            rows+=("$nodes $shards $workload $(jq -r '[.ops_per_second, (.server_cpu.cores // 0),
                (.server_cpu.us_per_op // 0), .errors,
                ([.operations[].latency_us.p99] | max // 0)] | @tsv' "$report" 2>/dev/null ||
                echo "0 0 0 -1 0")")
        done
        stop_cluster
    done
done

echo
echo "corekv per-core scaling: ${seconds} s per run after ${warmup_seconds} s warm-up, $in_flight in flight, $keys keys, $value_bytes-byte values, $groups groups, $(nproc) cores"
printf '%-5s %-6s %-4s %10s %9s %11s %13s %8s %7s %12s\n' nodes shards op "ops/s" "p99 ms" "srv cores" "ops/srv-core" "us/op" errors "2sh/1sh"
for row in "${rows[@]}"; do
    read -r nodes shards workload ops cores micros errors p99 <<<"$row"
    per_core=$(awk -v micros="$micros" 'BEGIN { if (micros > 0) printf "%.0f", 1e6 / micros; else printf "-" }')
    ratio=-
    if [ "$shards" = 2 ]; then
        for other in "${rows[@]}"; do
            read -r other_nodes other_shards other_workload other_ops _ <<<"$other"
            if [ "$other_nodes" = "$nodes" ] && [ "$other_shards" = 1 ] && [ "$other_workload" = "$workload" ]; then
                ratio=$(awk -v a="$ops" -v b="$other_ops" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }')
            fi
        done
    fi
    printf '%-5s %-6s %-4s %10.0f %9.2f %11.2f %13s %8.1f %7s %12s\n' "$nodes" "$shards" "$workload" \
        "$ops" "$(awk -v us="$p99" 'BEGIN { print us / 1000 }')" "$cores" "$per_core" "$micros" "$errors" "$ratio"
done | tee "$out/table.txt"
echo "ops/srv-core: operations per CPU-second of the servers (1e6 / us per op); 2sh/1sh: ops/s with 2 shards over 1, same nodes and op"
[ $failed -eq 0 ] || { echo "some runs failed or had errors: see $out/*.log" >&2; exit 1; }
