// The disk-cached quilts, LargeNCYXQuilt and LargeNCZYXQuilt, as qlty_cpp._C.LargeQuilt2D / LargeQuilt3D, and a
// Zarr array they (and infer_blockwise) read from.
#include "bindings.hpp"

#include <memory>

#include <qlty/large_quilt.hpp>
#include <qlty/zarr.hpp>

namespace qlty::python {
namespace {

using release = py::call_guard<py::gil_scoped_release>;

// A quilt that close() can let go of (its last checkpoint, its lock on the prefix) before Python collects it.
template <int D>
constexpr const char* large_name() {
  return D == 2 ? "LargeNCYXQuilt" : "LargeNCZYXQuilt";
}

template <int D>
class Handle {
 public:
  explicit Handle(std::unique_ptr<LargeQuilt<D>> q) : q_(std::move(q)) {}
  LargeQuilt<D>& get() const {
    QLTY_CHECK_ARG(q_ != nullptr, "self", large_name<D>(), ": the quilt is closed");
    return *q_;
  }
  void close() { q_.reset(); }
  bool closed() const { return q_ == nullptr; }

 private:
  std::unique_ptr<LargeQuilt<D>> q_;
};

template <int D>
void bind_large(py::module_& m, const char* name) {
  using H = Handle<D>;
  using T = torch::Tensor;
  py::class_<H>(m, name)
      .def(py::init([](const std::string& prefix, int64_t N, const std::vector<int64_t>& shape,
                       const std::vector<int64_t>& window, const std::vector<int64_t>& step, const std::string& blend,
                       const std::vector<int64_t>& border, double border_weight, const std::vector<double>& sigma_scale,
                       const std::optional<T>& custom_window, const std::string& pad, double pad_value,
                       int64_t cache_bytes, int64_t checkpoint_every, double checkpoint_seconds, bool allow_restitch,
                       bool track_std, bool durable) {
             QLTY_CHECK_ARG(static_cast<int>(shape.size()) == D, "shape", large_name<D>(),
                            ": the image shape must have ", D, " sizes, got ", shape.size());
             std::array<int64_t, D> S{};
             std::copy(shape.begin(), shape.end(), S.begin());
             LargeQuiltOptions o;
             o.cache_bytes = cache_bytes;
             o.checkpoint_every = checkpoint_every;
             o.checkpoint_seconds = checkpoint_seconds;
             o.allow_restitch = allow_restitch;
             o.track_std = track_std;
             o.durable = durable;
             o.pad = make_pad(pad, pad_value);
             const BlendSpec spec{blend, border, border_weight, sigma_scale, custom_window};
             py::gil_scoped_release unlocked;  // opening a prefix may finish a checkpoint journal
             return H(std::make_unique<LargeQuilt<D>>(prefix, N, S, window, step, spec.make(), o));
           }),
           py::arg("prefix"), py::arg("N"), py::arg("shape"), py::arg("window"), py::arg("step"), QLTY_PY_BLEND_ARGS,
           py::arg("cache_bytes") = int64_t(512) << 20, py::arg("checkpoint_every") = 0,
           py::arg("checkpoint_seconds") = 60.0, py::arg("allow_restitch") = false, py::arg("track_std") = true,
           py::arg("durable") = true)
      .def(
          "unstitch", [](const H& h, const T& x, int64_t index) { return h.get().unstitch(x, index); }, py::arg("x"),
          py::arg("index"), release())
      .def(
          "unstitch_zarr", [](const H& h, const zarr::Array& x, int64_t index) { return h.get().unstitch(x, index); },
          py::arg("x"), py::arg("index"), release())
      .def(
          "stitch",
          [](const H& h, const T& patch, int64_t index, const std::optional<T>& var) {
            h.get().stitch(patch, index, var);
          },
          py::arg("patch"), py::arg("index"), py::arg("patch_var") = py::none(), release())
      .def(
          "stitch_many",
          [](const H& h, const std::vector<int64_t>& indices, const T& patches, const std::optional<T>& vars) {
            h.get().stitch(indices, patches, vars);
          },
          py::arg("indices"), py::arg("patches"), py::arg("patch_vars") = py::none(), release())
      .def(
          "return_mean",
          [](const H& h, bool std, bool normalize, bool in_memory) {
            return h.get().return_mean(std, normalize, in_memory);
          },
          py::arg("std") = false, py::arg("normalize") = false, py::arg("in_memory") = true, release())
      .def(
          "unstitch_and_clean_sparse_data_pair",
          [](const H& h, const T& x, const T& y, double missing_label) {
            return h.get().unstitch_and_clean_sparse_data_pair(x, y, missing_label);
          },
          py::arg("x"), py::arg("y"), py::arg("missing_label"), release())
      .def(
          "stitch_order", [](const H& h, int64_t channels) { return h.get().stitch_order(channels); },
          py::arg("channels") = 0)
      .def(
          "is_stitched", [](const H& h, int64_t index) { return h.get().is_stitched(index); }, py::arg("index"))
      .def("missing_indices", [](const H& h) { return h.get().missing_indices(); })
      .def(
          "checkpoint", [](const H& h) { h.get().checkpoint(); }, release())
      .def("close", &H::close, release())
      .def_property_readonly("closed", &H::closed)
      .def_property_readonly("N_chunks", [](const H& h) { return h.get().N_chunks(); })
      .def_property_readonly("checkpoints", [](const H& h) { return h.get().checkpoints(); })
      .def("get_times", [](const H& h) { return h.get().get_times(); })
      .def("border_tensor", [](const H& h) { return h.get().border_tensor(); })
      .def("weights", [](const H& h) { return h.get().geometry().weights(); });
}

}  // namespace

void bind_large_quilts(py::module_& m) {
  py::class_<zarr::Array>(m, "ZarrArray", "A Zarr v2 or v3 array, read chunk-parallel with qlty's own Zarr layer.")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release unlocked;
             return zarr::Array::open(path);
           }),
           py::arg("path"))
      .def_property_readonly("shape", &zarr::Array::shape)
      .def_property_readonly("path", &zarr::Array::path)
      .def(
          "read",
          [](const zarr::Array& a, const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
            return a.read(offset, shape);
          },
          py::arg("offset"), py::arg("shape"), release())
      .def(
          "read_all", [](const zarr::Array& a) { return a.read(); }, release());
  bind_large<2>(m, "LargeQuilt2D");
  bind_large<3>(m, "LargeQuilt3D");
}

}  // namespace qlty::python
