#!/usr/bin/env bash
# kv-update against amber and its peers (Redis, SQLite, LMDB, RocksDB, PMDK, a
# plain std::unordered_map): installs the peers from Debian packages where
# missing, builds bench/peers into build-peers/, runs every system on every
# workload, and regenerates the tables and plots. See docs/benchmarks.md.
#
#   scripts/bench-peers.sh            full: 1,000,000 keys / 2,000,000 updates, a
#                                     Zipf(0.99) variant and 10,000,000 keys;
#                                     writes bench/results/ and docs/benchmarks.md
#   scripts/bench-peers.sh --quick    small sizes (CI); writes build-peers/results-quick/
#
# Options (after --quick or alone):
#   --systems=a,b,...     subset of: amber amber-noverify map map-dump lmdb redis-rdb
#                         redis-aof rocksdb sqlite pmdk
#   --workloads=a,b,...   subset of: kv-update kv-update-zipf kv-update-large
#   --keys=N --updates=M  size of kv-update and kv-update-zipf
#   --large-keys=N        size of kv-update-large (updates: --updates)
#   --repeat=R            repetitions of each run (the JSON holds medians)
#   --max-update-seconds=S  stop a system's update phase after S seconds
#                         (slow peers; its updates/s stays valid)
#   --out=DIR             results directory (then docs/benchmarks.md is left alone)
#   --no-install          do not apt-get anything
#   --allow-missing-amber do not fail when kv-amber cannot be built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-peers"
quick=0
install=1
allow_missing_amber=0
systems="amber amber-noverify map map-dump lmdb redis-rdb redis-aof rocksdb sqlite pmdk"
workloads="kv-update kv-update-zipf kv-update-large"
keys="" updates="" large_keys="" repeat="" max_s="" out=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --full) quick=0 ;;
    --no-install) install=0 ;;
    --allow-missing-amber) allow_missing_amber=1 ;;
    --systems=*) systems="${arg#*=}"; systems="${systems//,/ }" ;;
    --workloads=*) workloads="${arg#*=}"; workloads="${workloads//,/ }" ;;
    --keys=*) keys="${arg#*=}" ;;
    --updates=*) updates="${arg#*=}" ;;
    --large-keys=*) large_keys="${arg#*=}" ;;
    --repeat=*) repeat="${arg#*=}" ;;
    --max-update-seconds=*) max_s="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-peers: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

if ((quick)); then
  : "${keys:=50000}" "${updates:=100000}" "${large_keys:=200000}" "${repeat:=1}"
  : "${max_s:=5}" "${out:=$BUILD/results-quick}"
  pmdk_max_s=2
  doc=""
else
  : "${keys:=1000000}" "${updates:=2000000}" "${large_keys:=10000000}" "${repeat:=1}"
  pmdk_max_s=20
  # The page's tables come from bench/results only: a run with --out=DIR (a
  # subset, an experiment) writes its tables to DIR and leaves the page alone.
  doc=""; [ -z "$out" ] && doc="$ROOT/docs/benchmarks.md"
  : "${max_s:=60}" "${out:=$ROOT/bench/results}"
fi

# --- 1. peers from Debian packages -----------------------------------------------
pkgs=(build-essential cmake ninja-build pkg-config libsqlite3-dev liblmdb-dev
      librocksdb-dev libpmemobj-dev redis-server python3-matplotlib)
if ((install)); then
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "bench-peers: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

# --- 2. build -------------------------------------------------------------------------
start=$(date +%s)
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT/bench/peers" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DAMBER_SOURCE_DIR="$ROOT" >/dev/null
fi
ninja -C "$BUILD" peers
amber_built=1
if ! ninja -C "$BUILD" kv-amber; then
  amber_built=0
  echo "bench-peers: kv-amber does not build (the amber library above): amber is skipped" >&2
fi

# --- 3. run -------------------------------------------------------------------------------
program_for() {  # system -> "binary args"
  case "$1" in
    amber) echo "kv-amber" ;;
    amber-noverify) echo "kv-amber --mode=noverify" ;;
    map) echo "kv-map --mode=memory" ;;
    map-dump) echo "kv-map --mode=dump" ;;
    redis-rdb) echo "kv-redis --mode=rdb" ;;
    redis-aof) echo "kv-redis --mode=aof" ;;
    lmdb|rocksdb|sqlite|pmdk) echo "kv-$1" ;;
    *) echo "bench-peers: unknown system $1" >&2; return 1 ;;
  esac
}

logs="$BUILD/logs"  # one per run: the program's output and errors
mkdir -p "$out" "$logs"
data="$BUILD/data"
failures=()
passed=0
printf '%-15s %-16s %9s %9s %7s %7s %8s %8s %8s %9s %9s\n' system workload keys "updates/s" \
  "load s" "w.amp" "dev MB" "RSS MB" "disk MB" "recov ms" "stall ms"
for w in $workloads; do
  case "$w" in
    kv-update) wargs=(--keys="$keys" --updates="$updates" --dist=uniform) ;;
    kv-update-zipf) wargs=(--keys="$keys" --updates="$updates" --dist=zipf --theta=0.99) ;;
    kv-update-large) wargs=(--keys="$large_keys" --updates="$updates" --dist=uniform) ;;
    *) echo "bench-peers: unknown workload $w" >&2; exit 2 ;;
  esac
  for s in $systems; do
    if [[ "$s" == amber* ]] && ((amber_built == 0)); then
      failures+=("$s/$w (not built)")
      continue
    fi
    read -r -a prog <<<"$(program_for "$s")"
    cap="$max_s"; [ "$s" = pmdk ] && cap="$pmdk_max_s"
    log="$logs/$s-$w.log"
    if ! "$BUILD/bin/${prog[0]}" "${prog[@]:1}" --workload="$w" "${wargs[@]}" \
        --repeat="$repeat" --max-update-seconds="$cap" --data-dir="$data" \
        --results="$out" >"$log" 2>&1; then
      failures+=("$s/$w")
      echo "bench-peers: $s $w FAILED; last lines of $log:" >&2
      tail -5 "$log" >&2
    else
      tail -1 "$log"
      passed=$((passed + 1))
    fi
  done
done
rm -rf "$data"

# --- 4. tables and plots ---------------------------------------------------------------
# Debian's interpreter: python3-matplotlib is installed for it, not for a pyenv one.
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3
if [ -n "$doc" ]; then
  "$py" "$ROOT/bench/peers/plot.py" --results "$out" --doc "$doc" >/dev/null
  echo "bench-peers: tables and plots in $out and $doc"
else
  "$py" "$ROOT/bench/peers/plot.py" --results "$out" >/dev/null
  echo "bench-peers: tables and plots in $out (table.md, *.png)"
fi
echo "bench-peers: finished in $(($(date +%s) - start)) s"
# Each run checks its state before the crash and after recovery: count them as tests.
echo "bench-peers: ${passed} passed, ${#failures[@]} failed"
if ((${#failures[@]})); then
  if ((allow_missing_amber)); then
    real=()
    for f in "${failures[@]}"; do [[ "$f" == *"(not built)" ]] || real+=("$f"); done
    failures=("${real[@]+"${real[@]}"}")
  fi
  if ((${#failures[@]})); then
    echo "bench-peers: FAILED: ${failures[*]}" >&2
    exit 1
  fi
fi
