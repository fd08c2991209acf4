#!/usr/bin/env bash
# Sets up LibTorch 2.x from PyPI's `torch` wheel (a CUDA build: headers, libraries, TorchConfig.cmake) in the
# virtual environment of a build folder (scripts/python-env.sh), never system-wide; installs only what is missing.
# Prints the CMake arguments that build against it:
#   scripts/pip-libtorch.sh BUILD_DIR          (QLTY_TORCH_SPEC pins the wheel, e.g. torch==2.15.0)
set -euo pipefail
python=$("$(dirname "$0")/python-env.sh" "$1" torch)
prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "-DCMAKE_PREFIX_PATH=$prefix"
echo "-DQLTY_TORCH_PYTHON=$python"
# libtorch_cuda.so needs the wheels' CUDA libraries (cuBLAS, cuDNN, NCCL, ...) at link time too: the loader finds
# them through torch's RPATH at run time, the linker only through -rpath-link.
# The wheel bundles its own OpenMP runtime (torch/lib/libgomp.so.1), which its libraries load: programs link that
# one as well, so that one runtime runs (and CMake has no second libgomp to order in their run paths).
gomp=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1"))')
[ -f "$gomp" ] && echo "-DOpenMP_gomp_LIBRARY=$gomp"
libs=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | paste -sd: || true)
[ -n "$libs" ] && echo "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$libs"
true
