#!/usr/bin/env bash
# Builds qlty and runs the whole test suite (unit tests, link test, consumer projects, examples) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
build_dir=${QLTY_BUILD_DIR:-build}
ctest --test-dir "$build_dir" --output-on-failure
