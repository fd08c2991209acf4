// Throughput of unstitch and stitch (bytes of patch data per second) next to a plain copy of the same bytes
// in the same run: the physical limit of this memory-bound work. Args: threads.
//
//   W1: x (10, 3, 128, 128), window 16, step 4, border 4; stitch of (8410, 17, 16, 16)
//   W2: x (4, 1, 1024, 1024), window 128, step 64, border 16; stitch with 8 channels
//   W3: x (2, 1, 128, 128, 128), window 64, step 32, border 8; stitch with 2 channels
//   Q1: a 2.5D quilt's convert() of a volume (2, 1, 32, 256, 256): identity {-1, 0, 1}, mean {{-3, -2}, {2, 3}},
//       std {{-2, ..., 2}}, clamp, 2D accumulation; bytes: the output's (2 * 32 images of 6 channels)
//
// Each workload has two references (copy_reference.hpp): `copy`, a warm `Tensor::copy_` of the patch bytes, and
// `clone`, an allocating `clone()` of them. Cases: the allocating API call (`unstitch`), the call into a reused
// buffer (`unstitch_out`) and the native kernel alone (`unstitch/kernel`); `stitch_out/gaussian` blends with
// MONAI's gaussian window (a weight per window pixel) instead of border weighting. The counters `of_copy` and
// `of_clone` are the throughput over the references' at the same thread count. On CUDA (when present) the references
// are the GPU's own copy and clone. On the CPU, `W1/unstitch/qlty_original` and the like time the Python original
// on the same shapes in the same run (benchmarks/python/peer.py, when it is installed), and `x_qlty` is its time
// over ours.
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include "copy_reference.hpp"

namespace {

using namespace qlty_bench;

struct Workload {
  const char* name;
  std::vector<int64_t> x_shape;
  int64_t window, step, border, stitch_channels;
};

const Workload kW1{"W1", {10, 3, 128, 128}, 16, 4, 4, 17};
const Workload kW2{"W2", {4, 1, 1024, 1024}, 128, 64, 16, 8};
const Workload kW3{"W3", {2, 1, 128, 128, 128}, 64, 32, 8, 2};

template <int D>
qlty::Quilt<D> make_quilt(const Workload& w) {
  std::array<int64_t, D> S{};
  for (int a = 0; a < D; ++a) S[a] = w.x_shape[2 + a];
  return qlty::Quilt<D>(S, w.window, w.step, w.border, 0.1);
}

template <int D>
int64_t patch_bytes(const Workload& w, int64_t channels) {
  auto q = make_quilt<D>(w);
  int64_t n = w.x_shape[0] * q.patches_per_image() * channels * 4;
  for (int a = 0; a < D; ++a) n *= w.window;
  return n;
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
}

/// Registers `name`: `body(state)` returns 1 / seconds (timed_loop); reported against `key`'s references.
template <typename Body>
void add(const std::string& name, const std::string& key, int64_t bytes, Body body) {
  args(benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    report(s, bytes, body(s), key);
  }));
}

template <int D>
void register_workload(const Workload& w, const torch::Device& device) {
  const std::string dev = device.is_cuda() ? "/cuda" : "";
  const std::string un = std::string(w.name) + dev + "/unstitch", st = std::string(w.name) + dev + "/stitch";
  const int64_t unstitch_bytes = patch_bytes<D>(w, w.x_shape[1]);
  const int64_t stitch_bytes = patch_bytes<D>(w, w.stitch_channels);
  auto sync = [device] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  auto image = [w, device] { return torch::rand(w.x_shape).to(device); };
  auto patches = [w, device] {
    auto q = make_quilt<D>(w);
    std::vector<int64_t> shape{w.x_shape[0] * q.patches_per_image(), w.stitch_channels};
    for (int a = 0; a < D; ++a) shape.push_back(w.window);
    return torch::rand(shape).to(device);
  };

  register_references(un, unstitch_bytes, args, device);
  if (device.is_cpu()) register_peer(un, un);             // the original's NCYXQuilt / NCZYXQuilt on the same shapes
  add(un, un, unstitch_bytes, [=](benchmark::State& s) {  // the API call: a fresh result each time
    auto q = make_quilt<D>(w);
    auto x = image();
    return timed_loop(s, [&] {
      benchmark::DoNotOptimize(q.unstitch(x));
      sync();
    });
  });
  add(un + "_out", un, unstitch_bytes, [=](benchmark::State& s) {  // the API call into a reused buffer
    auto q = make_quilt<D>(w);
    auto x = image();
    auto out = q.unstitch(x);
    return timed_loop(s, [&] {
      q.unstitch_out(x, out);
      sync();
    });
  });
  if (device.is_cpu())
    add(un + "/kernel", un, unstitch_bytes, [=](benchmark::State& s) {  // the native kernel alone
      auto q = make_quilt<D>(w);
      auto x = image();
      auto x5 = D == 2 ? x.unsqueeze(2) : x;
      const auto g = q.geometry().grid3();
      auto out = q.unstitch(x);
      auto out5 = D == 2 ? out.unsqueeze(2) : out;
      return timed_loop(s, [&] { qlty::detail::unfold_cpu(x5, out5, g, false); });
    });

  register_references(st, stitch_bytes, args, device);
  if (device.is_cpu()) register_peer(st, st);
  add(st, st, stitch_bytes, [=](benchmark::State& s) {
    auto q = make_quilt<D>(w);
    auto p = patches();
    return timed_loop(s, [&] {
      benchmark::DoNotOptimize(q.stitch(p));
      sync();
    });
  });
  add(st + "_out", st, stitch_bytes, [=](benchmark::State& s) {
    auto q = make_quilt<D>(w);
    auto p = patches();
    auto [result, weights] = q.stitch(p);
    return timed_loop(s, [&] {
      q.stitch_out(p, result, weights);
      sync();
    });
  });
  add(st + "_out/gaussian", st, stitch_bytes, [=](benchmark::State& s) {  // a whole window of weights
    std::array<int64_t, D> S{};
    for (int a = 0; a < D; ++a) S[a] = w.x_shape[2 + a];
    qlty::Quilt<D> q(S, w.window, w.step, qlty::Blend::gaussian());
    auto p = patches();
    auto [result, weights] = q.stitch(p);
    return timed_loop(s, [&] {
      q.stitch_out(p, result, weights);
      sync();
    });
  });
  if (device.is_cpu())
    add(st + "/kernel", st, stitch_bytes, [=](benchmark::State& s) {
      auto q = make_quilt<D>(w);
      const auto g = q.geometry().grid3();
      auto p = patches();
      auto p5 = D == 2 ? p.unsqueeze(2) : p;
      auto out = torch::empty({w.x_shape[0], w.stitch_channels, g.shape[0], g.shape[1], g.shape[2]});
      auto wsum = torch::empty({g.shape[0], g.shape[1], g.shape[2]});
      return timed_loop(s, [&] { qlty::detail::fold_cpu(p5, out, wsum, g, true, true); });
    });
}

/// Q1: NCZYX25DQuilt::convert.
void register_quilt25d() {
  const std::vector<int64_t> shape = {2, 1, 32, 256, 256};
  auto spec = [] {
    qlty::ChannelSpec s;
    s.identity({-1, 0, 1}).mean({{-3, -2}, {2, 3}}).std({{-2, -1, 0, 1, 2}});
    return s;
  };
  const int64_t bytes = 2 * 32 * 6 * 256 * 256 * 4;
  register_peer("Q1", "Q1/convert_25d");
  register_references("Q1", bytes, args);
  args(benchmark::RegisterBenchmark("Q1/convert_25d", [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    torch::manual_seed(0);
    const qlty::NCZYX25DQuilt q(torch::rand(shape), spec());
    auto inv = timed_loop(s, [&] { benchmark::DoNotOptimize(q.convert().data_ptr()); });
    report(s, bytes, inv, "Q1");
  }));
}

}  // namespace

int main(int argc, char** argv) {
  for (const auto& device : {torch::Device(torch::kCPU), torch::Device(torch::kCUDA)}) {
    if (device.is_cuda() && !torch::cuda::is_available()) continue;
    register_workload<2>(kW1, device);
    register_workload<2>(kW2, device);
    register_workload<3>(kW3, device);
  }
  register_quilt25d();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
