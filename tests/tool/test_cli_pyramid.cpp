// `qlty convert FOLDER OUT.zarr`: numbered 2D images (TIFF, PNG, .npy) in natural order into an OME-Zarr pyramid
// whose levels are block means of the stack; gaps refused unless allowed; files that differ named; RGB slices as
// channels; ome-zarr-py reads the result (0.4 and 0.5); Laplacian levels rebuild level 0; bad flags named.
#include "cli_common.hpp"

#include <qlty/pyramid.hpp>

#include "formats/npy.hpp"
#include "formats/png_preview.hpp"
#include "formats/tiff.hpp"

#include <filesystem>
#include <numeric>

namespace {

using namespace qlty_cli_test;
using qlty::zarr::Array;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_cli_pyramid") {}
};

/// Slices z of `volume` (Z, Y, X) as name_<counters[z]>.npy in dir/in.
void write_npy_stack(const TempDir& dir, const torch::Tensor& volume, const std::vector<int64_t>& counters) {
  qlty::detail::make_dirs(dir / "in");
  for (size_t z = 0; z < counters.size(); ++z)
    qlty::tool::write_npy(dir / ("in/slice_" + std::to_string(counters[z]) + ".npy"), volume[z].contiguous());
}

TEST(CliPyramid, ANumberedStackInNaturalOrderBecomesBlockMeanLevels) {
  TempDir dir;
  torch::manual_seed(7);
  const auto volume = torch::rand({12, 70, 90});
  // counters 1..12 written out of order: name order would put 10, 11, 12 before 2
  std::vector<int64_t> counters(12);
  std::iota(counters.begin(), counters.end(), 1);
  write_npy_stack(dir, volume, counters);
  auto r = run({"convert", dir / "in", dir / "out.zarr", "--chunks", "4,32,32", "--levels", "3", "--unit", "nm",
                "--voxel-size", "40,8,8"},
               dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("12 .npy files"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 levels (12x70x90, 12x35x45, 12x18x23)"), std::string::npos) << r.out;
  EXPECT_TRUE(torch::equal(Array::open(dir / "out.zarr/0").read(), volume));
  for (int64_t l = 1; l < 3; ++l)
    EXPECT_TRUE(torch::allclose(Array::open(dir / ("out.zarr/" + std::to_string(l))).read(),
                                qlty::block_mean(volume, {int64_t{1} << l, int64_t{1} << l})))
        << "level " << l;
  const auto attrs = qlty::zarr::Group::open(dir / "out.zarr").attributes();
  EXPECT_EQ(attrs["multiscales"][0]["axes"][1]["unit"], "nanometer");
  EXPECT_EQ(attrs["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"],
            (std::vector<double>{40, 16, 16}));
  EXPECT_EQ(attrs["source"]["files"][1], "slice_2.npy");
  EXPECT_EQ(attrs["source"]["files"][9], "slice_10.npy");
#ifdef QLTY_VENV_PYTHON
  const std::string check = std::string(QLTY_VENV_PYTHON) + " " + QLTY_OME_ZARR_PYRAMID_CHECK + " " + dir / "out.zarr" +
                            " 3 zyx > " + dir / "check.txt" + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << slurp(dir / "check.txt");
#endif
}

TEST(CliPyramid, GapsAreRefusedUnlessAllowedAndMismatchedFilesAreNamed) {
  TempDir dir;
  const auto volume = torch::rand({4, 16, 16});
  write_npy_stack(dir, volume, {3, 4, 7, 9});
  expect_fails(run({"convert", dir / "in", dir / "out.zarr"}, dir.path),
               {"gaps", "counters 5-6, 8 (3 missing) between 3 and 9", "--allow-gaps"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "out.zarr"));
  auto r = run({"convert", dir / "in", dir / "out.zarr", "--allow-gaps", "-q"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_TRUE(torch::equal(Array::open(dir / "out.zarr/0").read(), volume));
  // a slice of another shape, another kind of file, a pattern without a group
  qlty::tool::write_npy(dir / "in/slice_10.npy", torch::rand({16, 15}));
  expect_fails(run({"convert", dir / "in", dir / "b.zarr", "--allow-gaps"}, dir.path),
               {"slice_10.npy", "[16, 15]", "slice_3.npy", "every slice must match"});
  // nothing is left of the failed run: no output, no partial one beside it
  EXPECT_FALSE(qlty::detail::path_exists(dir / "b.zarr"));
  for (const auto& e : std::filesystem::directory_iterator(dir.path))
    EXPECT_NE(e.path().filename().string().rfind(".b.zarr", 0), 0u) << e.path();
  qlty::tool::write_png(dir / "in/slice_11.png", torch::zeros({16, 16}));
  expect_fails(run({"convert", dir / "in", dir / "b.zarr", "--allow-gaps"}, dir.path), {"several kinds", "--pattern"});
  expect_fails(run({"convert", dir / "in", dir / "b.zarr", "--pattern", "slice_\\d+\\.npy"}, dir.path),
               {"--pattern", "exactly one capture group"});
  expect_fails(run({"convert", dir / "in", dir / "b.zarr", "--pattern", "nothing_(\\d+)\\.tif"}, dir.path),
               {"no numbered files matching --pattern"});
  // flags that belong to pyramids, on a plain conversion
  qlty::tool::write_npy(dir / "v.npy", volume);
  expect_fails(run({"convert", dir / "v.npy", dir / "c.zarr", "--unit", "um"}, dir.path), {"--unit", "pyramids"});
  expect_fails(run({"convert", dir / "in", dir / "c.tif", "--pattern", "slice_(\\d+)\\.npy"}, dir.path),
               {"OME-Zarr", "c.tif"});
  expect_fails(run({"convert", dir / "v.npy", dir / "c.zarr", "--levels", "3", "--unit", "furlong"}, dir.path),
               {"unit", "furlong"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "c.zarr"));
  // --overwrite replaces a Zarr output, never a folder of something else
  qlty_test::write_text(dir / "keep/notes.txt", "mine");
  expect_fails(run({"convert", dir / "in", dir / "keep", "--allow-gaps", "--overwrite"}, dir.path),
               {"not a Zarr node", "keep"});
  EXPECT_EQ(slurp(dir / "keep/notes.txt"), "mine");
  r = run({"convert", dir / "in", dir / "out.zarr", "--allow-gaps", "--overwrite", "--levels", "1", "-q", "--pattern",
           "slice_([0-9])\\.npy"},  // leaves out slice_10, of another shape
          dir.path);
  EXPECT_EQ(r.code, 0) << r.err;  // the earlier out.zarr, replaced
  EXPECT_EQ(qlty::zarr::Group::open(dir / "out.zarr").attributes()["qlty"]["levels"], 1);
}

TEST(CliPyramid, PngAndRgbTiffSlicesAndAVolumeFileMakeZarrV3Pyramids) {
  TempDir dir;
  qlty::detail::make_dirs(dir / "png");
  const auto gray = torch::randint(0, 256, {3, 40, 50}).to(torch::kByte);
  for (int z = 0; z < 3; ++z) qlty::tool::write_png(dir / ("png/p" + std::to_string(z) + ".png"), gray[z]);
  auto r = run({"convert", dir / "png", dir / "png.zarr", "--zarr-format", "3", "--levels", "2", "-q"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::equal(Array::open(dir / "png.zarr/0").read(), gray));
  EXPECT_TRUE(torch::equal(Array::open(dir / "png.zarr/1").read(), qlty::block_mean(gray, {2, 2})));
  // RGB TIFF slices: channels first, in NGFF order (c, z, y, x)
  qlty::detail::make_dirs(dir / "rgb");
  const auto rgb = torch::randint(0, 60000, {3, 2, 24, 20}).to(torch::kInt);  // C, Z, Y, X
  for (int z = 0; z < 2; ++z)
    qlty::tool::write_tiff(dir / ("rgb/s" + std::to_string(z) + ".tif"), rgb.select(1, z).unsqueeze(0).contiguous());
  r = run(
      {"convert", dir / "rgb", dir / "rgb.zarr", "--shards", "2,32,32", "--chunks", "1,16,16", "--levels", "2", "-q"},
      dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::equal(Array::open(dir / "rgb.zarr/0").read(), rgb));
  EXPECT_TRUE(Array::open(dir / "rgb.zarr/0").sharded());
  EXPECT_EQ(Array::open(dir / "rgb.zarr/1").shape(), (std::vector<int64_t>{3, 2, 12, 10}));
  // a volume in one file, with --levels; z halved too
  const auto vol = torch::rand({9, 20, 20});
  qlty::tool::write_npy(dir / "vol.npy", vol);
  r = run({"convert", dir / "vol.npy", dir / "vol.zarr", "--levels", "3", "--pyramid-z", "--zarr-format", "3", "-q"},
          dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(torch::allclose(Array::open(dir / "vol.zarr/2").read(), qlty::block_mean(vol, {4, 4, 4})));
#ifdef QLTY_VENV_PYTHON
  for (auto [path, axes] : {std::make_pair(dir / "rgb.zarr", "czyx"), std::make_pair(dir / "vol.zarr", "zyx")}) {
    const std::string check = std::string(QLTY_VENV_PYTHON) + " " + QLTY_OME_ZARR_PYRAMID_CHECK + " " + path +
                              (std::string(axes) == "czyx" ? " 2 " : " 3 ") + axes + " > " + dir / "check.txt" +
                              " 2>&1";
    EXPECT_EQ(std::system(check.c_str()), 0) << path << ": " << slurp(dir / "check.txt");
  }
#endif
}

TEST(CliPyramid, LaplacianLevelsRebuildLevelZero) {
  TempDir dir;
  const auto volume = torch::randint(0, 4096, {5, 33, 47}).to(torch::kShort);
  write_npy_stack(dir, volume, {0, 1, 2, 3, 4});
  auto r =
      run({"convert", dir / "in", dir / "lap.zarr", "--laplacian", "--levels", "3", "--chunks", "2,16,16"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 Laplacian"), std::string::npos) << r.out;
  EXPECT_TRUE(torch::equal(qlty::reconstruct_from_laplacian(dir / "lap.zarr").round().to(torch::kShort), volume));
  expect_fails(run({"convert", dir / "in", dir / "z.zarr", "--laplacian", "--pyramid-z"}, dir.path),
               {"Laplacian", "y and x only"});
}

}  // namespace
