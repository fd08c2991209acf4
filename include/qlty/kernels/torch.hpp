#pragma once
// Device-generic kernels built from vectorised torch ops (index_select and index_add_ over flat offsets), for
// CUDA and any other device. Patches are processed in chunks of bounded size, so no temporary grows with the
// number of patches.

#include <torch/torch.h>

#include <algorithm>

#include <qlty/kernels/accumulate.hpp>
#include <qlty/kernels/grid3.hpp>
#include <qlty/kernels/window_weights.hpp>

namespace qlty::detail {

/// Elements per chunk of patches (the index and weighted-source temporaries are this size).
constexpr int64_t kTorchChunkElements = int64_t(1) << 22;

/// Origins (cnt, 4) as {n, z, y, x} of grid patches [m0, m0 + cnt), in patch order, on `device`.
inline torch::Tensor grid_origins(const Grid3& g, int64_t m0, int64_t cnt, const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto starts = [&](int a) {
    std::vector<int64_t> v(g.times[a]);
    for (int64_t k = 0; k < g.times[a]; ++k) v[k] = g.start(a, k);
    return torch::tensor(v, torch::kInt64).to(device);
  };
  const int64_t P = g.per_image(), ty = g.times[1], tx = g.times[2];
  auto m = torch::arange(m0, m0 + cnt, opts);
  auto p = m.remainder(P);
  return torch::stack(
      {torch::div(m, P, "floor"), starts(0).index_select(0, torch::div(p, ty * tx, "floor")),
       starts(1).index_select(0, torch::div(p, tx, "floor").remainder(ty)), starts(2).index_select(0, p.remainder(tx))},
      1);
}

/// Offsets of each window pixel (K) within a contiguous image (Sz, Sy, Sx).
inline torch::Tensor window_pixels(const std::array<int64_t, 3>& shape, const std::array<int64_t, 3>& window,
                                   const torch::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto zy =
      torch::arange(window[0], opts).view({-1, 1, 1}) * shape[1] + torch::arange(window[1], opts).view({1, -1, 1});
  return (zy * shape[2] + torch::arange(window[2], opts).view({1, 1, -1})).reshape(-1);
}

/// Flat offsets (cnt, C, K) into a contiguous (N, C, Sz, Sy, Sx) tensor of the pixels of the windows at
/// `origins` (cnt, 4) {n, z, y, x}.
inline torch::Tensor origin_index(const torch::Tensor& origins, const std::array<int64_t, 3>& shape,
                                  const torch::Tensor& pix, int64_t C) {
  const int64_t Sy = shape[1], Sx = shape[2], L = shape[0] * Sy * Sx;
  auto image = (origins.select(1, 0).view({-1, 1}) * C + torch::arange(C, origins.options()).view({1, -1})) * L;
  auto base = (origins.select(1, 1) * Sy + origins.select(1, 2)) * Sx + origins.select(1, 3);
  return image.unsqueeze(2) + base.view({-1, 1, 1}) + pix.view({1, 1, -1});
}

inline int64_t chunk_patches(int64_t C, int64_t K) {
  return std::max<int64_t>(1, kTorchChunkElements / std::max<int64_t>(1, C * K));
}

/// Windows of x (N, C, Sz, Sy, Sx) into `out` (M, C, Wz, Wy, Wx), contiguous, preallocated.
inline void unfold_torch(const torch::Tensor& x, torch::Tensor& out, const Grid3& g, bool weighted) {
  const int64_t M = out.size(0), C = x.size(1), K = g.window_numel();
  if (M == 0 || C == 0) return;
  auto xflat = x.contiguous().view(-1);
  auto pix = window_pixels(g.shape, g.window, x.device());
  const auto acc_type = c10::toRealValueType(x.scalar_type()) == torch::kDouble ? torch::kDouble : torch::kFloat;
  torch::Tensor w;
  if (weighted) w = window_weights(g, true, x.options().dtype(acc_type));
  const int64_t step = chunk_patches(C, K);
  for (int64_t m0 = 0; m0 < M; m0 += step) {
    const int64_t cnt = std::min(step, M - m0);
    auto dst = out.narrow(0, m0, cnt).view({-1});
    auto idx = origin_index(grid_origins(g, m0, cnt, x.device()), g.shape, pix, C);
    torch::index_select_out(dst, xflat, 0, idx.view({-1}));
    if (weighted) {
      auto d = dst.view({cnt, C, K});
      if (d.scalar_type() == acc_type)
        d.mul_(w);
      else
        d.copy_(d.to(acc_type).mul_(w));
    }
  }
}

/// Floating patches (M, C, Wz, Wy, Wx) into preallocated contiguous out (N, C, Sz, Sy, Sx) and wsum (Sz, Sy, Sx).
inline void fold_torch(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const Grid3& g,
                       bool weighted, bool normalize) {
  const int64_t M = patches.size(0), C = patches.size(1), K = g.window_numel(), P = g.per_image();
  auto pix = window_pixels(g.shape, g.window, patches.device());
  const auto acc_type = wsum.scalar_type();
  auto w = window_weights(g, weighted, wsum.options());

  // weight sum over one image's windows, in chunks of windows
  wsum.zero_();
  auto wflat = wsum.view({-1});
  const int64_t wstep = std::max<int64_t>(1, kTorchChunkElements / std::max<int64_t>(1, K));
  for (int64_t p0 = 0; p0 < P; p0 += wstep) {
    const int64_t cnt = std::min(wstep, P - p0);
    auto idx = origin_index(grid_origins(g, p0, cnt, patches.device()), g.shape, pix, 1);  // image 0
    accumulate_weights_indexed_torch(wflat, idx, w, cnt);
  }

  auto acc = out.scalar_type() == acc_type ? out : torch::empty(out.sizes(), out.options().dtype(acc_type));
  acc.zero_();
  auto aflat = acc.view({-1});
  const int64_t step = chunk_patches(C, K);
  auto buffer = torch::empty({std::min(step, M) * C * K}, wsum.options());  // weighted chunk, reused
  for (int64_t m0 = 0; m0 < M && C > 0; m0 += step) {
    const int64_t cnt = std::min(step, M - m0);
    auto idx = origin_index(grid_origins(g, m0, cnt, patches.device()), g.shape, pix, C);
    accumulate_indexed_torch(aflat, idx, patches.narrow(0, m0, cnt).reshape({cnt, C, K}), w, buffer);
  }
  if (normalize) {
    const double tiny = acc_type == torch::kDouble ? 1e-300 : 1e-30;  // pixels no window touched stay 0
    acc.div_(wsum.clamp_min(tiny));
  }
  if (!acc.is_same(out)) out.copy_(acc);
}

/// Windows of x (N, C, Sz, Sy, Sx) at origins (M, 4) (on x's device) into `out` (M, C, *window), preallocated.
inline void gather_torch(const torch::Tensor& x, const torch::Tensor& origins, torch::Tensor& out,
                         const std::array<int64_t, 3>& window) {
  const int64_t M = out.size(0), C = x.size(1), K = window[0] * window[1] * window[2];
  if (M == 0 || C == 0 || K == 0) return;
  const std::array<int64_t, 3> shape{x.size(2), x.size(3), x.size(4)};
  auto xflat = x.contiguous().view(-1);
  auto pix = window_pixels(shape, window, x.device());
  const int64_t step = chunk_patches(C, K);
  for (int64_t m0 = 0; m0 < M; m0 += step) {
    const int64_t cnt = std::min(step, M - m0);
    auto dst = out.narrow(0, m0, cnt).view({-1});
    torch::index_select_out(dst, xflat, 0, origin_index(origins.narrow(0, m0, cnt), shape, pix, C).view({-1}));
  }
}

/// The adjoint of gather: the windows (M, C, *window) added into zeros of `shape5` at origins (M, 4).
inline torch::Tensor scatter_add_torch(const torch::Tensor& patches, const torch::Tensor& origins,
                                       c10::IntArrayRef shape5) {
  auto out = torch::zeros(shape5, patches.options());
  const int64_t M = patches.size(0), C = patches.size(1);
  const std::array<int64_t, 3> shape{shape5[2], shape5[3], shape5[4]};
  const std::array<int64_t, 3> window{patches.size(2), patches.size(3), patches.size(4)};
  const int64_t K = window[0] * window[1] * window[2];
  if (M == 0 || C == 0 || K == 0) return out;
  auto oflat = out.view(-1);
  auto pix = window_pixels(shape, window, patches.device());
  const int64_t step = chunk_patches(C, K);
  for (int64_t m0 = 0; m0 < M; m0 += step) {
    const int64_t cnt = std::min(step, M - m0);
    oflat.index_add_(0, origin_index(origins.narrow(0, m0, cnt), shape, pix, C).view({-1}),
                     patches.narrow(0, m0, cnt).reshape({-1}));
  }
  return out;
}

}  // namespace qlty::detail
