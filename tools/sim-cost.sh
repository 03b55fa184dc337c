#!/usr/bin/env bash
# Compares the simulator's cost with another revision's, in instructions (callgrind counts
# them repeatably on a busy machine, where seeds per second do not):
#
#   tools/sim-cost.sh REV [SEEDS]      # default 30 seeds, one thread
#
# Builds REV's simulator test in a temporary worktree (target under target/baseline/),
# runs both on the same seeds under valgrind --tool=callgrind, and prints both counts and
# their ratio (this tree / REV). Older revisions read the seed count from SIM_SEEDS, newer
# ones from COREKV_TEST_CASES; both are set.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: tools/sim-cost.sh REV [SEEDS]" >&2
    exit 2
fi
seeds=${2:-30}
root=$(git rev-parse --show-toplevel)
commit=$(git -C "$root" rev-parse --short=12 "$1^{commit}")
out="$root/target/baseline"
tree="$out/sim-tree-$commit"
mkdir -p "$out"
[ -d "$tree" ] || git -C "$root" worktree add --detach --quiet "$tree" "$commit"
binary_of() {
    # The test binary cargo reports for tests/sim.rs.
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo test --release --test sim --no-run 2>&1) |
        sed -n 's/.*Executable tests\/sim.rs (\(.*\))/\1/p'
}
old=$(binary_of "$tree" "$out/target")
new=$(binary_of "$root" "$root/target")
case "$old" in /*) ;; *) old="$tree/$old" ;; esac
case "$new" in /*) ;; *) new="$root/$new" ;; esac
count() {
    SIM_SEEDS=$seeds COREKV_TEST_CASES=$seeds SIM_THREADS=1 \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" simulate_ci_seeds 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
old_count=$(count "$old")
new_count=$(count "$new")
git -C "$root" worktree remove --force "$tree"
echo "sim instructions for $seeds seeds: $commit $old_count, this tree $new_count"
awk -v a="$new_count" -v b="$old_count" 'BEGIN { printf "ratio (this tree / %s): %.3f\n", "'"$commit"'", a / b }'
