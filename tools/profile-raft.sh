#!/usr/bin/env bash
# Profiles the Raft core bench (benches/raft.rs) for one driver and batch size.
#
#   tools/profile-raft.sh [callgrind|perf] [lean|harness] [batch] [entries]
#
# callgrind (default): counts instructions inside `run_<driver>` only (repeatable from run
# to run, unlike time on this shared machine), prints instructions per entry and the
# functions with the most instructions, self and inclusive, inlined pieces summed up.
# perf: samples the same run on the software clock with DWARF call graphs (timing, so it
# also sees page faults and cache misses that instruction counts do not).
#
# Output files go to target/profile-raft/ (or $PROFILE_DIR).
set -euo pipefail

mode=${1:-callgrind}
driver=${2:-lean}
batch=${3:-256}
entries=${4:-200000}
# Must match WARMUP_TURNS in benches/raft.rs: the warm-up runs inside run_<driver> too.
warmup_turns=2000
# Functions listed in each table.
top_functions=25

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=${PROFILE_DIR:-$root/target/profile-raft}
mkdir -p "$out"

case "$driver" in lean | harness) ;; *) echo "driver must be lean or harness" >&2; exit 2 ;; esac

executable=$(cd "$root" && cargo bench --bench raft --no-run 2>&1 |
    sed -n 's/.*Executable benches\/raft.rs (\(.*\))/\1/p')
if [ -z "$executable" ]; then
    echo "could not build or find the raft bench executable" >&2
    exit 1
fi
executable="$root/$executable"
arguments=(--driver "$driver" --batch "$batch" --entries "$entries")

# Folds callgrind_annotate's file:function lines into one line per function and prints
# the largest. Inlined code is reported under the file it came from, so self costs of one
# function are spread over several lines and add up ("sum"); an inclusive cost is repeated
# on each of them, so the largest is the function's ("max"). Frames that hold the whole
# run (main and what calls it) are left out.
by_function() {
    awk -v fold="$1" '/PROGRAM TOTALS/ { whole = $1; gsub(",", "", whole); whole += 0 }
         /file:function/ { on = 1; next }
         on && $1 ~ /^[0-9,]+$/ {
             cost = $1; gsub(",", "", cost); cost += 0
             name = $0; sub(/^[^:]*:/, "", name); sub(/ \[.*$/, "", name)
             if (fold == "sum") total[name] += cost
             else if (cost > total[name]) total[name] = cost
         }
         END { for (name in total) if (total[name] < whole) printf "%15d  %s\n", total[name], name }' |
        sort -rn | head -n "$top_functions"
}

case "$mode" in
callgrind)
    command -v valgrind >/dev/null || { echo "install valgrind (apt-get install -y valgrind)" >&2; exit 1; }
    data="$out/callgrind.$driver.$batch.out"
    valgrind --tool=callgrind --toggle-collect="raft::run_$driver" \
        --callgrind-out-file="$data" "$executable" "${arguments[@]}" >"$out/bench.txt" 2>"$out/valgrind.txt"
    total=$(sed -n 's/^summary: *//p' "$data")
    processed=$((warmup_turns * batch + entries))
    echo "driver $driver, batch $batch: $total instructions in run_$driver for ~$processed entries" \
        "(warm-up included): $((total / processed)) instructions per entry"
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
    data="$out/perf.$driver.$batch.data"
    perf record -F 2000 --call-graph dwarf -o "$data" "$executable" "${arguments[@]}" \
        >"$out/bench.txt" 2>"$out/perf-record.txt"
    echo "self samples, by symbol (whole process, floor included):"
    perf report -i "$data" --no-children --stdio --sort=symbol 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -n "$top_functions"
    echo
    echo "data: $data (open with perf report -i)"
    ;;
*)
    echo "mode must be callgrind or perf" >&2
    exit 2
    ;;
esac
