#!/usr/bin/env bash
# Fuzz the C matching core with libFuzzer (csrc/fuzz/fuzz_engine.c).
#
# Configures build/fuzz with clang and -DPYENGINE_FUZZ=ON (ASan + UBSan,
# every assertion on), builds fuzz_engine, then fuzzes for FUZZ_SECONDS
# starting from the seed corpus csrc/fuzz/corpus. New inputs go to a
# temporary copy of the corpus, never into the repository; crashing inputs
# are kept in FUZZ_ARTIFACTS. Exits non-zero if the fuzzer finds a crash.
#
# Needs clang and its runtime libraries (Debian/Ubuntu:
# apt-get install -y clang libclang-rt-14-dev), cmake and ninja.
#
# Environment:
#   FUZZ_SECONDS    how long to fuzz (default 60)
#   FUZZ_JOBS       build parallelism (default 2)
#   FUZZ_ARTIFACTS  where crashing inputs go (default build/fuzz/artifacts)
#   CC              the compiler for a new build dir (default clang)
# Extra arguments are passed to the fuzzer, e.g. -max_len=8192.
# Reproduce a crash: build/fuzz/fuzz_engine <crash-file>
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/fuzz
seconds=${FUZZ_SECONDS:-60}
artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}

CC=${CC:-clang} cmake -S . -B "$build" -G Ninja -DPYENGINE_FUZZ=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYENGINE_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target fuzz_engine -j "${FUZZ_JOBS:-2}"

work=$(mktemp -d "${TMPDIR:-/tmp}/pyengine-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp csrc/fuzz/corpus/* "$work/"
mkdir -p "$artifacts"

status=0
"$build/fuzz_engine" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$@" "$work" || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz_c.sh: the fuzzer failed (exit $status); crashing input in $artifacts/" >&2
fi
exit "$status"
