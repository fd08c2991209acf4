// Blockwise inference (qlty::infer_blockwise, what `qlty infer` runs) against the work it organises.
//
//   A 512^3 float32 volume (a Zarr array, 64^3 chunks, blosc-lz4) through the built-in network (smoothing and
//   edges, 2 output channels), window 128, step 96, border 16: 125 windows.
//
// Counters of BM_Infer, all measured in the same run:
//   windows_per_s, MB_per_s (input voxels of the computed windows), peak_MiB (resident memory growth, VmHWM reset
//   before the run), blocks, windows (computed, including windows computed twice at block edges);
//   network_s: the network alone on all 125 windows (extracted beforehand, batch 8);
//   write_s: writing the result (2 x 512^3 float32) to a Zarr array with the same codecs;
//   of_target: infer time / (network_s + write_s): the target is <= 1.5;
//   whole_s: the network on the whole volume at once, in memory (the reference the demo compares against);
//   net_batch_peak_MiB: the network's own working memory for one batch of windows (part of peak_MiB).
// BM_Copy: memcpy of 512 MiB, the machine's memory bandwidth in this run. Files go to $QLTY_BENCH_DIR (/tmp).
// Args: threads, block depth in voxels (0: automatic, by block memory), mode: 0 border weighting (as above),
// 1 MONAI's gaussian blend (--blend gaussian), 2 border weighting with test-time flips (--tta flip: the network
// runs on 8 flips of every window, so of_target divides by 8 x network_s + write_s).
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>

#include "../tools/qlty/builtin.hpp"
#include "copy_reference.hpp"

namespace {

constexpr int64_t kS = 512, kW = 128, kStep = 96, kB = 16, kBatch = 8;

std::string bench_dir() { return qlty_bench::bench_dir("qlty_bench_infer"); }
using qlty_bench::peak_mib;
using qlty_bench::reset_peak;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The input volume as a Zarr array, made once per process.
const qlty::zarr::Array& input() {
  static const qlty::zarr::Array a = [] {
    qlty::detail::make_dirs(bench_dir());
    qlty::zarr::ArrayOptions o({1, 1, kS, kS, kS}, {1, 1, 64, 64, 64});
    o.overwrite = true;
    auto arr = qlty::zarr::Array::create(bench_dir() + "/input.zarr", o);
    arr.write({0, 0, 0, 0, 0}, qlty::tool::shepp_logan_3d(kS, 0.1, 1).view({1, 1, kS, kS, kS}));
    return arr;
  }();
  return a;
}

void BM_Infer(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(state.range(0)));
  torch::NoGradGuard no_grad;
  qlty::tool::BuiltinNet net(3);
  const qlty::BlockModel model = [&](const torch::Tensor& x) { return net->forward(x); };
  const auto& in = input();

  // The reference work, once per thread count: the network on every window, writing the result, and the
  // network on the whole volume.
  struct Reference {
    double network_s = 0, write_s = 0, whole_s = 0, network_batch_peak = 0;
  };
  static std::map<int64_t, Reference> references;
  if (!references.count(state.range(0))) {
    Reference ref;
    const auto volume = in.read();
    qlty::NCZYXQuilt q(kS, kS, kS, kW, kStep, kB, 0.1);
    auto windows = q.unstitch(volume);
    const double base = reset_peak();
    benchmark::DoNotOptimize(model(windows.narrow(0, 0, kBatch)).data_ptr());
    ref.network_batch_peak = peak_mib() - base;  // the network's working memory for one batch
    auto t0 = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> preds;
    for (int64_t i = 0; i < windows.size(0); i += kBatch)
      preds.push_back(model(windows.narrow(0, i, std::min(kBatch, windows.size(0) - i))));
    ref.network_s = seconds_since(t0);
    auto result = std::get<0>(q.stitch(torch::cat(preds)));
    preds.clear();
    windows = torch::Tensor();
    qlty::zarr::ArrayOptions wo({1, 2, kS, kS, kS}, {1, 1, 64, 64, 64});
    wo.overwrite = true;
    t0 = std::chrono::steady_clock::now();
    qlty::zarr::Array::create(bench_dir() + "/written.zarr", wo).write({0, 0, 0, 0, 0}, result);
    ref.write_s = seconds_since(t0);
    result = torch::Tensor();
    t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(net->forward(volume).data_ptr());
    ref.whole_s = seconds_since(t0);
    references[state.range(0)] = ref;
  }
  const Reference& ref = references[state.range(0)];
  const double network_s = ref.network_s, write_s = ref.write_s, whole_s = ref.whole_s;
  auto t0 = std::chrono::steady_clock::now();

  qlty::BlockwiseOptions o;
  o.window = kW;
  o.step = kStep;
  o.border = kB;
  o.batch_size = kBatch;
  const int64_t mode = state.range(2), flips = mode == 2 ? 8 : 1;
  if (mode == 1) o.blend = qlty::Blend::gaussian();
  o.tta_flip = mode == 2;
  if (state.range(1) > 0) o.block = {state.range(1), kS, kS};
  o.overwrite = true;
  o.durable = false;  // the figures measure the library, not the disk
  qlty::BlockwiseSummary s;
  double infer_s = 0, peak = 0;
  for (auto _ : state) {
    const double base = reset_peak();
    t0 = std::chrono::steady_clock::now();
    s = qlty::infer_blockwise(model, qlty::BlockInput::from_zarr(in), bench_dir() + "/out.zarr", o);
    infer_s = seconds_since(t0);
    peak = std::max(peak, peak_mib() - base);
    state.SetIterationTime(infer_s);
  }
  const double in_bytes = double(s.windows_computed) * kW * kW * kW * 4;
  state.counters["windows_per_s"] = double(s.windows_computed) / infer_s;
  state.counters["MB_per_s"] = in_bytes / infer_s / 1e6;
  state.counters["peak_MiB"] = peak;
  state.counters["blocks"] = double(s.blocks_total);
  state.counters["windows"] = double(s.windows_computed);
  state.counters["block_z"] = double(s.block[0]);
  state.counters["network_s"] = network_s * double(flips);
  state.counters["write_s"] = write_s;
  state.counters["model_s"] = s.model_seconds;
  state.counters["of_target"] = infer_s / (network_s * double(flips) + write_s);
  state.counters["whole_s"] = whole_s;
  state.counters["net_batch_peak_MiB"] = ref.network_batch_peak;
}

void BM_Copy(benchmark::State& state) { qlty_bench::copy_reference(state, int64_t(512) << 20, "512MiB"); }

}  // namespace

BENCHMARK(BM_Copy)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Infer)
    ->Args({2, 0, 0})
    ->Args({2, 256, 0})
    ->Args({1, 0, 0})
    ->Args({2, 0, 1})
    ->Args({2, 0, 2})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

BENCHMARK_MAIN();
