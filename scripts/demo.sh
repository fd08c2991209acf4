#!/usr/bin/env bash
# The main job on built-in demo data: builds qlty, then runs `qlty demo` (a noisy 3D Shepp-Logan phantom through
# the built-in network with `qlty infer`: OME-Zarr output, PNG preview, tiled result checked against the whole
# volume), then the library's examples. Arguments go to `qlty demo` (e.g. --size 256).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
build_dir=${QLTY_BUILD_DIR:-build}
echo "== qlty demo"
"$build_dir/tools/qlty" demo --output "$build_dir/demo" "$@"
for example in quilt_2d quilt_3d sparse_labels patch_pairs large_quilt reused_buffers; do
  echo "== examples/$example"
  "$build_dir/examples/example_$example"
done
