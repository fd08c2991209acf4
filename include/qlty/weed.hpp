#pragma once
/// @file weed.hpp
/// @brief Drop training patches whose labels are all missing inside the border.

#include <torch/torch.h>

#include <tuple>

namespace qlty {

namespace detail {
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse(const char* who, int D,
                                                                           const torch::Tensor& in,
                                                                           const torch::Tensor& out,
                                                                           const c10::Scalar& missing_label,
                                                                           const torch::Tensor& border_tensor) {
  TORCH_CHECK_VALUE(border_tensor.dim() == D, who, ": border_tensor must be ", D, "-D (the window), got shape ",
                    border_tensor.sizes());
  TORCH_CHECK_VALUE(out.dim() == D + 1 || out.dim() == D + 2, who, ": out must be ", D + 1, "-D (M, window) or ", D + 2,
                    "-D (M, C, window), got shape ", out.sizes());
  TORCH_CHECK_VALUE(out.sizes().slice(out.dim() - D) == border_tensor.sizes(), who,
                    ": out's last axes must match border_tensor ", border_tensor.sizes(), ", got ", out.sizes());
  TORCH_CHECK_VALUE(in.dim() >= 1 && in.size(0) == out.size(0), who,
                    ": in and out must hold the same number of patches, got ", in.sizes(), " and ", out.sizes());
  auto inner = border_tensor.to(out.device()).eq(1);
  auto valid = out.ne(missing_label).logical_and_(inner);  // broadcasts over channels
  auto keep = valid.numel() == 0 ? torch::zeros({out.size(0)}, valid.options()) : valid.flatten(1).any(1);
  return {in.index({keep.to(in.device())}), out.index({keep}), keep.logical_not()};
}
}  // namespace detail

/// @brief (in[kept], out[kept], removed): keeps patch i when out[i] (M, [C,] Y, X) has a pixel other than
/// missing_label where border_tensor (Y, X) is 1; `removed` is true for each dropped patch.
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse_classification_training_pairs_2D(
    const torch::Tensor& in, const torch::Tensor& out, const c10::Scalar& missing_label,
    const torch::Tensor& border_tensor) {
  return detail::weed_sparse("weed_sparse_classification_training_pairs_2D", 2, in, out, missing_label, border_tensor);
}

/// @brief As the 2D version for patches (M, [C,] Z, Y, X) and border_tensor (Z, Y, X).
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse_classification_training_pairs_3D(
    const torch::Tensor& in, const torch::Tensor& out, const c10::Scalar& missing_label,
    const torch::Tensor& border_tensor) {
  return detail::weed_sparse("weed_sparse_classification_training_pairs_3D", 3, in, out, missing_label, border_tensor);
}

}  // namespace qlty
