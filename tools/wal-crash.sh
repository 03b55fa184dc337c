#!/usr/bin/env bash
# Runs the write-ahead log crash test longer than CI does: N kill -9 cycles (default 500)
# of a child process appending with group commit, each followed by recovery and a check
# that every acknowledged record survived and nothing else appeared.
#
#   tools/wal-crash.sh [N] [SEED]
#
# A failure prints the seed and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-500}"
export COREKV_WAL_CRASH_ITERATIONS="$iterations"
if [[ $# -ge 2 ]]; then
    export COREKV_TEST_SEED="$2"
fi
exec cargo test --release --test wal_crash -- --nocapture kill_nine_never_loses_acknowledged_records
