// `qlty info`: what a Zarr array or group (an OME-Zarr image, an inference output and how much of it is done), a
// TIFF or a .npy file holds.
#include <qlty/blockwise.hpp>
#include <qlty/support/json.hpp>
#include <qlty/zarr.hpp>

#include "commands.hpp"
#include "formats/input.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>

namespace qlty::tool {

namespace {

std::string describe_array(const qlty::zarr::Array& a) {
  const auto& m = a.metadata();
  std::string codecs;
  for (const auto& c : m.codecs)
    codecs +=
        (codecs.empty() ? "" : ", ") +
        (m.zarr_format == 2 ? qlty::detail::v2_compressor_json(c) : qlty::detail::v3_codec_json(c, m.dtype)).dump();
  int64_t total = 1;
  for (auto g : a.chunk_grid()) total *= g;  // checked when the metadata was read
  if (m.sharded())                           // each file a shard of inner chunks
    return c10::str("Zarr v", m.zarr_format, " array, shape ", c10::IntArrayRef(m.shape), ", shards ",
                    c10::IntArrayRef(m.chunks), " of inner chunks ", c10::IntArrayRef(m.inner_chunks), " (",
                    m.inner_per_shard(), " per shard, index at the ", m.index_at_start ? "start" : "end",
                    m.index_crc32c ? " with crc32c" : "", "), ", qlty::zarr::name(m.dtype), ", codecs [", codecs, "], ",
                    a.stored_chunk_count(), " of ", total, " shard files stored");
  return c10::str("Zarr v", m.zarr_format, " array, shape ", c10::IntArrayRef(m.shape), ", chunks ",
                  c10::IntArrayRef(m.chunks), ", ", qlty::zarr::name(m.dtype), ", codecs [", codecs, "], ",
                  a.stored_chunk_count(), " of ", total, " chunks stored");
}

/// The parts of an output, one a line; of part counts above 16, consecutive parts in the same state share a line:
/// "parts 0-62/100: 0 of 0 blocks done (empty share: nothing to run)".
void print_parts(const qlty::BlockwiseStatus& s) {
  auto state = [](const qlty::BlockwisePartStatus& p) {
    if (p.blocks == 0) return "empty share: nothing to run";
    if (p.blocks_done == p.blocks) return "complete";
    return p.started ? "started" : "missing: never started";
  };
  for (size_t i = 0; i < s.parts.size();) {
    size_t j = i + 1;
    int64_t done = s.parts[i].blocks_done, blocks = s.parts[i].blocks;
    while (j < s.parts.size() && s.parts[i].count > 16 && s.parts[j].count == s.parts[i].count &&
           s.parts[j].index == s.parts[j - 1].index + 1 && std::strcmp(state(s.parts[j]), state(s.parts[i])) == 0) {
      done += s.parts[j].blocks_done;
      blocks += s.parts[j].blocks;
      ++j;
    }
    const auto& p = s.parts[i];
    const std::string which = j == i + 1 ? c10::str("part ", p.index, "/", p.count)
                                         : c10::str("parts ", p.index, "-", s.parts[j - 1].index, "/", p.count);
    std::printf("  %s: %lld of %lld blocks done (%s)\n", which.c_str(), static_cast<long long>(done),
                static_cast<long long>(blocks), state(p));
    i = j;
  }
  for (const auto& u : s.unlisted)
    std::printf("  and %lld more parts of %lld never started (not listed)\n", static_cast<long long>(u.missing),
                static_cast<long long>(u.count));
}

int run_info(const std::string& path) {
  using qlty::Error;
  namespace zarr = qlty::zarr;
  if (is_npy(path) || is_tiff(path)) {
    auto in = open_input(path);
    auto t = in.read(std::vector<int64_t>(in.shape().size(), 0), std::vector<int64_t>(in.shape().size(), 1));
    std::printf("%s: %s, as (N, C, %s) %s, %s\n", path.c_str(), is_npy(path) ? "NumPy array" : "TIFF",
                in.spatial_dims() == 3 ? "Z, Y, X" : "Y, X", c10::str(c10::IntArrayRef(in.shape())).c_str(),
                c10::toString(t.scalar_type()));
    return 0;
  }
  const auto kind = zarr::node_type(path);
  if (kind == zarr::NodeType::Array) {
    std::printf("%s: %s\n", path.c_str(), describe_array(zarr::Array::open(path)).c_str());
    return 0;
  }
  if (kind != zarr::NodeType::Group) {
    if (!qlty::detail::path_exists(path)) throw Error("input", path + ": no such file or folder");
    throw Error("input", path + ": not a Zarr array or group, a .npy file or a TIFF file");
  }
  auto g = zarr::Group::open(path);
  const auto group_attrs = g.attributes();
  const auto& attrs = zarr::ngff_attributes(group_attrs);
  std::printf("%s: Zarr v%d group\n", path.c_str(), g.zarr_format());
  if (attrs.is_object() && attrs.contains("multiscales")) {  // NGFF: checked, every value comes from a file
    using qlty::detail::brief;
    const std::string f = qlty::detail::join_path(path, g.zarr_format() == 2 ? ".zattrs" : "zarr.json");
    const auto& ms = attrs.at("multiscales");
    if (!ms.is_array() || ms.empty() || !ms[0].is_object())
      throw Error("zarr.format", f + ": multiscales must be a non-empty list of objects, got " + brief(ms));
    std::string axes;
    for (const auto& ax : qlty::detail::key(ms[0], "axes", f)) {
      if (!ax.is_object() && !ax.is_string())
        throw Error("zarr.format", f + ": multiscales[0].axes entries must be objects, got " + brief(ax));
      const auto& name = ax.is_string() ? ax : qlty::detail::key(ax, "name", f);
      axes += qlty::detail::as_string(name, "multiscales[0].axes name", f);
    }
    const auto& holder = attrs.contains("version") ? attrs : ms[0];  // 0.5 : 0.4
    const auto v = holder.find("version");
    std::printf("  OME-Zarr image (NGFF %s), axes %s\n",
                v != holder.end() && v->is_string() ? v->get<std::string>().c_str() : "?", axes.c_str());
  }
  // The group's members: folders only, links not followed, at most 16 levels.
  std::function<void(const std::string&, const std::string&, int)> walk = [&](const std::string& dir,
                                                                              const std::string& rel, int depth) {
    for (const auto& f : qlty::detail::list_dir(dir)) {
      if (f[0] == '.') continue;
      const auto p = qlty::detail::join_path(dir, f), r = rel.empty() ? f : rel + "/" + f;
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      const auto t = zarr::node_type(p);
      if (t == zarr::NodeType::Array)
        std::printf("  %s: %s\n", r.c_str(), describe_array(zarr::Array::open(p)).c_str());
      else if (t == zarr::NodeType::Group && depth < 16)
        walk(p, r, depth + 1);
    }
  };
  walk(path, "", 0);
  if (qlty::detail::path_exists(qlty::detail::manifest_path(path))) {
    auto s = qlty::blockwise_status(path);  // a checked manifest
    const auto& l = s.manifest.at("layout");
    auto field = [&](const char* k) {
      const auto it = l.find(k);
      return it == l.end() ? std::string("?") : qlty::detail::brief(*it, 60);
    };
    std::printf(
        "  qlty inference output: %lld of %lld blocks done%s; window %s, step %s, border %s, border weight "
        "%s, block %s, model %s\n",
        static_cast<long long>(s.blocks_done), static_cast<long long>(s.blocks_total),
        s.blocks_done == s.blocks_total ? " (complete)"
        : s.parts.empty()               ? " (rerun the same command to finish)"
                                        : " (run the parts not complete to finish)",
        field("window").c_str(), field("step").c_str(), field("border").c_str(), field("border_weight").c_str(),
        field("block").c_str(), field("model").c_str());
    std::string extra;  // settings recorded when they differ from their defaults
    for (const char* k :
         {"input_axes", "blend", "pad", "tta_flip", "precision", "activation", "slicewise", "output_dtype"})
      if (l.contains(k)) extra += std::string(extra.empty() ? "" : ", ") + k + " " + field(k);
    if (!extra.empty()) std::printf("  also: %s\n", extra.c_str());
    print_parts(s);
  }
  return 0;
}

}  // namespace

Command setup_info(CLI::App& app) {
  auto info_path = std::make_shared<std::string>();
  auto* info = app.add_subcommand("info",
                                  "describe a Zarr array or group (and how much of an inference output is "
                                  "done), a TIFF or a .npy file");
  info->add_option("path", *info_path, "what to describe")->required();
  return {info, [info_path] { return run_info(*info_path); }};
}

}  // namespace qlty::tool
