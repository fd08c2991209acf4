// qlty/blend.hpp: blend windows (constant, gaussian as MONAI defines it, custom) in the quilts and the disk-cached
// quilts, against an independent sum(w * p) / sum(w) by slicing; padding of images smaller than the window (each
// mode, 2D and 3D, cropped exactly); grids that leave pixels in no window are refused wherever they are stitched.
#include "../common.hpp"

#include <cmath>
#include <limits>

namespace {

using qlty_test::expect_error;
using qlty_test::reference_blend;
using qlty_test::reference_unstitch;

/// MONAI's compute_importance_map(mode="gaussian"), computed with numpy in float32 by the same formula:
///   x = arange(-(W - 1) / 2, (W - 1) / 2 + 1); g = exp(x**2 / (-2 * (W * sigma_scale)**2)) per axis,
///   map = outer product of the g, then map = clamp(map, min=max(map.min(), 1e-3)).
const std::vector<float> kMonai4x6 = {  // window (4, 6), sigma_scale 0.125
    0.001f,     0.001503439f, 0.008895389f, 0.008895389f, 0.001503439f, 0.001f,       0.0023448f,   0.082085f,
    0.4856718f, 0.4856718f,   0.082085f,    0.0023448f,   0.0023448f,   0.082085f,    0.4856718f,   0.4856718f,
    0.082085f,  0.0023448f,   0.001f,       0.001503439f, 0.008895389f, 0.008895389f, 0.001503439f, 0.001f};
const std::vector<float> kMonai3x5x4 = {  // window (3, 5, 4), sigma_scale (0.5, 0.25, 0.3)
    0.10192968f, 0.20412396f, 0.20412396f, 0.10192968f, 0.2662094f,  0.5331098f,  0.5331098f,  0.2662094f,  0.36660433f,
    0.7341603f,  0.7341603f,  0.36660433f, 0.2662094f,  0.5331098f,  0.5331098f,  0.2662094f,  0.10192968f, 0.20412396f,
    0.20412396f, 0.10192968f, 0.12729476f, 0.25491998f, 0.25491998f, 0.12729476f, 0.33245528f, 0.6657736f,  0.6657736f,
    0.33245528f, 0.4578334f,  0.9168553f,  0.9168553f,  0.4578334f,  0.33245528f, 0.6657736f,  0.6657736f,  0.33245528f,
    0.12729476f, 0.25491998f, 0.25491998f, 0.12729476f, 0.10192968f, 0.20412396f, 0.20412396f, 0.10192968f, 0.2662094f,
    0.5331098f,  0.5331098f,  0.2662094f,  0.36660433f, 0.7341603f,  0.7341603f,  0.36660433f, 0.2662094f,  0.5331098f,
    0.5331098f,  0.2662094f,  0.10192968f, 0.20412396f, 0.20412396f, 0.10192968f};

TEST(Blend, GaussianEqualsMonaisImportanceMap) {
  auto g2 = qlty::NCYXQuilt(20, 20, {4, 6}, 2, qlty::Blend::gaussian()).geometry().weights();
  auto ref2 = torch::tensor(kMonai4x6).view({4, 6});
  EXPECT_LT(((g2 - ref2).abs() / ref2).max().item<double>(), 1e-6) << g2;
  auto g3 = qlty::NCZYXQuilt(9, 9, 9, {3, 5, 4}, 2, qlty::Blend::gaussian({0.5, 0.25, 0.3})).geometry().weights();
  auto ref3 = torch::tensor(kMonai3x5x4).view({3, 5, 4});
  EXPECT_LT(((g3 - ref3).abs() / ref3).max().item<double>(), 1e-6) << g3;
  // constant is all ones; border is 1 inside and border_weight on the border
  EXPECT_TRUE(
      torch::equal(qlty::NCYXQuilt(9, 9, 4, 2, qlty::Blend::constant()).geometry().weights(), torch::ones({4, 4})));
  auto b = qlty::NCYXQuilt(9, 9, 4, 2, qlty::Blend::border({1}, 0.25)).geometry().weights();
  EXPECT_FLOAT_EQ(b[0][0].item<float>(), 0.25f);
  EXPECT_FLOAT_EQ(b[1][2].item<float>(), 1.0f);
}

template <int D>
void blend_trial(const qlty::Blend& blend, const torch::Tensor& weights, torch::ScalarType dtype) {
  std::vector<int64_t> S = D == 2 ? std::vector<int64_t>{23, 19} : std::vector<int64_t>{11, 13, 9};
  std::vector<int64_t> W = D == 2 ? std::vector<int64_t>{7, 6} : std::vector<int64_t>{4, 5, 3};
  std::vector<int64_t> s = D == 2 ? std::vector<int64_t>{4, 3} : std::vector<int64_t>{3, 2, 2};
  std::array<int64_t, D> Sa{};
  std::copy(S.begin(), S.end(), Sa.begin());
  qlty::Quilt<D> q(Sa, W, s, blend);
  std::vector<int64_t> shape{2, 3};
  shape.insert(shape.end(), S.begin(), S.end());
  auto x = torch::randn(shape, dtype);
  auto patches = q.unstitch(x);
  auto model_out = patches * 2 + torch::randn_like(patches) * 0.1;  // windows disagree where they overlap
  auto [ref, rw] = reference_blend(model_out, S, W, s, weights);
  const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
  for (auto be : {qlty::Backend::Native, qlty::Backend::Torch}) {
    auto [res, w] = q.stitch(model_out, be);
    EXPECT_TRUE(torch::allclose(res.to(torch::kFloat64), ref, tol, tol)) << blend.describe() << " D " << D;
    EXPECT_TRUE(torch::allclose(w.to(torch::kFloat64), rw, tol, tol)) << blend.describe();
    auto out = torch::empty_like(res);
    auto wout = torch::empty_like(w);
    q.stitch_out(model_out, out, wout, be);
    EXPECT_TRUE(torch::equal(out, res));
    // the round trip still holds: identical windows blend to themselves whatever the weights
    EXPECT_TRUE(torch::allclose(std::get<0>(q.stitch(patches, be)), x, tol, tol));
  }
  // gradients flow through the weighted stitch as through the reference
  auto pg = model_out.to(torch::kFloat64).detach().requires_grad_(true);
  auto pr = pg.detach().clone().requires_grad_(true);
  auto g = torch::randn(ref.sizes(), torch::kFloat64);
  (std::get<0>(q.stitch(pg)) * g).sum().backward();
  (reference_blend(pr, S, W, s, weights).first * g).sum().backward();
  EXPECT_TRUE(torch::allclose(pg.grad(), pr.grad(), 1e-10, 1e-12)) << blend.describe();
}

TEST(Blend, EveryModeEqualsTheWeightedMeanBySlicing) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    blend_trial<2>(qlty::Blend::constant(), torch::ones({7, 6}), dtype);
    blend_trial<2>(qlty::Blend::gaussian(),
                   qlty::NCYXQuilt(9, 9, {7, 6}, 1, qlty::Blend::gaussian()).geometry().weights(), dtype);
    blend_trial<3>(qlty::Blend::gaussian({0.2, 0.3, 0.5}),
                   qlty::NCZYXQuilt(9, 9, 9, {4, 5, 3}, 1, qlty::Blend::gaussian({0.2, 0.3, 0.5})).geometry().weights(),
                   dtype);
    // a Hann window, with zeros at its ends (counted as 1e-8), and a random positive window: both scaled to a
    // largest weight of 1, which changes the weight sums and not the results
    auto hann = torch::hann_window(9, false, torch::kFloat64).narrow(0, 1, 7).view({7, 1}) *
                torch::hann_window(8, false, torch::kFloat64).narrow(0, 1, 6).view({1, 6});
    blend_trial<2>(qlty::Blend::custom(hann), (hann / hann.max()).clamp_min(1e-8), dtype);
    auto r = torch::rand({4, 5, 3}, torch::kFloat64) + 0.05;
    blend_trial<3>(qlty::Blend::custom(r), r / r.max(), dtype);
  }
  // a window with zeros: pixels only zero weights reach still get the patch value, not 0 / 0
  auto w = torch::zeros({4, 4});
  w.narrow(0, 1, 2).narrow(1, 1, 2).fill_(1);
  qlty::NCYXQuilt q(8, 8, 4, 4, qlty::Blend::custom(w));
  auto x = torch::randn({1, 1, 8, 8});
  auto back = std::get<0>(q.stitch(q.unstitch(x)));
  EXPECT_TRUE(torch::allclose(back, x, 1e-5, 1e-6));
}

TEST(Blend, CustomWindowsKeepTheirIdentityAcrossVersions) {
  // Outputs record a custom window by a checksum of its float64 weights; the same window must give the same text in
  // every version, or outputs written before refuse to resume.
  const auto w = torch::arange(1, 9, torch::kFloat64).view({2, 4});
  uint64_t h = 1469598103934665603ull;  // written out here, independent of the library's checksum code
  const auto* p = reinterpret_cast<const unsigned char*>(w.data_ptr<double>());
  for (int64_t i = 0; i < w.numel() * 8; ++i) h = (h ^ p[i]) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  EXPECT_EQ(qlty::Blend::custom(w).describe(), "custom([2, 4], " + std::string(hex) + ")");
}

TEST(BlendErrors, CustomWindowsAndSigmaAreChecked) {
  auto make = [](const torch::Tensor& w) { qlty::NCYXQuilt(10, 10, {4, 5}, 2, qlty::Blend::custom(w)); };
  expect_error<c10::Error>([&] { make(torch::ones({4, 4})); }, {"NCYXQuilt", "window's shape [4, 5]", "got [4, 4]"});
  expect_error<c10::Error>([&] { make(-torch::ones({4, 5})); }, {">= 0 everywhere", "-1"});
  auto nan = torch::ones({4, 5});
  nan[1][1] = std::nan("");
  expect_error<c10::Error>([&] { make(nan); }, {"must be finite"});
  expect_error<c10::Error>([&] { make(torch::zeros({4, 5})); }, {"all zeros"});
  expect_error<c10::Error>([&] { make(torch::ones({4, 5}, torch::kInt)); }, {"floating point", "Int"});
  expect_error<c10::Error>([&] { make(torch::Tensor()); }, {"undefined"});
  expect_error<c10::Error>(
      [] {
        qlty::NCYXQuilt(10, 10, 4, 2, qlty::Blend::gaussian({0.1, 0.2, 0.3}));
      },
      {"sigma_scale must have 1 or 2 entries, got 3"});
  expect_error<c10::Error>([] { qlty::NCYXQuilt(10, 10, 4, 2, qlty::Blend::gaussian({0.0})); },
                           {"sigma_scale must be finite and > 0"});
}

/// x padded as MONAI pads (floor(d / 2) before, the rest after) to `target`, by torch's own padding.
torch::Tensor monai_pad(const torch::Tensor& x, const std::vector<int64_t>& target, const qlty::Pad& pad) {
  std::vector<int64_t> p;
  for (int64_t a = x.dim() - 1; a >= 2; --a) {
    const int64_t d = std::max<int64_t>(0, target[a - 2] - x.size(a));
    p.insert(p.end(), {d / 2, d - d / 2});
  }
  namespace F = torch::nn::functional;
  if (pad.mode() == qlty::Pad::Mode::Constant)
    return F::pad(x, F::PadFuncOptions(p).mode(torch::kConstant).value(pad.value()));
  if (pad.mode() == qlty::Pad::Mode::Reflect) return F::pad(x, F::PadFuncOptions(p).mode(torch::kReflect));
  return F::pad(x, F::PadFuncOptions(p).mode(torch::kReplicate));
}

TEST(Pad, SmallImagesArePaddedForTheWindowsAndCroppedBack) {
  torch::manual_seed(5);
  for (const auto& pad : {qlty::Pad::constant(0.5), qlty::Pad::reflect(), qlty::Pad::replicate()}) {
    // 2D: 6 rows for a window of 9 (3 short: 1 before, 2 after); X is long enough
    {
      auto x = torch::randn({2, 3, 6, 20});
      qlty::NCYXQuilt q(6, 20, {9, 8}, {4, 5}, qlty::Blend::gaussian(), pad);
      EXPECT_TRUE(q.padding());
      EXPECT_EQ(q.pad_before()[0], 1);
      EXPECT_EQ(q.geometry().shape()[0], 9);
      auto padded = monai_pad(x, {9, 20}, pad);
      auto p = q.unstitch(x);
      EXPECT_TRUE(torch::equal(p, reference_unstitch(padded, {9, 8}, {4, 5}))) << pad.name();
      auto [back, w] = q.stitch(p);
      ASSERT_EQ(back.sizes(), x.sizes());
      ASSERT_EQ(w.sizes(), c10::IntArrayRef({6, 20}));
      EXPECT_TRUE(torch::allclose(back, x, 1e-5, 1e-6)) << pad.name();
      auto model = p * 3 - 1;
      auto full = std::get<0>(qlty::NCYXQuilt(9, 20, {9, 8}, {4, 5}, qlty::Blend::gaussian()).stitch(model));
      EXPECT_TRUE(torch::equal(std::get<0>(q.stitch(model)), full.narrow(2, 1, 6).contiguous()));
      auto out = torch::empty_like(x), wout = torch::empty({6, 20});
      q.stitch_out(model, out, wout);
      EXPECT_TRUE(torch::equal(out, full.narrow(2, 1, 6)));
      auto pout = torch::empty_like(p);
      q.unstitch_out(x, pout);
      EXPECT_TRUE(torch::equal(pout, p));
    }
    // 3D: short along Z (3 for 5: 1 before, 1 after) and X (4 for 7: 1 before, 2 after)
    {
      auto x = torch::randn({1, 2, 3, 12, 4}, torch::kFloat64);
      qlty::NCZYXQuilt q(3, 12, 4, {5, 6, 7}, {2, 3, 3}, qlty::Blend::constant(), pad);
      auto padded = monai_pad(x, {5, 12, 7}, pad);
      auto p = q.unstitch(x);
      EXPECT_TRUE(torch::equal(p, reference_unstitch(padded, {5, 6, 7}, {2, 3, 3}))) << pad.name();
      auto back = std::get<0>(q.stitch(p));
      ASSERT_EQ(back.sizes(), x.sizes());
      EXPECT_TRUE(torch::allclose(back, x, 1e-12, 1e-12)) << pad.name();
    }
  }
  // labels of any dtype are padded too; the border keeps its meaning in the padded window
  auto y = torch::randint(0, 4, {1, 5, 5}, torch::kLong);
  qlty::NCYXQuilt q(5, 5, 8, 8, qlty::Blend::border({1}, 0.0), qlty::Pad::replicate());
  auto [xp, yp] = q.unstitch_data_pair(y.unsqueeze(1).to(torch::kFloat), y, -1);
  EXPECT_EQ(yp.sizes(), c10::IntArrayRef({1, 8, 8}));
  EXPECT_TRUE(torch::equal(yp[0].narrow(0, 1, 6).narrow(1, 1, 6),
                           monai_pad(y.unsqueeze(1).to(torch::kFloat), {8, 8}, qlty::Pad::replicate())[0][0]
                               .narrow(0, 1, 6)
                               .narrow(1, 1, 6)
                               .to(torch::kLong)));
  EXPECT_EQ(yp[0][0][0].item<int64_t>(), -1);
  // reflect and replicate positions for shortfalls larger than the image
  const auto r = qlty::Pad::reflect(), rep = qlty::Pad::replicate();
  std::vector<int64_t> got;
  for (int64_t i = -5; i < 8; ++i) got.push_back(r.source(i, 3));
  EXPECT_EQ(got, (std::vector<int64_t>{1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1}));
  EXPECT_EQ(rep.source(-4, 3), 0);
  EXPECT_EQ(rep.source(9, 3), 2);
  EXPECT_EQ(r.source(-2, 1), 0);
  // without padding, such images stay refused, and the message says how to pad
  expect_error<c10::Error>([] { qlty::NCYXQuilt(6, 20, 9, 4); }, {"must not exceed the image size 6", "qlty::Pad"});
}

TEST(Gaps, GridsThatLeavePixelsUncoveredAreRefusedWhereverTheyAreStitched) {
  qlty::NCYXQuilt q(20, 20, {4, 4}, {6, 3});  // 2 pixels of every 6 rows lie in no window
  auto x = torch::randn({1, 1, 20, 20});
  auto p = q.unstitch(x);  // sampling patches is fine
  EXPECT_TRUE(torch::equal(p, reference_unstitch(x, {4, 4}, {6, 3})));
  expect_error<c10::Error>([&] { q.stitch(p); },
                           {"NCYXQuilt.stitch", "step along Y (6) exceeds the window (4)", "no prediction"});
  auto out = torch::full({1, 1, 20, 20}, 7.0f), w = torch::empty({20, 20});
  expect_error<c10::Error>([&] { q.stitch_out(p, out, w); }, {"NCYXQuilt.stitch_out", "step along Y"});
  EXPECT_TRUE((out == 7).all().item<bool>());
  qlty_test::TempDir dir("qlty_gaps");
  expect_error<c10::Error>(
      [&] {
        qlty::LargeNCZYXQuilt(dir / "q", 1, 10, 10, 10, 3, {3, 5, 3});
      },
      {"LargeNCZYXQuilt", "step along Y (5) exceeds the window (3)"});
  qlty::BlockwiseOptions o;
  o.window = 4;
  o.step = {4, 5};
  expect_error<c10::Error>(
      [&] {
        qlty::infer_blockwise([](const torch::Tensor& t) { return t; }, qlty::BlockInput::from_tensor(x), dir / "out",
                              o);
      },
      {"qlty::infer_blockwise", "step along X (5) exceeds the window (4)"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "out"));
  // one window along an axis: the step does not matter there
  qlty::NCYXQuilt one(4, 20, 4, {9, 2});
  EXPECT_TRUE(torch::allclose(std::get<0>(one.stitch(one.unstitch(torch::ones({1, 1, 4, 20})))), torch::ones({1})));
}

TEST(LargeQuiltBlend, GaussianAndCustomWindowsGiveTheInMemoryBytes) {
  qlty_test::TempDir dir("qlty_large_blend");
  torch::manual_seed(9);
  auto x = torch::randn({2, 2, 9, 14, 12});
  const auto custom = torch::rand({4, 6, 5}) + 0.1;
  int i = 0;
  for (const auto& blend : {qlty::Blend::gaussian(), qlty::Blend::custom(custom), qlty::Blend::constant()}) {
    qlty::NCZYXQuilt q(9, 14, 12, {4, 6, 5}, {3, 4, 3}, blend);
    auto p = q.unstitch(x) * 1.5 + 0.25;
    auto [ref, rw] = q.stitch(p);
    const std::string prefix = dir / ("run" + std::to_string(i++));
    {
      qlty::LargeNCZYXQuilt lq(prefix, 2, 9, 14, 12, {4, 6, 5}, {3, 4, 3}, blend);
      for (int64_t k = 0; k < lq.N_chunks(); ++k) lq.stitch(p[k], k);
      auto mean = std::get<0>(lq.return_mean());
      EXPECT_TRUE(torch::equal(mean, ref)) << blend.describe() << " " << (mean - ref).abs().max().item<double>();
    }
    // the blend is part of the run's parameters: another one is refused on resume
    expect_error<qlty::Error>(
        [&] {
          qlty::LargeNCZYXQuilt(prefix, 2, 9, 14, 12, {4, 6, 5}, {3, 4, 3}, 1, 0.1);
        },
        {"other parameters"});
  }
}

TEST(LargeQuiltBlend, SmallVolumesArePaddedAndTheResultCropped) {
  qlty_test::TempDir dir("qlty_large_pad");
  torch::manual_seed(10);
  auto x = torch::randn({2, 2, 3, 14, 9});  // Z = 3 < window 4, X = 9 < window 11
  qlty::zarr::Array::create(dir / "x.zarr", qlty::zarr::ArrayOptions({2, 2, 3, 14, 9}, {1, 2, 2, 5, 5}))
      .write({0, 0, 0, 0, 0}, x);
  const auto arr = qlty::zarr::Array::open(dir / "x.zarr");
  for (const auto& pad : {qlty::Pad::reflect(), qlty::Pad::constant(-1)}) {
    qlty::NCZYXQuilt q(3, 14, 9, {4, 6, 11}, {3, 4, 3}, qlty::Blend::gaussian(), pad);
    auto p = q.unstitch(x);
    auto [ref, rw] = q.stitch(p * 2 - 1);
    qlty::LargeQuiltOptions o;
    o.pad = pad;
    const std::string prefix = dir / pad.name();
    {
      qlty::LargeNCZYXQuilt lq(prefix, 2, 3, 14, 9, {4, 6, 11}, {3, 4, 3}, qlty::Blend::gaussian(), o);
      ASSERT_EQ(lq.N_chunks(), p.size(0));
      for (int64_t k = 0; k < lq.N_chunks(); ++k) {
        auto from_tensor = lq.unstitch(x, k), from_zarr = lq.unstitch(arr, k);
        ASSERT_TRUE(torch::equal(from_tensor, p[k])) << pad.name() << " window " << k;
        ASSERT_TRUE(torch::equal(from_zarr, p[k])) << pad.name() << " window " << k;
        lq.stitch(from_zarr * 2 - 1, k);
      }
      auto mean = std::get<0>(lq.return_mean());
      ASSERT_EQ(mean.sizes(), x.sizes());
      EXPECT_TRUE(torch::equal(mean, ref)) << pad.name() << " " << (mean - ref).abs().max().item<double>();
      EXPECT_TRUE(torch::equal(qlty::zarr::Array::open(prefix + "_mean.zarr").read(), ref));
    }
    // the padding is part of the run's parameters
    expect_error<c10::Error>(
        [&] {
          qlty::LargeNCZYXQuilt(prefix, 2, 3, 14, 9, {4, 6, 11}, {3, 4, 3}, qlty::Blend::gaussian());
        },
        {"must not exceed the image size 3", "qlty::Pad"});
    qlty::LargeQuiltOptions other;
    other.pad = qlty::Pad::replicate();
    expect_error<qlty::Error>(
        [&] {
          qlty::LargeNCZYXQuilt(prefix, 2, 3, 14, 9, {4, 6, 11}, {3, 4, 3}, qlty::Blend::gaussian(), other);
        },
        {"other parameters"});
  }
}

}  // namespace

// Values that pass every check must not give NaN or infinity: a gaussian whose 2 sigma^2 underflows float32 is
// refused; custom windows of any finite scale blend as the same window scaled to 1; pad values must be finite.
TEST(BlendErrors, ValidValuesGiveFiniteResultsOrAreRefused) {
  expect_error<c10::ValueError>([] { qlty::NCYXQuilt(16, 16, 8, 4, qlty::Blend::gaussian({1e-30})); },
                                {"sigma_scale 1e-30", "underflows float32", "at least"});
  expect_error<c10::ValueError>(
      [] {
        qlty::NCZYXQuilt(16, 16, 16, 8, 4, qlty::Blend::gaussian({0.1, 1e-25, 0.1}));
      },
      {"sigma_scale 1e-25", "window of 8"});
  auto x = torch::randn({2, 3, 16, 16});
  for (double s : {1e-19, 1e-5, 1e30}) {  // the smallest that works, a spike, a flat window
    qlty::NCYXQuilt q(16, 16, 8, 4, qlty::Blend::gaussian({s}));
    auto back = std::get<0>(q.stitch(q.unstitch(x)));
    EXPECT_TRUE(back.isfinite().all().item<bool>()) << s;
    EXPECT_TRUE(torch::allclose(back, x, 1e-5, 1e-5)) << s;
  }
  auto w = torch::rand({8, 8}, torch::kFloat64) + 0.1;
  qlty::NCYXQuilt unit(16, 16, 8, 4, qlty::Blend::custom(w / w.max()));
  auto p = torch::randn_like(unit.unstitch(torch::zeros({2, 3, 16, 16})));
  const auto expected = std::get<0>(unit.stitch(p));
  for (double scale : {1e300, 3e38, 1e-300}) {
    qlty::NCYXQuilt q(16, 16, 8, 4, qlty::Blend::custom(w * scale));
    auto [result, weights] = q.stitch(p);
    EXPECT_TRUE(result.isfinite().all().item<bool>() && weights.isfinite().all().item<bool>()) << scale;
    EXPECT_TRUE(torch::allclose(result, expected, 1e-5, 1e-6)) << scale;
  }
  for (double v : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(), std::nan("")})
    expect_error<c10::ValueError>([&] { qlty::Pad::constant(v); }, {"qlty::Pad::constant", "must be finite"});
  EXPECT_EQ(qlty::Pad::constant(1e30).value(), 1e30);
}
