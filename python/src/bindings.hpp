#pragma once
/// @file bindings.hpp
/// @brief What the binding files of the Python module `qlty_cpp._C` share: the blend and pad a quilt is built with
/// (from the keyword arguments the Python classes take) and the functions that bind each part.
///
/// The module binds the public headers only. Every call that moves bytes releases the GIL; the Python classes in
/// python/qlty_cpp give them the original qlty's names, arguments and defaults.

#include <torch/extension.h>

#include <optional>
#include <string>
#include <vector>

#include <qlty/blend.hpp>

namespace qlty::python {

namespace py = pybind11;

/// @brief How a quilt weighs its windows, as the Python classes pass it: `kind` is border, constant, gaussian or
/// custom; `border` and `border_weight` serve border, `sigma_scale` gaussian and `custom_window` custom.
struct BlendSpec {
  std::string kind = "border";
  std::vector<int64_t> border{0};
  double border_weight = 0.1;
  std::vector<double> sigma_scale{0.125};
  std::optional<torch::Tensor> custom_window;

  Blend make() const;
};

/// @brief Padding for images smaller than the window: none, constant (with `value`), reflect or replicate.
Pad make_pad(const std::string& kind, double value);

/// @brief The keyword arguments every quilt class takes for its blend and padding, bound once.
#define QLTY_PY_BLEND_ARGS                                                                                             \
  py::arg("blend") = "border", py::arg("border") = std::vector<int64_t>{0}, py::arg("border_weight") = 0.1,            \
  py::arg("sigma_scale") = std::vector<double>{0.125}, py::arg("custom_window") = py::none(), py::arg("pad") = "none", \
  py::arg("pad_value") = 0.0

void bind_errors(py::module_& m);
void bind_quilts(py::module_& m);
void bind_large_quilts(py::module_& m);
void bind_patch_pairs(py::module_& m);
void bind_blockwise(py::module_& m);

}  // namespace qlty::python
