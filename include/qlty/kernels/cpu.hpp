#pragma once
// Native multithreaded CPU kernels: gather windows into patches (unfold) and weighted-sum patches into images
// (fold). Both work on the three-dimensional grid (2D quilts have a Z axis of size 1) and on any strides.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <qlty/kernels/accumulate.hpp>
#include <qlty/kernels/grid3.hpp>
#include <qlty/kernels/window_weights.hpp>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace qlty::detail {

/// The bytes of accumulators a fold task aims to keep (a share of a shared L3 cache): more channels than fit are
/// summed in groups, and volumes with larger planes in column ranges.
constexpr int64_t kFoldRingBytes = int64_t(4) << 20;

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

/// Outputs at least this large are written with non-temporal stores: they go to memory without being read into
/// the cache first (as memcpy does for large copies), since they would not stay there anyway.
constexpr int64_t kStreamOutputBytes = int64_t(32) << 20;

/// memcpy with non-temporal stores where the destination is 16-byte aligned; stream_fence() after a task.
inline void stream_copy(void* dst, const void* src, size_t n) {
#if defined(__SSE2__)
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  if ((reinterpret_cast<uintptr_t>(d) & 15) == 0) {
    for (; n >= 16; n -= 16, d += 16, s += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  }
  std::memcpy(d, s, n);
#else
  std::memcpy(dst, src, n);
#endif
}
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

template <typename T>
inline void copy_row(T* dst, const T* src, int64_t n, int64_t stride, bool stream) {
  if (stride == 1 && stream) {
    stream_copy(dst, src, n * sizeof(T));
  } else if (stride == 1) {
    std::memcpy(dst, src, n * sizeof(T));
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * stride];
  }
}

/// Calls f(std::integral_constant<int64_t, V>{}) for the V among Known equal to `value`, else with V = 0: short
/// rows of a few common sizes get loops of a known length (unrolled, no remainder, inline copies).
template <int64_t... Known, typename F>
inline void with_known(int64_t value, F&& f) {
  bool done = false;
  ((!done && value == Known ? (f(std::integral_constant<int64_t, Known>{}), done = true) : false), ...);
  if (!done) f(std::integral_constant<int64_t, 0>{});
}

/// Where patch m comes from: {image n, z0, y0, x0}. GridOrigins walks the quilt's grid (patch order of
/// docs/design/semantics.md); ListOrigins reads a contiguous int64 (M, 4) table.
struct GridOrigins {
  static constexpr bool kScattered = false;  // windows in grid order
  const Grid3& g;
  std::array<int64_t, 4> operator()(int64_t m) const {
    const int64_t P = g.per_image(), ty = g.times[1], tx = g.times[2], p = m % P;
    return {m / P, g.start(0, p / (ty * tx)), g.start(1, (p / tx) % ty), g.start(2, p % tx)};
  }
};
struct ListOrigins {
  static constexpr bool kScattered = true;
  const int64_t* table;
  std::array<int64_t, 4> operator()(int64_t m) const {
    const int64_t* r = table + 4 * m;
    return {r[0], r[1], r[2], r[3]};
  }
};

/// For each window row of patches (M, C, Wz, Wy, Wx) (contiguous `out`) taken from x (N, C, Sz, Sy, Sx), any
/// strides, at `origins`: row(dst, src, wz, wy) with src the row's first element in x (stride along X: x's).
/// With `stream`, a thread's non-temporal stores are fenced when its share is done.
template <typename T, typename Origins, typename Row>
void for_window_rows(const torch::Tensor& x, torch::Tensor& out, const std::array<int64_t, 3>& window,
                     const Origins& origins, bool stream, const Row& row) {
  const Strides5 s(x);
  const int64_t C = x.size(1), Wz = window[0], Wy = window[1], Wx = window[2], K = Wz * Wy * Wx;
  const T* xp = static_cast<const T*>(x.data_ptr());
  T* op = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, out.size(0) * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, K)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t q = begin; q < end; ++q) {  // patch plane q = m * C + c
                       const auto o = origins(q / C);
                       const T* src = xp + o[0] * s.n + (q % C) * s.c + o[1] * s.z + o[2] * s.y + o[3] * s.x;
                       T* dst = op + q * K;
                       for (int64_t wz = 0; wz < Wz; ++wz)
                         for (int64_t wy = 0; wy < Wy; ++wy, dst += Wx) row(dst, src + wz * s.z + wy * s.y, wz, wy);
                     }
                     if (stream) stream_fence();
                   });
}

/// patches (M, C, Wz, Wy, Wx) contiguous = windows of x (N, C, Sz, Sy, Sx), any strides, at `origins`. A pure copy.
template <typename T, typename Origins>
void gather_copy_cpu(const torch::Tensor& x, torch::Tensor& out, const std::array<int64_t, 3>& window,
                     const Origins& origins) {
  // Streaming stores pay off for grid windows, whose rows of a plane are written back to back; windows at
  // scattered origins run at the speed of their reads, and were slower with them (bench_patch_pairs).
  const bool stream = !Origins::kScattered && out.nbytes() >= static_cast<size_t>(kStreamOutputBytes);
  const int64_t Wx = window[2], sx = x.stride(4);
  // Short rows of a known size are copied inline (a memcpy call costs as much as moving 64 bytes).
  with_known<16, 32, 64, 128>(sx == 1 && !stream ? Wx * static_cast<int64_t>(sizeof(T)) : 0, [&](auto bytes) {
    if constexpr (decltype(bytes)::value > 0) {
      for_window_rows<T>(x, out, window, origins, false, [&](T* dst, const T* src, int64_t, int64_t) {
        std::memcpy(dst, src, decltype(bytes)::value);
      });
    } else {
      for_window_rows<T>(x, out, window, origins, stream,
                         [&](T* dst, const T* src, int64_t, int64_t) { copy_row(dst, src, Wx, sx, stream); });
    }
  });
}

/// Calls f(T{}) with T a plain type of x's element size: copies move bytes, whatever the dtype.
template <typename F>
inline void dispatch_by_size(const torch::Tensor& x, F&& f) {
  switch (x.element_size()) {
    case 1:
      return f(Bytes<1>{});
    case 2:
      return f(Bytes<2>{});
    case 4:
      return f(Bytes<4>{});
    case 8:
      return f(Bytes<8>{});
    case 16:
      return f(Bytes<16>{});
    default:
      TORCH_CHECK_TYPE(false, "qlty: unsupported element size ", x.element_size(), " of ", x.scalar_type());
  }
}

/// As gather_copy_cpu over the grid, each pixel multiplied by its stitching weight (the adjoint of a weighted fold).
template <typename T>
void unfold_weighted_cpu(const torch::Tensor& x, torch::Tensor& out, const Grid3& g) {
  using acc_t = at::opmath_type<T>;
  const int64_t Wx = g.window[2], sx = x.stride(4);
  const RowWeights<acc_t> weights(g, true);
  for_window_rows<T>(x, out, g.window, GridOrigins{g}, false, [&](T* dst, const T* src, int64_t wz, int64_t wy) {
    thread_local std::vector<acc_t> scratch;
    scratch.resize(static_cast<size_t>(Wx));
    const acc_t* w = weights.row(wz, wy, scratch.data());
    for (int64_t k = 0; k < Wx; ++k) dst[k] = static_cast<T>(w[k] * static_cast<acc_t>(src[k * sx]));
  });
}

/// Windows of x (N, C, Sz, Sy, Sx) into `out` (M, C, Wz, Wy, Wx), contiguous, preallocated.
inline void unfold_cpu(const torch::Tensor& x, torch::Tensor& out, const Grid3& g, bool weighted) {
  if (weighted) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "qlty::unfold_weighted_cpu",
                                    [&] { unfold_weighted_cpu<scalar_t>(x, out, g); });
    return;
  }
  dispatch_by_size(x, [&](auto e) { gather_copy_cpu<decltype(e)>(x, out, g.window, GridOrigins{g}); });
}

/// Windows of x (N, C, Sz, Sy, Sx) at origins (M, 4) int64 {n, z, y, x} (contiguous, on CPU) into `out`
/// (M, C, *window), contiguous, preallocated.
inline void gather_cpu(const torch::Tensor& x, const torch::Tensor& origins, torch::Tensor& out,
                       const std::array<int64_t, 3>& window) {
  dispatch_by_size(
      x, [&](auto e) { gather_copy_cpu<decltype(e)>(x, out, window, ListOrigins{origins.data_ptr<int64_t>()}); });
}

/// wsum (Sz, Sy, Sx) = sum of the window weights over one image's windows.
template <typename acc_t>
void weight_sum_cpu(acc_t* ws, const Grid3& g, const Cover& cz, const Cover& cy, bool weighted) {
  const int64_t Sy = g.shape[1], Sx = g.shape[2], Wx = g.window[2];
  const RowWeights<acc_t> weights(g, weighted);
  at::parallel_for(0, g.shape[0] * Sy, std::max<int64_t>(1, 16384 / Sx), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(static_cast<size_t>(Wx));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t z = r / Sy, y = r % Sy;
      acc_t* row = ws + r * Sx;
      std::fill(row, row + Sx, acc_t(0));
      for (int64_t kz = cz.first[z]; kz <= cz.last[z]; ++kz)
        for (int64_t ky = cy.first[y]; ky <= cy.last[y]; ++ky) {
          const acc_t* w = weights.row(z - g.start(0, kz), y - g.start(1, ky), scratch.data());
          for (int64_t kx = 0; kx < g.times[2]; ++kx) add_weights_row(row + g.start(2, kx), w, Wx);
        }
    }
  });
}

/// o = a / max(wsum, tiny), in the output's dtype (pixels no window touched have a = 0 and stay 0).
template <typename acc_t, typename T>
inline void store_normalized(T* __restrict o, const acc_t* __restrict a, const acc_t* __restrict wsum, acc_t tiny,
                             int64_t n) {
  for (int64_t k = 0; k < n; ++k) o[k] = static_cast<T>(a[k] / std::max(wsum[k], tiny));
}

/// out (N, C, Sz, Sy, Sx) = sum over windows of weight * patch (kernels/accumulate.hpp), divided by wsum when
/// `normalize`; wsum (Sz, Sy, Sx) in acc_t. Patches are read in patch order, whole windows at a time, so the patch
/// stream is sequential (the bandwidth this work is bound by). Along the outer axis A (Z, or Y for 2D) the windows form
/// rows; the pixels a window row touches accumulate in a ring of WA rows, and a row is normalised and written out as
/// soon as the next window row starts beyond it. A task owns a range of rows along A of one image and one group of
/// channels: each output pixel has one writer and sums its windows in patch order whatever the threads. Channel groups
/// keep a ring within kFoldRingBytes (a share of a shared L3 cache); a volume whose ring of one channel is larger is
/// also cut along Y into column ranges; ranges split along A only when there are too few tasks for the threads.
template <typename T>
void fold_cpu_impl(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const Grid3& g, bool weighted,
                   bool normalize) {
  using acc_t = at::opmath_type<T>;
  const Strides5 s(patches);
  const int64_t N = out.size(0), C = out.size(1), Sy = g.shape[1], Sx = g.shape[2], L = g.image_numel();
  const int64_t Wz = g.window[0], Wy = g.window[1], Wx = g.window[2], P = g.per_image();
  const int64_t ty = g.times[1], tx = g.times[2];
  const int A = g.shape[0] > 1 ? 0 : 1;           // the axis of window rows
  const int64_t row_len = A == 0 ? Sy * Sx : Sx;  // elements per step along A
  const int64_t SA = g.shape[A], WA = g.window[A];
  const Cover cz = cover(g, 0), cy = cover(g, 1), &ca = A == 0 ? cz : cy;
  acc_t* ws = wsum.data_ptr<acc_t>();
  weight_sum_cpu<acc_t>(ws, g, cz, cy, weighted);
  if (N == 0 || C == 0) return;
  const RowWeights<acc_t> weights(g, weighted);
  const T* pp = patches.data_ptr<T>();
  T* op = out.data_ptr<T>();

  const int64_t ring_channel = WA * row_len * static_cast<int64_t>(sizeof(acc_t));
  const int64_t group = std::max<int64_t>(1, std::min(C, kFoldRingBytes / ring_channel));
  const int64_t groups = (C + group - 1) / group;
  // Volumes whose ring of one channel exceeds the budget are also cut along Y into column ranges (each at least a
  // window high), so no thread holds more than about kFoldRingBytes whatever the volume.
  const int64_t columns = A == 0 ? std::max<int64_t>(1, std::min((ring_channel + kFoldRingBytes - 1) / kFoldRingBytes,
                                                                 std::max<int64_t>(1, Sy / Wy)))
                                 : 1;
  const int64_t HY = (Sy + columns - 1) / columns;
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t others = N * groups * columns;
  const int64_t ranges = std::max<int64_t>(1, std::min((wanted + others - 1) / others, std::max<int64_t>(1, SA / WA)));
  const int64_t H = (SA + ranges - 1) / ranges;
  const bool stream = out.nbytes() >= static_cast<size_t>(kStreamOutputBytes);
  const acc_t tiny = std::numeric_limits<acc_t>::min();  // pixels no window touched have acc = wsum = 0: stay 0

  auto run = [&](auto width) {
    constexpr int64_t kWidth = decltype(width)::value;  // 0: Wx at run time
    const int64_t wx = kWidth ? kWidth : Wx;
    at::parallel_for(0, N * groups * columns * ranges, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> ring, scratch(static_cast<size_t>(Wx));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / (groups * columns * ranges);
        const int64_t c0 = task / (columns * ranges) % groups * group, c1 = std::min(C, c0 + group);
        const int64_t Y0 = task / ranges % columns * HY, Y1 = std::min(Sy, Y0 + HY);  // (3D) the task's rows of Y
        const int64_t R0 = task % ranges * H, R1 = std::min(SA, R0 + H);
        if (R0 >= R1 || Y0 >= Y1) continue;
        // A ring row: the task's part of a plane (3D: rows Y0..Y1 of a Z plane, contiguous; 2D: a row of X).
        const int64_t first = A == 0 ? Y0 * Sx : 0, len = A == 0 ? (Y1 - Y0) * Sx : row_len;
        ring.assign((c1 - c0) * WA * len, acc_t(0));
        auto slot = [&](int64_t c, int64_t r) { return ring.data() + ((c - c0) * WA + r % WA) * len; };
        int64_t done = R0;  // rows before `done` are written out
        auto flush = [&](int64_t upto) {
          for (int64_t r = done; r < upto; ++r) {
            const acc_t* wb = ws + r * row_len + first;
            for (int64_t c = c0; c < c1; ++c) {
              acc_t* a = slot(c, r);
              T* o = op + (n * C + c) * L + r * row_len + first;
              if (!normalize) {
                for (int64_t k = 0; k < len; ++k) o[k] = static_cast<T>(a[k]);
              } else if (std::is_same<T, acc_t>::value && stream) {  // streamed: the output is not read again soon
                for (int64_t k = 0; k < len; ++k) a[k] /= std::max(wb[k], tiny);
                stream_copy(o, a, len * sizeof(T));
              } else {
                store_normalized(o, a, wb, tiny, len);
              }
              std::fill(a, a + len, acc_t(0));
            }
          }
          done = std::max(done, upto);
        };

        for (int64_t ka = ca.first[R0]; ka <= ca.last[R1 - 1]; ++ka) {
          const int64_t start = g.start(A, ka);
          flush(std::min(start, R1));  // no later window row reaches below its start
          const int64_t wa0 = std::max(R0, start) - start, wa1 = std::min(R1, start + WA) - start;
          const int64_t kz0 = A == 0 ? ka : 0, kz1 = A == 0 ? ka + 1 : g.times[0];
          const int64_t ky0 = A == 1 ? ka : cy.first[Y0], ky1 = A == 1 ? ka + 1 : cy.last[Y1 - 1] + 1;
          const int64_t wz0 = A == 0 ? wa0 : 0, wz1 = A == 0 ? wa1 : Wz;
          for (int64_t kz = kz0; kz < kz1; ++kz)
            for (int64_t ky = ky0; ky < ky1; ++ky)
              for (int64_t kx = 0; kx < tx; ++kx) {
                const int64_t z0 = g.start(0, kz), y0 = g.start(1, ky), x0 = g.start(2, kx);
                const int64_t m = n * P + (kz * ty + ky) * tx + kx;
                // Rows of the window within the task: along A in 2D, within the column range in 3D.
                const int64_t wy0 = A == 1 ? wa0 : std::max(Y0, y0) - y0,
                              wy1 = A == 1 ? wa1 : std::min(Y1, y0 + Wy) - y0;
                for (int64_t c = c0; c < c1; ++c)
                  for (int64_t wz = wz0; wz < wz1; ++wz) {
                    // The ring row of (wz, wy0) and of each next wy (2D: rows along Y wrap around the ring).
                    acc_t* base = A == 0 ? slot(c, z0 + wz) + (y0 - Y0) * Sx + x0 : nullptr;
                    int64_t rr = A == 1 ? (y0 + wy0) % WA : 0;
                    acc_t* cring = ring.data() + (c - c0) * WA * len + x0;
                    for (int64_t wy = wy0; wy < wy1; ++wy) {
                      const T* prow = pp + m * s.n + c * s.c + wz * s.z + wy * s.y;
                      acc_t* o;
                      if (A == 0) {
                        o = base + wy * Sx;
                      } else {
                        o = cring + rr * len;
                        if (++rr == WA) rr = 0;
                      }
                      const acc_t* w = weights.row(wz, wy, scratch.data());
                      if (s.x == 1 && weights.uniform(w)) {
                        add_scaled_row(o, prow, w[0], wx);
                      } else if (s.x == 1) {
                        add_weighted_row(o, prow, w, wx);
                      } else {
                        add_weighted_row(o, prow, w, Wx, s.x);
                      }
                    }
                  }
              }
        }
        flush(R1);
      }
      if (stream) stream_fence();
    });
  };
  with_known<8, 16, 32, 64>(s.x == 1 ? Wx : 0, run);
}

/// Floating patches (M, C, Wz, Wy, Wx), any strides, into preallocated contiguous out and wsum.
inline void fold_cpu(const torch::Tensor& patches, torch::Tensor& out, torch::Tensor& wsum, const Grid3& g,
                     bool weighted, bool normalize) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, patches.scalar_type(), "qlty::fold_cpu",
                                  [&] { fold_cpu_impl<scalar_t>(patches, out, wsum, g, weighted, normalize); });
}

}  // namespace qlty::detail
