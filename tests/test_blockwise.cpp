// qlty/blockwise.hpp: blockwise inference equals the in-memory quilt pipeline for any block size (2D, 3D, tensor
// and Zarr inputs, std and argmax); a stopped run resumes to identical bytes; other settings are refused; models
// that fail or return wrong shapes give clear errors and leave no block marked done. Models are TorchScript
// modules defined and saved in C++.
#include "common.hpp"

#include <qlty/blockwise.hpp>

#include "models.hpp"

#include <fstream>
#include <iterator>

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
  expect_error<c10::ValueError>([&] { qlty::infer_blockwise(identity, x, dir / "a.zarr", o); },
                                {"NCYXQuilt", "window along Y must not exceed the image size 20, got 30"});
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
                            {"[qlty.model]", "block 0", "Long", "floating point"});
  EXPECT_EQ(qlty::blockwise_status(dir / "c.zarr").blocks_done, 0);
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

INSTANTIATE_TEST_SUITE_P(Devices, BlockwiseDevice, testing::ValuesIn(qlty_test::devices()), qlty_test::device_name);

}  // namespace
