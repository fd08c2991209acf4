// Patch tokens beside the Python original (qlty 1.5, pretokenizer_2d) on random inputs: tokenize_patch, and
// build_sequence_pair single and batched, for every turn and several shifts (whole and fractional).
//
// One difference on purpose: the original turns a token's corners into patch 2 by the inverse of the turn
// extract_patch_pairs applies (its k = 1 reads patch 2 as turned by rot90(-1)), so for odd turns its overlaps are
// those of the opposite turn: ours for k equal its for 4 - k. Tokens.AFullPartnerHoldsTheSamePixelsTurned... in
// tests/core/test_tokens.cpp shows ours pair the same pixels, as extract_overlapping_pixels does.
#include "peer.hpp"

#include <qlty/tokens.hpp>

namespace {

/// The turn the original needs to describe our turn k.
int64_t originals_turn(int64_t k) { return (4 - k % 4) % 4; }

void expect_equal_pair(const qlty::SequencePair& ours, const qlty_peer::Original& original, const std::string& name,
                       bool batched) {
  SCOPED_TRACE(name);
  EXPECT_TRUE(torch::equal(ours.tokens1, original.output(name, "tokens1")));
  EXPECT_TRUE(torch::equal(ours.tokens2, original.output(name, "tokens2")));
  EXPECT_TRUE(torch::equal(ours.coords1, original.output(name, "coords1")));
  EXPECT_TRUE(torch::equal(ours.coords2, original.output(name, "coords2")));
  EXPECT_TRUE(torch::equal(ours.overlap_mask1.to(torch::kByte), original.output(name, "overlap_mask1")));
  EXPECT_TRUE(torch::equal(ours.overlap_mask2.to(torch::kByte), original.output(name, "overlap_mask2")));
  EXPECT_TRUE(torch::equal(ours.overlap_indices1_to_2, original.output(name, "overlap_indices1_to_2")));
  EXPECT_TRUE(torch::equal(ours.overlap_indices2_to_1, original.output(name, "overlap_indices2_to_1")));
  EXPECT_TRUE(torch::allclose(ours.overlap_fractions, original.output(name, "overlap_fractions"), 0, 1e-6));
  EXPECT_TRUE(torch::equal(ours.overlap_pairs, original.output(name, "overlap_pairs")));
  if (batched) {
    EXPECT_TRUE(torch::equal(ours.sequence_lengths, original.output(name, "sequence_lengths")));
    EXPECT_TRUE(torch::equal(ours.overlap_pair_counts, original.output(name, "overlap_pair_counts")));
  }
}

TEST(PeerTokens, TokensAndSequencePairsEqualTheOriginals) {
  torch::manual_seed(25);
  qlty_peer::Original original;
  struct Tok {
    std::string name;
    torch::Tensor patch;
    int64_t p, s;
  };
  std::vector<Tok> toks = {{"t0", torch::randn({3, 16, 16}), 4, 2},
                           {"t1", torch::randn({1, 11, 13}), 4, 3},
                           {"t2", torch::randn({2, 20, 9}), 5, 5},
                           {"t3", torch::randn({1, 8, 8}), 8, 4}};
  for (const auto& t : toks)
    original.add("tokenize_patch", t.name, {{"patch_size", t.p}, {"stride", t.s}}, {{"patch", t.patch}});
  struct Single {
    std::string name;
    torch::Tensor p1, p2;
    double dx, dy;
    int64_t k, p, s;
  };
  std::vector<Single> singles;
  const std::vector<std::pair<double, double>> shifts = {{0, 0}, {3, -5}, {-6, 4}, {2.5, -1.25}, {20, 0}};
  for (int64_t k = 0; k < 4; ++k)
    for (size_t i = 0; i < shifts.size(); ++i)
      singles.push_back({c10::str("s", k, "_", i), torch::randn({2, 16, 16}), torch::randn({2, 16, 16}),
                         shifts[i].first, shifts[i].second, k, i % 2 ? 4 : 5, i % 2 ? 2 : 3});
  singles.push_back({"rect", torch::randn({1, 12, 20}), torch::randn({1, 12, 20}), 3, 2, 2, 4, 2});
  for (const auto& c : singles)
    original.add("build_sequence_pair", c.name,
                 {{"dx", c.dx}, {"dy", c.dy}, {"rot_k90", originals_turn(c.k)}, {"patch_size", c.p}, {"stride", c.s}},
                 {{"patch1", c.p1}, {"patch2", c.p2}});
  // Batches: 4 pairs (the original's plain loop) and 12 (its numba kernel), whole shifts and turns at random.
  std::vector<int64_t> batch_sizes = {4, 12};
  std::map<int64_t, std::array<torch::Tensor, 5>> batches;
  for (auto N : batch_sizes) {
    auto p1 = torch::randn({N, 1, 16, 16}), p2 = torch::randn({N, 1, 16, 16});
    auto dx = torch::randint(-12, 13, {N}).to(torch::kFloat), dy = torch::randint(-12, 13, {N}).to(torch::kFloat);
    auto k = torch::randint(0, 4, {N}, torch::kLong);
    batches[N] = {p1, p2, dx, dy, k};
    original.add("build_sequence_pair", c10::str("b", N), {{"patch_size", 4}, {"stride", 2}},
                 {{"patch1", p1}, {"patch2", p2}, {"dx", dx}, {"dy", dy}, {"rot_k90", (4 - k) % 4}});
  }
  ASSERT_TRUE(original.run()) << original.log();

  for (const auto& t : toks) {
    SCOPED_TRACE(t.name);
    const auto ours = qlty::tokenize_patch(t.patch, t.p, t.s);
    EXPECT_TRUE(torch::equal(ours.tokens, original.output(t.name, "tokens")));
    EXPECT_TRUE(torch::equal(ours.origins, original.output(t.name, "origins")));
  }
  for (const auto& c : singles)
    expect_equal_pair(qlty::build_sequence_pair(c.p1, c.p2, c.dx, c.dy, c.k, c.p, c.s), original, c.name, false);
  for (auto N : batch_sizes) {
    const auto& [p1, p2, dx, dy, k] = batches[N];
    expect_equal_pair(qlty::build_sequence_pair(p1, p2, dx, dy, k, 4, 2), original, c10::str("b", N), true);
  }
}

}  // namespace
