#pragma once
// IWYU pragma: private, include <qlty/blockwise.hpp>
// The output of a blockwise run, OUT: the OME-Zarr group and its arrays, `.qlty/manifest.json` (the layout and its
// hash: a resume with other settings is refused), `.qlty/done/<block id>` markers, `.qlty/carry/<block id>` (window
// predictions that another worker computed for a block, see blockwise_executor.hpp), `.qlty/parts/<K>/<i>` (part i
// of K was started) and `.qlty/lock` (held while a process creates or checks the output, so that processes
// starting together create it once).

#include <qlty/blockwise/fingerprint.hpp>
#include <qlty/blockwise/plan.hpp>
#include <qlty/blockwise_types.hpp>
#include <qlty/error.hpp>
#include <qlty/support/byte_io.hpp>
#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/json.hpp>
#include <qlty/zarr.hpp>

#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace qlty::detail {

constexpr const char* kBlockwiseFormat = "qlty.blockwise/1";

inline std::string qlty_folder(const std::string& out) { return join_path(out, ".qlty"); }
inline std::string manifest_path(const std::string& out) { return join_path(qlty_folder(out), "manifest.json"); }
inline std::string done_folder(const std::string& out) { return join_path(qlty_folder(out), "done"); }
inline std::string carry_folder(const std::string& out) { return join_path(qlty_folder(out), "carry"); }
inline std::string parts_folder(const std::string& out) { return join_path(qlty_folder(out), "parts"); }

/// The manifest of an output, checked: an object with the keys its readers use, of their types (an Error
/// `zarr.format` naming the file and the key otherwise); nullopt when there is none.
inline std::optional<nlohmann::json> read_manifest(const std::string& out) {
  const std::string f = manifest_path(out);
  auto text = read_file(f, 16 << 20, "manifest");
  if (!text) return std::nullopt;
  auto m = parse_json(std::string(text->begin(), text->end()), f);
  as_string(key(m, "format", f), "format", f);
  as_string(key(m, "hash", f), "hash", f);
  if (!key(m, "layout", f).is_object()) bad_meta(f, "layout must be an object, got " + brief(m.at("layout")));
  if (as_int(key(m, "out_channels", f), "out_channels", f) < 1) bad_meta(f, "out_channels must be >= 1");
  if (as_int(key(m, "blocks_total", f), "blocks_total", f) < 0) bad_meta(f, "blocks_total must be >= 0");
  return m;
}

/// A window's prediction, or the part of it from `origin` on (what a block passes to the next block of its column).
struct PredictionPart {
  std::array<int64_t, 3> start;   // window start
  std::array<int64_t, 3> origin;  // first voxel of `pred`
  torch::Tensor pred;             // (C', ...) float32
};

/// The output folder of one run: created (or checked, on resume) once, then written block by block.
class BlockwiseOutput {
 public:
  /// Creates the output or checks an existing one against `plan` (a difference is an Error `checkpoint` naming
  /// each setting). With `create` false, only opens what another process created (the ranks of a distributed run).
  BlockwiseOutput(std::string path, const BlockPlan& plan, const BlockInput& input, const BlockwiseOptions& o,
                  bool create = true)
      : path_(std::move(path)), plan_(plan), durable_(o.durable) {
    using json = nlohmann::json;
    const json layout = plan_layout(plan, input, o);
    const std::string dumped = layout.dump();
    const std::string hash = hex32(crc32c(reinterpret_cast<const uint8_t*>(dumped.data()), dumped.size()));
    if (!input.source().empty() && paths_overlap(path_, input.source()))
      throw Error("overlap", path_ + ": the output would be the input " + input.source() +
                                 ", hold it or lie inside it (after resolving links); choose another output");
    if (create) prepare_folder(o.overwrite);
    make_dirs(qlty_folder(path_));
    {
      // Processes started together: the first creates the manifest, the others find and check it.
      LockFile lock(join_path(qlty_folder(path_), "lock"));
      lock.lock(0);
      const auto existing = read_manifest(path_);
      if (existing) {
        check(*existing, layout, hash);
        remove_stale_temps(path_);  // what a killed run left
      } else {
        if (!create) throw Error("zarr.missing", path_ + ": no manifest; the first rank should have created it");
        const json manifest = {{"format", kBlockwiseFormat},
                               {"hash", hash},
                               {"layout", layout},
                               {"out_channels", plan.out_channels},
                               {"blocks_total", plan.total()}};
        atomic_write(manifest_path(path_), manifest.dump(2), o.durable);
      }
      make_dirs(done_folder(path_));
      make_group(layout, input.name(), o);  // idempotent: finishes a setup that was interrupted after the manifest
    }
  }

  const std::string& path() const { return path_; }

  /// The marker file of block i (run order).
  std::string marker(int64_t i) const { return join_path(done_folder(path_), std::to_string(plan_.id(i))); }
  bool is_done(int64_t i) const { return path_exists(marker(i)); }

  /// Writes block i's results (CPU (C', *block) in 3D form, of the output dtype; labels int32 (1, *block)), padding
  /// cropped off, flushes them with `durable`, then marks the block done and drops its carry file.
  void write_block(int64_t i, const torch::Tensor& mean, const torch::Tensor& sd, const torch::Tensor& labels) {
    const auto [n, b] = plan_.at(i);
    const auto b0 = plan_.box(b).lo;
    std::vector<int64_t> off = {n, 0};
    for (int a = 3 - plan_.spatial_dims; a < 3; ++a) off.push_back(b0[a]);  // padded axes are one block: b0 = 0 there
    auto out = [&](const torch::Tensor& v) {
      auto c = v;
      for (int a = 0; a < 3; ++a)  // padding cropped off
        if (plan_.image[a] != plan_.grid.shape[a]) c = c.narrow(1 + a, plan_.before[a], plan_.image[a]);
      c = c.unsqueeze(0);
      return plan_.spatial_dims == 2 ? c.squeeze(2) : c;
    };
    if (std_arr_ && sd.defined()) std_arr_->write(off, out(sd));
    if (label_arr_ && labels.defined()) label_arr_->write(off, out(labels));
    if (mean_arr_ && mean.defined()) mean_arr_->write(off, out(mean));
    if (durable_) sync_folder(path_, true);
    atomic_write(marker(i), std::string(), false);
    ::unlink(carry_path(i).c_str());
  }

  /// Records that part p of P started on this output (for `blockwise_status`).
  void record_part(int64_t p, int64_t P) {
    if (P > 1) atomic_write(join_path(join_path(parts_folder(path_), std::to_string(P)), std::to_string(p)), "", false);
  }

  /// Removes the carry files and the lock files (no process writes a complete output) when every block is done;
  /// returns whether they are. Parts that finish together each see a complete output: the cleanup runs under the
  /// output's lock, and what another part already removed counts as removed.
  bool finish_if_complete() {
    for (int64_t i = 0; i < plan_.total(); ++i)
      if (!is_done(i)) return false;
    LockFile lock(join_path(qlty_folder(path_), "lock"));
    lock.lock(0);
    remove_tree(carry_folder(path_));
    ::unlink(join_path(qlty_folder(path_), "lock").c_str());
    for (const char* array : {"0", "std", "labels/argmax/0"})  // the lock files of the output arrays
      ::unlink(zarr::Array::lock_path(join_path(path_, array)).c_str());
    return true;
  }

  // Carry files: the parts, inside block i, of window predictions that the worker of block i's successor computed
  // (the rows they share). Format: "QLTYCRY1", count, C', then per part start[3], origin[3], extent[3] (int64), the
  // float32 data of every part, and a CRC32C of all of it; integers little-endian (support/byte_io.hpp). Written
  // atomically; anything else in its place (a file that does not match what the reader expects byte for byte in its
  // header and checksum, of another size, a folder, a FIFO) is ignored: the reader computes the windows itself, and the
  // writer replaces it.
  std::string carry_path(int64_t i) const { return join_path(carry_folder(path_), std::to_string(plan_.id(i))); }

  void write_carry(int64_t i, const std::vector<PredictionPart>& parts) const {
    std::vector<int64_t> head = {0, static_cast<int64_t>(parts.size()), plan_.pred_channels()};  // 0: the magic
    size_t floats = 0;
    for (const auto& p : parts) {
      head.insert(head.end(), p.start.begin(), p.start.end());
      head.insert(head.end(), p.origin.begin(), p.origin.end());
      for (int a = 0; a < 3; ++a) head.push_back(p.pred.size(a + 1));
      floats += static_cast<size_t>(p.pred.numel());
    }
    std::vector<uint8_t> bytes(head.size() * 8 + floats * 4 + 4);
    std::memcpy(bytes.data(), "QLTYCRY1", 8);
    for (size_t k = 1; k < head.size(); ++k) put_le64(bytes.data() + 8 * k, static_cast<uint64_t>(head[k]));
    size_t at = head.size() * 8;
    for (const auto& p : parts) {
      auto c = p.pred.to(torch::kCPU).contiguous();
      std::memcpy(bytes.data() + at, c.data_ptr<float>(), c.numel() * 4);
      at += c.numel() * 4;
    }
    put_le32(bytes.data() + at, crc32c(bytes.data(), at));
    struct stat st;
    if (::lstat(carry_path(i).c_str(), &st) == 0 && !S_ISREG(st.st_mode)) remove_tree(carry_path(i));
    atomic_write(carry_path(i), bytes.data(), bytes.size(), false);
  }

  /// The carry file of block i when it holds exactly the parts `want` (start, origin, extent; pred undefined).
  std::optional<std::vector<PredictionPart>> read_carry(int64_t i, std::vector<PredictionPart> want) const {
    size_t floats = 0;
    for (const auto& p : want) floats += static_cast<size_t>(p.pred.numel());
    const size_t head = 3 + 9 * want.size(), size = head * 8 + floats * 4 + 4;
    std::vector<uint8_t> bytes;
    struct stat st;
    if (::lstat(carry_path(i).c_str(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<size_t>(st.st_size) != size)
      return std::nullopt;
    std::optional<size_t> got;
    try {
      got = read_file_into(carry_path(i), bytes, size, "carry file");
    } catch (const Error&) {  // replaced since the lstat (by something else than a carry file of this size)
      return std::nullopt;
    }
    if (!got || *got != size) return std::nullopt;
    if (get_le32(bytes.data() + size - 4) != crc32c(bytes.data(), size - 4) ||
        std::memcmp(bytes.data(), "QLTYCRY1", 8) != 0)
      return std::nullopt;
    std::vector<int64_t> h(head);
    for (size_t k = 1; k < head; ++k) h[k] = static_cast<int64_t>(get_le64(bytes.data() + 8 * k));
    if (h[1] != static_cast<int64_t>(want.size()) || h[2] != plan_.pred_channels()) return std::nullopt;
    size_t at = head * 8;
    for (size_t k = 0; k < want.size(); ++k) {
      auto& p = want[k];
      const int64_t* e = h.data() + 3 + 9 * k;
      for (int a = 0; a < 3; ++a)
        if (e[a] != p.start[a] || e[3 + a] != p.origin[a] || e[6 + a] != p.pred.size(a + 1)) return std::nullopt;
      auto t = torch::empty(p.pred.sizes(), torch::kFloat);
      std::memcpy(t.data_ptr<float>(), bytes.data() + at, t.numel() * 4);
      at += t.numel() * 4;
      p.pred = t;
    }
    return want;
  }

 private:
  // A new output may replace a qlty output or a Zarr node (with overwrite), never a foreign folder; a folder that
  // holds only `.qlty` is an output another process is creating right now.
  void prepare_folder(bool overwrite) {
    const bool ours = read_manifest(path_).has_value();
    if (ours && overwrite) {
      remove_tree(path_);
    } else if (!ours && path_exists(path_)) {
      if (!is_directory(path_)) throw Error("zarr.exists", path_ + ": a file exists here");
      bool empty = true;
      for (const auto& f : list_dir(path_)) empty = empty && f == ".qlty";
      if (!empty) {
        const bool zarr_node = zarr::node_type(path_) != zarr::NodeType::None;
        if (!(overwrite && zarr_node))
          throw Error("zarr.exists", path_ + (zarr_node ? ": a Zarr node that is not a qlty output exists here (pass "
                                                          "overwrite to replace it)"
                                                        : ": a non-empty folder that is not a Zarr node exists here"));
        remove_tree(path_);
      }
    }
  }

  void check(const nlohmann::json& existing, const nlohmann::json& layout, const std::string& hash) const {
    if (existing.value("format", std::string()) == kBlockwiseFormat && existing.value("hash", std::string()) == hash)
      return;
    const nlohmann::json old_layout = existing.value("layout", nlohmann::json::object());
    std::vector<Error::Mismatch> differ;
    for (auto it = layout.begin(); it != layout.end(); ++it) {
      const auto o = old_layout.find(it.key());
      if (o == old_layout.end() || *o != it.value())
        differ.push_back({it.key(), o == old_layout.end() ? "none" : brief(*o, 300), it.value().dump()});
    }
    if (old_layout.is_object())
      for (auto it = old_layout.begin(); it != old_layout.end(); ++it)
        if (!layout.contains(it.key())) differ.push_back({it.key(), brief(it.value(), 300), "none"});
    std::string diff;
    for (const auto& d : differ)
      diff += (diff.empty() ? "" : "; ") + d.key + ": " + d.stored + " there, " + d.requested + " now";
    throw Error("checkpoint",
                path_ + ": this output was written with other settings (" +
                    (diff.empty() ? std::string("another manifest format") : diff) +
                    "); rerun with the same settings to resume, or choose another output or overwrite",
                std::move(differ));
  }

  // The group's NGFF metadata and the arrays (open_or_create: the same settings or an error): OME-Zarr 0.4 on Zarr v2,
  // or OME-Zarr 0.5 on Zarr v3 (the NGFF keys under `attributes.ome`, the axes as the arrays' dimension_names).
  void make_group(const nlohmann::json& layout, const std::string& input_name, const BlockwiseOptions& o) {
    using json = nlohmann::json;
    const int D = plan_.spatial_dims;
    const bool v3 = o.zarr_format == 3;
    json axes = json::array({{{"name", "t"}, {"type", "time"}}, {{"name", "c"}, {"type", "channel"}}});
    std::vector<std::string> names = {"t", "c"};
    for (int a = 3 - D; a < 3; ++a) {
      names.emplace_back(1, "zyx"[a]);
      axes.push_back({{"name", names.back()}, {"type", "space"}});
    }
    auto multiscales = [&](const std::string& name) {
      json m = {{"name", name},
                {"axes", axes},
                {"datasets",
                 json::array({{{"path", "0"},
                               {"coordinateTransformations",
                                json::array({{{"type", "scale"}, {"scale", std::vector<double>(D + 2, 1.0)}}})}}})}};
      if (!v3) m["version"] = "0.4";
      return json::array({m});
    };
    // A group with NGFF attributes `ngff` (0.4: among the attributes; 0.5: under `ome`, with the version) and `extra`.
    auto write_group = [&](const std::string& dir, const json& ngff, const json& extra) {
      make_dirs(dir);
      const json attributes = zarr::with_ngff(ngff, extra, o.zarr_format);
      if (v3) {
        const json group = {{"zarr_format", 3}, {"node_type", "group"}, {"attributes", attributes}};
        atomic_write(join_path(dir, "zarr.json"), group.dump(4, ' ', true), false);
        return;
      }
      atomic_write(join_path(dir, ".zgroup"), json{{"zarr_format", 2}}.dump(4), false);
      atomic_write(join_path(dir, ".zattrs"), attributes.dump(4, ' ', true), false);
    };
    json qlty_attrs = o.attributes;
    qlty_attrs["layout"] = layout;
    qlty_attrs["input"] = input_name;
    write_group(path_, {{"multiscales", multiscales("prediction")}}, {{"qlty", qlty_attrs}});
    std::vector<int64_t> out_shape = {plan_.images, plan_.out_channels}, out_chunks = {1, 1}, out_shards = {1, 1};
    for (int a = 3 - D; a < 3; ++a) {
      out_shape.push_back(plan_.image[a]);
      out_chunks.push_back(std::min(plan_.chunk[a], plan_.image[a]));
      const int64_t covering = (plan_.image[a] + out_chunks.back() - 1) / out_chunks.back() * out_chunks.back();
      out_shards.push_back(std::min(plan_.shard[a], covering));  // whole chunks, as the array needs
    }
    auto make_array = [&](const std::string& path, zarr::DataType dt, int64_t channels) {
      zarr::ArrayOptions ao(out_shape, plan_.sharded ? out_shards : out_chunks, dt);
      ao.shape[1] = channels;
      ao.codecs = o.codecs;
      ao.zarr_format = o.zarr_format;
      if (plan_.sharded) ao.inner_chunks = out_chunks;
      zarr::set_axis_names(ao, names);
      return zarr::Array::open_or_create(path, ao);
    };
    const auto dt = zarr::data_type(o.output_dtype);
    if (o.write_mean) mean_arr_ = make_array(join_path(path_, "0"), dt, plan_.out_channels);
    if (o.write_std) std_arr_ = make_array(join_path(path_, "std"), dt, plan_.out_channels);
    if (o.write_argmax) {
      const std::string labels = join_path(path_, "labels"), am = join_path(labels, "argmax");
      write_group(labels, {{"labels", json::array({"argmax"})}}, json::object());
      json image_label = {{"source", {{"image", "../../"}}}};
      if (!v3) image_label["version"] = "0.4";
      write_group(am, {{"multiscales", multiscales("argmax")}, {"image-label", image_label}}, json::object());
      label_arr_ =
          make_array(join_path(am, "0"), plan_.out_channels <= 256 ? zarr::DataType::UInt8 : zarr::DataType::Int32, 1);
    }
  }

  std::string path_;
  BlockPlan plan_;
  bool durable_ = true;
  std::optional<zarr::Array> mean_arr_, std_arr_, label_arr_;
};

/// The plan's block order rebuilt from a checked manifest (for status: markers are block ids, parts are run-order
/// ranges); an Error `zarr.format` naming `file` when the layout does not describe one that matches blocks_total.
inline BlockPlan plan_from_manifest(const nlohmann::json& m, const std::string& file) {
  const auto& l = key(m, "layout", file);
  const auto shape = int_list(key(l, "input_shape", file), "layout.input_shape", file);
  const auto block = int_list(key(l, "block", file), "layout.block", file);
  if ((shape.size() != 4 && shape.size() != 5) || block.size() + 2 != shape.size())
    bad_meta(file, "layout.input_shape " + brief(l.at("input_shape")) + " and layout.block " + brief(l.at("block")) +
                       " do not describe 2 or 3 spatial axes");
  BlockPlan p;
  p.spatial_dims = static_cast<int>(block.size());
  p.slab_axis = p.spatial_dims == 3 ? 0 : 1;
  p.images = shape[0];
  int64_t total = p.images;
  for (int a = 0; a < p.spatial_dims; ++a) {
    if (block[a] < 1 || shape[2 + a] < 1 || p.images < 1)
      bad_meta(file, "layout sizes must be >= 1, got input_shape " + brief(l.at("input_shape")) + ", block " +
                         brief(l.at("block")));
    p.nblocks[3 - p.spatial_dims + a] = shape[2 + a] / block[a] + (shape[2 + a] % block[a] != 0);
    total = checked_mul(total, p.nblocks[3 - p.spatial_dims + a], "the number of blocks", file);
  }
  if (total != m.at("blocks_total").get<int64_t>())
    bad_meta(file, "blocks_total is " + std::to_string(m.at("blocks_total").get<int64_t>()) + ", but the layout has " +
                       std::to_string(total) + " blocks");
  return p;
}

}  // namespace qlty::detail
