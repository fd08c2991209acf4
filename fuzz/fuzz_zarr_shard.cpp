// libFuzzer target: shard reading. The first byte picks a shard layout (inner codecs, index at the start or end,
// with or without crc32c, index byte order) of an int16 array whose shards of 16 x 20 hold 2 x 2 inner chunks of
// 8 x 10; the rest is a shard file. Its index must be refused with a qlty::Error or point only at bytes inside the
// file, and every inner chunk must decode into exactly its bytes or give a qlty::Error, never read or write out of
// bounds.
#include <qlty/zarr/shard.hpp>

#include <cstdlib>
#include <vector>

using qlty::zarr::Codec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  struct Layout {
    std::vector<Codec> codecs;
    bool at_start, crc, big_endian;
  };
  static const std::vector<Layout> layouts = {{{}, false, true, false},
                                              {{Codec::zstd()}, true, true, false},
                                              {{Codec::gzip()}, false, false, false},
                                              {{Codec::crc32c()}, false, true, false},
                                              {{Codec::blosc()}, true, false, true}};  // a big-endian index
  const auto& l = layouts[data[0] % layouts.size()];
  qlty::detail::ArrayMetadata m;
  m.zarr_format = 3;
  m.shape = {37, 50};
  m.chunks = {16, 20};
  m.inner_chunks = {8, 10};
  m.dtype = qlty::zarr::DataType::Int16;
  m.codecs = l.codecs;
  m.index_at_start = l.at_start;
  m.index_crc32c = l.crc;
  m.index_big_endian = l.big_endian;
  const uint8_t* shard = data + 1;
  const uint64_t n = size - 1;
  try {
    qlty::detail::check_shard_size(m, n, "fuzz");
    const auto index = qlty::detail::decode_shard_index(shard + qlty::detail::index_position(m, n), m, n, "fuzz");
    std::vector<uint8_t> inner(static_cast<size_t>(m.coded_nbytes()));
    for (int64_t k = 0; k < index.size(); ++k) {
      if (index.empty(k)) continue;
      if (index.offset[k] + index.nbytes[k] > n) std::abort();  // the checks let an entry point outside the file
      try {
        qlty::detail::decode_chain(m.codecs, shard + index.offset[k], static_cast<size_t>(index.nbytes[k]),
                                   inner.data(), inner.size(), inner.size() * 2 + 65536, "fuzz");
      } catch (const qlty::Error&) {
      }
    }
  } catch (const qlty::Error&) {
  }
  return 0;
}
