#!/usr/bin/env bash
# fuzz.sh — fuzzes amber's store format: builds the libFuzzer target
# tests/fuzz/store_fuzzer.cc with clang, ASan and UBSan (in build-fuzz/), writes its
# seed corpus (inputs over real stores the target builds at start-up), and runs it
# for SECONDS (default 60). Inputs it finds are kept in build-fuzz/fuzz/corpus and
# reused by the next run.
#   ./scripts/fuzz.sh [SECONDS]
# Exit status 0 if nothing was found; otherwise the crash file and the command that
# replays it are printed. Environment: AMBER_FUZZ_BUILD (build dir, default
# build-fuzz), AMBER_FUZZ_JOBS (parallel fuzzing processes, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
build=${AMBER_FUZZ_BUILD:-build-fuzz}
jobs=${AMBER_FUZZ_JOBS:-1}

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAMBER_BUILD_FUZZERS=ON -DAMBER_BUILD_TESTS=OFF -DAMBER_SANITIZE=address,undefined >/dev/null
cmake --build "$build" -j "$(nproc)" --target store_fuzzer

bin=$(cd "$build/bin" && pwd)/store_fuzzer
work=$(mkdir -p "$build/fuzz" && cd "$build/fuzz" && pwd)
mkdir -p "$work/corpus"
AMBER_FUZZ_WRITE_CORPUS="$work/corpus" "$bin" >/dev/null
log="$work/fuzz.log"
echo "fuzzing for ${secs}s with $(ls "$work/corpus" | wc -l) corpus inputs (log: $log)"
flags=(-max_total_time="$secs" -max_len=600 -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=512
       -print_final_stats=1 -artifact_prefix="$work/")
status=0
if [ "$jobs" -gt 1 ]; then
  (cd "$work" && "$bin" "${flags[@]}" -jobs="$jobs" -workers="$jobs" corpus) >"$log" 2>&1 || status=$?
  cat "$work"/fuzz-*.log >>"$log" 2>/dev/null || true
else
  (cd "$work" && "$bin" "${flags[@]}" corpus) >"$log" 2>&1 || status=$?
fi
execs=$(grep -h '^stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
rate=$(grep -h '^stat::average_exec_per_sec' "$log" | awk '{s += $2} END {print s + 0}')
echo "fuzz: $execs executions (${rate}/s), corpus now $(ls "$work/corpus" | wc -l) inputs"
if [ "$status" -ne 0 ]; then
  grep -hE 'ERROR|runtime error|SUMMARY|store_fuzzer:' "$log" | head -20 || true
  for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -e "$f" ] && echo "found: $f  (replay: $bin $f)"
  done
  echo "fuzz: FAILED (exit $status)"
  exit 1
fi
echo "fuzz: no crash, leak, timeout or out-of-memory found"
