#!/usr/bin/env bash
# Time CI's build steps for one revision: cold (an empty target directory)
# and incremental (after a one-line change in a protocol core). The steps
# are the ones scripts/test.sh runs before its tests: clippy on every
# target, rustdoc, and building the test binaries.
#
# Usage: scripts/ci-time.sh REV [REV...]
# Prints one line per revision and phase: wall seconds and CPU seconds
# (user + system of every process). Run the revisions back to back on a
# quiet machine and compare the ratios. Each revision's crates are
# fetched before it is timed; its worktree and target go under
# $CI_TIME_DIR (default /tmp/natter-ci-time) and are removed after.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${CI_TIME_DIR:-/tmp/natter-ci-time}
mkdir -p "$work"

steps() {
    cargo clippy --offline --all-targets -q -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --offline --no-deps --lib -q
    cargo test --offline --no-run -q
}

# Runs the build steps in $1 and prints "wall cpu" in seconds.
timed() {
    local dir=$1 out
    out=$(mktemp)
    (cd "$dir" && /usr/bin/time -f "%e %U %S" -o "$out" bash -c "set -e; $(declare -f steps); steps" >/dev/null 2>"$out.err") || {
        cat "$out.err" >&2
        exit 1
    }
    awk '{ printf "%.0f %.0f\n", $1, $2 + $3 }' "$out"
    rm -f "$out" "$out.err"
}

for rev in "$@"; do
    sha=$(git -C "$repo" rev-parse --short "$rev")
    tree="$work/$sha"
    rm -rf "$tree"
    git -C "$repo" worktree add -q --detach "$tree" "$sha"
    export CARGO_TARGET_DIR="$tree/target"
    (cd "$tree" && cargo fetch -q)
    read -r wall cpu < <(timed "$tree")
    echo "$sha cold wall ${wall}s cpu ${cpu}s"
    # A one-line change in a core every other module depends on.
    echo "// ci-time" >>"$tree/src/wire/mod.rs"
    read -r wall cpu < <(timed "$tree")
    echo "$sha incremental wall ${wall}s cpu ${cpu}s"
    git -C "$repo" worktree remove --force "$tree"
done
