#pragma once
// The one weighted accumulation of qlty, with which every path stitches windows into accumulators:
//
//   acc += w * p        wsum += w        sq += (p * p) * w   (or m * w, m a given second moment)   var += w * v
//
// per pixel, windows in the order given, in the float type of the accumulators (float32 for the blockwise runs
// and the disk-cached quilts; at::opmath_type for the quilts' fold). Because every path is made of these
// operations, the in-memory quilt, the disk-cached quilt and a blockwise run give the same bytes for the same
// windows in the same order.
//
// - Row operations (add_weighted_row, add_scaled_row, add_weights_row, add_weighted_square_row): the inner loops,
//   shared by the fold's ring-buffer kernel (kernels/cpu.hpp) and the box accumulation below.
// - accumulate_cpu: parts of windows into boxes of accumulators (a block of a blockwise run, the chunks of a
//   disk-cached quilt that a window meets, a chunk's weight sums), native and multithreaded.
// - finish_cpu: means (and standard deviations) from accumulators, in one pass (the disk-cached quilt's chunks).
// - accumulate_box_torch and accumulate_indexed_torch: the same operations with torch ops, on any device (a
//   window into a block; windows scattered by pixel index, the fold's torch path).

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <qlty/kernels/window_weights.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace qlty::detail {

// ---- row operations: n pixels, rows that never alias

/// o += w * p, one weight per pixel; p with stride sp.
template <typename acc_t, typename T>
inline void add_weighted_row(acc_t* __restrict o, const T* __restrict p, const acc_t* __restrict w, int64_t n,
                             int64_t sp = 1) {
  if (sp == 1) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < n; ++k) o[k] += w[k] * static_cast<acc_t>(p[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) o[k] += w[k] * static_cast<acc_t>(p[k * sp]);
  }
}

/// o += w * p, one weight for the row (a border row of border weighting).
template <typename acc_t, typename T>
inline void add_scaled_row(acc_t* __restrict o, const T* __restrict p, acc_t w, int64_t n) {
#pragma GCC unroll 4
  for (int64_t k = 0; k < n; ++k) o[k] += w * static_cast<acc_t>(p[k]);
}

/// o += w.
template <typename acc_t>
inline void add_weights_row(acc_t* __restrict o, const acc_t* __restrict w, int64_t n) {
  for (int64_t k = 0; k < n; ++k) o[k] += w[k];
}

/// o += (p * p) * w: the second moment of the predictions.
template <typename acc_t, typename T>
inline void add_weighted_square_row(acc_t* __restrict o, const T* __restrict p, const acc_t* __restrict w, int64_t n,
                                    int64_t sp = 1) {
  for (int64_t k = 0; k < n; ++k) {
    const acc_t v = static_cast<acc_t>(p[k * sp]);
    o[k] += v * v * w[k];
  }
}

/// o += m * w, m a given second moment (the mean of squares over test-time flips).
template <typename acc_t, typename T>
inline void add_moment_row(acc_t* __restrict o, const T* __restrict m, const acc_t* __restrict w, int64_t n,
                           int64_t sm = 1) {
  for (int64_t k = 0; k < n; ++k) o[k] += static_cast<acc_t>(m[k * sm]) * w[k];
}

// ---- parts of windows into boxes of accumulators, on the CPU

/// A window's values, or the part of them from `origin` on: float32 (C, *extent) with strides sc, sz, sy, sx.
/// `data` null: the window adds only its weights. `second`: its second moment (same strides), or null for
/// data squared. `var`: a variance to accumulate weighted (same strides), or null.
struct WindowPart {
  const float* data = nullptr;
  const float* second = nullptr;
  const float* var = nullptr;
  int64_t sc = 0, sz = 0, sy = 0, sx = 1;
  std::array<int64_t, 3> origin{}, extent{}, start{};  // first voxel, sizes, and the window's start (for its weights)
};

/// A box of accumulators, float32, its first voxel at `origin` in image coordinates: acc, sq and var (C, *extent)
/// with strides sc, sz, sy (x contiguous), wsum (*extent) with strides sz, sy; a null one is not accumulated. A box
/// may be part of a larger buffer (the part of a chunk that a window meets).
struct AccumulatorBox {
  float* acc = nullptr;
  float* wsum = nullptr;
  float* sq = nullptr;
  float* var = nullptr;
  std::array<int64_t, 3> origin{}, extent{};
  int64_t sc = 0, sz = 0, sy = 0;

  /// A box whose buffers are exactly (C, *extent) and (*extent), contiguous.
  static AccumulatorBox contiguous(const std::array<int64_t, 3>& origin, const std::array<int64_t, 3>& extent) {
    AccumulatorBox b;
    b.origin = origin;
    b.extent = extent;
    b.sy = extent[2];
    b.sz = extent[1] * extent[2];
    b.sc = extent[0] * b.sz;
    return b;
  }
};

/// Adds every part into every box it meets, each pixel weighted by its window's stitching weight (`weights`): the
/// accumulation of the file's notes. Every pixel adds the parts in their order; a task owns rows of a box, so the
/// sums do not depend on the threads.
inline void accumulate_cpu(const std::vector<AccumulatorBox>& boxes, const std::vector<WindowPart>& parts, int64_t C,
                           const RowWeights<float>& weights) {
  std::vector<int64_t> first_row{0};  // rows (z, y) of the boxes, numbered box after box
  for (const auto& b : boxes) first_row.push_back(first_row.back() + b.extent[0] * b.extent[1]);
  int64_t widest = 1;
  for (const auto& b : boxes) widest = std::max(widest, b.extent[2]);
  at::parallel_for(0, first_row.back(), std::max<int64_t>(1, 4096 / widest), [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(static_cast<size_t>(weights.width()));
    for (int64_t row = r0; row < r1; ++row) {
      const auto bi =
          static_cast<size_t>(std::upper_bound(first_row.begin(), first_row.end(), row) - first_row.begin() - 1);
      const AccumulatorBox& b = boxes[bi];
      const int64_t r = row - first_row[bi], bz = r / b.extent[1], by = r % b.extent[1];
      const int64_t z = b.origin[0] + bz, y = b.origin[1] + by;
      for (const auto& p : parts) {
        if (z < p.origin[0] || z >= p.origin[0] + p.extent[0] || y < p.origin[1] || y >= p.origin[1] + p.extent[1])
          continue;
        const int64_t x0 = std::max(p.origin[2], b.origin[2]);
        const int64_t x1 = std::min(p.origin[2] + p.extent[2], b.origin[2] + b.extent[2]);
        if (x1 <= x0) continue;
        const int64_t n = x1 - x0, o = bz * b.sz + by * b.sy + (x0 - b.origin[2]);
        const float* w = weights.row(z - p.start[0], y - p.start[1], scratch.data()) + (x0 - p.start[2]);
        if (b.wsum) add_weights_row(b.wsum + o, w, n);
        if (!p.data) continue;
        const int64_t at = (z - p.origin[0]) * p.sz + (y - p.origin[1]) * p.sy + (x0 - p.origin[2]) * p.sx;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t pc = at + c * p.sc, bc = c * b.sc + o;
          if (b.acc) add_weighted_row(b.acc + bc, p.data + pc, w, n, p.sx);
          if (b.sq && p.second) add_moment_row(b.sq + bc, p.second + pc, w, n, p.sx);
          if (b.sq && !p.second) add_weighted_square_row(b.sq + bc, p.data + pc, w, n, p.sx);
          if (b.var && p.var) add_weighted_row(b.var + bc, p.var + pc, w, n, p.sx);
        }
      }
    }
  });
}

// ---- from accumulators to results, on the CPU

/// Accumulators of n pixels and C channels (channel stride n, float32) and what to make of them (see finish_cpu).
struct FinishedBox {
  const float* acc = nullptr;   // (C, n)
  const float* wsum = nullptr;  // (n)
  const float* sq = nullptr;    // (C, n), or null: no sd
  const float* var = nullptr;   // (C, n), or null
  float* mean = nullptr;        // (C, n), out
  float* sd = nullptr;          // (C, n), out (with sq)
  int64_t C = 0, n = 0;
  bool normalize = false;
};

/// The results of accumulators, pixel by pixel: mean = acc / wsum, and with sq, sd = sqrt(max(sq / wsum - mean^2,
/// 0) + var / wsum); with `normalize` both divided by the sum of the pixel's means over channels (where it is not
/// 0); 0 where wsum is 0. The float operations, in this order, of the torch expressions they replace (one pass,
/// no temporaries).
inline void finish_cpu(const FinishedBox& b) {
  constexpr int64_t kBlock = 2048;  // pixels at a time: the block's rows stay in L1/L2 between the passes
  float total[kBlock], safe[kBlock];
  for (int64_t i0 = 0; i0 < b.n; i0 += kBlock) {
    const int64_t m = std::min(kBlock, b.n - i0);
    const float* w = b.wsum + i0;
    for (int64_t i = 0; i < m; ++i) safe[i] = w[i] > 0 ? w[i] : 1.0f;
    for (int64_t c = 0; c < b.C; ++c) {  // row by row, so that the loops vectorise
      const int64_t o = c * b.n + i0;
      float* __restrict mean = b.mean + o;
      const float* __restrict acc = b.acc + o;
      for (int64_t i = 0; i < m; ++i) mean[i] = w[i] > 0 ? acc[i] / safe[i] : 0.0f;
      if (!b.sq) continue;
      float* __restrict sd = b.sd + o;
      const float* __restrict sq = b.sq + o;
      for (int64_t i = 0; i < m; ++i) sd[i] = std::max(sq[i] / safe[i] - mean[i] * mean[i], 0.0f);
      if (b.var)
        for (int64_t i = 0; i < m; ++i) sd[i] += b.var[o + i] / safe[i];
      for (int64_t i = 0; i < m; ++i) sd[i] = w[i] > 0 ? std::sqrt(sd[i]) : 0.0f;
    }
    if (!b.normalize) continue;
    std::fill(total, total + m, 0.0f);
    for (int64_t c = 0; c < b.C; ++c)
      for (int64_t i = 0; i < m; ++i) total[i] += b.mean[c * b.n + i0 + i];
    for (int64_t i = 0; i < m; ++i)
      if (total[i] == 0.0f) total[i] = 1.0f;
    for (int64_t c = 0; c < b.C; ++c)
      for (int64_t i = 0; i < m; ++i) {
        b.mean[c * b.n + i0 + i] /= total[i];
        if (b.sq) b.sd[c * b.n + i0 + i] /= total[i];
      }
  }
}

// ---- the same operations with torch ops (any device)

/// Adds one window's part `p` (C, *extent), its first voxel at `origin`, into the block accumulators acc (C, *B),
/// wsum (*B) and sq (C, *B) (undefined: not accumulated) whose first voxel is b0 and end b1; `weights` is the
/// window's weights (*W) and `start` the window's start. `second`: the part's second moment, undefined for p * p.
inline void accumulate_box_torch(torch::Tensor acc, torch::Tensor wsum, torch::Tensor sq, torch::Tensor p,
                                 torch::Tensor second, torch::Tensor weights, const std::array<int64_t, 3>& origin,
                                 const std::array<int64_t, 3>& start, const std::array<int64_t, 3>& b0,
                                 const std::array<int64_t, 3>& b1) {
  for (int a = 0; a < 3; ++a) {
    const int64_t r0 = std::max(origin[a], b0[a]), r1 = std::min(origin[a] + p.size(a + 1), b1[a]);
    if (r1 <= r0) return;
    acc = acc.narrow(a + 1, r0 - b0[a], r1 - r0);
    wsum = wsum.narrow(a, r0 - b0[a], r1 - r0);
    if (sq.defined()) sq = sq.narrow(a + 1, r0 - b0[a], r1 - r0);
    p = p.narrow(a + 1, r0 - origin[a], r1 - r0);
    if (second.defined()) second = second.narrow(a + 1, r0 - origin[a], r1 - r0);
    weights = weights.narrow(a, r0 - start[a], r1 - r0);
  }
  acc.addcmul_(p, weights);  // acc + p * w
  wsum.add_(weights);
  if (sq.defined()) sq.addcmul_(second.defined() ? second : p.square(), weights);  // sq + (p * p) * w
}

/// Adds windows `p` (M, C, K) weighted by `weights` (K) into the flat accumulators `acc` at the pixel indices
/// `index` (M * C * K): acc[index] += p * w, with `buffer` (at least M * C * K elements) for the weighted values.
inline void accumulate_indexed_torch(torch::Tensor& acc, const torch::Tensor& index, const torch::Tensor& p,
                                     const torch::Tensor& weights, torch::Tensor& buffer) {
  auto weighted = buffer.narrow(0, 0, p.numel()).view(p.sizes());
  torch::mul_out(weighted, p, weights);
  acc.index_add_(0, index.view({-1}), weighted.view({-1}));
}

/// Adds one image's window weights (K each) into the flat weight sums `wsum` at `index` (windows * K).
inline void accumulate_weights_indexed_torch(torch::Tensor& wsum, const torch::Tensor& index,
                                             const torch::Tensor& weights, int64_t windows) {
  wsum.index_add_(0, index.view({-1}), weights.view({1, -1}).expand({windows, weights.numel()}).reshape({-1}));
}

}  // namespace qlty::detail
