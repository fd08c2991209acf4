// qlty/weed.hpp: dropping patches whose labels are all missing inside the border.
#include "../common.hpp"

using namespace qlty_test;

TEST(Weed, KeepsPatchesWithAValidInnerPixel) {
  auto border = torch::zeros({4, 4});
  border.index_put_({Slice(1, 3), Slice(1, 3)}, 1.0);
  auto out = torch::full({4, 4, 4}, -1.0);
  out[1][0][0] = 2.0;  // valid label only on the border: dropped
  out[2][1][2] = 0.0;  // valid inner label: kept
  out[3][2][2] = 5.0;  // kept
  auto in = torch::arange(4, torch::kFloat32).view({4, 1, 1, 1}).expand({4, 3, 4, 4}).contiguous();
  auto [kin, kout, removed] = qlty::weed_sparse_classification_training_pairs_2D(in, out, -1, border);
  EXPECT_TRUE(torch::equal(removed, torch::tensor({true, true, false, false})));
  ASSERT_EQ(kin.size(0), 2);
  EXPECT_EQ(kin[0][0][0][0].item<float>(), 2.0f);
  EXPECT_EQ(kin[1][0][0][0].item<float>(), 3.0f);
  EXPECT_TRUE(torch::equal(kout, out.index({Slice(2, 4)})));
}

TEST(Weed, ChannelsCountAndThreeDimensions) {
  auto border = torch::ones({2, 3, 3});
  border[0].zero_();
  auto out = torch::full({3, 2, 2, 3, 3}, 9, torch::kInt64);  // (M, C, Z, Y, X)
  out[0][1][1][1][1] = 1;                                     // a valid pixel in channel 1 only: kept
  out[2][0][0][1][1] = 4;                                     // z = 0 is border: dropped
  auto in = torch::randn({3, 1, 2, 3, 3});
  auto [kin, kout, removed] = qlty::weed_sparse_classification_training_pairs_3D(in, out, 9, border);
  EXPECT_TRUE(torch::equal(removed, torch::tensor({false, true, true})));
  EXPECT_TRUE(torch::equal(kin, in.index({Slice(0, 1)})));
  EXPECT_TRUE(torch::equal(kout, out.index({Slice(0, 1)})));
}

TEST(Weed, SeedSparseLabelExample) {
  qlty::NCYXQuilt quilt(128, 128, 32, 16, 5, 0.1);
  auto input = torch::randn({10, 3, 128, 128});
  auto labels = torch::full({10, 128, 128}, -1.0);
  labels.index_put_({Slice(), Slice(20, 108), Slice(20, 108)}, 1.0);
  auto [ip, lp] = quilt.unstitch_data_pair(input, labels, -1);
  auto [vi, vl, removed] = qlty::weed_sparse_classification_training_pairs_2D(ip, lp, -1, quilt.border_tensor());
  // Per axis, a window starting at s keeps an inner pixel in [20, 108) iff [s + 5, s + 27) meets it:
  // starts 0..96 step 16 -> all 7 do, so every patch has valid labels.
  EXPECT_EQ(ip.size(0), 490);
  EXPECT_EQ(vi.size(0), 490 - removed.sum().item<int64_t>());
  EXPECT_EQ(removed.sum().item<int64_t>(), 0);
  labels.index_put_({Slice(), Slice(0, 64)}, -1.0);  // now the top rows hold nothing
  auto [ip2, lp2] = quilt.unstitch_data_pair(input, labels, -1);
  auto [vi2, vl2, removed2] = qlty::weed_sparse_classification_training_pairs_2D(ip2, lp2, -1, quilt.border_tensor());
  // Windows starting at y = 0, 16, 32 have inner rows < 59 < 64: 3 of 7 rows of windows removed.
  EXPECT_EQ(removed2.sum().item<int64_t>(), 10 * 3 * 7);
  EXPECT_EQ(vi2.size(0), 10 * 4 * 7);
  EXPECT_TRUE(((vl2 != -1).logical_and(quilt.border_tensor().to(torch::kBool))).flatten(1).any(1).all().item<bool>());
}

// A border per patch ((M, Y, X)) or per channel broadcasts against the labels, as NumPy broadcasts (the original).
TEST(Weed, BorderBroadcastsAgainstLabels) {
  auto out = torch::full({3, 4, 4}, -1.0);
  out[0][0][0] = 5;  // patch 0: a label at a corner
  out[1][2][2] = 5;  // patch 1: a label inside
  auto in = torch::arange(3).view({3, 1}).to(torch::kFloat);
  auto border = torch::zeros({3, 4, 4});
  border[0][0][0] = 1;                      // patch 0's mask holds its corner: kept
  border[1].fill_(1), border[1][2][2] = 0;  // patch 1's mask leaves out its label: dropped
  border[2].fill_(1);                       // patch 2 has no label: dropped
  auto [kin, kout, removed] = qlty::weed_sparse_classification_training_pairs_2D(in, out, -1, border);
  EXPECT_TRUE(torch::equal(removed, torch::tensor({false, true, true})));
  EXPECT_TRUE(torch::equal(kin, in.slice(0, 0, 1)));
  // with channels: the same masks against (M, 1, Y, X) labels, and one mask per channel (C, Y, X)
  auto [kin2, kout2, removed2] =
      qlty::weed_sparse_classification_training_pairs_2D(in, out.unsqueeze(1), -1, border.unsqueeze(1));
  EXPECT_TRUE(torch::equal(removed2, removed));
  auto [kin3, kout3, removed3] = qlty::weed_sparse_classification_training_pairs_2D(
      in, out.unsqueeze(1).expand({3, 2, 4, 4}), -1, border.slice(0, 1, 3));
  // channel 0 takes mask 1 (all but the centre pixel), channel 1 mask 2 (all): patch 1's centre is in channel 1's
  EXPECT_TRUE(torch::equal(removed3, torch::tensor({false, false, true})));
  expect_error<c10::ValueError>(
      [&] { qlty::weed_sparse_classification_training_pairs_2D(in, out, -1, border.slice(0, 0, 2)); },
      {"does not broadcast", "[2, 4, 4]"});
}

TEST(Weed, BadInputs) {
  using V = c10::ValueError;
  auto border = torch::ones({4, 4});
  expect_error<V>(
      [&] {
        qlty::weed_sparse_classification_training_pairs_2D(torch::zeros({3, 1, 4, 4}), torch::zeros({2, 4, 4}), -1,
                                                           border);
      },
      {"weed_sparse_classification_training_pairs_2D", "same number", "[3, 1, 4, 4]"});
  expect_error<V>(
      [&] {
        qlty::weed_sparse_classification_training_pairs_2D(torch::zeros({2, 1, 4, 4}), torch::zeros({2, 4, 5}), -1,
                                                           border);
      },
      {"out's last axes", "[4, 4]"});
  expect_error<V>(
      [&] {
        qlty::weed_sparse_classification_training_pairs_3D(torch::zeros({2, 1, 4, 4}), torch::zeros({2, 4, 4}), -1,
                                                           border);
      },
      {"_3D", "border_tensor", "3-D"});
}
