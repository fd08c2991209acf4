#pragma once
// TIFF images and multi-page stacks (libtiff): read whole, written whole. Samples per pixel (RGB) are channels.

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/torch_compat.hpp>

#include <tiffio.h>
#include <torch/torch.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace qlty::tool {

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

}  // namespace qlty::tool
