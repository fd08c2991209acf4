#pragma once
/// @file patch_pairs.hpp
/// @brief Pairs of overlapping patches at random displacements, and the pixels they share, for self-supervised
/// training: extract_patch_pairs(_3d) and extract_overlapping_pixels(_3d).

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <qlty/kernels.hpp>

namespace qlty {

namespace detail {

/// Every integer vector (dx, dy[, dz]) with low <= its length <= high, x fastest.
template <int D>
std::vector<std::array<int64_t, D>> displacements(double low, double high) {
  std::vector<std::array<int64_t, D>> out;
  const auto r = static_cast<int64_t>(std::floor(high));
  std::array<int64_t, 3> d{};
  for (d[2] = D == 3 ? -r : 0; d[2] <= (D == 3 ? r : 0); ++d[2])
    for (d[1] = -r; d[1] <= r; ++d[1])
      for (d[0] = -r; d[0] <= r; ++d[0]) {
        const double len = std::sqrt(static_cast<double>(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]));
        if (len >= low && len <= high) {
          std::array<int64_t, D> v{};
          for (int a = 0; a < D; ++a) v[a] = d[a];
          out.push_back(v);
        }
      }
  return out;
}

inline at::Generator pair_generator(std::optional<uint64_t> seed) {
  return seed ? at::make_generator<at::CPUGeneratorImpl>(*seed) : at::detail::getDefaultCPUGenerator();
}

/// One uniform integer in [lo[i], hi[i]] for each i (int64 CPU tensors).
inline torch::Tensor uniform_between(const torch::Tensor& lo, const torch::Tensor& hi, at::Generator& gen) {
  auto u = torch::rand(lo.sizes(), gen, torch::kFloat64);
  auto count = (hi - lo + 1).to(torch::kFloat64);
  return torch::minimum(lo + (u * count).floor().to(torch::kInt64), hi);  // u * count rounds below count
}

/// rot90(k) of the pairs whose k (mod 4) is 1, 2 or 3: one op per distinct turn, not per pair.
inline torch::Tensor rotate_pairs(const torch::Tensor& patches, const torch::Tensor& turns, int sign) {
  auto out = patches;
  auto k4 = turns.remainder(4);
  for (int64_t k = 1; k < 4; ++k) {
    auto sel = (k4 == k).nonzero().squeeze(1);
    if (sel.numel() == 0) continue;
    auto rotated = torch::rot90(out.index_select(0, sel), sign * k, {-2, -1});
    out = out.index_put({sel}, rotated);
  }
  return out;
}

/// rot90(k) in place, for the pairs whose k (mod 4) is 1, 2 or 3 (square patches for odd k).
inline void rotate_pairs_(torch::Tensor& patches, const torch::Tensor& turns) {
  auto k4 = turns.remainder(4);
  for (int64_t k = 1; k < 4; ++k) {
    auto sel = (k4 == k).nonzero().squeeze(1);
    if (sel.numel() == 0) continue;
    patches.index_copy_(0, sel, torch::rot90(patches.index_select(0, sel), k, {-2, -1}));
  }
}

/// t.resize_(sizes), reusing t's memory when it is large enough; a tensor whose memory cannot grow (a view of
/// foreign memory, such as qlty's own outputs) gets fresh memory instead.
inline torch::Tensor& resize_output(torch::Tensor& t, c10::IntArrayRef sizes) {
  int64_t numel = 1;
  for (auto v : sizes) numel *= v;
  const auto needed = static_cast<size_t>((numel + t.storage_offset()) * static_cast<int64_t>(t.element_size()));
  if (!t.storage().resizable() && t.storage().nbytes() < needed) t.set_(torch::empty({0}, t.options()));
  t.resize_(sizes);
  mark_written(t);
  return t;
}

/// Offsets (M + 1) of each pair's first overlapping pixel: the prefix sum of prod(W - |d|) over axes.
inline std::vector<int64_t> overlap_offsets(const torch::Tensor& d, const std::array<int64_t, 3>& w) {
  const int64_t M = d.size(0);
  std::vector<int64_t> off(M + 1, 0);
  auto acc = d.accessor<int64_t, 2>();
  for (int64_t i = 0; i < M; ++i) {
    int64_t count = 1;
    for (int a = 0; a < 3; ++a) count *= std::max<int64_t>(0, w[a] - std::abs(acc[i][a]));
    off[i + 1] = off[i] + count;
  }
  return off;
}

/// Moves n pixels of C channels between a patch row (pixel stride sj, channel stride sc) and rows of (n, C).
/// Rows are walked pixel by pixel, so the (n, C) side is read or written contiguously; one channel is a copy.
/// CC > 0 is C known at compile time (the loop over channels unrolls).
template <typename T, bool backward, int CC>
inline void move_row(T* p, int64_t sj, int64_t sc, T* r, int64_t n, int64_t C) {
  if (CC == 1 && sj == 1) {
    backward ? std::memcpy(p, r, n * sizeof(T)) : std::memcpy(r, p, n * sizeof(T));
    return;
  }
  const int64_t channels = CC > 0 ? CC : C;
  for (int64_t j = 0; j < n; ++j, r += channels) {
    T* q = p + j * sj;
    if (backward) {
      for (int64_t c = 0; c < channels; ++c) q[c * sc] = r[c];
    } else {
      for (int64_t c = 0; c < channels; ++c) r[c] = q[c * sc];
    }
  }
}

/// Native CPU overlap: for pair i and each pixel (z, y, x) of patch 1 whose shifted place (z - dz, y - dy,
/// x - dx) lies in patch 2, row k of o1 takes patch 1's C values there and row k of o2 takes patch 2's, read
/// through its rotation. With `backward`, the same map runs the other way: o1/o2 rows into zeroed p1/p2 grads
/// (each patch pixel is at most one row, so no sums). T is a plain element of the dtype's size.
template <typename T, bool backward, int CC = 0>
void overlap_cpu(T* p1, T* p2, const Strides5& s1, const Strides5& s2, T* o1, T* o2, const torch::Tensor& d,
                 const int64_t* turns, const std::array<int64_t, 3>& w, int64_t C, const std::vector<int64_t>& off) {
  if (CC == 0 && C >= 1 && C <= 4) {  // the common channel counts get unrolled loops
    auto fixed = [&](auto cc) {
      overlap_cpu<T, backward, decltype(cc)::value>(p1, p2, s1, s2, o1, o2, d, turns, w, C, off);
    };
    if (C == 1) return fixed(std::integral_constant<int, 1>{});
    if (C == 2) return fixed(std::integral_constant<int, 2>{});
    if (C == 3) return fixed(std::integral_constant<int, 3>{});
    return fixed(std::integral_constant<int, 4>{});
  }
  const int64_t M = d.size(0);
  auto da = d.accessor<int64_t, 2>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (off[i + 1] == off[i]) continue;  // the pair shares no pixel: |d| >= the window along some axis
      const int64_t dz = da[i][0], dy = da[i][1], dx = da[i][2], k = ((turns[i] % 4) + 4) % 4;
      const int64_t Wy = w[1], Wx = w[2];
      int64_t row = off[i];
      const int64_t x0 = std::max<int64_t>(0, dx), nx = std::min(Wx, Wx + dx) - x0;
      for (int64_t z = std::max<int64_t>(0, dz); z < std::min(w[0], w[0] + dz); ++z)
        for (int64_t y = std::max<int64_t>(0, dy); y < std::min(Wy, Wy + dy); ++y, row += nx) {
          // Patch 1's row segment, channel by channel.
          T* a = p1 + i * s1.n + z * s1.z + y * s1.y + x0 * s1.x;
          T* r1 = o1 + row * C;
          move_row<T, backward, CC>(a, s1.x, s1.c, r1, nx, C);
          // Patch 2's pixels (y - dy, x - dx), read through rot90(k): (y2, x2) of the unrotated patch sits at
          // (ry, rx) of the stored one, which moves by (sy, sx) per step in x.
          const int64_t y2 = y - dy, x2 = x0 - dx;
          int64_t ry = y2, rx = x2, sy = 0, sx = 1;
          if (k == 1) {
            ry = Wx - 1 - x2;
            rx = y2;
            sy = -1;
            sx = 0;
          } else if (k == 2) {
            ry = Wy - 1 - y2;
            rx = Wx - 1 - x2;
            sy = 0;
            sx = -1;
          } else if (k == 3) {
            ry = x2;
            rx = Wy - 1 - y2;
            sy = 1;
            sx = 0;
          }
          T* b = p2 + i * s2.n + (z - dz) * s2.z + ry * s2.y + rx * s2.x;
          const int64_t step = sy * s2.y + sx * s2.x;
          T* r2 = o2 + row * C;
          move_row<T, backward, CC>(b, step, s2.c, r2, nx, C);
        }
    }
  });
}

/// Pairs in five dimensions (M, C, Z, Y, X), deltas (M, 3) and quarter turns (M), int64 on CPU.
struct OverlapFunction : torch::autograd::Function<OverlapFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& p1,
                                                const torch::Tensor& p2, const torch::Tensor& d,
                                                const torch::Tensor& turns) {
    ctx->save_for_backward({d, turns});
    ctx->saved_data["shape"] = p1.sizes().vec();
    return run(p1, p2, d, turns);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto shape = ctx->saved_data["shape"].toIntVector();
    auto like = grads[0].defined() ? grads[0] : grads[1];
    auto g1 = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(like);
    auto g2 = grads[1].defined() ? grads[1].contiguous() : torch::zeros_like(like);
    auto q1 = torch::zeros(shape, g1.options()), q2 = torch::zeros(shape, g1.options());
    const std::array<int64_t, 3> w{shape[2], shape[3], shape[4]};
    const auto off = overlap_offsets(saved[0], w);
    const int64_t* turns = saved[1].data_ptr<int64_t>();
    dispatch_by_size(g1, [&](auto e) {
      using T = decltype(e);
      overlap_cpu<T, true>(static_cast<T*>(q1.data_ptr()), static_cast<T*>(q2.data_ptr()), Strides5(q1), Strides5(q2),
                           static_cast<T*>(g1.data_ptr()), static_cast<T*>(g2.data_ptr()), saved[0], turns, w, shape[1],
                           off);
    });
    return {q1, q2, torch::Tensor(), torch::Tensor()};
  }
  /// The overlap into fresh tensors, or into o1 and o2 when given (contiguous, already of shape (K, C)).
  static torch::autograd::variable_list run(const torch::Tensor& p1, const torch::Tensor& p2, const torch::Tensor& d,
                                            const torch::Tensor& turns, torch::Tensor o1 = {}, torch::Tensor o2 = {}) {
    const std::array<int64_t, 3> w{p1.size(2), p1.size(3), p1.size(4)};
    const auto off = overlap_offsets(d, w);
    const int64_t C = p1.size(1);
    if (!o1.defined()) {
      o1 = empty_output({off.back(), C}, p1.options());
      o2 = empty_output({off.back(), C}, p1.options());
    }
    TORCH_INTERNAL_ASSERT(o1.sizes() == o2.sizes() && o1.size(0) == off.back() && o1.size(1) == C);
    const int64_t* t = turns.data_ptr<int64_t>();
    dispatch_by_size(p1, [&](auto e) {
      using T = decltype(e);
      overlap_cpu<T, false>(static_cast<T*>(p1.data_ptr()), static_cast<T*>(p2.data_ptr()), Strides5(p1), Strides5(p2),
                            static_cast<T*>(o1.data_ptr()), static_cast<T*>(o2.data_ptr()), d, t, w, C, off);
    });
    return {o1, o2};
  }
};

template <int D>
const char* pairs_name() {
  return D == 2 ? "extract_patch_pairs" : "extract_patch_pairs_3d";
}
template <int D>
const char* overlap_name() {
  return D == 2 ? "extract_overlapping_pixels" : "extract_overlapping_pixels_3d";
}

/// The shared body of extract_patch_pairs(_3d): returns (patches1, patches2, deltas, rotations).
template <int D>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> extract_pairs(
    const torch::Tensor& x, const std::array<int64_t, D>& window, int64_t num_patches,
    std::pair<double, double> delta_range, std::optional<uint64_t> seed,
    const std::optional<std::vector<int64_t>>& rotation_choices,
    const std::array<torch::Tensor*, 2>& into = {nullptr, nullptr},
    const std::array<torch::Tensor*, 2>& positions = {nullptr, nullptr}) {
  const std::string who_out = c10::str(pairs_name<D>(), "_out");
  const char* who = into[0] ? who_out.c_str() : pairs_name<D>();
  const char* axes = D == 2 ? "(N, C, Y, X)" : "(N, C, Z, Y, X)";
  TORCH_CHECK_VALUE(x.dim() == D + 2, who, ": x must be ", D + 2, "-D ", axes, ", got ", x.dim(), "-D tensor of shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(num_patches >= 1, who, ": num_patches must be >= 1, got ", num_patches);
  int64_t wmax = 0;
  for (int a = 0; a < D; ++a) {
    TORCH_CHECK_VALUE(window[a] >= 1, who, ": window must be >= 1 on every axis, got ", c10::IntArrayRef(window));
    wmax = std::max(wmax, window[a]);
  }
  const auto [low, high] = delta_range;
  TORCH_CHECK_VALUE(low <= high, who, ": delta_range must have low <= high, got (", low, ", ", high, ")");
  TORCH_CHECK_VALUE(low >= static_cast<double>(wmax / 4) && high <= static_cast<double>(3 * wmax / 4), who,
                    ": delta_range must lie in [max(window) / 4, 3 * max(window) / 4] = [", wmax / 4, ", ",
                    3 * wmax / 4, "] for window ", c10::IntArrayRef(window), ", got (", low, ", ", high, ")");
  const auto reach = static_cast<int64_t>(high);
  for (int a = 0; a < D; ++a)
    TORCH_CHECK_VALUE(x.size(2 + a) >= window[a] + reach, who,
                      ": the image must be at least window + int(high) = ", window[a] + reach, " along ",
                      detail::axis_name(D, a), ", got shape ", x.sizes());
  if (rotation_choices) {
    TORCH_CHECK_VALUE(D == 2, who, ": rotations are for 2D pairs only");
    TORCH_CHECK_VALUE(!rotation_choices->empty(), who, ": rotation_choices must not be empty");
    for (auto k : *rotation_choices)
      TORCH_CHECK_VALUE(k % 2 == 0 || window[0] == window[D - 1], who, ": an odd quarter turn (", k,
                        ") needs a square window, got ", c10::IntArrayRef(window));
  }
  const auto table = displacements<D>(low, high);
  TORCH_CHECK_VALUE(!table.empty(), who, ": no integer displacement has a length in [", low, ", ", high, "]");

  const int64_t N = x.size(0), M = N * num_patches;
  if (into[0]) {
    std::vector<int64_t> sizes{M, x.size(1)};
    sizes.insert(sizes.end(), window.begin(), window.end());
    check_out(who, "patches1", *into[0], sizes, x.scalar_type(), x.device(), {{"x", &x}, {"patches2", into[1]}});
    check_out(who, "patches2", *into[1], sizes, x.scalar_type(), x.device(), {{"x", &x}});
  }

  // Sampling: a few draws of N * P numbers on the CPU generator (same seed, same pairs on every device).
  auto gen = pair_generator(seed);
  std::vector<int64_t> flat;
  for (const auto& v : table) flat.insert(flat.end(), v.begin(), v.end());
  auto vectors = torch::tensor(flat, torch::kInt64).view({-1, D});  // (A, D) as (dx, dy[, dz])
  auto deltas = vectors.index_select(0, torch::randint(vectors.size(0), {M}, gen, torch::kInt64));
  auto origins = torch::zeros({M, 4}, torch::kInt64);
  origins.select(1, 0).copy_(torch::arange(N, torch::kInt64).repeat_interleave(num_patches));
  auto shifted = origins.clone();
  for (int a = 0; a < D; ++a) {  // axis a of the window (z, y, x order) moves by component D - 1 - a
    auto d = deltas.select(1, D - 1 - a);
    const int64_t last = x.size(2 + a) - window[a];
    auto start = uniform_between(torch::clamp_min(-d, 0), torch::clamp_max(last - d, last), gen);
    origins.select(1, 4 - D + a).copy_(start);
    shifted.select(1, 4 - D + a).copy_(start + d);
  }
  if (positions[0]) {  // (n, [z,] y, x): the image index and the window's first pixel
    const auto columns = torch::cat({torch::zeros({1}, torch::kInt64), torch::arange(4 - D, 4)});
    *positions[0] = origins.index_select(1, columns).to(x.device());
    *positions[1] = shifted.index_select(1, columns).to(x.device());
  }
  auto turns = torch::zeros({M}, torch::kInt64);
  if (rotation_choices) {
    auto choices = torch::tensor(*rotation_choices, torch::kInt64);
    turns = choices.index_select(0, torch::randint(choices.size(0), {M}, gen, torch::kInt64));
  }

  // Extraction: one gather per patch set on x's device.
  const auto x5 = D == 2 ? x.unsqueeze(2) : x;
  const std::array<int64_t, 3> w3 = D == 2 ? std::array<int64_t, 3>{1, window[0], window[1]}
                                           : std::array<int64_t, 3>{window[0], window[1], window[2]};
  torch::Tensor p1, p2;
  if (into[0]) {
    for (int i = 0; i < 2; ++i) {
      mark_written(*into[i]);
      auto o5 = D == 2 ? into[i]->unsqueeze(2) : *into[i];
      GatherFunction::gather_into(x5, i == 0 ? origins : shifted, w3, o5);
    }
    p1 = *into[0];
    p2 = *into[1];
    if (rotation_choices) rotate_pairs_(p2, turns.to(x.device()));
  } else {
    p1 = gather_windows(x5, origins, w3);
    p2 = gather_windows(x5, shifted, w3);
    if (D == 2) {
      p1 = p1.squeeze(2);
      p2 = p2.squeeze(2);
    }
    if (rotation_choices) p2 = rotate_pairs(p2, turns.to(x.device()), 1);
  }
  return {p1, p2, deltas.to(torch::TensorOptions().dtype(torch::kFloat32).device(x.device())), turns.to(x.device())};
}

/// The pairs' deltas (M, D) as (dx, dy[, dz]), int64 on the CPU: refused unless finite whole numbers; a component
/// beyond the window is clamped to the window (the pair shares no pixel either way).
template <int D>
torch::Tensor integral_deltas(const char* who, const torch::Tensor& deltas, const torch::Tensor& patches) {
  TORCH_CHECK_TYPE(!deltas.is_complex() && deltas.scalar_type() != torch::kBool, who,
                   ": deltas must be real numbers, got ", deltas.scalar_type());
  auto d = deltas.detach().to(torch::kCPU, torch::kDouble).contiguous();
  auto first_bad = [&](const torch::Tensor& bad, const char* what) {
    auto where = bad.nonzero();
    if (where.size(0) == 0) return;
    const int64_t i = where[0][0].item<int64_t>(), a = where[0][1].item<int64_t>();
    const char* names[] = {"dx", "dy", "dz"};
    TORCH_CHECK_VALUE(false, who, ": deltas must be ", what, ", got ", d[i][a].item<double>(), " as ", names[a],
                      " of pair ", i);
  };
  first_bad(torch::isfinite(d).logical_not(), "finite");
  first_bad(d != d.round(), "whole numbers of pixels");
  for (int a = 0; a < D; ++a) {  // component a moves window axis D - 1 - a
    const auto w = static_cast<double>(patches.size(2 + D - 1 - a));
    d.select(1, a).clamp_(-w, w);
  }
  return d.to(torch::kInt64);
}

/// The overlap by vectorised torch ops (masks built from the deltas), for any device; differentiable through
/// torch's own autograd. CPU tensors take the native OverlapFunction instead. The deltas are whole numbers
/// (integral_deltas).
template <int D>
std::tuple<torch::Tensor, torch::Tensor> overlap_torch(const torch::Tensor& p1, const torch::Tensor& p2,
                                                       const torch::Tensor& deltas, const torch::Tensor& rotations) {
  const int64_t M = p1.size(0);
  auto q2 = rotations.defined() ? rotate_pairs(p2, rotations.to(p2.device(), torch::kInt64), -1) : p2;
  // Masks of the shared pixels: (u, v[, w]) of patch 1 matches (u - d) of patch 2, and (u) of patch 2 matches
  // (u + d) of patch 1; both enumerate the overlap in the same row-major order.
  auto d = deltas.to(p1.device(), torch::kInt64);
  auto opts = d.options();
  auto inside1 = torch::ones({M, 1, 1, 1}, opts.dtype(torch::kBool));
  auto inside2 = inside1.clone();
  for (int a = 0; a < D; ++a) {
    const int64_t Wa = p1.size(2 + a);
    std::vector<int64_t> shape(4, 1);
    shape[(4 - D) + a] = Wa;  // 2D masks use a unit Z axis
    auto u = torch::arange(Wa, opts).view(shape);
    auto da = d.select(1, D - 1 - a).view({M, 1, 1, 1});
    inside1 = inside1.logical_and((u - da >= 0).logical_and(u - da < Wa));
    inside2 = inside2.logical_and((u + da >= 0).logical_and(u + da < Wa));
  }
  auto last = [&](const torch::Tensor& p) {  // (M, C, ...) -> (M, 1 or Z, Y, X, C)
    auto q = D == 2 ? p.unsqueeze(2) : p;
    return q.permute({0, 2, 3, 4, 1});
  };
  return {last(p1).index({inside1}), last(q2).index({inside2})};
}

/// The outputs of extract_overlapping_pixels_out, resized to (K, C) (resize_output): of the patches' dtype and
/// device, contiguous, sharing no memory with the inputs or each other (checked again after the resize, which can
/// grow a view into an input's memory); no autograd.
inline void prepare_overlap_outputs(const char* who, const torch::Tensor& p1, const torch::Tensor& p2,
                                    const torch::Tensor& deltas, const std::array<torch::Tensor*, 2>& into, int64_t K) {
  const std::array<const char*, 2> names{"overlapping1", "overlapping2"};
  for (int i = 0; i < 2; ++i) {
    const torch::Tensor& o = *into[i];
    // Shape is free (the output is resized); the rest is checked as for every _out call.
    check_out(who, names[i], o, o.defined() ? o.sizes() : c10::IntArrayRef{}, p1.scalar_type(), p1.device(),
              {{"patches1", &p1}, {"patches2", &p2}, {"deltas", &deltas}});
  }
  // Resizing one of two tensors on one storage would move the other's memory: they need storages of their own.
  TORCH_CHECK_VALUE(into[0]->storage().unsafeGetStorageImpl() != into[1]->storage().unsafeGetStorageImpl(), who,
                    ": overlapping1 and overlapping2 must not share memory");
  for (int i = 0; i < 2; ++i) {
    resize_output(*into[i], {K, p1.size(1)});
    check_no_overlap(who, names[i], *into[i], {{"patches1", &p1}, {"patches2", &p2}, {"deltas", &deltas}});
  }
}

/// The shared body of extract_overlapping_pixels(_3d).
template <int D>
std::tuple<torch::Tensor, torch::Tensor> overlapping(const torch::Tensor& p1, const torch::Tensor& p2,
                                                     const torch::Tensor& deltas,
                                                     const std::optional<torch::Tensor>& rotations,
                                                     const std::array<torch::Tensor*, 2>& into = {nullptr, nullptr}) {
  const std::string who_out = c10::str(overlap_name<D>(), "_out");
  const char* who = into[0] ? who_out.c_str() : overlap_name<D>();
  TORCH_CHECK_VALUE(p1.dim() == D + 2, who, ": patches1 must be ", D + 2, "-D (M, C, window), got shape ", p1.sizes());
  TORCH_CHECK_VALUE(p1.sizes() == p2.sizes(), who, ": patches1 and patches2 must have the same shape, got ", p1.sizes(),
                    " and ", p2.sizes());
  const int64_t M = p1.size(0);
  TORCH_CHECK_VALUE(deltas.dim() == 2 && deltas.size(0) == M && deltas.size(1) == D, who, ": deltas must be (M, ", D,
                    ") for M = ", M, " pairs, got shape ", deltas.sizes());
  const bool rotated = rotations && rotations->defined();
  if (rotated) {
    TORCH_CHECK_VALUE(D == 2, who, ": rotations are for 2D pairs only");
    TORCH_CHECK_VALUE(rotations->dim() == 1 && rotations->size(0) == M, who, ": rotations must be (M,) for M = ", M,
                      " pairs, got shape ", rotations->sizes());
    TORCH_CHECK_TYPE(!rotations->is_floating_point() && !rotations->is_complex(), who,
                     ": rotations must be integer quarter turns, got ", rotations->scalar_type());
    TORCH_CHECK_VALUE(p1.size(-1) == p1.size(-2) || (rotations->remainder(2) == 0).all().item<bool>(), who,
                      ": odd quarter turns need square patches, got ", p1.sizes());
  }
  const auto d = integral_deltas<D>(who, deltas, p1);  // (M, D) as (dx, dy[, dz])
  auto d3 = torch::zeros({M, 3}, torch::kInt64);       // (M, 3) as (dz, dy, dx)
  for (int a = 0; a < D; ++a) d3.select(1, 3 - D + a).copy_(d.select(1, D - 1 - a));
  const auto q1 = D == 2 ? p1.unsqueeze(2) : p1, q2 = D == 2 ? p2.unsqueeze(2) : p2;
  if (into[0])
    prepare_overlap_outputs(who, p1, p2, deltas, into,
                            overlap_offsets(d3, {q1.size(2), q1.size(3), q1.size(4)}).back());
  if (p1.device().is_cpu() && p2.device().is_cpu()) {  // native kernel; the torch ops below serve other devices
    auto turns = rotated ? rotations->to(torch::kInt64).contiguous() : torch::zeros({M}, torch::kInt64);
    torch::autograd::variable_list o;
    if ((q1.requires_grad() || q2.requires_grad()) && torch::GradMode::is_enabled())
      o = OverlapFunction::apply(q1, q2, d3, turns);
    else if (into[0])
      o = OverlapFunction::run(q1, q2, d3, turns, *into[0], *into[1]);
    else
      o = OverlapFunction::run(q1, q2, d3, turns);
    return {o[0], o[1]};
  }
  auto [o1, o2] = overlap_torch<D>(p1, p2, d, rotated ? *rotations : torch::Tensor());
  if (!into[0]) return {o1, o2};
  into[0]->copy_(o1);
  into[1]->copy_(o2);
  return {*into[0], *into[1]};
}

}  // namespace detail

/// @brief (patches1 (N*P, C, U, V), patches2, deltas (N*P, 2) float32 as (dx, dy), rotations (N*P,) int64):
/// P pairs per image of x (N, C, Y, X); patch 2 starts at (y + dy, x + dx) and is turned by rot90(k) with k drawn
/// from rotation_choices (all 0 without). Displacements are uniform over the integer vectors with
/// low <= length <= high, origins uniform where both patches fit. The same seed gives the same pairs; without
/// one the global CPU generator draws them. Differentiable with respect to x.
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> extract_patch_pairs(
    const torch::Tensor& x, const std::array<int64_t, 2>& window, int64_t num_patches,
    std::pair<double, double> delta_range, std::optional<uint64_t> seed = std::nullopt,
    const std::optional<std::vector<int64_t>>& rotation_choices = std::nullopt) {
  return detail::extract_pairs<2>(x, window, num_patches, delta_range, seed, rotation_choices);
}

/// @brief extract_patch_pairs (the same pairs for the same seed), and where their patches lie: positions1 and
/// positions2 (N*P, 3) int64 as (n, y, x), the image and the first pixel of patch 1 and of patch 2 (before its turn),
/// the original's `return_positions` with `include_n_position` (drop column 0 for (y, x)).
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
extract_patch_pairs_with_positions(const torch::Tensor& x, const std::array<int64_t, 2>& window, int64_t num_patches,
                                   std::pair<double, double> delta_range, std::optional<uint64_t> seed = std::nullopt,
                                   const std::optional<std::vector<int64_t>>& rotation_choices = std::nullopt) {
  torch::Tensor pos1, pos2;
  auto [p1, p2, d, r] = detail::extract_pairs<2>(x, window, num_patches, delta_range, seed, rotation_choices,
                                                 {nullptr, nullptr}, {&pos1, &pos2});
  return {p1, p2, d, r, pos1, pos2};
}

/// @brief extract_patch_pairs into patches1 and patches2, buffers a training loop reuses: (N*P, C, U, V),
/// contiguous, of x's dtype and device, sharing no memory with x or each other. Returns (deltas, rotations). The same
/// seed gives bitwise the same pairs as extract_patch_pairs. No autograd (an input that requires grad is refused).
inline std::tuple<torch::Tensor, torch::Tensor> extract_patch_pairs_out(
    const torch::Tensor& x, const std::array<int64_t, 2>& window, int64_t num_patches,
    std::pair<double, double> delta_range, torch::Tensor& patches1, torch::Tensor& patches2,
    std::optional<uint64_t> seed = std::nullopt,
    const std::optional<std::vector<int64_t>>& rotation_choices = std::nullopt) {
  auto [p1, p2, d, r] =
      detail::extract_pairs<2>(x, window, num_patches, delta_range, seed, rotation_choices, {&patches1, &patches2});
  return {d, r};
}

/// @brief (overlapping1 (K, C), overlapping2 (K, C)): for each pair in order, after undoing its rotation, the
/// pixels (u, v) of patch 1 that lie in patch 2 at (u - dy, v - dx), row-major, and those pixels of patch 2.
inline std::tuple<torch::Tensor, torch::Tensor> extract_overlapping_pixels(
    const torch::Tensor& patches1, const torch::Tensor& patches2, const torch::Tensor& deltas,
    const std::optional<torch::Tensor>& rotations = std::nullopt) {
  return detail::overlapping<2>(patches1, patches2, deltas, rotations);
}

/// @brief extract_overlapping_pixels into overlapping1 and overlapping2, resized to (K, C) as LibTorch's `_out`
/// functions resize: their memory is reused when large enough, so a loop pays for fresh pages once. Of the
/// patches' dtype and device, contiguous, sharing no memory with the inputs or each other; no autograd.
inline std::tuple<torch::Tensor&, torch::Tensor&> extract_overlapping_pixels_out(
    const torch::Tensor& patches1, const torch::Tensor& patches2, const torch::Tensor& deltas,
    const std::optional<torch::Tensor>& rotations, torch::Tensor& overlapping1, torch::Tensor& overlapping2) {
  detail::overlapping<2>(patches1, patches2, deltas, rotations, {&overlapping1, &overlapping2});
  return {overlapping1, overlapping2};
}

/// @brief (patches1 (N*P, C, U, V, W), patches2, deltas (N*P, 3) float32 as (dx, dy, dz)) from x (N, C, Z, Y, X),
/// window (U, V, W) in z, y, x; as extract_patch_pairs without rotations.
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> extract_patch_pairs_3d(
    const torch::Tensor& x, const std::array<int64_t, 3>& window, int64_t num_patches,
    std::pair<double, double> delta_range, std::optional<uint64_t> seed = std::nullopt) {
  auto [p1, p2, d, r] = detail::extract_pairs<3>(x, window, num_patches, delta_range, seed, std::nullopt);
  return {p1, p2, d};
}

/// @brief extract_patch_pairs_3d into patches1 and patches2 ((N*P, C, U, V, W), as extract_patch_pairs_out);
/// returns the deltas.
inline torch::Tensor extract_patch_pairs_3d_out(const torch::Tensor& x, const std::array<int64_t, 3>& window,
                                                int64_t num_patches, std::pair<double, double> delta_range,
                                                torch::Tensor& patches1, torch::Tensor& patches2,
                                                std::optional<uint64_t> seed = std::nullopt) {
  return std::get<2>(
      detail::extract_pairs<3>(x, window, num_patches, delta_range, seed, std::nullopt, {&patches1, &patches2}));
}

/// @brief extract_overlapping_pixels_3d into overlapping1 and overlapping2 (as extract_overlapping_pixels_out).
inline std::tuple<torch::Tensor&, torch::Tensor&> extract_overlapping_pixels_3d_out(const torch::Tensor& patches1,
                                                                                    const torch::Tensor& patches2,
                                                                                    const torch::Tensor& deltas,
                                                                                    torch::Tensor& overlapping1,
                                                                                    torch::Tensor& overlapping2) {
  detail::overlapping<3>(patches1, patches2, deltas, std::nullopt, {&overlapping1, &overlapping2});
  return {overlapping1, overlapping2};
}

/// @brief As extract_overlapping_pixels for 3D pairs: (u, v, w) of patch 1 matches (u - dz, v - dy, w - dx).
inline std::tuple<torch::Tensor, torch::Tensor> extract_overlapping_pixels_3d(const torch::Tensor& patches1,
                                                                              const torch::Tensor& patches2,
                                                                              const torch::Tensor& deltas) {
  return detail::overlapping<3>(patches1, patches2, deltas, std::nullopt);
}

}  // namespace qlty
