#pragma once
// What the Zarr tests share: files written and read byte by byte, and commands run as a user runs them.
#include "../common.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace qlty_zarr_test {

/// Writes `b` to `path` (creating its folder), replacing what is there.
inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  qlty::detail::make_dirs(qlty::detail::parent_path(path));
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(b.data()), b.size());
}
inline std::vector<uint8_t> read_bytes(const std::string& path) { return *qlty::detail::read_file(path, 1 << 30); }

/// Runs a command, returns its exit status.
inline int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace qlty_zarr_test
