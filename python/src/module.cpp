// The Python module qlty_cpp._C: binds qlty's public headers (python/src/bind_*.cpp); python/qlty_cpp wraps it in
// the original qlty's classes and functions.
#include "bindings.hpp"

#include <qlty/error.hpp>
#include <qlty/version.hpp>

namespace qlty::python {

Blend BlendSpec::make() const {
  if (kind == "border") return Blend::border(border, border_weight);
  if (kind == "constant") return Blend::constant();
  if (kind == "gaussian") return Blend::gaussian(sigma_scale);
  if (kind == "custom") {
    QLTY_CHECK_ARG(custom_window.has_value(), "custom_window",
                   "blend=\"custom\" needs custom_window, a tensor of the window's shape");
    return Blend::custom(*custom_window);
  }
  QLTY_CHECK_ARG(false, "blend", "blend must be \"border\", \"constant\", \"gaussian\" or \"custom\", got \"", kind,
                 "\"");
  return Blend::constant();  // not reached
}

Pad make_pad(const std::string& kind, double value) {
  if (kind == "none") return Pad::none();
  if (kind == "constant") return Pad::constant(value);
  if (kind == "reflect") return Pad::reflect();
  if (kind == "replicate") return Pad::replicate();
  QLTY_CHECK_ARG(false, "pad", "pad must be \"none\", \"constant\", \"reflect\" or \"replicate\", got \"", kind, "\"");
  return Pad::none();  // not reached
}

namespace {

// An exception instance of `type` with `message`, carrying qlty's structured fields as attributes.
py::object make_exception(py::handle type, const std::string& message, const std::string& field,
                          const std::string& tag = "") {
  py::object e = type(message);
  e.attr("field") = field.empty() ? py::object(py::none()) : py::object(py::str(field));
  if (!tag.empty()) e.attr("tag") = tag;
  return e;
}

void raise(py::handle type, const py::object& e) { PyErr_SetObject(type.ptr(), e.ptr()); }

}  // namespace

// qlty::Error becomes qlty_cpp.QltyError (a RuntimeError; OSError too for `io` and `lock`), with `tag`, `field`
// and, for checkpoint errors, `mismatches`; bad arguments become ValueError / TypeError / IndexError as LibTorch's
// own checks, with `field` naming the argument where qlty knows it. Messages without C++ backtraces.
void bind_errors(py::module_& m) {
  static py::handle error_type, io_error_type;
  error_type = PyErr_NewExceptionWithDoc(
      "qlty_cpp.QltyError",
      "A file, Zarr store, checkpoint or model error of qlty: `tag` (e.g. 'zarr.format', 'checkpoint', 'model'), "
      "`field` (the setting it is about, or None) and `mismatches` (checkpoint errors: (key, stored, requested)).",
      PyExc_RuntimeError, nullptr);
  py::tuple bases = py::make_tuple(error_type, py::handle(PyExc_OSError));
  io_error_type = PyErr_NewExceptionWithDoc(
      "qlty_cpp.QltyIOError", "A QltyError the operating system caused (tags 'io' and 'lock').", bases.ptr(), nullptr);
  m.attr("QltyError") = error_type;
  m.attr("QltyIOError") = io_error_type;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentError& e) {
      raise(PyExc_ValueError, make_exception(PyExc_ValueError, e.what_without_backtrace(), e.field()));
    } catch (const c10::ValueError& e) {
      raise(PyExc_ValueError, make_exception(PyExc_ValueError, e.what_without_backtrace(), ""));
    } catch (const c10::TypeError& e) {
      raise(PyExc_TypeError, make_exception(PyExc_TypeError, e.what_without_backtrace(), ""));
    } catch (const c10::IndexError& e) {
      raise(PyExc_IndexError, make_exception(PyExc_IndexError, e.what_without_backtrace(), ""));
    } catch (const Error& e) {
      const bool os = e.tag() == "io" || e.tag() == "lock";
      const py::handle type = os ? io_error_type : error_type;
      auto exc = make_exception(type, e.what(), e.field(), e.tag());
      py::list mismatches;
      for (const auto& mm : e.mismatches()) mismatches.append(py::make_tuple(mm.key, mm.stored, mm.requested));
      exc.attr("mismatches") = mismatches;
      raise(type, exc);
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
}

}  // namespace qlty::python

PYBIND11_MODULE(_C, m) {
  m.doc() = "qlty's C++ library (header-only, on LibTorch) for Python: see the qlty_cpp package";
  m.attr("__version__") = c10::str(QLTY_VERSION_MAJOR, ".", QLTY_VERSION_MINOR, ".", QLTY_VERSION_PATCH);
  m.attr("torch_version") = TORCH_VERSION;
  qlty::python::bind_errors(m);
  qlty::python::bind_quilts(m);
  qlty::python::bind_large_quilts(m);
  qlty::python::bind_patch_pairs(m);
  qlty::python::bind_blockwise(m);
}
