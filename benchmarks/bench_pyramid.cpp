// File stacks to OME-Zarr pyramids: `qlty convert FOLDER` (qlty/pyramid.hpp over tools/qlty/formats/stack.hpp) next
// to a warm copy of the bytes it writes, and the Python original's stack_files_to_ome_zarr on the same workload in
// the same run (benchmarks/python/peer.py, case P1/pyramid). Args: threads.
//
//   P1: 64 float32 TIFF slices of 512 x 512 (64 MiB; a smooth field plus noise), 4 levels over y and x
//
// `P1/read_slices_only` lists and reads the slices alone (the input side of the conversion).
// `P1/pyramid` uses qlty's defaults (chunks 16 x 256 x 256, blosc-lz4), `P1/pyramid_raw` no compression, the
// original its own (zarr-python 3's, zstd). Each run writes a fresh output (removed untimed before it), so file
// creation is part of the time: how much depends on the file system ($QLTY_BENCH_DIR, default /tmp). Bytes: the
// levels' (85 MiB); `of_copy` compares with a warm copy of as many bytes, the floor no writer beats.
#include <benchmark/benchmark.h>
#include <qlty/pyramid.hpp>

#include "copy_reference.hpp"
#include "formats/stack.hpp"
#include "formats/tiff.hpp"

namespace {

using namespace qlty_bench;

const int64_t kZ = 64, kY = 512, kX = 512, kLevels = 4;

int64_t level_bytes() {
  int64_t b = 0;
  for (int64_t l = 0; l < kLevels; ++l) b += kZ * ((kY + (1 << l) - 1) >> l) * ((kX + (1 << l) - 1) >> l) * 4;
  return b;
}

/// The input slices, written once.
const std::string& stack_folder() {
  static const std::string dir = [] {
    const std::string d = bench_dir("qlty_bench_pyramid/in");
    qlty::detail::make_dirs(d);
    torch::manual_seed(0);
    auto y = torch::linspace(0, 6.28, kY).view({-1, 1}), x = torch::linspace(0, 6.28, kX).view({1, -1});
    for (int64_t z = 0; z < kZ; ++z) {
      auto slice = ((y * (1 + z / 32.0)).sin() * x.cos() * 1000 + 3 * torch::randn({kY, kX})).round_();
      qlty::tool::write_tiff(d + "/slice_" + std::to_string(z) + ".tif", slice.to(torch::kFloat).contiguous());
    }
    return d;
  }();
  return dir;
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseManualTime();
}

void register_convert(const char* name, std::vector<qlty::zarr::Codec> codecs) {
  args(benchmark::RegisterBenchmark(name, [codecs](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    const std::string out = bench_dir("qlty_bench_pyramid/out.zarr");
    auto convert = [&] {
      qlty::detail::remove_tree(out);
      const auto t0 = std::chrono::steady_clock::now();
      const auto stack = qlty::tool::find_stack(stack_folder(), "");
      qlty::PyramidOptions o;
      o.levels = kLevels;
      o.codecs = codecs;
      qlty::write_pyramid(
          out, stack.shape(), stack.dtype,
          [&](int64_t z0, int64_t z1) { return qlty::tool::read_stack(stack, z0, z1); }, o);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    convert();  // warm: the slices in the page cache
    double total = 0;
    for (auto _ : s) {
      const double t = convert();
      s.SetIterationTime(t);
      total += t;
    }
    qlty::detail::remove_tree(out);
    report(s, level_bytes(), total > 0 ? 1.0 / total : 0.0, "P1");
  }));
}

/// The input side alone: listing and reading the 64 slices (bytes: the slices').
void register_read() {
  args(benchmark::RegisterBenchmark("P1/read_slices_only", [](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    for (auto _ : s) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto stack = qlty::tool::find_stack(stack_folder(), "");
      benchmark::DoNotOptimize(qlty::tool::read_stack(stack, 0, kZ).data_ptr());
      s.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    s.SetBytesProcessed(s.iterations() * kZ * kY * kX * 4);
  }));
}

}  // namespace

int main(int argc, char** argv) {
  stack_folder();
  register_peer("P1", "P1/pyramid");
  register_references("P1", level_bytes(), [](benchmark::internal::Benchmark* b) {
    b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
  });
  register_convert("P1/pyramid", {qlty::zarr::Codec::blosc()});
  register_convert("P1/pyramid_raw", {});
  register_read();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
