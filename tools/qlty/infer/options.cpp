#include "options.hpp"

#include "../formats/npy.hpp"
#include "../launcher.hpp"

#include <cmath>

namespace qlty::tool {

torch::Device parse_device(const std::string& s) {
  std::optional<torch::Device> d;
  try {
    d = torch::Device(s);
  } catch (const c10::Error&) {
    throw CLI::ValidationError("--device", "expected cpu, cuda or cuda:N, got \"" + s + "\"");
  }
  if (d->is_cuda() && !torch::cuda::is_available())
    throw CLI::ValidationError("--device", "\"" + s + "\" asked for, but CUDA is not available on this machine");
  return *d;
}

/// "i/K" -> {i, K}, 0 <= i < K.
std::pair<int64_t, int64_t> parse_part(const std::string& s) {
  const auto slash = s.find('/');
  int64_t i = -1, k = 0;
  try {
    size_t used = 0;
    if (slash != std::string::npos) {
      i = std::stoll(s.substr(0, slash), &used);
      if (used != slash) i = -1;
      k = std::stoll(s.substr(slash + 1), &used);
      if (used != s.size() - slash - 1) k = 0;
    }
  } catch (const std::exception&) {
    k = 0;
  }
  if (k < 1 || i < 0 || i >= k)
    throw CLI::ValidationError("--part", "expected i/K with 0 <= i < K (e.g. 0/4, or $SLURM_ARRAY_TASK_ID/" +
                                             std::string("$SLURM_ARRAY_TASK_COUNT), got \"") + s + "\"");
  return {i, k};
}

torch::ScalarType parse_dtype(const std::string& s, const char* flag) {
  if (s == "float32") return torch::kFloat;
  if (s == "float16") return torch::kHalf;
  if (s == "bfloat16") return torch::kBFloat16;
  if (s == "uint8") return torch::kByte;
  throw CLI::ValidationError(flag, "unknown dtype \"" + s + "\"");
}

BlockwiseOptions infer_options(const InferArgs& a, const torch::Device& device, const std::vector<int64_t>& shape) {
  const int D = static_cast<int>(shape.size()) - 2;
  qlty::BlockwiseOptions o;
  // --slicewise -w Y,X (or -w W): windows of depth 1 (the library checks the rest)
  const bool slices = a.slicewise && D == 3;
  auto window = slices && a.window.size() == 2 ? std::vector<int64_t>{1, a.window[0], a.window[1]}
                                               : per_axis(a.window, D, "--window");
  if (slices && a.window.size() == 1) window[0] = 1;
  constexpr int64_t max_block_mib = int64_t(1) << 24;  // 16 TiB
  if (a.block_mib < 1 || a.block_mib > max_block_mib)
    throw CLI::ValidationError("--block-memory",
                               c10::str("must be in [1, ", max_block_mib, "] MiB, got ", a.block_mib));
  qlty::detail::check_window_fits(shape, window, a.block_mib << 20, "the window does not fit in --block-memory");
  check_threads(a.threads);
  std::vector<int64_t> step;
  if (!a.step.empty() && !a.overlap.empty())
    throw CLI::ValidationError("--overlap", "give either --step or --overlap, not both");
  if (!a.overlap
           .empty()) {  // MONAI: int(window * (1 - overlap)), at least 1; the window itself where it fills the axis
    const auto ov = per_axis(a.overlap, D, "--overlap");
    for (int ax = 0; ax < D; ++ax) {
      if (!(ov[ax] >= 0 && ov[ax] < 1))
        throw CLI::ValidationError("--overlap", c10::str("must be in [0, 1) on every axis, got ", ov[ax]));
      const int64_t s = static_cast<int64_t>(static_cast<double>(window[ax]) * (1.0 - ov[ax]));
      step.push_back(window[ax] >= shape[2 + ax] ? window[ax] : std::max<int64_t>(1, s));
    }
  } else if (!a.step.empty()) {
    step = slices && a.step.size() == 2 ? std::vector<int64_t>{1, a.step[0], a.step[1]} : per_axis(a.step, D, "--step");
    if (window[0] == 1 && D == 3 && a.step.size() == 1) step[0] = 1;  // slices: every one
  } else {  // three quarters of the window (MONAI's overlap 0.25)
    for (auto w : window) step.push_back(std::max<int64_t>(1, w * 3 / 4));
  }
  // the library's grid over the padded input (which checks window and step): pixels in no window (step > window)
  // are refused in the terms of the flag that set the step
  std::vector<int64_t> padded(shape.begin() + 2, shape.end());
  for (int ax = 0; ax < D; ++ax) padded[ax] = std::max(padded[ax], window[ax]);
  const auto grid = qlty::Blend::constant();
  const int gap =
      D == 2 ? qlty::Geometry<2>({padded[0], padded[1]}, window, step, grid, "qlty infer").gap_axis()
             : qlty::Geometry<3>({padded[0], padded[1], padded[2]}, window, step, grid, "qlty infer").gap_axis();
  if (gap >= 0)
    throw CLI::ValidationError(
        a.overlap.empty() ? "--step" : "--overlap",
        c10::str("the step ", c10::IntArrayRef(step), " exceeds the window ", c10::IntArrayRef(window),
                 ": pixels between windows would have no prediction; use a step <= window"));
  o.window = window;
  o.step = step;
  o.border = per_axis(a.border, D, "--border");  // border and border weight: checked with the grid (plan_grid)
  o.border_weight = a.border_weight;
  if (!a.sigma_scale.empty() && a.blend != "gaussian")
    throw CLI::ValidationError("--sigma-scale", "is for --blend gaussian, got --blend " + a.blend);
  if (!a.blend_window.empty() && a.blend != "custom")
    throw CLI::ValidationError("--blend-window", "is for --blend custom, got --blend " + a.blend);
  bool border_given = false;
  for (auto b : a.border) border_given = border_given || b != 0;
  if (a.blend != "border" && border_given)
    throw CLI::ValidationError("--border",
                               "weights windows with --blend border; it has no effect with --blend " + a.blend);
  if (a.blend == "constant") {
    o.blend = qlty::Blend::constant();
  } else if (a.blend == "gaussian") {
    const auto sg = per_axis(a.sigma_scale.empty() ? std::vector<double>{0.125} : a.sigma_scale, D, "--sigma-scale");
    for (auto v : sg)
      if (!(v > 0 && std::isfinite(v)))
        throw CLI::ValidationError("--sigma-scale", c10::str("must be > 0 on every axis, got ", v));
    o.blend = qlty::Blend::gaussian(sg);
    o.blend.gaussian_factors(window, "the gaussian");  // an ArgumentError about sigma_scale
  } else if (a.blend == "custom") {
    if (a.blend_window.empty())
      throw CLI::ValidationError("--blend", "custom needs --blend-window FILE.npy (a window of weights)");
    o.blend = qlty::Blend::custom(NpyFile(a.blend_window).read_all().to(torch::kFloat64));
    o.blend.weights(window, a.blend_window.c_str());  // shape, finite, >= 0, not all zero: about custom_window
  }
  if (a.pad_value && a.pad != "constant")
    throw CLI::ValidationError("--pad-value", "is for --pad constant, got --pad " + a.pad);
  if (a.pad == "constant")
    o.pad = qlty::Pad::constant(a.pad_value.value_or(0.0));
  else if (a.pad == "reflect")
    o.pad = qlty::Pad::reflect();
  else if (a.pad == "replicate")
    o.pad = qlty::Pad::replicate();
  else
    for (int ax = 0; ax < D; ++ax)
      if (shape[2 + ax] < window[ax])
        throw CLI::ValidationError(
            "--window", c10::str(c10::IntArrayRef(window), " is larger than the input ", c10::IntArrayRef(shape),
                                 " along a spatial axis, and --pad none refuses to pad"));
  o.tta_flip = a.tta == "flip";
  if (!a.tta_axes.empty()) {
    if (!o.tta_flip) throw CLI::ValidationError("--tta-axes", "is for --tta flip");
    const std::string letters = D == 3 ? "zyx" : "yx";
    for (char c : a.tta_axes) {
      if (c == ',') continue;
      const auto at = letters.find(c);
      if (at == std::string::npos)
        throw CLI::ValidationError("--tta-axes", "expected letters of " + letters + " (e.g. " +
                                                     (D == 3 ? "zyx or y,x" : "yx or x") + "), got \"" + a.tta_axes +
                                                     "\"");
      o.tta_axes.push_back(static_cast<int64_t>(at));
    }
  }
  o.precision = parse_dtype(a.precision, "--precision");
  o.output_dtype = parse_dtype(a.output_dtype, "--output-dtype");
  o.activation = a.activation == "sigmoid"   ? qlty::BlockwiseOptions::Activation::Sigmoid
                 : a.activation == "softmax" ? qlty::BlockwiseOptions::Activation::Softmax
                                             : qlty::BlockwiseOptions::Activation::None;
  o.slicewise = a.slicewise || (D == 3 && window[0] == 1);
  o.batch_size = a.batch_size;
  o.device = device;
  o.block = a.block;
  o.chunks = a.chunks;
  o.shards = a.shards;
  o.zarr_format = a.zarr_format ? a.zarr_format : (a.shards.empty() ? 2 : 3);
  o.block_bytes = a.block_mib << 20;
  o.write_std = a.std;
  o.write_argmax = a.argmax;
  o.overwrite = a.overwrite;
  o.max_blocks = a.max_blocks;
  if (!a.part.empty()) o.part = parse_part(a.part);
  return o;
}

}  // namespace qlty::tool
