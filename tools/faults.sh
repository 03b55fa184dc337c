#!/usr/bin/env bash
# The fault run: a real 3- or 5-node corekv cluster in network namespaces, SDK clients
# (examples/faults_client.rs, one per node given only that node, one given every node) and
# a CLI client running put/get/append/cas/delete/range over a small key set and recording
# every operation, while faults drawn from a printed seed come and go, some overlapping.
# After the last heal: the whole history is checked by corekv::check (final reads of every
# key included, so a lost acknowledged write is a violation), every node's own replica
# must agree, no node may have panicked, and figures are printed per fault kind.
#
#   sudo tools/faults.sh [--seed N] [--nodes 3|5] [--duration SECONDS] [--faults LIST] ...
#
# Needs root (namespaces, iptables). `tools/faults.sh --help` lists every flag and fault.
# Exit status: 0 every check passed; 1 a check failed (the run directory is kept and the
# replay command printed); 2 usage or set-up error.
set -euo pipefail
export LC_ALL=C

seed=""                     # --seed: every random choice (default: from the clock)
nodes=3                     # --nodes: 3 or 5
duration_seconds=60         # --duration: faults keep coming for this long
faults="isolate,split,oneway,loss,kill,pause,torn,clock"  # --faults: kinds drawn from
fault_seconds_min=2         # --fault-seconds-min: shortest fault (> an election timeout)
fault_seconds_max=6         # --fault-seconds-max: longest fault
heal_seconds=6              # --heal-seconds: healthy time after each heal
overlap_percent=35          # --overlap-percent: chance a second fault overlaps the first
loss_percent=30             # --loss-percent: packet loss of the loss fault
clock_offset_ms=100         # --clock-offset-ms: largest clock step of the clock fault; kept
                            # under the slack the client gives a range across groups (its
                            # --range-slack-ms, 150), since revisions follow real time only
                            # up to the clocks' offset
recovery_bound_ms=5000      # --recovery-bound-ms: every group writes again within this
groups=8                    # --groups
shards=1                    # --shards
keys=16                     # --keys: the key set every client works on
cli_timeout="2s"            # --cli-timeout: the CLI client's --timeout
sdk_timeout_ms=3000         # --sdk-timeout-ms: the SDK clients' request timeout
sdk_rate=200                # --sdk-rate: operations per second of each SDK client process
converge_seconds=60         # --converge-seconds: bound on catching up after the run
keep_run_dir=0              # --keep: keep the run directory when the run passes
lock_wait_seconds=0         # --lock-wait: wait this long for another fault run to end
binary=""                   # --binary: corekv executable
client_binary=""            # --client-binary: faults_client executable

readonly namespace_prefix="ckf"
readonly bridge="ckfbr0"
readonly subnet_prefix="10.78.0"
readonly client_address="${subnet_prefix}.254"
readonly client_port=7379
readonly peer_port=7380
readonly lock_file="/run/lock/corekv-faults.lock"
readonly all_kinds="isolate split oneway loss kill pause torn clock"

usage() {
    cat <<EOF
Usage: tools/faults.sh [options]

Faults (--faults, comma-separated; each cycle draws one, sometimes a second overlapping):
  isolate  every packet in and out of the node leading most groups dropped (clients too)
  split    a minority (1 of 3, 2 of 5) cut from the majority; clients reach both sides
  oneway   node I cannot send to node J (J's packets still reach I)
  loss     ${loss_percent}% random packet loss in and out of one node
  kill     kill -9 of a node (half the time the busiest leader); restarted at the heal
  pause    SIGSTOP of a node (half the time the busiest leader); SIGCONT at the heal
  torn     kill -9, then a torn batch (garbage after the last record of its newest WAL
           segment), restarted at the heal: recovery must cut the tail and lose nothing
  clock    kill -9, restarted with its wall clock stepped by up to ${clock_offset_ms} ms either
           way (libfaketime, realtime only); restarted with the true clock at the heal
Not offered: packet delay (this kernel has no netem), a disk whose fsync fails (the
kernel has no device-mapper: /dev/mapper/control is missing), membership changes (not
built yet).

Options (defaults in brackets):
  --seed N                 [from the clock]       --nodes 3|5 [${nodes}]
  --duration S             [${duration_seconds}]  --faults LIST [${faults}]
  --fault-seconds-min S    [${fault_seconds_min}] --fault-seconds-max S [${fault_seconds_max}]
  --heal-seconds S         [${heal_seconds}]      --overlap-percent P [${overlap_percent}]
  --loss-percent P         [${loss_percent}]      --clock-offset-ms MS [${clock_offset_ms}]
  --recovery-bound-ms MS   [${recovery_bound_ms}] --converge-seconds S [${converge_seconds}]
  --groups N [${groups}]   --shards N [${shards}] --keys N [${keys}]
  --cli-timeout D [${cli_timeout}]  --sdk-timeout-ms MS [${sdk_timeout_ms}]
  --sdk-rate N             operations per second of each SDK client [${sdk_rate}]
  --binary PATH            [target/release/corekv]
  --client-binary PATH     [target/release/examples/faults_client]
  --keep                   keep the run directory when the run passes
  --lock-wait S            wait for another fault run to end [0: fail at once]
EOF
}

die_usage() { echo "faults: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --keep) keep_run_dir=1; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || die_usage "$1 needs a value"
    case "$1" in
        --seed) seed="$2" ;;
        --nodes) nodes="$2" ;;
        --duration) duration_seconds="$2" ;;
        --faults) faults="$2" ;;
        --fault-seconds-min) fault_seconds_min="$2" ;;
        --fault-seconds-max) fault_seconds_max="$2" ;;
        --heal-seconds) heal_seconds="$2" ;;
        --overlap-percent) overlap_percent="$2" ;;
        --loss-percent) loss_percent="$2" ;;
        --clock-offset-ms) clock_offset_ms="$2" ;;
        --recovery-bound-ms) recovery_bound_ms="$2" ;;
        --converge-seconds) converge_seconds="$2" ;;
        --groups) groups="$2" ;;
        --shards) shards="$2" ;;
        --keys) keys="$2" ;;
        --cli-timeout) cli_timeout="$2" ;;
        --sdk-timeout-ms) sdk_timeout_ms="$2" ;;
        --sdk-rate) sdk_rate="$2" ;;
        --binary) binary="$2" ;;
        --client-binary) client_binary="$2" ;;
        --lock-wait) lock_wait_seconds="$2" ;;
        *) die_usage "unknown flag $1 (see --help)" ;;
    esac
    shift 2
done

[[ -n "$seed" ]] || seed=$(( $(date +%s%N) % 1000000000 ))
for pair in "seed:$seed" "nodes:$nodes" "duration:$duration_seconds" "groups:$groups" \
    "shards:$shards" "keys:$keys" "fault-seconds-min:$fault_seconds_min" \
    "fault-seconds-max:$fault_seconds_max" "heal-seconds:$heal_seconds" \
    "overlap-percent:$overlap_percent" "loss-percent:$loss_percent" \
    "clock-offset-ms:$clock_offset_ms" "recovery-bound-ms:$recovery_bound_ms" \
    "converge-seconds:$converge_seconds" "lock-wait:$lock_wait_seconds" "sdk-timeout-ms:$sdk_timeout_ms" "sdk-rate:$sdk_rate"; do
    [[ "${pair#*:}" =~ ^[0-9]+$ ]] || die_usage "--${pair%%:*} must be a non-negative integer"
done
[[ $nodes -eq 3 || $nodes -eq 5 ]] || die_usage "--nodes must be 3 or 5"
(( fault_seconds_min >= 1 && fault_seconds_min <= fault_seconds_max )) ||
    die_usage "--fault-seconds-min must be in 1..=--fault-seconds-max"
IFS=',' read -r -a kinds <<<"$faults"
(( ${#kinds[@]} > 0 )) || die_usage "--faults names no fault"
for kind in "${kinds[@]}"; do
    [[ " $all_kinds " == *" $kind "* ]] || die_usage "unknown fault '$kind' ($all_kinds)"
done
[[ $EUID -eq 0 ]] || die_usage "needs root (network namespaces and iptables)"

repository="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/lib/processes.sh
source "$repository/tools/lib/processes.sh"
[[ -n "$binary" ]] || binary="$repository/target/release/corekv"
[[ -n "$client_binary" ]] || client_binary="$repository/target/release/examples/faults_client"

replay="tools/faults.sh --seed $seed --nodes $nodes --duration $duration_seconds --faults $faults"
replay+=" --fault-seconds-min $fault_seconds_min --fault-seconds-max $fault_seconds_max"
replay+=" --heal-seconds $heal_seconds --overlap-percent $overlap_percent --groups $groups"
replay+=" --shards $shards --keys $keys --sdk-rate $sdk_rate --clock-offset-ms $clock_offset_ms"

run_start_ns=$(date +%s%N)
log() {
    local elapsed_ms=$(( ($(date +%s%N) - run_start_ns) / 1000000 ))
    printf '[%s +%4d.%01ds] %s\n' "$(date +%T)" $(( elapsed_ms / 1000 )) $(( elapsed_ms / 100 % 10 )) "$*"
}

namespace_of() { echo "${namespace_prefix}$1"; }
address_of() { echo "${subnet_prefix}.$1"; }
endpoint_of() { echo "$(address_of "$1"):${client_port}"; }
in_namespace() { local node="$1"; shift; ip netns exec "$(namespace_of "$node")" "$@"; }
all_endpoints() {
    local node list=""
    for (( node = 1; node <= nodes; node++ )); do list+="${list:+,}$(endpoint_of "$node")"; done
    echo "$list"
}
# Every endpoint, starting at node $1.
rotated_endpoints() {
    local offset list=""
    for (( offset = 0; offset < nodes; offset++ )); do
        list+="${list:+,}$(endpoint_of $(( ($1 - 1 + offset) % nodes + 1 )))"
    done
    echo "$list"
}

run_dir=""
server_pids=()
client_pids=()
run_failed=1
cleaning=0

remove_network() {
    local node
    for (( node = 1; node <= 5; node++ )); do
        ip netns delete "$(namespace_of "$node")" 2>/dev/null || true
        ip link delete "$(namespace_of "$node")h" 2>/dev/null || true
    done
    ip link delete "$bridge" 2>/dev/null || true
}

cleanup() {
    local status=$?
    (( cleaning == 0 )) || return 0
    cleaning=1
    trap - EXIT INT TERM
    [[ -n "$run_dir" ]] && touch "$run_dir/stop" 2>/dev/null
    local pid node
    for pid in "${client_pids[@]}"; do stop_processes "$pid"; done
    for (( node = 1; node <= nodes; node++ )); do
        pid="${server_pids[$node]:-}"
        [[ -z "$pid" ]] || { kill -CONT "$pid" 2>/dev/null || true; stop_processes "$pid"; }
    done
    remove_network
    if [[ -n "$run_dir" ]]; then
        if (( run_failed == 0 && keep_run_dir == 0 )); then
            rm -rf "$run_dir"
        else
            echo "faults: run directory kept: $run_dir (histories, faults.tsv, node logs, data)"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'echo "faults: interrupted"; exit 130' INT TERM

fail_now() {
    echo "faults: FAIL: $*"
    local node
    for (( node = 1; node <= nodes; node++ )); do
        echo "----- last 30 lines of $run_dir/node-$node.log"
        tail -n 30 "$run_dir/node-$node.log" 2>/dev/null || true
    done
    echo "faults: seed $seed; replay with: sudo $replay"
    exit 1
}

# ---------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------
exec 9>"$lock_file"
flock -w "$lock_wait_seconds" 9 || die_usage "another fault run holds $lock_file"
command -v ip >/dev/null || apt_install iproute2
command -v iptables >/dev/null || apt_install iptables nftables
faketime_library=""
for candidate in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
    [[ -f "$candidate" ]] && { faketime_library="$candidate"; break; }
done
if [[ -z "$faketime_library" && " ${kinds[*]} " == *" clock "* ]]; then
    apt_install faketime 2>/dev/null || true
    for candidate in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        [[ -f "$candidate" ]] && { faketime_library="$candidate"; break; }
    done
fi
if [[ ! -x "$binary" || ! -x "$client_binary" ]]; then
    (cd "$repository" && cargo build --release --bin corekv --example faults_client)
fi

run_dir="$(mktemp -d /tmp/corekv-faults.XXXXXX)"
echo "$seed" >"$run_dir/seed"
echo "$replay" >"$run_dir/replay"
: >"$run_dir/faults.tsv"
RANDOM=$seed
log "seed $seed; $nodes nodes, $groups groups, $shards shard(s); run directory $run_dir"
[[ -n "$faketime_library" ]] || log "no libfaketime: the clock fault restarts without a clock step"

remove_network
ip link add "$bridge" type bridge
ip addr add "${client_address}/24" dev "$bridge"
ip link set "$bridge" up
for (( node = 1; node <= nodes; node++ )); do
    namespace="$(namespace_of "$node")"
    ip netns add "$namespace"
    ip link add "${namespace}h" type veth peer name eth0 netns "$namespace"
    ip link set "${namespace}h" master "$bridge" up
    ip -n "$namespace" addr add "$(address_of "$node")/24" dev eth0
    ip -n "$namespace" link set eth0 up
    ip -n "$namespace" link set lo up
done

initial_cluster=""
initial_clients=""
for (( node = 1; node <= nodes; node++ )); do
    initial_cluster+="${initial_cluster:+,}$node=$(address_of "$node"):$peer_port"
    initial_clients+="${initial_clients:+,}$node=$(endpoint_of "$node")"
done

# start_server NODE [CLOCK_OFFSET_SECONDS]
start_server() {
    local node="$1" offset="${2:-}" preload=()
    if [[ -n "$offset" && -n "$faketime_library" ]]; then
        preload=(env "LD_PRELOAD=$faketime_library" "FAKETIME=${offset}" FAKETIME_DONT_FAKE_MONOTONIC=1)
    fi
    echo "===== faults: start node $node at $(date +%T.%N) ${offset:+(clock ${offset}s)}" >>"$run_dir/node-$node.log"
    # `ip netns exec` and `env` replace themselves with the server: $! is its pid.
    ip netns exec "$(namespace_of "$node")" "${preload[@]}" "$binary" server \
        --node-id "$node" \
        --initial-cluster "$initial_cluster" \
        --initial-cluster-clients "$initial_clients" \
        --listen-client "$(endpoint_of "$node")" \
        --listen-peer "$(address_of "$node"):$peer_port" \
        --data-dir "$run_dir/data-$node" \
        --groups "$groups" --shards "$shards" \
        --wal-segment-bytes 4194304 \
        --snapshot-entries 200 \
        </dev/null >>"$run_dir/node-$node.log" 2>&1 &
    server_pids[node]=$!
}

kill_server() {
    local node="$1" pid="${server_pids[$1]:-}"
    [[ -n "$pid" ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    server_pids[node]=""
}

check_servers_alive() {
    local node pid code
    for (( node = 1; node <= nodes; node++ )); do
        pid="${server_pids[$node]:-}"
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            code=0
            wait "$pid" 2>/dev/null || code=$?
            fail_now "node $node (pid $pid) exited by itself with status $code"
        fi
    done
}

cluster_status() {
    "$binary" status --endpoints "$(all_endpoints)" --timeout 3s 2>&1 || true
}

# "converged", or the first reason the cluster is not settled: every node answers, every
# group has one agreed leader, every replica applied what it knows committed, at one
# commit index.
convergence_of() {
    awk -v nodes="$nodes" -v groups="$groups" '
        /^NODE / { section = "nodes"; next }
        /^GROUP / { section = "groups"; next }
        /^$/ { section = ""; next }
        section == "nodes" { if ($5 == "ok") ok++; else if (reason == "") reason = "node " $1 " does not answer"; next }
        section == "groups" && NF == 10 {
            g = $1; rows[g]++
            if ($4 == "-" && reason == "") reason = "group " g " has no leader on node " $2
            if (g in leader && leader[g] != $4 && reason == "") reason = "group " g ": nodes disagree on the leader"
            leader[g] = $4
            if ($3 == "leader") leaders[g]++
            if ($6 != $7 && reason == "") reason = "group " g " on node " $2 ": commit " $6 " applied " $7
            if (g in commit && commit[g] != $6 && reason == "") reason = "group " g ": commit differs across nodes"
            commit[g] = $6
        }
        END {
            if (reason == "" && ok != nodes) reason = ok + 0 " of " nodes " nodes answer"
            for (g = 0; g < groups && reason == ""; g++) {
                if (rows[g] != nodes) reason = "group " g " has " rows[g] + 0 " replicas reporting"
                else if (leaders[g] != 1) reason = "group " g " has " leaders[g] + 0 " leaders"
            }
            print (reason == "" ? "converged" : reason)
        }'
}

wait_converged() {
    local bound="$1" what="$2" deadline state text
    deadline=$(( $(date +%s) + bound ))
    while true; do
        text="$(cluster_status)"
        state="$(convergence_of <<<"$text")"
        [[ "$state" == "converged" ]] && return 0
        if (( $(date +%s) >= deadline )); then
            echo "$text"
            fail_now "$what: not converged after ${bound}s: $state"
        fi
        sleep 0.5
    done
}

# The node leading most groups, or a random one when status says nothing.
busiest_leader() {
    local found
    found="$(cluster_status | awk '
        /^GROUP / { section = 1; next }
        section && NF == 10 && $3 == "leader" { count[$2]++ }
        END { best = ""; for (n in count) if (best == "" || count[n] > count[best]) best = n; print best }')"
    if [[ "$found" =~ ^[0-9]+$ ]] && (( found >= 1 && found <= nodes )); then
        echo "$found"
    else
        echo $(( RANDOM % nodes + 1 ))
    fi
}

for (( node = 1; node <= nodes; node++ )); do start_server "$node"; done
wait_converged 60 "the first election"
log "cluster up: $(all_endpoints)"

# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------
start_sdk_client() {
    local id="$1" endpoints="$2"
    "$client_binary" run --endpoints "$endpoints" --client "$id" --seed "$seed" \
        --history "$run_dir/sdk-$id.history" --stop "$run_dir/stop" --keys "$keys" \
        --timeout-ms "$sdk_timeout_ms" --rate "$sdk_rate" >>"$run_dir/clients.log" 2>&1 &
    client_pids+=($!)
}

# The CLI client: one `corekv` process per operation, records in the history format.
cli_client() {
    local id=2000 n=0 key value invoke end code output outcome kind
    while [[ ! -f "$run_dir/stop" ]]; do
        n=$(( n + 1 ))
        key="f/$(printf '%03d' $(( RANDOM % keys )))"
        value="cli.$n"
        invoke=$(date +%s%N)
        code=0
        if (( RANDOM % 2 == 0 )); then
            kind=put
            output="$("$binary" put "$key" "$value" --endpoints "$(rotated_endpoints $(( n % nodes + 1 )))" \
                --timeout "$cli_timeout" 2>/dev/null)" || code=$?
        else
            kind=get
            output="$("$binary" get "$key" --endpoints "$(rotated_endpoints $(( n % nodes + 1 )))" \
                --timeout "$cli_timeout" 2>/dev/null)" || code=$?
        fi
        end=$(date +%s%N)
        case "$kind:$code" in
            put:0) outcome=ok; output="-" ;;
            get:0) outcome=ok ;;
            get:1) outcome=ok; output="-" ;;
            *:4) outcome=fail; output="-" ;;
            *) outcome=unknown; output="-" ;;
        esac
        [[ "$kind" == put ]] || value="-"
        printf '%s\t%s\t%s\t%s\t-\t%s\t%s\t%s\t%s\n' "$id" "$kind" "$key" "$value" \
            "$invoke" "$end" "$outcome" "$output" >>"$run_dir/cli.history"
    done
}

start_sdk_client 0 "$(all_endpoints)"
for (( node = 1; node <= nodes; node++ )); do start_sdk_client "$node" "$(endpoint_of "$node")"; done
cli_client &
client_pids+=($!)
sleep 2

# ---------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------
restart_at_heal=()       # nodes to start again at the heal
paused=()                # nodes to SIGCONT at the heal
active=()                # "kind start_ns detail" of the faults of this cycle

begin_fault() {
    local kind="$1" detail="$2"
    active+=("$kind $(date +%s%N) $detail")
    log "FAULT $kind: $detail"
}

drop_between() {
    in_namespace "$1" iptables -A INPUT -s "$(address_of "$2")" -j DROP
    in_namespace "$1" iptables -A OUTPUT -d "$(address_of "$2")" -j DROP
}

# A node no process fault holds already (kill, pause, torn, clock).
free_node() {
    local preferred="$1" node tries=0
    node="$preferred"
    while (( tries < 10 )); do
        if [[ -n "${server_pids[$node]:-}" && " ${paused[*]} " != *" $node "* ]]; then
            echo "$node"; return 0
        fi
        node=$(( RANDOM % nodes + 1 )); tries=$(( tries + 1 ))
    done
    echo ""
}

# The newest WAL segment with data of each shard of NODE gets a torn batch: random bytes
# right after its last written block, as a crash in the middle of writing a batch leaves.
tear_wal_tail() {
    python3 - "$run_dir/data-$1" "$RANDOM" <<'PYTHON'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
block = 4096
for shard in sorted(os.listdir(root)):
    wal = os.path.join(root, shard, "wal")
    if not os.path.isdir(wal):
        continue
    segments = sorted((name for name in os.listdir(wal) if name.endswith(".wal")),
                      key=lambda name: int(name.split(".")[0]))
    for name in reversed(segments):
        path = os.path.join(wal, name)
        with open(path, "r+b") as segment:
            data = segment.read()
            end = len(data.rstrip(b"\0"))
            if end == 0:
                continue
            end = (end + block - 1) // block * block
            if end >= len(data):
                break
            torn = bytes(rng.randrange(256) for _ in range(rng.randrange(64, block)))
            segment.seek(end)
            segment.write(torn)
            segment.flush()
            os.fsync(segment.fileno())
            print(f"{path}: {len(torn)} torn bytes at {end}")
        break
PYTHON
}

inject() {
    local kind="$1" node peer minority text
    case "$kind" in
        isolate)
            node=$(busiest_leader)
            in_namespace "$node" iptables -A INPUT -i eth0 -j DROP
            in_namespace "$node" iptables -A OUTPUT -o eth0 -j DROP
            begin_fault isolate "node $node (the busiest leader) isolated from everyone"
            ;;
        split)
            minority=$(( RANDOM % nodes + 1 ))
            text="$minority"
            if (( nodes == 5 )); then
                peer=$(( minority % nodes + 1 ))
                text="$minority,$peer"
            fi
            for node in ${text//,/ }; do
                for (( peer = 1; peer <= nodes; peer++ )); do
                    [[ ",$text," == *",$peer,"* ]] || drop_between "$node" "$peer"
                done
            done
            begin_fault split "minority {$text} cut from the majority"
            ;;
        oneway)
            node=$(( RANDOM % nodes + 1 ))
            peer=$(( (node + RANDOM % (nodes - 1)) % nodes + 1 ))
            in_namespace "$node" iptables -A OUTPUT -d "$(address_of "$peer")" -j DROP
            begin_fault oneway "node $node cannot send to node $peer (node $peer reaches node $node)"
            ;;
        loss)
            node=$(( RANDOM % nodes + 1 ))
            text="$(awk -v p="$loss_percent" 'BEGIN { printf "%.2f", p / 100 }')"
            in_namespace "$node" iptables -A INPUT -m statistic --mode random --probability "$text" -j DROP
            in_namespace "$node" iptables -A OUTPUT -m statistic --mode random --probability "$text" -j DROP
            begin_fault loss "${loss_percent}% packet loss in and out of node $node"
            ;;
        kill | pause | torn | clock)
            if (( RANDOM % 2 == 0 )); then node=$(busiest_leader); else node=$(( RANDOM % nodes + 1 )); fi
            node=$(free_node "$node")
            [[ -n "$node" ]] || return 0
            case "$kind" in
                kill)
                    kill_server "$node"; restart_at_heal+=("$node")
                    begin_fault kill "kill -9 of node $node"
                    ;;
                pause)
                    kill -STOP "${server_pids[$node]}"; paused+=("$node")
                    begin_fault pause "SIGSTOP of node $node"
                    ;;
                torn)
                    kill_server "$node"
                    text="$(tear_wal_tail "$node" | tr '\n' ' ')"
                    restart_at_heal+=("$node")
                    begin_fault torn "kill -9 of node $node, torn WAL tail: ${text:-no room for one}"
                    ;;
                clock)
                    kill_server "$node"
                    text=$(( RANDOM % (2 * clock_offset_ms + 1) - clock_offset_ms ))
                    text="$(awk -v ms="$text" 'BEGIN { printf "%+.3f", ms / 1000 }')"
                    start_server "$node" "$text"
                    restart_at_heal+=("clock:$node")
                    if [[ -n "$faketime_library" ]]; then
                        begin_fault clock "node $node restarted with its wall clock at ${text}s"
                    else
                        begin_fault clock "node $node restarted (no libfaketime: clock not stepped)"
                    fi
                    ;;
            esac
            ;;
    esac
}

heal() {
    local node entry kind start detail heal_ns
    for (( node = 1; node <= nodes; node++ )); do
        in_namespace "$node" iptables -F INPUT
        in_namespace "$node" iptables -F OUTPUT
    done
    for node in "${paused[@]}"; do kill -CONT "${server_pids[$node]}" 2>/dev/null || true; done
    heal_ns=$(date +%s%N)
    for entry in "${restart_at_heal[@]}"; do
        if [[ "$entry" == clock:* ]]; then
            node="${entry#clock:}"
            kill_server "$node"
        else
            node="$entry"
        fi
        start_server "$node"
    done
    for entry in "${active[@]}"; do
        read -r kind start detail <<<"$entry"
        printf '%s\t%s\t%s\t%s\n' "$kind" "$start" "$heal_ns" "$detail" >>"$run_dir/faults.tsv"
    done
    log "HEAL: network restored${paused[*]:+, resumed ${paused[*]}}${restart_at_heal[*]:+, restarted ${restart_at_heal[*]}}"
    restart_at_heal=()
    paused=()
    active=()
}

declare -A kind_count=()
end_at=$(( $(date +%s) + duration_seconds ))
while (( $(date +%s) < end_at )); do
    first="${kinds[$(( RANDOM % ${#kinds[@]} ))]}"
    length=$(( fault_seconds_min + RANDOM % (fault_seconds_max - fault_seconds_min + 1) ))
    inject "$first"
    kind_count[$first]=$(( ${kind_count[$first]:-0} + 1 ))
    if (( RANDOM % 100 < overlap_percent )); then
        sleep "$(awk -v l="$length" -v r="$RANDOM" 'BEGIN { printf "%.2f", l * (r % 50) / 100 }')"
        second="${kinds[$(( RANDOM % ${#kinds[@]} ))]}"
        inject "$second"
        kind_count[$second]=$(( ${kind_count[$second]:-0} + 1 ))
        sleep "$(awk -v l="$length" 'BEGIN { printf "%.2f", l / 2 }')"
    else
        sleep "$length"
    fi
    heal
    sleep "$heal_seconds"
    check_servers_alive
done

log "faults done: $(for kind in "${!kind_count[@]}"; do printf '%s=%s ' "$kind" "${kind_count[$kind]}"; done)"
wait_converged "$converge_seconds" "after the last heal"
touch "$run_dir/stop"
for pid in "${client_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
client_pids=()
log "clients stopped; checking"

if ! "$client_binary" check --dir "$run_dir" --endpoints "$(all_endpoints)" --keys "$keys" \
    --groups "$groups" --recovery-bound-ms "$recovery_bound_ms" | tee "$run_dir/check.txt"; then
    fail_now "the checks failed (see above and $run_dir/check.txt)"
fi
for (( node = 1; node <= nodes; node++ )); do
    if grep -q 'panicked' "$run_dir/node-$node.log"; then
        fail_now "node $node panicked (see $run_dir/node-$node.log)"
    fi
done
check_servers_alive
run_failed=0
log "PASS: seed $seed, $(wc -l < "$run_dir/faults.tsv") faults"
