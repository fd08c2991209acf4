#pragma once
// What the benchmarks share. The physical limit next to which every benchmark reports: a plain copy of the same
// bytes, measured in the same run. A benchmark's counter `of_copy` is its bytes/s divided by the copy's at the same
// thread count. Also: where benchmark files go, and peak memory.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace qlty_bench {

inline std::map<std::pair<std::string, int64_t>, double> copy_rate;  // (bytes key, threads) -> bytes/s

template <typename F>
inline double timed_loop(benchmark::State& state, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) f();
  const auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return dt > 0 ? 1.0 / dt : 0.0;  // multiplied by bytes * iterations below
}

inline void report(benchmark::State& state, int64_t bytes, double inv_seconds, const std::string& key, bool is_copy) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  const double rate = inv_seconds * static_cast<double>(state.iterations()) * static_cast<double>(bytes);
  const auto k = std::make_pair(key, state.range(0));
  if (is_copy) {
    copy_rate[k] = rate;
  } else if (copy_rate.count(k) && copy_rate[k] > 0) {
    state.counters["of_copy"] = rate / copy_rate[k];
  }
}

// The reference: copy `bytes` from one buffer to another, split across the threads like the kernels.
inline void copy_reference(benchmark::State& state, int64_t bytes, const std::string& key) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const int64_t block = 1 << 20;
  auto inv = timed_loop(state, [&] {
    at::parallel_for(0, (bytes + block - 1) / block, 1, [&](int64_t b, int64_t e) {
      const int64_t lo = b * block, hi = std::min(bytes, e * block);
      std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
    });
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  });
  report(state, bytes, inv, key, true);
}

/// A folder for a benchmark's files: $QLTY_BENCH_DIR (default /tmp) / name.
inline std::string bench_dir(const std::string& name) {
  const char* d = std::getenv("QLTY_BENCH_DIR");
  return std::string(d ? d : "/tmp") + "/" + name;
}

/// Resets the process's peak resident set size (VmHWM); returns the current one (MiB).
inline double reset_peak() {
  std::ofstream("/proc/self/clear_refs") << "5";
  std::ifstream s("/proc/self/status");
  std::string line;
  while (std::getline(s, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0;
}

/// The peak resident set size since the last reset_peak (MiB).
inline double peak_mib() {
  std::ifstream s("/proc/self/status");
  std::string line;
  while (std::getline(s, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0;
}

}  // namespace qlty_bench
