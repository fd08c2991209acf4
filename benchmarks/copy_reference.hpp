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

/// The references of a key at a thread count: a warm `Tensor::copy_` of the same bytes (`copy`) and an allocating
/// `clone()` of them (`clone`), in bytes/s.
struct Reference {
  double copy = 0, clone = 0;
};
inline std::map<std::pair<std::string, int64_t>, Reference> references;  // (bytes key, threads) -> rates

/// Times `f` over the state's iterations, after one untimed call (`warm`) that touches every buffer and pays
/// first-use costs, so kernels and references are timed alike. Returns 1 / seconds.
template <typename F>
inline double timed_loop(benchmark::State& state, F&& f, bool warm = true) {
  if (warm) f();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) f();
  const auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return dt > 0 ? 1.0 / dt : 0.0;  // multiplied by bytes * iterations below
}

/// Sets bytes/s and, for a measured case, `of_copy` and `of_clone`: its rate over the references' at the same
/// thread count (registered, and so run, before it).
inline void report(benchmark::State& state, int64_t bytes, double inv_seconds, const std::string& key,
                   bool is_reference = false) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  const double rate = inv_seconds * static_cast<double>(state.iterations()) * static_cast<double>(bytes);
  if (is_reference) return;
  const auto it = references.find({key, state.range(0)});
  if (it == references.end()) return;
  if (it->second.copy > 0) state.counters["of_copy"] = rate / it->second.copy;
  if (it->second.clone > 0) state.counters["of_clone"] = rate / it->second.clone;
}

inline torch::Tensor reference_source(int64_t bytes, const torch::Device& device) {
  return torch::rand({std::max<int64_t>(1, bytes / 4)}, torch::TensorOptions().device(device));  // float32, written
}

inline void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

/// The limit: `dst.copy_(src)` of `bytes` into a buffer already written, LibTorch's own copy at the state's
/// thread count (range(0)), timed like the kernels. Its rate should match what the machine shows for any warm copy.
inline void copy_reference(benchmark::State& state, int64_t bytes, const std::string& key,
                           const torch::Device& device = torch::kCPU) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto src = reference_source(bytes, device);
  auto dst = torch::zeros_like(src);
  auto inv = timed_loop(state, [&] {
    dst.copy_(src);
    synchronize(device);
    benchmark::DoNotOptimize(dst.data_ptr());
    benchmark::ClobberMemory();
  });
  report(state, bytes, inv, key, true);
  references[{key, state.range(0)}].copy = inv * static_cast<double>(state.iterations()) * static_cast<double>(bytes);
}

/// What an allocating call pays at least: `src.clone()` of the same bytes (fresh pages, then a copy).
inline void clone_reference(benchmark::State& state, int64_t bytes, const std::string& key,
                            const torch::Device& device = torch::kCPU) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  auto src = reference_source(bytes, device);
  auto inv = timed_loop(state, [&] {
    auto dst = src.clone();
    synchronize(device);
    benchmark::DoNotOptimize(dst.data_ptr());
    benchmark::ClobberMemory();
  });
  report(state, bytes, inv, key, true);
  references[{key, state.range(0)}].clone = inv * static_cast<double>(state.iterations()) * static_cast<double>(bytes);
}

/// Registers both references of `key` on `device` (run before the cases that report against them).
inline void register_references(const std::string& key, int64_t bytes, void (*args)(benchmark::internal::Benchmark*),
                                const torch::Device& device = torch::kCPU) {
  args(benchmark::RegisterBenchmark((key + "/copy").c_str(),
                                    [=](benchmark::State& s) { copy_reference(s, bytes, key, device); }));
  args(benchmark::RegisterBenchmark((key + "/clone").c_str(),
                                    [=](benchmark::State& s) { clone_reference(s, bytes, key, device); }));
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
