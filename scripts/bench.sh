#!/usr/bin/env bash
# Runs one benchmark program with the Python original timed beside it in the same run: installs what is missing,
# configures the build folder with scripts/build.sh and builds only that program, puts PyPI's torch and qlty into
# the LibTorch 2.x build folder's virtual environment (scripts/python-env.sh) for benchmarks/python/peer.py, and
# runs the program with the remaining arguments. QLTY_LIBTORCH=pip runs the LibTorch 2.x build's program.
#   scripts/bench.sh bench_large_quilt --benchmark_filter=W4 --benchmark_repetitions=3
#   QLTY_BENCH_DIR=/dev/shm scripts/bench.sh bench_large_quilt   # files on another file system (default /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench.sh BENCHMARK [benchmark arguments]" >&2; exit 2; }
bench=$1
shift
if [ ! -f "benchmarks/$bench.cpp" ]; then
  echo "bench.sh: no benchmark \"$bench\"; the benchmarks are: $(cd benchmarks && ls bench_*.cpp | sed 's/\.cpp$//' | tr '\n' ' ')" >&2
  exit 2
fi
default_dir=build
[ "${QLTY_LIBTORCH:-debian}" = pip ] && default_dir=build-libtorch2
build_dir=${QLTY_BUILD_DIR:-$default_dir}
QLTY_BUILD_DIR=$build_dir QLTY_BUILD_TARGETS=$bench ./scripts/build.sh
QLTY_PEER_PYTHON=${QLTY_PEER_PYTHON:-$(./scripts/python-env.sh build-libtorch2 torch qlty)}
export QLTY_PEER_PYTHON
exec "$build_dir/benchmarks/$bench" "$@"
