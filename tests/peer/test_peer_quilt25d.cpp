// 2.5D quilts beside the Python original (qlty 1.5, qlty2_5D.NCZYX25DQuilt.convert) on random volumes: every
// operation, every boundary mode (skip with means and stds), both accumulations, selected slices.
//
// Where they differ on purpose (both shown below): the original's get_channel_metadata() lists channels by input
// channel first while its convert() orders them by operation first; ours agree (operation first, as convert() always
// was). The original resolves an offset past the volume against the slices it loaded for z0, not against the volume:
// with offsets that all fall outside (identity {-3} at z0 = 1), its "clamp" reads slice 1 where the volume's edge is
// slice 0, and its "reflect" fails with an IndexError for identity {0, -2} at z0 = 0 (ours reads slices 0 and 1).
#include "peer.hpp"

#include <qlty/quilt25d.hpp>

namespace {

using qlty::ZBoundary;

struct Case {
  std::string name;
  std::vector<std::pair<std::string, std::vector<std::vector<int64_t>>>> spec;
  std::string boundary, accumulation;
  std::vector<int64_t> z_slices;  // empty: all
};

qlty::ChannelSpec to_spec(const Case& c) {
  qlty::ChannelSpec s;
  for (const auto& [op, groups] : c.spec) {
    if (op == "identity") {
      std::vector<int64_t> offsets;
      for (const auto& g : groups) offsets.push_back(g[0]);
      s.identity(offsets);
    } else if (op == "mean") {
      s.mean(groups);
    } else {
      s.std(groups);
    }
  }
  return s;
}

TEST(PeerQuilt25D, ConvertEqualsTheOriginalsForEveryOperationAndBoundaryMode) {
  torch::manual_seed(2525);
  const auto volume = torch::randn({2, 2, 6, 9, 11});
  const std::map<std::string, ZBoundary> modes = {{"clamp", ZBoundary::Clamp},
                                                  {"zero", ZBoundary::Zero},
                                                  {"reflect", ZBoundary::Reflect},
                                                  {"skip", ZBoundary::Skip}};
  std::vector<Case> cases;
  for (const char* b : {"clamp", "zero", "reflect"})
    for (const char* acc : {"2d", "3d"})
      cases.push_back({c10::str(b, "_", acc),
                       {{"identity", {{-1}, {0}, {2}}}, {"mean", {{-2, -1}, {1, 2}}}, {"std", {{-1, 0, 1}}}},
                       b,
                       acc,
                       {}});
  cases.push_back({"skip_2d", {{"mean", {{-2, -1, 0}, {0, 1, 2}}}, {"std", {{-1, 0, 1}}}}, "skip", "2d", {}});
  cases.push_back({"skip_3d_slices", {{"std", {{-1, 0}}}, {"mean", {{0, 2}}}}, "skip", "3d", {1, 2, 5}});
  cases.push_back({"identity_slices", {{"identity", {{0}, {1}, {-2}}}}, "reflect", "2d", {0, 4}});
  qlty_peer::Original original;
  for (const auto& c : cases) {
    nlohmann::json spec = nlohmann::json::array();
    for (const auto& [op, groups] : c.spec) spec.push_back(nlohmann::json::array({op, groups}));
    nlohmann::json args = {{"spec", spec}, {"boundary", c.boundary}, {"accumulation", c.accumulation}};
    if (!c.z_slices.empty()) args["z_slices"] = c.z_slices;
    original.add("convert_25d", c.name, args, {{"volume", volume}});
  }
  // the original's edge rule differs here (see the file comment)
  using json = nlohmann::json;
  const json outside = json::array({json::array({"identity", json::array({json::array({-3})})})});
  original.add("convert_25d", "outside", {{"spec", outside}, {"boundary", "clamp"}, {"accumulation", "2d"}},
               {{"volume", volume}});
  ASSERT_TRUE(original.run()) << original.log();

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::optional<std::vector<int64_t>> zs;
    if (!c.z_slices.empty()) zs = c.z_slices;
    qlty::NCZYX25DQuilt q(volume, to_spec(c), modes.at(c.boundary),
                          c.accumulation == "2d" ? qlty::Accumulation::TwoD : qlty::Accumulation::ThreeD, zs);
    EXPECT_TRUE(torch::allclose(q.convert(), original.output(c.name, "out"), 1e-5, 1e-6));
  }
  // metadata: the original's order is by input channel first, ours by operation first, as both convert()s are
  const auto theirs = original.output("clamp_2d", "order");  // rows (input channel, offsets in the group)
  qlty::NCZYX25DQuilt q(volume, to_spec(cases[0]));
  const auto ours = q.channel_metadata();
  ASSERT_EQ(int64_t(ours.size()), theirs.size(0));
  EXPECT_EQ(theirs[1][0].item<int64_t>(), 0);  // theirs: channel 1 is input channel 0's second identity offset
  EXPECT_EQ(ours[1].input_channel, 0);
  EXPECT_EQ(theirs[3][0].item<int64_t>(), 0);  // theirs: channel 3 is still input channel 0 (its first mean) ...
  EXPECT_EQ(ours[3].input_channel, 1);         // ... but convert() put input channel 1's first identity there
  // all offsets outside: the original clamps to the slices it loaded (z0 itself), ours to the volume's edge
  qlty::NCZYX25DQuilt out(volume, qlty::ChannelSpec().identity({-3}));
  const auto mine = out.convert(), original_outside = original.output("outside", "out");
  EXPECT_TRUE(torch::equal(mine[1], volume[0].select(1, 0)));              // z0 1: slice 0, the edge
  EXPECT_TRUE(torch::equal(original_outside[1], volume[0].select(1, 1)));  // the original: slice 1
  EXPECT_TRUE(torch::equal(mine[4], original_outside[4]));                 // z0 4: slice 1 for both
}

}  // namespace
