// infer_blockwise for a Python callable (a torch.nn.Module) or a TorchScript / AOTInductor file, over a tensor or a
// Zarr array; its options come as a dict of BlockwiseOptions' names.
#include "bindings.hpp"

#include <qlty/blockwise.hpp>
#include <qlty/model.hpp>

namespace qlty::python {
namespace {

torch::ScalarType dtype_named(const std::string& name, const char* field,
                              std::initializer_list<std::pair<const char*, torch::ScalarType>> allowed) {
  std::string names;
  for (const auto& [n, t] : allowed) {
    if (name == n) return t;
    names += names.empty() ? std::string("\"") + n + "\"" : std::string(", \"") + n + "\"";
  }
  QLTY_CHECK_ARG(false, field, "infer_blockwise: ", field, " must be one of ", names, ", got \"", name, "\"");
  return torch::kFloat;  // not reached
}

std::vector<zarr::Codec> codecs_named(const std::string& name) {
  if (name == "blosc") return {zarr::Codec::blosc()};
  if (name == "zstd") return {zarr::Codec::zstd()};
  if (name == "gzip") return {zarr::Codec::gzip()};
  if (name == "none") return {};
  QLTY_CHECK_ARG(false, "compression",
                 "infer_blockwise: compression must be \"blosc\", \"zstd\", \"gzip\" or \"none\", got \"", name, "\"");
  return {};
}

// BlockwiseOptions from the keyword arguments (every key is one of its fields; an unknown key is a ValueError).
BlockwiseOptions options_from(const py::dict& kw, BlendSpec& blend, std::string& pad, double& pad_value) {
  BlockwiseOptions o;
  for (const auto& [k, v] : kw) {
    const auto key = k.cast<std::string>();
    if (key == "window")
      o.window = v.cast<std::vector<int64_t>>();
    else if (key == "step")
      o.step = v.cast<std::vector<int64_t>>();
    else if (key == "border")
      blend.border = v.cast<std::vector<int64_t>>();
    else if (key == "border_weight")
      blend.border_weight = v.cast<double>();
    else if (key == "blend")
      blend.kind = v.cast<std::string>();
    else if (key == "sigma_scale")
      blend.sigma_scale = v.cast<std::vector<double>>();
    else if (key == "custom_window")
      blend.custom_window = v.cast<torch::Tensor>();
    else if (key == "pad")
      pad = v.cast<std::string>();
    else if (key == "pad_value")
      pad_value = v.cast<double>();
    else if (key == "tta_flip")
      o.tta_flip = v.cast<bool>();
    else if (key == "tta_axes")
      o.tta_axes = v.cast<std::vector<int64_t>>();
    else if (key == "precision")
      o.precision =
          dtype_named(v.cast<std::string>(), "precision",
                      {{"float32", torch::kFloat}, {"float16", torch::kHalf}, {"bfloat16", torch::kBFloat16}});
    else if (key == "activation") {
      const auto a = v.cast<std::string>();
      QLTY_CHECK_ARG(a == "none" || a == "sigmoid" || a == "softmax", "activation",
                     "infer_blockwise: activation must be \"none\", \"sigmoid\" or \"softmax\", got \"", a, "\"");
      using A = BlockwiseOptions::Activation;
      o.activation = a == "none" ? A::None : a == "sigmoid" ? A::Sigmoid : A::Softmax;
    } else if (key == "slicewise")
      o.slicewise = v.cast<bool>();
    else if (key == "output_dtype")
      o.output_dtype = dtype_named(v.cast<std::string>(), "output_dtype",
                                   {{"float32", torch::kFloat}, {"float16", torch::kHalf}, {"uint8", torch::kByte}});
    else if (key == "batch_size")
      o.batch_size = v.cast<int64_t>();
    else if (key == "device")
      o.device = torch::Device(v.cast<std::string>());
    else if (key == "chunks")
      o.chunks = v.cast<std::vector<int64_t>>();
    else if (key == "block")
      o.block = v.cast<std::vector<int64_t>>();
    else if (key == "block_bytes")
      o.block_bytes = v.cast<int64_t>();
    else if (key == "write_mean")
      o.write_mean = v.cast<bool>();
    else if (key == "write_std")
      o.write_std = v.cast<bool>();
    else if (key == "write_argmax")
      o.write_argmax = v.cast<bool>();
    else if (key == "compression")
      o.codecs = codecs_named(v.cast<std::string>());
    else if (key == "zarr_format")
      o.zarr_format = v.cast<int>();
    else if (key == "shards")
      o.shards = v.cast<std::vector<int64_t>>();
    else if (key == "model_id")
      o.model_id = v.cast<std::string>();
    else if (key == "overwrite")
      o.overwrite = v.cast<bool>();
    else if (key == "durable")
      o.durable = v.cast<bool>();
    else if (key == "prefetch")
      o.prefetch = v.cast<bool>();
    else if (key == "max_blocks")
      o.max_blocks = v.cast<int64_t>();
    else if (key == "part")
      o.part = v.cast<std::pair<int64_t, int64_t>>();
    else
      QLTY_CHECK_ARG(false, key, "infer_blockwise: unknown option \"", key,
                     "\" (see help(qlty_cpp.infer_blockwise) for the options)");
  }
  o.border = blend.border;
  o.border_weight = blend.border_weight;
  return o;
}

py::dict summary_dict(const BlockwiseSummary& s) {
  py::dict d;
  d["blocks_total"] = s.blocks_total;
  d["blocks_skipped"] = s.blocks_skipped;
  d["blocks_computed"] = s.blocks_computed;
  d["windows_grid"] = s.windows_grid;
  d["windows_computed"] = s.windows_computed;
  d["model_seconds"] = s.model_seconds;
  d["out_channels"] = s.out_channels;
  d["block"] = s.block;
  d["chunks"] = s.chunks;
  d["seconds"] = s.seconds;
  d["complete"] = s.complete;
  return d;
}

py::dict run(const py::object& model, const py::object& input, const std::string& output, const py::object& progress,
             const std::string& output_key, const py::dict& kw) {
  BlendSpec blend;
  std::string pad = "none";
  double pad_value = 0.0;
  BlockwiseOptions o = options_from(kw, blend, pad, pad_value);
  o.blend = blend.make();
  o.pad = make_pad(pad, pad_value);
  // Python objects are only touched with the GIL held: the run below releases it, and the model and the progress
  // callback take it back for their calls. `model` and `progress` outlive the run (the caller holds them).
  BlockModel block_model;
  // A KeyboardInterrupt or SystemExit raised in the model: the run reports model errors as QltyError (tag `model`),
  // these two go back to Python as themselves.
  auto interrupted = std::make_shared<std::optional<py::error_already_set>>();
  if (py::isinstance<py::str>(model)) {
    const auto file = model.cast<std::string>();
    py::gil_scoped_release unlocked;
    auto loaded = std::make_shared<Model>(Model::load(file, o.device, output_key));
    if (o.precision != torch::kFloat && !o.device.is_cuda()) loaded->to(o.precision);
    block_model = [loaded](const torch::Tensor& x) { return (*loaded)(x); };
  } else {
    QLTY_CHECK_ARG(PyCallable_Check(model.ptr()), "model",
                   "infer_blockwise: model must be a callable (a torch.nn.Module) or the path of a TorchScript or "
                   "AOTInductor file, got ",
                   py::str(py::type::of(model)).cast<std::string>());
    py::handle callable = model;
    block_model = [callable, interrupted](const torch::Tensor& x) {
      py::gil_scoped_acquire locked;
      torch::NoGradGuard no_grad;
      py::object y;
      try {
        y = callable(x);
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_Exception)) *interrupted = e;  // KeyboardInterrupt, SystemExit: returned as they are
        throw;
      }
      QLTY_CHECK_ARG(THPVariable_Check(y.ptr()), "model", "infer_blockwise: the model must return a tensor, got ",
                     py::str(py::type::of(y)).cast<std::string>());
      return y.cast<torch::Tensor>();
    };
  }
  // After every batch and block: Ctrl-C (a signal Python has not handled yet) stops the run, which a rerun resumes;
  // then the caller's progress callback, if any.
  py::handle report = progress;
  o.progress = [report](const BlockwiseProgress& p) {
    py::gil_scoped_acquire locked;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (report.is_none()) return;
    py::dict d;
    d["blocks_total"] = p.blocks_total;
    d["blocks_done"] = p.blocks_done;
    d["windows_planned"] = p.windows_planned;
    d["windows_done"] = p.windows_done;
    d["seconds"] = p.seconds;
    report(d);
  };
  std::optional<BlockInput> in;
  if (THPVariable_Check(input.ptr())) {
    in = BlockInput::from_tensor(input.cast<torch::Tensor>());
  } else if (py::isinstance<zarr::Array>(input)) {
    in = BlockInput::from_zarr(input.cast<zarr::Array>());
  } else if (py::isinstance<py::str>(input)) {
    const auto path = input.cast<std::string>();
    py::gil_scoped_release unlocked;
    in = BlockInput::from_zarr(zarr::Array::open(path));
  } else {
    QLTY_CHECK_ARG(false, "input",
                   "infer_blockwise: input must be a tensor (N, C, [Z,] Y, X), a ZarrArray or the path "
                   "of a Zarr array, got ",
                   py::str(py::type::of(input)).cast<std::string>());
  }
  BlockwiseSummary s;
  try {
    py::gil_scoped_release unlocked;
    s = infer_blockwise(block_model, *in, output, o);
  } catch (const Error&) {
    if (*interrupted) throw **interrupted;
    throw;
  }
  return summary_dict(s);
}

}  // namespace

void bind_blockwise(py::module_& m) {
  m.def(
      "infer_blockwise",
      [](const py::object& model, const py::object& input, const std::string& output, const py::object& progress,
         const std::string& output_key,
         const py::kwargs& kw) { return run(model, input, output, progress, output_key, kw); },
      py::arg("model"), py::arg("input"), py::arg("output"), py::kw_only(), py::arg("progress") = py::none(),
      py::arg("output_key") = "");
  m.def(
      "blockwise_status",
      [](const std::string& output) {
        const auto s = blockwise_status(output);
        py::dict d;
        d["blocks_total"] = s.blocks_total;
        d["blocks_done"] = s.blocks_done;
        d["manifest"] = py::module_::import("json").attr("loads")(s.manifest.dump());
        return d;
      },
      py::arg("output"));
}

}  // namespace qlty::python
