#pragma once
// `qlty infer`'s flags (InferArgs) and their translation into the library's BlockwiseOptions, once the input's
// shape is known. Flag values that only the program knows (MONAI's --overlap, --slicewise -w Y,X, file names,
// choices spelled as words) are checked here; what the library checks, it checks (see infer/run.hpp: explain).

#include <CLI/CLI.hpp>
#include <qlty/blockwise.hpp>

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qlty::tool {

struct InferArgs {
  std::string model, input, output, device = "cpu", preview, part;
  std::vector<int64_t> window, step, border = {0}, block, chunks, shards;
  double border_weight = 0.1;
  int64_t batch_size = 8, threads = 0, block_mib = 1024, max_blocks = -1;
  int zarr_format = 0;  // 0: 3 with --shards, else 2
  bool std = false, argmax = false, overwrite = false, quiet = false;
  // what MONAI and nnU-Net users expect
  std::string blend = "border", blend_window, pad = "constant", tta = "none", tta_axes, precision = "float32",
              output_dtype = "float32", activation = "none", output_key, axes;
  std::vector<double> overlap, sigma_scale;
  std::optional<double> pad_value;
  bool slicewise = false;
};

/// --device: cpu, cuda or cuda:N (a CUDA device only where CUDA is available).
torch::Device parse_device(const std::string& s);
/// "i/K" -> {i, K}, 0 <= i < K.
std::pair<int64_t, int64_t> parse_part(const std::string& s);

/// --precision and --output-dtype: float32, float16, bfloat16, uint8.
torch::ScalarType parse_dtype(const std::string& s, const char* flag);

/// Per-axis values of a flag for D spatial axes: one value, or one per axis.
template <typename T>
std::vector<T> per_axis(const std::vector<T>& v, int D, const char* flag) {
  if (v.size() == 1) return std::vector<T>(static_cast<size_t>(D), v[0]);
  if (static_cast<int>(v.size()) != D)
    throw CLI::ValidationError(flag, c10::str("expected 1 or ", D, " values (one per spatial axis, ",
                                              D == 3 ? "Z, Y, X" : "Y, X", "), got ", v.size()));
  return v;
}

/// Turns the flags into options for an input of shape (N, C, *S): window, step or overlap (MONAI's convention),
/// border, blend, padding, flips, precision, activation, output dtype, part. Checks what only the program knows
/// (flag combinations, words, files); the library checks the settings themselves and throws a
/// qlty::ArgumentError naming the setting, which explain() words with its flag.
BlockwiseOptions infer_options(const InferArgs& a, const torch::Device& device, const std::vector<int64_t>& shape);

}  // namespace qlty::tool
