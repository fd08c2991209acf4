// `qlty`: sliding-window inference of a TorchScript model over whole images and volumes (infer), a self-checking
// demo on a phantom (demo), a description of arrays and outputs (info), and TIFF/.npy <-> Zarr conversion (convert).
#include <torch/script.h>
#include <torch/torch.h>
#include <CLI/CLI.hpp>
#include <qlty/model.hpp>
#include <qlty/qlty.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#ifdef QLTY_WITH_MPI
#include <qlty/mpi.hpp>
#endif

#include <sched.h>
#include <sys/stat.h>

#include <cstdlib>
#include <thread>

#include "builtin.hpp"
#include "io.hpp"
#include "preview.hpp"

namespace {

using qlty::tool::BuiltinNet;

/// Prints a progress bar to a terminal (stderr), at most ten times a second; with `lines` and no terminal (the
/// output of an MPI rank, a batch job's log), a line every ten seconds and at the end instead.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled, bool lines = false)
      : enabled_(enabled && (::isatty(2) || lines)), lines_(enabled && lines && !::isatty(2)) {}
  void operator()(const qlty::BlockwiseProgress& p) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.blocks_done == p.blocks_total;
    if (!last && now - shown_ < std::chrono::milliseconds(lines_ ? 10000 : 100)) return;
    if (lines_ && last && finished_) return;
    shown_ = now;
    finished_ = last;
    // Ranks that meet in a column may both compute a few windows: done can pass planned.
    const double frac = p.windows_planned ? std::min(1.0, double(p.windows_done) / double(p.windows_planned)) : 1.0;
    const double rate = p.seconds > 0 ? double(p.windows_done) / p.seconds : 0.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.append(width - filled, ' ');
    std::string eta = "--";
    if (rate > 0 && frac < 1) eta = duration(double(p.windows_planned - p.windows_done) / rate);
    std::fprintf(stderr, "%s%3d%% |%s| %lld/%lld windows, %.1f windows/s, ETA %s, blocks %lld/%lld%s",
                 lines_ ? "qlty infer: " : "\r", static_cast<int>(frac * 100), bar.c_str(),
                 static_cast<long long>(p.windows_done), static_cast<long long>(p.windows_planned), rate, eta.c_str(),
                 static_cast<long long>(p.blocks_done), static_cast<long long>(p.blocks_total), lines_ ? "\n" : "   ");
    drawn_ = !lines_;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }
  static std::string duration(double s) {
    char b[32];
    if (s < 60)
      std::snprintf(b, sizeof b, "%.0fs", s);
    else if (s < 3600)
      std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
    else
      std::snprintf(b, sizeof b, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
    return b;
  }

 private:
  bool enabled_, lines_, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point shown_{};
};

/// A model file's identity for the manifest: its name, size and CRC32C.
std::string file_id(const std::string& path) {
  auto bytes = qlty::detail::read_file(path, uint64_t(1) << 40, "model file");
  if (!bytes) throw qlty::Error("model", path + ": no such file");
  return "file:" + qlty::detail::base_name(path) + ":" + std::to_string(bytes->size()) + ":" +
         qlty::detail::hex32(qlty::detail::crc32c(bytes->data(), bytes->size()));
}

torch::Device parse_device(const std::string& s) {
  std::optional<torch::Device> d;
  try {
    d = torch::Device(s);
  } catch (const c10::Error&) {
    throw CLI::ValidationError("--device", "expected cpu, cuda or cuda:N, got \"" + s + "\"");
  }
  if (d->is_cuda() && !torch::cuda::is_available())
    throw CLI::ValidationError("--device", "\"" + s + "\" asked for, but CUDA is not available on this machine");
  return *d;
}

struct InferArgs {
  std::string model, input, output, device = "cpu", preview, part;
  std::vector<int64_t> window, step, border = {0}, block, chunks;
  double border_weight = 0.1;
  int64_t batch_size = 8, threads = 0, block_mib = 1024, max_blocks = -1;
  bool std = false, argmax = false, overwrite = false, quiet = false;
  // what MONAI and nnU-Net users expect
  std::string blend = "border", blend_window, pad = "constant", tta = "none", tta_axes, precision = "float32",
              output_dtype = "float32", activation = "none", output_key, axes;
  std::vector<double> overlap, sigma_scale;
  std::optional<double> pad_value;
  bool slicewise = false;
};

/// A middle slice (or the image) of input channel 0, output channels 0-2 and std channel 0 of image 0, side by side.
void write_preview(const std::string& png, const qlty::BlockInput& input, const std::string& output, bool with_std) {
  const auto& s = input.shape();
  const int D = input.spatial_dims();
  std::vector<int64_t> off(s.size(), 0), ext(s.begin(), s.end());
  ext[0] = ext[1] = 1;
  if (D == 3) off[2] = s[2] / 2, ext[2] = 1;
  auto plane = [&](const torch::Tensor& t) { return t.reshape({t.size(-2), t.size(-1)}); };
  std::vector<std::pair<std::string, torch::Tensor>> panels = {{"input", plane(input.read(off, ext))}};
  auto mean = qlty::zarr::Array::open(qlty::detail::join_path(output, "0"));
  for (int64_t c = 0; c < std::min<int64_t>(3, mean.shape()[1]); ++c) {
    auto o = off, e = ext;
    o[1] = c;
    panels.emplace_back("output c" + std::to_string(c), plane(mean.read(o, e)));
  }
  if (with_std)
    panels.emplace_back("std c0",
                        plane(qlty::zarr::Array::open(qlty::detail::join_path(output, "std")).read(off, ext)));
  qlty::tool::write_png(png, qlty::tool::preview_strip(panels));
}

/// The process's launcher, from its environment: the world size and this process's rank (1 and 0 without one).
/// mpirun (Open MPI), srun with PMI or PMIx, and MPICH's Hydra are recognised.
std::pair<int, int> launcher_world() {
  auto env = [](std::initializer_list<const char*> names) -> const char* {
    for (const char* n : names)
      if (const char* v = std::getenv(n)) return v;
    return nullptr;
  };
  const char* size = env({"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"});
  const char* rank = env({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"});
  if (!size && !rank) return {1, 0};
  return {size ? std::max(1, std::atoi(size)) : 2, rank ? std::atoi(rank) : 0};
}

/// CPU cores this process may run on (its affinity mask), shared among the `local_ranks` processes on the node
/// when the launcher did not bind them.
int default_threads(int local_ranks) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int online = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  const int cores = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
  return std::max(1, cores >= online ? cores / std::max(1, local_ranks) : cores);
}

/// --threads: 0 (the default) or at most 4 threads per core online; more only slows memory-bound work down.
void check_threads(int64_t threads) {
  const int64_t cores = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)), most = 4 * cores;
  if (threads < 0 || threads > most)
    throw CLI::ValidationError("--threads", c10::str("must be in [0, ", most, "] (0: the default; at most 4 per core, ",
                                                     cores, " cores here), got ", threads));
}

/// "i/K" -> {i, K}, 0 <= i < K.
std::pair<int64_t, int64_t> parse_part(const std::string& s) {
  const auto slash = s.find('/');
  int64_t i = -1, k = 0;
  try {
    size_t used = 0;
    if (slash != std::string::npos) {
      i = std::stoll(s.substr(0, slash), &used);
      if (used != slash) i = -1;
      k = std::stoll(s.substr(slash + 1), &used);
      if (used != s.size() - slash - 1) k = 0;
    }
  } catch (const std::exception&) {
    k = 0;
  }
  if (k < 1 || i < 0 || i >= k)
    throw CLI::ValidationError("--part", "expected i/K with 0 <= i < K (e.g. 0/4, or $SLURM_ARRAY_TASK_ID/" +
                                             std::string("$SLURM_ARRAY_TASK_COUNT), got \"") + s + "\"");
  return {i, k};
}

/// A model ready to run on `device`: a TorchScript file, an AOTInductor package or the built-in network.
struct LoadedModel {
  std::optional<qlty::Model> file;
  BuiltinNet builtin{nullptr};
  std::string id;
  qlty::BlockModel fn;
};

void load_model(const std::string& file, int D, const torch::Device& device, LoadedModel& m,
                torch::ScalarType dtype = torch::kFloat, const std::string& key = "") {
  if (!file.empty()) {
    m.id = file_id(file) + (key.empty() ? "" : ":output " + key);  // another head is another model
    m.file = qlty::Model::load(file, device, key);
    if (dtype != torch::kFloat && !device.is_cuda()) m.file->to(dtype);  // CUDA runs under autocast instead
    m.fn = *m.file;
  } else {
    if (!key.empty())
      throw CLI::ValidationError("--output-key", "\"" + key +
                                                     "\" picks an entry of a model's dict output; the built-in "
                                                     "network (no --model) returns one tensor");
    m.id = qlty::tool::kBuiltinModelId;
    m.builtin = BuiltinNet(D);
    m.builtin->to(device);
    if (dtype != torch::kFloat && !device.is_cuda()) m.builtin->to(dtype);
    m.builtin->eval();
    m.fn = [&m](const torch::Tensor& x) { return m.builtin->forward(x); };
  }
}

torch::ScalarType parse_dtype(const std::string& s, const char* flag) {
  if (s == "float32") return torch::kFloat;
  if (s == "float16") return torch::kHalf;
  if (s == "bfloat16") return torch::kBFloat16;
  if (s == "uint8") return torch::kByte;
  throw CLI::ValidationError(flag, "unknown dtype \"" + s + "\"");
}

/// Per-axis values of a flag for D spatial axes: one value, or one per axis.
template <typename T>
std::vector<T> per_axis(const std::vector<T>& v, int D, const char* flag) {
  if (v.size() == 1) return std::vector<T>(static_cast<size_t>(D), v[0]);
  if (static_cast<int>(v.size()) != D)
    throw CLI::ValidationError(flag, c10::str("expected 1 or ", D, " values (one per spatial axis, ",
                                              D == 3 ? "Z, Y, X" : "Y, X", "), got ", v.size()));
  return v;
}

/// Runs `check`, a library call that validates the value of `flag`: its error becomes one naming the flag.
template <typename F>
auto flag_checked_by_library(const char* flag, F&& check) {
  try {
    return check();
  } catch (const c10::ValueError& e) {
    throw CLI::ValidationError(flag, e.what_without_backtrace());
  }
}

/// Checks the flags that depend on the input's shape (N, C, *S) and turns them into options: window, step or
/// overlap (MONAI's convention), border, blend, padding, flips, precision, activation, output dtype.
qlty::BlockwiseOptions infer_options(const InferArgs& a, const torch::Device& device,
                                     const std::vector<int64_t>& shape) {
  const int D = static_cast<int>(shape.size()) - 2;
  qlty::BlockwiseOptions o;
  if (a.slicewise && D != 3)
    throw CLI::ValidationError("--slicewise", "runs a 2D model over a 3D input; the input is 2D");
  // --slicewise -w Y,X: windows of depth 1
  auto window = a.slicewise && a.window.size() == 2 ? std::vector<int64_t>{1, a.window[0], a.window[1]}
                                                    : per_axis(a.window, D, "--window");
  if (a.slicewise) {
    if (a.window.size() == 1) window[0] = 1;
    if (window[0] != 1)
      throw CLI::ValidationError("--slicewise", c10::str("needs windows of depth 1 (-w 1,Y,X or -w Y,X), got --window ",
                                                         c10::IntArrayRef(window)));
  }
  for (auto w : window)
    if (w < 1)
      throw CLI::ValidationError("--window", c10::str("must be >= 1 on every axis, got ", c10::IntArrayRef(window)));
  constexpr int64_t max_block_mib = int64_t(1) << 24;  // 16 TiB
  if (a.block_mib < 1 || a.block_mib > max_block_mib)
    throw CLI::ValidationError("--block-memory", c10::str("must be in [1, ", max_block_mib, "] MiB, got ", a.block_mib));
  flag_checked_by_library("--window", [&] {
    qlty::detail::check_window_fits(shape, window, a.block_mib << 20, "the window does not fit in --block-memory");
  });
  check_threads(a.threads);
  std::vector<int64_t> step;
  if (!a.step.empty() && !a.overlap.empty())
    throw CLI::ValidationError("--overlap", "give either --step or --overlap, not both");
  if (!a.overlap
           .empty()) {  // MONAI: int(window * (1 - overlap)), at least 1; the window itself where it fills the axis
    const auto ov = per_axis(a.overlap, D, "--overlap");
    for (int ax = 0; ax < D; ++ax) {
      if (!(ov[ax] >= 0 && ov[ax] < 1))
        throw CLI::ValidationError("--overlap", c10::str("must be in [0, 1) on every axis, got ", ov[ax]));
      const int64_t s = static_cast<int64_t>(static_cast<double>(window[ax]) * (1.0 - ov[ax]));
      step.push_back(window[ax] >= shape[2 + ax] ? window[ax] : std::max<int64_t>(1, s));
    }
  } else if (!a.step.empty()) {
    step = a.slicewise && a.step.size() == 2 ? std::vector<int64_t>{1, a.step[0], a.step[1]}
                                             : per_axis(a.step, D, "--step");
    if (window[0] == 1 && D == 3 && a.step.size() == 1) step[0] = 1;  // slices: every one
  } else {  // three quarters of the window (MONAI's overlap 0.25)
    for (auto w : window) step.push_back(std::max<int64_t>(1, w * 3 / 4));
  }
  for (int ax = 0; ax < D; ++ax)
    if (step[ax] < 1)
      throw CLI::ValidationError("--step", c10::str("must be >= 1 on every axis, got ", c10::IntArrayRef(step)));
  // the library's grid over the padded input: pixels in no window (step > window) are refused
  std::vector<int64_t> padded(shape.begin() + 2, shape.end());
  for (int ax = 0; ax < D; ++ax) padded[ax] = std::max(padded[ax], window[ax]);
  const int gap = D == 2 ? qlty::Geometry<2>({padded[0], padded[1]}, window, step, 0, 0.1).gap_axis()
                         : qlty::Geometry<3>({padded[0], padded[1], padded[2]}, window, step, 0, 0.1).gap_axis();
  if (gap >= 0)
    throw CLI::ValidationError(
        a.overlap.empty() ? "--step" : "--overlap",
        c10::str("the step ", c10::IntArrayRef(step), " exceeds the window ", c10::IntArrayRef(window),
                 ": pixels between windows would have no prediction; use a step <= window"));
  o.window = window;
  o.step = step;
  const auto border = per_axis(a.border, D, "--border");
  for (int ax = 0; ax < D; ++ax)
    if (border[ax] < 0 || (border[ax] > 0 && 2 * border[ax] >= window[ax]))
      throw CLI::ValidationError("--border", c10::str("must be >= 0 and leave an interior (2 * border < window ",
                                                      c10::IntArrayRef(window), "), got ", c10::IntArrayRef(border)));
  if (!(a.border_weight >= 0 && a.border_weight <= 1))
    throw CLI::ValidationError("--border-weight", c10::str("must be in [0, 1], got ", a.border_weight));
  o.border = border;
  o.border_weight = a.border_weight;
  if (!a.sigma_scale.empty() && a.blend != "gaussian")
    throw CLI::ValidationError("--sigma-scale", "is for --blend gaussian, got --blend " + a.blend);
  if (!a.blend_window.empty() && a.blend != "custom")
    throw CLI::ValidationError("--blend-window", "is for --blend custom, got --blend " + a.blend);
  bool border_given = false;
  for (auto b : a.border) border_given = border_given || b != 0;
  if (a.blend != "border" && border_given)
    throw CLI::ValidationError("--border",
                               "weights windows with --blend border; it has no effect with --blend " + a.blend);
  if (a.blend == "constant") {
    o.blend = qlty::Blend::constant();
  } else if (a.blend == "gaussian") {
    const auto sg = per_axis(a.sigma_scale.empty() ? std::vector<double>{0.125} : a.sigma_scale, D, "--sigma-scale");
    for (auto v : sg)
      if (!(v > 0 && std::isfinite(v)))
        throw CLI::ValidationError("--sigma-scale", c10::str("must be > 0 on every axis, got ", v));
    o.blend = qlty::Blend::gaussian(sg);
    flag_checked_by_library("--sigma-scale", [&] { return o.blend.gaussian_factors(window, "the gaussian"); });
  } else if (a.blend == "custom") {
    if (a.blend_window.empty())
      throw CLI::ValidationError("--blend", "custom needs --blend-window FILE.npy (a window of weights)");
    auto w = qlty::tool::NpyFile(a.blend_window).read_all().to(torch::kFloat64);
    if (w.sizes() != c10::IntArrayRef(window))
      throw CLI::ValidationError("--blend-window", c10::str(a.blend_window, " has shape ", w.sizes(),
                                                            ", but the window is ", c10::IntArrayRef(window)));
    if (!w.isfinite().all().item<bool>() || w.min().item<double>() < 0 || w.max().item<double>() <= 0)
      throw CLI::ValidationError("--blend-window", a.blend_window + ": weights must be finite, >= 0 and not all zero");
    o.blend = qlty::Blend::custom(w);
    flag_checked_by_library("--blend-window", [&] { return o.blend.weights(window, a.blend_window.c_str()); });
  }
  if (a.pad_value && a.pad != "constant")
    throw CLI::ValidationError("--pad-value", "is for --pad constant, got --pad " + a.pad);
  if (a.pad == "constant")
    o.pad = flag_checked_by_library("--pad-value", [&] { return qlty::Pad::constant(a.pad_value.value_or(0.0)); });
  else if (a.pad == "reflect")
    o.pad = qlty::Pad::reflect();
  else if (a.pad == "replicate")
    o.pad = qlty::Pad::replicate();
  else
    for (int ax = 0; ax < D; ++ax)
      if (shape[2 + ax] < window[ax])
        throw CLI::ValidationError(
            "--window", c10::str(c10::IntArrayRef(window), " is larger than the input ", c10::IntArrayRef(shape),
                                 " along a spatial axis, and --pad none refuses to pad"));
  o.tta_flip = a.tta == "flip";
  if (!a.tta_axes.empty()) {
    if (!o.tta_flip) throw CLI::ValidationError("--tta-axes", "is for --tta flip");
    const std::string letters = D == 3 ? "zyx" : "yx";
    for (char c : a.tta_axes) {
      if (c == ',') continue;
      const auto at = letters.find(c);
      if (at == std::string::npos)
        throw CLI::ValidationError("--tta-axes", "expected letters of " + letters + " (e.g. " +
                                                     (D == 3 ? "zyx or y,x" : "yx or x") + "), got \"" + a.tta_axes +
                                                     "\"");
      o.tta_axes.push_back(static_cast<int64_t>(at));
    }
  }
  o.precision = parse_dtype(a.precision, "--precision");
  o.output_dtype = parse_dtype(a.output_dtype, "--output-dtype");
  o.activation = a.activation == "sigmoid"   ? qlty::BlockwiseOptions::Activation::Sigmoid
                 : a.activation == "softmax" ? qlty::BlockwiseOptions::Activation::Softmax
                                             : qlty::BlockwiseOptions::Activation::None;
  o.slicewise = a.slicewise || (D == 3 && window[0] == 1);
  o.batch_size = a.batch_size;
  o.device = device;
  o.block = a.block;
  o.chunks = a.chunks;
  o.block_bytes = a.block_mib << 20;
  o.write_std = a.std;
  o.write_argmax = a.argmax;
  o.overwrite = a.overwrite;
  o.max_blocks = a.max_blocks;
  if (!a.part.empty()) o.part = parse_part(a.part);
  if (o.part.second > 1 && a.overwrite)
    throw CLI::ValidationError("--overwrite",
                               "cannot be combined with --part: the parts share one output and each "
                               "would delete the others' work; delete the output once before");
  return o;
}

/// A library error in the words of the program: settings by their flags, model errors with the axes assumed.
[[noreturn]] void rethrow_for_cli(const qlty::Error& e, const InferArgs& a, const qlty::BlockInput& input) {
  std::string m = e.what();
  const std::string prefix = "[qlty." + e.tag() + "] ";
  if (m.rfind(prefix, 0) == 0) m = m.substr(prefix.size());
  if (e.tag() == "checkpoint") {
    static const std::pair<const char*, const char*> flags[] = {{"input: ", "input (--input): "},
                                                                {"input_shape: ", "input shape (--input, --axes): "},
                                                                {"input_axes: ", "--axes: "},
                                                                {"out_channels: ", "model channels: "},
                                                                {"window: ", "--window: "},
                                                                {"step: ", "--step/--overlap: "},
                                                                {"border: ", "--border: "},
                                                                {"border_weight: ", "--border-weight: "},
                                                                {"chunks: ", "--chunks: "},
                                                                {"block: ", "--block: "},
                                                                {"outputs: ", "--std/--argmax: "},
                                                                {"model: ", "--model: "},
                                                                {"blend: ", "--blend/--sigma-scale: "},
                                                                {"pad: ", "--pad: "},
                                                                {"tta_flip: ", "--tta: "},
                                                                {"precision: ", "--precision: "},
                                                                {"activation: ", "--activation: "},
                                                                {"slicewise: ", "--slicewise: "},
                                                                {"output_dtype: ", "--output-dtype: "}};
    for (const auto& [k, f] : flags)
      for (size_t at = 0; (at = m.find(k, at)) != std::string::npos;) {
        const bool starts = at == 0 || m[at - 1] == '(' || m[at - 1] == ' ';
        if (starts) m.replace(at, std::strlen(k), f);
        at += starts ? std::strlen(f) : std::strlen(k);
      }
    const auto cut = m.find("; rerun with the same settings");
    if (cut != std::string::npos) m = m.substr(0, cut);
    m += "; rerun with the same settings to resume it, or pass --overwrite to start over";
  } else if (e.tag() == "model") {
    const auto axes = a.axes.empty() ? qlty::tool::default_axes(static_cast<size_t>(input.shape().size())) : a.axes;
    m += c10::str(" (the input was read as (N, C, ", input.spatial_dims() == 3 ? "Z, Y, X" : "Y, X", ") ",
                  c10::IntArrayRef(input.shape()), " with axes \"", axes, "\"",
                  a.axes.empty() ? ", the default for its rank; pass --axes if that is wrong)" : " (--axes))");
    if (a.precision != "float32" && a.device == "cpu")
      m += "; with --precision " + a.precision +
           " on the CPU the model runs in that dtype, which not every CPU operation supports: try bfloat16 or float32";
  }
  throw qlty::Error(e.tag(), m);
}

void print_summary(const InferArgs& a, const qlty::BlockInput& input, const qlty::BlockwiseSummary& s,
                   const qlty::BlockwiseOptions& o) {
  int64_t wvox = 1;
  const auto& w = o.window.values();  // one per axis (infer_options)
  for (int ax = 0; ax < input.spatial_dims(); ++ax) wvox *= w.size() == 1 ? w[0] : w.at(static_cast<size_t>(ax));
  const double rate = s.seconds > 0 ? double(s.windows_computed) / s.seconds : 0.0;
  const std::string part = o.part.second > 1 ? c10::str(" (part ", o.part.first, "/", o.part.second, ")") : "";
  std::printf(
      "qlty infer: %s %s%s: %lld windows in %.2f s (%.1f windows/s, %.0f MB/s of windows), %lld of %lld blocks "
      "computed, %lld already done; block %s, chunks %s; %.2f s in the model; %d thread%s\n",
      s.complete ? "wrote" : "partly wrote", a.output.c_str(), part.c_str(), static_cast<long long>(s.windows_computed),
      s.seconds, rate, rate * double(wvox * input.shape()[1] * 4) / 1e6, static_cast<long long>(s.blocks_computed),
      static_cast<long long>(s.blocks_total), static_cast<long long>(s.blocks_skipped),
      c10::str(c10::IntArrayRef(s.block)).c_str(), c10::str(c10::IntArrayRef(s.chunks)).c_str(), s.model_seconds,
      at::get_num_threads(), at::get_num_threads() == 1 ? "" : "s");
  if (!a.preview.empty() && s.complete) std::printf("qlty infer: preview %s\n", a.preview.c_str());
  if (!s.complete && o.part.second > 1)
    std::printf(
        "qlty infer: this part is done when its blocks are; the output is complete when every part has run "
        "(see qlty info %s)\n",
        a.output.c_str());
  else if (!s.complete)
    std::printf("qlty infer: run the same command again to finish\n");
}

#ifdef QLTY_WITH_MPI
/// `mpirun -n K qlty infer ...` (or srun): the ranks share the blocks (qlty/mpi.hpp). Each rank takes the GPU of
/// its local rank with `--device cuda`, and the cores it may use (shared with the other ranks on its node when the
/// launcher did not bind them). An error on a rank prints that rank's message and ends every rank (MPI_Abort).
int run_infer_mpi(const InferArgs& a, const qlty::BlockInput& input, qlty::BlockwiseOptions o) {
  int provided = 0, rank = 0, ranks = 1;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  auto fail = [&](const std::string& what, int code) {
    std::fprintf(stderr, "qlty: error: rank %d of %d: %s\n", rank, ranks, what.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    return code;
  };
  try {
    const int local_ranks = qlty::mpi::local_rank().second;
    at::set_num_threads(static_cast<int>(a.threads > 0 ? a.threads : default_threads(local_ranks)));
    o.device = qlty::mpi::rank_device(o.device);
    LoadedModel model;
    load_model(a.model, o.slicewise ? 2 : input.spatial_dims(), o.device, model, o.precision, a.output_key);
    o.model_id = model.id;
    ProgressBar bar(!a.quiet && rank == 0, true);
    o.progress = [&bar](const qlty::BlockwiseProgress& p) { bar(p); };
    qlty::mpi::DistributedSummary s;
    try {
      s = qlty::mpi::infer_blockwise(model.fn, input, a.output, o);
    } catch (const qlty::Error& e) {
      if (e.tag() == "mpi.peer") throw;
      rethrow_for_cli(e, a, input);
    }
    bar.finish();
    if (rank == 0) {
      if (!a.preview.empty() && s.total.complete) write_preview(a.preview, input, a.output, a.std);
      if (!a.quiet) {
        print_summary(a, input, s.total, o);
        for (const auto& r : s.ranks)
          std::printf(
              "qlty infer: rank %d: %lld blocks, %lld windows computed, %lld taken from other ranks, %.2f s (%.2f s "
              "in the model)\n",
              r.rank, static_cast<long long>(r.blocks_computed), static_cast<long long>(r.windows_computed),
              static_cast<long long>(r.windows_received), r.seconds, r.model_seconds);
      }
    }
  } catch (const qlty::Error& e) {
    if (e.tag() == "mpi.peer") {  // the failing rank prints its message and ends the run; wait for it
      std::this_thread::sleep_for(std::chrono::seconds(20));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return fail(e.what(), 1);
  } catch (const CLI::Error& e) {
    return fail(e.get_name() + ": " + e.what(), 2);
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace(), 2);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
  std::fflush(stdout);
  MPI_Finalize();
  return 0;
}
#endif

int run_infer(const InferArgs& a) {
  const auto [world, world_rank] = launcher_world();
  torch::Device device = parse_device(a.device);
  auto input = qlty::tool::open_input(a.input, a.axes);
  qlty::BlockwiseOptions o = infer_options(a, device, input.shape());
  const int D = input.spatial_dims();
  if (world > 1) {
#ifdef QLTY_WITH_MPI
    if (o.part.second > 1)
      throw CLI::ValidationError("--part", "is for runs without MPI; mpirun shares the blocks itself");
    if (a.max_blocks >= 0) throw CLI::ValidationError("--max-blocks", "is for runs without MPI");
    return run_infer_mpi(a, input, o);
#else
    throw CLI::ValidationError("qlty infer", "started by an MPI launcher with " + std::to_string(world) +
                                                 " processes, but this qlty was built without MPI (install "
                                                 "libopenmpi-dev and rebuild), or run parts with --part i/K instead");
#endif
  }
  at::set_num_threads(static_cast<int>(a.threads > 0 ? a.threads : default_threads(1)));
  LoadedModel model;
  load_model(a.model, o.slicewise ? 2 : D, device, model, o.precision, a.output_key);
  o.model_id = model.id;
  ProgressBar bar(!a.quiet);
  o.progress = [&bar](const qlty::BlockwiseProgress& p) { bar(p); };
  qlty::BlockwiseSummary s;
  try {
    s = qlty::infer_blockwise(model.fn, input, a.output, o);
  } catch (const qlty::Error& e) {
    bar.finish();
    rethrow_for_cli(e, a, input);
  } catch (...) {
    bar.finish();
    throw;
  }
  bar.finish();
  if (!a.preview.empty() && s.complete) write_preview(a.preview, input, a.output, a.std);
  if (!a.quiet) print_summary(a, input, s, o);
  return 0;
}

struct DemoArgs {
  std::string output = "qlty-demo";
  int64_t size = 128, window = 48, step = 36, border = 6, block = 64, threads = 0;
  double noise = 0.1;
  bool quiet = false;
};

int run_demo(const DemoArgs& a) {
  TORCH_CHECK_VALUE(a.size >= a.window, "qlty demo: --size must be at least --window (", a.window, "), got ", a.size);
  check_threads(a.threads);
  if (!std::isfinite(a.noise) || a.noise < 0)
    throw CLI::ValidationError("--noise", c10::str("must be finite and >= 0, got ", a.noise));
  if (a.threads > 0) at::set_num_threads(static_cast<int>(a.threads));
  using qlty::detail::join_path;
  qlty::detail::make_dirs(a.output);
  const std::string phantom = join_path(a.output, "phantom.zarr"), pred = join_path(a.output, "prediction.zarr"),
                    png = join_path(a.output, "preview.png");
  auto volume = qlty::tool::shepp_logan_3d(a.size, a.noise, 7).view({1, 1, a.size, a.size, a.size});
  qlty::zarr::ArrayOptions ao({1, 1, a.size, a.size, a.size}, {1, 1, 32, 32, 32});
  ao.overwrite = true;
  qlty::zarr::Array::create(phantom, ao).write({0, 0, 0, 0, 0}, volume);
  if (!a.quiet)
    std::printf("qlty demo: 3D Shepp-Logan phantom, %lld^3 voxels with noise %.2f -> %s\n",
                static_cast<long long>(a.size), a.noise, phantom.c_str());

  InferArgs ia;
  ia.input = phantom;
  ia.output = pred;
  ia.window = {a.window};
  ia.step = {a.step};
  ia.border = {a.border};
  ia.border_weight = 0.0;  // border pixels, which see the window's zero padding, do not count where others exist
  ia.block = {a.block};
  ia.chunks = {32};
  ia.std = true;
  ia.overwrite = true;
  ia.preview = png;
  ia.quiet = a.quiet;
  run_infer(ia);

  // The network on the whole volume at once, against the tiled result away from the volume's faces.
  torch::NoGradGuard no_grad;
  BuiltinNet net(3);
  auto whole = net->forward(volume);
  auto tiled = qlty::zarr::Array::open(join_path(pred, "0")).read();
  using torch::indexing::Slice;
  const auto in = Slice(a.border, a.size - a.border);
  auto diff = (whole - tiled).index({Slice(), Slice(), in, in, in}).abs().max().item<double>();
  const double scale = whole.abs().max().item<double>();
  auto sd = qlty::zarr::Array::open(join_path(pred, "std")).read();
  std::printf(
      "qlty demo: tiled vs whole-volume network, interior max |difference| = %.3g (%.2g of the output's "
      "range); std of overlapping windows: mean %.3g, max %.3g\n",
      diff, diff / scale, sd.mean().item<double>(), sd.max().item<double>());
  if (!a.quiet)
    std::printf("qlty demo: %s shows the middle slice: input | output c0 (smoothed) | output c1 (edges) | std c0 (where "
        "windows disagree), each scaled to its own range; inspect the OME-Zarr output with `qlty info %s`\n",
                png.c_str(), pred.c_str());
  if (diff > 1e-4 * std::max(scale, 1.0)) {
    std::fprintf(stderr, "qlty demo: FAILED: the tiled result differs from the whole-volume result\n");
    return 1;
  }
  return 0;
}

std::string describe_array(const qlty::zarr::Array& a) {
  const auto& m = a.metadata();
  std::string codecs;
  for (const auto& c : m.codecs)
    codecs +=
        (codecs.empty() ? "" : ", ") +
        (m.zarr_format == 2 ? qlty::detail::v2_compressor_json(c) : qlty::detail::v3_codec_json(c, m.dtype)).dump();
  int64_t total = 1;
  for (auto g : a.chunk_grid()) total *= g;  // checked when the metadata was read
  return c10::str("Zarr v", m.zarr_format, " array, shape ", c10::IntArrayRef(m.shape), ", chunks ",
                  c10::IntArrayRef(m.chunks), ", ", qlty::zarr::name(m.dtype), ", codecs [", codecs, "], ",
                  a.stored_chunk_count(), " of ", total, " chunks stored");
}

/// The parts of an output, one a line; of part counts above 16, consecutive parts in the same state share a line:
/// "parts 0-62/100: 0 of 0 blocks done (empty share: nothing to run)".
void print_parts(const qlty::BlockwiseStatus& s) {
  auto state = [](const qlty::BlockwisePartStatus& p) {
    if (p.blocks == 0) return "empty share: nothing to run";
    if (p.blocks_done == p.blocks) return "complete";
    return p.started ? "started" : "missing: never started";
  };
  for (size_t i = 0; i < s.parts.size();) {
    size_t j = i + 1;
    int64_t done = s.parts[i].blocks_done, blocks = s.parts[i].blocks;
    while (j < s.parts.size() && s.parts[i].count > 16 && s.parts[j].count == s.parts[i].count &&
           s.parts[j].index == s.parts[j - 1].index + 1 && std::strcmp(state(s.parts[j]), state(s.parts[i])) == 0) {
      done += s.parts[j].blocks_done;
      blocks += s.parts[j].blocks;
      ++j;
    }
    const auto& p = s.parts[i];
    const std::string which = j == i + 1 ? c10::str("part ", p.index, "/", p.count)
                                         : c10::str("parts ", p.index, "-", s.parts[j - 1].index, "/", p.count);
    std::printf("  %s: %lld of %lld blocks done (%s)\n", which.c_str(), static_cast<long long>(done),
                static_cast<long long>(blocks), state(p));
    i = j;
  }
  for (const auto& u : s.unlisted)
    std::printf("  and %lld more parts of %lld never started (not listed)\n", static_cast<long long>(u.missing),
                static_cast<long long>(u.count));
}

int run_info(const std::string& path) {
  using qlty::Error;
  namespace zarr = qlty::zarr;
  namespace tool = qlty::tool;
  if (tool::is_npy(path) || tool::is_tiff(path)) {
    auto in = tool::open_input(path);
    auto t = in.read(std::vector<int64_t>(in.shape().size(), 0), std::vector<int64_t>(in.shape().size(), 1));
    std::printf("%s: %s, as (N, C, %s) %s, %s\n", path.c_str(), tool::is_npy(path) ? "NumPy array" : "TIFF",
                in.spatial_dims() == 3 ? "Z, Y, X" : "Y, X", c10::str(c10::IntArrayRef(in.shape())).c_str(),
                c10::toString(t.scalar_type()));
    return 0;
  }
  const auto kind = zarr::node_type(path);
  if (kind == zarr::NodeType::Array) {
    std::printf("%s: %s\n", path.c_str(), describe_array(zarr::Array::open(path)).c_str());
    return 0;
  }
  if (kind != zarr::NodeType::Group) {
    if (!qlty::detail::path_exists(path)) throw Error("input", path + ": no such file or folder");
    throw Error("input", path + ": not a Zarr array or group, a .npy file or a TIFF file");
  }
  auto g = zarr::Group::open(path);
  const auto attrs = g.attributes();
  std::printf("%s: Zarr v%d group\n", path.c_str(), g.zarr_format());
  if (attrs.is_object() && attrs.contains("multiscales")) {  // NGFF: checked, every value comes from a file
    using qlty::detail::brief;
    const std::string f = qlty::detail::join_path(path, g.zarr_format() == 2 ? ".zattrs" : "zarr.json");
    const auto& ms = attrs.at("multiscales");
    if (!ms.is_array() || ms.empty() || !ms[0].is_object())
      throw Error("zarr.format", f + ": multiscales must be a non-empty list of objects, got " + brief(ms));
    std::string axes;
    for (const auto& ax : qlty::detail::key(ms[0], "axes", f)) {
      if (!ax.is_object() && !ax.is_string())
        throw Error("zarr.format", f + ": multiscales[0].axes entries must be objects, got " + brief(ax));
      const auto& name = ax.is_string() ? ax : qlty::detail::key(ax, "name", f);
      axes += qlty::detail::as_string(name, "multiscales[0].axes name", f);
    }
    const auto v = ms[0].find("version");
    std::printf("  OME-Zarr image (NGFF %s), axes %s\n",
                v != ms[0].end() && v->is_string() ? v->get<std::string>().c_str() : "?", axes.c_str());
  }
  // The group's members: folders only, links not followed, at most 16 levels.
  std::function<void(const std::string&, const std::string&, int)> walk = [&](const std::string& dir,
                                                                              const std::string& rel, int depth) {
    for (const auto& f : qlty::detail::list_dir(dir)) {
      if (f[0] == '.') continue;
      const auto p = qlty::detail::join_path(dir, f), r = rel.empty() ? f : rel + "/" + f;
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      const auto t = zarr::node_type(p);
      if (t == zarr::NodeType::Array)
        std::printf("  %s: %s\n", r.c_str(), describe_array(zarr::Array::open(p)).c_str());
      else if (t == zarr::NodeType::Group && depth < 16)
        walk(p, r, depth + 1);
    }
  };
  walk(path, "", 0);
  if (qlty::detail::path_exists(qlty::detail::manifest_path(path))) {
    auto s = qlty::blockwise_status(path);  // a checked manifest
    const auto& l = s.manifest.at("layout");
    auto field = [&](const char* k) {
      const auto it = l.find(k);
      return it == l.end() ? std::string("?") : qlty::detail::brief(*it, 60);
    };
    std::printf(
        "  qlty inference output: %lld of %lld blocks done%s; window %s, step %s, border %s, border weight "
        "%s, block %s, model %s\n",
        static_cast<long long>(s.blocks_done), static_cast<long long>(s.blocks_total),
        s.blocks_done == s.blocks_total ? " (complete)"
        : s.parts.empty()               ? " (rerun the same command to finish)"
                                        : " (run the parts not complete to finish)",
        field("window").c_str(), field("step").c_str(), field("border").c_str(), field("border_weight").c_str(),
        field("block").c_str(), field("model").c_str());
    std::string extra;  // settings recorded when they differ from their defaults
    for (const char* k :
         {"input_axes", "blend", "pad", "tta_flip", "precision", "activation", "slicewise", "output_dtype"})
      if (l.contains(k)) extra += std::string(extra.empty() ? "" : ", ") + k + " " + field(k);
    if (!extra.empty()) std::printf("  also: %s\n", extra.c_str());
    print_parts(s);
  }
  return 0;
}

struct ConvertArgs {
  std::string input, output, codec = "blosc";
  std::vector<int64_t> chunks;
  bool overwrite = false, quiet = false;
};

int run_convert(const ConvertArgs& a) {
  using qlty::Error;
  namespace zarr = qlty::zarr;
  namespace tool = qlty::tool;
  if (qlty::detail::paths_overlap(a.output, a.input))
    throw Error("overlap", a.output + ": the output would be the input " + a.input +
                               ", hold it or lie inside it (after resolving links); choose another output");
  if (!a.overwrite && qlty::detail::path_exists(a.output))
    throw Error("zarr.exists", a.output + ": exists (pass --overwrite to replace it)");
  torch::Tensor data;
  if (tool::is_tiff(a.input)) {
    data = tool::read_tiff(a.input);
  } else if (tool::is_npy(a.input)) {
    data = tool::NpyFile(a.input).read_all();
  } else if (zarr::node_type(a.input) == zarr::NodeType::Array ||
             (zarr::node_type(a.input) == zarr::NodeType::Group && !tool::first_scale(a.input).empty())) {
    // an OME-Zarr image (what qlty infer writes): its first, full-resolution scale
    const auto arr =
        zarr::Array::open(zarr::node_type(a.input) == zarr::NodeType::Array ? a.input : tool::first_scale(a.input));
    // convert reads the array whole: refuse one that does not fit comfortably in memory, saying how large it is
    int64_t bytes = zarr::itemsize(arr.metadata().dtype);
    for (auto v : arr.shape()) bytes *= v;  // checked when the metadata was read
    const double memory = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    if (memory > 0 && double(bytes) > memory / 2)
      throw Error("input", c10::str(a.input, ": the array holds ", double(bytes) / 1e9,
                                    " GB, more than half of this "
                                    "machine's memory (",
                                    memory / 1e9,
                                    " GB); convert reads it whole, so convert "
                                    "parts of it, or use it as a Zarr input directly (qlty infer reads blocks)"));
    data = arr.read();
  } else {
    throw Error("input", a.input + (qlty::detail::path_exists(a.input)
                                        ? ": not a TIFF file, a .npy file, a Zarr array or an OME-Zarr image"
                                        : ": no such file or folder"));
  }
  if (tool::is_tiff(a.output)) {
    tool::write_tiff(a.output, data);
  } else if (tool::is_npy(a.output)) {
    tool::write_npy(a.output, data.contiguous());
  } else {
    std::vector<int64_t> chunks;
    const int64_t spatial = data.dim() >= 4 ? data.dim() - 2 : data.dim();
    for (int64_t ax = 0; ax < data.dim(); ++ax) {
      const int64_t s = ax - (data.dim() - spatial);
      int64_t c = s < 0 ? 1 : (spatial == 2 ? 256 : 64);
      if (s >= 0 && !a.chunks.empty()) c = a.chunks.size() == 1 ? a.chunks[0] : a.chunks.at(s);
      chunks.push_back(std::min(c, data.size(ax)));
    }
    zarr::ArrayOptions o(data.sizes().vec(), chunks, zarr::data_type(data.scalar_type()));
    if (a.codec == "none")
      o.codecs = {};
    else if (a.codec == "zstd")
      o.codecs = {zarr::Codec::zstd(3)};
    else if (a.codec == "zlib")
      o.codecs = {zarr::Codec::zlib(5)};
    o.overwrite = a.overwrite;
    zarr::Array::create(a.output, o).write(std::vector<int64_t>(data.dim(), 0), data);
  }
  if (!a.quiet) {
    std::string shape;
    for (auto v : data.sizes()) shape += (shape.empty() ? "" : " x ") + std::to_string(v);
    std::printf("qlty convert: %s -> %s: %s, %s\n", a.input.c_str(), a.output.c_str(), shape.c_str(),
                zarr::name(zarr::data_type(data.scalar_type())));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qlty: sliding-window inference over whole images and volumes, on CPU or GPU, in bounded memory, "
      "resumable"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::to_string(QLTY_VERSION_MAJOR) + "." + std::to_string(QLTY_VERSION_MINOR) +
                                        "." + std::to_string(QLTY_VERSION_PATCH));

  InferArgs ia;
  auto* infer = app.add_subcommand("infer",
                                   "run a TorchScript model (or the built-in network) over every window of "
                                   "an input and write the blended result as OME-Zarr; rerun to resume");
  infer
      ->add_option("--model,-m", ia.model,
                   "TorchScript model file (torch.jit.save); default: the built-in "
                   "smoothing and edge-detecting network")
      ->check(CLI::ExistingFile);
  infer
      ->add_option("--input,-i", ia.input,
                   "Zarr array, OME-Zarr image, TIFF image or stack, or .npy file; axes "
                   "(Y, X), (Z, Y, X), (N, C, Y, X) or (N, C, Z, Y, X), or as --axes says")
      ->required();
  infer->add_option("--output,-o", ia.output, "output OME-Zarr group (a folder)")->required();
  infer->add_option("--window,-w", ia.window, "window size: one number or one per spatial axis")
      ->required()
      ->delimiter(',');
  infer
      ->add_option("--step,-s", ia.step,
                   "step between windows, one number or one per axis (default: 3/4 of the window, i.e. --overlap "
                   "0.25)")
      ->delimiter(',');
  infer
      ->add_option("--overlap", ia.overlap,
                   "instead of --step, MONAI's convention: the fraction of the window consecutive windows share, in "
                   "[0, 1), one number or one per axis (step = int(window * (1 - overlap)), at least 1)")
      ->delimiter(',');
  infer
      ->add_option("--blend", ia.blend,
                   "how overlapping windows are blended: border (--border pixels weigh --border-weight, the rest 1; "
                   "with no border the plain mean), constant (MONAI's constant), gaussian (MONAI's and nnU-Net's "
                   "gaussian, see --sigma-scale) or custom (--blend-window)")
      ->capture_default_str()
      ->check(CLI::IsMember({"border", "constant", "gaussian", "custom"}));
  infer
      ->add_option("--sigma-scale", ia.sigma_scale,
                   "--blend gaussian: the gaussian's standard deviation as a fraction of the window, one number or "
                   "one per axis (default 0.125, as MONAI and nnU-Net)")
      ->delimiter(',');
  infer->add_option("--blend-window", ia.blend_window,
                    "--blend custom: a .npy file of the window's shape holding the weights (finite, >= 0)");
  infer->add_option("--border,-b", ia.border, "border of each window weighted by --border-weight (--blend border)")
      ->capture_default_str()
      ->delimiter(',');
  infer->add_option("--border-weight", ia.border_weight, "weight of border pixels, in [0, 1]")->capture_default_str();
  infer
      ->add_option("--pad", ia.pad,
                   "inputs smaller than the window along an axis are padded for the windows (floor(d/2) before, "
                   "the rest after, as MONAI) and the outputs cropped back: constant, reflect, replicate, or none "
                   "(refuse such inputs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "reflect", "replicate", "none"}));
  infer->add_option("--pad-value", ia.pad_value, "--pad constant: the value (default 0)");
  infer
      ->add_option("--tta", ia.tta,
                   "test-time augmentation: flip runs the model on every window and its mirror images (all 2^D "
                   "subsets of the axes, or --tta-axes), flips the predictions back and blends their mean, as "
                   "nnU-Net; --std then includes the spread of the flips")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "flip"}));
  infer->add_option("--tta-axes", ia.tta_axes, "axes to mirror with --tta flip: letters of zyx (e.g. yx)");
  infer
      ->add_option("--precision", ia.precision,
                   "the model's precision: float32, float16 or bfloat16 (autocast on CUDA; on CPU the model's "
                   "parameters are converted); predictions are accumulated in float32")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}));
  infer
      ->add_option("--output-dtype", ia.output_dtype,
                   "dtype of OUT/0 and OUT/std: float32, float16, or uint8 (values clamped to [0, 1], times 255, "
                   "rounded: for probabilities)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16", "uint8"}));
  infer
      ->add_option("--activation", ia.activation,
                   "applied over the channels to the blended result: none, sigmoid or softmax (--std stays the "
                   "spread of the raw predictions; --argmax takes the result)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "sigmoid", "softmax"}));
  infer->add_option("--output-key", ia.output_key,
                    "for models that return a dict: the entry to use (default: the first); tuples and lists give "
                    "their first element");
  infer->add_flag("--slicewise", ia.slicewise,
                  "a 2D model over a 3D input: windows of depth 1 (-w Y,X or -w 1,Y,X) reach the model as (B, C, Y, "
                  "X), as MONAI's SliceInferer; a window of depth 1 implies it");
  infer->add_option("--axes", ia.axes,
                    "the input's axes, letters of n (images), c (channels), z, y, x in its order, e.g. czyx (MONAI's "
                    "layout), nczyx, zyx, cyx, yx; default: yx, zyx, ncyx or nczyx by rank");
  infer->add_option("--batch-size", ia.batch_size, "windows per model call")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  infer->add_option("--device", ia.device, "cpu, cuda or cuda:N")->capture_default_str();
  infer
      ->add_option("--threads", ia.threads,
                   "CPU threads per process (default: the cores this process may use; under MPI, shared with the "
                   "other ranks on the node unless the launcher binds them)");  // range-checked in infer_options
  infer->add_flag("--std", ia.std, "also write the spread of overlapping predictions (OUT/std)");
  infer->add_flag("--argmax", ia.argmax, "also write the argmax over channels as labels (OUT/labels/argmax)");
  infer
      ->add_option("--block", ia.block,
                   "block size per spatial axis, in voxels (rounded up to whole chunks); "
                   "default: slabs that fit --block-memory")
      ->delimiter(',');
  infer
      ->add_option("--chunks", ia.chunks,
                   "output chunk size per spatial axis (default 64 for volumes, 256 for "
                   "images)")
      ->delimiter(',');
  infer->add_option("--block-memory", ia.block_mib, "MiB for one block's input and accumulators")
      ->capture_default_str();  // range-checked in infer_options
  infer->add_option("--max-blocks", ia.max_blocks, "stop after computing this many blocks (rerun to continue)");
  infer->add_option(
      "--part", ia.part,
      "compute part i of K (0 <= i < K): a fixed share of the blocks, for Slurm job arrays or "
      "independent processes on shared storage (e.g. --part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
      "the K parts together write what one run writes. Under mpirun or srun, the ranks share the "
      "blocks without it");
  infer->add_option("--preview", ia.preview, "write a PNG of the middle slice: input, output channels, std");
  infer->add_flag("--overwrite", ia.overwrite, "replace an existing output instead of resuming it");
  infer->add_flag("--quiet,-q", ia.quiet, "no progress bar, no summary");

  DemoArgs da;
  auto* demo = app.add_subcommand("demo",
                                  "make a noisy 3D Shepp-Logan phantom, run `infer` with the built-in network, "
                                  "write a PNG preview and check the tiled result against the whole volume");
  demo->add_option("--output,-o", da.output, "folder for the phantom, the prediction and the preview")
      ->capture_default_str();
  demo->add_option("--size", da.size, "phantom size (voxels per axis)")
      ->capture_default_str()
      ->check(CLI::Range(8, 1024));  // the phantom is made in memory: 4 GiB of float32 at 1024
  demo->add_option("--window", da.window, "window")->capture_default_str()->check(CLI::PositiveNumber);
  demo->add_option("--step", da.step, "step")->capture_default_str()->check(CLI::PositiveNumber);
  demo->add_option("--border", da.border, "border")->capture_default_str()->check(CLI::NonNegativeNumber);
  demo->add_option("--block", da.block, "block")->capture_default_str()->check(CLI::PositiveNumber);
  demo->add_option("--noise", da.noise, "noise standard deviation")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  demo->add_option("--threads", da.threads, "CPU threads (default: LibTorch's)");  // range-checked in run_demo
  demo->add_flag("--quiet,-q", da.quiet, "only the check's result");

  std::string info_path;
  auto* info = app.add_subcommand("info",
                                  "describe a Zarr array or group (and how much of an inference output is "
                                  "done), a TIFF or a .npy file");
  info->add_option("path", info_path, "what to describe")->required();

  ConvertArgs ca;
  auto* convert = app.add_subcommand("convert",
                                     "convert between TIFF (image or stack), .npy and chunked, compressed "
                                     "Zarr arrays; the kind follows the file name");
  convert->add_option("input", ca.input, "TIFF, .npy or Zarr array")->required();
  convert->add_option("output", ca.output, "TIFF (.tif, .tiff), .npy or Zarr array (anything else)")->required();
  convert
      ->add_option("--chunks", ca.chunks,
                   "Zarr chunk size per spatial axis (default 64 for volumes, 256 for "
                   "images)")
      ->delimiter(',');
  convert->add_option("--codec", ca.codec, "Zarr compression")
      ->capture_default_str()
      ->check(CLI::IsMember({"blosc", "zstd", "zlib", "none"}));
  convert->add_flag("--overwrite", ca.overwrite, "replace an existing output");
  convert->add_flag("--quiet,-q", ca.quiet, "no summary");

  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && first != "infer" && first != "demo" && first != "info" &&
      first != "convert") {
    std::fprintf(stderr,
                 "qlty: error: unknown command \"%s\" (expected infer, demo, info or convert; see qlty --help)\n",
                 argv[1]);
    return 2;
  }
  const bool quiet_rank = launcher_world().second != 0;  // several processes: rank 0 reports argument errors
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (quiet_rank) return e.get_exit_code();
    return app.exit(e);
  }
  // Under a launcher, errors before MPI starts (an input one node cannot read) name the rank.
  const auto [world, world_rank] = launcher_world();
  const std::string who =
      world > 1 ? "qlty: error: rank " + std::to_string(world_rank) + " of " + std::to_string(world) + ": "
                : "qlty: error: ";
  try {
    if (*infer) return run_infer(ia);
    if (*demo) return run_demo(da);
    if (*info) return run_info(info_path);
    if (*convert) return run_convert(ca);
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "%s%s: %s\n", who.c_str(), e.get_name().c_str(), e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what_without_backtrace());
    return 2;
  } catch (const std::exception& e) {  // qlty::Error and the rest
    std::fprintf(stderr, "%s%s\n", who.c_str(), e.what());
    return 1;
  }
  return 0;
}
