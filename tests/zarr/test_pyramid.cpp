// Pyramids (qlty/pyramid.hpp): block means against a loop over each block's pixels (edges included), every level of
// write_pyramid against them, slabs and z downsampling, the NGFF metadata (0.4 and 0.5, units, scales and
// translations), Laplacian levels rebuilt exactly, and bad options refused naming them.
#include "helpers.hpp"

#include <qlty/pyramid.hpp>

namespace {

using qlty::zarr::Array;

/// The mean of each f-block of the last three axes of x (C, Z, Y, X), over the pixels the block holds: a loop.
torch::Tensor reference_mean(const torch::Tensor& x, std::array<int64_t, 3> f) {
  const int64_t C = x.size(0), Z = x.size(1), Y = x.size(2), X = x.size(3);
  const int64_t z = (Z + f[0] - 1) / f[0], y = (Y + f[1] - 1) / f[1], w = (X + f[2] - 1) / f[2];
  auto out = torch::empty({C, z, y, w}, torch::kDouble);
  auto xa = x.to(torch::kDouble).contiguous();
  auto in = xa.accessor<double, 4>();
  auto o = out.accessor<double, 4>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < z; ++k)
      for (int64_t i = 0; i < y; ++i)
        for (int64_t j = 0; j < w; ++j) {
          double sum = 0;
          int64_t n = 0;
          for (int64_t a = k * f[0]; a < std::min(Z, (k + 1) * f[0]); ++a)
            for (int64_t b = i * f[1]; b < std::min(Y, (i + 1) * f[1]); ++b)
              for (int64_t d = j * f[2]; d < std::min(X, (j + 1) * f[2]); ++d, ++n) sum += in[c][a][b][d];
          o[c][k][i][j] = sum / double(n);
        }
  return out;
}

TEST(Pyramid, BlockMeansAverageThePixelsEachBlockHoldsEdgesIncluded) {
  torch::manual_seed(1);
  auto x = torch::rand({2, 5, 13, 10}, torch::kDouble);
  for (std::array<int64_t, 3> f : {std::array<int64_t, 3>{1, 2, 2}, {2, 2, 2}, {1, 4, 4}, {3, 8, 16}}) {
    auto got = qlty::block_mean(x, {f[0], f[1], f[2]});
    EXPECT_TRUE(torch::allclose(got, reference_mean(x, f), 1e-12, 1e-12)) << c10::IntArrayRef(f);
    if (f[0] == 1) EXPECT_TRUE(torch::allclose(qlty::block_mean(x, {f[1], f[2]}), got, 1e-12, 1e-12));
  }
  // the edge pixel of 13 rows in blocks of 2 is row 12 alone, not half of it
  auto ramp = torch::arange(13, torch::kFloat).view({13, 1}).expand({13, 4}).contiguous();
  EXPECT_EQ(qlty::block_mean(ramp, {2, 2})[6][0].item<float>(), 12.0f);
  // integers: rounded from the exact mean, in their dtype; a single axis too
  auto u = torch::randint(0, 30000, {3, 7, 9}, torch::kInt);
  auto m = qlty::block_mean(u, {2, 4});
  EXPECT_EQ(m.scalar_type(), torch::kInt);
  EXPECT_TRUE(torch::equal(m, reference_mean(u.unsqueeze(0), {1, 2, 4}).squeeze(0).round().to(torch::kInt)));
  EXPECT_TRUE(torch::allclose(qlty::block_mean(x, {3}), reference_mean(x, {1, 1, 3})));
  EXPECT_THROW(qlty::block_mean(x, {0, 2}), qlty::ArgumentError);
  EXPECT_THROW(qlty::block_mean(torch::ones({4, 4}, torch::kBool), {2, 2}), qlty::ArgumentError);
}

TEST(Pyramid, EveryLevelIsTheBlockMeanOfLevelZeroWrittenSlabBySlab) {
  qlty_test::TempDir dir("qlty_pyramid");
  torch::manual_seed(2);
  const auto volume = torch::randint(0, 1000, {3, 37, 70, 45}, torch::kShort);  // C, Z, Y, X
  for (bool z : {false, true})
    for (int format : {2, 3}) {
      SCOPED_TRACE(c10::str("downsample_z ", z, " format ", format));
      qlty::PyramidOptions o;
      o.levels = 4;
      o.downsample_z = z;
      o.chunks = {4, 16, 16};
      o.zarr_format = format;
      if (format == 3) o.shards = {8, 32, 32};
      std::vector<std::pair<int64_t, int64_t>> slabs;
      o.progress = [&](int64_t done, int64_t total) { slabs.emplace_back(done, total); };
      const std::string out = dir / c10::str("p", z, format, ".zarr");
      const auto s = qlty::write_pyramid(
          out, volume.sizes().vec(), torch::kShort,
          [&](int64_t z0, int64_t z1) { return volume.narrow(1, z0, z1 - z0); }, o);
      EXPECT_EQ(s.slab_depth, z ? 8 : 4);  // whole blocks of the top level (8 slices) when z is halved
      EXPECT_EQ(slabs.back(), std::make_pair(int64_t{37}, int64_t{37}));
      EXPECT_EQ(int64_t(slabs.size()), (37 + s.slab_depth - 1) / s.slab_depth);
      ASSERT_EQ(s.level_shapes.size(), 4u);
      for (int64_t l = 0; l < 4; ++l) {
        const int64_t f = int64_t{1} << l;
        const auto want = reference_mean(volume, {z ? f : 1, f, f}).round().to(torch::kShort);
        const auto arr = Array::open(out + "/" + std::to_string(l));
        EXPECT_EQ(arr.shape(), want.sizes().vec());
        EXPECT_EQ(arr.sharded(), format == 3);
        EXPECT_TRUE(torch::equal(arr.read(), want)) << "level " << l;
      }
    }
}

TEST(Pyramid, MetadataIsNgffWithUnitsScalesAndTranslations) {
  qlty_test::TempDir dir("qlty_pyramid");
  const auto volume = torch::rand({6, 300, 520});
  auto reader = [&](int64_t z0, int64_t z1) { return volume.narrow(0, z0, z1 - z0); };
  qlty::PyramidOptions o;  // levels automatic: 520 -> 260 -> 130 <= a 256 chunk
  o.unit = "um";
  o.voxel_size = {2.0, 0.5, 0.25};
  o.name = "scan";
  qlty::write_pyramid(dir / "a.zarr", {6, 300, 520}, torch::kFloat, reader, o);
  const auto attrs = qlty::zarr::Group::open(dir / "a.zarr").attributes();
  const auto& m = attrs["multiscales"][0];
  EXPECT_EQ(m["version"], "0.4");
  EXPECT_EQ(m["name"], "scan");
  ASSERT_EQ(m["datasets"].size(), 3u);
  EXPECT_EQ(m["axes"][0], (nlohmann::json{{"name", "z"}, {"type", "space"}, {"unit", "micrometer"}}));
  const auto& t2 = m["datasets"][2]["coordinateTransformations"];
  EXPECT_EQ(t2[0]["scale"], (std::vector<double>{2.0, 2.0, 1.0}));
  EXPECT_EQ(t2[1]["translation"], (std::vector<double>{0.0, 0.75, 0.375}));  // pixel centres of 4-blocks
  EXPECT_EQ(Array::open(dir / "a.zarr/2").shape(), (std::vector<int64_t>{6, 75, 130}));
  EXPECT_EQ(Array::open(dir / "a.zarr/0").metadata().chunks, (std::vector<int64_t>{6, 256, 256}));
  // OME-Zarr 0.5: under "ome", with the version there and the axes as dimension names
  o.zarr_format = 3;
  qlty::write_pyramid(dir / "b.zarr", {6, 300, 520}, torch::kFloat, reader, o);
  const auto b = qlty::zarr::Group::open(dir / "b.zarr").attributes();
  EXPECT_EQ(b["ome"]["version"], "0.5");
  EXPECT_FALSE(b["ome"]["multiscales"][0].contains("version"));
  EXPECT_EQ(Array::open(dir / "b.zarr/1").metadata().dimension_names, (std::vector<std::string>{"z", "y", "x"}));
}

TEST(Pyramid, LaplacianLevelsRebuildEveryLevel) {
  qlty_test::TempDir dir("qlty_pyramid");
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kInt}) {
    SCOPED_TRACE(c10::toString(dtype));
    const auto volume = (torch::rand({2, 5, 61, 83}) * 4000).to(dtype);
    qlty::PyramidOptions o;
    o.levels = 4;
    o.laplacian = true;
    o.chunks = {2, 32, 32};
    const std::string out = dir / c10::str(c10::toString(dtype), ".zarr");
    const auto s = qlty::write_pyramid(
        out, volume.sizes().vec(), dtype, [&](int64_t z0, int64_t z1) { return volume.narrow(1, z0, z1 - z0); }, o);
    EXPECT_EQ(s.laplacian_levels, 3);
    for (int64_t l = 0; l < 3; ++l) {
      const auto stored = Array::open(out + "/" + std::to_string(l)).read();
      const auto rebuilt = qlty::reconstruct_from_laplacian(out, l);
      EXPECT_EQ(rebuilt.scalar_type(), torch::kFloat);
      if (dtype == torch::kInt)
        EXPECT_TRUE(torch::equal(rebuilt.round().to(torch::kInt), stored)) << "level " << l;  // exact
      else
        EXPECT_LT((rebuilt - stored).abs().max().item<float>(), 4000 * 4e-7) << "level " << l;  // float rounding
      // a Laplacian level is the level less its coarser neighbour, upsampled linearly
      const auto lap = Array::open(out + "/laplacian/" + std::to_string(l)).read();
      const auto coarser = Array::open(out + "/" + std::to_string(l + 1)).read();
      const auto up = torch::upsample_bilinear2d(coarser.to(torch::kFloat).flatten(0, 1).unsqueeze(1),
                                                 {stored.size(2), stored.size(3)}, false)
                          .view(stored.sizes());
      EXPECT_TRUE(torch::allclose(lap, stored.to(torch::kFloat) - up, 1e-5, 1e-3));
    }
  }
  EXPECT_THROW(qlty::reconstruct_from_laplacian(dir / "Int.zarr", 4), qlty::ArgumentError);  // 3 Laplacian levels
  qlty::write_pyramid(dir / "plain.zarr", {1, 8, 8}, torch::kFloat,
                      [](int64_t, int64_t) {
                        return torch::zeros({1, 8, 8});
                      },
                      {});
  qlty_test::expect_qlty_error([&] { qlty::reconstruct_from_laplacian(dir / "plain.zarr"); }, "zarr.missing",
                               "holds no Laplacian levels");
}

TEST(Pyramid, BadOptionsAreRefusedNamingThem) {
  qlty_test::TempDir dir("qlty_pyramid");
  auto reader = [](int64_t z0, int64_t z1) { return torch::zeros({z1 - z0, 8, 8}); };
  auto field = [&](const qlty::PyramidOptions& o, std::vector<int64_t> shape = {4, 8, 8}) {
    return qlty_test::argument_field([&] { qlty::write_pyramid(dir / "x.zarr", shape, torch::kFloat, reader, o); });
  };
  qlty::PyramidOptions o;
  o.levels = 17;
  EXPECT_EQ(field(o), "levels");
  o = {};
  o.laplacian = o.downsample_z = true;
  EXPECT_EQ(field(o), "laplacian");
  o = {};
  o.shards = {2, 2, 2};
  EXPECT_EQ(field(o), "shards");
  o = {};
  o.unit = "furlong";
  EXPECT_EQ(field(o), "unit");
  o = {};
  o.voxel_size = {1, -1, 1};
  EXPECT_EQ(field(o), "voxel_size");
  o = {};
  o.chunks = {4, 4};
  EXPECT_EQ(field(o), "chunks");
  EXPECT_EQ(field({}, {8, 8}), "shape");
  auto bad_reader = [](int64_t, int64_t) { return torch::zeros({1, 8, 8}); };
  try {
    qlty::write_pyramid(dir / "y.zarr", {20, 8, 8}, torch::kFloat, bad_reader, {});
    ADD_FAILURE() << "a reader returning the wrong slab was accepted";
  } catch (const qlty::ArgumentError& e) {
    EXPECT_EQ(e.field(), "read");
  }
}

}  // namespace
