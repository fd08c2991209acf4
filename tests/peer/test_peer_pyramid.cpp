// File stacks to OME-Zarr pyramids beside the Python original (qlty 1.5, utils/stack_to_zarr.py's
// stack_files_to_ome_zarr) on the same numbered float32 TIFF slices of odd sizes.
//
// Where they differ on purpose: the original pads an edge block with zeros and divides by the full block (its dask
// coarsen), so its last row and column of every level are darkened (half the mean for an edge block holding half its
// pixels); ours average the pixels an edge block holds. Every pixel whose block lies inside the image is equal.
#include "peer.hpp"

#include <qlty/pyramid.hpp>

#include "formats/stack.hpp"
#include "formats/tiff.hpp"

namespace {

TEST(PeerPyramid, LevelsEqualTheOriginalsWhereTheirBlocksLieInsideTheImage) {
  qlty_test::TempDir dir("qlty_peer_pyramid");
  torch::manual_seed(9);
  const auto volume = torch::rand({6, 45, 38});
  qlty::detail::make_dirs(dir / "in");
  for (int64_t z = 0; z < 6; ++z)  // counters 1..6: the original sorts them numerically too
    qlty::tool::write_tiff(dir / c10::str("in/scan_", z + 1, ".tif"), volume[z].contiguous());
  const int64_t levels = 4;
  qlty_peer::Original original;
  original.add("stack_to_ome_zarr", "p",
               {{"folder", dir / "in"}, {"extension", ".tif"}, {"pattern", "(.+)_(\\d+)\\.tif$"}, {"levels", levels}});
  ASSERT_TRUE(original.run()) << original.log();

  const auto stack = qlty::tool::find_stack(dir / "in", "");
  qlty::PyramidOptions o;
  o.levels = levels;
  qlty::write_pyramid(
      dir / "ours.zarr", stack.shape(), stack.dtype,
      [&](int64_t z0, int64_t z1) { return qlty::tool::read_stack(stack, z0, z1); }, o);
  for (int64_t l = 0; l < levels; ++l) {
    SCOPED_TRACE(c10::str("level ", l));
    const auto ours = qlty::zarr::Array::open(dir / ("ours.zarr/" + std::to_string(l))).read();
    const auto theirs = original.output("p", "level" + std::to_string(l));
    ASSERT_EQ(ours.sizes(), theirs.sizes());                    // both ceil(n / 2^l)
    const int64_t f = int64_t{1} << l, y = 45 / f, x = 38 / f;  // blocks wholly inside
    EXPECT_TRUE(
        torch::allclose(ours.narrow(1, 0, y).narrow(2, 0, x), theirs.narrow(1, 0, y).narrow(2, 0, x), 1e-6, 1e-6));
    if (l == 1) {  // 45 rows: level 1's last row is row 44 alone; the original halves it
      EXPECT_TRUE(torch::allclose(ours.select(1, 22).narrow(1, 0, 19), volume.select(1, 44).view({6, 19, 2}).mean(2)));
      EXPECT_TRUE(torch::allclose(theirs.select(1, 22).narrow(1, 0, 19), ours.select(1, 22).narrow(1, 0, 19) / 2));
    }
  }
}

}  // namespace
