#pragma once
// IWYU pragma: private, include <qlty/zarr.hpp>
// The bytes of a Zarr v3 shard (`sharding_indexed`): inner chunks one after another, and an index of
// (offset, nbytes) uint64 pairs per inner chunk in C order, at the shard's start or end, optionally followed by
// its CRC32C. (2^64-1, 2^64-1) marks an empty inner chunk. A shard read from disk is checked before any inner chunk
// is used: its size, the index's checksum, and that every inner chunk lies inside the file, outside the index and
// apart from every other; a hostile shard is a `zarr.format` error naming the file.

#include <qlty/support/byte_io.hpp>
#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/zarr/codecs.hpp>
#include <qlty/zarr/metadata.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qlty::detail {

/// Where each inner chunk of one shard lies in its file.
struct ShardIndex {
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  std::vector<uint64_t> offset, nbytes;  // per inner chunk, C order; kEmpty for an empty inner chunk

  explicit ShardIndex(int64_t inner = 0) : offset(static_cast<size_t>(inner), kEmpty), nbytes(offset) {}
  bool empty(int64_t k) const { return offset[static_cast<size_t>(k)] == kEmpty; }
  int64_t size() const { return static_cast<int64_t>(offset.size()); }
};

/// Where the index sits in a shard of `shard_size` bytes.
inline uint64_t index_position(const ArrayMetadata& m, uint64_t shard_size) {
  return m.index_at_start ? 0 : shard_size - static_cast<uint64_t>(m.index_nbytes());
}

/// Checks that a shard of `shard_size` bytes can hold its index at all.
inline void check_shard_size(const ArrayMetadata& m, uint64_t shard_size, const std::string& file) {
  const auto need = static_cast<uint64_t>(m.index_nbytes());
  if (shard_size < need)
    corrupt(file, "truncated shard: " + std::to_string(shard_size) + " bytes, but the index of its " +
                      std::to_string(m.inner_per_shard()) + " inner chunks alone takes " + std::to_string(need));
}

/// Decodes and checks the index bytes `p` (m.index_nbytes() of them) of a shard of `shard_size` bytes.
inline ShardIndex decode_shard_index(const uint8_t* p, const ArrayMetadata& m, uint64_t shard_size,
                                     const std::string& file) {
  check_shard_size(m, shard_size, file);
  const int64_t n = m.inner_per_shard();
  const size_t pairs = 16 * static_cast<size_t>(n);
  if (m.index_crc32c && crc32c(p, pairs) != get_le32(p + pairs))
    corrupt(file, "the shard index's crc32c does not match its bytes");
  ShardIndex index(n);
  const uint64_t index_at = index_position(m, shard_size), index_end = index_at + m.index_nbytes();
  std::vector<std::pair<uint64_t, uint64_t>> used;  // (offset, end) of every inner chunk
  for (int64_t k = 0; k < n; ++k) {
    uint64_t off = get_le64(p + 16 * k), len = get_le64(p + 16 * k + 8);
    if (m.index_big_endian) off = __builtin_bswap64(off), len = __builtin_bswap64(len);
    const std::string which = "inner chunk " + std::to_string(k) + " of the shard index";
    if (off == ShardIndex::kEmpty || len == ShardIndex::kEmpty) {
      if (off != len)
        corrupt(file, which + " is half empty: offset " + std::to_string(off) + ", nbytes " + std::to_string(len));
      continue;
    }
    if (len > shard_size || off > shard_size - len)
      corrupt(file, which + " points past the end of the file: offset " + std::to_string(off) + ", nbytes " +
                        std::to_string(len) + ", the shard has " + std::to_string(shard_size) + " bytes");
    if (len > 0 && off < index_end && index_at < off + len)
      corrupt(file, which + " overlaps the index itself: bytes [" + std::to_string(off) + ", " +
                        std::to_string(off + len) + ") against the index at [" + std::to_string(index_at) + ", " +
                        std::to_string(index_end) + ")");
    index.offset[static_cast<size_t>(k)] = off;
    index.nbytes[static_cast<size_t>(k)] = len;
    if (len > 0) used.emplace_back(off, off + len);
  }
  std::sort(used.begin(), used.end());
  for (size_t i = 1; i < used.size(); ++i)
    if (used[i].first < used[i - 1].second)
      corrupt(file, "two inner chunks of the shard overlap at byte " + std::to_string(used[i].first));
  return index;
}

/// One inner chunk's stored bytes while a shard is built: in its own buffer (`raw`, filled by one copy, or `coded`),
/// or bytes kept valid elsewhere (an old shard's), or none (`empty`).
struct InnerBytes {
  std::unique_ptr<uint8_t[]> raw;
  ByteBuffer coded;
  const uint8_t* data = nullptr;
  size_t size = 0;
  bool empty = true;
};

/// The parts of a shard's file, as zarr-python lays them out: the inner chunks that are not empty in C order, and
/// the index (written into `index`) first or last.
inline std::vector<ByteSpan> shard_parts(const ArrayMetadata& m, const std::vector<InnerBytes>& inner,
                                         ByteBuffer& index) {
  const int64_t n = m.inner_per_shard();
  index.assign(static_cast<size_t>(m.index_nbytes()), 0);
  std::vector<ByteSpan> parts;
  if (m.index_at_start) parts.push_back({index.data(), index.size()});
  uint64_t at = m.index_at_start ? index.size() : 0;
  for (int64_t k = 0; k < n; ++k) {
    uint64_t off = ShardIndex::kEmpty, len = ShardIndex::kEmpty;
    const auto& c = inner[static_cast<size_t>(k)];
    if (!c.empty) {
      off = at, len = c.size;
      parts.push_back({c.data, c.size});
      at += len;
    }
    if (m.index_big_endian) off = __builtin_bswap64(off), len = __builtin_bswap64(len);
    put_le64(index.data() + 16 * k, off);
    put_le64(index.data() + 16 * k + 8, len);
  }
  if (m.index_crc32c) put_le32(index.data() + 16 * n, crc32c(index.data(), 16 * static_cast<size_t>(n)));
  if (!m.index_at_start) parts.push_back({index.data(), index.size()});
  return parts;
}

}  // namespace qlty::detail
