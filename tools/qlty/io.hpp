#pragma once
// The `qlty` program's inputs and outputs: Zarr arrays, TIFF images and stacks (libtiff), NumPy .npy files
// (read box by box), as qlty::BlockInput (N, C, *S).
//
// Ranks: 2 = an image (Y, X), 3 = a volume (Z, Y, X), 4 = (N, C, Y, X), 5 = (N, C, Z, Y, X). A TIFF file with one
// page is an image, with several pages a volume; samples per pixel (RGB) become channels.

#include <CLI/CLI.hpp>
#include <qlty/blockwise.hpp>
#include <qlty/error.hpp>
#include <qlty/zarr.hpp>

#include <tiffio.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
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
/// missing n and c axes have size 1. `name`: the file or folder it is read from.
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
    throw CLI::ValidationError("--axes", "\"" + axes + "\" names " + std::to_string(axes.size()) + " axes, but " +
                                             name + " has " + std::to_string(shape.size()) + " (shape " +
                                             c10::str(c10::IntArrayRef(shape)) + ")");
  for (size_t i = 0; i < axes.size(); ++i)
    if (std::string("nczyx").find(axes[i]) == std::string::npos || axes.find(axes[i]) != i)
      throw CLI::ValidationError("--axes",
                                 "expected distinct letters of n, c, z, y, x (e.g. czyx, nczyx, zyx, yx, "
                                 "cyx), got \"" +
                                     axes + "\"");
  if (axes.find('y') == std::string::npos || axes.find('x') == std::string::npos)
    throw CLI::ValidationError("--axes", "must include y and x, got \"" + axes + "\"");
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

// ---------------------------------------------------------------------------------------------------- .npy

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

/// A .npy file as an input, read box by box (NpyFile).
inline BlockInput open_npy(const std::string& path, const std::string& axes = "") {
  const NpyFile f(path);
  return as_block_input(
      f.shape(), [f](const std::vector<int64_t>& off, const std::vector<int64_t>& ext) { return f.read(off, ext); },
      path, detail::file_fingerprint(path), axes);
}

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

// ---------------------------------------------------------------------------------------------------- TIFF

struct TiffCloser {
  void operator()(TIFF* t) const {
    if (t) TIFFClose(t);
  }
};
using TiffPtr = std::unique_ptr<TIFF, TiffCloser>;

/// TIFF sample types and the dtypes they read as and are written from. Unsigned 16/32/64-bit samples are themselves
/// where LibTorch has those types (2.3); before, 16-bit ones read as int32 (read_tiff) and the others are refused.
struct TiffSample {
  uint16_t bps, format;
  torch::ScalarType dtype;
};
inline std::vector<TiffSample> tiff_samples() {
  std::vector<TiffSample> v = {{8, SAMPLEFORMAT_UINT, torch::kByte},     {8, SAMPLEFORMAT_INT, torch::kChar},
                               {16, SAMPLEFORMAT_INT, torch::kShort},    {32, SAMPLEFORMAT_INT, torch::kInt},
                               {64, SAMPLEFORMAT_INT, torch::kLong},     {32, SAMPLEFORMAT_IEEEFP, torch::kFloat},
                               {64, SAMPLEFORMAT_IEEEFP, torch::kDouble}};
  for (uint16_t bps : {16, 32, 64})
    if (const auto u = detail::unsigned_dtype(bps / 8)) v.push_back({bps, SAMPLEFORMAT_UINT, *u});
  return v;
}

/// Reads a TIFF image or multi-page stack whole: (Y, X) or (Z, Y, X), or with C samples per pixel (1, C, [Z,] Y, X).
inline torch::Tensor read_tiff(const std::string& path) {
  TIFFSetWarningHandler(nullptr);
  if (!detail::path_exists(path)) throw Error("input", path + ": no such file");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))  // libtiff would block on a FIFO
    throw Error("input", path + ": not a regular file");
  TiffPtr tif(TIFFOpen(path.c_str(), "r"));
  if (!tif) throw Error("input", path + ": not a readable TIFF file");
  std::vector<torch::Tensor> pages;
  do {
    uint32_t w = 0, h = 0;
    uint16_t spp = 1, bps = 8, fmt = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
    TIFFGetField(tif.get(), TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(tif.get(), TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_SAMPLEFORMAT, &fmt);
    TIFFGetFieldDefaulted(tif.get(), TIFFTAG_PLANARCONFIG, &planar);
    std::optional<torch::ScalarType> t;
    bool widen = false;
    for (const auto& k : tiff_samples())
      if (k.bps == bps && k.format == fmt) t = k.dtype;
    if (!t && fmt == SAMPLEFORMAT_UINT && bps == 16) t = torch::kShort, widen = true;  // before LibTorch 2.3
    if (!t)
      throw Error("input", path + ": page " + std::to_string(pages.size()) + ": " + std::to_string(bps) +
                               "-bit samples of format " + std::to_string(fmt) + " are not supported (" +
                               (detail::unsigned_dtype(8) ? "8 to 64-bit integers"
                                                          : "8 to 64-bit signed integers, "
                                                            "8/16-bit unsigned ones") +
                               ", 32/64-bit floats)");
    if (!pages.empty() && (pages[0].size(-1) != w || pages[0].size(-2) != h || pages[0].size(0) != spp))
      throw Error("input", path + ": page " + std::to_string(pages.size()) + " has another size or sample count (" +
                               std::to_string(spp) + " x " + std::to_string(h) + " x " + std::to_string(w) +
                               ") than page 0 (" + c10::str(pages[0].sizes()) + ")");
    auto page = torch::empty({h, w, spp}, torch::TensorOptions().dtype(*t));  // contiguous samples
    auto* dst = static_cast<uint8_t*>(page.data_ptr());
    const size_t px = c10::elementSize(*t);
    auto fail = [&](const char* what) {
      throw Error("input", path + ": page " + std::to_string(pages.size()) + ": " + what + " failed (damaged file?)");
    };
    if (TIFFIsTiled(tif.get())) {
      uint32_t tw = 0, th = 0;
      TIFFGetField(tif.get(), TIFFTAG_TILEWIDTH, &tw);
      TIFFGetField(tif.get(), TIFFTAG_TILELENGTH, &th);
      const size_t samples = planar == PLANARCONFIG_CONTIG ? spp : 1;
      std::vector<uint8_t> buf(TIFFTileSize(tif.get()));
      for (uint16_t s = 0; s < (planar == PLANARCONFIG_CONTIG ? 1 : spp); ++s)
        for (uint32_t y = 0; y < h; y += th)
          for (uint32_t x = 0; x < w; x += tw) {
            if (TIFFReadTile(tif.get(), buf.data(), x, y, 0, s) < 0) fail("reading a tile");
            for (uint32_t r = 0; r < th && y + r < h; ++r)
              for (uint32_t c = 0; c < tw && x + c < w; ++c)
                for (size_t k = 0; k < samples; ++k)
                  std::memcpy(dst + ((size_t(y + r) * w + x + c) * spp + (samples == 1 ? s : k)) * px,
                              buf.data() + ((size_t(r) * tw + c) * samples + k) * px, px);
          }
    } else {
      std::vector<uint8_t> line(TIFFScanlineSize(tif.get()));
      for (uint16_t s = 0; s < (planar == PLANARCONFIG_CONTIG ? 1 : spp); ++s)
        for (uint32_t y = 0; y < h; ++y) {
          if (TIFFReadScanline(tif.get(), line.data(), y, s) < 0) fail("reading a scanline");
          if (planar == PLANARCONFIG_CONTIG) {
            std::memcpy(dst + size_t(y) * w * spp * px, line.data(), size_t(w) * spp * px);
          } else {
            for (uint32_t x = 0; x < w; ++x)
              std::memcpy(dst + ((size_t(y) * w + x) * spp + s) * px, line.data() + size_t(x) * px, px);
          }
        }
    }
    auto chw = page.permute({2, 0, 1});
    pages.push_back(widen ? widen_u16(chw) : chw.contiguous());
  } while (TIFFReadDirectory(tif.get()));
  auto v = torch::stack(pages, 1);  // (C, Z, Y, X)
  if (v.size(0) == 1) {
    v = v.squeeze(0);
    return v.size(0) == 1 ? v.squeeze(0) : v;
  }
  return v.size(1) == 1 ? v.squeeze(1).unsqueeze(0) : v.unsqueeze(0);
}

/// Writes (Y, X), (Z, Y, X) or (1, C, [Z,] Y, X) as a TIFF image or stack (one page per Z, C samples per pixel).
inline void write_tiff(const std::string& path, torch::Tensor x) {
  if (x.dim() >= 4) {
    TORCH_CHECK_VALUE(x.size(0) == 1, "qlty convert: TIFF holds one image or volume, got N = ", x.size(0), " in shape ",
                      x.sizes());
    x = x.select(0, 0);  // (C, [Z,] Y, X)
    if (x.dim() == 3) x = x.unsqueeze(1);
  } else if (x.dim() == 3) {
    x = x.unsqueeze(0);
  } else {
    TORCH_CHECK_VALUE(x.dim() == 2, "qlty convert: TIFF needs 2 to 5 axes, got shape ", x.sizes());
    x = x.unsqueeze(0).unsqueeze(0);
  }
  // x: (C, Z, Y, X)
  uint16_t bps = 0, fmt = 0;
  for (const auto& k : tiff_samples())
    if (k.dtype == x.scalar_type()) bps = k.bps, fmt = k.format;
  if (bps == 0) x = x.to(torch::kFloat), bps = 32, fmt = SAMPLEFORMAT_IEEEFP;  // bool, float16, bfloat16
  const std::string tmp = detail::temp_name(path);
  TiffPtr tif(TIFFOpen(tmp.c_str(), x.numel() * x.element_size() > (int64_t(3) << 30) ? "w8" : "w"));
  if (!tif) detail::throw_io("create TIFF", tmp, errno);
  const auto C = x.size(0), Z = x.size(1), H = x.size(2), W = x.size(3);
  for (int64_t z = 0; z < Z; ++z) {
    auto page = x.select(1, z).permute({1, 2, 0}).contiguous();  // (Y, X, C)
    TIFFSetField(tif.get(), TIFFTAG_IMAGEWIDTH, uint32_t(W));
    TIFFSetField(tif.get(), TIFFTAG_IMAGELENGTH, uint32_t(H));
    TIFFSetField(tif.get(), TIFFTAG_SAMPLESPERPIXEL, uint16_t(C));
    TIFFSetField(tif.get(), TIFFTAG_BITSPERSAMPLE, bps);
    TIFFSetField(tif.get(), TIFFTAG_SAMPLEFORMAT, fmt);
    TIFFSetField(tif.get(), TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(tif.get(), TIFFTAG_PHOTOMETRIC, C == 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
    TIFFSetField(tif.get(), TIFFTAG_COMPRESSION, COMPRESSION_NONE);
    TIFFSetField(tif.get(), TIFFTAG_ROWSPERSTRIP, TIFFDefaultStripSize(tif.get(), 0));
    if (Z > 1) {
      TIFFSetField(tif.get(), TIFFTAG_SUBFILETYPE, FILETYPE_PAGE);
      TIFFSetField(tif.get(), TIFFTAG_PAGENUMBER, uint16_t(z), uint16_t(Z));
    }
    const auto* p = static_cast<uint8_t*>(page.data_ptr());
    const size_t row = size_t(W) * C * x.element_size();
    for (int64_t y = 0; y < H; ++y)
      if (TIFFWriteScanline(tif.get(), const_cast<uint8_t*>(p + y * row), uint32_t(y), 0) < 0)
        detail::throw_io("write TIFF", tmp, EIO);
    if (!TIFFWriteDirectory(tif.get())) detail::throw_io("write TIFF", tmp, EIO);
  }
  tif.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) detail::throw_io("rename", path, errno);
}

/// The full-resolution array of an OME-Zarr image group (its first multiscales dataset, else "0"), or "".
inline std::string first_scale(const std::string& group) {
  std::string rel = "0";
  try {
    const auto attrs = zarr::Group::open(group).attributes();
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
