#pragma once
// IWYU pragma: private, include <qlty/zarr.hpp>
// Zarr v2 (.zarray) and v3 (zarr.json) array metadata: parsing with a typed error for every defect, and writing
// exactly what zarr-python writes (sorted keys, 4-space indent, NaN/Infinity fill values as strings).

#include <qlty/error.hpp>
#include <qlty/support/json.hpp>
#include <qlty/zarr/codecs.hpp>
#include <qlty/zarr_types.hpp>

#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace qlty::detail {

using zarr::DataType;
using zarr::FillValue;

struct TypeInfo {
  const char* v3;  // v3 data_type name
  char kind;       // numpy kind: b, i, u, f
  int size;        // bytes
};

inline const TypeInfo& type_info(DataType t) {
  static const TypeInfo table[] = {{"bool", 'b', 1},   {"int8", 'i', 1},    {"int16", 'i', 2},   {"int32", 'i', 4},
                                   {"int64", 'i', 8},  {"uint8", 'u', 1},   {"uint16", 'u', 2},  {"uint32", 'u', 4},
                                   {"uint64", 'u', 8}, {"float16", 'f', 2}, {"float32", 'f', 4}, {"float64", 'f', 8}};
  return table[static_cast<int>(t)];
}

inline const DataType kAllTypes[] = {DataType::Bool,   DataType::Int8,    DataType::Int16,   DataType::Int32,
                                     DataType::Int64,  DataType::UInt8,   DataType::UInt16,  DataType::UInt32,
                                     DataType::UInt64, DataType::Float16, DataType::Float32, DataType::Float64};

/// v2 dtype string (always little-endian when written).
inline std::string v2_dtype(DataType t) {
  const auto& i = type_info(t);
  return std::string(i.size == 1 ? "|" : "<") + i.kind + std::to_string(i.size);
}

struct ArrayMetadata {
  int zarr_format = 2;
  std::vector<int64_t> shape, chunks;
  DataType dtype = DataType::Float32;
  bool big_endian = false;
  FillValue fill;
  bool fortran_order = false;  // v2 "order": "F"
  char separator = '.';
  bool v3_default_keys = true;               // v3 chunk_key_encoding "default" (keys start with "c")
  std::vector<Codec> codecs;                 // bytes-to-bytes chain, nearest the raw bytes first
  std::vector<std::string> dimension_names;  // v3; empty = absent
  json attributes = json::object();          // v3 only (v2 keeps them in .zattrs)
  // v3 `sharding_indexed`: `chunks` is then the shard (the grid's chunk: one file, the unit of locks), and
  // `inner_chunks` the chunk inside it that `big_endian` and `codecs` encode; the index of (offset, nbytes) pairs
  // sits at the shard's start or end, uint64 in `index_big_endian`, followed by its CRC32C when `index_crc32c`.
  std::vector<int64_t> inner_chunks;  // empty = not sharded
  bool index_at_start = false;
  bool index_big_endian = false;
  bool index_crc32c = true;

  bool sharded() const { return !inner_chunks.empty(); }
  /// The chunk that one run of the codec chain encodes: the inner chunk when sharded.
  const std::vector<int64_t>& coded_chunks() const { return sharded() ? inner_chunks : chunks; }
  int64_t coded_numel() const {
    int64_t n = 1;
    for (auto c : coded_chunks()) n *= c;
    return n;
  }
  int64_t coded_nbytes() const { return coded_numel() * itemsize(); }
  /// Inner chunks along each axis of a shard (1s when not sharded).
  std::vector<int64_t> inner_grid() const {
    std::vector<int64_t> g(chunks.size(), 1);
    for (size_t a = 0; sharded() && a < g.size(); ++a) g[a] = chunks[a] / inner_chunks[a];
    return g;
  }
  int64_t inner_per_shard() const {
    int64_t n = 1;
    for (auto g : inner_grid()) n *= g;
    return n;
  }
  /// Bytes of a shard's index: 16 per inner chunk, and the CRC32C.
  int64_t index_nbytes() const { return 16 * inner_per_shard() + (index_crc32c ? 4 : 0); }

  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t itemsize() const { return type_info(dtype).size; }
  int64_t chunk_numel() const {
    int64_t n = 1;
    for (auto c : chunks) n *= c;
    return n;
  }
  int64_t chunk_nbytes() const { return chunk_numel() * itemsize(); }
  /// Chunks along each axis.
  std::vector<int64_t> grid() const {
    std::vector<int64_t> g(shape.size());
    for (size_t a = 0; a < shape.size(); ++a) g[a] = shape[a] / chunks[a] + (shape[a] % chunks[a] != 0);  // no overflow
    return g;
  }

  std::string chunk_key(const int64_t* idx) const {
    const bool prefix = zarr_format == 3 && v3_default_keys;
    if (ndim() == 0) return prefix ? "c" : "0";  // a 0-d array's only chunk
    std::string k;
    if (prefix) k.push_back('c');
    for (int a = 0; a < ndim(); ++a) {
      if (a > 0 || prefix) k += separator;
      // snprintf, not std::to_string: GCC 12 warns of a false string overflow in the inlined append (PR 105651)
      char digits[24];
      const int n = std::snprintf(digits, sizeof digits, "%lld", static_cast<long long>(idx[a]));
      k.append(digits, static_cast<size_t>(n));
    }
    return k;
  }
  /// The chunk index of a key (a path relative to the array, as chunk_key makes it), or nullopt when `rel` is
  /// not a key of this array's grid.
  std::optional<std::vector<int64_t>> parse_chunk_key(const std::string& rel) const {
    std::string k = rel;
    if (zarr_format == 3 && v3_default_keys) {
      if (k == "c" && ndim() == 0) return std::vector<int64_t>{};
      if (k.size() < 2 || k[0] != 'c' || k[1] != separator) return std::nullopt;
      k = k.substr(2);
    }
    if (ndim() == 0) return k == "0" ? std::optional<std::vector<int64_t>>(std::vector<int64_t>{}) : std::nullopt;
    const auto g = grid();
    std::vector<int64_t> idx;
    size_t at = 0;
    while (true) {
      const size_t end = std::min(k.find(separator, at), k.size());
      const std::string part = k.substr(at, end - at);
      if (part.empty() || part.size() > 18 || part.find_first_not_of("0123456789") != std::string::npos ||
          static_cast<int>(idx.size()) == ndim())
        return std::nullopt;
      idx.push_back(std::stoll(part));
      if (idx.back() >= g[idx.size() - 1]) return std::nullopt;
      if (end == k.size()) break;
      at = end + 1;
    }
    if (static_cast<int>(idx.size()) != ndim()) return std::nullopt;
    return idx;
  }
  const char* metadata_name() const { return zarr_format == 2 ? ".zarray" : "zarr.json"; }
};

// ---- parsing helpers: every error names the file and what is wrong.

[[noreturn]] inline void unsupported(const std::string& file, const std::string& what) {
  throw Error("zarr.unsupported", file + ": " + what);
}

/// a * b, or an Error naming `what` in `file` when the product does not fit in int64.
inline int64_t checked_mul(int64_t a, int64_t b, const std::string& what, const std::string& file) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) unsupported(file, what + " does not fit in 64 bits");
  return r;
}

/// Shape and chunks: same rank, shape >= 0, chunks >= 1, sizes that do not overflow.
inline void check_grid(const ArrayMetadata& m, const std::string& file) {
  if (m.shape.size() != m.chunks.size())
    bad_meta(file, "shape has " + std::to_string(m.shape.size()) + " dimensions but chunks has " +
                       std::to_string(m.chunks.size()));
  if (m.shape.size() > 32) unsupported(file, "more than 32 dimensions");
  constexpr int64_t kMaxChunkBytes = int64_t(1) << 31;  // blosc's limit and a sane bound for every codec
  int64_t nbytes = m.itemsize();
  for (size_t a = 0; a < m.shape.size(); ++a) {
    if (m.shape[a] < 0) bad_meta(file, "shape[" + std::to_string(a) + "] is negative: " + std::to_string(m.shape[a]));
    if (m.chunks[a] < 1)
      bad_meta(file, "chunks[" + std::to_string(a) + "] must be >= 1, got " + std::to_string(m.chunks[a]));
    if (m.chunks[a] > kMaxChunkBytes || (nbytes *= m.chunks[a]) > kMaxChunkBytes)
      unsupported(file, "a chunk of more than 2 GiB");
  }
  // Chunk counts, element counts and byte counts must fit in int64 (linear chunk indices are used for locks);
  // more than 2^48 chunks is no real array.
  int64_t chunks = 1, elements = 1;
  for (auto g : m.grid()) chunks = checked_mul(chunks, std::max<int64_t>(g, 1), "the number of chunks", file);
  if (chunks > (int64_t(1) << 48)) unsupported(file, "too many chunks (" + std::to_string(chunks) + ")");
  for (auto s : m.shape) elements = checked_mul(elements, s, "the number of elements", file);
  checked_mul(elements, m.itemsize(), "the size in bytes", file);
}

inline DataType parse_v2_dtype(const json& v, bool& big_endian, const std::string& file) {
  if (!v.is_string()) unsupported(file, "dtype " + brief(v) + " (structured dtypes are not supported)");
  const std::string s = v.get<std::string>();
  if (s.size() >= 3 && (s[0] == '<' || s[0] == '>' || s[0] == '|')) {
    const char kind = s[1];
    const std::string digits = s.substr(2);
    for (DataType t : kAllTypes) {
      const auto& i = type_info(t);
      if (i.kind == kind && std::to_string(i.size) == digits) {
        if (i.size > 1 && s[0] == '|') break;  // multi-byte types need a byte order
        big_endian = i.size > 1 && s[0] == '>';
        return t;
      }
    }
  }
  unsupported(file, "dtype \"" + s + "\" (supported: |b1 |i1 |u1 and <i2 <u2 <i4 <u4 <i8 <u8 <f2 <f4 <f8, or >)");
}

inline FillValue parse_fill(const json& v, DataType t, const std::string& file, bool v3) {
  const auto& info = type_info(t);
  const std::string what = "fill_value " + brief(v) + " for data type " + info.v3;
  if (v.is_null()) {
    if (v3) bad_meta(file, "fill_value must not be null in Zarr v3");
    return FillValue::null();
  }
  if (info.kind == 'b') {
    if (v.is_boolean()) return FillValue(v.get<bool>());
    if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1))
      return FillValue(v.get<int64_t>() == 1);
    bad_meta(file, what + ": expected true or false");
  }
  if (info.kind == 'f') {
    if (v.is_number()) return FillValue(v.get<double>());
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s == "NaN") return FillValue(std::numeric_limits<double>::quiet_NaN());
      if (s == "Infinity") return FillValue(std::numeric_limits<double>::infinity());
      if (s == "-Infinity") return FillValue(-std::numeric_limits<double>::infinity());
      if (v3 && s.size() == 2 + 2 * static_cast<size_t>(info.size) && s.rfind("0x", 0) == 0) {  // bit pattern
        uint64_t bits = 0;
        for (size_t k = 2; k < s.size(); ++k) {
          const char c = s[k];
          const int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
          if (d < 0) bad_meta(file, what + ": not a hexadecimal bit pattern");
          bits = bits << 4 | static_cast<uint64_t>(d);
        }
        if (info.size == 8) {
          double d;
          std::memcpy(&d, &bits, 8);
          return FillValue(d);
        }
        if (info.size == 4) {
          const auto b32 = static_cast<uint32_t>(bits);
          float f;
          std::memcpy(&f, &b32, 4);
          return FillValue(static_cast<double>(f));
        }
        return FillValue(static_cast<double>(c10::detail::fp16_ieee_to_fp32_value(static_cast<uint16_t>(bits))));
      }
    }
    bad_meta(file, what + ": expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
  }
  // Integers; a float with an integral value is accepted (some writers store 0 as 0.0).
  int64_t si = 0;
  uint64_t ui = 0;
  bool negative = false;
  if (v.is_number_unsigned()) {
    ui = v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    si = v.get<int64_t>();
    negative = si < 0;
    ui = static_cast<uint64_t>(si);
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
             std::fabs(v.get<double>()) < 9.2e18) {
    si = static_cast<int64_t>(v.get<double>());
    negative = si < 0;
    ui = static_cast<uint64_t>(si);
  } else {
    bad_meta(file, what + ": expected an integer");
  }
  const int bits = info.size * 8;
  if (info.kind == 'u') {
    if (negative || (bits < 64 && ui >> bits)) bad_meta(file, what + ": out of range");
    return FillValue(ui);
  }
  if (!negative) {
    if (ui > (uint64_t(1) << (bits - 1)) - 1) bad_meta(file, what + ": out of range");
    return FillValue(static_cast<int64_t>(ui));
  }
  if (bits < 64 && si < -(int64_t(1) << (bits - 1))) bad_meta(file, what + ": out of range");
  return FillValue(si);
}

inline json fill_json(const FillValue& f, DataType t) {
  const auto& info = type_info(t);
  switch (f.kind) {
    case FillValue::Kind::Null:
      return nullptr;
    case FillValue::Kind::Bool:
      return f.b;
    default:
      break;
  }
  if (info.kind == 'f') {
    const double d = f.kind == FillValue::Kind::Float ? f.f
                     : f.kind == FillValue::Kind::Int ? double(f.i)
                                                      : double(f.u);
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    return d;
  }
  if (f.kind == FillValue::Kind::UInt) return f.u;
  if (f.kind == FillValue::Kind::Int) return f.i;
  return static_cast<int64_t>(f.f);
}

/// Brings a fill value to the array's type (0 for a float array becomes 0.0); errors for values it cannot hold.
inline FillValue normalize_fill(const FillValue& f, DataType t, const std::string& where) {
  if (f.kind == FillValue::Kind::Null) return f;
  const json j = [&]() -> json {
    switch (f.kind) {
      case FillValue::Kind::Bool:
        return type_info(t).kind == 'b' ? json(f.b) : json(f.b ? 1 : 0);
      case FillValue::Kind::Int:
        return f.i;
      case FillValue::Kind::UInt:
        return f.u;
      case FillValue::Kind::Float: {
        if (std::isnan(f.f)) return "NaN";
        if (std::isinf(f.f)) return f.f > 0 ? "Infinity" : "-Infinity";
        return f.f;
      }
      default:
        return nullptr;
    }
  }();
  try {
    return parse_fill(j, t, where, false);
  } catch (const Error& e) {
    TORCH_CHECK_VALUE(false, where, ": fill_value ", brief(j), " cannot be stored as ", type_info(t).v3);
  }
}

// ---- codecs in metadata

inline Codec parse_v2_compressor(const json& c, const std::string& file) {
  if (!c.is_object()) bad_meta(file, "compressor must be null or an object, got " + brief(c));
  const std::string id = as_string(key(c, "id", file), "compressor id", file);
  auto opt_int = [&](const char* k, int def) {
    const auto it = c.find(k);
    if (it == c.end()) return def;
    const int64_t v = as_int(*it, std::string("compressor ") + k, file);
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
      bad_meta(file, std::string("compressor ") + k + " out of range");
    return static_cast<int>(v);
  };
  Codec out;
  if (id == "blosc") {
    const auto it = c.find("cname");
    out = Codec::blosc(it == c.end() ? "lz4" : as_string(*it, "blosc cname", file), opt_int("clevel", 5),
                       opt_int("shuffle", 1), opt_int("blocksize", 0));
  } else if (id == "zlib") {
    out = Codec::zlib(opt_int("level", 1));
  } else if (id == "gzip") {
    out = Codec::gzip(opt_int("level", 1));
  } else if (id == "zstd") {
    out = Codec::zstd(opt_int("level", 1));
  } else if (id == "lz4") {
    out = Codec::lz4(opt_int("acceleration", 1));
  } else {
    unsupported(file, "compressor \"" + id + "\" (supported: blosc, zlib, gzip, zstd, lz4)");
  }
  try {
    validate_codec(out, file);
  } catch (const Error& e) {
    if (out.id == Codec::Id::Blosc && blosc_compname_to_compcode(out.cname.c_str()) < 0) throw;
    // a setting out of range: the file is invalid (validate_codec's message already names the file)
    const std::string what = e.what(), prefix = "[qlty." + e.tag() + "] " + file + ": ";
    bad_meta(file, what.compare(0, prefix.size(), prefix) == 0 ? what.substr(prefix.size()) : what);
  }
  return out;
}

inline json v2_compressor_json(const Codec& c) {
  switch (c.id) {
    case Codec::Id::Blosc:
      return {{"id", "blosc"},
              {"cname", c.cname},
              {"clevel", c.clevel},
              {"shuffle", c.shuffle},
              {"blocksize", c.blocksize}};
    case Codec::Id::Zlib:
      return {{"id", "zlib"}, {"level", c.level}};
    case Codec::Id::Gzip:
      return {{"id", "gzip"}, {"level", c.level}};
    case Codec::Id::Zstd:
      return {{"id", "zstd"}, {"level", c.level}};
    case Codec::Id::Lz4:
      return {{"id", "lz4"}, {"acceleration", c.acceleration}};
    case Codec::Id::Crc32c:
      break;
  }
  return nullptr;
}

inline const char* v3_shuffle_name(int s) { return s == 0 ? "noshuffle" : s == 2 ? "bitshuffle" : "shuffle"; }

inline json v3_codec_json(const Codec& c, DataType t) {
  switch (c.id) {
    case Codec::Id::Blosc: {
      int shuffle = c.shuffle == -1 ? (type_info(t).size == 1 ? 2 : 1) : c.shuffle;
      return {{"name", "blosc"},
              {"configuration",
               {{"cname", c.cname},
                {"clevel", c.clevel},
                {"shuffle", v3_shuffle_name(shuffle)},
                {"typesize", type_info(t).size},
                {"blocksize", c.blocksize}}}};
    }
    case Codec::Id::Gzip:
      return {{"name", "gzip"}, {"configuration", {{"level", c.level}}}};
    case Codec::Id::Zstd:
      return {{"name", "zstd"}, {"configuration", {{"level", c.level}, {"checksum", c.checksum}}}};
    case Codec::Id::Crc32c:
      return {{"name", "crc32c"}};
    case Codec::Id::Zlib:
    case Codec::Id::Lz4:
      break;
  }
  return nullptr;
}

inline char parse_separator(const json& v, const std::string& what, const std::string& file) {
  const std::string sep = as_string(v, what, file);
  if (sep != "." && sep != "/") bad_meta(file, what + " must be \".\" or \"/\", got \"" + sep + "\"");
  return sep[0];
}

// ---- whole documents

inline ArrayMetadata parse_v2(const std::string& text, const std::string& file) {
  const json j = parse_json(text, file);
  ArrayMetadata m;
  m.zarr_format = 2;
  const int64_t fmt = as_int(key(j, "zarr_format", file), "zarr_format", file);
  if (fmt != 2) unsupported(file, "zarr_format " + std::to_string(fmt) + " in a .zarray (expected 2)");
  m.shape = int_list(key(j, "shape", file), "shape", file);
  m.chunks = int_list(key(j, "chunks", file), "chunks", file);
  m.dtype = parse_v2_dtype(key(j, "dtype", file), m.big_endian, file);
  check_grid(m, file);
  const json& comp = key(j, "compressor", file);
  if (!comp.is_null()) m.codecs.push_back(parse_v2_compressor(comp, file));
  m.fill = parse_fill(key(j, "fill_value", file), m.dtype, file, false);
  const std::string order = as_string(key(j, "order", file), "order", file);
  if (order != "C" && order != "F") bad_meta(file, "order must be \"C\" or \"F\", got \"" + order + "\"");
  m.fortran_order = order == "F";
  const json& filters = key(j, "filters", file);
  if (!filters.is_null() && !(filters.is_array() && filters.empty()))
    unsupported(file, "filters " + brief(filters) + " (only null is supported)");
  if (const auto it = j.find("dimension_separator"); it != j.end() && !it->is_null()) {
    m.separator = parse_separator(*it, "dimension_separator", file);
  }
  return m;
}

/// "1, 2, 3"
inline std::string join_ints(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t a = 0; a < v.size(); ++a) s += (a ? ", " : "") + std::to_string(v[a]);
  return s;
}

/// A codec's name, configuration (an object) and whether it may be skipped.
struct CodecEntry {
  std::string name;
  json conf = json::object();
  bool optional = false;
};
inline CodecEntry codec_entry(const json& c, const std::string& file) {
  CodecEntry e;
  if (c.is_string()) {
    e.name = c.get<std::string>();
    return e;
  }
  e.name = as_string(key(c, "name", file), "codec name", file);
  if (const auto it = c.find("configuration"); it != c.end()) e.conf = *it;
  if (!e.conf.is_object()) bad_meta(file, "configuration of codec \"" + e.name + "\" must be an object");
  e.optional = c.contains("must_understand") && c["must_understand"] == false;
  return e;
}

/// The endianness a `bytes` codec names (required for multi-byte types).
inline bool parse_bytes_endian(const CodecEntry& e, int64_t itemsize, const std::string& file) {
  const auto it = e.conf.find("endian");
  if (it == e.conf.end()) {
    if (itemsize > 1)
      bad_meta(file, "codec \"bytes\" needs an endian for " + std::to_string(itemsize) + "-byte values");
    return false;
  }
  const std::string v = as_string(*it, "endian", file);
  if (v != "little" && v != "big") bad_meta(file, "endian must be \"little\" or \"big\", got \"" + v + "\"");
  return v == "big" && itemsize > 1;
}

inline void parse_v3_codecs(const json& codecs, ArrayMetadata& m, const std::string& file, bool in_shard);

/// The configuration of `sharding_indexed` (the array's only array-to-bytes codec): inner chunk shape, inner codecs,
/// index codecs and location.
inline void parse_sharding(const CodecEntry& e, ArrayMetadata& m, const std::string& file) {
  const json& conf = e.conf;
  m.inner_chunks = int_list(key(conf, "chunk_shape", file), "sharding_indexed chunk_shape", file);
  if (m.inner_chunks.size() != m.chunks.size())
    bad_meta(file, "sharding_indexed chunk_shape has " + std::to_string(m.inner_chunks.size()) +
                       " dimensions, the array " + std::to_string(m.chunks.size()));
  for (size_t a = 0; a < m.chunks.size(); ++a)
    if (m.inner_chunks[a] < 1 || m.chunks[a] % m.inner_chunks[a] != 0)
      bad_meta(file, "sharding_indexed chunk_shape [" + join_ints(m.inner_chunks) +
                         "] must divide the shard shape (the chunk grid's chunk_shape) [" + join_ints(m.chunks) + "]");
  if (m.inner_per_shard() > (int64_t(1) << 20))  // an index of 16 MiB; zarr-python's shards hold tens to thousands
    unsupported(file, "more than 2^20 inner chunks in a shard (" + std::to_string(m.inner_per_shard()) + ")");
  parse_v3_codecs(key(conf, "codecs", file), m, file, true);

  const json& index = key(conf, "index_codecs", file);
  if (!index.is_array() || index.empty()) bad_meta(file, "sharding_indexed index_codecs must be a non-empty list");
  const CodecEntry first = codec_entry(index[0], file);
  if (first.name != "bytes")
    unsupported(file, "sharding_indexed index_codecs starting with \"" + first.name +
                          "\" (supported: bytes, then "
                          "optionally crc32c)");
  m.index_big_endian = parse_bytes_endian(first, 8, file);
  m.index_crc32c = false;
  for (size_t k = 1; k < index.size(); ++k) {
    const CodecEntry c = codec_entry(index[k], file);
    if (c.name != "crc32c" || m.index_crc32c)
      unsupported(file, "sharding_indexed index codec \"" + c.name + "\" (supported: bytes, then optionally crc32c)");
    m.index_crc32c = true;
  }
  m.index_at_start = false;
  if (const auto it = conf.find("index_location"); it != conf.end()) {
    const std::string where = as_string(*it, "index_location", file);
    if (where != "start" && where != "end")
      bad_meta(file, "sharding_indexed index_location must be \"start\" or \"end\", got \"" + where + "\"");
    m.index_at_start = where == "start";
  }
}

/// A v3 codec chain: `bytes` (or, outside a shard, `sharding_indexed`), then bytes-to-bytes codecs, into
/// m.big_endian and m.codecs.
inline void parse_v3_codecs(const json& codecs, ArrayMetadata& m, const std::string& file, bool in_shard) {
  if (!codecs.is_array())
    bad_meta(file, std::string(in_shard ? "sharding_indexed codecs" : "codecs") + " must be a list");
  bool have_bytes = false;
  for (const auto& c : codecs) {
    const CodecEntry e = codec_entry(c, file);
    const std::string& name = e.name;
    const json& conf = e.conf;
    const bool optional = e.optional;
    auto conf_int = [&](const char* k, int def) {
      const auto it = conf.find(k);
      if (it == conf.end()) return def;
      const int64_t v = as_int(*it, name + " " + k, file);
      if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
        bad_meta(file, "codec \"" + name + "\" " + k + " out of range: " + std::to_string(v));
      return static_cast<int>(v);
    };
    if (name == "sharding_indexed") {
      if (in_shard)
        unsupported(file, "nested sharding (sharding_indexed inside sharding_indexed); qlty reads one level of shards");
      if (have_bytes) bad_meta(file, "sharding_indexed after another array-to-bytes codec");
      parse_sharding(e, m, file);
      have_bytes = true;
      continue;
    }
    if (name == "bytes") {
      if (have_bytes) bad_meta(file, "more than one array-to-bytes codec (\"bytes\" twice, or after sharding)");
      have_bytes = true;
      m.big_endian = parse_bytes_endian(e, m.itemsize(), file);
      continue;
    }
    // A codec changes the bytes: one that is skipped leaves them in a layout or encoding the array does not
    // describe. So unknown codecs are refused even with must_understand: false.
    if (!have_bytes)
      unsupported(file, "codec \"" + name + "\" before \"bytes\" (array-to-array codecs are not supported" +
                            std::string(optional ? "; it cannot be skipped, although must_understand is false" : "") +
                            ")");
    if (m.sharded() && !in_shard)
      unsupported(file, "codec \"" + name +
                            "\" after sharding_indexed (a shard must be readable in parts; put it in "
                            "the sharding codec's own codecs)");
    Codec k;
    if (name == "gzip") {
      k = Codec::gzip(conf_int("level", 1));
    } else if (name == "zstd") {
      k = Codec::zstd(conf_int("level", 0));
      if (const auto it = conf.find("checksum"); it != conf.end()) {
        if (!it->is_boolean()) bad_meta(file, "zstd checksum must be true or false");
        k.checksum = it->get<bool>();
      }
    } else if (name == "blosc") {
      int shuffle = 1;
      if (const auto it = conf.find("shuffle"); it != conf.end()) {
        const std::string s = as_string(*it, "blosc shuffle", file);
        if (s == "noshuffle")
          shuffle = 0;
        else if (s == "shuffle")
          shuffle = 1;
        else if (s == "bitshuffle")
          shuffle = 2;
        else
          bad_meta(file, "blosc shuffle must be noshuffle, shuffle or bitshuffle, got \"" + s + "\"");
      }
      const auto cn = conf.find("cname");
      k = Codec::blosc(cn == conf.end() ? "lz4" : as_string(*cn, "blosc cname", file), conf_int("clevel", 5), shuffle,
                       conf_int("blocksize", 0));
    } else if (name == "crc32c") {
      k = Codec::crc32c();
    } else {
      unsupported(file, "codec \"" + name + "\" (supported: bytes, gzip, zstd, blosc, crc32c)" +
                            (optional ? "; it cannot be skipped, although must_understand is false" : ""));
    }
    try {
      validate_codec(k, file);
    } catch (const Error&) {
      if (k.id == Codec::Id::Blosc && blosc_compname_to_compcode(k.cname.c_str()) < 0) throw;
      bad_meta(file, "invalid configuration of codec \"" + name + "\": " + brief(conf));
    }
    m.codecs.push_back(k);
  }
  if (!have_bytes)
    unsupported(file, "no \"bytes\" or \"sharding_indexed\" codec (other array-to-bytes codecs are not supported)");
}

inline ArrayMetadata parse_v3(const std::string& text, const std::string& file) {
  const json j = parse_json(text, file);
  ArrayMetadata m;
  m.zarr_format = 3;
  const int64_t fmt = as_int(key(j, "zarr_format", file), "zarr_format", file);
  if (fmt != 3) unsupported(file, "zarr_format " + std::to_string(fmt) + " in a zarr.json (expected 3)");
  const std::string node = as_string(key(j, "node_type", file), "node_type", file);
  if (node != "array") bad_meta(file, "node_type is \"" + node + "\", not \"array\"");
  static const char* known[] = {"zarr_format",         "node_type",  "shape",  "data_type",  "chunk_grid",
                                "chunk_key_encoding",  "fill_value", "codecs", "attributes", "dimension_names",
                                "storage_transformers"};
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* kk : known) ok = ok || k == kk;
    if (!ok && !(v.is_object() && v.contains("must_understand") && v["must_understand"] == false))
      unsupported(file, "unknown extension \"" + k + "\" that must be understood");
  }
  m.shape = int_list(key(j, "shape", file), "shape", file);
  const std::string dt = as_string(key(j, "data_type", file), "data_type", file);
  bool found = false;
  for (DataType t : kAllTypes)
    if (dt == type_info(t).v3) {
      m.dtype = t;
      found = true;
    }
  if (!found) unsupported(file, "data_type \"" + dt + "\"");
  const json& grid = key(j, "chunk_grid", file);
  const std::string grid_name = as_string(key(grid, "name", file), "chunk_grid name", file);
  if (grid_name != "regular") unsupported(file, "chunk_grid \"" + grid_name + "\" (only \"regular\")");
  m.chunks = int_list(key(key(grid, "configuration", file), "chunk_shape", file), "chunk_shape", file);
  check_grid(m, file);
  const json& cke = key(j, "chunk_key_encoding", file);
  const std::string enc = as_string(key(cke, "name", file), "chunk_key_encoding name", file);
  if (enc != "default" && enc != "v2") unsupported(file, "chunk_key_encoding \"" + enc + "\"");
  m.v3_default_keys = enc == "default";
  m.separator = m.v3_default_keys ? '/' : '.';
  if (const auto it = cke.find("configuration"); it != cke.end()) {
    if (const auto s = it->find("separator"); it->is_object() && s != it->end()) {
      m.separator = parse_separator(*s, "separator", file);
    }
  }
  m.fill = parse_fill(key(j, "fill_value", file), m.dtype, file, true);

  parse_v3_codecs(key(j, "codecs", file), m, file, false);
  if (const auto it = j.find("storage_transformers"); it != j.end()) {
    if (!it->is_array()) bad_meta(file, "storage_transformers must be a list");
    for (const auto& t : *it)
      if (!(t.is_object() && t.contains("must_understand") && t["must_understand"] == false))
        unsupported(file, "storage transformer " + brief(t));
  }
  if (const auto it = j.find("attributes"); it != j.end()) {
    if (!it->is_object()) bad_meta(file, "attributes must be an object");
    m.attributes = *it;
  }
  if (const auto it = j.find("dimension_names"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->size() != m.shape.size())
      bad_meta(file, "dimension_names must be a list of " + std::to_string(m.shape.size()) + " names");
    for (const auto& n : *it) m.dimension_names.push_back(n.is_string() ? n.get<std::string>() : std::string());
  }
  return m;
}

/// The metadata document as zarr-python writes it.
inline std::string dump_metadata(const ArrayMetadata& m) {
  json j;
  if (m.zarr_format == 2) {
    j = {{"zarr_format", 2},
         {"shape", m.shape},
         {"chunks", m.chunks},
         {"dtype", v2_dtype(m.dtype)},
         {"compressor", m.codecs.empty() ? json(nullptr) : v2_compressor_json(m.codecs[0])},
         {"fill_value", fill_json(m.fill, m.dtype)},
         {"order", m.fortran_order ? "F" : "C"},
         {"filters", nullptr},
         {"dimension_separator", std::string(1, m.separator)}};
  } else {
    json codecs = json::array({{{"name", "bytes"}, {"configuration", {{"endian", m.big_endian ? "big" : "little"}}}}});
    for (const auto& c : m.codecs) codecs.push_back(v3_codec_json(c, m.dtype));
    if (m.sharded()) {
      json index =
          json::array({{{"name", "bytes"}, {"configuration", {{"endian", m.index_big_endian ? "big" : "little"}}}}});
      if (m.index_crc32c) index.push_back(v3_codec_json(Codec::crc32c(), m.dtype));
      codecs = json::array({{{"name", "sharding_indexed"},
                             {"configuration",
                              {{"chunk_shape", m.inner_chunks},
                               {"codecs", codecs},
                               {"index_codecs", index},
                               {"index_location", m.index_at_start ? "start" : "end"}}}}});
    }
    j = {{"zarr_format", 3},
         {"node_type", "array"},
         {"shape", m.shape},
         {"data_type", type_info(m.dtype).v3},
         {"chunk_grid", {{"name", "regular"}, {"configuration", {{"chunk_shape", m.chunks}}}}},
         {"chunk_key_encoding",
          {{"name", m.v3_default_keys ? "default" : "v2"},
           {"configuration", {{"separator", std::string(1, m.separator)}}}}},
         {"fill_value", m.fill.kind == FillValue::Kind::Null ? json(0) : fill_json(m.fill, m.dtype)},
         {"codecs", codecs},
         {"attributes", m.attributes}};
    if (!m.dimension_names.empty()) j["dimension_names"] = m.dimension_names;
  }
  return j.dump(4, ' ', true);
}

}  // namespace qlty::detail
