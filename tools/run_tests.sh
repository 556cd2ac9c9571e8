#!/usr/bin/env bash
# Build and run every test of pyengine:
#   1. the C unit tests (ctest) with every invariant check on and -Werror,
#   2. the Python suite (unit, property-based, integration; the web view's
#      test in Debian's headless Chromium, installed when missing) against the
#      package installed in place (pip install -e), and mypy in strict mode
#      over pyengine/ (its settings are in pyproject.toml),
#   3. both again with AddressSanitizer + UndefinedBehaviorSanitizer, the C
#      tests under valgrind memcheck, the ring and engine-thread tests under
#      ThreadSanitizer, and the C core under libFuzzer for FUZZ_SECONDS (60).
# Installs what it needs first, at the versions pinned in
# tools/constraints.txt (a fresh machine has nothing of ours).
# Python: the active virtual environment, else build/venv-test (made here);
# PYTHON=path overrides both. SKIP_SANITIZERS=1 stops after 2.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
constraints=$PWD/tools/constraints.txt
step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

# A virtual environment of its own at $1 (never the system's packages):
# made when missing, made anew when it sees the system's site-packages.
own_venv() {
    if ! grep -qs '^include-system-site-packages = false' "$1/pyvenv.cfg"; then
        step "making the virtual environment $1"
        python3 -m venv --clear "$1"
    fi
}

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    PY=$VIRTUAL_ENV/bin/python
else
    own_venv build/venv-test
    PY=build/venv-test/bin/python
fi

# System tools (the browser of the Python tests, the sanitizer stage's),
# from the distribution when missing (as root or with password-less sudo);
# say what to install otherwise, and $1 too when it is not empty.
need_system_packages() {
    local hint=$1 missing=() pair
    shift
    for pair in "$@"; do
        # shellcheck disable=SC2206  # a command may need several packages
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=(${pair#*:})
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && $sudo true 2>/dev/null; then
        step "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null ||
            { $sudo apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
    else
        echo "missing: ${missing[*]} (install them${hint:+, or $hint})" >&2
        exit 1
    fi
}

# The build tools, then the package with the test extras (built by them, not
# in an isolated environment, so that their versions are the pinned ones),
# its C compiled with -Werror (a user's install is not).
# Extra pip arguments (a build directory, sanitizer flags) follow the python.
install_for_tests() {
    local py=$1
    shift
    "$py" -m pip install -q -c "$constraints" scikit-build-core cffi cmake ninja
    "$py" -m pip install -q -c "$constraints" --no-build-isolation -C cmake.define.PYENGINE_WERROR=ON "$@"
}

step "installing the build tools, the package (in place) and its test extras into $("$PY" -c 'import sys; print(sys.prefix)')"
install_for_tests "$PY" -e ".[test]"

step "C unit tests (ENG_DEBUG=3, -Werror)"
cmake -S . -B build/c-debug -G Ninja -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/c-debug
ctest --test-dir build/c-debug --output-on-failure

# tests/integration/test_webview.py drives Debian's headless Chromium
# through its driver; it fails, not skips, when they are missing.
need_system_packages "" chromium:chromium chromedriver:chromium-driver

# Two workers per CPU, each taking the next test as it finishes (pytest-xdist):
# the suite spends half its time waiting on servers, timeouts and leases, so
# one per CPU leaves the CPUs half idle.
parallel=(-n "$((2 * $(nproc)))" --dist worksteal)

step "Python tests"
"$PY" -m pytest -q "${parallel[@]}"

step "type check (mypy, strict, over pyengine/)"
"$PY" -m mypy

if [ "${SKIP_SANITIZERS:-0}" = 1 ]; then
    exit 0
fi

need_system_packages "run with SKIP_SANITIZERS=1" valgrind:valgrind "clang:clang libclang-rt-14-dev"

step "C unit tests under ASan + UBSan"
cmake -S . -B build/c-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DPYENGINE_SANITIZE=address,undefined >/dev/null
cmake --build build/c-asan
ctest --test-dir build/c-asan --output-on-failure

step "C unit tests under valgrind memcheck"
# The same Debug build; the long tests run a twentieth of their
# steps (valgrind is some 50 times slower). Thread stacks that glibc keeps
# for reuse show as "possibly lost": only definite leaks count. Valgrind runs
# one thread at a time; fair scheduling keeps a spinning thread from
# starving the one it waits for.
PYENGINE_TEST_SHRINK=20 timeout 900 valgrind --quiet --fair-sched=yes --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect build/c-debug/pyengine_tests >/dev/null

step "ring and engine-thread tests under TSan"
cmake -S . -B build/c-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DPYENGINE_SANITIZE=thread >/dev/null
cmake --build build/c-tsan
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build/c-tsan --output-on-failure -R 'c_ring|c_runner|c_replication|c_journal'

step "libFuzzer on the C core (${FUZZ_SECONDS:-60} s, ASan + UBSan, seed corpus csrc/fuzz/corpus)"
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash tools/fuzz_c.sh

step "Python tests under ASan + UBSan"
# An environment of its own with a regular (not in-place) install of the
# sanitized build, which also checks what a wheel holds. PYTHONSAFEPATH keeps
# the source tree, run from here, from shadowing that install.
venv=build/venv-asan
own_venv "$venv"
install_for_tests "$venv/bin/python" -C build-dir=build/py-asan \
    -C cmake.define.PYENGINE_SANITIZE=address,undefined -C cmake.define.PYENGINE_DEBUG=2 ".[test]"
# CPython frees little at exit, so leak detection would only report noise.
# libstdc++ is preloaded with ASan so that its __cxa_throw interceptor finds
# the real one (greenlet is C++ and throws).
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
PYENGINE_SANITIZED=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
PYENGINE_HYPOTHESIS_PROFILE=quick PYTHONSAFEPATH=1 \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${parallel[@]}"

step "every stage passed"
