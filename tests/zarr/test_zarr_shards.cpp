// Sharded Zarr v3 arrays (`sharding_indexed`): random region reads and writes against an in-memory reference over
// codecs and index layouts; reads that fetch only what a region needs; empty inner chunks; hostile shards; writers
// in several processes sharing shards; the file count; zarr-python 3 and TensorStore both ways.
#include "helpers.hpp"

#include <qlty/zarr.hpp>

#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <random>
#include <thread>

namespace {

using qlty_test::expect_qlty_error;
using qlty_test::write_text;

using qlty::zarr::Array;
using qlty::zarr::ArrayOptions;
using qlty::zarr::Codec;
using qlty::zarr::DataType;
using json = nlohmann::json;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_shards") {}
};

using qlty_zarr_test::read_bytes;
using qlty_zarr_test::run;
using qlty_zarr_test::write_bytes;

/// Rewrites an array's zarr.json with its index at the start or end, with or without a checksum, in either byte
/// order: what other writers may choose, which our writer then honours too.
void set_index_layout(const std::string& path, bool at_start, bool crc, bool big_endian) {
  auto m = Array::open(path).metadata();
  m.index_at_start = at_start;
  m.index_crc32c = crc;
  m.index_big_endian = big_endian;
  write_text(path + "/zarr.json", qlty::detail::dump_metadata(m));
}

struct Layout {
  std::string name;
  std::vector<Codec> codecs;
  bool at_start, crc, big_endian;
};

class ShardedRoundTrip : public testing::TestWithParam<Layout> {};

TEST_P(ShardedRoundTrip, RandomBoxesMatchAnInMemoryReference) {
  const auto& p = GetParam();
  TempDir dir;
  // 3-D, partial edge shards, inner chunks beyond the edge, a fill value that is not 0
  ArrayOptions o({21, 30, 17}, {8, 12, 8}, DataType::Float32);
  o.inner_chunks = {4, 4, 8};
  o.zarr_format = 3;
  o.codecs = p.codecs;
  o.fill_value = -2.5;
  Array::create(dir / "a", o);
  set_index_layout(dir / "a", p.at_start, p.crc, p.big_endian);
  auto a = Array::open(dir / "a");
  ASSERT_TRUE(a.sharded());
  EXPECT_EQ(a.inner_chunks(), (std::vector<int64_t>{4, 4, 8}));
  auto ref = torch::full({21, 30, 17}, -2.5, torch::kFloat);
  std::mt19937 rng(7);
  for (int step = 0; step < 40; ++step) {
    std::vector<int64_t> off(3), shape(3);
    for (int d = 0; d < 3; ++d) {
      off[d] = std::uniform_int_distribution<int64_t>(0, ref.size(d) - 1)(rng);
      shape[d] = std::uniform_int_distribution<int64_t>(1, ref.size(d) - off[d])(rng);
    }
    auto box = ref.narrow(0, off[0], shape[0]).narrow(1, off[1], shape[1]).narrow(2, off[2], shape[2]);
    if (step % 2 == 0) {
      const auto values = torch::randint(-50, 50, shape, torch::TensorOptions().dtype(torch::kFloat)) / 4;
      a.write(off, values);
      box.copy_(values);
    } else {
      ASSERT_TRUE(torch::equal(a.read(off, shape), box)) << p.name << " step " << step;
    }
  }
  EXPECT_TRUE(torch::equal(a.read(), ref)) << p.name;
  EXPECT_TRUE(
      torch::equal(a.read_chunk({2, 2, 2}),
                   torch::nn::functional::pad(ref.narrow(0, 16, 5).narrow(1, 24, 6).narrow(2, 16, 1),
                                              torch::nn::functional::PadFuncOptions({0, 7, 0, 6, 0, 3}).value(-2.5))))
      << "a whole edge shard, padded with the fill value";
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ShardedRoundTrip,
    testing::Values(Layout{"raw_end_crc", {}, false, true, false},
                    Layout{"zstd_end_crc", {Codec::zstd(3)}, false, true, false},
                    Layout{"blosc_start_crc", {Codec::blosc()}, true, true, false},
                    Layout{"gzip_start_nocrc", {Codec::gzip(5)}, true, false, false},
                    Layout{"crc_inner_end_big_endian_index", {Codec::crc32c()}, false, true, true},
                    Layout{"zstd_crc_end_nocrc", {Codec::zstd(1), Codec::crc32c()}, false, false, false}),
    [](const testing::TestParamInfo<Layout>& i) { return i.param.name; });

/// The index entries (offset, nbytes) of a shard with the index at the end, little-endian, with a CRC.
std::vector<std::pair<uint64_t, uint64_t>> index_entries(const std::vector<uint8_t>& shard, int n) {
  std::vector<std::pair<uint64_t, uint64_t>> e;
  const size_t at = shard.size() - 16 * n - 4;
  for (int k = 0; k < n; ++k)
    e.emplace_back(qlty::detail::get_le64(shard.data() + at + 16 * k),
                   qlty::detail::get_le64(shard.data() + at + 16 * k + 8));
  return e;
}
/// Replaces index entry k and fixes the index's CRC.
void set_entry(std::vector<uint8_t>& shard, int n, int k, uint64_t off, uint64_t len) {
  const size_t at = shard.size() - 16 * n - 4;
  qlty::detail::put_le64(shard.data() + at + 16 * k, off);
  qlty::detail::put_le64(shard.data() + at + 16 * k + 8, len);
  qlty::detail::put_le32(shard.data() + at + 16 * n, qlty::detail::crc32c(shard.data() + at, 16 * n));
}

Array small_sharded(const std::string& path, std::vector<Codec> codecs = {}) {
  ArrayOptions o({8, 8}, {8, 8}, DataType::Int32);  // one shard of 2 x 2 inner chunks of 4 x 4
  o.inner_chunks = {4, 4};
  o.zarr_format = 3;
  o.codecs = std::move(codecs);
  o.fill_value = 9;
  return Array::create(path, o);
}

TEST(ZarrShards, EmptyInnerChunksAreFillAndReadsFetchOnlyWhatTheyNeed) {
  TempDir dir;
  auto a = small_sharded(dir / "a");
  a.write({0, 4}, torch::arange(16, torch::kInt).view({4, 4}));  // inner chunk 1 only
  auto shard = read_bytes(dir / "a/c/0/0");
  ASSERT_EQ(shard.size(), 64u + 4 * 16 + 4) << "one raw inner chunk and the index";
  const auto e = index_entries(shard, 4);
  EXPECT_EQ(e[1], std::make_pair(uint64_t(0), uint64_t(64)));
  for (int k : {0, 2, 3}) EXPECT_EQ(e[k].first, ~uint64_t(0)) << "never written: empty";
  auto want = torch::full({8, 8}, 9, torch::kInt);
  want.narrow(0, 0, 4).narrow(1, 4, 4).copy_(torch::arange(16, torch::kInt).view({4, 4}));
  EXPECT_TRUE(torch::equal(a.read(), want));

  // Point inner chunk 2 at garbage (inside the file, a valid index): a read that does not need it still works,
  // so the reader fetched only the index and inner chunk 1; a read that needs it fails.
  a.write({4, 0}, torch::ones({4, 4}, torch::kInt));
  shard = read_bytes(dir / "a/c/0/0");
  ASSERT_EQ(index_entries(shard, 4)[2], std::make_pair(uint64_t(64), uint64_t(64)));
  set_entry(shard, 4, 2, 64, 60);  // 60 bytes: not an inner chunk of 4 x 4 int32
  write_bytes(dir / "a/c/0/0", shard);
  EXPECT_TRUE(torch::equal(a.read({0, 4}, {4, 4}), torch::arange(16, torch::kInt).view({4, 4})));
  expect_qlty_error([&] { a.read({4, 0}, {1, 1}); }, "zarr.format", "uncompressed chunk has 60 bytes");
}

TEST(ZarrShards, HostileShardsAreTypedErrorsNamingTheFile) {
  TempDir dir;
  auto a = small_sharded(dir / "a", {Codec::zstd()});
  a.write({0, 0}, torch::arange(64, torch::kInt).view({8, 8}));
  const std::string file = dir / "a/c/0/0";
  const auto good = read_bytes(file);
  const auto entries = index_entries(good, 4);
  auto expect_bad = [&](std::vector<uint8_t> bytes, const char* what) {
    write_bytes(file, bytes);
    expect_qlty_error([&] { a.read(); }, "zarr.format", what);
    expect_qlty_error([&] { a.read({0, 0}, {1, 1}); }, "zarr.format", what);  // the partial read checks it too
    expect_qlty_error([&] { a.write({0, 0}, torch::zeros({1, 1}, torch::kInt)); }, "zarr.format", what);
  };
  auto b = good;
  set_entry(b, 4, 3, entries[3].first, good.size());
  expect_bad(b, "points past the end of the file");
  b = good;
  set_entry(b, 4, 1, ~uint64_t(0) - 8, 16);  // offset + nbytes wraps around 2^64
  expect_bad(b, "points past the end of the file");
  b = good;
  set_entry(b, 4, 2, entries[1].first + 1, entries[2].second);
  expect_bad(b, "two inner chunks of the shard overlap");
  b = good;
  set_entry(b, 4, 0, good.size() - 10, 8);
  expect_bad(b, "overlaps the index itself");
  b = good;
  set_entry(b, 4, 0, ~uint64_t(0), 12);
  expect_bad(b, "half empty");
  b = good;
  b[b.size() - 20] ^= 1;  // a flipped bit in the index
  expect_bad(b, "shard index's crc32c does not match");
  expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + 40), "truncated shard");
  b = good;
  b.resize(b.size() - 16);  // the index no longer where it should be: its checksum fails
  expect_bad(b, "crc32c does not match");
  // a shard written for another inner chunk count (the metadata says 2 x 2, the file holds a 1 x 2 index)
  auto other = good;
  other.erase(other.end() - 68, other.end());
  std::vector<uint8_t> index(36);
  for (int k = 0; k < 2; ++k) {
    qlty::detail::put_le64(index.data() + 16 * k, entries[k].first);
    qlty::detail::put_le64(index.data() + 16 * k + 8, entries[k].second);
  }
  qlty::detail::put_le32(index.data() + 32, qlty::detail::crc32c(index.data(), 32));
  other.insert(other.end(), index.begin(), index.end());
  expect_bad(other, "crc32c does not match");
  write_bytes(file, good);
  EXPECT_TRUE(torch::equal(a.read(), torch::arange(64, torch::kInt).view({8, 8})));
}

TEST(ZarrShards, MetadataTheReaderCannotHonourIsRefused) {
  TempDir dir;
  auto meta = [](const std::string& codecs, const std::string& chunk = "[8, 8]") {
    return R"({"zarr_format": 3, "node_type": "array", "shape": [16, 16], "data_type": "uint8",
      "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": )" +
           chunk + R"(}},
      "chunk_key_encoding": {"name": "default"}, "fill_value": 0, "codecs": )" +
           codecs + "}";
  };
  const std::string bytes = R"({"name": "bytes"})",
                    index = R"([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}])";
  auto sharding = [&](const std::string& inner_shape, const std::string& inner, const std::string& idx) {
    return R"({"name": "sharding_indexed", "configuration": {"chunk_shape": )" + inner_shape + R"(, "codecs": )" +
           inner + R"(, "index_codecs": )" + idx + "}}";
  };
  struct Bad {
    std::string codecs, what, tag;
  };
  const std::vector<Bad> bad = {
      {"[" + sharding("[3, 4]", "[" + bytes + "]", index) + "]", "must divide the shard shape", "zarr.format"},
      {"[" + sharding("[4]", "[" + bytes + "]", index) + "]", "chunk_shape has 1 dimensions", "zarr.format"},
      {"[" + sharding("[4, 4]", "[" + sharding("[2, 2]", "[" + bytes + "]", index) + "]", index) + "]",
       "nested sharding", "zarr.unsupported"},
      {"[" + sharding("[4, 4]", "[" + bytes + "]", index) + R"(, {"name": "zstd"}])", "after sharding_indexed",
       "zarr.unsupported"},
      {"[" +
           sharding("[4, 4]", "[" + bytes + "]",
                    R"([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip"}])") +
           "]",
       "index codec \"gzip\"", "zarr.unsupported"},
      {"[" + sharding("[4, 4]", "[" + bytes + "]", "[]") + "]", "index_codecs must be a non-empty list", "zarr.format"},
      {"[" + sharding("[4, 4]", "[]", index) + "]", "no \"bytes\" or \"sharding_indexed\"", "zarr.unsupported"},
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    const std::string path = dir / ("m" + std::to_string(i));
    write_text(path + "/zarr.json", meta(bad[i].codecs));
    expect_qlty_error([&] { Array::open(path); }, bad[i].tag, bad[i].what);
  }
  ArrayOptions o({16, 16}, {8, 8}, DataType::UInt8);
  o.inner_chunks = {3, 4};
  o.zarr_format = 3;
  qlty_test::expect_error<c10::ValueError>([&] { Array::create(dir / "x", o); },
                                           std::vector<std::string>{"inner_chunks[0] must divide the shard"});
  o.inner_chunks = {4, 4};
  o.zarr_format = 2;
  qlty_test::expect_error<c10::ValueError>([&] { Array::create(dir / "x", o); },
                                           std::vector<std::string>{"sharding (inner_chunks) is a Zarr v3"});
}

TEST(ZarrShards, SixtyFourTimesFewerFilesForTheSameBytes) {
  // 256 x 256 x 256 float32 in 64^3 chunks (as `qlty infer` writes by default) against 256^3 shards of 64^3 inner
  // chunks: the Z depth of a 4096^2 x 256 output, and its ratio (16384 files against 256).
  TempDir dir;
  const auto data = torch::arange(256 * 256 * 256, torch::kFloat).view({256, 256, 256}).remainder(1000);
  ArrayOptions plain({256, 256, 256}, {64, 64, 64}, DataType::Float32);
  plain.zarr_format = 3;
  plain.codecs = {};
  ArrayOptions sharded = plain;
  sharded.chunks = {256, 256, 256};
  sharded.inner_chunks = {64, 64, 64};
  auto a = Array::create(dir / "plain", plain), b = Array::create(dir / "sharded", sharded);
  a.write({0, 0, 0}, data);
  b.write({0, 0, 0}, data);
  EXPECT_EQ(a.stored_chunk_count(), 64);
  EXPECT_EQ(b.stored_chunk_count(), 1);
  EXPECT_TRUE(torch::equal(b.read(), data));
  EXPECT_TRUE(
      torch::equal(b.read({100, 3, 70}, {30, 200, 9}), data.narrow(0, 100, 30).narrow(1, 3, 200).narrow(2, 70, 9)));
  // the same bytes: 64 raw inner chunks and an index of 64 entries
  struct stat st;
  ASSERT_EQ(::stat((dir / "sharded/c/0/0/0").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, int64_t(256) * 256 * 256 * 4 + 64 * 16 + 4);
}

#ifdef QLTY_ZARR_WORKER
TEST(ZarrShards, ProcessesWritingInnerChunksOfOneShardLoseNothing) {
  // 4 processes write the inner-chunk rows r = K mod 4 of an array whose every shard holds 8 of them: each shard is
  // read, changed and rewritten by all four at once.
  TempDir dir;
  ArrayOptions o({64, 12}, {32, 12}, DataType::Int32);
  o.inner_chunks = {4, 6};
  o.zarr_format = 3;
  o.codecs = {Codec::zstd()};
  o.fill_value = -1;
  Array::create(dir / "a", o);
  std::vector<std::thread> workers;
  std::vector<int> rc(4, -1);
  for (int k = 0; k < 4; ++k)
    workers.emplace_back([&, k] {
      rc[k] = run(std::string(QLTY_ZARR_WORKER) + " rows " + (dir / "a") + " " + std::to_string(k) + " 4");
    });
  for (auto& w : workers) w.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(rc[k], 0);
  const auto got = Array::open(dir / "a").read();
  const auto want = (torch::arange(64, torch::kLong) / 4).to(torch::kInt).view({64, 1}).expand({64, 12});
  EXPECT_TRUE(torch::equal(got, want)) << got;
}
#endif

#ifdef QLTY_VENV_PYTHON
// zarr-python 3 over the codec matrix (raw, blosc, zstd, gzip, crc32c, zstd + crc32c; index at the start and the end;
// float32 and int16): the values of zarr3_shards.py.
torch::Tensor shard_values(DataType t) {
  auto v = ((torch::arange(37 * 50, torch::kLong) * 7 + 3).remainder(97) - 40).view({37, 50});
  v.narrow(0, 8, 8).fill_(5);
  return v.to(qlty::zarr::scalar_type(t));
}

TEST(ZarrShardsPython, WrittenByZarrPython3Read) {
  TempDir dir;
  ASSERT_EQ(run(std::string(QLTY_VENV_PYTHON) + " " + QLTY_ZARR3_SHARDS + " write " + dir.path + " > " + (dir / "log") +
                " 2>&1"),
            0);
  const auto text = read_bytes(dir / "manifest.json");
  const json manifest = json::parse(std::string(text.begin(), text.end()));
  ASSERT_EQ(manifest.size(), 24u);
  for (const auto& m : manifest) {
    const std::string name = m["name"];
    auto a = Array::open(dir / name);
    const DataType t = m["dtype"] == "float32" ? DataType::Float32 : DataType::Int16;
    ASSERT_TRUE(a.sharded()) << name;
    EXPECT_EQ(a.chunks(), (std::vector<int64_t>{16, 20})) << name;
    EXPECT_EQ(a.metadata().index_at_start, m["index_location"] == "start") << name;
    const auto want = shard_values(t);
    EXPECT_TRUE(torch::equal(a.read(), want)) << name;
    EXPECT_TRUE(torch::equal(a.read({3, 7}, {27, 34}), want.narrow(0, 3, 27).narrow(1, 7, 34))) << name;
  }
}

TEST(ZarrShardsPython, WrittenByQltyReadInZarrPython3AndTensorStore) {
  TempDir dir;
  json manifest = json::array();
  const std::vector<std::pair<std::string, std::vector<Codec>>> codecs = {
      {"raw", {}},
      {"blosc", {Codec::blosc()}},
      {"zstd", {Codec::zstd(3)}},
      {"gzip", {Codec::gzip(5)}},
      {"crc32c", {Codec::crc32c()}},
      {"zstd_crc32c", {Codec::zstd(1), Codec::crc32c()}}};
  for (const auto& [cname, chain] : codecs)
    for (bool start : {false, true})
      for (DataType t : {DataType::Float32, DataType::Int16}) {
        const std::string name = cname + (start ? "_start_" : "_end_") + qlty::zarr::name(t);
        ArrayOptions o({37, 50}, {16, 20}, t);
        o.inner_chunks = {8, 10};
        o.zarr_format = 3;
        o.codecs = chain;
        o.fill_value = 5;
        Array::create(dir / name, o);
        set_index_layout(dir / name, start, true, false);
        auto a = Array::open(dir / name);
        const auto v = shard_values(t);
        a.write({0, 0}, v.narrow(0, 0, 8));  // rows [8, 16) stay unwritten: empty inner chunks
        a.write({16, 0}, v.narrow(0, 16, 21));
        manifest.push_back({{"name", name},
                            {"dtype", qlty::zarr::name(t)},
                            {"codec", cname},
                            {"index_location", start ? "start" : "end"}});
      }
  write_text(dir / "manifest.json", manifest.dump());
  EXPECT_EQ(run(std::string(QLTY_VENV_PYTHON) + " " + QLTY_ZARR3_SHARDS + " check " + dir.path), 0);
}
#endif

}  // namespace
