#!/usr/bin/env bash
# The main job on built-in demo data: builds qlty and runs the examples end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
build_dir=${QLTY_BUILD_DIR:-build}
for example in quilt_2d quilt_3d sparse_labels patch_pairs large_quilt; do
  echo "== examples/$example"
  "$build_dir/examples/example_$example"
done
