#pragma once
/// @file quilt.hpp
/// @brief In-memory quilts: cut images (NCYXQuilt) and volumes (NCZYXQuilt) into overlapping patches and stitch
/// patches back with border weighting.

#include <torch/torch.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include <qlty/geometry.hpp>
#include <qlty/kernels.hpp>

namespace qlty {

/// @brief Positional channels (Quilt::add_positions): each pixel's coordinates in its image, or in its window.
enum class Positions { Absolute, Relative };

/// @brief A quilt over D spatial axes (2: (N, C, Y, X), 3: (N, C, Z, Y, X)); NCYXQuilt and NCZYXQuilt name it.
template <int D>
class Quilt {
 public:
  /// @brief Spatial sizes, window, step, border (each one number or one per axis; border 0 = none) and the
  /// weight of border pixels when stitching.
  Quilt(std::array<int64_t, D> shape, const PerAxis& window, const PerAxis& step, const PerAxis& border = 0,
        double border_weight = 0.1)
      : shape_(shape), geometry_(shape, window, step, border, border_weight) {}

  /// @brief Windows blended with `blend` (border, constant, gaussian, custom); with `pad`, images smaller than the
  /// window along an axis are padded for the windows (floor(d / 2) before, the rest after) and every output is
  /// cropped back to `shape`.
  Quilt(std::array<int64_t, D> shape, const PerAxis& window, const PerAxis& step, const Blend& blend,
        const Pad& pad = Pad::none())
      : shape_(shape), pad_(pad), geometry_(detail::padded_shape<D>(shape, window, pad), window, step, blend) {
    for (int a = 0; a < D; ++a) before_[a] = (geometry_.shape()[a] - shape_[a]) / 2;
  }

  /// @brief Patches (N * P, C, *window) of x (N, C, *shape); patch m is window m % P of image m / P. Any dtype.
  torch::Tensor unstitch(const torch::Tensor& x, Backend backend = Backend::Auto) const {
    check_images(x, "unstitch", "x", false);
    return from5(unfold(to5(pad_images(x)), geometry_.grid3(), backend));
  }

  /// @brief Patches of a pair: x (N, C, *shape) and y (N, C', *shape) or (N, *shape), the latter giving patches
  /// without a channel axis. With missing_label, y's border pixels (border_tensor() == 0) are set to it.
  std::tuple<torch::Tensor, torch::Tensor> unstitch_data_pair(const torch::Tensor& x, const torch::Tensor& y,
                                                              std::optional<c10::Scalar> missing_label = std::nullopt,
                                                              Backend backend = Backend::Auto) const {
    check_images(x, "unstitch_data_pair", "x", false);
    check_images(y, "unstitch_data_pair", "y", true);
    TORCH_CHECK_VALUE(x.size(0) == y.size(0), name(), ".unstitch_data_pair: x and y must hold the same number of ",
                      "images, got ", x.size(0), " (x ", x.sizes(), ") and ", y.size(0), " (y ", y.sizes(), ")");
    const bool channels = y.dim() == D + 2;
    auto xp = unstitch(x, backend);
    auto yp = from5(unfold(to5(pad_images(channels ? y : y.unsqueeze(1))), geometry_.grid3(), backend));
    if (missing_label && geometry_.has_border())
      yp.masked_fill_(border_tensor().to(yp.device()).logical_not(), *missing_label);
    return {xp, channels ? yp : yp.squeeze(1)};
  }

  /// @brief (result (M / P, C, *shape), weights (*shape)): the weighted mean of the patches (M, C, *window) at
  /// their windows, and the sum of the window weights per pixel. Floating dtypes; half and bfloat16 accumulate
  /// in float32, the result keeps the patches' dtype, the weights are float32 (float64 for double patches).
  std::tuple<torch::Tensor, torch::Tensor> stitch(const torch::Tensor& patches, Backend backend = Backend::Auto) const {
    check_patches(patches, "stitch");
    auto [out, wsum] = fold(to5(patches), geometry_.grid3(), backend);
    return {crop(from5(out), 2), crop(D == 2 ? wsum.squeeze(0) : wsum, 0)};
  }

  /// @brief unstitch into `patches`, a buffer a loop can reuse: contiguous, of x's dtype and device and of the
  /// shape unstitch returns (N * P, C, *window), sharing no memory with x. Writes every element; returns patches.
  /// No autograd: an input or output that requires grad (with grad mode on) is refused; use unstitch for that.
  torch::Tensor& unstitch_out(const torch::Tensor& x, torch::Tensor& patches, Backend backend = Backend::Auto) const {
    const auto who = c10::str(name(), ".unstitch_out");
    check_images(x, "unstitch_out", "x", false);
    std::vector<int64_t> sizes{x.size(0) * geometry_.per_image(), x.size(1)};
    for (auto w : geometry_.window()) sizes.push_back(w);
    detail::check_out(who.c_str(), "patches", patches, sizes, x.scalar_type(), x.device(), {{"x", &x}});
    auto p5 = to5(patches);
    unfold_out(to5(pad_images(x)), p5, geometry_.grid3(), backend);
    return patches;
  }

  /// @brief stitch into `result` (M / P, C, *shape), of the patches' dtype, and `weights` (*shape), float32
  /// (float64 for double patches): contiguous, on the patches' device, sharing no memory with each other or the
  /// patches. Values are bitwise those of stitch. No autograd (refused as in unstitch_out).
  std::tuple<torch::Tensor&, torch::Tensor&> stitch_out(const torch::Tensor& patches, torch::Tensor& result,
                                                        torch::Tensor& weights, Backend backend = Backend::Auto) const {
    const auto who = c10::str(name(), ".stitch_out");
    check_patches(patches, "stitch_out");
    std::vector<int64_t> rsizes{patches.size(0) / geometry_.per_image(), patches.size(1)};
    for (auto v : shape_) rsizes.push_back(v);
    const std::vector<int64_t> wsizes(shape_.begin(), shape_.end());
    detail::check_out(who.c_str(), "result", result, rsizes, patches.scalar_type(), patches.device(),
                      {{"patches", &patches}, {"weights", &weights}});
    detail::check_out(who.c_str(), "weights", weights, wsizes, detail::accumulate_type(patches.scalar_type()),
                      patches.device(), {{"patches", &patches}});
    if (padding()) {  // into the padded shape, then cropped
      auto [out, wsum] = stitch(patches, backend);
      result.copy_(out);
      weights.copy_(wsum);
      return {result, weights};
    }
    auto r5 = to5(result);
    auto w3 = D == 2 ? weights.unsqueeze(0) : weights;
    fold_out(to5(patches), r5, w3, geometry_.grid3(), backend);
    return {result, weights};
  }

  /// @brief Where the patches of N images lie: (N * P, D) int64, the first pixel of patch m's window in image m / P
  /// (unstitch's order; Z, Y, X or Y, X). With `with_image`, (N * P, 1 + D) with the image index first (the
  /// original's `return_positions` and `include_n_position`). A padding quilt's origins are in the images as given:
  /// negative where a window starts in the padding. Every row is the patch's own (no storage shared between rows).
  torch::Tensor window_origins(int64_t N, bool with_image = false) const {
    TORCH_CHECK_VALUE(N >= 0, name(), ".window_origins: N must be >= 0, got ", N);
    const int64_t P = geometry_.per_image();
    const auto times = geometry_.times();
    auto table = torch::empty({P, D}, torch::kLong);  // one row per window of an image: P * D integers
    auto* t = table.data_ptr<int64_t>();
    for (int64_t w = 0; w < P; ++w) {
      int64_t k = w;
      for (int a = D - 1; a >= 0; --a) {
        t[w * D + a] = geometry_.start(a, k % times[a]) - before_[a];
        k /= times[a];
      }
    }
    auto origins = table.repeat({N, 1});
    if (!with_image) return origins;
    return torch::cat({torch::arange(N, torch::kLong).repeat_interleave(P).unsqueeze(1), origins}, 1);
  }

  /// @brief `patches` (M, C, *window), as unstitch cut them from M / P images, with D channels appended
  /// (M, C + D, *window): each pixel's coordinate along Z, Y, X (Y, X in 2D),
  /// - `Positions::Absolute`: in its image (window origin + offset in the window), divided by the image's size along
  ///   that axis with `normalize` (the original's rule: values in [0, 1));
  /// - `Positions::Relative`: in the window, 0 to W - 1, divided by W - 1 with `normalize` (where W > 1).
  /// The channels are float32 with `normalize`, else int64; the result has the promoted dtype of the patches and the
  /// channels (float16 and bfloat16 hold integers exactly only to 2048 and 256). Gradients flow to the patches. For
  /// pairs, add them to the inputs of unstitch_data_pair.
  torch::Tensor add_positions(const torch::Tensor& patches, Positions mode = Positions::Absolute,
                              bool normalize = true) const {
    TORCH_CHECK_VALUE(patches.dim() == D + 2, name(), ".add_positions: patches must be ", D + 2, "-D (M, C, ",
                      window_letters(), "), got ", patches.dim(), "-D tensor of shape ", patches.sizes());
    for (int a = 0; a < D; ++a)
      TORCH_CHECK_VALUE(patches.size(a + 2) == geometry_.window()[a], name(),
                        ".add_positions: patches must have the window's shape ", c10::IntArrayRef(geometry_.window()),
                        " in their last ", D, " axes, got ", patches.sizes());
    const int64_t M = patches.size(0), P = geometry_.per_image();
    TORCH_CHECK_VALUE(M % P == 0, name(), ".add_positions: the number of patches must be a multiple of the ", P,
                      " windows per image, got ", M);
    const auto channel_type = normalize ? torch::kFloat : torch::kLong;
    const auto on = torch::TensorOptions().dtype(channel_type).device(patches.device());
    const auto origins = mode == Positions::Absolute ? window_origins(M / P).to(on) : torch::Tensor();
    std::vector<int64_t> full{M, 1};
    for (int a = 0; a < D; ++a) full.push_back(geometry_.window()[a]);
    std::vector<torch::Tensor> parts{patches.to(torch::promote_types(patches.scalar_type(), channel_type))};
    for (int a = 0; a < D; ++a) {
      const int64_t W = geometry_.window()[a];
      std::vector<int64_t> along(D + 2, 1);
      along[2 + a] = W;
      auto c = torch::arange(W, on).view(along);  // the offset in the window
      if (mode == Positions::Absolute) {
        std::vector<int64_t> per_patch(D + 2, 1);
        per_patch[0] = M;
        c = c + origins.select(1, a).view(per_patch);
        if (normalize) c = c / static_cast<double>(shape_[a]);
      } else if (normalize && W > 1) {
        c = c / static_cast<double>(W - 1);
      }
      parts.push_back(c.expand(full).to(parts[0].scalar_type()));
    }
    return torch::cat(parts, 1);
  }

  /// @brief float32 tensor of the window's shape: 1 inside the border, 0 on it (all ones without a border).
  torch::Tensor border_tensor() const { return geometry_.border_tensor(); }
  /// @brief Windows per axis.
  std::array<int64_t, D> get_times() const { return geometry_.times(); }
  /// @brief Windows per image.
  int64_t patches_per_image() const { return geometry_.per_image(); }
  /// @brief The validated parameters (of the padded images when the quilt pads).
  const Geometry<D>& geometry() const { return geometry_; }
  /// @brief The images' spatial size, as given.
  const std::array<int64_t, D>& image_shape() const { return shape_; }
  /// @brief How images smaller than the window are padded.
  const Pad& pad() const { return pad_; }
  /// @brief Whether the images are padded (some axis is shorter than the window).
  bool padding() const { return geometry_.shape() != shape_; }
  /// @brief Pixels added before the image along each axis.
  const std::array<int64_t, D>& pad_before() const { return before_; }

 private:
  static const char* name() { return detail::quilt_name<D>(); }
  static const char* window_letters() { return D == 2 ? "Wy, Wx" : "Wz, Wy, Wx"; }

  // x (N, C, *shape) padded to the geometry's shape (x itself without padding).
  torch::Tensor pad_images(const torch::Tensor& x) const {
    if (!padding()) return x;
    std::vector<int64_t> off(D + 2, 0), ext{x.size(0), x.size(1)};
    ext.insert(ext.end(), geometry_.shape().begin(), geometry_.shape().end());
    return pad_.read_box(detail::box_reader(x), std::vector<int64_t>(shape_.begin(), shape_.end()),
                         std::vector<int64_t>(before_.begin(), before_.end()), off, ext);
  }
  // The image part of a padded result whose spatial axes start at `first`.
  torch::Tensor crop(const torch::Tensor& t, int first) const {
    if (!padding()) return t;
    auto v = t;
    for (int a = 0; a < D; ++a) v = v.narrow(first + a, before_[a], shape_[a]);
    return v.contiguous();
  }

  void check_patches(const torch::Tensor& patches, const char* fn) const {
    TORCH_CHECK_TYPE(patches.is_floating_point(), name(), ".", fn,
                     ": patches must be floating point (float, double, half, bfloat16), got ", patches.scalar_type());
    TORCH_CHECK_VALUE(patches.dim() == D + 2, name(), ".", fn, ": patches must be ", D + 2, "-D (M, C, ",
                      window_letters(), "), got ", patches.dim(), "-D tensor of shape ", patches.sizes());
    for (int a = 0; a < D; ++a)
      TORCH_CHECK_VALUE(patches.size(a + 2) == geometry_.window()[a], name(), ".", fn,
                        ": patches must have the window's shape ", c10::IntArrayRef(geometry_.window()),
                        " in their last ", D, " axes, got ", patches.sizes());
    const int64_t P = geometry_.per_image();
    TORCH_CHECK_VALUE(patches.size(0) % P == 0, name(), ".", fn, ": the number of patches must be a multiple of the ",
                      P, " windows per image, got ", patches.size(0));
    geometry_.check_covered(c10::str(name(), ".", fn));
  }
  void check_images(const torch::Tensor& t, const char* fn, const char* arg, bool channel_optional) const {
    const char* axes = D == 2 ? "Y, X" : "Z, Y, X";
    const bool rank_ok = t.dim() == D + 2 || (channel_optional && t.dim() == D + 1);
    TORCH_CHECK_VALUE(rank_ok, name(), ".", fn, ": ", arg, " must be ", D + 2, "-D (N, C, ", axes, ")",
                      channel_optional ? c10::str(" or ", D + 1, "-D (N, ", axes, ")") : std::string(), ", got ",
                      t.dim(), "-D tensor of shape ", t.sizes());
    const int64_t first = t.dim() - D;
    for (int a = 0; a < D; ++a)
      TORCH_CHECK_VALUE(t.size(first + a) == shape_[a], name(), ".", fn, ": ", arg, " must have the spatial size ",
                        c10::IntArrayRef(shape_), " given to the constructor, got shape ", t.sizes());
  }
  // 2D tensors go through the kernels with a Z axis of size 1 (a view).
  static torch::Tensor to5(const torch::Tensor& t) { return D == 2 ? t.unsqueeze(2) : t; }
  static torch::Tensor from5(const torch::Tensor& t) { return D == 2 ? t.squeeze(2) : t; }

  std::array<int64_t, D> shape_{}, before_{};
  Pad pad_ = Pad::none();
  Geometry<D> geometry_;
};

/// @brief 2D quilt over (N, C, Y, X) tensors.
class NCYXQuilt : public Quilt<2> {
 public:
  /// @brief Image size Y x X; window, step, border: one number or {y, x}; border_weight in [0, 1].
  NCYXQuilt(int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step, const PerAxis& border = 0,
            double border_weight = 0.1)
      : Quilt<2>({Y, X}, window, step, border, border_weight) {}
  /// @brief Windows blended with `blend`, images smaller than the window padded with `pad` (see Quilt).
  NCYXQuilt(int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step, const Blend& blend,
            const Pad& pad = Pad::none())
      : Quilt<2>({Y, X}, window, step, blend, pad) {}
};

/// @brief 3D quilt over (N, C, Z, Y, X) tensors.
class NCZYXQuilt : public Quilt<3> {
 public:
  /// @brief Volume size Z x Y x X; window, step, border: one number or {z, y, x}; border_weight in [0, 1].
  NCZYXQuilt(int64_t Z, int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step, const PerAxis& border = 0,
             double border_weight = 0.1)
      : Quilt<3>({Z, Y, X}, window, step, border, border_weight) {}
  /// @brief Windows blended with `blend`, volumes smaller than the window padded with `pad` (see Quilt).
  NCZYXQuilt(int64_t Z, int64_t Y, int64_t X, const PerAxis& window, const PerAxis& step, const Blend& blend,
             const Pad& pad = Pad::none())
      : Quilt<3>({Z, Y, X}, window, step, blend, pad) {}
};

}  // namespace qlty
