// Disk-cached quilts: time per run, patch throughput next to memcpy of the same bytes, and peak memory.
//
//   W4: N=4, 2 channels, 512x512, window 128, step 64, border 10: every patch stitched, then return_mean (the
//       Python original takes about 0.78 s for this). A fresh prefix per iteration.
//   V3: one 1 GiB float32 volume (512, 512, 1024), 1 channel, window 64, step 48, border 8, cache 256 MiB,
//       results written to Zarr only (return_mean with in_memory = false), against the in-memory NCZYXQuilt's
//       stitch of the same patches plus writing its result to a Zarr array. Patches in index order
//       (stitch_order:0) or in the quilt's stitch_order() (1). Counters: spills (changed chunks written to
//       staged files to make room) and reloads (chunks read back into the cache).
//
// Patches are made on the fly from their index (a constant per patch plus a ramp) so that the disk-cached run
// never holds them all; peak_MiB is the process's peak resident memory growth during the run (VmHWM, reset
// before it through /proc/self/clear_refs). Files go to $QLTY_BENCH_DIR (default /tmp). Args: threads.
// W4 runs with the default options (durable: checkpoints flushed to the device) and without flushing; V3 without.
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include "copy_reference.hpp"

namespace {

std::string bench_dir() { return qlty_bench::bench_dir("qlty_bench_large"); }
using qlty_bench::peak_mib;
using qlty_bench::reset_peak;

// ---- W4

constexpr int64_t kN = 4, kC = 2, kS = 512, kW = 128, kStep = 64, kB = 10;

const torch::Tensor& w4_patches() {
  static const torch::Tensor p = [] {
    qlty::NCYXQuilt q(kS, kS, kW, kStep, kB, 0.1);
    torch::manual_seed(0);
    return torch::randn({kN * q.patches_per_image(), kC, kW, kW});
  }();
  return p;
}

int64_t w4_bytes() { return w4_patches().numel() * 4; }

void BM_W4_Copy(benchmark::State& state) { qlty_bench::copy_reference(state, w4_bytes(), "w4"); }

// Args: threads, durable (1: the default options, checkpoints flushed to the device).
void BM_W4_LargeQuilt(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const auto& p = w4_patches();
  const std::string prefix = bench_dir() + "/w4";
  qlty::LargeQuiltOptions o;
  o.durable = state.range(1) != 0;
  double total = 0;  // seconds in runs, without removing the previous run's files
  for (auto _ : state) {
    state.PauseTiming();
    qlty::detail::remove_tree(prefix + "_acc.zarr");
    qlty::detail::remove_tree(prefix + "_mean.zarr");
    state.ResumeTiming();
    const auto t0 = std::chrono::steady_clock::now();
    {  // construction to destruction: whatever the destructor still writes counts
      qlty::LargeNCYXQuilt q(prefix, kN, kS, kS, kW, kStep, kB, 0.1, o);
      for (int64_t i = 0; i < q.N_chunks(); ++i) q.stitch(p[i], i);
      auto mean = std::get<0>(q.return_mean());
      benchmark::DoNotOptimize(mean.data_ptr());
    }
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double inv = 1.0 / total;
  qlty_bench::report(state, w4_bytes(), inv, "w4", false);
  const double sec = 1.0 / (inv * static_cast<double>(state.iterations()));
  state.counters["ms"] = sec * 1e3;
  state.counters["x_python"] = 0.78 / sec;
}

// The floor of W4: the in-memory stitch of the same patches, then the mean written to a Zarr array chunked and
// compressed as the disk-cached quilt writes it (durable as in the default options).
void BM_W4_InMemoryPlusWrite(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const auto& p = w4_patches();
  qlty::NCYXQuilt q(kS, kS, kW, kStep, kB, 0.1);
  const auto inv = qlty_bench::timed_loop(state, [&] {
    auto mean = std::get<0>(q.stitch(p));
    qlty::zarr::ArrayOptions ao({kN, kC, kS, kS}, {1, kC, 256, 256});
    ao.codecs = {};
    ao.overwrite = true;
    ao.durable = state.range(1) != 0;
    qlty::zarr::Array::create(bench_dir() + "/w4_memory.zarr", ao).write({0, 0, 0, 0}, mean);
  });
  qlty_bench::report(state, w4_bytes(), inv, "w4", false);
  state.counters["ms"] = 1e3 / (inv * static_cast<double>(state.iterations()));
}

// ---- V3

const std::vector<int64_t> kV{512, 512, 1024};
constexpr int64_t kVW = 64, kVStep = 48, kVB = 8;

/// Patch `i` of the volume run: 0.001 * i plus a ramp along x (cheap to make, different per patch).
torch::Tensor v3_patch(int64_t i) {
  static const torch::Tensor ramp = torch::linspace(0, 1, kVW).view({1, 1, 1, kVW}).expand({1, kVW, kVW, kVW});
  return ramp + 0.001 * static_cast<double>(i);
}

int64_t v3_patch_bytes() {
  qlty::NCZYXQuilt q(kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1);
  return q.patches_per_image() * kVW * kVW * kVW * 4;
}

void BM_V3_LargeQuilt(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const std::string prefix = bench_dir() + "/v3";
  qlty::LargeQuiltOptions o;
  o.durable = false;
  o.cache_bytes = int64_t(256) << 20;
  double peak = 0;
  int64_t checkpoints = 0, spills = 0, reloads = 0;
  const auto inv = qlty_bench::timed_loop(
      state,
      [&] {
        qlty::detail::remove_tree(prefix + "_acc.zarr");
        const double base = reset_peak();
        {
          qlty::LargeNCZYXQuilt q(prefix, 1, kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1, o);
          if (state.range(1)) {
            for (auto i : q.stitch_order(1)) q.stitch(v3_patch(i), i);
          } else {
            for (int64_t i = 0; i < q.N_chunks(); ++i) q.stitch(v3_patch(i), i);
          }
          q.return_mean(false, false, false);
          checkpoints = q.checkpoints();
          spills = q.spills();
          reloads = q.reloads();
        }
        peak = std::max(peak, peak_mib() - base);
      },
      /*warm=*/false);  // each run is seconds long and starts from fresh files
  qlty_bench::report(state, v3_patch_bytes(), inv, "v3", false);
  state.counters["s"] = 1.0 / (inv * static_cast<double>(state.iterations()));
  state.counters["peak_MiB"] = peak;
  state.counters["checkpoints"] = static_cast<double>(checkpoints);
  state.counters["spills"] = static_cast<double>(spills);
  state.counters["reloads"] = static_cast<double>(reloads);
  state.counters["MB_per_s"] = v3_patch_bytes() * inv * static_cast<double>(state.iterations()) / 1e6;
}

void BM_V3_InMemoryPlusWrite(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  qlty::NCZYXQuilt q(kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1);
  const int64_t M = q.patches_per_image();
  auto patches = torch::empty({M, 1, kVW, kVW, kVW});
  for (int64_t i = 0; i < M; ++i) patches[i].copy_(v3_patch(i));
  double peak = 0;
  const auto inv = qlty_bench::timed_loop(
      state,
      [&] {
        const double base = reset_peak();
        auto mean = std::get<0>(q.stitch(patches));
        qlty::zarr::ArrayOptions ao({1, 1, kV[0], kV[1], kV[2]}, {1, 1, 96, 96, 96});
        ao.overwrite = true;
        qlty::zarr::Array::create(bench_dir() + "/v3_memory.zarr", ao).write({0, 0, 0, 0, 0}, mean);
        peak = std::max(peak, peak_mib() - base);
      },
      /*warm=*/false);  // each run is seconds long and starts from fresh files
  qlty_bench::report(state, v3_patch_bytes(), inv, "v3", false);
  state.counters["s"] = 1.0 / (inv * static_cast<double>(state.iterations()));
  state.counters["peak_MiB_beyond_patches"] = peak;
}

void BM_V3_Copy(benchmark::State& state) { qlty_bench::copy_reference(state, v3_patch_bytes(), "v3"); }

BENCHMARK(BM_W4_Copy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_W4_LargeQuilt)
    ->ArgsProduct({{1, 2}, {1, 0}})
    ->ArgNames({"threads", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_W4_InMemoryPlusWrite)
    ->ArgsProduct({{1, 2}, {1, 0}})
    ->ArgNames({"threads", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_V3_Copy)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
BENCHMARK(BM_V3_LargeQuilt)
    ->ArgsProduct({{2}, {0, 1}})
    ->ArgNames({"threads", "stitch_order"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_V3_InMemoryPlusWrite)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  qlty::detail::remove_tree(bench_dir());
  return 0;
}
