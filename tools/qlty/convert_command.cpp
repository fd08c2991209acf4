// `qlty convert`: TIFF (image or stack), .npy and Zarr arrays (or an OME-Zarr image's first scale) into each other.
#include <qlty/support/paths.hpp>
#include <qlty/zarr.hpp>

#include "commands.hpp"
#include "formats/input.hpp"

#include <unistd.h>

#include <cstdio>
#include <memory>

namespace qlty::tool {

namespace {

struct ConvertArgs {
  std::string input, output, codec = "blosc";
  std::vector<int64_t> chunks, shards;
  int zarr_format = 0;  // 0: 3 with --shards, else 2
  bool overwrite = false, quiet = false;
};

int run_convert(const ConvertArgs& a) {
  using qlty::Error;
  namespace zarr = qlty::zarr;
  if (qlty::detail::paths_overlap(a.output, a.input))
    throw Error("overlap", a.output + ": the output would be the input " + a.input +
                               ", hold it or lie inside it (after resolving links); choose another output");
  if (!a.overwrite && qlty::detail::path_exists(a.output))
    throw Error("zarr.exists", a.output + ": exists (pass --overwrite to replace it)");
  torch::Tensor data;
  if (is_tiff(a.input)) {
    data = read_tiff(a.input);
  } else if (is_npy(a.input)) {
    data = NpyFile(a.input).read_all();
  } else if (zarr::node_type(a.input) == zarr::NodeType::Array ||
             (zarr::node_type(a.input) == zarr::NodeType::Group && !first_scale(a.input).empty())) {
    // an OME-Zarr image (what qlty infer writes): its first, full-resolution scale
    const auto arr =
        zarr::Array::open(zarr::node_type(a.input) == zarr::NodeType::Array ? a.input : first_scale(a.input));
    // convert reads the array whole: refuse one that does not fit comfortably in memory, saying how large it is
    int64_t bytes = zarr::itemsize(arr.metadata().dtype);
    for (auto v : arr.shape()) bytes *= v;  // checked when the metadata was read
    const double memory = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    if (memory > 0 && double(bytes) > memory / 2)
      throw Error("input", c10::str(a.input, ": the array holds ", double(bytes) / 1e9,
                                    " GB, more than half of this "
                                    "machine's memory (",
                                    memory / 1e9,
                                    " GB); convert reads it whole, so convert "
                                    "parts of it, or use it as a Zarr input directly (qlty infer reads blocks)"));
    data = arr.read();
  } else {
    throw Error("input", a.input + (qlty::detail::path_exists(a.input)
                                        ? ": not a TIFF file, a .npy file, a Zarr array or an OME-Zarr image"
                                        : ": no such file or folder"));
  }
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
    if (a.codec == "none")
      o.codecs = {};
    else if (a.codec == "zstd")
      o.codecs = {zarr::Codec::zstd(3)};
    else if (a.codec == "zlib")
      o.codecs = {format == 3 ? zarr::Codec::gzip(5) : zarr::Codec::zlib(5)};  // zlib is not a v3 codec
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
  convert->add_option("input", ca.input, "TIFF, .npy or Zarr array")->required();
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
  convert->add_flag("--overwrite", ca.overwrite, "replace an existing output");
  convert->add_flag("--quiet,-q", ca.quiet, "no summary");
  return {convert, [args] { return run_convert(*args); }};
}

}  // namespace qlty::tool
