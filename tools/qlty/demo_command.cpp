// `qlty demo`: a noisy 3D Shepp-Logan phantom, `qlty infer` on it with the built-in network, a PNG preview, and a
// check of the tiled result against the network on the whole volume.
#include <qlty/zarr.hpp>

#include "builtin.hpp"
#include "commands.hpp"
#include "infer/run.hpp"
#include "launcher.hpp"

#include <cmath>
#include <cstdio>
#include <memory>

namespace qlty::tool {

namespace {

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
  auto volume = shepp_logan_3d(a.size, a.noise, 7).view({1, 1, a.size, a.size, a.size});
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
    std::printf(
        "qlty demo: %s shows the middle slice: input | output c0 (smoothed) | output c1 (edges) | std c0 (where "
        "windows disagree), each scaled to its own range; inspect the OME-Zarr output with `qlty info %s`\n",
        png.c_str(), pred.c_str());
  if (diff > 1e-4 * std::max(scale, 1.0)) {
    std::fprintf(stderr, "qlty demo: FAILED: the tiled result differs from the whole-volume result\n");
    return 1;
  }
  return 0;
}

}  // namespace

Command setup_demo(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  DemoArgs& da = *args;
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
  return {demo, [args] { return run_demo(*args); }};
}

}  // namespace qlty::tool
