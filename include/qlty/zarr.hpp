#pragma once
/// @file zarr.hpp
/// @brief Zarr v2 and v3 arrays and groups on a local file system, read and written as torch tensors.
///
/// Any box of an array can be read or written; chunks are processed in parallel (`at::parallel_for`). Every
/// chunk and metadata file is written to a temporary file and renamed into place, so readers never see a torn
/// chunk and a crash leaves the old or the new version. Writers of disjoint chunks need no coordination;
/// `update` and `add` read, modify and write a region under per-chunk locks that also exclude other processes.
/// Layout and bytes follow zarr-python 2.13 / numcodecs (v2) and the Zarr v3 core specification (v3).

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/output_buffers.hpp>
#include <qlty/support/torch_compat.hpp>
#include <qlty/zarr/codecs.hpp>
#include <qlty/zarr/metadata.hpp>
#include <qlty/zarr/shard.hpp>
#include <qlty/zarr_types.hpp>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qlty::zarr {

using nlohmann::json;

/// @brief The bytes per element of a data type.
inline int itemsize(DataType t) { return detail::type_info(t).size; }

/// @brief The name of a data type as Zarr v3 spells it (`float32`, `uint16`, ...).
inline const char* name(DataType t) { return detail::type_info(t).v3; }

/// @brief The torch dtype a read returns by default: the same type. Before LibTorch 2.3, which has no
/// uint16/32/64, those read as the next wider signed type (uint64 values above 2^63-1 cannot be read there).
inline torch::ScalarType scalar_type(DataType t) {
  switch (t) {
    case DataType::Bool:
      return torch::kBool;
    case DataType::Int8:
      return torch::kChar;
    case DataType::Int16:
      return torch::kShort;
    case DataType::Int32:
      return torch::kInt;
    case DataType::Int64:
      return torch::kLong;
    case DataType::UInt8:
      return torch::kByte;
#if QLTY_HAS_UNSIGNED_DTYPES
    case DataType::UInt16:
      return torch::kUInt16;
    case DataType::UInt32:
      return torch::kUInt32;
    case DataType::UInt64:
      return torch::kUInt64;
#else
    case DataType::UInt16:
      return torch::kInt;
    case DataType::UInt32:
      return torch::kLong;
    case DataType::UInt64:
      return torch::kLong;
#endif
    case DataType::Float16:
      return torch::kHalf;
    case DataType::Float32:
      return torch::kFloat;
    case DataType::Float64:
      return torch::kDouble;
  }
  return torch::kFloat;
}

/// @brief The Zarr data type that stores a torch dtype exactly.
inline DataType data_type(torch::ScalarType s) {
  switch (s) {
    case torch::kBool:
      return DataType::Bool;
    case torch::kChar:
      return DataType::Int8;
    case torch::kShort:
      return DataType::Int16;
    case torch::kInt:
      return DataType::Int32;
    case torch::kLong:
      return DataType::Int64;
    case torch::kByte:
      return DataType::UInt8;
#if QLTY_HAS_UNSIGNED_DTYPES
    case torch::kUInt16:
      return DataType::UInt16;
    case torch::kUInt32:
      return DataType::UInt32;
    case torch::kUInt64:
      return DataType::UInt64;
#endif
    case torch::kHalf:
      return DataType::Float16;
    case torch::kFloat:
      return DataType::Float32;
    case torch::kDouble:
      return DataType::Float64;
    default:
      break;
  }
  TORCH_CHECK_TYPE(false, "qlty::zarr::data_type: dtype ", s, " has no Zarr data type (expected bool, int8-64, ",
                   QLTY_HAS_UNSIGNED_DTYPES ? "uint8-64" : "uint8", ", float16/32/64)");
}

/// @brief How to create an array. Defaults follow zarr-python: blosc-lz4 with byte shuffle, fill value 0, v2.
struct ArrayOptions {
  std::vector<int64_t> shape;   ///< array shape (required)
  std::vector<int64_t> chunks;  ///< chunk shape, same rank (required): one file each; with inner_chunks, the shard
  /// Zarr v3 sharding (`sharding_indexed`): the chunk inside each shard that `codecs` compress and a read fetches on
  /// its own; it divides `chunks`. Empty: not sharded. (zarr-python calls our `chunks` `shards` and our
  /// `inner_chunks` `chunks`.) The shard's index is little-endian with a crc32c, at the shard's end.
  std::vector<int64_t> inner_chunks;
  DataType dtype = DataType::Float32;
  FillValue fill_value = 0.0;                    ///< value of parts never written
  std::vector<Codec> codecs = {Codec::blosc()};  ///< compression chain; v2 allows at most one (no crc32c)
  int zarr_format = 2;                           ///< 2 or 3
  char separator = 0;                            ///< chunk key separator: 0 = default ('.' in v2, '/' in v3)
  json attributes = json::object();              ///< user attributes (.zattrs in v2, inside zarr.json in v3)
  std::vector<std::string> dimension_names;      ///< v3 only; empty = none
  bool overwrite = false;  ///< replace an existing array or group at the path (else creating there is an error)
  bool durable = false;    ///< fsync every file and folder written (slower; survives power loss, not just crashes)

  ArrayOptions() = default;
  ArrayOptions(std::vector<int64_t> shape_, std::vector<int64_t> chunks_, DataType dtype_ = DataType::Float32)
      : shape(std::move(shape_)), chunks(std::move(chunks_)), dtype(dtype_) {}
};

/// @brief What is stored at a path.
enum class NodeType { None, Array, Group };

}  // namespace qlty::zarr

namespace qlty::detail {
inline std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}
}  // namespace qlty::detail

namespace qlty::zarr {

/// @brief Whether `path` holds a Zarr array, a group (v2 or v3), or neither.
inline NodeType node_type(const std::string& path) {
  using qlty::detail::join_path;
  using qlty::detail::path_exists;
  if (path_exists(join_path(path, ".zarray"))) return NodeType::Array;
  if (path_exists(join_path(path, ".zgroup"))) return NodeType::Group;
  const std::string v3 = join_path(path, "zarr.json");
  if (path_exists(v3)) {
    auto text = qlty::detail::read_file(v3, 16 << 20, "metadata file");
    const json j = qlty::detail::parse_json(text ? std::string(text->begin(), text->end()) : "", v3);
    const std::string t = qlty::detail::as_string(qlty::detail::key(j, "node_type", v3), "node_type", v3);
    if (t == "array") return NodeType::Array;
    if (t == "group") return NodeType::Group;
    qlty::detail::bad_meta(v3, "node_type must be \"array\" or \"group\", got \"" + t + "\"");
  }
  return NodeType::None;
}

}  // namespace qlty::zarr

namespace qlty::detail {

using zarr::node_type;
using zarr::NodeType;

/// Per-chunk mutexes of this process, shared by every Array object (striped by path and chunk).
inline std::mutex& chunk_mutex(size_t stripe) {
  static std::mutex table[1024];
  return table[stripe % 1024];
}

template <typename U>
void byteswap_as(uint8_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    U v;
    std::memcpy(&v, p + sizeof(U) * i, sizeof(U));
    if constexpr (sizeof(U) == 2) v = __builtin_bswap16(v);
    if constexpr (sizeof(U) == 4) v = __builtin_bswap32(v);
    if constexpr (sizeof(U) == 8) v = __builtin_bswap64(v);
    std::memcpy(p + sizeof(U) * i, &v, sizeof(U));
  }
}

inline void byteswap(void* data, int64_t n, int size) {
  auto* p = static_cast<uint8_t*>(data);
  if (size == 2) byteswap_as<uint16_t>(p, n);
  if (size == 4) byteswap_as<uint32_t>(p, n);
  if (size == 8) byteswap_as<uint64_t>(p, n);
}

/// Creates the folder for a node; refuses to replace anything that exists unless `overwrite` (and then only a
/// Zarr node, never an arbitrary folder or file).
inline void prepare_node_folder(const std::string& path, bool overwrite, const char* who) {
  using namespace qlty::detail;
  if (path_exists(path)) {
    const NodeType t = node_type(path);
    if (t != NodeType::None) {
      if (!overwrite)
        throw Error("zarr.exists", path + ": " + who + ": a Zarr " + (t == NodeType::Array ? "array" : "group") +
                                       " exists here (pass overwrite = true to replace it)");
      remove_tree(path);
    } else if (!is_directory(path)) {
      throw Error("zarr.exists", path + ": " + who + ": a file exists here");
    } else if (!list_dir(path).empty()) {
      throw Error("zarr.exists", path + ": " + who + ": a non-empty folder that is not a Zarr node exists here");
    }
  }
  make_dirs(path);
}

}  // namespace qlty::detail

namespace qlty::zarr {

/// @brief A Zarr array (v2 or v3) in a folder. Cheap to copy: copies share one state.
class Array {
 public:
  /// @brief Creates an array at `path` (creating folders as needed). Where an array or group exists, this is an
  /// error unless `options.overwrite`.
  static Array create(const std::string& path, const ArrayOptions& options) {
    const std::string where = "qlty::zarr::Array::create(" + path + ")";
    const auto& o = options;
    TORCH_CHECK_VALUE(o.zarr_format == 2 || o.zarr_format == 3, where, ": zarr_format must be 2 or 3, got ",
                      o.zarr_format);
    TORCH_CHECK_VALUE(o.shape.size() == o.chunks.size(), where, ": shape has ", o.shape.size(),
                      " dimensions but chunks has ", o.chunks.size());
    for (size_t a = 0; a < o.shape.size(); ++a) {
      TORCH_CHECK_VALUE(o.shape[a] >= 0, where, ": shape[", a, "] must be >= 0, got ", o.shape[a]);
      TORCH_CHECK_VALUE(o.chunks[a] >= 1, where, ": chunks[", a, "] must be >= 1, got ", o.chunks[a]);
    }
    TORCH_CHECK_VALUE(o.separator == 0 || o.separator == '.' || o.separator == '/', where,
                      ": separator must be '.' or '/', got '", o.separator, "'");
    TORCH_CHECK_VALUE(o.dimension_names.empty() || o.dimension_names.size() == o.shape.size(), where,
                      ": dimension_names must have ", o.shape.size(), " entries, got ", o.dimension_names.size());
    TORCH_CHECK_VALUE(o.dimension_names.empty() || o.zarr_format == 3, where,
                      ": dimension_names are a Zarr v3 feature (zarr_format is 2)");
    TORCH_CHECK_VALUE(o.inner_chunks.empty() || o.zarr_format == 3, where,
                      ": sharding (inner_chunks) is a Zarr v3 feature (zarr_format is 2)");
    TORCH_CHECK_VALUE(o.inner_chunks.empty() || o.inner_chunks.size() == o.chunks.size(), where,
                      ": inner_chunks must have ", o.chunks.size(), " entries, got ", o.inner_chunks.size());
    for (size_t a = 0; a < o.inner_chunks.size(); ++a)
      TORCH_CHECK_VALUE(o.inner_chunks[a] >= 1 && o.chunks[a] % o.inner_chunks[a] == 0, where, ": inner_chunks[", a,
                        "] must divide the shard (chunks[", a, "] = ", o.chunks[a], "), got ", o.inner_chunks[a]);
    TORCH_CHECK_VALUE(o.attributes.is_object(), where, ": attributes must be a JSON object, got ",
                      qlty::detail::brief(o.attributes));
    if (o.zarr_format == 2) {
      TORCH_CHECK_VALUE(o.codecs.size() <= 1, where, ": Zarr v2 takes at most one compressor, got ", o.codecs.size());
      for (const auto& c : o.codecs) TORCH_CHECK_VALUE(c.id != Codec::Id::Crc32c, where, ": crc32c is a Zarr v3 codec");
    } else {
      for (const auto& c : o.codecs)
        TORCH_CHECK_VALUE(c.id != Codec::Id::Zlib && c.id != Codec::Id::Lz4, where, ": codec ", c.name(),
                          " is not a Zarr v3 codec (use gzip, zstd, blosc or crc32c)");
    }
    for (const auto& c : o.codecs) {
      try {
        qlty::detail::validate_codec(c, where);
      } catch (const Error& e) {
        TORCH_CHECK_VALUE(false, e.what());
      }
    }
    qlty::detail::ArrayMetadata m;
    m.zarr_format = o.zarr_format;
    m.shape = o.shape;
    m.chunks = o.chunks;
    m.dtype = o.dtype;
    m.fill = qlty::detail::normalize_fill(o.fill_value, o.dtype, where);
    if (o.zarr_format == 3 && m.fill.kind == FillValue::Kind::Null)
      m.fill = qlty::detail::normalize_fill(FillValue(int64_t(0)), o.dtype, where);
    m.separator = o.separator ? o.separator : (o.zarr_format == 2 ? '.' : '/');
    m.codecs = o.codecs;
    m.dimension_names = o.dimension_names;
    m.inner_chunks = o.inner_chunks;
    if (o.zarr_format == 3) m.attributes = o.attributes;
    try {
      qlty::detail::check_grid(m, where);
    } catch (const Error& e) {
      TORCH_CHECK_VALUE(false, e.what());
    }

    const std::string p = detail::strip_slashes(path);
    detail::prepare_node_folder(p, o.overwrite, "Array::create");
    if (o.zarr_format == 2 && !o.attributes.empty())
      qlty::detail::atomic_write(qlty::detail::join_path(p, ".zattrs"), o.attributes.dump(4, ' ', true), o.durable);
    qlty::detail::atomic_write(qlty::detail::join_path(p, m.metadata_name()), qlty::detail::dump_metadata(m),
                               o.durable);
    return Array(p, std::move(m), o.durable);
  }

  /// @brief Opens the array at `path` (v2 or v3, detected). A missing array or a bad metadata file is an Error.
  static Array open(const std::string& path, bool durable = false) {
    using namespace qlty::detail;
    const std::string p = detail::strip_slashes(path);
    const std::string v2 = join_path(p, ".zarray"), v3 = join_path(p, "zarr.json");
    if (auto text = read_file(v2, 16 << 20, "metadata file"))
      return Array(p, parse_v2(std::string(text->begin(), text->end()), v2), durable);
    if (auto text = read_file(v3, 16 << 20, "metadata file"))
      return Array(p, parse_v3(std::string(text->begin(), text->end()), v3), durable);
    if (path_exists(join_path(p, ".zgroup"))) throw Error("zarr.missing", p + ": is a Zarr group, not an array");
    throw Error("zarr.missing", p + ": no Zarr array here (no .zarray or zarr.json)");
  }

  /// @brief Opens the array at `path` if there is one with the same shape, chunks, data type, fill value and
  /// codecs as `options` (an Error otherwise); creates it if there is none. For resumable runs.
  static Array open_or_create(const std::string& path, const ArrayOptions& options) {
    if (node_type(path) == NodeType::None) {
      try {
        return create(path, options);
      } catch (const Error& e) {
        if (e.tag() != "zarr.exists") throw;  // another process created it first: check it below
      }
    }
    Array a = open(path, options.durable);
    const auto& m = a.metadata();
    const ArrayOptions& want = options;
    const FillValue fill = qlty::detail::normalize_fill(options.fill_value, options.dtype, path);
    const bool same = m.zarr_format == want.zarr_format && m.shape == want.shape && m.chunks == want.chunks &&
                      m.dtype == want.dtype && m.codecs == want.codecs && m.inner_chunks == want.inner_chunks &&
                      (m.fill == fill || (m.zarr_format == 3 && fill.kind == FillValue::Kind::Null));
    if (!same)
      throw Error("zarr.exists", path + ": an array exists here with other settings (shape [" +
                                     c10::str(c10::IntArrayRef(m.shape)) + "], chunks [" +
                                     c10::str(c10::IntArrayRef(m.chunks)) + "], " + name(m.dtype) + ")");
    return a;
  }

  /// @brief The folder of the array.
  const std::string& path() const { return s_->path; }
  /// @brief The lock file of the array at `path` (byte-range locks of its chunks), outside the array's folder:
  /// `<parent>/.<name>.lock`.
  static std::string lock_path(const std::string& path) {
    const std::string p = detail::strip_slashes(path);
    return qlty::detail::join_path(qlty::detail::parent_path(p), "." + qlty::detail::base_name(p) + ".lock");
  }
  /// @brief The parsed metadata.
  const qlty::detail::ArrayMetadata& metadata() const { return s_->meta; }
  std::vector<int64_t> shape() const { return s_->meta.shape; }
  /// @brief The chunk grid's chunk: one file each, the unit of locks and of writes that need no coordination (the
  /// shard when sharded).
  std::vector<int64_t> chunks() const { return s_->meta.chunks; }
  /// @brief Whether the array is sharded (Zarr v3 `sharding_indexed`).
  bool sharded() const { return s_->meta.sharded(); }
  /// @brief The chunk a read fetches and decodes on its own: the inner chunk when sharded, else chunks().
  std::vector<int64_t> inner_chunks() const { return s_->meta.coded_chunks(); }
  int64_t ndim() const { return s_->meta.ndim(); }
  DataType dtype() const { return s_->meta.dtype; }
  /// @brief The torch dtype reads return by default (see zarr::scalar_type).
  torch::ScalarType scalar_type() const { return zarr::scalar_type(s_->meta.dtype); }
  /// @brief Number of chunks along each axis.
  std::vector<int64_t> chunk_grid() const { return s_->meta.grid(); }
  /// @brief fsync every write from now on (or stop).
  void set_durable(bool durable) { s_->durable = durable; }

  /// @brief The file of the chunk with grid index `idx`.
  std::string chunk_path(c10::IntArrayRef idx) const {
    check_chunk_index(idx, "chunk_path");
    return qlty::detail::join_path(s_->path, s_->meta.chunk_key(idx.data()));
  }
  /// @brief Whether the chunk is stored (a missing chunk reads as the fill value).
  bool chunk_exists(c10::IntArrayRef idx) const { return qlty::detail::path_exists(chunk_path(idx)); }
  /// @brief How many chunks are stored: files named by a chunk key of the grid, found without entering linked
  /// folders (nothing outside the array is visited).
  int64_t stored_chunk_count() const { return static_cast<int64_t>(stored_chunks().size()); }

  /// @brief The user attributes (`.zattrs` in v2, read on each call; in zarr.json in v3).
  json attributes() const {
    if (s_->meta.zarr_format == 3) return s_->meta.attributes;
    return read_attributes(s_->path);
  }
  /// @brief Replaces the user attributes (atomically).
  void set_attributes(const json& attributes) {
    TORCH_CHECK_VALUE(attributes.is_object(), "qlty::zarr::Array::set_attributes: expected a JSON object, got ",
                      qlty::detail::brief(attributes));
    if (s_->meta.zarr_format == 2) {
      qlty::detail::atomic_write(qlty::detail::join_path(s_->path, ".zattrs"), attributes.dump(4, ' ', true),
                                 s_->durable);
    } else {
      std::lock_guard<std::mutex> g(s_->mutex);
      s_->meta.attributes = attributes;
      qlty::detail::atomic_write(qlty::detail::join_path(s_->path, "zarr.json"), qlty::detail::dump_metadata(s_->meta),
                                 s_->durable);
    }
  }

  /// @brief Reads the box [offset, offset + shape) as a new CPU tensor of `dtype` (default: scalar_type()).
  torch::Tensor read(c10::IntArrayRef offset, c10::IntArrayRef shape,
                     std::optional<torch::ScalarType> dtype = std::nullopt) const {
    check_box(offset, shape, "read");
    const auto natural = scalar_type();
    auto out = qlty::detail::empty_output(shape, torch::TensorOptions().dtype(natural));
    const auto chunks = chunk_range(offset, shape);
    if (out.numel() > 0 && s_->meta.sharded()) {
      const bool listed = chunks.size() > kListedRead;  // as below: fill once, visit the stored shards only
      if (listed) out.fill_(natural_fill());
      read_shards(out, offset, shape, listed ? stored_chunks(chunks) : chunks_in(offset, shape), listed);
    } else if (out.numel() > 0 && chunks.size() > kListedRead) {
      // Many chunks (tiny ones, or a sparse array): list what is stored once, fill the rest in one pass.
      out.fill_(natural_fill());
      const auto stored = stored_chunks(chunks);
      at::parallel_for(0, static_cast<int64_t>(stored.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const auto& idx = stored[k];
          if (auto c = load_chunk(idx))
            slice(out, idx, offset, offset, shape).copy_(to_natural(slice(*c, idx, chunk_origin(idx), offset, shape)));
        }
      });
    } else if (out.numel() > 0) {
      at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
          const auto& idx = chunks[k];
          auto dst = slice(out, idx, offset, offset, shape);
          if (auto c = load_chunk(idx)) {
            dst.copy_(to_natural(slice(*c, idx, chunk_origin(idx), offset, shape)));
          } else {
            dst.fill_(natural_fill());
          }
        }
      });
    }
    if (dtype && *dtype != natural) return out.to(*dtype);
    return out;
  }
  /// @brief Reads the whole array.
  torch::Tensor read() const { return read(std::vector<int64_t>(ndim(), 0), s_->meta.shape); }

  /// @brief Writes `data` (any dtype, any device; converted to the array's type) at `offset`. Chunks that the
  /// box covers partly are read, merged and rewritten under the chunk's lock, so concurrent writers of different
  /// parts of one chunk lose nothing.
  void write(c10::IntArrayRef offset, const torch::Tensor& data) { write_impl(offset, data, true, "write"); }

  /// @brief Reads the box, lets `fn` change it in place (a tensor of scalar_type()), and writes it back, holding
  /// the locks of every chunk it touches for the whole time (in this process and across processes).
  void update(c10::IntArrayRef offset, c10::IntArrayRef shape, const std::function<void(torch::Tensor&)>& fn) {
    check_box(offset, shape, "update");
    const auto chunks = chunks_in(offset, shape);
    ChunkLocks locks(*this, chunks);
    auto region = read(offset, shape);
    fn(region);
    TORCH_CHECK_VALUE(region.sizes() == shape, "qlty::zarr::Array::update: the callback changed the region's shape to ",
                      region.sizes(), ", expected ", shape);
    write_impl(offset, region, false, "update");
  }

  /// @brief Adds `data` to the box at `offset` under the chunks' locks (see update): P processes adding to one
  /// region N times end with P*N additions.
  void add(c10::IntArrayRef offset, const torch::Tensor& data) {
    update(offset, data.sizes(), [&](torch::Tensor& r) { r.add_(data.to(r.device())); });
  }

  /// @brief One whole chunk (full chunk shape, edge chunks padded with the fill value), of scalar_type().
  torch::Tensor read_chunk(c10::IntArrayRef idx) const {
    check_chunk_index(idx, "read_chunk");
    std::vector<int64_t> i(idx.begin(), idx.end());
    if (auto c = load_chunk(i)) return to_natural(*c).contiguous();
    return torch::full(s_->meta.chunks, natural_fill(), torch::TensorOptions().dtype(scalar_type()));
  }

  /// @brief A whole chunk decoded from `file`, bytes that write_chunk_file wrote for this array (a staged copy kept
  /// elsewhere); a missing or corrupt file is an Error naming it.
  torch::Tensor read_chunk_file(const std::string& file) const {
    auto c = load_chunk_file(file);
    if (!c) throw Error("zarr.missing", file + ": staged chunk file is missing");
    return to_natural(*c).contiguous();
  }

  /// @brief Replaces one whole chunk; `data` has the full chunk shape.
  void write_chunk(c10::IntArrayRef idx, const torch::Tensor& data) {
    check_chunk_index(idx, "write_chunk");
    TORCH_CHECK_VALUE(data.sizes() == c10::IntArrayRef(s_->meta.chunks), "qlty::zarr::Array::write_chunk(", s_->path,
                      "): data must have the chunk shape [", c10::IntArrayRef(s_->meta.chunks), "], got ",
                      data.sizes());
    remove_stale_temps_once();
    store_chunk(std::vector<int64_t>(idx.begin(), idx.end()), to_storage(data, "write_chunk"));
  }

  /// @brief Writes one whole chunk (`data` has the chunk shape) as this array stores it, to a new file `file` that
  /// must not exist (flushed with `durable`): for callers that stage chunk files themselves and rename them over
  /// the chunk's key later (the disk-cached quilts' journal). Uncompressed chunks are written straight from `data`.
  void write_chunk_file(const std::string& file, const torch::Tensor& data, bool durable = false) const {
    TORCH_CHECK_VALUE(data.sizes() == c10::IntArrayRef(s_->meta.chunks), "qlty::zarr::Array::write_chunk_file(",
                      s_->path, "): data must have the chunk shape [", c10::IntArrayRef(s_->meta.chunks), "], got ",
                      data.sizes());
    with_stored_bytes(to_storage(data, "write_chunk_file"), file, [&](const void* bytes, size_t size) {
      qlty::detail::write_new_file(file, bytes, size, durable);
    });
  }

  /// @brief The attributes file of a v2 node, `{}` when absent; a bad file is an Error naming it.
  static json read_attributes(const std::string& node_path) {
    const std::string f = qlty::detail::join_path(node_path, ".zattrs");
    auto text = qlty::detail::read_file(f, 64 << 20, "attributes file");
    if (!text) return json::object();
    json j = qlty::detail::parse_json(std::string(text->begin(), text->end()), f);
    if (!j.is_object())
      qlty::detail::bad_meta(f, "attributes must be a JSON object, got " + std::string(j.type_name()));
    return j;
  }

 private:
  struct State {
    std::string path;
    qlty::detail::ArrayMetadata meta;
    bool durable = false;
    size_t path_hash = 0;
    std::mutex mutex;  // guards lock_file creation, metadata rewrites and temps_checked
    std::unique_ptr<qlty::detail::LockFile> lock_file;
    bool temps_checked = false;  // stale temporary files removed (at the first write)
  };

  Array(std::string path, qlty::detail::ArrayMetadata meta, bool durable) : s_(std::make_shared<State>()) {
    s_->path = std::move(path);
    s_->meta = std::move(meta);
    s_->durable = durable;
    s_->path_hash = std::hash<std::string>()(s_->path);
  }

  /// Holds the locks of a set of chunks: this process's mutexes (sorted, so no deadlock), then the lock file's
  /// byte ranges, which exclude other processes.
  class ChunkLocks {
   public:
    ChunkLocks(const Array& a, const std::vector<std::vector<int64_t>>& chunks) : file_(&a.lock_file()) {
      for (const auto& c : chunks) linear_.push_back(a.linear_index(c));
      std::sort(linear_.begin(), linear_.end());
      for (auto l : linear_)
        stripes_.push_back((a.s_->path_hash ^ (static_cast<size_t>(l) * 0x9E3779B97F4A7C15ull)) % 1024);
      std::sort(stripes_.begin(), stripes_.end());
      stripes_.erase(std::unique(stripes_.begin(), stripes_.end()), stripes_.end());
      for (auto s : stripes_) detail::chunk_mutex(s).lock();
      try {
        for (auto l : linear_) {
          file_->lock(l);
          ++file_locked_;
        }
      } catch (...) {
        release();
        throw;
      }
    }
    ~ChunkLocks() { release(); }
    ChunkLocks(const ChunkLocks&) = delete;
    ChunkLocks& operator=(const ChunkLocks&) = delete;

   private:
    void release() noexcept {
      for (size_t i = file_locked_; i-- > 0;) {
        try {
          file_->unlock(linear_[i]);
        } catch (...) {  // closing the file at exit releases it anyway
        }
      }
      file_locked_ = 0;
      for (size_t i = stripes_.size(); i-- > 0;) detail::chunk_mutex(stripes_[i]).unlock();
      stripes_.clear();
    }
    qlty::detail::LockFile* file_;
    std::vector<int64_t> linear_;
    std::vector<size_t> stripes_;
    size_t file_locked_ = 0;
  };

  /// The first write through an opened array removes the temporary files that killed writers left (those of dead
  /// processes on this machine), so they do not pile up; readers never take them for chunks.
  void remove_stale_temps_once() const {
    {
      std::lock_guard<std::mutex> g(s_->mutex);
      if (s_->temps_checked) return;
      s_->temps_checked = true;
    }
    qlty::detail::remove_stale_temps(s_->path);
  }

  qlty::detail::LockFile& lock_file() const {
    std::lock_guard<std::mutex> g(s_->mutex);
    if (!s_->lock_file) s_->lock_file = std::make_unique<qlty::detail::LockFile>(lock_path(s_->path));
    return *s_->lock_file;
  }

  int64_t linear_index(const std::vector<int64_t>& idx) const {
    const auto g = s_->meta.grid();
    int64_t l = 0;
    for (size_t a = 0; a < idx.size(); ++a) l = l * g[a] + idx[a];
    return l;
  }

  std::vector<int64_t> chunk_origin(const std::vector<int64_t>& idx) const {
    std::vector<int64_t> o(idx.size());
    for (size_t a = 0; a < idx.size(); ++a) o[a] = idx[a] * s_->meta.chunks[a];
    return o;
  }

  void check_chunk_index(c10::IntArrayRef idx, const char* who) const {
    const auto g = s_->meta.grid();
    bool ok = idx.size() == g.size();
    for (size_t a = 0; ok && a < g.size(); ++a) ok = idx[a] >= 0 && idx[a] < g[a];
    TORCH_CHECK_INDEX(ok, "qlty::zarr::Array::", who, "(", s_->path, "): chunk index [", idx,
                      "] is outside the chunk grid [", c10::IntArrayRef(g), "]");
  }

  void check_box(c10::IntArrayRef offset, c10::IntArrayRef shape, const char* who) const {
    const auto& m = s_->meta;
    TORCH_CHECK_VALUE(offset.size() == m.shape.size() && shape.size() == m.shape.size(), "qlty::zarr::Array::", who,
                      "(", s_->path, "): offset and shape must have ", m.shape.size(), " entries, got [", offset,
                      "] and [", shape, "]");
    for (size_t a = 0; a < m.shape.size(); ++a)
      TORCH_CHECK_INDEX(offset[a] >= 0 && shape[a] >= 0 && offset[a] + shape[a] <= m.shape[a],
                        "qlty::zarr::Array::", who, "(", s_->path, "): the box at [", offset, "] of shape [", shape,
                        "] is outside the array's shape [", c10::IntArrayRef(m.shape), "] on axis ", a);
  }

  /// The chunks a box meets, in C order, without a list of them (a box can meet millions of tiny chunks): size()
  /// of them, the k-th by [k].
  struct ChunkRange {
    std::vector<int64_t> lo, hi;
    int64_t count = 0;
    int64_t size() const { return count; }
    std::vector<int64_t> operator[](int64_t k) const {
      std::vector<int64_t> idx(lo.size());
      for (int64_t a = static_cast<int64_t>(lo.size()) - 1; a >= 0; --a) {
        const int64_t n = hi[a] - lo[a];
        idx[a] = lo[a] + k % n;
        k /= n;
      }
      return idx;
    }
  };
  /// Region reads meeting more chunks than this list the stored ones first.
  static constexpr int64_t kListedRead = 4096;

  /// The stored chunks (files named by a chunk key; folders only as deep as keys go, linked folders not entered)
  /// inside `range`, or of the whole grid.
  std::vector<std::vector<int64_t>> stored_chunks(const std::optional<ChunkRange>& range = std::nullopt) const {
    const auto& m = s_->meta;
    std::vector<std::vector<int64_t>> out;
    const int max_depth = m.ndim() + 1;
    std::function<void(const std::string&, const std::string&, int)> walk = [&](const std::string& dir,
                                                                                const std::string& rel, int depth) {
      for (const auto& f : qlty::detail::list_dir(dir)) {
        if (f.empty() || f[0] == '.' || f == "zarr.json") continue;
        const std::string p = qlty::detail::join_path(dir, f), r = rel.empty() ? f : rel + "/" + f;
        struct stat st;
        if (::lstat(p.c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
          if (depth < max_depth) walk(p, r, depth + 1);
          continue;
        }
        if (S_ISLNK(st.st_mode) && (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode))) continue;
        auto idx = m.parse_chunk_key(r);
        if (!idx) continue;
        bool inside = true;
        for (size_t a = 0; range && a < idx->size(); ++a)
          inside = inside && (*idx)[a] >= range->lo[a] && (*idx)[a] < range->hi[a];
        if (inside) out.push_back(std::move(*idx));
      }
    };
    walk(s_->path, "", 0);
    return out;
  }

  ChunkRange chunk_range(c10::IntArrayRef offset, c10::IntArrayRef shape) const {
    const auto& c = s_->meta.chunks;
    const size_t D = c.size();
    ChunkRange r;
    r.lo.resize(D);
    r.hi.resize(D);
    r.count = 1;
    for (size_t a = 0; a < D; ++a) {
      if (shape[a] == 0) return ChunkRange{};
      r.lo[a] = offset[a] / c[a];
      r.hi[a] = (offset[a] + shape[a] - 1) / c[a] + 1;
      r.count *= r.hi[a] - r.lo[a];  // at most the grid's chunk count, checked when the metadata was read
    }
    return r;
  }
  std::vector<std::vector<int64_t>> chunks_in(c10::IntArrayRef offset, c10::IntArrayRef shape) const {
    const auto r = chunk_range(offset, shape);
    std::vector<std::vector<int64_t>> out;
    out.reserve(static_cast<size_t>(r.size()));
    for (int64_t k = 0; k < r.size(); ++k) out.push_back(r[k]);
    return out;
  }

  /// The part of tensor `t`, whose first element sits at array position `t_origin`, that lies in chunk `idx`
  /// and in the box [box_off, box_off + box_shape).
  torch::Tensor slice(const torch::Tensor& t, const std::vector<int64_t>& idx, c10::IntArrayRef t_origin,
                      c10::IntArrayRef box_off, c10::IntArrayRef box_shape) const {
    return slice_cell(t, t_origin, chunk_origin(idx), s_->meta.chunks, box_off, box_shape);
  }
  /// The same for the cell (a chunk or inner chunk) of shape `cell` at array position `cell_origin`.
  torch::Tensor slice_cell(const torch::Tensor& t, c10::IntArrayRef t_origin, c10::IntArrayRef cell_origin,
                           c10::IntArrayRef cell, c10::IntArrayRef box_off, c10::IntArrayRef box_shape) const {
    torch::Tensor r = t;
    for (size_t a = 0; a < cell.size(); ++a) {
      const int64_t lo = std::max(cell_origin[a], box_off[a]);
      const int64_t hi = std::min({cell_origin[a] + cell[a], s_->meta.shape[a], box_off[a] + box_shape[a]});
      r = r.narrow(static_cast<int64_t>(a), lo - t_origin[a], hi - lo);
    }
    return r;
  }

  // Storage tensors hold the stored bytes: the array's own type, or before LibTorch 2.3 the signed type of the
  // same size for uint16/32/64.
  torch::ScalarType storage_type() const {
    if (QLTY_HAS_UNSIGNED_DTYPES) return zarr::scalar_type(s_->meta.dtype);
    switch (s_->meta.dtype) {
      case DataType::UInt16:
        return torch::kShort;
      case DataType::UInt32:
        return torch::kInt;
      case DataType::UInt64:
        return torch::kLong;
      default:
        return zarr::scalar_type(s_->meta.dtype);
    }
  }

  torch::Scalar natural_fill() const {
    const FillValue& f = s_->meta.fill;
    switch (f.kind) {
      case FillValue::Kind::Null:
        return 0;
      case FillValue::Kind::Bool:
        return f.b;
      case FillValue::Kind::Int:
        return f.i;
      case FillValue::Kind::Float:
        return f.f;
      case FillValue::Kind::UInt:
#if QLTY_HAS_UNSIGNED_DTYPES
        return torch::Scalar(f.u);
#else
        TORCH_CHECK_VALUE(f.u <= static_cast<uint64_t>(INT64_MAX), "qlty::zarr::Array(", s_->path, "): fill value ",
                          f.u, " does not fit int64 (LibTorch 2.3 and later read uint64 as itself)");
        return static_cast<int64_t>(f.u);
#endif
    }
    return 0;
  }
  torch::Scalar storage_fill() const {
    const FillValue& f = s_->meta.fill;
    if (f.kind != FillValue::Kind::UInt || QLTY_HAS_UNSIGNED_DTYPES) return natural_fill();
    switch (s_->meta.dtype) {
      case DataType::UInt16:
        return static_cast<int64_t>(static_cast<int16_t>(f.u));
      case DataType::UInt32:
        return static_cast<int64_t>(static_cast<int32_t>(f.u));
      case DataType::UInt64:
        return static_cast<int64_t>(f.u);
      default:
        return static_cast<int64_t>(f.u);
    }
  }

  torch::Tensor to_natural(const torch::Tensor& t) const {
    if (QLTY_HAS_UNSIGNED_DTYPES) return t;
    switch (s_->meta.dtype) {
      case DataType::UInt16:
        return t.to(torch::kInt).bitwise_and_(0xFFFF);
      case DataType::UInt32:
        return t.to(torch::kLong).bitwise_and_(static_cast<int64_t>(0xFFFFFFFF));
      case DataType::UInt64:
        TORCH_CHECK_VALUE(t.numel() == 0 || t.min().item<int64_t>() >= 0, "qlty::zarr::Array::read(", s_->path,
                          "): a uint64 value above 2^63-1 cannot be read as int64");
        return t;
      default:
        return t;
    }
  }

  /// `data` converted to the storage type, on the CPU. One rule for every integer type: values that are not finite
  /// or lie outside the type's range are refused (never wrapped); fractions are cut toward zero, as C++ and NumPy
  /// casts do.
  torch::Tensor to_storage(const torch::Tensor& data, const char* who) const {
    const auto dt = s_->meta.dtype;
    auto t = data.to(torch::kCPU);
    // The range of each integer type, as doubles (the bounds of 64-bit types are powers of two: exact).
    struct Range {
      DataType type;
      double lo, hi;
    };
    static const Range kRanges[] = {{DataType::Int8, -128, 127},
                                    {DataType::UInt8, 0, 255},
                                    {DataType::Int16, -32768, 32767},
                                    {DataType::UInt16, 0, 65535},
                                    {DataType::Int32, -2147483648.0, 2147483647.0},
                                    {DataType::UInt32, 0, 4294967295.0},
                                    {DataType::Int64, -9223372036854775808.0, 9223372036854775807.0},
                                    {DataType::UInt64, 0, 18446744073709551615.0}};
    auto range = [](DataType d, double& lo, double& hi) {
      for (const auto& r : kRanges)
        if (r.type == d) {
          lo = r.lo, hi = r.hi;
          return true;
        }
      return false;
    };
    double lo = 0, hi = 0;
    if (t.numel() > 0 && range(dt, lo, hi)) {
      double slo = 0, shi = 0;
      const bool fits = !t.is_floating_point() && !t.is_complex() && t.scalar_type() != torch::kBool &&
                        range(data_type(t.scalar_type()), slo, shi) && slo >= lo && shi <= hi;
      if (!fits && t.scalar_type() != torch::kBool) {
        if (t.is_floating_point())
          TORCH_CHECK_VALUE(torch::isfinite(t).all().item<bool>(), "qlty::zarr::Array::", who, "(", s_->path,
                            "): NaN or infinite values cannot be stored as ", name(dt));
        const auto l = t.to(torch::kDouble);
        const double mn = l.min().item<double>(), mx = l.max().item<double>();
        // 64-bit types: hi is 2^63 or 2^64 as a double, itself out of range
        const bool top_open = dt == DataType::Int64 || dt == DataType::UInt64;
        TORCH_CHECK_VALUE(mn >= lo && (top_open ? mx < hi : mx <= hi), "qlty::zarr::Array::", who, "(", s_->path,
                          "): values must be in [", static_cast<int64_t>(lo), ", ",
                          dt == DataType::UInt64 ? std::string("2^64") : std::to_string(static_cast<uint64_t>(hi)),
                          top_open ? ")" : "]", " for ", name(dt), ", got [", mn, ", ", mx, "]");
      }
    }
    if (QLTY_HAS_UNSIGNED_DTYPES) return t.to(storage_type());
    switch (dt) {  // through a wider type: 65535 becomes int16 -1, the same bytes
      case DataType::UInt16:
        return t.to(torch::kInt).to(torch::kShort);
      case DataType::UInt32:
        return t.to(torch::kLong).to(torch::kInt);
      case DataType::UInt64:
        return t.to(torch::kLong);
      default:
        return t.to(storage_type());
    }
  }

  /// A stored chunk as a storage tensor of the chunk shape, or nullopt when it is missing.
  std::optional<torch::Tensor> load_chunk(const std::vector<int64_t>& idx) const {
    return load_chunk_file(chunk_file(idx));
  }
  std::string chunk_file(const std::vector<int64_t>& idx) const {
    return qlty::detail::join_path(s_->path, s_->meta.chunk_key(idx.data()));
  }
  std::optional<torch::Tensor> load_chunk_file(const std::string& file) const {
    if (s_->meta.sharded()) return load_shard_file(file);
    const auto& m = s_->meta;
    const int64_t nbytes = m.chunk_nbytes();
    const uint64_t bound = static_cast<uint64_t>(nbytes) + static_cast<uint64_t>(nbytes) / 16 + 65536;
    auto t = torch::empty({m.chunk_numel()}, torch::TensorOptions().dtype(storage_type()));
    auto* data = static_cast<uint8_t*>(t.data_ptr());
    if (m.codecs.empty()) {  // stored as is: read straight into the chunk (a longer file is refused as it is read)
      const auto size = qlty::detail::read_file_into(file, data, static_cast<uint64_t>(nbytes), "chunk");
      if (!size) return std::nullopt;
      if (*size != static_cast<size_t>(nbytes))
        qlty::detail::corrupt(
            file, "uncompressed chunk has " + std::to_string(*size) + " bytes, expected " + std::to_string(nbytes));
    } else {
      thread_local std::vector<uint8_t> stored;  // reused: no allocation or page faults per chunk
      const auto size = qlty::detail::read_file_into(file, stored, bound, "chunk");
      if (!size) return std::nullopt;
      qlty::detail::decode_chain(m.codecs, stored.data(), *size, data, static_cast<size_t>(nbytes),
                                 static_cast<size_t>(bound), file);
    }
    make_valid(data, t.numel());
    if (!m.fortran_order) return t.view(m.chunks);
    return t.view(std::vector<int64_t>(m.chunks.rbegin(), m.chunks.rend())).permute(reversed_axes());
  }

  /// Decoded elements as torch holds them: in this machine's byte order, and bools 0 or 1 (any other byte would be
  /// an invalid torch bool).
  void make_valid(uint8_t* data, int64_t numel) const {
    const auto& m = s_->meta;
    if (m.big_endian) detail::byteswap(data, numel, static_cast<int>(m.itemsize()));
    if (m.dtype == DataType::Bool)
      for (int64_t i = 0; i < numel; ++i) data[i] = data[i] != 0;
  }

  /// The most bytes a coded chunk (the inner chunk when sharded) may take on disk, and any step of its decoding.
  uint64_t coded_bound() const {
    const auto n = static_cast<uint64_t>(s_->meta.coded_nbytes());
    return n + n / 16 + 65536;
  }

  /// One inner chunk of a shard from its stored bytes, as a storage tensor of the inner chunk's shape in a buffer of
  /// this thread (valid until its next call).
  torch::Tensor decode_inner(const uint8_t* bytes, size_t size, const std::string& file) const {
    const auto& m = s_->meta;
    uint8_t* decoded = inner_buffer();
    qlty::detail::decode_chain(m.codecs, bytes, size, decoded, static_cast<size_t>(m.coded_nbytes()),
                               static_cast<size_t>(coded_bound()), file);
    return inner_tensor(decoded);
  }
  /// This thread's buffer for one decoded inner chunk.
  uint8_t* inner_buffer() const {
    thread_local std::vector<uint8_t> decoded;
    const auto nbytes = static_cast<size_t>(s_->meta.coded_nbytes());
    if (decoded.size() < nbytes) decoded.resize(nbytes);
    return decoded.data();
  }
  /// The decoded inner chunk at `p` (inner_buffer()) as a storage tensor, made valid.
  torch::Tensor inner_tensor(uint8_t* p) const {
    make_valid(p, s_->meta.coded_numel());
    return torch::from_blob(p, s_->meta.inner_chunks, torch::TensorOptions().dtype(storage_type()));
  }

  /// The origin, in the array, of inner chunk `k` (C order) of the shard `shard`.
  std::vector<int64_t> inner_origin(const std::vector<int64_t>& shard, int64_t k) const {
    const auto& m = s_->meta;
    const auto g = m.inner_grid();
    std::vector<int64_t> o(g.size());
    for (size_t a = g.size(); a-- > 0;) {
      o[a] = shard[a] * m.chunks[a] + (k % g[a]) * m.inner_chunks[a];
      k /= g[a];
    }
    return o;
  }

  /// A whole shard as a storage tensor of the shard's shape (empty inner chunks hold the fill value), or nullopt
  /// when the file is missing.
  std::optional<torch::Tensor> load_shard_file(const std::string& file) const {
    const auto& m = s_->meta;
    thread_local std::vector<uint8_t> bytes;
    const uint64_t bound = static_cast<uint64_t>(m.index_nbytes()) + m.inner_per_shard() * coded_bound();
    const auto size = qlty::detail::read_file_into(file, bytes, bound, "shard");
    if (!size) return std::nullopt;
    qlty::detail::check_shard_size(m, *size, file);
    const auto index =
        qlty::detail::decode_shard_index(bytes.data() + qlty::detail::index_position(m, *size), m, *size, file);
    auto shard = torch::empty(m.chunks, torch::TensorOptions().dtype(storage_type()));
    const std::vector<int64_t> zero(m.chunks.size(), 0);
    const uint8_t* base = bytes.data();
    at::parallel_for(0, index.size(), 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const auto origin = inner_origin(zero, k);
        torch::Tensor dst = shard;
        for (size_t a = 0; a < origin.size(); ++a)
          dst = dst.narrow(static_cast<int64_t>(a), origin[a], m.inner_chunks[a]);
        if (index.empty(k)) {
          dst.fill_(storage_fill());
        } else {
          dst.copy_(decode_inner(base + index.offset[k], static_cast<size_t>(index.nbytes[k]), file));
        }
      }
    });
    return shard;
  }

  /// Reads the box [offset, offset + shape) of `out` from the given shards, fetching of each only its index and the
  /// inner chunks the box meets. Parts in missing shards or empty inner chunks get the fill value unless `filled`.
  void read_shards(torch::Tensor& out, c10::IntArrayRef offset, c10::IntArrayRef shape,
                   const std::vector<std::vector<int64_t>>& shards, bool filled) const {
    const auto& m = s_->meta;
    const auto g = m.inner_grid();
    const size_t D = g.size();
    struct OpenShard {
      qlty::detail::ReadableFile file;
      uint64_t size = 0;
      qlty::detail::ShardIndex index;
      bool present = false;
    };
    constexpr size_t kBatch = 64;  // shards open at once (file descriptors)
    for (size_t first = 0; first < shards.size(); first += kBatch) {
      const size_t n = std::min(kBatch, shards.size() - first);
      std::vector<OpenShard> open(n);
      at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t b, int64_t e) {
        std::vector<uint8_t> index_bytes;
        for (int64_t i = b; i < e; ++i) {
          auto& o = open[i];
          const std::string file = chunk_file(shards[first + i]);
          const auto size = qlty::detail::open_regular_file(file, o.file, UINT64_MAX, "shard");
          if (!size) continue;
          o.size = *size;
          qlty::detail::check_shard_size(m, o.size, file);  // before the index's buffer: the file holds it
          index_bytes.resize(static_cast<size_t>(m.index_nbytes()));
          const uint64_t at = qlty::detail::index_position(m, o.size);
          if (o.file.read_at(index_bytes.data(), index_bytes.size(), at, file) != index_bytes.size())
            qlty::detail::corrupt(file, "the shard ended while its index was read");
          o.index = qlty::detail::decode_shard_index(index_bytes.data(), m, o.size, file);
          o.present = true;
        }
      });
      // The inner chunks the box meets in each shard: (shard in this batch, inner chunk in C order).
      std::vector<std::pair<size_t, int64_t>> tasks;
      for (size_t i = 0; i < n; ++i) {
        const auto& sh = shards[first + i];
        std::vector<int64_t> lo(D), hi(D);
        for (size_t a = 0; a < D; ++a) {
          const int64_t s0 = sh[a] * m.chunks[a], c = m.inner_chunks[a];
          lo[a] = (std::max(offset[a], s0) - s0) / c;
          hi[a] = (std::min(offset[a] + shape[a], s0 + m.chunks[a]) - 1 - s0) / c + 1;
        }
        std::vector<int64_t> at(lo);
        while (true) {
          int64_t k = 0;
          for (size_t a = 0; a < D; ++a) k = k * g[a] + at[a];
          tasks.emplace_back(i, k);
          size_t a = D;
          while (a-- > 0 && ++at[a] == hi[a]) at[a] = lo[a];
          if (a == static_cast<size_t>(-1)) break;
        }
      }
      at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
        thread_local std::vector<uint8_t> stored;
        for (int64_t t = b; t < e; ++t) {
          const auto [i, k] = tasks[t];
          const auto& o = open[i];
          const auto origin = inner_origin(shards[first + i], k);
          auto dst = slice_cell(out, offset, origin, m.inner_chunks, offset, shape);
          if (!o.present || o.index.empty(k)) {
            if (!filled) dst.fill_(natural_fill());
            continue;
          }
          const std::string file = chunk_file(shards[first + i]);
          const auto len = static_cast<size_t>(o.index.nbytes[k]);
          if (len > coded_bound())
            qlty::detail::corrupt(file, "inner chunk " + std::to_string(k) + " has " + std::to_string(len) +
                                            " bytes, more than it can take encoded");
          const bool raw = m.codecs.empty();  // read straight into the decoded chunk's buffer
          if (raw && len != static_cast<size_t>(m.coded_nbytes()))
            qlty::detail::corrupt(file, "uncompressed chunk has " + std::to_string(len) + " bytes, expected " +
                                            std::to_string(m.coded_nbytes()));
          if (!raw && stored.size() < len) stored.resize(len);
          uint8_t* dst_bytes = raw ? inner_buffer() : stored.data();
          if (o.file.read_at(dst_bytes, len, o.index.offset[k], file) != len)
            qlty::detail::corrupt(file, "the shard ended inside inner chunk " + std::to_string(k));
          const auto inner = raw ? inner_tensor(dst_bytes) : decode_inner(stored.data(), len, file);
          dst.copy_(to_natural(slice_cell(inner, origin, origin, m.inner_chunks, offset, shape)));
        }
      });
    }
  }

  /// Writes the part of `src` (the box [offset, offset + shape) in the storage type) that lies in shard `idx`. Each
  /// inner chunk the box covers is encoded from `src`; one it meets in part is merged into its old value (or the
  /// fill value); the others keep their old bytes (from the shard as it was, when `read_old`), or stay empty. The
  /// caller holds the shard's lock.
  void write_shard(const std::vector<int64_t>& idx, const torch::Tensor& src, c10::IntArrayRef offset,
                   c10::IntArrayRef shape, bool read_old) const {
    const auto& m = s_->meta;
    const std::string file = chunk_file(idx);
    thread_local std::vector<uint8_t> old;
    std::optional<qlty::detail::ShardIndex> old_index;
    if (read_old) {
      const uint64_t bound = static_cast<uint64_t>(m.index_nbytes()) + m.inner_per_shard() * coded_bound();
      if (const auto size = qlty::detail::read_file_into(file, old, bound, "shard")) {
        qlty::detail::check_shard_size(m, *size, file);
        old_index =
            qlty::detail::decode_shard_index(old.data() + qlty::detail::index_position(m, *size), m, *size, file);
      }
    }
    const int64_t n = m.inner_per_shard();
    std::vector<qlty::detail::InnerBytes> inner(static_cast<size_t>(n));
    const uint8_t* old_bytes = old.data();
    at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const auto origin = inner_origin(idx, k);
        bool beyond = false, meets = true, covers = true, whole = true;  // whole: entirely inside the array
        for (size_t a = 0; a < origin.size(); ++a) {
          const int64_t hi = std::min(origin[a] + m.inner_chunks[a], m.shape[a]);
          beyond = beyond || origin[a] >= m.shape[a];
          meets = meets && offset[a] < hi && offset[a] + shape[a] > origin[a];
          covers = covers && offset[a] <= origin[a] && offset[a] + shape[a] >= hi;
          whole = whole && hi == origin[a] + m.inner_chunks[a];
        }
        const bool had = old_index && !old_index->empty(k);
        if (beyond || (!meets && !had)) continue;  // empty
        if (!meets) {                              // untouched: its bytes as they were
          inner[k].data = old_bytes + old_index->offset[k];
          inner[k].size = static_cast<size_t>(old_index->nbytes[k]);
          inner[k].empty = false;
          continue;
        }
        const auto part = slice_cell(src, offset, origin, m.inner_chunks, offset, shape);
        torch::Tensor chunk = part;
        if (!(covers && whole)) {
          chunk = torch::empty(m.inner_chunks, torch::TensorOptions().dtype(storage_type()));
          if (!covers && had) {
            chunk.copy_(
                decode_inner(old_bytes + old_index->offset[k], static_cast<size_t>(old_index->nbytes[k]), file));
          } else {
            chunk.fill_(storage_fill());
          }
          slice_cell(chunk, origin, origin, m.inner_chunks, offset, shape).copy_(part);
        }
        inner[k] = encode_inner(chunk, file);
      }
    });
    qlty::detail::ByteBuffer index;
    qlty::detail::atomic_write(file, qlty::detail::shard_parts(m, inner, index), s_->durable);
  }

  /// The stored bytes of one inner chunk from a storage tensor of its shape (any strides): uncompressed, one copy
  /// into a buffer of its own; else laid out as stored and encoded.
  qlty::detail::InnerBytes encode_inner(const torch::Tensor& chunk, const std::string& file) const {
    const auto& m = s_->meta;
    qlty::detail::InnerBytes b;
    b.empty = false;
    if (m.codecs.empty()) {
      b.size = static_cast<size_t>(m.coded_nbytes());
      b.raw.reset(new uint8_t[b.size]);
      torch::from_blob(b.raw.get(), m.inner_chunks, torch::TensorOptions().dtype(storage_type())).copy_(chunk);
      if (m.big_endian) detail::byteswap(b.raw.get(), m.coded_numel(), static_cast<int>(m.itemsize()));
      b.data = b.raw.get();
      return b;
    }
    const auto c = stored_layout(chunk);
    const auto itemsize = static_cast<size_t>(m.itemsize());
    b.coded = qlty::detail::encode_chain(m.codecs, static_cast<const uint8_t*>(c.data_ptr()),
                                         static_cast<size_t>(c.numel()) * itemsize, itemsize, file);
    b.data = b.coded.data();
    b.size = b.coded.size();
    return b;
  }

  /// The inner chunks of a storage tensor of the shard's shape, encoded. Inner chunks wholly outside the array (when
  /// the shard's grid index `idx` is known) are empty.
  std::vector<qlty::detail::InnerBytes> encode_shard(const torch::Tensor& shard, const int64_t* idx,
                                                     const std::string& file) const {
    const auto& m = s_->meta;
    const int64_t n = m.inner_per_shard();
    std::vector<qlty::detail::InnerBytes> inner(static_cast<size_t>(n));
    const std::vector<int64_t> zero(m.chunks.size(), 0);
    at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const auto origin = inner_origin(zero, k);
        torch::Tensor part = shard;
        bool beyond = false;
        for (size_t a = 0; a < origin.size(); ++a) {
          beyond = beyond || (idx && idx[a] * m.chunks[a] + origin[a] >= m.shape[a]);
          part = part.narrow(static_cast<int64_t>(a), origin[a], m.inner_chunks[a]);
        }
        if (!beyond) inner[k] = encode_inner(part, file);
      }
    });
    return inner;
  }

  /// Axes in reverse order: the permutation between a chunk and its Fortran-order storage.
  std::vector<int64_t> reversed_axes() const {
    std::vector<int64_t> perm(s_->meta.chunks.size());
    for (size_t a = 0; a < perm.size(); ++a) perm[a] = static_cast<int64_t>(perm.size() - 1 - a);
    return perm;
  }

  /// A storage tensor of the chunk shape laid out as stored: contiguous, in the array's order and byte order.
  torch::Tensor stored_layout(const torch::Tensor& chunk) const {
    const auto& m = s_->meta;
    torch::Tensor c = (m.fortran_order ? chunk.permute(reversed_axes()) : chunk).contiguous();
    if (m.big_endian) {
      c = c.clone();
      detail::byteswap(c.data_ptr(), c.numel(), static_cast<int>(m.itemsize()));
    }
    return c;
  }

  /// Calls fn(bytes, size) with the stored bytes of a storage tensor of the chunk shape (uncompressed: the
  /// tensor's own memory when it is laid out as stored).
  template <typename F>
  void with_stored_bytes(const torch::Tensor& chunk, const std::string& file, F&& fn) const {
    if (s_->meta.sharded()) {  // one buffer: staged shard files (write_chunk_file) are rare
      qlty::detail::ByteBuffer index, bytes;
      const auto inner = encode_shard(chunk, nullptr, file);  // the shard's place unknown: every inner chunk
      for (const auto& part : qlty::detail::shard_parts(s_->meta, inner, index)) {
        const auto* p = static_cast<const uint8_t*>(part.data);
        bytes.insert(bytes.end(), p, p + part.size);
      }
      return fn(bytes.data(), bytes.size());
    }
    const auto c = stored_layout(chunk);
    const auto itemsize = static_cast<size_t>(s_->meta.itemsize());
    const auto* raw = static_cast<const uint8_t*>(c.data_ptr());
    const size_t size = static_cast<size_t>(c.numel()) * itemsize;
    if (s_->meta.codecs.empty()) return fn(raw, size);
    const auto bytes = qlty::detail::encode_chain(s_->meta.codecs, raw, size, itemsize, file);
    fn(bytes.data(), bytes.size());
  }

  /// Encodes a storage tensor of the chunk shape and writes it atomically.
  void store_chunk(const std::vector<int64_t>& idx, const torch::Tensor& chunk) const {
    const std::string file = chunk_file(idx);
    if (s_->meta.sharded()) {  // written from the inner chunks' buffers
      qlty::detail::ByteBuffer index;
      const auto inner = encode_shard(chunk, idx.data(), file);
      return qlty::detail::atomic_write(file, qlty::detail::shard_parts(s_->meta, inner, index), s_->durable);
    }
    with_stored_bytes(chunk, file, [&](const void* bytes, size_t size) {
      qlty::detail::atomic_write(file, bytes, size, s_->durable);
    });
  }

  void write_impl(c10::IntArrayRef offset, const torch::Tensor& data, bool take_locks, const char* who) {
    check_box(offset, data.sizes(), who);
    if (data.numel() == 0) return;
    remove_stale_temps_once();
    const auto& m = s_->meta;
    const auto src = to_storage(data, who);
    const auto shape = data.sizes();
    const auto chunks = chunk_range(offset, shape);
    if (take_locks) (void)lock_file();  // create it before the parallel region
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const auto& idx = chunks[k];
        const auto origin = chunk_origin(idx);
        bool full = true, edge = false;
        for (size_t a = 0; a < idx.size(); ++a) {
          const int64_t end = std::min(origin[a] + m.chunks[a], m.shape[a]);
          full = full && offset[a] <= origin[a] && offset[a] + shape[a] >= end;
          edge = edge || end < origin[a] + m.chunks[a];
        }
        const auto part = slice(src, idx, offset, offset, shape);
        std::optional<ChunkLocks> locks;  // so that a whole-chunk write cannot interleave with a merge
        if (take_locks) locks.emplace(*this, std::vector<std::vector<int64_t>>{idx});
        if (m.sharded()) {
          write_shard(idx, src, offset, shape, !full);
          continue;
        }
        if (full && !edge) {
          store_chunk(idx, part);  // the whole chunk comes from `data`
          continue;
        }
        torch::Tensor buf;
        if (!full) {
          auto old = load_chunk(idx);
          buf = old ? old->contiguous() : torch::Tensor();
        }
        if (!buf.defined()) buf = torch::full(m.chunks, storage_fill(), torch::TensorOptions().dtype(storage_type()));
        slice(buf, idx, origin, offset, shape).copy_(part);
        store_chunk(idx, buf);
      }
    });
  }

  std::shared_ptr<State> s_;
};

/// @brief A Zarr group (v2 `.zgroup` or v3 `zarr.json`): a folder of arrays and groups with attributes.
class Group {
 public:
  /// @brief Creates a group at `path`; an existing node there is an error unless `overwrite`.
  static Group create(const std::string& path, const json& attributes = json::object(), int zarr_format = 2,
                      bool overwrite = false) {
    TORCH_CHECK_VALUE(zarr_format == 2 || zarr_format == 3, "qlty::zarr::Group::create(", path,
                      "): zarr_format must be 2 or 3, got ", zarr_format);
    TORCH_CHECK_VALUE(attributes.is_object(), "qlty::zarr::Group::create(", path,
                      "): attributes must be a JSON object, got ", qlty::detail::brief(attributes));
    const std::string p = detail::strip_slashes(path);
    detail::prepare_node_folder(p, overwrite, "Group::create");
    Group g(p, zarr_format);
    g.set_attributes(attributes, zarr_format == 2 && attributes.empty());
    if (zarr_format == 2)
      qlty::detail::atomic_write(qlty::detail::join_path(p, ".zgroup"), json{{"zarr_format", 2}}.dump(4), false);
    return g;
  }

  /// @brief Opens the group at `path`.
  static Group open(const std::string& path) {
    const std::string p = detail::strip_slashes(path);
    const NodeType t = node_type(p);
    if (t == NodeType::Group) return Group(p, qlty::detail::path_exists(qlty::detail::join_path(p, ".zgroup")) ? 2 : 3);
    throw Error("zarr.missing", p + (t == NodeType::Array ? ": is a Zarr array, not a group" : ": no Zarr group here"));
  }

  const std::string& path() const { return path_; }
  int zarr_format() const { return format_; }

  /// @brief The group's attributes.
  json attributes() const {
    if (format_ == 2) return Array::read_attributes(path_);
    const std::string f = qlty::detail::join_path(path_, "zarr.json");
    auto text = qlty::detail::read_file(f, 64 << 20, "metadata file");
    if (!text) throw Error("zarr.missing", f + ": missing");
    const json j = qlty::detail::parse_json(std::string(text->begin(), text->end()), f);
    const auto it = j.find("attributes");
    return it == j.end() ? json::object() : *it;
  }
  /// @brief Replaces the group's attributes (atomically).
  void set_attributes(const json& attributes) { set_attributes(attributes, false); }

  /// @brief The path of a member.
  std::string member_path(const std::string& name) const {
    TORCH_CHECK_VALUE(!name.empty() && name.find("..") == std::string::npos && name[0] != '/', "qlty::zarr::Group(",
                      path_, "): member name must be a relative path without '..', got \"", name, "\"");
    return qlty::detail::join_path(path_, name);
  }
  /// @brief What is stored under `name`.
  NodeType contains(const std::string& name) const { return node_type(member_path(name)); }
  /// @brief Creates an array in the group, with `options` as given (set `options.zarr_format` to the group's
  /// zarr_format() for an array of the same version).
  Array create_array(const std::string& name, ArrayOptions options) const {
    return Array::create(member_path(name), options);
  }
  Array open_array(const std::string& name) const { return Array::open(member_path(name)); }
  Group create_group(const std::string& name, const json& attributes = json::object(), bool overwrite = false) const {
    return create(member_path(name), attributes, format_, overwrite);
  }
  Group open_group(const std::string& name) const { return open(member_path(name)); }

 private:
  Group(std::string path, int format) : path_(std::move(path)), format_(format) {}

  void set_attributes(const json& attributes, bool skip_empty) {
    TORCH_CHECK_VALUE(attributes.is_object(), "qlty::zarr::Group::set_attributes(", path_,
                      "): expected a JSON object, got ", qlty::detail::brief(attributes));
    if (format_ == 2) {
      if (!skip_empty)
        qlty::detail::atomic_write(qlty::detail::join_path(path_, ".zattrs"), attributes.dump(4, ' ', true), false);
      return;
    }
    const json j = {{"zarr_format", 3}, {"node_type", "group"}, {"attributes", attributes}};
    qlty::detail::atomic_write(qlty::detail::join_path(path_, "zarr.json"), j.dump(4, ' ', true), false);
  }

  std::string path_;
  int format_ = 2;
};

/// @brief Names an array's axes as its format can: `dimension_names` in Zarr v3, xarray's `_ARRAY_DIMENSIONS`
/// attribute in v2 (what zarr-python and xarray read). Set `zarr_format` first.
inline void set_axis_names(ArrayOptions& o, const std::vector<std::string>& names) {
  if (o.zarr_format == 3)
    o.dimension_names = names;
  else
    o.attributes["_ARRAY_DIMENSIONS"] = names;
}

/// @brief A group's attributes: `extra`, and the OME-Zarr (NGFF) metadata `ngff` (multiscales, ...) as its version
/// puts it: NGFF 0.5 on Zarr v3 (under `ome`, with the version there), 0.4 on v2 (among the attributes; each
/// multiscales entry carries its version).
inline json with_ngff(json ngff, json extra, int zarr_format) {
  if (zarr_format == 3) {
    ngff["version"] = "0.5";
    extra["ome"] = std::move(ngff);
  } else {
    extra.update(ngff);
  }
  return extra;
}

/// @brief The OME-Zarr (NGFF) metadata among a group's attributes: `attributes["ome"]` in NGFF 0.5 (Zarr v3, its
/// version there), else the attributes themselves (0.4 and before, the version in each multiscales entry).
inline const json& ngff_attributes(const json& attributes) {
  const auto it = attributes.find("ome");
  return it != attributes.end() && it->is_object() ? *it : attributes;
}

}  // namespace qlty::zarr
