#!/usr/bin/env bash
# The main job on built-in demo data: installs what it needs, builds only the `qlty` program and the examples
# (Release, in ${QLTY_BUILD_DIR:-build}), then runs `qlty demo` (a noisy 3D Shepp-Logan phantom through the
# built-in network with `qlty infer`: OME-Zarr output, PNG preview, tiled result checked against the whole
# volume) and the library's examples. Arguments go to `qlty demo` (e.g. --size 256).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh demo
build_dir=${QLTY_BUILD_DIR:-build}
examples=(quilt_2d quilt_3d sparse_labels patch_pairs large_quilt reused_buffers)
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DQLTY_BUILD_TOOLS=ON -DQLTY_BUILD_EXAMPLES=ON \
  -DQLTY_BUILD_TESTS=OFF -DQLTY_BUILD_BENCHMARKS=OFF
cmake --build "$build_dir" -j "$(nproc)" --target qlty_cli "${examples[@]/#/example_}"
echo "== qlty demo"
"$build_dir/tools/qlty" demo --output "$build_dir/demo" "$@"
for example in "${examples[@]}"; do
  echo "== examples/$example"
  "$build_dir/examples/example_$example"
done
