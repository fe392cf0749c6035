#!/usr/bin/env bash
# The second command of the README (and what CI runs): check the formatting,
# then build and pass the whole test suite — the normal build, the
# install/find_package consumer, then the ASan+UBSan and TSan builds of the suite.
#   ./scripts/test.sh            everything
#   ./scripts/test.sh --quick    the normal build only
# Sanitizer runs use smaller crash-test budgets (AMBER_CRASH_ITERATIONS) to fit CI.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs=$(nproc)
step() { printf '\n=== %s\n' "$*"; }
# ctest, and on failure the failing tests' assertion messages again as the last
# lines printed: CI keeps only the tail of the output, and with tests running in
# parallel a failure's own block can scroll out of it.
run_ctest() {
  local dir=$1
  shift
  if ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"; then return 0; fi
  printf '\n=== failure messages (from %s/Testing/Temporary/LastTest.log)\n' "$dir"
  grep -E -A12 'Failure$|^\[  FAILED  \]|ERROR: (Address|Thread|Undefined|Leak)Sanitizer|runtime error:' \
    "$dir/Testing/Temporary/LastTest.log" | cut -c1-400 | head -150 || true
  return 1
}

step "formatting (.clang-format, clang-format 14)"
# Version 14 exactly (Debian 12's): other versions lay out some constructs
# differently. Outside a git checkout there is no file list to check.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z '*.cc' '*.h' | xargs -0 clang-format-14 --dry-run -Werror
  echo "formatted as .clang-format says"
else
  echo "not a git checkout: formatting not checked"
fi

step "build and test (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMBER_BUILD_TESTS=ON >/dev/null
cmake --build build -j "$jobs"
run_ctest build

step "install and build a find_package(amber) consumer"
./tests/install/run.sh build

[ "${1:-}" = "--quick" ] && exit 0

step "ASan+UBSan build and test"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAMBER_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j "$jobs" --target amber_tests crash_worker amber_cli
AMBER_CRASH_ITERATIONS=20 ASAN_OPTIONS=detect_leaks=1 run_ctest build-asan

step "TSan build and test"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMBER_SANITIZE=thread >/dev/null
cmake --build build-tsan -j "$jobs" --target amber_tests crash_worker amber_cli
AMBER_CRASH_ITERATIONS=10 TSAN_OPTIONS=halt_on_error=1 run_ctest build-tsan

# --- Fuzzing (issue 4): a bounded run of the store-format fuzzer -----------------
# libFuzzer + ASan + UBSan over open / recovery / verify of hostile store images
# (tests/fuzz/store_fuzzer.cc); scripts/soak.sh runs it for longer.
step "fuzz the store format for 45 s (clang, libFuzzer, ASan+UBSan)"
./scripts/fuzz.sh 45

step "peer benchmark suite, quick size (keeps it working; figures come from full runs)"
./scripts/bench-peers.sh --quick
