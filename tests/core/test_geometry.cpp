// qlty/geometry.hpp: the grid, the border tensor and parameter validation.
#include "../common.hpp"

using namespace qlty_test;

TEST(Geometry, SeedGridHas841WindowsPerImage) {
  qlty::Geometry<2> g({128, 128}, 16, 4, 4, 0.1);
  EXPECT_EQ(g.times()[0], 29);
  EXPECT_EQ(g.times()[1], 29);
  EXPECT_EQ(g.per_image(), 841);
}

TEST(Geometry, LastWindowIsClampedToTheEdge) {
  qlty::Geometry<3> g({10, 11, 7}, {4, 4, 7}, {3, 3, 2}, 0, 0.1);
  EXPECT_EQ(g.times()[0], 3);  // starts 0, 3, 6: the grid ends at the edge
  EXPECT_EQ(g.times()[1], 4);  // starts 0, 3, 6, 7
  EXPECT_EQ(g.times()[2], 1);  // the window is the whole axis
  EXPECT_EQ(g.start(1, 3), 7);
  EXPECT_EQ(g.start(1, 2), 6);
  EXPECT_EQ(g.start(0, 2), 6);
  for (int a = 0; a < 3; ++a) {
    auto ref = starts(g.shape()[a], g.window()[a], g.step()[a]);
    ASSERT_EQ(static_cast<int64_t>(ref.size()), g.times()[a]);
    for (int64_t k = 0; k < g.times()[a]; ++k) EXPECT_EQ(g.start(a, k), ref[k]);
  }
}

TEST(Geometry, StepLargerThanWindowLeavesGaps) {
  qlty::Geometry<2> g({1, 10}, {1, 2}, {1, 5}, 0, 0.1);
  EXPECT_EQ(g.times()[1], 3);  // 0, 5, 8
  EXPECT_EQ(g.start(1, 2), 8);
}

TEST(Geometry, BorderTensorMarksTheInterior) {
  qlty::Geometry<2> g({20, 20}, {5, 6}, 1, {1, 2}, 0.3);
  auto t = g.border_tensor();
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x)
      EXPECT_EQ(t[y][x].item<float>(), (y >= 1 && y < 4 && x >= 2 && x < 4) ? 1.0f : 0.0f) << y << "," << x;
  EXPECT_EQ(t.sum().item<float>(), 6.0f);
}

TEST(Geometry, NoBorderGivesAllOnes) {
  qlty::Geometry<3> g({8, 8, 8}, 4, 2, 0, 0.1);
  EXPECT_FALSE(g.has_border());
  EXPECT_TRUE(torch::equal(g.border_tensor(), torch::ones({4, 4, 4})));
}

TEST(Geometry, PerAxisBorderMayBeZeroOnSomeAxes) {
  qlty::Geometry<2> g({8, 8}, 4, 2, {0, 1}, 0.5);
  EXPECT_TRUE(g.has_border());
  EXPECT_EQ(g.border_tensor().sum().item<float>(), 8.0f);  // 4 rows x 2 inner columns
}

TEST(Geometry, Grid3PutsTwoDimensionsBehindAUnitZ) {
  qlty::Geometry<2> g({12, 9}, {4, 3}, {2, 3}, {1, 1}, 0.0);
  auto g3 = g.grid3();
  EXPECT_EQ(g3.shape, (std::array<int64_t, 3>{1, 12, 9}));
  EXPECT_EQ(g3.window, (std::array<int64_t, 3>{1, 4, 3}));
  EXPECT_EQ(g3.times, (std::array<int64_t, 3>{1, 5, 3}));
  EXPECT_DOUBLE_EQ(g3.border_weight, 1e-8);  // zero border weight is clamped so no pixel weighs 0
  auto back = qlty::detail::Grid3::unpack(g3.pack(), g3.border_weight);
  EXPECT_EQ(back.shape, g3.shape);
  EXPECT_EQ(back.border, g3.border);
  EXPECT_EQ(back.times, g3.times);
}

TEST(GeometryErrors, EachBadParameterIsNamed) {
  using V = c10::ValueError;
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, {4, 4, 4}, 2, 0, 0.1); }, {"NCYXQuilt", "window", "got 3"});
  expect_error<V>([] { qlty::Geometry<3>({8, 8, 8}, 4, {2, 2}, 0, 0.1); }, {"NCZYXQuilt", "step", "got 2"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, {4, 9}, 2, 0, 0.1); }, {"window", "X", "8", "got 9"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 0, 2, 0, 0.1); }, {"window", ">= 1", "got 0"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 0, 0, 0.1); }, {"step", ">= 1", "got 0"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, {1, -2}, 0, 0.1); }, {"step", "X", "got -2"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 2, 2, 0.1); }, {"border", "interior", "got 2"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 2, -1, 0.1); }, {"border", ">= 0", "got -1"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 2, 1, 1.5); }, {"border_weight", "[0, 1]", "got 1.5"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 2, 1, -0.1); }, {"border_weight", "got -0.1"});
  expect_error<V>([] { qlty::Geometry<2>({8, 8}, 4, 2, 1, std::nan("")); }, {"border_weight", "nan"});
  expect_error<V>([] { qlty::Geometry<3>({0, 8, 8}, 4, 2, 1, 0.1); }, {"image size", "Z", "got 0"});
}
