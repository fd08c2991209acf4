// qlty/kernels.hpp: gradients through unstitch and stitch (finite differences in double precision), and the
// same results on every device.
#include <functional>

#include "../common.hpp"

using namespace qlty_test;
using qlty::Backend;

namespace {

// Autograd's vector-Jacobian products of f at x against central finite differences, for two random vectors.
void gradcheck(const std::function<torch::Tensor(const torch::Tensor&)>& f, const torch::Tensor& x0) {
  const double eps = 1e-6;
  auto x = x0.detach().clone().requires_grad_(true);
  auto y = f(x);
  for (int trial = 0; trial < 2; ++trial) {
    auto v = torch::randn_like(y);
    auto g = torch::autograd::grad({(y * v).sum()}, {x}, {}, /*retain_graph=*/true)[0].reshape(-1);
    torch::NoGradGuard ng;
    auto flat = x0.detach().clone().reshape(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double old = flat[i].item<double>();
      flat[i] = old + eps;
      const double up = (f(flat.view(x0.sizes())) * v).sum().item<double>();
      flat[i] = old - eps;
      const double down = (f(flat.view(x0.sizes())) * v).sum().item<double>();
      flat[i] = old;
      ASSERT_NEAR(g[i].item<double>(), (up - down) / (2 * eps), 1e-6) << "element " << i;
    }
  }
}

}  // namespace

TEST(Autograd, UnstitchGradientIsTheAdjointScatter) {
  qlty::NCYXQuilt q(7, 6, {3, 4}, {2, 1}, 1, 0.3);
  for (auto b : {Backend::Native, Backend::Torch})
    gradcheck([&](const torch::Tensor& x) { return q.unstitch(x, b); }, torch::randn({2, 2, 7, 6}, torch::kFloat64));
}

TEST(Autograd, StitchGradientIsTheWeightedGather) {
  qlty::NCYXQuilt q(7, 6, {3, 4}, {2, 1}, 1, 0.3);
  const int64_t P = q.patches_per_image();
  for (auto b : {Backend::Native, Backend::Torch})
    gradcheck([&](const torch::Tensor& p) { return std::get<0>(q.stitch(p, b)); },
              torch::randn({P, 2, 3, 4}, torch::kFloat64));
}

TEST(Autograd, ThreeDimensionalGradients) {
  qlty::NCZYXQuilt q(5, 4, 6, {3, 3, 4}, {2, 1, 2}, {1, 1, 1}, 0.2);
  const int64_t P = q.patches_per_image();
  for (auto b : {Backend::Native, Backend::Torch}) {
    gradcheck([&](const torch::Tensor& x) { return q.unstitch(x, b); }, torch::randn({1, 2, 5, 4, 6}, torch::kFloat64));
    gradcheck([&](const torch::Tensor& p) { return std::get<0>(q.stitch(p, b)); },
              torch::randn({P, 1, 3, 3, 4}, torch::kFloat64));
  }
}

TEST(Autograd, ThroughAModelBetweenUnstitchAndStitch) {
  qlty::NCYXQuilt q(9, 8, 4, 2, 1, 0.1);
  auto w = torch::randn({2, 1, 3, 3}, torch::kFloat64);
  gradcheck(
      [&](const torch::Tensor& x) {
        auto p = torch::conv2d(q.unstitch(x), w, {}, 1, 1);
        return std::get<0>(q.stitch(torch::tanh(p)));
      },
      torch::randn({1, 1, 9, 8}, torch::kFloat64));
}

TEST(Autograd, WeightsAreNotDifferentiable) {
  qlty::NCYXQuilt q(8, 8, 4, 2, 1, 0.1);
  auto p = torch::randn({9, 1, 4, 4}, torch::requires_grad());
  auto [res, w] = q.stitch(p);
  EXPECT_TRUE(res.requires_grad());
  EXPECT_FALSE(w.requires_grad());
  res.sum().backward();
  // d(sum of result)/d(patch pixel) = weight / weight sum at its image pixel: the sum over all patches is the
  // number of pixels covered.
  EXPECT_NEAR(p.grad().sum().item<float>(), 64.0f, 1e-3);
}

TEST(Autograd, NoGraphWithoutRequiresGrad) {
  qlty::NCYXQuilt q(8, 8, 4, 2);
  auto p = q.unstitch(torch::randn({1, 1, 8, 8}));
  EXPECT_FALSE(p.requires_grad());
  EXPECT_FALSE(p.grad_fn());
}

class OnDevice : public testing::TestWithParam<torch::Device> {};

TEST_P(OnDevice, UnstitchAndStitchMatchTheCpuKernels) {
  const auto dev = GetParam();
  QLTY_SKIP_IF_ABSENT(dev);
  qlty::NCZYXQuilt q(13, 12, 15, {6, 5, 8}, {3, 4, 3}, {1, 2, 2}, 0.1);
  auto x = torch::randn({2, 3, 13, 12, 15});
  auto pc = q.unstitch(x, Backend::Native);
  for (auto dt : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16}) {
    auto pd = q.unstitch(x.to(dev, dt));
    EXPECT_EQ(pd.device(), dev);
    EXPECT_TRUE(torch::equal(pd.cpu(), pc.to(dt))) << dt;
    auto [sd, wd] = q.stitch(pd);
    auto [sc, wc] = q.stitch(pc.to(dt), Backend::Native);
    EXPECT_EQ(sd.device(), dev);
    const double tol = dt == torch::kFloat32 || dt == torch::kFloat64 ? 1e-5 : 1e-2;
    EXPECT_TRUE(torch::allclose(sd.cpu().to(torch::kFloat64), sc.to(torch::kFloat64), tol, tol)) << dt;
    EXPECT_TRUE(torch::allclose(wd.cpu(), wc, 1e-5, 1e-5));
  }
  auto labels = torch::randint(0, 4, {2, 13, 12, 15}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(q.unstitch(labels.unsqueeze(1).to(dev)).cpu(), q.unstitch(labels.unsqueeze(1))));
}

TEST_P(OnDevice, GradientsMatchTheCpuKernels) {
  const auto dev = GetParam();
  QLTY_SKIP_IF_ABSENT(dev);
  qlty::NCYXQuilt q(20, 18, 8, {3, 4}, 2, 0.25);
  auto x = torch::randn({2, 2, 20, 18}, torch::kFloat64);
  auto v = torch::randn({2, 2, 20, 18}, torch::kFloat64);
  auto grad_on = [&](const torch::Device& d, Backend b) {
    auto xd = x.to(d).requires_grad_(true);
    auto [s, w] = q.stitch(q.unstitch(xd, b).pow(2), b);
    (s * v.to(d)).sum().backward();
    return xd.grad().cpu();
  };
  EXPECT_TRUE(torch::allclose(grad_on(dev, Backend::Auto), grad_on(torch::kCPU, Backend::Native), 1e-10, 1e-10));
}

TEST_P(OnDevice, NativeBackendIsForCpuOnly) {
  const auto dev = GetParam();
  QLTY_SKIP_IF_ABSENT(dev);
  qlty::NCYXQuilt q(8, 8, 4, 2);
  auto x = torch::randn({1, 1, 8, 8}, torch::TensorOptions().device(dev));
  if (dev.is_cpu()) {
    EXPECT_NO_THROW(q.unstitch(x, Backend::Native));
  } else {
    expect_error<c10::ValueError>([&] { q.unstitch(x, Backend::Native); }, {"Backend::Native", "CPU"});
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, OnDevice, testing::ValuesIn(devices()), device_name);
