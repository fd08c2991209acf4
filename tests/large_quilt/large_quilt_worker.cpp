// A separate process for the disk-cached quilt's crash tests (tests/test_large_quilt.cpp kills it with SIGKILL).
//   large_quilt_worker PREFIX   stitches every missing patch of a fixed 2D run (patches computed from their
//                               index), checkpointing every 3 patches and on a small cache, then return_mean(std)
#include <qlty/large_quilt.hpp>

#include <iostream>

namespace {
// The patch of window `index`: a smooth function of the position plus the index, two channels.
torch::Tensor patch_for(const qlty::LargeNCYXQuilt& q, const torch::Tensor& image, int64_t index) {
  auto p = q.unstitch(image, index);
  return torch::cat({p.sin(), p * 0.5 + 0.01 * static_cast<double>(index % 7)}, 0);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: large_quilt_worker PREFIX\n";
    return 2;
  }
  try {
    qlty::LargeQuiltOptions o;
    o.checkpoint_every = 3;
    o.cache_bytes = 48 << 10;  // a few chunks: eviction checkpoints happen too
    o.durable = false;
    qlty::LargeNCYXQuilt q(argv[1], 96, 40, 52, 12, 6, 2, 0.1, o);  // long enough to be killed after start-up
    const auto image = torch::linspace(-3, 3, 96 * 40 * 52, torch::kFloat).view({96, 1, 40, 52});
    for (int64_t i : q.missing_indices()) q.stitch(patch_for(q, image, i), i);
    q.return_mean(true);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
