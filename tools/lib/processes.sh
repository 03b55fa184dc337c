# Shell helpers of the bench and profile scripts (sourced, not run): installing what a
# script lacks, waiting for a cluster to list its pids, and stopping exactly the
# processes a script started.

# How long a stopped process may take after SIGTERM before it gets SIGKILL, in tenths
# of a second.
stop_wait_tenths_max=100

# apt_install PACKAGE...: installs the packages, updating the lists once if needed.
apt_install() {
    apt-get install -y "$@" >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y "$@" >/dev/null; }
}

# stop_processes PID...: SIGTERM to each (a corekv cluster launcher stops its nodes
# gracefully on it), then SIGKILL to any still running after the wait.
stop_processes() {
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        for _ in $(seq 1 "$stop_wait_tenths_max"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# wait_for_pids FILE COUNT SECONDS LOG: waits until FILE (a cluster.pids) lists COUNT
# pids; after SECONDS, prints LOG and fails.
wait_for_pids() {
    local file=$1 count=$2 deadline=$((SECONDS + $3)) log=$4
    until [ -f "$file" ] && [ "$(wc -l <"$file")" -ge "$count" ]; do
        if [ $SECONDS -ge $deadline ]; then
            cat "$log" >&2
            echo "no $count pids in $file after $3 s" >&2
            return 1
        fi
        sleep 0.2
    done
}
