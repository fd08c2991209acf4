#pragma once
/// @file blend.hpp
/// @brief How overlapping windows are blended when stitching (`Blend`: border, constant, gaussian or a window of
/// the user's) and how images smaller than the window are padded (`Pad`).
///
/// Every stitch computes sum(w * p) / sum(w) per pixel, w being the window's weight at the pixel's place in the
/// window. `Blend` says what w is; the quilts, the disk-cached quilts and infer_blockwise take one.

#include <qlty/error.hpp>
#include <qlty/support/checksum.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace qlty {

/// @brief The weight window of a stitch. `border` (the default, the Python original's): 1 inside the border,
/// `border_weight` on it; `constant`: 1 everywhere (MONAI's "constant"); `gaussian`: MONAI's
/// `compute_importance_map(mode="gaussian")`; `custom`: a window of the user's (e.g. a Hann window).
class Blend {
 public:
  enum class Mode { Border, Constant, Gaussian, Custom };

  /// @brief Border weighting: 1 inside [b, W - b) on every axis, max(border_weight, 1e-8) elsewhere.
  static Blend border(std::vector<int64_t> border = {0}, double border_weight = 0.1) {
    Blend b(Mode::Border);
    b.border_ = std::move(border);
    b.border_weight_ = border_weight;
    return b;
  }
  /// @brief Every pixel of a window weighs 1: the plain mean of the windows (MONAI's `mode="constant"`).
  static Blend constant() { return Blend(Mode::Constant); }
  /// @brief A gaussian of standard deviation sigma_scale * window per axis, centred on the window, 1 at its
  /// centre, raised to at least 1e-3 (MONAI's `mode="gaussian"`; 0.125 is MONAI's and nnU-Net's default).
  static Blend gaussian(std::vector<double> sigma_scale = {0.125}) {
    Blend b(Mode::Gaussian);
    b.sigma_scale_ = std::move(sigma_scale);
    return b;
  }
  /// @brief A window of the user's: any floating tensor of the window's shape, finite, >= 0, not all zero.
  /// The weights are divided by their largest (a stitch does not change: it divides by the sum of the weights), so
  /// that any finite scale blends in float32 without overflow; weights below 1e-8 of the largest count as 1e-8, so
  /// no pixel is weighted exactly zero (as with border_weight = 0).
  static Blend custom(const torch::Tensor& window) {
    Blend b(Mode::Custom);
    b.custom_ = window;
    return b;
  }

  Mode mode() const { return mode_; }
  /// @brief "border", "constant", "gaussian" or "custom".
  const char* name() const {
    static const char* names[] = {"border", "constant", "gaussian", "custom"};
    return names[static_cast<int>(mode_)];
  }
  const std::vector<int64_t>& border_sizes() const { return border_; }
  double border_weight() const { return border_weight_; }
  const std::vector<double>& sigma_scale() const { return sigma_scale_; }
  const torch::Tensor& custom_window() const { return custom_; }

  /// @brief The weights (float64, CPU, the window's shape) for a window of `window`, given per axis; `who` goes
  /// into the errors. Border mode is built by the geometry (it needs the validated border).
  torch::Tensor weights(const std::vector<int64_t>& window, const char* who) const {
    switch (mode_) {
      case Mode::Constant:
        return torch::ones(window, torch::kFloat64);
      case Mode::Gaussian: {
        const auto f = gaussian_factors(window, who);
        return f.outer.unsqueeze(-1).mul(f.last).clamp_min_(f.floor).to(torch::kFloat64);
      }
      case Mode::Custom: {
        QLTY_CHECK_ARG(custom_.defined(), "custom_window", who, ": the custom blend window is an undefined tensor");
        QLTY_CHECK_ARG(custom_.sizes() == c10::IntArrayRef(window), "custom_window", who,
                       ": the custom blend window must have the window's shape ", c10::IntArrayRef(window), ", got ",
                       custom_.sizes());
        TORCH_CHECK_TYPE(custom_.is_floating_point(), who, ": the custom blend window must be floating point, got ",
                         custom_.scalar_type());
        auto w = custom_.detach().to(torch::kCPU, torch::kFloat64).contiguous();
        QLTY_CHECK_ARG(w.isfinite().all().item<bool>(), "custom_window", who,
                       ": the custom blend window must be finite, got NaN or infinite weights");
        QLTY_CHECK_ARG(w.min().item<double>() >= 0, "custom_window", who,
                       ": the custom blend window must be >= 0 everywhere, got a smallest weight of ",
                       w.min().item<double>());
        const double largest = w.max().item<double>();
        QLTY_CHECK_ARG(largest > 0, "custom_window", who, ": the custom blend window is all zeros");
        return w.div_(largest).clamp_min_(1e-8);
      }
      case Mode::Border:
        break;
    }
    TORCH_CHECK_VALUE(false, who, ": border weights come from the geometry");
    return {};
  }

  /// @brief MONAI's gaussian as factors, float32 as MONAI computes it: weight = max(outer * last, floor), `outer`
  /// the product of the 1D gaussians of every axis but the last (row-major), `last` the last axis's.
  struct GaussianFactors {
    torch::Tensor outer, last;
    float floor = 0;
  };
  GaussianFactors gaussian_factors(const std::vector<int64_t>& window, const char* who) const {
    const auto D = static_cast<int64_t>(window.size());
    TORCH_CHECK_VALUE(mode_ == Mode::Gaussian, who, ": gaussian factors of a ", name(), " blend");
    QLTY_CHECK_ARG(sigma_scale_.size() == 1 || static_cast<int64_t>(sigma_scale_.size()) == D, "sigma_scale", who,
                   ": sigma_scale must have 1 or ", D, " entries, got ", sigma_scale_.size());
    // MONAI's construction: a 1D gaussian per axis, their outer product axis by axis, then every weight raised to
    // max(smallest weight, 1e-3).
    std::vector<torch::Tensor> g;
    for (int64_t a = 0; a < D; ++a) {
      const double s = sigma_scale_.size() == 1 ? sigma_scale_[0] : sigma_scale_[a];
      QLTY_CHECK_ARG(std::isfinite(s) && s > 0, "sigma_scale", who,
                     ": sigma_scale must be finite and > 0 on every axis, got ", s);
      const double sigma = static_cast<double>(window[a]) * s;
      // MONAI divides by 2 sigma^2 in float32: where that underflows to 0, every weight would be NaN.
      const auto denominator = static_cast<float>(-2 * sigma * sigma);
      QLTY_CHECK_ARG(
          denominator <= -std::numeric_limits<float>::min(), "sigma_scale", who, ": sigma_scale ", s, " gives sigma ",
          sigma, " pixels for a window of ", window[a],
          ", whose square underflows float32 (the gaussian would be NaN); use a sigma_scale of at least ",
          std::sqrt(static_cast<double>(std::numeric_limits<float>::min()) / 2) / static_cast<double>(window[a]));
      const double half = static_cast<double>(window[a] - 1) / 2.0;
      auto x = torch::arange(-half, half + 1, torch::kFloat32);
      g.push_back(torch::exp(x.pow(2) / (-2 * sigma * sigma)));
    }
    GaussianFactors f;
    f.outer = g[0];
    for (int64_t a = 1; a + 1 < D; ++a) f.outer = f.outer.unsqueeze(-1) * g[a];
    f.last = g[D - 1];
    const float smallest = (f.outer.unsqueeze(-1) * f.last).min().item<float>();
    f.floor = static_cast<float>(std::max<double>(smallest, 1e-3));
    return f;
  }

  /// @brief What identifies the blend in manifests and parameters (custom windows by a checksum of their weights).
  std::string describe() const {
    switch (mode_) {
      case Mode::Border:
        return c10::str("border(", c10::IntArrayRef(border_), ", ", border_weight_, ")");
      case Mode::Constant:
        return "constant";
      case Mode::Gaussian: {
        std::string s = "gaussian(";
        for (size_t i = 0; i < sigma_scale_.size(); ++i) s += (i ? ", " : "") + c10::str(sigma_scale_[i]);
        return s + ")";
      }
      case Mode::Custom: {
        if (!custom_.defined()) return "custom(undefined)";
        auto w = custom_.detach().to(torch::kCPU, torch::kFloat64).contiguous();
        // From the basis custom windows have been identified with since their first release (FNV's offset basis
        // less its last digit): a different one would make outputs written since then refuse to resume.
        const uint64_t h =
            detail::fnv1a64(w.data_ptr<double>(), static_cast<size_t>(w.numel()) * 8, 1469598103934665603ull);
        return c10::str("custom(", w.sizes(), ", ", detail::hex64(h), ")");
      }
    }
    return "";
  }

 private:
  explicit Blend(Mode m) : mode_(m) {}
  Mode mode_;
  std::vector<int64_t> border_{0};
  double border_weight_ = 0.1;
  std::vector<double> sigma_scale_{0.125};
  torch::Tensor custom_;
};

/// @brief Padding of images smaller than the window (MONAI's convention: along an axis where the image is d
/// pixels short, floor(d / 2) before and the rest after; every output is cropped back). `none` (the quilts'
/// default) refuses such images; `constant` pads with `value`; `reflect` mirrors without repeating the edge (as
/// torch's "reflect", repeated for shortfalls larger than the image); `replicate` repeats the edge pixel.
class Pad {
 public:
  enum class Mode { None, Constant, Reflect, Replicate };
  static Pad none() { return Pad(Mode::None, 0.0); }
  /// @brief Pads with `value`, which must be finite.
  static Pad constant(double value = 0.0) {
    QLTY_CHECK_ARG(std::isfinite(value), "pad_value", "qlty::Pad::constant: the value must be finite, got ", value);
    return Pad(Mode::Constant, value);
  }
  static Pad reflect() { return Pad(Mode::Reflect, 0.0); }
  static Pad replicate() { return Pad(Mode::Replicate, 0.0); }
  Mode mode() const { return mode_; }
  double value() const { return value_; }
  bool enabled() const { return mode_ != Mode::None; }
  /// @brief "none", "constant", "reflect" or "replicate".
  const char* name() const {
    static const char* names[] = {"none", "constant", "reflect", "replicate"};
    return names[static_cast<int>(mode_)];
  }
  /// @brief The box [off, off + ext) of a padded image: `read(off, ext)` reads boxes of the image itself, whose
  /// last `image.size()` axes are spatial, `image` long, with `before` pixels of padding ahead of them (the other
  /// axes are read as asked). Reads only the part of the image the box needs (one box).
  template <typename Read>
  torch::Tensor read_box(const Read& read, const std::vector<int64_t>& image, const std::vector<int64_t>& before,
                         const std::vector<int64_t>& off, const std::vector<int64_t>& ext) const {
    const size_t lead = off.size() - image.size();
    std::vector<int64_t> roff = off, rext = ext;  // the part of the image read
    bool empty = false;
    for (size_t j = 0; j < image.size(); ++j) {
      const int64_t S = image[j], p0 = off[lead + j] - before[j], p1 = p0 + ext[lead + j];
      int64_t lo = std::max<int64_t>(0, p0), hi = std::min(S, p1);
      if (mode_ != Mode::Constant) {
        lo = S;
        hi = 0;
        for (int64_t i = p0; i < p1; ++i) {
          lo = std::min(lo, source(i, S));
          hi = std::max(hi, source(i, S) + 1);
        }
      }
      if (hi <= lo) lo = hi = 0;  // the box lies in the padding (constant padding only)
      empty = empty || hi == lo;
      roff[lead + j] = lo;
      rext[lead + j] = hi - lo;
    }
    torch::Tensor x;
    if (empty) {  // nothing of the image: its dtype from one pixel
      const auto dtype = read(std::vector<int64_t>(off.size(), 0), std::vector<int64_t>(off.size(), 1)).scalar_type();
      x = torch::empty(rext, torch::TensorOptions().dtype(dtype));
    } else {
      x = read(roff, rext);
    }
    if (mode_ == Mode::Constant) {
      std::vector<int64_t> p;  // last axis first: (before, after) each
      for (size_t j = image.size(); j-- > 0;) {
        const int64_t b = rext[lead + j] ? roff[lead + j] - (off[lead + j] - before[j]) : ext[lead + j];
        p.insert(p.end(), {b, ext[lead + j] - rext[lead + j] - b});
      }
      return at::constant_pad_nd(x, p, value_);
    }
    for (size_t j = 0; j < image.size(); ++j) {
      std::vector<int64_t> idx(static_cast<size_t>(ext[lead + j]));
      for (int64_t i = 0; i < ext[lead + j]; ++i)
        idx[static_cast<size_t>(i)] = source(off[lead + j] - before[j] + i, image[j]) - roff[lead + j];
      x = x.index_select(static_cast<int64_t>(lead + j), torch::tensor(idx, torch::kLong).to(x.device()));
    }
    return x;
  }

  /// @brief The pixel of an axis of `size` that padded position `i` (in [-before, size + after)) reads.
  int64_t source(int64_t i, int64_t size) const {
    if (i >= 0 && i < size) return i;
    if (mode_ == Mode::Replicate || size == 1) return std::clamp<int64_t>(i, 0, size - 1);
    const int64_t period = 2 * (size - 1);  // reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    int64_t r = ((i % period) + period) % period;
    return r < size ? r : period - r;
  }

 private:
  Pad(Mode m, double v) : mode_(m), value_(v) {}
  Mode mode_;
  double value_;
};

namespace detail {
/// Reads boxes [off, off + ext) of a tensor, as views.
inline auto box_reader(const torch::Tensor& t) {
  return [t](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) {
    auto v = t;
    for (size_t a = 0; a < ext.size(); ++a) v = v.narrow(static_cast<int64_t>(a), off[a], ext[a]);
    return v;
  };
}
}  // namespace detail

}  // namespace qlty
