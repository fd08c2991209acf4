// `qlty infer --shards` writes OME-Zarr 0.5 with sharded arrays: the same values as an OME-Zarr 0.4 run, fewer
// files, three parts that never rewrite one another's shards and together give one run's bytes; ome-zarr-py reads it;
// `qlty info` and `qlty convert` handle sharded arrays and 0.5 groups; bad settings name their flag.
#include "cli_common.hpp"

#include <sys/stat.h>

namespace {

using namespace qlty_cli_test;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_cli_shards") {}
};

/// The inode of every file under `dir` (outside `.qlty`), by relative path: a file replaced by rename gets another.
std::map<std::string, ino_t> inodes(const std::string& dir) {
  std::map<std::string, std::string> files;
  files_under(dir, "", files);
  std::map<std::string, ino_t> out;
  for (const auto& [name, bytes] : files) {
    struct stat st;
    if (name.rfind(".qlty/", 0) != 0 && name.find("/c/") != std::string::npos &&
        ::stat((dir + "/" + name).c_str(), &st) == 0)
      out[name] = st.st_ino;
  }
  return out;
}

int64_t files_in(const std::string& dir) {
  std::map<std::string, std::string> files;
  files_under(dir, "", files);
  return static_cast<int64_t>(files.size());
}

TEST(CliShards, ShardedOmeZarr05EqualsTheV2RunAndPartsNeverShareAShard) {
  TempDir dir;
  torch::manual_seed(5);
  const auto input = torch::randn({1, 1, 40, 36, 32});
  qlty::zarr::Array::create(dir / "in.zarr", qlty::zarr::ArrayOptions(input.sizes().vec(), {1, 1, 10, 10, 10}))
      .write({0, 0, 0, 0, 0}, input);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {
        "infer", "-i", dir / "in.zarr", "-o",       out,         "-w", "12",       "-s", "9",
        "-b",    "2",  "--std",         "--argmax", "--threads", "1",  "--chunks", "8",  "-q"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ASSERT_EQ(run(args(dir / "v2.zarr", {}), dir.path).code, 0);
  auto r = run(args(dir / "one.zarr", {"--shards", "16"}), dir.path);  // --zarr-format 3 implied
  ASSERT_EQ(r.code, 0) << r.err;
  const auto v2 = qlty::zarr::Array::open(dir / "v2.zarr/0").read();
  const auto v3 = qlty::zarr::Array::open(dir / "one.zarr/0");
  EXPECT_TRUE(v3.sharded());
  EXPECT_TRUE(torch::equal(v3.read(), v2)) << "the same values as OME-Zarr 0.4";
  EXPECT_TRUE(torch::equal(qlty::zarr::Array::open(dir / "one.zarr/std").read(),
                           qlty::zarr::Array::open(dir / "v2.zarr/std").read()));
  // 8 chunks in every shard: 40 x 36 x 32 in 8^3 chunks is 5 * 5 * 4 = 100 files per channel, in 16^3 shards
  // 3 * 3 * 2 = 18 (edge shards are partial)
  EXPECT_EQ(files_in(dir / "v2.zarr/0"), 2 * 100 + 2);  // + .zarray, .zattrs
  EXPECT_EQ(files_in(dir / "one.zarr/0"), 2 * 18 + 1);  // + zarr.json

  r = run({"info", dir / "one.zarr"}, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* part :
       {"Zarr v3 group", "OME-Zarr image (NGFF 0.5), axes tczyx",
        "0: Zarr v3 array, shape [1, 2, 40, 36, 32], shards [1, 1, 16, 16, 16] of inner chunks [1, 1, "
        "8, 8, 8] (8 per shard, index at the end with crc32c)",
        "36 of 36 shard files stored", "1 of 1 blocks done (complete)"})
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " not in " << r.out;

  // Parts 0, 1, 2 of 3 one after another: no part replaces a shard file another part wrote (blocks are whole shards),
  // and together they give the bytes of one run. Then the three again, started together.
  std::map<std::string, ino_t> seen;
  for (int k = 0; k < 3; ++k) {
    r = run(args(dir / "parts.zarr", {"--shards", "16", "--block", "8", "--part", std::to_string(k) + "/3"}), dir.path);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto now = inodes(dir / "parts.zarr");
    for (const auto& [name, ino] : seen) EXPECT_EQ(now.at(name), ino) << name << " rewritten by part " << k;
    EXPECT_GT(now.size(), seen.size()) << "part " << k << " wrote shards";
    seen = now;
  }
  auto same_files = [&](const std::string& got) {
    std::map<std::string, std::string> a, b;
    files_under(got, "", a);
    files_under(dir / "blocks8.zarr", "", b);
    for (const auto& [name, bytes] : b)
      if (name.rfind(".qlty/", 0) != 0 && name.find(".lock") == std::string::npos)
        EXPECT_TRUE(a.count(name) && a.at(name) == bytes) << got << ": " << name;
  };
  ASSERT_EQ(run(args(dir / "blocks8.zarr", {"--shards", "16", "--block", "8"}), dir.path).code, 0);
  same_files(dir / "parts.zarr");
  // a run stopped after 2 blocks and resumed gives the same bytes
  r = run(args(dir / "resumed.zarr", {"--shards", "16", "--block", "8", "--max-blocks", "2"}), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_LT(inodes(dir / "resumed.zarr").size(), inodes(dir / "blocks8.zarr").size()) << "stopped early";
  ASSERT_EQ(run(args(dir / "resumed.zarr", {"--shards", "16", "--block", "8"}), dir.path).code, 0);
  same_files(dir / "resumed.zarr");
  std::vector<pid_t> pids;
  for (int k = 0; k < 3; ++k)
    pids.push_back(
        start(args(dir / "together.zarr", {"--shards", "16", "--block", "8", "--part", std::to_string(k) + "/3"}),
              dir.path, QLTY_CLI, std::to_string(k)));
  for (int k = 0; k < 3; ++k) EXPECT_EQ(wait_for(pids[k]), 0) << slurp(dir / (std::to_string(k) + "stderr"));
  same_files(dir / "together.zarr");

  // convert: the 0.5 group's first scale to .npy, and a Zarr v2 array to a sharded v3 one
  ASSERT_EQ(run({"convert", dir / "one.zarr", dir / "one.npy", "-q"}, dir.path).code, 0);
  ASSERT_EQ(
      run({"convert", dir / "one.npy", dir / "back.zarr", "--shards", "16,16,32", "--chunks", "8", "-q"}, dir.path)
          .code,
      0);
  const auto back = qlty::zarr::Array::open(dir / "back.zarr");
  EXPECT_EQ(back.chunks(), (std::vector<int64_t>{1, 1, 16, 16, 32}));
  EXPECT_EQ(back.inner_chunks(), (std::vector<int64_t>{1, 1, 8, 8, 8}));
  EXPECT_TRUE(torch::equal(back.read(), v2));

#ifdef QLTY_VENV_PYTHON
  // ome-zarr-py (napari's reader) opens it: levels, axes and data; ome-zarr-models validates it as NGFF 0.5
  EXPECT_EQ(std::system((std::string(QLTY_VENV_PYTHON) + " " + QLTY_OME_ZARR_CHECK + " " + (dir / "one.zarr") + " " +
                         (dir / "v2.zarr"))
                            .c_str()),
            0);
#endif

  // bad settings name their flag
  expect_fails(run(args(dir / "x.zarr", {"--shards", "12"}), dir.path), {"--shards", "whole chunks", "[8, 8, 8]"});
  expect_fails(run(args(dir / "x.zarr", {"--shards", "16", "--zarr-format", "2"}), dir.path),
               {"--shards", "Zarr v3 feature"});
  expect_fails(run({"convert", dir / "one.npy", dir / "y.zarr", "--shards", "12", "--chunks", "8"}, dir.path),
               {"--shards", "whole chunks"});
  // a resume with other shards is refused, naming the setting
  expect_fails(run(args(dir / "one.zarr", {"--shards", "32"}), dir.path), {"shards", "[16,16,16] there"});
}

}  // namespace
