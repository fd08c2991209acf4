#pragma once
// Helpers of the `qlty` program's end-to-end tests: run it (or mpirun) as a user does, read what it wrote.

#include "../common.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace qlty_cli_test {

struct Result {
  int code = -1;
  std::string out, err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// Starts `program args...` (default: qlty) with stdout and stderr going to files in `dir` (`tag`stdout and
/// `tag`stderr); returns its pid.
inline pid_t start(const std::vector<std::string>& args, const std::string& dir, const char* program = QLTY_CLI,
                   const std::string& tag = "") {
  const std::string out = dir + "/" + tag + "stdout", err = dir + "/" + tag + "stderr";
  std::vector<char*> argv{const_cast<char*>(program)};  // built before fork: the child only calls exec-safe functions
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execv(program, argv.data());
    ::_exit(127);
  }
  return pid;
}

inline int wait_for(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// Runs `program args...` (default: qlty) to the end.
inline Result run(const std::vector<std::string>& args, const std::string& dir, const char* program = QLTY_CLI) {
  Result r;
  r.code = wait_for(start(args, dir, program));
  r.out = slurp(dir + "/stdout");
  r.err = slurp(dir + "/stderr");
  return r;
}

inline void expect_fails(const Result& r, const std::vector<std::string>& parts) {
  EXPECT_NE(r.code, 0) << r.out << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

/// A .npy file written byte by byte (independent of the program's writer).
inline void write_npy_by_hand(const std::string& path, const torch::Tensor& x, const std::string& descr) {
  std::string shape;
  for (auto s : x.sizes()) shape += std::to_string(s) + ",";
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  h.append(63 - (10 + h.size()) % 64, ' ');
  h += "\n";
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const char len[2] = {static_cast<char>(h.size() & 0xff), static_cast<char>(h.size() >> 8)};
  f.write(len, 2);
  f << h;
  auto c = x.contiguous();
  f.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
}

/// Every file under a folder (hidden files included), by relative path.
inline void files_under(const std::string& root, const std::string& rel, std::map<std::string, std::string>& out) {
  for (const auto& f : qlty::detail::list_dir(root + "/" + rel)) {
    const std::string r = rel.empty() ? f : rel + "/" + f;
    if (qlty::detail::is_directory(root + "/" + r))
      files_under(root, r, out);
    else
      out[r] = slurp(root + "/" + r);
  }
}

}  // namespace qlty_cli_test
