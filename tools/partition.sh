#!/usr/bin/env bash
# The network-fault run: a 3-node corekv cluster in network namespaces on a bridge, one
# writer and one reader driving the `corekv` CLI through the whole run, and real faults
# injected one after another (isolate the busiest leader, cut one link, a minority/majority
# split, packet loss on one node, kill -9 during a partition). After the last heal it waits
# for every group to converge and checks every recorded outcome against every replica.
#
#   sudo tools/partition.sh [--seed N] [--rounds N] [--duration SECONDS] ...
#
# Needs root (namespaces, iptables). `tools/partition.sh --help` lists every flag.
# Exit status: 0 every check passed; 1 a consistency or availability check failed;
# 2 usage or set-up error.
set -euo pipefail
export LC_ALL=C

# ---------------------------------------------------------------------------------------
# Every bound and duration of the run; each has a flag (see usage).
# ---------------------------------------------------------------------------------------
seed=""                          # --seed: random choices (default: from the clock)
rounds=1                         # --rounds: times the whole fault schedule runs
duration_seconds=0               # --duration: keep adding rounds until this much has run
faults="isolate,cut,split,loss,kill"  # --faults: which faults a round injects, in order
fault_seconds=8                  # --fault-seconds: how long each fault lasts
heal_seconds=6                   # --heal-seconds: healthy time after each fault
warmup_seconds=3                 # --warmup-seconds: load before the first fault
kill_delay_seconds=3             # --kill-delay-seconds: into the partition before kill -9
restart_delay_seconds=2          # --restart-delay-seconds: after the heal before restart
loss_percent=30                  # --loss-percent: packet loss of the loss fault
operation_timeout="5s"           # --op-timeout: the CLI's --timeout for each put and get
read_pause_seconds=0.02          # --read-pause: between two reads of the reader
startup_seconds=30               # --startup-seconds: bound on the cluster's first election
converge_seconds=60              # --converge-seconds: bound on catching up after the run
verify_timeout="10s"             # --verify-timeout: the CLI's --timeout for final reads
verify_gets_per_node=600         # --verify-gets: serializable gets per node (0: every key)
groups=8                         # --groups: Raft groups of the cluster
shards=1                         # --shards: shards per node
snapshot_entries=100             # --snapshot-entries: applied entries between snapshots,
                                 # small so that a node that falls behind is caught up
                                 # from a snapshot, not only from the log
log_tail_lines=40                # --log-lines: lines of each node log printed on failure
keep_run_dir=0                   # --keep: keep data and logs even when the run passes
binary=""                        # --binary: corekv executable (default: target/release)

# Names and addresses. Fixed so that a crashed run's leftovers can be found and removed.
readonly node_count=3
readonly namespace_prefix="ckv"
readonly bridge="ckvbr0"
readonly subnet_prefix="10.77.0"
readonly client_address="${subnet_prefix}.254"
readonly client_port=7379
readonly peer_port=7380
readonly lock_file="/run/lock/corekv-partition.lock"
readonly status_timeout="3s"
readonly server_stop_seconds=5

usage() {
    cat <<EOF
Usage: tools/partition.sh [options]

Runs a 3-node corekv cluster in network namespaces ${namespace_prefix}1..${namespace_prefix}3
(${subnet_prefix}.1-3 on bridge ${bridge}, the client at ${client_address}), writes distinct
keys through the whole run while faults come and go, then checks every outcome against
every replica. Needs root.

Faults (--faults, comma-separated, in this order by default):
  isolate  ip link set down on the node that leads most groups (clients lose it too)
  cut      iptables DROP of the link between two nodes, both directions
  split    one node cut from both others (clients still reach both sides)
  loss     ${loss_percent}% random packet loss in and out of one node
  kill     a split, then kill -9 of a majority-side node; restarted after the heal

Options (defaults in brackets):
  --seed N                 seed of the random choices [from the clock]
  --rounds N               times the fault schedule runs [${rounds}]
  --duration SECONDS       add rounds until this much time has run [${duration_seconds}]
  --faults LIST            faults of one round [${faults}]
  --fault-seconds S        length of each fault [${fault_seconds}]
  --heal-seconds S         healthy time after each fault [${heal_seconds}]
  --warmup-seconds S       load before the first fault [${warmup_seconds}]
  --kill-delay-seconds S   time into the partition before kill -9 [${kill_delay_seconds}]
  --restart-delay-seconds S time after the heal before the restart [${restart_delay_seconds}]
  --loss-percent P         packet loss of the loss fault [${loss_percent}]
  --op-timeout D           CLI --timeout of each put and get [${operation_timeout}]
  --read-pause S           pause between two reads [${read_pause_seconds}]
  --startup-seconds S      bound on the first election [${startup_seconds}]
  --converge-seconds S     bound on catching up after the run [${converge_seconds}]
  --verify-timeout D       CLI --timeout of the final reads [${verify_timeout}]
  --verify-gets N          serializable gets per node, 0 for every key [${verify_gets_per_node}]
  --groups N               Raft groups [${groups}]
  --shards N               shards per node [${shards}]
  --snapshot-entries N     applied entries between a group's snapshots [${snapshot_entries}]
  --log-lines N            node log lines printed on failure [${log_tail_lines}]
  --binary PATH            corekv executable [target/release/corekv, built if missing]
  --keep                   keep the run directory (data, logs, histories) on success
  -h, --help               this text

Exit status: 0 every check passed; 1 a check failed; 2 usage or set-up error.
EOF
}

die_usage() {
    echo "partition: $*" >&2
    echo "Run tools/partition.sh --help for the flags." >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    flag="$1"
    case "$flag" in
        -h | --help) usage; exit 0 ;;
        --keep) keep_run_dir=1; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || die_usage "$flag needs a value"
    value="$2"
    case "$flag" in
        --seed) seed="$value" ;;
        --rounds) rounds="$value" ;;
        --duration) duration_seconds="$value" ;;
        --faults) faults="$value" ;;
        --fault-seconds) fault_seconds="$value" ;;
        --heal-seconds) heal_seconds="$value" ;;
        --warmup-seconds) warmup_seconds="$value" ;;
        --kill-delay-seconds) kill_delay_seconds="$value" ;;
        --restart-delay-seconds) restart_delay_seconds="$value" ;;
        --loss-percent) loss_percent="$value" ;;
        --op-timeout) operation_timeout="$value" ;;
        --read-pause) read_pause_seconds="$value" ;;
        --startup-seconds) startup_seconds="$value" ;;
        --converge-seconds) converge_seconds="$value" ;;
        --verify-timeout) verify_timeout="$value" ;;
        --verify-gets) verify_gets_per_node="$value" ;;
        --groups) groups="$value" ;;
        --shards) shards="$value" ;;
        --snapshot-entries) snapshot_entries="$value" ;;
        --log-lines) log_tail_lines="$value" ;;
        --binary) binary="$value" ;;
        *) die_usage "unknown flag $flag" ;;
    esac
    shift 2
done

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_seconds() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
if [[ -z "$seed" ]]; then
    seed=$(( $(date +%s%N) % 1000000000 ))
fi
is_count "$seed" || die_usage "--seed must be a non-negative integer"
for pair in "rounds:$rounds" "duration:$duration_seconds" "groups:$groups" \
    "shards:$shards" "snapshot-entries:$snapshot_entries" "verify-gets:$verify_gets_per_node" "log-lines:$log_tail_lines" \
    "startup-seconds:$startup_seconds" "converge-seconds:$converge_seconds" \
    "loss-percent:$loss_percent"; do
    is_count "${pair#*:}" || die_usage "--${pair%%:*} must be a non-negative integer"
done
for pair in "fault-seconds:$fault_seconds" "heal-seconds:$heal_seconds" \
    "warmup-seconds:$warmup_seconds" "kill-delay-seconds:$kill_delay_seconds" \
    "restart-delay-seconds:$restart_delay_seconds" "read-pause:$read_pause_seconds"; do
    is_seconds "${pair#*:}" || die_usage "--${pair%%:*} must be a number of seconds"
done
(( rounds >= 1 )) || die_usage "--rounds must be at least 1"
(( groups >= 1 && shards >= 1 && snapshot_entries >= 1 )) ||
    die_usage "--groups, --shards and --snapshot-entries must be at least 1"
(( loss_percent <= 100 )) || die_usage "--loss-percent must be 0..100"
IFS=',' read -r -a fault_list <<<"$faults"
(( ${#fault_list[@]} > 0 )) || die_usage "--faults names no fault"
for fault in "${fault_list[@]}"; do
    case "$fault" in
        isolate | cut | split | loss | kill) ;;
        *) die_usage "unknown fault '$fault' (isolate, cut, split, loss, kill)" ;;
    esac
done
[[ $EUID -eq 0 ]] || die_usage "needs root (network namespaces and iptables)"

repository="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "$binary" ]]; then
    binary="$repository/target/release/corekv"
fi

# ---------------------------------------------------------------------------------------
# Output and bookkeeping
# ---------------------------------------------------------------------------------------
run_start_us=${EPOCHREALTIME/./}
now_us() { echo "${EPOCHREALTIME/./}"; }
log() {
    local elapsed_us=$(( ${EPOCHREALTIME/./} - run_start_us ))
    printf '[%s +%4d.%01ds] %s\n' "$(date +%T)" $(( elapsed_us / 1000000 )) \
        $(( elapsed_us / 100000 % 10 )) "$*"
}

run_dir=""
server_pids=()          # index: node id; empty when the node is not running
writer_pid=""
reader_pid=""
run_failed=1            # cleared only when every check passed
cleaning=0

namespace_of() { echo "${namespace_prefix}$1"; }
address_of() { echo "${subnet_prefix}.$1"; }
endpoint_of() { echo "$(address_of "$1"):${client_port}"; }
in_namespace() { local node="$1"; shift; ip netns exec "$(namespace_of "$node")" "$@"; }

all_endpoints() {
    local node list=""
    for (( node = 1; node <= node_count; node++ )); do
        list+="${list:+,}$(endpoint_of "$node")"
    done
    echo "$list"
}

# The endpoints starting at a different node each time, so that no single unreachable
# node is always the first one a fresh CLI process tries.
rotated_endpoints() {
    local first="$1" offset node list=""
    for (( offset = 0; offset < node_count; offset++ )); do
        node=$(( (first + offset) % node_count + 1 ))
        list+="${list:+,}$(endpoint_of "$node")"
    done
    echo "$list"
}

print_node_logs() {
    local node
    [[ -n "$run_dir" ]] || return 0
    for (( node = 1; node <= node_count; node++ )); do
        if [[ -f "$run_dir/node-$node.log" ]]; then
            echo "----- last $log_tail_lines lines of $run_dir/node-$node.log"
            tail -n "$log_tail_lines" "$run_dir/node-$node.log"
        fi
    done
}

stop_process() {
    local pid="$1" waited=0
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && (( waited < server_stop_seconds * 10 )); do
        sleep 0.1
        waited=$(( waited + 1 ))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

remove_network() {
    local node namespace
    for (( node = 1; node <= node_count; node++ )); do
        namespace="$(namespace_of "$node")"
        if ip netns list | grep -qw "$namespace"; then
            ip netns delete "$namespace" 2>/dev/null || true
        fi
        # Deleting a namespace does not always take the host end of its veth at once.
        if ip link show "${namespace}h" >/dev/null 2>&1; then
            ip link delete "${namespace}h" 2>/dev/null || true
        fi
    done
    if ip link show "$bridge" >/dev/null 2>&1; then
        ip link delete "$bridge" 2>/dev/null || true
    fi
}

cleanup() {
    local status=$?
    (( cleaning == 0 )) || return 0
    cleaning=1
    trap - EXIT INT TERM
    [[ -n "$run_dir" ]] && touch "$run_dir/stop" 2>/dev/null
    stop_process "$writer_pid"
    stop_process "$reader_pid"
    local node
    for (( node = 1; node <= node_count; node++ )); do
        stop_process "${server_pids[$node]:-}"
    done
    remove_network
    if [[ -n "$run_dir" ]]; then
        if (( run_failed == 0 && keep_run_dir == 0 )); then
            rm -rf "$run_dir"
        else
            echo "partition: run directory kept: $run_dir (data, node logs, histories)"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'echo "partition: interrupted"; exit 130' INT TERM

fail_now() {
    echo "partition: FAIL: $*"
    print_node_logs
    echo "partition: seed $seed; replay with: tools/partition.sh --seed $seed $replay_flags"
    exit 1
}

# ---------------------------------------------------------------------------------------
# Set-up: packages, binary, network, servers
# ---------------------------------------------------------------------------------------
exec 9>"$lock_file"
flock -n 9 || die_usage "another partition run holds $lock_file"

missing_packages=()
command -v ip >/dev/null || missing_packages+=(iproute2)
command -v iptables >/dev/null || missing_packages+=(iptables nftables)
if (( ${#missing_packages[@]} > 0 )); then
    echo "partition: installing ${missing_packages[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_packages[@]}" >/dev/null; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_packages[@]}" >/dev/null
    fi
fi
if [[ ! -x "$binary" ]]; then
    echo "partition: building $binary"
    (cd "$repository" && cargo build --release)
fi
[[ -x "$binary" ]] || die_usage "no corekv executable at $binary"

replay_flags="--rounds $rounds --duration $duration_seconds --faults $faults"
replay_flags+=" --fault-seconds $fault_seconds --heal-seconds $heal_seconds"
replay_flags+=" --groups $groups --shards $shards --snapshot-entries $snapshot_entries"

run_dir="$(mktemp -d /tmp/corekv-partition.XXXXXX)"
echo "phase 0" >"$run_dir/phase"
: >"$run_dir/ops.tsv"
: >"$run_dir/acked.tsv"
: >"$run_dir/reads.tsv"
: >"$run_dir/windows.tsv"
: >"$run_dir/availability.txt"
key_prefix="p${seed}/"
RANDOM=$seed

log "seed $seed; run directory $run_dir"
log "corekv $binary; $groups groups, $shards shard(s) per node, a snapshot every $snapshot_entries entries"

# Leftovers of a run that could not clean up (we hold the lock, so they are stale).
for (( node = 1; node <= node_count; node++ )); do
    if ip netns list | grep -qw "$(namespace_of "$node")"; then
        log "removing the stale namespace $(namespace_of "$node") of an earlier run"
    fi
done
remove_network

ip link add "$bridge" type bridge
ip addr add "${client_address}/24" dev "$bridge"
ip link set "$bridge" up
for (( node = 1; node <= node_count; node++ )); do
    namespace="$(namespace_of "$node")"
    ip netns add "$namespace"
    ip link add "${namespace}h" type veth peer name eth0 netns "$namespace"
    ip link set "${namespace}h" master "$bridge" up
    ip -n "$namespace" addr add "$(address_of "$node")/24" dev eth0
    ip -n "$namespace" link set eth0 up
    ip -n "$namespace" link set lo up
done
log "network: namespaces ${namespace_prefix}1..${namespace_prefix}${node_count} at ${subnet_prefix}.1-${node_count}, client at $client_address on $bridge"

initial_cluster=""
initial_clients=""
for (( node = 1; node <= node_count; node++ )); do
    initial_cluster+="${initial_cluster:+,}$node=$(address_of "$node"):$peer_port"
    initial_clients+="${initial_clients:+,}$node=$(endpoint_of "$node")"
done

start_server() {
    local node="$1"
    echo "===== partition: start node $node at $(date +%T.%N)" >>"$run_dir/node-$node.log"
    ip netns exec "$(namespace_of "$node")" "$binary" server \
        --node-id "$node" \
        --initial-cluster "$initial_cluster" \
        --initial-cluster-clients "$initial_clients" \
        --listen-client "$(endpoint_of "$node")" \
        --listen-peer "$(address_of "$node"):$peer_port" \
        --data-dir "$run_dir/data-$node" \
        --groups "$groups" \
        --shards "$shards" \
        --snapshot-entries "$snapshot_entries" \
        </dev/null >>"$run_dir/node-$node.log" 2>&1 &
    # `ip netns exec` replaces itself with the server, so this is the server's pid.
    server_pids[node]=$!
}

# Fails the run when a node that should be running has exited.
check_servers_alive() {
    local node
    for (( node = 1; node <= node_count; node++ )); do
        local pid="${server_pids[$node]:-}"
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            local exit_status=0
            wait "$pid" 2>/dev/null || exit_status=$?
            fail_now "node $node (pid $pid) exited by itself with status $exit_status"
        fi
    done
}

# ---------------------------------------------------------------------------------------
# Cluster state from `corekv status`
# ---------------------------------------------------------------------------------------
cluster_status() {
    "$binary" status --endpoints "$(all_endpoints)" --timeout "$status_timeout" 2>&1
}

# Prints "converged" or the first reason the cluster is not yet settled: every node
# answers, every group has one agreed leader on every node, and on every node every
# replica has applied everything it knows committed, at the same commit index.
convergence_of() {
    awk -v nodes="$node_count" -v groups="$groups" '
        /^NODE / { section = "nodes"; next }
        /^GROUP / { section = "groups"; next }
        /^$/ { section = ""; next }
        section == "nodes" {
            if ($5 == "ok") ok++; else if (reason == "") reason = "node " $1 " is " $5 " " $6 " " $7 " " $8
            next
        }
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
                else if (leaders[g] != 1) reason = "group " g " has " leaders[g] + 0 " replicas in the leader role"
            }
            print (reason == "" ? "converged" : reason)
        }'
}

# The node that leads most groups (ties: the lowest id); empty when status fails.
busiest_leader() {
    cluster_status | awk '
        /^GROUP / { section = 1; next }
        section && NF == 10 && $3 == "leader" { count[$2]++ }
        END {
            best = ""; for (n in count) if (best == "" || count[n] > count[best] || (count[n] == count[best] && n + 0 < best + 0)) best = n
            if (best != "") print best " " count[best]
        }'
}

# From a status, how many groups some answering node reports itself leader of, and how
# many groups each node leads: "covered 8 of 8 groups; leaders n1=3 n3=5".
leader_coverage() {
    awk -v groups="$groups" '
        /^GROUP / { section = 1; next }
        section && NF == 10 && $3 == "leader" { led[$1] = 1; count[$2]++ }
        END {
            covered = 0; for (g in led) covered++
            text = ""; for (n = 1; n <= 9; n++) if (n in count) text = text " n" n "=" count[n]
            printf "covered %d of %d groups; leaders%s\n", covered, groups, (text == "" ? " none" : text)
        }'
}

# Waits until convergence_of says converged, at most `bound` seconds; prints the last
# status on failure.
wait_converged() {
    local bound="$1" what="$2" deadline state status_text
    deadline=$(( $(now_us) + bound * 1000000 ))
    while true; do
        status_text="$(cluster_status || true)"
        state="$(convergence_of <<<"$status_text")"
        if [[ "$state" == "converged" ]]; then
            return 0
        fi
        if (( $(now_us) >= deadline )); then
            echo "$status_text"
            fail_now "$what: not converged after ${bound}s: $state"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------
# Windows: the run is cut into numbered windows (warm-up, each fault, each heal); every
# operation records the window it started and ended in.
# ---------------------------------------------------------------------------------------
window_index=0
window_start_us=$run_start_us
window_kind="warmup"
window_text="warm-up, no fault"

open_window() {
    local end_us
    end_us=$(now_us)
    printf '%s\t%s\t%s\t%s\t%s\n' "$window_index" "$window_kind" "$window_start_us" \
        "$end_us" "$window_text" >>"$run_dir/windows.tsv"
    window_index=$(( window_index + 1 ))
    window_kind="$1"
    window_text="$2"
    window_start_us=$end_us
    echo "phase $window_index" >"$run_dir/phase.next"
    mv -f "$run_dir/phase.next" "$run_dir/phase"
}

# ---------------------------------------------------------------------------------------
# Load: one writer of distinct keys, one reader of acknowledged keys
# ---------------------------------------------------------------------------------------
# ops.tsv: index key value exit start_window end_window start_us end_us
writer() {
    local index=0 key value status start_phase end_phase start_us end_us
    while [[ ! -e "$run_dir/stop" ]]; do
        index=$(( index + 1 ))
        printf -v key '%sk%07d' "$key_prefix" "$index"
        value="v${seed}-${index}-${RANDOM}"
        read -r _ start_phase <"$run_dir/phase"
        start_us=${EPOCHREALTIME/./}
        status=0
        "$binary" put "$key" "$value" --endpoints "$(rotated_endpoints "$index")" \
            --timeout "$operation_timeout" >/dev/null 2>"$run_dir/writer.err" || status=$?
        end_us=${EPOCHREALTIME/./}
        read -r _ end_phase <"$run_dir/phase"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$index" "$key" "$value" "$status" \
            "$start_phase" "$end_phase" "$start_us" "$end_us" >>"$run_dir/ops.tsv"
        if (( status == 0 )); then
            printf '%s\t%s\n' "$key" "$value" >>"$run_dir/acked.tsv"
        else
            printf 'put %s (window %s..%s) exit %s: %s\n' "$key" "$start_phase" "$end_phase" \
                "$status" "$(tr '\n' ' ' <"$run_dir/writer.err")" >>"$run_dir/writer-errors.log"
        fi
    done
}

# reads.tsv: key expected exit got start_window end_window. Alternates the newest
# acknowledged key (a read right after the write's acknowledgement must see it) with a
# random older one.
reader() {
    local reads=0 count pick line key expected got status start_phase end_phase
    RANDOM=$(( seed + 1 ))
    while [[ ! -e "$run_dir/stop" ]]; do
        count=$(wc -l <"$run_dir/acked.tsv")
        if (( count == 0 )); then
            sleep "$read_pause_seconds"
            continue
        fi
        reads=$(( reads + 1 ))
        if (( reads % 2 == 0 )); then
            pick=$count
        else
            pick=$(( (RANDOM * 32768 + RANDOM) % count + 1 ))
        fi
        line="$(sed -n "${pick}p" "$run_dir/acked.tsv")"
        key="${line%%$'\t'*}"
        expected="${line#*$'\t'}"
        read -r _ start_phase <"$run_dir/phase"
        status=0
        got="$("$binary" get "$key" --endpoints "$(rotated_endpoints "$reads")" \
            --timeout "$operation_timeout" 2>"$run_dir/reader.err")" || status=$?
        read -r _ end_phase <"$run_dir/phase"
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$expected" "$status" "$got" \
            "$start_phase" "$end_phase" >>"$run_dir/reads.tsv"
        if (( status != 0 )); then
            printf 'get %s (window %s..%s) exit %s: %s\n' "$key" "$start_phase" "$end_phase" \
                "$status" "$(tr '\n' ' ' <"$run_dir/reader.err")" >>"$run_dir/reader-errors.log"
        fi
        sleep "$read_pause_seconds"
    done
}

# ---------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------
random_node() { echo $(( RANDOM % node_count + 1 )); }
other_nodes() {
    local node
    for (( node = 1; node <= node_count; node++ )); do
        [[ $node -eq $1 ]] || echo "$node"
    done
}

drop_between() {
    local node="$1" peer="$2" peer_address
    peer_address="$(address_of "$peer")"
    in_namespace "$node" iptables -A INPUT -s "$peer_address" -j DROP
    in_namespace "$node" iptables -A OUTPUT -d "$peer_address" -j DROP
}

heal_all() {
    local node
    for (( node = 1; node <= node_count; node++ )); do
        in_namespace "$node" iptables -F INPUT
        in_namespace "$node" iptables -F OUTPUT
        ip -n "$(namespace_of "$node")" link set eth0 up
    done
}

faults_injected=()
isolation_windows=()

fault_isolate() {
    local found node groups_led
    found="$(busiest_leader)"
    if [[ -n "$found" ]]; then
        read -r node groups_led <<<"$found"
    else
        node=$(random_node)
        groups_led="?"
    fi
    open_window isolate "isolate node $node (leads $groups_led/$groups groups): link down"
    log "FAULT $window_index: $window_text"
    ip -n "$(namespace_of "$node")" link set eth0 down
    isolation_windows+=("$window_index")
    sleep "$fault_seconds"
}

fault_cut() {
    local node peer
    node=$(random_node)
    peer=$(( (node + RANDOM % (node_count - 1)) % node_count + 1 ))
    open_window cut "cut the link $node<->$peer (iptables DROP both ways in ${namespace_prefix}$node)"
    log "FAULT $window_index: $window_text"
    drop_between "$node" "$peer"
    sleep "$fault_seconds"
}

fault_split() {
    local node peer
    node=$(random_node)
    open_window split "split {$node} | {$(other_nodes "$node" | paste -sd,)} (clients reach both sides)"
    log "FAULT $window_index: $window_text"
    for peer in $(other_nodes "$node"); do
        drop_between "$node" "$peer"
    done
    sleep "$fault_seconds"
}

fault_loss() {
    local node probability
    node=$(random_node)
    probability="$(awk -v p="$loss_percent" 'BEGIN { printf "%.2f", p / 100 }')"
    open_window loss "${loss_percent}% packet loss in and out of node $node"
    log "FAULT $window_index: $window_text"
    in_namespace "$node" iptables -A INPUT -m statistic --mode random \
        --probability "$probability" -j DROP
    in_namespace "$node" iptables -A OUTPUT -m statistic --mode random \
        --probability "$probability" -j DROP
    sleep "$fault_seconds"
}

# A split, then kill -9 of a node on the majority side (the busiest leader there when
# status says one), which leaves no quorum until the heal; restarted after the heal, so
# for a while the cluster runs on the old minority node and the surviving majority node.
kill_target=""
fault_kill() {
    local minority peer victim candidate remaining_seconds
    minority=$(random_node)
    open_window kill "split {$minority} | {$(other_nodes "$minority" | paste -sd,)}, then kill -9 on the majority side"
    log "FAULT $window_index: $window_text"
    for peer in $(other_nodes "$minority"); do
        drop_between "$minority" "$peer"
    done
    sleep "$kill_delay_seconds"
    victim=""
    candidate="$(busiest_leader | awk '{ print $1 }')"
    if [[ -n "$candidate" && "$candidate" != "$minority" ]]; then
        victim=$candidate
    else
        mapfile -t majority < <(other_nodes "$minority")
        victim=${majority[$(( RANDOM % ${#majority[@]} ))]}
    fi
    log "FAULT $window_index: kill -9 node $victim (pid ${server_pids[$victim]})"
    kill -KILL "${server_pids[$victim]}"
    wait "${server_pids[$victim]}" 2>/dev/null || true
    server_pids[victim]=""
    kill_target=$victim
    window_text+=" (killed node $victim)"
    remaining_seconds="$(awk -v f="$fault_seconds" -v k="$kill_delay_seconds" \
        'BEGIN { r = f - k; printf "%.3f", (r > 0 ? r : 0) }')"
    sleep "$remaining_seconds"
}

# At the end of a fault: what the answering nodes say about leadership, kept in the run
# directory. During an isolation the isolated node cannot answer, so every group must
# show a leader among the others: the majority elected one within the fault.
record_fault_end() {
    local status_text coverage covered
    status_text="$(cluster_status || true)"
    echo "$status_text" >"$run_dir/status-window-$window_index.txt"
    coverage="$(leader_coverage <<<"$status_text")"
    log "FAULT $window_index: at its end, $coverage"
    if [[ "$window_kind" == "isolate" ]]; then
        covered="$(awk '{ print $2 }' <<<"$coverage")"
        if (( covered < groups )); then
            echo "window $window_index (isolation): after ${fault_seconds}s the majority leads only $covered of $groups groups (status in status-window-$window_index.txt)" \
                >>"$run_dir/availability.txt"
        fi
    fi
}

heal() {
    local fault_text="$window_text"
    record_fault_end
    open_window heal "heal after: $fault_text"
    heal_all
    log "HEAL $window_index: network restored"
    faults_injected+=("$fault_text")
    if [[ -n "$kill_target" ]]; then
        sleep "$restart_delay_seconds"
        start_server "$kill_target"
        log "HEAL $window_index: restarted node $kill_target (pid ${server_pids[$kill_target]})"
        window_text+="; restarted node $kill_target"
        kill_target=""
    fi
    sleep "$heal_seconds"
    check_servers_alive
    # Informational only: the run goes on, and the final check after the last heal waits
    # (bounded) for convergence and fails the run if it does not come.
    log "HEAL $window_index: end of heal window, cluster: $(cluster_status | convergence_of)"
}

# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
for (( node = 1; node <= node_count; node++ )); do
    start_server "$node"
done
log "started ${node_count} servers (pids ${server_pids[*]})"
sleep 0.5
check_servers_alive
wait_converged "$startup_seconds" "start-up"
log "every group has a leader: $(busiest_leader | awk '{ print "node " $1 " leads " $2 }') of $groups groups"

writer &
writer_pid=$!
reader &
reader_pid=$!
log "writer (pid $writer_pid) and reader (pid $reader_pid) running; keys ${key_prefix}k*"
sleep "$warmup_seconds"
check_servers_alive

round=0
while true; do
    round=$(( round + 1 ))
    log "round $round: ${faults}"
    for fault in "${fault_list[@]}"; do
        "fault_$fault"
        heal
    done
    elapsed_seconds=$(( ($(now_us) - run_start_us) / 1000000 ))
    if (( round >= rounds && elapsed_seconds >= duration_seconds )); then
        break
    fi
done

open_window final "after the last heal: writer stopped, catching up"
touch "$run_dir/stop"
wait "$writer_pid" 2>/dev/null || true
writer_pid=""
wait "$reader_pid" 2>/dev/null || true
reader_pid=""
log "writer and reader stopped; waiting for every group to converge (bound ${converge_seconds}s)"
check_servers_alive
wait_converged "$converge_seconds" "after the last heal"
log "converged: every group has a leader; commit == applied and equal on every node"
open_window verify "verification"

# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------
# A fresh CLI learns every member from the first node that answers and then picks among
# all of them, so a read "from node N" is made sure of by refusing the client's
# connections to the other nodes while it runs.
refuse_clients_except() {
    local only="$1" node action="$2"
    for (( node = 1; node <= node_count; node++ )); do
        [[ $node -eq $only ]] && continue
        in_namespace "$node" iptables "$action" INPUT -p tcp -s "$client_address" \
            --dport "$client_port" -j REJECT --reject-with tcp-reset
    done
}

# Keys whose point reads are checked on each node: every key with an open or failed
# outcome, and an even spread of the acknowledged ones (all of them with --verify-gets 0).
awk -F'\t' -v budget="$verify_gets_per_node" '
    $4 != 0 { print $2 "\t" $3 "\t" $4; next }
    { acked[++n] = $2 "\t" $3 "\t" $4 }
    END {
        stride = (budget == 0 || n <= budget) ? 1 : n / budget
        for (i = 1; i <= n; i += stride) print acked[int(i)]
    }' "$run_dir/ops.tsv" >"$run_dir/verify-keys.tsv"

verify_violations="$run_dir/violations.txt"
: >"$verify_violations"
point_reads=0
for (( node = 1; node <= node_count; node++ )); do
    refuse_clients_except "$node" -I
    endpoint="$(endpoint_of "$node")"
    scan_status=0
    "$binary" scan "$key_prefix" --endpoints "$endpoint" --timeout "$verify_timeout" \
        >"$run_dir/scan-$node.tsv" 2>"$run_dir/scan-$node.err" || scan_status=$?
    if (( scan_status != 0 )); then
        echo "scan of node $node failed (exit $scan_status): $(cat "$run_dir/scan-$node.err")" \
            >>"$verify_violations"
    fi
    # gets-N.tsv: key expected_value recorded_exit read_exit read_value
    : >"$run_dir/gets-$node.tsv"
    while IFS=$'\t' read -r key value recorded; do
        read_status=0
        got="$("$binary" get --serializable "$key" --endpoints "$endpoint" \
            --timeout "$verify_timeout" 2>>"$run_dir/gets-$node.err")" || read_status=$?
        printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$value" "$recorded" "$read_status" "$got" \
            >>"$run_dir/gets-$node.tsv"
        point_reads=$(( point_reads + 1 ))
    done <"$run_dir/verify-keys.tsv"
    refuse_clients_except "$node" -D
    log "node $node: scanned $(wc -l <"$run_dir/scan-$node.tsv") keys, $(wc -l <"$run_dir/gets-$node.tsv") serializable gets"
done

{
    # Every replica against the writer's history: an acknowledged key holds exactly its value,
    # a key that was not applied is absent, an unknown one is absent or holds its value, no
    # other key exists, and the replicas agree with each other.
    awk -F'\t' -v nodes="$node_count" -v out="$run_dir/verify-counts.txt" '
        FILENAME ~ /\/ops\.tsv$/ { value[$2] = $3; outcome[$2] = $4; next }
        FILENAME ~ /\/scan-[0-9]+\.tsv$/ {
            node = FILENAME; sub(/.*scan-/, "", node); sub(/\.tsv$/, "", node)
            seen[node, $1] = $2; present[node, $1] = 1
            if (!($1 in value)) print "node " node ": key " $1 " was never written (value " $2 ")"
            next
        }
        FILENAME ~ /\/gets-[0-9]+\.tsv$/ {
            node = FILENAME; sub(/.*gets-/, "", node); sub(/\.tsv$/, "", node)
            gets++
            if ($4 != 0 && $4 != 1) { print "node " node ": serializable get of " $1 " failed with exit " $4; next }
            if ($3 == 0 && ($4 != 0 || $5 != $2)) print "node " node ": acknowledged key " $1 " reads " ($4 == 1 ? "as absent" : "\"" $5 "\"") ", expected \"" $2 "\""
            if ($3 == 4 && $4 != 1) print "node " node ": not-applied key " $1 " is present with \"" $5 "\""
            if ($3 != 0 && $4 == 0 && $5 != $2) print "node " node ": key " $1 " holds \"" $5 "\", never written"
            # `in`, not a lookup: a lookup would create the element it looks for.
            if ($4 == 0 && !((node, $1) in present)) print "node " node ": key " $1 " found by get, missing from the scan"
            if ($4 == 1 && ((node, $1) in present)) print "node " node ": key " $1 " in the scan, absent for get"
            next
        }
        END {
            for (key in outcome) {
                for (node = 1; node <= nodes; node++) {
                    has = ((node, key) in present)
                    if (outcome[key] == 0) {
                        acked_checked++
                        if (!has) print "node " node ": acknowledged key " key " is missing"
                        else if (seen[node, key] != value[key]) print "node " node ": acknowledged key " key " holds \"" seen[node, key] "\", expected \"" value[key] "\""
                    } else if (outcome[key] == 4) {
                        not_applied_checked++
                        if (has) print "node " node ": not-applied key " key " is present with \"" seen[node, key] "\""
                    } else {
                        if (has && seen[node, key] != value[key]) print "node " node ": key " key " holds \"" seen[node, key] "\", never written"
                    }
                }
                if (outcome[key] != 0 && outcome[key] != 4) {
                    count = 0
                    for (node = 1; node <= nodes; node++) count += ((node, key) in present)
                    if (count == nodes) unknown_present++
                    else if (count == 0) unknown_absent++
                    else print "replicas disagree on " key ": present on " count " of " nodes " nodes"
                }
            }
            printf "acked_checked %d\nnot_applied_checked %d\nunknown_present %d\nunknown_absent %d\ngets %d\n", \
                acked_checked, not_applied_checked, unknown_present, unknown_absent, gets > out
        }' "$run_dir/ops.tsv" "$run_dir"/scan-*.tsv "$run_dir"/gets-*.tsv

    # The reader's history: every read of an acknowledged key found exactly its value.
    awk -F'\t' '
        $3 == 1 { print "read of acknowledged key " $1 " found nothing (windows " $5 ".." $6 ")" }
        $3 == 0 && $4 != $2 { print "read of acknowledged key " $1 " returned \"" $4 "\", expected \"" $2 "\"" }
        $3 != 0 && $3 != 1 && $3 != 4 { print "read of " $1 " ended with exit " $3 " (windows " $5 ".." $6 ")" }
    ' "$run_dir/reads.tsv"

    # Writes that ended in neither of the documented outcomes of an unavailable cluster.
    awk -F'\t' '$4 != 0 && $4 != 4 && $4 != 5 { print "put of " $2 " ended with exit " $4 " (windows " $5 ".." $6 ")" }' \
        "$run_dir/ops.tsv"

    # Availability: during each single-node isolation the majority led every group by the
    # end of the window and took writes that started and were acknowledged inside it.
    cat "$run_dir/availability.txt"
    for window in "${isolation_windows[@]}"; do
        inside=$(awk -F'\t' -v w="$window" '$4 == 0 && $5 == w && $6 == w' "$run_dir/ops.tsv" | wc -l)
        if (( inside == 0 )); then
            echo "window $window (isolation): the majority acknowledged no write started and ended inside it"
        fi
    done
} >>"$verify_violations"

# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
echo
echo "===== corekv partition run: seed $seed, $round round(s), $(( ($(now_us) - run_start_us) / 1000000 ))s"
echo "faults injected (${#faults_injected[@]}):"
for text in "${faults_injected[@]}"; do
    echo "  - $text"
done
echo
echo "per window: puts started in it by outcome (ack = exit 0, not applied = exit 4,"
echo "unknown = exit 5), acks started and ended inside it, linearizable reads started in it"
awk -F'\t' '
    FILENAME ~ /\/windows\.tsv$/ { kind[$1] = $2; duration[$1] = ($4 - $3) / 1e6; text[$1] = $5; last = $1; next }
    FILENAME ~ /\/ops\.tsv$/ {
        started[$5]++
        if ($4 == 0) ack[$5]++; else if ($4 == 4) na[$5]++; else if ($4 == 5) unk[$5]++; else other[$5]++
        if ($4 == 0 && $5 == $6) inside[$5]++
        next
    }
    FILENAME ~ /\/reads\.tsv$/ { reads[$5]++; if ($3 == 0) read_ok[$5]++; else if ($3 == 4) read_unavailable[$5]++; next }
    END {
        printf "%3s %-8s %6s %6s %6s %6s %6s %6s %7s %6s %6s\n", "#", "kind", "secs", "puts", "ack", "n/a", "unk", "other", "inside", "reads", "r-ok"
        for (w = 0; w <= last; w++) {
            printf "%3d %-8s %6.1f %6d %6d %6d %6d %6d %7d %6d %6d\n", w, kind[w], duration[w], started[w], ack[w], na[w], unk[w], other[w], inside[w], reads[w], read_ok[w]
            total_puts += started[w]; total_ack += ack[w]; total_na += na[w]; total_unk += unk[w]; total_other += other[w]; total_reads += reads[w]; total_read_ok += read_ok[w]
        }
        printf "%3s %-8s %6s %6d %6d %6d %6d %6d %7s %6d %6d\n", "", "total", "", total_puts, total_ack, total_na, total_unk, total_other, "", total_reads, total_read_ok
    }' "$run_dir/windows.tsv" "$run_dir/ops.tsv" "$run_dir/reads.tsv"
echo
while read -r name count; do
    declare "verify_$name=$count"
done <"$run_dir/verify-counts.txt"
echo "final checks on each of $node_count nodes (a scan of ${key_prefix} from each node alone,"
echo "plus serializable gets of $(wc -l <"$run_dir/verify-keys.tsv") keys per node):"
echo "  acknowledged key x node checks: ${verify_acked_checked:-0}"
echo "  not-applied key x node checks:  ${verify_not_applied_checked:-0}"
echo "  unknown outcome: present on every node ${verify_unknown_present:-0}, absent everywhere ${verify_unknown_absent:-0}"
echo "  serializable gets: ${verify_gets:-0}"
echo "  reads during the run: $(wc -l <"$run_dir/reads.tsv")"
echo "isolations (the majority must lead every group and acknowledge writes):"
for window in "${isolation_windows[@]}"; do
    inside=$(awk -F'\t' -v w="$window" '$4 == 0 && $5 == w && $6 == w' "$run_dir/ops.tsv" | wc -l)
    echo "  window $window: $inside write(s) started and acknowledged inside;" \
        "$(leader_coverage <"$run_dir/status-window-$window.txt")"
done

violation_count=$(wc -l <"$verify_violations")
if (( violation_count > 0 )); then
    echo
    echo "VIOLATIONS ($violation_count; first 50):"
    head -n 50 "$verify_violations"
    echo
    echo "RESULT: FAIL"
    fail_now "$violation_count violation(s); histories in $run_dir"
fi
echo
echo "RESULT: PASS (seed $seed)"
run_failed=0
