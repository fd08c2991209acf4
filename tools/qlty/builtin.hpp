#pragma once
// What `qlty demo` and `qlty infer` without --model use: a fixed-weight network built with torch::nn, the 3D
// Shepp-Logan phantom.

#include <torch/torch.h>

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace qlty::tool {

/// Smooths the channel mean with a binomial [1 2 1]/4 filter on every axis, then measures edges: output channel 0
/// is the smoothed image, channel 1 the magnitude of its central-difference gradient. Fixed weights, zero padding,
/// receptive field 5 per axis; 2D inputs (B, C, Y, X) or 3D (B, C, Z, Y, X).
class BuiltinNetImpl : public torch::nn::Module {
 public:
  explicit BuiltinNetImpl(int dims) : dims_(dims) {
    TORCH_CHECK_VALUE(dims == 2 || dims == 3, "BuiltinNet: dims must be 2 or 3, got ", dims);
    auto tap = torch::tensor({0.25f, 0.5f, 0.25f}), diff = torch::tensor({-0.5f, 0.0f, 0.5f});
    auto outer = [&](const std::vector<torch::Tensor>& v) {
      auto k = v[0];
      for (size_t i = 1; i < v.size(); ++i) k = k.unsqueeze(-1) * v[i];
      return k;
    };
    torch::Tensor smooth_k, grad_k;
    if (dims == 2) {
      smooth_k = outer({tap, tap}).view({1, 1, 3, 3});
      grad_k =
          torch::stack({outer({diff, torch::tensor({0.f, 1.f, 0.f})}), outer({torch::tensor({0.f, 1.f, 0.f}), diff})})
              .view({2, 1, 3, 3});
      smooth2_ = register_module("smooth", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 1, 3).padding(1).bias(false)));
      grad2_ = register_module("grad", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3).padding(1).bias(false)));
      torch::NoGradGuard g;
      smooth2_->weight.copy_(smooth_k);
      grad2_->weight.copy_(grad_k);
    } else {
      auto one = torch::tensor({0.f, 1.f, 0.f});
      smooth_k = outer({tap, tap, tap}).view({1, 1, 3, 3, 3});
      grad_k = torch::stack({outer({diff, one, one}), outer({one, diff, one}), outer({one, one, diff})})
                   .view({3, 1, 3, 3, 3});
      smooth3_ = register_module("smooth", torch::nn::Conv3d(torch::nn::Conv3dOptions(1, 1, 3).padding(1).bias(false)));
      grad3_ = register_module("grad", torch::nn::Conv3d(torch::nn::Conv3dOptions(1, 3, 3).padding(1).bias(false)));
      torch::NoGradGuard g;
      smooth3_->weight.copy_(smooth_k);
      grad3_->weight.copy_(grad_k);
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK_VALUE(x.dim() == dims_ + 2, "BuiltinNet: expected a ", dims_ + 2, "-D batch, got shape ", x.sizes());
    const auto dtype = (dims_ == 2 ? smooth2_->weight : smooth3_->weight).scalar_type();  // float32 unless converted
    auto m = x.to(dtype).mean(1, true);
    auto s = dims_ == 2 ? smooth2_(m) : smooth3_(m);
    auto g = dims_ == 2 ? grad2_(s) : grad3_(s);
    return torch::cat({s, g.square().sum(1, true).sqrt()}, 1);
  }

  int dims() const { return dims_; }

 private:
  int dims_;
  torch::nn::Conv2d smooth2_{nullptr}, grad2_{nullptr};
  torch::nn::Conv3d smooth3_{nullptr}, grad3_{nullptr};
};
TORCH_MODULE(BuiltinNet);

/// The model id of the built-in network in manifests.
constexpr const char* kBuiltinModelId = "builtin:smooth-edges-v1";

/// The 3D Shepp-Logan phantom (Kak & Slaney's ellipsoids, modified intensities) on a size^3 grid in [-1, 1]^3,
/// plus Gaussian noise of standard deviation `noise` (seeded): (size, size, size) float32.
inline torch::Tensor shepp_logan_3d(int64_t size, double noise, uint64_t seed = 0) {
  // intensity, semi-axes a b c, centre x y z, rotation about z (degrees)
  const double e[10][8] = {{1.0, .69, .92, .81, 0, 0, 0, 0},      {-.8, .6624, .874, .78, 0, -.0184, 0, 0},
                           {-.2, .11, .31, .22, .22, 0, 0, -18},  {-.2, .16, .41, .28, -.22, 0, 0, 18},
                           {.1, .21, .25, .41, 0, .35, -.15, 0},  {.1, .046, .046, .05, 0, .1, .25, 0},
                           {.1, .046, .046, .05, 0, -.1, .25, 0}, {.1, .046, .023, .05, -.08, -.605, 0, 0},
                           {.1, .023, .023, .02, 0, -.606, 0, 0}, {.1, .023, .046, .02, .06, -.605, 0, 0}};
  auto axis = torch::linspace(-1.0, 1.0, size);
  auto grids = torch::meshgrid({axis, axis, axis}, "ij");
  auto z = grids[0], y = grids[1], x = grids[2];
  auto out = torch::zeros({size, size, size});
  for (const auto& p : e) {
    const double phi = p[7] * M_PI / 180.0, c = std::cos(phi), s = std::sin(phi);
    auto xr = (x - p[4]) * c + (y - p[5]) * s, yr = -(x - p[4]) * s + (y - p[5]) * c, zr = z - p[6];
    auto inside = (xr / p[1]).square() + (yr / p[2]).square() + (zr / p[3]).square() <= 1.0;
    out += inside.to(torch::kFloat) * static_cast<float>(p[0]);
  }
  if (noise > 0) {
    auto gen = at::detail::createCPUGenerator(seed);
    out += torch::randn({size, size, size}, gen) * static_cast<float>(noise);
  }
  return out;
}

}  // namespace qlty::tool
