#!/usr/bin/env bash
# Builds the release `corekv` binary of another revision, to load beside the current build
# in one bench run (same machine, same minute):
#
#   tools/build-baseline.sh REV            # prints the path of the binary it built
#   cargo bench --bench cluster -- --baseline-binary "$(tools/build-baseline.sh main~3)"
#
# The revision is checked out in a temporary worktree under target/baseline/ and built
# there with its own target directory (kept, so a second build of the same revision is
# quick). The binary is copied to target/baseline/corekv-<commit>.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: tools/build-baseline.sh REV" >&2
    exit 2
fi
root=$(git rev-parse --show-toplevel)
commit=$(git -C "$root" rev-parse --short=12 "$1^{commit}")
out="$root/target/baseline"
binary="$out/corekv-$commit"
if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi
mkdir -p "$out"
tree="$out/tree-$commit"
if [ ! -d "$tree" ]; then
    git -C "$root" worktree add --detach --quiet "$tree" "$commit"
fi
# Built apart from the current tree's target/ so that neither build undoes the other.
(cd "$tree" && CARGO_TARGET_DIR="$out/target" cargo build --release --quiet --bin corekv) >&2
cp "$out/target/release/corekv" "$binary"
git -C "$root" worktree remove --force "$tree"
echo "$binary"
