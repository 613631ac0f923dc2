#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, without sanitizers (so the stable toolchain
# works), and exits non-zero if any target found a crash. Suitable for CI:
#
#     bash fuzz/run-all.sh 60
#
# Each target starts from its working corpus (fuzz/corpus/<target>, git-ignored, grows as
# it runs), the committed seeds (fuzz/seeds/<target>) and the committed crash inputs
# (fuzz/regressions/<target>), so a known crash that is not fixed yet fails at once.
# A new crash is written to fuzz/artifacts/<target>/.
set -euo pipefail

usage() { echo "usage: $0 SECONDS" >&2; exit 2; }
[[ $# -eq 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it" >&2
    cargo install cargo-fuzz --locked
fi

# One build of every target up front, so a compile error is reported as such.
cargo fuzz build -s none

failed=()
for target in $(cargo fuzz list); do
    dirs=("corpus/$target")
    mkdir -p "corpus/$target"
    [[ -d seeds/$target ]] && dirs+=("seeds/$target")
    [[ -d regressions/$target ]] && dirs+=("regressions/$target")
    echo "=== fuzzing $target for ${seconds}s (${dirs[*]})" >&2
    start=$SECONDS
    if cargo fuzz run -s none "$target" "${dirs[@]}" -- -max_total_time="$seconds"; then
        echo "=== $target: no crash in $((SECONDS - start))s" >&2
    else
        echo "=== $target: CRASH (see fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: every target ran ${seconds}s without a crash" >&2
