#pragma once
// POSIX file operations of the storage layer: bounded reads, atomic writes (temp file + rename), folders and
// open-file-description range locks. Every failure is a qlty::Error naming the path and the system's reason.

#include <qlty/error.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace qlty::detail {

inline std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

[[noreturn]] inline void throw_io(const std::string& what, const std::string& path, int err) {
  throw Error("io", path + ": " + what + " failed: " + errno_text(err));
}

/// The folder part of a path ("." when there is none).
inline std::string parent_path(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

inline std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

inline std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return a.back() == '/' ? a + b : a + "/" + b;
}

inline bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

inline bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// mkdir -p.
inline void make_dirs(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  const std::string parent = parent_path(path);
  if (parent != path) make_dirs(parent);
  if (::mkdir(path.c_str(), 0777) != 0 && errno != EEXIST) throw_io("mkdir", path, errno);
  if (!is_directory(path)) throw Error("io", path + ": exists and is not a folder");
}

/// The names in a folder, without "." and ".."; nullopt when the folder is not there.
inline std::optional<std::vector<std::string>> list_dir_if_present(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) {
    if (errno == ENOENT) return std::nullopt;
    throw_io("opendir", path, errno);
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

/// The names in a folder, without "." and "..".
inline std::vector<std::string> list_dir(const std::string& path) {
  auto names = list_dir_if_present(path);
  if (!names) throw_io("opendir", path, ENOENT);
  return *names;
}

/// rm -r (only used on folders this library created). Another process may remove the same tree at the same
/// time (parts finishing together): what is already gone counts as removed.
inline void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    const auto names = list_dir_if_present(path);
    if (!names) return;
    for (const auto& n : *names) remove_tree(join_path(path, n));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) throw_io("rmdir", path, errno);
  } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw_io("unlink", path, errno);
  }
}

/// A file opened for reading (closed with this), with what fstat said of it.
struct ReadableFile {
  int fd = -1;
  struct stat st {};
  ReadableFile() = default;
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;
  ~ReadableFile() {
    if (fd >= 0) ::close(fd);
  }
  /// Opens `path` into `f`; false when nothing is there. O_NONBLOCK: a FIFO in place of a file must not block the
  /// open (callers refuse what is not a regular file).
  static bool open(const std::string& path, ReadableFile& f) {
    f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f.fd < 0) {
      if (errno == ENOENT) return false;
      throw_io("open", path, errno);
    }
    if (::fstat(f.fd, &f.st) != 0) throw_io("fstat", path, errno);
    return true;
  }
  /// Reads up to `n` bytes at offset `at` into `dst`; fewer only where the file ends. Returns how many.
  size_t read_at(uint8_t* dst, size_t n, uint64_t at, const std::string& path) const {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd, dst + done, n - done, static_cast<off_t>(at + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_io("read", path, errno);
      }
      if (r == 0) break;  // the file ended (for a file replaced by rename, the old inode stays whole)
      done += static_cast<size_t>(r);
    }
    return done;
  }
};

/// Opens `path` into `f` and returns its size, or nullopt when nothing is there. A path that is not a regular file,
/// or a file larger than max_bytes, is a `zarr.format` error (`what` names the kind of file in the message).
inline std::optional<uint64_t> open_regular_file(const std::string& path, ReadableFile& f, uint64_t max_bytes,
                                                 const char* what) {
  if (!ReadableFile::open(path, f)) return std::nullopt;
  if (!S_ISREG(f.st.st_mode))
    throw Error("zarr.format", path + ": the " + std::string(what) + " is not a regular file");
  const uint64_t size = static_cast<uint64_t>(f.st.st_size);
  if (size > max_bytes)
    throw Error("zarr.format", path + ": the " + std::string(what) + " has " + std::to_string(size) +
                                   " bytes, more than the " + std::to_string(max_bytes) + " it can hold");
  return size;
}

/// Reads a whole regular file into `out` (grown as needed, never shrunk: callers reuse it) and returns its size,
/// or nullopt when nothing is there (errors as open_regular_file).
inline std::optional<size_t> read_file_into(const std::string& path, std::vector<uint8_t>& out, uint64_t max_bytes,
                                            const char* what = "file") {
  ReadableFile f;
  const auto size = open_regular_file(path, f, max_bytes, what);
  if (!size) return std::nullopt;
  if (out.size() < *size) out.resize(*size);
  return f.read_at(out.data(), *size, 0, path);
}

/// Reads a whole regular file into `dst`, which has room for max_bytes, and returns its size, or nullopt when
/// nothing is there (errors as open_regular_file).
inline std::optional<size_t> read_file_into(const std::string& path, uint8_t* dst, uint64_t max_bytes,
                                            const char* what = "file") {
  ReadableFile f;
  const auto size = open_regular_file(path, f, max_bytes, what);
  if (!size) return std::nullopt;
  return f.read_at(dst, *size, 0, path);
}

/// A whole regular file, or nullopt when nothing is there (errors as read_file_into).
inline std::optional<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_bytes,
                                                     const char* what = "file") {
  std::vector<uint8_t> buf;
  const auto n = read_file_into(path, buf, max_bytes, what);
  if (!n) return std::nullopt;
  buf.resize(*n);
  return buf;
}

/// Up to `n` bytes at one end of a regular file (its first bytes, or its last with `from_end`), or nullopt when
/// nothing is there: for telling a file's format without reading it whole.
inline std::optional<std::vector<uint8_t>> read_file_end(const std::string& path, size_t n, bool from_end) {
  ReadableFile f;
  if (!ReadableFile::open(path, f)) return std::nullopt;
  if (!S_ISREG(f.st.st_mode)) return std::vector<uint8_t>();
  const auto size = static_cast<uint64_t>(f.st.st_size);
  std::vector<uint8_t> out(static_cast<size_t>(std::min<uint64_t>(size, n)));
  out.resize(f.read_at(out.data(), out.size(), from_end ? size - out.size() : 0, path));
  return out;
}

/// This machine's name as it goes into temporary file names: letters, digits and '-' only, up to the first '.'.
inline const std::string& host_tag() {
  static const std::string tag = [] {
    char h[256] = {0};
    if (::gethostname(h, sizeof h - 1) != 0) return std::string("host");
    std::string t;
    for (const char* c = h; *c && *c != '.'; ++c)
      t += (std::isalnum(static_cast<unsigned char>(*c)) || *c == '-') ? *c : '-';
    return t.empty() ? std::string("host") : t;
  }();
  return tag;
}

/// A name for a temporary file next to `path`: hidden (never a chunk key or metadata name) and unique, with the
/// writer's pid and host (`.<base>.<pid>@<host>.<counter>.<random>.tmp`), so that only the temporary files of dead
/// processes on this machine are taken for stale when several machines share the storage.
inline std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  return join_path(parent_path(path), "." + base_name(path) + "." + std::to_string(::getpid()) + "@" + host_tag() +
                                          "." + std::to_string(counter++) + "." + std::to_string(rng() & 0xffffffff) +
                                          ".tmp");
}

/// The process id in a name made by temp_name on this machine, or 0 when the name is not one (or another
/// machine's, whose processes this one cannot see).
inline pid_t temp_owner(const std::string& name) {
  if (name.size() < 6 || name[0] != '.' || name.compare(name.size() - 4, 4, ".tmp") != 0) return 0;
  // .<base>.<pid>@<host>.<counter>.<random>.tmp: the writer is the fourth field from the end
  size_t end = name.size() - 4;
  for (int i = 0; i < 2; ++i) {
    end = name.rfind('.', end - 1);
    if (end == std::string::npos || end == 0) return 0;
  }
  const size_t begin = name.rfind('.', end - 1);
  if (begin == std::string::npos || begin + 1 >= end) return 0;
  std::string writer = name.substr(begin + 1, end - begin - 1);
  const size_t at = writer.find('@');
  if (at != std::string::npos) {
    if (writer.substr(at + 1) != host_tag()) return 0;
    writer.resize(at);
  }
  if (writer.empty() || writer.size() > 9) return 0;
  pid_t pid = 0;
  for (char c : writer) {
    if (c < '0' || c > '9') return 0;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}

/// Whether process `pid` of this machine has ended: no such process, or a zombie (it exited; its parent has not
/// collected it yet, as after mpirun ends before the ranks it killed are reaped).
inline bool process_ended(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  // /proc/PID/stat: "PID (COMMAND) STATE ..." (fstat gives it size 0: read up to the buffer's size)
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  ReadableFile f;
  if (!ReadableFile::open(path, f)) return true;
  uint8_t buf[512];
  const std::string s(reinterpret_cast<const char*>(buf), f.read_at(buf, sizeof buf, 0, path));
  const size_t close = s.rfind(')');
  return close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'Z';
}

/// Removes, under `dir` and its subfolders, the temporary files (temp_name) of processes that no longer run:
/// what a killed writer left. Returns how many.
inline int64_t remove_stale_temps(const std::string& dir) {
  int64_t removed = 0;
  for (const auto& name : list_dir(dir)) {
    const std::string p = join_path(dir, name);
    if (is_directory(p)) {
      removed += remove_stale_temps(p);
    } else if (const pid_t pid = temp_owner(name); pid > 0 && process_ended(pid)) {
      if (::unlink(p.c_str()) == 0) ++removed;
    }
  }
  return removed;
}

/// Flushes a folder's entries (fsync) or, with `whole_filesystem`, everything written to its filesystem (syncfs).
inline void sync_folder(const std::string& dir, bool whole_filesystem = false) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io("open folder", dir, errno);
  const int rc = whole_filesystem ? ::syncfs(fd) : ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && !(err == EINVAL && !whole_filesystem)) throw_io(whole_filesystem ? "syncfs" : "fsync", dir, err);
}

/// Bytes to write: a pointer and a size.
struct ByteSpan {
  const void* data;
  size_t size;
};

/// Writes `parts` one after another to a new file `path` (which must not exist), creating its folder if needed;
/// with `durable`, fsyncs it. On failure the partial file is removed.
inline void write_new_file(const std::string& path, const std::vector<ByteSpan>& parts, bool durable) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0 && errno == ENOENT) {
    make_dirs(parent_path(path));
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  }
  if (fd < 0) throw_io("create", path, errno);
  auto fail = [&](const char* what, int err) {
    ::close(fd);
    ::unlink(path.c_str());
    throw_io(what, path, err);
  };
  // writev in batches of at most IOV_MAX parts, resumed where a short write stopped
  std::vector<iovec> iov;
  for (const auto& p : parts)
    if (p.size) iov.push_back({const_cast<void*>(p.data), p.size});
  size_t first = 0;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, 1024));
    ssize_t w = ::writev(fd, iov.data() + first, count);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    while (first < iov.size() && static_cast<size_t>(w) >= iov[first].iov_len) w -= iov[first++].iov_len;
    if (first < iov.size() && w > 0) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + w;
      iov[first].iov_len -= static_cast<size_t>(w);
    }
  }
  if (durable && ::fsync(fd) != 0) fail("fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw_io("close", path, err);
  }
}

inline void write_new_file(const std::string& path, const void* data, size_t size, bool durable) {
  write_new_file(path, std::vector<ByteSpan>{{data, size}}, durable);
}

/// Writes `data` to a temporary file in the same folder and renames it over `path`: a reader sees the old file
/// or the new one, never a part. With `durable`, the file and its folder are fsynced before returning. On any
/// failure the temporary file is removed and `path` is untouched.
inline void atomic_write(const std::string& path, const std::vector<ByteSpan>& parts, bool durable) {
  const std::string tmp = temp_name(path);
  write_new_file(tmp, parts, durable);  // creates a nested chunk key's folder when needed
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw_io("rename", path, err);
  }
  if (durable) sync_folder(parent_path(path));
}

inline void atomic_write(const std::string& path, const void* data, size_t size, bool durable) {
  atomic_write(path, std::vector<ByteSpan>{{data, size}}, durable);
}

inline void atomic_write(const std::string& path, const std::string& text, bool durable) {
  atomic_write(path, text.data(), text.size(), durable);
}

/// Exclusive locks on byte ranges of one lock file, owned by this object's open file description: they exclude
/// other processes and other LockFile objects, not other threads using the same object (pair them with a mutex).
class LockFile {
 public:
  explicit LockFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) throw Error("lock", path_ + ": cannot open the lock file: " + errno_text(errno));
  }
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  ~LockFile() { ::close(fd_); }

  /// Blocks until byte `slot` of the file is locked by this object.
  void lock(int64_t slot) { set(slot, F_WRLCK, true); }
  /// Locks byte `slot` if no one else holds it; false when someone does.
  bool try_lock(int64_t slot) { return set(slot, F_WRLCK, false); }
  void unlock(int64_t slot) { set(slot, F_UNLCK, true); }
  const std::string& path() const { return path_; }

 private:
  bool set(int64_t slot, short type, bool wait) {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(slot);
    fl.l_len = 1;
    while (::fcntl(fd_, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) != 0) {
      if (errno == EINTR) continue;
      if (!wait && (errno == EAGAIN || errno == EACCES)) return false;
      throw Error("lock", path_ + ": fcntl(" + (wait ? "F_OFD_SETLKW" : "F_OFD_SETLK") + ") on slot " +
                              std::to_string(slot) + ": " + errno_text(errno));
    }
    return true;
  }

  std::string path_;
  int fd_ = -1;
};

}  // namespace qlty::detail
