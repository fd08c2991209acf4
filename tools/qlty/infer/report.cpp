#include "report.hpp"

#include "../formats/png_preview.hpp"

#include <qlty/zarr.hpp>

namespace qlty::tool {

/// A middle slice (or the image) of input channel 0, output channels 0-2 and std channel 0 of image 0, side by side.
void write_preview(const std::string& png, const qlty::BlockInput& input, const std::string& output, bool with_std) {
  const auto& s = input.shape();
  const int D = input.spatial_dims();
  std::vector<int64_t> off(s.size(), 0), ext(s.begin(), s.end());
  ext[0] = ext[1] = 1;
  if (D == 3) off[2] = s[2] / 2, ext[2] = 1;
  auto plane = [&](const torch::Tensor& t) { return t.reshape({t.size(-2), t.size(-1)}); };
  std::vector<std::pair<std::string, torch::Tensor>> panels = {{"input", plane(input.read(off, ext))}};
  auto mean = qlty::zarr::Array::open(qlty::detail::join_path(output, "0"));
  for (int64_t c = 0; c < std::min<int64_t>(3, mean.shape()[1]); ++c) {
    auto o = off, e = ext;
    o[1] = c;
    panels.emplace_back("output c" + std::to_string(c), plane(mean.read(o, e)));
  }
  if (with_std)
    panels.emplace_back("std c0",
                        plane(qlty::zarr::Array::open(qlty::detail::join_path(output, "std")).read(off, ext)));
  write_png(png, preview_strip(panels));
}

void print_summary(const InferArgs& a, const qlty::BlockInput& input, const qlty::BlockwiseSummary& s,
                   const qlty::BlockwiseOptions& o) {
  int64_t wvox = 1;
  const auto& w = o.window.values();  // one per axis (infer_options)
  for (int ax = 0; ax < input.spatial_dims(); ++ax) wvox *= w.size() == 1 ? w[0] : w.at(static_cast<size_t>(ax));
  const double rate = s.seconds > 0 ? double(s.windows_computed) / s.seconds : 0.0;
  const std::string part = o.part.second > 1 ? c10::str(" (part ", o.part.first, "/", o.part.second, ")") : "";
  std::printf(
      "qlty infer: %s %s%s: %lld windows in %.2f s (%.1f windows/s, %.0f MB/s of windows), %lld of %lld blocks "
      "computed, %lld already done; block %s, chunks %s; %.2f s in the model; %d thread%s\n",
      s.complete ? "wrote" : "partly wrote", a.output.c_str(), part.c_str(), static_cast<long long>(s.windows_computed),
      s.seconds, rate, rate * double(wvox * input.shape()[1] * 4) / 1e6, static_cast<long long>(s.blocks_computed),
      static_cast<long long>(s.blocks_total), static_cast<long long>(s.blocks_skipped),
      c10::str(c10::IntArrayRef(s.block)).c_str(), c10::str(c10::IntArrayRef(s.chunks)).c_str(), s.model_seconds,
      at::get_num_threads(), at::get_num_threads() == 1 ? "" : "s");
  if (!a.preview.empty() && s.complete) std::printf("qlty infer: preview %s\n", a.preview.c_str());
  if (!s.complete && o.part.second > 1)
    std::printf(
        "qlty infer: this part is done when its blocks are; the output is complete when every part has run "
        "(see qlty info %s)\n",
        a.output.c_str());
  else if (!s.complete)
    std::printf("qlty infer: run the same command again to finish\n");
}

}  // namespace qlty::tool
