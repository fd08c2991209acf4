// `qlty convert`: TIFF (image or stack), .npy and Zarr arrays (or an OME-Zarr image's first scale) into each other;
// a folder of numbered 2D images, or a volume with --levels, into an OME-Zarr image with a multiscale pyramid
// (qlty/pyramid.hpp), read and written slab by slab.
#include <qlty/pyramid.hpp>
#include <qlty/support/paths.hpp>
#include <qlty/zarr.hpp>

#include "commands.hpp"
#include "formats/input.hpp"
#include "formats/stack.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

namespace qlty::tool {

namespace {

struct ConvertArgs {
  std::string input, output, codec = "blosc";
  std::vector<int64_t> chunks, shards;
  int zarr_format = 0;  // 0: 3 with --shards, else 2
  bool overwrite = false, quiet = false;
  // pyramids
  std::string pattern, unit;
  int64_t levels = -1;  // -1: no pyramid asked for (a folder gets one anyway, levels automatic)
  bool pyramid_z = false, laplacian = false, allow_gaps = false;
  std::vector<double> voxel_size;
};

std::vector<zarr::Codec> codecs_of(const std::string& codec, int format) {
  if (codec == "none") return {};
  if (codec == "zstd") return {zarr::Codec::zstd(3)};
  if (codec == "zlib") return {format == 3 ? zarr::Codec::gzip(5) : zarr::Codec::zlib(5)};  // zlib is not a v3 codec
  return {zarr::Codec::blosc()};
}

/// A flag's values for the three spatial axes (z, y, x): one for all, or three.
template <typename T>
std::vector<T> three(const std::vector<T>& v, const char* flag) {
  if (v.empty() || v.size() == 3) return v;
  if (v.size() == 1) return {v[0], v[0], v[0]};
  throw CLI::ValidationError(flag, c10::str("takes 1 or 3 values (z, y, x) for a pyramid, got ", v.size()));
}

/// Counters missing from a stack, briefly: "4, 7-9, 12 (5 missing)".
std::string brief_ranges(const std::vector<int64_t>& missing) {
  std::string out;
  size_t shown = 0;
  for (size_t i = 0; i < missing.size() && shown < 8; ++shown) {
    size_t j = i;
    while (j + 1 < missing.size() && missing[j + 1] == missing[j] + 1) ++j;
    out += (out.empty() ? "" : ", ") + std::to_string(missing[i]) +
           (j > i ? "-" + std::to_string(missing[j]) : std::string());
    i = j + 1;
  }
  return out + (shown == 8 ? ", ..." : "") + " (" + std::to_string(missing.size()) + " missing)";
}

/// A TIFF, .npy or Zarr input (an OME-Zarr image: its first scale) read whole.
torch::Tensor read_whole(const std::string& input) {
  using qlty::Error;
  torch::Tensor data;
  if (is_tiff(input)) {
    data = read_tiff(input);
  } else if (is_npy(input)) {
    data = NpyFile(input).read_all();
  } else if (zarr::node_type(input) == zarr::NodeType::Array ||
             (zarr::node_type(input) == zarr::NodeType::Group && !first_scale(input).empty())) {
    // an OME-Zarr image (what qlty infer writes): its first, full-resolution scale
    const auto arr = zarr::Array::open(zarr::node_type(input) == zarr::NodeType::Array ? input : first_scale(input));
    // convert reads the array whole: refuse one that does not fit comfortably in memory, saying how large it is
    int64_t bytes = zarr::itemsize(arr.metadata().dtype);
    for (auto v : arr.shape()) bytes *= v;  // checked when the metadata was read
    const double memory = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    if (memory > 0 && double(bytes) > memory / 2)
      throw Error("input", c10::str(input, ": the array holds ", double(bytes) / 1e9,
                                    " GB, more than half of this "
                                    "machine's memory (",
                                    memory / 1e9,
                                    " GB); convert reads it whole, so convert "
                                    "parts of it, or use it as a Zarr input directly (qlty infer reads blocks)"));
    data = arr.read();
  } else {
    throw Error("input", input + (qlty::detail::path_exists(input)
                                      ? ": not a TIFF file, a .npy file, a Zarr array or an OME-Zarr image"
                                      : ": no such file or folder"));
  }
  return data;
}

/// A volume (a folder of numbered images, or data read whole) into an OME-Zarr pyramid.
int run_pyramid(const ConvertArgs& a) {
  using qlty::Error;
  const std::string target = qlty::detail::strip_slashes(a.output);
  if (qlty::detail::path_exists(target) && zarr::node_type(target) == zarr::NodeType::None &&
      !(qlty::detail::is_directory(target) && qlty::detail::list_dir(target).empty()))
    throw Error("zarr.exists", target + ": a file or a non-empty folder that is not a Zarr node exists here; " +
                                   "--overwrite replaces Zarr outputs only");
  PyramidOptions o;
  o.levels = a.levels < 0 ? 0 : a.levels;
  o.downsample_z = a.pyramid_z;
  o.laplacian = a.laplacian;
  o.chunks = three(a.chunks, "--chunks");
  o.shards = three(a.shards, "--shards");
  o.zarr_format = a.zarr_format ? a.zarr_format : (a.shards.empty() ? 2 : 3);
  if (o.zarr_format == 2 && !a.shards.empty())
    throw CLI::ValidationError("--shards", "needs --zarr-format 3 (sharding is Zarr v3), got --zarr-format 2");
  o.codecs = codecs_of(a.codec, o.zarr_format);
  o.unit = a.unit;
  o.voxel_size = three(a.voxel_size, "--voxel-size");
  o.overwrite = a.overwrite;
  o.name = qlty::detail::base_name(qlty::detail::strip_slashes(a.input));
  std::vector<int64_t> shape;
  torch::ScalarType dtype;
  SlabReader read;
  std::string what;
  if (qlty::detail::is_directory(a.input) && zarr::node_type(a.input) == zarr::NodeType::None) {
    auto stack = std::make_shared<ImageStack>(find_stack(a.input, a.pattern));
    if (!stack->missing.empty()) {
      const std::string gaps = "counters " + brief_ranges(stack->missing) + " between " +
                               std::to_string(stack->files.front().counter) + " and " +
                               std::to_string(stack->files.back().counter);
      if (!a.allow_gaps)
        throw Error("input", a.input + ": the numbered files have gaps: " + gaps +
                                 "; pass --allow-gaps to stack the files present next to each other");
      std::fprintf(stderr, "qlty convert: warning: %s has gaps: %s; stacked next to each other (--allow-gaps)\n",
                   a.input.c_str(), gaps.c_str());
    }
    shape = stack->shape();
    dtype = stack->dtype;
    read = [stack](int64_t z0, int64_t z1) { return read_stack(*stack, z0, z1); };
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : stack->files) files.push_back(qlty::detail::base_name(f.path));
    o.attributes["source"] = {{"folder", a.input}, {"files", files}, {"missing", stack->missing}};
    what = c10::str(stack->files.size(), " ", stack->kind, " files");
  } else {  // a whole image or volume: (Y, X), (Z, Y, X), (C, Z, Y, X), or TIFF's (1, C, [Z,] Y, X)
    auto data = read_whole(a.input);
    if (data.dim() == 5 && data.size(0) == 1) data = data.squeeze(0);
    if (data.dim() == 4 && data.size(0) == 1 && is_tiff(a.input)) data = data.squeeze(0).unsqueeze(1);  // C, 1, Y, X
    if (data.dim() == 2) data = data.unsqueeze(0);
    if (data.dim() != 3 && data.dim() != 4)
      throw Error("input", a.input + ": a pyramid needs an image (Y, X), a volume (Z, Y, X) or (C, Z, Y, X), got " +
                               c10::str(data.sizes()));
    shape = data.sizes().vec();
    dtype = data.scalar_type();
    read = [data](int64_t z0, int64_t z1) { return data.narrow(data.dim() - 3, z0, z1 - z0); };
    what = c10::str(data.sizes());
  }
  auto started = std::chrono::steady_clock::now(), shown = started;
  const bool bar = !a.quiet && ::isatty(2);
  o.progress = [&](int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (!bar || (done < total && now - shown < std::chrono::milliseconds(100))) return;
    shown = now;
    const double s = std::chrono::duration<double>(now - started).count();
    std::fprintf(stderr, "\r%3d%% %lld/%lld slices, %.1f slices/s%s", static_cast<int>(100 * done / total),
                 static_cast<long long>(done), static_cast<long long>(total), s > 0 ? double(done) / s : 0.0,
                 done == total ? "\n" : "   ");
  };
  if (!a.overwrite && qlty::detail::path_exists(a.output))
    throw Error("zarr.exists", a.output + ": exists (pass --overwrite to replace it)");
  // Written beside the output and renamed into place when complete: a run that fails (a damaged slice, a full
  // disk) leaves no partial pyramid behind, and an output it replaces stays until then.
  const std::string partial = qlty::detail::temp_name(target);
  o.overwrite = false;
  PyramidSummary summary;
  try {
    summary = write_pyramid(partial, shape, dtype, read, o);
    if (qlty::detail::path_exists(target)) qlty::detail::remove_tree(target);  // --overwrite, checked above
    if (std::rename(partial.c_str(), target.c_str()) != 0) qlty::detail::throw_io("rename", target, errno);
  } catch (...) {
    qlty::detail::remove_tree(partial);
    throw;
  }
  if (!a.quiet) {
    std::string levels;
    for (const auto& s : summary.level_shapes) {
      std::string one;
      for (auto v : s) one += (one.empty() ? "" : "x") + std::to_string(v);
      levels += (levels.empty() ? "" : ", ") + one;
    }
    std::printf("qlty convert: %s (%s) -> %s: OME-Zarr %s, %s, %zu levels (%s)%s\n", a.input.c_str(), what.c_str(),
                a.output.c_str(), o.zarr_format == 3 ? "0.5" : "0.4", zarr::name(zarr::data_type(dtype)),
                summary.level_shapes.size(), levels.c_str(),
                summary.laplacian_levels ? c10::str(", ", summary.laplacian_levels, " Laplacian").c_str() : "");
  }
  return 0;
}

int run_convert(const ConvertArgs& a) {
  using qlty::Error;
  namespace zarr = qlty::zarr;
  if (qlty::detail::paths_overlap(a.output, a.input))
    throw Error("overlap", a.output + ": the output would be the input " + a.input +
                               ", hold it or lie inside it (after resolving links); choose another output");
  if (!a.overwrite && qlty::detail::path_exists(a.output))
    throw Error("zarr.exists", a.output + ": exists (pass --overwrite to replace it)");
  const bool folder = qlty::detail::is_directory(a.input) && zarr::node_type(a.input) == zarr::NodeType::None;
  if (folder || a.levels >= 0 || a.laplacian || a.pyramid_z) {
    if (is_tiff(a.output) || is_npy(a.output))
      throw CLI::ValidationError("output", "a pyramid is an OME-Zarr image: name a Zarr output, got " + a.output);
    return run_pyramid(a);
  }
  const std::vector<std::pair<const char*, bool>> pyramid_only = {{"--pattern", !a.pattern.empty()},
                                                                  {"--unit", !a.unit.empty()},
                                                                  {"--voxel-size", !a.voxel_size.empty()},
                                                                  {"--allow-gaps", a.allow_gaps}};
  for (const auto& [flag, given] : pyramid_only)
    if (given) throw CLI::ValidationError(flag, "is for pyramids: a folder of numbered images as input, or --levels");
  const auto data = read_whole(a.input);
  if (is_tiff(a.output)) {
    write_tiff(a.output, data);
  } else if (is_npy(a.output)) {
    write_npy(a.output, data.contiguous());
  } else {
    std::vector<int64_t> chunks, shards;
    const int64_t spatial = data.dim() >= 4 ? data.dim() - 2 : data.dim();
    auto per_axis = [&](const std::vector<int64_t>& v, const char* flag, int64_t s) {
      if (v.size() != 1 && v.size() != static_cast<size_t>(spatial))
        throw CLI::ValidationError(
            flag, c10::str("takes 1 or ", spatial, " values (one per spatial axis of ", a.input, "), got ", v.size()));
      return v.size() == 1 ? v[0] : v[static_cast<size_t>(s)];
    };
    for (int64_t ax = 0; ax < data.dim(); ++ax) {
      const int64_t s = ax - (data.dim() - spatial);
      int64_t c = s < 0 ? 1 : (spatial == 2 ? 256 : 64);
      if (s >= 0 && !a.chunks.empty()) c = per_axis(a.chunks, "--chunks", s);
      chunks.push_back(std::min(c, data.size(ax)));
      int64_t shard = c;
      if (s >= 0 && !a.shards.empty()) shard = per_axis(a.shards, "--shards", s);
      if (shard < 1 || shard % c != 0)
        throw CLI::ValidationError("--shards", c10::str("must be whole chunks on every axis (", c, " here), got ",
                                                        c10::IntArrayRef(a.shards)));
      // whole chunks covering the axis at most
      shards.push_back(std::min(shard, (data.size(ax) + chunks.back() - 1) / chunks.back() * chunks.back()));
    }
    const int format = a.zarr_format ? a.zarr_format : (a.shards.empty() ? 2 : 3);
    if (format == 2 && !a.shards.empty())
      throw CLI::ValidationError("--shards", "needs --zarr-format 3 (sharding is Zarr v3), got --zarr-format 2");
    zarr::ArrayOptions o(data.sizes().vec(), a.shards.empty() ? chunks : shards, zarr::data_type(data.scalar_type()));
    o.zarr_format = format;
    if (!a.shards.empty()) o.inner_chunks = chunks;
    o.codecs = codecs_of(a.codec, format);
    o.overwrite = a.overwrite;
    zarr::Array::create(a.output, o).write(std::vector<int64_t>(data.dim(), 0), data);
  }
  if (!a.quiet) {
    std::string shape;
    for (auto v : data.sizes()) shape += (shape.empty() ? "" : " x ") + std::to_string(v);
    std::printf("qlty convert: %s -> %s: %s, %s\n", a.input.c_str(), a.output.c_str(), shape.c_str(),
                zarr::name(zarr::data_type(data.scalar_type())));
  }
  return 0;
}

}  // namespace

Command setup_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  ConvertArgs& ca = *args;
  auto* convert = app.add_subcommand("convert",
                                     "convert between TIFF (image or stack), .npy and chunked, compressed "
                                     "Zarr arrays; the kind follows the file name");
  convert->add_option("input", ca.input, "TIFF, .npy or Zarr array, or a folder of numbered 2D images")->required();
  convert->add_option("output", ca.output, "TIFF (.tif, .tiff), .npy or Zarr array (anything else)")->required();
  convert
      ->add_option("--chunks", ca.chunks,
                   "Zarr chunk size per spatial axis (default 64 for volumes, 256 for "
                   "images)")
      ->delimiter(',');
  convert
      ->add_option("--shards", ca.shards,
                   "Zarr v3 shards per spatial axis, whole chunks: each file a shard of chunks with an index; implies "
                   "--zarr-format 3")
      ->delimiter(',');
  convert->add_option("--zarr-format", ca.zarr_format, "Zarr version of a Zarr output: 2 (default) or 3")
      ->check(CLI::IsMember({2, 3}));
  convert->add_option("--codec", ca.codec, "Zarr compression (zlib is gzip in Zarr v3)")
      ->capture_default_str()
      ->check(CLI::IsMember({"blosc", "zstd", "zlib", "none"}));
  convert
      ->add_option("--pattern", ca.pattern,
                   "a folder's files: a regex matching whole names, its one group the counter (default: TIFF, PNG "
                   "or .npy files, the counter the last number in the name)")
      ->group("Pyramids");
  convert->add_option("--levels", ca.levels, "pyramid levels, level 0 included (0: until the top fits one chunk)")
      ->check(CLI::Range(0, 16))
      ->group("Pyramids");
  convert->add_flag("--pyramid-z", ca.pyramid_z, "halve z at each level too (default: y and x only)")
      ->group("Pyramids");
  convert->add_flag("--laplacian", ca.laplacian, "also write Laplacian levels (float32) under laplacian/")
      ->group("Pyramids");
  convert->add_option("--unit", ca.unit, "the unit of z, y and x (NGFF: micrometer, nanometer, ...; um, nm, mm)")
      ->group("Pyramids");
  convert->add_option("--voxel-size", ca.voxel_size, "level 0's pixel size in --unit: one value or z,y,x")
      ->delimiter(',')
      ->group("Pyramids");
  convert->add_flag("--allow-gaps", ca.allow_gaps, "stack numbered files with missing counters next to each other")
      ->group("Pyramids");
  convert->add_flag("--overwrite", ca.overwrite, "replace an existing output");
  convert->add_flag("--quiet,-q", ca.quiet, "no summary");
  return {convert, [args] { return run_convert(*args); }};
}

}  // namespace qlty::tool
