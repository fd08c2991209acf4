#pragma once
// The grid of windows in three dimensions, what every kernel works on: image shape, window, step, border, window
// counts and weights (2D quilts use a Z axis of size 1). `Geometry<D>` (qlty/geometry.hpp) builds it from a
// quilt's settings; the disk-cached quilts and the blockwise runs use it directly.

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace qlty::detail {

/// The grid in three dimensions (2D quilts use a Z axis of size 1): what the kernels need.
struct Grid3 {
  std::array<int64_t, 3> shape{1, 1, 1}, window{1, 1, 1}, step{1, 1, 1}, border{0, 0, 0}, times{1, 1, 1};
  double border_weight = 1.0;  // effective weight of border pixels, max(border_weight, 1e-8)
  // The window's weights (Wz * Wy * Wx, row-major) when they are not border weights (constant, gaussian, custom
  // blends); null: border weighting from `border` and `border_weight`.
  std::shared_ptr<const std::vector<double>> weights;
  // Gaussian blends also as factors, so the hot loops compute a row's weights instead of reading a table as large
  // as the window: weight(wz, wy, x) = max(outer[wz * Wy + wy] * last[x], floor) in float32 (MONAI's operations).
  struct Factors {
    std::vector<float> outer, last;
    float floor = 0;
  };
  std::shared_ptr<const Factors> factors;

  int64_t start(int a, int64_t k) const { return std::min(k * step[a], shape[a] - window[a]); }
  int64_t per_image() const { return times[0] * times[1] * times[2]; }
  int64_t window_numel() const { return window[0] * window[1] * window[2]; }
  int64_t image_numel() const { return shape[0] * shape[1] * shape[2]; }
  bool inside(int a, int64_t w) const { return w >= border[a] && w < window[a] - border[a]; }

  /// Flattened for autograd contexts (IValues hold integer lists and doubles).
  std::vector<int64_t> pack() const {
    std::vector<int64_t> v;
    for (const auto* arr : {&shape, &window, &step, &border, &times}) v.insert(v.end(), arr->begin(), arr->end());
    return v;
  }
  static Grid3 unpack(const std::vector<int64_t>& v, double border_weight) {
    Grid3 g;
    int i = 0;
    for (auto* arr : {&g.shape, &g.window, &g.step, &g.border, &g.times})
      for (auto& e : *arr) e = v[i++];
    g.border_weight = border_weight;
    return g;
  }
};

/// For each coordinate t along axis a: `first[t]`, the first window ending after t, and `last[t]`, the last
/// window starting at or before t. The windows covering t are first[t]..last[t] (none when first > last), and
/// the windows meeting a range [r0, r1) are first[r0]..last[r1 - 1].
struct Cover {
  std::vector<int64_t> first, last;
};
inline Cover cover(const Grid3& g, int a) {
  Cover c{std::vector<int64_t>(g.shape[a]), std::vector<int64_t>(g.shape[a])};
  int64_t f = 0, l = 0;
  for (int64_t t = 0; t < g.shape[a]; ++t) {
    while (g.start(a, f) + g.window[a] <= t) ++f;  // the last window ends at the edge, so f stays in range
    while (l + 1 < g.times[a] && g.start(a, l + 1) <= t) ++l;
    c.first[t] = f;
    c.last[t] = l;
  }
  return c;
}

}  // namespace qlty::detail
