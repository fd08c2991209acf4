#pragma once
// IWYU pragma: private, include <qlty/blockwise.hpp>
// Identities of inputs, for the resume checks of blockwise runs: something that changes when the input is another
// file, or the same file with other content. Not a hash of every byte (inputs are large): the resolved path, the
// size, the newest modification time, and checksums of the metadata and of a few samples of the data. A Zarr
// array's chunks are walked once (count, bytes, newest mtime): a chunk rewritten between two runs changes the
// newest mtime, wherever it lies.

#include <qlty/support/checksum.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/paths.hpp>
#include <qlty/zarr.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

namespace qlty::detail {

/// "<size>:<crc32c of up to 3 samples of `sample` bytes at the start, middle and end>" of a regular file, or "-"
/// when there is none.
inline std::string sampled_checksum(const std::string& path, size_t sample = size_t(64) << 10) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return "-";
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return "-";
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::vector<uint8_t> buf;
  for (uint64_t at : {uint64_t(0), size / 2, size > sample ? size - sample : 0}) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(sample, size - std::min(at, size)));
    const size_t old = buf.size();
    buf.resize(old + n);
    const ssize_t got = n ? ::pread(fd, buf.data() + old, n, static_cast<off_t>(at)) : 0;
    buf.resize(old + static_cast<size_t>(std::max<ssize_t>(got, 0)));
  }
  ::close(fd);
  char crc[9];
  std::snprintf(crc, sizeof crc, "%08x", crc32c(buf.data(), buf.size()));
  return std::to_string(size) + ":" + crc;
}

/// A file input: "file:<resolved path>:<size>:<mtime ns>:<sampled checksum>".
inline std::string file_fingerprint(const std::string& path) {
  struct stat st;
  const long long mtime = ::stat(path.c_str(), &st) == 0
                              ? static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec
                              : 0;
  return "file:" + resolved_path(path) + ":" + std::to_string(mtime) + ":" + sampled_checksum(path);
}

/// What changes when any file under `dir` changes: "<files>/<bytes>/<newest mtime in ns>" of the regular files
/// in it and its subfolders (one walk; links are not followed).
inline std::string tree_summary(const std::string& dir) {
  int64_t files = 0, bytes = 0, newest = 0;
  std::vector<std::string> todo{dir};
  while (!todo.empty()) {
    const std::string d = std::move(todo.back());
    todo.pop_back();
    const auto names = list_dir_if_present(d);
    if (!names) continue;
    for (const auto& n : *names) {
      const std::string p = join_path(d, n);
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        todo.push_back(p);
      } else if (S_ISREG(st.st_mode)) {
        ++files;
        bytes += static_cast<int64_t>(st.st_size);
        newest = std::max<int64_t>(newest, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec);
      }
    }
  }
  return std::to_string(files) + "/" + std::to_string(bytes) + "/" + std::to_string(newest);
}

/// A Zarr array: "zarr:<resolved path>:<checksum of its metadata file>:<checksums of its first, middle and last
/// chunk files>:<tree_summary of its folder>" (a missing chunk is "-").
inline std::string zarr_fingerprint(const zarr::Array& a) {
  const std::string meta = join_path(a.path(), a.metadata().zarr_format == 3 ? "zarr.json" : ".zarray");
  std::string id = "zarr:" + resolved_path(a.path()) + ":" + sampled_checksum(meta);
  const auto grid = a.chunk_grid();
  int64_t total = 1;
  for (auto g : grid) total *= g;
  for (int64_t flat : {int64_t(0), total / 2, total - 1}) {
    std::vector<int64_t> idx(grid.size());
    for (int64_t d = static_cast<int64_t>(grid.size()) - 1, r = flat; d >= 0; --d) {
      idx[d] = r % grid[d];
      r /= grid[d];
    }
    id += ':';  // appended apart: GCC 12 warns of a false overflow in ":" + std::string&& (its PR 105651)
    id += sampled_checksum(a.chunk_path(idx));
  }
  return id + ":" + tree_summary(a.path());
}

}  // namespace qlty::detail
