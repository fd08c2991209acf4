// The shared bottom layer (include/qlty/support): checksums, byte order, temporary files, JSON files.
#include "../common.hpp"

#include <qlty/support/byte_io.hpp>
#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/json.hpp>
#include <qlty/support/paths.hpp>

#include <unistd.h>

#include <fstream>

namespace {

using qlty_test::expect_qlty_error;
using qlty_test::write_text;

using qlty_test::TempDir;

TEST(Checksum, Crc32cKnownAnswers) {
  const std::string s = "123456789";
  EXPECT_EQ(qlty::detail::crc32c(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  EXPECT_EQ(qlty::detail::crc32c(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(qlty::detail::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(qlty::detail::crc32c(nullptr, 0), 0u);
}

TEST(Checksum, HexAndFnv1a) {
  EXPECT_EQ(qlty::detail::hex32(0xE3069283u), "e3069283");
  EXPECT_EQ(qlty::detail::hex32(0x1u), "00000001");
  EXPECT_EQ(qlty::detail::hex64(0x0123456789abcdefull), "0123456789abcdef");
  EXPECT_EQ(qlty::detail::fnv1a64("", 0), 0xcbf29ce484222325ull);   // FNV-1a 64 offset basis
  EXPECT_EQ(qlty::detail::fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);  // published test vector
  EXPECT_EQ(qlty::detail::fnv1a64("foobar", 6), 0x85944171f73967e8ull);
  EXPECT_EQ(qlty::detail::fnv1a64("", 0, 7), 7u);  // another basis: where it starts
}

TEST(ByteIo, LittleEndianWhateverTheMachine) {
  uint8_t b[8];
  qlty::detail::put_le32(b, 0x11223344u);
  EXPECT_EQ(std::vector<int>(b, b + 4), (std::vector<int>{0x44, 0x33, 0x22, 0x11}));
  EXPECT_EQ(qlty::detail::get_le32(b), 0x11223344u);
  qlty::detail::put_le64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 0x08);
  EXPECT_EQ(b[7], 0x01);
  EXPECT_EQ(qlty::detail::get_le64(b), 0x0102030405060708ull);
  std::vector<uint8_t> v;
  qlty::detail::append_le32(v, 0xA1B2C3D4u);
  qlty::detail::append_le64(v, 0xFFull << 56);
  ASSERT_EQ(v.size(), 12u);
  EXPECT_EQ(v[0], 0xD4);
  EXPECT_EQ(v[11], 0xFF);
  EXPECT_EQ(qlty::detail::get_le64(v.data() + 4), 0xFFull << 56);
}

TEST(TempFiles, TemporaryFilesOfOtherMachinesAreNotStale) {
  const std::string host = qlty::detail::host_tag();
  EXPECT_EQ(qlty::detail::temp_owner(".0.0.0.1234@" + host + ".5.678.tmp"), 1234);
  EXPECT_EQ(qlty::detail::temp_owner(".0.0.0.1234@another-node.5.678.tmp"), 0);
  EXPECT_EQ(qlty::detail::temp_owner(".0.0.0.1234.5.678.tmp"), 1234);  // written before names carried the host
  const std::string mine = qlty::detail::base_name(qlty::detail::temp_name("/x/chunk"));
  EXPECT_EQ(qlty::detail::temp_owner(mine), ::getpid()) << mine;
  EXPECT_EQ(qlty::detail::temp_owner("chunk"), 0);
}

TEST(JsonFile, ErrorsNameTheFileAndTheKey) {
  TempDir dir;
  EXPECT_FALSE(qlty::detail::read_json_file(dir / "none.json", 1 << 20).has_value());
  write_text(dir / "a.json",
             R"({"n": 3, "s": "x", "l": [1, 2], "deep": )" + std::string(100, '[') + std::string(100, ']') + "}");
  expect_qlty_error([&] { qlty::detail::read_json_file(dir / "a.json", 1 << 20); }, "zarr.format",
                    "nested deeper than 64");
  write_text(dir / "b.json", R"({"n": 3, "s": "x", "l": [1, 2]})");
  const auto j = *qlty::detail::read_json_file(dir / "b.json", 1 << 20);
  const std::string f = dir / "b.json";
  EXPECT_EQ(qlty::detail::as_int(qlty::detail::key(j, "n", f), "n", f), 3);
  EXPECT_EQ(qlty::detail::int_list(qlty::detail::key(j, "l", f), "l", f), (std::vector<int64_t>{1, 2}));
  expect_qlty_error([&] { qlty::detail::key(j, "missing", f); }, "zarr.format", "b.json: missing key \"missing\"");
  expect_qlty_error([&] { qlty::detail::as_int(j.at("s"), "s", f); }, "zarr.format", "s must be an integer, got \"x\"");
  expect_qlty_error([&] { qlty::detail::read_json_file(dir / "b.json", 4); }, "zarr.format", "more than the 4");
}

TEST(Paths, OverlapAfterResolvingLinks) {
  TempDir dir;
  qlty::detail::make_dirs(dir / "a/b");
  ASSERT_EQ(::symlink((dir / "a").c_str(), (dir / "link").c_str()), 0);
  EXPECT_TRUE(qlty::detail::paths_overlap(dir / "a", dir / "a/b/c.zarr"));
  EXPECT_TRUE(qlty::detail::paths_overlap(dir / "link/b", dir / "a/b/"));
  EXPECT_FALSE(qlty::detail::paths_overlap(dir / "a/b", dir / "a/bb"));
  EXPECT_FALSE(qlty::detail::paths_overlap(dir / "a", dir / "other"));
}

}  // namespace
