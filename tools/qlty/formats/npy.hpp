#pragma once
// NumPy .npy files (versions 1-3; little-endian or single-byte types, C order): read box by box with pread, and
// written whole.

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/torch_compat.hpp>

#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qlty::tool {

struct NpyHeader {
  torch::ScalarType dtype;
  bool widen_u16 = false;  // stored uint16, read as int32
  std::vector<int64_t> shape;
  size_t data_offset = 0;
};

/// The .npy types and the dtypes they read as and are written from. uint16/32/64 are themselves where LibTorch has
/// them (2.3); before, uint16 files read as int32 (NpyHeader::widen_u16) and uint32/64 are refused.
inline std::vector<std::pair<std::string, torch::ScalarType>> npy_types() {
  std::vector<std::pair<std::string, torch::ScalarType>> v = {
      {"|b1", torch::kBool},  {"|u1", torch::kByte},  {"|i1", torch::kChar},
      {"<i2", torch::kShort}, {"<i4", torch::kInt},   {"<i8", torch::kLong},
      {"<f2", torch::kHalf},  {"<f4", torch::kFloat}, {"<f8", torch::kDouble}};
  for (size_t bytes : {2, 4, 8})
    if (const auto u = detail::unsigned_dtype(bytes)) v.emplace_back("<u" + std::to_string(bytes), *u);
  return v;
}

/// Parses the header of a .npy file (versions 1-3): little-endian or single-byte types, C order.
inline NpyHeader parse_npy_header(const uint8_t* p, size_t n, const std::string& path) {
  auto bad = [&](const std::string& what) { throw Error("input", path + ": not a supported .npy file: " + what); };
  if (n < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) bad("no NumPy magic bytes");
  const int major = p[6];
  size_t hlen = 0, start = 0;
  if (major == 1) {
    hlen = p[8] | (size_t(p[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (n < 12) bad("truncated header");
    hlen = p[8] | (size_t(p[9]) << 8) | (size_t(p[10]) << 16) | (size_t(p[11]) << 24);
    start = 12;
  } else {
    bad("format version " + std::to_string(major));
  }
  if (start + hlen > n) bad("truncated header");
  const std::string h(reinterpret_cast<const char*>(p + start), hlen);
  auto value_of = [&](const std::string& key) {
    const auto k = h.find("'" + key + "'");
    if (k == std::string::npos) bad("no '" + key + "' in the header");
    auto v = h.find(':', k);
    if (v == std::string::npos) bad("malformed header");
    ++v;
    while (v < h.size() && h[v] == ' ') ++v;
    return v;
  };
  NpyHeader out;
  out.data_offset = start + hlen;
  auto d = value_of("descr");
  if (h[d] != '\'') bad("malformed descr");
  const std::string descr = h.substr(d + 1, h.find('\'', d + 1) - d - 1);
  bool found = false;
  for (const auto& [name, t] : npy_types())
    if (descr == name) out.dtype = t, found = true;
  if (!found && descr == "<u2") out.dtype = torch::kShort, out.widen_u16 = true, found = true;  // before LibTorch 2.3
  if (!found)
    bad("dtype '" + descr + "' (supported: bool, uint8, int8, int16, uint16, int32, int64, " +
        (detail::unsigned_dtype(8) ? "uint32, uint64, " : "") + "float16, float32, float64, little-endian" +
        (detail::unsigned_dtype(8) ? "" : "; uint32 and uint64 with LibTorch 2.3 or newer") + ")");
  auto f = value_of("fortran_order");
  if (h.compare(f, 5, "False") != 0) bad("Fortran order (save a C-ordered array: np.ascontiguousarray)");
  auto s = value_of("shape");
  if (h[s] != '(') bad("malformed shape");
  const auto e = h.find(')', s);
  std::string dims = h.substr(s + 1, e - s - 1);
  size_t i = 0;
  while (i < dims.size()) {
    while (i < dims.size() && (dims[i] == ' ' || dims[i] == ',')) ++i;
    if (i >= dims.size()) break;
    size_t j = i;
    while (j < dims.size() && std::isdigit(static_cast<unsigned char>(dims[j]))) ++j;
    if (j == i) bad("malformed shape (" + dims + ")");
    if (j - i > 18) bad("shape entry " + dims.substr(i, j - i) + " is too large (the shape is (" + dims + "))");
    out.shape.push_back(std::stoll(dims.substr(i, j - i)));
    i = j;
  }
  return out;
}

/// uint16 values held as int16 bits, as int32 (LibTorch 1.13 has no uint16).
inline torch::Tensor widen_u16(const torch::Tensor& t) { return t.to(torch::kInt).bitwise_and_(0xFFFF); }

/// An open .npy file, read with pread (never memory-mapped: a file truncated or rewritten while a run reads it is
/// an error naming the file, not a SIGBUS). Boxes are read from the page cache, the file is never loaded whole.
/// uint16 is read as int32 (LibTorch 1.13 has no uint16).
class NpyFile {
 public:
  explicit NpyFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // a FIFO must not block
    if (fd < 0) detail::throw_io("open", path, errno);
    fd_ = std::shared_ptr<int>(new int(fd), [](int* f) {
      ::close(*f);
      delete f;
    });
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw Error("input", path + ": not a regular file");
    size_ = static_cast<uint64_t>(st.st_size);
    mtime_ = st.st_mtim;
    if (size_ == 0) throw Error("input", path + ": not a supported .npy file: the file is empty");
    std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(size_, 12)));
    read_exact(head.data(), head.size(), 0);
    size_t hlen = head.size() >= 12 && head[6] >= 2
                      ? head[8] | (size_t(head[9]) << 8) | (size_t(head[10]) << 16) | (size_t(head[11]) << 24)
                  : head.size() >= 10 ? head[8] | (size_t(head[9]) << 8)
                                      : 0;
    head.resize(static_cast<size_t>(std::min<uint64_t>(size_, 12 + uint64_t(hlen))));
    read_exact(head.data(), head.size(), 0);
    header_ = parse_npy_header(head.data(), head.size(), path);
    int64_t numel = 1, nbytes = 0;
    for (auto v : header_.shape)
      if (__builtin_mul_overflow(numel, v, &numel))
        throw Error("input", path + ": the shape " + c10::str(c10::IntArrayRef(header_.shape)) +
                                 " has more elements than 64 bits can count");
    if (__builtin_mul_overflow(numel, static_cast<int64_t>(c10::elementSize(header_.dtype)), &nbytes))
      throw Error("input", path + ": the shape " + c10::str(c10::IntArrayRef(header_.shape)) +
                               " has more bytes than 64 bits can count");
    if (uint64_t(nbytes) > size_ || header_.data_offset + uint64_t(nbytes) > size_)
      throw Error("input", path + ": truncated: the header promises " + std::to_string(nbytes) +
                               " bytes of data, the file has " + std::to_string(size_ - header_.data_offset));
  }

  const std::string& path() const { return path_; }
  const std::vector<int64_t>& shape() const { return header_.shape; }

  /// The box [off, off + ext) as a CPU tensor (int32 for uint16 files).
  torch::Tensor read(const std::vector<int64_t>& off, const std::vector<int64_t>& ext) const {
    auto out = torch::empty(ext, torch::TensorOptions().dtype(header_.dtype));
    if (out.numel() > 0) read_box(static_cast<uint8_t*>(out.data_ptr()), off, ext);
    check_unchanged();
    return header_.widen_u16 ? widen_u16(out) : out;
  }
  torch::Tensor read_all() const { return read(std::vector<int64_t>(header_.shape.size(), 0), header_.shape); }

 private:
  // Rows: runs of contiguous bytes. Axes after k are whole, so a run is ext[k] of them; runs shorter than 32 KiB
  // are read a span of ext[k - 1] runs at a time (with the bytes between them) when the span is at most 8 times
  // what it holds.
  void read_box(uint8_t* dst, const std::vector<int64_t>& off, const std::vector<int64_t>& ext) const {
    const auto& S = header_.shape;
    const int r = static_cast<int>(S.size());
    const int64_t e = static_cast<int64_t>(c10::elementSize(header_.dtype));
    if (r == 0) return read_exact(dst, static_cast<size_t>(e), header_.data_offset);
    std::vector<int64_t> stride(static_cast<size_t>(r), e);  // bytes per step along each axis
    for (int a = r - 2; a >= 0; --a) stride[a] = stride[a + 1] * S[a + 1];
    int k = r - 1;
    while (k > 0 && ext[k] == S[k]) --k;  // axes after k are whole
    const int64_t run = ext[k] * stride[k];
    const bool span = k > 0 && ext[k - 1] > 1 && run < (int64_t(32) << 10) &&
                      (ext[k - 1] - 1) * stride[k - 1] + run <= 8 * ext[k - 1] * run;
    const int outer = span ? k - 1 : k;  // axes [0, outer) are walked one index at a time
    std::vector<uint8_t> tmp;
    std::vector<int64_t> idx(static_cast<size_t>(outer), 0);
    for (uint8_t* d = dst;;) {
      uint64_t at = header_.data_offset;
      for (int a = 0; a < outer; ++a) at += static_cast<uint64_t>((off[a] + idx[a]) * stride[a]);
      for (int a = outer; a <= k; ++a) at += static_cast<uint64_t>(off[a] * stride[a]);
      if (span) {
        tmp.resize(static_cast<size_t>((ext[k - 1] - 1) * stride[k - 1] + run));
        read_exact(tmp.data(), tmp.size(), at);
        for (int64_t j = 0; j < ext[k - 1]; ++j, d += run)
          std::memcpy(d, tmp.data() + j * stride[k - 1], static_cast<size_t>(run));
      } else {
        read_exact(d, static_cast<size_t>(run), at);
        d += run;
      }
      int a = outer - 1;
      for (; a >= 0; --a) {
        if (++idx[a] < ext[a]) break;
        idx[a] = 0;
      }
      if (a < 0) break;
    }
  }

  void read_exact(uint8_t* dst, size_t n, uint64_t at) const {
    size_t done = 0;
    while (done < n) {
      const ssize_t got = ::pread(*fd_, dst + done, n - done, static_cast<off_t>(at + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) detail::throw_io("read", path_, errno);
      if (got == 0)
        changed("it ends at byte " + std::to_string(at + done) + ", " + std::to_string(size_) +
                " bytes when it was opened");
      done += static_cast<size_t>(got);
    }
  }

  void check_unchanged() const {
    struct stat st {};
    if (::fstat(*fd_, &st) != 0) detail::throw_io("fstat", path_, errno);
    if (static_cast<uint64_t>(st.st_size) != size_ || st.st_mtim.tv_sec != mtime_.tv_sec ||
        st.st_mtim.tv_nsec != mtime_.tv_nsec)
      changed("it has " + std::to_string(st.st_size) + " bytes and another modification time than when it was opened");
  }

  [[noreturn]] void changed(const std::string& how) const {
    throw Error("input", path_ + ": the file changed while it was being read (" + how +
                             "); the predictions would mix two versions of it. Keep the input unchanged during a "
                             "run, then rerun the same command: finished blocks are kept");
  }

  std::string path_;
  std::shared_ptr<int> fd_;
  uint64_t size_ = 0;
  struct timespec mtime_ {};
  NpyHeader header_;
};

/// Writes a CPU tensor as a .npy file (little-endian, C order).
inline void write_npy(const std::string& path, const torch::Tensor& x) {
  std::string descr;
  for (const auto& [n, t] : npy_types())
    if (t == x.scalar_type()) descr = n;
  TORCH_CHECK_TYPE(!descr.empty(), "qlty::tool::write_npy: no .npy type for ", x.scalar_type());
  std::string shape = "(";
  for (auto s : x.sizes()) shape += std::to_string(s) + ", ";
  if (x.dim() > 1) shape.erase(shape.size() - 2, 1);
  if (x.dim() > 1) shape.pop_back();
  shape += ")";
  std::string h = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h.push_back('\n');
  std::string head = "\x93NUMPY";
  head.push_back(1);
  head.push_back(0);
  head.push_back(static_cast<char>(h.size() & 0xff));
  head.push_back(static_cast<char>(h.size() >> 8));
  head += h;
  auto c = x.contiguous().cpu();
  std::string bytes = head;
  bytes.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  detail::atomic_write(path, bytes.data(), bytes.size(), false);
}

}  // namespace qlty::tool
