#!/usr/bin/env bash
# Checks the layering of the headers, builds qlty and runs the whole test suite (unit tests, link test, consumer projects, examples) with ctest.
# QLTY_LIBTORCH=pip runs it against LibTorch 2.x from PyPI's `torch` wheel (see build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/check_layers.py             # the headers keep the layers of docs/architecture.md
./scripts/check_layers.py --self-test  # and the check sees a broken layer
./scripts/build.sh
default_dir=build
[ "${QLTY_LIBTORCH:-debian}" = pip ] && default_dir=build-libtorch2
build_dir=${QLTY_BUILD_DIR:-$default_dir}
# Two tests at a time per core: the consumer projects and qlty_without_mpi compile while the test programs run.
ctest --test-dir "$build_dir" --output-on-failure -j "$(( $(nproc) * 2 ))"
