// qlty/blockwise.hpp: blockwise inference equals the in-memory quilt pipeline for any block size (2D, 3D, tensor
// and Zarr inputs, std and argmax); a stopped run resumes to identical bytes; other settings are refused; models
// that fail or return wrong shapes give clear errors and leave no block marked done. Models are TorchScript
// modules defined and saved in C++.
#include "../common.hpp"

#include <qlty/blockwise.hpp>

#include "../models.hpp"

#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <map>
#include <thread>

namespace {

using qlty_test::expect_error;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_blockwise") {}
};

using qlty_test::conv_model;

qlty::BlockModel as_model(torch::jit::Module& m, torch::Device device = torch::kCPU) {
  m.to(device);
  return [&m](const torch::Tensor& x) { return m.forward({x}).toTensor(); };
}

struct Ref {
  torch::Tensor mean, std, argmax;
};

/// The in-memory pipeline: stitch(model(unstitch(x))), the spread of overlapping predictions, their argmax.
template <int D>
Ref reference(const qlty::Quilt<D>& q, const torch::Tensor& x, const qlty::BlockModel& model) {
  torch::NoGradGuard no_grad;
  auto p = model(q.unstitch(x.to(torch::kFloat)));
  auto mean = std::get<0>(q.stitch(p));
  auto m2 = std::get<0>(q.stitch(p * p));
  return {mean, (m2 - mean * mean).clamp_min(0).sqrt(), mean.argmax(1, true)};
}

/// Compares an output folder with the reference: mean and std to float rounding, argmax where it is clear.
void expect_matches(const std::string& out, const Ref& ref, bool with_std, bool with_argmax) {
  auto mean = qlty::zarr::Array::open(out + "/0").read();
  ASSERT_EQ(mean.sizes(), ref.mean.sizes());
  EXPECT_LT((mean - ref.mean).abs().max().item<double>(), 2e-6);
  if (with_std) {
    auto sd = qlty::zarr::Array::open(out + "/std").read();
    EXPECT_LT((sd - ref.std).abs().max().item<double>(), 2e-3);  // a difference of squares
    EXPECT_GT(sd.max().item<double>(), 0.01);                    // overlapping windows do disagree at their edges
  }
  if (with_argmax) {
    auto labels = qlty::zarr::Array::open(out + "/labels/argmax/0").read().to(torch::kLong);
    auto top2 = std::get<0>(ref.mean.topk(2, 1));
    auto clear = (top2.select(1, 0) - top2.select(1, 1)).unsqueeze(1) > 1e-4;
    EXPECT_TRUE(torch::equal(labels.masked_select(clear), ref.argmax.masked_select(clear)));
  }
}

TEST(Blockwise, Matches2DInMemoryForAnyBlock) {
  TempDir dir;
  auto module = conv_model(2, 3, 4, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(1);
  auto x = torch::randn({2, 3, 70, 53});
  qlty::NCYXQuilt q(70, 53, {16, 12}, {11, 9}, {3, 2}, 0.1);
  const Ref ref = reference<2>(q, x, model);
  // block 8 < window 16: windows span three blocks; 16 x 24: a grid of blocks; default: whole slabs.
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> layouts = {
      {{}, {}}, {{8}, {8}}, {{16, 24}, {8, 8}}, {{24, 53}, {8, 53}}, {{70, 16}, {70, 16}}};
  int i = 0;
  for (const auto& [block, chunks] : layouts) {
    SCOPED_TRACE("block " + c10::str(c10::IntArrayRef(block)) + " chunks " + c10::str(c10::IntArrayRef(chunks)));
    qlty::BlockwiseOptions o;
    o.window = {16, 12};
    o.step = {11, 9};
    o.border = {3, 2};
    o.border_weight = 0.1;
    o.batch_size = 5;
    o.block = block;
    o.chunks = chunks;
    o.write_std = true;
    o.write_argmax = true;
    const std::string out = dir / ("out" + std::to_string(i++) + ".zarr");
    auto s = qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), out, o);
    EXPECT_TRUE(s.complete);
    EXPECT_EQ(s.blocks_skipped, 0);
    EXPECT_EQ(s.windows_grid, 2 * q.patches_per_image());
    EXPECT_EQ(s.out_channels, 4);
    if (block.empty() || (block.size() == 2 && block[1] >= 53))  // slabs: each window once
      EXPECT_EQ(s.windows_computed, s.windows_grid);
    else
      EXPECT_GT(s.windows_computed, s.windows_grid);
    expect_matches(out, ref, true, true);
    EXPECT_EQ(qlty::blockwise_status(out).blocks_done, s.blocks_total);
  }
}

TEST(Blockwise, Matches3DInMemoryFromZarrInput) {
  TempDir dir;
  auto module = conv_model(3, 2, 3, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(2);
  auto x = torch::randint(0, 255, {1, 2, 30, 26, 22}, torch::kByte);  // integer input: windows become float32
  auto in = qlty::zarr::Array::create(
      dir / "in.zarr", qlty::zarr::ArrayOptions({1, 2, 30, 26, 22}, {1, 1, 7, 9, 8}, qlty::zarr::DataType::UInt8));
  in.write({0, 0, 0, 0, 0}, x);
  qlty::NCZYXQuilt q(30, 26, 22, 10, 7, 2, 0.0);
  const Ref ref = reference<3>(q, x, model);
  for (const auto& block : std::vector<std::vector<int64_t>>{{}, {8}, {8, 16, 8}}) {
    SCOPED_TRACE("block " + c10::str(c10::IntArrayRef(block)));
    qlty::BlockwiseOptions o;
    o.window = 10;
    o.step = 7;
    o.border = 2;
    o.border_weight = 0.0;
    o.batch_size = 3;
    o.block = block;
    o.chunks = {8};
    o.write_std = true;
    const std::string out = dir / ("out" + std::to_string(block.size()) + ".zarr");
    auto s =
        qlty::infer_blockwise(model, qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / "in.zarr")), out, o);
    EXPECT_TRUE(s.complete);
    expect_matches(out, ref, true, false);
  }
}

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// Every chunk file of an array folder, by name.
std::map<std::string, std::vector<char>> chunk_files(const std::string& array) {
  std::map<std::string, std::vector<char>> out;
  for (const auto& f : qlty::detail::list_dir(array))
    if (f[0] != '.') out[f] = file_bytes(array + "/" + f);
  return out;
}

qlty::BlockwiseOptions resume_options() {
  qlty::BlockwiseOptions o;
  o.window = 10;
  o.step = 6;
  o.border = 2;
  o.block = {8};
  o.chunks = {8};
  o.batch_size = 4;
  o.write_std = true;
  o.write_argmax = true;
  o.model_id = "conv-v1";
  return o;
}

TEST(Blockwise, StoppedRunsResumeToIdenticalBytes) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(4);
  auto x = qlty::BlockInput::from_tensor(torch::randn({2, 1, 28, 20, 18}));
  auto o = resume_options();
  const auto whole = qlty::infer_blockwise(model, x, dir / "whole.zarr", o);
  ASSERT_TRUE(whole.complete);
  EXPECT_EQ(whole.blocks_total, 2 * 4 * 3 * 3);

  // Stops after 1, then 5 more blocks (which start mid-column, so their first block recomputes carried windows).
  int64_t done = 0;
  for (int64_t stop : {1, 5, 7}) {
    o.max_blocks = stop;
    auto s = qlty::infer_blockwise(model, x, dir / "parts.zarr", o);
    EXPECT_FALSE(s.complete);
    EXPECT_EQ(s.blocks_skipped, done);
    EXPECT_EQ(s.blocks_computed, stop);
    done += stop;
    EXPECT_EQ(qlty::blockwise_status(dir / "parts.zarr").blocks_done, done);
  }
  o.max_blocks = -1;
  auto s = qlty::infer_blockwise(model, x, dir / "parts.zarr", o);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.blocks_skipped, done);
  for (const char* a : {"0", "std", "labels/argmax/0"}) {
    SCOPED_TRACE(a);
    const auto want = chunk_files(dir / ("whole.zarr/" + std::string(a)));
    EXPECT_EQ(want.size(), static_cast<size_t>(whole.blocks_total * (std::string(a) == "labels/argmax/0" ? 1 : 2)));
    EXPECT_TRUE(want == chunk_files(dir / ("parts.zarr/" + std::string(a))));
  }
  // A rerun of a finished output computes nothing.
  s = qlty::infer_blockwise(model, x, dir / "parts.zarr", o);
  EXPECT_EQ(s.blocks_computed, 0);
  EXPECT_EQ(s.windows_computed, 0);
}

TEST(Blockwise, OtherSettingsAreRefused) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 20, 20, 20}));
  auto o = resume_options();
  o.max_blocks = 2;
  qlty::infer_blockwise(model, x, dir / "out.zarr", o);
  auto other = o;
  other.step = 5;
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(model, x, dir / "out.zarr", other); },
                            {"[qlty.checkpoint]", "out.zarr", "step: [6,6,6] there, [5,5,5] now"});
  other = o;
  other.model_id = "conv-v2";
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(model, x, dir / "out.zarr", other); },
                            {"[qlty.checkpoint]", "model: \"conv-v1\" there, \"conv-v2\" now"});
  other.overwrite = true;
  other.max_blocks = -1;
  auto s = qlty::infer_blockwise(model, x, dir / "out.zarr", other);
  EXPECT_EQ(s.blocks_skipped, 0);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(qlty::blockwise_status(dir / "out.zarr").manifest["layout"]["model"], "conv-v2");
  // overwrite with a model of another channel count starts over with that count
  auto three = [](const torch::Tensor& t) { return torch::cat({t, 2 * t, 3 * t}, 1); };
  s = qlty::infer_blockwise(three, x, dir / "out.zarr", other);
  EXPECT_EQ(s.out_channels, 3);
  auto mean = qlty::zarr::Array::open(dir / "out.zarr/0").read();
  EXPECT_TRUE(torch::allclose(mean.select(1, 2), 3 * mean.select(1, 0)));
}

TEST(Blockwise, BadInputsAndFailingModels) {
  TempDir dir;
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 20, 20}));
  qlty::BlockwiseOptions o;
  o.window = 8;
  o.step = 6;
  o.block = {8};
  o.chunks = {8};
  auto identity = [](const torch::Tensor& t) { return t; };
  // Wrong window, nothing to write, bad batch size, wrong rank.
  o.window = 30;
  expect_error<c10::ValueError>(
      [&] { qlty::infer_blockwise(identity, x, dir / "a.zarr", o); },
      {"qlty::infer_blockwise: window along Y must not exceed the image size 20, got 30", "BlockwiseOptions::pad"});
  o.window = 8;
  auto none = o;
  none.write_mean = false;
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(identity, x, dir / "a.zarr", none); },
                                {"infer_blockwise", "nothing to write"});
  auto batch = o;
  batch.batch_size = 0;
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(identity, x, dir / "a.zarr", batch); },
                                {"batch_size must be >= 1, got 0"});
  expect_error<c10::ValueError>(
      [&] {
        qlty::BlockInput::from_tensor(torch::zeros({20, 20}));
      },
      {"must be 4-D (N, C, Y, X) or 5-D (N, C, Z, Y, X), got shape [20, 20]"});

  // A model with the wrong spatial shape, one that throws, one that fails on the second block.
  auto shrink = [](const torch::Tensor& t) { return t.narrow(-1, 0, 4); };
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(shrink, x, dir / "b.zarr", o); },
                            {"[qlty.model]", "b.zarr", "returned shape [1, 1, 8, 4]", "expected [1, C', 8, 8]"});
  int calls = 0;
  o.block = {8, 20};  // slabs along Y: the probe, then 2 batches in block 0 and 1 in block 1
  auto flaky = [&](const torch::Tensor& t) {
    if (++calls > 3) throw std::runtime_error("CUDA out of memory (simulated)");
    return t * 2;
  };
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(flaky, x, dir / "c.zarr", o); },
                            {"[qlty.model]", "c.zarr: block 1 (image 0, y 8..16, x 0..20)", "row 2", "windows 0..",
                             "out of memory: try a smaller batch size", "CUDA out of memory (simulated)"});
  EXPECT_EQ(qlty::blockwise_status(dir / "c.zarr").blocks_done, 1);  // block 0 finished, block 1 not marked
  auto wrong = [&](const torch::Tensor& t) { return t.to(torch::kLong); };
  qlty::detail::remove_tree(dir / "c.zarr");
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(wrong, x, dir / "c.zarr", o); },
                            {"[qlty.model]", "the first window", "Long", "floating point"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "c.zarr"));  // found before the output is made
  auto throws = [](const torch::Tensor&) -> torch::Tensor { throw std::runtime_error("model exploded"); };
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(throws, x, dir / "d.zarr", o); },
                            {"[qlty.model]", "the model failed on the first window", "model exploded"});

  // An output where a foreign folder or file is.
  qlty::detail::make_dirs(dir / "mine/data");
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(identity, x, dir / "mine", o); },
                            {"[qlty.zarr.exists]", "not a Zarr node"});
  auto over = o;
  over.overwrite = true;
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(identity, x, dir / "mine", over); },
                            {"[qlty.zarr.exists]", "not a Zarr node"});
  EXPECT_TRUE(qlty::detail::is_directory(dir / "mine/data"));  // never deleted
  expect_error<qlty::Error>([&] { qlty::blockwise_status(dir / "mine"); }, {"[qlty.zarr.missing]", "no .qlty"});
}

/// Every chunk file of the three outputs, by array and name.
std::map<std::string, std::vector<char>> output_files(const std::string& out) {
  std::map<std::string, std::vector<char>> all;
  for (const char* a : {"0", "std", "labels/argmax/0"})
    for (auto& [name, bytes] : chunk_files(out + "/" + a)) all[std::string(a) + "/" + name] = std::move(bytes);
  return all;
}

TEST(BlockwisePlan, RowsSharedRowsAndParts) {
  // 3D, Z = 28, window 10, step 6 (rows start at 0, 6, 12, 18), blocks of 8 along Z: 4 slabs per column.
  auto o = resume_options();
  qlty::detail::BlockPlan p = qlty::detail::plan_grid({2, 1, 28, 20, 18}, o, "test");
  qlty::detail::plan_blocks(p, o, 2, "test");
  EXPECT_EQ(p.nblocks, (std::array<int64_t, 3>{4, 3, 3}));
  EXPECT_EQ(p.total(), 72);
  // Block 0 (z 0..8) meets rows 0-1; block 1 (z 8..16) rows 0-2 (row 0 spans z 0..10); block 3 (z 24..28) row 3.
  EXPECT_EQ(p.rows(0), (std::pair<int64_t, int64_t>{0, 1}));
  EXPECT_EQ(p.rows(1), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_EQ(p.rows(3), (std::pair<int64_t, int64_t>{3, 3}));
  EXPECT_EQ(p.shared_from(0), 0);  // rows 0 and 1 reach z 8
  EXPECT_EQ(p.shared_from(3), 4);  // the column ends: nothing shared
  EXPECT_EQ(p.successor(3), -1);
  EXPECT_EQ(p.predecessor(4), -1);
  EXPECT_EQ(p.successor(4), 5);
  EXPECT_EQ(p.first_computed_row(1, true), 2);
  // A column's blocks in order compute each of its window rows once.
  for (int64_t column = 0; column < p.total(); column += p.nblocks[0]) {
    int64_t rows = 0;
    for (int64_t i = column; i < column + p.nblocks[0]; ++i)
      rows += p.windows_to_compute(i, p.predecessor(i) >= 0) / p.row_windows(i);
    EXPECT_EQ(rows, p.grid.times[0]);
  }
  // Parts: contiguous, disjoint, covering every block.
  for (int64_t K : {1, 2, 5, 72}) {
    int64_t next = 0;
    for (int64_t k = 0; k < K; ++k) {
      const auto [b, e] = p.part_range(k, K);
      EXPECT_EQ(b, next);
      EXPECT_GE(e, b);
      next = e;
    }
    EXPECT_EQ(next, p.total());
  }
  // Marker names map back to run order, in 3D and 2D.
  for (int64_t i = 0; i < p.total(); ++i) EXPECT_EQ(p.index_of_id(p.id(i)), i);
  auto o2 = o;
  o2.block = {8, 6};
  qlty::detail::BlockPlan q = qlty::detail::plan_grid({3, 1, 20, 18}, o2, "test");
  qlty::detail::plan_blocks(q, o2, 2, "test");
  EXPECT_GT(q.total(), 3 * 4);
  for (int64_t i = 0; i < q.total(); ++i) EXPECT_EQ(q.index_of_id(q.id(i)), i);
  // Part ranges of crafted part counts do not overflow.
  p.nblocks = {4000, 1000, 1000};
  p.images = 1;
  EXPECT_EQ(p.part_range(3999999999, 4000000000), (std::pair<int64_t, int64_t>{3999999999, 4000000000}));
}

TEST(BlockwisePlan, ShardedOutputsHaveBlocksOfWholeShards) {
  // 3D 28 x 20 x 18, chunks 4, shards 8 x 12 x 8 (an edge shard clipped to the chunks covering the axis): blocks
  // asked as 4 become 8 x 12 x 8, so each shard lies in exactly one block.
  auto o = resume_options();
  o.chunks = {4};
  o.shards = {8, 12, 8};
  o.block = {4};
  o.zarr_format = 3;
  qlty::detail::BlockPlan p = qlty::detail::plan_grid({1, 1, 28, 20, 18}, o, "test");
  qlty::detail::plan_blocks(p, o, 2, "test");
  EXPECT_TRUE(p.sharded);
  EXPECT_EQ(p.shard, (std::array<int64_t, 3>{8, 12, 8}));
  EXPECT_EQ(p.block, (std::array<int64_t, 3>{8, 12, 8}));
  for (int a = 0; a < 3; ++a) EXPECT_EQ(p.block[a] % p.shard[a], 0);
  o.shards = {64};  // larger than the volume: clipped to whole chunks covering each axis
  p = qlty::detail::plan_grid({1, 1, 28, 20, 18}, o, "test");
  EXPECT_EQ(p.shard, (std::array<int64_t, 3>{28, 20, 20}));
  // an axis shorter than the window is padded and one block: its shard is that block, whatever was asked
  auto padded = o;
  padded.chunks = {2};
  padded.shards = {4};
  padded.pad = qlty::Pad::constant(0);
  p = qlty::detail::plan_grid({1, 1, 5, 20, 18}, padded, "test");
  EXPECT_EQ(p.chunk[0], 10);
  EXPECT_EQ(p.shard, (std::array<int64_t, 3>{10, 4, 4}));
  o.shards = {6};
  expect_error<c10::ValueError>(
      [&] {
        qlty::detail::plan_grid({1, 1, 28, 20, 18}, o, "test");
      },
      {"shards must be whole chunks", "[6]", "[4, 4, 4]"});
  o.shards = {8};
  o.zarr_format = 2;
  expect_error<c10::ValueError>(
      [&] {
        qlty::detail::plan_grid({1, 1, 28, 20, 18}, o, "test");
      },
      {"shards are a Zarr v3 feature"});
  o.zarr_format = 4;
  expect_error<c10::ValueError>(
      [&] {
        qlty::detail::plan_grid({1, 1, 28, 20, 18}, o, "test");
      },
      {"zarr_format must be 2 or 3, got 4"});
}

TEST(Blockwise, ShardedOmeZarr05HoldsTheValuesOfTheV2Output) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(4);
  const auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 28, 20, 18}));
  auto o = resume_options();
  qlty::infer_blockwise(model, x, dir / "v2.zarr", o);
  o.zarr_format = 3;
  o.shards = {16};
  const auto s = qlty::infer_blockwise(model, x, dir / "v3.zarr", o);
  EXPECT_TRUE(s.complete);
  for (const char* a : {"0", "std", "labels/argmax/0"}) {
    const auto v3 = qlty::zarr::Array::open(dir / (std::string("v3.zarr/") + a));
    EXPECT_TRUE(v3.sharded()) << a;
    EXPECT_EQ(v3.metadata().dimension_names, (std::vector<std::string>{"t", "c", "z", "y", "x"})) << a;
    EXPECT_TRUE(torch::equal(v3.read(), qlty::zarr::Array::open(dir / (std::string("v2.zarr/") + a)).read())) << a;
  }
  // a padded axis: its chunk and shard are the image's extent
  o.pad = qlty::Pad::constant(0);
  o.chunks = {2};
  o.shards = {4};
  const auto thin = qlty::BlockInput::from_tensor(torch::randn({1, 1, 5, 20, 18}));
  qlty::infer_blockwise(model, thin, dir / "thin3.zarr", o);
  o.zarr_format = 2;
  o.shards = {};
  qlty::infer_blockwise(model, thin, dir / "thin2.zarr", o);
  const auto thin3 = qlty::zarr::Array::open(dir / "thin3.zarr/0");
  EXPECT_EQ(thin3.chunks(), (std::vector<int64_t>{1, 1, 5, 4, 4}));
  EXPECT_TRUE(torch::equal(thin3.read(), qlty::zarr::Array::open(dir / "thin2.zarr/0").read()));
  const auto attrs = qlty::zarr::Group::open(dir / "v3.zarr").attributes();
  EXPECT_EQ(attrs.at("ome").at("version"), "0.5");
  EXPECT_EQ(qlty::zarr::ngff_attributes(attrs).at("multiscales").at(0).at("datasets").at(0).at("path"), "0");
  EXPECT_EQ(qlty::zarr::Group::open(dir / "v3.zarr/labels").attributes().at("ome").at("labels").at(0), "argmax");
  EXPECT_EQ(attrs.at("qlty").at("layout").at("shards"), (std::vector<int64_t>{16, 16, 16}));
}

TEST(Blockwise, PartsInAnyOrderGiveTheBytesOfOneRun) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(6);
  auto x = qlty::BlockInput::from_tensor(torch::randn({2, 1, 28, 20, 18}));
  auto o = resume_options();
  const auto whole = qlty::infer_blockwise(model, x, dir / "whole.zarr", o);
  ASSERT_TRUE(whole.complete);
  const auto want = output_files(dir / "whole.zarr");

  auto run_parts = [&](const std::string& out, std::vector<int64_t> order, int64_t K) {
    int64_t computed = 0, received = 0;
    for (int64_t k : order) {
      auto po = o;
      po.part = {k, K};
      auto s = qlty::infer_blockwise(model, x, dir / out, po);
      computed += s.windows_computed;
      received += s.windows_received;
      if (s.complete) EXPECT_EQ(k, order.back());
    }
    return std::make_pair(computed, received);
  };
  // Later parts first: every part finds the rows it shares with the next part in that part's carry file, so each
  // window is evaluated once.
  auto [computed, received] = run_parts("backward.zarr", {4, 3, 2, 1, 0}, 5);
  EXPECT_TRUE(qlty::blockwise_status(dir / "backward.zarr").blocks_done == whole.blocks_total);
  EXPECT_EQ(computed, whole.windows_computed);
  EXPECT_GT(received, 0);
  EXPECT_TRUE(output_files(dir / "backward.zarr") == want);
  EXPECT_FALSE(qlty::detail::path_exists(dir / "backward.zarr/.qlty/carry"));  // dropped when complete
  // In order: a part computes the rows it shares with the next part itself.
  std::tie(computed, received) = run_parts("forward.zarr", {0, 1, 2, 3, 4}, 5);
  EXPECT_GT(computed, whole.windows_computed);
  EXPECT_EQ(received, 0);
  EXPECT_TRUE(output_files(dir / "forward.zarr") == want);

  // Parts started at the same moment on a fresh output create it once and give the same bytes.
  std::vector<std::thread> threads;
  std::vector<std::string> errors(3);
  for (int64_t k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      try {
        auto po = o;
        po.part = {k, 3};
        qlty::infer_blockwise(model, x, dir / "together.zarr", po);
      } catch (const std::exception& e) {
        errors[k] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_TRUE(output_files(dir / "together.zarr") == want);

  // Three parts of four: the status names the missing one.
  run_parts("three.zarr", {0, 1, 3}, 4);
  const auto st = qlty::blockwise_status(dir / "three.zarr");
  ASSERT_EQ(st.parts.size(), 4u);
  for (const auto& p : st.parts) {
    SCOPED_TRACE(p.index);
    EXPECT_EQ(p.count, 4);
    EXPECT_EQ(p.started, p.index != 2);
    EXPECT_EQ(p.blocks_done, p.index == 2 ? 0 : p.blocks);
  }
  EXPECT_EQ(st.blocks_done, st.blocks_total - st.parts[2].blocks);

  // A part with overwrite, and a part out of range, are refused.
  auto bad = o;
  bad.part = {1, 2};
  bad.overwrite = true;
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(model, x, dir / "bad.zarr", bad); },
                                {"overwrite cannot be combined with a part (1 of 2)"});
  bad.overwrite = false;
  bad.part = {2, 2};
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(model, x, dir / "bad.zarr", bad); },
                                {"part must be {i, K} with 0 <= i < K, got {2, 2}"});
}

TEST(Blockwise, CarryFilesAreCheckedAndACorruptOneIsIgnored) {
  TempDir dir;
  auto module = conv_model(2, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(7);
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 40, 30}));
  qlty::BlockwiseOptions o;
  o.window = 10;
  o.step = 7;
  o.border = 2;
  o.block = {8, 30};
  o.chunks = {8};
  o.write_std = true;
  o.write_argmax = true;
  qlty::infer_blockwise(model, x, dir / "whole.zarr", o);
  // Part 1 of 2 first: it leaves the rows it shares with part 0's last block in a carry file.
  auto po = o;
  po.part = {1, 2};
  qlty::infer_blockwise(model, x, dir / "out.zarr", po);
  const auto carry = qlty::detail::list_dir(dir / "out.zarr/.qlty/carry");
  ASSERT_EQ(carry.size(), 1u);
  EXPECT_EQ(carry[0], "1");  // part 0 is blocks 0-1 (y 0..16)
  const std::string f = dir / ("out.zarr/.qlty/carry/" + carry[0]);
  {
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(200);
    io.put('\x7f');  // a flipped byte in the data: the checksum no longer matches
  }
  po.part = {0, 2};
  auto s = qlty::infer_blockwise(model, x, dir / "out.zarr", po);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.windows_received, 0);  // computed the shared rows itself
  EXPECT_TRUE(output_files(dir / "out.zarr") == output_files(dir / "whole.zarr"));
}

/// Hands out blocks in a fixed order that is not run order: every block starts a segment of its own.
struct OrderSchedule : qlty::detail::BlockSchedule {
  std::vector<int64_t> order;
  size_t pos = 0;
  int64_t next(int64_t) override { return pos < order.size() ? order[pos++] : -1; }
};

// Anything else at a carry file's place (a file of another size, a folder, a FIFO) is ignored as a corrupt file
// is: the reader computes the rows itself, the writer replaces it.
TEST(Blockwise, AnythingElseAtACarryFilesPlaceIsIgnored) {
  TempDir dir;
  auto module = conv_model(2, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(8);
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 40, 30}));
  qlty::BlockwiseOptions o;
  o.window = 10;
  o.step = 7;
  o.block = {8, 30};
  o.chunks = {8};
  o.write_std = true;
  o.write_argmax = true;
  qlty::infer_blockwise(model, x, dir / "whole.zarr", o);
  for (const std::string junk : {"short", "long", "folder", "fifo"}) {
    for (bool reader_first : {true, false}) {
      const std::string out = dir / (junk + (reader_first ? "-r.zarr" : "-w.zarr"));
      auto po = o;
      po.max_blocks = 0;
      qlty::infer_blockwise(model, x, out, po);          // the output, nothing computed
      const std::string carry = out + "/.qlty/carry/1";  // block 1 ends part 0 and meets part 1's first block
      qlty::detail::make_dirs(out + "/.qlty/carry");
      if (junk == "short") std::ofstream(carry) << "QLTYCRY1";
      if (junk == "long") std::ofstream(carry) << std::string(1 << 20, 'x');
      if (junk == "folder") qlty::detail::make_dirs(carry + "/inside");
      if (junk == "fifo") ASSERT_EQ(::mkfifo(carry.c_str(), 0644), 0);
      po.max_blocks = -1;
      for (int64_t part : reader_first ? std::vector<int64_t>{0, 1} : std::vector<int64_t>{1, 0}) {
        po.part = {part, 2};
        EXPECT_NO_THROW(qlty::infer_blockwise(model, x, out, po)) << junk << " part " << part;
      }
      EXPECT_TRUE(output_files(out) == output_files(dir / "whole.zarr")) << junk;
      EXPECT_FALSE(qlty::detail::path_exists(out + "/.qlty/carry")) << junk;
    }
  }
}

// A window larger than the memory of a block (block_bytes) is refused before anything is sized or allocated.
TEST(Blockwise, AWindowLargerThanABlocksMemoryIsRefused) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 3, 32, 32, 32}));
  qlty::BlockwiseOptions o;
  o.pad = qlty::Pad::constant();
  o.window = 100000;
  o.step = 100000;
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(model, x, dir / "a.zarr", o); },
                                {"qlty::infer_blockwise", "one window of [100000] over 3 channels", "block_bytes",
                                 "the input is [1, 3, 32, 32, 32]"});
  o.window = std::vector<int64_t>{INT64_MAX, 8, 8};
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(model, x, dir / "a.zarr", o); }, {"block_bytes"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "a.zarr"));
}

TEST(Blockwise, ExecutorUnderAnySchedule) {
  // The plan, the output and the executor used on their own, as a distributed run uses them: blocks handed out
  // in reverse run order still give the bytes of one run, each window computed once (from carry files).
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(8);
  auto xt = torch::randn({1, 1, 28, 20, 18});
  auto x = qlty::BlockInput::from_tensor(xt);
  auto o = resume_options();
  const auto whole = qlty::infer_blockwise(model, x, dir / "whole.zarr", o);
  o.model_id = "conv-v1";
  auto plan = qlty::detail::plan_grid(x.shape(), o, "test");
  qlty::detail::plan_blocks(plan, o, 2, "test");
  qlty::detail::BlockwiseOutput out(dir / "rev.zarr", plan, x, o);
  OrderSchedule schedule;
  for (int64_t i = plan.total() - 1; i >= 0; --i) schedule.order.push_back(i);
  qlty::detail::BlockExecutor executor(model, x, plan, out, o);
  executor.run(schedule);
  EXPECT_EQ(executor.blocks_computed(), plan.total());
  EXPECT_EQ(executor.windows_computed(), whole.windows_computed);
  EXPECT_GT(executor.windows_received(), 0);
  EXPECT_TRUE(out.finish_if_complete());
  EXPECT_TRUE(output_files(dir / "rev.zarr") == output_files(dir / "whole.zarr"));
}

TEST(Blockwise, AResumeWithAnotherInputIsRefused) {
  // Same shape, other content: resuming must not mix the two inputs' blocks.
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  auto o = resume_options();
  o.max_blocks = 2;
  auto make = [&](const std::string& name, int seed) {
    torch::manual_seed(seed);
    auto a = qlty::zarr::Array::create(dir / name, qlty::zarr::ArrayOptions({1, 1, 20, 20, 20}, {1, 1, 8, 8, 8}));
    a.write({0, 0, 0, 0, 0}, torch::randn({1, 1, 20, 20, 20}));
    return qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / name));
  };
  const auto a = make("a.zarr", 1), b = make("b.zarr", 2);
  EXPECT_NE(a.id(), b.id());
  EXPECT_EQ(a.id(), qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / "a.zarr")).id());
  qlty::infer_blockwise(model, a, dir / "out.zarr", o);
  expect_error<qlty::Error>([&] { qlty::infer_blockwise(model, b, dir / "out.zarr", o); },
                            {"[qlty.checkpoint]", "input: \"zarr:", "a.zarr", "there, \"zarr:", "b.zarr", "now"});
  // The same array rewritten with other values in its first chunk is another input too.
  qlty::zarr::Array::open(dir / "a.zarr").write({0, 0, 0, 0, 0}, torch::zeros({1, 1, 8, 8, 8}));
  expect_error<qlty::Error>(
      [&] {
        qlty::infer_blockwise(model, qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / "a.zarr")),
                              dir / "out.zarr", o);
      },
      {"[qlty.checkpoint]", "input:"});
  // Tensors: the caller's id.
  auto x = torch::randn({1, 1, 20, 20, 20});
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x, "scan", "scan-7:v1"), dir / "t.zarr", o);
  expect_error<qlty::Error>(
      [&] { qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x, "scan", "scan-8:v1"), dir / "t.zarr", o); },
      {"[qlty.checkpoint]", "input: \"scan-7:v1\" there, \"scan-8:v1\" now"});
  auto s = qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x, "scan", "scan-7:v1"), dir / "t.zarr", o);
  EXPECT_EQ(s.blocks_skipped, 2);
  // The same cube read with its axes in another order: same shape, same id, other data.
  auto read = qlty::detail::box_reader(x);
  qlty::infer_blockwise(model, qlty::BlockInput({1, 1, 20, 20, 20}, read, "cube", "cube:v1", "", "xyz"),
                        dir / "axes.zarr", o);
  expect_error<qlty::Error>(
      [&] {
        qlty::infer_blockwise(model, qlty::BlockInput({1, 1, 20, 20, 20}, read, "cube", "cube:v1"), dir / "axes.zarr",
                              o);
      },
      {"[qlty.checkpoint]", "input_axes: \"xyz\" there, none now"});
}

// A chunk rewritten between two runs, anywhere (not only where the fingerprint samples), is another input.
TEST(Blockwise, AResumeOverAnyRewrittenChunkIsRefused) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  auto o = resume_options();
  o.max_blocks = 1;
  torch::manual_seed(4);
  auto a = qlty::zarr::Array::create(dir / "a.zarr", qlty::zarr::ArrayOptions({1, 1, 24, 24, 24}, {1, 1, 8, 8, 8}));
  a.write({0, 0, 0, 0, 0}, torch::randn({1, 1, 24, 24, 24}));
  auto open = [&] { return qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / "a.zarr")); };
  const std::string before = open().id();
  qlty::infer_blockwise(model, open(), dir / "out.zarr", o);
  for (int64_t chunk : {1, 5, 20}) {  // of 27; the samples are chunks 0, 13 and 26
    const int64_t z = chunk / 9, y = chunk / 3 % 3, x = chunk % 3;
    qlty::zarr::Array::open(dir / "a.zarr").write({0, 0, 8 * z, 8 * y, 8 * x}, torch::full({1, 1, 8, 8, 8}, 0.5f));
    EXPECT_NE(open().id(), before) << chunk;
    expect_error<qlty::Error>([&] { qlty::infer_blockwise(model, open(), dir / "out.zarr", o); },
                              {"[qlty.checkpoint]", "input: \"zarr:"});
  }
}

TEST(Blockwise, RunsStartedTogetherWithOtherSettingsCreateTheOutputOnce) {
  // Before the setup lock, both runs succeeded and the output held blocks of both settings.
  TempDir dir;
  auto model = [](const torch::Tensor& t) { return t * 2; };
  auto x = qlty::BlockInput::from_tensor(torch::randn({1, 1, 40, 40}), "x", "x-v1");
  for (int round = 0; round < 5; ++round) {
    const std::string out = dir / ("out" + std::to_string(round) + ".zarr");
    std::vector<std::string> errors(2);
    std::vector<std::thread> threads;
    for (int k = 0; k < 2; ++k)
      threads.emplace_back([&, k] {
        qlty::BlockwiseOptions o;
        o.window = 8;
        o.step = k == 0 ? 4 : 6;
        o.block = {8};
        o.chunks = {8};
        try {
          qlty::infer_blockwise(model, x, out, o);
        } catch (const qlty::Error& e) {
          errors[k] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    SCOPED_TRACE(errors[0] + " | " + errors[1]);
    EXPECT_EQ(errors[0].empty() + errors[1].empty(), 1);  // one wins, the other is told
    const std::string& lost = errors[0].empty() ? errors[1] : errors[0];
    EXPECT_NE(lost.find("[qlty.checkpoint]"), std::string::npos);
    EXPECT_NE(lost.find("step: "), std::string::npos);
    const auto step = qlty::blockwise_status(out).manifest["layout"]["step"];
    EXPECT_EQ(step[0].get<int64_t>(), errors[0].empty() ? 4 : 6);
    EXPECT_TRUE(qlty::blockwise_status(out).blocks_done == qlty::blockwise_status(out).blocks_total);
  }
}

TEST(Blockwise, AnOutputThatIsOrHoldsOrLiesInTheInputIsRefused) {
  TempDir dir;
  auto identity = [](const torch::Tensor& t) { return t; };
  auto x = torch::randn({1, 1, 16, 16});
  qlty::zarr::Array::create(dir / "in.zarr", qlty::zarr::ArrayOptions({1, 1, 16, 16}, {1, 1, 8, 8}))
      .write({0, 0, 0, 0}, x);
  const auto in = qlty::BlockInput::from_zarr(qlty::zarr::Array::open(dir / "in.zarr"));
  qlty::BlockwiseOptions o;
  o.window = 8;
  o.step = 4;
  o.overwrite = true;  // would delete what is there
  ::symlink((dir / "in.zarr").c_str(), (dir / "link").c_str());
  for (const std::string out :
       {dir / "in.zarr", dir / "in.zarr/", dir / "in.zarr/sub", dir.path, dir / "link", dir / "link/sub"}) {
    SCOPED_TRACE(out);
    expect_error<qlty::Error>([&] { qlty::infer_blockwise(identity, in, out, o); },
                              {"[qlty.overlap]", "the output would be the input", "in.zarr"});
  }
  EXPECT_TRUE(torch::equal(qlty::zarr::Array::open(dir / "in.zarr").read(), x));      // untouched
  EXPECT_TRUE(qlty::infer_blockwise(identity, in, dir / "in.zarr.out", o).complete);  // a name that only starts alike
}

class BlockwiseDevice : public testing::TestWithParam<torch::Device> {};

TEST_P(BlockwiseDevice, BlendsOnTheModelsDevice) {
  const torch::Device device = GetParam();
  QLTY_SKIP_IF_ABSENT(device);
  TempDir dir;
  auto module = conv_model(2, 1, 2, dir / "m.pt");
  auto model = as_model(module, device);
  torch::manual_seed(5);
  auto x = torch::randn({1, 1, 40, 33});
  qlty::NCYXQuilt q(40, 33, 12, 8, 2, 0.2);
  const Ref ref = reference<2>(q, x.to(device), model);
  qlty::BlockwiseOptions o;
  o.window = 12;
  o.step = 8;
  o.border = 2;
  o.border_weight = 0.2;
  o.device = device;
  o.chunks = {16};
  o.block = {16};
  o.write_std = true;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "out.zarr", o);
  expect_matches(dir / "out.zarr", {ref.mean.cpu(), ref.std.cpu(), ref.argmax.cpu()}, true, false);
}

/// The in-memory pipeline with test-time flips: the mean over every subset of `axes` (spatial, 0-based) of the
/// flipped-back predictions on flipped windows, stitched; and the std from the mean of their squares.
template <int D>
Ref reference_tta(const qlty::Quilt<D>& q, const torch::Tensor& x, const qlty::BlockModel& model,
                  const std::vector<int64_t>& axes) {
  torch::NoGradGuard no_grad;
  auto p = q.unstitch(x.to(torch::kFloat));
  torch::Tensor sum, sumsq;
  for (size_t mask = 0; mask < (size_t(1) << axes.size()); ++mask) {
    std::vector<int64_t> dims;
    for (size_t k = 0; k < axes.size(); ++k)
      if (mask & (size_t(1) << k)) dims.push_back(2 + axes[k]);
    auto y = dims.empty() ? model(p) : model(p.flip(dims)).flip(dims);
    sum = sum.defined() ? sum + y : y;
    sumsq = sumsq.defined() ? sumsq + y * y : y * y;
  }
  const double n = double(size_t(1) << axes.size());
  auto mean = std::get<0>(q.stitch(sum / n));
  auto m2 = std::get<0>(q.stitch(sumsq / n));
  return {mean, (m2 - mean * mean).clamp_min(0).sqrt(), mean.argmax(1, true)};
}

TEST(BlockwiseMonai, GaussianBlendAndPaddingMatchTheQuiltForAnyBlock) {
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(21);
  auto x = torch::randn({2, 1, 6, 26, 19});  // Z = 6 < window 8: padded
  for (const auto& pad : {qlty::Pad::constant(0.0), qlty::Pad::reflect(), qlty::Pad::replicate()}) {
    qlty::NCZYXQuilt q(6, 26, 19, 8, 6, qlty::Blend::gaussian(), pad);
    const Ref ref = reference<3>(q, x, model);
    int i = 0;
    for (const auto& block : std::vector<std::vector<int64_t>>{{}, {8, 8, 8}, {1, 16, 8}}) {
      qlty::BlockwiseOptions o;
      o.window = 8;
      o.step = 6;
      o.blend = qlty::Blend::gaussian();
      o.pad = pad;
      o.block = block;
      o.chunks = {8};
      o.write_std = true;
      o.write_argmax = true;
      const std::string out = dir / (std::string(pad.name()) + std::to_string(i++));
      auto s = qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), out, o);
      ASSERT_TRUE(s.complete);
      SCOPED_TRACE(out);
      expect_matches(out, ref, true, true);
      EXPECT_EQ(qlty::zarr::Array::open(out + "/0").metadata().chunks, (std::vector<int64_t>{1, 1, 6, 8, 8}));
      for (const char* lock : {"/.qlty/lock", "/.0.lock", "/.std.lock", "/labels/argmax/.0.lock"})
        EXPECT_FALSE(qlty::detail::path_exists(out + lock)) << lock;
      // the manifest records the blend and the padding: a resume with others is refused
      auto other = o;
      other.blend = qlty::Blend::constant();
      expect_error<qlty::Error>([&] { qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), out, other); },
                                {"other settings", "blend: \"gaussian(0.125, 0.125, 0.125)\" there"});
    }
  }
  // without padding, the input is refused with a message that says how to pad
  qlty::BlockwiseOptions o;
  o.window = 8;
  expect_error<c10::Error>(
      [&] { qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "refused", o); },
      {"qlty::infer_blockwise: window along Z must not exceed the image size 6", "BlockwiseOptions::pad"});
}

TEST(BlockwiseMonai, FlipsAreTheMeanOfTheFlippedRunsAndTheirSpreadIsInTheStd) {
  TempDir dir;
  auto module = conv_model(2, 1, 3, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(22);
  auto x = torch::randn({1, 1, 37, 30});
  qlty::NCYXQuilt q(37, 30, 12, 9, qlty::Blend::gaussian());
  for (const auto& axes : std::vector<std::vector<int64_t>>{{}, {1}}) {
    const Ref ref = reference_tta<2>(q, x, model, axes.empty() ? std::vector<int64_t>{0, 1} : axes);
    qlty::BlockwiseOptions o;
    o.window = 12;
    o.step = 9;
    o.blend = qlty::Blend::gaussian();
    o.tta_flip = true;
    o.tta_axes = axes;
    o.block = {16, 30};  // slabs: every window computed once
    o.chunks = {16};
    o.write_std = true;
    const std::string out = dir / ("tta" + std::to_string(axes.size()));
    auto s = qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), out, o);
    EXPECT_EQ(s.windows_computed, s.windows_grid);  // windows, not model calls
    expect_matches(out, ref, true, false);
    // a run without flips differs: the model is not equivariant to flips
    auto plain = reference<2>(q, x, model);
    auto got = qlty::zarr::Array::open(out + "/0").read();
    EXPECT_GT((got - plain.mean).abs().max().item<double>(), 1e-3);
  }
  // a model that is equivariant to flips gives the same output with and without them
  qlty::BlockModel pointwise = [](const torch::Tensor& t) { return torch::tanh(t * 2 + 1); };
  qlty::BlockwiseOptions o;
  o.window = 12;
  o.step = 9;
  const auto a = qlty::infer_blockwise(pointwise, qlty::BlockInput::from_tensor(x), dir / "eq0", o);
  o.tta_flip = true;
  const auto b = qlty::infer_blockwise(pointwise, qlty::BlockInput::from_tensor(x), dir / "eq1", o);
  ASSERT_TRUE(a.complete && b.complete);
  EXPECT_TRUE(torch::allclose(qlty::zarr::Array::open(dir / "eq0/0").read(),
                              qlty::zarr::Array::open(dir / "eq1/0").read(), 1e-6, 1e-6));
}

TEST(BlockwiseMonai, ActivationOutputDtypeSlicesAndPrecision) {
  TempDir dir;
  auto module = conv_model(2, 2, 3, dir / "m.pt");
  auto model = as_model(module);
  torch::manual_seed(23);
  auto x = torch::randn({1, 2, 5, 21, 17});
  // slicewise: a 2D model over every Z slice of a volume, as the 2D quilt over the slices as images
  qlty::NCYXQuilt q2(21, 17, 8, 6, qlty::Blend::constant());
  auto slices = x[0].permute({1, 0, 2, 3});  // (Z, C, Y, X)
  auto ref = reference<2>(q2, slices, model).mean.permute({1, 0, 2, 3}).unsqueeze(0);
  qlty::BlockwiseOptions o;
  o.window = {1, 8, 8};
  o.step = {1, 6, 6};
  o.blend = qlty::Blend::constant();
  o.slicewise = true;
  o.write_argmax = true;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "slices", o);
  auto got = qlty::zarr::Array::open(dir / "slices/0").read();
  EXPECT_LT((got - ref).abs().max().item<double>(), 2e-6);
  // softmax over the channels of the blended result; argmax unchanged; uint8 output scaled by 255
  o.activation = qlty::BlockwiseOptions::Activation::Softmax;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "softmax", o);
  auto sm = qlty::zarr::Array::open(dir / "softmax/0").read();
  EXPECT_LT((sm - ref.softmax(1)).abs().max().item<double>(), 2e-6);
  EXPECT_TRUE(torch::equal(qlty::zarr::Array::open(dir / "softmax/labels/argmax/0").read().to(torch::kLong),
                           ref.argmax(1, true)));
  o.activation = qlty::BlockwiseOptions::Activation::Sigmoid;
  o.output_dtype = torch::kByte;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "u8", o);
  auto u8 = qlty::zarr::Array::open(dir / "u8/0");
  EXPECT_EQ(u8.metadata().dtype, qlty::zarr::DataType::UInt8);
  auto want = ref.sigmoid().mul(255).round().to(torch::kByte);
  EXPECT_LE((u8.read().to(torch::kInt) - want.to(torch::kInt)).abs().max().item<int>(), 1);  // rounding at .5
  o.output_dtype = torch::kHalf;
  o.activation = qlty::BlockwiseOptions::Activation::None;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "f16", o);
  auto f16 = qlty::zarr::Array::open(dir / "f16/0").read();
  EXPECT_EQ(f16.scalar_type(), torch::kHalf);
  EXPECT_LT((f16.to(torch::kFloat) - ref).abs().max().item<double>(), 2e-3);
  // bfloat16 on the CPU: the windows reach the model in bfloat16; the result is the float32 one to bf16 precision
  qlty::BlockModel bf16 = [](const torch::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == torch::kBFloat16, "expected bfloat16 windows, got ", t.scalar_type());
    return (t * 2).sum(1, true);
  };
  qlty::BlockwiseOptions p;
  p.window = {4, 8, 8};
  p.step = {3, 6, 6};
  p.precision = torch::kBFloat16;
  qlty::infer_blockwise(bf16, qlty::BlockInput::from_tensor(x), dir / "bf16", p);
  auto exact = (x * 2).sum(1, true);
  EXPECT_LT((qlty::zarr::Array::open(dir / "bf16/0").read() - exact).abs().max().item<double>(), 0.05);
  // bad settings: clear errors, nothing written
  auto bad = p;
  bad.precision = torch::kInt;
  expect_error<c10::Error>([&] { qlty::infer_blockwise(bf16, qlty::BlockInput::from_tensor(x), dir / "bad", bad); },
                           {"precision must be float32, float16 or bfloat16, got Int"});
  bad = p;
  bad.output_dtype = torch::kDouble;
  expect_error<c10::Error>([&] { qlty::infer_blockwise(bf16, qlty::BlockInput::from_tensor(x), dir / "bad", bad); },
                           {"output_dtype must be float32, float16 or uint8, got Double"});
  bad = p;
  bad.tta_flip = true;
  bad.tta_axes = {3};
  expect_error<c10::Error>([&] { qlty::infer_blockwise(bf16, qlty::BlockInput::from_tensor(x), dir / "bad", bad); },
                           {"tta_axes must be spatial axes in [0, 3), got [3]"});
  bad = p;
  bad.slicewise = true;
  expect_error<c10::Error>([&] { qlty::infer_blockwise(bf16, qlty::BlockInput::from_tensor(x), dir / "bad", bad); },
                           {"slicewise runs a 2D model over a 3D input with windows of depth 1"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "bad"));
}

TEST_P(BlockwiseDevice, GaussianFlipsAndHalfPrecisionOnTheModelsDevice) {
  const torch::Device device = GetParam();
  QLTY_SKIP_IF_ABSENT(device);
  TempDir dir;
  auto module = conv_model(3, 1, 2, dir / "m.pt");
  auto model = as_model(module, device);
  torch::manual_seed(24);
  auto x = torch::randn({1, 1, 20, 18, 16});
  qlty::NCZYXQuilt q(20, 18, 16, 8, 6, qlty::Blend::gaussian());
  const Ref ref = reference_tta<3>(q, x.to(device), model, {0, 1, 2});
  qlty::BlockwiseOptions o;
  o.window = 8;
  o.step = 6;
  o.blend = qlty::Blend::gaussian();
  o.tta_flip = true;
  o.device = device;
  o.block = {8};
  o.chunks = {8};
  o.write_std = true;
  qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "out.zarr", o);
  expect_matches(dir / "out.zarr", {ref.mean.cpu(), ref.std.cpu(), ref.argmax.cpu()}, true, false);
  if (device.is_cuda()) {  // autocast: float16 convolutions, float32 accumulation
    o.precision = torch::kHalf;
    o.write_std = false;
    qlty::infer_blockwise(model, qlty::BlockInput::from_tensor(x), dir / "half.zarr", o);
    auto got = qlty::zarr::Array::open(dir / "half.zarr/0").read();
    EXPECT_LT((got - ref.mean.cpu()).abs().max().item<double>(), 1e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, BlockwiseDevice, testing::ValuesIn(qlty_test::devices()), qlty_test::device_name);

}  // namespace
