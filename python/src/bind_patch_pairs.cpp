// Patch pairs, their overlapping pixels and the weeding of sparse training pairs (differentiable where the
// C++ calls are).
#include "bindings.hpp"

#include <qlty/patch_pairs.hpp>
#include <qlty/weed.hpp>

namespace qlty::python {

void bind_patch_pairs(py::module_& m) {
  using T = torch::Tensor;
  using release = py::call_guard<py::gil_scoped_release>;
  using Range = std::pair<double, double>;
  m.def(
      "extract_patch_pairs",
      [](const T& x, const std::array<int64_t, 2>& window, int64_t num_patches, Range delta_range,
         std::optional<uint64_t> seed, const std::optional<std::vector<int64_t>>& rotation_choices) {
        return extract_patch_pairs(x, window, num_patches, delta_range, seed, rotation_choices);
      },
      py::arg("x"), py::arg("window"), py::arg("num_patches"), py::arg("delta_range"), py::arg("seed") = py::none(),
      py::arg("rotation_choices") = py::none(), release());
  m.def(
      "extract_patch_pairs_with_positions",
      [](const T& x, const std::array<int64_t, 2>& window, int64_t num_patches, Range delta_range,
         std::optional<uint64_t> seed, const std::optional<std::vector<int64_t>>& rotation_choices) {
        return extract_patch_pairs_with_positions(x, window, num_patches, delta_range, seed, rotation_choices);
      },
      py::arg("x"), py::arg("window"), py::arg("num_patches"), py::arg("delta_range"), py::arg("seed") = py::none(),
      py::arg("rotation_choices") = py::none(), release());
  m.def(
      "extract_patch_pairs_3d",
      [](const T& x, const std::array<int64_t, 3>& window, int64_t num_patches, Range delta_range,
         std::optional<uint64_t> seed) { return extract_patch_pairs_3d(x, window, num_patches, delta_range, seed); },
      py::arg("x"), py::arg("window"), py::arg("num_patches"), py::arg("delta_range"), py::arg("seed") = py::none(),
      release());
  m.def(
      "extract_overlapping_pixels",
      [](const T& p1, const T& p2, const T& deltas, const std::optional<T>& rotations) {
        return extract_overlapping_pixels(p1, p2, deltas, rotations);
      },
      py::arg("patches1"), py::arg("patches2"), py::arg("deltas"), py::arg("rotations") = py::none(), release());
  m.def(
      "extract_overlapping_pixels_3d",
      [](const T& p1, const T& p2, const T& deltas) { return extract_overlapping_pixels_3d(p1, p2, deltas); },
      py::arg("patches1"), py::arg("patches2"), py::arg("deltas"), release());
  m.def(
      "weed_sparse_classification_training_pairs_2D",
      [](const T& in, const T& out, double missing_label, const T& border) {
        return weed_sparse_classification_training_pairs_2D(in, out, missing_label, border);
      },
      py::arg("tensor_in"), py::arg("tensor_out"), py::arg("missing_label"), py::arg("border_tensor"), release());
  m.def(
      "weed_sparse_classification_training_pairs_3D",
      [](const T& in, const T& out, double missing_label, const T& border) {
        return weed_sparse_classification_training_pairs_3D(in, out, missing_label, border);
      },
      py::arg("tensor_in"), py::arg("tensor_out"), py::arg("missing_label"), py::arg("border_tensor"), release());
}

}  // namespace qlty::python
