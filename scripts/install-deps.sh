#!/usr/bin/env bash
# Installs the Debian packages qlty needs; does nothing when all are present. Run as root (or with sudo).
#   scripts/install-deps.sh          everything: the library, the program, tests, benchmarks, fuzzers, MPI
#   scripts/install-deps.sh demo     only what `qlty demo` and the examples need (the library and the program)
# (python3-venv: the build folder's virtual environment of PyPI packages, scripts/python-env.sh; python3-dev: the
# Python module qlty_cpp, docs/python.md.)
set -euo pipefail

demo=(g++ make cmake libtorch-dev nlohmann-json3-dev libblosc-dev libzstd-dev zlib1g-dev liblz4-dev libcli11-dev
      libtiff-dev libpng-dev)
rest=(libgtest-dev libgmock-dev libbenchmark-dev python3-zarr python3-numpy clang libclang-rt-14-dev libopenmpi-dev
      openmpi-bin python3-venv python3-pip python3-dev)
packages=("${demo[@]}")
[ "${1:-all}" = demo ] || packages+=("${rest[@]}")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
