// The disk-cached quilts' internal parts on their own: the checkpoint journal and the chunk store.
#include "../common.hpp"

#include <qlty/large_quilt.hpp>

#include <fstream>
#include <iterator>

#include <unistd.h>

namespace {

using torch::indexing::Slice;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_journal") {}
};

TEST(CheckpointJournal, JournalRoundTripAndDamage) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> e{{"sum/0.0.0.0", {1, 2, 3}}, {"stitched", {0, 1}}};
  auto j = qlty::detail::journal_encode(e);
  auto back = qlty::detail::journal_decode(j);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, e);
  for (size_t cut = 0; cut < j.size(); ++cut)
    EXPECT_FALSE(qlty::detail::journal_decode(std::vector<uint8_t>(j.begin(), j.begin() + cut)).has_value());
  j[12] ^= 1;
  EXPECT_FALSE(qlty::detail::journal_decode(j).has_value());
}

TEST(CheckpointJournal, CommitAndRecoverOnTheirOwn) {
  TempDir dir;
  const std::string folder = dir / "f";
  auto read = [&](const std::string& rel) {
    std::ifstream f(folder + "/" + rel);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  qlty::detail::CheckpointJournal j(folder, {"list"}, {"a"}, false);
  auto stage = [&](const std::string& target, const std::string& text, uint64_t seq) {
    const auto staged = qlty::detail::CheckpointJournal::staged_name(target, seq);
    qlty::detail::write_new_file(j.path(staged), text.data(), text.size(), false);
    return std::make_pair(target, staged);
  };
  EXPECT_EQ(qlty::detail::CheckpointJournal::staged_name("a/0.1", 7).rfind("a/.0.1.ckpt.", 0), 0u);
  j.commit({stage("a/0.0", "one", 1), stage("list", "L1", 2)}, 2);
  EXPECT_EQ(read("a/0.0"), "one");
  EXPECT_EQ(read("list"), "L1");
  EXPECT_FALSE(qlty::detail::path_exists(j.path("journal")));

  // A process staged two files and wrote its journal, then died: recover() renames them.
  const qlty::detail::Renames pending{stage("a/0.0", "two", 3), stage("list", "L2", 4)};
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
  for (const auto& [t, st] : pending) entries.emplace_back(t, std::vector<uint8_t>(st.begin(), st.end()));
  const auto bytes = qlty::detail::journal_encode(entries);
  qlty::detail::atomic_write(j.path("journal"), bytes.data(), bytes.size(), false);
  auto orphan = stage("a/0.1", "never committed", 5);  // staged, in no journal
  qlty::detail::CheckpointJournal(folder, {"list"}, {"a"}, false).recover();
  EXPECT_EQ(read("a/0.0"), "two");
  EXPECT_EQ(read("list"), "L2");
  EXPECT_FALSE(qlty::detail::path_exists(j.path(orphan.second)));
  EXPECT_FALSE(qlty::detail::path_exists(j.path("a/0.1")));
  EXPECT_FALSE(qlty::detail::path_exists(j.path("journal")));
  // Targets outside the folder's own files are refused.
  EXPECT_FALSE(j.entry_ok("b/0.0", "b/.0.0.ckpt.1.1.tmp"));
  EXPECT_FALSE(j.entry_ok("a/../x", "a/.x.ckpt.1.1.tmp"));
  EXPECT_FALSE(j.entry_ok("a/0.0", ".0.0.ckpt.1.1.tmp"));
  EXPECT_TRUE(j.entry_ok("a/0.0", "a/.0.0.ckpt.1.1.tmp"));
}

TEST(ChunkStore, SpillsReadBackAndCommits) {
  TempDir dir;
  const std::string folder = dir / "s.zarr";
  auto g = qlty::zarr::Group::create(folder);
  qlty::zarr::ArrayOptions ao({1, 2, 16, 16}, {1, 2, 8, 8});
  ao.codecs = {};
  qlty::detail::ChunkStore<2, 1> store(folder, {8, 8}, {2, 2}, 2 * 2 * 8 * 8 * 4);  // room for two chunks
  store.attach(0, g.create_array("a", ao));
  for (int64_t k = 0; k < 4; ++k) {
    float* c = store.write(0, 0, {k / 2, k % 2});
    for (int i = 0; i < 2 * 64; ++i) c[i] += static_cast<float>(k + 1);
    store.evict();
  }
  EXPECT_GT(store.spills(), 0);
  EXPECT_LE(store.cached_bytes(), 2 * 2 * 8 * 8 * 4);
  for (int64_t k = 0; k < 4; ++k)
    EXPECT_TRUE((store.read(0, 0, {k / 2, k % 2}) == static_cast<float>(k + 1)).all().item<bool>()) << k;
  // Nothing reached the array yet: it still reads as the fill value.
  auto arr = qlty::zarr::Array::open(folder + "/a");
  EXPECT_EQ(arr.read().abs().sum().item<float>(), 0.0f);
  qlty::detail::Renames renames;
  const size_t fresh = store.stage_changes(renames);
  EXPECT_EQ(renames.size(), 4u);  // two cached and staged now, two spilled before
  qlty::detail::CheckpointJournal(folder, {}, {"a"}, false).commit(renames, fresh);
  store.committed();
  EXPECT_FALSE(store.changed());
  auto all = arr.read();
  for (int64_t k = 0; k < 4; ++k)
    EXPECT_TRUE((all.index({0, Slice(), Slice(k / 2 * 8, k / 2 * 8 + 8), Slice(k % 2 * 8, k % 2 * 8 + 8)}) ==
                 static_cast<float>(k + 1))
                    .all()
                    .item<bool>());
  // Adding to a chunk again reloads it from the array.
  const auto reloads = store.reloads();
  store.write(0, 0, {0, 0})[0] += 1;
  EXPECT_EQ(store.reloads(), reloads + 1);  // chunk (0, 0) left the cache first
  EXPECT_EQ(store.read(0, 0, {0, 0})[0][0][0].item<float>(), 2.0f);
}

}  // namespace
