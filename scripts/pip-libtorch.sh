#!/usr/bin/env bash
# Sets up LibTorch 2.x from PyPI's `torch` wheel (a CUDA build: headers, libraries, TorchConfig.cmake) in a virtual
# environment inside a build folder, never system-wide; does nothing when it is there. Prints the CMake arguments
# that build against it:
#   scripts/pip-libtorch.sh BUILD_DIR [TORCH_SPEC]     (TORCH_SPEC: default `torch`, the newest; e.g. torch==2.15.0)
set -euo pipefail
build_dir=$1
spec=${2:-${QLTY_TORCH_SPEC:-torch}}
venv=$(mkdir -p "$build_dir" && cd "$build_dir" && pwd)/venv
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "pip-libtorch: installing $spec into $venv" >&2
  /usr/bin/python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "$spec" numpy >&2
fi
prefix=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# libtorch_cuda.so needs the wheels' CUDA libraries (cuBLAS, cuDNN, NCCL, ...) at link time too: the loader finds
# them through torch's RPATH at run time, the linker only through -rpath-link.
libs=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | paste -sd: || true)
echo "-DCMAKE_PREFIX_PATH=$prefix"
[ -n "$libs" ] && echo "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$libs"
true
