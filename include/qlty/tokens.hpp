#pragma once
/// @file tokens.hpp
/// @brief Patch tokens for sequence models: tokenize_patch cuts a patch into square tokens on a quilt grid, and
/// build_sequence_pair tokenizes two patches of a pair (extract_patch_pairs) and says which tokens overlap.
///
/// Geometry. Tokens are the windows of an NCYXQuilt over the patch (window p, step `stride`, last start H - p), in
/// unstitch's row-major order; a token's origin is its window's first pixel (y, x). A pair follows
/// extract_overlapping_pixels: pixel (y, x) of patch 1 is pixel (y - dy, x - dx) of patch 2 before its turn, and
/// patch 2 is stored turned by torch.rot90(k) over its last two axes. Token i of patch 1, carried into stored patch 2
/// (a square of side p there), meets each token j of patch 2 in a rectangle; the token j it meets most is its
/// partner (the first in row-major order on ties), the area over p * p its overlap fraction, and each token of patch
/// 2 points back at the first token of patch 1 that chose it. Fractional shifts are measured exactly.
///
/// Since both rectangles are axis-aligned, the area is a product of one length along y and one along x: the best
/// partner is the best start along each axis, found in nY + nX steps rather than nY * nX.

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include <qlty/error.hpp>
#include <qlty/quilt.hpp>

namespace qlty {

/// @brief The tokens of a patch (tokenize_patch).
struct PatchTokens {
  torch::Tensor tokens;   ///< (T, C * p * p), or (N, T, C * p * p) for a batch; differentiable
  torch::Tensor origins;  ///< (T, 2) int64: each token's first pixel (y, x) in the patch
};

/// @brief Two patches as token sequences, and how their tokens overlap (build_sequence_pair). Single pairs have the
/// shapes shown; a batch of N pairs adds N in front, and pads overlap_pairs with -1 rows to the longest list.
struct SequencePair {
  torch::Tensor tokens1, tokens2;       ///< (T, D), D = C * p * p; differentiable
  torch::Tensor coords1, coords2;       ///< (T, 2) int64 token origins (y, x); each row its own (no shared storage)
  torch::Tensor overlap_mask1;          ///< (T,) bool: patch 1's token overlaps some token of patch 2
  torch::Tensor overlap_mask2;          ///< (T,) bool: patch 2's token is the partner of some token of patch 1
  torch::Tensor overlap_indices1_to_2;  ///< (T,) int64: the partner in patch 2, or -1
  torch::Tensor overlap_indices2_to_1;  ///< (T,) int64: the first token of patch 1 choosing it, or -1
  torch::Tensor overlap_fractions;      ///< (T,) float32: the shared area over p * p, 0 without a partner
  torch::Tensor overlap_pairs;          ///< (K, 2) int64 rows (i, partner of i), i ascending
  torch::Tensor sequence_lengths;       ///< batches only: (N,) int64, T for every pair
  torch::Tensor overlap_pair_counts;    ///< batches only: (N,) int64, K of each pair
};

namespace detail {

/// The token grid of an (H, W) patch: the quilt that cuts it, checked with the caller's name.
inline NCYXQuilt token_quilt(const char* who, int64_t H, int64_t W, int64_t p, std::optional<int64_t> stride) {
  QLTY_CHECK_ARG(p > 0, "patch_size", who, ": patch_size must be positive, got ", p);
  QLTY_CHECK_ARG(p <= H && p <= W, "patch_size", who, ": patch_size (", p, ") must fit the patch (H, W) = (", H, ", ",
                 W, ")");
  const int64_t s = stride.value_or(std::max<int64_t>(1, p / 2));
  QLTY_CHECK_ARG(s > 0 && s <= p, "stride", who, ": stride must be in [1, patch_size = ", p, "], got ", s);
  return NCYXQuilt(H, W, p, s);
}

/// The window starts along each axis of a token quilt: ({nY}, {nX}) int64 on CPU.
inline std::array<torch::Tensor, 2> token_starts(const NCYXQuilt& quilt) {
  const auto origins = quilt.window_origins(1);  // (nY * nX, 2), x fastest
  const int64_t nX = quilt.get_times()[1];
  return {origins.select(1, 0).slice(0, 0, origins.size(0), nX).contiguous(),
          origins.select(1, 1).slice(0, 0, nX).contiguous()};
}

/// The axis-aligned box [lo, lo + p) of a token of patch 1 at (y, x), carried into stored patch 2 for shift
/// (dx, dy) and turn k: (y_lo, x_lo).
inline std::array<double, 2> token_in_patch2(double y, double x, double dx, double dy, int64_t k, double p, double H,
                                             double W) {
  const double uy = y - dy, ux = x - dx;  // in patch 2 before its turn
  switch (((k % 4) + 4) % 4) {
    case 1:  // rot90(1): unturned (y, x) is stored at (W - x, y)
      return {W - (ux + p), uy};
    case 2:
      return {H - (uy + p), W - (ux + p)};
    case 3:  // rot90(3): unturned (y, x) is stored at (x, H - y)
      return {ux, H - (uy + p)};
    default:
      return {uy, ux};
  }
}

/// The start among `starts` (ascending) whose window [s, s + p) meets [lo, lo + p) most: (index, length); the first
/// on ties, length 0 when none meets it.
inline std::pair<int64_t, double> best_start(const int64_t* starts, int64_t n, double lo, double p) {
  int64_t best = -1;
  double most = 0;
  for (int64_t a = 0; a < n; ++a) {
    const double s = static_cast<double>(starts[a]);
    const double len = std::min(lo + p, s + p) - std::max(lo, s);
    if (len > most) {
      most = len;
      best = a;
    }
  }
  return {best, most};
}

/// For N pairs (dx, dy, k: (N,) CPU) over one token grid: each patch-1 token's partner (N, T) int64 (-1: none) and
/// overlap fraction (N, T) float32. Native CPU kernel, parallel over pairs and tokens.
inline std::array<torch::Tensor, 2> token_partners_cpu(const std::array<torch::Tensor, 2>& starts,
                                                       const torch::Tensor& dx, const torch::Tensor& dy,
                                                       const torch::Tensor& k, int64_t p, int64_t H, int64_t W) {
  const int64_t N = dx.size(0), nY = starts[0].size(0), nX = starts[1].size(0), T = nY * nX;
  auto partner = torch::empty({N, T}, torch::kLong);
  auto fraction = torch::empty({N, T}, torch::kFloat);
  const auto dxs = dx.to(torch::kDouble).contiguous(), dys = dy.to(torch::kDouble).contiguous();
  const auto ks = k.to(torch::kLong).contiguous();
  const double* dxp = dxs.data_ptr<double>();
  const double* dyp = dys.data_ptr<double>();
  const int64_t* kp = ks.data_ptr<int64_t>();
  const int64_t* sy = starts[0].data_ptr<int64_t>();
  const int64_t* sx = starts[1].data_ptr<int64_t>();
  int64_t* out = partner.data_ptr<int64_t>();
  float* frac = fraction.data_ptr<float>();
  const double area = static_cast<double>(p) * static_cast<double>(p);
  at::parallel_for(0, N * T, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / T, i = m % T;
      const auto box = token_in_patch2(static_cast<double>(sy[i / nX]), static_cast<double>(sx[i % nX]), dxp[n], dyp[n],
                                       kp[n], static_cast<double>(p), static_cast<double>(H), static_cast<double>(W));
      const auto [by, ly] = best_start(sy, nY, box[0], static_cast<double>(p));
      const auto [bx, lx] = best_start(sx, nX, box[1], static_cast<double>(p));
      const bool meets = ly > 0 && lx > 0;
      out[m] = meets ? by * nX + bx : -1;
      frac[m] = meets ? static_cast<float>(ly * lx / area) : 0.0f;
    }
  });
  return {partner, fraction};
}

/// The same by vectorised torch ops, on the device of dx (any device): a (chunk, T, nY + nX) table of lengths per
/// chunk of pairs, so memory stays bounded.
inline std::array<torch::Tensor, 2> token_partners_torch(const std::array<torch::Tensor, 2>& starts,
                                                         const torch::Tensor& dx, const torch::Tensor& dy,
                                                         const torch::Tensor& k, int64_t p, int64_t H, int64_t W) {
  const auto dev = dx.device();
  const auto real = torch::TensorOptions().dtype(torch::kDouble).device(dev);
  const auto sy = starts[0].to(real), sx = starts[1].to(real);
  const int64_t N = dx.size(0), nY = sy.size(0), nX = sx.size(0), T = nY * nX;
  const double P = static_cast<double>(p);
  // Token origins, (1, T).
  const auto y0 = sy.repeat_interleave(nX).unsqueeze(0), x0 = sx.repeat({nY}).unsqueeze(0);
  // Best start along one axis for boxes lo (n, T): (index, length) each (n, T), the first on ties.
  auto best = [&](const torch::Tensor& lo, const torch::Tensor& s) {
    auto lo3 = lo.unsqueeze(2);
    auto len = torch::minimum(lo3 + P, s + P) - torch::maximum(lo3, s);  // (n, T, count)
    auto [most, index] = len.max(2);
    return std::make_pair(index, most);
  };
  std::vector<torch::Tensor> partners, fractions;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, T * (nY + nX)));
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t n1 = std::min(N, n0 + chunk);
    const auto ddx = dx.slice(0, n0, n1).to(real).unsqueeze(1), ddy = dy.slice(0, n0, n1).to(real).unsqueeze(1);
    const auto kk = k.slice(0, n0, n1).to(dev, torch::kLong).remainder(4).unsqueeze(1);
    const auto uy = y0 - ddy, ux = x0 - ddx;  // (n, T) in patch 2 before its turn
    auto ylo = torch::where(kk == 1, W - (ux + P), torch::where(kk == 2, H - (uy + P), torch::where(kk == 3, ux, uy)));
    auto xlo = torch::where(kk == 1, uy, torch::where(kk == 2, W - (ux + P), torch::where(kk == 3, H - (uy + P), ux)));
    auto [by, ly] = best(ylo, sy);
    auto [bx, lx] = best(xlo, sx);
    auto meets = (ly > 0).logical_and(lx > 0);
    partners.push_back(torch::where(meets, by * nX + bx, torch::full_like(by, -1)));
    fractions.push_back(torch::where(meets, ly * lx / (P * P), torch::zeros_like(ly)).to(torch::kFloat));
  }
  if (partners.empty())
    return {torch::empty({0, T}, real.dtype(torch::kLong)), torch::empty({0, T}, real.dtype(torch::kFloat))};
  return {torch::cat(partners), torch::cat(fractions)};
}

/// Fills pair's overlap fields from partners and fractions (N, T); batched keeps the leading N.
inline void fill_overlaps(SequencePair& pair, const torch::Tensor& partner, const torch::Tensor& fraction,
                          bool batched) {
  const int64_t N = partner.size(0), T = partner.size(1);
  const auto mask1 = partner.ge(0);
  // Back pointers: the smallest i choosing each j. Sorting the keys j * (T + 1) + i (T for no partner) puts each j's
  // choosers together, smallest first; the first of each run is scattered, the rest into a spare column T.
  const auto target = torch::where(mask1, partner, torch::full_like(partner, T));
  const auto keys = std::get<0>((target * (T + 1) + torch::arange(T, partner.options())).sort(1));
  const auto j = keys.div(T + 1, "floor"), i = keys.remainder(T + 1);
  const auto starts_run = torch::cat(
      {torch::ones({N, std::min<int64_t>(T, 1)}, mask1.options()), j.slice(1, 1, T).ne(j.slice(1, 0, T - 1))}, 1);
  auto first = torch::full({N, T + 1}, T, partner.options());
  first.scatter_(1, torch::where(starts_run, j, torch::full_like(j, T)), i);
  first = first.slice(1, 0, T);
  const auto mask2 = first.lt(T);
  // The (i, partner) rows of each pair, i ascending, padded with -1 to the longest list.
  const auto counts = mask1.sum(1);
  const int64_t K = N == 0 ? 0 : counts.max().item<int64_t>();
  auto pairs = torch::full({N, K, 2}, -1, partner.options());
  const auto hits = mask1.nonzero();  // (total, 2) as (n, i), row-major
  if (hits.size(0) > 0) {
    const auto n = hits.select(1, 0), i = hits.select(1, 1);
    const auto slot = (mask1.cumsum(1) - 1).index({n, i});
    pairs.index_put_({n, slot}, torch::stack({i, partner.index({n, i})}, 1));
  }
  pair.overlap_mask1 = mask1;
  pair.overlap_mask2 = mask2;
  pair.overlap_indices1_to_2 = partner;
  pair.overlap_indices2_to_1 = torch::where(mask2, first, torch::full_like(first, -1));
  pair.overlap_fractions = fraction;
  pair.overlap_pairs = pairs;
  if (batched) {
    pair.sequence_lengths = torch::full({N}, T, partner.options());
    pair.overlap_pair_counts = counts;
    return;
  }
  for (auto* t : {&pair.overlap_mask1, &pair.overlap_mask2, &pair.overlap_indices1_to_2, &pair.overlap_indices2_to_1,
                  &pair.overlap_fractions, &pair.overlap_pairs})
    *t = t->squeeze(0);
}

/// A shift or turn argument as (N,) on CPU: a scalar (0-D or one element) for every pair, else one per pair.
inline torch::Tensor per_pair(const char* who, const char* name, const torch::Tensor& v, int64_t N, bool batched) {
  QLTY_CHECK_ARG(v.defined(), name, who, ": ", name, " must be given");
  QLTY_CHECK_ARG(!v.is_complex() && v.scalar_type() != torch::kBool, name, who, ": ", name,
                 " must be real numbers, got ", v.scalar_type());
  if (v.numel() == 1 && v.dim() <= 1) return v.reshape({1}).to(torch::kCPU).expand({N});
  QLTY_CHECK_ARG(batched && v.dim() == 1 && v.size(0) == N, name, who, ": ", name, " must be a scalar",
                 batched ? c10::str(" or (N,) for N = ", N, " pairs") : std::string(), ", got shape ", v.sizes());
  return v.to(torch::kCPU);
}

}  // namespace detail

/// @brief Tokens of a patch (C, H, W) (or a batch (N, C, H, W)): the windows of side patch_size at steps of
/// `stride` (default max(1, patch_size / 2)), the last at H - patch_size, flattened to rows of C * p * p, and their
/// origins. Any dtype and device; differentiable with respect to the patch.
inline PatchTokens tokenize_patch(const torch::Tensor& patch, int64_t patch_size,
                                  std::optional<int64_t> stride = std::nullopt) {
  const char* who = "tokenize_patch";
  QLTY_CHECK_ARG(patch.dim() == 3 || patch.dim() == 4, "patch", who,
                 ": patch must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ", patch.sizes());
  const bool batched = patch.dim() == 4;
  const auto x = batched ? patch : patch.unsqueeze(0);
  const int64_t N = x.size(0), C = x.size(1);
  const auto quilt = detail::token_quilt(who, x.size(2), x.size(3), patch_size, stride);
  const int64_t T = quilt.get_times()[0] * quilt.get_times()[1];
  auto tokens = quilt.unstitch(x).reshape({N, T, C * patch_size * patch_size});
  return {batched ? tokens : tokens.squeeze(0), quilt.window_origins(1).to(patch.device())};
}

/// @brief A pair of patches (C, H, W), or batches (N, C, H, W), as token sequences with their overlaps. dx, dy
/// (pixels, fractions allowed) and rot_k90 (quarter turns) describe the pair as extract_patch_pairs returns it:
/// scalars, or (N,) tensors for a batch. Odd turns need square patches. See the file comment for the geometry.
inline SequencePair build_sequence_pair(const torch::Tensor& patch1, const torch::Tensor& patch2,
                                        const torch::Tensor& dx, const torch::Tensor& dy, const torch::Tensor& rot_k90,
                                        int64_t patch_size, std::optional<int64_t> stride = std::nullopt) {
  const char* who = "build_sequence_pair";
  QLTY_CHECK_ARG(patch1.dim() == 3 || patch1.dim() == 4, "patch1", who,
                 ": patch1 must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ", patch1.sizes());
  QLTY_CHECK_ARG(patch1.sizes() == patch2.sizes(), "patch2", who, ": patch1 and patch2 must have the same shape, got ",
                 patch1.sizes(), " and ", patch2.sizes());
  QLTY_CHECK_ARG(patch1.device() == patch2.device(), "patch2", who, ": patch1 and patch2 must be on one device, got ",
                 patch1.device(), " and ", patch2.device());
  const bool batched = patch1.dim() == 4;
  const int64_t N = batched ? patch1.size(0) : 1, H = patch1.size(-2), W = patch1.size(-1);
  const auto quilt = detail::token_quilt(who, H, W, patch_size, stride);
  auto ddx = detail::per_pair(who, "dx", dx, N, batched), ddy = detail::per_pair(who, "dy", dy, N, batched);
  auto k = detail::per_pair(who, "rot_k90", rot_k90, N, batched);
  QLTY_CHECK_ARG(!k.is_floating_point() || k.eq(k.round()).all().item<bool>(), "rot_k90", who,
                 ": rot_k90 must be whole quarter turns, got ", k);
  k = k.to(torch::kLong);
  QLTY_CHECK_ARG(torch::isfinite(ddx.to(torch::kDouble)).all().item<bool>() &&
                     torch::isfinite(ddy.to(torch::kDouble)).all().item<bool>(),
                 "dx", who, ": dx and dy must be finite");
  QLTY_CHECK_ARG(H == W || k.remainder(2).eq(0).all().item<bool>(), "rot_k90", who,
                 ": odd quarter turns need square patches, got (H, W) = (", H, ", ", W, ")");
  SequencePair pair;
  const auto t1 = tokenize_patch(patch1, patch_size, stride), t2 = tokenize_patch(patch2, patch_size, stride);
  pair.tokens1 = t1.tokens;
  pair.tokens2 = t2.tokens;
  const auto origins = t1.origins;
  pair.coords1 = batched ? origins.unsqueeze(0).repeat({N, 1, 1}) : origins;
  pair.coords2 = batched ? origins.unsqueeze(0).repeat({N, 1, 1}) : origins.clone();
  const auto starts = detail::token_starts(quilt);
  const auto dev = patch1.device();
  auto [partner, fraction] =
      dev.is_cpu() ? detail::token_partners_cpu(starts, ddx, ddy, k, patch_size, H, W)
                   : detail::token_partners_torch(starts, ddx.to(dev), ddy.to(dev), k.to(dev), patch_size, H, W);
  detail::fill_overlaps(pair, partner, fraction, batched);
  return pair;
}

/// @brief build_sequence_pair with the same shift and turn for every pair.
inline SequencePair build_sequence_pair(const torch::Tensor& patch1, const torch::Tensor& patch2, double dx, double dy,
                                        int64_t rot_k90, int64_t patch_size,
                                        std::optional<int64_t> stride = std::nullopt) {
  return build_sequence_pair(patch1, patch2, torch::tensor(dx, torch::kDouble), torch::tensor(dy, torch::kDouble),
                             torch::tensor(rot_k90, torch::kLong), patch_size, stride);
}

}  // namespace qlty
