#pragma once
// The stitching weights of a window: the one builder every path takes them from (the quilts' fold and unfold on
// the CPU and through torch ops, Geometry::weights, the disk-cached quilts, the blockwise runs), so the same pixel
// gets the same weight, bit for bit, whatever the path.
//
// Weights by blend (Grid3): border weighting (1 inside the border, max(border_weight, 1e-8) on it); a table of the
// whole window (constant and custom blends, Grid3::weights); gaussian factors (weight(wz, wy, x) =
// max(outer[wz * Wy + wy] * last[x], floor) in float32, MONAI's operations). Unweighted: all ones.

#include <qlty/kernels/grid3.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace qlty::detail {

/// The stitching weights of a window, row by row along X: `row(wz, wy, scratch)` points at Wx weights. Border
/// weighting keeps two rows (inside the border on Z and Y, and on it); gaussian blends compute a row from their
/// factors into `scratch` (Wx values), so no table as large as the window competes with the patches for cache;
/// other blends keep the whole window.
template <typename acc_t>
class RowWeights {
 public:
  RowWeights(const Grid3& g, bool weighted)
      : g_(g), wx_(g.window[2]), factors_(weighted ? g.factors.get() : nullptr), full_(weighted && g.weights) {
    if (factors_) return;
    if (full_) {
      table_.assign(g.weights->begin(), g.weights->end());
      return;
    }
    table_.assign(2 * wx_, acc_t(1));
    if (!weighted) return;
    for (int64_t k = 0; k < wx_; ++k) {
      if (!g.inside(2, k)) table_[k] = static_cast<acc_t>(g.border_weight);
      table_[wx_ + k] = static_cast<acc_t>(g.border_weight);
    }
  }
  const acc_t* row(int64_t wz, int64_t wy, acc_t* scratch) const {
    if (factors_) {
      const float o = factors_->outer[static_cast<size_t>(wz * g_.window[1] + wy)], f = factors_->floor;
      const float* last = factors_->last.data();
      for (int64_t k = 0; k < wx_; ++k) scratch[k] = static_cast<acc_t>(std::max(o * last[k], f));
      return scratch;
    }
    if (full_) return table_.data() + (wz * g_.window[1] + wy) * wx_;
    return table_.data() + (g_.inside(0, wz) && g_.inside(1, wy) ? 0 : wx_);
  }
  /// Whether a row from row() holds one value (a border row): the kernels then multiply by a scalar.
  bool uniform(const acc_t* row) const { return !factors_ && !full_ && row == table_.data() + wx_; }
  /// The window's width along X: the length of every row.
  int64_t width() const { return wx_; }

 private:
  const Grid3& g_;
  int64_t wx_;
  const Grid3::Factors* factors_;
  bool full_;
  std::vector<acc_t> table_;
};

/// Every weight of the window, row-major (Wz * Wy * Wx), as RowWeights gives them.
template <typename acc_t>
std::vector<acc_t> window_weight_table(const Grid3& g, bool weighted) {
  const RowWeights<acc_t> rows(g, weighted);
  const int64_t Wx = g.window[2];
  std::vector<acc_t> table(static_cast<size_t>(g.window_numel())), scratch(static_cast<size_t>(Wx));
  for (int64_t wz = 0; wz < g.window[0]; ++wz)
    for (int64_t wy = 0; wy < g.window[1]; ++wy) {
      const acc_t* row = rows.row(wz, wy, scratch.data());
      std::copy(row, row + Wx, table.begin() + (wz * g.window[1] + wy) * Wx);
    }
  return table;
}

/// The window's weights as a tensor (Wz * Wy * Wx) with `opts`: float64 values of window_weight_table converted
/// once, so float32 weights equal RowWeights<float>'s.
inline torch::Tensor window_weights(const Grid3& g, bool weighted, const torch::TensorOptions& opts) {
  return torch::tensor(window_weight_table<double>(g, weighted), torch::kFloat64).to(opts);
}

}  // namespace qlty::detail
