#pragma once
// IWYU pragma: private, include <qlty/blockwise.hpp>
// The plan of a blockwise run: the window grid in 3D form (2D inputs have a Z axis of size 1), the output chunks,
// the blocks and their run order, the window rows each block meets and the rows it shares with the next block of
// its slab column. Arithmetic only: no files, no model.

#include <qlty/blockwise_types.hpp>
#include <qlty/geometry.hpp>
#include <qlty/kernels/grid3.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

namespace qlty::detail {

/// Voxels [lo, hi) of a block, in 3D form.
struct Box {
  std::array<int64_t, 3> lo{}, hi{};
};
/// Windows [first, last] per axis, in 3D form.
struct WindowRange {
  std::array<int64_t, 3> first{}, last{};
};

/// Blocks, in 3D form. Run order: within an image and a column of blocks (fixed block coordinates on the other
/// axes), the slab axis A runs fastest, so consecutive blocks of a column share window rows along A.
struct BlockPlan {
  Grid3 grid;
  int spatial_dims = 3;  // spatial axes of the input
  int slab_axis = 0;     // in 3D form: 0 (Z) for volumes, 1 (Y) for images
  int64_t images = 0, in_channels = 0, out_channels = 0;
  // chunk: the output's chunk; shard: the output's shard (the chunk when not sharded), which blocks are made of
  std::array<int64_t, 3> chunk{1, 1, 1}, shard{1, 1, 1}, block{1, 1, 1}, nblocks{1, 1, 1};
  bool sharded = false;
  // The input's spatial size and the padding before it (grid.shape is the padded size; padded axes are one block).
  std::array<int64_t, 3> image{1, 1, 1}, before{0, 0, 0};
  Cover cover[3];

  bool padded() const { return image != grid.shape; }
  // Window predictions carry their second moment after their mean (flips with std): 2 C' channels, else C'.
  bool moments = false;
  int64_t pred_channels() const { return moments ? 2 * out_channels : out_channels; }

  int64_t per_image() const { return nblocks[0] * nblocks[1] * nblocks[2]; }
  int64_t total() const { return images * per_image(); }
  /// (n, block coordinates) of the i-th block in run order.
  std::pair<int64_t, std::array<int64_t, 3>> at(int64_t i) const {
    const int64_t n = i / per_image();
    int64_t r = i % per_image();
    std::array<int64_t, 3> b{};
    b[slab_axis] = r % nblocks[slab_axis];
    r /= nblocks[slab_axis];
    for (int a = 2; a >= 0; --a) {
      if (a == slab_axis) continue;
      b[a] = r % nblocks[a];
      r /= nblocks[a];
    }
    return {n, b};
  }
  /// The marker name of a block: its position in (n, z, y, x) lexicographic order.
  int64_t id(int64_t n, const std::array<int64_t, 3>& b) const {
    return ((n * nblocks[0] + b[0]) * nblocks[1] + b[1]) * nblocks[2] + b[2];
  }
  int64_t id(int64_t i) const {
    const auto [n, b] = at(i);
    return id(n, b);
  }
  /// The run-order index of the block with marker name `id` (the inverse of id(i)); id in [0, total()).
  int64_t index_of_id(int64_t id) const {
    std::array<int64_t, 3> b{};
    for (int a = 2; a >= 0; --a) {
      b[a] = id % nblocks[a];
      id /= nblocks[a];
    }
    int64_t r = 0;  // at(): the slab axis fastest, then the others with X fastest
    for (int a = 0; a < 3; ++a)
      if (a != slab_axis) r = r * nblocks[a] + b[a];
    return id * per_image() + r * nblocks[slab_axis] + b[slab_axis];
  }
  /// The voxels of the block at block coordinates b.
  Box box(const std::array<int64_t, 3>& b) const {
    Box r;
    for (int a = 0; a < 3; ++a) {
      r.lo[a] = b[a] * block[a];
      r.hi[a] = std::min(grid.shape[a], r.lo[a] + block[a]);
    }
    return r;
  }
  /// The voxels of the i-th block in run order.
  Box box(int64_t i) const { return box(at(i).second); }
  /// The block after i in its slab column, or -1.
  int64_t successor(int64_t i) const { return i + 1 < total() && (i + 1) % nblocks[slab_axis] != 0 ? i + 1 : -1; }
  /// The block before i in its slab column, or -1.
  int64_t predecessor(int64_t i) const { return i % nblocks[slab_axis] != 0 ? i - 1 : -1; }
  /// The windows meeting block i (rows along the slab axis, columns on the other axes).
  WindowRange windows(int64_t i) const {
    const Box b = box(i);
    WindowRange w;
    for (int a = 0; a < 3; ++a) {
      w.first[a] = cover[a].first[b.lo[a]];
      w.last[a] = cover[a].last[b.hi[a] - 1];
    }
    return w;
  }
  /// Window rows along A meeting block i: [first, last].
  std::pair<int64_t, int64_t> rows(int64_t i) const {
    const WindowRange w = windows(i);
    return {w.first[slab_axis], w.last[slab_axis]};
  }
  /// The first window row that block i shares with its successor: rows [shared_from(i), rows(i).second] meet both.
  /// rows(i).second + 1 when i ends its column.
  int64_t shared_from(int64_t i) const {
    if (successor(i) < 0) return rows(i).second + 1;
    return cover[slab_axis].first[box(i).hi[slab_axis]];
  }
  /// Windows in one row of block i.
  int64_t row_windows(int64_t i) const {
    const WindowRange w = windows(i);
    int64_t n = 1;
    for (int a = 0; a < 3; ++a)
      if (a != slab_axis) n *= w.last[a] - w.first[a] + 1;
    return n;
  }
  /// The first row block i computes: after the rows carried from its predecessor, or its first row.
  int64_t first_computed_row(int64_t i, bool carried_in) const {
    return carried_in ? rows(predecessor(i)).second + 1 : rows(i).first;
  }
  /// Model evaluations of block i when it computes every row from first_computed_row on.
  int64_t windows_to_compute(int64_t i, bool carried_in) const {
    return std::max<int64_t>(0, rows(i).second - first_computed_row(i, carried_in) + 1) * row_windows(i);
  }
  /// The blocks of part p of P (0-based): [first, second) in run order.
  std::pair<int64_t, int64_t> part_range(int64_t p, int64_t P) const {
    const auto t = static_cast<__int128>(total());  // total * p can exceed 64 bits for crafted part counts
    return {static_cast<int64_t>(t * p / P), static_cast<int64_t>(t * (p + 1) / P)};
  }
  /// The spatial entries of a 3D-form vector.
  std::vector<int64_t> spatial(const std::array<int64_t, 3>& v) const {
    return std::vector<int64_t>(v.begin() + (3 - spatial_dims), v.end());
  }
};

/// Checks the settings that need no input: batch size, memory, outputs, model, output path, part.
inline void check_blockwise_options(const BlockModel& model, const std::string& output, const BlockwiseOptions& o,
                                    const char* who) {
  QLTY_CHECK_ARG(o.batch_size >= 1, "batch_size", who, ": batch_size must be >= 1, got ", o.batch_size);
  QLTY_CHECK_ARG(o.block_bytes >= 1, "block_bytes", who, ": block_bytes must be >= 1, got ", o.block_bytes);
  QLTY_CHECK_ARG(o.max_blocks >= -1, "max_blocks", who, ": max_blocks must be >= -1, got ", o.max_blocks);
  TORCH_CHECK_VALUE(o.write_mean || o.write_std || o.write_argmax, who,
                    ": nothing to write: write_mean, write_std and write_argmax are all off");
  TORCH_CHECK_VALUE(model != nullptr, who, ": model is empty");
  TORCH_CHECK_VALUE(!output.empty(), who, ": output path is empty");
  QLTY_CHECK_ARG(o.part.second >= 1 && o.part.first >= 0 && o.part.first < o.part.second, "part", who,
                 ": part must be {i, K} with 0 <= i < K, got {", o.part.first, ", ", o.part.second, "}");
  QLTY_CHECK_ARG(!(o.overwrite && o.part.second > 1), "overwrite", who, ": overwrite cannot be combined with a part (",
                 o.part.first, " of ", o.part.second,
                 "): the parts share one output, and each would delete the others' work; delete it once first");
  QLTY_CHECK_ARG(o.precision == torch::kFloat || o.precision == torch::kHalf || o.precision == torch::kBFloat16,
                 "precision", who, ": precision must be float32, float16 or bfloat16, got ", o.precision);
  QLTY_CHECK_ARG(o.output_dtype == torch::kFloat || o.output_dtype == torch::kHalf || o.output_dtype == torch::kByte,
                 "output_dtype", who, ": output_dtype must be float32, float16 or uint8, got ", o.output_dtype);
  QLTY_CHECK_ARG(o.tta_flip || o.tta_axes.empty(), "tta_axes", who, ": tta_axes given (", c10::IntArrayRef(o.tta_axes),
                 ") without tta_flip");
}

/// A per-axis option (`chunks`, `block`) into 3D form; false when it is empty.
inline bool spatial_option(const std::vector<int64_t>& v, int D, const char* who, const char* name,
                           std::array<int64_t, 3>& out) {
  if (v.empty()) return false;
  QLTY_CHECK_ARG(v.size() == 1 || v.size() == static_cast<size_t>(D), name, who, ": ", name, " must have 1 or ", D,
                 " entries, got ", v.size(), " (", c10::IntArrayRef(v), ")");
  for (int a = 0; a < D; ++a) {
    out[3 - D + a] = v.size() == 1 ? v[0] : v[a];
    QLTY_CHECK_ARG(out[3 - D + a] >= 1, name, who, ": ", name, " must be >= 1 on every axis, got ",
                   c10::IntArrayRef(v));
  }
  return true;
}

/// One window over the input's channels, in float32, must fit in `block_bytes` (the memory of a block): a window
/// far larger than the input (to be padded) or than the machine is refused before anything is sized or allocated.
inline void check_window_fits(const std::vector<int64_t>& shape, const PerAxis& window, int64_t block_bytes,
                              const char* who) {
  const auto& w = window.values();
  double bytes = 4.0 * double(shape[1]);
  for (size_t a = 2; a < shape.size(); ++a) bytes *= double(w.size() == 1 ? w[0] : w.at(std::min(a - 2, w.size() - 1)));
  QLTY_CHECK_ARG(bytes <= double(block_bytes), "window", who, ": one window of ", c10::IntArrayRef(w), " over ",
                 shape[1], " channel", shape[1] == 1 ? "" : "s", " takes ", bytes / double(1 << 20),
                 " MiB in float32, more than the ", double(block_bytes) / double(1 << 20),
                 " MiB a block may take (block_bytes); the input is ", c10::IntArrayRef(shape));
}

/// The output's shards (o.shards, whole chunks as requested), clipped like the chunks: to the chunks covering an
/// axis, and to the chunk itself where the chunk was clipped (to the grid, or a padded axis's one block).
inline void plan_shards(BlockPlan& plan, const std::array<int64_t, 3>& requested_chunk, const BlockwiseOptions& o,
                        const char* who) {
  QLTY_CHECK_ARG(o.zarr_format == 2 || o.zarr_format == 3, "zarr_format", who, ": zarr_format must be 2 or 3, got ",
                 o.zarr_format);
  plan.shard = plan.chunk;
  std::array<int64_t, 3> shard{1, 1, 1};
  plan.sharded = spatial_option(o.shards, plan.spatial_dims, who, "shards", shard);
  if (!plan.sharded) return;
  QLTY_CHECK_ARG(o.zarr_format == 3, "shards", who, ": shards are a Zarr v3 feature; set zarr_format to 3 (got ",
                 o.zarr_format, ")");
  for (int a = 3 - plan.spatial_dims; a < 3; ++a) {
    QLTY_CHECK_ARG(shard[a] % requested_chunk[a] == 0, "shards", who,
                   ": shards must be whole chunks on every axis, got ", c10::IntArrayRef(o.shards), " for chunks ",
                   c10::IntArrayRef(plan.spatial(requested_chunk)));
    const int64_t covering = (plan.grid.shape[a] + plan.chunk[a] - 1) / plan.chunk[a] * plan.chunk[a];
    plan.shard[a] = plan.chunk[a] == requested_chunk[a] ? std::min(shard[a], covering) : plan.chunk[a];
  }
}

/// The grid and output chunks of a run on an input of `shape` (N, C, *S); blocks come with plan_blocks.
inline BlockPlan plan_grid(const std::vector<int64_t>& shape, const BlockwiseOptions& o, const char* who) {
  BlockPlan plan;
  plan.spatial_dims = static_cast<int>(shape.size()) - 2;
  const int D = plan.spatial_dims;
  plan.images = shape[0];
  plan.in_channels = shape[1];
  plan.slab_axis = D == 3 ? 0 : 1;
  std::array<int64_t, 3> spatial{1, 1, 1};
  for (int a = 0; a < D; ++a) spatial[3 - D + a] = shape[2 + a];
  plan.image = spatial;
  plan.moments = o.tta_flip && o.write_std;
  for (auto a : o.tta_axes)
    QLTY_CHECK_ARG(a >= 0 && a < D, "tta_axes", who, ": tta_axes must be spatial axes in [0, ", D, "), got ",
                   c10::IntArrayRef(o.tta_axes));
  if (o.slicewise) {
    const auto w = o.window.values();
    QLTY_CHECK_ARG(D == 3 && w.size() == 3 && w[0] == 1, "slicewise", who,
                   ": slicewise runs a 2D model over a 3D input with windows of depth 1 (1, Y, X); got a ",
                   D == 3 ? "window " + c10::str(c10::IntArrayRef(w)) : std::string("2D input"));
  }
  check_window_fits(shape, o.window, o.block_bytes, who);
  const Blend blend =
      o.blend.mode() == Blend::Mode::Border ? Blend::border(o.border.values(), o.border_weight) : o.blend;
  if (!o.pad.enabled()) {  // pads nothing: the run's own words for a window larger than the input
    const auto& w = o.window.values();
    for (int a = 0; a < D && w.size() <= static_cast<size_t>(D); ++a) {
      const int64_t wa = w.size() == 1 ? w[0] : w[static_cast<size_t>(a)];
      QLTY_CHECK_ARG(wa <= shape[2 + a], "window", who, ": window along ", axis_name(D, a),
                     " must not exceed the image size ", shape[2 + a], ", got ", wa, " (input shape ",
                     c10::IntArrayRef(shape), "; a Pad in BlockwiseOptions::pad pads such inputs)");
    }
  }
  // axes shorter than the window are padded to it when o.pad pads
  if (D == 2) {
    Geometry<2> geom(padded_shape<2>({spatial[1], spatial[2]}, o.window, o.pad, who), o.window, o.step, blend, who);
    geom.check_covered(who);
    plan.grid = geom.grid3();
  } else {
    Geometry<3> geom(padded_shape<3>(spatial, o.window, o.pad, who), o.window, o.step, blend, who);
    geom.check_covered(who);
    plan.grid = geom.grid3();
  }
  for (int a = 0; a < 3; ++a) {
    plan.before[a] = (plan.grid.shape[a] - plan.image[a]) / 2;
    plan.cover[a] = cover(plan.grid, a);
  }
  if (!spatial_option(o.chunks, D, who, "chunks", plan.chunk))
    for (int a = 3 - D; a < 3; ++a) plan.chunk[a] = D == 3 ? 64 : 256;
  const auto requested_chunk = plan.chunk;
  for (int a = 0; a < 3; ++a) {
    plan.chunk[a] = std::min(plan.chunk[a], plan.grid.shape[a]);
    if (plan.image[a] != plan.grid.shape[a]) plan.chunk[a] = plan.grid.shape[a];  // a padded axis is one block
  }
  plan_shards(plan, requested_chunk, o, who);
  return plan;
}

/// The blocks, for a model of `Cout` channels: `o.block` rounded up to whole shards (chunks when not sharded), or
/// slabs along A with whole other axes, thinner (then split on the next axes) until a block's input halo,
/// accumulators and carried predictions fit in `o.block_bytes`.
inline void plan_blocks(BlockPlan& plan, const BlockwiseOptions& o, int64_t Cout, const char* who) {
  TORCH_CHECK_VALUE(Cout >= 1, who, ": the model returns ", Cout, " channels");
  plan.out_channels = Cout;
  const Grid3& g = plan.grid;
  auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
  if (!spatial_option(o.block, plan.spatial_dims, who, "block", plan.block)) {
    for (int a = 0; a < 3; ++a) plan.block[a] = round_up(g.shape[a], plan.shard[a]);
    auto bytes = [&](const std::array<int64_t, 3>& b) {
      double halo = double(plan.in_channels), acc = double(Cout * (o.write_std ? 2 : 1) + 1),
             carry = double(Cout) * double(g.window[plan.slab_axis]);
      for (int a = 0; a < 3; ++a) {
        const double h = double(std::min(g.shape[a], b[a] + g.window[a]));
        halo *= h;
        acc *= double(std::min(g.shape[a], b[a]));
        if (a != plan.slab_axis) carry *= h;
      }
      return 4.0 * (halo + acc + carry);
    };
    for (int a = plan.slab_axis; a < 3; ++a)
      while (bytes(plan.block) > double(o.block_bytes) && plan.block[a] > plan.shard[a])
        plan.block[a] = round_up((plan.block[a] + 1) / 2, plan.shard[a]);
  } else {
    for (int a = 0; a < 3; ++a) plan.block[a] = round_up(std::min(plan.block[a], g.shape[a]), plan.shard[a]);
  }
  for (int a = 0; a < 3; ++a) plan.nblocks[a] = (g.shape[a] + plan.block[a] - 1) / plan.block[a];
}

/// The settings a resume must match (the manifest's `layout`).
inline nlohmann::json plan_layout(const BlockPlan& plan, const BlockInput& input, const BlockwiseOptions& o) {
  nlohmann::json l = {{"input", input.id()},
                      {"input_shape", input.shape()},
                      {"out_channels", plan.out_channels},
                      {"window", plan.spatial(plan.grid.window)},
                      {"step", plan.spatial(plan.grid.step)},
                      {"border", plan.spatial(plan.grid.border)},
                      {"border_weight", o.border_weight},
                      {"chunks", plan.spatial(plan.chunk)},
                      {"block", plan.spatial(plan.block)},
                      {"outputs", {{"mean", o.write_mean}, {"std", o.write_std}, {"argmax", o.write_argmax}}},
                      {"model", o.model_id}};
  // Settings added later are recorded when they differ from their defaults, so earlier outputs still resume.
  if (!input.axes().empty()) l["input_axes"] = input.axes();
  if (o.blend.mode() == Blend::Mode::Gaussian && o.blend.sigma_scale().size() == 1)  // one value: every axis
    l["blend"] = Blend::gaussian(std::vector<double>(static_cast<size_t>(plan.spatial_dims), o.blend.sigma_scale()[0]))
                     .describe();
  else if (o.blend.mode() != Blend::Mode::Border)
    l["blend"] = o.blend.describe();
  if (plan.padded())
    l["pad"] =
        o.pad.mode() == Pad::Mode::Constant ? c10::str("constant(", o.pad.value(), ")") : std::string(o.pad.name());
  if (o.tta_flip) l["tta_flip"] = o.tta_axes;
  if (o.precision != torch::kFloat) l["precision"] = c10::toString(o.precision);
  if (o.activation != BlockwiseOptions::Activation::None)
    l["activation"] = o.activation == BlockwiseOptions::Activation::Sigmoid ? "sigmoid" : "softmax";
  if (o.slicewise) l["slicewise"] = true;
  if (o.output_dtype != torch::kFloat) l["output_dtype"] = c10::toString(o.output_dtype);
  if (o.zarr_format != 2) l["zarr_format"] = o.zarr_format;
  if (plan.sharded) l["shards"] = plan.spatial(plan.shard);
  return l;
}

/// "block 7 (image 0, z 0..8, y 8..16, x 0..20)" for messages.
inline std::string describe_block(const BlockPlan& p, int64_t i) {
  const auto [n, b] = p.at(i);
  const Box v = p.box(b);
  static const char* names = "zyx";
  std::string s = "block " + std::to_string(p.id(n, b)) + " (image " + std::to_string(n);
  for (int a = p.slab_axis == 0 ? 0 : 1; a < 3; ++a)
    s += std::string(", ") + names[a] + " " + std::to_string(v.lo[a]) + ".." + std::to_string(v.hi[a]);
  return s + ")";
}

}  // namespace qlty::detail
