#pragma once
// What the benchmarks share. The physical limit next to which every benchmark reports: a plain copy of the same
// bytes, measured in the same run. A benchmark's counter `of_copy` is its bytes/s divided by the copy's at the same
// thread count. The peer: the Python original (PyPI `qlty`) timed on the same workload in the same run, when it is
// installed (benchmarks/python/peer.py); `x_qlty` is its time over ours. Also: where benchmark files go, and peak
// memory.
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qlty_bench {

/// The references of a key at a thread count: a warm `Tensor::copy_` of the same bytes (`copy`) and an allocating
/// `clone()` of them (`clone`), in bytes/s.
struct Reference {
  double copy = 0, clone = 0;
};
inline std::map<std::pair<std::string, int64_t>, Reference> references;  // (bytes key, threads) -> rates
inline std::map<std::pair<std::string, int64_t>, double> peers;  // (bytes key, threads) -> the original's seconds

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

/// Sets `x_qlty`, the original's time over `seconds`, when the original ran on `key` at the state's thread count.
inline void report_peer(benchmark::State& state, const std::string& key, double seconds) {
  const auto peer = peers.find({key, state.range(0)});
  if (peer != peers.end() && seconds > 0) state.counters["x_qlty"] = peer->second / seconds;
}

/// Sets bytes/s and, for a measured case, `of_copy` and `of_clone`: its rate over the references' at the same
/// thread count (registered, and so run, before it).
inline void report(benchmark::State& state, int64_t bytes, double inv_seconds, const std::string& key,
                   bool is_reference = false) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  const double rate = inv_seconds * static_cast<double>(state.iterations()) * static_cast<double>(bytes);
  if (is_reference) return;
  const auto it = references.find({key, state.range(0)});
  if (rate > 0) report_peer(state, key, static_cast<double>(bytes) / rate);
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

/// The python that runs the peer: $QLTY_PEER_PYTHON, else the build's virtual environment (scripts/python-env.sh).
inline std::string peer_python() {
  if (const char* p = std::getenv("QLTY_PEER_PYTHON")) return p;
#ifdef QLTY_BENCH_PEER_PYTHON
  return QLTY_BENCH_PEER_PYTHON;
#else
  return "python3";
#endif
}

/// The Python original's seconds per run of `peer_case` at `threads` threads (benchmarks/python/peer.py, in a child
/// process), or an empty optional with the reason in `why`.
inline std::optional<double> peer_seconds(const std::string& peer_case, int64_t threads, std::string& why) {
  const std::string cmd = "'" + peer_python() + "' '" + QLTY_BENCH_PEER_SCRIPT + "' '" + peer_case + "' " +
                          std::to_string(threads) + " 2>&1";
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    std::array<char, 4096> buf{};
    while (std::fgets(buf.data(), buf.size(), f)) out += buf.data();
    if (::pclose(f) == 0) {
      const auto line = out.substr(out.rfind('{') == std::string::npos ? 0 : out.rfind('{'));
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("seconds")) return j["seconds"].get<double>();
    }
  }
  why = out.empty() ? "could not run " + cmd : out.substr(out.size() > 300 ? out.size() - 300 : 0);
  return std::nullopt;
}

/// Registers `peer_case/qlty_original` at each thread count: the original on `peer_case` (peer.py), its time kept
/// under `key` for the `x_qlty` of the cases reported against it after it (report, report_peer). Without an installed
/// original it is skipped with the reason (scripts/bench.sh installs it).
inline void register_peer(const std::string& key, const std::string& peer_case,
                          const std::vector<int64_t>& threads = {1, 2}) {
  auto* b = benchmark::RegisterBenchmark((peer_case + "/qlty_original").c_str(), [=](benchmark::State& state) {
    std::string why;
    std::optional<double> sec;
    for (auto _ : state) {
      sec = peer_seconds(peer_case, state.range(0), why);
      state.SetIterationTime(sec.value_or(0.0));
    }
    if (!sec)
      return state.SkipWithError(("the original qlty did not run (QLTY_PEER_PYTHON=" + peer_python() +
                                  "; scripts/bench.sh installs it): " + why)
                                     .c_str());
    peers[{key, state.range(0)}] = *sec;
    state.counters["ms"] = *sec * 1e3;
  });
  b->ArgName("threads");
  for (auto t : threads) b->Arg(t);
  b->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(1);
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
