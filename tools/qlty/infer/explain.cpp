#include "../formats/input.hpp"
#include "run.hpp"

#include <CLI/CLI.hpp>

namespace qlty::tool {

[[noreturn]] void explain(const Error& e, const InferArgs& a, const BlockInput* input) {
  if (!e.field().empty()) throw CLI::ValidationError(flag_of_setting(e.field()), e.message());
  if (e.tag() == "checkpoint") {
    std::string differ;
    for (const auto& m : e.mismatches())
      differ +=
          (differ.empty() ? "" : "; ") + flag_of_setting(m.key) + ": " + m.stored + " there, " + m.requested + " now";
    throw Error("checkpoint", a.output + ": this output was written with other settings (" +
                                  (differ.empty() ? std::string("another manifest format") : differ) +
                                  "); rerun with the same settings to resume it, or pass --overwrite to start over");
  }
  std::string m = e.message();
  if (e.tag() == "model" && input) {
    const auto axes = a.axes.empty() ? default_axes(static_cast<size_t>(input->shape().size())) : a.axes;
    m += c10::str(" (the input was read as (N, C, ", input->spatial_dims() == 3 ? "Z, Y, X" : "Y, X", ") ",
                  c10::IntArrayRef(input->shape()), " with axes \"", axes, "\"",
                  a.axes.empty() ? ", the default for its rank; pass --axes if that is wrong)" : " (--axes))");
    if (a.precision != "float32" && a.device == "cpu")
      m += "; with --precision " + a.precision +
           " on the CPU the model runs in that dtype, which not every CPU operation supports: try bfloat16 or float32";
  }
  throw Error(e.tag(), m);
}

[[noreturn]] void explain(const ArgumentError& e) {
  throw CLI::ValidationError(flag_of_setting(e.field()), e.what_without_backtrace());
}

}  // namespace qlty::tool
