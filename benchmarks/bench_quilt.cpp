// Throughput of unstitch and stitch (bytes of patch data per second) next to a plain copy of the same bytes
// in the same run: the physical limit of this memory-bound work. Args: threads.
//
//   W1: x (10, 3, 128, 128), window 16, step 4, border 4; stitch of (8410, 17, 16, 16)
//   W2: x (4, 1, 1024, 1024), window 128, step 64, border 16; stitch with 8 channels
//   W3: x (2, 1, 128, 128, 128), window 64, step 32, border 8; stitch with 2 channels
//
// The counter `of_copy` is the throughput divided by the copy's at the same thread count.
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

template <int D>
void register_workload(const Workload& w) {
  const std::string un = std::string(w.name) + "/unstitch", st = std::string(w.name) + "/stitch";
  const int64_t unstitch_bytes = patch_bytes<D>(w, w.x_shape[1]);
  const int64_t stitch_bytes = patch_bytes<D>(w, w.stitch_channels);
  auto args = [](benchmark::internal::Benchmark* b) {
    b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  args(benchmark::RegisterBenchmark((un + "/copy").c_str(),
                                    [=](benchmark::State& s) { copy_reference(s, unstitch_bytes, un); }));
  args(benchmark::RegisterBenchmark(un.c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    auto q = make_quilt<D>(w);
    auto x = torch::rand(w.x_shape);
    auto inv = timed_loop(s, [&] { benchmark::DoNotOptimize(q.unstitch(x)); });
    report(s, unstitch_bytes, inv, un, false);
  }));
  // The kernel alone, into an output allocated once: what the call costs without fresh pages from the OS.
  args(benchmark::RegisterBenchmark((un + "/into_preallocated").c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    auto q = make_quilt<D>(w);
    auto x = torch::rand(w.x_shape);
    auto x5 = D == 2 ? x.unsqueeze(2) : x;
    const auto g = q.geometry().grid3();
    auto out = torch::empty({x.size(0) * g.per_image(), x.size(1), g.window[0], g.window[1], g.window[2]});
    auto inv = timed_loop(s, [&] { qlty::detail::unfold_cpu(x5, out, g, false); });
    report(s, unstitch_bytes, inv, un, false);
  }));
  args(benchmark::RegisterBenchmark((st + "/copy").c_str(),
                                    [=](benchmark::State& s) { copy_reference(s, stitch_bytes, st); }));
  args(benchmark::RegisterBenchmark(st.c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    auto q = make_quilt<D>(w);
    std::vector<int64_t> shape{w.x_shape[0] * q.patches_per_image(), w.stitch_channels};
    for (int a = 0; a < D; ++a) shape.push_back(w.window);
    auto patches = torch::rand(shape);
    auto inv = timed_loop(s, [&] { benchmark::DoNotOptimize(q.stitch(patches)); });
    report(s, stitch_bytes, inv, st, false);
  }));
  args(benchmark::RegisterBenchmark((st + "/into_preallocated").c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    auto q = make_quilt<D>(w);
    const auto g = q.geometry().grid3();
    auto patches =
        torch::rand({w.x_shape[0] * g.per_image(), w.stitch_channels, g.window[0], g.window[1], g.window[2]});
    auto out = torch::empty({w.x_shape[0], w.stitch_channels, g.shape[0], g.shape[1], g.shape[2]});
    auto wsum = torch::empty({g.shape[0], g.shape[1], g.shape[2]});
    auto inv = timed_loop(s, [&] { qlty::detail::fold_cpu(patches, out, wsum, g, true, true); });
    report(s, stitch_bytes, inv, st, false);
  }));
}

}  // namespace

int main(int argc, char** argv) {
  register_workload<2>(kW1);
  register_workload<2>(kW2);
  register_workload<3>(kW3);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
