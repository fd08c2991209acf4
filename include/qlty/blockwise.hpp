#pragma once
/// @file blockwise.hpp
/// @brief Sliding-window inference over whole images and volumes that need not fit in memory: `infer_blockwise`
/// runs a model over every window of an input and writes the blended result to an OME-Zarr group, block by block,
/// resumably.
///
/// The output is split into blocks of whole chunks. Each block is computed by one owner: every window that
/// touches the block is run through the model (in batches, on the model's device), blended into the block's
/// accumulators in memory, and the block's chunks are written once, whole, atomically; then a done marker is
/// written. Only one block (plus the input halo its windows read) is in memory. Rerunning the same call skips the
/// blocks marked done; a manifest with a hash of the layout refuses a resume with other settings.
///
/// Blocks are slabs along the outermost spatial axis (Z, or Y for 2D) when memory allows. Windows that straddle
/// the edge between two consecutive slabs are computed once: their predictions for the next slab are carried
/// over. Every pixel sums its windows in the global window order, so the result equals the in-memory quilt's
/// stitch of the same windows (to float rounding) whatever the block size; and windows are batched by window
/// row within a block, so a resumed run writes the same bytes as an uninterrupted one.
///
/// Output folder OUT:
/// - `OUT/0`: the blended prediction (N, C', *S) float32; `OUT/.zattrs` holds NGFF 0.4 `multiscales` metadata
///   (axes t, c, [z,] y, x: NGFF 0.4 has no other slot for the image axis N than "time").
/// - `OUT/std`: with `write_std`, the spread of the overlapping predictions, sqrt(E[x^2] - E[x]^2) (weighted).
/// - `OUT/labels/argmax/0`: with `write_argmax`, the channel of the largest blended prediction per pixel
///   (N, 1, *S), an NGFF label image.
/// - `OUT/.qlty/manifest.json` (the layout and its hash) and `OUT/.qlty/done/<block>` (one empty file per block).

#include <qlty/detail/cpu_kernels.hpp>
#include <qlty/detail/fs.hpp>
#include <qlty/detail/zarr_codecs.hpp>
#include <qlty/error.hpp>
#include <qlty/geometry.hpp>
#include <qlty/kernels.hpp>
#include <qlty/zarr.hpp>

#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qlty {

/// @brief A model for blockwise runs: windows (B, C, *W) float32 on the run's device -> predictions
/// (B, C', *W), floating point. A TorchScript module, a torch::nn module or a lambda.
using BlockModel = std::function<torch::Tensor(const torch::Tensor&)>;

/// @brief The input of a blockwise run, (N, C, *S) with 2 or 3 spatial axes, read one box at a time.
class BlockInput {
 public:
  /// @brief Reads the box [offset, offset + shape) as a CPU tensor of any dtype (a view is fine).
  using Reader = std::function<torch::Tensor(const std::vector<int64_t>& offset, const std::vector<int64_t>& shape)>;

  /// @brief An input of `shape` read by `read`; `name` goes into messages.
  BlockInput(std::vector<int64_t> shape, Reader read, std::string name)
      : shape_(std::move(shape)), read_(std::move(read)), name_(std::move(name)) {
    TORCH_CHECK_VALUE(shape_.size() == 4 || shape_.size() == 5, "qlty::BlockInput(", name_,
                      "): the input must be 4-D (N, C, Y, X) or 5-D (N, C, Z, Y, X), got shape ",
                      c10::IntArrayRef(shape_));
    for (auto s : shape_)
      TORCH_CHECK_VALUE(s >= 1, "qlty::BlockInput(", name_, "): every size must be >= 1, got shape ",
                        c10::IntArrayRef(shape_));
  }

  /// @brief A tensor (N, C, *S) of any dtype, on any device; read as views, without copies. `name` goes into
  /// messages (default: the tensor's shape).
  static BlockInput from_tensor(const torch::Tensor& x, const std::string& name = "") {
    TORCH_CHECK_VALUE(x.defined(), "qlty::BlockInput::from_tensor: x is an undefined tensor");
    auto t = x.detach();
    return BlockInput(
        t.sizes().vec(),
        [t](const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
          auto v = t;
          for (size_t a = 0; a < shape.size(); ++a) v = v.narrow(static_cast<int64_t>(a), offset[a], shape[a]);
          return v;
        },
        name.empty() ? c10::str("tensor of shape ", x.sizes()) : name);
  }

  /// @brief A Zarr array (N, C, *S), read chunk-parallel.
  static BlockInput from_zarr(const zarr::Array& array) {
    return BlockInput(
        array.shape(),
        [array](const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
          return array.read(offset, shape);
        },
        array.path());
  }

  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& name() const { return name_; }
  /// @brief Spatial axes: 2 or 3.
  int spatial_dims() const { return static_cast<int>(shape_.size()) - 2; }

  /// @brief The box [offset, offset + shape); a reader that returns another shape is an error.
  torch::Tensor read(const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) const {
    auto t = read_(offset, shape);
    if (!t.defined() || t.sizes() != c10::IntArrayRef(shape))
      throw Error("io", name_ + ": reading the box at " + c10::str(c10::IntArrayRef(offset)) + " of shape " +
                            c10::str(c10::IntArrayRef(shape)) + " returned " +
                            (t.defined() ? "shape " + c10::str(t.sizes()) : std::string("no tensor")));
    return t;
  }

 private:
  std::vector<int64_t> shape_;
  Reader read_;
  std::string name_;
};

/// @brief Progress of a blockwise run, passed to BlockwiseOptions::progress after every batch and block.
struct BlockwiseProgress {
  int64_t blocks_total = 0;     ///< blocks of the whole output
  int64_t blocks_done = 0;      ///< blocks done, including those done by earlier runs
  int64_t windows_planned = 0;  ///< windows this run computes when it runs to the end
  int64_t windows_done = 0;     ///< windows this run has computed so far
  double seconds = 0;           ///< since this run started
};

/// @brief Settings of a blockwise run.
struct BlockwiseOptions {
  PerAxis window = 64;                 ///< window per spatial axis (one number or one per axis)
  PerAxis step = 48;                   ///< step per spatial axis
  PerAxis border = 0;                  ///< border per spatial axis (0: none)
  double border_weight = 0.1;          ///< weight of border pixels when blending, in [0, 1]
  int64_t batch_size = 8;              ///< windows per model call
  torch::Device device = torch::kCPU;  ///< where windows go for the model, and where blending happens
  std::vector<int64_t> chunks;         ///< output chunk per spatial axis; empty: 64 (3D) or 256 (2D), clipped
  std::vector<int64_t> block;          ///< block per spatial axis, rounded up to whole chunks; empty: from block_bytes
  int64_t block_bytes = int64_t(1) << 30;  ///< memory for one block's input halo and accumulators (automatic blocks)
  bool write_mean = true;                  ///< write the blended prediction (`OUT/0`)
  bool write_std = false;                  ///< write the spread of overlapping predictions (`OUT/std`)
  bool write_argmax = false;               ///< write the argmax over channels (`OUT/labels/argmax/0`)
  std::vector<zarr::Codec> codecs = {zarr::Codec::blosc()};  ///< compression of the outputs
  std::string model_id;  ///< names the model in the manifest (e.g. its file's checksum); a resume must match
  bool overwrite =
      false;             ///< replace an existing output folder (only a qlty output or a Zarr node) instead of resuming
  bool durable = true;   ///< flush each block to the device before marking it done (survives power loss)
  bool prefetch = true;  ///< read the next block's input while the current one computes
  int64_t max_blocks = -1;  ///< stop after computing this many blocks (-1: all); the rest stays for a rerun
  nlohmann::json attributes = nlohmann::json::object();    ///< extra attributes for the output group (`qlty`)
  std::function<void(const BlockwiseProgress&)> progress;  ///< called after every batch and block
};

/// @brief What a blockwise run did.
struct BlockwiseSummary {
  int64_t blocks_total = 0;      ///< blocks of the output
  int64_t blocks_skipped = 0;    ///< done by earlier runs
  int64_t blocks_computed = 0;   ///< done by this run
  int64_t windows_grid = 0;      ///< windows of the whole grid (N * windows per image)
  int64_t windows_computed = 0;  ///< model evaluations of windows by this run
  int64_t out_channels = 0;      ///< C' of the model
  std::vector<int64_t> block;    ///< the block shape used (spatial)
  std::vector<int64_t> chunks;   ///< the output chunk shape (spatial)
  double seconds = 0;
  bool complete = false;  ///< every block is done
};

/// @brief What an output folder holds: its manifest and how many blocks are done.
struct BlockwiseStatus {
  nlohmann::json manifest;
  int64_t blocks_total = 0;
  int64_t blocks_done = 0;
};

namespace detail {

constexpr const char* kBlockwiseFormat = "qlty.blockwise/1";

inline std::string manifest_path(const std::string& out) { return join_path(join_path(out, ".qlty"), "manifest.json"); }
inline std::string done_folder(const std::string& out) { return join_path(join_path(out, ".qlty"), "done"); }

inline std::optional<nlohmann::json> read_manifest(const std::string& out) {
  const std::string f = manifest_path(out);
  auto text = read_file(f, 16 << 20, "manifest");
  if (!text) return std::nullopt;
  return parse_json(std::string(text->begin(), text->end()), f);
}

inline std::string hex32(uint32_t v) {
  char b[9];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

/// The blocks of one run in 3D form (2D inputs have a Z axis of size 1) and their order: within an image and a
/// column of blocks (fixed block coordinates on the other axes), the slab axis A runs fastest.
struct BlockPlan {
  Grid3 g;
  int A = 0;  // slab axis in 3D form: 0 (Z) for volumes, 1 (Y) for images
  int64_t N = 0, C = 0, Cout = 0;
  std::array<int64_t, 3> block{1, 1, 1}, nblocks{1, 1, 1};
  Cover cover[3];

  int64_t per_image() const { return nblocks[0] * nblocks[1] * nblocks[2]; }
  int64_t total() const { return N * per_image(); }
  /// (n, block coordinates) of the i-th block in run order.
  std::pair<int64_t, std::array<int64_t, 3>> at(int64_t i) const {
    const int64_t n = i / per_image();
    int64_t r = i % per_image();
    std::array<int64_t, 3> b{};
    b[A] = r % nblocks[A];
    r /= nblocks[A];
    for (int a = 2; a >= 0; --a) {
      if (a == A) continue;
      b[a] = r % nblocks[a];
      r /= nblocks[a];
    }
    return {n, b};
  }
  /// The marker name of a block: its position in (n, z, y, x) lexicographic order.
  int64_t id(int64_t n, const std::array<int64_t, 3>& b) const {
    return ((n * nblocks[0] + b[0]) * nblocks[1] + b[1]) * nblocks[2] + b[2];
  }
  void box(const std::array<int64_t, 3>& b, std::array<int64_t, 3>& b0, std::array<int64_t, 3>& b1) const {
    for (int a = 0; a < 3; ++a) {
      b0[a] = b[a] * block[a];
      b1[a] = std::min(g.shape[a], b0[a] + block[a]);
    }
  }
};

inline std::string describe_block(const BlockPlan& p, int64_t n, const std::array<int64_t, 3>& b) {
  std::array<int64_t, 3> b0{}, b1{};
  p.box(b, b0, b1);
  static const char* names = "zyx";
  std::string s = "block " + std::to_string(p.id(n, b)) + " (image " + std::to_string(n);
  for (int a = p.A == 0 ? 0 : 1; a < 3; ++a)
    s += std::string(", ") + names[a] + " " + std::to_string(b0[a]) + ".." + std::to_string(b1[a]);
  return s + ")";
}

/// A window's prediction, or the part of it from `origin` on (what a slab carries to the next slab of its column).
struct PredictionPart {
  std::array<int64_t, 3> start;   // window start
  std::array<int64_t, 3> origin;  // first voxel of `pred`
  torch::Tensor pred;             // (C', ...)
};

}  // namespace detail

/// @brief The manifest and done count of a blockwise output; an Error (`zarr.missing`) where there is none.
inline BlockwiseStatus blockwise_status(const std::string& output) {
  auto m = detail::read_manifest(output);
  if (!m) throw Error("zarr.missing", output + ": not a qlty inference output (no .qlty/manifest.json)");
  BlockwiseStatus s;
  s.manifest = *m;
  s.blocks_total = m->value("blocks_total", int64_t(0));
  const std::string done = detail::done_folder(output);
  if (detail::is_directory(done))
    for (const auto& f : detail::list_dir(done))
      if (!f.empty() && f[0] != '.') ++s.blocks_done;
  return s;
}

/// @brief Runs `model` over every window of `input` and writes the blended result to the OME-Zarr group `output`
/// (see the file's notes). Rerunning with the same settings resumes; other settings are an Error (`checkpoint`).
inline BlockwiseSummary infer_blockwise(const BlockModel& model, const BlockInput& input, const std::string& output,
                                        const BlockwiseOptions& options) {
  using namespace detail;
  using json = nlohmann::json;
  const auto t_start = std::chrono::steady_clock::now();
  const char* who = "qlty::infer_blockwise";
  const int D = input.spatial_dims();
  const auto& shape = input.shape();
  TORCH_CHECK_VALUE(options.batch_size >= 1, who, ": batch_size must be >= 1, got ", options.batch_size);
  TORCH_CHECK_VALUE(options.block_bytes >= 1, who, ": block_bytes must be >= 1, got ", options.block_bytes);
  TORCH_CHECK_VALUE(options.max_blocks >= -1, who, ": max_blocks must be >= -1, got ", options.max_blocks);
  TORCH_CHECK_VALUE(options.write_mean || options.write_std || options.write_argmax, who,
                    ": nothing to write: write_mean, write_std and write_argmax are all off");
  TORCH_CHECK_VALUE(model != nullptr, who, ": model is empty");
  TORCH_CHECK_VALUE(!output.empty(), who, ": output path is empty");

  BlockPlan plan;
  plan.N = shape[0];
  plan.C = shape[1];
  plan.A = D == 3 ? 0 : 1;
  std::array<int64_t, 3> spatial{1, 1, 1};
  for (int a = 0; a < D; ++a) spatial[3 - D + a] = shape[2 + a];
  if (D == 2)
    plan.g = Geometry<2>({spatial[1], spatial[2]}, options.window, options.step, options.border, options.border_weight)
                 .grid3();
  else
    plan.g = Geometry<3>(spatial, options.window, options.step, options.border, options.border_weight).grid3();
  const Grid3& g = plan.g;
  for (int a = 0; a < 3; ++a) plan.cover[a] = cover(g, a);

  // Output chunks and blocks (3D form).
  std::array<int64_t, 3> chunk{1, 1, 1};
  auto spatial_arg = [&](const std::vector<int64_t>& v, const char* name, std::array<int64_t, 3>& out) {
    if (v.empty()) return false;
    TORCH_CHECK_VALUE(v.size() == 1 || v.size() == static_cast<size_t>(D), who, ": ", name, " must have 1 or ", D,
                      " entries, got ", v.size(), " (", c10::IntArrayRef(v), ")");
    for (int a = 0; a < D; ++a) {
      out[3 - D + a] = v.size() == 1 ? v[0] : v[a];
      TORCH_CHECK_VALUE(out[3 - D + a] >= 1, who, ": ", name, " must be >= 1 on every axis, got ", c10::IntArrayRef(v));
    }
    return true;
  };
  if (!spatial_arg(options.chunks, "chunks", chunk))
    for (int a = 3 - D; a < 3; ++a) chunk[a] = D == 3 ? 64 : 256;
  for (int a = 0; a < 3; ++a) chunk[a] = std::min(chunk[a], g.shape[a]);
  auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };

  // The model's channel count: from the manifest when resuming, else from one window.
  const auto existing = read_manifest(output);
  auto probe_channels = [&]() -> int64_t {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> off(shape.size(), 0), ext(shape.begin(), shape.end());
    ext[0] = 1;
    for (int a = 0; a < D; ++a) ext[2 + a] = g.window[3 - D + a];
    auto w = input.read(off, ext).to(options.device, torch::kFloat).contiguous();
    torch::Tensor y;
    try {
      y = model(w);
    } catch (const std::exception& e) {
      throw Error("model",
                  output + ": the model failed on the first window (shape " + c10::str(w.sizes()) + "): " + e.what());
    }
    const bool ok = y.defined() && y.dim() == D + 2 && y.size(0) == 1 && y.sizes().slice(2) == w.sizes().slice(2);
    if (!ok) {
      std::string want = "[1, C'";
      for (auto v : w.sizes().slice(2)) want += ", " + std::to_string(v);
      throw Error("model", output + ": the model returned " +
                               (y.defined() ? "shape " + c10::str(y.sizes()) : std::string("no tensor")) +
                               " for one window of shape " + c10::str(w.sizes()) + "; expected " + want + "]");
    }
    return y.size(1);
  };
  const bool resuming = existing && !options.overwrite && existing->contains("out_channels");
  plan.Cout = resuming ? existing->at("out_channels").get<int64_t>() : probe_channels();
  TORCH_CHECK_VALUE(plan.Cout >= 1, who, ": the model returns ", plan.Cout, " channels");

  if (!spatial_arg(options.block, "block", plan.block)) {
    // Slabs along A with whole other axes, thinner (then split on the next axes) until the block's input halo,
    // accumulators and carried predictions fit in block_bytes.
    for (int a = 0; a < 3; ++a) plan.block[a] = round_up(g.shape[a], chunk[a]);
    auto bytes = [&](const std::array<int64_t, 3>& b) {
      double halo = double(plan.C), acc = double(plan.Cout * (options.write_std ? 2 : 1) + 1),
             carry = double(plan.Cout) * double(g.window[plan.A]);
      for (int a = 0; a < 3; ++a) {
        const double h = double(std::min(g.shape[a], b[a] + g.window[a]));
        halo *= h;
        acc *= double(std::min(g.shape[a], b[a]));
        if (a != plan.A) carry *= h;
      }
      return 4.0 * (halo + acc + carry);
    };
    for (int a = plan.A; a < 3; ++a)
      while (bytes(plan.block) > double(options.block_bytes) && plan.block[a] > chunk[a])
        plan.block[a] = round_up((plan.block[a] + 1) / 2, chunk[a]);
  } else {
    for (int a = 0; a < 3; ++a) plan.block[a] = round_up(std::min(plan.block[a], g.shape[a]), chunk[a]);
  }
  for (int a = 0; a < 3; ++a) plan.nblocks[a] = (g.shape[a] + plan.block[a] - 1) / plan.block[a];

  // The layout, its hash, and the manifest.
  auto spatial_vec = [&](const std::array<int64_t, 3>& v) {
    return std::vector<int64_t>(v.begin() + (3 - D), v.end());
  };
  const json layout = {
      {"input_shape", shape},
      {"out_channels", plan.Cout},
      {"window", spatial_vec(g.window)},
      {"step", spatial_vec(g.step)},
      {"border", spatial_vec(g.border)},
      {"border_weight", options.border_weight},
      {"chunks", spatial_vec(chunk)},
      {"block", spatial_vec(plan.block)},
      {"outputs", {{"mean", options.write_mean}, {"std", options.write_std}, {"argmax", options.write_argmax}}},
      {"model", options.model_id}};
  const std::string hash = hex32(crc32c(reinterpret_cast<const uint8_t*>(layout.dump().data()), layout.dump().size()));
  json manifest = {{"format", kBlockwiseFormat},
                   {"hash", hash},
                   {"layout", layout},
                   {"out_channels", plan.Cout},
                   {"blocks_total", plan.total()}};

  // Create or resume the output.
  if (existing && options.overwrite) {
    remove_tree(output);
  } else if (existing) {
    const json old_layout = existing->value("layout", json::object());
    if (existing->value("format", std::string()) != kBlockwiseFormat ||
        existing->value("hash", std::string()) != hash) {
      std::string diff;
      for (auto it = layout.begin(); it != layout.end(); ++it) {
        const auto o = old_layout.find(it.key());
        if (o == old_layout.end() || *o != it.value())
          diff += (diff.empty() ? "" : "; ") + it.key() + ": " + (o == old_layout.end() ? "none" : o->dump()) +
                  " there, " + it.value().dump() + " now";
      }
      throw Error("checkpoint", output + ": this output was written with other settings (" +
                                    (diff.empty() ? std::string("another manifest format") : diff) +
                                    "); rerun with the same settings to resume, or choose another output or overwrite");
    }
  } else if (path_exists(output)) {
    const bool zarr_node = zarr::node_type(output) != zarr::NodeType::None;
    if (!is_directory(output)) throw Error("zarr.exists", output + ": a file exists here");
    if (!list_dir(output).empty()) {
      if (!(options.overwrite && zarr_node))
        throw Error("zarr.exists", output + (zarr_node ? ": a Zarr node that is not a qlty output exists here (pass "
                                                         "overwrite to replace it)"
                                                       : ": a non-empty folder that is not a Zarr node exists here"));
      remove_tree(output);
    }
  }
  if (existing && !options.overwrite) remove_stale_temps(output);  // what a killed run left
  make_dirs(done_folder(output));
  if (!existing || options.overwrite) atomic_write(manifest_path(output), manifest.dump(2), options.durable);

  // The group and its arrays (idempotent: a setup interrupted after the manifest is finished here).
  json axes = json::array({{{"name", "t"}, {"type", "time"}}, {{"name", "c"}, {"type", "channel"}}});
  for (int a = 3 - D; a < 3; ++a) axes.push_back({{"name", std::string(1, "zyx"[a])}, {"type", "space"}});
  auto multiscales = [&](const std::string& name) {
    return json::array(
        {{{"version", "0.4"},
          {"name", name},
          {"axes", axes},
          {"datasets",
           json::array({{{"path", "0"},
                         {"coordinateTransformations",
                          json::array({{{"type", "scale"}, {"scale", std::vector<double>(D + 2, 1.0)}}})}}})}}});
  };
  json qlty_attrs = options.attributes;
  qlty_attrs["layout"] = layout;
  qlty_attrs["input"] = input.name();
  atomic_write(join_path(output, ".zgroup"), json{{"zarr_format", 2}}.dump(4), false);
  atomic_write(join_path(output, ".zattrs"),
               json{{"multiscales", multiscales("prediction")}, {"qlty", qlty_attrs}}.dump(4, ' ', true), false);
  std::vector<int64_t> out_shape = {plan.N, plan.Cout}, out_chunks = {1, 1};
  for (int a = 3 - D; a < 3; ++a) {
    out_shape.push_back(g.shape[a]);
    out_chunks.push_back(chunk[a]);
  }
  auto make_array = [&](const std::string& path, zarr::DataType dt, int64_t channels) {
    zarr::ArrayOptions o(out_shape, out_chunks, dt);
    o.shape[1] = channels;
    o.codecs = options.codecs;
    o.attributes = {{"_ARRAY_DIMENSIONS", json::array()}};
    for (const auto& ax : axes) o.attributes["_ARRAY_DIMENSIONS"].push_back(ax["name"]);
    return zarr::Array::open_or_create(path, o);
  };
  std::optional<zarr::Array> mean_arr, std_arr, label_arr;
  if (options.write_mean) mean_arr = make_array(join_path(output, "0"), zarr::DataType::Float32, plan.Cout);
  if (options.write_std) std_arr = make_array(join_path(output, "std"), zarr::DataType::Float32, plan.Cout);
  if (options.write_argmax) {
    const std::string labels = join_path(output, "labels");
    make_dirs(join_path(labels, "argmax"));
    atomic_write(join_path(labels, ".zgroup"), json{{"zarr_format", 2}}.dump(4), false);
    atomic_write(join_path(labels, ".zattrs"), json{{"labels", json::array({"argmax"})}}.dump(4, ' ', true), false);
    const std::string am = join_path(labels, "argmax");
    atomic_write(join_path(am, ".zgroup"), json{{"zarr_format", 2}}.dump(4), false);
    atomic_write(join_path(am, ".zattrs"),
                 json{{"multiscales", multiscales("argmax")},
                      {"image-label", {{"version", "0.4"}, {"source", {{"image", "../../"}}}}}}
                     .dump(4, ' ', true),
                 false);
    label_arr = make_array(join_path(am, "0"), plan.Cout <= 256 ? zarr::DataType::UInt8 : zarr::DataType::Int32, 1);
  }

  // What to compute: the blocks without markers, in run order; a block carries over from its predecessor in the
  // slab column only when that one is computed in this run.
  const std::string done_dir = done_folder(output);
  auto marker = [&](int64_t id) { return join_path(done_dir, std::to_string(id)); };
  struct Task {
    int64_t n;
    std::array<int64_t, 3> b;
    int64_t first_row;  // the first window row along A computed here; earlier rows are carried from the last block
  };
  std::vector<Task> tasks;
  BlockwiseSummary summary;
  summary.blocks_total = plan.total();
  summary.windows_grid = plan.N * g.per_image();
  summary.out_channels = plan.Cout;
  summary.block = spatial_vec(plan.block);
  summary.chunks = spatial_vec(chunk);
  int64_t planned = 0;
  {
    bool prev_computed = false;
    for (int64_t i = 0; i < plan.total(); ++i) {
      auto [n, b] = plan.at(i);
      if (path_exists(marker(plan.id(n, b)))) {
        ++summary.blocks_skipped;
        prev_computed = false;
        continue;
      }
      std::array<int64_t, 3> b0{}, b1{};
      plan.box(b, b0, b1);
      const int A = plan.A;
      const bool carry = prev_computed && b[A] > 0;
      const int64_t first = carry ? plan.cover[A].last[b0[A] - 1] + 1 : plan.cover[A].first[b0[A]];
      tasks.push_back({n, b, first});
      int64_t w = std::max<int64_t>(0, plan.cover[A].last[b1[A] - 1] - first + 1);
      for (int a = 0; a < 3; ++a)
        if (a != A) w *= plan.cover[a].last[b1[a] - 1] - plan.cover[a].first[b0[a]] + 1;
      if (options.max_blocks < 0 || static_cast<int64_t>(tasks.size()) <= options.max_blocks) planned += w;
      prev_computed = true;
    }
  }
  if (options.max_blocks >= 0 && static_cast<int64_t>(tasks.size()) > options.max_blocks)
    tasks.resize(options.max_blocks);

  // The input box a task reads: the windows it computes, (offset, shape) in the input's rank.
  auto input_box = [&](const Task& t) {
    std::array<int64_t, 3> b0{}, b1{};
    plan.box(t.b, b0, b1);
    std::vector<int64_t> off = {t.n, 0}, ext = {1, plan.C};
    for (int a = 3 - D; a < 3; ++a) {
      const int64_t k0 = a == plan.A ? t.first_row : plan.cover[a].first[b0[a]];
      const int64_t k1 = plan.cover[a].last[b1[a] - 1];
      const int64_t h0 = g.start(a, std::min(k0, k1)), h1 = g.start(a, k1) + g.window[a];
      off.push_back(h0);
      ext.push_back(h1 - h0);
    }
    return std::make_pair(off, ext);
  };
  auto read_input = [&](size_t i) -> torch::Tensor {
    const auto& t = tasks[i];
    std::array<int64_t, 3> b0{}, b1{};
    plan.box(t.b, b0, b1);
    if (t.first_row > plan.cover[plan.A].last[b1[plan.A] - 1]) return torch::Tensor();  // every window carried
    auto [off, ext] = input_box(t);
    auto x = input.read(off, ext);
    return D == 2 ? x.unsqueeze(2) : x;
  };

  BlockwiseProgress progress;
  progress.blocks_total = plan.total();
  progress.blocks_done = summary.blocks_skipped;
  progress.windows_planned = planned;
  auto report = [&] {
    if (!options.progress) return;
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    options.progress(progress);
  };
  report();

  // Blending happens on the model's device when the block's accumulators fit there, else on the CPU.
  torch::Device blend_device = options.device;
  const auto weight_cpu = [&] {
    auto w = torch::full({g.window[0], g.window[1], g.window[2]}, static_cast<float>(g.border_weight));
    w.narrow(0, g.border[0], g.window[0] - 2 * g.border[0])
        .narrow(1, g.border[1], g.window[1] - 2 * g.border[1])
        .narrow(2, g.border[2], g.window[2] - 2 * g.border[2])
        .fill_(1.0f);
    return w;
  }();
  torch::Tensor weight_full = weight_cpu.to(blend_device);

  torch::NoGradGuard no_grad;
  std::vector<PredictionPart> carried;
  std::future<torch::Tensor> next;
  auto start_read = [&](size_t i) {
    if (i >= tasks.size()) return;
    if (options.prefetch)
      next = std::async(std::launch::async, read_input, i);
    else
      next = std::async(std::launch::deferred, read_input, i);
  };
  start_read(0);

  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const Task& t = tasks[ti];
    std::array<int64_t, 3> b0{}, b1{}, bext{};
    plan.box(t.b, b0, b1);
    for (int a = 0; a < 3; ++a) bext[a] = b1[a] - b0[a];
    const std::string where = output + ": " + describe_block(plan, t.n, t.b);
    torch::Tensor halo = next.get();
    start_read(ti + 1);
    const auto [hoff, hext] = input_box(t);
    std::array<int64_t, 3> h0{0, 0, 0};
    for (int a = 3 - D; a < 3; ++a) h0[a] = hoff[2 + a - (3 - D)];

    torch::Tensor acc, wsum, sq;
    auto allocate = [&] {
      const auto fopts = torch::TensorOptions().dtype(torch::kFloat).device(blend_device);
      acc = torch::zeros({plan.Cout, bext[0], bext[1], bext[2]}, fopts);
      wsum = torch::zeros({bext[0], bext[1], bext[2]}, fopts);
      sq = options.write_std ? torch::zeros_like(acc) : torch::Tensor();
    };
    try {
      allocate();
    } catch (const c10::Error&) {
      if (blend_device.is_cpu()) throw;
      acc = wsum = sq = torch::Tensor();
      blend_device = torch::kCPU;  // from now on: the accumulators do not fit on the device
      weight_full = weight_cpu;
      for (auto& c : carried) c.pred = c.pred.cpu();
      allocate();
    }
    // Predictions waiting to be added into the block, in window order: (pred (C', ...) whose first voxel is at
    // `origin`, from the window starting at `start`). On the CPU one pass of blend_cpu adds a batch; elsewhere
    // three torch ops per window.
    std::vector<PredictionPart> pending;
    auto flush = [&] {
      if (blend_device.is_cpu()) {
        std::vector<BlendPart> parts;
        for (const auto& c : pending) {
          const auto& p = c.pred;
          parts.push_back({p.data_ptr<float>(),
                           p.stride(0),
                           p.stride(1),
                           p.stride(2),
                           p.stride(3),
                           c.origin,
                           {p.size(1), p.size(2), p.size(3)},
                           c.start});
        }
        blend_cpu(acc.data_ptr<float>(), wsum.data_ptr<float>(), sq.defined() ? sq.data_ptr<float>() : nullptr,
                  plan.Cout, b0, bext, parts, g);
      } else {
        for (const auto& c : pending) {
          torch::Tensor a_view = acc, w_view = wsum, s_view = sq, p = c.pred, w = weight_full;
          bool empty = false;
          for (int a = 0; a < 3 && !empty; ++a) {
            const int64_t r0 = std::max(c.origin[a], b0[a]), r1 = std::min(c.origin[a] + p.size(a + 1), b1[a]);
            empty = r1 <= r0;
            if (empty) break;
            a_view = a_view.narrow(a + 1, r0 - b0[a], r1 - r0);
            w_view = w_view.narrow(a, r0 - b0[a], r1 - r0);
            if (sq.defined()) s_view = s_view.narrow(a + 1, r0 - b0[a], r1 - r0);
            p = p.narrow(a + 1, r0 - c.origin[a], r1 - r0);
            w = w.narrow(a, r0 - c.start[a], r1 - r0);
          }
          if (empty) continue;
          a_view.addcmul_(p, w);
          w_view.add_(w);
          if (sq.defined()) s_view.addcmul_(p.square(), w);
        }
      }
      pending.clear();
    };

    std::vector<PredictionPart> carry_out;
    const int A = plan.A;
    const bool has_next = b1[A] < g.shape[A];
    const int64_t krow0 = plan.cover[A].first[b0[A]], krow1 = plan.cover[A].last[b1[A] - 1];
    std::array<int64_t, 3> kf{}, kl{};
    for (int a = 0; a < 3; ++a) {
      kf[a] = plan.cover[a].first[b0[a]];
      kl[a] = plan.cover[a].last[b1[a] - 1];
    }
    size_t ci = 0;
    for (int64_t row = krow0; row <= krow1; ++row) {
      if (row < t.first_row) {  // carried from the previous block of the column, in window order
        for (; ci < carried.size() && carried[ci].start[A] == g.start(A, row); ++ci) {
          pending.push_back(carried[ci]);
          if (has_next && carried[ci].start[A] + g.window[A] > b1[A]) carry_out.push_back(carried[ci]);  // 3 blocks
        }
        flush();
        continue;
      }
      // The windows of this row, in global order.
      std::vector<std::array<int64_t, 3>> starts;
      const int o1 = A == 0 ? 1 : 0, o2 = 2;  // the other axes (for 2D, Z has one window)
      for (int64_t k1 = kf[o1]; k1 <= kl[o1]; ++k1)
        for (int64_t k2 = kf[o2]; k2 <= kl[o2]; ++k2) {
          std::array<int64_t, 3> s{};
          s[A] = g.start(A, row);
          s[o1] = g.start(o1, k1);
          s[o2] = g.start(o2, k2);
          starts.push_back(s);
        }
      for (size_t s0 = 0; s0 < starts.size(); s0 += options.batch_size) {
        const size_t s1 = std::min(starts.size(), s0 + static_cast<size_t>(options.batch_size));
        const int64_t B = static_cast<int64_t>(s1 - s0);
        auto origins = torch::empty({B, 4}, torch::kLong);
        auto* o = origins.data_ptr<int64_t>();
        for (int64_t j = 0; j < B; ++j) {
          o[4 * j] = 0;
          for (int a = 0; a < 3; ++a) o[4 * j + 1 + a] = starts[s0 + j][a] - h0[a];
        }
        auto windows = gather_windows(halo, origins, g.window);
        if (D == 2) windows = windows.squeeze(2);
        windows = windows.to(options.device, torch::kFloat);
        torch::Tensor pred;
        try {
          pred = model(windows);
        } catch (const std::exception& e) {
          const std::string what = e.what();
          const bool oom = what.find("out of memory") != std::string::npos || dynamic_cast<const std::bad_alloc*>(&e);
          throw Error("model", where + ": the model failed on windows " + std::to_string(s0) + ".." +
                                   std::to_string(s1 - 1) + " of row " + std::to_string(row) + " (batch of shape " +
                                   c10::str(windows.sizes()) + ")" +
                                   (oom ? " (out of memory: try a smaller batch size)" : "") + ": " + what);
        }
        std::vector<int64_t> want = {B, plan.Cout};
        for (int a = 3 - D; a < 3; ++a) want.push_back(g.window[a]);
        if (!pred.defined() || pred.sizes() != c10::IntArrayRef(want) || !pred.is_floating_point())
          throw Error("model", where + ": the model returned " +
                                   (pred.defined() ? c10::str("shape ", pred.sizes(), " ", pred.scalar_type())
                                                   : std::string("no tensor")) +
                                   " for windows of shape " + c10::str(windows.sizes()) + "; expected " +
                                   c10::str(c10::IntArrayRef(want)) + ", floating point");
        pred = pred.to(blend_device, torch::kFloat);
        if (D == 2) pred = pred.unsqueeze(2);
        for (int64_t j = 0; j < B; ++j) {
          const auto& s = starts[s0 + j];
          auto pj = pred[j];
          pending.push_back({s, s, pj});
          if (has_next && s[A] + g.window[A] > b1[A]) {
            std::array<int64_t, 3> origin = s;
            origin[A] = b1[A];
            carry_out.push_back({s, origin, pj.narrow(A + 1, b1[A] - s[A], s[A] + g.window[A] - b1[A]).clone()});
          }
        }
        flush();
        progress.windows_done += B;
        summary.windows_computed += B;
        report();
      }
    }
    halo = torch::Tensor();
    carried = std::move(carry_out);

    // Results of the block; write them, flush, mark the block done.
    auto mean = acc.div_(wsum);
    std::vector<int64_t> woff = {t.n, 0};
    for (int a = 3 - D; a < 3; ++a) woff.push_back(b0[a]);
    auto to_out = [&](const torch::Tensor& v) {
      auto c = v.unsqueeze(0).to(torch::kCPU);
      return D == 2 ? c.squeeze(2) : c;
    };
    if (std_arr) std_arr->write(woff, to_out(sq.div_(wsum).sub_(mean * mean).clamp_min_(0).sqrt_()));
    if (label_arr) label_arr->write(woff, to_out(mean.argmax(0, true).to(torch::kInt)));
    if (mean_arr) mean_arr->write(woff, to_out(mean));
    if (options.durable) sync_folder(output, true);
    atomic_write(marker(plan.id(t.n, t.b)), std::string(), false);
    ++summary.blocks_computed;
    ++progress.blocks_done;
    report();
  }
  summary.complete = summary.blocks_skipped + summary.blocks_computed == summary.blocks_total;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return summary;
}

}  // namespace qlty
