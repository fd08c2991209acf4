#pragma once
/// @file pyramid.hpp
/// @brief Multiscale pyramids: block means with explicit edges, linear upsampling, Laplacian levels and their exact
/// reconstruction, and write_pyramid, which streams a volume slab by slab into an OME-Zarr image with every level
/// (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3).
///
/// Levels. Level l of an axis that is downsampled has ceil(n / 2^l) pixels; pixel i is the mean of level 0's pixels
/// [i * 2^l, (i + 1) * 2^l) that exist, so an edge pixel covering fewer pixels is the mean of those (not of zeros,
/// nor dropped). Every level comes straight from level 0 (one pooling of 2^l), so no rounding compounds. Integer
/// dtypes are rounded to nearest (ties to even) from a float64 mean, so a level stays in its dtype's range.
///
/// Laplacian levels (float32): lap_l = G_l - up(G_{l+1}) for l < L - 1, where G are the stored levels and up is
/// linear interpolation (align_corners = false) over y and x to G_l's size; G_l = lap_l + up(G_{l+1}) rebuilds
/// them from the top level down, to float rounding (exactly, after rounding, for integer levels).
///
/// Memory: write_pyramid holds one slab of `slab_depth()` z-slices of level 0 and its smaller levels.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <qlty/error.hpp>
#include <qlty/zarr.hpp>

namespace qlty {

/// @brief The mean of each block of `factors` pixels over the last factors.size() (1 to 3) axes of x: ceil(n / f)
/// pixels along each, edge blocks averaging the pixels they hold. Floating dtypes keep theirs (half and bfloat16
/// through float32); integer dtypes are rounded from a float64 mean.
inline torch::Tensor block_mean(const torch::Tensor& x, const std::vector<int64_t>& factors) {
  const int64_t F = static_cast<int64_t>(factors.size());
  QLTY_CHECK_ARG(F >= 1 && F <= 3 && x.dim() >= F, "factors", "block_mean: factors must name 1 to 3 of x's ", x.dim(),
                 " axes, got ", F);
  for (auto f : factors) QLTY_CHECK_ARG(f >= 1, "factors", "block_mean: factors must be >= 1, got ", f);
  QLTY_CHECK_ARG(x.scalar_type() != torch::kBool && !x.is_complex(), "x", "block_mean: x must be real numbers, got ",
                 x.scalar_type());
  if (std::all_of(factors.begin(), factors.end(), [](int64_t f) { return f == 1; })) return x;
  const bool integral = !x.is_floating_point();
  const auto work = integral || x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - F), spatial(x.sizes().end() - F, x.sizes().end());
  std::vector<int64_t> pooled = {-1, 1};
  pooled.insert(pooled.end(), spatial.begin(), spatial.end());
  auto v = x.to(work).reshape(pooled);
  std::vector<int64_t> k = factors;
  for (int64_t a = 0; a < F; ++a) k[a] = std::min(k[a], spatial[a]);  // a block past a short axis: all of it
  if (F == 1) {                                                       // as one row of a 2-D pooling
    v = v.unsqueeze(2);
    k.insert(k.begin(), 1);
  }
  auto m = k.size() == 3 ? torch::avg_pool3d(v, k, k, 0, true, false) : torch::avg_pool2d(v, k, k, 0, true, false);
  if (F == 1) m = m.squeeze(2);
  std::vector<int64_t> out = lead;
  out.insert(out.end(), m.sizes().end() - F, m.sizes().end());
  m = m.reshape(out);
  return integral ? m.round().to(x.scalar_type()) : m.to(x.scalar_type());
}

/// @brief Linear interpolation (align_corners = false) of the last sizes.size() (1 to 3) axes of x to `sizes`,
/// in float32 (float64 for double x).
inline torch::Tensor upsample_linear(const torch::Tensor& x, const std::vector<int64_t>& sizes) {
  const int64_t F = static_cast<int64_t>(sizes.size());
  QLTY_CHECK_ARG(F >= 1 && F <= 3 && x.dim() >= F, "sizes", "upsample_linear: sizes must name 1 to 3 of x's ", x.dim(),
                 " axes, got ", F);
  const auto work = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - F), shape = {-1, 1};
  shape.insert(shape.end(), x.sizes().end() - F, x.sizes().end());
  auto v = x.to(work).reshape(shape);
  namespace F_ = torch::nn::functional;
  auto opts = F_::InterpolateFuncOptions().size(sizes).align_corners(false);
  if (F == 1)
    opts.mode(torch::kLinear);
  else if (F == 2)
    opts.mode(torch::kBilinear);
  else
    opts.mode(torch::kTrilinear);
  auto u = F_::interpolate(v, opts);
  lead.insert(lead.end(), sizes.begin(), sizes.end());
  return u.reshape(lead);
}

/// @brief A Laplacian level: fine - up(coarse), float32, over the last two axes (y, x).
inline torch::Tensor laplacian_level(const torch::Tensor& fine, const torch::Tensor& coarse) {
  const std::vector<int64_t> yx(fine.sizes().end() - 2, fine.sizes().end());
  return fine.to(torch::kFloat) - upsample_linear(coarse, yx).to(torch::kFloat);
}

/// @brief The level a Laplacian level came from: laplacian + up(coarse), float32.
inline torch::Tensor reconstruct_level(const torch::Tensor& laplacian, const torch::Tensor& coarse) {
  const std::vector<int64_t> yx(laplacian.sizes().end() - 2, laplacian.sizes().end());
  return laplacian + upsample_linear(coarse, yx).to(torch::kFloat);
}

/// @brief What write_pyramid writes.
struct PyramidOptions {
  /// Levels, level 0 included; 0: enough that the top level's y and x fit in one chunk (at most 16).
  int64_t levels = 0;
  bool downsample_z = false;  ///< halve z too at each level (else y and x only)
  bool laplacian = false;     ///< also `laplacian/<l>` (float32) for l < levels - 1; y and x pyramids only
  /// Chunk per spatial axis (z, y, x); empty: 16, 256, 256 (64, 64, 64 with downsample_z). Channels: one a chunk.
  std::vector<int64_t> chunks;
  std::vector<int64_t> shards;  ///< Zarr v3 shards per spatial axis (whole chunks); empty: not sharded
  int zarr_format = 2;          ///< 2: OME-Zarr 0.4, 3: OME-Zarr 0.5
  std::vector<zarr::Codec> codecs = {zarr::Codec::blosc()};
  std::string unit;                ///< NGFF space unit of z, y, x (e.g. "micrometer"); empty: none
  std::vector<double> voxel_size;  ///< level 0's pixel size (z, y, x); empty: 1
  std::string name = "image";
  nlohmann::json attributes = nlohmann::json::object();  ///< extra group attributes (e.g. the source files)
  bool overwrite = false;
  std::function<void(int64_t done, int64_t total)> progress;  ///< after each slab: z-slices written of Z
};

/// @brief The units NGFF allows for space axes; also accepts um, µm, nm, mm (returned in full).
inline std::string ngff_space_unit(const std::string& unit) {
  static const std::vector<std::string> units = {
      "angstrom",  "attometer",  "centimeter", "decimeter",  "exameter",  "femtometer", "foot",
      "gigameter", "hectometer", "inch",       "kilometer",  "megameter", "meter",      "micrometer",
      "mile",      "millimeter", "nanometer",  "parsec",     "petameter", "picometer",  "terameter",
      "yard",      "yoctometer", "yottameter", "zeptometer", "zettameter"};
  if (unit == "um" || unit == "\u00b5m" || unit == "\u03bcm") return "micrometer";
  if (unit == "nm") return "nanometer";
  if (unit == "mm") return "millimeter";
  QLTY_CHECK_ARG(std::find(units.begin(), units.end(), unit) != units.end(), "unit", "unit must be an NGFF space unit ",
                 "(micrometer, nanometer, millimeter, angstrom, meter, ... or um, nm, mm), got \"", unit, "\"");
  return unit;
}

namespace detail {

/// The geometry of a pyramid over a volume ([C,] Z, Y, X): each level's shape and its factors over (z, y, x).
struct PyramidPlan {
  std::vector<int64_t> shape;  // level 0, [C,] Z, Y, X
  int64_t levels = 1, lead = 0;
  std::vector<int64_t> chunks, shards;  // per spatial axis
  bool downsample_z = false;

  std::vector<int64_t> factors(int64_t l) const {
    const int64_t f = int64_t{1} << l;
    return {downsample_z ? f : 1, f, f};
  }
  std::vector<int64_t> level_shape(int64_t l) const {
    auto s = shape;
    const auto f = factors(l);
    for (int a = 0; a < 3; ++a) s[lead + a] = (s[lead + a] + f[a] - 1) / f[a];
    return s;
  }
  /// z-slices of level 0 per slab: whole chunks, and whole blocks of the top level when z is downsampled.
  int64_t slab_depth() const {
    int64_t d = chunks[0];
    if (downsample_z) d = std::lcm(d, int64_t{1} << (levels - 1));
    return d;
  }
};

inline PyramidPlan plan_pyramid(const std::vector<int64_t>& shape, const PyramidOptions& o) {
  const char* who = "write_pyramid";
  QLTY_CHECK_ARG(shape.size() == 3 || shape.size() == 4, "shape", who, ": the volume must be (Z, Y, X) or ",
                 "(C, Z, Y, X), got ", c10::IntArrayRef(shape));
  for (auto v : shape)
    QLTY_CHECK_ARG(v >= 1, "shape", who, ": every axis needs a pixel, got ", c10::IntArrayRef(shape));
  PyramidPlan p;
  p.shape = shape;
  p.lead = static_cast<int64_t>(shape.size()) - 3;
  p.downsample_z = o.downsample_z;
  p.chunks = o.chunks.empty() ? (o.downsample_z ? std::vector<int64_t>{64, 64, 64} : std::vector<int64_t>{16, 256, 256})
                              : o.chunks;
  QLTY_CHECK_ARG(p.chunks.size() == 3, "chunks", who, ": chunks must have 3 entries (z, y, x), got ", p.chunks.size());
  for (auto c : p.chunks) QLTY_CHECK_ARG(c >= 1, "chunks", who, ": chunks must be >= 1, got ", c);
  if (!o.shards.empty()) {
    QLTY_CHECK_ARG(o.zarr_format == 3, "shards", who, ": shards need zarr_format 3 (sharding is Zarr v3)");
    QLTY_CHECK_ARG(o.shards.size() == 3, "shards", who, ": shards must have 3 entries (z, y, x), got ",
                   o.shards.size());
    for (int a = 0; a < 3; ++a)
      QLTY_CHECK_ARG(o.shards[a] >= 1 && o.shards[a] % p.chunks[a] == 0, "shards", who,
                     ": shards must be whole chunks on every axis (chunks ", c10::IntArrayRef(p.chunks), "), got ",
                     c10::IntArrayRef(o.shards));
    p.shards = o.shards;
  }
  QLTY_CHECK_ARG(o.levels >= 0 && o.levels <= 16, "levels", who, ": levels must be 0 (automatic) to 16, got ",
                 o.levels);
  QLTY_CHECK_ARG(!o.laplacian || !o.downsample_z, "laplacian", who,
                 ": Laplacian levels are built slice by slice: they need a pyramid over y and x only");
  QLTY_CHECK_ARG(o.voxel_size.empty() || o.voxel_size.size() == 3, "voxel_size", who,
                 ": voxel_size must have 3 entries (z, y, x), got ", o.voxel_size.size());
  for (auto v : o.voxel_size)
    QLTY_CHECK_ARG(std::isfinite(v) && v > 0, "voxel_size", who, ": voxel sizes must be positive, got ", v);
  p.levels = o.levels;
  if (p.levels == 0) {
    p.levels = 1;
    while (p.levels < 16 && std::max(p.level_shape(p.levels - 1)[p.lead + 1], p.level_shape(p.levels - 1)[p.lead + 2]) >
                                std::max(p.chunks[1], p.chunks[2]))
      ++p.levels;
  }
  return p;
}

/// The NGFF multiscales entry of a plan: axes in NGFF order, one dataset per level with its scale and translation
/// (a level-l pixel's centre lies (2^l - 1) / 2 level-0 pixels from its block's first pixel).
inline nlohmann::json pyramid_multiscales(const PyramidPlan& p, const PyramidOptions& o) {
  using json = nlohmann::json;
  json axes = json::array();
  if (p.lead) axes.push_back({{"name", "c"}, {"type", "channel"}});
  const std::string unit = o.unit.empty() ? std::string() : ngff_space_unit(o.unit);
  for (const char* n : {"z", "y", "x"}) {
    json a = {{"name", n}, {"type", "space"}};
    if (!unit.empty()) a["unit"] = unit;
    axes.push_back(a);
  }
  json datasets = json::array();
  for (int64_t l = 0; l < p.levels; ++l) {
    std::vector<double> scale(p.lead, 1.0), shift(p.lead, 0.0);
    const auto f = p.factors(l);
    for (int a = 0; a < 3; ++a) {
      const double v = o.voxel_size.empty() ? 1.0 : o.voxel_size[a];
      scale.push_back(v * double(f[a]));
      shift.push_back(v * double(f[a] - 1) / 2.0);
    }
    json t = json::array({{{"type", "scale"}, {"scale", scale}}});
    if (l > 0) t.push_back({{"type", "translation"}, {"translation", shift}});
    datasets.push_back({{"path", std::to_string(l)}, {"coordinateTransformations", t}});
  }
  json m = {{"name", o.name},
            {"axes", axes},
            {"datasets", datasets},
            {"type", "local_mean"},
            {"metadata",
             {{"method", "qlty::block_mean"},
              {"description", "block means of level 0; edge blocks average the pixels they hold"}}}};
  if (o.zarr_format == 2) m["version"] = "0.4";
  return m;
}

inline zarr::Array create_level(const std::string& path, const std::vector<int64_t>& shape, const PyramidPlan& p,
                                zarr::DataType dtype, const PyramidOptions& o) {
  std::vector<int64_t> chunks(p.lead, 1), shards(p.lead, 1);
  for (int a = 0; a < 3; ++a) {
    const int64_t n = shape[p.lead + a], c = std::min(p.chunks[a], n);
    chunks.push_back(c);
    if (!p.shards.empty()) shards.push_back(std::min(p.shards[a], (n + c - 1) / c * c));
  }
  zarr::ArrayOptions ao(shape, p.shards.empty() ? chunks : shards, dtype);
  if (!p.shards.empty()) ao.inner_chunks = chunks;
  ao.codecs = o.codecs;
  ao.zarr_format = o.zarr_format;
  std::vector<std::string> names;
  if (p.lead) names.emplace_back("c");
  for (const char* n : {"z", "y", "x"}) names.emplace_back(n);
  zarr::set_axis_names(ao, names);
  return zarr::Array::create(path, ao);
}

}  // namespace detail

/// @brief Reads z-slices [z0, z1) of a volume: ([C,] z1 - z0, Y, X).
using SlabReader = std::function<torch::Tensor(int64_t z0, int64_t z1)>;

/// @brief What write_pyramid wrote.
struct PyramidSummary {
  std::vector<std::vector<int64_t>> level_shapes;  ///< level l's shape, [C,] Z, Y, X
  int64_t laplacian_levels = 0;                    ///< laplacian/0 .. laplacian/(n - 1)
  int64_t slab_depth = 0;                          ///< z-slices of level 0 held at a time
};

/// @brief Writes the volume of `shape` ((Z, Y, X) or (C, Z, Y, X), dtype `dtype`), read slab by slab through
/// `read`, as an OME-Zarr image at `path` with every level of its pyramid (and Laplacian levels if asked). Each slab
/// is written whole-chunk along z (see the file comment for the levels).
inline PyramidSummary write_pyramid(const std::string& path, const std::vector<int64_t>& shape, torch::ScalarType dtype,
                                    const SlabReader& read, const PyramidOptions& o = {}) {
  using json = nlohmann::json;
  const auto p = detail::plan_pyramid(shape, o);
  QLTY_CHECK_ARG(o.zarr_format == 2 || o.zarr_format == 3, "zarr_format",
                 "write_pyramid: zarr_format must be 2 or 3, got ", o.zarr_format);
  json mine = {{"levels", p.levels}, {"downsample_z", p.downsample_z}};
  if (o.laplacian)
    mine["laplacian"] = {
        {"path", "laplacian"},
        {"levels", p.levels - 1},
        {"rule", "laplacian/l = level l - up(level l + 1); up: linear over y, x, align_corners false"}};
  json extra = o.attributes;
  extra["qlty"] = mine;
  const json attributes =
      zarr::with_ngff({{"multiscales", json::array({detail::pyramid_multiscales(p, o)})}}, extra, o.zarr_format);
  auto group = zarr::Group::create(path, attributes, o.zarr_format, o.overwrite);
  const auto dt = zarr::data_type(dtype);
  std::vector<zarr::Array> levels, laplacians;
  PyramidSummary summary;
  for (int64_t l = 0; l < p.levels; ++l) {
    summary.level_shapes.push_back(p.level_shape(l));
    levels.push_back(detail::create_level(qlty::detail::join_path(group.path(), std::to_string(l)),
                                          summary.level_shapes.back(), p, dt, o));
  }
  if (o.laplacian && p.levels > 1) {
    auto lap = group.create_group("laplacian");
    for (int64_t l = 0; l + 1 < p.levels; ++l)
      laplacians.push_back(detail::create_level(qlty::detail::join_path(lap.path(), std::to_string(l)),
                                                summary.level_shapes[l], p, zarr::DataType::Float32, o));
    summary.laplacian_levels = p.levels - 1;
  }
  const int64_t Z = shape[p.lead], depth = p.slab_depth();
  summary.slab_depth = depth;
  for (int64_t z0 = 0; z0 < Z; z0 += depth) {
    const int64_t z1 = std::min(Z, z0 + depth);
    auto slab = read(z0, z1);
    auto expected = shape;
    expected[p.lead] = z1 - z0;
    QLTY_CHECK_ARG(slab.sizes() == c10::IntArrayRef(expected), "read", "write_pyramid: the reader returned ",
                   slab.sizes(), " for z-slices [", z0, ", ", z1, "), expected ", c10::IntArrayRef(expected));
    slab = slab.to(dtype).contiguous();
    std::vector<torch::Tensor> g{slab};
    for (int64_t l = 1; l < p.levels; ++l) g.push_back(block_mean(slab, p.factors(l)).contiguous());
    for (int64_t l = 0; l < p.levels; ++l) {
      std::vector<int64_t> at(shape.size(), 0);
      at[p.lead] = z0 / p.factors(l)[0];
      levels[l].write(at, g[l]);
      if (l < static_cast<int64_t>(laplacians.size())) laplacians[l].write(at, laplacian_level(g[l], g[l + 1]));
    }
    if (o.progress) o.progress(z1, Z);
  }
  return summary;
}

/// @brief Level `level` of the pyramid at `path` rebuilt from its top level and its Laplacian levels (float32):
/// equal to the stored level to float rounding.
inline torch::Tensor reconstruct_from_laplacian(const std::string& path, int64_t level = 0) {
  const auto group = zarr::Group::open(path);
  const auto attrs = group.attributes();
  const auto q = attrs.find("qlty");
  if (q == attrs.end() || !q->contains("laplacian"))
    throw Error("zarr.missing", path + ": holds no Laplacian levels (write_pyramid with laplacian = true)");
  const int64_t n = (*q)["laplacian"]["levels"].get<int64_t>();
  QLTY_CHECK_ARG(level >= 0 && level <= n, "level", "reconstruct_from_laplacian: level must be in [0, ", n, "], got ",
                 level);
  auto g = zarr::Array::open(qlty::detail::join_path(path, std::to_string(n))).read().to(torch::kFloat);
  for (int64_t l = n - 1; l >= level; --l)
    g = reconstruct_level(zarr::Array::open(qlty::detail::join_path(path, "laplacian/" + std::to_string(l))).read(), g);
  return g;
}

}  // namespace qlty
