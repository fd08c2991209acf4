#pragma once
// PNG images read whole (libpng): gray, gray with alpha, RGB and RGBA, 1 to 16 bits; palettes become RGB(A) and
// fewer than 8 bits become 8. Samples per pixel are channels.

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>
#include <qlty/support/torch_compat.hpp>

#include <png.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace qlty::tool {

namespace png_detail {

struct Reader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~Reader() { png_destroy_read_struct(&png, &info, nullptr); }
};

// The libpng calls, each in a frame of its own holding nothing with a destructor (libpng reports errors by
// longjmp): false when libpng failed.
inline bool read_header(Reader* r, FILE* f, int64_t* H, int64_t* W, int64_t* C, int64_t* bytes) {
  if (setjmp(png_jmpbuf(r->png))) return false;
  png_init_io(r->png, f);
  png_set_sig_bytes(r->png, 8);
  png_read_info(r->png, r->info);
  const int depth = png_get_bit_depth(r->png, r->info), color = png_get_color_type(r->png, r->info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r->png);
  if (depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
  if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
  if (depth == 16) png_set_swap(r->png);  // little-endian samples
  png_read_update_info(r->png, r->info);
  *H = png_get_image_height(r->png, r->info);
  *W = png_get_image_width(r->png, r->info);
  *C = png_get_channels(r->png, r->info);
  *bytes = png_get_bit_depth(r->png, r->info) / 8;
  return true;
}

inline bool read_rows(Reader* r, png_bytep* rows) {
  if (setjmp(png_jmpbuf(r->png))) return false;
  png_read_image(r->png, rows);
  png_read_end(r->png, nullptr);
  return true;
}

}  // namespace png_detail

/// (Y, X) for gray images, else (C, Y, X); uint8, or uint16 for 16-bit images (int32 before LibTorch 2.3).
inline torch::Tensor read_png(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error("input", path + ": no such file");
  if (!S_ISREG(st.st_mode)) throw Error("input", path + ": not a regular file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) detail::throw_io("open", path, errno);
  png_byte sig[8] = {};
  if (std::fread(sig, 1, 8, f.get()) != 8 || png_sig_cmp(sig, 0, 8) != 0)
    throw Error("input", path + ": not a PNG file");
  png_detail::Reader r;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (r.png) r.info = png_create_info_struct(r.png);
  if (!r.png || !r.info) throw Error("io", path + ": out of memory for libpng");
  int64_t H = 0, W = 0, C = 0, bytes = 0;
  auto damaged = [&] { return Error("input", path + ": a damaged PNG file (libpng could not decode it)"); };
  if (!png_detail::read_header(&r, f.get(), &H, &W, &C, &bytes)) throw damaged();
  const auto wide = detail::unsigned_dtype(2);
  auto image = torch::empty({H, W, C}, bytes == 2 ? (wide ? *wide : torch::kShort) : torch::kByte);
  std::vector<png_bytep> rows(static_cast<size_t>(H));
  for (int64_t y = 0; y < H; ++y)
    rows[static_cast<size_t>(y)] = static_cast<png_bytep>(image.data_ptr()) + y * W * C * bytes;
  if (!png_detail::read_rows(&r, rows.data())) throw damaged();
  if (bytes == 2 && !wide) image = image.to(torch::kInt).bitwise_and_(0xFFFF);  // uint16 as int32 (LibTorch < 2.3)
  return C == 1 ? image.squeeze(2) : image.permute({2, 0, 1}).contiguous();
}

}  // namespace qlty::tool
