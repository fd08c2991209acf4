// libFuzzer target: chunk decoding. The first two bytes pick a codec chain and an element size; the rest is a
// stored chunk that must decode into exactly the chunk's bytes or give a qlty::Error, never read or write out
// of bounds.
#include <qlty/zarr/codecs.hpp>

#include <vector>

using qlty::zarr::Codec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const std::vector<std::vector<Codec>> chains = {
      {},
      {Codec::blosc()},
      {Codec::zlib()},
      {Codec::gzip()},
      {Codec::zstd()},
      {Codec::lz4()},
      {Codec::crc32c()},
      {Codec::zstd(), Codec::crc32c()},
      {Codec::gzip(), Codec::blosc("zstd", 5, 2)},
  };
  const auto& chain = chains[data[0] % chains.size()];
  const size_t expected = 1 + (data[1] % 64) * 16;  // 1 .. 1009 bytes
  std::vector<uint8_t> out(expected);
  try {
    qlty::detail::decode_chain(chain, data + 2, size - 2, out.data(), out.size(), expected * 2 + 65536, "fuzz");
  } catch (const qlty::Error&) {
  }
  // And the inverse: what we encode must decode to the same bytes.
  const auto enc = qlty::detail::encode_chain(chain, data + 2, size - 2, 1, "fuzz");
  std::vector<uint8_t> back(size - 2);
  qlty::detail::decode_chain(chain, enc.data(), enc.size(), back.data(), back.size(), back.size() * 2 + 65536, "fuzz");
  if (!std::equal(back.begin(), back.end(), data + 2)) std::abort();
  return 0;
}
