// qlty/quilt.hpp: NCYXQuilt and NCZYXQuilt against hand-computed cases and slicing references.
#include <random>

#include "../common.hpp"

using namespace qlty_test;
using qlty::Backend;

namespace {
const std::vector<Backend> kBackends{Backend::Native, Backend::Torch};

std::vector<int64_t> vec(const std::array<int64_t, 2>& a) { return {a[0], a[1]}; }
std::vector<int64_t> vec(const std::array<int64_t, 3>& a) { return {a[0], a[1], a[2]}; }
}  // namespace

TEST(NCYXQuilt, UnstitchHandComputed) {
  qlty::NCYXQuilt q(4, 4, 2, 2);
  auto x = torch::arange(16, torch::kFloat32).view({1, 1, 4, 4});
  for (auto b : kBackends) {
    auto p = q.unstitch(x, b);
    ASSERT_EQ(p.sizes(), (std::vector<int64_t>{4, 1, 2, 2}));
    EXPECT_TRUE(torch::equal(p[0][0], torch::tensor({0.f, 1.f, 4.f, 5.f}).view({2, 2})));
    EXPECT_TRUE(torch::equal(p[1][0], torch::tensor({2.f, 3.f, 6.f, 7.f}).view({2, 2})));
    EXPECT_TRUE(torch::equal(p[2][0], torch::tensor({8.f, 9.f, 12.f, 13.f}).view({2, 2})));
    EXPECT_TRUE(torch::equal(p[3][0], torch::tensor({10.f, 11.f, 14.f, 15.f}).view({2, 2})));
  }
}

TEST(NCYXQuilt, StitchHandComputedWithBorderWeight) {
  // One row of 5 pixels, windows of 3 at x = 0 and 2, border 1 along X: window weights [bw, 1, bw].
  const double bw = 0.25;
  qlty::NCYXQuilt q(1, 5, {1, 3}, {1, 2}, {0, 1}, bw);
  auto patches = torch::tensor({1.0, 2.0, 3.0, 10.0, 20.0, 30.0}, torch::kFloat64).view({2, 1, 1, 3});
  for (auto b : kBackends) {
    auto [result, weights] = q.stitch(patches, b);
    EXPECT_TRUE(torch::allclose(result.view(-1), torch::tensor({1.0, 2.0, 6.5, 20.0, 30.0}, torch::kFloat64)));
    EXPECT_TRUE(torch::allclose(weights.view(-1), torch::tensor({bw, 1.0, 2 * bw, 1.0, bw}, torch::kFloat64)));
    EXPECT_EQ(weights.sizes(), (std::vector<int64_t>{1, 5}));
  }
}

TEST(NCYXQuilt, BorderOnBothAxesWeighsWholeBorderRows) {
  // A 3x3 window with border 1: only the centre weighs 1.
  qlty::NCYXQuilt q(3, 3, 3, 1, 1, 0.5);
  auto [result, weights] = q.stitch(torch::ones({1, 1, 3, 3}, torch::kFloat64));
  auto expect = torch::full({3, 3}, 0.5, torch::kFloat64);
  expect[1][1] = 1.0;
  EXPECT_TRUE(torch::equal(weights, expect));
  EXPECT_TRUE(torch::allclose(result, torch::ones({1, 1, 3, 3}, torch::kFloat64)));
}

TEST(NCYXQuilt, SeedExampleShapesAndValues) {
  qlty::NCYXQuilt quilt(128, 128, {16, 16}, {4, 4}, {4, 4}, 0.1);
  torch::manual_seed(0);
  auto x = torch::rand({10, 3, 128, 128});
  auto y = torch::rand({10, 1, 128, 128});
  auto [x_bits, y_bits] = quilt.unstitch_data_pair(x, y);
  EXPECT_EQ(x_bits.sizes(), (std::vector<int64_t>{8410, 3, 16, 16}));
  EXPECT_EQ(y_bits.sizes(), (std::vector<int64_t>{8410, 1, 16, 16}));
  EXPECT_TRUE(torch::equal(x_bits[8409], x[9].index({Slice(), Slice(112, 128), Slice(112, 128)})));
  EXPECT_TRUE(torch::equal(x_bits[841 + 30], x[1].index({Slice(), Slice(4, 20), Slice(4, 20)})));
  auto [nY, nX] = quilt.get_times();
  EXPECT_EQ(nY * nX, 841);

  auto y_mock = torch::rand({8410, 17, 16, 16});
  auto [stitched, weights] = quilt.stitch(y_mock);
  EXPECT_EQ(stitched.sizes(), (std::vector<int64_t>{10, 17, 128, 128}));
  EXPECT_EQ(weights.sizes(), (std::vector<int64_t>{128, 128}));
  auto ref = reference_stitch(y_mock.narrow(0, 841, 841).narrow(1, 0, 2), {128, 128}, {16, 16}, {4, 4}, {4, 4}, 0.1);
  EXPECT_TRUE(torch::allclose(stitched[1].narrow(0, 0, 2).to(torch::kFloat64), ref.first[0], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(weights.to(torch::kFloat64), ref.second, 1e-6, 1e-6));
  // A corner pixel lies only on one window's border.
  // Per axis, pixel 64 is inside the interior of 2 windows and on the border of 2 more: 4 + 12 * 0.1.
  EXPECT_NEAR(weights[64][64].item<float>(), 5.2f, 1e-5);
  EXPECT_NEAR(weights[0][0].item<float>(), 0.1f, 1e-6);
}

TEST(NCYXQuilt, UnstitchDataPairWithMissingLabel) {
  qlty::NCYXQuilt quilt(32, 32, 8, 4, 2, 0.1);
  auto x = torch::randn({2, 3, 32, 32});
  auto labels = torch::randint(0, 5, {2, 32, 32}, torch::kInt64);
  auto [xp, yp] = quilt.unstitch_data_pair(x, labels, -1);
  EXPECT_EQ(yp.sizes(), (std::vector<int64_t>{2 * 49, 8, 8}));
  EXPECT_EQ(yp.scalar_type(), torch::kInt64);
  auto inner = quilt.border_tensor().to(torch::kBool);
  auto plain = reference_unstitch(labels.unsqueeze(1), {8, 8}, {4, 4}).squeeze(1);
  EXPECT_TRUE(torch::equal(yp.masked_select(inner), plain.masked_select(inner)));
  EXPECT_TRUE((yp.masked_select(inner.logical_not()) == -1).all().item<bool>());
  EXPECT_TRUE(torch::equal(xp, reference_unstitch(x, {8, 8}, {4, 4})));
  // With a channel axis the patches keep it.
  auto [xp2, yp2] = quilt.unstitch_data_pair(x, labels.unsqueeze(1).to(torch::kFloat32), -1.5);
  EXPECT_EQ(yp2.sizes(), (std::vector<int64_t>{98, 1, 8, 8}));
  EXPECT_TRUE((yp2.index({Slice(), 0, 0, Slice()}) == -1.5).all().item<bool>());
}

TEST(NCZYXQuilt, UnstitchDataPairWithMissingLabel) {
  qlty::NCZYXQuilt quilt(10, 12, 9, {4, 6, 5}, {3, 3, 2}, {1, 2, 1}, 0.1);
  auto x = torch::randn({2, 1, 10, 12, 9});
  auto labels = torch::randint(0, 3, {2, 10, 12, 9}, torch::kInt32);
  auto [xp, yp] = quilt.unstitch_data_pair(x, labels, 7);
  auto inner = quilt.border_tensor().to(torch::kBool);
  auto plain = reference_unstitch(labels.unsqueeze(1), {4, 6, 5}, {3, 3, 2}).squeeze(1);
  EXPECT_EQ(yp.sizes(), plain.sizes());
  EXPECT_TRUE(torch::equal(yp.masked_select(inner), plain.masked_select(inner)));
  EXPECT_TRUE((yp.masked_select(inner.logical_not()) == 7).all().item<bool>());
  EXPECT_TRUE(torch::equal(xp, reference_unstitch(x, {4, 6, 5}, {3, 3, 2})));
}

TEST(NCZYXQuilt, SeedExampleRoundTrip) {
  qlty::NCZYXQuilt quilt(64, 64, 64, {32, 32, 32}, {16, 16, 16}, {4, 4, 4}, 0.1);
  auto volume = torch::randn({5, 1, 64, 64, 64});
  auto patches = quilt.unstitch(volume);
  EXPECT_EQ(patches.sizes(), (std::vector<int64_t>{5 * 27, 1, 32, 32, 32}));
  auto [back, weights] = quilt.stitch(patches);
  EXPECT_TRUE(torch::allclose(back, volume, 1e-5, 1e-5));
  EXPECT_EQ(weights.sizes(), (std::vector<int64_t>{64, 64, 64}));
}

TEST(NCZYXQuilt, ClampedLastWindowMatchesReference) {
  qlty::NCZYXQuilt quilt(11, 10, 9, {4, 5, 3}, {3, 4, 2}, {1, 1, 0}, 0.3);
  auto x = torch::randn({2, 2, 11, 10, 9}, torch::kFloat64);
  auto ref = reference_unstitch(x, {4, 5, 3}, {3, 4, 2});
  auto patches = torch::randn(ref.sizes(), torch::kFloat64);
  auto [rres, rw] = reference_stitch(patches, {11, 10, 9}, {4, 5, 3}, {3, 4, 2}, {1, 1, 0}, 0.3);
  for (auto b : kBackends) {
    EXPECT_TRUE(torch::equal(quilt.unstitch(x, b), ref));
    auto [res, w] = quilt.stitch(patches, b);
    EXPECT_TRUE(torch::allclose(res, rres, 1e-12, 1e-12));
    EXPECT_TRUE(torch::allclose(w, rw, 1e-12, 1e-12));
  }
}

// Random shapes, windows, steps, borders and weights: unstitch equals slicing; stitch equals the reference;
// stitch(unstitch(x)) == x; the native and torch paths agree.
template <int D>
void random_property_trial(std::mt19937& rng) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  std::array<int64_t, D> S{};
  std::vector<int64_t> W(D), s(D), b(D);
  for (int a = 0; a < D; ++a) {
    S[a] = pick(1, D == 2 ? 40 : 14);
    W[a] = pick(1, S[a]);
    s[a] = pick(1, W[a] + 2);
    b[a] = W[a] >= 3 && pick(0, 2) ? pick(0, (W[a] - 1) / 2) : 0;
  }
  const double bw = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  qlty::Quilt<D> quilt(S, W, s, b, bw);
  std::vector<int64_t> shape{pick(1, 3), pick(1, 3)};
  shape.insert(shape.end(), S.begin(), S.end());
  auto x = torch::randn(shape, torch::kFloat64);
  auto ref = reference_unstitch(x, W, s);
  auto [rres, rw] = reference_stitch(ref, vec(S), W, s, b, bw);
  for (auto be : kBackends) {
    auto p = quilt.unstitch(x, be);
    ASSERT_TRUE(torch::equal(p, ref)) << "unstitch, S " << c10::IntArrayRef(vec(S)) << " W " << c10::IntArrayRef(W);
    if (quilt.geometry().gap_axis() >= 0) {  // pixels in no window: stitching is refused (test_blend.cpp)
      ASSERT_FALSE((rw > 0).all().template item<bool>());
      EXPECT_THROW(quilt.stitch(p, be), c10::Error);
      continue;
    }
    ASSERT_TRUE((rw > 0).all().template item<bool>());
    auto [res, w] = quilt.stitch(p, be);
    ASSERT_TRUE(torch::allclose(res, rres, 1e-10, 1e-10))
        << "stitch, W " << c10::IntArrayRef(W) << " s " << c10::IntArrayRef(s) << " b " << c10::IntArrayRef(b);
    ASSERT_TRUE(torch::allclose(w, rw, 1e-10, 1e-10));
    // Round trip: every pixel lies in some window.
    auto covered = (rw > 0).expand_as(x);
    ASSERT_TRUE(torch::allclose(res.masked_select(covered), x.masked_select(covered), 1e-10, 1e-10));
    ASSERT_TRUE((res.masked_select(covered.logical_not()) == 0).all().template item<bool>());
  }
}

TEST(Quilt, RandomPropertiesIn2D) {
  std::mt19937 rng(1234);
  for (int t = 0; t < 60; ++t) random_property_trial<2>(rng);
}

TEST(Quilt, RandomPropertiesIn3D) {
  std::mt19937 rng(99);
  for (int t = 0; t < 30; ++t) random_property_trial<3>(rng);
}

TEST(Quilt, RoundTripWithoutGapsWhateverTheBorderWeight) {
  for (double bw : {0.0, 1e-3, 0.1, 0.5, 1.0}) {
    qlty::NCYXQuilt q(37, 29, {9, 7}, {4, 3}, {2, 1}, bw);
    auto x = torch::randn({2, 3, 37, 29});
    auto [back, w] = q.stitch(q.unstitch(x));
    EXPECT_TRUE(torch::allclose(back, x, 1e-5, 1e-5)) << "border_weight " << bw;
  }
}

TEST(Quilt, UnstitchEveryDtypeExactly) {
  qlty::NCYXQuilt q(13, 11, {5, 4}, {3, 2}, 1, 0.1);
  auto base = torch::randn({2, 3, 13, 11}) * 50;
  for (auto dt :
       {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16, torch::kInt8, torch::kUInt8, torch::kInt16,
        torch::kInt32, torch::kInt64, torch::kBool, torch::kComplexFloat, torch::kComplexDouble}) {
    auto x = base.to(dt);
    auto ref = reference_unstitch(x, {5, 4}, {3, 2});
    for (auto b : kBackends) {
      auto p = q.unstitch(x, b);
      EXPECT_EQ(p.scalar_type(), dt);
      EXPECT_TRUE(torch::equal(p, ref)) << dt;
    }
  }
}

TEST(Quilt, StitchReducedPrecisionAccumulatesInFloat) {
  qlty::NCYXQuilt q(24, 24, 8, 2, 2, 0.1);
  auto p = torch::rand({2 * 81, 2, 8, 8});
  auto [ref, rw] = reference_stitch(p, {24, 24}, {8, 8}, {2, 2}, {2, 2}, 0.1);
  for (auto dt : {torch::kFloat16, torch::kBFloat16}) {
    auto pl = p.to(dt);
    auto [rl, wl] = reference_stitch(pl, {24, 24}, {8, 8}, {2, 2}, {2, 2}, 0.1);
    for (auto b : kBackends) {
      auto [res, w] = q.stitch(pl, b);
      EXPECT_EQ(res.scalar_type(), dt);
      EXPECT_EQ(w.scalar_type(), torch::kFloat32);
      // Float accumulation: the only error is the final rounding to the low-precision type.
      const double tol = dt == torch::kFloat16 ? 1e-3 : 8e-3;
      EXPECT_TRUE(torch::allclose(res.to(torch::kFloat64), rl, 0, tol)) << dt;
      EXPECT_TRUE(torch::allclose(w.to(torch::kFloat64), rw, 1e-6, 1e-6));
    }
  }
}

TEST(Quilt, NonContiguousInputs) {
  qlty::NCZYXQuilt q(9, 10, 11, {4, 5, 6}, {2, 3, 3}, 1, 0.2);
  auto xt = torch::randn({9, 10, 11, 3, 2}).permute({4, 3, 0, 1, 2});  // (2, 3, 9, 10, 11), not contiguous
  ASSERT_FALSE(xt.is_contiguous());
  auto expect = q.unstitch(xt.contiguous());
  auto pt = torch::randn({4, 5, 6, expect.size(0), 3}).permute({3, 4, 0, 1, 2});
  auto [sexp, wexp] = q.stitch(pt.contiguous());
  for (auto b : kBackends) {
    EXPECT_TRUE(torch::equal(q.unstitch(xt, b), expect));
    auto [s, w] = q.stitch(pt, b);
    EXPECT_TRUE(torch::allclose(s, sexp, 1e-6, 1e-6));
  }
  // A strided X axis (every other column) in 2D.
  qlty::NCYXQuilt q2(16, 8, 4, 2, 1, 0.1);
  auto wide = torch::randn({1, 2, 16, 16});
  auto xs = wide.index({Slice(), Slice(), Slice(), Slice(0, 16, 2)});
  for (auto b : kBackends) EXPECT_TRUE(torch::equal(q2.unstitch(xs, b), q2.unstitch(xs.contiguous())));
}

TEST(Quilt, NativeAndTorchPathsAgreeOnLargerData) {
  qlty::NCYXQuilt q(100, 90, {20, 18}, {7, 6}, {3, 2}, 0.05);
  auto x = torch::randn({3, 4, 100, 90});
  auto pn = q.unstitch(x, Backend::Native);
  EXPECT_TRUE(torch::equal(pn, q.unstitch(x, Backend::Torch)));
  auto [sn, wn] = q.stitch(pn * 2, Backend::Native);
  auto [st, wt] = q.stitch(pn * 2, Backend::Torch);
  EXPECT_TRUE(torch::allclose(sn, st, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(wn, wt, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(sn, x * 2, 1e-5, 1e-5));
}

// Tiling: a convolution of radius r applied to patches with border >= r and a tiny border weight, stitched,
// equals the convolution of the whole image in the interior.
TEST(Quilt, TilingPropertyIn2D) {
  const int64_t r = 2;
  torch::manual_seed(3);
  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 2 * r + 1).padding(r).bias(false));
  qlty::NCYXQuilt q(70, 61, {20, 17}, {12, 9}, {3, 3}, 0.0);
  auto x = torch::randn({2, 2, 70, 61});
  torch::NoGradGuard ng;
  auto whole = conv->forward(x);
  auto [tiled, w] = q.stitch(conv->forward(q.unstitch(x)));
  auto in = [&](const torch::Tensor& t) { return t.index({Slice(), Slice(), Slice(3, 67), Slice(3, 58)}); };
  EXPECT_TRUE(torch::allclose(in(tiled), in(whole), 1e-5, 1e-5)) << (in(tiled)-in(whole)).abs().max();
}

TEST(Quilt, TilingPropertyIn3D) {
  const int64_t r = 1;
  torch::manual_seed(4);
  auto conv = torch::nn::Conv3d(torch::nn::Conv3dOptions(1, 2, 2 * r + 1).padding(r).bias(false));
  qlty::NCZYXQuilt q(23, 20, 26, {10, 8, 12}, {6, 4, 7}, {2, 2, 2}, 1e-9);
  auto x = torch::randn({1, 1, 23, 20, 26});
  torch::NoGradGuard ng;
  auto whole = conv->forward(x);
  auto [tiled, w] = q.stitch(conv->forward(q.unstitch(x)));
  auto in = [&](const torch::Tensor& t) {
    return t.index({Slice(), Slice(), Slice(2, 21), Slice(2, 18), Slice(2, 24)});
  };
  EXPECT_TRUE(torch::allclose(in(tiled), in(whole), 1e-5, 1e-5)) << (in(tiled)-in(whole)).abs().max();
}

TEST(QuiltErrors, BadInputsGiveClearErrors) {
  using V = c10::ValueError;
  qlty::NCYXQuilt q(16, 16, 8, 4, 2, 0.1);
  expect_error<V>([&] { q.unstitch(torch::zeros({3, 16, 16})); }, {"NCYXQuilt.unstitch", "x", "4-D", "3-D"});
  expect_error<V>([&] { q.unstitch(torch::zeros({1, 1, 16, 15})); }, {"unstitch", "spatial size", "[16, 16]", "15"});
  expect_error<V>([&] { q.stitch(torch::zeros({10, 1, 8, 8})); }, {"stitch", "multiple", "9", "got 10"});
  expect_error<V>([&] { q.stitch(torch::zeros({9, 1, 8, 7})); }, {"stitch", "window", "[8, 8]"});
  expect_error<V>([&] { q.stitch(torch::zeros({9, 8, 8})); }, {"stitch", "4-D", "got 3-D"});
  expect_error<c10::TypeError>(
      [&] {
        q.stitch(torch::zeros({9, 1, 8, 8}, torch::kInt32));
      },
      {"stitch", "floating point", "Int"});
  expect_error<V>(
      [&] {
        q.unstitch_data_pair(torch::zeros({2, 1, 16, 16}), torch::zeros({3, 16, 16}));
      },
      {"unstitch_data_pair", "same number of images", "2", "3"});
  expect_error<V>(
      [&] {
        q.unstitch_data_pair(torch::zeros({2, 1, 16, 16}), torch::zeros({2, 16}));
      },
      {"unstitch_data_pair", "y", "3-D"});
  expect_error<V>([] { qlty::NCYXQuilt(16, 16, 17, 4); }, {"NCYXQuilt", "window", "got 17"});
  expect_error<V>([] { qlty::NCZYXQuilt(8, 16, 16, 4, {1, 0, 1}); }, {"NCZYXQuilt", "step", "Y", "got 0"});
  expect_error<V>([] { qlty::NCZYXQuilt(8, 16, 16, 4, 2, 2); }, {"NCZYXQuilt", "border", "interior"});
  expect_error<V>([] { qlty::NCYXQuilt(16, 16, 4, 2, 1, 2.0); }, {"border_weight", "[0, 1]", "got 2"});
  qlty::NCZYXQuilt q3(8, 8, 8, 4, 2, 1, 0.1);
  expect_error<V>([&] { q3.unstitch(torch::zeros({1, 8, 8, 8})); }, {"NCZYXQuilt.unstitch", "5-D", "4-D"});
}

// The native fold streams whole windows in patch order into a ring of window rows, split into ranges along the
// outer axis and into channel groups when a ring would exceed kFoldRingBytes. Each path against the slicing
// reference, and bitwise the same whatever the threads.
TEST(Quilt, FoldPathsMatchTheReferenceAndDoNotDependOnThreads) {
  struct Case {
    std::vector<int64_t> S, W, s, b;
    int64_t N, C;
    bool strided;  // patches with a strided X axis (no fast row path)
  };
  const std::vector<Case> cases{
      {{37, 29}, {9, 8}, {4, 3}, {2, 1}, 2, 3, false},     // 2D, ring wraps many times, width 8
      {{40, 70}, {16, 16}, {5, 6}, {3, 4}, 3, 5, false},   // width 16
      {{33, 64}, {12, 32}, {7, 32}, {0, 5}, 1, 2, false},  // width 32, no border along Y
      {{20, 64}, {6, 64}, {6, 64}, {1, 1}, 2, 1, false},   // width 64, windows that tile exactly
      {{31, 23}, {10, 7}, {3, 5}, {2, 2}, 2, 2, true},     // odd width, strided patches
      {{21, 19, 17}, {8, 7, 6}, {3, 4, 5}, {1, 2, 1}, 2, 3, false},
      {{21, 19, 17}, {8, 7, 16}, {3, 4, 5}, {1, 2, 1}, 1, 2, true},
      // 3D whose ring of one channel (32 planes of 200 x 200 floats, 5 MiB) exceeds kFoldRingBytes: one
      // channel per group
      {{64, 200, 200}, {32, 16, 16}, {16, 16, 16}, {4, 4, 4}, 1, 2, false},
  };
  const int threads = at::get_num_threads();
  for (const auto& c : cases) {
    const int D = static_cast<int>(c.S.size());
    qlty::detail::Grid3 g;
    int64_t P = 0;
    if (D == 2) {
      qlty::NCYXQuilt q(c.S[0], c.S[1], c.W, c.s, c.b, 0.1);
      g = q.geometry().grid3();
      P = q.patches_per_image();
    } else {
      qlty::NCZYXQuilt q(c.S[0], c.S[1], c.S[2], c.W, c.s, c.b, 0.1);
      g = q.geometry().grid3();
      P = q.patches_per_image();
    }
    std::vector<int64_t> shape{c.N * P, c.C};
    shape.insert(shape.end(), c.W.begin(), c.W.end());
    auto patches = torch::randn(shape, torch::kFloat64);
    if (c.strided) {
      auto wide = shape;
      wide.back() *= 2;
      auto big = torch::randn(wide, torch::kFloat64);
      patches = big.narrow(-1, 0, shape.back() * 2).slice(-1, 0, shape.back() * 2, 2);
      ASSERT_NE(patches.stride(-1), 1);
    }
    auto [ref, rw] = reference_stitch(patches, c.S, c.W, c.s, c.b, 0.1);
    std::vector<torch::Tensor> results;
    for (int t : {1, 2, 3}) {
      at::set_num_threads(t);
      auto p5 = D == 2 ? patches.unsqueeze(2) : patches;
      auto [out, w] = qlty::fold(p5, g, Backend::Native);
      if (D == 2) out = out.squeeze(2), w = w.squeeze(0);
      EXPECT_TRUE(torch::allclose(out, ref, 1e-12, 1e-12)) << "case S=" << c10::IntArrayRef(c.S) << " threads " << t;
      EXPECT_TRUE(torch::allclose(w, rw, 1e-12, 1e-12));
      results.push_back(out);
      // float32, half and bfloat16 accumulate in float32: the same sums, rounded once at the end
      for (auto dt : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
        auto [o, ow] = qlty::fold(p5.to(dt), g, Backend::Native);
        if (D == 2) o = o.squeeze(2);
        const double tol = dt == torch::kFloat32 ? 1e-5 : dt == torch::kFloat16 ? 4e-3 : 3e-2;
        EXPECT_TRUE(torch::allclose(o.to(torch::kFloat64), ref, tol, tol)) << dt << " S=" << c10::IntArrayRef(c.S);
      }
    }
    at::set_num_threads(threads);
    EXPECT_TRUE(torch::equal(results[0], results[1]) && torch::equal(results[0], results[2]))
        << "S=" << c10::IntArrayRef(c.S);
  }
}

// unstitch_out / stitch_out: bitwise the allocating calls, over dtypes, in 2D and 3D, buffers reused.
TEST(Quilt, OutVariantsEqualTheAllocatingCalls) {
  qlty::NCYXQuilt q2(37, 29, {9, 8}, {4, 3}, {2, 1}, 0.2);
  qlty::NCZYXQuilt q3(13, 12, 11, {5, 4, 6}, {3, 3, 2}, 1, 0.1);
  for (auto dt : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16}) {
    for (int d : {2, 3}) {
      auto shape = d == 2 ? std::vector<int64_t>{2, 3, 37, 29} : std::vector<int64_t>{2, 3, 13, 12, 11};
      auto x1 = torch::randn(shape).to(dt), x2 = torch::randn(shape).to(dt);
      auto un = [&](const torch::Tensor& x) { return d == 2 ? q2.unstitch(x) : q3.unstitch(x); };
      auto st = [&](const torch::Tensor& p) { return d == 2 ? q2.stitch(p) : q3.stitch(p); };
      auto patches = torch::full_like(un(x1), 7);  // stale values must all be overwritten
      for (const auto& x : {x1, x2}) {
        auto& r = d == 2 ? q2.unstitch_out(x, patches) : q3.unstitch_out(x, patches);
        EXPECT_EQ(&r, &patches);
        EXPECT_TRUE(torch::equal(patches, un(x))) << dt << " " << d << "D";
      }
      auto [rexp, wexp] = st(patches * 3);
      auto result = torch::full_like(rexp, -1), weights = torch::full_like(wexp, -1);
      for (int rep = 0; rep < 2; ++rep) {
        auto p = (patches * 3).contiguous();
        if (d == 2)
          q2.stitch_out(p, result, weights);
        else
          q3.stitch_out(p, result, weights);
        EXPECT_TRUE(torch::equal(result, rexp)) << dt << " " << d << "D";
        EXPECT_TRUE(torch::equal(weights, wexp));
      }
      // The torch-op path (what other devices run) into the same buffers: the same values.
      if (d == 2) {
        q2.unstitch_out(x1, patches, Backend::Torch);
        EXPECT_TRUE(torch::equal(patches, un(x1)));
        q2.stitch_out(patches, result, weights, Backend::Torch);
        auto [rt, wt] = q2.stitch(patches, Backend::Torch);
        EXPECT_TRUE(torch::equal(result, rt));
        EXPECT_TRUE(torch::equal(weights, wt));
      }
    }
  }
}

TEST(QuiltErrors, OutVariantsRefuseBadBuffers) {
  qlty::NCYXQuilt q(16, 16, 8, 4, 1, 0.1);
  auto x = torch::randn({2, 3, 16, 16});
  auto good = q.unstitch(x);
  auto patches = torch::empty_like(good);
  expect_error<c10::ValueError>(
      [&] {
        auto p = torch::empty({1, 2, 3});
        q.unstitch_out(x, p);
      },
      {"NCYXQuilt.unstitch_out", "patches must have shape [18, 3, 8, 8]", "[1, 2, 3]"});
  expect_error<c10::TypeError>(
      [&] {
        auto p = good.to(torch::kFloat64);
        q.unstitch_out(x, p);
      },
      {"NCYXQuilt.unstitch_out", "patches must have dtype Float", "got Double"});
  expect_error<c10::ValueError>(
      [&] {
        auto p = torch::empty(good.sizes(), torch::TensorOptions().device(torch::kMeta));
        q.unstitch_out(x, p);
      },
      {"NCYXQuilt.unstitch_out", "patches must be on cpu", "got meta"});
  expect_error<c10::ValueError>(
      [&] {
        auto p = torch::empty({3, 18, 8, 8}).transpose(0, 1);
        q.unstitch_out(x, p);
      },
      {"patches must be contiguous"});
  // x inside the output buffer: the call would read what it writes.
  auto buffer = torch::empty({good.numel() + x.numel()});
  auto xin = buffer.narrow(0, 0, x.numel()).view(x.sizes()).copy_(x);
  auto pin = buffer.narrow(0, 10, good.numel()).view(good.sizes());
  expect_error<c10::ValueError>([&] { q.unstitch_out(xin, pin); }, {"patches must not share memory with x"});
  // Autograd is refused, not silently dropped.
  auto xg = x.clone().requires_grad_(true);
  expect_error<c10::ValueError>([&] { q.unstitch_out(xg, patches); },
                                {"x requires grad", "_out calls do not support autograd", "NoGradGuard"});
  {
    torch::NoGradGuard no_grad;
    q.unstitch_out(xg, patches);  // allowed without grad mode
    EXPECT_TRUE(torch::equal(patches, good));
  }
  // stitch_out: the result's shape, the weights' dtype, result and weights on one storage, in place.
  auto [r, w] = q.stitch(good);
  auto result = torch::empty_like(r), weights = torch::empty_like(w);
  expect_error<c10::ValueError>(
      [&] {
        auto bad = torch::empty({2, 3, 16, 15});
        q.stitch_out(good, bad, weights);
      },
      {"NCYXQuilt.stitch_out", "result must have shape [2, 3, 16, 16]"});
  expect_error<c10::TypeError>(
      [&] {
        auto bad = torch::empty({16, 16}, torch::kFloat64);
        q.stitch_out(good, result, bad);
      },
      {"weights must have dtype Float"});
  auto both = torch::empty({r.numel() + w.numel()});
  auto r_in = both.narrow(0, 0, r.numel()).view(r.sizes()), w_in = both.narrow(0, 100, w.numel()).view(w.sizes());
  expect_error<c10::ValueError>([&] { q.stitch_out(good, r_in, w_in); }, {"result must not share memory with weights"});
  auto in_place = good.clone();
  auto alias = in_place.view(-1).narrow(0, 0, r.numel()).view(r.sizes());
  expect_error<c10::ValueError>([&] { q.stitch_out(in_place, alias, weights); },
                                {"result must not share memory with patches"});
  expect_error<c10::TypeError>(
      [&] {
        auto ip = good.to(torch::kInt32);
        q.stitch_out(ip, result, weights);
      },
      {"NCYXQuilt.stitch_out", "floating point"});
  // Nothing was written by a refused call.
  result.fill_(5);
  expect_error<c10::ValueError>(
      [&] {
        auto bad = torch::empty({16, 16, 1});
        q.stitch_out(good, result, bad);
      },
      {"weights must have shape"});
  EXPECT_TRUE((result == 5).all().item<bool>());
}

// Outputs come from a small cache of freed buffers: stale contents never show, and the cache can be emptied.
TEST(Quilt, ReusedOutputBuffersHoldOnlyNewValues) {
  qlty::release_cached_memory();
  qlty::NCYXQuilt q(256, 256, 32, 16, 4, 0.1);
  auto x = torch::randn({2, 2, 256, 256});
  auto first = q.unstitch(x * 0 + 3);  // 3.4 MB: from the huge-page allocator
  const auto bytes = first.nbytes();
  first = torch::Tensor();  // freed into the cache
  EXPECT_GE(qlty::detail::OutputCache::instance().cached_bytes(), bytes);
  auto second = q.unstitch(x);
  EXPECT_TRUE(torch::equal(second, reference_unstitch(x, {32, 32}, {16, 16})));
  second = torch::Tensor();
  EXPECT_GE(qlty::release_cached_memory(), bytes);
  EXPECT_EQ(qlty::detail::OutputCache::instance().cached_bytes(), 0u);
}

// An _out call bumps its outputs' version, as LibTorch's in-place ops do: a backward pass that needs the values a
// buffer held before is refused instead of using the new ones.
TEST(Quilt, OutVariantsInvalidateSavedBuffers) {
  qlty::NCYXQuilt q(16, 16, 8, 4, 1, 0.1);
  auto x = torch::randn({1, 2, 16, 16});
  auto patches = q.unstitch(x);
  auto weight = torch::randn({2}, torch::requires_grad());
  auto loss = (patches * weight.view({1, 2, 1, 1})).pow(2).sum();  // saves `patches` for backward
  q.unstitch_out(x * 2, patches);
  expect_error<c10::Error>([&] { loss.backward(); }, {"modified by an inplace operation"});
}
