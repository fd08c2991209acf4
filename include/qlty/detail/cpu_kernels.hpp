#pragma once
// Native multithreaded CPU kernels: gather windows into patches (unfold) and weighted-sum patches into images
// (fold). Both work on the three-dimensional grid (2D quilts have a Z axis of size 1) and on any strides.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstring>
#include <vector>

#include "../geometry.hpp"

namespace qlty::detail {

/// For each coordinate along axis a, the first and last window that covers it (first > last: none).
struct Cover {
  std::vector<int64_t> first, last;
};
inline Cover cover(const Grid3& g, int a) {
  Cover c{std::vector<int64_t>(g.shape[a], 0), std::vector<int64_t>(g.shape[a], -1)};
  for (int64_t k = g.times[a] - 1; k >= 0; --k) {  // backwards, so `first` ends at the smallest k
    const int64_t s = g.start(a, k);
    for (int64_t t = s; t < s + g.window[a]; ++t) {
      c.first[t] = k;
      if (c.last[t] < 0) c.last[t] = k;
    }
  }
  return c;
}

/// Weights of one window row along X for rows inside the border on Z and Y; other rows weigh border_weight.
template <typename acc_t>
std::vector<acc_t> inner_row_weights(const Grid3& g, bool weighted) {
  std::vector<acc_t> w(g.window[2], acc_t(1));
  if (weighted)
    for (int64_t k = 0; k < g.window[2]; ++k)
      if (!g.inside(2, k)) w[k] = static_cast<acc_t>(g.border_weight);
  return w;
}

struct Strides5 {
  int64_t n, c, z, y, x;
  explicit Strides5(const torch::Tensor& t)
      : n(t.stride(0)), c(t.stride(1)), z(t.stride(2)), y(t.stride(3)), x(t.stride(4)) {}
};

// A plain element of a given size: unfold copies bytes, whatever the dtype.
template <size_t Size>
struct Bytes {
  unsigned char b[Size];
};

template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n, int64_t stride) {
  if (stride == 1) {
    std::memcpy(dst, src, n * sizeof(T));
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

/// Calls f(q, n, c, z0, y0, x0) for each patch plane q = m * C + c in [begin, end): patch m is window
/// (z0, y0, x0) of image n.
template <typename F>
inline void for_patch_rows(const Grid3& g, int64_t C, int64_t begin, int64_t end, F&& f) {
  const int64_t P = g.per_image(), ty = g.times[1], tx = g.times[2];
  for (int64_t q = begin; q < end; ++q) {
    const int64_t m = q / C, c = q % C, n = m / P, p = m % P;
    const int64_t z0 = g.start(0, p / (ty * tx)), y0 = g.start(1, (p / tx) % ty), x0 = g.start(2, p % tx);
    f(q, n, c, z0, y0, x0);
  }
}

/// patches (M, C, Wz, Wy, Wx) contiguous = the windows of x (N, C, Sz, Sy, Sx), any strides. A pure copy.
template <typename T>
void unfold_copy_cpu(const torch::Tensor& x, torch::Tensor& out, const Grid3& g) {
  const Strides5 s(x);
  const int64_t C = x.size(1), K = g.window_numel(), Wz = g.window[0], Wy = g.window[1], Wx = g.window[2];
  const T* xp = static_cast<const T*>(x.data_ptr());
  T* op = static_cast<T*>(out.data_ptr());
  const int64_t planes = out.size(0) * C;
  at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / K), [&](int64_t begin, int64_t end) {
    for_patch_rows(g, C, begin, end, [&](int64_t q, int64_t n, int64_t c, int64_t z0, int64_t y0, int64_t x0) {
      const T* src = xp + n * s.n + c * s.c + z0 * s.z + y0 * s.y + x0 * s.x;
      T* dst = op + q * K;
      for (int64_t wz = 0; wz < Wz; ++wz)
        for (int64_t wy = 0; wy < Wy; ++wy, dst += Wx) copy_row(dst, src + wz * s.z + wy * s.y, Wx, s.x);
    });
  });
}

/// As unfold_copy_cpu, each pixel multiplied by its stitching weight (the adjoint of a weighted fold).
template <typename T>
void unfold_weighted_cpu(const torch::Tensor& x, torch::Tensor& out, const Grid3& g) {
  using acc_t = at::opmath_type<T>;
  const Strides5 s(x);
  const int64_t C = x.size(1), K = g.window_numel(), Wz = g.window[0], Wy = g.window[1], Wx = g.window[2];
  const auto wrow = inner_row_weights<acc_t>(g, true);
  const acc_t bw = static_cast<acc_t>(g.border_weight);
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, out.size(0) * C, std::max<int64_t>(1, 16384 / K), [&](int64_t begin, int64_t end) {
    for_patch_rows(g, C, begin, end, [&](int64_t q, int64_t n, int64_t c, int64_t z0, int64_t y0, int64_t x0) {
      const T* src = xp + n * s.n + c * s.c + z0 * s.z + y0 * s.y + x0 * s.x;
      T* dst = op + q * K;
      for (int64_t wz = 0; wz < Wz; ++wz)
        for (int64_t wy = 0; wy < Wy; ++wy, dst += Wx) {
          const T* row = src + wz * s.z + wy * s.y;
          if (g.inside(0, wz) && g.inside(1, wy)) {
            for (int64_t k = 0; k < Wx; ++k) dst[k] = static_cast<T>(wrow[k] * static_cast<acc_t>(row[k * s.x]));
          } else {
            for (int64_t k = 0; k < Wx; ++k) dst[k] = static_cast<T>(bw * static_cast<acc_t>(row[k * s.x]));
          }
        }
    });
  });
}

/// Windows of x (N, C, Sz, Sy, Sx) into `out` (M, C, Wz, Wy, Wx), contiguous, preallocated.
inline void unfold_cpu(const torch::Tensor& x, torch::Tensor& out, const Grid3& g, bool weighted) {
  if (weighted) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "qlty::unfold_weighted_cpu",
                                    [&] { unfold_weighted_cpu<scalar_t>(x, out, g); });
    return;
  }
  switch (x.element_size()) {
    case 1: return unfold_copy_cpu<Bytes<1>>(x, out, g);
    case 2: return unfold_copy_cpu<Bytes<2>>(x, out, g);
    case 4: return unfold_copy_cpu<Bytes<4>>(x, out, g);
    case 8: return unfold_copy_cpu<Bytes<8>>(x, out, g);
    case 16: return unfold_copy_cpu<Bytes<16>>(x, out, g);
    default: TORCH_CHECK_TYPE(false, "qlty: unsupported element size ", x.element_size(), " of ", x.scalar_type());
  }
}

/// wsum (Sz, Sy, Sx) = sum of the window weights over one image's windows.
template <typename acc_t>
void weight_sum_cpu(acc_t* ws, const Grid3& g, const Cover& cz, const Cover& cy, bool weighted) {
  const int64_t Sy = g.shape[1], Sx = g.shape[2], Wx = g.window[2];
  const auto wrow = inner_row_weights<acc_t>(g, weighted);
  const acc_t bw = weighted ? static_cast<acc_t>(g.border_weight) : acc_t(1);
  at::parallel_for(0, g.shape[0] * Sy, std::max<int64_t>(1, 16384 / Sx), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t z = r / Sy, y = r % Sy;
      acc_t* row = ws + r * Sx;
      std::fill(row, row + Sx, acc_t(0));
      for (int64_t kz = cz.first[z]; kz <= cz.last[z]; ++kz)
        for (int64_t ky = cy.first[y]; ky <= cy.last[y]; ++ky) {
          const bool in = g.inside(0, z - g.start(0, kz)) && g.inside(1, y - g.start(1, ky));
          for (int64_t kx = 0; kx < g.times[2]; ++kx) {
            acc_t* o = row + g.start(2, kx);
            for (int64_t k = 0; k < Wx; ++k) o[k] += in ? wrow[k] : bw;
          }
        }
    }
  });
}

/// out (N, C, Sz, Sy, Sx) = sum over windows of weight * patch, divided by wsum when `normalize`; wsum (Sz, Sy, Sx)
/// in acc_t. Each task owns whole output rows and adds the windows in patch order: no races, deterministic.
template <typename T>
void fold_cpu_impl(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const Grid3& g,
                   bool weighted, bool normalize) {
  using acc_t = at::opmath_type<T>;
  const Strides5 s(patches);
  const int64_t N = out.size(0), C = out.size(1), Sz = g.shape[0], Sy = g.shape[1], Sx = g.shape[2];
  const int64_t Wx = g.window[2], P = g.per_image(), ty = g.times[1], tx = g.times[2];
  const Cover cz = cover(g, 0), cy = cover(g, 1);
  acc_t* ws = wsum.data_ptr<acc_t>();
  weight_sum_cpu<acc_t>(ws, g, cz, cy, weighted);
  const auto wrow = inner_row_weights<acc_t>(g, weighted);
  const acc_t bw = weighted ? static_cast<acc_t>(g.border_weight) : acc_t(1);
  const T* pp = patches.data_ptr<T>();
  T* op = out.data_ptr<T>();
  constexpr bool direct = std::is_same<T, acc_t>::value;  // accumulate in the output row itself
  at::parallel_for(0, N * C * Sz * Sy, std::max<int64_t>(1, 16384 / Sx), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(direct ? 0 : Sx);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t y = r % Sy, z = (r / Sy) % Sz, c = (r / (Sy * Sz)) % C, n = r / (Sy * Sz * C);
      T* orow = op + r * Sx;
      acc_t* acc = direct ? reinterpret_cast<acc_t*>(orow) : buffer.data();
      std::fill(acc, acc + Sx, acc_t(0));
      for (int64_t kz = cz.first[z]; kz <= cz.last[z]; ++kz) {
        const int64_t wz = z - g.start(0, kz);
        for (int64_t ky = cy.first[y]; ky <= cy.last[y]; ++ky) {
          const int64_t wy = y - g.start(1, ky);
          const bool in = g.inside(0, wz) && g.inside(1, wy);
          const T* prow = pp + (n * P + (kz * ty + ky) * tx) * s.n + c * s.c + wz * s.z + wy * s.y;
          for (int64_t kx = 0; kx < tx; ++kx, prow += s.n) {
            acc_t* o = acc + g.start(2, kx);
            if (in && s.x == 1) {
              for (int64_t k = 0; k < Wx; ++k) o[k] += wrow[k] * static_cast<acc_t>(prow[k]);
            } else if (s.x == 1) {
              for (int64_t k = 0; k < Wx; ++k) o[k] += bw * static_cast<acc_t>(prow[k]);
            } else {
              for (int64_t k = 0; k < Wx; ++k) o[k] += (in ? wrow[k] : bw) * static_cast<acc_t>(prow[k * s.x]);
            }
          }
        }
      }
      const acc_t* wr = ws + (z * Sy + y) * Sx;
      for (int64_t k = 0; k < Sx; ++k) {
        const acc_t v = normalize ? (wr[k] > acc_t(0) ? acc[k] / wr[k] : acc_t(0)) : acc[k];
        orow[k] = static_cast<T>(v);
      }
    }
  });
}

/// Floating patches (M, C, Wz, Wy, Wx), any strides, into preallocated contiguous out and wsum.
inline void fold_cpu(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const Grid3& g,
                     bool weighted, bool normalize) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, patches.scalar_type(), "qlty::fold_cpu",
                                  [&] { fold_cpu_impl<scalar_t>(patches, out, wsum, g, weighted, normalize); });
}

}  // namespace qlty::detail
