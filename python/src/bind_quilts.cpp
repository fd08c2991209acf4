// The in-memory quilts, NCYXQuilt and NCZYXQuilt, as qlty_cpp._C.Quilt2D / Quilt3D.
#include "bindings.hpp"

#include <qlty/quilt.hpp>

namespace qlty::python {
namespace {

template <int D>
std::array<int64_t, D> spatial(const std::vector<int64_t>& shape, const char* name) {
  QLTY_CHECK_ARG(static_cast<int>(shape.size()) == D, "shape", name, ": the image shape must have ", D, " sizes, got ",
                 shape.size());
  std::array<int64_t, D> s{};
  std::copy(shape.begin(), shape.end(), s.begin());
  return s;
}

template <int D>
void bind_quilt(py::module_& m, const char* name) {
  using Q = Quilt<D>;
  using release = py::call_guard<py::gil_scoped_release>;
  py::class_<Q>(m, name)
      .def(py::init([](const std::vector<int64_t>& shape, const std::vector<int64_t>& window,
                       const std::vector<int64_t>& step, const std::string& blend, const std::vector<int64_t>& border,
                       double border_weight, const std::vector<double>& sigma_scale,
                       const std::optional<torch::Tensor>& custom_window, const std::string& pad, double pad_value) {
             const BlendSpec spec{blend, border, border_weight, sigma_scale, custom_window};
             return Q(spatial<D>(shape, D == 2 ? "NCYXQuilt" : "NCZYXQuilt"), window, step, spec.make(),
                      make_pad(pad, pad_value));
           }),
           py::arg("shape"), py::arg("window"), py::arg("step"), QLTY_PY_BLEND_ARGS)
      .def(
          "unstitch", [](const Q& q, const torch::Tensor& x) { return q.unstitch(x); }, py::arg("x"), release())
      .def(
          "unstitch_data_pair",
          [](const Q& q, const torch::Tensor& x, const torch::Tensor& y, std::optional<double> missing_label) {
            return missing_label ? q.unstitch_data_pair(x, y, c10::Scalar(*missing_label)) : q.unstitch_data_pair(x, y);
          },
          py::arg("x"), py::arg("y"), py::arg("missing_label") = py::none(), release())
      .def(
          "stitch", [](const Q& q, const torch::Tensor& p) { return q.stitch(p); }, py::arg("patches"), release())
      .def(
          "unstitch_out",
          [](const Q& q, const torch::Tensor& x, torch::Tensor patches) {
            q.unstitch_out(x, patches);
            return patches;
          },
          py::arg("x"), py::arg("patches"), release())
      .def(
          "stitch_out",
          [](const Q& q, const torch::Tensor& p, torch::Tensor result, torch::Tensor weights) {
            q.stitch_out(p, result, weights);
            return std::make_tuple(result, weights);
          },
          py::arg("patches"), py::arg("result"), py::arg("weights"), release())
      .def("window_origins", &Q::window_origins, py::arg("N"), py::arg("with_image") = false, release())
      .def(
          "add_positions",
          [](const Q& q, const torch::Tensor& patches, bool relative, bool normalize) {
            return q.add_positions(patches, relative ? Positions::Relative : Positions::Absolute, normalize);
          },
          py::arg("patches"), py::arg("relative") = false, py::arg("normalize") = true, release())
      .def("border_tensor", &Q::border_tensor)
      .def("weights", [](const Q& q) { return q.geometry().weights(); })
      .def("get_times", &Q::get_times)
      .def_property_readonly("patches_per_image", &Q::patches_per_image)
      .def_property_readonly("border", [](const Q& q) { return q.geometry().border(); })
      .def_property_readonly("border_weight", [](const Q& q) { return q.geometry().border_weight(); });
}

}  // namespace

void bind_quilts(py::module_& m) {
  bind_quilt<2>(m, "Quilt2D");
  bind_quilt<3>(m, "Quilt3D");
}

}  // namespace qlty::python
