// Positions from unstitch: window origins per patch (each row its own) and positional channels, absolute and
// relative, normalised or not, 2D and 3D, padded quilts, dtypes, autograd, and the errors.
#include "../common.hpp"

#include <qlty/quilt.hpp>

namespace {

using qlty::Positions;

/// (N, D, *shape) images whose channel a holds each pixel's coordinate along axis a: unstitched, they are the
/// absolute positional channels (an oracle that shares no code with add_positions).
torch::Tensor coordinate_images(int64_t N, const std::vector<int64_t>& shape) {
  std::vector<torch::Tensor> axes;
  for (auto s : shape) axes.push_back(torch::arange(s, torch::kLong));
  auto grids = torch::meshgrid(axes, "ij");
  auto one = torch::stack(grids).unsqueeze(0);  // (1, D, *shape)
  return one.repeat_interleave(N, 0);
}

TEST(Positions, OriginsAreTheWindowStartsOfEachPatchInUnstitchOrder) {
  qlty::NCYXQuilt q(20, 17, {8, 6}, {5, 4}, 2);  // last windows start at Y - W and X - W
  const auto t = q.get_times();
  const auto o = q.window_origins(3);
  ASSERT_EQ(o.sizes(), (std::vector<int64_t>{3 * t[0] * t[1], 2}));
  int64_t m = 0;
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t i = 0; i < t[0]; ++i)
      for (int64_t j = 0; j < t[1]; ++j, ++m) {
        EXPECT_EQ(o[m][0].item<int64_t>(), std::min<int64_t>(i * 5, 20 - 8));
        EXPECT_EQ(o[m][1].item<int64_t>(), std::min<int64_t>(j * 4, 17 - 6));
      }
  const auto with_n = q.window_origins(3, true);
  EXPECT_TRUE(torch::equal(with_n.narrow(1, 1, 2), o));
  EXPECT_TRUE(torch::equal(with_n.select(1, 0), torch::arange(3).repeat_interleave(t[0] * t[1])));
  // each patch its own row: changing one changes no other (the original shares one storage across patches)
  auto copy = o.clone();
  auto edited = q.window_origins(3);
  edited[0][0] = 99;
  EXPECT_TRUE(torch::equal(edited.narrow(0, 1, edited.size(0) - 1), copy.narrow(0, 1, copy.size(0) - 1)));
  // the origins cut the same patches unstitch cuts
  torch::manual_seed(1);
  const auto x = torch::randn({3, 2, 20, 17});
  const auto patches = q.unstitch(x);
  for (int64_t k : {int64_t(0), int64_t(7), o.size(0) - 1}) {
    const auto n = with_n[k][0].item<int64_t>(), y = o[k][0].item<int64_t>(), xx = o[k][1].item<int64_t>();
    EXPECT_TRUE(torch::equal(patches[k], x[n].narrow(1, y, 8).narrow(2, xx, 6))) << k;
  }
  EXPECT_EQ(q.window_origins(0).size(0), 0);
}

TEST(Positions, AbsoluteChannelsAreTheUnstitchedCoordinates) {
  qlty::NCYXQuilt q2(20, 17, {8, 6}, {5, 4});
  torch::manual_seed(2);
  const auto x = torch::randn({2, 3, 20, 17});
  const auto got = q2.add_positions(q2.unstitch(x), Positions::Absolute, false);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{q2.window_origins(2).size(0), 5, 8, 6}));
  EXPECT_TRUE(torch::equal(got.narrow(1, 0, 3), q2.unstitch(x)));
  EXPECT_TRUE(torch::equal(got.narrow(1, 3, 2), q2.unstitch(coordinate_images(2, {20, 17})).to(torch::kFloat)));
  const auto norm = q2.add_positions(q2.unstitch(x));  // absolute, normalised by the image's size
  EXPECT_TRUE(torch::allclose(norm.narrow(1, 3, 1), got.narrow(1, 3, 1) / 20.0));
  EXPECT_TRUE(torch::allclose(norm.narrow(1, 4, 1), got.narrow(1, 4, 1) / 17.0));

  qlty::NCZYXQuilt q3(9, 10, 11, {4, 5, 6}, {3, 3, 4});
  const auto v = torch::randn({1, 1, 9, 10, 11});
  const auto got3 = q3.add_positions(q3.unstitch(v), Positions::Absolute, false);
  EXPECT_TRUE(torch::equal(got3.narrow(1, 1, 3), q3.unstitch(coordinate_images(1, {9, 10, 11})).to(torch::kFloat)));
}

TEST(Positions, RelativeChannelsAndDtypes) {
  qlty::NCZYXQuilt q(9, 10, 11, {4, 1, 6}, {3, 1, 4});
  const auto p = q.unstitch(torch::zeros({2, 1, 9, 10, 11}, torch::kByte));
  const auto raw = q.add_positions(p, Positions::Relative, false);
  EXPECT_EQ(raw.scalar_type(), torch::kLong) << "uint8 patches and int64 coordinates: int64, nothing wraps";
  EXPECT_TRUE(torch::equal(raw.select(1, 1), torch::arange(4).view({1, 4, 1, 1}).expand({p.size(0), 4, 1, 6})));
  EXPECT_TRUE(torch::equal(raw.select(1, 3), torch::arange(6).view({1, 1, 1, 6}).expand({p.size(0), 4, 1, 6})));
  const auto norm = q.add_positions(p, Positions::Relative);
  EXPECT_EQ(norm.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(norm.select(1, 1), raw.select(1, 1).to(torch::kFloat) / 3.0));
  EXPECT_TRUE(torch::equal(norm.select(1, 2), torch::zeros_like(norm.select(1, 2)))) << "W = 1: left as is (0)";
  EXPECT_TRUE(torch::allclose(norm.select(1, 3), raw.select(1, 3).to(torch::kFloat) / 5.0));
  EXPECT_EQ(q.add_positions(p.to(torch::kDouble)).scalar_type(), torch::kDouble);
}

TEST(Positions, PaddedQuiltsGiveCoordinatesInTheImageAsGiven) {
  // 5 x 12 images, windows of 8 x 6: the Y axis is padded by 1 before (floor(3 / 2)) and 2 after
  qlty::NCYXQuilt q(5, 12, {8, 6}, {4, 3}, qlty::Blend::constant(), qlty::Pad::constant(0));
  const auto o = q.window_origins(1);
  EXPECT_EQ(o.select(1, 0).min().item<int64_t>(), -1);
  const auto c = q.add_positions(q.unstitch(torch::randn({1, 1, 5, 12})), Positions::Absolute, false);
  EXPECT_TRUE(torch::equal(c[0][1].select(1, 0), torch::arange(-1, 7).to(torch::kFloat)));
}

TEST(Positions, GradientsFlowToTheImagesAndBadArgumentsAreNamed) {
  qlty::NCYXQuilt q(12, 12, 6, 3);
  const auto x = torch::randn({2, 2, 12, 12}, torch::requires_grad());
  const auto y = q.add_positions(q.unstitch(x));
  (y.narrow(1, 0, 2) * 3).sum().backward();
  const auto w = std::get<1>(q.stitch(q.unstitch(torch::ones({1, 2, 12, 12}))));
  EXPECT_TRUE(torch::allclose(x.grad()[0][0], 3 * w));  // each pixel counted once per window it lies in
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.add_positions(torch::zeros({5, 1, 6, 6}));
      },
      {"NCYXQuilt.add_positions", "multiple of the 9 windows", "got 5"});
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.add_positions(torch::zeros({9, 1, 6, 5}));
      },
      {"window's shape [6, 6]", "[9, 1, 6, 5]"});
  qlty_test::expect_error<c10::ValueError>([&] { q.window_origins(-1); }, {"N must be >= 0, got -1"});
}

}  // namespace
