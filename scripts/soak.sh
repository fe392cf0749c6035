#!/usr/bin/env bash
# soak.sh — long reliability runs of amber, beyond what CI's bounded samples cover:
#   1. kill -9 torture: every CrashTest variant (1 thread; 4 threads; 4 threads with
#      Commit() and a 1 MiB log so migration runs all the time) with
#      AMBER_CRASH_ITERATIONS kills each;
#   2. power-loss crash-state exploration (PowerLoss.*) with many seeds and
#      AMBER_POWERLOSS_ITERATIONS times the CI sample;
#   3. the I/O-error suite (IoError.*);
#   4. fuzzing of the store format (scripts/fuzz.sh) for a number of seconds.
# Prints a summary table (markdown) and, for any failure, its seed and the command
# that replays it. Exit status 0 if everything passed.
#
#   ./scripts/soak.sh
# Budgets (environment):
#   AMBER_SOAK_KILLS=1000            kills per crash-test variant (3 variants)
#   AMBER_SOAK_SEEDS=8               power-loss runs, each with a fresh seed
#   AMBER_SOAK_POWERLOSS_ITERATIONS=10
#   AMBER_SOAK_FUZZ_SECONDS=600
#   AMBER_SOAK_BUILD=build           build directory (RelWithDebInfo)
set -uo pipefail
cd "$(dirname "$0")/.."
kills=${AMBER_SOAK_KILLS:-1000}
seeds=${AMBER_SOAK_SEEDS:-8}
pl_iterations=${AMBER_SOAK_POWERLOSS_ITERATIONS:-10}
fuzz_secs=${AMBER_SOAK_FUZZ_SECONDS:-600}
build=${AMBER_SOAK_BUILD:-build}
logs="$build/soak"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMBER_BUILD_TESTS=ON >/dev/null || exit 1
cmake --build "$build" -j "$(nproc)" --target amber_tests crash_worker || exit 1
mkdir -p "$logs"
tests="$build/bin/amber_tests"
failures=()
rows=()
now() { date +%s; }
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

# --- 1. kill -9 ---------------------------------------------------------------
kills_total=0; durable_checked=0; commits_checked=0; kill_migrations=0; t0=$(now)
for variant in KillNineSingleThread KillNineFourThreads KillNineCommitsAndMigration; do
  log="$logs/crash-$variant.log"
  echo "soak: CrashTest.$variant, $kills kills"
  if ! AMBER_CRASH_ITERATIONS=$kills "$tests" --gtest_filter="CrashTest.$variant" >"$log" 2>&1; then
    seed=$(grep -o 'AMBER_CRASH_SEED=[0-9]*' "$log" | head -1)
    failures+=("CrashTest.$variant: $(grep -m1 -E 'iteration [0-9]+' "$log")
    replay: $seed AMBER_CRASH_ITERATIONS=$kills $tests --gtest_filter=CrashTest.$variant (log: $log)")
  fi
  read -r k d c m < <(sed -n 's/^crash test: \([0-9]*\) kills survived, \([0-9]*\) with a durable report checked, \([0-9]*\) chains with a returned Commit() checked, \([0-9]*\) migrations.*/\1 \2 \3 \4/p' "$log" | tail -1)
  kills_total=$((kills_total + ${k:-0})); durable_checked=$((durable_checked + ${d:-0}))
  commits_checked=$((commits_checked + ${c:-0})); kill_migrations=$((kill_migrations + ${m:-0}))
done
row "kill -9 during checkpoints, commits and migration" "$kills_total kills survived" \
    "$durable_checked Checkpoint() reports and $commits_checked Commit() returns checked after the kill; $kill_migrations migrations in the killed runs" "$(($(now) - t0)) s"

# --- 2. power loss ------------------------------------------------------------
states=0; pending=0; dropped=0; torn=0; garbled=0; refused=0; t0=$(now)
for i in $(seq 1 "$seeds"); do
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  log="$logs/powerloss-$seed.log"
  echo "soak: PowerLoss.* seed $seed ($i/$seeds), iterations $pl_iterations"
  if ! AMBER_POWERLOSS_SEED=$seed AMBER_POWERLOSS_ITERATIONS=$pl_iterations \
       "$tests" --gtest_filter='PowerLoss.*' >"$log" 2>&1; then
    failures+=("PowerLoss seed $seed: $(grep -m1 -B1 -A3 'crash state\|first crash' "$log" | tr '\n' ' ')
    $(grep -m1 'replay:' "$log" | sed 's/^ *//') (log: $log)")
  fi
  while read -r s p d t g r; do
    states=$((states + s)); pending=$((pending + p)); dropped=$((dropped + d))
    torn=$((torn + t)); garbled=$((garbled + g)); refused=$((refused + r))
  done < <(sed -n 's/.*: \([0-9]*\) crash states (\([0-9]*\) pending ops decided: \([0-9]*\) dropped, \([0-9]*\) torn, \([0-9]*\) garbled; \([0-9]*\) refused.*/\1 \2 \3 \4 \5 \6/p' "$log")
done
row "power loss (FaultInjectionEnv crash states)" "$states crash states recovered and checked" \
    "$seeds seeds; $pending unsynced operations decided ($dropped dropped, $torn torn, $garbled garbled); $refused refused as corrupt for a garbled superblock/table sector, 0 wrong data" "$(($(now) - t0)) s"

# --- 3. I/O errors ------------------------------------------------------------
t0=$(now); log="$logs/ioerror.log"
echo "soak: IoError.*"
if ! "$tests" --gtest_filter='IoError.*' >"$log" 2>&1; then
  failures+=("IoError: $(grep -m1 -A4 'Failure' "$log" | tr '\n' ' ') (log: $log)")
fi
faults=$(sed -n 's/^[a-z]*: \([0-9]*\) faults injected.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
fs=$(sed -n 's/^filesystem: //p' "$log"); fs=${fs:-"skipped (no mount)"}
row "ENOSPC / EIO injection" "$faults faults injected" \
    "every PWrite/DataSync/Sync/PRead of checkpoint, commit, migration, create, reopen; real full filesystem: $fs" "$(($(now) - t0)) s"

# --- 4. fuzzing ---------------------------------------------------------------
t0=$(now); log="$logs/fuzz.log"
echo "soak: fuzzing for ${fuzz_secs}s"
if ! ./scripts/fuzz.sh "$fuzz_secs" >"$log" 2>&1; then
  failures+=("fuzz: $(grep -E '^found:' "$log" | head -3 | tr '\n' ' ') (log: $log)")
fi
execs=$(sed -n 's/^fuzz: \([0-9]*\) executions.*/\1/p' "$log")
corpus=$(sed -n 's/.*corpus now \([0-9]*\) inputs/\1/p' "$log")
row "fuzzing open / recovery / verify (libFuzzer, ASan+UBSan)" "${execs:-0} executions" \
    "corpus ${corpus:-?} inputs" "$(($(now) - t0)) s"

echo
echo "| what | result | detail | time |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
if ((${#failures[@]})); then
  echo "FAILURES:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
echo "soak: no failure"
