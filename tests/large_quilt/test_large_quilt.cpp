// qlty/large_quilt.hpp: results equal the in-memory quilt's, with and without std and patch variances, through
// small caches; resume after a clean stop and after kill -9 at random points gives identical bytes; bad input.
#include "../common.hpp"

#include <fstream>
#include <iterator>

#include <qlty/large_quilt.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace {

using torch::indexing::Slice;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_large") {}
};

template <int D>
struct Ref {
  torch::Tensor mean, std;
};

/// The in-memory answer: mean = stitch(p); std = sqrt(max(stitch(p^2) - mean^2, 0) + stitch(var)).
template <int D>
Ref<D> reference(const qlty::Quilt<D>& q, const torch::Tensor& p, const torch::Tensor& var) {
  auto [mean, w] = q.stitch(p);
  auto [m2, w2] = q.stitch(p * p);
  auto spread = (m2 - mean * mean).clamp_min(0);
  if (var.defined()) spread = spread + std::get<0>(q.stitch(var));
  return {mean, spread.sqrt()};
}

template <int D, typename Large>
void check_against_memory(Large& large, const qlty::Quilt<D>& q, int64_t C, bool with_var, double tol) {
  const int64_t M = large.N_chunks();
  std::vector<int64_t> shape{M, C};
  for (int a = 0; a < D; ++a) shape.push_back(q.geometry().window()[a]);
  torch::manual_seed(3);
  auto p = torch::randn(shape);
  auto var = with_var ? torch::rand(shape) : torch::Tensor();
  for (int64_t i = 0; i < M; ++i) {
    if (with_var)
      large.stitch(p[i], i, var[i]);
    else
      large.stitch(p[i].unsqueeze(0), i);
  }
  auto [mean, sd] = large.return_mean(true);
  const auto ref = reference<D>(q, p, var);
  EXPECT_TRUE(torch::allclose(mean, ref.mean, 1e-5, 1e-5)) << (mean - ref.mean).abs().max();
  EXPECT_TRUE(torch::allclose(sd, ref.std, tol, tol)) << (sd - ref.std).abs().max();
  // The Zarr outputs hold the same values.
  auto m = qlty::zarr::Array::open(large.prefix() + "_mean.zarr").read();
  EXPECT_TRUE(torch::equal(m, mean));
  auto s = qlty::zarr::Array::open(large.prefix() + "_std.zarr").read();
  EXPECT_TRUE(torch::equal(s, sd));
}

TEST(LargeQuilt, Stitch2DEqualsTheInMemoryQuilt) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  qlty::LargeNCYXQuilt large(dir / "a", 3, 37, 50, {12, 10}, {5, 4}, {2, 3}, 0.2, o);
  qlty::NCYXQuilt q(37, 50, {12, 10}, {5, 4}, {2, 3}, 0.2);
  EXPECT_EQ(large.N_chunks(), 3 * q.patches_per_image());
  EXPECT_EQ(large.get_times(), q.get_times());
  EXPECT_TRUE(torch::equal(large.border_tensor(), q.border_tensor()));
  check_against_memory<2>(large, q, 3, false, 2e-3);
#ifdef QLTY_ZARR_PYTHON
  // zarr-python opens the outputs and finds the same values (compared through their sums in float64).
  const std::string cmd = std::string(QLTY_ZARR_PYTHON) + " -c \"import zarr,numpy as np; m=zarr.open('" +
                          large.prefix() + "_mean.zarr','r'); s=zarr.open('" + large.prefix() +
                          "_std.zarr','r'); print(m.shape, m.dtype, repr(float(np.sum(m[...], dtype=np.float64))), "
                          "repr(float(np.sum(s[...], dtype=np.float64))))\" 2>/dev/null";
  FILE* f = ::popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[512] = {0};
  const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
  const int rc = ::pclose(f);
  if (rc != 0 && !got) GTEST_SKIP() << "zarr-python is not available";
  ASSERT_TRUE(got);
  const auto mean = qlty::zarr::Array::open(large.prefix() + "_mean.zarr").read().to(torch::kDouble);
  const auto sd = qlty::zarr::Array::open(large.prefix() + "_std.zarr").read().to(torch::kDouble);
  std::ostringstream want;
  want << "(3, 3, 37, 50) float32 ";
  const std::string line(buf);
  ASSERT_EQ(line.rfind(want.str(), 0), 0u) << line;
  double ms = 0, ss = 0;
  ASSERT_EQ(std::sscanf(buf + want.str().size(), "%lf %lf", &ms, &ss), 2) << line;
  EXPECT_NEAR(ms, mean.sum().item<double>(), 1e-9 * (1 + std::abs(ms)));
  EXPECT_NEAR(ss, sd.sum().item<double>(), 1e-9 * (1 + std::abs(ss)));
#endif
}

TEST(LargeQuilt, Stitch3DWithVariancesThroughATinyCache) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.cache_bytes = 20 << 10;  // a few chunks: constant eviction and checkpoints
  o.durable = false;
  qlty::LargeNCZYXQuilt large(dir / "v", 2, 19, 17, 21, 8, {4, 5, 6}, 1, 0.5, o);
  qlty::NCZYXQuilt q(19, 17, 21, 8, {4, 5, 6}, 1, 0.5);
  check_against_memory<3>(large, q, 2, true, 2e-3);
  EXPECT_GT(large.spills(), 5);  // changed chunks went to staged files and came back
  EXPECT_LE(large.cached_bytes(), 20 << 10);
}

// A spill that cannot be written (the array's folder replaced by a file) is an error that loses nothing: the
// chunks stay in the cache, and once the folder is back the run ends with the in-memory quilt's results.
TEST(LargeQuilt, ASpillThatCannotBeWrittenLosesNothing) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.cache_bytes = 12 << 10;
  o.durable = false;
  qlty::LargeNCYXQuilt large(dir / "s", 2, 40, 44, 8, 4, 1, 0.2, o);
  qlty::NCYXQuilt q(40, 44, 8, 4, 1, 0.2);
  torch::manual_seed(9);
  auto p = torch::randn({large.N_chunks(), 2, 8, 8});
  const int64_t half = large.N_chunks() / 2;
  for (int64_t i = 0; i < half; ++i) large.stitch(p[i], i);
  ASSERT_GT(large.spills(), 0);
  const std::string sum = dir / "s_acc.zarr/sum", aside = dir / "sum.aside";
  ASSERT_EQ(::rename(sum.c_str(), aside.c_str()), 0);
  qlty_test::write_text(sum, "not a folder");
  int failures = 0;
  for (int64_t i = half; i < large.N_chunks() && failures < 3; ++i) {
    try {
      large.stitch(p[i], i);
    } catch (const qlty::Error&) {
      ++failures;
    }
  }
  EXPECT_GT(failures, 0);
  ASSERT_EQ(::unlink(sum.c_str()), 0);
  ASSERT_EQ(::rename(aside.c_str(), sum.c_str()), 0);
  for (auto i : large.missing_indices()) large.stitch(p[i], i);
  auto mean = std::get<0>(large.return_mean());
  auto ref = std::get<0>(q.stitch(p));
  EXPECT_TRUE(torch::allclose(mean, ref, 1e-5, 1e-5)) << (mean - ref).abs().max();
}

// stitch(indices, patches): the bytes of stitching one by one in the same order, on one thread or two, through a
// small cache (spills and checkpoints inside a batch); unstitch(x, indices) stacks the windows. A bad batch adds
// nothing.
TEST(LargeQuilt, BatchedCallsEqualOneByOne) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  o.cache_bytes = 64 << 10;
  o.checkpoint_every = 7;
  const int threads = at::get_num_threads();
  auto x = torch::randn({2, 3, 19, 17, 21});
  std::vector<torch::Tensor> means;
  for (int mode = 0; mode < 3; ++mode) {  // one by one; batches on 1 thread; batches on 2 threads
    at::set_num_threads(mode == 2 ? 2 : 1);
    qlty::LargeNCZYXQuilt large(dir / ("b" + std::to_string(mode)), 2, 19, 17, 21, 8, {4, 5, 6}, 1, 0.3, o);
    std::vector<int64_t> order(large.N_chunks());
    for (int64_t i = 0; i < large.N_chunks(); ++i) order[i] = (i * 7) % large.N_chunks();  // a permutation
    ASSERT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), order.size());
    if (mode == 0) {
      for (auto i : order) large.stitch(large.unstitch(x, i) * 2 + 1, i, large.unstitch(x, i).abs());
    } else {
      for (size_t b = 0; b < order.size(); b += 11) {
        std::vector<int64_t> idx(order.begin() + b, order.begin() + std::min(order.size(), b + 11));
        auto p = large.unstitch(x, idx);
        ASSERT_EQ(p.size(0), static_cast<int64_t>(idx.size()));
        EXPECT_TRUE(torch::equal(p[0], large.unstitch(x, idx[0])));
        large.stitch(idx, p * 2 + 1, p.abs());
      }
    }
    EXPECT_TRUE(large.missing_indices().empty());
    auto [m, sd] = large.return_mean(true);
    means.push_back(torch::cat({m, sd}));
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(means[0], means[1]));
  EXPECT_TRUE(torch::equal(means[0], means[2]));

  // All or nothing: a duplicate index, an index already stitched, a wrong count or shape add nothing.
  qlty::LargeNCYXQuilt q(dir / "bad", 1, 20, 20, 8, 4, 1, 0.1, o);
  auto img = torch::randn({1, 2, 20, 20});
  q.stitch({0, 1}, q.unstitch(img, std::vector<int64_t>{0, 1}));
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.stitch({2, 3, 2}, q.unstitch(img, std::vector<int64_t>{2, 3, 2}));
      },
      {"LargeNCYXQuilt.stitch", "index 2 appears twice"});
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.stitch({4, 1}, q.unstitch(img, std::vector<int64_t>{4, 1}));
      },
      {"index 1 was already stitched"});
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.stitch({4, 5}, q.unstitch(img, std::vector<int64_t>{4}));
      },
      {"B = 2 (the number of indices)"});
  qlty_test::expect_error<c10::IndexError>(
      [&] {
        q.stitch({4, 99}, torch::zeros({2, 2, 8, 8}));
      },
      {"index must be in [0, 16)", "got 99"});
  qlty_test::expect_error<c10::ValueError>(
      [&] {
        q.stitch({4, 5}, torch::zeros({2, 3, 8, 8}));
      },
      {"3 channels, but 2 were stitched before"});
  EXPECT_EQ(q.missing_indices().size(), 14u);
  EXPECT_FALSE(q.is_stitched(2) || q.is_stitched(4) || q.is_stitched(5));
}

// stitch_order(): every index once; index order when the cache holds a row of windows; tiles (back and forth
// along Z) with a small cache, which read fewer chunks back and give the same values to rounding.
TEST(LargeQuilt, StitchOrderVisitsEveryPatchOnceAndRereadsLess) {
  TempDir dir;
  qlty::LargeQuiltOptions big;
  big.durable = false;
  qlty::LargeNCZYXQuilt roomy(dir / "roomy", 1, 24, 160, 160, 12, 8, 2, 0.1, big);
  std::vector<int64_t> index_order(roomy.N_chunks());
  for (int64_t i = 0; i < roomy.N_chunks(); ++i) index_order[i] = i;
  EXPECT_EQ(roomy.stitch_order(1), index_order);

  // A cache of 3.5 MiB for 4.9 MiB of accumulators (chunks of 24 x 56 x 56: 602 KiB a place, sum and sum_sq).
  qlty::LargeQuiltOptions small = big;
  small.cache_bytes = int64_t(3584) << 10;
  auto x = torch::randn({1, 1, 24, 160, 160});
  qlty::NCZYXQuilt q(24, 160, 160, 12, 8, 2, 0.1);
  auto [want, w] = q.stitch(q.unstitch(x) * 3);
  std::vector<int64_t> reloads;
  for (int mode = 0; mode < 2; ++mode) {
    qlty::LargeNCZYXQuilt large(dir / ("o" + std::to_string(mode)), 1, 24, 160, 160, 12, 8, 2, 0.1, small);
    const auto t = large.get_times();  // 3 x 20 x 20 windows
    auto order = mode ? large.stitch_order(1) : index_order;
    if (mode) {
      EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), order.size());
      EXPECT_EQ(order.size(), index_order.size());
      // The first tile: 6 x 6 windows across Y and X (the most whose 2 x 2 chunks fit 3/4 of the cache), down
      // all of Z; the second runs back up along Z.
      for (size_t k = 0; k < 108; ++k) {
        const int64_t kz = order[k] / (t[1] * t[2]), ky = order[k] / t[2] % t[1], kx = order[k] % t[2];
        ASSERT_TRUE(ky < 6 && kx < 6) << k;
        ASSERT_EQ(kz, static_cast<int64_t>(k / 36));
      }
      EXPECT_EQ(order[108] / (t[1] * t[2]), t[0] - 1);
      EXPECT_EQ(order[108] % t[2], 6);
    }
    for (auto i : order) large.stitch(large.unstitch(x, i) * 3, i);
    auto mean = std::get<0>(large.return_mean());
    EXPECT_TRUE(torch::allclose(mean, want, 1e-5, 1e-5)) << "mode " << mode;
    reloads.push_back(large.reloads());
  }
  EXPECT_GT(reloads[0], 0);
  EXPECT_LT(reloads[1] * 2, reloads[0]) << reloads[1] << " vs " << reloads[0];
}

TEST(LargeQuilt, WithoutStdOnlyTheSumIsKept) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.track_std = false;
  o.durable = false;
  o.cache_bytes = 8 << 10;
  qlty::LargeNCYXQuilt large(dir / "m", 2, 24, 30, 8, 5, 1, 0.3, o);
  qlty::NCYXQuilt q(24, 30, 8, 5, 1, 0.3);
  auto p = torch::randn({large.N_chunks(), 2, 8, 8});
  qlty_test::expect_error<c10::ValueError>([&] { large.stitch(p[0], 0, p[0]); }, {"patch_var needs track_std"});
  for (int64_t i = 0; i < large.N_chunks(); ++i) large.stitch(p[i], i);
  qlty_test::expect_error<c10::ValueError>([&] { large.return_mean(true); }, {"std needs track_std"});
  EXPECT_TRUE(torch::allclose(std::get<0>(large.return_mean()), std::get<0>(q.stitch(p)), 1e-5, 1e-5));
  EXPECT_FALSE(qlty::detail::path_exists(dir / "m_acc.zarr/sum_sq"));
  EXPECT_FALSE(qlty::detail::path_exists(dir / "m_acc.zarr/weight"));  // derived from the stitched list
  // Nothing staged is left behind after a checkpoint.
  for (const auto& f : qlty::detail::list_dir(dir / "m_acc.zarr/sum"))
    EXPECT_EQ(f.find(".ckpt."), std::string::npos) << f;
}

// Images stitched differently have different weight sums: an image with windows missing, one with a window
// added twice, and one complete (return_mean shares a weight computation only between images stitched alike).
TEST(LargeQuilt, ImagesStitchedDifferentlyKeepTheirOwnWeights) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  o.allow_restitch = true;
  o.cache_bytes = 4096;  // chunks come back from disk for the results
  qlty::LargeNCYXQuilt large(dir / "w", 3, 24, 30, 8, 5, 1, 0.3, o);
  qlty::NCYXQuilt q(24, 30, 8, 5, 1, 0.3);
  const int64_t P = q.patches_per_image();
  torch::manual_seed(5);
  auto p = torch::randn({3 * P, 2, 8, 8});
  auto times = torch::ones({3 * P});  // how often each window is added
  for (int64_t i = P; i < 2 * P; i += 2) times[i] = 0;
  times[2 * P + 3] = 2;
  for (int64_t i = 0; i < 3 * P; ++i)
    for (int64_t t = 0; t < times[i].item<int64_t>(); ++t) large.stitch(p[i], i);
  auto [mean, sd] = large.return_mean(true);
  // The reference from the in-memory quilt: sum_i t_i w_i p_i / sum_i t_i w_i, 0 where no window was added.
  const auto m = times.view({3 * P, 1, 1, 1});
  auto [all_mean, wsum] = q.stitch(torch::ones_like(p));
  auto added = std::get<0>(q.stitch(p * m)) * wsum, weights = std::get<0>(q.stitch(torch::ones_like(p) * m)) * wsum;
  auto expected = torch::where(weights > 0, added / weights, torch::zeros_like(added));
  EXPECT_TRUE(torch::allclose(mean, expected, 1e-5, 1e-5)) << (mean - expected).abs().max();
  EXPECT_GT((weights.select(0, 1) == 0).sum().item<int64_t>(), 0);  // image 1 has pixels no window reached
  EXPECT_TRUE(torch::equal(mean.select(0, 1).masked_select(weights.select(0, 1) == 0),
                           torch::zeros({(weights.select(0, 1) == 0).sum().item<int64_t>()})));
  auto sq = std::get<0>(q.stitch(p * p * m)) * wsum;
  auto spread = torch::where(weights > 0, sq / weights - expected * expected, torch::zeros_like(sq)).clamp_min(0);
  // compared squared: near 0 the square root magnifies the reference's own rounding
  EXPECT_TRUE(torch::allclose(sd * sd, spread, 1e-4, 1e-5)) << (sd * sd - spread).abs().max();
}

TEST(LargeQuilt, NormalizeDividesBySumOverChannels) {
  TempDir dir;
  qlty::LargeNCYXQuilt large(dir / "n", 1, 16, 16, 8, 4, 1, 0.1);
  qlty::NCYXQuilt q(16, 16, 8, 4, 1, 0.1);
  auto p = torch::rand({large.N_chunks(), 3, 8, 8}) + 0.1;
  for (int64_t i = 0; i < large.N_chunks(); ++i) large.stitch(p[i], i);
  auto [mean, sd] = large.return_mean(false, true);
  EXPECT_FALSE(sd.defined());
  auto ref = std::get<0>(q.stitch(p));
  EXPECT_TRUE(torch::allclose(mean, ref / ref.sum(1, true), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(mean.sum(1), torch::ones({1, 16, 16}), 1e-5, 1e-5));
}

TEST(LargeQuilt, UnstitchFromTensorsAndZarrArrays) {
  TempDir dir;
  qlty::LargeNCYXQuilt large(dir / "u", 2, 20, 24, 8, 6, 1, 0.1);
  qlty::NCYXQuilt q(20, 24, 8, 6, 1, 0.1);
  auto x = torch::randn({2, 3, 20, 24});
  auto ref = q.unstitch(x);
  qlty::zarr::ArrayOptions ao({2, 3, 20, 24}, {1, 3, 7, 7});
  auto arr = qlty::zarr::Array::create(dir / "x.zarr", ao);
  arr.write({0, 0, 0, 0}, x);
  for (int64_t i = 0; i < large.N_chunks(); ++i) {
    auto [idx, patch] = large.unstitch_next(x);
    ASSERT_EQ(idx, i);
    ASSERT_TRUE(torch::equal(patch, ref[i]));
    ASSERT_TRUE(torch::equal(large.unstitch(arr, i), ref[i]));
  }
  EXPECT_EQ(large.unstitch_next(x).first, 0);  // wraps around
}

#if QLTY_HAS_UNSIGNED_DTYPES
// uint16/32/64 Zarr inputs (LibTorch 2.3+) unstitch as themselves, range edges included, through every padding:
// bit for bit the windows of the same values held as int64 (uint64's 2^64 - 1 as the int64 bits -1).
TEST(LargeQuilt, UnsignedZarrInputsUnstitchAsThemselves) {
  TempDir dir;
  torch::manual_seed(5);
  const auto bits = torch::randint(0, 1000, {1, 2, 10, 12}, torch::kLong);
  for (auto pad : {qlty::Pad::constant(0), qlty::Pad::reflect(), qlty::Pad::replicate()})
    for (auto [type, top] :
         std::vector<std::pair<qlty::zarr::DataType, int64_t>>{{qlty::zarr::DataType::UInt16, 65535},
                                                               {qlty::zarr::DataType::UInt32, 4294967295},
                                                               {qlty::zarr::DataType::UInt64, -1}}) {
      auto values = bits.clone();
      values[0][1][9][11] = top, values[0][0][0][0] = top - 1;
      const auto dtype = qlty::zarr::scalar_type(type);
      const auto as_type = type == qlty::zarr::DataType::UInt64 ? values.view(dtype) : values.to(dtype);
      const std::string name = std::string(qlty::zarr::name(type)) + std::to_string(int(pad.mode()));
      auto arr = qlty::zarr::Array::create(dir / (name + ".zarr"),
                                           qlty::zarr::ArrayOptions({1, 2, 10, 12}, {1, 2, 4, 5}, type));
      arr.write({0, 0, 0, 0}, as_type);
      auto ref_arr = qlty::zarr::Array::create(
          dir / (name + ".i64.zarr"),
          qlty::zarr::ArrayOptions({1, 2, 10, 12}, {1, 2, 4, 5}, qlty::zarr::DataType::Int64));
      ref_arr.write({0, 0, 0, 0}, values);
      qlty::LargeQuiltOptions o;
      o.pad = pad;
      qlty::LargeNCYXQuilt large(dir / name, 1, 10, 12, 16, 8, 0, 0.1, o);  // windows larger than the image
      for (int64_t i = 0; i < large.N_chunks(); ++i) {
        const auto got = large.unstitch(arr, i), want = large.unstitch(ref_arr, i);
        ASSERT_EQ(got.scalar_type(), dtype) << name;
        const auto got_bits = type == qlty::zarr::DataType::UInt64 ? got.view(torch::kLong) : got.to(torch::kLong);
        EXPECT_TRUE(torch::equal(got_bits, want)) << name << " window " << i;
      }
    }
}
#endif

TEST(LargeQuilt, CleanSparseDataPairKeepsLabelledWindows) {
  TempDir dir;
  qlty::LargeNCYXQuilt large(dir / "s", 2, 32, 32, 8, 8, 2, 0.1);
  auto x = torch::randn({2, 1, 32, 32});
  auto y = torch::full({2, 32, 32}, -1.0);
  y.index_put_({0, Slice(10, 12), Slice(10, 12)}, 1.0);  // inside window (1,1)'s interior only
  auto [xk, yk] = large.unstitch_and_clean_sparse_data_pair(x, y, -1);
  ASSERT_EQ(xk.size(0), 1);
  EXPECT_TRUE(torch::equal(xk[0], x[0].index({Slice(), Slice(8, 16), Slice(8, 16)})));
}

TEST(LargeQuilt, ResumeAfterACleanStopAndRefuseOtherParameters) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  qlty::NCYXQuilt q(30, 30, 10, 5, 2, 0.1);
  const int64_t M = q.patches_per_image() * 2;
  torch::manual_seed(5);
  auto p = torch::randn({M, 2, 10, 10});
  {
    qlty::LargeNCYXQuilt a(dir / "r", 2, 30, 30, 10, 5, 2, 0.1, o);
    for (int64_t i = 0; i < M; i += 2) a.stitch(p[i], i);
  }  // the destructor checkpoints
  {
    qlty::LargeNCYXQuilt b(dir / "r", 2, 30, 30, 10, 5, 2, 0.1, o);
    const auto missing = b.missing_indices();
    ASSERT_EQ(static_cast<int64_t>(missing.size()), M / 2);
    for (auto i : missing) {
      ASSERT_EQ(i % 2, 1);
      b.stitch(p[i], i);
    }
    EXPECT_TRUE(b.missing_indices().empty());
    auto [mean, sd] = b.return_mean();
    EXPECT_TRUE(torch::allclose(mean, std::get<0>(q.stitch(p)), 1e-5, 1e-5));
  }  // closed: the prefix's lock is free again
  try {
    qlty::LargeNCYXQuilt c(dir / "r", 2, 30, 30, 10, 4, 2, 0.1, o);
    ADD_FAILURE() << "other parameters were accepted";
  } catch (const qlty::Error& e) {
    EXPECT_EQ(e.tag(), "checkpoint");
    EXPECT_NE(std::string(e.what()).find("other parameters"), std::string::npos) << e.what();
  }
}

TEST(LargeQuilt, BadInputIsAClearErrorAndKeepsTheCheckpoint) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  qlty::LargeNCYXQuilt a(dir / "b", 1, 16, 16, 8, 4, 1, 0.1, o);
  a.stitch(torch::ones({2, 8, 8}), 0);
  using qlty_test::expect_error;
  expect_error<c10::IndexError>(
      [&] {
        a.stitch(torch::ones({2, 8, 8}), a.N_chunks());
      },
      {"index must be in [0, 9)", "got 9"});
  expect_error<c10::IndexError>([&] { a.stitch(torch::ones({2, 8, 8}), -1); }, {"index must be in"});
  expect_error<c10::ValueError>([&] { a.stitch(torch::ones({2, 8, 7}), 1); }, {"must have shape (C, [8, 8])"});
  expect_error<c10::ValueError>([&] { a.stitch(torch::ones({3, 8, 8}), 1); }, {"has 3 channels, but 2"});
  expect_error<c10::ValueError>([&] { a.stitch(torch::ones({2, 8, 8}), 0); }, {"index 0 was already stitched"});
  expect_error<c10::ValueError>([&] { a.stitch(torch::ones({2, 2, 8, 8}), 1); }, {"leading axis must have size 1"});
  expect_error<c10::TypeError>([&] { a.stitch(torch::ones({2, 8, 8}, torch::kInt), 1); }, {"floating point"});
  expect_error<c10::ValueError>([&] { a.stitch(torch::ones({2, 8, 8}), 1, torch::ones({2, 8, 7})); }, {"patch_var"});
  a.checkpoint();
  // A prefix that cannot be written: its folder is a file.
  qlty::detail::atomic_write(dir / "file", "x", false);
  try {
    qlty::LargeNCYXQuilt bad(dir / "file/sub", 1, 16, 16, 8, 4, 1, 0.1, o);
    ADD_FAILURE() << "a prefix under a file was accepted";
  } catch (const qlty::Error& e) {
    EXPECT_EQ(e.tag(), "io") << e.what();
  }
  // allow_restitch adds twice.
  qlty::LargeQuiltOptions twice = o;
  twice.allow_restitch = true;
  qlty::LargeNCYXQuilt t(dir / "t", 1, 8, 8, 8, 4, 0, 1.0, twice);
  t.stitch(torch::ones({1, 8, 8}), 0);
  t.stitch(torch::ones({1, 8, 8}), 0);
  EXPECT_TRUE(torch::equal(std::get<0>(t.return_mean()), torch::ones({1, 1, 8, 8})));
}

// The journaled checkpoint on its own: a commit renames every staged file; a journal written by a process that
// died before renaming is finished by recover(), which also removes staged files no journal names.
// The chunk store on its own: chunks that leave a full cache are spilled and read back with their values, and
// the arrays keep the last checkpoint until the staged changes are committed.
TEST(LargeQuilt, OneQuiltAtATimeOnAPrefix) {
  // Two quilts on one prefix (two processes, or two objects) would each stitch into their own cache and overwrite
  // each other's checkpoints: the second is refused while the first is open, and welcome after.
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  auto p = torch::ones({1, 8, 8});
  {
    qlty::LargeNCYXQuilt a(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o);
    a.stitch(p, 0);
    qlty_test::expect_error<qlty::Error>([&] { qlty::LargeNCYXQuilt b(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o); },
                                         {"[qlty.lock]", "q_acc.zarr", "another quilt has this prefix open"});
  }
  qlty::LargeNCYXQuilt c(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o);
  EXPECT_TRUE(c.is_stitched(0));
  EXPECT_FALSE(c.is_stitched(1));
}

TEST(LargeQuilt, AnInputAmongItsOwnOutputsIsRefused) {
  // Reading the input from <prefix>_mean.zarr: return_mean would overwrite it.
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  auto x = torch::randn({1, 1, 16, 16});
  qlty::zarr::Array::create(dir / "q_mean.zarr", qlty::zarr::ArrayOptions({1, 1, 16, 16}, {1, 1, 8, 8}))
      .write({0, 0, 0, 0}, x);
  qlty::LargeNCYXQuilt q(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o);
  const auto in = qlty::zarr::Array::open(dir / "q_mean.zarr");
  qlty_test::expect_error<qlty::Error>([&] { q.unstitch(in, 0); },
                                       {"[qlty.overlap]", "q_mean.zarr", "which this quilt writes"});
  qlty::zarr::Array::create(dir / "other.zarr", qlty::zarr::ArrayOptions({1, 1, 16, 16}, {1, 1, 8, 8}))
      .write({0, 0, 0, 0}, x);
  EXPECT_TRUE(torch::equal(q.unstitch(qlty::zarr::Array::open(dir / "other.zarr"), 0), q.unstitch(x, 0)));
}

TEST(LargeQuilt, ACraftedJournalRenamesNothingAndTemporaryFilesGo) {
  TempDir dir;
  qlty::LargeQuiltOptions o;
  o.durable = false;
  {
    qlty::LargeNCYXQuilt a(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o);
    a.stitch(torch::ones({1, 8, 8}), 0);
  }
  // A journal that would move a file from outside the folder over another outside file.
  qlty::detail::atomic_write(dir / "victim", "keep me", false);
  qlty::detail::atomic_write(dir / ".x.ckpt.1.2.tmp", "attacker", false);
  for (const auto& entry : std::vector<std::pair<std::string, std::string>>{{"../victim", "../.x.ckpt.1.2.tmp"},
                                                                            {"sum/../../victim", "sum/.0.ckpt.1.tmp"},
                                                                            {"stitched", "../.x.ckpt.1.2.tmp"},
                                                                            {"/tmp/victim", ".a.ckpt.1.tmp"},
                                                                            {"sum/0.0.0.0", "weight/.0.ckpt.1.tmp"}}) {
    SCOPED_TRACE(entry.first);
    const auto j =
        qlty::detail::journal_encode({{entry.first, std::vector<uint8_t>(entry.second.begin(), entry.second.end())}});
    qlty::detail::atomic_write(dir / "q_acc.zarr/journal", j.data(), j.size(), false);
    qlty_test::expect_error<qlty::Error>([&] { qlty::LargeNCYXQuilt b(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o); },
                                         {"[qlty.checkpoint]", "journal", "names a file that is not this quilt's"});
    std::ifstream f(dir / "victim");
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(f), {}), "keep me");
  }
  ::unlink((dir / "q_acc.zarr/journal").c_str());
  // Temporary files of every kind a killed process can leave: staged checkpoints, journals, chunks and
  // metadata (temp_name, any pid, this or another host), in the folder and its arrays.
  const std::vector<std::string> temps = {
      "q_acc.zarr/.journal.999999@" + qlty::detail::host_tag() + ".0.1.tmp", "q_acc.zarr/.journal.12@elsewhere.0.1.tmp",
      "q_acc.zarr/sum/.0.0.0.0.ckpt.999999.3.tmp", "q_acc.zarr/sum_sq/.zarray.999999.0.1.tmp"};
  for (const auto& t : temps) qlty::detail::atomic_write(dir / t, "x", false);
  qlty::LargeNCYXQuilt b(dir / "q", 1, 16, 16, 8, 4, 0, 1.0, o);
  EXPECT_TRUE(b.is_stitched(0));
  for (const auto& t : temps) EXPECT_FALSE(qlty::detail::path_exists(dir / t)) << t;
}

#ifdef QLTY_LARGE_WORKER
int run_worker(const std::string& prefix, int kill_after_ms) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(QLTY_LARGE_WORKER, QLTY_LARGE_WORKER, prefix.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (kill_after_ms >= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

TEST(LargeQuilt, KillNineAtRandomPointsThenResumeGivesIdenticalBytes) {
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_worker(dir / "clean", -1), 0);
  // Kill between the end of start-up (loading LibTorch takes most of a second) and the end of a clean run.
  const int clean_ms =
      static_cast<int>(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  // On a fast machine most of a run is start-up, and a resumed run may finish before the next kill: start over
  // from a fresh prefix until the runs were killed at least 3 times in all; every finished run must match.
  std::mt19937 rng(11);
  int kills = 0;
  for (int attempt = 0; kills < 3; ++attempt) {
    ASSERT_LT(attempt, 20) << "could not kill the worker 3 times within a clean run's time (" << clean_ms << " ms)";
    const std::string killed = dir / ("killed" + std::to_string(attempt));
    int rounds = 0;
    while (true) {
      const int rc =
          run_worker(killed, std::uniform_int_distribution<int>(700, std::max(800, clean_ms * 19 / 20))(rng));
      ++rounds;
      if (rc == 0) break;
      ASSERT_EQ(rc, -SIGKILL) << "the worker failed on its own";
      ++kills;
      ASSERT_LT(rounds, 80) << "the run never finished";
    }
    for (const char* out : {"_mean.zarr", "_std.zarr"}) {
      auto a = qlty::zarr::Array::open(dir / (std::string("clean") + out)).read();
      auto b = qlty::zarr::Array::open(killed + out).read();
      EXPECT_TRUE(torch::equal(a, b)) << out << " differs after " << kills << " kills: " << (a - b).abs().max();
    }
    // The accumulators too, chunk file by chunk file.
    for (const char* arr : {"sum", "sum_sq"}) {
      auto a = qlty::zarr::Array::open(dir / (std::string("clean_acc.zarr/") + arr)).read();
      auto b = qlty::zarr::Array::open(killed + "_acc.zarr/" + arr).read();
      EXPECT_TRUE(torch::equal(a, b)) << arr;
    }
    EXPECT_FALSE(qlty::detail::path_exists(killed + "_acc.zarr/journal"));
    for (const char* folder : {"_acc.zarr", "_acc.zarr/sum", "_acc.zarr/sum_sq", "_mean.zarr", "_std.zarr"})
      if (qlty::detail::is_directory(killed + folder))
        for (const auto& f : qlty::detail::list_dir(killed + folder))
          EXPECT_TRUE(f.find(".tmp") == std::string::npos && f.find(".ckpt.") == std::string::npos)
              << "temporary file left: " << folder << "/" << f;
  }
  RecordProperty("kills", kills);
}
#endif

}  // namespace
