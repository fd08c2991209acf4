#pragma once
// The `qlty` program's inputs, by kind: Zarr arrays, OME-Zarr images (their first scale), TIFF images and stacks,
// NumPy .npy files (read box by box), as qlty::BlockInput (N, C, *S).
//
// Ranks: 2 = an image (Y, X), 3 = a volume (Z, Y, X), 4 = (N, C, Y, X), 5 = (N, C, Z, Y, X). A TIFF file with one
// page is an image, with several pages a volume; samples per pixel (RGB) become channels. `axes` (the --axes flag)
// names another order.

#include <qlty/blockwise.hpp>
#include <qlty/error.hpp>
#include <qlty/zarr.hpp>

#include "npy.hpp"
#include "tiff.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

namespace qlty::tool {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  return std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                    [](char a, char b) { return std::tolower(a) == std::tolower(b); });
}
inline bool is_tiff(const std::string& p) { return ends_with(p, ".tif") || ends_with(p, ".tiff"); }
inline bool is_npy(const std::string& p) { return ends_with(p, ".npy"); }

/// The axes an input of `rank` is read as when --axes is not given: yx, zyx, ncyx, nczyx.
inline std::string default_axes(size_t rank) {
  static const char* guess[] = {"", "", "yx", "zyx", "ncyx", "nczyx"};
  return rank <= 5 ? guess[rank] : "";
}

/// An input with axes `axes` (letters of n, c, z, y, x in the array's order; empty: default_axes) as (N, C, *S):
/// missing n and c axes have size 1. `name`: the file or folder it is read from. Wrong axes are an Error `input`
/// about the field `axes`.
inline BlockInput as_block_input(std::vector<int64_t> shape, BlockInput::Reader read, const std::string& name,
                                 const std::string& id, std::string axes = "") {
  if (axes.empty()) {
    if (shape.size() < 2 || shape.size() > 5)
      throw Error("input", name +
                               ": expected an image (Y, X), a volume (Z, Y, X), (N, C, Y, X) or (N, C, Z, Y, X), got " +
                               std::to_string(shape.size()) + " axes (shape " + c10::str(c10::IntArrayRef(shape)) +
                               "); say which axes it has with --axes (e.g. --axes czyx)");
    axes = default_axes(shape.size());
  }
  if (axes.size() != shape.size())
    throw Error("input",
                "\"" + axes + "\" names " + std::to_string(axes.size()) + " axes, but " + name + " has " +
                    std::to_string(shape.size()) + " (shape " + c10::str(c10::IntArrayRef(shape)) + ")",
                "axes");
  for (size_t i = 0; i < axes.size(); ++i)
    if (std::string("nczyx").find(axes[i]) == std::string::npos || axes.find(axes[i]) != i)
      throw Error("input",
                  "expected distinct letters of n, c, z, y, x (e.g. czyx, nczyx, zyx, yx, cyx), got \"" + axes + "\"",
                  "axes");
  if (axes.find('y') == std::string::npos || axes.find('x') == std::string::npos)
    throw Error("input", "must include y and x, got \"" + axes + "\"", "axes");
  // canonical axis k (n, c, [z,] y, x) is the input's axis src[k], or -1 when the input lacks it
  const std::string canon = axes.find('z') != std::string::npos ? "nczyx" : "ncyx";
  std::vector<int64_t> src, full;
  for (char l : canon) {
    const auto at = axes.find(l);
    src.push_back(at == std::string::npos ? -1 : static_cast<int64_t>(at));
    full.push_back(at == std::string::npos ? 1 : shape[at]);
  }
  if (axes == canon) return BlockInput(full, std::move(read), name, id, name);
  // recorded for resumes unless it is the default for the rank (zyx, yx: no axis moves)
  const std::string moved = axes == default_axes(shape.size()) ? "" : axes;
  return BlockInput(
      full,
      [read, src](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) {
        std::vector<int64_t> o(src.size(), 0), e(src.size(), 1), perm;
        size_t rank = 0;
        for (auto a : src) rank += a >= 0;
        o.resize(rank);
        e.resize(rank);
        for (size_t k = 0; k < src.size(); ++k)
          if (src[k] >= 0) {
            o[src[k]] = off[k];
            e[src[k]] = ext[k];
            perm.push_back(src[k]);
          }
        auto t = read(o, e).permute(perm);
        for (size_t k = 0; k < src.size(); ++k)
          if (src[k] < 0) t = t.unsqueeze(static_cast<int64_t>(k));
        return t;
      },
      name, id, name, moved);
}

/// A .npy file as an input, read box by box (NpyFile).
inline BlockInput open_npy(const std::string& path, const std::string& axes = "") {
  const NpyFile f(path);
  return as_block_input(
      f.shape(), [f](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) { return f.read(off, ext); },
      path, detail::file_fingerprint(path), axes);
}

/// The full-resolution array of an OME-Zarr image group (its first multiscales dataset, else "0"), or "".
inline std::string first_scale(const std::string& group) {
  std::string rel = "0";
  try {
    const auto group_attrs = zarr::Group::open(group).attributes();
    const auto& attrs = zarr::ngff_attributes(group_attrs);
    const auto ms = attrs.find("multiscales");
    if (ms != attrs.end() && ms->is_array() && !ms->empty() && (*ms)[0].is_object()) {
      const auto ds = (*ms)[0].find("datasets");
      if (ds != (*ms)[0].end() && ds->is_array() && !ds->empty() && (*ds)[0].is_object() && (*ds)[0].contains("path") &&
          (*ds)[0]["path"].is_string())
        rel = (*ds)[0]["path"].get<std::string>();
    }
  } catch (const std::exception&) {  // unreadable attributes: fall back to "0"
  }
  if (rel.empty() || rel.find("..") != std::string::npos || rel[0] == '/') rel = "0";
  const auto p = detail::join_path(group, rel);
  return zarr::node_type(p) == zarr::NodeType::Array ? p : "";
}

/// Opens an input file or folder by its kind: a Zarr array, an OME-Zarr image (its first scale), a .npy file or a
/// TIFF file; `axes` as in as_block_input.
inline BlockInput open_input(const std::string& path, const std::string& axes = "") {
  if (is_npy(path)) return open_npy(path, axes);
  if (is_tiff(path)) {
    auto t = read_tiff(path);  // (Y, X), (Z, Y, X) or (1, C, [Z,] Y, X)
    return as_block_input(t.sizes().vec(), detail::box_reader(t), path, detail::file_fingerprint(path), axes);
  }
  const auto kind = zarr::node_type(path);
  if (kind == zarr::NodeType::Group) {
    const auto scale = first_scale(path);
    if (!scale.empty()) return open_input(scale, axes);
  }
  if (kind != zarr::NodeType::Array) {
    if (!detail::path_exists(path)) throw Error("input", path + ": no such file or folder");
    throw Error("input", path + ": not a Zarr array, an OME-Zarr image, a .npy file or a TIFF file (.tif, .tiff)");
  }
  auto a = zarr::Array::open(path);
  return as_block_input(
      a.shape(), [a](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) { return a.read(off, ext); },
      path, detail::zarr_fingerprint(a), axes);
}

}  // namespace qlty::tool
