// qlty/zarr.hpp: round trips over data types, codecs, formats and separators; region reads and writes against an
// in-memory reference; zarr-python interoperability both ways; v3 files written from the spec; every kind of bad
// file; concurrent threads and processes; kill -9 during writes.
#include "helpers.hpp"

#include <qlty/zarr.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace {

using qlty_test::expect_qlty_error;
using qlty_test::write_text;

using qlty::zarr::Array;
using qlty::zarr::ArrayOptions;
using qlty::zarr::Codec;
using qlty::zarr::DataType;
using qlty::zarr::FillValue;
using qlty::zarr::Group;
using torch::indexing::Slice;
using json = nlohmann::json;

struct TempDir : qlty_test::TempDir {
  TempDir() : qlty_test::TempDir("qlty_zarr") {}
};

using qlty_zarr_test::read_bytes;
using qlty_zarr_test::run;
using qlty_zarr_test::write_bytes;

/// The value formula shared with tests/zarr_interop.py.
torch::Tensor formula(DataType t, c10::IntArrayRef shape) {
  auto v = (torch::arange(c10::multiply_integers(shape), torch::kLong) * 7 + 3).remainder(97).view(shape);
  switch (qlty::detail::type_info(t).kind) {
    case 'b':
      return v.remainder(5) < 2;
    case 'u':
      return v.to(qlty::zarr::scalar_type(t));
    case 'i':
      return (v - 40).to(qlty::zarr::scalar_type(t));
    default:
      return ((v - 40).to(torch::kDouble) / 4.0).to(qlty::zarr::scalar_type(t));
  }
}

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (a.is_floating_point()) {
    const auto x = a.to(torch::kDouble), y = b.to(torch::kDouble);
    return torch::logical_or(x == y, torch::logical_and(x.isnan(), y.isnan())).all().item<bool>();
  }
  return torch::equal(a, b);
}

torch::Scalar fill_scalar(const FillValue& f) {
  switch (f.kind) {
    case FillValue::Kind::Null:
      return 0;
    case FillValue::Kind::Bool:
      return f.b;
    case FillValue::Kind::Int:
      return f.i;
    case FillValue::Kind::UInt:
      return static_cast<int64_t>(f.u);
    case FillValue::Kind::Float:
      return f.f;
  }
  return 0;
}

template <typename E, typename F>
void expect_c10(F&& f, const std::string& part) {
  qlty_test::expect_error<E>(std::forward<F>(f), std::vector<std::string>{part});
}

const DataType kTypes[] = {DataType::Bool,   DataType::Int8,    DataType::Int16,   DataType::Int32,
                           DataType::Int64,  DataType::UInt8,   DataType::UInt16,  DataType::UInt32,
                           DataType::UInt64, DataType::Float16, DataType::Float32, DataType::Float64};

std::vector<Codec> codecs_v2() {
  return {Codec::blosc(),
          Codec::blosc("zstd", 3, 2),
          Codec::blosc("blosclz", 9, 0),
          Codec::blosc("lz4hc", 1, -1),
          Codec::blosc("zlib", 5, 1, 256),
          Codec::zlib(1),
          Codec::gzip(5),
          Codec::zstd(3),
          Codec::lz4(1)};
}

// ---------------------------------------------------------------------------------------------------------------
// Round trips and regions

struct Case {
  int format;
  char sep;
  std::vector<Codec> codecs;
};

class ZarrRoundTrip : public ::testing::TestWithParam<int> {};

TEST_P(ZarrRoundTrip, RandomBoxesMatchAnInMemoryReference) {
  const int format = GetParam();
  TempDir dir;
  std::mt19937 rng(format);
  std::vector<std::vector<Codec>> chains{{}};
  for (const auto& c : codecs_v2())
    if (format == 2 || (c.id != Codec::Id::Zlib && c.id != Codec::Id::Lz4)) chains.push_back({c});
  if (format == 3) chains.push_back({Codec::zstd(3, true), Codec::crc32c()});
  int n = 0;
  for (DataType t : kTypes) {
    for (size_t ci = 0; ci < chains.size(); ++ci) {
      ArrayOptions o({9, 10, 11}, {4, 3, 5}, t);
      o.codecs = chains[ci];
      o.zarr_format = format;
      o.separator = (n++ % 2) ? '/' : '.';
      o.fill_value = qlty::detail::type_info(t).kind == 'f'   ? FillValue(-2.5)
                     : qlty::detail::type_info(t).kind == 'b' ? FillValue(true)
                                                              : FillValue(3);
      const std::string path = dir / ("a" + std::to_string(n));
      auto a = Array::create(path, o);
      auto ref =
          torch::full({9, 10, 11}, fill_scalar(a.metadata().fill), torch::TensorOptions().dtype(a.scalar_type()));
      // Nothing written: all fill value.
      EXPECT_TRUE(same(a.read(), ref)) << path;
      for (int k = 0; k < 4; ++k) {
        std::vector<int64_t> off(3), shape(3);
        for (int d = 0; d < 3; ++d) {
          off[d] = std::uniform_int_distribution<int64_t>(0, ref.size(d) - 1)(rng);
          shape[d] = std::uniform_int_distribution<int64_t>(1, ref.size(d) - off[d])(rng);
        }
        auto data = formula(t, shape);
        if (k % 2) data = data.to(torch::kDouble).to(a.scalar_type());  // conversion path
        a.write(off, data);
        ref.slice(0, off[0], off[0] + shape[0])
            .slice(1, off[1], off[1] + shape[1])
            .slice(2, off[2], off[2] + shape[2])
            .copy_(data);
      }
      auto b = Array::open(path);  // reopen: metadata parsed back
      ASSERT_TRUE(same(b.read(), ref)) << path << " " << qlty::zarr::name(t);
      for (int k = 0; k < 3; ++k) {
        std::vector<int64_t> off(3), shape(3);
        for (int d = 0; d < 3; ++d) {
          off[d] = std::uniform_int_distribution<int64_t>(0, ref.size(d) - 1)(rng);
          shape[d] = std::uniform_int_distribution<int64_t>(0, ref.size(d) - off[d])(rng);
        }
        auto want = ref.slice(0, off[0], off[0] + shape[0])
                        .slice(1, off[1], off[1] + shape[1])
                        .slice(2, off[2], off[2] + shape[2]);
        ASSERT_TRUE(same(b.read(off, shape), want)) << path;
      }
      EXPECT_TRUE(same(b.read({0, 0, 0}, {9, 10, 11}, torch::kDouble), ref.to(torch::kDouble)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, ZarrRoundTrip, ::testing::Values(2, 3), [](const testing::TestParamInfo<int>& i) {
  return std::string("v").append(std::to_string(i.param));
});

TEST(Zarr, EdgeChunksAreStoredFullSizeWithFill) {
  TempDir dir;
  ArrayOptions o({5, 7}, {4, 4}, DataType::Int16);
  o.codecs = {};
  o.fill_value = -1;
  auto a = Array::create(dir / "e", o);
  a.write({0, 0}, torch::arange(35, torch::kShort).view({5, 7}));
  // chunk (1, 1) covers rows 4..7 and columns 4..7 of which one row and three columns exist.
  EXPECT_EQ(read_bytes(a.chunk_path({1, 1})).size(), 16u * 2);
  auto c = a.read_chunk({1, 1});
  auto want = torch::full({4, 4}, -1, torch::kShort);
  want.index_put_({0, Slice(0, 3)}, torch::tensor({32, 33, 34}, torch::kShort));
  EXPECT_TRUE(torch::equal(c, want));
  EXPECT_FALSE(a.chunk_exists({0, 0}) == false);
}

TEST(Zarr, UnsignedTypesConvertAndCheckRanges) {
  TempDir dir;
  auto a = Array::create(dir / "u16", ArrayOptions({4}, {2}, DataType::UInt16));
  a.write({0}, torch::tensor({0, 1, 65534, 65535}, torch::kInt));
  EXPECT_EQ(a.read().scalar_type(), qlty::detail::unsigned_dtype(2).value_or(torch::kInt));  // int32 before 2.3
  EXPECT_TRUE(torch::equal(a.read().to(torch::kInt), torch::tensor({0, 1, 65534, 65535}, torch::kInt)));
  EXPECT_THROW(a.write({0}, torch::tensor({65536}, torch::kInt)), c10::ValueError);
  EXPECT_THROW(a.write({0}, torch::tensor({-1}, torch::kInt)), c10::ValueError);
  auto b = Array::create(dir / "u64", ArrayOptions({2}, {2}, DataType::UInt64));
  b.write({0}, torch::tensor({int64_t(1) << 62, int64_t(5)}, torch::kLong));
  EXPECT_EQ(b.read()[0].item<int64_t>(), int64_t(1) << 62);
}

TEST(Zarr, FortranOrderAndBigEndianChunksRead) {
  TempDir dir;
  // A 2x3 int32 array in one F-order, big-endian chunk: the bytes hand-made.
  write_text(
      dir / "f/.zarray",
      R"({"chunks":[2,3],"compressor":null,"dtype":">i4","fill_value":0,"filters":null,"order":"F","shape":[2,3],"zarr_format":2})");
  std::vector<uint8_t> bytes;
  for (int v : {1, 4, 2, 5, 3, 6}) {  // column-major of [[1,2,3],[4,5,6]]
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<uint8_t>(v >> s));
  }
  write_bytes(dir / "f/0.0", bytes);
  auto a = Array::open(dir / "f");
  EXPECT_TRUE(torch::equal(a.read(), torch::tensor({{1, 2, 3}, {4, 5, 6}}, torch::kInt)));
  // Writing keeps the file's layout: F order, big-endian.
  a.write({0, 0}, torch::tensor({{10, 20, 30}, {40, 50, 60}}, torch::kInt));
  EXPECT_EQ(read_bytes(dir / "f/0.0")[3], 10);
  EXPECT_EQ(read_bytes(dir / "f/0.0")[7], 40);
  EXPECT_TRUE(torch::equal(Array::open(dir / "f").read(), torch::tensor({{10, 20, 30}, {40, 50, 60}}, torch::kInt)));
}

TEST(Zarr, ZeroDimensionalAndEmptyArrays) {
  TempDir dir;
  auto s = Array::create(dir / "s", ArrayOptions({}, {}, DataType::Float64));
  s.write({}, torch::scalar_tensor(2.5, torch::kDouble));
  EXPECT_EQ(Array::open(dir / "s").read().item<double>(), 2.5);
  EXPECT_TRUE(qlty::detail::path_exists(dir / "s/0"));
  auto e = Array::create(dir / "e", ArrayOptions({0, 4}, {2, 2}));
  EXPECT_EQ(e.read().numel(), 0);
}

TEST(Zarr, CreateRefusesToReplaceUnlessAsked) {
  TempDir dir;
  auto a = Array::create(dir / "a", ArrayOptions({4}, {2}));
  a.write({0}, torch::ones({4}));
  expect_qlty_error([&] { Array::create(dir / "a", ArrayOptions({8}, {2})); }, "zarr.exists", "overwrite");
  EXPECT_TRUE(torch::equal(Array::open(dir / "a").read(), torch::ones({4})));  // untouched
  write_text(dir / "notzarr/data.txt", "precious");
  expect_qlty_error([&] { Array::create(dir / "notzarr", ArrayOptions({8}, {2})); }, "zarr.exists", "not a Zarr");
  ArrayOptions o({8}, {2});
  o.overwrite = true;
  EXPECT_THROW(Array::create(dir / "notzarr", o), qlty::Error);  // never deletes a folder that is not Zarr
  EXPECT_TRUE(qlty::detail::path_exists(dir / "notzarr/data.txt"));
  auto b = Array::create(dir / "a", o);
  EXPECT_EQ(b.shape(), std::vector<int64_t>{8});
  EXPECT_FALSE(qlty::detail::path_exists(dir / "a/0"));  // old chunks gone
  // open_or_create: same settings open, other settings are refused.
  auto c = Array::open_or_create(dir / "a", o);
  EXPECT_EQ(c.shape(), std::vector<int64_t>{8});
  expect_qlty_error([&] { Array::open_or_create(dir / "a", ArrayOptions({9}, {2})); }, "zarr.exists", "other settings");
}

TEST(Zarr, GroupsAndAttributes) {
  TempDir dir;
  auto g = Group::create(dir / "g.zarr", {{"name", "test"}});
  auto a = g.create_array("pred/0", ArrayOptions({4, 4}, {2, 2}));
  a.set_attributes({{"unit", "nm"}, {"scale", {1.5, 2.0}}});
  EXPECT_EQ(Array::open(dir / "g.zarr/pred/0").attributes()["unit"], "nm");
  EXPECT_EQ(Group::open(dir / "g.zarr").attributes()["name"], "test");
  EXPECT_EQ(g.contains("pred/0"), qlty::zarr::NodeType::Array);
  EXPECT_EQ(g.contains("nothing"), qlty::zarr::NodeType::None);
  expect_qlty_error([&] { Group::open(dir / "g.zarr/pred/0"); }, "zarr.missing", "is a Zarr array");
  expect_qlty_error([&] { Array::open(dir / "g.zarr"); }, "zarr.missing", "is a Zarr group");
  auto g3 = Group::create(dir / "g3", {{"k", 1}}, 3);
  EXPECT_EQ(Group::open(dir / "g3").attributes()["k"], 1);
  EXPECT_EQ(Group::open(dir / "g3").zarr_format(), 3);
  ArrayOptions o({3}, {3});
  o.zarr_format = 3;
  o.attributes = {{"a", 1}};
  o.dimension_names = {"x"};
  auto v = g3.create_array("v", o);
  v.set_attributes({{"a", 2}});
  EXPECT_EQ(Array::open(dir / "g3/v").attributes()["a"], 2);
  EXPECT_EQ(Array::open(dir / "g3/v").metadata().dimension_names, std::vector<std::string>{"x"});
}

TEST(Zarr, ArgumentErrorsNameTheFunctionAndTheValue) {
  TempDir dir;
  auto a = Array::create(dir / "a", ArrayOptions({4, 4}, {2, 2}));
  expect_c10<c10::IndexError>([&] { a.read({3, 0}, {2, 2}); }, "outside the array's shape");
  expect_c10<c10::ValueError>([&] { a.read({0}, {2}); }, "must have 2 entries");
  expect_c10<c10::IndexError>([&] { a.write({0, 3}, torch::ones({1, 2})); }, "outside");
  expect_c10<c10::IndexError>([&] { a.read_chunk({2, 0}); }, "outside the chunk grid");
  expect_c10<c10::ValueError>([&] { a.write_chunk({0, 0}, torch::ones({3, 2})); }, "chunk shape");
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", ArrayOptions({4}, {0})); }, "chunks[0] must be >= 1");
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", ArrayOptions({4, 4}, {2})); }, "dimensions");
  ArrayOptions o({4}, {2});
  o.codecs = {Codec::blosc("nope")};
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", o); }, "cname \"nope\"");
  o.codecs = {Codec::zstd(), Codec::gzip()};
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", o); }, "at most one compressor");
  o.codecs = {Codec::lz4()};
  o.zarr_format = 3;
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", o); }, "not a Zarr v3 codec");
  ArrayOptions f({4}, {2}, DataType::UInt8);
  f.fill_value = -1;
  expect_c10<c10::ValueError>([&] { Array::create(dir / "b", f); }, "cannot be stored as uint8");
  EXPECT_FALSE(qlty::detail::path_exists(dir / "b/.zarray"));
  expect_qlty_error([&] { Array::open(dir / "nothing"); }, "zarr.missing", "no Zarr array");
}

// ---------------------------------------------------------------------------------------------------------------
// Codecs and v3

TEST(Zarr, V3SpecExampleFilesRead) {
  TempDir dir;
  // The spec's example array metadata (int32, default keys with "/", bytes little-endian + crc32c), with two
  // chunks written by hand: raw little-endian values followed by their CRC32C.
  write_text(dir / "v3/zarr.json", R"({
    "zarr_format": 3, "node_type": "array", "shape": [4, 3], "data_type": "int32",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
    "fill_value": 7, "attributes": {"foo": 42, "bar": "apples"}, "dimension_names": ["rows", "columns"],
    "storage_transformers": [], "some_extension": {"must_understand": false}
  })");
  std::vector<uint8_t> chunk;
  for (int v = 1; v <= 6; ++v)
    for (int s = 0; s < 32; s += 8) chunk.push_back(static_cast<uint8_t>(v >> s));
  const uint32_t crc = qlty::detail::crc32c(chunk.data(), chunk.size());
  for (int s = 0; s < 32; s += 8) chunk.push_back(static_cast<uint8_t>(crc >> s));
  write_bytes(dir / "v3/c/0/0", chunk);
  auto a = Array::open(dir / "v3");
  EXPECT_TRUE(torch::equal(a.read(), torch::tensor({{1, 2, 3}, {4, 5, 6}, {7, 7, 7}, {7, 7, 7}}, torch::kInt)));
  EXPECT_EQ(a.attributes()["bar"], "apples");
  EXPECT_EQ(a.chunk_path({1, 0}), dir / "v3/c/1/0");
  // v2 key encoding, big endian, float with a hex NaN fill and a blosc configuration in v3 spelling.
  write_text(dir / "k/zarr.json", R"({
    "zarr_format": 3, "node_type": "array", "shape": [2, 2], "data_type": "float32",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 2]}},
    "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
    "codecs": [{"name": "bytes", "configuration": {"endian": "big"}},
               {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 5, "shuffle": "bitshuffle", "typesize": 4, "blocksize": 0}}],
    "fill_value": "0x7fc00000"
  })");
  auto k = Array::open(dir / "k");
  EXPECT_TRUE(std::isnan(k.read()[1][1].item<float>()));
  k.write({0, 0}, torch::tensor({{1.5f, -2.0f}}));
  EXPECT_TRUE(qlty::detail::path_exists(dir / "k/0.0"));
  EXPECT_TRUE(torch::equal(Array::open(dir / "k").read({0, 0}, {1, 2}), torch::tensor({{1.5f, -2.0f}})));
  // What we write for v3 parses back identically, with the codec chain and names.
  ArrayOptions o({5, 6}, {2, 4}, DataType::UInt16);
  o.zarr_format = 3;
  o.codecs = {Codec::gzip(6), Codec::crc32c()};
  o.fill_value = 9;
  o.dimension_names = {"y", "x"};
  auto w = Array::create(dir / "w", o);
  const auto meta = read_bytes(dir / "w/zarr.json");
  const auto j = json::parse(std::string(meta.begin(), meta.end()));
  EXPECT_EQ(j["codecs"].size(), 3u);
  EXPECT_EQ(j["codecs"][1]["name"], "gzip");
  EXPECT_EQ(j["codecs"][2]["name"], "crc32c");
  EXPECT_EQ(j["chunk_key_encoding"]["name"], "default");
  EXPECT_EQ(j["fill_value"], 9);
  w.write({1, 1}, torch::full({3, 4}, 300, torch::kInt));
  EXPECT_TRUE(qlty::detail::path_exists(dir / "w/c/0/0"));
  auto back = Array::open(dir / "w").read();
  EXPECT_EQ(back.sum().item<int64_t>(), 12 * 300 + (30 - 12) * 9);
}

TEST(Zarr, V3RefusesWhatItCannotHonour) {
  TempDir dir;
  const std::string base = R"({"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "int32",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
    "chunk_key_encoding": {"name": "default"}, "fill_value": 0, )";
  const std::pair<std::string, std::string> cases[] = {
      {R"("codecs": [{"name": "transpose", "configuration": {"order": [0]}}, {"name": "bytes", "configuration": {"endian": "little"}}]})",
       "before \"bytes\""},
      {R"("codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [1], "index_codecs": [{"name": "bytes"}],
          "codecs": [{"name": "sharding_indexed", "configuration": {}}]}}]})",
       "nested sharding"},
      {R"("codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "lzma"}]})", "codec \"lzma\""},
      {R"("codecs": [{"name": "bytes", "configuration": {"endian": "little"}}], "storage_transformers": [{"name": "x"}]})",
       "storage transformer"},
      {R"("codecs": [{"name": "bytes", "configuration": {"endian": "little"}}], "ext": {"must_understand": true}})",
       "unknown extension"},
  };
  for (const auto& [tail, msg] : cases) {
    write_text(dir / "a/zarr.json", base + tail);
    expect_qlty_error([&] { Array::open(dir / "a"); }, "zarr.unsupported", msg);
  }
  // Skipping a codec would leave bytes in a layout or encoding the array does not describe (the data would read
  // back wrong): must_understand false does not make a codec skippable.
  for (
      const std::string codecs :
      {R"([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "lzma", "must_understand": false}])",
       R"([{"name": "transpose", "configuration": {"order": [0]}, "must_understand": false}, {"name": "bytes", "configuration": {"endian": "little"}}])"}) {
    write_text(dir / "a/zarr.json", base + R"("codecs": )" + codecs + "}");
    expect_qlty_error([&] { Array::open(dir / "a"); }, "zarr.unsupported",
                      "cannot be skipped, although must_understand is false");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bad files the reader must survive: each is a typed error naming the file, never a crash or a wrong read.

std::string zarray(const std::string& compressor, const std::string& extra = "", const std::string& dtype = "<f4",
                   const std::string& shape = "[8, 8]", const std::string& chunks = "[4, 4]") {
  return R"({"chunks": )" + chunks + R"(, "compressor": )" + compressor + R"(, "dtype": ")" + dtype +
         R"(", "fill_value": 0.0, "filters": null, "order": "C", "shape": )" + shape + R"(, "zarr_format": 2)" + extra +
         "}";
}

TEST(ZarrBadInput, MetadataDefectsAreTypedErrorsNamingTheFile) {
  TempDir dir;
  const std::string blosc = R"({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0})";
  const std::tuple<std::string, std::string, std::string> cases[] = {
      {"", "zarr.format", "invalid JSON"},
      {"{\"chunks\": [4, 4], \"compressor\": nu", "zarr.format", "invalid JSON"},
      {"[1, 2]", "zarr.format", "expected a JSON object"},
      {R"({"chunks": [4, 4], "compressor": null, "dtype": "<f4", "fill_value": 0, "filters": null, "order": "C", "zarr_format": 2})",
       "zarr.format", "missing key \"shape\""},
      {zarray("null", "", "<f4", "[8, 8]", "[4]"), "zarr.format", "2 dimensions but chunks has 1"},
      {zarray("null", "", "<f4", "[8, 8]", "[4, 0]"), "zarr.format", "chunks[1] must be >= 1"},
      {zarray("null", "", "<f4", "[8, -1]", "[4, 4]"), "zarr.format", "negative"},
      {zarray("null", "", "<U4"), "zarr.unsupported", "dtype \"<U4\""},
      {zarray("null", "", "<c8"), "zarr.unsupported", "dtype \"<c8\""},
      {zarray(R"({"id": "lzma"})"), "zarr.unsupported", "compressor \"lzma\""},
      {zarray(R"({"id": "blosc", "cname": "lz4", "clevel": 42})"), "zarr.format", "clevel"},
      {zarray("null", ", \"dimension_separator\": \"-\""), "zarr.format", "dimension_separator"},
      {zarray("null", "", "<f4", "[8, 8]", "[4, \"4\"]"), "zarr.format", "must be an integer"},
      {zarray("null", "", "<f4", "[8, 8]", "[99999999999, 99999999999]"), "zarr.unsupported", "more than 2 GiB"},
      {R"({"chunks": [4], "compressor": null, "dtype": "<i4", "fill_value": "NaN", "filters": null, "order": "C", "shape": [8], "zarr_format": 2})",
       "zarr.format", "expected an integer"},
      {R"({"chunks": [4], "compressor": null, "dtype": "|u1", "fill_value": 300, "filters": null, "order": "C", "shape": [8], "zarr_format": 2})",
       "zarr.format", "out of range"},
      {R"({"chunks": [4], "compressor": null, "dtype": "<f4", "fill_value": 0, "filters": null, "order": "X", "shape": [8], "zarr_format": 2})",
       "zarr.format", "order must be"},
      {R"({"chunks": [4], "compressor": null, "dtype": "<f4", "fill_value": 0, "filters": [{"id": "delta", "dtype": "<f4"}], "order": "F", "shape": [8], "zarr_format": 2})",
       "zarr.unsupported", "filters"},
      {R"({"chunks": [4], "compressor": null, "dtype": "<f4", "fill_value": 0, "filters": null, "order": "C", "shape": [8], "zarr_format": 3})",
       "zarr.unsupported", "zarr_format 3"},
  };
  int k = 0;
  for (const auto& [text, tag, msg] : cases) {
    const std::string p = dir / std::string("m").append(std::to_string(k++));
    write_text(p + "/.zarray", text);
    expect_qlty_error([&] { Array::open(p); }, tag, msg);
    expect_qlty_error([&] { Array::open(p); }, tag, p + "/.zarray");
  }
  // A .zattrs with a bare NaN (Python's json writes it; it is not JSON).
  write_text(dir / "n/.zarray", zarray("null"));
  write_text(dir / "n/.zattrs", R"({"scale": NaN})");
  auto a = Array::open(dir / "n");
  expect_qlty_error([&] { a.attributes(); }, "zarr.format", dir / "n/.zattrs");
  // Metadata that is a folder.
  qlty::detail::make_dirs(dir / "d/.zarray");
  expect_qlty_error([&] { Array::open(dir / "d"); }, "zarr.format", "not a regular file");
}

TEST(ZarrBadInput, CorruptChunksAreTypedErrorsNamingTheFile) {
  TempDir dir;
  struct C {
    std::string name;
    Codec codec;
  };
  const Codec none_marker = Codec::crc32c();  // stands for "no compressor" below
  const std::vector<C> codecs = {{"none", none_marker},   {"blosc", Codec::blosc()}, {"zlib", Codec::zlib()},
                                 {"gzip", Codec::gzip()}, {"zstd", Codec::zstd()},   {"lz4", Codec::lz4()}};
  auto data = torch::randn({4, 4});
  for (const auto& c : codecs) {
    ArrayOptions o({8, 8}, {4, 4});
    o.codecs = c.name == "none" ? std::vector<Codec>{} : std::vector<Codec>{c.codec};
    const std::string p = dir / c.name;
    auto a = Array::create(p, o);
    a.write({0, 0}, data);
    const std::string chunk = a.chunk_path({0, 0});
    const auto good = read_bytes(chunk);
    auto expect_bad = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
      write_bytes(chunk, bytes);
      try {
        auto r = a.read();
        ADD_FAILURE() << c.name << " " << what << ": read succeeded";
      } catch (const qlty::Error& e) {
        EXPECT_EQ(e.tag(), "zarr.format") << c.name << " " << what << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find(chunk), std::string::npos) << e.what();
      }
    };
    expect_bad({}, "empty");
    expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2), "truncated");
    expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + std::min<size_t>(3, good.size())), "3 bytes");
    auto longer = good;
    longer.insert(longer.end(), 100, 0x55);
    if (c.name == "none" || c.name == "zlib" || c.name == "gzip") expect_bad(longer, "trailing bytes");
    if (c.name == "blosc") {
      auto lie = good;
      lie[4] = 0xFF;  // nbytes field: claims a different decoded size
      lie[5] = 0xFF;
      expect_bad(lie, "nbytes lies");
      auto lie2 = good;
      lie2[12] = 0xFF;  // cbytes field: claims more bytes than the file has
      lie2[13] = 0xFF;
      lie2[14] = 0xFF;
      expect_bad(lie2, "cbytes lies");
    }
    if (c.name == "lz4") {
      auto lie = good;
      lie[0] = 0xFF;  // size prefix
      expect_bad(lie, "size prefix lies");
    }
    if (c.name == "gzip") {
      auto crc = good;
      crc[crc.size() - 6] ^= 0xFF;  // the CRC32 in the trailer
      expect_bad(crc, "bad checksum");
    }
    if (c.name == "zstd") {
      // A valid frame without its content size: ZSTD streaming API with the size flag off.
      ZSTD_CCtx* z = ZSTD_createCCtx();
      ZSTD_CCtx_setParameter(z, ZSTD_c_contentSizeFlag, 0);
      std::vector<uint8_t> out(ZSTD_compressBound(64) + 64);
      ZSTD_outBuffer ob{out.data(), out.size(), 0};
      ZSTD_inBuffer ib{data.data_ptr(), 64, 0};
      ZSTD_compressStream2(z, &ob, &ib, ZSTD_e_end);
      ZSTD_freeCCtx(z);
      out.resize(ob.pos);
      expect_bad(out, "no content size");
    }
    // Flipped bytes: every position in turn must give a clean error or (for an undetectable change inside
    // uncompressed values) a successful read; never a crash.
    for (size_t i = 0; i < good.size(); i += std::max<size_t>(1, good.size() / 40)) {
      auto flipped = good;
      flipped[i] ^= 0xA5;
      write_bytes(chunk, flipped);
      try {
        (void)a.read();
      } catch (const qlty::Error& e) {
        EXPECT_EQ(e.tag(), "zarr.format") << e.what();
      }
    }
    // A chunk path that is a folder.
    qlty::detail::remove_tree(chunk);
    qlty::detail::make_dirs(chunk);
    expect_bad({}, "folder");  // write_bytes fails silently on a folder; the folder stays
  }
}

TEST(ZarrBadInput, V3ChecksumMismatchIsDetected) {
  TempDir dir;
  ArrayOptions o({4}, {4}, DataType::Int32);
  o.zarr_format = 3;
  o.codecs = {Codec::crc32c()};
  auto a = Array::create(dir / "c", o);
  a.write({0}, torch::arange(4, torch::kInt));
  auto b = read_bytes(a.chunk_path({0}));
  b[2] ^= 1;
  write_bytes(a.chunk_path({0}), b);
  expect_qlty_error([&] { a.read(); }, "zarr.format", "crc32c checksum");
}

// ---------------------------------------------------------------------------------------------------------------
// zarr-python interoperability

#ifdef QLTY_ZARR_PYTHON
// (strings appended, not added: GCC 12 warns of false overflows in "a" + std::string&& under LibTorch 2.x's flags,
// its PR 105651)
bool have_zarr_python() { return run(std::string(QLTY_ZARR_PYTHON).append(" -c 'import zarr' 2>/dev/null")) == 0; }
#define QLTY_SKIP_WITHOUT_ZARR_PYTHON() \
  if (!have_zarr_python()) GTEST_SKIP() << "zarr-python is not installed (scripts/install-deps.sh installs it)"
#else
#define QLTY_SKIP_WITHOUT_ZARR_PYTHON() GTEST_SKIP() << "built without a Python interpreter"
#endif

const char* kMissing = "1,1,1";  // the chunk the interop arrays leave out

torch::Tensor expected_interop(DataType t, const FillValue& fill) {
  auto e = formula(t, {7, 11, 13});
  e.slice(0, 3, 6).slice(1, 4, 8).slice(2, 5, 10).fill_(fill_scalar(fill));
  return e;
}

TEST(ZarrHostile, DeepNestingHugeShapesAndOutOfRangeSettings) {
  TempDir dir;
  // 100,000 levels of nesting: refused at parse time, never printed whole.
  write_text(dir / "deep/.zarray",
             zarray("null", "", "<f4")
                 .replace(zarray("null").find("\"<f4\""), 5, std::string(100000, '[') + std::string(100000, ']')));
  expect_qlty_error([&] { Array::open(dir / "deep"); }, "zarr.format", "nested deeper than 64 levels");
  // Products of sizes that overflow 64 bits, or absurd chunk counts.
  write_text(dir / "big/.zarray", zarray("null", "", "<f4", "[9223372036854775807]", "[2]"));
  expect_qlty_error([&] { Array::open(dir / "big"); }, "zarr.unsupported", "too many chunks");
  write_text(dir / "prod/.zarray", zarray("null", "", "<f8", "[4294967296, 4294967296]", "[1, 1]"));
  expect_qlty_error([&] { Array::open(dir / "prod"); }, "zarr.unsupported", "does not fit in 64 bits");
  // A v3 integer setting that does not fit in an int is out of range, not truncated (4294967297 would be 1).
  write_text(dir / "lvl/zarr.json", R"({"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "int32",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}}, "chunk_key_encoding": {"name": "default"},
    "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "gzip", "configuration": {"level": 4294967297}}]})");
  expect_qlty_error([&] { Array::open(dir / "lvl"); }, "zarr.format", "codec \"gzip\" level out of range: 4294967297");
  // A v2 setting out of its range: the tag and the file once.
  write_text(dir / "cl/.zarray", zarray(R"({"id": "blosc", "cname": "lz4", "clevel": 99, "shuffle": 1})"));
  try {
    Array::open(dir / "cl");
    ADD_FAILURE() << "clevel 99 accepted";
  } catch (const qlty::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("clevel must be 0-9, got 99"), std::string::npos) << m;
    EXPECT_EQ(m.find("[qlty."), m.rfind("[qlty.")) << m;
    EXPECT_EQ(m.find(".zarray"), m.rfind(".zarray")) << m;
  }
}

TEST(ZarrHostile, FifosAreRefusedWithoutBlocking) {
  TempDir dir;
  auto a = Array::create(dir / "a", ArrayOptions({4, 4}, {2, 2}));
  a.write({0, 0}, torch::ones({4, 4}));
  ASSERT_EQ(::unlink((dir / "a/0.0").c_str()), 0);
  ASSERT_EQ(::mkfifo((dir / "a/0.0").c_str(), 0644), 0);  // opening it for reading would wait for a writer
  expect_qlty_error([&] { a.read(); }, "zarr.format", "not a regular file");
  qlty::detail::make_dirs(dir / "b");
  ASSERT_EQ(::mkfifo((dir / "b/.zarray").c_str(), 0644), 0);
  expect_qlty_error([&] { Array::open(dir / "b"); }, "zarr.format", "not a regular file");
}

TEST(ZarrHostile, RegionReadsOverMillionsOfChunksStayInBoundedMemory) {
  // 4M one-element chunks, 3 of them stored: the read makes no object per chunk (before: ~400 MB of index lists).
  TempDir dir;
  auto a = Array::create(dir / "tiny", ArrayOptions({int64_t(1) << 22}, {1}, DataType::Float32));
  a.write({5}, torch::tensor({2.0f}));
  a.write({(int64_t(1) << 22) - 1}, torch::tensor({3.0f}));
  const auto rss = [] {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // MiB
    return 0.0;
  };
  std::ofstream("/proc/self/clear_refs") << "5";  // resets the peak to the current resident size
  const double before = rss();
  const auto x = a.read();
  const double grown = rss() - before;
  EXPECT_EQ(x.sum().item<float>(), 5.0f);
  EXPECT_EQ(x[5].item<float>(), 2.0f);
  EXPECT_LT(grown, 120.0) << "MiB of peak memory growth for a 16 MiB result";
  // The listed path with nested keys ("/" separators, v3 "c/..." keys) and a box that does not start at 0.
  for (int v : {2, 3}) {
    SCOPED_TRACE(v);
    ArrayOptions o({96, 96}, {1, 1}, DataType::Int32);
    o.zarr_format = v;
    o.separator = '/';
    auto n = Array::create(dir / ("nested" + std::to_string(v)), o);
    n.write({3, 4}, torch::full({2, 3}, 7, torch::kInt));
    n.write({90, 95}, torch::full({1, 1}, 9, torch::kInt));
    const auto box = n.read({2, 1}, {94, 95});  // 8930 chunks: more than kListedRead
    auto want = torch::zeros({94, 95}, torch::kInt);
    want.narrow(0, 1, 2).narrow(1, 3, 3).fill_(7);
    want[88][94] = 9;
    EXPECT_TRUE(torch::equal(box, want));
  }
}

TEST(ZarrHostile, IntegerWritesRefuseWhatTheTypeCannotHold) {
  // One rule for every integer type: no wrapping (300 -> 44, -1 -> 255, NaN -> 0 before).
  TempDir dir;
  for (const auto& [dt, lo, hi] :
       std::vector<std::tuple<DataType, double, double>>{{DataType::Int8, -128, 127},
                                                         {DataType::UInt8, 0, 255},
                                                         {DataType::Int16, -32768, 32767},
                                                         {DataType::UInt16, 0, 65535},
                                                         {DataType::Int32, -2147483648.0, 2147483647.0},
                                                         {DataType::UInt32, 0, 4294967295.0}}) {
    SCOPED_TRACE(qlty::zarr::name(dt));
    auto a = Array::create(dir / qlty::zarr::name(dt), ArrayOptions({3}, {3}, dt));
    a.write({0}, torch::tensor({lo, hi, 1.9}, torch::kDouble));  // the bounds fit; fractions are cut toward zero
    EXPECT_TRUE(torch::equal(a.read().to(torch::kDouble), torch::tensor({lo, hi, 1.0}, torch::kDouble)));
    for (double bad : {lo - 1, hi + 1, std::nan(""), std::numeric_limits<double>::infinity()})
      expect_c10<c10::ValueError>(
          [&] {
            a.write({0}, torch::tensor({bad, 0.0, 0.0}, torch::kDouble));
          },
          std::isnan(bad) || std::isinf(bad) ? "NaN or infinite" : "values must be in [");
    if (hi < 300)
      expect_c10<c10::ValueError>([&] { a.write({0}, torch::tensor({300.0f, 0.f, 0.f})); }, "values must be in [");
    EXPECT_TRUE(torch::equal(a.read().to(torch::kDouble), torch::tensor({lo, hi, 1.0}, torch::kDouble)));  // kept
  }
  auto i64 = Array::create(dir / "i64", ArrayOptions({1}, {1}, DataType::Int64));
  expect_c10<c10::ValueError>([&] { i64.write({0}, torch::tensor({1e19})); }, "values must be in [");
  auto wide = Array::create(dir / "i8", ArrayOptions({2}, {2}, DataType::Int8));
  expect_c10<c10::ValueError>(
      [&] {
        wide.write({0}, torch::tensor({int64_t(1000), int64_t(0)}));
      },
      "values must be in [");
}

TEST(ZarrPython, ArraysWrittenByZarrPythonRead) {
  QLTY_SKIP_WITHOUT_ZARR_PYTHON();
  TempDir dir;
#ifdef QLTY_ZARR_PYTHON
  ASSERT_EQ(run(std::string(QLTY_ZARR_PYTHON) + " " + QLTY_ZARR_INTEROP + " write " + dir.path + " > /dev/null"), 0);
#endif
  const auto text = read_bytes(dir / "manifest.json");
  const json manifest = json::parse(std::string(text.begin(), text.end()));
  ASSERT_GT(manifest.size(), 250u);
  int checked = 0;
  for (const auto& m : manifest) {
    const std::string name = m["name"];
    auto a = Array::open(dir / name);
    if (!m["compressor"].is_null() && m["compressor"]["id"] == "blosc" &&
        blosc_compname_to_compcode(m["compressor"]["cname"].get<std::string>().c_str()) < 0)
      continue;
    auto got = a.read();
    ASSERT_TRUE(same(got, expected_interop(a.dtype(), a.metadata().fill))) << name;
    EXPECT_FALSE(a.chunk_exists({1, 1, 1})) << name << kMissing;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(manifest.size()));
}

TEST(ZarrPython, ArraysWrittenByQltyOpenInZarrPython) {
  QLTY_SKIP_WITHOUT_ZARR_PYTHON();
  TempDir dir;
  json manifest = json::array();
  const std::map<DataType, FillValue> fills = {{DataType::Bool, true},
                                               {DataType::Int8, -7},
                                               {DataType::Int16, -7},
                                               {DataType::Int32, FillValue::null()},
                                               {DataType::Int64, -7},
                                               {DataType::UInt8, 200},
                                               {DataType::UInt16, 65535},
                                               {DataType::UInt32, 4294967295u},
                                               {DataType::UInt64, 12345678901234u},
                                               {DataType::Float16, 1.5},
                                               {DataType::Float32, std::numeric_limits<double>::quiet_NaN()},
                                               {DataType::Float64, -std::numeric_limits<double>::infinity()}};
  std::vector<std::optional<Codec>> comps{std::nullopt};
  for (const auto& c : codecs_v2()) comps.push_back(c);
  for (DataType t : kTypes) {
    for (size_t k = 0; k < comps.size(); ++k) {
      for (char sep : {'.', '/'}) {
        ArrayOptions o({7, 11, 13}, {3, 4, 5}, t);
        o.codecs = comps[k] ? std::vector<Codec>{*comps[k]} : std::vector<Codec>{};
        o.fill_value = fills.at(t);
        o.separator = sep;
        const std::string name =
            std::string(qlty::zarr::name(t)) + "_c" + std::to_string(k) + (sep == '.' ? "_flat" : "_nested");
        auto a = Array::create(dir / name, o);
        // Write everything but the missing chunk, in boxes that do not align with chunks.
        auto e = expected_interop(t, a.metadata().fill);
        a.write({0, 0, 0}, e.slice(0, 0, 3));
        a.write({3, 0, 0}, e.slice(0, 3, 7).slice(1, 0, 4));
        a.write({3, 8, 0}, e.slice(0, 3, 7).slice(1, 8, 11));
        a.write({3, 4, 0}, e.slice(0, 3, 7).slice(1, 4, 8).slice(2, 0, 5));
        a.write({3, 4, 10}, e.slice(0, 3, 7).slice(1, 4, 8).slice(2, 10, 13));
        a.write({6, 4, 5}, e.slice(0, 6, 7).slice(1, 4, 8).slice(2, 5, 10));
        json comp = comps[k] ? qlty::detail::v2_compressor_json(*comps[k]) : json(nullptr);
        manifest.push_back({{"name", name},
                            {"dtype", qlty::detail::v2_dtype(t)},
                            {"compressor", comp},
                            {"separator", std::string(1, sep)}});
        if (k == 1 && sep == '.') {
          a.set_attributes({{"unit", "nm"}, {"n", 3}});
          manifest.back()["attributes"] = {{"unit", "nm"}, {"n", 3}};
        }
      }
    }
  }
  write_text(dir / "manifest.json", manifest.dump());
#ifdef QLTY_ZARR_PYTHON
  EXPECT_EQ(run(std::string(QLTY_ZARR_PYTHON) + " " + QLTY_ZARR_INTEROP + " check " + dir.path), 0);
#endif
}

// zarr-python 3 (PyPI, in the build folder's virtual environment): integer types at their range edges, both ways.
// uint64 holds 2^64 - 1 where LibTorch has torch::kUInt64 (2.3); before, it reads up to 2^63 - 1 (as int64).

#ifdef QLTY_VENV_PYTHON
constexpr uint64_t kUInt64ReadMax = QLTY_HAS_UNSIGNED_DTYPES ? ~uint64_t(0) : uint64_t(INT64_MAX);

// The values of zarr3_interop.py as the type a read returns: lo, lo + 1, hi - 1, hi, then (7 i + 3) mod 97.
torch::Tensor edge_values(DataType t, int64_t lo, uint64_t hi) {
  auto v = (torch::arange(30, torch::kLong) * 7 + 3).remainder(97);
  auto* p = v.data_ptr<int64_t>();
  p[0] = lo, p[1] = lo + 1;
  p[2] = static_cast<int64_t>(hi - 1), p[3] = static_cast<int64_t>(hi);  // 2^64 - 1: the bits of -1
  v = v.view({5, 6});
#if QLTY_HAS_UNSIGNED_DTYPES
  if (t == DataType::UInt64) return v.view(torch::kUInt64);
#endif
  return v.to(qlty::zarr::scalar_type(t));
}

struct EdgeType {
  DataType type;
  int64_t lo;
  uint64_t hi;
};
const std::vector<EdgeType> kEdgeTypes = {{DataType::Int8, -128, 127},
                                          {DataType::Int16, -32768, 32767},
                                          {DataType::Int32, INT32_MIN, INT32_MAX},
                                          {DataType::Int64, INT64_MIN, INT64_MAX},
                                          {DataType::UInt8, 0, 255},
                                          {DataType::UInt16, 0, 65535},
                                          {DataType::UInt32, 0, 4294967295u},
                                          {DataType::UInt64, 0, kUInt64ReadMax}};

TEST(ZarrPython3, IntegerRangeEdgesWrittenByZarrPython3Read) {
  TempDir dir;
  ASSERT_EQ(run(std::string(QLTY_VENV_PYTHON) + " " + QLTY_ZARR3_INTEROP + " write " + dir.path + " " +
                std::to_string(kUInt64ReadMax) + " > " + (dir / "log") + " 2>&1"),
            0)
      << std::string(read_bytes(dir / "log").begin(), read_bytes(dir / "log").end());
  for (int format : {2, 3})
    for (const auto& e : kEdgeTypes) {
      const std::string name = std::string(qlty::zarr::name(e.type)) + "_v" + std::to_string(format);
      auto a = Array::open(dir / name);
      EXPECT_EQ(a.dtype(), e.type) << name;
      const auto got = a.read();
      EXPECT_EQ(got.scalar_type(), qlty::zarr::scalar_type(e.type)) << name;
      EXPECT_TRUE(same(got, edge_values(e.type, e.lo, e.hi))) << name;
    }
}

TEST(ZarrPython3, IntegerRangeEdgesWrittenByQltyReadInZarrPython3) {
  TempDir dir;
  json manifest = json::array();
  for (int format : {2, 3})
    for (const auto& e : kEdgeTypes) {
      const std::string name = std::string(qlty::zarr::name(e.type)) + "_v" + std::to_string(format);
      ArrayOptions o({5, 6}, {2, 4}, e.type);
      o.zarr_format = format;
      o.codecs = {Codec::zstd()};
      auto a = Array::create(dir / name, o);
      const auto values = edge_values(e.type, e.lo, e.hi);
      a.write({0, 0}, values);
      EXPECT_TRUE(same(a.read(), values)) << name;  // and back, exactly
      manifest.push_back(
          {{"name", name}, {"dtype", qlty::zarr::name(e.type)}, {"lo", e.lo}, {"hi", e.hi}, {"zarr_format", format}});
    }
  write_text(dir / "manifest.json", manifest.dump());
  EXPECT_EQ(run(std::string(QLTY_VENV_PYTHON) + " " + QLTY_ZARR3_INTEROP + " check " + dir.path), 0);
}
#endif

#if QLTY_HAS_UNSIGNED_DTYPES
TEST(ZarrUnsigned, ReadAsThemselvesWithTheirFullRange) {
  TempDir dir;
  // a fill value of 2^64 - 1 for chunks never written
  ArrayOptions o({4}, {2}, DataType::UInt64);
  o.fill_value = FillValue(~uint64_t(0));
  auto a = Array::create(dir / "u64", o);
  a.write({0}, torch::tensor({int64_t(-2), int64_t(7)}).view(torch::kUInt64));  // 2^64 - 2 and 7
  const auto got = a.read();
  ASSERT_EQ(got.scalar_type(), torch::kUInt64);
  EXPECT_TRUE(torch::equal(got.view(torch::kLong), torch::tensor({int64_t(-2), int64_t(7), int64_t(-1), int64_t(-1)})));
  // a uint16 tensor into a uint8 array: values over 255 refused, never wrapped
  auto u8 = Array::create(dir / "u8", ArrayOptions({2}, {2}, DataType::UInt8));
  expect_c10<c10::ValueError>(
      [&] {
        u8.write({0}, torch::tensor({1, 300}).to(torch::kUInt16));
      },
      "values must be in [0, 255] for uint8");
  // uint32 into int64: exact
  auto i64 = Array::create(dir / "i64", ArrayOptions({1}, {1}, DataType::Int64));
  i64.write({0}, torch::tensor({int64_t(4294967295)}).to(torch::kUInt32));
  EXPECT_EQ(i64.read().item<int64_t>(), 4294967295);
}
#endif

// ---------------------------------------------------------------------------------------------------------------
// Concurrency and crashes

TEST(ZarrConcurrency, ThreadsWritingDisjointChunksAndAddingToOneRegion) {
  TempDir dir;
  ArrayOptions o({64, 64}, {8, 8}, DataType::Int32);
  o.codecs = {Codec::zstd()};
  auto a = Array::create(dir / "t", o);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)  // disjoint chunk rows, each through its own Array object
    threads.emplace_back([&, t] { Array::open(dir / "t").write({t * 8, 0}, torch::full({8, 64}, t, torch::kInt)); });
  for (auto& th : threads) th.join();
  threads.clear();
  for (int t = 0; t < 8; ++t)  // one region over four chunks, partly, through shared and separate objects
    threads.emplace_back([&, t] {
      auto b = Array::open(dir / "t");
      for (int i = 0; i < 25; ++i) (i % 2 ? b : a).add({3, 3}, torch::ones({6, 6}, torch::kInt));
    });
  for (auto& th : threads) th.join();
  auto got = a.read();
  auto want = torch::arange(8, torch::kInt).repeat_interleave(8).view({64, 1}).expand({64, 64}).clone();
  want.slice(0, 3, 9).slice(1, 3, 9) += 200;
  EXPECT_TRUE(torch::equal(got, want));
}

#ifdef QLTY_ZARR_WORKER
TEST(ZarrConcurrency, ProcessesWritingDisjointChunksAndAddingToOneRegion) {
  TempDir dir;
  ArrayOptions o({40, 12}, {4, 4}, DataType::Int32);
  o.codecs = {Codec::blosc()};
  Array::create(dir / "p", o);
  const int P = 4, N = 30;
  std::string cmd;
  for (int p = 0; p < P; ++p)
    cmd += std::string(QLTY_ZARR_WORKER) + " rows " + (dir / "p") + " " + std::to_string(p) + " " + std::to_string(P) +
           " & " + QLTY_ZARR_WORKER + " add " + (dir / "p") + " " + std::to_string(N) + " & ";
  ASSERT_EQ(run("(" + cmd + "wait) 2>&1"), 0);
  auto got = Array::open(dir / "p").read();
  // rows wrote value r into rows 4r..4r+3, racing with the adds on [0,5)x[0,5): the adds overlap row blocks 0
  // and 1, so their final value depends on order, except that every add must be counted after the last rows write.
  auto tail = got.slice(0, 8);
  auto want_tail = torch::arange(2, 10, torch::kInt).repeat_interleave(4).view({32, 1}).expand({32, 12});
  EXPECT_TRUE(torch::equal(tail, want_tail));
  // A clean count: a fresh array with only adders.
  Array::create(dir / "q", o);
  cmd.clear();
  for (int p = 0; p < P; ++p)
    cmd += std::string(QLTY_ZARR_WORKER) + " add " + (dir / "q") + " " + std::to_string(N) + " & ";
  ASSERT_EQ(run("(" + cmd + "wait) 2>&1"), 0);
  auto q = Array::open(dir / "q").read();
  EXPECT_EQ(q.slice(0, 0, 5).slice(1, 0, 5).min().item<int>(), P * N);
  EXPECT_EQ(q.slice(0, 0, 5).slice(1, 0, 5).max().item<int>(), P * N);
  EXPECT_EQ(q.sum().item<int64_t>(), int64_t(P) * N * 25);
}

TEST(ZarrConcurrency, KillDuringWritesLeavesOldOrNewChunks) {
  TempDir dir;
  ArrayOptions o({32, 32}, {8, 8}, DataType::Int32);
  o.codecs = {Codec::zlib(1)};
  auto a = Array::create(dir / "k", o);
  a.write({0, 0}, torch::zeros({32, 32}, torch::kInt));  // every chunk exists before the first kill
  std::mt19937 rng(7);
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(QLTY_ZARR_WORKER, QLTY_ZARR_WORKER, "rewrite", (dir / "k").c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(30, 400)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the worker ended on its own in round " << round;
    // Every chunk is whole: one value throughout (a rewrite writes one value everywhere).
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        auto c = a.read_chunk({i, j});
        EXPECT_EQ(c.min().item<int>(), c.max().item<int>()) << "torn chunk " << i << "," << j;
      }
  }
  // Killed writers leave temporary files; they are hidden and no reader takes them for chunks. The next write
  // through an opened array removes them.
  auto temps = [&] {
    int n = 0;
    for (const auto& f : qlty::detail::list_dir(dir / "k")) n += f.size() > 4 && f.substr(f.size() - 4) == ".tmp";
    return n;
  };
  RecordProperty("temp_files_left", temps());
  auto again = Array::open(dir / "k");
  again.write({0, 0}, torch::full({8, 8}, 5, torch::kInt));
  EXPECT_EQ(temps(), 0);
#ifdef QLTY_ZARR_PYTHON
  if (have_zarr_python())
    EXPECT_EQ(run(std::string(QLTY_ZARR_PYTHON) + " -c \"import zarr,numpy as np,sys; z=zarr.open('" + (dir / "k") +
                  "',mode='r'); a=z[...]; c=a.reshape(4,8,4,8).transpose(0,2,1,3).reshape(16,64); "
                  "sys.exit(0 if (c.min(1)==c.max(1)).all() and z.nchunks_initialized==16 else 1)\""),
              0);
#endif
}
#endif

}  // namespace
