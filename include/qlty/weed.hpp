#pragma once
/// @file weed.hpp
/// @brief Drop training patches whose labels are all missing inside the border.

#include <torch/torch.h>

#include <algorithm>
#include <tuple>

namespace qlty {

namespace detail {
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse(const char* who, int D,
                                                                           const torch::Tensor& in,
                                                                           const torch::Tensor& out,
                                                                           const c10::Scalar& missing_label,
                                                                           const torch::Tensor& border_tensor) {
  // The window (*W), or more leading axes that broadcast against out's, as NumPy broadcasts: (C, *W), (M, *W),
  // (M, C, *W) (the original's rule).
  TORCH_CHECK_VALUE(border_tensor.dim() >= D && border_tensor.dim() <= out.dim(), who, ": border_tensor must be ", D,
                    "-D (the window), or have up to ", std::max<int64_t>(out.dim() - D, 0),
                    " more leading axes that broadcast against out ", out.sizes(), ", got shape ",
                    border_tensor.sizes());
  TORCH_CHECK_VALUE(out.dim() == D + 1 || out.dim() == D + 2, who, ": out must be ", D + 1, "-D (M, window) or ", D + 2,
                    "-D (M, C, window), got shape ", out.sizes());
  TORCH_CHECK_VALUE(out.sizes().slice(out.dim() - D) == border_tensor.sizes().slice(border_tensor.dim() - D), who,
                    ": out's last axes must match border_tensor ", border_tensor.sizes(), ", got ", out.sizes());
  for (int64_t a = 1; a <= border_tensor.dim() - D; ++a) {
    const int64_t b = border_tensor.size(-D - a), o = out.size(-D - a);
    const bool patches_axis = a == out.dim() - D;  // out's axis 0 (M) stays M
    TORCH_CHECK_VALUE(b == o || b == 1 || (o == 1 && !patches_axis), who, ": border_tensor ", border_tensor.sizes(),
                      " does not broadcast against out ", out.sizes());
  }
  TORCH_CHECK_VALUE(in.dim() >= 1 && in.size(0) == out.size(0), who,
                    ": in and out must hold the same number of patches, got ", in.sizes(), " and ", out.sizes());
  auto inner = border_tensor.to(out.device()).ne(0);
  auto valid = out.ne(missing_label).logical_and(inner);  // broadcasts
  auto keep = valid.numel() == 0 ? torch::zeros({out.size(0)}, valid.options()) : valid.flatten(1).any(1);
  return {in.index({keep.to(in.device())}), out.index({keep}), keep.logical_not()};
}
}  // namespace detail

/// @brief (in[kept], out[kept], removed): keeps patch i when out[i] (M, [C,] Y, X) has a pixel other than
/// missing_label where border_tensor (Y, X) is nonzero; `removed` is true for each dropped patch. border_tensor may
/// have leading axes that broadcast against out's ((C, Y, X), (M, Y, X), ...: NumPy's rule, as the original).
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse_classification_training_pairs_2D(
    const torch::Tensor& in, const torch::Tensor& out, const c10::Scalar& missing_label,
    const torch::Tensor& border_tensor) {
  return detail::weed_sparse("weed_sparse_classification_training_pairs_2D", 2, in, out, missing_label, border_tensor);
}

/// @brief As the 2D version for patches (M, [C,] Z, Y, X) and border_tensor (Z, Y, X) (or broadcasting against them).
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> weed_sparse_classification_training_pairs_3D(
    const torch::Tensor& in, const torch::Tensor& out, const c10::Scalar& missing_label,
    const torch::Tensor& border_tensor) {
  return detail::weed_sparse("weed_sparse_classification_training_pairs_3D", 3, in, out, missing_label, border_tensor);
}

}  // namespace qlty
