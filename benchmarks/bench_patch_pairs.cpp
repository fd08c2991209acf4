// Patch pairs: bytes produced per second (both patch sets and both overlapping-pixel sets) by
// extract_patch_pairs followed by extract_overlapping_pixels, next to a plain copy of the same bytes.
// Args: threads.
//
//   W5:  x (10, 3, 128, 128), window 32, 64 pairs per image, delta (8, 16)
//   big: x (64, 1, 512, 512), window 32, 256 pairs per image, delta (8, 16); also on CUDA when present
//
//   T1:  build_sequence_pair on 128 pairs of (3, 64, 64) patches, tokens of 8 at stride 4 (225 per patch), whole
//        shifts up to 24 pixels and random turns; its bytes are both token sets
//
// On the CPU, `W5/pairs_and_overlap/qlty_original` and `big/...` time the Python original's extract_patch_pairs +
// extract_overlapping_pixels (T1: build_sequence_pair) in the same run (benchmarks/python/peer.py, when it is
// installed); `x_qlty` is its time over ours.
#include <benchmark/benchmark.h>
#include <qlty/qlty.hpp>

#include "copy_reference.hpp"

namespace {

using namespace qlty_bench;

struct Case {
  const char* name;
  std::vector<int64_t> shape;
  int64_t pairs;
};

int64_t produced_bytes(const Case& c) {
  auto x = torch::rand(c.shape);
  auto [p1, p2, d, r] = qlty::extract_patch_pairs(x, {32, 32}, c.pairs, {8.0, 16.0}, 0);
  auto [o1, o2] = qlty::extract_overlapping_pixels(p1, p2, d, r);
  return static_cast<int64_t>(p1.nbytes() + p2.nbytes() + o1.nbytes() + o2.nbytes());
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Registers `key/copy` and `key/clone` (the references) and `key + suffix` timing `body(x, seed)` on x of the case's
// shape.
template <typename Body>
void register_pair(const std::string& key, const std::string& suffix, int64_t bytes, const Case& c,
                   const torch::Device& device, Body body) {
  register_references(key, bytes, args, device);
  args(benchmark::RegisterBenchmark((key + suffix).c_str(), [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    auto x = torch::rand(c.shape).to(device);
    uint64_t seed = 0;
    auto inv = timed_loop(s, [&] {
      auto last = body(x, seed++);
      if (device.is_cuda()) torch::cuda::synchronize();
      benchmark::DoNotOptimize(last.data_ptr());
    });
    report(s, bytes, inv, key);
  }));
}

void register_case(const Case& c, const torch::Device& device) {
  const std::string key = std::string(c.name) + (device.is_cuda() ? "/cuda" : "");
  if (device.is_cpu()) register_peer(key, key + "/pairs_and_overlap");  // the original, same shapes, same run
  register_pair(key, "/pairs_and_overlap", produced_bytes(c), c, device, [c](const torch::Tensor& x, uint64_t seed) {
    auto [p1, p2, d, r] = qlty::extract_patch_pairs(x, {32, 32}, c.pairs, {8.0, 16.0}, seed);
    return std::get<1>(qlty::extract_overlapping_pixels(p1, p2, d, r));
  });
  // The extraction alone (its bytes: both patch sets), to tell the two steps apart.
  auto [p1, p2, d, r] = qlty::extract_patch_pairs(torch::rand(c.shape), {32, 32}, c.pairs, {8.0, 16.0}, 0);
  register_pair(key + "/pairs", "_only", static_cast<int64_t>(p1.nbytes() + p2.nbytes()), c, device,
                [c](const torch::Tensor& x, uint64_t seed) {
                  return std::get<1>(qlty::extract_patch_pairs(x, {32, 32}, c.pairs, {8.0, 16.0}, seed));
                });
}

/// T1: token sequences of a batch of pairs, with their overlaps.
void register_sequences() {
  const int64_t N = 128;
  auto make = [] {
    torch::manual_seed(0);
    auto p1 = torch::rand({N, 3, 64, 64}), p2 = torch::rand({N, 3, 64, 64});
    auto dx = torch::randint(-24, 25, {N}).to(torch::kFloat), dy = torch::randint(-24, 25, {N}).to(torch::kFloat);
    return std::array<torch::Tensor, 5>{p1, p2, dx, dy, torch::randint(0, 4, {N}, torch::kLong)};
  };
  const auto in = make();
  const auto probe = qlty::build_sequence_pair(in[0], in[1], in[2], in[3], in[4], 8, 4);
  const auto bytes = static_cast<int64_t>(probe.tokens1.nbytes() + probe.tokens2.nbytes());
  register_peer("T1", "T1/sequence_pair");
  register_references("T1", bytes, args, torch::kCPU);
  args(benchmark::RegisterBenchmark("T1/sequence_pair", [=](benchmark::State& s) {
    at::set_num_threads(static_cast<int>(s.range(0)));
    const auto x = make();
    auto inv = timed_loop(s, [&] {
      auto pair = qlty::build_sequence_pair(x[0], x[1], x[2], x[3], x[4], 8, 4);
      benchmark::DoNotOptimize(pair.overlap_pairs.data_ptr());
    });
    report(s, bytes, inv, "T1");
  }));
}

}  // namespace

int main(int argc, char** argv) {
  const Case w5{"W5", {10, 3, 128, 128}, 64}, big{"big", {64, 1, 512, 512}, 256};
  register_case(w5, torch::kCPU);
  register_case(big, torch::kCPU);
  if (torch::cuda::is_available()) register_case(big, torch::kCUDA);
  register_sequences();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
