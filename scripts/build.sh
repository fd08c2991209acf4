#!/usr/bin/env bash
# Configures and builds qlty (Release) with its tests, examples, benchmarks and program, after installing missing
# Debian packages. Against Debian's LibTorch 1.13 (CPU) in ${QLTY_BUILD_DIR:-build} by default; with
# QLTY_LIBTORCH=pip against PyPI's newest `torch` wheel (LibTorch 2.x with CUDA; QLTY_TORCH_SPEC=torch==X.Y pins
# it) in ${QLTY_BUILD_DIR:-build-libtorch2}, installed into a virtual environment in that folder. Either way the
# folder's virtual environment holds PyPI's zarr-python 3 and numpy for the interoperability tests
# (scripts/python-env.sh); on the pip leg also the Python original, qlty, for the peer tests, and the Python module
# qlty_cpp, built as a wheel (pip wheel ., python/) and installed there for its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
extra=()
case "${QLTY_LIBTORCH:-debian}" in
  debian)
    build_dir=${QLTY_BUILD_DIR:-build}
    extra=("-DQLTY_VENV_PYTHON=$(./scripts/python-env.sh "$build_dir")")
    ;;
  pip)
    build_dir=${QLTY_BUILD_DIR:-build-libtorch2}
    mapfile -t extra < <(./scripts/pip-libtorch.sh "$build_dir")
    # the Python original beside PyPI's torch, for the peer tests (tests/peer); fuzz/ builds against Debian's LibTorch
    python=$(./scripts/python-env.sh "$build_dir" torch qlty module)
    extra+=("-DQLTY_VENV_PYTHON=$python" -DQLTY_FUZZ_SMOKE=OFF)
    ;;
  *) echo "build.sh: QLTY_LIBTORCH must be debian or pip, got \"$QLTY_LIBTORCH\"" >&2; exit 2 ;;
esac
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DQLTY_BUILD_TESTS=ON -DQLTY_BUILD_EXAMPLES=ON \
  -DQLTY_BUILD_BENCHMARKS=ON -DQLTY_BUILD_TOOLS=ON "${extra[@]}" "$@"
# QLTY_BUILD_TARGETS: build only these targets (scripts/bench.sh builds one benchmark)
cmake --build "$build_dir" -j "$(nproc)" ${QLTY_BUILD_TARGETS:+--target $QLTY_BUILD_TARGETS}
if [ -n "${python:-}" ] && [ -z "${QLTY_BUILD_TARGETS:-}" ]; then
  # The wheel a user's `pip install .` builds, against the environment's torch (no build isolation: see
  # pyproject.toml), compiled incrementally in $build_dir/python-module.
  rm -rf "$build_dir/dist"
  "$python" -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w "$build_dir/dist" \
    --config-settings=build-dir="$build_dir/python-module" .
  "$python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$build_dir"/dist/qlty_cpp-*.whl
fi
