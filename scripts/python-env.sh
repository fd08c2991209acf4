#!/usr/bin/env bash
# The Python side of the tests, from PyPI, in a virtual environment inside a build folder (never system-wide,
# never committed): zarr-python 3 and numpy 2 (the Zarr writers and readers users have today), TensorStore (a
# second reader of sharded arrays) and ome-zarr-py (napari's OME-Zarr reader), and with `torch`
# PyPI's torch wheel (LibTorch 2.x with CUDA, and torch.export for the model tests), and with `qlty` also the Python
# original from PyPI (the benchmarks' peer, benchmarks/python/peer.py; it needs torch), and with `module` what
# building and testing the Python module qlty_cpp takes (scikit-build-core, pytest). Installs only what is
# missing; prints the environment's python.
#   scripts/python-env.sh BUILD_DIR [torch] [qlty] [module]   (QLTY_TORCH_SPEC: the torch to install, default the newest)
set -euo pipefail
build_dir=$1
venv=$(mkdir -p "$build_dir" && cd "$build_dir" && pwd)/venv
wanted=(numpy zarr tensorstore ome_zarr)
for extra in "${@:2}"; do
  case "$extra" in
    torch) wanted+=("${QLTY_TORCH_SPEC:-torch}") ;;
    qlty) wanted+=(qlty) ;;
    module) wanted+=(scikit_build_core pytest) ;;
    *) echo "python-env.sh: extras are torch, qlty and module, got \"$extra\"" >&2; exit 2 ;;
  esac
done
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv" >&2
missing=()
for spec in "${wanted[@]}"; do
  module=${spec%%[=<>]*}
  "$venv/bin/python" -c "import $module" 2>/dev/null || missing+=("${spec//_/-}")  # ome_zarr is ome-zarr on PyPI
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "python-env: installing ${missing[*]} into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "${missing[@]}" >&2
fi
echo "$venv/bin/python"
