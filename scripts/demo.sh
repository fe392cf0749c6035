#!/usr/bin/env bash
# The first command of the README: install what is missing, build, run the demo.
#   ./scripts/demo.sh [STORE]        (default: ./demo.amber)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DAMBER_BUILD_TESTS=OFF >/dev/null
cmake --build build --target amber_demo amber_cli
store="${1:-demo.amber}"
echo
./build/bin/amber-demo "$store"
echo
echo "\$ build/bin/amber info $store"
./build/bin/amber info "$store"
