// qlty/patch_pairs.hpp: sampling distributions, values against plain slicing, overlaps, gradients, errors.
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "../common.hpp"

using namespace qlty_test;

namespace {

// Where each pair came from, decoded from an input whose values are their own flat index.
struct Pair {
  int64_t n, z, y, x;  // origin of patch 1 (z = 0 in 2D)
  int64_t dx, dy, dz;
  int64_t k;  // quarter turns of patch 2
};

template <int D>
std::vector<Pair> decode(const torch::Tensor& x_index, const torch::Tensor& p1, const torch::Tensor& deltas,
                         const torch::Tensor& rotations) {
  const int64_t Z = D == 3 ? x_index.size(2) : 1, Y = x_index.size(-2), X = x_index.size(-1), C = x_index.size(1);
  std::vector<Pair> out;
  auto first = p1.flatten(1).select(1, 0).to(torch::kFloat64);
  for (int64_t i = 0; i < p1.size(0); ++i) {
    auto v = static_cast<int64_t>(first[i].item<double>());
    Pair q{};
    q.x = v % X;
    q.y = (v / X) % Y;
    q.z = (v / (X * Y)) % Z;
    q.n = v / (X * Y * Z * C);
    q.dx = static_cast<int64_t>(deltas[i][0].item<float>());
    q.dy = static_cast<int64_t>(deltas[i][1].item<float>());
    q.dz = D == 3 ? static_cast<int64_t>(deltas[i][2].item<float>()) : 0;
    q.k = rotations.defined() ? rotations[i].item<int64_t>() : 0;
    out.push_back(q);
  }
  return out;
}

// The patches of a pair by plain slicing (patch 2 turned by rot90(k)).
std::pair<torch::Tensor, torch::Tensor> slice_pair(const torch::Tensor& x, const Pair& q,
                                                   const std::vector<int64_t>& window) {
  if (window.size() == 2) {
    auto a = x[q.n].index({Slice(), Slice(q.y, q.y + window[0]), Slice(q.x, q.x + window[1])});
    auto b =
        x[q.n].index({Slice(), Slice(q.y + q.dy, q.y + q.dy + window[0]), Slice(q.x + q.dx, q.x + q.dx + window[1])});
    return {a, torch::rot90(b, q.k, {-2, -1})};
  }
  auto a =
      x[q.n].index({Slice(), Slice(q.z, q.z + window[0]), Slice(q.y, q.y + window[1]), Slice(q.x, q.x + window[2])});
  auto b = x[q.n].index({Slice(), Slice(q.z + q.dz, q.z + q.dz + window[0]), Slice(q.y + q.dy, q.y + q.dy + window[1]),
                         Slice(q.x + q.dx, q.x + q.dx + window[2])});
  return {a, b};
}

// The overlapping pixels by plain slicing, pair by pair.
std::pair<torch::Tensor, torch::Tensor> slice_overlap(const torch::Tensor& p1, const torch::Tensor& p2,
                                                      const std::vector<Pair>& pairs) {
  std::vector<torch::Tensor> o1, o2;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& q = pairs[i];
    auto a = p1[i];
    auto b = torch::rot90(p2[i], -q.k, {-2, -1});
    std::vector<torch::indexing::TensorIndex> ia{Slice()}, ib{Slice()};
    const int64_t D = p1.dim() - 2;
    const int64_t d[3] = {q.dz, q.dy, q.dx};
    for (int64_t ax = 0; ax < D; ++ax) {
      const int64_t W = p1.size(2 + ax), da = d[3 - D + ax];
      ia.emplace_back(Slice(std::max<int64_t>(0, da), std::min(W, W + da)));
      ib.emplace_back(Slice(std::max<int64_t>(0, -da), std::min(W, W - da)));
    }
    auto ra = a.index(ia), rb = b.index(ib);
    o1.push_back(ra.reshape({ra.size(0), -1}).t());
    o2.push_back(rb.reshape({rb.size(0), -1}).t());
  }
  return {torch::cat(o1), torch::cat(o2)};
}

torch::Tensor index_image(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return torch::arange(n, torch::kFloat64).view(shape);
}

}  // namespace

TEST(PatchPairs, PatchesAreTheImageAtTheirOrigins2D) {
  auto x = index_image({3, 2, 40, 36});
  std::vector<int64_t> choices{0, 1, 2, 3};
  auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {12, 12}, 20, {3.0, 9.0}, 7, choices);
  EXPECT_EQ(p1.sizes(), (std::vector<int64_t>{60, 2, 12, 12}));
  EXPECT_EQ(deltas.sizes(), (std::vector<int64_t>{60, 2}));
  EXPECT_EQ(deltas.scalar_type(), torch::kFloat32);
  EXPECT_EQ(rot.scalar_type(), torch::kInt64);
  auto pairs = decode<2>(x, p1, deltas, rot);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& q = pairs[i];
    EXPECT_EQ(q.n, static_cast<int64_t>(i) / 20);
    const double len = std::hypot(q.dx, q.dy);
    EXPECT_TRUE(len >= 3.0 && len <= 9.0) << len;
    auto [a, b] = slice_pair(x, q, {12, 12});
    ASSERT_TRUE(torch::equal(p1[i], a)) << i;
    ASSERT_TRUE(torch::equal(p2[i], b)) << i << " k " << q.k;
  }
}

// The positions are where the pairs were cut (decoded from an image of indices), for the same pairs as without them.
TEST(PatchPairs, PositionsAreWhereThePairsWereCut) {
  auto x = index_image({3, 2, 40, 36});
  std::vector<int64_t> choices{0, 1, 2, 3};
  auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {12, 12}, 20, {3.0, 9.0}, 11, choices);
  auto [q1, q2, qd, qr, pos1, pos2] =
      qlty::extract_patch_pairs_with_positions(x, {12, 12}, 20, {3.0, 9.0}, 11, choices);
  ASSERT_TRUE(torch::equal(p1, q1) && torch::equal(p2, q2) && torch::equal(deltas, qd) && torch::equal(rot, qr));
  ASSERT_EQ(pos1.sizes(), (std::vector<int64_t>{60, 3}));
  EXPECT_EQ(pos1.scalar_type(), torch::kInt64);
  const auto pairs = decode<2>(x, p1, deltas, rot);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& q = pairs[i];
    const auto m = static_cast<int64_t>(i);
    EXPECT_EQ(pos1[m][0].item<int64_t>(), q.n);
    EXPECT_EQ(pos1[m][1].item<int64_t>(), q.y);
    EXPECT_EQ(pos1[m][2].item<int64_t>(), q.x);
    EXPECT_EQ(pos2[m][0].item<int64_t>(), q.n);
    EXPECT_EQ(pos2[m][1].item<int64_t>(), q.y + q.dy);
    EXPECT_EQ(pos2[m][2].item<int64_t>(), q.x + q.dx);
  }
}

TEST(PatchPairs, PatchesAreTheImageAtTheirOrigins3D) {
  auto x = index_image({2, 1, 20, 22, 24});
  auto [p1, p2, deltas] = qlty::extract_patch_pairs_3d(x, {8, 9, 10}, 15, {2.5, 5.0}, 3);
  EXPECT_EQ(p1.sizes(), (std::vector<int64_t>{30, 1, 8, 9, 10}));
  EXPECT_EQ(deltas.sizes(), (std::vector<int64_t>{30, 3}));
  auto pairs = decode<3>(x, p1, deltas, torch::Tensor());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& q = pairs[i];
    const double len = std::sqrt(double(q.dx * q.dx + q.dy * q.dy + q.dz * q.dz));
    EXPECT_TRUE(len >= 2.5 && len <= 5.0) << len;
    auto [a, b] = slice_pair(x, q, {8, 9, 10});
    ASSERT_TRUE(torch::equal(p1[i], a)) << i;
    ASSERT_TRUE(torch::equal(p2[i], b)) << i;
  }
}

// Displacements uniform over the annulus, origins uniform over where both patches fit, turns uniform.
TEST(PatchPairs, SamplingDistributions) {
  const int64_t Y = 30, X = 27, U = 12, V = 12, P = 20000;
  auto x = index_image({1, 1, Y, X});
  std::vector<int64_t> choices{0, 1, 3};
  auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {U, V}, P, {3.0, 6.5}, 11, choices);
  auto pairs = decode<2>(x, p1, deltas, rot);

  std::set<std::pair<int64_t, int64_t>> allowed;
  for (int64_t dy = -6; dy <= 6; ++dy)
    for (int64_t dx = -6; dx <= 6; ++dx) {
      const double len = std::hypot(dx, dy);
      if (len >= 3.0 && len <= 6.5) allowed.insert({dx, dy});
    }
  std::map<std::pair<int64_t, int64_t>, int64_t> seen;
  std::map<int64_t, int64_t> turns;
  std::map<std::pair<int64_t, int64_t>, int64_t> y_given_count;  // (count of valid y, y - lowest) -> hits
  bool last_origin_seen = false;
  for (const auto& q : pairs) {
    ++seen[{q.dx, q.dy}];
    ++turns[q.k];
    const int64_t lo = std::max<int64_t>(0, -q.dy), hi = std::min(Y - U, Y - U - q.dy);
    ASSERT_GE(q.y, lo);
    ASSERT_LE(q.y, hi);
    const int64_t xlo = std::max<int64_t>(0, -q.dx), xhi = std::min(X - V, X - V - q.dx);
    ASSERT_GE(q.x, xlo);
    ASSERT_LE(q.x, xhi);
    ++y_given_count[{hi - lo + 1, q.y - lo}];
    last_origin_seen |= q.y == hi && q.dy > 0;
  }
  EXPECT_TRUE(last_origin_seen);
  // Every allowed displacement appears, none outside, counts consistent with uniform (chi-square, 6 sigma).
  EXPECT_EQ(seen.size(), allowed.size());
  double chi2 = 0;
  const double expected = double(P) / allowed.size();
  for (const auto& v : allowed) {
    ASSERT_TRUE(seen.count(v)) << v.first << "," << v.second;
    chi2 += std::pow(seen[v] - expected, 2) / expected;
  }
  const double df = allowed.size() - 1.0;
  EXPECT_LT(chi2, df + 6 * std::sqrt(2 * df)) << "displacements";
  // Turns uniform over the three choices.
  EXPECT_EQ(turns.size(), 3u);
  for (auto k : choices) EXPECT_NEAR(turns[k], P / 3.0, 6 * std::sqrt(P / 3.0)) << k;
  // Origins: for each number of valid positions, the offsets from the lowest are uniform.
  std::map<int64_t, std::vector<int64_t>> by_count;
  for (const auto& [key, hits] : y_given_count) {
    auto& h = by_count[key.first];
    h.resize(key.first);
    h[key.second] = hits;
  }
  for (const auto& [count, hits] : by_count) {
    int64_t total = 0;
    for (auto h : hits) total += h;
    if (total < 50 * count) continue;  // too few draws for this group
    double c2 = 0;
    for (auto h : hits) c2 += std::pow(h - double(total) / count, 2) / (double(total) / count);
    EXPECT_LT(c2, (count - 1) + 6 * std::sqrt(2.0 * (count - 1))) << "origins with " << count << " positions";
  }
}

TEST(PatchPairs, ShellDisplacementsIn3D) {
  auto x = index_image({1, 1, 16, 16, 16});
  auto [p1, p2, deltas] = qlty::extract_patch_pairs_3d(x, {8, 8, 8}, 5000, {2.0, 3.0}, 5);
  std::set<std::array<int64_t, 3>> seen;
  int64_t allowed = 0;
  for (int dz = -3; dz <= 3; ++dz)
    for (int dy = -3; dy <= 3; ++dy)
      for (int dx = -3; dx <= 3; ++dx) {
        const double len = std::sqrt(double(dx * dx + dy * dy + dz * dz));
        allowed += len >= 2.0 && len <= 3.0;
      }
  auto d = deltas.to(torch::kInt64);
  for (int64_t i = 0; i < d.size(0); ++i) {
    std::array<int64_t, 3> v{d[i][0].item<int64_t>(), d[i][1].item<int64_t>(), d[i][2].item<int64_t>()};
    const double len = std::sqrt(double(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]));
    ASSERT_TRUE(len >= 2.0 && len <= 3.0);
    seen.insert(v);
  }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), allowed);
}

TEST(PatchPairs, SeedsAndTheGlobalGenerator) {
  auto x = torch::randn({2, 1, 40, 40});
  auto a = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0}, 123);
  auto b = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0}, 123);
  auto c = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0}, 124);
  EXPECT_TRUE(torch::equal(std::get<0>(a), std::get<0>(b)));
  EXPECT_TRUE(torch::equal(std::get<2>(a), std::get<2>(b)));
  EXPECT_FALSE(torch::equal(std::get<2>(a), std::get<2>(c)));
  torch::manual_seed(9);
  auto g1 = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0});
  auto g2 = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0});
  torch::manual_seed(9);
  auto g3 = qlty::extract_patch_pairs(x, {16, 16}, 8, {4.0, 10.0});
  EXPECT_TRUE(torch::equal(std::get<2>(g1), std::get<2>(g3)));
  EXPECT_FALSE(torch::equal(std::get<2>(g1), std::get<2>(g2)));
  EXPECT_TRUE(torch::equal(std::get<3>(g1), torch::zeros({16}, torch::kInt64)));
}

TEST(OverlappingPixels, MatchSlicingAndEachOther2D) {
  auto x = torch::randn({3, 2, 48, 44});
  for (bool rotate : {false, true}) {
    std::optional<std::vector<int64_t>> choices;
    if (rotate) choices = std::vector<int64_t>{0, 1, 2, 3};
    auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {16, 16}, 10, {4.0, 12.0}, 77, choices);
    auto [o1, o2] = qlty::extract_overlapping_pixels(p1, p2, deltas, rot);
    EXPECT_TRUE(torch::equal(o1, o2)) << "rotate " << rotate;
    auto pairs = decode<2>(
        index_image({3, 2, 48, 44}),
        std::get<0>(qlty::extract_patch_pairs(index_image({3, 2, 48, 44}), {16, 16}, 10, {4.0, 12.0}, 77, choices)),
        deltas, rot);
    auto [r1, r2] = slice_overlap(p1, p2, pairs);
    EXPECT_TRUE(torch::equal(o1, r1));
    EXPECT_TRUE(torch::equal(o2, r2));
    int64_t K = 0;
    for (const auto& q : pairs) K += (16 - std::abs(q.dy)) * (16 - std::abs(q.dx));  // closed form
    EXPECT_EQ(o1.size(0), K);
    EXPECT_EQ(o1.size(1), 2);
  }
}

TEST(OverlappingPixels, NonSquareWindowAndHalfTurns) {
  auto x = torch::randn({2, 3, 50, 60});
  std::vector<int64_t> half_turns{0, 2};
  auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {12, 20}, 9, {5.0, 15.0}, 1, half_turns);
  auto [o1, o2] = qlty::extract_overlapping_pixels(p1, p2, deltas, rot);
  EXPECT_TRUE(torch::equal(o1, o2));
  EXPECT_GT(o1.size(0), 0);
}

TEST(OverlappingPixels, MatchSlicingAndEachOther3D) {
  auto x = torch::randn({2, 2, 20, 18, 22});
  auto [p1, p2, deltas] = qlty::extract_patch_pairs_3d(x, {8, 8, 10}, 12, {2.0, 6.0}, 4);
  auto [o1, o2] = qlty::extract_overlapping_pixels_3d(p1, p2, deltas);
  EXPECT_TRUE(torch::equal(o1, o2));
  auto xi = index_image({2, 2, 20, 18, 22});
  auto pairs = decode<3>(xi, std::get<0>(qlty::extract_patch_pairs_3d(xi, {8, 8, 10}, 12, {2.0, 6.0}, 4)), deltas,
                         torch::Tensor());
  auto [r1, r2] = slice_overlap(p1, p2, pairs);
  EXPECT_TRUE(torch::equal(o1, r1));
  EXPECT_TRUE(torch::equal(o2, r2));
  int64_t K = 0;
  for (const auto& q : pairs) K += (8 - std::abs(q.dz)) * (8 - std::abs(q.dy)) * (10 - std::abs(q.dx));
  EXPECT_EQ(o1.size(0), K);
}

TEST(PatchPairs, EveryFloatingDtypeKeepsItsValues) {
  auto x = torch::randn({2, 1, 40, 40});
  for (auto dt : {torch::kFloat32, torch::kFloat64, torch::kFloat16, torch::kBFloat16}) {
    auto [p1, p2, deltas, rot] =
        qlty::extract_patch_pairs(x.to(dt), {16, 16}, 6, {4.0, 12.0}, 2, std::vector<int64_t>{0, 1});
    auto [ref1, ref2, rd, rr] = qlty::extract_patch_pairs(x, {16, 16}, 6, {4.0, 12.0}, 2, std::vector<int64_t>{0, 1});
    EXPECT_EQ(p1.scalar_type(), dt);
    EXPECT_TRUE(torch::equal(p1, ref1.to(dt)));
    EXPECT_TRUE(torch::equal(p2, ref2.to(dt)));
    auto [o1, o2] = qlty::extract_overlapping_pixels(p1, p2, deltas, rot);
    EXPECT_TRUE(torch::equal(o1, o2)) << dt;
  }
}

// Gradients reach x through both functions and equal those of the same computation by plain slicing.
TEST(PatchPairs, GradientsMatchPlainSlicing) {
  torch::manual_seed(0);
  auto x0 = torch::randn({2, 2, 30, 32}, torch::kFloat64);
  std::vector<int64_t> choices{0, 1, 2, 3};
  auto xi = index_image({2, 2, 30, 32});
  auto [i1, i2, di, ri] = qlty::extract_patch_pairs(xi, {10, 10}, 7, {3.0, 7.0}, 21, choices);
  auto pairs = decode<2>(xi, i1, di, ri);

  auto x = x0.clone().requires_grad_(true);
  auto [p1, p2, deltas, rot] = qlty::extract_patch_pairs(x, {10, 10}, 7, {3.0, 7.0}, 21, choices);
  auto w1 = torch::randn_like(p1), w2 = torch::randn_like(p2);
  auto [o1, o2] = qlty::extract_overlapping_pixels(p1 * w1, p2 * w2, deltas, rot);
  auto v = torch::randn_like(o1);
  ((p1 * w1).sum() + (p2 * w2).pow(2).sum() + (o1 * v).sum() + o2.pow(3).sum()).backward();

  auto xr = x0.clone().requires_grad_(true);
  std::vector<torch::Tensor> a, b;
  for (const auto& q : pairs) {
    auto [s1, s2] = slice_pair(xr, q, {10, 10});
    a.push_back(s1);
    b.push_back(s2);
  }
  auto r1 = torch::stack(a), r2 = torch::stack(b);
  EXPECT_TRUE(torch::equal(p1.detach(), r1.detach()));
  EXPECT_TRUE(torch::equal(p2.detach(), r2.detach()));
  auto [q1, q2] = slice_overlap(r1 * w1, r2 * w2, pairs);
  ((r1 * w1).sum() + (r2 * w2).pow(2).sum() + (q1 * v).sum() + q2.pow(3).sum()).backward();
  EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-12, 1e-12));
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
}

TEST(PatchPairs, GradientsIn3D) {
  auto x0 = torch::randn({1, 1, 14, 14, 14}, torch::kFloat64);
  auto xi = index_image({1, 1, 14, 14, 14});
  auto [i1, i2, di] = qlty::extract_patch_pairs_3d(xi, {6, 6, 6}, 9, {2.0, 4.0}, 8);
  auto pairs = decode<3>(xi, i1, di, torch::Tensor());
  auto x = x0.clone().requires_grad_(true);
  auto [p1, p2, deltas] = qlty::extract_patch_pairs_3d(x, {6, 6, 6}, 9, {2.0, 4.0}, 8);
  auto [o1, o2] = qlty::extract_overlapping_pixels_3d(p1.pow(2), p2, deltas);
  (o1 - o2).abs().sum().backward();
  auto xr = x0.clone().requires_grad_(true);
  std::vector<torch::Tensor> a, b;
  for (const auto& q : pairs) {
    auto [s1, s2] = slice_pair(xr, q, {6, 6, 6});
    a.push_back(s1);
    b.push_back(s2);
  }
  auto [q1, q2] = slice_overlap(torch::stack(a).pow(2), torch::stack(b), pairs);
  (q1 - q2).abs().sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), xr.grad(), 1e-12, 1e-12));
}

// The Python qlty documentation's kernel optimisation example: conv2 learns conv1 from the L1 loss on overlapping
// pixels.
template <typename Conv, typename Options>
void kernel_optimisation(
    const torch::Tensor& tensor, Options opts,
    const std::function<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>()>& pairs_fn) {
  torch::manual_seed(1);
  Conv conv1(opts), conv2(opts);
  auto [p1, p2, deltas, rot] = pairs_fn();
  p1 = p1.detach();
  p2 = p2.detach();
  torch::optim::Adam optimizer(conv2->parameters(), torch::optim::AdamOptions(0.05));
  auto loss_now = [&] {
    auto out1 = conv1->forward(p1), out2 = conv2->forward(p2);
    auto [o1, o2] = p1.dim() == 4 ? qlty::extract_overlapping_pixels(out1, out2, deltas, rot)
                                  : qlty::extract_overlapping_pixels_3d(out1, out2, deltas);
    return torch::l1_loss(o1, o2);
  };
  const double initial = loss_now().template item<double>();
  const double gap0 = (conv1->weight - conv2->weight).abs().max().template item<double>();
  for (int it = 0; it < 150; ++it) {
    optimizer.zero_grad();
    auto loss = loss_now();
    loss.backward();
    optimizer.step();
  }
  const double final_loss = loss_now().template item<double>();
  const double gap = (conv1->weight - conv2->weight).abs().max().template item<double>();
  // The floor: pixels near a patch edge see different reflect padding in the two patches, so even conv2 ==
  // conv1 leaves a loss there.
  {
    torch::NoGradGuard ng;
    conv2->weight.copy_(conv1->weight);
  }
  const double floor = loss_now().template item<double>();
  std::cout << "loss " << initial << " -> " << final_loss << " (floor " << floor << "), kernel gap " << gap0 << " -> "
            << gap << "\n";
  EXPECT_LT(final_loss, floor + 0.2 * (initial - floor));
  EXPECT_LT(gap, 0.1 * gap0);
}

TEST(PatchPairs, KernelOptimisationConverges2D) {
  auto tensor = torch::randn({10, 1, 32, 32});
  kernel_optimisation<torch::nn::Conv2d>(
      tensor, torch::nn::Conv2dOptions(1, 1, 3).padding(1).padding_mode(torch::kReflect).bias(false), [&] {
        return qlty::extract_patch_pairs(tensor, {9, 9}, 5, {3.0, 6.0}, 0);
      });
}

TEST(PatchPairs, KernelOptimisationConverges3D) {
  auto tensor = torch::randn({4, 1, 20, 20, 20});
  kernel_optimisation<torch::nn::Conv3d>(
      tensor, torch::nn::Conv3dOptions(1, 1, 3).padding(1).padding_mode(torch::kReflect).bias(false), [&] {
        auto [a, b, d] = qlty::extract_patch_pairs_3d(tensor, {9, 9, 9}, 5, {3.0, 6.0}, 0);
        return std::make_tuple(a, b, d, torch::Tensor());
      });
}

class PairsOnDevice : public testing::TestWithParam<torch::Device> {};

TEST_P(PairsOnDevice, SameSeedSamePairsAsOnCpu) {
  const auto dev = GetParam();
  QLTY_SKIP_IF_ABSENT(dev);
  auto x = torch::randn({2, 3, 40, 40});
  std::vector<int64_t> choices{0, 1, 2, 3};
  auto [c1, c2, cd, cr] = qlty::extract_patch_pairs(x, {16, 16}, 10, {4.0, 12.0}, 5, choices);
  auto xd = x.to(dev).detach().clone().requires_grad_(true);
  auto [d1, d2, dd, dr] = qlty::extract_patch_pairs(xd, {16, 16}, 10, {4.0, 12.0}, 5, choices);
  EXPECT_EQ(d1.device(), dev);
  EXPECT_EQ(dd.device(), dev);
  EXPECT_TRUE(torch::equal(d1.cpu(), c1));
  EXPECT_TRUE(torch::equal(d2.cpu(), c2));
  auto [o1, o2] = qlty::extract_overlapping_pixels(d1, d2, dd, dr);
  EXPECT_TRUE(torch::equal(o1, o2));
  (o1 * 2).sum().backward();
  auto xc = x.detach().clone().requires_grad_(true);
  auto [e1, e2, ed, er] = qlty::extract_patch_pairs(xc, {16, 16}, 10, {4.0, 12.0}, 5, choices);
  (std::get<0>(qlty::extract_overlapping_pixels(e1, e2, ed, er)) * 2).sum().backward();
  EXPECT_TRUE(torch::allclose(xd.grad().cpu(), xc.grad()));
}

INSTANTIATE_TEST_SUITE_P(Devices, PairsOnDevice, testing::ValuesIn(devices()), device_name);

TEST(PatchPairsErrors, BadInputsGiveClearErrors) {
  using V = c10::ValueError;
  auto x = torch::randn({2, 1, 40, 40});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs(torch::randn({1, 40, 40}), {16, 16}, 4, {4.0, 8.0});
      },
      {"extract_patch_pairs", "4-D", "got 3-D"});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs(x, {48, 16}, 4, {12.0, 20.0});
      },
      {"extract_patch_pairs", "window + int(high)", "Y"});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs(x, {16, 16}, 4, {2.0, 8.0});
      },
      {"delta_range", "[4, 12]", "got (2, 8)"});
  expect_error<V>([&] { qlty::extract_patch_pairs(x, {16, 16}, 4, {4.0, 13.0}); }, {"delta_range", "[4, 12]"});
  expect_error<V>([&] { qlty::extract_patch_pairs(x, {16, 16}, 4, {10.0, 6.0}); }, {"low <= high", "(10, 6)"});
  expect_error<V>([&] { qlty::extract_patch_pairs(x, {16, 16}, 0, {4.0, 8.0}); }, {"num_patches", "got 0"});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs(x, {12, 16}, 4, {4.0, 8.0}, 1, std::vector<int64_t>{1});
      },
      {"odd quarter turn", "square"});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs(x, {16, 16}, 4, {4.0, 8.0}, 1, std::vector<int64_t>{});
      },
      {"rotation_choices", "empty"});
  expect_error<V>(
      [&] {
        qlty::extract_patch_pairs_3d(torch::randn({1, 1, 20, 20, 9}), {8, 8, 8}, 4, {2.0, 4.0});
      },
      {"extract_patch_pairs_3d", "X"});
  auto [p1, p2, d, r] = qlty::extract_patch_pairs(x, {16, 16}, 4, {4.0, 8.0}, 3);
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2, d.narrow(0, 0, 5)); },
                  {"extract_overlapping_pixels", "deltas", "(M, 2)", "[5, 2]"});
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2.narrow(0, 0, 7), d); },
                  {"same shape", "[8, 1, 16, 16]", "[7, 1, 16, 16]"});
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2, d, r.narrow(0, 0, 3)); },
                  {"rotations", "(M,)", "[3]"});
  expect_error<c10::TypeError>([&] { qlty::extract_overlapping_pixels(p1, p2, d, r.to(torch::kFloat32)); },
                               {"rotations", "integer"});
  expect_error<V>([&] { qlty::extract_overlapping_pixels_3d(p1, p2, d); }, {"extract_overlapping_pixels_3d", "5-D"});
}

// The torch-op paths that CUDA and other devices take, run on CPU against the native kernels.
TEST(PatchPairs, DeviceGenericPathsMatchTheNativeKernels) {
  auto x = torch::randn({2, 3, 1, 40, 36}, torch::kFloat64);
  auto origins = torch::tensor({0, 0, 3, 5, 1, 0, 20, 18, 0, 0, 0, 0, 1, 0, 28, 24}, torch::kInt64).view({4, 4});
  const std::array<int64_t, 3> w{1, 12, 12};
  auto native = qlty::gather_windows(x, origins, w);
  auto generic = torch::empty_like(native);
  qlty::detail::gather_torch(x, origins, generic, w);
  EXPECT_TRUE(torch::equal(native, generic));

  auto xr = torch::randn({2, 2, 30, 30}, torch::kFloat64);
  for (bool rotate : {false, true}) {
    std::optional<std::vector<int64_t>> choices;
    if (rotate) choices = std::vector<int64_t>{0, 1, 2, 3};
    auto a = xr.clone().requires_grad_(true), b = xr.clone().requires_grad_(true);
    auto [p1, p2, d, r] = qlty::extract_patch_pairs(a, {10, 10}, 9, {3.0, 7.0}, 5, choices);
    auto [q1, q2, e, s] = qlty::extract_patch_pairs(b, {10, 10}, 9, {3.0, 7.0}, 5, choices);
    auto [n1, n2] = qlty::extract_overlapping_pixels(p1, p2, d, r);
    auto [g1, g2] = qlty::detail::overlap_torch<2>(q1, q2, e, rotate ? s : torch::Tensor());
    EXPECT_TRUE(torch::equal(n1, g1));
    EXPECT_TRUE(torch::equal(n2, g2));
    auto v1 = torch::randn_like(n1), v2 = torch::randn_like(n2);
    ((n1 * v1).sum() + (n2 * v2).sum()).backward();
    ((g1 * v1).sum() + (g2 * v2).sum()).backward();
    EXPECT_TRUE(torch::allclose(a.grad(), b.grad(), 1e-12, 1e-12)) << "rotate " << rotate;
  }
  auto x3 = torch::randn({1, 2, 16, 16, 16});
  auto [p1, p2, d] = qlty::extract_patch_pairs_3d(x3, {6, 7, 8}, 10, {2.0, 5.0}, 6);
  auto [n1, n2] = qlty::extract_overlapping_pixels_3d(p1, p2, d);
  auto [g1, g2] = qlty::detail::overlap_torch<3>(p1, p2, d, torch::Tensor());
  EXPECT_TRUE(torch::equal(n1, g1));
  EXPECT_TRUE(torch::equal(n2, g2));
}

// The _out calls: bitwise the allocating calls for the same seed (with and without rotations, 2D and 3D, one to
// five channels), into buffers reused across calls; overlap outputs grow from empty and are reused.
TEST(PatchPairs, OutVariantsEqualTheAllocatingCalls) {
  for (int64_t C : {1, 2, 3, 4, 5}) {
    auto x = torch::randn({3, C, 48, 44});
    torch::Tensor p1 = torch::full({30, C, 16, 16}, 9.0f), p2 = torch::full({30, C, 16, 16}, 9.0f);
    torch::Tensor o1 = torch::empty({0, C}), o2 = torch::empty({0, C});
    for (bool rotate : {false, true}) {
      std::optional<std::vector<int64_t>> choices;
      if (rotate) choices = std::vector<int64_t>{0, 1, 2, 3};
      for (uint64_t seed : {5u, 6u}) {
        auto [e1, e2, ed, er] = qlty::extract_patch_pairs(x, {16, 16}, 10, {4.0, 12.0}, seed, choices);
        auto [d, r] = qlty::extract_patch_pairs_out(x, {16, 16}, 10, {4.0, 12.0}, p1, p2, seed, choices);
        EXPECT_TRUE(torch::equal(p1, e1) && torch::equal(p2, e2)) << "C " << C << " rotate " << rotate;
        EXPECT_TRUE(torch::equal(d, ed) && torch::equal(r, er));
        auto [eo1, eo2] = qlty::extract_overlapping_pixels(e1, e2, ed, er);
        auto out = qlty::extract_overlapping_pixels_out(p1, p2, d, r, o1, o2);
        EXPECT_EQ(&std::get<0>(out), &o1);
        EXPECT_TRUE(torch::equal(o1, eo1) && torch::equal(o2, eo2)) << "C " << C << " rotate " << rotate;
      }
    }
    // An earlier result (memory qlty owns, which cannot grow) is a valid buffer: replaced when too small.
    auto [a1, a2, ad, ar] = qlty::extract_patch_pairs(x, {16, 16}, 2, {4.0, 12.0}, 1);
    auto [small1, small2] = qlty::extract_overlapping_pixels(a1, a2, ad, ar);
    auto [b1, b2, bd, br] = qlty::extract_patch_pairs(x, {16, 16}, 20, {4.0, 12.0}, 2);
    qlty::extract_overlapping_pixels_out(b1, b2, bd, br, small1, small2);
    auto [eb1, eb2] = qlty::extract_overlapping_pixels(b1, b2, bd, br);
    EXPECT_TRUE(torch::equal(small1, eb1) && torch::equal(small2, eb2));
  }
  auto x3 = torch::randn({2, 2, 20, 18, 22});
  auto [e1, e2, ed] = qlty::extract_patch_pairs_3d(x3, {8, 8, 10}, 12, {2.0, 6.0}, 4);
  auto p1 = torch::empty_like(e1), p2 = torch::empty_like(e2);
  auto d = qlty::extract_patch_pairs_3d_out(x3, {8, 8, 10}, 12, {2.0, 6.0}, p1, p2, 4);
  EXPECT_TRUE(torch::equal(p1, e1) && torch::equal(p2, e2) && torch::equal(d, ed));
  auto [eo1, eo2] = qlty::extract_overlapping_pixels_3d(e1, e2, ed);
  torch::Tensor o1 = torch::empty({0}), o2 = torch::empty({0});
  qlty::extract_overlapping_pixels_3d_out(p1, p2, d, o1, o2);
  EXPECT_TRUE(torch::equal(o1, eo1) && torch::equal(o2, eo2));
}

TEST(PatchPairsErrors, OutVariantsRefuseBadBuffers) {
  auto x = torch::randn({2, 3, 40, 40});
  auto p1 = torch::empty({8, 3, 16, 16}), p2 = torch::empty({8, 3, 16, 16});
  expect_error<c10::ValueError>(
      [&] {
        auto bad = torch::empty({8, 3, 16, 15});
        qlty::extract_patch_pairs_out(x, {16, 16}, 4, {4.0, 12.0}, bad, p2, 1);
      },
      {"extract_patch_pairs_out", "patches1 must have shape [8, 3, 16, 16]", "[8, 3, 16, 15]"});
  expect_error<c10::TypeError>(
      [&] {
        auto bad = torch::empty({8, 3, 16, 16}, torch::kFloat16);
        qlty::extract_patch_pairs_out(x, {16, 16}, 4, {4.0, 12.0}, p1, bad, 1);
      },
      {"patches2 must have dtype Float", "got Half"});
  expect_error<c10::ValueError>(
      [&] {
        auto same = p1;
        qlty::extract_patch_pairs_out(x, {16, 16}, 4, {4.0, 12.0}, p1, same, 1);
      },
      {"patches1 must not share memory with patches2"});
  auto xg = x.clone().requires_grad_(true);
  expect_error<c10::ValueError>(
      [&] {
        qlty::extract_patch_pairs_out(xg, {16, 16}, 4, {4.0, 12.0}, p1, p2, 1);
      },
      {"x requires grad", "do not support autograd"});
  auto [e1, e2, d, r] = qlty::extract_patch_pairs(x, {16, 16}, 4, {4.0, 12.0}, 1);
  auto o1 = torch::empty({0, 3}), o2 = torch::empty({0, 3});
  expect_error<c10::TypeError>(
      [&] {
        auto bad = torch::empty({0, 3}, torch::kFloat64);
        qlty::extract_overlapping_pixels_out(e1, e2, d, r, bad, o2);
      },
      {"extract_overlapping_pixels_out", "overlapping1 must have dtype Float"});
  expect_error<c10::ValueError>(
      [&] {
        auto view = o1.view({0, 3});  // the same storage
        qlty::extract_overlapping_pixels_out(e1, e2, d, r, o1, view);
      },
      {"overlapping1 and overlapping2 must not share memory"});
  expect_error<c10::ValueError>(
      [&] {
        auto in_patches = e1.view(-1).narrow(0, 0, 30).view({10, 3});
        qlty::extract_overlapping_pixels_out(e1, e2, d, r, in_patches, o2);
      },
      {"overlapping1 must not share memory with patches1"});
}

namespace {

// The overlapping pixels by definition, pixel by pixel: (z, y, x) of patch 1 matches (z - dz, y - dy, x - dx) of
// patch 2 unturned by its rotation, for any deltas, overlapping or not.
std::pair<torch::Tensor, torch::Tensor> pixel_overlap(const torch::Tensor& p1, const torch::Tensor& p2,
                                                      const std::vector<std::array<int64_t, 3>>& dxyz,
                                                      const std::vector<int64_t>& turns = {}) {
  const bool flat = p1.dim() == 4;
  auto a5 = flat ? p1.unsqueeze(2) : p1, b5 = flat ? p2.unsqueeze(2) : p2;
  std::vector<torch::Tensor> o1, o2;
  for (int64_t i = 0; i < a5.size(0); ++i) {
    auto a = a5[i];
    auto b = turns.empty() ? b5[i] : torch::rot90(b5[i], -turns[i], {-2, -1});
    const auto [dx, dy, dz] = dxyz[i];
    for (int64_t z = 0; z < a.size(1); ++z)
      for (int64_t y = 0; y < a.size(2); ++y)
        for (int64_t x = 0; x < a.size(3); ++x) {
          const int64_t z2 = z - dz, y2 = y - dy, x2 = x - dx;
          if (z2 < 0 || z2 >= a.size(1) || y2 < 0 || y2 >= a.size(2) || x2 < 0 || x2 >= a.size(3)) continue;
          o1.push_back(a.index({Slice(), z, y, x}));
          o2.push_back(b.index({Slice(), z2, y2, x2}));
        }
  }
  if (o1.empty()) return {torch::empty({0, p1.size(1)}, p1.options()), torch::empty({0, p1.size(1)}, p1.options())};
  return {torch::stack(o1), torch::stack(o2)};
}

}  // namespace

// Pairs displaced by the window or more share no pixel and add no rows, on the native kernel, the torch-op path
// and the _out calls alike (the native kernel once copied a negative row length: heap corruption).
TEST(OverlappingPixels, PairsThatDoNotOverlapAddNoRows) {
  const double far = 1e30;
  const std::vector<std::vector<double>> cases2{{1, 2, 9, 0, -2, 1}, {8, 0, 0, -8, 3, 3}, {far, 1, -far, -far, 0, 0}};
  for (const auto& flat : cases2) {
    for (int64_t C : {1, 3, 5}) {
      auto p1 = torch::randn({3, C, 8, 8}), p2 = torch::randn({3, C, 8, 8});
      auto deltas = torch::tensor(flat, torch::kFloat64).view({3, 2});
      std::vector<std::array<int64_t, 3>> d;
      for (int i = 0; i < 3; ++i)
        d.push_back({static_cast<int64_t>(std::clamp(flat[2 * i], -8.0, 8.0)),
                     static_cast<int64_t>(std::clamp(flat[2 * i + 1], -8.0, 8.0)), 0});
      for (bool rotate : {false, true}) {
        auto turns = rotate ? torch::tensor({1, 2, 3}, torch::kInt64) : torch::Tensor();
        std::vector<int64_t> t = rotate ? std::vector<int64_t>{1, 2, 3} : std::vector<int64_t>{};
        auto [r1, r2] = pixel_overlap(p1, p2, d, t);
        auto [o1, o2] = qlty::extract_overlapping_pixels(p1, p2, deltas, turns);
        EXPECT_TRUE(torch::equal(o1, r1) && torch::equal(o2, r2)) << "C " << C << " rotate " << rotate;
        auto [g1, g2] =
            qlty::detail::overlap_torch<2>(p1, p2, qlty::detail::integral_deltas<2>("t", deltas, p1), turns);
        EXPECT_TRUE(torch::equal(g1, r1) && torch::equal(g2, r2)) << "C " << C << " rotate " << rotate;
        auto b1 = torch::empty({0, C}), b2 = torch::empty({0, C});
        qlty::extract_overlapping_pixels_out(p1, p2, deltas, turns, b1, b2);
        EXPECT_TRUE(torch::equal(b1, r1) && torch::equal(b2, r2));
        // Gradients flow to the overlapping pixels only.
        auto a = p1.clone().requires_grad_(true), b = p2.clone().requires_grad_(true);
        auto [q1, q2] = qlty::extract_overlapping_pixels(a, b, deltas, turns);
        (q1.sum() + 2 * q2.sum()).backward();
        EXPECT_EQ(a.grad().sum().item<float>(), static_cast<float>(r1.numel()));
        EXPECT_EQ(b.grad().sum().item<float>(), static_cast<float>(2 * r2.numel()));
      }
    }
  }
  // Every pair apart: no rows at all.
  auto p = torch::randn({2, 2, 8, 8});
  auto [e1, e2] = qlty::extract_overlapping_pixels(p, p.clone(), torch::tensor({{8.f, 0.f}, {0.f, -100.f}}));
  EXPECT_EQ(e1.sizes(), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(e2.sizes(), (std::vector<int64_t>{0, 2}));
  // 3D: apart along z, y or x, overlapping, and far.
  auto q1 = torch::randn({4, 2, 6, 7, 8}), q2 = torch::randn({4, 2, 6, 7, 8});
  auto d3 = torch::tensor({0., 0., 6., 0., 7., 0., 2., -3., 1., -far, 0., 0.}, torch::kFloat64).view({4, 3});
  std::vector<std::array<int64_t, 3>> r{{0, 0, 6}, {0, 7, 0}, {2, -3, 1}, {-8, 0, 0}};
  auto [r1, r2] = pixel_overlap(q1, q2, r);
  auto [o1, o2] = qlty::extract_overlapping_pixels_3d(q1, q2, d3);
  EXPECT_TRUE(torch::equal(o1, r1) && torch::equal(o2, r2));
  EXPECT_EQ(o1.size(0), 5 * 4 * 6);  // the one overlapping pair: (6 - 1) * (7 - 3) * (8 - 2)
  torch::Tensor b1 = torch::empty({0}), b2 = torch::empty({0});
  qlty::extract_overlapping_pixels_3d_out(q1, q2, d3, b1, b2);
  EXPECT_TRUE(torch::equal(b1, r1) && torch::equal(b2, r2));
  auto [g1, g2] = qlty::detail::overlap_torch<3>(q1, q2, qlty::detail::integral_deltas<3>("t", d3, q1), {});
  EXPECT_TRUE(torch::equal(g1, r1) && torch::equal(g2, r2));
}

TEST(PatchPairsErrors, DeltasMustBeFiniteWholeNumbers) {
  using V = c10::ValueError;
  auto p1 = torch::randn({3, 1, 8, 8}), p2 = torch::randn({3, 1, 8, 8});
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  auto with = [](double v, int at) {
    auto d = torch::tensor({1., 2., 3., 0., -2., 1.}, torch::kFloat64).view({3, 2});
    d.view(-1)[at] = v;
    return d;
  };
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2, with(nan, 3)); },
                  {"extract_overlapping_pixels", "deltas must be finite", "nan", "dy of pair 1"});
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2, with(-inf, 4)); },
                  {"deltas must be finite", "-inf", "dx of pair 2"});
  expect_error<V>([&] { qlty::extract_overlapping_pixels(p1, p2, with(0.5, 0).to(torch::kFloat32)); },
                  {"deltas must be whole numbers", "0.5", "dx of pair 0"});
  auto o1 = torch::full({2, 1}, 7.f), o2 = torch::full({2, 1}, 7.f);
  expect_error<V>([&] { qlty::extract_overlapping_pixels_out(p1, p2, with(nan, 0), {}, o1, o2); },
                  {"extract_overlapping_pixels_out", "deltas must be finite"});
  EXPECT_EQ(o1.sizes(), (std::vector<int64_t>{2, 1}));  // refused before anything is touched
  EXPECT_TRUE(torch::equal(o1, torch::full({2, 1}, 7.f)));
  auto q = torch::randn({2, 1, 4, 4, 4});
  expect_error<V>(
      [&] {
        qlty::extract_overlapping_pixels_3d(q, q.clone(), torch::tensor({{0., 0., 1.}, {0., 0., 1.5}}));
      },
      {"extract_overlapping_pixels_3d", "whole numbers", "1.5", "dz of pair 1"});
  expect_error<c10::TypeError>(
      [&] {
        qlty::extract_overlapping_pixels(p1, p2, torch::ones({3, 2}, torch::kBool));
      },
      {"deltas", "Bool"});
}

// An _out buffer that is an empty view just before patches1 in one storage passes a check made before the
// resize, and would grow over patches1: the check runs after the resize.
TEST(PatchPairsErrors, OverlapOutputsAreCheckedAfterTheResize) {
  auto x = torch::randn({2, 3, 40, 40});
  auto [e1, e2, d, r] = qlty::extract_patch_pairs(x, {16, 16}, 4, {4.0, 12.0}, 1);
  auto storage = torch::empty({100 + e1.numel()});
  auto p1 = storage.narrow(0, 100, e1.numel()).view(e1.sizes()).copy_(e1);
  auto before = p1.clone();
  auto o1 = storage.narrow(0, 0, 0).view({0, 3}), o2 = torch::empty({0, 3});
  expect_error<c10::ValueError>([&] { qlty::extract_overlapping_pixels_out(p1, e2, d, r, o1, o2); },
                                {"extract_overlapping_pixels_out", "overlapping1 must not share memory with patches1"});
  EXPECT_TRUE(torch::equal(p1, before));
}

// qlty::gather_windows is public: origins whose window leaves x are refused (the kernels copy without bounds
// checks), naming the first such row; windows inside x are the slices.
TEST(PatchPairsErrors, GatherWindowsRefusesWindowsOutsideX) {
  using V = c10::ValueError;
  auto x = torch::randn({2, 3, 4, 10, 12});
  const std::array<int64_t, 3> w{2, 4, 5};
  auto at = [](std::vector<int64_t> v) { return torch::tensor(v, torch::kInt64).view({-1, 4}); };
  auto ok = qlty::gather_windows(x, at({1, 2, 6, 7, 0, 0, 0, 0}), w);
  EXPECT_TRUE(torch::equal(ok[0], x[1].narrow(1, 2, 2).narrow(2, 6, 4).narrow(3, 7, 5)));
  EXPECT_TRUE(torch::equal(ok[1], x[0].narrow(1, 0, 2).narrow(2, 0, 4).narrow(3, 0, 5)));
  expect_error<V>(
      [&] {
        qlty::gather_windows(x, at({0, 0, 0, 0, 1, 3, 6, 8}), w);
      },
      {"qlty::gather_windows", "origins row 1 [1, 3, 6, 8]", "does not lie inside x"});
  expect_error<V>([&] { qlty::gather_windows(x, at({2, 0, 0, 0}), w); }, {"row 0 [2, 0, 0, 0]"});
  expect_error<V>([&] { qlty::gather_windows(x, at({0, 0, 0, -1}), w); }, {"row 0 [0, 0, 0, -1]"});
  expect_error<V>([&] { qlty::gather_windows(x, at({0, 0, 0, 0}), {2, 4, 13}); }, {"window [2, 4, 13]"});
  expect_error<V>([&] { qlty::gather_windows(x, torch::zeros({3, 3}, torch::kLong), w); }, {"(M, 4)"});
  expect_error<c10::TypeError>([&] { qlty::gather_windows(x, torch::zeros({1, 4}), w); }, {"integers", "Float"});
  auto xg = x.clone().requires_grad_(true);
  expect_error<V>([&] { qlty::gather_windows(xg, at({0, 3, 0, 0}), w); }, {"does not lie inside x"});
}
