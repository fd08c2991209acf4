// Disk-cached quilts: time per run, patch throughput next to memcpy of the same bytes, and peak memory.
//
//   W4: N=4, 2 channels, 512x512, window 128, step 64, border 10: every patch stitched, then return_mean. A fresh
//       prefix per iteration. The floor (BM_W4_InMemoryPlusWrite): the in-memory stitch of the same patches and
//       the mean written to Zarr. The Python original runs the same calls in the same run (`W4/large/qlty_original`,
//       benchmarks/python/peer.py) when it is installed; `x_qlty` is its time over ours.
//   V3: one 1 GiB float32 volume (512, 512, 1024), 1 channel, window 64, step 48, border 8, cache 256 MiB,
//       results written to Zarr only (return_mean with in_memory = false), against the in-memory NCZYXQuilt's
//       stitch of the same patches plus writing its result as the quilt writes its mean (uncompressed chunks of
//       48^3, the quilt's; before 2026-12-07 the floor wrote blosc-lz4 chunks of 96^3). Patches in index order
//       (stitch_order:0) or in the quilt's stitch_order() (1). Counters: spills (changed chunks written to
//       staged files to make room) and reloads (chunks read back into the cache).
//
// Patches are made on the fly from their index (a constant per patch plus a ramp) so that the disk-cached run
// never holds them all; peak_MiB is the process's peak resident memory growth during the run (VmHWM, reset
// before it through /proc/self/clear_refs). Files go to $QLTY_BENCH_DIR (default /tmp). Args: threads.
// W4 runs with the default options (durable: checkpoints flushed to the device) and without flushing; V3 without.
// BM_Machine_* price what the disk-cached quilts do beyond the in-memory quilt on this machine: first-touch page
// faults, creating a file, flushing one. `x_floor` (W4, V3): the quilt's time over its floor's in the same run.
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include <malloc.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <tuple>

#include "copy_reference.hpp"

namespace {

std::string bench_dir() { return qlty_bench::bench_dir("qlty_bench_large"); }
using qlty_bench::peak_mib;
using qlty_bench::reset_peak;

/// The floors' seconds per run, by (case, threads, durable): registered, and so run, before the quilts, which
/// report `x_floor` (their time over the floor's).
std::map<std::tuple<std::string, int64_t, int64_t>, double> floors;

void report_floor(benchmark::State& state, const std::string& name, double seconds, int64_t durable) {
  const auto it = floors.find({name, state.range(0), durable});
  if (it != floors.end()) state.counters["x_floor"] = seconds / it->second;
}

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
  report_floor(state, "w4", sec, state.range(1));
  qlty_bench::report_peer(state, "w4/large", sec);
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
  const double sec = 1.0 / (inv * static_cast<double>(state.iterations()));
  state.counters["ms"] = sec * 1e3;
  floors[{"w4", state.range(0), state.range(1)}] = sec;
}

// ---- What this machine charges for what the disk-cached quilts do beyond the in-memory quilt

/// First touch of 16 MiB of fresh memory (the chunk buffers of W4), in 4 KiB pages or advised for 2 MiB huge pages
/// (arg 1): `us_per_MiB` is the page faults' price (the kernel zeroes the pages and maps them).
void BM_Machine_FirstTouch(benchmark::State& state) {
  const size_t bytes = size_t(16) << 20, huge = size_t(2) << 20;
  double total = 0;
  for (auto _ : state) {
    void* p = ::mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return state.SkipWithError("mmap failed");
    auto* aligned = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + huge - 1) / huge * huge);
    ::madvise(aligned, bytes, state.range(0) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t at = 0; at < bytes; at += 4096) aligned[at] = 1;
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ::munmap(p, bytes + huge);
  }
  state.counters["us_per_MiB"] = total * 1e6 / static_cast<double>(state.iterations()) / 16.0;
}

/// Creating, writing and closing a 512 KiB file (a W4 accumulator chunk), with fsync (arg 1) or without: the price of
/// a file and of flushing one.
void BM_Machine_WriteFile(benchmark::State& state) {
  const std::string dir = bench_dir() + "/files";
  qlty::detail::remove_tree(dir);
  qlty::detail::make_dirs(dir);
  std::vector<char> data(size_t(512) << 10, 1);
  static int64_t n = 0;  // names unique over the calls
  for (auto _ : state) {
    const std::string f = dir + "/" + std::to_string(n++);
    qlty::detail::write_new_file(f, data.data(), data.size(), state.range(0) != 0);
  }
  qlty::detail::remove_tree(dir);  // after the timed loop
}

// ---- V3

const std::vector<int64_t> kV{512, 512, 1024};
constexpr int64_t kVW = 64, kVStep = 48, kVB = 8;

/// Patch `i` of the volume run into `out`: 0.001 * i plus a ramp along x (cheap to make, different per patch).
void v3_patch(int64_t i, torch::Tensor& out) {
  static const torch::Tensor ramp = torch::linspace(0, 1, kVW).view({1, 1, 1, kVW}).expand({1, kVW, kVW, kVW});
  torch::add_out(out, ramp, torch::scalar_tensor(0.001 * static_cast<double>(i)));
}

int64_t v3_patch_bytes() {
  qlty::NCZYXQuilt q(kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1);
  return q.patches_per_image() * kVW * kVW * kVW * 4;
}

/// Before a V3 run, untimed: the files of the runs before removed, and the memory they freed given back to the
/// system, so that each run starts alike and peak_MiB is its own.
void v3_fresh_start(const std::vector<std::string>& paths) {
  for (const auto& p : paths) qlty::detail::remove_tree(p);
  qlty::release_cached_memory();
  ::malloc_trim(0);
}

void BM_V3_LargeQuilt(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  const std::string prefix = bench_dir() + "/v3";
  qlty::LargeQuiltOptions o;
  o.durable = false;
  o.cache_bytes = int64_t(256) << 20;
  double peak = 0, total = 0;
  int64_t checkpoints = 0, spills = 0, reloads = 0;
  auto patch = torch::empty({1, kVW, kVW, kVW});
  for (auto _ : state) {
    v3_fresh_start({prefix + "_acc.zarr", prefix + "_mean.zarr"});
    const double base = reset_peak();
    double making = 0;
    const auto t0 = std::chrono::steady_clock::now();
    {
      qlty::LargeNCZYXQuilt q(prefix, 1, kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1, o);
      std::vector<int64_t> order = q.stitch_order(1);
      if (!state.range(1)) std::sort(order.begin(), order.end());  // index order
      for (auto i : order) {
        const auto g0 = std::chrono::steady_clock::now();
        v3_patch(i, patch);  // making the patch is not timed: the floor's patches are made before its clock starts
        making += std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
        q.stitch(patch, i);
      }
      q.return_mean(false, false, false);
      checkpoints = q.checkpoints();
      spills = q.spills();
      reloads = q.reloads();
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - making;
    state.SetIterationTime(sec);
    total += sec;
    peak = std::max(peak, peak_mib() - base);
  }
  const double inv = 1.0 / total;
  qlty_bench::report(state, v3_patch_bytes(), inv, "v3", false);
  const double sec = total / static_cast<double>(state.iterations());
  state.counters["s"] = sec;
  report_floor(state, "v3", sec, 0);
  state.counters["peak_MiB"] = peak;
  state.counters["checkpoints"] = static_cast<double>(checkpoints);
  state.counters["spills"] = static_cast<double>(spills);
  state.counters["reloads"] = static_cast<double>(reloads);
  state.counters["MB_per_s"] = static_cast<double>(v3_patch_bytes()) / sec / 1e6;
}

void BM_V3_InMemoryPlusWrite(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  qlty::NCZYXQuilt q(kV[0], kV[1], kV[2], kVW, kVStep, kVB, 0.1);
  const int64_t M = q.patches_per_image();
  auto patches = torch::empty({M, 1, kVW, kVW, kVW});
  for (int64_t i = 0; i < M; ++i) {
    auto p = patches[i];
    v3_patch(i, p);
  }
  const std::string path = bench_dir() + "/v3_memory.zarr";
  double peak = 0, total = 0;
  for (auto _ : state) {
    v3_fresh_start({path});
    const double base = reset_peak();
    const auto t0 = std::chrono::steady_clock::now();
    auto mean = std::get<0>(q.stitch(patches));
    qlty::zarr::ArrayOptions ao({1, 1, kV[0], kV[1], kV[2]}, {1, 1, kVStep, kVStep, kVStep});
    ao.codecs = {};  // as the quilt writes its mean (LargeQuiltOptions::output_codecs, chunks of its accumulators)
    ao.overwrite = true;
    qlty::zarr::Array::create(path, ao).write({0, 0, 0, 0, 0}, mean);
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(sec);
    total += sec;
    peak = std::max(peak, peak_mib() - base);
  }
  qlty_bench::report(state, v3_patch_bytes(), 1.0 / total, "v3", false);
  const double sec = total / static_cast<double>(state.iterations());
  state.counters["s"] = sec;
  state.counters["peak_MiB_beyond_patches"] = peak;
  floors[{"v3", state.range(0), 0}] = sec;
}

void BM_V3_Copy(benchmark::State& state) { qlty_bench::copy_reference(state, v3_patch_bytes(), "v3"); }

BENCHMARK(BM_Machine_FirstTouch)->ArgName("huge_pages")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Machine_WriteFile)->ArgName("fsync")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_W4_Copy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
const bool w4_peer = (qlty_bench::register_peer("w4/large", "W4/large"), true);
BENCHMARK(BM_W4_InMemoryPlusWrite)
    ->ArgsProduct({{1, 2}, {1, 0}})
    ->ArgNames({"threads", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_W4_LargeQuilt)
    ->ArgsProduct({{1, 2}, {1, 0}})
    ->ArgNames({"threads", "durable"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_V3_Copy)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
BENCHMARK(BM_V3_InMemoryPlusWrite)->Arg(2)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(1);
BENCHMARK(BM_V3_LargeQuilt)
    ->ArgsProduct({{2}, {0, 1}})
    ->ArgNames({"threads", "stitch_order"})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime()
    ->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  qlty::detail::remove_tree(bench_dir());
  return 0;
}
