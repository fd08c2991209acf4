#pragma once
// A folder of numbered 2D images (TIFF, PNG or .npy) as one volume: the files, their counters in natural order,
// the counters missing between the first and the last, and the slices read in parallel.

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>

#include "input.hpp"
#include "npy.hpp"
#include "png.hpp"
#include "tiff.hpp"

#include <ATen/Parallel.h>
#include <dirent.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <regex>
#include <string>
#include <vector>

namespace qlty::tool {

struct StackFile {
  std::string path;
  int64_t counter = 0;
};

struct ImageStack {
  std::string folder, kind;      // kind: "TIFF", "PNG" or ".npy"
  std::vector<StackFile> files;  // by counter
  std::vector<int64_t> missing;  // counters absent between the first and the last
  std::vector<int64_t> slice;    // one slice's shape: (Y, X) or (C, Y, X)
  torch::ScalarType dtype = torch::kByte;

  /// The volume's shape in NGFF order: (Z, Y, X) or (C, Z, Y, X).
  std::vector<int64_t> shape() const {
    const auto Z = static_cast<int64_t>(files.size());
    if (slice.size() == 2) return {Z, slice[0], slice[1]};
    return {slice[0], Z, slice[1], slice[2]};
  }
};

inline const char* image_kind(const std::string& name) {
  if (is_tiff(name)) return "TIFF";
  if (ends_with(name, ".png")) return "PNG";
  if (is_npy(name)) return ".npy";
  return nullptr;
}

/// One slice: (Y, X), or (C, Y, X) for several samples per pixel.
inline torch::Tensor read_slice(const std::string& path) {
  torch::Tensor t;
  if (is_tiff(path)) {
    const auto raw = read_tiff(path);  // (Y, X), (Z, Y, X) pages, or (1, C, [Z,] Y, X) with C samples per pixel
    if (raw.dim() != 2 && raw.dim() != 4)
      throw Error("input",
                  path + ": a stack's files must be 2D images (one page), this one is " + c10::str(raw.sizes()));
    t = raw.dim() == 4 ? raw.squeeze(0) : raw;
  } else if (ends_with(path, ".png")) {
    t = read_png(path);
  } else {
    t = NpyFile(path).read_all();
    if (t.dim() != 2)
      throw Error("input", path + ": a stack's .npy files must be 2D (Y, X), this one is " + c10::str(t.sizes()));
  }
  return t;
}

/// The numbered images in `folder`: with `pattern` (a regex matching whole file names, its one capture group the
/// counter), else every TIFF, PNG or .npy file, its counter the last run of digits in its name. The files must be of
/// one kind, with distinct counters; the first is read for the slice's shape and dtype.
inline ImageStack find_stack(const std::string& folder, const std::string& pattern) {
  ImageStack s;
  s.folder = folder;
  std::regex re;
  if (!pattern.empty()) {
    try {
      re = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw Error("input", "--pattern \"" + pattern + "\" is not a regular expression: " + e.what(), "pattern");
    }
    if (re.mark_count() != 1)
      throw Error("input",
                  "--pattern \"" + pattern + "\" must have exactly one capture group (the counter), got " +
                      std::to_string(re.mark_count()),
                  "pattern");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(folder.c_str()), &::closedir);
  if (!dir) detail::throw_io("list", folder, errno);
  std::vector<std::string> kinds;
  while (const dirent* e = ::readdir(dir.get())) {
    const std::string name = e->d_name;
    struct stat st {};
    if (name == "." || name == ".." || ::stat(detail::join_path(folder, name).c_str(), &st) != 0 ||
        !S_ISREG(st.st_mode))
      continue;
    std::string digits;
    if (!pattern.empty()) {
      std::smatch m;
      if (!std::regex_match(name, m, re)) continue;
      digits = m[1].str();
      if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit))
        throw Error("input", folder + "/" + name + ": --pattern's group matched \"" + digits + "\", not a number",
                    "pattern");
    } else {
      if (!image_kind(name)) continue;
      const auto end = name.find_last_of("0123456789");
      if (end == std::string::npos) continue;
      auto begin = end;
      while (begin > 0 && std::isdigit(static_cast<unsigned char>(name[begin - 1]))) --begin;
      digits = name.substr(begin, end - begin + 1);
    }
    if (digits.size() > 18) throw Error("input", folder + "/" + name + ": the counter " + digits + " is too long");
    const char* kind = image_kind(name);
    if (!kind) throw Error("input", folder + "/" + name + ": matches --pattern but is not a TIFF, PNG or .npy file");
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.emplace_back(kind);
    s.files.push_back({detail::join_path(folder, name), std::stoll(digits)});
  }
  if (s.files.empty())
    throw Error("input", folder + ": no numbered " +
                             (pattern.empty() ? std::string("TIFF, PNG or .npy files")
                                              : "files matching --pattern \"" + pattern + "\""));
  if (kinds.size() > 1)
    throw Error("input", folder + ": holds numbered files of several kinds (" + c10::Join(", ", kinds) +
                             "); choose one with --pattern, e.g. --pattern 'slice_(\\d+)\\.tif'");
  s.kind = kinds[0];
  std::sort(s.files.begin(), s.files.end(), [](const StackFile& a, const StackFile& b) {
    return a.counter != b.counter ? a.counter < b.counter : a.path < b.path;
  });
  for (size_t i = 1; i < s.files.size(); ++i) {
    const auto &a = s.files[i - 1], &b = s.files[i];
    if (a.counter == b.counter)
      throw Error("input", a.path + " and " + b.path + " have the same counter (" + std::to_string(a.counter) +
                               "); narrow the files with --pattern");
    for (int64_t c = a.counter + 1; c < b.counter && s.missing.size() < 1000000; ++c) s.missing.push_back(c);
  }
  const auto first = read_slice(s.files[0].path);
  s.slice = first.sizes().vec();
  s.dtype = first.scalar_type();
  return s;
}

/// Slices [z0, z1) of a stack, read in parallel and checked against the first: ([C,] z1 - z0, Y, X).
inline torch::Tensor read_stack(const ImageStack& s, int64_t z0, int64_t z1) {
  std::vector<int64_t> shape = s.slice;
  shape.insert(shape.begin() + (s.slice.size() == 3 ? 1 : 0), z1 - z0);
  auto out = torch::empty(shape, torch::TensorOptions().dtype(s.dtype));
  const int64_t zaxis = s.slice.size() == 3 ? 1 : 0;
  at::parallel_for(z0, z1, 1, [&](int64_t b, int64_t e) {
    for (int64_t z = b; z < e; ++z) {
      const auto& f = s.files[static_cast<size_t>(z)].path;
      auto t = read_slice(f);
      if (t.sizes() != c10::IntArrayRef(s.slice) || t.scalar_type() != s.dtype)
        throw Error("input", f + ": " + c10::str(t.sizes(), " ", t.scalar_type()) + ", but the stack's first file " +
                                 s.files[0].path + " is " + c10::str(c10::IntArrayRef(s.slice), " ", s.dtype) +
                                 "; every slice must match");
      out.select(zaxis, z - z0).copy_(t);
    }
  });
  return out;
}

}  // namespace qlty::tool
