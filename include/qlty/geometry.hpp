#pragma once
/// @file geometry.hpp
/// @brief The window grid of a quilt: validated parameters, window starts, border and weights.

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include <qlty/blend.hpp>
#include <qlty/error.hpp>
#include <qlty/kernels/grid3.hpp>
#include <qlty/kernels/window_weights.hpp>

namespace qlty {

/// @brief One value for every axis, or one value per axis (`16`, `{16, 16}`, a std::vector).
class PerAxis {
 public:
  PerAxis(int64_t v) : values_{v} {}  // NOLINT(google-explicit-constructor): `border = 4` reads well
  PerAxis(std::initializer_list<int64_t> v) : values_(v) {}
  PerAxis(std::vector<int64_t> v) : values_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  template <size_t D>
  PerAxis(const std::array<int64_t, D>& v) : values_(v.begin(), v.end()) {}  // NOLINT

  /// @brief The values as given.
  const std::vector<int64_t>& values() const { return values_; }

  /// @brief The value for each of D axes; `who` and `name` go into the error for a wrong length.
  template <int D>
  std::array<int64_t, D> expand(const char* who, const char* name) const {
    QLTY_CHECK_ARG(values_.size() == 1 || values_.size() == static_cast<size_t>(D), name, who, ": ", name,
                   " must have 1 or ", D, " entries, got ", values_.size(), " (", c10::IntArrayRef(values_), ")");
    std::array<int64_t, D> out{};
    for (int a = 0; a < D; ++a) out[a] = values_.size() == 1 ? values_[0] : values_[a];
    return out;
  }

 private:
  std::vector<int64_t> values_;
};

namespace detail {

/// The names used in messages: the quilt class of each dimension and its axis letters.
template <int D>
constexpr const char* quilt_name() {
  return D == 2 ? "NCYXQuilt" : "NCZYXQuilt";
}
inline const char* axis_name(int D, int a) {
  static const char* names2[] = {"Y", "X"};
  static const char* names3[] = {"Z", "Y", "X"};
  return D == 2 ? names2[a] : names3[a];
}

/// The images' shape padded to at least the window along every axis when `pad` pads (else `shape`).
template <int D>
std::array<int64_t, D> padded_shape(std::array<int64_t, D> shape, const PerAxis& window, const Pad& pad,
                                    const char* who = nullptr) {
  const auto w = window.expand<D>(who ? who : quilt_name<D>(), "window");
  if (pad.enabled())
    for (int a = 0; a < D; ++a) shape[a] = std::max(shape[a], w[a]);
  return shape;
}

}  // namespace detail

/// @brief The validated window grid of a D-dimensional quilt (D = 2 or 3), axes in tensor order (Z, Y, X).
template <int D>
class Geometry {
  static_assert(D == 2 || D == 3, "qlty::Geometry: D must be 2 or 3");

 public:
  /// @brief Checks the parameters (see docs/design/semantics.md) and builds the grid, with border weighting.
  Geometry(std::array<int64_t, D> shape, const PerAxis& window, const PerAxis& step, const PerAxis& border,
           double border_weight)
      : Geometry(shape, window, step, Blend::border(border.values(), border_weight)) {}

  /// @brief Checks the parameters and builds the grid, blending windows with `blend`. Errors name `who` (default:
  /// the quilt class of D dimensions).
  Geometry(std::array<int64_t, D> shape, const PerAxis& window, const PerAxis& step, const Blend& blend,
           const char* who = nullptr)
      : shape_(shape), blend_(blend) {
    if (!who) who = detail::quilt_name<D>();
    window_ = window.expand<D>(who, "window");
    step_ = step.expand<D>(who, "step");
    border_ = PerAxis(blend.border_sizes()).expand<D>(who, "border");
    for (int a = 0; a < D; ++a) {
      const char* ax = detail::axis_name(D, a);
      TORCH_CHECK_VALUE(shape_[a] >= 1, who, ": image size along ", ax, " must be >= 1, got ", shape_[a]);
      QLTY_CHECK_ARG(window_[a] >= 1, "window", who, ": window along ", ax, " must be >= 1, got ", window_[a]);
      QLTY_CHECK_ARG(window_[a] <= shape_[a], "window", who, ": window along ", ax, " must not exceed the image size ",
                     shape_[a], ", got ", window_[a], " (or pad the image: qlty::Pad)");
      QLTY_CHECK_ARG(step_[a] >= 1, "step", who, ": step along ", ax, " must be >= 1, got ", step_[a]);
      QLTY_CHECK_ARG(border_[a] >= 0, "border", who, ": border along ", ax, " must be >= 0, got ", border_[a]);
      QLTY_CHECK_ARG(border_[a] == 0 || 2 * border_[a] < window_[a], "border", who, ": border along ", ax,
                     " must leave an interior (2 * border < window = ", window_[a], "), got ", border_[a]);
    }
    border_weight_ = blend.border_weight();
    QLTY_CHECK_ARG(border_weight_ >= 0.0 && border_weight_ <= 1.0, "border_weight", who,
                   ": border_weight must be in [0, 1], got ", border_weight_);
    for (int a = 0; a < D; ++a) {
      const int64_t full = (shape_[a] - window_[a]) / step_[a];
      times_[a] = full + 1 + (shape_[a] > full * step_[a] + window_[a] ? 1 : 0);
    }
    if (blend.mode() != Blend::Mode::Border) {
      auto w = blend.weights(std::vector<int64_t>(window_.begin(), window_.end()), who).contiguous();
      weights_ = std::make_shared<const std::vector<double>>(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
    }
    if (blend.mode() == Blend::Mode::Gaussian) {
      const auto f = blend.gaussian_factors(std::vector<int64_t>(window_.begin(), window_.end()), who);
      const auto outer = f.outer.contiguous(), last = f.last.contiguous();
      factors_ = std::make_shared<const detail::Grid3::Factors>(detail::Grid3::Factors{
          std::vector<float>(outer.data_ptr<float>(), outer.data_ptr<float>() + outer.numel()),
          std::vector<float>(last.data_ptr<float>(), last.data_ptr<float>() + last.numel()), f.floor});
    }
  }

  const std::array<int64_t, D>& shape() const { return shape_; }
  const std::array<int64_t, D>& window() const { return window_; }
  const std::array<int64_t, D>& step() const { return step_; }
  const std::array<int64_t, D>& border() const { return border_; }
  double border_weight() const { return border_weight_; }
  /// @brief Windows per axis.
  const std::array<int64_t, D>& times() const { return times_; }
  /// @brief Windows per image (the product of times()).
  int64_t per_image() const {
    int64_t p = 1;
    for (auto t : times_) p *= t;
    return p;
  }
  /// @brief Start of window k along axis a: min(k * step, size - window).
  int64_t start(int a, int64_t k) const { return std::min(k * step_[a], shape_[a] - window_[a]); }
  /// @brief How windows are blended.
  const Blend& blend() const { return blend_; }
  /// @brief The first axis where some pixels lie in no window (step > window), or -1.
  int gap_axis() const {
    for (int a = 0; a < D; ++a)
      for (int64_t k = 1; k < times_[a]; ++k)
        if (start(a, k) - start(a, k - 1) > window_[a]) return a;
    return -1;
  }
  /// @brief Refuses a grid that leaves pixels in no window, for `who`, which stitches (unstitch allows it).
  void check_covered(const std::string& who) const {
    const int a = gap_axis();
    QLTY_CHECK_ARG(a < 0, "step", who, ": step along ", detail::axis_name(D, a), " (", a < 0 ? 0 : step_[a],
                   ") exceeds the window (", a < 0 ? 0 : window_[a],
                   "), so pixels between windows would have no prediction; use a step <= window");
  }
  /// @brief The stitching weight of every window pixel: float32 of the window's shape.
  torch::Tensor weights() const {
    return detail::window_weights(grid3(), true, torch::kFloat32).view(c10::IntArrayRef(window_.data(), D));
  }
  bool has_border() const {
    return std::any_of(border_.begin(), border_.end(), [](int64_t b) { return b > 0; });
  }

  /// @brief float32 tensor of the window's shape: 1 inside [b, W - b) on every axis, 0 elsewhere.
  torch::Tensor border_tensor() const {
    auto t = torch::zeros(c10::IntArrayRef(window_.data(), D), torch::kFloat32);
    std::vector<at::indexing::TensorIndex> idx;
    idx.reserve(D);  // moving a TensorIndex built from a Slice reads an uninitialised bool (LibTorch 1.13; UBSan)
    for (int a = 0; a < D; ++a) idx.emplace_back(at::indexing::Slice(border_[a], window_[a] - border_[a]));
    t.index_put_(idx, 1.0f);
    return t;
  }

  /// @brief The same grid in three dimensions, for the kernels.
  detail::Grid3 grid3() const {
    detail::Grid3 g;
    for (int a = 0; a < D; ++a) {
      const int b = 3 - D + a;
      g.shape[b] = shape_[a];
      g.window[b] = window_[a];
      g.step[b] = step_[a];
      g.border[b] = border_[a];
      g.times[b] = times_[a];
    }
    g.border_weight = std::max(border_weight_, 1e-8);
    g.weights = weights_;
    g.factors = factors_;
    return g;
  }

 private:
  std::array<int64_t, D> shape_{}, window_{}, step_{}, border_{}, times_{};
  double border_weight_ = 0.1;
  Blend blend_ = Blend::border();
  std::shared_ptr<const std::vector<double>> weights_;     // non-border blends
  std::shared_ptr<const detail::Grid3::Factors> factors_;  // gaussian blends
};

}  // namespace qlty
