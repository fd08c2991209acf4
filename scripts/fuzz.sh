#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (ASan + UBSan) and runs each for a time budget.
#   scripts/fuzz.sh [seconds per target, default 60]
# The corpus grows in ${QLTY_FUZZ_DIR:-build-fuzz}/corpus-*; crashes are saved there and fail the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
dir=${QLTY_FUZZ_DIR:-build-fuzz}
"$(dirname "$0")/install-deps.sh"
cmake -S fuzz -B "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$dir.log" 2>&1 ||
  { cat "$dir.log"; exit 1; }
cmake --build "$dir" -j"$(nproc)" >> "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
for t in metadata chunk shard; do
  corpus="$dir/corpus-$t"
  mkdir -p "$corpus"
  echo "fuzz_zarr_$t: ${seconds}s"
  rc=0
  # metadata inputs up to 256 KiB: long enough for 100,000 levels of nesting (fuzz/corpus/metadata/v2_deep_nesting.json)
  extra=()
  [ "$t" = metadata ] && extra=(-max_len=262144)
  ASAN_OPTIONS=detect_leaks=1 "$dir/fuzz_zarr_$t" "$corpus" "fuzz/corpus/$t" -max_total_time="$seconds" "${extra[@]}" \
    -artifact_prefix="$dir/crash-$t-" -print_final_stats=1 > "$dir/fuzz_zarr_$t.log" 2>&1 || rc=$?
  grep -aE "stat::number_of_executed_units|Done" "$dir/fuzz_zarr_$t.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$dir/fuzz_zarr_$t.log"
    echo "fuzz_zarr_$t found a failure (input saved as $dir/crash-$t-*)"
    exit 1
  fi
done
