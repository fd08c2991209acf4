// 2.5D quilts: convert() against slice-by-slice loops for every operation and boundary mode, both accumulations,
// selected slices; channel_metadata() in convert()'s order; lazy sources read only what they need; extraction plans
// whose colours never overlap (the clamped last window included) and whose patches are unstitch's; stitching back;
// the refusals.
#include "../common.hpp"

#include <qlty/quilt25d.hpp>

namespace {

using qlty::ZBoundary;
using qlty::ZOperation;

/// Slice z0 + d of a volume with Z slices by the mode's rule, by iteration (-1: zeros or none).
int64_t reference_slice(int64_t z, int64_t Z, ZBoundary mode) {
  if (z >= 0 && z < Z) return z;
  if (mode == ZBoundary::Clamp) return z < 0 ? 0 : Z - 1;
  if (mode != ZBoundary::Reflect) return -1;
  while (z < 0 || z >= Z) z = z < 0 ? -z - 1 : 2 * Z - 1 - z;
  return z;
}

/// Channel (op, group) of input channel c of volume x[n] (C, Z, Y, X) at z0, by loops over the group.
torch::Tensor reference_channel(const torch::Tensor& v, int64_t c, int64_t z0, ZOperation op,
                                const std::vector<int64_t>& group, ZBoundary mode) {
  const int64_t Z = v.size(1);
  std::vector<torch::Tensor> slices;
  for (auto d : group) {
    const int64_t z = reference_slice(z0 + d, Z, mode);
    if (z >= 0)
      slices.push_back(v[c][z].to(torch::kDouble));
    else if (mode == ZBoundary::Zero)
      slices.push_back(torch::zeros_like(v[c][0], torch::kDouble));
  }
  auto s = torch::stack(slices);
  if (op == ZOperation::Identity) return s[0];
  if (op == ZOperation::Mean) return s.mean(0);
  return s.std(0, /*unbiased=*/false);
}

TEST(Quilt25D, ConvertEqualsSliceBySliceLoopsForEveryOperationAndBoundary) {
  torch::manual_seed(25);
  const auto x = torch::randn({2, 2, 6, 5, 7});
  qlty::ChannelSpec spec;
  spec.identity({-1, 0, 2}).mean({{-2, -1}, {1, 2, 3}}).std({{-1, 0, 1}, {4, 5}});
  for (auto mode : {ZBoundary::Clamp, ZBoundary::Reflect, ZBoundary::Zero})
    for (auto acc : {qlty::Accumulation::TwoD, qlty::Accumulation::ThreeD}) {
      SCOPED_TRACE(c10::str("boundary ", int(mode), " accumulation ", int(acc)));
      const std::vector<int64_t> zs = {0, 3, 5};
      qlty::NCZYX25DQuilt q(x, spec, mode, acc, zs);
      const auto out = q.convert();
      ASSERT_EQ(out.sizes().vec(), q.output_shape());
      EXPECT_EQ(q.output_channels(), 2 * 7);
      for (int64_t n = 0; n < 2; ++n)
        for (size_t k = 0; k < zs.size(); ++k) {
          const auto img = acc == qlty::Accumulation::TwoD ? out[n * 3 + int64_t(k)] : out[n].select(1, int64_t(k));
          int64_t ch = 0;  // operation, then input channel, then group
          for (const auto& o : spec.ops())
            for (int64_t c = 0; c < 2; ++c)
              for (const auto& g : o.groups) {
                const auto want = reference_channel(x[n], c, zs[k], o.op, g, mode).to(torch::kFloat);
                EXPECT_TRUE(torch::allclose(img[ch], want, 1e-5, 1e-5)) << "n " << n << " z0 " << zs[k] << " ch " << ch;
                ++ch;
              }
        }
      // channel_metadata() names the same channels in the same order
      const auto meta = q.channel_metadata();
      ASSERT_EQ(int64_t(meta.size()), q.output_channels());
      const auto img = acc == qlty::Accumulation::TwoD ? out[3 + 1] : out[1].select(1, 1);  // n 1, z0 3
      for (const auto& m : meta)
        EXPECT_TRUE(torch::allclose(
            img[m.channel], reference_channel(x[1], m.input_channel, 3, m.op, m.offsets, mode).to(torch::kFloat), 1e-5,
            1e-5))
            << "channel " << m.channel;
    }
}

TEST(Quilt25D, SkipLeavesSlicesOutOfMeansAndRefusesWhatWouldChangeTheChannels) {
  const auto x = torch::rand({1, 1, 4, 3, 3}, torch::kDouble);
  qlty::ChannelSpec spec;
  spec.mean({{-1, 0, 1}}).std({{0, 1}});
  qlty::NCZYX25DQuilt q(x, spec, ZBoundary::Skip);
  const auto out = q.convert();
  EXPECT_EQ(out.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(out[0][0], (x[0][0][0] + x[0][0][1]) / 2));         // z0 0: slice -1 left out
  EXPECT_TRUE(torch::allclose(out[3][1], torch::zeros({3, 3}, torch::kDouble)));  // z0 3: std of one slice
  const auto field = [](auto&& f) { return qlty_test::argument_field(f); };
  EXPECT_EQ(field([&] { qlty::NCZYX25DQuilt(x, qlty::ChannelSpec().identity({0, 1}), ZBoundary::Skip); }), "boundary");
  EXPECT_EQ(field([&] { qlty::NCZYX25DQuilt(x, qlty::ChannelSpec().mean({{1, 2}}), ZBoundary::Skip); }), "boundary");
  EXPECT_EQ(field([&] {  // without slice 3, the group has a slice everywhere
              qlty::NCZYX25DQuilt(x, qlty::ChannelSpec().mean({{1, 2}}), ZBoundary::Skip, qlty::Accumulation::TwoD,
                                  std::vector<int64_t>{0, 1, 2});
            }),
            "(no error)");
  EXPECT_EQ(field([&] { qlty::NCZYX25DQuilt(x, qlty::ChannelSpec()); }), "channel_spec");
  EXPECT_EQ(field([&] { qlty::ChannelSpec().mean({{}}); }), "channel_spec");
  EXPECT_EQ(
      field([&] { qlty::NCZYX25DQuilt(x, spec, ZBoundary::Clamp, qlty::Accumulation::TwoD, std::vector<int64_t>{4}); }),
      "z_slices");
  EXPECT_EQ(field([&] { qlty::NCZYX25DQuilt(x[0], spec); }), "source");
  // offsets far past the volume: reflect keeps mirroring, clamp keeps the edge
  qlty::NCZYX25DQuilt far(x, qlty::ChannelSpec().identity({-9, 9}), ZBoundary::Reflect);
  const auto f = far.convert();  // Z = 4, z0 0: -9 mirrors to 8, then to -1, then to 0; 9 mirrors to -2, then to 1
  EXPECT_EQ(reference_slice(-9, 4, ZBoundary::Reflect), 0);
  EXPECT_EQ(reference_slice(9, 4, ZBoundary::Reflect), 1);
  EXPECT_TRUE(torch::equal(f[0][0], x[0][0][0]));
  EXPECT_TRUE(torch::equal(f[0][1], x[0][0][1]));
}

TEST(Quilt25D, PlansColourWindowsApartReadLazilyAndStitchBack) {
  torch::manual_seed(3);
  const auto x = torch::rand({2, 1, 5, 100, 70});
  qlty::ChannelSpec spec;
  spec.identity({-1, 0, 1}).mean({{-2, 2}});
  // a source that records the boxes it is asked for
  std::vector<std::pair<std::array<int64_t, 3>, std::array<int64_t, 3>>> reads;
  const auto tensor = qlty::VolumeSource::tensor(x);
  qlty::VolumeSource recording(x.sizes().vec(), x.scalar_type(), [&](int64_t n, auto lo, auto hi) {
    reads.emplace_back(lo, hi);
    return tensor.read(n, lo, hi);
  });
  qlty::NCZYX25DQuilt q(recording, spec, ZBoundary::Clamp, qlty::Accumulation::TwoD, std::vector<int64_t>{1, 2, 4});
  const auto plan = q.extraction_plan(64, 32);  // y starts 0, 32, 36 (clamped): the original gives 0 and 36 one colour
  ASSERT_EQ(int64_t(plan.patches.size()), 2 * 3 * 3 * 2);
  EXPECT_EQ(plan.colors, 3 * 2);
  for (const auto& a : plan.patches)
    for (const auto& b : plan.patches)
      if (a.index < b.index && a.color == b.color && a.n == b.n && a.z0 == b.z0) {
        const bool apart = a.y0 + 64 <= b.y0 || b.y0 + 64 <= a.y0 || a.x0 + 64 <= b.x0 || b.x0 + 64 <= a.x0;
        EXPECT_TRUE(apart) << "patches " << a.index << " and " << b.index << " share colour " << a.color;
      }
  // a patch reads its window and the slices it needs, nothing more
  reads.clear();
  const auto& p = plan.patches[7];
  const auto one = q.extract(plan, {p});
  ASSERT_EQ(reads.size(), 1u);
  EXPECT_EQ(reads[0].first, (std::array<int64_t, 3>{std::max<int64_t>(0, p.z0 - 2), p.y0, p.x0}));
  EXPECT_EQ(reads[0].second, (std::array<int64_t, 3>{std::min<int64_t>(5, p.z0 + 3), p.y0 + 64, p.x0 + 64}));
  // all patches: the 2D quilt's unstitch of convert(), in plan order; stitching them gives convert() back
  const auto converted = q.convert();
  const auto quilt = q.quilt(64, 32);
  const auto patches = q.extract(plan);
  EXPECT_TRUE(torch::allclose(patches, quilt.unstitch(converted)));
  EXPECT_TRUE(torch::allclose(one[0], patches[7]));
  EXPECT_TRUE(torch::allclose(std::get<0>(quilt.stitch(patches)), converted, 1e-5, 1e-6));
  // a Zarr array as the source
  qlty_test::TempDir dir("qlty_25d");
  auto arr = qlty::zarr::Array::create(dir / "v.zarr", qlty::zarr::ArrayOptions(x.sizes().vec(), {1, 1, 2, 32, 32}));
  arr.write({0, 0, 0, 0, 0}, x);
  qlty::NCZYX25DQuilt from_zarr(qlty::VolumeSource::zarr(arr), spec, ZBoundary::Clamp, qlty::Accumulation::TwoD,
                                std::vector<int64_t>{1, 2, 4});
  EXPECT_TRUE(torch::equal(from_zarr.convert(), converted));
}

}  // namespace
