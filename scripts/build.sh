#!/usr/bin/env bash
# Configures and builds qlty (Release) in ${QLTY_BUILD_DIR:-build}, after installing missing Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
build_dir=${QLTY_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DQLTY_BUILD_TESTS=ON -DQLTY_BUILD_EXAMPLES=ON \
  -DQLTY_BUILD_BENCHMARKS=ON -DQLTY_BUILD_TOOLS=ON "$@"
cmake --build "$build_dir" -j "$(nproc)"
