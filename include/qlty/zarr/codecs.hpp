#pragma once
// IWYU pragma: private, include <qlty/zarr.hpp>
// Zarr's bytes-to-bytes codecs, byte-compatible with numcodecs (v2) and the v3 spec: blosc, zlib, gzip, zstd,
// lz4 (numcodecs framing: 4-byte little-endian size, then one block) and crc32c. Decoders check every size
// against the input before touching memory; a corrupt input is a `zarr.format` error naming the file.

#include <qlty/error.hpp>
#include <qlty/support/byte_io.hpp>
#include <qlty/support/checksum.hpp>
#include <qlty/zarr_types.hpp>

#include <blosc.h>
#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace qlty::detail {

using zarr::Codec;
using ByteBuffer = std::vector<uint8_t>;

[[noreturn]] inline void corrupt(const std::string& file, const std::string& what) {
  throw Error("zarr.format", file + ": " + what);
}

/// Checks a codec's parameters before any data is written with it (messages name `where`).
inline void validate_codec(const Codec& c, const std::string& where) {
  auto bad = [&](const std::string& what) {
    throw Error("zarr.unsupported", where + ": codec " + c.name() + ": " + what);
  };
  switch (c.id) {
    case Codec::Id::Blosc:
      if (blosc_compname_to_compcode(c.cname.c_str()) < 0)
        bad("cname \"" + c.cname + "\" is not available in this blosc (it has " + blosc_list_compressors() + ")");
      if (c.clevel < 0 || c.clevel > 9) bad("clevel must be 0-9, got " + std::to_string(c.clevel));
      if (c.shuffle < -1 || c.shuffle > 2) bad("shuffle must be -1, 0, 1 or 2, got " + std::to_string(c.shuffle));
      if (c.blocksize < 0) bad("blocksize must be >= 0, got " + std::to_string(c.blocksize));
      break;
    case Codec::Id::Zlib:
    case Codec::Id::Gzip:
      if (c.level < 0 || c.level > 9) bad("level must be 0-9, got " + std::to_string(c.level));
      break;
    case Codec::Id::Zstd:
      if (c.level < ZSTD_minCLevel() || c.level > ZSTD_maxCLevel())
        bad("level must be " + std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()) + ", got " +
            std::to_string(c.level));
      break;
    case Codec::Id::Lz4:
      if (c.acceleration < 1) bad("acceleration must be >= 1, got " + std::to_string(c.acceleration));
      break;
    case Codec::Id::Crc32c:
      break;
  }
}

/// Encodes n bytes of elements of `typesize` bytes.
inline ByteBuffer encode(const Codec& c, const uint8_t* src, size_t n, size_t typesize, const std::string& file) {
  auto fail = [&](const std::string& what) -> ByteBuffer {
    throw Error("io", file + ": " + c.name() + " encoding failed: " + what);
  };
  ByteBuffer out;
  switch (c.id) {
    case Codec::Id::Blosc: {
      if (n > static_cast<size_t>(BLOSC_MAX_BUFFERSIZE)) return fail("chunk larger than blosc's 2 GiB limit");
      int shuffle = c.shuffle;
      if (shuffle == -1) shuffle = typesize == 1 ? BLOSC_BITSHUFFLE : BLOSC_SHUFFLE;
      out.resize(n + BLOSC_MAX_OVERHEAD);
      const int r = blosc_compress_ctx(c.clevel, shuffle, typesize > BLOSC_MAX_TYPESIZE ? 1 : typesize, n, src,
                                       out.data(), out.size(), c.cname.c_str(), static_cast<size_t>(c.blocksize), 1);
      if (r <= 0) return fail("blosc_compress_ctx returned " + std::to_string(r));
      out.resize(static_cast<size_t>(r));
      return out;
    }
    case Codec::Id::Zlib:
    case Codec::Id::Gzip: {
      z_stream s;
      std::memset(&s, 0, sizeof s);
      const int wbits = c.id == Codec::Id::Gzip ? 15 + 16 : 15;
      if (deflateInit2(&s, c.level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK) return fail("deflateInit2");
      out.resize(deflateBound(&s, static_cast<uLong>(n)) + 32);
      s.next_in = const_cast<Bytef*>(src);
      s.avail_in = static_cast<uInt>(n);
      s.next_out = out.data();
      s.avail_out = static_cast<uInt>(out.size());
      const int r = deflate(&s, Z_FINISH);
      const size_t produced = s.total_out;
      deflateEnd(&s);
      if (r != Z_STREAM_END) return fail("deflate returned " + std::to_string(r));
      out.resize(produced);
      return out;
    }
    case Codec::Id::Zstd: {
      thread_local struct Ctx {
        ZSTD_CCtx* p = ZSTD_createCCtx();
        ~Ctx() { ZSTD_freeCCtx(p); }
      } ctx;
      ZSTD_CCtx_reset(ctx.p, ZSTD_reset_session_and_parameters);
      ZSTD_CCtx_setParameter(ctx.p, ZSTD_c_compressionLevel, c.level);
      ZSTD_CCtx_setParameter(ctx.p, ZSTD_c_checksumFlag, c.checksum ? 1 : 0);
      ZSTD_CCtx_setParameter(ctx.p, ZSTD_c_contentSizeFlag, 1);
      out.resize(ZSTD_compressBound(n));
      const size_t r = ZSTD_compress2(ctx.p, out.data(), out.size(), src, n);
      if (ZSTD_isError(r)) return fail(ZSTD_getErrorName(r));
      out.resize(r);
      return out;
    }
    case Codec::Id::Lz4: {
      if (n > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return fail("chunk larger than LZ4's limit");
      out.resize(4 + static_cast<size_t>(LZ4_compressBound(static_cast<int>(n))));
      put_le32(out.data(), static_cast<uint32_t>(n));
      const int r = LZ4_compress_fast(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(out.data() + 4),
                                      static_cast<int>(n), static_cast<int>(out.size() - 4), c.acceleration);
      if (r <= 0) return fail("LZ4_compress_fast returned " + std::to_string(r));
      out.resize(4 + static_cast<size_t>(r));
      return out;
    }
    case Codec::Id::Crc32c: {
      out.resize(n + 4);
      if (n) std::memcpy(out.data(), src, n);
      put_le32(out.data() + n, crc32c(src, n));
      return out;
    }
  }
  return out;
}

/// The size a decoder will produce, read from its frame (blosc, zstd, lz4) or bounded (zlib, gzip: `bound`).
/// Checks the frame header against the input length; errors name `file`.
inline size_t decoded_size(const Codec& c, const uint8_t* src, size_t n, size_t bound, const std::string& file) {
  switch (c.id) {
    case Codec::Id::Blosc: {
      if (n < BLOSC_MIN_HEADER_LENGTH)
        corrupt(file, "blosc chunk of " + std::to_string(n) + " bytes is shorter than its 16-byte header");
      size_t nbytes = 0;
      if (blosc_cbuffer_validate(src, n, &nbytes) != 0)
        corrupt(file, "blosc header does not match the chunk's " + std::to_string(n) + " bytes");
      size_t nb = 0, cbytes = 0, bs = 0;
      blosc_cbuffer_sizes(src, &nb, &cbytes, &bs);
      if (cbytes > n)
        corrupt(file, "blosc header says " + std::to_string(cbytes) + " bytes, the chunk has " + std::to_string(n));
      return nbytes;
    }
    case Codec::Id::Zstd: {
      const unsigned long long s = ZSTD_getFrameContentSize(src, n);
      if (s == ZSTD_CONTENTSIZE_ERROR) corrupt(file, "not a zstd frame");
      if (s == ZSTD_CONTENTSIZE_UNKNOWN) corrupt(file, "zstd frame without its content size");
      return static_cast<size_t>(s);
    }
    case Codec::Id::Lz4:
      if (n < 4) corrupt(file, "lz4 chunk of " + std::to_string(n) + " bytes is shorter than its 4-byte size");
      return get_le32(src);
    case Codec::Id::Crc32c:
      if (n < 4) corrupt(file, "crc32c chunk of " + std::to_string(n) + " bytes is shorter than its checksum");
      return n - 4;
    case Codec::Id::Zlib:
    case Codec::Id::Gzip:
      return bound;
  }
  return bound;
}

/// Decodes into dst, which must receive exactly dst_size bytes (the chunk's size, or what decoded_size said);
/// with `exact` false, zlib/gzip may produce fewer and the produced size is returned.
inline size_t decode_into(const Codec& c, const uint8_t* src, size_t n, uint8_t* dst, size_t dst_size,
                          const std::string& file, bool exact = true) {
  const auto mismatch = [&](size_t got) {
    corrupt(file, std::string(c.name()) + " chunk decodes to " + std::to_string(got) + " bytes, expected " +
                      std::to_string(dst_size));
  };
  switch (c.id) {
    case Codec::Id::Blosc: {
      const size_t s = decoded_size(c, src, n, dst_size, file);
      if (s != dst_size) mismatch(s);
      if (dst_size == 0) return 0;
      const int r = blosc_decompress_ctx(src, dst, dst_size, 1);
      if (r < 0 || static_cast<size_t>(r) != dst_size)
        corrupt(file, "blosc data is corrupt (blosc_decompress_ctx returned " + std::to_string(r) + ")");
      return dst_size;
    }
    case Codec::Id::Zstd: {
      const size_t s = decoded_size(c, src, n, dst_size, file);
      if (s != dst_size) mismatch(s);
      const size_t r = ZSTD_decompress(dst, dst_size, src, n);
      if (ZSTD_isError(r)) corrupt(file, std::string("zstd data is corrupt: ") + ZSTD_getErrorName(r));
      if (r != dst_size) mismatch(r);
      return dst_size;
    }
    case Codec::Id::Lz4: {
      const size_t s = decoded_size(c, src, n, dst_size, file);
      if (s != dst_size) mismatch(s);
      if (dst_size > static_cast<size_t>(LZ4_MAX_INPUT_SIZE) || n - 4 > static_cast<size_t>(INT32_MAX))
        corrupt(file, "lz4 chunk too large");
      const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(src + 4), reinterpret_cast<char*>(dst),
                                        static_cast<int>(n - 4), static_cast<int>(dst_size));
      if (r < 0 || static_cast<size_t>(r) != dst_size) corrupt(file, "lz4 data is corrupt");
      return dst_size;
    }
    case Codec::Id::Crc32c: {
      const size_t s = decoded_size(c, src, n, dst_size, file);
      if (s != dst_size) mismatch(s);
      if (crc32c(src, s) != get_le32(src + s)) corrupt(file, "crc32c checksum does not match the chunk's bytes");
      if (s) std::memcpy(dst, src, s);
      return s;
    }
    case Codec::Id::Zlib:
    case Codec::Id::Gzip: {
      z_stream z;
      std::memset(&z, 0, sizeof z);
      if (inflateInit2(&z, 15 + 32) != Z_OK) corrupt(file, "inflateInit2 failed");
      z.next_in = const_cast<Bytef*>(src);
      z.avail_in = static_cast<uInt>(n);
      uint8_t none = 0;
      z.next_out = dst_size ? dst : &none;  // zlib refuses a null output pointer even for zero bytes
      z.avail_out = static_cast<uInt>(dst_size);
      int r = inflate(&z, Z_FINISH);
      if (r != Z_STREAM_END && z.avail_out == 0) {
        // dst is full: the stream must end here. One more inflate into a spare byte tells an exact stream (it
        // ends without output) from an overlong one.
        uint8_t spare = 0;
        z.next_out = &spare;
        z.avail_out = 1;
        r = inflate(&z, Z_FINISH);
        if (z.avail_out == 0) {
          inflateEnd(&z);
          corrupt(file, std::string(c.name()) + " chunk decodes to more than the expected " + std::to_string(dst_size) +
                            " bytes");
        }
      }
      const size_t produced = z.total_out;
      const size_t left_in = z.avail_in;
      const std::string msg = z.msg ? std::string(": ") + z.msg : std::string();
      inflateEnd(&z);
      if (r != Z_STREAM_END) corrupt(file, std::string(c.name()) + " data is corrupt or truncated" + msg);
      if (left_in > 0) corrupt(file, std::to_string(left_in) + " bytes after the end of the " + c.name() + " stream");
      if (exact && produced != dst_size) mismatch(produced);
      return produced;
    }
  }
  return 0;
}

/// Applies a chain of codecs in order (the first is nearest the raw bytes).
inline ByteBuffer encode_chain(const std::vector<Codec>& chain, const uint8_t* src, size_t n, size_t typesize,
                               const std::string& file) {
  if (chain.empty()) return ByteBuffer(src, src + n);
  ByteBuffer cur = encode(chain[0], src, n, typesize, file);
  for (size_t i = 1; i < chain.size(); ++i) cur = encode(chain[i], cur.data(), cur.size(), typesize, file);
  return cur;
}

/// Undoes a chain into exactly dst_size bytes at dst. Intermediate results are bounded by `bound` bytes.
inline void decode_chain(const std::vector<Codec>& chain, const uint8_t* src, size_t n, uint8_t* dst, size_t dst_size,
                         size_t bound, const std::string& file) {
  if (chain.empty()) {
    if (n != dst_size)
      corrupt(file, "uncompressed chunk has " + std::to_string(n) + " bytes, expected " + std::to_string(dst_size));
    if (n) std::memcpy(dst, src, n);
    return;
  }
  ByteBuffer cur;
  const uint8_t* p = src;
  size_t len = n;
  for (size_t i = chain.size(); i-- > 1;) {
    const Codec& c = chain[i];
    if (c.id == Codec::Id::Crc32c) {  // verify and drop the checksum, no copy
      const size_t s = decoded_size(c, p, len, bound, file);
      if (crc32c(p, s) != get_le32(p + s)) corrupt(file, "crc32c checksum does not match the chunk's bytes");
      len = s;
      continue;
    }
    const size_t s = decoded_size(c, p, len, bound, file);
    if (s > bound)
      corrupt(file, std::string(c.name()) + " layer claims " + std::to_string(s) + " bytes, more than possible");
    ByteBuffer next(s);
    next.resize(decode_into(c, p, len, next.data(), s, file, c.id != Codec::Id::Zlib && c.id != Codec::Id::Gzip));
    cur.swap(next);
    p = cur.data();
    len = cur.size();
  }
  decode_into(chain[0], p, len, dst, dst_size, file);
}

}  // namespace qlty::detail
