// The `qlty` program against the findings of an adversarial review: resumes that would mix two inputs, two axis
// orders or two model heads are refused; hostile numbers in flags are refused by name; values that pass every
// check give finite results; pad values apply after the float conversion; a .npy changed during a run is a clear
// error; parts finishing together all succeed; `qlty info` lists every part of any part count, in bounded work.
#include "cli_common.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../models.hpp"
#include "formats/input.hpp"

namespace {

using namespace qlty_cli_test;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_cli_review") {}
};

torch::Tensor read_output(const std::string& out, const std::string& array = "0") {
  return qlty::zarr::Array::open(out + "/" + array).read();
}

TEST(CliReview, AResumeOverARewrittenChunkIsRefused) {
  TempDir dir;
  // 27 chunks: the fingerprint's samples are chunks 0, 13 and 26; chunk 1 is rewritten.
  torch::manual_seed(1);
  auto x = torch::randn({24, 24, 24});
  qlty::zarr::Array::create(dir / "in.zarr", qlty::zarr::ArrayOptions({24, 24, 24}, {8, 8, 8})).write({0, 0, 0}, x);
  std::vector<std::string> args = {"infer", "-i", dir / "in.zarr", "-o", dir / "out.zarr", "-w", "8",
                                   "-s",    "6",  "--block",       "8",  "--chunks",       "8",  "--quiet"};
  auto first = args;
  first.insert(first.end(), {"--max-blocks", "1"});
  ASSERT_EQ(run(first, dir.path).code, 0);
  qlty::zarr::Array::open(dir / "in.zarr").write({0, 0, 8}, torch::full({8, 8, 8}, 5.0f));
  expect_fails(run(args, dir.path), {"[qlty.checkpoint]", "input (--input)", "in.zarr", "--overwrite to start over"});
  // Started over on the new input, an unchanged input resumes.
  first.push_back("--overwrite");
  ASSERT_EQ(run(first, dir.path).code, 0);
  const auto r = run(args, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(qlty::detail::is_directory(dir / "out.zarr/0"));
}

TEST(CliReview, AResumeWithOtherAxesOrAnotherOutputKeyIsRefused) {
  TempDir dir;
  torch::manual_seed(2);
  write_npy_by_hand(dir / "cube.npy", torch::randn({16, 16, 16}), "<f4");
  auto infer = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"infer", "-i", dir / "cube.npy", "-w", "8", "--block", "8", "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path);
  };
  ASSERT_EQ(infer({"-o", dir / "a.zarr", "--axes", "xyz", "--max-blocks", "1"}).code, 0);
  expect_fails(infer({"-o", dir / "a.zarr", "--axes", "zyx"}),
               {"[qlty.checkpoint]", "--axes: \"xyz\" there, none now"});
  expect_fails(infer({"-o", dir / "a.zarr"}), {"[qlty.checkpoint]", "--axes:"});
  const auto r = infer({"-o", dir / "a.zarr", "--axes", "xyz"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The default order, given or not, is the same run.
  ASSERT_EQ(infer({"-o", dir / "b.zarr", "--max-blocks", "1"}).code, 0);
  ASSERT_EQ(infer({"-o", dir / "b.zarr", "--axes", "zyx"}).code, 0);

  qlty_test::script_model("    return {'aux': x * 3.0, 'seg': x * 2.0}", dir / "dict.pt");
  ASSERT_EQ(infer({"-o", dir / "k.zarr", "-m", dir / "dict.pt", "--output-key", "seg", "--max-blocks", "1"}).code, 0);
  expect_fails(infer({"-o", dir / "k.zarr", "-m", dir / "dict.pt", "--output-key", "aux"}),
               {"[qlty.checkpoint]", "--model:", "output seg", "there", "output aux", "now"});
  ASSERT_EQ(infer({"-o", dir / "k.zarr", "-m", dir / "dict.pt", "--output-key", "seg"}).code, 0);
  EXPECT_LT(
      (read_output(dir / "k.zarr") - 2 * qlty::tool::NpyFile(dir / "cube.npy").read_all()).abs().max().item<float>(),
      1e-5);
  expect_fails(infer({"-o", dir / "n.zarr", "--output-key", "seg"}), {"--output-key", "built-in network"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "n.zarr"));
}

TEST(CliReview, HostileNumbersInFlagsAreRefusedByName) {
  TempDir dir;
  write_npy_by_hand(dir / "vol.npy", torch::randn({32, 32, 32}), "<f4");
  auto infer = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"infer", "-i", dir / "vol.npy", "-o", dir / "out.zarr", "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a, dir.path);
  };
  expect_fails(infer({"-w", "8", "--block-memory", "8796093022208"}),
               {"--block-memory", "must be in [1, 16777216] MiB", "got 8796093022208"});
  expect_fails(infer({"-w", "8", "--block-memory", "0"}), {"--block-memory", "must be in [1, 16777216] MiB", "got 0"});
  expect_fails(infer({"-w", "100000"}),
               {"--window", "[100000, 100000, 100000]", "MiB a block may take", "the input is [1, 1, 32, 32, 32]"});
  expect_fails(infer({"-w", "9223372036854775807"}), {"--window", "the input is [1, 1, 32, 32, 32]"});
  expect_fails(infer({"-w", "8", "--threads", "4294967297"}), {"--threads", "got 4294967297"});
  expect_fails(infer({"-w", "8", "--threads", "20000"}), {"--threads", "at most 4 per core", "got 20000"});
  expect_fails(infer({"-w", "8", "--threads", "-1"}), {"--threads", "must be in [0, ", "got -1"});
  expect_fails(run({"demo", "--output", dir / "demo", "--threads", "4294967297"}, dir.path), {"--threads"});
  expect_fails(run({"demo", "--output", dir / "demo", "--size", "100000", "--window", "8"}, dir.path),
               {"--size", "100000 not in range 8 to 1024"});
  expect_fails(run({"demo", "--output", dir / "demo", "--noise", "nan"}, dir.path), {"--noise", "got nan"});
  expect_fails(infer({"-w", "8", "--blend", "gaussian", "--sigma-scale", "1e-30"}),
               {"--sigma-scale", "underflows float32"});
  for (const char* v : {"inf", "nan", "-inf"})
    expect_fails(infer({"-w", "40", "--pad-value", v}), {"--pad-value", "must be finite"});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "out.zarr"));
}

TEST(CliReview, ValuesThatPassEveryCheckGiveFiniteResults) {
  TempDir dir;
  torch::manual_seed(3);
  auto x = torch::rand({20, 24});
  write_npy_by_hand(dir / "img.npy", x, "<f4");
  auto w = torch::rand({8, 8}, torch::kFloat64) + 0.1;
  write_npy_by_hand(dir / "unit.npy", w / w.max(), "<f8");
  write_npy_by_hand(dir / "huge.npy", w * 1e300, "<f8");
  write_npy_by_hand(dir / "big.npy", w * 3e38, "<f8");
  auto infer = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"infer", "-i", dir / "img.npy", "-o",     dir / out, "-w", "8",
                                  "-s",    "5",  "--std",         "--quiet"};
    a.insert(a.end(), extra.begin(), extra.end());
    const auto r = run(a, dir.path);
    EXPECT_EQ(r.code, 0) << r.err;
  };
  infer("unit.zarr", {"--blend", "custom", "--blend-window", dir / "unit.npy"});
  for (const char* name : {"huge", "big"}) {
    infer(std::string(name) + ".zarr", {"--blend", "custom", "--blend-window", dir / (std::string(name) + ".npy")});
    for (const char* array : {"0", "std"}) {
      auto got = read_output(dir / (std::string(name) + ".zarr"), array);
      EXPECT_TRUE(got.isfinite().all().item<bool>()) << name << " " << array;
      EXPECT_TRUE(torch::allclose(got, read_output(dir / "unit.zarr", array), 1e-5, 1e-5)) << name << " " << array;
    }
  }
  infer("tiny.zarr", {"--blend", "gaussian", "--sigma-scale", "1e-19"});
  EXPECT_TRUE(read_output(dir / "tiny.zarr").isfinite().all().item<bool>());
  // A finite pad value the built-in network overflows on (its edges square the gradients), and predictions beyond
  // float16 with --output-dtype float16: a clear error, and no block marked done.
  auto r = run({"infer", "-i", dir / "img.npy", "-o", dir / "pad.zarr", "-w", "32", "--pad-value", "1e30", "--std"},
               dir.path);
  expect_fails(r, {"[qlty.model]", "pad.zarr: block 0", "NaN or infinite values", "overflow float32",
                   "nothing of the block was written"});
  EXPECT_TRUE(qlty::detail::list_dir(dir / "pad.zarr/.qlty/done").empty());
  qlty_test::script_model("    return x * 1e6", dir / "big.pt");
  r = run({"infer", "-i", dir / "img.npy", "-o", dir / "half.zarr", "-w", "8", "-m", dir / "big.pt", "--output-dtype",
           "float16"},
          dir.path);
  expect_fails(r, {"[qlty.model]", "overflow Half"});
  EXPECT_TRUE(qlty::detail::list_dir(dir / "half.zarr/.qlty/done").empty());
}

TEST(CliReview, PadValuesApplyAfterTheFloatConversion) {
  TempDir dir;
  torch::manual_seed(4);
  auto u8 = torch::randint(0, 256, {20, 24}, torch::kByte);
  write_npy_by_hand(dir / "u8.npy", u8, "|u1");
  write_npy_by_hand(dir / "f32.npy", u8.to(torch::kFloat), "<f4");
  for (const char* value : {"0.5", "-1", "300.25"}) {
    auto infer = [&](const char* in, const char* out) {
      const auto r =
          run({"infer", "-i", dir / in, "-o", dir / out, "-w", "32", "--pad-value", value, "--overwrite", "--quiet"},
              dir.path);
      EXPECT_EQ(r.code, 0) << value << r.err;
    };
    infer("u8.npy", "u8.zarr");
    infer("f32.npy", "f32.zarr");
    EXPECT_TRUE(torch::equal(read_output(dir / "u8.zarr"), read_output(dir / "f32.zarr"))) << value;
  }
}

TEST(CliReview, NpyBoxesAndAFileChangedWhileItIsRead) {
  TempDir dir;
  torch::manual_seed(5);
  auto x = torch::randn({3, 5, 40, 70});
  write_npy_by_hand(dir / "x.npy", x, "<f4");
  const qlty::tool::NpyFile f(dir / "x.npy");
  EXPECT_TRUE(torch::equal(f.read_all(), x));
  std::mt19937 rng(9);
  for (int trial = 0; trial < 200; ++trial) {  // runs of every length, whole rows, spans and single pixels
    std::vector<int64_t> off, ext;
    for (int a = 0; a < 4; ++a) {
      const int64_t S = x.size(a), lo = std::uniform_int_distribution<int64_t>(0, S - 1)(rng);
      const int64_t n = trial % 5 == 0 ? S - lo : std::uniform_int_distribution<int64_t>(1, S - lo)(rng);
      off.push_back(trial % 7 == 0 ? 0 : lo);
      ext.push_back(trial % 7 == 0 ? S : n);
    }
    auto want = x;
    for (int a = 0; a < 4; ++a) want = want.narrow(a, off[a], ext[a]);
    ASSERT_TRUE(torch::equal(f.read(off, ext), want)) << c10::IntArrayRef(off) << " " << c10::IntArrayRef(ext);
  }
  auto u16 = torch::randint(0, 65536, {6, 7}, torch::kInt);
  write_npy_by_hand(dir / "u16.npy", u16.to(torch::kShort), "<u2");
  EXPECT_TRUE(torch::equal(qlty::tool::NpyFile(dir / "u16.npy").read_all().to(torch::kInt), u16));  // uint16 from 2.3
  // Truncated (as `truncate -s` does), or rewritten in place (as np.save does): an error naming the file.
  ASSERT_EQ(::truncate((dir / "x.npy").c_str(), 4000), 0);
  qlty_test::expect_error<qlty::Error>(
      [&] {
        f.read({0, 0, 0, 0}, {3, 5, 40, 70});
      },
      {"[qlty.input]", "x.npy", "changed while it was being read"});
  write_npy_by_hand(dir / "y.npy", x, "<f4");
  const qlty::tool::NpyFile g(dir / "y.npy");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_npy_by_hand(dir / "y.npy", x * 2, "<f4");
  qlty_test::expect_error<qlty::Error>(
      [&] {
        g.read({0, 0, 0, 0}, {1, 1, 1, 1});
      },
      {"y.npy", "changed while it was being read", "rerun the same command"});
  // The program: an input truncated between two runs is refused cleanly (no SIGBUS).
  write_npy_by_hand(dir / "z.npy", torch::randn({16, 16, 16}), "<f4");
  auto r = run(
      {"infer", "-i", dir / "z.npy", "-o", dir / "z.zarr", "-w", "8", "--block", "8", "--max-blocks", "1", "--quiet"},
      dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(::truncate((dir / "z.npy").c_str(), 5000), 0);
  expect_fails(run({"infer", "-i", dir / "z.npy", "-o", dir / "z.zarr", "-w", "8", "--block", "8"}, dir.path),
               {"z.npy", "truncated"});
}

TEST(CliReview, PartsFinishingTogetherAllSucceed) {
  TempDir dir;
  write_npy_by_hand(dir / "vol.npy", torch::randn({24, 24, 24}), "<f4");
  auto args = [&](const std::string& part) {
    std::vector<std::string> a = {"infer", "-i", dir / "vol.npy", "-o", dir / "out.zarr",
                                  "-w",    "8",  "--block",       "8",  "--quiet"};
    if (!part.empty()) a.insert(a.end(), {"--part", part});
    return a;
  };
  ASSERT_EQ(run(args(""), dir.path).code, 0);
  for (int round = 0; round < 3; ++round) {
    // Leftover carry files, as a killed part leaves them.
    qlty::detail::make_dirs(dir / "out.zarr/.qlty/carry/sub");
    for (int i = 0; i < 100; ++i) std::ofstream(dir / ("out.zarr/.qlty/carry/" + std::to_string(i))) << "x";
    std::vector<pid_t> pids;
    for (int k = 0; k < 8; ++k)
      pids.push_back(start(args(std::to_string(k) + "/8"), dir.path, QLTY_CLI, std::to_string(k)));
    for (int k = 0; k < 8; ++k)
      EXPECT_EQ(wait_for(pids[k]), 0) << "round " << round << " part " << k << ": "
                                      << slurp(dir / (std::to_string(k) + "stderr"));
    EXPECT_FALSE(qlty::detail::path_exists(dir / "out.zarr/.qlty/carry"));
  }
}

TEST(CliReview, InfoListsEveryPartInBoundedWork) {
  TempDir dir;
  write_npy_by_hand(dir / "vol.npy", torch::randn({32, 32, 32}), "<f4");
  auto r = run({"infer", "-i", dir / "vol.npy", "-o", dir / "out.zarr", "-w", "8", "--block", "8", "--chunks", "8",
                "--part", "99/100", "--quiet"},
               dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run({"info", dir / "out.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* part :
       {"1 of 64 blocks done (run the parts not complete to finish)", "part 99/100: 1 of 1 blocks done (complete)",
        "(empty share: nothing to run)", "(missing: never started)"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in " << r.out;
  EXPECT_EQ(r.out.find("rerun the same command"), std::string::npos) << r.out;
  // Every part is accounted for: the blocks of the lines add up to the output's.
  int64_t blocks = 0;
  for (size_t at = 0; (at = r.out.find(" blocks done (", at)) != std::string::npos; ++at) {
    const auto of = r.out.rfind(" of ", at);
    blocks += std::stoll(r.out.substr(of + 4, at - of - 4));
  }
  EXPECT_EQ(blocks, 64 + 64);  // the headline's 64, and the parts' 64

  // A crafted manifest of 4e9 blocks and a part count of 4e9: info answers at once, naming what it lists.
  const std::string m = dir / "out.zarr/.qlty/manifest.json";
  auto j = nlohmann::json::parse(slurp(m));
  j["layout"]["input_shape"] = {1, 1, 4000, 1000, 1000};
  j["layout"]["block"] = {1, 1, 1};
  j["blocks_total"] = int64_t(4000000000);
  std::ofstream(m) << j.dump();
  qlty::detail::make_dirs(dir / "out.zarr/.qlty/parts/4000000000");
  std::ofstream(dir / "out.zarr/.qlty/parts/4000000000/5") << "";
  r = run({"info", dir / "out.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* part : {"of 4000000000 blocks done", "part 5/4000000000: 0 of 1 blocks done (started)",
                           "and 3999999999 more parts of 4000000000 never started"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in " << r.out;
}

}  // namespace
