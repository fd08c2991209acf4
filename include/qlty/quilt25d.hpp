#pragma once
/// @file quilt25d.hpp
/// @brief 2.5D quilts: the z-neighbourhood of each slice of a volume (N, C, Z, Y, X) as channels for 2D networks.
///
/// A ChannelSpec lists operations, each with groups of z-offsets: `identity` gives one channel per offset (each
/// group one offset), `mean` and `std` one channel per group (the population std). At slice z0, offset d reads slice
/// z0 + d of the whole volume; outside [0, Z) the boundary mode decides: `clamp` (the nearest slice), `reflect` (the
/// mirror image, edge slices repeated: -1 reads 0, Z reads Z - 1, and again for offsets past a whole period), `zero`
/// (a slice of zeros, counted in means) or `skip` (left out of its mean or std; refused for `identity`, whose channel
/// count would change, and refused when a group would have no slice left at a selected z0).
///
/// Channels are ordered by operation, then input channel, then group (convert() and channel_metadata() agree);
/// float32 (float64 for double volumes). Accumulation `TwoD` gives (N * Zs, C', Y, X), image n * Zs + k being slice
/// z_slices[k] of volume n; `ThreeD` gives (N, C', Zs, Y, X).
///
/// Sources are tensors or anything read by boxes (VolumeSource: a Zarr array, a callback): convert() reads a few
/// slices at a time, and a plan's patch reads only its window and the slices it needs. The channels are computed on
/// the CPU (a native kernel, each output plane in one pass over its slices) and returned there.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <qlty/error.hpp>
#include <qlty/quilt.hpp>
#include <qlty/zarr.hpp>

namespace qlty {

/// @brief How a group of z-slices becomes a channel.
enum class ZOperation { Identity, Mean, Std };
/// @brief What an offset past the volume's first or last slice reads.
enum class ZBoundary { Clamp, Zero, Reflect, Skip };
/// @brief The output's layout: slices as separate 2D images, or kept as a z axis.
enum class Accumulation { TwoD, ThreeD };

/// @brief The channels of a 2.5D quilt: operations in order, each with its groups of z-offsets.
class ChannelSpec {
 public:
  struct Op {
    ZOperation op;
    std::vector<std::vector<int64_t>> groups;  ///< identity: one offset per group
  };
  /// @brief One channel per offset: the slice at z0 + offset.
  ChannelSpec& identity(const std::vector<int64_t>& offsets) {
    std::vector<std::vector<int64_t>> g;
    for (auto d : offsets) g.push_back({d});
    return add(ZOperation::Identity, std::move(g), "identity");
  }
  /// @brief One channel per group: the mean of its slices.
  ChannelSpec& mean(const std::vector<std::vector<int64_t>>& groups) { return add(ZOperation::Mean, groups, "mean"); }
  /// @brief One channel per group: the population standard deviation of its slices.
  ChannelSpec& std(const std::vector<std::vector<int64_t>>& groups) { return add(ZOperation::Std, groups, "std"); }

  const std::vector<Op>& ops() const { return ops_; }
  /// @brief Channels per input channel.
  int64_t channels() const {
    int64_t n = 0;
    for (const auto& o : ops_) n += static_cast<int64_t>(o.groups.size());
    return n;
  }

 private:
  ChannelSpec& add(ZOperation op, std::vector<std::vector<int64_t>> groups, const char* name) {
    QLTY_CHECK_ARG(!groups.empty(), "channel_spec", "ChannelSpec.", name, ": needs at least one offset or group");
    for (const auto& g : groups)
      QLTY_CHECK_ARG(!g.empty(), "channel_spec", "ChannelSpec.", name, ": a group of offsets must not be empty");
    ops_.push_back({op, std::move(groups)});
    return *this;
  }
  std::vector<Op> ops_;
};

/// @brief What one output channel holds (channel_metadata), in convert()'s order.
struct ChannelInfo {
  int64_t channel = 0, input_channel = 0;
  ZOperation op = ZOperation::Identity;
  std::vector<int64_t> offsets;
};

/// @brief A volume (N, C, Z, Y, X) read by boxes: a tensor, a Zarr array, or a callback.
class VolumeSource {
 public:
  /// @brief Reads (C, z1 - z0, y1 - y0, x1 - x0) of volume n.
  using Reader = std::function<torch::Tensor(int64_t n, std::array<int64_t, 3> lo, std::array<int64_t, 3> hi)>;

  VolumeSource(std::vector<int64_t> shape, torch::ScalarType dtype, Reader read)
      : shape_(std::move(shape)), dtype_(dtype), read_(std::move(read)) {
    QLTY_CHECK_ARG(shape_.size() == 5, "source", "VolumeSource: the volume must be 5-D (N, C, Z, Y, X), got ",
                   c10::IntArrayRef(shape_));
  }
  /// @brief A tensor (N, C, Z, Y, X), sliced without copies.
  static VolumeSource tensor(const torch::Tensor& x) {
    QLTY_CHECK_ARG(x.dim() == 5, "source", "NCZYX25DQuilt: the volume must be 5-D (N, C, Z, Y, X), got shape ",
                   x.sizes());
    return VolumeSource(x.sizes().vec(), x.scalar_type(), [x](int64_t n, auto lo, auto hi) {
      return x[n].slice(1, lo[0], hi[0]).slice(2, lo[1], hi[1]).slice(3, lo[2], hi[2]);
    });
  }
  /// @brief A Zarr array (N, C, Z, Y, X): each box read from its chunks when needed.
  static VolumeSource zarr(const zarr::Array& a) {
    QLTY_CHECK_ARG(a.ndim() == 5, "source", "NCZYX25DQuilt: the Zarr array must be 5-D (N, C, Z, Y, X), got ",
                   c10::IntArrayRef(a.shape()));
    return VolumeSource(a.shape(), zarr::scalar_type(a.metadata().dtype), [a](int64_t n, auto lo, auto hi) {
      return a.read({n, 0, lo[0], lo[1], lo[2]}, {1, a.shape()[1], hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]})
          .squeeze(0);
    });
  }
  const std::vector<int64_t>& shape() const { return shape_; }
  torch::ScalarType dtype() const { return dtype_; }
  torch::Tensor read(int64_t n, std::array<int64_t, 3> lo, std::array<int64_t, 3> hi) const { return read_(n, lo, hi); }

 private:
  std::vector<int64_t> shape_;
  torch::ScalarType dtype_;
  Reader read_;
};

/// @brief One patch of an extraction plan: volume n, slice z0 (its index k among the selected slices), the window at
/// (y0, x0), and its colour: patches of one colour never overlap.
struct PatchExtraction {
  int64_t index = 0, n = 0, z0 = 0, k = 0, y0 = 0, x0 = 0, color = 0;
};

/// @brief Every patch of a 2.5D quilt in unstitch's order (volume, slice, window row-major), with colours.
struct ExtractionPlan {
  std::vector<PatchExtraction> patches;
  std::array<int64_t, 2> window{}, step{};
  int64_t colors = 1;  ///< colours y * colours x
  /// @brief The patches of one colour, in plan order.
  std::vector<PatchExtraction> of_color(int64_t color) const {
    std::vector<PatchExtraction> out;
    for (const auto& p : patches)
      if (p.color == color) out.push_back(p);
    return out;
  }
};

namespace detail {

/// Greedy colours of windows [s, s + w) along one axis, in order: each takes the smallest colour whose last window
/// ends at or before its start (optimal for intervals, and right for a clamped last window).
inline std::pair<std::vector<int64_t>, int64_t> window_colors(const std::vector<int64_t>& starts, int64_t w) {
  std::vector<int64_t> color(starts.size()), ends;
  for (size_t i = 0; i < starts.size(); ++i) {
    size_t c = 0;
    while (c < ends.size() && ends[c] > starts[i]) ++c;
    if (c == ends.size()) ends.push_back(0);
    ends[c] = starts[i] + w;
    color[i] = static_cast<int64_t>(c);
  }
  return {color, static_cast<int64_t>(std::max<size_t>(1, ends.size()))};
}

}  // namespace detail

/// @brief A 2.5D quilt over a volume (see the file comment).
class NCZYX25DQuilt {
 public:
  NCZYX25DQuilt(VolumeSource source, ChannelSpec spec, ZBoundary boundary = ZBoundary::Clamp,
                Accumulation accumulation = Accumulation::TwoD,
                std::optional<std::vector<int64_t>> z_slices = std::nullopt)
      : source_(std::move(source)), spec_(std::move(spec)), boundary_(boundary), accumulation_(accumulation) {
    const char* who = "NCZYX25DQuilt";
    QLTY_CHECK_ARG(!spec_.ops().empty(), "channel_spec", who, ": the channel spec is empty");
    const int64_t Z = source_.shape()[2];
    for (auto v : source_.shape())
      QLTY_CHECK_ARG(v >= 1, "source", who, ": every axis needs a pixel, got ", c10::IntArrayRef(source_.shape()));
    if (z_slices) {
      QLTY_CHECK_ARG(!z_slices->empty(), "z_slices", who, ": z_slices is empty");
      for (auto z : *z_slices)
        QLTY_CHECK_ARG(z >= 0 && z < Z, "z_slices", who, ": z_slices holds ", z, ", outside [0, ", Z, ")");
      z_ = *z_slices;
    } else {
      for (int64_t z = 0; z < Z; ++z) z_.push_back(z);
    }
    if (boundary_ == ZBoundary::Skip) check_skip_keeps_channels();
  }
  /// @brief A quilt over a tensor (N, C, Z, Y, X).
  NCZYX25DQuilt(const torch::Tensor& volume, ChannelSpec spec, ZBoundary boundary = ZBoundary::Clamp,
                Accumulation accumulation = Accumulation::TwoD,
                std::optional<std::vector<int64_t>> z_slices = std::nullopt)
      : NCZYX25DQuilt(VolumeSource::tensor(volume), std::move(spec), boundary, accumulation, std::move(z_slices)) {}

  /// @brief Output channels: input channels x the spec's channels.
  int64_t output_channels() const { return source_.shape()[1] * spec_.channels(); }
  const std::vector<int64_t>& z_slices() const { return z_; }
  /// @brief convert()'s shape.
  std::vector<int64_t> output_shape() const {
    const auto& s = source_.shape();
    const int64_t Zs = static_cast<int64_t>(z_.size());
    if (accumulation_ == Accumulation::TwoD) return {s[0] * Zs, output_channels(), s[3], s[4]};
    return {s[0], output_channels(), Zs, s[3], s[4]};
  }

  /// @brief The slice z0 + d as read at the volume's edges: its index, or -1 for a slice of zeros (zero) or none
  /// (skip).
  int64_t source_slice(int64_t z0, int64_t d) const {
    const int64_t Z = source_.shape()[2], z = z0 + d;
    if (z >= 0 && z < Z) return z;
    switch (boundary_) {
      case ZBoundary::Clamp:
        return std::clamp<int64_t>(z, 0, Z - 1);
      case ZBoundary::Reflect: {  // symmetric: period 2Z, edge slices repeated
        int64_t m = ((z % (2 * Z)) + 2 * Z) % (2 * Z);
        return m < Z ? m : 2 * Z - 1 - m;
      }
      default:
        return -1;
    }
  }

  /// @brief Every output channel: its input channel, operation and offsets, in convert()'s order.
  std::vector<ChannelInfo> channel_metadata() const {
    std::vector<ChannelInfo> out;
    for (const auto& o : spec_.ops())
      for (int64_t c = 0; c < source_.shape()[1]; ++c)
        for (const auto& g : o.groups) out.push_back({static_cast<int64_t>(out.size()), c, o.op, g});
    return out;
  }

  /// @brief The whole output (see the file comment), read a few slices at a time.
  torch::Tensor convert() const {
    const auto& s = source_.shape();
    const int64_t N = s[0], Zs = static_cast<int64_t>(z_.size());
    auto out = torch::empty(output_shape(), torch::TensorOptions().dtype(work_dtype()));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k0 = 0; k0 < Zs; k0 += 16) {  // 16 output slices per read
        const int64_t k1 = std::min(Zs, k0 + 16);
        fill(n, k0, k1, {0, 0}, {s[3], s[4]},
             accumulation_ == Accumulation::TwoD ? out.narrow(0, n * Zs + k0, k1 - k0)
                                                 : out[n].narrow(1, k0, k1 - k0).transpose(0, 1));
      }
    return out;
  }

  /// @brief A plan over (y, x) windows of every selected slice of every volume, in the order NCYXQuilt::unstitch
  /// gives for convert()'s images (TwoD), with colours: patches of one colour never overlap.
  ExtractionPlan extraction_plan(const PerAxis& window, const PerAxis& step) const {
    const auto& s = source_.shape();
    const NCYXQuilt q = quilt(window, step);
    const auto origins = q.window_origins(1);  // (P, 2)
    const auto times = q.get_times();
    ExtractionPlan plan;
    plan.window = q.geometry().window();
    plan.step = q.geometry().step();
    std::vector<int64_t> ys, xs;
    for (int64_t i = 0; i < times[0]; ++i) ys.push_back(origins[i * times[1]][0].item<int64_t>());
    for (int64_t j = 0; j < times[1]; ++j) xs.push_back(origins[j][1].item<int64_t>());
    const auto [cy, ny] = detail::window_colors(ys, plan.window[0]);
    const auto [cx, nx] = detail::window_colors(xs, plan.window[1]);
    plan.colors = ny * nx;
    for (int64_t n = 0; n < s[0]; ++n)
      for (int64_t k = 0; k < static_cast<int64_t>(z_.size()); ++k)
        for (int64_t i = 0; i < times[0]; ++i)
          for (int64_t j = 0; j < times[1]; ++j)
            plan.patches.push_back(
                {static_cast<int64_t>(plan.patches.size()), n, z_[k], k, ys[i], xs[j], cy[i] * nx + cx[j]});
    return plan;
  }

  /// @brief The patches of a plan (C', wy, wx) each, stacked: (M, C', wy, wx). Each reads only its window and the
  /// slices it needs.
  torch::Tensor extract(const ExtractionPlan& plan, const std::vector<PatchExtraction>& patches) const {
    auto out = torch::empty({static_cast<int64_t>(patches.size()), output_channels(), plan.window[0], plan.window[1]},
                            work_dtype());
    for (size_t i = 0; i < patches.size(); ++i) {
      const auto& p = patches[i];
      QLTY_CHECK_ARG(p.k >= 0 && p.k < static_cast<int64_t>(z_.size()) && z_[p.k] == p.z0 && p.n >= 0 &&
                         p.n < source_.shape()[0] && p.y0 >= 0 && p.x0 >= 0 &&
                         p.y0 + plan.window[0] <= source_.shape()[3] && p.x0 + plan.window[1] <= source_.shape()[4],
                     "patch", "NCZYX25DQuilt.extract: patch ", p.index, " is not one of this quilt's windows");
      fill(p.n, p.k, p.k + 1, {p.y0, p.x0}, {p.y0 + plan.window[0], p.x0 + plan.window[1]},
           out.narrow(0, static_cast<int64_t>(i), 1));
    }
    return out;
  }
  torch::Tensor extract(const ExtractionPlan& plan) const { return extract(plan, plan.patches); }

  /// @brief The 2D quilt over convert()'s images (TwoD): its unstitch gives the plan's patches in plan order, and
  /// its stitch puts model outputs for them back into (N * Zs, C_out, Y, X) images.
  NCYXQuilt quilt(const PerAxis& window, const PerAxis& step, const PerAxis& border = 0,
                  double border_weight = 0.1) const {
    return NCYXQuilt(source_.shape()[3], source_.shape()[4], window, step, border, border_weight);
  }

 private:
  /// Skip must leave every channel at least one slice at every selected z0, and cannot apply to identity channels.
  void check_skip_keeps_channels() const {
    const char* who = "NCZYX25DQuilt";
    const int64_t Z = source_.shape()[2];
    for (const auto& o : spec_.ops()) {
      QLTY_CHECK_ARG(o.op != ZOperation::Identity, "boundary", who,
                     ": skip leaves slices out of means and stds; an identity channel would vanish and change the "
                     "channel count: use clamp, reflect or zero");
      for (const auto& g : o.groups)
        for (auto z0 : z_) {
          const bool any = std::any_of(g.begin(), g.end(), [&](int64_t d) { return z0 + d >= 0 && z0 + d < Z; });
          QLTY_CHECK_ARG(any, "boundary", who, ": with skip, the group ", c10::IntArrayRef(g),
                         " has no slice at z0 = ", z0, " (Z = ", Z,
                         "): choose other offsets or z_slices, or another boundary mode");
        }
    }
  }

  torch::ScalarType work_dtype() const { return source_.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat; }

  /// One output plane: the slab slices (z in the slab) it combines, and how many slices count (zeros included).
  struct PlaneTask {
    int64_t k, channel, input_channel, count;
    ZOperation op;
    std::vector<int64_t> z;
  };

  /// Output slices k in [k0, k1) of volume n over the box [lo, hi) in (y, x), into dest (K, C', y, x), whose planes
  /// are contiguous: reads the slices they need once, then combines each plane on the CPU (at::parallel_for).
  void fill(int64_t n, int64_t k0, int64_t k1, std::array<int64_t, 2> lo, std::array<int64_t, 2> hi,
            const torch::Tensor& dest) const {
    const int64_t K = k1 - k0, C = source_.shape()[1];
    int64_t zmin = source_.shape()[2], zmax = -1;
    for (int64_t k = k0; k < k1; ++k)
      for (const auto& o : spec_.ops())
        for (const auto& g : o.groups)
          for (auto d : g)
            if (const int64_t z = source_slice(z_[k], d); z >= 0) zmin = std::min(zmin, z), zmax = std::max(zmax, z);
    const int64_t Y = hi[0] - lo[0], X = hi[1] - lo[1], P = Y * X;
    const int64_t depth = zmax >= zmin ? zmax - zmin + 1 : 0;
    auto slab = torch::empty({C, depth, Y, X}, work_dtype());
    if (depth > 0) slab.copy_(source_.read(n, {zmin, lo[0], lo[1]}, {zmax + 1, hi[0], hi[1]}));
    std::vector<PlaneTask> tasks;
    for (int64_t k = 0; k < K; ++k) {
      int64_t ch = 0;
      for (const auto& o : spec_.ops())
        for (int64_t c = 0; c < C; ++c)
          for (const auto& g : o.groups) {
            PlaneTask t{k, ch++, c, 0, o.op, {}};
            for (auto d : g) {
              const int64_t z = source_slice(z_[k0 + k], d);
              if (z >= 0) t.z.push_back(z - zmin);
              if (z >= 0 || boundary_ == ZBoundary::Zero) ++t.count;
            }
            tasks.push_back(std::move(t));
          }
    }
    AT_DISPATCH_FLOATING_TYPES(slab.scalar_type(), "NCZYX25DQuilt", [&] {
      const scalar_t* base = slab.data_ptr<scalar_t>();
      scalar_t* out = dest.data_ptr<scalar_t>();
      const int64_t s0 = dest.stride(0), s1 = dest.stride(1);
      at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
        std::vector<const scalar_t*> src;
        for (int64_t i = b; i < e; ++i) {
          const auto& t = tasks[static_cast<size_t>(i)];
          src.clear();
          for (auto z : t.z) src.push_back(base + (t.input_channel * depth + z) * P);
          combine_plane(t.op, src, t.count, out + t.k * s0 + t.channel * s1, P);
        }
      });
    });
  }

  /// One plane of P pixels from its source slices (count: how many count, zero slices being those not in src), in
  /// tiles that stay in cache.
  template <typename T>
  static void combine_plane(ZOperation op, const std::vector<const T*>& src, int64_t count, T* dst, int64_t P) {
    if (op == ZOperation::Identity) {
      if (src.empty())
        std::fill(dst, dst + P, T(0));
      else
        std::copy(src[0], src[0] + P, dst);
      return;
    }
    constexpr int64_t tile = 1024;
    T mean[tile];
    const T zeros = static_cast<T>(count - static_cast<int64_t>(src.size()));
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t m = std::min(tile, P - p0);
      std::fill(mean, mean + m, T(0));
      for (const T* s : src)
        for (int64_t j = 0; j < m; ++j) mean[j] += s[p0 + j];
      for (int64_t j = 0; j < m; ++j) mean[j] /= static_cast<T>(count);
      if (op == ZOperation::Mean) {
        std::copy(mean, mean + m, dst + p0);
        continue;
      }
      T* v = dst + p0;  // the variance about the mean, zero slices included
      for (int64_t j = 0; j < m; ++j) v[j] = zeros * mean[j] * mean[j];
      for (const T* s : src)
        for (int64_t j = 0; j < m; ++j) {
          const T d = s[p0 + j] - mean[j];
          v[j] += d * d;
        }
      for (int64_t j = 0; j < m; ++j) v[j] = std::sqrt(v[j] / static_cast<T>(count));
    }
  }

  VolumeSource source_;
  ChannelSpec spec_;
  ZBoundary boundary_;
  Accumulation accumulation_;
  std::vector<int64_t> z_;
};

}  // namespace qlty
