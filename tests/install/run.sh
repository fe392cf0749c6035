#!/usr/bin/env bash
# Installs amber from BUILD_DIR into a temporary prefix and builds a tiny program
# against it with find_package(amber), then runs it: proves the installed headers,
# library and CMake package work for another project.
set -euo pipefail
build="${1:?usage: run.sh BUILD_DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$here/consumer" -B "$tmp/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/build" >/dev/null
"$tmp/build/consumer" "$tmp/store.amber"
"$tmp/build/consumer" "$tmp/store.amber"
test -x "$tmp/prefix/bin/amber" && "$tmp/prefix/bin/amber" info "$tmp/store.amber" >/dev/null
echo "install consumer: OK"
