// A user of qlty::core: every header of the core, a round trip through a quilt and one patch pair.
#include <qlty/blend.hpp>
#include <qlty/geometry.hpp>
#include <qlty/kernels.hpp>
#include <qlty/memory.hpp>
#include <qlty/patch_pairs.hpp>
#include <qlty/quilt.hpp>
#include <qlty/version.hpp>
#include <qlty/weed.hpp>

#include <iostream>

int main() {
  qlty::NCZYXQuilt quilt(20, 24, 28, {8, 8, 8}, {6, 6, 6}, {1, 1, 1}, 0.1);
  auto x = torch::rand({1, 2, 20, 24, 28});
  auto [back, weights] = quilt.stitch(quilt.unstitch(x));
  const bool round_trip = torch::allclose(back, x, 1e-5, 1e-5);
  const auto image = torch::rand({2, 1, 32, 32});
  auto [a, b, shifts, unique] = qlty::extract_patch_pairs(image, {8, 8}, 5, {2.0, 6.0}, uint64_t(7));
  const bool pairs_ok = a.size(0) == 10 && b.size(0) == 10 && shifts.size(0) == 10 && unique.defined();
  qlty::release_cached_memory();
  std::cout << "qlty::core " << QLTY_VERSION << (round_trip && pairs_ok ? ": ok" : ": FAILED") << "\n";
  return round_trip && pairs_ok ? 0 : 1;
}
