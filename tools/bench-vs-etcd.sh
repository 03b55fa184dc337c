#!/usr/bin/env bash
# corekv against etcd on this machine, loaded the same way in the same run: a 3-member
# etcd and a 3-node corekv on loopback, both with fsync on, from fresh temporary data
# directories, both stopped whatever happens. etcd is driven through its native gRPC
# API by tools/etcd-load/ (a pipelined async client: the etcd-client crate on tokio, one
# channel per 8 operations in flight, every response checked), corekv through the SDK by
# `corekv bench`; both plan the same keys and values with the same seed and check
# answers with the same code. Prints one table: ops/s, p50/p99 per system, the ratios,
# and the servers' CPU microseconds per operation.
#
#   tools/bench-vs-etcd.sh                                  # put and get at 64/128/256
#   tools/bench-vs-etcd.sh --in-flight 64 --seconds 5       # shorter
#   tools/bench-vs-etcd.sh --workloads put,get,ycsb-a --keys 10000
#
# Options (defaults in brackets): --workloads [put,get] (any of corekv bench's but
# append), --in-flight [64,128,256], --seconds [10] measured per run, --warmup-seconds
# [2], --keys [100000], --value-bytes [256], --base-port [23000].
#
# Installs etcd-server, etcd-client and protobuf-compiler with apt-get when missing
# (protoc builds the etcd-client crate), builds the release corekv and tools/etcd-load
# (into target/etcd-load: that crate is outside corekv's build). Each run's JSON report
# and log, and the table, are kept in target/bench-vs-etcd/.
set -euo pipefail

workloads=put,get
in_flight=64,128,256
seconds=10
warmup_seconds=2
keys=100000
value_bytes=256
base_port=23000
# One etcd gRPC channel per this many operations in flight (what the reference numbers
# in the project's notes used).
operations_per_etcd_channel=8
# How long a cluster may take to serve after it starts.
startup_seconds_max=60

while [ $# -gt 0 ]; do
    case "$1" in
        --workloads) workloads=$2; shift 2 ;;
        --in-flight) in_flight=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --warmup-seconds) warmup_seconds=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --value-bytes) value_bytes=$2; shift 2 ;;
        --base-port) base_port=$2; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=tools/lib/processes.sh
. "$root/tools/lib/processes.sh"
out=$root/target/bench-vs-etcd
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    apt_install "${missing[@]}"
fi

echo "building corekv and tools/etcd-load (release)" >&2
(cd "$root" && cargo build --release --bin corekv 2>&1 | tail -n 1) >&2
(cd "$root/tools/etcd-load" && CARGO_TARGET_DIR=$root/target/etcd-load \
    cargo build --release 2>&1 | tail -n 1) >&2
corekv=$root/target/release/corekv
etcd_load=$root/target/etcd-load/release/etcd-load

work=$(mktemp -d /var/tmp/corekv-vs-etcd.XXXXXX)
etcd_pids=()
cluster_pid=
cleanup() {
    # Exactly the processes this script started: the etcd members and the corekv
    # launcher (which stops its own nodes).
    stop_processes "${etcd_pids[@]}" $cluster_pid
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# etcd: 3 members, client port base+2*i, peer port base+2*i+1 (fsync on, the default).
initial_cluster=
etcd_endpoints=
for member in 1 2 3; do
    client=$((base_port + 2 * member))
    initial_cluster+="${initial_cluster:+,}m$member=http://127.0.0.1:$((client + 1))"
    etcd_endpoints+="${etcd_endpoints:+,}http://127.0.0.1:$client"
done
for member in 1 2 3; do
    client=$((base_port + 2 * member))
    etcd --name "m$member" --data-dir "$work/etcd-$member" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$((client + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((client + 1))" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" --logger zap --log-level warn \
        >"$work/etcd-$member.log" 2>&1 &
    etcd_pids+=($!)
done

# corekv: 3 nodes through `corekv cluster`, which lists its nodes' pids.
corekv_port=$((base_port + 100))
"$corekv" cluster --base-port "$corekv_port" --data-dir "$work/corekv" >"$work/corekv.log" 2>&1 &
cluster_pid=$!
corekv_endpoints="127.0.0.1:$corekv_port,127.0.0.1:$((corekv_port + 10)),127.0.0.1:$((corekv_port + 20))"

deadline=$((SECONDS + startup_seconds_max))
until ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" put bench-ready ok >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$work"/etcd-*.log >&2; echo "etcd did not start" >&2; exit 1; }
    sleep 0.2
done
wait_for_pids "$work/corekv/cluster.pids" 3 $((deadline - SECONDS)) "$work/corekv.log"
etcd_pid_list=$(IFS=,; echo "${etcd_pids[*]}")
echo "etcd pids $etcd_pid_list; corekv pids $(tr '\n' ' ' <"$work/corekv/cluster.pids")" >&2
echo "load average before the runs: $(cat /proc/loadavg)" >&2

common=(--keys "$keys" --value-bytes "$value_bytes" --duration "${seconds}s"
    --warmup "${warmup_seconds}s" --json --quiet)
failed=0
for workload in ${workloads//,/ }; do
    filled=()
    for count in ${in_flight//,/ }; do
        name=$workload-$count
        channels=$(((count + operations_per_etcd_channel - 1) / operations_per_etcd_channel))
        echo "corekv $workload, $count in flight" >&2
        "$corekv" bench --endpoints "$corekv_endpoints" --workload "$workload" \
            --in-flight "$count" --server-pids-file "$work/corekv/cluster.pids" \
            "${common[@]}" "${filled[@]}" >"$out/corekv-$name.json" 2>"$out/corekv-$name.log" ||
            { failed=1; tail -n 20 "$out/corekv-$name.log" >&2; }
        echo "etcd $workload, $count in flight, $channels channels" >&2
        "$etcd_load" run --endpoints "$etcd_endpoints" --workload "$workload" \
            --in-flight "$count" --connections "$channels" --server-pids "$etcd_pid_list" \
            "${common[@]}" "${filled[@]}" >"$out/etcd-$name.json" 2>"$out/etcd-$name.log" ||
            { failed=1; tail -n 20 "$out/etcd-$name.log" >&2; }
        # The first run of a workload wrote the keyspace; the next ones reuse it.
        filled=(--assume-filled)
    done
done

echo
echo "corekv vs etcd: 3 nodes each on loopback, fsync on, ${seconds} s per run after ${warmup_seconds} s warm-up, $keys keys, $value_bytes-byte values"
reports=()
for report in "$out"/*.json; do
    [ -s "$report" ] && reports+=("$report")
done
"$etcd_load" table "${reports[@]}" | tee "$out/table.txt"
if [ $failed -ne 0 ]; then
    echo "some runs failed or had errors: see $out/*.log" >&2
    exit 1
fi
