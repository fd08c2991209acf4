// Patch tokens: tokenize_patch against plain slicing, build_sequence_pair against a brute-force search over every
// token pair (written from the file comment of tokens.hpp, sharing no code with it), against pixels (a token and
// its full partner hold the same pixels, turned), batches against single pairs, the torch-op path against the CPU
// kernel, autograd, and the errors.
#include "../common.hpp"

#include <qlty/tokens.hpp>

namespace {

using torch::indexing::Slice;

/// The brute-force partners of one pair: for each token of patch 1, the token of patch 2 its carried square meets
/// most (the first on ties), and the fraction; -1 and 0 for none.
std::pair<std::vector<int64_t>, std::vector<double>> brute_partners(const torch::Tensor& origins, double dx, double dy,
                                                                    int64_t k, int64_t p, int64_t H, int64_t W) {
  const int64_t T = origins.size(0);
  std::vector<int64_t> partner(T, -1);
  std::vector<double> fraction(T, 0.0);
  for (int64_t i = 0; i < T; ++i) {
    // The square's four corners, carried one by one into stored patch 2 (rot90(k) maps unturned (y, x) to
    // (W - x, y), (H - y, W - x), (x, H - y) for k = 1, 2, 3).
    double ylo = 1e300, yhi = -1e300, xlo = 1e300, xhi = -1e300;
    for (int cy = 0; cy < 2; ++cy)
      for (int cx = 0; cx < 2; ++cx) {
        const double uy = origins[i][0].item<double>() + cy * p - dy, ux = origins[i][1].item<double>() + cx * p - dx;
        double sy = uy, sx = ux;
        if (k == 1) sy = W - ux, sx = uy;
        if (k == 2) sy = H - uy, sx = W - ux;
        if (k == 3) sy = ux, sx = H - uy;
        ylo = std::min(ylo, sy), yhi = std::max(yhi, sy), xlo = std::min(xlo, sx), xhi = std::max(xhi, sx);
      }
    double best = 0;
    for (int64_t j = 0; j < T; ++j) {
      const double y2 = origins[j][0].item<double>(), x2 = origins[j][1].item<double>();
      const double ly = std::min(yhi, y2 + p) - std::max(ylo, y2), lx = std::min(xhi, x2 + p) - std::max(xlo, x2);
      if (ly > 0 && lx > 0 && ly * lx / (p * p) > best) best = ly * lx / (p * p), partner[i] = j;
    }
    fraction[i] = best;
  }
  return {partner, fraction};
}

TEST(Tokens, TokensAreTheQuiltWindowsFlattenedWithTheirOrigins) {
  auto patch = torch::randn({3, 11, 13});
  const auto t = qlty::tokenize_patch(patch, 4, 3);  // last starts 7 and 9: H - p and W - p
  const auto ys = qlty_test::starts(11, 4, 3), xs = qlty_test::starts(13, 4, 3);
  ASSERT_EQ(t.tokens.sizes(), (std::vector<int64_t>{int64_t(ys.size() * xs.size()), 3 * 16}));
  ASSERT_EQ(t.origins.scalar_type(), torch::kLong);
  int64_t m = 0;
  for (auto y : ys)
    for (auto x : xs) {
      EXPECT_EQ(t.origins[m][0].item<int64_t>(), y);
      EXPECT_EQ(t.origins[m][1].item<int64_t>(), x);
      EXPECT_TRUE(torch::equal(t.tokens[m++], patch.index({Slice(), Slice(y, y + 4), Slice(x, x + 4)}).flatten()));
    }
  EXPECT_EQ(ys.back(), 7);
  EXPECT_EQ(xs.back(), 9);
  // the default stride is half the token, at least 1
  EXPECT_TRUE(torch::equal(qlty::tokenize_patch(patch, 4).origins, qlty::tokenize_patch(patch, 4, 2).origins));
  EXPECT_EQ(qlty::tokenize_patch(patch, 1).tokens.size(0), 11 * 13);
  // a batch is each patch's tokens, stacked; integer patches too
  auto batch = torch::randint(0, 255, {2, 3, 11, 13}).to(torch::kByte);
  const auto tb = qlty::tokenize_patch(batch, 4, 3);
  ASSERT_EQ(tb.tokens.dim(), 3);
  for (int64_t n = 0; n < 2; ++n) EXPECT_TRUE(torch::equal(tb.tokens[n], qlty::tokenize_patch(batch[n], 4, 3).tokens));
  EXPECT_TRUE(torch::equal(tb.origins, t.origins));
}

TEST(Tokens, GradientsFlowFromTokensIntoThePatch) {
  auto patch = torch::randn({2, 9, 9}, torch::dtype(torch::kDouble).requires_grad(true));
  auto weights = torch::randn({16, 2 * 9});
  const auto t = qlty::tokenize_patch(patch, 3, 2);  // starts 0, 2, 4, 6: 16 tokens
  (t.tokens * weights).sum().backward();
  // the same loss by slicing
  auto ref = patch.detach().clone().requires_grad_(true);
  torch::Tensor loss = torch::zeros({}, torch::kDouble);
  for (int64_t m = 0; m < 16; ++m) {
    const int64_t y = (m / 4) * 2, x = (m % 4) * 2;
    loss = loss + (ref.index({Slice(), Slice(y, y + 3), Slice(x, x + 3)}).flatten() * weights[m]).sum();
  }
  loss.backward();
  EXPECT_TRUE(torch::allclose(patch.grad(), ref.grad()));
}

TEST(Tokens, OverlapsEqualABruteForceSearchForEveryTurnAndFractionalShifts) {
  for (int64_t k = 0; k < 4; ++k)
    for (auto [dx, dy] : std::vector<std::pair<double, double>>{
             {0, 0}, {3, -5}, {-2.5, 1.25}, {7.75, 6.5}, {-16, 0}, {17.5, -3}, {0.5, 0.5}}) {
      auto p1 = torch::randn({2, 16, 16}), p2 = torch::randn({2, 16, 16});
      const auto s = qlty::build_sequence_pair(p1, p2, dx, dy, k, 5, 3);  // starts 0, 3, 6, 9, 11
      const auto [partner, fraction] = brute_partners(s.coords1, dx, dy, k, 5, 16, 16);
      const int64_t T = s.coords1.size(0);
      ASSERT_EQ(T, 25);
      std::vector<int64_t> back(T, -1);
      std::vector<std::array<int64_t, 2>> pairs;
      for (int64_t i = 0; i < T; ++i) {
        SCOPED_TRACE(c10::str("k ", k, " dx ", dx, " dy ", dy, " token ", i));
        EXPECT_EQ(s.overlap_indices1_to_2[i].item<int64_t>(), partner[i]);
        EXPECT_NEAR(s.overlap_fractions[i].item<float>(), fraction[i], 1e-6);
        EXPECT_EQ(s.overlap_mask1[i].item<bool>(), partner[i] >= 0);
        if (partner[i] >= 0) {
          pairs.push_back({i, partner[i]});
          if (back[partner[i]] < 0) back[partner[i]] = i;
        }
      }
      for (int64_t j = 0; j < T; ++j) {
        EXPECT_EQ(s.overlap_indices2_to_1[j].item<int64_t>(), back[j]);
        EXPECT_EQ(s.overlap_mask2[j].item<bool>(), back[j] >= 0);
      }
      ASSERT_EQ(s.overlap_pairs.size(0), int64_t(pairs.size()));
      for (size_t r = 0; r < pairs.size(); ++r) {
        EXPECT_EQ(s.overlap_pairs[r][0].item<int64_t>(), pairs[r][0]);
        EXPECT_EQ(s.overlap_pairs[r][1].item<int64_t>(), pairs[r][1]);
      }
      EXPECT_FALSE(s.sequence_lengths.defined());
    }
}

TEST(Tokens, AFullPartnerHoldsTheSamePixelsTurnedAsExtractPatchPairsTurnsThem) {
  // Patch 2 is cut from the same image at (dy, dx) from patch 1 and turned by rot90(k): pixel (y, x) of patch 1 is
  // pixel (y - dy, x - dx) of patch 2 before the turn, as extract_overlapping_pixels reads pairs.
  auto image = torch::randn({2, 64, 64});
  const int64_t H = 16, p = 4, y0 = 20, x0 = 24;
  for (int64_t k = 0; k < 4; ++k)
    for (auto [dx, dy] : std::vector<std::pair<int64_t, int64_t>>{{4, 0}, {-8, 6}, {2, -10}}) {
      auto p1 = image.index({Slice(), Slice(y0, y0 + H), Slice(x0, x0 + H)});
      auto p2 =
          torch::rot90(image.index({Slice(), Slice(y0 + dy, y0 + dy + H), Slice(x0 + dx, x0 + dx + H)}), k, {-2, -1});
      const auto s = qlty::build_sequence_pair(p1, p2, double(dx), double(dy), k, p, 2);
      // extract_overlapping_pixels agrees that these pixels are shared
      auto [o1, o2] = qlty::extract_overlapping_pixels(p1.unsqueeze(0), p2.unsqueeze(0),
                                                       torch::tensor({{float(dx), float(dy)}}), torch::tensor({k}));
      ASSERT_TRUE(torch::equal(o1, o2));
      int64_t full = 0;
      for (int64_t i = 0; i < s.coords1.size(0); ++i) {
        if (s.overlap_fractions[i].item<float>() != 1.0f) continue;
        const int64_t j = s.overlap_indices1_to_2[i].item<int64_t>();
        auto t1 = s.tokens1[i].view({2, p, p}), t2 = s.tokens2[j].view({2, p, p});
        EXPECT_TRUE(torch::equal(torch::rot90(t1, k, {-2, -1}), t2)) << "k " << k << " token " << i;
        ++full;
      }
      EXPECT_GT(full, 0) << "k " << k << " dx " << dx << " dy " << dy;
    }
}

TEST(Tokens, ABatchIsItsPairsOneByOneWithPaddedPairLists) {
  const int64_t N = 5;
  auto p1 = torch::randn({N, 1, 12, 12}, torch::dtype(torch::kDouble).requires_grad(true));
  auto p2 = torch::randn({N, 1, 12, 12});
  auto dx = torch::tensor({0.0, 11.0, -3.5, 40.0, 2.0}), dy = torch::tensor({0.0, -2.0, 1.0, 0.0, 9.0});
  auto k = torch::tensor({0, 1, 2, 3, 1});
  const auto b = qlty::build_sequence_pair(p1, p2, dx, dy, k, 4);
  ASSERT_EQ(b.tokens1.sizes(), (std::vector<int64_t>{N, 25, 16}));
  ASSERT_EQ(b.coords1.sizes(), (std::vector<int64_t>{N, 25, 2}));
  EXPECT_TRUE(torch::equal(b.sequence_lengths, torch::full({N}, 25, torch::kLong)));
  for (int64_t n = 0; n < N; ++n) {
    const auto s = qlty::build_sequence_pair(p1[n], p2[n], dx[n], dy[n], k[n], 4);
    EXPECT_TRUE(torch::equal(b.tokens1[n], s.tokens1));
    EXPECT_TRUE(torch::equal(b.tokens2[n], s.tokens2));
    EXPECT_TRUE(torch::equal(b.coords2[n], s.coords2));
    EXPECT_TRUE(torch::equal(b.overlap_mask1[n], s.overlap_mask1));
    EXPECT_TRUE(torch::equal(b.overlap_mask2[n], s.overlap_mask2));
    EXPECT_TRUE(torch::equal(b.overlap_indices1_to_2[n], s.overlap_indices1_to_2));
    EXPECT_TRUE(torch::equal(b.overlap_indices2_to_1[n], s.overlap_indices2_to_1));
    EXPECT_TRUE(torch::equal(b.overlap_fractions[n], s.overlap_fractions));
    const int64_t K = s.overlap_pairs.size(0);
    EXPECT_EQ(b.overlap_pair_counts[n].item<int64_t>(), K);
    EXPECT_TRUE(torch::equal(b.overlap_pairs[n].narrow(0, 0, K), s.overlap_pairs));
    EXPECT_TRUE(b.overlap_pairs[n].narrow(0, K, b.overlap_pairs.size(1) - K).eq(-1).all().item<bool>());
  }
  EXPECT_EQ(b.overlap_pair_counts[3].item<int64_t>(), 0);  // 40 pixels apart: nothing shared
  EXPECT_EQ(b.overlap_pairs.size(1), b.overlap_pair_counts.max().item<int64_t>());
  // coordinates are each pair's own
  b.coords1[0][0][0] = 99;
  EXPECT_EQ(b.coords1[1][0][0].item<int64_t>(), 0);
  EXPECT_EQ(b.coords2[0][0][0].item<int64_t>(), 0);
  // gradients reach the patches through the tokens
  b.tokens1.sum().backward();
  EXPECT_GT(p1.grad().abs().sum().item<double>(), 0);
}

TEST(Tokens, TheTorchOpPathEqualsTheCpuKernel) {
  // The path other devices take, run here on the CPU, on many random pairs (several chunks of its table).
  const qlty::NCYXQuilt quilt(32, 32, 6, 2);
  const auto starts = qlty::detail::token_starts(quilt);
  const int64_t N = 3000;
  auto dx = (torch::rand({N}, torch::kDouble) - 0.5) * 70, dy = (torch::rand({N}, torch::kDouble) - 0.5) * 70;
  dx.narrow(0, 0, N / 2).round_();
  dy.narrow(0, 0, N / 2).round_();
  auto k = torch::randint(-4, 8, {N}, torch::kLong);
  const auto cpu = qlty::detail::token_partners_cpu(starts, dx, dy, k, 6, 32, 32);
  const auto ops = qlty::detail::token_partners_torch(starts, dx, dy, k, 6, 32, 32);
  EXPECT_TRUE(torch::equal(cpu[0], ops[0]));
  EXPECT_TRUE(torch::allclose(cpu[1], ops[1]));
  EXPECT_GT(cpu[0].ge(0).sum().item<int64_t>(), N);  // most pairs overlap somewhere
}

TEST(Tokens, BadArgumentsAreRefusedNamingThem) {
  auto p = torch::randn({2, 8, 8});
  const auto field = [](auto&& f) { return qlty_test::argument_field(f); };
  EXPECT_EQ(field([&] { qlty::tokenize_patch(p[0], 4); }), "patch");
  EXPECT_EQ(field([&] { qlty::tokenize_patch(p, 0); }), "patch_size");
  EXPECT_EQ(field([&] { qlty::tokenize_patch(p, 9); }), "patch_size");
  EXPECT_EQ(field([&] { qlty::tokenize_patch(p, 4, 5); }), "stride");
  EXPECT_EQ(field([&] { qlty::tokenize_patch(p, 4, 0); }), "stride");
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(p, p.narrow(1, 0, 7), 0.0, 0.0, 0, 4); }), "patch2");
  auto r = torch::randn({2, 8, 10});
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(r, r, 0.0, 0.0, 1, 4); }), "rot_k90");
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(r, r, 0.0, 0.0, 2, 4); }), "(no error)");
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(p, p, torch::zeros({2}), torch::zeros({}), torch::zeros({}), 4); }),
            "dx");
  auto b = torch::randn({3, 2, 8, 8});
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(b, b, torch::zeros({2}), torch::zeros({3}), torch::zeros({3}), 4); }),
            "dx");
  EXPECT_EQ(
      field([&] { qlty::build_sequence_pair(b, b, torch::zeros({3}), torch::zeros({3}), torch::full({3}, 0.5), 4); }),
      "rot_k90");
  EXPECT_EQ(field([&] { qlty::build_sequence_pair(p, p, std::nan(""), 0.0, 0, 4); }), "dx");
  try {
    qlty::tokenize_patch(p, 9);
  } catch (const qlty::ArgumentError& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("patch_size (9) must fit the patch (H, W) = (8, 8)"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

}  // namespace
