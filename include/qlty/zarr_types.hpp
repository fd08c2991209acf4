#pragma once
/// @file zarr_types.hpp
/// @brief The value types of qlty's Zarr layer that options and other subsystems name: element types, fill values
/// and codecs. No codec library is included here: `qlty/zarr.hpp` brings the arrays and the codecs themselves.

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

namespace qlty::zarr {

/// @brief Element types a Zarr array may hold.
enum class DataType { Bool, Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64, Float16, Float32, Float64 };

/// @brief A fill value: null, a boolean, a signed or unsigned integer, or a floating-point number (NaN and
/// infinities included). `FillValue(0)`, `FillValue(0.5)`, `FillValue(true)`, `FillValue::null()`.
struct FillValue {
  enum class Kind { Null, Bool, Int, UInt, Float };
  Kind kind = Kind::Null;
  bool b = false;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0.0;

  FillValue() = default;
  FillValue(double v) : kind(Kind::Float), f(v) {}  // NOLINT(google-explicit-constructor)
  FillValue(float v) : kind(Kind::Float), f(v) {}   // NOLINT(google-explicit-constructor)
  FillValue(bool v) : kind(Kind::Bool), b(v) {}     // NOLINT(google-explicit-constructor)
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  FillValue(T v) {  // NOLINT(google-explicit-constructor)
    if constexpr (std::is_signed_v<T>) {
      kind = Kind::Int;
      i = v;
    } else {
      kind = Kind::UInt;
      u = v;
    }
  }
  /// @brief No fill value: missing chunks read as zeros.
  static FillValue null() { return FillValue(); }

  bool operator==(const FillValue& o) const {
    if (kind != o.kind) return false;
    switch (kind) {
      case Kind::Null:
        return true;
      case Kind::Bool:
        return b == o.b;
      case Kind::Int:
        return i == o.i;
      case Kind::UInt:
        return u == o.u;
      case Kind::Float:
        return (std::isnan(f) && std::isnan(o.f)) || f == o.f;
    }
    return false;
  }
};

/// @brief One compression or checksum step of a chunk's encoding, with numcodecs' parameters and defaults.
struct Codec {
  enum class Id { Blosc, Zlib, Gzip, Zstd, Lz4, Crc32c };
  Id id = Id::Blosc;
  std::string cname = "lz4";  ///< blosc: lz4, lz4hc, blosclz, zlib, zstd (what the system's blosc was built with)
  int clevel = 5;             ///< blosc level 0-9
  int shuffle = 1;            ///< blosc: 0 none, 1 byte, 2 bit, -1 auto (bit for 1-byte types, else byte)
  int blocksize = 0;          ///< blosc: 0 = automatic
  int level = 1;              ///< zlib, gzip (0-9), zstd (-131072..22)
  int acceleration = 1;       ///< lz4
  bool checksum = false;      ///< zstd frame checksum (v3 only)

  /// @brief blosc, numcodecs' and zarr-python's default compressor: lz4, level 5, byte shuffle.
  static Codec blosc(std::string cname = "lz4", int clevel = 5, int shuffle = 1, int blocksize = 0) {
    Codec c;
    c.id = Id::Blosc;
    c.cname = std::move(cname);
    c.clevel = clevel;
    c.shuffle = shuffle;
    c.blocksize = blocksize;
    return c;
  }
  /// @brief zlib stream (numcodecs `zlib`).
  static Codec zlib(int level = 1) { return with_level(Id::Zlib, level); }
  /// @brief gzip stream (numcodecs `gzip`, v3 `gzip`).
  static Codec gzip(int level = 1) { return with_level(Id::Gzip, level); }
  /// @brief One zstd frame carrying its content size.
  static Codec zstd(int level = 1, bool checksum = false) {
    Codec c = with_level(Id::Zstd, level);
    c.checksum = checksum;
    return c;
  }
  /// @brief numcodecs `lz4`: 4-byte little-endian size, then one LZ4 block.
  static Codec lz4(int acceleration = 1) {
    Codec c;
    c.id = Id::Lz4;
    c.acceleration = acceleration;
    return c;
  }
  /// @brief v3 `crc32c`: appends the CRC32C of the bytes, 4 bytes little-endian.
  static Codec crc32c() {
    Codec c;
    c.id = Id::Crc32c;
    return c;
  }

  const char* name() const {
    switch (id) {
      case Id::Blosc:
        return "blosc";
      case Id::Zlib:
        return "zlib";
      case Id::Gzip:
        return "gzip";
      case Id::Zstd:
        return "zstd";
      case Id::Lz4:
        return "lz4";
      case Id::Crc32c:
        return "crc32c";
    }
    return "?";
  }

  bool operator==(const Codec& o) const {
    if (id != o.id) return false;
    switch (id) {
      case Id::Blosc:
        return cname == o.cname && clevel == o.clevel && shuffle == o.shuffle && blocksize == o.blocksize;
      case Id::Zlib:
      case Id::Gzip:
        return level == o.level;
      case Id::Zstd:
        return level == o.level && checksum == o.checksum;
      case Id::Lz4:
        return acceleration == o.acceleration;
      case Id::Crc32c:
        return true;
    }
    return false;
  }
  bool operator!=(const Codec& o) const { return !(*this == o); }

 private:
  static Codec with_level(Id id, int level) {
    Codec c;
    c.id = id;
    c.level = level;
    return c;
  }
};

}  // namespace qlty::zarr
