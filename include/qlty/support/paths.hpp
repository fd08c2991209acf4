#pragma once
// Paths as the file system resolves them: for refusing an output that is, holds or lies inside an input.

#include <qlty/support/fs.hpp>

#include <climits>
#include <cstdlib>
#include <string>

namespace qlty::detail {

/// The absolute path with links resolved (the path as given when it cannot be resolved).
inline std::string resolved_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

/// The resolved form of a path that may not exist yet: its deepest existing ancestor resolved, the rest appended.
inline std::string resolved_new_path(const std::string& path) {
  std::string head = path, tail;
  while (!head.empty() && head != "/" && !path_exists(head)) {
    const std::string base = base_name(head);
    tail = tail.empty() ? base : join_path(base, tail);
    const std::string parent = parent_path(head);
    if (parent == head) break;
    head = parent;
  }
  const std::string r = resolved_path(head.empty() ? "." : head);
  return tail.empty() ? r : join_path(r, tail);
}

/// Whether two paths (existing or not) name the same file or folder, or one lies inside the other.
inline bool paths_overlap(const std::string& a, const std::string& b) {
  auto norm = [](std::string p) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
  };
  const std::string x = norm(resolved_new_path(a)), y = norm(resolved_new_path(b));
  auto inside = [](const std::string& in, const std::string& of) {
    return in.size() > of.size() && in.compare(0, of.size(), of) == 0 && (of == "/" || in[of.size()] == '/');
  };
  return x == y || inside(x, y) || inside(y, x);
}

}  // namespace qlty::detail
