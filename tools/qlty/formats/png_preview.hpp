#pragma once
// PNG previews of what `qlty infer --preview` and `qlty demo` wrote (libpng): planes side by side, each scaled so
// that its content is visible, enlarged to be read, and labelled with its name and the range of values shown.
//
// Scaling: each panel from its 0.5th to its 99.5th percentile to black..white. Where those are equal (99% of the
// panel is one value, as a spread that is zero except where windows meet), from the 0.5th to the 99.5th
// percentile of the values that differ from it: the seams show, the bulk stays black (or white).

#include <png.h>
#include <torch/torch.h>

#include <qlty/error.hpp>
#include <qlty/support/fs.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace qlty::tool {

/// Writes an 8-bit grayscale PNG of a (H, W) tensor of values in [0, 255], atomically.
inline void write_png(const std::string& path, const torch::Tensor& image) {
  auto img = image.to(torch::kByte).contiguous();
  const std::string tmp = detail::temp_name(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) detail::throw_io("create", tmp, errno);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    std::remove(tmp.c_str());
    throw Error("io", path + ": writing the PNG failed");
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(img.size(1)), static_cast<png_uint_32>(img.size(0)), 8,
               PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t r = 0; r < img.size(0); ++r) png_write_row(png, img.data_ptr<uint8_t>() + r * img.size(1));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fclose(f) != 0) detail::throw_io("close", tmp, errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) detail::throw_io("rename", path, errno);
}

namespace preview_detail {

/// 5x7 glyphs of the characters labels use ('#' lit), rows top to bottom.
inline const std::array<const char*, 7>* glyph(char c) {
  static const std::vector<std::pair<char, std::array<const char*, 7>>> font = {
      {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
      {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
      {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
      {'3', {"####.", "....#", "....#", ".###.", "....#", "....#", "####."}},
      {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
      {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
      {'6', {".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."}},
      {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
      {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
      {'9', {".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."}},
      {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
      {'-', {".....", ".....", ".....", ".###.", ".....", ".....", "....."}},
      {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
      {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
      {'n', {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
      {'p', {".....", ".....", "####.", "#...#", "####.", "#....", "#...."}},
      {'u', {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
      {'t', {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}},
      {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
      {'s', {".....", ".....", ".###.", "#....", ".###.", "....#", "####."}},
      {'d', {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"}},
      {'c', {".....", ".....", ".###.", "#....", "#....", "#...#", ".###."}},
      {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}}};
  for (const auto& [ch, rows] : font)
    if (ch == c) return &rows;
  return nullptr;  // a space, or a character without a glyph: left blank
}

/// Draws `text` in white into `img` (H, W) float, top-left corner at (y, x), each font pixel `s` x `s` pixels.
inline void draw_text(torch::Tensor& img, const std::string& text, int64_t y, int64_t x, int64_t s) {
  auto a = img.accessor<float, 2>();
  for (char c : text) {
    if (const auto* g = glyph(c))
      for (int64_t r = 0; r < 7; ++r)
        for (int64_t col = 0; col < 5; ++col)
          if ((*g)[r][col] == '#')
            for (int64_t dy = 0; dy < s; ++dy)
              for (int64_t dx = 0; dx < s; ++dx) {
                const int64_t py = y + r * s + dy, px = x + col * s + dx;
                if (py < img.size(0) && px < img.size(1)) a[py][px] = 255.0f;
              }
    x += 6 * s;
  }
}

/// The values [lo, hi] a panel is scaled from (see the file's notes).
inline std::pair<float, float> display_range(const torch::Tensor& panel) {
  auto sorted = std::get<0>(panel.flatten().to(torch::kFloat).sort());
  auto at = [](const torch::Tensor& v, double q) {
    return v[static_cast<int64_t>(q * static_cast<double>(v.numel() - 1))].item<float>();
  };
  float lo = at(sorted, 0.005), hi = at(sorted, 0.995);
  if (hi > lo) return {lo, hi};
  auto rest = sorted.masked_select(sorted != lo);
  if (rest.numel() == 0) return {lo, lo};  // a constant panel
  const float rlo = at(rest, 0.005), rhi = at(rest, 0.995);
  return rlo > lo ? std::pair<float, float>{lo, rhi} : std::pair<float, float>{rlo, lo};
}

inline std::string short_number(float v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", static_cast<double>(v));
  return b;
}

}  // namespace preview_detail

/// Named panels (H, W) side by side: each scaled from its display range to black..white, enlarged by the same
/// whole factor to at least 256 pixels high (at most 8 times), under a band with its name and the range shown.
inline torch::Tensor preview_strip(const std::vector<std::pair<std::string, torch::Tensor>>& panels) {
  using namespace preview_detail;
  int64_t height = 1;
  for (const auto& p : panels) height = std::max(height, p.second.size(0));
  const int64_t zoom = std::clamp<int64_t>((256 + height - 1) / height, 1, 8), s = 2, band = 2 * 7 * s + 3 * 4;
  std::vector<torch::Tensor> parts;
  for (const auto& [name, panel] : panels) {
    const auto [lo, hi] = display_range(panel);
    auto f = panel.to(torch::kFloat);
    auto scaled = ((f - lo) / std::max(hi - lo, 1e-30f) * 255.0f).clamp(0, 255);
    scaled = scaled.repeat_interleave(zoom, 0).repeat_interleave(zoom, 1);
    const int64_t w = std::max<int64_t>(scaled.size(1), 6 * s * 16);
    auto column = torch::zeros({band + height * zoom, w});
    column.narrow(0, band, scaled.size(0)).narrow(1, 0, scaled.size(1)).copy_(scaled);
    draw_text(column, name, 4, 4, s);
    draw_text(column, short_number(lo) + " to " + short_number(hi), 8 + 7 * s, 4, s);
    if (!parts.empty()) parts.push_back(torch::full({column.size(0), 4 * s}, 128.0f));
    parts.push_back(column);
  }
  return torch::cat(parts, 1).round();
}

}  // namespace qlty::tool
