#!/usr/bin/env bash
# Profiles the linearizability checker on one fault-run history of benches/check.rs.
#
#   tools/profile-check.sh [callgrind|perf] [lost-write|stale-read|legal] [budget]
#
# callgrind (default): counts instructions inside `corekv::check::checker::check` only
# (repeatable from run to run, unlike time on this shared machine), prints instructions
# per search step and the functions with the most instructions, self and inclusive,
# inlined pieces summed up. perf: samples the same run with call graphs (`perf record
# -g`), for time spent on cache misses that instruction counts do not show.
#
# The default, stale-read at 1,000,000 steps, runs the search until its budget is spent,
# so instructions per step is the search's own cost per step. Output files go to
# target/profile-check/ (or $PROFILE_DIR).
set -euo pipefail

mode=${1:-callgrind}
variant=${2:-stale-read}
budget=${3:-1000000}
# Functions listed in each table.
top_functions=25

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=${PROFILE_DIR:-$root/target/profile-check}
mkdir -p "$out"

case "$variant" in lost-write | stale-read | legal) ;; *) echo "unknown variant: $variant" >&2; exit 2 ;; esac
case "$budget" in '' | *[!0-9]*) echo "not a number: $budget" >&2; exit 2 ;; esac

executable=$(cd "$root" && cargo bench --bench check --no-run 2>&1 |
    sed -n 's/.*Executable benches\/check.rs (\(.*\))/\1/p')
if [ -z "$executable" ]; then
    echo "could not build or find the check bench executable" >&2
    exit 1
fi
executable="$root/$executable"
arguments=(--only "$variant" --budgets "$budget" --rounds 1)

# One line per function, the largest first (see tools/callgrind-by-function.awk).
by_function() {
    awk -v fold="$1" -f "$root/tools/callgrind-by-function.awk" | sort -rn | head -n "$top_functions"
}

case "$mode" in
callgrind)
    command -v valgrind >/dev/null || { echo "install valgrind (apt-get install -y valgrind)" >&2; exit 1; }
    data="$out/callgrind.$variant.$budget.out"
    valgrind --tool=callgrind --toggle-collect='corekv::check::checker::check' \
        --callgrind-out-file="$data" "$executable" "${arguments[@]}" >"$out/bench.txt" 2>"$out/valgrind.txt"
    cat "$out/bench.txt"
    total=$(sed -n 's/^summary: *//p' "$data")
    echo
    # Only an Unknown verdict says how many steps were taken (all of them).
    if grep -q " Unknown " "$out/bench.txt"; then
        echo "$variant at $budget steps: $total instructions in check: $((total / budget)) per step"
    else
        echo "$variant at $budget steps: $total instructions in check (finished before the budget)"
    fi
    echo
    echo "self instructions, by function:"
    callgrind_annotate --auto=no "$data" | by_function sum
    echo
    echo "inclusive instructions, by function:"
    callgrind_annotate --auto=no --inclusive=yes "$data" | by_function max
    echo
    echo "data: $data (open with callgrind_annotate or kcachegrind)"
    ;;
perf)
    command -v perf >/dev/null || { echo "install perf (apt-get install -y linux-perf)" >&2; exit 1; }
    data="$out/perf.$variant.$budget.data"
    perf record -F 2000 -g -o "$data" "$executable" "${arguments[@]}" \
        >"$out/bench.txt" 2>"$out/perf-record.txt"
    cat "$out/bench.txt"
    echo
    echo "self samples, by symbol:"
    perf report -i "$data" --no-children --stdio --sort=symbol 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -n "$top_functions"
    echo
    echo "inclusive samples, by symbol:"
    perf report -i "$data" --children --stdio --sort=symbol 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -n "$top_functions"
    echo
    echo "data: $data (open with perf report -i)"
    ;;
*)
    echo "mode must be callgrind or perf" >&2
    exit 2
    ;;
esac
