// `qlty infer`: its flags, the table of settings and flags, and the run in one process.
#include "../commands.hpp"
#include "../formats/input.hpp"
#include "../launcher.hpp"
#include "model.hpp"
#include "options.hpp"
#include "report.hpp"
#include "run.hpp"

#include <memory>
#include <optional>

namespace qlty::tool {

namespace {

/// The library's settings (keys of the output's manifest, fields of errors) and the flags that set them.
const std::pair<const char*, const char*> kSettingFlags[] = {{"input", "input (--input)"},
                                                             {"input_shape", "input shape (--input, --axes)"},
                                                             {"input_axes", "--axes"},
                                                             {"axes", "--axes"},
                                                             {"out_channels", "model channels"},
                                                             {"window", "--window"},
                                                             {"step", "--step/--overlap"},
                                                             {"border", "--border"},
                                                             {"border_weight", "--border-weight"},
                                                             {"chunks", "--chunks"},
                                                             {"shards", "--shards"},
                                                             {"zarr_format", "--zarr-format"},
                                                             {"block", "--block"},
                                                             {"outputs", "--std/--argmax"},
                                                             {"model", "--model"},
                                                             {"blend", "--blend/--sigma-scale"},
                                                             {"pad", "--pad"},
                                                             {"tta_flip", "--tta"},
                                                             {"precision", "--precision"},
                                                             {"activation", "--activation"},
                                                             {"slicewise", "--slicewise"},
                                                             {"output_dtype", "--output-dtype"},
                                                             {"sigma_scale", "--sigma-scale"},
                                                             {"custom_window", "--blend-window"},
                                                             {"pad_value", "--pad-value"},
                                                             {"tta_axes", "--tta-axes"},
                                                             {"batch_size", "--batch-size"},
                                                             {"block_bytes", "--block-memory"},
                                                             {"max_blocks", "--max-blocks"},
                                                             {"part", "--part"},
                                                             {"overwrite", "--overwrite"}};

void add_infer_flags(CLI::App* infer, InferArgs& a) {
  infer
      ->add_option("--model,-m", a.model,
                   "TorchScript model file (torch.jit.save); default: the built-in "
                   "smoothing and edge-detecting network")
      ->check(CLI::ExistingFile);
  infer
      ->add_option("--input,-i", a.input,
                   "Zarr array, OME-Zarr image, TIFF image or stack, or .npy file; axes "
                   "(Y, X), (Z, Y, X), (N, C, Y, X) or (N, C, Z, Y, X), or as --axes says")
      ->required();
  infer->add_option("--output,-o", a.output, "output OME-Zarr group (a folder)")->required();
  infer->add_option("--window,-w", a.window, "window size: one number or one per spatial axis")
      ->required()
      ->delimiter(',');
  infer
      ->add_option("--step,-s", a.step,
                   "step between windows, one number or one per axis (default: 3/4 of the window, i.e. --overlap "
                   "0.25)")
      ->delimiter(',');
  infer
      ->add_option("--overlap", a.overlap,
                   "instead of --step, MONAI's convention: the fraction of the window consecutive windows share, in "
                   "[0, 1), one number or one per axis (step = int(window * (1 - overlap)), at least 1)")
      ->delimiter(',');
  infer
      ->add_option("--blend", a.blend,
                   "how overlapping windows are blended: border (--border pixels weigh --border-weight, the rest 1; "
                   "with no border the plain mean), constant (MONAI's constant), gaussian (MONAI's and nnU-Net's "
                   "gaussian, see --sigma-scale) or custom (--blend-window)")
      ->capture_default_str()
      ->check(CLI::IsMember({"border", "constant", "gaussian", "custom"}));
  infer
      ->add_option("--sigma-scale", a.sigma_scale,
                   "--blend gaussian: the gaussian's standard deviation as a fraction of the window, one number or "
                   "one per axis (default 0.125, as MONAI and nnU-Net)")
      ->delimiter(',');
  infer->add_option("--blend-window", a.blend_window,
                    "--blend custom: a .npy file of the window's shape holding the weights (finite, >= 0)");
  infer->add_option("--border,-b", a.border, "border of each window weighted by --border-weight (--blend border)")
      ->capture_default_str()
      ->delimiter(',');
  infer->add_option("--border-weight", a.border_weight, "weight of border pixels, in [0, 1]")->capture_default_str();
  infer
      ->add_option("--pad", a.pad,
                   "inputs smaller than the window along an axis are padded for the windows (floor(d/2) before, "
                   "the rest after, as MONAI) and the outputs cropped back: constant, reflect, replicate, or none "
                   "(refuse such inputs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "reflect", "replicate", "none"}));
  infer->add_option("--pad-value", a.pad_value, "--pad constant: the value (default 0)");
  infer
      ->add_option("--tta", a.tta,
                   "test-time augmentation: flip runs the model on every window and its mirror images (all 2^D "
                   "subsets of the axes, or --tta-axes), flips the predictions back and blends their mean, as "
                   "nnU-Net; --std then includes the spread of the flips")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "flip"}));
  infer->add_option("--tta-axes", a.tta_axes, "axes to mirror with --tta flip: letters of zyx (e.g. yx)");
  infer
      ->add_option("--precision", a.precision,
                   "the model's precision: float32, float16 or bfloat16 (autocast on CUDA; on CPU the model's "
                   "parameters are converted); predictions are accumulated in float32")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}));
  infer
      ->add_option("--output-dtype", a.output_dtype,
                   "dtype of OUT/0 and OUT/std: float32, float16, or uint8 (values clamped to [0, 1], times 255, "
                   "rounded: for probabilities)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16", "uint8"}));
  infer
      ->add_option("--activation", a.activation,
                   "applied over the channels to the blended result: none, sigmoid or softmax (--std stays the "
                   "spread of the raw predictions; --argmax takes the result)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "sigmoid", "softmax"}));
  infer->add_option("--output-key", a.output_key,
                    "for models that return a dict: the entry to use (default: the first); tuples and lists give "
                    "their first element");
  infer->add_flag("--slicewise", a.slicewise,
                  "a 2D model over a 3D input: windows of depth 1 (-w Y,X or -w 1,Y,X) reach the model as (B, C, Y, "
                  "X), as MONAI's SliceInferer; a window of depth 1 implies it");
  infer->add_option("--axes", a.axes,
                    "the input's axes, letters of n (images), c (channels), z, y, x in its order, e.g. czyx (MONAI's "
                    "layout), nczyx, zyx, cyx, yx; default: yx, zyx, ncyx or nczyx by rank");
  infer->add_option("--batch-size", a.batch_size, "windows per model call")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  infer->add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  infer->add_option("--threads", a.threads,
                    "CPU threads per process (default: the cores this process may use; under MPI, shared with the "
                    "other ranks on the node unless the launcher binds them)");  // range-checked in infer_options
  infer->add_flag("--std", a.std, "also write the spread of overlapping predictions (OUT/std)");
  infer->add_flag("--argmax", a.argmax, "also write the argmax over channels as labels (OUT/labels/argmax)");
  infer
      ->add_option("--block", a.block,
                   "block size per spatial axis, in voxels (rounded up to whole chunks); "
                   "default: slabs that fit --block-memory")
      ->delimiter(',');
  infer
      ->add_option("--chunks", a.chunks,
                   "output chunk size per spatial axis (default 64 for volumes, 256 for "
                   "images)")
      ->delimiter(',');
  infer
      ->add_option("--shards", a.shards,
                   "Zarr v3 shards per spatial axis, in voxels, whole chunks (e.g. 256 over 64^3 chunks: 64 chunks "
                   "in each file, for parallel file systems); implies --zarr-format 3; blocks are whole shards")
      ->delimiter(',');
  infer
      ->add_option("--zarr-format", a.zarr_format,
                   "2: OME-Zarr 0.4 on Zarr v2 (the default: zarr-python 2 and 3, ome-zarr-py, napari, Fiji read "
                   "it); 3: OME-Zarr 0.5 on Zarr v3 (zarr-python 3, ome-zarr-py >= 0.12 and napari, Neuroglancer, "
                   "vizarr; needed for --shards)")
      ->check(CLI::IsMember({2, 3}));
  infer->add_option("--block-memory", a.block_mib, "MiB for one block's input and accumulators")
      ->capture_default_str();  // range-checked in infer_options
  infer->add_option("--max-blocks", a.max_blocks, "stop after computing this many blocks (rerun to continue)");
  infer->add_option(
      "--part", a.part,
      "compute part i of K (0 <= i < K): a fixed share of the blocks, for Slurm job arrays or "
      "independent processes on shared storage (e.g. --part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
      "the K parts together write what one run writes. Under mpirun or srun, the ranks share the "
      "blocks without it");
  infer->add_option("--preview", a.preview, "write a PNG of the middle slice: input, output channels, std");
  infer->add_flag("--overwrite", a.overwrite, "replace an existing output instead of resuming it");
  infer->add_flag("--quiet,-q", a.quiet, "no progress bar, no summary");
}

}  // namespace

std::string flag_of_setting(const std::string& key) {
  for (const auto& [k, flag] : kSettingFlags)
    if (key == k) return flag;
  return key;
}

Command setup_infer(CLI::App& app) {
  auto args = std::make_shared<InferArgs>();
  auto* infer = app.add_subcommand("infer",
                                   "run a TorchScript model (or the built-in network) over every window of "
                                   "an input and write the blended result as OME-Zarr; rerun to resume");
  add_infer_flags(infer, *args);
  return {infer, [args] { return run_infer(*args); }};
}

namespace {

int run_infer_checked(const InferArgs& a) {
  const auto [world, world_rank] = launcher_world();
  torch::Device device = parse_device(a.device);
  std::optional<BlockInput> opened;
  try {
    opened = open_input(a.input, a.axes);
  } catch (const Error& e) {
    explain(e, a, nullptr);
  }
  const BlockInput& input = *opened;
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
    explain(e, a, &input);
  } catch (...) {
    bar.finish();
    throw;
  }
  bar.finish();
  if (!a.preview.empty() && s.complete) write_preview(a.preview, input, a.output, a.std);
  if (!a.quiet) print_summary(a, input, s, o);
  return 0;
}

}  // namespace

int run_infer(const InferArgs& a) {
  try {
    return run_infer_checked(a);
  } catch (const ArgumentError& e) {
    explain(e);
  }
}

}  // namespace qlty::tool
