#!/usr/bin/env bash
# Installs the Debian packages that qlty's build, tests, benchmarks and examples need; does nothing when all
# are present. Run as root (or with sudo available).
set -euo pipefail

packages=(g++ make cmake libtorch-dev libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libblosc-dev libzstd-dev zlib1g-dev liblz4-dev python3-zarr python3-numpy
          clang libclang-rt-14-dev libcli11-dev libtiff-dev libpng-dev libopenmpi-dev openmpi-bin)

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
